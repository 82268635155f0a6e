/* SPDX-License-Identifier: MIT */
/* Wire protocol tests: CRC32C, every frame type, the HELLO check, malformed input, sockets. */
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests.h"
#include "util.h"

#include "net/crc32c.h"
#include "net/sock.h"
#include "net/wire.h"

#define PG 4096u
#define MiB (1024u * 1024)

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random(void *p, size_t n)
{
	uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)rnd();
}

static double now(void)
{
	return (double)fl__now_ns() / 1e9;
}

/* A bit-at-a-time CRC32C: the definition every implementation is checked against. */
static uint32_t crc_ref(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc >> 1 ^ (0x82F63B78u & -(crc & 1));
	}
	return ~crc;
}

/* Sample frames of every type; @pagebuf holds 4 pages of data. */
static const struct fl__wire_region sample_regions[] = {
	{ .id = 1, .page_shift = 12, .start = 0x7f0000000000ull, .length = 64ull << 20 },
	{ .id = 7, .page_shift = 21, .start = 0x7f1000000000ull, .length = 8ull << 20 },
	{ .id = 9, .page_shift = 12, .start = 0x10000, .length = PG },
};

static struct fl__wire_hello sample_hello(uint8_t role)
{
	struct fl__wire_hello h = {
		.role = role, .version_min = 1, .version_max = 1, .page_shift = 12,
		.flags = FL__WIRE_HELLO_TLS,
		.features = FL__WIRE_FEAT_URGENT_CHANNEL | FL__WIRE_FEAT_RESUME | 1ull << 40,
		.n_regions = role == FL__WIRE_ROLE_SOURCE ? 3 : 0,
		.regions = role == FL__WIRE_ROLE_SOURCE ? sample_regions : NULL,
		.agent = "faultline test", .agent_len = 14,
	};

	for (int i = 0; i < FL__WIRE_SESSION_LEN; i++)
		h.session_id[i] = (uint8_t)(0xa0 + i);
	for (int i = 0; i < FL__WIRE_NONCE_LEN; i++)
		h.nonce[i] = (uint8_t)(role * 31 + i * 7);
	return h;
}

static uint8_t pagebuf[4 * PG];
static uint8_t bitmap_bits[24];
static struct fl__wire_page sample_page_table[6];

/* Frame @i of the sample set (NSAMPLES of them, every type at least once). */
#define NSAMPLES 12
static struct fl__wire_frame sample(int i, struct fl__wire_hello *hello_store)
{
	struct fl__wire_frame f = { .version = 1, .seq = 100 + (uint64_t)i };

	for (size_t k = 0; k < sizeof(pagebuf); k++)
		pagebuf[k] = (uint8_t)(k * 13 + k / PG);
	memset(bitmap_bits, 0, sizeof(bitmap_bits));
	bitmap_bits[0] = 0xa5;
	bitmap_bits[17] = 0x01;	/* bit 136 of 137 */
	switch (i) {
	case 0:
		*hello_store = sample_hello(FL__WIRE_ROLE_SOURCE);
		f.type = FL__WIRE_HELLO;
		f.hello = *hello_store;
		f.seq = 0;
		break;
	case 1:
		f.type = FL__WIRE_HELLO;
		f.hello = sample_hello(FL__WIRE_ROLE_DESTINATION);
		f.seq = 0;
		break;
	case 2:
		f.type = FL__WIRE_PAGES;
		sample_page_table[0] = (struct fl__wire_page){ FL__WIRE_PAGE_DATA, 0, pagebuf };
		sample_page_table[1] = (struct fl__wire_page){ FL__WIRE_PAGE_ZERO, 0, NULL };
		sample_page_table[2] = (struct fl__wire_page){ FL__WIRE_PAGE_DATA, 0,
							      pagebuf + PG };
		sample_page_table[3] = (struct fl__wire_page){ FL__WIRE_PAGE_DATA, 0,
							      pagebuf + 3 * PG };
		sample_page_table[4] = (struct fl__wire_page){ FL__WIRE_PAGE_ZERO, 0, NULL };
		sample_page_table[5] = (struct fl__wire_page){ FL__WIRE_PAGE_DATA, 0,
							      pagebuf + 2 * PG };
		f.pages = (struct fl__wire_pages){ .region_id = 1, .page_shift = 12, .count = 6,
						   .first = 1000, .pages = sample_page_table };
		break;
	case 3:
		f.type = FL__WIRE_PAGES;
		f.flags = FL__WIRE_F_URGENT;
		f.seq = 77;
		sample_page_table[0] = (struct fl__wire_page){ FL__WIRE_PAGE_ZERO, 0, NULL };
		f.pages = (struct fl__wire_pages){ .region_id = 7, .page_shift = 21, .count = 1,
						   .first = 3, .pages = sample_page_table };
		break;
	case 4:
		f.type = FL__WIRE_REQUEST;
		f.seq = 77;
		f.request = (struct fl__wire_request){ .region_id = 1, .count = 16, .index = 4242 };
		break;
	case 5:
		f.type = FL__WIRE_RECEIVED_BITMAP;
		f.flags = FL__WIRE_F_LAST;
		f.bitmap = (struct fl__wire_bitmap){ .region_id = 1, .nbits = 137, .offset = 640,
						     .bits = bitmap_bits };
		break;
	case 6:
		f.type = FL__WIRE_STATE_BLOB;
		f.blob = (struct fl__wire_blob){ .total = 100, .offset = 40, .len = 60,
						 .data = pagebuf };
		break;
	case 7:
		f.type = FL__WIRE_COMPLETE;
		f.complete.pages = 16384;
		break;
	case 8:
		f.type = FL__WIRE_ERROR;
		f.error = (struct fl__wire_error){ .code = FL__WIRE_ERR_AUTH, .msg_len = 21,
						   .msg = "authentication failed" };
		break;
	case 9:
		f.type = FL__WIRE_PING;
		break;
	case 10:
		f.type = FL__WIRE_PONG;
		break;
	default:
		f.type = FL__WIRE_STATE_BLOB;	/* the empty blob */
		f.blob = (struct fl__wire_blob){ 0 };
		break;
	}
	return f;
}

/* Encode @f into a new buffer. */
static uint8_t *enc(const struct fl__wire_frame *f, size_t *ret_len)
{
	int n = fl__wire_frame_size(f);
	uint8_t *b;

	T_ASSERT_OK(n);
	b = malloc((size_t)n);
	T_ASSERT(b);
	T_ASSERT_EQ(fl__wire_encode(f, b, (size_t)n), n);
	*ret_len = (size_t)n;
	return b;
}

static void fix_hdr_crc(uint8_t *b)
{
	uint16_t hl = (uint16_t)(b[8] | b[9] << 8);
	uint32_t c = fl__crc32c(0, b, 28);

	if (hl >= 32 && hl <= 64)	/* others are refused before the CRC is looked at */
		c = fl__crc32c(c, b + 32, hl - 32u);
	memcpy(b + 28, &c, 4);
}

/* Recompute both CRCs of the frame at @b after a test changed it on purpose. */
static void fix_crcs(uint8_t *b)
{
	uint32_t plen, mlen, c;

	memcpy(&plen, b + 12, 4);
	mlen = plen;
	if (b[5] == FL__WIRE_PAGES)
		mlen = FL__WIRE_PAGES_FIXED + (uint32_t)(b[36] | b[37] << 8) * FL__WIRE_PAGE_ENTRY;
	c = fl__crc32c(0, b + 32, mlen);
	memcpy(b + 24, &c, 4);
	fix_hdr_crc(b);
}

/* Decode @len bytes at once with a fresh decoder: the result, and its message in @msg. */
static int decode_once(const uint8_t *b, size_t len, char *msg, size_t cap)
{
	struct fl__wire_dec d;
	size_t used;
	int r;

	T_ASSERT_OK(fl__wire_dec_init(&d, 0));
	r = fl__wire_dec_feed(&d, b, len, &used);
	if (msg)
		snprintf(msg, cap, "%s", fl__wire_dec_error(&d));
	if (r == 1)
		T_ASSERT_EQ(used, len);
	fl__wire_dec_fini(&d);
	return r;
}

/* Like decode_once, one byte at a time: the same result and message. */
static int decode_bytewise(const uint8_t *b, size_t len, char *msg, size_t cap)
{
	struct fl__wire_dec d;
	int r = 0;

	T_ASSERT_OK(fl__wire_dec_init(&d, 0));
	for (size_t i = 0; i < len && !r; i++) {
		size_t used;

		r = fl__wire_dec_feed(&d, b + i, 1, &used);
		T_ASSERT_EQ(used, 1);
	}
	if (msg)
		snprintf(msg, cap, "%s", fl__wire_dec_error(&d));
	fl__wire_dec_fini(&d);
	return r;
}

/* @b must fail with @err at once and byte by byte, with a message holding @what. */
static void expect_bad(const uint8_t *b, size_t len, int err, const char *what, int line)
{
	char m1[256], m2[256];
	int r1 = decode_once(b, len, m1, sizeof(m1));
	int r2 = decode_bytewise(b, len, m2, sizeof(m2));

	if (r1 != -err || r2 != -err)
		t_fail(__FILE__, line, "expected -%d, got %d and %d (%s)", err, r1, r2, m1);
	if (strcmp(m1, m2))
		t_fail(__FILE__, line, "messages differ: \"%s\" / \"%s\"", m1, m2);
	if (what && !strstr(m1, what))
		t_fail(__FILE__, line, "message \"%s\" lacks \"%s\"", m1, what);
}
#define EXPECT_BAD(b, len, err, what) expect_bad(b, len, err, what, __LINE__)

/* ----------------------------------------------------------------- CRC32C */

TEST(wire_crc32c_vectors)
{
	static const enum fl__crc32c_impl impls[] = { FL__CRC32C_SW, FL__CRC32C_HW,
						      FL__CRC32C_HW3 };
	uint8_t zeros[32] = { 0 }, ones[32], up[32], down[32];
	size_t big = 3 * MiB + 123;
	uint8_t *buf = malloc(big + 16);

	T_ASSERT(buf);
	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++) {
		up[i] = (uint8_t)i;
		down[i] = (uint8_t)(31 - i);
	}
	fill_random(buf, big + 16);
	T_ASSERT(fl__crc32c_impl_available(FL__CRC32C_SW));
	for (size_t k = 0; k < sizeof(impls) / sizeof(impls[0]); k++) {
		enum fl__crc32c_impl im = impls[k];

		if (!fl__crc32c_impl_available(im))
			continue;
		/* The check value, and RFC 3720's iSCSI examples (B.4). */
		T_ASSERT_EQ(fl__crc32c_with(im, 0, "123456789", 9), 0xE3069283u);
		T_ASSERT_EQ(fl__crc32c_with(im, 0, "", 0), 0);
		T_ASSERT_EQ(fl__crc32c_with(im, 0, zeros, 32), 0x8A9136AAu);
		T_ASSERT_EQ(fl__crc32c_with(im, 0, ones, 32), 0x62A8AB43u);
		T_ASSERT_EQ(fl__crc32c_with(im, 0, up, 32), 0x46DD794Eu);
		T_ASSERT_EQ(fl__crc32c_with(im, 0, down, 32), 0x113FDB5Cu);
		/* Every length around the 3 x 1360 blocks, at every alignment. */
		for (size_t n = 0; n < 9000; n += 1 + n / 64)
			for (size_t off = 0; off < 8; off += 3)
				T_ASSERT_EQ(fl__crc32c_with(im, 0, buf + off, n),
					    crc_ref(0, buf + off, n));
		/* Chaining: crc(A || B) = crc(crc(A), B), split anywhere. */
		for (int i = 0; i < 20; i++) {
			size_t n = rnd() % 20000, cut = n ? rnd() % n : 0;
			uint32_t whole = fl__crc32c_with(im, 0, buf, n);

			T_ASSERT_EQ(fl__crc32c_with(im, fl__crc32c_with(im, 0, buf, cut),
						    buf + cut, n - cut), whole);
		}
		/* A large buffer: every implementation agrees with the software one. */
		T_ASSERT_EQ(fl__crc32c_with(im, 0, buf + 5, big),
			    fl__crc32c_with(FL__CRC32C_SW, 0, buf + 5, big));
	}
	T_ASSERT_EQ(fl__crc32c(0, buf + 1, big), fl__crc32c_with(FL__CRC32C_SW, 0, buf + 1, big));
	T_ASSERT_EQ(fl__crc32c(0, buf, 100), crc_ref(0, buf, 100));
	T_ASSERT(strlen(fl__crc32c_impl_name()) > 0);
	free(buf);
}

/* Prints what each checksum costs here (lines starting with "#" are comments to the runner). */
/* ------------------------------------------------------------ round trips */

TEST(wire_roundtrip_every_type)
{
	bool seen[FL__WIRE_TYPE_MAX + 1] = { false };
	struct fl__wire_hello hs;

	for (int i = 0; i < NSAMPLES; i++) {
		struct fl__wire_frame f = sample(i, &hs);
		const struct fl__wire_frame *g;
		struct fl__wire_dec d;
		size_t len, used;
		uint8_t *b = enc(&f, &len);

		seen[f.type] = true;
		T_ASSERT_OK(fl__wire_dec_init(&d, 0));
		T_ASSERT_EQ(fl__wire_dec_need(&d), FL__WIRE_HDR_LEN);
		T_ASSERT_EQ(fl__wire_dec_feed(&d, b, len, &used), 1);
		T_ASSERT_EQ(used, len);
		g = fl__wire_dec_frame(&d);
		T_ASSERT(g);
		T_ASSERT(fl__wire_frame_equal(&f, g));
		T_ASSERT_EQ(g->type, f.type);
		if (f.type == FL__WIRE_PAGES) {
			/* The decoder verified each page's CRC and reports it; data is aligned. */
			for (uint32_t k = 0; k < g->pages.count; k++) {
				const struct fl__wire_page *p = &g->pages.pages[k];

				if (p->flags == FL__WIRE_PAGE_ZERO) {
					T_ASSERT(!p->data);
					T_ASSERT_EQ(p->crc, 0);
					continue;
				}
				T_ASSERT_EQ(p->crc, fl__crc32c(0, p->data, PG));
				T_ASSERT_EQ((uintptr_t)p->data % PG, 0);
			}
		}
		if (f.type == FL__WIRE_HELLO)
			T_ASSERT(!strcmp(g->hello.agent, "faultline test"));
		if (f.type == FL__WIRE_ERROR)
			T_ASSERT(!strcmp(g->error.msg, "authentication failed"));
		/* The frame stays until the next call; then the next one decodes the same. */
		T_ASSERT_EQ(fl__wire_dec_feed(&d, b, len, &used), 1);
		T_ASSERT(fl__wire_frame_equal(&f, fl__wire_dec_frame(&d)));
		fl__wire_dec_fini(&d);

		/* The writev form gives the same bytes as the copying encoder. */
		if (f.type == FL__WIRE_PAGES) {
			uint8_t meta[FL__WIRE_PAGES_META_MAX], *flat = malloc(len);
			struct iovec iov[8];
			size_t cnt, at = 0;

			T_ASSERT(flat);
			T_ASSERT_EQ(fl__wire_encode_pages_iov(&f, meta, sizeof(meta), iov, 8, &cnt),
				    len);
			for (size_t k = 0; k < cnt; k++) {
				memcpy(flat + at, iov[k].iov_base, iov[k].iov_len);
				at += iov[k].iov_len;
			}
			T_ASSERT_EQ(at, len);
			T_ASSERT(!memcmp(flat, b, len));
			/* Pages 2 and 3 of the first sample are adjacent in memory: one entry. */
			if (f.pages.count == 6)
				T_ASSERT_EQ(cnt, 4);
			free(flat);
		}
		free(b);
	}
	for (int t = 1; t <= FL__WIRE_TYPE_MAX; t++)
		T_ASSERT(seen[t] || t == FL__WIRE_RETIRED_AUTH);
}

/* A header longer than 32 bytes (a later revision's): its extra bytes are skipped, not refused. */
TEST(wire_header_extension_skipped)
{
	struct fl__wire_hello hs;
	struct fl__wire_frame f = sample(4, &hs);
	uint8_t b[256], *plain;
	size_t len;
	char msg[256];

	plain = enc(&f, &len);
	memcpy(b, plain, 32);
	memset(b + 32, 0xee, 16);
	memcpy(b + 48, plain + 32, len - 32);
	b[8] = 48;
	fix_hdr_crc(b);
	T_ASSERT_EQ(decode_once(b, len + 16, msg, sizeof(msg)), 1);
	T_ASSERT_EQ(decode_bytewise(b, len + 16, msg, sizeof(msg)), 1);
	/* The extension is covered by the header CRC. */
	b[40] ^= 1;
	EXPECT_BAD(b, len + 16, EBADMSG, "header checksum");
	free(plain);
}

/* -------------------------------------------------------------- malformed */

TEST(wire_malformed_header)
{
	struct fl__wire_hello hs;
	struct fl__wire_frame f = sample(4, &hs);
	size_t len;
	uint8_t *good = enc(&f, &len), b[64];
	struct fl__wire_dec d;
	size_t used;

	T_ASSERT(len <= sizeof(b));
	/* A stranger is turned away at its fourth byte: no waiting for 32 bytes. */
	T_ASSERT_OK(fl__wire_dec_init(&d, 0));
	T_ASSERT_EQ(fl__wire_dec_feed(&d, "GET", 3, &used), 0);
	T_ASSERT_ERR(fl__wire_dec_feed(&d, " / HTTP/1.1\r\n", 13, &used), EPROTO);
	T_ASSERT(strstr(fl__wire_dec_error(&d), "not a faultline wire stream"));
	T_ASSERT(strstr(fl__wire_dec_error(&d), "\"GET \""));
	/* Sticky: the connection is over. */
	T_ASSERT_ERR(fl__wire_dec_feed(&d, good, len, &used), EPROTO);
	T_ASSERT_EQ(fl__wire_dec_need(&d), 0);
	T_ASSERT(!fl__wire_dec_space(&d, &used));
	fl__wire_dec_fini(&d);

	memcpy(b, good, len);
	b[3] = 'X';
	EXPECT_BAD(b, len, EPROTO, "\\x89FLX");

	/* Another version: refused at byte 4, before its header is even complete. */
	memcpy(b, good, len);
	b[4] = 2;
	EXPECT_BAD(b, 5, EPROTONOSUPPORT, "wire version 2; this side speaks 1..1");
	EXPECT_BAD(b, len, EPROTONOSUPPORT, "version 2");
	b[4] = 0;
	EXPECT_BAD(b, len, EPROTONOSUPPORT, "version 0");

	/* Header length: < 32, not a multiple of 8, > 256. */
	static const uint16_t hls[] = { 0, 24, 33, 264, 0xffff };
	for (size_t i = 0; i < sizeof(hls) / sizeof(hls[0]); i++) {
		memcpy(b, good, len);
		b[8] = (uint8_t)hls[i];
		b[9] = (uint8_t)(hls[i] >> 8);
		fix_hdr_crc(b);
		EXPECT_BAD(b, len, EPROTO, "header length");
	}

	/* One flipped bit anywhere in the header: a checksum mismatch (or an earlier refusal). */
	for (int bit = 8 * 6; bit < 8 * 32; bit++) {
		memcpy(b, good, len);
		b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		if (bit / 8 == 8 || bit / 8 == 9)
			continue;	/* the header length: covered above */
		EXPECT_BAD(b, len, EBADMSG, "checksum mismatch");
	}

	memcpy(b, good, len);
	b[10] = 1;
	fix_hdr_crc(b);
	EXPECT_BAD(b, len, EPROTO, "reserved header bytes");
	memcpy(b, good, len);
	b[5] = 99;
	fix_hdr_crc(b);
	EXPECT_BAD(b, len, EPROTO, "unknown frame type 99");
	memcpy(b, good, len);
	b[5] = 0;
	fix_hdr_crc(b);
	EXPECT_BAD(b, len, EPROTO, "unknown frame type 0");
	/* The AUTH frame of peers before 0.3: refused, and named. */
	memcpy(b, good, len);
	b[5] = FL__WIRE_RETIRED_AUTH;
	fix_hdr_crc(b);
	EXPECT_BAD(b, len, EPROTO, "unknown frame type 2 (AUTH");
	memcpy(b, good, len);
	b[6] = FL__WIRE_F_URGENT;	/* not allowed on REQUEST */
	fix_hdr_crc(b);
	EXPECT_BAD(b, len, EPROTO, "REQUEST: unknown flags 0x1");
	memcpy(b, good, len);
	b[7] = 0x80;
	fix_hdr_crc(b);
	EXPECT_BAD(b, len, EPROTO, "unknown flags 0x8000");

	/* A payload length that lies: refused from the header alone, whatever follows. */
	static const uint32_t plens[] = { 0, 15, 17, 1u << 20, 0xffffffffu };
	for (size_t i = 0; i < sizeof(plens) / sizeof(plens[0]); i++) {
		memcpy(b, good, len);
		memcpy(b + 12, &plens[i], 4);
		fix_hdr_crc(b);
		EXPECT_BAD(b, 32, EPROTO, "REQUEST payload of");
	}
	/* The payload checksum. */
	memcpy(b, good, len);
	b[40] ^= 4;
	EXPECT_BAD(b, len, EBADMSG, "REQUEST payload checksum mismatch");

	/* After the handshake, frames must carry the agreed version (ERROR always says 1). */
	T_ASSERT_OK(fl__wire_dec_init(&d, 0));
	fl__wire_dec_set_version(&d, 1);
	T_ASSERT_EQ(fl__wire_dec_feed(&d, good, len, &used), 1);
	fl__wire_dec_set_version(&d, 2);	/* as if a later version had been agreed */
	{
		struct fl__wire_frame e = sample(8, &hs);
		size_t elen;
		uint8_t *eb = enc(&e, &elen);

		T_ASSERT_EQ(fl__wire_dec_feed(&d, eb, elen, &used), 1);
		free(eb);
	}
	T_ASSERT_ERR(fl__wire_dec_feed(&d, good, len, &used), EPROTO);
	T_ASSERT(strstr(fl__wire_dec_error(&d), "wire version 1, but this connection agreed "
			"on 2"));
	fl__wire_dec_fini(&d);
	free(good);
}

/* Encode sample @i, let @patch change it, fix the CRCs, and expect @err with @what. */
static void patched(int i, void (*patch)(uint8_t *b, size_t *len), int err, const char *what,
		    int line)
{
	struct fl__wire_hello hs;
	struct fl__wire_frame f = sample(i, &hs);
	size_t len;
	uint8_t *good = enc(&f, &len), *b = calloc(1, len + 64);

	T_ASSERT(b);
	memcpy(b, good, len);
	patch(b, &len);
	fix_crcs(b);
	expect_bad(b, len, err, what, line);
	free(b);
	free(good);
}
#define PATCHED(i, fn, err, what) patched(i, fn, err, what, __LINE__)

static void set32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void set64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

/* Offsets below are payload offsets + 32 (the header). PAGES sample 2: 6 pages, 4 with data. */
static void pg_count_0(uint8_t *b, size_t *l) { (void)l; b[36] = 0; b[37] = 0; }
static void pg_count_513(uint8_t *b, size_t *l) { (void)l; b[36] = 1; b[37] = 2; }
static void pg_count_more(uint8_t *b, size_t *l) { (void)l; b[36] = 7; }
static void pg_count_2(uint8_t *b, size_t *l) { (void)l; b[36] = 2; }
static void pg_shift_11(uint8_t *b, size_t *l) { (void)l; b[38] = 11; }
static void pg_shift_22(uint8_t *b, size_t *l) { (void)l; b[38] = 22; }
static void pg_reserved(uint8_t *b, size_t *l) { (void)l; b[39] = 1; }
static void pg_first_wraps(uint8_t *b, size_t *l) { (void)l; set64(b + 40, (1ull << 52) - 3); }
static void pg_flags_both(uint8_t *b, size_t *l) { (void)l; b[48 + 8 * 1 + 4] = 3; }
static void pg_flags_none(uint8_t *b, size_t *l) { (void)l; b[48 + 8 * 1 + 4] = 0; }
static void pg_entry_reserved(uint8_t *b, size_t *l) { (void)l; b[48 + 8 * 2 + 7] = 1; }
static void pg_zero_with_crc(uint8_t *b, size_t *l) { (void)l; b[48 + 8 * 1] = 1; }
/* The table says 5 data pages, the payload carries 4. */
static void pg_zero_to_data(uint8_t *b, size_t *l) { (void)l; b[48 + 8 * 1 + 4] = 1; }
/* The table says 3 data pages, the payload carries 4. */
static void pg_data_to_zero(uint8_t *b, size_t *l)
{
	(void)l;
	b[48 + 8 * 0 + 4] = 2;
	set32(b + 48, 0);
}
/* The payload length claims one page less than the table lists, and the frame ends there. */
static void pg_short(uint8_t *b, size_t *l)
{
	uint32_t plen;

	memcpy(&plen, b + 12, 4);
	plen -= PG;
	set32(b + 12, plen);
	*l -= PG;
}
/* Half a page short: not a whole number of pages. */
static void pg_ragged(uint8_t *b, size_t *l)
{
	uint32_t plen;

	memcpy(&plen, b + 12, 4);
	set32(b + 12, plen - 100);
	*l -= 100;
}

static void hello_role(uint8_t *b, size_t *l) { (void)l; b[32] = 3; }
static void hello_versions(uint8_t *b, size_t *l) { (void)l; b[33] = 2; b[34] = 1; }
static void hello_version0(uint8_t *b, size_t *l) { (void)l; b[33] = 0; }
static void hello_shift(uint8_t *b, size_t *l) { (void)l; b[35] = 30; }
static void hello_flags(uint8_t *b, size_t *l) { (void)l; b[36] |= 0x80; }
static void hello_nregions(uint8_t *b, size_t *l) { (void)l; b[32 + 64] = 4; }
static void hello_nregions_max(uint8_t *b, size_t *l) { (void)l; b[32 + 64] = 1; b[32 + 65] = 4; }
static void hello_agent_len(uint8_t *b, size_t *l) { (void)l; b[32 + 66] = 13; }
static void hello_reserved(uint8_t *b, size_t *l) { (void)l; b[32 + 70] = 1; }
static void hello_region_unaligned(uint8_t *b, size_t *l) { (void)l; b[32 + 72 + 8] = 1; }
static void hello_region_empty(uint8_t *b, size_t *l) { (void)l; set64(b + 32 + 72 + 16, 0); }
static void hello_region_wraps(uint8_t *b, size_t *l)
{
	(void)l;
	set64(b + 32 + 72 + 8, ~0ull << 12);
}
static void hello_region_shift(uint8_t *b, size_t *l) { (void)l; b[32 + 72 + 4] = 22; }
static void hello_region_dup(uint8_t *b, size_t *l) { (void)l; b[32 + 72 + 24] = 1; }
static void hello_region_reserved(uint8_t *b, size_t *l) { (void)l; b[32 + 72 + 6] = 1; }
static void hello_agent_ctrl(uint8_t *b, size_t *l) { (void)l; b[32 + 72 + 72 + 3] = '\n'; }

static void req_count0(uint8_t *b, size_t *l) { (void)l; set32(b + 36, 0); }
static void req_count_big(uint8_t *b, size_t *l) { (void)l; set32(b + 36, 513); }
static void req_index_wraps(uint8_t *b, size_t *l) { (void)l; set64(b + 40, ~0ull - 2); }
static void bm_offset(uint8_t *b, size_t *l) { (void)l; set64(b + 40, 65); }
static void bm_tail_bit(uint8_t *b, size_t *l) { (void)l; b[48 + 17] |= 0x02; }
static void bm_nbits0(uint8_t *b, size_t *l) { (void)l; set32(b + 36, 0); }
static void bm_nbits_lies(uint8_t *b, size_t *l) { (void)l; set32(b + 36, 300); }
static void bm_nbits_huge(uint8_t *b, size_t *l) { (void)l; set32(b + 36, 0xffffffc1u); }
static void blob_past_total(uint8_t *b, size_t *l) { (void)l; set32(b + 32, 99); }
static void blob_len_lies(uint8_t *b, size_t *l) { (void)l; set32(b + 40, 59); }
static void blob_total_huge(uint8_t *b, size_t *l) { (void)l; set32(b + 32, 0xffffffffu); }
static void blob_reserved(uint8_t *b, size_t *l) { (void)l; b[47] = 1; }
static void err_len_lies(uint8_t *b, size_t *l) { (void)l; b[36] = 22; }
static void err_ctrl(uint8_t *b, size_t *l) { (void)l; b[45] = 0x1b; }
static void err_reserved(uint8_t *b, size_t *l) { (void)l; b[39] = 1; }

TEST(wire_malformed_payload)
{
	PATCHED(2, pg_count_0, EPROTO, "0 pages, outside 1..512");
	PATCHED(2, pg_count_513, EPROTO, "513 pages, outside 1..512");
	PATCHED(2, pg_count_more, EPROTO, "16376 bytes after the table are not a whole number");
	PATCHED(3, pg_count_2, EPROTO, "payload of 24 bytes cannot hold the table of 2 pages");
	PATCHED(2, pg_shift_11, EPROTO, "page shift 11");
	PATCHED(2, pg_shift_22, EPROTO, "page shift 22");
	PATCHED(2, pg_reserved, EPROTO, "reserved descriptor byte");
	PATCHED(2, pg_first_wraps, EPROTO, "past the end of the address space");
	PATCHED(2, pg_flags_both, EPROTO, "page 1: flags 0x3");
	PATCHED(2, pg_flags_none, EPROTO, "page 1: flags 0x0");
	PATCHED(2, pg_entry_reserved, EPROTO, "page 2: reserved");
	PATCHED(2, pg_zero_with_crc, EPROTO, "page 1 is ZERO but has CRC");
	PATCHED(2, pg_zero_to_data, EPROTO, "lists 5 data pages (20480 bytes) but the payload "
		"carries 16384");
	PATCHED(2, pg_data_to_zero, EPROTO, "lists 3 data pages");
	PATCHED(2, pg_short, EPROTO, "lists 4 data pages");
	PATCHED(2, pg_ragged, EPROTO, "not a whole number");
	PATCHED(0, hello_role, EPROTO, "HELLO: role 3");
	PATCHED(0, hello_versions, EPROTO, "version range 2..1 is empty");
	PATCHED(0, hello_version0, EPROTO, "version range 0..1");
	PATCHED(0, hello_shift, EPROTO, "page shift 30");
	PATCHED(0, hello_flags, EPROTO, "unknown HELLO flags 0x80");
	PATCHED(0, hello_nregions, EPROTO, "4 regions and an agent string of 14 bytes do not");
	PATCHED(0, hello_nregions_max, EPROTO, "1025 regions");
	PATCHED(0, hello_agent_len, EPROTO, "agent string of 13 bytes do not");
	PATCHED(0, hello_reserved, EPROTO, "HELLO: reserved bytes 68-71");
	PATCHED(0, hello_region_unaligned, EPROTO, "region 1: start 0x7f0000000001");
	PATCHED(0, hello_region_empty, EPROTO, "non-zero multiple");
	PATCHED(0, hello_region_wraps, EPROTO, "wraps");
	PATCHED(0, hello_region_shift, EPROTO, "region 1: page shift 22");
	PATCHED(0, hello_region_dup, EPROTO, "region id 1 appears twice");
	PATCHED(0, hello_region_reserved, EPROTO, "region 0: reserved");
	PATCHED(0, hello_agent_ctrl, EPROTO, "agent string is not printable");
	PATCHED(4, req_count0, EPROTO, "0 pages requested");
	PATCHED(4, req_count_big, EPROTO, "513 pages requested");
	PATCHED(4, req_index_wraps, EPROTO, "past the end");
	PATCHED(5, bm_offset, EPROTO, "bit offset 65");
	PATCHED(5, bm_tail_bit, EPROTO, "bit 137 is set, past the 137 bits");
	PATCHED(5, bm_nbits0, EPROTO, "0 bits do not make a payload");
	PATCHED(5, bm_nbits_lies, EPROTO, "300 bits do not make a payload of 40 bytes");
	PATCHED(5, bm_nbits_huge, EPROTO, "4294967233 bits");
	PATCHED(6, blob_past_total, EPROTO, "state chunk 40 + 60 runs past the blob's 99 bytes");
	PATCHED(6, blob_len_lies, EPROTO, "a chunk of 59 bytes in a payload of 76");
	PATCHED(6, blob_total_huge, EPROTO, "state blob of 4294967295 bytes");
	PATCHED(6, blob_reserved, EPROTO, "STATE_BLOB: reserved");
	PATCHED(8, err_len_lies, EPROTO, "a message of 22 bytes in a payload of 29");
	PATCHED(8, err_ctrl, EPROTO, "not printable");
	PATCHED(8, err_reserved, EPROTO, "ERROR: reserved");
}

/* A truncated frame is not an error, just unfinished: need() says how much is missing. */
TEST(wire_truncated_and_trailing)
{
	struct fl__wire_hello hs;
	struct fl__wire_frame f = sample(2, &hs);
	struct fl__wire_dec d;
	size_t len, used;
	uint8_t *b = enc(&f, &len), *two = malloc(2 * len + 4);

	T_ASSERT(two);
	for (size_t cut = 0; cut < len; cut += 1 + cut / 3) {
		T_ASSERT_OK(fl__wire_dec_init(&d, 0));
		T_ASSERT_EQ(fl__wire_dec_feed(&d, b, cut, &used), 0);
		T_ASSERT_EQ(used, cut);
		T_ASSERT(!fl__wire_dec_frame(&d));
		T_ASSERT_EQ(fl__wire_dec_at_boundary(&d), cut == 0);
		/* Before the header is in, need() covers the header; then the whole frame. */
		T_ASSERT_EQ(fl__wire_dec_need(&d), cut < 32 ? 32 - cut : len - cut);
		T_ASSERT_EQ(fl__wire_dec_feed(&d, b + cut, len - cut, &used), 1);
		T_ASSERT_EQ(used, len - cut);
		T_ASSERT(fl__wire_dec_at_boundary(&d));
		fl__wire_dec_fini(&d);
	}
	/* Two frames back to back, then 4 bytes of garbage: both frames, then the error. */
	memcpy(two, b, len);
	memcpy(two + len, b, len);
	memcpy(two + 2 * len, "\x89" "FXW", 4);
	T_ASSERT_OK(fl__wire_dec_init(&d, 0));
	T_ASSERT_EQ(fl__wire_dec_feed(&d, two, 2 * len + 4, &used), 1);
	T_ASSERT_EQ(used, len);
	T_ASSERT_EQ(fl__wire_dec_feed(&d, two + len, len + 4, &used), 1);
	T_ASSERT_EQ(used, len);
	T_ASSERT_ERR(fl__wire_dec_feed(&d, two + 2 * len, 4, &used), EPROTO);
	T_ASSERT(strstr(fl__wire_dec_error(&d), "frame 2 at stream byte"));
	fl__wire_dec_fini(&d);
	free(two);
	free(b);
}

/* One byte changed in one page: -EBADMSG that names the page, at once and byte by byte. */
TEST(wire_page_checksum_names_page)
{
	static uint8_t data[8 * PG];
	struct fl__wire_page pages[8];
	struct fl__wire_frame f = {
		.version = 1, .type = FL__WIRE_PAGES, .seq = 5,
		.pages = { .region_id = 3, .page_shift = 12, .count = 8, .first = 1024,
			   .pages = pages },
	};
	size_t len;
	uint8_t *b;
	char want[96];

	fill_random(data, sizeof(data));
	for (int i = 0; i < 8; i++)
		pages[i] = (struct fl__wire_page){ FL__WIRE_PAGE_DATA, 0, data + i * PG };
	pages[2] = (struct fl__wire_page){ FL__WIRE_PAGE_ZERO, 0, NULL };
	b = enc(&f, &len);
	T_ASSERT_EQ(decode_once(b, len, NULL, 0), 1);
	/* Page 5 is the fifth data page (page 2 is zero): its bytes start at data page 4. */
	b[len - 3 * PG + 1234] ^= 0x10;
	snprintf(want, sizeof(want), "page 5 of 8 (region 3, page index %u)", 1024 + 5);
	EXPECT_BAD(b, len, EBADMSG, want);
	b[len - 3 * PG + 1234] ^= 0x10;
	/* The last byte of the last page. */
	b[len - 1] ^= 1;
	EXPECT_BAD(b, len, EBADMSG, "page 7 of 8 (region 3, page index 1031)");
	b[len - 1] ^= 1;
	/* A page's CRC in the table: the table's own checksum catches it first. */
	b[32 + 16 + 8 * 4] ^= 1;
	EXPECT_BAD(b, len, EBADMSG, "PAGES payload checksum mismatch");
	/* Unless the table's checksum is made to match: then the page itself does. */
	fix_crcs(b);
	EXPECT_BAD(b, len, EBADMSG, "page 4 of 8");
	free(b);
}

/* ------------------------------------------------------ incremental decoding */

/* A random valid frame of any type, into @buf; its length. */
static size_t random_frame(uint8_t *buf, size_t cap, uint8_t *pages_mem)
{
	static struct fl__wire_page table[FL__WIRE_MAX_PAGES];
	struct fl__wire_hello hs;
	struct fl__wire_frame f = sample((int)(rnd() % NSAMPLES), &hs);
	int n;

	f.seq = rnd();
	if (f.type == FL__WIRE_PAGES && rnd() % 2) {
		uint32_t count = 1 + (uint32_t)(rnd() % 300);

		for (uint32_t i = 0; i < count; i++) {
			bool zero = rnd() % 4 == 0;

			table[i] = (struct fl__wire_page){
				zero ? FL__WIRE_PAGE_ZERO : FL__WIRE_PAGE_DATA, 0,
				zero ? NULL : pages_mem + (rnd() % 64) * PG };
		}
		f.pages = (struct fl__wire_pages){ .region_id = (uint32_t)rnd(), .page_shift = 12,
						   .count = count, .first = rnd() % 100000,
						   .pages = table };
	}
	n = fl__wire_encode(&f, buf, cap);
	T_ASSERT_OK(n);
	return (size_t)n;
}

TEST(wire_incremental_equals_at_once)
{
	size_t cap = 24 * MiB, len = 0, nframes = 0;
	uint8_t *stream = malloc(cap), *pages_mem = malloc(64 * PG);
	struct fl__wire_dec a, b;
	size_t at_a = 0, at_b = 0;

	T_ASSERT(stream && pages_mem);
	fill_random(pages_mem, 64 * PG);
	while (len + FL__WIRE_MAX_FRAME < cap && nframes < 400) {
		len += random_frame(stream + len, cap - len, pages_mem);
		nframes++;
	}
	T_ASSERT_OK(fl__wire_dec_init(&a, 0));
	T_ASSERT_OK(fl__wire_dec_init(&b, 0));
	/* a: everything at once with feed(); b: random pieces through space()/commit(). */
	for (size_t k = 0; k < nframes; k++) {
		const struct fl__wire_frame *fa, *fb;
		size_t used;
		int r;

		T_ASSERT_EQ(fl__wire_dec_feed(&a, stream + at_a, len - at_a, &used), 1);
		at_a += used;
		fa = fl__wire_dec_frame(&a);
		for (r = 0; !r;) {
			size_t room, step = rnd() % 3 ? 1 + rnd() % 7 : 1 + rnd() % 70000;
			uint8_t *dst = fl__wire_dec_space(&b, &room);

			T_ASSERT(dst && room >= 1);
			T_ASSERT(room <= fl__wire_dec_need(&b));
			if (step > room)
				step = room;
			memcpy(dst, stream + at_b, step);
			at_b += step;
			r = fl__wire_dec_commit(&b, step);
			T_ASSERT_OK(r);
		}
		fb = fl__wire_dec_frame(&b);
		T_ASSERT(fa && fb);
		T_ASSERT_EQ(at_a, at_b);
		T_ASSERT(fl__wire_frame_equal(fa, fb));
	}
	T_ASSERT_EQ(at_a, len);
	fl__wire_dec_fini(&a);
	fl__wire_dec_fini(&b);
	free(stream);
	free(pages_mem);
}

/* -------------------------------------------------------------- encoders */

TEST(wire_encoder_refuses_what_decoders_would)
{
	struct fl__wire_hello hs;
	struct fl__wire_frame f;
	struct fl__wire_region bad_regions[2] = { sample_regions[0], sample_regions[0] };
	struct fl__wire_page pg = { FL__WIRE_PAGE_DATA, 0, NULL };
	uint8_t buf[256], meta[FL__WIRE_PAGES_META_MAX];
	struct iovec iov[8];
	size_t cnt;

	f = sample(4, &hs);
	T_ASSERT_ERR(fl__wire_encode(&f, buf, 47), ENOSPC);
	T_ASSERT_EQ(fl__wire_encode(&f, buf, 48), 48);
	f.request.count = 0;
	T_ASSERT_ERR(fl__wire_encode(&f, buf, sizeof(buf)), EINVAL);
	T_ASSERT_ERR(fl__wire_frame_size(&f), EINVAL);
	f = sample(4, &hs);
	f.flags = FL__WIRE_F_LAST;
	T_ASSERT_ERR(fl__wire_encode(&f, buf, sizeof(buf)), EINVAL);
	f = sample(4, &hs);
	f.version = 2;
	T_ASSERT_ERR(fl__wire_encode(&f, buf, sizeof(buf)), EINVAL);
	f.version = 0;		/* the default: the newest we speak */
	T_ASSERT_EQ(fl__wire_encode(&f, buf, sizeof(buf)), 48);
	T_ASSERT_EQ(buf[4], FL__WIRE_VERSION_MAX);
	f.type = 0;
	T_ASSERT_ERR(fl__wire_encode(&f, buf, sizeof(buf)), EINVAL);

	f = sample(0, &hs);
	hs.regions = bad_regions;
	hs.n_regions = 2;
	f.hello = hs;
	T_ASSERT_ERR(fl__wire_frame_size(&f), EINVAL);	/* duplicate ids */
	hs.n_regions = FL__WIRE_MAX_REGIONS + 1;
	f.hello = hs;
	T_ASSERT_ERR(fl__wire_frame_size(&f), EINVAL);
	hs = sample_hello(FL__WIRE_ROLE_SOURCE);
	hs.agent = "tab\there";
	hs.agent_len = 8;
	f.hello = hs;
	T_ASSERT_ERR(fl__wire_frame_size(&f), EINVAL);

	f = sample(2, &hs);
	T_ASSERT_ERR(fl__wire_encode_pages_iov(&f, meta, 40, iov, 8, &cnt), ENOSPC);
	T_ASSERT_ERR(fl__wire_encode_pages_iov(&f, meta, sizeof(meta), iov, 3, &cnt), ENOSPC);
	T_ASSERT_OK(fl__wire_encode_pages_iov(&f, meta, sizeof(meta), iov, 4, &cnt));
	f.pages.pages = &pg;	/* DATA without bytes */
	f.pages.count = 1;
	T_ASSERT_ERR(fl__wire_encode_pages_iov(&f, meta, sizeof(meta), iov, 8, &cnt), EINVAL);
	f = sample(4, &hs);
	T_ASSERT_ERR(fl__wire_encode_pages_iov(&f, meta, sizeof(meta), iov, 8, &cnt), EINVAL);

	/* Too many data bytes for one frame: 2 MiB pages, two of them. */
	{
		struct fl__wire_page two[2] = { { FL__WIRE_PAGE_DATA, 0, meta },
						{ FL__WIRE_PAGE_DATA, 0, meta } };

		f = (struct fl__wire_frame){ .type = FL__WIRE_PAGES,
			.pages = { .page_shift = 21, .count = 2, .pages = two } };
		T_ASSERT_ERR(fl__wire_frame_size(&f), EINVAL);
		two[1].flags = FL__WIRE_PAGE_ZERO;
		T_ASSERT_EQ(fl__wire_frame_size(&f), 32 + 16 + 16 + (2 << 20));
	}

	/* The zero test of the sender. */
	memset(buf, 0, sizeof(buf));
	for (size_t n = 0; n < 200; n++)
		T_ASSERT(fl__wire_is_zero(buf + 1, n));
	for (size_t i = 0; i < 200; i++) {
		buf[1 + i] = 1;
		T_ASSERT(!fl__wire_is_zero(buf + 1, 200));
		buf[1 + i] = 0;
	}

	T_ASSERT_EQ(fl__wire_error_code_to_errno(fl__wire_error_code_from_errno(-EACCES)), EACCES);
	T_ASSERT_EQ(fl__wire_error_code_to_errno(fl__wire_error_code_from_errno(-EBADMSG)),
		    EBADMSG);
	T_ASSERT_EQ(fl__wire_error_code_to_errno(12345), EPROTO);
}

/* ------------------------------------------------------------- handshake */

struct side {
	struct fl__wire_hello hello;
};

/* Both sides' view of a handshake, done in memory: each decodes what the other encoded. */
static int handshake(const struct side *src, const struct side *dst, char *msg, size_t cap)
{
	const struct side *sides[2] = { src, dst };
	struct fl__wire_hello got[2];
	struct fl__wire_region regions[2][8];
	char agents[2][FL__WIRE_MAX_AGENT + 1];
	int r;

	/* Each HELLO crosses the wire; the receiver keeps a decoded copy. */
	for (int s = 0; s < 2; s++) {
		struct fl__wire_frame f = { .type = FL__WIRE_HELLO, .hello = sides[s]->hello };
		struct fl__wire_dec d;
		size_t len, used;
		uint8_t *b = enc(&f, &len);

		T_ASSERT_OK(fl__wire_dec_init(&d, 0));
		T_ASSERT_EQ(fl__wire_dec_feed(&d, b, len, &used), 1);
		got[s] = fl__wire_dec_frame(&d)->hello;
		T_ASSERT(got[s].n_regions <= 8);
		if (got[s].n_regions)
			memcpy(regions[s], got[s].regions,
			       got[s].n_regions * sizeof(regions[s][0]));
		got[s].regions = regions[s];
		memcpy(agents[s], got[s].agent, got[s].agent_len + 1);
		got[s].agent = agents[s];
		fl__wire_dec_fini(&d);
		free(b);
	}
	/* Each side checks the other's HELLO against its own. */
	for (int s = 0; s < 2; s++) {
		struct fl__wire_agreement ag;

		r = fl__wire_negotiate(&sides[s]->hello, &got[1 - s], msg, cap, &ag);
		if (r < 0)
			return r;
		T_ASSERT_EQ(ag.version, 1);
	}
	return 0;
}

TEST(wire_handshake_negotiate)
{
	struct side src = { sample_hello(FL__WIRE_ROLE_SOURCE) };
	struct side dst = { sample_hello(FL__WIRE_ROLE_DESTINATION) };
	struct fl__wire_agreement ag;
	char msg[200];

	T_ASSERT_OK(handshake(&src, &dst, msg, sizeof(msg)));
	/* Both in plain TCP. */
	src.hello.flags = dst.hello.flags = 0;
	T_ASSERT_OK(handshake(&src, &dst, msg, sizeof(msg)));
	/* One side inside TLS, the other not: something in between ends or adds TLS. */
	src.hello.flags = FL__WIRE_HELLO_TLS;
	T_ASSERT_ERR(handshake(&src, &dst, msg, sizeof(msg)), EACCES);
	T_ASSERT(strstr(msg, "inside TLS"));
	dst.hello.flags = FL__WIRE_HELLO_TLS;

	/* Versions that do not overlap. */
	src.hello.version_min = src.hello.version_max = 3;
	T_ASSERT_ERR(handshake(&src, &dst, msg, sizeof(msg)), EPROTONOSUPPORT);
	T_ASSERT(strstr(msg, "no common wire version"));
	src.hello.version_min = 1;
	T_ASSERT_OK(handshake(&src, &dst, msg, sizeof(msg)));
	src.hello.version_max = 1;

	/* Two sources; different page sizes; resume on one side only. */
	dst.hello.role = FL__WIRE_ROLE_SOURCE;
	T_ASSERT_ERR(handshake(&src, &dst, msg, sizeof(msg)), EPROTO);
	dst.hello.role = FL__WIRE_ROLE_DESTINATION;
	dst.hello.page_shift = 16;
	T_ASSERT_ERR(fl__wire_negotiate(&src.hello, &dst.hello, msg, sizeof(msg), &ag), EPROTO);
	T_ASSERT(strstr(msg, "page sizes differ: 4096 bytes here, 65536"));
	dst.hello.page_shift = 12;
	src.hello.flags |= FL__WIRE_HELLO_RESUME;
	T_ASSERT_ERR(fl__wire_negotiate(&src.hello, &dst.hello, msg, sizeof(msg), &ag), EPROTO);
	dst.hello.flags |= FL__WIRE_HELLO_RESUME;
	T_ASSERT_OK(fl__wire_negotiate(&src.hello, &dst.hello, msg, sizeof(msg), &ag));
	dst.hello.session_id[3] ^= 1;
	T_ASSERT_ERR(fl__wire_negotiate(&src.hello, &dst.hello, msg, sizeof(msg), &ag), EPROTO);
	dst.hello.session_id[3] ^= 1;
	T_ASSERT_EQ(ag.features, src.hello.features & dst.hello.features);
}

/* ---------------------------------------------------------------- sockets */

struct stream_job {
	int fd;
	uint8_t *mem;
	size_t len;
	uint32_t per_frame;
	int err;
};

/* The sending side: PAGES frames straight from memory with writev, zero pages as flags. */
static void *send_stream(void *arg)
{
	struct stream_job *j = arg;
	static struct fl__wire_page table[FL__WIRE_MAX_PAGES];
	size_t npages = j->len / PG;
	uint64_t seq = 0;

	for (size_t first = 0; first < npages && !j->err; first += j->per_frame) {
		uint32_t count = (uint32_t)(npages - first < j->per_frame ? npages - first :
					    j->per_frame);
		struct fl__wire_frame f = {
			.version = 1, .type = FL__WIRE_PAGES, .seq = seq++,
			.pages = { .region_id = 1, .page_shift = 12, .count = count,
				   .first = first, .pages = table },
		};

		for (uint32_t i = 0; i < count; i++) {
			uint8_t *p = j->mem + (first + i) * PG;
			bool zero = fl__wire_is_zero(p, PG);

			table[i] = (struct fl__wire_page){
				zero ? FL__WIRE_PAGE_ZERO : FL__WIRE_PAGE_DATA, 0,
				zero ? NULL : p };
		}
		j->err = fl__sock_send_frame(j->fd, &f, 20000);
	}
	if (!j->err) {
		struct fl__wire_frame done = { .version = 1, .type = FL__WIRE_COMPLETE,
					       .seq = seq, .complete.pages = npages };

		j->err = fl__sock_send_frame(j->fd, &done, 20000);
	}
	shutdown(j->fd, SHUT_WR);
	return NULL;
}

/* Receive what send_stream sends and check every page against @mem; the pages seen. */
static size_t recv_stream(int fd, const uint8_t *mem, size_t len)
{
	struct fl__wire_reader rd;
	const struct fl__wire_frame *f;
	size_t pages = 0, zero = 0;
	int r;

	T_ASSERT_OK(fl__wire_reader_init(&rd, fd, 0));
	for (;;) {
		r = fl__wire_reader_next(&rd, 20000, &f);
		if (r < 0)
			t_fail(__FILE__, __LINE__, "reader: %s (%s)", strerror(-r),
			       fl__wire_reader_error(&rd));
		T_ASSERT_EQ(r, 1);
		if (f->type == FL__WIRE_COMPLETE)
			break;
		T_ASSERT_EQ(f->type, FL__WIRE_PAGES);
		T_ASSERT_EQ(f->pages.first, pages);
		for (uint32_t i = 0; i < f->pages.count; i++) {
			const struct fl__wire_page *p = &f->pages.pages[i];
			const uint8_t *want = mem + (f->pages.first + i) * PG;

			T_ASSERT((f->pages.first + i) * PG < len);
			if (p->flags == FL__WIRE_PAGE_ZERO) {
				T_ASSERT(fl__wire_is_zero(want, PG));
				zero++;
			} else {
				T_ASSERT(!memcmp(p->data, want, PG));
			}
		}
		pages += f->pages.count;
	}
	T_ASSERT_EQ(f->complete.pages, pages);
	T_ASSERT(zero > 0);
	/* The sender is done: the end of the stream comes between frames. */
	T_ASSERT_EQ(fl__wire_reader_next(&rd, 20000, &f), 0);
	fl__wire_reader_fini(&rd);
	return pages;
}

static uint8_t *stream_memory(size_t len)
{
	uint8_t *mem = malloc(len);

	T_ASSERT(mem);
	fl_pattern_fill(mem, 0, len, 42);
	for (size_t p = 0; p < len / PG; p += 7)	/* every 7th page is zero */
		memset(mem + p * PG, 0, PG);
	return mem;
}

TEST(wire_socketpair_64mib_stream)
{
	size_t len = 64 * MiB;
	uint8_t *mem = stream_memory(len);
	struct fl__sock_opts o = { .bufsize = 4 * MiB };
	/* 1 MiB frames */
	struct stream_job j = { .mem = mem, .len = len, .per_frame = 256 };
	int sv[2];
	unsigned long tid;
	double t0;

	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	T_ASSERT_OK(fl__sock_apply(sv[0], &o));
	T_ASSERT_OK(fl__sock_apply(sv[1], &o));
	j.fd = sv[0];
	t0 = now();
	tid = t_thread_start(send_stream, &j);
	T_ASSERT_EQ(recv_stream(sv[1], mem, len), len / PG);
	t_thread_join(tid);
	T_ASSERT_OK(j.err);
	printf("# 64 MiB of PAGES over a socketpair, CRCs checked both ends: %.0f MB/s\n",
	       (double)len / (now() - t0) / 1e6);
	close(sv[0]);
	close(sv[1]);
	free(mem);
}

static bool is_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);

	return fl >= 0 && (fl & FD_CLOEXEC);
}

static int get_int_opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);

	T_ASSERT_SYS(getsockopt(fd, level, name, &v, &len));
	return v;
}

/* One connected pair over loopback through the helpers; false if @host is not available here. */
static bool tcp_pair(const char *host, const char *connect_to, int ret[2])
{
	struct fl__sock_opts urgent = { .flags = FL__SOCK_NODELAY, .bufsize = 1 * MiB };
	uint16_t port;
	long rmem_max = -1;
	int lfd, r;
	FILE *f = fopen("/proc/sys/net/core/rmem_max", "re");

	if (f) {
		if (fscanf(f, "%ld", &rmem_max) != 1)
			rmem_max = -1;
		fclose(f);
	}
	r = fl__sock_listen(host, 0, &urgent, &lfd);
	if (r == -EADDRNOTAVAIL || r == -EAFNOSUPPORT)
		return false;
	T_ASSERT_OK(r);
	T_ASSERT(is_cloexec(lfd));
	T_ASSERT_OK(fl__sock_local_port(lfd, &port));
	T_ASSERT(port);
	T_ASSERT_OK(fl__sock_connect(connect_to, port, &urgent, t_ms(5000), &ret[0]));
	T_ASSERT_OK(fl__sock_accept(lfd, &urgent, t_ms(5000), &ret[1]));
	close(lfd);
	for (int i = 0; i < 2; i++) {
		T_ASSERT(is_cloexec(ret[i]));
		T_ASSERT_EQ(get_int_opt(ret[i], IPPROTO_TCP, TCP_NODELAY), 1);
		/* The kernel doubles what it was asked for, capped at rmem_max. */
		if (rmem_max > 0)
			T_ASSERT(get_int_opt(ret[i], SOL_SOCKET, SO_RCVBUF) >=
				 2 * (rmem_max < (long)MiB ? rmem_max : (long)MiB));
		T_ASSERT(!(fcntl(ret[i], F_GETFL) & O_NONBLOCK));
	}
	return true;
}

static void tcp_exchange(int fd[2])
{
	struct fl__wire_hello hs;
	struct fl__wire_reader rd;
	const struct fl__wire_frame *f;
	uint8_t buf[8] = { 0 };

	/* Every sample frame one way, in one burst; the reader splits them. */
	for (int i = 0; i < NSAMPLES; i++) {
		struct fl__wire_frame s = sample(i, &hs);

		T_ASSERT_OK(fl__sock_send_frame(fd[0], &s, t_ms(5000)));
	}
	T_ASSERT_OK(fl__wire_reader_init(&rd, fd[1], 0));
	for (int i = 0; i < NSAMPLES; i++) {
		struct fl__wire_frame s = sample(i, &hs);

		T_ASSERT_EQ(fl__wire_reader_next(&rd, t_ms(5000), &f), 1);
		T_ASSERT(fl__wire_frame_equal(&s, f));
	}
	/* Nothing more: a timeout, or -EAGAIN when asked not to wait. */
	T_ASSERT_ERR(fl__wire_reader_next(&rd, 0, &f), EAGAIN);
	T_ASSERT_ERR(fl__wire_reader_next(&rd, 20, &f), ETIMEDOUT);
	T_ASSERT_ERR(fl__sock_recv_exact(fd[1], buf, 1, 20), ETIMEDOUT);
	/* Half a frame, then the peer closes: -ECONNRESET with a sentence. */
	{
		struct fl__wire_frame s = sample(4, &hs);
		uint8_t b[64];
		int n = fl__wire_encode(&s, b, sizeof(b));

		T_ASSERT_OK(n);
		T_ASSERT_OK(fl__sock_send_all(fd[0], b, 40, t_ms(5000)));
		T_ASSERT_ERR(fl__wire_reader_next(&rd, 20, &f), ETIMEDOUT);
		T_ASSERT_OK(fl__sock_send_all(fd[0], b + 40, (size_t)n - 40, t_ms(5000)));
		T_ASSERT_EQ(fl__wire_reader_next(&rd, t_ms(5000), &f), 1);
		T_ASSERT(fl__wire_frame_equal(&s, f));
		T_ASSERT_OK(fl__sock_send_all(fd[0], b, 10, t_ms(5000)));
	}
	T_ASSERT_SYS(shutdown(fd[0], SHUT_WR));
	T_ASSERT_ERR(fl__wire_reader_next(&rd, t_ms(5000), &f), ECONNRESET);
	T_ASSERT(strstr(fl__wire_reader_error(&rd), "closed the connection inside a frame"));
	fl__wire_reader_fini(&rd);
	/* The other way round, a clean close: recv_exact sees -ECONNRESET, a send -EPIPE. */
	T_ASSERT_SYS(shutdown(fd[1], SHUT_WR));
	T_ASSERT_ERR(fl__sock_recv_exact(fd[0], buf, 1, t_ms(5000)), ECONNRESET);
	close(fd[1]);
	{
		int r = 0;

		/* The first send after the close may still be accepted locally. */
		for (int i = 0; i < 100 && !r; i++)
			r = fl__sock_send_all(fd[0], buf, sizeof(buf), t_ms(5000));
		T_ASSERT(r == -EPIPE || r == -ECONNRESET);
	}
	close(fd[0]);
}

TEST(wire_tcp_loopback)
{
	struct fl__sock_opts o = { 0 };
	uint16_t port;
	int fd[2], lfd;

	T_ASSERT(tcp_pair("127.0.0.1", "127.0.0.1", fd));
	tcp_exchange(fd);
	/* The wildcard listener takes IPv4 (and IPv6 where the host has it). */
	T_ASSERT(tcp_pair(NULL, "127.0.0.1", fd));
	tcp_exchange(fd);
	if (tcp_pair("::1", "::1", fd))
		tcp_exchange(fd);
	else
		printf("# no IPv6 loopback here: IPv6 part skipped\n");

	/* Nobody listening: -ECONNREFUSED. A port from a socket just closed is free. */
	T_ASSERT_OK(fl__sock_listen("127.0.0.1", 0, &o, &lfd));
	T_ASSERT_OK(fl__sock_local_port(lfd, &port));
	close(lfd);
	T_ASSERT_ERR(fl__sock_connect("127.0.0.1", port, &o, t_ms(5000), &fd[0]), ECONNREFUSED);
	/* accept() with nobody coming. */
	T_ASSERT_OK(fl__sock_listen("127.0.0.1", 0, &o, &lfd));
	T_ASSERT_ERR(fl__sock_accept(lfd, &o, 20, &fd[0]), ETIMEDOUT);
	close(lfd);
	T_ASSERT_ERR(fl__sock_apply(0, &(struct fl__sock_opts){ .flags = 1u << 7 }), EINVAL);
}

/* The 64 MiB stream again over loopback TCP, for the numbers a real link starts from. */
TEST(wire_tcp_stream)
{
	size_t len = 16 * MiB;
	uint8_t *mem = stream_memory(len);
	/* 2 MiB frames */
	struct stream_job j = { .mem = mem, .len = len, .per_frame = 512 };
	unsigned long tid;
	int fd[2];

	T_ASSERT(tcp_pair("127.0.0.1", "127.0.0.1", fd));
	j.fd = fd[0];
	tid = t_thread_start(send_stream, &j);
	T_ASSERT_EQ(recv_stream(fd[1], mem, len), len / PG);
	t_thread_join(tid);
	T_ASSERT_OK(j.err);
	close(fd[0]);
	close(fd[1]);
	free(mem);
}

/* ------------------------------------------------------------ fuzz seeds */

/*
 * The seeds of test/fuzz/corpus/wire-frame: one per sample frame, a whole
 * handshake stream, and a header with an extension. Each must decode; with
 * FL_WIRE_SEED_DIR set they are (re)written there.
 */
TEST(wire_fuzz_seeds)
{
	const char *dir = getenv("FL_WIRE_SEED_DIR");
	struct fl__wire_hello hs;
	uint8_t *stream = malloc(64 << 10);
	size_t slen = 0;
	int n_written = 0;

	T_ASSERT(stream);
	for (int i = 0; i <= NSAMPLES + 1; i++) {
		uint8_t *b;
		size_t len;
		char name[64];

		if (i < NSAMPLES) {
			struct fl__wire_frame f = sample(i, &hs);
			char tn[16];

			b = enc(&f, &len);
			snprintf(name, sizeof(name), "%02d-%s", i, fl__wire_type_name(f.type, tn));
			if (slen + len <= (64 << 10) && f.type != FL__WIRE_PAGES) {
				memcpy(stream + slen, b, len);
				slen += len;
			}
		} else if (i == NSAMPLES) {
			b = malloc(slen);
			T_ASSERT(b);
			memcpy(b, stream, slen);
			len = slen;
			snprintf(name, sizeof(name), "%02d-stream", i);
		} else {
			/* A REQUEST with a 48-byte header. */
			struct fl__wire_frame f = sample(4, &hs);
			uint8_t *plain = enc(&f, &len);

			b = malloc(len + 16);
			T_ASSERT(b);
			memcpy(b, plain, 32);
			memset(b + 32, 0xee, 16);
			memcpy(b + 48, plain + 32, len - 32);
			b[8] = 48;
			fix_hdr_crc(b);
			len += 16;
			free(plain);
			snprintf(name, sizeof(name), "%02d-header-extension", i);
		}
		for (size_t at = 0; at < len;) {
			struct fl__wire_dec d;
			size_t used;

			T_ASSERT_OK(fl__wire_dec_init(&d, 0));
			T_ASSERT_EQ(fl__wire_dec_feed(&d, b + at, len - at, &used), 1);
			at += used;
			fl__wire_dec_fini(&d);
		}
		if (dir) {
			char path[512];
			FILE *fp;

			snprintf(path, sizeof(path), "%s/%s", dir, name);
			fp = fopen(path, "wbe");
			T_ASSERT(fp);
			T_ASSERT_EQ(fwrite(b, 1, len, fp), len);
			T_ASSERT_EQ(fclose(fp), 0);
			n_written++;
		}
		free(b);
	}
	if (dir)
		printf("# %d seeds written to %s\n", n_written, dir);
	free(stream);
}
