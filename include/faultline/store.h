/* SPDX-License-Identifier: MIT */
/* faultline stores: where a region's pages live. A table of callbacks; no knowledge of faults. */
#ifndef FAULTLINE_STORE_H
#define FAULTLINE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <faultline/uffd.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Capability flags of a store. */
enum fl_store_caps {
	FL_STORE_READONLY = 1u << 0,	/* write() is absent or refuses */
	FL_STORE_HOLES = 1u << 1,	/* read() reports holes (never-written, all-zero pages) */
	FL_STORE_MOVE = 1u << 2,	/* take_pages() can hand over its own anonymous pages */
};

/*
 * The callbacks of a store. Offsets and lengths are in bytes and are
 * multiples of the caller's page size (@page_size, a power of two >= 4096).
 *
 * **Every callback may run concurrently on several handler threads and must
 * be reentrant.** In SIGBUS mode read() and take_pages() run inside the
 * faulting thread's signal handler, so a store used there must be
 * async-signal-safe: no malloc, no lock the interrupted code could hold
 * (the built-in zero, pattern, mem and file stores are).
 */
struct fl_store_ops {
	size_t sz;	/* sizeof(struct fl_store_ops) */
	/*
	 * read - fill @buf (len bytes, owned by the caller, valid only during
	 * the call) with the pages at [off, off+len). For each page that is a
	 * hole, set bit i (i = page index within this call) in @holes, a bitmap
	 * of len/page_size bits the caller zeroed; a hole's bytes in @buf need
	 * not be written. A store without FL_STORE_HOLES never sets bits.
	 * Returns 0, or -errno (-EIO) if any page could not be read: then the
	 * whole call counts as failed and nothing of @buf is used. Any other
	 * value (a positive count, say) is a broken store: taken as -EIO and
	 * logged, never installed. The same holds for write and take_pages.
	 * Required.
	 */
	/*
	 * For anonymous regions with FL_INSTALL_AUTO, @buf is the pager's
	 * staging, aligned to 2 MiB: whole 2 MiB chunks the read fills are
	 * then moved into the region (UFFDIO_MOVE) rather than copied. A
	 * store gets that by reading into @buf (e.g. with pread); report
	 * all-zero pages as holes so they are installed as zero pages.
	 */
	int (*read)(void *userdata, uint64_t off, void *buf, size_t len, size_t page_size,
		    uint64_t *holes);
	/* write - store [off, off+len) from @buf (the caller's). NULL for read-only stores. */
	int (*write)(void *userdata, uint64_t off, const void *buf, size_t len);
	/*
	 * take_pages - for FL_STORE_MOVE: the address of the store's own
	 * page-aligned, private anonymous memory holding [off, off+len), which
	 * the caller will UFFDIO_MOVE away. From then on those pages belong to
	 * the caller; the store reads them as holes afterwards. Returns 0, or
	 * -EOPNOTSUPP when this range cannot be handed over (the caller then
	 * falls back to read()).
	 */
	int (*take_pages)(void *userdata, uint64_t off, size_t len, void **ret_addr);
	/* close - release the userdata. Called once, by fl_store_destroy(). May be NULL. */
	void (*close)(void *userdata);
};

/* A store: the callbacks, their userdata, capabilities and size. Opaque. */
struct fl_store;

/*
 * fl_store_create - wrap a caller's callbacks as a store of @size bytes.
 * @ops is copied. @caps are FL_STORE_* bits; FL_STORE_MOVE needs take_pages,
 * and a store without write gets FL_STORE_READONLY. If this fails, no
 * callback is ever invoked (not even close). Returns 0, -EINVAL, -ENOMEM.
 * Thread safety: any thread.
 */
FL_API int fl_store_create(const struct fl_store_ops *ops, void *userdata, uint32_t caps,
			   uint64_t size, struct fl_store **ret);

/*
 * Call close and free. Accepts NULL. No region may still use the store.
 * Thread safety: any thread, once no other call uses the store.
 */
FL_API void fl_store_destroy(struct fl_store *s);

/* The FL_STORE_* bits and the size in bytes (0 for NULL). Thread safety: any thread. */
FL_API uint32_t fl_store_caps(const struct fl_store *s);
FL_API uint64_t fl_store_size(const struct fl_store *s);

/*
 * fl_store_read / fl_store_write / fl_store_take_pages - call the store
 * with bounds and alignment checked: -EINVAL for a range past the store's
 * size or not a multiple of @page_size (4096 for write and take_pages, which
 * have none); -EROFS for writes to read-only stores; -EOPNOTSUPP for
 * take_pages without FL_STORE_MOVE. fl_store_read zeroes @holes itself;
 * @holes may be NULL only for a store without FL_STORE_HOLES. A length of
 * 0 reads or writes nothing and returns 0 (take_pages: -EINVAL).
 * Thread safety: any thread (the store's callbacks are reentrant).
 */
FL_API int fl_store_read(struct fl_store *s, uint64_t off, void *buf, size_t len,
			 size_t page_size, uint64_t *holes);
FL_API int fl_store_write(struct fl_store *s, uint64_t off, const void *buf, size_t len);
FL_API int fl_store_take_pages(struct fl_store *s, uint64_t off, size_t len, void **ret_addr);

/* ------------------------------------------------------------- built in */
/*
 * The constructors return 0, -EINVAL or -ENOMEM (the file store also
 * open(2)'s errors). Thread safety: any thread. The stores they make are
 * reentrant, and their read() (and the mem store's take_pages()) are
 * async-signal-safe.
 */

/* Every page a hole: regions read zeros (installed with ZEROPAGE). Read-only. */
FL_API int fl_store_zero_create(uint64_t size, struct fl_store **ret);

/*
 * A deterministic pattern, for tests and benchmarks: the 8-byte word at
 * byte offset o (o a multiple of 8) is fl_pattern_word(seed, o). Read-only,
 * no holes.
 */
FL_API int fl_store_pattern_create(uint64_t size, uint64_t seed, struct fl_store **ret);
/* The pattern's word at byte offset @off (a multiple of 8). */
FL_API uint64_t fl_pattern_word(uint64_t seed, uint64_t off);
/* Fill @buf with the pattern of [off, off+len) (@off and @len multiples of 8). */
FL_API void fl_pattern_fill(void *buf, uint64_t off, size_t len, uint64_t seed);
/*
 * 0 if @buf holds the pattern of [off, off+len), else 1 + the index in @buf
 * of the first differing byte. fill and check also accept offsets and
 * lengths that are not multiples of 8 (each byte is the one a native 8-byte
 * store of its word puts there).
 */
FL_API uint64_t fl_pattern_check(const void *buf, uint64_t off, size_t len, uint64_t seed);

enum fl_store_mem_flags {
	FL_STORE_MEM_READONLY = 1u << 0,
	FL_STORE_MEM_NO_MOVE = 1u << 1,	/* never hand pages over, even when they could be */
};

/*
 * A caller's buffer of @len bytes. The buffer stays the caller's and must
 * outlive the store. When it is private anonymous memory aligned to 4 KiB
 * (checked against /proc/self/maps at creation), the store has
 * FL_STORE_MOVE and hands its pages over: a page moved into a region is no
 * longer in the buffer (it reads as zero there) and the store reports it as
 * a hole from then on, until a write() puts data into it again. take_pages
 * refuses (-EOPNOTSUPP) ranges not aligned to this machine's page size and
 * pages already handed over. Only a store with FL_STORE_MOVE has FL_STORE_HOLES.
 * A page that take_pages handed over belongs to the caller even if its move
 * then fails: copy it from the returned address, do not read() it.
 */
FL_API int fl_store_mem_create(void *buf, size_t len, uint32_t flags, struct fl_store **ret);

enum fl_store_file_flags {
	FL_STORE_FILE_WRITABLE = 1u << 0,	/* open read-write; write() works */
	FL_STORE_FILE_DIRECT = 1u << 1,	/* O_DIRECT (buffers are aligned internally) */
	FL_STORE_FILE_CREATE = 1u << 2,	/* create the file if missing (with WRITABLE) */
};

struct fl_store_file_opts {
	size_t sz;		/* sizeof(struct fl_store_file_opts) */
	uint64_t offset;	/* where the store's byte 0 lies in the file */
	uint64_t size;		/* bytes from offset; 0 = to the end of the file */
	uint32_t flags;		/* FL_STORE_FILE_* */
};

/*
 * A file, read with pread (pwrite for writes) at opts->offset + off. Holes
 * come from SEEK_DATA/SEEK_HOLE where the file system supports them (a file
 * without a hole in the store's range at open is not searched again: a hole
 * punched later reads as its zeros); reads past the end of the file are
 * holes. A short read inside the file is -EIO,
 * never zeros. The file is opened O_CLOEXEC.
 * End of file: the store remembers the file's size at open, raised by its
 * own writes. Data below that end that is gone when read (the file was
 * truncated under the store) is -EIO, not a hole; past it, whatever the
 * file holds now is read, and the rest reads as holes (whole pages) or
 * zeros (the tail of a page). With size 0 the store covers the file from
 * offset to its end at open, rounded up to a multiple of 4096 (-EINVAL if
 * nothing lies past offset). CREATE needs WRITABLE and a size (else
 * -EINVAL) and creates the file with mode 0644 (less the umask). DIRECT:
 * requests whose buffer, file offset and length are 4096-aligned use
 * O_DIRECT, the others a second descriptor without it; -EOPNOTSUPP if the
 * file system refuses O_DIRECT. Returns 0, -EINVAL, -ENOMEM, -EOPNOTSUPP
 * or open(2)'s -errno.
 */
FL_API int fl_store_file_open(const char *path, const struct fl_store_file_opts *opts,
			      struct fl_store **ret);

enum fl_store_remote_flags {
	FL_STORE_REMOTE_WRITABLE = 1u << 0,	/* open for writing too (eviction write-back) */
	FL_STORE_REMOTE_INSECURE = 1u << 1,	/* plain TCP: neither key nor certificates */
};

struct fl_store_remote_opts {
	size_t sz;		/* sizeof(struct fl_store_remote_opts) */
	uint32_t flags;		/* FL_STORE_REMOTE_* */
	uint32_t connections;	/* TCP connections to the server: 0 = 2, at most 16 */
	/*
	 * How long a read or write waits for its answer, an outage included
	 * (the store reconnects meanwhile, backing off from 10 ms to 1 s):
	 * then it fails with -EIO, and the pager poisons the pages (SIGBUS,
	 * never zeros). 0 = 60000 ms; -1 = wait forever (unbounded).
	 */
	int32_t deadline_ms;
	/*
	 * TLS 1.3 with a pre-shared key (the server's --key file, copied: 16 to
	 * 4096 bytes), or with X.509 certificates (PEM files, read at open: the
	 * server's must chain to tls_ca_file and name tls_peer_name, NULL: the
	 * URL's host; tls_cert_file and tls_key_file are this side's, for a
	 * server that asks). Neither: plain TCP, only with FL_STORE_REMOTE_INSECURE.
	 */
	const void *key;
	size_t key_len;
	const char *tls_ca_file;
	const char *tls_cert_file;
	const char *tls_key_file;
	const char *tls_peer_name;
};

/*
 * fl_store_remote_open - the object NAME of the page server (faultline
 * serve(1)) at @url, "faultline://HOST:PORT/NAME" ("[ADDR]" for IPv6).
 * Connects once to learn the object's size (its store size) and checks that
 * it can be opened (for writing with FL_STORE_REMOTE_WRITABLE); then keeps
 * opts->connections connections, each reconnected when it breaks; a read or
 * write holds one for its duration and reads its own answers (no thread of
 * the store wakes it). A read of several pages (a prefetch window) is one
 * request per 2 MiB, all in flight at once. Holes: pages of zeros are reported as holes. Not async-signal-safe:
 * for pagers whose store reads run on handler threads (FL_PAGER_THREADS,
 * FL_PAGER_LOOP), not SIGBUS mode. Returns 0, -EINVAL (a bad URL or
 * option, logged), -ENOMEM, -EROFS (WRITABLE and the object is read-only),
 * the server's refusal (-ENOENT, -EACCES for a name it refuses, -EIO), a
 * failed TLS authentication (-EACCES), the certificate files' errors
 * (-ENOENT, -EBADMSG), or the connection's -errno (-ECONNREFUSED,
 * -ETIMEDOUT, -ENXIO for an unknown host).
 * Thread safety: any thread.
 */
FL_API int fl_store_remote_open(const char *url, const struct fl_store_remote_opts *opts,
				struct fl_store **ret);

/* ---------------------------------------------------------------- Redis */

enum fl_store_redis_flags {
	/* Each 4 KiB block a field of its chunk's hash instead of a key of its own. */
	FL_STORE_REDIS_HASH = 1u << 0,
	FL_STORE_REDIS_READONLY = 1u << 1,	/* write() refuses (-EROFS) */
};

struct fl_store_redis_opts {
	size_t sz;			/* sizeof(struct fl_store_redis_opts) */
	uint64_t size;			/* bytes of the object, a multiple of 4096; required */
	uint32_t flags;			/* FL_STORE_REDIS_* */
	unsigned int connect_timeout_ms;	/* one connection attempt; 0: 2000 */
	unsigned int command_timeout_ms;	/* one reply; 0: 5000 */
	/*
	 * How long one read or write keeps trying through connection errors,
	 * redirections and a failover (reconnecting with back-off and
	 * refreshing the slot map) before it fails; 0: 30000.
	 */
	unsigned int retry_ms;
	/* After a write: WAIT for this many replicas of each master written to (0: no WAIT). */
	unsigned int wait_replicas;
	unsigned int wait_timeout_ms;	/* WAIT's own timeout; 0: 1000 */
	unsigned int connections;	/* idle connections kept per server; 0: 8 */
	/*
	 * TLS, with a "rediss://" URL only (X.509: Redis has no pre-shared
	 * keys). PEM files, read at open: the servers' certificates must chain
	 * to tls_ca_file (required) and name tls_peer_name (NULL: the host each
	 * connection goes to, the URL's or, in a cluster, the address CLUSTER
	 * SLOTS reports); tls_cert_file and tls_key_file are this side's, for a
	 * server that asks (tls-auth-clients). NULL for redis://.
	 */
	const char *tls_ca_file;
	const char *tls_cert_file;
	const char *tls_key_file;
	const char *tls_peer_name;
};

/*
 * fl_store_redis_open - pages of an object kept in Redis, or in a Redis
 * Cluster, with hiredis. @url is "rediss://HOST:PORT/PREFIX" (TLS 1.3
 * through the project's transport, X.509: see the tls_* options) or
 * "redis://HOST:PORT/PREFIX" (plain TCP: no secrecy, no integrity; the
 * scheme is the explicit choice), HOST a name or an IPv4 address, PORT
 * default 6379, PREFIX the object's name, at most 200 bytes of
 * [A-Za-z0-9._-], default "fl". A server with cluster
 * support enabled is used as a cluster: the slot map comes from CLUSTER
 * SLOTS, keys go to the master of their hash slot, MOVED and ASK are
 * followed and the map is fetched again after a connection error; over
 * TLS the nodes are reached with the same TLS settings (the cluster runs
 * with tls-cluster yes, so that it reports their TLS ports). No AUTH.
 *
 * Keys (faultline(7) describes them): the object's record PREFIX:obj; per
 * chunk of 64 blocks of 4 KiB, a bitmap {PREFIX:C}:m of the blocks ever
 * written, and the blocks either as keys {PREFIX:C}:B or, with
 * FL_STORE_REDIS_HASH, as fields of the hash {PREFIX:C}:h. A block that is
 * absent reads as a hole only when the chunk's bitmap says it was never
 * written and this store never wrote it; a block that should exist and does
 * not (deleted, evicted, lost in a failover) fails the read with -EIO, never
 * zeros. A read of a prefetch window is one pipeline per server; so is a
 * write, followed by WAIT when opts->wait_replicas is set (fewer replicas
 * than asked before the deadline: -EIO).
 *
 * The store has FL_STORE_HOLES. Its callbacks use the network, malloc and
 * locks: not for FL_PAGER_SIGBUS. Returns 0, -EINVAL, -ENOMEM, -EIO (the
 * server could not be reached or answered wrongly before retry_ms),
 * -EACCES (TLS: the server's certificate failed the check; at once, not
 * retried), the certificate files' errors (-ENOENT, -EBADMSG), or
 * -EOPNOTSUPP when faultline was built without hiredis.
 */
FL_API int fl_store_redis_open(const char *url, const struct fl_store_redis_opts *opts,
			       struct fl_store **ret);

#ifdef __cplusplus
}
#endif

#endif /* FAULTLINE_STORE_H */
