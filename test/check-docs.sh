#!/bin/sh
# SPDX-License-Identifier: MIT
# Every exported symbol has a man3 page (or a link to one), every alias is a symbolic link that
# man -l can read from the root, and every page is clean under groff.
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
# Alias pages are symbolic links to a page beside them, never ".so" requests: man -l resolves
# .so against the directory it runs in, so a .so page only reads from inside man/.
for page in man/man1/*.1 man/man3/*.3 man/man7/*.7; do
	if [ -L "$page" ]; then
		target=$(readlink "$page")
		case $target in
		*/*) echo "doc-check: $page links outside its directory ($target)" >&2; fail=1 ;;
		*) if [ ! -f "${page%/*}/$target" ] || [ -L "${page%/*}/$target" ]; then
			echo "doc-check: $page links to $target, which is not a page" >&2
			fail=1
		   fi ;;
		esac
	elif grep -q '^\.so' "$page"; then
		echo "doc-check: $page is a .so page; make it a symbolic link (man -l fails on it)" >&2
		fail=1
	fi
done
# One alias page read the way the README says, from the root of the tree.
if command -v man >/dev/null 2>&1; then
	alias_page=$(find man/man3 -type l -name '*.3' | sort | head -n 1)
	if [ -n "$alias_page" ]; then
		out=$(MANPAGER=cat MANWIDTH=80 man -l "$alias_page" 2>&1 >/dev/null)
		if [ -n "$out" ]; then
			echo "doc-check: man -l $alias_page from the root fails:" >&2
			echo "$out" >&2
			fail=1
		fi
	fi
fi
# Nothing in the tree cites a document that is not in it (the conventions are CONTRIBUTING.md).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	out=$(git grep -n -I -E 'STYLE[.]md|FIELD[-_]NOTES|ARCHITECTURE[.]md|(^|[^a-z_])seeds/' \
		-- . ':!test/check-docs.sh' 2>/dev/null)
	if [ -n "$out" ]; then
		echo "doc-check: these lines cite documents that are not in the repository:" >&2
		echo "$out" >&2
		fail=1
	fi
fi
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
