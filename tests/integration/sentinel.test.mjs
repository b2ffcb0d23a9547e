// Redis Sentinel (config redis.sentinel): the daemon finds the master through
// the sentinels, refuses a replica a sentinel wrongly names, and follows a
// real failover (primary killed -9, replica promoted by three sentinels)
// without dropping a WebSocket client.
//
// Every process started here (redis-server primary and replica, three
// redis-sentinel) is SIGKILLed when its test ends and when node exits,
// whatever happens; their files live in a temp dir removed at exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import {
	alertsKit, wsAlerts, wsWaitFor, waitFor, waitReady, waitReadyz, redisCommand,
	makeConfig, startDaemon, freshDatabase, freePort, tmpDir, randomId, have,
	sanitizerReport, stop, signJwt, apiCall, mysqlRoot,
	cleanStopChecker,
	eventId as eid,
} from './lib/harness.mjs';

const assertCleanStop = cleanStopChecker(/src\/redis\.c/,
	'leak in the Redis client');

const MASTER = 'mymaster';

// ---------------------------------------------------------------- processes

const children = new Set();
process.on('exit', () => {
	for (const c of children) {
		try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
	}
});

function spawnLogged(cmd, args, logFile) {
	const fd = fs.openSync(logFile, 'a');
	const p = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
	fs.closeSync(fd);
	children.add(p);
	p.unref();
	p.gone = new Promise((resolve) => p.once('exit', () => { children.delete(p); resolve(); }));
	p.once('error', () => children.delete(p));
	return p;
}

async function kill(p) {
	if (!p || p.exitCode !== null || p.signalCode !== null) return;
	p.ref();   // waiting for its exit must keep node's loop alive
	p.kill('SIGKILL');
	await p.gone;
}

const logTail = (file, n = 30) => {
	try { return fs.readFileSync(file, 'utf8').split('\n').slice(-n).join('\n'); } catch {
		return '';
	}
};

// A redis-server on a free port, optionally a replica of primaryPort.
async function startNode(t, dir, name, primaryPort) {
	const port = await freePort();
	const log = path.join(dir, `${name}.log`);
	const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
		'--dbfilename', `${name}.rdb`, '--save', '', '--appendonly', 'no',
		'--daemonize', 'no'];
	if (primaryPort) args.push('--replicaof', '127.0.0.1', String(primaryPort));
	const proc = spawnLogged('redis-server', args, log);
	t.after(() => kill(proc));
	await waitFor(async () => {
		if (proc.exitCode !== null) throw new Error(`${name} exited: ${logTail(log)}`);
		return (await redisCommand(port, ['PING'])) === 'PONG';
	}, { timeout: 20000, what: `${name} on ${port}` });
	return { port, proc, log };
}

// A redis-sentinel watching MASTER at primaryPort, with its own writable conf.
async function startSentinel(t, dir, i, primaryPort) {
	const port = await freePort();
	const conf = path.join(dir, `sentinel${i}.conf`);
	const log = path.join(dir, `sentinel${i}.log`);
	fs.writeFileSync(conf, [
		`port ${port}`,
		'bind 127.0.0.1',
		'daemonize no',
		`dir ${dir}`,
		'sentinel resolve-hostnames no',
		`sentinel monitor ${MASTER} 127.0.0.1 ${primaryPort} 2`,
		`sentinel down-after-milliseconds ${MASTER} 1000`,
		`sentinel failover-timeout ${MASTER} 5000`,
		`sentinel parallel-syncs ${MASTER} 1`,
		'',
	].join('\n'));
	const proc = spawnLogged('redis-sentinel', [conf], log);
	t.after(() => kill(proc));
	await waitFor(async () => {
		if (proc.exitCode !== null) throw new Error(`sentinel ${i} exited: ${logTail(log)}`);
		return (await redisCommand(port, ['PING'])) === 'PONG';
	}, { timeout: 20000, what: `sentinel ${i} on ${port}` });
	return { port, proc, log };
}

async function masterAddr(sentinelPort) {
	const r = await redisCommand(sentinelPort, ['SENTINEL', 'get-master-addr-by-name', MASTER],
		{ timeout: 1000 });
	return Array.isArray(r) ? `${r[0]}:${r[1]}` : null;
}

// SENTINEL MASTER as an object.
async function sentinelMaster(port) {
	const flat = await redisCommand(port, ['SENTINEL', 'MASTER', MASTER], { timeout: 1000 });
	if (!Array.isArray(flat)) return {};
	const o = {};
	for (let i = 0; i < flat.length; i += 2) o[flat[i]] = flat[i + 1];
	return o;
}

const skip = have('redis-sentinel') ? false : 'redis-sentinel is not installed';

// ---------------------------------------------------------------- fake sentinel

// Answers every SENTINEL get-master-addr-by-name with `answer.port` on
// 127.0.0.1 and counts the questions per answered port.
async function fakeSentinel(t, answer) {
	const asked = new Map();
	const server = net.createServer((sock) => {
		let buf = '';
		sock.on('error', () => {});
		sock.on('data', (d) => {
			buf += d.toString('latin1');
			// One question per connection; the whole command arrives
			// in one small write.
			if (!/get-master-addr-by-name\r\n\$\d+\r\n[^\r]*\r\n/i.test(buf)) return;
			buf = '';
			const p = String(answer.port);
			asked.set(answer.port, (asked.get(answer.port) || 0) + 1);
			sock.write(`*2\r\n$9\r\n127.0.0.1\r\n$${p.length}\r\n${p}\r\n`);
		});
	});
	await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
	t.after(() => new Promise((resolve) => server.close(resolve)));
	return { port: server.address().port, asked, server };
}

// ---------------------------------------------------------------- tests

test('a replica named by a sentinel is refused; a dead sentinel is skipped', { skip },
	async (t) => {
		const dir = tmpDir('sa-sentinel-');
		const primary = await startNode(t, dir, 'primary');
		const replica = await startNode(t, dir, 'replica', primary.port);
		const answer = { port: replica.port };
		const fake = await fakeSentinel(t, answer);
		const dead = await freePort();   // nothing listens there
		const db = await freshDatabase(t);
		const cfg = await makeConfig({
			mysql: { database: db },
			redis: { sentinel: { master_name: MASTER,
				addresses: [`127.0.0.1:${dead}`, `127.0.0.1:${fake.port}`] } },
		}, { redis: primary });
		const d = startDaemon(cfg, { t });

		// Asked again and again (each attempt re-asks), never ready on
		// the replica: ROLE says "slave".
		await waitFor(() => (fake.asked.get(replica.port) || 0) >= 4,
			{ timeout: 30000, what: 'the daemon to ask the sentinel 4 times' });
		const rz = await fetch(`${d.url}/readyz`);
		assert.equal(rz.status, 503, 'ready while only a replica was offered');
		assert.equal((await rz.json()).redis, 'down');
		assert.match(d.log(), /not the master \(ROLE slave\)/);
		assert.match(d.log(), new RegExp(`sentinel 127\\.0\\.0\\.1:${fake.port} says master ` +
			`'${MASTER}' is at 127\\.0\\.0\\.1:${replica.port}`));

		// The sentinel now names the real master: the daemon follows.
		answer.port = primary.port;
		await waitReady(d, 30000);
		assert.ok(fake.asked.get(primary.port) >= 1);
		// The command and the pub/sub connections are on the master.
		for (const who of ['redis', 'redis-pubsub']) {
			assert.match(d.log(), new RegExp(` ${who}: connected to ` +
				`127\\.0\\.0\\.1:${primary.port} \\(master\\)`), d.log());
		}

		// The master is demoted while we are connected (no disconnect:
		// a manual REPLICAOF keeps normal clients). The next write (a
		// subscription) gets -READONLY and the command connection asks the
		// sentinel again. (The periodic ROLE check would also notice, but
		// only 5 s after the connect; this write comes well before.)
		await mysqlRoot(null, 'INSERT INTO products (id, sku, name, stock, ' +
			"low_stock_threshold) VALUES (1, 'SKU-1', 'One', 5, 2)", db);
		const other = await startNode(t, dir, 'other');
		answer.port = other.port;
		assert.equal(await redisCommand(primary.port, ['REPLICAOF', '127.0.0.1', other.port]),
			'OK');
		// Any answer will do: the Redis write is what matters.
		const token = signJwt({ sub: 'demoted', exp: Math.floor(Date.now() / 1000) + 600 },
			cfg.secret);
		await apiCall(d.url, 'PUT', '/api/me/subscriptions/1', { token }).catch(() => {});
		await waitFor(() => new RegExp(` redis: connected to 127\\.0\\.0\\.1:${other.port} ` +
			'\\(master\\)').test(d.log()), { timeout: 20000, what: 'the command connection ' +
			`to move to the new master 127.0.0.1:${other.port}` });
		assert.match(d.log(), new RegExp(` redis: connection to 127\\.0\\.0\\.1:${primary.port} ` +
			'lost \\(the node is no longer the master \\(READONLY\\)\\)'));

		const r = await stop(d, 'SIGTERM');
		assert.equal(r.code, 0, `exit ${r.code}/${r.signal}`);
		assertCleanStop([sanitizerReport(d.log())].filter(Boolean));
	});

test('failover: primary killed -9, the daemon follows the sentinels, the socket stays',
	{ skip, timeout: 90000 }, async (t) => {
		const dir = tmpDir('sa-sentinel-');
		const primary = await startNode(t, dir, 'primary');
		const replica = await startNode(t, dir, 'replica', primary.port);
		const sentinels = [];
		for (let i = 1; i <= 3; i++) sentinels.push(await startSentinel(t, dir, i, primary.port));
		const sentinelLogs = () => sentinels.map((s, i) =>
			`--- sentinel ${i + 1} ---\n${logTail(s.log, 15)}`).join('\n');

		// A failover needs every sentinel to know the other two (hello
		// messages through the primary) and the replica, in sync.
		await waitFor(async () => {
			for (const s of sentinels) {
				const m = await sentinelMaster(s.port);
				if (Number(m['num-other-sentinels']) !== 2 || Number(m['num-slaves']) !== 1) {
					return false;
				}
			}
			const info = await redisCommand(replica.port, ['INFO', 'replication']);
			return /master_link_status:up/.test(info);
		}, { timeout: 30000, what: 'sentinels to discover each other and the replica' });

		const pid = 501;
		const kit = await alertsKit({
			t, redis: primary, products: [{ id: pid, stock: 10 }],
			overrides: { redis: { sentinel: { master_name: MASTER,
				addresses: sentinels.map((s) => `127.0.0.1:${s.port}`) } } },
		});
		t.after(async () => assertCleanStop(await kit.close()));
		const d = kit.daemons[0];
		assert.match(d.log(), new RegExp(`connected to 127\\.0\\.0\\.1:${primary.port} ` +
			'\\(master\\)'));

		const u = `fo-${randomId(3)}`;
		await kit.subscribe(u, pid);
		const h = await kit.connect(u);
		const e1 = eid('before');
		assert.equal(await kit.publish({ event_id: e1, product_id: pid, stock: 0,
			prev_stock: 5 }), 1, 'the daemon does not listen on the primary');
		await wsWaitFor(h, (m) => m.event_id === e1, 10000, 'alert before the failover');
		// What the daemon wrote (subscription index, event state) is on
		// the replica before the primary dies.
		assert.equal(await redisCommand(primary.port, ['WAIT', 1, 5000]), 1,
			'the replica did not acknowledge the writes');

		const t0 = Date.now();
		await kill(primary.proc);
		await waitReadyz(d, (st) => st === 503, 10000, '/readyz 503 with the primary gone');
		const newMaster = `127.0.0.1:${replica.port}`;
		await waitFor(async () => (await masterAddr(sentinels[0].port)) === newMaster,
			{ timeout: 45000, what: `the sentinels to promote ${newMaster}` })
			.catch((e) => { e.message += `\n${sentinelLogs()}`; throw e; });
		const tPromoted = Date.now();
		await waitReady(d, 45000);
		const tReady = Date.now();
		t.diagnostic(`failover: kill -9 -> sentinels name the new master ${tPromoted - t0} ms, ` +
			`-> daemon ready ${tReady - t0} ms`);
		assert.match(d.log(), new RegExp(`failover: master '${MASTER}' moved from ` +
			`127\\.0\\.0\\.1:${primary.port} to 127\\.0\\.0\\.1:${replica.port}`));

		const e2 = eid('after');
		const receivers = await redisCommand(replica.port, ['PUBLISH', `${kit.prefix}inventory`,
			JSON.stringify({ event_id: e2, product_id: pid, stock: 6, prev_stock: 0 })]);
		assert.equal(receivers, 1, '/readyz said 200 but the daemon is not subscribed on ' +
			'the new master');
		await wsWaitFor(h, (m) => m.event_id === e2, 10000, 'alert after the failover');
		assert.equal(h.closeInfo, null, 'the client was disconnected');
		assert.equal(h.messages.filter((m) => m.type === 'hello').length, 1);
		assert.deepEqual(wsAlerts(h).map((a) => [a.event_id, a.kind]),
			[[e1, 'sold_out'], [e2, 'back_in_stock']]);
		// The daemon's command connection writes to the new master too.
		await waitFor(async () => (await redisCommand(replica.port,
			['SCARD', `${kit.prefix}event:${e2}:i`])) >= 1,
		{ timeout: 10000, what: `event ${e2} recorded on the new master` });
	});
