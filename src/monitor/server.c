/* SPDX-License-Identifier: MIT */
/* The monitor server: accept clients, hand shakes to threads, run pagers, watch for the end. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "monitor-int.h"
#include "server-int.h"

#define DEFAULT_THREADS 1
#define DEFAULT_MAX_CLIENTS 1024
#define DEFAULT_HANDSHAKE_MS 5000
#define DEFAULT_PROBE_MS 1000
/* Check threads at once (opening stores); past that, complete HELLOs wait their turn. */
#define MAX_CHECKS 64
/* Connections before their first message is in; past that, the oldest gives way. */
#define MAX_PENDING 1024
#define BACKLOG 256
/* How long a refused peer may still send (its HELLO, read and dropped) before the close. */
#define REFUSE_MS 200
/* How long a connection may outlive the process it serves before the probe ends its userfaultfd. */
#define SRV_EXIT_GRACE_MS 1000

/* epoll tags of the server's own descriptors; connections are tagged with themselves. */
static char tag_stop, tag_listen, tag_work, tag_timer, tag_ws;

/* ------------------------------------------------------------------ log */

void fl__srv_log(struct fl_monitor_server *s, enum fl_log_level level, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (s->o.log_fn)
		s->o.log_fn(level, msg, s->o.userdata);
	else
		fl__log(level, "%s", msg);
}

void fl__srv_stat(struct fl_monitor_server *s, enum srv_stat st, int64_t d)
{
	atomic_fetch_add(&s->st[st], (uint64_t)d);
	if (st != S_EVENTS)
		s->changed = true;
}

void fl__srv_post(struct fl_monitor_server *s, struct srv_work *w)
{
	uint64_t one = 1;

	w->next = NULL;
	pthread_mutex_lock(&s->lock);
	if (s->work_tail)
		s->work_tail->next = w;
	else
		s->work = w;
	s->work_tail = w;
	pthread_mutex_unlock(&s->lock);
	if (write(s->work_efd, &one, sizeof(one)) < 0) {
		/* The counter cannot overflow in practice; the item is queued either way. */
	}
}

static struct srv_work *take_work(struct fl_monitor_server *s)
{
	struct srv_work *w;

	pthread_mutex_lock(&s->lock);
	w = s->work;
	if (w) {
		s->work = w->next;
		if (!s->work)
			s->work_tail = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	return w;
}

static void work_free(struct srv_work *w)
{
	w->fd = fl__safe_close(w->fd);
	fl__srv_session_put(w->sess);
	fl__mon_hello_free(&w->h);
	free(w->buf);
	free(w->peer.groups);
	free(w->t.r);
	free(w);
}

/* ---------------------------------------------------------- connections */

static void conn_unlink(struct fl_monitor_server *s, struct srv_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
}

static void uffd_unlink(struct fl_monitor_server *s, struct srv_uffd *su)
{
	if (su->prev)
		su->prev->next = su->next;
	else
		s->served = su->next;
	if (su->next)
		su->next->prev = su->prev;
}

/* Queue @c (C_HANDSHAKE or C_REFUSING) by its deadline: each queue has one duration. */
static void conn_enqueue(struct fl_monitor_server *s, struct srv_conn *c, uint64_t deadline)
{
	struct srv_conn **head = c->state == C_HANDSHAKE ? &s->hs_head : &s->rf_head;
	struct srv_conn **tail = c->state == C_HANDSHAKE ? &s->hs_tail : &s->rf_tail;

	c->deadline = deadline;
	c->q_next = NULL;
	c->q_prev = *tail;
	if (*tail)
		(*tail)->q_next = c;
	else
		*head = c;
	*tail = c;
	c->queued = true;
	s->pending++;
}

static void conn_dequeue(struct fl_monitor_server *s, struct srv_conn *c)
{
	struct srv_conn **head = c->state == C_HANDSHAKE ? &s->hs_head : &s->rf_head;
	struct srv_conn **tail = c->state == C_HANDSHAKE ? &s->hs_tail : &s->rf_tail;

	if (!c->queued)
		return;
	if (c->q_prev)
		c->q_prev->q_next = c->q_next;
	else
		*head = c->q_next;
	if (c->q_next)
		c->q_next->q_prev = c->q_prev;
	else
		*tail = c->q_prev;
	c->q_next = c->q_prev = NULL;
	c->queued = false;
	s->pending--;
}

/* Watch @c for input (and its hang-up). Returns 0 or -errno. */
static int conn_add(struct fl_monitor_server *s, struct srv_conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };

	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		return -errno;
	c->watched = true;
	return 0;
}

static void conn_unwatch(struct fl_monitor_server *s, struct srv_conn *c)
{
	if (c->watched)
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	c->watched = false;
}

/* Stop serving @su and free it: @why goes to the log. */
static void end_uffd(struct fl_monitor_server *s, struct srv_uffd *su, const char *why,
		     bool poison)
{
	bool child = su->child;

	uffd_unlink(s, su);
	if (su->conn)
		su->conn->main = NULL;
	fl__srv_log(s, FL_LOG_INFO, "monitor: %s: %s; no longer served", su->name, why);
	/* Its working set is written and its counters added before it counts as ended. */
	fl__srv_uffd_free(su, poison);
	fl__srv_stat(s, S_CLIENTS, -1);
	if (child)
		fl__srv_stat(s, S_CHILDREN, -1);
	fl__srv_stat(s, S_ENDED, 1);
}

/*
 * Close a connection; the userfaultfd it attached is no longer served
 * (protocol rule 5). Its memory goes after the events of this round, which
 * may still name it (then its state says it is closed).
 */
static void conn_close(struct fl_monitor_server *s, struct srv_conn *c, const char *why)
{
	if (c->main)
		end_uffd(s, c->main, why, false);
	conn_dequeue(s, c);
	conn_unwatch(s, c);
	c->fd = fl__safe_close(c->fd);
	fl__mon_first_free(&c->first);
	free(c->peer.groups);
	c->peer.groups = NULL;
	conn_unlink(s, c);
	c->state = C_CLOSED;
	c->next = s->closed;
	s->closed = c;
	fl__srv_stat(s, S_CONNECTIONS, -1);
	s->accept_failed = false;
}

static void free_closed(struct fl_monitor_server *s)
{
	while (s->closed) {
		struct srv_conn *c = s->closed;

		s->closed = c->next;
		free(c);
	}
}

/* Drop what the peer sent so far (descriptors included: the kernel closes them unread). */
static void drain(int fd)
{
	uint8_t buf[4096];

	for (size_t drained = 0; drained < FL_MONITOR_MAX_MSG;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n <= 0)
			break;
		drained += (size_t)n;
	}
}

static void refuse(struct fl_monitor_server *s, struct srv_conn *c, int err, const char *msg,
		   bool json)
{
	uint8_t buf[FL_MONITOR_HDR_LEN + FL_MONITOR_ERROR_FIXED_LEN + FL_MONITOR_MAX_ERRMSG + 1];
	size_t len;

	fl__srv_log(s, FL_LOG_ERROR, "monitor: refused %s pid %d (uid %u): %s (%s)",
		    json ? "Firecracker" : "client", (int)c->pid, (unsigned int)c->uid, msg,
		    strerror(-err));
	fl__srv_stat(s, S_REFUSED, 1);
	/* Firecracker reads nothing back: it learns from the hang-up. */
	if (json)
		return;
	len = fl__mon_encode_error(err, msg, buf, sizeof(buf));
	fl__mon_send(c->fd, buf, len, -1, fl__now_ms() + REFUSE_MS);
	/*
	 * Unread bytes at close make the peer's kernel report a reset, which
	 * may hide the ERROR from it: drop what it sent already, then it reads
	 * the ERROR and a clean end.
	 */
	shutdown(c->fd, SHUT_WR);
	drain(c->fd);
}

/*
 * A peer whose uid is not served: its ERROR goes out at once, before it
 * sent anything perhaps. Its HELLO usually comes after: the connection
 * stays open for REFUSE_MS (or until the peer hangs up) to read and drop
 * it, so that closing on unread bytes does not reset the connection
 * before the peer read its answer. It holds no thread meanwhile.
 */
static void refuse_peer(struct fl_monitor_server *s, struct srv_conn *c, int err,
			const char *msg)
{
	uint8_t first;
	bool json = recv(c->fd, &first, 1, MSG_PEEK | MSG_DONTWAIT) == 1 &&
		    fl__mon_sniff(&first, 1) == FL__MON_SNIFF_JSON;

	refuse(s, c, err, msg, json);
	if (json || conn_add(s, c) < 0) {
		conn_close(s, c, "refused");
		return;
	}
	c->state = C_REFUSING;
	conn_enqueue(s, c, fl__now_ms() + REFUSE_MS);
}

static void refusing_input(struct fl_monitor_server *s, struct srv_conn *c)
{
	uint8_t buf[4096];

	/* Bounded in one round: a peer that keeps sending waits for the next. */
	for (int i = 0; i < 16; i++) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		conn_close(s, c, "refused");
		return;
	}
}

/* Make room for a new connection: the oldest that has not finished its handshake goes. */
static bool give_way(struct fl_monitor_server *s, const char *why)
{
	struct srv_conn *c = s->rf_head ? s->rf_head : s->hs_head;

	if (!c)
		return false;
	if (c->state == C_HANDSHAKE)
		refuse(s, c, -EBUSY, why, c->first.kind == FL__MON_SNIFF_JSON);
	conn_close(s, c, "gave way to a newer connection");
	return true;
}

/* ------------------------------------------------------------ handshake */

static unsigned int checks(struct fl_monitor_server *s)
{
	unsigned int n;

	pthread_mutex_lock(&s->lock);
	n = s->checks;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* A check thread: what may block (opening the stores) happens here, not in the loop. */
static void *check_main(void *arg)
{
	struct srv_work *w = arg;
	struct fl_monitor_server *s = w->srv;
	int r = fl__mon_check_uffd(w->fd, w->msg, sizeof(w->msg));

	if (r < 0) {
		w->err = r == -EBADF ? r : -EBADF;
	} else {
		/* The session takes the hello and its buffer, whatever happens. */
		r = fl__srv_session_open(s, &w->peer, &w->h, w->buf, &w->sess, w->msg,
					 sizeof(w->msg));
		w->buf = NULL;
		w->err = r < 0 ? r : 0;
	}
	fl__srv_post(s, w);
	pthread_mutex_lock(&s->lock);
	s->checks--;
	pthread_cond_broadcast(&s->checks_done);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void hello_done(struct fl_monitor_server *s, struct srv_work *w);

/* Start a check thread for each HELLO waiting, as far as MAX_CHECKS allows. */
static void start_checks(struct fl_monitor_server *s)
{
	while (s->waiting && checks(s) < MAX_CHECKS) {
		struct srv_work *w = s->waiting;
		pthread_attr_t attr;
		pthread_t t;
		int e;

		s->waiting = w->next;
		if (!s->waiting)
			s->waiting_tail = NULL;
		w->next = NULL;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_mutex_lock(&s->lock);
		s->checks++;
		pthread_mutex_unlock(&s->lock);
		/* Check threads take no signals meant for the program's threads. */
		e = -fl__thread_start(&t, &attr, check_main, w, NULL);
		pthread_attr_destroy(&attr);
		if (e) {
			pthread_mutex_lock(&s->lock);
			s->checks--;
			pthread_mutex_unlock(&s->lock);
			w->err = -e;
			snprintf(w->msg, sizeof(w->msg), "no thread to check the handshake: %s",
				 strerror(e));
			hello_done(s, w);
		}
	}
}

static void claim_done(struct fl_monitor_server *s, struct srv_conn *c,
		       const struct fl__mon_claim *claim);

/* The first message of @c is in (@r 0), or cannot be (@r < 0, @err says why). */
static void handshake_end(struct fl_monitor_server *s, struct srv_conn *c, int r, char *err)
{
	bool json = c->first.kind == FL__MON_SNIFF_JSON, is_claim = false;
	struct fl__mon_hello h = { .r = NULL };
	struct fl__mon_claim claim;
	struct srv_work *w;
	void *buf = NULL;
	int fd = -1;

	conn_dequeue(s, c);
	conn_unwatch(s, c);
	if (!r)
		r = fl__mon_first_end(&c->first, &h, &buf, &fd, &claim, &is_claim, err,
				      SRV_ERRLEN);
	if (r == -EPIPE && !c->first.have) {
		/* Gone without a word (a probe, a client that gave up): nothing to refuse. */
		fl__srv_log(s, FL_LOG_DEBUG, "monitor: pid %d (uid %u) hung up before a handshake",
			    (int)c->pid, (unsigned int)c->uid);
		conn_close(s, c, "it hung up");
		return;
	}
	fl__mon_first_free(&c->first);
	if (r < 0) {
		refuse(s, c, r, err, json);
		conn_close(s, c, "refused");
		return;
	}
	if (is_claim) {
		/* A fork()ed child: the loop knows its token. */
		claim_done(s, c, &claim);
		return;
	}
	c->firecracker = h.firecracker;
	w = calloc(1, sizeof(*w));
	if (!w) {
		fl__mon_hello_free(&h);
		free(buf);
		fl__safe_close(fd);
		refuse(s, c, -ENOMEM, "out of memory", c->firecracker);
		conn_close(s, c, "refused");
		return;
	}
	*w = (struct srv_work){ .type = W_HELLO, .srv = s, .conn = c, .fd = fd, .h = h,
				.buf = buf, .peer = c->peer, .json = h.firecracker };
	c->peer.groups = NULL;
	c->state = C_CHECKING;
	if (s->waiting_tail)
		s->waiting_tail->next = w;
	else
		s->waiting = w;
	s->waiting_tail = w;
	start_checks(s);
}

static void handshake_input(struct fl_monitor_server *s, struct srv_conn *c)
{
	char err[SRV_ERRLEN];
	int r = fl__mon_first_feed(&c->first, c->fd, err, sizeof(err));

	if (r != -EAGAIN)
		handshake_end(s, c, r, err);
}

/* Deadlines: handshakes that did not complete, refused peers that had their time. */
static void expire(struct fl_monitor_server *s)
{
	uint64_t now = fl__now_ms();

	while (s->rf_head && s->rf_head->deadline <= now)
		conn_close(s, s->rf_head, "refused");
	while (s->hs_head && s->hs_head->deadline <= now) {
		struct srv_conn *c = s->hs_head;
		char err[SRV_ERRLEN];
		int r = fl__mon_first_expire(&c->first, err, sizeof(err));

		handshake_end(s, c, r, err);
	}
}

/* Milliseconds until the next deadline, or -1. */
static int next_deadline_ms(struct fl_monitor_server *s)
{
	uint64_t d = UINT64_MAX;

	if (s->hs_head)
		d = s->hs_head->deadline;
	if (s->rf_head && s->rf_head->deadline < d)
		d = s->rf_head->deadline;
	return d == UINT64_MAX ? -1 : fl__mon_left_ms(d);
}

static void set_listening(struct fl_monitor_server *s, bool on)
{
	struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.ptr = &tag_listen };

	if (s->listening == on)
		return;
	epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->listen_fd, &ev);
	s->listening = on;
}

/* A new connection: its peer is checked at once, its first message read as it comes. */
static void conn_new(struct fl_monitor_server *s, int fd)
{
	struct srv_conn *c = calloc(1, sizeof(*c));
	char err[SRV_ERRLEN];
	int r;

	if (!c || fl__mon_first_init(&c->first) < 0) {
		fl__srv_log(s, FL_LOG_ERROR, "monitor: out of memory for a connection");
		free(c);
		close(fd);
		return;
	}
	c->srv = s;
	c->fd = fd;
	c->state = C_HANDSHAKE;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	fl__srv_stat(s, S_CONNECTIONS, 1);
	r = fl__srv_peer_get(s, fd, &c->peer, err, sizeof(err));
	c->pid = c->peer.pid;
	c->uid = c->peer.uid;
	c->gid = c->peer.gid;
	if (r < 0) {
		refuse_peer(s, c, r, err);
		return;
	}
	r = conn_add(s, c);
	if (r < 0) {
		fl__srv_log(s, FL_LOG_ERROR, "monitor: pid %d: epoll: %s", (int)c->pid,
			    strerror(-r));
		conn_close(s, c, "cannot be watched");
		return;
	}
	conn_enqueue(s, c, fl__now_ms() + s->o.handshake_ms);
}

static void accept_all(struct fl_monitor_server *s)
{
	for (;;) {
		int fd, e;

		if (s->pending >= MAX_PENDING)
			give_way(s, "too many connections wait for their handshake");
		fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0) {
			conn_new(s, fd);
			continue;
		}
		e = errno;
		if (e == EINTR || e == ECONNABORTED)
			continue;
		if (e == EAGAIN || e == EWOULDBLOCK)
			return;
		if ((e == EMFILE || e == ENFILE) &&
		    give_way(s, "the monitor is out of descriptors"))
			continue;
		/* Out of descriptors or memory: wait until something ends. */
		fl__srv_log(s, FL_LOG_ERROR, "monitor: accept: %s; accepting again when a "
			    "connection ends", strerror(e));
		s->accept_failed = true;
		set_listening(s, false);
		return;
	}
}

/* --------------------------------------------------------------- work */

static size_t count_clients(struct fl_monitor_server *s)
{
	return (size_t)atomic_load(&s->st[S_CLIENTS]);
}

static void link_uffd(struct fl_monitor_server *s, struct srv_uffd *su)
{
	su->next = s->served;
	su->prev = NULL;
	if (s->served)
		s->served->prev = su;
	s->served = su;
	fl__srv_stat(s, S_CLIENTS, 1);
	if (su->child)
		fl__srv_stat(s, S_CHILDREN, 1);
}

/* Watch a connection that now serves: after its answer only BYE or the hang-up may come. */
static int conn_watch(struct fl_monitor_server *s, struct srv_conn *c, const char *name)
{
	int r = conn_add(s, c);

	if (r < 0) {
		fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: epoll: %s", name, strerror(-r));
		return r;
	}
	c->state = C_SERVING;
	return 0;
}

static void hello_done(struct fl_monitor_server *s, struct srv_work *w)
{
	struct srv_conn *c = w->conn;
	struct srv_session *sess = w->sess;
	struct fl__mon_table t = { .r = NULL };
	struct srv_uffd *su;
	char name[64], msg[SRV_ERRLEN];
	int r;

	if (w->err) {
		refuse(s, c, w->err, w->msg, w->json);
		conn_close(s, c, "refused");
		work_free(w);
		return;
	}
	snprintf(name, sizeof(name), "%s pid %d", sess->firecracker ? "Firecracker" : "client",
		 (int)sess->pid);
	if (sess->attach_seq) {
		/* The client gave up on its old connection: never two readers of one descriptor. */
		for (su = s->served; su; su = su->next) {
			uint64_t id = su->child ? su->child_session : su->sess->id;

			if ((su->child && !su->claimed) || su->sess->firecracker ||
			    id != sess->id || su->sess->uid != sess->uid)
				continue;
			fl__srv_log(s, FL_LOG_WARN, "monitor: %s: re-attach %u of session %016llx "
				    "replaces its previous connection", name, sess->attach_seq,
				    (unsigned long long)sess->id);
			if (su->conn)
				conn_close(s, su->conn, "replaced by a re-attach");
			else
				end_uffd(s, su, "replaced by a re-attach", false);
			break;
		}
	}
	if (count_clients(s) >= s->o.max_clients) {
		snprintf(msg, sizeof(msg), "the monitor serves %zu userfaultfds already, its limit",
			 count_clients(s));
		refuse(s, c, -EUSERS, msg, w->json);
		conn_close(s, c, "refused");
		work_free(w);
		return;
	}
	t.n = t.cap = sess->h.n;
	t.r = malloc(t.n * sizeof(*t.r));
	if (!t.r) {
		refuse(s, c, -ENOMEM, "out of memory", w->json);
		conn_close(s, c, "refused");
		work_free(w);
		return;
	}
	memcpy(t.r, sess->h.r, t.n * sizeof(*t.r));
	fl__mon_table_sort(&t);
	r = fl__srv_uffd_new(s, sess, w->fd, sess->firecracker ? -1 : c->fd, &t, false, name, &su,
			     msg, sizeof(msg));
	free(t.r);
	if (r < 0) {
		refuse(s, c, r, msg, w->json);
		conn_close(s, c, "refused");
		work_free(w);
		return;
	}
	/* The userfaultfd and the session are the served one's now. */
	w->fd = -1;
	w->sess = NULL;
	su->conn = c;
	c->main = su;
	link_uffd(s, su);
	if (!sess->firecracker) {
		r = fl__srv_uffd_ack(su);
		if (r < 0) {
			/* A connection whose client gave up (protocol rule 6): next. */
			conn_close(s, c, r == -EPIPE ? "gone before the ACK" : "the ACK failed");
			work_free(w);
			return;
		}
	}
	if (conn_watch(s, c, name) < 0) {
		conn_close(s, c, "cannot be watched");
		work_free(w);
		return;
	}
	fl__srv_stat(s, S_ATTACHED, 1);
	if (sess->attach_seq)
		fl__srv_stat(s, S_REATTACHED, 1);
	if (sess->firecracker)
		fl__srv_stat(s, S_FIRECRACKER, 1);
	fl__srv_log(s, FL_LOG_INFO, "monitor: %s (uid %u) attached %u region%s%s%s", name,
		    (unsigned int)sess->uid, sess->h.n, sess->h.n == 1 ? "" : "s",
		    sess->attach_seq ? ", re-attaching" : "",
		    sess->firecracker ? " from Firecracker" : "");
	work_free(w);
}

static void fork_done(struct fl_monitor_server *s, struct srv_work *w)
{
	struct srv_uffd *su;
	char name[64], msg[SRV_ERRLEN];
	int r;

	snprintf(name, sizeof(name), "child %u of %.40s", w->nth, w->parent);
	if (w->layout_lost || count_clients(s) >= s->o.max_clients) {
		fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: not served (%s): failing it loudly",
			    name, w->layout_lost ? "the layout is lost" : "too many clients");
		fl__srv_refuse_child(s, w->fd, w->sess->features, &w->t);
		w->fd = -1;
		work_free(w);
		return;
	}
	r = fl__srv_uffd_new(s, w->sess, w->fd, -1, &w->t, true, name, &su, msg, sizeof(msg));
	if (r == -ESRCH) {
		fl__srv_log(s, FL_LOG_DEBUG, "monitor: %s exited before it was served", name);
		work_free(w);
		return;
	}
	if (r < 0) {
		fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: not served: %s; failing it loudly", name,
			    msg);
		fl__srv_refuse_child(s, w->fd, w->sess->features, &w->t);
		w->fd = -1;
		work_free(w);
		return;
	}
	w->fd = -1;
	w->sess = NULL;
	link_uffd(s, su);
	fl__srv_stat(s, S_FORKS, 1);
	fl__srv_log(s, FL_LOG_INFO, "monitor: %s: served (%zu regions)", name, su->nrg);
	work_free(w);
}

/* A fork()ed child claims its descriptor (protocol section 3.6). */
static void claim_done(struct fl_monitor_server *s, struct srv_conn *c,
		       const struct fl__mon_claim *claim)
{
	struct srv_uffd *su;
	char msg[SRV_ERRLEN];
	int r;

	for (su = s->served; su; su = su->next)
		if (su->child && !su->claimed && su->token && su->token == claim->token &&
		    su->child_session == claim->session)
			break;
	if (!su || su->sess->uid != c->uid) {
		/* The same answer either way: a wrong guess learns nothing. */
		snprintf(msg, sizeof(msg), "no fork()ed child waits for session %016llx with "
			 "this token", (unsigned long long)claim->session);
		refuse(s, c, -ENOENT, msg, false);
		conn_close(s, c, "refused");
		return;
	}
	r = fl__srv_uffd_grant(su, c->fd);
	if (r < 0) {
		fl__srv_log(s, FL_LOG_WARN, "monitor: %s: sending its GRANT: %s; served without "
			    "a connection", su->name, strerror(-r));
		conn_close(s, c, r == -EPIPE ? "gone before the GRANT" : "the GRANT failed");
		return;
	}
	if (conn_watch(s, c, su->name) < 0) {
		fl__srv_uffd_unlink_conn(su);
		conn_close(s, c, "cannot be watched");
		return;
	}
	su->conn = c;
	c->main = su;
	fl__srv_log(s, FL_LOG_INFO, "monitor: %s (pid %d) claimed its userfaultfd; it now has "
		    "a connection of its own", su->name, (int)c->pid);
}

static void do_work(struct fl_monitor_server *s)
{
	struct srv_work *w;
	uint64_t v;

	if (read(s->work_efd, &v, sizeof(v)) < 0) {
		/* Nothing counted: items may still be there from a wake-up we consumed. */
	}
	while ((w = take_work(s))) {
		if (w->type == W_HELLO)
			hello_done(s, w);
		else
			fork_done(s, w);
	}
	/* Check threads ended: HELLOs waiting get theirs. */
	start_checks(s);
}

/* ------------------------------------------------------------- watching */

/* What a serving connection says: nothing but BYE, or the hang-up. */
static void conn_input(struct fl_monitor_server *s, struct srv_conn *c, uint32_t events)
{
	char err[SRV_ERRLEN];

	for (;;) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(8 * sizeof(int))];
		} ctl;
		uint8_t junk[256];
		struct iovec iov = c->firecracker
			? (struct iovec){ junk, sizeof(junk) }
			: (struct iovec){ c->in + c->in_len, sizeof(c->in) - c->in_len };
		struct msghdr m = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = ctl.buf,
			.msg_controllen = sizeof(ctl.buf),
		};
		ssize_t n = recvmsg(c->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		int fds = 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (events & (EPOLLHUP | EPOLLERR))
				conn_close(s, c, "its connection broke");
			return;
		}
		if (n < 0) {
			conn_close(s, c, "its connection broke");
			return;
		}
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
			if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int fd;

				memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(fd));
				close(fd);
				fds++;
			}
		}
		if (n == 0) {
			conn_close(s, c, c->firecracker ? "the VM's socket closed" : "it hung up");
			return;
		}
		if (c->firecracker)
			continue;	/* Firecracker says nothing more; ignore what it says */
		c->in_len += (size_t)n;
		if (fds) {
			refuse(s, c, -EPROTO, "descriptors attached to a message after the HELLO",
			       false);
			conn_close(s, c, "it broke the protocol");
			return;
		}
		if (c->in_len < FL_MONITOR_HDR_LEN)
			continue;
		{
			size_t total = 0;
			int r = fl__mon_frame(c->in, c->in_len, &total, err, sizeof(err));

			if (!r && (total != FL_MONITOR_HDR_LEN ||
				   fl__mon_msg_type(c->in) != FL_MONITOR_MSG_BYE)) {
				snprintf(err, sizeof(err), "message type %u of %zu bytes while "
					 "attached: only BYE is expected", fl__mon_msg_type(c->in),
					 total);
				r = -EPROTO;
			}
			if (!r)
				r = fl__mon_decode_bye(c->in, c->in_len, err, sizeof(err));
			if (r < 0) {
				refuse(s, c, r, err, false);
				conn_close(s, c, "it broke the protocol");
				return;
			}
			conn_close(s, c, "it detached (BYE)");
			return;
		}
	}
}

/* The peer of @c closed its end (what conn_input will read as the end). */
static bool conn_hung_up(const struct srv_conn *c)
{
	struct pollfd pf = { .fd = c->fd, .events = POLLRDHUP };

	return poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/*
 * Processes that exited leave their userfaultfd behind in silence: look.
 *
 * A process that exits drops its memory before its descriptors, so a probe
 * can find it gone while its connection is still open, an instant before
 * the hang-up. One process's end has one reason in the log: while it has a
 * connection, the connection's end is it. The probe ends such a userfaultfd
 * itself only when the connection outlives the process by
 * SRV_EXIT_GRACE_MS (another process holds the socket).
 */
static void probe_all(struct fl_monitor_server *s)
{
	struct srv_uffd *su = s->served, *next;
	uint64_t v, now = fl__now_ms();

	if (read(s->timer_fd, &v, sizeof(v)) < 0) {
		/* Not expired yet: a spurious wake-up. */
	}
	s->accept_failed = false;	/* out of descriptors a while ago: try again */
	for (; su; su = next) {
		next = su->next;
		if (fl__srv_uffd_alive(su) != -ESRCH)
			continue;
		if (su->conn && su->conn->state == C_SERVING) {
			if (conn_hung_up(su->conn)) {
				conn_input(s, su->conn, EPOLLHUP);
				continue;
			}
			if (!su->exited_ms)
				su->exited_ms = now;
			if (now - su->exited_ms < SRV_EXIT_GRACE_MS)
				continue;
		}
		end_uffd(s, su, "its process exited", false);
	}
}

/* fl_monitor_server_ws_save() asked: every VM served now writes what it recorded. */
static void ws_save_all(struct fl_monitor_server *s)
{
	uint64_t v;

	if (read(s->ws_efd, &v, sizeof(v)) < 0) {
		/* Already consumed. */
	}
	for (struct srv_uffd *su = s->served; su; su = su->next)
		fl__srv_uffd_ws_save(su);
}

FL_API int fl_monitor_server_run(struct fl_monitor_server *s)
{
	if (!s)
		return fl__einval(__func__, "s is NULL");
	for (;;) {
		struct epoll_event ev[64];
		bool stop = false;
		int n = epoll_wait(s->epfd, ev, 64, next_deadline_ms(s));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			void *tag = ev[i].data.ptr;

			if (tag == &tag_stop) {
				uint64_t v;

				if (read(s->stop_efd, &v, sizeof(v)) < 0) {
					/* Already consumed. */
				}
				stop = true;
			} else if (tag == &tag_listen) {
				accept_all(s);
			} else if (tag == &tag_work) {
				do_work(s);
			} else if (tag == &tag_timer) {
				probe_all(s);
			} else if (tag == &tag_ws) {
				ws_save_all(s);
			} else {
				/* An earlier entry may have closed it: then it is C_CLOSED. */
				struct srv_conn *c = tag;

				if (c->state == C_SERVING)
					conn_input(s, c, ev[i].events);
				else if (c->state == C_HANDSHAKE)
					handshake_input(s, c);
				else if (c->state == C_REFUSING)
					refusing_input(s, c);
			}
		}
		expire(s);
		free_closed(s);
		if (!s->listening && !s->accept_failed)
			set_listening(s, true);
		if (s->changed) {
			s->changed = false;
			if (s->o.on_change)
				s->o.on_change(s, s->o.userdata);
		}
		if (stop)
			return 0;
	}
}

FL_API int fl_monitor_server_stop(struct fl_monitor_server *s)
{
	uint64_t one = 1;
	int saved = errno;

	if (!s)
		return fl__einval(__func__, "s is NULL");
	if (write(s->stop_efd, &one, sizeof(one)) < 0) {
		/* Only a full counter fails, and then a stop is pending anyway. */
	}
	errno = saved;
	return 0;
}

FL_API int fl_monitor_server_ws_save(struct fl_monitor_server *s)
{
	uint64_t one = 1;
	int saved = errno;

	if (!s || !s->fc_record)
		return fl__einval(__func__, "%s", !s ? "s is NULL" : "the server records no "
				  "working sets (firecracker_ws_record)");
	if (write(s->ws_efd, &one, sizeof(one)) < 0) {
		/* Only a full counter fails, and then a save is pending anyway. */
	}
	errno = saved;
	return 0;
}

FL_API int fl_monitor_server_stats(const struct fl_monitor_server *s,
				   struct fl_monitor_server_stats *out)
{
	struct fl_monitor_server *m = (struct fl_monitor_server *)s;
	struct fl_monitor_server_stats st, *ret = &st;

	if (!s || !out)
		return fl__einval(__func__, "%s is NULL", !s ? "s" : "ret");
	*ret = (struct fl_monitor_server_stats){
		.clients = atomic_load(&m->st[S_CLIENTS]),
		.children = atomic_load(&m->st[S_CHILDREN]),
		.connections = atomic_load(&m->st[S_CONNECTIONS]),
		.attached = atomic_load(&m->st[S_ATTACHED]),
		.reattached = atomic_load(&m->st[S_REATTACHED]),
		.firecracker = atomic_load(&m->st[S_FIRECRACKER]),
		.refused = atomic_load(&m->st[S_REFUSED]),
		.forks = atomic_load(&m->st[S_FORKS]),
		.events = atomic_load(&m->st[S_EVENTS]),
		.ended = atomic_load(&m->st[S_ENDED]),
		.faults = atomic_load(&m->st[S_FAULTS]),
		.ws_prefetched = atomic_load(&m->st[S_WS_PREFETCHED]),
		.ws_saved = atomic_load(&m->st[S_WS_SAVED]),
	};
	return fl__stats_out(out, ret, sizeof(*ret), __func__);
}

/* ------------------------------------------------------------ creation */

/*
 * Bind @path; a socket file nobody listens on any more (a dead monitor's)
 * is replaced, anything else there is left alone. Every failure is logged
 * here, once, saying what was wrong.
 */
static int listen_on(struct fl_monitor_server *s, const char *path)
{
	struct sockaddr_un sa;
	_fl_cleanup_close_ int fd = -1;
	int salen = fl__mon_sockaddr(path, &sa), e;
	bool file = path[0] != '@';

	if (salen < 0) {
		fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: %s", path,
			    salen == -ENAMETOOLONG ? "too long for a unix socket address"
						   : "not a socket address");
		return salen;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		e = errno;
		fl__srv_log(s, FL_LOG_ERROR, "monitor: socket: %s", strerror(e));
		return -e;
	}
	if (bind(fd, (struct sockaddr *)&sa, (socklen_t)salen) < 0) {
		_fl_cleanup_close_ int probe = -1;
		struct stat st;

		e = errno;
		if (e != EADDRINUSE || !file || lstat(path, &st) < 0) {
			fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: %s", path,
				    e == EADDRINUSE ? "another monitor listens there" : strerror(e));
			return -e;
		}
		if (!S_ISSOCK(st.st_mode)) {
			/* Not a monitor's leftover: never replaced, and not "in use" either. */
			fl__srv_log(s, FL_LOG_ERROR, "monitor: %s exists and is not a socket (%s): "
				    "not replacing it", path, S_ISDIR(st.st_mode) ? "a directory" :
				    S_ISREG(st.st_mode) ? "a regular file" : "another kind of file");
			return -EEXIST;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe < 0) {
			e = errno;
			fl__srv_log(s, FL_LOG_ERROR, "monitor: socket: %s", strerror(e));
			return -e;
		}
		if (connect(probe, (struct sockaddr *)&sa, (socklen_t)salen) == 0 ||
		    errno != ECONNREFUSED) {
			fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: another monitor listens there",
				    path);
			return -EADDRINUSE;
		}
		fl__srv_log(s, FL_LOG_INFO, "monitor: %s: replacing the socket of a monitor that "
			    "is gone", path);
		if (unlink(path) < 0 || bind(fd, (struct sockaddr *)&sa, (socklen_t)salen) < 0) {
			e = errno;
			fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: replacing it: %s", path,
				    strerror(e));
			return -e;
		}
	}
	/* Nobody can connect before listen(): the file has its final permissions by then. */
	if (file && s->o.socket_mode && chmod(path, s->o.socket_mode) < 0) {
		e = errno;
		fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: chmod %04o: %s", path,
			    (unsigned int)s->o.socket_mode, strerror(e));
		unlink(path);
		return -e;
	}
	if (file && (s->o.flags & FL_MONITOR_SERVER_SOCKET_GROUP) &&
	    lchown(path, (uid_t)-1, (gid_t)s->o.socket_gid) < 0) {
		e = errno;
		fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: giving it to group %u: %s", path,
			    (unsigned int)s->o.socket_gid, strerror(e));
		unlink(path);
		return -e;
	}
	if (listen(fd, BACKLOG) < 0) {
		e = errno;
		fl__srv_log(s, FL_LOG_ERROR, "monitor: %s: listen: %s", path, strerror(e));
		if (file)
			unlink(path);
		return -e;
	}
	s->listen_fd = FL__TAKE_FD(fd);
	s->own_listen = true;
	s->own_file = file;
	return 0;
}

static int check_opts(const struct fl_monitor_server_opts *opts,
		      struct fl_monitor_server_opts *o)
{
	if (!opts) {
		fl__err("fl_monitor_server_create: no options (a socket_path or listen_fd is "
			"needed)");
		return -EINVAL;
	}
	if (fl__opts_copy(o, sizeof(*o), opts, "fl_monitor_server_create") < 0)
		return -EINVAL;
	if (o->socket_mode > 07777) {
		fl__err("fl_monitor_server_create: socket_mode %#o is more than permission bits",
			o->socket_mode);
		return -EINVAL;
	}
	if ((o->socket_mode || (o->flags & FL_MONITOR_SERVER_SOCKET_GROUP)) &&
	    (!o->socket_path || o->socket_path[0] == '@')) {
		fl__err("fl_monitor_server_create: socket_mode and a socket group need a socket "
			"file (a socket_path that is not @abstract)");
		return -EINVAL;
	}
	if ((!o->socket_path && o->listen_fd < 0) || (o->n_allowed_uids && !o->allowed_uids) ||
	    (o->flags & ~(uint32_t)(FL_MONITOR_SERVER_ANY_UID | FL_MONITOR_SERVER_NO_FILES |
				    FL_MONITOR_SERVER_SOCKET_GROUP)) ||
	    o->threads > FL_PAGER_MAX_THREADS || (unsigned int)o->prefetch > FL_PREFETCH_ADAPTIVE ||
	    (o->store_root && o->store_root[0] != '/') ||
	    (o->firecracker_mem_file && o->firecracker_snapshot) ||
	    ((o->firecracker_ws_record || o->firecracker_ws_replay) &&
	     !o->firecracker_mem_file && !o->firecracker_snapshot))
		return fl__einval("fl_monitor_server_create", "%s",
				  !o->socket_path && o->listen_fd < 0 ?
				  "neither socket_path nor listen_fd" :
				  o->n_allowed_uids && !o->allowed_uids ?
				  "n_allowed_uids without allowed_uids" :
				  o->store_root && o->store_root[0] != '/' ?
				  "store_root is not an absolute path" :
				  o->firecracker_mem_file && o->firecracker_snapshot ?
				  "firecracker_mem_file and firecracker_snapshot exclude each other" :
				  (o->firecracker_ws_record || o->firecracker_ws_replay) &&
				  !o->firecracker_mem_file && !o->firecracker_snapshot ?
				  "working sets without Firecracker's memory (firecracker_mem_file "
				  "or firecracker_snapshot)" :
				  "unknown flags or prefetch policy, or too many threads");
	if (!o->threads)
		o->threads = DEFAULT_THREADS;
	if (!o->max_clients)
		o->max_clients = DEFAULT_MAX_CLIENTS;
	if (!o->handshake_ms)
		o->handshake_ms = DEFAULT_HANDSHAKE_MS;
	if (!o->probe_ms)
		o->probe_ms = DEFAULT_PROBE_MS;
	return 0;
}

/* Firecracker's memory: the memory file whole, or each region of a snapshot (end to end). */
static int open_fc(struct fl_monitor_server *s)
{
	const char *path = s->o.firecracker_mem_file ? s->o.firecracker_mem_file
						     : s->o.firecracker_snapshot;
	struct fl_snapshot_info info = { .sz = sizeof(info) };
	struct fl_snapshot *snap = NULL;
	uint64_t start = 0;
	int e;

	if (!path)
		return 0;
	if ((s->o.firecracker_ws_record && !(s->fc_record = strdup(s->o.firecracker_ws_record))) ||
	    (s->o.firecracker_ws_replay && !(s->fc_replay = strdup(s->o.firecracker_ws_replay))))
		return -ENOMEM;
	s->o.firecracker_ws_record = s->fc_record;
	s->o.firecracker_ws_replay = s->fc_replay;
	if (s->o.firecracker_mem_file) {
		s->fc = calloc(1, sizeof(*s->fc));
		if (!s->fc)
			return -ENOMEM;
		e = fl_store_file_open(path, NULL, &s->fc[0].s);
		if (e < 0) {
			fl__srv_log(s, FL_LOG_ERROR, "monitor: Firecracker memory file %s: %s", path,
				    strerror(-e));
			return e;
		}
		s->fc[0].len = fl_store_size(s->fc[0].s);
		s->nfc = 1;
		s->o.firecracker_mem_file = NULL;
		return 0;
	}
	e = fl_snapshot_open(path, NULL, &snap);
	if (e == 0)
		e = fl_snapshot_info(snap, &info);
	if (e == 0) {
		s->fc = calloc(info.regions ? info.regions : 1, sizeof(*s->fc));
		if (!s->fc)
			e = -ENOMEM;
	}
	for (uint32_t i = 0; e == 0 && i < info.regions; i++) {
		struct fl_snapshot_region_info ri = { .sz = sizeof(ri) };

		e = fl_snapshot_region_info(snap, i, &ri);
		if (e == 0)
			e = fl_snapshot_store(snap, i, &s->fc[i].s);
		if (e < 0)
			break;
		s->fc[i].start = start;
		s->fc[i].len = ri.len;
		s->fc[i].page_size = (size_t)ri.page_size;
		s->nfc++;
		start += ri.len;
	}
	fl_snapshot_close(snap);
	if (e < 0) {
		fl__srv_log(s, FL_LOG_ERROR, "monitor: Firecracker snapshot %s: %s", path,
			    strerror(-e));
		return e;
	}
	s->fc_snapshot = true;
	s->o.firecracker_snapshot = NULL;
	return 0;
}

static int add_fd(struct fl_monitor_server *s, int fd, void *tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };

	return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

FL_API int fl_monitor_server_create(const struct fl_monitor_server_opts *opts,
				    struct fl_monitor_server **ret)
{
	struct fl_monitor_server *s;
	struct itimerspec its;
	int e;

	if (!ret)
		return fl__einval(__func__, "ret is NULL");
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->listen_fd = s->root_fd = s->epfd = s->stop_efd = s->work_efd = s->timer_fd = -1;
	s->ws_efd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->checks_done, NULL);
	e = check_opts(opts, &s->o);
	if (e < 0)
		goto fail;
	s->euid = geteuid();
	if (s->o.n_allowed_uids) {
		s->uids = calloc(s->o.n_allowed_uids, sizeof(*s->uids));
		if (!s->uids) {
			e = -ENOMEM;
			goto fail;
		}
		memcpy(s->uids, s->o.allowed_uids, s->o.n_allowed_uids * sizeof(*s->uids));
		s->nuids = s->o.n_allowed_uids;
	}
	s->o.allowed_uids = NULL;
	if (s->o.store_root) {
		size_t l = strlen(s->o.store_root);

		s->root = strdup(s->o.store_root);
		if (!s->root) {
			e = -ENOMEM;
			goto fail;
		}
		while (l > 1 && s->root[l - 1] == '/')
			s->root[--l] = '\0';
		s->root_fd = open(s->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (s->root_fd < 0) {
			e = -errno;
			fl__srv_log(s, FL_LOG_ERROR, "monitor: store root %s: %s", s->root,
				    strerror(-e));
			goto fail;
		}
		s->o.store_root = s->root;
	}
	e = open_fc(s);
	if (e < 0)
		goto fail;
	if (s->o.socket_path) {
		s->socket_path = strdup(s->o.socket_path);
		if (!s->socket_path) {
			e = -ENOMEM;
			goto fail;
		}
		s->o.socket_path = s->socket_path;
		e = listen_on(s, s->socket_path);
		if (e < 0)
			goto fail;
	} else {
		int fl = fcntl(s->o.listen_fd, F_GETFL), acc = 0;
		socklen_t len = sizeof(acc);

		if (fl < 0 ||
		    getsockopt(s->o.listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc) {
			e = fl < 0 ? -EBADF : fl__einval(__func__, "listen_fd %d is not a "
							       "listening socket", s->o.listen_fd);
			goto fail;
		}
		s->listen_fd = s->o.listen_fd;
		fcntl(s->listen_fd, F_SETFL, fl | O_NONBLOCK);
	}
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	s->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->work_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	s->ws_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->epfd < 0 || s->stop_efd < 0 || s->work_efd < 0 || s->timer_fd < 0 ||
	    s->ws_efd < 0) {
		e = -errno;
		goto fail;
	}
	its.it_interval = (struct timespec){ .tv_sec = s->o.probe_ms / 1000,
					     .tv_nsec = (long)(s->o.probe_ms % 1000) * 1000000 };
	its.it_value = its.it_interval;
	if (timerfd_settime(s->timer_fd, 0, &its, NULL) < 0) {
		e = -errno;
		goto fail;
	}
	e = add_fd(s, s->stop_efd, &tag_stop);
	if (!e)
		e = add_fd(s, s->work_efd, &tag_work);
	if (!e)
		e = add_fd(s, s->timer_fd, &tag_timer);
	if (!e)
		e = add_fd(s, s->ws_efd, &tag_ws);
	if (!e)
		e = add_fd(s, s->listen_fd, &tag_listen);
	if (e < 0)
		goto fail;
	s->listening = true;
	*ret = s;
	return 0;
fail:
	fl_monitor_server_destroy(s);
	return e;
}

FL_API void fl_monitor_server_destroy(struct fl_monitor_server *s)
{
	struct srv_work *w;

	if (!s)
		return;
	/* No new clients; checks in progress read no socket: they end by themselves. */
	if (s->own_listen && s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->own_file)
		unlink(s->socket_path);
	pthread_mutex_lock(&s->lock);
	while (s->checks)
		pthread_cond_wait(&s->checks_done, &s->lock);
	pthread_mutex_unlock(&s->lock);
	/* Clients keep their registration and see the hang-up; children cannot, and fail loudly. */
	while (s->served) {
		struct srv_uffd *su = s->served;

		if (su->conn)
			conn_close(s, su->conn, "the monitor stops");
		else
			end_uffd(s, su, "the monitor stops", true);
	}
	while ((w = take_work(s))) {
		if (w->type == W_FORK) {
			fl__srv_refuse_child(s, w->fd, w->sess->features, &w->t);
			w->fd = -1;
		} else {
			conn_close(s, w->conn, "the monitor stops");
		}
		work_free(w);
	}
	while ((w = s->waiting)) {
		s->waiting = w->next;
		conn_close(s, w->conn, "the monitor stops");
		work_free(w);
	}
	while (s->conns)
		conn_close(s, s->conns, "the monitor stops");
	free_closed(s);
	s->epfd = fl__safe_close(s->epfd);
	s->stop_efd = fl__safe_close(s->stop_efd);
	s->work_efd = fl__safe_close(s->work_efd);
	s->timer_fd = fl__safe_close(s->timer_fd);
	s->ws_efd = fl__safe_close(s->ws_efd);
	s->root_fd = fl__safe_close(s->root_fd);
	for (size_t i = 0; i < s->nfc; i++)
		fl_store_destroy(s->fc[i].s);
	free(s->fc);
	free(s->fc_record);
	free(s->fc_replay);
	free(s->root);
	free(s->socket_path);
	free(s->uids);
	pthread_cond_destroy(&s->checks_done);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
