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
echo
echo "== examples/filemap: a region backed by a file; its pages fault in, prefetched adaptively"
"$O/examples/filemap" README.md
echo
echo "== faultline bench latency: 5,000 faults per mode and floor, one run (make bench runs the full benchmarks)"
"$O/faultline" bench latency --pages 5000 --runs 1
echo
echo "== faultline migrate --demo: a key-value store migrated post-copy while it serves"
"$O/faultline" migrate --demo
echo
echo "== faultline snapshot --demo: the same store snapshotted live while it serves, restored lazily with working-set replay"
# Live snapshots write-protect memory the kernel itself may write (read(2) into it): they need a
# userfaultfd that takes kernel-mode faults, which a plain user on a default system does not get.
if "$O/faultline" probe | grep -q '^  user-only .*(default)'; then
	echo "(not shown: live snapshots need the userfaultfd(2) system call"
	echo " (vm.unprivileged_userfaultfd=1 or CAP_SYS_PTRACE) or access to /dev/userfaultfd;"
	echo " this user has only user-mode-only userfaultfds)"
else
	"$O/faultline" snapshot --demo
fi
echo
echo "== faultline serve --demo: far memory: a store four times its memory budget, the rest in Redis"
# It starts a redis-server of its own (in a temporary directory, removed afterwards); where it
# cannot (no redis-server, or faultline built without hiredis) it says what to install: exit 3.
rc=0
"$O/faultline" serve --demo || rc=$?
if [ "$rc" -eq 3 ]; then
	echo "(not shown: see above for why, and what to install; as root, make deps installs packages)"
elif [ "$rc" -ne 0 ]; then
	exit "$rc"
fi
