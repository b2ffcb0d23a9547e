// Hardening: what a producer, a client or a Redis in the wrong state can do to
// the daemon, and must not. A stream Redis keeps refusing (a demoted primary
// after REPLICAOF, the stream key holding a string) is retried with backoff,
// logged once and reported by /readyz and /metrics, then recovered from; event
// ids whose keys used to meet ("order-7:i" and "order-7") are both delivered;
// a token with an exp near INT64_MAX gets a normal session; a malformed event
// cannot forge a log line or write terminal escapes; a flood of bad events
// costs a few log lines; a product's stock state expires.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';

import {
	alertsKit, durableKit, startRedis, waitFor, waitReadyz, redisCommand, redisPipeline,
	randomId, sleep, stop, sanitizerReport, wsTrack, wsWaitFor, wsAlerts,
	cleanStopChecker,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(stream|alerts|events|log|auth|ws)\.c/);

// Calls of a command Redis served, refused or failed (INFO commandstats).
async function commandCalls(port, cmd) {
	const info = await redisCommand(port, ['INFO', 'commandstats']);
	const m = info.match(new RegExp(`^cmdstat_${cmd}:(.*)$`, 'm'));
	if (!m) return 0;
	let n = 0;
	for (const kv of m[1].split(',')) {
		const [k, v] = kv.split('=');
		if (k === 'calls' || k === 'rejected_calls' || k === 'failed_calls') n += Number(v);
	}
	return n;
}

// XREADGROUP calls Redis saw during a window of `ms`. The window is the
// measurement, not a synchronisation: the bound asserted is a property of
// the retry policy (>= 100 ms between attempts), not of the daemon's speed.
async function xreadgroupRate(port, ms = 2000) {
	const before = await commandCalls(port, 'xreadgroup');
	await sleep(ms);
	return (await commandCalls(port, 'xreadgroup')) - before;
}

const streamUp = (kit) => kit.metric('stockalert_dependency_up', { dep: 'redis_stream' });
const notWorkingLines = (d) => d.log().split('\n').filter((l) => /input not working/.test(l));

// A stream event that alerts the subscriber, then its alert on h.
async function assertStreamDelivers(kit, h, pid, what) {
	const id = `after-${randomId(5)}`;
	const last = wsAlerts(h).filter((a) => a.product_id === pid).pop();
	const stock = last && last.stock > 0 ? 0 : 5;
	await kit.xadd([{ event_id: id, product_id: pid, stock, prev_stock: stock ? 0 : 5 }]);
	await wsWaitFor(h, (m) => m.event_id === id, 20000, `${what}: alert from the stream`);
}

// While Redis refuses the stream reader: the metric says so, the retries are
// bounded (before the fix, ~8,000 a second), and the log has one warning per
// change of state, not one per retry.
async function assertRefusedQuietly(t, kit, d, redis) {
	await waitFor(async () => await streamUp(kit) === 0, { timeout: 10000,
		what: 'dependency_up{redis_stream} 0' });
	const calls = await xreadgroupRate(redis.port);
	t.diagnostic(`${calls} XREADGROUP in 2 s while Redis refuses them`);
	assert.ok(calls < 100, `${calls} XREADGROUP in 2 s`);
	assert.ok(notWorkingLines(d).length <= 3,
		`warnings:\n${notWorkingLines(d).join('\n')}`);
}

test('stream key of the wrong type: backoff, one warning, not ready, then recovery',
	async (t) => {
		const P = 1801;
		const redis = await startRedis({ t });
		const kit = await durableKit({ t, redis, products: [{ id: P, stock: 0 }] });
		t.after(async () => assertCleanStop(await kit.close()));
		const d = await kit.start();
		const user = `wt-${randomId(4)}`;
		await kit.subscribe(user, P);
		const h = await kit.connect(user);
		await assertStreamDelivers(kit, h, P, 'before');
		assert.equal(await streamUp(kit), 1);

		// A producer (or an operator) overwrites the stream with a string.
		await redis.command(['DEL', kit.streamKey]);
		await redis.command(['SET', kit.streamKey, 'oops']);
		const rz = await waitReadyz(d, (st, b) => st === 503 && b && b.stream &&
			/WRONGTYPE|NOGROUP/.test(b.stream.error || ''), 20000, '/readyz 503 on WRONGTYPE');
		assert.equal(rz.body.redis, 'up', 'Redis itself is up');
		await assertRefusedQuietly(t, kit, d, redis);
		assert.equal((await fetch(`${d.url}/readyz`)).status, 503);

		// The key is fixed: the group is created again, the input works.
		await redis.command(['DEL', kit.streamKey]);
		await waitReadyz(d, (st) => st === 200, 30000, '/readyz 200 after the key is fixed');
		await waitFor(async () => await streamUp(kit) === 1, { timeout: 10000,
			what: 'dependency_up{redis_stream} 1 again' });
		await assertStreamDelivers(kit, h, P, 'after recovery');
		assert.match(d.log(), /input working again/);
		assert.equal(h.closeInfo, null, 'the client was disconnected');
	});

test('Redis demoted to a replica (REPLICAOF): no XREADGROUP storm, not ready, then recovery',
	async (t) => {
		const P = 1802;
		const redis = await startRedis({ t });
		const other = await startRedis({ t });
		const kit = await durableKit({ t, redis, products: [{ id: P, stock: 0 }] });
		t.after(async () => assertCleanStop(await kit.close()));
		const d = await kit.start();
		const user = `rp-${randomId(4)}`;
		await kit.subscribe(user, P);
		const h = await kit.connect(user);
		await assertStreamDelivers(kit, h, P, 'before');

		// The old primary demoted in a failover.
		assert.equal(await redis.command(['REPLICAOF', '127.0.0.1', String(other.port)]), 'OK');
		const rz = await waitReadyz(d, (st, b) => st === 503 && b && b.stream &&
			/READONLY|NOGROUP/.test(b.stream.error || ''), 20000, '/readyz 503 on a replica');
		assert.equal(typeof rz.body.stream.error, 'string');
		await assertRefusedQuietly(t, kit, d, redis);

		// Promoted back: the input works again without a restart.
		assert.equal(await redis.command(['REPLICAOF', 'NO', 'ONE']), 'OK');
		await waitReadyz(d, (st) => st === 200, 30000, '/readyz 200 after REPLICAOF NO ONE');
		await waitFor(async () => await streamUp(kit) === 1, { timeout: 10000,
			what: 'dependency_up{redis_stream} 1 again' });
		await assertStreamDelivers(kit, h, P, 'after promotion');
		assert.equal(h.closeInfo, null, 'the client was disconnected');
	});

test('event ids whose keys used to collide ("x:i" and "x") are both delivered',
	async (t) => {
		const P = 1803;
		const kit = await durableKit({ t, products: [{ id: P, stock: 5 }] });
		t.after(async () => assertCleanStop(await kit.close()));
		await kit.start();
		const user = `ci-${randomId(4)}`;
		await kit.subscribe(user, P);
		const h = await kit.connect(user);
		const base = `order-${randomId(5)}`;
		const other = `ship-${randomId(5)}`;
		// On the stream, "x:i" first; on pub/sub, the other order.
		const evs = [
			[`${base}:i`, { stock: 0, prev_stock: 5 }, 'stream'],
			[base, { stock: 5, prev_stock: 0 }, 'stream'],
			[other, { stock: 0, prev_stock: 5 }, 'pubsub'],
			[`${other}:i`, { stock: 5, prev_stock: 0 }, 'pubsub'],
		];
		for (const [id, ev, via] of evs) {
			const e = { event_id: id, product_id: P, ...ev };
			if (via === 'stream') await kit.xadd([e]);
			else await kit.publish(e);
			await wsWaitFor(h, (m) => m.event_id === id, 15000, `alert of ${id} (${via})`);
		}
		assert.deepEqual(wsAlerts(h).filter((a) => a.product_id === P)
			.map((a) => [a.event_id, a.kind]),
		[[`${base}:i`, 'sold_out'], [base, 'back_in_stock'], [other, 'sold_out'],
			[`${other}:i`, 'back_in_stock']]);
		assert.deepEqual(await kit.deadEntries(), []);

		// Each is still processed once: sent again, nothing new.
		await kit.xadd([{ event_id: `${base}:i`, product_id: P, stock: 0, prev_stock: 5 }]);
		await kit.publish({ event_id: `${other}:i`, product_id: P, stock: 5, prev_stock: 0 });
		await waitFor(async () => await kit.metric('stockalert_events_duplicate_total') >= 2,
			{ timeout: 15000, what: 'the repeats counted as duplicates' });
		assert.equal(wsAlerts(h).filter((a) => a.product_id === P).length, 4);
		assert.equal(h.closeInfo, null);
	});

// An HS256 token whose payload is the exact JSON text given (a number near
// INT64_MAX does not survive JSON.stringify).
function signRaw(payloadText, secret) {
	const enc = (s) => Buffer.from(s).toString('base64url');
	const data = `${enc('{"alg":"HS256","typ":"JWT"}')}.${enc(payloadText)}`;
	const sig = crypto.createHmac('sha256', secret).update(data).digest('base64url');
	return `${data}.${sig}`;
}

test('a token with exp near INT64_MAX gets a normal session; the daemon survives', async (t) => {
	// exp + leeway is past INT64_MAX: what the expiry schedule computed.
	const kit = await alertsKit({ t, overrides: { auth: { leeway_s: 1 } } });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	await waitReadyz(d, (st) => st === 200, 30000, 'ready');
	const { default: WebSocket } = await import('ws');
	const open = (token) => {
		const h = wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${encodeURIComponent(token)}`));
		t.after(() => { try { h.ws.terminate(); } catch { /* gone */ } });
		return h;
	};
	const far = open(signRaw('{"sub":"far-future","exp":9223372036854775807}', kit.secret));
	await far.opened;
	await wsWaitFor(far, (m) => m.type === 'hello', 10000, 'hello for the far-future token');
	// A socket whose token expires in a second is closed by the expiry
	// sweep: once it is, the sweep has passed the far-future socket too.
	const now = Math.floor(Date.now() / 1000);
	const soon = open(signRaw(`{"sub":"soon","exp":${now + 1}}`, kit.secret));
	await soon.opened;
	await waitFor(() => soon.closeInfo !== null, { timeout: 60000,
		what: 'the short token closed at expiry' });
	assert.equal(soon.closeInfo.code, 4001);
	assert.equal(far.closeInfo, null, `closed: ${JSON.stringify(far.closeInfo)}`);
	const from = far.messages.length;
	far.send({ type: 'ping' });
	await wsWaitFor(far, (m) => far.messages.indexOf(m) >= from && m.type === 'pong', 5000,
		'pong on the far-future session');
	assert.ok(d.running, 'the daemon died');
	assert.equal(sanitizerReport(d.log()), null, sanitizerReport(d.log()));
});

test('a malformed event cannot forge a log line or write terminal escapes', async (t) => {
	const kit = await alertsKit({ t });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	await waitReadyz(d, (st) => st === 200, 30000, 'ready');
	const tag = `junk${randomId(4)}`;
	const forged = `${tag}\n2026-01-01T00:00:00.000Z error main: FORGED LOG LINE\x1b[2J\x1b]0;t\x07`;
	const before = await kit.metric('stockalert_events_malformed_total');
	assert.equal(await kit.publish(forged), 1);
	await waitFor(async () => await kit.metric('stockalert_events_malformed_total') > before,
		{ timeout: 10000, what: 'the event counted as malformed' });
	const log = d.log();
	const lines = log.split('\n').filter((l) => l.includes(tag) || l.includes('FORGED'));
	assert.equal(lines.length, 1, `lines:\n${lines.join('\n')}`);
	assert.match(lines[0], /^\S+Z warn alerts: malformed event skipped: /);
	assert.ok(lines[0].includes(`${tag}\\n2026-01-01T00:00:00.000Z error main: FORGED LOG LINE` +
		'\\x1b[2J\\x1b]0;t\\x07'), lines[0]);
	assert.doesNotMatch(log, /^2026-01-01T00:00:00\.000Z error main: FORGED/m);
	assert.ok(!/[\x00-\x08\x0b-\x1f\x7f]/.test(log), 'a raw control character in the log');
});

test('a flood of malformed events costs a few log lines, all of them accounted for',
	async (t) => {
		const kit = await alertsKit({ t });
		const d = kit.daemons[0];
		await waitReadyz(d, (st) => st === 200, 30000, 'ready');
		const N = 20000;
		const before = await kit.metric('stockalert_events_malformed_total');
		const channel = `${kit.prefix}inventory`;
		for (let i = 0; i < N; i += 1000) {
			const cmds = [];
			for (let k = i; k < i + 1000; k++) cmds.push(['PUBLISH', channel, `bad-${k}`]);
			await redisPipeline(kit.redisPort, cmds, { timeout: 30000 });
		}
		await waitFor(async () =>
			await kit.metric('stockalert_events_malformed_total') - before === N,
		{ timeout: 120000, what: `${N} malformed events counted` });
		const r = await stop(d, 'SIGTERM');
		assert.equal(r.code, 0);
		const log = d.log();
		const skipped = log.split('\n').filter((l) => /malformed event skipped/.test(l) &&
			!/lines suppressed/.test(l)).length;
		let suppressed = 0;
		for (const m of log.matchAll(/(\d+) similar lines suppressed in \d+ s: "malformed event/g)) {
			suppressed += Number(m[1]);
		}
		t.diagnostic(`${N} malformed events: ${skipped} lines, ${suppressed} counted in ` +
			`summaries, ${log.length} bytes of log`);
		// Without the limit: 20,000 lines (4.4 MB).
		assert.ok(skipped <= 100, `${skipped} lines for ${N} malformed events`);
		assert.equal(skipped + suppressed, N, 'every line written or counted');
		assert.ok(log.length < 100000, `${log.length} bytes of log`);
		assertCleanStop(await kit.close());
	});

test('stock:{id} expires alerts.stock_ttl_s after the product\'s last event', async (t) => {
	const P = 1806;
	const ttl = 2592000; // the default
	const kit = await alertsKit({ t, products: [{ id: P, stock: 5 }] });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	await waitReadyz(d, (st) => st === 200, 30000, 'ready');
	const id = `st-${randomId(5)}`;
	await kit.publish({ event_id: id, product_id: P, stock: 3 });
	await kit.processed(id, 1);
	const key = `${kit.prefix}stock:${P}`;
	assert.equal(await redisCommand(kit.redisPort, ['GET', key]), '3');
	const left = await redisCommand(kit.redisPort, ['TTL', key]);
	assert.ok(left > 0 && left <= ttl, `TTL ${left}`);
});
