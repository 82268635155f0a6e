/* SPDX-License-Identifier: MIT */
/* Internal declarations of the monitor server: sessions, served userfaultfds, file opening. */
#ifndef FL_MONITOR_SERVER_INT_H
#define FL_MONITOR_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "faultline.h"
#include "monitor-int.h"

/*
 * Who lives where (server.c has the loop):
 *
 * - The thread in fl_monitor_server_run() (the "loop") accepts, owns every
 *   connection and every served userfaultfd, and is the only one that
 *   creates, starts and destroys pagers. It checks a new peer's uid at
 *   once (a refused one gets its ERROR without a wait) and reads each
 *   first message (HELLO, CLAIM or Firecracker's JSON) as its bytes come,
 *   by a deadline: a silent peer holds a descriptor, never a thread.
 * - A check thread per complete HELLO (at most MAX_CHECKS at once, the
 *   others wait their turn) checks the descriptor and opens the stores,
 *   which may block on a slow file system, then hands the result to the
 *   loop (a work item).
 * - Each served userfaultfd has a pager whose handler threads resolve its
 *   faults and call srv_events() with the events they read: that keeps the
 *   layout, sends EVENT messages, follows moves the pager cannot, and hands
 *   fork()ed children's descriptors to the loop (another work item).
 */

#define SRV_ERRLEN 256

/* A store of a session, made once at the handshake and shared with fork()ed children. */
struct srv_store {
	uint32_t kind;			/* FL_MONITOR_STORE_FILE, _PATTERN, _ZERO */
	uint64_t seed;			/* PATTERN */
	const char *path;		/* FILE: points into the session's HELLO */
	struct fl_store *s;
};

/* A piece of Firecracker's memory: [start, start+len) of its offsets, from a store. */
struct srv_fc_part {
	struct fl_store *s;
	uint64_t start, len;
	size_t page_size;		/* a guest region's pages must be at least this */
};

/* A region that records its working set, and its number for the file name. */
struct srv_ws {
	struct fl_region *r;
	unsigned int rank;
};

/* What one handshake established: regions, stores. Shared by a client and its children. */
struct srv_session {
	_Atomic int refs;
	uint64_t id;			/* the client's session id (0 for Firecracker) */
	uint32_t attach_seq;
	pid_t pid;			/* SO_PEERCRED */
	uid_t uid;
	bool firecracker;
	uint64_t features;		/* what the userfaultfd was opened with */
	uint64_t beacon;		/* HELLO_CHILDREN: where children find their claim */
	struct fl__mon_hello h;		/* the regions, sorted; FILE paths point into buf */
	void *buf;
	struct srv_store *stores;
	size_t nstores;
};

/* Who is at the other end of a connection. */
struct srv_peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	gid_t *groups;			/* supplementary groups (SO_PEERGROUPS), malloc'ed */
	int ngroups;
};

struct srv_uffd;

/* Where a connection is. */
enum srv_conn_state {
	C_HANDSHAKE,			/* reading its first message, by a deadline */
	C_REFUSING,			/* refused: its ERROR is out, reading what it still sends */
	C_CHECKING,			/* a check thread has its HELLO */
	C_SERVING,			/* its handshake was accepted */
	C_CLOSED,			/* closed; freed after the events of this round */
};

/* One accepted connection. Owned by the loop. */
struct srv_conn {
	struct fl_monitor_server *srv;
	int fd;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	enum srv_conn_state state;
	bool watched;			/* in the epoll set */
	bool queued;			/* in the queue of its state */
	bool firecracker;
	uint64_t deadline;		/* C_HANDSHAKE, C_REFUSING */
	struct fl__mon_first first;	/* C_HANDSHAKE */
	struct srv_peer peer;		/* its groups owned, until a check takes them */
	struct srv_conn *q_next, *q_prev;	/* in the queue of its state, by deadline */
	struct srv_uffd *main;		/* the userfaultfd it attached, until that ends */
	uint8_t in[FL_MONITOR_HDR_LEN];	/* a BYE, in pieces */
	size_t in_len;
	struct srv_conn *next, *prev;
};

/* One served userfaultfd: a client's, or a fork()ed child's. Owned by the loop. */
struct srv_uffd {
	struct fl_monitor_server *srv;
	struct srv_session *sess;	/* counted reference */
	struct srv_conn *conn;		/* the loop's; NULL for children, or once it went */
	char name[64];			/* "pid 123", "child 2 of pid 123": for the log */
	bool child;
	/* Shared with the event callback. */
	pthread_mutex_t lock;
	int sock;			/* where EVENT messages go; -1: nowhere */
	bool acked;			/* the ACK is out: events go straight to sock */
	struct fl__mon_event *pending;	/* events read before the ACK went out */
	size_t npending, cappending;
	/* Touched by the loop before the pager starts, then only by the event callback. */
	struct fl__mon_table t;		/* the layout, as the events left it */
	bool layout_lost;
	struct fl_region **rg;		/* the pager's regions */
	size_t nrg, caprg;
	/* Firecracker regions recording their working set; ws_lock guards it against the loop. */
	pthread_mutex_t ws_lock;
	struct srv_ws *ws;
	size_t nws;
	unsigned int nchildren;		/* forks seen, to name children */
	/* A fork()ed child's claim (its beacon): 0 when it cannot claim. */
	uint64_t child_session, token;
	bool claimed;			/* it holds a copy of its descriptor: conn is its own */
	uint64_t exited_ms;		/* when a probe first found its process gone; 0: not */
	struct fl_uffd *u;
	struct fl_pager *p;
	struct srv_uffd *next, *prev;
};

/* Work for the loop, from check threads and event callbacks. */
enum srv_work_type {
	W_HELLO = 1,	/* a HELLO was checked */
	W_FORK = 2,	/* a served process forked */
};

struct srv_work {
	enum srv_work_type type;
	struct srv_work *next;
	int fd;				/* the userfaultfd (owned), or -1 */
	struct srv_session *sess;	/* counted reference, or NULL */
	/* W_HELLO */
	struct fl_monitor_server *srv;
	struct srv_conn *conn;		/* the loop's: the check thread never touches it */
	struct srv_peer peer;		/* its groups owned */
	struct fl__mon_hello h;		/* until the session takes it, with buf */
	void *buf;
	int err;			/* 0, or why the handshake is refused */
	bool json;			/* a Firecracker handshake: refusals get no answer */
	char msg[SRV_ERRLEN];
	/* W_FORK */
	struct fl__mon_table t;		/* the parent's layout at the fork (owned) */
	bool layout_lost;
	char parent[64];
	unsigned int nth;
};

enum srv_stat {
	S_CLIENTS,
	S_CHILDREN,
	S_CONNECTIONS,
	S_ATTACHED,
	S_REATTACHED,
	S_FIRECRACKER,
	S_REFUSED,
	S_FORKS,
	S_EVENTS,
	S_ENDED,
	S_FAULTS,
	S_WS_PREFETCHED,
	S_WS_SAVED,
	S_COUNT,
};

struct fl_monitor_server {
	struct fl_monitor_server_opts o;
	uid_t euid;
	uint32_t *uids;
	size_t nuids;
	char *socket_path;		/* copy; the file is ours to remove if own_file */
	bool own_file;
	int listen_fd;
	bool own_listen;
	char *root;			/* store root, without trailing slashes */
	int root_fd;
	/* Firecracker's memory: the memory file (one part), or a snapshot's regions end to end. */
	struct srv_fc_part *fc;
	size_t nfc;
	bool fc_snapshot;		/* the parts are a snapshot's regions */
	char *fc_record, *fc_replay;	/* working-set paths (copies), or NULL */
	int epfd, stop_efd, work_efd, timer_fd, ws_efd;
	bool listening;			/* the listening socket is in the epoll set */
	bool accept_failed;		/* out of descriptors: accept again when one closes */
	bool changed;			/* counters changed: call on_change */

	pthread_mutex_t lock;		/* the work queue and the check count */
	pthread_cond_t checks_done;
	struct srv_work *work, *work_tail;
	unsigned int checks;		/* check threads running */

	/* The loop's. */
	struct srv_conn *conns;
	struct srv_conn *closed;	/* freed after the events of this round */
	struct srv_conn *hs_head, *hs_tail;	/* C_HANDSHAKE, oldest first */
	struct srv_conn *rf_head, *rf_tail;	/* C_REFUSING, oldest first */
	unsigned int pending;		/* in either queue */
	struct srv_work *waiting, *waiting_tail;	/* HELLOs waiting for a check thread */
	struct srv_uffd *served;	/* the loop's */
	_Atomic uint64_t st[S_COUNT];
};

/* server.c */
void fl__srv_log(struct fl_monitor_server *s, enum fl_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void fl__srv_post(struct fl_monitor_server *s, struct srv_work *w);
void fl__srv_stat(struct fl_monitor_server *s, enum srv_stat st, int64_t d);

/* session.c: handshake checks, stores and the safe opening of files */
int fl__srv_peer_get(struct fl_monitor_server *s, int sock, struct srv_peer *ret, char *err,
		     size_t errlen);
/* Build the session of a decoded handshake: check it against the server, open its stores. */
int fl__srv_session_open(struct fl_monitor_server *s, const struct srv_peer *peer,
			 struct fl__mon_hello *h, void *buf, struct srv_session **ret, char *err,
			 size_t errlen);
void fl__srv_session_put(struct srv_session *sess);
struct fl_store *fl__srv_store_for(struct fl_monitor_server *s, struct srv_session *sess,
				   const struct fl__mon_region *r);
/* The part of Firecracker's memory that holds all of [off, off+len), or NULL. */
const struct srv_fc_part *fl__srv_fc_part(const struct fl_monitor_server *s, uint64_t off,
					  uint64_t len);

/* served.c: a pager for one userfaultfd */
/*
 * Serve @fd (borrowed until fl__srv_uffd_free(), which closes it) with the
 * regions of @t (taken on success), sending EVENT messages to @sock (-1:
 * none) once fl__srv_uffd_ack() went out. On failure the caller keeps @fd,
 * @t and its reference to @sess.
 */
int fl__srv_uffd_new(struct fl_monitor_server *s, struct srv_session *sess, int fd, int sock,
		     struct fl__mon_table *t, bool child, const char *name, struct srv_uffd **ret,
		     char *err, size_t errlen);
/* Stop serving and free; @poison: a child's absent pages fail loudly (nobody else serves it). */
void fl__srv_uffd_free(struct srv_uffd *su, bool poison);
/* Send the ACK and whatever events came before it. Returns 0 or -errno. */
int fl__srv_uffd_ack(struct srv_uffd *su);
/*
 * A claimed child: send the GRANT (its descriptor and its layout) on
 * @sock, which from then on gets its EVENT messages. Returns 0 or -errno.
 */
int fl__srv_uffd_grant(struct srv_uffd *su, int sock);
/* Stop sending EVENT messages (the connection is about to close). */
void fl__srv_uffd_unlink_conn(struct srv_uffd *su);
/* -ESRCH if the process behind the userfaultfd exited, else 0. */
int fl__srv_uffd_alive(struct srv_uffd *su);
/* Write the working sets @su records (firecracker_ws_record). Returns files written. */
unsigned int fl__srv_uffd_ws_save(struct srv_uffd *su);
/* A child that cannot be served: poison what the layout says is not present, then close. */
void fl__srv_refuse_child(struct fl_monitor_server *s, int fd, uint64_t features,
			  const struct fl__mon_table *t);

#endif /* FL_MONITOR_SERVER_INT_H */
