// Subscriptions when a store misbehaves (503, and the index rebuilt from MySQL): Redis
// flushed, MySQL killed, Redis killed, Redis refusing writes. Each test has
// its own private server(s) so it can break them without touching anyone
// else, and its own MySQL database.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import WebSocket from 'ws';

import {
	makeConfig, startDaemon, waitReady, waitReadyz, waitFor, stop, signJwt, sanitizerReport,
	startRedis, startMariadb, freshDatabase, mysqlRoot, parseErrorBody, wsTrack, apiCall,
	subsIndexFromRedis, subsIndexFromMysql, stopClean,
} from './lib/harness.mjs';

const nowS = () => Math.floor(Date.now() / 1000);

function client(d, secret) {
	const tok = (sub) => signJwt({ sub, exp: nowS() + 600 }, secret);
	return {
		tok,
		put: (user, pid, body) => apiCall(d.url, 'PUT', `/api/me/subscriptions/${pid}`,
			{ token: tok(user), body }),
		del: (user, pid) => apiCall(d.url, 'DELETE', `/api/me/subscriptions/${pid}`,
			{ token: tok(user) }),
		list: (user) => apiCall(d.url, 'GET', '/api/me/subscriptions', { token: tok(user) }),
	};
}

function expectStatus(r, status) {
	assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${r.text}`);
	if (status >= 400) return parseErrorBody(r.text);
	return r.json;
}

async function insertProducts(sql, ids) {
	await sql('INSERT INTO products (id, sku, name, stock, low_stock_threshold) VALUES ' +
		ids.map((id) => `(${id}, 'SKU-${id}', 'Product ${id}', 10, 3)`).join(','));
}

// (user, product) as MySQL has it: { active, kinds, threshold } or null.
async function mysqlRow(sql, user, pid) {
	const out = (await sql('SELECT active, kinds, IFNULL(threshold, -1) FROM subscriptions ' +
		`WHERE user_id = '${user}' AND product_id = ${pid}`)).trim();
	if (!out) return null;
	const [active, kinds, threshold] = out.split('\t');
	return { active: Number(active), kinds, threshold: Number(threshold) };
}

// Everything Redis holds about (user, product).
async function redisEntry(redis, prefix, user, pid) {
	return {
		inUser: await redis.command(['SISMEMBER', `${prefix}user:${user}:subs`, pid]),
		score: await redis.command(['ZSCORE', `${prefix}product:${pid}:subs`, user]),
		hash: await redis.command(['HGETALL', `${prefix}sub:${user}:${pid}`]),
	};
}

async function assertNoRedisEntry(redis, prefix, user, pid, why) {
	const e = await redisEntry(redis, prefix, user, pid);
	assert.deepEqual(e, { inUser: 0, score: null, hash: [] }, `${why}: orphan in Redis`);
}

async function assertRedisActive(redis, prefix, user, pid, why) {
	const e = await redisEntry(redis, prefix, user, pid);
	assert.equal(e.inUser, 1, `${why}: ${pid} not in the user set`);
	assert.notEqual(e.score, null, `${why}: ${user} not in the product zset`);
}

// The whole index under prefix equals MySQL's active rows.
async function assertIndexMatches(redis, prefix, sql) {
	assert.deepEqual(await subsIndexFromRedis(redis.port, prefix), await subsIndexFromMysql(sql));
}

// A daemon on a Redis of its own (the test may kill it) and a fresh
// database: { redis, sql, prefix, d, c (client() of it) }.
async function daemonWithOwnRedis(t) {
	const redis = await startRedis({ t });
	const db = await freshDatabase(t);
	const sql = (q) => mysqlRoot(null, q, db);
	const cfg = await makeConfig({ mysql: { database: db } }, { redis });
	const d = startDaemon(cfg, { t });
	await waitReady(d);
	return { redis, sql, prefix: cfg.config.redis.prefix, d, c: client(d, cfg.secret) };
}

test('FLUSHALL: within 10 s the index is rebuilt from MySQL, identical to its active rows',
	async (t) => {
		const { redis, sql, prefix, d, c } = await daemonWithOwnRedis(t);
		// The first marker check (of an empty Redis) builds the index from
		// the empty table; let it happen before MySQL gets rows behind the
		// daemon's back.
		await waitFor(async () => await redis.command(['EXISTS', `${prefix}index:ready`]) === 1,
			{ timeout: 10000, what: 'the index marker after start' });
		await insertProducts(sql, [11, 12, 13, 14]);

		// Through the API: active ones, a deleted one, custom settings.
		for (const [user, pid] of [['ann', 11], ['ann', 12], ['bob', 12], ['bob', 13],
			['cy', 14]]) {
			expectStatus(await c.put(user, pid), 201);
		}
		expectStatus(await c.put('ann', 13, { kinds: ['sold_out'], threshold: 2 }), 201);
		expectStatus(await c.del('bob', 12), 204);
		expectStatus(await c.del('cy', 14), 204);
		// Straight into MySQL (as a restore from backup would): more rows
		// than one rebuild batch, with user ids that sort across batches,
		// plus inactive rows that must stay out of the index.
		const rows = [];
		for (let u = 0; u < 130; u++) {
			for (let p = 1; p <= 10; p++) {
				rows.push(`('bulk-${String(u).padStart(3, '0')}', ${100 + p}, ` +
					`'2024-01-02 03:04:05.${String(p).padStart(3, '0')}', ${p === 10 ? 0 : 1}, 7)`);
			}
		}
		await sql('INSERT INTO subscriptions (user_id, product_id, created_at, active, version) ' +
			`VALUES ${rows.join(',')}`);
		const before = await subsIndexFromRedis(redis.port, prefix);
		assert.equal(before.users['bulk-000'], undefined, 'bulk rows already indexed?');

		assert.equal(await redis.command(['FLUSHALL']), 'OK');
		const t0 = Date.now();
		const mysqlIdx = await subsIndexFromMysql(sql);
		assert.equal(Object.keys(mysqlIdx.users).length, 2 + 130, 'test setup');
		let last;
		try {
			await waitFor(async () => {
				last = await subsIndexFromRedis(redis.port, prefix);
				return isDeepStrictEqual(last, mysqlIdx) &&
					await redis.command(['EXISTS', `${prefix}index:ready`]) === 1;
			}, { timeout: 10000, interval: 100, what: 'the rebuilt index' });
		} catch (e) {
			assert.deepEqual(last, mysqlIdx, `${e.message}\n${d.log().slice(-2000)}`);
			throw e;
		}
		t.diagnostic(`index rebuilt ${Date.now() - t0} ms after FLUSHALL`);
		// The per-subscription settings came back too.
		const h = await redis.command(['HGETALL', `${prefix}sub:ann:13`]);
		const hash = Object.fromEntries(h.flatMap((v, i) => (i % 2 ? [] : [[v, h[i + 1]]])));
		assert.equal(hash.kinds, 'sold_out');
		assert.equal(hash.threshold, '2');
		assert.equal(hash.active, '1');
		const r = await waitReadyz(d, (st, b) => st === 200 && b && b.index === undefined,
			10000, 'readyz without "index"');
		assert.deepEqual(r.body, { redis: 'up', mysql: 'up' });

		// Writes after the rebuild still land in both stores.
		expectStatus(await c.put('bob', 12), 201);
		expectStatus(await c.del('ann', 11), 204);
		await assertIndexMatches(redis, prefix, sql);
		await stopClean(d);
	});

test('MySQL killed: PUT/DELETE 503, nothing orphaned in Redis; back on the same port: works',
	async (t) => {
		const mysql = await startMariadb({ t });
		const redis = await startRedis({ t });
		const sql = (q) => mysql.sql(q, mysql.database);
		const cfg = await makeConfig({}, { mysql, redis });
		const prefix = cfg.config.redis.prefix;
		const d = startDaemon(cfg, { t });
		await waitReady(d, 60000);
		const c = client(d, cfg.secret);
		await insertProducts(sql, [21, 22]);
		expectStatus(await c.put('dora', 21), 201);

		await mysql.stop();
		const p = await c.put('dora', 22);
		expectStatus(p, 503);
		expectStatus(await c.put('dora', 22, { kinds: ['low_stock'] }), 503);
		expectStatus(await c.del('dora', 21), 503);
		expectStatus(await c.list('dora'), 503);
		await assertNoRedisEntry(redis, prefix, 'dora', 22, 'PUT during the outage');
		// The refused DELETE did not remove it from the index either: MySQL
		// still says subscribed.
		await assertRedisActive(redis, prefix, 'dora', 21, 'DELETE during the outage');

		// The socket says so too, and stays open.
		const ws = wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${c.tok('dora')}`,
			{ handshakeTimeout: 10000 }));
		t.after(() => ws.ws.terminate());
		await ws.opened;
		await ws.next((m) => m.type === 'hello', 10000, 'hello');
		ws.send({ type: 'subscribe', product_id: 22 });
		const e = await ws.next((m) => m.type !== 'pong', 10000, 'an answer to subscribe');
		assert.equal(e.type, 'error', JSON.stringify(e));
		assert.equal(e.code, 'unavailable', JSON.stringify(e));
		await assertNoRedisEntry(redis, prefix, 'dora', 22, 'WS subscribe during the outage');

		const rz = await waitReadyz(d, (st, b) => st === 503 && b && b.mysql === 'down', 15000,
			'readyz reporting mysql down');
		assert.equal(rz.body.redis, 'up');

		await mysql.start();
		await waitReady(d, 60000);
		assert.ok(d.running, 'the daemon died');
		expectStatus(await c.put('dora', 22), 201);
		expectStatus(await c.del('dora', 21), 204);
		assert.deepEqual((await mysqlRow(sql, 'dora', 21)).active, 0);
		await assertIndexMatches(redis, prefix, sql);
		ws.send({ type: 'subscribe', product_id: 21 });
		assert.deepEqual(await ws.next((m) => m.type !== 'pong', 10000, 'subscribed'),
			{ type: 'subscribed', product_id: 21 });
		await assertIndexMatches(redis, prefix, sql);
		ws.ws.terminate();
		await stopClean(d);
	});

test('Redis killed: PUT/DELETE 503, nothing left active in MySQL; back: index rebuilt, works',
	async (t) => {
		const { redis, sql, prefix, d, c } = await daemonWithOwnRedis(t);
		await insertProducts(sql, [31, 32]);
		expectStatus(await c.put('eve', 31, { kinds: ['back_in_stock'] }), 201);

		await redis.stop();
		expectStatus(await c.put('eve', 32), 503);
		expectStatus(await c.del('eve', 31), 503);
		expectStatus(await c.put('eve', 31, { kinds: ['sold_out'], threshold: 1 }), 503);
		const r32 = await mysqlRow(sql, 'eve', 32);
		assert.ok(r32 === null || r32.active === 0, `row left active: ${JSON.stringify(r32)}`);
		assert.deepEqual(await mysqlRow(sql, 'eve', 31),
			{ active: 1, kinds: 'back_in_stock', threshold: -1 }, 'refused writes changed MySQL');
		const l = await c.list('eve');
		expectStatus(l, 200);
		assert.deepEqual(l.json.subscriptions.map((s) => s.product_id), [31]);
		await waitReadyz(d, (st, b) => st === 503 && b && b.redis === 'down', 15000,
			'readyz reporting redis down');

		// A new, empty Redis on the same port: the daemon reconnects and
		// rebuilds the index from MySQL, without a restart.
		await redis.start();
		await waitReady(d);
		await waitFor(async () => await redis.command(['SISMEMBER', `${prefix}user:eve:subs`, 31])
			=== 1, { timeout: 10000, what: 'eve/31 back in the index' });
		assert.ok(d.running);
		expectStatus(await c.put('eve', 32), 201);
		expectStatus(await c.del('eve', 31), 204);
		await assertIndexMatches(redis, prefix, sql);
		await stopClean(d);
	});

test('Redis refusing writes (NOREPLICAS): the MySQL change is undone, 503', async (t) => {
	const { redis, sql, prefix, d, c } = await daemonWithOwnRedis(t);
	await insertProducts(sql, [41, 42]);
	expectStatus(await c.put('fay', 41, { kinds: ['low_stock'], threshold: 5 }), 201);

	// A master that lost its replicas: reads and PING work, writes fail.
	// The daemon's connection stays up, so only the write path sees it.
	assert.equal(await redis.command(['CONFIG', 'SET', 'min-replicas-to-write', '1']), 'OK');
	expectStatus(await c.put('fay', 42), 503);
	const r42 = await mysqlRow(sql, 'fay', 42);
	assert.ok(r42 === null || r42.active === 0, `row left active: ${JSON.stringify(r42)}`);
	await assertNoRedisEntry(redis, prefix, 'fay', 42, 'refused PUT');

	expectStatus(await c.del('fay', 41), 503);
	assert.deepEqual(await mysqlRow(sql, 'fay', 41), { active: 1, kinds: 'low_stock', threshold: 5 },
		'refused DELETE was not undone in MySQL');
	expectStatus(await c.put('fay', 41, { kinds: ['sold_out'] }), 503);
	assert.deepEqual(await mysqlRow(sql, 'fay', 41), { active: 1, kinds: 'low_stock', threshold: 5 },
		'refused update was not undone in MySQL');
	await assertRedisActive(redis, prefix, 'fay', 41, 'refused writes');
	const l = await c.list('fay');
	expectStatus(l, 200);
	assert.deepEqual(l.json.subscriptions.map((s) => [s.product_id, s.kinds, s.threshold]),
		[[41, ['low_stock'], 5]]);

	assert.equal(await redis.command(['CONFIG', 'SET', 'min-replicas-to-write', '0']), 'OK');
	expectStatus(await c.put('fay', 42), 201);
	expectStatus(await c.put('fay', 41, { kinds: ['sold_out'] }), 200);
	expectStatus(await c.del('fay', 42), 204);
	await assertIndexMatches(redis, prefix, sql);
	const h = await redis.command(['HGET', `${prefix}sub:fay:41`, 'kinds']);
	assert.equal(h, 'sold_out');
	await stopClean(d);
});
