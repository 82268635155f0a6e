/* SPDX-License-Identifier: MIT */
/*
 * The snapshot writer. Uncompressed pages go to a position fixed by (region,
 * offset), so concurrent puts need no ordering and zero pages stay file
 * holes; zstd chunks are appended at offsets reserved atomically. The index
 * and the header are written last, by finish.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "faultline/snapshot.h"
#include "internal.h"
#include "net/crc32c.h"
#include "snapshot/format.h"
#include "snapshot/snap-int.h"

#define W_FLAGS_ALL FL_SNAPSHOT_ZSTD
/* A page's state in the writer: 0 never saved, BUSY being saved, else its final kind. */
#define W_BUSY 0xffu

struct wregion {
	struct fl__snap_region r;
	unsigned int shift;		/* log2(page_size) */
	_Atomic uint32_t *state;	/* per page */
	uint32_t *crc;			/* per page */
	uint32_t *chunk, *slot;		/* per page, zstd only */
};

struct fl_snapshot_writer {
	int fd;
	char *path;
	uint32_t flags;
	int zstd_level;
	bool incremental;
	uint8_t id[16];
	uint8_t parent_id[16];
	struct wregion *regions;
	uint32_t nregions;
	uint64_t cursor;		/* uncompressed layout: end of the last region's data */
	atomic_bool started;		/* a put or mark happened: no more regions */
	_Atomic int error;		/* sticky write error (-errno) */
	_Atomic uint64_t append;	/* zstd: where the next chunk goes */
	pthread_mutex_t lock;		/* the chunk table */
	struct fl__snap_chunk *chunks;
	size_t nchunks, cap;
};

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static int load_opts(const struct fl_snapshot_writer_opts *src, struct fl_snapshot_writer_opts *o)
{
	const size_t sz = src->sz;
	int r;

	r = fl__opts_check(src, sizeof(*o), "fl_snapshot_writer_create");
	if (r < 0)
		return r;
#define FIELD(f)                                                                             \
	do {                                                                                 \
		r = fl__opt_has(sz, offsetof(struct fl_snapshot_writer_opts, f), sizeof(o->f)); \
		if (r < 0)                                                                   \
			return fl__einval("fl_snapshot_writer_create",                       \
					  "opts sz %zu ends inside a field", sz);            \
		if (r)                                                                       \
			o->f = src->f;                                                       \
	} while (0)
	FIELD(flags);
	FIELD(zstd_level);
	FIELD(parent_id);
#undef FIELD
	return 0;
}

FL_API int fl_snapshot_writer_create(const char *path, const struct fl_snapshot_writer_opts *opts,
				     struct fl_snapshot_writer **ret)
{
	struct fl_snapshot_writer_opts o = { .sz = sizeof(o) };
	struct fl_snapshot_writer *w;
	size_t got = 0;
	int r;

	if (!path || !ret)
		return fl__einval(__func__, "%s is NULL", !path ? "path" : "ret");
	if (opts) {
		r = load_opts(opts, &o);
		if (r < 0)
			return r;
	}
	if (o.flags & ~(uint32_t)W_FLAGS_ALL)
		return fl__einval(__func__, "unknown flags %#x", o.flags & ~(uint32_t)W_FLAGS_ALL);
	if ((o.flags & FL_SNAPSHOT_ZSTD) && !fl__snap_zstd_available()) {
		fl__err("fl_snapshot_writer_create: FL_SNAPSHOT_ZSTD, but this library was built "
			"without libzstd");
		return -EOPNOTSUPP;
	}
	if (o.zstd_level && !(o.flags & FL_SNAPSHOT_ZSTD))
		return fl__einval(__func__, "zstd_level %d without FL_SNAPSHOT_ZSTD", o.zstd_level);
	if (o.zstd_level < -7 || o.zstd_level > 22)
		return fl__einval(__func__, "zstd_level %d is outside -7..22", o.zstd_level);

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	w->flags = o.flags;
	w->zstd_level = o.zstd_level;
	w->cursor = FL__SNAP_HEADER_SIZE;
	atomic_init(&w->append, FL__SNAP_HEADER_SIZE);
	pthread_mutex_init(&w->lock, NULL);
	if (o.parent_id) {
		w->incremental = true;
		memcpy(w->parent_id, o.parent_id, 16);
	}
	while (got < sizeof(w->id)) {
		ssize_t n = getrandom(w->id + got, sizeof(w->id) - got, 0);

		if (n < 0 && errno != EINTR) {
			r = -errno;
			fl__err("fl_snapshot_writer_create: getrandom: %s", strerror(errno));
			goto fail;
		}
		if (n > 0)
			got += (size_t)n;
	}
	w->path = strdup(path);
	if (!w->path) {
		r = -ENOMEM;
		goto fail;
	}
	w->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		r = -errno;
		fl__err("fl_snapshot_writer_create: %s: %s", path, strerror(errno));
		goto fail;
	}
	*ret = w;
	return 0;
fail:
	free(w->path);
	pthread_mutex_destroy(&w->lock);
	free(w);
	return r;
}

bool fl__snap_writer_has_region(const struct fl_snapshot_writer *w, uint32_t i, uint64_t addr,
				uint64_t len, size_t page_size, uint32_t flags)
{
	const struct fl__snap_region *r;

	if (atomic_load(&w->started) || i >= w->nregions)
		return false;
	r = &w->regions[i].r;
	return r->addr == addr && r->len == len && r->page_size == page_size && r->flags == flags;
}

uint32_t fl__snap_writer_nregions(const struct fl_snapshot_writer *w)
{
	return w->nregions;
}

FL_API int fl_snapshot_writer_add_region(struct fl_snapshot_writer *w, uint64_t addr,
					 uint64_t len, size_t page_size, uint32_t flags,
					 uint32_t *ret_index)
{
	struct wregion *rs, *wr;
	uint64_t pages, data_off = 0;

	if (!w)
		return fl__einval(__func__, "w is NULL");
	if (atomic_load(&w->started)) {
		fl__err("%s: pages were already put; declare every region first", __func__);
		return -EBUSY;
	}
	if (w->nregions >= FL__SNAP_MAX_REGIONS)
		return fl__einval(__func__, "more than %u regions", FL__SNAP_MAX_REGIONS);
	if (page_size < FL__SNAP_MIN_PAGE || page_size > FL__SNAP_MAX_PAGE ||
	    (page_size & (page_size - 1)))
		return fl__einval(__func__, "page_size %zu is not a power of two from 4096 to 1 GiB",
				  page_size);
	if (!len || len % page_size || addr % page_size)
		return fl__einval(__func__, "addr %#llx and len %llu must be multiples of the page "
				  "size %zu, len > 0", (unsigned long long)addr,
				  (unsigned long long)len, page_size);
	if (len > (1ull << 50) || addr > UINT64_MAX - len)
		return fl__einval(__func__, "region [%#llx, +%llu) is too large",
				  (unsigned long long)addr, (unsigned long long)len);
	pages = len / page_size;
	if (!(w->flags & FL_SNAPSHOT_ZSTD)) {
		uint64_t a = page_size > FL__SNAP_DATA_ALIGN ? page_size : FL__SNAP_DATA_ALIGN;

		data_off = align_up(w->cursor, a);
		if (data_off + len > (1ull << 62))
			return fl__einval(__func__, "the regions add up to more than a file can hold");
	}
	rs = realloc(w->regions, (w->nregions + 1) * sizeof(*rs));
	if (!rs)
		return -ENOMEM;
	w->regions = rs;
	wr = &rs[w->nregions];
	*wr = (struct wregion){
		.r = { .addr = addr, .len = len, .page_size = page_size, .flags = flags,
		       .data_off = data_off, .pages = pages },
		.shift = (unsigned int)__builtin_ctzll(page_size),
	};
	wr->state = calloc(pages, sizeof(*wr->state));
	wr->crc = calloc(pages, sizeof(*wr->crc));
	if (w->flags & FL_SNAPSHOT_ZSTD) {
		wr->chunk = calloc(pages, sizeof(*wr->chunk));
		wr->slot = calloc(pages, sizeof(*wr->slot));
	}
	if (!wr->state || !wr->crc || ((w->flags & FL_SNAPSHOT_ZSTD) && (!wr->chunk || !wr->slot))) {
		free((void *)wr->state);
		free(wr->crc);
		free(wr->chunk);
		free(wr->slot);
		return -ENOMEM;
	}
	if (!(w->flags & FL_SNAPSHOT_ZSTD))
		w->cursor = data_off + len;
	if (ret_index)
		*ret_index = w->nregions;
	w->nregions++;
	return 0;
}

/* Validate a put or mark and claim its pages (BUSY). Returns the region or NULL with *err. */
static struct wregion *claim(struct fl_snapshot_writer *w, const char *fn, uint32_t region,
			     uint64_t off, size_t len, int *err)
{
	struct wregion *wr;
	uint64_t pg, n;
	int e;

	if (!w) {
		*err = fl__einval(fn, "w is NULL");
		return NULL;
	}
	e = atomic_load(&w->error);
	if (e) {
		*err = e;
		return NULL;
	}
	if (region >= w->nregions) {
		*err = fl__einval(fn, "region %u of %u", region, w->nregions);
		return NULL;
	}
	wr = &w->regions[region];
	if (!len || off % wr->r.page_size || len % wr->r.page_size || off > wr->r.len ||
	    len > wr->r.len - off) {
		*err = fl__einval(fn, "[%llu, +%zu) is not whole pages of %llu bytes inside region "
				  "%u (%llu bytes)", (unsigned long long)off, len,
				  (unsigned long long)wr->r.page_size, region,
				  (unsigned long long)wr->r.len);
		return NULL;
	}
	atomic_store(&w->started, true);
	pg = off >> wr->shift;
	n = len >> wr->shift;
	for (uint64_t i = 0; i < n; i++) {
		uint32_t s = 0;

		if (!atomic_compare_exchange_strong(&wr->state[pg + i], &s, W_BUSY)) {
			while (i--)
				atomic_store(&wr->state[pg + i], 0);
			*err = -EEXIST;
			return NULL;
		}
	}
	return wr;
}

static void set_error(struct fl_snapshot_writer *w, int e, const char *what)
{
	int none = 0;

	if (atomic_compare_exchange_strong(&w->error, &none, e))
		fl__err("snapshot %s: %s: %s", w->path, what, strerror(-e));
}

/* Write the non-zero run [pg, pg+n) of @wr from @data (its first page) at its fixed place. */
static int put_raw(struct fl_snapshot_writer *w, struct wregion *wr, uint64_t pg, uint64_t n,
		   const uint8_t *data)
{
	const size_t ps = wr->r.page_size;

	for (uint64_t i = 0; i < n; i++)
		wr->crc[pg + i] = fl__crc32c(0, data + i * ps, ps);
	return fl__pwrite_full(w->fd, data, n * ps, wr->r.data_off + (pg << wr->shift));
}

/* Compress @k pages gathered in @stage (page numbers in @pgs) as one chunk and append it. */
static int flush_chunk(struct fl_snapshot_writer *w, struct wregion *wr, const uint8_t *stage,
		       const uint64_t *pgs, uint64_t k, uint8_t *cbuf, size_t cap)
{
	const size_t ps = wr->r.page_size, rlen = k * ps;
	struct fl__snap_chunk c;
	uint64_t pos;
	size_t clen;
	uint32_t idx;
	int e;

	e = fl__snap_zstd_compress(cbuf, cap, stage, rlen, w->zstd_level, &clen);
	if (e < 0)
		return e;
	pos = atomic_fetch_add(&w->append, clen);
	e = fl__pwrite_full(w->fd, cbuf, clen, pos);
	if (e < 0)
		return e;
	c = (struct fl__snap_chunk){ .off = pos, .clen = (uint32_t)clen, .rlen = (uint32_t)rlen,
				     .crc = fl__crc32c(0, cbuf, clen) };
	pthread_mutex_lock(&w->lock);
	if (w->nchunks == w->cap) {
		size_t ncap = w->cap ? w->cap * 2 : 256;
		struct fl__snap_chunk *nc = realloc(w->chunks, ncap * sizeof(*nc));

		if (!nc) {
			pthread_mutex_unlock(&w->lock);
			return -ENOMEM;
		}
		w->chunks = nc;
		w->cap = ncap;
	}
	idx = (uint32_t)w->nchunks;
	w->chunks[w->nchunks++] = c;
	pthread_mutex_unlock(&w->lock);
	for (uint64_t j = 0; j < k; j++) {
		wr->crc[pgs[j]] = fl__crc32c(0, stage + j * ps, ps);
		wr->chunk[pgs[j]] = idx;
		wr->slot[pgs[j]] = (uint32_t)j;
		atomic_store_explicit(&wr->state[pgs[j]], FL__SNAP_ZSTD, memory_order_release);
	}
	return 0;
}

/*
 * The pages [pg, pg+n) of @data into zstd chunks of up to FL__SNAP_CHUNK_RAW
 * (or one page): the non-zero pages gathered, zero pages recorded as such.
 * *ret_done: pages settled from pg on.
 */
static int put_zstd(struct fl_snapshot_writer *w, struct wregion *wr, uint64_t pg, uint64_t n,
		    const uint8_t *data, uint64_t *ret_done)
{
	const size_t ps = wr->r.page_size;
	const uint64_t per = ps >= FL__SNAP_CHUNK_RAW ? 1 : FL__SNAP_CHUNK_RAW / ps;
	const size_t cap = fl__snap_zstd_bound(per * ps);
	uint8_t *stage = NULL, *cbuf = malloc(cap);
	uint64_t *pgs = malloc(per * sizeof(*pgs)), k = 0, done = 0;
	int e = 0;

	/* One page per chunk needs no gathering: compress it where it is. */
	if (per > 1)
		stage = malloc(per * ps);
	if (!cbuf || !pgs || (per > 1 && !stage)) {
		e = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *page = data + i * ps;

		if (fl__snap_is_zero(page, ps)) {
			atomic_store_explicit(&wr->state[pg + i], FL__SNAP_ZERO, memory_order_release);
		} else {
			if (stage)
				memcpy(stage + k * ps, page, ps);
			pgs[k++] = pg + i;
		}
		if (k == per || (i + 1 == n && k)) {
			e = flush_chunk(w, wr, stage ? stage : page, pgs, k, cbuf, cap);
			if (e < 0)
				goto out;
			k = 0;
			done = i + 1;
		} else if (!k) {
			done = i + 1;
		}
	}
out:
	*ret_done = done;
	free(stage);
	free(cbuf);
	free(pgs);
	return e;
}

FL_API int fl_snapshot_writer_put(struct fl_snapshot_writer *w, uint32_t region, uint64_t off,
				  const void *data, size_t len)
{
	const uint8_t *p = data;
	struct wregion *wr;
	uint64_t pg, n, i = 0;
	int e = 0;

	wr = claim(w, __func__, region, off, len, &e);
	if (!wr)
		return e;
	pg = off >> wr->shift;
	n = len >> wr->shift;
	if (!p) {
		for (; i < n; i++)
			atomic_store_explicit(&wr->state[pg + i], FL__SNAP_ZERO, memory_order_release);
		return 0;
	}
	if (w->flags & FL_SNAPSHOT_ZSTD) {
		e = put_zstd(w, wr, pg, n, p, &i);
		goto out;
	}
	while (i < n) {
		uint64_t j = i;

		/* Zero pages take no space: they stay holes. */
		while (j < n && fl__snap_is_zero(p + (j << wr->shift), wr->r.page_size)) {
			atomic_store_explicit(&wr->state[pg + j], FL__SNAP_ZERO,
					      memory_order_release);
			j++;
		}
		i = j;
		while (j < n && !fl__snap_is_zero(p + (j << wr->shift), wr->r.page_size))
			j++;
		if (j == i)
			continue;
		e = put_raw(w, wr, pg + i, j - i, p + (i << wr->shift));
		if (e < 0)
			break;
		for (uint64_t k = i; k < j; k++)
			atomic_store_explicit(&wr->state[pg + k], FL__SNAP_DATA, memory_order_release);
		i = j;
	}
out:
	if (e < 0) {
		set_error(w, e, "writing pages");
		/* Nothing of a failed call counts: pages not settled yet are free again. */
		for (; i < n; i++) {
			uint32_t s = W_BUSY;

			atomic_compare_exchange_strong(&wr->state[pg + i], &s, 0);
		}
	}
	return e;
}

FL_API int fl_snapshot_writer_mark(struct fl_snapshot_writer *w, uint32_t region, uint64_t off,
				   size_t len, uint32_t kind)
{
	struct wregion *wr;
	uint32_t k;
	int e = 0;

	if (kind != FL_SNAPSHOT_MARK_ZERO && kind != FL_SNAPSHOT_MARK_ABSENT)
		return fl__einval(__func__, "unknown kind %u", kind);
	k = kind == FL_SNAPSHOT_MARK_ZERO ? FL__SNAP_ZERO : FL__SNAP_ABSENT;
	wr = claim(w, __func__, region, off, len, &e);
	if (!wr)
		return e;
	for (uint64_t i = off >> wr->shift; i < (off + len) >> wr->shift; i++)
		atomic_store_explicit(&wr->state[i], k, memory_order_release);
	return 0;
}

static void writer_free(struct fl_snapshot_writer *w, bool remove)
{
	if (remove && w->path)
		unlink(w->path);
	w->fd = fl__safe_close(w->fd);
	for (uint32_t i = 0; i < w->nregions; i++) {
		free((void *)w->regions[i].state);
		free(w->regions[i].crc);
		free(w->regions[i].chunk);
		free(w->regions[i].slot);
	}
	free(w->regions);
	free(w->chunks);
	pthread_mutex_destroy(&w->lock);
	free(w->path);
	free(w);
}

FL_API void fl_snapshot_writer_destroy(struct fl_snapshot_writer *w)
{
	if (w)
		writer_free(w, true);
}

/* fsync the directory holding @path, so the new name survives a crash. */
static void sync_dir(const char *path)
{
	char *copy = strdup(path);
	int fd;

	if (!copy)
		return;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(copy);
}

static int finish(struct fl_snapshot_writer *w, uint8_t ret_id[16])
{
	struct fl__snap_header h = { .version = FL__SNAP_VERSION,
				     .header_size = FL__SNAP_HEADER_SIZE };
	uint8_t hdr[FL__SNAP_HEADER_USED], *tab = NULL;
	uint64_t entries = 0, data_end, rt_len, ct_len, ix_len;
	struct timespec ts;
	size_t tab_len;
	int e;

	e = atomic_load(&w->error);
	if (e)
		return e;
	if (!w->nregions)
		return fl__einval("fl_snapshot_writer_finish", "no regions were declared");
	for (uint32_t r = 0; r < w->nregions; r++) {
		struct wregion *wr = &w->regions[r];

		wr->r.first_entry = entries;
		entries += wr->r.pages;
		for (uint64_t i = 0; i < wr->r.pages; i++) {
			uint32_t s = atomic_load_explicit(&wr->state[i], memory_order_acquire);

			if (s == W_BUSY)
				return fl__einval("fl_snapshot_writer_finish", "a put of region %u "
						  "offset %#llx is still running", r,
						  (unsigned long long)(i << wr->shift));
			if (s == 0 && !w->incremental)
				return fl__einval("fl_snapshot_writer_finish", "region %u: the page "
						  "at offset %#llx was never put nor marked (a "
						  "full snapshot needs every page)", r,
						  (unsigned long long)(i << wr->shift));
		}
	}
	data_end = w->flags & FL_SNAPSHOT_ZSTD ? atomic_load(&w->append) : w->cursor;
	rt_len = (uint64_t)w->nregions * FL__SNAP_REGION_SIZE;
	ct_len = (uint64_t)w->nchunks * FL__SNAP_CHUNK_SIZE;
	ix_len = entries * FL__SNAP_ENTRY_SIZE;
	h.flags = (w->incremental ? FL__SNAP_F_INCREMENTAL : 0) |
		  (w->flags & FL_SNAPSHOT_ZSTD ? FL__SNAP_F_ZSTD : 0);
	h.region_count = w->nregions;
	memcpy(h.id, w->id, 16);
	memcpy(h.parent_id, w->parent_id, 16);
	h.region_table_off = align_up(data_end, 4096);
	h.chunk_table_off = h.region_table_off + rt_len;
	h.chunk_count = w->nchunks;
	h.index_off = h.chunk_table_off + ct_len;
	h.index_count = entries;
	h.file_size = h.index_off + ix_len;
	clock_gettime(CLOCK_REALTIME, &ts);
	h.created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;

	tab_len = (size_t)(rt_len + ct_len + ix_len);
	tab = malloc(tab_len);
	if (!tab)
		return -ENOMEM;
	for (uint32_t r = 0; r < w->nregions; r++)
		fl__snap_region_encode(tab + (size_t)r * FL__SNAP_REGION_SIZE, &w->regions[r].r);
	for (size_t c = 0; c < w->nchunks; c++)
		fl__snap_chunk_encode(tab + rt_len + c * FL__SNAP_CHUNK_SIZE, &w->chunks[c]);
	for (uint32_t r = 0; r < w->nregions; r++) {
		struct wregion *wr = &w->regions[r];
		uint8_t *out = tab + rt_len + ct_len + wr->r.first_entry * FL__SNAP_ENTRY_SIZE;

		for (uint64_t i = 0; i < wr->r.pages; i++) {
			struct fl__snap_entry en = { .kind = atomic_load(&wr->state[i]) };

			if (en.kind == FL__SNAP_DATA || en.kind == FL__SNAP_ZSTD)
				en.crc = wr->crc[i];
			if (en.kind == FL__SNAP_ZSTD) {
				en.chunk = wr->chunk[i];
				en.slot = wr->slot[i];
			}
			fl__snap_entry_encode(out + i * FL__SNAP_ENTRY_SIZE, &en);
		}
	}
	h.region_table_crc = fl__crc32c(0, tab, rt_len);
	h.chunk_table_crc = fl__crc32c(0, tab + rt_len, ct_len);
	h.index_crc = fl__crc32c(0, tab + rt_len + ct_len, ix_len);
	e = fl__pwrite_full(w->fd, tab, tab_len, h.region_table_off);
	free(tab);
	if (e < 0)
		goto io;
	/* The data and tables are durable before the header makes them a snapshot. */
	if (fsync(w->fd) < 0) {
		e = -errno;
		goto io;
	}
	fl__snap_header_encode(hdr, &h);
	e = fl__pwrite_full(w->fd, hdr, sizeof(hdr), 0);
	if (e < 0)
		goto io;
	if (fsync(w->fd) < 0) {
		e = -errno;
		goto io;
	}
	sync_dir(w->path);
	if (ret_id)
		memcpy(ret_id, w->id, 16);
	return 0;
io:
	fl__err("snapshot %s: writing the index and header: %s", w->path, strerror(-e));
	return e;
}

FL_API int fl_snapshot_writer_finish(struct fl_snapshot_writer *w, uint8_t ret_id[16])
{
	int e;

	if (!w)
		return fl__einval(__func__, "w is NULL");
	e = finish(w, ret_id);
	writer_free(w, e < 0);
	return e;
}
