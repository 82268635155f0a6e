/* SPDX-License-Identifier: MIT */
/* Working-set and loading-set files: parse and encode (doc/working-set-format.md). */
#include <errno.h>
#include <string.h>

#include "util.h"
#include "wsfile.h"
#include "net/crc32c.h"
#include "net/le.h"

/*
 * Working set, little-endian:
 *   0 magic "FLWORKST"   8 version   12 header size (64)   16 page size
 *  24 region length     32 count    40 id[16]             56 flags (0)
 *  60 CRC32C of bytes [0, 60) then of the entries
 *  64 count u64 page indices, in the order of first touch
 */

static int bad(const char **why, const char *reason)
{
	*why = reason;
	return -EINVAL;
}

static int pow2_page(uint64_t ps)
{
	return ps >= FL__WS_MIN_PAGE && ps <= FL__WS_MAX_PAGE && !(ps & (ps - 1));
}

uint64_t fl__ws_entry(const struct fl__ws_info *ws, uint64_t i)
{
	return fl__le64(ws->entries + i * 8);
}

int fl__ws_parse(const void *buf, size_t len, struct fl__ws_info *ret, uint64_t *seen,
		 const char **why)
{
	const uint8_t *b = buf;
	uint64_t npages;
	uint32_t crc;

	if (len < FL__WS_HEADER)
		return bad(why, "shorter than its header");
	if (memcmp(b, FL__WS_MAGIC, 8))
		return bad(why, "not a working-set file (bad magic)");
	if (fl__le32(b + 8) != FL__WS_VERSION)
		return bad(why, "unknown version");
	if (fl__le32(b + 12) != FL__WS_HEADER)
		return bad(why, "unknown header size");
	if (fl__le32(b + 56))
		return bad(why, "unknown flags");
	ret->page_size = fl__le64(b + 16);
	ret->region_len = fl__le64(b + 24);
	ret->count = fl__le64(b + 32);
	memcpy(ret->id, b + 40, 16);
	if (!pow2_page(ret->page_size))
		return bad(why, "page size is not a power of two from 4 KiB to 1 GiB");
	if (!ret->region_len || ret->region_len % ret->page_size)
		return bad(why, "region length is not a positive multiple of the page size");
	npages = ret->region_len / ret->page_size;
	if (ret->count > npages)
		return bad(why, "more entries than the region has pages");
	if (ret->count > (len - FL__WS_HEADER) / 8 || len - FL__WS_HEADER != ret->count * 8)
		return bad(why, "file size does not match the entry count (truncated or trailing "
			   "bytes)");
	crc = fl__crc32c(0, b, 60);
	crc = fl__crc32c(crc, b + FL__WS_HEADER, ret->count * 8);
	if (crc != fl__le32(b + 60))
		return bad(why, "CRC mismatch (corrupted)");
	ret->entries = b + FL__WS_HEADER;
	for (uint64_t i = 0; i < ret->count; i++) {
		uint64_t pg = fl__ws_entry(ret, i);

		if (pg >= npages)
			return bad(why, "an entry lies past the region");
		if (seen) {
			if (fl__bit_test(seen, pg))
				return bad(why, "an entry is repeated");
			fl__bit_set(seen, pg);
		}
	}
	return 0;
}

void fl__ws_encode(void *buf, uint64_t page_size, uint64_t region_len, uint64_t count,
		   const uint8_t id[16])
{
	uint8_t *b = buf;
	uint32_t crc;

	memset(b, 0, FL__WS_HEADER);
	memcpy(b, FL__WS_MAGIC, 8);
	fl__put_le32(b + 8, FL__WS_VERSION);
	fl__put_le32(b + 12, FL__WS_HEADER);
	fl__put_le64(b + 16, page_size);
	fl__put_le64(b + 24, region_len);
	fl__put_le64(b + 32, count);
	memcpy(b + 40, id, 16);
	crc = fl__crc32c(0, b, 60);
	crc = fl__crc32c(crc, b + FL__WS_HEADER, count * 8);
	fl__put_le32(b + 60, crc);
}

/*
 * Loading set, little-endian:
 *   0 magic "FLLOADST"   8 version   12 flags (0)   16 page size   24 count
 *  32 id[16] (the working set's)     48 data offset (a multiple of 4096)
 *  56 reserved (0)       60 CRC32C of bytes [0, 60) then of the CRC table
 *  64 count u32 CRC32C, one per page's data
 *  data offset: count pages of data, in the working set's order
 */

uint64_t fl__ls_data_off(uint64_t count)
{
	uint64_t head = FL__WS_HEADER + count * 4;

	return (head + FL__LS_ALIGN - 1) / FL__LS_ALIGN * FL__LS_ALIGN;
}

int fl__ls_parse(const void *buf, size_t len, uint64_t file_size, struct fl__ls_info *ret,
		 size_t *need, const char **why)
{
	const uint8_t *b = buf;
	uint32_t crc;

	if (len < FL__WS_HEADER) {
		*need = FL__WS_HEADER;
		return -EAGAIN;
	}
	if (memcmp(b, FL__LS_MAGIC, 8))
		return bad(why, "not a loading-set file (bad magic)");
	if (fl__le32(b + 8) != FL__WS_VERSION)
		return bad(why, "unknown version");
	if (fl__le32(b + 12) || fl__le32(b + 56))
		return bad(why, "unknown flags");
	ret->page_size = fl__le64(b + 16);
	ret->count = fl__le64(b + 24);
	memcpy(ret->id, b + 32, 16);
	ret->data_off = fl__le64(b + 48);
	if (!pow2_page(ret->page_size))
		return bad(why, "page size is not a power of two from 4 KiB to 1 GiB");
	if (ret->count > (file_size / FL__WS_MIN_PAGE))
		return bad(why, "more pages than the file can hold");
	if (ret->data_off != fl__ls_data_off(ret->count))
		return bad(why, "data offset does not follow the CRC table");
	if (ret->data_off > file_size ||
	    ret->count > (file_size - ret->data_off) / ret->page_size)
		return bad(why, "file too short for its pages (truncated)");
	if (len < FL__WS_HEADER + ret->count * 4) {
		*need = FL__WS_HEADER + ret->count * 4;
		return -EAGAIN;
	}
	crc = fl__crc32c(0, b, 60);
	crc = fl__crc32c(crc, b + FL__WS_HEADER, ret->count * 4);
	if (crc != fl__le32(b + 60))
		return bad(why, "CRC mismatch (corrupted)");
	ret->crcs = b + FL__WS_HEADER;
	return 0;
}

void fl__ls_encode(void *buf, uint64_t page_size, uint64_t count, const uint8_t id[16],
		   uint64_t data_off)
{
	uint8_t *b = buf;
	uint32_t crc;

	memset(b, 0, FL__WS_HEADER);
	memcpy(b, FL__LS_MAGIC, 8);
	fl__put_le32(b + 8, FL__WS_VERSION);
	fl__put_le64(b + 16, page_size);
	fl__put_le64(b + 24, count);
	memcpy(b + 32, id, 16);
	fl__put_le64(b + 48, data_off);
	crc = fl__crc32c(0, b, 60);
	crc = fl__crc32c(crc, b + FL__WS_HEADER, count * 4);
	fl__put_le32(b + 60, crc);
}
