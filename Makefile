# SPDX-License-Identifier: MIT
# faultline: one non-recursive Makefile (CONTRIBUTING.md, "Build").

VERSION_MAJOR := 0
VERSION_MINOR := 3
VERSION_PATCH := 0
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

CC ?= cc
AR ?= ar

ifeq ($(SANITIZE),1)
O ?= build-asan
else ifeq ($(TSAN),1)
O ?= build-tsan
else
O ?= build
endif

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-7s %s\n' '$(1)' '$(2)'
endif

BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wformat=2 -Wundef -pthread -Iinclude -MMD -MP
BASE_LDFLAGS := -pthread
ifeq ($(WERROR),1)
BASE_CFLAGS += -Werror
endif
ifeq ($(SANITIZE),1)
BASE_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
BASE_LDFLAGS += -fsanitize=address,undefined
endif
ifeq ($(TSAN),1)
BASE_CFLAGS += -fsanitize=thread -fno-omit-frame-pointer
BASE_LDFLAGS += -fsanitize=thread
endif
ALL_LDFLAGS := $(BASE_LDFLAGS) $(LDFLAGS)
# OpenSSL 3 (libssl-dev): TLS 1.3 for every TCP connection (src/net/transport.c).
LIBS := -lssl -lcrypto -lm

# zstd for compressed snapshots (libzstd-dev): ZSTD=auto (default) uses it when its header is
# found, ZSTD=1 requires it, ZSTD=0 builds without it (FL_SNAPSHOT_ZSTD is then -EOPNOTSUPP).
ZSTD ?= auto
ifeq ($(ZSTD),auto)
ZSTD := $(shell printf '\043include <zstd.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1 || echo 0)
endif
ifeq ($(ZSTD),1)
BASE_CFLAGS += -DFL_HAVE_ZSTD
LIBS += -lzstd
endif
# hiredis for the Redis store (libhiredis-dev): REDIS=auto (default) uses it when its header is
# found, REDIS=1 requires it, REDIS=0 builds without it (fl_store_redis_open is then -EOPNOTSUPP).
REDIS ?= auto
ifeq ($(REDIS),auto)
REDIS := $(shell printf '\043include <hiredis/hiredis.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1 || echo 0)
endif
ifeq ($(REDIS),1)
BASE_CFLAGS += -DFL_HAVE_HIREDIS
LIBS += -lhiredis
endif
# zstd.c is built again when the choice changes (libzstd-dev installed by make deps, or ZSTD=0).
ZSTD_STAMP := $(O)/zstd-$(ZSTD).stamp
ALL_CFLAGS := $(BASE_CFLAGS) $(CFLAGS)

# ------------------------------------------------------------------ sources
LIB_SRCS := $(sort $(wildcard src/*/*.c))
TOOL_SRCS := $(sort $(wildcard tools/*.c) $(wildcard bench/*.c))
TEST_SRCS := $(sort $(wildcard test/*.c))
EXAMPLE_SRCS := $(sort $(wildcard examples/*.c))
FUZZ_SRCS := $(sort $(wildcard test/fuzz/fuzz-*.c))

LIB_OBJS := $(LIB_SRCS:%.c=$(O)/%.o)
LIB_PIC_OBJS := $(LIB_SRCS:%.c=$(O)/pic/%.o)
TOOL_OBJS := $(TOOL_SRCS:%.c=$(O)/%.o)
TEST_OBJS := $(TEST_SRCS:%.c=$(O)/%.o)
EXAMPLES := $(EXAMPLE_SRCS:%.c=$(O)/%)

STATIC_LIB := $(O)/libfaultline.a
SONAME := libfaultline.so.$(VERSION_MAJOR)
SHARED_LIB := $(O)/libfaultline.so.$(VERSION)
TOOL := $(O)/faultline
RUNNER := $(O)/test/runner
PCFILE := $(O)/faultline.pc
# Fuzz targets: built with a replay driver (corpus + seeded mutations) for make check, and
# with libFuzzer (clang) for make fuzz.
FUZZERS := $(FUZZ_SRCS:test/fuzz/%.c=$(O)/fuzz/%)
LIBFUZZERS := $(FUZZ_SRCS:test/fuzz/%.c=$(O)/libfuzzer/%)
FUZZ_ITERATIONS ?= 20000
FUZZ_SECONDS ?= 60

MAP := src/libfaultline.map
MAP_NODE := $(shell sed -n 's/^\(FL_[0-9.]*\) {.*/\1/p' $(MAP) | tail -n 1)
ifneq ($(MAP_NODE),FL_$(VERSION_MAJOR).$(VERSION_MINOR))
$(error $(MAP): newest node is $(MAP_NODE), but the version is $(VERSION); add FL_$(VERSION_MAJOR).$(VERSION_MINOR))
endif

.PHONY: all check check-vm demo bench install uninstall clean doc-check fuzz fuzz-check deps
.DEFAULT_GOAL := all

all: $(STATIC_LIB) $(O)/libfaultline.so $(TOOL) $(EXAMPLES) $(RUNNER) $(PCFILE) $(FUZZERS)

# -------------------------------------------------------------------- rules
$(O)/%.o: %.c
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Isrc -Isrc/uffd -c -o $@ $<

$(O)/pic/%.o: %.c
	$(call msg,CC,$< [pic])
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Isrc -Isrc/uffd -fPIC -fvisibility=hidden -c -o $@ $<

$(STATIC_LIB): $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(SHARED_LIB): $(LIB_PIC_OBJS) $(MAP)
	$(call msg,LD,$@)
	$(Q)$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=$(MAP) -Wl,-z,defs \
		$(ALL_LDFLAGS) -o $@ $(LIB_PIC_OBJS) $(LIBS)

$(O)/libfaultline.so: $(SHARED_LIB)
	$(Q)ln -sf libfaultline.so.$(VERSION) $(O)/$(SONAME) && \
		ln -sf $(SONAME) $@

$(TOOL): $(TOOL_OBJS) $(STATIC_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(TOOL_OBJS) $(STATIC_LIB) $(LIBS)

$(O)/examples/%: examples/%.c $(STATIC_LIB)
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(STATIC_LIB) $(LIBS)

# The tests start real Redis servers with the benchmark's helper, and look up groups as the tool does.
RUNNER_TOOL_OBJS := $(O)/bench/redisd.o $(O)/tools/group.o
$(RUNNER): $(TEST_OBJS) $(RUNNER_TOOL_OBJS) $(STATIC_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(TEST_OBJS) $(RUNNER_TOOL_OBJS) $(STATIC_LIB) $(LIBS)

$(O)/fuzz/%: test/fuzz/%.c test/fuzz/driver.c $(STATIC_LIB)
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Isrc -Isrc/uffd $(ALL_LDFLAGS) -o $@ $< test/fuzz/driver.c \
		$(STATIC_LIB) $(LIBS)

# libFuzzer needs clang and its runtime (Debian: clang, libclang-rt-14-dev).
FUZZ_CC ?= clang
$(O)/libfuzzer/%: test/fuzz/%.c $(LIB_SRCS)
	$(call msg,FUZZ,$<)
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc -Isrc/uffd -pthread \
		-fsanitize=fuzzer,address,undefined $(if $(filter 1,$(ZSTD)),-DFL_HAVE_ZSTD) \
		$(if $(filter 1,$(REDIS)),-DFL_HAVE_HIREDIS) \
		-o $@ $< $(LIB_SRCS) $(LIBS)

# The paths are the ones given now: make install regenerates it, so a PREFIX given only to
# make install is honoured.
PC_SED = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	-e 's|@LIBS@|$(LIBS)|' faultline.pc.in
$(PCFILE): faultline.pc.in Makefile
	@mkdir -p $(@D)
	$(Q)$(PC_SED) > $@

$(ZSTD_STAMP):
	@mkdir -p $(@D)
	$(Q)rm -f $(O)/zstd-*.stamp && touch $@
$(O)/src/snapshot/zstd.o $(O)/pic/src/snapshot/zstd.o: $(ZSTD_STAMP)
REDIS_STAMP := $(O)/redis-$(REDIS).stamp
$(REDIS_STAMP):
	@mkdir -p $(@D)
	$(Q)rm -f $(O)/redis-*.stamp && touch $@
$(O)/src/store/redis.o $(O)/pic/src/store/redis.o $(O)/bench/redisd.o: $(REDIS_STAMP)

# ------------------------------------------------------------------ targets
# check: the one test command (README). Docs first: cheap, and every exported symbol needs a page.
check: deps all doc-check fuzz-check
	$(Q)$(RUNNER) $(T)

# The suite on another kernel in a virtual machine (tools/check-vm.sh; KERNEL=, VM_TESTS=):
# a statically linked runner and tool in their own build directory, since the guest has no
# C library.
VM_O ?= build-static
check-vm:
	$(Q)$(MAKE) --no-print-directory O=$(VM_O) LDFLAGS=-static $(VM_O)/test/runner $(VM_O)/faultline
	$(Q)bash tools/check-vm.sh $(VM_O)

# What check, demo and bench need beyond a compiler: installed with apt-get as root, else named.
deps:
	$(Q)sh tools/deps.sh

# Every parser that reads another process's bytes, replayed over its corpus and mutations.
fuzz-check: $(FUZZERS)
	$(Q)for f in $(FUZZERS); do \
		n=$$(basename $$f); $$f test/fuzz/corpus/$${n#fuzz-} $(FUZZ_ITERATIONS) || exit 1; \
	done

# Coverage-guided fuzzing with libFuzzer, FUZZ_SECONDS per target.
fuzz: $(LIBFUZZERS)
	$(Q)for f in $(LIBFUZZERS); do \
		n=$$(basename $$f); mkdir -p $(O)/corpus-$${n#fuzz-}; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			$(O)/corpus-$${n#fuzz-} test/fuzz/corpus/$${n#fuzz-} || exit 1; \
	done

doc-check:
	$(Q)sh test/check-docs.sh $(MAP) $(O)

demo: deps all
	$(Q)sh tools/demo.sh $(O)

bench: deps all
	$(Q)sh tools/bench.sh $(O) $(BENCH)

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(INCLUDEDIR)/faultline $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man7
	install -m 0755 $(TOOL) $(DESTDIR)$(BINDIR)/faultline
	install -m 0644 $(STATIC_LIB) $(DESTDIR)$(LIBDIR)/libfaultline.a
	install -m 0755 $(SHARED_LIB) $(DESTDIR)$(LIBDIR)/libfaultline.so.$(VERSION)
	ln -sf libfaultline.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libfaultline.so
	install -m 0644 include/faultline.h $(DESTDIR)$(INCLUDEDIR)/faultline.h
	install -m 0644 include/faultline/*.h $(DESTDIR)$(INCLUDEDIR)/faultline/
	$(PC_SED) > $(DESTDIR)$(PKGCONFIGDIR)/faultline.pc
	install -m 0644 man/man1/*.1 $(DESTDIR)$(MANDIR)/man1/
	# An alias page is a symbolic link to its group's page (so man -l works in the tree too);
	# installed, it stays one.
	$(Q)for f in man/man3/*.3; do \
		if [ -L "$$f" ]; then \
			ln -sf "$$(readlink "$$f")" "$(DESTDIR)$(MANDIR)/man3/$${f##*/}" || exit 1; \
		else \
			install -m 0644 "$$f" "$(DESTDIR)$(MANDIR)/man3/" || exit 1; \
		fi; \
	done
	install -m 0644 man/man7/*.7 $(DESTDIR)$(MANDIR)/man7/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/faultline $(DESTDIR)$(LIBDIR)/libfaultline.a \
		$(DESTDIR)$(LIBDIR)/libfaultline.so* $(DESTDIR)$(INCLUDEDIR)/faultline.h \
		$(DESTDIR)$(PKGCONFIGDIR)/faultline.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/faultline
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(wildcard man/man1/*.1)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man3/,$(notdir $(wildcard man/man3/*.3)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man7/,$(notdir $(wildcard man/man7/*.7)))

clean:
	rm -rf build build-asan build-tsan build-static build-vm build-nozstd build-noredis $(if $(filter-out build build-asan build-tsan,$(O)),$(O))

-include $(LIB_OBJS:.o=.d) $(LIB_PIC_OBJS:.o=.d) $(TOOL_OBJS:.o=.d) $(TEST_OBJS:.o=.d)
