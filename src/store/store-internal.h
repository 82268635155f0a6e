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

#endif /* FL_STORE_INTERNAL_H */
