/* SPDX-License-Identifier: MIT */
/* faultline monitor: hand this process's memory to an out-of-process pager over a unix socket. */
#ifndef FAULTLINE_MONITOR_H
#define FAULTLINE_MONITOR_H

#include <stddef.h>
#include <stdint.h>

#include <faultline/pager.h>
#include <faultline/uffd.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The monitor protocol (doc/monitor-protocol.md has the full layout).
 *
 * A client connects to the monitor's unix stream socket and sends one HELLO:
 * its regions, with its userfaultfd attached (SCM_RIGHTS). The monitor
 * answers ACK or ERROR. While attached, the monitor sends EVENT messages
 * describing the remap/remove/unmap events it applied, so that the client
 * always knows the layout it would have to describe to a restarted monitor.
 * A client that detaches sends BYE before it hangs up. Every message starts
 * with the same 32-byte header; all integers are little-endian and
 * fixed-width.
 */
#define FL_MONITOR_PROTO_MAGIC 0x4e4d4c46u	/* the bytes "FLMN" read as a little-endian u32 */
#define FL_MONITOR_PROTO_VERSION 1
#define FL_MONITOR_HDR_LEN 32		/* the common header of version 1 */
#define FL_MONITOR_HELLO_FIXED_LEN 32	/* HELLO: features, session, pid, attach_seq */
#define FL_MONITOR_ACK_FIXED_LEN 16	/* ACK: session, monitor pid */
#define FL_MONITOR_ERROR_FIXED_LEN 8	/* ERROR: errno, message length */
#define FL_MONITOR_CLAIM_FIXED_LEN 24	/* CLAIM: session, token, pid */
#define FL_MONITOR_REGION_LEN 64	/* one HELLO region entry */
#define FL_MONITOR_EVENT_LEN 32		/* one EVENT entry */

/* Limits every peer enforces. A message past any of them is refused, never truncated. */
#define FL_MONITOR_MAX_MSG (1u << 20)	/* bytes in one message */
#define FL_MONITOR_MAX_REGIONS 4096	/* regions in one HELLO (and in a client's table) */
#define FL_MONITOR_MAX_PATH 4095	/* bytes of one file path, without its NUL */
#define FL_MONITOR_MAX_ERRMSG 1023	/* bytes of an ERROR's text, without its NUL */
#define FL_MONITOR_MAX_EVENTS 256	/* entries in one EVENT message */
#define FL_MONITOR_MAX_PAGE_SIZE (1u << 30)

/* Message types (header field "type"). */
enum fl_monitor_msg_type {
	FL_MONITOR_MSG_HELLO = 1,	/* client -> monitor, carries the userfaultfd */
	FL_MONITOR_MSG_ACK = 2,		/* monitor -> client: serving from now on */
	FL_MONITOR_MSG_ERROR = 3,	/* monitor -> client: refused (errno and a message) */
	FL_MONITOR_MSG_EVENT = 4,	/* monitor -> client: events applied to the layout */
	FL_MONITOR_MSG_BYE = 5,		/* client -> monitor: detaching, stop serving */
	FL_MONITOR_MSG_CLAIM = 6,	/* fork()ed child -> monitor: send me my userfaultfd */
	FL_MONITOR_MSG_GRANT = 7,	/* monitor -> child: its userfaultfd and its layout */
};

/* HELLO flags (header field "flags"). Unknown bits are refused. */
enum fl_monitor_hello_flags {
	FL_MONITOR_HELLO_REATTACH = 1u << 0,	/* this userfaultfd was served before: pages may
						   be present, and faults may be queued already */
	FL_MONITOR_HELLO_CHILDREN = 1u << 1,	/* fork()ed children claim their userfaultfds:
						   the HELLO names a beacon page */
};

/*
 * The first 8 bytes of a child's beacon page once the monitor wrote it
 * ("FLCHILD1"); the child's session and claim token follow (u64 each).
 */
#define FL_MONITOR_BEACON_MAGIC 0x31444c4948434c46ull

/* EVENT entry types. */
enum fl_monitor_event_type {
	FL_MONITOR_EV_REMAP = 1,	/* mremap: [a, a+c) moved to [b, b+c) */
	FL_MONITOR_EV_REMOVE = 2,	/* MADV_DONTNEED/REMOVE: [a, b) reads as zeros now */
	FL_MONITOR_EV_UNMAP = 3,	/* munmap: [a, b) is gone */
};

/* ---------------------------------------------------------------- client */

/* Where the monitor gets a region's pages. */
enum fl_monitor_store {
	FL_MONITOR_STORE_FILE = 1,	/* a file the monitor opens, by absolute path */
	FL_MONITOR_STORE_PATTERN = 2,	/* fl_pattern_word(seed, offset + i): tests, benchmarks */
	FL_MONITOR_STORE_ZERO = 3,	/* zeros */
};

/* One range of this process's memory to be served by the monitor. */
struct fl_monitor_region {
	void *addr;			/* mapped, aligned to page_size */
	size_t len;			/* a non-zero multiple of page_size */
	size_t page_size;		/* 0: 4 KiB (2 MiB for FL_MEM_HUGETLB); a power of two,
					   4 KiB to 1 GiB: the monitor's unit of transfer */
	enum fl_mem_type mem;		/* what addr is: anonymous, shmem/memfd or hugetlbfs */
	enum fl_monitor_store store;
	const char *path;		/* FILE: absolute path, opened by the monitor with its
					   own privileges; NULL for the other stores */
	uint64_t offset;		/* the store's byte at addr; a multiple of page_size */
	uint64_t seed;			/* PATTERN: the pattern's seed; else 0 */
	uint64_t reserved[2];		/* zero */
};

/* What the client does when the monitor hangs up. Never zero pages. */
enum fl_monitor_policy {
	/*
	 * Keep the userfaultfd: faults block meanwhile. Reconnect to the socket
	 * (every retry_ms, or when fl_monitor_client_reattach() is called) and
	 * hand the same userfaultfd to the new monitor; the blocked faults then
	 * complete. With wait_max_ms, give up after that long and fail loudly.
	 */
	FL_MONITOR_WAIT_REATTACH = 0,
	/*
	 * Log why, poison every page of the regions that is not present
	 * (threads blocked on them, and later accesses, get SIGBUS), keep the
	 * pages that are present, and unregister the regions. Pages the
	 * program discarded with MADV_DONTNEED read as zeros, as they should.
	 */
	FL_MONITOR_FAIL_LOUD = 1,
};

/* The state of a client. */
enum fl_monitor_state {
	FL_MONITOR_ATTACHED = 1,	/* a monitor serves the regions */
	FL_MONITOR_WAITING = 2,		/* the monitor is gone; faults block until a re-attach */
	FL_MONITOR_FAILED = 3,		/* failed loudly: absent pages poisoned, regions
					   unregistered; final */
	FL_MONITOR_BLOCKED = 4,		/* failed, but this kernel cannot poison (UFFDIO_POISON
					   is 6.6): faults on absent pages block forever; final */
};

enum fl_monitor_flags {
	/* No watcher thread: poll fl_monitor_client_fd() and call fl_monitor_client_check(). */
	FL_MONITOR_NO_WATCHER = 1u << 0,
	/* WAIT_REATTACH: never reconnect by itself; only fl_monitor_client_reattach() does. */
	FL_MONITOR_NO_AUTO_REATTACH = 1u << 1,
	/*
	 * madvise(MADV_DONTFORK) the regions and open the userfaultfd without
	 * EVENT_FORK (which needs CAP_SYS_PTRACE). Children forked later do not
	 * have the regions at all. Without this flag EVENT_FORK is required,
	 * and fork()ed children become clients of their own (fl_monitor_attach()).
	 */
	FL_MONITOR_DONTFORK = 1u << 2,
};

struct fl_monitor_client;

/*
 * Called on every change of state (from the watcher thread, or from
 * fl_monitor_client_check()/fl_monitor_client_reattach() in the caller's
 * thread), after the policy has acted: on WAITING, FAILED and BLOCKED the
 * monitor is gone, and @err says why (-EPIPE: it hung up; -ECONNRESET;
 * -EPROTO: it sent garbage; the errno of an ERROR it sent before leaving;
 * -ETIMEDOUT: wait_max_ms ran out; -ENOTRECOVERABLE: the layout could not
 * be tracked, so no re-attach); on ATTACHED (a re-attach) @err is 0. No library lock is held: the callback may call
 * fl_monitor_client_state(), or abort() the process if it prefers a crash
 * to a BLOCKED process. It must not call fl_monitor_detach().
 */
typedef void (*fl_monitor_state_fn)(struct fl_monitor_client *c, enum fl_monitor_state state,
				    int err, void *userdata);

struct fl_monitor_opts {
	size_t sz;			/* sizeof(struct fl_monitor_opts) */
	enum fl_monitor_policy policy;	/* default WAIT_REATTACH */
	uint32_t flags;			/* FL_MONITOR_* */
	unsigned int ack_timeout_ms;	/* wait this long for ACK or ERROR; 0: 5000 */
	unsigned int retry_ms;		/* WAIT_REATTACH: reconnect interval; 0: 100 */
	unsigned int wait_max_ms;	/* WAIT_REATTACH: then fail loudly; 0: wait forever */
	fl_monitor_state_fn on_state;	/* may be NULL */
	void *userdata;			/* for on_state; never touched by the library */
};

/*
 * fl_monitor_attach - have the monitor listening on @socket_path serve
 * @regions of this process.
 *
 * Opens a userfaultfd with EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP and
 * EVENT_FORK (not with FL_MONITOR_DONTFORK), plus MISSING_SHMEM or
 * MISSING_HUGETLBFS when a region needs it and POISON when the kernel has
 * it; registers each region for missing faults; connects (SOCK_CLOEXEC);
 * sends the HELLO with the userfaultfd; and waits up to ack_timeout_ms for
 * the answer. The client keeps its own copy of the userfaultfd, so the
 * memory never silently turns into zero pages if the monitor dies: the
 * watcher thread (named fl-monitor), or fl_monitor_client_check(), notices
 * the hang-up and applies opts->policy.
 *
 * fork(): without FL_MONITOR_DONTFORK, a child inherits the regions, and
 * the monitor serves them through the child's own userfaultfd (the kernel
 * makes one per child). Before fork() returns in the child, the library's
 * pthread_atfork() handler claims a copy of it from the monitor (protocol
 * section 3.6; the secret comes through a page the library maps, PROT_NONE,
 * and registers with the regions), so the same @c then works in the child
 * as the child's own client: same policy and options, its own session,
 * connection and watcher thread; if the monitor dies, the child waits and
 * re-attaches, or fails loudly, like its parent. If the claim is
 * impossible (the monitor died with the child's descriptor, or refused),
 * the child fails loudly before any of its code runs: FAILED, or BLOCKED
 * where the regions stay registered with a descriptor it has no copy of.
 * Each fork() costs one round trip to the monitor in the child; fork()s of
 * a process are serialised by the handler. Children made by clone(2)
 * without CLONE_VM that skip the handlers (raw clone, _Fork) are served by
 * the monitor, but hold no copy: a dead monitor leaves their absent pages
 * reading as zeros. posix_spawn() and vfork() share the parent's memory:
 * nothing to claim.
 *
 * @socket_path: a file system path, or "@name" for the abstract namespace
 * (shorter than 108 bytes). @regions: @n (1 to FL_MONITOR_MAX_REGIONS)
 * descriptions, copied (paths included); they must not overlap. @opts may
 * be NULL.
 *
 * Returns 0 and the client in *@ret, or:
 *   -EINVAL         bad arguments or regions (the log says which and why),
 *   -ENAMETOOLONG   @socket_path too long,
 *   -ENOENT, -ECONNREFUSED, -EACCES   connect(2) failed: no monitor there,
 *   -ETIMEDOUT      no answer within ack_timeout_ms,
 *   -EPROTO         the monitor answered something that is not ACK or ERROR,
 *   -errno          the monitor refused: the errno it sent (for example
 *                   -EPERM for another user, -ENOENT for a missing store
 *                   file); its message goes to the log callback,
 *   as fl_uffd_open() (-ENOSYS, -EPERM, -EOPNOTSUPP) and fl_uffd_register().
 * On failure nothing stays registered and no thread runs.
 * Thread safety: any thread.
 */
FL_API int fl_monitor_attach(const char *socket_path, const struct fl_monitor_region *regions,
			     size_t n, const struct fl_monitor_opts *opts,
			     struct fl_monitor_client **ret);

enum fl_monitor_detach_flags {
	/* Unregister without poisoning: absent pages become ordinary memory (zeros). */
	FL_MONITOR_DETACH_KEEP = 1u << 0,
};

/*
 * fl_monitor_detach - stop being served, and free the client. Stops the
 * watcher; unless FL_MONITOR_DETACH_KEEP, poisons every absent page (as
 * FAIL_LOUD does, but without logging an error); unregisters the regions;
 * sends BYE (the monitor stops serving) and closes the connection and the
 * userfaultfd. Pages that are present keep their data.
 * In a fork()ed child the client is the child's own (see fl_monitor_attach())
 * and is detached like any other; with FL_MONITOR_DONTFORK it only closes
 * the child's copies of the descriptors and frees the memory: the regions
 * belong to the parent. Accepts NULL.
 * Thread safety: no other call on @c may run, nor start.
 */
FL_API void fl_monitor_detach(struct fl_monitor_client *c, uint32_t flags);

/*
 * fl_monitor_client_uffd - the client's userfaultfd (borrowed; closed by
 * fl_monitor_detach()). Do not read from it while a monitor serves it.
 * Thread safety: any thread.
 */
FL_API struct fl_uffd *fl_monitor_client_uffd(struct fl_monitor_client *c);

/*
 * fl_monitor_client_state - the current enum fl_monitor_state, or -EINVAL
 * for NULL, -ECHILD in a child forked from a FL_MONITOR_DONTFORK client.
 * Thread safety: any thread.
 */
FL_API int fl_monitor_client_state(const struct fl_monitor_client *c);

/*
 * fl_monitor_client_fd - with FL_MONITOR_NO_WATCHER: the descriptor to poll
 * for POLLIN | POLLRDHUP before calling fl_monitor_client_check(). It is the
 * connection while ATTACHED (it changes on re-attach), and -ENOTCONN
 * otherwise, except in BLOCKED, where it is the userfaultfd (events must
 * still be drained). -EINVAL for NULL, -ECHILD in a child.
 * Thread safety: any thread.
 */
FL_API int fl_monitor_client_fd(const struct fl_monitor_client *c);

/*
 * fl_monitor_client_check - without a watcher thread: read what the
 * monitor sent, notice a hang-up and apply the policy, or (WAITING with
 * automatic re-attach, or past wait_max_ms) act on the time that passed.
 * Never blocks, except for a re-attach attempt (up to ack_timeout_ms).
 * With a watcher thread it only reports the state.
 * Returns the enum fl_monitor_state (> 0), or -EINVAL, -ECHILD.
 * Thread safety: one caller at a time, not concurrently with reattach.
 */
FL_API int fl_monitor_client_check(struct fl_monitor_client *c);

/*
 * fl_monitor_client_reattach - hand the same userfaultfd to a (restarted)
 * monitor on @socket_path (NULL: the one attached before; a new path is
 * remembered for automatic retries). Sends a HELLO with
 * FL_MONITOR_HELLO_REATTACH, the current layout (regions moved, split or
 * discarded by events the old monitor reported) and the same session id,
 * waits for the answer, then wakes every region so that threads whose
 * faults the old monitor had read but not resolved fault again.
 * Returns 0, -EISCONN (a monitor is attached), -ENOTRECOVERABLE (FAILED or
 * BLOCKED, or the layout could not be tracked), or the errors of
 * fl_monitor_attach()'s handshake.
 * Thread safety: any thread; serialised with the watcher.
 */
FL_API int fl_monitor_client_reattach(struct fl_monitor_client *c, const char *socket_path);

/* "attached", "waiting", "failed", "blocked"; NULL otherwise. Thread safety: any thread. */
FL_API const char *fl_monitor_state_name(int state);

/* ---------------------------------------------------------------- server */

/*
 * The monitor itself: listens on a unix socket, and serves every client that
 * attaches (fl_monitor_attach(), or Firecracker's page-fault handler
 * handshake) on a pager of its own (THREADS mode, the client's userfaultfd
 * borrowed), until the client detaches (BYE), hangs up, or exits. It
 * follows the client's mremap, MADV_DONTNEED, munmap and fork: a fork()ed
 * child's userfaultfd gets a pager and the parent's regions of the moment
 * of the fork, and is served until the child exits. doc/monitor-protocol.md
 * says what it checks and what it guarantees across its own restart.
 */
struct fl_monitor_server;

enum fl_monitor_server_flags {
	FL_MONITOR_SERVER_ANY_UID = 1u << 0,	/* serve every uid, not just ours and allowed */
	FL_MONITOR_SERVER_NO_FILES = 1u << 1,	/* refuse FILE regions (EPERM) */
	FL_MONITOR_SERVER_SOCKET_GROUP = 1u << 2,	/* socket_gid is set */
};

/* A log line of the server (no trailing newline). */
typedef void (*fl_monitor_log_fn)(enum fl_log_level level, const char *msg, void *userdata);
/* The server's counters changed (see fl_monitor_server_stats()). */
typedef void (*fl_monitor_change_fn)(struct fl_monitor_server *s, void *userdata);

struct fl_monitor_server_opts {
	size_t sz;			/* sizeof(struct fl_monitor_server_opts) */
	/*
	 * Where to listen: a file system path (a stale socket file of a dead
	 * monitor there is replaced; a live one is -EADDRINUSE) or "@name"
	 * (abstract namespace). NULL: listen_fd is a bound, listening unix
	 * stream socket (socket activation), borrowed.
	 */
	const char *socket_path;
	int listen_fd;
	uint32_t flags;			/* FL_MONITOR_SERVER_* */
	const uint32_t *allowed_uids;	/* uids served besides the monitor's own (copied) */
	size_t n_allowed_uids;
	/*
	 * FILE regions: their absolute paths must lie beneath this directory,
	 * and are opened from it with openat2(RESOLVE_BENEATH |
	 * RESOLVE_NO_MAGICLINKS). NULL: opened anywhere, without magic links.
	 * Either way a client of another uid than the monitor's gets only files
	 * it may read itself (opened with its file system uid, gid and groups).
	 */
	const char *store_root;
	/*
	 * Firecracker: also take Firecracker's handshake (a JSON region list
	 * and its userfaultfd) and serve its regions from this file, each from
	 * its "offset". NULL: JSON handshakes are refused.
	 */
	const char *firecracker_mem_file;
	unsigned int threads;		/* handler threads per userfaultfd served; 0: 1 */
	unsigned int max_clients;	/* userfaultfds served at once (children too); 0: 1024 */
	unsigned int handshake_ms;	/* a HELLO must be complete within this; 0: 5000 */
	unsigned int probe_ms;		/* look for exited processes this often; 0: 1000 */
	enum fl_prefetch prefetch;	/* of every region (fl_region_opts); default NONE */
	fl_monitor_log_fn log_fn;	/* NULL: the library's log callback (fl_set_log_fn) */
	fl_monitor_change_fn on_change;	/* may be NULL */
	void *userdata;			/* for log_fn and on_change; never touched by the library */
	/*
	 * The socket file (socket_path, not "@name"): its permission bits
	 * (07777 at most), and its group with FL_MONITOR_SERVER_SOCKET_GROUP,
	 * both set before it listens. Connecting needs write permission on it:
	 * other uids served need one of these (e.g. 0660 and their group).
	 * 0: the mode bind() leaves (0777 less the umask), our group.
	 */
	uint32_t socket_mode;
	uint32_t socket_gid;
	/*
	 * Firecracker (0.3), instead of firecracker_mem_file: the guest memory
	 * from this snapshot file (doc/snapshot-format.md), or from the chain
	 * it ends (its parents found by id in its directory). The snapshot's
	 * regions, in order and laid end to end, stand for the memory file:
	 * each guest region's "offset" falls in one of them and must not run
	 * past its end. A snapshot made by `faultline snapshot convert` from
	 * the memory file has one region covering it, so a guest region's
	 * offset is the offset in that snapshot region.
	 */
	const char *firecracker_snapshot;
	/*
	 * Firecracker (0.3): record each guest region's working set (the
	 * order of its pages' first faults, fl_region_ws_save(3)) and write it
	 * when the VM hangs up, when the server is destroyed, or on
	 * fl_monitor_server_ws_save(). The guest regions are numbered by their
	 * offset, lowest first: region 0's working set goes to this path,
	 * region N's (N >= 1) to this path with ".N" appended.
	 */
	const char *firecracker_ws_record;
	/*
	 * Firecracker (0.3): replay these working sets (the same naming) into
	 * every VM restored: each region prefetches the pages its file lists,
	 * in order, from a thread of its own, while faults go first. A region
	 * whose file is missing, or was recorded for another length or page
	 * size, is served without replay (logged).
	 */
	const char *firecracker_ws_replay;
};

struct fl_monitor_server_stats {
	size_t sz;		/* the caller sets sizeof(struct fl_monitor_server_stats); on
				   return, the bytes the library filled */
	uint64_t clients;	/* userfaultfds served now: clients and their fork()ed children */
	uint64_t children;	/* of those, fork()ed children */
	uint64_t connections;	/* connections open now, handshakes in progress included */
	uint64_t attached;	/* handshakes accepted so far (re-attaches included) */
	uint64_t reattached;	/* of those, re-attaches */
	uint64_t firecracker;	/* of those, Firecracker's */
	uint64_t refused;	/* connections refused so far (each logged with its reason) */
	uint64_t forks;		/* fork events whose child was served */
	uint64_t events;	/* remap, remove and unmap events applied */
	uint64_t ended;		/* userfaultfds released so far (BYE, hang-up, exit) */
	/* 0.3. Summed over the userfaultfds released so far, as each ends: */
	uint64_t faults;	/* faults their pagers saw */
	uint64_t ws_prefetched;	/* pages the working-set replay installed ahead of a fault */
	uint64_t ws_saved;	/* working-set files written (Firecracker, record) */
	uint64_t reserved[3];
};

/*
 * fl_monitor_server_create - listen, ready to serve. Opens the Firecracker
 * memory file and the store root now, so that a mistake shows here.
 * Returns 0, -EINVAL (bad options), -EADDRINUSE (a live monitor listens
 * on socket_path), -ENAMETOOLONG, -ENOMEM, or the -errno of socket(2),
 * bind(2), listen(2) or of opening a file.
 * Thread safety: any thread.
 */
FL_API int fl_monitor_server_create(const struct fl_monitor_server_opts *opts,
				    struct fl_monitor_server **ret);

/*
 * fl_monitor_server_run - accept and serve until fl_monitor_server_stop().
 * Handshakes run on short-lived threads, faults on each client's handler
 * threads (named fl-handler/N); this thread accepts, answers, creates and
 * frees the pagers, and watches the connections. Clients stay served when
 * it returns, until fl_monitor_server_destroy(); a later call continues.
 * Returns 0 once stopped, or -errno if it cannot go on (epoll failed).
 * Thread safety: one caller at a time.
 */
FL_API int fl_monitor_server_run(struct fl_monitor_server *s);

/*
 * fl_monitor_server_stop - make fl_monitor_server_run() return (now, or at
 * once when called before it). Returns 0, or -EINVAL for NULL.
 * Thread safety: any thread, and async-signal-safe (for SIGTERM handlers).
 */
FL_API int fl_monitor_server_stop(struct fl_monitor_server *s);

/*
 * fl_monitor_server_destroy - stop serving everyone and free. Clients are
 * not harmed: their regions stay registered, and each sees the connection
 * close and applies its policy (a restarted monitor on the same socket
 * takes WAIT_REATTACH clients back). The socket file is removed if this
 * server created it. Accepts NULL.
 * Thread safety: not while fl_monitor_server_run() runs.
 */
FL_API void fl_monitor_server_destroy(struct fl_monitor_server *s);

/*
 * fl_monitor_server_ws_save - with firecracker_ws_record, have the server's
 * loop write the working sets recorded so far of every Firecracker VM
 * served now (as it does when a VM hangs up); the write happens after this
 * returns (ws_saved counts the files). Returns 0, or -EINVAL (NULL, or no
 * firecracker_ws_record). Thread safety: any thread, and async-signal-safe
 * (for a SIGUSR1 handler).
 */
FL_API int fl_monitor_server_ws_save(struct fl_monitor_server *s);

/* A snapshot of the counters. Returns 0 or -EINVAL. Thread safety: any thread. */
FL_API int fl_monitor_server_stats(const struct fl_monitor_server *s,
				   struct fl_monitor_server_stats *ret);

#ifdef __cplusplus
}
#endif

#endif /* FAULTLINE_MONITOR_H */
