/* SPDX-License-Identifier: MIT */
/* The page server's messages: layout, limits, encoder and checked decoder (never installed). */
#ifndef FL_NET_PGWIRE_H
#define FL_NET_PGWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * doc/wire-protocol.md, section 13, is the specification. A page-server
 * message is a wire-protocol frame: the same 32-byte header (magic, version
 * 1, type, flags, hdr_len, payload_len, seq, meta_crc, hdr_crc), with types
 * of their own (32 and up) so that neither a migration peer nor a page
 * server can mistake the other's frames for its own. meta_crc covers the
 * whole payload, page bytes included.
 *
 * Decoding is in two steps, both on bytes the caller received: the header
 * (fl__pg_parse_header, which bounds the payload's length before a byte of it
 * is read), then the payload (fl__pg_parse_payload). Every length, offset and
 * count from the wire is checked against the limits below and against the
 * bytes that actually arrived before it is used.
 *
 * Thread safety: any thread; nothing here keeps state.
 */

#define FL__PG_HDR_LEN 32		/* the header this side writes */
#define FL__PG_HDR_MAX 256		/* the longest header a receiver accepts */
#define FL__PG_VERSION 1
#define FL__PG_PAGE 4096u		/* the unit of offsets and lengths */
#define FL__PG_MAX_RUN (2u << 20)	/* page bytes in one READ, DATA or WRITE: 512 pages */
#define FL__PG_MAX_NAME 255u		/* bytes of an object's name */
#define FL__PG_MAX_MSG 1024u		/* bytes of an ERROR message */

/* Fixed payload parts, in bytes. */
#define FL__PG_OPEN_FIXED 8
#define FL__PG_OPENED_LEN 16
#define FL__PG_RUN_FIXED 16		/* READ, DATA, WRITE, WRITTEN: offset, len, one u32 */
#define FL__PG_ERROR_FIXED 8
#define FL__PG_HOLE_WORDS (FL__PG_MAX_RUN / FL__PG_PAGE / 64)	/* u64 words of a full bitmap */

/* The largest payload of any message, and the largest message. */
#define FL__PG_MAX_PAYLOAD (FL__PG_RUN_FIXED + FL__PG_HOLE_WORDS * 8 + FL__PG_MAX_RUN)
#define FL__PG_MAX_FRAME (FL__PG_HDR_MAX + FL__PG_MAX_PAYLOAD)
/* What precedes page bytes in a DATA or WRITE message this side encodes. */
#define FL__PG_META_MAX (FL__PG_HDR_LEN + FL__PG_RUN_FIXED + FL__PG_HOLE_WORDS * 8 + \
			 FL__PG_ERROR_FIXED + FL__PG_MAX_MSG + FL__PG_MAX_NAME)

enum fl__pg_type {
	FL__PG_OPEN = 32,	/* client: open an object by name (first message) */
	FL__PG_OPENED = 33,	/* server: the object's size and page size */
	FL__PG_READ = 34,	/* client: send the pages [offset, offset + len) */
	FL__PG_DATA = 35,	/* server: answers READ: a hole bitmap, then the other pages */
	FL__PG_WRITE = 36,	/* client: store these pages */
	FL__PG_WRITTEN = 37,	/* server: answers WRITE once the bytes are in the object */
	FL__PG_ERROR = 38,	/* server: a request failed (seq is its id), or the end */
	FL__PG_TYPE_MIN = FL__PG_OPEN,
	FL__PG_TYPE_MAX = FL__PG_ERROR,
};

/* Header flags. */
enum {
	FL__PG_F_CLOSE = 1u << 0,	/* ERROR: the sender closes the connection next */
};

/* OPEN flags. */
enum {
	FL__PG_OPEN_WRITE = 1u << 0,	/* the client will write: refuse a read-only object */
};

/* OPENED flags. */
enum {
	FL__PG_OBJ_READONLY = 1u << 0,	/* WRITE is refused (a snapshot, a read-only file) */
	FL__PG_OBJ_SNAPSHOT = 1u << 1,	/* served through the snapshot reader */
};

/* ERROR codes: the wire protocol's 1..8 and these. */
enum fl__pg_error_code {
	FL__PG_ERR_PROTO = 1,		/* malformed message, or wrong for the state: closes */
	FL__PG_ERR_VERSION = 2,		/* a wire version this side does not speak: closes */
	FL__PG_ERR_CHECKSUM = 4,	/* a CRC32C did not match: closes */
	FL__PG_ERR_LOCAL = 7,		/* the server failed locally (memory) */
	FL__PG_ERR_NOENT = 16,		/* no such object */
	FL__PG_ERR_NAME = 17,		/* the name is refused (outside the directory, ...) */
	FL__PG_ERR_RANGE = 18,		/* the run lies past the object's end */
	FL__PG_ERR_ROFS = 19,		/* a write to a read-only object */
	FL__PG_ERR_IO = 20,		/* the object could not be read or written */
	/* 21 unused: a client past the server's maximum is closed before TLS, told nothing. */
	FL__PG_ERR_SHUTDOWN = 22,	/* the server is stopping: closes */
	FL__PG_ERR_IDLE = 23,		/* nothing arrived within the idle timeout: closes */
};

/* One message. Pointers refer to the caller's buffers (decoded: the received payload). */
struct fl__pg_msg {
	uint8_t type;			/* enum fl__pg_type */
	uint16_t flags;			/* FL__PG_F_* */
	uint64_t seq;			/* the request id (OPEN: 0, anything the client likes) */
	union {
		struct {
			uint32_t flags;		/* FL__PG_OPEN_* */
			uint16_t name_len;	/* 1..FL__PG_MAX_NAME */
			const char *name;	/* printable ASCII, no '/' at the start */
		} open;
		struct {
			uint64_t size;		/* bytes, a multiple of FL__PG_PAGE */
			uint32_t flags;		/* FL__PG_OBJ_* */
			uint8_t page_shift;	/* the object's page size, log2: 12..21 */
		} opened;
		/*
		 * READ, DATA, WRITE, WRITTEN: @offset and @len are multiples of
		 * FL__PG_PAGE, 0 < len <= FL__PG_MAX_RUN, offset + len does not wrap.
		 * DATA: @holes has a bit per page (LSB first, len / 4096 bits, whole
		 * u64 words), set for a page of zeros that is not sent; @data holds the
		 * other pages in order (@data_len = their bytes). WRITE: @data holds
		 * all len bytes.
		 */
		struct {
			uint64_t offset;
			uint32_t len;
			const uint8_t *holes;	/* DATA: ceil(len / 4096 / 64) words */
			const uint8_t *data;
			uint32_t data_len;
		} run;
		struct {
			uint32_t code;		/* enum fl__pg_error_code */
			uint32_t msg_len;	/* <= FL__PG_MAX_MSG */
			const char *msg;	/* printable ASCII, not NUL-terminated */
		} error;
	};
};

/* "OPEN", "DATA", ... or "type 42". @buf holds at least 16 bytes. */
const char *fl__pg_type_name(unsigned int type, char *buf);

/* The u64 words of a hole bitmap for a run of @len bytes. */
static inline uint32_t fl__pg_hole_words(uint32_t len)
{
	return (len / FL__PG_PAGE + 63) / 64;
}

/*
 * Encode everything of @m but its page bytes (DATA and WRITE: @m->run.data,
 * sent after) into @buf: returns the bytes written, -EINVAL if @m breaks a
 * rule the decoder applies (we never send what a peer must refuse; @msg,
 * which may be NULL, says which), -ENOSPC if @cap is short
 * (FL__PG_META_MAX always suffices). The CRC covers the page bytes too: they
 * must not change until sent.
 */
int fl__pg_encode(const struct fl__pg_msg *m, void *buf, size_t cap, char *msg, size_t msg_cap);

/* A received header's facts, once fl__pg_parse_header() accepted it. */
struct fl__pg_hdr {
	uint8_t type;
	uint16_t flags;
	uint16_t hdr_len;		/* 32..256 */
	uint32_t payload_len;		/* within the type's bounds */
	uint64_t seq;
	uint32_t payload_crc;
};

/*
 * Check the first @n bytes of a header (@n >= 32; pass the whole header,
 * hdr_len bytes, once the first 32 said how long it is). Returns 0 and
 * fills @ret when all of it is in and good; a positive count of header bytes
 * still needed (hdr_len - @n); or -EPROTO (malformed: the magic, the
 * version, the type, flags, reserved bytes, a payload length out of the
 * type's bounds), -EPROTONOSUPPORT (another wire version), -EBADMSG (header
 * CRC), with @msg saying why. @no_crc skips the CRC (fuzzing only).
 */
int fl__pg_parse_header(const uint8_t *hdr, size_t n, bool no_crc, struct fl__pg_hdr *ret,
			char *msg, size_t msg_cap);

/*
 * Check and decode the payload (@h->payload_len bytes at @p) of the message
 * whose header @h is: the payload CRC, then every field. @ret's pointers
 * point into @p. Returns 0, -EPROTO or -EBADMSG with @msg saying why.
 */
int fl__pg_parse_payload(const struct fl__pg_hdr *h, const uint8_t *p, bool no_crc,
			 struct fl__pg_msg *ret, char *msg, size_t msg_cap);

/* The errno a received ERROR code stands for (positive), and the code for an errno. */
int fl__pg_error_to_errno(uint32_t code);
uint32_t fl__pg_error_from_errno(int err);

/* Whether the hole bit of page @i is set. */
static inline bool fl__pg_hole(const uint8_t *holes, uint32_t i)
{
	return holes[i / 8] >> (i % 8) & 1;
}

#endif /* FL_NET_PGWIRE_H */
