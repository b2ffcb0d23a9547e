// The alert pipeline under faults: Redis killed and restarted under a
// connected client (the daemon resubscribes by itself, the client is never
// dropped), and garbage on the inventory channel (counted, skipped, never
// stops the stream).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
	alertsKit, wsAlerts, wsWaitFor, startRedis, waitReady, waitReadyz, redisCommand,
	redisPipeline, redisScanKeys, randomId,
	cleanStopChecker,
	eventId as eid,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(alerts|roster|catalog|events)\.c/,
	'leak in the alert pipeline');


test('Redis killed and restarted between two events: both alerts, same socket', async (t) => {
	const redis = await startRedis({ t });
	const pid = 401;
	const kit = await alertsKit({ t, redis, products: [{ id: pid, stock: 10 }] });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	const u = `rr-${randomId(3)}`;
	await kit.subscribe(u, pid);
	const h = await kit.connect(u);

	const e1 = eid('before');
	await kit.publish({ event_id: e1, product_id: pid, stock: 0, prev_stock: 5 });
	await wsWaitFor(h, (m) => m.event_id === e1, 10000, 'alert before the restart');

	await redis.stop('SIGKILL');
	await waitReadyz(d, (st) => st === 503, 20000, '/readyz 503 with Redis gone');
	await redis.start();
	await waitReady(d, 30000);

	const e2 = eid('after');
	const receivers = await kit.publish({ event_id: e2, product_id: pid, stock: 6,
		prev_stock: 0 });
	assert.equal(receivers, 1, '/readyz said 200 but the daemon is not subscribed to ' +
		`${kit.prefix}inventory (PUBSUB NUMSUB: ` +
		`${JSON.stringify(await redisCommand(redis.port, ['PUBSUB', 'NUMSUB',
			`${kit.prefix}inventory`]))})`);
	await wsWaitFor(h, (m) => m.event_id === e2, 10000, 'alert after the restart');
	assert.equal(h.closeInfo, null, 'the client was disconnected');
	assert.equal(h.messages.filter((m) => m.type === 'hello').length, 1);
	assert.deepEqual(wsAlerts(h).map((a) => [a.event_id, a.kind]),
		[[e1, 'sold_out'], [e2, 'back_in_stock']]);
	// Nothing broke on the way: the socket still answers.
	h.send({ type: 'ping' });
	await wsWaitFor(h, (m) => m.type === 'pong', 5000, 'pong');
	assert.equal(d.running, true);
});

test('malformed events on the channel are counted and skipped', async (t) => {
	const pid = 402;
	const kit = await alertsKit({ t, products: [{ id: pid, stock: 10 }] });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	const u = `mal-${randomId(3)}`;
	await kit.subscribe(u, pid);
	const h = await kit.connect(u);
	const recv0 = await kit.metric('stockalert_events_received_total');
	const mal0 = await kit.metric('stockalert_events_malformed_total');

	const ok = { event_id: 'x', product_id: pid, stock: 5, prev_stock: 0 };
	const bad = [
		'not json at all',
		'',
		'{',
		'[]',
		'"a string"',
		'null',
		'42',
		'{}',
		JSON.stringify({ event_id: eid() }),
		JSON.stringify({ event_id: eid(), product_id: pid }),
		JSON.stringify({ event_id: eid(), stock: 5 }),
		JSON.stringify({ product_id: pid, stock: 5, prev_stock: 0 }), // no event_id
		JSON.stringify({ ...ok, event_id: eid(), stock: '5' }),
		JSON.stringify({ ...ok, event_id: eid(), stock: 5.5 }),
		JSON.stringify({ ...ok, event_id: eid(), stock: null }),
		JSON.stringify({ ...ok, event_id: eid(), stock: true }),
		JSON.stringify({ ...ok, event_id: eid(), stock: { n: 5 } }),
		JSON.stringify({ ...ok, event_id: eid(), product_id: '402' }),
		JSON.stringify({ ...ok, event_id: eid(), product_id: 0 }),
		JSON.stringify({ ...ok, event_id: eid(), product_id: -402 }),
		JSON.stringify({ ...ok, event_id: eid(), product_id: 402.5 }),
		JSON.stringify({ ...ok, event_id: eid(), prev_stock: 'zero' }),
		JSON.stringify({ ...ok, event_id: eid(), ts: 'now' }),
		JSON.stringify({ ...ok, event_id: eid(), ts: -1 }),
		JSON.stringify({ ...ok, event_id: 12345 }),
		JSON.stringify({ ...ok, event_id: '' }),
		JSON.stringify({ ...ok, event_id: 'has spaces' }),
		JSON.stringify({ ...ok, event_id: 'x'.repeat(129) }),
		JSON.stringify({ ...ok, event_id: ['a'] }),
		`{"event_id":"${eid()}","product_id":${pid},"stock":99999999999999999999999999}`,
		`{"event_id":"${eid()}","product_id":${pid},"stock":1e400}`,
		`{"event_id":"${eid()}","product_id":${pid},"stock":5,"prev_stock":-99999999999999999999}`,
		`{"event_id":"${eid()}","product_id":99999999999999999999,"stock":5}`,
		`{"event_id":"${eid()}","product_id":${pid},"stock":2000000000}`,
		`{"event_id":"${eid()}","product_id":${pid},"stock":5,"ts":99999999999999999}`,
		`{"event_id":"a","event_id":"b","product_id":${pid},"stock":5}`,
		`{"event_id":"${eid()}","product_id":${pid},"stock":5}trailing`,
		`{"event_id":"${eid()}","product_id":${pid},"stock":5,"prev_stock":0,"pad":"` +
			'x'.repeat(70 * 1024) + '"}',
		'\u0000\u0001\u0002',
	];
	// Back to back on one connection, then one good event after them.
	const good = eid('good');
	const replies = await redisPipeline(kit.redisPort, [
		...bad.map((b) => ['PUBLISH', `${kit.prefix}inventory`, b]),
		['PUBLISH', `${kit.prefix}inventory`, JSON.stringify({ ...ok, event_id: good })],
	]);
	assert.ok(replies.every((r) => r === 1), `PUBLISH receivers: ${JSON.stringify(replies)}`);
	await wsWaitFor(h, (m) => m.event_id === good, 10000, 'the good event after the garbage');
	assert.deepEqual(wsAlerts(h).map((a) => [a.event_id, a.kind]), [[good, 'back_in_stock']]);
	assert.equal(await kit.metric('stockalert_events_received_total') - recv0, bad.length + 1,
		'received counter');
	assert.equal(await kit.metric('stockalert_events_malformed_total') - mal0, bad.length,
		'malformed counter');
	// None of the garbage left an event record behind.
	const keys = await redisScanKeys(kit.redisPort, `${kit.prefix}event:*`);
	assert.deepEqual(keys.filter((k) => !k.startsWith(`${kit.prefix}event:${good}`)), [],
		'a malformed event was processed');
	// The daemon is unaffected and keeps going.
	assert.equal(d.running, true);
	const r = await fetch(`${d.url}/healthz`);
	assert.equal(r.status, 200);
	const again = eid('again');
	await kit.publish({ event_id: again, product_id: pid, stock: 0, prev_stock: 5 });
	await wsWaitFor(h, (m) => m.event_id === again, 10000, 'a later good event');
});
