// Durable input: an instance killed (-9) with entries delivered to it but not
// acknowledged. Another instance claims them once they have been idle for
// 15 s and processes them: nothing lost, nothing twice.
//
// To make instance A hold a batch deterministically, A is SIGSTOPped while
// its XREADGROUP is blocked in Redis (CLIENT LIST flags=b on a private Redis
// where A is the only reader), and the batch is XADDed inside MULTI/EXEC: Redis
// serves A's blocked read with the whole batch, which A never reads. Then A
// is killed.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
	durableKit, startRedis, redisClients, redisCommand, waitFor, apiCall, randomId, wsAlerts,
	cleanStopChecker,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(stream|alerts|events)\.c/,
	'leak in the stream path');

const blockedRead = async (port) => (await redisClients(port))
	.some((c) => c.cmd === 'xreadgroup' && c.flags.includes('b'));

test('entries pending on a killed instance are processed by another, once', async (t) => {
	const P = 601;
	const redis = await startRedis({ t });
	const kit = await durableKit({ t, redis, instances: 2,
		overrides: { alerts: { max_per_window: 10000 } }, products: [{ id: P, stock: 0 }] });
	t.after(async () => assertCleanStop(await kit.close()));
	const user = `claim-${randomId(3)}`;
	const ev = (id) => ({ event_id: id, product_id: P, stock: 5, prev_stock: 0 });

	const A = await kit.start(0);
	await kit.subscribe(user, P);
	let nameA = null;

	// Hand A a batch it will never acknowledge. If A's blocked read timed
	// out between the check and the XADD, A processes that batch normally
	// once continued (it still counts below), and we try again.
	const all = [];
	let held = null;
	for (let attempt = 0; attempt < 10 && !held; attempt++) {
		await waitFor(() => blockedRead(redis.port), { what: 'A blocked in XREADGROUP' });
		A.proc.kill('SIGSTOP');
		if (await blockedRead(redis.port)) {
			const ids = Array.from({ length: 60 }, (_, k) => `held-${attempt}-${k}-${randomId(3)}`);
			const entryIds = await kit.xadd(ids.map(ev), { atomic: true });
			all.push(...ids);
			// [[entry id, consumer, idle, deliveries]]
			const pend = await redisCommand(redis.port, ['XPENDING', kit.streamKey, 'stockalert',
				'-', '+', 1000]);
			const owners = new Set(pend.map((e) => e[1]));
			const pendIds = pend.map((e) => e[0]);
			if (owners.size === 1 && entryIds.every((id) => pendIds.includes(id))) {
				nameA = [...owners][0];
				held = ids;
				break;
			}
		}
		A.proc.kill('SIGCONT');
		await waitFor(async () => {
			const g = await kit.group();
			return g.pending === 0 && g.lag === 0;
		}, { what: 'A drained a batch it read normally' });
	}
	assert.ok(held, 'could not hand A a batch while it was stopped');
	A.proc.kill('SIGKILL');
	const killedAt = Date.now();
	await A.exited;

	// More events while no instance runs; then B starts with a subscriber.
	const later = Array.from({ length: 40 }, (_, k) => `later-${k}-${randomId(3)}`);
	await kit.xadd(later.map(ev));
	all.push(...later);
	const B = await kit.start(1);
	const h = await kit.connect(user, { i: 1 });

	// B claims A's entries (idle > 15 s) and runs them: the user, connected
	// to B, gets each of those alerts live, once.
	await waitFor(async () => {
		const g = await kit.group();
		return g.pending === 0 && g.lag === 0 &&
			(await kit.missingEvents(all)).length === 0;
	}, { timeout: 45000, what: 'every entry processed and acknowledged' });
	const claimMs = Date.now() - killedAt;
	t.diagnostic(`A's ${held.length} entries processed by B ${claimMs} ms after A was killed`);
	assert.ok(claimMs >= 14000, `claimed after ${claimMs} ms: before the 15 s idle time?`);
	await waitFor(() => held.every((id) => wsAlerts(h).some((m) => m.event_id === id)),
		{ timeout: 10000, what: 'the claimed alerts on the user\'s socket' });
	const live = wsAlerts(h).map((m) => m.event_id);
	assert.equal(new Set(live).size, live.length, `an alert twice on the socket: ${live}`);
	assert.ok(/claimed /.test(B.log()), 'B logged no claim');

	// Exactly once in the history, and in the user's alerts.
	const counts = new Map();
	for (const e of await kit.alertEntries()) {
		counts.set(e.event_id, (counts.get(e.event_id) || 0) + 1);
	}
	for (const id of all) assert.equal(counts.get(id), 1, `history entries for ${id}`);
	assert.equal([...counts.values()].reduce((x, y) => x + y, 0), all.length);
	const r = await apiCall(B.url, 'GET', '/api/me/alerts?limit=1000', { token: kit.token(user) });
	assert.equal(r.status, 200, r.text);
	assert.deepEqual(r.json.alerts.map((a) => a.event_id).sort(), [...all].sort());
	const cons = await kit.consumers();
	assert.equal(cons[nameA].pending, 0, 'A still owns entries');
	assert.deepEqual(await kit.deadEntries(), []);
	assert.equal(h.closeInfo, null);
});
