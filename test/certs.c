/* SPDX-License-Identifier: MIT */
/* Certificates for the TLS tests, made with the OpenSSL API in a temporary directory. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "harness.h"
#include "certs.h"

void t_certs_dir(char *buf, size_t cap)
{
	snprintf(buf, cap, "/tmp/fl-certs-XXXXXX");
	T_ASSERT(mkdtemp(buf));
}

void t_certs_cleanup(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static void add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);

	T_ASSERT(e);
	T_ASSERT(X509_add_ext(x, e, -1) == 1);
	X509_EXTENSION_free(e);
}

static void *read_pem(const char *dir, const char *name, const char *ext)
{
	char p[512];
	void *v;
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s.%s", dir, name, ext);
	f = fopen(p, "re");
	T_ASSERT(f);
	if (!strcmp(ext, "crt"))
		v = PEM_read_X509(f, NULL, NULL, NULL);
	else
		v = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	T_ASSERT(v);
	return v;
}

void t_certs_make(const char *dir, const char *name, const char *ca, const char *dns)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *ikey = ca ? read_pem(dir, ca, "key") : key;
	X509 *issuer = ca ? read_pem(dir, ca, "crt") : NULL;
	X509 *x = X509_new();
	X509_NAME *n;
	X509V3_CTX ctx;
	char p[512], san[300];
	FILE *f;

	T_ASSERT(key && x);
	T_ASSERT(X509_set_version(x, 2) == 1);
	T_ASSERT(ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(random() & 0x7fffffff) + 1));
	T_ASSERT(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
	T_ASSERT(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
	T_ASSERT(X509_set_pubkey(x, key) == 1);
	n = X509_get_subject_name(x);
	T_ASSERT(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name,
					    -1, -1, 0) == 1);
	T_ASSERT(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n) == 1);
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	add_ext(x, &ctx, NID_subject_key_identifier, "hash");
	if (!ca) {
		add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(x, &ctx, NID_authority_key_identifier, "keyid");
		add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature");
		add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
		snprintf(san, sizeof(san), "DNS:%s,IP:127.0.0.1", dns ? dns : name);
		add_ext(x, &ctx, NID_subject_alt_name, san);
	}
	T_ASSERT(X509_sign(x, ikey, EVP_sha256()) > 0);

	snprintf(p, sizeof(p), "%s/%s.crt", dir, name);
	f = fopen(p, "we");
	T_ASSERT(f && PEM_write_X509(f, x) == 1);
	fclose(f);
	snprintf(p, sizeof(p), "%s/%s.key", dir, name);
	f = fopen(p, "we");
	T_ASSERT(f && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1);
	fclose(f);
	X509_free(x);
	X509_free(issuer);
	if (ikey != key)
		EVP_PKEY_free(ikey);
	EVP_PKEY_free(key);
}
