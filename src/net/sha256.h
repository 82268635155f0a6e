/* SPDX-License-Identifier: MIT */
/* SHA-256 (FIPS 180-4), HMAC-SHA256, constant-time compare: the handshake (never installed). */
#ifndef FL_NET_SHA256_H
#define FL_NET_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FL__SHA256_LEN 32	/* digest bytes */
#define FL__SHA256_BLOCK 64	/* block bytes */

/* A hash in progress. Plain data: copy it to fork a running hash. */
struct fl__sha256 {
	uint32_t h[8];
	uint64_t len;		/* message bytes so far */
	uint8_t buf[FL__SHA256_BLOCK];
	uint32_t nbuf;		/* bytes waiting in buf */
};

/* Thread safety, for everything here: any thread, one state per thread at a time. */
void fl__sha256_init(struct fl__sha256 *s);
void fl__sha256_update(struct fl__sha256 *s, const void *p, size_t n);
/* Writes the digest and wipes @s. */
void fl__sha256_final(struct fl__sha256 *s, uint8_t out[FL__SHA256_LEN]);
void fl__sha256(const void *p, size_t n, uint8_t out[FL__SHA256_LEN]);

/* HMAC-SHA256: the inner hash runs as data arrives, the outer one is primed with the key. */
struct fl__hmac_sha256 {
	struct fl__sha256 inner, outer;
};

void fl__hmac_sha256_init(struct fl__hmac_sha256 *h, const void *key, size_t keylen);
void fl__hmac_sha256_update(struct fl__hmac_sha256 *h, const void *p, size_t n);
/* Writes the MAC and wipes @h (which holds key-derived state). */
void fl__hmac_sha256_final(struct fl__hmac_sha256 *h, uint8_t out[FL__SHA256_LEN]);
void fl__hmac_sha256(const void *key, size_t keylen, const void *p, size_t n,
		     uint8_t out[FL__SHA256_LEN]);

/*
 * Whether @a and @b hold the same @n bytes, in a time that depends only on
 * @n (never on where they first differ): for comparing MACs.
 */
bool fl__ct_equal(const void *a, const void *b, size_t n);

#endif /* FL_NET_SHA256_H */
