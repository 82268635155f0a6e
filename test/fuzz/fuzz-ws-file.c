/* SPDX-License-Identifier: MIT */
/* Fuzz target: the working-set and loading-set file parsers (doc/working-set-format.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "net/le.h"
#include "pager/wsfile.h"

/*
 * Each input is a file. Properties:
 * 1. Nothing crashes or reads out of bounds (the sanitizers watch).
 * 2. A working set that parses has every entry inside the region, none
 *    repeated, and re-encodes to the same bytes.
 * 3. A loading-set head that parses covers its pages within the file
 *    size given, and re-encodes to the same head.
 * Refusals say why. The first byte picks where the CRC is fixed up
 * (none, the working set's, the loading set's), so that mutations get
 * past the CRC to the checks behind it.
 */

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "fuzz-ws-file: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                       \
		}                                                                      \
	} while (0)

/* The largest region the target lets a file describe: bounds the repeat-check scratch. */
#define MAX_PAGES (1u << 20)

static void working_set(uint8_t *b, size_t n, int fix)
{
	struct fl__ws_info ws;
	const char *why = NULL;
	uint64_t *seen, npages;
	uint8_t *again;
	int r;

	if (fix && n >= FL__WS_HEADER) {
		/* Re-seal the CRC over what the header claims, within the input. */
		uint64_t count = fl__le64(b + 32);

		if (count <= (n - FL__WS_HEADER) / 8)
			fl__ws_encode(b, fl__le64(b + 16),
				      fl__le64(b + 24), count, b + 40);
	}
	/* Scratch for the repeat check: only for regions the target can afford. */
	r = fl__ws_parse(b, n, &ws, NULL, &why);
	if (r < 0) {
		CHECK(r == -EINVAL && why && *why);
		return;
	}
	npages = ws.region_len / ws.page_size;
	CHECK(ws.count <= npages);
	CHECK(n == FL__WS_HEADER + ws.count * 8);
	if (npages > MAX_PAGES)
		return;
	seen = calloc(npages / 64 + 1, sizeof(uint64_t));
	CHECK(seen);
	r = fl__ws_parse(b, n, &ws, seen, &why);
	free(seen);
	if (r < 0) {
		CHECK(r == -EINVAL && !strcmp(why, "an entry is repeated"));
		return;
	}
	for (uint64_t i = 0; i < ws.count; i++)
		CHECK(fl__ws_entry(&ws, i) < npages);
	again = malloc(n);
	CHECK(again);
	memcpy(again, b, n);
	fl__ws_encode(again, ws.page_size, ws.region_len, ws.count, ws.id);
	CHECK(!memcmp(again, b, n));
	free(again);
}

static void loading_set(uint8_t *b, size_t n, int fix)
{
	struct fl__ls_info ls;
	const char *why = NULL;
	uint64_t file_size;
	size_t need = 0;
	int r;

	if (n < 8)
		return;
	/* The file's size from the input's last 8 bytes: both sides of every bound are reached. */
	file_size = fl__le64(b + n - 8);
	n -= 8;
	if (fix && n >= FL__WS_HEADER) {
		uint64_t count = fl__le64(b + 24);

		if (count <= (n - FL__WS_HEADER) / 4)
			fl__ls_encode(b, fl__le64(b + 16), count, b + 32,
				      fl__le64(b + 48));
	}
	r = fl__ls_parse(b, n, file_size, &ls, &need, &why);
	if (r == -EAGAIN) {
		CHECK(need > n);
		return;
	}
	if (r < 0) {
		CHECK(r == -EINVAL && why && *why);
		return;
	}
	CHECK(ls.data_off == fl__ls_data_off(ls.count));
	CHECK(ls.data_off <= file_size);
	CHECK(ls.count <= (file_size - ls.data_off) / ls.page_size);
	CHECK(FL__WS_HEADER + ls.count * 4 <= n);
	{
		uint8_t *again = malloc(FL__WS_HEADER + ls.count * 4);

		CHECK(again);
		memcpy(again, b, FL__WS_HEADER + ls.count * 4);
		fl__ls_encode(again, ls.page_size, ls.count, ls.id, ls.data_off);
		CHECK(!memcmp(again, b, FL__WS_HEADER + ls.count * 4));
		free(again);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *b;
	int mode;

	if (!size)
		return 0;
	mode = data[0] % 3;
	b = malloc(size);
	if (!b)
		return 0;
	memcpy(b, data + 1, size - 1);
	working_set(b, size - 1, mode == 1);
	memcpy(b, data + 1, size - 1);
	loading_set(b, size - 1, mode == 2);
	free(b);
	return 0;
}
