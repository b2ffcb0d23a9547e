// Faults around Redis, with several connected clients that must never be
// dropped: Redis killed (-9) while events flow and restarted on the same port
// (recovery time measured), Redis SIGSTOPped until the daemon notices, the
// daemon's pub/sub connection cut off by Redis's pub/sub output-buffer limit
// (catch-up from the history another instance recorded), and SIGHUP.
//
// Outage lengths are fault parameters, not synchronisation: every wait for
// the daemon polls a condition with a deadline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';

import {
	alertsKit, startRedis, waitFor, waitReady, waitReadyz, redisCommand, redisPipeline,
	metricValue, randomId, sleep, wsAlerts, wsWaitFor,
	cleanStopChecker,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(redis|stream|alerts|server)\.c/);

const numsub = async (port, channel) => {
	const r = await redisCommand(port, ['PUBSUB', 'NUMSUB', channel]);
	return r instanceof Error ? -1 : Number(r[1]);
};

// Every client still open, answering pings, with one hello.
async function assertAlive(clients) {
	for (const h of clients) {
		assert.equal(h.closeInfo, null, `${h.user} was disconnected`);
		assert.equal(h.messages.filter((m) => m.type === 'hello').length, 1, `${h.user} hello`);
		const from = h.messages.length;
		h.send({ type: 'ping' });
		await wsWaitFor(h, (m) => h.messages.indexOf(m) >= from && m.type === 'pong', 5000,
			`pong for ${h.user}`);
	}
}

test('Redis killed (-9) while events flow, restarted: no socket dropped, quick resubscribe',
	async (t) => {
		const P = 701;
		const redis = await startRedis({ t });
		const kit = await alertsKit({ t, redis, overrides: { alerts: { max_per_window: 10000 } },
			products: [{ id: P, stock: 0 }] });
		t.after(async () => assertCleanStop(await kit.close()));
		const d = kit.daemons[0];
		const users = Array.from({ length: 3 }, (_, k) => `rk${k}-${randomId(3)}`);
		for (const u of users) await kit.subscribe(u, P);
		const clients = [];
		for (const u of users) clients.push(await kit.connect(u));

		// A producer publishing alternating back_in_stock / sold_out
		// events every 20 ms, whatever happens to Redis; it remembers
		// which ones Redis handed to a subscriber.
		const sent = [];
		let n = 0;
		let producing = true;
		const producer = (async () => {
			while (producing) {
				const id = `flow-${n}-${randomId(3)}`;
				const ev = n % 2 ? { stock: 0, prev_stock: 5 } : { stock: 5, prev_stock: 0 };
				n++;
				try {
					const r = await redisCommand(redis.port, ['PUBLISH', `${kit.prefix}inventory`,
						JSON.stringify({ event_id: id, product_id: P, ...ev })], { timeout: 500 });
					sent.push({ id, receivers: r });
				} catch {
					sent.push({ id, receivers: null });
				}
				await sleep(20);
			}
		})();
		await waitFor(() => sent.filter((s) => s.receivers === 1).length >= 10,
			{ what: 'events flowing' });

		await redis.stop('SIGKILL');
		const killedAt = Date.now();
		await waitReadyz(d, (st) => st === 503, 20000, '/readyz 503 with Redis gone');
		const noticedMs = Date.now() - killedAt;
		await sleep(Math.max(0, 2000 - (Date.now() - killedAt))); // a 2 s outage
		await redis.start();
		const upAt = Date.now();
		const times = {};
		await Promise.all([
			waitFor(async () => (await numsub(redis.port, `${kit.prefix}inventory`)) === 1,
				{ timeout: 30000, interval: 20, what: 'resubscribed' })
				.then(() => { times.resubscribed = Date.now() - upAt; }),
			waitReady(d, 30000).then(() => { times.ready = Date.now() - upAt; }),
		]);
		const delivered = sent.length;
		await waitFor(() => sent.slice(delivered).filter((s) => s.receivers === 1).length >= 10,
			{ what: 'events flowing again' });
		producing = false;
		await producer;
		const last = sent.filter((s) => s.receivers === 1).at(-1).id;
		for (const h of clients) {
			await wsWaitFor(h, (m) => m.event_id === last, 10000, `last event on ${h.user}`);
		}
		times.lastDelivered = Date.now() - upAt;
		t.diagnostic(`Redis killed: /readyz 503 after ${noticedMs} ms; after Redis accepted ` +
			`connections again: resubscribed ${times.resubscribed} ms, /readyz 200 ` +
			`${times.ready} ms`);

		// Delivery: every client got the same alerts, each once; every
		// event handed to the daemon after the restart reached everyone.
		// Events in flight when Redis died may be lost (pub/sub keeps
		// nothing; Redis kept no data): counted and reported.
		const afterIds = sent.slice(delivered).filter((s) => s.receivers === 1).map((s) => s.id);
		const ref = wsAlerts(clients[0]).map((m) => m.event_id);
		for (const h of clients) {
			const got = wsAlerts(h).map((m) => m.event_id);
			assert.deepEqual(got, ref, `${h.user} and ${clients[0].user} got different alerts`);
			assert.equal(new Set(got).size, got.length, `an alert twice on ${h.user}`);
			for (const id of afterIds) assert.ok(got.includes(id), `${id} missing on ${h.user}`);
		}
		const handed = sent.filter((s) => s.receivers === 1).map((s) => s.id);
		const lost = handed.filter((id) => !ref.includes(id));
		t.diagnostic(`${handed.length} events handed to the daemon (PUBLISH returned 1), ` +
			`${lost.length} lost: ${lost.slice(0, 5).join(' ')}`);
		await assertAlive(clients);
		// Events received on pub/sub while the command connection was still
		// reconnecting count as lost too: the producer was told they were
		// received (PUBLISH returned 1).
		assert.ok(lost.length <= 3, `lost ${lost.length} of ${handed.length} events the daemon ` +
			`received: ${lost.slice(0, 5).join(' ')}...`);
		// Recovered = subscribed AND able to process (/readyz 200).
		const recovered = Math.max(times.resubscribed, times.ready);
		assert.ok(recovered < 2000, `recovered ${recovered} ms after Redis returned ` +
			'(goal: < 2 s)');

		// The durable stream works again though Redis lost the group.
		const s1 = `stream-${randomId(4)}`;
		await redisCommand(redis.port, ['XADD', `${kit.prefix}inventory:stream`, '*', 'event',
			JSON.stringify({ event_id: s1, product_id: P, stock: 9, prev_stock: 0 })]);
		for (const h of clients) {
			await wsWaitFor(h, (m) => m.event_id === s1, 15000, `stream event on ${h.user}`);
		}
	});

test('Redis SIGSTOPped until the daemon notices: reconnects, resubscribes, same sockets',
	async (t) => {
		const P = 702;
		const redis = await startRedis({ t });
		assert.equal(await redis.command(['CONFIG', 'SET', 'client-output-buffer-limit',
			'pubsub 64kb 32kb 2']), 'OK');
		const kit = await alertsKit({ t, redis, products: [{ id: P, stock: 0 }] });
		t.after(async () => {
			try { process.kill(redis.pid, 'SIGCONT'); } catch { /* gone */ }
			assertCleanStop(await kit.close());
		});
		const d = kit.daemons[0];
		const u = `stop-${randomId(3)}`;
		await kit.subscribe(u, P);
		const h = await kit.connect(u);
		const up = () => metricValue(d.url, 'stockalert_dependency_up', { dep: 'redis_pubsub' });
		const reconnects = () => metricValue(d.url, 'stockalert_dependency_reconnects_total',
			{ dep: 'redis_pubsub' });
		assert.equal(await up(), 1);
		const rec0 = await reconnects();

		process.kill(redis.pid, 'SIGSTOP');
		const stoppedAt = Date.now();
		try {
			await waitFor(async () => (await up()) === 0, { timeout: 20000, interval: 100,
				what: 'dependency_up{dep="redis_pubsub"} 0 while Redis is stopped' });
		} finally {
			process.kill(redis.pid, 'SIGCONT');
		}
		const noticedMs = Date.now() - stoppedAt;
		const contAt = Date.now();
		await waitFor(async () => (await up()) === 1 && (await reconnects()) > rec0,
			{ timeout: 20000, interval: 20, what: 'redis_pubsub reconnected' });
		const backMs = Date.now() - contAt;
		await waitReady(d);
		t.diagnostic(`Redis stopped: noticed after ${noticedMs} ms; pub/sub back ${backMs} ms ` +
			'after SIGCONT');

		const e = `after-${randomId(4)}`;
		assert.equal(await kit.publish({ event_id: e, product_id: P, stock: 3, prev_stock: 0 }), 1);
		await wsWaitFor(h, (m) => m.event_id === e, 10000, 'alert after the stop');
		assert.deepEqual(wsAlerts(h).map((m) => m.event_id), [e]);
		await assertAlive([h]);
	});

test('pub/sub cut off by the output-buffer limit: reconnect, catch up from history',
	async (t) => {
		const P = 703;
		const F = 704; // flood product: no alert, nobody subscribed
		const redis = await startRedis({ t });
		assert.equal(await redis.command(['CONFIG', 'SET', 'client-output-buffer-limit',
			'pubsub 64kb 32kb 2']), 'OK');
		const kit = await alertsKit({ t, redis, instances: 2,
			overrides: { alerts: { max_per_window: 10000 } },
			products: [{ id: P, stock: 0 }, { id: F, stock: 100, threshold: 1 }] });
		const [A] = kit.daemons;
		t.after(async () => {
			try { A.proc.kill('SIGCONT'); } catch { /* gone */ }
			assertCleanStop(await kit.close());
		});
		const chan = `${kit.prefix}inventory`;
		const u = `cut-${randomId(3)}`;
		await kit.subscribe(u, P);
		const h = await kit.connect(u, { i: 0 });
		const before = `before-${randomId(4)}`;
		await kit.publish({ event_id: before, product_id: P, stock: 2, prev_stock: 0 });
		await wsWaitFor(h, (m) => m.event_id === before, 10000, 'alert before the cut');
		assert.equal(await numsub(redis.port, chan), 2);
		const reconnectsA = () => metricValue(A.url, 'stockalert_dependency_reconnects_total',
			{ dep: 'redis_pubsub' });
		const rec0 = await reconnectsA();

		// A stops reading; a flood of valid 8 KB events fills its socket
		// buffers, then Redis's pub/sub buffer over 64 KiB: Redis drops A.
		A.proc.kill('SIGSTOP');
		const pad = 'x'.repeat(8192);
		let k = 0;
		await waitFor(async () => {
			await redisPipeline(redis.port, Array.from({ length: 100 }, () => ['PUBLISH', chan,
				JSON.stringify({ event_id: `flood-${k++}-${randomId(2)}`, product_id: F,
					stock: 50 + (k % 2), prev_stock: 50 + ((k + 1) % 2), pad })]),
			{ timeout: 15000 });
			return (await numsub(redis.port, chan)) === 1;
		}, { timeout: 60000, interval: 10, what: 'Redis dropped the stopped instance' });
		t.diagnostic(`Redis dropped A's pub/sub connection after ${k} flood events (8 KiB each)`);

		// B alone records an alert for the user while A is cut off.
		const during = `during-${randomId(4)}`;
		assert.equal(await kit.publish({ event_id: during, product_id: P, stock: 0,
			prev_stock: 2 }), 1);
		await kit.processed(during, 1);
		A.proc.kill('SIGCONT');
		const contAt = Date.now();
		await waitFor(async () => (await numsub(redis.port, chan)) === 2, { timeout: 20000,
			interval: 20, what: 'A resubscribed' });
		const resubMs = Date.now() - contAt;
		await wsWaitFor(h, (m) => m.event_id === during, 15000, 'the missed alert (catch-up)');
		const caughtMs = Date.now() - contAt;
		t.diagnostic(`after SIGCONT: resubscribed ${resubMs} ms, missed alert delivered ` +
			`${caughtMs} ms`);
		assert.ok(await reconnectsA() > rec0, 'A counted no pub/sub reconnect');

		const after = `after-${randomId(4)}`;
		assert.equal(await kit.publish({ event_id: after, product_id: P, stock: 4,
			prev_stock: 0 }), 2);
		await wsWaitFor(h, (m) => m.event_id === after, 10000, 'alert after the cut');
		assert.deepEqual(wsAlerts(h).map((m) => m.event_id), [before, during, after]);
		assert.equal(await kit.metric('stockalert_events_malformed_total', 1), 0,
			'flood events taken for malformed');
		await assertAlive([h]);
	});

test('SIGHUP with clients connected drops none and applies a new log.level', async (t) => {
	const P = 705;
	const kit = await alertsKit({ t, products: [{ id: P, stock: 0 }] });
	t.after(async () => assertCleanStop(await kit.close()));
	const d = kit.daemons[0];
	const users = Array.from({ length: 5 }, (_, k) => `hup${k}-${randomId(3)}`);
	for (const u of users) await kit.subscribe(u, P);
	const clients = [];
	for (const u of users) clients.push(await kit.connect(u));
	// At "info", a connect logs nothing at debug level.
	assert.doesNotMatch(d.log(), new RegExp(`user ${users[0]} connected`));

	const cfg = JSON.parse(fs.readFileSync(d.cfg.path, 'utf8'));
	cfg.log.level = 'debug';
	fs.writeFileSync(d.cfg.path, JSON.stringify(cfg, null, 2));
	for (let k = 0; k < 3; k++) {
		d.proc.kill('SIGHUP');
		await waitFor(() => (d.log().match(/SIGHUP: reloaded/g) || []).length > k,
			{ timeout: 10000, what: `reload ${k + 1} logged` });
	}
	assert.equal(d.running, true);
	await assertAlive(clients);
	const late = `late-${randomId(3)}`;
	await kit.connect(late);
	await waitFor(() => new RegExp(`user ${late} connected`).test(d.log()),
		{ timeout: 5000, what: 'a debug line after the reload' });

	const e = `hup-${randomId(4)}`;
	assert.equal(await kit.publish({ event_id: e, product_id: P, stock: 1, prev_stock: 0 }), 1);
	for (const h of clients) await wsWaitFor(h, (m) => m.event_id === e, 10000, `alert ${h.user}`);
	// A broken config on SIGHUP keeps the running one.
	fs.writeFileSync(d.cfg.path, '{"log": {"level": "loud"}}');
	d.proc.kill('SIGHUP');
	await waitFor(() => /keeping the running configuration/.test(d.log()),
		{ timeout: 10000, what: 'the broken config refused' });
	await assertAlive(clients);
	assert.equal(await metricValue(d.url, 'stockalert_ws_connections'), users.length + 1);
});
