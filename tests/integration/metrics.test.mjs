// The histograms of /metrics as an operator reads them: after N alerts the
// event-to-socket count grew by exactly the deliveries, an event's own `ts`
// is where the latency starts, HTTP requests are labelled by route name
// (never by a raw path with ids), a resume's replay size is counted, and the
// gauges the alert rules divide by (max connections, fd limit) are there.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
	alertsKit, wsAlerts, wsWaitFor, waitFor, apiCall, parsePrometheus, randomId, cleanStopChecker,
	eventId as eid,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(metrics|ws|alerts|http)\.c/,
	'leak around the metrics');

const ROUTES = ['none', 'healthz', 'readyz', 'metrics', 'product', 'subscriptions',
	'subscription', 'alerts', 'events'];

async function scrape(kit) {
	const r = await fetch(`${kit.daemons[0].url}/metrics`, { signal: AbortSignal.timeout(5000) });
	assert.equal(r.status, 200);
	return parsePrometheus(await r.text());
}

// The value of one sample (0 if absent).
function val(m, name, labels = {}) {
	const s = m.samples.find((x) => x.name === name &&
		Object.entries(labels).every(([k, v]) => x.labels[k] === v));
	return s ? s.value : 0;
}

// The buckets of one histogram series, as [le, cumulative count] in order.
function buckets(m, name, labels = {}) {
	return m.samples.filter((x) => x.name === `${name}_bucket` &&
		Object.entries(labels).every(([k, v]) => x.labels[k] === v))
		.map((x) => [x.labels.le, x.value]);
}

// Checks the shape Prometheus relies on: ascending bounds, cumulative counts,
// +Inf last and equal to _count.
function assertHistogram(m, name, labels = {}) {
	const b = buckets(m, name, labels);
	assert.ok(b.length >= 2, `${name} ${JSON.stringify(labels)} has buckets`);
	assert.equal(b[b.length - 1][0], '+Inf');
	for (let i = 1; i < b.length; i++) {
		assert.ok(b[i][1] >= b[i - 1][1], `${name}: cumulative at le=${b[i][0]}`);
		if (i < b.length - 1) assert.ok(Number(b[i][0]) > Number(b[i - 1][0]), 'ascending');
	}
	assert.equal(b[b.length - 1][1], val(m, `${name}_count`, labels), `${name}: +Inf = count`);
}

describe('metrics histograms', () => {
	let kit;
	const P = { a: 301, b: 302 };

	before(async () => {
		kit = await alertsKit({
			overrides: { alerts: { max_per_window: 10000, window_s: 60 },
				ws: { max_connections: 777 } },
			products: Object.values(P).map((id) => ({ id, stock: 0, threshold: 5 })),
		});
	});
	after(async () => { if (kit) assertCleanStop(await kit.close()); });

	test('N alerts to two sockets: event_to_socket_count grows by 2N, from the event ts',
		async () => {
			const u = `m-${randomId(3)}`;
			await kit.subscribe(u, P.a);
			const h1 = await kit.connect(u);
			const h2 = await kit.connect(u);
			const E2S = 'stockalert_event_to_socket_seconds';
			const m0 = await scrape(kit);
			const ts0 = val(m0, `${E2S}_count`, { origin: 'ts' });
			const rc0 = val(m0, `${E2S}_count`, { origin: 'receipt' });
			const le10 = val(m0, `${E2S}_bucket`, { origin: 'ts', le: '10' });
			const proc0 = val(m0, 'stockalert_event_processing_seconds_count');

			// Events stamped an hour ago by their producer: the latency
			// starts at ts, so they land above the last finite bound.
			const N = 3;
			const ids = [];
			for (let i = 0; i < N; i++) {
				const id = eid('m');
				ids.push(id);
				await kit.publish({ event_id: id, product_id: P.a, stock: 5, prev_stock: 0,
					ts: Date.now() - 3600 * 1000 });
			}
			// One without ts: the latency starts at its receipt.
			const last = eid('m');
			await kit.publish({ event_id: last, product_id: P.a, stock: 5, prev_stock: 0 });
			for (const h of [h1, h2]) {
				await wsWaitFor(h, (msg) => msg.type === 'alert' && msg.event_id === last,
					10000, `the alert of ${last}`);
				assert.equal(wsAlerts(h).length, N + 1);
			}

			const m1 = await scrape(kit);
			assert.equal(val(m1, `${E2S}_count`, { origin: 'ts' }) - ts0, 2 * N,
				'one observation per alert frame written, per socket');
			assert.equal(val(m1, `${E2S}_count`, { origin: 'receipt' }) - rc0, 2);
			assert.equal(val(m1, `${E2S}_bucket`, { origin: 'ts', le: '10' }), le10,
				'an hour-old ts is not measured from the receipt');
			assert.ok(val(m1, `${E2S}_sum`, { origin: 'ts' }) >= 2 * N * 3500,
				'the sum is in seconds, from ts');
			assert.ok(val(m1, 'stockalert_event_processing_seconds_count') - proc0 >= N + 1);
			assertHistogram(m1, E2S, { origin: 'ts' });
			assertHistogram(m1, E2S, { origin: 'receipt' });
			assertHistogram(m1, 'stockalert_event_processing_seconds');
		});

	test('HTTP requests are labelled by route name, never by path', async () => {
		const H = 'stockalert_http_request_seconds';
		const m0 = await scrape(kit);
		const tok = kit.token(`r-${randomId(3)}`);
		for (const id of [P.a, P.b, 987654]) {
			await apiCall(kit.daemons[0].url, 'GET', `/api/products/${id}`, { token: tok });
		}
		await apiCall(kit.daemons[0].url, 'GET', '/api/no/such/thing/42', { token: tok });
		const m1 = await scrape(kit);
		assert.equal(val(m1, `${H}_count`, { route: 'product' }) -
			val(m0, `${H}_count`, { route: 'product' }), 3);
		assert.equal(val(m1, `${H}_count`, { route: 'none' }) -
			val(m0, `${H}_count`, { route: 'none' }), 1);
		const routes = new Set(m1.samples.filter((s) => s.name.startsWith(H))
			.map((s) => s.labels.route));
		assert.deepEqual([...routes].sort(), [...ROUTES].sort());
		for (const r of ROUTES) assertHistogram(m1, H, { route: r });
	});

	test('a resume counts its replay size; Redis and MySQL round trips are timed', async () => {
		const u = `rs-${randomId(3)}`;
		await kit.subscribe(u, P.b);
		const h = await kit.connect(u);
		const first = eid('rs');
		await kit.publish({ event_id: first, product_id: P.b, stock: 5, prev_stock: 0 });
		const { msg: a0 } = await wsWaitFor(h, (m) => m.type === 'alert' && m.event_id === first,
			10000, 'the first alert');
		h.ws.close();
		const missed = [eid('rs'), eid('rs')];
		for (const id of missed) {
			await kit.publish({ event_id: id, product_id: P.b, stock: 5, prev_stock: 0 });
			await kit.processed(id);
		}
		const R = 'stockalert_ws_replay_alerts';
		const m0 = await scrape(kit);
		const h2 = await kit.connect(u, { since: a0.id });
		const { msg: done } = await wsWaitFor(h2, (m) => m.type === 'replay_done', 10000,
			'replay_done');
		assert.equal(done.count, 2);
		const m1 = await scrape(kit);
		assert.equal(val(m1, `${R}_count`) - val(m0, `${R}_count`), 1);
		assert.equal(val(m1, `${R}_sum`) - val(m0, `${R}_sum`), 2);
		assertHistogram(m1, R);

		const D = 'stockalert_dependency_command_seconds';
		for (const dep of ['redis', 'mysql']) {
			assert.ok(val(m1, `${D}_count`, { dep }) > 0, `${dep} round trips observed`);
			assertHistogram(m1, D, { dep });
		}
		// The other two connections: the stream's blocking reads, and the
		// pub/sub connection's health check (every 5 s).
		for (const dep of ['redis_stream', 'redis_pubsub']) {
			await waitFor(async () => val(await scrape(kit), `${D}_count`, { dep }) > 0,
				{ timeout: 20000, what: `${dep} round trips observed` });
		}
		assert.equal(val(m1, 'stockalert_ws_max_connections'), 777);
		assert.ok(val(m1, 'process_open_fds') > 0);
		assert.ok(val(m1, 'process_max_fds') >= val(m1, 'process_open_fds'));
		assert.equal(m1.types.stockalert_event_to_socket_seconds, 'histogram');
	});
});
