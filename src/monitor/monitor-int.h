/* SPDX-License-Identifier: MIT */
/* Internal declarations of the monitor layer: wire format, Firecracker JSON, socket helpers. */
#ifndef FL_MONITOR_INT_H
#define FL_MONITOR_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "faultline.h"
#include "util.h"

/*
 * Every function here that can fail returns 0 (or a count) or a negative
 * errno, and writes a one-line human message into @err (@errlen bytes,
 * always NUL-terminated; @err may be NULL). The message is what a monitor
 * logs and sends back in an ERROR. The classes:
 *   -EPROTO           not a message of this protocol, or framing that lies
 *                     (magic, type, lengths, checksum, reserved bits);
 *   -EPROTONOSUPPORT  a version this side does not speak;
 *   -E2BIG            a limit of monitor.h exceeded;
 *   -EINVAL           well-formed, but the content is invalid (regions
 *                     unaligned, overlapping, wrapping, bad page size, ...).
 */

/*
 * A store kind only a monitor produces: the Firecracker handshake names no
 * file, only offsets into the memory file the monitor was started with.
 */
#define FL__MON_STORE_MONITOR 0x100

/* One region, as both handshakes decode it and as the client tracks it. */
struct fl__mon_region {
	uint64_t addr;
	uint64_t len;
	uint64_t off;		/* store offset of addr */
	uint64_t seed;		/* PATTERN */
	uint32_t page_size;
	uint32_t store;		/* FL_MONITOR_STORE_*, or FL__MON_STORE_MONITOR */
	uint32_t mem;		/* FL_MEM_* */
	uint32_t path_len;	/* FILE: bytes of path, without the NUL */
	const char *path;	/* FILE: NUL-terminated; NULL otherwise. Not owned. */
};

/* A decoded handshake: a HELLO, or Firecracker's JSON. */
struct fl__mon_hello {
	bool firecracker;	/* came as Firecracker's JSON (no version, no session) */
	uint32_t version;
	uint32_t flags;		/* FL_MONITOR_HELLO_* */
	uint64_t features;	/* FL_FEAT_* the userfaultfd was opened with (0: unknown) */
	uint64_t session;	/* the client's id, the same on every re-attach */
	uint32_t pid;		/* what the client says it is; trust SO_PEERCRED instead */
	uint32_t attach_seq;	/* 0 on the first attach, then 1, 2, ... */
	uint64_t beacon;	/* FL_MONITOR_HELLO_CHILDREN: the beacon page's address */
	uint32_t n;
	struct fl__mon_region *r;	/* n entries, malloc'ed; paths point into the input */
};

void fl__mon_hello_free(struct fl__mon_hello *h);

/* A decoded reply to a HELLO. */
struct fl__mon_reply {
	uint32_t type;		/* FL_MONITOR_MSG_ACK or FL_MONITOR_MSG_ERROR */
	uint64_t session;	/* ACK */
	uint32_t pid;		/* ACK: the monitor's pid, informational */
	int err;		/* ERROR: a negative errno, -1 to -4095 */
	const char *msg;	/* ERROR: NUL-terminated, points into the input */
};

/* A decoded CLAIM: a fork()ed child asks for its userfaultfd. */
struct fl__mon_claim {
	uint64_t session;	/* the child's, from its beacon */
	uint64_t token;		/* the secret from its beacon */
	uint32_t pid;		/* informational: trust SO_PEERCRED */
};

struct fl__mon_event {
	uint32_t type;		/* FL_MONITOR_EV_* */
	uint64_t a, b, c;	/* REMAP: from, to, len. REMOVE/UNMAP: start, end, 0 */
};

/*
 * fl__mon_frame - look at the first bytes of a message (at least
 * FL_MONITOR_HDR_LEN, or fewer to learn that more are needed) and check
 * the header's magic, version and length fields. Returns 0 and the whole
 * message length in *ret_total (FL_MONITOR_HDR_LEN to FL_MONITOR_MAX_MSG),
 * -EAGAIN if @len is too short to tell, or -EPROTO/-EPROTONOSUPPORT/-E2BIG.
 */
int fl__mon_frame(const void *buf, size_t len, size_t *ret_total, char *err, size_t errlen);

/* The type of a message fl__mon_frame() accepted. */
uint32_t fl__mon_msg_type(const void *buf);

/*
 * Encoders: write the message into @buf if it fits in @cap, and return its
 * length either way (0 if the input cannot be encoded: too many regions or
 * events, or a message past FL_MONITOR_MAX_MSG). Encoding never checks
 * region semantics; fl__mon_check_regions() does. Whatever an encoder
 * writes from checked input, the matching decoder accepts.
 */
size_t fl__mon_encode_hello(const struct fl__mon_hello *h, void *buf, size_t cap);
size_t fl__mon_encode_ack(uint64_t session, uint32_t pid, void *buf, size_t cap);
/* @err: a negative errno; @msg: any text, cut at FL_MONITOR_MAX_ERRMSG bytes. */
size_t fl__mon_encode_error(int err, const char *msg, void *buf, size_t cap);
size_t fl__mon_encode_events(const struct fl__mon_event *ev, size_t n, void *buf, size_t cap);
size_t fl__mon_encode_bye(void *buf, size_t cap);
/* A GRANT is a HELLO's layout with another type: @h->session is the child's, pid the monitor's. */
size_t fl__mon_encode_grant(const struct fl__mon_hello *h, void *buf, size_t cap);
size_t fl__mon_encode_claim(const struct fl__mon_claim *c, void *buf, size_t cap);

/*
 * Decoders take one whole message of exactly @len bytes and check every
 * field. The hello's regions are allocated (at most FL_MONITOR_MAX_REGIONS,
 * after the lengths were checked); its paths and an error's message point
 * into @buf, which must outlive the result.
 */
int fl__mon_decode_hello(const void *buf, size_t len, struct fl__mon_hello *ret, char *err,
			 size_t errlen);
int fl__mon_decode_reply(const void *buf, size_t len, struct fl__mon_reply *ret, char *err,
			 size_t errlen);
/* Up to @cap (>= FL_MONITOR_MAX_EVENTS for any valid message) events into @ev. */
int fl__mon_decode_events(const void *buf, size_t len, struct fl__mon_event *ev, size_t cap,
			  size_t *ret_n, char *err, size_t errlen);

/* A GRANT: like a HELLO, but flag CHILDREN alone, attach_seq 0, and maybe no regions. */
int fl__mon_decode_grant(const void *buf, size_t len, struct fl__mon_hello *ret, char *err,
			 size_t errlen);
int fl__mon_decode_claim(const void *buf, size_t len, struct fl__mon_claim *ret, char *err,
			 size_t errlen);
/*
 * The beacon page: the monitor writes a child's session and token into it
 * (through the child's userfaultfd); the child reads them after fork().
 * fl__mon_beacon_read() returns false for a page without the magic (a zero
 * page: nobody wrote it) or with a zero token.
 */
#define FL__MON_BEACON_LEN 24
void fl__mon_beacon_write(void *page, uint64_t session, uint64_t token);
bool fl__mon_beacon_read(const void *page, uint64_t *ret_session, uint64_t *ret_token);
/* A BYE: a header and nothing else. */
int fl__mon_decode_bye(const void *buf, size_t len, char *err, size_t errlen);

/*
 * fl__mon_check_regions - the semantic rules, for both handshakes: 1 to
 * FL_MONITOR_MAX_REGIONS regions; page size a power of two, 4 KiB to
 * FL_MONITOR_MAX_PAGE_SIZE; address, length and store offset multiples of
 * it; length non-zero; neither address nor store range wraps; no two
 * regions overlap; a known store and memory type; FILE paths absolute,
 * 1 to FL_MONITOR_MAX_PATH bytes, no NUL inside; other stores no path;
 * ZERO regions offset 0; only PATTERN regions a seed.
 * Returns 0, -EINVAL or -E2BIG.
 */
int fl__mon_check_regions(const struct fl__mon_region *r, size_t n, char *err, size_t errlen);

/* What the first byte of a connection says it is. */
enum fl__mon_sniff {
	FL__MON_SNIFF_NATIVE = 1,	/* our magic */
	FL__MON_SNIFF_JSON = 2,		/* '[' or JSON white space: Firecracker */
};
/* Returns an enum fl__mon_sniff, -EAGAIN for no bytes, or -EPROTO. */
int fl__mon_sniff(const void *buf, size_t len);

/*
 * fl__fc_parse - Firecracker's handshake: a JSON array of objects
 * {"base_host_virt_addr", "size", "offset", "page_size"} (or the deprecated
 * "page_size_kib", which holds bytes too; if both are present they must
 * agree). Numbers of these keys must be unsigned 64-bit integers: no sign,
 * fraction, exponent or leading zero. Other keys are skipped whatever their
 * value (Firecracker may add some); a known key twice is refused. Page size
 * 4 KiB or 2 MiB; the regions must pass fl__mon_check_regions(). Produces
 * regions with store FL__MON_STORE_MONITOR (offset = "offset") and memory
 * type ANON (4 KiB) or HUGETLB (2 MiB). At most FL_MONITOR_MAX_MSG bytes,
 * nesting depth FL__FC_MAX_DEPTH.
 * Returns 0, -EAGAIN (a valid beginning: read more), -EPROTO (not JSON),
 * -EINVAL (JSON, but not a valid region list), -E2BIG.
 */
#define FL__FC_MAX_DEPTH 32
int fl__fc_parse(const void *json, size_t len, struct fl__mon_hello *ret, char *err,
		 size_t errlen);

/*
 * The client's layout: regions sorted by address, kept current with the
 * EVENT messages. fl__mon_table_apply() splits, moves and drops entries;
 * a removed range becomes a ZERO region. Paths are borrowed from whoever
 * built the table. Returns 0, -EINVAL for an event that is not aligned or
 * wraps, or -E2BIG when the result would pass FL_MONITOR_MAX_REGIONS (the
 * table is then unchanged).
 */
struct fl__mon_table {
	struct fl__mon_region *r;
	size_t n, cap;
};
int fl__mon_table_apply(struct fl__mon_table *t, const struct fl__mon_event *ev, char *err,
			size_t errlen);
void fl__mon_table_sort(struct fl__mon_table *t);

/* --------------------------------------------------------------- sock.c */

/* The milliseconds left until @deadline (of fl__now_ms()), 0 if past. */
int fl__mon_left_ms(uint64_t deadline);

/*
 * fl__mon_send - write all of @buf to a (non-blocking or blocking) stream
 * socket, with @fd (if >= 0) attached to the first byte, by @deadline.
 * Returns 0, -ETIMEDOUT, -EPIPE or another -errno. Never raises SIGPIPE.
 */
int fl__mon_send(int sock, const void *buf, size_t len, int fd, uint64_t deadline);

/*
 * fl__mon_recv_msg - read exactly one whole native message by @deadline.
 * *ret_buf is malloc'ed (the caller frees it). *ret_fd (may be NULL: then
 * any descriptor is refused) receives the one descriptor attached, or -1;
 * more than one descriptor is -EPROTO and all are closed. Returns 0,
 * -ETIMEDOUT, -EPIPE (hang-up before a whole message), -EPROTO and the
 * other classes of fl__mon_frame().
 */
int fl__mon_recv_msg(int sock, uint64_t deadline, void **ret_buf, size_t *ret_len, int *ret_fd,
		     char *err, size_t errlen);

/*
 * fl__mon_recv_hello - what a monitor does on a new connection: read the
 * first bytes with the descriptor, tell a HELLO from Firecracker's JSON,
 * read the rest (JSON: until the array is complete; Firecracker then says
 * nothing more), and decode. On success *ret_buf holds the bytes the
 * hello's paths point into, and *ret_fd the descriptor (-EPROTO if none came).
 * The descriptor is not checked here: see fl__mon_check_uffd().
 */
int fl__mon_recv_hello(int sock, uint64_t deadline, struct fl__mon_hello *ret, void **ret_buf,
		       int *ret_fd, char *err, size_t errlen);
/*
 * fl__mon_recv_first - fl__mon_recv_hello(), except that the first message
 * may also be a CLAIM (with no descriptor): then *ret_claim gets it,
 * *is_claim is set, and nothing else is returned.
 */
int fl__mon_recv_first(int sock, uint64_t deadline, struct fl__mon_hello *ret, void **ret_buf,
		       int *ret_fd, struct fl__mon_claim *ret_claim, bool *is_claim, char *err,
		       size_t errlen);

/*
 * The first message of a connection, read as it comes, never blocking: the
 * monitor's loop feeds it whenever the socket is readable, so that a peer
 * that says nothing holds a descriptor and a few bytes, never a thread.
 *
 * fl__mon_first_init() (-ENOMEM) before anything else; fl__mon_first_free()
 * always, after. fl__mon_first_feed() reads what is there: -EAGAIN (wait
 * until readable, then feed again), 0 (ready: end it), or -errno with
 * @err. When the deadline passes, fl__mon_first_expire() says 0 (a JSON
 * text that may still be whole: end it) or -ETIMEDOUT. fl__mon_first_end()
 * decodes what came, with the results of fl__mon_recv_first(); what it
 * returns is the caller's, the rest is freed by fl__mon_first_free().
 */
struct fl__mon_json_end {
	long depth;
	bool in_str, esc, done;
};
struct fl__mon_first {
	uint8_t *b;
	size_t cap, have, total;	/* total: of a native message, once its header is in */
	int fd;				/* the descriptor that came with it, or -1 */
	int kind;			/* 0 until the first byte, then an enum fl__mon_sniff */
	int cut;			/* JSON: why it cannot grow (-errno), or 0 */
	const char *cut_what;
	struct fl__mon_json_end json;
};
int fl__mon_first_init(struct fl__mon_first *st);
int fl__mon_first_feed(struct fl__mon_first *st, int sock, char *err, size_t errlen);
int fl__mon_first_expire(struct fl__mon_first *st, char *err, size_t errlen);
int fl__mon_first_end(struct fl__mon_first *st, struct fl__mon_hello *ret, void **ret_buf,
		      int *ret_fd, struct fl__mon_claim *ret_claim, bool *is_claim, char *err,
		      size_t errlen);
void fl__mon_first_free(struct fl__mon_first *st);

/*
 * fl__mon_peer_check - SO_PEERCRED of a connected unix socket: accept a peer
 * whose uid is @uid, or any uid with @any_uid. *ret (may be NULL) gets the
 * credentials. Returns 0, -EPERM (another user: the message names both
 * uids), or -errno of getsockopt.
 */
int fl__mon_peer_check(int sock, uid_t uid, bool any_uid, pid_t *ret_pid, uid_t *ret_uid,
		       char *err, size_t errlen);

/*
 * fl__mon_check_uffd - is @fd a userfaultfd? Its /proc/self/fd link must
 * read "anon_inode:[userfaultfd]"; without /proc it is refused. Returns 0,
 * -EBADF (not one, or not open), or -errno.
 */
int fl__mon_check_uffd(int fd, char *err, size_t errlen);

/* A unix socket address for "path" or "@abstract". Returns its length, or -ENAMETOOLONG/-EINVAL. */
struct sockaddr_un;
int fl__mon_sockaddr(const char *path, struct sockaddr_un *sa);

/* The message format helper every file uses: printf into err if err is not NULL. */
void fl__mon_errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif /* FL_MONITOR_INT_H */
