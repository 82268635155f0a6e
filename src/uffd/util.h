/* SPDX-License-Identifier: MIT */
/*
 * Small helpers every layer uses, defined once here in the lowest layer
 * (never installed): clocks, log2 histograms, bitmaps. Header-only, so the
 * tools, the bench and the tests can use them too.
 */
#ifndef FL_UTIL_H
#define FL_UTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* ----------------------------------------------------------------- clocks */

/* CLOCK_MONOTONIC in nanoseconds and in milliseconds. */
static inline uint64_t fl__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t fl__now_ms(void)
{
	return fl__now_ns() / 1000000u;
}

/*
 * The absolute time @ns from now on @clk, for the timed waits that take one
 * (pthread_cond_timedwait: CLOCK_REALTIME unless the condition says else).
 */
static inline struct timespec fl__abstime_in(clockid_t clk, uint64_t ns)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	ts.tv_sec += (time_t)(ns / 1000000000u);
	ts.tv_nsec += (long)(ns % 1000000000u);
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

/* --------------------------------------------------------- log2 histograms */

/*
 * Bucket i of a log2 histogram counts values of [2^i, 2^(i+1)); bucket 0
 * also counts 0 and the last of @nbuckets everything above.
 */
static inline unsigned int fl__log2_bucket(uint64_t v, unsigned int nbuckets)
{
	unsigned int b = v ? 63u - (unsigned int)__builtin_clzll(v) : 0;

	return b < nbuckets ? b : nbuckets - 1;
}

/* The bucket holding the @pct-th percentile of @h (@nbuckets buckets), or -1 if it is empty. */
static inline int fl__log2_pct_bucket(const uint64_t *h, unsigned int nbuckets, double pct)
{
	uint64_t n = 0, seen = 0;

	for (unsigned int b = 0; b < nbuckets; b++)
		n += h[b];
	if (!n)
		return -1;
	for (unsigned int b = 0; b < nbuckets; b++) {
		seen += h[b];
		if ((double)seen >= pct / 100 * (double)n)
			return (int)b;
	}
	return (int)nbuckets - 1;
}

/* ---------------------------------------------------------------- bitmaps */

/* Bitmaps are arrays of 64-bit words, bit i in word i / 64 at i % 64. */
static inline bool fl__bit_test(const uint64_t *map, size_t i)
{
	return map[i / 64] >> (i % 64) & 1;
}

static inline void fl__bit_set(uint64_t *map, size_t i)
{
	map[i / 64] |= 1ull << (i % 64);
}

/*
 * Walking a range of bits a word at a time: the bits of [@start, @end) that
 * lie in the word of @start, as a mask of that word, and in *@ret_n how many
 * they are (step @start by it).
 */
static inline uint64_t fl__bits_word_mask(uint64_t start, uint64_t end, uint64_t *ret_n)
{
	uint64_t bit = start % 64, k = 64 - bit < end - start ? 64 - bit : end - start;

	*ret_n = k;
	return (k == 64 ? ~0ull : ((1ull << k) - 1)) << bit;
}

/* Set bits [@start, @start+@n) of @map. */
static inline void fl__bitmap_set_range(uint64_t *map, size_t start, size_t n)
{
	for (uint64_t i = start, k; i < start + n; i += k)
		map[i / 64] |= fl__bits_word_mask(i, start + n, &k);
}

/*
 * The same over _Atomic words, for bitmaps shared between threads; sets and
 * clears return the previous value of the bit.
 */
static inline bool fl__bm_test(const _Atomic uint64_t *bm, uint64_t i)
{
	return (atomic_load(&bm[i / 64]) >> (i % 64)) & 1;
}

static inline bool fl__bm_set(_Atomic uint64_t *bm, uint64_t i)
{
	uint64_t bit = 1ull << (i % 64);

	return atomic_fetch_or(&bm[i / 64], bit) & bit;
}

static inline bool fl__bm_clear(_Atomic uint64_t *bm, uint64_t i)
{
	uint64_t bit = 1ull << (i % 64);

	return atomic_fetch_and(&bm[i / 64], ~bit) & bit;
}

/* The first clear bit in [from, n), or n. */
static inline uint64_t fl__bm_next_clear(const _Atomic uint64_t *bm, uint64_t from, uint64_t n)
{
	uint64_t w = from / 64;

	if (from >= n)
		return n;
	for (uint64_t v = ~atomic_load_explicit(&bm[w], memory_order_relaxed) &
			  (~0ull << (from % 64));
	     ; v = ~atomic_load_explicit(&bm[w], memory_order_relaxed)) {
		if (v) {
			uint64_t i = w * 64 + (uint64_t)__builtin_ctzll(v);

			return i < n ? i : n;
		}
		if (++w * 64 >= n)
			return n;
	}
}

/* How many bits of [0, n) are set. */
static inline uint64_t fl__bm_count(const _Atomic uint64_t *bm, uint64_t n)
{
	uint64_t c = 0, words = n / 64;

	for (uint64_t w = 0; w < words; w++)
		c += (uint64_t)__builtin_popcountll(atomic_load_explicit(&bm[w],
									 memory_order_relaxed));
	if (n % 64)
		c += (uint64_t)__builtin_popcountll(atomic_load_explicit(&bm[words],
									 memory_order_relaxed) &
						    ((1ull << (n % 64)) - 1));
	return c;
}

/* A zeroed bitmap of @n bits (one spare word), or NULL. */
static inline _Atomic uint64_t *fl__bm_alloc(uint64_t n)
{
	return calloc((size_t)(n / 64 + 1), sizeof(_Atomic uint64_t));
}

#endif /* FL_UTIL_H */
