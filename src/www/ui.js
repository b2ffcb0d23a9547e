// Pieces shared by the demo page (app.js) and the operations page (ops.js).
// Everything is rendered with textContent: product names come from the shop's catalogue.

/** An alert kind in words: "Back in stock", "Only 3 left", "Sold out". */
export function kindText(alert) {
	switch (alert.kind) {
	case 'back_in_stock': return 'Back in stock';
	case 'low_stock': return `Only ${alert.stock} left`;
	case 'sold_out': return 'Sold out';
	default: return String(alert.kind || 'Stock changed');
	}
}

/** The stock level in words, for a product card. */
export function stockText(stock) {
	if (typeof stock !== 'number') return 'Stock unknown';
	if (stock <= 0) return 'Sold out';
	return `${stock} in stock`;
}

export function timeText(ms) {
	const d = new Date(typeof ms === 'number' ? ms : Date.now());
	return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function el(tag, props = {}, ...children) {
	const e = document.createElement(tag);
	for (const [k, v] of Object.entries(props)) {
		if (k === 'class') e.className = v;
		else if (k === 'text') e.textContent = v;
		else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role') e.setAttribute(k, v);
		else e[k] = v;
	}
	for (const c of children) e.append(c);
	return e;
}

/*
 * Keeps the connection indicator (#conn, #conn-text, #conn-retry) in step with a
 * StockAlertClient: colour via data-status, words, a countdown while reconnecting and a
 * "Retry now" button.
 */
export function bindConnectionStatus(client) {
	const box = document.getElementById('conn');
	const text = document.getElementById('conn-text');
	const retry = document.getElementById('conn-retry');
	// The countdown is hidden from assistive technology: the box is a live region,
	// and a change every second would be read out every second.
	const countdown = document.getElementById('conn-countdown');
	let timer = null;
	retry.addEventListener('click', () => client.reconnectNow());
	const words = {
		idle: 'Starting…',
		connecting: 'Connecting…',
		open: 'Live',
		'signed-out': 'Signed out',
		closed: 'Disconnected',
	};
	client.on('status', (s) => {
		clearInterval(timer);
		timer = null;
		box.dataset.status = s.status;
		retry.hidden = s.status !== 'reconnecting';
		countdown.textContent = '';
		if (s.status !== 'reconnecting') {
			text.textContent = words[s.status] || s.status;
			return;
		}
		text.textContent = 'Connection lost — retrying';
		const tick = () => {
			const left = Math.ceil((s.retryAt - Date.now()) / 1000);
			countdown.textContent = s.retryAt && left > 0 ? `in ${left} s` : '…';
		};
		tick();
		if (s.retryAt) timer = setInterval(tick, 1000);
	});
}

/*
 * A toast in #toasts (an aria-live region, so screen readers read it once). Dismissed by
 * its button, or after ttlMs unless the pointer or focus is on it.
 */
export function showToast({ title, body, tone = 'info', ttlMs = 8000, data = {} }) {
	const box = document.getElementById('toasts');
	const close = el('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss',
		text: '×' });
	const t = el('div', { class: `toast toast-${tone}`, ...data },
		el('div', { class: 'toast-text' },
			el('strong', { class: 'toast-title', text: title }),
			el('span', { class: 'toast-body', text: body || '' })),
		close);
	let held = false;
	let timer = null;
	const remove = () => { clearTimeout(timer); t.remove(); };
	const arm = () => {
		clearTimeout(timer);
		if (ttlMs > 0) timer = setTimeout(() => { if (!held) remove(); }, ttlMs);
	};
	close.addEventListener('click', remove);
	t.addEventListener('mouseenter', () => { held = true; });
	t.addEventListener('mouseleave', () => { held = false; arm(); });
	t.addEventListener('focusin', () => { held = true; });
	t.addEventListener('focusout', () => { held = false; arm(); });
	box.append(t);
	// Never more than five on screen: the oldest goes first.
	while (box.children.length > 5) box.firstElementChild.remove();
	arm();
	return t;
}

/** Shows the signed-out notice (and hides the sections named in hide). */
export function showSignedOut(hide = []) {
	document.getElementById('signed-out').hidden = false;
	for (const id of hide) {
		const e = document.getElementById(id);
		if (e) e.hidden = true;
	}
}
