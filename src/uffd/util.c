/* SPDX-License-Identifier: MIT */
/* Options structs in, statistics structs out: the one check and copy every public function uses. */
#include <stdint.h>
#include <string.h>

#include "internal.h"

int fl__opts_check(const void *src, size_t known, const char *who)
{
	const unsigned char *b = src;
	size_t sz;

	memcpy(&sz, src, sizeof(sz));
	if (sz < sizeof(size_t)) {
		fl__err("%s: options sz %zu is smaller than the sz field itself (set it to "
			"sizeof the struct)", who, sz);
		return -EINVAL;
	}
	for (size_t i = known; i < sz; i++)
		if (b[i]) {
			fl__err("%s: options byte %zu is set, past the %zu bytes this version "
				"knows (a newer caller's field?)", who, i, known);
			return -EINVAL;
		}
	return 0;
}

int fl__opts_copy(void *dst, size_t known, const void *src, const char *who)
{
	size_t sz;
	int r;

	memset(dst, 0, known);
	memcpy(dst, &known, sizeof(known));
	if (!src)
		return 0;
	r = fl__opts_check(src, known, who);
	if (r < 0)
		return r;
	memcpy(&sz, src, sizeof(sz));
	memcpy(dst, src, sz < known ? sz : known);
	memcpy(dst, &known, sizeof(known));
	return 0;
}

int fl__stats_out(void *ret, const void *filled, size_t known, const char *who)
{
	size_t sz, n;

	memcpy(&sz, ret, sizeof(sz));
	if (sz < sizeof(size_t)) {
		fl__err("%s: the statistics struct's sz is %zu: set it to sizeof the struct", who,
			sz);
		return -EINVAL;
	}
	/* Never a byte past what both know: a caller that forgot sz may hold any value there. */
	n = sz < known ? sz : known;
	memcpy(ret, filled, n);
	memcpy(ret, &n, sizeof(n));
	return 0;
}
