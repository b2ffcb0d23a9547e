import { alertsKit, apiCall, rawRequest } from './lib/harness.mjs';
const kit = await alertsKit({ products: [{ id: 501, stock: 5 }] });
const url = kit.daemons[0].url;
const svc = kit.token('svc', ['service']);
const u = kit.token('u1');
const cases = [
 ['PUT', '/api/me/subscriptions/501', '{"threshold": 1e400}', u],
 ['PUT', '/api/me/subscriptions/501', '{"threshold": 1180591620717411303424}', u],
 ['PUT', '/api/me/subscriptions/501', '{"threshold": 2147483648}', u],
 ['PUT', '/api/me/subscriptions/501', '{"threshold": -0}', u],
 ['PUT', '/api/me/subscriptions/501', '{"threshold": null}', u],
 ['PUT', '/api/me/subscriptions/501', '{"threshold": true}', u],
 ['PUT', '/api/me/subscriptions/501', '{"kinds": null}', u],
 ['PUT', '/api/me/subscriptions/501', '{"kinds": {"a":1}}', u],
 ['PUT', '/api/me/subscriptions/501', '"str"', u],
 ['PUT', '/api/me/subscriptions/501', '{"kinds":["low_stock"]}\u0000junk', u],
 ['PUT', '/api/me/subscriptions/501', '[' .repeat(100000), u],
 ['PUT', '/api/me/subscriptions/501', Buffer.from([0x7b,0x22,0xff,0x22,0x3a,0x31,0x7d]), u],
 ['PUT', '/api/me/subscriptions/501', '\ufeff{}', u],
 ['PUT', '/api/me/subscriptions/1180591620717411303424', '{}', u],
 ['POST', '/api/inventory/events', '{"product_id": 1e400, "stock": 1}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 1180591620717411303424, "stock": 1}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": 1e400}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": 1180591620717411303424}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": 1, "prev_stock": -1180591620717411303424}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": 1, "ts": 1e400}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": 1, "ts": 1180591620717411303424}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": 1, "ts": -5}', svc],
 ['POST', '/api/inventory/events', '{"product_id": -9223372036854775808, "stock": 1}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": 1, "event_id": "' + 'a'.repeat(129) + '"}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": 1, "event_id": ""}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": NaN}', svc],
 ['POST', '/api/inventory/events', '{"product_id": 501, "stock": Infinity}', svc],
 ['POST', '/api/inventory/events', '', svc],
 ['POST', '/api/inventory/events', 'null', svc],
];
for (const [m, p, body, tok] of cases) {
	const r = await apiCall(url, m, p, { token: tok, body: typeof body === 'string' ? body : body.toString('latin1') });
	console.log(m, p.slice(0, 40), String(body).slice(0, 60), '→', r.status, r.text.slice(0, 150));
}
console.log(await kit.close());
