// systemd readiness (conf/stockalertd.service is Type=notify with a
// WatchdogSec): the daemon is run the way systemd runs it, with
// NOTIFY_SOCKET pointing at a datagram socket this test owns (a small
// python3 receiver prints each datagram as a JSON line), and WATCHDOG_USEC.
// A unit that says Type=notify while the binary forgets READY=1 would make
// every `systemctl start` time out: this is the test that notices.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

import {
	SOURCE_DIR, makeConfig, startDaemon, stop, waitFor, tmpDir, freePort, sanitizerReport,
} from './lib/harness.mjs';

const RECEIVER = `
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    data = s.recv(4096)
    print(json.dumps({"t": time.monotonic(), "msg": data.decode("utf-8", "replace")}), flush=True)
`;

// Starts the receiver; returns { path, messages, states(key) }.
async function notifySocket(t) {
	const sock = path.join(tmpDir('sa-notify-'), 'notify.sock');
	const proc = spawn('python3', ['-c', RECEIVER, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
	t.after(() => proc.kill('SIGKILL'));
	const messages = [];
	let bound = false;
	readline.createInterface({ input: proc.stdout }).on('line', (line) => {
		const m = JSON.parse(line);
		if (m.bound) bound = true;
		else messages.push(m);
	});
	await waitFor(() => bound, { timeout: 10000, what: 'the notify receiver to bind' });
	// Each datagram is a newline-separated list of KEY=VALUE assignments.
	const assignments = () => messages.flatMap((m) => m.msg.split('\n').filter(Boolean)
		.map((a) => ({ t: m.t, key: a.slice(0, a.indexOf('=')), value: a.slice(a.indexOf('=') + 1) })));
	return { path: sock, messages, assignments };
}

const unit = fs.readFileSync(path.join(SOURCE_DIR, 'conf/stockalertd.service'), 'utf8');

test('the shipped unit asks for readiness and a watchdog', () => {
	assert.match(unit, /^Type=notify$/m);
	assert.match(unit, /^WatchdogSec=\d+/m);
});

test('READY=1 once serving, WATCHDOG=1 while the loop turns, RELOADING/READY on SIGHUP, ' +
	'STOPPING=1 on SIGTERM', async (t) => {
	const n = await notifySocket(t);
	const cfg = await makeConfig();
	const d = startDaemon(cfg, { t, env: { NOTIFY_SOCKET: n.path, WATCHDOG_USEC: '400000' } });
	const states = (key) => n.assignments().filter((a) => a.key === key);

	await waitFor(() => states('READY').length === 1, { timeout: 30000, what: 'READY=1' });
	// Ready means serving: the port answers at once.
	const r = await fetch(`${d.url}/healthz`);
	assert.equal(r.status, 200);
	await r.arrayBuffer();
	const ready = n.messages.find((m) => /^READY=1$/m.test(m.msg));
	assert.match(ready.msg, /^STATUS=\d+ sockets; redis up\b/m, ready.msg);
	assert.match(ready.msg, /\bmysql up\b/, ready.msg);
	// The period is half of WATCHDOG_USEC, as sd_watchdog_enabled(3) asks.
	assert.match(d.log(), /systemd watchdog every 200 ms/);

	// The watchdog is fed from the loop: it stops while the process is
	// stopped (a wedged loop) and comes back when it runs again.
	await waitFor(() => states('WATCHDOG').length >= 3, { timeout: 20000, what: '3 WATCHDOG=1' });
	process.kill(d.pid, 'SIGSTOP');
	// Let what was in flight arrive before counting.
	await new Promise((res) => setTimeout(res, 300));
	const frozen = states('WATCHDOG').length;
	await new Promise((res) => setTimeout(res, 1500));
	assert.equal(states('WATCHDOG').length, frozen, 'WATCHDOG=1 from a stopped process');
	process.kill(d.pid, 'SIGCONT');
	await waitFor(() => states('WATCHDOG').length > frozen + 1,
		{ timeout: 20000, what: 'WATCHDOG=1 again after SIGCONT' });

	// A reload: RELOADING=1, then READY=1 again.
	const before = n.assignments().length;
	d.proc.kill('SIGHUP');
	await waitFor(() => states('READY').length === 2, { timeout: 20000, what: 'READY=1 after the reload' });
	const afterHup = n.assignments().slice(before).map((a) => a.key).filter((k) => k !== 'WATCHDOG');
	assert.deepEqual(afterHup.slice(0, 2), ['RELOADING', 'READY']);

	const res = await stop(d, 'SIGTERM');
	assert.equal(res.code, 0, d.log());
	const keys = n.assignments().map((a) => a.key).filter((k) => k !== 'WATCHDOG' && k !== 'STATUS');
	assert.equal(keys.at(-1), 'STOPPING', keys.join(','));
	assert.equal(sanitizerReport(d.log()), null);
});

test('a Redis that is down does not hold the start: READY=1 with the status naming it', async (t) => {
	const n = await notifySocket(t);
	const dead = await freePort();
	const cfg = await makeConfig({ redis: { port: dead } });
	const d = startDaemon(cfg, { t, env: { NOTIFY_SOCKET: n.path } });
	await waitFor(() => n.assignments().some((a) => a.key === 'READY'),
		{ timeout: 30000, what: 'READY=1 with Redis down' });
	const ready = n.messages.find((m) => /^READY=1$/m.test(m.msg));
	assert.match(ready.msg, /^STATUS=.*; redis down\b/m, ready.msg);
	assert.match(ready.msg, /\bmysql up\b/, ready.msg);
	// Not ready for traffic, though: /readyz says so.
	const r = await fetch(`${d.url}/readyz`);
	assert.equal(r.status, 503);
	await r.arrayBuffer();
	// No watchdog was asked for: none is sent.
	assert.equal(n.assignments().filter((a) => a.key === 'WATCHDOG').length, 0);
	await stop(d, 'SIGTERM');
});
