/* SPDX-License-Identifier: MIT */
/* The monitor wire format: fixed-width little-endian messages, checked field by field. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultline.h"
#include "monitor-int.h"
#include "net/crc32c.h"
#include "net/le.h"

/* Header field offsets (doc/monitor-protocol.md, "Header"). */
#define H_MAGIC 0
#define H_VERSION 4
#define H_TYPE 6
#define H_HDR_LEN 8
#define H_FIXED_LEN 10
#define H_ENTRY_LEN 12
#define H_RESERVED 14
#define H_TOTAL_LEN 16
#define H_FLAGS 20
#define H_COUNT 24
#define H_CRC 28

/* Growth limits of the length fields: newer peers may append, up to this. */
#define MAX_PART_LEN 256
#define MIN_PAGE_SIZE 4096u

void fl__mon_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* --------------------------------------------------------------- CRC-32C */

/* The checksum of a message: every byte, with the checksum field read as zero. */
static uint32_t msg_crc(const uint8_t *b, size_t total)
{
	static const uint8_t zero[4];
	uint32_t crc = fl__crc32c(0, b, H_CRC);

	crc = fl__crc32c(crc, zero, sizeof(zero));
	return fl__crc32c(crc, b + H_CRC + 4, total - H_CRC - 4);
}

/* ----------------------------------------------------------------- names */

static const char *type_name(uint32_t type)
{
	switch (type) {
	case FL_MONITOR_MSG_HELLO:
		return "HELLO";
	case FL_MONITOR_MSG_ACK:
		return "ACK";
	case FL_MONITOR_MSG_ERROR:
		return "ERROR";
	case FL_MONITOR_MSG_EVENT:
		return "EVENT";
	case FL_MONITOR_MSG_BYE:
		return "BYE";
	case FL_MONITOR_MSG_CLAIM:
		return "CLAIM";
	case FL_MONITOR_MSG_GRANT:
		return "GRANT";
	}
	return "unknown";
}

static const char *store_name(uint32_t store)
{
	switch (store) {
	case FL_MONITOR_STORE_FILE:
		return "file";
	case FL_MONITOR_STORE_PATTERN:
		return "pattern";
	case FL_MONITOR_STORE_ZERO:
		return "zero";
	case FL__MON_STORE_MONITOR:
		return "monitor";
	}
	return "unknown";
}

/* ----------------------------------------------------------------- frame */

int fl__mon_sniff(const void *buf, size_t len)
{
	const uint8_t *b = buf;

	if (!len)
		return -EAGAIN;
	if (b[0] == (uint8_t)(FL_MONITOR_PROTO_MAGIC & 0xff))
		return FL__MON_SNIFF_NATIVE;
	if (b[0] == '[' || b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r')
		return FL__MON_SNIFF_JSON;
	return -EPROTO;
}

int fl__mon_frame(const void *buf, size_t len, size_t *ret_total, char *err, size_t errlen)
{
	const uint8_t *b = buf;
	uint8_t magic[4];
	uint32_t version, hdr_len, total;

	fl__put_le32(magic, FL_MONITOR_PROTO_MAGIC);
	/* Refuse a wrong magic as early as its first byte: it may not be our protocol at all. */
	if (memcmp(b, magic, len < 4 ? len : 4)) {
		fl__mon_errf(err, errlen, "not a faultline monitor message (bad magic)");
		return -EPROTO;
	}
	if (len < FL_MONITOR_HDR_LEN)
		return -EAGAIN;
	version = fl__le16(b + H_VERSION);
	if (version != FL_MONITOR_PROTO_VERSION) {
		fl__mon_errf(err, errlen, "protocol version %u not supported (this side speaks %u)",
			     version, FL_MONITOR_PROTO_VERSION);
		return -EPROTONOSUPPORT;
	}
	hdr_len = fl__le16(b + H_HDR_LEN);
	if (hdr_len < FL_MONITOR_HDR_LEN || hdr_len > MAX_PART_LEN || hdr_len % 8) {
		fl__mon_errf(err, errlen, "header length %u invalid (%u to %u, a multiple of 8)",
			     hdr_len, FL_MONITOR_HDR_LEN, MAX_PART_LEN);
		return -EPROTO;
	}
	total = fl__le32(b + H_TOTAL_LEN);
	if (total > FL_MONITOR_MAX_MSG) {
		fl__mon_errf(err, errlen, "message of %u bytes exceeds the limit of %u", total,
			     FL_MONITOR_MAX_MSG);
		return -E2BIG;
	}
	if (total < hdr_len) {
		fl__mon_errf(err, errlen, "total length %u is shorter than the header (%u)", total,
			     hdr_len);
		return -EPROTO;
	}
	*ret_total = total;
	return 0;
}

uint32_t fl__mon_msg_type(const void *buf)
{
	return fl__le16((const uint8_t *)buf + H_TYPE);
}

/* The parts of a message after its header checks. */
struct parts {
	const uint8_t *b;
	size_t total;
	uint32_t flags, count;
	size_t fixed;		/* offset of the fixed part */
	size_t fixed_len;
	size_t entries;		/* offset of the first entry */
	size_t entry_len;
	size_t tail;		/* offset of what follows the entries */
};

/*
 * Everything every decoder checks: framing, exact length, checksum, type,
 * reserved bits, and that the parts fit. @min_entry 0: the type has no
 * entries (count and entry_len must be 0).
 */
static int open_msg(const void *buf, size_t len, uint32_t type, size_t min_fixed, size_t min_entry,
		    uint32_t max_count, struct parts *p, char *err, size_t errlen)
{
	const uint8_t *b = buf;
	size_t total, hdr_len, need;
	uint32_t t, crc;
	int r;

	if (!buf || len < FL_MONITOR_HDR_LEN) {
		if (buf && len)
			r = fl__mon_frame(buf, len, &total, err, errlen);
		else
			r = -EAGAIN;
		if (r == -EAGAIN) {
			fl__mon_errf(err, errlen, "short message: %zu bytes, a header is %u", len,
				     FL_MONITOR_HDR_LEN);
			r = -EPROTO;
		}
		return r;
	}
	r = fl__mon_frame(buf, len, &total, err, errlen);
	if (r < 0)
		return r;
	if (total != len) {
		fl__mon_errf(err, errlen, "message is %zu bytes but its header says %zu", len,
			     total);
		return -EPROTO;
	}
	t = fl__le16(b + H_TYPE);
	if (t != type) {
		fl__mon_errf(err, errlen, "expected a %s message, got type %u (%s)",
			     type_name(type), t, type_name(t));
		return -EPROTO;
	}
	if (fl__le16(b + H_RESERVED)) {
		fl__mon_errf(err, errlen, "reserved header field is not zero");
		return -EPROTO;
	}
	crc = fl__le32(b + H_CRC);
	if (crc != msg_crc(b, total)) {
		fl__mon_errf(err, errlen,
			     "checksum mismatch (message says %08x, content gives %08x)", crc,
			     msg_crc(b, total));
		return -EPROTO;
	}
	hdr_len = fl__le16(b + H_HDR_LEN);
	*p = (struct parts){
		.b = b,
		.total = total,
		.flags = fl__le32(b + H_FLAGS),
		.count = fl__le32(b + H_COUNT),
		.fixed = hdr_len,
		.fixed_len = fl__le16(b + H_FIXED_LEN),
		.entry_len = fl__le16(b + H_ENTRY_LEN),
	};
	if (p->fixed_len < min_fixed || p->fixed_len > MAX_PART_LEN || p->fixed_len % 8) {
		fl__mon_errf(err, errlen,
			     "%s fixed part of %zu bytes invalid (%zu to %u, a multiple of 8)",
			     type_name(type), p->fixed_len, min_fixed, MAX_PART_LEN);
		return -EPROTO;
	}
	if (!min_entry) {
		if (p->count || p->entry_len) {
			fl__mon_errf(err, errlen, "%s message with %u entries of %zu bytes",
				     type_name(type), p->count, p->entry_len);
			return -EPROTO;
		}
	} else {
		if (p->entry_len < min_entry || p->entry_len > MAX_PART_LEN || p->entry_len % 8) {
			fl__mon_errf(err, errlen,
				     "%s entry length %zu invalid (%zu to %u, a multiple of 8)",
				     type_name(type), p->entry_len, min_entry, MAX_PART_LEN);
			return -EPROTO;
		}
		if (p->count > max_count) {
			fl__mon_errf(err, errlen, "%u entries exceed the limit of %u", p->count,
				     max_count);
			return -E2BIG;
		}
	}
	/* All parts are bounded (256 + 256 + 4096 * 256), so this cannot overflow. */
	p->entries = p->fixed + p->fixed_len;
	p->tail = p->entries + (size_t)p->count * p->entry_len;
	need = p->tail;
	if (need > total) {
		fl__mon_errf(err, errlen,
			     "%u entries of %zu bytes need %zu bytes, the message has %zu",
			     p->count, p->entry_len, need, total);
		return -EPROTO;
	}
	return 0;
}

static void write_header(uint8_t *b, uint32_t type, size_t fixed_len, size_t entry_len,
			 size_t total, uint32_t flags, uint32_t count)
{
	fl__put_le32(b + H_MAGIC, FL_MONITOR_PROTO_MAGIC);
	fl__put_le16(b + H_VERSION, FL_MONITOR_PROTO_VERSION);
	fl__put_le16(b + H_TYPE, (uint16_t)type);
	fl__put_le16(b + H_HDR_LEN, FL_MONITOR_HDR_LEN);
	fl__put_le16(b + H_FIXED_LEN, (uint16_t)fixed_len);
	fl__put_le16(b + H_ENTRY_LEN, (uint16_t)entry_len);
	fl__put_le16(b + H_RESERVED, 0);
	fl__put_le32(b + H_TOTAL_LEN, (uint32_t)total);
	fl__put_le32(b + H_FLAGS, flags);
	fl__put_le32(b + H_COUNT, count);
	fl__put_le32(b + H_CRC, 0);
}

static void seal(uint8_t *b, size_t total)
{
	fl__put_le32(b + H_CRC, msg_crc(b, total));
}

/* --------------------------------------------------------------- regions */

struct span {
	uint64_t start, end;
	uint32_t i;
};

static int cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

static bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static int check_one(const struct fl__mon_region *r, size_t i, char *err, size_t errlen)
{
	uint64_t ps = r->page_size;

	if (r->mem > FL_MEM_HUGETLB) {
		fl__mon_errf(err, errlen, "region %zu: unknown memory type %u", i, r->mem);
		return -EINVAL;
	}
	if (!pow2(ps) || ps < MIN_PAGE_SIZE || ps > FL_MONITOR_MAX_PAGE_SIZE) {
		fl__mon_errf(err, errlen,
			     "region %zu: page size %llu is not a power of two from 4096 to %u",
			     i, (unsigned long long)ps, FL_MONITOR_MAX_PAGE_SIZE);
		return -EINVAL;
	}
	if (!r->len) {
		fl__mon_errf(err, errlen, "region %zu: length is zero", i);
		return -EINVAL;
	}
	if ((r->addr | r->len) & (ps - 1)) {
		fl__mon_errf(err, errlen,
			     "region %zu: address %#llx or length %#llx is not a multiple of its "
			     "page size %llu", i, (unsigned long long)r->addr,
			     (unsigned long long)r->len, (unsigned long long)ps);
		return -EINVAL;
	}
	if (r->addr + r->len < r->addr) {
		fl__mon_errf(err, errlen,
			     "region %zu: [%#llx, +%#llx) wraps around the address space", i,
			     (unsigned long long)r->addr, (unsigned long long)r->len);
		return -EINVAL;
	}
	if (r->off & (ps - 1)) {
		fl__mon_errf(err, errlen, "region %zu: store offset %#llx is not a multiple of its "
			     "page size %llu", i, (unsigned long long)r->off,
			     (unsigned long long)ps);
		return -EINVAL;
	}
	if (r->off + r->len < r->off) {
		fl__mon_errf(err, errlen, "region %zu: store range [%#llx, +%#llx) wraps around", i,
			     (unsigned long long)r->off, (unsigned long long)r->len);
		return -EINVAL;
	}
	switch (r->store) {
	case FL_MONITOR_STORE_FILE:
		if (!r->path || !r->path_len) {
			fl__mon_errf(err, errlen, "region %zu: a file region needs a path", i);
			return -EINVAL;
		}
		if (r->path_len > FL_MONITOR_MAX_PATH) {
			fl__mon_errf(err, errlen,
				     "region %zu: path of %u bytes exceeds the limit of %u", i,
				     r->path_len, FL_MONITOR_MAX_PATH);
			return -E2BIG;
		}
		if (memchr(r->path, '\0', r->path_len) || r->path[r->path_len]) {
			fl__mon_errf(err, errlen, "region %zu: path contains a NUL byte", i);
			return -EINVAL;
		}
		if (r->path[0] != '/') {
			fl__mon_errf(err, errlen, "region %zu: path \"%.64s\" is not absolute "
				     "(the monitor resolves paths, not the client)", i, r->path);
			return -EINVAL;
		}
		break;
	case FL_MONITOR_STORE_PATTERN:
	case FL_MONITOR_STORE_ZERO:
	case FL__MON_STORE_MONITOR:
		if (r->path || r->path_len) {
			fl__mon_errf(err, errlen, "region %zu: a %s region has no path", i,
				     store_name(r->store));
			return -EINVAL;
		}
		if (r->store == FL_MONITOR_STORE_ZERO && r->off) {
			fl__mon_errf(err, errlen, "region %zu: a zero region has no store offset",
				     i);
			return -EINVAL;
		}
		break;
	default:
		fl__mon_errf(err, errlen, "region %zu: unknown store kind %u", i, r->store);
		return -EINVAL;
	}
	if (r->seed && r->store != FL_MONITOR_STORE_PATTERN) {
		fl__mon_errf(err, errlen, "region %zu: only a pattern region has a seed", i);
		return -EINVAL;
	}
	return 0;
}

int fl__mon_check_regions(const struct fl__mon_region *r, size_t n, char *err, size_t errlen)
{
	struct span *s;
	int ret = 0;

	if (!n) {
		fl__mon_errf(err, errlen, "no regions");
		return -EINVAL;
	}
	if (n > FL_MONITOR_MAX_REGIONS) {
		fl__mon_errf(err, errlen, "%zu regions exceed the limit of %u", n,
			     FL_MONITOR_MAX_REGIONS);
		return -E2BIG;
	}
	for (size_t i = 0; i < n; i++) {
		ret = check_one(&r[i], i, err, errlen);
		if (ret < 0)
			return ret;
	}
	s = malloc(n * sizeof(*s));
	if (!s) {
		fl__mon_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		s[i] = (struct span){ r[i].addr, r[i].addr + r[i].len, (uint32_t)i };
	qsort(s, n, sizeof(*s), cmp_span);
	for (size_t k = 1; k < n; k++) {
		if (s[k].start < s[k - 1].end) {
			uint32_t a = s[k - 1].i < s[k].i ? s[k - 1].i : s[k].i;
			uint32_t b = s[k - 1].i < s[k].i ? s[k].i : s[k - 1].i;

			fl__mon_errf(err, errlen, "regions %u and %u overlap at %#llx", a, b,
				     (unsigned long long)s[k].start);
			ret = -EINVAL;
			break;
		}
	}
	free(s);
	return ret;
}

/* ----------------------------------------------------------------- HELLO */

/* Region entry field offsets. */
#define R_ADDR 0
#define R_LEN 8
#define R_OFF 16
#define R_SEED 24
#define R_PAGE_SIZE 32
#define R_STORE 36
#define R_MEM 38
#define R_PATH_OFF 40
#define R_PATH_LEN 44
#define R_RESERVED 48	/* 16 bytes */

/* HELLO fixed part. */
#define F_FEATURES 0
#define F_SESSION 8
#define F_PID 16
#define F_SEQ 20
#define F_BEACON 24	/* reserved (0) without flag CHILDREN */

/*
 * The earlier FILE region whose path string region @i can share: the same
 * pointer (pieces of one region split by events, or a decoded message's
 * shared offsets), or the same bytes as the FILE region just before it.
 * -1 if none.
 */
static long shared_path(const struct fl__mon_hello *h, uint32_t i, long prev)
{
	const struct fl__mon_region *r = &h->r[i];

	for (uint32_t j = 0; j < i; j++) {
		const struct fl__mon_region *q = &h->r[j];

		if (q->store != FL_MONITOR_STORE_FILE || !q->path || q->path_len != r->path_len)
			continue;
		if (q->path == r->path ||
		    ((long)j == prev && !memcmp(q->path, r->path, r->path_len)))
			return j;
	}
	return -1;
}

/* A HELLO, or a GRANT (the same layout, from the monitor to a fork()ed child). */
static size_t encode_layout(uint32_t type, const struct fl__mon_hello *h, void *buf, size_t cap)
{
	size_t total, entries, spos;
	uint8_t *b = buf;
	long prev = -1;

	if (!h || h->n > FL_MONITOR_MAX_REGIONS || (h->n && !h->r))
		return 0;
	entries = FL_MONITOR_HDR_LEN + FL_MONITOR_HELLO_FIXED_LEN;
	total = entries + (size_t)h->n * FL_MONITOR_REGION_LEN;
	for (uint32_t i = 0; i < h->n; i++) {
		const struct fl__mon_region *r = &h->r[i];

		if (r->store != FL_MONITOR_STORE_FILE || !r->path)
			continue;
		if (r->path_len > FL_MONITOR_MAX_PATH)
			return 0;
		if (shared_path(h, i, prev) < 0)
			total += (size_t)r->path_len + 1;
		prev = i;
	}
	if (total > FL_MONITOR_MAX_MSG)
		return 0;
	if (!b || cap < total)
		return total;
	memset(b, 0, total);
	write_header(b, type, FL_MONITOR_HELLO_FIXED_LEN, FL_MONITOR_REGION_LEN, total, h->flags,
		     h->n);
	fl__put_le64(b + FL_MONITOR_HDR_LEN + F_FEATURES, h->features);
	fl__put_le64(b + FL_MONITOR_HDR_LEN + F_SESSION, h->session);
	fl__put_le32(b + FL_MONITOR_HDR_LEN + F_PID, h->pid);
	fl__put_le32(b + FL_MONITOR_HDR_LEN + F_SEQ, h->attach_seq);
	fl__put_le64(b + FL_MONITOR_HDR_LEN + F_BEACON, h->beacon);
	spos = entries + (size_t)h->n * FL_MONITOR_REGION_LEN;
	prev = -1;
	for (uint32_t i = 0; i < h->n; i++) {
		const struct fl__mon_region *r = &h->r[i];
		uint8_t *e = b + entries + (size_t)i * FL_MONITOR_REGION_LEN;
		uint32_t off;
		long j;

		fl__put_le64(e + R_ADDR, r->addr);
		fl__put_le64(e + R_LEN, r->len);
		fl__put_le64(e + R_OFF, r->off);
		fl__put_le64(e + R_SEED, r->seed);
		fl__put_le32(e + R_PAGE_SIZE, r->page_size);
		fl__put_le16(e + R_STORE, (uint16_t)r->store);
		fl__put_le16(e + R_MEM, (uint16_t)r->mem);
		if (r->store != FL_MONITOR_STORE_FILE || !r->path)
			continue;
		j = shared_path(h, i, prev);
		if (j >= 0) {
			off = fl__le32(b + entries + (size_t)j * FL_MONITOR_REGION_LEN +
				       R_PATH_OFF);
		} else {
			memcpy(b + spos, r->path, r->path_len);
			b[spos + r->path_len] = '\0';
			off = (uint32_t)spos;
			spos += (size_t)r->path_len + 1;
		}
		prev = i;
		fl__put_le32(e + R_PATH_OFF, off);
		fl__put_le32(e + R_PATH_LEN, r->path_len);
	}
	seal(b, total);
	return total;
}

size_t fl__mon_encode_hello(const struct fl__mon_hello *h, void *buf, size_t cap)
{
	return encode_layout(FL_MONITOR_MSG_HELLO, h, buf, cap);
}

size_t fl__mon_encode_grant(const struct fl__mon_hello *h, void *buf, size_t cap)
{
	return encode_layout(FL_MONITOR_MSG_GRANT, h, buf, cap);
}

void fl__mon_hello_free(struct fl__mon_hello *h)
{
	if (!h)
		return;
	free(h->r);
	h->r = NULL;
	h->n = 0;
}

/* Is the beacon page [b, b + 4096) clear of every region? */
static bool beacon_clear(const struct fl__mon_hello *h)
{
	for (uint32_t i = 0; i < h->n; i++)
		if (h->beacon < h->r[i].addr + h->r[i].len && h->r[i].addr < h->beacon + MIN_PAGE_SIZE)
			return false;
	return true;
}

static int decode_layout(uint32_t type, const void *buf, size_t len, struct fl__mon_hello *ret,
			 char *err, size_t errlen)
{
	struct fl__mon_hello h = { .version = FL_MONITOR_PROTO_VERSION };
	uint32_t known = type == FL_MONITOR_MSG_HELLO
				 ? FL_MONITOR_HELLO_REATTACH | FL_MONITOR_HELLO_CHILDREN
				 : FL_MONITOR_HELLO_CHILDREN;
	struct parts p;
	const uint8_t *f;
	int r;

	if (!ret)
		return -EINVAL;
	r = open_msg(buf, len, type, FL_MONITOR_HELLO_FIXED_LEN, FL_MONITOR_REGION_LEN,
		     FL_MONITOR_MAX_REGIONS, &p, err, errlen);
	if (r < 0)
		return r;
	f = p.b + p.fixed;
	h.flags = p.flags;
	h.features = fl__le64(f + F_FEATURES);
	h.session = fl__le64(f + F_SESSION);
	h.pid = fl__le32(f + F_PID);
	h.attach_seq = fl__le32(f + F_SEQ);
	h.beacon = fl__le64(f + F_BEACON);
	if (h.flags & ~known) {
		fl__mon_errf(err, errlen, "unknown %s flags %#x", type_name(type), h.flags & ~known);
		return -EPROTO;
	}
	if (!(h.flags & FL_MONITOR_HELLO_CHILDREN) && h.beacon) {
		fl__mon_errf(err, errlen, "reserved %s field is not zero", type_name(type));
		return -EPROTO;
	}
	if (type == FL_MONITOR_MSG_GRANT && !(h.flags & FL_MONITOR_HELLO_CHILDREN)) {
		fl__mon_errf(err, errlen, "a GRANT without flag CHILDREN");
		return -EPROTO;
	}
	if ((h.flags & FL_MONITOR_HELLO_CHILDREN) &&
	    (!h.beacon || h.beacon % MIN_PAGE_SIZE || h.beacon > UINT64_MAX - MIN_PAGE_SIZE)) {
		fl__mon_errf(err, errlen, "beacon page at %#llx: not a page-aligned address",
			     (unsigned long long)h.beacon);
		return -EINVAL;
	}
	if (h.features & ~FL_FEAT_ALL) {
		fl__mon_errf(err, errlen, "unknown userfaultfd feature bits %#llx",
			     (unsigned long long)(h.features & ~FL_FEAT_ALL));
		return -EINVAL;
	}
	if (!(h.flags & FL_MONITOR_HELLO_REATTACH) != !h.attach_seq) {
		fl__mon_errf(err, errlen, "attach sequence %u does not match the REATTACH flag",
			     h.attach_seq);
		return -EINVAL;
	}
	if (!p.count) {
		if (type == FL_MONITOR_MSG_GRANT) {
			/* A child whose parent unmapped every region before the fork. */
			*ret = h;
			return 0;
		}
		fl__mon_errf(err, errlen, "no regions");
		return -EINVAL;
	}
	h.n = p.count;
	h.r = calloc(h.n, sizeof(*h.r));
	if (!h.r) {
		fl__mon_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < h.n; i++) {
		const uint8_t *e = p.b + p.entries + (size_t)i * p.entry_len;
		struct fl__mon_region *rg = &h.r[i];
		uint64_t poff, plen;

		*rg = (struct fl__mon_region){
			.addr = fl__le64(e + R_ADDR),
			.len = fl__le64(e + R_LEN),
			.off = fl__le64(e + R_OFF),
			.seed = fl__le64(e + R_SEED),
			.page_size = fl__le32(e + R_PAGE_SIZE),
			.store = fl__le16(e + R_STORE),
			.mem = fl__le16(e + R_MEM),
		};
		if (fl__le64(e + R_RESERVED) || fl__le64(e + R_RESERVED + 8)) {
			fl__mon_errf(err, errlen, "region %u: reserved field is not zero", i);
			r = -EPROTO;
			goto fail;
		}
		if (rg->store == FL__MON_STORE_MONITOR) {
			/* Only a monitor's own Firecracker decoding makes these. */
			fl__mon_errf(err, errlen, "region %u: unknown store kind %u", i, rg->store);
			r = -EINVAL;
			goto fail;
		}
		poff = fl__le32(e + R_PATH_OFF);
		plen = fl__le32(e + R_PATH_LEN);
		if (rg->store != FL_MONITOR_STORE_FILE) {
			if (poff || plen) {
				fl__mon_errf(err, errlen, "region %u: a %s region has no path", i,
					     store_name(rg->store));
				r = -EINVAL;
				goto fail;
			}
			continue;
		}
		if (!plen) {
			fl__mon_errf(err, errlen, "region %u: a file region needs a path", i);
			r = -EINVAL;
			goto fail;
		}
		if (plen > FL_MONITOR_MAX_PATH) {
			fl__mon_errf(err, errlen,
				     "region %u: path of %llu bytes exceeds the limit of %u", i,
				     (unsigned long long)plen, FL_MONITOR_MAX_PATH);
			r = -E2BIG;
			goto fail;
		}
		/* The path and its NUL lie after the entries, inside the message. */
		if (poff < p.tail || poff + plen + 1 > p.total) {
			fl__mon_errf(err, errlen,
				     "region %u: path at [%llu, +%llu] lies outside the string "
				     "area [%zu, %zu)", i, (unsigned long long)poff,
				     (unsigned long long)plen + 1, p.tail, p.total);
			r = -EPROTO;
			goto fail;
		}
		if (p.b[poff + plen]) {
			fl__mon_errf(err, errlen, "region %u: path is not NUL-terminated", i);
			r = -EPROTO;
			goto fail;
		}
		rg->path = (const char *)p.b + poff;
		rg->path_len = (uint32_t)plen;
	}
	r = fl__mon_check_regions(h.r, h.n, err, errlen);
	if (r < 0)
		goto fail;
	if ((h.flags & FL_MONITOR_HELLO_CHILDREN) && !beacon_clear(&h)) {
		fl__mon_errf(err, errlen, "beacon page at %#llx overlaps a region",
			     (unsigned long long)h.beacon);
		r = -EINVAL;
		goto fail;
	}
	*ret = h;
	return 0;
fail:
	fl__mon_hello_free(&h);
	return r;
}

int fl__mon_decode_hello(const void *buf, size_t len, struct fl__mon_hello *ret, char *err,
			 size_t errlen)
{
	return decode_layout(FL_MONITOR_MSG_HELLO, buf, len, ret, err, errlen);
}

int fl__mon_decode_grant(const void *buf, size_t len, struct fl__mon_hello *ret, char *err,
			 size_t errlen)
{
	/* Without flag REATTACH, a non-zero attach sequence is refused there. */
	return decode_layout(FL_MONITOR_MSG_GRANT, buf, len, ret, err, errlen);
}

/* ----------------------------------------------------------- CLAIM, beacon */

size_t fl__mon_encode_claim(const struct fl__mon_claim *c, void *buf, size_t cap)
{
	size_t total = FL_MONITOR_HDR_LEN + FL_MONITOR_CLAIM_FIXED_LEN;
	uint8_t *b = buf;

	if (!b || cap < total)
		return total;
	memset(b, 0, total);
	write_header(b, FL_MONITOR_MSG_CLAIM, FL_MONITOR_CLAIM_FIXED_LEN, 0, total, 0, 0);
	fl__put_le64(b + FL_MONITOR_HDR_LEN, c->session);
	fl__put_le64(b + FL_MONITOR_HDR_LEN + 8, c->token);
	fl__put_le32(b + FL_MONITOR_HDR_LEN + 16, c->pid);
	seal(b, total);
	return total;
}

int fl__mon_decode_claim(const void *buf, size_t len, struct fl__mon_claim *ret, char *err,
			 size_t errlen)
{
	struct parts p;
	const uint8_t *f;
	int r;

	if (!ret)
		return -EINVAL;
	r = open_msg(buf, len, FL_MONITOR_MSG_CLAIM, FL_MONITOR_CLAIM_FIXED_LEN, 0, 0, &p, err,
		     errlen);
	if (r < 0)
		return r;
	if (p.flags) {
		fl__mon_errf(err, errlen, "unknown CLAIM flags %#x", p.flags);
		return -EPROTO;
	}
	if (p.tail != p.total) {
		fl__mon_errf(err, errlen, "%zu bytes after the CLAIM", p.total - p.tail);
		return -EPROTO;
	}
	f = p.b + p.fixed;
	if (fl__le32(f + 20)) {
		fl__mon_errf(err, errlen, "reserved CLAIM field is not zero");
		return -EPROTO;
	}
	*ret = (struct fl__mon_claim){
		.session = fl__le64(f),
		.token = fl__le64(f + 8),
		.pid = fl__le32(f + 16),
	};
	if (!ret->session || !ret->token) {
		fl__mon_errf(err, errlen, "a CLAIM with a zero session or token");
		return -EINVAL;
	}
	return 0;
}

void fl__mon_beacon_write(void *page, uint64_t session, uint64_t token)
{
	uint8_t *b = page;

	fl__put_le64(b, FL_MONITOR_BEACON_MAGIC);
	fl__put_le64(b + 8, session);
	fl__put_le64(b + 16, token);
}

bool fl__mon_beacon_read(const void *page, uint64_t *ret_session, uint64_t *ret_token)
{
	const uint8_t *b = page;

	if (fl__le64(b) != FL_MONITOR_BEACON_MAGIC || !fl__le64(b + 8) || !fl__le64(b + 16))
		return false;
	*ret_session = fl__le64(b + 8);
	*ret_token = fl__le64(b + 16);
	return true;
}

/* ------------------------------------------------------------ ACK, ERROR */

size_t fl__mon_encode_ack(uint64_t session, uint32_t pid, void *buf, size_t cap)
{
	size_t total = FL_MONITOR_HDR_LEN + FL_MONITOR_ACK_FIXED_LEN;
	uint8_t *b = buf;

	if (!b || cap < total)
		return total;
	memset(b, 0, total);
	write_header(b, FL_MONITOR_MSG_ACK, FL_MONITOR_ACK_FIXED_LEN, 0, total, 0, 0);
	fl__put_le64(b + FL_MONITOR_HDR_LEN, session);
	fl__put_le32(b + FL_MONITOR_HDR_LEN + 8, pid);
	seal(b, total);
	return total;
}

size_t fl__mon_encode_error(int err, const char *msg, void *buf, size_t cap)
{
	size_t mlen = msg ? strnlen(msg, FL_MONITOR_MAX_ERRMSG) : 0;
	size_t total = FL_MONITOR_HDR_LEN + FL_MONITOR_ERROR_FIXED_LEN + mlen + 1;
	uint8_t *b = buf;

	if (err >= 0 || err < -4095)
		err = -EPROTO;
	if (!b || cap < total)
		return total;
	memset(b, 0, total);
	write_header(b, FL_MONITOR_MSG_ERROR, FL_MONITOR_ERROR_FIXED_LEN, 0, total, 0, 0);
	fl__put_le32(b + FL_MONITOR_HDR_LEN, (uint32_t)-err);
	fl__put_le32(b + FL_MONITOR_HDR_LEN + 4, (uint32_t)mlen);
	if (mlen)
		memcpy(b + FL_MONITOR_HDR_LEN + FL_MONITOR_ERROR_FIXED_LEN, msg, mlen);
	seal(b, total);
	return total;
}

int fl__mon_decode_reply(const void *buf, size_t len, struct fl__mon_reply *ret, char *err,
			 size_t errlen)
{
	struct parts p;
	uint32_t type, e, mlen;
	size_t total;
	const uint8_t *f;
	int r;

	if (!ret)
		return -EINVAL;
	if (buf && len >= FL_MONITOR_HDR_LEN && !fl__mon_frame(buf, len, &total, NULL, 0))
		type = fl__mon_msg_type(buf);
	else
		type = FL_MONITOR_MSG_ACK;	/* let open_msg() say what is wrong */
	if (type == FL_MONITOR_MSG_ERROR)
		r = open_msg(buf, len, FL_MONITOR_MSG_ERROR, FL_MONITOR_ERROR_FIXED_LEN, 0, 0, &p,
			     err, errlen);
	else
		r = open_msg(buf, len, FL_MONITOR_MSG_ACK, FL_MONITOR_ACK_FIXED_LEN, 0, 0, &p, err,
			     errlen);
	if (r < 0)
		return r;
	if (p.flags) {
		fl__mon_errf(err, errlen, "unknown %s flags %#x", type_name(type), p.flags);
		return -EPROTO;
	}
	f = p.b + p.fixed;
	if (type == FL_MONITOR_MSG_ACK) {
		if (fl__le32(f + 12)) {
			fl__mon_errf(err, errlen, "reserved ACK field is not zero");
			return -EPROTO;
		}
		if (p.tail != p.total) {
			fl__mon_errf(err, errlen, "ACK with %zu trailing bytes", p.total - p.tail);
			return -EPROTO;
		}
		*ret = (struct fl__mon_reply){
			.type = type,
			.session = fl__le64(f),
			.pid = fl__le32(f + 8),
		};
		return 0;
	}
	e = fl__le32(f);
	mlen = fl__le32(f + 4);
	if (!e || e > 4095) {
		fl__mon_errf(err, errlen, "ERROR with errno %u out of range", e);
		return -EPROTO;
	}
	if (mlen > FL_MONITOR_MAX_ERRMSG) {
		fl__mon_errf(err, errlen, "ERROR text of %u bytes exceeds the limit of %u", mlen,
			     FL_MONITOR_MAX_ERRMSG);
		return -E2BIG;
	}
	if (p.total - p.tail != (size_t)mlen + 1) {
		fl__mon_errf(err, errlen, "ERROR text of %u bytes, but %zu bytes follow", mlen,
			     p.total - p.tail);
		return -EPROTO;
	}
	if (memchr(p.b + p.tail, '\0', mlen) || p.b[p.tail + mlen]) {
		fl__mon_errf(err, errlen, "ERROR text is not one NUL-terminated string");
		return -EPROTO;
	}
	*ret = (struct fl__mon_reply){
		.type = type,
		.err = -(int)e,
		.msg = (const char *)p.b + p.tail,
	};
	return 0;
}

/* ----------------------------------------------------------------- EVENT */

#define E_TYPE 0
#define E_RESERVED 4
#define E_A 8
#define E_B 16
#define E_C 24

static int check_event(const struct fl__mon_event *ev, size_t i, char *err, size_t errlen)
{
	const uint64_t mask = MIN_PAGE_SIZE - 1;

	switch (ev->type) {
	case FL_MONITOR_EV_REMAP:
		if (!ev->c || ((ev->a | ev->b | ev->c) & mask) || ev->a + ev->c < ev->a ||
		    ev->b + ev->c < ev->b) {
			fl__mon_errf(err, errlen, "event %zu: remap %#llx -> %#llx, %#llx bytes: "
				     "unaligned, empty or wrapping", i, (unsigned long long)ev->a,
				     (unsigned long long)ev->b, (unsigned long long)ev->c);
			return -EINVAL;
		}
		return 0;
	case FL_MONITOR_EV_REMOVE:
	case FL_MONITOR_EV_UNMAP:
		if (ev->a >= ev->b || ((ev->a | ev->b) & mask) || ev->c) {
			fl__mon_errf(err, errlen,
				     "event %zu: range [%#llx, %#llx) unaligned or empty", i,
				     (unsigned long long)ev->a, (unsigned long long)ev->b);
			return -EINVAL;
		}
		return 0;
	}
	fl__mon_errf(err, errlen, "event %zu: unknown type %u", i, ev->type);
	return -EINVAL;
}

size_t fl__mon_encode_events(const struct fl__mon_event *ev, size_t n, void *buf, size_t cap)
{
	size_t total = FL_MONITOR_HDR_LEN + n * FL_MONITOR_EVENT_LEN;
	uint8_t *b = buf;

	if (!n || n > FL_MONITOR_MAX_EVENTS || !ev)
		return 0;
	if (!b || cap < total)
		return total;
	memset(b, 0, total);
	write_header(b, FL_MONITOR_MSG_EVENT, 0, FL_MONITOR_EVENT_LEN, total, 0, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		uint8_t *e = b + FL_MONITOR_HDR_LEN + i * FL_MONITOR_EVENT_LEN;

		fl__put_le32(e + E_TYPE, ev[i].type);
		fl__put_le64(e + E_A, ev[i].a);
		fl__put_le64(e + E_B, ev[i].b);
		fl__put_le64(e + E_C, ev[i].c);
	}
	seal(b, total);
	return total;
}

int fl__mon_decode_events(const void *buf, size_t len, struct fl__mon_event *ev, size_t cap,
			  size_t *ret_n, char *err, size_t errlen)
{
	struct parts p;
	int r;

	if (!ev || !ret_n)
		return -EINVAL;
	r = open_msg(buf, len, FL_MONITOR_MSG_EVENT, 0, FL_MONITOR_EVENT_LEN, FL_MONITOR_MAX_EVENTS,
		     &p, err, errlen);
	if (r < 0)
		return r;
	if (p.flags) {
		fl__mon_errf(err, errlen, "unknown EVENT flags %#x", p.flags);
		return -EPROTO;
	}
	if (!p.count) {
		fl__mon_errf(err, errlen, "EVENT message without events");
		return -EPROTO;
	}
	if (p.tail != p.total) {
		fl__mon_errf(err, errlen, "EVENT with %zu trailing bytes", p.total - p.tail);
		return -EPROTO;
	}
	if (p.count > cap) {
		fl__mon_errf(err, errlen, "%u events do not fit in %zu", p.count, cap);
		return -E2BIG;
	}
	for (uint32_t i = 0; i < p.count; i++) {
		const uint8_t *e = p.b + p.entries + (size_t)i * p.entry_len;

		ev[i] = (struct fl__mon_event){
			.type = fl__le32(e + E_TYPE),
			.a = fl__le64(e + E_A),
			.b = fl__le64(e + E_B),
			.c = fl__le64(e + E_C),
		};
		if (fl__le32(e + E_RESERVED)) {
			fl__mon_errf(err, errlen, "event %u: reserved field is not zero", i);
			return -EPROTO;
		}
		r = check_event(&ev[i], i, err, errlen);
		if (r < 0)
			return r;
	}
	*ret_n = p.count;
	return 0;
}

/* ------------------------------------------------------------------- BYE */

size_t fl__mon_encode_bye(void *buf, size_t cap)
{
	uint8_t *b = buf;

	if (!b || cap < FL_MONITOR_HDR_LEN)
		return FL_MONITOR_HDR_LEN;
	memset(b, 0, FL_MONITOR_HDR_LEN);
	write_header(b, FL_MONITOR_MSG_BYE, 0, 0, FL_MONITOR_HDR_LEN, 0, 0);
	seal(b, FL_MONITOR_HDR_LEN);
	return FL_MONITOR_HDR_LEN;
}

int fl__mon_decode_bye(const void *buf, size_t len, char *err, size_t errlen)
{
	struct parts p;
	int r = open_msg(buf, len, FL_MONITOR_MSG_BYE, 0, 0, 0, &p, err, errlen);

	if (r < 0)
		return r;
	if (p.flags) {
		fl__mon_errf(err, errlen, "unknown BYE flags %#x", p.flags);
		return -EPROTO;
	}
	if (p.tail != p.total) {
		fl__mon_errf(err, errlen, "BYE with %zu trailing bytes", p.total - p.tail);
		return -EPROTO;
	}
	return 0;
}

/* ---------------------------------------------------------------- layout */

static int cmp_region(const void *a, const void *b)
{
	const struct fl__mon_region *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

void fl__mon_table_sort(struct fl__mon_table *t)
{
	if (t->n > 1)
		qsort(t->r, t->n, sizeof(*t->r), cmp_region);
}

/* The largest page size, at most @ps, that the piece's address, length and offset allow. */
static uint32_t fit_ps(uint32_t ps, uint64_t addr, uint64_t len, uint64_t off)
{
	while (ps > MIN_PAGE_SIZE && ((addr | len | off) & (ps - 1)))
		ps >>= 1;
	return ps;
}

/* [start, end) of @r as a piece of its own. */
static struct fl__mon_region piece(const struct fl__mon_region *r, uint64_t start, uint64_t end,
				   bool zero)
{
	struct fl__mon_region p = *r;

	p.addr = start;
	p.len = end - start;
	if (zero || r->store == FL_MONITOR_STORE_ZERO) {
		p.store = FL_MONITOR_STORE_ZERO;
		p.off = 0;
		p.seed = 0;
		p.path = NULL;
		p.path_len = 0;
	} else {
		p.off = r->off + (start - r->addr);
	}
	p.page_size = fit_ps(r->page_size, p.addr, p.len, p.off);
	return p;
}

/* Merge neighbouring zero regions of the same memory type (a balloon removes many small runs). */
static void merge_zero(struct fl__mon_table *t)
{
	size_t w = 0;

	for (size_t i = 0; i < t->n; i++) {
		struct fl__mon_region *prev = w ? &t->r[w - 1] : NULL, *cur = &t->r[i];

		if (prev && prev->store == FL_MONITOR_STORE_ZERO &&
		    cur->store == FL_MONITOR_STORE_ZERO && prev->mem == cur->mem &&
		    prev->addr + prev->len == cur->addr) {
			uint32_t ps = prev->page_size < cur->page_size ? prev->page_size
								       : cur->page_size;

			prev->len += cur->len;
			prev->page_size = fit_ps(ps, prev->addr, prev->len, 0);
			continue;
		}
		t->r[w++] = *cur;
	}
	t->n = w;
}

/* The first region of sorted @t that ends after @a. */
static size_t first_ending_after(const struct fl__mon_table *t, uint64_t a)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->r[mid].addr + t->r[mid].len <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Room for @n regions in @t. */
static int table_reserve(struct fl__mon_table *t, size_t n, char *err, size_t errlen)
{
	struct fl__mon_region *nr;
	size_t cap;

	if (n <= t->cap)
		return 0;
	/* Doubling, up to the limit: growing by one each time would copy the table each time. */
	cap = t->cap * 2 < FL_MONITOR_MAX_REGIONS ? t->cap * 2 : FL_MONITOR_MAX_REGIONS;
	if (cap < n)
		cap = n;
	nr = realloc(t->r, cap * sizeof(*nr));
	if (!nr) {
		fl__mon_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t->r = nr;
	t->cap = cap;
	return 0;
}

/*
 * A REMOVE or an UNMAP of [s, e): only the regions it touches change, found
 * by a binary search, and zero regions merge around them only. A balloon
 * punching thousands of holes thus costs O(log n) per hole plus the move of
 * the regions after it (none when it goes up in address order), never a
 * pass over the whole table.
 */
static int table_cut(struct fl__mon_table *t, const struct fl__mon_event *ev, uint64_t s,
		     uint64_t e, char *err, size_t errlen)
{
	size_t lo = first_ending_after(t, s), hi = lo, n = 0, from, to, newn;
	struct fl__mon_region *pc;
	int r;

	while (hi < t->n && t->r[hi].addr < e)
		hi++;
	if (lo == hi)
		return 0;	/* nothing of the layout there */
	/* Each touched region leaves at most three pieces; one neighbour on each side may merge. */
	pc = malloc((3 * (hi - lo) + 2) * sizeof(*pc));
	if (!pc) {
		fl__mon_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	from = lo && t->r[lo - 1].store == FL_MONITOR_STORE_ZERO ? lo - 1 : lo;
	to = hi < t->n && t->r[hi].store == FL_MONITOR_STORE_ZERO ? hi + 1 : hi;
	for (size_t i = from; i < to; i++) {
		const struct fl__mon_region *rg = &t->r[i];
		uint64_t ra = rg->addr, re = rg->addr + rg->len, ms, me;

		if (i < lo || i >= hi) {
			pc[n++] = *rg;
			continue;
		}
		ms = ra > s ? ra : s;
		me = re < e ? re : e;
		if (ra < ms)
			pc[n++] = piece(rg, ra, ms, false);
		if (ev->type == FL_MONITOR_EV_REMOVE)
			pc[n++] = piece(rg, ms, me, true);
		if (me < re)
			pc[n++] = piece(rg, me, re, false);
	}
	{
		struct fl__mon_table nt = { .r = pc, .n = n, .cap = n };

		merge_zero(&nt);
		n = nt.n;
	}
	newn = t->n - (to - from) + n;
	if (newn > FL_MONITOR_MAX_REGIONS) {
		fl__mon_errf(err, errlen, "the layout would need %zu regions, more than %u", newn,
			     FL_MONITOR_MAX_REGIONS);
		free(pc);
		return -E2BIG;
	}
	r = table_reserve(t, newn, err, errlen);
	if (r < 0) {
		free(pc);
		return r;
	}
	memmove(t->r + from + n, t->r + to, (t->n - to) * sizeof(*t->r));
	memcpy(t->r + from, pc, n * sizeof(*pc));
	t->n = newn;
	free(pc);
	return 0;
}

int fl__mon_table_apply(struct fl__mon_table *t, const struct fl__mon_event *ev, char *err,
			size_t errlen)
{
	struct fl__mon_region *out = NULL, *mv = NULL, *cut = NULL;
	uint64_t s = ev ? ev->a : 0, e, delta = 0;
	size_t n = 0, nmv = 0, cap;
	int r;

	if (!t || !ev)
		return -EINVAL;
	r = check_event(ev, 0, err, errlen);
	if (r < 0)
		return r;
	if (ev->type != FL_MONITOR_EV_REMAP)
		return table_cut(t, ev, s, ev->b, err, errlen);
	e = ev->a + ev->c;
	delta = ev->b - ev->a;	/* modulo 2^64: adding it moves an address */
	/*
	 * Regions do not overlap, so only the (at most two) regions holding s
	 * or e split; a remap's destination cuts at most one more.
	 */
	cap = t->n + 4;
	out = malloc(cap * sizeof(*out));
	mv = malloc(cap * sizeof(*mv));
	cut = malloc(cap * sizeof(*cut));
	if (!out || !mv || !cut) {
		fl__mon_errf(err, errlen, "out of memory");
		r = -ENOMEM;
		goto done;
	}
	for (size_t i = 0; i < t->n; i++) {
		const struct fl__mon_region *rg = &t->r[i];
		uint64_t ra = rg->addr, re = rg->addr + rg->len, ms, me;

		if (re <= s || ra >= e) {
			out[n++] = *rg;
			continue;
		}
		ms = ra > s ? ra : s;
		me = re < e ? re : e;
		if (ra < ms)
			out[n++] = piece(rg, ra, ms, false);
		mv[nmv] = piece(rg, ms, me, false);
		mv[nmv].addr += delta;
		mv[nmv].page_size = fit_ps(mv[nmv].page_size, mv[nmv].addr, mv[nmv].len,
					   mv[nmv].off);
		nmv++;
		if (me < re)
			out[n++] = piece(rg, me, re, false);
	}
	{
		/*
		 * The kernel unmapped the destination first (and reported it, if
		 * it was registered): drop whatever of the old layout still
		 * claims it, then add the pieces that moved there.
		 */
		uint64_t ts = ev->b, te = ev->b + ev->c;
		size_t w = 0;

		for (size_t i = 0; i < n; i++) {
			const struct fl__mon_region *rg = &out[i];
			uint64_t ra = rg->addr, re = rg->addr + rg->len;

			if (re <= ts || ra >= te) {
				cut[w++] = *rg;
				continue;
			}
			if (ra < ts)
				cut[w++] = piece(rg, ra, ts, false);
			if (re > te)
				cut[w++] = piece(rg, te, re, false);
		}
		memcpy(cut + w, mv, nmv * sizeof(*mv));
		n = w + nmv;
		memcpy(out, cut, n * sizeof(*out));
	}
	{
		struct fl__mon_table nt = { .r = out, .n = n, .cap = cap };

		/* Pieces come out in address order; only moved ones need sorting in. */
		fl__mon_table_sort(&nt);
		merge_zero(&nt);
		n = nt.n;
	}
	if (n > FL_MONITOR_MAX_REGIONS) {
		fl__mon_errf(err, errlen, "the layout would need %zu regions, more than %u", n,
			     FL_MONITOR_MAX_REGIONS);
		r = -E2BIG;
		goto done;
	}
	if (n > t->cap) {
		struct fl__mon_region *nr = realloc(t->r, n * sizeof(*nr));

		if (!nr) {
			fl__mon_errf(err, errlen, "out of memory");
			r = -ENOMEM;
			goto done;
		}
		t->r = nr;
		t->cap = n;
	}
	if (n)
		memcpy(t->r, out, n * sizeof(*out));
	t->n = n;
	r = 0;
done:
	free(out);
	free(mv);
	free(cut);
	return r;
}
