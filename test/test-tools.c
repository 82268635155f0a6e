/* SPDX-License-Identifier: MIT */
/* The faultline command: exit codes, usage errors, and the probe's table and JSON. */
#include <ctype.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

/* Run the tool with @argv (NULL-terminated, argv[0] ignored), capturing stdout and stderr. */
static void run_tool(struct t_run *r, char *const argv[])
{
	char path[PATH_MAX];

	t_tool_path(path, sizeof(path));
	t_run_capture(r, path, argv, NULL);
}

/* A strict little JSON validator: returns the end of one value, or NULL. */
static const char *json_value(const char *p, int depth);

static const char *json_ws(const char *p)
{
	while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
		p++;
	return p;
}

static const char *json_string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	while (*p && *p != '"') {
		if ((unsigned char)*p < 0x20)
			return NULL;
		if (*p == '\\') {
			p++;
			if (!strchr("\"\\/bfnrtu", *p) || !*p)
				return NULL;
		}
		p++;
	}
	return *p == '"' ? p + 1 : NULL;
}

static const char *json_number(const char *p)
{
	const char *s = p;

	if (*p == '-')
		p++;
	if (!isdigit((unsigned char)*p))
		return NULL;
	while (isdigit((unsigned char)*p))
		p++;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return NULL;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!isdigit((unsigned char)*p))
			return NULL;
		while (isdigit((unsigned char)*p))
			p++;
	}
	return p > s ? p : NULL;
}

static const char *json_seq(const char *p, int depth, char close, bool object)
{
	p = json_ws(p + 1);
	if (*p == close)
		return p + 1;
	for (;;) {
		if (object) {
			p = json_string(json_ws(p));
			if (!p)
				return NULL;
			p = json_ws(p);
			if (*p++ != ':')
				return NULL;
		}
		p = json_value(p, depth + 1);
		if (!p)
			return NULL;
		p = json_ws(p);
		if (*p == close)
			return p + 1;
		if (*p++ != ',')
			return NULL;
	}
}

static const char *json_value(const char *p, int depth)
{
	if (depth > 64)
		return NULL;
	p = json_ws(p);
	switch (*p) {
	case '{':
		return json_seq(p, depth, '}', true);
	case '[':
		return json_seq(p, depth, ']', false);
	case '"':
		return json_string(p);
	case 't':
		return strncmp(p, "true", 4) ? NULL : p + 4;
	case 'f':
		return strncmp(p, "false", 5) ? NULL : p + 5;
	case 'n':
		return strncmp(p, "null", 4) ? NULL : p + 4;
	default:
		return json_number(p);
	}
}

static bool json_valid(const char *doc)
{
	const char *end = json_value(doc, 0);

	return end && *json_ws(end) == '\0';
}

TEST(tool_usage_errors)
{
	static struct t_run r;
	char *none[] = { "faultline", NULL };
	char *unknown[] = { "faultline", "frobnicate", NULL };
	char *badopt[] = { "faultline", "probe", "--bogus", NULL };
	char *extra[] = { "faultline", "probe", "stray", NULL };

	run_tool(&r, none);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "no command") != NULL);
	run_tool(&r, unknown);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "unknown command 'frobnicate'") != NULL);
	run_tool(&r, badopt);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "--bogus") != NULL);
	run_tool(&r, extra);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "stray") != NULL);
}

TEST(tool_help_and_version)
{
	static struct t_run r;
	char *help[] = { "faultline", "--help", NULL };
	char *version[] = { "faultline", "--version", NULL };
	char *probe_help[] = { "faultline", "probe", "--help", NULL };
	char want[64];

	run_tool(&r, help);
	T_ASSERT_EQ(r.status, 0);
	T_ASSERT(strstr(r.out, "usage: faultline") != NULL);
	T_ASSERT(strstr(r.out, "probe") != NULL);
	run_tool(&r, version);
	T_ASSERT_EQ(r.status, 0);
	snprintf(want, sizeof(want), "faultline %s\n", fl_version());
	T_ASSERT(!strcmp(r.out, want));
	run_tool(&r, probe_help);
	T_ASSERT_EQ(r.status, 0);
	T_ASSERT(strstr(r.out, "--json") != NULL);
}

/* Each benchmark has its own help, and its usage errors point to it. */
TEST(tool_bench_help_each)
{
	static const char *const names[] = { "latency", "fill", "threads", "uffd", "migrate",
					     "monitor", "snapshot", "outofcore",
					     "remote" };
	static struct t_run r;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *help[] = { "faultline", "bench", (char *)names[i], "--help", NULL };
		char *bad[] = { "faultline", "bench", (char *)names[i], "--no-such-option", NULL };
		char want[96];

		run_tool(&r, help);
		T_ASSERT_EQ(r.status, 0);
		snprintf(want, sizeof(want), "usage: faultline bench %s ", names[i]);
		if (strncmp(r.out, want, strlen(want)))
			t_fail(__FILE__, __LINE__, "bench %s --help printed: %.120s", names[i],
			       r.out);
		run_tool(&r, bad);
		T_ASSERT_EQ(r.status, 2);
		snprintf(want, sizeof(want), "Try 'faultline bench %s --help'.", names[i]);
		if (!strstr(r.err, want))
			t_fail(__FILE__, __LINE__, "bench %s --no-such-option said: %.200s",
			       names[i], r.err);
	}
	{
		char *help[] = { "faultline", "bench", "--help", NULL };

		run_tool(&r, help);
		T_ASSERT_EQ(r.status, 0);
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			T_ASSERT(strstr(r.out, names[i]) != NULL);
	}
}

/* bench latency measures the floors in the same run and reads each mode against its own. */
TEST(tool_bench_latency_floors)
{
	static const char *const floors[] = { "syscall", "bare-sigbus", "bare-thread-same" };
	static struct t_run r;
	char *json[] = { "faultline", "bench", "latency", "--pages", "300", "--runs", "1", "--json",
			 NULL };
	char *table[] = { "faultline", "bench", "latency", "--pages", "300", "--runs", "1",
			  "--modes", "native,sigbus,bare-sigbus,thread,bare-thread-same,seed", NULL };
	char key[96];

	run_tool(&r, json);
	T_ASSERT_EQ(r.status, 0);
	T_ASSERT(json_valid(r.out));
	for (size_t i = 0; i < sizeof(floors) / sizeof(floors[0]); i++) {
		snprintf(key, sizeof(key), "{\"mode\":\"%s\",\"mean_ns\":", floors[i]);
		T_ASSERT(strstr(r.out, key) != NULL);
	}
	/* A second CPU gives the other floor; one CPU leaves it out, saying why. */
	if (sysconf(_SC_NPROCESSORS_ONLN) > 1)
		T_ASSERT(strstr(r.out, "{\"mode\":\"bare-thread-other\",") != NULL);
	else
		T_ASSERT(strstr(r.err, "left out bare-thread-other") != NULL);
	T_ASSERT(strstr(r.out, "\"machine_kind\":\"") != NULL);
	T_ASSERT(strstr(r.out, "\"seed_uffd\":\"the userfaultfd syscall") != NULL ||
		 strstr(r.out, "\"seed_uffd\":\"/dev/userfaultfd\"") != NULL);
	T_ASSERT(strstr(r.out, "{\"name\":\"sigbus/bare-sigbus p50\",") != NULL);
	T_ASSERT(strstr(r.out, "{\"name\":\"thread/bare-thread-same p50\",") != NULL);

	run_tool(&r, table);
	T_ASSERT_EQ(r.status, 0);
	T_ASSERT(strstr(r.out, "p50/floor") != NULL);
	T_ASSERT(strstr(r.out, "x bare-sigbus\n") != NULL);	/* sigbus's row */
	T_ASSERT(strstr(r.out, "x bare-thread-same\n") != NULL);
	T_ASSERT(strstr(r.out, "kind of machine, from the floors: ") != NULL);
	T_ASSERT(strstr(r.out, "  sigbus/bare-sigbus ") != NULL);
	T_ASSERT(strstr(r.out, "  thread/seed ") != NULL);
}

/* The number after "KEY": in @s at or after @from (a spread's median if KEY holds one); -1. */
static double json_num_after(const char *s, const char *from, const char *key)
{
	char k[96];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(from ? from : s, k);
	if (!p)
		return -1;
	p += strlen(k);
	if (!strncmp(p, "{\"median\":", 10))
		p += 10;
	return strtod(p, NULL);
}

/* The row @name of bench snapshot's JSON, or NULL. */
static const char *snap_row(const char *out, const char *name)
{
	char k[96];

	snprintf(k, sizeof(k), "{\"name\":\"%s\",", name);
	return strstr(out, k);
}

/*
 * bench migrate, tiny: both copies (plain TCP and TLS) and the migrations
 * over TLS and in plain TCP run in one invocation and report their totals
 * against the copy of their own transport, with the kind of machine.
 */
TEST(tool_bench_migrate_tiny)
{
	static struct t_run r;
	char *json[] = { "faultline", "bench", "migrate", "--size", "8M", "--runs", "1",
			 "--scale", "0", "--configs", "postcopy,postcopy-plain", "--json", NULL };
	static const char *const rows[] = { "\"tcp\":{", "\"tls\":{", "\"postcopy-plain\":{",
					    "\"postcopy\":{" };

	run_tool(&r, json);
	if (r.status != 0)
		t_fail(__FILE__, __LINE__, "bench migrate failed (%d): %.300s", r.status, r.err);
	T_ASSERT(json_valid(r.out));
	T_ASSERT(strstr(r.out, "\"benchmark\":\"migrate\"") != NULL);
	T_ASSERT(strstr(r.out, "\"kind\":\"") != NULL);
	T_ASSERT(strstr(r.out, "\"transport\":\"TLS 1.3 PSK") != NULL);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *row = strstr(r.out, rows[i]);

		T_ASSERT(row != NULL);
		T_ASSERT(json_num_after(r.out, row, "total_s") > 0);
		if (i >= 2)
			T_ASSERT(json_num_after(r.out, row, "total_vs_copy") > 0);
	}
	/* Nothing else was asked for. */
	T_ASSERT(strstr(r.out, "\"hybrid\"") == NULL);
}

/*
 * bench snapshot, tiny: the output parses and its counts are what the
 * workload implies (never its times): 10% of 1024 pages is 102 pages, each
 * faulted once by demand paging, none by the eager restore, and every page
 * of a replay either faulted or prefetched; the incremental snapshot holds
 * the 5% of pages written.
 */
TEST(tool_bench_snapshot_tiny)
{
	static struct t_run r;
	char dir[] = "/tmp/fl-test-bench-XXXXXX";
	char *json[] = { "faultline", "bench", "snapshot", "--size", "4M", "--runs", "1",
			 "--live-scale", "2", "--dir", dir, "--json", NULL };
	char *table[] = { "faultline", "bench", "snapshot", "--size", "4M", "--runs", "2",
			  "--ws-percent", "5", "--live-scale", "0", NULL };
	char *bad[] = { "faultline", "bench", "snapshot", "--size", "3M", NULL };
	static const char *const rows[] = { "memory-resident", "eager", "demand-4k",
					    "demand+adaptive", "ws-replay", "loading-set",
					    "mmap-file", "seq-eager", "seq-demand-auto",
					    "seq-mmap-file" };
	const char *row;

	T_ASSERT(mkdtemp(dir) != NULL);
	run_tool(&r, json);
	if (r.status != 0)
		t_fail(__FILE__, __LINE__, "bench snapshot failed (%d): %.300s", r.status, r.err);
	T_ASSERT(json_valid(r.out));
	T_ASSERT(strstr(r.out, "\"benchmark\":\"snapshot\"") != NULL);
	T_ASSERT(strstr(r.out, "\"machine_kind\":\"") != NULL);
	T_ASSERT_EQ((long)json_num_after(r.out, NULL, "ws_pages"), 102);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		row = snap_row(r.out, rows[i]);
		T_ASSERT(row != NULL);
		T_ASSERT(json_num_after(r.out, row, "secs") > 0);
	}
	T_ASSERT_EQ((long)json_num_after(r.out, snap_row(r.out, "demand-4k"), "faults"), 102);
	T_ASSERT_EQ((long)json_num_after(r.out, snap_row(r.out, "eager"), "faults"), 0);
	T_ASSERT_EQ((long)json_num_after(r.out, snap_row(r.out, "seq-eager"), "faults"), 0);
	T_ASSERT(json_num_after(r.out, snap_row(r.out, "demand+adaptive"), "faults") <= 102);
	T_ASSERT(json_num_after(r.out, snap_row(r.out, "demand+adaptive"), "faults") >= 1);
	for (int k = 0; k < 2; k++) {
		const char *n = k ? "loading-set" : "ws-replay";
		double f = json_num_after(r.out, snap_row(r.out, n), "faults");
		double pf = json_num_after(r.out, snap_row(r.out, n), "ws_prefetched");
		double sk = json_num_after(r.out, snap_row(r.out, n), "ws_skipped");

		T_ASSERT(f >= 0 && f <= 102);
		T_ASSERT(pf >= 0 && pf <= 102);
		/*
		 * Every page of the working set, once the replay ended: installed
		 * by it, or reached first by a fault (the fault's own count can
		 * be lower: one fault may bring in a run of several pages).
		 */
		if (pf + sk != 102)
			t_fail(__FILE__, __LINE__, "%s: %.0f prefetched + %.0f skipped != 102 "
			       "(%.0f faults)", n, pf, sk, f);
	}
	/* The live rows: the incremental snapshot saved exactly the 5% written (51 pages). */
	T_ASSERT(strstr(r.out, "\"live\":{\"writer_threads\":2,\"scale\":2,") != NULL);
	row = snap_row(r.out, "incremental");
	T_ASSERT(row != NULL);
	T_ASSERT_EQ((long)json_num_after(r.out, row, "pages"), 51);
	T_ASSERT(json_num_after(r.out, row, "file_bytes") < 4 * 1024 * 1024);
	for (int k = 0; k < 3; k++) {
		static const char *const live[] = { "live", "fork+write", "live-big" };

		row = snap_row(r.out, live[k]);
		T_ASSERT(row != NULL);
		T_ASSERT(json_num_after(r.out, row, "pause_secs") > 0);
		T_ASSERT(json_num_after(r.out, row, "snapshot_secs") >=
			 json_num_after(r.out, row, "pause_secs"));
		T_ASSERT(json_num_after(r.out, row, "writes_per_s_without") > 0);
	}
	/* fork: what the parent's writers copied, at most the memory. */
	T_ASSERT(json_num_after(r.out, snap_row(r.out, "fork+write"), "extra_bytes") <=
		 4.0 * 1024 * 1024);
	/* Seven targets, each met or not. */
	{
		const char *p = strstr(r.out, "\"targets\":[");
		int n = 0;

		T_ASSERT(p != NULL);
		while ((p = strstr(p, "\"met\":")) != NULL) {
			p += 6;
			T_ASSERT(!strncmp(p, "true", 4) || !strncmp(p, "false", 5));
			n++;
		}
		T_ASSERT_EQ(n, 7);
	}
	/* The files are gone: the directory given is empty again. */
	T_ASSERT_SYS(rmdir(dir));

	run_tool(&r, table);
	T_ASSERT_EQ(r.status, 0);
	T_ASSERT(strstr(r.out, "kind of machine, from the floors: ") != NULL);
	T_ASSERT(strstr(r.out, "working set 51 pages (5%)") != NULL);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char k[64];

		snprintf(k, sizeof(k), "\n%s ", rows[i]);
		T_ASSERT(strstr(r.out, k) != NULL);
	}
	T_ASSERT(strstr(r.out, "ws-replay: fewer faults than demand-4k") != NULL);
	/* --live-scale 0: no live rows, no live targets. */
	T_ASSERT(strstr(r.out, "live snapshot") == NULL);
	T_ASSERT(strstr(r.out, "live: pause") == NULL);

	run_tool(&r, bad);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "--size") != NULL);
}

/* The workload @wl of the row @row of medium @medium in bench outofcore's JSON, or NULL. */
static const char *ooc_workload(const char *out, const char *medium, const char *row,
				const char *wl)
{
	char k[128];
	const char *p, *next;

	snprintf(k, sizeof(k), "{\"medium\":\"%s\",\"name\":\"%s\",", medium, row);
	p = strstr(out, k);
	if (!p)
		return NULL;
	next = strstr(p + 1, "{\"medium\":");
	snprintf(k, sizeof(k), "{\"name\":\"%s\",", wl);
	p = strstr(p, k);
	return p && (!next || p < next) ? p : NULL;
}

/*
 * bench outofcore, tiny: a 32 MiB file, an 8 MiB budget, on a tmpfs and on
 * the disk. Every row either ran every workload (the scan read every page,
 * the random ones their --ops accesses; read-modify-write left the file
 * verified byte for byte, after the faultline rows' eviction wrote dirty
 * pages back) or says why it was skipped (not root: no cgroup);
 * the kernel row's cgroup never held more than the budget, the faultline
 * rows' budgets never more than the budget and one eviction batch, so on
 * the disk at most about a quarter of the uniform reads can hit; the
 * bench's files are removed.
 */
TEST(tool_bench_outofcore_tiny)
{
	static struct t_run r;
	char dir[] = "/tmp/fl-test-bench-XXXXXX";
	char *json[] = { "faultline", "bench", "outofcore", "--size", "32M", "--budget", "8M",
			 "--ops", "256", "--warmup", "4096", "--runs", "1", "--dir", dir,
			 "--rows", "kernel-advised,fifo,2q+prefetch", "--media", "tmpfs,disk",
			 "--json", NULL };
	char *bad_budget[] = { "faultline", "bench", "outofcore", "--size", "32M", "--budget",
			       "64M", NULL };
	char *bad_rows[] = { "faultline", "bench", "outofcore", "--rows", "kernel,nosuch", NULL };
	struct statfs sf;
	bool tmpfs = statfs("/dev/shm", &sf) == 0 && sf.f_type == TMPFS_MAGIC;
	const char *media[2] = { "disk", "tmpfs" };

	T_ASSERT(mkdtemp(dir) != NULL);
	if (!tmpfs)
		json[18] = "disk";	/* no tmpfs at /dev/shm here */
	run_tool(&r, json);
	if (r.status != 0)
		t_fail(__FILE__, __LINE__, "bench outofcore failed (%d): %.300s", r.status, r.err);
	T_ASSERT(json_valid(r.out));
	T_ASSERT(strstr(r.out, "\"benchmark\":\"outofcore\"") != NULL);
	T_ASSERT(strstr(r.out, "\"machine_kind\":\"") != NULL);
	for (int m = 0; m < (tmpfs ? 2 : 1); m++) {
		static const char *const wl[] = { "uniform", "zipf", "seq", "rmw" };
		char k[128];
		const char *w;

		/* The faultline rows: a budget of 8 MiB, eviction batches of 512 KiB. */
		for (int f = 0; f < 2; f++) {
			const char *row = f ? "2q+prefetch" : "fifo";

			for (int i = 0; i < 4; i++) {
				double hit;

				w = ooc_workload(r.out, media[m], row, wl[i]);
				T_ASSERT(w != NULL);
				T_ASSERT_EQ((long)json_num_after(r.out, w, "accesses"),
					    i == 2 ? 8192 : 256);
				T_ASSERT(json_num_after(r.out, w, "pages_per_s") > 0);
				if (i == 3) {	/* written back, and the file verified */
					T_ASSERT_EQ((long)json_num_after(r.out, w, "verified"), 1);
					T_ASSERT(json_num_after(r.out, w, "written_back_bytes") > 0);
				}
				hit = json_num_after(r.out, w, "hit_rate");
				T_ASSERT(hit >= 0 && hit <= 1);
				T_ASSERT(json_num_after(r.out, w, "peak_bytes") <=
					 8.5 * 1024 * 1024 * 1.00001);
				if (i == 0)
					T_ASSERT(hit < 0.6);
			}
		}

		snprintf(k, sizeof(k), "{\"medium\":\"%s\",\"name\":\"kernel-advised\",", media[m]);
		T_ASSERT(strstr(r.out, k) != NULL);
		snprintf(k, sizeof(k), "{\"name\":\"%s: file verified after rmw\",\"target\":"
			 "\"every byte\",\"value\":1,\"met\":true,", media[m]);
		if (geteuid() != 0) {
			T_ASSERT(strstr(r.out, "\"skipped\":\"not root") != NULL);
			continue;
		}
		T_ASSERT(strstr(r.out, k) != NULL);
		for (int i = 0; i < 4; i++) {
			double hit;

			w = ooc_workload(r.out, media[m], "kernel-advised", wl[i]);
			T_ASSERT(w != NULL);
			T_ASSERT_EQ((long)json_num_after(r.out, w, "accesses"), i == 2 ? 8192 : 256);
			T_ASSERT(json_num_after(r.out, w, "pages_per_s") > 0);
			hit = json_num_after(r.out, w, "hit_rate");
			T_ASSERT(hit >= 0 && hit <= 1);
			T_ASSERT_EQ((long)json_num_after(r.out, w, "verified"), 1);
			/* The limit held: the cgroup never used more than the budget (to
			   the 6 digits the JSON gives). */
			T_ASSERT(json_num_after(r.out, w, "peak_bytes") <= 8.0 * 1024 * 1024 * 1.00001);
			if (m == 0 && i == 0)
				T_ASSERT(hit < 0.6);	/* 8 of 32 MiB can be in memory */
			if (m == 0 && i == 3)	/* read-modify-write dirtied pages */
				T_ASSERT(json_num_after(r.out, w, "written_back_bytes") > 0);
		}
	}
	/* The files are gone: the directory given is empty again. */
	T_ASSERT_SYS(rmdir(dir));

	run_tool(&r, bad_budget);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "--budget") != NULL);
	run_tool(&r, bad_rows);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "'nosuch' is not a row") != NULL);
}

/*
 * examples/outofcore: the byte histogram of a 24 MiB file through a 4 MiB
 * budget (6x) agrees with read()'s, the budget evicted (it had to: the file
 * does not fit) and never held more than the budget and a batch.
 */
TEST(example_outofcore_histogram)
{
	static struct t_run r;
	char self[PATH_MAX], path[PATH_MAX], file[] = "/var/tmp/fl-test-ooc-XXXXXX";
	char *argv[] = { "outofcore", file, "4", NULL };
	char *bad[] = { "outofcore", file, "0", NULL };
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	unsigned char *buf = malloc(1 << 20);
	double most, evicted;
	const char *p;
	int fd;

	T_ASSERT(n > 0 && buf);
	self[n] = '\0';
	snprintf(path, sizeof(path), "%s/../examples/outofcore", dirname(self));
	if (access(path, X_OK) != 0)
		T_SKIP("%s not built", path);
	fd = mkostemp(file, O_CLOEXEC);
	T_ASSERT_SYS(fd);
	/* Bytes of uneven frequencies, so that a page read twice or missed shows. */
	for (int mib = 0; mib < 24; mib++) {
		for (size_t i = 0; i < (1u << 20); i++)
			buf[i] = (unsigned char)((i * i + (size_t)mib * 7) % 251);
		T_ASSERT_EQ(write(fd, buf, 1u << 20), 1 << 20);
	}
	/* A tail shorter than a page: only the file's bytes are counted. */
	T_ASSERT_EQ(write(fd, buf, 1000), 1000);
	close(fd);
	free(buf);
	t_run_capture(&r, path, argv, NULL);
	unlink(file);
	if (r.status != 0)
		t_fail(__FILE__, __LINE__, "outofcore exited %d: %.300s", r.status, r.err);
	T_ASSERT(strstr(r.out, "histogram verified against read()") != NULL);
	p = strstr(r.out, "most resident at once ");
	T_ASSERT(p != NULL);
	most = strtod(p + strlen("most resident at once "), NULL);
	p = strstr(r.out, "evicted ");
	T_ASSERT(p != NULL);
	evicted = strtod(p + strlen("evicted "), NULL);
	T_ASSERT(most > 0 && most <= 4.25);	/* 4 MiB and a batch of 256 KiB */
	T_ASSERT(evicted >= 24 - 4.25);	/* what did not fit went */
	t_run_capture(&r, path, bad, NULL);
	T_ASSERT_EQ(r.status, 2);
	T_ASSERT(strstr(r.err, "usage: ") != NULL);
}

TEST(tool_probe_table_and_json)
{
	static struct t_run r;
	char *table[] = { "faultline", "probe", NULL };
	char *json[] = { "faultline", "probe", "--json", NULL };
	struct fl_features f;
	char key[96];

	fl_probe(&f);
	run_tool(&r, table);
	T_ASSERT_EQ(r.status, 0);
	for (uint64_t bit = 1; bit & FL_FEAT_ALL; bit <<= 1)
		T_ASSERT(strstr(r.out, fl_feature_name(bit)) != NULL);
	T_ASSERT(strstr(r.out, "hugetlb") != NULL);

	run_tool(&r, json);
	T_ASSERT_EQ(r.status, 0);
	T_ASSERT(json_valid(r.out));
	/* The JSON says what the library says, feature by feature. */
	for (uint64_t bit = 1; bit & FL_FEAT_ALL; bit <<= 1) {
		snprintf(key, sizeof(key), "\"%s\":%s", fl_feature_name(bit),
			 (f.features & bit) ? "true" : "false");
		T_ASSERT(strstr(r.out, key) != NULL);
	}
	snprintf(key, sizeof(key), "\"page_size\":%u", f.page_size);
	T_ASSERT(strstr(r.out, key) != NULL);
}

TEST(json_validator_rejects_garbage)
{
	/* The validator above must be able to fail, or the JSON test proves nothing. */
	T_ASSERT(json_valid("{\"a\":[1,2.5,-3e2,true,false,null,\"x\\n\"]}"));
	T_ASSERT(!json_valid("{\"a\":1,}"));
	T_ASSERT(!json_valid("{\"a\" 1}"));
	T_ASSERT(!json_valid("[1,2"));
	T_ASSERT(!json_valid("{} {}"));
	T_ASSERT(!json_valid("{\"a\":01x}"));
	T_ASSERT(!json_valid("\"unterminated"));
}
