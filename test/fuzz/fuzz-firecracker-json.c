/* SPDX-License-Identifier: MIT */
/* Fuzz target: the parser of Firecracker's page-fault-handler handshake (a JSON region list). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultline.h"
#include "fuzz.h"
#include "monitor/monitor-int.h"

/*
 * Each input is what Firecracker (or anyone) sent on the handler's socket.
 * Properties:
 * 1. Nothing crashes, leaks or reads out of bounds, whatever the bytes;
 *    every failure is one of the documented errors, with a message.
 * 2. What parses is a valid region list: 1 to FL_MONITOR_MAX_REGIONS
 *    regions, 4 KiB or 2 MiB pages, passing fl__mon_check_regions().
 * 3. Streaming: every beginning of a valid input that stops before its
 *    closing bracket is "incomplete" (-EAGAIN), never an error, so a
 *    monitor reading it in pieces reaches the same verdict.
 */

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "fuzz-firecracker-json: %s:%d: %s\n", __FILE__, \
				__LINE__, #cond);                                       \
			abort();                                                        \
		}                                                                       \
	} while (0)

static char err[512];

static int parse(const uint8_t *data, size_t size, struct fl__mon_hello *h)
{
	int r;

	err[0] = '\0';
	r = fl__fc_parse(data, size, h, err, sizeof(err));
	if (r < 0) {
		CHECK(r == -EAGAIN || r == -EPROTO || r == -EINVAL || r == -E2BIG || r == -ENOMEM);
		CHECK(err[0] != '\0');
	}
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl__mon_hello h, p;
	size_t close_at = 0, cuts[3];

	if (parse(data, size, &h) < 0)
		return 0;
	CHECK(h.firecracker);
	CHECK(h.n >= 1 && h.n <= FL_MONITOR_MAX_REGIONS);
	CHECK(fl__mon_check_regions(h.r, h.n, err, sizeof(err)) == 0);
	for (uint32_t i = 0; i < h.n; i++) {
		CHECK(h.r[i].page_size == 4096 || h.r[i].page_size == 2u << 20);
		CHECK(h.r[i].store == FL__MON_STORE_MONITOR);
		CHECK(h.r[i].mem == (h.r[i].page_size == 4096 ? FL_MEM_ANON : FL_MEM_HUGETLB));
		CHECK(!h.r[i].path);
	}
	fl__mon_hello_free(&h);

	/* The closing bracket is the last byte that is not white space. */
	for (size_t i = size; i-- > 0;) {
		if (data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r') {
			close_at = i;
			break;
		}
	}
	CHECK(data[close_at] == ']');
	cuts[0] = 0;
	cuts[1] = close_at / 2;
	cuts[2] = close_at;
	for (int i = 0; i < 3; i++)
		CHECK(parse(data, cuts[i], &p) == -EAGAIN);
	return 0;
}
