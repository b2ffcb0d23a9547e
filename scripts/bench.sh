#!/usr/bin/env bash
# Benchmark: stockalertd against Nchan and against the physical floor, on the
# same N, in the same run (issue 7).
#
#   scripts/bench.sh            full run: N = 19,000 sockets, latency with 10,000
#   scripts/bench.sh --quick    N = 4,000 everywhere, under 2 minutes
#   scripts/bench.sh --profile  also count the daemon's syscalls during a fan-out
#                               (strace -c; slow, numbers go to the run directory)
#   scripts/bench.sh --repeat K the whole run K times: the table shows the median
#                               of each figure and in how many runs a target was met
#                               (a shared machine's readings wander between runs)
#   scripts/bench.sh --storm-only   only the simultaneous-connect rows (N clients
#                               upgrading at the same moment vs 256 at a time),
#                               with --quick and --repeat as above
#
# Starts everything privately under build-bench/bench-run (its own Redis and
# MariaDB through tests/integration/servers.sh, its own stockalertd, its own
# nginx + nchan on free ports), stops all of it on exit, prints a table and
# writes it as JSON to build/bench.json. Nothing is asserted: the targets are
# shown next to the numbers.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$root/scripts/lib.sh"
SA_LOG_TAG=bench.sh

bdir=$root/build-bench
run=$bdir/bench-run
bin=$bdir/stockalertd
gen=$bdir/tests/bench/sa_bench_load
floor=$bdir/tests/bench/sa_bench_floor
prefix=bench:

# --- the daemon, also used by the reconnect storm's restart command --------------

# Starts stockalertd on $run/NAME.json (listening on the port in
# $run/NAME.port; NAME defaults to stockalertd), waits for /readyz, prints
# its pid.
start_daemon() {
	local name=${1:-stockalertd} pid port
	port=$(cat "$run/$name.port")
	(
		ulimit -n "$(ulimit -Hn)"
		cd "$run"
		# SA_BENCH_PRELOAD=LIB: the daemons only run with LIB preloaded
		# (another malloc, to compare allocators on the same build).
		[ -n "${SA_BENCH_PRELOAD:-}" ] && export LD_PRELOAD=$SA_BENCH_PRELOAD
		exec "$bin" -c "$run/$name.json"
	) </dev/null >>"$run/$name.log" 2>&1 &
	pid=$!
	echo "$pid" >"$run/$name.pid"
	sa_wait_for 30 stockalertd "$pid" curl -sf "http://127.0.0.1:$port/readyz" ||
		{ tail -n 20 "$run/$name.log" >&2; return 1; }
	echo "$pid"
}

if [ "${1:-}" = --restart-daemon ]; then
	# The storm's restart: SIGTERM (every socket gets 1001), then a fresh
	# daemon on the same port, Redis and MySQL. How long the stop took, and
	# whether the daemon had to give up at its shutdown grace, go in the table.
	t0=$(date +%s%N)
	sa_stop_pidfile "$run/stockalertd.pid" 20
	t1=$(date +%s%N)
	expired=$(grep -c 'shutdown grace of .* expired' "$run/stockalertd.log" || true)
	jq -n --argjson ms $(((t1 - t0) / 1000000)) --argjson expired "$expired" \
		'{stop_ms: $ms, grace_expired: ($expired > 0)}' >"$run/sa_stop.json"
	# After a mass close the port can stay unbindable for a while (seen at
	# N = 19,000: EADDRINUSE): retry rather than lose the storm.
	for try in 1 2 3 4 5 6 7 8 9 10; do
		start_daemon && exit 0
		sa_log "restart attempt $try failed; retrying in 2 s"
		sleep 2
	done
	exit 1
fi

quick=0 profile=0 storm_only=0 repeat=1 args=()
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 args+=("$1") ;;
	--profile) profile=1 args+=("$1") ;;
	--storm-only) storm_only=1 args+=("$1") ;;
	--repeat)
		[[ ${2:-} =~ ^[1-9][0-9]?$ ]] || sa_die "--repeat takes a count from 1 to 99"
		repeat=$2
		shift
		;;
	-h | --help) sed -n '2,21p' "$0"; exit 0 ;;
	*) sa_die "unknown argument $1 (see --help)" ;;
	esac
	shift
done

if [ "$repeat" -gt 1 ]; then
	mkdir -p "$root/build"
	for i in $(seq "$repeat"); do
		sa_log "run $i of $repeat"
		"$0" "${args[@]}" >/dev/null
		cp "$root/build/bench.json" "$root/build/bench-run-$i.json"
	done
	jq -s '
	def median: sort | if length == 0 then null
		else (if length % 2 == 1 then .[length / 2 | floor]
		else (.[length / 2 - 1] + .[length / 2]) / 2 end) end;
	def med(f): [.[] | f | select(. != null)] | median;
	. as $runs |
	{repeat: length, quick: .[0].quick, n: .[0].n, commits: [.[].commit] | unique, runs: $runs,
	 table: [range(0; .[0].table | length) as $i | {
		metric: $runs[0].table[$i].metric, target: $runs[0].table[$i].target,
		stockalertd: ($runs | med(.table[$i].stockalertd)),
		nchan: ($runs | med(.table[$i].nchan)), floor: ($runs | med(.table[$i].floor)),
		vs_floor: ($runs | med(.table[$i].vs_floor)),
		vs_nchan: ($runs | med(.table[$i].vs_nchan)),
		vs_floor_range: ($runs | [.[].table[$i].vs_floor | select(. != null)] |
			if length > 0 then [min, max] else null end),
		met_runs: ($runs | [.[].table[$i].met | select(. == true)] | length),
		judged: ($runs[0].table[$i].met != null)}]}
	' "$root"/build/bench-run-*.json >"$root/build/bench.json"
	rm -f "$root"/build/bench-run-*.json
	jq -r '
	def f(x): if x == null then "-" else ((x * 100 | round) / 100 | tostring) end;
	"stockalertd benchmark, N = \(.n)\(if .quick then " (--quick)" else "" end), median of \(.repeat) runs, commit \(.commits | join(","))",
	"",
	"| metric | stockalertd | Nchan | floor | sa/floor (min-max) | sa/Nchan | target | met |",
	"|---|---|---|---|---|---|---|---|",
	(.repeat as $k | .table[] | "| \(.metric) | \(f(.stockalertd)) | \(f(.nchan)) | \(f(.floor)) | \(f(.vs_floor))\(if .vs_floor_range then " (\(f(.vs_floor_range[0]))-\(f(.vs_floor_range[1])))" else "" end) | \(f(.vs_nchan)) | \(.target // "-") | \(if .judged then "\(.met_runs)/\($k)" else "" end) |")
	' "$root/build/bench.json"
	exit 0
fi

if [ $quick = 1 ]; then
	N=4000 ROUNDS=20 LAT_N=4000 LAT_S=5 STORM_K=3
else
	N=19000 ROUNDS=10 LAT_N=10000 LAT_S=15 STORM_K=3
fi
# Seconds the simultaneous-connect rows wait, answering pings, before they
# read the daemon's memory: the same for the paced and the storm row.
STORM_SETTLE=3
LAT_PRODUCTS=1000 LAT_PER=10 LAT_RATE=200

ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((N + 200)) ] ||
	sa_die "fd limit $(ulimit -n) is too low for N=$N; lower N or raise the hard limit"

# --- build and packages ---------------------------------------------------------
# shellcheck disable=SC2086
sa_apt_install $SA_BUILD_PKGS nginx-light libnginx-mod-nchan
nchan_mod=$(ls /usr/lib/nginx/modules/ngx_nchan_module.so 2>/dev/null) ||
	sa_die "libnginx-mod-nchan is not installed"
sa_log "building (Release) in build-bench/"
cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$bdir" -j2 --target stockalertd sa_bench_load sa_bench_floor >/dev/null

# --- private servers ---------------------------------------------------------------
nginx_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	sa_stop_pidfile "$run/stockalertd.pid" 10 || true
	for name in stockalertd-rs256 stockalertd-c1 stockalertd-c2 stockalertd-c3 \
		stockalertd-paced stockalertd-storm; do
		sa_stop_pidfile "$run/$name.pid" 10 || true
	done
	[ -n "$nginx_pid" ] && sa_stop_pid "$nginx_pid" 10
	"$root/tests/integration/servers.sh" stop "$run/servers" >/dev/null 2>&1 || true
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -d "$run" ] && "$root/tests/integration/servers.sh" stop "$run/servers" >/dev/null 2>&1 || true
rm -rf "$run"
mkdir -p "$run" "$root/build"
t_start=$SECONDS
"$root/tests/integration/servers.sh" start "$run/servers" 2>/dev/null
# shellcheck disable=SC1091
. "$run/servers/env.sh"

( umask 077; head -c 48 /dev/urandom | base64 >"$run/jwt.secret" )
sa_free_port >"$run/stockalertd.port"
cat >"$run/stockalertd.json" <<JSON
{
	"listen": {"host": "127.0.0.1", "port": $(cat "$run/stockalertd.port"),
		"max_connections_per_address": 0},
	"auth": {"algorithm": "HS256", "secret_file": "$run/jwt.secret"},
	"redis": {"host": "127.0.0.1", "port": $SA_TEST_REDIS_PORT, "prefix": "$prefix"},
	"mysql": {"host": "127.0.0.1", "port": $SA_TEST_MYSQL_PORT, "user": "$SA_TEST_MYSQL_USER",
		"password_file": "$SA_TEST_MYSQL_PASSWORD_FILE", "database": "$SA_TEST_MYSQL_DATABASE"},
	"ws": {"max_connections": 100000, "max_connections_per_user": 1000,
		"ping_interval_s": 300, "idle_timeout_s": 900, "send_queue_max": 1024},
	"alerts": {"max_per_window": 10000, "window_s": 60},
	"static_dir": "$root/src/www",
	"shutdown_grace_s": 5,
	"log": {"level": "warn"}
}
JSON

# --- N upgrades at the same moment (issue 14): memory, time, refusals ---------------
# A deploy, a proxy restart or a network blip sends every client's upgrade at
# once; the page's jittered reconnect spreads only its own clients. Each row
# on a fresh daemon, since what is measured is what the heap keeps: N clients
# 256 at a time (what the other rows do), then N with no window at all.
storm_rows() {
	local how window pid port
	for how in paced storm; do
		window=256
		[ $how = storm ] && window=0
		sa_free_port >"$run/stockalertd-$how.port"
		port=$(cat "$run/stockalertd-$how.port")
		jq --argjson port "$port" '.listen.port = $port' \
			"$run/stockalertd.json" >"$run/stockalertd-$how.json"
		pid=$(start_daemon "stockalertd-$how")
		# The accept backlog lws asked for, as the kernel granted it (Send-Q
		# of a listening socket), next to net.core.somaxconn, its ceiling.
		ss -Hltn "sport = :$port" | awk '{print $3; exit}' >"$run/backlog-$how.txt"
		sa_log "stockalertd: $N upgrades, window $window (0: all at once)"
		"$gen" --mode sa --test connect --url "ws://127.0.0.1:$port/ws" --server-pid "$pid" \
			--pub "127.0.0.1:$SA_TEST_REDIS_PORT" --prefix "$prefix" \
			--secret "$run/jwt.secret" --user-prefix "s$how" -n "$N" --src 8 \
			--window "$window" --settle "$STORM_SETTLE" >"$run/sa_connect_$how.json" || true
		sa_stop_pidfile "$run/stockalertd-$how.pid" 20 || true
	done
	jq -n --slurpfile p "$run/sa_connect_paced.json" --slurpfile s "$run/sa_connect_storm.json" \
		--argjson backlog "$(cat "$run/backlog-storm.txt" 2>/dev/null || echo null)" \
		--argjson somaxconn "$(cat /proc/sys/net/core/somaxconn)" \
		--argjson synbacklog "$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)" \
		'{paced: $p[0], at_once: $s[0], listen_backlog: $backlog, somaxconn: $somaxconn,
		  tcp_max_syn_backlog: $synbacklog}' >"$run/storm.json"
}
# The rows they add to the table (jq, over $sm = storm.json).
# shellcheck disable=SC2016 # jq's own variables
storm_table='
def srow(m; v; t; met): {metric: m, stockalertd: r(v), nchan: null, floor: null,
	vs_floor: null, vs_nchan: null, target: t, met: met};
$sm.paced as $p | $sm.at_once as $a |
[srow("RSS per idle connection, 256 at a time, bytes"; $p.rss_per_conn_bytes; null; null),
 srow("RSS per idle connection, N at once, bytes"; $a.rss_per_conn_bytes;
	"<= 1.25x the row above"; $a.rss_per_conn_bytes <= 1.25 * $p.rss_per_conn_bytes),
 srow("N at once / 256 at a time, RSS per connection";
	(if $p.rss_per_conn_bytes > 0 then $a.rss_per_conn_bytes / $p.rss_per_conn_bytes
	 else null end); "<= 1.25"; null),
 srow("N at once: until all connected, s"; $a.connect_s; null; null),
 srow("N at once: refused (HTTP answer or ECONNREFUSED)"; $a.refused; "0"; $a.refused == 0),
 srow("N at once: failed (reset, closed or timed out)"; $a.n - $a.connected - $a.refused;
	"0"; $a.connected + $a.refused == $a.n)]'
storm_rows
if [ $storm_only = 1 ]; then
	jq -n --argjson quick "$quick" --argjson n "$N" --arg date "$(date -u +%FT%TZ)" \
		--arg commit "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
		--slurpfile sm0 "$run/storm.json" '
	def r(x): if x == null then null else ((x * 100 | round) / 100) end;
	$sm0[0] as $sm |
	{date: $date, commit: $commit, quick: ($quick == 1), n: $n, storm_only: true,
	 stockalertd: {storm: $sm}, table: ('"$storm_table"')}' >"$root/build/bench.json"
	jq -r '
	def f(x): if x == null then "-" else (x | tostring) end;
	"stockalertd benchmark (simultaneous connects only), N = \(.n), \(.date), commit \(.commit)",
	"listen backlog \(.stockalertd.storm.listen_backlog), somaxconn \(.stockalertd.storm.somaxconn)",
	"",
	"| metric | stockalertd | target | met |",
	"|---|---|---|---|",
	(.table[] | "| \(.metric) | \(f(.stockalertd)) | \(f(.target)) | \(if .met == null then "" elif .met then "yes" else "**no**" end) |")
	' "$root/build/bench.json"
	exit 0
fi

sa_pid=$(start_daemon)
sa_port=$(cat "$run/stockalertd.port")

# Products 1..1000; u<i> subscribed to product 1 (the fan-out), l<i> to 10 of
# the 1000 products, as sa_bench_load --test latency expects: product
# ((i + 100 j) mod 1000) + 1. Bulk-loaded into MySQL, then the Redis index is
# dropped so the daemon rebuilds it from MySQL.
sa_log "loading $N + $LAT_N x $LAT_PER subscriptions"
stride=$((LAT_PRODUCTS / LAT_PER))
sa_mysql_root "$run/servers/mysql" "
	USE \`$SA_TEST_MYSQL_DATABASE\`;
	INSERT INTO products (id, sku, name, stock, low_stock_threshold)
		SELECT seq, CONCAT('SKU-', seq), CONCAT('Bench product ', seq), 0, 5
		FROM seq_1_to_$LAT_PRODUCTS;
	INSERT INTO subscriptions (user_id, product_id)
		SELECT CONCAT('u', seq), 1 FROM seq_0_to_$((N - 1));
	INSERT INTO subscriptions (user_id, product_id)
		SELECT CONCAT('l', a.seq), MOD(a.seq + $stride * b.seq, $LAT_PRODUCTS) + 1
		FROM seq_0_to_$((LAT_N - 1)) a JOIN seq_0_to_$((LAT_PER - 1)) b;"
rcli() { redis-cli -h 127.0.0.1 -p "$SA_TEST_REDIS_PORT" "$@"; }
rcli DEL "${prefix}index:ready" >/dev/null
index_rebuilt() {
	[ "$(rcli EXISTS "${prefix}index:ready")" = 1 ] &&
		! curl -s "http://127.0.0.1:$sa_port/readyz" | grep -q rebuilding &&
		[ "$(rcli ZCARD "${prefix}product:1:subs")" -ge "$N" ]
}
sa_wait_for 120 "the index rebuild" "$sa_pid" index_rebuilt ||
	sa_die "the daemon did not rebuild the subscription index"

# --- nchan ----------------------------------------------------------------------------
nchan_port=$(sa_free_port)
mkdir -p "$run/nchan/tmp"
nuser=
[ "$(id -u)" -eq 0 ] && nuser="user root;"
# worker_connections above the fd limit: Nchan holds connection slots beyond
# its sockets. At the fd limit - 100, a full run got 18,745 of 19,000
# subscribers in (nginx: "worker_connections are not enough, reusing
# connections") and spent the generator's 120 s waiting for the rest.
cat >"$run/nchan/nginx.conf" <<CONF
load_module $nchan_mod;
$nuser
worker_processes 1;
worker_rlimit_nofile $(ulimit -Hn);
daemon off;
pid $run/nchan/nginx.pid;
error_log $run/nchan/error.log warn;
events { worker_connections $((2 * $(ulimit -Hn))); use epoll; multi_accept on; }
http {
	access_log off;
	client_body_temp_path $run/nchan/tmp/body;
	proxy_temp_path $run/nchan/tmp/proxy;
	fastcgi_temp_path $run/nchan/tmp/fastcgi;
	uwsgi_temp_path $run/nchan/tmp/uwsgi;
	scgi_temp_path $run/nchan/tmp/scgi;
	keepalive_requests 10000000;
	server {
		listen 127.0.0.1:$nchan_port backlog=4096;
		location = /ok { return 200 "ok"; }
		location = /sub {
			nchan_subscriber websocket;
			nchan_channel_id_split_delimiter ",";
			nchan_channel_id \$arg_chans;
		}
		location = /pub {
			nchan_publisher http;
			nchan_channel_id \$arg_id;
			nchan_message_buffer_length 5;
		}
	}
}
CONF
nginx -p "$run/nchan" -c "$run/nchan/nginx.conf" -e "$run/nchan/error.log" </dev/null \
	>>"$run/nchan/error.log" 2>&1 &
nginx_pid=$!
sa_wait_for 20 nginx "$nginx_pid" curl -sf "http://127.0.0.1:$nchan_port/ok" ||
	{ cat "$run/nchan/error.log" >&2; sa_die "nginx did not start"; }
nchan_worker=$(ps -o pid= --ppid "$nginx_pid" | head -n 1 | tr -d ' ')

# --- measurements -----------------------------------------------------------------
common=(-n "$N" --src 8 --window 256)

# Redis's own work during fan-out rounds: the generator runs these shell
# commands just before and after its counted rounds.
redis_snap() { # FILE -> a command that writes INFO commandstats + cpu to FILE
	local r="redis-cli -h 127.0.0.1 -p $SA_TEST_REDIS_PORT"
	echo "{ $r INFO commandstats; $r INFO cpu; } | tr -d '\\r' >$1"
}
redis_delta() { # BEFORE AFTER EVENTS -> JSON: commands and CPU per event
	awk -v events="$3" -F'[:,=]' '
		FNR == 1 { f++ }
		/^cmdstat_/ { c[f, $1] = $3; names[$1] = 1 }
		/^used_cpu_(sys|user):/ { cpu[f] += $2 }
		END {
			for (n in names) { d = c[2, n] - c[1, n]; total += d
				if (d > 0) top = top sprintf("%s\"%s\":%.1f", top ? "," : "", substr(n, 9), d / events) }
			printf "{\"events\":%d,\"commands_per_event\":%.1f,\"cpu_ms_per_event\":%.3f,\"per_event\":{%s}}\n",
				events, total / events, (cpu[2] - cpu[1]) * 1000 / events, top
		}' "$1" "$2"
}
# The floor twice, just before stockalertd's fan-out and at the end: on a
# shared machine one reading can be off by a third; the report uses the mean.
sa_log "floor: one send() per socket, $N sockets (1 of 2)"
"$floor" "$N" "$ROUNDS" >"$run/floor1.json"
sa_log "stockalertd: fan-out to $N, then a reconnect storm"
"$gen" --mode sa --test fanout --url "ws://127.0.0.1:$sa_port/ws" --server-pid "$sa_pid" \
	--pub "127.0.0.1:$SA_TEST_REDIS_PORT" --prefix "$prefix" --secret "$run/jwt.secret" \
	--user-prefix u "${common[@]}" --rounds "$ROUNDS" --product 1 \
	--rounds-begin-cmd "$(redis_snap "$run/redis1-0.txt")" \
	--rounds-end-cmd "$(redis_snap "$run/redis1-1.txt")" \
	--restart-cmd "$0 --restart-daemon" --storm-events "$STORM_K" >"$run/sa_fanout.json"
redis_delta "$run/redis1-0.txt" "$run/redis1-1.txt" "$ROUNDS" >"$run/sa_fanout_redis.json"
sa_pid=$(cat "$run/stockalertd.pid")
sa_pid_alive "$sa_pid" || { sa_log "the daemon is gone after the storm; starting it again"; sa_pid=$(start_daemon); }

sa_log "stockalertd: latency, $LAT_N sockets x $LAT_PER of $LAT_PRODUCTS products at $LAT_RATE events/s"
"$gen" --mode sa --test latency --url "ws://127.0.0.1:$sa_port/ws" --server-pid "$sa_pid" \
	--pub "127.0.0.1:$SA_TEST_REDIS_PORT" --prefix "$prefix" --secret "$run/jwt.secret" \
	--user-prefix l -n "$LAT_N" --src 8 --window 256 --rate "$LAT_RATE" --duration "$LAT_S" \
	--products "$LAT_PRODUCTS" --per "$LAT_PER" >"$run/sa_latency.json"

# RS256: a second daemon with a public key; the generator signs every token
# before the clock starts (RSA signing is 15x slower than verifying).
sa_log "stockalertd: $N connects with fresh RS256 tokens"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$run/rs256.key" 2>/dev/null
openssl pkey -in "$run/rs256.key" -pubout -out "$run/rs256.pub" 2>/dev/null
sa_free_port >"$run/stockalertd-rs256.port"
jq --argjson port "$(cat "$run/stockalertd-rs256.port")" --arg pub "$run/rs256.pub" \
	'.listen.port = $port | .auth = {algorithm: "RS256", public_key_file: $pub}' \
	"$run/stockalertd.json" >"$run/stockalertd-rs256.json"
rs_pid=$(start_daemon stockalertd-rs256)
"$gen" --mode sa --test connect --url "ws://127.0.0.1:$(cat "$run/stockalertd-rs256.port")/ws" \
	--server-pid "$rs_pid" --pub "127.0.0.1:$SA_TEST_REDIS_PORT" --prefix "$prefix" \
	--rsa-key "$run/rs256.key" --user-prefix r "${common[@]}" >"$run/sa_connect_rs256.json"
sa_stop_pidfile "$run/stockalertd-rs256.pid" 10 || true

if [ $profile = 1 ]; then
	# Profiles, not measurements: strace slows the daemon down many times.
	# The profilers attach after the connections are up and stop after the
	# rounds, so what they count is the fan-out alone.
	profile_fanout() { # ROUNDS BEGIN-CMD END-CMD
		"$gen" --mode sa --test fanout --url "ws://127.0.0.1:$sa_port/ws" \
			--server-pid "$sa_pid" --pub "127.0.0.1:$SA_TEST_REDIS_PORT" --prefix "$prefix" \
			--secret "$run/jwt.secret" --user-prefix u "${common[@]}" --rounds "$1" \
			--product 1 --rounds-begin-cmd "$2" --rounds-end-cmd "$3" \
			>>"$run/sa_profile.json" || true
	}
	sa_log "stockalertd: syscalls of 5 fan-out rounds (strace -c: $run/strace.txt)"
	profile_fanout 5 \
		"strace -c -f -p $sa_pid -o $run/strace.txt 2>/dev/null & echo \$! >$run/prof.pid; sleep 1" \
		"kill -INT \$(cat $run/prof.pid); sleep 1"
	sa_log "stockalertd: perf profile of 20 fan-out rounds ($run/perf.txt)"
	profile_fanout 20 \
		"perf record -q --call-graph dwarf,16384 -F 2000 -p $sa_pid -o $run/perf.data 2>/dev/null & echo \$! >$run/prof.pid; sleep 1" \
		"kill -INT \$(cat $run/prof.pid); sleep 2"
	perf report -i "$run/perf.data" --stdio --no-children --percent-limit 1 \
		--sort dso,symbol -G 2>/dev/null >"$run/perf.txt" || true
	perf report -i "$run/perf.data" --stdio --no-children --percent-limit 0.5 \
		--sort dso,symbol -g none 2>/dev/null >"$run/perf-flat.txt" || true
	sa_log "stockalertd: perf profile of $N connects ($run/perf-connect.txt)"
	perf record -q --call-graph dwarf,16384 -F 2000 -p "$sa_pid" -o "$run/perf-connect.data" \
		2>/dev/null &
	pf_pid=$!
	sleep 1 # perf attaches asynchronously
	profile_fanout 1 true true
	kill -INT "$pf_pid"
	wait "$pf_pid" || true
	perf report -i "$run/perf-connect.data" --stdio --children --percent-limit 1 \
		--sort symbol -g none 2>/dev/null >"$run/perf-connect.txt" || true
	sa_log "deliveries profiled: $(jq -s '[.[] | .rounds * .connected] | add' "$run/sa_profile.json")"
fi

# --- three instances on one Redis and MySQL: the capacity model's check -----------
# The same N and rounds, the sockets spread round-robin over three daemons
# (the single daemon is stopped first: it would process every event too).
sa_log "stockalertd x 3: fan-out to $N sockets spread over three instances"
sa_stop_pidfile "$run/stockalertd.pid" 20 || true
cap=()
for k in 1 2 3; do
	sa_free_port >"$run/stockalertd-c$k.port"
	jq --argjson port "$(cat "$run/stockalertd-c$k.port")" '.listen.port = $port' \
		"$run/stockalertd.json" >"$run/stockalertd-c$k.json"
	cap+=(--url "ws://127.0.0.1:$(cat "$run/stockalertd-c$k.port")/ws")
	cap+=(--server-pid "$(start_daemon "stockalertd-c$k")")
done
"$gen" --mode sa --test fanout "${cap[@]}" --pub "127.0.0.1:$SA_TEST_REDIS_PORT" \
	--prefix "$prefix" --secret "$run/jwt.secret" --user-prefix u "${common[@]}" \
	--rounds "$ROUNDS" --product 1 --rounds-begin-cmd "$(redis_snap "$run/redis3-0.txt")" \
	--rounds-end-cmd "$(redis_snap "$run/redis3-1.txt")" >"$run/sa3_fanout.json"
redis_delta "$run/redis3-0.txt" "$run/redis3-1.txt" "$ROUNDS" >"$run/sa3_fanout_redis.json"
for k in 1 2 3; do sa_stop_pidfile "$run/stockalertd-c$k.pid" 20 || true; done

sa_log "nchan: fan-out to $N"
"$gen" --mode nchan --test fanout --url "ws://127.0.0.1:$nchan_port/sub" \
	--server-pid "$nchan_worker" --pub "127.0.0.1:$nchan_port" "${common[@]}" \
	--rounds "$ROUNDS" --product 1 >"$run/nchan_fanout.json"
sa_log "nchan: latency, $LAT_N sockets x $LAT_PER channels"
"$gen" --mode nchan --test latency --url "ws://127.0.0.1:$nchan_port/sub" \
	--server-pid "$nchan_worker" --pub "127.0.0.1:$nchan_port" -n "$LAT_N" --src 8 \
	--window 256 --rate "$LAT_RATE" --duration "$LAT_S" --products "$LAT_PRODUCTS" \
	--per "$LAT_PER" >"$run/nchan_latency.json"

sa_log "floor: one send() per socket, $N sockets (2 of 2)"
"$floor" "$N" "$ROUNDS" >"$run/floor2.json"
jq -s '{round_ms_median: ((.[0].round_ms_median + .[1].round_ms_median) / 2),
	cpu_us_per_send: ((.[0].cpu_us_per_send + .[1].cpu_us_per_send) / 2), runs: .}' \
	"$run/floor1.json" "$run/floor2.json" >"$run/floor.json"

# --- report ---------------------------------------------------------------------------
jq -n --argjson quick "$quick" --argjson n "$N" --arg date "$(date -u +%FT%TZ)" \
	--arg commit "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	--argjson elapsed $((SECONDS - t_start)) \
	--slurpfile saf "$run/sa_fanout.json" --slurpfile sal "$run/sa_latency.json" \
	--slurpfile ncf "$run/nchan_fanout.json" --slurpfile ncl "$run/nchan_latency.json" \
	--slurpfile fl "$run/floor.json" --slurpfile rs "$run/sa_connect_rs256.json" \
	--slurpfile r1 "$run/sa_fanout_redis.json" --slurpfile s3 "$run/sa3_fanout.json" \
	--slurpfile r3 "$run/sa3_fanout_redis.json" --slurpfile sm0 "$run/storm.json" \
	--slurpfile st <(cat "$run/sa_stop.json" 2>/dev/null || echo '{}') \
	--argjson grace "$(jq .shutdown_grace_s "$run/stockalertd.json")" '
def r(x): if x == null then null else ((x * 100 | round) / 100) end;
def ratio(a; b): if a == null or b == null or b == 0 then null else r(a / b) end;
def row(m; s; c; f; t; met):
	{metric: m, stockalertd: r(s), nchan: r(c), floor: r(f),
	 vs_floor: ratio(s; f), vs_nchan: ratio(s; c), target: t, met: met};
$saf[0] as $sf | $sal[0] as $sl | $ncf[0] as $cf | $ncl[0] as $cl | $fl[0] as $f |
$rs[0] as $rc | $r1[0] as $ra | $s3[0] as $tf | $r3[0] as $rb | $st[0] as $sp | $sm0[0] as $sm |
def crow(m; one; three): {metric: m, one: r(one), three: r(three), ratio: ratio(three; one)};
{
	date: $date, commit: $commit, quick: ($quick == 1), n: $n, elapsed_s: $elapsed,
	stockalertd: {fanout: $sf, latency: $sl, connect_rs256: $rc, fanout_redis: $ra,
		stop: $sp, storm: $sm},
	nchan: {fanout: $cf, latency: $cl}, floor: $f,
	three_instances: {fanout: $tf, fanout_redis: $rb},
	capacity: [
		crow("fan-out to N, ms (median)"; $sf.fanout_ms_median; $tf.fanout_ms_median),
		crow("server CPU per delivery, us (all instances)"; $sf.cpu_us_per_delivery;
			$tf.cpu_us_per_delivery),
		crow("RSS per idle connection, bytes (all instances)"; $sf.rss_per_conn_bytes;
			$tf.rss_per_conn_bytes),
		crow("connects/s (HS256)"; $sf.connects_per_s; $tf.connects_per_s),
		crow("Redis commands per event (Lua calls included)"; $ra.commands_per_event;
			$rb.commands_per_event),
		crow("Redis CPU per event, ms"; $ra.cpu_ms_per_event; $rb.cpu_ms_per_event)
	],
	table: ([
		row("connects/s (HS256, to hello)"; $sf.connects_per_s; $cf.connects_per_s; null;
			">= 10000"; $sf.connects_per_s >= 10000),
		row("connects/s (RS256, to hello)"; $rc.connects_per_s; null; null;
			">= 5000"; $rc.connects_per_s >= 5000 and $rc.connected == $n),
		row("RSS per idle connection, bytes"; $sf.rss_per_conn_bytes; $cf.rss_per_conn_bytes;
			null; "<= 1536"; $sf.rss_per_conn_bytes <= 1536),
		row("fan-out to N, ms (median)"; $sf.fanout_ms_median; $cf.fanout_ms_median;
			$f.round_ms_median; "<= 1.3x floor";
			$sf.fanout_ms_median <= 1.3 * $f.round_ms_median),
		row("server CPU per delivery, us"; $sf.cpu_us_per_delivery; $cf.cpu_us_per_delivery;
			$f.cpu_us_per_send; "<= 1.15x floor";
			$sf.cpu_us_per_delivery <= 1.15 * $f.cpu_us_per_send),
		row("latency p50, ms (\($sl.n) x \($sl.per_conn)/\($sl.products), \($sl.rate)/s)";
			$sl.lat_ms_p50; $cl.lat_ms_p50; null; null; null),
		row("latency p99, ms"; $sl.lat_ms_p99; $cl.lat_ms_p99; null; "<= 5";
			$sl.lat_ms_p99 <= 5),
		row("deliveries lost (latency run)";
			$sl.deliveries_expected - $sl.deliveries; $cl.deliveries_expected - $cl.deliveries;
			null; "0"; $sl.deliveries_expected == $sl.deliveries),
		row("reconnect storm to all replay_done, s"; $sf.storm_s; null; null; null; null),
		row("alerts lost in the storm"; $sf.storm_lost; null; null; "0"; $sf.storm_lost == 0),
		row("graceful stop with N sockets (SIGTERM to exit), s";
			(if $sp.stop_ms == null then null else $sp.stop_ms / 1000 end); null; null;
			"within shutdown_grace_s (\($grace))";
			$sp.stop_ms != null and $sp.stop_ms < $grace * 1000 and ($sp.grace_expired | not))
	] + ('"$storm_table"'))
}' >"$root/build/bench.json"

jq -r '
def f(x): if x == null then "-" else (x | tostring) end;
"stockalertd benchmark, N = \(.n)\(if .quick then " (--quick)" else "" end), \(.date), commit \(.commit)",
"",
"| metric | stockalertd | Nchan | floor | sa/floor | sa/Nchan | target | met |",
"|---|---|---|---|---|---|---|---|",
(.table[] | "| \(.metric) | \(f(.stockalertd)) | \(f(.nchan)) | \(f(.floor)) | \(f(.vs_floor)) | \(f(.vs_nchan)) | \(f(.target)) | \(if .met == null then "" elif .met then "yes" else "**no**" end) |"),
"",
"The same N on one instance and spread over three (one Redis, one MySQL, the same 2 cores):",
"",
"| metric | 1 instance | 3 instances | 3/1 |",
"|---|---|---|---|",
(.capacity[] | "| \(.metric) | \(f(.one)) | \(f(.three)) | \(f(.ratio)) |")
' "$root/build/bench.json"
sa_log "JSON in build/bench.json; raw results and logs in $run ($((SECONDS - t_start)) s)"
