#!/usr/bin/env bash
# ctest package.deb: the Debian package, the way an admin meets it.
#
# Builds stockalert_<version>_amd64.deb (scripts/package.sh, build-pkg/),
# runs lintian on it (no error, no warning), installs it with dpkg -i, checks
# the files, owners and modes, the conffile, the system user, the generated
# JWT secret and the enabled unit, runs systemd-analyze verify and security
# on the installed unit, points the installed config at the fixture's Redis
# and MariaDB, starts the installed binary by hand as the stockalert user
# (systemd is not PID 1 here) and talks to it, stops it; reinstalls over an
# admin's edits; purges and checks that nothing is left. Then once more with
# an account and a JWT secret the admin made before the install: both must
# survive install and purge.
#
# It needs root and a Debian with dpkg; otherwise it exits 77 (skipped) with
# the reason. It refuses to run (skipped) on a machine where stockalert is
# installed or /etc/stockalert or the stockalert account exist, and whatever
# happens it purges the package and removes what it made (trap).
#
# Run by ctest with the fixture's variables (run-with-servers.sh): SA_TEST_*.
set -euo pipefail

src=${SA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
# shellcheck source=../../scripts/lib.sh
. "$src/scripts/lib.sh"
SA_LOG_TAG=package.deb

skip() {
	echo "SKIPPED: $*"
	exit 77
}
fail() {
	echo "FAIL: $*" >&2
	exit 1
}
ok() { echo "ok - $*"; }

[ "$(id -u)" -eq 0 ] || skip "needs root (dpkg -i, a system user, files in /etc)"
for c in dpkg dpkg-deb dpkg-shlibdeps lintian systemd-analyze cpack setpriv curl flock; do
	command -v "$c" >/dev/null || skip "no $c (scripts/test.sh installs it on Debian 12)"
done
: "${SA_TEST_REDIS_PORT:?run through run-with-servers.sh}"

# Two runs on one machine (several checkouts) would fight over dpkg and
# /etc/stockalert: one at a time.
exec 9>/run/lock/stockalert-package-test.lock
flock -w 900 9 || fail "another package test holds /run/lock/stockalert-package-test.lock"

# installed, config-files, ...: anything but absent is an admin's package.
pkg_status() { dpkg-query -W -f='${db:Status-Status}' stockalert 2>/dev/null || true; }
case "$(pkg_status)" in
"" | not-installed) ;;
*) skip "the stockalert package is on this machine ($(pkg_status)); not touching it" ;;
esac
[ ! -e /etc/stockalert ] || skip "/etc/stockalert exists; not touching an admin's files"
[ ! -e /var/lib/stockalert ] || skip "/var/lib/stockalert exists"
! getent passwd stockalert >/dev/null || skip "a stockalert account exists"
! getent group stockalert >/dev/null || skip "a stockalert group exists"

work=$(mktemp -d /tmp/sa-pkg.XXXXXX)
chmod 755 "$work"
daemon_pid=
test_db="sa_pkg_$$"
made_account=

# shellcheck disable=SC2317
cleanup() {
	local rc=$?
	[ -z "$daemon_pid" ] || sa_stop_pid "$daemon_pid" 10
	if [ -n "$(pkg_status)" ] && [ "$(pkg_status)" != not-installed ]; then
		dpkg_locked --purge stockalert >/dev/null 2>&1 || echo "cleanup: dpkg --purge failed" >&2
	fi
	# What this test made in the admin's place.
	rm -f /etc/stockalert/mysql.password /etc/stockalert/jwt.secret
	rmdir /etc/stockalert 2>/dev/null || true
	if [ -n "$made_account" ]; then
		getent passwd stockalert >/dev/null && userdel stockalert
		getent group stockalert >/dev/null && groupdel stockalert
	fi
	mariadb --no-defaults --socket="$SA_TEST_MYSQL_ROOT_SOCKET" -uroot \
		-e "DROP DATABASE IF EXISTS \`$test_db\`" 2>/dev/null || true
	if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ -s "$work/daemon.log" ]; then
		echo "--- daemon log" >&2
		tail -n 30 "$work/daemon.log" >&2
	fi
	rm -rf "$work"
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# dpkg ARGS...: dpkg, waiting (up to 5 min) while apt or another dpkg holds
# its lock instead of failing the test.
dpkg_locked() {
	local deadline=$((SECONDS + 300))
	while :; do
		if DEBIAN_FRONTEND=noninteractive dpkg "$@" </dev/null 2>"$work/dpkg.err"; then
			cat "$work/dpkg.err" >&2
			return 0
		fi
		if ! grep -q 'lock' "$work/dpkg.err" || [ $SECONDS -ge $deadline ]; then
			cat "$work/dpkg.err" >&2
			return 1
		fi
		sleep 1
	done
}

# mode PATH EXPECTED: "owner:group octal" of PATH.
mode() {
	local got
	got=$(stat -c '%U:%G %a' "$1" 2>/dev/null) || fail "$1 missing"
	[ "$got" = "$2" ] || fail "$1 is $got, want $2"
}

# ---------------------------------------------------------------- build
deb=$(SA_PKG_DIR="${SA_PKG_DIR:-$src/build-pkg}" "$src/scripts/package.sh")
[ -f "$deb" ] || fail "package.sh built no package"
case "$(basename "$deb")" in
stockalert_*_amd64.deb) ok "built $(basename "$deb")" ;;
*) fail "unexpected package name $(basename "$deb")" ;;
esac

# -------------------------------------------------------------- control
control=$(dpkg-deb -f "$deb")
grep -q '^Package: stockalert$' <<<"$control" || fail "Package field"
depends=$(dpkg-deb -f "$deb" Depends)
for d in libwebsockets-evlib-uv adduser libwebsockets17 libhiredis0.14 libmariadb3 libjansson4 \
	libjwt0 libuv1 libssl3 libsystemd0 libc6; do
	grep -q "[ ,]${d}[ ,(]" <<<", $depends," || fail "Depends lacks $d: $depends"
done
[ "$(dpkg-deb -f "$deb" Recommends)" = "redis-server, mariadb-server" ] ||
	fail "Recommends: $(dpkg-deb -f "$deb" Recommends)"
ok "Depends (dpkg-shlibdeps + libwebsockets-evlib-uv, adduser), Recommends"

# -------------------------------------------------------------- lintian
# No error and no warning; the info-level tags left are named in
# conf/README.md ("Debian package").
if ! lintian --fail-on error,warning "$deb" >"$work/lintian.out" 2>&1; then
	cat "$work/lintian.out"
	fail "lintian found errors or warnings"
fi
ok "lintian: no error, no warning"

# -------------------------------------------------------------- install
dpkg_locked -i "$deb" || fail "dpkg -i failed"
ok "dpkg -i"

mode /usr/sbin/stockalertd "root:root 755"
mode /lib/systemd/system/stockalertd.service "root:root 644"
mode /usr/share/stockalert/www/index.html "root:root 644"
mode /usr/share/stockalert/www/stockalert.js "root:root 644"
for f in README.md conf/README.md conf/stockalertd.json conf/schema.sql copyright changelog.gz; do
	mode "/usr/share/doc/stockalert/$f" "root:root 644"
done
mode /usr/share/man/man8/stockalertd.8.gz "root:root 644"
mode /etc/stockalert "root:root 755"
mode /etc/stockalert/stockalertd.json "root:root 644"
# Here strings, not `echo | grep -q`: with pipefail, grep -q leaving early
# can fail the pipeline with the writer's SIGPIPE.
grep -q '^ /etc/stockalert/stockalertd.json ' <<<"$(dpkg-query -W -f='${Conffiles}\n' stockalert)" ||
	fail "/etc/stockalert/stockalertd.json is not a conffile"
# The installed config names installed files only (no path relative to the
# source tree).
conf=/etc/stockalert/stockalertd.json
for want in '"secret_file": "/etc/stockalert/jwt.secret"' \
	'"password_file": "/etc/stockalert/mysql.password"' \
	'"static_dir": "/usr/share/stockalert/www"'; do
	grep -qF "$want" $conf || fail "$conf lacks $want"
done
! grep -q '"var/\|"build/' $conf || fail "$conf still names source-tree paths"
ok "files, owners, modes; the conffile has absolute paths"

# The account: a system user without a home or a shell, in its own group.
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd stockalert) || fail "no stockalert user"
[ "$uid" -lt 1000 ] || fail "stockalert uid $uid is not a system uid"
[ "$(getent group stockalert | cut -d: -f3)" = "$gid" ] || fail "stockalert's group is not stockalert"
if [ "$home" != /nonexistent ] || [ "$shell" != /usr/sbin/nologin ]; then
	fail "stockalert home $home shell $shell"
fi
ok "system user stockalert (uid $uid)"

# The JWT secret: generated, 0640 root:stockalert, 48 random bytes in base64.
mode /etc/stockalert/jwt.secret "root:stockalert 640"
[ "$(tr -d '\n' </etc/stockalert/jwt.secret | wc -c)" -eq 64 ] || fail "jwt.secret is not 64 characters"
secret_sum=$(sha256sum </etc/stockalert/jwt.secret)
ok "jwt.secret generated, 0640 root:stockalert"

# Enabled without a running systemd: the wants symlink deb-systemd-helper made.
wants=/etc/systemd/system/multi-user.target.wants/stockalertd.service
[ "$(readlink "$wants")" = /lib/systemd/system/stockalertd.service ] || fail "unit not enabled ($wants)"
# A socket unit is shipped but not enabled: started through it the daemon
# ignores listen.host/listen.port, which the admin has just edited.
[ ! -e /etc/systemd/system/sockets.target.wants/stockalertd.socket ] ||
	fail "stockalertd.socket enabled by the install"
ok "unit enabled"

# ---------------------------------------------------------------- units
units=$(dpkg-query -L stockalert | grep '^/lib/systemd/system/.')
# shellcheck disable=SC2086
systemd-analyze verify $units >"$work/verify.out" 2>&1 || {
	cat "$work/verify.out"
	fail "systemd-analyze verify"
}
[ ! -s "$work/verify.out" ] || {
	cat "$work/verify.out"
	fail "systemd-analyze verify complained"
}
# --threshold is tenths: 14 = exposure 1.4, what the source tree's unit scores.
if ! systemd-analyze security --offline=true --threshold=14 \
	/lib/systemd/system/stockalertd.service >"$work/security.out" 2>&1; then
	tail -n 3 "$work/security.out"
	fail "systemd-analyze security: exposure above 1.4"
fi
ok "systemd-analyze verify ${units//$'\n'/ }; security $(grep -o 'level for [^:]*: [0-9.]* [A-Z]*' "$work/security.out")"

# ---------------------------------------------------------- run it
# The admin's part: point the config at the fixture's servers and write the
# MySQL password where the config says.
port=$(sa_free_port)
mariadb --no-defaults --socket="$SA_TEST_MYSQL_ROOT_SOCKET" -uroot \
	-e "CREATE DATABASE \`$test_db\`" || fail "could not create database $test_db"
python3 - "$conf" "$port" "$test_db" <<'PY' || fail "could not edit $conf"
import json, os, sys
path, port, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path) as f:
    c = json.load(f)
c["listen"]["port"] = port
c["redis"]["port"] = int(os.environ["SA_TEST_REDIS_PORT"])
c["redis"]["prefix"] = "sa-pkg-%d:" % os.getpid()
c["mysql"]["host"] = os.environ["SA_TEST_MYSQL_HOST"]
c["mysql"]["port"] = int(os.environ["SA_TEST_MYSQL_PORT"])
c["mysql"]["user"] = os.environ["SA_TEST_MYSQL_USER"]
c["mysql"]["database"] = db
with open(path, "w") as f:
    json.dump(c, f, indent=2)
    f.write("\n")
PY
install -m 0640 -o root -g stockalert "$SA_TEST_MYSQL_PASSWORD_FILE" /etc/stockalert/mysql.password

as_daemon() { setpriv --reuid=stockalert --regid=stockalert --init-groups "$@"; }
(cd /usr && as_daemon /usr/sbin/stockalertd --check-config -c $conf) >"$work/check.out" 2>&1 || {
	cat "$work/check.out"
	fail "--check-config as stockalert"
}
# As the unit runs it: user stockalert, working directory /usr.
(cd /usr && exec setpriv --reuid=stockalert --regid=stockalert --init-groups \
	/usr/sbin/stockalertd -c $conf) >"$work/daemon.log" 2>&1 &
daemon_pid=$!
base="http://127.0.0.1:$port"
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ]; }
sa_wait_for 60 "installed stockalertd" "$daemon_pid" ready || fail "never ready (/readyz)"
ok "installed daemon ready against the fixture's Redis and MariaDB"

page=$(curl -sf "$base/") || fail "GET / failed"
grep -qi '<html' <<<"$page" || fail "GET / is not the demo page"
curl -sf -o "$work/stockalert.js" "$base/stockalert.js" || fail "GET /stockalert.js failed"
cmp -s "$work/stockalert.js" /usr/share/stockalert/www/stockalert.js || fail "stockalert.js differs"
token=$(as_daemon /usr/sbin/stockalertd gentoken --sub pkg-test -c $conf) || fail "gentoken"
code=$(curl -s -o "$work/subs.json" -w '%{http_code}' -H "Authorization: Bearer $token" \
	"$base/api/me/subscriptions")
[ "$code" = 200 ] || fail "GET /api/me/subscriptions with a token signed by jwt.secret: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/api/me/subscriptions")
[ "$code" = 401 ] || fail "GET /api/me/subscriptions without a token: $code, want 401"
ok "serves the installed demo page and stockalert.js; a token signed with the generated secret works"

kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=
[ $rc -eq 0 ] || fail "stockalertd exited $rc on SIGTERM"
ok "SIGTERM: exit 0"

# --------------------------------------------------------- reinstall
# Installing again (same version: postinst configure with the old version)
# keeps the admin's edited config and the secret.
conf_sum=$(sha256sum <$conf)
dpkg_locked -i "$deb" || fail "second dpkg -i failed"
[ "$(sha256sum <$conf)" = "$conf_sum" ] || fail "reinstall replaced the edited $conf"
[ "$(sha256sum </etc/stockalert/jwt.secret)" = "$secret_sum" ] || fail "reinstall replaced jwt.secret"
ok "reinstall keeps the edited config and the secret"

# ------------------------------------------------------------- purge
# Everything the package shipped (its own paths: they all name stockalert),
# but /etc/stockalert, which holds the admin's mysql.password.
files=$(dpkg-query -L stockalert | grep stockalert | grep -vx /etc/stockalert)
dpkg_locked --purge stockalert || fail "dpkg --purge failed"
for f in $files; do
	[ ! -e "$f" ] || fail "$f left after purge"
done
[ ! -e /var/lib/stockalert ] || fail "/var/lib/stockalert left after purge"
if [ -e "$wants" ] || [ -L "$wants" ]; then fail "$wants left after purge"; fi
[ ! -e /etc/systemd/system/stockalertd.service ] || fail "a mask of the unit left after purge"
! getent passwd stockalert >/dev/null || fail "user stockalert left after purge"
! getent group stockalert >/dev/null || fail "group stockalert left after purge"
[ ! -e /etc/stockalert/jwt.secret ] || fail "the generated jwt.secret left after purge"
# The admin's own file stays (and with it the directory).
[ -f /etc/stockalert/mysql.password ] || fail "purge removed the admin's mysql.password"
[ "$(ls -A /etc/stockalert)" = mysql.password ] || fail "/etc/stockalert after purge: $(ls -A /etc/stockalert)"
rm -f /etc/stockalert/mysql.password
rmdir /etc/stockalert
ok "purge removes everything the install made, keeps the admin's mysql.password"

# ------------------------------------------- an admin who came first
# An account and a JWT secret that exist before the install (the secret
# shared by every instance) are used as they are, and purge leaves them.
made_account=1
addgroup --system --quiet stockalert
adduser --system --quiet --ingroup stockalert --no-create-home --home /nonexistent \
	--shell /usr/sbin/nologin stockalert
install -d -m 0755 /etc/stockalert
printf 'the-admins-shared-secret-0123456789\n' >/etc/stockalert/jwt.secret
chown root:stockalert /etc/stockalert/jwt.secret
chmod 0640 /etc/stockalert/jwt.secret
admin_sum=$(sha256sum </etc/stockalert/jwt.secret)
uid=$(id -u stockalert)
dpkg_locked -i "$deb" || fail "dpkg -i over an existing account failed"
[ "$(sha256sum </etc/stockalert/jwt.secret)" = "$admin_sum" ] || fail "install replaced the admin's jwt.secret"
/usr/sbin/stockalertd --check-config -c $conf >/dev/null 2>&1 || fail "--check-config with the admin's secret"
dpkg_locked --purge stockalert || fail "second dpkg --purge failed"
[ "$(sha256sum </etc/stockalert/jwt.secret 2>/dev/null)" = "$admin_sum" ] ||
	fail "purge removed the admin's jwt.secret"
[ "$(id -u stockalert 2>/dev/null)" = "$uid" ] || fail "purge removed the account the admin made"
[ "$(ls -A /etc/stockalert)" = jwt.secret ] || fail "/etc/stockalert after purge: $(ls -A /etc/stockalert)"
ok "an existing account and jwt.secret survive install and purge"

echo "package.deb: all checks passed"
