/* SPDX-License-Identifier: MIT */
/* The source side of a migration: pre-copy, the switch-over, background push, urgent answers. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faultline.h"
#include "migrate-int.h"

#define PM_PRESENT (1ull << 63)
#define PM_SWAP (1ull << 62)
#define NO_HINT UINT64_MAX
#define PROGRESS_NS 100000000ull
/* The runs one PAGEMAP_SCAN call returns at most. */
#define SCAN_RUNS 256

enum src_stat {
	S_PUSHED,
	S_URGENT,
	S_ZERO,
	S_BYTES_PUSHED,
	S_BYTES_URGENT,
	S_REQUESTS,
	S_PRECOPY_PAGES,
	S_DIRTY,
	S_COUNT,
};

/* Buffers to encode and send a PAGES frame without copying page bytes (one per sending thread). */
struct sender {
	uint8_t meta[FL__WIRE_PAGES_META_MAX];
	struct iovec iov[1 + MIG_BATCH];
	struct fl__wire_page pages[MIG_BATCH];
	uint64_t pm[MIG_BATCH];
	uint8_t *staging;		/* pre-copy: a copy of the pages, taken before the CRC */
};

struct fl_migrate_source {
	pid_t pid;
	struct fl_migrate_source_opts o;
	struct fl__mig_link link;
	const struct fl__mig_hooks *hooks;
	struct fl__mig_region *reg;
	struct fl__wire_region *wreg;	/* the HELLO's table */
	unsigned int nreg;
	uint64_t total;
	size_t psize;
	uint8_t session[FL__WIRE_SESSION_LEN];
	int pagemap_fd;
	struct fl_uffd *wp;		/* pre-copy: write tracking (WP_ASYNC) */

	bool ran;
	_Atomic uint64_t *sent;		/* the destination has (or is being sent) this page's
					   current content */
	_Atomic uint64_t n_sent;
	uint64_t *final_dirty;		/* pre-copy: written between the last pass and the stop */
	_Atomic uint64_t hint;		/* where the background continues: after the last request */
	_Atomic uint64_t limit;		/* background bytes/s, 0: none */
	_Atomic bool stopped;		/* the application is stopped: memory is stable */
	uint64_t cursor;
	uint64_t rl_next;		/* rate limit: when the next frame may go */
	const void *blob;
	size_t blob_len;
	bool blob_done;
	bool complete_sent;		/* under lock: our COMPLETE is out on this session */
	bool precopy;			/* pre-copy ran: the switch-over sends a bitmap */

	/* The session's connections. main belongs to the run thread, urg to the urgent thread. */
	struct fl__mig_conn main, urg;
	uint64_t features;
	bool established, peer_resumes;
	struct sender bg, ug;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t urg_thread;
	bool urg_started;
	bool urg_parked;
	_Atomic bool broken;		/* the connections are being replaced */
	bool quit;
	int epoch;
	int fatal;			/* an error that ends the migration, from any thread */

	_Atomic uint64_t st[S_COUNT];
	_Atomic uint32_t phase;
	_Atomic uint32_t rounds;
	_Atomic uint32_t resumes;
	_Atomic uint64_t bandwidth;
	uint64_t t_start, stop_ns, switch_ns, total_ns;
	uint64_t last_progress;
	char err[MIG_ERR_LEN];
};

static int fail(struct fl_migrate_source *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct fl_migrate_source *s, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&s->lock);
	if (!s->err[0]) {
		va_start(ap, fmt);
		vsnprintf(s->err, sizeof(s->err), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&s->lock);
	return err;
}

/*
 * The migration ends here, whatever an earlier transient error said: this
 * sentence replaces it, and the error becomes fatal (no more resumes).
 */
static int give_up(struct fl_migrate_source *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int give_up(struct fl_migrate_source *s, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&s->lock);
	if (!s->fatal) {
		s->fatal = err;
		va_start(ap, fmt);
		vsnprintf(s->err, sizeof(s->err), fmt, ap);
		va_end(ap);
	}
	err = s->fatal;
	pthread_mutex_unlock(&s->lock);
	return err;
}

static void set_phase(struct fl_migrate_source *s, enum fl_migrate_phase p)
{
	atomic_store(&s->phase, p);
	if (s->o.progress)
		s->o.progress(s->o.userdata, p, atomic_load(&s->n_sent), s->total);
	s->last_progress = fl__now_ns();
}

static void progress(struct fl_migrate_source *s)
{
	uint64_t now;

	if (!s->o.progress)
		return;
	now = fl__now_ns();
	if (now - s->last_progress < PROGRESS_NS)
		return;
	s->last_progress = now;
	s->o.progress(s->o.userdata, atomic_load(&s->phase), atomic_load(&s->n_sent), s->total);
}

static void mark_sent(struct fl_migrate_source *s, uint64_t pg)
{
	if (!fl__bm_set(s->sent, pg))
		atomic_fetch_add(&s->n_sent, 1);
}

static void mark_unsent(struct fl_migrate_source *s, uint64_t pg)
{
	if (fl__bm_clear(s->sent, pg))
		atomic_fetch_sub(&s->n_sent, 1);
}

/* ---------------------------------------------------------------- create */

static int cmp_region(const void *a, const void *b)
{
	const struct fl__mig_region *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

void fl__migrate_source_set_hooks(struct fl_migrate_source *s, const struct fl__mig_hooks *h)
{
	s->hooks = h;
}

FL_API int fl_migrate_source_create(const struct fl_migrate_source_opts *opts,
				    struct fl_migrate_source **ret)
{
	struct fl_migrate_source *s;
	struct fl_migrate_source_opts o;
	char msg[256] = "";
	size_t ps = fl__page_size();
	int r;

	if (!ret)
		return fl__einval(__func__, "ret is NULL");
	if (fl__opts_copy(&o, sizeof(o), opts, "fl_migrate_source_create") < 0)
		return -EINVAL;
	if (!o.regions || !o.n_regions || o.n_regions > FL__WIRE_MAX_REGIONS ||
	    (o.flags & ~(uint32_t)(FL_MIGRATE_LISTEN | FL_MIGRATE_STOP_AND_COPY |
				   FL_MIGRATE_INSECURE | FL_MIGRATE_VERIFY_PEER)) ||
	    (o.precopy_rounds && !o.stop) || o.blob_len > FL__WIRE_MAX_BLOB ||
	    (o.blob_len && !o.blob)) {
		fl__err("migrate: source options: regions (1 to %u), flags, a stop callback for "
			"pre-copy, a blob of at most %u bytes", FL__WIRE_MAX_REGIONS,
			FL__WIRE_MAX_BLOB);
		return -EINVAL;
	}
	if (o.precopy_rounds) {
		struct fl_features f;

		fl_probe(&f);
		if ((f.features & (FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN)) !=
		    (FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN)) {
			fl__err("migrate: pre-copy needs userfaultfd WP_ASYNC and PAGEMAP_SCAN "
				"(Linux 6.7)");
			return -EOPNOTSUPP;
		}
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->pid = getpid();
	s->pagemap_fd = -1;
	s->psize = ps;
	s->main.fd = s->urg.fd = -1;
	atomic_init(&s->hint, NO_HINT);
	atomic_init(&s->limit, o.max_bandwidth);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->link.lfd = s->link.stop_efd = -1;
	s->o = o;
	s->o.regions = NULL;
	s->o.host = NULL;
	s->o.key = NULL;
	s->o.tls_ca_file = s->o.tls_cert_file = s->o.tls_key_file = s->o.tls_peer_name = NULL;
	s->nreg = o.n_regions;
	s->reg = calloc(o.n_regions, sizeof(*s->reg));
	s->wreg = calloc(o.n_regions, sizeof(*s->wreg));
	if (!s->reg || !s->wreg) {
		r = -ENOMEM;
		goto fail;
	}
	for (unsigned int i = 0; i < o.n_regions; i++) {
		uintptr_t a = (uintptr_t)o.regions[i].addr;
		size_t len = o.regions[i].len;

		if (!a || a % ps || !len || len % ps || a + len < a) {
			fl__err("migrate: region %u (%p, %zu bytes) is not page aligned",
				i, o.regions[i].addr, len);
			r = -EINVAL;
			goto fail;
		}
		s->reg[i] = (struct fl__mig_region){ .start = a, .len = len,
						     .addr = (uint8_t *)a, .pages = len / ps };
	}
	/* Sorted by address: overlaps are then neighbours, and flat indices follow addresses. */
	qsort(s->reg, s->nreg, sizeof(*s->reg), cmp_region);
	for (unsigned int i = 0; i < s->nreg; i++) {
		if (i && s->reg[i].start < s->reg[i - 1].start + s->reg[i - 1].len) {
			fl__err("migrate: regions at %#llx and %#llx overlap",
				(unsigned long long)s->reg[i - 1].start,
				(unsigned long long)s->reg[i].start);
			r = -EINVAL;
			goto fail;
		}
		s->reg[i].first = s->total;
		s->total += s->reg[i].pages;
		s->wreg[i] = (struct fl__wire_region){ .id = i,
						       .page_shift = (uint8_t)fl__mig_page_shift(),
						       .start = s->reg[i].start,
						       .length = s->reg[i].len };
	}
	s->sent = fl__bm_alloc(s->total);
	s->bg.staging = mmap(NULL, FL__WIRE_MAX_DATA, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!s->sent || s->bg.staging == MAP_FAILED) {
		s->bg.staging = NULL;
		r = -ENOMEM;
		goto fail;
	}
	if (o.precopy_rounds) {
		s->final_dirty = calloc((size_t)(s->total / 64 + 1), sizeof(uint64_t));
		if (!s->final_dirty) {
			r = -ENOMEM;
			goto fail;
		}
	}
	r = fl_pagemap_open(0, &s->pagemap_fd);
	if (r < 0)
		s->pagemap_fd = -1;	/* then every page is read to find the zero ones */
	if (getrandom(s->session, sizeof(s->session), 0) != (ssize_t)sizeof(s->session)) {
		r = -EIO;
		goto fail;
	}
	r = fl__mig_link_init(&s->link, o.flags, o.host, o.port,
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
	*ret = s;
	return 0;
fail:
	fl_migrate_source_destroy(s);
	return r;
}

FL_API int fl_migrate_source_port(const struct fl_migrate_source *s, uint16_t *ret_port)
{
	if (!s || !ret_port || !s->link.listen)
		return fl__einval(__func__, "%s", !s ? "s is NULL" : !ret_port ?
				  "ret_port is NULL" : "the source does not listen");
	if (s->pid != getpid())
		return -ECHILD;
	*ret_port = s->link.port;
	return 0;
}

FL_API int fl_migrate_source_set_bandwidth(struct fl_migrate_source *s, uint64_t bytes_per_s)
{
	if (!s)
		return fl__einval(__func__, "s is NULL");
	if (s->pid != getpid())
		return -ECHILD;
	atomic_store(&s->limit, bytes_per_s);
	return 0;
}

FL_API const char *fl_migrate_source_error(const struct fl_migrate_source *s)
{
	return s ? s->err : "";
}

FL_API int fl_migrate_source_stats(const struct fl_migrate_source *s,
				   struct fl_migrate_source_stats *out)
{
	struct fl_migrate_source *m = (struct fl_migrate_source *)s;
	struct fl_migrate_source_stats st, *ret = &st;

	if (!s || !out)
		return fl__einval(__func__, "%s is NULL", !s ? "s" : "ret");
	if (s->pid != getpid())
		return -ECHILD;
	pthread_mutex_lock(&m->lock);
	*ret = (struct fl_migrate_source_stats){
		.phase = atomic_load(&s->phase),
		.resumes = atomic_load(&s->resumes),
		.pages_total = s->total,
		.pages_sent = atomic_load(&s->n_sent),
		.pages_pushed = atomic_load(&s->st[S_PUSHED]),
		.pages_urgent = atomic_load(&s->st[S_URGENT]),
		.pages_zero = atomic_load(&s->st[S_ZERO]),
		.bytes_pushed = atomic_load(&s->st[S_BYTES_PUSHED]),
		.bytes_urgent = atomic_load(&s->st[S_BYTES_URGENT]),
		.requests = atomic_load(&s->st[S_REQUESTS]),
		.precopy_rounds = atomic_load(&s->rounds),
		.precopy_pages = atomic_load(&s->st[S_PRECOPY_PAGES]),
		.dirty_pages = atomic_load(&s->st[S_DIRTY]),
		.stop_ns = s->stop_ns,
		.switch_ns = s->switch_ns,
		.total_ns = s->total_ns,
		.bandwidth = atomic_load(&s->bandwidth),
	};
	pthread_mutex_unlock(&m->lock);
	return fl__stats_out(out, ret, sizeof(*ret), __func__);
}

/* ---------------------------------------------------------------- frames */

/* Page-map entries of @n pages from @va; all "present" if they cannot be read. */
static void read_pagemap(struct fl_migrate_source *s, const uint8_t *va, uint32_t n, uint64_t *pm)
{
	off_t off = (off_t)((uintptr_t)va / s->psize * 8);
	size_t want = n * sizeof(uint64_t), got = 0;

	while (s->pagemap_fd >= 0 && got < want) {
		ssize_t k = pread(s->pagemap_fd, (uint8_t *)pm + got, want - got,
				  off + (off_t)got);

		if (k <= 0)
			break;
		got += (size_t)k;
	}
	if (got < want)
		for (uint32_t i = 0; i < n; i++)
			pm[i] = PM_PRESENT;
}

/*
 * Send pages [pg, pg + n) of one region as one PAGES frame on @c. Pages never
 * touched (the page map says neither present nor swapped) and pages of zeros
 * go as ZERO without bytes. With @staged (the application still runs) each
 * page is copied before its CRC is taken, so the CRC matches the bytes sent.
 */
static int send_pages(struct fl_migrate_source *s, struct fl__mig_conn *c, struct sender *b,
		      uint64_t pg, uint32_t n, bool staged, bool urgent, uint64_t req_id,
		      int timeout_ms)
{
	unsigned int ri = fl__mig_region_of(s->reg, s->nreg, pg);
	const struct fl__mig_region *r = &s->reg[ri];
	const uint8_t *va = r->addr + (pg - r->first) * s->psize;
	struct fl__wire_frame f = {
		.type = FL__WIRE_PAGES,
		.flags = urgent ? FL__WIRE_F_URGENT : 0,
		.seq = req_id,
		.pages = { .region_id = s->wreg[ri].id, .page_shift = s->wreg[ri].page_shift,
			   .count = n, .first = pg - r->first, .pages = b->pages },
	};
	uint64_t zero = 0;
	size_t iovcnt;
	int len, e;

	read_pagemap(s, va, n, b->pm);
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *p = va + i * s->psize;

		if (!(b->pm[i] & (PM_PRESENT | PM_SWAP))) {
			b->pages[i] = (struct fl__wire_page){ .flags = FL__WIRE_PAGE_ZERO };
			zero++;
			continue;
		}
		if (staged) {
			memcpy(b->staging + i * s->psize, p, s->psize);
			p = b->staging + i * s->psize;
		}
		if (fl__wire_is_zero(p, s->psize)) {
			b->pages[i] = (struct fl__wire_page){ .flags = FL__WIRE_PAGE_ZERO };
			zero++;
		} else {
			b->pages[i] = (struct fl__wire_page){ .flags = FL__WIRE_PAGE_DATA,
							      .data = p };
		}
	}
	if (c->fd < 0)
		return -ENOTCONN;
	f.version = c->version;
	if (!urgent)
		f.seq = c->seq;
	c->seq++;
	len = fl__wire_encode_pages_iov(&f, b->meta, sizeof(b->meta), b->iov,
					sizeof(b->iov) / sizeof(b->iov[0]), &iovcnt);
	if (len < 0)
		return len;
	e = fl__conn_sendv_all(c->conn, b->iov, iovcnt, timeout_ms);
	if (e < 0)
		return e;
	atomic_fetch_add(&s->st[urgent ? S_URGENT : S_PUSHED], n);
	atomic_fetch_add(&s->st[urgent ? S_BYTES_URGENT : S_BYTES_PUSHED], (uint64_t)len);
	atomic_fetch_add(&s->st[S_ZERO], zero);
	if (staged)
		atomic_fetch_add(&s->st[S_PRECOPY_PAGES], n);
	return 0;
}

/* Bits [start, start + nbits) of @bm into @out, LSB first, whole u64 words. */
static void bm_extract(const _Atomic uint64_t *bm, uint64_t start, uint32_t nbits, uint8_t *out)
{
	uint32_t words = (nbits + 63) / 64;
	unsigned int sh = start % 64;
	uint64_t w0 = start / 64;

	for (uint32_t j = 0; j < words; j++) {
		uint64_t v = atomic_load_explicit(&bm[w0 + j], memory_order_relaxed) >> sh;

		if (sh && (w0 + j + 1) * 64 < start + nbits)
			v |= atomic_load_explicit(&bm[w0 + j + 1], memory_order_relaxed)
			     << (64 - sh);
		if (j == words - 1 && nbits % 64)
			v &= (1ull << (nbits % 64)) - 1;
		for (int k = 0; k < 8; k++)
			out[j * 8 + k] = (uint8_t)(v >> (8 * k));
	}
}

/* ---------------------------------------------------------------- urgent thread */

/* Answer one REQUEST: the pages go out now, on the urgent channel, whatever was sent before. */
static int answer(struct fl_migrate_source *s, const struct fl__wire_frame *f, char *msg,
		  size_t cap)
{
	const struct fl__wire_request *q = &f->request;
	const struct fl__mig_region *r = NULL;
	uint64_t pg;
	unsigned int ri;
	int e;

	for (ri = 0; ri < s->nreg; ri++)
		if (s->wreg[ri].id == q->region_id) {
			r = &s->reg[ri];
			break;
		}
	if (!r || q->index >= r->pages || q->count > r->pages - q->index) {
		snprintf(msg, cap, "REQUEST %llu names pages %llu..+%u of region %u, which do "
			 "not exist", (unsigned long long)f->seq, (unsigned long long)q->index,
			 q->count, q->region_id);
		return -EPROTO;
	}
	if (!atomic_load(&s->stopped)) {
		snprintf(msg, cap, "REQUEST %llu before the switch-over",
			 (unsigned long long)f->seq);
		return -EPROTO;
	}
	if (s->hooks && s->hooks->hold_urgent_efd > 0) {
		struct pollfd p = { .fd = s->hooks->hold_urgent_efd, .events = POLLIN };

		poll(&p, 1, -1);
	}
	pg = r->first + q->index;
	e = send_pages(s, &s->urg, &s->ug, pg, q->count, false, true, f->seq,
		       s->link.timeout_ms);
	if (e < 0) {
		snprintf(msg, cap, "answering REQUEST %llu: %s", (unsigned long long)f->seq,
			 strerror(-e));
		return e;
	}
	for (uint32_t i = 0; i < q->count; i++)
		mark_sent(s, pg + i);
	atomic_fetch_add(&s->st[S_REQUESTS], 1);
	/* Locality: the background goes on right after the page a thread waited for. */
	atomic_store(&s->hint, pg + q->count < s->total ? pg + q->count : 0);
	return 0;
}

/* Serve the urgent channel until it fails: the error (0 never). */
static int serve_urgent(struct fl_migrate_source *s, char *msg, size_t cap)
{
	for (;;) {
		const struct fl__wire_frame *f;
		int r = fl__wire_reader_next(&s->urg.rd, -1, &f);

		if (r == 0) {
			snprintf(msg, cap, "the destination closed the urgent channel");
			return -ECONNRESET;
		}
		if (r < 0) {
			const char *why = fl__wire_reader_error(&s->urg.rd);

			snprintf(msg, cap, "urgent channel: %s", *why ? why : strerror(-r));
			if (r == -EPROTO || r == -EBADMSG || r == -EPROTONOSUPPORT)
				fl__mig_send_error(&s->urg, fl__wire_error_code_from_errno(r), msg);
			return r;
		}
		switch (f->type) {
		case FL__WIRE_REQUEST:
			r = answer(s, f, msg, cap);
			if (r == -EPROTO)
				fl__mig_send_error(&s->urg, FL__WIRE_ERR_PROTO, msg);
			if (r < 0)
				return r;
			break;
		case FL__WIRE_PING: {
			struct fl__wire_frame pong = { .type = FL__WIRE_PONG, .seq = f->seq };

			r = fl__mig_send(&s->urg, &pong, s->link.timeout_ms);
			if (r < 0)
				return r;
			break;
		}
		case FL__WIRE_PONG:
			break;
		case FL__WIRE_ERROR:
			snprintf(msg, cap, "the destination reported: %s", f->error.msg);
			return -fl__wire_error_code_to_errno(f->error.code);
		default:
			r = fl__mig_unexpected(f, "on the urgent channel", msg, cap);
			fl__mig_send_error(&s->urg, FL__WIRE_ERR_PROTO, msg);
			return r;
		}
	}
}

static void *urgent_main(void *arg)
{
	struct fl_migrate_source *s = arg;
	char msg[MIG_ERR_LEN];

	fl__mig_name_thread("fl-mig-src/urg");
	fl__mig_urgent_thread();
	pthread_mutex_lock(&s->lock);
	for (;;) {
		int epoch, r;

		while (!s->quit && (s->broken || s->urg.fd < 0)) {
			s->urg_parked = true;
			pthread_cond_broadcast(&s->cond);
			pthread_cond_wait(&s->cond, &s->lock);
		}
		if (s->quit)
			break;
		s->urg_parked = false;
		epoch = s->epoch;
		pthread_mutex_unlock(&s->lock);

		msg[0] = 0;
		r = serve_urgent(s, msg, sizeof(msg));

		pthread_mutex_lock(&s->lock);
		if (s->quit)
			break;
		if (epoch != s->epoch || s->broken)
			continue;	/* the run thread replaced the connections meanwhile */
		if (s->complete_sent && fl__mig_err_transient(r)) {
			/*
			 * Everything is sent: a destination that is done may close
			 * the urgent channel before we read its COMPLETE. Only the
			 * main connection decides now.
			 */
			s->urg_parked = true;
			pthread_cond_broadcast(&s->cond);
			while (!s->quit && epoch == s->epoch)
				pthread_cond_wait(&s->cond, &s->lock);
			if (s->quit)
				break;
			continue;
		}
		if (!fl__mig_err_transient(r) && !s->fatal) {
			s->fatal = r;
			snprintf(s->err, sizeof(s->err), "%s", msg);
		}
		fl__debug("migrate: source: urgent channel: %s", msg);
		/* Tell the run thread: its next send or receive fails. */
		s->broken = true;
		if (s->main.fd >= 0)
			shutdown(s->main.fd, SHUT_RDWR);
	}
	s->urg_parked = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---------------------------------------------------------------- session */

/* The destination's RECEIVED_BITMAP: exactly the pages it holds count as sent. */
static int read_received(struct fl_migrate_source *s, struct fl__mig_conn *c, char *msg,
			 size_t cap)
{
	for (uint64_t w = 0; w <= s->total / 64; w++)
		atomic_store_explicit(&s->sent[w], 0, memory_order_relaxed);
	atomic_store(&s->n_sent, 0);
	for (;;) {
		const struct fl__wire_frame *f;
		const struct fl__wire_bitmap *b;
		const struct fl__mig_region *r = NULL;
		int e = fl__wire_reader_next(&c->rd, s->link.timeout_ms, &f);

		if (e <= 0) {
			const char *why = fl__wire_reader_error(&c->rd);

			snprintf(msg, cap, "reading the destination's bitmap: %s",
				 e == 0 ? "the connection closed" : *why ? why : strerror(-e));
			return e == 0 ? -ECONNRESET : e;
		}
		if (f->type == FL__WIRE_ERROR) {
			snprintf(msg, cap, "the destination refused: %s", f->error.msg);
			return -fl__wire_error_code_to_errno(f->error.code);
		}
		if (f->type != FL__WIRE_RECEIVED_BITMAP)
			return fl__mig_unexpected(f, "instead of the received bitmap", msg, cap);
		b = &f->bitmap;
		for (unsigned int i = 0; i < s->nreg; i++)
			if (s->wreg[i].id == b->region_id)
				r = &s->reg[i];
		if (!r || b->offset >= r->pages || b->nbits > r->pages - b->offset) {
			snprintf(msg, cap, "RECEIVED_BITMAP for region %u bits %llu..+%u: no such "
				 "pages", b->region_id, (unsigned long long)b->offset, b->nbits);
			return -EPROTO;
		}
		for (uint32_t i = 0; i < b->nbits; i++) {
			uint64_t pg = r->first + b->offset + i;

			if (!((b->bits[i / 8] >> (i % 8)) & 1))
				continue;
			/* A page written after its last copy was sent is stale there. */
			if (s->final_dirty && atomic_load(&s->stopped) &&
			    fl__bit_test(s->final_dirty, pg))
				continue;
			mark_sent(s, pg);
		}
		if (f->flags & FL__WIRE_F_LAST)
			return 0;
	}
}

/* One try at a session: the main connection, the destination's bitmap, the urgent channel. */
static int establish(struct fl_migrate_source *s, int timeout_ms, char *msg, size_t cap)
{
	uint32_t flags = s->established || s->peer_resumes ? FL__WIRE_HELLO_RESUME : 0;
	uint8_t vmin = s->hooks ? s->hooks->version_min : 0;
	uint8_t vmax = s->hooks ? s->hooks->version_max : 0;
	struct fl__mig_conn c[2];
	struct fl__mig_peer peer = { 0 };
	struct fl__wire_hello h;
	uint64_t feat = 0;
	int r = 0;

	fl__mig_conn_reset(&c[0]);
	fl__mig_conn_reset(&c[1]);
	for (int i = 0; i < 2 && !r; i++) {
		r = fl__mig_hello_init(&h, FL__WIRE_ROLE_SOURCE, &s->link,
				       flags | (i ? FL__WIRE_HELLO_URGENT : 0), s->session, vmin,
				       vmax);
		if (r < 0)
			break;
		h.regions = s->wreg;
		h.n_regions = s->nreg;
		r = fl__mig_link_handshake(&s->link, "source", i == 1, timeout_ms, &h, &c[i], &peer,
					   &feat, msg, cap);
		if (r == -EAGAIN && !i && (peer.hello.flags & FL__WIRE_HELLO_RESUME) &&
		    !memcmp(peer.hello.session_id, s->session, sizeof(s->session)))
			s->peer_resumes = true;	/* it holds pages of ours: resume next time */
		if (r < 0)
			break;
		if (!i) {
			if ((s->precopy || s->o.precopy_rounds) &&
			    !(feat & FL__WIRE_FEAT_PRECOPY)) {
				snprintf(msg, cap, "the destination cannot take pre-copy rounds");
				fl__mig_send_error(&c[0], FL__WIRE_ERR_PROTO, msg);
				r = -EPROTO;
				break;
			}
			s->features = feat;
			r = read_received(s, &c[0], msg, cap);
		}
	}
	fl__mig_peer_fini(&peer);
	if (r < 0) {
		fl__mig_conn_close(&c[0]);
		fl__mig_conn_close(&c[1]);
		return r;
	}
	pthread_mutex_lock(&s->lock);
	s->main = c[0];
	s->urg = c[1];
	pthread_mutex_unlock(&s->lock);
	s->established = true;
	return 0;
}

static int send_blob(struct fl_migrate_source *s)
{
	size_t off = 0;

	do {
		size_t n = s->blob_len - off < FL__WIRE_MAX_BLOB_CHUNK ? s->blob_len - off :
									 FL__WIRE_MAX_BLOB_CHUNK;
		struct fl__wire_frame f = {
			.type = FL__WIRE_STATE_BLOB,
			.blob = { .total = (uint32_t)s->blob_len, .offset = (uint32_t)off,
				  .len = (uint32_t)n,
				  .data = n ? (const uint8_t *)s->blob + off : NULL },
		};
		int r = fl__mig_send(&s->main, &f, s->link.timeout_ms);

		if (r < 0)
			return r;
		off += n;
	} while (off < s->blob_len);
	return 0;
}

/*
 * Pre-copy's switch-over: the pages whose copy at the destination is still
 * current, as a RECEIVED_BITMAP from the source. The destination drops every
 * pre-copied page whose bit is clear before it lets the application resume.
 */
static int send_valid(struct fl_migrate_source *s)
{
	uint8_t *bits = malloc(MIG_BITMAP_CHUNK / 8);
	int r = 0;

	if (!bits)
		return -ENOMEM;
	for (unsigned int i = 0; i < s->nreg && !r; i++) {
		const struct fl__mig_region *g = &s->reg[i];

		for (uint64_t off = 0; off < g->pages && !r; off += MIG_BITMAP_CHUNK) {
			uint32_t n = g->pages - off < MIG_BITMAP_CHUNK ? (uint32_t)(g->pages - off)
								       : MIG_BITMAP_CHUNK;
			struct fl__wire_frame f = {
				.type = FL__WIRE_RECEIVED_BITMAP,
				.flags = i == s->nreg - 1 && off + n == g->pages ? FL__WIRE_F_LAST
										 : 0,
				.bitmap = { .region_id = s->wreg[i].id, .nbits = n, .offset = off,
					    .bits = bits },
			};

			bm_extract(s->sent, g->first + off, n, bits);
			r = fl__mig_send(&s->main, &f, s->link.timeout_ms);
		}
	}
	free(bits);
	return r;
}

/*
 * A connection broke: park the urgent thread, reconnect with back-off (or
 * wait for the destination to), learn what the destination holds, and put
 * the destination back where it was at the switch-over if we were past it.
 */
static int recover(struct fl_migrate_source *s, int why)
{
	int delay = 10, r;
	uint64_t deadline = s->link.resume_timeout_ms < 0 ? UINT64_MAX :
			    fl__now_ns() + (uint64_t)s->link.resume_timeout_ms * 1000000ull;
	char msg[MIG_ERR_LEN] = "";
	enum fl_migrate_phase before = atomic_load(&s->phase);

	fl__info("migrate: source: connection lost (%s); resuming", strerror(-why));
	set_phase(s, FL_MIGRATE_PAUSED);
	pthread_mutex_lock(&s->lock);
	s->broken = true;
	s->complete_sent = false;
	if (s->urg.fd >= 0)
		shutdown(s->urg.fd, SHUT_RDWR);
	while (s->urg_started && !s->urg_parked)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	fl__mig_conn_close(&s->main);
	fl__mig_conn_close(&s->urg);

	for (;;) {
		uint64_t now = fl__now_ns();
		int left = s->link.timeout_ms;

		if (fl__mig_link_stopping(&s->link))
			return -ECANCELED;
		if (deadline != UINT64_MAX && (deadline - now) / 1000000 < (uint64_t)left)
			left = now < deadline ? (int)((deadline - now) / 1000000) + 1 : 1;
		r = establish(s, left, msg, sizeof(msg));
		if (!r)
			break;
		if (r != -EAGAIN && !fl__mig_err_transient(r))
			return give_up(s, r, "resuming: %s", msg);
		/*
		 * The end: not -ETIMEDOUT, which would be taken for one more
		 * broken connection and resumed again, forever.
		 */
		if (fl__now_ns() >= deadline)
			return give_up(s, -ENOLINK, "the destination did not come back within %d "
				       "ms of the connection's loss (the last attempt: %s)",
				       s->link.resume_timeout_ms, msg);
		if (r != -EAGAIN && fl__mig_link_pause(&s->link, delay) < 0)
			return -ECANCELED;
		delay = delay * 2 > 1000 ? 1000 : delay * 2;
	}
	/* Past the stop, the destination may not have seen the switch-over: repeat it. */
	r = 0;
	if (atomic_load(&s->stopped) && s->precopy)
		r = send_valid(s);
	if (!r && s->blob_done)
		r = send_blob(s);
	atomic_fetch_add(&s->resumes, 1);
	pthread_mutex_lock(&s->lock);
	s->broken = false;
	s->epoch++;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	set_phase(s, before);
	return r;
}

/* The error a step failed with, or the one another thread found first. */
static int step_error(struct fl_migrate_source *s, int r)
{
	int fatal;

	pthread_mutex_lock(&s->lock);
	fatal = s->fatal;
	pthread_mutex_unlock(&s->lock);
	return fatal ? fatal : r;
}

typedef int (*step_fn)(struct fl_migrate_source *s);

/* Run @fn until it succeeds, resuming the session after each broken connection. */
static int with_recovery(struct fl_migrate_source *s, step_fn fn)
{
	for (;;) {
		int r = fn(s);

		if (!r)
			return 0;
		r = step_error(s, r);
		if (!fl__mig_err_transient(r))
			return r;
		r = recover(s, r);
		if (r < 0 && (!fl__mig_err_transient(r) || step_error(s, 0)))
			return step_error(s, r);
	}
}

/* ---------------------------------------------------------------- background */

/* Wait for the rate limit (in slices, so a new limit applies at once). */
static int rate_wait(struct fl_migrate_source *s, uint64_t bytes)
{
	for (;;) {
		uint64_t lim = atomic_load(&s->limit), now = fl__now_ns();

		if (!lim) {
			s->rl_next = 0;
			return 0;
		}
		if (s->rl_next <= now) {
			s->rl_next = (s->rl_next && now - s->rl_next < 100000000ull ? s->rl_next :
				      now) + bytes * 1000000000ull / lim;
			return 0;
		}
		if (fl__mig_link_pause(&s->link, (int)((s->rl_next - now) / 1000000 + 1) > 10 ?
						 10 : (int)((s->rl_next - now) / 1000000 + 1)) < 0)
			return -ECANCELED;
	}
}

/* Pages per background frame: 2 MiB at full speed, about 4 ms of the limit when limited. */
static uint32_t batch_pages(struct fl_migrate_source *s)
{
	uint64_t lim = atomic_load(&s->limit), n;

	if (!lim)
		return MIG_BATCH;
	n = lim / 256 / s->psize;
	if (n <= 16)
		return 16;
	if (n >= MIG_BATCH)
		return MIG_BATCH;
	return 1u << (63 - __builtin_clzll(n));	/* a power of two: aligned runs */
}

/* What the destination said on the main connection while we push, if anything. */
static int check_main(struct fl_migrate_source *s)
{
	const struct fl__wire_frame *f;
	char msg[MIG_ERR_LEN];
	int r = fl__wire_reader_next(&s->main.rd, 0, &f);

	if (r == -EAGAIN)
		return 0;
	if (r == 0)
		return -ECONNRESET;
	if (r < 0)
		return r;
	if (f->type == FL__WIRE_ERROR) {
		r = -fl__wire_error_code_to_errno(f->error.code);
		return fl__mig_err_transient(r) ? r : fail(s, r, "the destination reported: %s",
							    f->error.msg);
	}
	fl__mig_unexpected(f, "from the destination on the main connection", msg, sizeof(msg));
	fl__mig_send_error(&s->main, FL__WIRE_ERR_PROTO, msg);
	return fail(s, -EPROTO, "%s", msg);
}

/* One pass: send every page not yet sent, from the cursor on, wrapping around. */
static int push(struct fl_migrate_source *s, bool staged)
{
	for (;;) {
		uint64_t h = atomic_exchange(&s->hint, NO_HINT), pg, end;
		const struct fl__mig_region *r;
		uint32_t n = 0, batch = batch_pages(s);
		int e;

		if (s->broken)
			return -ECONNRESET;
		if (h != NO_HINT)
			s->cursor = h;
		pg = fl__bm_next_clear(s->sent, s->cursor, s->total);
		if (pg == s->total)
			pg = fl__bm_next_clear(s->sent, 0, s->total);
		if (pg == s->total)
			return 0;
		r = &s->reg[fl__mig_region_of(s->reg, s->nreg, pg)];
		/*
		 * Runs end at multiples of the batch within the region: after a jump
		 * to a requested page, one short run, then whole aligned ones.
		 */
		end = r->first + ((pg - r->first) / batch + 1) * batch;
		if (end > r->first + r->pages)
			end = r->first + r->pages;
		/* Claim the run; a page the urgent thread sent meanwhile ends it. */
		while (pg + n < end && !fl__bm_set(s->sent, pg + n)) {
			atomic_fetch_add(&s->n_sent, 1);
			n++;
		}
		if (!n)
			continue;
		e = rate_wait(s, (uint64_t)n * s->psize);
		if (!e)
			e = send_pages(s, &s->main, &s->bg, pg, n, staged, false, 0,
				       s->link.timeout_ms);
		if (!e)
			e = check_main(s);
		if (e < 0)
			return e;
		s->cursor = pg + n;
		progress(s);
	}
}

static int push_staged(struct fl_migrate_source *s)
{
	return push(s, true);
}

static int push_direct(struct fl_migrate_source *s)
{
	return push(s, false);
}

/* Tests: every page once more through the background, whatever was sent (dropped as present). */
static int push_everything(struct fl_migrate_source *s)
{
	for (uint64_t pg = 0; pg < s->total;) {
		const struct fl__mig_region *r = &s->reg[fl__mig_region_of(s->reg, s->nreg, pg)];
		uint64_t n = r->first + r->pages - pg < MIG_BATCH ? r->first + r->pages - pg
								  : MIG_BATCH;
		int e = rate_wait(s, n * s->psize);

		if (!e)
			e = send_pages(s, &s->main, &s->bg, pg, (uint32_t)n, false, false, 0,
				       s->link.timeout_ms);
		if (e < 0)
			return e;
		pg += n;
	}
	return 0;
}

/* Wait for the destination's COMPLETE after ours. */
static int finish(struct fl_migrate_source *s)
{
	struct fl__wire_frame c = { .type = FL__WIRE_COMPLETE,
				    .complete.pages = atomic_load(&s->n_sent) };
	int r = push_direct(s);

	if (r < 0)
		return r;
	r = fl__mig_send(&s->main, &c, s->link.timeout_ms);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	s->complete_sent = true;
	pthread_mutex_unlock(&s->lock);
	for (uint64_t t0 = fl__now_ns();;) {
		const struct fl__wire_frame *f;

		r = fl__wire_reader_next(&s->main.rd, s->link.timeout_ms, &f);
		if (r == 0)
			return -ECONNRESET;
		/* The destination may still be installing pages; not forever. */
		if (r == -ETIMEDOUT && atomic_load(&s->n_sent) == s->total &&
		    (s->link.resume_timeout_ms < 0 ||
		     fl__now_ns() - t0 < (uint64_t)s->link.resume_timeout_ms * 1000000ull))
			continue;
		if (r == -ETIMEDOUT)
			return fail(s, -ETIMEDOUT, "the destination did not confirm it holds every "
				    "page");
		if (r < 0)
			return r;
		if (f->type == FL__WIRE_COMPLETE)
			return 0;
		if (f->type == FL__WIRE_ERROR) {
			r = -fl__wire_error_code_to_errno(f->error.code);
			return fl__mig_err_transient(r) ? r :
			       fail(s, r, "the destination reported: %s", f->error.msg);
		}
		return fail(s, -EPROTO, "unexpected frame type %u from the destination after "
			    "COMPLETE", f->type);
	}
}

/* ---------------------------------------------------------------- pre-copy */

/* Pages written since the last scan (write-protecting them again); their sent bits clear. */
static int scan_dirty(struct fl_migrate_source *s, uint64_t *ret_pages, bool final)
{
	struct fl_range runs[SCAN_RUNS];
	uint64_t pages = 0;

	for (unsigned int i = 0; i < s->nreg; i++) {
		const struct fl__mig_region *g = &s->reg[i];
		uint8_t *at = g->addr, *end = g->addr + g->len;

		while (at < end) {
			void *next;
			int n = fl_pagemap_scan_written(s->pagemap_fd, at, (size_t)(end - at),
							FL_SCAN_REPROTECT, runs, SCAN_RUNS, &next);

			if (n < 0)
				return fail(s, n, "PAGEMAP_SCAN of the source's region %u: %s", i,
					    strerror(-n));
			for (int k = 0; k < n; k++) {
				uint8_t *rs = runs[k].start, *re = runs[k].end;
				uint64_t a = (uint64_t)(rs - g->addr) / s->psize;
				uint64_t b = (uint64_t)(re - g->addr) / s->psize;

				for (uint64_t p = g->first + a; p < g->first + b; p++) {
					mark_unsent(s, p);
					if (final)
						fl__bit_set(s->final_dirty, p);
				}
				pages += b - a;
			}
			if ((uint8_t *)next <= at)
				break;
			at = next;
		}
	}
	atomic_fetch_add(&s->st[S_DIRTY], pages);
	*ret_pages = pages;
	return 0;
}

/* Write tracking over every region: WP_ASYNC protection, so writes only set a bit. */
static int track_writes(struct fl_migrate_source *s)
{
	struct fl_uffd_opts uo = {
		.sz = sizeof(uo),
		.features = FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN,
	};
	int r;

	if (s->pagemap_fd < 0)
		return fail(s, -EOPNOTSUPP, "pre-copy: /proc/self/pagemap cannot be opened");
	r = fl_uffd_open(&uo, &s->wp);
	if (r < 0)
		return fail(s, r, "pre-copy: a userfaultfd with WP_ASYNC: %s", strerror(-r));
	for (unsigned int i = 0; i < s->nreg; i++) {
		r = fl_uffd_register(s->wp, s->reg[i].addr, s->reg[i].len, FL_REGISTER_WP, NULL);
		if (!r)
			r = fl_uffd_writeprotect(s->wp, s->reg[i].addr, s->reg[i].len,
						 FL_RESOLVE_WP);
		if (r < 0)
			return fail(s, r, "pre-copy: write-protecting region %u (%p): %s%s", i,
				    s->reg[i].addr, strerror(-r), r == -EBUSY ? " (the range is "
				    "registered with another userfaultfd)" : "");
	}
	return 0;
}

static void untrack_writes(struct fl_migrate_source *s)
{
	if (!s->wp)
		return;
	for (unsigned int i = 0; i < s->nreg; i++)
		fl_uffd_unregister(s->wp, s->reg[i].addr, s->reg[i].len);
	fl_uffd_close(s->wp);
	s->wp = NULL;
}

static int precopy(struct fl_migrate_source *s)
{
	uint64_t last_scan = fl__now_ns();
	int r;

	r = track_writes(s);
	if (r < 0)
		return r;
	s->precopy = true;
	set_phase(s, FL_MIGRATE_PRECOPY);
	for (;;) {
		uint64_t t0 = fl__now_ns(), b0 = atomic_load(&s->st[S_BYTES_PUSHED]);
		uint64_t dirty, now, bw, rate;

		r = with_recovery(s, push_staged);
		if (r < 0)
			return r;
		now = fl__now_ns();
		bw = (atomic_load(&s->st[S_BYTES_PUSHED]) - b0) * 1000000000ull /
		     (now - t0 ? now - t0 : 1);
		atomic_store(&s->bandwidth, bw);
		if (atomic_fetch_add(&s->rounds, 1) + 1 >= s->o.precopy_rounds)
			return 0;
		r = scan_dirty(s, &dirty, false);
		if (r < 0)
			return r;
		rate = dirty * s->psize * 1000000000ull / (now - last_scan ? now - last_scan : 1);
		last_scan = now;
		fl__debug("migrate: pre-copy round %u: %llu bytes/s sent, %llu bytes/s dirtied",
			  atomic_load(&s->rounds), (unsigned long long)bw,
			  (unsigned long long)rate);
		/*
		 * Once the application dirties memory more slowly than the link drains
		 * it, what stays dirty is a small hot set: another round would chase
		 * it, post-copy fetches each page of it once.
		 */
		if (!dirty || rate < bw)
			return 0;
	}
}

/* ---------------------------------------------------------------- run */

/*
 * Just before the stop: one PING on the main connection, and its PONG from
 * the destination's receiver. Whatever the destination still had to do
 * (start its threads, work through pre-copy frames still in flight) is then
 * done, and the downtime holds only the stop, the state and one trip,
 * whatever the size of the regions.
 */
static int await_ready(struct fl_migrate_source *s)
{
	struct fl__wire_frame ping = { .type = FL__WIRE_PING };
	const struct fl__wire_frame *f;
	int r = fl__mig_send(&s->main, &ping, s->link.timeout_ms);

	if (r < 0)
		return r;
	r = fl__wire_reader_next(&s->main.rd, s->link.timeout_ms, &f);
	if (r == 0)
		return -ECONNRESET;
	if (r < 0)
		return r;
	if (f->type == FL__WIRE_PONG)
		return 0;
	if (f->type == FL__WIRE_ERROR) {
		r = -fl__wire_error_code_to_errno(f->error.code);
		return fl__mig_err_transient(r) ? r : fail(s, r, "the destination reported: %s",
							    f->error.msg);
	}
	return fail(s, -EPROTO, "unexpected frame type %u from the destination instead of PONG",
		    f->type);
}

static int stop_app(struct fl_migrate_source *s)
{
	uint64_t dirty;
	int r;

	s->blob = s->o.blob;
	s->blob_len = s->o.blob_len;
	if (s->o.stop) {
		const void *blob = NULL;
		size_t len = 0;

		r = s->o.stop(s->o.userdata, &blob, &len);
		if (r < 0 || len > FL__WIRE_MAX_BLOB || (len && !blob)) {
			char msg[128];

			snprintf(msg, sizeof(msg), "the source application %s",
				 r < 0 ? "cancelled the migration" : "returned a blob over 16 MiB");
			fl__mig_send_error(&s->main, FL__WIRE_ERR_CANCELLED, msg);
			return fail(s, r < 0 ? -ECANCELED : -EINVAL, "%s", msg);
		}
		s->blob = blob;
		s->blob_len = len;
	}
	pthread_mutex_lock(&s->lock);
	s->stop_ns = fl__now_ns();
	pthread_mutex_unlock(&s->lock);
	atomic_store(&s->stopped, true);
	set_phase(s, FL_MIGRATE_SWITCHOVER);
	if (s->precopy) {
		r = scan_dirty(s, &dirty, true);
		if (r < 0)
			return r;
		untrack_writes(s);
	}
	return 0;
}

static int do_send_valid(struct fl_migrate_source *s)
{
	return s->precopy ? send_valid(s) : 0;
}

static int do_send_blob(struct fl_migrate_source *s)
{
	int r = send_blob(s);

	if (!r)
		s->blob_done = true;
	return r;
}

static int do_push_all(struct fl_migrate_source *s)
{
	return push_everything(s);
}

static int start_urgent(struct fl_migrate_source *s)
{
	int r = pthread_create(&s->urg_thread, NULL, urgent_main, s);

	if (r)
		return -r;
	s->urg_started = true;
	return 0;
}

static void stop_urgent(struct fl_migrate_source *s)
{
	if (!s->urg_started)
		return;
	pthread_mutex_lock(&s->lock);
	s->quit = true;
	if (s->urg.fd >= 0)
		shutdown(s->urg.fd, SHUT_RDWR);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->urg_thread, NULL);
	s->urg_started = false;
}

static int run(struct fl_migrate_source *s)
{
	char msg[MIG_ERR_LEN] = "";
	uint64_t deadline = fl__now_ns() + (uint64_t)s->link.timeout_ms * 1000000ull;
	int delay = 10, r;

	set_phase(s, FL_MIGRATE_CONNECTING);
	/* The first session: a listening destination may not be up yet; retry until timeout_ms. */
	for (;;) {
		int left = (int)((deadline - fl__now_ns()) / 1000000);

		r = establish(s, left > 0 ? left : 1, msg, sizeof(msg));
		if (!r)
			break;
		if (r != -EAGAIN && !fl__mig_err_transient(r))
			return fail(s, r, "%s", msg);
		if (fl__now_ns() >= deadline)
			return fail(s, r, "no destination within %d ms: %s", s->link.timeout_ms, msg);
		if (r != -EAGAIN && fl__mig_link_pause(&s->link, delay) < 0)
			return -ECANCELED;
		delay = delay * 2 > 500 ? 500 : delay * 2;
	}
	r = start_urgent(s);
	if (r < 0)
		return fail(s, r, "cannot start the urgent thread: %s", strerror(-r));

	if (s->o.precopy_rounds) {
		r = precopy(s);
		if (r < 0)
			return r;
	}
	r = with_recovery(s, await_ready);
	if (r < 0)
		return r;
	r = stop_app(s);
	if (r < 0)
		return r;
	r = with_recovery(s, do_send_valid);
	if (!r && (s->o.flags & FL_MIGRATE_STOP_AND_COPY))
		r = with_recovery(s, push_direct);
	if (!r)
		r = with_recovery(s, do_send_blob);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	s->switch_ns = fl__now_ns() - s->stop_ns;
	pthread_mutex_unlock(&s->lock);
	/* On a shared host the destination's resume may be waiting for this CPU. */
	sched_yield();
	set_phase(s, FL_MIGRATE_POSTCOPY);
	if (s->hooks && s->hooks->push_all) {
		r = with_recovery(s, do_push_all);
		if (r < 0)
			return r;
	}
	{
		uint64_t t0 = fl__now_ns(), b0 = atomic_load(&s->st[S_BYTES_PUSHED]);

		r = with_recovery(s, finish);
		if (r < 0)
			return r;
		atomic_store(&s->bandwidth, (atomic_load(&s->st[S_BYTES_PUSHED]) - b0) *
						    1000000000ull / (fl__now_ns() - t0 + 1));
	}
	return 0;
}

struct run_arg {
	struct fl_migrate_source *s;
	int r;
};

/*
 * The migration runs on a thread of its own, named fl-mig-src/push so that
 * it can be told apart from the urgent thread in top and perf; the caller
 * waits for it.
 */
static void *run_main(void *arg)
{
	struct run_arg *a = arg;

	fl__mig_name_thread("fl-mig-src/push");
	a->r = run(a->s);
	return NULL;
}

FL_API int fl_migrate_source_run(struct fl_migrate_source *s)
{
	struct run_arg a;
	pthread_t t;
	int r;

	if (!s)
		return fl__einval(__func__, "s is NULL");
	if (s->pid != getpid())
		return -ECHILD;
	if (s->ran)
		return -EALREADY;
	s->ran = true;
	s->t_start = fl__now_ns();
	a = (struct run_arg){ .s = s };
	r = pthread_create(&t, NULL, run_main, &a);
	if (r)
		return fail(s, -r, "cannot start the migration thread");
	pthread_join(t, NULL);
	r = a.r;
	stop_urgent(s);
	untrack_writes(s);
	if (r < 0) {
		r = step_error(s, r);
		if (!s->err[0])
			fail(s, r, "%s", strerror(-r));
		if (r != -ECANCELED && r != -EACCES && r != -EPROTONOSUPPORT)
			fl__mig_send_error(&s->main, fl__wire_error_code_from_errno(r), s->err);
		fl__err("migrate: source: %s", s->err);
	}
	fl__mig_conn_close(&s->main);
	fl__mig_conn_close(&s->urg);
	pthread_mutex_lock(&s->lock);
	s->total_ns = fl__now_ns() - s->t_start;
	pthread_mutex_unlock(&s->lock);
	set_phase(s, r < 0 ? FL_MIGRATE_FAILED : FL_MIGRATE_DONE);
	return r;
}

FL_API void fl_migrate_source_destroy(struct fl_migrate_source *s)
{
	if (!s)
		return;
	if (s->link.stop_efd >= 0) {
		uint64_t one = 1;

		if (write(s->link.stop_efd, &one, sizeof(one)) < 0)
			(void)0;	/* only fails when the counter is full: already set */
	}
	stop_urgent(s);
	untrack_writes(s);
	fl__mig_conn_close(&s->main);
	fl__mig_conn_close(&s->urg);
	fl__mig_link_fini(&s->link);
	s->pagemap_fd = fl__safe_close(s->pagemap_fd);
	if (s->bg.staging)
		munmap(s->bg.staging, FL__WIRE_MAX_DATA);
	free(s->sent);
	free(s->final_dirty);
	free(s->reg);
	free(s->wreg);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}
