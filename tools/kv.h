/* SPDX-License-Identifier: MIT */
/*
 * The demos' key-value store (faultline migrate --demo, faultline snapshot
 * --demo): fixed 512-byte slots in one region, every value a function of
 * its key and version so that anyone can check it, and the load threads
 * that serve it.
 */
#ifndef FL_TOOL_KV_H
#define FL_TOOL_KV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where the store lives: far from where mmap puts things, so another process has it free. */
#define KV_ADDR 0x5e0000000000ull
#define KV_MAGIC 0x315653564b4c4646ull
#define SLOT 512u
#define VALUE_MIN 16u
#define VALUE_MAX (SLOT - 24u)
#define LOADERS 2

/* What one load thread has done; checksum: the sum of kv_hash(key, version) over its keys. */
struct load_state {
	uint64_t rng;
	uint64_t gets, sets, errors;
	uint64_t checksum;
};

/*
 * The store's first slot. Keys 1..nkeys are all present; each load thread
 * owns the keys k with (k - 1) % LOADERS == its number. saved: the load
 * threads' states, for a program that keeps them with the store (the
 * snapshot demo does, at the instant; the migration demo sends them apart).
 */
struct kv_hdr {
	uint64_t magic;
	uint64_t nslots;
	uint64_t nkeys;
	uint64_t reserved;
	struct load_state saved[LOADERS];
};

struct kv_slot {
	uint64_t key;			/* 0: empty */
	uint64_t version;
	uint32_t len;
	uint32_t reserved;
	uint8_t value[VALUE_MAX];
};

_Static_assert(sizeof(struct kv_slot) == SLOT, "slot size");
_Static_assert(sizeof(struct kv_hdr) <= SLOT, "the header fits the first slot");

uint64_t kv_mix(uint64_t x);
uint64_t kv_hash(uint64_t key, uint64_t version);
struct kv_slot *kv_find(struct kv_hdr *h, uint64_t key);
void kv_set(struct kv_slot *s, uint64_t key, uint64_t version);
bool kv_check(const struct kv_slot *s);
/* As many slots as @size bytes hold after the header (half of them will be used). */
uint64_t kv_slots(uint64_t size);
/* Build the store in @h (zeroed memory of @slots slots after the header): every key at version 1. */
void kv_build(struct kv_hdr *h, uint64_t slots, struct load_state init[LOADERS]);

struct kv_verify {
	uint64_t keys, bad_values;
	bool checksums_ok;
};

/* Every key present, every value right, each thread's checksum the sum over its keys. */
void kv_verify(const struct kv_hdr *h, const struct load_state *st, struct kv_verify *v);

struct load;

struct loader {
	struct kv_hdr *h;
	struct load_state st;
	unsigned int id;
	struct load *ld;
	pthread_t th;
};

/*
 * The load threads: about 70% GETs (each value checked) and 30% SETs, a hot
 * tenth of the keys taking nine operations in ten. Between batches of 256
 * operations each looks whether it is held (load_hold()).
 */
struct load {
	struct loader l[LOADERS];
	_Atomic bool stop;
	_Atomic bool hold;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned int parked;		/* under mu */
	bool running;
	uint64_t t0, ns;
};

int load_start(struct load *ld, struct kv_hdr *h, const struct load_state *st);
void load_stop(struct load *ld);
/*
 * Hold the load threads between two operations, so that the store is
 * consistent and their states match it: returns 0 once all wait, or
 * -ETIMEDOUT after @timeout_ms (they are let go again). load_release()
 * lets them go on.
 */
int load_hold(struct load *ld, int timeout_ms);
void load_release(struct load *ld);
uint64_t load_ops(const struct load_state *st);
uint64_t load_errors(const struct load_state *st);

#endif /* FL_TOOL_KV_H */
