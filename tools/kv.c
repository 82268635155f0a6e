/* SPDX-License-Identifier: MIT */
/* The demos' key-value store and its load threads (kv.h). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "kv.h"
#include "util.h"

uint64_t kv_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

uint64_t kv_hash(uint64_t key, uint64_t version)
{
	return kv_mix(key * 0x100000001b3ull ^ kv_mix(version));
}

static uint32_t value_len(uint64_t key, uint64_t version)
{
	return VALUE_MIN + (uint32_t)(kv_hash(key, version) % (VALUE_MAX - VALUE_MIN + 1));
}

static void value_gen(uint64_t key, uint64_t version, uint8_t *out, uint32_t len)
{
	uint64_t s = kv_hash(version, key) | 1;

	for (uint32_t i = 0; i < len; i += 8) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		memcpy(out + i, &s, len - i < 8 ? len - i : 8);
	}
}

/* Keys are dense, so key k starts probing at slot k - 1: neighbours stay neighbours. */
struct kv_slot *kv_find(struct kv_hdr *h, uint64_t key)
{
	struct kv_slot *slots = (struct kv_slot *)((uint8_t *)h + SLOT);

	for (uint64_t i = (key - 1) % h->nslots;; i = (i + 1) % h->nslots)
		if (slots[i].key == key || !slots[i].key)
			return &slots[i];
}

void kv_set(struct kv_slot *s, uint64_t key, uint64_t version)
{
	s->key = key;
	s->version = version;
	s->len = value_len(key, version);
	value_gen(key, version, s->value, s->len);
}

bool kv_check(const struct kv_slot *s)
{
	uint8_t want[VALUE_MAX];

	if (s->len != value_len(s->key, s->version))
		return false;
	value_gen(s->key, s->version, want, s->len);
	return !memcmp(want, s->value, s->len);
}

uint64_t kv_slots(uint64_t size)
{
	return (size - SLOT) / SLOT;
}

void kv_build(struct kv_hdr *h, uint64_t slots, struct load_state init[LOADERS])
{
	memset(init, 0, LOADERS * sizeof(*init));
	*h = (struct kv_hdr){ .magic = KV_MAGIC, .nslots = slots, .nkeys = slots / 2 };
	h->nkeys -= h->nkeys % LOADERS;
	for (uint64_t k = 1; k <= h->nkeys; k++) {
		kv_set(kv_find(h, k), k, 1);
		init[(k - 1) % LOADERS].checksum += kv_hash(k, 1);
	}
	for (int i = 0; i < LOADERS; i++)
		init[i].rng = kv_mix((uint64_t)i + 77) | 1;
}

void kv_verify(const struct kv_hdr *h, const struct load_state *st, struct kv_verify *v)
{
	const struct kv_slot *slots = (const struct kv_slot *)((const uint8_t *)h + SLOT);
	uint64_t sum[LOADERS] = { 0 };

	v->keys = v->bad_values = 0;
	for (uint64_t i = 0; i < h->nslots; i++) {
		if (!slots[i].key)
			continue;
		if (slots[i].key > h->nkeys || !kv_check(&slots[i]))
			v->bad_values++;
		else
			sum[(slots[i].key - 1) % LOADERS] +=
				kv_hash(slots[i].key, slots[i].version);
		v->keys++;
	}
	v->checksums_ok = true;
	for (int i = 0; i < LOADERS; i++)
		v->checksums_ok &= sum[i] == st[i].checksum;
}

/* Wait while the program holds the load threads (load_hold()). */
static void park(struct load *ld)
{
	pthread_mutex_lock(&ld->mu);
	ld->parked++;
	pthread_cond_broadcast(&ld->cv);
	while (atomic_load(&ld->hold) && !atomic_load(&ld->stop))
		pthread_cond_wait(&ld->cv, &ld->mu);
	ld->parked--;
	pthread_mutex_unlock(&ld->mu);
}

static void *load_thread(void *arg)
{
	struct loader *l = arg;
	uint64_t per = l->h->nkeys / LOADERS;

	while (!atomic_load_explicit(&l->ld->stop, memory_order_relaxed)) {
		if (atomic_load_explicit(&l->ld->hold, memory_order_acquire)) {
			park(l->ld);
			continue;	/* stopped while held: not one operation more */
		}
		for (int k = 0; k < 256; k++) {
			uint64_t r, key;
			struct kv_slot *s;

			l->st.rng ^= l->st.rng << 13;
			l->st.rng ^= l->st.rng >> 7;
			l->st.rng ^= l->st.rng << 17;
			r = l->st.rng;
			/* A hot tenth of the keys takes nine operations in ten. */
			key = 1 + (r % 10 ? r % (per / 10 + 1) : r % per) * LOADERS + l->id;
			s = kv_find(l->h, key);
			if (s->key != key) {
				l->st.errors++;
				continue;
			}
			if (r >> 60 < 11) {	/* about 70% GET */
				l->st.gets++;
				if (!kv_check(s))
					l->st.errors++;
			} else {
				l->st.sets++;
				l->st.checksum -= kv_hash(key, s->version);
				kv_set(s, key, s->version + 1);
				l->st.checksum += kv_hash(key, s->version);
			}
		}
	}
	return NULL;
}

int load_start(struct load *ld, struct kv_hdr *h, const struct load_state *st)
{
	atomic_store(&ld->stop, false);
	atomic_store(&ld->hold, false);
	pthread_mutex_init(&ld->mu, NULL);
	pthread_cond_init(&ld->cv, NULL);
	ld->parked = 0;
	ld->t0 = fl__now_ns();
	for (unsigned int i = 0; i < LOADERS; i++) {
		ld->l[i] = (struct loader){ .h = h, .st = st[i], .id = i, .ld = ld };
		if (pthread_create(&ld->l[i].th, NULL, load_thread, &ld->l[i])) {
			atomic_store(&ld->stop, true);
			for (unsigned int k = 0; k < i; k++)
				pthread_join(ld->l[k].th, NULL);
			pthread_mutex_destroy(&ld->mu);
			pthread_cond_destroy(&ld->cv);
			return -EAGAIN;
		}
	}
	ld->running = true;
	return 0;
}

void load_stop(struct load *ld)
{
	if (!ld->running)
		return;
	pthread_mutex_lock(&ld->mu);
	atomic_store(&ld->stop, true);
	pthread_cond_broadcast(&ld->cv);
	pthread_mutex_unlock(&ld->mu);
	for (unsigned int i = 0; i < LOADERS; i++)
		pthread_join(ld->l[i].th, NULL);
	ld->ns = fl__now_ns() - ld->t0;
	ld->running = false;
	pthread_mutex_destroy(&ld->mu);
	pthread_cond_destroy(&ld->cv);
}

int load_hold(struct load *ld, int timeout_ms)
{
	struct timespec until;
	int r = 0;
	bool all;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&ld->mu);
	atomic_store_explicit(&ld->hold, true, memory_order_release);
	while (ld->parked < LOADERS && r == 0)
		r = pthread_cond_timedwait(&ld->cv, &ld->mu, &until);
	all = ld->parked == LOADERS;
	pthread_mutex_unlock(&ld->mu);
	if (!all) {
		load_release(ld);
		return -ETIMEDOUT;
	}
	return 0;
}

void load_release(struct load *ld)
{
	pthread_mutex_lock(&ld->mu);
	atomic_store(&ld->hold, false);
	pthread_cond_broadcast(&ld->cv);
	pthread_mutex_unlock(&ld->mu);
}

uint64_t load_ops(const struct load_state *st)
{
	uint64_t n = 0;

	for (int i = 0; i < LOADERS; i++)
		n += st[i].gets + st[i].sets;
	return n;
}

uint64_t load_errors(const struct load_state *st)
{
	uint64_t n = 0;

	for (int i = 0; i < LOADERS; i++)
		n += st[i].errors;
	return n;
}
