/* SPDX-License-Identifier: MIT */
/* Helpers every benchmark uses: errors, the machine, pinning, mappings, the timed walk. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "faultline.h"
#include "bench.h"

int bench_fail(struct bench_err *e, int err, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	n = strlen(e->msg);
	if (err < 0 && n < sizeof(e->msg))
		snprintf(e->msg + n, sizeof(e->msg) - n, ": %s", strerror(-err));
	return err;
}

static void read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");

	buf[0] = '\0';
	if (!f)
		return;
	if (fgets(buf, (int)len, f))
		buf[strcspn(buf, "\n")] = '\0';
	fclose(f);
}

void bench_machine_get(struct bench_machine *m)
{
	struct utsname u;
	uint64_t t[201];
	double d[201];
	char thp[128];
	char *a, *b;

	memset(m, 0, sizeof(*m));
	m->nproc = sysconf(_SC_NPROCESSORS_ONLN);
	if (uname(&u) == 0) {
		snprintf(m->sysname, sizeof(m->sysname), "%s", u.sysname);
		snprintf(m->release, sizeof(m->release), "%s", u.release);
		snprintf(m->version, sizeof(m->version), "%s", u.version);
		snprintf(m->arch, sizeof(m->arch), "%s", u.machine);
	}
	read_line("/sys/devices/system/clocksource/clocksource0/current_clocksource",
		  m->clocksource, sizeof(m->clocksource));
	/* "always [madvise] never": keep the bracketed choice. */
	read_line("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof(thp));
	a = strchr(thp, '[');
	b = a ? strchr(a, ']') : NULL;
	if (a && b)
		snprintf(m->thp, sizeof(m->thp), "%.*s", (int)(b - a - 1), a + 1);
	for (size_t i = 0; i < 201; i++) {
		uint64_t t0 = fl__now_ns();

		t[i] = fl__now_ns() - t0;
		d[i] = (double)t[i];
	}
	m->timer_ns = stats_median(d, 201);
}

int bench_pin(int cpu, cpu_set_t *saved)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(*saved), saved) < 0)
		return -errno;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		return -errno;
	return 0;
}

void bench_unpin(const cpu_set_t *saved)
{
	sched_setaffinity(0, sizeof(*saved), saved);
}

void *bench_map_aligned(size_t len, size_t align)
{
	size_t total = len + align;
	char *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t start, end;

	if (p == MAP_FAILED)
		return NULL;
	start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
	end = start + len;
	if (start > (uintptr_t)p)
		munmap(p, start - (uintptr_t)p);
	if ((uintptr_t)p + total > end)
		munmap((void *)end, (uintptr_t)p + total - end);
	return (void *)start;
}

void bench_prewarm(size_t bytes)
{
	char *w = bench_map_aligned(bytes, 2u << 20);

	if (!w)
		return;
	for (size_t off = 0; off < bytes; off += BENCH_PAGE)
		w[off] = 1;
	bench_unmap(w, bytes);
}

int bench_make_dir(char *dir, size_t cap, const char *parent, const char *name)
{
	int r;

	snprintf(dir, cap, "%s/%s-XXXXXX", parent, name);
	if (mkdtemp(dir))
		return 0;
	r = -errno;
	dir[0] = '\0';
	return r;
}

double bench_cached_share(int fd, uint64_t len)
{
	size_t pages = (size_t)((len + BENCH_PAGE - 1) / BENCH_PAGE), resident = 0;
	unsigned char *vec;
	void *m;

	if (!len)
		return 0;
	m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -1;
	vec = malloc(pages);
	if (vec && mincore(m, len, vec) == 0)
		for (size_t i = 0; i < pages; i++)
			resident += vec[i] & 1;
	free(vec);
	munmap(m, len);
	return (double)resident / (double)pages;
}

void bench_unmap(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

long long bench_thp_bytes(const void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	uintptr_t a = (uintptr_t)addr;
	bool inside = false;
	long long found = -ENOENT;
	char line[256];

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		long long kb;

		/* A mapping's first line: "start-end perms ..."; the others are "Key: value". */
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			inside = a >= lo && a < hi;
			continue;
		}
		if (inside && sscanf(line, "AnonHugePages: %lld kB", &kb) == 1) {
			found = kb * 1024;
			break;
		}
	}
	fclose(f);
	return found;
}

void bench_permutation(uint32_t *perm, size_t n, uint64_t seed)
{
	uint64_t x = seed | 1;

	for (size_t i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	/* Fisher-Yates with xorshift64*: reproducible across runs and machines. */
	for (size_t i = n; i > 1; i--) {
		size_t j;
		uint32_t t;

		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		j = (size_t)((x * 0x2545f4914f6cdd1dull) % i);
		t = perm[i - 1];
		perm[i - 1] = perm[j];
		perm[j] = t;
	}
}

/*
 * The reading loop of the seed, kept tight: a clock read, one volatile load,
 * a clock read, a store into an array the caller has already touched.
 * noinline so that every mode runs the very same instructions.
 */
__attribute__((noinline)) uint64_t bench_walk_timed(const char *base, size_t pages, uint64_t *lat)
{
	uint64_t start = fl__now_ns();

	for (size_t i = 0; i < pages; i++) {
		uint64_t t0 = fl__now_ns();

		(void)*(const volatile int *)(base + i * BENCH_PAGE);
		lat[i] = fl__now_ns() - t0;
	}
	return fl__now_ns() - start;
}

__attribute__((noinline)) void bench_walk(const char *base, size_t pages)
{
	for (size_t i = 0; i < pages; i++)
		(void)*(const volatile int *)(base + i * BENCH_PAGE);
}
