/* SPDX-License-Identifier: MIT */
/* The monitor's sessions: who the peer is, what its HELLO may ask for, and its stores. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "monitor-int.h"
#include "server-int.h"

/* PATTERN and ZERO stores cover every offset a region can name. */
#define ENDLESS ((uint64_t)INT64_MAX)
/* The pager's largest run: a larger unit of transfer is cut to it (not for hugetlbfs). */
#define MAX_UNIT (4u << 20)

/* ------------------------------------------------------------------ peer */

int fl__srv_peer_get(struct fl_monitor_server *s, int sock, struct srv_peer *ret, char *err,
		     size_t errlen)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	bool ok;

	*ret = (struct srv_peer){ .pid = 0 };
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		int e = errno;

		fl__mon_errf(err, errlen, "SO_PEERCRED: %s", strerror(e));
		return -e;
	}
	ret->pid = cred.pid;
	ret->uid = cred.uid;
	ret->gid = cred.gid;
	ok = cred.uid == s->euid || (s->o.flags & FL_MONITOR_SERVER_ANY_UID);
	for (size_t i = 0; !ok && i < s->nuids; i++)
		ok = s->uids[i] == cred.uid;
	if (!ok) {
		fl__mon_errf(err, errlen, "peer pid %d runs as uid %u, which this monitor does not "
			     "serve (its own uid %u, and those allowed)", (int)cred.pid,
			     (unsigned int)cred.uid, (unsigned int)s->euid);
		return -EPERM;
	}
	if (cred.uid == s->euid)
		return 0;
	/* Another user's files are opened with its groups too (Linux 4.13). */
	len = 0;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, NULL, &len) < 0 && errno != ERANGE) {
		int e = errno;

		fl__mon_errf(err, errlen, "SO_PEERGROUPS: %s", strerror(e));
		return -e;
	}
	if (len) {
		ret->groups = malloc(len);
		if (!ret->groups) {
			fl__mon_errf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, ret->groups, &len) < 0) {
			int e = errno;

			free(ret->groups);
			ret->groups = NULL;
			fl__mon_errf(err, errlen, "SO_PEERGROUPS: %s", strerror(e));
			return -e;
		}
	}
	ret->ngroups = (int)(len / sizeof(gid_t));
	return 0;
}

/* ----------------------------------------------------------- opening files */

struct open_req {
	int dirfd;
	const char *path;
	struct open_how how;
	const struct srv_peer *peer;	/* NULL: with the monitor's own credentials */
	int fd;				/* result, or -errno */
	bool creds_failed;
};

static int do_openat2(struct open_req *q)
{
	long fd = syscall(SYS_openat2, q->dirfd, q->path, &q->how, sizeof(q->how));

	return fd < 0 ? -errno : (int)fd;
}

/*
 * The credentials of a thread are its own at the system call level: this
 * short-lived thread takes the peer's file system uid, gid and groups (raw
 * system calls; glibc's setgroups() would change every thread), opens, and
 * exits with them. The monitor's other threads never change credentials.
 */
static void *open_as_peer(void *arg)
{
	struct open_req *q = arg;
	const struct srv_peer *pe = q->peer;

	if (syscall(SYS_setgroups, (size_t)pe->ngroups, pe->groups) < 0 ||
	    (syscall(SYS_setfsgid, pe->gid), (gid_t)syscall(SYS_setfsgid, (gid_t)-1) != pe->gid) ||
	    (syscall(SYS_setfsuid, pe->uid), (uid_t)syscall(SYS_setfsuid, (uid_t)-1) != pe->uid)) {
		q->creds_failed = true;
		q->fd = -EPERM;
		return NULL;
	}
	q->fd = do_openat2(q);
	return NULL;
}

/*
 * Open @path for reading, the way doc/monitor-protocol.md section 5 asks:
 * beneath the store root if there is one, never through magic links, never
 * blocking on a FIFO, and, for a peer of another uid, only if that peer
 * could open it itself. Returns the descriptor or -errno (with @err).
 */
static int open_store_file(struct fl_monitor_server *s, const struct srv_peer *peer,
			   const char *path, char *err, size_t errlen)
{
	struct open_req q = {
		.dirfd = AT_FDCWD,
		.path = path,
		.how = {
			.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
			.resolve = RESOLVE_NO_MAGICLINKS,
		},
	};
	struct stat st;
	int fd;

	if (s->o.flags & FL_MONITOR_SERVER_NO_FILES) {
		fl__mon_errf(err, errlen, "%s: this monitor serves no files", path);
		return -EPERM;
	}
	if (s->root) {
		size_t rl = strlen(s->root);
		const char *rel = path + 1;

		/* The path names a file beneath the root: the root, a slash, then the rest. */
		if (rl > 1) {
			rel = !strncmp(path, s->root, rl) && path[rl] == '/' ? path + rl + 1 : NULL;
		}
		if (!rel || !*rel) {
			fl__mon_errf(err, errlen, "%s lies outside the store root %s", path,
				     s->root);
			return -EACCES;
		}
		q.dirfd = s->root_fd;
		q.path = rel;
		q.how.resolve |= RESOLVE_BENEATH;
	}
	if (peer->uid == s->euid) {
		q.fd = do_openat2(&q);
	} else {
		pthread_t t;
		int e;

		q.peer = peer;
		e = -fl__thread_start(&t, NULL, open_as_peer, &q, NULL);
		if (e) {
			fl__mon_errf(err, errlen, "%s: cannot start a thread to open it: %s", path,
				     strerror(e));
			return -e;
		}
		pthread_join(t, NULL);
		if (q.creds_failed) {
			fl__mon_errf(err, errlen, "%s: the monitor cannot take uid %u to check it "
				     "may read the file (needs CAP_SETUID and CAP_SETGID)", path,
				     (unsigned int)peer->uid);
			return -EPERM;
		}
	}
	fd = q.fd;
	if (fd < 0) {
		if (fd == -ENOSYS)
			fl__mon_errf(err, errlen, "%s: openat2 (Linux 5.6) is missing", path);
		else if (fd == -EXDEV || fd == -ELOOP)
			fl__mon_errf(err, errlen, "%s: leads outside the store root or through a "
				     "magic link: %s", path, strerror(-fd));
		else
			fl__mon_errf(err, errlen, "%s: %s", path, strerror(-fd));
		return fd;
	}
	if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
		close(fd);
		fl__mon_errf(err, errlen, "%s: not a regular file or block device", path);
		return -EINVAL;
	}
	return fd;
}

/* ---------------------------------------------------------------- stores */

static struct srv_store *find_store(struct srv_session *sess, const struct fl__mon_region *r)
{
	for (size_t i = 0; i < sess->nstores; i++) {
		struct srv_store *st = &sess->stores[i];

		if (st->kind != r->store)
			continue;
		if (r->store == FL_MONITOR_STORE_ZERO ||
		    (r->store == FL_MONITOR_STORE_PATTERN && st->seed == r->seed) ||
		    (r->store == FL_MONITOR_STORE_FILE && !strcmp(st->path, r->path)))
			return st;
	}
	return NULL;
}

const struct srv_fc_part *fl__srv_fc_part(const struct fl_monitor_server *s, uint64_t off,
					  uint64_t len)
{
	for (size_t i = 0; i < s->nfc; i++) {
		const struct srv_fc_part *p = &s->fc[i];

		if (off >= p->start && off - p->start < p->len)
			return len <= p->len - (off - p->start) ? p : NULL;
	}
	return NULL;
}

/* Can the monitor's memory serve Firecracker region @i? Says why not in @err. */
static int check_fc_region(struct fl_monitor_server *s, uint32_t i, const struct fl__mon_region *r,
			   char *err, size_t errlen)
{
	const struct srv_fc_part *p = fl__srv_fc_part(s, r->off, r->len), *first = NULL;
	uint64_t end = s->nfc ? s->fc[s->nfc - 1].start + s->fc[s->nfc - 1].len : 0;

	if (!p) {
		for (size_t k = 0; k < s->nfc && !first; k++)
			if (r->off >= s->fc[k].start && r->off - s->fc[k].start < s->fc[k].len)
				first = &s->fc[k];
		/* Fail loud: a file shorter than its region would be read as zeros. */
		if (!first || s->nfc == 1)
			fl__mon_errf(err, errlen, "region %u needs bytes up to %#llx of the %s, "
				     "which has %#llx", i, (unsigned long long)(r->off + r->len),
				     s->fc_snapshot ? "snapshot" : "memory file",
				     (unsigned long long)end);
		else
			fl__mon_errf(err, errlen, "region %u, offsets [%#llx, %#llx), runs past the "
				     "end of snapshot region %zu at %#llx: a guest region must lie "
				     "in one snapshot region", i, (unsigned long long)r->off,
				     (unsigned long long)(r->off + r->len), (size_t)(first - s->fc),
				     (unsigned long long)(first->start + first->len));
		return -EINVAL;
	}
	if (r->page_size < p->page_size) {
		fl__mon_errf(err, errlen, "region %u has pages of %u KiB, the snapshot region "
			     "holding it pages of %zu KiB: a guest's pages must be at least the "
			     "snapshot's", i, r->page_size >> 10, p->page_size >> 10);
		return -EINVAL;
	}
	return 0;
}

struct fl_store *fl__srv_store_for(struct fl_monitor_server *s, struct srv_session *sess,
				   const struct fl__mon_region *r)
{
	struct srv_store *st;

	if (r->store == FL__MON_STORE_MONITOR) {
		const struct srv_fc_part *part = fl__srv_fc_part(s, r->off, r->len);

		return part ? part->s : NULL;
	}
	st = find_store(sess, r);
	return st ? st->s : NULL;
}

/* The store a region needs, opened if it is the first to need it. */
static int add_store(struct fl_monitor_server *s, const struct srv_peer *peer,
		     struct srv_session *sess, const struct fl__mon_region *r, char *err,
		     size_t errlen)
{
	struct srv_store st = { .kind = r->store, .seed = r->seed, .path = r->path };
	int e = 0;

	if (r->store == FL__MON_STORE_MONITOR || find_store(sess, r))
		return 0;
	switch (r->store) {
	case FL_MONITOR_STORE_ZERO:
		e = fl_store_zero_create(ENDLESS, &st.s);
		break;
	case FL_MONITOR_STORE_PATTERN:
		e = fl_store_pattern_create(ENDLESS, r->seed, &st.s);
		break;
	case FL_MONITOR_STORE_FILE: {
		struct fl_store_file_opts fo = { .sz = sizeof(fo) };
		char proc[64];
		int fd = open_store_file(s, peer, r->path, err, errlen);

		if (fd < 0)
			return fd;
		/* The file store opens by name: reopen what was opened safely, not the path. */
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		e = fl_store_file_open(proc, &fo, &st.s);
		close(fd);
		if (e < 0) {
			fl__mon_errf(err, errlen, "%s: %s", r->path, strerror(-e));
			return e;
		}
		break;
	}
	default:
		e = -EINVAL;
		break;
	}
	if (e < 0) {
		fl__mon_errf(err, errlen, "cannot make a store: %s", strerror(-e));
		return e;
	}
	sess->stores[sess->nstores++] = st;
	return 0;
}

void fl__srv_session_put(struct srv_session *sess)
{
	if (!sess || atomic_fetch_sub(&sess->refs, 1) != 1)
		return;
	for (size_t i = 0; i < sess->nstores; i++)
		fl_store_destroy(sess->stores[i].s);
	free(sess->stores);
	fl__mon_hello_free(&sess->h);
	free(sess->buf);
	free(sess);
}

static const char *unit_name(uint64_t v, char *buf, size_t len)
{
	snprintf(buf, len, "%#llx", (unsigned long long)v);
	return buf;
}

int fl__srv_session_open(struct fl_monitor_server *s, const struct srv_peer *peer,
			 struct fl__mon_hello *h, void *buf, struct srv_session **ret, char *err,
			 size_t errlen)
{
	struct srv_session *sess = calloc(1, sizeof(*sess));
	bool huge = false;
	int e = 0;

	if (!sess) {
		fl__mon_hello_free(h);
		free(buf);
		fl__mon_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&sess->refs, 1);
	sess->id = h->session;
	sess->attach_seq = h->attach_seq;
	sess->pid = peer->pid;
	sess->uid = peer->uid;
	sess->firecracker = h->firecracker;
	sess->features = h->features;
	sess->beacon = h->flags & FL_MONITOR_HELLO_CHILDREN ? h->beacon : 0;
	sess->h = *h;
	sess->buf = buf;
	*h = (struct fl__mon_hello){ .r = NULL };
	/* Every region may need its own store, and removed ranges the zero store. */
	sess->stores = calloc(sess->h.n + 1, sizeof(*sess->stores));
	if (!sess->stores) {
		fl__mon_errf(err, errlen, "out of memory");
		e = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < sess->h.n; i++) {
		const struct fl__mon_region *r = &sess->h.r[i];
		char a[24], b[24];

		if (r->mem == FL_MEM_HUGETLB) {
			huge = true;
			if (r->page_size > MAX_UNIT) {
				fl__mon_errf(err, errlen, "region %u: huge pages of %u KiB are not "
					     "served (at most %u KiB)", i, r->page_size >> 10,
					     MAX_UNIT >> 10);
				e = -EOPNOTSUPP;
				goto fail;
			}
		}
		if (r->store == FL__MON_STORE_MONITOR && !s->nfc) {
			fl__mon_errf(err, errlen, "a Firecracker handshake, but this monitor has "
				     "no memory file to serve it from (faultline monitor "
				     "--firecracker --mem-file FILE or --snapshot FILE)");
			e = -EOPNOTSUPP;
			goto fail;
		}
		if (r->store == FL__MON_STORE_MONITOR) {
			e = check_fc_region(s, i, r, err, errlen);
			if (e < 0)
				goto fail;
			continue;
		}
		e = add_store(s, peer, sess, r, err, errlen);
		if (e < 0)
			goto fail;
		if (r->store == FL_MONITOR_STORE_FILE) {
			struct fl_store *st = fl__srv_store_for(s, sess, r);
			uint64_t size = fl_store_size(st);

			/* Fail loud: a file shorter than its region would be read as zeros. */
			if (r->off + r->len > size) {
				fl__mon_errf(err, errlen, "region %u needs bytes up to %s of %s, "
					     "which has %s", i,
					     unit_name(r->off + r->len, a, sizeof(a)),
					     r->path ? r->path : "the memory file",
					     unit_name(size, b, sizeof(b)));
				e = -EINVAL;
				goto fail;
			}
		}
	}
	{
		struct fl__mon_region z = { .store = FL_MONITOR_STORE_ZERO };

		e = add_store(s, peer, sess, &z, err, errlen);
		if (e < 0)
			goto fail;
	}
	if (sess->firecracker) {
		/* Firecracker says nothing of its descriptor: its regions and the balloon tell. */
		sess->features = FL_FEAT_EVENT_REMOVE | (huge ? FL_FEAT_MISSING_HUGETLBFS : 0);
	}
	*ret = sess;
	return 0;
fail:
	fl__srv_session_put(sess);
	return e;
}
