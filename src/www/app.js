// The demo shop page: products with their stock and a "Notify me" switch, a live
// connection indicator, alerts as toasts and a short history. Talks to stockalertd only
// through stockalert.js.
import { StockAlertClient, tokenFromLocation } from './stockalert.js';
import {
	bindConnectionStatus, el, kindText, showSignedOut, showToast, stockText, timeText,
} from './ui.js';

const HISTORY_MAX = 20;
const REPLAY_TOASTS_MAX = 3;
const TONES = { back_in_stock: 'good', low_stock: 'warn', sold_out: 'bad' };

const products = new Map(); // id -> { data, node }
const historyIds = new Set();
let client = null;

function productIds() {
	const meta = document.querySelector('meta[name="stockalert-products"]');
	return (meta ? meta.content : '').split(',').map((s) => s.trim())
		.filter((s) => /^\d+$/.test(s));
}

function productName(alert) {
	if (alert.name) return alert.name;
	const p = products.get(String(alert.product_id));
	return p && p.data ? p.data.name : `Product #${alert.product_id}`;
}

/* --- products ----------------------------------------------------------------------------- */

function renderStock(p) {
	const node = p.node.querySelector('.stock');
	const { stock, low_stock_threshold: thr } = p.data;
	let level = 'ok';
	let text = stockText(stock);
	if (typeof stock === 'number' && stock <= 0) level = 'out';
	else if (typeof stock === 'number' && typeof thr === 'number' && stock <= thr) {
		level = 'low';
		text = `Only ${stock} left`;
	}
	node.textContent = text;
	node.dataset.level = level;
	p.node.dataset.stock = String(stock);
}

function renderProduct(data) {
	const tpl = document.getElementById('product-template');
	const node = tpl.content.firstElementChild.cloneNode(true);
	const id = String(data.id);
	node.dataset.productId = id;
	const nameId = `product-${id}-name`;
	const h = node.querySelector('.product-name');
	h.id = nameId;
	h.textContent = data.name;
	node.querySelector('.product-sku').textContent = data.sku ? `SKU ${data.sku}` : '';
	const box = node.querySelector('.notify');
	box.id = `notify-${id}`;
	box.setAttribute('aria-describedby', nameId);
	box.addEventListener('change', () => toggleNotify(id, box));
	const p = { data, node };
	products.set(id, p);
	renderStock(p);
	return node;
}

async function toggleNotify(id, box) {
	const want = box.checked;
	const name = products.get(id).data.name;
	box.disabled = true;
	try {
		if (want) await client.subscribe(id);
		else await client.unsubscribe(id);
	} catch (e) {
		box.checked = !want;
		if (client.status !== 'signed-out') {
			showToast({ title: want ? `Could not follow ${name}` : `Could not stop following ${name}`,
				body: e.message, tone: 'bad' });
		}
	} finally {
		box.disabled = false;
	}
}

async function loadProducts() {
	const status = document.getElementById('products-status');
	const list = document.getElementById('products');
	const ids = productIds();
	const results = await Promise.allSettled(ids.map((id) => client.getProduct(id)));
	if (client.status === 'signed-out') return;
	let missing = 0;
	for (const r of results) {
		if (r.status === 'fulfilled' && r.value) list.append(renderProduct(r.value));
		else missing++;
	}
	if (products.size === 0) {
		status.textContent = 'No products could be loaded. Is the catalogue empty?';
		return;
	}
	status.textContent = missing ? `${missing} product(s) could not be loaded.` : '';
	status.hidden = !missing;
	try {
		for (const s of await client.listSubscriptions()) {
			const p = products.get(String(s.product_id));
			if (p) p.node.querySelector('.notify').checked = true;
		}
	} catch (e) {
		if (client.status !== 'signed-out') {
			showToast({ title: 'Could not load your alerts settings', body: e.message, tone: 'bad' });
		}
	}
}

/* --- alerts ------------------------------------------------------------------------------- */

/* Is alert id a ("ms-seq") later than b? */
function idAfter(a, b) {
	const [am, as] = String(a).split('-').map(Number);
	const [bm, bs] = String(b).split('-').map(Number);
	return am > bm || (am === bm && as > bs);
}

function addHistory(alert) {
	if (!alert.id || historyIds.has(alert.id)) return false;
	historyIds.add(alert.id);
	const list = document.getElementById('history');
	const li = el('li', { class: `history-item kind-${alert.kind}`, 'data-alert-id': alert.id },
		el('time', { class: 'muted', text: timeText(alert.ts),
			dateTime: new Date(alert.ts || Date.now()).toISOString() }),
		el('span', { class: 'history-name', text: productName(alert) }),
		el('span', { class: 'history-kind', text: kindText(alert) }));
	// Newest first, by id (time order), whichever arrived first: the REST history or
	// the socket.
	let before = list.firstElementChild;
	while (before && !idAfter(alert.id, before.dataset.alertId)) before = before.nextElementSibling;
	list.insertBefore(li, before);
	while (list.children.length > HISTORY_MAX) list.lastElementChild.remove();
	document.getElementById('history-empty').hidden = true;
	return true;
}

function applyStock(productId, stock) {
	const p = products.get(String(productId));
	if (!p || typeof stock !== 'number') return;
	p.data.stock = stock;
	renderStock(p);
}

function alertToast(alert) {
	showToast({
		title: productName(alert),
		body: kindText(alert),
		tone: TONES[alert.kind] || 'info',
		data: { 'data-alert-id': alert.id, 'data-kind': alert.kind },
	});
}

let replayShown = 0;

function onAlert(alert, { replayed }) {
	applyStock(alert.product_id, alert.stock);
	if (!addHistory(alert)) return;
	if (replayed && replayShown++ >= REPLAY_TOASTS_MAX) return;
	alertToast(alert);
}

async function loadHistory() {
	try {
		const { alerts } = await client.getAlerts({ limit: 1000 });
		// Oldest first: the newest end of the list ends on top.
		for (const a of alerts.slice(-HISTORY_MAX)) addHistory(a);
	} catch (e) {
		if (client.status !== 'signed-out') {
			showToast({ title: 'Could not load your recent alerts', body: e.message, tone: 'bad' });
		}
	}
}

/* --- start -------------------------------------------------------------------------------- */

function signedOut(reason) {
	if (reason) document.getElementById('signed-out-text').textContent = reason;
	showSignedOut(['shop', 'history-section']);
	for (const box of document.querySelectorAll('.notify')) box.disabled = true;
}

function main() {
	const token = tokenFromLocation();
	if (!token) {
		document.getElementById('conn').dataset.status = 'signed-out';
		document.getElementById('conn-text').textContent = 'Signed out';
		signedOut('This page needs a sign-in link: open it as /#token=<your token> ' +
			'(scripts/run.sh prints one).');
		return;
	}
	client = new StockAlertClient({ token, baseUrl: window.location.origin });
	window.stockalertClient = client; // for the browser console
	bindConnectionStatus(client);
	client.on('status', (s) => {
		if (s.status === 'signed-out') signedOut();
	});
	client.on('alert', onAlert);
	client.on('replay_done', ({ count }) => {
		if (count > REPLAY_TOASTS_MAX) {
			showToast({ title: `You missed ${count} alerts while offline`,
				body: 'They are listed under “Your recent alerts”.', tone: 'info' });
		}
		replayShown = 0;
	});
	client.on('snapshot', (list) => {
		for (const s of list) applyStock(s.product_id, s.stock);
		showToast({ title: 'Back online',
			body: 'Some alerts from while you were away could not be recovered; ' +
				'the stock levels shown are current.', tone: 'info' });
	});
	client.on('error', (e) => {
		if (e.code === 'replay_unavailable') {
			showToast({ title: 'Back online', body: 'Missed alerts are unavailable right now.',
				tone: 'info' });
		}
	});
	client.connect();
	loadProducts();
	loadHistory();
}

main();
