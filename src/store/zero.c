/* SPDX-License-Identifier: MIT */
/* The zero store: every page a hole. */
#include <errno.h>

#include "faultline.h"
#include "internal.h"
#include "store-internal.h"

/* Async-signal-safe: only sets bits in the caller's bitmap. */
static int zero_read(void *userdata, uint64_t off, void *buf, size_t len, size_t page_size,
		     uint64_t *holes)
{
	(void)userdata;
	(void)off;
	(void)buf;
	fl__bitmap_set_range(holes, 0, len / page_size);
	return 0;
}

FL_API int fl_store_zero_create(uint64_t size, struct fl_store **ret)
{
	static const struct fl_store_ops ops = { .sz = sizeof(ops), .read = zero_read };

	return fl_store_create(&ops, NULL, FL_STORE_READONLY | FL_STORE_HOLES, size, ret);
}
