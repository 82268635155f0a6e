/* SPDX-License-Identifier: MIT */
/* The page server's messages: the rules both sides apply, the encoder and the checked decoder. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "crc32c.h"
#include "le.h"
#include "pgwire.h"

_Static_assert(FL__PG_MAX_FRAME < (1u << 30), "message sizes fit an int");
_Static_assert(FL__PG_MAX_RUN % (64 * FL__PG_PAGE) == 0, "a full run is whole bitmap words");

static const uint8_t magic[4] = { 0x89, 'F', 'L', 'W' };

static const char *const names[] = {
	[FL__PG_OPEN - FL__PG_TYPE_MIN] = "OPEN",
	[FL__PG_OPENED - FL__PG_TYPE_MIN] = "OPENED",
	[FL__PG_READ - FL__PG_TYPE_MIN] = "READ",
	[FL__PG_DATA - FL__PG_TYPE_MIN] = "DATA",
	[FL__PG_WRITE - FL__PG_TYPE_MIN] = "WRITE",
	[FL__PG_WRITTEN - FL__PG_TYPE_MIN] = "WRITTEN",
	[FL__PG_ERROR - FL__PG_TYPE_MIN] = "ERROR",
};

const char *fl__pg_type_name(unsigned int type, char *buf)
{
	if (type >= FL__PG_TYPE_MIN && type <= FL__PG_TYPE_MAX)
		return names[type - FL__PG_TYPE_MIN];
	snprintf(buf, 16, "type %u", type & 0xffff);
	return buf;
}

__attribute__((format(printf, 4, 5)))
static int say(int err, char *msg, size_t cap, const char *fmt, ...)
{
	va_list ap;

	if (msg && cap) {
		va_start(ap, fmt);
		vsnprintf(msg, cap, fmt, ap);
		va_end(ap);
	}
	return err;
}

static bool printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

static unsigned int popcount_bits(const uint8_t *holes, uint32_t nbits)
{
	unsigned int n = 0;

	for (uint32_t i = 0; i < nbits; i++)
		n += fl__pg_hole(holes, i);
	return n;
}

/* ------------------------------------------------------------------ rules */

static int check_run(const char *tn, uint64_t off, uint32_t len, char *msg, size_t cap)
{
	if (!len || len > FL__PG_MAX_RUN || len % FL__PG_PAGE)
		return say(-EPROTO, msg, cap, "%s: length %u is not a multiple of 4096 in "
			   "4096..%u", tn, len, FL__PG_MAX_RUN);
	if (off % FL__PG_PAGE)
		return say(-EPROTO, msg, cap, "%s: offset %llu is not a multiple of 4096", tn,
			   (unsigned long long)off);
	if (off > UINT64_MAX - len)
		return say(-EPROTO, msg, cap, "%s: offset %llu + length %u wraps", tn,
			   (unsigned long long)off, len);
	return 0;
}

static int check_name(const char *name, uint32_t len, char *msg, size_t cap)
{
	if (!len || len > FL__PG_MAX_NAME)
		return say(-EPROTO, msg, cap, "OPEN: name length %u is not in 1..%u", len,
			   FL__PG_MAX_NAME);
	if (!name || !printable(name, len))
		return say(-EPROTO, msg, cap, "OPEN: the name is not printable ASCII");
	return 0;
}

/* The payload length a message must have, or its bounds (DATA: checked against its fields). */
static int check_payload_len(unsigned int type, uint32_t len, char *msg, size_t cap)
{
	uint32_t lo, hi;
	char tn[16];

	switch (type) {
	case FL__PG_OPEN:
		lo = FL__PG_OPEN_FIXED + 1;
		hi = FL__PG_OPEN_FIXED + FL__PG_MAX_NAME;
		break;
	case FL__PG_OPENED:
		lo = hi = FL__PG_OPENED_LEN;
		break;
	case FL__PG_READ:
	case FL__PG_WRITTEN:
		lo = hi = FL__PG_RUN_FIXED;
		break;
	case FL__PG_DATA:
		lo = FL__PG_RUN_FIXED + 8;
		hi = FL__PG_MAX_PAYLOAD;
		break;
	case FL__PG_WRITE:
		lo = FL__PG_RUN_FIXED + FL__PG_PAGE;
		hi = FL__PG_RUN_FIXED + FL__PG_MAX_RUN;
		break;
	case FL__PG_ERROR:
		lo = FL__PG_ERROR_FIXED;
		hi = FL__PG_ERROR_FIXED + FL__PG_MAX_MSG;
		break;
	default:
		return say(-EPROTO, msg, cap, "unknown message type %u", type);
	}
	if (len < lo || len > hi)
		return say(-EPROTO, msg, cap, "%s: payload of %u bytes, not in %u..%u",
			   fl__pg_type_name(type, tn), len, lo, hi);
	return 0;
}

static uint16_t allowed_flags(unsigned int type)
{
	return type == FL__PG_ERROR ? FL__PG_F_CLOSE : 0;
}

/* Every rule on @m's fields; the payload length it encodes to in *@ret_len. */
static int check_msg(const struct fl__pg_msg *m, uint32_t *ret_len, char *msg, size_t cap)
{
	char tn[16];
	uint32_t len;
	int r;

	if (m->type < FL__PG_TYPE_MIN || m->type > FL__PG_TYPE_MAX)
		return say(-EINVAL, msg, cap, "unknown message type %u", m->type);
	if (m->flags & ~allowed_flags(m->type))
		return say(-EINVAL, msg, cap, "%s: flags 0x%x not allowed",
			   fl__pg_type_name(m->type, tn), m->flags);
	switch (m->type) {
	case FL__PG_OPEN:
		if (m->open.flags & ~(uint32_t)FL__PG_OPEN_WRITE)
			return say(-EINVAL, msg, cap, "OPEN: unknown flags 0x%x", m->open.flags);
		r = check_name(m->open.name, m->open.name_len, msg, cap);
		if (r < 0)
			return -EINVAL;
		len = FL__PG_OPEN_FIXED + m->open.name_len;
		break;
	case FL__PG_OPENED:
		if (m->opened.flags & ~(uint32_t)(FL__PG_OBJ_READONLY | FL__PG_OBJ_SNAPSHOT))
			return say(-EINVAL, msg, cap, "OPENED: unknown flags 0x%x",
				   m->opened.flags);
		if (m->opened.page_shift < 12 || m->opened.page_shift > 21)
			return say(-EINVAL, msg, cap, "OPENED: page shift %u not in 12..21",
				   m->opened.page_shift);
		if (m->opened.size % FL__PG_PAGE)
			return say(-EINVAL, msg, cap, "OPENED: size %llu is not a multiple of "
				   "4096", (unsigned long long)m->opened.size);
		len = FL__PG_OPENED_LEN;
		break;
	case FL__PG_READ:
	case FL__PG_WRITTEN:
	case FL__PG_WRITE:
	case FL__PG_DATA:
		r = check_run(fl__pg_type_name(m->type, tn), m->run.offset, m->run.len, msg, cap);
		if (r < 0)
			return -EINVAL;
		len = FL__PG_RUN_FIXED;
		if (m->type == FL__PG_WRITE) {
			if (!m->run.data)
				return say(-EINVAL, msg, cap, "WRITE without data");
			len += m->run.len;
		} else if (m->type == FL__PG_DATA) {
			uint32_t pages = m->run.len / FL__PG_PAGE;
			uint32_t words = fl__pg_hole_words(m->run.len);

			if (!m->run.holes)
				return say(-EINVAL, msg, cap, "DATA without a hole bitmap");
			for (uint32_t i = pages; i < words * 64; i++)
				if (fl__pg_hole(m->run.holes, i))
					return say(-EINVAL, msg, cap, "DATA: hole bit %u past the "
						   "run's %u pages", i, pages);
			if (m->run.data_len !=
			    (pages - popcount_bits(m->run.holes, pages)) * FL__PG_PAGE)
				return say(-EINVAL, msg, cap, "DATA: %u data bytes for %u pages "
					   "that are not holes", m->run.data_len,
					   pages - popcount_bits(m->run.holes, pages));
			if (m->run.data_len && !m->run.data)
				return say(-EINVAL, msg, cap, "DATA without data");
			len += words * 8 + m->run.data_len;
		}
		break;
	case FL__PG_ERROR:
		if (m->error.msg_len > FL__PG_MAX_MSG ||
		    (m->error.msg_len && (!m->error.msg ||
					  !printable(m->error.msg, m->error.msg_len))))
			return say(-EINVAL, msg, cap, "ERROR: message of %u bytes is too long or "
				   "not printable", m->error.msg_len);
		len = FL__PG_ERROR_FIXED + m->error.msg_len;
		break;
	default:
		return -EINVAL;
	}
	*ret_len = len;
	return 0;
}

/* ------------------------------------------------------------------ encoding */

int fl__pg_encode(const struct fl__pg_msg *m, void *buf, size_t cap, char *msg, size_t msg_cap)
{
	uint8_t *h = buf, *p;
	uint32_t payload = 0, meta, crc;
	int r;

	r = check_msg(m, &payload, msg, msg_cap);
	if (r < 0)
		return r;
	/* What goes into @buf: all but the page bytes. */
	if (m->type == FL__PG_WRITE)
		meta = FL__PG_RUN_FIXED;
	else if (m->type == FL__PG_DATA)
		meta = FL__PG_RUN_FIXED + fl__pg_hole_words(m->run.len) * 8;
	else
		meta = payload;
	if (cap < FL__PG_HDR_LEN + (size_t)meta)
		return -ENOSPC;
	p = h + FL__PG_HDR_LEN;
	memset(h, 0, FL__PG_HDR_LEN + meta);
	switch (m->type) {
	case FL__PG_OPEN:
		fl__put_le16(p, m->open.name_len);
		fl__put_le32(p + 4, m->open.flags);
		memcpy(p + 8, m->open.name, m->open.name_len);
		break;
	case FL__PG_OPENED:
		fl__put_le64(p, m->opened.size);
		fl__put_le32(p + 8, m->opened.flags);
		p[12] = m->opened.page_shift;
		break;
	case FL__PG_READ:
	case FL__PG_WRITTEN:
	case FL__PG_WRITE:
		fl__put_le64(p, m->run.offset);
		fl__put_le32(p + 8, m->run.len);
		break;
	case FL__PG_DATA:
		fl__put_le64(p, m->run.offset);
		fl__put_le32(p + 8, m->run.len);
		fl__put_le32(p + 12, m->run.data_len / FL__PG_PAGE);
		memcpy(p + 16, m->run.holes, (m->run.len / FL__PG_PAGE + 7) / 8);
		break;
	case FL__PG_ERROR:
		fl__put_le32(p, m->error.code);
		fl__put_le32(p + 4, m->error.msg_len);
		if (m->error.msg_len)
			memcpy(p + 8, m->error.msg, m->error.msg_len);
		break;
	}
	crc = fl__crc32c(0, p, meta);
	if (m->type == FL__PG_WRITE)
		crc = fl__crc32c(crc, m->run.data, m->run.len);
	else if (m->type == FL__PG_DATA && m->run.data_len)
		crc = fl__crc32c(crc, m->run.data, m->run.data_len);
	memcpy(h, magic, 4);
	h[4] = FL__PG_VERSION;
	h[5] = m->type;
	fl__put_le16(h + 6, m->flags);
	fl__put_le16(h + 8, FL__PG_HDR_LEN);
	fl__put_le32(h + 12, payload);
	fl__put_le64(h + 16, m->seq);
	fl__put_le32(h + 24, crc);
	fl__put_le32(h + 28, fl__crc32c(0, h, 28));
	return (int)(FL__PG_HDR_LEN + meta);
}

/* ------------------------------------------------------------------ decoding */

static void escape(char *out, size_t cap, const uint8_t *p, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, p[i] >= 0x20 && p[i] < 0x7f &&
				      p[i] != '"' && p[i] != '\\' ? "%c" : "\\x%02x", p[i]);
	out[o < cap ? o : cap - 1] = '\0';
}

int fl__pg_parse_header(const uint8_t *h, size_t n, bool no_crc, struct fl__pg_hdr *ret,
			char *msg, size_t cap)
{
	unsigned int hdr_len, type, flags;
	uint32_t crc, payload;
	char tn[16];
	int r;

	if (n < FL__PG_HDR_LEN)
		return say(-EINVAL, msg, cap, "header of %zu bytes", n);
	if (memcmp(h, magic, 4)) {
		char got[40];

		escape(got, sizeof(got), h, 4);
		return say(-EPROTO, msg, cap, "not a faultline wire stream: it starts with "
			   "\"%s\", not \"\\x89FLW\"", got);
	}
	if (h[4] != FL__PG_VERSION)
		return say(-EPROTONOSUPPORT, msg, cap, "the peer sends wire version %u; the page "
			   "server speaks %u", h[4], FL__PG_VERSION);
	hdr_len = fl__le16(h + 8);
	if (hdr_len < FL__PG_HDR_LEN || hdr_len > FL__PG_HDR_MAX || hdr_len % 8)
		return say(-EPROTO, msg, cap, "header length %u is not a multiple of 8 in 32..256",
			   hdr_len);
	if (n < hdr_len)
		return (int)(hdr_len - n);
	crc = fl__crc32c(0, h, 28);
	crc = fl__crc32c(crc, h + FL__PG_HDR_LEN, hdr_len - FL__PG_HDR_LEN);
	if (crc != fl__le32(h + 28) && !no_crc)
		return say(-EBADMSG, msg, cap, "header checksum mismatch: CRC32C 0x%08x, header "
			   "says 0x%08x", crc, fl__le32(h + 28));
	type = h[5];
	flags = fl__le16(h + 6);
	if (type < FL__PG_TYPE_MIN || type > FL__PG_TYPE_MAX)
		return say(-EPROTO, msg, cap, "%s is not a page-server message",
			   fl__pg_type_name(type, tn));
	if (flags & ~allowed_flags(type))
		return say(-EPROTO, msg, cap, "%s: unknown header flags 0x%x",
			   fl__pg_type_name(type, tn), flags);
	if (fl__le16(h + 10))
		return say(-EPROTO, msg, cap, "reserved header bytes 10-11 are not zero");
	payload = fl__le32(h + 12);
	r = check_payload_len(type, payload, msg, cap);
	if (r < 0)
		return r;
	*ret = (struct fl__pg_hdr){
		.type = (uint8_t)type,
		.flags = (uint16_t)flags,
		.hdr_len = (uint16_t)hdr_len,
		.payload_len = payload,
		.seq = fl__le64(h + 16),
		.payload_crc = fl__le32(h + 24),
	};
	return 0;
}

static int reserved_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return -1;
	return 0;
}

int fl__pg_parse_payload(const struct fl__pg_hdr *h, const uint8_t *p, bool no_crc,
			 struct fl__pg_msg *m, char *msg, size_t cap)
{
	uint32_t len = h->payload_len, crc;
	char tn[16];
	const char *t = fl__pg_type_name(h->type, tn);
	int r;

	/* The header was checked by fl__pg_parse_header(); a caller's own header is checked again. */
	r = check_payload_len(h->type, len, msg, cap);
	if (r < 0)
		return r;
	crc = fl__crc32c(0, p, len);
	if (crc != h->payload_crc && !no_crc)
		return say(-EBADMSG, msg, cap, "%s payload checksum mismatch: CRC32C 0x%08x, "
			   "header says 0x%08x", t, crc, h->payload_crc);
	*m = (struct fl__pg_msg){ .type = h->type, .flags = h->flags, .seq = h->seq };
	switch (h->type) {
	case FL__PG_OPEN:
		m->open.name_len = fl__le16(p);
		m->open.flags = fl__le32(p + 4);
		m->open.name = (const char *)p + 8;
		if (reserved_zero(p + 2, 2))
			return say(-EPROTO, msg, cap, "OPEN: reserved bytes 2-3 are not zero");
		if (m->open.flags & ~(uint32_t)FL__PG_OPEN_WRITE)
			return say(-EPROTO, msg, cap, "OPEN: unknown flags 0x%x", m->open.flags);
		if ((uint32_t)FL__PG_OPEN_FIXED + m->open.name_len != len)
			return say(-EPROTO, msg, cap, "OPEN: a name of %u bytes in a payload of %u",
				   m->open.name_len, len);
		return check_name(m->open.name, m->open.name_len, msg, cap);
	case FL__PG_OPENED:
		m->opened.size = fl__le64(p);
		m->opened.flags = fl__le32(p + 8);
		m->opened.page_shift = p[12];
		if (reserved_zero(p + 13, 3))
			return say(-EPROTO, msg, cap, "OPENED: reserved bytes 13-15 are not zero");
		if (m->opened.flags & ~(uint32_t)(FL__PG_OBJ_READONLY | FL__PG_OBJ_SNAPSHOT))
			return say(-EPROTO, msg, cap, "OPENED: unknown flags 0x%x", m->opened.flags);
		if (m->opened.page_shift < 12 || m->opened.page_shift > 21)
			return say(-EPROTO, msg, cap, "OPENED: page shift %u not in 12..21",
				   m->opened.page_shift);
		if (m->opened.size % FL__PG_PAGE)
			return say(-EPROTO, msg, cap, "OPENED: size %llu is not a multiple of 4096",
				   (unsigned long long)m->opened.size);
		return 0;
	case FL__PG_READ:
	case FL__PG_WRITTEN:
	case FL__PG_WRITE:
	case FL__PG_DATA:
		m->run.offset = fl__le64(p);
		m->run.len = fl__le32(p + 8);
		r = check_run(t, m->run.offset, m->run.len, msg, cap);
		if (r < 0)
			return r;
		if (h->type != FL__PG_DATA) {
			if (reserved_zero(p + 12, 4))
				return say(-EPROTO, msg, cap, "%s: reserved bytes 12-15 are not "
					   "zero", t);
			if (h->type == FL__PG_WRITE) {
				if (len != FL__PG_RUN_FIXED + m->run.len)
					return say(-EPROTO, msg, cap, "WRITE: %u bytes of pages in "
						   "a payload of %u", m->run.len, len);
				m->run.data = p + FL__PG_RUN_FIXED;
				m->run.data_len = m->run.len;
			}
			return 0;
		} else {
			uint32_t pages = m->run.len / FL__PG_PAGE;
			uint32_t words = fl__pg_hole_words(m->run.len);
			uint32_t n_data = fl__le32(p + 12), holes;
			uint64_t want;

			if (len < FL__PG_RUN_FIXED + (uint64_t)words * 8)
				return say(-EPROTO, msg, cap, "DATA: payload of %u bytes cannot hold "
					   "the bitmap of %u pages", len, pages);
			m->run.holes = p + FL__PG_RUN_FIXED;
			for (uint32_t i = pages; i < words * 64; i++)
				if (fl__pg_hole(m->run.holes, i))
					return say(-EPROTO, msg, cap, "DATA: hole bit %u set past "
						   "the run's %u pages", i, pages);
			holes = popcount_bits(m->run.holes, pages);
			if (n_data != pages - holes)
				return say(-EPROTO, msg, cap, "DATA: %u data pages, but %u of %u "
					   "pages are not holes", n_data, pages - holes, pages);
			want = FL__PG_RUN_FIXED + (uint64_t)words * 8 + (uint64_t)n_data * FL__PG_PAGE;
			if (want != len)
				return say(-EPROTO, msg, cap, "DATA: payload of %u bytes, its fields "
					   "say %llu", len, (unsigned long long)want);
			m->run.data = p + FL__PG_RUN_FIXED + words * 8;
			m->run.data_len = n_data * FL__PG_PAGE;
			return 0;
		}
	case FL__PG_ERROR:
		m->error.code = fl__le32(p);
		m->error.msg_len = fl__le32(p + 4);
		m->error.msg = (const char *)p + 8;
		if ((uint64_t)FL__PG_ERROR_FIXED + m->error.msg_len != len)
			return say(-EPROTO, msg, cap, "ERROR: a message of %u bytes in a payload "
				   "of %u", m->error.msg_len, len);
		if (!printable(m->error.msg, m->error.msg_len))
			return say(-EPROTO, msg, cap, "ERROR: the message is not printable ASCII");
		return 0;
	}
	return say(-EPROTO, msg, cap, "unknown message type %u", h->type);
}

/* ------------------------------------------------------------------ errors */

static const struct {
	uint32_t code;
	int err;
} codes[] = {
	{ FL__PG_ERR_PROTO, EPROTO },
	{ FL__PG_ERR_VERSION, EPROTONOSUPPORT },
	{ FL__PG_ERR_CHECKSUM, EBADMSG },
	{ FL__PG_ERR_LOCAL, ENOMEM },
	{ FL__PG_ERR_NOENT, ENOENT },
	{ FL__PG_ERR_NAME, EACCES },
	{ FL__PG_ERR_RANGE, ERANGE },
	{ FL__PG_ERR_ROFS, EROFS },
	{ FL__PG_ERR_IO, EIO },
	{ FL__PG_ERR_SHUTDOWN, ESHUTDOWN },
	{ FL__PG_ERR_IDLE, ETIMEDOUT },
};

int fl__pg_error_to_errno(uint32_t code)
{
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (codes[i].code == code)
			return codes[i].err;
	return EIO;
}

uint32_t fl__pg_error_from_errno(int err)
{
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (codes[i].err == err)
			return codes[i].code;
	if (err == ENOTDIR || err == ELOOP || err == EXDEV)
		return FL__PG_ERR_NAME;
	return FL__PG_ERR_IO;
}
