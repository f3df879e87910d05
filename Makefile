# Entry points for people and CI; the build itself is CMake (CMakeLists.txt).
#   make          build build/duckstore (installs missing dependencies first)
#   make test     install, build (plain + sanitizers), run every test on a throwaway PostgreSQL
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
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
          LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
          UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: all deps build build-asan build-fuzz test test-plain test-asan soak fuzz bench demo format format-check lint clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	@cmake --build build -j $(JOBS) -- --no-print-directory

build-asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDUCKSTORE_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j $(JOBS) -- --no-print-directory

build-fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUCKSTORE_FUZZ=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS) -- --no-print-directory

test: build build-asan
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
soak: build
	@DUCKSTORE_SOAK=1 scripts/with-test-pg.sh bash -c "ctest --test-dir build -R '^fault/' --output-on-failure -j $(JOBS) && \
	  ctest --test-dir build -R '^sync/test_memory$$' --output-on-failure"

bench: build
	@bench/run.sh

demo: build
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
	rm -rf build build-asan build-fuzz
