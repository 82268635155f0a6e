/* SPDX-License-Identifier: MIT */
/* The pattern store: a deterministic word per 8-byte offset, for tests and benchmarks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "faultline.h"
#include "internal.h"
#include "store-internal.h"

/*
 * A 64-bit finalizer of the splitmix64 kind: a bijection in which every input
 * bit affects every output bit. Each word is mix(key ^ offset), where key is
 * the seed mixed once: with seed ^ offset alone, seeds that differ only in
 * low bits would give shifted copies of one pattern.
 */
static inline uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t seed_key(uint64_t seed)
{
	return mix(seed + 0x9e3779b97f4a7c15ull);
}

FL_API uint64_t fl_pattern_word(uint64_t seed, uint64_t off)
{
	return mix(seed_key(seed) ^ (off & ~7ull));
}

/* The byte at any offset: the one a native 8-byte store of its word puts there. */
static inline uint8_t pattern_byte(uint64_t key, uint64_t o)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	unsigned int shift = 8 * (7 - (unsigned int)(o & 7));
#else
	unsigned int shift = 8 * (unsigned int)(o & 7);
#endif
	return (uint8_t)(mix(key ^ (o & ~7ull)) >> shift);
}

/*
 * Async-signal-safe (pure computation). Any offset and length work; the
 * words in the middle are written 8 bytes at a time, four independent
 * chains per step so the multiplier stays busy.
 */
FL_API void fl_pattern_fill(void *buf, uint64_t off, size_t len, uint64_t seed)
{
	const uint64_t key = seed_key(seed);
	uint8_t *p = buf;
	uint64_t w[4];

	while (len && (off & 7)) {
		*p++ = pattern_byte(key, off++);
		len--;
	}
	/* One memcpy per word: a 32-byte copy of a stack array would stall on store forwarding. */
	for (; len >= 32; len -= 32, off += 32, p += 32) {
		w[0] = mix(key ^ off);
		w[1] = mix(key ^ (off + 8));
		w[2] = mix(key ^ (off + 16));
		w[3] = mix(key ^ (off + 24));
		memcpy(p, &w[0], 8);
		memcpy(p + 8, &w[1], 8);
		memcpy(p + 16, &w[2], 8);
		memcpy(p + 24, &w[3], 8);
	}
	for (; len >= 8; len -= 8, off += 8, p += 8) {
		w[0] = mix(key ^ off);
		memcpy(p, &w[0], 8);
	}
	while (len) {
		*p++ = pattern_byte(key, off++);
		len--;
	}
}

FL_API uint64_t fl_pattern_check(const void *buf, uint64_t off, size_t len, uint64_t seed)
{
	const uint64_t key = seed_key(seed);
	const uint8_t *p = buf;
	size_t i = 0;
	uint64_t got, want;

	while (i < len && ((off + i) & 7)) {
		if (p[i] != pattern_byte(key, off + i))
			return i + 1;
		i++;
	}
	/* Four words per step, compared at once; on a difference the byte loop below finds it. */
	for (; len - i >= 32; i += 32) {
		uint64_t g[4], diff = 0;

		memcpy(g, p + i, 32);
		for (int k = 0; k < 4; k++)
			diff |= g[k] ^ mix(key ^ (off + i + 8 * (uint64_t)k));
		if (diff)
			break;
	}
	for (; len - i >= 8; i += 8) {
		memcpy(&got, p + i, 8);
		want = mix(key ^ (off + i));
		if (got != want)
			break;
	}
	for (; i < len; i++)
		if (p[i] != pattern_byte(key, off + i))
			return i + 1;
	return 0;
}

static int pattern_read(void *userdata, uint64_t off, void *buf, size_t len, size_t page_size,
			uint64_t *holes)
{
	(void)page_size;
	(void)holes;
	fl_pattern_fill(buf, off, len, *(const uint64_t *)userdata);
	return 0;
}

static void pattern_close(void *userdata)
{
	free(userdata);
}

FL_API int fl_store_pattern_create(uint64_t size, uint64_t seed, struct fl_store **ret)
{
	static const struct fl_store_ops ops = {
		.sz = sizeof(ops),
		.read = pattern_read,
		.close = pattern_close,
	};
	uint64_t *s;
	int r;

	if (!ret)
		return fl__einval(__func__, "ret is NULL");
	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	*s = seed;
	r = fl_store_create(&ops, s, FL_STORE_READONLY, size, ret);
	if (r < 0)
		free(s);
	return r;
}
