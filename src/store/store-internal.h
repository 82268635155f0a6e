/* SPDX-License-Identifier: MIT */
/* Helpers shared by the store layer's sources (never installed). */
#ifndef FL_STORE_INTERNAL_H
#define FL_STORE_INTERNAL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* The smallest page size a store is ever asked about (store.h: a power of two >= 4096). */
#define FL__STORE_MIN_PAGE 4096u

struct fl_store;

/*
 * A store's read-ahead hint: [off, off+len) will be read soon; start
 * reading it (posix_fadvise(POSIX_FADV_WILLNEED) on the file behind it),
 * without waiting for it. Never fails (a hint only). For the built-in
 * stores over files; set once, right after fl_store_create().
 */
typedef void (*fl__store_advise_fn)(void *userdata, uint64_t off, size_t len);
void fl__store_set_advise(struct fl_store *s, fl__store_advise_fn fn);
/* Give @s the hint, if it takes hints (bounds checked; nothing otherwise). Any thread. */
void fl__store_advise(struct fl_store *s, uint64_t off, size_t len);

#endif /* FL_STORE_INTERNAL_H */
