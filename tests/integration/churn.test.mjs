// Connection churn on /ws: thousands of connect/close cycles of mixed kinds
// (clean close, RST or FIN after the hello, abort mid-handshake, reset
// right after a complete upgrade request) leave nothing
// behind: the open-connection gauge returns to 0, file descriptors to their
// baseline, RSS stays bounded, and the daemon still stops cleanly with no
// LeakSanitizer report.
//
// Counts: CHURN_TOTAL cycles (default 10000) in batches of CHURN_BATCH
// (default 200) concurrent cycles; about 1 min on 2 cores under ASan.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import WebSocket from 'ws';

import {
	makeConfig, startDaemon, waitReady, waitFor, stop, signJwt, sanitizerReport,
	wsTrack, metricValue, rssKiB, fdCount, redisCommand,
} from './lib/harness.mjs';

const TOTAL = Number(process.env.CHURN_TOTAL || 10000);
const BATCH = Number(process.env.CHURN_BATCH || 200);
const USERS = 50;
const GAUGE = 'stockalert_ws_connections';
const ASAN_ENV = {
	ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'quarantine_size_mb=16'].filter(Boolean).join(':'),
};

const nowS = () => Math.floor(Date.now() / 1000);

function withTimeout(p, ms, what) {
	let timer;
	return Promise.race([p, new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what}: no result in ${ms} ms`)), ms);
	})]).finally(() => clearTimeout(timer));
}

// Writes bytes on a fresh connection, then resets it (RST) as soon as they
// are written; resolves once it is closed.
function writeThenReset(d, bytes) {
	return new Promise((resolve) => {
		const s = net.connect(d.port, '127.0.0.1');
		s.on('error', () => {});
		s.on('close', resolve);
		s.on('connect', () => s.write(bytes, () => s.resetAndDestroy()));
	});
}

// One cycle of the given kind; resolves when the client side is done.
async function cycle(d, kind, token) {
	const head = `GET /ws?token=${token} HTTP/1.1\r\nHost: 127.0.0.1:${d.port}\r\n` +
		'Upgrade: websocket\r\n';
	if (kind === 'early') {
		// A complete upgrade request, reset before the response is read.
		await writeThenReset(d, head + 'Connection: Upgrade\r\n' +
			'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
			'Sec-WebSocket-Version: 13\r\n\r\n');
		return;
	}
	if (kind === 'abort') {
		// Half an upgrade request, then a reset.
		await writeThenReset(d, head);
		return;
	}
	const c = wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${token}`));
	try {
		await withTimeout(c.opened, 15000, 'upgrade');
		const h = await c.next((m) => m.type === 'hello', 15000, 'hello');
		if (!h.user_id) throw new Error(`bad hello ${JSON.stringify(h)}`);
		if (kind === 'clean') {
			c.ws.close(1000);
			const cl = await withTimeout(c.closed, 15000, 'close handshake');
			if (cl.code !== 1000) throw new Error(`closed ${cl.code}`);
		} else if (kind === 'rst') {
			c.send({ type: 'ping' }); // in flight when the reset comes
			c.ws._socket.resetAndDestroy();
			await c.closed;
		} else {
			c.ws.terminate();
			await c.closed;
		}
	} catch (e) {
		c.ws.terminate();
		throw e;
	}
}

test(`${TOTAL} connect/close cycles leave no connections, fds or memory behind`,
	{ timeout: 400000 }, async (t) => {
		const cfg = await makeConfig({ ws: { max_connections_per_user: 1000 } });
		const d = startDaemon(cfg, { t, env: ASAN_ENV });
		await waitReady(d);
		const tokens = Array.from({ length: USERS }, (_, i) =>
			signJwt({ sub: `churn${i}`, exp: nowS() + 3600 }, cfg.secret));
		const kinds = ['clean', 'rst', 'abort', 'terminate', 'early'];

		const runCycles = async (n) => {
			const failures = [];
			const counts = {};
			for (let i = 0; i < n; i += BATCH) {
				const jobs = [];
				for (let j = i; j < Math.min(n, i + BATCH); j++) {
					const kind = kinds[j % kinds.length];
					counts[kind] = (counts[kind] || 0) + 1;
					jobs.push(cycle(d, kind, tokens[j % USERS]).catch((e) => {
						failures.push(`${kind}: ${e.message}`);
					}));
				}
				await Promise.all(jobs);
				if (!d.running) throw new Error(`daemon died:\n${d.log().slice(-3000)}`);
			}
			return { failures, counts };
		};
		const settled = () => waitFor(async () => (await metricValue(d.url, GAUGE)) === 0,
			{ timeout: 30000, what: `${GAUGE} == 0` });

		// Warm up lazily allocated state (pools, Redis presence scripts).
		await runCycles(2 * BATCH);
		await settled();
		const fd0 = fdCount(d.pid);
		const rss0 = rssKiB(d.pid);
		const opened0 = await metricValue(d.url, 'stockalert_ws_connections_opened_total');

		const t0 = Date.now();
		const { failures, counts } = await runCycles(TOTAL);
		const secs = (Date.now() - t0) / 1000;
		await settled();
		const rss1 = rssKiB(d.pid);
		let fd1 = fdCount(d.pid);
		try {
			await waitFor(() => (fd1 = fdCount(d.pid)) <= fd0 + 5,
				{ timeout: 15000, what: 'fd count back near baseline' });
		} catch { /* asserted below with the numbers */ }
		const opened = await metricValue(d.url, 'stockalert_ws_connections_opened_total') - opened0;
		t.diagnostic(`${TOTAL} cycles ${JSON.stringify(counts)} in ${secs.toFixed(1)} s; ` +
			`fds ${fd0} → ${fd1}; RSS ${rss0} → ${rss1} KiB; upgrades counted ${opened}`);

		assert.deepEqual(failures.slice(0, 10), [], `${failures.length} cycles failed`);
		// An 'early' reset may or may not beat the daemon's ESTABLISHED.
		assert.ok(opened >= counts.clean + counts.rst + counts.terminate &&
			opened <= counts.clean + counts.rst + counts.terminate + counts.early,
		`upgrades counted ${opened}`);
		const prefix = cfg.config.redis.prefix;
		await waitFor(async () => {
			const keys = await redisCommand(cfg.config.redis.port, ['KEYS', `${prefix}online:*`]);
			return Array.isArray(keys) && keys.length === 0;
		}, { timeout: 10000, what: 'no presence keys left' });
		assert.ok(fd1 <= fd0 + 5, `fds ${fd0} → ${fd1}`);
		assert.ok(rss1 - rss0 < 30 * 1024, `RSS grew ${rss1 - rss0} KiB`);
		// Still serving.
		const c = wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${tokens[0]}`));
		await c.opened;
		await c.next((m) => m.type === 'hello', 10000, 'hello after churn');
		c.ws.close(1000);
		await c.closed;

		const r = await stop(d, 'SIGTERM');
		assert.equal(sanitizerReport(d.log()), null);
		assert.equal(r.code, 0, `exit ${r.code} signal ${r.signal}\n${d.log().slice(-3000)}`);
	});
