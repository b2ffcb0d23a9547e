// Durable input (conf/README.md, Inventory events): <prefix>inventory:stream read as consumer group
// `stockalert`. Entries written while no instance runs (before any instance
// ever ran, and after every instance stopped) are processed exactly once when
// one starts; malformed entries move to <prefix>inventory:dead with their
// reason and are acknowledged; the same event_id on the stream twice, or on
// the stream and on pub/sub, is processed once; lag, pending and dead-letter
// counts reach /readyz and /metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
	durableKit, waitFor, waitReadyz, apiCall, redisCommand, randomId, wsAlerts, wsWaitFor,
	cleanStopChecker,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(stream|alerts|events)\.c/,
	'leak in the stream path');

// Event ids of the history stream, counted.
function countByEvent(entries) {
	const n = new Map();
	for (const e of entries) n.set(e.event_id, (n.get(e.event_id) || 0) + 1);
	return n;
}

// Waits until the group has nothing pending and nothing undelivered.
async function drained(kit, timeout = 30000) {
	return waitFor(async () => {
		const g = await kit.group();
		return g && g.pending === 0 && g.lag === 0 ? g : false;
	}, { timeout, what: 'consumer group drained (pending 0, lag 0)' });
}

test('entries added while no instance runs are processed exactly once', async (t) => {
	const P = 501;
	const Q = 502;
	const kit = await durableKit({
		t, overrides: { alerts: { max_per_window: 10000 } },
		products: [{ id: P, stock: 0 }, { id: Q, stock: 0 }],
	});
	t.after(async () => assertCleanStop(await kit.close()));

	// 1. Before any instance ever ran: no stream, no group yet.
	assert.equal(await kit.group(), null);
	const early = Array.from({ length: 20 }, (_, k) => `early-${k}-${randomId(3)}`);
	await kit.xadd(early.map((id) => ({ event_id: id, product_id: Q, stock: 3, prev_stock: 0 })));
	const d1 = await kit.start(0);
	await drained(kit);
	assert.deepEqual(await kit.missingEvents(early), [], 'events added before the first start');
	let counts = countByEvent(await kit.alertEntries());
	for (const id of early) assert.equal(counts.get(id), 1, `alerts recorded for ${id}`);

	// 2. A subscriber, then every instance stops.
	const user = `dur-${randomId(3)}`;
	await kit.subscribe(user, P);
	const stopped = await (async () => {
		d1.proc.kill('SIGTERM');
		return d1.exited;
	})();
	assert.equal(stopped.code, 0, `first instance exit: ${JSON.stringify(stopped)}`);

	// 3. 100 events and some entries that cannot be processed, while no
	// instance runs; also one event twice (same event_id).
	const ids = Array.from({ length: 100 }, (_, k) => `ev-${k}-${randomId(4)}`);
	const events = ids.map((id) => ({ event_id: id, product_id: P, stock: 5, prev_stock: 0 }));
	const bad = ['not json', '{"event_id":"x-no-product","stock":1}', '[]',
		JSON.stringify({ event_id: `bad-${randomId(3)}`, product_id: P, stock: 'five' })];
	const entryIds = await kit.xadd([...events.slice(0, 50), ...bad, ...events.slice(50),
		events[7]]);
	const badIds = entryIds.slice(50, 50 + bad.length);
	const noEventId = await kit.xaddRaw(['evt', JSON.stringify(events[0]), 'other', 'x']);
	assert.equal((await kit.group()).lag, entryIds.length + 1, 'lag while nobody reads');

	// 4. One instance starts: everything drains.
	const t0 = Date.now();
	const d2 = await kit.start(0);
	await drained(kit);
	const drainMs = Date.now() - t0;
	t.diagnostic(`100 events drained ${drainMs} ms after the start`);
	assert.deepEqual(await kit.missingEvents(ids), [], 'events without an outcome record');

	// Exactly once: one history entry per event_id (two for none), and
	// the instance ran each entry once (received = entries it read).
	const entries = await kit.alertEntries();
	counts = countByEvent(entries);
	for (const id of ids) assert.equal(counts.get(id), 1, `history entries for ${id}`);
	assert.equal(entries.length, early.length + ids.length, 'history length');
	assert.equal(await kit.metric('stockalert_events_received_total'),
		ids.length + 1 + bad.length, 'events received (100 + duplicate + malformed)');
	assert.equal(await kit.metric('stockalert_events_malformed_total'), bad.length);

	// The subscriber's history holds each of them once, in stream order.
	const r = await apiCall(d2.url, 'GET', '/api/me/alerts?limit=1000', { token: kit.token(user) });
	assert.equal(r.status, 200, r.text);
	const got = r.json.alerts.map((a) => a.event_id);
	assert.deepEqual(got, ids, 'the user\'s alerts');
	assert.ok(r.json.alerts.every((a) => a.kind === 'back_in_stock' && a.product_id === P));

	// Dead letters: each with its original id, a reason and the payload,
	// and acknowledged (nothing pending).
	const dead = await kit.deadEntries();
	assert.equal(dead.length, bad.length + 1, JSON.stringify(dead));
	const byId = new Map(dead.map((e) => [e.id, e]));
	badIds.forEach((id, k) => {
		const e = byId.get(id);
		assert.ok(e, `dead letter for ${id} (${bad[k]})`);
		assert.equal(e.event, bad[k]);
		assert.ok(e.reason && e.reason.length > 3, `reason for ${bad[k]}: ${e.reason}`);
	});
	const nf = byId.get(noEventId);
	assert.ok(nf, 'dead letter for the entry without an "event" field');
	assert.match(nf.reason, /event/);
	assert.deepEqual(await kit.pendingOf(), []);

	// /readyz and /metrics report the stream (refreshed every 5 s).
	const rz = await waitReadyz(d2, (st, b) => st === 200 && b && b.stream &&
		b.stream.pending === 0 && b.stream.lag === 0 && b.stream.dead === dead.length, 15000,
	'/readyz stream counters');
	assert.deepEqual(Object.keys(rz.body.stream).sort(), ['dead', 'lag', 'pending']);
	await waitFor(async () => await kit.metric('stockalert_stream_dead_letters') === dead.length &&
		await kit.metric('stockalert_stream_lag') === 0 &&
		await kit.metric('stockalert_stream_pending') === 0, { timeout: 15000,
		what: 'stream gauges in /metrics' });
	assert.equal(await kit.metric('stockalert_dependency_up', { dep: 'redis_stream' }), 1);
});

test('one event_id on the stream and on pub/sub is processed once, live', async (t) => {
	const P = 503;
	const kit = await durableKit({ t, overrides: { alerts: { max_per_window: 10000 } },
		products: [{ id: P, stock: 0 }] });
	t.after(async () => assertCleanStop(await kit.close()));
	await kit.start(0);
	const user = `live-${randomId(3)}`;
	await kit.subscribe(user, P);
	const h = await kit.connect(user);

	const ev = (id, stock, prev) => ({ event_id: id, product_id: P, stock, prev_stock: prev });
	const a = `a-${randomId(4)}`;
	const b = `b-${randomId(4)}`;
	const c = `c-${randomId(4)}`;
	// a: stream then pub/sub; b: pub/sub then stream; c: stream only.
	await kit.xadd([ev(a, 4, 0)]);
	await wsWaitFor(h, (m) => m.event_id === a, 10000, 'alert a from the stream');
	await redisCommand(kit.redisPort, ['PUBLISH', `${kit.prefix}inventory`,
		JSON.stringify(ev(a, 4, 0))]);
	assert.equal(await redisCommand(kit.redisPort, ['PUBLISH', `${kit.prefix}inventory`,
		JSON.stringify(ev(b, 0, 4))]), 1);
	await wsWaitFor(h, (m) => m.event_id === b, 10000, 'alert b from pub/sub');
	await kit.xadd([ev(b, 0, 4), ev(c, 6, 0)]);
	await wsWaitFor(h, (m) => m.event_id === c, 10000, 'alert c from the stream');
	await drained(kit);
	assert.deepEqual(wsAlerts(h).map((m) => [m.event_id, m.kind]),
		[[a, 'back_in_stock'], [b, 'sold_out'], [c, 'back_in_stock']]);
	const counts = countByEvent(await kit.alertEntries());
	assert.deepEqual([counts.get(a), counts.get(b), counts.get(c)], [1, 1, 1]);
	assert.equal(h.closeInfo, null);
});
