/* SPDX-License-Identifier: MIT */
/* faultline probe: what userfaultfd can do on this machine, as a table or JSON. */
#include <getopt.h>
#include <string.h>

#include "faultline.h"
#include "tool.h"

static const uint32_t modes[] = { FL_REGISTER_MISSING, FL_REGISTER_WP, FL_REGISTER_MINOR };
static const char *const mode_names[] = { "missing", "wp", "minor" };

void usage_probe(FILE *out)
{
	fprintf(out, "usage: faultline probe [--json]\n\n"
		     "Shows what userfaultfd can do here: which ways of opening one work,\n"
		     "the kernel's features, what each memory type allows, huge page sizes.\n\n"
		     "  --json   print one JSON object instead of the table\n");
}

static void list_ioctls(FILE *out, uint32_t io, bool json)
{
	bool first = true;

	for (uint32_t bit = 1; bit; bit <<= 1) {
		const char *n = (io & bit) ? fl_ioctl_name(bit) : NULL;

		if (!n)
			continue;
		fprintf(out, json ? "%s\"%s\"" : "%s%s", first ? "" : json ? "," : " ", n);
		first = false;
	}
	if (first && !json)
		fprintf(out, "-");
}

static void list_modes(FILE *out, uint32_t m, bool json)
{
	bool first = true;

	for (size_t i = 0; i < 3; i++) {
		if (!(m & modes[i]))
			continue;
		fprintf(out, json ? "%s\"%s\"" : "%s%s", first ? "" : json ? "," : " ", mode_names[i]);
		first = false;
	}
	if (first && !json)
		fprintf(out, "-");
}

static void print_json(const struct fl_features *f)
{
	printf("{\"version\":\"%s\",\"api\":%llu,\"page_size\":%u,", fl_version(),
	       (unsigned long long)f->api, f->page_size);
	printf("\"default_path\":\"%s\",\"paths\":{",
	       f->default_path == FL_UFFD_PATH_AUTO ? "none" : fl_uffd_path_name(f->default_path));
	for (int p = 1; p < FL_UFFD_PATH_COUNT; p++) {
		printf("%s\"%s\":{\"ok\":%s", p > 1 ? "," : "", fl_uffd_path_name(p),
		       f->path_error[p] ? "false" : "true");
		if (f->path_error[p])
			printf(",\"error\":\"%s\"", strerror(-f->path_error[p]));
		printf("}");
	}
	printf("},\"features\":{");
	for (uint64_t bit = 1; bit & FL_FEAT_ALL; bit <<= 1)
		printf("%s\"%s\":%s", bit > 1 ? "," : "", fl_feature_name(bit),
		       (f->features & bit) ? "true" : "false");
	printf("},\"kernel_features\":%llu,\"memory\":{", (unsigned long long)f->kernel_features);
	for (int t = 0; t < FL_MEM_TYPE_COUNT; t++) {
		printf("%s\"%s\":{\"modes\":[", t ? "," : "", fl_mem_type_name(t));
		list_modes(stdout, f->mem[t].modes, true);
		printf("],\"ioctls\":[");
		list_ioctls(stdout, f->mem[t].ioctls, true);
		printf("]");
		if (f->mem[t].error)
			printf(",\"error\":\"%s\"", strerror(-f->mem[t].error));
		printf("}");
	}
	printf("},\"huge_pages\":[");
	for (uint32_t i = 0; i < f->n_huge_sizes; i++)
		printf("%s{\"size\":%llu,\"total\":%llu,\"free\":%llu}", i ? "," : "",
		       (unsigned long long)f->huge_sizes[i].size,
		       (unsigned long long)f->huge_sizes[i].total,
		       (unsigned long long)f->huge_sizes[i].free);
	printf("],\"thp\":%s}\n", f->thp ? "true" : "false");
}

static void print_size(char *buf, size_t len, uint64_t bytes)
{
	if (bytes >= (1ull << 30))
		snprintf(buf, len, "%llu GiB", (unsigned long long)(bytes >> 30));
	else if (bytes >= (1ull << 20))
		snprintf(buf, len, "%llu MiB", (unsigned long long)(bytes >> 20));
	else
		snprintf(buf, len, "%llu KiB", (unsigned long long)(bytes >> 10));
}

static void print_table(const struct fl_features *f)
{
	char sz[32];

	printf("faultline %s: userfaultfd on this machine\n\n", fl_version());
	printf("access path     works\n");
	for (int p = 1; p < FL_UFFD_PATH_COUNT; p++)
		printf("  %-13s %s%s%s\n", fl_uffd_path_name(p), f->path_error[p] ? "no (" : "yes",
		       f->path_error[p] ? strerror(-f->path_error[p]) : "",
		       f->path_error[p] ? ")" : (p == (int)f->default_path ? " (default)" : ""));
	if (f->default_path == FL_UFFD_PATH_AUTO)
		printf("  no way to open a userfaultfd works here; see faultline(7), PRIVILEGES\n");

	printf("\nfeature              available\n");
	for (uint64_t bit = 1; bit & FL_FEAT_ALL; bit <<= 1)
		printf("  %-18s %s\n", fl_feature_name(bit), (f->features & bit) ? "yes" : "no");

	printf("\nmemory    modes              resolve ioctls\n");
	for (int t = 0; t < FL_MEM_TYPE_COUNT; t++) {
		printf("  %-7s ", fl_mem_type_name(t));
		if (f->mem[t].error) {
			printf("cannot map: %s\n", strerror(-f->mem[t].error));
			continue;
		}
		{
			char buf[64];
			FILE *m = fmemopen(buf, sizeof(buf), "w");

			list_modes(m, f->mem[t].modes, false);
			fclose(m);
			printf("%-18s ", buf);
		}
		list_ioctls(stdout, f->mem[t].ioctls, false);
		printf("\n");
	}

	printf("\nhuge pages   reserved   free\n");
	for (uint32_t i = 0; i < f->n_huge_sizes; i++) {
		print_size(sz, sizeof(sz), f->huge_sizes[i].size);
		printf("  %-10s %8llu %6llu\n", sz, (unsigned long long)f->huge_sizes[i].total,
		       (unsigned long long)f->huge_sizes[i].free);
	}
	printf("  transparent huge pages: %s\n", f->thp ? "yes" : "no");
	printf("\npage size %u, UFFD_API %#llx\n", f->page_size, (unsigned long long)f->api);
}

int cmd_probe(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct fl_features f;
	bool json = false;
	int c, r;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else
			return usage_error("probe", "unknown option '%s'", argv[optind - 1]);
	}
	if (optind < argc)
		return usage_error("probe", "unexpected argument '%s'", argv[optind]);
	r = fl_probe(&f);
	if (r < 0)
		return fail("probe", "probing userfaultfd", r);
	if (json)
		print_json(&f);
	else
		print_table(&f);
	return 0;
}
