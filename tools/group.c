/* SPDX-License-Identifier: MIT */
/* A group's number from its name, without the name services in a static build. */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

#include "group.h"

/* Digits only, at most 2^32 - 2 (2^32 - 1 is (gid_t)-1: "no change" to chown). */
static int parse_gid(const char *s, const char *end, uint32_t *ret)
{
	uint64_t v = 0;

	if (s == end)
		return -EINVAL;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX - 1)
			return -EINVAL;
	}
	*ret = (uint32_t)v;
	return 0;
}

int tool_group_file_gid(const char *path, const char *name, uint32_t *ret)
{
	size_t nlen = strlen(name), cap = 0;
	char *line = NULL;
	ssize_t n;
	int r = -ENOENT;
	FILE *f;

	if (!nlen || strpbrk(name, ":\n"))
		return -EINVAL;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (r == -ENOENT && (n = getline(&line, &cap, f)) > 0) {
		char *gid, *end;

		if (line[n - 1] == '\n')
			line[--n] = '\0';
		/* name:password:gid[:members] */
		if (strncmp(line, name, nlen) || line[nlen] != ':')
			continue;
		gid = strchr(line + nlen + 1, ':');
		if (!gid)
			continue;
		gid++;
		end = gid + strcspn(gid, ":");
		if (parse_gid(gid, end, ret) == 0)
			r = 0;
	}
	if (r == -ENOENT && ferror(f))
		r = -EIO;
	free(line);
	fclose(f);
	return r;
}

int tool_static_build(void)
{
	return getauxval(AT_BASE) == 0;
}

int tool_group_gid(const char *name, uint32_t *ret)
{
	struct group gr, *g = NULL;
	char buf[16384];

	if (parse_gid(name, name + strlen(name), ret) == 0)
		return 0;
	if (tool_static_build())
		return tool_group_file_gid("/etc/group", name, ret);
	if (getgrnam_r(name, &gr, buf, sizeof(buf), &g) || !g)
		return -ENOENT;
	*ret = (uint32_t)g->gr_gid;
	return 0;
}
