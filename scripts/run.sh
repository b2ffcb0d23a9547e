#!/usr/bin/env bash
# The run command: builds stockalertd (Release, build/), makes sure a Redis and
# a MariaDB answer where conf/stockalertd.json says (starting private ones
# under var/ when nothing listens there), creates the secrets, starts the
# daemon in the background, loads demo products and prints the demo URL.
#
#   scripts/run.sh [start]   build, start what is missing, (re)start the daemon
#   scripts/run.sh stop      stop the daemon and the servers this script started
#   scripts/run.sh status
#
# Everything it creates lives in var/: redis/ and mysql/ (data, socket, log,
# pid file), jwt.secret and mysql.password (0600), stockalertd.json (the
# config actually used: conf/stockalertd.json with the ports adjusted if a
# private server had to use another one), stockalertd.log, stockalertd.pid.
# Running it twice is safe: running servers are reused, the daemon restarted.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=lib.sh
. scripts/lib.sh
SA_LOG_TAG=run.sh

var=$root/var
conf_src=$root/conf/stockalertd.json
conf=$var/stockalertd.json
build=${SA_RUN_BUILD_DIR:-build}
bin=$root/$build/stockalertd
daemon_pid=$var/stockalertd.pid
daemon_log=$var/stockalertd.log

is_loopback() {
	case "$1" in 127.* | localhost | ::1) return 0 ;; *) return 1 ;; esac
}

# Prints the value at a dotted path of a JSON file ("" for null/missing).
json_get() {
	node -e '
		const v = process.argv[2].split(".").reduce((o, k) => (o == null ? o : o[k]),
			JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")));
		process.stdout.write(v == null ? "" : String(v));' "$1" "$2"
}

stop_daemon() {
	local pid grace
	if pid=$(sa_pidfile_pid "$daemon_pid"); then
		grace=$(json_get "$conf" shutdown_grace_s 2>/dev/null || true)
		sa_log "stopping stockalertd (pid $pid)"
		sa_stop_pid "$pid" $((${grace:-10} + 5))
	fi
	rm -f "$daemon_pid"
}

cmd_stop() {
	stop_daemon
	if sa_pidfile_pid "$var/redis/redis.pid" >/dev/null; then
		sa_log "stopping the private redis-server"
		sa_stop_pidfile "$var/redis/redis.pid" 10
	fi
	if sa_pidfile_pid "$var/mysql/mariadb.pid" >/dev/null; then
		sa_log "stopping the private mariadbd"
		sa_stop_pidfile "$var/mysql/mariadb.pid" 60
	fi
	[ -d "$var/mysql" ] && sa_mysql_sock_cleanup "$var/mysql"
	sa_log "stopped (data kept in var/; rm -rf var to start from scratch)"
}

cmd_status() {
	local pid
	for f in "$daemon_pid:stockalertd" "$var/redis/redis.pid:redis-server" \
		"$var/mysql/mariadb.pid:mariadbd"; do
		if pid=$(sa_pidfile_pid "${f%%:*}"); then
			echo "${f##*:}: running (pid $pid)"
		else
			echo "${f##*:}: not running (from var/)"
		fi
	done
}

# ensure_redis HOST PORT: prints the port the daemon should use.
ensure_redis() {
	local host=$1 port=$2 p
	if sa_pidfile_pid "$var/redis/redis.pid" >/dev/null; then
		cat "$var/redis/port"
		return
	fi
	if ! is_loopback "$host"; then
		echo "$port"
		return
	fi
	if sa_port_busy 127.0.0.1 "$port"; then
		if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
			sa_log "using the Redis already listening on 127.0.0.1:$port"
			echo "$port"
			return
		fi
		p=$(sa_free_port)
		sa_log "127.0.0.1:$port is taken by something that is not an open Redis:" \
			"starting a private one on port $p"
		port=$p
	fi
	sa_log "starting a private redis-server on 127.0.0.1:$port (var/redis)"
	# Persist, so alert history survives a restart of the demo.
	SA_DETACH=1 SA_REDIS_SAVE="300 1" sa_start_redis "$var/redis" "$port" >&2
	echo "$port" >"$var/redis/port"
	echo "$port"
}

# mysql_login_ok PORT: can the configured user log in over TCP?
mysql_login_ok() {
	MYSQL_PWD=$mysql_pass mariadb --no-defaults -h 127.0.0.1 -P "$1" -u "$mysql_user" \
		-e 'SELECT 1' "$mysql_db" >/dev/null 2>&1
}

# ensure_mysql HOST PORT: prints the port the daemon should use.
ensure_mysql() {
	local host=$1 port=$2 p
	if ! sa_pidfile_pid "$var/mysql/mariadb.pid" >/dev/null; then
		if ! is_loopback "$host"; then
			echo "$port"
			return
		fi
		if sa_port_busy 127.0.0.1 "$port"; then
			if mysql_login_ok "$port"; then
				sa_log "using the MySQL/MariaDB already listening on 127.0.0.1:$port"
				echo "$port"
				return
			fi
			p=$(sa_free_port)
			sa_log "127.0.0.1:$port has a MySQL/MariaDB that refuses user" \
				"'$mysql_user' with the configured password: starting a private" \
				"one on port $p instead"
			port=$p
		fi
		sa_log "starting a private mariadbd on 127.0.0.1:$port (var/mysql)"
		SA_DETACH=1 sa_start_mariadb "$var/mysql" "$port" >&2
		echo "$port" >"$var/mysql/port"
	fi
	# Idempotent: also repairs the password if var/mysql.password changed.
	sa_create_app_user "$var/mysql" "$mysql_db" "$mysql_user" "$mysql_pass" >&2
	cat "$var/mysql/port"
}

# resolve PATH: relative paths in the config are relative to the daemon's
# working directory, the source tree root.
resolve() {
	case "$1" in /*) echo "$1" ;; *) echo "$root/$1" ;; esac
}

make_secret() {
	local file=$1 what=$2
	[ -s "$file" ] && return
	mkdir -p "$(dirname "$file")"
	( umask 077; head -c 48 /dev/urandom | base64 -w0 >"$file"; echo >>"$file" )
	sa_log "generated $what in ${file#"$root"/}"
}

# The products the demo page lists: keep in step with the
# <meta name="stockalert-products"> of src/www/index.html.
load_demo_products() {
	local port=$1
	# The daemon creates the schema once MySQL is up; wait for the table.
	local deadline=$((SECONDS + 60))
	until MYSQL_PWD=$mysql_pass mariadb --no-defaults -h "$mysql_host" -P "$port" \
		-u "$mysql_user" -N -e "SELECT 1 FROM products LIMIT 1" "$mysql_db" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || sa_die "table products not created after 60 s"
		sleep 0.2
	done
	# Stock is only set on first insert: a second run keeps the live levels.
	MYSQL_PWD=$mysql_pass mariadb --no-defaults -h "$mysql_host" -P "$port" -u "$mysql_user" \
		"$mysql_db" <<'SQL'
INSERT INTO products (id, sku, name, stock, low_stock_threshold) VALUES
	(1, 'ESP-001', 'Espresso machine', 0, 3),
	(2, 'GRN-002', 'Burr grinder', 2, 5),
	(3, 'FRO-003', 'Milk frother', 40, 5),
	(4, 'KET-004', 'Pour-over kettle', 0, 2),
	(5, 'SCL-005', 'Coffee scale', 4, 5),
	(6, 'MUG-006', 'Travel mug', 120, 10)
ON DUPLICATE KEY UPDATE sku = VALUES(sku), name = VALUES(name),
	low_stock_threshold = VALUES(low_stock_threshold);
SQL
}

cmd_start() {
	sa_ensure_node
	# shellcheck disable=SC2086
	sa_apt_install $SA_BUILD_PKGS libcmocka-dev

	local jobs
	jobs=$(nproc 2>/dev/null || echo 2)
	[ "$jobs" -le 2 ] || jobs=2
	sa_log "building $build/ (Release)"
	cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$build" -j"$jobs" --target stockalertd www

	mkdir -p "$var"
	chmod 700 "$var"
	[ -r "$conf_src" ] || sa_die "$conf_src missing"

	local rhost rport mhost mport secret pwfile listen_host listen_port url
	rhost=$(json_get "$conf_src" redis.host)
	rport=$(json_get "$conf_src" redis.port)
	mysql_host=$(json_get "$conf_src" mysql.host)
	mport=$(json_get "$conf_src" mysql.port)
	mysql_user=$(json_get "$conf_src" mysql.user)
	mysql_db=$(json_get "$conf_src" mysql.database)
	secret=$(json_get "$conf_src" auth.secret_file)
	pwfile=$(json_get "$conf_src" mysql.password_file)
	mhost=${mysql_host:-127.0.0.1}
	mysql_host=$mhost
	mysql_user=${mysql_user:-stockalert}
	mysql_db=${mysql_db:-stockalert}

	[ -n "$secret" ] && make_secret "$(resolve "$secret")" "the JWT secret"
	mysql_pass=$(json_get "$conf_src" mysql.password)
	if [ -n "$pwfile" ]; then
		make_secret "$(resolve "$pwfile")" "the MySQL password"
		mysql_pass=$(head -n1 "$(resolve "$pwfile")")
	fi

	# Stop an old daemon first: it must not hold the servers' ports busy
	# from the checks below, nor the listen port.
	stop_daemon

	rport=$(ensure_redis "${rhost:-127.0.0.1}" "${rport:-6379}")
	if is_loopback "$mhost"; then
		mport=$(ensure_mysql "$mhost" "${mport:-3306}")
	fi

	# The config actually used: the sample with the ports we ended up with.
	node -e '
		const fs = require("fs");
		const c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
		c.redis = { ...(c.redis || {}), port: Number(process.argv[3]) };
		c.mysql = { ...(c.mysql || {}), port: Number(process.argv[4]) };
		fs.writeFileSync(process.argv[2], JSON.stringify(c, null, 2) + "\n", { mode: 0o600 });
	' "$conf_src" "$conf" "$rport" "$mport"

	"$bin" --check-config -c "$conf" || sa_die "invalid configuration ($conf)"

	sa_log "starting stockalertd (log: var/stockalertd.log)"
	setsid "$bin" -c "$conf" </dev/null >>"$daemon_log" 2>&1 &
	echo $! >"$daemon_pid"
	local pid
	pid=$(cat "$daemon_pid")

	listen_host=$(json_get "$conf" listen.host)
	listen_port=$(json_get "$conf" listen.port)
	case "${listen_host:-0.0.0.0}" in 0.0.0.0 | :: | "") listen_host=127.0.0.1 ;; esac
	listen_port=${listen_port:-8080}
	case "$listen_host" in *:*) url="http://[$listen_host]:$listen_port" ;;
	*) url="http://$listen_host:$listen_port" ;; esac

	if ! sa_wait_for 60 "stockalertd" "$pid" \
		curl -fsS -o /dev/null --max-time 2 "$url/readyz"; then
		tail -n 30 "$daemon_log" >&2
		sa_die "stockalertd did not become ready (see var/stockalertd.log)"
	fi

	if is_loopback "$mhost" || [ -n "${SA_DEMO_DATA:-}" ]; then
		load_demo_products "$mport"
	fi

	local user_tok admin_tok
	user_tok=$("$bin" gentoken --sub demo-user --ttl 86400 -c "$conf")
	admin_tok=$("$bin" gentoken --sub demo-admin --roles admin --ttl 86400 -c "$conf")

	cat <<EOF

stockalertd is running (pid $pid): $url
  demo page (user demo-user):  $url/#token=$user_tok
  ops page (admin demo-admin): $url/ops.html#token=$admin_tok
  admin token (24 h):          $admin_tok
  health:                      curl $url/readyz ; curl $url/metrics

Publish a stock change (product 1 back in stock):
  curl -X POST -H "Authorization: Bearer $admin_tok" -H 'Content-Type: application/json' \\
       -d '{"event_id":"demo-'\$RANDOM'","product_id":1,"stock":5}' $url/api/inventory/events

Log: var/stockalertd.log    Stop: scripts/run.sh stop
EOF
}

case "${1:-start}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*) echo "usage: $0 [start|stop|status]" >&2; exit 1 ;;
esac
