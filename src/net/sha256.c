/* SPDX-License-Identifier: MIT */
/* SHA-256 from FIPS 180-4 section 6.2, HMAC (FIPS 198-1) on top, and a constant-time compare. */
#include <string.h>

#include "sha256.h"

/* FIPS 180-4 4.2.2: the first 32 bits of the fractional parts of the cube roots of the
 * first 64 primes. */
static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5,
	0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
	0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
	0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5,
	0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* FIPS 180-4 5.3.3: the first 32 bits of the fractional parts of the square roots of the
 * first 8 primes. */
static const uint32_t H0[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

static inline uint32_t rotr(uint32_t x, unsigned int n)
{
	return x >> n | x << (32 - n);
}

static inline uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* One 512-bit block (6.2.2): the schedule is kept as a 16-word ring rather than 64 words. */
static void compress(uint32_t h[8], const uint8_t *block)
{
	uint32_t w[16], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6],
			hh = h[7];

	for (unsigned int t = 0; t < 64; t++) {
		uint32_t wt, t1, t2;

		if (t < 16) {
			wt = be32(block + 4 * t);
		} else {
			uint32_t w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
			uint32_t s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
			uint32_t s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);

			wt = s1 + w[(t - 7) & 15] + s0 + w[t & 15];
		}
		w[t & 15] = wt;
		t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] +
		     wt;
		t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		hh = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
	h[5] += f;
	h[6] += g;
	h[7] += hh;
}

void fl__sha256_init(struct fl__sha256 *s)
{
	memcpy(s->h, H0, sizeof(H0));
	s->len = 0;
	s->nbuf = 0;
}

void fl__sha256_update(struct fl__sha256 *s, const void *p, size_t n)
{
	const uint8_t *in = p;

	s->len += n;
	if (s->nbuf) {
		size_t k = FL__SHA256_BLOCK - s->nbuf < n ? FL__SHA256_BLOCK - s->nbuf : n;

		memcpy(s->buf + s->nbuf, in, k);
		s->nbuf += (uint32_t)k;
		in += k;
		n -= k;
		if (s->nbuf < FL__SHA256_BLOCK)
			return;
		compress(s->h, s->buf);
		s->nbuf = 0;
	}
	for (; n >= FL__SHA256_BLOCK; in += FL__SHA256_BLOCK, n -= FL__SHA256_BLOCK)
		compress(s->h, in);
	memcpy(s->buf, in, n);
	s->nbuf = (uint32_t)n;
}

/* 5.1.1: a 1 bit, zeros up to 56 mod 64 bytes, then the message length in bits, big-endian. */
void fl__sha256_final(struct fl__sha256 *s, uint8_t out[FL__SHA256_LEN])
{
	uint64_t bits = s->len * 8;

	s->buf[s->nbuf++] = 0x80;
	if (s->nbuf > FL__SHA256_BLOCK - 8) {
		memset(s->buf + s->nbuf, 0, FL__SHA256_BLOCK - s->nbuf);
		compress(s->h, s->buf);
		s->nbuf = 0;
	}
	memset(s->buf + s->nbuf, 0, FL__SHA256_BLOCK - 8 - s->nbuf);
	put_be32(s->buf + 56, (uint32_t)(bits >> 32));
	put_be32(s->buf + 60, (uint32_t)bits);
	compress(s->h, s->buf);
	for (unsigned int i = 0; i < 8; i++)
		put_be32(out + 4 * i, s->h[i]);
	explicit_bzero(s, sizeof(*s));
}

void fl__sha256(const void *p, size_t n, uint8_t out[FL__SHA256_LEN])
{
	struct fl__sha256 s;

	fl__sha256_init(&s);
	fl__sha256_update(&s, p, n);
	fl__sha256_final(&s, out);
}

/*
 * HMAC: H((K' ^ opad) || H((K' ^ ipad) || m)), where K' is the key padded
 * with zeros to one block, or its digest first if it is longer than a block.
 */
void fl__hmac_sha256_init(struct fl__hmac_sha256 *h, const void *key, size_t keylen)
{
	uint8_t k[FL__SHA256_BLOCK] = { 0 }, pad[FL__SHA256_BLOCK];

	if (keylen > FL__SHA256_BLOCK)
		fl__sha256(key, keylen, k);
	else if (keylen)
		memcpy(k, key, keylen);
	for (unsigned int i = 0; i < FL__SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x36;
	fl__sha256_init(&h->inner);
	fl__sha256_update(&h->inner, pad, sizeof(pad));
	for (unsigned int i = 0; i < FL__SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x5c;
	fl__sha256_init(&h->outer);
	fl__sha256_update(&h->outer, pad, sizeof(pad));
	explicit_bzero(k, sizeof(k));
	explicit_bzero(pad, sizeof(pad));
}

void fl__hmac_sha256_update(struct fl__hmac_sha256 *h, const void *p, size_t n)
{
	fl__sha256_update(&h->inner, p, n);
}

void fl__hmac_sha256_final(struct fl__hmac_sha256 *h, uint8_t out[FL__SHA256_LEN])
{
	uint8_t in[FL__SHA256_LEN];

	fl__sha256_final(&h->inner, in);
	fl__sha256_update(&h->outer, in, sizeof(in));
	fl__sha256_final(&h->outer, out);
	explicit_bzero(in, sizeof(in));
}

void fl__hmac_sha256(const void *key, size_t keylen, const void *p, size_t n,
		     uint8_t out[FL__SHA256_LEN])
{
	struct fl__hmac_sha256 h;

	fl__hmac_sha256_init(&h, key, keylen);
	fl__hmac_sha256_update(&h, p, n);
	fl__hmac_sha256_final(&h, out);
}

/*
 * Every byte is read and folded into one accumulator, with no branch on the
 * data; the empty asm keeps the compiler from turning the loop into an early
 * exit (it cannot see what the barrier does with acc).
 */
bool fl__ct_equal(const void *a, const void *b, size_t n)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t acc = 0;

	for (size_t i = 0; i < n; i++) {
		acc |= x[i] ^ y[i];
		__asm__ __volatile__("" : "+r"(acc));
	}
	return acc == 0;
}
