/* SPDX-License-Identifier: MIT */
/* The statistics `faultline bench` reports with: percentiles, medians, spreads, log histograms. */
#include "../bench/stats.h"
#include "tests.h"

TEST(bench_percentiles_and_median)
{
	uint64_t v[100], one = 42;
	double odd[] = { 3, 1, 2 }, even[] = { 4, 1, 3, 2 }, runs[] = { 5, 9, 1, 7, 3 };
	struct stats_spread s;

	/* 100..1 shuffled by reversal: sorting must restore 1..100. */
	for (int i = 0; i < 100; i++)
		v[i] = (uint64_t)(100 - i);
	stats_sort_u64(v, 100);
	for (int i = 0; i < 100; i++)
		T_ASSERT_EQ(v[i], i + 1);
	/* Nearest rank: the smallest value with at least p% of the values at or below it. */
	T_ASSERT_EQ(stats_percentile(v, 100, 50), 50);
	T_ASSERT_EQ(stats_percentile(v, 100, 90), 90);
	T_ASSERT_EQ(stats_percentile(v, 100, 99), 99);
	T_ASSERT_EQ(stats_percentile(v, 100, 99.9), 100);
	T_ASSERT_EQ(stats_percentile(v, 100, 100), 100);
	T_ASSERT_EQ(stats_percentile(v, 100, 0.5), 1);
	T_ASSERT_EQ(stats_percentile(&one, 1, 50), 42);
	T_ASSERT_EQ(stats_percentile(v, 0, 50), 0);
	T_ASSERT_EQ(stats_mean_u64(v, 100) * 2, 101);

	T_ASSERT(stats_median(odd, 3) == 2);
	T_ASSERT(stats_median(even, 4) == 2.5);
	T_ASSERT(stats_median(even, 0) == 0);
	s = stats_spread_of(runs, 5, runs);
	T_ASSERT(s.median == 5 && s.min == 1 && s.max == 9);
}

TEST(bench_log_histogram)
{
	uint64_t v[] = { 0, 1, 9, 10, 99, 100, 1000, 999999999999ull };
	uint64_t counts[40] = { 0 };
	uint64_t total = 0;

	/* 10 buckets per decade: [10^(b/10), 10^((b+1)/10)). */
	T_ASSERT_EQ(stats_log_bucket(0, 10, 40), 0);
	T_ASSERT_EQ(stats_log_bucket(1, 10, 40), 0);
	T_ASSERT_EQ(stats_log_bucket(10, 10, 40), 10);
	T_ASSERT_EQ(stats_log_bucket(9, 10, 40), 9);
	T_ASSERT_EQ(stats_log_bucket(100, 10, 40), 20);
	T_ASSERT_EQ(stats_log_bucket(1000, 10, 40), 30);
	T_ASSERT_EQ(stats_log_bucket(999, 10, 40), 29);
	/* Past the last bucket: clamped into it. */
	T_ASSERT_EQ(stats_log_bucket(999999999999ull, 10, 40), 39);
	/* Every value lies within its bucket's edges. */
	for (uint64_t x = 2; x < 100000; x = x * 3 / 2 + 1) {
		size_t b = stats_log_bucket(x, 20, 200);

		T_ASSERT(stats_log_edge(b, 20) <= (double)x * (1 + 1e-12));
		T_ASSERT((double)x < stats_log_edge(b + 1, 20));
	}
	stats_log_hist(v, 8, 10, counts, 40);
	for (size_t b = 0; b < 40; b++)
		total += counts[b];
	T_ASSERT_EQ(total, 8);
	T_ASSERT_EQ(counts[0], 2);
	T_ASSERT_EQ(counts[39], 1);
}
