/* SPDX-License-Identifier: MIT */
/* Shared declarations of the faultline command's subcommands. */
#ifndef FL_TOOL_H
#define FL_TOOL_H

#include <stdbool.h>
#include <stdio.h>

#include "faultline.h"

/* Exit codes: 0 success, 1 failure, 2 usage. */
#define EXIT_USAGE 2

/* Each subcommand: argv[0] is the subcommand's name. */
struct fl_subcommand {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
	void (*usage)(FILE *out);
};

/* Print "faultline: SUB: " + message to stderr; returns EXIT_USAGE for `return usage_error(...)`. */
int usage_error(const char *sub, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "faultline: SUB: what: strerror(-err)" and return 1. */
int fail(const char *sub, const char *what, int err);
/*
 * A byte count: digits with an optional K, M or G (binary; "KiB", "MB" and the like also
 * accepted), at most @max. Returns 0 or -EINVAL.
 */
int tool_parse_size(const char *s, uint64_t max, uint64_t *ret);
/* A decimal number (digits only: no sign, no space) of at most @max. Returns 0 or -EINVAL. */
int tool_parse_num(const char *s, unsigned long max, unsigned long *ret);
/*
 * --ready-fd FD of a server (nothing to do when @fd < 0). tool_ready_check,
 * before starting: FD must be open for writing, else a usage error
 * (EXIT_USAGE). tool_ready_signal, once listening: one byte to FD, which is
 * closed; 0, or -1 after saying why on stderr (whoever waits for the byte
 * would wait forever: the caller stops rather than serve).
 */
int tool_ready_check(const char *sub, int fd);
int tool_ready_signal(const char *sub, int fd);
/* SIGINT and SIGTERM (and SIGUSR1 when @usr1) run @fn; SIGPIPE is ignored. */
void tool_signals(void (*fn)(int), bool usr1);
/* The library's log lines go to stderr, prefixed "faultline: ". */
void tool_log(enum fl_log_level level, const char *msg);

int cmd_probe(int argc, char **argv);
void usage_probe(FILE *out);
int cmd_bench(int argc, char **argv);
void usage_bench(FILE *out);
int cmd_migrate(int argc, char **argv);
void usage_migrate(FILE *out);
int cmd_monitor(int argc, char **argv);
void usage_monitor(FILE *out);
int cmd_snapshot(int argc, char **argv);
void usage_snapshot(FILE *out);
int cmd_serve(int argc, char **argv);
void usage_serve(FILE *out);
/* faultline serve --demo (fardemo.c): argv[0] is "--demo". */
int serve_demo(int argc, char **argv);
void usage_serve_demo(FILE *out);
/* faultline snapshot --demo (snapdemo.c): argv[0] is "--demo". */
int snapshot_demo(int argc, char **argv);
void usage_snapshot_demo(FILE *out);

#endif /* FL_TOOL_H */
