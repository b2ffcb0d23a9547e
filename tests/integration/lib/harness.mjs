// Test harness for the node integration tests: free ports, private
// redis-server / mariadbd instances a test may kill and restart, daemon
// configs, the daemon itself, tokens, raw HTTP. Every process started here is
// killed when its test ends (pass `t`) and, whatever happens, when this node
// process exits or is signalled, so a failing test leaks nothing.
//
// Environment (set by tests/CMakeLists.txt and run-with-servers.sh):
//   STOCKALERTD, SA_SOURCE_DIR, SA_BUILD_DIR, SA_TEST_STATE,
//   SA_TEST_REDIS_PORT, SA_TEST_MYSQL_{HOST,PORT,USER,PASSWORD,DATABASE,ROOT_SOCKET}

import assert from 'node:assert/strict';
import { spawn, execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SOURCE_DIR = process.env.SA_SOURCE_DIR || path.resolve(here, '../../..');

function findDaemon() {
	if (process.env.STOCKALERTD) return process.env.STOCKALERTD;
	for (const d of ['build-asan', 'build']) {
		const p = path.join(SOURCE_DIR, d, 'stockalertd');
		if (fs.existsSync(p)) return p;
	}
	return path.join(SOURCE_DIR, 'build', 'stockalertd');
}
export const STOCKALERTD = findDaemon();
export const BUILD_DIR = process.env.SA_BUILD_DIR || path.dirname(STOCKALERTD);
export const STATIC_DIR = path.join(BUILD_DIR, 'share', 'stockalert', 'www');

// ---------------------------------------------------------------- cleanup

const live = new Set();   // child processes still running
const tmpDirs = new Set();

function killAllNow() {
	for (const c of live) {
		try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
	}
	live.clear();
	if (!process.env.SA_KEEP_TMP) {
		for (const d of tmpDirs) {
			try { fs.rmSync(d, { recursive: true, force: true }); } catch { /* busy */ }
		}
	}
}
process.on('exit', killAllNow);
for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) {
	process.on(sig, () => { killAllNow(); process.exit(128 + n); });
}

// Children are unref'd so a test file that forgot one still ends (and the
// exit handler kills it); waiting for a child's exit refs it again.
function track(child) {
	live.add(child);
	child.unref();
	const info = new Promise((resolve) => {
		child.once('exit', (code, signal) => {
			live.delete(child);
			resolve({ code, signal });
		});
		child.once('error', (err) => {
			live.delete(child);
			resolve({ code: null, signal: null, error: err });
		});
	});
	Object.defineProperty(child, 'exitInfo', {
		get() { child.ref(); return info; },
	});
	return child;
}

// Registers fn to run when test t ends (if t is given).
function onEnd(t, fn) {
	if (t && typeof t.after === 'function') t.after(fn);
}

export function tmpDir(prefix = 'sa-test-') {
	const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
	tmpDirs.add(d);
	return d;
}

// ---------------------------------------------------------------- utilities

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function randomId(n = 8) {
	return crypto.randomBytes(n).toString('hex');
}

// A TCP port on 127.0.0.1 nothing listens on right now.
export function freePort() {
	return new Promise((resolve, reject) => {
		const s = net.createServer();
		s.once('error', reject);
		s.listen(0, '127.0.0.1', () => {
			const { port } = s.address();
			s.close(() => resolve(port));
		});
	});
}

// Polls fn (sync or async) every `interval` ms until it returns a truthy
// value, which is returned. Throws after `timeout` ms, with the last value or
// error in the message.
export async function waitFor(fn, { timeout = 30000, interval = 50, what = 'condition' } = {}) {
	const deadline = Date.now() + timeout;
	let last;
	for (;;) {
		try {
			const v = await fn();
			if (v) return v;
			last = v;
		} catch (e) {
			last = e;
		}
		if (Date.now() >= deadline) {
			const detail = last instanceof Error ? last.message : JSON.stringify(last);
			throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${detail})`);
		}
		await sleep(interval);
	}
}

function tail(text, lines = 40) {
	return text.split('\n').slice(-lines).join('\n');
}

function run(cmd, args, opts = {}) {
	return new Promise((resolve) => {
		execFile(cmd, args, { timeout: 30000, maxBuffer: 16 << 20, ...opts },
			(err, stdout, stderr) => {
				resolve({
					code: err ? (typeof err.code === 'number' ? err.code : null) : 0,
					signal: err ? err.signal : null,
					stdout: String(stdout),
					stderr: String(stderr),
				});
			});
	});
}

// ---------------------------------------------------------------- redis

// A private redis-server on 127.0.0.1 (free port unless given), no
// persistence. The returned handle can stop() and start() it again on the
// same port.
export async function startRedis({ t, port } = {}) {
	const dir = tmpDir('sa-redis-');
	const h = {
		port: port || await freePort(),
		dir,
		proc: null,
		get pid() { return this.proc ? this.proc.pid : null; },
		async start() {
			const logFd = fs.openSync(path.join(dir, 'redis.log'), 'a');
			this.proc = track(spawn('redis-server', [
				'--port', String(this.port), '--bind', '127.0.0.1',
				'--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no',
			], { stdio: ['ignore', logFd, logFd] }));
			fs.closeSync(logFd);
			const proc = this.proc;
			await waitFor(async () => {
				if (proc.exitCode !== null || proc.signalCode !== null) {
					throw new Error('redis-server exited: ' +
						tail(fs.readFileSync(path.join(dir, 'redis.log'), 'utf8')));
				}
				return (await redisCommand(this.port, ['PING'])) === 'PONG';
			}, { timeout: 20000, what: `redis-server on ${this.port}` });
			return this;
		},
		stop(signal = 'SIGKILL') { return stopServer(this, signal); },
		command(args) { return redisCommand(this.port, args); },
	};
	onEnd(t, () => h.stop());
	return h.start();
}

// Sends every command of cmds (arrays of arguments) in ONE write on one
// connection, so Redis runs them back to back in that order; resolves the
// array of replies (Error for an error reply).
export function redisPipeline(port, cmds, { host = '127.0.0.1', timeout = 5000 } = {}) {
	return new Promise((resolve, reject) => {
		const sock = net.connect(port, host);
		let buf = Buffer.alloc(0);
		const timer = setTimeout(() => { sock.destroy(); reject(new Error('redis timeout')); },
			timeout);
		sock.on('error', (e) => { clearTimeout(timer); reject(e); });
		sock.on('connect', () => {
			const parts = [];
			for (const args of cmds) {
				parts.push(Buffer.from(`*${args.length}\r\n`));
				for (const a of args) {
					const b = Buffer.from(String(a));
					parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
				}
			}
			sock.write(Buffer.concat(parts));
		});
		sock.on('data', (d) => {
			buf = Buffer.concat([buf, d]);
			const out = [];
			let i = 0;
			while (out.length < cmds.length) {
				const r = parseResp(buf, i);
				if (!r) return;
				out.push(r.value);
				i = r.next;
			}
			clearTimeout(timer);
			sock.end();
			resolve(out);
		});
	});
}

// Sends one command and returns the decoded reply (string, number, array,
// null; Error for an error reply). Enough for tests and waitFor.
export async function redisCommand(port, args, { host = '127.0.0.1', timeout = 3000 } = {}) {
	return (await redisPipeline(port, [args], { host, timeout }))[0];
}

function parseResp(buf, i) {
	const eol = buf.indexOf('\r\n', i);
	if (eol < 0) return null;
	const type = String.fromCharCode(buf[i]);
	const line = buf.toString('utf8', i + 1, eol);
	const next = eol + 2;
	switch (type) {
	case '+': return { value: line, next };
	case '-': return { value: new Error(line), next };
	case ':': return { value: Number(line), next };
	case '$': {
		const n = Number(line);
		if (n < 0) return { value: null, next };
		if (buf.length < next + n + 2) return null;
		return { value: buf.toString('utf8', next, next + n), next: next + n + 2 };
	}
	case '*': {
		const n = Number(line);
		if (n < 0) return { value: null, next };
		const arr = [];
		let j = next;
		for (let k = 0; k < n; k++) {
			const r = parseResp(buf, j);
			if (!r) return null;
			arr.push(r.value);
			j = r.next;
		}
		return { value: arr, next: j };
	}
	default: throw new Error(`bad RESP type ${type}`);
	}
}

// ---------------------------------------------------------------- mariadb

// Same recipe as servers.sh: small InnoDB files, loopback only.
const MARIADB_SMALL = ['--innodb-log-file-size=8M', '--innodb-data-file-path=ibdata1:10M:autoextend'];
const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

// A private mariadbd on 127.0.0.1 (free port unless given) with database
// `database` and user `user`@127.0.0.1 / @localhost identified by `password`
// (random unless given) holding ALL PRIVILEGES. stop() and start() keep the
// port and the data directory.
export async function startMariadb({ t, port, user = 'stockalert', password,
	database = 'stockalert' } = {}) {
	const dir = tmpDir('sa-mysql-');
	const datadir = path.join(dir, 'data');
	const sock = path.join(dir, 'sock');
	const errLog = path.join(dir, 'err.log');
	fs.mkdirSync(path.join(dir, 'tmp'));
	const userArgs = asRoot ? ['--user=root'] : [];
	const install = await run('mariadb-install-db', ['--no-defaults', ...userArgs,
		'--auth-root-authentication-method=normal', '--skip-test-db',
		`--datadir=${datadir}`, ...MARIADB_SMALL], { timeout: 120000 });
	if (install.code !== 0) {
		throw new Error(`mariadb-install-db failed: ${install.stdout}${install.stderr}`);
	}
	// The database and the user are created by --init-file, which runs
	// before the server handles its first connection: a daemon already
	// retrying never sees the server without them (and "Access denied").
	const pass = password || randomId(12);
	const pw = pass.replace(/\\/g, '\\\\').replace(/'/g, "''");
	const initSql = path.join(dir, 'init.sql');
	fs.writeFileSync(initSql, [
		`CREATE DATABASE IF NOT EXISTS \`${database}\` CHARACTER SET utf8mb4;`,
		`CREATE OR REPLACE USER '${user}'@'127.0.0.1' IDENTIFIED BY '${pw}';`,
		`CREATE OR REPLACE USER '${user}'@'localhost' IDENTIFIED BY '${pw}';`,
		`GRANT ALL PRIVILEGES ON *.* TO '${user}'@'127.0.0.1';`,
		`GRANT ALL PRIVILEGES ON *.* TO '${user}'@'localhost';`,
		'',
	].join('\n'));
	const h = {
		port: port || await freePort(),
		dir, socket: sock, user, database,
		password: pass,
		proc: null,
		get pid() { return this.proc ? this.proc.pid : null; },
		async start() {
			const fd = fs.openSync(errLog, 'a');
			this.proc = track(spawn('mariadbd', ['--no-defaults', ...userArgs,
				`--datadir=${datadir}`, `--socket=${sock}`,
				`--pid-file=${path.join(dir, 'mariadb.pid')}`, `--port=${this.port}`,
				'--bind-address=127.0.0.1', '--skip-name-resolve', `--log-error=${errLog}`,
				`--tmpdir=${path.join(dir, 'tmp')}`, '--skip-log-bin',
				'--innodb-buffer-pool-size=32M', ...MARIADB_SMALL, `--init-file=${initSql}`,
			], { stdio: ['ignore', fd, fd] }));
			fs.closeSync(fd);
			const proc = this.proc;
			await waitFor(async () => {
				if (proc.exitCode !== null || proc.signalCode !== null) {
					throw new Error('mariadbd exited: ' + tail(fs.readFileSync(errLog, 'utf8')));
				}
				const r = await run('mariadb-admin', ['--no-defaults', `--socket=${sock}`,
					'-uroot', 'ping'], { timeout: 5000 });
				return r.code === 0;
			}, { timeout: 60000, what: `mariadbd on ${this.port}` });
			return this;
		},
		stop(signal = 'SIGKILL') { return stopServer(this, signal); },
		// Runs SQL as root over the socket; returns stdout (tab-separated).
		async sql(query, db) {
			return mysqlRoot(sock, query, db);
		},
	};
	onEnd(t, () => h.stop());
	await h.start();
	return h;
}

// Runs SQL as root over a unix socket (default: the fixture's); returns
// stdout, batch mode (tab-separated, no headers). Throws on error.
export async function mysqlRoot(socket, query, db) {
	const sock = socket || process.env.SA_TEST_MYSQL_ROOT_SOCKET;
	if (!sock) throw new Error('no MySQL root socket (SA_TEST_MYSQL_ROOT_SOCKET unset)');
	const args = ['--no-defaults', `--socket=${sock}`, '-uroot', '-B', '-N', '-e', query];
	if (db) args.push(db);
	const r = await run('mariadb', args);
	if (r.code !== 0) throw new Error(`mariadb: ${r.stderr.trim()}`);
	return r.stdout;
}

// Creates a fresh database on the fixture's server (for tests that need an
// empty schema) and drops it when t ends. Returns its name.
export async function freshDatabase(t) {
	const name = `stockalert_t${randomId(6)}`;
	await mysqlRoot(null, `CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4`);
	onEnd(t, () => mysqlRoot(null, `DROP DATABASE IF EXISTS \`${name}\``).catch(() => {}));
	return name;
}

// ---------------------------------------------------------------- config

function isObject(v) {
	return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Deep merge; an override value of `undefined` deletes the key.
function merge(base, over) {
	const out = { ...base };
	for (const [k, v] of Object.entries(over || {})) {
		if (v === undefined) delete out[k];
		else if (isObject(v) && isObject(out[k])) out[k] = merge(out[k], v);
		else out[k] = v;
	}
	return out;
}

// Writes a daemon config into a fresh temp dir: listen on 127.0.0.1 on a
// free port, the fixture's Redis and MySQL (override with `redis`/`mysql`
// handles from startRedis/startMariadb or plain overrides), a fresh 48-byte
// HS256 secret, a Redis prefix unique to this config so tests never collide
// in the shared Redis, the build tree's static dir.
// Returns { path, dir, config, port, url, secret, secretFile }.
export async function makeConfig(overrides = {}, { redis, mysql } = {}) {
	const dir = tmpDir('sa-conf-');
	const env = process.env;
	const secret = crypto.randomBytes(48).toString('base64');
	const secretFile = path.join(dir, 'jwt.secret');
	fs.writeFileSync(secretFile, secret + '\n', { mode: 0o600 });

	const mysqlPassword = mysql ? mysql.password : (env.SA_TEST_MYSQL_PASSWORD || '');
	const passwordFile = path.join(dir, 'mysql.password');
	fs.writeFileSync(passwordFile, mysqlPassword + '\n', { mode: 0o600 });

	const port = await freePort();
	const base = {
		listen: { host: '127.0.0.1', port },
		auth: { algorithm: 'HS256', secret_file: secretFile },
		redis: {
			host: '127.0.0.1',
			port: redis ? redis.port : Number(env.SA_TEST_REDIS_PORT || 6379),
			prefix: `t${randomId(6)}:`,
		},
		mysql: {
			host: mysql ? '127.0.0.1' : (env.SA_TEST_MYSQL_HOST || '127.0.0.1'),
			port: mysql ? mysql.port : Number(env.SA_TEST_MYSQL_PORT || 3306),
			user: mysql ? mysql.user : (env.SA_TEST_MYSQL_USER || 'stockalert'),
			password_file: passwordFile,
			database: mysql ? mysql.database : (env.SA_TEST_MYSQL_DATABASE || 'stockalert'),
		},
		static_dir: STATIC_DIR,
		shutdown_grace_s: 5,
		log: { level: 'info', format: 'text' },
	};
	const config = merge(base, overrides);
	const file = path.join(dir, 'stockalertd.json');
	fs.writeFileSync(file, JSON.stringify(config, null, 2) + '\n');
	const p = config.listen && config.listen.port;
	return {
		path: file, dir, config, port: p, url: `http://127.0.0.1:${p}`,
		wsUrl: `ws://127.0.0.1:${p}`, secret, secretFile,
	};
}

// Writes raw text as a config file (for malformed-config tests).
export function writeRawConfig(text) {
	const file = path.join(tmpDir('sa-conf-'), 'stockalertd.json');
	fs.writeFileSync(file, typeof text === 'string' ? text : JSON.stringify(text));
	return file;
}

// ---------------------------------------------------------------- daemon

// Runs the binary to completion (CLI tests). Returns { code, signal, stdout, stderr }.
export function runDaemonCli(args, opts = {}) {
	return run(STOCKALERTD, args, { timeout: 20000, ...opts });
}

// Spawns `stockalertd -c cfg.path`, stdout and stderr into files in the
// config's dir. Returns a handle: { proc, pid, url, port, logFile, log(),
// exited }. Killed when t ends (SIGTERM, then SIGKILL after 10 s).
export function startDaemon(cfg, { t, args = [], env = {} } = {}) {
	const logFile = path.join(cfg.dir, `stockalertd.${randomId(3)}.log`);
	const fd = fs.openSync(logFile, 'a');
	const proc = track(spawn(STOCKALERTD, ['-c', cfg.path, ...args], {
		stdio: ['ignore', fd, fd],
		env: { ...process.env, ...env },
	}));
	fs.closeSync(fd);
	const d = {
		proc, pid: proc.pid, cfg, url: cfg.url, wsUrl: cfg.wsUrl, port: cfg.port, logFile,
		get exited() { return proc.exitInfo; },
		get running() { return proc.exitCode === null && proc.signalCode === null; },
		log() {
			try { return fs.readFileSync(logFile, 'utf8'); } catch { return ''; }
		},
	};
	onEnd(t, async () => {
		if (!d.running) return;
		proc.kill('SIGTERM');
		const timer = setTimeout(() => { try { proc.kill('SIGKILL'); } catch { /* gone */ } },
			10000);
		await proc.exitInfo;
		clearTimeout(timer);
	});
	return d;
}

// Polls GET /readyz until it answers 200. `target` is a daemon handle or a
// base URL. Fails early (with the daemon's log) if the daemon exits.
export async function waitReady(target, timeout = 30000) {
	const d = typeof target === 'string' ? null : target;
	const url = d ? d.url : target;
	try {
		return await waitFor(async () => {
			if (d && !d.running) {
				const info = await d.exited;
				throw new Error(`daemon exited (code ${info.code}, signal ${info.signal})`);
			}
			const r = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
			await r.arrayBuffer();
			return r.status === 200;
		}, { timeout, what: `${url}/readyz == 200` });
	} catch (e) {
		if (d) e.message += `\n--- daemon log (tail) ---\n${tail(d.log())}`;
		throw e;
	}
}

// Polls GET /readyz until pred(status, json) is true; returns { status, body }.
export async function waitReadyz(d, pred, timeout = 45000, what = 'readyz state') {
	let last;
	try {
		return await waitFor(async () => {
			if (!d.running) throw new Error('daemon exited');
			const r = await fetch(`${d.url}/readyz`, { signal: AbortSignal.timeout(3000) });
			const text = await r.text();
			let body = null;
			try { body = JSON.parse(text); } catch { /* not JSON */ }
			last = { status: r.status, text };
			return pred(r.status, body) ? { status: r.status, body } : false;
		}, { timeout, what });
	} catch (e) {
		e.message += `\nlast /readyz: ${JSON.stringify(last)}` +
			`\n--- daemon log (tail) ---\n${tail(d.log())}`;
		throw e;
	}
}

// Sends signal and waits for the daemon to exit. Returns { code, signal, ms }.
// If it has not exited after `timeout` ms it is SIGKILLed and `killed` is true.
export async function stop(d, signal = 'SIGTERM', timeout = 30000) {
	if (!d.running) return { ...(await d.exited), ms: 0, killed: false };
	const t0 = Date.now();
	d.proc.kill(signal);
	let killed = false;
	const timer = setTimeout(() => { killed = true; d.proc.kill('SIGKILL'); }, timeout);
	const info = await d.exited;
	clearTimeout(timer);
	return { code: info.code, signal: info.signal, ms: Date.now() - t0, killed };
}

// Stops a private server started by startRedis/startMariadb (SIGKILL by
// default: the daemon must notice a server that vanished, not only one that
// said goodbye).
async function stopServer(srv, signal) {
	const p = srv.proc;
	if (!p || p.exitCode !== null || p.signalCode !== null) return;
	p.kill(signal);
	await p.exitInfo;
	srv.proc = null;
}

// Sanitizer or crash reports in a daemon log, or null.
export function sanitizerReport(log) {
	const m = log.match(/(==\d+==ERROR: \w+Sanitizer[\s\S]*|^.*runtime error:.*$)/m);
	return m ? m[0].slice(0, 4000) : null;
}

// Stops d with SIGTERM and asserts a clean stop: no sanitizer report in its
// log and exit code 0.
export async function stopClean(d) {
	const r = await stop(d, 'SIGTERM');
	const log = d.log();
	const report = sanitizerReport(log);
	assert.equal(report, null, report);
	assert.equal(r.code, 0, `exit ${r.code} signal ${r.signal}\n${log.slice(-3000)}`);
}

// A checker for the reports of a kit's close(): it fails on any sanitizer
// error, and tolerates a LeakSanitizer report alone unless one of its stacks
// passes through `modules` (a RegExp of source paths): shutdown leaks of
// other modules are their own tests' business. `what` names the leak.
export function cleanStopChecker(modules, what = 'leak') {
	return (reports) => {
		for (const r of reports) {
			if (/LeakSanitizer/.test(r) && !/ERROR: AddressSanitizer|runtime error:/.test(r)) {
				assert.doesNotMatch(r, modules, `${what}:\n${r}`);
				continue;
			}
			assert.fail(`daemon did not stop cleanly:\n${r}`);
		}
	};
}

// A unique inventory event id, `<tag>-<random>`.
export const eventId = (tag = 'e') => `${tag}-${randomId(5)}`;

// `stockalertd gentoken`; returns the token (throws with stderr on failure).
export async function gentoken(configPath, sub, roles = [], ttl) {
	const args = ['gentoken', '--sub', sub, '-c', configPath];
	if (roles && roles.length) args.push('--roles', roles.join(','));
	if (ttl !== undefined) args.push('--ttl', String(ttl));
	const r = await runDaemonCli(args);
	if (r.code !== 0) throw new Error(`gentoken exited ${r.code}: ${r.stderr}`);
	return r.stdout.trim();
}

// Decodes a JWT without verifying it: { header, payload, parts }.
export function decodeJwt(token) {
	const parts = token.split('.');
	if (parts.length !== 3) throw new Error(`not a JWT: ${token}`);
	const dec = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
	return { header: dec(parts[0]), payload: dec(parts[1]), parts };
}

// Signs an HS256 JWT with `secret` (for tests of rejected/forged tokens).
export function signJwt(payload, secret, header = { alg: 'HS256', typ: 'JWT' }) {
	const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
	const data = `${enc(header)}.${enc(payload)}`;
	const sig = crypto.createHmac('sha256', secret).update(data).digest('base64url');
	return `${data}.${sig}`;
}

// ---------------------------------------------------------------- raw HTTP

// Sends `head` (request line + headers, CRLF-terminated, without the blank
// line), then the blank line, then `body` (unless `bodyAfterResponseTimeout`
// asks to hold it back until the server has had a chance to answer on the
// headers alone). Resolves { status, headers, body, raw } once a complete
// response arrived or the server closed.
export function rawRequest(port, head, body = '', { timeout = 10000, holdBodyMs = 0 } = {}) {
	return new Promise((resolve, reject) => {
		const sock = net.connect(port, '127.0.0.1');
		let buf = Buffer.alloc(0);
		let done = false;
		const finish = (err) => {
			if (done) return;
			const res = parseHttpResponse(buf);
			if (!res && err) {
				done = true;
				sock.destroy();
				reject(err);
				return;
			}
			if (res && (res.complete || err)) {
				done = true;
				sock.destroy();
				resolve(res);
			}
		};
		const timer = setTimeout(() => finish(new Error(
			`no complete HTTP response within ${timeout} ms; got: ${JSON.stringify(buf.toString())}`)),
		timeout);
		sock.on('connect', () => {
			sock.write(head + '\r\n');
			if (!body) return;
			if (holdBodyMs > 0) {
				setTimeout(() => { if (!done) sock.write(body, () => {}); }, holdBodyMs);
			} else {
				sock.write(body, () => {});
			}
		});
		sock.on('data', (d) => { buf = Buffer.concat([buf, d]); finish(); });
		// A server may reset a connection it refused a body on: what we
		// already received still counts.
		sock.on('error', (e) => { clearTimeout(timer); finish(e); });
		sock.on('close', () => { clearTimeout(timer); finish(new Error('connection closed')); });
	});
}

export function parseHttpResponse(buf) {
	const end = buf.indexOf('\r\n\r\n');
	if (end < 0) return null;
	const lines = buf.toString('latin1', 0, end).split('\r\n');
	const m = lines[0].match(/^HTTP\/1\.[01] (\d{3})/);
	if (!m) return null;
	const headers = {};
	for (const l of lines.slice(1)) {
		const i = l.indexOf(':');
		if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
	}
	let body = buf.subarray(end + 4);
	let complete = false;
	if (headers['content-length'] !== undefined) {
		const n = Number(headers['content-length']);
		complete = body.length >= n;
		body = body.subarray(0, n);
	} else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
		const dec = decodeChunked(body);
		complete = dec !== null;
		if (dec) body = dec;
	}
	return { status: Number(m[1]), headers, body: body.toString('utf8'), complete, raw: buf };
}

function decodeChunked(b) {
	const out = [];
	let i = 0;
	for (;;) {
		const eol = b.indexOf('\r\n', i);
		if (eol < 0) return null;
		const n = parseInt(b.toString('latin1', i, eol), 16);
		if (Number.isNaN(n)) return null;
		if (n === 0) return Buffer.concat(out);
		if (b.length < eol + 2 + n + 2) return null;
		out.push(b.subarray(eol + 2, eol + 2 + n));
		i = eol + 2 + n + 2;
	}
}

// Asserts-free check of the error shape (README.md, HTTP API); returns the parsed body or
// throws describing what is wrong.
export function parseErrorBody(text) {
	let j;
	try { j = JSON.parse(text); } catch {
		throw new Error(`error body is not JSON: ${JSON.stringify(text)}`);
	}
	if (!isObject(j) || !isObject(j.error) || typeof j.error.code !== 'string' ||
	    !j.error.code || typeof j.error.message !== 'string' || !j.error.message) {
		throw new Error(`error body is not {"error":{"code","message"}}: ${text}`);
	}
	return j;
}

// ---------------------------------------------------------------- prometheus

// Strict parser for the Prometheus text format (0.0.4). Returns
// { samples: [{name, labels, value}], types: {name: type}, help: {name: text} }
// or throws naming the offending line.
export function parsePrometheus(text) {
	const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
	const types = {};
	const help = {};
	const samples = [];
	const seen = new Set();
	if (!text.endsWith('\n')) throw new Error('exposition does not end with a newline');
	const lines = text.split('\n').slice(0, -1);
	lines.forEach((line, idx) => {
		const where = `line ${idx + 1}: ${JSON.stringify(line)}`;
		if (line === '') return;
		if (line.startsWith('#')) {
			const m = line.match(/^# (HELP|TYPE) (\S+)(?: (.*))?$/);
			if (!m) {
				if (/^# (HELP|TYPE)\b/.test(line)) throw new Error(`malformed ${where}`);
				return; // plain comment
			}
			const [, kind, name, rest] = m;
			if (!NAME.test(name)) throw new Error(`bad metric name in ${where}`);
			if (kind === 'TYPE') {
				if (!/^(counter|gauge|histogram|summary|untyped)$/.test(rest || '')) {
					throw new Error(`bad TYPE in ${where}`);
				}
				if (types[name]) throw new Error(`second TYPE for ${name} at ${where}`);
				if (samples.some((s) => baseName(s.name, rest) === name)) {
					throw new Error(`TYPE after samples of ${name} at ${where}`);
				}
				types[name] = rest;
			} else {
				if (help[name] !== undefined) throw new Error(`second HELP for ${name}`);
				help[name] = rest || '';
			}
			return;
		}
		const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/);
		if (!m) throw new Error(`malformed sample ${where}`);
		const [, name, , labelText, valueText] = m;
		const labels = {};
		if (labelText !== undefined && labelText !== '') {
			const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
			let pos = 0;
			while (pos < labelText.length) {
				re.lastIndex = pos;
				const lm = re.exec(labelText);
				if (!lm) throw new Error(`malformed labels in ${where}`);
				if (labels[lm[1]] !== undefined) throw new Error(`duplicate label in ${where}`);
				labels[lm[1]] = lm[2].replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
				pos = re.lastIndex;
				if (lm[3] === '' && pos !== labelText.length) {
					throw new Error(`malformed labels in ${where}`);
				}
			}
		}
		if (!/^([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?Inf|NaN)$/.test(valueText)) {
			throw new Error(`bad value in ${where}`);
		}
		const key = name + JSON.stringify(Object.entries(labels).sort());
		if (seen.has(key)) throw new Error(`duplicate sample ${where}`);
		seen.add(key);
		const value = valueText.endsWith('Inf') ? (valueText.startsWith('-') ? -Infinity : Infinity)
			: Number(valueText);
		samples.push({ name, labels, value });
	});
	return { samples, types, help };
}

function baseName(sample, type) {
	if (type === 'histogram') return sample.replace(/_(bucket|sum|count)$/, '');
	if (type === 'summary') return sample.replace(/_(sum|count)$/, '');
	return sample;
}

// ---------------------------------------------------------------- /proc

// File descriptors of pid that are epoll instances, with the number of fds
// each one watches (tfd: lines in fdinfo).
export function epollFds(pid) {
	const out = [];
	for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
		let target;
		try { target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
		if (target !== 'anon_inode:[eventpoll]') continue;
		let watched = 0;
		try {
			watched = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8')
				.split('\n').filter((l) => l.startsWith('tfd:')).length;
		} catch { /* raced with close */ }
		out.push({ fd: Number(fd), watched });
	}
	return out;
}

// Best effort: is `cmd` on PATH?
export function have(cmd) {
	try {
		execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
		return true;
	} catch {
		return false;
	}
}

// ---------------------------------------------------------------- WebSocket (ws tests)

// Wraps a client WebSocket (the npm `ws` class, passed in so this file does
// not depend on it): records text frames as parsed JSON and the close, so a
// test can wait for them. Returns { ws, messages, opened, closed, next(pred,
// timeout), send(obj) }; `opened` rejects with { status, headers } on an HTTP
// refusal of the upgrade, `closed` resolves { code, reason, ms } (ms since
// creation).
export function wsTrack(ws) {
	const t0 = Date.now();
	const messages = [];
	const waiters = new Set();
	const h = { ws, messages, closeInfo: null };
	h.opened = new Promise((resolve, reject) => {
		ws.once('open', resolve);
		ws.once('unexpected-response', (req, res) => {
			let body = '';
			res.setEncoding('utf8');
			res.on('data', (d) => { body += d; });
			res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`),
				{ status: res.statusCode, headers: res.headers, body })));
			res.on('error', () => {});
		});
		ws.once('error', reject);
	});
	h.opened.catch(() => {});
	h.closed = new Promise((resolve) => {
		ws.on('error', () => {});
		ws.once('close', (code, reason) => {
			h.closeInfo = { code, reason: String(reason), ms: Date.now() - t0 };
			for (const w of waiters) w.check();
			resolve(h.closeInfo);
		});
	});
	ws.on('message', (data, isBinary) => {
		let v;
		try { v = isBinary ? { binary: data } : JSON.parse(String(data)); } catch {
			v = { unparsable: String(data) };
		}
		messages.push(v);
		for (const w of waiters) w.check();
	});
	// Resolves the first message (from `from` on, default: any not yet
	// consumed by next()) that pred accepts; rejects on close or timeout.
	h.cursor = 0;
	h.next = (pred = () => true, timeout = 10000, what = 'a message') =>
		new Promise((resolve, reject) => {
			const w = {
				check() {
					for (; h.cursor < messages.length; h.cursor++) {
						if (pred(messages[h.cursor])) {
							const m = messages[h.cursor++];
							done();
							resolve(m);
							return;
						}
					}
					if (h.closeInfo) {
						done();
						reject(new Error(`socket closed (${h.closeInfo.code} ` +
							`${h.closeInfo.reason}) while waiting for ${what}; got ` +
							JSON.stringify(messages).slice(0, 1000)));
					}
				},
			};
			const timer = setTimeout(() => {
				done();
				reject(new Error(`timed out after ${timeout} ms waiting for ${what}; got ` +
					JSON.stringify(messages).slice(0, 1000)));
			}, timeout);
			const done = () => { clearTimeout(timer); waiters.delete(w); };
			waiters.add(w);
			w.check();
		});
	h.send = (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
	return h;
}

// The value of one sample of the daemon's /metrics (labels must match), or
// undefined when absent.
export async function metricValue(url, name, labels = {}) {
	const r = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(3000) });
	const m = parsePrometheus(await r.text());
	const s = m.samples.find((x) => x.name === name &&
		Object.entries(labels).every(([k, v]) => x.labels[k] === v));
	return s ? s.value : undefined;
}

// VmRSS of pid in KiB.
export function rssKiB(pid) {
	const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
	return m ? Number(m[1]) : NaN;
}

export function fdCount(pid) {
	return fs.readdirSync(`/proc/${pid}/fd`).length;
}

// A masked client WebSocket frame (RFC 6455 §5.2), FIN set unless fin=false.
export function wsClientFrame(payload, opcode = 0x1, fin = true) {
	const data = Buffer.isBuffer(payload) ? payload : Buffer.from(String(payload));
	const n = data.length;
	const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
	const out = Buffer.alloc(2 + ext + 4 + n);
	out[0] = (fin ? 0x80 : 0) | opcode;
	if (ext === 0) out[1] = 0x80 | n;
	else if (ext === 2) { out[1] = 0x80 | 126; out.writeUInt16BE(n, 2); }
	else { out[1] = 0x80 | 127; out.writeBigUInt64BE(BigInt(n), 2); }
	const mask = crypto.randomBytes(4);
	mask.copy(out, 2 + ext);
	for (let i = 0; i < n; i++) out[2 + ext + 4 + i] = data[i] ^ mask[i & 3];
	return out;
}

// Parses the unmasked server frames at the start of buf. Returns { frames:
// [{ fin, opcode, payload }], rest } (rest: an incomplete trailing frame).
export function wsParseFrames(buf) {
	const frames = [];
	let i = 0;
	for (;;) {
		if (buf.length < i + 2) break;
		let n = buf[i + 1] & 0x7f;
		let h = 2;
		if (n === 126) {
			if (buf.length < i + 4) break;
			n = buf.readUInt16BE(i + 2);
			h = 4;
		} else if (n === 127) {
			if (buf.length < i + 10) break;
			n = Number(buf.readBigUInt64BE(i + 2));
			h = 10;
		}
		if (buf.length < i + h + n) break;
		frames.push({ fin: !!(buf[i] & 0x80), opcode: buf[i] & 0x0f,
			payload: buf.subarray(i + h, i + h + n) });
		i += h + n;
	}
	return { frames, rest: buf.subarray(i) };
}

// Opens a raw TCP connection and performs the WebSocket upgrade by hand.
// Resolves { sock, status, headers, rest } once the response head arrived;
// `rest` holds bytes after it. The socket is paused and has no data
// listener: the caller decides whether to read.
export function wsRawConnect(port, pathAndQuery, extraHeaders = {}, timeout = 10000) {
	return new Promise((resolve, reject) => {
		const key = crypto.randomBytes(16).toString('base64');
		const sock = net.connect(port, '127.0.0.1');
		let buf = Buffer.alloc(0);
		const timer = setTimeout(() => { sock.destroy(); reject(new Error('handshake timeout')); },
			timeout);
		const onData = (d) => {
			buf = Buffer.concat([buf, d]);
			const end = buf.indexOf('\r\n\r\n');
			if (end < 0) return;
			clearTimeout(timer);
			sock.removeListener('data', onData);
			sock.pause();
			const res = parseHttpResponse(buf);
			const accept = crypto.createHash('sha1')
				.update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
			if (res.status === 101 && res.headers['sec-websocket-accept'] !== accept) {
				sock.destroy();
				reject(new Error(`bad Sec-WebSocket-Accept ${res.headers['sec-websocket-accept']}`));
				return;
			}
			resolve({ sock, status: res.status, headers: res.headers, rest: buf.subarray(end + 4) });
		};
		sock.on('data', onData);
		sock.on('error', (e) => { clearTimeout(timer); reject(e); });
		sock.on('connect', () => {
			let head = `GET ${pathAndQuery} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
				'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
				`Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n`;
			for (const [k, v] of Object.entries(extraHeaders)) head += `${k}: ${v}\r\n`;
			sock.write(head + '\r\n');
		});
	});
}

// ---------------------------------------------------------------- subscriptions (subs tests)

// One JSON API call: { status, headers (object, lower-case), text, json }.
// `body` is sent as is when it is a string, as JSON otherwise.
export async function apiCall(url, method, p, { token, body, headers = {}, timeout = 15000 } = {}) {
	const h = { ...headers };
	if (token !== undefined) h.Authorization = `Bearer ${token}`;
	let data;
	if (body !== undefined) {
		data = typeof body === 'string' ? body : JSON.stringify(body);
		if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) {
			h['Content-Type'] = 'application/json';
		}
	}
	const r = await fetch(`${url}${p}`, { method, headers: h, body: data,
		signal: AbortSignal.timeout(timeout) });
	const text = await r.text();
	let json = null;
	try { json = JSON.parse(text); } catch { /* not JSON */ }
	return { status: r.status, headers: Object.fromEntries(r.headers), text, json };
}

// Every key matching pattern (SCAN, never KEYS), sorted.
export async function redisScanKeys(port, pattern) {
	const keys = new Set();
	let cursor = '0';
	do {
		const r = await redisCommand(port, ['SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000]);
		if (r instanceof Error) throw r;
		cursor = String(r[0]);
		for (const k of r[1]) keys.add(k);
	} while (cursor !== '0');
	return [...keys].sort();
}

// The live subscription index (conf/README.md, Redis and MySQL layout) under prefix, canonical:
// { users: { user: [product ids as strings, sorted] },
//   products: { product: { user: score } } }.
export async function subsIndexFromRedis(port, prefix) {
	const users = {};
	const products = {};
	for (const k of await redisScanKeys(port, `${prefix}user:*:subs`)) {
		const user = k.slice(prefix.length + 'user:'.length, -':subs'.length);
		const m = await redisCommand(port, ['SMEMBERS', k]);
		if (m instanceof Error) throw m;
		users[user] = m.map(String).sort();
	}
	for (const k of await redisScanKeys(port, `${prefix}product:*:subs`)) {
		const pid = k.slice(prefix.length + 'product:'.length, -':subs'.length);
		const z = await redisCommand(port, ['ZRANGE', k, 0, -1, 'WITHSCORES']);
		if (z instanceof Error) throw z;
		const o = {};
		for (let i = 0; i < z.length; i += 2) o[z[i]] = Number(z[i + 1]);
		products[pid] = o;
	}
	return { users, products };
}

// The same shape from MySQL's active subscription rows. `sql(query)` runs a
// query in the daemon's database and returns batch output (mysqlRoot or a
// startMariadb handle's sql, bound to the database).
export async function subsIndexFromMysql(sql) {
	const out = await sql('SELECT user_id, product_id, ' +
		'CAST(UNIX_TIMESTAMP(created_at) * 1000 AS UNSIGNED) FROM subscriptions WHERE active = 1');
	const users = {};
	const products = {};
	for (const line of out.split('\n')) {
		if (!line) continue;
		const [user, pid, ms] = line.split('\t');
		(users[user] ||= []).push(pid);
		(products[pid] ||= {})[user] = Number(ms);
	}
	for (const u of Object.keys(users)) users[u].sort();
	return { users, products };
}

// ---------------------------------------------------------------- alerts (alerts tests)

// Waits until h.messages (a wsTrack handle) holds a message pred accepts,
// without consuming anything (unlike h.next); returns { msg, index }.
// Rejects on timeout or close, listing what arrived.
export async function wsWaitFor(h, pred, timeout = 10000, what = 'a message') {
	const deadline = Date.now() + timeout;
	for (;;) {
		const index = h.messages.findIndex(pred);
		if (index >= 0) return { msg: h.messages[index], index };
		if (h.closeInfo || Date.now() >= deadline) {
			throw new Error(`${h.closeInfo ? `socket closed (${h.closeInfo.code})` :
				`timed out after ${timeout} ms`} waiting for ${what}; got ` +
				JSON.stringify(h.messages).slice(0, 3000));
		}
		await sleep(10);
	}
}

// Product every alerts-kit client subscribes to over its socket right after
// hello: the 'subscribed' ack comes after the instance has loaded the
// user's subscriptions (same Redis connection, issued first) and after the
// change notice went out, so events published afterwards find the roster
// ready. No event ever names it.
export const ALERTS_SYNC_PRODUCT = 9;

// A kit's close(): terminates its clients, stops its running daemons
// (SIGTERM) and returns the exit and sanitizer reports of every daemon.
async function closeKit(clients, daemons) {
	for (const h of clients) { try { h.ws.terminate(); } catch { /* gone */ } }
	const reports = [];
	for (const d of daemons) {
		if (d.running) {
			const r = await stop(d, 'SIGTERM');
			if (r.code !== 0) reports.push(`exit ${r.code}/${r.signal}: ${tail(d.log())}`);
		}
		const rep = sanitizerReport(d.log());
		if (rep) reports.push(rep);
	}
	return reports;
}

// Daemons for the alerts tests: a fresh MySQL database, `instances`
// stockalertd sharing it, one Redis prefix and one JWT secret, `products`
// ([{id, name, stock, threshold}]) inserted once they are ready. Returns a
// kit: { daemons, prefix, redisPort, secret, db, sql, token, subscribe,
// connect, publish, processed, metric, close }. close() closes clients and
// stops the daemons (SIGTERM), returning their sanitizer reports.
export async function alertsKit({ t, instances = 1, overrides = {}, redis, products = [] } = {}) {
	const db = `stockalert_t${randomId(6)}`;
	await mysqlRoot(null, `CREATE DATABASE \`${db}\` CHARACTER SET utf8mb4`);
	const redisPort = redis ? redis.port : Number(process.env.SA_TEST_REDIS_PORT || 6379);
	const cfgs = [await makeConfig(merge({ mysql: { database: db } }, overrides), { redis })];
	for (let i = 1; i < instances; i++) {
		cfgs.push(await makeConfig(merge(overrides, {
			mysql: { database: db },
			redis: { prefix: cfgs[0].config.redis.prefix },
			auth: { secret_file: cfgs[0].secretFile },
		}), { redis }));
	}
	const daemons = cfgs.map((c) => startDaemon(c, { t }));
	const clients = [];
	const kit = {
		daemons, db, redisPort,
		prefix: cfgs[0].config.redis.prefix,
		secret: cfgs[0].secret,
		sql: (q) => mysqlRoot(null, q, db),
		token(sub, roles = [], ttl = 3600) {
			const p = { sub, exp: Math.floor(Date.now() / 1000) + ttl };
			if (roles.length) p.roles = roles;
			return signJwt(p, this.secret);
		},
		async subscribe(user, pid, body, i = 0) {
			const r = await apiCall(daemons[i].url, 'PUT', `/api/me/subscriptions/${pid}`,
				{ token: this.token(user), body });
			if (r.status !== 200 && r.status !== 201) {
				throw new Error(`PUT subscription ${user}/${pid}: ${r.status} ${r.text}`);
			}
			return r.json;
		},
		// A tracked socket of user on daemon i (wsTrack handle plus
		// `user`), after hello; with sync, after the sync product's ack.
		// `since` asks for a resume (no sync then: the caller reads the
		// replay first).
		async connect(user, { i = 0, roles = [], since, sync = since === undefined } = {}) {
			const { default: WebSocket } = await import('ws');
			let q = `token=${encodeURIComponent(this.token(user, roles))}`;
			if (since !== undefined) q += `&since=${encodeURIComponent(since)}`;
			const h = wsTrack(new WebSocket(`${daemons[i].wsUrl}/ws?${q}`));
			h.user = user;
			clients.push(h);
			await h.opened;
			await wsWaitFor(h, (m) => m.type === 'hello', 10000, `hello for ${user}`);
			if (sync) await this.sync(h);
			return h;
		},
		async sync(h) {
			const from = h.messages.length;
			h.send({ type: 'subscribe', product_id: ALERTS_SYNC_PRODUCT });
			await wsWaitFor(h, (m) => h.messages.indexOf(m) >= from && m.type === 'subscribed' &&
				m.product_id === ALERTS_SYNC_PRODUCT, 10000, `sync ack for ${h.user}`);
		},
		// PUBLISH on <prefix>inventory (objects are JSON-encoded, strings
		// sent as is); returns the number of receivers.
		async publish(ev) {
			const r = await redisCommand(redisPort, ['PUBLISH', `${this.prefix}inventory`,
				typeof ev === 'string' ? ev : JSON.stringify(ev)]);
			if (r instanceof Error) throw r;
			return r;
		},
		// Waits until n instances ran event id through the pipeline;
		// returns its outcome hash ({kind, id, prev}).
		async processed(eventId, n = instances, timeout = 15000) {
			const k = `${this.prefix}event:${eventId}`;
			await waitFor(async () => (await redisCommand(redisPort, ['SCARD', `${k}:i`])) >= n,
				{ timeout, what: `event ${eventId} processed by ${n} instance(s)` });
			const flat = await redisCommand(redisPort, ['HGETALL', k]);
			const o = {};
			for (let j = 0; j < flat.length; j += 2) o[flat[j]] = flat[j + 1];
			return o;
		},
		async metric(name, i = 0) {
			return (await metricValue(daemons[i].url, name)) ?? 0;
		},
		async close() {
			const reports = await closeKit(clients, daemons);
			await mysqlRoot(null, `DROP DATABASE IF EXISTS \`${db}\``).catch(() => {});
			return reports;
		},
	};
	await Promise.all(daemons.map((d) => waitReady(d)));
	// The daemon applies the schema on connect; wait until it exists.
	await waitFor(async () => {
		await kit.sql('SELECT 1 FROM products LIMIT 1');
		return true;
	}, { timeout: 15000, what: 'schema' });
	const all = [{ id: ALERTS_SYNC_PRODUCT, name: 'sync', stock: 1, threshold: 0 }, ...products];
	await kit.sql('INSERT INTO products (id, sku, name, stock, low_stock_threshold) VALUES ' +
		all.map((p) => `(${p.id}, 'SKU-${p.id}', '${p.name || `Product ${p.id}`}', ` +
			`${p.stock ?? 10}, ${p.threshold ?? 5})`).join(', '));
	return kit;
}

// The alert frames of h from message index `from` on.
export function wsAlerts(h, from = 0) {
	return h.messages.slice(from).filter((m) => m.type === 'alert');
}

// ---------------------------------------------------------------- durable input and faults

// A flat [k1, v1, k2, v2, ...] Redis reply as an object.
export function redisHash(flat) {
	const o = {};
	for (let i = 0; flat && i + 1 < flat.length; i += 2) o[flat[i]] = flat[i + 1];
	return o;
}

// Daemons sharing one Redis prefix, one JWT secret and one MySQL database,
// like alertsKit, except that none runs until start(i) (so a test can write
// to the durable stream before any instance ever ran, stop every instance,
// or kill one), and that the database may live on a private server (`mysql`,
// a startMariadb handle) a test kills. Returns { cfgs, daemons (current
// handle per instance), prefix, redisPort, db, sql, token, start, subscribe,
// connect, publish, xadd, xaddRaw, group, consumers, pendingOf, alertEntries,
// deadEntries, missingEvents, metric, close }.
export async function durableKit({ t, instances = 1, overrides = {}, redis, mysql,
	products = [] } = {}) {
	let db;
	let sql;
	if (mysql) {
		db = mysql.database;
		sql = (q) => mysql.sql(q, db);
	} else {
		db = `stockalert_t${randomId(6)}`;
		await mysqlRoot(null, `CREATE DATABASE \`${db}\` CHARACTER SET utf8mb4`);
		sql = (q) => mysqlRoot(null, q, db);
	}
	const redisPort = redis ? redis.port : Number(process.env.SA_TEST_REDIS_PORT || 6379);
	const cfgs = [await makeConfig(merge({ mysql: { database: db } }, overrides),
		{ redis, mysql })];
	for (let i = 1; i < instances; i++) {
		cfgs.push(await makeConfig(merge(overrides, {
			mysql: { database: db },
			redis: { prefix: cfgs[0].config.redis.prefix },
			auth: { secret_file: cfgs[0].secretFile },
		}), { redis, mysql }));
	}
	const prefix = cfgs[0].config.redis.prefix;
	const streamKey = `${prefix}inventory:stream`;
	const clients = [];
	const all = [];       // every daemon handle ever started
	let seeded = false;
	const redisOk = async (args) => {
		const r = await redisCommand(redisPort, args);
		if (r instanceof Error) throw r;
		return r;
	};
	const kit = {
		cfgs, daemons: cfgs.map(() => null), prefix, redisPort, db, sql, streamKey,
		deadKey: `${prefix}inventory:dead`,
		secret: cfgs[0].secret,
		token(sub, roles = [], ttl = 3600) {
			const p = { sub, exp: Math.floor(Date.now() / 1000) + ttl };
			if (roles.length) p.roles = roles;
			return signJwt(p, this.secret);
		},
		// Starts instance i (a new process with the same config) and, with
		// `ready`, waits for /readyz 200; the first ready instance also
		// gets the products inserted.
		async start(i = 0, { ready = true } = {}) {
			const d = startDaemon(cfgs[i], { t });
			this.daemons[i] = d;
			all.push(d);
			if (!ready) return d;
			await waitReady(d);
			if (!seeded) {
				await waitFor(async () => {
					await sql('SELECT 1 FROM products LIMIT 1');
					return true;
				}, { timeout: 15000, what: 'schema' });
				const rows = [{ id: ALERTS_SYNC_PRODUCT, name: 'sync', stock: 1, threshold: 0 },
					...products];
				await sql('INSERT INTO products (id, sku, name, stock, low_stock_threshold) ' +
					'VALUES ' + rows.map((p) => `(${p.id}, 'SKU-${p.id}', ` +
					`'${p.name || `Product ${p.id}`}', ${p.stock ?? 10}, ` +
					`${p.threshold ?? 5})`).join(', '));
				seeded = true;
			}
			return d;
		},
		async subscribe(user, pid, body, i = 0) {
			const r = await apiCall(this.daemons[i].url, 'PUT', `/api/me/subscriptions/${pid}`,
				{ token: this.token(user), body });
			if (r.status !== 200 && r.status !== 201) {
				throw new Error(`PUT subscription ${user}/${pid}: ${r.status} ${r.text}`);
			}
			return r.json;
		},
		// A tracked socket of user on instance i, after hello and the
		// sync product's ack (see alertsKit.connect).
		async connect(user, { i = 0, roles = [] } = {}) {
			const { default: WebSocket } = await import('ws');
			const q = `token=${encodeURIComponent(this.token(user, roles))}`;
			const h = wsTrack(new WebSocket(`${this.daemons[i].wsUrl}/ws?${q}`));
			h.user = user;
			clients.push(h);
			await h.opened;
			await wsWaitFor(h, (m) => m.type === 'hello', 10000, `hello for ${user}`);
			const from = h.messages.length;
			h.send({ type: 'subscribe', product_id: ALERTS_SYNC_PRODUCT });
			await wsWaitFor(h, (m) => h.messages.indexOf(m) >= from && m.type === 'subscribed' &&
				m.product_id === ALERTS_SYNC_PRODUCT, 10000, `sync ack for ${user}`);
			return h;
		},
		// XADDs one entry per event (objects JSON-encoded, strings as is)
		// as field `event`, in one write; with `atomic`, inside MULTI/EXEC
		// so a reader blocked on the stream is served all of them at once.
		// Returns the entry ids.
		async xadd(events, { atomic = false } = {}) {
			const cmds = events.map((ev) => ['XADD', streamKey, '*', 'event',
				typeof ev === 'string' ? ev : JSON.stringify(ev)]);
			if (atomic) {
				const r = await redisPipeline(redisPort, [['MULTI'], ...cmds, ['EXEC']]);
				const ids = r[r.length - 1];
				if (!Array.isArray(ids)) throw new Error(`EXEC: ${ids}`);
				return ids;
			}
			const ids = await redisPipeline(redisPort, cmds);
			for (const id of ids) if (id instanceof Error) throw id;
			return ids;
		},
		// PUBLISH on <prefix>inventory; returns the number of receivers.
		async publish(ev) {
			return redisOk(['PUBLISH', `${prefix}inventory`,
				typeof ev === 'string' ? ev : JSON.stringify(ev)]);
		},
		// XADD with arbitrary fields (e.g. no `event` field).
		async xaddRaw(fields) {
			return redisOk(['XADD', streamKey, '*', ...fields]);
		},
		// The consumer group `stockalert` (XINFO GROUPS), numbers as
		// numbers, or null when it does not exist.
		async group() {
			const r = await redisCommand(redisPort, ['XINFO', 'GROUPS', streamKey]);
			if (r instanceof Error) return null;
			const g = r.map(redisHash).find((x) => x.name === 'stockalert');
			return g || null;
		},
		// { consumer name: { pending, idle } } (XINFO CONSUMERS).
		async consumers() {
			const r = await redisOk(['XINFO', 'CONSUMERS', streamKey, 'stockalert']);
			const out = {};
			for (const c of r.map(redisHash)) out[c.name] = { pending: c.pending, idle: c.idle };
			return out;
		},
		// Pending entry ids of the group (of one consumer if given).
		async pendingOf(consumer) {
			const args = ['XPENDING', streamKey, 'stockalert', '-', '+', 100000];
			if (consumer) args.push(consumer);
			return (await redisOk(args)).map((e) => e[0]);
		},
		// The history stream <prefix>alerts: [{ id, ...fields }].
		async alertEntries() {
			return (await redisOk(['XRANGE', `${prefix}alerts`, '-', '+']))
				.map(([id, f]) => ({ id, ...redisHash(f) }));
		},
		async deadEntries() {
			return (await redisOk(['XRANGE', this.deadKey, '-', '+']))
				.map(([id, f]) => ({ id, ...redisHash(f) }));
		},
		// Event ids among ids with no <prefix>event:{id} outcome record.
		async missingEvents(ids) {
			if (!ids.length) return [];
			const r = await redisPipeline(redisPort, ids.map((id) => ['EXISTS',
				`${prefix}event:${id}`]), { timeout: 15000 });
			return ids.filter((id, k) => r[k] !== 1);
		},
		async metric(name, labels = {}, i = 0) {
			return (await metricValue(this.daemons[i].url, name, labels)) ?? 0;
		},
		// Closes clients, stops running daemons (SIGTERM); returns the exit
		// and sanitizer reports of every daemon started.
		async close() {
			const reports = await closeKit(clients, all);
			if (!mysql) await mysqlRoot(null, `DROP DATABASE IF EXISTS \`${db}\``).catch(() => {});
			return reports;
		},
	};
	return kit;
}

// Redis CLIENT LIST as [{ id, addr, cmd, flags, ... }].
export async function redisClients(port) {
	const r = await redisCommand(port, ['CLIENT', 'LIST']);
	if (r instanceof Error) throw r;
	return r.split('\n').filter(Boolean).map((line) => Object.fromEntries(
		line.trim().split(' ').map((kv) => {
			const i = kv.indexOf('=');
			return [kv.slice(0, i), kv.slice(i + 1)];
		})));
}
