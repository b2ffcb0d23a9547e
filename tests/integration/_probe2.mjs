import { makeConfig, startDaemon, waitReady, rawRequest, stop } from './lib/harness.mjs';
const cfg = await makeConfig({ log: { level: 'debug' } });
const d = startDaemon(cfg);
await waitReady(d);
const n0 = d.log().length;
const r = await rawRequest(d.port, `CONNECT / HTTP/1.1\r\nHost: x\r\n`, '', { timeout: 3000 }).catch((e) => e.message);
console.log(r);
console.log(d.log().slice(n0));
await stop(d);
