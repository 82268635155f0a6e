/* SPDX-License-Identifier: MIT */
/* X.509 certificates made at run time for the TLS tests (never committed keys). */
#ifndef FL_TEST_CERTS_H
#define FL_TEST_CERTS_H

#include <stddef.h>

/* A fresh temporary directory for certificates; t_certs_cleanup removes it and its files. */
void t_certs_dir(char *buf, size_t cap);
void t_certs_cleanup(const char *dir);
/*
 * Write @dir/@name.crt and @dir/@name.key: a P-256 key and its certificate,
 * signed by @ca (made earlier in @dir the same way) or self-signed as a CA
 * when @ca is NULL. A leaf names @dns and 127.0.0.1 in its subjectAltName.
 * Fails the test on error.
 */
void t_certs_make(const char *dir, const char *name, const char *ca, const char *dns);

#endif /* FL_TEST_CERTS_H */
