/* SPDX-License-Identifier: MIT */
/* The monitor wire format and Firecracker's handshake: round trips and every malformed class. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tests.h"
#include "monitor/monitor-int.h"
#include "net/crc32c.h"
#include "net/le.h"

#define MB (1ull << 20)

static char err[512];

/* Offsets of the header fields this file pokes at (doc/monitor-protocol.md). */
#define O_VERSION 4
#define O_TYPE 6
#define O_HDR_LEN 8
#define O_FIXED_LEN 10
#define O_ENTRY_LEN 12
#define O_RESERVED 14
#define O_TOTAL 16
#define O_FLAGS 20
#define O_COUNT 24
#define O_CRC 28
/* The first region entry of a version-1 HELLO, and its fields. */
#define O_R0 (FL_MONITOR_HDR_LEN + FL_MONITOR_HELLO_FIXED_LEN)
#define R_PS 32
#define R_STORE 36
#define R_PATH_OFF 40
#define R_PATH_LEN 44

/* Recompute the checksum after a test changed a field on purpose. */
static void reseal(uint8_t *b, size_t len)
{
	fl__put_le32(b + O_CRC, 0);
	fl__put_le32(b + O_CRC, fl__crc32c(0, b, len));
}

/* Expect @expr to fail with -@e and a message containing @needle. */
#define T_ASSERT_FAILS(expr, e, needle)                                                    \
	do {                                                                               \
		err[0] = '\0';                                                             \
		T_ASSERT_ERR(expr, e);                                                     \
		if (!strstr(err, needle))                                                  \
			t_fail(__FILE__, __LINE__, "message \"%s\" lacks \"%s\"", err, needle); \
	} while (0)

static const char path_a[] = "/var/lib/faultline/snap.mem";

static struct fl__mon_region reg(uint64_t addr, uint64_t len, uint32_t store)
{
	struct fl__mon_region r = {
		.addr = addr,
		.len = len,
		.page_size = 4096,
		.store = store,
		.mem = FL_MEM_ANON,
	};

	if (store == FL_MONITOR_STORE_FILE) {
		r.path = path_a;
		r.path_len = (uint32_t)strlen(path_a);
	}
	return r;
}

/* A valid three-region HELLO; returns its length. */
static size_t sample_hello(uint8_t *buf, size_t cap, struct fl__mon_region *r)
{
	struct fl__mon_hello h = {
		.version = 1,
		.features = FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP,
		.session = 0x1122334455667788ull,
		.pid = 4242,
		.n = 3,
		.r = r,
	};

	r[0] = reg(0x7f0000000000ull, 16 * 4096, FL_MONITOR_STORE_FILE);
	r[0].off = 1 * MB;
	r[1] = reg(0x7f0000200000ull, 2 * MB, FL_MONITOR_STORE_PATTERN);
	r[1].seed = 99;
	r[1].page_size = 2 * MB;
	r[1].mem = FL_MEM_HUGETLB;
	r[2] = reg(0x7f0000100000ull, 4096, FL_MONITOR_STORE_ZERO);
	return fl__mon_encode_hello(&h, buf, cap);
}

TEST(monitor_proto_hello_roundtrip)
{
	static uint8_t buf[8192];
	struct fl__mon_region r[4];
	struct fl__mon_hello d;
	size_t len = sample_hello(NULL, 0, r), len2;

	/* Measuring writes nothing; the result is the exact size. */
	T_ASSERT_EQ(len, 32 + 32 + 3 * 64 + sizeof(path_a));
	T_ASSERT_EQ(sample_hello(buf, len - 1, r), len);
	T_ASSERT_EQ(buf[0], 0);
	T_ASSERT_EQ(sample_hello(buf, sizeof(buf), r), len);
	T_ASSERT(!memcmp(buf, "FLMN", 4));
	T_ASSERT_EQ(fl__mon_sniff(buf, len), FL__MON_SNIFF_NATIVE);

	T_ASSERT_OK(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)));
	T_ASSERT(!d.firecracker);
	T_ASSERT_EQ(d.version, 1);
	T_ASSERT_EQ(d.flags, 0);
	T_ASSERT_EQ(d.features, FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP);
	T_ASSERT_EQ(d.session, 0x1122334455667788ull);
	T_ASSERT_EQ(d.pid, 4242);
	T_ASSERT_EQ(d.attach_seq, 0);
	T_ASSERT_EQ(d.n, 3);
	for (int i = 0; i < 3; i++) {
		T_ASSERT_EQ(d.r[i].addr, r[i].addr);
		T_ASSERT_EQ(d.r[i].len, r[i].len);
		T_ASSERT_EQ(d.r[i].off, r[i].off);
		T_ASSERT_EQ(d.r[i].seed, r[i].seed);
		T_ASSERT_EQ(d.r[i].page_size, r[i].page_size);
		T_ASSERT_EQ(d.r[i].store, r[i].store);
		T_ASSERT_EQ(d.r[i].mem, r[i].mem);
		T_ASSERT_EQ(d.r[i].path_len, r[i].path_len);
	}
	T_ASSERT(!strcmp(d.r[0].path, path_a));
	T_ASSERT(d.r[0].path > (const char *)buf && d.r[0].path < (const char *)buf + len);
	T_ASSERT(!d.r[1].path && !d.r[2].path);
	fl__mon_hello_free(&d);
	fl__mon_hello_free(&d);	/* idempotent */

	/* Re-attach, and regions of one file share its string. */
	{
		struct fl__mon_region s[3] = {
			reg(0x10000, 4096, FL_MONITOR_STORE_FILE),
			reg(0x11000, 4096, FL_MONITOR_STORE_FILE),
			reg(0x12000, 4096, FL_MONITOR_STORE_FILE),
		};
		struct fl__mon_hello h = {
			.flags = FL_MONITOR_HELLO_REATTACH,
			.attach_seq = 7,
			.session = 1,
			.n = 3,
			.r = s,
		};

		s[1].path = "/other";
		s[1].path_len = 6;
		len2 = fl__mon_encode_hello(&h, buf, sizeof(buf));
		/* The same string twice (by pointer) is sent once, even with another between. */
		T_ASSERT_EQ(len2, 32 + 32 + 3 * 64 + sizeof(path_a) + 7);
		T_ASSERT_OK(fl__mon_decode_hello(buf, len2, &d, err, sizeof(err)));
		T_ASSERT_EQ(d.flags, FL_MONITOR_HELLO_REATTACH);
		T_ASSERT_EQ(d.attach_seq, 7);
		T_ASSERT(!strcmp(d.r[1].path, "/other"));
		T_ASSERT(!strcmp(d.r[2].path, path_a));
		T_ASSERT(d.r[0].path == d.r[2].path);
		fl__mon_hello_free(&d);
		s[1].path = path_a;
		s[1].path_len = (uint32_t)strlen(path_a);
		len2 = fl__mon_encode_hello(&h, buf, sizeof(buf));
		T_ASSERT_EQ(len2, 32 + 32 + 3 * 64 + sizeof(path_a));
		T_ASSERT_OK(fl__mon_decode_hello(buf, len2, &d, err, sizeof(err)));
		T_ASSERT(d.r[0].path == d.r[2].path);
		fl__mon_hello_free(&d);
	}

	/* A newer peer's longer parts: the extra bytes are skipped. */
	{
		static uint8_t big[8192];
		size_t hl = 40, fx = 40, el = 72, n = 3, tail, total;

		tail = hl + fx + n * el;
		total = tail + sizeof(path_a);
		memset(big, 0, sizeof(big));
		memcpy(big, buf, 32);	/* a header to start from */
		len = sample_hello(buf, sizeof(buf), r);
		memcpy(big, buf, 32);
		memcpy(big + hl, buf + 32, 32);
		for (size_t i = 0; i < n; i++)
			memcpy(big + hl + fx + i * el, buf + 64 + i * 64, 64);
		memcpy(big + tail, path_a, sizeof(path_a));
		fl__put_le32(big + hl + fx + R_PATH_OFF, (uint32_t)tail);
		fl__put_le16(big + O_HDR_LEN, (uint16_t)hl);
		fl__put_le16(big + O_FIXED_LEN, (uint16_t)fx);
		fl__put_le16(big + O_ENTRY_LEN, (uint16_t)el);
		fl__put_le32(big + O_TOTAL, (uint32_t)total);
		memset(big + 32, 0xee, hl - 32);	/* unknown header extension */
		reseal(big, total);
		T_ASSERT_OK(fl__mon_decode_hello(big, total, &d, err, sizeof(err)));
		T_ASSERT_EQ(d.n, 3);
		T_ASSERT(!strcmp(d.r[0].path, path_a));
		T_ASSERT_EQ(d.r[1].seed, 99);
		fl__mon_hello_free(&d);
	}
}

TEST(monitor_proto_reply_event_roundtrip)
{
	static uint8_t buf[4096];
	struct fl__mon_event ev[FL_MONITOR_MAX_EVENTS], out[FL_MONITOR_MAX_EVENTS];
	struct fl__mon_reply rep;
	char longmsg[2000];
	size_t len, n;

	len = fl__mon_encode_ack(0xabcdef, 77, buf, sizeof(buf));
	T_ASSERT_EQ(len, 48);
	T_ASSERT_OK(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)));
	T_ASSERT_EQ(rep.type, FL_MONITOR_MSG_ACK);
	T_ASSERT_EQ(rep.session, 0xabcdef);
	T_ASSERT_EQ(rep.pid, 77);

	len = fl__mon_encode_error(-ENOENT, "store file /x: No such file or directory", buf,
				   sizeof(buf));
	T_ASSERT_OK(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)));
	T_ASSERT_EQ(rep.type, FL_MONITOR_MSG_ERROR);
	T_ASSERT_EQ(rep.err, -ENOENT);
	T_ASSERT(!strcmp(rep.msg, "store file /x: No such file or directory"));
	/* A long text is cut at the limit, an errno out of range becomes EPROTO, NULL is "". */
	memset(longmsg, 'x', sizeof(longmsg) - 1);
	longmsg[sizeof(longmsg) - 1] = '\0';
	len = fl__mon_encode_error(-EIO, longmsg, buf, sizeof(buf));
	T_ASSERT_EQ(len, 32 + 8 + FL_MONITOR_MAX_ERRMSG + 1);
	T_ASSERT_OK(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)));
	T_ASSERT_EQ(strlen(rep.msg), FL_MONITOR_MAX_ERRMSG);
	len = fl__mon_encode_error(5, NULL, buf, sizeof(buf));
	T_ASSERT_OK(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)));
	T_ASSERT_EQ(rep.err, -EPROTO);
	T_ASSERT(!strcmp(rep.msg, ""));

	/* ERROR lies: errno 0, text length that does not match, NUL inside. */
	len = fl__mon_encode_error(-EIO, "abc", buf, sizeof(buf));
	fl__put_le32(buf + 32, 0);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)), EPROTO, "errno");
	len = fl__mon_encode_error(-EIO, "abc", buf, sizeof(buf));
	fl__put_le32(buf + 36, 2);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)), EPROTO, "follow");
	len = fl__mon_encode_error(-EIO, "abc", buf, sizeof(buf));
	buf[41] = '\0';
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)), EPROTO, "NUL");
	len = fl__mon_encode_error(-EIO, "abc", buf, sizeof(buf));
	fl__put_le32(buf + 36, FL_MONITOR_MAX_ERRMSG + 1);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)), E2BIG, "limit");
	/* ACK with a reserved field set, or flags. */
	len = fl__mon_encode_ack(1, 2, buf, sizeof(buf));
	buf[32 + 12] = 1;
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)), EPROTO, "reserved");
	len = fl__mon_encode_ack(1, 2, buf, sizeof(buf));
	fl__put_le32(buf + O_FLAGS, 4);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_reply(buf, len, &rep, err, sizeof(err)), EPROTO, "flags");
	/* A HELLO is no reply. */
	{
		struct fl__mon_region r[3];
		static uint8_t h[4096];

		len = sample_hello(h, sizeof(h), r);
		T_ASSERT_FAILS(fl__mon_decode_reply(h, len, &rep, err, sizeof(err)), EPROTO,
			       "expected a ACK");
	}

	/* BYE: a bare header. */
	len = fl__mon_encode_bye(buf, sizeof(buf));
	T_ASSERT_EQ(len, 32);
	T_ASSERT_OK(fl__mon_decode_bye(buf, len, err, sizeof(err)));
	fl__put_le32(buf + O_FLAGS, 1);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_bye(buf, len, err, sizeof(err)), EPROTO, "flags");
	len = fl__mon_encode_ack(1, 2, buf, sizeof(buf));
	T_ASSERT_FAILS(fl__mon_decode_bye(buf, len, err, sizeof(err)), EPROTO, "expected a BYE");

	/* Events. */
	ev[0] = (struct fl__mon_event){ FL_MONITOR_EV_REMAP, 0x10000, 0x90000, 0x3000 };
	ev[1] = (struct fl__mon_event){ FL_MONITOR_EV_REMOVE, 0x20000, 0x22000, 0 };
	ev[2] = (struct fl__mon_event){ FL_MONITOR_EV_UNMAP, 0x30000, 0x31000, 0 };
	len = fl__mon_encode_events(ev, 3, buf, sizeof(buf));
	T_ASSERT_EQ(len, 32 + 3 * 32);
	T_ASSERT_OK(fl__mon_decode_events(buf, len, out, FL_MONITOR_MAX_EVENTS, &n, err,
					  sizeof(err)));
	T_ASSERT_EQ(n, 3);
	for (int i = 0; i < 3; i++) {
		T_ASSERT_EQ(out[i].type, ev[i].type);
		T_ASSERT_EQ(out[i].a, ev[i].a);
		T_ASSERT_EQ(out[i].b, ev[i].b);
		T_ASSERT_EQ(out[i].c, ev[i].c);
	}
	T_ASSERT_FAILS(fl__mon_decode_events(buf, len, out, 2, &n, err, sizeof(err)), E2BIG,
		       "do not fit");
	T_ASSERT_EQ(fl__mon_encode_events(ev, 0, buf, sizeof(buf)), 0);
	T_ASSERT_EQ(fl__mon_encode_events(ev, FL_MONITOR_MAX_EVENTS + 1, buf, sizeof(buf)), 0);
	for (int bad = 0; bad < 5; bad++) {
		struct fl__mon_event e[5] = {
			{ 9, 0x1000, 0x2000, 0 },			/* unknown type */
			{ FL_MONITOR_EV_REMOVE, 0x2000, 0x1000, 0 },	/* empty */
			{ FL_MONITOR_EV_UNMAP, 0x1001, 0x2000, 0 },	/* unaligned */
			{ FL_MONITOR_EV_REMAP, 0x1000, 0x5000, 0 },	/* nothing moved */
			{ FL_MONITOR_EV_REMAP, ~0xfffull, 0x5000, 0x2000 },	/* wraps */
		};

		len = fl__mon_encode_events(&e[bad], 1, buf, sizeof(buf));
		T_ASSERT_FAILS(fl__mon_decode_events(buf, len, out, FL_MONITOR_MAX_EVENTS, &n, err,
						     sizeof(err)), EINVAL, "event 0");
	}
	len = fl__mon_encode_events(ev, 1, buf, sizeof(buf));
	buf[32 + 4] = 1;
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_events(buf, len, out, FL_MONITOR_MAX_EVENTS, &n, err,
					     sizeof(err)), EPROTO, "reserved");
	len = fl__mon_encode_events(ev, 1, buf, sizeof(buf));
	fl__put_le32(buf + O_COUNT, 0);
	fl__put_le32(buf + O_TOTAL, 32);
	reseal(buf, 32);
	T_ASSERT_FAILS(fl__mon_decode_events(buf, 32, out, FL_MONITOR_MAX_EVENTS, &n, err,
					     sizeof(err)), EPROTO, "without events");
}

TEST(monitor_proto_header_errors)
{
	static uint8_t good[8192], b[8192];
	struct fl__mon_region r[3];
	struct fl__mon_hello d;
	size_t len = sample_hello(good, sizeof(good), r), total;

#define FRESH() memcpy(b, good, len)
#define DECODE(l) fl__mon_decode_hello(b, (l), &d, err, sizeof(err))

	FRESH();
	b[0] = 'G';
	T_ASSERT_FAILS(DECODE(len), EPROTO, "magic");
	T_ASSERT_EQ(fl__mon_sniff(b, len), -EPROTO);
	T_ASSERT_FAILS(fl__mon_frame(b, 1, &total, err, sizeof(err)), EPROTO, "magic");
	FRESH();
	T_ASSERT_EQ(fl__mon_frame(b, 3, &total, err, sizeof(err)), -EAGAIN);
	T_ASSERT_EQ(fl__mon_frame(b, 31, &total, err, sizeof(err)), -EAGAIN);
	T_ASSERT_OK(fl__mon_frame(b, 32, &total, err, sizeof(err)));
	T_ASSERT_EQ(total, len);
	fl__put_le16(b + O_VERSION, 2);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EPROTONOSUPPORT, "version 2");
	FRESH();
	T_ASSERT_FAILS(DECODE(20), EPROTO, "short");
	T_ASSERT_FAILS(DECODE(0), EPROTO, "short");
	T_ASSERT_FAILS(fl__mon_decode_hello(NULL, 0, &d, err, sizeof(err)), EPROTO, "short");
	/* Lengths that lie. */
	T_ASSERT_FAILS(DECODE(len - 1), EPROTO, "header says");
	T_ASSERT_FAILS(DECODE(len + 1), EPROTO, "header says");
	fl__put_le32(b + O_TOTAL, FL_MONITOR_MAX_MSG + 1);
	T_ASSERT_FAILS(DECODE(len), E2BIG, "exceeds");
	fl__put_le32(b + O_TOTAL, 16);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "shorter than the header");
	FRESH();
	fl__put_le16(b + O_HDR_LEN, 24);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "header length");
	fl__put_le16(b + O_HDR_LEN, 36);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "header length");
	FRESH();
	b[len - 1] ^= 1;	/* a byte of the path: only the checksum can tell */
	T_ASSERT_FAILS(DECODE(len), EPROTO, "checksum");
	FRESH();
	fl__put_le16(b + O_TYPE, FL_MONITOR_MSG_EVENT);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "expected a HELLO");
	FRESH();
	fl__put_le16(b + O_RESERVED, 1);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "reserved");
	FRESH();
	fl__put_le16(b + O_FIXED_LEN, 24);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "fixed part");
	FRESH();
	fl__put_le16(b + O_ENTRY_LEN, 60);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "entry length");
	FRESH();
	fl__put_le16(b + O_ENTRY_LEN, 264);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "entry length");
	/* A count that lies: more entries than bytes. */
	FRESH();
	fl__put_le32(b + O_COUNT, 5);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "need");
	FRESH();
	fl__put_le32(b + O_COUNT, FL_MONITOR_MAX_REGIONS + 1);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), E2BIG, "limit");
	FRESH();
	fl__put_le32(b + O_COUNT, 0xffffffffu);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), E2BIG, "limit");
	/* Fewer regions than sent: the rest is string area, and the path still checks. */
	FRESH();
	fl__put_le32(b + O_COUNT, 0);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EINVAL, "no regions");
	FRESH();
	fl__put_le32(b + O_FLAGS, 6);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "flags");
	FRESH();
	fl__put_le32(b + O_FLAGS, FL_MONITOR_HELLO_REATTACH);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EINVAL, "REATTACH");
	FRESH();
	fl__put_le32(b + 32 + 20, 3);	/* attach_seq without the flag */
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EINVAL, "REATTACH");
	FRESH();
	fl__put_le64(b + 32 + 24, 1);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EPROTO, "reserved HELLO");
	FRESH();
	fl__put_le64(b + 32, 1ull << 40);
	reseal(b, len);
	T_ASSERT_FAILS(DECODE(len), EINVAL, "feature");
	FRESH();
	T_ASSERT_OK(DECODE(len));
	fl__mon_hello_free(&d);
#undef FRESH
#undef DECODE
}

/* Encode @r (n regions) without checks, poke nothing, decode: the error and its message. */
static int try_regions(struct fl__mon_region *r, uint32_t n)
{
	static uint8_t buf[64 << 10];
	struct fl__mon_hello h = { .n = n, .r = r }, d;
	size_t len = fl__mon_encode_hello(&h, buf, sizeof(buf));
	int ret;

	T_ASSERT(len > 0 && len <= sizeof(buf));
	err[0] = '\0';
	ret = fl__mon_decode_hello(buf, len, &d, err, sizeof(err));
	if (!ret)
		fl__mon_hello_free(&d);
	/* The checker on its own agrees with the decoder (paths aside: those need a buffer). */
	return ret;
}

#define T_REGIONS_FAIL(r, n, e, needle)                                                    \
	do {                                                                               \
		int _r = try_regions(r, n);                                                \
		if (_r != -(e) || !strstr(err, needle))                                     \
			t_fail(__FILE__, __LINE__, "expected -%s with \"%s\", got %d: %s", #e, \
			       needle, _r, err);                                           \
	} while (0)

TEST(monitor_proto_region_errors)
{
	static uint8_t buf[16384];
	struct fl__mon_region r[3];
	char longpath[FL_MONITOR_MAX_PATH + 2];
	struct fl__mon_hello d;
	size_t len;

	r[0] = reg(0x100000, 0x4000, FL_MONITOR_STORE_PATTERN);
	r[1] = reg(0x200000, 0x4000, FL_MONITOR_STORE_ZERO);
	T_ASSERT_OK(try_regions(r, 2));
	/* Overlap, in either order, also when one contains the other. */
	r[1].addr = 0x103000;
	T_REGIONS_FAIL(r, 2, EINVAL, "regions 0 and 1 overlap at 0x103000");
	r[1].addr = 0xff000;
	T_REGIONS_FAIL(r, 2, EINVAL, "overlap");
	r[1] = reg(0x101000, 0x1000, FL_MONITOR_STORE_ZERO);
	T_REGIONS_FAIL(r, 2, EINVAL, "overlap");
	r[1] = reg(0x104000, 0x1000, FL_MONITOR_STORE_ZERO);	/* adjacent is fine */
	T_ASSERT_OK(try_regions(r, 2));
	/* Wrapping: the address range, and the store range. */
	r[0] = reg(~0xfffull - 0x1000, 0x4000, FL_MONITOR_STORE_PATTERN);
	T_REGIONS_FAIL(r, 1, EINVAL, "wraps");
	r[0] = reg(0x100000, 0x4000, FL_MONITOR_STORE_PATTERN);
	r[0].off = ~0xfffull;
	T_REGIONS_FAIL(r, 1, EINVAL, "store range");
	r[0].off = 0x800;
	T_REGIONS_FAIL(r, 1, EINVAL, "store offset");
	/* Page sizes. */
	r[0] = reg(0x100000, 0x4000, FL_MONITOR_STORE_PATTERN);
	for (uint32_t ps = 0; ps < 5; ps++) {
		static const uint32_t bad[5] = { 0, 2048, 6144, 1u << 31, 4097 };

		r[0].page_size = bad[ps];
		T_REGIONS_FAIL(r, 1, EINVAL, "page size");
	}
	r[0].page_size = 1u << 30;	/* 1 GiB is allowed, but the region must fit it */
	T_REGIONS_FAIL(r, 1, EINVAL, "not a multiple of its page size");
	r[0] = reg(0x100800, 0x4000, FL_MONITOR_STORE_PATTERN);
	T_REGIONS_FAIL(r, 1, EINVAL, "not a multiple");
	r[0] = reg(0x100000, 0x4800, FL_MONITOR_STORE_PATTERN);
	T_REGIONS_FAIL(r, 1, EINVAL, "not a multiple");
	r[0] = reg(0x100000, 0, FL_MONITOR_STORE_PATTERN);
	T_REGIONS_FAIL(r, 1, EINVAL, "length is zero");
	/* Kinds and their fields. */
	r[0] = reg(0x100000, 0x4000, 9);
	T_REGIONS_FAIL(r, 1, EINVAL, "unknown store kind 9");
	r[0] = reg(0x100000, 0x4000, FL__MON_STORE_MONITOR);
	T_REGIONS_FAIL(r, 1, EINVAL, "unknown store kind");
	r[0] = reg(0x100000, 0x4000, FL_MONITOR_STORE_ZERO);
	r[0].mem = 3;
	T_REGIONS_FAIL(r, 1, EINVAL, "memory type");
	r[0].mem = 0;
	r[0].off = 0x1000;
	T_REGIONS_FAIL(r, 1, EINVAL, "no store offset");
	r[0].off = 0;
	r[0].seed = 5;
	T_REGIONS_FAIL(r, 1, EINVAL, "seed");
	r[0] = reg(0x100000, 0x4000, FL_MONITOR_STORE_FILE);
	r[0].path = "relative/path";
	r[0].path_len = 13;
	T_REGIONS_FAIL(r, 1, EINVAL, "not absolute");
	memset(longpath, 'a', sizeof(longpath));
	longpath[0] = '/';
	longpath[FL_MONITOR_MAX_PATH + 1] = '\0';
	r[0].path = longpath;
	r[0].path_len = FL_MONITOR_MAX_PATH + 1;
	T_ASSERT_EQ(fl__mon_check_regions(r, 1, err, sizeof(err)), -E2BIG);
	longpath[FL_MONITOR_MAX_PATH] = '\0';
	r[0].path_len = FL_MONITOR_MAX_PATH;
	T_ASSERT_OK(try_regions(r, 1));
	T_ASSERT_OK(fl__mon_check_regions(r, 1, err, sizeof(err)));
	T_ASSERT_EQ(fl__mon_check_regions(r, 0, err, sizeof(err)), -EINVAL);
	T_ASSERT_EQ(fl__mon_check_regions(r, FL_MONITOR_MAX_REGIONS + 1, err, sizeof(err)), -E2BIG);

	/* Paths on the wire: a path for another kind, outside the message, not terminated. */
	r[0] = reg(0x100000, 0x4000, FL_MONITOR_STORE_FILE);
	{
		struct fl__mon_hello h = { .n = 1, .r = r };
		uint8_t *e = buf + O_R0;
		uint32_t poff;

		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		poff = fl__le32(e + R_PATH_OFF);
		T_ASSERT_EQ(poff, O_R0 + 64);
		/* NUL in the middle: the length says more than the string holds. */
		buf[poff + 5] = '\0';
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EINVAL,
			       "NUL byte");
		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		/* no NUL right after */
		fl__put_le32(e + R_PATH_LEN, fl__le32(e + R_PATH_LEN) - 1);
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EPROTO,
			       "NUL-terminated");
		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		/* runs past the end */
		fl__put_le32(e + R_PATH_LEN, fl__le32(e + R_PATH_LEN) + 1);
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EPROTO,
			       "outside");
		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		fl__put_le32(e + R_PATH_OFF, 8);	/* points into the header */
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EPROTO,
			       "outside");
		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		fl__put_le32(e + R_PATH_OFF, 0xfffffff0u);	/* offset + length wraps a u32 */
		fl__put_le32(e + R_PATH_LEN, 0x20);
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EPROTO,
			       "outside");
		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		fl__put_le32(e + R_PATH_LEN, FL_MONITOR_MAX_PATH + 1);
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), E2BIG,
			       "limit");
		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		fl__put_le16(e + R_STORE, FL_MONITOR_STORE_ZERO);
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EINVAL,
			       "has no path");
		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		fl__put_le32(e + R_PATH_LEN, 0);
		fl__put_le32(e + R_PATH_OFF, 0);
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EINVAL,
			       "needs a path");
		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		e[50] = 1;	/* reserved */
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EPROTO,
			       "reserved");
		len = fl__mon_encode_hello(&h, buf, sizeof(buf));
		fl__put_le32(e + R_PS, 4096 * 3);
		reseal(buf, len);
		T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EINVAL,
			       "region 0: page size 12288");
	}
	/* The limit on regions is the encoder's too. */
	{
		struct fl__mon_hello h = { .n = FL_MONITOR_MAX_REGIONS + 1, .r = r };

		T_ASSERT_EQ(fl__mon_encode_hello(&h, buf, sizeof(buf)), 0);
	}
}

static struct fl__mon_table table_of(struct fl__mon_region *r, size_t n)
{
	struct fl__mon_table t = { .r = malloc(n * sizeof(*r)), .n = n, .cap = n };

	T_ASSERT(t.r);
	memcpy(t.r, r, n * sizeof(*r));
	return t;
}

TEST(monitor_proto_layout_events)
{
	struct fl__mon_region r[2] = {
		reg(0x200000, 0x400000, FL_MONITOR_STORE_FILE),	/* 4 MiB at 2 MiB, 2 MiB pages */
		reg(0x1000000, 0x10000, FL_MONITOR_STORE_PATTERN),
	};
	struct fl__mon_table t;
	struct fl__mon_event ev;

	r[0].page_size = 2 << 20;
	r[0].off = 8 << 20;
	r[1].seed = 3;
	t = table_of(r, 2);

	/* Remove 4 KiB in the middle of the first: three pieces, page sizes refitted. */
	ev = (struct fl__mon_event){ FL_MONITOR_EV_REMOVE, 0x300000, 0x301000, 0 };
	T_ASSERT_OK(fl__mon_table_apply(&t, &ev, err, sizeof(err)));
	T_ASSERT_EQ(t.n, 4);
	T_ASSERT_EQ(t.r[0].addr, 0x200000);
	T_ASSERT_EQ(t.r[0].len, 0x100000);
	T_ASSERT_EQ(t.r[0].page_size, 1 << 20);	/* 1 MiB long: 2 MiB pages no longer fit */
	T_ASSERT_EQ(t.r[0].off, 8 << 20);
	T_ASSERT_EQ(t.r[1].addr, 0x300000);
	T_ASSERT_EQ(t.r[1].store, FL_MONITOR_STORE_ZERO);
	T_ASSERT_EQ(t.r[1].off, 0);
	T_ASSERT(!t.r[1].path);
	T_ASSERT_EQ(t.r[1].page_size, 4096);
	T_ASSERT_EQ(t.r[2].addr, 0x301000);
	T_ASSERT_EQ(t.r[2].len, 0x2ff000);
	T_ASSERT_EQ(t.r[2].off, (8 << 20) + 0x101000);
	T_ASSERT_EQ(t.r[2].page_size, 4096);
	T_ASSERT(t.r[2].path == path_a);
	T_ASSERT_OK(fl__mon_check_regions(t.r, t.n, err, sizeof(err)));

	/* The next page too: the zero pieces merge. */
	ev = (struct fl__mon_event){ FL_MONITOR_EV_REMOVE, 0x301000, 0x302000, 0 };
	T_ASSERT_OK(fl__mon_table_apply(&t, &ev, err, sizeof(err)));
	T_ASSERT_EQ(t.n, 4);
	T_ASSERT_EQ(t.r[1].len, 0x2000);
	T_ASSERT_EQ(t.r[1].page_size, 4096);
	T_ASSERT_EQ(t.r[2].addr, 0x302000);

	/* Unmap across two regions' edges, and a range touching no region. */
	ev = (struct fl__mon_event){ FL_MONITOR_EV_UNMAP, 0x1000000 - 0x1000, 0x1004000, 0 };
	T_ASSERT_OK(fl__mon_table_apply(&t, &ev, err, sizeof(err)));
	T_ASSERT_EQ(t.n, 4);
	T_ASSERT_EQ(t.r[3].addr, 0x1004000);
	T_ASSERT_EQ(t.r[3].len, 0xc000);
	T_ASSERT_EQ(t.r[3].seed, 3);
	T_ASSERT_EQ(t.r[3].off, 0x4000);
	ev = (struct fl__mon_event){ FL_MONITOR_EV_UNMAP, 0x9000000, 0x9001000, 0 };
	T_ASSERT_OK(fl__mon_table_apply(&t, &ev, err, sizeof(err)));
	T_ASSERT_EQ(t.n, 4);

	/* Remap the pattern region's first half far away: it moves, offsets stay. */
	ev = (struct fl__mon_event){ FL_MONITOR_EV_REMAP, 0x1004000, 0x7000000, 0x6000 };
	T_ASSERT_OK(fl__mon_table_apply(&t, &ev, err, sizeof(err)));
	T_ASSERT_EQ(t.n, 5);
	T_ASSERT_EQ(t.r[3].addr, 0x100a000);
	T_ASSERT_EQ(t.r[3].off, 0xa000);
	T_ASSERT_EQ(t.r[4].addr, 0x7000000);
	T_ASSERT_EQ(t.r[4].len, 0x6000);
	T_ASSERT_EQ(t.r[4].off, 0x4000);
	T_ASSERT_EQ(t.r[4].seed, 3);
	T_ASSERT_OK(fl__mon_check_regions(t.r, t.n, err, sizeof(err)));

	/* Remap onto a range some region still claims: the old claim goes. */
	ev = (struct fl__mon_event){ FL_MONITOR_EV_REMAP, 0x7000000, 0x100c000, 0x2000 };
	T_ASSERT_OK(fl__mon_table_apply(&t, &ev, err, sizeof(err)));
	T_ASSERT_OK(fl__mon_check_regions(t.r, t.n, err, sizeof(err)));
	T_ASSERT_EQ(t.r[3].addr, 0x100a000);
	T_ASSERT_EQ(t.r[3].len, 0x2000);
	T_ASSERT_EQ(t.r[4].addr, 0x100c000);
	T_ASSERT_EQ(t.r[4].off, 0x4000);
	T_ASSERT_EQ(t.r[5].addr, 0x100e000);
	T_ASSERT_EQ(t.r[5].off, 0xe000);
	T_ASSERT_EQ(t.r[6].addr, 0x7002000);

	/* Bad events change nothing. */
	ev = (struct fl__mon_event){ FL_MONITOR_EV_REMOVE, 0x300800, 0x301000, 0 };
	T_ASSERT_ERR(fl__mon_table_apply(&t, &ev, err, sizeof(err)), EINVAL);
	T_ASSERT_EQ(t.n, 7);
	free(t.r);

	/* A balloon that punches every other page: the layout stops at the limit, unchanged. */
	r[0] = reg(0x10000000, (uint64_t)(FL_MONITOR_MAX_REGIONS + 8) * 4096,
		   FL_MONITOR_STORE_PATTERN);
	t = table_of(r, 1);
	for (uint64_t i = 1;; i += 2) {
		size_t before = t.n;
		int ret;

		ev = (struct fl__mon_event){ FL_MONITOR_EV_REMOVE, r[0].addr + i * 4096,
					     r[0].addr + (i + 1) * 4096, 0 };
		ret = fl__mon_table_apply(&t, &ev, err, sizeof(err));
		if (ret == -E2BIG) {
			T_ASSERT_EQ(t.n, before);
			T_ASSERT(strstr(err, "more than"));
			break;
		}
		T_ASSERT_OK(ret);
		T_ASSERT(t.n <= FL_MONITOR_MAX_REGIONS);
	}
	free(t.r);
}

/* ------------------------------------------------------------- Firecracker */

static int fc(const char *json, struct fl__mon_hello *h)
{
	err[0] = '\0';
	return fl__fc_parse(json, strlen(json), h, err, sizeof(err));
}

TEST(monitor_proto_firecracker_valid)
{
	struct fl__mon_hello h;

	/* Current Firecracker: page_size, plus the deprecated key with the same bytes. */
	T_ASSERT_OK(fc("[{\"base_host_virt_addr\":140737488289792,\"size\":134217728,"
		       "\"offset\":0,\"page_size\":4096,\"page_size_kib\":4096}]", &h));
	T_ASSERT(h.firecracker);
	T_ASSERT_EQ(h.n, 1);
	T_ASSERT_EQ(h.r[0].addr, 140737488289792ull);
	T_ASSERT_EQ(h.r[0].len, 134217728);
	T_ASSERT_EQ(h.r[0].off, 0);
	T_ASSERT_EQ(h.r[0].page_size, 4096);
	T_ASSERT_EQ(h.r[0].store, FL__MON_STORE_MONITOR);
	T_ASSERT_EQ(h.r[0].mem, FL_MEM_ANON);
	T_ASSERT(!h.r[0].path);
	fl__mon_hello_free(&h);
	/* Older Firecracker: only page_size_kib, which holds bytes. Two regions around a hole. */
	T_ASSERT_OK(fc("[{\"base_host_virt_addr\":1048576,\"size\":2097152,\"offset\":0,"
		       "\"page_size_kib\":4096},{\"base_host_virt_addr\":8388608,\"size\":4194304,"
		       "\"offset\":2097152,\"page_size_kib\":4096}]", &h));
	T_ASSERT_EQ(h.n, 2);
	T_ASSERT_EQ(h.r[1].off, 2097152);
	T_ASSERT_EQ(h.r[1].page_size, 4096);
	fl__mon_hello_free(&h);
	/* Huge pages; white space everywhere; keys in any order; unknown keys of every kind. */
	T_ASSERT_OK(fc(" \n[ {\r\n\t\"size\" : 4194304 , \"future\" : {\"a\": [1, -2.5e3, true, "
		       "null, \"x\\u00e9\\\"\"], \"b\": {}}, \"page_size\" : 2097152,\n"
		       "\"offset\": 2097152, \"base_host_virt_addr\": 2097152, \"flags\": -1, "
		       "\"prot\": 1.5, \"name\": \"gu\xc3\xa9st\", \"list\": [] } ] \n", &h));
	T_ASSERT_EQ(h.n, 1);
	T_ASSERT_EQ(h.r[0].page_size, 2 << 20);
	T_ASSERT_EQ(h.r[0].mem, FL_MEM_HUGETLB);
	T_ASSERT_EQ(h.r[0].addr, 2097152);
	fl__mon_hello_free(&h);
	/* An escaped key is the same key. */
	T_ASSERT_OK(fc("[{\"base_host_virt_addr\":4096,\"\\u0073ize\":4096,\"offset\":0,"
		       "\"page_size\":4096}]", &h));
	T_ASSERT_EQ(h.r[0].len, 4096);
	fl__mon_hello_free(&h);
	/* The largest number there is, where it still makes a valid region. */
	T_ASSERT_OK(fc("[{\"base_host_virt_addr\":18446744073709543424,\"size\":4096,"
		       "\"offset\":18446744073709543424,\"page_size\":4096}]", &h));
	T_ASSERT_EQ(h.r[0].addr, 18446744073709543424ull);
	fl__mon_hello_free(&h);
}

#define FC_FAIL(json, e, needle)                                                           \
	do {                                                                               \
		struct fl__mon_hello _h;                                                   \
		int _r = fc(json, &_h);                                                    \
		if (_r != -(e) || !strstr(err, needle))                                     \
			t_fail(__FILE__, __LINE__, "%s: expected -%s with \"%s\", got %d: %s", \
			       json, #e, needle, _r, err);                                 \
	} while (0)

#define REG(rest) "[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0" rest "}]"

TEST(monitor_proto_firecracker_invalid)
{
	static char deep[200], big[300];

	/* Numbers: sign, fraction, exponent, overflow, leading zero, strings. */
	FC_FAIL(REG(",\"page_size\":-4096"), EINVAL, "negative");
	FC_FAIL(REG(",\"page_size\":-0"), EINVAL, "negative");
	FC_FAIL(REG(",\"page_size\":4096.0"), EINVAL, "not an integer");
	FC_FAIL(REG(",\"page_size\":4e3"), EINVAL, "not an integer");
	FC_FAIL(REG(",\"page_size\":18446744073709551616"), EINVAL, "exceeds");
	FC_FAIL(REG(",\"page_size\":99999999999999999999999"), EINVAL, "exceeds");
	FC_FAIL(REG(",\"page_size\":04096"), EPROTO, "syntax");
	FC_FAIL(REG(",\"page_size\":\"4096\""), EINVAL, "unsigned integer");
	FC_FAIL(REG(",\"page_size\":null"), EINVAL, "unsigned integer");
	FC_FAIL(REG(",\"page_size\":+4096"), EPROTO, "syntax");
	/* Keys: twice, missing, disagreeing. */
	FC_FAIL(REG(",\"page_size\":4096,\"size\":4096"), EINVAL, "appears twice");
	FC_FAIL(REG(",\"page_size\":4096,\"page_size\":4096"), EINVAL, "appears twice");
	FC_FAIL(REG(""), EINVAL, "\"page_size\" is missing");
	FC_FAIL("[{\"size\":4096,\"offset\":0,\"page_size\":4096}]", EINVAL,
		"\"base_host_virt_addr\" is missing");
	FC_FAIL(REG(",\"page_size\":4096,\"page_size_kib\":4"), EINVAL, "disagree");
	/* Values that make no region. */
	FC_FAIL(REG(",\"page_size\":8192"), EINVAL, "neither 4096 nor 2097152");
	FC_FAIL(REG(",\"page_size\":0"), EINVAL, "neither");
	FC_FAIL(REG(",\"page_size\":2097152"), EINVAL, "not a multiple");
	FC_FAIL("[{\"base_host_virt_addr\":4096,\"size\":6144,\"offset\":0,\"page_size\":4096}]",
		EINVAL, "not a multiple");
	FC_FAIL("[{\"base_host_virt_addr\":4096,\"size\":4096,\"offset\":100,\"page_size\":4096}]",
		EINVAL, "store offset");
	FC_FAIL("[{\"base_host_virt_addr\":4096,\"size\":0,\"offset\":0,\"page_size\":4096}]",
		EINVAL, "length is zero");
	FC_FAIL("[{\"base_host_virt_addr\":18446744073709547520,\"size\":8192,\"offset\":0,"
		"\"page_size\":4096}]", EINVAL, "wraps");
	FC_FAIL("[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0,\"page_size\":4096},"
		"{\"base_host_virt_addr\":8192,\"size\":4096,\"offset\":0,\"page_size\":4096}]",
		EINVAL, "overlap");
	/* Structure. */
	FC_FAIL("[]", EINVAL, "no regions");
	FC_FAIL("{\"size\":1}", EPROTO, "expected '['");
	FC_FAIL("[1]", EINVAL, "not an object");
	FC_FAIL("[[]]", EINVAL, "not an object");
	FC_FAIL(REG(",\"page_size\":4096") ",]", EPROTO, "after the region list");
	FC_FAIL("[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0,\"page_size\":4096},]",
		EPROTO, "expected a value");
	FC_FAIL("[{\"size\" 1}]", EPROTO, "expected ':'");
	FC_FAIL("[{\"size\":1,}]", EPROTO, "expected a key");
	FC_FAIL(REG(",\"page_size\":4096") "x", EPROTO, "after the region list");
	FC_FAIL(REG(",\"page_size\":4096") "[]", EPROTO, "after the region list");
	FC_FAIL("[{\"x\":tru}]", EPROTO, "literal");
	FC_FAIL("[{\"x\":\"a\x01\"}]", EPROTO, "control character");
	FC_FAIL("[{\"x\":\"\\q\"}]", EPROTO, "bad escape");
	FC_FAIL("[{\"x\":\"\\u12g4\"}]", EPROTO, "\\u escape");
	FC_FAIL("[{\"x\":\"\xc3\x28\"}]", EPROTO, "UTF-8");
	FC_FAIL("[{\"x\":\"\xed\xa0\x80\"}]", EPROTO, "UTF-8");	/* a surrogate */
	FC_FAIL("[{\"x\":\"\xc0\xaf\"}]", EPROTO, "UTF-8");		/* overlong */
	FC_FAIL("[{\"x\":1.}]", EPROTO, "after '.'");
	FC_FAIL("[{\"x\":1e}]", EPROTO, "exponent");
	FC_FAIL("[{\"x\":-}]", EPROTO, "digit");
	FC_FAIL("\xef\xbb\xbf[]", EPROTO, "expected '['");	/* no byte order mark */
	/* Valid beginnings: read more. */
	FC_FAIL("", EAGAIN, "incomplete");
	FC_FAIL("  [", EAGAIN, "incomplete");
	FC_FAIL("[{\"size\":40", EAGAIN, "incomplete");
	FC_FAIL("[{\"x\":\"\xc3", EAGAIN, "incomplete");
	FC_FAIL("[{\"x\":\"\\u00", EAGAIN, "incomplete");
	FC_FAIL("[{\"x\":fal", EAGAIN, "incomplete");
	FC_FAIL("[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0,\"page_size\":4096}",
		EAGAIN, "incomplete");
	/* Limits: nesting depth. */
	strcpy(deep, "[{\"x\":");
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	FC_FAIL(deep, E2BIG, "nested deeper");
	/* ...and too many regions (1 byte more than allowed costs nothing to build). */
	{
		size_t n = FL_MONITOR_MAX_REGIONS + 1, len = 0;
		char *s = malloc(n * 80 + 4);
		struct fl__mon_hello h;

		T_ASSERT(s);
		s[len++] = '[';
		for (size_t i = 0; i < n; i++)
			len += (size_t)sprintf(s + len,
					       "%s{\"base_host_virt_addr\":%zu,\"size\":4096,"
					       "\"offset\":0,\"page_size\":4096}",
					       i ? "," : "", (i + 1) * 4096);
		s[len++] = ']';
		s[len] = '\0';
		T_ASSERT_ERR(fl__fc_parse(s, len, &h, err, sizeof(err)), E2BIG);
		T_ASSERT(strstr(err, "more than"));
		/* The limit itself is fine. */
		len = (size_t)(strrchr(s, '{') - s) - 1;
		s[len++] = ']';
		T_ASSERT_OK(fl__fc_parse(s, len, &h, err, sizeof(err)));
		T_ASSERT_EQ(h.n, FL_MONITOR_MAX_REGIONS);
		fl__mon_hello_free(&h);
		free(s);
	}
	/* Byte limit, before any parsing. */
	T_ASSERT_ERR(fl__fc_parse(big, FL_MONITOR_MAX_MSG + 1, NULL, err, sizeof(err)), EINVAL);
	{
		struct fl__mon_hello h;

		T_ASSERT_ERR(fl__fc_parse(big, FL_MONITOR_MAX_MSG + 1, &h, err, sizeof(err)),
			     E2BIG);
	}
	T_ASSERT_EQ(fl__mon_sniff("[", 1), FL__MON_SNIFF_JSON);
	T_ASSERT_EQ(fl__mon_sniff(" ", 1), FL__MON_SNIFF_JSON);
	T_ASSERT_EQ(fl__mon_sniff("{", 1), -EPROTO);
	T_ASSERT_EQ(fl__mon_sniff("", 0), -EAGAIN);
}

/* ------------------------------------------------- receiving on a socket */

static void send_bytes(int sock, const void *buf, size_t len, int fd)
{
	T_ASSERT_OK(fl__mon_send(sock, buf, len, fd, fl__now_ms() + (uint64_t)t_ms(5000)));
}

TEST(monitor_proto_recv_hello)
{
	static uint8_t msg[8192];
	struct fl__mon_region r[3];
	struct fl__mon_hello h;
	void *rbuf;
	int sv[2], pfd[2], fd;
	size_t len = sample_hello(msg, sizeof(msg), r);
	const char *json = "[{\"base_host_virt_addr\":4096,\"size\":8192,\"offset\":0,"
			   "\"page_size\":4096,\"page_size_kib\":4096}]";

	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));

	/* Native, in three pieces, the descriptor with the first. */
	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	send_bytes(sv[0], msg, 5, pfd[0]);
	send_bytes(sv[0], msg + 5, 40, -1);
	send_bytes(sv[0], msg + 45, len - 45, -1);
	T_ASSERT_OK(fl__mon_recv_hello(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd, err,
				       sizeof(err)));
	T_ASSERT_EQ(h.n, 3);
	T_ASSERT(!strcmp(h.r[0].path, path_a));
	T_ASSERT(fd >= 0 && fd != pfd[0]);
	T_ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* A pipe is not a userfaultfd. */
	T_ASSERT_FAILS(fl__mon_check_uffd(fd, err, sizeof(err)), EBADF, "not a userfaultfd");
	close(fd);
	T_ASSERT_FAILS(fl__mon_check_uffd(fd, err, sizeof(err)), EBADF, "not open");
	fl__mon_hello_free(&h);
	free(rbuf);

	/* Firecracker: JSON in pieces, then silence (the socket stays open). */
	send_bytes(sv[0], json, 10, pfd[0]);
	send_bytes(sv[0], json + 10, strlen(json) - 10, -1);
	T_ASSERT_OK(fl__mon_recv_hello(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd, err,
				       sizeof(err)));
	T_ASSERT(h.firecracker);
	T_ASSERT_EQ(h.n, 1);
	T_ASSERT_EQ(h.r[0].len, 8192);
	close(fd);
	fl__mon_hello_free(&h);
	free(rbuf);

	/* No descriptor: refused. Two descriptors: refused, and both closed. */
	send_bytes(sv[0], msg, len, -1);
	T_ASSERT_FAILS(fl__mon_recv_hello(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd, err,
					  sizeof(err)), EPROTO, "no userfaultfd");
	{
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(2 * sizeof(int))];
		} ctl = { 0 };
		struct iovec iov = { .iov_base = msg, .iov_len = len };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
				    .msg_controllen = sizeof(ctl.buf) };
		int two[2] = { pfd[0], pfd[1] };

		ctl.h.cmsg_level = SOL_SOCKET;
		ctl.h.cmsg_type = SCM_RIGHTS;
		ctl.h.cmsg_len = CMSG_LEN(sizeof(two));
		memcpy(CMSG_DATA(&ctl.h), two, sizeof(two));
		T_ASSERT_EQ(sendmsg(sv[0], &m, 0), (ssize_t)len);
		T_ASSERT_FAILS(fl__mon_recv_hello(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd,
						  err, sizeof(err)), EPROTO, "descriptors");
	}
	close(sv[0]);
	close(sv[1]);

	/* Garbage first byte; a hang-up halfway; silence past the deadline. */
	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	send_bytes(sv[0], "GET / HTTP/1.1\r\n", 16, pfd[0]);
	T_ASSERT_FAILS(fl__mon_recv_hello(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd, err,
					  sizeof(err)), EPROTO, "neither");
	close(sv[0]);
	close(sv[1]);
	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	send_bytes(sv[0], msg, 40, pfd[0]);
	close(sv[0]);
	T_ASSERT_FAILS(fl__mon_recv_hello(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd, err,
					  sizeof(err)), EPROTO, "hang-up");
	close(sv[1]);
	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	send_bytes(sv[0], "[{\"size\":", 9, pfd[0]);
	close(sv[0]);
	T_ASSERT_FAILS(fl__mon_recv_hello(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd, err,
					  sizeof(err)), EPROTO, "hang-up inside the JSON");
	close(sv[1]);
	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	send_bytes(sv[0], msg, 40, pfd[0]);
	T_ASSERT_ERR(fl__mon_recv_hello(sv[1], fl__now_ms(), &h, &rbuf, &fd, err, sizeof(err)),
		     ETIMEDOUT);
	close(sv[0]);
	close(sv[1]);

	/* SO_PEERCRED on a socket pair: our own uid. */
	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	{
		pid_t pid;
		uid_t uid;

		T_ASSERT_OK(fl__mon_peer_check(sv[1], getuid(), false, &pid, &uid, err,
					       sizeof(err)));
		T_ASSERT_EQ(pid, getpid());
		T_ASSERT_EQ(uid, getuid());
		T_ASSERT_FAILS(fl__mon_peer_check(sv[1], getuid() + 1, false, NULL, NULL, err,
						  sizeof(err)), EPERM, "serves uid");
		T_ASSERT_OK(fl__mon_peer_check(sv[1], getuid() + 1, true, NULL, NULL, err,
					       sizeof(err)));
	}
	close(sv[0]);
	close(sv[1]);
	close(pfd[0]);
	close(pfd[1]);
	fl__mon_hello_free(&h);
}

/* ------------------------------------------------------- fork children's claims */

TEST(monitor_proto_claim_grant)
{
	static uint8_t buf[8192], msg[8192], ext[256];
	struct fl__mon_region r[3];
	struct fl__mon_claim c = { .session = 0xabcdef0123456789ull, .token = 0x5eedull, .pid = 7 };
	struct fl__mon_claim c2;
	struct fl__mon_hello h, d;
	uint8_t page[4096] = { 0 };
	uint64_t session, token;
	void *rbuf;
	size_t len;
	int sv[2], pfd[2], fd;
	bool is_claim;

	/* A HELLO naming a beacon page: flag CHILDREN, the address where "reserved" was. */
	len = sample_hello(msg, sizeof(msg), r);
	T_ASSERT_OK(fl__mon_decode_hello(msg, len, &d, err, sizeof(err)));
	h = d;
	h.flags = FL_MONITOR_HELLO_CHILDREN;
	h.beacon = 0x7f0000101000ull;
	len = fl__mon_encode_hello(&h, buf, sizeof(buf));
	T_ASSERT_OK(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)));
	T_ASSERT_EQ(d.flags, FL_MONITOR_HELLO_CHILDREN);
	T_ASSERT_EQ(d.beacon, 0x7f0000101000ull);
	fl__mon_hello_free(&d);
	/* h keeps the first decode's regions (their paths point into msg) until the end. */
	/* Without the flag the field is reserved; with it, the page must be one of its own. */
	fl__put_le32(buf + O_FLAGS, 0);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EPROTO, "reserved");
	fl__put_le32(buf + O_FLAGS, FL_MONITOR_HELLO_CHILDREN);
	fl__put_le64(buf + FL_MONITOR_HDR_LEN + 24, 0x7f0000101800ull);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EINVAL, "beacon");
	fl__put_le64(buf + FL_MONITOR_HDR_LEN + 24, 0);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EINVAL, "beacon");
	fl__put_le64(buf + FL_MONITOR_HDR_LEN + 24, 0x7f0000000000ull + 4 * 4096);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EINVAL,
		       "overlaps a region");
	fl__put_le32(buf + O_FLAGS, 1u << 2);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EPROTO,
		       "unknown HELLO flags");

	/* GRANT: the child's layout, its session; never REATTACH; may be empty. */
	h.session = c.session;
	len = fl__mon_encode_grant(&h, buf, sizeof(buf));
	T_ASSERT_EQ(buf[O_TYPE], FL_MONITOR_MSG_GRANT);
	T_ASSERT_OK(fl__mon_decode_grant(buf, len, &d, err, sizeof(err)));
	T_ASSERT_EQ(d.n, 3);
	T_ASSERT_EQ(d.session, c.session);
	T_ASSERT(!strcmp(d.r[0].path, path_a));
	fl__mon_hello_free(&d);
	T_ASSERT_FAILS(fl__mon_decode_hello(buf, len, &d, err, sizeof(err)), EPROTO,
		       "expected a HELLO message, got type 7 (GRANT)");
	fl__put_le32(buf + O_FLAGS, FL_MONITOR_HELLO_CHILDREN | FL_MONITOR_HELLO_REATTACH);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_grant(buf, len, &d, err, sizeof(err)), EPROTO,
		       "unknown GRANT flags");
	fl__put_le32(buf + O_FLAGS, 0);
	fl__put_le64(buf + FL_MONITOR_HDR_LEN + 24, 0);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_grant(buf, len, &d, err, sizeof(err)), EPROTO,
		       "without flag CHILDREN");
	h.n = 0;
	len = fl__mon_encode_grant(&h, buf, sizeof(buf));
	T_ASSERT_OK(fl__mon_decode_grant(buf, len, &d, err, sizeof(err)));
	T_ASSERT_EQ(d.n, 0);
	fl__mon_hello_free(&d);
	h.attach_seq = 1;
	len = fl__mon_encode_grant(&h, buf, sizeof(buf));
	T_ASSERT_FAILS(fl__mon_decode_grant(buf, len, &d, err, sizeof(err)), EINVAL,
		       "attach sequence");

	/* CLAIM: session and token, both non-zero; nothing else. */
	len = fl__mon_encode_claim(&c, buf, sizeof(buf));
	T_ASSERT_EQ(len, FL_MONITOR_HDR_LEN + FL_MONITOR_CLAIM_FIXED_LEN);
	T_ASSERT_OK(fl__mon_decode_claim(buf, len, &c2, err, sizeof(err)));
	T_ASSERT(c2.session == c.session && c2.token == c.token && c2.pid == 7);
	T_ASSERT_FAILS(fl__mon_decode_claim(buf, len - 8, &c2, err, sizeof(err)), EPROTO,
		       "header says");
	fl__put_le64(buf + FL_MONITOR_HDR_LEN + 8, 0);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_claim(buf, len, &c2, err, sizeof(err)), EINVAL,
		       "zero session or token");
	len = fl__mon_encode_claim(&c, buf, sizeof(buf));
	fl__put_le32(buf + FL_MONITOR_HDR_LEN + 20, 1);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_claim(buf, len, &c2, err, sizeof(err)), EPROTO, "reserved");
	len = fl__mon_encode_claim(&c, buf, sizeof(buf));
	fl__put_le32(buf + O_FLAGS, 1);
	reseal(buf, len);
	T_ASSERT_FAILS(fl__mon_decode_claim(buf, len, &c2, err, sizeof(err)), EPROTO,
		       "CLAIM flags");
	/* A longer fixed part (a later minor version) is skipped; trailing bytes are not. */
	memcpy(ext, buf, FL_MONITOR_HDR_LEN + FL_MONITOR_CLAIM_FIXED_LEN);
	memset(ext + FL_MONITOR_HDR_LEN + FL_MONITOR_CLAIM_FIXED_LEN, 0, 8);
	fl__put_le32(ext + O_FLAGS, 0);
	fl__put_le16(ext + O_FIXED_LEN, FL_MONITOR_CLAIM_FIXED_LEN + 8);
	fl__put_le32(ext + O_TOTAL, (uint32_t)len + 8);
	reseal(ext, len + 8);
	T_ASSERT_OK(fl__mon_decode_claim(ext, len + 8, &c2, err, sizeof(err)));
	fl__put_le16(ext + O_FIXED_LEN, FL_MONITOR_CLAIM_FIXED_LEN);
	reseal(ext, len + 8);
	T_ASSERT_FAILS(fl__mon_decode_claim(ext, len + 8, &c2, err, sizeof(err)), EPROTO,
		       "after the CLAIM");

	/* The beacon: a zero page (nobody wrote it) holds no claim. */
	T_ASSERT(!fl__mon_beacon_read(page, &session, &token));
	fl__mon_beacon_write(page, c.session, c.token);
	T_ASSERT(!memcmp(page, "FLCHILD1", 8));
	T_ASSERT(fl__mon_beacon_read(page, &session, &token));
	T_ASSERT(session == c.session && token == c.token);
	fl__mon_beacon_write(page, c.session, 0);
	T_ASSERT(!fl__mon_beacon_read(page, &session, &token));

	/* A monitor's first message may be a CLAIM, which carries no descriptor. */
	T_ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	T_ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	len = fl__mon_encode_claim(&c, buf, sizeof(buf));
	send_bytes(sv[0], buf, len, -1);
	T_ASSERT_OK(fl__mon_recv_first(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd, &c2,
				       &is_claim, err, sizeof(err)));
	T_ASSERT(is_claim);
	T_ASSERT_EQ(c2.token, c.token);
	send_bytes(sv[0], buf, len, pfd[0]);
	T_ASSERT_FAILS(fl__mon_recv_first(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd, &c2,
					  &is_claim, err, sizeof(err)), EPROTO,
		       "descriptor attached to a CLAIM");
	/* Where no CLAIM is expected, it is not a HELLO. */
	send_bytes(sv[0], buf, len, -1);
	T_ASSERT_FAILS(fl__mon_recv_hello(sv[1], fl__now_ms() + (uint64_t)t_ms(5000), &h, &rbuf, &fd, err,
					  sizeof(err)), EPROTO, "expected a HELLO");
	close(sv[0]);
	close(sv[1]);
	close(pfd[0]);
	close(pfd[1]);
	fl__mon_hello_free(&h);
}
