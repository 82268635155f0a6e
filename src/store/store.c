/* SPDX-License-Identifier: MIT */
/* A store: a caller's callbacks behind bounds and alignment checks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "faultline.h"
#include "internal.h"
#include "store-internal.h"

#define CAPS_ALL (FL_STORE_READONLY | FL_STORE_HOLES | FL_STORE_MOVE)

struct fl_store {
	struct fl_store_ops ops;
	void *userdata;
	uint32_t caps;
	uint64_t size;
	fl__store_advise_fn advise;	/* built-in stores only: read-ahead hints, or NULL */
};

void fl__store_set_advise(struct fl_store *s, fl__store_advise_fn fn)
{
	s->advise = fn;
}

void fl__store_advise(struct fl_store *s, uint64_t off, size_t len)
{
	if (s && s->advise && len && off <= s->size && len <= s->size - off)
		s->advise(s->userdata, off, len);
}

/* Copy the fields of @src that its sz covers; the rest stay NULL. */
static int load_ops(const struct fl_store_ops *src, struct fl_store_ops *o)
{
	const size_t sz = src->sz;
	int r;

	r = fl__opts_check(src, sizeof(*o), "fl_store_create");
	if (r < 0)
		return r;
	*o = (struct fl_store_ops){ .sz = sizeof(*o) };
	/* read is required, so it must lie inside sz. */
	if (fl__opt_has(sz, offsetof(struct fl_store_ops, read), sizeof(o->read)) != 1)
		return fl__einval("fl_store_create", "ops sz %zu does not reach read", sz);
	o->read = src->read;
	r = fl__opt_has(sz, offsetof(struct fl_store_ops, write), sizeof(o->write));
	if (r < 0)
		return fl__einval("fl_store_create", "ops sz %zu ends inside a field", sz);
	if (r)
		o->write = src->write;
	r = fl__opt_has(sz, offsetof(struct fl_store_ops, take_pages), sizeof(o->take_pages));
	if (r < 0)
		return fl__einval("fl_store_create", "ops sz %zu ends inside a field", sz);
	if (r)
		o->take_pages = src->take_pages;
	r = fl__opt_has(sz, offsetof(struct fl_store_ops, close), sizeof(o->close));
	if (r < 0)
		return fl__einval("fl_store_create", "ops sz %zu ends inside a field", sz);
	if (r)
		o->close = src->close;
	return 0;
}

FL_API int fl_store_create(const struct fl_store_ops *ops, void *userdata, uint32_t caps,
			   uint64_t size, struct fl_store **ret)
{
	struct fl_store_ops o;
	struct fl_store *s;
	int r;

	if (!ops || !ret)
		return fl__einval(__func__, "%s is NULL", !ops ? "ops" : "ret");
	r = load_ops(ops, &o);
	if (r < 0)
		return r;
	if (!o.read || (caps & ~(uint32_t)CAPS_ALL))
		return fl__einval(__func__, "%s", !o.read ? "ops->read is NULL" : "unknown caps");
	if ((caps & FL_STORE_MOVE) && !o.take_pages)
		return fl__einval(__func__, "FL_STORE_MOVE without ops->take_pages");
	/* A store without write() is read-only whatever the caller said: keep caps truthful. */
	if (!o.write)
		caps |= FL_STORE_READONLY;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	*s = (struct fl_store){ .ops = o, .userdata = userdata, .caps = caps, .size = size };
	*ret = s;
	return 0;
}

FL_API void fl_store_destroy(struct fl_store *s)
{
	if (!s)
		return;
	if (s->ops.close)
		s->ops.close(s->userdata);
	free(s);
}

FL_API uint32_t fl_store_caps(const struct fl_store *s)
{
	return s ? s->caps : 0;
}

FL_API uint64_t fl_store_size(const struct fl_store *s)
{
	return s ? s->size : 0;
}

/* [off, off+len) inside the store, both multiples of @align, without overflow. */
/* [off, off+len) is whole units of @align inside the store: 0, or log why and -EINVAL. */
static int range_check(const char *fn, const struct fl_store *s, uint64_t off, size_t len,
		       size_t align)
{
	if (off % align || len % align)
		return fl__einval(fn, "offset %llu or length %zu is not a multiple of %zu",
				  (unsigned long long)off, len, align);
	if (off > s->size || (uint64_t)len > s->size - off)
		return fl__einval(fn, "[%llu, +%zu) runs past the store's %llu bytes",
				  (unsigned long long)off, len, (unsigned long long)s->size);
	return 0;
}

/*
 * A callback returns 0 or a negative errno. Anything else is a broken store:
 * whatever it left in the caller's buffer is not data, so it is an error
 * (-EIO), never installed.
 */
static int callback_result(const char *what, int r, uint64_t off, size_t len)
{
	if (r > 0 || r < -4095) {
		fl__err("store: %s callback returned %d for [%#llx, +%#zx): neither 0 nor -errno; "
			"taken as -EIO", what, r, (unsigned long long)off, len);
		return -EIO;
	}
	return r;
}

FL_API int fl_store_read(struct fl_store *s, uint64_t off, void *buf, size_t len,
			 size_t page_size, uint64_t *holes)
{
	size_t words;
	int r;

	if (!s || (!buf && len))
		return fl__einval(__func__, "%s is NULL", !s ? "s" : "buf");
	if (page_size < FL__STORE_MIN_PAGE || (page_size & (page_size - 1)))
		return fl__einval(__func__, "page_size %zu is not a power of two >= %u", page_size,
				  FL__STORE_MIN_PAGE);
	r = range_check(__func__, s, off, len, page_size);
	if (r < 0)
		return r;
	/* A store that reports holes needs somewhere to report them. */
	if (!holes && (s->caps & FL_STORE_HOLES))
		return fl__einval(__func__, "holes is NULL but the store reports holes");
	if (!len)
		return 0;
	/* The callback contract promises a zeroed bitmap; make it so whatever the caller did. */
	if (holes) {
		words = (len / page_size + 63) / 64;
		memset(holes, 0, words * sizeof(*holes));
	}
	r = s->ops.read(s->userdata, off, buf, len, page_size, holes);
	return callback_result("read", r, off, len);
}

FL_API int fl_store_write(struct fl_store *s, uint64_t off, const void *buf, size_t len)
{
	int r;

	if (!s || (!buf && len))
		return fl__einval(__func__, "%s is NULL", !s ? "s" : "buf");
	if ((s->caps & FL_STORE_READONLY) || !s->ops.write)
		return -EROFS;
	r = range_check(__func__, s, off, len, FL__STORE_MIN_PAGE);
	if (r < 0)
		return r;
	if (!len)
		return 0;
	r = s->ops.write(s->userdata, off, buf, len);
	return callback_result("write", r, off, len);
}

FL_API int fl_store_take_pages(struct fl_store *s, uint64_t off, size_t len, void **ret_addr)
{
	void *addr = NULL;
	int r;

	if (!s || !ret_addr)
		return fl__einval(__func__, "%s is NULL", !s ? "s" : "ret_addr");
	if (!(s->caps & FL_STORE_MOVE) || !s->ops.take_pages)
		return -EOPNOTSUPP;
	if (!len)
		return fl__einval(__func__, "len is 0");
	r = range_check(__func__, s, off, len, FL__STORE_MIN_PAGE);
	if (r < 0)
		return r;
	r = callback_result("take_pages", s->ops.take_pages(s->userdata, off, len, &addr), off,
			    len);
	if (r < 0)
		return r;
	if (!addr)
		return -EIO;
	*ret_addr = addr;
	return 0;
}
