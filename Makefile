# triekv - one Makefile for the whole tree.
#
#   make            build everything: bin/ (programs) and lib/ (libtriekv.a, the embeddable engine)
#   make run        install missing packages, build, start a main node with config.json and ./data
#   make cluster    the same, a main (3030) and a replica (3031) from deploy/main.json and replica.json
#   make sharded    two such shards behind triekv-proxy on 3000 (deploy/proxy.json)
#   make test       install missing packages, build, run every test suite
#   make asan       the same tests against an ASan+UBSan build (build-asan/)
#   make bench      the benchmarks; results go to docs/BENCHMARKS.md
#   make deps       install the Debian packages the build needs (deploy/deps.sh)
#
# Variants build into separate trees: VARIANT=release (build/, bin/, lib/), asan (build-asan/).

VARIANT ?= release
CC      ?= cc
PYTHON  ?= /usr/bin/python3

ifeq ($(VARIANT),release)
BUILD   := build
BIN     := bin
LIBDIR  := lib
OPT     := -O2
else ifeq ($(VARIANT),asan)
BUILD   := build-asan
BIN     := build-asan/bin
LIBDIR  := build-asan/lib
OPT     := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -DKV_DEBUG
SANLD   := -fsanitize=address,undefined
else
$(error VARIANT must be release or asan)
endif

PKGS     := libh2o-evloop libcurl liburing jansson libisal
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null | sed 's/-I/-isystem /g')

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla \
           -Wimplicit-fallthrough
CFLAGS  += -std=c11 -D_GNU_SOURCE -DH2O_USE_LIBUV=0 -I. -g $(OPT) $(WARN) $(PKG_CFLAGS) -MMD -MP
LDFLAGS += $(SANLD) -pthread

LIBS_ENGINE := -luring -lisal -lpthread

# common/kv_http.c is the HTTP server plumbing of the node and the proxy: it needs h2o and libcurl,
# so it stays out of libtriekv.a, which embeds with liburing and ISA-L alone.
HTTP_SRC   := common/kv_http.c
HTTP_OBJ   := $(BUILD)/common/kv_http.o
COMMON_SRC := $(filter-out $(HTTP_SRC),$(wildcard common/*.c))
CACHE_SRC  := $(wildcard cache/*.c)
TRIE_SRC   := $(wildcard trie/*.c)
ENGINE_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(COMMON_SRC) $(CACHE_SRC) $(TRIE_SRC))
LIBTRIEKV  := $(LIBDIR)/libtriekv.a

UNIT_SRC   := $(wildcard tests/unit/*/test_*.c)
UNIT_BIN   := $(patsubst %.c,$(BUILD)/%,$(UNIT_SRC))
TESTLIB_OBJ := $(BUILD)/tests/unit/harness.o

NODE_SRC   := $(wildcard node/*.c) $(wildcard replication/*.c)
NODE_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(NODE_SRC))
LIBS_NODE  := -lh2o-evloop -ljansson -lcurl $(LIBS_ENGINE)

CLI_SRC    := $(wildcard cli/*.c)
CLI_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(CLI_SRC))
PROXY_SRC  := $(wildcard proxy/*.c)
PROXY_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(PROXY_SRC))

PROGRAMS   := $(BIN)/triekv-server $(if $(CLI_SRC),$(BIN)/triekv-cli) $(if $(PROXY_SRC),$(BIN)/triekv-proxy)

BENCH_BIN  := $(BUILD)/bench/engine_bench $(BUILD)/bench/h2o_ceiling

.PHONY: all run cluster sharded test asan bench deps deps-test deps-bench clean format check-format
.DEFAULT_GOAL := all
.SECONDARY:

all: $(LIBTRIEKV) $(PROGRAMS) $(UNIT_BIN) $(BENCH_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(LIBTRIEKV): $(ENGINE_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@
	@echo "  AR      $@"
	@ar rcs $@ $^

$(BUILD)/tests/unit/%: $(BUILD)/tests/unit/%.o $(TESTLIB_OBJ) $(LIBTRIEKV)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $< $(TESTLIB_OBJ) $(LIBTRIEKV) $(LIBS_ENGINE)

$(BIN)/triekv-server: $(NODE_OBJ) $(HTTP_OBJ) $(LIBTRIEKV)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $(NODE_OBJ) $(HTTP_OBJ) $(LIBTRIEKV) $(LIBS_NODE)

$(BIN)/triekv-cli: $(CLI_OBJ) $(LIBTRIEKV)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIBTRIEKV) -lcurl -ljansson -lisal -lpthread -lm

$(BIN)/triekv-proxy: $(PROXY_OBJ) $(HTTP_OBJ) $(LIBTRIEKV)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $(PROXY_OBJ) $(HTTP_OBJ) $(LIBTRIEKV) -lh2o-evloop -lcurl -ljansson -lisal -lpthread

$(BUILD)/bench/engine_bench: $(BUILD)/bench/engine_bench.o $(LIBTRIEKV)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $< $(LIBTRIEKV) $(LIBS_ENGINE)

$(BUILD)/bench/h2o_ceiling: $(BUILD)/bench/h2o_ceiling.o
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $< -lh2o-evloop

# Starts a main node with config.json and ./data in the foreground (Ctrl-C stops it cleanly).
run: deps
	$(MAKE) all
	$(BIN)/triekv-server --config config.json

# A main (3030) and a replica (3031, replication port 3040) from deploy/*.json, in the foreground.
cluster: deps
	$(MAKE) all
	sh deploy/cluster.sh

# Two shards (main + replica each: 3030/3031 and 3032/3033) behind triekv-proxy on 3000.
sharded: deps
	$(MAKE) all
	sh deploy/cluster.sh sharded

deps:
	@sh deploy/deps.sh build
deps-test:
	@sh deploy/deps.sh test
deps-bench:
	@sh deploy/deps.sh bench

# The test runner sums every suite into one closing line "N passed, N failed" and exits non-zero
# on any failure. TESTS=unit|blackbox|... picks suites (see tests/run.py --help).
test: deps-test
	$(MAKE) all
	$(PYTHON) tests/run.py --build $(BUILD) --bin $(BIN) $(if $(TESTS),--suites $(TESTS))

asan: deps-test
	$(MAKE) VARIANT=asan all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	    $(PYTHON) tests/run.py --build build-asan --bin build-asan/bin --variant asan $(if $(TESTS),--suites $(TESTS))

bench: deps-bench
	$(MAKE) all
	$(PYTHON) bench/run.py

clean:
	rm -rf build build-asan bin lib

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
check-format:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
