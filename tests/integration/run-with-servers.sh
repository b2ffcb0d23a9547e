#!/usr/bin/env bash
# run-with-servers.sh DIR CMD...: runs CMD with the SA_TEST_* variables of the
# servers that `servers.sh start DIR` started.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR CMD..." >&2; exit 1; }
dir=$1
shift
if [ ! -r "$dir/env.sh" ]; then
	echo "run-with-servers.sh: $dir/env.sh missing: run 'servers.sh start $dir' first" >&2
	exit 1
fi
# shellcheck source=/dev/null
. "$dir/env.sh"
exec "$@"
