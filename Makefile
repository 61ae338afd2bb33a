# moonlet — build, test, bench, run.
# `make` builds build/moonlet, build/libmoonlet.a and build/libmoonlet.so (the embedding
# library, README "Embedding"); `make run` / `make test` install their Debian dependencies
# first (scripts/deps.sh, apt-get, only what is missing).

CC      ?= cc
BUILD   ?= build
SAN     ?=
OPT     ?= -O2
PKGS    := luajit libuv openssl sqlite3 libpq hiredis
PKGCFG   = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKGLIBS  = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LLHTTP_SRC := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp
CJSON_LIB  := $(firstword $(wildcard /usr/lib/*/liblua5.1-cjson.a) /usr/lib/x86_64-linux-gnu/liblua5.1-cjson.a)
# Debian's Lua 5.1 C modules (busted's lfs, term, system) for `moonlet test`.
LUA_CDIR   := /usr/lib/$(shell $(CC) -print-multiarch 2>/dev/null)/lua/5.1

# LUA_INCDIR (optional; the rockspec passes luarocks' own) must hold LuaJIT's headers: plain
# Lua 5.1's lua.h builds a binary that does not match the LuaJIT it links.
LUA_INCDIR ?=
ifneq ($(LUA_INCDIR),)
ifeq ($(wildcard $(LUA_INCDIR)/luajit.h),)
$(error LUA_INCDIR=$(LUA_INCDIR) has no luajit.h: moonlet builds against LuaJIT; pass LUA_INCDIR=/usr/include/luajit-2.1)
endif
endif

# -fPIC: the same objects make the static archive and the shared library;
# -fno-semantic-interposition keeps calls inside the library as direct (and inlinable) as
# in the binary.
CFLAGS  += -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(OPT) -g -Wall -Wextra -Werror \
           -Wno-missing-field-initializers -fPIC -fno-semantic-interposition $(SAN) $(LUA_INCDIR:%=-I%) $(PKGCFG) -I$(LLHTTP_INC) $(CORE_DIRS:%=-iquote %) -iquote $(BUILD)
LDFLAGS += $(SAN) -rdynamic
LDLIBS  += $(CJSON_LIB) $(PKGLIBS) -lwslay -lz -lm -lpthread -ldl

# core/: the host and the CLI; base/ (buffers, lists, errors, logging), http/ (the server and
# its HTTP/1.1 engine), bridge/ (Lua states, apps, requests, responses), sched/ (the
# scheduler and the primitives on it), clients/ (HTTP client, databases), prod/ (production:
# worker processes, metrics).
CORE_DIRS := core core/base core/http core/bridge core/sched core/clients core/prod
CORE_HDR := $(wildcard $(CORE_DIRS:%=%/*.h))
CORE_SRC := $(filter-out core/main.c,$(wildcard $(CORE_DIRS:%=%/*.c)))
CORE_OBJ := $(CORE_SRC:core/%.c=$(BUILD)/core/%.o) $(BUILD)/core/lua_embed.o
LUA_SRC  := $(sort $(wildcard lua/moonlet/*.lua lua/moonlet/testing/*.lua lua/moonlet/cli/*.lua))
# LuaLS definition files (---@meta) for what only C defines: installed, not compiled in.
LUA_META := $(sort $(wildcard lua/moonlet/meta/*.lua))
# The project `moonlet new` writes out: real files, compiled in as one data module.
NEW_SRC  := $(sort $(wildcard tools/new/*))
# The shared library: soname libmoonlet.so.$(SOMAJOR); it exports the API of moonlet.h only
# (core/libmoonlet.map). It links lua-cjson's shared library, not its static archive (not
# position-independent): that one needs no Lua core of its own and binds to LuaJIT's.
SOMAJOR  := 0
VERSION  := $(shell sed -n 's/^\#define MOONLET_VERSION "\(.*\)"/\1/p' core/moonlet.h)
SO_LIBS  := -llua5.1-cjson $(PKGLIBS) -lwslay -lz -lm -lpthread -ldl
UNIT_SRC := $(wildcard tests/unit/*_test.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all bin deps run test test-asan test-tsan fuzz fuzz-build bench stress install install-rock \
        clean
# make install PREFIX=/usr/local [DESTDIR=/tmp/stage]; the rockspec sets BINDIR and LUADIR to
# its tree's (TREE/bin, TREE/share/lua/5.1).
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LUADIR  ?= $(PREFIX)/share/lua/5.1
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
PCDIR   ?= $(LIBDIR)/pkgconfig
all: $(BUILD)/moonlet $(BUILD)/libmoonlet.a $(BUILD)/libmoonlet.so $(UNIT_BIN) \
     $(BUILD)/tests/embed_example $(BUILD)/tests/embed_hosts $(BUILD)/tests/embed_host \
     $(BUILD)/bench/post_bench

# What the rockspec builds: the binary and the library, no tests.
bin: $(BUILD)/moonlet $(BUILD)/libmoonlet.a

deps:
	@scripts/deps.sh test

$(BUILD)/llhttp/%.o: $(LLHTTP_SRC)/%.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -fPIC -Wno-unused-parameter $(SAN) -I$(LLHTTP_INC) -c $< -o $@

$(BUILD)/libllhttp.a: $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o $(BUILD)/llhttp/llhttp.o
	ar rcs $@ $^

# embedgen compiles the Lua side to bytecode with the LuaJIT the binary links.
$(BUILD)/embedgen: tools/embedgen.c
	@mkdir -p $(dir $@)
	$(CC) -O1 -Wall -Wextra -Werror $(LUA_INCDIR:%=-I%) $(shell pkg-config --cflags luajit 2>/dev/null) \
	  -o $@ $< $(shell pkg-config --libs luajit 2>/dev/null)

# The Lua side is compiled into the binary: lua/moonlet/x.lua becomes module "moonlet.x".
# lua/moonlet/testing/x.lua (the spec helpers, the test client) is "moonlet.testing.x": a
# user's specs find them in the binary, from any directory.
# lua/moonlet/cli/x.lua (the commands new and routes) is "moonlet.cli.x"; tools/new's files
# are the table module "moonlet.cli.template" ({ ["app.lua"] = "...", ... }).
# The folders are prerequisites too: a file removed from one must leave the binary.
$(BUILD)/core/lua_embed.c: $(BUILD)/embedgen $(LUA_SRC) $(NEW_SRC) lua/moonlet lua/moonlet/testing \
                           lua/moonlet/cli tools/new
	@mkdir -p $(dir $@)
	$(BUILD)/embedgen $@ $(LUA_SRC) --data moonlet.cli.template tools/new $(NEW_SRC)

$(BUILD)/core/%.o: core/%.c $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/core/main.o: CFLAGS += -DML_LUA_CDIR='"$(LUA_CDIR)"'

$(BUILD)/core/lua_embed.o: $(BUILD)/core/lua_embed.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libmoonlet.a: $(CORE_OBJ) $(BUILD)/libllhttp.a
	rm -f $@
	ar rcs $@ $(CORE_OBJ) $(BUILD)/llhttp/*.o

$(BUILD)/libmoonlet.so.$(VERSION): $(CORE_OBJ) $(BUILD)/libllhttp.a core/libmoonlet.map
	$(CC) -shared $(SAN) -Wl,-soname,libmoonlet.so.$(SOMAJOR) -Wl,--version-script=core/libmoonlet.map \
	  -Wl,--no-undefined -o $@ $(CORE_OBJ) $(BUILD)/llhttp/*.o $(SO_LIBS)

$(BUILD)/libmoonlet.so: $(BUILD)/libmoonlet.so.$(VERSION)
	ln -sf libmoonlet.so.$(VERSION) $(BUILD)/libmoonlet.so.$(SOMAJOR)
	ln -sf libmoonlet.so.$(VERSION) $@

$(BUILD)/moonlet: $(BUILD)/core/main.o $(BUILD)/libmoonlet.a
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/libmoonlet.a $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libmoonlet.a tests/unit/unit.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(BUILD)/libmoonlet.a $(LDLIBS)

# The embedding programs the suite drives (coroutine_spec.lua, embed_spec.lua,
# embedding_spec.lua).
$(BUILD)/tests/embed_%: tests/embed_%.c $(BUILD)/libmoonlet.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmoonlet.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libmoonlet.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libmoonlet.a $(LDLIBS)

run:
	@scripts/deps.sh build
	$(MAKE) all
	$(BUILD)/moonlet serve apps/hello --host 127.0.0.1 --port 8000

test: deps
	$(MAKE) all fuzz-build
	BUILD=$(BUILD) scripts/test.sh

# The same suite under AddressSanitizer + UBSan, in its own build directory.
test-asan: deps
	$(MAKE) all BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -DML_SANITIZE"
	rm -rf $(BUILD)-asan-logs && mkdir -p $(BUILD)-asan-logs
	BUILD=build-asan SAN_LOGS=$(CURDIR)/$(BUILD)-asan-logs \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:log_path=$(CURDIR)/$(BUILD)-asan-logs/asan \
	  UBSAN_OPTIONS=print_stacktrace=1:log_path=$(CURDIR)/$(BUILD)-asan-logs/ubsan \
	  scripts/test.sh

# ThreadSanitizer, in its own build directory: the specs that run threads side by side
# (several hosts in one process, the pool and the executor, shared dictionaries, stops from
# other threads; TSAN_SPECS), or the whole suite with TSAN_SPECS=tests/spec. A report is a failure.
TSAN_SPECS ?= tests/spec/embed_spec.lua tests/spec/coroutine_spec.lua tests/spec/pool_spec.lua \
              tests/spec/executor_spec.lua tests/spec/pool_handoff_spec.lua
test-tsan: deps
	$(MAKE) all BUILD=build-tsan OPT=-O1 \
	  SAN="-fsanitize=thread -fno-omit-frame-pointer -DML_SANITIZE"
	rm -rf $(BUILD)-tsan-logs && mkdir -p $(BUILD)-tsan-logs
	BUILD=build-tsan SAN_LOGS=$(CURDIR)/$(BUILD)-tsan-logs SPECS="$(TSAN_SPECS)" \
	  TSAN_OPTIONS=halt_on_error=0:log_path=$(CURDIR)/$(BUILD)-tsan-logs/tsan \
	  scripts/test.sh

# libFuzzer targets (fuzz/*.c, README "Fuzzing"), built with clang into $(BUILD)/fuzz: the
# library is compiled again with coverage for the fuzzer, ASan and UBSan. `make fuzz` runs
# each target for FUZZ_SECONDS over its corpus (fuzz/corpus/NAME, where what it finds
# stays), then prints the request path's coverage; `make test` replays every corpus.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := $(BUILD)/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer -DML_SANITIZE
FUZZ_NAMES   := $(sort $(basename $(notdir $(wildcard fuzz/*.c))))
FUZZ_BIN     := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/%)

$(FUZZ_BUILD)/lib/libmoonlet.a: $(CORE_SRC) $(CORE_HDR) $(LUA_SRC)
	$(MAKE) $@ BUILD=$(FUZZ_BUILD)/lib CC=$(FUZZ_CC) OPT=-O1 \
	  SAN="-fsanitize=fuzzer-no-link $(FUZZ_SAN)"

$(FUZZ_BUILD)/%: fuzz/%.c $(wildcard fuzz/*.h) $(FUZZ_BUILD)/lib/libmoonlet.a
	$(FUZZ_CC) $(filter-out -Werror,$(CFLAGS)) -Werror -O1 -Ifuzz \
	  -fsanitize=fuzzer $(FUZZ_SAN) -rdynamic -o $@ $< $(FUZZ_BUILD)/lib/libmoonlet.a $(LDLIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: fuzz-build
	BUILD=$(BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh run $(FUZZ_NAMES)

bench:
	@scripts/deps.sh bench
	$(MAKE) all
	bench/run.sh

# The stress suite (README "Reliability"): bounded, loopback only, not part of `make test`;
# STRESS_QUICK=1 for a short pass, STRESS_ONLY=soak,kill9 for some scenarios.
stress:
	@scripts/deps.sh stress
	$(MAKE) all
	stress/run.sh

# install-rock (what `luarocks make` installs): the binary, and the Lua side as files --
# lua/moonlet/*.lua, testing/ and the LuaLS definitions in meta/ -- for editors, LuaLS and
# readers (the binary runs its embedded copies of the same files: README "Install").
# install adds the embedding library (static and shared), its header and moonlet.pc.
install-rock: $(BUILD)/moonlet
	install -D -m 755 $(BUILD)/moonlet $(DESTDIR)$(BINDIR)/moonlet
	for f in $(LUA_SRC) $(LUA_META); do \
	  install -D -m 644 $$f $(DESTDIR)$(LUADIR)/$${f#lua/} || exit 1; \
	done

install: install-rock $(BUILD)/libmoonlet.a $(BUILD)/libmoonlet.so
	install -D -m 644 $(BUILD)/libmoonlet.a $(DESTDIR)$(LIBDIR)/libmoonlet.a
	install -D -m 755 $(BUILD)/libmoonlet.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmoonlet.so.$(VERSION)
	ln -sf libmoonlet.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmoonlet.so.$(SOMAJOR)
	ln -sf libmoonlet.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libmoonlet.so
	install -D -m 644 core/moonlet.h $(DESTDIR)$(INCDIR)/moonlet.h
	mkdir -p $(DESTDIR)$(PCDIR)
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|' \
	    -e 's|@INCDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCDIR))|; s|@VERSION@|$(VERSION)|' \
	    core/moonlet.pc.in >$(DESTDIR)$(PCDIR)/moonlet.pc

clean:
	rm -rf build build-asan build-tsan
