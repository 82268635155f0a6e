/* SPDX-License-Identifier: MIT */
/* faultline migrate: live-migrate a key-value store that keeps serving; prove nothing was lost. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "kv.h"
#include "tool.h"
#include "util.h"

#define SUB "migrate"
#define MIB (1ull << 20)
#define BLOB_MAGIC 0x42434c454d4f4446ull
/* The library's shortest key (fl_migrate_source_create(3)). */
#define KEY_MIN 16

/* The application's state blob: what the destination needs to carry on. */
struct demo_blob {
	uint64_t magic;
	uint64_t kv_addr, kv_size, nkeys;
	struct load_state t[LOADERS];
};

/* ----------------------------------------------------------- options */

enum mode { M_NONE, M_DEMO, M_LISTEN, M_TO };

struct opts {
	enum mode mode;
	uint64_t size;
	const char *host;		/* --to's host, or --bind */
	uint16_t port;
	const char *key_file;
	uint8_t key[4096];
	size_t key_len;
	unsigned int precopy;
	uint64_t bandwidth;
	double serve;			/* seconds the source serves before migrating */
	double seconds;			/* seconds the destination serves after resuming */
	bool json;
	bool progress;
	bool insecure;			/* --insecure: plain TCP, no key, no certificates */
	const char *tls_ca, *tls_cert, *tls_key, *tls_name;	/* X.509 */
	bool verify_peer;		/* --verify-peer */
	int timeout_ms;
	int resume_timeout_ms;
};

void usage_migrate(FILE *out)
{
	fprintf(out,
		"usage: faultline migrate --demo [OPTIONS]\n"
		"       faultline migrate --listen PORT [--bind ADDR] [OPTIONS]\n"
		"       faultline migrate --to HOST:PORT [OPTIONS]\n\n"
		"Post-copy live migration of a running program's memory. The program here\n"
		"is an in-memory key-value store in one migrated region, with load threads\n"
		"doing GET (each value checked) and SET (each thread keeping a checksum).\n"
		"The source migrates it while it serves: optional pre-copy rounds, then the\n"
		"stop, then the destination resumes at once and serves while the pages\n"
		"arrive (those its threads touch are fetched first). At the end the\n"
		"destination checks every key and value and both checksums.\n\n"
		"  --demo             both sides on this host, in two processes, over TCP\n"
		"  --listen PORT      be the destination: wait for a source on PORT\n"
		"  --bind ADDR        with --listen, the address to listen on (default: every\n"
		"                     address; 127.0.0.1 only with --insecure)\n"
		"  --to HOST:PORT     be the source: migrate to the destination there\n\n"
		"The connections run over TLS 1.3, with a shared key or with certificates\n"
		"(one of them on both sides; --demo makes a key of its own):\n"
		"  --key FILE         shared key (both sides): TLS with this pre-shared key;\n"
		"                     16 to 4096 bytes, e.g. head -c 32 /dev/urandom > FILE\n"
		"  --tls-ca FILE      CA certificates (PEM) the peer's certificate must chain\n"
		"                     to (needed with --to)\n"
		"  --tls-cert FILE    this side's certificate (PEM; needed with --listen)\n"
		"  --tls-key FILE     its private key (PEM)\n"
		"  --tls-name NAME    with --to, the name the destination's certificate must\n"
		"                     carry (default: HOST)\n"
		"  --verify-peer      with --listen, require the source's certificate too\n"
		"  --insecure         plain TCP instead: anyone on the path can read and change\n"
		"                     the memory, or pose as the peer\n\n"
		"  --size SIZE        store size (source; default 256M; K, M, G suffixes)\n"
		"  --precopy N        pre-copy rounds while the source serves, before the stop\n"
		"                     (source; default 0: pure post-copy)\n"
		"  --bandwidth RATE   background limit in bytes/s (source; K, M, G; default none)\n"
		"  --serve SECONDS    the source serves this long before migrating (default 0.3)\n"
		"  --seconds SECONDS  the destination serves this long after resuming (default 1)\n"
		"  --timeout SECONDS  connection and stall timeout (default 10)\n"
		"  --resume-timeout SECONDS\n"
		"                     how long a broken connection may take to resume before\n"
		"                     the migration fails (default 60)\n"
		"  --json             print one JSON object instead of the report\n\n"
		"Exit status: 0 migrated and verified, 1 failed (also when the peer is gone\n"
		"for longer than --resume-timeout), 2 usage.\n");
}

static int parse_seconds(const char *s, double *ret)
{
	char *end;
	double v;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || v < 0 || v > 86400)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int parse_port(const char *s, uint16_t *ret)
{
	unsigned long v;

	if (tool_parse_num(s, 65535, &v) || !v)
		return -EINVAL;
	*ret = (uint16_t)v;
	return 0;
}

/* HOST:PORT or [V6]:PORT; @buf receives the host. */
static int parse_hostport(const char *s, char *buf, size_t cap, uint16_t *port)
{
	const char *colon = strrchr(s, ':');
	size_t n;

	if (!colon || colon == s)
		return -EINVAL;
	n = (size_t)(colon - s);
	if (s[0] == '[') {
		if (n < 3 || s[n - 1] != ']')
			return -EINVAL;
		s++;
		n -= 2;
	}
	if (n >= cap)
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = 0;
	return parse_port(colon + 1, port);
}

/* The key file's bytes, all of them, as they are (a trailing newline is part of the key). */
static int read_key(struct opts *o)
{
	int fd = open(o->key_file, O_RDONLY | O_CLOEXEC);
	uint8_t more;
	size_t n = 0;

	if (fd < 0)
		return usage_error(SUB, "--key: cannot open '%s': %s", o->key_file,
				   strerror(errno));
	while (n < sizeof(o->key)) {
		ssize_t k = read(fd, o->key + n, sizeof(o->key) - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = errno;

			close(fd);
			return usage_error(SUB, "--key: cannot read '%s': %s", o->key_file,
					   strerror(e));
		}
		if (!k)
			break;
		n += (size_t)k;
	}
	if (n == sizeof(o->key) && read(fd, &more, 1) == 1) {
		close(fd);
		return usage_error(SUB, "--key: '%s' is longer than %zu bytes", o->key_file,
				   sizeof(o->key));
	}
	close(fd);
	if (n < KEY_MIN)
		return usage_error(SUB, "--key: '%s' %s%zu byte%s; a key needs at least %d (make "
				   "one with: head -c 32 /dev/urandom > %s)", o->key_file,
				   n ? "holds only " : "is empty: ", n, n == 1 ? "" : "s",
				   KEY_MIN, o->key_file);
	o->key_len = n;
	return 0;
}

static char host_buf[256];

static int parse_args(int argc, char **argv, struct opts *o)
{
	enum { O_DEMO = 1, O_LISTEN, O_BIND, O_TO, O_KEY, O_SIZE, O_PRECOPY, O_BW, O_SERVE,
	       O_SECONDS, O_TIMEOUT, O_JSON, O_INSECURE, O_RESUME, O_CA, O_CERT, O_CKEY,
	       O_NAME, O_VERIFY };
	static const struct option lo[] = {
		{ "demo", no_argument, NULL, O_DEMO },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "bind", required_argument, NULL, O_BIND },
		{ "to", required_argument, NULL, O_TO },
		{ "key", required_argument, NULL, O_KEY },
		{ "size", required_argument, NULL, O_SIZE },
		{ "precopy", required_argument, NULL, O_PRECOPY },
		{ "bandwidth", required_argument, NULL, O_BW },
		{ "serve", required_argument, NULL, O_SERVE },
		{ "seconds", required_argument, NULL, O_SECONDS },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "json", no_argument, NULL, O_JSON },
		{ "insecure", no_argument, NULL, O_INSECURE },
		{ "resume-timeout", required_argument, NULL, O_RESUME },
		{ "tls-ca", required_argument, NULL, O_CA },
		{ "tls-cert", required_argument, NULL, O_CERT },
		{ "tls-key", required_argument, NULL, O_CKEY },
		{ "tls-name", required_argument, NULL, O_NAME },
		{ "verify-peer", no_argument, NULL, O_VERIFY },
		{ NULL, 0, NULL, 0 },
	};
	double timeout = 10, resume = 60;
	const char *bind = NULL;
	int c, modes = 0;
	bool certs;

	*o = (struct opts){ .size = 256 * MIB, .serve = 0.3, .seconds = 1 };
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		const char *arg = optarg;
		char *end;

		switch (c) {
		case O_DEMO:
			o->mode = M_DEMO;
			modes++;
			break;
		case O_LISTEN:
			if (parse_port(arg, &o->port) < 0)
				return usage_error(SUB, "--listen: expected a port (1 to 65535), "
						   "got '%s'", arg);
			o->mode = M_LISTEN;
			modes++;
			break;
		case O_BIND:
			bind = arg;
			break;
		case O_TO:
			if (parse_hostport(arg, host_buf, sizeof(host_buf), &o->port) < 0)
				return usage_error(SUB, "--to: expected HOST:PORT, got '%s'", arg);
			o->host = host_buf;
			o->mode = M_TO;
			modes++;
			break;
		case O_KEY:
			o->key_file = arg;
			break;
		case O_SIZE:
			if (tool_parse_size(arg, 1ull << 44, &o->size) < 0 || o->size < 2 * MIB ||
			    o->size > (64ull << 30) || o->size % MIB)
				return usage_error(SUB, "--size: expected 2M to 64G in whole MiB, "
						   "got '%s'", arg);
			break;
		case O_PRECOPY:
			errno = 0;
			o->precopy = (unsigned int)strtoul(arg, &end, 10);
			if (errno || *end || *arg < '0' || *arg > '9' || o->precopy > 100)
				return usage_error(SUB, "--precopy: expected 0 to 100 rounds, "
						   "got '%s'", arg);
			break;
		case O_BW:
			if (tool_parse_size(arg, 1ull << 44, &o->bandwidth) < 0 || !o->bandwidth)
				return usage_error(SUB, "--bandwidth: expected bytes per second "
						   "such as 64M, got '%s'", arg);
			break;
		case O_SERVE:
			if (parse_seconds(arg, &o->serve) < 0)
				return usage_error(SUB, "--serve: expected seconds, got '%s'", arg);
			break;
		case O_SECONDS:
			if (parse_seconds(arg, &o->seconds) < 0)
				return usage_error(SUB, "--seconds: expected seconds, got '%s'",
						   arg);
			break;
		case O_TIMEOUT:
			if (parse_seconds(arg, &timeout) < 0 || timeout < 0.1 || timeout > 3600)
				return usage_error(SUB, "--timeout: expected 0.1 to 3600 seconds, "
						   "got '%s'", arg);
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_INSECURE:
			o->insecure = true;
			break;
		case O_CA:
			o->tls_ca = arg;
			break;
		case O_CERT:
			o->tls_cert = arg;
			break;
		case O_CKEY:
			o->tls_key = arg;
			break;
		case O_NAME:
			o->tls_name = arg;
			break;
		case O_VERIFY:
			o->verify_peer = true;
			break;
		case O_RESUME:
			if (parse_seconds(arg, &resume) < 0 || resume < 0.1 || resume > 86400)
				return usage_error(SUB, "--resume-timeout: expected 0.1 to 86400 "
						   "seconds, got '%s'", arg);
			break;
		default:
			return usage_error(SUB, "unknown option, or one missing its value: '%s'",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error(SUB, "unexpected argument '%s'", argv[optind]);
	if (modes != 1)
		return usage_error(SUB, modes ? "--demo, --listen and --to exclude each other" :
					      "say --demo, --listen PORT or --to HOST:PORT");
	if (bind && o->mode != M_LISTEN)
		return usage_error(SUB, "--bind goes with --listen");
	certs = o->tls_ca || o->tls_cert || o->tls_key || o->tls_name;
	if ((o->key_file != NULL) + certs + o->insecure > 1)
		return usage_error(SUB, "--key, the --tls-* options and --insecure exclude each "
				   "other");
	if (certs && o->mode == M_DEMO)
		return usage_error(SUB, "--demo makes a key of its own: the --tls-* options go "
				   "with --listen and --to");
	if (o->mode != M_DEMO && !o->key_file && !certs && !o->insecure)
		return usage_error(SUB, "say how to protect the connections: --key FILE (both "
				   "sides), certificates (--tls-cert and --tls-key with --listen, "
				   "--tls-ca with --to), or --insecure for plain TCP");
	if (o->mode == M_LISTEN && certs && (!o->tls_cert || !o->tls_key))
		return usage_error(SUB, "--listen with certificates needs --tls-cert and "
				   "--tls-key");
	if (o->mode == M_TO && certs && !o->tls_ca)
		return usage_error(SUB, "--to with certificates needs --tls-ca");
	if (!o->tls_cert != !o->tls_key)
		return usage_error(SUB, "--tls-cert and --tls-key go together");
	if (o->verify_peer && (o->mode != M_LISTEN || !o->tls_ca))
		return usage_error(SUB, "--verify-peer goes with --listen and --tls-ca");
	if (o->tls_name && o->mode != M_TO)
		return usage_error(SUB, "--tls-name goes with --to");
	if (bind)
		o->host = bind;
	o->timeout_ms = (int)(timeout * 1000);
	o->resume_timeout_ms = (int)(resume * 1000);
	o->progress = isatty(STDERR_FILENO) && !o->json;
	return 0;
}

/* ----------------------------------------------------------- reporting */

static void progress_bar(void *userdata, enum fl_migrate_phase phase, uint64_t done,
			 uint64_t total)
{
	const struct opts *o = userdata;
	int width = 30, fill = total ? (int)(done * (uint64_t)width / total) : 0;

	if (!o->progress)
		return;
	fprintf(stderr, "\r[%.*s%*s] %3d%% %-10s %8.1f / %.1f MiB", fill,
		"##############################", width - fill, "",
		total ? (int)(done * 100 / total) : 0, fl_migrate_phase_name(phase),
		(double)done * 4096 / MIB, (double)total * 4096 / MIB);
	if (phase == FL_MIGRATE_DONE || phase == FL_MIGRATE_FAILED)
		fprintf(stderr, "\n");
	fflush(stderr);
}

/* The upper edge (ns) of the bucket holding the @p-th percentile of a log2 histogram. */
static uint64_t hist_pct(const uint64_t *h, double p)
{
	int b = fl__log2_pct_bucket(h, FL_MIGRATE_LAT_BUCKETS, p);

	return b < 0 ? 0 : 2ull << b;
}

static void json_source(const struct fl_migrate_source_stats *s)
{
	printf("{\"phase\":\"%s\",\"resumes\":%u,\"pages_total\":%llu,\"pages_sent\":%llu,"
	       "\"pages_pushed\":%llu,\"pages_urgent\":%llu,\"pages_zero\":%llu,"
	       "\"bytes_pushed\":%llu,\"bytes_urgent\":%llu,\"requests\":%llu,"
	       "\"precopy_rounds\":%u,\"precopy_pages\":%llu,\"dirty_pages\":%llu,"
	       "\"switch_ns\":%llu,\"total_ns\":%llu,\"bandwidth\":%llu}",
	       fl_migrate_phase_name(s->phase), s->resumes, (unsigned long long)s->pages_total,
	       (unsigned long long)s->pages_sent, (unsigned long long)s->pages_pushed,
	       (unsigned long long)s->pages_urgent, (unsigned long long)s->pages_zero,
	       (unsigned long long)s->bytes_pushed, (unsigned long long)s->bytes_urgent,
	       (unsigned long long)s->requests, s->precopy_rounds,
	       (unsigned long long)s->precopy_pages, (unsigned long long)s->dirty_pages,
	       (unsigned long long)s->switch_ns, (unsigned long long)s->total_ns,
	       (unsigned long long)s->bandwidth);
}

static void json_dest(const struct fl_migrate_dest_stats *d)
{
	printf("{\"phase\":\"%s\",\"resumes\":%u,\"pages_total\":%llu,\"pages_received\":%llu,"
	       "\"pages_pushed\":%llu,\"pages_urgent\":%llu,\"pages_zero\":%llu,"
	       "\"pages_duplicate\":%llu,\"pages_discarded\":%llu,\"bytes_pushed\":%llu,"
	       "\"bytes_urgent\":%llu,\"faults\":%llu,\"faults_shared\":%llu,\"requests\":%llu,"
	       "\"urgent_p50_ns\":%llu,\"urgent_p99_ns\":%llu,\"urgent_hist_log2_ns\":[",
	       fl_migrate_phase_name(d->phase), d->resumes, (unsigned long long)d->pages_total,
	       (unsigned long long)d->pages_received, (unsigned long long)d->pages_pushed,
	       (unsigned long long)d->pages_urgent, (unsigned long long)d->pages_zero,
	       (unsigned long long)d->pages_duplicate, (unsigned long long)d->pages_discarded,
	       (unsigned long long)d->bytes_pushed, (unsigned long long)d->bytes_urgent,
	       (unsigned long long)d->faults, (unsigned long long)d->faults_shared,
	       (unsigned long long)d->requests, (unsigned long long)hist_pct(d->lat_hist, 50),
	       (unsigned long long)hist_pct(d->lat_hist, 99));
	for (int b = 0; b < FL_MIGRATE_LAT_BUCKETS; b++)
		printf("%s%llu", b ? "," : "", (unsigned long long)d->lat_hist[b]);
	printf("],\"blocktime_ns\":%llu,\"threads\":[", (unsigned long long)d->blocktime_ns);
	for (uint32_t i = 0; i < d->n_threads; i++)
		printf("%s{\"tid\":%u,\"faults\":%u,\"blocked_ns\":%llu}", i ? "," : "",
		       d->threads[i].tid, d->threads[i].faults,
		       (unsigned long long)d->threads[i].blocked_ns);
	printf("],\"switch_ns\":%llu,\"total_ns\":%llu}", (unsigned long long)d->switch_ns,
	       (unsigned long long)d->total_ns);
}

static void report_source(const struct fl_migrate_source_stats *s, uint64_t ops, double secs)
{
	printf("source    served %llu operations in %.2f s before the stop\n",
	       (unsigned long long)ops, secs);
	if (s->precopy_rounds)
		printf("          pre-copy: %u round%s, %llu pages sent while serving, %llu "
		       "written again\n", s->precopy_rounds, s->precopy_rounds > 1 ? "s" : "",
		       (unsigned long long)s->precopy_pages, (unsigned long long)s->dirty_pages);
	printf("          stop to state sent: %.3f ms; %llu pages pushed, %llu sent on request,"
	       " %llu as zero; %.1f MiB/s background\n", (double)s->switch_ns / 1e6,
	       (unsigned long long)s->pages_pushed, (unsigned long long)s->pages_urgent,
	       (unsigned long long)s->pages_zero, (double)s->bandwidth / MIB);
	if (s->resumes)
		printf("          %u resume%s after broken connections\n", s->resumes,
		       s->resumes > 1 ? "s" : "");
}

static void report_dest(const struct fl_migrate_dest_stats *d, uint64_t ops, double secs,
			uint64_t errors)
{
	printf("dest      served %llu operations in %.2f s after the resume, %llu wrong values\n",
	       (unsigned long long)ops, secs, (unsigned long long)errors);
	printf("transfer  %llu pages (%.1f MiB) in %.3f s: %llu pushed, %llu urgent, %llu zero, "
	       "%llu dropped at the switch-over, %llu duplicates dropped\n",
	       (unsigned long long)d->pages_total, (double)d->pages_total * 4096 / MIB,
	       (double)d->total_ns / 1e9, (unsigned long long)d->pages_pushed,
	       (unsigned long long)d->pages_urgent, (unsigned long long)d->pages_zero,
	       (unsigned long long)d->pages_discarded, (unsigned long long)d->pages_duplicate);
	printf("urgent    %llu requests for %llu faults (%llu on a page already requested); "
	       "request to install p50 <= %.0f us, p99 <= %.0f us\n",
	       (unsigned long long)d->requests, (unsigned long long)d->faults,
	       (unsigned long long)d->faults_shared, (double)hist_pct(d->lat_hist, 50) / 1e3,
	       (double)hist_pct(d->lat_hist, 99) / 1e3);
	printf("blocktime %.3f ms in all", (double)d->blocktime_ns / 1e6);
	for (uint32_t i = 0; i < d->n_threads && i < 8; i++)
		printf("%s tid %u %.3f ms (%u faults)", i ? "," : ":", d->threads[i].tid,
		       (double)d->threads[i].blocked_ns / 1e6, d->threads[i].faults);
	printf("\n");
	if (d->resumes)
		printf("          %u resume%s after broken connections\n", d->resumes,
		       d->resumes > 1 ? "s" : "");
}

/* ----------------------------------------------------------- source */

struct source_app {
	struct kv_hdr *h;
	size_t size;
	struct load load;
	struct demo_blob blob;
	uint64_t t_start;
};

static int source_stop(void *userdata, const void **ret_blob, size_t *ret_len)
{
	struct source_app *a = userdata;

	load_stop(&a->load);
	a->blob = (struct demo_blob){ .magic = BLOB_MAGIC, .kv_addr = (uintptr_t)a->h,
				      .kv_size = a->size, .nkeys = a->h->nkeys };
	for (int i = 0; i < LOADERS; i++)
		a->blob.t[i] = a->load.l[i].st;
	*ret_blob = &a->blob;
	*ret_len = sizeof(a->blob);
	return 0;
}

/* What the source reports to the demo's parent. */
struct source_report {
	int rc;
	char err[512];
	struct fl_migrate_source_stats st;
	uint64_t ops, load_ns;
};

/* Build the store, serve, migrate. */
static int run_source(const struct opts *o, struct source_report *rep)
{
	struct source_app a = { 0 };
	struct load_state init[LOADERS] = { 0 };
	struct fl_migrate_region reg;
	struct fl_migrate_source *s = NULL;
	struct fl_migrate_source_opts so;
	uint64_t slots;
	int r;

	a.size = (size_t)o->size;
	slots = kv_slots(o->size);
	a.h = mmap((void *)KV_ADDR, a.size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (a.h == MAP_FAILED || (uintptr_t)a.h != KV_ADDR) {
		snprintf(rep->err, sizeof(rep->err), "cannot map the store at %#llx: %s",
			 KV_ADDR, strerror(a.h == MAP_FAILED ? errno : EEXIST));
		return -ENOMEM;
	}
	kv_build(a.h, slots, init);
	r = load_start(&a.load, a.h, init);
	if (r < 0) {
		snprintf(rep->err, sizeof(rep->err), "cannot start the load threads");
		return r;
	}
	if (o->serve > 0) {
		struct timespec ts = { .tv_sec = (time_t)o->serve,
				       .tv_nsec = (long)((o->serve - (double)(time_t)o->serve) *
							 1e9) };

		nanosleep(&ts, NULL);
	}
	reg = (struct fl_migrate_region){ a.h, a.size };
	so = (struct fl_migrate_source_opts){
		.sz = sizeof(so),
		.regions = &reg,
		.n_regions = 1,
		.host = o->host,
		.port = o->port,
		.flags = o->insecure ? FL_MIGRATE_INSECURE : 0,
		.key = o->key_len ? o->key : NULL,
		.key_len = o->key_len,
		.tls_ca_file = o->tls_ca,
		.tls_cert_file = o->tls_cert,
		.tls_key_file = o->tls_key,
		.tls_peer_name = o->tls_name,
		.stop = source_stop,
		.userdata = &a,
		.precopy_rounds = o->precopy,
		.max_bandwidth = o->bandwidth,
		.timeout_ms = o->timeout_ms,
		.resume_timeout_ms = o->resume_timeout_ms,
	};
	if (o->precopy) {
		struct fl_features f;

		fl_probe(&f);
		if ((f.features & (FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN)) !=
		    (FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN))
			so.precopy_rounds = 0;	/* this kernel cannot track writes */
	}
	r = fl_migrate_source_create(&so, &s);
	if (r < 0) {
		load_stop(&a.load);
		snprintf(rep->err, sizeof(rep->err), "cannot set up the source: %s",
			 strerror(-r));
		return r;
	}
	r = fl_migrate_source_run(s);
	load_stop(&a.load);	/* if the stop never came */
	if (r < 0)
		snprintf(rep->err, sizeof(rep->err), "%s", fl_migrate_source_error(s));
	rep->st.sz = sizeof(rep->st);
	fl_migrate_source_stats(s, &rep->st);
	rep->ops = load_ops(a.blob.t);
	rep->load_ns = a.load.ns;
	fl_migrate_source_destroy(s);
	return r;
}

/* ----------------------------------------------------------- destination */

/*
 * A page of the store that will never arrive (the migration failed) is
 * poisoned by the library: the load thread touching it gets SIGBUS. The
 * library has logged why by then; say what happened and stop.
 */
static void on_sigbus(int sig)
{
	static const char msg[] = "faultline: migrate: a load thread touched a page of the "
				  "store that will never arrive (SIGBUS): the migration failed\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		(void)0;
	_exit(1);
}

/*
 * Without UFFDIO_POISON (before 6.6) the library makes such pages
 * inaccessible instead: SIGSEGV there means the same. Any other SIGSEGV is
 * a crash, and stays one.
 */
static uintptr_t store_lo, store_hi;

static void on_sigsegv(int sig, siginfo_t *si, void *uc)
{
	static const char msg[] = "faultline: migrate: a load thread touched a page of the "
				  "store that will never arrive (made inaccessible: this kernel "
				  "cannot poison): the migration failed\n";
	uintptr_t a = (uintptr_t)si->si_addr;

	(void)uc;
	if (si->si_code != SEGV_ACCERR || a < store_lo || a >= store_hi) {
		signal(sig, SIG_DFL);
		return;		/* the access faults again, and kills */
	}
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		(void)0;
	_exit(1);
}

/* The library's log, as tool_log prints it; the last line is kept to say nothing twice. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_logged[1024];

static void migrate_log(enum fl_log_level level, const char *msg)
{
	tool_log(level, msg);
	if (level > FL_LOG_WARN)
		return;
	pthread_mutex_lock(&log_lock);
	snprintf(last_logged, sizeof(last_logged), "%s", msg);
	pthread_mutex_unlock(&log_lock);
}

/*
 * "faultline: migrate: SENTENCE" from the library (unless its log just said
 * it), or "what: strerror" without one; returns 1.
 */
static int fail_why(const char *sentence, const char *what, int err)
{
	bool said;

	if (!sentence || !*sentence)
		return fail(SUB, what, err);
	pthread_mutex_lock(&log_lock);
	said = strstr(last_logged, sentence) != NULL;
	pthread_mutex_unlock(&log_lock);
	if (!said)
		fprintf(stderr, "faultline: %s: %s\n", SUB, sentence);
	return 1;
}

struct dest_result {
	struct fl_migrate_dest_stats st;
	uint64_t ops, errors, load_ns;
	uint64_t keys, bad_values;
	bool checksums_ok;
	char err[512];
};

/* Every key present, every value right, each thread's checksum equal to the sum over its keys. */
static void verify(struct kv_hdr *h, const struct load_state *st, struct dest_result *res)
{
	struct kv_verify v;

	kv_verify(h, st, &v);
	res->keys = v.keys;
	res->bad_values = v.bad_values;
	res->checksums_ok = v.checksums_ok;
}

/* Whether the demo's source process is still there (always true outside the demo). */
static pid_t demo_child;

static bool source_alive(void)
{
	return !demo_child || waitpid(demo_child, NULL, WNOHANG) == 0;
}

static int run_dest(const struct opts *o, struct fl_migrate_dest *d, struct dest_result *res)
{
	const struct demo_blob *b;
	struct demo_blob state;
	struct load load = { 0 };
	const void *blob;
	size_t len;
	void *addr;
	int r;

	do
		r = fl_migrate_dest_accept(d, demo_child ? 200 : -1, &blob, &len);
	while (r == -ETIMEDOUT && source_alive());
	if (r < 0) {
		snprintf(res->err, sizeof(res->err), "%s", fl_migrate_dest_error(d));
		return r;
	}
	b = blob;
	if (len != sizeof(*b) || b->magic != BLOB_MAGIC ||
	    fl_migrate_dest_region(d, 0, &addr, &len) < 0 || (uintptr_t)addr != b->kv_addr) {
		snprintf(res->err, sizeof(res->err), "the state blob is not the demo's");
		return -EPROTO;
	}
	state = *b;
	signal(SIGBUS, on_sigbus);
	{
		struct sigaction sa = { .sa_sigaction = on_sigsegv, .sa_flags = SA_SIGINFO };

		store_lo = (uintptr_t)addr;
		store_hi = store_lo + len;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGSEGV, &sa, NULL);
	}
	/* The program resumes now, on memory that is still arriving. */
	r = load_start(&load, addr, state.t);
	if (r < 0) {
		snprintf(res->err, sizeof(res->err), "cannot start the load threads");
		return r;
	}
	if (!o->json) {
		printf("resumed   the store serves here while its pages arrive\n");
		fflush(stdout);
	}
	if (o->seconds > 0) {
		struct timespec ts = { .tv_sec = (time_t)o->seconds,
				       .tv_nsec = (long)((o->seconds - (double)(time_t)o->seconds) *
							 1e9) };

		nanosleep(&ts, NULL);
	}
	do
		r = fl_migrate_dest_wait(d, demo_child ? 200 : -1);
	while (r == -ETIMEDOUT && source_alive());
	load_stop(&load);
	for (int i = 0; i < LOADERS; i++)
		state.t[i] = load.l[i].st;
	res->st.sz = sizeof(res->st);
	fl_migrate_dest_stats(d, &res->st);
	res->ops = load_ops(state.t) - load_ops(b->t);
	res->errors = load_errors(state.t);
	res->load_ns = load.ns;
	if (r < 0) {
		snprintf(res->err, sizeof(res->err), "%s", fl_migrate_dest_error(d));
		return r;
	}
	verify(addr, state.t, res);
	return 0;
}

static void report_verify(const struct dest_result *res)
{
	printf("verify    %llu keys present, %llu wrong values, checksums %s\n",
	       (unsigned long long)res->keys, (unsigned long long)res->bad_values,
	       res->checksums_ok ? "match" : "DIFFER");
}

static bool verified(const struct dest_result *res)
{
	return res->checksums_ok && !res->bad_values && !res->errors && res->keys;
}

static void json_verify(const struct dest_result *res)
{
	printf("\"verify\":{\"keys\":%llu,\"wrong_values\":%llu,\"wrong_gets\":%llu,"
	       "\"checksums_match\":%s,\"ok\":%s}", (unsigned long long)res->keys,
	       (unsigned long long)res->bad_values, (unsigned long long)res->errors,
	       res->checksums_ok ? "true" : "false", verified(res) ? "true" : "false");
}

/* ----------------------------------------------------------- modes */

/* How the connections are protected, for the report. */
static const char *transport_name(const struct opts *o)
{
	if (o->key_len)
		return "TLS 1.3, pre-shared key";
	if (o->tls_cert || o->tls_ca)
		return "TLS 1.3, X.509";
	return "plain TCP, insecure";
}

static int dest_create(const struct opts *o, const char *host, uint16_t port,
		       struct fl_migrate_dest **d)
{
	struct fl_migrate_dest_opts dop = {
		.sz = sizeof(dop),
		.host = host,
		.port = port,
		.flags = FL_MIGRATE_LISTEN,
		.key = o->key_len ? o->key : NULL,
		.key_len = o->key_len,
		.tls_ca_file = o->tls_ca,
		.tls_cert_file = o->tls_cert,
		.tls_key_file = o->tls_key,
		.progress = progress_bar,
		.userdata = (void *)o,
		.timeout_ms = o->timeout_ms,
		.resume_timeout_ms = o->resume_timeout_ms,
	};

	if (o->insecure)
		dop.flags |= FL_MIGRATE_INSECURE;
	if (o->verify_peer)
		dop.flags |= FL_MIGRATE_VERIFY_PEER;
	return fl_migrate_dest_create(&dop, d);
}

static int demo(struct opts *o)
{
	struct source_report rep = { 0 };
	struct dest_result res = { 0 };
	struct fl_migrate_dest *d = NULL;
	int up[2], down[2], st, r;
	uint16_t port;
	pid_t pid;
	ssize_t n;

	if (pipe2(up, O_CLOEXEC) < 0 || pipe2(down, O_CLOEXEC) < 0)
		return fail(SUB, "pipe", -errno);
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return fail(SUB, "fork", -errno);
	if (!pid) {
		/* The source process: gets the port, builds the store, serves, migrates. */
		close(up[0]);
		close(down[1]);
		if (read(down[0], &port, sizeof(port)) != sizeof(port))
			_exit(1);
		o->host = "127.0.0.1";
		o->port = port;
		rep.rc = run_source(o, &rep);
		n = write(up[1], &rep, sizeof(rep));
		_exit(n == sizeof(rep) && !rep.rc ? 0 : 1);
	}
	close(up[1]);
	close(down[0]);
	r = dest_create(o, "127.0.0.1", 0, &d);
	if (r < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return fail(SUB, "cannot set up the destination", r);
	}
	fl_migrate_dest_port(d, &port);
	if (write(down[1], &port, sizeof(port)) != sizeof(port)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		fl_migrate_dest_destroy(d);
		return fail(SUB, "talking to the source process", -EPIPE);
	}
	if (!o->json) {
		char how[32] = "post-copy only";

		if (o->precopy)
			snprintf(how, sizeof(how), "%u pre-copy round%s", o->precopy,
				 o->precopy == 1 ? "" : "s");
		printf("faultline migrate: a key-value store of %.0f MiB, %d load threads, %s, "
		       "source pid %d -> destination pid %d (%s)\n", (double)o->size / MIB,
		       LOADERS, how, (int)pid, (int)getpid(), transport_name(o));
	}
	fflush(stdout);
	demo_child = pid;
	r = run_dest(o, d, &res);
	n = read(up[0], &rep, sizeof(rep));
	waitpid(pid, &st, 0);
	demo_child = 0;
	if (n != sizeof(rep))
		rep.rc = -EPIPE;
	if (o->json) {
		printf("{\"mode\":\"demo\",\"size\":%llu,\"loaders\":%d,\"downtime_ns\":%llu,"
		       "\"source_ops\":%llu,\"dest_ops\":%llu,\"source\":",
		       (unsigned long long)o->size, LOADERS,
		       (unsigned long long)(res.st.resume_ns - rep.st.stop_ns),
		       (unsigned long long)rep.ops, (unsigned long long)res.ops);
		json_source(&rep.st);
		printf(",\"destination\":");
		json_dest(&res.st);
		printf(",");
		json_verify(&res);
		printf("}\n");
	} else if (!r) {
		report_source(&rep.st, rep.ops, (double)rep.load_ns / 1e9);
		printf("downtime  %.3f ms (source stop to destination resume)\n",
		       (double)(res.st.resume_ns - rep.st.stop_ns) / 1e6);
		report_dest(&res.st, res.ops, (double)res.load_ns / 1e9, res.errors);
		report_verify(&res);
	}
	fl_migrate_dest_destroy(d);
	close(up[0]);
	close(down[1]);
	if (r < 0)
		return fail_why(res.err, "the destination failed", r);
	if (rep.rc < 0)
		return fail_why(rep.err, "the source failed", rep.rc);
	if (!verified(&res)) {
		fprintf(stderr, "faultline: %s: the migrated store does not verify\n", SUB);
		return 1;
	}
	return 0;
}

static int listen_mode(struct opts *o)
{
	struct fl_migrate_dest *d = NULL;
	struct dest_result res = { 0 };
	uint16_t port;
	int r;

	if (!o->host && o->insecure) {
		/* In plain TCP anyone who reaches the port could pose as the source. */
		o->host = "127.0.0.1";
		fprintf(stderr, "faultline: %s: --insecure: listening on 127.0.0.1 only (give "
			"--bind ADDR to listen elsewhere in plain TCP all the same)\n", SUB);
	}
	r = dest_create(o, o->host, o->port, &d);
	if (r < 0)
		return fail(SUB, "cannot listen", r);
	fl_migrate_dest_port(d, &port);
	if (!o->json)
		printf("faultline migrate: destination listening on %s port %u (%s)\n",
		       o->host ? o->host : "*", port, transport_name(o));
	fflush(stdout);
	r = run_dest(o, d, &res);
	if (o->json) {
		printf("{\"mode\":\"destination\",\"dest_ops\":%llu,\"destination\":",
		       (unsigned long long)res.ops);
		json_dest(&res.st);
		printf(",");
		json_verify(&res);
		printf("}\n");
	} else if (!r) {
		printf("switch    %.3f ms from the first switch-over frame to the resume "
		       "(add the source's stop-to-send time and one network trip)\n",
		       (double)res.st.switch_ns / 1e6);
		report_dest(&res.st, res.ops, (double)res.load_ns / 1e9, res.errors);
		report_verify(&res);
	}
	fl_migrate_dest_destroy(d);
	if (r < 0)
		return fail_why(res.err, "migration failed", r);
	if (!verified(&res)) {
		fprintf(stderr, "faultline: %s: the migrated store does not verify\n", SUB);
		return 1;
	}
	return 0;
}

static int to_mode(struct opts *o)
{
	struct source_report rep = { 0 };
	int r;

	if (!o->json)
		printf("faultline migrate: source of a %.0f MiB key-value store -> %s port %u "
		       "(%s)\n", (double)o->size / MIB, o->host, o->port, transport_name(o));
	fflush(stdout);
	r = run_source(o, &rep);
	if (o->json) {
		printf("{\"mode\":\"source\",\"source_ops\":%llu,\"source\":",
		       (unsigned long long)rep.ops);
		json_source(&rep.st);
		printf("}\n");
	} else if (!r) {
		report_source(&rep.st, rep.ops, (double)rep.load_ns / 1e9);
	}
	if (r < 0)
		return fail_why(rep.err, "migration failed", r);
	return 0;
}

int cmd_migrate(int argc, char **argv)
{
	struct opts o;
	int r = parse_args(argc, argv, &o);

	if (r)
		return r;
	fl_set_log_fn(migrate_log);
	if (o.key_file) {
		r = read_key(&o);
		if (r)
			return r;
	} else if (o.mode == M_DEMO && !o.insecure) {
		/* Both processes of the demo share a fresh key: TLS without a key file. */
		if (getrandom(o.key, 32, 0) != 32)
			return fail(SUB, "getrandom", -errno);
		o.key_len = 32;
	}
	switch (o.mode) {
	case M_DEMO:
		return demo(&o);
	case M_LISTEN:
		return listen_mode(&o);
	case M_TO:
		return to_mode(&o);
	case M_NONE:
		break;
	}
	return EXIT_USAGE;
}
