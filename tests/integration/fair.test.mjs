// Fair release (conf/README.md; alerts.fair_release_factor F / fair_release_interval_s I): a
// back_in_stock with stock S reaches the ceil(F×S) earliest subscribers (by subscription
// time) at once, the next ceil(F×stock) every I seconds while the stock stays above 0; a
// sold_out stops the waves, a later back_in_stock continues after the users already reached
// in this cycle; one instance runs each wave, every instance delivers it; a user whose wave
// came while offline finds the alert in the history and on resume, one whose wave did not come
// yet does not.
//
// Timing is measured, never slept on: frames are awaited with deadlines, wave gaps are
// asserted with loose bounds, and "no more waves" is shown with a sentinel product whose own
// waves prove the schedulers kept running meanwhile.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
	alertsKit, wsWaitFor, waitFor, apiCall, redisCommand, randomId,
	cleanStopChecker,
	eventId as eid,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(alerts|roster|catalog|events)\.c/,
	'leak in the alert pipeline');

const F = 2;
const I = 1;            // fair_release_interval_s
const IMS = I * 1000;
const OVERRIDES = {
	alerts: { max_per_window: 1000, fair_release_factor: F, fair_release_interval_s: I },
};

const range = (a, b) => Array.from({ length: b - a }, (_, k) => a + k);

// Subscribes users to pid one by one, each strictly later (in ms) than the previous one, so
// the subscription order is the order of `users`; checks the product:{id}:subs scores say so.
async function subscribeInOrder(kit, users, pid, inst = () => 0) {
	const key = `${kit.prefix}product:${pid}:subs`;
	for (const [k, u] of users.entries()) {
		await kit.subscribe(u, pid, undefined, inst(k));
		const score = Number(await waitFor(() => redisCommand(kit.redisPort, ['ZSCORE', key, u]),
			{ timeout: 10000, what: `${u} in ${key}` }));
		await waitFor(() => Date.now() > score + 1, { interval: 1, what: 'the next ms' });
	}
	const z = await redisCommand(kit.redisPort, ['ZRANGE', key, 0, -1, 'WITHSCORES']);
	const got = [];
	for (let k = 0; k < z.length; k += 2) got.push([z[k], Number(z[k + 1])]);
	assert.deepEqual(got.map(([u]) => u), users, `subscription order of ${pid}`);
	for (let k = 1; k < got.length; k++) {
		assert.ok(got[k][1] > got[k - 1][1], `scores of ${pid} not strictly increasing: ` +
			JSON.stringify(got));
	}
}

// Connects (with the kit's sync step) and stamps every alert frame with its arrival time.
async function connectStamped(kit, user, opts) {
	const h = await kit.connect(user, opts);
	h.arrivals = [];
	h.ws.on('message', (data) => {
		const m = JSON.parse(String(data));
		if (m.type === 'alert') h.arrivals.push({ ...m, at: Date.now() });
	});
	return h;
}

// The stamped alerts of h for one event.
const got = (h, eventId) => h.arrivals.filter((a) => a.event_id === eventId);

// The users (indices into users, sorted) whose sockets received the event so far.
function reached(socks, eventId) {
	const s = new Set();
	for (const h of socks) if (got(h, eventId).length) s.add(h.idx);
	return [...s].sort((a, b) => a - b);
}

// Waits until every socket of the users `want` (indices) has the event; returns the
// arrival times [first, last].
async function waitWave(socks, eventId, want, timeout) {
	const mine = socks.filter((h) => want.includes(h.idx));
	assert.ok(mine.length >= want.length, 'a wanted user has no socket');
	await waitFor(() => mine.every((h) => got(h, eventId).length > 0), {
		timeout, interval: 10,
		what: `${eventId} on users ${want} (reached so far: ${reached(socks, eventId)})`,
	});
	const at = mine.map((h) => got(h, eventId)[0].at);
	return [Math.min(...at), Math.max(...at)];
}

async function metricSum(kit, name) {
	let s = 0;
	for (const i of kit.daemons.keys()) s += await kit.metric(name, i);
	return s;
}

async function fairMetrics(kit) {
	return {
		waves: await metricSum(kit, 'stockalert_fair_waves_total'),
		released: await metricSum(kit, 'stockalert_fair_users_released_total'),
		stopped: await metricSum(kit, 'stockalert_fair_cycles_stopped_total'),
	};
}

const dueScore = async (kit, pid) =>
	redisCommand(kit.redisPort, ['ZSCORE', `${kit.prefix}fair:due`, pid]);

// Guards a timing-dependent step: the next wave of pid must not be due yet, else the test
// machine was too slow for the interval and the outcome would say nothing about the daemon.
async function assertNextWaveNotDue(kit, pid) {
	const due = await dueScore(kit, pid);
	assert.ok(due !== null, `no next wave scheduled for ${pid}`);
	assert.ok(Number(due) > Date.now() + 100,
		`the next wave of ${pid} is already due (test machine too slow for I=${I}s)`);
}

async function history(kit, user, d = 0, since) {
	const q = since ? `?since=${encodeURIComponent(since)}` : '';
	const r = await apiCall(kit.daemons[d].url, 'GET', `/api/me/alerts${q}`,
		{ token: kit.token(user) });
	assert.equal(r.status, 200, r.text);
	return r.json.alerts;
}

// Publishes a back_in_stock on a sentinel product whose subscribers are the users of socks
// (stock 1, so F per wave) and waits for its last wave: proof that the schedulers ran for at least
// (waves - 1) × I meanwhile. Returns the number of waves it took.
async function runSentinel(kit, socks, pid) {
	const n = new Set(socks.map((h) => h.idx)).size;
	const waves = Math.ceil(n / F);
	const id = eid('sentinel');
	await kit.publish({ event_id: id, product_id: pid, stock: 1, prev_stock: 0 });
	const t0 = Date.now();
	await waitWave(socks, id, socks.map((h) => h.idx), (waves + 2) * 3 * IMS);
	assert.ok(Date.now() - t0 >= (waves - 1) * 0.8 * IMS,
		`sentinel's ${waves} waves came too fast: ${Date.now() - t0} ms`);
	return waves;
}

describe('fair release, one instance (F=2, I=1 s)', () => {
	let kit;
	const N = 30;
	const P = 401;          // the product of tests 1 and 3
	const SENT = 402;       // sentinel product, subscribers 0..5
	const H = 403;          // history/resume product
	const R = 404;          // resume after a later alert
	const O = 405;          // the other product of that test
	const users = range(0, N).map((k) => `f${String(k).padStart(2, '0')}-${randomId(3)}`);
	const socks = [];
	let stopId;

	before(async () => {
		kit = await alertsKit({
			overrides: OVERRIDES,
			products: [{ id: P, stock: 0 }, { id: SENT, stock: 0 }, { id: H, stock: 5 },
				{ id: R, stock: 0 }, { id: O, stock: 5 }],
		});
		await subscribeInOrder(kit, users, P);
		await subscribeInOrder(kit, users.slice(0, 6), SENT);
		for (const [k, u] of users.entries()) {
			const h = await connectStamped(kit, u);
			h.idx = k;
			socks.push(h);
		}
	});
	after(async () => { if (kit) assertCleanStop(await kit.close()); });

	test('waves of ceil(F×S) in subscription order every I; sold_out stops them', async () => {
		const m0 = await fairMetrics(kit);
		const id = eid('bis1');
		const tPub = Date.now();
		await kit.publish({ event_id: id, product_id: P, stock: 3, prev_stock: 0 });
		assert.equal((await kit.processed(id, 1)).kind, 'back_in_stock');

		const w1 = await waitWave(socks, id, range(0, 6), 10000);
		const w2 = await waitWave(socks, id, range(6, 12), 3 * IMS + 5000);
		assert.deepEqual(reached(socks, id), range(0, 12),
			'after two waves exactly the 12 earliest subscribers have the alert');
		await assertNextWaveNotDue(kit, P);
		assert.ok(w1[1] - tPub < 0.8 * IMS + 2000, `first wave not at once: ${w1[1] - tPub} ms`);
		assert.ok(w1[1] - w1[0] < 0.5 * IMS, `first wave spread over ${w1[1] - w1[0]} ms`);
		assert.ok(w2[0] - w1[0] >= 0.8 * IMS, `second wave after only ${w2[0] - w1[0]} ms`);
		assert.ok(w2[0] - w1[0] <= 3 * IMS, `second wave after ${w2[0] - w1[0]} ms`);
		// The same alert, but each wave is a history entry of its own: the later wave's id
		// sorts after the first's, so a client resuming from what it got finds it.
		const a0 = got(socks[0], id)[0];
		const a6 = got(socks[6], id)[0];
		const order = (x) => x.split('-').map(Number);
		const [ms0, sq0] = order(a0.id);
		const [ms6, sq6] = order(a6.id);
		assert.ok(ms6 > ms0 || (ms6 === ms0 && sq6 > sq0),
			`the second wave's id ${a6.id} must sort after the first's ${a0.id}`);
		assert.equal(a6.event_id, a0.event_id);
		assert.deepEqual([a0.kind, a0.product_id, a0.stock, a0.prev_stock],
			['back_in_stock', P, 3, 0]);
		const mid = await fairMetrics(kit);
		assert.equal(mid.waves - m0.waves, 2, 'stockalert_fair_waves_total after two waves');
		assert.equal(mid.released - m0.released, 12, 'stockalert_fair_users_released_total');

		stopId = eid('so1');
		await kit.publish({ event_id: stopId, product_id: P, stock: 0, prev_stock: 3 });
		assert.equal((await kit.processed(stopId, 1)).kind, 'sold_out');
		assert.equal(await dueScore(kit, P), null, 'fair:due still schedules the product');
		// sold_out is not fair-released: everyone, at once.
		await waitWave(socks, stopId, range(0, N), 10000);
		const sentinelWaves = await runSentinel(kit, socks.slice(0, 6), SENT);

		assert.deepEqual(reached(socks, id), range(0, 12),
			'a wave of the stopped cycle went out after the sold_out');
		for (const h of socks) {
			assert.ok(got(h, id).length <= 1, `${h.user} got the back_in_stock twice`);
			assert.equal(got(h, stopId).length, 1, `${h.user}: sold_out count`);
		}
		const m1 = await fairMetrics(kit);
		assert.equal(m1.stopped - m0.stopped, 1, 'stockalert_fair_cycles_stopped_total');
		assert.equal(m1.waves - m0.waves, 2 + sentinelWaves, 'stockalert_fair_waves_total');
		assert.equal(m1.released - m0.released, 12 + 6, 'stockalert_fair_users_released_total');
	});

	test('a later back_in_stock continues after the users already reached', async () => {
		assert.ok(stopId, 'needs the previous test');
		const m0 = await fairMetrics(kit);
		const id = eid('bis2');
		await kit.publish({ event_id: id, product_id: P, stock: 3, prev_stock: 0 });
		assert.equal((await kit.processed(id, 1)).kind, 'back_in_stock');
		const w1 = await waitWave(socks, id, range(12, 18), 10000);
		const w2 = await waitWave(socks, id, range(18, 24), 3 * IMS + 5000);
		const w3 = await waitWave(socks, id, range(24, 30), 3 * IMS + 5000);
		for (const [a, b] of [[w1, w2], [w2, w3]]) {
			assert.ok(b[0] - a[0] >= 0.8 * IMS && b[0] - a[0] <= 3 * IMS,
				`waves ${b[0] - a[0]} ms apart`);
		}
		// Everyone was reached: the cycle is over, nothing stays scheduled.
		assert.equal(await dueScore(kit, P), null, 'a finished cycle is still scheduled');
		assert.equal(await redisCommand(kit.redisPort, ['HGET', `${kit.prefix}fair:${P}`,
			'active']), '0');
		assert.deepEqual(reached(socks, id), range(12, 30),
			'the second back_in_stock did not continue with subscriber 13');
		for (const h of socks) assert.ok(got(h, id).length <= 1, `${h.user} got it twice`);
		const m1 = await fairMetrics(kit);
		assert.equal(m1.waves - m0.waves, 3, 'stockalert_fair_waves_total');
		assert.equal(m1.released - m0.released, 18, 'stockalert_fair_users_released_total');

		// Once everyone was reached, the next cycle starts from the first subscriber again.
		const so = eid('so2');
		await kit.publish({ event_id: so, product_id: P, stock: 0, prev_stock: 3 });
		await kit.processed(so, 1);
		const id3 = eid('bis3');
		await kit.publish({ event_id: id3, product_id: P, stock: 3, prev_stock: 0 });
		await kit.processed(id3, 1);
		await waitWave(socks, id3, range(0, 6), 10000);
		await waitWave(socks, so, range(0, N), 10000);
		assert.deepEqual(reached(socks, id3), range(0, 6), 'a new cycle starts at subscriber 1');
		await assertNextWaveNotDue(kit, P);
		const so3 = eid('so3');
		await kit.publish({ event_id: so3, product_id: P, stock: 0, prev_stock: 3 });
		await kit.processed(so3, 1);
		assert.equal(await dueScore(kit, P), null);
		assert.deepEqual(reached(socks, id3), range(0, 6));
	});

	test('history and resume: only once the user\'s wave came', async () => {
		// Stock 1, F=2: waves of two. X (4th wave slot, wave 3) stays offline; B is the
		// online witness of wave 2, W of wave 3 (X's own), L is in wave 4.
		const hu = range(0, 8).map((k) => `h${k}-${randomId(3)}`);
		await subscribeInOrder(kit, hu, H);
		const [X, W, L] = [hu[4], hu[5], hu[6]];
		const hb = await connectStamped(kit, hu[2]);
		const hw = await connectStamped(kit, W);
		const hl = await connectStamped(kit, L);
		[hb.idx, hw.idx, hl.idx] = [2, 5, 6];

		// A sold_out first, so X has an alert to resume after.
		const so = eid('hso');
		await kit.publish({ event_id: so, product_id: H, stock: 0, prev_stock: 5 });
		await kit.processed(so, 1);
		let hx = await waitFor(async () => (await history(kit, X)).find((a) =>
			a.event_id === so), { what: `sold_out in ${X}'s history` });
		const since = hx.id;

		const id = eid('hbis');
		await kit.publish({ event_id: id, product_id: H, stock: 1, prev_stock: 0 });
		await kit.processed(id, 1);
		await waitWave([hb], id, [2], 3 * IMS + 5000);
		const rel = `${kit.prefix}fair:rel:${got(hb, id)[0].id}`;
		const notYet = async (user) => {
			const before = await redisCommand(kit.redisPort, ['SISMEMBER', rel, user]);
			const hist = await history(kit, user);
			const sinceHist = await history(kit, user, 0, since);
			// Resume now, and leave before the wave.
			const r = await kit.connect(user, { since });
			const { msg: done } = await wsWaitFor(r, (m) => m.type === 'replay_done', 10000,
				`replay_done for ${user}`);
			const replay = r.messages.filter((m) => m.type === 'alert');
			r.ws.close();
			await r.closed;
			const after = await redisCommand(kit.redisPort, ['SISMEMBER', rel, user]);
			assert.ok(before === 0 && after === 0,
				`${user}'s wave ran during the check (test machine too slow for I=${I}s)`);
			assert.equal(done.recovered, true);
			for (const [what, list] of [['history', hist], ['history since', sinceHist],
				['resume', replay]]) {
				assert.ok(!list.some((a) => a.event_id === id),
					`${what} of ${user} shows a back_in_stock whose wave did not come yet: ` +
					JSON.stringify(list));
			}
			assert.ok(hist.some((a) => a.event_id === so), `${user}'s history lost the sold_out`);
		};
		await notYet(X);
		await notYet(L);

		// X's wave: the witness W gets it live; from then on X sees it everywhere.
		await waitWave([hw], id, [5], 3 * IMS + 5000);
		assert.ok(got(hw, id)[0].at - got(hb, id)[0].at >= 0.8 * IMS, 'wave 3 came too early');
		const hist = await history(kit, X);
		const entry = hist.filter((a) => a.event_id === id);
		assert.equal(entry.length, 1, `${X}'s history after the wave: ${JSON.stringify(hist)}`);
		assert.deepEqual([entry[0].kind, entry[0].product_id, entry[0].stock, entry[0].prev_stock,
			entry[0].id], ['back_in_stock', H, 1, 0, got(hw, id)[0].id]);
		assert.deepEqual(hist.filter((a) => a.product_id === H).map((a) => a.event_id), [so, id],
			'history order');
		assert.deepEqual((await history(kit, X, 0, since)).map((a) => a.event_id), [id],
			'history since the sold_out');
		const r = await kit.connect(X, { since });
		const { msg: done, index } = await wsWaitFor(r, (m) => m.type === 'replay_done', 10000,
			'replay_done');
		const replay = r.messages.slice(0, index).filter((m) => m.type === 'alert');
		assert.deepEqual(replay.map((a) => a.event_id), [id], 'resume after the wave');
		assert.deepEqual([done.recovered, done.count], [true, 1]);
		// L's wave (4) has not come yet, or the guard says why not.
		if (await redisCommand(kit.redisPort, ['SISMEMBER', rel, L]) === 0) {
			assert.ok(!(await history(kit, L)).some((a) => a.event_id === id),
				'wave 4 user sees the alert before wave 4');
		}
		await waitWave([hl], id, [6], 3 * IMS + 5000);
		assert.ok((await history(kit, L)).some((a) => a.event_id === id));
		const so2 = eid('hso2');
		await kit.publish({ event_id: so2, product_id: H, stock: 0, prev_stock: 1 });
		await kit.processed(so2, 1);
	});

	// Each wave after the first is a history entry of its own, so its id sorts by when it
	// was delivered: resume after any earlier alert finds it.
	test('resume after a later alert still brings a wave that came while offline', async () => {
		// Z is online when the back_in_stock is published (its wave, 3, is 2 I away), gets
		// an alert of another product meanwhile, leaves, and resumes after that alert once
		// its wave came. The wave's alert has the older id of the back_in_stock event; the
		// user must get it all the same (resume replays what the user would have
		// received; nothing is lost).
		const zu = range(0, 6).map((k) => `z${k}-${randomId(3)}`);
		await subscribeInOrder(kit, zu, R);
		const [Z, W] = [zu[4], zu[5]];
		await kit.subscribe(Z, O);
		const hz = await connectStamped(kit, Z);
		const hw = await connectStamped(kit, W);
		[hz.idx, hw.idx] = [4, 5];
		const id = eid('rbis');
		await kit.publish({ event_id: id, product_id: R, stock: 1, prev_stock: 0 });
		await kit.processed(id, 1);
		const oid = eid('oso');
		await kit.publish({ event_id: oid, product_id: O, stock: 0, prev_stock: 5 });
		await kit.processed(oid, 1);
		await waitWave([hz], oid, [4], 10000);
		const q = got(hz, oid)[0];
		hz.ws.close();
		await hz.closed;
		assert.equal(got(hz, id).length, 0, 'Z got its wave before leaving (machine too slow)');
		await waitWave([hw], id, [5], 3 * IMS + 5000);
		assert.ok((await history(kit, Z)).some((a) => a.event_id === id),
			'the wave is not in Z\'s history');
		const r = await kit.connect(Z, { since: q.id });
		const { index } = await wsWaitFor(r, (m) => m.type === 'replay_done', 10000,
			'replay_done');
		const replay = r.messages.slice(0, index).filter((m) => m.type === 'alert');
		assert.deepEqual(replay.map((a) => a.event_id), [id],
			`resume after ${q.id} (${oid}) lost the back_in_stock whose wave came while ` +
			`offline (alert id ${got(hw, id)[0].id})`);
		const so = eid('rso');
		await kit.publish({ event_id: so, product_id: R, stock: 0, prev_stock: 1 });
		await kit.processed(so, 1);
	});
});

describe('fair release, two instances', () => {
	let kit;
	const N = 30;
	const P = 411;
	const SENT = 412;
	const users = range(0, N).map((k) => `g${String(k).padStart(2, '0')}-${randomId(3)}`);
	const socks = [];

	before(async () => {
		kit = await alertsKit({
			instances: 2,
			overrides: OVERRIDES,
			products: [{ id: P, stock: 0 }, { id: SENT, stock: 0 }],
		});
		await subscribeInOrder(kit, users, P, (k) => k % 2);
		await subscribeInOrder(kit, users.slice(0, 6), SENT, (k) => k % 2);
		for (const [k, u] of users.entries()) {
			const h = await connectStamped(kit, u, { i: k % 2 });
			h.idx = k;
			socks.push(h);
		}
		// Two users on both instances: each socket gets each wave once.
		for (const k of [0, 7]) {
			const h = await connectStamped(kit, users[k], { i: 1 - (k % 2) });
			h.idx = k;
			socks.push(h);
		}
	});
	after(async () => { if (kit) assertCleanStop(await kit.close()); });

	test('same waves for users on either instance, each wave run once', async () => {
		const m0 = await fairMetrics(kit);
		const id = eid('mbis');
		assert.equal(await kit.publish({ event_id: id, product_id: P, stock: 3, prev_stock: 0 }),
			2, 'both instances listen');
		await kit.processed(id, 2);
		const w1 = await waitWave(socks, id, range(0, 6), 10000);
		const w2 = await waitWave(socks, id, range(6, 12), 3 * IMS + 5000);
		assert.deepEqual(reached(socks, id), range(0, 12), 'union over both instances');
		await assertNextWaveNotDue(kit, P);
		assert.ok(w1[1] - w1[0] < 0.5 * IMS, `first wave spread over ${w1[1] - w1[0]} ms`);
		assert.ok(w2[0] - w1[0] >= 0.8 * IMS && w2[0] - w1[0] <= 3 * IMS,
			`waves ${w2[0] - w1[0]} ms apart`);
		const mid = await fairMetrics(kit);
		assert.equal(mid.waves - m0.waves, 2, 'waves run (sum over instances)');
		assert.equal(mid.released - m0.released, 12, 'users released (sum over instances)');
		// One id per wave, the same on both instances.
		const ids = new Set(socks.flatMap((h) => got(h, id).map((a) => a.id)));
		assert.equal(ids.size, 2, `one alert id per wave on both instances: ${[...ids]}`);

		const so = eid('mso');
		await kit.publish({ event_id: so, product_id: P, stock: 0, prev_stock: 3 });
		await kit.processed(so, 2);
		assert.equal(await dueScore(kit, P), null, 'fair:due still schedules the product');
		await waitWave(socks, so, range(0, N), 10000);
		const sentinelWaves = await runSentinel(kit, socks.filter((h) => h.idx < 6), SENT);
		assert.deepEqual(reached(socks, id), range(0, 12), 'a wave went out after the sold_out');
		for (const h of socks) {
			assert.ok(got(h, id).length <= 1, `${h.user} got the back_in_stock twice`);
			assert.equal(got(h, so).length, 1, `${h.user}: sold_out count`);
		}
		const m1 = await fairMetrics(kit);
		assert.equal(m1.waves - m0.waves, 2 + sentinelWaves, 'waves run (sum over instances)');
		assert.equal(m1.released - m0.released, 12 + 6, 'users released (sum over instances)');
		assert.equal(m1.stopped - m0.stopped, 1, 'cycles stopped (sum over instances)');
	});
});
