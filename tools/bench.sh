#!/bin/sh
# SPDX-License-Identifier: MIT
# make bench: the benchmarks, as `faultline bench` runs them (BENCH= picks one).
set -eu
O=${1:-build}
shift || true
exec "$O/faultline" bench "$@"
