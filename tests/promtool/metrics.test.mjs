// `promtool check metrics` (Debian's prometheus package) on the daemon's own
// /metrics, after traffic that gives every histogram samples: what a
// Prometheus server and its linter make of the exposition. A corrupted copy
// must be refused, so the check cannot pass by not looking.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

import {
	alertsKit, wsWaitFor, apiCall, parsePrometheus, randomId, eventId as eid,
} from '../integration/lib/harness.mjs';

function promtool(args, input) {
	const r = spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 60000 });
	if (r.error) {
		throw new Error(`promtool: ${r.error.message} (install Debian's prometheus package: ` +
			'scripts/test.sh does)');
	}
	return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('promtool check metrics', () => {
	let kit;
	let text;
	const P = 401;

	before(async () => {
		kit = await alertsKit({ products: [{ id: P, stock: 0, threshold: 5 }] });
		const u = `p-${randomId(3)}`;
		await kit.subscribe(u, P);
		const h = await kit.connect(u);
		const first = eid('p');
		// One event with the producer's ts, one without (both origins).
		await kit.publish({ event_id: first, product_id: P, stock: 5, prev_stock: 0,
			ts: Date.now() });
		const { msg: a0 } = await wsWaitFor(h, (m) => m.type === 'alert', 10000, 'an alert');
		h.ws.close();
		const missed = eid('p');
		await kit.publish({ event_id: missed, product_id: P, stock: 5, prev_stock: 0 });
		await kit.processed(missed);
		const h2 = await kit.connect(u, { since: a0.id });
		await wsWaitFor(h2, (m) => m.type === 'alert' && m.event_id === missed, 10000,
			'the replayed alert');
		await wsWaitFor(h2, (m) => m.type === 'replay_done', 10000, 'replay_done');
		const tok = kit.token(u);
		await apiCall(kit.daemons[0].url, 'GET', `/api/products/${P}`, { token: tok });
		await apiCall(kit.daemons[0].url, 'GET', '/api/me/alerts', { token: tok });
		await apiCall(kit.daemons[0].url, 'GET', '/api/nothing/here', { token: tok });
		const live = eid('p');
		await kit.publish({ event_id: live, product_id: P, stock: 5, prev_stock: 0 });
		await wsWaitFor(h2, (m) => m.type === 'alert' && m.event_id === live, 10000,
			'a live alert without ts');
		const r = await fetch(`${kit.daemons[0].url}/metrics`, { signal: AbortSignal.timeout(5000) });
		text = await r.text();
	});
	after(async () => { if (kit) await kit.close(); });

	test('every histogram has samples', () => {
		const m = parsePrometheus(text);
		const hists = Object.entries(m.types).filter(([, t]) => t === 'histogram')
			.map(([n]) => n);
		assert.ok(hists.length >= 5, hists.join(' '));
		for (const n of hists) {
			const c = m.samples.filter((s) => s.name === `${n}_count`)
				.reduce((a, s) => a + s.value, 0);
			assert.ok(c > 0, `${n} has no sample`);
		}
	});

	test('promtool accepts the exposition, lint included', () => {
		const r = promtool(['check', 'metrics'], text);
		assert.equal(r.code, 0, `promtool check metrics:\n${r.out}`);
	});

	test('promtool refuses a malformed copy (the check is not vacuous)', () => {
		const bad = [
			text.replace('# TYPE stockalert_ws_connections gauge',
				'# TYPE stockalert_ws_connections gauge\n# TYPE stockalert_ws_connections gauge'),
			text.replace(/^(stockalert_ws_connections) .*$/m, '$1 not-a-number'),
			text.replace(/^(stockalert_event_processing_seconds_sum) .*$/m,
				'$1{} 1 2 3'),
		];
		for (const b of bad) {
			assert.notEqual(b, text, 'the corruption applies');
			assert.notEqual(promtool(['check', 'metrics'], b).code, 0);
		}
	});
});
