// SIGHUP: key rotation without a refused token, each live key applied, a
// failed reload changing nothing, and 1,000 sockets receiving alerts through
// 20 reloads without a drop, a loss or a duplicate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';

import {
	alertsKit, waitFor, metricValue, randomId, wsAlerts, wsWaitFor, wsTrack, signJwt,
	decodeJwt, cleanStopChecker, redisCommand, runDaemonCli, makeConfig, startDaemon, tmpDir,
	have, stopClean,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(config|auth|server|alerts|ws)\.c/);

const now = () => Math.floor(Date.now() / 1000);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

// An RS256 token signed with privateKey.
function signRs256(payload, privateKey, header) {
	const data = `${b64(header)}.${b64(payload)}`;
	return `${data}.${crypto.sign('sha256', Buffer.from(data), privateKey).toString('base64url')}`;
}

const reloads = async (d, result) =>
	(await metricValue(d.url, 'stockalert_config_reloads_total', { result })) ?? 0;

// Rewrites d's config file with edit(config) and sends SIGHUP; waits until
// the daemon counted the reload as `expect` ("ok" or "failed").
async function reload(d, edit, expect = 'ok') {
	const cfg = JSON.parse(fs.readFileSync(d.cfg.path, 'utf8'));
	if (edit) edit(cfg);
	fs.writeFileSync(d.cfg.path, JSON.stringify(cfg, null, 2));
	const before = await reloads(d, expect);
	d.proc.kill('SIGHUP');
	await waitFor(async () => (await reloads(d, expect)) > before,
		{ timeout: 15000, what: `reload counted ${expect}` });
}

// Opens a socket with token (and Origin); resolves the tracked handle after
// hello, or rejects with the HTTP refusal.
async function open(d, token, { origin, user } = {}) {
	const { default: WebSocket } = await import('ws');
	const h = wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${encodeURIComponent(token)}`,
		origin ? { headers: { Origin: origin } } : {}));
	h.user = user;
	await h.opened;
	await wsWaitFor(h, (m) => m.type === 'hello', 10000, 'hello');
	return h;
}

async function refusedWith(d, token, opts) {
	try {
		const h = await open(d, token, opts);
		h.ws.terminate();
	} catch (e) {
		return e.status;
	}
	return 200;
}

test('key rotation through SIGHUP: old and new keys side by side, then the old one removed; ' +
	'sockets opened with old-key tokens run until their own exp', async (t) => {
	const P = 801;
	const kit = await alertsKit({ t, products: [{ id: P, stock: 0 }],
		overrides: { auth: { leeway_s: 0 }, alerts: { max_per_window: 1000 } } });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	const oldSecret = kit.secret;
	const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
	const pubFile = path.join(d.cfg.dir, 'jwt-new.pem');
	fs.writeFileSync(pubFile, publicKey.export({ type: 'spki', format: 'pem' }));
	const HS = { alg: 'HS256', typ: 'JWT' };
	const oldTok = (sub, ttl = 3600, kid) =>
		signJwt({ sub, exp: now() + ttl }, oldSecret, kid === undefined ? HS : { ...HS, kid });
	const newTok = (sub, kid = 'new') =>
		signRs256({ sub, exp: now() + 3600 }, privateKey,
			kid === null ? { alg: 'RS256', typ: 'JWT' } : { alg: 'RS256', typ: 'JWT', kid });
	const users = Array.from({ length: 4 }, (_, k) => `rot${k}-${randomId(3)}`);
	for (const u of users) await kit.subscribe(u, P);

	// 1. The single key of today. A token naming an RS256 key is refused.
	const s0 = await open(d, oldTok(users[0]), { user: users[0] });
	assert.equal(await refusedWith(d, newTok(users[1])), 401);

	// 2. Old and new side by side: every token of either is accepted.
	await reload(d, (c) => {
		c.auth = { leeway_s: 0, keys: [
			{ kid: 'old', algorithm: 'HS256', secret_file: d.cfg.secretFile },
			{ kid: 'new', algorithm: 'RS256', public_key_file: pubFile },
		] };
	});
	const s1 = await open(d, oldTok(users[1], 3600, 'old'), { user: users[1] });
	const s2 = await open(d, oldTok(users[2]), { user: users[2] }); // no kid: tried in order
	const s3 = await open(d, newTok(users[3]), { user: users[3] });
	const s4 = await open(d, newTok(users[3], null), { user: users[3] });
	// A short-lived old-key token: its socket must end at its own exp.
	const short = await open(d, oldTok(users[1], 6, 'old'), { user: users[1] });
	// gentoken --kid signs with the named key.
	const gen = await runGentoken(d.cfg.path, users[2], 'old');
	assert.equal(decodeJwt(gen).header.kid, 'old');
	const s5 = await open(d, gen, { user: users[2] });
	// Unknown, empty and cross-algorithm kids are refused like a bad signature.
	assert.equal(await refusedWith(d, oldTok(users[0], 3600, 'older')), 401);
	assert.equal(await refusedWith(d, oldTok(users[0], 3600, '')), 401);
	assert.equal(await refusedWith(d, oldTok(users[0], 3600, 'new')), 401);
	assert.equal(await refusedWith(d, newTok(users[0], 'old')), 401);

	// 3. The old key removed: old tokens refused from now on, new ones
	// accepted, and every socket opened with an old-key token still runs.
	await reload(d, (c) => {
		c.auth = { leeway_s: 0, keys: [
			{ kid: 'new', algorithm: 'RS256', public_key_file: pubFile },
		] };
	});
	assert.equal(await refusedWith(d, oldTok(users[0])), 401);
	assert.equal(await refusedWith(d, oldTok(users[0], 3600, 'old')), 401);
	const s6 = await open(d, newTok(users[0]), { user: users[0] });
	const all = [s0, s1, s2, s3, s4, s5, s6];
	const e = `rot-${randomId(4)}`;
	assert.equal(await kit.publish({ event_id: e, product_id: P, stock: 1, prev_stock: 0 }), 1);
	for (const h of all) await wsWaitFor(h, (m) => m.type === 'alert' && m.event_id === e,
		10000, `alert for ${h.user}`);
	for (const h of all) assert.equal(h.closeInfo, null, `${h.user} closed`);
	// The short-lived one ends at its exp (4001), not at the reload.
	const c = await short.closed;
	assert.equal(c.code, 4001);
	assert.equal(await reloads(d, 'ok'), 2);
	assert.equal(await reloads(d, 'failed'), 0);
});

// gentoken with --kid (the harness's gentoken has no kid argument).
async function runGentoken(configPath, sub, kid) {
	const r = await runDaemonCli(['gentoken', '--sub', sub, '--kid', kid, '-c', configPath]);
	if (r.code !== 0) throw new Error(`gentoken exited ${r.code}: ${r.stderr}`);
	return r.stdout.trim();
}

test('SIGHUP applies each live key: allowed_origins, rate limit, history length, ' +
	'connections per user; names the keys that need a restart', async (t) => {
	const P = [811, 812, 813];
	const kit = await alertsKit({ t, products: P.map((id) => ({ id, stock: 0 })),
		overrides: { alerts: { max_per_window: 1, window_s: 3600 },
			ws: { max_connections_per_user: 1 } } });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	const user = `live-${randomId(4)}`;
	for (const p of P) await kit.subscribe(user, p);
	const h = await kit.connect(user);
	const started = await metricValue(d.url, 'stockalert_config_last_reload_success_timestamp_seconds');
	assert.ok(started > 0);

	// Refused before the reload.
	const origin = `http://new-${randomId(4)}.example`;
	assert.equal(await refusedWith(d, kit.token(user), { origin }), 403);
	const { default: WebSocket } = await import('ws');
	const second = wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${kit.token(user)}`));
	assert.equal((await second.closed).code, 4029);
	// The rate limit: the second alert of the window waits.
	const e1 = `live1-${randomId(4)}`, e2 = `live2-${randomId(4)}`, e3 = `live3-${randomId(4)}`;
	await kit.publish({ event_id: e1, product_id: P[0], stock: 1, prev_stock: 0 });
	await wsWaitFor(h, (m) => m.event_id === e1, 10000, 'first alert');
	await kit.publish({ event_id: e2, product_id: P[1], stock: 1, prev_stock: 0 });
	await waitFor(async () => (await kit.metric('stockalert_alerts_delayed_total')) === 1,
		{ timeout: 10000, what: 'second alert held back' });
	const ttl = (id) => redisCommand(kit.redisPort, ['TTL', `${kit.prefix}event:${id}`]);
	const ttlBefore = await ttl(e1);
	assert.ok(ttlBefore > 3600, `history ttl ${ttlBefore}`);

	await reload(d, (c) => {
		c.allowed_origins = [...(c.allowed_origins || []), origin];
		c.alerts.max_per_window = 100;
		c.alerts.history_s = 600;
		c.ws.max_connections_per_user = 2;
		c.redis.db = 1; // needs a restart: named, left as it is
	});
	assert.match(d.log(), /SIGHUP: left as they are until a restart: redis\.db/);
	// A new allowed origin is accepted.
	const fromOrigin = await open(d, kit.token(user), { origin, user });
	fromOrigin.ws.terminate();
	await fromOrigin.closed;
	// A second socket for the user is allowed.
	const again = await open(d, kit.token(user), { user });
	// The changed rate limit: the next alert goes out at once.
	await kit.publish({ event_id: e3, product_id: P[2], stock: 1, prev_stock: 0 });
	await wsWaitFor(h, (m) => m.event_id === e3, 10000, 'third alert, under the new limit');
	assert.equal(await kit.metric('stockalert_alerts_delayed_total'), 1);
	// The history of new alerts is kept for the new length.
	// (In Redis db 0: redis.db needs a restart and was left as it is.)
	const ttlAfter = await ttl(e3);
	assert.ok(ttlAfter > 0 && ttlAfter <= 600, `history ttl ${ttlAfter}`);
	assert.equal(again.closeInfo, null);
	assert.equal(h.closeInfo, null);
	assert.ok(await metricValue(d.url,
		'stockalert_config_last_reload_success_timestamp_seconds') >= started);
});

test('SIGHUP turns fair release on: the later waves follow on their interval', async (t) => {
	const P = 831;
	const kit = await alertsKit({ t, products: [{ id: P, stock: 0 }],
		overrides: { alerts: { max_per_window: 1000 } } });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	const users = Array.from({ length: 3 }, (_, k) => `fair${k}-${randomId(3)}`);
	for (const u of users) await kit.subscribe(u, P);
	const socks = [];
	for (const u of users) socks.push(await kit.connect(u));

	await reload(d, (c) => {
		c.alerts.fair_release_factor = 1;
		c.alerts.fair_release_interval_s = 1;
	});
	// Stock 1, F = 1: one subscriber per wave, the first at once, the
	// others from the waves the daemon's timer runs.
	const e = `fair-${randomId(4)}`;
	await kit.publish({ event_id: e, product_id: P, stock: 1, prev_stock: 0 });
	for (const h of socks) await wsWaitFor(h, (m) => m.event_id === e, 20000, `wave for ${h.user}`);
	assert.ok(await kit.metric('stockalert_fair_waves_total') >= users.length,
		'one wave per subscriber');
});

test('a reload that fails to load or check changes nothing and says why', async (t) => {
	const kit = await alertsKit({ t, overrides: { log: { level: 'info' } } });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	const user = `fail-${randomId(4)}`;
	const h = await kit.connect(user);
	const origin = `http://bad-${randomId(4)}.example`;
	const keep = fs.readFileSync(d.cfg.path, 'utf8');

	// Loads, but a key file is missing: neither the origin nor the keys change.
	await reload(d, (c) => {
		c.allowed_origins = [origin];
		c.auth = { keys: [{ kid: 'k', secret_file: path.join(d.cfg.dir, 'missing') }] };
	}, 'failed');
	assert.match(d.log(), /SIGHUP: keeping the running configuration: auth\.keys\[0\]\.secret_file/);
	assert.equal(await refusedWith(d, kit.token(user), { origin }), 403);
	assert.equal(await refusedWith(d, kit.token(`${user}b`)), 200);
	// Does not load at all.
	fs.writeFileSync(d.cfg.path, '{"allowed_origins": ["' + origin + '"], "auth": {"keys": 1}}');
	await reload(d, null, 'failed');
	assert.match(d.log(), /keeping the running configuration: .*auth\.keys: must be an array/);
	assert.equal(await refusedWith(d, kit.token(user), { origin }), 403);
	// A good one after that applies.
	fs.writeFileSync(d.cfg.path, keep);
	await reload(d, (c) => { c.allowed_origins = [origin]; });
	assert.equal(await refusedWith(d, kit.token(`${user}c`), { origin }), 200);
	assert.equal(await reloads(d, 'failed'), 2);
	assert.equal(await reloads(d, 'ok'), 1);
	assert.equal(h.closeInfo, null);
});

test('1,000 sockets receiving alerts while SIGHUP arrives 20 times: none dropped, ' +
	'every alert delivered exactly once', async (t) => {
	const P = 821, USERS = 200, PER_USER = 5, ROUNDS = 20;
	const kit = await alertsKit({ t, products: [{ id: P, stock: 0 }],
		overrides: { alerts: { max_per_window: 10000 }, ws: { max_connections_per_user: 8 } } });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	const users = Array.from({ length: USERS }, (_, k) => `load${k}-${randomId(3)}`);
	for (let i = 0; i < users.length; i += 20)
		await Promise.all(users.slice(i, i + 20).map((u) => kit.subscribe(u, P)));
	const socks = [];
	for (let i = 0; i < users.length; i += 10) {
		const batch = [];
		for (const u of users.slice(i, i + 10))
			for (let k = 0; k < PER_USER; k++) batch.push(kit.connect(u));
		socks.push(...await Promise.all(batch));
	}
	assert.equal(socks.length, USERS * PER_USER);
	assert.equal(await metricValue(d.url, 'stockalert_ws_connections'), socks.length);

	// Each round publishes an event and reloads while its 1,000 alerts go
	// out; the reloads alternate the key set and the live limits.
	const events = [];
	for (let r = 0; r < ROUNDS; r++) {
		const e = `load-${r}-${randomId(4)}`;
		events.push(e);
		assert.equal(await kit.publish({ event_id: e, product_id: P, stock: 1, prev_stock: 0 }), 1);
		await reload(d, (c) => {
			c.alerts.max_per_window = 10000 - r;
			c.ws.max_connections_per_user = 8 + (r % 2);
			c.auth = r % 2
				? { keys: [{ kid: `k${r}`, secret_file: d.cfg.secretFile }] }
				: { secret_file: d.cfg.secretFile };
		});
	}
	for (const h of socks) {
		await waitFor(() => wsAlerts(h).length >= ROUNDS || h.closeInfo,
			{ timeout: 60000, what: `${ROUNDS} alerts for ${h.user}` });
	}
	for (const h of socks) {
		assert.equal(h.closeInfo, null, `${h.user} was disconnected`);
		// Exactly once each (order aside: one event's fan-out may
		// overtake nothing, but that is not what this test is about).
		assert.deepEqual(wsAlerts(h).map((m) => m.event_id).sort(), [...events].sort(),
			`alerts of ${h.user}`);
	}
	assert.equal(await metricValue(d.url, 'stockalert_ws_connections'), socks.length);
	assert.equal(await reloads(d, 'ok'), ROUNDS);
	assert.equal(await reloads(d, 'failed'), 0);
});

test('--check-config and gentoken --kid with auth.keys', async () => {
	const cfg = await makeConfig();
	const rs = path.join(cfg.dir, 'rs.pem');
	fs.writeFileSync(rs, crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
		.publicKey.export({ type: 'spki', format: 'pem' }));
	const write = (keys) => fs.writeFileSync(cfg.path, JSON.stringify({ ...cfg.config,
		auth: { keys } }));
	write([{ kid: 'a', secret_file: cfg.secretFile },
		{ kid: 'b', algorithm: 'RS256', public_key_file: rs }]);
	let r = await runDaemonCli(['--check-config', '-c', cfg.path]);
	assert.equal(r.code, 0, r.stderr);
	// Signs with the named HS256 key only.
	r = await runDaemonCli(['gentoken', '--sub', 'u', '--kid', 'a', '-c', cfg.path]);
	assert.equal(r.code, 0, r.stderr);
	assert.deepEqual(decodeJwt(r.stdout.trim()).header, { alg: 'HS256', typ: 'JWT', kid: 'a' });
	r = await runDaemonCli(['gentoken', '--sub', 'u', '--kid', 'b', '-c', cfg.path]);
	assert.equal(r.code, 1);
	assert.match(r.stderr, /--kid: gentoken needs an HS256 key, "b" is RS256/);
	r = await runDaemonCli(['gentoken', '--sub', 'u', '--kid', 'zz', '-c', cfg.path]);
	assert.equal(r.code, 1);
	assert.match(r.stderr, /--kid: no key "zz" in auth.keys/);
	// A key file that does not load fails the check, naming the key.
	write([{ kid: 'a', secret_file: cfg.secretFile },
		{ kid: 'b', algorithm: 'ES256', public_key_file: rs }]);
	r = await runDaemonCli(['--check-config', '-c', cfg.path]);
	assert.equal(r.code, 1);
	assert.match(r.stderr, /auth\.keys\[1\]\.public_key_file: .*not an EC P-256 key/);
});

// A self-signed certificate for 127.0.0.1 written to cert/key (new or over
// the old files); returns its PEM.
function makeCert(cert, key) {
	execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
		'-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1',
		'-keyout', key, '-out', cert], { stdio: 'ignore' });
	return fs.readFileSync(cert);
}

// GET over https trusting only ca: the status, or the TLS error's code.
function httpsGet(port, p, ca) {
	return new Promise((resolve) => {
		const req = https.get({ host: '127.0.0.1', port, path: p, ca, timeout: 5000,
			// No session reuse: a resumed session would skip the certificate.
			agent: false }, (res) => {
			let body = '';
			res.setEncoding('utf8');
			res.on('data', (x) => { body += x; });
			res.on('end', () => resolve({ status: res.statusCode, body }));
		});
		req.on('timeout', () => req.destroy(new Error('https timeout')));
		req.on('error', (e) => resolve({ error: e.code || e.message }));
	});
}

test('SIGHUP serves a renewed certificate at the same paths; open sockets keep theirs; ' +
	'a key that does not match changes nothing', { skip: !have('openssl') && 'no openssl' },
async (t) => {
	const dir = tmpDir('sa-tls-');
	const cert = path.join(dir, 'cert.pem'), key = path.join(dir, 'key.pem');
	const a = makeCert(cert, key);
	const cfg = await makeConfig({ tls: { cert_file: cert, key_file: key } });
	const d = startDaemon(cfg, { t });
	await waitFor(async () => {
		if (!d.running) throw new Error(`daemon exited:\n${d.log()}`);
		return (await httpsGet(d.port, '/healthz', a)).status === 200;
	}, { timeout: 30000, what: 'https /healthz' });
	const reloadsOver = async (ca, result) => {
		const r = await httpsGet(d.port, '/metrics', ca);
		const m = new RegExp(`^stockalert_config_reloads_total\\{result="${result}"\\} (\\d+)$`, 'm')
			.exec(r.body || '');
		return m ? Number(m[1]) : -1;
	};
	const { default: WebSocket } = await import('ws');
	const h = wsTrack(new WebSocket(`wss://127.0.0.1:${d.port}/ws?token=` +
		signJwt({ sub: 'tls-user', exp: now() + 600 }, cfg.secret), { ca: a }));
	await h.opened;
	await wsWaitFor(h, (m) => m.type === 'hello', 10000, 'hello over wss');

	// Renewed in place (another key too), then SIGHUP.
	const b = makeCert(cert, key);
	assert.equal((await httpsGet(d.port, '/healthz', b)).status, undefined, 'B before the reload');
	d.proc.kill('SIGHUP');
	await waitFor(async () => (await reloadsOver(b, 'ok')) === 1,
		{ timeout: 15000, what: 'the reload, seen over the new certificate' });
	assert.equal((await httpsGet(d.port, '/healthz', b)).status, 200);
	assert.ok((await httpsGet(d.port, '/healthz', a)).error, 'the old certificate still served');
	assert.match(d.log(), /SIGHUP: serving the certificate in /);
	// The socket opened under the old certificate runs on.
	const from = h.messages.length;
	h.send({ type: 'ping' });
	await wsWaitFor(h, (m) => h.messages.indexOf(m) >= from && m.type === 'pong', 5000, 'pong');

	// A key that does not belong to the certificate: refused, B still served.
	const other = path.join(dir, 'other');
	makeCert(`${other}.cert`, `${other}.key`);
	fs.copyFileSync(`${other}.key`, key);
	d.proc.kill('SIGHUP');
	await waitFor(async () => (await reloadsOver(b, 'failed')) === 1,
		{ timeout: 15000, what: 'the mismatched pair refused' });
	assert.match(d.log(), /keeping the running configuration: tls\.key_file: .* does not match tls\.cert_file/);
	assert.equal((await httpsGet(d.port, '/healthz', b)).status, 200);
	assert.equal(h.closeInfo, null);
	h.ws.terminate();
	await stopClean(d);
});
