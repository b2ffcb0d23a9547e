#!/usr/bin/env bash
# check.sh SOURCE_DIR: the shipped alert rules (conf/prometheus-rules.yml)
# through `promtool check rules` and `promtool test rules`, and every alert
# of the file tested both firing and not firing (ctest rules.promtool).
set -euo pipefail
cd "$1"
rules=conf/prometheus-rules.yml
tests=tests/rules/prometheus-rules.test.yml
command -v promtool >/dev/null ||
	{ echo "promtool missing: install Debian's prometheus package (scripts/test.sh does)" >&2; exit 1; }
promtool check rules "$rules"
promtool test rules "$tests"
# promtool only runs the cases it is given: an alert without a case of its
# own would pass unseen.
status=0
while read -r a; do
	cases=$(grep -A2 -E "alertname: $a\$" "$tests" || true)
	if ! grep -q 'exp_alerts: \[\]' <<<"$cases"; then
		echo "$tests: no case where $a does not fire" >&2
		status=1
	fi
	if ! grep -q 'exp_alerts:$' <<<"$cases"; then
		echo "$tests: no case where $a fires" >&2
		status=1
	fi
done < <(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$rules")
exit $status
