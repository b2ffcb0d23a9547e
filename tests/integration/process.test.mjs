// Process behaviour (conf/README.md, Signals): graceful stop on SIGTERM/SIGINT within
// shutdown_grace_s, one epoll loop, SIGHUP survives, no token in the log.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import WebSocket from 'ws';

import {
	makeConfig, startDaemon, waitReady, stop, gentoken, epollFds, sanitizerReport, signJwt,
	decodeJwt, redisCommand, waitFor,
} from './lib/harness.mjs';

for (const sig of ['SIGTERM', 'SIGINT']) {
	test(`${sig}: exit 0 well within shutdown_grace_s`, async (t) => {
		const grace = 5;
		const cfg = await makeConfig({ shutdown_grace_s: grace });
		const d = startDaemon(cfg, { t });
		await waitReady(d);
		// An idle keep-alive connection must not hold the shutdown up.
		await (await fetch(`${d.url}/healthz`)).arrayBuffer();
		const r = await stop(d, sig, (grace + 10) * 1000);
		assert.equal(r.killed, false, `did not exit within ${grace + 10} s`);
		assert.equal(r.code, 0, `exit ${r.code} signal ${r.signal}\n${d.log()}`);
		assert.ok(r.ms < grace * 1000, `took ${r.ms} ms, grace is ${grace} s`);
		assert.equal(sanitizerReport(d.log()), null);
	});
}

// The stop also takes the user's presence with it: a key left behind would
// tell the other instances for another 90 s that the user is still here.
test('SIGTERM with an open WebSocket: close 1001, presence removed, exit 0', async (t) => {
	const cfg = await makeConfig({ shutdown_grace_s: 5 });
	const d = startDaemon(cfg, { t });
	await waitReady(d);
	const tok = await gentoken(cfg.path, 'sig-user');
	const online = `${cfg.config.redis.prefix}online:sig-user`;
	const rport = cfg.config.redis.port;
	const ws = new WebSocket(`${d.wsUrl}/ws?token=${tok}`);
	t.after(() => ws.terminate());
	await new Promise((resolve, reject) => {
		ws.once('open', resolve);
		ws.once('error', reject);
		ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
	});
	await waitFor(async () => (await redisCommand(rport, ['EXISTS', online])) === 1,
		{ timeout: 5000, what: `${online} to exist` });
	const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
	const r = await stop(d, 'SIGTERM', 20000);
	assert.equal(r.code, 0, `exit ${r.code}\n${d.log()}`);
	assert.equal(await closed, 1001);
	assert.equal(await redisCommand(rport, ['EXISTS', online]), 0, 'presence outlived the stop');
});

test('SIGHUP does not stop the daemon', async (t) => {
	const cfg = await makeConfig();
	const d = startDaemon(cfg, { t });
	await waitReady(d);
	d.proc.kill('SIGHUP');
	// Still serving after the reload; poll a few times so a delayed crash
	// shows up.
	for (let i = 0; i < 5; i++) {
		const r = await fetch(`${d.url}/healthz`);
		await r.arrayBuffer();
		assert.equal(r.status, 200);
	}
	await waitReady(d);
	assert.ok(d.running);
	const r = await stop(d);
	assert.equal(r.code, 0, d.log());
});

test('the daemon runs an epoll loop watching its sockets', async (t) => {
	const cfg = await makeConfig();
	const d = startDaemon(cfg, { t });
	await waitReady(d);
	const eps = epollFds(d.pid);
	assert.ok(eps.length >= 1, 'no anon_inode:[eventpoll] fd');
	// Listener + Redis connections at least are watched by one of them.
	assert.ok(eps.some((e) => e.watched >= 2), `epoll fds watch too little: ${JSON.stringify(eps)}`);
	const r = await stop(d);
	assert.equal(r.code, 0, d.log());
});

test('no token ever appears in the log (debug level, good and bad tokens)', async (t) => {
	const cfg = await makeConfig({ log: { level: 'debug', format: 'text' } });
	const d = startDaemon(cfg, { t });
	await waitReady(d);
	const good = await gentoken(cfg.path, 'log-user', ['admin'], 300);
	const expired = signJwt({ sub: 'log-user', exp: Math.floor(Date.now() / 1000) - 3600 },
		cfg.secret);
	const forged = signJwt({ sub: 'log-user', exp: Math.floor(Date.now() / 1000) + 3600 },
		'not-the-secret');
	const garbage = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLW5vdC12YWxpZC1hdC1hbGw';
	const tokens = [good, expired, forged, garbage];

	for (const tok of tokens) {
		for (const p of ['/api/me/subscriptions', '/api/products/1', '/healthz']) {
			const r = await fetch(`${d.url}${p}`, { headers: { authorization: `Bearer ${tok}` } });
			await r.arrayBuffer();
		}
		// A token in the URL (WebSocket), accepted or not.
		await new Promise((resolve) => {
			const ws = new WebSocket(`${d.wsUrl}/ws?token=${tok}`);
			const done = () => { ws.terminate(); resolve(); };
			ws.once('open', done);
			ws.once('error', done);
			ws.once('unexpected-response', done);
			setTimeout(done, 5000);
		});
		await (await fetch(`${d.url}/nothing?token=${tok}`)).arrayBuffer();
	}
	const r = await stop(d);
	assert.equal(r.code, 0, d.log());
	const log = d.log();
	assert.ok(log.length > 0, 'empty log at debug level');
	for (const tok of tokens) {
		assert.ok(!log.includes(tok), `a whole token is in the log: ${tok.slice(0, 20)}...`);
		const sig = tok.split('.')[2];
		assert.ok(!log.includes(sig), 'a token signature is in the log');
	}
	assert.ok(!log.includes(cfg.secret), 'the HS256 secret is in the log');
	assert.equal(decodeJwt(good).payload.sub, 'log-user');
});
