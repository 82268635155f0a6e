#!/bin/sh
# SPDX-License-Identifier: MIT
# make bench: the benchmarks, as `faultline bench` runs them.
#   make bench                      latency, fill and threads with their defaults (a few minutes)
#   make bench BENCH="uffd"         one benchmark; BENCH="latency --plot lat.svg --pin" adds options
# With --plot, gnuplot draws the histograms: installed here with apt-get when it is missing and we
# are root, otherwise we say what to install (the data file is written either way).
set -eu
O=${1:-build}
shift || true
tool="$O/faultline"

want_plot=no
for a in "$@"; do
	case $a in
	--plot|--plot=*) want_plot=yes ;;
	esac
done
if [ "$want_plot" = yes ] && ! command -v gnuplot >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "== installing gnuplot-nox for --plot"
		apt-get install -y --no-install-recommends gnuplot-nox >/dev/null 2>&1 ||
			{ apt-get update >/dev/null 2>&1 &&
			  apt-get install -y --no-install-recommends gnuplot-nox >/dev/null 2>&1; } ||
			echo "bench: apt-get install gnuplot-nox failed; only the data file will be written" >&2
	else
		echo "bench: --plot needs gnuplot: run 'apt-get install gnuplot-nox' as root" \
			"(only the data file will be written)" >&2
	fi
fi

if [ $# -gt 0 ]; then
	exec "$tool" bench "$@"
fi
for b in latency fill threads; do
	echo "== faultline bench $b"
	"$tool" bench "$b"
	echo
done
