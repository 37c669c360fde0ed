# latentsae: make (build), make test (every test), make demo (train and show)
#   NO_OMP=1     build without OpenMP
#   ARCH=...     target flags (default -march=native; ARCH= for a portable build)
#   PYTHON=...   a python3 with numpy and torch (default: the first that has them)

CC ?= cc
CXX ?= c++
OPT ?= -O2
ARCH ?= -march=native
WARN = -Wall -Wextra -pedantic -Werror
CSTD = -std=c99
CXXSTD = -std=c++11
BUILD = build

ifeq ($(NO_OMP),1)
OMP :=
else
OMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)
endif
PYTHON ?= $(shell for p in python3 /usr/bin/python3; do $$p -c 'import numpy, torch' 2>/dev/null && echo $$p && break; done)

CFLAGS_ALL = $(CSTD) $(OPT) $(ARCH) $(OMP) $(WARN) -g
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

HDR = latentsae.h
TESTS = test_core test_gradcheck test_planted
TEST_DEPS = $(HDR) tests/test_util.h

.PHONY: all test test-c test-compile test-parity test-noomp test-cxx test-sanitize demo clean info

all: info $(addprefix $(BUILD)/,$(TESTS)) $(BUILD)/parity_driver $(BUILD)/quickstart

info:
	@if [ -n "$(OMP)" ]; then echo "✓ OpenMP found ($(CC) -fopenmp)"; else echo "✗ OpenMP off: building single-threaded"; fi
	@if [ -n "$(PYTHON)" ]; then echo "✓ python with numpy and torch: $(PYTHON)"; else echo "✗ no python3 with numpy and torch: the PyTorch parity test cannot run (apt install python3-torch python3-numpy)"; fi

$(BUILD) $(BUILD)/noomp $(BUILD)/asan $(BUILD)/cxx $(BUILD)/compile:
	@mkdir -p $@

$(BUILD)/%: tests/%.c $(TEST_DEPS) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< -lm

$(BUILD)/parity_driver: tests/parity_driver.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< -lm

$(BUILD)/quickstart: examples/quickstart.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< -lm

# the same tests without OpenMP, as C++, and under ASan + UBSan
$(BUILD)/noomp/%: tests/%.c $(TEST_DEPS) | $(BUILD)/noomp
	$(CC) $(CSTD) $(OPT) $(ARCH) $(WARN) -g -o $@ $< -lm
$(BUILD)/cxx/%: tests/%.c $(TEST_DEPS) | $(BUILD)/cxx
	$(CXX) -x c++ $(CXXSTD) $(OPT) $(ARCH) $(OMP) $(WARN) -g -o $@ $< -lm
$(BUILD)/asan/%: tests/%.c $(TEST_DEPS) | $(BUILD)/asan
	$(CC) $(CSTD) -O1 $(ARCH) $(OMP) $(WARN) -g $(SANFLAGS) -o $@ $< -lm

test: info test-compile test-c test-noomp test-cxx test-sanitize test-parity
	@echo "all tests passed"

test-c: $(addprefix $(BUILD)/,$(TESTS))
	@for t in $(TESTS); do echo "== $$t"; $(BUILD)/$$t || exit 1; done

test-noomp: $(addprefix $(BUILD)/noomp/,$(TESTS))
	@for t in $(TESTS); do echo "== noomp/$$t"; $(BUILD)/noomp/$$t > /dev/null || exit 1; done; echo "== without OpenMP: ok"

test-cxx: $(addprefix $(BUILD)/cxx/,$(TESTS))
	@for t in $(TESTS); do echo "== cxx/$$t"; $(BUILD)/cxx/$$t > /dev/null || exit 1; done; echo "== as C++: ok"

test-sanitize: $(addprefix $(BUILD)/asan/,$(TESTS))
	@for t in $(TESTS); do echo "== asan/$$t"; ASAN_OPTIONS=detect_leaks=1 $(BUILD)/asan/$$t > /dev/null || exit 1; done; echo "== AddressSanitizer + UBSan: ok"

test-parity: $(BUILD)/parity_driver
	@if [ -z "$(PYTHON)" ]; then echo "test-parity: needs a python3 with numpy and torch (apt install python3-torch python3-numpy, or PYTHON=...)"; exit 1; fi
	$(PYTHON) tests/test_parity_torch.py $(BUILD)/parity_driver

# the header alone, in every language mode, with and without OpenMP; included
# twice in one file; LATENTSAE_STATIC; allocator overrides
COMPILE_SRC = tests/compile/twice.c tests/compile/static.c tests/compile/allocator.c
test-compile: | $(BUILD)/compile
	@set -e; for src in $(COMPILE_SRC); do n=$$(basename $$src .c); \
	  for mode in "$(CC) -std=c99 $(OMP)" "$(CC) -std=c99" "$(CC) -std=c11 $(OMP)" "$(CXX) -x c++ -std=c++11 $(OMP)" "$(CXX) -x c++ -std=c++17"; do \
	    $$mode $(WARN) -o $(BUILD)/compile/$$n $$src -lm || { echo "FAILED: $$mode $$src"; exit 1; }; \
	    $(BUILD)/compile/$$n > /dev/null || { echo "FAILED running $$n built with: $$mode"; exit 1; }; \
	  done; done; \
	if command -v clang >/dev/null 2>&1; then for src in $(COMPILE_SRC); do n=$$(basename $$src .c); \
	  clang -std=c99 $(WARN) -o $(BUILD)/compile/$$n $$src -lm && $(BUILD)/compile/$$n > /dev/null || { echo "FAILED: clang $$src"; exit 1; }; done; fi; \
	echo "== header compiles as C99, C11, C++11, C++17, with and without OpenMP: ok"

demo: $(BUILD)/quickstart
	$(BUILD)/quickstart

clean:
	rm -rf $(BUILD)

# ---------------------------------------------------------------- speed
# (one appended section, so that it merges with the other branches' edits)

# the AVX2 and the native (AVX-512 where there is one) kernels must train to
# the same bits; needs an x86 CPU with AVX2 and FMA, skipped elsewhere
test: test-isa
test-isa: tests/isa_digest.c $(HDR) | $(BUILD)
	@if echo 'int main(void){return 0;}' | $(CC) -mavx2 -mfma -x c -o /dev/null - 2>/dev/null; then \
	  if grep -q ' avx2' /proc/cpuinfo 2>/dev/null && grep -q ' fma' /proc/cpuinfo 2>/dev/null; then \
	    $(CC) $(CSTD) $(OPT) $(ARCH) $(OMP) $(WARN) -o $(BUILD)/isa_native tests/isa_digest.c -lm && \
	    $(CC) $(CSTD) $(OPT) -mavx2 -mfma $(OMP) $(WARN) -o $(BUILD)/isa_avx2 tests/isa_digest.c -lm && \
	    a=$$($(BUILD)/isa_native) && b=$$($(BUILD)/isa_avx2) && \
	    if [ "$$a" = "$$b" ]; then echo "== native and AVX2 kernels train to the same bits ($$a): ok"; \
	    else echo "FAILED: native build $$a, AVX2 build $$b"; exit 1; fi; \
	  else echo "== test-isa skipped: this CPU lacks AVX2/FMA"; fi; \
	else echo "== test-isa skipped: $(CC) has no -mavx2 -mfma"; fi

# make bench: speed against PyTorch and OpenBLAS (bench/run.py builds its
# own binaries; BENCH_ARGS="--quick --rounds 1" for a short run). Timings
# live in bench/, never in tests.
bench:
	@if [ -z "$(PYTHON)" ]; then echo "bench: needs a python3 with numpy and torch (PYTHON=...)"; exit 1; fi
	CC="$(CC)" $(PYTHON) bench/run.py $(BENCH_ARGS)

.PHONY: test-isa bench
