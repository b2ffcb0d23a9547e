import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import https from 'node:https';
import { makeConfig, startDaemon, waitFor, stop, runDaemonCli, tmpDir, rawRequest, sanitizerReport } from './lib/harness.mjs';
const dir = tmpDir('sa-tls-');
const cert = path.join(dir, 'cert.pem'), key = path.join(dir, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
const cfg = await makeConfig({ tls: { cert_file: cert, key_file: key } });
const d = startDaemon(cfg);
const get = (p) => new Promise((res, rej) => https.get({ host: '127.0.0.1', port: d.port, path: p, ca: fs.readFileSync(cert), servername: 'localhost', checkServerIdentity: () => undefined }, (r) => { let b = ''; r.on('data', (x) => b += x); r.on('end', () => res({ status: r.statusCode, b })); }).on('error', rej));
await waitFor(async () => (await get('/readyz')).status === 200, { timeout: 30000 });
console.log(await get('/healthz'));
const r = await rawRequest(d.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', '', { timeout: 15000 }).catch((e) => e.message);
console.log('plain', r.status ?? r);
console.log(await stop(d), sanitizerReport(d.log()));
console.log(d.log().split('\n').filter(l => /tls|ssl|listen/i.test(l)).join('\n'));
for (const tls of [{ cert_file: cert }, { key_file: key }, { cert_file: path.join(dir, 'nope.pem'), key_file: key }, { cert_file: key, key_file: cert }]) {
	const c = await makeConfig({ tls });
	const a = await runDaemonCli(['--check-config', '-c', c.path]);
	const dd = startDaemon(c);
	const e = await Promise.race([dd.exited, new Promise((r) => setTimeout(() => r('running'), 8000))]);
	console.log(JSON.stringify(tls), 'check', a.code, a.stderr.trim(), '| run', JSON.stringify(e), dd.log().split('\n').filter(l => / (error|warn) /.test(l)).join(' // ').slice(0, 600));
	if (dd.running) await stop(dd);
}
fs.chmodSync(cert, 0);
{
	const c = await makeConfig({ tls: { cert_file: cert, key_file: key } });
	const dd = startDaemon(c);
	const e = await Promise.race([dd.exited, new Promise((r) => setTimeout(() => r('running'), 8000))]);
	console.log('unreadable', process.getuid(), JSON.stringify(e), dd.log().split('\n').filter(l => / (error|warn) /.test(l)).join(' // ').slice(0, 600));
	if (dd.running) await stop(dd);
}
