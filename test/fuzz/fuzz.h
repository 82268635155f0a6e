/* SPDX-License-Identifier: MIT */
/* The one entry point every fuzz target defines (libFuzzer's, also used by driver.c). */
#ifndef FL_FUZZ_H
#define FL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* FL_FUZZ_H */
