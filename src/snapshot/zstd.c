/* SPDX-License-Identifier: MIT */
/* zstd for snapshot chunks: libzstd when the build found it (FL_HAVE_ZSTD), else stubs. */
#include <errno.h>
#include <stddef.h>

#include "snapshot/snap-int.h"

#ifdef FL_HAVE_ZSTD
#define ZSTD_STATIC_LINKING_ONLY	/* ZSTD_initStaticDCtx: a context in our memory */
#include <zstd.h>

bool fl__snap_zstd_available(void)
{
	return true;
}

size_t fl__snap_zstd_bound(size_t n)
{
	return ZSTD_compressBound(n);
}

int fl__snap_zstd_compress(void *dst, size_t cap, const void *src, size_t n, int level,
			   size_t *ret_len)
{
	size_t r = ZSTD_compress(dst, cap, src, n, level ? level : ZSTD_CLEVEL_DEFAULT);

	if (ZSTD_isError(r))
		return -EIO;
	*ret_len = r;
	return 0;
}

size_t fl__snap_zstd_dctx_size(void)
{
	return ZSTD_estimateDCtxSize();
}

int fl__snap_zstd_decompress(void *ctx_mem, size_t ctx_size, void *dst, size_t rlen,
			     const void *src, size_t clen)
{
	ZSTD_DCtx *d = ZSTD_initStaticDCtx(ctx_mem, ctx_size);
	size_t r;

	if (!d)
		return -EIO;
	r = ZSTD_decompressDCtx(d, dst, rlen, src, clen);
	if (ZSTD_isError(r) || r != rlen)
		return -EIO;
	return 0;
}

#else

bool fl__snap_zstd_available(void)
{
	return false;
}

size_t fl__snap_zstd_bound(size_t n)
{
	return n;
}

int fl__snap_zstd_compress(void *dst, size_t cap, const void *src, size_t n, int level,
			   size_t *ret_len)
{
	(void)dst, (void)cap, (void)src, (void)n, (void)level, (void)ret_len;
	return -EOPNOTSUPP;
}

size_t fl__snap_zstd_dctx_size(void)
{
	return 0;
}

int fl__snap_zstd_decompress(void *ctx_mem, size_t ctx_size, void *dst, size_t rlen,
			     const void *src, size_t clen)
{
	(void)ctx_mem, (void)ctx_size, (void)dst, (void)rlen, (void)src, (void)clen;
	return -EOPNOTSUPP;
}
#endif
