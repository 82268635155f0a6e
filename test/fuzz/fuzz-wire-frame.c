/* SPDX-License-Identifier: MIT */
/* Fuzz target: the wire protocol's incremental frame decoder, in any chunking, and re-encoding. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "net/wire.h"

/*
 * Each input is a byte stream from a peer. Three properties must hold:
 * 1. Nothing crashes, leaks or reads out of bounds (the sanitizers watch).
 * 2. Decoding it at once and in random pieces (through feed and through
 *    space/commit) gives the same frames, then the same error and message.
 * 3. Every frame decoded re-encodes, and that decodes (with CRCs checked) to
 *    the same frame.
 * Half the inputs are decoded with CRC checks off, so that mutations reach
 * the parsers behind them; which half follows from the input's hash.
 */

static uint64_t hash(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "fuzz-wire-frame: %s:%d: %s\n", __FILE__,      \
				__LINE__, #cond);                                      \
			abort();                                                       \
		}                                                                      \
	} while (0)

/* Decode the next frame through space/commit in pieces from @rng: 1, 0 at the end, or -errno. */
static int next_in_pieces(struct fl__wire_dec *d, const uint8_t *data, size_t size, size_t *at,
			  uint64_t *rng)
{
	while (*at < size) {
		size_t room, step;
		uint8_t *dst = fl__wire_dec_space(d, &room);
		int r;

		CHECK(dst && room >= 1 && room <= fl__wire_dec_need(d));
		step = next(rng) % 4 ? 1 + next(rng) % 9 : 1 + next(rng) % 5000;
		if (step > room)
			step = room;
		if (step > size - *at)
			step = size - *at;
		memcpy(dst, data + *at, step);
		*at += step;
		r = fl__wire_dec_commit(d, step);
		if (r)
			return r;
	}
	return 0;
}

static void reencode(const struct fl__wire_frame *f)
{
	static uint8_t buf[FL__WIRE_MAX_FRAME];
	struct fl__wire_dec d;
	size_t used;
	int n, r;

	n = fl__wire_encode(f, buf, sizeof(buf));
	CHECK(n >= FL__WIRE_HDR_LEN);
	CHECK(n == fl__wire_frame_size(f));
	CHECK(fl__wire_dec_init(&d, 0) == 0);
	r = fl__wire_dec_feed(&d, buf, (size_t)n, &used);
	if (r != 1)
		fprintf(stderr, "fuzz-wire-frame: re-encoded frame refused: %s\n",
			fl__wire_dec_error(&d));
	CHECK(r == 1 && used == (size_t)n);
	CHECK(fl__wire_frame_equal(f, fl__wire_dec_frame(&d)));
	fl__wire_dec_fini(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t h = hash(data, size), rng = h | 1;
	uint32_t flags = h >> 63 ? FL__WIRE_DEC_FUZZ_NO_CRC : 0;
	struct fl__wire_dec a, b;
	size_t at_a = 0, at_b = 0;
	int ra, rb;

	CHECK(fl__wire_dec_init(&a, flags) == 0);
	CHECK(fl__wire_dec_init(&b, flags) == 0);
	for (;;) {
		size_t used;

		ra = at_a < size ? fl__wire_dec_feed(&a, data + at_a, size - at_a, &used) : 0;
		if (at_a < size)
			at_a += used;
		rb = next_in_pieces(&b, data, size, &at_b, &rng);
		CHECK(ra == rb);
		if (ra != 1)
			break;
		CHECK(at_a == at_b);	/* on an error, each took what its last piece held */
		CHECK(fl__wire_frame_equal(fl__wire_dec_frame(&a), fl__wire_dec_frame(&b)));
		reencode(fl__wire_dec_frame(&a));
	}
	CHECK(!strcmp(fl__wire_dec_error(&a), fl__wire_dec_error(&b)));
	CHECK(ra == 0 || ra == -EPROTO || ra == -EBADMSG || ra == -EPROTONOSUPPORT);
	CHECK((ra < 0) == (fl__wire_dec_error(&a)[0] != 0));
	CHECK(ra < 0 || (at_a == size && at_b == size &&
			 fl__wire_dec_need(&a) == fl__wire_dec_need(&b)));
	fl__wire_dec_fini(&a);
	fl__wire_dec_fini(&b);
	return 0;
}
