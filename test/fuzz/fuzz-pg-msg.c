/* SPDX-License-Identifier: MIT */
/* Fuzz target: the page server's messages (header and payload checks), and re-encoding. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "net/pgwire.h"

/*
 * Each input is a stream of messages from a peer, client or server. What
 * must hold:
 * 1. Nothing crashes, leaks or reads out of bounds (the sanitizers watch):
 *    every length and offset is checked before it is used. The payload is
 *    copied to a buffer of exactly its length, so a read past it is caught.
 * 2. A header refused, or asking for more bytes than remain, ends the
 *    stream with an error and a message; no message is yielded after it.
 * 3. Every message accepted re-encodes, and that decodes (CRCs checked) to
 *    the same fields and bytes.
 * Half the inputs are checked without CRCs, so mutations reach the field
 * checks behind them; which half follows from the input's hash.
 */

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "fuzz-pg-msg: %s:%d: %s\n", __FILE__, __LINE__, \
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

static bool same(const struct fl__pg_msg *a, const struct fl__pg_msg *b)
{
	if (a->type != b->type || a->flags != b->flags || a->seq != b->seq)
		return false;
	switch (a->type) {
	case FL__PG_OPEN:
		return a->open.flags == b->open.flags && a->open.name_len == b->open.name_len &&
		       !memcmp(a->open.name, b->open.name, a->open.name_len);
	case FL__PG_OPENED:
		return a->opened.size == b->opened.size && a->opened.flags == b->opened.flags &&
		       a->opened.page_shift == b->opened.page_shift;
	case FL__PG_ERROR:
		return a->error.code == b->error.code && a->error.msg_len == b->error.msg_len &&
		       !memcmp(a->error.msg, b->error.msg, a->error.msg_len);
	default:
		if (a->run.offset != b->run.offset || a->run.len != b->run.len ||
		    a->run.data_len != b->run.data_len ||
		    (a->run.data_len && memcmp(a->run.data, b->run.data, a->run.data_len)))
			return false;
		return a->type != FL__PG_DATA ||
		       !memcmp(a->run.holes, b->run.holes, fl__pg_hole_words(a->run.len) * 8);
	}
}

static void reencode(const struct fl__pg_msg *m)
{
	static uint8_t meta[FL__PG_META_MAX];
	struct fl__pg_msg back;
	struct fl__pg_hdr h;
	uint8_t *whole;
	size_t data = 0;
	char why[256];
	int n;

	if (m->type == FL__PG_WRITE || m->type == FL__PG_DATA)
		data = m->run.data_len;
	n = fl__pg_encode(m, meta, sizeof(meta), why, sizeof(why));
	if (n < 0)
		fprintf(stderr, "fuzz-pg-msg: a decoded message does not encode: %s\n", why);
	CHECK(n >= FL__PG_HDR_LEN);
	whole = malloc((size_t)n + data);
	CHECK(whole);
	memcpy(whole, meta, (size_t)n);
	if (data)
		memcpy(whole + n, m->run.data, data);
	CHECK(fl__pg_parse_header(whole, FL__PG_HDR_LEN, false, &h, why, sizeof(why)) == 0);
	CHECK(h.payload_len == (size_t)n - FL__PG_HDR_LEN + data);
	if (fl__pg_parse_payload(&h, whole + FL__PG_HDR_LEN, false, &back, why, sizeof(why)))
		fprintf(stderr, "fuzz-pg-msg: a re-encoded message is refused: %s\n", why);
	CHECK(same(m, &back));
	free(whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool no_crc = hash(data, size) >> 63;
	size_t at = 0;

	while (size - at >= FL__PG_HDR_LEN) {
		struct fl__pg_hdr h;
		struct fl__pg_msg m;
		char why[256] = "";
		uint8_t *payload;
		int r;

		r = fl__pg_parse_header(data + at, FL__PG_HDR_LEN, no_crc, &h, why, sizeof(why));
		if (r > 0) {
			if ((size_t)r > size - at - FL__PG_HDR_LEN)
				return 0;	/* the stream ends inside the header */
			r = fl__pg_parse_header(data + at, FL__PG_HDR_LEN + (size_t)r, no_crc, &h,
						why, sizeof(why));
			CHECK(r <= 0);
		}
		if (r < 0) {
			CHECK(r == -EPROTO || r == -EBADMSG || r == -EPROTONOSUPPORT);
			CHECK(why[0]);
			return 0;
		}
		CHECK(h.hdr_len >= FL__PG_HDR_LEN && h.hdr_len <= FL__PG_HDR_MAX);
		CHECK(h.payload_len <= FL__PG_MAX_PAYLOAD);
		at += h.hdr_len;
		if (h.payload_len > size - at)
			return 0;	/* the stream ends inside the payload */
		payload = malloc(h.payload_len ? h.payload_len : 1);
		CHECK(payload);
		memcpy(payload, data + at, h.payload_len);
		at += h.payload_len;
		r = fl__pg_parse_payload(&h, payload, no_crc, &m, why, sizeof(why));
		if (r < 0) {
			CHECK(r == -EPROTO || r == -EBADMSG);
			CHECK(why[0]);
			free(payload);
			return 0;
		}
		CHECK(m.type == h.type && m.seq == h.seq);
		reencode(&m);
		free(payload);
	}
	return 0;
}
