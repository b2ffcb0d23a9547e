// What one user's history costs when the history is mostly other users'
// alerts (issue 18): N alerts of other products in the history, a user with
// a few alerts of her own, then
//   - GET /api/me/alerts?since=<her first alert>, one at a time (median),
//   - ten such requests at once (median and slowest),
//   - meanwhile, another user's live alert latency (publish -> frame).
// Nothing is asserted; it prints one JSON line.
//
//   tests/integration/servers.sh start DIR
//   tests/integration/run-with-servers.sh DIR env STOCKALERTD=path/to/stockalertd \
//       node tests/bench/history_cost.mjs [N]
//
// The N other alerts are written straight into Redis in the daemon's layout
// (stream entry + index member), since pushing them through the pipeline
// would measure the pipeline; the user's own alerts go through the daemon.
import {
	alertsKit, startRedis, wsWaitFor, apiCall, redisCommand,
	eventId as eid,
} from '../integration/lib/harness.mjs';

const N = Number(process.argv[2] || 300000);
const OTHERS = 1000; // other products
const ME = [11, 12, 13];
const LIVE = 14;

// The index member format is hist_pad's in src/alerts.c (the old daemon
// ignores the index).
const fillLua = `
local function pad(id)
  local ms, seq = string.match(id, '^0*(%d-%d)%-0*(%d-%d)$')
  return string.char(64 + #ms) .. ms .. string.char(64 + #seq) .. seq
end
for i = 1, tonumber(ARGV[1]) do
  local pid = tostring(1000 + (i + tonumber(ARGV[2])) % tonumber(ARGV[3]))
  local id = redis.call('XADD', KEYS[1], '*', 'kind', 'sold_out', 'product_id', pid,
    'stock', '0', 'prev', '5', 'thr', '2', 'name', 'other', 'event_id', 'fill-' .. i,
    'ts', '0', 'fair', '0')
  redis.call('ZADD', KEYS[2], 0, pid .. ':' .. pad(id))
end
return 0`;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
	const t = { after() {} };
	const redis = await startRedis({ t });
	const products = [...ME, LIVE].map((id) => ({ id, stock: 10, threshold: 2 }));
	const kit = await alertsKit({ redis, products,
		overrides: { alerts: { max_per_window: 10000, window_s: 1 } } });
	try {
		await kit.sql('INSERT INTO products (id, sku, name, stock, low_stock_threshold) VALUES ' +
			Array.from({ length: OTHERS }, (_, i) => `(${1000 + i}, 'S${1000 + i}', 'o', 5, 2)`)
				.join(', '));
		const u = 'zoe';
		for (const p of ME) await kit.subscribe(u, p);
		await kit.subscribe('live', LIVE);
		const first = eid('first');
		await kit.publish({ event_id: first, product_id: ME[0], stock: 0, prev_stock: 5 });
		const since = (await kit.processed(first)).id;

		const stream = `${kit.prefix}alerts`, index = `${kit.prefix}alerts:index`;
		for (let done = 0; done < N; done += 10000) {
			const r = await redisCommand(redis.port, ['EVAL', fillLua, '2', stream, index,
				String(Math.min(10000, N - done)), String(done), String(OTHERS)],
			{ timeout: 60000 });
			if (r instanceof Error) throw r;
		}
		for (const [i, p] of ME.entries()) {
			const e = eid(`mine${i}`);
			await kit.publish({ event_id: e, product_id: p, stock: 6, prev_stock: 0 });
			await kit.processed(e);
		}

		// What recording an alert costs Redis now (the processing script,
		// with its history writes), over 1,000 events of other products.
		await redisCommand(redis.port, ['CONFIG', 'RESETSTAT']);
		let lastEv;
		for (let i = 0; i < 1000; i++) {
			lastEv = eid('cost');
			await kit.publish({ event_id: lastEv, product_id: 1000 + (i % OTHERS),
				stock: i % 2 ? 0 : 5, prev_stock: i % 2 ? 5 : 0 });
		}
		await kit.processed(lastEv);
		const evalStat = /cmdstat_eval(?:sha)?:calls=(\d+),usec=(\d+)/.exec(
			await redisCommand(redis.port, ['INFO', 'commandstats']));
		const evalUs = evalStat ? Number(evalStat[2]) / Number(evalStat[1]) : null;

		const url = kit.daemons[0].url;
		const get = async () => {
			const t0 = performance.now();
			const r = await apiCall(url, 'GET', `/api/me/alerts?since=${since}`,
				{ token: kit.token(u), timeout: 120000 })
				.catch((e) => ({ status: 0, text: `${e.message}: ${e.cause?.message}` }));
			if (r.status !== 200 || r.json.alerts.length !== ME.length) {
				failed.push(`${r.status} ${r.text.slice(0, 120)}`);
			}
			return performance.now() - t0;
		};
		const failed = [];
		const one = [];
		for (let i = 0; i < 5; i++) one.push(await get());

		const h = await kit.connect('live');
		const liveLat = [];
		let stop = false;
		const live = (async () => {
			for (let i = 0; !stop || i < 5; i++) {
				const e = eid('live');
				const t0 = performance.now();
				await kit.publish({ event_id: e, product_id: LIVE, stock: i % 2 ? 6 : 0,
					prev_stock: i % 2 ? 0 : 6 });
				await wsWaitFor(h, (m) => m.event_id === e, 60000, 'live alert');
				liveLat.push(performance.now() - t0);
				await new Promise((res) => setTimeout(res, 20)); // a steady trickle
			}
		})().catch((e) => { liveErr = e.message.slice(0, 200); });
		let liveErr;
		const ten = await Promise.all(Array.from({ length: 10 }, get));
		stop = true;
		await live;
		h.ws.close(1000);

		const r = (x) => Math.round(x * 10) / 10;
		console.log(JSON.stringify({
			daemon: process.env.STOCKALERTD, alerts: N + ME.length + 1,
			xlen: await redisCommand(redis.port, ['XLEN', stream]),
			stream_bytes: await redisCommand(redis.port, ['MEMORY', 'USAGE', stream,
				'SAMPLES', '0']),
			index_bytes: await redisCommand(redis.port, ['MEMORY', 'USAGE', index,
				'SAMPLES', '0']),
			eval_us_per_event: evalUs && r(evalUs),
			one_ms_median: r(median(one)),
			ten_at_once_ms_median: r(median(ten)), ten_at_once_ms_max: r(Math.max(...ten)),
			live_alert_ms_median_during: r(median(liveLat)),
			live_alert_ms_max_during: r(Math.max(...liveLat)),
			failed: failed.length, first_failure: failed[0], live_error: liveErr,
			daemon_running: kit.daemons[0].running,
		}));
	} catch (e) {
		console.error(e.message, kit.daemons[0].log().slice(-1500));
		throw e;
	} finally {
		await kit.close();
		await redis.stop();
	}
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
