import { alertsKit, apiCall, rawRequest } from './lib/harness.mjs';
const kit = await alertsKit({ products: [{ id: 501, stock: 5 }] });
const d = kit.daemons[0];
const u = kit.token('u1');
const send = (body) => rawRequest(d.port, `PUT /api/me/subscriptions/501 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${u}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n`, body);
for (const b of [Buffer.from([0x7b,0x22,0xff,0x22,0x3a,0x31,0x7d]), Buffer.from('{"kinds":["low\u0000_stock"]}'), Buffer.from('{"kinds":["low\\u0000_stock"]}'), Buffer.from('['.repeat(60000)), Buffer.from('{"a":'.repeat(3000)), Buffer.from('{"kinds":["low_stock"],"kinds":["sold_out"]}')]) {
	const r = await send(b);
	console.log(b.toString().slice(0, 40), r.status, r.body.slice(0, 200), Buffer.from(r.body).toString('hex').slice(0, 0));
}
// partial body
const t0 = Date.now();
const r = await rawRequest(d.port, `PUT /api/me/subscriptions/501 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${u}\r\nContent-Length: 100\r\n`, '{"kinds":', { timeout: 60000 }).catch((e) => e.message);
console.log('partial body', Date.now() - t0, r.status ?? r);
console.log(await kit.close());
