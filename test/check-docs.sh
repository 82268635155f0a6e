#!/bin/sh
# SPDX-License-Identifier: MIT
# Every exported symbol has a man3 page (or a link to one), and every page is clean under groff.
set -u
map=$1
fail=0
for sym in $(sed -n 's/^[[:space:]]*\(fl_[a-z0-9_]*\);$/\1/p' "$map"); do
	if [ ! -f "man/man3/$sym.3" ]; then
		echo "doc-check: exported symbol $sym has no page man/man3/$sym.3" >&2
		fail=1
	fi
done
for page in man/man1/faultline.1 man/man7/faultline.7; do
	[ -f "$page" ] || { echo "doc-check: $page is missing" >&2; fail=1; }
done
if command -v groff >/dev/null 2>&1; then
	for page in man/man1/*.1 man/man3/*.3 man/man7/*.7; do
		[ -f "$page" ] || continue
		out=$(cd man && groff -man -ww -z "${page#man/}" 2>&1)
		if [ -n "$out" ]; then
			echo "doc-check: groff warns on $page:" >&2
			echo "$out" >&2
			fail=1
		fi
	done
else
	echo "doc-check: groff not installed; page syntax not checked" >&2
fi
[ $fail -eq 0 ] && echo "doc-check: every exported symbol has a manual page"
exit $fail
