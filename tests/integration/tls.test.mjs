// Native TLS (config `tls.cert_file` / `tls.key_file`, served by lws): a
// self-signed certificate made at test time, https:// ops endpoints, a
// wss:// client that gets its hello and a live alert, plain HTTP on the TLS
// port refused cleanly, and the config errors around the two files.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import WebSocket from 'ws';

import {
	makeConfig, startDaemon, runDaemonCli, rawRequest, randomId, tmpDir, waitFor, stop,
	mysqlRoot, redisCommand, signJwt, sanitizerReport, wsTrack, wsWaitFor, have,
} from './lib/harness.mjs';

const P = 701;
const SYNC = 9; // subscribed over the socket: its ack means the roster is loaded

function makeCert() {
	const dir = tmpDir('sa-tls-');
	const cert = path.join(dir, 'cert.pem');
	const key = path.join(dir, 'key.pem');
	execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj',
		'/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1',
		'-keyout', key, '-out', cert], { stdio: 'ignore' });
	return { dir, cert, key, pem: fs.readFileSync(cert) };
}

// GET over https, trusting only our certificate (no rejectUnauthorized:false).
function httpsGet(port, p, ca) {
	return new Promise((resolve, reject) => {
		const req = https.get({ host: '127.0.0.1', port, path: p, ca, timeout: 5000 }, (res) => {
			let body = '';
			const protocol = res.socket.getProtocol();
			res.setEncoding('utf8');
			res.on('data', (d) => { body += d; });
			res.on('end', () => resolve({ status: res.statusCode, body, protocol }));
		});
		req.on('timeout', () => req.destroy(new Error('https timeout')));
		req.on('error', reject);
	});
}

function httpsPut(port, p, ca, token, body) {
	return new Promise((resolve, reject) => {
		const req = https.request({ host: '127.0.0.1', port, method: 'PUT', path: p, ca,
			timeout: 10000, headers: { Authorization: `Bearer ${token}`,
				'Content-Type': 'application/json' } }, (res) => {
			let text = '';
			res.on('data', (x) => { text += x; });
			res.on('end', () => resolve({ status: res.statusCode, body: text }));
		});
		req.on('timeout', () => req.destroy(new Error('https timeout')));
		req.on('error', reject);
		req.end(body);
	});
}

// Starts the daemon with `tls` and waits for it to exit (config and start
// errors) or to be still running after `ms`.
async function startAndWait(tls, ms = 8000) {
	const cfg = await makeConfig({ tls });
	const d = startDaemon(cfg);
	const r = await Promise.race([d.exited,
		new Promise((resolve) => setTimeout(() => resolve(null), ms))]);
	const check = await runDaemonCli(['--check-config', '-c', cfg.path]);
	if (!r) d.proc.kill('SIGKILL');
	return { exit: r, log: d.log(), check };
}

describe('native TLS', { skip: !have('openssl') && 'openssl not installed' }, () => {
	let c;
	let cfg;
	let d;
	let db;
	// A small alerts setup over https (the harness's alertsKit speaks http).
	const kit = {
		token: (sub, roles = []) => signJwt({ sub, exp: Math.floor(Date.now() / 1000) + 600,
			...(roles.length ? { roles } : {}) }, cfg.secret),
		sql: (q) => mysqlRoot(null, q, db),
		publish: async (ev) => {
			const r = await redisCommand(cfg.config.redis.port, ['PUBLISH',
				`${cfg.config.redis.prefix}inventory`, JSON.stringify(ev)]);
			if (r instanceof Error) throw r;
		},
	};

	before(async () => {
		c = makeCert();
		db = `stockalert_t${randomId(6)}`;
		await mysqlRoot(null, `CREATE DATABASE \`${db}\` CHARACTER SET utf8mb4`);
		cfg = await makeConfig({ mysql: { database: db },
			tls: { cert_file: c.cert, key_file: c.key } });
		d = startDaemon(cfg);
		await waitFor(async () => {
			if (!d.running) throw new Error(`daemon exited:\n${d.log()}`);
			return (await httpsGet(d.port, '/readyz', c.pem)).status === 200;
		}, { timeout: 30000, what: 'https /readyz == 200' });
		await waitFor(async () => { await kit.sql('SELECT 1 FROM products LIMIT 1'); return true; },
			{ timeout: 15000, what: 'schema' });
		await kit.sql('INSERT INTO products (id, sku, name, stock, low_stock_threshold) VALUES ' +
			`(${P}, 'SKU-${P}', 'Secure thing', 0, 2), (${SYNC}, 'SKU-${SYNC}', 'sync', 1, 0)`);
	});
	after(async () => {
		if (d) {
			const r = await stop(d, 'SIGTERM');
			assert.equal(r.code, 0, `exit ${r.code}/${r.signal}\n${d.log().slice(-3000)}`);
			assert.equal(sanitizerReport(d.log()), null);
		}
		if (db) await mysqlRoot(null, `DROP DATABASE IF EXISTS \`${db}\``).catch(() => {});
	});

	test('https:// /healthz and /readyz with the self-signed certificate as the CA',
		async () => {
			const h = await httpsGet(d.port, '/healthz', c.pem);
			assert.equal(h.status, 200, h.body);
			assert.match(String(h.protocol), /^TLSv1\.[23]$/);
			const r = await httpsGet(d.port, '/readyz', c.pem);
			assert.equal(r.status, 200, r.body);
			assert.deepEqual(JSON.parse(r.body).redis, 'up');
			assert.match(d.log(), /listening on https:\/\//);
		});

	test('an untrusting client refuses the self-signed certificate', async () => {
		await assert.rejects(httpsGet(d.port, '/healthz', undefined),
			/self[- ]signed|unable to verify|SELF_SIGNED/i);
	});

	test('wss:// with a token: hello, then a live alert', async (t) => {
		const user = `tls-${randomId(3)}`;
		assert.equal((await httpsPut(d.port, `/api/me/subscriptions/${P}`, c.pem,
			kit.token(user), '{}')).status, 201);
		const ws = new WebSocket(`wss://127.0.0.1:${d.port}/ws?token=` +
			encodeURIComponent(kit.token(user)), { ca: c.pem, handshakeTimeout: 10000 });
		const h = wsTrack(ws);
		t.after(() => ws.terminate());
		await h.opened;
		const { msg: hello } = await wsWaitFor(h, (m) => m.type === 'hello', 10000, 'hello');
		assert.equal(hello.user_id, user);
		// The roster is ready once the sync product's ack is back.
		h.send({ type: 'subscribe', product_id: SYNC });
		await wsWaitFor(h, (m) => m.type === 'subscribed', 10000, 'subscribed');
		const ev = `tls-${randomId(4)}`;
		await kit.publish({ event_id: ev, product_id: P, stock: 3, prev_stock: 0 });
		const { msg: a } = await wsWaitFor(h, (m) => m.type === 'alert' && m.event_id === ev,
			10000, 'the alert over wss');
		assert.equal(a.kind, 'back_in_stock');
		assert.equal(a.name, 'Secure thing');
		h.send({ type: 'ping' });
		await wsWaitFor(h, (m) => m.type === 'pong', 5000, 'pong');
	});

	test('a REST call over https works end to end', async () => {
		const user = `tls-rest-${randomId(3)}`;
		const r = await httpsPut(d.port, `/api/me/subscriptions/${P}`, c.pem, kit.token(user),
			'{"kinds":["back_in_stock"]}');
		assert.equal(r.status, 201, r.body);
	});

	test('plain http:// to the TLS port fails cleanly; the daemon keeps serving TLS',
		async () => {
			for (let i = 0; i < 3; i++) {
				const r = await rawRequest(d.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', '',
					{ timeout: 15000 }).then((x) => x, (e) => e);
				// Never a plaintext answer: a reset, a close, or a TLS alert.
				if (!(r instanceof Error)) assert.fail(`plaintext answer: ${r.raw}`);
				assert.match(r.message, /ECONNRESET|closed|EPIPE/, r.message);
			}
			const ws = new WebSocket(`ws://127.0.0.1:${d.port}/ws?token=x`,
				{ handshakeTimeout: 5000 });
			const h = wsTrack(ws);
			await assert.rejects(h.opened);
			ws.terminate();
			assert.equal(d.running, true);
			assert.equal((await httpsGet(d.port, '/healthz', c.pem)).status, 200);
		});
});

describe('TLS configuration errors', { skip: !have('openssl') && 'openssl not installed' }, () => {
	let c;
	before(() => { c = makeCert(); });

	test('only one of cert_file / key_file → exit 1 naming the missing key', async () => {
		const a = await startAndWait({ cert_file: c.cert });
		assert.equal(a.exit?.code, 1, a.log);
		assert.match(a.log, /tls\.key_file/);
		assert.equal(a.check.code, 1);
		assert.match(a.check.stderr, /tls\.key_file/);
		const b = await startAndWait({ key_file: c.key });
		assert.equal(b.exit?.code, 1, b.log);
		assert.match(b.log, /tls\.cert_file/);
		assert.equal(b.check.code, 1);
		assert.match(b.check.stderr, /tls\.cert_file/);
	});

	// A TLS file that is missing, not a regular file or empty is a configuration error
	// (exit 1 naming the key, at start and with --check-config); one that exists but
	// OpenSSL cannot use is found when the listener is created (exit 2, "could not
	// start"), and the log names the file.
	test('a missing TLS file → exit 1 naming the key; an unusable one → exit 2', async () => {
		const missing = path.join(c.dir, 'missing.pem');
		const garbage = path.join(c.dir, 'garbage.pem');
		fs.writeFileSync(garbage, 'not a certificate\n');
		const configErrors = [
			['missing', { cert_file: missing, key_file: c.key }, /tls\.cert_file/],
			['a directory', { cert_file: c.dir, key_file: c.key }, /tls\.cert_file/],
			['missing key', { cert_file: c.cert, key_file: missing }, /tls\.key_file/],
		];
		if (process.getuid && process.getuid() !== 0) {
			const locked = path.join(c.dir, 'locked.pem');
			fs.copyFileSync(c.cert, locked);
			fs.chmodSync(locked, 0);
			configErrors.push(['unreadable (mode 000)', { cert_file: locked, key_file: c.key },
				/tls\.cert_file/]);
		}
		for (const [what, tls, key] of configErrors) {
			const r = await startAndWait(tls);
			assert.ok(r.exit, `${what}: still running:\n${r.log}`);
			assert.equal(r.exit.code, 1, `${what}: exit ${r.exit.code}\n${r.log}`);
			assert.match(r.log, key, what);
		}
		const startErrors = [
			['not PEM', { cert_file: garbage, key_file: c.key }, garbage],
			['key and cert swapped', { cert_file: c.key, key_file: c.cert }, c.key],
		];
		for (const [what, tls, file] of startErrors) {
			const r = await startAndWait(tls);
			assert.ok(r.exit, `${what}: still running:\n${r.log}`);
			assert.equal(r.exit.code, 2, `${what}: exit ${r.exit.code}\n${r.log}`);
			assert.ok(r.log.includes(file), `${what}: the log does not name ${file}:\n${r.log}`);
			assert.match(r.log, /could not listen.*TLS/, what);
		}
	});

	test('--check-config opens the TLS files', async () => {
		const cfg = await makeConfig({ tls: { cert_file: path.join(c.dir, 'nope.pem'),
			key_file: c.key } });
		const r = await runDaemonCli(['--check-config', '-c', cfg.path]);
		assert.equal(r.code, 1, r.stderr);
		assert.match(r.stderr, /tls\.cert_file/);
	});
});

