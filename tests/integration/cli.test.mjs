// The command line (conf/README.md): --version, --help, --check-config, config
// errors naming the key (exit 1), a busy port (exit 2), gentoken.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';

import {
	makeConfig, writeRawConfig, runDaemonCli, startDaemon, stop, decodeJwt, gentoken,
	sanitizerReport, waitReady,
} from './lib/harness.mjs';

test('--version prints "stockalertd <version>" and exits 0', async () => {
	const r = await runDaemonCli(['--version']);
	assert.equal(r.code, 0, r.stderr);
	assert.match(r.stdout, /^stockalertd \d+\.\d+\.\d+\S*\s*$/);
});

test('--help exits 0 and documents -c, --check-config and gentoken', async () => {
	const r = await runDaemonCli(['--help']);
	assert.equal(r.code, 0, r.stderr);
	const text = r.stdout + r.stderr;
	assert.match(text, /-c\b/);
	assert.match(text, /--check-config/);
	assert.match(text, /gentoken/);
});

test('an unknown option exits 1 with a message', async () => {
	const r = await runDaemonCli(['--no-such-option']);
	assert.equal(r.code, 1);
	assert.match(r.stderr, /no-such-option|usage|unknown|unrecognized|invalid/i);
});

test('--check-config accepts a good config (exit 0)', async () => {
	const cfg = await makeConfig();
	const r = await runDaemonCli(['--check-config', '-c', cfg.path]);
	assert.equal(r.code, 0, r.stderr);
});

test('--check-config ignores "//" comment keys (the sample config documents itself)', async () => {
	const cfg = await makeConfig({ '//': 'a comment', listen: { '// port': 'another' } });
	const r = await runDaemonCli(['--check-config', '-c', cfg.path]);
	assert.equal(r.code, 0, r.stderr);
});

test('a missing config file exits 1 naming the file', async () => {
	const missing = `/nonexistent/sa-${process.pid}.json`;
	for (const args of [['--check-config', '-c', missing], ['-c', missing]]) {
		const r = await runDaemonCli(args);
		assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
		assert.ok(r.stderr.includes(missing), `stderr does not name ${missing}: ${r.stderr}`);
	}
});

test('malformed JSON exits 1', async () => {
	const r = await runDaemonCli(['--check-config', '-c', writeRawConfig('{"listen": {')]);
	assert.equal(r.code, 1, r.stderr);
	assert.notEqual(r.stderr.trim(), '');
});

// Each bad config must be refused with a message naming the key, both by
// --check-config and by a real start (which must exit 1, not serve).
const badConfigs = [
	['unknown top-level key', { bogus: 1 }, 'bogus'],
	['unknown nested key', { listen: { hots: '127.0.0.1' } }, 'listen.hots'],
	['wrong type (string for int)', { listen: { port: '8080' } }, 'listen.port'],
	['wrong type (int for string)', { redis: { host: 6379 } }, 'redis.host'],
	['wrong type (object for array)', { allowed_origins: { a: 1 } }, 'allowed_origins'],
	['wrong type (fraction for int)', { shutdown_grace_s: 1.5 }, 'shutdown_grace_s'],
	['out of range (port 70000)', { listen: { port: 70000 } }, 'listen.port'],
	['out of range (negative)', { shutdown_grace_s: -1 }, 'shutdown_grace_s'],
	['out of range (redis db 16)', { redis: { db: 16 } }, 'redis.db'],
	['out of range (ws.max_message_bytes 0)', { ws: { max_message_bytes: 0 } },
		'ws.max_message_bytes'],
	['bad enum (log.level)', { log: { level: 'loud' } }, 'log.level'],
	['bad enum (auth.algorithm)', { auth: { algorithm: 'none' } }, 'auth.algorithm'],
];

for (const [what, over, key] of badConfigs) {
	test(`bad config, ${what}: exit 1 naming "${key}"`, async () => {
		const cfg = await makeConfig(over);
		const chk = await runDaemonCli(['--check-config', '-c', cfg.path]);
		assert.equal(chk.code, 1, `--check-config exit ${chk.code}; stderr: ${chk.stderr}`);
		assert.ok(chk.stderr.includes(key), `--check-config stderr does not name ${key}: ${chk.stderr}`);

		const run = await runDaemonCli(['-c', cfg.path], { timeout: 15000 });
		assert.equal(run.code, 1, `start exit ${run.code} (signal ${run.signal}); ${run.stderr}`);
		assert.ok(run.stderr.includes(key), `start stderr does not name ${key}: ${run.stderr}`);
	});
}

test('a busy port: exit 2 with a message naming the port', async (t) => {
	const blocker = net.createServer();
	await new Promise((resolve) => blocker.listen(0, '127.0.0.1', resolve));
	t.after(() => blocker.close());
	const port = blocker.address().port;
	const cfg = await makeConfig({ listen: { host: '127.0.0.1', port } });
	const d = startDaemon(cfg, { t });
	const timer = setTimeout(() => d.proc.kill('SIGKILL'), 15000);
	const info = await d.exited;
	clearTimeout(timer);
	const log = d.log();
	assert.equal(info.code, 2, `exit ${info.code} signal ${info.signal}; log:\n${log}`);
	assert.ok(log.includes(String(port)), `log does not name port ${port}:\n${log}`);
	assert.match(log, /in use|busy|bind/i);
	assert.equal(sanitizerReport(log), null);
});

test('gentoken prints an HS256 JWT signed with the configured secret', async () => {
	const cfg = await makeConfig();
	const before = Math.floor(Date.now() / 1000);
	const tok = await gentoken(cfg.path, 'user-42', ['admin', 'service'], 600);
	const { header, payload, parts } = decodeJwt(tok);
	assert.equal(header.alg, 'HS256');
	assert.equal(payload.sub, 'user-42');
	assert.deepEqual([...payload.roles].sort(), ['admin', 'service']);
	assert.ok(payload.exp >= before + 600 - 5 && payload.exp <= before + 600 + 60,
		`exp ${payload.exp} not ~now+600`);
	// The secret is the file's contents without the trailing newline.
	const secret = fs.readFileSync(cfg.secretFile, 'utf8').replace(/\n+$/, '');
	const sig = crypto.createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`)
		.digest('base64url');
	assert.equal(parts[2], sig, 'signature does not verify with the configured secret');
});

test('gentoken without roles has a sub and an exp, and no admin role', async () => {
	const cfg = await makeConfig();
	const { payload } = decodeJwt(await gentoken(cfg.path, 'plain.user:1'));
	assert.equal(payload.sub, 'plain.user:1');
	assert.equal(typeof payload.exp, 'number');
	assert.ok(!(payload.roles || []).includes('admin'));
});

test('gentoken without --sub, or with an invalid sub, exits 1', async () => {
	const cfg = await makeConfig();
	const r = await runDaemonCli(['gentoken', '-c', cfg.path]);
	assert.equal(r.code, 1, r.stderr);
	assert.match(r.stderr, /sub/);
	assert.equal(r.stdout.trim(), '');
	const bad = await runDaemonCli(['gentoken', '--sub', 'has space', '-c', cfg.path]);
	assert.equal(bad.code, 1, `invalid sub accepted: ${bad.stdout}`);
});

test('gentoken without a secret file configured exits 1', async () => {
	const cfg = await makeConfig({ auth: { secret_file: null } });
	const r = await runDaemonCli(['gentoken', '--sub', 'u1', '-c', cfg.path]);
	assert.equal(r.code, 1, r.stderr);
	assert.equal(r.stdout.trim(), '');
});

test('a clean start and SIGTERM exit 0 (smoke)', async (t) => {
	const cfg = await makeConfig();
	const d = startDaemon(cfg, { t });
	await waitReady(d);
	const r = await stop(d, 'SIGTERM');
	assert.equal(r.code, 0, `exit ${r.code} signal ${r.signal}\n${d.log()}`);
	assert.equal(sanitizerReport(d.log()), null);
});
