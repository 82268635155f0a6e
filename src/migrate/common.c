/* SPDX-License-Identifier: MIT */
/* What both sides of a migration share: meeting the peer, the handshake, bitmaps, names. */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faultline.h"
#include "migrate-int.h"

#define STR2(x) #x
#define STR(x) STR2(x)
#define AGENT "faultline " STR(FL_VERSION_MAJOR) "." STR(FL_VERSION_MINOR) "." STR(FL_VERSION_PATCH)

FL_API const char *fl_migrate_phase_name(enum fl_migrate_phase phase)
{
	static const char *const names[] = {
		[FL_MIGRATE_CONNECTING] = "connecting",
		[FL_MIGRATE_PRECOPY] = "precopy",
		[FL_MIGRATE_SWITCHOVER] = "switchover",
		[FL_MIGRATE_POSTCOPY] = "postcopy",
		[FL_MIGRATE_PAUSED] = "paused",
		[FL_MIGRATE_DONE] = "done",
		[FL_MIGRATE_FAILED] = "failed",
	};

	if ((unsigned int)phase >= sizeof(names) / sizeof(names[0]))
		return NULL;
	return names[phase];
}

unsigned int fl__mig_page_shift(void)
{
	return (unsigned int)__builtin_ctzll(fl__page_size());
}

void fl__mig_name_thread(const char *name)
{
	prctl(PR_SET_NAME, name, 0, 0, 0);
}

/* struct sched_attr of sched_setattr(2), which glibc does not wrap. */
struct mig_sched_attr {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime;
	uint64_t sched_deadline;
	uint64_t sched_period;
};

void fl__mig_urgent_thread(void)
{
	/*
	 * A short scheduler slice (EEVDF, Linux 6.12: sched_runtime of a normal
	 * thread) gives this thread an early deadline, so that when it wakes for
	 * a page it preempts a busy background thread instead of waiting out a
	 * whole slice. No privilege is needed; older kernels refuse, and then
	 * the thread keeps the default.
	 */
	struct mig_sched_attr a = {
		.size = sizeof(a),
		.sched_policy = 0,	/* SCHED_OTHER */
		.sched_nice = getpriority(PRIO_PROCESS, (id_t)gettid()),
		.sched_runtime = MIG_URGENT_SLICE_NS,
	};

	syscall(SYS_sched_setattr, 0, &a, 0);
}

unsigned int fl__mig_region_of(const struct fl__mig_region *r, unsigned int n, uint64_t pg)
{
	unsigned int lo = 0, hi = n;

	while (hi - lo > 1) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (r[mid].first <= pg)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* ---------------------------------------------------------------- link */

/* The transport for @tls on a side that listens (TLS server) or connects (client). */
static int make_transport(struct fl__mig_link *l, uint32_t flags, const struct fl__mig_tls *tls,
			  char *msg, size_t cap)
{
	bool certs = tls->ca_file || tls->cert_file || tls->key_file || tls->peer_name;
	struct fl__transport_opts o = { 0 };

	if (tls->key_len && certs) {
		snprintf(msg, cap, "a shared key or certificates, not both");
		return -EINVAL;
	}
	if ((flags & FL_MIGRATE_VERIFY_PEER) && !certs) {
		snprintf(msg, cap, "FL_MIGRATE_VERIFY_PEER needs certificates");
		return -EINVAL;
	}
	if (tls->key_len) {
		o.mode = FL__TRANSPORT_PSK;
		o.psk = tls->key;
		o.psk_len = tls->key_len;
	} else if (certs) {
		o.mode = FL__TRANSPORT_X509;
		o.ca_file = tls->ca_file;
		o.cert_file = tls->cert_file;
		o.key_file = tls->key_file;
		if (l->listen) {
			if (!tls->cert_file || !tls->key_file) {
				snprintf(msg, cap, "a listening side shows a certificate: give "
					 "tls_cert_file and tls_key_file");
				return -EINVAL;
			}
			o.verify_client = flags & FL_MIGRATE_VERIFY_PEER;
			if (o.verify_client && !tls->ca_file) {
				snprintf(msg, cap, "verifying the connecting side "
					 "(FL_MIGRATE_VERIFY_PEER) needs tls_ca_file");
				return -EINVAL;
			}
		} else if (!tls->ca_file) {
			snprintf(msg, cap, "a connecting side checks the listener's certificate: "
				 "give tls_ca_file");
			return -EINVAL;
		}
		if (tls->peer_name && !(l->peer_name = strdup(tls->peer_name)))
			return -ENOMEM;
	} else if (flags & FL_MIGRATE_INSECURE) {
		o.mode = FL__TRANSPORT_PLAIN;
	} else {
		snprintf(msg, cap, "no shared key and no certificates: the connections would be "
			 "plain TCP, which anyone on the path can read and change; give a key or "
			 "certificates, or set FL_MIGRATE_INSECURE");
		return -EINVAL;
	}
	l->tls = o.mode != FL__TRANSPORT_PLAIN;
	return fl__transport_new(&o, &l->tr, msg, cap);
}

int fl__mig_link_init(struct fl__mig_link *l, uint32_t flags, const char *host, uint16_t port,
		      const struct fl__mig_tls *tls, int timeout_ms, int resume_timeout_ms,
		      char *msg, size_t cap)
{
	int r;

	*l = (struct fl__mig_link){
		.listen = flags & FL_MIGRATE_LISTEN,
		.port = port,
		.lfd = -1,
		.stop_efd = -1,
		.timeout_ms = timeout_ms ? timeout_ms : MIG_DEFAULT_TIMEOUT,
		.resume_timeout_ms = resume_timeout_ms ? resume_timeout_ms : MIG_DEFAULT_RESUME,
	};
	if (timeout_ms < 0 || resume_timeout_ms < -1 || (tls->key_len && !tls->key) ||
	    (!l->listen && (!host || !port))) {
		snprintf(msg, cap, "bad connection options (a host and a port are needed to "
			 "connect; timeouts are >= 0)");
		return -EINVAL;
	}
	r = make_transport(l, flags, tls, msg, cap);
	if (r < 0)
		return r;
	l->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->stop_efd < 0)
		return -errno;
	if (host && !(l->host = strdup(host)))
		return -ENOMEM;
	if (l->listen) {
		r = fl__sock_listen(host, port, NULL, &l->lfd);
		if (r < 0) {
			snprintf(msg, cap, "cannot listen on %s port %u: %s", host ? host : "*",
				 port, strerror(-r));
			return r;
		}
		fl__sock_local_port(l->lfd, &l->port);
	}
	return 0;
}

void fl__mig_link_fini(struct fl__mig_link *l)
{
	l->lfd = fl__safe_close(l->lfd);
	l->stop_efd = fl__safe_close(l->stop_efd);
	free(l->host);
	free(l->peer_name);
	fl__transport_free(l->tr);
	*l = (struct fl__mig_link){ .lfd = -1, .stop_efd = -1 };
}

bool fl__mig_link_stopping(const struct fl__mig_link *l)
{
	struct pollfd p = { .fd = l->stop_efd, .events = POLLIN };

	return poll(&p, 1, 0) > 0;
}

int fl__mig_link_pause(const struct fl__mig_link *l, int ms)
{
	struct pollfd p = { .fd = l->stop_efd, .events = POLLIN };
	int n;

	do
		n = poll(&p, 1, ms);
	while (n < 0 && errno == EINTR);
	return n > 0 ? -ECANCELED : 0;
}

/* Dead peers: keepalive probes on idle connections, and a limit on unacknowledged data. */
static void set_liveness(int fd, int timeout_ms)
{
	int one = 1, idle = timeout_ms / 3000 > 0 ? timeout_ms / 3000 : 1, intvl = 1, cnt = 3;
	unsigned int ut = (unsigned int)timeout_ms;

	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
}

/* "address port" of @fd's peer, for the log. */
static void peer_name(int fd, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char a[INET6_ADDRSTRLEN] = "?";
	unsigned int port = 0;

	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
			port = ntohs(s4->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
			port = ntohs(s6->sin6_port);
		}
	}
	snprintf(buf, cap, "%s port %u", a, port);
}

/*
 * The handshakes on a new connection @fd (taken, closed on failure): TLS
 * (the listening side is the server), then HELLO with a fresh nonce.
 */
static int handshake_on(struct fl__mig_link *l, int fd, struct fl__wire_hello *mine,
			struct fl__mig_conn *c, struct fl__mig_peer *peer, uint64_t *ret_features,
			char *msg, size_t cap)
{
	struct fl__conn *conn;
	uint8_t first = 0;
	int r;

	set_liveness(fd, l->timeout_ms);
	/*
	 * A faultline peer in plain TCP (no key, no certificates) starts with a
	 * HELLO frame, never with a TLS record: tell it why, in its terms.
	 */
	if (l->listen && l->tls && recv(fd, &first, 1, MSG_PEEK | MSG_DONTWAIT) == 1 &&
	    first == 0x89) {
		struct fl__wire_frame e = {
			.type = FL__WIRE_ERROR,
			.version = 1,
			.error = { .code = FL__WIRE_ERR_AUTH, .msg = "this side requires TLS: give "
				   "both sides the same key or certificates" },
		};

		e.error.msg_len = (uint32_t)strlen(e.error.msg);
		fl__sock_send_frame(fd, &e, MIG_ERROR_SEND_MS);
		fl__safe_close(fd);
		snprintf(msg, cap, "the peer speaks plain TCP (no key, no certificates); this "
			 "side requires TLS");
		return -EACCES;
	}
	r = fl__conn_open(l->tr, fd, l->listen ? FL__CONN_SERVER : FL__CONN_CLIENT,
			  l->peer_name ? l->peer_name : l->host, l->timeout_ms, &conn, msg, cap);
	if (r < 0)
		return r;
	r = fl__mig_conn_open(c, conn);
	if (r < 0)
		return r;
	if (getrandom(mine->nonce, sizeof(mine->nonce), 0) != (ssize_t)sizeof(mine->nonce))
		r = -EIO;
	if (!r)
		r = fl__mig_handshake(c, mine, l, peer, ret_features, msg, cap);
	if (r < 0)
		fl__mig_conn_close(c);
	return r;
}

static int copy_peer(struct fl__mig_peer *p, const struct fl__wire_hello *h);

/* A connection that waits for its peer's first bytes; kept in the order they came. */
struct mig_pending {
	int fd;
	bool ready;			/* it has sent something */
	uint64_t since;
	char name[INET6_ADDRSTRLEN + 16];
};

/* Take connection @i out of the set (the others keep their order). */
static struct mig_pending take_pending(struct mig_pending *p, unsigned int *n, unsigned int i)
{
	struct mig_pending t = p[i];

	memmove(&p[i], &p[i + 1], (*n - i - 1) * sizeof(*p));
	--*n;
	return t;
}

static void drop_pending(struct mig_pending *p, unsigned int *n, unsigned int i,
			 const char *side, const char *why)
{
	struct mig_pending t = take_pending(p, n, i);

	if (why)
		fl__warn("migrate: %s: closed the connection from %s: %s", side, t.name, why);
	fl__safe_close(t.fd);
}

/*
 * The handshakes of a connection that spoke, on a thread of their own: a
 * peer that sends half a hello and stalls holds up its own thread for
 * timeout_ms, never the accept loop or the other connections.
 */
struct mig_hs {
	struct fl__mig_link *l;
	pthread_t thread;
	int fd;				/* taken by the thread (handshake_on) */
	int wake;			/* a dup of fd, ours: shutdown() stops the thread */
	int done_efd;			/* the listener's eventfd, written when done */
	_Atomic bool done;
	bool stopped;			/* shut down by take_hs before it ended */
	uint64_t since;
	struct fl__wire_hello mine;	/* a copy (its own nonce) */
	struct fl__mig_conn c;
	struct fl__mig_peer peer;
	uint64_t features;
	int r;
	char name[INET6_ADDRSTRLEN + 16];
	char msg[MIG_ERR_LEN];
};

static void *hs_thread(void *arg)
{
	struct mig_hs *h = arg;
	uint64_t one = 1;

	h->r = handshake_on(h->l, h->fd, &h->mine, &h->c, &h->peer, &h->features, h->msg,
			    sizeof(h->msg));
	atomic_store(&h->done, true);
	/* Cannot fail: the counter stays far below its maximum (16 threads, once each). */
	if (write(h->done_efd, &one, sizeof(one)) < 0)
		fl__warn("migrate: eventfd write: %s", strerror(errno));
	return NULL;
}

/*
 * Take handshake @i out of @hs (the others keep their order), stop it if
 * @stop and it still runs (then h->stopped), and join it.
 */
static struct mig_hs *take_hs(struct mig_hs **hs, unsigned int *n, unsigned int i, bool stop)
{
	struct mig_hs *h = hs[i];

	memmove(&hs[i], &hs[i + 1], (*n - i - 1) * sizeof(*hs));
	--*n;
	h->stopped = stop && !atomic_load(&h->done);
	if (h->stopped)
		shutdown(h->wake, SHUT_RDWR);
	pthread_join(h->thread, NULL);
	fl__safe_close(h->wake);
	return h;
}

static void free_hs(struct mig_hs *h)
{
	if (!h)
		return;
	if (!h->r)
		fl__mig_conn_close(&h->c);
	fl__mig_peer_fini(&h->peer);
	free(h);
}

/* Hand the connection of a successful handshake @h to @c (its reader moves too). */
static void move_conn(struct fl__mig_conn *c, struct fl__mig_conn *from)
{
	*c = *from;
	if (from->have_rd)
		fl__wire_dec_move(&c->rd.dec, &from->rd.dec);
	fl__mig_conn_reset(from);
}

/* Start the handshakes of @t on a thread; -errno if none could start (@t untouched). */
static int start_hs(struct fl__mig_link *l, const struct mig_pending *t,
		    const struct fl__wire_hello *mine, int done_efd, struct mig_hs **ret)
{
	struct mig_hs *h = calloc(1, sizeof(*h));
	int r;

	if (!h)
		return -ENOMEM;
	h->wake = fcntl(t->fd, F_DUPFD_CLOEXEC, 0);
	if (h->wake < 0) {
		r = -errno;
		free(h);
		return r;
	}
	h->l = l;
	h->fd = t->fd;
	h->done_efd = done_efd;
	h->since = fl__now_ns();
	h->mine = *mine;
	fl__mig_conn_reset(&h->c);
	snprintf(h->name, sizeof(h->name), "%s", t->name);
	r = fl__thread_start(&h->thread, NULL, hs_thread, h, "fl-mig-hello");
	if (r < 0) {
		fl__safe_close(h->wake);
		free(h);
		return r;
	}
	*ret = h;
	return 0;
}

/*
 * The outcome of handshake @h, which ended by itself (taken, joined): <= 0
 * when it is the session's (its connection, peer and nonce are the
 * caller's now; 0 or the session's error), 1 when the connection was
 * refused (logged; @last says which and why). @h is freed either way.
 */
static int finish_hs(struct mig_hs *h, const char *side, char *last, size_t lcap,
		     struct fl__wire_hello *mine, struct fl__mig_conn *c, struct fl__mig_peer *peer,
		     uint64_t *ret_features, char *msg, size_t cap)
{
	int r = h->r;

	snprintf(last, lcap, "%s", h->name);
	snprintf(msg, cap, "%s", h->msg);
	if (!r || r == -EAGAIN || r == -ENOMEM || r == -EIO) {
		/* The session: this connection, this peer, this nonce. */
		if (!r)
			move_conn(c, &h->c);
		if (h->peer.hello.agent && copy_peer(peer, &h->peer.hello) < 0 && !r) {
			fl__mig_conn_close(c);
			r = -ENOMEM;
		}
		*ret_features = h->features;
		memcpy(mine->nonce, h->mine.nonce, sizeof(mine->nonce));
		h->r = -1;	/* its connection is c's now */
		free_hs(h);
		return r;
	}
	fl__warn("migrate: %s: refused the connection from %s: %s", side, last, h->msg);
	snprintf(last + strlen(last), lcap - strlen(last), ": %.200s", h->msg);
	free_hs(h);
	return 1;
}

/*
 * The listening side. Every connection that comes is accepted at once and
 * waits in a small set until it sends something; then its handshakes run on
 * a thread of their own, beside the accept loop. A connection that fails
 * its handshake (garbage, a wrong key, no key, a replayed HELLO, another
 * session), stalls in it, or stays silent for timeout_ms is closed and
 * logged, and the wait goes on: a stranger can neither end the migration
 * nor hold the port, nor delay the peer by sending half a hello.
 */
static int listen_handshake(struct fl__mig_link *l, const char *side, const char *peer_role,
			    bool urgent, int timeout_ms, struct fl__wire_hello *mine,
			    struct fl__mig_conn *c, struct fl__mig_peer *peer,
			    uint64_t *ret_features, char *msg, size_t cap)
{
	struct fl__sock_opts o = { .flags = FL__SOCK_NODELAY };
	uint64_t start = fl__now_ns(), deadline = start + (uint64_t)timeout_ms * 1000000ull;
	uint64_t silent = (uint64_t)l->timeout_ms * 1000000ull;
	struct mig_pending p[MIG_PENDING];
	struct mig_hs *hs[MIG_PENDING];
	char last[MIG_ERR_LEN] = "";
	unsigned int np = 0, nh = 0, refused = 0;
	bool spoke;
	int r, efd;

	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		r = -errno;
		snprintf(msg, cap, "eventfd: %s", strerror(-r));
		return r;
	}
	for (;;) {
		struct pollfd pf[3 + MIG_PENDING];
		uint64_t now = fl__now_ns(), until = deadline;
		int n;

		/* The oldest first: they came in order. */
		while (np && now - p[0].since >= silent) {
			refused++;
			snprintf(last, sizeof(last), "%s sent nothing for %d ms", p[0].name,
				 l->timeout_ms);
			drop_pending(p, &np, 0, side, "it sent nothing");
		}
		if (now >= deadline) {
			snprintf(msg, cap, "no %s connection from the %s came to port %u within %d "
				 "ms%s%s", urgent ? "urgent" : "main", peer_role, l->port,
				 timeout_ms, refused ? "; refused connections, the last: " : "",
				 refused ? last : "");
			r = -ETIMEDOUT;
			break;
		}
		for (unsigned int i = 0; i < np; i++)
			if (p[i].since + silent < until)
				until = p[i].since + silent;
		pf[0] = (struct pollfd){ .fd = l->lfd, .events = POLLIN };
		pf[1] = (struct pollfd){ .fd = l->stop_efd, .events = POLLIN };
		pf[2] = (struct pollfd){ .fd = efd, .events = POLLIN };
		for (unsigned int i = 0; i < np; i++)
			pf[3 + i] = (struct pollfd){ .fd = p[i].fd, .events = POLLIN };
		n = poll(pf, 3 + np, (int)((until - now) / 1000000 + 1));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(msg, cap, "poll: %s", strerror(-r));
			break;
		}
		if (pf[1].revents) {
			r = -ECANCELED;
			break;
		}
		/* Handshakes that ended, in the order they began. */
		if (pf[2].revents) {
			uint64_t v;

			if (read(efd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
				r = -errno;
				snprintf(msg, cap, "eventfd: %s", strerror(-r));
				break;
			}
		}
		r = 1;
		for (unsigned int i = 0; i < nh;) {
			if (!atomic_load(&hs[i]->done)) {
				i++;
				continue;
			}
			r = finish_hs(take_hs(hs, &nh, i, false), side, last, sizeof(last), mine, c,
				      peer, ret_features, msg, cap);
			if (r <= 0)
				goto out;
			refused++;
		}
		/* The connections that spoke, in the order they came: to a thread each. */
		spoke = false;
		for (unsigned int i = 0; i < np; i++)
			p[i].ready = pf[3 + i].revents != 0;
		for (unsigned int i = 0; i < np;) {
			struct mig_pending t;
			struct mig_hs *h;

			if (!p[i].ready) {
				i++;
				continue;
			}
			spoke = true;
			if (nh == MIG_PENDING) {
				/*
				 * Full: the handshake under way longest makes room.
				 * One that has ended is read first (next round: its
				 * eventfd write wakes the poll at once), so that a
				 * flood cannot push out a peer that got through.
				 */
				bool ended = false;

				for (unsigned int k = 0; k < nh; k++)
					ended |= atomic_load(&hs[k]->done);
				if (ended)
					break;
				h = take_hs(hs, &nh, 0, true);
				if (!h->stopped) {
					/* It ended just now, by itself: its result counts. */
					r = finish_hs(h, side, last, sizeof(last), mine, c, peer,
						      ret_features, msg, cap);
					if (r <= 0)
						goto out;
					refused++;
					continue;
				}
				refused++;
				snprintf(last, sizeof(last), "%s was the oldest of %d handshakes under "
					 "way", h->name, MIG_PENDING);
				fl__warn("migrate: %s: closed the connection from %s: too many "
					 "handshakes under way; this was the oldest", side, h->name);
				free_hs(h);
			}
			t = take_pending(p, &np, i);
			r = start_hs(l, &t, mine, efd, &hs[nh]);
			if (!r) {
				nh++;
				continue;
			}
			/* No thread (out of memory or threads): this one closed; the next may do better. */
			refused++;
			snprintf(last, sizeof(last), "%s: no thread for its handshake: %s", t.name,
				 strerror(-r));
			fl__warn("migrate: %s: closed the connection from %s: no thread for its "
				 "handshake: %s", side, t.name, strerror(-r));
			fl__safe_close(t.fd);
		}
		if (!pf[0].revents)
			continue;
		for (;;) {
			int fd;

			/*
			 * Full: one silent connection makes room per round, and
			 * only in a round where none spoke, so that a flood of
			 * silent ones cannot push out the peer before it is read.
			 */
			if (np == MIG_PENDING && spoke)
				break;
			r = fl__sock_accept(l->lfd, &o, 0, &fd);
			if (r == -EAGAIN)
				break;
			if (r < 0) {
				/* Out of descriptors or memory: the next round may do better. */
				fl__warn("migrate: %s: accept: %s", side, strerror(-r));
				if (fl__mig_link_pause(l, 10) < 0) {
					r = -ECANCELED;
					goto out;
				}
				break;
			}
			if (np == MIG_PENDING) {
				spoke = true;
				refused++;
				snprintf(last, sizeof(last), "%s was the oldest of %d silent "
					 "connections", p[0].name, MIG_PENDING);
				drop_pending(p, &np, 0, side, "too many connections that sent "
					     "nothing yet; this was the oldest");
			}
			p[np] = (struct mig_pending){ .fd = fd, .since = fl__now_ns() };
			peer_name(fd, p[np].name, sizeof(p[np].name));
			np++;
		}
	}
out:
	/* Handshakes still under way are stopped: their threads end at once. */
	while (nh) {
		struct mig_hs *h = take_hs(hs, &nh, 0, true);

		if (!r)
			fl__warn("migrate: %s: closed the connection from %s: the session is "
				 "established", side, h->name);
		free_hs(h);
	}
	while (np)
		drop_pending(p, &np, 0, side, r ? NULL : "the session is established");
	close(efd);
	return r;
}

int fl__mig_link_handshake(struct fl__mig_link *l, const char *side, bool urgent,
			   int timeout_ms, struct fl__wire_hello *mine, struct fl__mig_conn *c,
			   struct fl__mig_peer *peer, uint64_t *ret_features, char *msg, size_t cap)
{
	/*
	 * TCP_NODELAY on both: the handshakes and the control frames on the main
	 * connection are small writes that Nagle would hold for a delayed ACK
	 * (40 ms); the page frames are large and unaffected.
	 */
	struct fl__sock_opts o = { .flags = FL__SOCK_NODELAY };
	const char *peer_role = mine->role == FL__WIRE_ROLE_SOURCE ? "destination" : "source";
	int fd = -1, r;

	fl__mig_conn_reset(c);
	if (l->listen)
		return listen_handshake(l, side, peer_role, urgent, timeout_ms, mine, c, peer,
					ret_features, msg, cap);
	r = fl__sock_connect(l->host, l->port, &o, timeout_ms, &fd);
	if (r == -ENXIO) {
		snprintf(msg, cap, "cannot connect to the %s: no host named '%s' is known",
			 peer_role, l->host);
		return r;
	}
	if (r < 0) {
		snprintf(msg, cap, "cannot connect to the %s at %s port %u: %s", peer_role,
			 l->host, l->port, strerror(-r));
		return r;
	}
	return handshake_on(l, fd, mine, c, peer, ret_features, msg, cap);
}

/* ---------------------------------------------------------------- connections */

void fl__mig_conn_reset(struct fl__mig_conn *c)
{
	*c = (struct fl__mig_conn){ .fd = -1 };
}

int fl__mig_conn_open(struct fl__mig_conn *c, struct fl__conn *conn)
{
	int r;

	fl__mig_conn_reset(c);
	r = fl__wire_reader_init_conn(&c->rd, conn, 0);
	if (r < 0) {
		fl__conn_close(conn);	/* ours from the call on, also on failure */
		return r;
	}
	c->have_rd = true;
	c->conn = conn;
	c->fd = fl__conn_fd(conn);
	return 0;
}

void fl__mig_conn_close(struct fl__mig_conn *c)
{
	if (c->have_rd)
		fl__wire_reader_fini(&c->rd);
	fl__conn_close(c->conn);
	fl__mig_conn_reset(c);
}

int fl__mig_send(struct fl__mig_conn *c, struct fl__wire_frame *f, int timeout_ms)
{
	bool own_id = f->type == FL__WIRE_REQUEST || f->type == FL__WIRE_PONG ||
		      (f->type == FL__WIRE_PAGES && (f->flags & FL__WIRE_F_URGENT));

	if (c->fd < 0)
		return -ENOTCONN;
	if (f->type != FL__WIRE_HELLO && f->type != FL__WIRE_ERROR)
		f->version = c->version ? c->version : FL__WIRE_VERSION_MAX;
	if (!own_id)
		f->seq = c->seq;
	c->seq++;
	return fl__conn_send_frame(c->conn, f, timeout_ms);
}

void fl__mig_send_error(struct fl__mig_conn *c, uint32_t code, const char *msg)
{
	char buf[FL__WIRE_MAX_ERROR_MSG + 1];
	size_t n = 0;
	struct fl__wire_frame f = {
		.type = FL__WIRE_ERROR,
		.version = 1,
		.error = { .code = code, .msg = buf },
	};

	if (c->fd < 0)
		return;
	/* The message crosses the wire as printable ASCII only. */
	for (; msg && msg[n] && n < FL__WIRE_MAX_ERROR_MSG; n++)
		buf[n] = msg[n] >= 0x20 && msg[n] <= 0x7e ? msg[n] : '?';
	buf[n] = 0;
	f.error.msg_len = (uint32_t)n;
	f.seq = c->seq++;
	fl__conn_send_frame(c->conn, &f, MIG_ERROR_SEND_MS);
}

void fl__mig_peer_fini(struct fl__mig_peer *p)
{
	free(p->regions);
	memset(p, 0, sizeof(*p));
}

static int copy_peer(struct fl__mig_peer *p, const struct fl__wire_hello *h)
{
	fl__mig_peer_fini(p);
	p->hello = *h;
	if (h->n_regions) {
		p->regions = malloc(h->n_regions * sizeof(*p->regions));
		if (!p->regions)
			return -ENOMEM;
		memcpy(p->regions, h->regions, h->n_regions * sizeof(*p->regions));
	}
	memcpy(p->agent, h->agent, h->agent_len);
	p->agent[h->agent_len] = 0;
	p->hello.regions = p->regions;
	p->hello.agent = p->agent;
	return 0;
}

int fl__mig_unexpected(const struct fl__wire_frame *f, const char *where, char *msg, size_t cap)
{
	char tn[16];

	snprintf(msg, cap, "unexpected %s frame %s", fl__wire_type_name(f->type, tn), where);
	return -EPROTO;
}

/* The next handshake frame: an ERROR from the peer, and EOF, become errors with a sentence. */
static int hs_read(struct fl__mig_conn *c, int timeout_ms, uint8_t want,
		   const struct fl__wire_frame **ret, char *msg, size_t cap)
{
	const struct fl__wire_frame *f;
	char tn[16];
	int r = fl__wire_reader_next(&c->rd, timeout_ms, &f);

	if (r == 0) {
		snprintf(msg, cap, "the peer closed the connection during the handshake");
		return -ECONNRESET;
	}
	if (r < 0) {
		const char *why = fl__wire_reader_error(&c->rd);

		snprintf(msg, cap, "handshake: %s", *why ? why : strerror(-r));
		if (r == -EPROTO || r == -EPROTONOSUPPORT || r == -EBADMSG)
			fl__mig_send_error(c, fl__wire_error_code_from_errno(r), msg);
		return r;
	}
	if (f->type == FL__WIRE_ERROR) {
		snprintf(msg, cap, "the peer refused the connection: %s", f->error.msg);
		return -fl__wire_error_code_to_errno(f->error.code);
	}
	if (f->type != want) {
		snprintf(msg, cap, "handshake: expected %s, got %s",
			 fl__wire_type_name(want, tn), fl__wire_type_name(f->type, tn + 8));
		fl__mig_send_error(c, FL__WIRE_ERR_PROTO, msg);
		return -EPROTO;
	}
	*ret = f;
	return 0;
}

int fl__mig_hello_init(struct fl__wire_hello *h, uint8_t role, const struct fl__mig_link *l,
		       uint32_t flags, const uint8_t session[FL__WIRE_SESSION_LEN],
		       uint8_t version_min, uint8_t version_max)
{
	*h = (struct fl__wire_hello){
		.role = role,
		.version_min = version_min ? version_min : FL__WIRE_VERSION_MIN,
		.version_max = version_max ? version_max : FL__WIRE_VERSION_MAX,
		.page_shift = (uint8_t)fl__mig_page_shift(),
		.flags = flags | (l->tls ? FL__WIRE_HELLO_TLS : 0),
		.features = MIG_FEATURES,
		.agent = AGENT,
		.agent_len = sizeof(AGENT) - 1,
	};
	if (session)
		memcpy(h->session_id, session, FL__WIRE_SESSION_LEN);
	if (getrandom(h->nonce, sizeof(h->nonce), 0) != (ssize_t)sizeof(h->nonce))
		return -EIO;
	return 0;
}

int fl__mig_handshake(struct fl__mig_conn *c, const struct fl__wire_hello *mine,
		      const struct fl__mig_link *l, struct fl__mig_peer *peer,
		      uint64_t *ret_features, char *msg, size_t cap)
{
	const uint32_t same = FL__WIRE_HELLO_RESUME | FL__WIRE_HELLO_URGENT;
	struct fl__wire_frame out = { .type = FL__WIRE_HELLO, .version = 1, .hello = *mine };
	const struct fl__wire_frame *f = NULL;
	struct fl__wire_agreement ag;
	struct fl__wire_hello view;
	char why[256];
	bool disagree;
	int r;

	c->seq = 0;
	r = fl__mig_send(c, &out, l->timeout_ms);
	if (r < 0) {
		snprintf(msg, cap, "handshake: sending HELLO: %s",
			 *fl__conn_error(c->conn) ? fl__conn_error(c->conn) : strerror(-r));
		return r;
	}
	r = hs_read(c, l->timeout_ms, FL__WIRE_HELLO, &f, msg, cap);
	if (r < 0)
		return r;
	r = copy_peer(peer, &f->hello);
	if (r < 0)
		return r;

	/*
	 * Check everything but the resume and urgent flags first: those two only
	 * say which connection this is, and a disagreement is fixed by trying
	 * again, not an error.
	 */
	view = peer->hello;
	view.flags = (view.flags & ~same) | (mine->flags & same);
	memcpy(view.session_id, mine->session_id, FL__WIRE_SESSION_LEN);
	r = fl__wire_negotiate(mine, &view, why, sizeof(why), &ag);
	if (r < 0) {
		snprintf(msg, cap, "handshake: %s", why);
		fl__mig_send_error(c, fl__wire_error_code_from_errno(r), msg);
		return r;
	}
	/*
	 * TLS proved who the peer is before its HELLO came (in plain TCP
	 * nothing can): the caller may learn the session to resume from it.
	 */
	disagree = (mine->flags ^ peer->hello.flags) & same;
	if (!disagree && (mine->flags & same) &&
	    memcmp(mine->session_id, peer->hello.session_id, FL__WIRE_SESSION_LEN)) {
		snprintf(msg, cap, "handshake: the peer names another migration session");
		fl__mig_send_error(c, FL__WIRE_ERR_SESSION, msg);
		return -ESTALE;
	}
	c->version = ag.version;
	fl__wire_dec_set_version(&c->rd.dec, ag.version);
	if (disagree) {
		snprintf(msg, cap, "handshake: the peer %s resume the session and %s the urgent "
			 "channel; this side %s and %s", (peer->hello.flags &
			 FL__WIRE_HELLO_RESUME) ? "wants to" : "does not",
			 (peer->hello.flags & FL__WIRE_HELLO_URGENT) ? "expects" :
								     "does not expect",
			 (mine->flags & FL__WIRE_HELLO_RESUME) ? "does" : "does not",
			 (mine->flags & FL__WIRE_HELLO_URGENT) ? "does" : "does not");
		return -EAGAIN;
	}
	*ret_features = ag.features;
	return 0;
}

bool fl__mig_err_transient(int err)
{
	switch (-err) {
	case ECONNRESET:
	case ECONNREFUSED:
	case ECONNABORTED:
	case EPIPE:
	case ETIMEDOUT:
	case ENOTCONN:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENETDOWN:
	case EHOSTDOWN:
	case EBADMSG:
	case EAGAIN:
	case EADDRNOTAVAIL:
		return true;
	default:
		return false;
	}
}
