// /ws under pressure (README.md, WebSocket protocol): heartbeat and idle drop, send queue
// overflow (4008) for pipelining and slow-reading clients with bounded
// memory, and SIGTERM with a couple of hundred clients (close 1001, exit 0).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import WebSocket from 'ws';

import {
	makeConfig, startDaemon, waitReady, waitFor, stop, signJwt, sanitizerReport, have,
	wsTrack, wsRawConnect, wsClientFrame, wsParseFrames, metricValue, rssKiB, sleep, stopClean,
} from './lib/harness.mjs';

const nowS = () => Math.floor(Date.now() / 1000);
const GAUGE = 'stockalert_ws_connections';
// RSS figures under ASan only mean something with a small quarantine (the
// default keeps 256 MB of freed memory around).
const ASAN_ENV = {
	ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'quarantine_size_mb=16'].filter(Boolean).join(':'),
};

function tracked(t) {
	const list = [];
	t.after(() => { for (const x of list) x.ws ? x.ws.terminate() : x.destroy(); });
	return (x) => { list.push(x); return x; };
}

async function hello(c) {
	await c.opened;
	return c.next((m) => m.type === 'hello', 10000, 'hello');
}

async function pingPong(c, timeout = 10000) {
	c.send({ type: 'ping' });
	await c.next((m) => m.type === 'pong', timeout, 'pong');
}

// Reads a raw socket's server frames from now on; resolves `ended` when the
// server closes the TCP connection.
function readFrames(raw) {
	const st = { buf: raw.rest, frames: [], pingsAt: [], ended: null };
	const parse = () => {
		const { frames, rest } = wsParseFrames(st.buf);
		for (const f of frames) {
			if (f.opcode === 0x9) st.pingsAt.push(Date.now());
			st.frames.push(f);
		}
		st.buf = rest;
	};
	st.ended = new Promise((resolve) => {
		raw.sock.on('data', (d) => { st.buf = Buffer.concat([st.buf, d]); parse(); });
		raw.sock.on('error', () => {});
		raw.sock.on('close', () => resolve(Date.now()));
	});
	parse();
	raw.sock.resume();
	return st;
}

function closeCodeOf(frames) {
	const f = frames.find((x) => x.opcode === 0x8);
	return f && f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
}

describe('heartbeat (ping_interval_s 1, idle_timeout_s 3)', () => {
	let cfg;
	let d;

	before(async () => {
		cfg = await makeConfig({ ws: { ping_interval_s: 1, idle_timeout_s: 3 } });
		d = startDaemon(cfg);
		await waitReady(d);
	});
	after(() => stopClean(d));

	test('a peer that never answers pings is dropped; one that does stays', async (t) => {
		const keep = tracked(t);
		const tok = signJwt({ sub: 'hb', exp: nowS() + 600 }, cfg.secret);
		// `ws` answers protocol pings by itself.
		const good = keep(wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${tok}`)));
		const h = await hello(good);
		assert.equal(h.heartbeat_s, 1);

		const t0 = Date.now();
		const raw = await wsRawConnect(d.port, `/ws?token=${tok}`);
		keep(raw.sock);
		const st = readFrames(raw);
		const endedAt = await Promise.race([st.ended,
			sleep(3000 + 6000).then(() => null)]);
		assert.ok(endedAt, `silent peer still connected after 9 s; ${st.pingsAt.length} pings seen`);
		const lived = endedAt - t0;
		assert.ok(st.pingsAt.length >= 1, 'no protocol ping before the drop');
		assert.ok(st.pingsAt[0] - t0 < 2500, `first ping after ${st.pingsAt[0] - t0} ms`);
		assert.ok(lived >= 2000, `dropped after only ${lived} ms (idle_timeout_s is 3)`);

		// The answering peer outlives idle_timeout_s by a margin.
		await waitFor(() => Date.now() - t0 > 3000 + 2000, { timeout: 10000, interval: 100 });
		assert.equal(good.closeInfo, null, `answering peer closed: ${JSON.stringify(good.closeInfo)}`);
		await pingPong(good);
		await waitFor(async () => (await metricValue(d.url, GAUGE)) === 1,
			{ timeout: 5000, what: 'gauge back to 1' });
	});
});

describe('send queue overflow (send_queue_max 4)', () => {
	let cfg;
	let d;
	const tok = (sub) => signJwt({ sub, exp: nowS() + 600 }, cfg.secret);

	before(async () => {
		cfg = await makeConfig({ ws: { send_queue_max: 4, max_connections_per_user: 8 } });
		d = startDaemon(cfg, { env: ASAN_ENV });
		await waitReady(d);
	});
	after(() => stopClean(d));

	test('a burst of 50 pings in one write from a non-reader → 4008; others unaffected',
		async (t) => {
			const keep = tracked(t);
			const healthy = keep(wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${tok('burst')}`)));
			await hello(healthy);
			const raw = await wsRawConnect(d.port, `/ws?token=${tok('burst')}`);
			keep(raw.sock);
			const ping = wsClientFrame('{"type":"ping"}');
			raw.sock.write(Buffer.concat(Array(50).fill(ping)));
			// Reading starts only now: the close frame must be there.
			const st = readFrames(raw);
			await Promise.race([st.ended, sleep(15000)]);
			assert.equal(closeCodeOf(st.frames), 4008,
				`frames: ${st.frames.map((f) => f.opcode).join(',')}`);
			const pongs = st.frames.filter((f) => f.opcode === 1 &&
				String(f.payload).includes('pong')).length;
			assert.ok(pongs <= 4, `${pongs} pongs before 4008 with send_queue_max 4`);
			await pingPong(healthy);
			await waitFor(async () => (await metricValue(d.url, GAUGE)) === 1,
				{ timeout: 10000, what: 'gauge back to 1' });
		});

	test('a slow reader is closed; a healthy socket of the same user keeps its pongs; RSS bounded',
		{ skip: !have('python3') && 'needs python3 (SO_RCVBUF for a small window)' },
		async (t) => {
			const keep = tracked(t);
			const healthy = keep(wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${tok('slow')}`)));
			await hello(healthy);
			const rss0 = rssKiB(d.pid);
			// Node cannot shrink a socket's receive buffer; without that the
			// kernel buffers tens of MB of pongs before the daemon notices.
			const py = spawn('python3', ['-c', SLOW_READER, String(d.port),
				`/ws?token=${tok('slow')}`, '45'], { stdio: ['ignore', 'pipe', 'pipe'] });
			t.after(() => { try { py.kill('SIGKILL'); } catch { /* gone */ } });
			let out = '';
			let err = '';
			py.stdout.on('data', (x) => { out += x; });
			py.stderr.on('data', (x) => { err += x; });
			const exited = new Promise((r) => py.on('exit', r));

			await waitFor(() => out.includes('"open"'), { timeout: 10000, what: 'slow reader open' });
			await waitFor(async () => (await metricValue(d.url, GAUGE)) === 2,
				{ timeout: 5000, what: 'two sockets' });
			// The healthy socket gets its pongs while the slow one is
			// flooding, until the daemon has dropped the slow one.
			let rounds = 0;
			let maxRss = rss0;
			await waitFor(async () => {
				await pingPong(healthy, 5000);
				rounds++;
				maxRss = Math.max(maxRss, rssKiB(d.pid));
				return (await metricValue(d.url, GAUGE)) === 1;
			}, { timeout: 60000, interval: 20, what: 'the slow reader to be dropped' });
			await exited;
			const res = JSON.parse(out.trim().split('\n').pop());
			t.diagnostic(`slow reader: ${JSON.stringify(res)}; ${rounds} healthy pongs; ` +
				`RSS ${rss0} → max ${maxRss} KiB`);
			assert.notEqual(res.event, 'open', `python: ${err}`);
			// The close frame may be lost when the daemon gives up on a peer
			// that does not read it, but when seen it must say 4008.
			if (res.close !== null) assert.equal(res.close, 4008);
			assert.ok(res.sent > 0);
			assert.ok(maxRss < 200 * 1024, `RSS ${maxRss} KiB`);
			assert.ok(maxRss - rss0 < 100 * 1024, `RSS grew ${maxRss - rss0} KiB`);
			assert.match(d.log(), /send queue overflow/);
			await pingPong(healthy);
		});
});

// Connects with SO_RCVBUF 4096, sends two masked pings per write (1 ms
// apart, so the daemon sees fewer than send_queue_max at a time and only
// the full socket buffers can overflow the queue), never reads, until the
// daemon closes or the time limit; then reads what arrived. Prints
// {"event":"open"} then {"event":"done",...}.
const SLOW_READER = String.raw`
import base64, json, os, socket, struct, sys, time
port, path, limit = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.connect(("127.0.0.1", port))
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
           % (path, port, key)).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(4096)
    if not d: break
    buf += d
head, _, data = buf.partition(b"\r\n\r\n")
if not head.startswith(b"HTTP/1.1 101"):
    print(json.dumps({"event": "refused", "head": head.decode("latin1")}), flush=True)
    sys.exit(1)
print(json.dumps({"event": "open"}), flush=True)
p = b'{"type":"ping"}'
s.settimeout(10)
sent, why, t0 = 0, "time limit", time.time()
while time.time() - t0 < limit:
    m = os.urandom(4)
    try:
        f = bytes([0x81, 0x80 | len(p)]) + m + bytes(b ^ m[i & 3] for i, b in enumerate(p))
        s.sendall(f + f)
    except socket.timeout:
        why = "send blocked 10 s"; break
    except OSError as e:
        why = e.__class__.__name__; break
    sent += 2
    time.sleep(0.001)
try:
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
except OSError as e:
    why += " / recv " + e.__class__.__name__
frames, close, i = 0, None, 0
while i + 2 <= len(data):
    n, h = data[i + 1] & 0x7f, 2
    if n == 126: n, h = struct.unpack(">H", data[i + 2:i + 4])[0], 4
    elif n == 127: n, h = struct.unpack(">Q", data[i + 2:i + 10])[0], 10
    if i + h + n > len(data): break
    if data[i] & 0x0f == 8 and n >= 2: close = struct.unpack(">H", data[i + h:i + h + 2])[0]
    frames += 1
    i += h + n
print(json.dumps({"event": "done", "sent": sent, "why": why, "frames": frames, "close": close,
                  "bytes": len(data), "secs": round(time.time() - t0, 2)}), flush=True)
`;

// 200 in scripts/test.sh; scripts/soak.sh runs it with SIGTERM_CLIENTS=10000.
const SIGTERM_CLIENTS = Number(process.env.SIGTERM_CLIENTS || 200);

describe(`SIGTERM with ${SIGTERM_CLIENTS} clients`, () => {
	test('every client gets close 1001 and the daemon exits 0 within shutdown_grace_s',
		async (t) => {
			const cfg = await makeConfig({ shutdown_grace_s: 5 });
			const d = startDaemon(cfg, { t });
			await waitReady(d);
			const keep = tracked(t);
			const N = SIGTERM_CLIENTS;
			const conns = [];
			for (let i = 0; i < N; i++) {
				// 4 sockets per user, within ws.max_connections_per_user (8).
				const tok = signJwt({ sub: `u${i % Math.max(50, Math.ceil(N / 4))}`,
					exp: nowS() + 600 }, cfg.secret);
				conns.push(keep(wsTrack(new WebSocket(`${d.wsUrl}/ws?token=${tok}`))));
			}
			await Promise.all(conns.map(hello));
			assert.equal(await metricValue(d.url, GAUGE), N);
			const r = await stop(d, 'SIGTERM', 15000);
			const infos = await Promise.all(conns.map((c) => Promise.race([c.closed,
				sleep(5000).then(() => ({ code: 'still open' }))])));
			const codes = {};
			for (const i of infos) codes[i.code] = (codes[i.code] || 0) + 1;
			assert.deepEqual(codes, { 1001: N }, `close codes ${JSON.stringify(codes)}`);
			assert.equal(r.killed, false, 'had to be SIGKILLed');
			assert.ok(r.ms <= 5000 + 1000, `took ${r.ms} ms (grace 5 s)`);
			assert.equal(sanitizerReport(d.log()), null);
			assert.equal(r.code, 0, `exit ${r.code} signal ${r.signal}\n${d.log().slice(-3000)}`);
		});
});

// A peer that takes the close frame but never answers it keeps its close
// under way for lws's 5 s. The stop closes a batch at a time (1,024 under
// way at most), so more silent peers than that must not hold back the
// others: every socket gets its 1001 within the grace, answered or not.
describe('SIGTERM with 1,500 peers that never answer the close', () => {
	test('each of them is sent close 1001 before the grace runs out', async (t) => {
		const N = 1500;
		const grace = 3;
		const cfg = await makeConfig({ shutdown_grace_s: grace });
		const d = startDaemon(cfg, { t });
		await waitReady(d);
		const keep = tracked(t);
		const socks = [];
		for (let i = 0; i < N; i += 100) {
			const batch = [];
			for (let j = i; j < Math.min(N, i + 100); j++) {
				const tok = signJwt({ sub: `silent-${j}`, exp: nowS() + 600 }, cfg.secret);
				batch.push(wsRawConnect(d.port, `/ws?token=${tok}`));
			}
			for (const c of await Promise.all(batch)) {
				assert.equal(c.status, 101);
				socks.push(keep(c.sock));
			}
		}
		await waitFor(async () => (await metricValue(d.url, GAUGE)) === N,
			{ timeout: 20000, what: `${N} sockets open` });
		// Nobody reads until the daemon is gone: what it sent waits in the
		// sockets' receive buffers.
		const r = await stop(d, 'SIGTERM', (grace + 10) * 1000);
		assert.equal(r.killed, false, 'had to be SIGKILLed');
		const got = await Promise.all(socks.map((sock) => new Promise((resolve) => {
			const parts = [];
			sock.on('data', (b) => parts.push(b));
			sock.on('error', () => {});
			sock.on('close', () => resolve(Buffer.concat(parts)));
			sock.resume();
		})));
		let closed1001 = 0;
		for (const buf of got) {
			const close = wsParseFrames(buf).frames.find((f) => f.opcode === 8);
			if (close && close.payload.length >= 2 && close.payload.readUInt16BE(0) === 1001)
				closed1001++;
		}
		assert.equal(closed1001, N, `${closed1001} of ${N} silent peers were sent close 1001`);
		assert.equal(sanitizerReport(d.log()), null);
	});
});
