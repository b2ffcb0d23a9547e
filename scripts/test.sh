#!/usr/bin/env bash
# The test command: installs what is missing (Debian 12), builds with
# AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/, runs every
# test (unit, integration against private redis-server and mariadbd, node
# clients), then, when clang is available, builds the libFuzzer targets into
# build-fuzz/ and runs each one briefly. Re-runnable; exits non-zero on any
# failure.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -R http         only the ctest tests matching "http"
#   SA_NO_FUZZ=1 scripts/test.sh    skip the fuzz stage
#   SA_NO_INSTALL=1 scripts/test.sh never call apt-get / npm
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=lib.sh
. scripts/lib.sh
SA_LOG_TAG=test.sh

jobs=$(nproc 2>/dev/null || echo 2)
[ "$jobs" -le 2 ] || jobs=2

asan_dir=$root/build-asan
fuzz_dir=$root/build-fuzz

# ctest starts and stops the fixture servers itself; if we are interrupted
# in the middle, stop whatever it left behind.
# shellcheck disable=SC2317
cleanup() {
	local d
	for d in "$asan_dir/test-servers" "$fuzz_dir/test-servers"; do
		[ -e "$d/env.sh" ] && tests/integration/servers.sh stop "$d" >/dev/null 2>&1
	done
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sa_install_test_deps --browser
sa_sanitizer_env "$root"

status=0

sa_log "building build-asan (Debug, ASan+UBSan)"
cmake -S . -B "$asan_dir" -DCMAKE_BUILD_TYPE=Debug -DSA_SANITIZE=ON -DSA_TESTS=ON >/dev/null
cmake --build "$asan_dir" -j"$jobs"

[ "$(id -u)" -eq 0 ] || sa_log "not root: package.deb (the Debian package test) will be skipped"
sa_log "running ctest in build-asan"
if ! ctest --test-dir "$asan_dir" --output-on-failure -j"$jobs" "$@"; then
	status=1
fi

if [ -z "${SA_NO_FUZZ:-}" ] && [ $# -eq 0 ] && command -v clang >/dev/null &&
	ls tests/fuzz/fuzz_*.c >/dev/null 2>&1; then
	fuzzers=$(for f in tests/fuzz/fuzz_*.c; do basename "$f" .c; done)
	sa_log "building build-fuzz (clang, libFuzzer): ${fuzzers//$'\n'/ }"
	CC=clang cmake -S . -B "$fuzz_dir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
		-DSA_FUZZ=ON -DSA_SANITIZE=OFF -DSA_TESTS=ON >/dev/null
	# shellcheck disable=SC2086
	if cmake --build "$fuzz_dir" -j"$jobs" --target $fuzzers; then
		sa_log "running the fuzzers (ctest -L fuzz)"
		ctest --test-dir "$fuzz_dir" -L fuzz --output-on-failure -j"$jobs" || status=1
	else
		status=1
	fi
elif [ -z "${SA_NO_FUZZ:-}" ] && [ $# -eq 0 ]; then
	sa_log "no clang or no fuzz targets: fuzz stage skipped"
fi

if [ $status -eq 0 ]; then
	sa_log "all tests passed"
else
	sa_log "FAILED (see the output above)"
fi
exit $status
