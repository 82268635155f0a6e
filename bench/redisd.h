/* SPDX-License-Identifier: MIT */
/*
 * Real Redis servers for the Redis store's tests and `faultline bench remote`:
 * a single server or a cluster of masters and replicas on free loopback
 * ports in a temporary directory, stopped and removed afterwards, also when
 * the process that started them dies (a watcher process in its own session
 * removes them then). Linked into the tool and the test runner.
 */
#ifndef FL_REDISD_H
#define FL_REDISD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define REDISD_MAX 8

struct redisd {
	char dir[128];			/* the temporary directory */
	unsigned int n;			/* servers */
	bool cluster;
	pid_t pid[REDISD_MAX];		/* 0 once stopped or killed */
	int port[REDISD_MAX];
	int bus_port[REDISD_MAX];
	/* TLS servers (redisd_start_tls): their TLS port; the plain port stays, on loopback, for control. */
	bool tls;
	int tls_port[REDISD_MAX];
	char tls_cert[256], tls_key[256], tls_ca[256];
	pid_t watcher;
	int watch_fd;			/* its pipe: closing it (or dying) makes it clean up */
	char err[512];			/* why the last call failed */
};

/* Whether faultline was built with hiredis (else nothing here starts a server). */
bool redisd_available(void);

/* The path of redis-server / redis-cli / redis-benchmark (PATH, then /usr/bin, /usr/sbin). */
bool redisd_find(const char *prog, char *path, size_t len);

/*
 * Start @n servers (a cluster of @n/2 masters with one replica each, made
 * with redis-cli --cluster create, when @cluster) and wait, at most
 * @timeout_ms, until they answer (the cluster: every node sees all slots
 * served and every master has its replica online). 0, or -1 with d->err.
 */
int redisd_start(struct redisd *d, unsigned int n, bool cluster, unsigned int timeout_ms);

/*
 * The same with TLS (X.509, PEM files) on a second port of each server
 * beside the plain one: @cert and @key its certificate, @ca the clients'
 * (tls-auth-clients optional: a client without a certificate is served). A
 * cluster's bus and replication are TLS too (tls-cluster, tls-replication),
 * and a TLS client learns the nodes' TLS ports from CLUSTER SLOTS.
 */
int redisd_start_tls(struct redisd *d, unsigned int n, bool cluster, unsigned int timeout_ms,
		     const char *cert, const char *key, const char *ca);

/* Kill every server, remove the directory. Safe to call twice. */
void redisd_stop(struct redisd *d);

/* kill -9 server @i and reap it. */
void redisd_kill(struct redisd *d, unsigned int i);

/* "redis://127.0.0.1:PORT/PREFIX" of server @i. */
void redisd_url(const struct redisd *d, unsigned int i, const char *prefix, char *buf,
		size_t len);
/* "rediss://127.0.0.1:TLSPORT/PREFIX" of TLS server @i. */
void redisd_tls_url(const struct redisd *d, unsigned int i, const char *prefix, char *buf,
		    size_t len);

/*
 * One command to server @i (printf-like, as hiredis' redisCommand) with
 * @timeout_ms for connecting and the reply; the reply as text (a status,
 * error, string or integer; an array's elements joined with newlines) in
 * @out. 0, or -1 (not reachable, or no reply in time).
 */
int redisd_cmd(struct redisd *d, unsigned int i, unsigned int timeout_ms, char *out, size_t len,
	       const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* The same with a whole command line, split at spaces ("" an empty argument). */
int redisd_cmdline(struct redisd *d, unsigned int i, unsigned int timeout_ms, char *out, size_t len,
		   const char *line);

/* The index of the server that is master of @slot now, as server @ask sees it, or -1. */
int redisd_slot_master(struct redisd *d, unsigned int ask, unsigned int slot);

/*
 * Wait (at most @timeout_ms) until every live server reports cluster_state:ok
 * and all 16384 slots are served by live masters. 0 or -1 with d->err.
 */
int redisd_cluster_wait_ok(struct redisd *d, unsigned int timeout_ms);

/* The hash slot of @key, as the cluster computes it (CRC16 of its {tag}). */
unsigned int redisd_key_slot(const char *key);

#endif /* FL_REDISD_H */
