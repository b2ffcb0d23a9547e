// Bounds on what one client can make the daemon do or hold: subscription
// changes under way per socket and per user (a flood from one socket must not
// stall everyone else's writes), product ids that survive every encoder on
// the way (2^53-1 at most), pings echoed whole, and the catalog cache's size.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
	alertsKit, apiCall, wsRawConnect, wsClientFrame, wsParseFrames, wsWaitFor, wsAlerts,
	eventId, waitFor,
} from './lib/harness.mjs';

const BIG = 123456789012345; // cjson printed it as 1.2345678901234e+14
const FLOOD = 20000;

// A raw /ws client: frames parsed as they come, `closed` resolves with the
// server's close code once its close frame arrives.
async function rawClient(kit, user, i = 0) {
	const d = kit.daemons[i];
	const raw = await wsRawConnect(d.port, `/ws?token=${encodeURIComponent(kit.token(user))}`);
	assert.equal(raw.status, 101);
	const c = { sock: raw.sock, buf: raw.rest, frames: [], waiters: new Set() };
	const parse = () => {
		const { frames, rest } = wsParseFrames(c.buf);
		c.frames.push(...frames);
		c.buf = rest;
		for (const w of c.waiters) w();
	};
	raw.sock.on('data', (d2) => { c.buf = Buffer.concat([c.buf, d2]); parse(); });
	raw.sock.on('error', () => {});
	raw.sock.on('close', () => { c.ended = true; for (const w of c.waiters) w(); });
	raw.sock.resume();
	parse();
	// Resolves the first frame from index `from` on that pred accepts.
	c.next = (pred, from = 0, timeout = 15000, what = 'a frame') => new Promise((resolve, reject) => {
		const check = () => {
			const f = c.frames.slice(from).find(pred);
			if (f) { done(); resolve(f); return; }
			if (c.ended) { done(); reject(new Error(`socket ended waiting for ${what}`)); }
		};
		const timer = setTimeout(() => { done(); reject(new Error(`timed out waiting for ${what}`)); },
			timeout);
		const done = () => { clearTimeout(timer); c.waiters.delete(check); };
		c.waiters.add(check);
		check();
	});
	c.json = (f) => (f.opcode === 0x1 ? JSON.parse(f.payload.toString()) : null);
	c.nextJson = (pred, from, timeout, what) =>
		c.next((f) => f.opcode === 0x1 && pred(JSON.parse(f.payload.toString())), from, timeout,
			what).then((f) => c.json(f));
	c.closeCode = () => c.next((f) => f.opcode === 0x8, 0, 30000, 'the close frame')
		.then((f) => (f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null));
	await c.nextJson((m) => m.type === 'hello', 0, 15000, 'hello');
	return c;
}

// `n` subscribe/unsubscribe frames for product pid, as one buffer.
function floodFrames(pid, n) {
	const frames = [];
	for (let i = 0; i < n; i++) {
		frames.push(wsClientFrame(JSON.stringify({ type: i % 2 ? 'unsubscribe' : 'subscribe',
			product_id: pid })));
	}
	return Buffer.concat(frames);
}

describe('bounds (default in-flight limits, catalog.max_entries 16)', () => {
	let kit;

	before(async () => {
		kit = await alertsKit({
			overrides: { catalog: { max_entries: 16 } },
			products: [{ id: 1 }, { id: 2 }, { id: BIG, stock: 0 },
				{ id: 9007199254740991, stock: 0 }],
		});
	});
	after(async () => {
		const reports = await kit.close();
		assert.deepEqual(reports, []);
	});

	test(`${FLOOD} subscription frames in one write from one socket do not stall another ` +
		'user\'s PUT; the socket gets too_many_requests, then 4029', async (t) => {
		const flooder = await rawClient(kit, 'flooder');
		t.after(() => flooder.sock.destroy());
		const refusedBefore = await kit.metric('stockalert_subscription_changes_refused_total');
		flooder.sock.write(floodFrames(1, FLOOD));
		// Before the fix this PUT queued behind ~60,000 MySQL statements and
		// lws cut it after 10 s with no answer.
		const r = await apiCall(kit.daemons[0].url, 'PUT', '/api/me/subscriptions/2',
			{ token: kit.token('bystander'), timeout: 30000 });
		assert.equal(r.status, 201, r.text);
		const err = await flooder.nextJson((m) => m.type === 'error', 0, 15000, 'an error frame');
		assert.equal(err.code, 'too_many_requests', JSON.stringify(err));
		assert.equal(await flooder.closeCode(), 4029);
		assert.ok(await kit.metric('stockalert_subscription_changes_refused_total') >
			refusedBefore);
		// Nothing the flooder got acknowledged is lost: the last ack wins.
		const acks = flooder.frames.map(flooder.json).filter((m) => m &&
			(m.type === 'subscribed' || m.type === 'unsubscribed'));
		assert.ok(acks.length <= 8, `${acks.length} acks, more than ws.max_inflight_per_socket`);
	});

	test('product 123456789012345: PUT, then an event for it reaches the connected user',
		async () => {
			const h = await kit.connect('big');
			const r = await apiCall(kit.daemons[0].url, 'PUT', `/api/me/subscriptions/${BIG}`,
				{ token: kit.token('big') });
			assert.equal(r.status, 201, r.text);
			assert.equal(r.json.product_id, BIG);
			// The change notice reached this instance's roster once a socket
			// round trip after it (the ack of a later subscribe) is back.
			await kit.sync(h);
			const from = h.messages.length;
			const e = eventId('big');
			await kit.publish({ event_id: e, product_id: BIG, stock: 4, prev_stock: 0 });
			await wsWaitFor(h, () => wsAlerts(h, from).some((a) => a.product_id === BIG), 15000,
				`the alert for ${BIG}`);
			const alert = wsAlerts(h, from).find((a) => a.product_id === BIG);
			assert.equal(alert.kind, 'back_in_stock');

			// 2^53-1 is the largest id, over WebSocket too.
			h.send({ type: 'subscribe', product_id: 9007199254740991 });
			await wsWaitFor(h, (m) => m.type === 'subscribed' && m.product_id === 9007199254740991,
				10000, 'the ack for 2^53-1');
		});

	test('ids above 2^53-1 are refused everywhere (REST 400, WebSocket bad_message, events)',
		async () => {
			for (const id of ['9007199254740992', '9007199254740993', '9223372036854775807']) {
				const r = await apiCall(kit.daemons[0].url, 'PUT', `/api/me/subscriptions/${id}`,
					{ token: kit.token('big2') });
				assert.equal(r.status, 400, `${id}: ${r.status} ${r.text}`);
				assert.match(r.json.error.message, /9007199254740991/);
			}
			const h = await kit.connect('big2');
			const from = h.messages.length;
			// Sent as text: a JavaScript number cannot spell 2^53 + 1.
			h.send('{"type":"subscribe","product_id":9007199254740993}');
			const { msg } = await wsWaitFor(h, (x) => h.messages.indexOf(x) >= from &&
				x.type === 'error', 10000, 'the error frame');
			assert.equal(msg.code, 'bad_message');
			const malformed = await kit.metric('stockalert_events_malformed_total');
			await kit.publish('{"event_id":"e-2p53","product_id":9007199254740992,"stock":1}');
			await waitFor(async () => await kit.metric('stockalert_events_malformed_total') >
				malformed, { what: 'the event refused as malformed' });
		});

	test('a 100-byte and a 125-byte ping each get one pong with the whole payload', async (t) => {
		const c = await rawClient(kit, 'pinger');
		t.after(() => c.sock.destroy());
		for (const n of [100, 125]) {
			const payload = Buffer.alloc(n, 0);
			for (let i = 0; i < n; i++) payload[i] = 33 + (i * 7) % 90;
			const from = c.frames.length;
			c.sock.write(wsClientFrame(payload, 0x9));
			await c.next((f) => f.opcode === 0xA, from, 10000, `the pong to ${n} bytes`);
			// A JSON ping after it: its answer comes after every pong the
			// protocol ping caused (lws sends control frames first).
			c.sock.write(wsClientFrame(JSON.stringify({ type: 'ping' })));
			await c.nextJson((m) => m.type === 'pong', from, 10000, 'the JSON pong');
			const pongs = c.frames.slice(from).filter((f) => f.opcode === 0xA);
			assert.deepEqual(pongs.map((f) => f.payload.length), [n]);
			assert.ok(pongs[0].payload.equals(payload), 'payload echoed unchanged');
		}
	});

	test('the catalog cache keeps at most catalog.max_entries products', async () => {
		for (let i = 0; i < 60; i++) {
			const e = eventId('unknown');
			await kit.publish({ event_id: e, product_id: 7000000 + i, stock: i % 3 });
			await kit.processed(e);
		}
		const entries = await kit.metric('stockalert_catalog_entries');
		assert.ok(entries >= 1 && entries <= 16, `catalog holds ${entries}`);
		assert.ok(await kit.metric('stockalert_catalog_evictions_total') >= 60 - 16);
	});
});

describe('bounds (subscriptions.max_inflight_per_user 4)', () => {
	let kit;

	before(async () => {
		kit = await alertsKit({
			overrides: { ws: { max_inflight_per_socket: 1000 },
				subscriptions: { max_inflight_per_user: 4 } },
			products: [{ id: 1 }, { id: 2 }],
		});
	});
	after(async () => {
		const reports = await kit.close();
		assert.deepEqual(reports, []);
	});

	test('a user over the limit is refused with too_many_requests and 4029; others are not',
		async (t) => {
			const flooder = await rawClient(kit, 'flooder');
			t.after(() => flooder.sock.destroy());
			flooder.sock.write(floodFrames(1, 2000));
			const r = await apiCall(kit.daemons[0].url, 'PUT', '/api/me/subscriptions/2',
				{ token: kit.token('bystander'), timeout: 30000 });
			assert.equal(r.status, 201, r.text);
			const err = await flooder.nextJson((m) => m.type === 'error', 0, 15000,
				'an error frame');
			assert.equal(err.code, 'too_many_requests');
			assert.equal(await flooder.closeCode(), 4029);
			// Once its changes are answered, the same user may write again.
			await waitFor(async () => {
				const p = await apiCall(kit.daemons[0].url, 'PUT', '/api/me/subscriptions/2',
					{ token: kit.token('flooder') });
				return p.status === 201 || p.status === 200;
			}, { what: 'the flooder\'s next PUT accepted' });
		});
});
