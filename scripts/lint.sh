#!/usr/bin/env bash
# Static checks: cppcheck over src/ (warnings are errors) and, with --format,
# clang-format over the C sources with scripts/clang-format.
#
#   scripts/lint.sh            cppcheck
#   scripts/lint.sh --format   also check formatting (prints the files that differ)
#   scripts/lint.sh --fix      rewrite the files with clang-format
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
build=${SA_LINT_BUILD_DIR:-build}
[ -d "$build/generated" ] || cmake -S . -B "$build" >/dev/null

echo "lint.sh: cppcheck src/"
if ! cppcheck --enable=warning,performance,portability --inline-suppr --quiet --std=c11 \
	--error-exitcode=1 -I include -I "$build/generated" -D_GNU_SOURCE \
	--suppress=missingIncludeSystem src/; then
	status=1
fi

files=$(git ls-files 'src/*.c' 'include/*.h' 'tests/*.c')
case "${1:-}" in
--fix)
	# shellcheck disable=SC2086
	clang-format --style=file:scripts/clang-format -i $files
	;;
--format)
	for f in $files; do
		if ! clang-format --style=file:scripts/clang-format "$f" | cmp -s - "$f"; then
			echo "lint.sh: $f is not formatted (scripts/lint.sh --fix)"
			status=1
		fi
	done
	;;
esac
exit $status
