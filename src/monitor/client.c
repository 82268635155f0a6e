/* SPDX-License-Identifier: MIT */
/* The monitor client: hand our userfaultfd to a monitor, watch it, and never fall back to zeros. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "monitor-int.h"

#define DEFAULT_ACK_MS 5000u
#define DEFAULT_RETRY_MS 100u
#define HUGE_2M (2u << 20)
#define ERRLEN 256
#define PATHLEN 108	/* sizeof(sockaddr_un.sun_path) */
#define BEACON_LEN 4096u

struct fl_monitor_client {
	pid_t pid;
	/*
	 * Serialises everything below but the state: the socket, the layout,
	 * handshakes and failure handling. The watcher holds it while it works
	 * (not while it polls); a handshake holds it up to ack_timeout_ms.
	 */
	pthread_mutex_t lock;
	_Atomic int state;
	struct fl_uffd *uffd;
	char path[PATHLEN];
	_Atomic int sock;		/* the connection while ATTACHED, else -1 (read
					   without the lock by fl_monitor_client_fd()) */
	struct fl_monitor_opts o;	/* with defaults filled in */
	uint64_t session;
	uint32_t attach_seq;
	struct fl__mon_table t;		/* the layout, sorted; paths point into paths[] */
	char **paths;
	size_t npaths;
	bool layout_lost;		/* an event could not be tracked: no re-attach */
	uint64_t dead_since;		/* ms, when the monitor was found gone */
	uint64_t next_retry;		/* ms, WAITING: the next automatic re-attach */
	int last_retry_err;
	int *child_fds;			/* BLOCKED: FORK children's descriptors, kept open */
	size_t nchild;
	uint8_t *in;			/* a message from the monitor, in pieces */
	size_t in_len;
	int kick;			/* eventfd: wakes the watcher */
	sem_t *started;			/* posted by the watcher as it starts */
	bool has_watcher;
	pthread_t watcher;
	_Atomic bool stopping;
	/*
	 * Fork children (protocol section 3.6): a page registered with our
	 * userfaultfd that we never touch. In a child the monitor has put the
	 * child's claim there. NULL with FL_MONITOR_DONTFORK.
	 */
	void *beacon;
	struct fl_monitor_client *reg_next;	/* the registry of clients with a beacon */
	struct fl__mon_table fork_t;		/* the layout, copied just before a fork() */
	void *stale_t;				/* child: the parent's table memory, kept (below) */
};

/*
 * Clients with a beacon, for the fork handlers. fork_lock serialises fork()
 * against itself; registry_lock guards the list. Both are held from the
 * prepare handler to the parent's (or the child's) handler, and nothing
 * holding them waits for a monitor, so a fork() blocked until a monitor
 * reads its FORK event never stops the watcher that re-attaches one.
 */
static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fl_monitor_client *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A state change to report once the lock is dropped. */
struct change {
	int state;	/* 0: none */
	int err;
};

static const char *const state_names[] = {
	[FL_MONITOR_ATTACHED] = "attached",
	[FL_MONITOR_WAITING] = "waiting",
	[FL_MONITOR_FAILED] = "failed",
	[FL_MONITOR_BLOCKED] = "blocked",
};

FL_API const char *fl_monitor_state_name(int state)
{
	if (state < FL_MONITOR_ATTACHED || state > FL_MONITOR_BLOCKED)
		return NULL;
	return state_names[state];
}

static int get_state(const struct fl_monitor_client *c)
{
	return atomic_load_explicit(&((struct fl_monitor_client *)c)->state, memory_order_acquire);
}

static void set_state(struct fl_monitor_client *c, int state, struct change *ch, int err)
{
	atomic_store_explicit(&c->state, state, memory_order_release);
	ch->state = state;
	ch->err = err;
}

static void notify(struct fl_monitor_client *c, const struct change *ch)
{
	if (ch->state && c->o.on_state)
		c->o.on_state(c, (enum fl_monitor_state)ch->state, ch->err, c->o.userdata);
}

static void kick(struct fl_monitor_client *c)
{
	uint64_t one = 1;

	if (c->kick >= 0 && write(c->kick, &one, sizeof(one)) < 0) {
		/* The counter is far from overflowing; nothing to do. */
	}
}

/* The monitor's text, made safe for one log line. */
static void sanitize(char *dst, size_t dlen, const char *src)
{
	size_t i = 0;

	for (; src && src[i] && i + 1 < dlen; i++) {
		unsigned char ch = (unsigned char)src[i];

		dst[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	dst[i] = '\0';
}

/* ------------------------------------------------------------- handshake */

/* A monitor's ERROR answer: log its text, made safe, and return its errno. */
static int log_refusal(const char *path, const char *what, const struct fl__mon_reply *rep)
{
	char text[FL_MONITOR_MAX_ERRMSG + 1];

	sanitize(text, sizeof(text), rep->msg);
	fl__err("monitor %s refused%s: %s (%s)", path, what, text, strerror(-rep->err));
	return rep->err;
}

/* Connect by @deadline. A blocking unix connect waits for room in the backlog up to SO_SNDTIMEO. */
static int connect_to(const char *path, uint64_t deadline)
{
	struct sockaddr_un sa;
	struct timeval tv;
	_fl_cleanup_close_ int sock = -1;
	int r, left, salen = fl__mon_sockaddr(path, &sa);

	if (salen < 0)
		return salen;
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	left = fl__mon_left_ms(deadline);
	tv = (struct timeval){ .tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000 + 1 };
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	r = connect(sock, (struct sockaddr *)&sa, (socklen_t)salen);
	while (r < 0 && errno == EINTR) {
		/* The interrupted attempt may have completed. */
		r = connect(sock, (struct sockaddr *)&sa, (socklen_t)salen);
		if (r < 0 && errno == EISCONN)
			r = 0;
	}
	if (r < 0)
		return errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
	tv = (struct timeval){ 0 };
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK) < 0)
		return -errno;
	return FL__TAKE_FD(sock);
}

/*
 * Connect to @path, send the HELLO describing the current layout with our
 * userfaultfd, and wait for the answer. Returns the connected socket, or
 * -errno (the monitor's own for an ERROR, whose text is logged). @quiet:
 * an automatic retry, whose failures to connect are only debug noise.
 */
static int handshake(struct fl_monitor_client *c, const char *path, uint32_t flags, uint32_t seq,
		     bool quiet)
{
	struct fl__mon_hello h = {
		.version = FL_MONITOR_PROTO_VERSION,
		.flags = flags | (c->beacon ? FL_MONITOR_HELLO_CHILDREN : 0),
		.features = fl_uffd_features(c->uffd),
		.session = c->session,
		.pid = (uint32_t)c->pid,
		.attach_seq = seq,
		.beacon = (uintptr_t)c->beacon,
		.n = (uint32_t)c->t.n,
		.r = c->t.r,
	};
	uint64_t deadline = fl__now_ms() + c->o.ack_timeout_ms;
	struct fl__mon_reply rep;
	char err[ERRLEN];
	void *rbuf = NULL;
	uint8_t *msg;
	size_t len, rlen;
	int sock, sent, r;

	len = fl__mon_encode_hello(&h, NULL, 0);
	if (!len) {
		fl__err("monitor: the layout (%zu regions) does not fit in one HELLO", c->t.n);
		return -E2BIG;
	}
	msg = malloc(len);
	if (!msg)
		return -ENOMEM;
	fl__mon_encode_hello(&h, msg, len);
	sock = connect_to(path, deadline);
	if (sock < 0) {
		if (quiet)
			fl__debug("monitor %s: connect: %s", path, strerror(-sock));
		else
			fl__err("monitor %s: connect: %s", path, strerror(-sock));
		free(msg);
		return sock;
	}
	r = fl__mon_send(sock, msg, len, fl_uffd_fd(c->uffd), deadline);
	free(msg);
	if (r < 0 && r != -EPIPE) {
		fl__err("monitor %s: sending the HELLO: %s", path, strerror(-r));
		goto fail;
	}
	/*
	 * A monitor that refuses our uid answers at once and may be gone
	 * before our HELLO: its ERROR is still there to read.
	 */
	sent = r;
	r = fl__mon_recv_msg(sock, deadline, &rbuf, &rlen, NULL, err, sizeof(err));
	if (sent < 0 && r < 0) {
		fl__err("monitor %s: sending the HELLO: %s", path, strerror(-sent));
		r = sent;
		goto fail;
	}
	if (r == -ETIMEDOUT) {
		fl__err("monitor %s: no answer within %u ms", path, c->o.ack_timeout_ms);
		goto fail;
	}
	if (r == -EPIPE) {
		fl__err("monitor %s: hung up without answering", path);
		goto fail;
	}
	if (r == 0)
		r = fl__mon_decode_reply(rbuf, rlen, &rep, err, sizeof(err));
	if (r < 0) {
		fl__err("monitor %s: bad answer: %s", path, err);
		r = -EPROTO;
		goto fail;
	}
	if (rep.type == FL_MONITOR_MSG_ERROR) {
		r = log_refusal(path, "", &rep);
		goto fail;
	}
	if (rep.session != c->session) {
		fl__err("monitor %s: ACK for session %016llx, ours is %016llx", path,
			(unsigned long long)rep.session, (unsigned long long)c->session);
		r = -EPROTO;
		goto fail;
	}
	fl__debug("monitor %s (pid %u) serves %zu regions, attach %u", path, rep.pid, c->t.n, seq);
	free(rbuf);
	return sock;
fail:
	free(rbuf);
	close(sock);
	return r;
}

/* Wake every region: threads whose fault a dead monitor read but never resolved fault again. */
static void wake_all(struct fl_monitor_client *c)
{
	for (size_t i = 0; i < c->t.n; i++)
		fl_uffd_wake(c->uffd, (void *)(uintptr_t)c->t.r[i].addr, c->t.r[i].len);
}

static int reattach_locked(struct fl_monitor_client *c, bool quiet, struct change *ch)
{
	int sock = handshake(c, c->path, FL_MONITOR_HELLO_REATTACH, c->attach_seq + 1, quiet);

	if (sock < 0)
		return sock;
	c->attach_seq++;
	c->sock = sock;
	c->in_len = 0;
	c->last_retry_err = 0;
	set_state(c, FL_MONITOR_ATTACHED, ch, 0);
	wake_all(c);
	fl__info("monitor %s: re-attached the same userfaultfd (attach %u, %zu regions)", c->path,
		 c->attach_seq, c->t.n);
	return 0;
}

/* ----------------------------------------------------------- failing loud */

struct vma {
	uint64_t lo, hi;
};

/* This process's mappings, sorted (the kernel lists them in order). NULL if unreadable. */
static struct vma *read_maps(size_t *ret_n)
{
	FILE *f = fopen("/proc/self/maps", "re");
	struct vma *v = NULL;
	size_t n = 0, cap = 0;
	char line[512];

	*ret_n = 0;
	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long lo, hi;
		size_t l = strlen(line);

		if (sscanf(line, "%llx-%llx", &lo, &hi) == 2) {
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 64;
				struct vma *nv = realloc(v, nc * sizeof(*nv));

				if (!nv) {
					free(v);
					fclose(f);
					return NULL;
				}
				v = nv;
				cap = nc;
			}
			v[n++] = (struct vma){ lo, hi };
		}
		/* The rest of an over-long line (a long path) is not a new mapping. */
		while (l && line[l - 1] != '\n' && fgets(line, sizeof(line), f))
			l = strlen(line);
	}
	fclose(f);
	*ret_n = n;
	return v;
}

/* The kernel page size of a region: the huge page size for hugetlbfs, else the base page. */
static uint64_t kpage(const struct fl__mon_region *r)
{
	return r->mem == FL_MEM_HUGETLB ? r->page_size : fl__page_size();
}

/*
 * Poison every page of [lo, hi) that is not present (the shared helper
 * steps over present and unregistered pages). Returns 0, -EAGAIN (an event
 * is pending: read events, then retry), or the error that makes poisoning
 * impossible.
 */
static int poison_span(struct fl_uffd *u, uint64_t lo, uint64_t hi, uint64_t step,
		       uint64_t *poisoned)
{
	struct fl__poison_opts o = { .step = step };

	return fl__uffd_poison_absent(u, lo, hi - lo, &o, poisoned);
}

/* Apply @fn to each part of each non-zero region that lies inside one mapping. */
static int for_each_span(struct fl_monitor_client *c, struct fl_uffd *u, const struct vma *v,
			 size_t nv, bool zero_too, uint64_t *poisoned)
{
	for (size_t i = 0; i < c->t.n; i++) {
		const struct fl__mon_region *r = &c->t.r[i];
		uint64_t lo = r->addr, hi = r->addr + r->len, step = kpage(r);
		int ret;

		if (r->store == FL_MONITOR_STORE_ZERO && !zero_too)
			continue;
		if (!v) {
			/* No /proc: the whole region; unmapped parts are stepped over. */
			ret = poison_span(u, lo, hi, step, poisoned);
			if (ret < 0)
				return ret;
			continue;
		}
		for (size_t k = 0; k < nv && v[k].lo < hi; k++) {
			uint64_t a = v[k].lo > lo ? v[k].lo : lo, b = v[k].hi < hi ? v[k].hi : hi;

			if (a >= b)
				continue;
			ret = poison_span(u, a, b, step, poisoned);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

static void unregister_all(struct fl_monitor_client *c)
{
	for (size_t i = 0; i < c->t.n; i++) {
		const struct fl__mon_region *r = &c->t.r[i];
		int ret = fl_uffd_unregister(c->uffd, (void *)(uintptr_t)r->addr, r->len);

		if (ret < 0 && ret != -ENOMEM)
			fl__debug("monitor: unregister [%#llx, +%#llx): %s",
				  (unsigned long long)r->addr, (unsigned long long)r->len,
				  strerror(-ret));
		/*
		 * With per-VMA locks a fault can be queued just after the kernel's own
		 * wake-up of the unregistered range, and then nothing wakes it: wake
		 * again, now that no new fault can be queued there.
		 */
		fl_uffd_wake(c->uffd, (void *)(uintptr_t)r->addr, r->len);
	}
}

static void apply_event(struct fl_monitor_client *c, const struct fl__mon_event *ev)
{
	char err[ERRLEN];
	int r;

	if (c->layout_lost)
		return;
	r = fl__mon_table_apply(&c->t, ev, err, sizeof(err));
	if (r < 0) {
		c->layout_lost = true;
		fl__err("monitor %s: cannot track the layout any more (%s): a restarted monitor "
			"could not be told it; the client will fail loudly instead", c->path, err);
	}
}

/*
 * The monitor is gone and nobody else reads our userfaultfd: read what is
 * queued. Events are applied to the layout (the reader of an event lets
 * the thread that caused it go on); a FORK child's descriptor is poisoned
 * like our regions when @poison_children, or kept (BLOCKED). Page faults
 * are left alone: their threads are woken by what follows.
 */
static void drain_uffd(struct fl_monitor_client *c, bool poison_children)
{
	int fd = fl_uffd_fd(c->uffd);

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		struct fl_event ev[64];
		int n;

		if (poll(&p, 1, 0) <= 0)
			return;
		n = fl_uffd_read_events(c->uffd, ev, 64);
		if (n == -EINTR)
			continue;
		if (n <= 0)
			return;
		for (int i = 0; i < n; i++) {
			struct fl__mon_event me = { 0 };

			switch (ev[i].type) {
			case FL_EVENT_REMAP:
				me = (struct fl__mon_event){ FL_MONITOR_EV_REMAP,
					(uintptr_t)ev[i].remap.from, (uintptr_t)ev[i].remap.to,
					ev[i].remap.len };
				break;
			case FL_EVENT_REMOVE:
			case FL_EVENT_UNMAP:
				me = (struct fl__mon_event){
					ev[i].type == FL_EVENT_REMOVE ? FL_MONITOR_EV_REMOVE
								      : FL_MONITOR_EV_UNMAP,
					(uintptr_t)ev[i].range.start,
					(uintptr_t)ev[i].range.end, 0 };
				if (get_state(c) == FL_MONITOR_BLOCKED &&
				    ev[i].type == FL_EVENT_REMOVE)
					fl_uffd_unregister(c->uffd, ev[i].range.start,
							   (size_t)((uintptr_t)ev[i].range.end -
								    (uintptr_t)ev[i].range.start));
				break;
			case FL_EVENT_FORK: {
				uint64_t feats = fl_uffd_features(c->uffd), done = 0;
				struct fl_uffd *cu = NULL;

				/* The child waits for its claim in its fork handler: none comes. */
				if (c->beacon && !fl_uffd_adopt(ev[i].fork.fd, feats, 0, &cu)) {
					fl_uffd_zeropage(cu, c->beacon, BEACON_LEN, 0, NULL);
					fl_uffd_close(cu);
					cu = NULL;
				}
				if (!poison_children) {
					int *nf = realloc(c->child_fds,
							  (c->nchild + 1) * sizeof(*nf));

					if (nf) {
						c->child_fds = nf;
						c->child_fds[c->nchild++] = ev[i].fork.fd;
						break;
					}
				}
				/* The child has our layout of the moment it was forked. */
				if (!fl_uffd_adopt(ev[i].fork.fd, feats, 0, &cu)) {
					size_t nv;
					struct vma *v = read_maps(&nv);

					for_each_span(c, cu, v, nv, false, &done);
					free(v);
					fl_uffd_close(cu);
				}
				close(ev[i].fork.fd);
				break;
			}
			default:
				break;
			}
			if (me.type)
				apply_event(c, &me);
		}
	}
}

/*
 * FAIL_LOUD (and detach): poison the absent pages of every region that is
 * not a discarded (zero) one, wake everyone, unregister. Threads blocked
 * in faults and later accesses to those pages get SIGBUS; present pages
 * keep their data; discarded ranges read as zeros, as the program asked.
 * Returns FL_MONITOR_FAILED, or FL_MONITOR_BLOCKED when this kernel
 * cannot poison (then the regions stay registered and faults block).
 */
static int fail_loud(struct fl_monitor_client *c, const char *why, bool quiet)
{
	int fd = fl_uffd_fd(c->uffd), r;
	uint64_t poisoned = 0;
	struct vma *v = NULL;
	size_t nv = 0;

	/* The monitor set the shared file's flags as it liked: our reads must not block. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	for (;;) {
		drain_uffd(c, true);
		free(v);
		v = read_maps(&nv);
		r = for_each_span(c, c->uffd, v, nv, false, &poisoned);
		if (r != -EAGAIN)
			break;
		/*
		 * An event is pending: the drain reads it, but its thread must run
		 * to finish it. What is poisoned stays poisoned, so this ends.
		 */
		sched_yield();
	}
	free(v);
	if (r < 0) {
		fl__err("monitor %s: %s; this kernel cannot poison pages (%s): faults on pages "
			"not yet present will block forever instead of reading zeros", c->path, why,
			strerror(-r));
		wake_all(c);
		return FL_MONITOR_BLOCKED;
	}
	wake_all(c);
	unregister_all(c);
	drain_uffd(c, true);
	if (quiet)
		fl__debug("monitor %s: detached; %llu KiB not yet present poisoned", c->path,
			  (unsigned long long)(poisoned >> 10));
	else
		fl__err("monitor %s: %s; failing loudly: %llu KiB not yet present are poisoned "
			"(accesses raise SIGBUS), present pages keep their data", c->path, why,
			(unsigned long long)(poisoned >> 10));
	return FL_MONITOR_FAILED;
}

/* ------------------------------------------------------------- the monitor */

/* The connection ended (@err) or misbehaved: apply the policy. */
static void monitor_gone(struct fl_monitor_client *c, int err, struct change *ch)
{
	char why[160];

	c->sock = fl__safe_close(c->sock);
	c->in_len = 0;
	c->dead_since = fl__now_ms();
	c->next_retry = c->dead_since;
	snprintf(why, sizeof(why), "the monitor is gone (%s)",
		 err == -EPIPE ? "it hung up" : strerror(-err));
	if (c->o.policy == FL_MONITOR_WAIT_REATTACH && !c->layout_lost) {
		fl__warn("monitor %s: %s; faults wait until a monitor takes the same "
			 "userfaultfd again", c->path, why);
		set_state(c, FL_MONITOR_WAITING, ch, err);
		return;
	}
	set_state(c, fail_loud(c, why, false), ch, err);
}

/* One whole message from the monitor while attached. */
static int handle_msg(struct fl_monitor_client *c, const uint8_t *b, size_t len)
{
	struct fl__mon_event ev[FL_MONITOR_MAX_EVENTS];
	char err[ERRLEN], text[FL_MONITOR_MAX_ERRMSG + 1];
	struct fl__mon_reply rep;
	size_t n;
	int r;

	switch (fl__mon_msg_type(b)) {
	case FL_MONITOR_MSG_EVENT:
		r = fl__mon_decode_events(b, len, ev, FL_MONITOR_MAX_EVENTS, &n, err, sizeof(err));
		if (r < 0)
			break;
		for (size_t i = 0; i < n; i++)
			apply_event(c, &ev[i]);
		return 0;
	case FL_MONITOR_MSG_ERROR:
		r = fl__mon_decode_reply(b, len, &rep, err, sizeof(err));
		if (r < 0)
			break;
		/* A monitor that gives up says why before it hangs up. */
		sanitize(text, sizeof(text), rep.msg);
		fl__err("monitor %s: %s (%s)", c->path, text, strerror(-rep.err));
		return rep.err;
	default:
		snprintf(err, sizeof(err), "unexpected message type %u", fl__mon_msg_type(b));
		r = -EPROTO;
		break;
	}
	fl__err("monitor %s: %s", c->path, err);
	return -EPROTO;
}

/*
 * Read what the monitor sent, without blocking. Returns 0 when nothing more
 * is there, or the reason the connection is over.
 */
static int read_input(struct fl_monitor_client *c)
{
	char err[ERRLEN];

	if (!c->in) {
		c->in = malloc(FL_MONITOR_MAX_MSG);
		if (!c->in)
			return 0;	/* try again on the next wake-up */
	}
	for (;;) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(8 * sizeof(int))];
		} ctl;
		size_t need = FL_MONITOR_HDR_LEN, total = 0;
		struct iovec iov;
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;
		int r = c->in_len ? fl__mon_frame(c->in, c->in_len, &total, err, sizeof(err))
				  : -EAGAIN;

		if (r == 0)
			need = total;
		else if (r != -EAGAIN) {
			fl__err("monitor %s: %s", c->path, err);
			return -EPROTO;
		}
		if (r == 0 && c->in_len == total) {
			r = handle_msg(c, c->in, total);
			c->in_len = 0;
			if (r < 0)
				return r;
			continue;
		}
		/* Exactly up to the end of this message: the next may carry other data. */
		iov = (struct iovec){ c->in + c->in_len, need - c->in_len };
		m.msg_control = ctl.buf;
		m.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(c->sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return errno == ECONNRESET ? -ECONNRESET : -errno;
		}
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
			if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int fd;

				memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(fd));
				close(fd);
			}
			fl__err("monitor %s: sent descriptors nobody asked for", c->path);
			return -EPROTO;
		}
		if (n == 0)
			return -EPIPE;
		c->in_len += (size_t)n;
	}
}

/*
 * One step of the state machine, under the lock: the watcher's body, and
 * fl_monitor_client_check()'s. @revents: what poll saw on the descriptor
 * of the current state.
 */
static void step(struct fl_monitor_client *c, short revents, struct change *ch)
{
	uint64_t now;
	int r;

	switch (get_state(c)) {
	case FL_MONITOR_ATTACHED:
		if (!revents)
			return;
		/* Data first: events the monitor sent before it died still count. */
		r = read_input(c);
		if (!r && (revents & (POLLHUP | POLLRDHUP | POLLERR)))
			r = read_input(c);
		if (!r && (revents & (POLLHUP | POLLERR)))
			r = -EPIPE;
		if (r < 0)
			monitor_gone(c, r, ch);
		return;
	case FL_MONITOR_WAITING:
		now = fl__now_ms();
		if (c->o.wait_max_ms && now >= c->dead_since + c->o.wait_max_ms) {
			char why[96];

			snprintf(why, sizeof(why), "no monitor took the userfaultfd within %u ms",
				 c->o.wait_max_ms);
			set_state(c, fail_loud(c, why, false), ch, -ETIMEDOUT);
			return;
		}
		if (c->layout_lost) {
			set_state(c, fail_loud(c, "the layout could not be tracked", false), ch,
				  -ENOTRECOVERABLE);
			return;
		}
		if ((c->o.flags & FL_MONITOR_NO_AUTO_REATTACH) || now < c->next_retry)
			return;
		r = reattach_locked(c, true, ch);
		if (r < 0) {
			if (r != c->last_retry_err && r != -ENOENT && r != -ECONNREFUSED)
				fl__warn("monitor %s: re-attach failed: %s; retrying every %u ms",
					 c->path, strerror(-r), c->o.retry_ms);
			c->last_retry_err = r;
			c->next_retry = fl__now_ms() + c->o.retry_ms;
		}
		return;
	case FL_MONITOR_BLOCKED:
		if (revents)
			drain_uffd(c, false);
		return;
	default:
		return;
	}
}

/* How long the watcher may sleep in WAITING, in ms (-1: until kicked). */
static int wait_timeout(const struct fl_monitor_client *c)
{
	uint64_t now = fl__now_ms(), until = UINT64_MAX;

	if (!(c->o.flags & FL_MONITOR_NO_AUTO_REATTACH))
		until = c->next_retry;
	if (c->o.wait_max_ms && c->dead_since + c->o.wait_max_ms < until)
		until = c->dead_since + c->o.wait_max_ms;
	if (until == UINT64_MAX)
		return -1;
	return until <= now ? 0 : until - now > 0x7fffffff ? 0x7fffffff : (int)(until - now);
}

/* The descriptor that matters in the current state, and the events to poll it for. */
static int state_fd(const struct fl_monitor_client *c, short *events)
{
	switch (get_state(c)) {
	case FL_MONITOR_ATTACHED:
		*events = POLLIN | POLLRDHUP;
		return c->sock;
	case FL_MONITOR_BLOCKED:
		*events = POLLIN;
		return fl_uffd_fd(c->uffd);
	default:
		*events = 0;
		return -1;
	}
}

static void *watcher_main(void *arg)
{
	struct fl_monitor_client *c = arg;

	sem_post(c->started);
	for (;;) {
		struct pollfd p[2] = { { .fd = c->kick, .events = POLLIN }, { .fd = -1 } };
		struct change ch = { 0 };
		int timeout = -1, r;

		pthread_mutex_lock(&c->lock);
		if (atomic_load(&c->stopping)) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		p[1].fd = state_fd(c, &p[1].events);
		if (get_state(c) == FL_MONITOR_WAITING)
			timeout = wait_timeout(c);
		pthread_mutex_unlock(&c->lock);

		r = poll(p, 2, timeout);
		if (r < 0 && errno != EINTR) {
			/* Cannot happen with valid descriptors: say so rather than spin. */
			fl__err("monitor %s: the watcher stops: poll: %s", c->path,
				strerror(errno));
			break;
		}
		if (r > 0 && p[0].revents) {
			uint64_t v;

			if (read(c->kick, &v, sizeof(v)) < 0) {
				/* Already drained: fine. */
			}
		}
		pthread_mutex_lock(&c->lock);
		/* The socket may have been replaced meanwhile: then its revents are stale. */
		if (!atomic_load(&c->stopping)) {
			short ev;
			int fd = state_fd(c, &ev);

			step(c, fd == p[1].fd && fd >= 0 ? p[1].revents : 0, &ch);
		}
		pthread_mutex_unlock(&c->lock);
		notify(c, &ch);
	}
	return NULL;
}

/* ------------------------------------------------------------ fork children */

/*
 * Start the watcher, and return once it runs: a fork() while a new thread
 * is still being set up (its runtime's allocator locks held, in a sanitizer
 * build) would leave the child with those locks held for ever.
 */
static int start_watcher(struct fl_monitor_client *c)
{
	sem_t started;
	int r;

	c->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->kick < 0)
		return -errno;
	if (sem_init(&started, 0, 0) < 0)
		return -errno;
	c->started = &started;
	/* The watcher takes no signals meant for the program's threads. */
	r = fl__thread_start(&c->watcher, NULL, watcher_main, c, "fl-monitor");
	if (!r) {
		while (sem_wait(&started) < 0 && errno == EINTR)
			;
		c->has_watcher = true;
	}
	c->started = NULL;
	sem_destroy(&started);
	return r;
}

/* The FL_FEAT_* a layout's memory types need registered. */
static uint64_t layout_features(const struct fl__mon_table *t)
{
	uint64_t need = 0;

	for (size_t i = 0; i < t->n; i++) {
		if (t->r[i].mem == FL_MEM_SHMEM)
			need |= FL_FEAT_MISSING_SHMEM;
		if (t->r[i].mem == FL_MEM_HUGETLB)
			need |= FL_FEAT_MISSING_HUGETLBFS;
	}
	return need;
}

/* A path of the layout, as a string the client owns (its parent's copy when it has one). */
static const char *own_path(struct fl_monitor_client *c, const char *p, size_t len)
{
	char **np;

	for (size_t i = 0; i < c->npaths; i++)
		if (strlen(c->paths[i]) == len && !memcmp(c->paths[i], p, len))
			return c->paths[i];
	np = realloc(c->paths, (c->npaths + 1) * sizeof(*np));
	if (!np)
		return NULL;
	c->paths = np;
	np[c->npaths] = strndup(p, len);
	return np[c->npaths] ? np[c->npaths++] : NULL;
}

/*
 * Read the claim the monitor put in our beacon page (faulting until it does,
 * or until a dying monitor's copy of our descriptor closes, which leaves a
 * zero page), then empty the page for our own children.
 */
static bool read_beacon(struct fl_monitor_client *c, uint64_t *session, uint64_t *token)
{
	uint8_t b[FL__MON_BEACON_LEN];

	if (mprotect(c->beacon, BEACON_LEN, PROT_READ) < 0)
		return false;
	memcpy(b, c->beacon, sizeof(b));
	if (!fl__mon_beacon_read(b, session, token)) {
		mprotect(c->beacon, BEACON_LEN, PROT_NONE);
		return false;
	}
	/* A monitor reads the REMOVE event this makes: it wrote the page. */
	madvise(c->beacon, BEACON_LEN, MADV_DONTNEED);
	mprotect(c->beacon, BEACON_LEN, PROT_NONE);
	return true;
}

/*
 * Send CLAIM, take the GRANT: our own copy of our userfaultfd, and the
 * layout as the monitor knows it at this moment. Returns 0 or -errno.
 */
static int claim(struct fl_monitor_client *c, uint64_t session, uint64_t token)
{
	struct fl__mon_claim cl = { .session = session, .token = token, .pid = (uint32_t)c->pid };
	uint64_t deadline = fl__now_ms() + c->o.ack_timeout_ms;
	uint8_t msg[FL_MONITOR_HDR_LEN + FL_MONITOR_CLAIM_FIXED_LEN];
	char err[ERRLEN];
	struct fl__mon_hello g = { .r = NULL };
	struct fl__mon_table t = { .r = NULL };
	struct fl__mon_reply rep;
	struct fl_uffd *u = NULL;
	void *rbuf = NULL;
	size_t rlen = 0;
	int sock, fd = -1, r;

	sock = connect_to(c->path, deadline);
	if (sock < 0) {
		fl__err("monitor %s: connect: %s", c->path, strerror(-sock));
		return sock;
	}
	r = fl__mon_send(sock, msg, fl__mon_encode_claim(&cl, msg, sizeof(msg)), -1, deadline);
	if (!r)
		r = fl__mon_recv_msg(sock, deadline, &rbuf, &rlen, &fd, err, sizeof(err));
	if (r < 0) {
		fl__err("monitor %s: claiming: %s", c->path,
			r == -EPIPE ? "the monitor hung up" : strerror(-r));
		goto out;
	}
	if (fl__mon_msg_type(rbuf) == FL_MONITOR_MSG_ERROR &&
	    !fl__mon_decode_reply(rbuf, rlen, &rep, err, sizeof(err))) {
		r = log_refusal(c->path, " the claim", &rep);
		goto out;
	}
	r = fl__mon_decode_grant(rbuf, rlen, &g, err, sizeof(err));
	if (!r && (g.session != session || fd < 0)) {
		snprintf(err, sizeof(err), "%s", fd < 0 ? "no descriptor" : "another session");
		r = -EPROTO;
	}
	if (!r && (r = fl__mon_check_uffd(fd, err, sizeof(err))) < 0)
		r = -EPROTO;
	if (r < 0) {
		fl__err("monitor %s: bad GRANT: %s", c->path, err);
		goto out;
	}
	r = -ENOMEM;
	t.r = calloc(g.n ? g.n : 1, sizeof(*t.r));
	if (!t.r)
		goto out;
	t.n = t.cap = g.n;
	for (size_t i = 0; i < g.n; i++) {
		t.r[i] = g.r[i];
		if (g.r[i].path && !(t.r[i].path = own_path(c, g.r[i].path, g.r[i].path_len)))
			goto out;
	}
	r = fl_uffd_take(fd, g.features, 0, &u);
	if (r < 0) {
		fl__err("monitor %s: the granted userfaultfd: %s", c->path, strerror(-r));
		goto out;
	}
	fd = -1;
	fl__mon_table_sort(&t);
	free(c->t.r);
	c->t = t;
	t.r = NULL;
	c->uffd = u;
	c->sock = sock;
	sock = -1;
	c->session = session;
	c->attach_seq = 0;
	c->layout_lost = false;
	r = 0;
out:
	fl__safe_close(fd);
	fl__safe_close(sock);
	fl__mon_hello_free(&g);
	free(t.r);
	free(rbuf);
	return r;
}

/*
 * No claim: the monitor died (with it our descriptor, so the kernel has
 * unregistered our regions) or refused. Before any code of the child runs,
 * take the regions with a userfaultfd of our own and fail loudly, as the
 * parent would. Regions still registered with a descriptor we have no copy
 * of (-EBUSY: a monitor that refused the claim still serves it, or a failed
 * parent holds it) stay so: BLOCKED.
 */
static int orphan(struct fl_monitor_client *c, const char *why)
{
	struct fl_uffd_opts uo = {
		.sz = sizeof(uo),
		.flags = FL_UFFD_NONBLOCK,
		.features = layout_features(&c->t),
		.optional = FL_FEAT_POISON,
	};
	int r = fl_uffd_open(&uo, &c->uffd);

	if (r < 0) {
		c->uffd = NULL;
		fl__err("monitor %s: fork()ed child: %s, and no userfaultfd of its own (%s): its "
			"pages not yet present read as zeros", c->path, why, strerror(-r));
		return FL_MONITOR_BLOCKED;
	}
	for (size_t i = 0; i < c->t.n; i++) {
		const struct fl__mon_region *t = &c->t.r[i];

		if (t->store == FL_MONITOR_STORE_ZERO)
			continue;
		r = fl_uffd_register(c->uffd, (void *)(uintptr_t)t->addr, t->len,
				     FL_REGISTER_MISSING, NULL);
		if (r == -EBUSY) {
			fl__err("monitor %s: fork()ed child: %s; its regions stay registered with "
				"a userfaultfd it has no copy of: served while whoever holds that "
				"serves it, blocked otherwise", c->path, why);
			unregister_all(c);
			return FL_MONITOR_BLOCKED;
		}
	}
	return fail_loud(c, why, false);
}

/* In a fork()ed child, before fork() returns: make the parent's client ours. */
static void child_claim(struct fl_monitor_client *c)
{
	int st = get_state(c), r = -ENOENT;
	uint64_t session = 0, token = 0;

	c->pid = getpid();
	pthread_mutex_init(&c->lock, NULL);
	/* The parent's: our copies of its connection, its watcher's eventfd, its userfaultfd. */
	c->sock = fl__safe_close(c->sock);
	c->kick = fl__safe_close(c->kick);
	c->has_watcher = false;
	atomic_store(&c->stopping, false);
	for (size_t i = 0; i < c->nchild; i++)
		c->child_fds[i] = fl__safe_close(c->child_fds[i]);
	c->nchild = 0;
	c->in_len = 0;
	fl_uffd_close(c->uffd);
	c->uffd = NULL;
	/*
	 * The layout as the prepare handler copied it: the parent's watcher may
	 * have been changing c->t at the fork (a realloc half done), so its
	 * memory here is never freed, only kept reachable (a few bytes per
	 * fork; the claim's layout replaces the copy anyway).
	 */
	c->stale_t = c->t.r;
	c->t = c->fork_t;
	c->fork_t = (struct fl__mon_table){ .r = NULL };
	if (!c->t.r)
		c->layout_lost = true;
	if (st == FL_MONITOR_ATTACHED || st == FL_MONITOR_WAITING) {
		if (read_beacon(c, &session, &token))
			r = claim(c, session, token);
		if (!r) {
			atomic_store(&c->state, FL_MONITOR_ATTACHED);
			fl__debug("monitor %s: fork()ed child %d has its own userfaultfd (session "
				  "%016llx, %zu regions)", c->path, (int)c->pid,
				  (unsigned long long)session, c->t.n);
			if (!(c->o.flags & FL_MONITOR_NO_WATCHER) && (r = start_watcher(c)) < 0)
				fl__err("monitor %s: fork()ed child: no watcher thread (%s): the "
					"monitor's death goes unnoticed", c->path, strerror(-r));
			return;
		}
		st = orphan(c, r == -ENOENT ? "no claim came from the monitor"
					    : "its claim failed");
		atomic_store(&c->state, st);
	}
}

static void fork_prepare(void)
{
	pthread_mutex_lock(&fork_lock);
	pthread_mutex_lock(&registry_lock);
	for (struct fl_monitor_client *c = registry; c; c = c->reg_next) {
		pthread_mutex_lock(&c->lock);
		c->fork_t = (struct fl__mon_table){ .r = malloc((c->t.n ? c->t.n : 1) *
							      sizeof(*c->t.r)) };
		if (c->fork_t.r) {
			memcpy(c->fork_t.r, c->t.r, c->t.n * sizeof(*c->t.r));
			c->fork_t.n = c->fork_t.cap = c->t.n;
		}
		pthread_mutex_unlock(&c->lock);
	}
}

static void fork_parent(void)
{
	for (struct fl_monitor_client *c = registry; c; c = c->reg_next) {
		free(c->fork_t.r);
		c->fork_t = (struct fl__mon_table){ .r = NULL };
	}
	pthread_mutex_unlock(&registry_lock);
	pthread_mutex_unlock(&fork_lock);
}

static void fork_child(void)
{
	/* This thread is another one than the one that locked them: start afresh. */
	pthread_mutex_init(&registry_lock, NULL);
	pthread_mutex_init(&fork_lock, NULL);
	for (struct fl_monitor_client *c = registry; c; c = c->reg_next)
		child_claim(c);
}

static void register_atfork(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static void registry_add(struct fl_monitor_client *c)
{
	pthread_once(&atfork_once, register_atfork);
	pthread_mutex_lock(&registry_lock);
	c->reg_next = registry;
	registry = c;
	pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(struct fl_monitor_client *c)
{
	pthread_mutex_lock(&registry_lock);
	for (struct fl_monitor_client **p = &registry; *p; p = &(*p)->reg_next) {
		if (*p == c) {
			*p = c->reg_next;
			break;
		}
	}
	pthread_mutex_unlock(&registry_lock);
}

/* ---------------------------------------------------------------- public */

static uint64_t new_session(void)
{
	uint64_t s = 0;

	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s) || !s) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		s = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)getpid() << 48;
	}
	return s ? s : 1;
}

static int parse_opts(const struct fl_monitor_opts *opts, struct fl_monitor_opts *o)
{
	if (fl__opts_copy(o, sizeof(*o), opts, "fl_monitor_attach") < 0)
		return -EINVAL;
	if ((unsigned int)o->policy > FL_MONITOR_FAIL_LOUD)
		return fl__einval("fl_monitor_attach", "unknown policy %u", (unsigned int)o->policy);
	if (o->flags & ~(uint32_t)(FL_MONITOR_NO_WATCHER | FL_MONITOR_NO_AUTO_REATTACH |
				   FL_MONITOR_DONTFORK))
		return fl__einval("fl_monitor_attach", "unknown flags %#x", o->flags);
	if (!o->ack_timeout_ms)
		o->ack_timeout_ms = DEFAULT_ACK_MS;
	if (!o->retry_ms)
		o->retry_ms = DEFAULT_RETRY_MS;
	return 0;
}

/* Copy and check the caller's regions into the client's sorted layout. */
static int build_layout(struct fl_monitor_client *c, const struct fl_monitor_region *regions,
			size_t n)
{
	char err[ERRLEN];
	int r;

	c->t.r = calloc(n, sizeof(*c->t.r));
	c->paths = calloc(n, sizeof(*c->paths));
	if (!c->t.r || !c->paths)
		return -ENOMEM;
	c->t.cap = n;
	for (size_t i = 0; i < n; i++) {
		const struct fl_monitor_region *u = &regions[i];
		struct fl__mon_region *t = &c->t.r[i];
		size_t ps = u->page_size;

		if (u->reserved[0] || u->reserved[1]) {
			fl__err("monitor: region %zu: reserved fields must be zero", i);
			return -EINVAL;
		}
		if ((unsigned int)u->mem > FL_MEM_HUGETLB) {
			fl__err("monitor: region %zu: unknown memory type %d", i, (int)u->mem);
			return -EINVAL;
		}
		if (!ps)
			ps = u->mem == FL_MEM_HUGETLB ? HUGE_2M : 4096;
		if (u->mem == FL_MEM_HUGETLB && ps < HUGE_2M) {
			fl__err("monitor: region %zu: a hugetlbfs region's page size is its huge "
				"page size, not %zu", i, ps);
			return -EINVAL;
		}
		if (ps > UINT32_MAX) {
			fl__err("monitor: region %zu: page size %zu too large", i, ps);
			return -EINVAL;
		}
		if ((u->store == FL_MONITOR_STORE_FILE) != (u->path != NULL)) {
			fl__err("monitor: region %zu: %s", i,
				u->path ? "only a file region has a path"
					: "a file region needs a path");
			return -EINVAL;
		}
		*t = (struct fl__mon_region){
			.addr = (uintptr_t)u->addr,
			.len = u->len,
			.off = u->offset,
			.seed = u->seed,
			.page_size = (uint32_t)ps,
			.store = (uint32_t)u->store,
			.mem = (uint32_t)u->mem,
		};
		if (u->path) {
			size_t l = strnlen(u->path, FL_MONITOR_MAX_PATH + 1);

			if (l > FL_MONITOR_MAX_PATH) {
				fl__err("monitor: region %zu: path longer than %u bytes", i,
					FL_MONITOR_MAX_PATH);
				return -EINVAL;
			}
			c->paths[c->npaths] = strdup(u->path);
			if (!c->paths[c->npaths])
				return -ENOMEM;
			t->path = c->paths[c->npaths++];
			t->path_len = (uint32_t)l;
		}
	}
	c->t.n = n;
	r = fl__mon_check_regions(c->t.r, n, err, sizeof(err));
	if (r < 0) {
		fl__err("monitor: %s", err);
		return r == -E2BIG ? -EINVAL : r;
	}
	fl__mon_table_sort(&c->t);
	return 0;
}

/*
 * Unregister the beacon, then unmap it: unmapping it registered would wait
 * for a reader of its UNMAP event, and after a BYE there is none.
 */
static void drop_beacon(struct fl_monitor_client *c)
{
	if (!c->beacon)
		return;
	if (c->uffd)
		fl_uffd_unregister(c->uffd, c->beacon, BEACON_LEN);
	munmap(c->beacon, BEACON_LEN);
	c->beacon = NULL;
}

static void client_free(struct fl_monitor_client *c, bool lock_ok)
{
	c->sock = fl__safe_close(c->sock);
	c->kick = fl__safe_close(c->kick);
	for (size_t i = 0; i < c->nchild; i++)
		c->child_fds[i] = fl__safe_close(c->child_fds[i]);
	fl_uffd_close(c->uffd);
	for (size_t i = 0; i < c->npaths; i++)
		free(c->paths[i]);
	free(c->paths);
	free(c->t.r);
	free(c->child_fds);
	free(c->in);
	if (lock_ok)
		pthread_mutex_destroy(&c->lock);
	free(c);
}

FL_API int fl_monitor_attach(const char *socket_path, const struct fl_monitor_region *regions,
			     size_t n, const struct fl_monitor_opts *opts,
			     struct fl_monitor_client **ret)
{
	struct fl_uffd_opts uo = { .sz = sizeof(uo), .flags = FL_UFFD_NONBLOCK };
	struct fl_monitor_client *c;
	struct sockaddr_un sa;
	size_t registered = 0;
	int r, sock;

	if (!socket_path || !regions || !n || !ret)
		return fl__einval(__func__, "%s", !socket_path ? "socket_path is NULL" :
				  !regions ? "regions is NULL" : !n ? "n is 0" : "ret is NULL");
	if (n > FL_MONITOR_MAX_REGIONS) {
		fl__err("monitor: %zu regions exceed the limit of %u", n, FL_MONITOR_MAX_REGIONS);
		return -EINVAL;
	}
	r = fl__mon_sockaddr(socket_path, &sa);
	if (r == -EINVAL)
		return fl__einval(__func__, "socket_path \"%s\" is empty or a bare '@'",
				  socket_path);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->sock = -1;
	c->kick = -1;
	c->pid = getpid();
	memcpy(c->path, socket_path, strlen(socket_path) + 1);
	r = pthread_mutex_init(&c->lock, NULL);
	if (r) {
		free(c);
		return -r;
	}
	r = parse_opts(opts, &c->o);
	if (r < 0)
		goto fail;
	r = build_layout(c, regions, n);
	if (r < 0)
		goto fail;

	uo.features = FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP |
		      layout_features(&c->t);
	if (!(c->o.flags & FL_MONITOR_DONTFORK))
		uo.features |= FL_FEAT_EVENT_FORK;
	uo.optional = FL_FEAT_POISON;
	r = fl_uffd_open(&uo, &c->uffd);
	if (r < 0) {
		/* The probe reports EVENT_FORK missing to a process without CAP_SYS_PTRACE. */
		if ((r == -EPERM || r == -EOPNOTSUPP) && (uo.features & FL_FEAT_EVENT_FORK))
			fl__err("monitor: the fork event needs CAP_SYS_PTRACE; without it, attach "
				"with FL_MONITOR_DONTFORK");
		goto fail;
	}
	for (; registered < c->t.n; registered++) {
		const struct fl__mon_region *t = &c->t.r[registered];
		void *a = (void *)(uintptr_t)t->addr;

		if ((c->o.flags & FL_MONITOR_DONTFORK) && madvise(a, t->len, MADV_DONTFORK) < 0) {
			r = -errno;
			fl__err("monitor: madvise(MADV_DONTFORK) on %p: %s", a, strerror(-r));
			goto fail_unregister;
		}
		r = fl_uffd_register(c->uffd, a, t->len, FL_REGISTER_MISSING, NULL);
		if (r < 0) {
			fl__err("monitor: registering [%p, +%#llx): %s", a,
				(unsigned long long)t->len, strerror(-r));
			goto fail_unregister;
		}
	}
	if (!(c->o.flags & FL_MONITOR_DONTFORK)) {
		/* Where a fork()ed child will find its claim: never touched here. */
		c->beacon = mmap(NULL, BEACON_LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (c->beacon == MAP_FAILED) {
			c->beacon = NULL;
			r = -errno;
			goto fail_unregister;
		}
		r = fl_uffd_register(c->uffd, c->beacon, BEACON_LEN, FL_REGISTER_MISSING, NULL);
		if (r < 0) {
			fl__err("monitor: registering the beacon page: %s", strerror(-r));
			goto fail_unregister;
		}
	}
	c->session = new_session();
	pthread_mutex_lock(&c->lock);
	sock = handshake(c, c->path, 0, 0, false);
	pthread_mutex_unlock(&c->lock);
	if (sock < 0) {
		r = sock;
		goto fail_unregister;
	}
	c->sock = sock;
	atomic_store(&c->state, FL_MONITOR_ATTACHED);

	if (!(c->o.flags & FL_MONITOR_NO_WATCHER)) {
		r = start_watcher(c);
		if (r < 0)
			goto fail_unregister;
	}
	if (c->beacon)
		registry_add(c);
	/* The watcher may already be applying events to the table: read it under the lock. */
	pthread_mutex_lock(&c->lock);
	fl__debug("monitor %s: attached %zu regions (session %016llx)", c->path, c->t.n,
		  (unsigned long long)c->session);
	pthread_mutex_unlock(&c->lock);
	*ret = c;
	return 0;

fail_unregister:
	/* Nothing was handed out yet: the memory goes back to being ordinary memory. */
	for (size_t i = 0; i < registered; i++) {
		const struct fl__mon_region *t = &c->t.r[i];

		fl_uffd_unregister(c->uffd, (void *)(uintptr_t)t->addr, t->len);
		if (c->o.flags & FL_MONITOR_DONTFORK)
			madvise((void *)(uintptr_t)t->addr, t->len, MADV_DOFORK);
	}
	drop_beacon(c);
fail:
	client_free(c, true);
	return r;
}

FL_API void fl_monitor_detach(struct fl_monitor_client *c, uint32_t flags)
{
	int st;

	if (!c)
		return;
	if (c->pid != getpid()) {
		/* A forked child: the regions and the lock belong to the parent. */
		client_free(c, false);
		return;
	}
	if (c->beacon)
		registry_remove(c);
	if (c->has_watcher) {
		atomic_store(&c->stopping, true);
		kick(c);
		pthread_join(c->watcher, NULL);
	}
	pthread_mutex_lock(&c->lock);
	/*
	 * Tell the monitor to stop serving. The hang-up alone would not do: a
	 * child forked meanwhile may hold a copy of the connection.
	 */
	if (c->sock >= 0) {
		uint8_t bye[FL_MONITOR_HDR_LEN];
		size_t len = fl__mon_encode_bye(bye, sizeof(bye));

		fl__mon_send(c->sock, bye, len, -1, fl__now_ms() + 100);
	}
	c->sock = fl__safe_close(c->sock);
	st = get_state(c);
	if (st == FL_MONITOR_ATTACHED || st == FL_MONITOR_WAITING) {
		if (flags & FL_MONITOR_DETACH_KEEP) {
			wake_all(c);
			unregister_all(c);
		} else if (fail_loud(c, "detached", true) == FL_MONITOR_BLOCKED) {
			/* Nothing else keeps the faults from reading zeros: say so. */
			fl__warn("monitor %s: detached without poisoning: pages not yet present "
				 "become ordinary (zero) memory", c->path);
			unregister_all(c);
		}
	}
	if (st != FL_MONITOR_BLOCKED)
		drop_beacon(c);
	pthread_mutex_unlock(&c->lock);
	client_free(c, true);
}

FL_API struct fl_uffd *fl_monitor_client_uffd(struct fl_monitor_client *c)
{
	return c ? c->uffd : NULL;
}

FL_API int fl_monitor_client_state(const struct fl_monitor_client *c)
{
	if (!c)
		return fl__einval(__func__, "c is NULL");
	if (c->pid != getpid())
		return -ECHILD;
	return get_state(c);
}

FL_API int fl_monitor_client_fd(const struct fl_monitor_client *c)
{
	short ev;
	int fd;

	if (!c)
		return fl__einval(__func__, "c is NULL");
	if (c->pid != getpid())
		return -ECHILD;
	/* No lock: a re-attach attempt may hold it for up to ack_timeout_ms. */
	fd = state_fd(c, &ev);
	return fd >= 0 ? fd : -ENOTCONN;
}

FL_API int fl_monitor_client_check(struct fl_monitor_client *c)
{
	struct change ch = { 0 };
	int st;

	if (!c)
		return fl__einval(__func__, "c is NULL");
	if (c->pid != getpid())
		return -ECHILD;
	if (c->has_watcher)
		return get_state(c);
	pthread_mutex_lock(&c->lock);
	{
		struct pollfd p = { .fd = -1 };

		p.fd = state_fd(c, &p.events);
		if (p.fd >= 0 && poll(&p, 1, 0) < 0)
			p.revents = 0;
		step(c, p.revents, &ch);
	}
	st = get_state(c);
	pthread_mutex_unlock(&c->lock);
	notify(c, &ch);
	return st;
}

FL_API int fl_monitor_client_reattach(struct fl_monitor_client *c, const char *socket_path)
{
	struct change ch = { 0 };
	struct sockaddr_un sa;
	int r, st;

	if (!c)
		return fl__einval(__func__, "c is NULL");
	if (c->pid != getpid())
		return -ECHILD;
	if (socket_path) {
		r = fl__mon_sockaddr(socket_path, &sa);
		if (r == -EINVAL)
			return fl__einval(__func__, "socket_path \"%s\" is empty or a bare '@'",
					  socket_path);
		if (r < 0)
			return r;
	}
	pthread_mutex_lock(&c->lock);
	st = get_state(c);
	if (st == FL_MONITOR_ATTACHED) {
		r = -EISCONN;
	} else if (st != FL_MONITOR_WAITING || c->layout_lost) {
		r = -ENOTRECOVERABLE;
	} else {
		if (socket_path)
			memcpy(c->path, socket_path, strlen(socket_path) + 1);
		r = reattach_locked(c, false, &ch);
	}
	pthread_mutex_unlock(&c->lock);
	if (!r) {
		kick(c);
		notify(c, &ch);
	}
	return r;
}
