/* SPDX-License-Identifier: MIT */
/* Benchmark statistics: percentiles, medians, log-scale histograms (header-only, for the tests). */
#ifndef FL_BENCH_STATS_H
#define FL_BENCH_STATS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/*
 * Header-only so that the test runner, which links the test files and
 * libfaultline.a but not bench/, can test exactly the code the benchmarks use.
 */

static inline int stats_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static inline void stats_sort_u64(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), stats_cmp_u64);
}

/*
 * The @p-th percentile (0 < p <= 100) of @n sorted values, nearest rank:
 * the smallest value such that at least p% of the values are <= it.
 * 0 for n == 0.
 */
static inline uint64_t stats_percentile(const uint64_t *sorted, size_t n, double p)
{
	double rank;
	size_t i;

	if (!n)
		return 0;
	rank = ceil(p / 100.0 * (double)n - 1e-9);
	i = rank < 1 ? 0 : (size_t)rank - 1;
	return sorted[i < n ? i : n - 1];
}

static inline double stats_mean_u64(const uint64_t *v, size_t n)
{
	long double sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += v[i];
	return n ? (double)(sum / n) : 0;
}

/*
 * The median of @n doubles (the mean of the two middle ones when n is
 * even); sorts @v in place (insertion sort: n is a number of runs). 0 for n == 0.
 */
static inline double stats_median(double *v, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		double x = v[i];
		size_t j = i;

		for (; j > 0 && v[j - 1] > x; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
	if (!n)
		return 0;
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Median, minimum and maximum of one metric over the runs. */
struct stats_spread {
	double median;
	double min;
	double max;
};

/* The spread of @n values; @scratch (n doubles) may alias @v, which is then sorted. */
static inline struct stats_spread stats_spread_of(const double *v, size_t n, double *scratch)
{
	struct stats_spread s = { 0, 0, 0 };

	for (size_t i = 0; i < n; i++)
		scratch[i] = v[i];
	s.median = stats_median(scratch, n);
	if (n) {
		s.min = scratch[0];
		s.max = scratch[n - 1];
	}
	return s;
}

/*
 * Log-scale histogram: bucket b holds values in [10^(b/per_decade),
 * 10^((b+1)/per_decade)). Values below 1 go to bucket 0; values past the
 * last bucket go to the last one.
 */
static inline size_t stats_log_bucket(uint64_t v, unsigned per_decade, size_t n_buckets)
{
	double b;

	if (v <= 1 || !n_buckets)
		return 0;
	/* The epsilon keeps exact powers of ten (log10(1000) * 10 = 30) in their own bucket. */
	b = floor(log10((double)v) * per_decade + 1e-9);
	return b >= (double)n_buckets ? n_buckets - 1 : (size_t)b;
}

/* The lower edge of bucket @b. */
static inline double stats_log_edge(size_t b, unsigned per_decade)
{
	return pow(10.0, (double)b / per_decade);
}

/* Add @n values to @counts (n_buckets long). */
static inline void stats_log_hist(const uint64_t *v, size_t n, unsigned per_decade,
				  uint64_t *counts, size_t n_buckets)
{
	for (size_t i = 0; i < n; i++)
		counts[stats_log_bucket(v[i], per_decade, n_buckets)]++;
}

#endif /* FL_BENCH_STATS_H */
