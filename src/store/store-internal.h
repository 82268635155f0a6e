/* SPDX-License-Identifier: MIT */
/* Helpers shared by the store layer's sources (never installed). */
#ifndef FL_STORE_INTERNAL_H
#define FL_STORE_INTERNAL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* The smallest page size a store is ever asked about (store.h: a power of two >= 4096). */
#define FL__STORE_MIN_PAGE 4096u

/*
 * Options structs (STYLE.md section 4). fl__opts_check: the caller's struct
 * must hold at least its sz field, and every byte past the @known bytes this
 * library knows must be zero. fl__opt_has: 1 if the field at [@offset,
 * @offset+@size) lies inside the caller's @sz, 0 if it lies wholly past it
 * (keep the default), -EINVAL if @sz cuts it in two.
 */
static inline int fl__opts_check(const void *opts, size_t known)
{
	size_t sz = *(const size_t *)opts;

	if (sz < sizeof(size_t))
		return -EINVAL;
	for (size_t i = known; i < sz; i++)
		if (((const unsigned char *)opts)[i])
			return -EINVAL;
	return 0;
}

static inline int fl__opt_has(size_t sz, size_t offset, size_t size)
{
	if (offset + size <= sz)
		return 1;
	return offset < sz ? -EINVAL : 0;
}

#endif /* FL_STORE_INTERNAL_H */
