/* SPDX-License-Identifier: MIT */
/* Firecracker's page-fault-handler handshake: a strict, bounded parser of its JSON region list. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "faultline.h"
#include "monitor-int.h"

#define FC_PAGE_4K 4096u
#define FC_PAGE_2M (2u << 20)

/* The keys we know; anything else is skipped, whatever its value. */
enum key {
	K_BASE,
	K_SIZE,
	K_OFFSET,
	K_PAGE_SIZE,
	K_PAGE_SIZE_KIB,	/* deprecated, and despite its name in bytes */
	K_COUNT,
	K_UNKNOWN = K_COUNT,
};

static const char *const key_names[K_COUNT] = {
	"base_host_virt_addr", "size", "offset", "page_size", "page_size_kib",
};

/* Long enough for every known key; longer keys are unknown by definition. */
#define KEY_MAX 24

struct jp {
	const uint8_t *p, *end;
	char *err;
	size_t errlen;
	size_t region;		/* index of the object being read, for messages */
};

static size_t at(const struct jp *j, const uint8_t *start)
{
	return (size_t)(j->p - start);
}

static void skip_ws(struct jp *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

/* The input ended inside a value: more bytes may make it valid. */
static int need_more(struct jp *j)
{
	fl__mon_errf(j->err, j->errlen, "incomplete JSON: the array is not closed yet");
	return -EAGAIN;
}

static int syntax(struct jp *j, const char *what)
{
	if (j->p >= j->end)
		return need_more(j);
	fl__mon_errf(j->err, j->errlen, "JSON syntax error: %s, found byte 0x%02x", what, *j->p);
	return -EPROTO;
}

/* Bytes of one UTF-8 sequence starting at p[0] (>= 0x80): 2-4, 0 if invalid, -1 if cut short. */
static int utf8_len(const uint8_t *p, const uint8_t *end)
{
	uint8_t c = p[0], lo = 0x80, hi = 0xbf;
	int n;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	/* No overlong forms, no UTF-16 surrogates, nothing past U+10FFFF. */
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	for (int i = 1; i < n; i++) {
		if (p + i >= end)
			return -1;
		if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xbf))
			return 0;
	}
	return n;
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * A string, at its opening quote. Its decoded ASCII form goes to @key
 * (KEY_MAX bytes with the NUL) when it fits and holds only printable ASCII;
 * otherwise *@key_ok is false.
 */
static int string(struct jp *j, char *key, bool *key_ok)
{
	size_t kn = 0;
	bool ok = true;

	j->p++;	/* the quote */
	for (;;) {
		uint8_t c;

		if (j->p >= j->end)
			return need_more(j);
		c = *j->p;
		if (c == '"') {
			j->p++;
			break;
		}
		if (c < 0x20)
			return syntax(j, "control character inside a string");
		if (c == '\\') {
			if (j->p + 1 >= j->end)
				return need_more(j);
			c = j->p[1];
			if (c == 'u') {
				unsigned int cp = 0;

				for (int i = 0; i < 4; i++) {
					int h;

					if (j->p + 2 + i >= j->end)
						return need_more(j);
					h = hexval(j->p[2 + i]);
					if (h < 0) {
						j->p += 2 + i;
						return syntax(j, "bad \\u escape");
					}
					cp = cp << 4 | (unsigned int)h;
				}
				j->p += 6;
				if (cp >= 0x20 && cp < 0x7f && kn + 1 < KEY_MAX)
					key[kn++] = (char)cp;
				else
					ok = false;
				continue;
			}
			if (!strchr("\"\\/bfnrt", c) || !c) {
				j->p++;
				return syntax(j, "bad escape");
			}
			j->p += 2;
			if ((c == '"' || c == '\\' || c == '/') && kn + 1 < KEY_MAX)
				key[kn++] = (char)c;
			else
				ok = false;
			continue;
		}
		if (c >= 0x80) {
			int n = utf8_len(j->p, j->end);

			if (n < 0)
				return need_more(j);
			if (!n)
				return syntax(j, "invalid UTF-8 inside a string");
			j->p += n;
			ok = false;
			continue;
		}
		if (kn + 1 < KEY_MAX)
			key[kn++] = (char)c;
		else
			ok = false;
		j->p++;
	}
	key[kn] = '\0';
	*key_ok = ok;
	return 0;
}

/*
 * A number, as the JSON grammar has it. *@ret gets its value when it is an
 * unsigned integer that fits 64 bits; otherwise *@kind says why not:
 * 1 negative, 2 fraction or exponent, 3 too large.
 */
static int number(struct jp *j, uint64_t *ret, int *kind)
{
	uint64_t v = 0;
	bool neg = false;

	*kind = 0;
	if (*j->p == '-') {
		neg = true;
		j->p++;
	}
	if (j->p >= j->end)
		return need_more(j);
	if (*j->p == '0') {
		j->p++;
	} else if (*j->p >= '1' && *j->p <= '9') {
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
			unsigned int d = (unsigned int)(*j->p - '0');

			if (v > (UINT64_MAX - d) / 10)
				*kind = 3;
			else
				v = v * 10 + d;
			j->p++;
		}
	} else {
		return syntax(j, "expected a digit");
	}
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (j->p >= j->end)
			return need_more(j);
		if (*j->p < '0' || *j->p > '9')
			return syntax(j, "expected a digit after '.'");
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
		*kind = 2;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end)
			return need_more(j);
		if (*j->p < '0' || *j->p > '9')
			return syntax(j, "expected a digit in the exponent");
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
		*kind = 2;
	}
	/* A number may continue in bytes not read yet. */
	if (j->p >= j->end)
		return need_more(j);
	if (neg)
		*kind = 1;
	*ret = v;
	return 0;
}

static int literal(struct jp *j, const char *word)
{
	size_t n = strlen(word);

	for (size_t i = 0; i < n; i++) {
		if (j->p >= j->end)
			return need_more(j);
		if (*j->p != (uint8_t)word[i])
			return syntax(j, "unknown literal");
		j->p++;
	}
	return 0;
}

/* Any JSON value, checked and thrown away. */
static int skip_value(struct jp *j, int depth)
{
	char key[KEY_MAX];
	bool ok;
	uint64_t v;
	int kind, r;

	if (depth > FL__FC_MAX_DEPTH) {
		fl__mon_errf(j->err, j->errlen, "JSON nested deeper than %d levels",
			     FL__FC_MAX_DEPTH);
		return -E2BIG;
	}
	skip_ws(j);
	if (j->p >= j->end)
		return need_more(j);
	switch (*j->p) {
	case '"':
		return string(j, key, &ok);
	case 't':
		return literal(j, "true");
	case 'f':
		return literal(j, "false");
	case 'n':
		return literal(j, "null");
	case '[':
	case '{': {
		uint8_t close = *j->p == '[' ? ']' : '}';
		bool obj = close == '}';

		j->p++;
		skip_ws(j);
		if (j->p < j->end && *j->p == close) {
			j->p++;
			return 0;
		}
		for (;;) {
			if (obj) {
				skip_ws(j);
				if (j->p >= j->end)
					return need_more(j);
				if (*j->p != '"')
					return syntax(j, "expected a key");
				r = string(j, key, &ok);
				if (r < 0)
					return r;
				skip_ws(j);
				if (j->p >= j->end)
					return need_more(j);
				if (*j->p != ':')
					return syntax(j, "expected ':'");
				j->p++;
			}
			r = skip_value(j, depth + 1);
			if (r < 0)
				return r;
			skip_ws(j);
			if (j->p >= j->end)
				return need_more(j);
			if (*j->p == close) {
				j->p++;
				return 0;
			}
			if (*j->p != ',')
				return syntax(j, obj ? "expected ',' or '}'"
						     : "expected ',' or ']'");
			j->p++;
		}
	}
	default:
		if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
			return number(j, &v, &kind);
		return syntax(j, "expected a value");
	}
}

static enum key find_key(const char *k, bool ok)
{
	if (!ok)
		return K_UNKNOWN;
	for (int i = 0; i < K_COUNT; i++)
		if (!strcmp(k, key_names[i]))
			return (enum key)i;
	return K_UNKNOWN;
}

/* One region object, at its '{'. */
static int region(struct jp *j, uint64_t val[K_COUNT], bool seen[K_COUNT])
{
	char key[KEY_MAX];
	bool ok;
	int r;

	j->p++;
	skip_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		enum key k;

		skip_ws(j);
		if (j->p >= j->end)
			return need_more(j);
		if (*j->p != '"')
			return syntax(j, "expected a key");
		r = string(j, key, &ok);
		if (r < 0)
			return r;
		k = find_key(key, ok);
		skip_ws(j);
		if (j->p >= j->end)
			return need_more(j);
		if (*j->p != ':')
			return syntax(j, "expected ':'");
		j->p++;
		skip_ws(j);
		if (j->p >= j->end)
			return need_more(j);
		if (k == K_UNKNOWN) {
			r = skip_value(j, 3);
			if (r < 0)
				return r;
		} else {
			int kind;

			if (seen[k]) {
				fl__mon_errf(j->err, j->errlen,
					     "region %zu: key \"%s\" appears twice", j->region,
					     key_names[k]);
				return -EINVAL;
			}
			if (*j->p != '-' && (*j->p < '0' || *j->p > '9')) {
				/* Check it is JSON at all before calling it the wrong type. */
				r = skip_value(j, 3);
				if (r < 0)
					return r;
				fl__mon_errf(j->err, j->errlen,
					     "region %zu: \"%s\" must be an unsigned integer",
					     j->region, key_names[k]);
				return -EINVAL;
			}
			r = number(j, &val[k], &kind);
			if (r < 0)
				return r;
			if (kind) {
				static const char *const why[] = {
					"", "is negative", "is not an integer", "exceeds 2^64 - 1",
				};

				fl__mon_errf(j->err, j->errlen, "region %zu: \"%s\" %s", j->region,
					     key_names[k], why[kind]);
				return -EINVAL;
			}
			seen[k] = true;
		}
		skip_ws(j);
		if (j->p >= j->end)
			return need_more(j);
		if (*j->p == '}') {
			j->p++;
			return 0;
		}
		if (*j->p != ',')
			return syntax(j, "expected ',' or '}'");
		j->p++;
	}
}

/* Turn one object's keys into a region. */
static int make_region(struct jp *j, const uint64_t val[K_COUNT], const bool seen[K_COUNT],
		       struct fl__mon_region *rg)
{
	uint64_t ps;

	for (int k = K_BASE; k <= K_OFFSET; k++) {
		if (!seen[k]) {
			fl__mon_errf(j->err, j->errlen, "region %zu: \"%s\" is missing", j->region,
				     key_names[k]);
			return -EINVAL;
		}
	}
	if (!seen[K_PAGE_SIZE] && !seen[K_PAGE_SIZE_KIB]) {
		fl__mon_errf(j->err, j->errlen, "region %zu: \"page_size\" is missing", j->region);
		return -EINVAL;
	}
	if (seen[K_PAGE_SIZE] && seen[K_PAGE_SIZE_KIB] &&
	    val[K_PAGE_SIZE] != val[K_PAGE_SIZE_KIB]) {
		fl__mon_errf(j->err, j->errlen,
			     "region %zu: \"page_size\" %llu and \"page_size_kib\" %llu disagree "
			     "(both are in bytes)", j->region,
			     (unsigned long long)val[K_PAGE_SIZE],
			     (unsigned long long)val[K_PAGE_SIZE_KIB]);
		return -EINVAL;
	}
	ps = seen[K_PAGE_SIZE] ? val[K_PAGE_SIZE] : val[K_PAGE_SIZE_KIB];
	if (ps != FC_PAGE_4K && ps != FC_PAGE_2M) {
		fl__mon_errf(j->err, j->errlen,
			     "region %zu: page size %llu is neither 4096 nor 2097152 bytes",
			     j->region, (unsigned long long)ps);
		return -EINVAL;
	}
	*rg = (struct fl__mon_region){
		.addr = val[K_BASE],
		.len = val[K_SIZE],
		.off = val[K_OFFSET],
		.page_size = (uint32_t)ps,
		.store = FL__MON_STORE_MONITOR,
		.mem = ps == FC_PAGE_4K ? FL_MEM_ANON : FL_MEM_HUGETLB,
	};
	return 0;
}

static int parse(struct jp *j, const uint8_t *start, struct fl__mon_hello *h)
{
	size_t cap = 0;
	int r;

	skip_ws(j);
	if (j->p >= j->end)
		return need_more(j);
	if (*j->p != '[')
		return syntax(j, "expected '[' to start the region list");
	j->p++;
	skip_ws(j);
	if (j->p < j->end && *j->p == ']') {
		fl__mon_errf(j->err, j->errlen, "no regions");
		return -EINVAL;
	}
	for (;;) {
		uint64_t val[K_COUNT] = { 0 };
		bool seen[K_COUNT] = { false };

		skip_ws(j);
		if (j->p >= j->end)
			return need_more(j);
		if (*j->p != '{') {
			r = skip_value(j, 2);
			if (r < 0)
				return r;
			fl__mon_errf(j->err, j->errlen, "element %u of the array is not an object",
				     h->n);
			return -EINVAL;
		}
		if (h->n == FL_MONITOR_MAX_REGIONS) {
			fl__mon_errf(j->err, j->errlen, "more than %u regions",
				     FL_MONITOR_MAX_REGIONS);
			return -E2BIG;
		}
		j->region = h->n;
		r = region(j, val, seen);
		if (r < 0)
			return r;
		if (h->n == cap) {
			size_t nc = cap ? cap * 2 : 4;
			struct fl__mon_region *nr;

			if (nc > FL_MONITOR_MAX_REGIONS)
				nc = FL_MONITOR_MAX_REGIONS;
			nr = realloc(h->r, nc * sizeof(*nr));
			if (!nr) {
				fl__mon_errf(j->err, j->errlen, "out of memory");
				return -ENOMEM;
			}
			h->r = nr;
			cap = nc;
		}
		r = make_region(j, val, seen, &h->r[h->n]);
		if (r < 0)
			return r;
		h->n++;
		skip_ws(j);
		if (j->p >= j->end)
			return need_more(j);
		if (*j->p == ']') {
			j->p++;
			break;
		}
		if (*j->p != ',')
			return syntax(j, "expected ',' or ']'");
		j->p++;
	}
	skip_ws(j);
	if (j->p < j->end) {
		fl__mon_errf(j->err, j->errlen, "%zu bytes after the region list (at byte %zu)",
			     (size_t)(j->end - j->p), at(j, start));
		return -EPROTO;
	}
	return fl__mon_check_regions(h->r, h->n, j->err, j->errlen);
}

int fl__fc_parse(const void *json, size_t len, struct fl__mon_hello *ret, char *err,
		 size_t errlen)
{
	struct fl__mon_hello h = { .firecracker = true };
	struct jp j = {
		.p = json,
		.end = (const uint8_t *)json + len,
		.err = err,
		.errlen = errlen,
	};
	int r;

	if (!ret || (!json && len))
		return -EINVAL;
	if (len > FL_MONITOR_MAX_MSG) {
		fl__mon_errf(err, errlen, "handshake of %zu bytes exceeds the limit of %u", len,
			     FL_MONITOR_MAX_MSG);
		return -E2BIG;
	}
	if (!len)
		return need_more(&j);
	r = parse(&j, json, &h);
	if (r < 0) {
		fl__mon_hello_free(&h);
		return r;
	}
	*ret = h;
	return 0;
}
