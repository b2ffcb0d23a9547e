// The ops endpoints and the HTTP error contract (README.md, HTTP API), against one
// daemon talking to the fixture's Redis and MariaDB.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import {
	makeConfig, startDaemon, waitReady, stop, gentoken, rawRequest, parseErrorBody,
	parsePrometheus, sanitizerReport, startMariadb, STATIC_DIR,
} from './lib/harness.mjs';

// A browser origin the daemon lists (allowed_origins) and one it does not.
const SHOP = 'http://shop.example:8443';
const OTHER = 'http://evil.example';

// Writes `bytes` in one write (pipelined requests) and reads the answers,
// `methods` naming each request's method (a HEAD answer has no body). Resolves
// { responses: [{ status, headers, body }], closed } once every answer is in
// (with `untilClose`: once the server has closed the connection).
function pipeline(port, bytes, methods, { untilClose = false, timeout = 20000 } = {}) {
	return new Promise((resolve, reject) => {
		const sock = net.connect(port, '127.0.0.1');
		let buf = Buffer.alloc(0);
		const responses = [];
		let done = false;
		const finish = (closed) => {
			if (done) return;
			done = true;
			clearTimeout(timer);
			sock.destroy();
			resolve({ responses, closed });
		};
		const parse = () => {
			for (;;) {
				const end = buf.indexOf('\r\n\r\n');
				if (end < 0) return;
				const lines = buf.toString('latin1', 0, end).split('\r\n');
				const m = lines[0].match(/^HTTP\/1\.[01] (\d{3})/);
				if (!m) throw new Error(`not HTTP: ${lines[0]}`);
				const headers = {};
				for (const l of lines.slice(1)) {
					const i = l.indexOf(':');
					if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
				}
				const head = methods[responses.length] === 'HEAD';
				const n = head ? 0 : Number(headers['content-length'] || 0);
				if (buf.length < end + 4 + n) return;
				responses.push({ status: Number(m[1]), headers,
					body: buf.toString('utf8', end + 4, end + 4 + n) });
				buf = buf.subarray(end + 4 + n);
			}
		};
		const timer = setTimeout(() => {
			if (done) return;
			done = true;
			sock.destroy();
			reject(new Error(`after ${timeout} ms: ${responses.length} answers ` +
				`(${responses.map((r) => r.status).join(', ')}), connection still open; ` +
				`pending: ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`));
		}, timeout);
		sock.on('connect', () => sock.write(bytes));
		sock.on('data', (d) => {
			buf = Buffer.concat([buf, d]);
			try { parse(); } catch (e) { done = true; sock.destroy(); reject(e); return; }
			if (!untilClose && responses.length >= methods.length) finish(false);
		});
		sock.on('error', () => {});
		sock.on('close', () => finish(true));
	});
}

describe('HTTP against the fixture servers', () => {
	let cfg;
	let d;
	let admin;

	before(async () => {
		cfg = await makeConfig({ allowed_origins: [SHOP] });
		d = startDaemon(cfg);
		await waitReady(d);
		admin = await gentoken(cfg.path, 'ops-admin', ['admin']);
	});

	after(async () => {
		const r = await stop(d, 'SIGTERM');
		assert.equal(r.code, 0, `exit ${r.code} signal ${r.signal}\n${d.log()}`);
		assert.equal(sanitizerReport(d.log()), null);
	});

	async function expectError(res, status) {
		const text = await res.text();
		assert.equal(res.status, status, `status ${res.status}: ${text}`);
		assert.match(res.headers.get('content-type') || '', /^application\/json/);
		return parseErrorBody(text);
	}

	test('GET /healthz is 200', async () => {
		const r = await fetch(`${d.url}/healthz`);
		await r.arrayBuffer();
		assert.equal(r.status, 200);
	});

	test('GET /readyz is 200 {"redis":"up","mysql":"up"}', async () => {
		const r = await fetch(`${d.url}/readyz`);
		assert.equal(r.status, 200);
		assert.match(r.headers.get('content-type') || '', /^application\/json/);
		const j = await r.json();
		assert.equal(j.redis, 'up');
		assert.equal(j.mysql, 'up');
	});

	test('GET /metrics is strict Prometheus text with stockalert_* names', async () => {
		// A 200 to count first, so the response counter has a code="200" row.
		await (await fetch(`${d.url}/healthz`)).arrayBuffer();
		const r = await fetch(`${d.url}/metrics`);
		assert.equal(r.status, 200);
		assert.match(r.headers.get('content-type') || '', /^text\/plain/);
		const text = await r.text();
		const m = parsePrometheus(text);
		assert.ok(m.samples.length > 0, 'no samples');
		// Ours, plus Prometheus's standard fd gauges (the alert rules use them).
		const OURS = /^(stockalert_|process_(open|max)_fds$)/;
		for (const s of m.samples) assert.match(s.name, OURS, `metric ${s.name} not stockalert_*`);
		for (const name of Object.keys(m.types)) assert.match(name, OURS);
		const find = (name, labels) => m.samples.find((s) => s.name === name &&
			Object.entries(labels).every(([k, v]) => s.labels[k] === v));
		const redisUp = find('stockalert_dependency_up', { dep: 'redis' });
		assert.ok(redisUp, 'no stockalert_dependency_up{dep="redis"}');
		assert.equal(redisUp.value, 1);
		const mysqlUp = find('stockalert_dependency_up', { dep: 'mysql' });
		assert.ok(mysqlUp, 'no stockalert_dependency_up{dep="mysql"}');
		assert.equal(mysqlUp.value, 1);
		const ok = find('stockalert_http_responses_total', { code: '200' });
		assert.ok(ok, 'no stockalert_http_responses_total{code="200"}');
		assert.ok(ok.value >= 1);
		assert.equal(m.types.stockalert_http_responses_total, 'counter');
		assert.equal(m.types.stockalert_dependency_up, 'gauge');
	});

	test('the response counter counts', async () => {
		const count = async (code) => {
			const m = parsePrometheus(await (await fetch(`${d.url}/metrics`)).text());
			const s = m.samples.find((x) => x.name === 'stockalert_http_responses_total' &&
				x.labels.code === code);
			return s ? s.value : 0;
		};
		const before404 = await count('404');
		for (let i = 0; i < 3; i++) await (await fetch(`${d.url}/no/such/${i}`)).arrayBuffer();
		assert.equal(await count('404'), before404 + 3);
	});

	test('unknown path: 404 with a JSON error body', async () => {
		await expectError(await fetch(`${d.url}/definitely/not/here`), 404);
		await expectError(await fetch(`${d.url}/api/nope`), 404);
	});

	test('wrong method on a known path: 405 with Allow', async () => {
		for (const p of ['/healthz', '/readyz', '/metrics']) {
			const r = await fetch(`${d.url}${p}`, { method: 'POST', body: '{}' });
			await expectError(r, 405);
			assert.match(r.headers.get('allow') || '', /\bGET\b/, `${p}: Allow header missing`);
		}
		const del = await fetch(`${d.url}/healthz`, { method: 'DELETE' });
		await expectError(del, 405);
	});

	test('Transfer-Encoding: chunked body is refused with 411', async () => {
		const res = await rawRequest(d.port,
			'POST /api/inventory/events HTTP/1.1\r\n' +
			`Host: 127.0.0.1:${d.port}\r\n` +
			`Authorization: Bearer ${admin}\r\n` +
			'Content-Type: application/json\r\n' +
			'Transfer-Encoding: chunked\r\n' +
			'Connection: close\r\n',
			'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n');
		assert.equal(res.status, 411, `status ${res.status}: ${res.body}`);
		parseErrorBody(res.body);
	});

	test('Content-Length over 64 KiB is refused with 413', async () => {
		const n = 64 * 1024 + 1;
		const body = '{"pad":"' + 'x'.repeat(n - 10) + '"}';
		assert.equal(body.length, n);
		const res = await rawRequest(d.port,
			'POST /api/inventory/events HTTP/1.1\r\n' +
			`Host: 127.0.0.1:${d.port}\r\n` +
			`Authorization: Bearer ${admin}\r\n` +
			'Content-Type: application/json\r\n' +
			`Content-Length: ${n}\r\n` +
			'Connection: close\r\n',
			// The server may answer on the headers alone; give it the
			// chance before sending the body.
			body, { holdBodyMs: 1000 });
		assert.equal(res.status, 413, `status ${res.status}: ${res.body}`);
		parseErrorBody(res.body);
	});

	test('the daemon still serves after the refused bodies', async () => {
		const r = await fetch(`${d.url}/healthz`);
		await r.arrayBuffer();
		assert.equal(r.status, 200);
	});

	test('GET / serves the demo page from static_dir', async () => {
		const r = await fetch(`${d.url}/`);
		assert.equal(r.status, 200);
		assert.match(r.headers.get('content-type') || '', /^text\/html/);
		const body = await r.text();
		assert.equal(body, fs.readFileSync(path.join(STATIC_DIR, 'index.html'), 'utf8'));
	});

	test('GET /index.html is the same page; a missing static file is 404', async () => {
		const r = await fetch(`${d.url}/index.html`);
		assert.equal(r.status, 200);
		assert.equal(await r.text(), fs.readFileSync(path.join(STATIC_DIR, 'index.html'), 'utf8'));
		const miss = await fetch(`${d.url}/no-such-file.css`);
		await miss.arrayBuffer();
		assert.equal(miss.status, 404);
	});

	test('path traversal does not escape static_dir', async () => {
		for (const p of ['/../../../../etc/passwd', '/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
			'/..%2f..%2f..%2fetc%2fpasswd']) {
			const res = await rawRequest(d.port,
				`GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n`);
			assert.ok(!/root:.*:0:0:/.test(res.body), `${p} leaked /etc/passwd`);
			assert.ok(res.status >= 400, `${p}: status ${res.status}`);
		}
	});
	// ---------------------------------------------------------- framing

	// A body-carrying request whose framing is in doubt, with a GET
	// pipelined behind its body: one 400, then the server hangs up, and
	// the GET never runs (it would answer 200).
	async function expectRefusedFraming(framing, what) {
		const body = JSON.stringify({ event_id: `fr-${Date.now()}`, product_id: 1, stock: 1 });
		const bytes = 'POST /api/inventory/events HTTP/1.1\r\nHost: x\r\n' +
			`Authorization: Bearer ${admin}\r\nContent-Type: application/json\r\n` +
			framing(body.length) + '\r\n' + body +
			'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
		const r = await pipeline(d.port, bytes, ['POST', 'GET'], { untilClose: true });
		assert.deepEqual(r.responses.map((x) => x.status), [400],
			`${what}: ${JSON.stringify(r.responses)}`);
		assert.equal(r.closed, true, what);
		assert.equal(r.responses[0].headers.connection, 'close', what);
		assert.equal(parseErrorBody(r.responses[0].body).error.code, 'bad_request');
	}

	test('a framing header name with blanks is 400 and a close; the request behind never runs',
		async () => {
			const shapes = {
				'TE space-colon + CL': (n) =>
					`Transfer-Encoding : chunked\r\nContent-Length: ${n}\r\n`,
				'TE tab-colon + CL': (n) =>
					`Transfer-Encoding\t: chunked\r\nContent-Length: ${n}\r\n`,
				'CL space-colon': (n) => `Content-Length : ${n}\r\n`,
				'CL space-colon beside a CL': (n) =>
					`Content-Length: ${n}\r\nContent-Length  : 0\r\n`,
				'obs-fold: continuation line naming TE': (n) =>
					`Accept: */*\r\n Transfer-Encoding: chunked\r\nContent-Length: ${n}\r\n`,
				'obs-fold: TE value on a continuation line': (n) =>
					`Transfer-Encoding:\r\n chunked\r\nContent-Length: ${n}\r\n`,
				'TE and CL both': (n) =>
					`Transfer-Encoding: chunked\r\nContent-Length: ${n}\r\n`,
			};
			for (const [what, framing] of Object.entries(shapes)) {
				await expectRefusedFraming(framing, what);
			}
		});

	test('Content-Length is digits only and one value: 400 and a close otherwise', async () => {
		const shapes = {
			'plus sign': (n) => `Content-Length: +${n}\r\n`,
			'twice, same value': (n) => `Content-Length: ${n}\r\nContent-Length: ${n}\r\n`,
			'a list': (n) => `Content-Length: ${n}, ${n}\r\n`,
			'empty': () => 'Content-Length:\r\n',
		};
		for (const [what, framing] of Object.entries(shapes)) {
			await expectRefusedFraming(framing, what);
		}
	});

	test('a well-framed request and the one pipelined behind it both run', async () => {
		const body = JSON.stringify({ event_id: `ok-${Date.now()}`, product_id: 1, stock: 1 });
		const r = await pipeline(d.port, 'POST /api/inventory/events HTTP/1.1\r\nHost: x\r\n' +
			`Authorization: Bearer ${admin}\r\nContent-Type: application/json\r\n` +
			`Content-Length: ${body.length}\r\n\r\n${body}` +
			'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', ['POST', 'GET']);
		assert.equal(r.responses[1].status, 200, JSON.stringify(r.responses));
		assert.ok([202, 503].includes(r.responses[0].status), JSON.stringify(r.responses));
	});

	// ---------------------------------------------------------- pipelining, HEAD

	test('a static file and the request pipelined behind it are both answered', async () => {
		const page = fs.readFileSync(path.join(STATIC_DIR, 'index.html'), 'utf8');
		const r = await pipeline(d.port, 'GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n' +
			'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n' +
			'GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n' +
			'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', ['GET', 'GET', 'GET', 'GET']);
		assert.deepEqual(r.responses.map((x) => x.status), [200, 200, 200, 200]);
		assert.equal(r.responses[0].body, page);
		assert.match(r.responses[0].headers['content-type'], /^text\/html/);
		assert.equal(r.responses[0].headers['cache-control'], 'no-cache');
		assert.deepEqual(JSON.parse(r.responses[1].body), { status: 'ok' });
		assert.match(r.responses[2].headers['content-type'], /^text\/css/);
		assert.equal(r.closed, false);
	});

	test('HEAD answers what GET would, headers only, wherever GET works', async () => {
		const paths = ['/index.html', '/', '/healthz', '/metrics', '/api/me/subscriptions'];
		const req = (m, p) => `${m} ${p} HTTP/1.1\r\nHost: x\r\n` +
			`Authorization: Bearer ${admin}\r\n\r\n`;
		const methods = paths.flatMap(() => ['HEAD', 'GET']);
		const r = await pipeline(d.port,
			paths.map((p) => req('HEAD', p) + req('GET', p)).join(''), methods);
		paths.forEach((p, i) => {
			const head = r.responses[2 * i];
			const get = r.responses[2 * i + 1];
			assert.equal(head.status, get.status, `${p}: HEAD ${head.status}, GET ${get.status}`);
			assert.equal(head.status, 200, p);
			assert.equal(head.headers['content-type'], get.headers['content-type'], p);
			if (p !== '/metrics') { // the counters move between the two
				assert.equal(head.headers['content-length'], get.headers['content-length'], p);
			}
		});
		// HEAD where GET is not allowed: the same 405 with its Allow.
		const post = await pipeline(d.port,
			'HEAD /api/inventory/events HTTP/1.1\r\nHost: x\r\n\r\n', ['HEAD']);
		assert.equal(post.responses[0].status, 405);
		assert.match(post.responses[0].headers.allow, /POST/);
	});

	// ---------------------------------------------------------- CORS

	test('CORS: listed origins get Access-Control-Allow-Origin, others do not', async () => {
		for (const [origin, allowed] of [[SHOP, true], [OTHER, false], [null, false]]) {
			const r = await fetch(`${d.url}/api/me/subscriptions`, {
				headers: { Authorization: `Bearer ${admin}`, ...(origin ? { Origin: origin } : {}) },
			});
			await r.arrayBuffer();
			assert.equal(r.status, 200, `${origin}`);
			assert.equal(r.headers.get('access-control-allow-origin'), allowed ? origin : null);
			assert.match(r.headers.get('vary') || '', /\bOrigin\b/);
			assert.equal(r.headers.get('access-control-allow-credentials'), null);
		}
		// Errors carry it too, or a browser could not read why.
		const e = await fetch(`${d.url}/api/me/subscriptions`, { headers: { Origin: SHOP } });
		assert.equal(e.status, 401);
		assert.equal(e.headers.get('access-control-allow-origin'), SHOP);
		parseErrorBody(await e.text());
	});

	test('CORS preflight: 204 with the route\'s methods for a listed origin, 403 otherwise',
		async () => {
			const pre = (origin, p = '/api/me/subscriptions/7') => fetch(`${d.url}${p}`, {
				method: 'OPTIONS',
				headers: { Origin: origin, 'Access-Control-Request-Method': 'PUT',
					'Access-Control-Request-Headers': 'authorization, content-type' },
			});
			const ok = await pre(SHOP);
			await ok.arrayBuffer();
			assert.equal(ok.status, 204);
			assert.equal(ok.headers.get('access-control-allow-origin'), SHOP);
			const methods = (ok.headers.get('access-control-allow-methods') || '').split(/,\s*/);
			assert.ok(methods.includes('PUT') && methods.includes('DELETE'), methods.join());
			const hdrs = (ok.headers.get('access-control-allow-headers') || '').toLowerCase();
			assert.match(hdrs, /\bauthorization\b/);
			assert.match(hdrs, /\bcontent-type\b/);
			assert.match(ok.headers.get('vary') || '', /\bOrigin\b/);
			assert.equal(ok.headers.get('access-control-allow-credentials'), null);

			const no = await pre(OTHER);
			assert.equal(no.status, 403);
			assert.equal(no.headers.get('access-control-allow-origin'), null);
			assert.equal(parseErrorBody(await no.text()).error.code, 'origin_refused');

			const miss = await pre(SHOP, '/api/nothing-here');
			await miss.arrayBuffer();
			assert.equal(miss.status, 404);
		});
});

// A backend that does not answer: the REST answer is a 503 within
// http.request_timeout_ms, not a connection closed with nothing by lws's
// timeout; the late answer is dropped, and the next request is served.
describe('HTTP request deadline', () => {
	test('a stalled MySQL query is answered 503 by the deadline', async (t) => {
		const mysql = await startMariadb({ t });
		const cfg = await makeConfig({ http: { request_timeout_ms: 1000 } }, { mysql });
		const d = startDaemon(cfg, { t });
		await waitReady(d);
		const tok = await gentoken(cfg.path, 'deadline-user', []);
		process.kill(mysql.pid, 'SIGSTOP');
		let resumed = false;
		t.after(() => { if (!resumed) process.kill(mysql.pid, 'SIGCONT'); });
		const t0 = Date.now();
		const res = await rawRequest(d.port, 'GET /api/products/1 HTTP/1.1\r\nHost: x\r\n' +
			`Authorization: Bearer ${tok}\r\n`, '', { timeout: 30000 });
		t.diagnostic(`503 after ${Date.now() - t0} ms (deadline 1000 ms)`);
		assert.equal(res.status, 503, `status ${res.status}: ${res.body}`);
		const j = parseErrorBody(res.body);
		assert.equal(j.error.code, 'unavailable');
		assert.match(j.error.message, /in time/);
		process.kill(mysql.pid, 'SIGCONT');
		resumed = true;
		// The store answers late (or fails over); either way the daemon
		// serves the next request.
		const again = await fetch(`${d.url}/api/products/1`, {
			headers: { Authorization: `Bearer ${tok}` },
		});
		await again.arrayBuffer();
		assert.ok([200, 404, 503].includes(again.status), `status ${again.status}`);
		const r = await stop(d, 'SIGTERM');
		assert.equal(r.code, 0, d.log());
		assert.equal(sanitizerReport(d.log()), null);
	});
});
