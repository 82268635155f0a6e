/* SPDX-License-Identifier: MIT */
/* Fuzz target: the snapshot file parser (header, region table, chunk table, page index). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "net/crc32c.h"
#include "net/le.h"
#include "snapshot/reader.h"

/*
 * Each input is a snapshot file. Properties:
 * 1. Nothing crashes, leaks or reads out of bounds (the sanitizers watch).
 * 2. A file the parser accepts is safe to read: every page of every region
 *    reads (or fails with -EIO) without touching memory outside the file.
 * 3. A page reported readable matches its CRC (the parser checked it).
 * Half the inputs (by their hash) have the header's CRC and file size fixed
 * up and the tables' CRCs skipped, so that mutations reach the checks behind.
 */

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "fuzz-snapshot: %s:%d: %s\n", __FILE__, __LINE__, \
				#cond);                                                \
			abort();                                                       \
		}                                                                      \
	} while (0)

static uint64_t hash(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const bool lax = hash(data, size) & 1;
	struct fl__snap_src src = { .fd = -1, .dfd = -1, .size = size };
	struct fl__snap_file f;
	uint8_t *copy = malloc(size ? size : 1), *buf;

	CHECK(copy);
	memcpy(copy, data, size);
	if (lax && size >= FL__SNAP_HEADER_USED) {
		fl__put_le64(copy + 96, size);
		fl__put_le32(copy + 124, fl__crc32c(0, copy, 124));
	}
	src.mem = copy;
	if (fl__snap_parse(&src, "fuzz", lax ? FL__SNAP_PARSE_NO_CRC : 0, &f) < 0) {
		free(copy);
		return 0;
	}
	CHECK(f.h.region_count >= 1 && f.h.file_size == size);
	for (uint32_t r = 0; r < f.h.region_count; r++) {
		const struct fl__snap_region *rg = &f.regions[r];
		const uint64_t ps = rg->page_size;

		CHECK(rg->pages * ps == rg->len);
		if (ps > (2u << 20))
			continue;	/* memory, not coverage */
		buf = malloc(ps);
		CHECK(buf);
		for (uint64_t i = 0; i < rg->pages && i < 4096; i++) {
			uint8_t kind = 0xff;
			int e = fl__snap_read_pages(&f, r, i, 1, buf, &kind, true, NULL);

			CHECK(e == 0 || e == -EIO || e == -ENOMEM);
			CHECK(kind <= FL__SNAP_KIND_MAX);
			if (!e && (kind == FL__SNAP_DATA || kind == FL__SNAP_ZSTD))
				CHECK(fl__crc32c(0, buf, ps) == fl__snap_entry_of(&f, r, i)->crc);
		}
		free(buf);
	}
	fl__snap_file_free(&f);
	free(copy);
	return 0;
}
