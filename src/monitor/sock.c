/* SPDX-License-Identifier: MIT */
/* Monitor socket plumbing: framed messages with one descriptor, peer credentials, fd checks. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "faultline.h"
#include "internal.h"
#include "monitor-int.h"

int fl__mon_left_ms(uint64_t deadline)
{
	uint64_t now = fl__now_ms();

	if (now >= deadline)
		return 0;
	return deadline - now > 0x7fffffff ? 0x7fffffff : (int)(deadline - now);
}

int fl__mon_sockaddr(const char *path, struct sockaddr_un *sa)
{
	size_t len;

	if (!path || !*path || !sa)
		return -EINVAL;
	len = strlen(path);
	if (len >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	*sa = (struct sockaddr_un){ .sun_family = AF_UNIX };
	memcpy(sa->sun_path, path, len);
	if (path[0] == '@') {
		/* Abstract namespace: no file, no permissions; only SO_PEERCRED protects it. */
		if (len < 2)
			return -EINVAL;
		sa->sun_path[0] = '\0';
		return (int)(offsetof(struct sockaddr_un, sun_path) + len);
	}
	return (int)(offsetof(struct sockaddr_un, sun_path) + len + 1);
}

/* Wait until @fd has @events, by @deadline. Returns 0 or -ETIMEDOUT / -errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		int r = poll(&p, 1, fl__mon_left_ms(deadline));

		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

int fl__mon_send(int sock, const void *buf, size_t len, int fd, uint64_t deadline)
{
	const uint8_t *b = buf;
	size_t done = 0;
	bool fd_sent = fd < 0;

	while (done < len) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int))];
		} ctl;
		struct iovec iov = { .iov_base = (void *)(b + done), .iov_len = len - done };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (!fd_sent) {
			memset(&ctl, 0, sizeof(ctl));
			m.msg_control = ctl.buf;
			m.msg_controllen = sizeof(ctl.buf);
			ctl.h.cmsg_level = SOL_SOCKET;
			ctl.h.cmsg_type = SCM_RIGHTS;
			ctl.h.cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(&ctl.h), &fd, sizeof(int));
		}
		n = sendmsg(sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			if (e == EAGAIN || e == EWOULDBLOCK) {
				int r = wait_fd(sock, POLLOUT, deadline);

				if (r < 0)
					return r;
				continue;
			}
			return e == ECONNRESET ? -EPIPE : -e;
		}
		fd_sent = true;
		done += (size_t)n;
	}
	return 0;
}

/* Close every descriptor a control message carried. */
static int take_fds(struct msghdr *m, int *ret_fd)
{
	int count = 0;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		size_t n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (count == 0 && ret_fd && *ret_fd < 0)
				*ret_fd = fd;
			else
				close(fd);
			count++;
		}
	}
	return count;
}

/*
 * Read up to @cap bytes that are there now, collecting descriptors into
 * *fd (at most one; more is -EPROTO). Returns bytes read, 0 at hang-up,
 * -EAGAIN when nothing is there, or -errno.
 */
static ssize_t recv_avail(int sock, void *buf, size_t cap, int *fd, bool allow_fd, char *err,
			  size_t errlen)
{
	for (;;) {
		union {
			struct cmsghdr h;
			/* Room for a few: extra descriptors are seen (and closed), not cut. */
			char buf[CMSG_SPACE(8 * sizeof(int))];
		} ctl;
		struct iovec iov = { .iov_base = buf, .iov_len = cap };
		struct msghdr m = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = ctl.buf,
			.msg_controllen = sizeof(ctl.buf),
		};
		ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		int had = *fd, count;

		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			if (e == EAGAIN || e == EWOULDBLOCK)
				return -EAGAIN;
			fl__mon_errf(err, errlen, "recvmsg: %s", strerror(e));
			return e == ECONNRESET ? -EPIPE : -e;
		}
		count = take_fds(&m, allow_fd ? fd : NULL);
		if (count && (!allow_fd || had >= 0 || count > 1 || (m.msg_flags & MSG_CTRUNC))) {
			if (allow_fd && had < 0)
				*fd = fl__safe_close(*fd);
			fl__mon_errf(err, errlen, "unexpected descriptors attached (%d)", count);
			return -EPROTO;
		}
		if (m.msg_flags & MSG_CTRUNC) {
			fl__mon_errf(err, errlen, "control data cut short");
			return -EPROTO;
		}
		return n;
	}
}

/* recv_avail(), waiting by @deadline for at least one byte. */
static ssize_t recv_some(int sock, void *buf, size_t cap, int *fd, bool allow_fd,
			 uint64_t deadline, char *err, size_t errlen)
{
	for (;;) {
		ssize_t n = recv_avail(sock, buf, cap, fd, allow_fd, err, errlen);
		int r;

		if (n != -EAGAIN)
			return n;
		r = wait_fd(sock, POLLIN, deadline);
		if (r < 0) {
			fl__mon_errf(err, errlen, "no complete message in time");
			return r;
		}
	}
}

/* Read the rest of a native message whose first @have bytes are in *buf. */
static int read_native(int sock, uint64_t deadline, uint8_t **buf, size_t have, size_t *ret_len,
		       int *fd, bool allow_fd, char *err, size_t errlen)
{
	size_t total = 0, cap = FL_MONITOR_HDR_LEN;
	uint8_t *b = *buf;
	int r;

	for (;;) {
		r = fl__mon_frame(b, have, &total, err, errlen);
		if (r == 0 || r != -EAGAIN)
			break;
		while (have < FL_MONITOR_HDR_LEN) {
			ssize_t n = recv_some(sock, b + have, FL_MONITOR_HDR_LEN - have, fd,
					      allow_fd, deadline, err, errlen);

			if (n < 0)
				return (int)n;
			if (n == 0) {
				fl__mon_errf(err, errlen, "hang-up after %zu bytes of a header",
					     have);
				return have ? -EPROTO : -EPIPE;
			}
			have += (size_t)n;
		}
	}
	if (r < 0)
		return r;
	if (total > cap) {
		uint8_t *nb = realloc(b, total);

		if (!nb) {
			fl__mon_errf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		*buf = b = nb;
	}
	while (have < total) {
		ssize_t n = recv_some(sock, b + have, total - have, fd, allow_fd, deadline, err,
				      errlen);

		if (n < 0)
			return (int)n;
		if (n == 0) {
			fl__mon_errf(err, errlen, "hang-up after %zu of %zu bytes", have, total);
			return -EPROTO;
		}
		have += (size_t)n;
	}
	*ret_len = total;
	return 0;
}

int fl__mon_recv_msg(int sock, uint64_t deadline, void **ret_buf, size_t *ret_len, int *ret_fd,
		     char *err, size_t errlen)
{
	uint8_t *b = malloc(FL_MONITOR_HDR_LEN);
	int fd = -1, r;
	size_t len = 0;

	if (!b) {
		fl__mon_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/*
	 * Read the header only, so that nothing of a following message (which
	 * may carry its own descriptor) is consumed with this one.
	 */
	r = read_native(sock, deadline, &b, 0, &len, &fd, ret_fd != NULL, err, errlen);
	if (r < 0) {
		fl__safe_close(fd);
		free(b);
		return r;
	}
	*ret_buf = b;
	*ret_len = len;
	if (ret_fd)
		*ret_fd = fd;
	return 0;
}

/*
 * Where a JSON text's outermost array or object closes, tracked across
 * reads in O(1) per byte, so that a peer trickling bytes cannot make us
 * parse its message again and again. It only finds the end; the parser
 * judges the rest.
 */
static void json_scan(struct fl__mon_json_end *s, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && !s->done; i++) {
		uint8_t c = p[i];

		if (s->in_str) {
			if (s->esc)
				s->esc = false;
			else if (c == '\\')
				s->esc = true;
			else if (c == '"')
				s->in_str = false;
			continue;
		}
		if (c == '"')
			s->in_str = true;
		else if (c == '[' || c == '{')
			s->depth++;
		else if (c == ']' || c == '}')
			s->done = --s->depth <= 0;
	}
}

/*
 * A JSON handshake that cannot grow any more (hang-up, deadline, limit):
 * a syntax error found so far says more than @why does. Returns 0 if it
 * was complete after all, else the error, with the message written.
 */
static int json_cut_short(const uint8_t *b, size_t have, int why, const char *what,
			  struct fl__mon_hello *ret, char *err, size_t errlen)
{
	int r = fl__fc_parse(b, have, ret, err, errlen);

	if (r != -EAGAIN)
		return r;
	fl__mon_errf(err, errlen, "%s, after %zu bytes of JSON", what, have);
	return why;
}

int fl__mon_first_init(struct fl__mon_first *st)
{
	*st = (struct fl__mon_first){ .fd = -1, .cap = FL_MONITOR_HDR_LEN };
	st->b = malloc(st->cap);
	return st->b ? 0 : -ENOMEM;
}

void fl__mon_first_free(struct fl__mon_first *st)
{
	free(st->b);
	st->b = NULL;
	st->fd = fl__safe_close(st->fd);
}

/* A JSON handshake that can grow no more: fl__mon_first_end() says why, unless it is whole. */
static int json_stop(struct fl__mon_first *st, int why, const char *what)
{
	st->cut = why;
	st->cut_what = what;
	return 0;
}

int fl__mon_first_feed(struct fl__mon_first *st, int sock, char *err, size_t errlen)
{
	for (;;) {
		size_t want;
		ssize_t n;

		if (st->kind == FL__MON_SNIFF_NATIVE) {
			if (!st->total) {
				/* Checked from its first byte on: a wrong magic ends it at once. */
				int r = fl__mon_frame(st->b, st->have, &st->total, err, errlen);

				if (r < 0 && r != -EAGAIN)
					return r;
				if (!r && st->total > st->cap) {
					uint8_t *nb = realloc(st->b, st->total);

					if (!nb) {
						fl__mon_errf(err, errlen, "out of memory");
						return -ENOMEM;
					}
					st->b = nb;
					st->cap = st->total;
				}
			}
			if (st->total && st->have == st->total)
				return 0;
			/*
			 * The header alone first, then exactly the rest: nothing of
			 * a following message (and its descriptor) is consumed.
			 */
			want = st->total ? st->total - st->have : FL_MONITOR_HDR_LEN - st->have;
		} else if (st->kind == FL__MON_SNIFF_JSON) {
			/* Firecracker sends its array once, then keeps the socket open in silence. */
			if (st->json.done || st->cut)
				return 0;
			if (st->have == FL_MONITOR_MAX_MSG)
				return json_stop(st, -E2BIG, "JSON handshake longer than 1 MiB");
			if (st->have == st->cap) {
				size_t nc = st->cap * 4 > FL_MONITOR_MAX_MSG ? FL_MONITOR_MAX_MSG
									     : st->cap * 4;
				uint8_t *nb = realloc(st->b, nc);

				if (!nb) {
					fl__mon_errf(err, errlen, "out of memory");
					return -ENOMEM;
				}
				st->b = nb;
				st->cap = nc;
			}
			want = st->cap - st->have;
		} else {
			want = 1;	/* what it speaks */
		}
		n = recv_avail(sock, st->b + st->have, want, &st->fd, true, err, errlen);
		if (n == -EAGAIN)
			return -EAGAIN;
		if (st->kind == FL__MON_SNIFF_JSON && n <= 0)
			return n ? json_stop(st, (int)n, "cannot read the JSON handshake")
				 : json_stop(st, -EPROTO, "hang-up inside the JSON handshake");
		if (n < 0)
			return (int)n;
		if (n == 0) {
			if (!st->kind) {
				fl__mon_errf(err, errlen, "hang-up before a handshake");
				return -EPIPE;
			}
			if (!st->total) {
				fl__mon_errf(err, errlen, "hang-up after %zu bytes of a header",
					     st->have);
				return -EPROTO;
			}
			fl__mon_errf(err, errlen, "hang-up after %zu of %zu bytes", st->have,
				     st->total);
			return -EPROTO;
		}
		if (!st->kind) {
			int k = fl__mon_sniff(st->b, 1);

			if (k != FL__MON_SNIFF_NATIVE && k != FL__MON_SNIFF_JSON) {
				fl__mon_errf(err, errlen, "neither a faultline HELLO nor "
					     "Firecracker's JSON (first byte 0x%02x)", st->b[0]);
				return -EPROTO;
			}
			st->kind = k;
		}
		if (st->kind == FL__MON_SNIFF_JSON)
			json_scan(&st->json, st->b + st->have, (size_t)n);
		st->have += (size_t)n;
	}
}

int fl__mon_first_expire(struct fl__mon_first *st, char *err, size_t errlen)
{
	if (st->kind == FL__MON_SNIFF_JSON) {
		if (!st->json.done && !st->cut)
			json_stop(st, -ETIMEDOUT, "no complete JSON handshake in time");
		return 0;
	}
	if (st->kind == FL__MON_SNIFF_NATIVE && st->total && st->have == st->total)
		return 0;
	fl__mon_errf(err, errlen, "no complete message in time");
	return -ETIMEDOUT;
}

int fl__mon_first_end(struct fl__mon_first *st, struct fl__mon_hello *ret, void **ret_buf,
		      int *ret_fd, struct fl__mon_claim *ret_claim, bool *is_claim, char *err,
		      size_t errlen)
{
	int r;

	if (is_claim)
		*is_claim = false;
	if (st->kind == FL__MON_SNIFF_JSON) {
		if (st->cut) {
			r = json_cut_short(st->b, st->have, st->cut, st->cut_what, ret, err,
					   errlen);
		} else {
			r = fl__fc_parse(st->b, st->have, ret, err, errlen);
			if (r == -EAGAIN)
				r = -EPROTO;
		}
	} else if (ret_claim && fl__mon_msg_type(st->b) == FL_MONITOR_MSG_CLAIM) {
		r = fl__mon_decode_claim(st->b, st->total, ret_claim, err, errlen);
		if (r < 0)
			return r;
		if (st->fd >= 0) {
			fl__mon_errf(err, errlen, "a descriptor attached to a CLAIM");
			return -EPROTO;
		}
		*is_claim = true;
		return 0;
	} else {
		r = fl__mon_decode_hello(st->b, st->total, ret, err, errlen);
	}
	if (r < 0)
		return r;
	if (st->fd < 0) {
		fl__mon_hello_free(ret);
		fl__mon_errf(err, errlen, "no userfaultfd attached to the handshake");
		return -EPROTO;
	}
	*ret_buf = st->b;
	st->b = NULL;
	*ret_fd = st->fd;
	st->fd = -1;
	return 0;
}

int fl__mon_recv_hello(int sock, uint64_t deadline, struct fl__mon_hello *ret, void **ret_buf,
		       int *ret_fd, char *err, size_t errlen)
{
	return fl__mon_recv_first(sock, deadline, ret, ret_buf, ret_fd, NULL, NULL, err, errlen);
}

int fl__mon_recv_first(int sock, uint64_t deadline, struct fl__mon_hello *ret, void **ret_buf,
		       int *ret_fd, struct fl__mon_claim *ret_claim, bool *is_claim, char *err,
		       size_t errlen)
{
	struct fl__mon_first st;
	int r;

	if (is_claim)
		*is_claim = false;
	if (fl__mon_first_init(&st) < 0) {
		fl__mon_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (;;) {
		r = fl__mon_first_feed(&st, sock, err, errlen);
		if (r != -EAGAIN)
			break;
		r = wait_fd(sock, POLLIN, deadline);
		if (r == -ETIMEDOUT) {
			r = fl__mon_first_expire(&st, err, errlen);
			break;
		}
		if (r < 0) {
			fl__mon_errf(err, errlen, "poll: %s", strerror(-r));
			break;
		}
	}
	if (!r)
		r = fl__mon_first_end(&st, ret, ret_buf, ret_fd, ret_claim, is_claim, err,
				      errlen);
	fl__mon_first_free(&st);
	return r;
}

int fl__mon_peer_check(int sock, uid_t uid, bool any_uid, pid_t *ret_pid, uid_t *ret_uid,
		       char *err, size_t errlen)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		int e = errno;

		fl__mon_errf(err, errlen, "SO_PEERCRED: %s", strerror(e));
		return -e;
	}
	if (!any_uid && cred.uid != uid) {
		fl__mon_errf(err, errlen,
			     "peer pid %d runs as uid %u; this monitor serves uid %u only",
			     (int)cred.pid, (unsigned int)cred.uid, (unsigned int)uid);
		return -EPERM;
	}
	if (ret_pid)
		*ret_pid = cred.pid;
	if (ret_uid)
		*ret_uid = cred.uid;
	return 0;
}

int fl__mon_check_uffd(int fd, char *err, size_t errlen)
{
	char link[64], target[64];
	ssize_t n;

	if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
		fl__mon_errf(err, errlen, "descriptor %d is not open", fd);
		return -EBADF;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0) {
		int e = errno;

		/* Without /proc the kind of descriptor cannot be told: refuse rather than trust. */
		fl__mon_errf(err, errlen, "cannot tell what descriptor %d is (%s: %s)", fd, link,
			     strerror(e));
		return -e;
	}
	target[n] = '\0';
	if (strcmp(target, "anon_inode:[userfaultfd]")) {
		fl__mon_errf(err, errlen, "the descriptor sent is \"%s\", not a userfaultfd",
			     target);
		return -EBADF;
	}
	return 0;
}
