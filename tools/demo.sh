#!/bin/sh
# SPDX-License-Identifier: MIT
# make demo: what faultline does, on this machine, in a few seconds.
set -eu
O=${1:-build}
echo "== faultline probe: what userfaultfd can do here"
"$O/faultline" probe
echo
echo "== examples/hello: 3 pages, each fault filled by a handler thread with 'A' + fault count"
"$O/examples/hello" 3
