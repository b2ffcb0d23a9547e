// The demo page (/) and the operations page (/ops.html) in a real headless Chromium
// (Debian's `chromium`, driven by playwright-core) against the real daemon: the
// "Notify me" switch and an alert toast, resume after a daemon restart (?since=), the
// signed-out state for an expired or forged token, the admin feed, the static files'
// content types. Screenshots are left in ${SA_BUILD_DIR}/test-artifacts/: browser-toast.png
// (the page with its toast), browser-ops.png, browser-signed-out.png.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import {
	alertsKit, apiCall, BUILD_DIR, freePort, randomId, sanitizerReport, signJwt, sleep,
	startDaemon, STATIC_DIR, stop, waitFor, waitReady,
	eventId as eid,
} from './lib/harness.mjs';

const CHROMIUM = process.env.SA_CHROMIUM || '/usr/bin/chromium';

// Debian's chromium, headless, with nothing that reaches out of the machine.
async function launchChromium() {
	const { chromium } = await import('playwright-core');
	return chromium.launch({
		executablePath: CHROMIUM,
		headless: true,
		args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
			'--no-first-run', '--disable-background-networking',
			'--disable-component-update', '--disable-sync'],
	});
}
const ARTIFACTS = path.join(BUILD_DIR, 'test-artifacts');

// The catalogue the page lists (its <meta name="stockalert-products">), as scripts/run.sh
// loads it.
const DEMO = [
	{ id: 1, name: 'Espresso machine', stock: 0, threshold: 3 },
	{ id: 2, name: 'Burr grinder', stock: 2, threshold: 5 },
	{ id: 3, name: 'Milk frother', stock: 40, threshold: 5 },
	{ id: 4, name: 'Pour-over kettle', stock: 0, threshold: 2 },
	{ id: 5, name: 'Coffee scale', stock: 4, threshold: 5 },
	{ id: 6, name: 'Travel mug', stock: 120, threshold: 10 },
];

const nowS = () => Math.floor(Date.now() / 1000);

describe('browser: demo page and operations page in Chromium', () => {
	let kit;
	let browser;

	before(async () => {
		if (!fs.existsSync(CHROMIUM)) {
			throw new Error(`${CHROMIUM} is missing: install Debian's chromium ` +
				'(apt-get install chromium; scripts/test.sh does it)');
		}
		kit = await alertsKit({
			// No leeway: the expiry tests need not wait 30 s past exp.
			overrides: { alerts: { max_per_window: 1000, window_s: 60 }, auth: { leeway_s: 0 } },
			products: DEMO,
		});
		browser = await launchChromium();
	});

	after(async () => {
		if (browser) await browser.close().catch(() => {});
		if (kit) {
			const reports = await kit.close();
			// Leak reports at exit belong to the modules' own tests; memory errors
			// and undefined behaviour fail this one too.
			for (const r of reports) {
				if (/ERROR: AddressSanitizer|runtime error:|exit /.test(r)) {
					assert.fail(`daemon did not stop cleanly:\n${r}`);
				}
			}
		}
	});

	// A fresh browser context (own storage) with every WebSocket it opens recorded:
	// { page, sockets: [{url, at, frames: [parsed], closed}], errors }.
	async function openPage(t, pathAndHash, { clock = false } = {}) {
		const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
		t.after(() => context.close().catch(() => {}));
		const page = await context.newPage();
		const sockets = [];
		const errors = [];
		page.on('pageerror', (e) => errors.push(String(e && e.stack || e)));
		page.on('websocket', (ws) => {
			const rec = { url: ws.url(), at: Date.now(), frames: [], closed: false };
			sockets.push(rec);
			ws.on('framereceived', (f) => {
				try { rec.frames.push(JSON.parse(f.payload)); } catch { /* not JSON */ }
			});
			ws.on('close', () => { rec.closed = true; });
		});
		if (clock) await page.clock.install();
		await page.goto(`${kit.daemons[0].url}${pathAndHash}`);
		return { page, sockets, errors };
	}

	// Polls from node (never through the page's timers, which the clock may hold).
	const until = (fn, what, timeout = 15000) => waitFor(fn, { timeout, interval: 50, what });
	const connStatus = (page) => page.locator('#conn').getAttribute('data-status');
	const waitStatus = (page, s, timeout) =>
		until(async () => (await connStatus(page)) === s, `connection status ${s}`, timeout);
	const toastFor = (page, name) => page.locator('.toast', { hasText: name });

	test('Notify me on a sold-out product, then a back-in-stock toast', { timeout: 120000 },
		async (t) => {
			const user = `shopper-${randomId(3)}`;
			const { page, sockets, errors } = await openPage(t, `/#token=${kit.token(user)}`);

			await waitStatus(page, 'open');
			assert.equal(await page.locator('#conn-text').textContent(), 'Live');
			// The token is not left in the address bar.
			assert.doesNotMatch(page.url(), /token=/);
			const card = page.locator('[data-product-id="1"]');
			await until(async () => (await card.count()) === 1, 'product 1 on the page');
			assert.equal(await page.locator('.product').count(), DEMO.length);
			assert.equal(await card.locator('.product-name').textContent(), 'Espresso machine');
			assert.equal(await card.locator('.stock').textContent(), 'Sold out');
			const box = card.locator('input.notify');
			assert.equal(await box.isChecked(), false);

			await card.locator('label.switch').click();
			await until(async () => await box.isChecked() && await box.isEnabled(),
				'the switch on and settled');
			const subs = await apiCall(kit.daemons[0].url, 'GET', '/api/me/subscriptions',
				{ token: kit.token(user) });
			assert.deepEqual(subs.json.subscriptions.map((s) => s.product_id), [1], subs.text);

			const ev = eid('bis');
			assert.ok(await kit.publish({ event_id: ev, product_id: 1, stock: 5, prev_stock: 0 }) >= 1);
			const toast = toastFor(page, 'Espresso machine');
			await until(async () => (await toast.count()) === 1, 'the toast for product 1');
			assert.match(await toast.textContent(), /Back in stock/);
			assert.equal(await card.locator('.stock').textContent(), '5 in stock');
			const item = page.locator('#history li', { hasText: 'Espresso machine' });
			assert.equal(await item.count(), 1);
			assert.match(await item.textContent(), /Back in stock/);
			assert.equal(sockets.length, 1, 'one socket for the whole session');
			// The toast is announced: it sits in a polite live region.
			assert.equal(await page.locator('#toasts').getAttribute('aria-live'), 'polite');

			fs.mkdirSync(ARTIFACTS, { recursive: true });
			await page.screenshot({ path: path.join(ARTIFACTS, 'browser-toast.png'),
				animations: 'disabled' });

			// A reload keeps the session (token kept for the tab), shows the switch
			// from the server's subscriptions and the alert from the history.
			await page.reload();
			await waitStatus(page, 'open');
			await until(async () => (await card.count()) === 1 && await box.isChecked(),
				'the switch still on after a reload');
			await until(async () => (await item.count()) === 1, 'the alert in the history');
			// Switching off deletes the subscription.
			await card.locator('label.switch').click();
			await until(async () => !(await box.isChecked()) && await box.isEnabled(),
				'the switch off');
			const after = await apiCall(kit.daemons[0].url, 'GET', '/api/me/subscriptions',
				{ token: kit.token(user) });
			assert.deepEqual(after.json.subscriptions, []);
			assert.deepEqual(errors, []);
		});

	test('after a daemon restart the page resumes with ?since= and shows the missed alert',
		{ timeout: 180000 }, async (t) => {
			const user = `resumer-${randomId(3)}`;
			await kit.subscribe(user, 4);
			// The page's clock is held while the daemon is away, so the reconnect
			// happens exactly when the test lets time run again: after the event.
			const { page, sockets, errors } = await openPage(t, `/#token=${kit.token(user)}`,
				{ clock: true });
			await waitStatus(page, 'open');
			const card = page.locator('[data-product-id="4"]');
			await until(async () => (await card.count()) === 1 &&
				await card.locator('input.notify').isChecked(), 'product 4 followed');
			assert.equal(sockets.length, 1);
			assert.doesNotMatch(sockets[0].url, /since=/, 'first visit: nothing to resume');
			// One alert live: its id is where the page resumes from.
			const ev1 = eid('live');
			assert.ok(await kit.publish({ event_id: ev1, product_id: 4, stock: 3, prev_stock: 0 }) >= 1);
			const first = page.locator('.toast[data-kind="back_in_stock"]', { hasText: 'Pour-over kettle' });
			await until(async () => (await first.count()) === 1, 'the live alert as a toast');
			const firstId = await first.getAttribute('data-alert-id');
			assert.match(firstId, /^\d+-\d+$/);

			await page.clock.pauseAt(new Date(Date.now() + 1000));
			const old = kit.daemons[0];
			const r = await stop(old, 'SIGTERM');
			assert.equal(r.code, 0, `daemon exit: ${JSON.stringify(r)}`);
			assert.equal(sanitizerReport(old.log()), null, sanitizerReport(old.log()) || '');
			await waitStatus(page, 'reconnecting');

			const d = startDaemon(old.cfg);
			kit.daemons[0] = d;
			await waitReady(d);
			const ev = eid('missed');
			assert.ok(await kit.publish({ event_id: ev, product_id: 4, stock: 0, prev_stock: 3 }) >= 1,
				'the restarted daemon does not listen');
			const outcome = await kit.processed(ev, 1);
			assert.equal(outcome.kind, 'sold_out', JSON.stringify(outcome));
			assert.equal(sockets.length, 1, 'the page reconnected before it was allowed to');

			await page.clock.resume();
			const toast = page.locator('.toast[data-kind="sold_out"]', { hasText: 'Pour-over kettle' });
			await until(async () => (await toast.count()) === 1, 'the missed alert as a toast', 30000)
				.catch(async (e) => {
					e.message += `\nstatus: ${await page.locator('#conn-text').textContent()}` +
						`\nsockets: ${JSON.stringify(sockets).slice(0, 3000)}`;
					throw e;
				});
			assert.match(await toast.textContent(), /Sold out/);
			await waitStatus(page, 'open');
			assert.equal(await card.locator('.stock').textContent(), 'Sold out');
			assert.deepEqual(await page.locator('#history li .history-kind').allTextContents(),
				['Sold out', 'Back in stock'], 'the history, newest first');

			// It came through the resume: the new socket asked for ?since= and got the
			// alert before replay_done.
			const ws = sockets.at(-1);
			assert.ok(sockets.length >= 2);
			assert.equal(new URL(ws.url).searchParams.get('since'), firstId, ws.url);
			const kinds = ws.frames.map((f) => f.type);
			const ai = ws.frames.findIndex((f) => f.type === 'alert' && f.event_id === ev);
			const di = kinds.indexOf('replay_done');
			assert.ok(ai >= 0 && di > ai, `frames: ${JSON.stringify(ws.frames)}`);
			assert.equal(ws.frames[di].recovered, true);
			assert.equal(ws.frames[di].count, 1);
			assert.deepEqual(errors, []);
		});

	test('an expired or forged token: signed out, no endless retries', { timeout: 120000 },
		async (t) => {
			const cases = {
				expired: signJwt({ sub: `late-${randomId(3)}`, exp: nowS() - 600 }, kit.secret),
				forged: signJwt({ sub: `forger-${randomId(3)}`, exp: nowS() + 3600 },
					'not the secret'),
			};
			for (const [what, token] of Object.entries(cases)) {
				const { page, sockets, errors } = await openPage(t, `/#token=${token}`);
				await waitStatus(page, 'signed-out');
				assert.equal(await page.locator('#signed-out').isVisible(), true, what);
				assert.equal(await page.locator('#shop').isVisible(), false, what);
				assert.equal(await page.locator('#conn-text').textContent(), 'Signed out');
				if (what === 'expired') {
					fs.mkdirSync(ARTIFACTS, { recursive: true });
					await page.screenshot({ path: path.join(ARTIFACTS, 'browser-signed-out.png') });
				}
				// Watch for a while: a client that keeps trying would show here.
				await sleep(3000);
				assert.ok(sockets.length <= 2, `${what}: ${sockets.length} WebSocket attempts`);
				assert.equal(await connStatus(page), 'signed-out', what);
				assert.deepEqual(errors, [], what);
			}
		});

	test('a token that expires: close 4001 while connected, refused after a reconnect',
		{ timeout: 120000 }, async (t) => {
			// While connected: the server closes with 4001 at exp, the page has no
			// fresh token, so it signs out instead of reconnecting.
			const soon = signJwt({ sub: `brief-${randomId(3)}`, exp: nowS() + 6 }, kit.secret);
			const a = await openPage(t, `/#token=${soon}`);
			await waitStatus(a.page, 'open');
			await waitStatus(a.page, 'signed-out', 15000);
			assert.equal(await a.page.locator('#signed-out').isVisible(), true);
			await sleep(2000);
			assert.equal(a.sockets.length, 1, 'reconnected with an expired token');

			// While away: the token expires during a restart; the reconnect finds it
			// refused (only REST can tell: the upgrade's 401 is invisible to a page)
			// and signs out.
			const exp = nowS() + 6;
			const later = signJwt({ sub: `away-${randomId(3)}`, exp }, kit.secret);
			const b = await openPage(t, `/#token=${later}`);
			await waitStatus(b.page, 'open');
			const old = kit.daemons[0];
			assert.equal((await stop(old, 'SIGTERM')).code, 0);
			await waitStatus(b.page, 'reconnecting');
			await until(() => nowS() > exp, 'the token to expire', 10000);
			const d = startDaemon(old.cfg);
			kit.daemons[0] = d;
			await waitReady(d);
			// The browser's "online" event makes the client retry at once.
			await b.page.evaluate(() => window.dispatchEvent(new Event('online')));
			await waitStatus(b.page, 'signed-out', 20000);
			const n = b.sockets.length;
			await sleep(2000);
			assert.equal(b.sockets.length, n, 'kept trying after being signed out');
			assert.deepEqual([...a.errors, ...b.errors], []);
		});

	test('operations page: live sold-out feed for an admin, refused without the role',
		{ timeout: 120000 }, async (t) => {
			const admin = kit.token(`ops-${randomId(3)}`, ['admin']);
			const { page, errors } = await openPage(t, `/ops.html#token=${admin}`);
			await waitStatus(page, 'open');
			const ev = eid('so');
			assert.ok(await kit.publish({ event_id: ev, product_id: 5, stock: 0, prev_stock: 4 }) >= 1);
			const row = page.locator('#feed tr', { hasText: 'Coffee scale' });
			await until(async () => (await row.count()) === 1, 'the sold-out row');
			assert.match(await row.textContent(), /Sold out/);
			assert.match(await row.textContent(), /4 → 0/);
			assert.equal(await page.locator('#count-sold-out').textContent(), '1');
			fs.mkdirSync(ARTIFACTS, { recursive: true });
			await page.screenshot({ path: path.join(ARTIFACTS, 'browser-ops.png'),
				animations: 'disabled' });
			assert.deepEqual(errors, []);

			const user = await openPage(t, `/ops.html#token=${kit.token(`nobody-${randomId(3)}`)}`);
			await until(async () => await user.page.locator('#signed-out').isVisible(),
				'the not-an-operator notice');
			assert.match(await user.page.locator('#signed-out-text').textContent(), /admin/);
			assert.equal(user.sockets.length, 0);
		});

	test('static files are served with their content types', async () => {
		const url = kit.daemons[0].url;
		for (const [p, type] of [['/', /^text\/html/], ['/stockalert.js', /javascript/],
			['/app.js', /javascript/], ['/ui.js', /javascript/], ['/ops.js', /javascript/],
			['/style.css', /^text\/css/], ['/ops.html', /^text\/html/]]) {
			const r = await fetch(`${url}${p}`);
			assert.equal(r.status, 200, p);
			assert.match(r.headers.get('content-type') || '', type, p);
			await r.arrayBuffer();
		}
		const html = await (await fetch(`${url}/`)).text();
		// No resources from elsewhere.
		assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
	});
});

// The README's cross-origin use: a shop page on its own origin imports its copy of
// stockalert.js and talks to the daemon with baseUrl. The daemon lists the shop's
// origin (allowed_origins), so the REST calls (CORS, with their preflights) and the
// socket work; the same page reached by an origin not listed cannot subscribe.
describe('browser: stockalert.js on a shop page of another origin', () => {
	const P = 901;
	let kit;
	let browser;
	let shop;
	let shopPort;

	before(async () => {
		shopPort = await freePort();
		const js = fs.readFileSync(path.join(STATIC_DIR, 'stockalert.js'));
		const page = '<!doctype html><meta charset="utf-8"><title>shop</title>' +
			'<script type="module">import { StockAlertClient } from \'/stockalert.js\';' +
			'window.StockAlertClient = StockAlertClient; window.ready = true;</script>';
		shop = http.createServer((req, res) => {
			const type = req.url === '/stockalert.js' ? 'text/javascript' : 'text/html';
			res.writeHead(200, { 'content-type': type });
			res.end(req.url === '/stockalert.js' ? js : page);
		});
		await new Promise((resolve) => shop.listen(shopPort, '127.0.0.1', resolve));
		kit = await alertsKit({
			overrides: { allowed_origins: [`http://127.0.0.1:${shopPort}`] },
			products: [{ id: P, name: 'Cross-origin kettle', stock: 0, threshold: 2 }],
		});
		browser = await launchChromium();
	});

	after(async () => {
		if (browser) await browser.close().catch(() => {});
		if (shop) await new Promise((resolve) => shop.close(resolve));
		if (kit) {
			const reports = await kit.close();
			for (const r of reports) {
				if (/ERROR: AddressSanitizer|runtime error:|exit /.test(r)) {
					assert.fail(`daemon did not stop cleanly:\n${r}`);
				}
			}
		}
	});

	async function shopPage(t, origin) {
		const context = await browser.newContext();
		t.after(() => context.close().catch(() => {}));
		const page = await context.newPage();
		await page.goto(`${origin}/shop.html`);
		await page.waitForFunction(() => window.ready === true);
		return page;
	}

	test('a listed origin subscribes, lists, gets its alert and unsubscribes', { timeout: 60000 },
		async (t) => {
			const user = `xo-${randomId(3)}`;
			const page = await shopPage(t, `http://127.0.0.1:${shopPort}`);
			const base = kit.daemons[0].url;
			const out = await page.evaluate(async ({ base, token, P }) => {
				const c = new window.StockAlertClient({ token, baseUrl: base, storage: null });
				window.client = c;
				window.alerts = [];
				c.on('alert', (a) => window.alerts.push(a));
				const opened = new Promise((resolve) => c.on('status', ({ status }) => {
					if (status === 'open') resolve();
				}));
				c.connect();
				await opened;
				const created = await c.subscribe(P, { kinds: ['back_in_stock'] });
				const list = await c.listSubscriptions();
				return { created, ids: list.map((s) => s.product_id) };
			}, { base, token: kit.token(user), P });
			assert.ok(out.created, JSON.stringify(out));
			assert.deepEqual(out.ids, [P]);

			// The socket the page opened from the shop's origin delivers.
			const ev = `xo-${randomId(4)}`;
			assert.ok(await kit.publish({ event_id: ev, product_id: P, stock: 5, prev_stock: 0 }) >= 0);
			await waitFor(async () => (await page.evaluate(() => window.alerts.length)) > 0,
				{ timeout: 15000, what: 'the alert in the shop page' });
			const got = await page.evaluate(() => window.alerts[0]);
			assert.equal(got.event_id, ev);
			assert.equal(got.kind, 'back_in_stock');

			assert.equal(await page.evaluate((P) => window.client.unsubscribe(P), P), true);
			await page.evaluate(() => window.client.close());
		});

	test('an origin not listed cannot call the API', { timeout: 60000 }, async (t) => {
		const user = `xo-no-${randomId(3)}`;
		// Same page and server, reached by a name the daemon does not list.
		const page = await shopPage(t, `http://localhost:${shopPort}`);
		const err = await page.evaluate(async ({ base, token, P }) => {
			const c = new window.StockAlertClient({ token, baseUrl: base, storage: null });
			try {
				await c.subscribe(P);
				return null;
			} catch (e) {
				return { status: e.status, code: e.code };
			}
		}, { base: kit.daemons[0].url, token: kit.token(user), P });
		assert.deepEqual(err, { status: 0, code: 'network' });
		// The preflight was refused, so the PUT never reached the daemon.
		const r = await apiCall(kit.daemons[0].url, 'GET', '/api/me/subscriptions',
			{ token: kit.token(user) });
		assert.equal(r.status, 200);
		assert.deepEqual(r.json.subscriptions, []);
	});
});
