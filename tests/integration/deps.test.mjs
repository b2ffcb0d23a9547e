// Dependencies coming and going (conf/README.md, Health): a missing Redis or MySQL is
// not fatal, /readyz says which one is down, and the daemon recovers on its
// own when it comes back. Each test uses its own private servers so it can
// kill them without disturbing the other tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';

import {
	makeConfig, startDaemon, waitReady, waitReadyz, stop, startRedis, startMariadb, freePort,
	parsePrometheus, sanitizerReport, waitFor, stopClean,
} from './lib/harness.mjs';

const DOWN_TIMEOUT = 45000;  // health checks every few seconds + timeouts
const UP_TIMEOUT = 60000;    // backoff is capped at 5 s (Redis) / 10 s (MySQL)

async function depUp(d, dep) {
	const m = parsePrometheus(await (await fetch(`${d.url}/metrics`)).text());
	const s = m.samples.find((x) => x.name === 'stockalert_dependency_up' && x.labels.dep === dep);
	return s ? s.value : undefined;
}

test('Redis killed and restarted: /readyz 503 naming redis, then 200 again', async (t) => {
	const redis = await startRedis({ t });
	const cfg = await makeConfig({}, { redis });
	const d = startDaemon(cfg, { t });
	await waitReady(d);

	await redis.stop('SIGKILL');
	const down = await waitReadyz(d, (s, b) => s === 503 && b && b.redis === 'down',
		DOWN_TIMEOUT, '/readyz 503 with redis down');
	assert.equal(down.body.mysql, 'up', 'MySQL reported down although only Redis died');
	assert.equal(await depUp(d, 'redis'), 0);
	// Still alive and serving while Redis is gone.
	assert.equal((await fetch(`${d.url}/healthz`)).status, 200);

	await redis.start();
	const up = await waitReadyz(d, (s) => s === 200, UP_TIMEOUT, '/readyz 200 after Redis restart');
	assert.deepEqual({ redis: up.body.redis, mysql: up.body.mysql }, { redis: 'up', mysql: 'up' });
	assert.equal(await depUp(d, 'redis'), 1);
	assert.ok(d.running, 'daemon restarted itself');
	await stopClean(d);
});

test('MariaDB killed and restarted on the same port: /readyz 503 naming mysql, then 200',
	async (t) => {
		const mysql = await startMariadb({ t });
		const cfg = await makeConfig({}, { mysql });
		const d = startDaemon(cfg, { t });
		await waitReady(d);

		await mysql.stop('SIGKILL');
		const down = await waitReadyz(d, (s, b) => s === 503 && b && b.mysql === 'down',
			DOWN_TIMEOUT, '/readyz 503 with mysql down');
		assert.equal(down.body.redis, 'up', 'Redis reported down although only MySQL died');
		assert.equal(await depUp(d, 'mysql'), 0);
		assert.equal((await fetch(`${d.url}/healthz`)).status, 200);

		await mysql.start();
		await waitReadyz(d, (s) => s === 200, UP_TIMEOUT, '/readyz 200 after MariaDB restart');
		assert.equal(await depUp(d, 'mysql'), 1);
		assert.ok(d.running);
		await stopClean(d);
	});

test('started with Redis and MySQL both absent: runs, 503, then 200 once they start',
	async (t) => {
		const redisPort = await freePort();
		const mysqlPort = await freePort();
		const password = `pw${Date.now()}`;
		const cfg = await makeConfig({}, {
			redis: { port: redisPort },
			mysql: { port: mysqlPort, password, user: 'stockalert', database: 'stockalert' },
		});
		const d = startDaemon(cfg, { t });

		const down = await waitReadyz(d, (s, b) => s === 503 && b &&
			b.redis === 'down' && b.mysql === 'down', DOWN_TIMEOUT, '/readyz 503, both down');
		assert.ok(down);
		assert.equal((await fetch(`${d.url}/healthz`)).status, 200);

		// The schema is applied once MySQL appears; start it first so the
		// daemon sees the states one by one.
		await startMariadb({ t, port: mysqlPort, password });
		await waitReadyz(d, (s, b) => s === 503 && b && b.mysql === 'up' && b.redis === 'down',
			UP_TIMEOUT, '/readyz: mysql up, redis still down');
		await startRedis({ t, port: redisPort });
		await waitReadyz(d, (s) => s === 200, UP_TIMEOUT, '/readyz 200 once both started');
		assert.ok(d.running);
		await stopClean(d);
	});

test('MySQL refusing the credentials is reported, not ignored', async (t) => {
	// A wrong password: the daemon either exits 2 (exit codes: "dependency refused
	// credentials") or stays up reporting mysql down; never "ready".
	const cfg = await makeConfig({});
	fs.writeFileSync(cfg.config.mysql.password_file, 'definitely-wrong\n');
	const d = startDaemon(cfg, { t });
	const outcome = await waitFor(async () => {
		if (!d.running) return 'exited';
		try {
			const r = await fetch(`${d.url}/readyz`, { signal: AbortSignal.timeout(2000) });
			const b = await r.json().catch(() => null);
			if (r.status === 200) return 'ready';
			if (r.status === 503 && b && b.mysql === 'down') return 'down';
		} catch { /* not listening yet */ }
		return false;
	}, { timeout: DOWN_TIMEOUT, what: 'exit 2 or /readyz mysql down' });
	assert.notEqual(outcome, 'ready', `ready with a wrong MySQL password\n${d.log()}`);
	if (outcome === 'exited') {
		const info = await d.exited;
		assert.equal(info.code, 2, `exit ${info.code}\n${d.log()}`);
	} else {
		// Down for the right reason, and said so in the log for the operator.
		await waitFor(() => /denied|credential|password/i.test(d.log()),
			{ timeout: DOWN_TIMEOUT, what: 'a log line about the refused credentials' });
		const r = await fetch(`${d.url}/readyz`);
		assert.equal(r.status, 503);
		await stopClean(d);
	}
	assert.ok(!d.log().includes('definitely-wrong'), 'the MySQL password is in the log');
});
