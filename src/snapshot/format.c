/* SPDX-License-Identifier: MIT */
/* The snapshot format's records: little-endian, fixed-width (doc/snapshot-format.md). */
#include <errno.h>
#include <string.h>

#include "net/crc32c.h"
#include "net/le.h"
#include "snapshot/format.h"

void fl__snap_header_encode(uint8_t out[FL__SNAP_HEADER_USED], const struct fl__snap_header *h)
{
	memset(out, 0, FL__SNAP_HEADER_USED);
	memcpy(out, FL__SNAP_MAGIC, 8);
	fl__put_le32(out + 8, h->version);
	fl__put_le32(out + 12, h->header_size);
	fl__put_le32(out + 16, h->flags);
	fl__put_le32(out + 20, h->region_count);
	memcpy(out + 24, h->id, 16);
	memcpy(out + 40, h->parent_id, 16);
	fl__put_le64(out + 56, h->region_table_off);
	fl__put_le64(out + 64, h->chunk_table_off);
	fl__put_le64(out + 72, h->chunk_count);
	fl__put_le64(out + 80, h->index_off);
	fl__put_le64(out + 88, h->index_count);
	fl__put_le64(out + 96, h->file_size);
	fl__put_le64(out + 104, h->created_ns);
	fl__put_le32(out + 112, h->region_table_crc);
	fl__put_le32(out + 116, h->chunk_table_crc);
	fl__put_le32(out + 120, h->index_crc);
	fl__put_le32(out + 124, fl__crc32c(0, out, 124));
}

int fl__snap_header_decode(const uint8_t in[FL__SNAP_HEADER_USED], struct fl__snap_header *h,
			   const char **why)
{
	if (memcmp(in, FL__SNAP_MAGIC, 8)) {
		*why = "not a faultline snapshot (bad magic; an unfinished snapshot has none)";
		return -EINVAL;
	}
	if (fl__le32(in + 124) != fl__crc32c(0, in, 124)) {
		*why = "header CRC mismatch (corrupted header)";
		return -EINVAL;
	}
	h->version = fl__le32(in + 8);
	h->header_size = fl__le32(in + 12);
	h->flags = fl__le32(in + 16);
	h->region_count = fl__le32(in + 20);
	memcpy(h->id, in + 24, 16);
	memcpy(h->parent_id, in + 40, 16);
	h->region_table_off = fl__le64(in + 56);
	h->chunk_table_off = fl__le64(in + 64);
	h->chunk_count = fl__le64(in + 72);
	h->index_off = fl__le64(in + 80);
	h->index_count = fl__le64(in + 88);
	h->file_size = fl__le64(in + 96);
	h->created_ns = fl__le64(in + 104);
	h->region_table_crc = fl__le32(in + 112);
	h->chunk_table_crc = fl__le32(in + 116);
	h->index_crc = fl__le32(in + 120);
	if (h->version != FL__SNAP_VERSION) {
		*why = "unsupported format version";
		return -EINVAL;
	}
	if (h->header_size != FL__SNAP_HEADER_SIZE) {
		*why = "unsupported header size";
		return -EINVAL;
	}
	if (h->flags & ~(uint32_t)FL__SNAP_F_ALL) {
		*why = "unknown header flags";
		return -EINVAL;
	}
	return 0;
}

void fl__snap_region_encode(uint8_t *out, const struct fl__snap_region *r)
{
	memset(out, 0, FL__SNAP_REGION_SIZE);
	fl__put_le64(out, r->addr);
	fl__put_le64(out + 8, r->len);
	fl__put_le64(out + 16, r->page_size);
	fl__put_le32(out + 24, r->flags);
	fl__put_le64(out + 32, r->data_off);
	fl__put_le64(out + 40, r->first_entry);
	fl__put_le64(out + 48, r->pages);
}

void fl__snap_region_decode(const uint8_t *in, struct fl__snap_region *r)
{
	r->addr = fl__le64(in);
	r->len = fl__le64(in + 8);
	r->page_size = fl__le64(in + 16);
	r->flags = fl__le32(in + 24);
	r->data_off = fl__le64(in + 32);
	r->first_entry = fl__le64(in + 40);
	r->pages = fl__le64(in + 48);
}

void fl__snap_entry_encode(uint8_t *out, const struct fl__snap_entry *e)
{
	fl__put_le32(out, e->kind);
	fl__put_le32(out + 4, e->crc);
	fl__put_le32(out + 8, e->chunk);
	fl__put_le32(out + 12, e->slot);
}

void fl__snap_entry_decode(const uint8_t *in, struct fl__snap_entry *e)
{
	e->kind = fl__le32(in);
	e->crc = fl__le32(in + 4);
	e->chunk = fl__le32(in + 8);
	e->slot = fl__le32(in + 12);
}

void fl__snap_chunk_encode(uint8_t *out, const struct fl__snap_chunk *c)
{
	memset(out, 0, FL__SNAP_CHUNK_SIZE);
	fl__put_le64(out, c->off);
	fl__put_le32(out + 8, c->clen);
	fl__put_le32(out + 12, c->rlen);
	fl__put_le32(out + 16, c->crc);
}

void fl__snap_chunk_decode(const uint8_t *in, struct fl__snap_chunk *c)
{
	c->off = fl__le64(in);
	c->clen = fl__le32(in + 8);
	c->rlen = fl__le32(in + 12);
	c->crc = fl__le32(in + 16);
}

bool fl__snap_is_zero(const void *p, size_t n)
{
	const uint64_t *w = p;
	uint64_t acc = 0;

	/* Eight words per step: no early exit within the step, so the loop vectorizes. */
	for (size_t i = 0; i + 8 <= n / 8; i += 8) {
		for (size_t k = 0; k < 8; k++)
			acc |= w[i + k];
		if (acc)
			return false;
	}
	for (size_t i = n / 64 * 8; i < n / 8; i++)
		acc |= w[i];
	return !acc;
}
