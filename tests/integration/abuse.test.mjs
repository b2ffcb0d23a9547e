// Abuse of the public surface (issue 9): raw WebSocket protocol violations
// after a valid handshake, malformed upgrades, slow and huge requests, and
// hostile HTTP bodies. Every case checks the close code or status README.md
// (HTTP API, WebSocket protocol) promises, and that a healthy client on the same daemon keeps
// getting pongs; the daemon must stay up and stop without a sanitizer report.
//
// Where lws 4.1.6 itself decides (frame parsing, header limits) the tests
// assert what it does as long as the documented contract allows it. Known deviations run as
// `todo` tests: they report without failing the suite, and the strict
// expectation is there to switch on once the daemon handles them.
import { describe, test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import {
	alertsKit, apiCall, rawRequest, parseErrorBody, wsRawConnect, wsClientFrame,
	wsParseFrames, wsWaitFor, randomId, sleep,
} from './lib/harness.mjs';

const MAX_MSG = 1024;
const P = 601;               // the healthy client is subscribed to it
const HEADER_TIMEOUT_S = 10; // info.timeout_secs in src/server.c

// ---------------------------------------------------------------- raw sockets

// A frame with a 64-bit length field that claims `len` bytes (and carries
// `body`, masked with a zero key so the bytes go out as they are).
function frameWithLength(len, body = Buffer.alloc(0), opcode = 0x1) {
	const h = Buffer.alloc(14);
	h[0] = 0x80 | opcode;
	h[1] = 0x80 | 127;
	h.writeBigUInt64BE(len, 2);
	return Buffer.concat([h, body]);
}

function unmaskedFrame(payload, opcode = 0x1) {
	const p = Buffer.from(payload);
	return Buffer.concat([Buffer.from([0x80 | opcode, p.length]), p]);
}

// A raw /ws connection after a complete, accepted upgrade, reading frames.
// outcome() resolves once the server sent a close frame (answered with a
// masked close, as a client must; `ended` then says whether the TCP
// connection was closed afterwards) or dropped the connection without one.
async function rawWs(port, token) {
	const c = await wsRawConnect(port, `/ws?token=${encodeURIComponent(token)}`);
	assert.equal(c.status, 101, `upgrade refused: ${c.status}`);
	const conn = { sock: c.sock, frames: [], ended: false, endedAt: 0 };
	let buf = Buffer.from(c.rest);
	let wake = () => {};
	const changed = () => { const w = wake; wake = () => {}; w(); };
	const onData = (d) => {
		buf = Buffer.concat([buf, d]);
		const r = wsParseFrames(buf);
		conn.frames.push(...r.frames);
		buf = Buffer.from(r.rest);
		changed();
	};
	onData(Buffer.alloc(0)); // the hello may have come with the 101
	c.sock.on('data', onData);
	c.sock.on('error', () => {});
	c.sock.on('close', () => { conn.ended = true; conn.endedAt = Date.now(); changed(); });
	c.sock.resume();
	const until = async (pred, ms, what) => {
		const deadline = Date.now() + ms;
		while (!pred()) {
			if (Date.now() > deadline) {
				throw new Error(`timed out after ${ms} ms waiting for ${what}; frames ` +
					JSON.stringify(conn.frames.map(describeFrame)));
			}
			await new Promise((r) => { wake = r; setTimeout(r, 100); });
		}
	};
	conn.send = (bytes) => { if (!conn.ended) c.sock.write(bytes); };
	conn.hello = () => until(() => conn.frames.some((f) => f.opcode === 1 &&
		JSON.parse(f.payload).type === 'hello'), 10000, 'hello');
	conn.texts = () => conn.frames.filter((f) => f.opcode === 1)
		.map((f) => JSON.parse(f.payload));
	conn.outcome = async (ms = 10000) => {
		const isClose = (f) => f.opcode === 8;
		await until(() => conn.ended || conn.frames.some(isClose), ms, 'a close frame or the end');
		const f = conn.frames.find(isClose);
		if (!f) return { code: null, dropped: true };
		const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
		const reason = f.payload.subarray(2).toString();
		conn.send(wsClientFrame(f.payload.subarray(0, 2), 0x8));
		await until(() => conn.ended, 10000, 'the TCP close after the close handshake');
		return { code, reason, dropped: false };
	};
	conn.destroy = () => c.sock.destroy();
	return conn;
}

function describeFrame(f) {
	if (f.opcode === 8) {
		return `close ${f.payload.length >= 2 ? f.payload.readUInt16BE(0) : '-'} ` +
			f.payload.subarray(2).toString();
	}
	return `op${f.opcode} ${f.payload.toString().slice(0, 80)}`;
}

// A plain TCP connection that says `bytes` and then nothing; resolves how it
// ended: { ms, response } (response: the first bytes the server sent).
function silentAfter(port, bytes, { drip = null, timeout = 30000 } = {}) {
	return new Promise((resolve) => {
		const t0 = Date.now();
		const s = net.connect(port, '127.0.0.1');
		let got = Buffer.alloc(0);
		let timer = null;
		let dripTimer = null;
		const done = (how) => {
			clearTimeout(timer);
			clearInterval(dripTimer);
			s.destroy();
			resolve({ how, ms: Date.now() - t0, response: got.toString('latin1') });
		};
		s.on('data', (d) => { got = Buffer.concat([got, d]); });
		s.on('error', () => {});
		s.on('close', () => done('closed'));
		s.on('connect', () => {
			s.write(bytes);
			if (drip) dripTimer = setInterval(() => { if (!s.destroyed) s.write(drip); }, 1000);
		});
		timer = setTimeout(() => done('open'), timeout);
	});
}

// A silentAfter() result for a request the server must refuse: the
// connection closed, after a 4xx response or none at all.
function assertRefused(r, what) {
	assert.equal(r.how, 'closed', `${what}: still open after ${r.ms} ms`);
	const m = r.response.match(/^HTTP\/1\.[01] (\d{3})/);
	if (m) {
		assert.ok(Number(m[1]) >= 400 && Number(m[1]) < 500, `${what}: ${r.response}`);
	} else {
		assert.equal(r.response, '', `${what}: not HTTP: ${r.response.slice(0, 200)}`);
	}
}

// ---------------------------------------------------------------- the daemon

describe('abuse', () => {
	let kit;
	let d;
	let healthy;
	let seq = 0;
	const user = () => `abuser-${++seq}-${randomId(2)}`;

	before(async () => {
		kit = await alertsKit({
			overrides: { ws: { max_message_bytes: MAX_MSG } },
			products: [{ id: P, name: 'Healthy', stock: 10, threshold: 5 }],
		});
		d = kit.daemons[0];
		await kit.subscribe('healthy', P);
		healthy = await kit.connect('healthy');
	});

	// Nobody else is affected: the healthy socket still answers.
	afterEach(async () => {
		assert.equal(d.running, true, `daemon died:\n${d.log().slice(-3000)}`);
		assert.equal(healthy.closeInfo, null, `healthy client closed: ${JSON.stringify(
			healthy.closeInfo)}`);
		const from = healthy.messages.length;
		healthy.send({ type: 'ping' });
		await wsWaitFor(healthy, (m) => healthy.messages.indexOf(m) >= from && m.type === 'pong',
			5000, 'pong on the healthy client');
	});

	after(async () => {
		if (!kit) return;
		// The pipeline still works end to end after all of it.
		const ev = `abuse-end-${randomId(3)}`;
		const r = await apiCall(d.url, 'POST', '/api/inventory/events', {
			token: kit.token('svc', ['service']),
			body: { event_id: ev, product_id: P, stock: 0, prev_stock: 10 },
		});
		assert.equal(r.status, 202, r.text);
		await wsWaitFor(healthy, (m) => m.type === 'alert' && m.event_id === ev, 10000,
			'an alert after the abuse');
		const reports = await kit.close();
		assert.deepEqual(reports, [], reports.join('\n\n'));
	});

	// ------------------------------------------------------------ frames

	async function expectClose(bytes, codes, what, { allowDrop = false, wait = 10000 } = {}) {
		const c = await rawWs(d.port, kit.token(user()));
		try {
			await c.hello();
			c.send(bytes);
			const o = await c.outcome(wait);
			if (o.dropped) {
				assert.ok(allowDrop, `${what}: connection dropped without a close frame`);
			} else {
				assert.ok(codes.includes(o.code),
					`${what}: close ${o.code} ${o.reason}, expected ${codes.join('/')}`);
			}
			return o;
		} finally {
			c.destroy();
		}
	}

	test('RSV bits without a negotiated extension → 1002', async () => {
		for (const bit of [0x40, 0x20, 0x10]) {
			const f = wsClientFrame('{"type":"ping"}');
			f[0] |= bit;
			await expectClose(f, [1002], `RSV 0x${bit.toString(16)}`);
		}
	});

	test('reserved opcodes (0x3-0x7, 0xB-0xF) → 1002', async () => {
		for (const op of [0x3, 0x7, 0xb, 0xf]) {
			await expectClose(wsClientFrame('{"type":"ping"}', op), [1002], `opcode ${op}`);
		}
	});

	test('control frame with a payload over 125 bytes → 1002 or dropped', async () => {
		// lws drops these without a close frame (RFC 6455 §7.1.7 only
		// says SHOULD send one); either way the socket is gone at once.
		for (const op of [0x9, 0xa, 0x8]) {
			await expectClose(wsClientFrame(Buffer.alloc(126, 0x61), op), [1002],
				`control 0x${op.toString(16)} with 126 bytes`, { allowDrop: true });
		}
	});

	test('fragmented ping, stray continuation, new message inside a fragmented one → 1002',
		async () => {
			await expectClose(wsClientFrame('ab', 0x9, false), [1002], 'fragmented ping');
			await expectClose(wsClientFrame('{"type":"ping"}', 0x0), [1002],
				'continuation without a start');
			await expectClose(Buffer.concat([wsClientFrame('{"type":', 0x1, false),
				wsClientFrame('"ping"}', 0x1)]), [1002], 'text frame inside a fragmented message');
		});

	test('invalid UTF-8 in a text frame → 1007; valid UTF-8 split across fragments is fine',
		async () => {
			const bad = {
				'0xff byte': [0x7b, 0xff, 0x7d],
				'overlong NUL': [0xc0, 0x80],
				'UTF-16 surrogate': [0xed, 0xa0, 0x80],
				'above U+10FFFF': [0xf4, 0x90, 0x80, 0x80],
				'truncated sequence': [0x22, 0xe2, 0x82],
			};
			for (const [what, bytes] of Object.entries(bad)) {
				await expectClose(wsClientFrame(Buffer.from(bytes)), [1007], what);
			}
			// Invalid only in a later fragment.
			await expectClose(Buffer.concat([wsClientFrame('{"type":"ping","x":"', 0x1, false),
				wsClientFrame(Buffer.from([0xff, 0x22, 0x7d]), 0x0)]), [1007], 'bad continuation');

			const c = await rawWs(d.port, kit.token(user()));
			try {
				await c.hello();
				const msg = Buffer.from('{"type":"ping","x":"é€😀"}');
				const cut = msg.indexOf(Buffer.from('€')) + 1; // inside the 3-byte €
				c.send(Buffer.concat([wsClientFrame(msg.subarray(0, cut), 0x1, false),
					wsClientFrame(msg.subarray(cut), 0x0)]));
				const deadline = Date.now() + 5000;
				while (!c.texts().some((m) => m.type === 'pong')) {
					assert.ok(Date.now() < deadline && !c.ended,
						`no pong: ${JSON.stringify(c.frames.map(describeFrame))}`);
					await sleep(20);
				}
			} finally {
				c.destroy();
			}
		});

	test('a 2^63 length header → 1002/1009 or dropped; huge lengths never wait for the bytes',
		async () => {
			await expectClose(frameWithLength(1n << 63n), [1002, 1009], '2^63',
				{ allowDrop: true });
			await expectClose(frameWithLength(0xffffffffffffffffn), [1002, 1009], '2^64-1',
				{ allowDrop: true });
			// Legal lengths far over the limit: closed 1009 as soon as more
			// than max_message_bytes arrived, without waiting for the rest.
			for (const len of [(1n << 63n) - 1n, 1n << 32n, BigInt(MAX_MSG + 1)]) {
				await expectClose(frameWithLength(len, Buffer.alloc(MAX_MSG + 1, 0x20)), [1009],
					`length ${len}`);
			}
		});

	test('oversize messages → 1009 (one frame, 16-bit length, many small fragments)',
		async () => {
			const big = `{"type":"ping","pad":"${'x'.repeat(MAX_MSG)}"}`;
			await expectClose(wsClientFrame(big), [1009], 'one frame');
			const parts = [];
			for (let i = 0; i < 200; i++) parts.push(wsClientFrame('      ', i ? 0x0 : 0x1, false));
			parts.push(wsClientFrame('{}', 0x0, true));
			await expectClose(Buffer.concat(parts), [1009], '200 fragments of 6 bytes');
		});

	test('malformed close frames → a close, never a crash', async () => {
		// 1-byte payload, reserved code 1005, a code below 1000, a bad
		// UTF-8 reason: lws answers with a close (1002 or empty) or drops.
		for (const [what, payload] of [['1 byte', [0x03]], ['code 1005', [0x03, 0xed]],
			['code 999', [0x03, 0xe7]], ['bad reason', [0x03, 0xe8, 0xff, 0xfe]]]) {
			const c = await rawWs(d.port, kit.token(user()));
			try {
				await c.hello();
				c.send(wsClientFrame(Buffer.from(payload), 0x8));
				const o = await c.outcome();
				assert.ok(o.dropped || o.code === null || o.code === 1002,
					`${what}: close ${o.code} ${o.reason}`);
			} finally {
				c.destroy();
			}
		}
	});

	test('an unmasked client frame is never misparsed or fatal', async () => {
		const c = await rawWs(d.port, kit.token(user()));
		try {
			await c.hello();
			c.send(unmaskedFrame('{"type":"ping"}'));
			// lws 4.1.6 accepts it (see the todo below); what must not
			// happen is a crash or a frame read with a bogus mask.
			const deadline = Date.now() + 5000;
			while (!c.ended && !c.frames.some((f) => f.opcode === 8) &&
				!c.texts().some((m) => m.type === 'pong' || m.type === 'error')) {
				assert.ok(Date.now() < deadline, 'no answer to an unmasked frame');
				await sleep(20);
			}
			assert.ok(!c.texts().some((m) => m.type === 'error'),
				`unmasked frame misparsed: ${JSON.stringify(c.texts())}`);
		} finally {
			c.destroy();
		}
	});

	test('an unmasked client frame → 1002 (RFC 6455 §5.1 "MUST close")', {
		todo: 'lws 4.1.6 does not enforce client masking: the frame is served (pong)',
	}, async () => {
		await expectClose(unmaskedFrame('{"type":"ping"}'), [1002], 'unmasked', { wait: 3000 });
	});

	// ------------------------------------------------------------ upgrades

	test('Upgrade: foo, a missing key, Upgrade without Connection → 4xx or dropped',
		async () => {
			const tok = kit.token(user());
			const heads = {
				'Upgrade: foo': 'Upgrade: foo\r\nConnection: Upgrade\r\n' +
					'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n',
				'no Sec-WebSocket-Key': 'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
					'Sec-WebSocket-Version: 13\r\n',
				'Upgrade without Connection': 'Upgrade: websocket\r\n' +
					'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n',
			};
			for (const [what, h] of Object.entries(heads)) {
				const r = await silentAfter(d.port,
					`GET /ws?token=${tok} HTTP/1.1\r\nHost: 127.0.0.1\r\n${h}\r\n`,
					{ timeout: (HEADER_TIMEOUT_S + 5) * 1000 });
				assertRefused(r, what);
			}
		});

	// ------------------------------------------------------------ slow and huge

	test(`slow headers, a slow body, a stalled upgrade: dropped within ${HEADER_TIMEOUT_S} s ` +
		'while others are served', async () => {
		const tok = kit.token(user());
		const slow = Promise.all([
			// slowloris: a partial request line, then one header byte a second
			silentAfter(d.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ', { drip: 'a' }),
			silentAfter(d.port, 'GET /heal'),
			silentAfter(d.port, `PUT /api/me/subscriptions/${P} HTTP/1.1\r\nHost: x\r\n` +
				`Authorization: Bearer ${tok}\r\nContent-Length: 100\r\n\r\n{"kinds":`),
			silentAfter(d.port, `GET /ws?token=${tok} HTTP/1.1\r\nHost: x\r\n` +
				'Upgrade: websocket\r\nConnection: Upgrade\r\n'),
		]);
		// Meanwhile, everyone else is served promptly.
		let served = 0;
		let done = false;
		slow.then(() => { done = true; });
		while (!done) {
			const t0 = Date.now();
			const r = await fetch(`${d.url}/healthz`, { signal: AbortSignal.timeout(2000) });
			await r.arrayBuffer();
			assert.equal(r.status, 200);
			healthy.send({ type: 'ping' });
			assert.ok(Date.now() - t0 < 1000, `/healthz took ${Date.now() - t0} ms`);
			served++;
			await sleep(500);
		}
		const results = await slow;
		for (const [i, r] of results.entries()) {
			assert.equal(r.how, 'closed', `slow client ${i} still open after ${r.ms} ms`);
			assert.ok(r.ms <= (HEADER_TIMEOUT_S + 4) * 1000, `slow client ${i} lasted ${r.ms} ms`);
			assert.doesNotMatch(r.response, /^HTTP\/1\.1 2/, `slow client ${i} got ${r.response}`);
		}
		assert.ok(served >= 10, `only ${served} requests served meanwhile`);
	});

	test('huge headers (> 16 KiB) → 4xx or dropped, never served', async () => {
		const tok = kit.token(user());
		const many = Array.from({ length: 400 }, (_, i) => `X-H${i}: ${'b'.repeat(50)}\r\n`).join('');
		const reqs = {
			'one 17 KiB header': `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17 << 10)}\r\n`,
			'400 headers (22 KiB)': `GET /healthz HTTP/1.1\r\nHost: x\r\n${many}`,
			'a 20 KiB URI': `GET /healthz?${'q'.repeat(20 << 10)} HTTP/1.1\r\nHost: x\r\n`,
			'an upgrade with a 17 KiB header': `GET /ws?token=${tok} HTTP/1.1\r\nHost: x\r\n` +
				'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
				`Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Big: ${'a'.repeat(17 << 10)}\r\n`,
		};
		for (const [what, head] of Object.entries(reqs)) {
			const r = await silentAfter(d.port, `${head}\r\n`,
				{ timeout: (HEADER_TIMEOUT_S + 5) * 1000 });
			assertRefused(r, what);
		}
	});

	test('unknown methods and garbage request lines → 4xx or dropped', async () => {
		const reqs = ['BREW / HTTP/1.1', 'PROPFIND / HTTP/1.1', 'FOO /healthz HTTP/1.1',
			'TRACE / HTTP/1.1', '\x16\x03\x01\x02\x00',
			'GET\x00/ HTTP/1.1', 'PRI * HTTP/2.0'];
		for (const line of reqs) {
			const r = await silentAfter(d.port, `${line}\r\nHost: x\r\n\r\n`,
				{ timeout: (HEADER_TIMEOUT_S + 5) * 1000 });
			const m = r.response.match(/^HTTP\/1\.[01] (\d{3})/);
			assert.ok(m ? Number(m[1]) >= 400 && Number(m[1]) < 500 : r.response === '',
				`${JSON.stringify(line)}: ${r.response.slice(0, 200)}`);
			assert.equal(r.how, 'closed', `${JSON.stringify(line)}: still open after ${r.ms} ms`);
		}
		// Known methods the routes do not take: 405 with the JSON error body.
		for (const [m, p] of [['PATCH', '/healthz'], ['DELETE', '/metrics'],
			['OPTIONS', '/healthz'], ['PATCH', '/api/me/subscriptions']]) {
			const r = await apiCall(d.url, m, p, { token: kit.token(user()) });
			assert.equal(r.status, 405, `${m} ${p}: ${r.status} ${r.text}`);
			parseErrorBody(r.text);
		}
		// OPTIONS on the API answers what it allows (the CORS preflight's
		// method; http.test.mjs covers the preflight itself).
		const o = await apiCall(d.url, 'OPTIONS', '/api/me/subscriptions');
		assert.equal(o.status, 204, o.text);
		assert.match(o.headers.allow, /^GET, HEAD$/);
	});

	test('CONNECT is answered or dropped within the header timeout', async () => {
		const r = await silentAfter(d.port, 'CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n',
			{ timeout: (HEADER_TIMEOUT_S + 5) * 1000 });
		assert.equal(r.how, 'closed', `still open after ${r.ms} ms`);
		assert.doesNotMatch(r.response, /^HTTP\/1\.1 2/);
	});

	// ------------------------------------------------------------ HTTP bodies

	const put = (u, body) => apiCall(d.url, 'PUT', `/api/me/subscriptions/${P}`,
		{ token: kit.token(u), body });
	const post = (body) => apiCall(d.url, 'POST', '/api/inventory/events',
		{ token: kit.token('svc', ['service']), body });
	const rawPut = (u, body) => rawRequest(d.port,
		`PUT /api/me/subscriptions/${P} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ` +
		`${kit.token(u)}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n`,
		body);

	async function nothingWritten(u) {
		const n = (await kit.sql(`SELECT COUNT(*) FROM subscriptions WHERE user_id = '${u}'`)).trim();
		assert.equal(n, '0', `a refused request left a row for ${u}`);
	}

	function expect400(r, what, re) {
		assert.equal(r.status, 400, `${what}: ${r.status} ${r.text ?? r.body}`);
		const j = parseErrorBody(r.text ?? r.body);
		if (re) assert.match(j.error.message, re, what);
		return j;
	}

	const HUGE = {
		'1e400': '1e400',
		'-1e400': '-1e400',
		'2^70': '1180591620717411303424',
		'-2^70': '-1180591620717411303424',
		'2^63': '9223372036854775808',
		'1e300': '1e300',
	};

	test('huge numbers in PUT and POST bodies → 400, nothing written', async () => {
		for (const [what, n] of Object.entries(HUGE)) {
			const u = user();
			expect400(await put(u, `{"threshold": ${n}}`), `PUT threshold ${what}`);
			await nothingWritten(u);
			for (const field of ['product_id', 'stock', 'prev_stock', 'ts']) {
				const ev = { product_id: P, stock: 1, prev_stock: 2 };
				const body = JSON.stringify({ ...ev, [field]: 0 }).replace(`"${field}":0`,
					`"${field}":${n}`);
				expect400(await post(body), `POST ${field} ${what}`);
			}
		}
	});

	test('huge numbers → 400 naming the field', async () => {
		for (const [what, n] of Object.entries(HUGE)) {
			expect400(await put(user(), `{"threshold": ${n}}`), `PUT threshold ${what}`,
				/threshold/);
			for (const field of ['product_id', 'stock', 'prev_stock', 'ts']) {
				const body = `{"product_id": 1, "stock": 1, "prev_stock": 1, "ts": 1}`
					.replace(`"${field}": 1`, `"${field}": ${n}`);
				expect400(await post(body), `POST ${field} ${what}`, new RegExp(field));
			}
		}
	});

	test('bad JSON → 400 with a JSON error body, nothing written', async () => {
		const bodies = {
			'trailing junk': Buffer.from('{"kinds":["low_stock"]} x'),
			'raw NUL': Buffer.from('{"kinds":["low\u0000_stock"]}'),
			'escaped NUL': Buffer.from('{"kinds":["low\\u0000_stock"]}'),
			'invalid UTF-8': Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]),
			'lone surrogate escape': Buffer.from('{"kinds":["\\ud800"]}'),
			'BOM': Buffer.from('\ufeff{}'),
			'60000 nested arrays': Buffer.from('['.repeat(60000)),
			'3000 nested objects': Buffer.from('{"a":'.repeat(3000)),
			'duplicate keys': Buffer.from('{"kinds":["low_stock"],"kinds":["sold_out"]}'),
			'NaN': Buffer.from('{"threshold":NaN}'),
			'single quotes': Buffer.from("{'kinds':['low_stock']}"),
			'a bare string': Buffer.from('"low_stock"'),
			'null': Buffer.from('null'),
		};
		for (const [what, body] of Object.entries(bodies)) {
			const u = user();
			const r = await rawPut(u, body);
			expect400(r, `PUT ${what}`);
			await nothingWritten(u);
			const p = await rawRequest(d.port, 'POST /api/inventory/events HTTP/1.1\r\nHost: x\r\n' +
				`Authorization: Bearer ${kit.token('svc', ['service'])}\r\n` +
				`Content-Type: application/json\r\nContent-Length: ${body.length}\r\n`, body);
			expect400(p, `POST ${what}`);
		}
	});

	test('wrong types → 400 naming the field', async () => {
		for (const [field, values] of Object.entries({
			kinds: [null, true, 1, {}, [null], [['low_stock']], 'sold_out'],
			threshold: [true, '1', [1], { n: 1 }, 1.5, -1],
		})) {
			for (const v of values) {
				const u = user();
				expect400(await put(u, { [field]: v }), `PUT ${field}=${JSON.stringify(v)}`,
					new RegExp(field.replace(/[[\]]/g, '\\$&')));
				await nothingWritten(u);
			}
		}
		for (const [field, values] of Object.entries({
			product_id: [null, true, '601', 601.5, [601], {}, 0, -1],
			stock: [null, false, '1', 1.5, [1], {}],
			prev_stock: [false, '1', 0.5, [1]],
			ts: [true, '1', 1.5, -1, {}],
			event_id: [1, true, [], {}, '', 'a b', 'x'.repeat(129), 'é'],
		})) {
			for (const v of values) {
				const ev = { product_id: P, stock: 1, [field]: v };
				expect400(await post(ev), `POST ${field}=${JSON.stringify(v)}`,
					new RegExp(field));
			}
		}
	});

	test('bodies over 64 KiB → 413; chunked → 411; bad Content-Length → 400', async () => {
		const svc = `Authorization: Bearer ${kit.token('svc', ['service'])}\r\n`;
		const head = `POST /api/inventory/events HTTP/1.1\r\nHost: x\r\n${svc}` +
			'Content-Type: application/json\r\n';
		const ev = JSON.stringify({ product_id: P, stock: 1, prev_stock: 1 });
		const over = ev + ' '.repeat((64 << 10) + 1 - ev.length);
		let r = await rawRequest(d.port, `${head}Content-Length: ${over.length}\r\n`, over);
		assert.equal(r.status, 413, r.raw.toString().slice(0, 300));
		parseErrorBody(r.body);
		// Refused on the header alone: the body is never waited for.
		r = await rawRequest(d.port, `${head}Content-Length: ${16 << 20}\r\n`, '');
		assert.equal(r.status, 413, r.raw.toString().slice(0, 300));
		r = await rawRequest(d.port, `${head}Transfer-Encoding: chunked\r\n`,
			`${ev.length.toString(16)}\r\n${ev}\r\n0\r\n\r\n`);
		assert.equal(r.status, 411, r.raw.toString().slice(0, 300));
		parseErrorBody(r.body);
		for (const cl of ['-1', '99999999999999999999999', 'abc', '1e3', '0x10']) {
			r = await rawRequest(d.port, `${head}Content-Length: ${cl}\r\n`, '');
			assert.ok([400, 413].includes(r.status), `Content-Length ${cl}: ${r.status}`);
			parseErrorBody(r.body);
		}
	});
});
