/* SPDX-License-Identifier: MIT */
/*
 * The Redis store: an object's 4 KiB blocks kept in Redis or a Redis Cluster
 * through hiredis. One pipeline per server for each read (a prefetch window)
 * and each write; a per-chunk bitmap records which blocks were ever written,
 * so that a block that is missing although written is an error, never zeros.
 * With a rediss:// URL every connection is TLS through the project's
 * transport: hiredis then only formats commands and parses replies.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "faultline.h"
#include "internal.h"
#include "store-internal.h"

#ifndef FL_HAVE_HIREDIS

FL_API int fl_store_redis_open(const char *url, const struct fl_store_redis_opts *opts,
			       struct fl_store **ret)
{
	(void)url;
	(void)opts;
	if (ret)
		*ret = NULL;
	fl__err("fl_store_redis_open: faultline was built without hiredis (REDIS=0)");
	return -EOPNOTSUPP;
}

#else

#include <hiredis/hiredis.h>
#include <hiredis/sds.h>

#include "net/sock.h"
#include "net/transport.h"

#define BLOCK 4096u
#define CHUNK_BLOCKS 64u		/* blocks per chunk: one bitmap key, one hash */
#define NSLOTS 16384u
#define MAX_NODES 64u
#define NO_NODE 0xffffu
#define PREFIX_MAX 200u
#define KEY_MAX (PREFIX_MAX + 48u)
#define MAX_REDIRECTS 16

#define REDIS_FLAGS_ALL (FL_STORE_REDIS_HASH | FL_STORE_REDIS_READONLY)

struct node {
	char host[256];
	int port;
	pthread_mutex_t lock;		/* idle[], nidle */
	redisContext **idle;
	unsigned int nidle;
};

struct redis_store {
	char prefix[PREFIX_MAX + 1];
	uint64_t size, nblocks;
	uint32_t flags;
	bool cluster;
	struct timeval cto, tto;
	unsigned int retry_ms, wait_replicas, wait_timeout_ms, max_idle;
	pthread_mutex_t lock;		/* nodes[], nnodes, slots[] */
	struct node *nodes[MAX_NODES];	/* appended, never removed until close */
	unsigned int nnodes;
	uint16_t slots[NSLOTS];		/* node index of each slot's master, or NO_NODE */
	pthread_mutex_t refresh_lock;	/* one CLUSTER SLOTS at a time */
	_Atomic uint64_t *written;	/* blocks this store wrote (acknowledged) */
	struct fl__transport *tls;	/* rediss://: every connection TLS; NULL: plain TCP */
	char *peer_name;		/* the name the servers' certificates must bear; NULL: each host */
	int tls_err;			/* the last failed TLS connection's -errno, under lock */
	char tls_msg[320];		/* and why */
};

/* One command of a batch, its routing and its reply. */
struct cmd {
	int argc;
	const char **argv;
	size_t *argvlen;
	unsigned int slot;
	redisReply *reply;
};

/* ------------------------------------------------------------ hashing */

/* CRC16-CCITT (XMODEM), as Redis Cluster computes key slots. */
static uint16_t crc16(const char *s, size_t n)
{
	uint16_t crc = 0;

	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)((uint8_t)s[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

/* The hash slot of @key: of its first non-empty {tag} if it has one. */
static unsigned int key_slot(const char *key, size_t n)
{
	const char *o = memchr(key, '{', n), *c;

	if (o) {
		c = memchr(o + 1, '}', n - (size_t)(o + 1 - key));
		if (c && c > o + 1)
			return crc16(o + 1, (size_t)(c - o - 1)) & (NSLOTS - 1);
	}
	return crc16(key, n) & (NSLOTS - 1);
}

/* ------------------------------------------------------------- signals */

/*
 * hiredis writes with write(2): a peer that closed raises SIGPIPE. Block it
 * around our I/O and swallow one that we raised, leaving the process's
 * disposition alone.
 */
struct pipe_guard {
	sigset_t old;
	bool was_pending;
};

static void pipe_block(struct pipe_guard *g)
{
	sigset_t set, pend;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, &g->old);
	sigpending(&pend);
	g->was_pending = sigismember(&pend, SIGPIPE);
}

static void pipe_unblock(struct pipe_guard *g)
{
	sigset_t set, pend;
	struct timespec zero = { 0, 0 };

	sigpending(&pend);
	if (!g->was_pending && sigismember(&pend, SIGPIPE)) {
		sigemptyset(&set);
		sigaddset(&set, SIGPIPE);
		while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---------------------------------------------------------- connections */

/*
 * A TLS connection is a hiredis context made with redisConnectFd on the
 * transport's socket that hiredis never reads or writes: it appends commands
 * to its output buffer and parses the replies it is fed; the bytes go through
 * the transport here (conn_flush, conn_reply). The link rides in the
 * reader's privdata, which hiredis's own reply objects do not use.
 */
struct tls_link {
	struct fl__conn *conn;
	int timeout_ms;			/* a send or a reply without progress */
};

static struct tls_link *conn_tls(const redisContext *c)
{
	return c->reader ? c->reader->privdata : NULL;
}

static void conn_set_err(redisContext *c, const char *what, int err, struct fl__conn *t)
{
	const char *why = t ? fl__conn_error(t) : "";

	c->err = REDIS_ERR_IO;
	snprintf(c->errstr, sizeof(c->errstr), "%s: %s%s%s", what, strerror(-err),
		 why[0] ? ": " : "", why);
}

static void conn_free(redisContext *c)
{
	struct tls_link *l;

	if (!c)
		return;
	l = conn_tls(c);
	if (!l) {
		redisFree(c);
		return;
	}
	c->reader->privdata = NULL;
	redisFreeKeepFd(c);		/* the socket is the transport's */
	fl__conn_close(l->conn);
	free(l);
}

/* Connect to @n over TLS; NULL with st->tls_err and st->tls_msg set. */
static redisContext *tls_connect(struct redis_store *st, struct node *n)
{
	struct fl__sock_opts so = { .flags = FL__SOCK_NODELAY };
	int cto = (int)(st->cto.tv_sec * 1000 + st->cto.tv_usec / 1000);
	struct tls_link *l = NULL;
	struct fl__conn *t = NULL;
	redisContext *c = NULL;
	char msg[256] = "";
	int fd, rc;

	rc = fl__sock_connect(n->host, (uint16_t)n->port, &so, cto, &fd);
	if (!rc)
		rc = fl__conn_open(st->tls, fd, FL__CONN_CLIENT, st->peer_name ? st->peer_name : n->host,
				   cto, &t, msg, sizeof(msg));
	if (!rc) {
		l = malloc(sizeof(*l));
		c = l ? redisConnectFd(fl__conn_fd(t)) : NULL;
		rc = c && !c->err ? 0 : -ENOMEM;
	}
	if (rc) {
		pthread_mutex_lock(&st->lock);
		st->tls_err = rc;
		snprintf(st->tls_msg, sizeof(st->tls_msg), "%s:%d: %s%s%s", n->host, n->port,
			 strerror(-rc), msg[0] ? ": " : "", msg);
		pthread_mutex_unlock(&st->lock);
		fl__debug("redis: connecting to %s", st->tls_msg);
		if (c)
			redisFreeKeepFd(c);
		fl__conn_close(t);
		free(l);
		return NULL;
	}
	l->conn = t;
	l->timeout_ms = (int)(st->tto.tv_sec * 1000 + st->tto.tv_usec / 1000);
	c->reader->privdata = l;
	return c;
}

static struct node *node_new(const char *host, int port, unsigned int max_idle)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->idle = calloc(max_idle, sizeof(*n->idle));
	if (!n->idle || strlen(host) >= sizeof(n->host)) {
		free(n->idle);
		free(n);
		return NULL;
	}
	strcpy(n->host, host);
	n->port = port;
	pthread_mutex_init(&n->lock, NULL);
	return n;
}

static void node_free(struct node *n)
{
	if (!n)
		return;
	for (unsigned int i = 0; i < n->nidle; i++)
		conn_free(n->idle[i]);
	free(n->idle);
	pthread_mutex_destroy(&n->lock);
	free(n);
}

/* The index of host:port among the nodes, added if new; NO_NODE when full. Under st->lock. */
static unsigned int node_find_add(struct redis_store *st, const char *host, int port)
{
	struct node *n;

	for (unsigned int i = 0; i < st->nnodes; i++)
		if (st->nodes[i]->port == port && !strcmp(st->nodes[i]->host, host))
			return i;
	if (st->nnodes >= MAX_NODES)
		return NO_NODE;
	n = node_new(host, port, st->max_idle);
	if (!n)
		return NO_NODE;
	st->nodes[st->nnodes] = n;
	return st->nnodes++;
}

static redisContext *conn_get(struct redis_store *st, struct node *n)
{
	redisContext *c = NULL;

	pthread_mutex_lock(&n->lock);
	if (n->nidle)
		c = n->idle[--n->nidle];
	pthread_mutex_unlock(&n->lock);
	if (c)
		return c;
	if (st->tls)
		return tls_connect(st, n);
	c = redisConnectWithTimeout(n->host, n->port, st->cto);
	if (!c || c->err) {
		fl__debug("redis: connecting to %s:%d: %s", n->host, n->port,
			  c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		return NULL;
	}
	if (redisSetTimeout(c, st->tto) != REDIS_OK) {
		redisFree(c);
		return NULL;
	}
	return c;
}

static void conn_put(struct redis_store *st, struct node *n, redisContext *c, bool ok)
{
	if (!c)
		return;
	if (ok && !c->err) {
		pthread_mutex_lock(&n->lock);
		if (n->nidle < st->max_idle) {
			n->idle[n->nidle++] = c;
			c = NULL;
		}
		pthread_mutex_unlock(&n->lock);
	}
	if (c)
		conn_free(c);
}

/* Send everything appended to @c. */
static int conn_flush(redisContext *c)
{
	struct tls_link *l = conn_tls(c);
	int done = 0;

	if (l) {
		size_t len = sdslen(c->obuf);
		int rc = len ? fl__conn_send_all(l->conn, c->obuf, len, l->timeout_ms) : 0;

		if (rc < 0) {
			conn_set_err(c, "sending", rc, l->conn);
			return -1;
		}
		sdsclear(c->obuf);
		return 0;
	}
	while (!done)
		if (redisBufferWrite(c, &done) != REDIS_OK)
			return -1;
	return 0;
}

/* The next reply on @c (sending what is appended first), as redisGetReply. */
static int conn_reply(redisContext *c, void **reply)
{
	struct tls_link *l = conn_tls(c);
	char buf[16384];
	ssize_t n;

	if (!l)
		return redisGetReply(c, reply);
	*reply = NULL;
	if (c->err || redisGetReplyFromReader(c, reply) != REDIS_OK)
		return REDIS_ERR;
	if (*reply)
		return REDIS_OK;
	if (conn_flush(c))
		return REDIS_ERR;
	while (!*reply) {
		n = fl__conn_recv_some(l->conn, buf, sizeof(buf), l->timeout_ms);
		if (n <= 0) {
			conn_set_err(c, "receiving", n ? (int)n : -ECONNRESET, l->conn);
			return REDIS_ERR;
		}
		if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK ||
		    redisGetReplyFromReader(c, reply) != REDIS_OK)
			return REDIS_ERR;
	}
	return REDIS_OK;
}

/* The command of words @w0... (at most 4, NULL after the last) and its reply, as redisCommand; NULL on a connection error. */
static redisReply *conn_command(redisContext *c, const char *w0, ...)
{
	const char *argv[4];
	redisReply *r = NULL;
	va_list ap;
	int argc = 0;

	va_start(ap, w0);
	for (const char *w = w0; w && argc < 4; w = va_arg(ap, const char *))
		argv[argc++] = w;
	va_end(ap);
	if (redisAppendCommandArgv(c, argc, argv, NULL) != REDIS_OK ||
	    conn_reply(c, (void **)&r) != REDIS_OK)
		return NULL;
	return r;
}

/* ------------------------------------------------------------ slot map */

static bool is_err(const redisReply *r, const char *word)
{
	size_t n = strlen(word);

	return r && r->type == REDIS_REPLY_ERROR && r->len >= n && !strncmp(r->str, word, n) &&
	       (r->len == n || r->str[n] == ' ');
}

/* Parse a CLUSTER SLOTS reply of node @from into st->slots. 0 or -EIO. */
static int slots_apply(struct redis_store *st, const redisReply *r, const struct node *from)
{
	uint16_t *map;
	bool any = false;

	if (r->type != REDIS_REPLY_ARRAY)
		return -EIO;
	map = malloc(sizeof(st->slots));
	if (!map)
		return -ENOMEM;
	for (unsigned int i = 0; i < NSLOTS; i++)
		map[i] = NO_NODE;
	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i], *m;
		const char *host;
		unsigned int idx;
		char hbuf[256];

		if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
		    e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER)
			continue;
		m = e->element[2];
		if (m->type != REDIS_REPLY_ARRAY || m->elements < 2 ||
		    m->element[0]->type != REDIS_REPLY_STRING ||
		    m->element[1]->type != REDIS_REPLY_INTEGER)
			continue;
		host = m->element[0]->str;
		if (!*host || !strcmp(host, "?"))
			host = from->host;	/* "the address you reached me at" */
		if (strlen(host) >= sizeof(hbuf))
			continue;
		strcpy(hbuf, host);
		idx = node_find_add(st, hbuf, (int)m->element[1]->integer);
		if (idx == NO_NODE)
			continue;
		for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++)
			if (s >= 0 && s < NSLOTS) {
				map[s] = (uint16_t)idx;
				any = true;
			}
	}
	if (any)
		memcpy(st->slots, map, sizeof(st->slots));
	pthread_mutex_unlock(&st->lock);
	free(map);
	return any ? 0 : -EIO;
}

/* Fetch the slot map from the first node that answers. 0 or -EIO. */
static int slots_refresh(struct redis_store *st)
{
	struct pipe_guard g;
	unsigned int n;
	int rc = -EIO;

	if (!st->cluster)
		return 0;
	pthread_mutex_lock(&st->refresh_lock);
	pipe_block(&g);
	pthread_mutex_lock(&st->lock);
	n = st->nnodes;
	pthread_mutex_unlock(&st->lock);
	for (unsigned int i = 0; i < n && rc; i++) {
		struct node *nd;
		redisContext *c;
		redisReply *r;

		pthread_mutex_lock(&st->lock);
		nd = st->nodes[i];
		pthread_mutex_unlock(&st->lock);
		c = conn_get(st, nd);
		if (!c)
			continue;
		r = conn_command(c, "CLUSTER", "SLOTS", (char *)NULL);
		if (r)
			rc = slots_apply(st, r, nd);
		conn_put(st, nd, c, r != NULL);
		if (r)
			freeReplyObject(r);
	}
	pipe_unblock(&g);
	pthread_mutex_unlock(&st->refresh_lock);
	if (rc)
		fl__debug("redis: no node answered CLUSTER SLOTS");
	return rc;
}

/* "MOVED 3999 127.0.0.1:6381": point the slot at that node. */
static int parse_redirect(struct redis_store *st, const redisReply *r, bool update)
{
	char host[256];
	unsigned int slot, idx;
	int port;
	const char *sp, *colon;

	sp = strchr(r->str, ' ');
	if (!sp || sscanf(sp + 1, "%u", &slot) != 1 || slot >= NSLOTS)
		return -1;
	sp = strchr(sp + 1, ' ');
	if (!sp)
		return -1;
	colon = strrchr(sp, ':');
	if (!colon || (size_t)(colon - sp - 1) >= sizeof(host) || sscanf(colon + 1, "%d", &port) != 1)
		return -1;
	memcpy(host, sp + 1, (size_t)(colon - sp - 1));
	host[colon - sp - 1] = 0;
	pthread_mutex_lock(&st->lock);
	idx = node_find_add(st, host, port);
	if (idx != NO_NODE && update)
		st->slots[slot] = (uint16_t)idx;
	pthread_mutex_unlock(&st->lock);
	return idx == NO_NODE ? -1 : (int)idx;
}

/* ------------------------------------------------------------- batches */

/* An error worth retrying: the cluster is changing, or the server is starting. */
static bool transient(const redisReply *r)
{
	return is_err(r, "TRYAGAIN") || is_err(r, "CLUSTERDOWN") || is_err(r, "LOADING") ||
	       is_err(r, "MASTERDOWN") || is_err(r, "READONLY") || is_err(r, "BUSY");
}

static void batch_clear(struct cmd *cmds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (cmds[i].reply) {
			freeReplyObject(cmds[i].reply);
			cmds[i].reply = NULL;
		}
}

/* Redo one command on the ASK target @idx, after ASKING. */
static int redo_asking(struct redis_store *st, struct cmd *cm, unsigned int idx, bool wait)
{
	static const char *asking[] = { "ASKING" };
	struct node *nd;
	redisContext *c;
	redisReply *a = NULL, *r = NULL, *w = NULL;
	char nrep[16], tmo[16];
	const char *wargv[] = { "WAIT", nrep, tmo };
	int rc = -EAGAIN;

	pthread_mutex_lock(&st->lock);
	nd = st->nodes[idx];
	pthread_mutex_unlock(&st->lock);
	c = conn_get(st, nd);
	if (!c)
		return -EAGAIN;
	snprintf(nrep, sizeof(nrep), "%u", st->wait_replicas);
	snprintf(tmo, sizeof(tmo), "%u", st->wait_timeout_ms);
	redisAppendCommandArgv(c, 1, asking, NULL);
	redisAppendCommandArgv(c, cm->argc, cm->argv, cm->argvlen);
	if (wait)
		redisAppendCommandArgv(c, 3, wargv, NULL);
	if (conn_reply(c, (void **)&a) == REDIS_OK && conn_reply(c, (void **)&r) == REDIS_OK &&
	    (!wait || conn_reply(c, (void **)&w) == REDIS_OK)) {
		rc = 0;
		if (wait && (w->type != REDIS_REPLY_INTEGER || w->integer < st->wait_replicas))
			rc = -EAGAIN;
	}
	conn_put(st, nd, c, rc == 0 || (r && !c->err));
	if (a)
		freeReplyObject(a);
	if (w)
		freeReplyObject(w);
	if (r) {
		freeReplyObject(cm->reply);
		cm->reply = r;
	}
	return rc;
}

/*
 * Send @cmds, one pipeline per server (each followed by WAIT with @wait),
 * and collect their replies. 0: every command has a reply that is not a
 * redirection or a transient error (a command error stays in its reply);
 * -EAGAIN: try again (after a back-off unless *@at_once); -EIO: give up.
 */
static int batch_exec(struct redis_store *st, struct cmd *cmds, size_t n, bool wait, bool *at_once)
{
	unsigned int nidx[MAX_NODES], nused = 0;
	redisContext *conns[MAX_NODES] = { NULL };
	bool broken[MAX_NODES] = { false };
	uint16_t *route;
	char nrep[16], tmo[16];
	const char *wargv[] = { "WAIT", nrep, tmo };
	struct pipe_guard g;
	int rc = 0;

	*at_once = false;
	route = malloc(n * sizeof(*route));
	if (!route)
		return -ENOMEM;
	snprintf(nrep, sizeof(nrep), "%u", st->wait_replicas);
	snprintf(tmo, sizeof(tmo), "%u", st->wait_timeout_ms);
	pthread_mutex_lock(&st->lock);
	for (size_t i = 0; i < n; i++) {
		unsigned int idx = st->cluster ? st->slots[cmds[i].slot] : 0, j;

		if (idx == NO_NODE) {
			rc = -EAGAIN;
			break;
		}
		for (j = 0; j < nused && nidx[j] != idx; j++)
			;
		if (j == nused)
			nidx[nused++] = idx;
		route[i] = (uint16_t)j;
	}
	pthread_mutex_unlock(&st->lock);
	if (rc) {
		free(route);
		return rc;
	}
	pipe_block(&g);
	for (unsigned int j = 0; j < nused; j++) {
		conns[j] = conn_get(st, st->nodes[nidx[j]]);
		if (!conns[j]) {
			rc = -EAGAIN;
			goto out;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (redisAppendCommandArgv(conns[route[i]], cmds[i].argc, cmds[i].argv,
					   cmds[i].argvlen) != REDIS_OK) {
			rc = -ENOMEM;
			broken[route[i]] = true;
			goto out;
		}
	for (unsigned int j = 0; j < nused; j++) {
		if (wait && redisAppendCommandArgv(conns[j], 3, wargv, NULL) != REDIS_OK) {
			rc = -ENOMEM;
			broken[j] = true;
			goto out;
		}
		/* Every server gets its whole pipeline before we wait for any reply. */
		if (conn_flush(conns[j])) {
			broken[j] = true;
			rc = -EAGAIN;
		}
	}
	for (size_t i = 0; i < n; i++) {
		unsigned int j = route[i];

		if (broken[j])
			continue;
		if (conn_reply(conns[j], (void **)&cmds[i].reply) != REDIS_OK) {
			fl__debug("redis: %s:%d: %s", st->nodes[nidx[j]]->host,
				  st->nodes[nidx[j]]->port, conns[j]->errstr);
			broken[j] = true;
			rc = -EAGAIN;
		}
	}
	for (unsigned int j = 0; wait && j < nused; j++) {
		redisReply *w = NULL;

		if (broken[j])
			continue;
		if (conn_reply(conns[j], (void **)&w) != REDIS_OK) {
			broken[j] = true;
			rc = -EAGAIN;
			continue;
		}
		if (w->type != REDIS_REPLY_INTEGER || w->integer < st->wait_replicas) {
			fl__debug("redis: %s:%d: WAIT %u: %lld replicas", st->nodes[nidx[j]]->host,
				  st->nodes[nidx[j]]->port, st->wait_replicas,
				  w->type == REDIS_REPLY_INTEGER ? w->integer : -1);
			rc = -EAGAIN;
		}
		freeReplyObject(w);
	}
out:
	for (unsigned int j = 0; j < nused; j++)
		conn_put(st, st->nodes[nidx[j]], conns[j], !broken[j]);
	if (rc == 0) {
		bool moved = false;

		for (size_t i = 0; i < n && rc == 0; i++) {
			redisReply *r = cmds[i].reply;
			int idx;

			if (!r || r->type != REDIS_REPLY_ERROR)
				continue;
			if (is_err(r, "MOVED")) {
				if (parse_redirect(st, r, true) < 0)
					rc = -EAGAIN;
				moved = true;
			} else if (is_err(r, "ASK")) {
				int k;

				for (k = 0; k < MAX_REDIRECTS && r && is_err(r, "ASK"); k++) {
					idx = parse_redirect(st, r, false);
					if (idx < 0 || redo_asking(st, &cmds[i], (unsigned int)idx,
								    wait) < 0) {
						rc = -EAGAIN;
						break;
					}
					r = cmds[i].reply;
				}
				if (r && (is_err(r, "ASK") || is_err(r, "MOVED")))
					rc = -EAGAIN;
			} else if (transient(r)) {
				rc = -EAGAIN;
			}
		}
		if (moved && rc == 0) {
			rc = -EAGAIN;
			*at_once = true;
		}
	}
	pipe_unblock(&g);
	free(route);
	return rc;
}

/* Run @cmds until they succeed or retry_ms passes. */
static int batch_run(struct redis_store *st, struct cmd *cmds, size_t n, bool wait,
		     const char *what, uint64_t off)
{
	uint64_t deadline = fl__now_ns() + (uint64_t)st->retry_ms * 1000000ull;
	unsigned int backoff_ms = 5;
	bool at_once;
	int rc;

	for (int attempt = 0;; attempt++) {
		rc = batch_exec(st, cmds, n, wait, &at_once);
		if (rc != -EAGAIN)
			return rc;
		batch_clear(cmds, n);
		if (fl__now_ns() >= deadline)
			break;
		if (!at_once || attempt > MAX_REDIRECTS) {
			uint64_t left = (deadline - fl__now_ns()) / 1000000ull;
			unsigned int ms = backoff_ms < left ? backoff_ms : (unsigned int)left;
			struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

			nanosleep(&ts, NULL);
			if (backoff_ms < 500)
				backoff_ms *= 2;
			slots_refresh(st);
		}
	}
	fl__err("redis: %s at offset %llu: no answer within %u ms (%s)", what,
		(unsigned long long)off, st->retry_ms,
		wait ? "connection, cluster or WAIT replicas" : "connection or cluster");
	return -EIO;
}

/* ------------------------------------------------------------ the ops */

/* Keys and the command vectors of one request, in one allocation. */
struct req {
	struct cmd *cmds;
	size_t ncmds;
	const char **argv;
	size_t *argvlen;
	size_t nargs, cap_args;
	char *keys;
	size_t keys_used, keys_cap;
};

static int req_init(struct req *q, size_t cmds, size_t args, size_t keybytes)
{
	memset(q, 0, sizeof(*q));
	q->cmds = calloc(cmds, sizeof(*q->cmds));
	q->argv = calloc(args, sizeof(*q->argv));
	q->argvlen = calloc(args, sizeof(*q->argvlen));
	q->keys = malloc(keybytes);
	q->cap_args = args;
	q->keys_cap = keybytes;
	if (!q->cmds || !q->argv || !q->argvlen || !q->keys) {
		free(q->cmds);
		free(q->argv);
		free(q->argvlen);
		free(q->keys);
		return -ENOMEM;
	}
	return 0;
}

static void req_free(struct req *q)
{
	batch_clear(q->cmds, q->ncmds);
	free(q->cmds);
	free(q->argv);
	free(q->argvlen);
	free(q->keys);
}

static struct cmd *req_cmd(struct req *q, unsigned int slot)
{
	struct cmd *c = &q->cmds[q->ncmds++];

	c->argv = &q->argv[q->nargs];
	c->argvlen = &q->argvlen[q->nargs];
	c->argc = 0;
	c->slot = slot;
	return c;
}

/* Append an argument (referenced: it must outlive the request). */
static void req_arg(struct req *q, struct cmd *c, const void *p, size_t len)
{
	/* Sized by the caller for every argument it adds: running out is a bug. */
	if (q->nargs >= q->cap_args)
		abort();
	q->argv[q->nargs] = p;
	q->argvlen[q->nargs] = len;
	q->nargs++;
	c->argc++;
}

static void req_fmt(struct req *q, struct cmd *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void req_fmt(struct req *q, struct cmd *c, const char *fmt, ...)
{
	va_list ap;
	char *p = q->keys + q->keys_used;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(p, q->keys_cap - q->keys_used, fmt, ap);
	va_end(ap);
	/* Sized by the caller for every key it makes: running out is a bug. */
	if (n < 0 || (size_t)n >= q->keys_cap - q->keys_used)
		abort();
	q->keys_used += (size_t)n + 1;
	req_arg(q, c, p, (size_t)n);
}

/* The slot of chunk @chunk's keys (they share the tag {prefix:chunk}). */
static unsigned int chunk_slot(const struct redis_store *st, uint64_t chunk)
{
	char tag[KEY_MAX];
	int n = snprintf(tag, sizeof(tag), "%s:%llu", st->prefix, (unsigned long long)chunk);

	return crc16(tag, (size_t)n) & (NSLOTS - 1);
}

static bool bitmap_has(const redisReply *m, unsigned int bit)
{
	return m && m->type == REDIS_REPLY_STRING && bit / 8 < m->len &&
	       ((uint8_t)m->str[bit / 8] & (0x80u >> (bit % 8)));
}

static int redis_read(void *userdata, uint64_t off, void *buf, size_t len, size_t page_size,
		      uint64_t *holes)
{
	struct redis_store *st = userdata;
	uint64_t b0 = off / BLOCK, nb = len / BLOCK, c0 = b0 / CHUNK_BLOCKS;
	uint64_t c1 = (b0 + nb - 1) / CHUNK_BLOCKS, nchunks = c1 - c0 + 1;
	bool hash = st->flags & FL_STORE_REDIS_HASH;
	uint8_t *hole_blocks;
	struct req q;
	size_t ci;
	int rc;

	hole_blocks = calloc(nb, 1);
	if (!hole_blocks)
		return -ENOMEM;
	rc = req_init(&q, nchunks * 2 + nb, nchunks * 4 + nb * 2, (nchunks * 2 + nb) * KEY_MAX);
	if (rc) {
		free(hole_blocks);
		return rc;
	}
	for (uint64_t c = c0; c <= c1; c++) {
		uint64_t first = c == c0 ? b0 : c * CHUNK_BLOCKS;
		uint64_t end = c == c1 ? b0 + nb : (c + 1) * CHUNK_BLOCKS;
		unsigned int slot = chunk_slot(st, c);
		struct cmd *cm = req_cmd(&q, slot);

		req_arg(&q, cm, "GET", 3);
		req_fmt(&q, cm, "{%s:%llu}:m", st->prefix, (unsigned long long)c);
		if (hash) {
			cm = req_cmd(&q, slot);
			req_arg(&q, cm, "HMGET", 5);
			req_fmt(&q, cm, "{%s:%llu}:h", st->prefix, (unsigned long long)c);
			for (uint64_t b = first; b < end; b++)
				req_fmt(&q, cm, "%llu", (unsigned long long)(b - c * CHUNK_BLOCKS));
		} else {
			for (uint64_t b = first; b < end; b++) {
				cm = req_cmd(&q, slot);
				req_arg(&q, cm, "GET", 3);
				req_fmt(&q, cm, "{%s:%llu}:%llu", st->prefix, (unsigned long long)c,
					(unsigned long long)b);
			}
		}
	}
	rc = batch_run(st, q.cmds, q.ncmds, false, "read", off);
	ci = 0;
	for (uint64_t c = c0; c <= c1 && !rc; c++) {
		uint64_t first = c == c0 ? b0 : c * CHUNK_BLOCKS;
		uint64_t end = c == c1 ? b0 + nb : (c + 1) * CHUNK_BLOCKS;
		const redisReply *m = q.cmds[ci++].reply, *h = NULL;

		if (m->type != REDIS_REPLY_NIL && m->type != REDIS_REPLY_STRING) {
			fl__err("redis: read: bitmap of chunk %llu of %s: unexpected reply%s%s",
				(unsigned long long)c, st->prefix,
				m->type == REDIS_REPLY_ERROR ? ": " : "",
				m->type == REDIS_REPLY_ERROR ? m->str : "");
			rc = -EIO;
			break;
		}
		if (hash) {
			h = q.cmds[ci++].reply;
			if (h->type != REDIS_REPLY_ARRAY || h->elements != end - first) {
				fl__err("redis: read: chunk %llu of %s: unexpected HMGET reply%s%s",
					(unsigned long long)c, st->prefix,
					h->type == REDIS_REPLY_ERROR ? ": " : "",
					h->type == REDIS_REPLY_ERROR ? h->str : "");
				rc = -EIO;
				break;
			}
		}
		for (uint64_t b = first; b < end; b++) {
			const redisReply *v = hash ? h->element[b - first] : q.cmds[ci++].reply;
			uint8_t *dst = (uint8_t *)buf + (b - b0) * BLOCK;

			if (v->type == REDIS_REPLY_STRING && v->len == BLOCK) {
				memcpy(dst, v->str, BLOCK);
			} else if (v->type == REDIS_REPLY_NIL) {
				if (bitmap_has(m, (unsigned int)(b - c * CHUNK_BLOCKS)) ||
				    fl__bm_test(st->written, b)) {
					fl__err("redis: read: block %llu of %s is missing although it "
						"was written (deleted, evicted or lost in a failover)",
						(unsigned long long)b, st->prefix);
					rc = -EIO;
					break;
				}
				hole_blocks[b - b0] = 1;
			} else {
				fl__err("redis: read: block %llu of %s: unexpected reply (type %d, "
					"%zu bytes)%s%s", (unsigned long long)b, st->prefix, v->type,
					(size_t)v->len, v->type == REDIS_REPLY_ERROR ? ": " : "",
					v->type == REDIS_REPLY_ERROR ? v->str : "");
				rc = -EIO;
				break;
			}
		}
	}
	if (!rc) {
		size_t per = page_size / BLOCK;

		for (size_t p = 0; p < len / page_size; p++) {
			bool all = true;

			for (size_t k = 0; k < per; k++)
				if (!hole_blocks[p * per + k])
					all = false;
			if (all)
				holes[p / 64] |= 1ull << (p % 64);
			else
				for (size_t k = 0; k < per; k++)
					if (hole_blocks[p * per + k])
						memset((uint8_t *)buf + (p * per + k) * BLOCK, 0, BLOCK);
		}
	}
	req_free(&q);
	free(hole_blocks);
	return rc;
}

static int redis_write(void *userdata, uint64_t off, const void *buf, size_t len)
{
	struct redis_store *st = userdata;
	uint64_t b0 = off / BLOCK, nb = len / BLOCK, c0 = b0 / CHUNK_BLOCKS;
	uint64_t c1 = (b0 + nb - 1) / CHUNK_BLOCKS, nchunks = c1 - c0 + 1;
	bool hash = st->flags & FL_STORE_REDIS_HASH;
	struct req q;
	size_t ci;
	int rc;

	if (st->flags & FL_STORE_REDIS_READONLY)
		return -EROFS;
	rc = req_init(&q, nchunks * 2 + nb, nchunks * 4 + nb * 8, (nchunks * 2 + nb * 3) * KEY_MAX);
	if (rc)
		return rc;
	for (uint64_t c = c0; c <= c1; c++) {
		uint64_t first = c == c0 ? b0 : c * CHUNK_BLOCKS;
		uint64_t end = c == c1 ? b0 + nb : (c + 1) * CHUNK_BLOCKS;
		unsigned int slot = chunk_slot(st, c);
		struct cmd *cm;

		/* The blocks first, then their bits: a server (and its replicas, which get
		   the commands in this order) never has the bit without the block. */
		if (hash) {
			cm = req_cmd(&q, slot);
			req_arg(&q, cm, "HSET", 4);
			req_fmt(&q, cm, "{%s:%llu}:h", st->prefix, (unsigned long long)c);
			for (uint64_t b = first; b < end; b++) {
				req_fmt(&q, cm, "%llu", (unsigned long long)(b - c * CHUNK_BLOCKS));
				req_arg(&q, cm, (const uint8_t *)buf + (b - b0) * BLOCK, BLOCK);
			}
		} else {
			for (uint64_t b = first; b < end; b++) {
				cm = req_cmd(&q, slot);
				req_arg(&q, cm, "SET", 3);
				req_fmt(&q, cm, "{%s:%llu}:%llu", st->prefix, (unsigned long long)c,
					(unsigned long long)b);
				req_arg(&q, cm, (const uint8_t *)buf + (b - b0) * BLOCK, BLOCK);
			}
		}
		cm = req_cmd(&q, slot);
		req_arg(&q, cm, "BITFIELD", 8);
		req_fmt(&q, cm, "{%s:%llu}:m", st->prefix, (unsigned long long)c);
		for (uint64_t b = first; b < end; b++) {
			req_arg(&q, cm, "SET", 3);
			req_arg(&q, cm, "u1", 2);
			req_fmt(&q, cm, "%llu", (unsigned long long)(b - c * CHUNK_BLOCKS));
			req_arg(&q, cm, "1", 1);
		}
	}
	rc = batch_run(st, q.cmds, q.ncmds, st->wait_replicas > 0, "write", off);
	for (ci = 0; ci < q.ncmds && !rc; ci++) {
		const redisReply *r = q.cmds[ci].reply;

		if (r->type == REDIS_REPLY_ERROR) {
			fl__err("redis: write at offset %llu of %s: %s", (unsigned long long)off,
				st->prefix, r->str);
			rc = -EIO;
		}
	}
	if (!rc)
		for (uint64_t b = b0; b < b0 + nb; b++)
			fl__bm_set(st->written, b);
	req_free(&q);
	return rc;
}

static void redis_close(void *userdata)
{
	struct redis_store *st = userdata;

	if (!st)
		return;
	for (unsigned int i = 0; i < st->nnodes; i++)
		node_free(st->nodes[i]);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->refresh_lock);
	free(st->written);
	fl__transport_free(st->tls);
	free(st->peer_name);
	free(st);
}

/* ------------------------------------------------------------- opening */

/* "redis://HOST[:PORT][/PREFIX]", or rediss:// (TLS, *tls set). */
static int parse_url(const char *url, char *host, size_t hostlen, int *port, char *prefix,
		     bool *tls)
{
	const char *p, *slash, *colon, *end;
	size_t n;

	*tls = !strncmp(url, "rediss://", 9);
	if (!*tls && strncmp(url, "redis://", 8))
		return -EINVAL;
	p = url + (*tls ? 9 : 8);
	slash = strchr(p, '/');
	end = slash ? slash : p + strlen(p);
	colon = memchr(p, ':', (size_t)(end - p));
	n = (size_t)((colon ? colon : end) - p);
	if (!n || n >= hostlen)
		return -EINVAL;
	memcpy(host, p, n);
	host[n] = 0;
	*port = 6379;
	if (colon) {
		char *e;
		long v;

		errno = 0;
		v = strtol(colon + 1, &e, 10);
		if (errno || e != end || colon + 1 == end || v < 1 || v > 65535)
			return -EINVAL;
		*port = (int)v;
	}
	strcpy(prefix, "fl");
	if (slash && slash[1]) {
		n = strlen(slash + 1);
		if (n > PREFIX_MAX)
			return -EINVAL;
		for (size_t i = 0; i < n; i++) {
			char ch = slash[1 + i];

			if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
				return -EINVAL;
		}
		strcpy(prefix, slash + 1);
	}
	return 0;
}

/* Is this a cluster? Fetch its slot map, and warn about an eviction policy. */
static int probe_server(struct redis_store *st)
{
	uint64_t deadline = fl__now_ns() + (uint64_t)st->retry_ms * 1000000ull;
	struct node *seed = st->nodes[0];
	struct pipe_guard g;
	redisReply *r = NULL;
	redisContext *c;
	int rc = -EIO;

	pipe_block(&g);
	for (;;) {
		c = conn_get(st, seed);
		if (c) {
			r = conn_command(c, "CLUSTER", "SLOTS", (char *)NULL);
			if (r)
				break;
			conn_put(st, seed, c, false);
		}
		pthread_mutex_lock(&st->lock);
		rc = st->tls_err;
		pthread_mutex_unlock(&st->lock);
		if (rc == -EACCES || rc == -EPROTO) {
			/* No retry makes a certificate trusted: say why now. */
			fl__err("redis: TLS with %s", st->tls_msg);
			pipe_unblock(&g);
			return rc;
		}
		rc = -EIO;
		if (fl__now_ns() >= deadline) {
			fl__err("redis: %s:%d does not answer%s%s", seed->host, seed->port,
				st->tls_err ? ": " : "", st->tls_err ? st->tls_msg : "");
			pipe_unblock(&g);
			return -EIO;
		}
		{
			struct timespec ts = { 0, 100 * 1000000L };

			nanosleep(&ts, NULL);
		}
	}
	if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "disabled")) {
		st->cluster = false;
		rc = 0;
	} else if (r->type == REDIS_REPLY_ARRAY) {
		st->cluster = true;
		rc = slots_apply(st, r, seed);
		if (rc)
			fl__err("redis: %s:%d: the cluster's slot map is empty", seed->host, seed->port);
	} else {
		fl__err("redis: %s:%d: CLUSTER SLOTS: unexpected reply%s%s", seed->host, seed->port,
			r->type == REDIS_REPLY_ERROR ? ": " : "",
			r->type == REDIS_REPLY_ERROR ? r->str : "");
	}
	freeReplyObject(r);
	if (!rc) {
		r = conn_command(c, "CONFIG", "GET", "maxmemory-policy", (char *)NULL);
		if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
		    r->element[1]->type == REDIS_REPLY_STRING &&
		    strcmp(r->element[1]->str, "noeviction"))
			fl__warn("redis: %s:%d: maxmemory-policy is %s: evicted blocks will fail "
				 "reads (-EIO); use noeviction", seed->host, seed->port,
				 r->element[1]->str);
		if (r)
			freeReplyObject(r);
	}
	conn_put(st, seed, c, !c->err);
	pipe_unblock(&g);
	return rc;
}

/* The object's record: created with our size and layout, or checked against them. */
static int check_record(struct redis_store *st)
{
	const char *layout = st->flags & FL_STORE_REDIS_HASH ? "hash" : "keys";
	char key[KEY_MAX], size[24];
	struct cmd cmds[3];
	const char *a0[] = { "HSETNX", key, "size", size };
	const char *a1[] = { "HSETNX", key, "layout", layout };
	const char *a2[] = { "HMGET", key, "size", "layout" };
	size_t l0[4], l1[4], l2[4];
	const redisReply *r;
	unsigned int slot;
	int rc;

	snprintf(key, sizeof(key), "%s:obj", st->prefix);
	snprintf(size, sizeof(size), "%llu", (unsigned long long)st->size);
	slot = key_slot(key, strlen(key));
	for (int i = 0; i < 4; i++) {
		l0[i] = strlen(a0[i]);
		l1[i] = strlen(a1[i]);
		l2[i] = strlen(a2[i]);
	}
	memset(cmds, 0, sizeof(cmds));
	cmds[0] = (struct cmd){ 4, a0, l0, slot, NULL };
	cmds[1] = (struct cmd){ 4, a1, l1, slot, NULL };
	cmds[2] = (struct cmd){ 4, a2, l2, slot, NULL };
	rc = batch_run(st, cmds, 3, false, "opening", 0);
	if (rc)
		return rc;
	r = cmds[2].reply;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
		fl__err("redis: %s: unexpected reply reading the object's record", key);
		rc = -EIO;
	} else if (strcmp(r->element[0]->str, size) || strcmp(r->element[1]->str, layout)) {
		fl__err("redis: %s: the object has size %s and layout %s, not %s and %s", key,
			r->element[0]->str, r->element[1]->str, size, layout);
		rc = -EINVAL;
	}
	batch_clear(cmds, 3);
	return rc;
}

FL_API int fl_store_redis_open(const char *url, const struct fl_store_redis_opts *opts,
			       struct fl_store **ret)
{
	struct fl_store_redis_opts o = { 0 };
	struct redis_store *st;
	char host[256], why[256];
	unsigned int tmo;
	int port, rc;
	bool tls;

	if (!ret) {
		fl__err("fl_store_redis_open: ret is NULL");
		return -EINVAL;
	}
	*ret = NULL;
	if (!url || !opts || opts->sz < sizeof(size_t)) {
		fl__err("fl_store_redis_open: url or opts missing");
		return -EINVAL;
	}
	memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	if (!o.size || o.size % BLOCK || (o.flags & ~REDIS_FLAGS_ALL)) {
		fl__err("fl_store_redis_open: size %llu (a multiple of 4096 > 0) or flags %#x",
			(unsigned long long)o.size, o.flags);
		return -EINVAL;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	if (parse_url(url, host, sizeof(host), &port, st->prefix, &tls)) {
		fl__err("fl_store_redis_open: %s: not redis[s]://HOST[:PORT][/PREFIX] (PREFIX of at "
			"most %u of [A-Za-z0-9._-])", url, PREFIX_MAX);
		free(st);
		return -EINVAL;
	}
	if (!tls && (o.tls_ca_file || o.tls_cert_file || o.tls_key_file || o.tls_peer_name)) {
		fl__err("fl_store_redis_open: %s: TLS options for a plain-TCP redis:// URL "
			"(rediss:// is TLS)", url);
		free(st);
		return -EINVAL;
	}
	if (tls) {
		struct fl__transport_opts to = {
			.mode = FL__TRANSPORT_X509,
			.ca_file = o.tls_ca_file,
			.cert_file = o.tls_cert_file,
			.key_file = o.tls_key_file,
		};

		if (!o.tls_ca_file) {
			fl__err("fl_store_redis_open: %s: rediss:// needs tls_ca_file (the CA of "
				"the servers' certificates)", url);
			free(st);
			return -EINVAL;
		}
		rc = fl__transport_new(&to, &st->tls, why, sizeof(why));
		if (rc) {
			fl__err("fl_store_redis_open: %s", why);
			free(st);
			return rc;
		}
		if (o.tls_peer_name && !(st->peer_name = strdup(o.tls_peer_name))) {
			fl__transport_free(st->tls);
			free(st);
			return -ENOMEM;
		}
	}
	st->size = o.size;
	st->nblocks = o.size / BLOCK;
	st->flags = o.flags;
	st->retry_ms = o.retry_ms ? o.retry_ms : 30000;
	st->wait_replicas = o.wait_replicas;
	st->wait_timeout_ms = o.wait_timeout_ms ? o.wait_timeout_ms : 1000;
	st->max_idle = o.connections ? o.connections : 8;
	tmo = o.connect_timeout_ms ? o.connect_timeout_ms : 2000;
	st->cto = (struct timeval){ tmo / 1000, (long)(tmo % 1000) * 1000 };
	tmo = o.command_timeout_ms ? o.command_timeout_ms : 5000;
	/* A WAIT may take its own timeout before its reply comes. */
	if (st->wait_replicas)
		tmo += st->wait_timeout_ms;
	st->tto = (struct timeval){ tmo / 1000, (long)(tmo % 1000) * 1000 };
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->refresh_lock, NULL);
	for (unsigned int i = 0; i < NSLOTS; i++)
		st->slots[i] = NO_NODE;
	st->written = fl__bm_alloc(st->nblocks);
	if (!st->written || node_find_add(st, host, port) == NO_NODE) {
		redis_close(st);
		return -ENOMEM;
	}
	rc = probe_server(st);
	if (!rc)
		rc = check_record(st);
	if (!rc) {
		static const struct fl_store_ops ops = {
			.sz = sizeof(ops),
			.read = redis_read,
			.write = redis_write,
			.close = redis_close,
		};
		uint32_t caps = FL_STORE_HOLES |
				(o.flags & FL_STORE_REDIS_READONLY ? FL_STORE_READONLY : 0);

		rc = fl_store_create(&ops, st, caps, st->size, ret);
	}
	if (rc)
		redis_close(st);
	return rc;
}

#endif /* FL_HAVE_HIREDIS */
