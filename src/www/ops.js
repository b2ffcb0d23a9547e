// The operations page: a live feed of every sold_out and low_stock alert (users
// with role admin receive them all), for an admin token.
import { StockAlertClient, decodeJwtPayload, tokenFromLocation } from './stockalert.js';
import { bindConnectionStatus, el, kindText, showSignedOut, showToast, timeText } from './ui.js';

const FEED_MAX = 200;
const KINDS = new Set(['sold_out', 'low_stock']);
const seen = new Set();
const counts = { sold_out: 0, low_stock: 0 };

function addRow(alert, { live }) {
	if (!KINDS.has(alert.kind) || !alert.id || seen.has(alert.id)) return;
	seen.add(alert.id);
	const feed = document.getElementById('feed');
	const stock = typeof alert.prev_stock === 'number'
		? `${alert.prev_stock} → ${alert.stock}` : String(alert.stock);
	const tr = el('tr', { class: `kind-${alert.kind}`, 'data-alert-id': alert.id },
		el('td', {}, el('time', { text: timeText(alert.ts),
			dateTime: new Date(alert.ts || Date.now()).toISOString() })),
		el('td', { text: alert.name || `Product #${alert.product_id}` }),
		el('td', {}, el('span', { class: 'badge', text: kindText(alert) })),
		el('td', { class: 'num', text: stock }));
	// Live alerts go on top; the history (walked newest first) below them.
	if (live) feed.prepend(tr);
	else feed.append(tr);
	while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
	document.getElementById('feed-empty').hidden = true;
	if (live) {
		counts[alert.kind]++;
		document.getElementById('count-sold-out').textContent = String(counts.sold_out);
		document.getElementById('count-low-stock').textContent = String(counts.low_stock);
		if (alert.kind === 'sold_out') {
			showToast({ title: alert.name || `Product #${alert.product_id}`, body: 'Sold out',
				tone: 'bad' });
		}
	}
}

function signedOut(reason) {
	if (reason) document.getElementById('signed-out-text').textContent = reason;
	showSignedOut(['feed-section']);
}

function main() {
	const token = tokenFromLocation();
	if (!token) {
		document.getElementById('conn').dataset.status = 'signed-out';
		document.getElementById('conn-text').textContent = 'Signed out';
		signedOut('This page needs an admin sign-in link: /ops.html#token=<admin token>.');
		return;
	}
	const roles = (decodeJwtPayload(token) || {}).roles;
	if (!Array.isArray(roles) || !roles.includes('admin')) {
		document.getElementById('conn').dataset.status = 'signed-out';
		document.getElementById('conn-text').textContent = 'Not an operator';
		signedOut('This page is for operators: the token has no “admin” role.');
		return;
	}
	const client = new StockAlertClient({ token, baseUrl: window.location.origin });
	window.stockalertClient = client;
	bindConnectionStatus(client);
	client.on('status', (s) => { if (s.status === 'signed-out') signedOut(); });
	client.on('alert', (a) => addRow(a, { live: true }));
	client.connect();
	client.getAlerts({ limit: 1000 }).then(({ alerts }) => {
		for (const a of alerts.filter((x) => KINDS.has(x.kind)).slice(-50).reverse()) {
			addRow(a, { live: false });
		}
	}).catch((e) => {
		if (client.status !== 'signed-out') {
			showToast({ title: 'Could not load the recent alerts', body: e.message, tone: 'bad' });
		}
	});
}

main();
