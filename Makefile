# Entry points for people and CI; the build itself is CMake (CMakeLists.txt).
#   make          build build/duckstore (installs missing build dependencies first)
#   make install  install into $(DESTDIR)$(PREFIX) (PREFIX=/usr/local): bin/duckstore, lib/duckstore/libduckdb.so,
#                 man pages, the systemd unit, example config; make uninstall removes exactly that
#   make dist     dist/duckstore-VERSION-linux-x86_64.tar.gz: the installed tree, to unpack anywhere
#   make test     install test dependencies, build (plain + sanitizers), run every test on a throwaway PostgreSQL
#   make soak     the long variants of tests/fault and sync/test_memory (DUCKSTORE_SOAK=1): more kills,
#                 30 s of wrk, 500 syncs, 57 rows of 5 MB
#   make demo     sync sample data from a throwaway PostgreSQL and show the status
#   make bench    duckstore against the PostgreSQL COPY limit and the CSV pipeline (BENCH_TRACES=...)
#   make fuzz     build the libFuzzer targets (clang, build-fuzz/) and run each for FUZZ_SECONDS (60)
#   make format   clang-format the tree        make lint   cppcheck + clang-tidy
SHELL := /bin/bash
JOBS ?= $(shell nproc)
BUILD_TYPE ?= RelWithDebInfo
C_SOURCES = $(shell git ls-files -co --exclude-standard '*.c' '*.h' 2>/dev/null)
FUZZ_SECONDS ?= 60
# make test fuzzes each target for about 60 s in CI (CI=true), 10 s elsewhere,
# on a fixed seed and input count (scripts/fuzz.sh), so its result repeats.
TEST_FUZZ_SECONDS = $(if $(filter true,$(CI)),60,10)
# make install, uninstall and dist work in BUILD_DIR (build/ by default).
PREFIX ?= /usr/local
DESTDIR ?=
BUILD_DIR ?= build
DIST_DIR ?= dist
VERSION := $(shell sed -n 's/^\#define DS_VERSION "\(.*\)"/\1/p' src/common/version.h)
DIST_NAME = duckstore-$(VERSION)-linux-x86_64
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
          LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
          UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: all deps test-deps build build-asan build-fuzz install install-build uninstall dist test test-plain test-asan \
        soak fuzz bench demo format format-check lint clean

all: build

# A plain build needs only the build dependencies; the test ones (a
# PostgreSQL server, clang, chromium, npm, wrk) come with make test.
deps:
	@scripts/install-deps.sh build

# After deps, never beside it (make -j): one apt-get at a time.
test-deps: deps
	@scripts/install-deps.sh test

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	@cmake --build build -j $(JOBS) -- --no-print-directory

build-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDUCKSTORE_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j $(JOBS) -- --no-print-directory

build-fuzz: test-deps
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUCKSTORE_FUZZ=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS) -- --no-print-directory

# The binary alone (not the test programs) in BUILD_DIR, for the prefix of the install.
install-build: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target duckstore -- --no-print-directory

install: install-build
	@DESTDIR="$(if $(DESTDIR),$(abspath $(DESTDIR)))" cmake --install $(BUILD_DIR) --prefix $(PREFIX)

# Removes the files the last make install from BUILD_DIR put
# (BUILD_DIR/install_manifest.txt), and duckstore's own directories.
uninstall:
	@cmake -DMANIFEST=$(BUILD_DIR)/install_manifest.txt -DDESTDIR="$(if $(DESTDIR),$(abspath $(DESTDIR)))" -DPREFIX=$(PREFIX) \
	  -P packaging/uninstall.cmake

# The tree make install puts under /usr/local, stripped, in one directory
# that runs from wherever it is unpacked.
dist: install-build
	@rm -rf $(DIST_DIR)/stage
	@DESTDIR=$(abspath $(DIST_DIR))/stage cmake --install $(BUILD_DIR) --prefix /usr/local --strip >/dev/null
	@mv $(DIST_DIR)/stage/usr/local $(DIST_DIR)/stage/$(DIST_NAME)
	@tar -C $(DIST_DIR)/stage --owner=0 --group=0 --numeric-owner --sort=name -czf $(DIST_DIR)/$(DIST_NAME).tar.gz \
	  $(DIST_NAME)
	@rm -rf $(DIST_DIR)/stage
	@echo "$(DIST_DIR)/$(DIST_NAME).tar.gz"

test: test-deps build build-asan
	@scripts/with-test-pg.sh $(MAKE) --no-print-directory test-plain test-asan
	@FUZZ_SEED=1 $(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)

# These two expect DUCKSTORE_TEST_PG (set by scripts/with-test-pg.sh).
test-plain:
	@echo "== tests (RelWithDebInfo build) =="
	@ctest --test-dir build --output-on-failure -j $(JOBS)

test-asan:
	@echo "== tests (ASan + UBSan + LeakSanitizer build) =="
	@$(SAN_ENV) ctest --test-dir build-asan --output-on-failure -j $(JOBS)

fuzz: build-fuzz
	@echo "== fuzzing, $(FUZZ_SECONDS) s per target (ASan + UBSan + LeakSanitizer) =="
	@scripts/fuzz.sh $(FUZZ_SECONDS)

# The programs of tests/fault that `make test` runs, in their long variants
# (more kills, longer load, more syncs; docs/reliability.md): ~10 minutes;
# then sync/test_memory at the sizes of the report, alone (it measures peaks).
soak: test-deps build
	@DUCKSTORE_SOAK=1 scripts/with-test-pg.sh bash -c "ctest --test-dir build -R '^fault/' --output-on-failure -j $(JOBS) && \
	  ctest --test-dir build -R '^sync/test_memory$$' --output-on-failure"

bench: test-deps build
	@bench/run.sh

demo: test-deps build
	@scripts/demo.sh

format:
	@clang-format -i $(C_SOURCES)

format-check:
	@clang-format --dry-run --Werror $(C_SOURCES)

lint: build
	@cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --inline-suppr --suppress=unknownMacro --std=c11 -I src $(filter %.c,$(C_SOURCES))
	@clang-tidy --quiet -p build $(filter src/%.c,$(C_SOURCES)) 2>/dev/null

clean:
	rm -rf build build-asan build-fuzz dist
