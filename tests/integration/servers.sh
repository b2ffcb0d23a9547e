#!/usr/bin/env bash
# CTest fixture "servers": a private redis-server and mariadbd for the
# integration tests, on free loopback ports, everything under one directory.
#
#   servers.sh start DIR   start both (stopping any left in DIR first), write
#                          DIR/env.sh with the SA_TEST_* variables
#   servers.sh stop DIR    stop both (TERM, then KILL after a deadline), rm DIR
#
# Tests read the servers' coordinates through run-with-servers.sh DIR CMD...
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../scripts/lib.sh
. "$here/../../scripts/lib.sh"
SA_LOG_TAG=servers.sh

usage() { echo "usage: $0 start|stop DIR" >&2; exit 1; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac

stop_all() {
	sa_stop_pidfile "$dir/redis/redis.pid" 10
	sa_stop_pidfile "$dir/mysql/mariadb.pid" 30
	[ -d "$dir/mysql" ] && sa_mysql_sock_cleanup "$dir/mysql"
	return 0
}

start_all() {
	local rport mport pass tries
	stop_all
	rm -rf "$dir"
	mkdir -p "$dir/redis" "$dir/mysql"
	chmod 700 "$dir"

	# A free port can be taken between choosing it and binding it: retry
	# with another one rather than fail the whole suite.
	for tries in 1 2 3; do
		rport=$(sa_free_port)
		sa_start_redis "$dir/redis" "$rport" && break
		[ $tries -lt 3 ] || sa_die "could not start redis-server"
	done
	for tries in 1 2 3; do
		mport=$(sa_free_port)
		sa_start_mariadb "$dir/mysql" "$mport" && break
		[ $tries -lt 3 ] || { stop_all; sa_die "could not start mariadbd"; }
	done

	pass=$(sa_random_password)
	( umask 077; printf '%s\n' "$pass" >"$dir/mysql.password" )
	# The server is private: the test user may create the extra databases
	# some tests need.
	sa_create_app_user "$dir/mysql" stockalert stockalert "$pass" ALL ||
		{ stop_all; sa_die "could not create the stockalert user"; }

	cat >"$dir/env.sh" <<ENV
# Written by tests/integration/servers.sh; sourced by run-with-servers.sh.
export SA_TEST_REDIS_PORT=$rport
export SA_TEST_REDIS_PID=$(cat "$dir/redis/redis.pid")
export SA_TEST_MYSQL_HOST=127.0.0.1
export SA_TEST_MYSQL_PORT=$mport
export SA_TEST_MYSQL_USER=stockalert
export SA_TEST_MYSQL_PASSWORD=$pass
export SA_TEST_MYSQL_PASSWORD_FILE=$dir/mysql.password
export SA_TEST_MYSQL_DATABASE=stockalert
export SA_TEST_MYSQL_ROOT_SOCKET=$(sa_mysql_sock "$dir/mysql")
export SA_TEST_MYSQL_PID=$(cat "$dir/mysql/mariadb.pid")
ENV
	sa_log "redis on 127.0.0.1:$rport, mariadb on 127.0.0.1:$mport; env in $dir/env.sh"
}

case "$cmd" in
start) start_all ;;
stop)
	stop_all
	rm -rf "$dir"
	;;
*) usage ;;
esac
