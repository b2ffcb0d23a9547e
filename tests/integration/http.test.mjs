// The ops endpoints and the HTTP error contract (README.md, HTTP API), against one
// daemon talking to the fixture's Redis and MariaDB.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import {
	makeConfig, startDaemon, waitReady, stop, gentoken, rawRequest, parseErrorBody,
	parsePrometheus, sanitizerReport, STATIC_DIR,
} from './lib/harness.mjs';

describe('HTTP against the fixture servers', () => {
	let cfg;
	let d;
	let admin;

	before(async () => {
		cfg = await makeConfig();
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
});
