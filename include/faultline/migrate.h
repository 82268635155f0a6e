/* SPDX-License-Identifier: MIT */
/* faultline migrate: post-copy live migration of a program's memory to another process or host. */
#ifndef FAULTLINE_MIGRATE_H
#define FAULTLINE_MIGRATE_H

#include <stddef.h>
#include <stdint.h>

#include <faultline/uffd.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A migration moves regions of private anonymous memory, and a small state
 * blob of the application's own, from a source process to a destination
 * process (on this host or another), over two TCP connections: a background
 * stream and an urgent channel (doc/wire-protocol.md).
 *
 * The source application stops its own threads (or lets the library call its
 * stop callback at the switch-over) and runs fl_migrate_source_run(). The
 * destination maps the regions at the same virtual addresses, serves them
 * with a pager (pager.h) whose store is the source, and returns the state
 * blob from fl_migrate_dest_accept(): the application resumes at once, while
 * pages arrive by background push and, for the pages its threads touch, by
 * urgent request. Optional pre-copy rounds send memory while the source still
 * runs. A broken connection pauses both sides (faulting threads stay blocked,
 * never zero-filled) until the side that connected reconnects and the session
 * resumes where it stopped.
 *
 * The destination's application may use its memory as any: the pager follows
 * mremap (a region moved whole is served at its new address), MADV_DONTNEED
 * (the page reads zeros, and a late copy never brings the source's bytes
 * back), munmap, and its writes are never overwritten by a late copy. A child
 * it forks during post-copy is served by a pager of its own over the same
 * source (with the fork event, which needs CAP_SYS_PTRACE; without it the
 * kernel unregisters the child's copy and its missing pages read as zeros): it
 * reads the source's bytes, pages that arrive later reach it too, and the
 * migration completes only once every live child holds every page.
 *
 * Both objects record the pid that created them: every call in a forked child
 * returns -ECHILD.
 */

/* The two sides of a migration. Opaque. */
struct fl_migrate_source;
struct fl_migrate_dest;

/* A range of the source's memory: private anonymous, readable. */
struct fl_migrate_region {
	void *addr;			/* page aligned */
	size_t len;			/* a non-zero multiple of the page size */
};

enum fl_migrate_flags {
	/* Listen on host:port and let the peer connect; without it, connect to host:port. */
	FL_MIGRATE_LISTEN = 1u << 0,
	/*
	 * Destination: map the regions wherever the kernel chooses instead of at
	 * the source's addresses (fl_migrate_dest_region() says where). For data
	 * without absolute pointers, and for both sides in one process.
	 */
	FL_MIGRATE_ANYWHERE = 1u << 1,
	/*
	 * Source: no post-copy. After the stop, every page not yet sent goes out
	 * before the state blob, so the destination resumes with all its memory
	 * (classic stop-and-copy, after the pre-copy rounds if any).
	 */
	FL_MIGRATE_STOP_AND_COPY = 1u << 2,
	/*
	 * Plain TCP: with neither a key nor certificates, the connections carry
	 * the memory in the clear, and anyone on the path can read it, change
	 * it, or pose as the peer; create refuses that (-EINVAL) unless this
	 * flag says it is meant (a test, a link that is otherwise protected).
	 */
	FL_MIGRATE_INSECURE = 1u << 3,
	/*
	 * X.509, listening side: require the connecting side's certificate,
	 * issued by tls_ca_file (mutual TLS). Since 0.3.
	 */
	FL_MIGRATE_VERIFY_PEER = 1u << 4,
};

enum fl_migrate_phase {
	FL_MIGRATE_CONNECTING = 0,	/* connecting, handshaking */
	FL_MIGRATE_PRECOPY = 1,		/* the source runs; memory is copied in rounds */
	FL_MIGRATE_SWITCHOVER = 2,	/* the source stopped; its state is on the way */
	FL_MIGRATE_POSTCOPY = 3,	/* the destination runs; pages still arrive */
	FL_MIGRATE_PAUSED = 4,		/* a connection broke: reconnecting, then resuming */
	FL_MIGRATE_DONE = 5,
	FL_MIGRATE_FAILED = 6,
};

/* "connecting", "precopy", ...; NULL for an unknown value. Thread safety: any thread. */
FL_API const char *fl_migrate_phase_name(enum fl_migrate_phase phase);

/*
 * The source's switch-over: stop the application's threads that write the
 * migrated memory, and hand over the state blob (*@ret_blob, *@ret_len bytes,
 * at most 16 MiB; the caller's memory, which must stay valid until
 * fl_migrate_source_run() returns). Called once, from the library's migration
 * thread (fl-mig-src/push) while fl_migrate_source_run() waits for it. Return
 * 0, or a negative errno to cancel the migration (the destination then fails
 * with -ECANCELED).
 */
typedef int (*fl_migrate_stop_fn)(void *userdata, const void **ret_blob, size_t *ret_len);

/*
 * Progress: called at each change of phase and about every 100 ms, from a
 * thread of the library (the source's migration thread, the destination's
 * receiver). @done of @total pages are at the destination (as far as this
 * side knows). It may call the *_stats() functions; it must not block long.
 */
typedef void (*fl_migrate_progress_fn)(void *userdata, enum fl_migrate_phase phase,
				       uint64_t done, uint64_t total);

struct fl_migrate_source_opts {
	size_t sz;			/* sizeof(struct fl_migrate_source_opts) */
	const struct fl_migrate_region *regions;	/* copied; at most 1024, no overlaps */
	unsigned int n_regions;
	const char *host;		/* where to connect; with LISTEN, where to listen
					   (NULL: every address) */
	uint16_t port;			/* with LISTEN, 0 picks one (fl_migrate_source_port) */
	uint32_t flags;			/* FL_MIGRATE_LISTEN, _STOP_AND_COPY, _INSECURE,
					   _VERIFY_PEER */
	const void *key;		/* shared key (copied): TLS 1.3 with this pre-shared
					   key; NULL: certificates below, or plain TCP */
	size_t key_len;			/* bytes of key: 16 to 4096 */
	/* The state blob when there is no stop callback (the application already stopped). */
	const void *blob;
	size_t blob_len;
	fl_migrate_stop_fn stop;	/* NULL: the application stopped before run() */
	fl_migrate_progress_fn progress;	/* may be NULL */
	void *userdata;			/* for stop and progress; never touched */
	/*
	 * Pre-copy: at most this many rounds while the application runs (needs a
	 * stop callback, FL_FEAT_WP_ASYNC and FL_FEAT_PAGEMAP_SCAN). Round 1 sends
	 * every page; each later round sends the pages written since. The switch
	 * comes after the last round, or earlier, as soon as the application
	 * dirties memory more slowly than the link drains it. 0: pure post-copy.
	 */
	unsigned int precopy_rounds;
	uint64_t max_bandwidth;		/* background bytes per second, 0: unlimited; urgent
					   pages are never limited */
	int timeout_ms;			/* connecting, handshakes, and a stalled send or
					   receive; 0: 10000 */
	int resume_timeout_ms;		/* how long a broken session tries to resume; 0: 60000,
					   -1: forever */
	/*
	 * TLS 1.3 with X.509 certificates instead of a key (since 0.3): PEM
	 * files, read at create. A listening side shows tls_cert_file (with
	 * tls_key_file); a connecting side checks it against tls_ca_file and
	 * tls_peer_name (NULL: host), and shows its own if it has one.
	 */
	const char *tls_ca_file;
	const char *tls_cert_file;
	const char *tls_key_file;
	const char *tls_peer_name;
};

/*
 * fl_migrate_source_create - a source for @opts->regions, not yet connected.
 * With FL_MIGRATE_LISTEN the socket is bound and listening on return.
 * Returns 0, -EINVAL (bad options, overlapping or unaligned regions,
 * pre-copy without a stop callback, a blob over 16 MiB, a key under 16
 * bytes, a key and certificates, neither without FL_MIGRATE_INSECURE, a
 * listening side without its certificate, a connecting one without a CA
 * file), -ENOENT/-EACCES (a certificate file cannot be read), -EBADMSG (it
 * is not PEM of its kind, or the key does not match), -EOPNOTSUPP
 * (pre-copy on a kernel without WP_ASYNC or PAGEMAP_SCAN), -EADDRINUSE and
 * other socket errors, -ENOMEM.
 * Thread safety: any thread.
 */
FL_API int fl_migrate_source_create(const struct fl_migrate_source_opts *opts,
				    struct fl_migrate_source **ret);

/* The port a LISTEN source listens on; -EINVAL without LISTEN. Thread safety: any thread. */
FL_API int fl_migrate_source_port(const struct fl_migrate_source *s, uint16_t *ret_port);

/*
 * fl_migrate_source_run - migrate: connect (or accept), handshake, pre-copy,
 * stop, send the state, push every page while answering the destination's
 * requests first, resume after broken connections, until the destination
 * confirms it holds every page. Blocks until then, and no longer than the
 * timeouts allow. With LISTEN, a connection that fails its handshake is
 * closed and logged, and the wait for the destination goes on.
 * Returns 0, or: -EACCES (wrong or missing key), -EPROTONOSUPPORT (no
 * common wire version), -EPROTO (a malformed frame), -EINVAL (the
 * destination refused the regions), -ECANCELED (the stop callback
 * refused), -ETIMEDOUT (no destination within timeout_ms, or it never
 * confirmed), -ENOLINK (a connection broke and the destination did not
 * come back within resume_timeout_ms), -ENXIO (no such host), -EALREADY
 * (run twice), another -errno. fl_migrate_source_error() says why in a
 * sentence. The source's memory is never changed.
 * Thread safety: one thread; the other calls may run meanwhile.
 */
FL_API int fl_migrate_source_run(struct fl_migrate_source *s);

/* Change the background limit (bytes/s, 0: none), also while running. Thread safety: any thread. */
FL_API int fl_migrate_source_set_bandwidth(struct fl_migrate_source *s, uint64_t bytes_per_s);

/*
 * Why the last call failed, as a sentence ("" if nothing failed). Valid
 * until the object is destroyed. Thread safety: after run() returned.
 */
FL_API const char *fl_migrate_source_error(const struct fl_migrate_source *s);

/*
 * Stop (closing the connections) and free; accepts NULL. The regions stay
 * mapped and untouched. Thread safety: no other call on @s may run.
 */
FL_API void fl_migrate_source_destroy(struct fl_migrate_source *s);

struct fl_migrate_dest_opts {
	size_t sz;			/* sizeof(struct fl_migrate_dest_opts) */
	const char *host;		/* with LISTEN, where to listen (NULL: every address);
					   else the source to connect to */
	uint16_t port;			/* with LISTEN, 0 picks one (fl_migrate_dest_port) */
	uint32_t flags;			/* FL_MIGRATE_LISTEN, _ANYWHERE, _INSECURE,
					   _VERIFY_PEER */
	const void *key;		/* shared key (copied, 16 to 4096 bytes), or NULL:
					   as for the source */
	size_t key_len;
	fl_migrate_progress_fn progress;	/* may be NULL */
	void *userdata;
	int timeout_ms;			/* as for the source; 0: 10000 */
	int resume_timeout_ms;		/* as for the source; 0: 60000, -1: forever */
	/* X.509 instead of a key, as for the source (since 0.3). */
	const char *tls_ca_file;
	const char *tls_cert_file;
	const char *tls_key_file;
	const char *tls_peer_name;
};

/*
 * fl_migrate_dest_create - a destination, not yet connected. With
 * FL_MIGRATE_LISTEN the socket is bound and listening on return.
 * Returns 0, -EINVAL (bad options, a key under 16 bytes, as for the
 * source), the certificate files' errors as for the source, socket errors,
 * -ENOSYS/-EPERM (no usable userfaultfd, as fl_uffd_open), -ENOMEM.
 * Thread safety: any thread.
 */
FL_API int fl_migrate_dest_create(const struct fl_migrate_dest_opts *opts,
				  struct fl_migrate_dest **ret);

/* The port a LISTEN destination listens on; -EINVAL without LISTEN. Thread safety: any thread. */
FL_API int fl_migrate_dest_port(const struct fl_migrate_dest *d, uint16_t *ret_port);

/*
 * fl_migrate_dest_accept - take the incoming migration: accept the source's
 * connection (or connect to it), handshake, map the source's regions at
 * their addresses (MAP_FIXED_NOREPLACE), receive the pre-copy rounds, hand
 * the regions to the pager, and return at the switch-over with the state blob in
 * *@ret_blob (the library's memory, valid until destroy) and its length in
 * *@ret_len. The application resumes now: its threads may touch the regions
 * at once (a missing page is fetched urgently; the touching thread waits).
 * @timeout_ms bounds the wait (-1: none; a handshake under way may add
 * opts->timeout_ms); after -ETIMEDOUT the migration goes on, and accept
 * may be called again. Listening, every connection that fails its
 * handshake (not faultline, a wrong key or none, a replayed handshake,
 * another session) or stays silent for opts->timeout_ms is closed and
 * logged (a warning), and the wait for the real source goes on; so at
 * every resume.
 * Returns 0, or -EEXIST (a region's range is already mapped here; the
 * error names it), -ETIMEDOUT (the error names the last refused
 * connection, if any), -ECANCELED, -ENOLINK; connecting to the source
 * also -EACCES, -EPROTONOSUPPORT, -EPROTO, -ENXIO; another -errno;
 * fl_migrate_dest_error() says why.
 * Thread safety: one thread at a time.
 */
FL_API int fl_migrate_dest_accept(struct fl_migrate_dest *d, int timeout_ms,
				  const void **ret_blob, size_t *ret_len);

/*
 * fl_migrate_dest_wait - wait until every page is here (0), the migration
 * failed (its -errno, never -ETIMEDOUT: for example -ENOLINK when the
 * source did not come back within resume_timeout_ms), or @timeout_ms
 * passed (-ETIMEDOUT: still going; -1: no limit).
 * Once it returned 0 the regions are ordinary memory: unregistered, every
 * page present (a page the program discarded reads zeros). A failed
 * migration poisons the pages still missing before it is reported: the
 * threads blocked on them, and every later access, get SIGBUS (SIGSEGV on
 * kernels without UFFDIO_POISON), never zeros.
 * Thread safety: any thread, after accept returned 0.
 */
FL_API int fl_migrate_dest_wait(struct fl_migrate_dest *d, int timeout_ms);

/*
 * Where region @i lives here: *@ret_addr and *@ret_len. The regions are
 * numbered in the order of their addresses at the source, from 0.
 * -ENOENT past the last region, -EINVAL before accept returned.
 * Thread safety: any thread, after accept returned 0.
 */
FL_API int fl_migrate_dest_region(const struct fl_migrate_dest *d, unsigned int i,
				  void **ret_addr, size_t *ret_len);

/* As fl_migrate_source_error(). Thread safety: after accept or wait returned. */
FL_API const char *fl_migrate_dest_error(const struct fl_migrate_dest *d);

/*
 * Stop and free; accepts NULL. If the migration did not complete, the pages
 * still missing are poisoned first (if the failure did not already) (a later access, and a thread blocked on
 * one, gets SIGBUS; never zeros), then the regions are unregistered. The
 * regions stay mapped. Thread safety: no other call on @d may run.
 */
FL_API void fl_migrate_dest_destroy(struct fl_migrate_dest *d);

/* ------------------------------------------------------------ statistics */

/* Latency histograms: bucket i counts events of [2^i, 2^(i+1)) ns. */
#define FL_MIGRATE_LAT_BUCKETS 32
/* Threads whose blocktime is kept one by one; the others are summed in blocktime_ns. */
#define FL_MIGRATE_MAX_THREADS 64

struct fl_migrate_source_stats {
	size_t sz;			/* the caller sets sizeof(struct fl_migrate_source_stats); on return,
					   the bytes the library filled (see fl_migrate_source_stats(3)) */
	uint32_t phase;			/* enum fl_migrate_phase */
	uint32_t resumes;		/* sessions resumed after a broken connection */
	uint64_t pages_total;
	uint64_t pages_sent;		/* pages the destination has been sent, now current */
	uint64_t pages_pushed;		/* pages sent in the background (pre-copy included) */
	uint64_t pages_urgent;		/* pages sent to answer requests */
	uint64_t pages_zero;		/* of those, sent as ZERO (no bytes) */
	uint64_t bytes_pushed;		/* background bytes on the wire */
	uint64_t bytes_urgent;		/* urgent answers' bytes on the wire */
	uint64_t requests;		/* requests answered */
	uint32_t precopy_rounds;	/* pre-copy rounds done */
	uint32_t reserved;
	uint64_t precopy_pages;		/* pages sent while the application ran */
	uint64_t dirty_pages;		/* pages written again after being sent (final scan
					   included) */
	uint64_t stop_ns;		/* CLOCK_MONOTONIC when the application was stopped */
	uint64_t switch_ns;		/* from the stop until the state was handed to TCP */
	uint64_t total_ns;		/* run() from start to the destination's COMPLETE */
	uint64_t bandwidth;		/* background bytes/s measured over the last pass */
};

/* A snapshot of the counters. Thread safety: any thread. */
FL_API int fl_migrate_source_stats(const struct fl_migrate_source *s,
				   struct fl_migrate_source_stats *ret);

struct fl_migrate_thread_stats {
	uint32_t tid;			/* the faulting thread (FL_FEAT_THREAD_ID), or 0 */
	uint32_t faults;		/* faults it took on missing pages */
	uint64_t blocked_ns;		/* time it spent blocked on them */
};

struct fl_migrate_dest_stats {
	size_t sz;			/* the caller sets sizeof(struct fl_migrate_dest_stats); on return,
					   the bytes the library filled (see fl_migrate_source_stats(3)) */
	uint32_t phase;			/* enum fl_migrate_phase */
	uint32_t resumes;
	uint32_t n_regions;
	uint32_t n_threads;		/* entries used in threads[] */
	uint64_t pages_total;
	uint64_t pages_received;	/* pages present (installed and current) */
	uint64_t pages_pushed;		/* installed from the background stream */
	uint64_t pages_urgent;		/* installed from answers to requests */
	uint64_t pages_zero;		/* of those, zero pages */
	uint64_t pages_duplicate;	/* arrived when already present: dropped, never written */
	uint64_t pages_discarded;	/* pre-copied pages dropped at the switch-over (dirty) */
	uint64_t bytes_pushed;
	uint64_t bytes_urgent;
	uint64_t faults;		/* faults on missing pages */
	uint64_t faults_shared;		/* of those, on a page already requested (no new request) */
	uint64_t requests;		/* requests sent */
	uint64_t lat_hist[FL_MIGRATE_LAT_BUCKETS];	/* request sent to page installed */
	uint64_t blocktime_ns;		/* every thread's time blocked on missing pages */
	uint64_t resume_ns;		/* CLOCK_MONOTONIC when accept() let the program resume */
	uint64_t switch_ns;		/* from the first switch-over frame to the resume */
	uint64_t total_ns;		/* from the first connection to completion */
	struct fl_migrate_thread_stats threads[FL_MIGRATE_MAX_THREADS];
};

/* A snapshot of the counters. Thread safety: any thread. */
FL_API int fl_migrate_dest_stats(const struct fl_migrate_dest *d,
				 struct fl_migrate_dest_stats *ret);

#ifdef __cplusplus
}
#endif

#endif /* FAULTLINE_MIGRATE_H */
