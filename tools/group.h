/* SPDX-License-Identifier: MIT */
/* A group's number from its name, also in a statically linked tool (linked into the tests too). */
#ifndef FL_TOOL_GROUP_H
#define FL_TOOL_GROUP_H

#include <stdint.h>

/*
 * The gid of group @name in @path, a file in /etc/group's format
 * (name:password:gid:members, one group a line). 0, -ENOENT if no line
 * names it with a valid gid, -EINVAL if @name is empty or holds ':' or a
 * newline, -errno if the file cannot be read.
 */
int tool_group_file_gid(const char *path, const char *name, uint32_t *ret);

/*
 * The gid of group @name: a number (up to 2^32 - 2) is taken as it is; a
 * name is looked up with getgrnam_r, except in a statically linked program,
 * where the C library's name services would load the shared libraries of
 * another C library (and crash): there it is looked up in /etc/group only.
 * 0, or -ENOENT (-EINVAL, -errno) as tool_group_file_gid.
 */
int tool_group_gid(const char *name, uint32_t *ret);

/* Whether this program is statically linked (it has no program interpreter). */
int tool_static_build(void);

#endif /* FL_TOOL_GROUP_H */
