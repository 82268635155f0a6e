/* SPDX-License-Identifier: MIT */
/*
 * Working sets: record the order in which a region's pages are first
 * touched, save it (and the pages' data, as a loading set), and replay it
 * into a later region from a thread of its own, in bounded batches,
 * through fl__region_supply(): only pages still absent, never over a page
 * a fault, the program or a discard got to first.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "pager-int.h"
#include "wsfile.h"
#include "store/store-internal.h"
#include "net/crc32c.h"
#include "net/le.h"

#define WS_DEFAULT_BATCH (2u << 20)
/*
 * The replay asks the store to start reading the pages of the order up to
 * this far ahead of the batch it installs (at least one batch): scattered
 * pages of a cold file are then read many at once, by the device's queue,
 * rather than one read at a time as each is installed.
 */
#define WS_AHEAD (16u << 20)

struct pg_ws {
	/* Recording: one byte per page (touched yet?) and the order, page + 1 (0: being written). */
	_Atomic uint8_t *seen;
	_Atomic uint64_t *rec;
	_Atomic size_t nrec;
	/* Replay. */
	uint64_t *order;
	size_t count;
	size_t batch;			/* pages */
	int ls_fd;			/* loading set, or -1 */
	uint64_t ls_data_off;
	uint32_t *ls_crc;
	uint32_t zero_crc;		/* the CRC32C of a page of zeros */
	pthread_t thread;
	bool started;
	uint64_t t0;
	_Atomic uint64_t done_ns;
};

void fl__ws_note(struct fl_region *r, size_t pg)
{
	struct pg_ws *w = r->ws;
	size_t i;

	if (!w || !w->rec || pg >= r->npages)
		return;
	if (atomic_exchange_explicit(&w->seen[pg], 1, memory_order_relaxed))
		return;
	i = atomic_fetch_add_explicit(&w->nrec, 1, memory_order_relaxed);
	atomic_store_explicit(&w->rec[i], (uint64_t)pg + 1, memory_order_release);
}

void fl__ws_stats(const struct fl_region *r, uint64_t *recorded, uint64_t *done_ns)
{
	struct pg_ws *w = r->ws;

	*recorded = w && w->rec ? atomic_load(&w->nrec) : 0;
	*done_ns = w ? atomic_load(&w->done_ns) : 0;
}

/* ----------------------------------------------------------------- files */

/* The whole of @path, at most @max bytes (more is -EFBIG). */
static int slurp(const char *path, size_t max, uint8_t **ret, size_t *ret_len)
{
	struct stat st;
	uint8_t *b;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), e = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		e = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		e = S_ISREG(st.st_mode) ? -EFBIG : -EINVAL;
		goto out;
	}
	b = malloc((size_t)st.st_size ? (size_t)st.st_size : 1);
	if (!b) {
		e = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			e = n < 0 ? -errno : -EIO;
			free(b);
			goto out;
		}
		got += (size_t)n;
	}
	*ret = b;
	*ret_len = got;
out:
	close(fd);
	return e;
}

/* A temporary file next to @path: *@tmp gets its name (PATH_MAX bytes). */
static int open_tmp(const char *path, char *tmp)
{
	int fd;

	if (snprintf(tmp, PATH_MAX, "%s.XXXXXX", path) >= PATH_MAX)
		return -ENAMETOOLONG;
	fd = mkostemp(tmp, O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int commit_tmp(int fd, const char *tmp, const char *path, int e)
{
	if (!e && fsync(fd) < 0)
		e = -errno;
	if (close(fd) < 0 && !e)
		e = -errno;
	if (!e && rename(tmp, path) < 0)
		e = -errno;
	if (e)
		unlink(tmp);
	return e;
}

/* The loading set: the data of @order's pages, from the store, in that order. */
static int save_loading_set(struct fl_region *r, const uint8_t *entries, size_t n,
			    const uint8_t id[16], const char *path)
{
	uint64_t data_off = fl__ls_data_off(n), holes[1];
	char tmp[PATH_MAX];
	uint8_t *head = calloc(1, data_off), *page = malloc(r->ps);
	int fd = -1, e = 0;

	if (!head || !page) {
		e = -ENOMEM;
		goto out;
	}
	fd = open_tmp(path, tmp);
	if (fd < 0) {
		e = fd;
		goto out;
	}
	for (size_t i = 0; i < n && !e; i++) {
		uint64_t pg = fl__le64(entries + i * 8);

		e = fl_store_read(r->store, r->store_off + (pg << r->shift), page, r->ps, r->ps,
				  holes);
		if (e < 0)
			break;
		if (holes[0] & 1)
			memset(page, 0, r->ps);
		fl__put_le32(head + FL__WS_HEADER + i * 4, fl__crc32c(0, page, r->ps));
		e = fl__pwrite_full(fd, page, r->ps, data_off + i * r->ps);
	}
	if (!e) {
		fl__ls_encode(head, r->ps, n, id, data_off);
		e = fl__pwrite_full(fd, head, data_off, 0);
	}
	e = commit_tmp(fd, tmp, path, e);
out:
	free(head);
	free(page);
	return e;
}

FL_API int fl_region_ws_save(struct fl_region *r, const char *path, const char *loading_set)
{
	struct pg_ws *w;
	uint8_t *buf, id[16];
	size_t n, k = 0;
	char tmp[PATH_MAX];
	int fd, e;

	if (!r || !path)
		return fl__einval(__func__, "%s is NULL", !r ? "r" : "path");
	if (getpid() != r->pager->pid)
		return -ECHILD;
	w = r->ws;
	if (!w || !w->rec)
		return fl__einval(__func__, "the region does not record (FL_REGION_WS_RECORD)");
	/*
	 * A store that hands its pages over (FL_STORE_MOVE) reads the pages it gave
	 * the region as holes: a loading set made from it would hold zeros where the
	 * data was.
	 */
	if (loading_set && (fl_store_caps(r->store) & FL_STORE_MOVE)) {
		fl__err("fl_region_ws_save: %s: the region's store hands its pages over "
			"(FL_STORE_MOVE) and no longer has them; no loading set from it",
			loading_set);
		return -EOPNOTSUPP;
	}
	n = atomic_load_explicit(&w->nrec, memory_order_acquire);
	if (n > r->npages)
		n = r->npages;
	buf = malloc(FL__WS_HEADER + n * 8);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		uint64_t v = atomic_load_explicit(&w->rec[i], memory_order_acquire);

		if (v)	/* 0: a fault noting it right now; it is in the next save */
			fl__put_le64(buf + FL__WS_HEADER + 8 * k++, v - 1);
	}
	if (getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id)) {
		uint64_t t = fl__now_ns();

		memcpy(id, &t, 8);
		memcpy(id + 8, &r, sizeof(r) < 8 ? sizeof(r) : 8);
	}
	fl__ws_encode(buf, r->ps, r->len, k, id);
	e = loading_set ? save_loading_set(r, buf + FL__WS_HEADER, k, id, loading_set) : 0;
	if (!e) {
		fd = open_tmp(path, tmp);
		e = fd < 0 ? fd : commit_tmp(fd, tmp, path,
					     fl__pwrite_full(fd, buf, FL__WS_HEADER + k * 8, 0));
	}
	free(buf);
	if (e < 0)
		fl__err("fl_region_ws_save: writing %s%s%s: %s", path, loading_set ? " or " : "",
			loading_set ? loading_set : "", strerror(-e));
	return e;
}

/* ----------------------------------------------------------------- setup */

static uint32_t zero_crc(size_t ps)
{
	static const uint8_t zeros[4096];
	uint32_t crc = 0;

	for (size_t b = 0; b < ps; b += sizeof(zeros))
		crc = fl__crc32c(crc, zeros, sizeof(zeros));
	return crc;
}

static int load_loading_set(struct fl_region *r, struct pg_ws *w, const char *path,
			    const uint8_t id[16])
{
	struct fl__ls_info ls;
	struct stat st;
	const char *why = "";
	size_t have = 0, need = FL__WS_HEADER;
	uint8_t *head = NULL;
	int e;

	w->ls_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (w->ls_fd < 0)
		return -errno;
	if (fstat(w->ls_fd, &st) < 0)
		return -errno;
	for (;;) {
		uint8_t *h = realloc(head, need);

		if (!h) {
			free(head);
			return -ENOMEM;
		}
		head = h;
		if (need > (uint64_t)st.st_size) {
			why = "file too short for its header";
			e = -EINVAL;
			break;
		}
		e = fl__pread_full(w->ls_fd, head + have, need - have, have);
		if (e < 0)
			break;
		have = need;
		e = fl__ls_parse(head, have, (uint64_t)st.st_size, &ls, &need, &why);
		if (e != -EAGAIN)
			break;
	}
	if (!e && (ls.page_size != r->ps || ls.count != w->count || memcmp(ls.id, id, 16))) {
		why = "it belongs to another working set (id, page size or count differ)";
		e = -EINVAL;
	}
	if (!e) {
		w->ls_crc = malloc(w->count * sizeof(uint32_t) + 1);
		if (!w->ls_crc) {
			e = -ENOMEM;
		} else {
			for (size_t i = 0; i < w->count; i++)
				w->ls_crc[i] = fl__le32(ls.crcs + i * 4);
			w->ls_data_off = ls.data_off;
			w->zero_crc = zero_crc(r->ps);
		}
	}
	free(head);
	if (e == -EINVAL)
		fl__err("fl_region_add: loading set %s refused: %s", path, why);
	return e;
}

static int load_replay(struct fl_region *r, struct pg_ws *w, const struct pg_ws_opts *o)
{
	struct fl__ws_info ws;
	const char *why = "";
	uint64_t *seen;
	uint8_t *buf = NULL;
	size_t len = 0;
	int e;

	e = slurp(o->replay, FL__WS_HEADER + r->npages * 8, &buf, &len);
	if (e < 0) {
		if (e == -EFBIG)
			e = fl__einval("fl_region_add", "working set %s has more entries than the "
				       "region has pages", o->replay);
		else
			fl__err("fl_region_add: reading working set %s: %s", o->replay, strerror(-e));
		return e;
	}
	seen = calloc(r->npages / 64 + 1, sizeof(uint64_t));
	if (!seen) {
		free(buf);
		return -ENOMEM;
	}
	/* The bitmap of repeats has the region's pages: only a file of the region's may fill it. */
	e = fl__ws_parse(buf, len, &ws, NULL, &why);
	if (!e && (ws.page_size != r->ps || ws.region_len != r->len)) {
		why = "recorded for a region of another length or page size";
		e = -EINVAL;
	}
	if (!e)
		e = fl__ws_parse(buf, len, &ws, seen, &why);
	free(seen);
	if (!e) {
		w->count = ws.count;
		w->order = malloc(ws.count * sizeof(uint64_t) + 1);
		if (!w->order)
			e = -ENOMEM;
		for (size_t i = 0; !e && i < ws.count; i++)
			w->order[i] = fl__ws_entry(&ws, i);
	} else {
		fl__err("fl_region_add: working set %s refused: %s", o->replay, why);
	}
	if (!e && o->loading_set)
		e = load_loading_set(r, w, o->loading_set, ws.id);
	free(buf);
	return e;
}

int fl__ws_setup(struct fl_region *r, const struct pg_ws_opts *o)
{
	struct pg_ws *w;
	int e = 0;

	if (!o->record && !o->replay) {
		if (o->loading_set)
			return fl__einval("fl_region_add", "ws_loading_set without ws_replay");
		return 0;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->ls_fd = -1;
	r->ws = w;
	w->t0 = fl__now_ns();
	if (o->record) {
		w->seen = mmap(NULL, r->npages, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		w->rec = mmap(NULL, r->npages * sizeof(uint64_t), PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (w->seen == MAP_FAILED || w->rec == MAP_FAILED) {
			if (w->seen == MAP_FAILED)
				w->seen = NULL;
			if (w->rec == MAP_FAILED)
				w->rec = NULL;
			return -ENOMEM;
		}
	}
	if (o->replay) {
		size_t batch = o->batch ? o->batch : WS_DEFAULT_BATCH;

		if (batch % r->ps || batch > PG_STAGING * 64)
			return fl__einval("fl_region_add", "ws_batch %zu is not a multiple of the page "
					  "size %zu up to 256 MiB", batch, r->ps);
		w->batch = batch >> r->shift;
		e = load_replay(r, w, o);
	}
	return e;
}

void fl__ws_free(struct fl_region *r)
{
	struct pg_ws *w = r->ws;

	if (!w)
		return;
	if (w->seen)
		munmap((void *)w->seen, r->npages);
	if (w->rec)
		munmap((void *)w->rec, r->npages * sizeof(uint64_t));
	if (w->ls_fd >= 0)
		close(w->ls_fd);
	free(w->ls_crc);
	free(w->order);
	free(w);
	r->ws = NULL;
}

/* ---------------------------------------------------------------- replay */

static void count_out(struct fl_region *r, const uint8_t *out, size_t n)
{
	uint64_t done = 0, skipped = 0, failed = 0;

	for (size_t i = 0; i < n; i++) {
		switch (out[i]) {
		case FL__SUPPLY_INSTALLED:
			done++;
			break;
		case FL__SUPPLY_FAILED:
			failed++;
			break;
		default:
			skipped++;
			break;
		}
	}
	fl__stat_add(r, ST_WS_PREFETCHED, done);
	fl__stat_add(r, ST_WS_SKIPPED, skipped);
	fl__stat_add(r, ST_WS_ERRORS, failed);
}

/* The length of the run of consecutive pages of the order from @i on, at most @max. */
static size_t run_len(const uint64_t *order, size_t i, size_t max)
{
	size_t n = 1;

	while (n < max && order[i + n] == order[i] + n)
		n++;
	return n;
}

enum { LS_BAD, LS_DATA, LS_ZERO };

/* A loading-set page: not what was saved (its CRC), all zeros, or data. */
static int ls_class(struct fl_region *r, struct pg_ws *w, const uint8_t *page, size_t i)
{
	uint32_t crc = fl__crc32c(0, page, r->ps);

	if (crc != w->ls_crc[i])
		return LS_BAD;
	if (crc == w->zero_crc) {
		for (size_t b = 0; b < r->ps; b += 8) {
			uint64_t v;

			memcpy(&v, page + b, 8);
			if (v)
				return LS_DATA;
		}
		return LS_ZERO;
	}
	return LS_DATA;
}

/*
 * Pages [i, i+k) of the order from the loading set: one read, then each
 * run of consecutive pages installed, zero pages as zero pages. A page
 * that is not what was saved is left to its fault, which reads the store.
 */
static void batch_ls(struct fl_region *r, struct pg_ws *w, size_t i, size_t k, uint8_t *buf,
		     uint8_t *out)
{
	size_t j = 0;
	int next;

	if (fl__pread_full(w->ls_fd, buf, k << r->shift, w->ls_data_off + ((uint64_t)i << r->shift))) {
		fl__stat_add(r, ST_WS_ERRORS, k);
		return;
	}
	next = ls_class(r, w, buf, i);
	while (j < k && !atomic_load(&r->removing)) {
		size_t n = run_len(w->order, i + j, k - j), m = 1;
		int cls = next;

		/* The pages of this run of the same class as its first. */
		while (m < n && (next = ls_class(r, w, buf + ((j + m) << r->shift), i + j + m)) == cls)
			m++;
		if (m == n && j + n < k)
			next = ls_class(r, w, buf + ((j + n) << r->shift), i + j + n);
		if (cls == LS_BAD) {
			fl__stat_add(r, ST_WS_ERRORS, m);
		} else {
			if (fl__region_supply(r, w->order[i + j], m,
					      cls == LS_ZERO ? NULL : buf + (j << r->shift),
					      out) == -ENOENT)
				return;	/* removed, unmapped, or its process exited */
			count_out(r, out, m);
		}
		j += m;
	}
}

/*
 * The @k pages of @pgs (a batch of the order, sorted) from the store, a
 * run of consecutive pages per read. In file order: the read-ahead of the
 * batch (hint) arrives in that order, so each page is installed as soon
 * as its data is there, not after pages behind it in the file.
 */
static void batch_store(struct fl_region *r, const uint64_t *pgs, size_t k, uint8_t *buf,
			uint8_t *out, uint64_t *holes)
{
	size_t j = 0;

	while (j < k && !atomic_load(&r->removing)) {
		size_t n = run_len(pgs, j, k - j), d = 0;
		uint64_t pg = pgs[j];
		bool any = false;

		for (size_t m = 0; m < n && !any; m++)
			any = (atomic_load(&r->state[pg + m]) & (PG_STATE | PG_ZERO)) == PG_ABSENT;
		if (!any) {
			/* A fault (or the program) got to all of them first: no read. */
			fl__stat_add(r, ST_WS_SKIPPED, n);
			j += n;
			continue;
		}
		fl__stat_add(r, ST_READS, 1);
		if (fl_store_read(r->store, r->store_off + (pg << r->shift), buf, n << r->shift,
				  r->ps, holes) < 0) {
			fl__stat_add(r, ST_WS_ERRORS, n);
			j += n;
			continue;
		}
		fl__stat_add(r, ST_BYTES, n << r->shift);
		while (d < n) {
			bool hole = fl__bit_test(holes, d);
			size_t e = d + 1;

			while (e < n && fl__bit_test(holes, e) == hole)
				e++;
			if (fl__region_supply(r, pg + d, e - d, hole ? NULL : buf + (d << r->shift),
					      out) == -ENOENT)
				return;	/* removed, unmapped, or its process exited */
			count_out(r, out, e - d);
			d = e;
		}
		j += n;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Start reading pages [from, to) of the order: for the loading set, that
 * stretch of it; else the store's pages still absent, in file order, each
 * run of adjacent pages as one hint.
 */
static void hint(struct fl_region *r, struct pg_ws *w, size_t from, size_t to, uint64_t *tmp)
{
	size_t n = 0;

	if (w->ls_fd >= 0) {
		(void)posix_fadvise(w->ls_fd, (off_t)(w->ls_data_off + ((uint64_t)from << r->shift)),
				    (off_t)((uint64_t)(to - from) << r->shift), POSIX_FADV_WILLNEED);
		return;
	}
	for (size_t i = from; i < to; i++) {
		uint64_t pg = w->order[i];

		if ((atomic_load(&r->state[pg]) & (PG_STATE | PG_ZERO)) == PG_ABSENT)
			tmp[n++] = pg;
	}
	qsort(tmp, n, sizeof(*tmp), cmp_u64);
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;

		while (j < n && tmp[j] == tmp[j - 1] + 1)
			j++;
		fl__store_advise(r->store, r->store_off + (tmp[i] << r->shift),
				 (size_t)(tmp[j - 1] - tmp[i] + 1) << r->shift);
		i = j;
	}
}

static bool replay_on(struct fl_region *r)
{
	return !atomic_load(&r->removing) && !atomic_load(&r->gone) &&
	       !atomic_load(&r->pager->dead);
}

struct ws_ahead {
	struct fl_region *r;
	uint64_t *tmp;			/* a window's pages */
	pthread_mutex_t lock;
	pthread_cond_t cv;
	size_t installing;		/* the replay's position in the order */
	bool stop;
};

/* The replay is at position @i of the order (or, @stop, done): the read-ahead may go on. */
static void ahead_at(struct ws_ahead *a, size_t i, bool stop)
{
	pthread_mutex_lock(&a->lock);
	a->installing = i;
	a->stop |= stop;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->lock);
}

/*
 * The read-ahead thread (fl-ws-ra): asks for the reads of the order, a
 * batch at a time (hint), up to WS_AHEAD ahead of the batch the replay
 * installs. Asking blocks whenever the device's queue is full, hence a
 * thread of its own: the replay goes on installing what has arrived.
 */
static void *ahead_main(void *arg)
{
	struct ws_ahead *a = arg;
	struct fl_region *r = a->r;
	struct pg_ws *w = r->ws;
	size_t ahead = (WS_AHEAD >> r->shift) > w->batch ? WS_AHEAD >> r->shift : w->batch;

	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
	for (size_t i = 0; i < w->count && replay_on(r); i += w->batch) {
		bool stop;

		pthread_mutex_lock(&a->lock);
		while (!a->stop && i >= a->installing + ahead)
			pthread_cond_wait(&a->cv, &a->lock);
		stop = a->stop;
		pthread_mutex_unlock(&a->lock);
		if (stop)
			break;
		hint(r, w, i, i + (w->count - i < w->batch ? w->count - i : w->batch), a->tmp);
	}
	return NULL;
}

/*
 * The replay (fl-ws): a batch at a time, in the recorded order; within a
 * batch from the store, in file order, the order in which the read-ahead
 * of its pages lands (the loading set is in the recorded order already).
 */
static void *replay_main(void *arg)
{
	struct fl_region *r = arg;
	struct pg_ws *w = r->ws;
	size_t bytes = w->batch << r->shift;
	uint8_t *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint8_t *out = malloc(w->batch);
	uint64_t *holes = calloc(w->batch / 64 + 1, sizeof(uint64_t));
	uint64_t *sorted = malloc(w->batch * sizeof(uint64_t));
	struct ws_ahead ahead = { .r = r, .tmp = malloc(w->batch * sizeof(uint64_t)) };
	pthread_t ahead_thread;
	bool ahead_started = false;

	pthread_mutex_init(&ahead.lock, NULL);
	pthread_cond_init(&ahead.cv, NULL);
	/* Faults go first: the handlers (and the program) get the CPU before this thread. */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
	if (buf == MAP_FAILED || !out || !holes || !sorted || !ahead.tmp) {
		fl__err("pager: no memory for the working-set replay; faults bring the pages in");
		goto out;
	}
	/* Without that thread, each batch's reads are asked for as it starts. */
	ahead_started = fl__thread_start(&ahead_thread, NULL, ahead_main, &ahead, "fl-ws-ra") == 0;
	for (size_t i = 0; i < w->count && replay_on(r); i += w->batch) {
		size_t k = w->count - i < w->batch ? w->count - i : w->batch;

		if (ahead_started)
			ahead_at(&ahead, i, false);
		else
			hint(r, w, i, i + k, ahead.tmp);
		if (w->ls_fd >= 0) {
			batch_ls(r, w, i, k, buf, out);
		} else {
			memcpy(sorted, w->order + i, k * sizeof(*sorted));
			qsort(sorted, k, sizeof(*sorted), cmp_u64);
			batch_store(r, sorted, k, buf, out, holes);
		}
	}
out:
	atomic_store(&w->done_ns, fl__now_ns() - w->t0 ? fl__now_ns() - w->t0 : 1);
	if (ahead_started) {
		ahead_at(&ahead, w->count, true);
		pthread_join(ahead_thread, NULL);
	}
	pthread_mutex_destroy(&ahead.lock);
	pthread_cond_destroy(&ahead.cv);
	if (buf != MAP_FAILED)
		munmap(buf, bytes);
	free(out);
	free(holes);
	free(ahead.tmp);
	free(sorted);
	return NULL;
}

int fl__ws_start(struct fl_region *r)
{
	struct pg_ws *w = r->ws;
	int e;

	if (!w || !w->order)
		return 0;
	e = fl__thread_start(&w->thread, NULL, replay_main, r, "fl-ws");
	if (e)
		return e;
	w->started = true;
	return 0;
}

void fl__ws_stop(struct fl_region *r)
{
	struct pg_ws *w = r->ws;

	if (w && w->started) {
		pthread_join(w->thread, NULL);
		w->started = false;
	}
}
