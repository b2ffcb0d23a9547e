# shellcheck shell=bash disable=SC2034
# Shell helpers shared by scripts/run.sh, scripts/test.sh and the test
# fixture (tests/integration/servers.sh). Source it; it defines functions only.
#
# Every server started here is private: loopback only, its data, socket, log
# and pid file under a directory the caller chooses, stopped by its pid file
# (never by name), so it cannot touch a system Redis or MariaDB.

sa_log() { printf '%s: %s\n' "${SA_LOG_TAG:-stockalert}" "$*" >&2; }
sa_die() { sa_log "error: $*"; exit 1; }

# Packages a fresh Debian 12 needs to build, test and run stockalert. The
# test packages' last line is for the package test (tests/package/deb.sh):
# dpkg-shlibdeps and file for cpack, lintian, systemd-analyze.
SA_BUILD_PKGS="cmake make pkg-config gcc libwebsockets-dev libwebsockets-evlib-uv libuv1-dev
	libhiredis-dev default-libmysqlclient-dev libjansson-dev libjwt-dev libssl-dev libsystemd-dev
	libjemalloc-dev
	redis-server mariadb-server curl"
# dpkg-dev file lintian systemd: the package test; prometheus: for promtool
# (checks /metrics and conf/prometheus-rules.yml).
SA_TEST_PKGS="clang libclang-rt-14-dev libcmocka-dev redis-sentinel cppcheck clang-format python3 openssl
	dpkg-dev file lintian systemd prometheus"

# sa_apt_install PKG...: installs the packages that are not installed yet;
# runs `apt-get update` at most once per invocation, and only if needed.
# Services the packages ship (prometheus, redis-server, mariadb) are not
# started: without systemd, their postinst would start them through
# invoke-rc.d and leave them listening on fixed ports (prometheus on :9090).
# A policy-rc.d that refuses every start is put in place for the install when
# the machine has none (Debian's container images ship one).
sa_apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null || sa_die "missing packages (${missing[*]}) and no apt-get"
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	sa_log "installing: ${missing[*]}"
	if [ -z "${SA_APT_UPDATED:-}" ]; then
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
		SA_APT_UPDATED=1
	fi
	local policy=/usr/sbin/policy-rc.d ours='' rc=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# sa_apt_install: no service starts during the install\nexit 101\n' |
			$sudo tee "$policy" >/dev/null && $sudo chmod 0755 "$policy" && ours=1
	fi
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${missing[@]}" || rc=$?
	[ -z "$ours" ] || $sudo rm -f "$policy"
	return $rc
}

# node and npm: the Debian `npm` package conflicts with a nodejs coming from
# another repository (NodeSource ships npm inside nodejs), so only install
# them when the commands are really missing.
sa_ensure_node() {
	local want=()
	command -v node >/dev/null || want+=(nodejs)
	command -v npm >/dev/null || want+=(npm)
	[ ${#want[@]} -eq 0 ] || sa_apt_install "${want[@]}"
}

# Debian's chromium for the browser test (playwright-core drives it; it never
# downloads a browser of its own). Skipped when one is already there.
sa_ensure_chromium() {
	[ -x /usr/bin/chromium ] || sa_apt_install chromium
}

# What the tests need (scripts/test.sh, scripts/soak.sh): the build and test
# packages, node, the node clients (npm ci only when the lock file changed:
# it wipes node_modules) and, with --browser, Chromium (--no-browser: not).
# Nothing with SA_NO_INSTALL set.
sa_install_test_deps() { # --browser | --no-browser
	[ -z "${SA_NO_INSTALL:-}" ] || return 0
	# shellcheck disable=SC2086
	sa_apt_install $SA_BUILD_PKGS $SA_TEST_PKGS
	sa_ensure_node
	[ "$1" != --browser ] || sa_ensure_chromium
	local stamp=tests/node_modules/.sa-lock.sha256 lock_sum
	lock_sum=$(sha256sum tests/package-lock.json 2>/dev/null | cut -d' ' -f1 || true)
	if [ ! -s "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ] || [ -z "$lock_sum" ]; then
		if [ -f tests/package-lock.json ]; then
			(cd tests && npm ci --no-audit --no-fund)
		else
			(cd tests && npm install --no-audit --no-fund)
		fi
		sha256sum tests/package-lock.json | cut -d' ' -f1 >"$stamp"
	fi
}

# sa_sanitizer_env ROOT: the sanitizers must make a test fail, not just print.
sa_sanitizer_env() {
	local root=$1
	export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=0:detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
	if [ -f "$root/tests/lsan.supp" ]; then
		export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp:print_suppressions=0}
	fi
}

# Prints a TCP port on 127.0.0.1 that nothing listens on right now.
sa_free_port() {
	python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null ||
		node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# sa_port_busy HOST PORT: true if something accepts TCP connections there.
sa_port_busy() {
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# sa_pid_alive PID
sa_pid_alive() {
	[ -n "$1" ] && kill -0 "$1" 2>/dev/null
}

# sa_pidfile_pid FILE: prints the pid in FILE if that process is alive.
sa_pidfile_pid() {
	local pid
	[ -s "$1" ] || return 1
	pid=$(tr -dc 0-9 <"$1")
	sa_pid_alive "$pid" || return 1
	printf '%s\n' "$pid"
}

# sa_stop_pid PID [GRACE_S]: TERM, wait up to GRACE_S (default 20) seconds,
# then KILL. Returns once the process is gone.
sa_stop_pid() {
	local pid=$1 grace=${2:-20} deadline
	sa_pid_alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	deadline=$((SECONDS + grace))
	while sa_pid_alive "$pid"; do
		# A zombie child of ours is gone for all purposes.
		case "$(ps -o stat= -p "$pid" 2>/dev/null)" in Z*) break ;; esac
		if [ $SECONDS -ge $deadline ]; then
			sa_log "pid $pid ignored SIGTERM for ${grace}s, killing it"
			kill -KILL "$pid" 2>/dev/null
			break
		fi
		sleep 0.05
	done
	# Reap it if it is our child; harmless otherwise.
	wait "$pid" 2>/dev/null || true
}

# sa_stop_pidfile FILE [GRACE_S]
sa_stop_pidfile() {
	local pid
	pid=$(sa_pidfile_pid "$1") && sa_stop_pid "$pid" "${2:-20}"
	rm -f "$1"
}

# sa_wait_for DEADLINE_S DESCRIPTION PID CMD...: polls CMD every 50 ms until
# it succeeds; fails if PID dies or the deadline passes.
sa_wait_for() {
	local limit=$1 what=$2 pid=$3 deadline
	deadline=$((SECONDS + limit))
	shift 3
	until "$@" >/dev/null 2>&1; do
		if ! sa_pid_alive "$pid"; then
			sa_log "$what exited during startup"
			return 1
		fi
		if [ $SECONDS -ge $deadline ]; then
			sa_log "$what not ready after $limit s"
			return 1
		fi
		sleep 0.05
	done
}

# sa_start_redis DIR PORT: starts a private redis-server on 127.0.0.1:PORT,
# everything under DIR (redis.pid, redis.log), and waits until it answers
# PING. Writes the pid to DIR/redis.pid. No persistence unless SA_REDIS_SAVE
# holds a `save` schedule (e.g. "300 1"; dump.rdb in DIR).
sa_start_redis() {
	local dir=$1 port=$2 pid
	mkdir -p "$dir"
	# No --logfile: redis logs to stdout, which goes to DIR/redis.log.
	${SA_DETACH:+setsid} redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes \
		--dir "$dir" --pidfile "$dir/redis.pid" \
		--daemonize no --save "${SA_REDIS_SAVE:-}" --appendonly no \
		</dev/null >>"$dir/redis.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/redis.pid"
	if ! sa_wait_for 30 "redis-server on port $port" "$pid" \
		redis-cli -h 127.0.0.1 -p "$port" ping; then
		tail -n 20 "$dir/redis.log" >&2
		sa_stop_pid "$pid" 5
		return 1
	fi
}

# Options shared by install-db and the server: small InnoDB files, so a test
# instance takes ~40 MB of disk, not 200.
SA_MARIADB_SMALL="--innodb-log-file-size=8M --innodb-data-file-path=ibdata1:10M:autoextend"

# sa_start_mariadb DIR PORT: initialises DIR/data if empty, then starts a
# private mariadbd on 127.0.0.1:PORT with socket DIR/sock, log DIR/err.log,
# pid file DIR/mariadb.pid, and waits until it answers. root@localhost over
# the socket has no password. DIR/sock may be a symlink (see sa_mysql_sock).
sa_start_mariadb() {
	local dir=$1 port=$2 pid asroot=() sock
	sock=$(sa_mysql_sock "$dir")
	mkdir -p "$dir/tmp"
	# mariadbd refuses to run as root unless told to; as another user it
	# runs as that user anyway.
	[ "$(id -u)" -ne 0 ] || asroot=(--user=root)
	if [ ! -d "$dir/data/mysql" ]; then
		# shellcheck disable=SC2086
		if ! mariadb-install-db --no-defaults "${asroot[@]}" \
			--auth-root-authentication-method=normal --skip-test-db \
			--datadir="$dir/data" $SA_MARIADB_SMALL >"$dir/install.log" 2>&1; then
			cat "$dir/install.log" >&2
			return 1
		fi
	fi
	# shellcheck disable=SC2086
	${SA_DETACH:+setsid} mariadbd --no-defaults "${asroot[@]}" --datadir="$dir/data" --socket="$sock" \
		--pid-file="$dir/mariadb.pid" --port="$port" --bind-address=127.0.0.1 \
		--skip-name-resolve --log-error="$dir/err.log" --tmpdir="$dir/tmp" \
		--skip-log-bin --innodb-buffer-pool-size=32M $SA_MARIADB_SMALL \
		</dev/null >>"$dir/err.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/mariadb.pid"
	if ! sa_wait_for 60 "mariadbd on port $port" "$pid" \
		mariadb-admin --no-defaults --socket="$sock" -uroot ping; then
		tail -n 30 "$dir/err.log" >&2
		sa_stop_pid "$pid" 10
		return 1
	fi
	# mariadbd rewrites its pid file itself: same pid, keep ours.
	echo "$pid" >"$dir/mariadb.pid"
}

# sa_mysql_sock DIR: prints the socket path for the server in DIR. A unix
# socket path is limited to 107 bytes; under a deep checkout the socket lives
# in a short temporary directory that DIR/sock.dir names.
sa_mysql_sock() {
	local dir=$1 d
	if [ $((${#dir} + 5)) -le 100 ]; then
		printf '%s\n' "$dir/sock"
		return
	fi
	if [ ! -s "$dir/sock.dir" ] || [ ! -d "$(cat "$dir/sock.dir")" ]; then
		d=$(mktemp -d /tmp/sa-sock.XXXXXX)
		printf '%s\n' "$d" >"$dir/sock.dir"
	fi
	printf '%s\n' "$(cat "$dir/sock.dir")/sock"
}

# sa_mysql_sock_cleanup DIR: removes the short socket directory, if any.
sa_mysql_sock_cleanup() {
	if [ -s "$1/sock.dir" ]; then
		rm -rf "$(cat "$1/sock.dir")"
		rm -f "$1/sock.dir"
	fi
}

# sa_mysql_root DIR SQL: runs SQL as root over the server's socket.
sa_mysql_root() {
	mariadb --no-defaults --socket="$(sa_mysql_sock "$1")" -uroot -e "$2"
}

# Prints a random password: 24 characters of [A-Za-z0-9].
sa_random_password() {
	local p
	p=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
	printf '%s\n' "$p"
}

# sa_create_app_user DIR DATABASE USER PASSWORD [ALL]: creates DATABASE and
# USER@127.0.0.1 / USER@localhost. With ALL, grants every privilege (private
# test servers: tests create their own databases); otherwise only DATABASE.*.
sa_create_app_user() {
	local dir=$1 db=$2 user=$3 pass=$4 scope="\`$2\`.*"
	[ "${5:-}" = ALL ] && scope='*.*'
	sa_mysql_root "$dir" "
		CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4;
		CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY '$pass';
		CREATE USER IF NOT EXISTS '$user'@'localhost' IDENTIFIED BY '$pass';
		ALTER USER '$user'@'127.0.0.1' IDENTIFIED BY '$pass';
		ALTER USER '$user'@'localhost' IDENTIFIED BY '$pass';
		GRANT ALL PRIVILEGES ON $scope TO '$user'@'127.0.0.1';
		GRANT ALL PRIVILEGES ON $scope TO '$user'@'localhost';
		FLUSH PRIVILEGES;"
}
