/* SPDX-License-Identifier: MIT */
/*
 * The Redis store over TLS (rediss://) against real servers started here
 * with TLS ports and certificates made at run time: reads and writes, a
 * cluster whose nodes are learned over TLS, and a server that fails the
 * certificate check refused at open, never read as zeros.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certs.h"
#include "redis-test.h"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct tls_env {
	struct redisd d;
	char dir[256], ca[300], ca2[300], crt[300], key[300], ccrt[300], ckey[300];
};

/* Certificates, then TLS servers; or skip (fail with FL_REQUIRE_REDIS=1) without redis-server. */
static void tls_start(struct tls_env *e, unsigned int n, bool cluster)
{
	t_redis_need(cluster);
	t_certs_dir(e->dir, sizeof(e->dir));
	t_certs_make(e->dir, "ca", NULL, NULL);
	t_certs_make(e->dir, "server", "ca", "redis.test");
	t_certs_make(e->dir, "client", "ca", "client.test");
	t_certs_make(e->dir, "ca2", NULL, NULL);
	snprintf(e->ca, sizeof(e->ca), "%s/ca.crt", e->dir);
	snprintf(e->ca2, sizeof(e->ca2), "%s/ca2.crt", e->dir);
	snprintf(e->crt, sizeof(e->crt), "%s/server.crt", e->dir);
	snprintf(e->key, sizeof(e->key), "%s/server.key", e->dir);
	snprintf(e->ccrt, sizeof(e->ccrt), "%s/client.crt", e->dir);
	snprintf(e->ckey, sizeof(e->ckey), "%s/client.key", e->dir);
	if (redisd_start_tls(&e->d, n, cluster, (unsigned int)t_ms(120000), e->crt, e->key, e->ca)) {
		t_certs_cleanup(e->dir);
		t_fail(__FILE__, __LINE__, "starting redis with TLS: %s", e->d.err);
	}
}

static void tls_stop(struct tls_env *e)
{
	redisd_stop(&e->d);
	t_certs_cleanup(e->dir);
}

static struct fl_store_redis_opts tls_opts(const struct tls_env *e, uint64_t size)
{
	struct fl_store_redis_opts o = {
		.sz = sizeof(o), .size = size,
		.retry_ms = (unsigned int)t_ms(60000),
		.connect_timeout_ms = (unsigned int)t_ms(5000),
		.command_timeout_ms = (unsigned int)t_ms(5000),
		.tls_ca_file = e->ca,
	};

	return o;
}

/*
 * Even pages written over TLS (one by one and in a batch across chunks);
 * read back through a pager region on a second handle (data, and zeros only
 * for the pages never written), and seen by the server itself on its plain
 * control port.
 */
static void tls_roundtrip(struct tls_env *e, const char *prefix, const char *peer,
			  bool client_cert)
{
	const size_t npages = 300;
	struct fl_store_redis_opts o = tls_opts(e, npages * BLK);
	struct fl_store *s, *s2;
	struct fl_pager *p;
	struct fl_region *r;
	struct fl_region_opts ro;
	uint8_t *buf = malloc(40 * BLK), *page = malloc(BLK);
	char url[256], out[64];

	T_ASSERT(buf && page);
	o.tls_peer_name = peer;
	if (client_cert) {
		o.tls_cert_file = e->ccrt;
		o.tls_key_file = e->ckey;
	}
	redisd_tls_url(&e->d, 0, prefix, url, sizeof(url));
	T_ASSERT_OK(fl_store_redis_open(url, &o, &s));
	for (size_t i = 0; i < npages; i += 2) {
		page_make(page, i, 1);
		T_ASSERT_OK(fl_store_write(s, i * BLK, page, BLK));
	}
	for (size_t i = 100; i < 140; i++)
		page_make(buf + (i - 100) * BLK, i, 2);
	T_ASSERT_OK(fl_store_write(s, 100 * BLK, buf, 40 * BLK));

	T_ASSERT_OK(fl_store_redis_open(url, &o, &s2));
	p = t_pager_new(FL_PAGER_THREADS, 2, 0);
	ro = t_region_opts(s2, npages * BLK);
	ro.prefetch = FL_PREFETCH_FIXED;
	ro.prefetch_max = 64 * 1024;
	T_ASSERT_OK(fl_region_add(p, &ro, &r));
	T_ASSERT_OK(fl_pager_start(p));
	for (size_t i = 0; i < npages; i++) {
		const uint8_t *a = (const uint8_t *)fl_region_addr(r) + i * BLK;
		uint64_t want = i >= 100 && i < 140 ? 2 : (i % 2 ? 0 : 1);

		if (want)
			T_ASSERT_EQ(page_version(a, i), want);
		else
			T_ASSERT(t_all(a, BLK, 0));
	}
	fl_pager_destroy(p);
	fl_store_destroy(s2);
	fl_store_destroy(s);
	if (!e->d.cluster) {
		/* The server holds them: the bitmap of chunk 1 has bit 100 - 64 set. */
		char c[160];

		snprintf(c, sizeof(c), "GETBIT {%s:1}:m 36", prefix);
		T_ASSERT_OK(redisd_cmdline(&e->d, 0, (unsigned int)t_ms(5000), out, sizeof(out),
					   c));
		T_ASSERT(!strcmp(out, "1"));
	}
	free(buf);
	free(page);
}

TEST(redis_tls_pages)
{
	struct tls_env e;

	tls_start(&e, 1, false);
	/* The server's name checked as its address, as another name, with a client certificate. */
	tls_roundtrip(&e, "tls-a", NULL, false);
	tls_roundtrip(&e, "tls-b", "redis.test", true);
	tls_stop(&e);
}

/* A server whose certificate fails the check is refused at open (-EACCES), at once. */
TEST(redis_tls_wrong_ca_or_name_refused)
{
	struct tls_env e;
	struct fl_store_redis_opts o;
	struct fl_store *s = (struct fl_store *)1;
	char url[256], plain[256];
	uint64_t t0;

	tls_start(&e, 1, false);
	o = tls_opts(&e, 1 << 20);
	redisd_tls_url(&e.d, 0, "tls-x", url, sizeof(url));
	t0 = now_ms();
	o.tls_ca_file = e.ca2;
	T_ASSERT_ERR(fl_store_redis_open(url, &o, &s), EACCES);
	T_ASSERT(s == NULL);
	o.tls_ca_file = e.ca;
	o.tls_peer_name = "other.test";
	T_ASSERT_ERR(fl_store_redis_open(url, &o, &s), EACCES);
	/* Refused without waiting out retry_ms (60 s scaled): no retry makes it trusted. */
	T_ASSERT(now_ms() - t0 < (uint64_t)t_ms(30000));
	/* Nothing was written under that prefix: the server has no key of it. */
	T_ASSERT_OK(redisd_cmdline(&e.d, 0, (unsigned int)t_ms(5000), plain, sizeof(plain),
				   "EXISTS tls-x:obj"));
	T_ASSERT(!strcmp(plain, "0"));
	/* Options that contradict the URL. */
	o.tls_peer_name = NULL;
	o.tls_ca_file = NULL;
	T_ASSERT_ERR(fl_store_redis_open(url, &o, &s), EINVAL);
	redisd_url(&e.d, 0, "tls-x", plain, sizeof(plain));
	o.tls_ca_file = e.ca;
	T_ASSERT_ERR(fl_store_redis_open(plain, &o, &s), EINVAL);
	/* A CA file that does not exist. */
	o.tls_ca_file = "/nonexistent/ca.crt";
	T_ASSERT_ERR(fl_store_redis_open(url, &o, &s), ENOENT);
	tls_stop(&e);
}

/* A cluster over TLS: its nodes and their TLS ports learned from CLUSTER SLOTS. */
TEST(redis_tls_cluster)
{
	struct tls_env e;

	tls_start(&e, 6, true);
	tls_roundtrip(&e, "tls-c", NULL, false);
	tls_stop(&e);
}
