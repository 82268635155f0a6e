/* SPDX-License-Identifier: MIT */
/* What both sides of a migration share: meeting the peer, the handshake, bitmaps, names. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
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

int fl__mig_link_init(struct fl__mig_link *l, uint32_t flags, const char *host, uint16_t port,
		      const void *key, size_t key_len, int timeout_ms, int resume_timeout_ms,
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
	if (timeout_ms < 0 || resume_timeout_ms < -1 || key_len > MIG_MAX_KEY ||
	    (key_len && !key) || (!l->listen && (!host || !port))) {
		snprintf(msg, cap, "bad connection options (a host and a port are needed to "
			 "connect; timeouts are >= 0; a key is 1 to %d bytes)", MIG_MAX_KEY);
		return -EINVAL;
	}
	l->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->stop_efd < 0)
		return -errno;
	if (host && !(l->host = strdup(host)))
		return -ENOMEM;
	if (key_len) {
		l->key = malloc(key_len);
		if (!l->key)
			return -ENOMEM;
		memcpy(l->key, key, key_len);
		l->key_len = key_len;
	}
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
	if (l->lfd >= 0)
		close(l->lfd);
	if (l->stop_efd >= 0)
		close(l->stop_efd);
	free(l->host);
	if (l->key) {
		memset(l->key, 0, l->key_len);
		free(l->key);
	}
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

int fl__mig_link_open(struct fl__mig_link *l, bool urgent, int timeout_ms, int *ret_fd,
		      char *msg, size_t cap)
{
	/*
	 * TCP_NODELAY on both: the handshakes and the control frames on the main
	 * connection are small writes that Nagle would hold for a delayed ACK
	 * (40 ms); the page frames are large and unaffected.
	 */
	struct fl__sock_opts o = { .flags = FL__SOCK_NODELAY };
	int fd = -1, r;

	if (l->listen) {
		struct pollfd p[2] = {
			{ .fd = l->lfd, .events = POLLIN },
			{ .fd = l->stop_efd, .events = POLLIN },
		};

		for (;;) {
			int n = poll(p, 2, timeout_ms);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -errno;
			if (!n) {
				snprintf(msg, cap, "no %s connection came to port %u within %d ms",
					 urgent ? "urgent" : "main", l->port, timeout_ms);
				return -ETIMEDOUT;
			}
			if (p[1].revents)
				return -ECANCELED;
			r = fl__sock_accept(l->lfd, &o, 0, &fd);
			if (r == -EAGAIN)
				continue;	/* someone gave up on the way */
			if (r < 0) {
				snprintf(msg, cap, "accept: %s", strerror(-r));
				return r;
			}
			break;
		}
	} else {
		r = fl__sock_connect(l->host, l->port, &o, timeout_ms, &fd);
		if (r < 0) {
			snprintf(msg, cap, "cannot connect to %s port %u: %s", l->host, l->port,
				 strerror(-r));
			return r;
		}
	}
	set_liveness(fd, l->timeout_ms);
	*ret_fd = fd;
	return 0;
}

/* ---------------------------------------------------------------- connections */

void fl__mig_conn_reset(struct fl__mig_conn *c)
{
	*c = (struct fl__mig_conn){ .fd = -1 };
}

int fl__mig_conn_open(struct fl__mig_conn *c, int fd)
{
	int r;

	fl__mig_conn_reset(c);
	r = fl__wire_reader_init(&c->rd, fd, 0);
	if (r < 0) {
		close(fd);
		return r;
	}
	c->have_rd = true;
	c->fd = fd;
	return 0;
}

void fl__mig_conn_close(struct fl__mig_conn *c)
{
	if (c->have_rd)
		fl__wire_reader_fini(&c->rd);
	if (c->fd >= 0)
		close(c->fd);
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
	return fl__sock_send_frame(c->fd, f, timeout_ms);
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
	fl__sock_send_frame(c->fd, &f, MIG_ERROR_SEND_MS);
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
		.flags = flags | (l->key_len ? FL__WIRE_HELLO_AUTH : 0),
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
	const struct fl__wire_frame *f;
	struct fl__wire_agreement ag;
	struct fl__wire_hello view;
	uint8_t tr[FL__SHA256_LEN];
	char why[256];
	int r;

	c->seq = 0;
	r = fl__mig_send(c, &out, l->timeout_ms);
	if (r < 0) {
		snprintf(msg, cap, "handshake: sending HELLO: %s", strerror(-r));
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
	if ((mine->flags ^ peer->hello.flags) & same) {
		snprintf(msg, cap, "handshake: the peer %s resume the session and %s the urgent "
			 "channel; this side %s and %s", (peer->hello.flags &
			 FL__WIRE_HELLO_RESUME) ? "wants to" : "does not",
			 (peer->hello.flags & FL__WIRE_HELLO_URGENT) ? "expects" :
								     "does not expect",
			 (mine->flags & FL__WIRE_HELLO_RESUME) ? "does" : "does not",
			 (mine->flags & FL__WIRE_HELLO_URGENT) ? "does" : "does not");
		return -EAGAIN;
	}
	if ((mine->flags & same) &&
	    memcmp(mine->session_id, peer->hello.session_id, FL__WIRE_SESSION_LEN)) {
		snprintf(msg, cap, "handshake: the peer names another migration session");
		fl__mig_send_error(c, FL__WIRE_ERR_SESSION, msg);
		return -ESTALE;
	}

	if (mine->role == FL__WIRE_ROLE_SOURCE)
		fl__wire_transcript(mine, &peer->hello, tr);
	else
		fl__wire_transcript(&peer->hello, mine, tr);
	out = (struct fl__wire_frame){ .type = FL__WIRE_AUTH, .auth.role = mine->role };
	c->version = ag.version;
	fl__wire_auth_mac(l->key, l->key_len, mine->role, tr, out.auth.mac);
	r = fl__mig_send(c, &out, l->timeout_ms);
	if (r < 0) {
		snprintf(msg, cap, "handshake: sending AUTH: %s", strerror(-r));
		return r;
	}
	fl__wire_dec_set_version(&c->rd.dec, ag.version);
	r = hs_read(c, l->timeout_ms, FL__WIRE_AUTH, &f, msg, cap);
	if (r < 0)
		return r;
	r = fl__wire_auth_check(l->key, l->key_len, &f->auth, peer->hello.role, tr, why,
				sizeof(why));
	if (r < 0) {
		snprintf(msg, cap, "handshake: %s", why);
		fl__mig_send_error(c, fl__wire_error_code_from_errno(r), msg);
		return r;
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
