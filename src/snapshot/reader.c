/* SPDX-License-Identifier: MIT */
/* The snapshot parser and page reads: everything a file says is checked before it is used. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "net/crc32c.h"
#include "snapshot/reader.h"
#include "snapshot/snap-int.h"

/* The alignment of buffer, offset and length that O_DIRECT reads here take. */
#define DIO_ALIGN 4096u

/*
 * Read [off, off+len) of the source: 0, or -EIO past its end (or where the
 * file was truncated under us), or pread's -errno. With @direct, an aligned
 * request goes through the O_DIRECT descriptor if there is one.
 */
static int src_read_how(const struct fl__snap_src *s, void *buf, size_t len, uint64_t off,
			bool direct)
{
	size_t got = 0;
	int fd = s->fd;

	if (off > s->size || len > s->size - off)
		return -EIO;
	if (s->fd < 0) {
		memcpy(buf, s->mem + off, len);
		return 0;
	}
	if (direct && s->dfd >= 0 && !((uintptr_t)buf % DIO_ALIGN) && !(off % DIO_ALIGN) &&
	    !(len % DIO_ALIGN))
		fd = s->dfd;
	while (got < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EINVAL && fd != s->fd) {
				fd = s->fd;	/* the device wants more alignment: buffered */
				continue;
			}
			return -errno;
		}
		if (n == 0)
			return -EIO;	/* truncated under us */
		got += (size_t)n;
	}
	return 0;
}

static int src_read(const struct fl__snap_src *s, void *buf, size_t len, uint64_t off)
{
	return src_read_how(s, buf, len, off, false);
}

static int refuse(const char *name, const char *why)
{
	fl__err("snapshot %s: refused: %s", name, why);
	return -EINVAL;
}

static void scratch_free(struct fl__snap_scratch *sc)
{
	if (sc->map_len)
		munmap(sc->cbuf, sc->map_len);
	sc->map_len = 0;
}

/* One mapping holding a compressed chunk, a decompressed one and a zstd context. */
static int scratch_map(struct fl__snap_file *f, struct fl__snap_scratch *sc)
{
	size_t c = ((size_t)f->max_clen + 63) & ~(size_t)63;
	size_t r = ((size_t)f->max_rlen + 63) & ~(size_t)63;
	size_t d = fl__snap_zstd_dctx_size();
	void *p = mmap(NULL, c + r + d, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return -ENOMEM;
	sc->cbuf = p;
	sc->rbuf = sc->cbuf + c;
	sc->dctx = sc->rbuf + r;
	sc->dctx_size = d;
	sc->map_len = c + r + d;
	return 0;
}

void fl__snap_file_free(struct fl__snap_file *f)
{
	if (!f)
		return;
	for (int i = 0; i < FL__SNAP_SCRATCH; i++)
		scratch_free(&f->scratch[i]);
	if (f->src.fd >= 0)
		close(f->src.fd);
	if (f->src.dfd >= 0)
		close(f->src.dfd);
	free(f->name);
	free(f->regions);
	free(f->entries);
	free(f->chunks);
	memset(f, 0, sizeof(*f));
	f->src.fd = f->src.dfd = -1;
}

/* Read a table of @n records of @rec bytes at @off into a fresh buffer, its CRC checked. */
static int read_table(struct fl__snap_file *f, uint64_t off, uint64_t n, size_t rec,
		      uint32_t crc, uint32_t flags, const char *what, uint8_t **ret)
{
	size_t len = (size_t)(n * rec);
	uint8_t *buf = malloc(len ? len : 1);
	int e;

	if (!buf)
		return -ENOMEM;
	e = src_read(&f->src, buf, len, off);
	if (e < 0) {
		fl__err("snapshot %s: reading the %s: %s", f->name, what, strerror(-e));
		free(buf);
		return e;
	}
	if (!(flags & FL__SNAP_PARSE_NO_CRC) && fl__crc32c(0, buf, len) != crc) {
		free(buf);
		fl__err("snapshot %s: refused: the %s's CRC does not match (corrupted)", f->name,
			what);
		return -EINVAL;
	}
	*ret = buf;
	return 0;
}

static int check_regions(struct fl__snap_file *f, const struct fl__snap_header *h)
{
	uint64_t entries = 0, data_end = FL__SNAP_HEADER_SIZE;
	char why[160];

	for (uint32_t i = 0; i < h->region_count; i++) {
		const struct fl__snap_region *r = &f->regions[i];
		const uint64_t ps = r->page_size;

#define BAD(...)                                                   \
	do {                                                       \
		snprintf(why, sizeof(why), __VA_ARGS__);           \
		return refuse(f->name, why);                       \
	} while (0)
		if (ps < FL__SNAP_MIN_PAGE || ps > FL__SNAP_MAX_PAGE || (ps & (ps - 1)))
			BAD("region %u: page size %llu is not a power of two from 4096 to 1 GiB", i,
			    (unsigned long long)ps);
		if (!r->len || r->len % ps || r->addr % ps || r->len / ps != r->pages ||
		    r->addr > UINT64_MAX - r->len)
			BAD("region %u: address %#llx, length %llu and %llu pages do not agree", i,
			    (unsigned long long)r->addr, (unsigned long long)r->len,
			    (unsigned long long)r->pages);
		if (r->first_entry != entries || r->pages > h->index_count - entries)
			BAD("region %u: its index entries do not follow the previous region's", i);
		entries += r->pages;
		if (h->flags & FL__SNAP_F_ZSTD) {
			if (r->data_off)
				BAD("region %u: data offset in a compressed file", i);
		} else {
			if (r->data_off % FL__SNAP_MIN_PAGE || r->data_off < data_end ||
			    r->data_off > h->region_table_off ||
			    r->len > h->region_table_off - r->data_off)
				BAD("region %u: data [%#llx, +%llu) is not in order inside the data area",
				    i, (unsigned long long)r->data_off, (unsigned long long)r->len);
			data_end = r->data_off + r->len;
		}
#undef BAD
	}
	if (entries != h->index_count)
		return refuse(f->name, "the regions' pages do not add up to the index");
	return 0;
}

static int check_chunks(struct fl__snap_file *f, const struct fl__snap_header *h)
{
	uint64_t max_rlen = FL__SNAP_CHUNK_RAW;

	/* A chunk holds up to 256 KiB of pages, or one page: never more than the largest page. */
	for (uint32_t r = 0; r < h->region_count; r++)
		if (f->regions[r].page_size > max_rlen)
			max_rlen = f->regions[r].page_size;
	for (uint64_t i = 0; i < h->chunk_count; i++) {
		const struct fl__snap_chunk *c = &f->chunks[i];

		if (!c->clen || !c->rlen || c->rlen % FL__SNAP_MIN_PAGE || c->rlen > max_rlen ||
		    c->off < FL__SNAP_HEADER_SIZE ||
		    c->off > h->region_table_off || c->clen > h->region_table_off - c->off)
			return refuse(f->name, "a chunk lies outside the data area or has bad sizes");
		if (c->clen > f->max_clen)
			f->max_clen = c->clen;
		if (c->rlen > f->max_rlen)
			f->max_rlen = c->rlen;
	}
	return 0;
}

static int check_entries(struct fl__snap_file *f, const struct fl__snap_header *h)
{
	const bool incr = h->flags & FL__SNAP_F_INCREMENTAL, zstd = h->flags & FL__SNAP_F_ZSTD;

	for (uint32_t r = 0; r < h->region_count; r++) {
		const uint64_t ps = f->regions[r].page_size;

		for (uint64_t i = 0; i < f->regions[r].pages; i++) {
			const struct fl__snap_entry *e = fl__snap_entry_of(f, r, i);
			bool ok;

			switch (e->kind) {
			case FL__SNAP_PARENT:
				ok = incr && !e->crc && !e->chunk && !e->slot;
				break;
			case FL__SNAP_DATA:
				ok = !zstd && !e->chunk && !e->slot;
				break;
			case FL__SNAP_ZERO:
			case FL__SNAP_ABSENT:
				ok = !e->crc && !e->chunk && !e->slot;
				break;
			case FL__SNAP_ZSTD:
				ok = zstd && e->chunk < h->chunk_count &&
				     f->chunks[e->chunk].rlen % ps == 0 &&
				     e->slot < f->chunks[e->chunk].rlen / ps;
				break;
			default:
				ok = false;
			}
			if (!ok) {
				char why[128];

				snprintf(why, sizeof(why), "region %u page %llu: bad index entry "
					 "(kind %u)", r, (unsigned long long)i, e->kind);
				return refuse(f->name, why);
			}
		}
	}
	return 0;
}

int fl__snap_parse(const struct fl__snap_src *src, const char *name, uint32_t flags,
		   struct fl__snap_file *f)
{
	uint8_t hdr[FL__SNAP_HEADER_USED], *buf = NULL;
	struct fl__snap_header h;
	const char *why = NULL;
	uint64_t rt_len, ct_len, ix_len;
	int e;

	memset(f, 0, sizeof(*f));
	f->src = *src;
	f->name = strdup(name);
	if (!f->name) {
		f->src.fd = f->src.dfd = -1;
		return -ENOMEM;
	}
	if (src->size < FL__SNAP_HEADER_SIZE) {
		e = refuse(name, src->size < FL__SNAP_HEADER_USED
				 ? "shorter than a header (truncated, or not a snapshot)"
				 : "shorter than its header area (truncated)");
		goto fail;
	}
	e = src_read(src, hdr, sizeof(hdr), 0);
	if (e < 0) {
		fl__err("snapshot %s: reading the header: %s", name, strerror(-e));
		goto fail;
	}
	e = fl__snap_header_decode(hdr, &h, &why);
	if (e < 0) {
		refuse(name, why);
		goto fail;
	}
	if (h.file_size != src->size) {
		char msg[128];

		snprintf(msg, sizeof(msg), "%llu bytes, but its header says %llu (%s)",
			 (unsigned long long)src->size, (unsigned long long)h.file_size,
			 src->size < h.file_size ? "truncated" : "extended or overwritten");
		e = refuse(name, msg);
		goto fail;
	}
	if (!h.region_count || h.region_count > FL__SNAP_MAX_REGIONS) {
		e = refuse(name, "region count is 0 or above 4096");
		goto fail;
	}
	if (!(h.flags & FL__SNAP_F_ZSTD) && h.chunk_count) {
		e = refuse(name, "chunks in an uncompressed file");
		goto fail;
	}
	if (!(h.flags & FL__SNAP_F_INCREMENTAL)) {
		static const uint8_t none[16];

		if (memcmp(h.parent_id, none, 16)) {
			e = refuse(name, "a parent id in a full snapshot");
			goto fail;
		}
	}
	/* The tables: one after the other, after the header, ending the file. */
	rt_len = (uint64_t)h.region_count * FL__SNAP_REGION_SIZE;
	if (h.chunk_count > src->size / FL__SNAP_CHUNK_SIZE ||
	    h.index_count > src->size / FL__SNAP_ENTRY_SIZE) {
		e = refuse(name, "tables larger than the file");
		goto fail;
	}
	ct_len = h.chunk_count * FL__SNAP_CHUNK_SIZE;
	ix_len = h.index_count * FL__SNAP_ENTRY_SIZE;
	if (h.region_table_off < FL__SNAP_HEADER_SIZE || h.region_table_off > src->size ||
	    rt_len > src->size - h.region_table_off ||
	    h.chunk_table_off != h.region_table_off + rt_len ||
	    ct_len > src->size - h.chunk_table_off || h.index_off != h.chunk_table_off + ct_len ||
	    ix_len != src->size - h.index_off) {
		e = refuse(name, "the tables are not where the header says, one after the other "
			   "to the end of the file");
		goto fail;
	}
	f->h = h;
	e = read_table(f, h.region_table_off, h.region_count, FL__SNAP_REGION_SIZE,
		       h.region_table_crc, flags, "region table", &buf);
	if (e < 0)
		goto fail;
	f->regions = calloc(h.region_count, sizeof(*f->regions));
	if (!f->regions) {
		free(buf);
		e = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < h.region_count; i++)
		fl__snap_region_decode(buf + (size_t)i * FL__SNAP_REGION_SIZE, &f->regions[i]);
	free(buf);
	buf = NULL;
	e = check_regions(f, &h);
	if (e < 0)
		goto fail;
	e = read_table(f, h.chunk_table_off, h.chunk_count, FL__SNAP_CHUNK_SIZE,
		       h.chunk_table_crc, flags, "chunk table", &buf);
	if (e < 0)
		goto fail;
	f->chunks = calloc(h.chunk_count ? h.chunk_count : 1, sizeof(*f->chunks));
	if (!f->chunks) {
		free(buf);
		e = -ENOMEM;
		goto fail;
	}
	for (uint64_t i = 0; i < h.chunk_count; i++)
		fl__snap_chunk_decode(buf + i * FL__SNAP_CHUNK_SIZE, &f->chunks[i]);
	free(buf);
	buf = NULL;
	e = check_chunks(f, &h);
	if (e < 0)
		goto fail;
	e = read_table(f, h.index_off, h.index_count, FL__SNAP_ENTRY_SIZE, h.index_crc, flags,
		       "page index", &buf);
	if (e < 0)
		goto fail;
	f->entries = calloc(h.index_count ? h.index_count : 1, sizeof(*f->entries));
	if (!f->entries) {
		free(buf);
		e = -ENOMEM;
		goto fail;
	}
	for (uint64_t i = 0; i < h.index_count; i++)
		fl__snap_entry_decode(buf + i * FL__SNAP_ENTRY_SIZE, &f->entries[i]);
	free(buf);
	buf = NULL;
	e = check_entries(f, &h);
	if (e < 0)
		goto fail;
	if (h.chunk_count && !fl__snap_zstd_available()) {
		fl__err("snapshot %s: refused: it is compressed with zstd, and this library was "
			"built without libzstd", name);
		e = -EOPNOTSUPP;
		goto fail;
	}
	for (int i = 0; i < FL__SNAP_SCRATCH; i++)
		atomic_flag_clear(&f->scratch[i].busy);
	/* Scratch for decompression now, so reads (in a signal handler, perhaps) need no heap. */
	for (int i = 0; h.chunk_count && i < FL__SNAP_SCRATCH; i++) {
		e = scratch_map(f, &f->scratch[i]);
		if (e < 0)
			goto fail;
	}
	return 0;
fail:
	f->src.fd = f->src.dfd = -1;	/* the caller's */
	fl__snap_file_free(f);
	return e;
}

/* Decompress chunk @ci into scratch; returns the scratch (held), or NULL (-EIO: a bad chunk). */
static struct fl__snap_scratch *chunk_load(struct fl__snap_file *f, uint32_t ci,
					   struct fl__snap_scratch *own, int *err)
{
	const struct fl__snap_chunk *c = &f->chunks[ci];
	struct fl__snap_scratch *sc = NULL;
	int e;

	for (int i = 0; i < FL__SNAP_SCRATCH && !sc; i++)
		if (!atomic_flag_test_and_set(&f->scratch[i].busy))
			sc = &f->scratch[i];
	if (!sc) {
		/* All busy: a mapping of our own rather than a wait. */
		memset(own, 0, sizeof(*own));
		if (scratch_map(f, own) == 0)
			sc = own;
	}
	/*
	 * No memory for one either: wait for a buffer, not fail a page whose
	 * data is there. Their holders only decompress one chunk (bounded), and
	 * a reader never holds one while it could be interrupted into another read.
	 */
	while (!sc) {
		sched_yield();
		for (int i = 0; i < FL__SNAP_SCRATCH && !sc; i++)
			if (!atomic_flag_test_and_set(&f->scratch[i].busy))
				sc = &f->scratch[i];
	}
	e = src_read(&f->src, sc->cbuf, c->clen, c->off);
	if (!e && fl__crc32c(0, sc->cbuf, c->clen) != c->crc)
		e = -EIO;
	if (!e)
		e = fl__snap_zstd_decompress(sc->dctx, sc->dctx_size, sc->rbuf, c->rlen, sc->cbuf,
					     c->clen);
	if (e < 0) {
		*err = -EIO;
		if (sc == own)
			scratch_free(own);
		else
			atomic_flag_clear(&sc->busy);
		return NULL;
	}
	return sc;
}

static void chunk_put(struct fl__snap_scratch *sc, struct fl__snap_scratch *own)
{
	if (sc == own)
		scratch_free(own);
	else
		atomic_flag_clear(&sc->busy);
}

int fl__snap_read_pages(struct fl__snap_file *f, uint32_t r, uint64_t pg, uint64_t n,
			uint8_t *buf, uint8_t *kinds, bool zero_fill, uint64_t *ret_bad)
{
	const struct fl__snap_region *rg = &f->regions[r];
	const size_t ps = rg->page_size;
	uint64_t i = 0;

	while (i < n) {
		const struct fl__snap_entry *e = fl__snap_entry_of(f, r, pg + i);
		uint64_t j = i + 1;
		int err;

		if (kinds)
			kinds[i] = (uint8_t)e->kind;
		switch (e->kind) {
		case FL__SNAP_DATA:
			/* The whole run of data pages in one read, then each page's CRC. */
			while (j < n && fl__snap_entry_of(f, r, pg + j)->kind == FL__SNAP_DATA) {
				if (kinds)
					kinds[j] = FL__SNAP_DATA;
				j++;
			}
			err = src_read_how(&f->src, buf + i * ps, (j - i) * ps,
					   rg->data_off + (pg + i) * ps, true);
			if (err < 0) {
				if (ret_bad)
					*ret_bad = i;
				return -EIO;
			}
			for (uint64_t k = i; k < j; k++) {
				if (fl__crc32c(0, buf + k * ps, ps) != fl__snap_entry_of(f, r, pg + k)->crc) {
					if (ret_bad)
						*ret_bad = k;
					return -EIO;
				}
			}
			break;
		case FL__SNAP_ZSTD: {
			struct fl__snap_scratch own, *sc;
			uint32_t ci = e->chunk;

			sc = chunk_load(f, ci, &own, &err);
			if (!sc) {
				if (ret_bad)
					*ret_bad = i;
				return -EIO;
			}
			/* Every page of the run that this chunk holds. */
			for (j = i; j < n; j++) {
				const struct fl__snap_entry *x = fl__snap_entry_of(f, r, pg + j);

				if (x->kind != FL__SNAP_ZSTD || x->chunk != ci)
					break;
				if (kinds)
					kinds[j] = FL__SNAP_ZSTD;
				memcpy(buf + j * ps, sc->rbuf + (size_t)x->slot * ps, ps);
				if (fl__crc32c(0, buf + j * ps, ps) != x->crc) {
					chunk_put(sc, &own);
					if (ret_bad)
						*ret_bad = j;
					return -EIO;
				}
			}
			chunk_put(sc, &own);
			break;
		}
		case FL__SNAP_ZERO:
		case FL__SNAP_ABSENT:
			if (zero_fill)
				memset(buf + i * ps, 0, ps);
			break;
		default:
			break;
		}
		i = j;
	}
	return 0;
}
