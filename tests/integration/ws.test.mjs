// The WebSocket endpoint /ws (README.md, WebSocket protocol): authentication before the
// upgrade (HS256, RS256, ES256, iss/aud, origin), the hello/ping/refresh
// protocol, token expiry, bad frames, per-user and global connection limits,
// presence in Redis.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';

import {
	makeConfig, startDaemon, waitReady, waitFor, stop, gentoken, signJwt, sanitizerReport,
	runDaemonCli, redisCommand, rawRequest, parseErrorBody, wsTrack, metricValue, randomId, tmpDir,
	stopClean,
} from './lib/harness.mjs';

const nowS = () => Math.floor(Date.now() / 1000);

function b64json(o) {
	return Buffer.from(JSON.stringify(o)).toString('base64url');
}

// Signs a JWT with an asymmetric key: RS256 (PKCS#1 v1.5) or ES256 (raw r||s).
function signAsym(alg, payload, privateKey) {
	const data = `${b64json({ alg, typ: 'JWT' })}.${b64json(payload)}`;
	const sig = alg === 'ES256'
		? crypto.sign('sha256', Buffer.from(data), { key: privateKey, dsaEncoding: 'ieee-p1363' })
		: crypto.sign('sha256', Buffer.from(data), privateKey);
	return `${data}.${sig.toString('base64url')}`;
}

// Every client a test opens is terminated when the test ends.
function clients(t) {
	const list = [];
	t.after(() => { for (const c of list) c.ws.terminate(); });
	return (d, token, { via = 'query', path: p = '/ws', headers = {}, origin } = {}) => {
		const url = token !== undefined && via === 'query'
			? `${d.wsUrl}${p}?token=${encodeURIComponent(token)}` : `${d.wsUrl}${p}`;
		const h = token !== undefined && via === 'header'
			? { Authorization: `Bearer ${token}` } : {};
		const opts = { headers: { ...h, ...headers }, handshakeTimeout: 10000 };
		if (origin) opts.origin = origin;
		const c = wsTrack(new WebSocket(url, opts));
		list.push(c);
		return c;
	};
}

async function hello(c) {
	await c.opened;
	return c.next((m) => m.type === 'hello', 10000, 'hello');
}

// The upgrade must be refused with an HTTP status: returns { status, headers, body }.
async function refusal(c) {
	try {
		await c.opened;
	} catch (e) {
		if (e.status) return e;
		throw e;
	}
	throw new Error('upgrade was accepted');
}

async function expect401(c) {
	const e = await refusal(c);
	assert.equal(e.status, 401, `status ${e.status}: ${e.body}`);
	assert.match(e.headers['www-authenticate'] || '', /^Bearer\b/);
	parseErrorBody(e.body);
	return e;
}

async function pingPong(c) {
	c.send({ type: 'ping' });
	await c.next((m) => m.type === 'pong', 10000, 'pong');
}

describe('/ws with HS256', () => {
	let cfg;
	let d;
	const tok = (sub, extra = {}, ttl = 300) => signJwt({ sub, exp: nowS() + ttl, ...extra },
		cfg.secret);

	before(async () => {
		cfg = await makeConfig({
			allowed_origins: ['https://app.example.test'],
			auth: { leeway_s: 0 },
			ws: { max_message_bytes: 1024, max_connections_per_user: 3 },
		});
		d = startDaemon(cfg);
		await waitReady(d);
	});
	after(() => stopClean(d));

	test('token in the query: hello with the user id, then ping → pong', async (t) => {
		const open = clients(t);
		const c = open(d, tok('alice'));
		const h = await hello(c);
		assert.equal(h.user_id, 'alice');
		assert.equal(typeof h.conn_id, 'string');
		assert.ok(h.conn_id.length > 0);
		assert.equal(h.heartbeat_s, 25);
		assert.ok(Math.abs(h.server_time - Date.now()) < 5000, `server_time ${h.server_time}`);
		assert.equal(c.messages[0].type, 'hello', 'hello is not the first frame');
		await pingPong(c);
	});

	test('token in the Authorization header; conn_ids differ', async (t) => {
		const open = clients(t);
		const a = await hello(open(d, tok('bob'), { via: 'header' }));
		assert.equal(a.user_id, 'bob');
		const b = open(d, tok('bob'), { via: 'header' });
		const hb = await hello(b);
		assert.notEqual(hb.conn_id, a.conn_id);
		await pingPong(b);
	});

	test('a token from `stockalertd gentoken` is accepted', async (t) => {
		const open = clients(t);
		const h = await hello(open(d, await gentoken(cfg.path, 'gen-user')));
		assert.equal(h.user_id, 'gen-user');
	});

	test('missing token → 401', async (t) => {
		await expect401(clients(t)(d, undefined));
	});

	test('bad signature → 401', async (t) => {
		const open = clients(t);
		const good = tok('mallory');
		const [h, p, s] = good.split('.');
		const flipped = (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
		await expect401(open(d, `${h}.${p}.${flipped}`));
		await expect401(open(d, signJwt({ sub: 'mallory', exp: nowS() + 300 },
			crypto.randomBytes(48).toString('base64'))));
	});

	test('expired token and not-yet-valid token → 401', async (t) => {
		const open = clients(t);
		await expect401(open(d, tok('late', {}, -5)));
		await expect401(open(d, tok('early', { nbf: nowS() + 120 })));
	});

	test('a token is expired from its exp second on (RFC 7519 §4.1.4, leeway 0) → 401',
		async (t) => {
			const open = clients(t);
			// Signed for "now": by the time it is verified, now >= exp.
			await expect401(open(d, signJwt({ sub: 'edge', exp: nowS() }, cfg.secret)));
		});

	test('alg "none" token → 401', async (t) => {
		const open = clients(t);
		const p = b64json({ sub: 'mallory', exp: nowS() + 300 });
		await expect401(open(d, `${b64json({ alg: 'none', typ: 'JWT' })}.${p}.`));
		await expect401(open(d, `${b64json({ alg: 'none' })}.${p}`));
		await expect401(open(d, `${b64json({ alg: 'NONE', typ: 'JWT' })}.${p}.`));
	});

	test('a token whose header says RS256 → 401 on an HS256 daemon', async (t) => {
		const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
		await expect401(clients(t)(d, signAsym('RS256', { sub: 'x', exp: nowS() + 300 },
			privateKey)));
	});

	test('malformed tokens and bad sub → 401', async (t) => {
		const open = clients(t);
		await expect401(open(d, 'not-a-jwt'));
		await expect401(open(d, 'a.b.c'));
		await expect401(open(d, '', { via: 'header' }));
		await expect401(open(d, tok('bad sub with spaces')));
		await expect401(open(d, tok('x'.repeat(65))));
		await expect401(open(d, signJwt({ sub: 'noexp' }, cfg.secret)));
	});

	test('other paths → 404', async (t) => {
		const open = clients(t);
		for (const p of ['/', '/wss', '/ws/', '/api/ws']) {
			const e = await refusal(open(d, tok('alice'), { path: p }));
			assert.equal(e.status, 404, `${p}: status ${e.status}`);
		}
	});

	test('foreign Origin → 403; allowed and own origin accepted', async (t) => {
		const open = clients(t);
		const e = await refusal(open(d, tok('carol'), { origin: 'https://evil.example.test' }));
		assert.equal(e.status, 403);
		parseErrorBody(e.body);
		// Refused on origin even with no token: 403 is not an auth oracle, but
		// either order is acceptable; only that it is refused matters.
		const e2 = await refusal(open(d, undefined, { origin: 'https://evil.example.test' }));
		assert.ok([401, 403].includes(e2.status), `status ${e2.status}`);
		const ok1 = await hello(open(d, tok('carol'), { origin: 'https://app.example.test' }));
		assert.equal(ok1.user_id, 'carol');
		const ok2 = await hello(open(d, tok('carol'), { origin: `http://127.0.0.1:${d.port}` }));
		assert.equal(ok2.user_id, 'carol');
		const e3 = await refusal(open(d, tok('carol'),
			{ origin: `http://127.0.0.1:${d.port}.evil.example.test` }));
		assert.equal(e3.status, 403);
	});

	test('raw upgrade refusal is a complete HTTP response', async () => {
		const r = await rawRequest(d.port, `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${d.port}\r\n` +
			'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
			'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n');
		assert.equal(r.status, 401);
		assert.match(r.headers['www-authenticate'] || '', /^Bearer\b/);
		parseErrorBody(r.body);
	});

	test('refresh extends the session past the first token\'s exp', async (t) => {
		const open = clients(t);
		const user = `r-${randomId(3)}`;
		// Both expire at the same second; only `kept` refreshes.
		const exp = nowS() + 2;
		const first = signJwt({ sub: user, exp }, cfg.secret);
		const kept = open(d, first);
		const lapsed = open(d, first);
		await hello(kept);
		await hello(lapsed);
		kept.send({ type: 'refresh', token: tok(user, {}, 60) });
		await pingPong(kept); // the refresh was handled (frames are in order)
		assert.equal(kept.messages.filter((m) => m.type === 'error').length, 0,
			JSON.stringify(kept.messages));

		const cl = await lapsed.closed;
		assert.equal(cl.code, 4001, `close ${cl.code} ${cl.reason}`);
		assert.ok(Date.now() >= exp * 1000 - 50, `closed ${exp * 1000 - Date.now()} ms before exp`);
		// The refreshed one has outlived its first exp (plus the close above).
		assert.equal(kept.closeInfo, null, `refreshed socket closed: ${JSON.stringify(kept.closeInfo)}`);
		await pingPong(kept);
	});

	test('without refresh the socket closes 4001 at exp (leeway 0)', async (t) => {
		const exp = nowS() + 2;
		const c = clients(t)(d, signJwt({ sub: 'expiring', exp }, cfg.secret));
		await hello(c);
		const cl = await c.closed;
		assert.equal(cl.code, 4001, `close ${cl.code} ${cl.reason}`);
		const late = Date.now() - exp * 1000;
		assert.ok(late > -1000 && late < 3000, `closed ${late} ms after exp`);
	});

	test('refresh with another sub or a bad token → error frame, socket stays', async (t) => {
		const c = clients(t)(d, tok('dave'));
		await hello(c);
		c.send({ type: 'refresh', token: tok('eve', {}, 600) });
		const e1 = await c.next((m) => m.type === 'error', 5000, 'error for foreign sub');
		assert.equal(typeof e1.code, 'string');
		c.send({ type: 'refresh',
			token: signJwt({ sub: 'dave', exp: nowS() + 600 }, 'wrong'.repeat(10)) });
		await c.next((m) => m.type === 'error', 5000, 'error for bad signature');
		c.send({ type: 'refresh' });
		await c.next((m) => m.type === 'error', 5000, 'error for missing token');
		await pingPong(c);
		assert.equal(c.closeInfo, null);
	});

	test('a refresh with another sub does not extend the session', async (t) => {
		const exp = nowS() + 2;
		const c = clients(t)(d, signJwt({ sub: 'frank', exp }, cfg.secret));
		await hello(c);
		c.send({ type: 'refresh', token: tok('grace', {}, 600) });
		await c.next((m) => m.type === 'error', 5000, 'error frame');
		const cl = await c.closed;
		assert.equal(cl.code, 4001);
	});

	test('non-JSON and typeless frames → error frames; the 11th bad frame → 1008', async (t) => {
		const c = clients(t)(d, tok('noisy'));
		await hello(c);
		c.send('this is not json');
		const e = await c.next((m) => m.type === 'error', 5000, 'error frame');
		assert.equal(typeof e.code, 'string');
		assert.ok(e.code.length > 0);
		const bad = ['[1,2]', '{"type":5}', '{}', '{"type":"nope"}', '"ping"', '{"type":',
			'null', '{"no":"type"}', '{"type":"ping","type":"ping"}'];
		for (const b of bad) c.send(b);
		for (let i = 0; i < bad.length; i++) await c.next((m) => m.type === 'error', 5000, `error ${i}`);
		await pingPong(c); // 10 bad so far: still open
		c.send('still not json');
		const cl = await c.closed;
		assert.equal(cl.code, 1008, `close ${cl.code} ${cl.reason}`);
	});

	test('message at the limit is fine; over max_message_bytes → 1009', async (t) => {
		const open = clients(t);
		const c = open(d, tok('big'));
		await hello(c);
		const frame = (n) => {
			const base = JSON.stringify({ type: 'ping', pad: '' });
			return JSON.stringify({ type: 'ping', pad: 'x'.repeat(n - base.length) });
		};
		assert.equal(frame(1024).length, 1024);
		c.send(frame(1024));
		await c.next((m) => m.type === 'pong', 5000, 'pong for a 1024-byte message');
		// A message in fragments counts whole.
		c.ws.send('{"type":"ping",', { fin: false });
		c.ws.send('"pad":"abc"}', { fin: true });
		await c.next((m) => m.type === 'pong', 5000, 'pong for a fragmented message');
		c.send(frame(1025));
		const cl = await c.closed;
		assert.equal(cl.code, 1009, `close ${cl.code} ${cl.reason}`);

		const f = open(d, tok('big'));
		await hello(f);
		const half = frame(1600);
		f.ws.send(half.slice(0, 800), { fin: false });
		f.ws.send(half.slice(800), { fin: true });
		const cl2 = await f.closed;
		assert.equal(cl2.code, 1009, `fragmented: close ${cl2.code} ${cl2.reason}`);
	});

	test('a binary frame → 1008', async (t) => {
		const c = clients(t)(d, tok('binary'));
		await hello(c);
		c.ws.send(Buffer.from('{"type":"ping"}'), { binary: true });
		const cl = await c.closed;
		assert.equal(cl.code, 1008, `close ${cl.code} ${cl.reason}`);
	});

	test('max_connections_per_user 3: the 4th socket is closed 4029', async (t) => {
		const open = clients(t);
		const user = `lim-${randomId(3)}`;
		const three = [open(d, tok(user)), open(d, tok(user)), open(d, tok(user))];
		for (const c of three) await hello(c);
		const closes = () => metricValue(d.url, 'stockalert_ws_closes_total', { code: '4029' });
		const before = await closes();
		const fourth = open(d, tok(user));
		const cl = await fourth.closed;
		assert.equal(cl.code, 4029, `close ${cl.code} ${cl.reason}`);
		assert.equal(await closes(), before + 1, 'stockalert_ws_closes_total{code="4029"}');
		assert.equal(fourth.messages.filter((m) => m.type === 'hello').length, 0,
			'the refused socket got a hello');
		for (const c of three) {
			await pingPong(c);
			assert.equal(c.closeInfo, null);
		}
		// Another user is not affected.
		await hello(open(d, tok(`${user}-other`)));
		// Closing one frees a slot.
		three[0].ws.close(1000);
		await three[0].closed;
		await waitFor(async () => {
			const c = open(d, tok(user));
			try {
				await hello(c);
				return true;
			} catch {
				return false;
			}
		}, { timeout: 10000, what: 'a slot after one socket closed' });
	});

	test('presence key exists while connected, gone after the last socket closes', async (t) => {
		const open = clients(t);
		const user = `pres-${randomId(3)}`;
		const key = `${cfg.config.redis.prefix}online:${user}`;
		const rport = cfg.config.redis.port;
		assert.equal(await redisCommand(rport, ['EXISTS', key]), 0);
		const a = open(d, tok(user));
		const b = open(d, tok(user));
		await hello(a);
		await hello(b);
		await waitFor(async () => (await redisCommand(rport, ['EXISTS', key])) === 1,
			{ timeout: 5000, what: `${key} to exist` });
		const ttl = await redisCommand(rport, ['TTL', key]);
		assert.ok(ttl > 0, `TTL ${ttl}`);
		const gauge0 = await metricValue(d.url, 'stockalert_ws_connections');
		a.ws.close(1000);
		await a.closed;
		await waitFor(async () => (await metricValue(d.url, 'stockalert_ws_connections')) ===
			gauge0 - 1, { timeout: 5000, what: 'gauge to drop by one' });
		// A wrongly sent "offline" would have had a round trip's time to land.
		await pingPong(b);
		await redisCommand(rport, ['PING']);
		assert.equal(await redisCommand(rport, ['EXISTS', key]), 1,
			'presence gone while a socket is still open');
		b.ws.terminate();
		await waitFor(async () => (await redisCommand(rport, ['EXISTS', key])) === 0,
			{ timeout: 5000, what: `${key} to be deleted` });
	});
});

describe('/ws with issuer and audience configured', () => {
	let cfg;
	let d;
	const ISS = 'https://issuer.example.test/';
	const AUD = 'stockalert-ws';
	const tok = (claims) => signJwt({ sub: 'ia', exp: nowS() + 300, ...claims }, cfg.secret);

	before(async () => {
		cfg = await makeConfig({ auth: { issuer: ISS, audience: AUD, leeway_s: 0 } });
		d = startDaemon(cfg);
		await waitReady(d);
	});
	after(() => stopClean(d));

	test('right iss and aud (string or array) accepted', async (t) => {
		const open = clients(t);
		assert.equal((await hello(open(d, tok({ iss: ISS, aud: AUD })))).user_id, 'ia');
		assert.equal((await hello(open(d, tok({ iss: ISS, aud: ['other', AUD] })))).user_id, 'ia');
	});

	test('wrong or missing iss / aud → 401', async (t) => {
		const open = clients(t);
		await expect401(open(d, tok({ iss: 'https://evil.example.test/', aud: AUD })));
		await expect401(open(d, tok({ iss: ISS, aud: 'other' })));
		await expect401(open(d, tok({ iss: ISS, aud: ['a', 'b'] })));
		await expect401(open(d, tok({ aud: AUD })));
		await expect401(open(d, tok({ iss: ISS })));
	});
});

function keyFiles(type) {
	const opts = type === 'rsa' ? { modulusLength: 2048 } : { namedCurve: 'P-256' };
	const { publicKey, privateKey } = crypto.generateKeyPairSync(type, {
		...opts,
		publicKeyEncoding: { type: 'spki', format: 'pem' },
		privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
	});
	return { publicKey, privateKey };
}

for (const [alg, type] of [['RS256', 'rsa'], ['ES256', 'ec']]) {
	describe(`/ws with ${alg}`, () => {
		let cfg;
		let d;
		let keys;
		let pubFile;

		before(async () => {
			keys = keyFiles(type);
			pubFile = path.join(tmpDir('sa-keys-'), `${alg}.pub.pem`);
			fs.writeFileSync(pubFile, keys.publicKey);
			cfg = await makeConfig({
				auth: { algorithm: alg, secret_file: undefined, public_key_file: pubFile },
			});
			const chk = await runDaemonCli(['--check-config', '-c', cfg.path]);
			assert.equal(chk.code, 0, chk.stderr);
			d = startDaemon(cfg);
			await waitReady(d);
		});
		after(() => stopClean(d));

		test(`${alg} token accepted`, async (t) => {
			const open = clients(t);
			const token = signAsym(alg, { sub: `${alg}-user`, exp: nowS() + 300 }, keys.privateKey);
			const h = await hello(open(d, token));
			assert.equal(h.user_id, `${alg}-user`);
			const c = open(d, token, { via: 'header' });
			assert.equal((await hello(c)).user_id, `${alg}-user`);
			await pingPong(c);
		});

		test(`${alg}: other key, HS256 key confusion, alg none → 401`, async (t) => {
			const open = clients(t);
			const payload = { sub: 'mallory', exp: nowS() + 300 };
			const other = keyFiles(type);
			await expect401(open(d, signAsym(alg, payload, other.privateKey)));
			// Key confusion: HS256 signed with the public key PEM as the secret.
			await expect401(open(d, signJwt(payload, keys.publicKey)));
			await expect401(open(d, signJwt(payload, keys.publicKey.trim())));
			await expect401(open(d, signJwt(payload, fs.readFileSync(pubFile))));
			const p = b64json(payload);
			await expect401(open(d, `${b64json({ alg: 'none', typ: 'JWT' })}.${p}.`));
			// The other asymmetric alg with a key of its own.
			const [alg2, type2] = alg === 'RS256' ? ['ES256', 'ec'] : ['RS256', 'rsa'];
			await expect401(open(d, signAsym(alg2, payload, keyFiles(type2).privateKey)));
		});
	});
}

describe('HS256 secret file', () => {
	test('an empty secret file: --check-config and start exit 1', async (t) => {
		const cfg = await makeConfig({});
		fs.writeFileSync(cfg.secretFile, '');
		const chk = await runDaemonCli(['--check-config', '-c', cfg.path]);
		assert.equal(chk.code, 1, `check-config exit ${chk.code}: ${chk.stderr}`);
		assert.match(chk.stdout + chk.stderr, /secret/i);
		const d = startDaemon(cfg, { t });
		const info = await d.exited;
		assert.equal(info.code, 1, `start exit ${info.code} ${info.signal}\n${d.log()}`);
		assert.equal(sanitizerReport(d.log()), null);
	});

	test('a secret shorter than 32 bytes: --check-config and start exit 1', async (t) => {
		const cfg = await makeConfig({});
		fs.writeFileSync(cfg.secretFile, 'short-secret-31-bytes-long-xxxx\n');
		const chk = await runDaemonCli(['--check-config', '-c', cfg.path]);
		assert.equal(chk.code, 1, `check-config exit ${chk.code}: ${chk.stderr}`);
		const d = startDaemon(cfg, { t });
		const info = await d.exited;
		assert.equal(info.code, 1, `start exit ${info.code} ${info.signal}\n${d.log()}`);
	});
});

describe('/ws max_connections', () => {
	let cfg;
	let d;

	before(async () => {
		cfg = await makeConfig({ ws: { max_connections: 3, max_connections_per_user: 10 } });
		d = startDaemon(cfg);
		await waitReady(d);
	});
	after(() => stopClean(d));

	test('the N+1th upgrade gets 503; a closed socket frees its slot', async (t) => {
		const open = clients(t);
		const tok = (sub) => signJwt({ sub, exp: nowS() + 300 }, cfg.secret);
		const conns = [open(d, tok('m1')), open(d, tok('m2')), open(d, tok('m1'))];
		for (const c of conns) await hello(c);
		const e = await refusal(open(d, tok('m3')));
		assert.equal(e.status, 503, `status ${e.status}: ${e.body}`);
		parseErrorBody(e.body);
		for (const c of conns) await pingPong(c);
		conns[1].ws.close(1000);
		await conns[1].closed;
		await waitFor(async () => (await metricValue(d.url, 'stockalert_ws_connections')) === 2,
			{ timeout: 5000, what: 'gauge 2' });
		await hello(open(d, tok('m3')));
	});
});
