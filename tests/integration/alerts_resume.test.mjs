// Resume never claims a recovery it did not make: whenever an alert newer
// than ?since= may be missing from the history (trimmed by the daemon or by
// an operator, deleted, Redis restarted empty, a history key evicted under
// maxmemory), /ws?since= ends with a snapshot and replay_done
// recovered:false, and GET /api/me/alerts?since= says recovered:false. When
// nothing is missing, the replay is the missed alerts in order, once each,
// and count says how many.
//
// Each test runs its own redis-server, so it can trim, restart and evict.
// The user of the issue, zoe, holds three products; alert A reaches her
// live, B is recorded while she is away, and C after the loss.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
	alertsKit, startRedis, wsWaitFor, waitFor, waitReady, apiCall, redisCommand,
	redisPipeline, randomId,
	cleanStopChecker,
	eventId as eid,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(alerts|roster|catalog|events)\.c/,
	'leak in the alert pipeline');

const P = [601, 602, 603];
const products = P.map((id) => ({ id, stock: 10, threshold: 2 }));

// A kit on a private Redis (set up by prep before the daemon starts) with
// the rate limit.
async function kitFor(t, { overrides = {}, prep } = {}) {
	const redis = await startRedis({ t });
	if (prep) await prep(redis);
	const kit = await alertsKit({ t, redis, products,
		overrides: { alerts: { max_per_window: 3, window_s: 2, ...overrides } } });
	t.after(async () => assertCleanStop(await kit.close()));
	return { redis, kit, stream: `${kit.prefix}alerts` };
}

// Product pid sells out (its stock goes 5 -> 0); returns the alert id.
async function soldOut(kit, pid, prev = 5) {
	const e = eid(`so${pid}`);
	await kit.publish({ event_id: e, product_id: pid, stock: 0, prev_stock: prev });
	const out = await kit.processed(e);
	assert.equal(out.kind, 'sold_out', JSON.stringify(out));
	return { event_id: e, id: out.id };
}

// Zoe's setup: subscribed to P, alert A received live, then gone.
async function zoeGetsA(kit) {
	const u = `zoe-${randomId(3)}`;
	for (const pid of P) await kit.subscribe(u, pid);
	const h = await kit.connect(u);
	const a = await soldOut(kit, P[0]);
	const { msg } = await wsWaitFor(h, (m) => m.event_id === a.event_id, 10000, 'alert A');
	assert.equal(msg.id, a.id);
	h.ws.close(1000);
	await h.closed;
	return { u, a };
}

// What /ws?since= sends after hello, up to and including replay_done.
async function wsResume(kit, u, since) {
	const h = await kit.connect(u, { since });
	const { index } = await wsWaitFor(h, (m) => m.type === 'replay_done', 15000,
		`replay_done for since=${since}`);
	const seq = h.messages.slice(1, index + 1);
	h.ws.close(1000);
	await h.closed;
	return seq;
}

async function restResume(kit, u, since) {
	const r = await apiCall(kit.daemons[0].url, 'GET',
		`/api/me/alerts?since=${encodeURIComponent(since)}`, { token: kit.token(u) });
	assert.equal(r.status, 200, r.text);
	return r.json;
}

// Both ways of resuming must admit the loss: a snapshot of zoe's products
// and recovered:false, never a partial replay.
async function assertNotRecovered(kit, u, since, why) {
	const seq = await wsResume(kit, u, since);
	assert.equal(seq.length, 2, `${why}: ${JSON.stringify(seq)}`);
	assert.equal(seq[0].type, 'snapshot', `${why}: ${JSON.stringify(seq)}`);
	assert.deepEqual(seq[0].products.map((p) => p.product_id).filter((p) => P.includes(p))
		.sort(), P, `${why}: the snapshot lists her products`);
	assert.deepEqual(seq[1], { type: 'replay_done', count: 0, recovered: false }, why);
	const j = await restResume(kit, u, since);
	assert.equal(j.recovered, false, `${why}: GET /api/me/alerts?since= ${JSON.stringify(j)}`);
}

// A full recovery: exactly the alerts after since, oldest first, once each.
async function assertRecovered(kit, u, since, expected, why) {
	const seq = await wsResume(kit, u, since);
	const alerts = seq.slice(0, -1);
	assert.ok(alerts.every((m) => m.type === 'alert'), `${why}: ${JSON.stringify(seq)}`);
	assert.deepEqual(alerts.map((m) => m.event_id), expected.map((x) => x.event_id), why);
	assert.deepEqual(seq.at(-1), { type: 'replay_done', count: expected.length,
		recovered: true }, why);
	const j = await restResume(kit, u, since);
	assert.equal(j.recovered, true, `${why}: ${JSON.stringify(j)}`);
	assert.deepEqual(j.alerts.map((m) => m.id), expected.map((x) => x.id), why);
}

async function entryIds(port, stream) {
	return (await redisCommand(port, ['XRANGE', stream, '-', '+'])).map((e) => e[0]);
}

// Compares two alert ids numerically (ms, then seq).
function cmpId(x, y) {
	const [xm, xs] = x.split('-').map(BigInt);
	const [ym, ys] = y.split('-').map(BigInt);
	return xm === ym ? (xs < ys ? -1 : xs > ys ? 1 : 0) : (xm < ym ? -1 : 1);
}

const plusOne = (id) => `${BigInt(id.split('-')[0]) + 1n}`;

test('the issue: history trimmed past B by XTRIM (as an operator would)', async (t) => {
	const { redis, kit, stream } = await kitFor(t);
	const { u, a } = await zoeGetsA(kit);
	const b = await soldOut(kit, P[1]);
	// Trimming below A only: nothing she missed is gone.
	assert.equal(await redisCommand(redis.port, ['XTRIM', stream, 'MINID', a.id]), 0);
	await assertRecovered(kit, u, a.id, [b], 'nothing trimmed after A');
	// An id older than the history's beginning is no alert of it.
	await assertNotRecovered(kit, u, '0-0', 'since 0-0');

	assert.ok(await redisCommand(redis.port, ['XTRIM', stream, 'MINID', plusOne(b.id)]) >= 2);
	const c = await soldOut(kit, P[2]);
	assert.deepEqual(await entryIds(redis.port, stream), [c.id]);
	await assertNotRecovered(kit, u, a.id, 'B was trimmed');
	// From C on, the history is whole again.
	const d = await soldOut(kit, P[0], 3);
	await assertRecovered(kit, u, c.id, [d], 'since C, after the trim');
});

test('an alert deleted by XDEL after since: not recovered', async (t) => {
	const { redis, kit, stream } = await kitFor(t);
	const { u, a } = await zoeGetsA(kit);
	const b = await soldOut(kit, P[1]);
	const c = await soldOut(kit, P[2]);
	assert.equal(await redisCommand(redis.port, ['XDEL', stream, b.id]), 1);
	await assertNotRecovered(kit, u, a.id, 'B deleted');
	await assertRecovered(kit, u, c.id, [], 'since C, nothing after it deleted');
	const d = await soldOut(kit, P[0], 3);
	await assertRecovered(kit, u, c.id, [d], 'since C, B deleted before it');
});

test('an alert recorded by an older version (no index member): not recovered', async (t) => {
	const { redis, kit, stream } = await kitFor(t);
	const { u, a } = await zoeGetsA(kit);
	// What a previous version's instance writes during a rolling upgrade.
	const b = await redisCommand(redis.port, ['XADD', stream, '*', 'kind', 'sold_out',
		'product_id', String(P[1]), 'stock', '0', 'prev', '5', 'thr', '2', 'name', 'x',
		'event_id', eid('old'), 'ts', String(Date.now()), 'fair', '0']);
	assert.match(b, /^\d+-\d+$/);
	await assertNotRecovered(kit, u, a.id, 'B has no index member');
	const c = await soldOut(kit, P[2]);
	await assertNotRecovered(kit, u, a.id, 'B has no index member, C after it');
	const d = await soldOut(kit, P[0], 3);
	await assertRecovered(kit, u, c.id, [d], 'since C');
});

test('the daemon\'s own trimming (history_s) past B', { timeout: 240000 }, async (t) => {
	// One entry per stream node, so MINID ~ trims every entry older than
	// history_s, as it does to whole nodes of a busy stream.
	const { redis, kit, stream } = await kitFor(t, {
		overrides: { history_s: 60 },
		prep: (r) => r.command(['CONFIG', 'SET', 'stream-node-max-entries', '1']),
	});
	const { u, a } = await zoeGetsA(kit);
	const b = await soldOut(kit, P[1]);
	await assertRecovered(kit, u, a.id, [b], 'before the trim');
	const bMs = Number(b.id.split('-')[0]);
	await waitFor(async () => Date.now() > bMs + 61000,
		{ timeout: 120000, interval: 500, what: 'B older than history_s' });
	const c = await soldOut(kit, P[2]);
	assert.deepEqual(await entryIds(redis.port, stream), [c.id],
		'the daemon trimmed A and B when it recorded C');
	await assertNotRecovered(kit, u, a.id, 'B trimmed by the daemon');
	await assertRecovered(kit, u, c.id, [], 'since C');
});

test('Redis restarted empty: a since from the lost history is not recovered', async (t) => {
	const { redis, kit } = await kitFor(t);
	const { u, a } = await zoeGetsA(kit);
	await soldOut(kit, P[1]);
	await redis.stop('SIGKILL');
	await redis.start();
	await waitReady(kit.daemons[0], 30000);
	// Her subscriptions came back from MySQL; nothing recorded yet.
	await waitFor(async () => (await restResume(kit, u, a.id)).recovered === false,
		{ timeout: 15000, what: 'history answered after the restart' });
	await assertNotRecovered(kit, u, a.id, 'empty history after the restart');
	const c = await soldOut(kit, P[2], 10);
	await assertNotRecovered(kit, u, a.id, 'a new history began with C');
	const d = await soldOut(kit, P[0], 10);
	await assertRecovered(kit, u, c.id, [d], 'since C, in the new history');
});

// Evicts key under maxmemory-policy volatile-ttl, the way a full Redis
// does: key gets a TTL (as the event hashes have), and maxmemory drops below
// what is in use for one command, so Redis evicts every key with a TTL.
async function evict(port, key) {
	const stat = async () => Number(/evicted_keys:(\d+)/.exec(await redisCommand(port,
		['INFO', 'stats']))[1]);
	const before = await stat();
	const r = await redisPipeline(port, [
		['CONFIG', 'SET', 'maxmemory-policy', 'volatile-ttl'],
		['PEXPIRE', key, '3600000'],
		['CONFIG', 'SET', 'maxmemory', '1'],
		['PING'],
		['CONFIG', 'SET', 'maxmemory', '0'],
		['EXISTS', key],
	]);
	assert.equal(r[1], 1, `${key} existed`);
	assert.ok(await stat() > before, 'Redis evicted keys');
	assert.equal(r[5], 0, `${key} was evicted`);
}

for (const which of ['alerts', 'alerts:index', 'alerts:start']) {
	test(`${which} evicted under maxmemory: not recovered, then whole again`, async (t) => {
		const { redis, kit } = await kitFor(t);
		const { u, a } = await zoeGetsA(kit);
		const b = await soldOut(kit, P[1]);
		await assertRecovered(kit, u, a.id, [b], 'before the eviction');
		await evict(redis.port, `${kit.prefix}${which}`);
		await assertNotRecovered(kit, u, a.id, `${which} evicted`);
		const c = await soldOut(kit, P[2]);
		await assertNotRecovered(kit, u, a.id, `${which} evicted, then C recorded`);
		const d = await soldOut(kit, P[0], 3);
		await assertRecovered(kit, u, c.id, [d], `since C, after ${which} was evicted`);
	});
}

test('a user\'s history among many other alerts: ordered, once each, paged', async (t) => {
	const { redis, kit, stream } = await kitFor(t);
	const { u, a } = await zoeGetsA(kit);
	// 1,200 alerts of other products, recorded the way the daemon does
	// (through its processing), with zoe's own alerts in between.
	const others = [];
	for (let i = 0; i < 40; i++) others.push({ id: 700 + i, stock: 10 });
	await kit.sql('INSERT INTO products (id, sku, name, stock, low_stock_threshold) VALUES ' +
		others.map((p) => `(${p.id}, 'SKU-${p.id}', 'o${p.id}', 10, 2)`).join(', '));
	const mine = [];
	let last = '';
	for (let round = 0; round < 15; round++) {
		for (const p of others) {
			last = eid('x');
			await kit.publish({ event_id: last, product_id: p.id, stock: round % 2 ? 5 : 0,
				prev_stock: round % 2 ? 0 : 5 });
		}
		if (round % 2 === 0) {
			const pid = P[round % 3];
			const e = eid(`m${round}`);
			await kit.publish({ event_id: e, product_id: pid, stock: 0, prev_stock: 5 });
			mine.push({ event_id: e });
			const e2 = eid(`r${round}`);
			await kit.publish({ event_id: e2, product_id: pid, stock: 6, prev_stock: 0 });
			mine.push({ event_id: e2 });
		}
	}
	for (const m of mine) m.id = (await kit.processed(m.event_id)).id;
	await kit.processed(last);
	// Events run concurrently: the history's order is the ids' order.
	mine.sort((x, y) => cmpId(x.id, y.id));
	assert.ok((await redisCommand(redis.port, ['XLEN', stream])) > 600);
	await assertRecovered(kit, u, a.id, mine, 'her alerts among the others');
	// Paging by since: each page continues the last.
	let since = a.id;
	const seen = [];
	for (;;) {
		const r = await apiCall(kit.daemons[0].url, 'GET',
			`/api/me/alerts?since=${since}&limit=3`, { token: kit.token(u) });
		assert.equal(r.json.recovered, true);
		if (r.json.alerts.length === 0) break;
		seen.push(...r.json.alerts.map((x) => x.id));
		since = r.json.alerts.at(-1).id;
	}
	assert.deepEqual(seen, mine.map((m) => m.id));
});

test('more missed than one replay carries (1,000): a snapshot, and REST pages them all',
	async (t) => {
		const { kit } = await kitFor(t);
		const { u, a } = await zoeGetsA(kit);
		const missed = [];
		for (let i = 0; i < 1001; i++) {
			const e = eid(`b${i}`);
			await kit.publish({ event_id: e, product_id: P[i % 3], stock: i % 2 ? 0 : 6,
				prev_stock: i % 2 ? 6 : 0 });
			missed.push(e);
		}
		const ids = [];
		for (const e of missed) ids.push((await kit.processed(e)).id);
		ids.sort(cmpId);
		const seq = await wsResume(kit, u, a.id);
		assert.equal(seq.length, 2, `a partial replay: ${seq.length - 1} alerts`);
		assert.equal(seq[0].type, 'snapshot');
		assert.deepEqual(seq[1], { type: 'replay_done', count: 0, recovered: false });
		let since = a.id;
		const seen = [];
		for (;;) {
			const j = await restResume(kit, u, since);
			assert.equal(j.recovered, true);
			if (j.alerts.length === 0) break;
			seen.push(...j.alerts.map((x) => x.id));
			since = j.alerts.at(-1).id;
		}
		assert.deepEqual(seen, ids);
	});
