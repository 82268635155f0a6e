/* SPDX-License-Identifier: MIT */
/* The wire protocol's frames: validation, encoders, the incremental decoder, the HELLO check. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "crc32c.h"
#include "le.h"
#include "wire.h"

_Static_assert(FL__WIRE_MAX_META >= FL__WIRE_HELLO_FIXED +
	       FL__WIRE_MAX_REGIONS * FL__WIRE_REGION_LEN + FL__WIRE_MAX_AGENT, "HELLO fits meta");
_Static_assert(FL__WIRE_MAX_META >= FL__WIRE_BLOB_FIXED + FL__WIRE_MAX_BLOB_CHUNK, "BLOB fits");
_Static_assert(FL__WIRE_MAX_META >= FL__WIRE_ERROR_FIXED + FL__WIRE_MAX_ERROR_MSG, "ERROR fits");
_Static_assert(FL__WIRE_MAX_META >= FL__WIRE_PAGES_FIXED +
	       FL__WIRE_MAX_PAGES * FL__WIRE_PAGE_ENTRY, "PAGES table fits");
_Static_assert(FL__WIRE_MAX_FRAME < (1u << 30), "frame sizes fit an int");

static const uint8_t magic[4] = { 0x89, 'F', 'L', 'W' };

/* Page indices must fit when multiplied by the smallest page size. */
#define MAX_INDEX_END (1ull << (64 - FL__WIRE_PAGE_SHIFT_MIN))

static const char *const type_names[] = {
	[FL__WIRE_HELLO] = "HELLO",
	[FL__WIRE_PAGES] = "PAGES",
	[FL__WIRE_REQUEST] = "REQUEST",
	[FL__WIRE_RECEIVED_BITMAP] = "RECEIVED_BITMAP",
	[FL__WIRE_STATE_BLOB] = "STATE_BLOB",
	[FL__WIRE_COMPLETE] = "COMPLETE",
	[FL__WIRE_ERROR] = "ERROR",
	[FL__WIRE_PING] = "PING",
	[FL__WIRE_PONG] = "PONG",
};

const char *fl__wire_type_name(unsigned int type, char *buf)
{
	if (type >= 1 && type <= FL__WIRE_TYPE_MAX)
		return type_names[type];
	snprintf(buf, 16, "type %u", type & 0xffff);
	return buf;
}

/* ------------------------------------------------------------ validation */

/* The rules both the encoder and the decoder apply to a frame's fields. */

__attribute__((format(printf, 3, 4)))
static int say(char *msg, size_t cap, const char *fmt, ...)
{
	va_list ap;

	if (msg && cap) {
		va_start(ap, fmt);
		vsnprintf(msg, cap, fmt, ap);
		va_end(ap);
	}
	return -EPROTO;
}

static bool printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

static uint16_t allowed_flags(unsigned int type)
{
	switch (type) {
	case FL__WIRE_PAGES:
		return FL__WIRE_F_URGENT;
	case FL__WIRE_RECEIVED_BITMAP:
		return FL__WIRE_F_LAST;
	default:
		return 0;
	}
}

static bool shift_ok(unsigned int shift)
{
	return shift >= FL__WIRE_PAGE_SHIFT_MIN && shift <= FL__WIRE_PAGE_SHIFT_MAX;
}

static int check_hello(const struct fl__wire_hello *h, char *msg, size_t cap)
{
	const uint32_t known = FL__WIRE_HELLO_TLS | FL__WIRE_HELLO_RESUME | FL__WIRE_HELLO_URGENT;

	if (h->role != FL__WIRE_ROLE_SOURCE && h->role != FL__WIRE_ROLE_DESTINATION)
		return say(msg, cap, "role %u is neither source (1) nor destination (2)", h->role);
	if (h->version_min < 1 || h->version_min > h->version_max)
		return say(msg, cap, "version range %u..%u is empty", h->version_min,
			   h->version_max);
	if (!shift_ok(h->page_shift))
		return say(msg, cap, "page shift %u is outside %u..%u", h->page_shift,
			   FL__WIRE_PAGE_SHIFT_MIN, FL__WIRE_PAGE_SHIFT_MAX);
	if (h->flags & ~known)
		return say(msg, cap, "unknown HELLO flags 0x%x", h->flags & ~known);
	if (h->n_regions > FL__WIRE_MAX_REGIONS)
		return say(msg, cap, "%u regions, more than the limit of %u", h->n_regions,
			   FL__WIRE_MAX_REGIONS);
	if (h->n_regions && !h->regions)
		return say(msg, cap, "no region table");
	for (uint32_t i = 0; i < h->n_regions; i++) {
		const struct fl__wire_region *r = &h->regions[i];
		uint64_t mask;

		if (!shift_ok(r->page_shift) || r->page_shift < h->page_shift)
			return say(msg, cap, "region %u: page shift %u is outside %u..%u", r->id,
				   r->page_shift, h->page_shift, FL__WIRE_PAGE_SHIFT_MAX);
		mask = (1ull << r->page_shift) - 1;
		if ((r->start | r->length) & mask || !r->length)
			return say(msg, cap, "region %u: start 0x%llx or length 0x%llx is not a "
				   "non-zero multiple of its page size", r->id,
				   (unsigned long long)r->start, (unsigned long long)r->length);
		if (r->start + r->length < r->start)
			return say(msg, cap, "region %u: start 0x%llx + length 0x%llx wraps",
				   r->id, (unsigned long long)r->start,
				   (unsigned long long)r->length);
		/* At most 1024 regions, once per connection: the quadratic check is fine. */
		for (uint32_t j = 0; j < i; j++)
			if (h->regions[j].id == r->id)
				return say(msg, cap, "region id %u appears twice", r->id);
	}
	if (h->agent_len > FL__WIRE_MAX_AGENT)
		return say(msg, cap, "agent string of %u bytes, more than %u", h->agent_len,
			   FL__WIRE_MAX_AGENT);
	if (h->agent_len && (!h->agent || !printable(h->agent, h->agent_len)))
		return say(msg, cap, "agent string is not printable ASCII");
	return 0;
}

static int check_pages_desc(uint32_t count, unsigned int shift, uint64_t first, char *msg,
			    size_t cap)
{
	if (count < 1 || count > FL__WIRE_MAX_PAGES)
		return say(msg, cap, "%u pages, outside 1..%u", count, FL__WIRE_MAX_PAGES);
	if (!shift_ok(shift))
		return say(msg, cap, "page shift %u is outside %u..%u", shift,
			   FL__WIRE_PAGE_SHIFT_MIN, FL__WIRE_PAGE_SHIFT_MAX);
	if (first >= (1ull << (64 - shift)) || count > (1ull << (64 - shift)) - first)
		return say(msg, cap, "pages %llu + %u run past the end of the address space",
			   (unsigned long long)first, count);
	return 0;
}

static int check_page_flags(uint32_t i, uint32_t flags, char *msg, size_t cap)
{
	if (flags != FL__WIRE_PAGE_DATA && flags != FL__WIRE_PAGE_ZERO)
		return say(msg, cap, "page %u: flags 0x%x are not exactly one of DATA (1) and "
			   "ZERO (2)", i, flags);
	return 0;
}

static int check_request(const struct fl__wire_request *r, char *msg, size_t cap)
{
	if (r->count < 1 || r->count > FL__WIRE_MAX_PAGES)
		return say(msg, cap, "%u pages requested, outside 1..%u", r->count,
			   FL__WIRE_MAX_PAGES);
	if (r->index >= MAX_INDEX_END || r->count > MAX_INDEX_END - r->index)
		return say(msg, cap, "pages %llu + %u run past the end of the address space",
			   (unsigned long long)r->index, r->count);
	return 0;
}

static uint32_t bitmap_bytes(uint32_t nbits)
{
	return (nbits + 63) / 64 * 8;
}

static int check_bitmap(const struct fl__wire_bitmap *b, char *msg, size_t cap)
{
	uint32_t nbytes;

	if (b->nbits < 1 || b->nbits > FL__WIRE_MAX_BITMAP_BITS)
		return say(msg, cap, "%u bits, outside 1..%u", b->nbits,
			   FL__WIRE_MAX_BITMAP_BITS);
	if (b->offset % 64)
		return say(msg, cap, "bit offset %llu is not a multiple of 64",
			   (unsigned long long)b->offset);
	if (b->offset >= MAX_INDEX_END || b->nbits > MAX_INDEX_END - b->offset)
		return say(msg, cap, "bits %llu + %u run past the end of the address space",
			   (unsigned long long)b->offset, b->nbits);
	if (!b->bits)
		return say(msg, cap, "no bits");
	nbytes = bitmap_bytes(b->nbits);
	for (uint32_t i = b->nbits; i < nbytes * 8; i++)
		if (b->bits[i / 8] >> (i % 8) & 1)
			return say(msg, cap, "bit %u is set, past the %u bits of the chunk", i,
				   b->nbits);
	return 0;
}

static int check_blob(const struct fl__wire_blob *b, char *msg, size_t cap)
{
	if (b->total > FL__WIRE_MAX_BLOB)
		return say(msg, cap, "state blob of %u bytes, more than %u", b->total,
			   FL__WIRE_MAX_BLOB);
	if (b->len > FL__WIRE_MAX_BLOB_CHUNK)
		return say(msg, cap, "state chunk of %u bytes, more than %u", b->len,
			   FL__WIRE_MAX_BLOB_CHUNK);
	if ((uint64_t)b->offset + b->len > b->total)
		return say(msg, cap, "state chunk %u + %u runs past the blob's %u bytes",
			   b->offset, b->len, b->total);
	if (!b->len && b->total)
		return say(msg, cap, "empty chunk of a non-empty state blob");
	if (b->len && !b->data)
		return say(msg, cap, "no state bytes");
	return 0;
}

static int check_error(const struct fl__wire_error *e, char *msg, size_t cap)
{
	if (e->msg_len > FL__WIRE_MAX_ERROR_MSG)
		return say(msg, cap, "error message of %u bytes, more than %u", e->msg_len,
			   FL__WIRE_MAX_ERROR_MSG);
	if (e->msg_len && (!e->msg || !printable(e->msg, e->msg_len)))
		return say(msg, cap, "error message is not printable ASCII");
	return 0;
}

/* The header fields: what any version-1 receiver requires of them. */
static int check_header(unsigned int version, unsigned int type, unsigned int flags,
			char *msg, size_t cap)
{
	char tn[16];

	if (type == FL__WIRE_RETIRED_AUTH)
		return say(msg, cap, "unknown frame type 2 (AUTH, sent by faultline before 0.3; "
			   "0.3 and later authenticate with TLS)");
	if (type < 1 || type > FL__WIRE_TYPE_MAX)
		return say(msg, cap, "unknown frame type %u", type);
	if (flags & ~allowed_flags(type))
		return say(msg, cap, "%s: unknown flags 0x%x", fl__wire_type_name(type, tn),
			   flags & ~allowed_flags(type));
	if ((type == FL__WIRE_HELLO || type == FL__WIRE_ERROR) && version != 1)
		return say(msg, cap, "%s carries wire version %u, but it is always sent as 1",
			   fl__wire_type_name(type, tn), version);
	return 0;
}

/* ---------------------------------------------------------------- payloads */

/* Payload bytes of @f (fields checked), or -EPROTO. Fills *@ret_meta: the part meta_crc covers. */
static int payload_size(const struct fl__wire_frame *f, uint32_t *ret_meta, char *msg,
			size_t cap)
{
	uint32_t meta, data = 0;
	int r;

	switch (f->type) {
	case FL__WIRE_HELLO:
		r = check_hello(&f->hello, msg, cap);
		if (r < 0)
			return r;
		meta = FL__WIRE_HELLO_FIXED + f->hello.n_regions * FL__WIRE_REGION_LEN +
		       f->hello.agent_len;
		break;
	case FL__WIRE_PAGES: {
		const struct fl__wire_pages *p = &f->pages;
		uint32_t n_data = 0;

		r = check_pages_desc(p->count, p->page_shift, p->first, msg, cap);
		if (r < 0)
			return r;
		if (!p->pages)
			return say(msg, cap, "no page table");
		for (uint32_t i = 0; i < p->count; i++) {
			r = check_page_flags(i, p->pages[i].flags, msg, cap);
			if (r < 0)
				return r;
			if (p->pages[i].flags == FL__WIRE_PAGE_DATA) {
				if (!p->pages[i].data)
					return say(msg, cap, "page %u: DATA without bytes", i);
				n_data++;
			}
		}
		if ((uint64_t)n_data << p->page_shift > FL__WIRE_MAX_DATA)
			return say(msg, cap, "%u data pages of %u bytes exceed %u bytes", n_data,
				   1u << p->page_shift, FL__WIRE_MAX_DATA);
		meta = FL__WIRE_PAGES_FIXED + p->count * FL__WIRE_PAGE_ENTRY;
		data = n_data << p->page_shift;
		break;
	}
	case FL__WIRE_REQUEST:
		r = check_request(&f->request, msg, cap);
		if (r < 0)
			return r;
		meta = FL__WIRE_REQUEST_LEN;
		break;
	case FL__WIRE_RECEIVED_BITMAP:
		r = check_bitmap(&f->bitmap, msg, cap);
		if (r < 0)
			return r;
		meta = FL__WIRE_BITMAP_FIXED + bitmap_bytes(f->bitmap.nbits);
		break;
	case FL__WIRE_STATE_BLOB:
		r = check_blob(&f->blob, msg, cap);
		if (r < 0)
			return r;
		meta = FL__WIRE_BLOB_FIXED + f->blob.len;
		break;
	case FL__WIRE_COMPLETE:
		meta = FL__WIRE_COMPLETE_LEN;
		break;
	case FL__WIRE_ERROR:
		r = check_error(&f->error, msg, cap);
		if (r < 0)
			return r;
		meta = FL__WIRE_ERROR_FIXED + f->error.msg_len;
		break;
	case FL__WIRE_PING:
	case FL__WIRE_PONG:
		meta = 0;
		break;
	default:
		return say(msg, cap, "unknown frame type %u", f->type);
	}
	*ret_meta = meta;
	return (int)(meta + data);
}

static void put_hello_fixed(uint8_t *p, const struct fl__wire_hello *h)
{
	p[0] = h->role;
	p[1] = h->version_min;
	p[2] = h->version_max;
	p[3] = h->page_shift;
	fl__put_le32(p + 4, h->flags);
	fl__put_le64(p + 8, h->features);
	memcpy(p + 16, h->session_id, FL__WIRE_SESSION_LEN);
	memcpy(p + 32, h->nonce, FL__WIRE_NONCE_LEN);
	fl__put_le16(p + 64, (uint16_t)h->n_regions);
	fl__put_le16(p + 66, (uint16_t)h->agent_len);
	fl__put_le32(p + 68, 0);
}

static void put_region(uint8_t *p, const struct fl__wire_region *r)
{
	fl__put_le32(p, r->id);
	p[4] = r->page_shift;
	p[5] = p[6] = p[7] = 0;
	fl__put_le64(p + 8, r->start);
	fl__put_le64(p + 16, r->length);
}

/* The PAGES descriptor and table, with each DATA page's CRC32C taken now. */
static void put_pages_meta(uint8_t *p, const struct fl__wire_pages *pg)
{
	size_t psize = (size_t)1 << pg->page_shift;

	fl__put_le32(p, pg->region_id);
	fl__put_le16(p + 4, (uint16_t)pg->count);
	p[6] = pg->page_shift;
	p[7] = 0;
	fl__put_le64(p + 8, pg->first);
	p += FL__WIRE_PAGES_FIXED;
	for (uint32_t i = 0; i < pg->count; i++, p += FL__WIRE_PAGE_ENTRY) {
		const struct fl__wire_page *e = &pg->pages[i];

		fl__put_le32(p, e->flags == FL__WIRE_PAGE_DATA ? fl__crc32c(0, e->data, psize) : 0);
		fl__put_le16(p + 4, e->flags);
		fl__put_le16(p + 6, 0);
	}
}

/* The meta part of every payload but PAGES. */
static void put_meta(uint8_t *p, const struct fl__wire_frame *f)
{
	switch (f->type) {
	case FL__WIRE_HELLO:
		put_hello_fixed(p, &f->hello);
		p += FL__WIRE_HELLO_FIXED;
		for (uint32_t i = 0; i < f->hello.n_regions; i++, p += FL__WIRE_REGION_LEN)
			put_region(p, &f->hello.regions[i]);
		if (f->hello.agent_len)
			memcpy(p, f->hello.agent, f->hello.agent_len);
		break;
	case FL__WIRE_REQUEST:
		fl__put_le32(p, f->request.region_id);
		fl__put_le32(p + 4, f->request.count);
		fl__put_le64(p + 8, f->request.index);
		break;
	case FL__WIRE_RECEIVED_BITMAP:
		fl__put_le32(p, f->bitmap.region_id);
		fl__put_le32(p + 4, f->bitmap.nbits);
		fl__put_le64(p + 8, f->bitmap.offset);
		memcpy(p + 16, f->bitmap.bits, bitmap_bytes(f->bitmap.nbits));
		break;
	case FL__WIRE_STATE_BLOB:
		fl__put_le32(p, f->blob.total);
		fl__put_le32(p + 4, f->blob.offset);
		fl__put_le32(p + 8, f->blob.len);
		fl__put_le32(p + 12, 0);
		if (f->blob.len)
			memcpy(p + 16, f->blob.data, f->blob.len);
		break;
	case FL__WIRE_COMPLETE:
		fl__put_le64(p, f->complete.pages);
		break;
	case FL__WIRE_ERROR:
		fl__put_le32(p, f->error.code);
		fl__put_le16(p + 4, (uint16_t)f->error.msg_len);
		fl__put_le16(p + 6, 0);
		if (f->error.msg_len)
			memcpy(p + 8, f->error.msg, f->error.msg_len);
		break;
	default:
		break;
	}
}

static int frame_version(const struct fl__wire_frame *f, char *msg, size_t cap)
{
	unsigned int v = f->version;

	if (!v)
		v = f->type == FL__WIRE_HELLO || f->type == FL__WIRE_ERROR ? 1 :
		    FL__WIRE_VERSION_MAX;
	if (v < FL__WIRE_VERSION_MIN || v > FL__WIRE_VERSION_MAX)
		return say(msg, cap, "wire version %u: this side speaks %u..%u", v,
			   FL__WIRE_VERSION_MIN, FL__WIRE_VERSION_MAX);
	return (int)v;
}

static void put_header(uint8_t *h, const struct fl__wire_frame *f, unsigned int version,
		       uint32_t payload_len, uint32_t meta_crc)
{
	memcpy(h, magic, 4);
	h[4] = (uint8_t)version;
	h[5] = f->type;
	fl__put_le16(h + 6, f->flags);
	fl__put_le16(h + 8, FL__WIRE_HDR_LEN);
	fl__put_le16(h + 10, 0);
	fl__put_le32(h + 12, payload_len);
	fl__put_le64(h + 16, f->seq);
	fl__put_le32(h + 24, meta_crc);
	fl__put_le32(h + 28, fl__crc32c(0, h, 28));
}

/* Every check of an encoder; returns the payload bytes and the version to write. */
static int check_frame(const struct fl__wire_frame *f, uint32_t *ret_meta, int *ret_version)
{
	char msg[160];
	int v, r;

	v = frame_version(f, msg, sizeof(msg));
	if (v < 0)
		return -EINVAL;
	if (check_header((unsigned int)v, f->type, f->flags, msg, sizeof(msg)) < 0)
		return -EINVAL;
	r = payload_size(f, ret_meta, msg, sizeof(msg));
	if (r < 0)
		return -EINVAL;
	*ret_version = v;
	return r;
}

int fl__wire_frame_size(const struct fl__wire_frame *f)
{
	uint32_t meta;
	int v, r;

	if (!f)
		return -EINVAL;
	r = check_frame(f, &meta, &v);
	return r < 0 ? r : FL__WIRE_HDR_LEN + r;
}

int fl__wire_encode(const struct fl__wire_frame *f, void *buf, size_t cap)
{
	uint8_t *out = buf;
	uint32_t meta;
	int v, payload;

	if (!f || (!buf && cap))
		return -EINVAL;
	payload = check_frame(f, &meta, &v);
	if (payload < 0)
		return payload;
	if (cap < FL__WIRE_HDR_LEN + (size_t)payload)
		return -ENOSPC;
	if (f->type == FL__WIRE_PAGES) {
		const struct fl__wire_pages *p = &f->pages;
		uint8_t *d = out + FL__WIRE_HDR_LEN + meta;
		size_t psize = (size_t)1 << p->page_shift;

		put_pages_meta(out + FL__WIRE_HDR_LEN, p);
		for (uint32_t i = 0; i < p->count; i++)
			if (p->pages[i].flags == FL__WIRE_PAGE_DATA) {
				memcpy(d, p->pages[i].data, psize);
				d += psize;
			}
	} else {
		put_meta(out + FL__WIRE_HDR_LEN, f);
	}
	put_header(out, f, (unsigned int)v, (uint32_t)payload,
		   fl__crc32c(0, out + FL__WIRE_HDR_LEN, meta));
	return FL__WIRE_HDR_LEN + payload;
}

int fl__wire_encode_pages_iov(const struct fl__wire_frame *f, void *meta_buf, size_t meta_cap,
			      struct iovec *iov, size_t iov_cap, size_t *ret_iovcnt)
{
	const struct fl__wire_pages *p;
	uint8_t *m = meta_buf;
	size_t psize, n = 1;
	uint32_t meta;
	int v, payload;

	if (!f || f->type != FL__WIRE_PAGES || !meta_buf || !iov || !ret_iovcnt)
		return -EINVAL;
	payload = check_frame(f, &meta, &v);
	if (payload < 0)
		return payload;
	if (meta_cap < FL__WIRE_HDR_LEN + (size_t)meta || iov_cap < 1)
		return -ENOSPC;
	p = &f->pages;
	psize = (size_t)1 << p->page_shift;
	for (uint32_t i = 0; i < p->count; i++) {
		const uint8_t *d = p->pages[i].data;

		if (p->pages[i].flags != FL__WIRE_PAGE_DATA)
			continue;
		if (n > 1 && (const uint8_t *)iov[n - 1].iov_base + iov[n - 1].iov_len == d) {
			iov[n - 1].iov_len += psize;
			continue;
		}
		if (n == iov_cap)
			return -ENOSPC;
		iov[n].iov_base = (void *)d;
		iov[n].iov_len = psize;
		n++;
	}
	put_pages_meta(m + FL__WIRE_HDR_LEN, p);
	put_header(m, f, (unsigned int)v, (uint32_t)payload,
		   fl__crc32c(0, m + FL__WIRE_HDR_LEN, meta));
	iov[0].iov_base = m;
	iov[0].iov_len = FL__WIRE_HDR_LEN + meta;
	*ret_iovcnt = n;
	return FL__WIRE_HDR_LEN + payload;
}

bool fl__wire_is_zero(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t acc = 0;

	for (; len && ((uintptr_t)b & 7); len--)
		acc |= *b++;
	while (len >= 64 && !acc) {
		uint64_t w[8];

		memcpy(w, b, sizeof(w));
		acc = w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
		b += 64;
		len -= 64;
	}
	if (acc)
		return false;
	while (len--)
		acc |= *b++;
	return !acc;
}

/* ---------------------------------------------------------------- decoder */

enum phase {
	P_HDR,		/* the first 32 header bytes */
	P_HDR_EXT,	/* header bytes past 32 */
	P_META,		/* the whole payload of any type but PAGES */
	P_PAGES_DESC,	/* PAGES: the 16-byte descriptor */
	P_PAGES_TABLE,	/* PAGES: the page table */
	P_DATA,		/* PAGES: the page bytes */
	P_READY,	/* a frame is complete */
};

int fl__wire_dec_init(struct fl__wire_dec *d, uint32_t flags)
{
	*d = (struct fl__wire_dec){ .dflags = flags, .phase = P_HDR, .want = FL__WIRE_HDR_LEN };
	d->dst = d->hdr;
	if (flags & ~(uint32_t)FL__WIRE_DEC_FUZZ_NO_CRC)
		return -EINVAL;
	/* +1: room for the NUL after a string that ends the payload (agent, message). */
	d->meta = malloc(FL__WIRE_MAX_META + 1);
	d->pages = malloc(FL__WIRE_MAX_PAGES * sizeof(*d->pages));
	if (!d->meta || !d->pages) {
		fl__wire_dec_fini(d);
		return -ENOMEM;
	}
	return 0;
}

void fl__wire_dec_fini(struct fl__wire_dec *d)
{
	if (!d)
		return;
	free(d->meta);
	free(d->pages);
	free(d->regions);
	if (d->data)
		munmap(d->data, FL__WIRE_MAX_DATA);
	d->meta = NULL;
	d->pages = NULL;
	d->regions = NULL;
	d->data = NULL;
}

void fl__wire_dec_move(struct fl__wire_dec *dst, struct fl__wire_dec *src)
{
	*dst = *src;
	if (src->dst >= src->hdr && src->dst <= src->hdr + sizeof(src->hdr))
		dst->dst = dst->hdr + (src->dst - src->hdr);
	memset(src, 0, sizeof(*src));
}

void fl__wire_dec_set_version(struct fl__wire_dec *d, uint8_t version)
{
	d->version = version;
}

/* Every error names the frame by its number and stream offset, then says what is wrong. */
__attribute__((format(printf, 3, 4)))
static int fail(struct fl__wire_dec *d, int err, const char *fmt, ...)
{
	char what[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(d->msg, sizeof(d->msg), "frame %llu at stream byte %llu: %s",
		 (unsigned long long)d->frames, (unsigned long long)d->offset, what);
	d->err = err;
	return err;
}

/* A shared validator's sentence, prefixed with the frame type. */
static int fail_check(struct fl__wire_dec *d, const char *what)
{
	char tn[16];

	return fail(d, -EPROTO, "%s: %s", fl__wire_type_name(d->frame.type, tn), what);
}

static void set_phase(struct fl__wire_dec *d, int phase, uint8_t *dst, size_t want)
{
	d->phase = phase;
	d->dst = dst;
	d->have = 0;
	d->want = want;
}

/* Bytes as text for a message: printable ASCII as it is, anything else as \xNN. */
static void escape(char *out, size_t cap, const uint8_t *p, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, p[i] >= 0x20 && p[i] < 0x7f &&
				      p[i] != '"' && p[i] != '\\' ? "%c" : "\\x%02x", p[i]);
	out[o] = 0;
}

/* The payload sizes each type may have, checked before a byte of the payload is read. */
static int check_payload_len(struct fl__wire_dec *d)
{
	uint32_t n = d->payload_len, lo, hi;
	char tn[16];

	switch (d->frame.type) {
	case FL__WIRE_HELLO:
		lo = FL__WIRE_HELLO_FIXED;
		hi = FL__WIRE_HELLO_FIXED + FL__WIRE_MAX_REGIONS * FL__WIRE_REGION_LEN +
		     FL__WIRE_MAX_AGENT;
		break;
	case FL__WIRE_PAGES:
		lo = FL__WIRE_PAGES_FIXED + FL__WIRE_PAGE_ENTRY;
		hi = FL__WIRE_PAGES_FIXED + FL__WIRE_MAX_PAGES * FL__WIRE_PAGE_ENTRY +
		     FL__WIRE_MAX_DATA;
		break;
	case FL__WIRE_REQUEST:
		lo = hi = FL__WIRE_REQUEST_LEN;
		break;
	case FL__WIRE_RECEIVED_BITMAP:
		lo = FL__WIRE_BITMAP_FIXED + 8;
		hi = FL__WIRE_BITMAP_FIXED + FL__WIRE_MAX_BITMAP_BITS / 8;
		break;
	case FL__WIRE_STATE_BLOB:
		lo = FL__WIRE_BLOB_FIXED;
		hi = FL__WIRE_BLOB_FIXED + FL__WIRE_MAX_BLOB_CHUNK;
		break;
	case FL__WIRE_COMPLETE:
		lo = hi = FL__WIRE_COMPLETE_LEN;
		break;
	case FL__WIRE_ERROR:
		lo = FL__WIRE_ERROR_FIXED;
		hi = FL__WIRE_ERROR_FIXED + FL__WIRE_MAX_ERROR_MSG;
		break;
	default:	/* PING, PONG */
		lo = hi = 0;
		break;
	}
	if (n < lo || n > hi)
		return fail(d, -EPROTO, "%s payload of %u bytes, outside %u..%u",
			    fl__wire_type_name(d->frame.type, tn), n, lo, hi);
	return 0;
}

/*
 * The magic and the version are checked as soon as they are in, so a
 * stranger is turned away at once rather than after 32 bytes, with the same
 * message however the bytes were split.
 */
static int check_early(struct fl__wire_dec *d)
{
	if (d->have >= 4 && memcmp(d->hdr, magic, 4)) {
		char got[40];

		escape(got, sizeof(got), d->hdr, 4);
		return fail(d, -EPROTO, "not a faultline wire stream: it starts with \"%s\", "
			    "not \"\\x89FLW\"", got);
	}
	if (d->have >= 5 && (d->hdr[4] < FL__WIRE_VERSION_MIN || d->hdr[4] > FL__WIRE_VERSION_MAX))
		return fail(d, -EPROTONOSUPPORT, "the peer sends wire version %u; this side "
			    "speaks %u..%u", d->hdr[4], FL__WIRE_VERSION_MIN,
			    FL__WIRE_VERSION_MAX);
	return 0;
}

static int header_done(struct fl__wire_dec *d)
{
	struct fl__wire_frame *f = &d->frame;
	uint32_t crc;
	char why[160];

	crc = fl__crc32c(0, d->hdr, 28);
	crc = fl__crc32c(crc, d->hdr + FL__WIRE_HDR_LEN, d->hdr_len - FL__WIRE_HDR_LEN);
	if (crc != fl__le32(d->hdr + 28) && !(d->dflags & FL__WIRE_DEC_FUZZ_NO_CRC))
		return fail(d, -EBADMSG, "header checksum mismatch: CRC32C 0x%08x, header says "
			    "0x%08x", crc, fl__le32(d->hdr + 28));
	*f = (struct fl__wire_frame){
		.version = d->hdr[4],
		.type = d->hdr[5],
		.flags = fl__le16(d->hdr + 6),
		.seq = fl__le64(d->hdr + 16),
	};
	d->payload_len = fl__le32(d->hdr + 12);
	if (check_header(f->version, f->type, f->flags, why, sizeof(why)) < 0)
		return fail(d, -EPROTO, "%s", why);
	if (fl__le16(d->hdr + 10))
		return fail(d, -EPROTO, "reserved header bytes 10-11 are not zero");
	if (d->version && f->type != FL__WIRE_ERROR && f->version != d->version)
		return fail(d, -EPROTO, "wire version %u, but this connection agreed on %u",
			    f->version, d->version);
	if (check_payload_len(d) < 0)
		return d->err;
	d->frame_len = d->hdr_len + (uint64_t)d->payload_len;
	if (f->type == FL__WIRE_PAGES)
		set_phase(d, P_PAGES_DESC, d->meta, FL__WIRE_PAGES_FIXED);
	else
		set_phase(d, P_META, d->meta, d->payload_len);
	return 0;
}

static int meta_crc_ok(struct fl__wire_dec *d, uint32_t len)
{
	uint32_t crc = fl__crc32c(0, d->meta, len);
	char tn[16];

	if (crc == fl__le32(d->hdr + 24) || (d->dflags & FL__WIRE_DEC_FUZZ_NO_CRC))
		return 0;
	return fail(d, -EBADMSG, "%s payload checksum mismatch: CRC32C 0x%08x, header says "
		    "0x%08x", fl__wire_type_name(d->frame.type, tn), crc, fl__le32(d->hdr + 24));
}

static int pages_desc_done(struct fl__wire_dec *d)
{
	struct fl__wire_pages *p = &d->frame.pages;
	const uint8_t *m = d->meta;
	uint64_t table, rest;
	char why[160];

	p->region_id = fl__le32(m);
	p->count = fl__le16(m + 4);
	p->page_shift = m[6];
	p->first = fl__le64(m + 8);
	if (m[7])
		return fail(d, -EPROTO, "PAGES: reserved descriptor byte 7 is not zero");
	if (check_pages_desc(p->count, p->page_shift, p->first, why, sizeof(why)) < 0)
		return fail_check(d, why);
	table = (uint64_t)p->count * FL__WIRE_PAGE_ENTRY;
	if (d->payload_len < FL__WIRE_PAGES_FIXED + table)
		return fail(d, -EPROTO, "PAGES: payload of %u bytes cannot hold the table of %u "
			    "pages", d->payload_len, p->count);
	rest = d->payload_len - FL__WIRE_PAGES_FIXED - table;
	if (rest & (((uint64_t)1 << p->page_shift) - 1) || rest > FL__WIRE_MAX_DATA ||
	    rest > (uint64_t)p->count << p->page_shift)
		return fail(d, -EPROTO, "PAGES: %llu bytes after the table are not a whole "
			    "number of at most %u pages of %u bytes", (unsigned long long)rest,
			    p->count, 1u << p->page_shift);
	d->meta_len = FL__WIRE_PAGES_FIXED + (uint32_t)table;
	d->data_len = (uint32_t)rest;
	set_phase(d, P_PAGES_TABLE, d->meta + FL__WIRE_PAGES_FIXED, (size_t)table);
	return 0;
}

/* The data buffer: 2 MiB aligned, so pages of any size we allow land aligned to their size. */
static int map_data(struct fl__wire_dec *d)
{
	size_t len = FL__WIRE_MAX_DATA, span = 2 * (size_t)FL__WIRE_MAX_DATA;
	uint8_t *p, *aligned;

	if (d->data)
		return 0;
	p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return fail(d, -ENOMEM, "no memory for a PAGES frame's data");
	aligned = (uint8_t *)(((uintptr_t)p + len - 1) & ~(uintptr_t)(len - 1));
	if (aligned > p)
		munmap(p, (size_t)(aligned - p));
	if (aligned + len < p + span)
		munmap(aligned + len, (size_t)(p + span - (aligned + len)));
	d->data = aligned;
	return 0;
}

static int pages_table_done(struct fl__wire_dec *d)
{
	struct fl__wire_pages *p = &d->frame.pages;
	const uint8_t *e = d->meta + FL__WIRE_PAGES_FIXED;
	size_t psize = (size_t)1 << p->page_shift;
	uint32_t n_data = 0;
	char why[160];

	if (meta_crc_ok(d, d->meta_len) < 0)
		return d->err;
	for (uint32_t i = 0; i < p->count; i++, e += FL__WIRE_PAGE_ENTRY) {
		struct fl__wire_page *pg = &d->pages[i];

		pg->crc = fl__le32(e);
		pg->flags = fl__le16(e + 4);
		pg->data = NULL;
		if (check_page_flags(i, pg->flags, why, sizeof(why)) < 0)
			return fail_check(d, why);
		if (fl__le16(e + 6))
			return fail(d, -EPROTO, "PAGES: page %u: reserved bytes are not zero", i);
		if (pg->flags == FL__WIRE_PAGE_ZERO && pg->crc)
			return fail(d, -EPROTO, "PAGES: page %u is ZERO but has CRC 0x%08x", i,
				    pg->crc);
		if (pg->flags == FL__WIRE_PAGE_DATA)
			n_data++;
	}
	if ((uint64_t)n_data * psize != d->data_len)
		return fail(d, -EPROTO, "PAGES: the table lists %u data pages (%llu bytes) but "
			    "the payload carries %u", n_data,
			    (unsigned long long)n_data * psize, d->data_len);
	p->pages = d->pages;
	if (!d->data_len)
		return 1;
	if (map_data(d) < 0)
		return d->err;
	n_data = 0;
	for (uint32_t i = 0; i < p->count; i++)
		if (d->pages[i].flags == FL__WIRE_PAGE_DATA)
			d->pages[i].data = d->data + (size_t)n_data++ * psize;
	d->data_checked = 0;
	d->check_entry = 0;
	set_phase(d, P_DATA, d->data, d->data_len);
	return 0;
}

/* Verify every page that has fully arrived: while it is still in the cache, and in order. */
static int check_data(struct fl__wire_dec *d)
{
	struct fl__wire_pages *p = &d->frame.pages;
	size_t psize = (size_t)1 << p->page_shift;

	while (d->data_checked + psize <= d->have) {
		struct fl__wire_page *pg;
		uint32_t crc;

		while (d->pages[d->check_entry].flags != FL__WIRE_PAGE_DATA)
			d->check_entry++;
		pg = &d->pages[d->check_entry];
		crc = fl__crc32c(0, pg->data, psize);
		if (crc != pg->crc && !(d->dflags & FL__WIRE_DEC_FUZZ_NO_CRC))
			return fail(d, -EBADMSG, "PAGES: page %u of %u (region %u, page index "
				    "%llu): CRC32C 0x%08x, the table says 0x%08x", d->check_entry,
				    p->count, p->region_id,
				    (unsigned long long)(p->first + d->check_entry), crc, pg->crc);
		d->check_entry++;
		d->data_checked += (uint32_t)psize;
	}
	return 0;
}

static int parse_hello(struct fl__wire_dec *d)
{
	struct fl__wire_hello *h = &d->frame.hello;
	const uint8_t *m = d->meta;
	char why[160];

	h->role = m[0];
	h->version_min = m[1];
	h->version_max = m[2];
	h->page_shift = m[3];
	h->flags = fl__le32(m + 4);
	h->features = fl__le64(m + 8);
	memcpy(h->session_id, m + 16, FL__WIRE_SESSION_LEN);
	memcpy(h->nonce, m + 32, FL__WIRE_NONCE_LEN);
	h->n_regions = fl__le16(m + 64);
	h->agent_len = fl__le16(m + 66);
	if (fl__le32(m + 68))
		return fail(d, -EPROTO, "HELLO: reserved bytes 68-71 are not zero");
	if (h->n_regions > FL__WIRE_MAX_REGIONS || h->agent_len > FL__WIRE_MAX_AGENT ||
	    d->payload_len != FL__WIRE_HELLO_FIXED + h->n_regions * FL__WIRE_REGION_LEN +
			      h->agent_len)
		return fail(d, -EPROTO, "HELLO: %u regions and an agent string of %u bytes do not "
			    "make a payload of %u bytes (or exceed %u and %u)", h->n_regions,
			    h->agent_len, d->payload_len, FL__WIRE_MAX_REGIONS,
			    FL__WIRE_MAX_AGENT);
	if (h->n_regions && !d->regions) {
		d->regions = malloc(FL__WIRE_MAX_REGIONS * sizeof(*d->regions));
		if (!d->regions)
			return fail(d, -ENOMEM, "no memory for a region table");
	}
	m += FL__WIRE_HELLO_FIXED;
	for (uint32_t i = 0; i < h->n_regions; i++, m += FL__WIRE_REGION_LEN) {
		struct fl__wire_region *r = &d->regions[i];

		r->id = fl__le32(m);
		r->page_shift = m[4];
		r->start = fl__le64(m + 8);
		r->length = fl__le64(m + 16);
		if (m[5] | m[6] | m[7])
			return fail(d, -EPROTO, "HELLO: region %u: reserved bytes are not zero", i);
	}
	h->regions = h->n_regions ? d->regions : NULL;
	h->agent = (const char *)m;
	d->meta[d->payload_len] = 0;
	if (check_hello(h, why, sizeof(why)) < 0)
		return fail_check(d, why);
	return 0;
}

static int parse_meta(struct fl__wire_dec *d)
{
	struct fl__wire_frame *f = &d->frame;
	const uint8_t *m = d->meta;
	uint32_t n = d->payload_len;
	char why[160];
	int r = 0;

	if (meta_crc_ok(d, n) < 0)
		return d->err;
	switch (f->type) {
	case FL__WIRE_HELLO:
		return parse_hello(d);
	case FL__WIRE_REQUEST:
		f->request.region_id = fl__le32(m);
		f->request.count = fl__le32(m + 4);
		f->request.index = fl__le64(m + 8);
		r = check_request(&f->request, why, sizeof(why));
		break;
	case FL__WIRE_RECEIVED_BITMAP:
		f->bitmap.region_id = fl__le32(m);
		f->bitmap.nbits = fl__le32(m + 4);
		f->bitmap.offset = fl__le64(m + 8);
		f->bitmap.bits = m + FL__WIRE_BITMAP_FIXED;
		if (f->bitmap.nbits > FL__WIRE_MAX_BITMAP_BITS ||
		    n != FL__WIRE_BITMAP_FIXED + bitmap_bytes(f->bitmap.nbits))
			return fail(d, -EPROTO, "RECEIVED_BITMAP: %u bits do not make a payload of "
				    "%u bytes (or exceed %u)", f->bitmap.nbits, n,
				    FL__WIRE_MAX_BITMAP_BITS);
		r = check_bitmap(&f->bitmap, why, sizeof(why));
		break;
	case FL__WIRE_STATE_BLOB:
		f->blob.total = fl__le32(m);
		f->blob.offset = fl__le32(m + 4);
		f->blob.len = fl__le32(m + 8);
		f->blob.data = m + FL__WIRE_BLOB_FIXED;
		if (fl__le32(m + 12))
			return fail(d, -EPROTO, "STATE_BLOB: reserved bytes 12-15 are not zero");
		if (f->blob.len != n - FL__WIRE_BLOB_FIXED)
			return fail(d, -EPROTO, "STATE_BLOB: a chunk of %u bytes in a payload "
				    "of %u", f->blob.len, n);
		r = check_blob(&f->blob, why, sizeof(why));
		break;
	case FL__WIRE_COMPLETE:
		f->complete.pages = fl__le64(m);
		break;
	case FL__WIRE_ERROR:
		f->error.code = fl__le32(m);
		f->error.msg_len = fl__le16(m + 4);
		f->error.msg = (const char *)m + FL__WIRE_ERROR_FIXED;
		if (fl__le16(m + 6))
			return fail(d, -EPROTO, "ERROR: reserved bytes 6-7 are not zero");
		if (f->error.msg_len != n - FL__WIRE_ERROR_FIXED)
			return fail(d, -EPROTO, "ERROR: a message of %u bytes in a payload of %u",
				    f->error.msg_len, n);
		d->meta[n] = 0;
		r = check_error(&f->error, why, sizeof(why));
		break;
	default:	/* PING, PONG: nothing */
		break;
	}
	return r < 0 ? fail_check(d, why) : 0;
}

/* The current phase is complete: move on. 1 when the frame is, 0 if more is needed, or -errno. */
static int phase_done(struct fl__wire_dec *d)
{
	int r;

	switch (d->phase) {
	case P_HDR:
		d->hdr_len = fl__le16(d->hdr + 8);
		if (d->hdr_len < FL__WIRE_HDR_LEN || d->hdr_len > FL__WIRE_HDR_MAX ||
		    d->hdr_len % 8)
			return fail(d, -EPROTO, "header length %u is not a multiple of 8 in %u..%u",
				    d->hdr_len, FL__WIRE_HDR_LEN, FL__WIRE_HDR_MAX);
		if (d->hdr_len > FL__WIRE_HDR_LEN) {
			set_phase(d, P_HDR_EXT, d->hdr + FL__WIRE_HDR_LEN,
				  d->hdr_len - FL__WIRE_HDR_LEN);
			return 0;
		}
		r = header_done(d);
		break;
	case P_HDR_EXT:
		r = header_done(d);
		break;
	case P_PAGES_DESC:
		return pages_desc_done(d);
	case P_PAGES_TABLE:
		return pages_table_done(d);
	case P_DATA:
		return 1;	/* every page was verified as it arrived */
	case P_META:
		r = parse_meta(d);
		return r < 0 ? r : 1;
	default:
		return -EINVAL;
	}
	if (r < 0)
		return r;
	/* A payload of 0 bytes (PING, PONG) completes with the header. */
	if (d->phase == P_META && !d->want)
		return phase_done(d);
	return 0;
}

static void next_frame(struct fl__wire_dec *d)
{
	d->offset += d->frame_len;
	d->frames++;
	d->frame_len = 0;
	d->frame_have = 0;
	d->hdr_len = d->payload_len = d->meta_len = d->data_len = 0;
	set_phase(d, P_HDR, d->hdr, FL__WIRE_HDR_LEN);
}

size_t fl__wire_dec_need(const struct fl__wire_dec *d)
{
	if (d->err)
		return 0;
	if (d->phase == P_READY)
		return FL__WIRE_HDR_LEN;
	if (d->frame_len)
		return (size_t)(d->frame_len - d->frame_have);
	return d->want - d->have;
}

void *fl__wire_dec_space(struct fl__wire_dec *d, size_t *ret_len)
{
	if (d->err)
		return NULL;
	if (d->phase == P_READY)
		next_frame(d);
	*ret_len = d->want - d->have;
	return d->dst + d->have;
}

int fl__wire_dec_commit(struct fl__wire_dec *d, size_t n)
{
	int r;

	if (d->err)
		return d->err;
	if (d->phase == P_READY)
		return n ? -EINVAL : 0;		/* call fl__wire_dec_space() first */
	if (n > d->want - d->have)
		return -EINVAL;
	d->have += n;
	d->frame_have += n;
	if (d->phase == P_HDR) {
		r = check_early(d);
		if (r < 0)
			return r;
	} else if (d->phase == P_DATA) {
		r = check_data(d);
		if (r < 0)
			return r;
	}
	if (d->have < d->want)
		return 0;
	r = phase_done(d);
	if (r == 1)
		d->phase = P_READY;
	return r;
}

int fl__wire_dec_feed(struct fl__wire_dec *d, const void *p, size_t n, size_t *ret_used)
{
	const uint8_t *in = p;
	size_t used = 0;
	int r = 0;

	if (d->err) {
		*ret_used = 0;
		return d->err;
	}
	if (d->phase == P_READY)
		next_frame(d);
	while (used < n) {
		size_t room = 0, k;
		void *dst = fl__wire_dec_space(d, &room);

		if (!dst) {
			*ret_used = used;
			return d->err;
		}
		k = room < n - used ? room : n - used;
		memcpy(dst, in + used, k);
		used += k;
		r = fl__wire_dec_commit(d, k);
		if (r)
			break;
	}
	*ret_used = used;
	return r;
}

bool fl__wire_dec_at_boundary(const struct fl__wire_dec *d)
{
	return d->phase == P_READY || (d->phase == P_HDR && !d->have);
}

const struct fl__wire_frame *fl__wire_dec_frame(const struct fl__wire_dec *d)
{
	return d->phase == P_READY && !d->err ? &d->frame : NULL;
}

const char *fl__wire_dec_error(const struct fl__wire_dec *d)
{
	return d->err ? d->msg : "";
}

uint32_t fl__wire_error_code_from_errno(int err)
{
	switch (err < 0 ? -err : err) {
	case EPROTO:
		return FL__WIRE_ERR_PROTO;
	case EPROTONOSUPPORT:
		return FL__WIRE_ERR_VERSION;
	case EACCES:
		return FL__WIRE_ERR_AUTH;
	case EBADMSG:
		return FL__WIRE_ERR_CHECKSUM;
	case ESTALE:
		return FL__WIRE_ERR_SESSION;
	case EINVAL:
		return FL__WIRE_ERR_REGIONS;
	case ECANCELED:
		return FL__WIRE_ERR_CANCELLED;
	default:
		return FL__WIRE_ERR_LOCAL;
	}
}

int fl__wire_error_code_to_errno(uint32_t code)
{
	switch (code) {
	case FL__WIRE_ERR_VERSION:
		return EPROTONOSUPPORT;
	case FL__WIRE_ERR_AUTH:
		return EACCES;
	case FL__WIRE_ERR_CHECKSUM:
		return EBADMSG;
	case FL__WIRE_ERR_SESSION:
		return ESTALE;
	case FL__WIRE_ERR_REGIONS:
		return EINVAL;
	case FL__WIRE_ERR_LOCAL:
		return EIO;
	case FL__WIRE_ERR_CANCELLED:
		return ECANCELED;
	default:
		return EPROTO;
	}
}

bool fl__wire_frame_equal(const struct fl__wire_frame *a, const struct fl__wire_frame *b)
{
	if (a->version != b->version || a->type != b->type || a->flags != b->flags ||
	    a->seq != b->seq)
		return false;
	switch (a->type) {
	case FL__WIRE_HELLO: {
		const struct fl__wire_hello *x = &a->hello, *y = &b->hello;

		if (x->role != y->role || x->version_min != y->version_min ||
		    x->version_max != y->version_max || x->page_shift != y->page_shift ||
		    x->flags != y->flags || x->features != y->features ||
		    memcmp(x->session_id, y->session_id, sizeof(x->session_id)) ||
		    memcmp(x->nonce, y->nonce, sizeof(x->nonce)) || x->n_regions != y->n_regions ||
		    x->agent_len != y->agent_len ||
		    (x->agent_len && memcmp(x->agent, y->agent, x->agent_len)))
			return false;
		for (uint32_t i = 0; i < x->n_regions; i++) {
			const struct fl__wire_region *r = &x->regions[i], *s = &y->regions[i];

			if (r->id != s->id || r->page_shift != s->page_shift ||
			    r->start != s->start || r->length != s->length)
				return false;
		}
		return true;
	}
	case FL__WIRE_PAGES: {
		const struct fl__wire_pages *x = &a->pages, *y = &b->pages;

		if (x->region_id != y->region_id || x->page_shift != y->page_shift ||
		    x->count != y->count || x->first != y->first)
			return false;
		for (uint32_t i = 0; i < x->count; i++) {
			const struct fl__wire_page *p = &x->pages[i], *q = &y->pages[i];

			if (p->flags != q->flags)
				return false;
			if (p->flags == FL__WIRE_PAGE_DATA &&
			    memcmp(p->data, q->data, (size_t)1 << x->page_shift))
				return false;
		}
		return true;
	}
	case FL__WIRE_REQUEST:
		return a->request.region_id == b->request.region_id &&
		       a->request.count == b->request.count && a->request.index == b->request.index;
	case FL__WIRE_RECEIVED_BITMAP:
		return a->bitmap.region_id == b->bitmap.region_id &&
		       a->bitmap.nbits == b->bitmap.nbits && a->bitmap.offset == b->bitmap.offset &&
		       !memcmp(a->bitmap.bits, b->bitmap.bits, bitmap_bytes(a->bitmap.nbits));
	case FL__WIRE_STATE_BLOB:
		return a->blob.total == b->blob.total && a->blob.offset == b->blob.offset &&
		       a->blob.len == b->blob.len &&
		       (!a->blob.len || !memcmp(a->blob.data, b->blob.data, a->blob.len));
	case FL__WIRE_COMPLETE:
		return a->complete.pages == b->complete.pages;
	case FL__WIRE_ERROR:
		return a->error.code == b->error.code && a->error.msg_len == b->error.msg_len &&
		       (!a->error.msg_len || !memcmp(a->error.msg, b->error.msg, a->error.msg_len));
	default:
		return true;
	}
}

/* -------------------------------------------------------------- handshake */

static int fmt(char *msg, size_t cap, int err, const char *f, ...)
	__attribute__((format(printf, 4, 5)));
static int fmt(char *msg, size_t cap, int err, const char *f, ...)
{
	va_list ap;

	if (msg && cap) {
		va_start(ap, f);
		vsnprintf(msg, cap, f, ap);
		va_end(ap);
	}
	return err;
}

int fl__wire_negotiate(const struct fl__wire_hello *mine, const struct fl__wire_hello *peer,
		       char *msg, size_t msg_cap, struct fl__wire_agreement *ret)
{
	const uint32_t same = FL__WIRE_HELLO_RESUME | FL__WIRE_HELLO_URGENT;
	unsigned int lo, hi;

	if (!mine || !peer || !ret)
		return -EINVAL;
	if (mine->role == peer->role)
		return fmt(msg, msg_cap, -EPROTO, "both sides say they are the %s",
			   mine->role == FL__WIRE_ROLE_SOURCE ? "source" : "destination");
	lo = mine->version_min > peer->version_min ? mine->version_min : peer->version_min;
	hi = mine->version_max < peer->version_max ? mine->version_max : peer->version_max;
	if (lo > hi)
		return fmt(msg, msg_cap, -EPROTONOSUPPORT, "no common wire version: this side "
			   "speaks %u..%u, the peer %u..%u", mine->version_min,
			   mine->version_max, peer->version_min, peer->version_max);
	if (mine->page_shift != peer->page_shift)
		return fmt(msg, msg_cap, -EPROTO, "page sizes differ: %u bytes here, %u on the "
			   "peer", 1u << mine->page_shift, 1u << peer->page_shift);
	if ((mine->flags ^ peer->flags) & FL__WIRE_HELLO_TLS)
		return fmt(msg, msg_cap, -EACCES, (mine->flags & FL__WIRE_HELLO_TLS) ?
			   "this side runs the connection inside TLS, and the peer says it "
			   "does not (something in between ends TLS?)" :
			   "the peer says it runs the connection inside TLS, and this side "
			   "does not (something in between adds TLS?)");
	if ((mine->flags ^ peer->flags) & same)
		return fmt(msg, msg_cap, -EPROTO, "the peer's HELLO flags 0x%x do not match "
			   "ours 0x%x (resume, urgent channel)", peer->flags & same,
			   mine->flags & same);
	if ((mine->flags & same) &&
	    memcmp(mine->session_id, peer->session_id, FL__WIRE_SESSION_LEN))
		return fmt(msg, msg_cap, -EPROTO, "the peer names another session");
	*ret = (struct fl__wire_agreement){
		.version = (uint8_t)hi,
		.features = mine->features & peer->features,
	};
	return 0;
}
