/* SPDX-License-Identifier: MIT */
/* One userfaultfd served by the monitor: its pager, its layout, its events and its children. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "monitor-int.h"
#include "server-int.h"

#define MAX_UNIT (4u << 20)
#define SEND_MS 1000
#define REGION_FLAGS (FL_REGION_KEEP_ON_REMOVE | FL_REGION_KEEP_REGISTERED)
#define BEACON_LEN 4096u

static void srv_events(struct fl_pager *p, const struct fl_event *ev, size_t n, void *userdata);
static int write_beacon(struct srv_uffd *su);

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static bool table_overlaps(const struct fl__mon_table *t, uint64_t a, uint64_t len)
{
	for (size_t i = 0; i < t->n; i++)
		if (overlap(t->r[i].addr, t->r[i].len, a, len))
			return true;
	return false;
}

/* -------------------------------------------------------------- regions */

/*
 * A Firecracker region's number among the VM's regions, by offset (lowest
 * first): what names its working-set file. The offsets are the handshake's,
 * which stay the same from one restore to the next.
 */
static unsigned int fc_rank(const struct srv_uffd *su, const struct fl__mon_region *e)
{
	unsigned int rank = 0;

	for (uint32_t i = 0; i < su->sess->h.n; i++) {
		const struct fl__mon_region *r = &su->sess->h.r[i];

		if (r->store == FL__MON_STORE_MONITOR && r->off < e->off)
			rank++;
	}
	return rank;
}

/* The working-set file of region @rank: @base for 0, "@base.N" for N. NULL if too long. */
static const char *ws_path(const char *base, unsigned int rank, char *buf, size_t len)
{
	if (!rank)
		return base;
	return snprintf(buf, len, "%s.%u", base, rank) < (int)len ? buf : NULL;
}

/*
 * Serve one piece of the layout. @first: a Firecracker region of the
 * handshake (not a piece remade after mremap), which records or replays
 * its working set as the server says. Returns 0 or -errno.
 */
static int add_region(struct srv_uffd *su, const struct fl__mon_region *e, bool first)
{
	struct fl_monitor_server *s = su->srv;
	const struct srv_fc_part *part = e->store == FL__MON_STORE_MONITOR
						 ? fl__srv_fc_part(s, e->off, e->len) : NULL;
	bool fc = first && part && !su->child;
	unsigned int rank = fc ? fc_rank(su, e) : 0;
	char replay[PATH_MAX];
	struct fl_region_opts o = {
		.sz = sizeof(o),
		.addr = (void *)(uintptr_t)e->addr,
		.len = e->len,
		.store = fl__srv_store_for(s, su->sess, e),
		/* Firecracker's offsets run over its memory; a part holds some of them. */
		.store_off = e->store == FL_MONITOR_STORE_ZERO ? 0 :
			     part ? e->off - part->start : e->off,
		.page_size = e->page_size,
		.mem = (enum fl_mem_type)e->mem,
		.memfd = -1,
		.install = FL_INSTALL_COPY,
		.prefetch = su->srv->o.prefetch,
		.on_error = FL_ON_ERROR_POISON,
		/* The client owns the registration; whatever we leave is its policy's to handle. */
		.flags = REGION_FLAGS,
	};
	struct fl_region *r;
	int e2;

	if (!o.store)
		return -EINVAL;
	/* A larger unit than the pager's largest run works as well in smaller pieces. */
	if (o.mem != FL_MEM_HUGETLB && o.page_size > MAX_UNIT)
		o.page_size = MAX_UNIT;
	if (su->nrg == su->caprg) {
		size_t cap = su->caprg ? su->caprg * 2 : 8;
		struct fl_region **n = realloc(su->rg, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		su->rg = n;
		su->caprg = cap;
	}
	if (fc && s->fc_record) {
		struct srv_ws *n = realloc(su->ws, (su->nws + 1) * sizeof(*n));

		if (!n)
			return -ENOMEM;
		su->ws = n;
		o.flags |= FL_REGION_WS_RECORD;
	}
	if (fc && s->fc_replay) {
		o.ws_replay = ws_path(s->fc_replay, rank, replay, sizeof(replay));
		/* A VM of fewer regions wrote no file for the others: nothing to replay there. */
		if (o.ws_replay && access(o.ws_replay, F_OK) < 0) {
			fl__srv_log(s, rank ? FL_LOG_DEBUG : FL_LOG_WARN, "monitor: %s: region at "
				    "offset %#llx: no working set %s to replay", su->name,
				    (unsigned long long)e->off, o.ws_replay);
			o.ws_replay = NULL;
		}
	}
	e2 = fl_region_add(su->p, &o, &r);
	if (e2 < 0 && o.ws_replay) {
		/* The pager said why; the VM is served all the same, on demand. */
		fl__srv_log(s, FL_LOG_WARN, "monitor: %s: region at offset %#llx: working set %s "
			    "not replayed (%s); serving it on demand", su->name,
			    (unsigned long long)e->off, o.ws_replay, strerror(-e2));
		o.ws_replay = NULL;
		e2 = fl_region_add(su->p, &o, &r);
	}
	if (e2 < 0)
		return e2;
	su->rg[su->nrg++] = r;
	if (o.flags & FL_REGION_WS_RECORD) {
		pthread_mutex_lock(&su->ws_lock);
		su->ws[su->nws++] = (struct srv_ws){ .r = r, .rank = rank };
		pthread_mutex_unlock(&su->ws_lock);
	}
	return 0;
}

/* Write the working set of ws[i] (caller holds ws_lock). Returns 1 if written, else 0. */
static unsigned int ws_save_one(struct srv_uffd *su, size_t i)
{
	struct fl_region_stats st = { .sz = sizeof(st) };
	char buf[PATH_MAX];
	const char *path = ws_path(su->srv->fc_record, su->ws[i].rank, buf, sizeof(buf));
	int e = path ? fl_region_ws_save(su->ws[i].r, path, NULL) : -ENAMETOOLONG;

	fl_region_stats(su->ws[i].r, &st);
	if (e < 0) {
		fl__srv_log(su->srv, FL_LOG_ERROR, "monitor: %s: writing the working set of region "
			    "%u to %s%s: %s", su->name, su->ws[i].rank, su->srv->fc_record,
			    path ? "" : ".N", strerror(-e));
		return 0;
	}
	fl__srv_log(su->srv, FL_LOG_INFO, "monitor: %s: working set of region %u, %llu pages, "
		    "written to %s", su->name, su->ws[i].rank, (unsigned long long)st.ws_recorded,
		    path);
	fl__srv_stat(su->srv, S_WS_SAVED, 1);
	return 1;
}

unsigned int fl__srv_uffd_ws_save(struct srv_uffd *su)
{
	unsigned int n = 0;

	pthread_mutex_lock(&su->ws_lock);
	for (size_t i = 0; i < su->nws; i++)
		n += ws_save_one(su, i);
	pthread_mutex_unlock(&su->ws_lock);
	return n;
}

static void remove_region(struct srv_uffd *su, size_t i)
{
	pthread_mutex_lock(&su->ws_lock);
	for (size_t k = 0; k < su->nws; k++) {
		if (su->ws[k].r != su->rg[i])
			continue;
		/* Unmapped or moved: what it recorded is written before it goes. */
		ws_save_one(su, k);
		su->ws[k] = su->ws[--su->nws];
		break;
	}
	pthread_mutex_unlock(&su->ws_lock);
	fl_region_remove(su->rg[i]);
	su->rg[i] = su->rg[--su->nrg];
}

/* Did the pager follow this mremap (whole regions), or did nothing of ours move? */
static bool remap_followed(struct srv_uffd *su, const struct fl_event *ev)
{
	uint64_t from = (uintptr_t)ev->remap.from, to = (uintptr_t)ev->remap.to;
	uint64_t len = ev->remap.len;
	size_t hits = 0;
	bool exact = false;

	for (size_t i = 0; i < su->nrg; i++) {
		uint64_t a = (uintptr_t)fl_region_addr(su->rg[i]), l = fl_region_len(su->rg[i]);

		if (overlap(a, l, from, len) || overlap(a, l, to, len)) {
			hits++;
			exact |= a == to && l == len;
		}
	}
	return (hits == 1 && exact) || (!hits && !table_overlaps(&su->t, to, len));
}

/*
 * A piece of a region moved, or several regions at once, or onto another:
 * the pager's regions are behind the layout. Make them again from it, once
 * every event of the batch is in both (the pager applied them all before
 * the callback). Pages present stay present (installs meet EEXIST),
 * discarded ranges are ZERO pieces of the layout, and the faults read with
 * the events are handled after this returns.
 */
static void rebuild(struct srv_uffd *su)
{
	size_t made = 0;

	if (su->layout_lost) {
		fl__srv_log(su->srv, FL_LOG_ERROR, "monitor: %s: a region moved in part, and the "
			    "layout is lost: the moved pages are not served", su->name);
		return;
	}
	while (su->nrg)
		remove_region(su, su->nrg - 1);
	for (size_t i = 0; i < su->t.n; i++) {
		const struct fl__mon_region *e = &su->t.r[i];
		int r = add_region(su, e, false);

		if (r < 0)
			fl__srv_log(su->srv, FL_LOG_ERROR, "monitor: %s: after mremap, [%#llx, "
				    "+%#llx) cannot be served: %s", su->name,
				    (unsigned long long)e->addr, (unsigned long long)e->len,
				    strerror(-r));
		else
			made++;
	}
	fl__srv_log(su->srv, FL_LOG_DEBUG, "monitor: %s: mremap moved part of the layout; "
		    "serving it as %zu regions now", su->name, made);
}

/* Regions munmap left nothing of (the pager stopped serving them): free them. */
static void drop_unmapped(struct srv_uffd *su)
{
	for (size_t i = su->nrg; i-- > 0;) {
		uint64_t a = (uintptr_t)fl_region_addr(su->rg[i]), l = fl_region_len(su->rg[i]);

		if (!table_overlaps(&su->t, a, l))
			remove_region(su, i);
	}
}

/* ------------------------------------------------------------- messages */

/* Send @n events (caller holds su->lock, the ACK is out). On failure, hang up. */
static void send_events_locked(struct srv_uffd *su, const struct fl__mon_event *ev, size_t n)
{
	uint8_t buf[FL_MONITOR_HDR_LEN + FL_MONITOR_MAX_EVENTS * FL_MONITOR_EVENT_LEN];

	while (n && su->sock >= 0) {
		size_t k = n < FL_MONITOR_MAX_EVENTS ? n : FL_MONITOR_MAX_EVENTS;
		size_t len = fl__mon_encode_events(ev, k, buf, sizeof(buf));
		int r = fl__mon_send(su->sock, buf, len, -1, fl__now_ms() + SEND_MS);

		if (r < 0) {
			/*
			 * The client cannot be told: its layout would go stale. Hang up,
			 * so that it stops relying on us (its policy decides the rest).
			 */
			fl__srv_log(su->srv, r == -EPIPE ? FL_LOG_INFO : FL_LOG_ERROR,
				    "monitor: %s: sending events: %s; closing the connection",
				    su->name, strerror(-r));
			shutdown(su->sock, SHUT_RDWR);
			su->sock = -1;
			return;
		}
		ev += k;
		n -= k;
	}
}

/* Send, or keep until the ACK is out (caller holds su->lock). */
static void send_events(struct srv_uffd *su, const struct fl__mon_event *ev, size_t n)
{
	if (su->sock >= 0 && su->acked) {
		send_events_locked(su, ev, n);
	} else if (su->sock >= 0) {
		/* Read before the ACK went out: the client would take them for its answer. */
		if (su->npending + n > su->cappending) {
			size_t cap = su->npending + n + 64;
			struct fl__mon_event *p = realloc(su->pending, cap * sizeof(*p));

			if (!p) {
				fl__srv_log(su->srv, FL_LOG_ERROR, "monitor: %s: out of memory "
					    "keeping events; closing the connection", su->name);
				shutdown(su->sock, SHUT_RDWR);
				su->sock = -1;
				return;
			}
			su->pending = p;
			su->cappending = cap;
		}
		memcpy(su->pending + su->npending, ev, n * sizeof(*ev));
		su->npending += n;
	}
}

int fl__srv_uffd_ack(struct srv_uffd *su)
{
	uint8_t buf[FL_MONITOR_HDR_LEN + FL_MONITOR_ACK_FIXED_LEN];
	size_t len = fl__mon_encode_ack(su->sess->id, (uint32_t)getpid(), buf, sizeof(buf));
	int r;

	pthread_mutex_lock(&su->lock);
	r = su->sock >= 0 ? fl__mon_send(su->sock, buf, len, -1, fl__now_ms() + SEND_MS)
			  : -EPIPE;
	if (!r) {
		su->acked = true;
		send_events_locked(su, su->pending, su->npending);
		su->npending = 0;
		if (su->sock < 0)
			r = -EPIPE;
	}
	pthread_mutex_unlock(&su->lock);
	return r;
}

void fl__srv_uffd_unlink_conn(struct srv_uffd *su)
{
	pthread_mutex_lock(&su->lock);
	su->sock = -1;
	pthread_mutex_unlock(&su->lock);
	su->conn = NULL;
}

/* ---------------------------------------------------------------- events */

/* The kernel's event as the protocol's. */
static bool to_mon_event(const struct fl_event *ev, struct fl__mon_event *me)
{
	switch (ev->type) {
	case FL_EVENT_REMAP:
		*me = (struct fl__mon_event){ FL_MONITOR_EV_REMAP, (uintptr_t)ev->remap.from,
					      (uintptr_t)ev->remap.to, ev->remap.len };
		return true;
	case FL_EVENT_REMOVE:
	case FL_EVENT_UNMAP:
		*me = (struct fl__mon_event){
			ev->type == FL_EVENT_REMOVE ? FL_MONITOR_EV_REMOVE : FL_MONITOR_EV_UNMAP,
			(uintptr_t)ev->range.start, (uintptr_t)ev->range.end, 0 };
		return true;
	default:
		return false;
	}
}

static int copy_table(const struct fl__mon_table *t, struct fl__mon_table *ret)
{
	*ret = (struct fl__mon_table){ .n = t->n, .cap = t->n };
	if (!t->n)
		return 0;
	ret->r = malloc(t->n * sizeof(*ret->r));
	if (!ret->r)
		return -ENOMEM;
	memcpy(ret->r, t->r, t->n * sizeof(*ret->r));
	return 0;
}

/* Does the event concern nothing but the beacon page? */
static bool in_beacon(const struct srv_uffd *su, const struct fl__mon_event *me)
{
	uint64_t b = su->sess->beacon, ps = BEACON_LEN;

	if (!b)
		return false;
	if (me->type == FL_MONITOR_EV_REMAP)
		return me->a >= b && me->a + me->c <= b + ps;
	return me->a >= b && me->b <= b + ps;
}

/* A child was forked: its descriptor and the layout of this moment go to the loop. */
static void post_fork(struct srv_uffd *su, int fd)
{
	struct srv_work *w = calloc(1, sizeof(*w));

	if (!w || copy_table(&su->t, &w->t) < 0) {
		free(w);
		fl__srv_log(su->srv, FL_LOG_ERROR, "monitor: %s forked, and there is no memory to "
			    "serve the child: failing it loudly", su->name);
		fl__srv_refuse_child(su->srv, fd, su->sess->features, &su->t);
		return;
	}
	w->type = W_FORK;
	w->fd = fd;
	w->layout_lost = su->layout_lost;
	w->nth = ++su->nchildren;
	snprintf(w->parent, sizeof(w->parent), "%s", su->name);
	atomic_fetch_add(&su->sess->refs, 1);
	w->sess = su->sess;
	fl__srv_post(su->srv, w);
}

/*
 * The pager's event callback (a handler thread, holding the pager's read
 * token): keep the layout in step, tell the client, before the faults read
 * with these events are handled.
 */
static void srv_events(struct fl_pager *p, const struct fl_event *ev, size_t n, void *userdata)
{
	struct srv_uffd *su = userdata;
	struct fl__mon_event out[64];
	size_t nout = 0;
	bool unmap = false, remap = false;
	char err[SRV_ERRLEN];

	(void)p;
	/* The loop reads the layout for a child's GRANT: change it and send under the lock. */
	pthread_mutex_lock(&su->lock);
	for (size_t i = 0; i < n && nout < 64; i++) {
		struct fl__mon_event me;

		if (ev[i].type == FL_EVENT_FORK) {
			post_fork(su, ev[i].fork.fd);
			continue;
		}
		if (!to_mon_event(&ev[i], &me))
			continue;
		/* The library's own beacon page is none of the client's business. */
		if (in_beacon(su, &me))
			continue;
		if (!su->layout_lost && fl__mon_table_apply(&su->t, &me, err, sizeof(err)) < 0) {
			su->layout_lost = true;
			fl__srv_log(su->srv, FL_LOG_ERROR, "monitor: %s: cannot track the layout "
				    "any more (%s); children forked from now on are failed loudly",
				    su->name, err);
		}
		/* Firecracker's balloon: unregistered, the range reads as the kernel's zeros. */
		if (me.type == FL_MONITOR_EV_REMOVE && su->sess->firecracker) {
			int r = fl_uffd_unregister(su->u, ev[i].range.start, me.b - me.a);

			/*
			 * A fault that raced the unregistration may be queued after
			 * its wake-up (per-VMA locks do not wait for the mmap lock):
			 * wake it, it then finds ordinary memory.
			 */
			fl_uffd_wake(su->u, ev[i].range.start, me.b - me.a);

			if (r < 0 && r != -ESRCH)
				fl__srv_log(su->srv, FL_LOG_WARN, "monitor: %s: unregistering the "
					    "removed [%#llx, %#llx): %s", su->name,
					    (unsigned long long)me.a, (unsigned long long)me.b,
					    strerror(-r));
		}
		remap |= me.type == FL_MONITOR_EV_REMAP;
		unmap |= me.type == FL_MONITOR_EV_UNMAP;
		out[nout++] = me;
	}
	if (nout)
		send_events(su, out, nout);
	pthread_mutex_unlock(&su->lock);
	if (!nout)
		return;
	fl__srv_stat(su->srv, S_EVENTS, (int64_t)nout);
	for (size_t i = 0; remap && i < n; i++) {
		if (ev[i].type == FL_EVENT_REMAP && !remap_followed(su, &ev[i])) {
			rebuild(su);
			return;
		}
	}
	if (unmap)
		drop_unmapped(su);
}

/* ------------------------------------------------------------- lifetime */

int fl__srv_uffd_new(struct fl_monitor_server *s, struct srv_session *sess, int fd, int sock,
		     struct fl__mon_table *t, bool child, const char *name, struct srv_uffd **ret,
		     char *err, size_t errlen)
{
	struct fl_pager_opts po = {
		.sz = sizeof(po),
		.mode = FL_PAGER_THREADS,
		.threads = s->o.threads ? s->o.threads : 1,
		.on_event = srv_events,
	};
	struct srv_uffd *su = calloc(1, sizeof(*su));
	int e;

	if (!su) {
		fl__mon_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	su->srv = s;
	su->sess = sess;
	su->child = child;
	/* Before the pager starts: its first events already go there (after the ACK). */
	su->sock = sock;
	su->t = *t;
	*t = (struct fl__mon_table){ .r = NULL };
	snprintf(su->name, sizeof(su->name), "%s", name);
	pthread_mutex_init(&su->lock, NULL);
	pthread_mutex_init(&su->ws_lock, NULL);
	e = fl_uffd_adopt(fd, sess->features, 0, &su->u);
	if (e < 0) {
		fl__mon_errf(err, errlen, "adopting the userfaultfd: %s", strerror(-e));
		goto fail;
	}
	/* A child that exited already (a fork() and a quick exit) is not worth a pager. */
	if (child && fl_uffd_writeprotect(su->u, (void *)fl__page_size(), fl__page_size(),
					  FL_RESOLVE_DONTWAKE) == -ESRCH) {
		fl__mon_errf(err, errlen, "the child exited already");
		e = -ESRCH;
		goto fail;
	}
	po.uffd = su->u;
	po.userdata = su;
	e = fl_pager_create(&po, &su->p);
	if (e < 0) {
		fl__mon_errf(err, errlen, "making a pager: %s", strerror(-e));
		goto fail;
	}
	for (size_t i = 0; i < su->t.n; i++) {
		const struct fl__mon_region *r = &su->t.r[i];

		e = add_region(su, r, true);
		if (e == 0)
			continue;
		if (child && fl_uffd_writeprotect(su->u, (void *)fl__page_size(), fl__page_size(),
						  FL_RESOLVE_DONTWAKE) == -ESRCH) {
			fl__mon_errf(err, errlen, "the child exited already");
			e = -ESRCH;
			goto fail;
		}
		if (child && e != -ENOMEM && e != -EBUSY) {
			/* The range did not reach the child (MADV_DONTFORK, or unmapped). */
			continue;
		}
		fl__mon_errf(err, errlen, "region [%#llx, +%#llx) (%s, %u KiB pages): %s",
			     (unsigned long long)r->addr, (unsigned long long)r->len,
			     fl_mem_type_name((enum fl_mem_type)r->mem), r->page_size >> 10,
			     e == -EINVAL ? "not a mapped range of the client that it can register"
					  : strerror(-e));
		goto fail;
	}
	if (child && sess->beacon) {
		e = write_beacon(su);
		if (e == -ESRCH) {
			fl__mon_errf(err, errlen, "the child exited already");
			goto fail;
		}
	}
	e = fl_pager_start(su->p);
	if (e < 0) {
		fl__mon_errf(err, errlen, "starting the pager: %s", strerror(-e));
		goto fail;
	}
	*ret = su;
	return 0;
fail:
	/* The descriptor stays the caller's; so do the session reference and the layout. */
	fl_pager_destroy(su->p);
	fl_uffd_close(su->u);
	*t = su->t;
	free(su->rg);
	free(su->ws);
	pthread_mutex_destroy(&su->ws_lock);
	pthread_mutex_destroy(&su->lock);
	free(su);
	return e;
}

/*
 * A fork()ed child finds, in its beacon page, the session and the secret
 * token with which it claims its own descriptor (protocol section 3.6). The
 * page is installed before the pager starts, waking the child if it already
 * waits there; the pager then meets that fault outside every region and
 * leaves it. Returns 0 (also when the child cannot claim: it then fails
 * loudly on its own), or -ESRCH.
 */
static int write_beacon(struct srv_uffd *su)
{
	uint64_t v[2] = { 0, 0 };
	uint8_t *page = aligned_alloc(BEACON_LEN, BEACON_LEN);
	int e;

	if (!page)
		return 0;
	if (getrandom(v, sizeof(v), 0) != (ssize_t)sizeof(v) || !v[0] || !v[1]) {
		fl__srv_log(su->srv, FL_LOG_ERROR, "monitor: %s: no random token: it cannot claim "
			    "its userfaultfd", su->name);
		free(page);
		return 0;
	}
	memset(page, 0, BEACON_LEN);
	fl__mon_beacon_write(page, v[0], v[1]);
	e = fl_uffd_copy(su->u, (void *)(uintptr_t)su->sess->beacon, page, BEACON_LEN, 0, NULL);
	free(page);
	if (e == -ESRCH)
		return e;
	if (e < 0) {
		/* EEXIST: the parent read its own beacon (it must not); ENOENT: it is gone. */
		fl__srv_log(su->srv, FL_LOG_WARN, "monitor: %s: writing its beacon at %#llx: %s; "
			    "it cannot claim its userfaultfd", su->name,
			    (unsigned long long)su->sess->beacon, strerror(-e));
		return 0;
	}
	su->child_session = v[0];
	su->token = v[1];
	return 0;
}

int fl__srv_uffd_grant(struct srv_uffd *su, int sock)
{
	struct fl__mon_hello h;
	uint8_t *msg;
	size_t len;
	int r;

	pthread_mutex_lock(&su->lock);
	h = (struct fl__mon_hello){
		.version = FL_MONITOR_PROTO_VERSION,
		.flags = FL_MONITOR_HELLO_CHILDREN,
		.features = su->sess->features,
		.session = su->child_session,
		.pid = (uint32_t)getpid(),
		.beacon = su->sess->beacon,
		.n = (uint32_t)su->t.n,
		.r = su->t.r,
	};
	len = fl__mon_encode_grant(&h, NULL, 0);
	msg = len ? malloc(len) : NULL;
	if (!msg) {
		pthread_mutex_unlock(&su->lock);
		return len ? -ENOMEM : -E2BIG;
	}
	fl__mon_encode_grant(&h, msg, len);
	r = fl__mon_send(sock, msg, len, fl_uffd_fd(su->u), fl__now_ms() + SEND_MS);
	free(msg);
	if (!r) {
		/* Every event applied to the layout from now on goes to the child. */
		su->sock = sock;
		su->acked = true;
		su->npending = 0;
		su->claimed = true;
	}
	pthread_mutex_unlock(&su->lock);
	return r;
}

int fl__srv_uffd_alive(struct srv_uffd *su)
{
	/*
	 * Nothing tells a reader of a userfaultfd that its process exited;
	 * every resolve then fails with ESRCH. Unprotecting a page nobody
	 * registered for write-protection changes nothing, and says ENOENT
	 * while the process lives.
	 */
	size_t ps = fl__page_size();

	return fl_uffd_writeprotect(su->u, (void *)ps, ps, FL_RESOLVE_DONTWAKE) == -ESRCH ? -ESRCH
											   : 0;
}

/* Nobody else reads this descriptor: read what is queued (the thread behind an event goes on). */
static int drain_events(void *arg)
{
	struct fl_uffd *u = arg;
	struct fl_event ev[16];
	int k = fl_uffd_read_events(u, ev, 16);

	for (int j = 0; j < k; j++)
		if (ev[j].type == FL_EVENT_FORK)
			close(ev[j].fork.fd);
	return k > 0 ? k : 0;
}

/* Poison every page of @u in the non-ZERO ranges of @t that is not present. */
static void poison_layout(struct fl_uffd *u, const struct fl__mon_table *t)
{
	size_t ps = fl__page_size();
	int fl = fcntl(fl_uffd_fd(u), F_GETFL);

	/* Pending events are drained below, never waited for. */
	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(fl_uffd_fd(u), F_SETFL, fl | O_NONBLOCK);

	for (size_t i = 0; i < t->n; i++) {
		const struct fl__mon_region *r = &t->r[i];
		struct fl__poison_opts o = {
			.step = r->mem == FL_MEM_HUGETLB ? r->page_size : ps,
			.drain = drain_events,
			.arg = u,
		};
		int e;

		if (r->store == FL_MONITOR_STORE_ZERO)
			continue;
		e = fl__uffd_poison_absent(u, r->addr, r->len, &o, NULL);
		if (e < 0)
			fl__warn("monitor: poisoning [%#llx, +%#llx): %s", (unsigned long long)r->addr,
				 (unsigned long long)r->len, strerror(-e));
	}
}

void fl__srv_refuse_child(struct fl_monitor_server *s, int fd, uint64_t features,
			  const struct fl__mon_table *t)
{
	struct fl_uffd *u = NULL;

	if (!(features & FL_FEAT_POISON) || fl_uffd_adopt(fd, features, 0, &u) < 0) {
		fl__srv_log(s, FL_LOG_ERROR, "monitor: a fork()ed child is not served, and cannot "
			    "be poisoned: its pages not yet present will read as zeros");
		close(fd);
		return;
	}
	poison_layout(u, t);
	fl_uffd_close(u);
	close(fd);
}

void fl__srv_uffd_free(struct srv_uffd *su, bool poison)
{
	int fd;

	if (!su)
		return;
	fd = fl_uffd_fd(su->u);
	fl__srv_uffd_unlink_conn(su);
	/* The handler threads stop; the regions stay registered, their pages as they are. */
	fl_pager_stop(su->p);
	/* No event callback runs now: the regions are what they are. */
	fl__srv_uffd_ws_save(su);
	{
		uint64_t faults = 0, ws = 0;

		for (size_t i = 0; i < su->nrg; i++) {
			struct fl_region_stats st = { .sz = sizeof(st) };

			if (fl_region_stats(su->rg[i], &st) < 0)
				continue;
			faults += st.faults;
			ws += st.ws_prefetched;
		}
		fl__srv_stat(su->srv, S_FAULTS, (int64_t)faults);
		fl__srv_stat(su->srv, S_WS_PREFETCHED, (int64_t)ws);
		if (su->sess->firecracker)
			fl__srv_log(su->srv, FL_LOG_INFO, "monitor: %s: %llu faults served, %llu "
				    "pages prefetched from the working set", su->name,
				    (unsigned long long)faults, (unsigned long long)ws);
	}
	fl_pager_destroy(su->p);
	/* A child nobody else can serve fails loudly rather than read zeros. */
	if (poison && su->child && (su->sess->features & FL_FEAT_POISON) && !su->layout_lost)
		poison_layout(su->u, &su->t);
	fl_uffd_close(su->u);
	close(fd);
	fl__srv_session_put(su->sess);
	free(su->t.r);
	free(su->rg);
	free(su->ws);
	free(su->pending);
	pthread_mutex_destroy(&su->ws_lock);
	pthread_mutex_destroy(&su->lock);
	free(su);
}
