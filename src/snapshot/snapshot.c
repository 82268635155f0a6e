/* SPDX-License-Identifier: MIT */
/* Opening a snapshot or a chain of them, reading pages through it, and the snapshot store. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "snapshot/reader.h"
#include "snapshot/snap-int.h"
#include "store/store-internal.h"
#include "util.h"

#define OPEN_FLAGS_ALL (FL_SNAPSHOT_OPEN_ALONE | FL_SNAPSHOT_OPEN_DIRECT)
#define MAX_CHAIN 256u
#define VERIFY_BATCH (2u << 20)

struct rcount {
	uint64_t data, zero, absent, parent;		/* the newest file */
	uint64_t cdata, czero, cabsent;			/* resolved through the chain */
};

struct fl_snapshot {
	_Atomic unsigned int refs;
	bool alone;
	uint32_t nfiles;
	struct fl__snap_file *files;	/* [0] the newest, then each one's parent */
	struct rcount *counts;		/* per region */
};

static void snap_unref(struct fl_snapshot *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	for (uint32_t i = 0; i < s->nfiles; i++)
		fl__snap_file_free(&s->files[i]);
	free(s->files);
	free(s->counts);
	free(s);
}

/* The file behind @fd opened again with O_DIRECT (through /proc: the same file). */
static int reopen_direct(int fd, const char *path, const struct stat *st)
{
	char self[64];
	struct stat st2;
	int dfd, err;

	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	dfd = open(self, O_RDONLY | O_CLOEXEC | O_DIRECT);
	if (dfd < 0 && errno == ENOENT)	/* no /proc mounted */
		dfd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
	if (dfd < 0) {
		err = errno;
		if (err == EINVAL) {
			fl__err("snapshot %s: the file system does not support O_DIRECT", path);
			return -EOPNOTSUPP;
		}
		fl__err("snapshot %s: opening with O_DIRECT: %s", path, strerror(err));
		return -err;
	}
	if (fstat(dfd, &st2) < 0 || st2.st_dev != st->st_dev || st2.st_ino != st->st_ino) {
		close(dfd);
		fl__err("snapshot %s: replaced while being opened", path);
		return -ESTALE;
	}
	return dfd;
}

/* Open and parse @path into @f. */
static int open_file(const char *path, bool direct, struct fl__snap_file *f)
{
	struct fl__snap_src src = { .fd = -1, .dfd = -1 };
	struct stat st;
	int fd, e;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		e = -errno;
		fl__err("snapshot %s: %s", path, strerror(errno));
		return e;
	}
	if (fstat(fd, &st) < 0) {
		e = -errno;
		fl__err("snapshot %s: %s", path, strerror(errno));
		close(fd);
		return e;
	}
	if (!S_ISREG(st.st_mode)) {
		fl__err("snapshot %s: refused: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	src.fd = fd;
	src.size = (uint64_t)st.st_size;
	if (direct) {
		src.dfd = reopen_direct(fd, path, &st);
		if (src.dfd < 0) {
			close(fd);
			return src.dfd;
		}
	}
	e = fl__snap_parse(&src, path, 0, f);
	if (e < 0) {
		close(fd);
		if (src.dfd >= 0)
			close(src.dfd);
		return e;
	}
	return 0;
}

/* Whether the file at @path has the header id @id (a quick look, no messages). */
static bool has_id(const char *path, const uint8_t id[16])
{
	uint8_t hdr[FL__SNAP_HEADER_USED];
	struct fl__snap_header h;
	const char *why;
	bool yes = false;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	struct stat st;

	if (fd < 0)
		return false;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
	    fl__snap_header_decode(hdr, &h, &why) == 0)
		yes = !memcmp(h.id, id, 16);
	close(fd);
	return yes;
}

static void id_hex(const uint8_t id[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

/* Find the file with id @id among @parents, or in the directory of @child. */
static int find_parent(const char *child, const char *const *parents, const uint8_t id[16],
		       char **ret_path)
{
	char hex[33], *copy, *dir;
	struct dirent *d;
	DIR *dh;

	if (parents) {
		for (size_t i = 0; parents[i]; i++) {
			if (has_id(parents[i], id)) {
				*ret_path = strdup(parents[i]);
				return *ret_path ? 0 : -ENOMEM;
			}
		}
		id_hex(id, hex);
		fl__err("snapshot %s: its parent %s is none of the files given", child, hex);
		return -ENOENT;
	}
	copy = strdup(child);
	if (!copy)
		return -ENOMEM;
	dir = dirname(copy);
	dh = opendir(dir);
	if (!dh) {
		fl__err("snapshot %s: cannot look for its parent in %s: %s", child, dir,
			strerror(errno));
		free(copy);
		return -ENOENT;
	}
	while ((d = readdir(dh))) {
		char *p;

		if (d->d_name[0] == '.' || (d->d_type != DT_REG && d->d_type != DT_UNKNOWN))
			continue;
		if (asprintf(&p, "%s/%s", dir, d->d_name) < 0) {
			closedir(dh);
			free(copy);
			return -ENOMEM;
		}
		if (has_id(p, id)) {
			closedir(dh);
			free(copy);
			*ret_path = p;
			return 0;
		}
		free(p);
	}
	closedir(dh);
	id_hex(id, hex);
	fl__err("snapshot %s: its parent %s is not in %s (name it among the parents)", child, hex,
		dir);
	free(copy);
	return -ENOENT;
}

/* @p is the parent @c names, with the same regions. */
static int check_link(const struct fl__snap_file *c, const struct fl__snap_file *p)
{
	if (memcmp(c->h.parent_id, p->h.id, 16)) {
		fl__err("snapshot %s: refused: %s is not its parent (another id)", c->name, p->name);
		return -EINVAL;
	}
	if (c->h.region_count != p->h.region_count) {
		fl__err("snapshot %s: refused: %u regions, its parent %s has %u", c->name,
			c->h.region_count, p->name, p->h.region_count);
		return -EINVAL;
	}
	for (uint32_t i = 0; i < c->h.region_count; i++) {
		if (c->regions[i].len != p->regions[i].len ||
		    c->regions[i].page_size != p->regions[i].page_size) {
			fl__err("snapshot %s: refused: region %u is %llu bytes of %llu-byte pages, "
				"in its parent %s %llu bytes of %llu-byte pages", c->name, i,
				(unsigned long long)c->regions[i].len,
				(unsigned long long)c->regions[i].page_size, p->name,
				(unsigned long long)p->regions[i].len,
				(unsigned long long)p->regions[i].page_size);
			return -EINVAL;
		}
	}
	return 0;
}

/* The file of the chain holding page @pg of region @r (-1: none, in a file opened alone). */
static int layer_of(const struct fl_snapshot *s, uint32_t r, uint64_t pg)
{
	for (uint32_t l = 0; l < s->nfiles; l++)
		if (fl__snap_entry_of(&s->files[l], r, pg)->kind != FL__SNAP_PARENT)
			return (int)l;
	return -1;
}

static void count_pages(struct fl_snapshot *s)
{
	for (uint32_t r = 0; r < s->files[0].h.region_count; r++) {
		struct rcount *c = &s->counts[r];

		for (uint64_t i = 0; i < s->files[0].regions[r].pages; i++) {
			int l = layer_of(s, r, i);
			uint32_t k = fl__snap_entry_of(&s->files[0], r, i)->kind;

			c->data += k == FL__SNAP_DATA || k == FL__SNAP_ZSTD;
			c->zero += k == FL__SNAP_ZERO;
			c->absent += k == FL__SNAP_ABSENT;
			c->parent += k == FL__SNAP_PARENT;
			if (l < 0)
				continue;
			k = fl__snap_entry_of(&s->files[l], r, i)->kind;
			c->cdata += k == FL__SNAP_DATA || k == FL__SNAP_ZSTD;
			c->czero += k == FL__SNAP_ZERO;
			c->cabsent += k == FL__SNAP_ABSENT;
		}
	}
}

static int load_open_opts(const struct fl_snapshot_open_opts *src, struct fl_snapshot_open_opts *o)
{
	const size_t sz = src->sz;
	int r;

	r = fl__opts_check(src, sizeof(*o), "fl_snapshot_open");
	if (r < 0)
		return r;
	r = fl__opt_has(sz, offsetof(struct fl_snapshot_open_opts, flags), sizeof(o->flags));
	if (r < 0)
		return fl__einval("fl_snapshot_open", "opts sz %zu ends inside a field", sz);
	if (r)
		o->flags = src->flags;
	r = fl__opt_has(sz, offsetof(struct fl_snapshot_open_opts, parents), sizeof(o->parents));
	if (r < 0)
		return fl__einval("fl_snapshot_open", "opts sz %zu ends inside a field", sz);
	if (r)
		o->parents = src->parents;
	return 0;
}

static int snap_open(const char *path, uint32_t flags, const char *const *parents,
		     struct fl_snapshot **ret)
{
	struct fl_snapshot *s;
	char *cur = NULL;
	int e;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	atomic_init(&s->refs, 1);
	s->alone = flags & FL_SNAPSHOT_OPEN_ALONE;
	s->files = calloc(MAX_CHAIN, sizeof(*s->files));
	if (!s->files) {
		free(s);
		return -ENOMEM;
	}
	e = open_file(path, flags & FL_SNAPSHOT_OPEN_DIRECT, &s->files[0]);
	if (e < 0)
		goto fail;
	s->nfiles = 1;
	while (!s->alone && (s->files[s->nfiles - 1].h.flags & FL__SNAP_F_INCREMENTAL)) {
		struct fl__snap_file *c = &s->files[s->nfiles - 1];

		if (s->nfiles == MAX_CHAIN) {
			fl__err("snapshot %s: refused: a chain of more than %u files", path, MAX_CHAIN);
			e = -EINVAL;
			goto fail;
		}
		for (uint32_t i = 0; i < s->nfiles; i++) {
			if (!memcmp(s->files[i].h.id, c->h.parent_id, 16)) {
				fl__err("snapshot %s: refused: the chain loops back to %s", path,
					s->files[i].name);
				e = -EINVAL;
				goto fail;
			}
		}
		e = find_parent(c->name, parents, c->h.parent_id, &cur);
		if (e < 0)
			goto fail;
		e = open_file(cur, flags & FL_SNAPSHOT_OPEN_DIRECT, &s->files[s->nfiles]);
		free(cur);
		if (e < 0)
			goto fail;
		s->nfiles++;
		e = check_link(c, &s->files[s->nfiles - 1]);
		if (e < 0)
			goto fail;
	}
	s->counts = calloc(s->files[0].h.region_count, sizeof(*s->counts));
	if (!s->counts) {
		e = -ENOMEM;
		goto fail;
	}
	count_pages(s);
	*ret = s;
	return 0;
fail:
	snap_unref(s);
	return e;
}

FL_API int fl_snapshot_open(const char *path, const struct fl_snapshot_open_opts *opts,
			    struct fl_snapshot **ret)
{
	struct fl_snapshot_open_opts o = { .sz = sizeof(o) };
	int e;

	if (!path || !ret)
		return fl__einval(__func__, "%s is NULL", !path ? "path" : "ret");
	if (opts) {
		e = load_open_opts(opts, &o);
		if (e < 0)
			return e;
	}
	if (o.flags & ~(uint32_t)OPEN_FLAGS_ALL)
		return fl__einval(__func__, "unknown flags %#x", o.flags & ~(uint32_t)OPEN_FLAGS_ALL);
	return snap_open(path, o.flags, o.parents, ret);
}

FL_API void fl_snapshot_close(struct fl_snapshot *s)
{
	snap_unref(s);
}

FL_API int fl_snapshot_info(const struct fl_snapshot *s, struct fl_snapshot_info *ret)
{
	struct fl_snapshot_info i = { .sz = sizeof(i) };
	const struct fl__snap_file *f;

	if (!s || !ret)
		return fl__einval(__func__, "%s is NULL", !s ? "s" : "ret");
	f = &s->files[0];
	memcpy(i.id, f->h.id, 16);
	memcpy(i.parent_id, f->h.parent_id, 16);
	i.flags = f->h.flags & FL__SNAP_F_INCREMENTAL ? FL_SNAPSHOT_INFO_INCREMENTAL : 0;
	for (uint32_t l = 0; l < s->nfiles; l++)
		if (s->files[l].h.flags & FL__SNAP_F_ZSTD)
			i.flags |= FL_SNAPSHOT_INFO_ZSTD;
	i.regions = f->h.region_count;
	i.chain = s->nfiles;
	i.file_size = f->h.file_size;
	i.created_ns = f->h.created_ns;
	return fl__stats_out(ret, &i, sizeof(i), __func__);
}

FL_API int fl_snapshot_region_info(const struct fl_snapshot *s, uint32_t region,
				   struct fl_snapshot_region_info *ret)
{
	struct fl_snapshot_region_info i = { .sz = sizeof(i) };
	const struct fl__snap_region *r;
	const struct rcount *c;

	if (!s || !ret)
		return fl__einval(__func__, "%s is NULL", !s ? "s" : "ret");
	if (region >= s->files[0].h.region_count)
		return fl__einval(__func__, "region %u of %u", region, s->files[0].h.region_count);
	r = &s->files[0].regions[region];
	c = &s->counts[region];
	i.addr = r->addr;
	i.len = r->len;
	i.page_size = r->page_size;
	i.flags = r->flags;
	i.pages_data = c->data;
	i.pages_zero = c->zero;
	i.pages_absent = c->absent;
	i.pages_parent = c->parent;
	i.chain_data = c->cdata;
	i.chain_zero = c->czero;
	i.chain_absent = c->cabsent;
	return fl__stats_out(ret, &i, sizeof(i), __func__);
}

/* Async-signal-safe: no logging, no heap (see fl__snap_read_pages). */
static int snap_read(struct fl_snapshot *s, uint32_t region, uint64_t off, uint8_t *buf,
		     size_t len, size_t ps, uint64_t *holes)
{
	const struct fl__snap_region *rg = &s->files[0].regions[region];
	const size_t sps = rg->page_size;
	const uint64_t sp0 = off / sps, nsp = len / sps, per = ps / sps;
	uint64_t i = 0;
	int e;

	if (ps < sps || ps % sps || off % ps || len % ps || off > rg->len || len > rg->len - off)
		return -EINVAL;
	/* Runs of pages from one file, each read in one go. */
	while (i < nsp) {
		int l = layer_of(s, region, sp0 + i);
		uint64_t j = i + 1;

		if (l < 0)
			return -ENODATA;
		while (j < nsp && layer_of(s, region, sp0 + j) == l)
			j++;
		e = fl__snap_read_pages(&s->files[l], region, sp0 + i, j - i, buf + i * sps, NULL,
					false, NULL);
		if (e < 0)
			return e;
		i = j;
	}
	/* A page of the caller's made of zero (or absent) pages only is a hole; else zero-fill. */
	for (uint64_t p = 0; p < nsp / per; p++) {
		uint64_t zeros = 0;

		for (uint64_t k = 0; k < per; k++) {
			uint64_t sp = sp0 + p * per + k;
			uint32_t kind = fl__snap_entry_of(&s->files[layer_of(s, region, sp)], region,
							  sp)->kind;

			zeros += kind == FL__SNAP_ZERO || kind == FL__SNAP_ABSENT;
		}
		if (zeros == per) {
			fl__bit_set(holes, p);
			continue;
		}
		for (uint64_t k = 0; zeros && k < per; k++) {
			uint64_t sp = sp0 + p * per + k;
			uint32_t kind = fl__snap_entry_of(&s->files[layer_of(s, region, sp)], region,
							  sp)->kind;

			if (kind == FL__SNAP_ZERO || kind == FL__SNAP_ABSENT)
				memset(buf + (p * per + k) * sps, 0, sps);
		}
	}
	return 0;
}

FL_API int fl_snapshot_read(struct fl_snapshot *s, uint32_t region, uint64_t off, void *buf,
			    size_t len, size_t page_size, uint64_t *holes)
{
	const struct fl__snap_region *rg;
	int saved = errno, e;

	if (!s || (!buf && len) || (!holes && len))
		return fl__einval(__func__, "%s is NULL", !s ? "s" : !buf ? "buf" : "holes");
	if (region >= s->files[0].h.region_count)
		return fl__einval(__func__, "region %u of %u", region, s->files[0].h.region_count);
	rg = &s->files[0].regions[region];
	if (page_size < rg->page_size || (page_size & (page_size - 1)) || off % page_size ||
	    len % page_size || off > rg->len || len > rg->len - off)
		return fl__einval(__func__, "[%llu, +%zu) in pages of %zu: not whole pages of at "
				  "least %llu bytes inside the region's %llu",
				  (unsigned long long)off, len, page_size,
				  (unsigned long long)rg->page_size, (unsigned long long)rg->len);
	e = snap_read(s, region, off, buf, len, page_size, holes);
	errno = saved;
	return e;
}

/* Check every stored page of @f, region @r; bad pages logged and counted. */
static int verify_region(struct fl__snap_file *f, uint32_t r, uint8_t *buf, uint64_t *bad)
{
	const struct fl__snap_region *rg = &f->regions[r];
	const uint64_t per = rg->page_size >= VERIFY_BATCH ? 1 : VERIFY_BATCH / rg->page_size;

	for (uint64_t pg = 0; pg < rg->pages; pg += per) {
		uint64_t n = rg->pages - pg < per ? rg->pages - pg : per;
		int e = fl__snap_read_pages(f, r, pg, n, buf, NULL, false, NULL);

		if (e == -ENOMEM)
			return e;
		if (!e)
			continue;
		/* Page by page, to name each bad one. */
		for (uint64_t k = 0; k < n; k++) {
			e = fl__snap_read_pages(f, r, pg + k, 1, buf, NULL, false, NULL);
			if (e == -ENOMEM)
				return e;
			if (!e)
				continue;
			if (*bad < 20)
				fl__err("snapshot %s: region %u page at offset %#llx: bad (CRC, read "
					"or decompression failed)", f->name, r,
					(unsigned long long)((pg + k) * rg->page_size));
			(*bad)++;
		}
	}
	return 0;
}

FL_API int fl_snapshot_verify(struct fl_snapshot *s, uint64_t *ret_bad)
{
	uint64_t bad = 0, max = 0;
	uint8_t *buf;
	int e = 0;

	if (!s)
		return fl__einval(__func__, "s is NULL");
	for (uint32_t l = 0; l < s->nfiles; l++)
		for (uint32_t r = 0; r < s->files[l].h.region_count; r++) {
			uint64_t ps = s->files[l].regions[r].page_size;
			uint64_t b = ps >= VERIFY_BATCH ? ps : VERIFY_BATCH;

			max = b > max ? b : max;
		}
	buf = malloc(max);
	if (!buf)
		return -ENOMEM;
	for (uint32_t l = 0; l < s->nfiles && !e; l++)
		for (uint32_t r = 0; r < s->files[l].h.region_count && !e; r++)
			e = verify_region(&s->files[l], r, buf, &bad);
	free(buf);
	if (bad > 20)
		fl__err("snapshot: %llu bad pages in all", (unsigned long long)bad);
	if (ret_bad)
		*ret_bad = bad;
	if (e)
		return e;
	return bad ? -EIO : 0;
}

/* ------------------------------------------------------------------ store */

struct snap_store {
	struct fl_snapshot *s;
	uint32_t region;
};

static int store_read(void *userdata, uint64_t off, void *buf, size_t len, size_t page_size,
		      uint64_t *holes)
{
	struct snap_store *ss = userdata;
	int saved = errno, e;

	e = snap_read(ss->s, ss->region, off, buf, len, page_size, holes);
	errno = saved;
	/* A page size below the snapshot's cannot be served: no page of it is installed. */
	return e == -EINVAL || e == -ENODATA ? -EIO : e;
}

/* Start reading (POSIX_FADV_WILLNEED) what store_read of [off, off+len) will read. */
static void snap_advise(struct fl_snapshot *s, uint32_t region, uint64_t off, size_t len)
{
	const size_t sps = s->files[0].regions[region].page_size;
	const uint64_t sp0 = off / sps, nsp = (len + sps - 1) / sps;
	uint64_t i = 0;

	while (i < nsp) {
		int l = layer_of(s, region, sp0 + i);
		struct fl__snap_file *f = l < 0 ? NULL : &s->files[l];
		const struct fl__snap_entry *e = f ? fl__snap_entry_of(f, region, sp0 + i) : NULL;
		uint64_t j = i + 1;

		/* A file read through O_DIRECT (or from memory) has no page cache to fill. */
		if (!e || f->src.fd < 0 || f->src.dfd >= 0 ||
		    (e->kind != FL__SNAP_DATA && e->kind != FL__SNAP_ZSTD)) {
			i = j;
			continue;
		}
		if (e->kind == FL__SNAP_DATA) {
			while (j < nsp && layer_of(s, region, sp0 + j) == l &&
			       fl__snap_entry_of(f, region, sp0 + j)->kind == FL__SNAP_DATA)
				j++;
			(void)posix_fadvise(f->src.fd,
					    (off_t)(f->regions[region].data_off + (sp0 + i) * sps),
					    (off_t)((j - i) * sps), POSIX_FADV_WILLNEED);
		} else {
			const struct fl__snap_chunk *c = &f->chunks[e->chunk];

			while (j < nsp && layer_of(s, region, sp0 + j) == l &&
			       fl__snap_entry_of(f, region, sp0 + j)->kind == FL__SNAP_ZSTD &&
			       fl__snap_entry_of(f, region, sp0 + j)->chunk == e->chunk)
				j++;
			(void)posix_fadvise(f->src.fd, (off_t)c->off, (off_t)c->clen,
					    POSIX_FADV_WILLNEED);
		}
		i = j;
	}
}

static void store_advise(void *userdata, uint64_t off, size_t len)
{
	struct snap_store *ss = userdata;
	int saved = errno;

	snap_advise(ss->s, ss->region, off, len);
	errno = saved;
}

static void store_close(void *userdata)
{
	struct snap_store *ss = userdata;

	snap_unref(ss->s);
	free(ss);
}

FL_API int fl_snapshot_store(struct fl_snapshot *s, uint32_t region, struct fl_store **ret)
{
	struct fl_store_ops ops = { .sz = sizeof(ops), .read = store_read, .close = store_close };
	struct snap_store *ss;
	int e;

	if (!s || !ret)
		return fl__einval(__func__, "%s is NULL", !s ? "s" : "ret");
	if (region >= s->files[0].h.region_count)
		return fl__einval(__func__, "region %u of %u", region, s->files[0].h.region_count);
	if (s->alone && s->counts[region].parent)
		return fl__einval(__func__, "an incremental snapshot opened alone cannot be "
				  "restored (its parents hold pages)");
	ss = calloc(1, sizeof(*ss));
	if (!ss)
		return -ENOMEM;
	ss->s = s;
	ss->region = region;
	e = fl_store_create(&ops, ss, FL_STORE_READONLY | FL_STORE_HOLES,
			    s->files[0].regions[region].len, ret);
	if (e < 0) {
		free(ss);
		return e;
	}
	fl__store_set_advise(*ret, store_advise);
	atomic_fetch_add(&s->refs, 1);
	return 0;
}

static int load_store_opts(const struct fl_store_snapshot_opts *src,
			   struct fl_store_snapshot_opts *o)
{
	const size_t sz = src->sz;
	int r;

	r = fl__opts_check(src, sizeof(*o), "fl_store_snapshot_open");
	if (r < 0)
		return r;
#define FIELD(f)                                                                             \
	do {                                                                                 \
		r = fl__opt_has(sz, offsetof(struct fl_store_snapshot_opts, f), sizeof(o->f)); \
		if (r < 0)                                                                   \
			return fl__einval("fl_store_snapshot_open",                          \
					  "opts sz %zu ends inside a field", sz);            \
		if (r)                                                                       \
			o->f = src->f;                                                       \
	} while (0)
	FIELD(region);
	FIELD(flags);
	FIELD(parents);
#undef FIELD
	return 0;
}

FL_API int fl_store_snapshot_open(const char *path, const struct fl_store_snapshot_opts *opts,
				  struct fl_store **ret)
{
	struct fl_store_snapshot_opts o = { .sz = sizeof(o) };
	struct fl_snapshot *s = NULL;
	int e;

	if (!path || !ret)
		return fl__einval(__func__, "%s is NULL", !path ? "path" : "ret");
	if (opts) {
		e = load_store_opts(opts, &o);
		if (e < 0)
			return e;
	}
	if (o.flags & ~(uint32_t)OPEN_FLAGS_ALL || (o.flags & FL_SNAPSHOT_OPEN_ALONE))
		return fl__einval(__func__, "flags %#x: unknown, or ALONE (a store needs the whole "
				  "chain)", o.flags);
	e = snap_open(path, o.flags, o.parents, &s);
	if (e < 0)
		return e;
	e = fl_snapshot_store(s, o.region, ret);
	fl_snapshot_close(s);
	return e;
}
