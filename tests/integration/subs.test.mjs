// Subscriptions (REST, WebSocket, the Redis index) against the fixture's Redis and a fresh
// MySQL database: REST and WebSocket subscribe/list/unsubscribe checked in
// both stores, every validation error, the per-user limit, the product
// endpoint, and 200 concurrent writes through two instances.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

import {
	makeConfig, startDaemon, waitReady, stop, signJwt, sanitizerReport, redisCommand,
	rawRequest, parseErrorBody, wsTrack, mysqlRoot, randomId, apiCall, subsIndexFromRedis,
	subsIndexFromMysql, stopClean,
} from './lib/harness.mjs';

const nowS = () => Math.floor(Date.now() / 1000);
const ALL_KINDS = ['back_in_stock', 'low_stock', 'sold_out'];
const REDIS_PORT = Number(process.env.SA_TEST_REDIS_PORT || 6379);

// Products this file inserts; NO_PRODUCT is never inserted.
const P = [1001, 1002, 1003, 1004, 1005, 1006];
const NO_PRODUCT = 999999;

let db;
const sql = (q) => mysqlRoot(null, q, db);

// The MySQL row of (user, product), or null.
async function row(user, pid) {
	const out = await sql('SELECT active, version, kinds, IFNULL(threshold, -1), ' +
		'CAST(UNIX_TIMESTAMP(created_at) * 1000 AS UNSIGNED) FROM subscriptions ' +
		`WHERE user_id = '${user}' AND product_id = ${pid}`);
	if (!out.trim()) return null;
	const [active, version, kinds, threshold, created] = out.trim().split('\t');
	return { active: Number(active), version: Number(version), kinds,
		threshold: Number(threshold), created: Number(created) };
}

// What Redis says about (user, product).
async function redisSub(prefix, user, pid) {
	const inUser = await redisCommand(REDIS_PORT, ['SISMEMBER', `${prefix}user:${user}:subs`, pid]);
	const score = await redisCommand(REDIS_PORT, ['ZSCORE', `${prefix}product:${pid}:subs`, user]);
	const flat = await redisCommand(REDIS_PORT, ['HGETALL', `${prefix}sub:${user}:${pid}`]);
	const hash = {};
	for (let i = 0; i < flat.length; i += 2) hash[flat[i]] = flat[i + 1];
	return { inUser: inUser === 1, score: score === null ? null : Number(score), hash };
}

// Asserts both stores hold an active subscription created at createdMs.
async function assertActive(prefix, user, pid, createdMs, { kinds = ALL_KINDS.join(','),
	threshold = -1 } = {}) {
	const r = await row(user, pid);
	assert.ok(r, `no MySQL row for ${user}/${pid}`);
	assert.equal(r.active, 1, `MySQL row ${user}/${pid} not active`);
	assert.equal(r.kinds, kinds);
	assert.equal(r.threshold, threshold);
	assert.ok(Math.abs(r.created - createdMs) <= 1, `MySQL created ${r.created} vs ${createdMs}`);
	const s = await redisSub(prefix, user, pid);
	assert.ok(s.inUser, `${pid} missing from ${prefix}user:${user}:subs`);
	assert.ok(s.score !== null, `${user} missing from ${prefix}product:${pid}:subs`);
	assert.ok(Math.abs(s.score - createdMs) <= 1, `zset score ${s.score} vs created ${createdMs}`);
	assert.equal(s.hash.active, '1', `hash ${JSON.stringify(s.hash)}`);
	assert.equal(s.hash.kinds, kinds);
	assert.equal(s.hash.threshold, threshold < 0 ? '' : String(threshold));
	assert.equal(Number(s.hash.v), r.version, 'Redis version differs from MySQL');
	return r;
}

// Asserts neither store has (user, product) active.
async function assertInactive(prefix, user, pid, { rowExists = true } = {}) {
	const r = await row(user, pid);
	if (rowExists) {
		assert.ok(r, `no MySQL row for ${user}/${pid}`);
		assert.equal(r.active, 0, `MySQL row ${user}/${pid} still active`);
	} else {
		assert.equal(r, null, `unexpected MySQL row for ${user}/${pid}: ${JSON.stringify(r)}`);
	}
	const s = await redisSub(prefix, user, pid);
	assert.equal(s.inUser, false, `${pid} still in ${prefix}user:${user}:subs`);
	assert.equal(s.score, null, `${user} still in ${prefix}product:${pid}:subs`);
	if (rowExists) {
		assert.equal(s.hash.active, '0', `hash ${JSON.stringify(s.hash)}`);
		assert.equal(Number(s.hash.v), r.version, 'Redis version differs from MySQL');
	} else {
		assert.deepEqual(s.hash, {}, 'hash left for a subscription that never was');
	}
}

function assertError(res, status, fieldRe) {
	assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
	const j = parseErrorBody(res.text);
	if (fieldRe) assert.match(j.error.message, fieldRe);
	return j;
}

function assertEntry(e, pid, kinds, threshold) {
	assert.deepEqual(Object.keys(e).sort(), ['created_at', 'kinds', 'product_id', 'threshold']);
	assert.equal(e.product_id, pid);
	assert.deepEqual(e.kinds, kinds);
	assert.equal(e.threshold, threshold);
	assert.match(e.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
	const ms = Date.parse(e.created_at);
	assert.ok(Math.abs(ms - Date.now()) < 60000, `created_at ${e.created_at} is not now`);
	return ms;
}

describe('subscriptions', () => {
	let cfg;
	let d;
	let prefix;
	const tok = (sub) => signJwt({ sub, exp: nowS() + 600 }, cfg.secret);
	const call = (user, method, p, opts = {}) =>
		apiCall(d.url, method, p, { token: user === null ? undefined : tok(user), ...opts });
	const sub = (user, pid, body) => call(user, 'PUT', `/api/me/subscriptions/${pid}`, { body });
	const unsub = (user, pid) => call(user, 'DELETE', `/api/me/subscriptions/${pid}`);
	const list = async (user) => {
		const r = await call(user, 'GET', '/api/me/subscriptions');
		assert.equal(r.status, 200, r.text);
		assert.ok(Array.isArray(r.json.subscriptions), r.text);
		return r.json.subscriptions;
	};

	before(async () => {
		db = `stockalert_t${randomId(6)}`;
		await mysqlRoot(null, `CREATE DATABASE \`${db}\` CHARACTER SET utf8mb4`);
		cfg = await makeConfig({ mysql: { database: db }, subscriptions: { max_per_user: 3 } });
		prefix = cfg.config.redis.prefix;
		d = startDaemon(cfg);
		await waitReady(d);
		// The daemon applied the schema before it became ready.
		const values = P.map((id) => `(${id}, 'SKU-${id}', 'Product ${id}', ${id % 7}, 2, ` +
			"'2024-05-06 07:08:09.123')").join(',');
		await sql(`INSERT INTO products (id, sku, name, stock, low_stock_threshold, updated_at)
			VALUES ${values}`);
	});
	after(async () => {
		if (d) await stopClean(d);
		await mysqlRoot(null, `DROP DATABASE IF EXISTS \`${db}\``).catch(() => {});
	});

	test('GET /api/products/{id}: the catalog row; 404; 400; 401', async () => {
		const r = await call('viewer', 'GET', '/api/products/1004');
		assert.equal(r.status, 200, r.text);
		const ms = Number((await sql(
			'SELECT CAST(UNIX_TIMESTAMP(updated_at) * 1000 AS UNSIGNED) FROM products WHERE id = 1004'
		)).trim());
		assert.deepEqual(r.json, { id: 1004, sku: 'SKU-1004', name: 'Product 1004', stock: 3,
			low_stock_threshold: 2, updated_at: new Date(ms).toISOString() });
		assertError(await call('viewer', 'GET', `/api/products/${NO_PRODUCT}`), 404);
		for (const bad of ['abc', '0', '-3', '01', '1.5']) {
			assertError(await call('viewer', 'GET', `/api/products/${bad}`), 400, /product_id/);
		}
		const n = await call(null, 'GET', '/api/products/1004');
		assertError(n, 401);
		assert.match(n.headers['www-authenticate'] || '', /^Bearer\b/);
	});

	test('REST: subscribe, list, unsubscribe — both stores follow', async () => {
		const user = 'rest-user';
		assert.deepEqual(await list(user), []);

		const put = await sub(user, 1001);
		assert.equal(put.status, 201, put.text);
		const created = assertEntry(put.json, 1001, ALL_KINDS, null);
		await assertActive(prefix, user, 1001, created);

		const put2 = await sub(user, 1002);
		assert.equal(put2.status, 201, put2.text);
		const created2 = assertEntry(put2.json, 1002, ALL_KINDS, null);

		const l = await list(user);
		assert.deepEqual(l.map((e) => e.product_id).sort(), [1001, 1002]);
		assert.deepEqual(l.find((e) => e.product_id === 1001), put.json);
		assert.deepEqual(l.find((e) => e.product_id === 1002), put2.json);

		const del = await unsub(user, 1001);
		assert.equal(del.status, 204, del.text);
		assert.equal(del.text, '');
		await assertInactive(prefix, user, 1001);
		await assertActive(prefix, user, 1002, created2);
		assert.deepEqual((await list(user)).map((e) => e.product_id), [1002]);
		// Another user's view is not affected.
		assert.deepEqual(await list('someone-else'), []);
	});

	test('WebSocket: subscribe / unsubscribe frames — both stores follow', async (t) => {
		const user = 'ws-user';
		const c = wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${tok(user)}`,
			{ handshakeTimeout: 10000 }));
		t.after(() => c.ws.terminate());
		await c.opened;
		await c.next((m) => m.type === 'hello', 10000, 'hello');

		c.send({ type: 'subscribe', product_id: 1003 });
		assert.deepEqual(await c.next((m) => m.type !== 'pong', 10000, 'subscribed'),
			{ type: 'subscribed', product_id: 1003 });
		const l = await list(user);
		assert.equal(l.length, 1);
		assertEntry(l[0], 1003, ALL_KINDS, null);
		await assertActive(prefix, user, 1003, Date.parse(l[0].created_at));

		c.send({ type: 'subscribe', product_id: NO_PRODUCT });
		const e = await c.next((m) => m.type !== 'pong', 10000, 'error for unknown product');
		assert.equal(e.type, 'error', JSON.stringify(e));
		assert.equal(e.code, 'not_found', JSON.stringify(e));
		await assertInactive(prefix, user, NO_PRODUCT, { rowExists: false });

		c.send({ type: 'unsubscribe', product_id: 1003 });
		assert.deepEqual(await c.next((m) => m.type !== 'pong', 10000, 'unsubscribed'),
			{ type: 'unsubscribed', product_id: 1003 });
		await assertInactive(prefix, user, 1003);
		assert.deepEqual(await list(user), []);

		c.send({ type: 'subscribe', product_id: 'abc' });
		const bad = await c.next((m) => m.type !== 'pong', 10000, 'error for a bad product_id');
		assert.equal(bad.type, 'error', JSON.stringify(bad));
		assert.match(bad.message || '', /product_id/);
		// The socket survives all of that.
		c.send({ type: 'ping' });
		await c.next((m) => m.type === 'pong', 10000, 'pong');
	});

	test('kinds and threshold round trip; PUT twice 201 then 200; DELETE twice 204 then 404',
		async () => {
			const user = 'kinds-user';
			const a = await sub(user, 1004, { kinds: ['sold_out', 'low_stock'], threshold: 4 });
			assert.equal(a.status, 201, a.text);
			const created = assertEntry(a.json, 1004, ['low_stock', 'sold_out'], 4);
			const r1 = await assertActive(prefix, user, 1004, created,
				{ kinds: 'low_stock,sold_out', threshold: 4 });
			assert.deepEqual(await list(user), [a.json]);

			// Same subscription again, new settings: 200, and it keeps its
			// place in the queue (created_at).
			const b = await sub(user, 1004, { kinds: ['back_in_stock'], threshold: 0 });
			assert.equal(b.status, 200, b.text);
			assert.deepEqual(b.json, { ...a.json, kinds: ['back_in_stock'], threshold: 0 });
			const r2 = await assertActive(prefix, user, 1004, created,
				{ kinds: 'back_in_stock', threshold: 0 });
			assert.ok(r2.version > r1.version, 'version did not grow');

			// Identical PUT: still 200, nothing else changes.
			const b2 = await sub(user, 1004, { kinds: ['back_in_stock'], threshold: 0 });
			assert.equal(b2.status, 200, b2.text);
			assert.deepEqual(b2.json, b.json);

			// No body: the defaults again.
			const c = await sub(user, 1004);
			assert.equal(c.status, 200, c.text);
			assert.deepEqual(c.json, { ...a.json, kinds: ALL_KINDS, threshold: null });
			await assertActive(prefix, user, 1004, created);
			const cNull = await sub(user, 1004, { threshold: null });
			assert.equal(cNull.status, 200, cNull.text);
			assert.equal(cNull.json.threshold, null);

			const d1 = await unsub(user, 1004);
			assert.equal(d1.status, 204, d1.text);
			assertError(await unsub(user, 1004), 404);
			await assertInactive(prefix, user, 1004);
			// Never subscribed at all: 404 too, and nothing is written.
			assertError(await unsub(user, 1005), 404);
			await assertInactive(prefix, user, 1005, { rowExists: false });

			// Subscribing again is a new subscription with a new time.
			const e = await sub(user, 1004);
			assert.equal(e.status, 201, e.text);
			const created2 = assertEntry(e.json, 1004, ALL_KINDS, null);
			assert.ok(created2 >= created, 'resubscription kept the old time');
			await assertActive(prefix, user, 1004, created2);
		});

	test('validation errors: status and the field named; nothing written', async () => {
		const user = 'bad-user';
		const cases = [
			[{ kinds: ['restocked'] }, /kinds\[0\]/],
			[{ kinds: ['low_stock', 7] }, /kinds\[1\]/],
			[{ kinds: [] }, /kinds/],
			[{ kinds: 'low_stock' }, /kinds/],
			[{ threshold: -1 }, /threshold/],
			[{ threshold: 2.5 }, /threshold/],
			[{ threshold: '3' }, /threshold/],
			[{ colour: 'red' }, /colour/],
			['{"kinds":["low_stock"]', /body: invalid JSON/],
			['kinds=low_stock', /body: invalid JSON/],
			['[1,2]', /body/],
		];
		for (const [body, re] of cases) {
			const r = await sub(user, 1001, body);
			const j = assertError(r, 400, re);
			assert.equal(j.error.code, 'bad_request', r.text);
		}
		for (const bad of ['abc', '0', '-1', '007', '1e3', '9223372036854775808']) {
			assertError(await sub(user, bad), 400, /product_id/);
			assertError(await call(user, 'DELETE', `/api/me/subscriptions/${bad}`), 400,
				/product_id/);
		}
		assertError(await sub(user, NO_PRODUCT), 404);
		assert.equal((await sql(`SELECT COUNT(*) FROM subscriptions WHERE user_id = '${user}'`))
			.trim(), '0', 'a refused request left a row');
		assert.deepEqual(await redisCommand(REDIS_PORT, ['EXISTS', `${prefix}user:${user}:subs`]),
			0);
	});

	test('401 without or with a bad token, with WWW-Authenticate: Bearer', async () => {
		const forged = signJwt({ sub: 'x', exp: nowS() + 600 }, 'not-the-secret');
		for (const [method, p] of [['GET', '/api/me/subscriptions'],
			['PUT', '/api/me/subscriptions/1001'], ['DELETE', '/api/me/subscriptions/1001']]) {
			const a = await apiCall(d.url, method, p);
			assertError(a, 401);
			assert.match(a.headers['www-authenticate'] || '', /^Bearer\b/, `${method} ${p}`);
			const b = await apiCall(d.url, method, p, { token: forged });
			assertError(b, 401);
			assert.match(b.headers['www-authenticate'] || '', /^Bearer\b/, `${method} ${p}`);
		}
	});

	test('405 with Allow; 411 for chunked bodies; 413 over 64 KiB, 64 KiB accepted',
		async () => {
			const user = 'http-user';
			for (const [method, p] of [['POST', '/api/me/subscriptions/1001'],
				['GET', '/api/me/subscriptions/1001'], ['PATCH', '/api/me/subscriptions/1001'],
				['PUT', '/api/me/subscriptions']]) {
				const r = await call(user, method, p);
				assertError(r, 405);
				assert.ok(r.headers.allow, `${method} ${p}: no Allow header`);
				const allowed = r.headers.allow.split(',').map((s) => s.trim());
				if (p.endsWith('/1001')) {
					assert.ok(allowed.includes('PUT') && allowed.includes('DELETE'),
						`Allow: ${r.headers.allow}`);
					assert.ok(!allowed.includes(method), `Allow: ${r.headers.allow}`);
				} else {
					assert.ok(allowed.includes('GET'), `Allow: ${r.headers.allow}`);
				}
			}

			const auth = `Authorization: Bearer ${tok(user)}\r\n`;
			const chunkBody = '{"kinds":["low_stock"]}';
			const ch = await rawRequest(d.port,
				`PUT /api/me/subscriptions/1001 HTTP/1.1\r\nHost: x\r\n${auth}` +
				'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n',
				`${chunkBody.length.toString(16)}\r\n${chunkBody}\r\n0\r\n\r\n`);
			assert.equal(ch.status, 411, ch.raw.toString());
			parseErrorBody(ch.body);

			const json = '{"kinds":["low_stock"]}';
			const exact = json + ' '.repeat(64 * 1024 - json.length);
			const ok = await rawRequest(d.port,
				`PUT /api/me/subscriptions/1001 HTTP/1.1\r\nHost: x\r\n${auth}` +
				`Content-Type: application/json\r\nContent-Length: ${exact.length}\r\n`, exact);
			assert.equal(ok.status, 201, ok.body);
			assert.deepEqual(JSON.parse(ok.body).kinds, ['low_stock']);

			const over = exact + ' ';
			const big = await rawRequest(d.port,
				`PUT /api/me/subscriptions/1002 HTTP/1.1\r\nHost: x\r\n${auth}` +
				`Content-Type: application/json\r\nContent-Length: ${over.length}\r\n`, over);
			assert.equal(big.status, 413, big.raw.toString().slice(0, 500));
			parseErrorBody(big.body);
			await assertInactive(prefix, user, 1002, { rowExists: false });
		});

	test('max_per_user = 3: the 4th is 409, re-PUT of one held is 200', async (t) => {
		const user = 'max-user';
		for (const pid of [1001, 1002, 1003]) {
			const r = await sub(user, pid);
			assert.equal(r.status, 201, r.text);
		}
		const over = await sub(user, 1004);
		const j = assertError(over, 409);
		assert.match(j.error.message, /max_per_user/);
		await assertInactive(prefix, user, 1004, { rowExists: false });
		assert.equal((await sub(user, 1002, { threshold: 1 })).status, 200);
		assert.equal((await sub(user, 1003)).status, 200);
		// Unknown product at the limit is still 404, not 409.
		assertError(await sub(user, NO_PRODUCT), 404);

		// The socket says the same.
		const c = wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${tok(user)}`,
			{ handshakeTimeout: 10000 }));
		t.after(() => c.ws.terminate());
		await c.opened;
		await c.next((m) => m.type === 'hello', 10000, 'hello');
		c.send({ type: 'subscribe', product_id: 1005 });
		const e = await c.next((m) => m.type !== 'pong', 10000, 'limit error');
		assert.equal(e.type, 'error', JSON.stringify(e));
		assert.equal(e.code, 'limit_reached', JSON.stringify(e));

		// Freeing a slot lets the next one in.
		assert.equal((await unsub(user, 1001)).status, 204);
		assert.equal((await sub(user, 1004)).status, 201);
		assertError(await sub(user, 1005), 409);
		assert.deepEqual((await list(user)).map((x) => x.product_id).sort(), [1002, 1003, 1004]);
		assert.deepEqual((await redisCommand(REDIS_PORT, ['SMEMBERS',
			`${prefix}user:${user}:subs`])).sort(), ['1002', '1003', '1004']);
	});

	test('max_per_user holds against concurrent PUTs through two instances', async (t) => {
		const shared = { mysql: { database: db },
			subscriptions: { max_per_user: 3, max_inflight_per_user: 1000 },
			redis: { prefix }, auth: { secret_file: cfg.secretFile } };
		const d1 = startDaemon(await makeConfig(shared), { t });
		const d2 = startDaemon(await makeConfig(shared), { t });
		await Promise.all([waitReady(d1), waitReady(d2)]);
		const user = 'limit-race-user';
		const token = tok(user);
		// Each of the 6 products twice, on both instances, all at once.
		const ops = [];
		for (let i = 0; i < 24; i++) {
			const pid = P[i % P.length];
			ops.push(apiCall([d1, d2][i % 2].url, 'PUT', `/api/me/subscriptions/${pid}`,
				{ token, timeout: 60000 }).then((r) => ({ pid, r })));
		}
		const results = await Promise.all(ops);
		const bad = results.filter(({ r }) => ![200, 201, 409].includes(r.status));
		assert.deepEqual(bad.map(({ pid, r }) => `PUT ${pid}: ${r.status} ${r.text}`), [],
			'unexpected statuses');
		const created = results.filter(({ r }) => r.status === 201).map(({ pid }) => pid);
		const active = (await sql('SELECT product_id FROM subscriptions WHERE ' +
			`user_id = '${user}' AND active = 1 ORDER BY product_id`)).trim().split('\n')
			.filter(Boolean).map(Number);
		assert.equal(active.length, 3, `max_per_user 3, MySQL has ${active.join(',')} active`);
		assert.deepEqual([...new Set(created)].sort(), active, 'the 201s are not what MySQL holds');
		for (const { pid, r } of results) {
			if (r.status === 409) assert.ok(!active.includes(pid), `${pid}: 409 but active`);
		}
		assert.deepEqual((await redisCommand(REDIS_PORT, ['SMEMBERS',
			`${prefix}user:${user}:subs`])).map(Number).sort(), active);
		await Promise.all([stopClean(d1), stopClean(d2)]);
	});

	test('concurrent identical PUTs through two instances: one 201, the rest 200', async (t) => {
		// 18 PUTs a round per instance for one user: over the default
		// subscriptions.max_inflight_per_user, which this test is not about.
		const shared = { mysql: { database: db }, redis: { prefix },
			subscriptions: { max_inflight_per_user: 1000 },
			auth: { secret_file: cfg.secretFile } };
		const d1 = startDaemon(await makeConfig(shared), { t });
		const d2 = startDaemon(await makeConfig(shared), { t });
		await Promise.all([waitReady(d1), waitReady(d2)]);
		// Several rounds, each a new user and all products at once, so a
		// race in telling "created" from "updated" shows.
		const report = [];
		for (let round = 0; round < 5; round++) {
			const token = tok(`twin-user-${round}`);
			const results = await Promise.all(P.flatMap((pid) => Array.from({ length: 6 },
				(_, i) => apiCall([d1, d2][i % 2].url, 'PUT', `/api/me/subscriptions/${pid}`,
					{ token, timeout: 60000 }).then((r) => ({ pid, r })))));
			for (const pid of P) {
				const mine = results.filter((x) => x.pid === pid);
				const statuses = mine.map(({ r }) => r.status).sort().join(',');
				if (statuses !== '200,200,200,200,200,201') {
					report.push(`round ${round} product ${pid}: ${statuses}`);
				}
				// Whatever the statuses, they all describe the one subscription.
				assert.equal(new Set(mine.map(({ r }) => r.json && r.json.created_at)).size, 1);
			}
		}
		assert.deepEqual(report, [], 'a subscription was "created" more than once');
		await Promise.all([stopClean(d1), stopClean(d2)]);
	});

	test('200 concurrent PUT/DELETE for one user through two instances: Redis = MySQL',
		async (t) => {
			// Two more instances sharing Redis (same prefix), MySQL and the
			// secret, with room for every product under max_per_user, and
			// for 100 changes of the one user under way on each.
			const shared = { mysql: { database: db },
				subscriptions: { max_per_user: 200, max_inflight_per_user: 1000 },
				redis: { prefix }, auth: { secret_file: cfg.secretFile } };
			const d1 = startDaemon(await makeConfig(shared), { t });
			const d2 = startDaemon(await makeConfig(shared), { t });
			await Promise.all([waitReady(d1), waitReady(d2)]);
			const user = 'race-user';
			const token = tok(user);
			const pids = P.slice(0, 5);
			let seed = 12345;
			const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed; };
			const ops = [];
			for (let i = 0; i < 200; i++) {
				const pid = pids[rnd() % pids.length];
				const method = rnd() % 2 ? 'PUT' : 'DELETE';
				const url = i % 2 ? d2.url : d1.url;
				ops.push(apiCall(url, method, `/api/me/subscriptions/${pid}`,
					{ token, timeout: 60000 }).then((r) => ({ method, pid, r })));
			}
			const results = await Promise.all(ops);
			const bad = results.filter(({ method, r }) => !(method === 'PUT'
				? [200, 201].includes(r.status) : [204, 404].includes(r.status)));
			assert.deepEqual(bad.map(({ method, pid, r }) => `${method} ${pid}: ${r.status} ${r.text}`),
				[], 'unexpected statuses');

			const mysqlIdx = await subsIndexFromMysql(sql);
			const redisIdx = await subsIndexFromRedis(REDIS_PORT, prefix);
			assert.deepEqual(redisIdx.users[user] || [], mysqlIdx.users[user] || [],
				'user set differs from MySQL');
			for (const pid of pids) {
				const m = (mysqlIdx.products[pid] || {})[user];
				const r = (redisIdx.products[pid] || {})[user];
				assert.equal(r, m, `product ${pid}: Redis score ${r}, MySQL created ${m}`);
				const mr = await row(user, pid);
				const rs = await redisSub(prefix, user, pid);
				if (!mr) {
					assert.deepEqual(rs.hash, {}, `product ${pid}: hash without a row`);
					continue;
				}
				assert.equal(Number(rs.hash.v), mr.version, `product ${pid}: versions differ`);
				assert.equal(rs.hash.active, String(mr.active), `product ${pid}: active differs`);
			}
			// The API agrees with both.
			assert.deepEqual((await list(user)).map((e) => String(e.product_id)).sort(),
				mysqlIdx.users[user] || []);
			await Promise.all([stopClean(d1), stopClean(d2)]);
		});
});
