/*
 * stockalert.js — browser client for stockalertd's API (README.md). No dependencies, ES module.
 *
 *   import { StockAlertClient, tokenFromLocation } from '/stockalert.js';
 *
 *   const client = new StockAlertClient({
 *     token,                      // the user's JWT (required)
 *     baseUrl: location.origin,   // where stockalertd runs (http[s]://host:port)
 *     getToken: async () => null, // called when the token expired / was refused:
 *                                 // resolve a fresh JWT, or null = signed out
 *     backoff: { baseMs: 1000, capMs: 30000, slowBaseMs: 15000, slowCapMs: 120000 },
 *     pingIdleMs: 30000,          // app ping after this long without a frame
 *     pongTimeoutMs: 10000,       // no frame this long after a ping: socket is dead
 *     storage: localStorage,      // where the resume point is kept (null: nowhere)
 *   });
 *   const off = client.on('alert', (alert, { replayed }) => { ... });
 *   client.connect();
 *
 * Events (client.on(name, fn) returns a function that removes fn; client.off(name, fn)):
 *   status       ({status, previous, attempt, retryAt, code})  status is one of
 *                'idle' | 'connecting' | 'open' | 'reconnecting' | 'signed-out' | 'closed';
 *                'open' means the server said hello; retryAt (ms epoch) while reconnecting
 *   hello        (frame)                 {user_id, conn_id, heartbeat_s, server_time}
 *   alert        (alert, {replayed})     {id, kind, product_id, name, stock, prev_stock,
 *                                        event_id, ts}; replayed: came from a resume
 *   snapshot     (products)              [{product_id, stock}]: the history did not reach
 *                                        back to the resume point, these are current levels
 *   replay_done  ({count, recovered})
 *   subscribed / unsubscribed ({product_id})   answers to WS subscribe frames
 *   error        ({code, message, status?})    a server error frame, or a failed REST call
 *
 * Methods:
 *   connect(), close()           start / stop for good (close(): status 'closed')
 *   reconnectNow()               skip the current backoff wait (a "Retry now" button)
 *   setToken(jwt)                use a new token (sent as a refresh frame when connected)
 *   getProduct(id)               GET /api/products/{id}
 *   listSubscriptions()          GET /api/me/subscriptions -> [{product_id, kinds, ...}]
 *   subscribe(id, {kinds, threshold}?), unsubscribe(id)   PUT / DELETE (unsubscribe of a
 *                                product not subscribed resolves false)
 *   getAlerts({since, limit})    GET /api/me/alerts -> {alerts, recovered}
 *   status, userId, lastAlertId  read-only state
 * REST calls reject with a StockAlertError {status, code, message}; a 401 first asks
 * getToken() for a fresh token and retries once, else the client goes 'signed-out'.
 *
 * Behaviour:
 * - Reconnects with exponential backoff and full jitter: the n-th wait is uniform in
 *   [0, min(capMs, baseMs * 2^n)]; close codes 4008 (too slow) and 4029 (too many
 *   connections) use slowBaseMs/slowCapMs instead. The count restarts once a connection
 *   stayed open 10 s.
 * - Resume: the id of the newest alert seen (or, before any, the hello's server_time) is
 *   kept in storage under "stockalert:since:<user>"; reconnects (and page reloads) pass it
 *   as ?since= so alerts missed meanwhile are replayed; duplicates are dropped.
 * - Close 4001 (token expired) asks getToken(); null -> 'signed-out', no more retries.
 *   A socket that fails before it opens (the upgrade is refused with HTTP 401 for a bad
 *   token, which a browser cannot see) is followed by GET /api/me/subscriptions: 401 ->
 *   the same token handling; anything else -> backoff. An expired token (by its exp claim)
 *   is checked the same way before connecting. With getToken, the token is refreshed
 *   (refresh frame) shortly before it expires.
 * - Sends {"type":"ping"} when nothing arrived for pingIdleMs, when the tab becomes
 *   visible again and when the browser goes online; no frame within pongTimeoutMs closes
 *   the socket and reconnects.
 */

const STABLE_MS = 10000;
const SEEN_MAX = 1000;
const STORAGE_PREFIX = 'stockalert:since:';

/** An error of a REST call: HTTP status (0: network), the server's error code and message. */
export class StockAlertError extends Error {
	constructor(status, code, message) {
		super(message || code || `HTTP ${status}`);
		this.name = 'StockAlertError';
		this.status = status;
		this.code = code || 'error';
	}
}

/** Decodes a JWT's payload without verifying it (the server does); null if malformed. */
export function decodeJwtPayload(token) {
	try {
		const part = String(token).split('.')[1];
		if (!part) return null;
		const b64 = part.replace(/-/g, '+').replace(/_/g, '/') +
			'='.repeat((4 - (part.length % 4)) % 4);
		const bin = atob(b64);
		const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
		const payload = JSON.parse(new TextDecoder().decode(bytes));
		return payload && typeof payload === 'object' ? payload : null;
	} catch {
		return null;
	}
}

/**
 * The token given in the page's URL as ?token= or #token= (then removed from the address
 * bar, so it is not copied or bookmarked along, and kept in sessionStorage for reloads), or
 * the one kept from earlier in this tab; null if none.
 */
export function tokenFromLocation(loc = window.location, key = 'stockalert:token') {
	const query = new URLSearchParams(loc.search);
	const hash = new URLSearchParams(loc.hash.replace(/^#/, ''));
	const fromUrl = query.get('token') || hash.get('token');
	let store = null;
	try { store = window.sessionStorage; } catch { /* disabled */ }
	if (fromUrl) {
		try { store && store.setItem(key, fromUrl); } catch { /* full or disabled */ }
		query.delete('token');
		hash.delete('token');
		const q = query.toString();
		const h = hash.toString();
		try {
			history.replaceState(history.state, '',
				loc.pathname + (q ? `?${q}` : '') + (h ? `#${h}` : ''));
		} catch { /* sandboxed */ }
		return fromUrl;
	}
	try { return store ? store.getItem(key) : null; } catch { return null; }
}

/* "1700000000000-3" -> [ms, seq] as BigInts, or null. */
function parseId(id) {
	const m = /^(\d+)-(\d+)$/.exec(String(id || ''));
	return m ? [BigInt(m[1]), BigInt(m[2])] : null;
}

function idNewer(a, b) {
	const x = parseId(a);
	const y = parseId(b);
	if (!x) return false;
	if (!y) return true;
	return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
}

export class StockAlertClient {
	constructor(opts = {}) {
		if (!opts.token) throw new TypeError('StockAlertClient: token is required');
		this._token = opts.token;
		this._base = String(opts.baseUrl || window.location.origin).replace(/\/+$/, '');
		this._hasGetToken = typeof opts.getToken === 'function';
		this._getToken = opts.getToken || (async () => null);
		this._backoff = { baseMs: 1000, capMs: 30000, slowBaseMs: 15000, slowCapMs: 120000,
			...(opts.backoff || {}) };
		this._pingIdleMs = opts.pingIdleMs ?? 30000;
		this._pongTimeoutMs = opts.pongTimeoutMs ?? 10000;
		this._storage = opts.storage !== undefined ? opts.storage : safeLocalStorage();
		this._handlers = new Map();
		this._status = 'idle';
		this._ws = null;
		this._attempt = 0;
		this._slow = false;
		this._retryTimer = null;
		this._retryAt = 0;
		this._idleTimer = null;
		this._pongTimer = null;
		this._refreshTimer = null;
		this._openedAt = 0;
		this._replaying = false;
		this._seen = new Set();
		this._authBusy = null;
		this._userId = (decodeJwtPayload(this._token) || {}).sub || null;
		this._onVisible = () => {
			if (document.visibilityState === 'visible') this._wake();
		};
		this._onOnline = () => this._wake();
	}

	get status() { return this._status; }
	get userId() { return this._userId; }
	get lastAlertId() { return this._loadSince(); }

	on(name, fn) {
		if (!this._handlers.has(name)) this._handlers.set(name, new Set());
		this._handlers.get(name).add(fn);
		return () => this.off(name, fn);
	}

	off(name, fn) {
		const set = this._handlers.get(name);
		if (set) set.delete(fn);
	}

	_emit(name, ...args) {
		for (const fn of [...(this._handlers.get(name) || [])]) {
			try {
				fn(...args);
			} catch (e) {
				// A page handler's bug must not break the connection logic.
				setTimeout(() => { throw e; });
			}
		}
	}

	_setStatus(status, extra = {}) {
		const previous = this._status;
		this._status = status;
		this._emit('status', { status, previous, attempt: this._attempt,
			retryAt: status === 'reconnecting' ? this._retryAt : 0, ...extra });
	}

	connect() {
		// After 'signed-out' or close(), connect() starts again (with setToken() first).
		if (this._ws || this._retryTimer || this._status === 'connecting') return;
		document.addEventListener('visibilitychange', this._onVisible);
		window.addEventListener('online', this._onOnline);
		this._open();
	}

	close() {
		this._stop('closed');
	}

	/* Stops for good: no socket, no timers, final status. */
	_stop(status, extra) {
		clearTimeout(this._retryTimer);
		clearTimeout(this._refreshTimer);
		this._retryTimer = this._refreshTimer = null;
		this._stopHeartbeat();
		document.removeEventListener('visibilitychange', this._onVisible);
		window.removeEventListener('online', this._onOnline);
		const ws = this._ws;
		this._ws = null;
		if (ws) {
			ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
			try { ws.close(1000); } catch { /* already closing */ }
		}
		if (this._status !== status) this._setStatus(status, extra);
	}

	reconnectNow() {
		if (this._status !== 'reconnecting') return;
		clearTimeout(this._retryTimer);
		this._retryTimer = null;
		this._open();
	}

	setToken(token) {
		if (!token) return;
		this._token = token;
		const sub = (decodeJwtPayload(token) || {}).sub || null;
		if (sub) this._userId = sub;
		if (this._ws && this._status === 'open') {
			this._send({ type: 'refresh', token });
			this._scheduleRefresh();
		}
	}

	/* --- the socket ------------------------------------------------------------------ */

	_wsUrl() {
		const u = new URL('/ws', this._base);
		u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
		u.searchParams.set('token', this._token);
		const since = this._loadSince();
		if (since) u.searchParams.set('since', since);
		this._sentSince = since;
		return u.toString();
	}

	async _open() {
		if (this._ws) return;
		this._setStatus('connecting');
		// A token already expired would be refused: confirm with the server (clocks
		// differ) before spending a socket on it.
		if (this._tokenExpired()) {
			const ok = await this._checkAuth();
			if (!ok || this._status !== 'connecting' || this._ws) return;
		}
		let ws;
		try {
			ws = new WebSocket(this._wsUrl());
		} catch (e) {
			this._emit('error', { code: 'ws_failed', message: String(e && e.message || e) });
			this._scheduleRetry();
			return;
		}
		this._ws = ws;
		this._openedAt = 0;
		this._replaying = false;
		let opened = false;
		ws.onopen = () => { opened = true; };
		ws.onmessage = (ev) => this._onFrame(ev.data);
		ws.onerror = () => { /* onclose follows with the details */ };
		ws.onclose = (ev) => {
			if (this._ws !== ws) return;
			this._ws = null;
			this._stopHeartbeat();
			clearTimeout(this._refreshTimer);
			this._onClosed(ev.code, opened);
		};
	}

	async _onClosed(code, opened) {
		if (this._openedAt && Date.now() - this._openedAt >= STABLE_MS) this._attempt = 0;
		this._openedAt = 0;
		if (code === 4001) {
			const fresh = await this._renewToken();
			if (fresh) {
				this._attempt = 0;
				this._open();
			}
			return;
		}
		if (!opened) {
			// The upgrade failed: 401 (bad token), 403, 503, or no server at all. Only
			// a REST call can tell a refused token from the rest.
			this._setStatus('reconnecting', { code });
			const ok = await this._checkAuth();
			if (!ok) return;
		}
		this._slow = code === 4008 || code === 4029;
		this._scheduleRetry(code);
	}

	_scheduleRetry(code) {
		if (this._status === 'signed-out' || this._status === 'closed' || this._ws) return;
		const b = this._backoff;
		const base = this._slow ? b.slowBaseMs : b.baseMs;
		const cap = this._slow ? b.slowCapMs : b.capMs;
		const ceiling = Math.min(cap, base * 2 ** Math.min(this._attempt, 30));
		const delay = Math.floor(Math.random() * ceiling);
		this._attempt++;
		this._retryAt = Date.now() + delay;
		clearTimeout(this._retryTimer);
		this._retryTimer = setTimeout(() => {
			this._retryTimer = null;
			this._open();
		}, delay);
		this._setStatus('reconnecting', { code });
	}

	_onFrame(data) {
		let m;
		try {
			m = JSON.parse(data);
		} catch {
			return;
		}
		if (!m || typeof m !== 'object') return;
		this._heard();
		switch (m.type) {
		case 'hello':
			this._openedAt = Date.now();
			this._skewMs = typeof m.server_time === 'number' ? m.server_time - Date.now() : 0;
			this._replaying = !!this._sentSince;
			if (m.user_id) this._userId = m.user_id;
			// Before any alert, the resume point is "now" (alert ids are times in
			// ms), so what arrives after a drop is replayed. Were the history to
			// begin after that point, the server answers with a snapshot instead.
			if (!this._loadSince() && typeof m.server_time === 'number')
				this._saveSince(`${m.server_time}-0`);
			this._slow = false;
			this._scheduleRefresh();
			this._setStatus('open');
			this._emit('hello', m);
			break;
		case 'alert':
			if (m.id && this._seen.has(m.id)) break;
			if (m.id) {
				this._seen.add(m.id);
				if (this._seen.size > SEEN_MAX) this._seen.delete(this._seen.values().next().value);
				if (idNewer(m.id, this._loadSince())) this._saveSince(m.id);
			}
			this._emit('alert', m, { replayed: this._replaying });
			break;
		case 'snapshot':
			this._emit('snapshot', Array.isArray(m.products) ? m.products : []);
			break;
		case 'replay_done':
			this._replaying = false;
			this._emit('replay_done', { count: m.count || 0, recovered: m.recovered !== false });
			break;
		case 'subscribed':
		case 'unsubscribed':
			this._emit(m.type, { product_id: m.product_id });
			break;
		case 'pong':
			break;
		case 'error':
			if (m.code === 'bad_since') this._saveSince(null);
			this._emit('error', { code: m.code, message: m.message });
			break;
		default:
			break;
		}
	}

	_send(obj) {
		if (!this._ws || this._ws.readyState !== WebSocket.OPEN) return false;
		this._ws.send(JSON.stringify(obj));
		return true;
	}

	/* --- liveness --------------------------------------------------------------------- */

	/* Any frame proves the socket alive: re-arm the idle ping, drop a pending deadline. */
	_heard() {
		clearTimeout(this._pongTimer);
		this._pongTimer = null;
		clearTimeout(this._idleTimer);
		this._idleTimer = setTimeout(() => this._ping(), this._pingIdleMs);
	}

	_ping() {
		if (this._pongTimer || !this._send({ type: 'ping' })) return;
		const ws = this._ws;
		this._pongTimer = setTimeout(() => {
			this._pongTimer = null;
			if (this._ws !== ws) return;
			// Half-open (laptop slept, NAT forgot us): the browser may not notice
			// for minutes. Drop it and reconnect now.
			this._ws = null;
			ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
			try { ws.close(4000, 'no pong'); } catch { /* already closed */ }
			this._stopHeartbeat();
			this._attempt = 0;
			this._onClosed(1006, true);
		}, this._pongTimeoutMs);
	}

	_stopHeartbeat() {
		clearTimeout(this._idleTimer);
		clearTimeout(this._pongTimer);
		this._idleTimer = this._pongTimer = null;
	}

	_wake() {
		if (this._status === 'open') this._ping();
		else if (this._status === 'reconnecting') this.reconnectNow();
	}

	/* --- tokens ------------------------------------------------------------------------ */

	_tokenExpired() {
		const p = decodeJwtPayload(this._token);
		if (!p || typeof p.exp !== 'number') return false;
		return p.exp * 1000 <= Date.now() + (this._skewMs || 0);
	}

	/*
	 * Is the token still accepted? false (and the client signed out, or reconnecting
	 * with a fresh token) when the server says 401. Network trouble counts as
	 * accepted: the caller's backoff handles it.
	 */
	async _checkAuth() {
		let status = 0;
		try {
			const r = await fetch(`${this._base}/api/me/subscriptions`, {
				headers: { Authorization: `Bearer ${this._token}` }, cache: 'no-store',
			});
			status = r.status;
		} catch {
			return true;
		}
		if (status !== 401) return true;
		const fresh = await this._renewToken();
		if (fresh && this._status !== 'closed') {
			this._attempt = 0;
			this._open();
		}
		return false;
	}

	/* Asks the page for a new token; true if it gave one, else signs out. Shared by
	 * concurrent callers (a REST 401 and a socket close at once ask only once). */
	_renewToken() {
		if (this._authBusy) return this._authBusy;
		const old = this._token;
		this._authBusy = (async () => {
			let fresh = null;
			try {
				fresh = await this._getToken();
			} catch {
				fresh = null;
			}
			if (fresh && fresh !== old) {
				this.setToken(fresh);
				return true;
			}
			this._stop('signed-out');
			return false;
		})().finally(() => { this._authBusy = null; });
		return this._authBusy;
	}

	/* With a getToken, renew a minute before exp (half-way for short tokens). */
	_scheduleRefresh() {
		clearTimeout(this._refreshTimer);
		this._refreshTimer = null;
		const p = decodeJwtPayload(this._token);
		if (!this._hasGetToken || !p || typeof p.exp !== 'number') return;
		const left = p.exp * 1000 - (Date.now() + (this._skewMs || 0));
		if (left <= 0) return;
		const at = Math.max(1000, Math.min(left - 60000, left / 2 + left / 4));
		if (at > 2 ** 31 - 1) return;
		this._refreshTimer = setTimeout(async () => {
			this._refreshTimer = null;
			let fresh = null;
			try {
				fresh = await this._getToken();
			} catch {
				fresh = null;
			}
			// No new token: keep going; the server closes with 4001 at expiry.
			if (fresh && fresh !== this._token) this.setToken(fresh);
		}, at);
	}

	/* --- resume point ----------------------------------------------------------------- */

	_sinceKey() {
		return this._userId ? STORAGE_PREFIX + this._userId : null;
	}

	_loadSince() {
		const k = this._sinceKey();
		if (!k) return this._memSince || null;
		try {
			if (this._storage) return this._storage.getItem(k) || null;
		} catch { /* disabled */ }
		return this._memSince || null;
	}

	_saveSince(id) {
		this._memSince = id || null;
		const k = this._sinceKey();
		if (!k || !this._storage) return;
		try {
			if (id) this._storage.setItem(k, id);
			else this._storage.removeItem(k);
		} catch { /* full or disabled: memory only */ }
	}

	/* --- REST --------------------------------------------------------------------------- */

	async _rest(method, path, body, retried = false) {
		const headers = { Authorization: `Bearer ${this._token}` };
		if (body !== undefined) headers['Content-Type'] = 'application/json';
		let r;
		try {
			r = await fetch(this._base + path, {
				method, headers, cache: 'no-store',
				body: body === undefined ? undefined : JSON.stringify(body),
			});
		} catch (e) {
			throw new StockAlertError(0, 'network', `network error: ${e && e.message || e}`);
		}
		if (r.status === 401 && !retried && this._status !== 'signed-out') {
			if (await this._renewToken()) return this._rest(method, path, body, true);
		}
		const text = await r.text();
		let json = null;
		try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
		if (!r.ok) {
			const e = (json && json.error) || {};
			if (r.status === 401 && this._status !== 'signed-out') this._stop('signed-out');
			throw new StockAlertError(r.status, e.code, e.message || `HTTP ${r.status}`);
		}
		return { status: r.status, json };
	}

	async getProduct(id) {
		return (await this._rest('GET', `/api/products/${encodeURIComponent(id)}`)).json;
	}

	async listSubscriptions() {
		const { json } = await this._rest('GET', '/api/me/subscriptions');
		return (json && json.subscriptions) || [];
	}

	async subscribe(productId, opts) {
		const body = opts && (opts.kinds || opts.threshold !== undefined) ? opts : undefined;
		const { json } = await this._rest('PUT',
			`/api/me/subscriptions/${encodeURIComponent(productId)}`, body);
		return json;
	}

	async unsubscribe(productId) {
		try {
			await this._rest('DELETE', `/api/me/subscriptions/${encodeURIComponent(productId)}`);
			return true;
		} catch (e) {
			if (e.status === 404) return false;
			throw e;
		}
	}

	async getAlerts({ since, limit } = {}) {
		const q = new URLSearchParams();
		if (since) q.set('since', since);
		if (limit) q.set('limit', String(limit));
		const qs = q.toString();
		const { json } = await this._rest('GET', `/api/me/alerts${qs ? `?${qs}` : ''}`);
		return { alerts: (json && json.alerts) || [], recovered: !json || json.recovered !== false };
	}
}

function safeLocalStorage() {
	try {
		return window.localStorage;
	} catch {
		return null;
	}
}
