/* SPDX-License-Identifier: MIT */
/* The file store: pread/pwrite at an offset, holes from SEEK_DATA/SEEK_HOLE, optional O_DIRECT. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "store-internal.h"

#define FILE_FLAGS_ALL (FL_STORE_FILE_WRITABLE | FL_STORE_FILE_DIRECT | FL_STORE_FILE_CREATE)

/*
 * The alignment of buffer address, file offset and length that we assume
 * O_DIRECT accepts: the logical block size of nearly every device is 512 or
 * 4096. A device that wants more refuses with EINVAL, and then every request
 * takes the buffered descriptor.
 */
#define DIO_ALIGN 4096u

struct file_store {
	int fd;			/* O_DIRECT with FL_STORE_FILE_DIRECT */
	int fd_buffered;	/* with DIRECT: the same file without O_DIRECT, for requests
				   O_DIRECT cannot take; else -1 */
	bool blockdev;
	uint64_t base;		/* opts->offset: the file offset of the store's byte 0 */
	/*
	 * File offset below which data must exist: the file's size at open,
	 * raised by our own writes. Missing data below it is an error (-EIO),
	 * above it a hole.
	 */
	_Atomic uint64_t eof;
	atomic_bool no_seek;	/* SEEK_DATA unsupported here, or no hole at open: every page
				   counts as data */
	atomic_bool no_direct;	/* the device refused an O_DIRECT request: stay buffered */
};

/* The next run of data at or after the last probed offset: [data, hole). */
struct extent {
	uint64_t data, hole;
	bool valid;
};

static int pick_fd(struct file_store *f, const void *buf, uint64_t pos, size_t len)
{
	if (f->fd_buffered < 0)
		return f->fd;
	if (atomic_load_explicit(&f->no_direct, memory_order_relaxed) ||
	    (uintptr_t)buf % DIO_ALIGN || pos % DIO_ALIGN || len % DIO_ALIGN)
		return f->fd_buffered;
	return f->fd;
}

/* 1 if the file has data somewhere in [a, b), 0 if none (a hole, or past its end), or -errno. */
static int has_data(struct file_store *f, struct extent *x, uint64_t a, uint64_t b)
{
	off_t d, h;
	int err;

	if (atomic_load_explicit(&f->no_seek, memory_order_relaxed))
		return 1;
	if (!x->valid || a >= x->hole) {
		/* lseek moves the shared file offset, which pread ignores. */
		d = lseek(f->fd, (off_t)a, SEEK_DATA);
		if (d < 0) {
			err = errno;
			if (err == EINVAL || err == EOPNOTSUPP) {
				atomic_store_explicit(&f->no_seek, true, memory_order_relaxed);
				return 1;
			}
			if (err != ENXIO)
				return -err;
			/* No data from a to the end of the file. */
			x->data = x->hole = UINT64_MAX;
		} else {
			h = lseek(f->fd, d, SEEK_HOLE);
			if (h < 0) {
				err = errno;
				if (err != ENXIO)
					return -err;
				/* Shrunk between the two calls. */
				x->data = x->hole = UINT64_MAX;
			} else {
				x->data = (uint64_t)d;
				x->hole = (uint64_t)h;
			}
		}
		x->valid = true;
	}
	return x->data < b && x->hole > a;
}

/* The file's size now, or -errno. */
static int64_t current_size(struct file_store *f)
{
	struct stat st;
	off_t end;

	if (f->blockdev) {
		end = lseek(f->fd, 0, SEEK_END);
		return end < 0 ? -errno : (int64_t)end;
	}
	if (fstat(f->fd, &st) < 0)
		return -errno;
	return (int64_t)st.st_size;
}

/* pread [pos, pos+len) into @buf until done or end of file; *ret_got: bytes read. */
static int read_full(struct file_store *f, uint8_t *buf, size_t len, uint64_t pos,
		     size_t *ret_got)
{
	size_t got = 0;

	while (got < len) {
		int fd = pick_fd(f, buf + got, pos + got, len - got);
		ssize_t n = pread(fd, buf + got, len - got, (off_t)(pos + got));

		if (n < 0) {
			int err = errno;

			if (err == EINTR)
				continue;
			if (err == EINVAL && fd != f->fd_buffered && f->fd_buffered >= 0) {
				atomic_store_explicit(&f->no_direct, true, memory_order_relaxed);
				continue;
			}
			return -err;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	*ret_got = got;
	return 0;
}

static int do_read(struct file_store *f, uint64_t off, uint8_t *buf, size_t len,
		   size_t page_size, uint64_t *holes)
{
	const uint64_t pos = f->base + off;
	const uint64_t eof = atomic_load_explicit(&f->eof, memory_order_acquire);
	struct extent x = { .valid = false };
	int64_t size = -1;	/* the file's size now: fetched once, when a hole needs it */
	size_t n = len / page_size, i = 0, j, k, got = 0, run;
	int r;

	while (i < n) {
		uint64_t a = pos + (uint64_t)i * page_size, need;

		r = has_data(f, &x, a, a + page_size);
		if (r < 0)
			return r;
		if (!r) {
			/*
			 * No data here. Below eof that is a hole only if the file
			 * still reaches that far: data that was there at open
			 * and vanished (truncated under us) is an error.
			 */
			if (a < eof) {
				need = a + page_size < eof ? a + page_size : eof;
				if (size < 0) {
					size = current_size(f);
					if (size < 0)
						return (int)size;
				}
				if ((uint64_t)size < need)
					return -EIO;
			}
			fl__bit_set(holes, i);
			i++;
			continue;
		}
		/* Read every page with data from here on in one go. */
		for (j = i + 1; j < n; j++) {
			uint64_t b = pos + (uint64_t)j * page_size;

			r = has_data(f, &x, b, b + page_size);
			if (r < 0)
				return r;
			if (!r)
				break;
		}
		run = (j - i) * page_size;
		r = read_full(f, buf + (size_t)i * page_size, run, a, &got);
		if (r < 0)
			return r;
		if (got < run) {
			/*
			 * End of file: an error below eof; above it the rest of
			 * the page reads as zeros and whole pages are holes.
			 */
			need = a + run < eof ? a + run : eof;
			if (a + got < need)
				return -EIO;
			k = (got + page_size - 1) / page_size;
			memset(buf + (size_t)i * page_size + got, 0, k * page_size - got);
			fl__bitmap_set_range(holes, i + k, j - i - k);
		}
		i = j;
	}
	return 0;
}

/* Async-signal-safe: lseek, fstat, pread, memset and atomics; errno is preserved. */
/* Read-ahead hint; with O_DIRECT reads bypass the page cache: none. */
static void file_advise(void *userdata, uint64_t off, size_t len)
{
	struct file_store *f = userdata;

	if (f->fd_buffered < 0 && !f->blockdev)
		(void)posix_fadvise(f->fd, (off_t)(f->base + off), (off_t)len, POSIX_FADV_WILLNEED);
}

static int file_read(void *userdata, uint64_t off, void *buf, size_t len, size_t page_size,
		     uint64_t *holes)
{
	int saved = errno, r;

	r = do_read(userdata, off, buf, len, page_size, holes);
	errno = saved;
	return r;
}

static int do_write(struct file_store *f, uint64_t off, const uint8_t *buf, size_t len)
{
	const uint64_t pos = f->base + off, end = pos + len;
	uint64_t cur;
	size_t done = 0;

	while (done < len) {
		int fd = pick_fd(f, buf + done, pos + done, len - done);
		ssize_t n = pwrite(fd, buf + done, len - done, (off_t)(pos + done));

		if (n < 0) {
			int err = errno;

			if (err == EINTR)
				continue;
			if (err == EINVAL && fd != f->fd_buffered && f->fd_buffered >= 0) {
				atomic_store_explicit(&f->no_direct, true, memory_order_relaxed);
				continue;
			}
			return -err;
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	/* What we wrote must read back: raise eof past it. */
	cur = atomic_load_explicit(&f->eof, memory_order_relaxed);
	while (cur < end && !atomic_compare_exchange_weak_explicit(&f->eof, &cur, end,
								   memory_order_release,
								   memory_order_relaxed))
		;
	return 0;
}

static int file_write(void *userdata, uint64_t off, const void *buf, size_t len)
{
	int saved = errno, r;

	r = do_write(userdata, off, buf, len);
	errno = saved;
	return r;
}

static void file_close(void *userdata)
{
	struct file_store *f = userdata;

	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	if (f->fd_buffered >= 0)
		close(f->fd_buffered);
	free(f);
}

static int load_opts(const struct fl_store_file_opts *src, struct fl_store_file_opts *o)
{
	const size_t sz = src->sz;
	int r;

	r = fl__opts_check(src, sizeof(*o), "fl_store_file_open");
	if (r < 0)
		return r;
	r = fl__opt_has(sz, offsetof(struct fl_store_file_opts, offset), sizeof(o->offset));
	if (r < 0)
		return fl__einval("fl_store_file_open", "opts sz %zu ends inside a field", sz);
	if (r)
		o->offset = src->offset;
	r = fl__opt_has(sz, offsetof(struct fl_store_file_opts, size), sizeof(o->size));
	if (r < 0)
		return fl__einval("fl_store_file_open", "opts sz %zu ends inside a field", sz);
	if (r)
		o->size = src->size;
	r = fl__opt_has(sz, offsetof(struct fl_store_file_opts, flags), sizeof(o->flags));
	if (r < 0)
		return fl__einval("fl_store_file_open", "opts sz %zu ends inside a field", sz);
	if (r)
		o->flags = src->flags;
	return 0;
}

/*
 * Open the file behind @fd a second time with O_DIRECT (through /proc, so
 * that it is the same file even if @path was renamed meanwhile).
 */
static int reopen_direct(int fd, const char *path, int oflags, const struct stat *st)
{
	char self[64];
	struct stat st2;
	int dfd, err;

	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	dfd = open(self, oflags | O_DIRECT);
	if (dfd < 0 && errno == ENOENT)	/* no /proc mounted */
		dfd = open(path, oflags | O_DIRECT);
	if (dfd < 0) {
		err = errno;
		if (err == EINVAL) {
			fl__err("%s: the file system does not support O_DIRECT", path);
			return -EOPNOTSUPP;
		}
		return -err;
	}
	if (fstat(dfd, &st2) < 0 || st2.st_dev != st->st_dev || st2.st_ino != st->st_ino) {
		close(dfd);
		fl__err("%s: replaced while being opened", path);
		return -ESTALE;
	}
	return dfd;
}

FL_API int fl_store_file_open(const char *path, const struct fl_store_file_opts *opts,
			      struct fl_store **ret)
{
	struct fl_store_file_opts o = { .sz = sizeof(o) };
	struct fl_store_ops ops = {
		.sz = sizeof(ops),
		.read = file_read,
		.write = file_write,
		.close = file_close,
	};
	struct file_store *f;
	uint32_t caps = FL_STORE_HOLES;
	uint64_t file_size, size;
	struct stat st;
	int oflags, r;
	off_t end;

	if (!path || !ret)
		return fl__einval(__func__, "%s is NULL", !path ? "path" : "ret");
	if (opts) {
		r = load_opts(opts, &o);
		if (r < 0)
			return r;
	}
	if (o.flags & ~(uint32_t)FILE_FLAGS_ALL)
		return fl__einval(__func__, "unknown flags %#x", o.flags & ~(uint32_t)FILE_FLAGS_ALL);
	if ((o.flags & FL_STORE_FILE_CREATE) && (!(o.flags & FL_STORE_FILE_WRITABLE) || !o.size))
		return fl__einval(__func__, "FL_STORE_FILE_CREATE needs FL_STORE_FILE_WRITABLE and "
				  "a size");
	if (o.offset > INT64_MAX || o.size > INT64_MAX - o.offset)
		return fl__einval(__func__, "offset %llu + size %llu is past the largest file",
				  (unsigned long long)o.offset, (unsigned long long)o.size);

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	*f = (struct file_store){ .fd = -1, .fd_buffered = -1, .base = o.offset };
	oflags = O_CLOEXEC | (o.flags & FL_STORE_FILE_WRITABLE ? O_RDWR : O_RDONLY);
	f->fd = open(path, oflags | (o.flags & FL_STORE_FILE_CREATE ? O_CREAT : 0), 0644);
	if (f->fd < 0) {
		r = -errno;
		goto fail;
	}
	if (fstat(f->fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (S_ISREG(st.st_mode)) {
		file_size = (uint64_t)st.st_size;
	} else if (S_ISBLK(st.st_mode)) {
		f->blockdev = true;
		end = lseek(f->fd, 0, SEEK_END);
		if (end < 0) {
			r = -errno;
			goto fail;
		}
		file_size = (uint64_t)end;
	} else {
		fl__err("%s: not a regular file or block device", path);
		r = -EINVAL;
		goto fail;
	}
	if (o.flags & FL_STORE_FILE_DIRECT) {
		f->fd_buffered = f->fd;
		f->fd = reopen_direct(f->fd_buffered, path, oflags, &st);
		if (f->fd < 0) {
			r = f->fd;
			goto fail;
		}
	}
	size = o.size;
	if (!size) {
		/* To the end of the file, the last partial page included (its tail reads as zeros). */
		if (file_size <= o.offset) {
			fl__err("%s: nothing past offset %llu to serve", path,
				(unsigned long long)o.offset);
			r = -EINVAL;
			goto fail;
		}
		size = file_size - o.offset;
		size = (size + FL__STORE_MIN_PAGE - 1) & ~(uint64_t)(FL__STORE_MIN_PAGE - 1);
	}
	atomic_init(&f->eof, file_size);
	/*
	 * A file without holes where the store starts, up to its end or the
	 * file's, is read without looking for holes again: on some file systems
	 * (tmpfs) SEEK_HOLE walks every page from the offset to the next hole,
	 * the end of the file, which cost each read of a dense file of a few GiB
	 * milliseconds. A hole punched later then reads as the zeros it holds.
	 */
	if (!f->blockdev) {
		off_t h = lseek(f->fd, (off_t)o.offset, SEEK_HOLE);
		uint64_t stop = o.offset + size < file_size ? o.offset + size : file_size;

		if (h >= 0 && (uint64_t)h >= stop)
			atomic_store_explicit(&f->no_seek, true, memory_order_relaxed);
	}
	if (!(o.flags & FL_STORE_FILE_WRITABLE)) {
		ops.write = NULL;
		caps |= FL_STORE_READONLY;
	}
	r = fl_store_create(&ops, f, caps, size, ret);
	if (r < 0)
		goto fail;
	fl__store_set_advise(*ret, file_advise);
	return 0;
fail:
	file_close(f);
	return r;
}
