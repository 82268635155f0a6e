/* SPDX-License-Identifier: MIT */
/* The wire protocol's frames: layout, limits, encoders, incremental decoder (never installed). */
#ifndef FL_NET_WIRE_H
#define FL_NET_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/*
 * doc/wire-protocol.md is the specification; this header is its codec. Every
 * integer on the wire is little-endian. A frame is a 32-byte header followed
 * by a payload whose layout depends on the type:
 *
 *   0  u32 magic       bytes 89 46 4C 57 ("\x89FLW")
 *   4  u8  version     wire version of this frame (HELLO and ERROR: always 1)
 *   5  u8  type        enum fl__wire_type
 *   6  u16 flags       FL__WIRE_F_*, per type; unknown bits are an error
 *   8  u16 hdr_len     32; a receiver accepts 32..256 in steps of 8 and skips the rest
 *  10  u16 reserved    0
 *  12  u32 payload_len bytes after the header
 *  16  u64 seq         sequence number; the request id for REQUEST and urgent PAGES
 *  24  u32 meta_crc    CRC32C of the payload; for PAGES only of its descriptor and page table
 *  28  u32 hdr_crc     CRC32C of header bytes [0, 28) then [32, hdr_len)
 *
 * Thread safety, for everything here: any thread, one decoder per thread at a time.
 */

#define FL__WIRE_MAGIC 0x574c4689u	/* "\x89FLW" read as a little-endian u32 */
#define FL__WIRE_VERSION_MIN 1		/* the wire versions this code speaks */
#define FL__WIRE_VERSION_MAX 1
#define FL__WIRE_HDR_LEN 32		/* the header this side writes */
#define FL__WIRE_HDR_MAX 256		/* the longest header a receiver accepts */

/* Limits; a frame over any of them is malformed. */
#define FL__WIRE_PAGE_SHIFT_MIN 12	/* 4 KiB */
#define FL__WIRE_PAGE_SHIFT_MAX 21	/* 2 MiB: one huge page fits one frame */
#define FL__WIRE_MAX_PAGES 512u		/* pages (data or zero) per PAGES frame */
#define FL__WIRE_MAX_DATA (2u << 20)	/* page bytes per PAGES frame */
#define FL__WIRE_MAX_REGIONS 1024u	/* regions in a HELLO */
#define FL__WIRE_MAX_AGENT 64u		/* bytes of the HELLO's agent string */
#define FL__WIRE_MAX_BITMAP_BITS (1u << 18)	/* bits per RECEIVED_BITMAP chunk (32 KiB) */
#define FL__WIRE_MAX_BLOB_CHUNK (32u << 10)	/* bytes per STATE_BLOB frame */
#define FL__WIRE_MAX_BLOB (16u << 20)	/* bytes of the whole state blob */
#define FL__WIRE_MAX_ERROR_MSG 1024u	/* bytes of an ERROR message */
#define FL__WIRE_NONCE_LEN 32
#define FL__WIRE_SESSION_LEN 16

/* Fixed payload parts, in bytes. */
#define FL__WIRE_HELLO_FIXED 72
#define FL__WIRE_REGION_LEN 24
#define FL__WIRE_PAGES_FIXED 16
#define FL__WIRE_PAGE_ENTRY 8
#define FL__WIRE_REQUEST_LEN 16
#define FL__WIRE_BITMAP_FIXED 16
#define FL__WIRE_BLOB_FIXED 16
#define FL__WIRE_COMPLETE_LEN 8
#define FL__WIRE_ERROR_FIXED 8

/* The largest payload that is not page bytes, and the largest PAGES header + descriptor + table. */
#define FL__WIRE_MAX_META (FL__WIRE_BITMAP_FIXED + FL__WIRE_MAX_BITMAP_BITS / 8)
#define FL__WIRE_PAGES_META_MAX \
	(FL__WIRE_HDR_LEN + FL__WIRE_PAGES_FIXED + FL__WIRE_MAX_PAGES * FL__WIRE_PAGE_ENTRY)
/* The largest frame a decoder accepts (its header extension included). */
#define FL__WIRE_MAX_FRAME \
	(FL__WIRE_HDR_MAX + FL__WIRE_PAGES_FIXED + FL__WIRE_MAX_PAGES * FL__WIRE_PAGE_ENTRY + \
	 FL__WIRE_MAX_DATA)

enum fl__wire_type {
	FL__WIRE_HELLO = 1,		/* both ways, first: versions, role, session, regions */
	/* 2 was AUTH (an HMAC of the HELLOs) until 0.3: TLS authenticates now; refused. */
	FL__WIRE_PAGES = 3,		/* a run of pages: data with a CRC32C each, or zero */
	FL__WIRE_REQUEST = 4,		/* destination to source: send these pages now */
	FL__WIRE_RECEIVED_BITMAP = 5,	/* destination to source on resume: pages it holds */
	FL__WIRE_STATE_BLOB = 6,	/* a chunk of the application's small state */
	FL__WIRE_COMPLETE = 7,		/* the sender has sent everything */
	FL__WIRE_ERROR = 8,		/* code and message; the sender closes next */
	FL__WIRE_PING = 9,
	FL__WIRE_PONG = 10,		/* answers PING with its seq */
	FL__WIRE_TYPE_MAX = FL__WIRE_PONG,
};

/* The retired AUTH type: a peer older than 0.3 sends it after its HELLO. */
#define FL__WIRE_RETIRED_AUTH 2

/* Header flags. */
enum {
	FL__WIRE_F_URGENT = 1u << 0,	/* PAGES: answers the REQUEST whose id is seq */
	FL__WIRE_F_LAST = 1u << 1,	/* RECEIVED_BITMAP: the last chunk of the whole bitmap */
};

/* Per-page flags in a PAGES table: exactly one of DATA and ZERO. */
enum {
	FL__WIRE_PAGE_DATA = 1u << 0,	/* page bytes follow, with their CRC32C in the table */
	FL__WIRE_PAGE_ZERO = 1u << 1,	/* an all-zero page: no bytes, CRC field 0 */
};

enum fl__wire_role {
	FL__WIRE_ROLE_SOURCE = 1,
	FL__WIRE_ROLE_DESTINATION = 2,
};

/* HELLO flags. */
enum {
	FL__WIRE_HELLO_TLS = 1u << 0,	 /* this side runs the connection inside TLS */
	FL__WIRE_HELLO_RESUME = 1u << 1, /* resume session_id (the destination echoes it) */
	FL__WIRE_HELLO_URGENT = 1u << 2, /* this connection is session_id's urgent channel */
};

/* HELLO features: each side offers its bits, both use the AND; unknown bits are ignored. */
enum {
	FL__WIRE_FEAT_URGENT_CHANNEL = 1ull << 0,	/* a second connection for REQUESTs */
	FL__WIRE_FEAT_RESUME = 1ull << 1,		/* RECEIVED_BITMAP and HELLO_RESUME */
	FL__WIRE_FEAT_PRECOPY = 1ull << 2,		/* the source's RECEIVED_BITMAP at the
							   switch-over: pre-copied pages to keep */
};

/* ERROR codes (our own numbers: the peer may not share our errno values). */
enum fl__wire_error_code {
	FL__WIRE_ERR_PROTO = 1,		/* malformed frame or wrong frame for the state */
	FL__WIRE_ERR_VERSION = 2,	/* no common version */
	FL__WIRE_ERR_AUTH = 3,		/* authentication failed */
	FL__WIRE_ERR_CHECKSUM = 4,	/* a CRC32C did not match */
	FL__WIRE_ERR_SESSION = 5,	/* unknown session to resume */
	FL__WIRE_ERR_REGIONS = 6,	/* region table refused */
	FL__WIRE_ERR_LOCAL = 7,		/* the sender failed locally (memory, I/O) */
	FL__WIRE_ERR_CANCELLED = 8,	/* an operator cancelled the migration */
};

/* ------------------------------------------------------------- frame views */

struct fl__wire_region {
	uint32_t id;
	uint8_t page_shift;		/* this region's page size, >= the HELLO's */
	uint64_t start;			/* the source's address, page aligned */
	uint64_t length;		/* bytes, a non-zero multiple of the page size */
};

struct fl__wire_hello {
	uint8_t role;			/* enum fl__wire_role */
	uint8_t version_min, version_max;
	uint8_t page_shift;		/* the sender's base page size */
	uint32_t flags;			/* FL__WIRE_HELLO_* */
	uint64_t features;		/* FL__WIRE_FEAT_* offered */
	uint8_t session_id[FL__WIRE_SESSION_LEN];
	uint8_t nonce[FL__WIRE_NONCE_LEN];	/* fresh random bytes for each connection */
	uint32_t n_regions;
	const struct fl__wire_region *regions;
	uint32_t agent_len;		/* printable ASCII, e.g. "faultline 0.2.0" */
	const char *agent;		/* decoded: NUL-terminated too */
};

struct fl__wire_page {
	uint16_t flags;			/* FL__WIRE_PAGE_DATA or FL__WIRE_PAGE_ZERO */
	uint32_t crc;			/* decoded: the verified CRC32C; encoding: ignored */
	const void *data;		/* DATA: 1 << page_shift bytes; ZERO: NULL */
};

struct fl__wire_pages {
	uint32_t region_id;
	uint8_t page_shift;
	uint32_t count;			/* 1..FL__WIRE_MAX_PAGES */
	uint64_t first;			/* page index (units of 1 << page_shift) */
	const struct fl__wire_page *pages;	/* [count] */
};

struct fl__wire_request {
	uint32_t region_id;
	uint32_t count;			/* 1..FL__WIRE_MAX_PAGES */
	uint64_t index;			/* first page wanted */
};

/* Bit i says page (offset + i) of the region is held; bits are stored LSB first. */
struct fl__wire_bitmap {
	uint32_t region_id;
	uint32_t nbits;			/* 1..FL__WIRE_MAX_BITMAP_BITS */
	uint64_t offset;		/* a multiple of 64 */
	const uint8_t *bits;		/* (nbits + 63) / 64 * 8 bytes; bits past nbits are 0 */
};

struct fl__wire_blob {
	uint32_t total;			/* bytes of the whole blob, <= FL__WIRE_MAX_BLOB */
	uint32_t offset;		/* where this chunk goes */
	uint32_t len;			/* <= FL__WIRE_MAX_BLOB_CHUNK; offset + len <= total */
	const uint8_t *data;
};

struct fl__wire_complete {
	uint64_t pages;			/* pages the sender sent on this connection */
};

struct fl__wire_error {
	uint32_t code;			/* enum fl__wire_error_code */
	uint32_t msg_len;
	const char *msg;		/* printable ASCII; decoded: NUL-terminated too */
};

/*
 * One frame. Encoders read it; the decoder fills it, with pointers into its
 * own buffers that stay valid until its next call. version 0 means "the
 * default" when encoding: 1 for HELLO and ERROR, else FL__WIRE_VERSION_MAX
 * (set it to the negotiated version once there is one).
 */
struct fl__wire_frame {
	uint8_t version;
	uint8_t type;			/* enum fl__wire_type */
	uint16_t flags;			/* FL__WIRE_F_* */
	uint64_t seq;
	union {
		struct fl__wire_hello hello;
		struct fl__wire_pages pages;
		struct fl__wire_request request;
		struct fl__wire_bitmap bitmap;
		struct fl__wire_blob blob;
		struct fl__wire_complete complete;
		struct fl__wire_error error;
	};
};

/* "HELLO", "PAGES", ... or "type 42". @buf holds at least 16 bytes. */
const char *fl__wire_type_name(unsigned int type, char *buf);

/* --------------------------------------------------------------- encoding */

/*
 * Encoders check @f against every rule the decoder applies (-EINVAL if it
 * breaks one: we never send what a peer must refuse) and compute the CRCs.
 * PAGES data must not change from the encoder's call until the bytes are
 * sent: the CRCs are taken at the call.
 */

/* Bytes @f encodes to, or -EINVAL. */
int fl__wire_frame_size(const struct fl__wire_frame *f);

/* Encode @f (any type; PAGES data is copied) into @buf: bytes written, -EINVAL or -ENOSPC. */
int fl__wire_encode(const struct fl__wire_frame *f, void *buf, size_t cap);

/*
 * Encode a PAGES frame for writev without copying page bytes: the header,
 * descriptor and table go to @meta (FL__WIRE_PAGES_META_MAX bytes always
 * suffice), @iov[0] points at them, and the following entries point at the
 * DATA pages' own memory (adjacent pages share one entry). Returns the frame's
 * total bytes and sets *@ret_iovcnt; -ENOSPC if @meta_cap or @iov_cap is too
 * small (1 + the number of DATA pages always suffices), -EINVAL.
 */
int fl__wire_encode_pages_iov(const struct fl__wire_frame *f, void *meta, size_t meta_cap,
			      struct iovec *iov, size_t iov_cap, size_t *ret_iovcnt);

/* Whether the @len bytes at @p are all zero (the sender's test for FL__WIRE_PAGE_ZERO). */
bool fl__wire_is_zero(const void *p, size_t len);

/* -------------------------------------------------------------- decoding */

enum {
	/*
	 * Fuzzing only: accept wrong CRCs, so mutated inputs reach the parsers
	 * behind them. Never set this on a real connection.
	 */
	FL__WIRE_DEC_FUZZ_NO_CRC = 1u << 0,
};

/*
 * An incremental decoder for one byte stream. Feed bytes as they arrive, in
 * any pieces: it yields each whole, verified frame. The first malformed
 * byte makes it fail for good (every later call returns the same error, and
 * fl__wire_dec_error() says what was wrong): close that connection.
 * Errors: -EPROTO malformed, -EBADMSG a checksum mismatch, -EPROTONOSUPPORT
 * a wire version we do not speak, -ENOMEM.
 * Fields are private; the struct is public only so it can be embedded.
 */
struct fl__wire_dec {
	uint32_t dflags;		/* FL__WIRE_DEC_* */
	uint8_t version;		/* negotiated, or 0 */
	int err;			/* sticky error, 0 if none */
	int phase;
	uint8_t *dst;			/* where the current phase's bytes go */
	size_t have, want;		/* bytes of the current phase received, needed */
	uint64_t frame_len;		/* header + payload, once the header is known */
	uint64_t frame_have;		/* bytes of this frame received */
	uint64_t frames;		/* frames completed before this one */
	uint64_t offset;		/* stream offset of this frame */
	uint32_t hdr_len, payload_len, meta_len;
	uint32_t data_len, data_checked;	/* page bytes expected, verified so far */
	uint32_t check_entry;		/* table entry of the next page to verify */
	uint8_t hdr[FL__WIRE_HDR_MAX];
	uint8_t *meta;			/* FL__WIRE_MAX_META + 1 */
	uint8_t *data;			/* FL__WIRE_MAX_DATA, 2 MiB aligned, mapped lazily */
	struct fl__wire_page *pages;	/* [FL__WIRE_MAX_PAGES] */
	struct fl__wire_region *regions;	/* [FL__WIRE_MAX_REGIONS] */
	struct fl__wire_frame frame;
	char msg[256];
};

/* About 40 KiB now, and 2 MiB of address space at the first PAGES frame with data. */
int fl__wire_dec_init(struct fl__wire_dec *d, uint32_t flags);
/*
 * Once the handshake agreed on @version, every later frame but ERROR must
 * carry it (-EPROTO otherwise); 0 (the initial state) accepts any we speak.
 */
void fl__wire_dec_set_version(struct fl__wire_dec *d, uint8_t version);
/* Frees the buffers; accepts a decoder whose init failed, or that was zeroed. */
void fl__wire_dec_fini(struct fl__wire_dec *d);
/*
 * Move the decoder @src to @dst, which takes its buffers (a struct copy
 * would leave a pointer into @src's header bytes); @src is left empty
 * (fini does nothing). For a connection handed from one owner to another.
 */
void fl__wire_dec_move(struct fl__wire_dec *dst, struct fl__wire_dec *src);

/*
 * Bytes still missing from the frame being decoded: the rest of its header
 * until the header is in, then the rest of the whole frame. Once a frame is
 * complete, what the next frame's header needs. 0 only after an error.
 */
size_t fl__wire_dec_need(const struct fl__wire_dec *d);

/*
 * Zero-copy input: where the next bytes go, and how many fit there (1 to
 * fl__wire_dec_need()); recv() into it, then fl__wire_dec_commit() what
 * arrived. Page data lands page aligned. Returns NULL after an error.
 * Releases the previous frame.
 */
void *fl__wire_dec_space(struct fl__wire_dec *d, size_t *ret_len);
/* @n bytes written at fl__wire_dec_space(): 1 a frame is complete, 0 more needed, or -errno. */
int fl__wire_dec_commit(struct fl__wire_dec *d, size_t n);

/*
 * Copying input: take bytes from @p until a frame completes or @n runs out;
 * *@ret_used says how many were taken (also on error). Returns 1 when a frame
 * is complete (feed the rest of @p after using it), 0 when all of @p was
 * taken and more is needed, or -errno. Releases the previous frame.
 */
int fl__wire_dec_feed(struct fl__wire_dec *d, const void *p, size_t n, size_t *ret_used);

/* Whether no byte of a next frame has arrived (a clean place for the stream to end). */
bool fl__wire_dec_at_boundary(const struct fl__wire_dec *d);

/* The complete frame, valid until the next space/commit/feed call; NULL if none. */
const struct fl__wire_frame *fl__wire_dec_frame(const struct fl__wire_dec *d);

/* What went wrong, for the log and for an ERROR frame: "" if nothing did. */
const char *fl__wire_dec_error(const struct fl__wire_dec *d);

/*
 * Whether two frames say the same thing, field by field and byte by byte
 * (page CRCs aside: they follow from the bytes). For tests and fuzzing.
 */
bool fl__wire_frame_equal(const struct fl__wire_frame *a, const struct fl__wire_frame *b);

/* The ERROR code that describes decoder error @err (-EPROTO, -EBADMSG, ...). */
uint32_t fl__wire_error_code_from_errno(int err);
/* The errno value that describes a received ERROR code (positive). */
int fl__wire_error_code_to_errno(uint32_t code);

/* -------------------------------------------------------------- handshake */

/*
 * The handshake (doc/wire-protocol.md, "Handshake"): inside the transport's
 * TLS session (src/net/transport.h), which has already authenticated the
 * peer, each side sends its HELLO and checks the peer's with
 * fl__wire_negotiate().
 */

/* What both sides agreed on. */
struct fl__wire_agreement {
	uint8_t version;		/* use for every frame after the HELLOs */
	uint64_t features;		/* offered by both */
};

/*
 * Check the peer's HELLO against ours: complementary roles, a common version
 * (-EPROTONOSUPPORT), the same base page size (-EPROTO), both or neither
 * inside TLS (-EACCES), the same RESUME and URGENT flags and session when
 * either is set (-EPROTO). @msg (may be NULL) gets a sentence.
 */
int fl__wire_negotiate(const struct fl__wire_hello *mine, const struct fl__wire_hello *peer,
		       char *msg, size_t msg_cap, struct fl__wire_agreement *ret);

#endif /* FL_NET_WIRE_H */
