/* SPDX-License-Identifier: MIT */
/*
 * faultline snapshot --demo: the key-value store of the migration demo
 * snapshotted live while its load threads serve, then restored lazily in
 * fresh processes: once recording its working set, once replaying it.
 * Every key is verified after each restore.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "../bench/bench.h"
#include "kv.h"
#include "tool.h"
#include "util.h"

#define SUB "snapshot --demo"
#define MIB (1ull << 20)
#define PG 4096ull
/* Bounds on waits that always end: far past what the demo takes. */
#define HOLD_MS 10000
#define WAIT_MS 600000

struct demo_opts {
	uint64_t size;
	double serve;		/* seconds the source serves before the snapshot */
	double seconds;		/* seconds each restore serves */
	const char *dir;
	bool keep;
};

/* What a child process reports to the parent. */
struct report {
	int rc;
	char err[256];
	int pid;
	uint64_t keys_total;
	/* source */
	uint64_t serve_ops, serve_ns;
	uint64_t hold_ns;		/* the load threads held: the instant and the state copy */
	struct fl_snapshot_live_stats live;
	uint64_t snap_ops;		/* operations the threads did while the pages were saved */
	uint64_t file_bytes, file_blocks;
	/* restore */
	uint64_t first_ns;		/* from opening the snapshot to the store's header read */
	uint64_t ops, load_ns;
	struct fl_region_stats st;	/* after the load, before the verification */
	uint64_t verify_faults;		/* faults of the verification (it reads every page) */
	struct kv_verify v;
	uint64_t wrong_gets;
};

void usage_snapshot_demo(FILE *out)
{
	fprintf(out,
		"usage: faultline snapshot --demo [--size SIZE] [--serve SECONDS]\n"
		"                                 [--seconds SECONDS] [--dir DIR] [--keep]\n\n"
		"A key-value store of SIZE (default 64M) served by %d load threads is\n"
		"snapshotted live while they serve (fl_snapshot_live_take(3)): the threads are\n"
		"held between two operations only for the instant. Then a fresh process\n"
		"restores it lazily through a pager region (fl_store_snapshot_open(3)) and\n"
		"serves, recording the pages its threads touch first (the working set), and a\n"
		"second fresh process restores it again replaying that working set from its\n"
		"loading set. After each restore every key is checked: its value, and each\n"
		"thread's checksum over its keys. The pause, the sizes and the fault counts\n"
		"are printed.\n\n"
		"  --size SIZE        the store (4M to 4G, K, M, G suffixes; default 64M)\n"
		"  --serve SECONDS    the source serves this long before the snapshot (0.5)\n"
		"  --seconds SECONDS  each restore serves this long (1)\n"
		"  --dir DIR          where the files go (default $TMPDIR, else /var/tmp)\n"
		"  --keep             leave the snapshot and working-set files there\n"
		"Exit status 0 when both restores verify, 1 otherwise, 2 on usage errors.\n",
		LOADERS);
}

static int parse_secs(const char *s, double *ret)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0) || v > 3600)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct demo_opts *o)
{
	static const struct option lo[] = {
		{ "demo", no_argument, NULL, 'D' },
		{ "size", required_argument, NULL, 's' },
		{ "serve", required_argument, NULL, 'v' },
		{ "seconds", required_argument, NULL, 't' },
		{ "dir", required_argument, NULL, 'd' },
		{ "keep", no_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 },
	};
	const char *tmp = getenv("TMPDIR");
	int c;

	*o = (struct demo_opts){ .size = 64 * MIB, .serve = 0.5, .seconds = 1,
				 .dir = tmp && *tmp ? tmp : "/var/tmp" };
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'D':
			break;
		case 's':
			if (tool_parse_size(optarg, 4ull << 30, &o->size) < 0 || o->size < 4 * MIB ||
			    o->size % PG)
				return usage_error(SUB, "--size: expected 4M to 4G, whole pages, got "
						   "'%s'", optarg);
			break;
		case 'v':
		case 't':
			if (parse_secs(optarg, c == 'v' ? &o->serve : &o->seconds) < 0)
				return usage_error(SUB, "--%s: expected 0 to 3600 seconds, got '%s'",
						   c == 'v' ? "serve" : "seconds", optarg);
			break;
		case 'd':
			o->dir = optarg;
			break;
		case 'k':
			o->keep = true;
			break;
		default:
			return usage_error(SUB, "unknown option, or one missing its value: '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	return 0;
}

static void sleep_secs(double s)
{
	struct timespec ts = { .tv_sec = (time_t)s,
			       .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int rfail(struct report *rep, int err, const char *what)
{
	snprintf(rep->err, sizeof(rep->err), "%s: %s", what, strerror(-err));
	return err;
}

/* Hold the load threads and copy their states. */
static int copy_states(struct load *ld, struct load_state *out, struct report *rep)
{
	int r = load_hold(ld, HOLD_MS);

	if (r < 0)
		return rfail(rep, r, "holding the load threads");
	for (int i = 0; i < LOADERS; i++)
		out[i] = ld->l[i].st;
	return 0;
}

/* ----------------------------------------------------------- the source */

static int run_source(const struct demo_opts *o, const char *snap, struct report *rep)
{
	struct load_state init[LOADERS], now[LOADERS];
	struct fl_snapshot_range rg = { .mem = FL_MEM_ANON };
	struct fl_snapshot_writer *w = NULL;
	struct fl_snapshot_live *s = NULL;
	struct load ld = { 0 };
	struct kv_hdr *h;
	struct stat sb;
	uint64_t t0;
	int r;

	/* Anywhere: the store holds no pointers, and a restore maps it where it can. */
	h = mmap(NULL, o->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h == MAP_FAILED)
		return rfail(rep, -errno, "mapping the store");
	kv_build(h, kv_slots(o->size), init);
	rep->keys_total = h->nkeys;
	rg.addr = h;
	rg.len = o->size;
	r = fl_snapshot_live_create(&rg, 1, NULL, &s);
	if (r < 0)
		return rfail(rep, r, "fl_snapshot_live_create");
	r = load_start(&ld, h, init);
	if (r < 0) {
		rfail(rep, r, "starting the load threads");
		goto out;
	}
	sleep_secs(o->serve);
	r = fl_snapshot_writer_create(snap, NULL, &w);
	if (r < 0) {
		rfail(rep, r, "fl_snapshot_writer_create");
		goto out;
	}
	/*
	 * The instant: the threads are held between two operations, so the
	 * store is consistent and their states (kept in the store's header,
	 * for the restore to go on from) match it; then everything is
	 * write-protected and they go on while the pages are saved.
	 */
	t0 = fl__now_ns();
	r = copy_states(&ld, h->saved, rep);
	if (r < 0)
		goto out;
	r = fl_snapshot_live_take(s, w, 0);
	load_release(&ld);
	rep->hold_ns = fl__now_ns() - t0;
	if (r < 0) {
		rfail(rep, r, "fl_snapshot_live_take");
		goto out;
	}
	rep->serve_ops = load_ops(h->saved);
	rep->serve_ns = t0 - ld.t0;
	r = fl_snapshot_live_wait(s, WAIT_MS);
	if (r < 0) {
		rfail(rep, r, "fl_snapshot_live_wait");
		goto out;
	}
	r = copy_states(&ld, now, rep);
	if (r < 0)
		goto out;
	rep->snap_ops = load_ops(now) - rep->serve_ops;
	load_stop(&ld);
	rep->wrong_gets = load_errors(now);
	rep->live.sz = sizeof(rep->live);
	fl_snapshot_live_stats(s, &rep->live);
	r = fl_snapshot_writer_finish(w, NULL);
	w = NULL;
	if (r < 0) {
		rfail(rep, r, "fl_snapshot_writer_finish");
		goto out;
	}
	if (stat(snap, &sb) == 0) {
		rep->file_bytes = (uint64_t)sb.st_size;
		rep->file_blocks = (uint64_t)sb.st_blocks * 512;
	}
out:
	load_stop(&ld);
	fl_snapshot_writer_destroy(w);
	fl_snapshot_live_destroy(s);
	munmap(h, o->size);
	return r;
}

/* ----------------------------------------------------------- a restore */

static void on_sigbus(int sig)
{
	static const char msg[] = "faultline: snapshot --demo: a page of the snapshot could not "
				  "be restored (SIGBUS): the file is damaged\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		(void)0;
	_exit(1);
}

/*
 * Restore the store lazily in this (fresh) process and serve: recording the
 * working set into @ws and @ls, or replaying it from them.
 */
static int run_restore(const struct demo_opts *o, const char *snap, const char *ws,
		       const char *ls, bool record, struct report *rep)
{
	struct fl_pager_opts po = { .sz = sizeof(po), .mode = FL_PAGER_THREADS };
	struct fl_region_stats after = { .sz = sizeof(after) };
	struct load_state st[LOADERS];
	struct fl_store *store = NULL;
	struct fl_region *reg = NULL;
	struct fl_pager *p = NULL;
	struct load ld = { 0 };
	struct kv_hdr *h;
	uint64_t t0;
	int r;

	signal(SIGBUS, on_sigbus);
	t0 = fl__now_ns();
	r = fl_store_snapshot_open(snap, NULL, &store);
	if (r < 0)
		return rfail(rep, r, "fl_store_snapshot_open");
	r = fl_pager_create(&po, &p);
	if (r == 0)
		r = fl_pager_start(p);
	if (r < 0) {
		rfail(rep, r, "starting a pager");
		goto out;
	}
	{
		struct fl_region_opts ro = {
			.sz = sizeof(ro),
			.len = o->size,
			.store = store,
			.mem = FL_MEM_ANON,
			.memfd = -1,
			.install = FL_INSTALL_AUTO,
			.flags = record ? FL_REGION_WS_RECORD : 0,
			.ws_replay = record ? NULL : ws,
			.ws_loading_set = record ? NULL : ls,
		};

		r = fl_region_add(p, &ro, &reg);
		if (r < 0) {
			rfail(rep, r, "fl_region_add");
			goto out;
		}
	}
	/* The store holds no pointers: it works at whatever address the pager mapped it. */
	h = fl_region_addr(reg);
	if (h->magic != KV_MAGIC) {
		r = rfail(rep, -EINVAL, "the snapshot does not hold the demo's store");
		goto out;
	}
	rep->first_ns = fl__now_ns() - t0;
	rep->keys_total = h->nkeys;
	r = load_start(&ld, h, h->saved);
	if (r < 0) {
		rfail(rep, r, "starting the load threads");
		goto out;
	}
	sleep_secs(o->seconds);
	r = copy_states(&ld, st, rep);
	if (r < 0)
		goto out;
	rep->st.sz = sizeof(rep->st);
	fl_region_stats(reg, &rep->st);
	load_stop(&ld);
	rep->ops = load_ops(st) - load_ops(h->saved);
	rep->load_ns = ld.ns;
	rep->wrong_gets = load_errors(st);
	if (record) {
		r = fl_region_ws_save(reg, ws, ls);
		if (r < 0) {
			rfail(rep, r, "fl_region_ws_save");
			goto out;
		}
	}
	kv_verify(h, st, &rep->v);
	fl_region_stats(reg, &after);
	rep->verify_faults = after.faults - rep->st.faults;
out:
	load_stop(&ld);
	fl_pager_destroy(p);
	fl_store_destroy(store);
	return r;
}

/* ----------------------------------------------------------- the parent */

enum phase { P_SOURCE, P_RECORD, P_REPLAY };

/* Run @ph in a fresh child process and collect its report. */
static int in_child(enum phase ph, const struct demo_opts *o, const char *snap, const char *ws,
		    const char *ls, struct report *rep)
{
	int fd[2], st;
	ssize_t n;
	pid_t pid;

	memset(rep, 0, sizeof(*rep));
	if (pipe2(fd, O_CLOEXEC) < 0)
		return rfail(rep, -errno, "pipe");
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(fd[0]);
		close(fd[1]);
		return rfail(rep, -errno, "fork");
	}
	if (pid == 0) {
		close(fd[0]);
		rep->pid = (int)getpid();
		rep->rc = ph == P_SOURCE ? run_source(o, snap, rep) :
					   run_restore(o, snap, ws, ls, ph == P_RECORD, rep);
		n = write(fd[1], rep, sizeof(*rep));
		_exit(n == (ssize_t)sizeof(*rep) && !rep->rc ? 0 : 1);
	}
	close(fd[1]);
	/* The child writes its report or dies: either ends the read. */
	n = read(fd[0], rep, sizeof(*rep));
	close(fd[0]);
	waitpid(pid, &st, 0);
	if (n != (ssize_t)sizeof(*rep)) {
		memset(rep, 0, sizeof(*rep));
		rep->pid = (int)pid;
		if (WIFSIGNALED(st))
			snprintf(rep->err, sizeof(rep->err), "process %d was killed by signal %d",
				 (int)pid, WTERMSIG(st));
		else
			snprintf(rep->err, sizeof(rep->err), "process %d exited with %d",
				 (int)pid, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		rep->rc = -EIO;
	}
	return rep->rc;
}

static bool verified(const struct report *r)
{
	return r->rc == 0 && r->v.checksums_ok && !r->v.bad_values && !r->wrong_gets &&
	       r->v.keys == r->keys_total && r->keys_total;
}

static void print_restore(const char *name, const struct report *r, bool record)
{
	double secs = (double)r->load_ns / 1e9;

	printf("%s pid %d, lazily, %s: header read %.2f ms after opening the file;\n"
	       "          %.2f s of load, %.2f M ops/s, %llu faults", name, r->pid,
	       record ? "recording the working set" :
			"replaying the working set from the loading set",
	       (double)r->first_ns / 1e6, secs, secs > 0 ? (double)r->ops / secs / 1e6 : 0,
	       (unsigned long long)r->st.faults);
	if (record)
		printf("; working set %llu pages (%.1f MiB)\n",
		       (unsigned long long)r->st.ws_recorded,
		       (double)r->st.ws_recorded * PG / MIB);
	else
		printf(", %llu pages prefetched ahead of them (last batch after %.1f ms)\n",
		       (unsigned long long)r->st.ws_prefetched, (double)r->st.ws_done_ns / 1e6);
	printf("verify    %llu keys present of %llu, %llu wrong values, %llu wrong GETs, "
	       "checksums %s (%llu more faults: the check reads every page)\n",
	       (unsigned long long)r->v.keys, (unsigned long long)r->keys_total,
	       (unsigned long long)r->v.bad_values, (unsigned long long)r->wrong_gets,
	       r->v.checksums_ok ? "match" : "DIFFER", (unsigned long long)r->verify_faults);
}

int snapshot_demo(int argc, char **argv)
{
	char dir[PATH_MAX], snap[PATH_MAX + 16], ws[PATH_MAX + 16], ls[PATH_MAX + 16];
	struct report src, rec, rep;
	struct demo_opts o;
	int r = parse_args(argc, argv, &o), rc = 1;

	if (r)
		return r;
	r = bench_make_dir(dir, sizeof(dir), o.dir, "faultline-demo");
	if (r < 0)
		return fail(SUB, o.dir, r);
	snprintf(snap, sizeof(snap), "%s/kv.flsnap", dir);
	snprintf(ws, sizeof(ws), "%s/kv.ws", dir);
	snprintf(ls, sizeof(ls), "%s/kv.ls", dir);
	printf("faultline snapshot --demo: a key-value store of %.0f MiB, %d load threads, "
	       "files in %s\n", (double)o.size / MIB, LOADERS, dir);

	if (in_child(P_SOURCE, &o, snap, NULL, NULL, &src) < 0) {
		fprintf(stderr, "faultline: %s: the source failed: %s\n", SUB, src.err);
		goto out;
	}
	printf("source    pid %d: %llu keys, served %.2f s at %.2f M ops/s\n", src.pid,
	       (unsigned long long)src.keys_total, (double)src.serve_ns / 1e9,
	       src.serve_ns ? (double)src.serve_ops * 1e3 / (double)src.serve_ns : 0);
	printf("snapshot  live, while the load threads serve: the instant %.3f ms (threads held "
	       "%.3f ms in all);\n"
	       "          %llu pages saved in %.1f ms, %llu of them first because a thread "
	       "wrote them;\n"
	       "          the threads did %llu operations meanwhile\n",
	       (double)src.live.pause_ns / 1e6, (double)src.hold_ns / 1e6,
	       (unsigned long long)src.live.pages, (double)src.live.duration_ns / 1e6,
	       (unsigned long long)src.live.pages_written, (unsigned long long)src.snap_ops);
	printf("file      %s: %.1f MiB (%.1f MiB on disk)\n", snap,
	       (double)src.file_bytes / MIB, (double)src.file_blocks / MIB);

	r = in_child(P_RECORD, &o, snap, ws, ls, &rec);
	if (r < 0 && !rec.v.keys) {
		fprintf(stderr, "faultline: %s: the first restore failed: %s\n", SUB, rec.err);
		goto out;
	}
	print_restore("restore 1", &rec, true);
	r = in_child(P_REPLAY, &o, snap, ws, ls, &rep);
	if (r < 0 && !rep.v.keys) {
		fprintf(stderr, "faultline: %s: the second restore failed: %s\n", SUB, rep.err);
		goto out;
	}
	print_restore("restore 2", &rep, false);
	printf("faults    %llu while serving with replay against %llu without\n",
	       (unsigned long long)rep.st.faults, (unsigned long long)rec.st.faults);
	if (verified(&rec) && verified(&rep))
		rc = 0;
	else
		fprintf(stderr, "faultline: %s: a restored store does not verify%s%s\n", SUB,
			rec.err[0] || rep.err[0] ? ": " : "", rec.err[0] ? rec.err : rep.err);
out:
	if (!o.keep) {
		unlink(snap);
		unlink(ws);
		unlink(ls);
		rmdir(dir);
	}
	return rc;
}
