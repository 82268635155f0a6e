/* SPDX-License-Identifier: MIT */
/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78) for the wire format (never installed). */
#ifndef FL_NET_CRC32C_H
#define FL_NET_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The CRC32C of @n bytes at @p, continuing from @crc: pass 0 to start, and
 * the previous result to extend (crc(A || B) = fl__crc32c(fl__crc32c(0, A), B)).
 * The usual pre- and post-inversion are applied, so fl__crc32c(0, "123456789", 9)
 * is 0xE3069283. Uses the fastest implementation this CPU has.
 * Thread safety: any thread.
 */
uint32_t fl__crc32c(uint32_t crc, const void *p, size_t n);

/* The implementations, for tests and measurements. */
enum fl__crc32c_impl {
	FL__CRC32C_SW,		/* portable slicing-by-8 tables */
	FL__CRC32C_HW,		/* SSE4.2 crc32, one stream */
	FL__CRC32C_HW3,		/* SSE4.2 crc32, three streams joined with PCLMULQDQ */
};

/* Whether this CPU can run @impl. */
bool fl__crc32c_impl_available(enum fl__crc32c_impl impl);
/* The implementation fl__crc32c() uses here: "sse4.2+pclmul", "sse4.2" or "slicing-by-8". */
const char *fl__crc32c_impl_name(void);
/* fl__crc32c() with a given implementation, which must be available. */
uint32_t fl__crc32c_with(enum fl__crc32c_impl impl, uint32_t crc, const void *p, size_t n);

#endif /* FL_NET_CRC32C_H */
