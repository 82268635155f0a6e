/* SPDX-License-Identifier: MIT */
/*
 * The destination side of a migration: map the regions, serve them with a
 * pager whose store is the source (a fault's store read sends an urgent
 * request and waits for the answer), and supply the background stream to
 * the pager, which installs only into pages still absent. The pager handles
 * the program's fork, mremap, madvise and munmap as for any region.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faultline.h"
#include "migrate-int.h"
#include "pager/supply.h"

#define PROGRESS_NS 100000000ull
/*
 * Handler threads of the destination's pager: each fault on a page not yet
 * here holds one for a round trip to the source, so several program
 * threads can wait on different pages at once.
 */
#define DEST_THREADS 16
/* A store read waiting for its pages looks at the migration's state this often. */
#define READ_CHECK_NS 100000000

enum dst_stat {
	D_PUSHED,
	D_URGENT,
	D_ZERO,
	D_DUPLICATE,
	D_DISCARDED,
	D_BYTES_PUSHED,
	D_BYTES_URGENT,
	D_FAULTS,
	D_SHARED,
	D_REQUESTS,
	D_COUNT,
};

/* A page requested from the source and not yet here (at most one per page). */
struct pend {
	uint64_t page;
	uint64_t id;
	uint64_t t_sent;		/* when the REQUEST went out; 0: still to send */
};

/* A store read (a pager's fault, or a child's populate) waiting for its pages. */
struct reader {
	size_t left;			/* pages still to come */
};

/* One page a reader waits for, and where its bytes go. */
struct want {
	uint64_t page;
	uint8_t *dst;
	struct reader *rd;
};

/* A thread blocked on a missing page. */
struct waiter {
	uint64_t page;
	uint64_t t0;
	uint32_t tid;
};

struct fl_migrate_dest {
	pid_t pid;
	struct fl_migrate_dest_opts o;
	struct fl__mig_link link;
	const struct fl__mig_hooks *hooks;
	struct fl_uffd *uffd;		/* ours; the pager borrows it */
	struct fl_pager *pager;
	struct fl_store *store;		/* the source: flat page i at byte i * psize */
	struct fl_region **regions;	/* in the pager from the switch-over on; NULL before */
	size_t psize;

	/* The session, learned from the source's first HELLO. */
	bool have_session;
	uint8_t session[FL__WIRE_SESSION_LEN];
	bool established, peer_resumes;
	uint64_t features;
	struct fl__wire_region *wreg;	/* the source's region table, in its order */
	struct fl__mig_region *reg;	/* the same order */
	unsigned int *by_addr;		/* region indices by local address */
	unsigned int *by_id;		/* region indices by id */
	unsigned int nreg;
	uint64_t total;
	bool mapped, added;
	_Atomic uint64_t *received;	/* here and current, or no longer wanted (discarded, gone) */
	_Atomic uint64_t n_received;
	pthread_rwlock_t regions_lock;	/* regions[] against their removal at the end */
	_Atomic bool ended;		/* store reads wait no longer (see end_reads) */

	struct fl__mig_conn main, urg;
	pthread_mutex_t send_lock;	/* urg's sending side and urg.fd: store reads and the
					   urgent receiver send on it */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	_Atomic bool broken;
	_Atomic bool switched;
	_Atomic bool done;
	_Atomic bool quit;
	bool urg_parked;
	int epoch;
	int fatal;
	bool failing;			/* set_fatal() under way: poisoning, then fatal */
	bool started;
	pthread_t rx_thread, urg_thread, kids_thread;
	bool rx_started, urg_started, kids_started;
	_Atomic int kids_result;	/* 1 while the children's populate runs */

	uint8_t *blob;
	size_t blob_len, blob_have;

	pthread_mutex_t pend_lock;
	pthread_cond_t pend_cond;	/* a reader got pages, or the migration ended */
	struct pend *pend;
	size_t npend, cap_pend;
	struct want *want;
	size_t cap_want;
	_Atomic size_t nwant;
	struct waiter *wait;
	size_t cap_wait;
	_Atomic size_t nwait;
	uint64_t next_id;
	struct fl_migrate_thread_stats threads[FL_MIGRATE_MAX_THREADS];
	uint32_t n_threads;
	uint64_t blocktime;
	uint64_t lat_hist[FL_MIGRATE_LAT_BUCKETS];

	_Atomic uint64_t st[D_COUNT];
	_Atomic uint32_t phase;
	_Atomic uint32_t resumes;
	uint64_t t_start, t_switch_first, resume_ns, switch_ns, total_ns;
	uint64_t last_progress;
	char err[MIG_ERR_LEN];
};

static int fail(struct fl_migrate_dest *d, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct fl_migrate_dest *d, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&d->lock);
	if (!d->err[0]) {
		va_start(ap, fmt);
		vsnprintf(d->err, sizeof(d->err), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&d->lock);
	return err;
}

static void poison_missing(struct fl_migrate_dest *d);
static void end_reads(struct fl_migrate_dest *d);

/*
 * The migration is over for good: record why, make the pages that will
 * never come fail loudly, then wake everyone. Whoever sees the failure
 * (fl_migrate_dest_wait() returning it) sees those pages poisoned already:
 * a thread blocked on one, and every later access, gets SIGBUS.
 */
static void set_fatal(struct fl_migrate_dest *d, int err, const char *msg)
{
	bool first;

	pthread_mutex_lock(&d->lock);
	first = !d->fatal && !d->failing;
	if (first) {
		d->failing = true;
		if (msg && *msg)
			snprintf(d->err, sizeof(d->err), "%s", msg);
		else if (!d->err[0])
			snprintf(d->err, sizeof(d->err), "%s", strerror(-err));
		fl__err("migrate: destination: %s", d->err);
	}
	pthread_mutex_unlock(&d->lock);
	if (!first)
		return;
	/*
	 * Store reads fail from now on (their faults get SIGBUS): the handler
	 * threads are free to read the events that poisoning may wait for.
	 */
	end_reads(d);
	if (d->mapped && !atomic_load(&d->done))
		poison_missing(d);
	pthread_mutex_lock(&d->lock);
	d->fatal = err;
	atomic_store(&d->phase, FL_MIGRATE_FAILED);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static void set_phase(struct fl_migrate_dest *d, enum fl_migrate_phase p)
{
	atomic_store(&d->phase, p);
	if (d->o.progress)
		d->o.progress(d->o.userdata, p, atomic_load(&d->n_received), d->total);
	d->last_progress = fl__now_ns();
}

static void progress(struct fl_migrate_dest *d)
{
	uint64_t now;

	if (!d->o.progress)
		return;
	now = fl__now_ns();
	if (now - d->last_progress < PROGRESS_NS)
		return;
	d->last_progress = now;
	d->o.progress(d->o.userdata, atomic_load(&d->phase), atomic_load(&d->n_received),
		      d->total);
}

void fl__migrate_dest_set_hooks(struct fl_migrate_dest *d, const struct fl__mig_hooks *h)
{
	d->hooks = h;
}

/* The pager's hooks and the source's store (see below). */
static void on_fault(void *arg, struct fl_region *r, size_t pg, uint32_t tid, bool shared);
static void on_installed(void *arg, struct fl_region *r, size_t pg, size_t n);
static int store_read(void *ud, uint64_t off, void *buf, size_t len, size_t page_size,
		      uint64_t *holes);

/* ---------------------------------------------------------------- create */

FL_API int fl_migrate_dest_create(const struct fl_migrate_dest_opts *opts,
				  struct fl_migrate_dest **ret)
{
	struct fl_uffd_opts uo = {
		.sz = sizeof(uo),
		/* The program's fork, mremap, madvise and munmap are followed (dest_hooks). */
		.optional = FL_FEAT_THREAD_ID | FL_FEAT_POISON | FL_FEAT_EVENT_REMAP |
			    FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP | FL_FEAT_EVENT_FORK,
		.flags = FL_UFFD_NONBLOCK,
	};
	struct fl_pager_opts po = { .sz = sizeof(po), .mode = FL_PAGER_THREADS,
				    .threads = DEST_THREADS };
	struct fl__pager_hooks ph = { .fault = on_fault, .installed = on_installed,
				      .serve_children = true, .own_memory = true };
	struct fl_migrate_dest_opts o;
	struct fl_migrate_dest *d;
	char msg[256] = "";
	int r;

	if (!ret)
		return fl__einval(__func__, "ret is NULL");
	r = fl__opts_copy(&o, sizeof(o), opts, "fl_migrate_dest_create");
	if (r < 0)
		return r;
	if (o.flags & ~(uint32_t)(FL_MIGRATE_LISTEN | FL_MIGRATE_ANYWHERE | FL_MIGRATE_INSECURE |
				  FL_MIGRATE_VERIFY_PEER))
		return fl__einval(__func__, "unknown flags %#x",
				  o.flags & ~(uint32_t)(FL_MIGRATE_LISTEN | FL_MIGRATE_ANYWHERE |
							FL_MIGRATE_INSECURE |
							FL_MIGRATE_VERIFY_PEER));
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->pid = getpid();
	d->psize = fl__page_size();
	d->main.fd = d->urg.fd = -1;
	d->link.lfd = d->link.stop_efd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->send_lock, NULL);
	pthread_mutex_init(&d->pend_lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	pthread_cond_init(&d->pend_cond, NULL);
	pthread_rwlock_init(&d->regions_lock, NULL);
	d->o = o;
	d->o.host = NULL;
	d->o.key = NULL;
	d->o.tls_ca_file = d->o.tls_cert_file = d->o.tls_key_file = d->o.tls_peer_name = NULL;
	r = fl_uffd_open(&uo, &d->uffd);
	if (r < 0)
		goto fail;
	po.uffd = d->uffd;
	r = fl_pager_create(&po, &d->pager);
	if (r < 0)
		goto fail;
	ph.arg = d;
	fl__pager_set_hooks(d->pager, &ph);
	r = fl_pager_start(d->pager);
	if (r < 0)
		goto fail;
	r = fl__mig_link_init(&d->link, o.flags, o.host, o.port,
			      &(struct fl__mig_tls){ .key = o.key, .key_len = o.key_len,
						     .ca_file = o.tls_ca_file,
						     .cert_file = o.tls_cert_file,
						     .key_file = o.tls_key_file,
						     .peer_name = o.tls_peer_name },
			      o.timeout_ms, o.resume_timeout_ms, msg, sizeof(msg));
	if (r < 0) {
		fl__err("migrate: %s", msg[0] ? msg : strerror(-r));
		goto fail;
	}
	*ret = d;
	return 0;
fail:
	fl_migrate_dest_destroy(d);
	return r;
}

FL_API int fl_migrate_dest_port(const struct fl_migrate_dest *d, uint16_t *ret_port)
{
	if (!d || !ret_port || !d->link.listen)
		return fl__einval(__func__, "%s", !d ? "d is NULL" : !ret_port ?
				  "ret_port is NULL" : "the destination does not listen");
	if (d->pid != getpid())
		return -ECHILD;
	*ret_port = d->link.port;
	return 0;
}

FL_API const char *fl_migrate_dest_error(const struct fl_migrate_dest *d)
{
	return d ? d->err : "";
}

FL_API int fl_migrate_dest_region(const struct fl_migrate_dest *d, unsigned int i,
				  void **ret_addr, size_t *ret_len)
{
	if (!d || !ret_addr || !ret_len || !d->mapped)
		return fl__einval(__func__, "%s", !d ? "d is NULL" : !ret_addr || !ret_len ?
				  "ret_addr or ret_len is NULL" : "no region is mapped yet");
	if (d->pid != getpid())
		return -ECHILD;
	if (i >= d->nreg)
		return -ENOENT;
	/* Where it is now: the program may have moved it (mremap) since it was mapped. */
	pthread_rwlock_rdlock((pthread_rwlock_t *)&d->regions_lock);
	*ret_addr = d->regions && d->regions[i] ? fl_region_addr(d->regions[i]) : d->reg[i].addr;
	pthread_rwlock_unlock((pthread_rwlock_t *)&d->regions_lock);
	*ret_len = d->reg[i].len;
	return 0;
}

FL_API int fl_migrate_dest_stats(const struct fl_migrate_dest *d, struct fl_migrate_dest_stats *out)
{
	struct fl_migrate_dest *m = (struct fl_migrate_dest *)d;
	struct fl_migrate_dest_stats st, *ret = &st;

	if (!d || !out)
		return fl__einval(__func__, "%s is NULL", !d ? "d" : "ret");
	if (d->pid != getpid())
		return -ECHILD;
	*ret = (struct fl_migrate_dest_stats){
		.phase = atomic_load(&d->phase),
		.resumes = atomic_load(&d->resumes),
		.n_regions = d->mapped ? d->nreg : 0,
		.pages_total = d->total,
		.pages_received = atomic_load(&d->n_received),
		.pages_pushed = atomic_load(&d->st[D_PUSHED]),
		.pages_urgent = atomic_load(&d->st[D_URGENT]),
		.pages_zero = atomic_load(&d->st[D_ZERO]),
		.pages_duplicate = atomic_load(&d->st[D_DUPLICATE]),
		.pages_discarded = atomic_load(&d->st[D_DISCARDED]),
		.bytes_pushed = atomic_load(&d->st[D_BYTES_PUSHED]),
		.bytes_urgent = atomic_load(&d->st[D_BYTES_URGENT]),
		.faults = atomic_load(&d->st[D_FAULTS]),
		.faults_shared = atomic_load(&d->st[D_SHARED]),
		.requests = atomic_load(&d->st[D_REQUESTS]),
	};
	pthread_mutex_lock(&m->lock);
	ret->resume_ns = d->resume_ns;
	ret->switch_ns = d->switch_ns;
	ret->total_ns = d->total_ns;
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_lock(&m->pend_lock);
	memcpy(ret->lat_hist, d->lat_hist, sizeof(ret->lat_hist));
	ret->blocktime_ns = d->blocktime;
	ret->n_threads = d->n_threads;
	memcpy(ret->threads, d->threads, d->n_threads * sizeof(d->threads[0]));
	pthread_mutex_unlock(&m->pend_lock);
	return fl__stats_out(out, ret, sizeof(*ret), __func__);
}

/* ---------------------------------------------------------------- regions */

static int cmp_by_addr(const void *a, const void *b, void *arg)
{
	const struct fl_migrate_dest *d = arg;
	const uint8_t *x = d->reg[*(const unsigned int *)a].addr;
	const uint8_t *y = d->reg[*(const unsigned int *)b].addr;

	return x < y ? -1 : x > y;
}

static int cmp_by_id(const void *a, const void *b, void *arg)
{
	const struct fl_migrate_dest *d = arg;
	uint32_t x = d->wreg[*(const unsigned int *)a].id;
	uint32_t y = d->wreg[*(const unsigned int *)b].id;

	return x < y ? -1 : x > y;
}

static int cmp_by_start(const void *a, const void *b, void *arg)
{
	const struct fl_migrate_dest *d = arg;
	uint64_t x = d->wreg[*(const unsigned int *)a].start;
	uint64_t y = d->wreg[*(const unsigned int *)b].start;

	return x < y ? -1 : x > y;
}

static void sort_indices(struct fl_migrate_dest *d, unsigned int *idx,
			 int (*cmp)(const void *, const void *, void *))
{
	for (unsigned int i = 0; i < d->nreg; i++)
		idx[i] = i;
	qsort_r(idx, d->nreg, sizeof(*idx), cmp, d);
}

/* The region with wire id @id, or NULL. */
static const struct fl__mig_region *region_by_id(const struct fl_migrate_dest *d, uint32_t id)
{
	unsigned int lo = 0, hi = d->nreg;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		uint32_t v = d->wreg[d->by_id[mid]].id;

		if (v == id)
			return &d->reg[d->by_id[mid]];
		if (v < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static uint8_t *page_addr(const struct fl_migrate_dest *d, uint64_t pg)
{
	const struct fl__mig_region *r = &d->reg[fl__mig_region_of(d->reg, d->nreg, pg)];

	return r->addr + (pg - r->first) * d->psize;
}

static void unmap_regions(struct fl_migrate_dest *d, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		if (d->reg[i].addr)
			munmap(d->reg[i].addr, d->reg[i].len);
}

/*
 * The source's region table: check it, map each region at its address (or
 * anywhere) and register it for missing faults. On a resume, the table
 * must be the one we have.
 */
static int take_regions(struct fl_migrate_dest *d, const struct fl__wire_hello *h, char *msg,
			size_t cap)
{
	unsigned int n = h->n_regions, pshift = fl__mig_page_shift(), *by_start;
	int flags = MAP_PRIVATE | MAP_ANONYMOUS;
	uint64_t total = 0;
	int r = 0;

	if (d->mapped) {
		bool same = n == d->nreg;

		for (unsigned int i = 0; same && i < n; i++)
			same = h->regions[i].id == d->wreg[i].id &&
			       h->regions[i].page_shift == d->wreg[i].page_shift &&
			       h->regions[i].start == d->wreg[i].start &&
			       h->regions[i].length == d->wreg[i].length;
		if (!same) {
			snprintf(msg, cap, "the resumed session's region table differs from the "
				 "first one");
			return -EINVAL;
		}
		return 0;
	}
	if (!n) {
		snprintf(msg, cap, "the source sent no regions");
		return -EINVAL;
	}
	/* A table refused before may have left its copies. */
	free(d->wreg);
	free(d->reg);
	free(d->by_addr);
	free(d->by_id);
	free(d->received);
	free(d->regions);
	d->received = NULL;
	d->regions = NULL;
	d->nreg = n;
	d->wreg = calloc(n, sizeof(*d->wreg));
	d->reg = calloc(n, sizeof(*d->reg));
	d->by_addr = calloc(n, sizeof(*d->by_addr));
	d->by_id = calloc(n, sizeof(*d->by_id));
	by_start = calloc(n, sizeof(*by_start));
	if (!d->wreg || !d->reg || !d->by_addr || !d->by_id || !by_start) {
		free(by_start);
		return -ENOMEM;
	}
	memcpy(d->wreg, h->regions, n * sizeof(*d->wreg));
	for (unsigned int i = 0; i < n; i++) {
		const struct fl__wire_region *w = &d->wreg[i];

		if (w->page_shift != pshift) {
			snprintf(msg, cap, "region %u has pages of %u bytes; this destination "
				 "takes only its base page size, %zu bytes", w->id,
				 1u << w->page_shift, d->psize);
			r = -EINVAL;
			break;
		}
		d->reg[i] = (struct fl__mig_region){
			.start = w->start,
			.len = w->length,
			.first = total,
			.pages = w->length / d->psize,
		};
		total += d->reg[i].pages;
	}
	if (!r && total > (1ull << 40)) {
		snprintf(msg, cap, "the regions hold %llu pages: too many",
			 (unsigned long long)total);
		r = -EINVAL;
	}
	if (!r) {
		sort_indices(d, d->by_id, cmp_by_id);
		sort_indices(d, by_start, cmp_by_start);
		for (unsigned int i = 1; i < n && !r; i++) {
			const struct fl__wire_region *a = &d->wreg[by_start[i - 1]];
			const struct fl__wire_region *b = &d->wreg[by_start[i]];

			if (b->start < a->start + a->length) {
				snprintf(msg, cap, "regions %u and %u overlap", a->id, b->id);
				r = -EINVAL;
			}
			if (d->wreg[d->by_id[i]].id == d->wreg[d->by_id[i - 1]].id) {
				snprintf(msg, cap, "region id %u appears twice",
					 d->wreg[d->by_id[i]].id);
				r = -EINVAL;
			}
		}
	}
	free(by_start);
	if (r < 0)
		return r;
	d->total = total;
	d->received = fl__bm_alloc(total);
	d->regions = calloc(n, sizeof(*d->regions));
	if (!d->received || !d->regions)
		return -ENOMEM;

	if (!(d->o.flags & FL_MIGRATE_ANYWHERE))
		flags |= MAP_FIXED_NOREPLACE;
	for (unsigned int i = 0; i < n; i++) {
		struct fl__mig_region *g = &d->reg[i];
		void *want = d->o.flags & FL_MIGRATE_ANYWHERE ? NULL : (void *)(uintptr_t)g->start;
		/* Inaccessible until it cannot get huge pages (see below): no fault in between. */
		void *p = mmap(want, g->len, PROT_NONE, flags, -1, 0);

		if (p == MAP_FAILED || (want && p != want)) {
			int e = p == MAP_FAILED ? errno : EEXIST;

			if (p != MAP_FAILED)
				munmap(p, g->len);	/* a kernel before 4.17 ignored NOREPLACE */
			if (e == EEXIST)
				snprintf(msg, cap, "the source's region %u [%#llx, %#llx) is "
					 "already mapped in the destination process; it must "
					 "be free there", d->wreg[i].id,
					 (unsigned long long)g->start,
					 (unsigned long long)(g->start + g->len));
			else
				snprintf(msg, cap, "cannot map the source's region %u (%llu "
					 "bytes at %#llx): %s", d->wreg[i].id,
					 (unsigned long long)g->len,
					 (unsigned long long)g->start, strerror(e));
			unmap_regions(d, i);
			return -e;
		}
		g->addr = p;
		/*
		 * No transparent huge pages until the pager serves the region:
		 * where the kernel gives them by default (THP "always", Debian's
		 * 6.1), one fault fills 2 MiB with zeros, and those pages are
		 * then present to the pager, which never overwrites a present
		 * page. The fault is a pre-copy write or zero-page populate here,
		 * or the program's own, next door: an unregistered mapping merges
		 * with a neighbour of the same flags, and a neighbour's huge page
		 * can cover our first pages. The flag also keeps the mapping
		 * apart from its neighbours (PROT_NONE until then keeps their
		 * faults out of it). Without THP in the kernel the call
		 * fails (EINVAL), and there is nothing to keep away.
		 */
		(void)madvise(p, g->len, MADV_NOHUGEPAGE);
		if (mprotect(p, g->len, PROT_READ | PROT_WRITE) < 0) {
			int e = errno;

			snprintf(msg, cap, "cannot map the source's region %u (%llu bytes): %s",
				 d->wreg[i].id, (unsigned long long)g->len, strerror(e));
			unmap_regions(d, i + 1);
			return -e;
		}
		/*
		 * Without the fork event a fork()ed child could not be served: it
		 * would read zeros where the source has data. It gets no copy of
		 * the regions instead (SIGSEGV if it touches them).
		 */
		if (!(fl_uffd_features(d->uffd) & FL_FEAT_EVENT_FORK) &&
		    madvise(p, g->len, MADV_DONTFORK) < 0) {
			int e = errno;

			snprintf(msg, cap, "cannot keep the source's region %u from fork()ed "
				 "children: %s", d->wreg[i].id, strerror(e));
			unmap_regions(d, i + 1);
			return -e;
		}
	}
	/*
	 * The regions are plain memory until the switch-over (pre-copy writes
	 * them directly), then the pager serves them: check now that it can.
	 */
	for (unsigned int i = 0; i < n; i++) {
		uint32_t ioctls = 0;

		r = fl_uffd_register(d->uffd, d->reg[i].addr, d->reg[i].len, FL_REGISTER_MISSING,
				     &ioctls);
		if (!r)
			fl_uffd_unregister(d->uffd, d->reg[i].addr, d->reg[i].len);
		if (!r && (ioctls & (FL_IOCTL_COPY | FL_IOCTL_ZEROPAGE)) !=
			  (FL_IOCTL_COPY | FL_IOCTL_ZEROPAGE))
			r = -EOPNOTSUPP;
		if (r < 0) {
			unmap_regions(d, n);
			snprintf(msg, cap, "cannot register region %u with userfaultfd: %s",
				 d->wreg[i].id, strerror(-r));
			return r;
		}
	}
	{
		struct fl_store_ops ops = { .sz = sizeof(ops), .read = store_read };

		r = fl_store_create(&ops, d, FL_STORE_READONLY, total * d->psize, &d->store);
		if (r < 0) {
			unmap_regions(d, n);
			snprintf(msg, cap, "cannot create the store of the source: %s", strerror(-r));
			return r;
		}
	}
	sort_indices(d, d->by_addr, cmp_by_addr);
	d->mapped = true;
	return 0;
}

/* ---------------------------------------------------------------- requests */

static struct pend *find_pend(struct fl_migrate_dest *d, uint64_t page)
{
	for (size_t i = 0; i < d->npend; i++)
		if (d->pend[i].page == page)
			return &d->pend[i];
	return NULL;
}

static void thread_blocked(struct fl_migrate_dest *d, uint32_t tid, uint64_t ns)
{
	uint32_t i;

	d->blocktime += ns;
	for (i = 0; i < d->n_threads; i++)
		if (d->threads[i].tid == tid)
			break;
	if (i == d->n_threads) {
		if (i == FL_MIGRATE_MAX_THREADS)
			return;
		d->threads[d->n_threads++] = (struct fl_migrate_thread_stats){ .tid = tid };
	}
	d->threads[i].faults++;
	d->threads[i].blocked_ns += ns;
}

/* @page is here: the threads blocked on it run again, their time counts. Under pend_lock. */
static void complete(struct fl_migrate_dest *d, uint64_t page, uint64_t now)
{
	size_t n = atomic_load(&d->nwait);

	for (size_t i = 0; i < n;) {
		if (d->wait[i].page == page) {
			thread_blocked(d, d->wait[i].tid, now - d->wait[i].t0);
			d->wait[i] = d->wait[--n];
		} else {
			i++;
		}
	}
	atomic_store(&d->nwait, n);
}

/*
 * Pages [page, page + n) are here for good (or no longer wanted: discarded,
 * unmapped): one atomic per bitmap word, not per page.
 */
static void mark_present_run(struct fl_migrate_dest *d, uint64_t page, uint64_t n)
{
	for (uint64_t end = page + n, k; page < end; page += k) {
		uint64_t mask = fl__bits_word_mask(page, end, &k);
		uint64_t was = atomic_fetch_or(&d->received[page / 64], mask);
		uint64_t added = mask & ~was;

		if (added &&
		    atomic_fetch_add(&d->n_received, (uint64_t)__builtin_popcountll(added)) +
				    (uint64_t)__builtin_popcountll(added) == d->total) {
			pthread_mutex_lock(&d->lock);
			pthread_cond_broadcast(&d->cond);
			pthread_mutex_unlock(&d->lock);
		}
		/* Ordered after the set above: see on_fault(). */
		if (added && atomic_load(&d->nwait)) {
			uint64_t now = fl__now_ns();

			pthread_mutex_lock(&d->pend_lock);
			while (added) {
				complete(d, page / 64 * 64 + (uint64_t)__builtin_ctzll(added), now);
				added &= added - 1;
			}
			pthread_mutex_unlock(&d->pend_lock);
		}
	}
}

/* A connection failed: whoever sees it first shuts both down, so the receiver thread resumes. */
static void report_break(struct fl_migrate_dest *d)
{
	pthread_mutex_lock(&d->lock);
	if (!atomic_load(&d->broken)) {
		atomic_store(&d->broken, true);
		if (d->main.fd >= 0)
			shutdown(d->main.fd, SHUT_RDWR);
		if (d->urg.fd >= 0)
			shutdown(d->urg.fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&d->lock);
}

static bool can_request(struct fl_migrate_dest *d)
{
	return atomic_load(&d->switched) && !atomic_load(&d->broken) && d->urg.fd >= 0;
}

static int send_request(struct fl_migrate_dest *d, uint64_t page, uint64_t id)
{
	unsigned int ri = fl__mig_region_of(d->reg, d->nreg, page);
	struct fl__wire_frame f = {
		.type = FL__WIRE_REQUEST,
		.seq = id,
		.request = { .region_id = d->wreg[ri].id, .count = 1,
			     .index = page - d->reg[ri].first },
	};
	int r = fl__mig_send(&d->urg, &f, d->link.timeout_ms);

	if (!r)
		atomic_fetch_add(&d->st[D_REQUESTS], 1);
	return r;
}

/* Send the requests that wait for a connection (all of them after a resume). Under send_lock. */
static void flush_requests(struct fl_migrate_dest *d)
{
	for (;;) {
		uint64_t page = 0, id = 0;
		bool found = false;
		int r;

		if (!can_request(d))
			return;
		pthread_mutex_lock(&d->pend_lock);
		for (size_t i = 0; i < d->npend; i++)
			if (!d->pend[i].t_sent) {
				d->pend[i].t_sent = fl__now_ns();
				d->pend[i].id = d->next_id++;
				page = d->pend[i].page;
				id = d->pend[i].id;
				found = true;
				break;
			}
		pthread_mutex_unlock(&d->pend_lock);
		if (!found)
			return;
		r = send_request(d, page, id);
		if (r < 0) {
			pthread_mutex_lock(&d->pend_lock);
			for (size_t i = 0; i < d->npend; i++)
				if (d->pend[i].page == page)
					d->pend[i].t_sent = 0;
			pthread_mutex_unlock(&d->pend_lock);
			report_break(d);
			return;
		}
	}
}

static void request_pending(struct fl_migrate_dest *d)
{
	pthread_mutex_lock(&d->send_lock);
	flush_requests(d);
	pthread_mutex_unlock(&d->send_lock);
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
	void *p;

	if (n < *cap)
		return 0;
	p = realloc(*arr, (*cap ? *cap * 2 : 64) * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = *cap ? *cap * 2 : 64;
	return 0;
}

/* No store read may wait any longer: the migration failed, ended, or is being destroyed. */
static void end_reads(struct fl_migrate_dest *d)
{
	pthread_mutex_lock(&d->pend_lock);
	atomic_store(&d->ended, true);
	pthread_cond_broadcast(&d->pend_cond);
	pthread_mutex_unlock(&d->pend_lock);
}

/*
 * The store's read: the pages a fault (or a served child's populate) needs
 * are not here yet. Ask the source for each, on the urgent channel (one
 * request per page, whoever else waits for it), and wait until they came
 * (by the answer, or in the background stream). While the connections are
 * down the wait goes on, up to the resume timeout; a migration that failed
 * or ended fails the read: the region's policy then poisons the page
 * (SIGBUS), never zeros.
 */
static __thread bool urgent_thread;

static int store_read(void *ud, uint64_t off, void *buf, size_t len, size_t page_size,
		      uint64_t *holes)
{
	struct fl_migrate_dest *d = ud;
	uint64_t first = off / d->psize, n = len / d->psize;
	struct reader rd = { .left = n };
	int r = 0;

	(void)page_size;
	(void)holes;
	if (!urgent_thread) {
		/* A pager's handler thread, on the urgent path from now on (as the answers are). */
		fl__mig_urgent_thread();
		urgent_thread = true;
	}
	pthread_mutex_lock(&d->pend_lock);
	for (uint64_t i = 0; i < n && !r; i++) {
		size_t nw = atomic_load(&d->nwant);

		r = grow((void **)&d->want, &d->cap_want, nw, sizeof(*d->want));
		if (!r && !find_pend(d, first + i))
			r = grow((void **)&d->pend, &d->cap_pend, d->npend, sizeof(*d->pend));
		if (r)
			break;
		d->want[nw] = (struct want){ .page = first + i,
					     .dst = (uint8_t *)buf + i * d->psize, .rd = &rd };
		atomic_store(&d->nwant, nw + 1);
		if (!find_pend(d, first + i))
			d->pend[d->npend++] = (struct pend){ .page = first + i };
	}
	pthread_mutex_unlock(&d->pend_lock);
	if (!r)
		request_pending(d);
	pthread_mutex_lock(&d->pend_lock);
	while (!r && rd.left && !atomic_load(&d->ended)) {
		struct timespec ts = fl__abstime_in(CLOCK_REALTIME, READ_CHECK_NS);

		pthread_cond_timedwait(&d->pend_cond, &d->pend_lock, &ts);
	}
	if (rd.left) {
		size_t nw = atomic_load(&d->nwant);

		/* Given up: forget what we waited for (and requests nobody else waits on). */
		for (size_t i = 0; i < nw;) {
			if (d->want[i].rd != &rd) {
				i++;
				continue;
			}
			d->want[i] = d->want[--nw];
		}
		atomic_store(&d->nwant, nw);
		for (size_t i = 0; i < d->npend;) {
			bool wanted = false;

			for (size_t k = 0; k < nw && !wanted; k++)
				wanted = d->want[k].page == d->pend[i].page;
			if (wanted)
				i++;
			else
				d->pend[i] = d->pend[--d->npend];
		}
		if (!r)
			r = -EIO;
	}
	pthread_mutex_unlock(&d->pend_lock);
	return r;
}

/*
 * The bytes of @page arrived (@data, or NULL: a zero page): hand them to
 * every store read waiting for it, and close its request. Returns whether
 * a read was waiting.
 */
static bool deliver(struct fl_migrate_dest *d, uint64_t page, const uint8_t *data)
{
	struct pend *p;
	bool any = false;
	size_t n;

	if (!atomic_load(&d->nwant))
		return false;
	pthread_mutex_lock(&d->pend_lock);
	n = atomic_load(&d->nwant);
	for (size_t i = 0; i < n;) {
		struct want *w = &d->want[i];

		if (w->page != page) {
			i++;
			continue;
		}
		if (data)
			memcpy(w->dst, data, d->psize);
		else
			memset(w->dst, 0, d->psize);
		w->rd->left--;
		d->want[i] = d->want[--n];
		any = true;
	}
	atomic_store(&d->nwant, n);
	p = find_pend(d, page);
	if (p) {
		if (p->t_sent)
			d->lat_hist[fl__log2_bucket(fl__now_ns() - p->t_sent,
						    FL_MIGRATE_LAT_BUCKETS)]++;
		*p = d->pend[--d->npend];
	}
	if (any)
		pthread_cond_broadcast(&d->pend_cond);
	pthread_mutex_unlock(&d->pend_lock);
	return any;
}

/* The pager's hooks: a fault on a page not here yet (a thread blocks), and installs. */
static void on_fault(void *arg, struct fl_region *r, size_t pg, uint32_t tid, bool shared)
{
	struct fl_migrate_dest *d = arg;
	const struct fl__mig_region *g = fl__region_userdata(r);
	uint64_t page = g->first + pg, one = 1;
	size_t n;

	atomic_fetch_add(&d->st[D_FAULTS], 1);
	if (shared)
		atomic_fetch_add(&d->st[D_SHARED], 1);
	if (d->hooks && d->hooks->fault_efd > 0 && write(d->hooks->fault_efd, &one, 8) < 0)
		(void)0;
	pthread_mutex_lock(&d->pend_lock);
	n = atomic_load(&d->nwait);
	if (!grow((void **)&d->wait, &d->cap_wait, n, sizeof(*d->wait))) {
		d->wait[n] = (struct waiter){ .page = page, .tid = tid, .t0 = fl__now_ns() };
		atomic_store(&d->nwait, n + 1);
		/*
		 * Counted before looking at the page: an install either sees us
		 * counted (mark_present_run), or we see the page here already.
		 */
		if (fl__bm_test(d->received, page))
			atomic_store(&d->nwait, n);
	}
	pthread_mutex_unlock(&d->pend_lock);
}

static void on_installed(void *arg, struct fl_region *r, size_t pg, size_t n)
{
	const struct fl__mig_region *g = fl__region_userdata(r);

	mark_present_run(arg, g->first + pg, n);
}

/* ---------------------------------------------------------------- installing */

/*
 * Pre-copy (the program has not resumed): the regions are plain memory,
 * written directly; a newer copy of a page replaces the older one. A zero
 * page maps the kernel's zero page (no memory), so that no page the source
 * sent is absent once the pager serves the region.
 */
static void precopy_put(struct fl_migrate_dest *d, uint64_t page, const struct fl__wire_page *p)
{
	bool had = fl__bm_test(d->received, page);

	if (p->flags == FL__WIRE_PAGE_DATA)
		memcpy(page_addr(d, page), p->data, d->psize);
	else if (had || madvise(page_addr(d, page), d->psize, MADV_POPULATE_READ) < 0)
		memset(page_addr(d, page), 0, d->psize);
	atomic_fetch_add(&d->st[D_PUSHED], 1);
	if (!had && p->flags != FL__WIRE_PAGE_DATA)
		atomic_fetch_add(&d->st[D_ZERO], 1);
	mark_present_run(d, page, 1);
}

/*
 * Post-copy: pages [idx, idx+n) of region @ri (flat @page on) arrived, from
 * @src back to back (NULL: zero pages). Store reads waiting for them get
 * them; then the pager installs them where they are still absent, never
 * over a page the program wrote or discarded.
 */
static void install_run(struct fl_migrate_dest *d, unsigned int ri, uint64_t page, uint64_t idx,
			const uint8_t *src, uint32_t n, bool urgent)
{
	uint8_t out[FL__WIRE_MAX_PAGES];
	bool got[FL__WIRE_MAX_PAGES];
	uint32_t todo = 0;

	for (uint32_t k = 0; k < n; k++) {
		got[k] = deliver(d, page + k, src ? src + (size_t)k * d->psize : NULL);
		out[k] = FL__SUPPLY_PRESENT;
		if (!fl__bm_test(d->received, page + k))
			todo++;
	}
	pthread_rwlock_rdlock(&d->regions_lock);
	if (todo && d->regions && d->regions[ri])
		fl__region_supply(d->regions[ri], idx, n, src, out);
	pthread_rwlock_unlock(&d->regions_lock);
	for (uint32_t k = 0; k < n; k++) {
		bool counted = got[k] || out[k] == FL__SUPPLY_INSTALLED;

		if (counted) {
			atomic_fetch_add(&d->st[urgent ? D_URGENT : D_PUSHED], 1);
			if (!src)
				atomic_fetch_add(&d->st[D_ZERO], 1);
		}
		switch (out[k]) {
		case FL__SUPPLY_PRESENT:
			if (!got[k])
				atomic_fetch_add(&d->st[D_DUPLICATE], 1);
			/* fall through */
		case FL__SUPPLY_DISCARDED:
		case FL__SUPPLY_GONE:
			mark_present_run(d, page + k, 1);
			break;
		default:
			/* Installed (the hook counted it), or its store read will install it. */
			break;
		}
	}
}

static int install(struct fl_migrate_dest *d, const struct fl__wire_frame *f, bool urgent,
		   char *msg, size_t cap)
{
	const struct fl__wire_pages *p = &f->pages;
	const struct fl__mig_region *r = region_by_id(d, p->region_id);
	bool precopy = !urgent && !atomic_load(&d->switched);
	uint64_t base, len;

	if (!r || p->page_shift != fl__mig_page_shift() || p->first >= r->pages ||
	    p->count > r->pages - p->first) {
		snprintf(msg, cap, "PAGES for region %u pages %llu..+%u: no such pages",
			 p->region_id, (unsigned long long)p->first, p->count);
		return -EPROTO;
	}
	if (urgent != !!(f->flags & FL__WIRE_F_URGENT)) {
		snprintf(msg, cap, "PAGES %s the URGENT flag on the %s connection",
			 urgent ? "without" : "with", urgent ? "urgent" : "main");
		return -EPROTO;
	}
	len = FL__WIRE_HDR_LEN + FL__WIRE_PAGES_FIXED + (uint64_t)p->count * FL__WIRE_PAGE_ENTRY;
	for (uint32_t i = 0; i < p->count; i++)
		if (p->pages[i].flags == FL__WIRE_PAGE_DATA)
			len += d->psize;
	atomic_fetch_add(&d->st[urgent ? D_BYTES_URGENT : D_BYTES_PUSHED], len);
	base = r->first + p->first;
	if (precopy) {
		for (uint32_t i = 0; i < p->count;) {
			bool zero = p->pages[i].flags == FL__WIRE_PAGE_ZERO;
			uint32_t j = i;

			/*
			 * Pages not here yet, a run of one kind at a time: one call
			 * maps them all (the kernel's zero page for zeros; for data, a
			 * page fault per page costs far more on virtual machines).
			 */
			while (j < p->count && (p->pages[j].flags == FL__WIRE_PAGE_ZERO) == zero &&
			       !fl__bm_test(d->received, base + j))
				j++;
			if (j - i > 1 &&
			    !madvise(page_addr(d, base + i), (j - i) * d->psize,
				     zero ? MADV_POPULATE_READ : MADV_POPULATE_WRITE) && zero) {
				atomic_fetch_add(&d->st[D_PUSHED], j - i);
				atomic_fetch_add(&d->st[D_ZERO], j - i);
				mark_present_run(d, base + i, j - i);
				i = j;
				continue;
			}
			for (j = j > i ? j : i + 1; i < j; i++)
				precopy_put(d, base + i, &p->pages[i]);
		}
		return 0;
	}
	for (uint32_t i = 0; i < p->count;) {
		uint32_t j = i + 1;
		bool zero = p->pages[i].flags == FL__WIRE_PAGE_ZERO;

		/* A run of one kind; data pages lie back to back in the frame. */
		while (j < p->count && (p->pages[j].flags == FL__WIRE_PAGE_ZERO) == zero &&
		       (zero || (const uint8_t *)p->pages[j].data ==
				(const uint8_t *)p->pages[i].data + (j - i) * d->psize))
			j++;
		install_run(d, (unsigned int)(r - d->reg), base + i, p->first + i,
			    zero ? NULL : p->pages[i].data, j - i, urgent);
		i = j;
	}
	return 0;
}

/* The source's bitmap at the switch-over: drop every pre-copied page whose bit is clear. */
static int apply_valid(struct fl_migrate_dest *d, const struct fl__wire_frame *f, char *msg,
		       size_t cap)
{
	const struct fl__wire_bitmap *b = &f->bitmap;
	const struct fl__mig_region *r = region_by_id(d, b->region_id);

	if (!(d->features & FL__WIRE_FEAT_PRECOPY)) {
		snprintf(msg, cap, "a RECEIVED_BITMAP from the source without pre-copy");
		return -EPROTO;
	}
	if (!r || b->offset >= r->pages || b->nbits > r->pages - b->offset) {
		snprintf(msg, cap, "RECEIVED_BITMAP for region %u bits %llu..+%u: no such pages",
			 b->region_id, (unsigned long long)b->offset, b->nbits);
		return -EPROTO;
	}
	/* Once the program runs, its memory is its own: a repeat after a resume changes nothing. */
	if (atomic_load(&d->switched))
		return 0;
	if (!d->t_switch_first)
		d->t_switch_first = fl__now_ns();
	for (uint32_t i = 0; i < b->nbits;) {
		uint64_t pg = r->first + b->offset + i;
		uint32_t j = i;

		while (j < b->nbits && !((b->bits[j / 8] >> (j % 8)) & 1) &&
		       fl__bm_test(d->received, r->first + b->offset + j))
			j++;
		if (j == i) {
			i++;
			continue;
		}
		madvise(page_addr(d, pg), (j - i) * d->psize, MADV_DONTNEED);
		for (uint32_t k = i; k < j; k++)
			if (fl__bm_clear(d->received, r->first + b->offset + k))
				atomic_fetch_sub(&d->n_received, 1);
		atomic_fetch_add(&d->st[D_DISCARDED], j - i);
		i = j;
	}
	return 0;
}

/*
 * The pager serves the regions from now on: each a region of it whose
 * store is the source (flat page i of the migration at byte i * psize).
 * Faults on pages not here block in the store's read; a failed migration
 * poisons them (FL_ON_ERROR_POISON): SIGBUS, never zeros.
 */
static int add_regions(struct fl_migrate_dest *d)
{
	int r = 0;

	pthread_rwlock_wrlock(&d->regions_lock);
	for (unsigned int i = 0; i < d->nreg && !r; i++) {
		struct fl_region_opts o = {
			.sz = sizeof(o), .addr = d->reg[i].addr, .len = d->reg[i].len,
			.store = d->store, .store_off = d->reg[i].first * d->psize,
			.page_size = d->psize, .mem = FL_MEM_ANON, .memfd = -1,
			.install = FL_INSTALL_COPY, .prefetch = FL_PREFETCH_NONE,
			.on_error = FL_ON_ERROR_POISON, .userdata = &d->reg[i],
		};

		r = fl_region_add(d->pager, &o, &d->regions[i]);
	}
	if (r < 0) {
		for (unsigned int i = 0; i < d->nreg; i++)
			if (d->regions[i]) {
				fl_region_remove(d->regions[i]);
				d->regions[i] = NULL;
			}
	} else {
		d->added = true;
	}
	pthread_rwlock_unlock(&d->regions_lock);
	return r;
}

/*
 * Pages written before the pager served the regions (pre-copy) are
 * present, which the pager's page states do not know: tell them, so that
 * the background stream and served children take them as present.
 */
static void mark_received(struct fl_migrate_dest *d)
{
	pthread_rwlock_rdlock(&d->regions_lock);
	for (unsigned int i = 0; d->added && i < d->nreg; i++) {
		const struct fl__mig_region *g = &d->reg[i];

		for (uint64_t pg = 0; pg < g->pages;) {
			uint64_t end = pg;

			while (end < g->pages && fl__bm_test(d->received, g->first + end))
				end++;
			if (end > pg)
				fl__region_mark_present(d->regions[i], pg, end - pg);
			pg = end + 1;
		}
	}
	pthread_rwlock_unlock(&d->regions_lock);
}

static void switch_over(struct fl_migrate_dest *d)
{
	int r = add_regions(d);

	if (r < 0) {
		set_fatal(d, r, "cannot serve the regions with the pager");
		return;
	}
	pthread_mutex_lock(&d->lock);
	d->resume_ns = fl__now_ns();
	d->switch_ns = d->resume_ns - d->t_switch_first;
	atomic_store(&d->phase, FL_MIGRATE_POSTCOPY);
	atomic_store(&d->switched, true);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	/*
	 * The thread in fl_migrate_dest_accept() resumes the program: let it
	 * have this CPU before we go back to the busy background stream (the
	 * downtime ends when it runs, not when it is woken).
	 */
	sched_yield();
	mark_received(d);
	set_phase(d, FL_MIGRATE_POSTCOPY);
	/* Faults that came before the switch wait for this (none, normally). */
	request_pending(d);
}

static int take_blob(struct fl_migrate_dest *d, const struct fl__wire_frame *f, char *msg,
		     size_t cap)
{
	const struct fl__wire_blob *b = &f->blob;

	if (atomic_load(&d->switched))
		return 0;	/* repeated after a resume */
	if (!d->t_switch_first)
		d->t_switch_first = fl__now_ns();
	if (b->offset == 0) {
		uint8_t *p = realloc(d->blob, b->total ? b->total : 1);

		if (!p)
			return -ENOMEM;
		d->blob = p;
		d->blob_len = b->total;
		d->blob_have = 0;
	}
	if (b->total != d->blob_len || b->offset != d->blob_have) {
		snprintf(msg, cap, "STATE_BLOB chunk at %u of %u does not follow %zu of %zu",
			 b->offset, b->total, d->blob_have, d->blob_len);
		return -EPROTO;
	}
	if (b->len)
		memcpy(d->blob + b->offset, b->data, b->len);
	d->blob_have += b->len;
	if (d->blob_have == d->blob_len)
		switch_over(d);
	return 0;
}

/* ---------------------------------------------------------------- the session */

/* Our RECEIVED_BITMAP: what we hold, region by region, LAST on the final chunk. */
static int send_received(struct fl_migrate_dest *d, struct fl__mig_conn *c)
{
	uint8_t *bits = malloc(MIG_BITMAP_CHUNK / 8);
	int r = 0;

	if (!bits)
		return -ENOMEM;
	for (unsigned int i = 0; i < d->nreg && !r; i++) {
		const struct fl__mig_region *g = &d->reg[i];

		for (uint64_t off = 0; off < g->pages && !r; off += MIG_BITMAP_CHUNK) {
			uint32_t n = g->pages - off < MIG_BITMAP_CHUNK ? (uint32_t)(g->pages - off)
								       : MIG_BITMAP_CHUNK;
			struct fl__wire_frame f = {
				.type = FL__WIRE_RECEIVED_BITMAP,
				.flags = i == d->nreg - 1 && off + n == g->pages ? FL__WIRE_F_LAST
										 : 0,
				.bitmap = { .region_id = d->wreg[i].id, .nbits = n, .offset = off,
					    .bits = bits },
			};

			memset(bits, 0, (n + 63) / 64 * 8);
			for (uint32_t k = 0; k < n; k++)
				if (fl__bm_test(d->received, g->first + off + k))
					bits[k / 8] |= (uint8_t)(1u << (k % 8));
			r = fl__mig_send(c, &f, d->link.timeout_ms);
		}
	}
	free(bits);
	return r;
}

/*
 * One try at a session: the main connection (whose HELLO brings the
 * regions: mapped on the first session, compared on later ones), our
 * received bitmap on it, then the urgent channel.
 */
static int establish(struct fl_migrate_dest *d, int timeout_ms, char *msg, size_t cap)
{
	uint32_t flags = d->established || d->peer_resumes ? FL__WIRE_HELLO_RESUME : 0;
	struct fl__mig_conn c[2];
	struct fl__mig_peer peer = { 0 };
	struct fl__wire_hello h;
	uint64_t feat = 0;
	int r = 0;

	fl__mig_conn_reset(&c[0]);
	fl__mig_conn_reset(&c[1]);
	for (int i = 0; i < 2 && !r; i++) {
		r = fl__mig_hello_init(&h, FL__WIRE_ROLE_DESTINATION, &d->link,
				       flags | (i ? FL__WIRE_HELLO_URGENT : 0),
				       d->have_session ? d->session : NULL,
				       d->hooks ? d->hooks->version_min : 0,
				       d->hooks ? d->hooks->version_max : 0);
		if (r < 0)
			break;
		r = fl__mig_link_handshake(&d->link, "destination", i == 1, timeout_ms, &h, &c[i],
					   &peer, &feat, msg, cap);
		if (r == -EAGAIN && !i) {
			bool ours = d->have_session && !memcmp(peer.hello.session_id, d->session,
							       sizeof(d->session));

			if (d->established && !ours) {
				/* Someone else's source: this destination is taken. */
				snprintf(msg, cap, "a source of another session connected; "
					 "refused");
				fl__mig_send_error(&c[0], FL__WIRE_ERR_SESSION,
						   "this destination belongs to another migration");
			} else if (peer.hello.flags & FL__WIRE_HELLO_RESUME) {
				/* The source holds a session we never finished: take it up. */
				d->peer_resumes = true;
				memcpy(d->session, peer.hello.session_id, sizeof(d->session));
				d->have_session = true;
			}
		}
		if (r < 0)
			break;
		if (!i) {
			if (d->established &&
			    memcmp(peer.hello.session_id, d->session, sizeof(d->session))) {
				snprintf(msg, cap, "a source of another session connected; "
					 "refused");
				fl__mig_send_error(&c[0], FL__WIRE_ERR_SESSION,
						   "this destination belongs to another migration");
				r = -EAGAIN;
				break;
			}
			memcpy(d->session, peer.hello.session_id, sizeof(d->session));
			d->have_session = true;
			d->features = feat;
			r = take_regions(d, &peer.hello, msg, cap);
			if (r < 0) {
				fl__mig_send_error(&c[0], FL__WIRE_ERR_REGIONS, msg);
				break;
			}
			r = send_received(d, &c[0]);
			if (r < 0)
				snprintf(msg, cap, "sending the received bitmap: %s", strerror(-r));
		}
	}
	fl__mig_peer_fini(&peer);
	if (r < 0) {
		fl__mig_conn_close(&c[0]);
		fl__mig_conn_close(&c[1]);
		return r;
	}
	pthread_mutex_lock(&d->send_lock);
	pthread_mutex_lock(&d->lock);
	d->main = c[0];
	d->urg = c[1];
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_unlock(&d->send_lock);
	d->established = true;
	return 0;
}

/* A resume: wait for the urgent receiver to park, reconnect (or be reconnected), carry on. */
static int recover(struct fl_migrate_dest *d)
{
	uint64_t deadline = d->link.resume_timeout_ms < 0 ? UINT64_MAX :
			    fl__now_ns() + (uint64_t)d->link.resume_timeout_ms * 1000000ull;
	char msg[MIG_ERR_LEN] = "";
	bool done = atomic_load(&d->done);
	int delay = 10, r;

	if (!done)
		set_phase(d, FL_MIGRATE_PAUSED);
	pthread_mutex_lock(&d->lock);
	atomic_store(&d->broken, true);
	if (d->main.fd >= 0)
		shutdown(d->main.fd, SHUT_RDWR);
	if (d->urg.fd >= 0)
		shutdown(d->urg.fd, SHUT_RDWR);
	while (d->urg_started && !d->urg_parked)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_lock(&d->send_lock);
	pthread_mutex_lock(&d->lock);
	fl__mig_conn_close(&d->main);
	fl__mig_conn_close(&d->urg);
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_unlock(&d->send_lock);
	/* Requests in flight died with the connection: all go again. */
	pthread_mutex_lock(&d->pend_lock);
	for (size_t i = 0; i < d->npend; i++)
		d->pend[i].t_sent = 0;
	pthread_mutex_unlock(&d->pend_lock);

	for (;;) {
		uint64_t now = fl__now_ns();
		int left = d->link.timeout_ms;

		if (fl__mig_link_stopping(&d->link))
			return -ECANCELED;
		if (deadline != UINT64_MAX && (deadline - now) / 1000000 < (uint64_t)left)
			left = now < deadline ? (int)((deadline - now) / 1000000) + 1 : 1;
		r = establish(d, left, msg, sizeof(msg));
		if (!r)
			break;
		if (r != -EAGAIN && !fl__mig_err_transient(r)) {
			if (!done) {
				pthread_mutex_lock(&d->lock);
				snprintf(d->err, sizeof(d->err), "resuming: %s", msg);
				pthread_mutex_unlock(&d->lock);
			}
			return r;
		}
		if (fl__now_ns() >= deadline) {
			/*
			 * Not -ETIMEDOUT: that is what a wait of the caller's that
			 * merely expired returns; this ends the migration.
			 */
			if (done)
				return -ENOLINK;
			pthread_mutex_lock(&d->lock);
			snprintf(d->err, sizeof(d->err), "the source did not come back within "
				 "%d ms of the connection's loss (the last attempt: %s)",
				 d->link.resume_timeout_ms, msg);
			pthread_mutex_unlock(&d->lock);
			return -ENOLINK;
		}
		if (r != -EAGAIN && fl__mig_link_pause(&d->link, delay) < 0)
			return -ECANCELED;
		delay = delay * 2 > 1000 ? 1000 : delay * 2;
	}
	atomic_fetch_add(&d->resumes, 1);
	pthread_mutex_lock(&d->lock);
	atomic_store(&d->broken, false);
	d->epoch++;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	if (!done)
		set_phase(d, atomic_load(&d->switched) ? FL_MIGRATE_POSTCOPY : FL_MIGRATE_PRECOPY);
	request_pending(d);
	return 0;
}

/*
 * Everything is here: the regions leave the pager and become ordinary
 * memory. Served children keep their pagers until destroy (their discarded
 * pages still read zeros), with nothing left to fetch.
 */
static void finish(struct fl_migrate_dest *d)
{
	pthread_rwlock_wrlock(&d->regions_lock);
	for (unsigned int i = 0; d->added && i < d->nreg; i++) {
		if (d->regions[i])
			fl_region_remove(d->regions[i]);
		d->regions[i] = NULL;
	}
	d->added = false;
	pthread_rwlock_unlock(&d->regions_lock);
	pthread_mutex_lock(&d->lock);
	d->total_ns = fl__now_ns() - d->t_start;
	atomic_store(&d->phase, FL_MIGRATE_DONE);	/* before anyone sees done */
	atomic_store(&d->done, true);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	set_phase(d, FL_MIGRATE_DONE);
}

/* Fetch every page the served children still lack (they were forked during post-copy). */
static void *kids_main(void *arg)
{
	struct fl_migrate_dest *d = arg;
	int r;

	fl__mig_name_thread("fl-mig-dst/kid");
	/*
	 * A failure here (a request lost with a broken urgent connection, a busy
	 * kernel) would leave a child to fail loudly on pages it never got: try
	 * again a few times, a little later each time, before giving up.
	 */
	r = fl__pager_children_populate(d->pager);
	for (int i = 1; r < 0 && i <= 4 && !atomic_load(&d->broken) && !d->fatal; i++) {
		struct timespec ts = { .tv_nsec = 50000000l * i };

		fl__info("migrate: destination: a forked child's pages (try %d): %s; again", i,
			 strerror(-r));
		nanosleep(&ts, NULL);
		r = fl__pager_children_populate(d->pager);
	}
	pthread_mutex_lock(&d->lock);
	atomic_store(&d->kids_result, r < 0 ? r : 0);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* The source sent everything: wait for the pages still on their way, then confirm. */
static int complete_session(struct fl_migrate_dest *d)
{
	struct fl__wire_frame c = { .type = FL__WIRE_COMPLETE };
	uint64_t last = atomic_load(&d->n_received), since = fl__now_ns();
	int r;

	pthread_mutex_lock(&d->lock);
	while (atomic_load(&d->n_received) < d->total && !d->quit && !atomic_load(&d->broken) &&
	       !d->fatal) {
		struct timespec ts;
		uint64_t now = fl__now_ns(), n = atomic_load(&d->n_received);

		if (n != last) {
			last = n;
			since = now;
		} else if (now - since > (uint64_t)d->link.timeout_ms * 1000000ull) {
			pthread_mutex_unlock(&d->lock);
			fl__info("migrate: destination: pages still missing %d ms after the "
				 "source's COMPLETE; resuming to compare bitmaps",
				 d->link.timeout_ms);
			return -ETIMEDOUT;	/* a resume exchanges bitmaps and fixes it */
		}
		ts = fl__abstime_in(CLOCK_REALTIME, 50000000);
		pthread_cond_timedwait(&d->cond, &d->lock, &ts);
	}
	r = d->quit ? -ECANCELED : d->fatal ? d->fatal : atomic_load(&d->broken) ? -ECONNRESET : 0;
	pthread_mutex_unlock(&d->lock);
	if (r < 0)
		return r;
	/*
	 * The session ends only once live children forked during post-copy
	 * have every page too: their missing ones come on the urgent channel
	 * (a thread of its own, so a broken connection still resumes here).
	 */
	if (!atomic_load(&d->done) && fl__pager_children(d->pager)) {
		if (!d->kids_started) {
			atomic_store(&d->kids_result, 1);
			r = pthread_create(&d->kids_thread, NULL, kids_main, d);
			if (r)
				return -r;
			d->kids_started = true;
		}
		pthread_mutex_lock(&d->lock);
		while (atomic_load(&d->kids_result) == 1 && !d->quit && !atomic_load(&d->broken) &&
		       !d->fatal) {
			struct timespec ts = fl__abstime_in(CLOCK_REALTIME, 50000000);

			pthread_cond_timedwait(&d->cond, &d->lock, &ts);
		}
		r = d->quit ? -ECANCELED : d->fatal ? d->fatal : atomic_load(&d->broken) ?
		    -ECONNRESET : 0;
		pthread_mutex_unlock(&d->lock);
		if (r < 0)
			return r;
		pthread_join(d->kids_thread, NULL);
		d->kids_started = false;
		if (atomic_load(&d->kids_result) < 0)
			fl__warn("migrate: destination: a forked child could not get every page: %s",
				 strerror(-atomic_load(&d->kids_result)));
	}
	c.complete.pages = atomic_load(&d->n_received);
	r = fl__mig_send(&d->main, &c, d->link.timeout_ms);
	if (r < 0)
		return r;
	/*
	 * Every page is here: the program's migration is over. The session
	 * lingers until the source closes, so that a source that never saw our
	 * COMPLETE can resume and ask again.
	 */
	if (!atomic_load(&d->done))
		finish(d);
	return 0;
}

/* Serve the main connection: 1 when the migration completed, else the error that ended it. */
static int serve_main(struct fl_migrate_dest *d, char *msg, size_t cap)
{
	for (;;) {
		const struct fl__wire_frame *f;
		int r = fl__wire_reader_next(&d->main.rd, -1, &f);

		if (r == 0 && atomic_load(&d->done))
			return 1;	/* the source saw our COMPLETE and closed */
		if (r == 0) {
			snprintf(msg, cap, "the source closed the main connection");
			return -ECONNRESET;
		}
		if (r < 0) {
			const char *why = fl__wire_reader_error(&d->main.rd);

			snprintf(msg, cap, "main connection: %s", *why ? why : strerror(-r));
			if (r == -EPROTO || r == -EBADMSG || r == -EPROTONOSUPPORT)
				fl__mig_send_error(&d->main, fl__wire_error_code_from_errno(r),
						   msg);
			return r;
		}
		switch (f->type) {
		case FL__WIRE_PAGES:
			r = install(d, f, false, msg, cap);
			break;
		case FL__WIRE_RECEIVED_BITMAP:
			r = apply_valid(d, f, msg, cap);
			break;
		case FL__WIRE_STATE_BLOB:
			r = take_blob(d, f, msg, cap);
			break;
		case FL__WIRE_COMPLETE:
			if (!atomic_load(&d->switched)) {
				snprintf(msg, cap, "COMPLETE before the state blob");
				r = -EPROTO;
				break;
			}
			r = complete_session(d);
			break;
		case FL__WIRE_PING: {
			struct fl__wire_frame pong = { .type = FL__WIRE_PONG, .seq = f->seq };

			r = fl__mig_send(&d->main, &pong, d->link.timeout_ms);
			break;
		}
		case FL__WIRE_ERROR:
			snprintf(msg, cap, "the source reported: %s", f->error.msg);
			return -fl__wire_error_code_to_errno(f->error.code);
		default:
			r = fl__mig_unexpected(f, "on the main connection", msg, cap);
			break;
		}
		if (r < 0) {
			if (r == -EPROTO)
				fl__mig_send_error(&d->main, FL__WIRE_ERR_PROTO, msg);
			return r;
		}
		progress(d);
	}
}

static int step_error(struct fl_migrate_dest *d, int r)
{
	int fatal;

	pthread_mutex_lock(&d->lock);
	fatal = d->fatal;
	pthread_mutex_unlock(&d->lock);
	return fatal ? fatal : r;
}

static void *rx_main(void *arg)
{
	struct fl_migrate_dest *d = arg;
	char msg[MIG_ERR_LEN];

	fl__mig_name_thread("fl-mig-dst/rx");
	for (;;) {
		int r;

		msg[0] = 0;
		r = serve_main(d, msg, sizeof(msg));
		if (r == 1)
			break;
		r = step_error(d, r);
		if (d->quit)
			break;
		fl__debug("migrate: destination: %s", msg);
		if (!fl__mig_err_transient(r)) {
			if (!atomic_load(&d->done))
				set_fatal(d, r, msg);
			break;
		}
		fl__info("migrate: destination: connection lost (%s); resuming", msg);
		r = recover(d);
		if (r < 0) {
			/* Every page is here: a source that does not come back is on its own. */
			if (!d->quit && !atomic_load(&d->done))
				set_fatal(d, r, NULL);
			break;
		}
	}
	/* No answer can come any more: a page still wanted (a child's) fails loudly. */
	end_reads(d);
	return NULL;
}

static int serve_urgent(struct fl_migrate_dest *d, char *msg, size_t cap)
{
	for (;;) {
		const struct fl__wire_frame *f;
		int r = fl__wire_reader_next(&d->urg.rd, -1, &f);

		if (r == 0) {
			snprintf(msg, cap, "the source closed the urgent channel");
			return -ECONNRESET;
		}
		if (r < 0) {
			const char *why = fl__wire_reader_error(&d->urg.rd);

			snprintf(msg, cap, "urgent channel: %s", *why ? why : strerror(-r));
			if (r == -EPROTO || r == -EBADMSG || r == -EPROTONOSUPPORT) {
				pthread_mutex_lock(&d->send_lock);
				fl__mig_send_error(&d->urg, fl__wire_error_code_from_errno(r), msg);
				pthread_mutex_unlock(&d->send_lock);
			}
			return r;
		}
		switch (f->type) {
		case FL__WIRE_PAGES:
			r = install(d, f, true, msg, cap);
			break;
		case FL__WIRE_PING: {
			struct fl__wire_frame pong = { .type = FL__WIRE_PONG, .seq = f->seq };

			pthread_mutex_lock(&d->send_lock);
			r = fl__mig_send(&d->urg, &pong, d->link.timeout_ms);
			pthread_mutex_unlock(&d->send_lock);
			break;
		}
		case FL__WIRE_PONG:
			break;
		case FL__WIRE_ERROR:
			snprintf(msg, cap, "the source reported: %s", f->error.msg);
			return -fl__wire_error_code_to_errno(f->error.code);
		default:
			r = fl__mig_unexpected(f, "on the urgent channel", msg, cap);
			break;
		}
		if (r < 0) {
			if (r == -EPROTO) {
				pthread_mutex_lock(&d->send_lock);
				fl__mig_send_error(&d->urg, FL__WIRE_ERR_PROTO, msg);
				pthread_mutex_unlock(&d->send_lock);
			}
			return r;
		}
	}
}

static void *urgent_main(void *arg)
{
	struct fl_migrate_dest *d = arg;
	char msg[MIG_ERR_LEN];

	fl__mig_name_thread("fl-mig-dst/urg");
	fl__mig_urgent_thread();
	pthread_mutex_lock(&d->lock);
	for (;;) {
		int epoch, r;

		while (!d->quit && !atomic_load(&d->done) &&
		       (atomic_load(&d->broken) || d->urg.fd < 0)) {
			d->urg_parked = true;
			pthread_cond_broadcast(&d->cond);
			pthread_cond_wait(&d->cond, &d->lock);
		}
		if (d->quit || atomic_load(&d->done))
			break;
		d->urg_parked = false;
		epoch = d->epoch;
		pthread_mutex_unlock(&d->lock);

		msg[0] = 0;
		r = serve_urgent(d, msg, sizeof(msg));

		pthread_mutex_lock(&d->lock);
		if (d->quit || atomic_load(&d->done))
			break;
		if (epoch != d->epoch || atomic_load(&d->broken))
			continue;
		if (!fl__mig_err_transient(r) && !d->fatal) {
			pthread_mutex_unlock(&d->lock);
			set_fatal(d, r, msg);
			pthread_mutex_lock(&d->lock);
		}
		atomic_store(&d->broken, true);
		if (d->main.fd >= 0)
			shutdown(d->main.fd, SHUT_RDWR);
	}
	d->urg_parked = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* ---------------------------------------------------------------- public */

static int start_thread(pthread_t *t, bool *started, void *(*fn)(void *), void *arg)
{
	int r = pthread_create(t, NULL, fn, arg);

	if (r)
		return -r;
	*started = true;
	return 0;
}

/* Wait on cond until @until(d) or the deadline (0: none); -ETIMEDOUT. Under d->lock. */
static int wait_until(struct fl_migrate_dest *d, bool (*until)(struct fl_migrate_dest *),
		      int timeout_ms)
{
	struct timespec ts;

	if (timeout_ms >= 0)
		ts = fl__abstime_in(CLOCK_REALTIME, (uint64_t)timeout_ms * 1000000);
	while (!until(d)) {
		int r = timeout_ms < 0 ? pthread_cond_wait(&d->cond, &d->lock) :
					 pthread_cond_timedwait(&d->cond, &d->lock, &ts);

		if (r == ETIMEDOUT && !until(d))
			return -ETIMEDOUT;
	}
	return 0;
}

static bool switched_or_failed(struct fl_migrate_dest *d)
{
	return atomic_load(&d->switched) || d->fatal || atomic_load(&d->done);
}

static bool done_or_failed(struct fl_migrate_dest *d)
{
	return atomic_load(&d->done) || d->fatal;
}

FL_API int fl_migrate_dest_accept(struct fl_migrate_dest *d, int timeout_ms,
				  const void **ret_blob, size_t *ret_len)
{
	uint64_t deadline;
	char msg[MIG_ERR_LEN] = "";
	int delay = 10, r;

	if (!d || !ret_blob || !ret_len || timeout_ms < -1)
		return fl__einval(__func__, "%s", !d ? "d is NULL" : !ret_blob || !ret_len ?
				  "ret_blob or ret_len is NULL" : "timeout_ms below -1");
	if (d->pid != getpid())
		return -ECHILD;
	deadline = timeout_ms < 0 ? UINT64_MAX :
		   fl__now_ns() + (uint64_t)timeout_ms * 1000000ull;
	if (!d->started) {
		if (!d->t_start)
			d->t_start = fl__now_ns();
		set_phase(d, FL_MIGRATE_CONNECTING);
		for (;;) {
			uint64_t now = fl__now_ns();
			bool far = deadline == UINT64_MAX ||
				   deadline - now > (uint64_t)INT32_MAX * 1000;
			int left = far ? d->link.timeout_ms : (int)((deadline - now) / 1000000);

			if (now >= deadline)
				return fail(d, -ETIMEDOUT, "no source within %d ms%s%s", timeout_ms,
					    msg[0] ? ": " : "", msg);
			if (left > d->link.timeout_ms)
				left = d->link.timeout_ms;
			r = establish(d, left > 0 ? left : 1, msg, sizeof(msg));
			if (!r) {
				/* An earlier call's "no source within" is history now. */
				pthread_mutex_lock(&d->lock);
				d->err[0] = 0;
				pthread_mutex_unlock(&d->lock);
				break;
			}
			if (r != -EAGAIN && !fl__mig_err_transient(r)) {
				fail(d, r, "%s", msg);
				fl__err("migrate: destination: %s", d->err);
				atomic_store(&d->phase, FL_MIGRATE_FAILED);
				return r;
			}
			if (r != -EAGAIN && r != -ETIMEDOUT &&
			    fl__mig_link_pause(&d->link, delay) < 0)
				return -ECANCELED;
			delay = delay * 2 > 500 ? 500 : delay * 2;
		}
		set_phase(d, FL_MIGRATE_PRECOPY);
		r = start_thread(&d->urg_thread, &d->urg_started, urgent_main, d);
		if (!r)
			r = start_thread(&d->rx_thread, &d->rx_started, rx_main, d);
		if (r < 0) {
			set_fatal(d, r, "cannot start the destination's threads");
			return r;
		}
		d->started = true;
	}
	pthread_mutex_lock(&d->lock);
	r = wait_until(d, switched_or_failed, timeout_ms);
	if (!r && !atomic_load(&d->switched))
		r = d->fatal;
	pthread_mutex_unlock(&d->lock);
	if (r < 0)
		return r;
	*ret_blob = d->blob;
	*ret_len = d->blob_len;
	return 0;
}

FL_API int fl_migrate_dest_wait(struct fl_migrate_dest *d, int timeout_ms)
{
	int r;

	if (!d || timeout_ms < -1 || !d->started)
		return fl__einval(__func__, "%s", !d ? "d is NULL" : timeout_ms < -1 ?
				  "timeout_ms below -1" : "fl_migrate_dest_accept() has not run");
	if (d->pid != getpid())
		return -ECHILD;
	pthread_mutex_lock(&d->lock);
	r = wait_until(d, done_or_failed, timeout_ms);
	if (!r && !atomic_load(&d->done))
		r = d->fatal;
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* EAGAIN while poisoning: an event is pending, which the pager's handler threads read. */
/*
 * The pages that never came, poisoned now (SIGBUS on access, never zeros)
 * by the pager's own page states: a page the program discarded stays
 * zeros, a present one is left alone. Regions the pager does not serve yet
 * (a failure before the switch-over) join it first: only a registered
 * range can be poisoned.
 */
static void poison_missing(struct fl_migrate_dest *d)
{
	int e;

	if (!d->added && d->regions && (e = add_regions(d)) < 0)
		fl__err("migrate: destination: cannot register the regions to poison their "
			"missing pages (%s)", strerror(-e));
	pthread_rwlock_rdlock(&d->regions_lock);
	for (unsigned int i = 0; d->added && i < d->nreg; i++) {
		if (!d->regions[i])
			continue;
		e = fl__region_poison_absent(d->regions[i], NULL);
		if (e < 0)
			fl__err("migrate: destination: poisoning the missing pages of region %u: %s",
				d->wreg[i].id, strerror(-e));
	}
	pthread_rwlock_unlock(&d->regions_lock);
}

FL_API void fl_migrate_dest_destroy(struct fl_migrate_dest *d)
{
	uint64_t one = 1;

	if (!d)
		return;
	if (d->link.stop_efd >= 0 && write(d->link.stop_efd, &one, sizeof(one)) < 0)
		(void)0;
	pthread_mutex_lock(&d->lock);
	d->quit = true;
	if (d->main.fd >= 0)
		shutdown(d->main.fd, SHUT_RDWR);
	if (d->urg.fd >= 0)
		shutdown(d->urg.fd, SHUT_RDWR);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	/* Store reads give up: their pages are poisoned (SIGBUS), never zeros. */
	end_reads(d);
	if (d->rx_started)
		pthread_join(d->rx_thread, NULL);
	if (d->urg_started)
		pthread_join(d->urg_thread, NULL);
	if (d->kids_started)
		pthread_join(d->kids_thread, NULL);
	/*
	 * Not complete: the pages that never came are poisoned (SIGBUS on
	 * access), by the pager's removal of its regions. Regions mapped
	 * before the switch-over join it for that.
	 */
	if (d->mapped && !d->added && !atomic_load(&d->done) && d->regions)
		add_regions(d);
	fl_pager_destroy(d->pager);
	fl_store_destroy(d->store);
	fl__mig_conn_close(&d->main);
	fl__mig_conn_close(&d->urg);
	fl__mig_link_fini(&d->link);
	fl_uffd_close(d->uffd);
	free(d->received);
	free(d->regions);
	free(d->want);
	free(d->wreg);
	free(d->reg);
	free(d->by_addr);
	free(d->by_id);
	free(d->blob);
	free(d->pend);
	free(d->wait);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->send_lock);
	pthread_mutex_destroy(&d->pend_lock);
	pthread_cond_destroy(&d->cond);
	pthread_cond_destroy(&d->pend_cond);
	pthread_rwlock_destroy(&d->regions_lock);
	free(d);
}
