/* SPDX-License-Identifier: MIT */
/*
 * What the Redis tests share (test-redis.c, test-redis-tls.c): whether
 * real servers can be started here, and the pages they write and check.
 */
#ifndef FL_TEST_REDIS_TEST_H
#define FL_TEST_REDIS_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/redisd.h"
#include "faultline.h"
#include "tests.h"

#define BLK 4096u

/*
 * Skip (fail with FL_REQUIRE_REDIS=1) where the tests cannot start servers:
 * built without hiredis, or redis-server (and, for a cluster, redis-cli)
 * not installed.
 */
static inline void t_redis_need(bool cluster)
{
	const char *req = getenv("FL_REQUIRE_REDIS");
	bool require = req && !strcmp(req, "1");
	char path[256];

#ifndef FL_HAVE_HIREDIS
	if (require)
		t_fail(__FILE__, __LINE__, "built without hiredis, and FL_REQUIRE_REDIS=1");
	T_SKIP("built without hiredis (libhiredis-dev)");
#endif
	if (!redisd_find("redis-server", path, sizeof(path)) ||
	    (cluster && !redisd_find("redis-cli", path, sizeof(path)))) {
		if (require)
			t_fail(__FILE__, __LINE__, "redis-server or redis-cli not found, and "
			       "FL_REQUIRE_REDIS=1");
		T_SKIP("redis-server or redis-cli not found (apt-get install redis-server "
		       "redis-tools)");
	}
}

/* Page @p at version @v: its index, the version, then the pattern of seed v. */
static inline void page_make(uint8_t *buf, uint64_t p, uint64_t v)
{
	memcpy(buf, &p, 8);
	memcpy(buf + 8, &v, 8);
	fl_pattern_fill(buf + 16, p * BLK + 16, BLK - 16, v);
}

/* The version page @p holds, or 0 if it is not a well-formed page @p. */
static inline uint64_t page_version(const uint8_t *buf, uint64_t p)
{
	uint64_t q, v;

	memcpy(&q, buf, 8);
	memcpy(&v, buf + 8, 8);
	if (q != p || !v || fl_pattern_check(buf + 16, p * BLK + 16, BLK - 16, v))
		return 0;
	return v;
}

#endif /* FL_TEST_REDIS_TEST_H */
