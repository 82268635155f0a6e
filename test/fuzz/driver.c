/* SPDX-License-Identifier: MIT */
/* Replay driver for fuzz targets without libFuzzer: the seed corpus, then seeded mutations. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define FUZZ_MAX_INPUT (64u << 10)
#define MAX_SEEDS 256

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static size_t load(const char *path, uint8_t *buf)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		return 0;
	n = fread(buf, 1, FUZZ_MAX_INPUT, f);
	fclose(f);
	return n;
}

/* One mutation: flip, set, insert, delete, duplicate or truncate, the usual suspects. */
static size_t mutate(uint8_t *b, size_t n)
{
	size_t at = n ? next() % n : 0;

	switch (next() % 7) {
	case 0:
		if (n)
			b[at] ^= (uint8_t)(1u << (next() % 8));
		break;
	case 1:
		if (n)
			b[at] = (uint8_t)next();
		break;
	case 2: {	/* an interesting value over 1, 2, 4 or 8 bytes */
		static const uint64_t v[] = { 0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff,
					      0xffffffff, ~0ull, 1ull << 63, 4096, 2u << 20 };
		size_t w = (size_t)1 << (next() % 4);
		uint64_t x = v[next() % (sizeof(v) / sizeof(v[0]))];

		if (n >= w) {
			at = next() % (n - w + 1);
			memcpy(b + at, &x, w);
		}
		break;
	}
	case 3:
		if (n < FUZZ_MAX_INPUT) {
			memmove(b + at + 1, b + at, n - at);
			b[at] = (uint8_t)next();
			n++;
		}
		break;
	case 4:
		if (n) {
			memmove(b + at, b + at + 1, n - at - 1);
			n--;
		}
		break;
	case 5:
		n = n ? next() % n : 0;
		break;
	case 6:
		if (n && n * 2 <= FUZZ_MAX_INPUT) {
			memcpy(b + n, b, n);
			n *= 2;
		}
		break;
	}
	return n;
}

int main(int argc, char **argv)
{
	static uint8_t seeds[MAX_SEEDS][FUZZ_MAX_INPUT], buf[FUZZ_MAX_INPUT];
	static size_t lens[MAX_SEEDS];
	unsigned long iterations = argc > 2 ? strtoul(argv[2], NULL, 10) : 20000;
	size_t n_seeds = 0;
	DIR *d;

	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS-DIR [ITERATIONS]\n", argv[0]);
		return 2;
	}
	d = opendir(argv[1]);
	if (d) {
		struct dirent *de;
		char path[4096];

		while ((de = readdir(d)) && n_seeds < MAX_SEEDS) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[1], de->d_name);
			lens[n_seeds] = load(path, seeds[n_seeds]);
			LLVMFuzzerTestOneInput(seeds[n_seeds], lens[n_seeds]);
			n_seeds++;
		}
		closedir(d);
	}
	if (!n_seeds)
		n_seeds = 1;	/* start from the empty input */
	for (unsigned long i = 0; i < iterations; i++) {
		size_t s = next() % n_seeds, n = lens[s];
		unsigned int rounds = 1 + (unsigned int)(next() % 8);

		memcpy(buf, seeds[s], n);
		while (rounds--)
			n = mutate(buf, n);
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("%s: %zu seeds, %lu mutated inputs, no crash\n", argv[0], n_seeds, iterations);
	return 0;
}
