// The alert pipeline on one instance (the "alert" frame, resume, inventory events): every
// classification edge, per-subscription thresholds and kinds, subscription
// changes while connected, the admin view, POST /api/inventory/events,
// resume with ?since= and GET /api/me/alerts, and the per-user rate limit
// with coalescing.
//
// Negative checks ("X does not alert") never wait for silence: they wait
// until Redis shows the event processed, then publish a sentinel that does
// alert and check nothing else arrived before it.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
	alertsKit, wsAlerts, wsWaitFor, waitFor, apiCall, parseErrorBody, redisCommand,
	redisPipeline, randomId, ALERTS_SYNC_PRODUCT,
	cleanStopChecker,
	eventId as eid,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(alerts|roster|catalog|events)\.c/,
	'leak in the alert pipeline');

const ALERT_KEYS = ['event_id', 'id', 'kind', 'name', 'prev_stock', 'product_id', 'stock', 'ts',
	'type'].sort();
const ID_RE = /^\d+-\d+$/;

// Compares two alert ids numerically (ms, then seq).
function cmpId(a, b) {
	const [am, as] = a.split('-').map(BigInt);
	const [bm, bs] = b.split('-').map(BigInt);
	return am === bm ? (as < bs ? -1 : as > bs ? 1 : 0) : (am < bm ? -1 : 1);
}

// Summary of an alert for deepEqual: [event_id, kind, prev, stock].
const brief = (a) => [a.event_id, a.kind, a.prev_stock, a.stock];

// The alerts of h from message index `from` up to and including the one
// for event sentinel (waits for it).
async function alertsBefore(h, sentinel, from = 0, timeout = 10000) {
	const { index } = await wsWaitFor(h, (m, i) => i >= from && m.type === 'alert' &&
		m.event_id === sentinel, timeout, `alert for sentinel ${sentinel} on ${h.user}`);
	return wsAlerts({ messages: h.messages.slice(0, index + 1) }, from);
}

describe('alerts on one instance', () => {
	let kit;
	const P = {
		table: 101, thr: 102, kinds: 103, admin: 104, resume: 105, other: 106, post: 107,
		extra: 108, shape: 109,
	};

	before(async () => {
		kit = await alertsKit({
			overrides: { alerts: { max_per_window: 10000, window_s: 60 } },
			products: Object.values(P).map((id) => ({ id, name: `Thing ${id} "quoted" é`,
				stock: 10, threshold: 5 })),
		});
	});
	after(async () => { if (kit) assertCleanStop(await kit.close()); });

	test('alert frame shape, name from MySQL, ts given or stamped', async () => {
		const u = `shape-${randomId(3)}`;
		await kit.subscribe(u, P.shape);
		const h = await kit.connect(u);
		const e1 = eid();
		assert.ok(await kit.publish({ event_id: e1, product_id: P.shape, stock: 5, prev_stock: 0,
			ts: 1700000000123 }) >= 1, 'the daemon does not listen on the inventory channel');
		const { msg: a } = await wsWaitFor(h, (m) => m.type === 'alert', 10000, 'the alert');
		assert.deepEqual(Object.keys(a).sort(), ALERT_KEYS, JSON.stringify(a));
		assert.match(a.id, ID_RE);
		assert.equal(a.kind, 'back_in_stock');
		assert.equal(a.product_id, P.shape);
		assert.equal(a.name, `Thing ${P.shape} "quoted" é`);
		assert.equal(a.stock, 5);
		assert.equal(a.prev_stock, 0);
		assert.equal(a.event_id, e1);
		assert.equal(a.ts, 1700000000123);
		// The id's time part is when the alert was made, whatever ts said.
		assert.ok(Math.abs(Number(a.id.split('-')[0]) - Date.now()) < 60000, a.id);

		const e2 = eid();
		const t0 = Date.now();
		await kit.publish({ event_id: e2, product_id: P.shape, stock: 0, prev_stock: 5 });
		const { msg: b } = await wsWaitFor(h, (m) => m.event_id === e2, 10000, 'second alert');
		assert.equal(b.kind, 'sold_out');
		assert.ok(b.ts >= t0 - 1000 && b.ts <= Date.now() + 1000, `ts ${b.ts} is not now`);
		assert.equal(cmpId(a.id, b.id), -1, `ids do not increase: ${a.id} then ${b.id}`);
	});

	test('classification edges (default threshold 5)', async () => {
		const u = `table-${randomId(3)}`;
		await kit.subscribe(u, P.table);
		const h = await kit.connect(u);
		const cases = [
			[0, 5, 'back_in_stock'], [5, 0, 'sold_out'], [10, 3, 'low_stock'],
			[3, 2, null], [5, 7, null], [6, 5, 'low_stock'], [5, 4, null], [1, 0, 'sold_out'],
			[0, 0, null], [-3, 0, null], [-1, 2, 'back_in_stock'], [10, 10, null],
			[0, -2, null], [2, -1, 'sold_out'], [6, 6, null], [100, 1, 'low_stock'],
			[4, 9, null], [6, 0, 'sold_out'], [0, 1, 'back_in_stock'],
		];
		const expected = [];
		for (const [prev, stock, kind] of cases) {
			const id = eid(`c${prev}_${stock}`);
			await kit.publish({ event_id: id, product_id: P.table, stock, prev_stock: prev });
			// Serialised: each event is through the pipeline before the next.
			const out = await kit.processed(id);
			assert.equal(out.kind, kind || 'none', `${prev} -> ${stock} recorded as ${out.kind}`);
			if (kind) expected.push([id, kind, prev, stock]);
		}
		const sentinel = eid('sentinel');
		await kit.publish({ event_id: sentinel, product_id: P.table, stock: 3, prev_stock: 9 });
		const got = (await alertsBefore(h, sentinel)).slice(0, -1);
		assert.deepEqual(got.map(brief), expected);
		for (const a of got) assert.equal(a.product_id, P.table);
		const ids = got.map((a) => a.id);
		assert.deepEqual([...ids].sort(cmpId), ids, 'alert ids are not in time order');
		assert.equal(new Set(ids).size, ids.length, 'alert ids repeat');
	});

	test('a subscription threshold replaces the product default', async () => {
		const ua = `thr-a-${randomId(3)}`;
		const ub = `thr-b-${randomId(3)}`;
		await kit.subscribe(ua, P.thr);
		const sub = await kit.subscribe(ub, P.thr, { threshold: 20 });
		assert.equal(sub.threshold, 20);
		const ha = await kit.connect(ua);
		const hb = await kit.connect(ub);
		const e = [eid('t1'), eid('t2'), eid('t3'), eid('t4'), eid('t5')];
		const evs = [
			[e[0], 25, 15], // crosses 20 only
			[e[1], 10, 3],  // crosses 5 only (10 is not above 20)
			[e[2], 25, 3],  // crosses both
			[e[3], 21, 20], // reaches 20 exactly
			[e[4], 3, 0],   // sentinel: sold_out for both
		];
		for (const [id, prev, stock] of evs) {
			await kit.publish({ event_id: id, product_id: P.thr, stock, prev_stock: prev });
			await kit.processed(id);
		}
		assert.deepEqual((await alertsBefore(ha, e[4])).map(brief), [
			[e[1], 'low_stock', 10, 3], [e[2], 'low_stock', 25, 3], [e[4], 'sold_out', 3, 0],
		], 'default-threshold subscriber');
		assert.deepEqual((await alertsBefore(hb, e[4])).map(brief), [
			[e[0], 'low_stock', 25, 15], [e[2], 'low_stock', 25, 3], [e[3], 'low_stock', 21, 20],
			[e[4], 'sold_out', 3, 0],
		], 'threshold-20 subscriber');
	});

	test('kinds filter what a subscription receives', async () => {
		const uc = `kinds-so-${randomId(3)}`;
		const ud = `kinds-bl-${randomId(3)}`;
		await kit.subscribe(uc, P.kinds, { kinds: ['sold_out'] });
		await kit.subscribe(ud, P.kinds, { kinds: ['back_in_stock', 'low_stock'] });
		const hc = await kit.connect(uc);
		const hd = await kit.connect(ud);
		const e = [eid('k1'), eid('k2'), eid('k3'), eid('k4'), eid('k5')];
		const evs = [[e[0], 0, 5], [e[1], 10, 2], [e[2], 5, 0], [e[3], 0, 1], [e[4], 1, 0]];
		for (const [id, prev, stock] of evs) {
			await kit.publish({ event_id: id, product_id: P.kinds, stock, prev_stock: prev });
			await kit.processed(id);
		}
		assert.deepEqual((await alertsBefore(hd, e[3])).map(brief), [
			[e[0], 'back_in_stock', 0, 5], [e[1], 'low_stock', 10, 2], [e[3], 'back_in_stock', 0, 1],
		]);
		assert.deepEqual((await alertsBefore(hc, e[4])).map(brief), [
			[e[2], 'sold_out', 5, 0], [e[4], 'sold_out', 1, 0],
		]);
	});

	test('subscription changes made while connected apply to the next event', async () => {
		const u = `live-${randomId(3)}`;
		await kit.subscribe(u, P.kinds);
		const h = await kit.connect(u);
		const pub = async (pid, prev, stock, tag) => {
			const id = eid(tag);
			await kit.publish({ event_id: id, product_id: pid, stock, prev_stock: prev });
			await kit.processed(id);
			return id;
		};
		// Narrowed to sold_out over REST while the socket is open.
		const r = await apiCall(kit.daemons[0].url, 'PUT', `/api/me/subscriptions/${P.kinds}`,
			{ token: kit.token(u), body: { kinds: ['sold_out'] } });
		assert.equal(r.status, 200, r.text);
		await pub(P.kinds, 0, 5, 'l1');
		const l2 = await pub(P.kinds, 5, 0, 'l2');
		assert.deepEqual((await alertsBefore(h, l2)).map((a) => a.event_id), [l2],
			'kinds narrowed while connected');
		// Unsubscribed: nothing more for the product.
		const del = await apiCall(kit.daemons[0].url, 'DELETE',
			`/api/me/subscriptions/${P.kinds}`, { token: kit.token(u) });
		assert.equal(del.status, 204, del.text);
		const mark = h.messages.length;
		await pub(P.kinds, 0, 5, 'l3');
		await pub(P.kinds, 5, 0, 'l4');
		// Subscribed to another product over REST, still connected.
		await kit.subscribe(u, P.extra);
		const l5 = await pub(P.extra, 0, 4, 'l5');
		assert.deepEqual((await alertsBefore(h, l5, mark)).map((a) => a.event_id), [l5]);
	});

	test('admins get every sold_out and low_stock, once', async () => {
		const admin = `ops-${randomId(3)}`;
		const subAdmin = `ops-sub-${randomId(3)}`;
		const plain = `plain-${randomId(3)}`;
		await kit.subscribe(subAdmin, P.admin);
		const ha = await kit.connect(admin, { roles: ['admin'] });
		const hs = await kit.connect(subAdmin, { roles: ['admin'] });
		const hp = await kit.connect(plain);
		const e = [eid('a1'), eid('a2'), eid('a3'), eid('a4'), eid('a5')];
		const evs = [[e[0], 0, 5], [e[1], 10, 3], [e[2], 3, 2], [e[3], 5, 0], [e[4], 0, 7]];
		for (const [id, prev, stock] of evs) {
			await kit.publish({ event_id: id, product_id: P.admin, stock, prev_stock: prev });
			await kit.processed(id);
		}
		// Sentinel for the admin without subscriptions: a later sold_out.
		const s = eid('a-sentinel');
		await kit.publish({ event_id: s, product_id: P.admin, stock: 0, prev_stock: 7 });
		assert.deepEqual((await alertsBefore(ha, s)).map(brief), [
			[e[1], 'low_stock', 10, 3], [e[3], 'sold_out', 5, 0], [s, 'sold_out', 7, 0],
		], 'admin without subscriptions');
		// Subscribed admin: everything its subscription gives, nothing twice.
		assert.deepEqual((await alertsBefore(hs, s)).map(brief), [
			[e[0], 'back_in_stock', 0, 5], [e[1], 'low_stock', 10, 3], [e[3], 'sold_out', 5, 0],
			[e[4], 'back_in_stock', 0, 7], [s, 'sold_out', 7, 0],
		], 'admin with a subscription');
		// A plain user without the subscription gets nothing: sentinel on a
		// product it subscribes to now.
		await kit.subscribe(plain, P.extra);
		const ps = eid('p-sentinel');
		await kit.publish({ event_id: ps, product_id: P.extra, stock: 0, prev_stock: 4 });
		assert.deepEqual((await alertsBefore(hp, ps)).map((a) => a.event_id), [ps]);
	});

	test('POST /api/inventory/events: 202 and delivered; 401/403/400', async () => {
		const url = kit.daemons[0].url;
		const u = `post-${randomId(3)}`;
		await kit.subscribe(u, P.post);
		const h = await kit.connect(u);
		const post = (body, token = kit.token('svc', ['service'])) =>
			apiCall(url, 'POST', '/api/inventory/events', { token, body });

		const e1 = eid('post');
		let r = await post({ event_id: e1, product_id: P.post, stock: 4, prev_stock: 0 });
		assert.equal(r.status, 202, r.text);
		assert.deepEqual(r.json, { event_id: e1 });
		const { msg: a1 } = await wsWaitFor(h, (m) => m.event_id === e1, 10000, 'posted alert');
		assert.equal(a1.kind, 'back_in_stock');
		assert.equal(a1.stock, 4);

		// No event_id: one is generated and is what the alert carries.
		r = await post({ product_id: P.post, stock: 0, prev_stock: 4 },
			kit.token('boss', ['admin']));
		assert.equal(r.status, 202, r.text);
		assert.equal(typeof r.json.event_id, 'string');
		assert.ok(r.json.event_id.length > 0);
		const gen = r.json.event_id;
		const { msg: a2 } = await wsWaitFor(h, (m) => m.event_id === gen, 10000, 'generated id');
		assert.equal(a2.kind, 'sold_out');

		// The same event_id again: accepted, not alerted twice.
		r = await post({ event_id: e1, product_id: P.post, stock: 4, prev_stock: 0 });
		assert.equal(r.status, 202, r.text);
		await kit.processed(e1);
		const s = eid('post-sentinel');
		r = await post({ event_id: s, product_id: P.post, stock: 1, prev_stock: 0 });
		assert.equal(r.status, 202, r.text);
		assert.deepEqual((await alertsBefore(h, s)).map((a) => a.event_id), [e1, gen, s]);

		r = await post({ event_id: eid(), product_id: P.post, stock: 1 }, kit.token(u));
		assert.equal(r.status, 403, r.text);
		parseErrorBody(r.text);
		r = await apiCall(url, 'POST', '/api/inventory/events',
			{ body: { product_id: P.post, stock: 1 } });
		assert.equal(r.status, 401, r.text);

		const bad = [
			[{ product_id: 'x', stock: 1 }, /product_id/],
			[{ stock: 1 }, /product_id/],
			[{ product_id: P.post }, /stock/],
			[{ product_id: P.post, stock: '5' }, /stock/],
			[{ product_id: P.post, stock: 1, prev_stock: 1.5 }, /prev_stock/],
			[{ product_id: P.post, stock: 1e12 }, /stock/],
			[{ event_id: 'has space', product_id: P.post, stock: 1 }, /event_id/],
			[{ event_id: 7, product_id: P.post, stock: 1 }, /event_id/],
			[{ product_id: P.post, stock: 1, ts: 'now' }, /ts/],
			['{"product_id": 107, "stock": ', null],
			['[1, 2]', null],
		];
		for (const [body, re] of bad) {
			r = await post(body);
			assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.status} ${r.text}`);
			const j = parseErrorBody(r.text);
			if (re) assert.match(j.error.message, re, JSON.stringify(body));
		}
		assert.equal(kit.daemons[0].running, true);
	});

	test('resume with ?since= replays what was missed, then live', async () => {
		const u = `resume-${randomId(3)}`;
		await kit.subscribe(u, P.resume);
		let h = await kit.connect(u);
		const e0 = eid('r0');
		await kit.publish({ event_id: e0, product_id: P.resume, stock: 5, prev_stock: 0 });
		const { msg: a0 } = await wsWaitFor(h, (m) => m.event_id === e0, 10000, 'first alert');
		h.ws.close(1000);
		await h.closed;

		// Missed while away: five alerts of the product, interleaved with
		// events the user would not have received.
		const missed = [[5, 0, 'sold_out'], [0, 4, 'back_in_stock'], [4, 0, 'sold_out'],
			[0, 6, 'back_in_stock'], [6, 2, 'low_stock']];
		const expected = [];
		for (const [prev, stock, kind] of missed) {
			const id = eid('r');
			await kit.publish({ event_id: id, product_id: P.resume, stock, prev_stock: prev });
			assert.equal((await kit.processed(id)).kind, kind);
			expected.push([id, kind, prev, stock]);
			const other = eid('o');
			await kit.publish({ event_id: other, product_id: P.other, stock: 0, prev_stock: 3 });
			await kit.processed(other);
			const none = eid('n');
			await kit.publish({ event_id: none, product_id: P.resume, stock, prev_stock: stock });
			await kit.processed(none);
		}

		h = await kit.connect(u, { since: a0.id });
		const { index: done } = await wsWaitFor(h, (m) => m.type === 'replay_done', 10000,
			'replay_done');
		const seq = h.messages.slice(0, done + 1);
		assert.equal(seq[0].type, 'hello');
		const replayed = seq.slice(1, -1);
		assert.ok(replayed.every((m) => m.type === 'alert'), JSON.stringify(replayed));
		assert.deepEqual(replayed.map(brief), expected);
		for (const a of replayed) {
			assert.deepEqual(Object.keys(a).sort(), ALERT_KEYS);
			assert.equal(cmpId(a0.id, a.id), -1, `${a.id} not after ${a0.id}`);
			assert.equal(a.name, `Thing ${P.resume} "quoted" é`);
		}
		const ids = replayed.map((a) => a.id);
		assert.deepEqual([...ids].sort(cmpId), ids, 'replay not oldest first');
		assert.deepEqual(seq.at(-1), { type: 'replay_done', count: 5, recovered: true });

		// Live again afterwards, and a replayed alert is not pushed twice.
		await kit.sync(h);
		const live = eid('live');
		await kit.publish({ event_id: live, product_id: P.resume, stock: 0, prev_stock: 2 });
		const afterLive = await alertsBefore(h, live, done + 1);
		assert.deepEqual(afterLive.map((a) => a.event_id), [live]);

		// Resuming from the newest id: nothing to replay.
		const h2 = await kit.connect(u, { since: afterLive[0].id });
		const { index: d2 } = await wsWaitFor(h2, (m) => m.type === 'replay_done', 10000,
			'replay_done (up to date)');
		assert.deepEqual(h2.messages.slice(1, d2 + 1),
			[{ type: 'replay_done', count: 0, recovered: true }]);

		// Older than the history: a snapshot, not a pretence.
		const h3 = await kit.connect(u, { since: '1000-0' });
		const { index: d3 } = await wsWaitFor(h3, (m) => m.type === 'replay_done', 10000,
			'replay_done (gap)');
		const gap = h3.messages.slice(1, d3 + 1);
		assert.equal(gap.length, 2, JSON.stringify(gap));
		assert.equal(gap[0].type, 'snapshot', JSON.stringify(gap));
		const snap = [...gap[0].products].sort((x, y) => x.product_id - y.product_id);
		assert.deepEqual(snap, [{ product_id: ALERTS_SYNC_PRODUCT, stock: 1 },
			{ product_id: P.resume, stock: 0 }],
			'snapshot: the subscribed products with their current stock');
		assert.deepEqual(gap[1], { type: 'replay_done', count: 0, recovered: false });

		// The same history over REST.
		const get = async (q) => {
			const r = await apiCall(kit.daemons[0].url, 'GET', `/api/me/alerts${q}`,
				{ token: kit.token(u) });
			assert.equal(r.status, 200, `${q}: ${r.text}`);
			return r.json;
		};
		let j = await get(`?since=${a0.id}`);
		assert.equal(j.recovered, true);
		assert.deepEqual(j.alerts, [...replayed, afterLive[0]]);
		j = await get(`?since=${a0.id}&limit=2`);
		assert.deepEqual(j.alerts, replayed.slice(0, 2));
		j = await get(`?since=${replayed[1].id}&limit=2`);
		assert.deepEqual(j.alerts, replayed.slice(2, 4));
		j = await get('');
		assert.deepEqual(j.alerts.map(brief), [[e0, 'back_in_stock', 0, 5], ...expected,
			[live, 'sold_out', 2, 0]]);
		j = await get('?since=1000-0');
		assert.equal(j.recovered, false);
		for (const q of ['?since=yesterday', '?limit=0', '?limit=abc', '?limit=1001']) {
			const r = await apiCall(kit.daemons[0].url, 'GET', `/api/me/alerts${q}`,
				{ token: kit.token(u) });
			assert.equal(r.status, 400, `${q}: ${r.status} ${r.text}`);
			parseErrorBody(r.text);
		}
		// Another user's history is not this user's.
		const stranger = await apiCall(kit.daemons[0].url, 'GET', '/api/me/alerts',
			{ token: kit.token(`stranger-${randomId(3)}`) });
		assert.equal(stranger.status, 200, stranger.text);
		assert.deepEqual(stranger.json.alerts, []);
	});
});

describe('rate limit (3 per 2 s window)', () => {
	let kit;
	const W = 2000;
	const MAX = 3;
	const PIDS = Array.from({ length: 14 }, (_, i) => 201 + i);

	before(async () => {
		kit = await alertsKit({
			overrides: { alerts: { max_per_window: MAX, window_s: W / 1000 } },
			products: PIDS.map((id) => ({ id, stock: 50, threshold: 5 })),
		});
		// Warm the catalog with events that alert nobody, so the timed
		// bursts below are not spread out by MySQL lookups.
		for (const pid of PIDS) {
			const id = eid('warm');
			await kit.publish({ event_id: id, product_id: pid, stock: 49, prev_stock: 50 });
			await kit.processed(id);
		}
	});
	after(async () => { if (kit) assertCleanStop(await kit.close()); });

	// Records when each alert arrived at h.
	function arrivals(h) {
		const at = new Map();
		h.ws.on('message', (data) => {
			try {
				const m = JSON.parse(String(data));
				if (m.type === 'alert') at.set(m.event_id, Date.now());
			} catch { /* not ours */ }
		});
		return at;
	}

	// Resolves just after a window boundary, so a burst fits in one window.
	const windowStart = () => waitFor(() => Date.now() % W < 150,
		{ timeout: 3 * W, interval: 5, what: 'the start of a rate window' });

	test('10 alerts in one window: 3 at once, the rest later, none lost', async () => {
		const u = `rl-${randomId(3)}`;
		const pids = PIDS.slice(0, 10);
		for (const pid of pids) await kit.subscribe(u, pid);
		const h = await kit.connect(u);
		const at = arrivals(h);
		const delayed0 = await kit.metric('stockalert_alerts_delayed_total');
		const delivered0 = await kit.metric('stockalert_alerts_delivered_total');
		const shared0 = await kit.metric('stockalert_alerts_rate_shared_total');

		const ids = pids.map(() => eid('burst'));
		await windowStart();
		const t0 = Date.now();
		await redisPipeline(kit.redisPort, pids.map((pid, i) => ['PUBLISH',
			`${kit.prefix}inventory`, JSON.stringify({ event_id: ids[i], product_id: pid,
				stock: 5, prev_stock: 0 })]));
		await waitFor(() => wsAlerts(h).length >= 10, { timeout: 8 * W,
			what: `10 alerts (got ${wsAlerts(h).length})` });

		const got = wsAlerts(h);
		assert.deepEqual(got.map((a) => a.event_id).sort(), [...ids].sort(),
			'each alert exactly once');
		const w0 = Math.floor(t0 / W);
		const perWindow = new Map();
		for (const id of ids) {
			const w = Math.floor(at.get(id) / W);
			perWindow.set(w, (perWindow.get(w) || 0) + 1);
		}
		const dump = JSON.stringify([...perWindow].map(([w, n]) => [w - w0, n]));
		assert.equal(perWindow.get(w0), MAX, `first window: ${dump}`);
		for (const [w, n] of perWindow) {
			assert.ok(n <= MAX, `window ${w - w0} delivered ${n}: ${dump}`);
			assert.ok(w >= w0, dump);
		}
		const first = ids.filter((id) => Math.floor(at.get(id) / W) === w0);
		for (const id of first) assert.ok(at.get(id) - t0 < W, 'the first 3 came late');
		assert.ok(await kit.metric('stockalert_alerts_delayed_total') - delayed0 >= 7,
			'delayed alerts not counted');
		assert.equal(await kit.metric('stockalert_alerts_delivered_total') - delivered0, 10);
		// Below half the limit (the first alert) the instance decided alone;
		// the other 9 went to the shared counter.
		assert.equal(await kit.metric('stockalert_alerts_rate_shared_total') - shared0, 9);
		// Nothing more arrives: a sentinel in a fresh window is the next.
		await windowStart();
		const s = eid('rl-sentinel');
		await kit.publish({ event_id: s, product_id: pids[0], stock: 0, prev_stock: 5 });
		assert.deepEqual((await alertsBefore(h, s)).map((a) => a.event_id).sort(),
			[...ids, s].sort());
	});

	test('two alerts for one product while held: only the newer is delivered', async () => {
		const u = `rc-${randomId(3)}`;
		const [a, b, c, d] = PIDS.slice(10, 14);
		for (const pid of [a, b, c, d]) await kit.subscribe(u, pid);
		const h = await kit.connect(u);
		const m0 = {
			delayed: await kit.metric('stockalert_alerts_delayed_total'),
			coalesced: await kit.metric('stockalert_alerts_coalesced_total'),
		};
		const ev = (pid, prev, stock) => ({ event_id: eid(`c${pid}`), product_id: pid, stock,
			prev_stock: prev });
		const burst = [ev(a, 0, 5), ev(b, 0, 5), ev(c, 0, 5), ev(d, 0, 5), ev(d, 5, 0)];
		await windowStart();
		await redisPipeline(kit.redisPort, burst.map((e) => ['PUBLISH', `${kit.prefix}inventory`,
			JSON.stringify(e)]));
		const newer = burst[4].event_id;
		await wsWaitFor(h, (m) => m.event_id === newer, 4 * W, 'the newer held alert');
		// A sentinel after the release: nothing else came or comes.
		const s = ev(a, 5, 0);
		await kit.publish(s);
		const got = await alertsBefore(h, s.event_id);
		assert.deepEqual(got.map((x) => x.event_id).sort(),
			[burst[0], burst[1], burst[2], burst[4], s].map((x) => x.event_id).sort(),
			'the older held alert for the product must be dropped');
		const held = got.find((x) => x.event_id === newer);
		assert.equal(held.kind, 'sold_out');
		assert.equal(held.product_id, d);
		assert.equal(await kit.metric('stockalert_alerts_delayed_total') - m0.delayed, 1);
		assert.equal(await kit.metric('stockalert_alerts_coalesced_total') - m0.coalesced, 1);
	});
});
