/* SPDX-License-Identifier: MIT */
/* SIGBUS mode: the process-wide handler in which a faulting thread resolves its own fault. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "faultline.h"
#include "internal.h"
#include "pager-int.h"

/*
 * A signal action belongs to the whole process, so SIGBUS mode needs the
 * one piece of global state of the pager layer: the pagers the handler
 * serves and the action installed before ours. Signal handlers read it with
 * atomics only (no lock, no malloc); attach and detach write it under
 * sig_lock and wait, through sig_grace, for handlers still reading.
 */
static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct fl_pager *) sig_pagers[PG_SIG_PAGERS];
static _Atomic size_t sig_used;		/* slots ever used: the handler scans no further */
static _Atomic size_t sig_hint;
static struct pg_grace sig_grace;
static struct sigaction sig_prev;
static unsigned int sig_count;
static bool sig_installed;
/* Bumped in a fork()ed child: the parent's pagers must not be served there. */
static _Atomic unsigned int sig_gen;
static pthread_once_t sig_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
	atomic_fetch_add(&sig_gen, 1);
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, on_fork_child);
}

/* Hand the signal to the action that was there before ours, as the kernel would have. */
static void chain(int sig, siginfo_t *si, void *uc)
{
	const struct sigaction *pa = &sig_prev;

	if (pa->sa_flags & SA_SIGINFO) {
		if (pa->sa_sigaction)
			pa->sa_sigaction(sig, si, uc);
		return;
	}
	if (pa->sa_handler == SIG_IGN && si->si_code <= 0)
		return;	/* sent by kill() and ignored */
	if (pa->sa_handler == SIG_DFL || pa->sa_handler == SIG_IGN) {
		/*
		 * The default action: restore it. A fault recurs when we return and
		 * now terminates the process with the right address; a signal sent
		 * by kill() is sent again.
		 */
		struct sigaction dfl = { .sa_handler = SIG_DFL };

		sigemptyset(&dfl.sa_mask);
		sigaction(SIGBUS, &dfl, NULL);
		if (si->si_code <= 0)
			raise(SIGBUS);
		return;
	}
	pa->sa_handler(sig);
}

static bool serve(void *addr)
{
	unsigned int e = fl__grace_enter(&sig_grace);
	unsigned int gen = atomic_load_explicit(&sig_gen, memory_order_relaxed);
	size_t used = atomic_load(&sig_used), h = atomic_load_explicit(&sig_hint,
									 memory_order_relaxed);
	struct fl_region *r = NULL;
	uintptr_t start = 0;
	bool ok;

	for (size_t k = 0; k < used && !r; k++) {
		size_t i = (h + k) % used;
		struct fl_pager *p = atomic_load(&sig_pagers[i]);
		size_t ph;

		if (!p || p->sig_gen != gen)
			continue;
		ph = atomic_load_explicit(&p->hint, memory_order_relaxed);
		r = fl__table_find(atomic_load(&p->table), &ph, (uintptr_t)addr, &start);
		if (r) {
			atomic_fetch_add(&r->users, 1);
			atomic_store_explicit(&p->hint, ph, memory_order_relaxed);
			if (i != h)
				atomic_store_explicit(&sig_hint, i, memory_order_relaxed);
		}
	}
	fl__grace_exit(&sig_grace, e);
	if (!r)
		return false;
	ok = fl__resolve_sigbus(r, start, (uintptr_t)addr);
	fl__region_put(r);
	return ok;
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;

	/* A missing page of a registered range is BUS_ADRERR; our poison is BUS_MCEERR_AR. */
	if (si->si_code != BUS_ADRERR || !serve(si->si_addr))
		chain(sig, si, uc);
	errno = saved;
}

int fl__sigbus_attach(struct fl_pager *p)
{
	int slot = -1, e = 0;

	if (p->sig_slot >= 0)
		return 0;
	pthread_once(&sig_once, register_atfork);
	pthread_mutex_lock(&sig_lock);
	for (int i = 0; i < PG_SIG_PAGERS; i++) {
		if (!atomic_load(&sig_pagers[i])) {
			slot = i;
			break;
		}
	}
	if (slot < 0) {
		pthread_mutex_unlock(&sig_lock);
		fl__err("pager: at most %d pagers can be in SIGBUS mode at once", PG_SIG_PAGERS);
		return -EBUSY;
	}
	if (!sig_installed) {
		/*
		 * SA_NODEFER: a store that itself touches a SIGBUS-mode region is
		 * served recursively instead of killing the process. No SA_ONSTACK:
		 * resolving needs more stack than an alternate stack usually has,
		 * and our faults are never stack overflows.
		 */
		struct sigaction sa = {
			.sa_sigaction = on_sigbus,
			.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART,
		};

		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGBUS, &sa, &sig_prev) < 0) {
			e = -errno;
			pthread_mutex_unlock(&sig_lock);
			return e;
		}
		sig_installed = true;
	}
	p->sig_gen = atomic_load(&sig_gen);
	p->sig_slot = slot;
	atomic_store(&sig_pagers[slot], p);
	if ((size_t)slot + 1 > atomic_load(&sig_used))
		atomic_store(&sig_used, (size_t)slot + 1);
	sig_count++;
	pthread_mutex_unlock(&sig_lock);
	return 0;
}

void fl__sigbus_detach(struct fl_pager *p)
{
	if (p->sig_slot < 0)
		return;
	pthread_mutex_lock(&sig_lock);
	atomic_store(&sig_pagers[p->sig_slot], NULL);
	p->sig_slot = -1;
	fl__grace_wait(&sig_grace);
	if (--sig_count == 0 && sig_installed) {
		struct sigaction cur;

		/* Put the old action back, unless someone installed theirs over ours since. */
		if (sigaction(SIGBUS, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
		    cur.sa_sigaction == on_sigbus) {
			sigaction(SIGBUS, &sig_prev, NULL);
			sig_installed = false;
		}
	}
	pthread_mutex_unlock(&sig_lock);
}

void fl__sigbus_sync(void)
{
	fl__grace_wait(&sig_grace);
}
