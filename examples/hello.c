/* SPDX-License-Identifier: MIT */
/* The userfaultfd(2) man-page demo on faultline: a handler thread fills each fault with 'A'+n. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <faultline.h>

static struct fl_uffd *uffd;

/* The library never prints; when opening fails it says here what to enable. */
static void log_line(enum fl_log_level level, const char *msg)
{
	if (level <= FL_LOG_WARN)
		fprintf(stderr, "hello: %s\n", msg);
}

static void *handler(void *arg)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	char *page = malloc(ps);
	struct fl_event ev;
	int faults = 0;

	(void)arg;
	while (page && fl_uffd_read_events(uffd, &ev, 1) == 1) {
		char *dst = (char *)((uintptr_t)ev.fault.addr & ~(uintptr_t)(ps - 1));

		printf("    handler: fault at %p, filling with '%c'\n", ev.fault.addr, 'A' + faults % 20);
		memset(page, 'A' + faults++ % 20, ps);
		if (fl_uffd_copy(uffd, dst, page, ps, 0, NULL) < 0)
			break;
	}
	free(page);
	return NULL;
}

int main(int argc, char **argv)
{
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), len;
	pthread_t thr;
	char *addr;
	int r;

	if (argc != 2 || atol(argv[1]) <= 0) {
		fprintf(stderr, "usage: %s NUM-PAGES\n", argv[0]);
		return 2;
	}
	len = (size_t)atol(argv[1]) * ps;
	fl_set_log_fn(log_line);
	r = fl_uffd_open(NULL, &uffd);
	if (r < 0) {
		fprintf(stderr, "hello: fl_uffd_open: %s\n", strerror(-r));
		return 1;
	}
	addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (addr == MAP_FAILED || fl_uffd_register(uffd, addr, len, FL_REGISTER_MISSING, NULL) < 0)
		return perror("hello: mmap/register"), 1;
	pthread_create(&thr, NULL, handler, NULL);

	/* Touch every 1024th byte, off the page boundary: one fault per page. */
	for (size_t l = 0xf; l < len; l += 1024)
		printf("read address %p in main(): %c\n", (void *)(addr + l), addr[l]);
	return 0;
}
