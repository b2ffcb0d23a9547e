import net from 'node:net';
import {
	makeConfig, startDaemon, waitReady, signJwt, wsRawConnect, wsClientFrame, wsParseFrames,
	rawRequest, sanitizerReport, stop, sleep,
} from './lib/harness.mjs';

const cfg = await makeConfig({ ws: { max_message_bytes: 1024 } });
const d = startDaemon(cfg);
await waitReady(d);
const tok = (s) => signJwt({ sub: s, exp: Math.floor(Date.now() / 1000) + 600 }, cfg.secret);

async function raw(name, bytes) {
	const c = await wsRawConnect(d.port, `/ws?token=${tok('raw')}`);
	let buf = c.rest;
	const t0 = Date.now();
	const res = await new Promise((resolve) => {
		c.sock.on('data', (x) => { buf = Buffer.concat([buf, x]); });
		c.sock.on('error', (e) => resolve('error ' + e.code));
		c.sock.on('close', () => resolve('closed'));
		c.sock.resume();
		setTimeout(() => c.sock.write(bytes), 300);
		setTimeout(() => resolve('timeout'), 5000);
	});
	const { frames } = wsParseFrames(buf);
	console.log(name, res, Date.now() - t0, 'ms', frames.map((f) => f.opcode === 8 ?
		`close ${f.payload.length >= 2 ? f.payload.readUInt16BE(0) : '-'} ${f.payload.subarray(2)}` :
		`op${f.opcode} ${f.payload.toString().slice(0, 60)}`));
	c.sock.destroy();
}
function unmasked(payload, opcode = 1) {
	const p = Buffer.from(payload);
	return Buffer.concat([Buffer.from([0x80 | opcode, p.length]), p]);
}


let r;
for (const m of ["CONNECT", "PRI"]) {
	const t0 = Date.now();
	r = await rawRequest(d.port, `${m} / HTTP/1.1\r\nHost: x\r\n`, '', {timeout: 100000}).catch((e) => e.message);
	console.log(m, Date.now() - t0, r.status ?? r);
}
{
	const t0 = Date.now();
	r = await rawRequest(d.port, `CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n`, '', {timeout: 100000}).catch((e) => e.message);
	console.log('CONNECT host', Date.now() - t0, r.status ?? r);
}
process.exit(0);
r = await rawRequest(d.port, `GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n`).catch((e) => e.message);
console.log('CL huge', r.status ?? r, r.body);
r = await rawRequest(d.port, `POST /api/inventory/events HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n`).catch((e) => e.message);
console.log('CL -1', r.status ?? r, r.body);
// slowloris
{
	const t0 = Date.now();
	const s = net.connect(d.port, '127.0.0.1');
	let ended = null;
	s.on('close', () => { ended = Date.now() - t0; });
	s.on('error', () => {});
	s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ');
	while (ended === null && Date.now() - t0 < 30000) { s.write('a'); await sleep(1000); }
	console.log('slowloris closed after', ended);
}
await sleep(500);
console.log('running', d.running);
const st = await stop(d);
console.log('stop', st, sanitizerReport(d.log()));
console.log(d.log().split('\n').filter((l) => !/ info /.test(l)).slice(-40).join('\n'));
