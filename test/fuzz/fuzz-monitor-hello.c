/* SPDX-License-Identifier: MIT */
/* Fuzz target: the monitor protocol decoders (HELLO, GRANT, CLAIM, ACK/ERROR, EVENT, BYE, the
 * beacon) and the layout. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultline.h"
#include "fuzz.h"
#include "monitor/monitor-int.h"
#include "net/crc32c.h"

/*
 * Each input is one message from a peer. Properties:
 * 1. Nothing crashes, leaks or reads out of bounds (the sanitizers watch),
 *    and every failure comes with a message.
 * 2. A HELLO or GRANT that decodes re-encodes, and that decodes to the
 *    same layout; likewise CLAIM, ACK, ERROR and EVENT (which re-encode to
 *    at most their size), and a beacon page.
 * 3. Events that decode, applied to a layout, keep it valid: sorted,
 *    within the limits, no overlap, every region passing the checks.
 * Each input is decoded as it is, then with its checksum made right, so
 * that mutations reach the fields behind the checksum.
 */

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "fuzz-monitor-hello: %s:%d: %s\n", __FILE__,    \
				__LINE__, #cond);                                       \
			abort();                                                        \
		}                                                                       \
	} while (0)

static char err[512];

static void failed_with_message(int r)
{
	CHECK(r == -EPROTO || r == -EPROTONOSUPPORT || r == -E2BIG || r == -EINVAL ||
	      r == -ENOMEM);
	CHECK(err[0] != '\0');
}

static void same_region(const struct fl__mon_region *a, const struct fl__mon_region *b)
{
	CHECK(a->addr == b->addr && a->len == b->len && a->off == b->off && a->seed == b->seed);
	CHECK(a->page_size == b->page_size && a->store == b->store && a->mem == b->mem);
	CHECK(a->path_len == b->path_len);
	CHECK(!a->path == !b->path);
	if (a->path)
		CHECK(!memcmp(a->path, b->path, a->path_len + 1));
}

/* A HELLO (@grant false) or a GRANT: the same layout under two types. */
static void layout(const uint8_t *data, size_t size, bool grant)
{
	int (*decode)(const void *, size_t, struct fl__mon_hello *, char *, size_t) =
		grant ? fl__mon_decode_grant : fl__mon_decode_hello;
	size_t (*encode)(const struct fl__mon_hello *, void *, size_t) =
		grant ? fl__mon_encode_grant : fl__mon_encode_hello;
	struct fl__mon_hello h, h2;
	uint8_t *buf;
	size_t len;
	int r;

	err[0] = '\0';
	r = decode(data, size, &h, err, sizeof(err));
	if (r < 0) {
		failed_with_message(r);
		return;
	}
	CHECK(h.n <= FL_MONITOR_MAX_REGIONS && (grant || h.n >= 1));
	CHECK(!h.n || fl__mon_check_regions(h.r, h.n, err, sizeof(err)) == 0);
	CHECK(!(h.flags & FL_MONITOR_HELLO_CHILDREN) == !h.beacon);
	CHECK(h.beacon % 4096 == 0);
	for (uint32_t i = 0; h.beacon && i < h.n; i++)
		CHECK(h.beacon + 4096 <= h.r[i].addr || h.r[i].addr + h.r[i].len <= h.beacon);
	if (grant)
		CHECK(h.flags == FL_MONITOR_HELLO_CHILDREN && !h.attach_seq);
	/*
	 * Shared strings are sent once, so this is rarely longer than the input;
	 * it can be (paths that are suffixes of one another share bytes there),
	 * and then too long to send at all.
	 */
	len = encode(&h, NULL, 0);
	if (!len) {
		fl__mon_hello_free(&h);
		return;
	}
	CHECK(len >= FL_MONITOR_HDR_LEN && len <= FL_MONITOR_MAX_MSG);
	buf = malloc(len);
	CHECK(buf);
	CHECK(encode(&h, buf, len) == len);
	CHECK(decode(buf, len, &h2, err, sizeof(err)) == 0);
	CHECK(h2.flags == h.flags && h2.features == h.features && h2.session == h.session);
	CHECK(h2.beacon == h.beacon);
	CHECK(h2.pid == h.pid && h2.attach_seq == h.attach_seq && h2.n == h.n);
	for (uint32_t i = 0; i < h.n; i++)
		same_region(&h.r[i], &h2.r[i]);
	fl__mon_hello_free(&h2);
	fl__mon_hello_free(&h);
	free(buf);
}

static void reply(const uint8_t *data, size_t size)
{
	static uint8_t buf[FL_MONITOR_HDR_LEN + FL_MONITOR_ERROR_FIXED_LEN +
			   FL_MONITOR_MAX_ERRMSG + 1];
	struct fl__mon_reply rep, rep2;
	size_t len;
	int r;

	err[0] = '\0';
	r = fl__mon_decode_reply(data, size, &rep, err, sizeof(err));
	if (r < 0) {
		failed_with_message(r);
		return;
	}
	if (rep.type == FL_MONITOR_MSG_ACK) {
		len = fl__mon_encode_ack(rep.session, rep.pid, buf, sizeof(buf));
		CHECK(len <= size);
	} else {
		CHECK(rep.type == FL_MONITOR_MSG_ERROR);
		CHECK(rep.err < 0 && rep.err >= -4095);
		CHECK(strlen(rep.msg) <= FL_MONITOR_MAX_ERRMSG);
		len = fl__mon_encode_error(rep.err, rep.msg, buf, sizeof(buf));
		CHECK(len <= sizeof(buf));
	}
	CHECK(fl__mon_decode_reply(buf, len, &rep2, err, sizeof(err)) == 0);
	CHECK(rep2.type == rep.type && rep2.session == rep.session && rep2.pid == rep.pid);
	CHECK(rep2.err == rep.err);
	if (rep.msg)
		CHECK(!strcmp(rep.msg, rep2.msg));
}

/* A small layout to apply events to: a file region split in two, a pattern, a zero run. */
static const char path[] = "/var/lib/faultline/fuzz.mem";
static const struct fl__mon_region base_layout[] = {
	{ .addr = 0x10000000, .len = 0x400000, .off = 0x200000, .page_size = 0x200000,
	  .store = FL_MONITOR_STORE_FILE, .path = path, .path_len = sizeof(path) - 1 },
	{ .addr = 0x10400000, .len = 0x10000, .page_size = 4096, .store = FL_MONITOR_STORE_ZERO },
	{ .addr = 0x10410000, .len = 0x3f0000, .off = 0x610000, .page_size = 4096,
	  .store = FL_MONITOR_STORE_FILE, .path = path, .path_len = sizeof(path) - 1 },
	{ .addr = 0x7f0000000000, .len = 0x100000, .seed = 7, .page_size = 0x10000,
	  .store = FL_MONITOR_STORE_PATTERN, .mem = FL_MEM_SHMEM },
};

static void events(const uint8_t *data, size_t size)
{
	static struct fl__mon_event ev[FL_MONITOR_MAX_EVENTS], ev2[FL_MONITOR_MAX_EVENTS];
	static uint8_t buf[FL_MONITOR_HDR_LEN + FL_MONITOR_MAX_EVENTS * FL_MONITOR_EVENT_LEN];
	struct fl__mon_table t;
	size_t n, n2, len;
	int r;

	err[0] = '\0';
	r = fl__mon_decode_events(data, size, ev, FL_MONITOR_MAX_EVENTS, &n, err, sizeof(err));
	if (r < 0) {
		failed_with_message(r);
		return;
	}
	CHECK(n >= 1 && n <= FL_MONITOR_MAX_EVENTS);
	len = fl__mon_encode_events(ev, n, buf, sizeof(buf));
	CHECK(len && len <= size);
	CHECK(fl__mon_decode_events(buf, len, ev2, FL_MONITOR_MAX_EVENTS, &n2, err,
				    sizeof(err)) == 0);
	CHECK(n2 == n);
	for (size_t i = 0; i < n; i++)
		CHECK(ev2[i].type == ev[i].type && ev2[i].a == ev[i].a && ev2[i].b == ev[i].b &&
		      ev2[i].c == ev[i].c);

	t.n = t.cap = sizeof(base_layout) / sizeof(base_layout[0]);
	t.r = malloc(t.cap * sizeof(*t.r));
	CHECK(t.r);
	memcpy(t.r, base_layout, sizeof(base_layout));
	for (size_t i = 0; i < n; i++) {
		size_t before = t.n;

		r = fl__mon_table_apply(&t, &ev[i], err, sizeof(err));
		if (r < 0) {
			CHECK(r == -E2BIG || r == -ENOMEM);
			CHECK(t.n == before);
			continue;
		}
		CHECK(t.n <= FL_MONITOR_MAX_REGIONS);
		if (!t.n)
			break;	/* everything unmapped */
		for (size_t k = 1; k < t.n; k++)
			CHECK(t.r[k - 1].addr + t.r[k - 1].len <= t.r[k].addr);
		if (fl__mon_check_regions(t.r, t.n, err, sizeof(err))) {
			fprintf(stderr, "fuzz-monitor-hello: layout invalid after event %zu: %s\n",
				i, err);
			abort();
		}
	}
	free(t.r);
}

static void claim(const uint8_t *data, size_t size)
{
	uint8_t buf[FL_MONITOR_HDR_LEN + FL_MONITOR_CLAIM_FIXED_LEN];
	struct fl__mon_claim c, c2;
	uint64_t session, token;
	size_t len;
	int r;

	err[0] = '\0';
	r = fl__mon_decode_claim(data, size, &c, err, sizeof(err));
	if (r < 0) {
		failed_with_message(r);
	} else {
		CHECK(c.session && c.token);
		len = fl__mon_encode_claim(&c, buf, sizeof(buf));
		CHECK(len == sizeof(buf) && len <= size);
		CHECK(fl__mon_decode_claim(buf, len, &c2, err, sizeof(err)) == 0);
		CHECK(c2.session == c.session && c2.token == c.token && c2.pid == c.pid);
	}
	/* The same bytes as a beacon page (a child reads whatever is in it). */
	if (size >= FL__MON_BEACON_LEN && fl__mon_beacon_read(data, &session, &token)) {
		uint8_t page[FL__MON_BEACON_LEN];

		CHECK(session && token);
		fl__mon_beacon_write(page, session, token);
		CHECK(!memcmp(page, data, sizeof(page)));
	}
}

static void bye(const uint8_t *data, size_t size)
{
	int r;

	err[0] = '\0';
	r = fl__mon_decode_bye(data, size, err, sizeof(err));
	if (r < 0)
		failed_with_message(r);
}

static void all(const uint8_t *data, size_t size)
{
	size_t total;
	int r;

	layout(data, size, false);
	layout(data, size, true);
	claim(data, size);
	reply(data, size);
	events(data, size);
	bye(data, size);
	r = fl__mon_frame(data, size, &total, err, sizeof(err));
	if (!r)
		CHECK(total >= FL_MONITOR_HDR_LEN && total <= FL_MONITOR_MAX_MSG);
	else
		CHECK(r == -EAGAIN || r == -EPROTO || r == -EPROTONOSUPPORT || r == -E2BIG);
	r = fl__mon_sniff(data, size);
	CHECK(r == -EAGAIN || r == -EPROTO || r == FL__MON_SNIFF_NATIVE || r == FL__MON_SNIFF_JSON);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;

	all(data, size);
	if (size < FL_MONITOR_HDR_LEN || size > FL_MONITOR_MAX_MSG)
		return 0;
	/* Again with the checksum made right (the field is bytes 28-31, read as zero). */
	fixed = malloc(size);
	CHECK(fixed);
	memcpy(fixed, data, size);
	memset(fixed + 28, 0, 4);
	{
		uint32_t crc = fl__crc32c(0, fixed, size);

		for (int i = 0; i < 4; i++)
			fixed[28 + i] = (uint8_t)(crc >> (8 * i));
	}
	all(fixed, size);
	free(fixed);
	return 0;
}
