/* SPDX-License-Identifier: MIT */
/* The mem store: a caller's buffer, whose anonymous pages can be handed over for UFFDIO_MOVE. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultline.h"
#include "internal.h"
#include "store-internal.h"

struct mem_store {
	uint8_t *buf;
	size_t len;
	size_t pgsz;		/* this machine's page size: the unit of hand-over */
	bool move;
	/* With move: one bit per machine page of buf, set once the page was handed over. */
	_Atomic uint64_t *taken;
};

/*
 * Async-signal-safe: memcpy/memset and atomic loads. A read page (of
 * @page_size) may span several machine pages or lie inside one: it is a
 * hole if every machine page under it was handed over; a page only partly
 * handed over is copied, with zeros where pages left (that is what the
 * buffer itself now reads there).
 */
static int mem_read(void *userdata, uint64_t off, void *buf, size_t len, size_t page_size,
		    uint64_t *holes)
{
	struct mem_store *m = userdata;
	uint8_t *dst = buf;

	if (!m->move) {
		memcpy(dst, m->buf + off, len);
		return 0;
	}
	for (size_t i = 0; i < len / page_size; i++) {
		uint64_t a = off + (uint64_t)i * page_size, b = a + page_size;
		size_t first = a / m->pgsz, last = (b - 1) / m->pgsz, n_taken = 0;

		for (size_t pg = first; pg <= last; pg++)
			n_taken += fl__bm_test(m->taken, pg);
		if (n_taken == last - first + 1) {
			fl__bit_set(holes, i);
			continue;
		}
		if (!n_taken) {
			memcpy(dst + (a - off), m->buf + a, page_size);
			continue;
		}
		for (size_t pg = first; pg <= last; pg++) {
			uint64_t s = (uint64_t)pg * m->pgsz, e = s + m->pgsz;

			s = s < a ? a : s;
			e = e > b ? b : e;
			if (fl__bm_test(m->taken, pg))
				memset(dst + (s - off), 0, e - s);
			else
				memcpy(dst + (s - off), m->buf + s, e - s);
		}
	}
	return 0;
}

/*
 * A write puts data back into the buffer: pages it touches hold data again
 * (a handed-over page's untouched bytes read as zero, as its hole did).
 */
static int mem_write(void *userdata, uint64_t off, const void *buf, size_t len)
{
	struct mem_store *m = userdata;

	if (!len)
		return 0;
	memcpy(m->buf + off, buf, len);
	if (m->move) {
		for (size_t pg = off / m->pgsz; pg <= (off + len - 1) / m->pgsz; pg++)
			fl__bm_clear(m->taken, pg);
	}
	return 0;
}

/* Clear bits [start, end) again (undo a partial claim). */
static void unclaim(struct mem_store *m, size_t start, size_t end)
{
	for (uint64_t i = start, k; i < end; i += k) {
		uint64_t mask = fl__bits_word_mask(i, end, &k);

		atomic_fetch_and_explicit(&m->taken[i / 64], ~mask, memory_order_relaxed);
	}
}

/*
 * Async-signal-safe: claims the pages' bits word by word with
 * compare-and-swap, so two concurrent calls cannot both get a page.
 */
static int mem_take_pages(void *userdata, uint64_t off, size_t len, void **ret_addr)
{
	struct mem_store *m = userdata;
	size_t start, end;
	uint64_t pos, k;

	if (!m->move || !len || off % m->pgsz || len % m->pgsz)
		return -EOPNOTSUPP;
	start = off / m->pgsz;
	end = start + len / m->pgsz;
	for (pos = start; pos < end; pos += k) {
		uint64_t mask = fl__bits_word_mask(pos, end, &k);
		_Atomic uint64_t *w = &m->taken[pos / 64];
		uint64_t old = atomic_load_explicit(w, memory_order_relaxed);

		do {
			if (old & mask) {
				unclaim(m, start, pos);
				return -EOPNOTSUPP;
			}
		} while (!atomic_compare_exchange_weak_explicit(w, &old, old | mask,
								memory_order_acq_rel,
								memory_order_relaxed));
	}
	*ret_addr = m->buf + off;
	return 0;
}

static void mem_close(void *userdata)
{
	struct mem_store *m = userdata;

	if (!m)
		return;
	free(m->taken);
	free(m);
}

/* A /proc/self/maps line's mapping is private anonymous read-write memory. */
static bool vma_private_anon_rw(const char *perms, unsigned int maj, unsigned int min,
				unsigned long inode, const char *name)
{
	if (perms[0] != 'r' || perms[1] != 'w' || perms[3] != 'p')
		return false;
	if (maj || min || inode)
		return false;
	/* No name, or a kernel label for anonymous memory; never a path. */
	return !*name || !strcmp(name, "[heap]") || !strcmp(name, "[stack]") ||
	       !strncmp(name, "[anon:", 6);
}

/* Every byte of [start, end) lies in private anonymous read-write mappings, without gaps. */
static bool range_private_anon(uintptr_t start, uintptr_t end)
{
	FILE *f = fopen("/proc/self/maps", "re");
	uintptr_t covered = start;
	char *line = NULL;
	size_t cap = 0;
	bool ok = false;

	if (!f)
		return false;
	while (covered < end && getline(&line, &cap, f) > 0) {
		unsigned long lo, hi, pgoff, inode;
		unsigned int maj, min;
		char perms[5];
		int name_at = 0;
		char *name;

		if (sscanf(line, "%lx-%lx %4s %lx %x:%x %lu %n", &lo, &hi, perms, &pgoff, &maj,
			   &min, &inode, &name_at) < 7 || !name_at)
			break;
		if (hi <= covered)
			continue;
		if (lo > covered)	/* a gap: unmapped memory inside the buffer */
			break;
		name = line + name_at;
		name[strcspn(name, "\n")] = '\0';
		if (!vma_private_anon_rw(perms, maj, min, inode, name))
			break;
		covered = hi;
	}
	ok = covered >= end;
	free(line);
	fclose(f);
	return ok;
}

FL_API int fl_store_mem_create(void *buf, size_t len, uint32_t flags, struct fl_store **ret)
{
	struct fl_store_ops ops = {
		.sz = sizeof(ops),
		.read = mem_read,
		.write = mem_write,
		.take_pages = mem_take_pages,
		.close = mem_close,
	};
	uint32_t caps = 0;
	struct mem_store *m;
	uintptr_t start = (uintptr_t)buf;
	size_t pages;
	int r;

	if (!buf || !len || !ret || (flags & ~(uint32_t)(FL_STORE_MEM_READONLY |
							  FL_STORE_MEM_NO_MOVE)))
		return fl__einval(__func__, "%s", !buf ? "buf is NULL" : !len ? "len is 0" :
				  !ret ? "ret is NULL" : "unknown flags");
	if (len > UINTPTR_MAX - start)
		return fl__einval(__func__, "buf + len wraps around");
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	*m = (struct mem_store){ .buf = buf, .len = len, .pgsz = fl__page_size() };
	if (!(flags & FL_STORE_MEM_NO_MOVE) && start % m->pgsz == 0 &&
	    range_private_anon(start, start + len)) {
		pages = len / m->pgsz + 1;
		m->taken = calloc((pages + 63) / 64, sizeof(*m->taken));
		if (!m->taken) {
			free(m);
			return -ENOMEM;
		}
		m->move = true;
		caps |= FL_STORE_MOVE | FL_STORE_HOLES;
	} else {
		ops.take_pages = NULL;
	}
	if (flags & FL_STORE_MEM_READONLY) {
		ops.write = NULL;
		caps |= FL_STORE_READONLY;
	}
	r = fl_store_create(&ops, m, caps, len, ret);
	if (r < 0)
		mem_close(m);
	return r;
}
