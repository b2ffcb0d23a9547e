// The alert pipeline across two instances sharing Redis and MySQL (every
// behaviour holds across instances): classification from the
// shared stock state, identical on both; events for one product applied in
// the order they were published; one alert per connection however often an
// event is published; one rate limit per user.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
	alertsKit, wsAlerts, wsWaitFor, waitFor, apiCall, redisCommand, redisPipeline, randomId,
	cleanStopChecker,
	eventId as eid,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(alerts|roster|catalog|events)\.c/,
	'leak in the alert pipeline');

const brief = (a) => [a.event_id, a.kind, a.prev_stock, a.stock];

async function alertsUpTo(h, sentinel, from = 0, timeout = 10000) {
	const { index } = await wsWaitFor(h, (m, i) => i >= from && m.type === 'alert' &&
		m.event_id === sentinel, timeout, `alert for ${sentinel} on ${h.user}`);
	return wsAlerts({ messages: h.messages.slice(0, index + 1) }, from);
}

describe('two instances', () => {
	let kit;
	const P = { shared: 301, burst: 302, dup: 303 };

	before(async () => {
		kit = await alertsKit({
			instances: 2,
			overrides: { alerts: { max_per_window: 10000 } },
			products: Object.values(P).map((id) => ({ id, stock: 10, threshold: 5 })),
		});
	});
	after(async () => { if (kit) assertCleanStop(await kit.close()); });

	test('events without prev_stock: classified from the shared state, same on both',
		async () => {
			const u = `shared-${randomId(3)}`;
			await kit.subscribe(u, P.shared);
			const ha = await kit.connect(u, { i: 0 });
			const hb = await kit.connect(u, { i: 1 });
			// products.stock is 10: the first event's previous level.
			const steps = [[8, null], [3, 'low_stock'], [0, 'sold_out'], [6, 'back_in_stock'],
				[6, null], [0, 'sold_out']];
			const expected = [];
			let prev = 10;
			for (const [stock, kind] of steps) {
				const id = eid(`s${stock}`);
				assert.equal(await kit.publish({ event_id: id, product_id: P.shared, stock }), 2,
					'both instances listen');
				const out = await kit.processed(id, 2);
				assert.equal(out.kind, kind || 'none', `${prev} -> ${stock}`);
				assert.equal(out.prev, String(prev), 'previous level from the shared state');
				if (kind) expected.push([id, kind, prev, stock]);
				prev = stock;
			}
			const last = expected.at(-1)[0];
			const a = await alertsUpTo(ha, last);
			const b = await alertsUpTo(hb, last);
			assert.deepEqual(a.map(brief), expected, 'instance A');
			const noTs = (x) => ({ ...x, ts: undefined });
			assert.deepEqual(b.map(noTs), a.map(noTs), 'the two instances sent different alerts');
			assert.equal(await redisCommand(kit.redisPort, ['GET',
				`${kit.prefix}stock:${P.shared}`]), '0');
			// One alert id, one object: the event had no ts, so the alert's
			// ts must be the one recorded with it, not each instance's clock.
			assert.deepEqual(b.map((x) => x.ts), a.map((x) => x.ts),
				'same alert id, different ts on the two instances');
		});

	for (const pid of [P.burst]) {
		test('a burst for one product is applied in publishing order', async () => {
			// Published back to back while neither instance has the product
			// cached: the order on the channel is the order of the changes.
			const u = `burst-${randomId(3)}`;
			await kit.subscribe(u, pid);
			const ha = await kit.connect(u, { i: 0 });
			const hb = await kit.connect(u, { i: 1 });
			const levels = [0, 7, 2, 0, 3];
			const ids = levels.map(() => eid('b'));
			await redisPipeline(kit.redisPort, levels.map((stock, i) => ['PUBLISH',
				`${kit.prefix}inventory`, JSON.stringify({ event_id: ids[i], product_id: pid,
					stock })]));
			const outcomes = [];
			for (const id of ids) {
				const o = await kit.processed(id, 2);
				outcomes.push(`${o.prev}->${o.kind}`);
			}
			assert.deepEqual(outcomes, ['10->sold_out', '0->back_in_stock', '7->low_stock',
				'2->sold_out', '0->back_in_stock'],
			'events of one product were not applied in the order published');
			const expected = [[ids[0], 'sold_out', 10, 0], [ids[1], 'back_in_stock', 0, 7],
				[ids[2], 'low_stock', 7, 2], [ids[3], 'sold_out', 2, 0],
				[ids[4], 'back_in_stock', 0, 3]];
			assert.deepEqual((await alertsUpTo(ha, ids[4])).map(brief), expected);
			assert.deepEqual((await alertsUpTo(hb, ids[4])).map(brief), expected);
			assert.equal(await redisCommand(kit.redisPort, ['GET', `${kit.prefix}stock:${pid}`]),
				'3');
		});
	}

	test('one event published 3 times: one alert per connection', async () => {
		const u = `dup-${randomId(3)}`;
		await kit.subscribe(u, P.dup);
		const a1 = await kit.connect(u, { i: 0 });
		const a2 = await kit.connect(u, { i: 0 });
		const b1 = await kit.connect(u, { i: 1 });
		const m0 = [];
		for (const i of [0, 1]) {
			m0.push({
				dup: await kit.metric('stockalert_events_duplicate_total', i),
				recv: await kit.metric('stockalert_events_received_total', i),
				delivered: await kit.metric('stockalert_alerts_delivered_total', i),
			});
		}
		const id = eid('dup');
		const ev = JSON.stringify({ event_id: id, product_id: P.dup, stock: 4, prev_stock: 0 });
		await kit.publish(ev);
		await kit.publish(ev);
		await redisPipeline(kit.redisPort, [['PUBLISH', `${kit.prefix}inventory`, ev]]);
		// And once more through the other instance's API.
		const r = await apiCall(kit.daemons[1].url, 'POST', '/api/inventory/events',
			{ token: kit.token('svc', ['service']), body: JSON.parse(ev) });
		assert.equal(r.status, 202, r.text);
		await kit.processed(id, 2);
		await waitFor(async () => {
			for (const i of [0, 1]) {
				if (await kit.metric('stockalert_events_received_total', i) - m0[i].recv < 4) {
					return false;
				}
			}
			return true;
		}, { what: 'both instances received the 4 copies' });
		const s = eid('dup-sentinel');
		await kit.publish({ event_id: s, product_id: P.dup, stock: 0, prev_stock: 4 });
		for (const h of [a1, a2, b1]) {
			assert.deepEqual((await alertsUpTo(h, s)).map((a) => a.event_id), [id, s],
				`connection of ${h.user}`);
		}
		const ida = wsAlerts(a1)[0].id;
		assert.equal(wsAlerts(b1)[0].id, ida, 'the instances gave the alert different ids');
		for (const i of [0, 1]) {
			assert.equal(await kit.metric('stockalert_events_duplicate_total', i) - m0[i].dup, 3,
				`duplicates counted on instance ${i}`);
			assert.equal(await kit.metric('stockalert_alerts_delivered_total', i) -
				m0[i].delivered, i === 0 ? 4 : 2, `delivered on instance ${i}`);
		}
	});
});

// Two instances with a per-user limit of max per window (ms), and pids in
// the catalog, warmed with events that alert nobody so that timed bursts are
// not spread out by MySQL lookups.
async function rateKit(max, window, pids) {
	const kit = await alertsKit({
		instances: 2,
		overrides: { alerts: { max_per_window: max, window_s: window / 1000 } },
		products: pids.map((id) => ({ id, stock: 50 })),
	});
	for (const pid of pids) {
		const id = eid('warm');
		await kit.publish({ event_id: id, product_id: pid, stock: 49, prev_stock: 50 });
		await kit.processed(id, 2);
	}
	return kit;
}

// back_in_stock (0 -> 5) for each pids[i] as event ids[i], in one pipeline.
const burst = (kit, ids, pids) => redisPipeline(kit.redisPort, pids.map((pid, i) => ['PUBLISH',
	`${kit.prefix}inventory`, JSON.stringify({ event_id: ids[i], product_id: pid, stock: 5,
		prev_stock: 0 })]));

describe('two instances, rate limit 3 per 2 s', () => {
	let kit;
	const W = 2000;
	const PIDS = [311, 312, 313, 314, 315, 316];

	before(async () => { kit = await rateKit(3, W, PIDS); });
	after(async () => { if (kit) assertCleanStop(await kit.close()); });

	test('a user connected to both instances is limited once, same alerts on both',
		async () => {
			const u = `rl2-${randomId(3)}`;
			for (const pid of PIDS) await kit.subscribe(u, pid);
			const ha = await kit.connect(u, { i: 0 });
			const hb = await kit.connect(u, { i: 1 });
			const at = [new Map(), new Map()];
			[ha, hb].forEach((h, k) => h.ws.on('message', (data) => {
				const m = JSON.parse(String(data));
				if (m.type === 'alert') at[k].set(m.event_id, Date.now());
			}));
			const ids = PIDS.map(() => eid('rl2'));
			await waitFor(() => Date.now() % W < 150, { timeout: 3 * W, interval: 5,
				what: 'a window start' });
			const t0 = Date.now();
			await burst(kit, ids, PIDS);
			for (const h of [ha, hb]) {
				await waitFor(() => wsAlerts(h).length >= 6, { timeout: 6 * W,
					what: `6 alerts on ${h.user} (have ${JSON.stringify(wsAlerts(h).map(brief))})` });
			}
			const w0 = Math.floor(t0 / W);
			for (const [k, h] of [ha, hb].entries()) {
				assert.deepEqual(wsAlerts(h).map((a) => a.event_id).sort(), [...ids].sort());
				const first = ids.filter((id) => Math.floor(at[k].get(id) / W) === w0);
				assert.equal(first.length, 3, `instance ${k}: ${first.length} in the first window`);
			}
			const firstA = ids.filter((id) => Math.floor(at[0].get(id) / W) === w0).sort();
			const firstB = ids.filter((id) => Math.floor(at[1].get(id) / W) === w0).sort();
			assert.deepEqual(firstA, firstB, 'the instances let different alerts through');
		});
});

describe('two instances, rate limit 4 per 4 s: a user moving between them', () => {
	let kit;
	const W = 4000;
	const PIDS = [321, 322, 323, 324, 325, 326];

	before(async () => { kit = await rateKit(4, W, PIDS); });
	after(async () => { if (kit) assertCleanStop(await kit.close()); });

	const pub = (ids, pids) => burst(kit, ids, pids);

	// A new user subscribed to every product, just after a window began.
	async function freshUserAtWindowStart(tag) {
		const u = `${tag}-${randomId(3)}`;
		for (const pid of PIDS) await kit.subscribe(u, pid);
		await waitFor(() => Date.now() % W < 150, { timeout: 3 * W, interval: 5,
			what: 'a window start' });
		const w0 = Math.floor(Date.now() / W);
		return { u, w0, rateKey: `${kit.prefix}rate:${u}:${w0}` };
	}

	// Below half the limit an instance decides alone (no shared state);
	// what it counted goes to Redis when the user leaves, and the next
	// instance goes on from there instead of restarting the window.
	test('2 alerts on one instance, then 4 on the other: 2 of them wait for the next window',
		async () => {
			for (let attempt = 1; ; attempt++) {
				const { u, w0, rateKey } = await freshUserAtWindowStart('hop');
				const ids = PIDS.map(() => eid('hop'));

				const ha = await kit.connect(u, { i: 0 });
				await pub(ids.slice(0, 2), PIDS.slice(0, 2));
				await waitFor(() => wsAlerts(ha).length >= 2, { timeout: W,
					what: '2 alerts on instance 0' });
				assert.equal(await redisCommand(kit.redisPort, ['EXISTS', rateKey]), 0,
					'far below the limit, yet the shared counter was used');
				ha.ws.close();
				await waitFor(async () => await redisCommand(kit.redisPort,
					['HGET', rateKey, '_n']) === '2', { timeout: W,
					what: 'the count left behind by instance 0' });

				const hb = await kit.connect(u, { i: 1 });
				const at = new Map();
				hb.ws.on('message', (data) => {
					const m = JSON.parse(String(data));
					if (m.type === 'alert') at.set(m.event_id, Date.now());
				});
				const tPub = Date.now();
				if (Math.floor((tPub + 500) / W) !== w0 && attempt < 3) {
					hb.ws.close();
					continue; // too slow to fit in one window: try the next one
				}
				await pub(ids.slice(2), PIDS.slice(2));
				await waitFor(() => wsAlerts(hb).length >= 4, { timeout: 4 * W,
					what: `4 alerts on instance 1 (have ${JSON.stringify(wsAlerts(hb).map(brief))})` });
				assert.deepEqual(wsAlerts(ha).map((a) => a.event_id), ids.slice(0, 2));
				assert.deepEqual(wsAlerts(hb).map((a) => a.event_id).sort(), ids.slice(2).sort());
				const inW0 = ids.slice(2).filter((id) => Math.floor(at.get(id) / W) === w0);
				assert.equal(inW0.length, 2, `${inW0.length} of 4 on instance 1 in the first ` +
					'window: the user restarted the window by moving');
				hb.ws.close();
				return;
			}
		});

	// A second socket on the other instance while the first stays open: the
	// first instance's count goes to the shared counter at once (rate:sync),
	// and from then on both instances decide every alert there, so both
	// sockets get the same alerts and the window still holds 4.
	test('a socket on each instance, the second joining mid-window: the same 4, the 5th later',
		async () => {
			for (let attempt = 1; ; attempt++) {
				const { u, w0, rateKey } = await freshUserAtWindowStart('two');
				const ids = PIDS.slice(0, 5).map(() => eid('two'));
				const at = [new Map(), new Map()];
				const track = (h, k) => h.ws.on('message', (data) => {
					const m = JSON.parse(String(data));
					if (m.type === 'alert') at[k].set(m.event_id, Date.now());
				});

				const ha = await kit.connect(u, { i: 0 });
				track(ha, 0);
				await pub(ids.slice(0, 1), PIDS.slice(0, 1));
				await waitFor(() => wsAlerts(ha).length >= 1, { timeout: W,
					what: 'the first alert on instance 0' });
				const hb = await kit.connect(u, { i: 1 });
				track(hb, 1);
				await waitFor(async () => await redisCommand(kit.redisPort,
					['HGET', rateKey, '_n']) === '1', { timeout: W,
					what: "instance 0's count handed to the shared counter" });
				if (Math.floor((Date.now() + 500) / W) !== w0 && attempt < 3) {
					ha.ws.close();
					hb.ws.close();
					continue; // too slow to fit in one window: try the next one
				}
				await pub(ids.slice(1), PIDS.slice(1, 5));
				await waitFor(() => wsAlerts(ha).length >= 5 && wsAlerts(hb).length >= 4,
					{ timeout: 4 * W, what: `5 alerts on instance 0 and 4 on 1 (have ` +
						`${wsAlerts(ha).length} and ${wsAlerts(hb).length})` });
				const inW0 = (k) => [...at[k]].filter(([, t]) => Math.floor(t / W) === w0)
					.map(([id]) => id).sort();
				assert.deepEqual(inW0(0), ids.slice(0, 4).sort(), 'instance 0, first window');
				assert.deepEqual(inW0(1), ids.slice(1, 4).sort(), 'instance 1, first window');
				for (const k of [0, 1]) {
					assert.ok(Math.floor(at[k].get(ids[4]) / W) > w0,
						`instance ${k}: the 5th alert came in the first window`);
				}
				ha.ws.close();
				hb.ws.close();
				return;
			}
		});
});
