#!/usr/bin/env bash
# Builds the Debian package: a Release build with Debian's hardening flags in
# build-pkg/ (prefix /usr, no tests), then `cpack -G DEB` there. Prints the
# path of the .deb on stdout.
#
#   scripts/package.sh              -> build-pkg/stockalert_<version>_amd64.deb
#   SA_PKG_DIR=DIR scripts/package.sh   build in DIR instead
#   SA_DEB_MAINTAINER='Name <address>'   the package's Maintainer field
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=lib.sh
. scripts/lib.sh
SA_LOG_TAG=package.sh

dir=${SA_PKG_DIR:-$root/build-pkg}
jobs=$(nproc 2>/dev/null || echo 2)
[ "$jobs" -le 2 ] || jobs=2

# dpkg-buildflags: what Debian builds its own packages with (fortify, stack
# protector, relro, bindnow), so lintian's hardening checks pass.
cflags=$(dpkg-buildflags --get CFLAGS)
cppflags=$(dpkg-buildflags --get CPPFLAGS)
ldflags=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)

sa_log "building $dir (Release, prefix /usr)"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DSA_TESTS=OFF \
	${SA_DEB_MAINTAINER:+"-DSA_DEB_MAINTAINER=$SA_DEB_MAINTAINER"} \
	-DCMAKE_C_FLAGS="$cppflags $cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" >/dev/null
cmake --build "$dir" -j"$jobs" >/dev/null
rm -f "$dir"/stockalert_*.deb
(cd "$dir" && cpack -G DEB >/dev/null)
deb=$(ls "$dir"/stockalert_*_*.deb)
sa_log "built $deb"
printf '%s\n' "$deb"
