// MySQL/MariaDB down (killed -9, restarted on the same port after
// MYSQL_OUTAGE_S seconds: 10 in scripts/test.sh to keep CI time reasonable,
// 30 in scripts/soak.sh, past the product cache's 30 s TTL): alerts keep flowing
// with the product names the daemon cached, REST writes answer 503 and leave
// nothing half-written in the Redis index, and once MySQL is back writes
// succeed without restarting the daemon.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
	durableKit, startMariadb, waitFor, waitReady, waitReadyz, apiCall, parseErrorBody,
	subsIndexFromRedis, subsIndexFromMysql, randomId, sleep, wsWaitFor,
	cleanStopChecker,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/(store|subs|api|catalog|alerts)\.c/);

const OUTAGE_MS = Number(process.env.MYSQL_OUTAGE_S || 10) * 1000;

test('MySQL down: alerts flow, writes 503 with nothing half-written, recovery by itself',
	async (t) => {
		const P = 801;
		const R = 802; // never looked up before the outage
		const mysql = await startMariadb({ t });
		const kit = await durableKit({ t, mysql, overrides: { alerts: { max_per_window: 10000 } },
			products: [{ id: P, name: 'Widget 801', stock: 0 }, { id: R, name: 'Gadget 802',
				stock: 0 }] });
		t.after(async () => assertCleanStop(await kit.close()));
		const d = await kit.start(0);
		const u = `my-${randomId(3)}`;
		const u2 = `my2-${randomId(3)}`;
		await kit.subscribe(u, P);
		await kit.subscribe(u, R);
		const h = await kit.connect(u);
		let n = 0;
		const publish = async (pid, stock, prev) => {
			const id = `m${n++}-${randomId(3)}`;
			assert.equal(await kit.publish({ event_id: id, product_id: pid, stock,
				prev_stock: prev }), 1);
			return id;
		};
		const e0 = await publish(P, 3, 0);
		const { msg: a0 } = await wsWaitFor(h, (m) => m.event_id === e0, 10000, 'alert before');
		assert.equal(a0.name, 'Widget 801');
		const index0 = await subsIndexFromRedis(kit.redisPort, kit.prefix);

		// MySQL goes away.
		await mysql.stop('SIGKILL');
		const downAt = Date.now();
		const rz = await waitReadyz(d, (st, b) => st === 503 && b && b.mysql === 'down', 30000,
			'/readyz 503 naming mysql');
		assert.equal(rz.body.redis, 'up');
		t.diagnostic(`MySQL killed: /readyz 503 after ${Date.now() - downAt} ms`);

		// Writes: 503 with the error shape, and the Redis index untouched.
		const tok2 = kit.token(u2);
		const writes = [
			['PUT', `/api/me/subscriptions/${P}`, tok2, { kinds: ['back_in_stock'] }],
			['PUT', `/api/me/subscriptions/${P}`, kit.token(u), { threshold: 2 }],
			['DELETE', `/api/me/subscriptions/${R}`, kit.token(u), undefined],
		];
		for (const [method, p, token, body] of writes) {
			const t0 = Date.now();
			const r = await apiCall(d.url, method, p, { token, body });
			assert.equal(r.status, 503,
				`${method} ${p} while MySQL is down: ${r.status} ${r.text}`);
			parseErrorBody(r.text);
			assert.ok(Date.now() - t0 < 10000, `${method} took ${Date.now() - t0} ms`);
		}
		assert.deepEqual(await subsIndexFromRedis(kit.redisPort, kit.prefix), index0,
			'the Redis index changed while MySQL was down');

		// Alerts keep flowing for the whole outage, names from the cache;
		// a product not cached yet still alerts.
		const eR = await publish(R, 4, 0);
		const { msg: aR } = await wsWaitFor(h, (m) => m.event_id === eR, 15000,
			'alert for a product not in the cache');
		assert.equal(aR.product_id, R);
		let k = 0;
		while (Date.now() - downAt < OUTAGE_MS) {
			const e = await publish(P, k % 2 ? 3 : 0, k % 2 ? 0 : 3);
			const { msg } = await wsWaitFor(h, (m) => m.event_id === e, 10000,
				`alert ${k} during the outage`);
			assert.equal(msg.name, 'Widget 801');
			k++;
			await sleep(50); // pacing, not synchronisation
		}
		t.diagnostic(`${k + 1} alerts delivered during a ${OUTAGE_MS} ms MySQL outage`);
		assert.equal(d.running, true);
		assert.equal(h.closeInfo, null);

		// MySQL comes back: the daemon reconnects by itself.
		await mysql.start();
		const upAt = Date.now();
		await waitReady(d, 60000);
		t.diagnostic(`MySQL back: /readyz 200 after ${Date.now() - upAt} ms`);
		const r1 = await apiCall(d.url, 'PUT', `/api/me/subscriptions/${P}`,
			{ token: tok2, body: { kinds: ['back_in_stock'] } });
		assert.equal(r1.status, 201, r1.text);
		const r2 = await apiCall(d.url, 'DELETE', `/api/me/subscriptions/${R}`,
			{ token: kit.token(u) });
		assert.equal(r2.status, 204, r2.text);
		const sqlDb = (q) => mysql.sql(q, kit.db);
		await waitFor(async () => {
			const a = await subsIndexFromRedis(kit.redisPort, kit.prefix);
			const b = await subsIndexFromMysql(sqlDb);
			return JSON.stringify(a) === JSON.stringify(b) &&
				(a.users[u2] || []).includes(String(P));
		}, { timeout: 10000, what: 'Redis index equal to MySQL after the outage' });
		const h2 = await kit.connect(u2);
		const e = await publish(P, 6, 0);
		await wsWaitFor(h2, (m) => m.event_id === e, 10000, 'alert for the new subscriber');
		await wsWaitFor(h, (m) => m.event_id === e, 10000, 'alert for the old subscriber');
	});
