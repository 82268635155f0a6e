#!/bin/sh
# SPDX-License-Identifier: MIT
# Make sure what make check / demo / bench use is installed: a C compiler and make are
# assumed (they ran this script); groff checks the manual pages. Installs with apt-get as
# root; otherwise says exactly what to install and stops.
set -u
missing=""
command -v groff >/dev/null 2>&1 || missing="$missing groff-base"
# libssl-dev: OpenSSL 3, TLS 1.3 for every TCP connection (required).
[ -f /usr/include/openssl/ssl.h ] || missing="$missing libssl-dev"
[ -n "${FL_DEPS_EXTRA:-}" ] && for p in $FL_DEPS_EXTRA; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
# libzstd-dev: compressed snapshots; libhiredis-dev: the Redis store; redis-server and
# redis-tools: the Redis store's tests, faultline bench remote and serve --demo (all optional: the build goes
# without them, the tests skip with the reason, and this says so).
optional=""
[ -f /usr/include/zstd.h ] || optional="libzstd-dev"
[ -f /usr/include/hiredis/hiredis.h ] || optional="$optional libhiredis-dev"
command -v redis-server >/dev/null 2>&1 || optional="$optional redis-server"
command -v redis-cli >/dev/null 2>&1 || optional="$optional redis-tools"
optional=${optional# }
if [ -n "$optional" ] && [ "$(id -u)" -ne 0 ]; then
	echo "deps: $optional missing: built without compressed snapshots (libzstd-dev) or the Redis store (libhiredis-dev), Redis tests and the far-memory demo skipped (redis-server, redis-tools); apt-get install $optional" >&2
	optional=""
fi
missing="$missing${optional:+ $optional}"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps: installing$missing"
	apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null ||
		{ echo "deps: apt-get install$missing failed" >&2; exit 1; }
	exit 0
fi
echo "deps: missing$missing; install them as root: apt-get install$missing" >&2
exit 1
