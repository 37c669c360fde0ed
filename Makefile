# latentsae: make (build), make test (every test), make demo (train and show)
#   NO_OMP=1     build without OpenMP
#   CHROMIUM=... the browser test-report opens the HTML report in (default: chromium)
#   ARCH=...     target flags (default -march=native; ARCH= for a portable build)
#   PYTHON=...   a python3 with numpy and torch (default: the first that has them)
#   SYSPY=...    the python3 whose torch and numpy the interop venv sees (/usr/bin/python3)

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
# the CLI tests only need numpy
PYNUMPY ?= $(shell for p in python3 /usr/bin/python3; do $$p -c 'import numpy' 2>/dev/null && echo $$p && break; done)

CFLAGS_ALL = $(CSTD) $(OPT) $(ARCH) $(OMP) $(WARN) -g
SANFLAGS = -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all

HDR = latentsae.h
# the command-line tool: one translation unit, main.c #includes the rest (see its top comment)
LSAE_MAIN = tools/lsae/main.c
LSAE_SRC = $(wildcard tools/lsae/*.c tools/lsae/*.h)
TESTS = test_core test_gradcheck test_planted test_files test_badinput test_batchtopk test_prepass test_comm test_deccos
SYSPY ?= /usr/bin/python3
VENV = $(BUILD)/venv
TEST_DEPS = $(HDR) tests/test_util.h tests/test_internals.h tools/lsae/deccos.c

# make test: every check below, in this order (each target's section says
# what it checks; every one can also be run alone)
TEST_TARGETS = test-compile test-c test-noomp test-cxx test-sanitize test-strict test-parity test-interop test-cli test-eval test-probe test-report test-compare \
               test-sweep test-cuda-build test-mpi test-isa test-oom test-reliability test-valgrind test-fuzz test-windows test-wasm test-bigendian test-arm64

.PHONY: mpi-build bench-mpi cuda-dist-build all test test-all info demo demo-matryoshka clean bench bench-run bench-loader bench-sweep fuzz cuda-build cuda-tests wasm-page arm64-run $(TEST_TARGETS) \
        test-sanitize-more test-sanitizer-live test-fuzz-replay test-fuzz-smoke info-cuda info-fuzz

all: info $(addprefix $(BUILD)/,$(TESTS)) $(BUILD)/parity_driver $(BUILD)/quickstart $(BUILD)/lsae $(BUILD)/encode mpi-build

info: info-cuda info-fuzz
	@if [ -n "$(OMP)" ]; then echo "✓ OpenMP found ($(CC) -fopenmp)"; else echo "✗ OpenMP off: building single-threaded"; fi
	@if [ -n "$(PYTHON)" ]; then echo "✓ python with numpy and torch: $(PYTHON)"; else echo "✗ no python3 with numpy and torch: the PyTorch parity test cannot run (apt install python3-torch python3-numpy)"; fi

$(BUILD) $(BUILD)/noomp $(BUILD)/asan $(BUILD)/cxx $(BUILD)/compile $(BUILD)/strict:
	@mkdir -p $@

$(BUILD)/%: tests/%.c $(TEST_DEPS) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< -lm

$(BUILD)/parity_driver: tests/parity_driver.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< -lm

$(BUILD)/quickstart: examples/quickstart.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< -lm

# the command-line tool and the inference example (the data loader's
# prefetch thread needs -pthread)
$(BUILD)/lsae: $(LSAE_SRC) $(HDR) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -pthread -o $@ $(LSAE_MAIN) -lm
$(BUILD)/encode: examples/encode.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -pthread -o $@ $< -lm

# the same tests without OpenMP, as C++, and under ASan + UBSan
$(BUILD)/noomp/%: tests/%.c $(TEST_DEPS) | $(BUILD)/noomp
	$(CC) $(CSTD) $(OPT) $(ARCH) $(WARN) -g -o $@ $< -lm
$(BUILD)/cxx/%: tests/%.c $(TEST_DEPS) | $(BUILD)/cxx
	$(CXX) -x c++ $(CXXSTD) $(OPT) $(ARCH) $(OMP) $(WARN) -g -o $@ $< -lm
$(BUILD)/asan/%: tests/%.c $(TEST_DEPS) | $(BUILD)/asan
	$(CC) $(CSTD) -O1 $(ARCH) $(OMP) $(WARN) -g $(SANFLAGS) -o $@ $< -lm
$(BUILD)/asan/lsae: $(LSAE_SRC) $(HDR) | $(BUILD)/asan
	$(CC) $(CSTD) -O1 $(ARCH) $(OMP) $(WARN) -g $(SANFLAGS) -pthread -o $@ $(LSAE_MAIN) -lm
$(BUILD)/asan/encode: examples/encode.c $(HDR) | $(BUILD)/asan
	$(CC) $(CSTD) -O1 $(ARCH) $(OMP) $(WARN) -g $(SANFLAGS) -pthread -o $@ $< -lm

# On a fresh Debian machine make test first installs what the tests need
# (tests/install-deps.sh: apt-get, only for what is missing; the PyPI
# packages go into build/venv below), then runs them in a second make, which
# finds the compilers and Pythons that may have just arrived.
# The programs the tests run, built first with one job per core (make -k:
# one that fails to build here is built again by its test, which says
# why); then the tests run one at a time. Each section below adds its
# own programs to TEST_PROGRAMS.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
TEST_PROGRAMS = $(addprefix $(BUILD)/,$(TESTS)) $(addprefix $(BUILD)/noomp/,$(TESTS)) $(addprefix $(BUILD)/cxx/,$(TESTS)) \
                $(addprefix $(BUILD)/asan/,$(TESTS) lsae encode sanitizer_canary parity_driver files_driver strict_test_files isa_digest \
                quickstart reliability_driver test_oom) $(BUILD)/strict/test_files $(BUILD)/lsae $(BUILD)/encode $(BUILD)/parity_driver \
                $(BUILD)/files_driver $(BUILD)/reliability_driver $(BUILD)/valgrind/lsae
test:
	@sh tests/install-deps.sh
	@mkdir -p $(BUILD); echo "== building the test programs ($(JOBS) jobs)"; s=$$(date +%s); \
	$(MAKE) --no-print-directory -k -j$(JOBS) test-programs > $(BUILD)/test-programs.log 2>&1 || \
	  echo "(some did not build in parallel, see $(BUILD)/test-programs.log; their tests build them again)"; \
	echo "== test programs: $$(( $$(date +%s) - s )) s"
	@$(MAKE) --no-print-directory test-all
# one target at a time, each with its time (CI must stay under 25 minutes
# on 2 cores: these lines say where the time goes)
test-all: info
	@total=$$(date +%s); for t in $(TEST_TARGETS); do s=$$(date +%s); $(MAKE) --no-print-directory $$t || exit 1; \
	  echo "== $$t: $$(( $$(date +%s) - s )) s"; done; echo "all tests passed in $$(( $$(date +%s) - total )) s"

# the file tests as strict ISO C99 (no POSIX: no mmap, no threads, no
# directory listing): the portable fallbacks must give the same answers
$(BUILD)/strict/test_files: tests/test_files.c $(TEST_DEPS) | $(BUILD)/strict
	$(CC) $(CSTD) $(OPT) $(WARN) -g -DLSAE_TEST_NO_POSIX -o $@ $< -lm
test-strict: $(BUILD)/strict/test_files
	@echo "== strict/test_files"; $(BUILD)/strict/test_files > /dev/null && echo "== strict C99 without POSIX: ok"

# files written and read by the real Python tools: latent-sae (PyPI), numpy,
# torch (Debian's), safetensors, pyarrow; in a venv that sees Debian's torch
$(VENV)/.installed: tests/requirements-files.txt
	rm -rf $(VENV)
	$(SYSPY) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r tests/requirements-files.txt
	@touch $@
$(BUILD)/files_driver: tests/files_driver.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< -lm
test-interop: $(VENV)/.installed $(BUILD)/files_driver
	$(VENV)/bin/python tests/test_files_python.py $(BUILD)/files_driver

test-c: $(addprefix $(BUILD)/,$(TESTS))
	@for t in $(TESTS); do echo "== $$t"; $(BUILD)/$$t || exit 1; done

test-noomp: $(addprefix $(BUILD)/noomp/,$(TESTS))
	@for t in $(TESTS); do echo "== noomp/$$t"; $(BUILD)/noomp/$$t > /dev/null || exit 1; done; echo "== without OpenMP: ok"

test-cxx: $(addprefix $(BUILD)/cxx/,$(TESTS))
	@for t in $(TESTS); do echo "== cxx/$$t"; $(BUILD)/cxx/$$t > /dev/null || exit 1; done; echo "== as C++: ok"

# The sanitizers must be live, or every "no leak" below means nothing
# (LeakSanitizer cannot run under some debuggers and sandboxes, and then it
# says nothing): a throwaway program with a planted leak and one with a
# planted overflow must be reported, and the clean run must not be.
$(BUILD)/asan/sanitizer_canary: tests/sanitizer_canary.c | $(BUILD)/asan
	$(CC) $(CSTD) -O1 $(WARN) -g $(SANFLAGS) -o $@ $<
test-sanitizer-live: $(BUILD)/asan/sanitizer_canary
	@c=$(BUILD)/asan/sanitizer_canary; log=$(BUILD)/asan/canary.log; \
	$(ASAN_RUN) $$c clean > $$log 2>&1 || { cat $$log; echo "FAILED: the sanitizer canary fails with no fault planted"; exit 1; }; \
	for fault in "leak:LeakSanitizer: detected memory leaks" "overflow:AddressSanitizer: heap-buffer-overflow"; do \
	  mode=$${fault%%:*}; want=$${fault#*:}; \
	  if $(ASAN_RUN) $$c $$mode > $$log 2>&1 || ! grep -q "$$want" $$log; then \
	    cat $$log; echo "FAILED: a planted $$mode was not reported ($$want): the sanitizer runs of make test would pass blind"; exit 1; fi; \
	done; echo "== sanitizers live: a planted leak and a planted overflow are reported"

# (test-sanitize-more, below, runs the rest of the suite under the sanitizers first)
test-sanitize: test-sanitizer-live test-sanitize-more $(addprefix $(BUILD)/asan/,$(TESTS)) $(BUILD)/asan/lsae $(BUILD)/asan/encode
	@for t in $(TESTS); do echo "== asan/$$t"; ASAN_OPTIONS=detect_leaks=1 $(BUILD)/asan/$$t > /dev/null || exit 1; done; echo "== AddressSanitizer + UBSan: ok"
	@echo "== asan: lsae and encode end to end"; ASAN_OPTIONS=detect_leaks=1 $(PYNUMPY) tests/test_cli.py $(BUILD)/asan > $(BUILD)/asan/test_cli.log 2>&1 || { cat $(BUILD)/asan/test_cli.log; echo "FAILED: tests/test_cli.py under AddressSanitizer + UBSan"; exit 1; }; tail -1 $(BUILD)/asan/test_cli.log

test-parity: $(BUILD)/parity_driver
	@if [ -z "$(PYTHON)" ]; then echo "test-parity: needs a python3 with numpy and torch (apt install python3-torch python3-numpy, or PYTHON=...)"; exit 1; fi
	$(PYTHON) tests/test_parity_torch.py $(BUILD)/parity_driver

# lsae and examples/encode.c end to end on a slice of examples/data
test-cli: $(BUILD)/lsae $(BUILD)/encode
	@if [ -z "$(PYNUMPY)" ]; then echo "test-cli: needs a python3 with numpy (apt install python3-numpy, or PYNUMPY=...)"; exit 1; fi
	$(PYNUMPY) tests/test_cli.py $(BUILD)

# lsae compare's matching against a numpy greedy matching of the decoders
test-compare: $(BUILD)/lsae
	@if [ -z "$(PYNUMPY)" ]; then echo "test-compare: needs a python3 with numpy (apt install python3-numpy, or PYNUMPY=...)"; exit 1; fi
	$(PYNUMPY) tests/test_compare.py $(BUILD)

# lsae eval's metrics against numpy on the bundled embeddings
test-eval: $(BUILD)/lsae
	@if [ -z "$(PYNUMPY)" ]; then echo "test-eval: needs a python3 with numpy (apt install python3-numpy, or PYNUMPY=...)"; exit 1; fi
	$(PYNUMPY) tests/test_eval.py $(BUILD)

# lsae eval --labels (k-sparse probing) against scikit-learn, on examples/data
# labelled by Debian section
test-probe: $(BUILD)/lsae $(VENV)/.installed
	$(VENV)/bin/python tests/test_probe.py $(BUILD)

# lsae report's page, opened in headless Chromium
CHROMIUM ?=
test-report: $(BUILD)/lsae
	@if [ -z "$(PYNUMPY)" ]; then echo "test-report: needs python3 (apt install python3-numpy)"; exit 1; fi
	CHROMIUM=$(CHROMIUM) $(PYNUMPY) tests/test_report.py $(BUILD)

# lsae sweep: each model of a grid trained in one pass equals lsae train's
# alone, bit for bit; resumes exactly; sweep.json and the page's plots
test-sweep: $(BUILD)/lsae
	@if [ -z "$(PYNUMPY)" ]; then echo "test-sweep: needs a python3 with numpy (apt install python3-numpy, or PYNUMPY=...)"; exit 1; fi
	$(PYNUMPY) tests/test_sweep.py $(BUILD)

# the header alone, in every language mode, with and without OpenMP; included
# twice in one file; LATENTSAE_STATIC; allocator overrides; each file format
# left out in turn (LSAE_NO_TORCH, _NPY, _SAELENS, _HF; tests/compile/formats.h)
COMPILE_SRC = tests/compile/twice.c tests/compile/static.c tests/compile/allocator.c tests/compile/nostdio.c \
              tests/compile/formats.c tests/compile/notorch.c tests/compile/nonpy.c tests/compile/nosaelens.c \
              tests/compile/nohf.c tests/compile/noformats.c
test-compile: | $(BUILD)/compile
	@set -e; for src in $(COMPILE_SRC); do n=$$(basename $$src .c); \
	  for mode in "$(CC) -std=c99 $(OMP)" "$(CC) -std=c99" "$(CC) -std=c11 $(OMP)" "$(CXX) -x c++ -std=c++11 $(OMP)" "$(CXX) -x c++ -std=c++17"; do \
	    $$mode $(WARN) -o $(BUILD)/compile/$$n $$src -lm || { echo "FAILED: $$mode $$src"; exit 1; }; \
	    $(BUILD)/compile/$$n > /dev/null || { echo "FAILED running $$n built with: $$mode"; exit 1; }; \
	  done; done; \
	if command -v clang >/dev/null 2>&1; then for src in $(COMPILE_SRC); do n=$$(basename $$src .c); \
	  clang -std=c99 $(WARN) -o $(BUILD)/compile/$$n $$src -lm && $(BUILD)/compile/$$n > /dev/null || { echo "FAILED: clang $$src"; exit 1; }; done; fi; \
	echo "== header compiles as C99, C11, C++11, C++17, with and without OpenMP: ok"

# the data-path benchmark (not a test): shuffled batches vs a sequential read
$(BUILD)/bench_loader: bench/bench_loader.c $(HDR) | $(BUILD)
	$(CC) -std=c99 $(OPT) $(ARCH) $(WARN) -o $@ $< -lm
bench-loader: $(BUILD)/bench_loader
	$(BUILD)/bench_loader
# lsae sweep of n models against n separate lsae train runs (not a test)
bench-sweep: $(BUILD)/lsae
	python3 bench/bench_sweep.py $(BUILD)

# The README's first command: train an SAE on the bundled Debian package
# descriptions (examples/data), print 8 latents drawn at random with the texts
# they fire on most, and write the HTML report. 500k samples, 160 s of CPU
# time (under 1.5 minutes on 2 free cores); k 8 and 1536 latents read as
# topics (k 16 or 3072 latents gave narrower, more mixed ones).
DEMO_DIR = $(BUILD)/demo
DEMO_DATA = examples/data/embeddings
DEMO_TEXTS = examples/data/texts.txt
demo: $(BUILD)/lsae $(BUILD)/encode $(BUILD)/quickstart
	@rm -rf $(DEMO_DIR)
	$(BUILD)/lsae train --data $(DEMO_DATA) --texts $(DEMO_TEXTS) --k 8 --expansion-factor 4 \
	    --batch-size 256 --epochs 25 --lr-warmup-steps 100 --dead-feature-threshold 40000 --out $(DEMO_DIR)
	@echo
	@echo "== 8 latents drawn at random (--seed 0), each with the 6 texts it is most active on:"
	@echo
	@$(BUILD)/lsae features $(DEMO_DIR) $(DEMO_DATA) --texts $(DEMO_TEXTS) --sample 8 --top 6
	@echo
	$(BUILD)/lsae report $(DEMO_DIR)
	@echo "open $(DEMO_DIR)/report.html in a browser: training curves and a searchable feature browser"

# A Matryoshka SAE on the same data, read as a taxonomy: the coarse latents
# of the smallest level, and under each the finer latents closest to it
DEMO_M_DIR = $(BUILD)/demo-matryoshka
demo-matryoshka: $(BUILD)/lsae
	@rm -rf $(DEMO_M_DIR)
	$(BUILD)/lsae train --data $(DEMO_DATA) --texts $(DEMO_TEXTS) --k 8 --expansion-factor 4 \
	    --sae-type matryoshka --matryoshka-sizes 64,384,1536 \
	    --batch-size 256 --epochs 25 --lr-warmup-steps 100 --dead-feature-threshold 40000 --out $(DEMO_M_DIR)
	@echo
	$(BUILD)/lsae levels $(DEMO_M_DIR) $(DEMO_DATA) --texts $(DEMO_TEXTS) --coarse 4 --children 3 --top 3

clean:
	rm -rf $(BUILD)

# ------------------------------------------------------------------- CUDA
#   NVCC=...     nvcc for latentsae_cuda.cu (default: on PATH, else /usr/local/cuda/bin/nvcc)
#   CUDA_ARCH=.. GPU target (default -arch=sm_90; tests/cuda/run.sh uses the GPU's own)
# latentsae_cuda.cu with nvcc, with and without cuBLAS, warnings as errors;
# the test and benchmark programs are C (LATENTSAE_CUDA) linked against it.
# Without a GPU, make test runs what can run: test_cuda --ci (the library
# must report the missing device and fall back to the CPU) and the CPU tests
# built with LATENTSAE_CUDA. tests/cuda/run.sh does the GPU checks.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_HOME ?= $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),/usr/local/cuda)
CUDA_ARCH ?= -arch=sm_90
NVCC_WARN = -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror
# LSAE_TESTING: the objects carry the kernel hooks tests/cuda calls (lsae__cuda_test_*)
NVCCFLAGS = -O3 -std=c++17 $(CUDA_ARCH) $(NVCC_WARN) $(if $(OMP),-Xcompiler $(OMP)) -DLSAE_TESTING
CUDA_LIBDIR = $(CUDA_HOME)/lib64
# latentsae_cuda.o is built with the host compiler's OpenMP when there is one
# (nvcc's host compiler is g++: its runtime is libgomp), so programs linked
# with it need libgomp even when they are compiled without -fopenmp
CUDA_LINK = -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcudart -lstdc++ $(if $(OMP),-lgomp) -pthread -lm
CUDA_CFLAGS = $(CSTD) $(OPT) $(ARCH) $(OMP) $(WARN) -g -DLATENTSAE_CUDA
CUDA_BUILD = $(BUILD)/cuda
CUDA_BINS = $(CUDA_BUILD)/test_cuda $(CUDA_BUILD)/bench_cuda $(CUDA_BUILD)/test_cuda_nocublas $(CUDA_BUILD)/lsae $(CUDA_BUILD)/test_cuda_dp \
            $(addprefix $(CUDA_BUILD)/cpu_,$(TESTS))

info-cuda:
	@if [ -n "$(NVCC)" ]; then echo "✓ nvcc found: $(NVCC) (latentsae_cuda.cu is built and checked by make test)"; else echo "✗ nvcc not found, skipping the CUDA build (latentsae_cuda.cu)"; fi

$(CUDA_BUILD):
	@mkdir -p $@

$(CUDA_BUILD)/latentsae_cuda.o: latentsae_cuda.cu $(HDR) | $(CUDA_BUILD)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@
$(CUDA_BUILD)/latentsae_cuda_nocublas.o: latentsae_cuda.cu $(HDR) | $(CUDA_BUILD)
	$(NVCC) $(NVCCFLAGS) -DLSAE_CUDA_NO_CUBLAS -c $< -o $@
$(CUDA_BUILD)/test_cuda: tests/cuda/test_cuda.c $(CUDA_BUILD)/latentsae_cuda.o $(TEST_DEPS)
	$(CC) $(CUDA_CFLAGS) -o $@ $< $(CUDA_BUILD)/latentsae_cuda.o -lcublas $(CUDA_LINK)
$(CUDA_BUILD)/test_cuda_nocublas: tests/cuda/test_cuda.c $(CUDA_BUILD)/latentsae_cuda_nocublas.o $(TEST_DEPS)
	$(CC) $(CUDA_CFLAGS) -DLSAE_CUDA_NO_CUBLAS -o $@ $< $(CUDA_BUILD)/latentsae_cuda_nocublas.o $(CUDA_LINK)
# data-parallel CUDA trainers as threads of one process (no MPI): tests/cuda/mpi.sh on a GPU, --cpu here
$(CUDA_BUILD)/test_cuda_dp: tests/cuda/test_cuda_dp.c $(CUDA_BUILD)/latentsae_cuda.o $(TEST_DEPS)
	$(CC) $(CUDA_CFLAGS) -isystem $(CUDA_HOME)/include -o $@ $< $(CUDA_BUILD)/latentsae_cuda.o -lcublas $(CUDA_LINK)
$(CUDA_BUILD)/bench_cuda: tests/cuda/bench_cuda.c $(CUDA_BUILD)/latentsae_cuda.o $(HDR)
	$(CC) $(CUDA_CFLAGS) -o $@ $< $(CUDA_BUILD)/latentsae_cuda.o -lcublas $(CUDA_LINK)
# the CPU tests through a LATENTSAE_CUDA build (run where no GPU answers: they then exercise the fallback)
# the command-line tool with the GPU backend: lsae train/encode --device cuda
$(CUDA_BUILD)/lsae: $(LSAE_SRC) $(CUDA_BUILD)/latentsae_cuda.o $(HDR)
	$(CC) $(CUDA_CFLAGS) -o $@ $(LSAE_MAIN) $(CUDA_BUILD)/latentsae_cuda.o -lcublas $(CUDA_LINK)
$(CUDA_BUILD)/cpu_%: tests/%.c $(CUDA_BUILD)/latentsae_cuda.o $(TEST_DEPS)
	$(CC) $(CUDA_CFLAGS) -o $@ $< $(CUDA_BUILD)/latentsae_cuda.o -lcublas $(CUDA_LINK)

# Data-parallel training on GPUs (README "Distributed training"): lsae with
# LSAE_MPI and the GPU backend, build/cuda-mpi/lsae (the sums through host
# memory, ranks may share a GPU), and with LSAE_NCCL too, build/cuda-nccl/lsae
# (the gradient summed GPU to GPU by NCCL, latentsae_nccl.h; a GPU per rank).
# Built when mpicc (and for the second nccl.h) is found; test-cuda-build
# compiles and links both, warnings as errors.
#   NCCL_H=...   nccl.h (default: the CUDA toolkit's, else /usr/include's)
NCCL_H ?= $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h))
NCCL_INC = -isystem $(CUDA_HOME)/include $(if $(NCCL_H),-isystem $(patsubst %/,%,$(dir $(NCCL_H))))
CUDA_MPI_BUILD = $(BUILD)/cuda-mpi
CUDA_NCCL_BUILD = $(BUILD)/cuda-nccl
$(CUDA_MPI_BUILD) $(CUDA_NCCL_BUILD):
	@mkdir -p $@
$(CUDA_MPI_BUILD)/lsae: $(LSAE_SRC) $(CUDA_BUILD)/latentsae_cuda.o $(HDR) latentsae_mpi.h | $(CUDA_MPI_BUILD)
	$(MPICC) $(CUDA_CFLAGS) -DLSAE_MPI -o $@ $(LSAE_MAIN) $(CUDA_BUILD)/latentsae_cuda.o -lcublas $(CUDA_LINK)
# tests/mpi_driver.c with the GPU backend: --device cuda puts every trainer on the GPU (tests/cuda/mpi.sh)
$(CUDA_MPI_BUILD)/mpi_driver: tests/mpi_driver.c $(CUDA_BUILD)/latentsae_cuda.o $(HDR) latentsae_mpi.h | $(CUDA_MPI_BUILD)
	$(MPICC) $(CUDA_CFLAGS) -o $@ $< $(CUDA_BUILD)/latentsae_cuda.o -lcublas $(CUDA_LINK)
$(CUDA_NCCL_BUILD)/lsae: $(LSAE_SRC) $(CUDA_BUILD)/latentsae_cuda.o $(HDR) latentsae_mpi.h latentsae_nccl.h | $(CUDA_NCCL_BUILD)
	$(MPICC) $(CUDA_CFLAGS) -DLSAE_MPI -DLSAE_NCCL $(NCCL_INC) -o $@ $(LSAE_MAIN) $(CUDA_BUILD)/latentsae_cuda.o -lnccl -lcublas $(CUDA_LINK)
# latentsae_nccl.h as C99 and as C++11, compiled and linked (run only as a check that it loads)
$(CUDA_NCCL_BUILD)/nccl_comm: tests/compile/nccl_comm.c $(CUDA_BUILD)/latentsae_cuda.o $(HDR) latentsae_mpi.h latentsae_nccl.h | $(CUDA_NCCL_BUILD)
	$(MPICC) $(CUDA_CFLAGS) $(NCCL_INC) -o $@ $< $(CUDA_BUILD)/latentsae_cuda.o -lnccl -lcublas $(CUDA_LINK)
$(CUDA_NCCL_BUILD)/nccl_comm_cxx: tests/compile/nccl_comm.c $(CUDA_BUILD)/latentsae_cuda.o $(HDR) latentsae_mpi.h latentsae_nccl.h | $(CUDA_NCCL_BUILD)
	OMPI_CC=$(CXX) $(MPICC) -x c++ $(CXXSTD) $(OPT) $(OMP) $(WARN) -DOMPI_SKIP_MPICXX -DLATENTSAE_CUDA $(NCCL_INC) -o $@ $< -x none \
	  $(CUDA_BUILD)/latentsae_cuda.o -lnccl -lcublas $(CUDA_LINK)
cuda-dist-build:
	@if [ -z "$(MPICC)" ]; then echo "✗ no mpicc: build/cuda-mpi/lsae and build/cuda-nccl/lsae (data-parallel training on GPUs) not built"; exit 0; fi; \
	set -e; $(MAKE) --no-print-directory $(CUDA_MPI_BUILD)/lsae $(CUDA_MPI_BUILD)/mpi_driver; \
	if [ -z "$(NCCL_H)" ]; then echo "✗ nccl.h not found (NCCL_H=...): build/cuda-nccl/lsae (LSAE_NCCL) not built"; \
	else $(MAKE) --no-print-directory $(CUDA_NCCL_BUILD)/lsae $(CUDA_NCCL_BUILD)/nccl_comm $(CUDA_NCCL_BUILD)/nccl_comm_cxx; fi

cuda-build: $(CUDA_BINS)
ifneq ($(NVCC),)
TEST_PROGRAMS += $(CUDA_BINS)
endif
cuda-tests: $(CUDA_BUILD)/test_cuda $(CUDA_BUILD)/bench_cuda

test-cuda-build:
	@if [ -z "$(NVCC)" ]; then echo "✗ nvcc not found: skipping the CUDA build check (latentsae_cuda.cu)"; exit 0; fi; \
	set -e; $(MAKE) --no-print-directory cuda-build; \
	echo "✓ latentsae_cuda.cu builds with and without cuBLAS ($(CUDA_ARCH), -Werror); test programs link"; \
	for mode in "$(CC) -std=c11 $(OMP)" "$(CXX) -x c++ -std=c++11 $(OMP)" "$(CXX) -x c++ -std=c++17"; do \
	  $$mode $(WARN) -DLATENTSAE_CUDA -o $(CUDA_BUILD)/twice tests/compile/twice.c -x none $(CUDA_BUILD)/latentsae_cuda.o \
	    -lcublas $(CUDA_LINK) || { echo "FAILED: $$mode -DLATENTSAE_CUDA tests/compile/twice.c"; exit 1; }; \
	  $(CUDA_BUILD)/twice > /dev/null || { echo "FAILED running twice built with: $$mode -DLATENTSAE_CUDA"; exit 1; }; \
	done; \
	echo "✓ the header with LATENTSAE_CUDA compiles as C99, C11, C++11 and C++17, included twice, and links"; \
	if [ -z "$(MPICC)" ]; then echo "✗ no mpicc: skipping build/cuda-mpi/lsae and build/cuda-nccl/lsae (data-parallel training on GPUs)"; \
	else \
	  $(MAKE) --no-print-directory $(CUDA_MPI_BUILD)/lsae $(CUDA_MPI_BUILD)/mpi_driver; \
	  echo "✓ build/cuda-mpi/lsae and mpi_driver (LSAE_MPI + LATENTSAE_CUDA: data-parallel on GPUs, sums through host memory) build and link, -Werror"; \
	  if [ -z "$(NCCL_H)" ]; then echo "✗ nccl.h not found (NCCL_H=...): skipping build/cuda-nccl/lsae (LSAE_NCCL)"; \
	  else \
	    $(MAKE) --no-print-directory $(CUDA_NCCL_BUILD)/lsae $(CUDA_NCCL_BUILD)/nccl_comm $(CUDA_NCCL_BUILD)/nccl_comm_cxx; \
	    $(CUDA_NCCL_BUILD)/nccl_comm > /dev/null && $(CUDA_NCCL_BUILD)/nccl_comm_cxx > /dev/null || { echo "FAILED: the nccl_comm programs do not load"; exit 1; }; \
	    echo "✓ build/cuda-nccl/lsae (LSAE_NCCL: the gradient summed by NCCL) builds and links, -Werror; latentsae_nccl.h compiles and links as C99 and C++11"; \
	  fi; \
	fi; \
	$(CUDA_BUILD)/test_cuda --ci; \
	$(CUDA_BUILD)/test_cuda_nocublas --ci > /dev/null; \
	if $(CUDA_BUILD)/test_cuda --has-gpu; then \
	  echo "== a GPU answers: the full GPU checks and timings are tests/cuda/run.sh"; \
	else \
	  for t in $(TESTS); do echo "== cuda build, no GPU: $$t"; $(CUDA_BUILD)/cpu_$$t > /dev/null; done; \
	  echo "✓ without a GPU, a LATENTSAE_CUDA build falls back to the CPU and passes the CPU tests"; \
	  $(CUDA_BUILD)/test_cuda_dp --cpu > $(CUDA_BUILD)/test_cuda_dp.log || { cat $(CUDA_BUILD)/test_cuda_dp.log; echo "FAILED: test_cuda_dp --cpu"; exit 1; }; \
	  echo "✓ $$(tail -1 $(CUDA_BUILD)/test_cuda_dp.log) (--cpu: the GPU data-parallel test's harness on CPU trainers)"; \
	  if $(CUDA_BUILD)/lsae train --device cuda --data examples/data/embeddings --max-samples 1024 --out $(CUDA_BUILD)/run \
	      2> $(CUDA_BUILD)/lsae.err > /dev/null; then echo "FAILED: lsae train --device cuda ran without a GPU"; exit 1; fi; \
	  grep -q "^lsae train: --device cuda: .*CUDA" $(CUDA_BUILD)/lsae.err || { echo "FAILED: lsae --device cuda without a GPU:"; cat $(CUDA_BUILD)/lsae.err; exit 1; }; \
	  echo "✓ lsae --device cuda without a GPU: $$(cat $(CUDA_BUILD)/lsae.err)"; \
	  if [ -n "$(MPICC)" ] && [ -n "$(MPIRUN)" ] && $(MPIRUN) --version 2>&1 | grep -q "Open MPI"; then \
	    if $(MPIRUN) $(MPIRUN_FLAGS) -np 2 $(CUDA_MPI_BUILD)/lsae train --device cuda --data examples/data/embeddings --max-samples 1024 \
	        --out $(CUDA_MPI_BUILD)/run 2> $(CUDA_MPI_BUILD)/lsae.err > /dev/null; then echo "FAILED: mpirun -np 2 build/cuda-mpi/lsae --device cuda ran without a GPU"; exit 1; fi; \
	    grep -q "^lsae train: --device cuda: .*CUDA" $(CUDA_MPI_BUILD)/lsae.err || { echo "FAILED: mpirun -np 2 build/cuda-mpi/lsae --device cuda without a GPU:"; cat $(CUDA_MPI_BUILD)/lsae.err; exit 1; }; \
	    echo "✓ mpirun -np 2 build/cuda-mpi/lsae --device cuda without a GPU: one line, the job ends"; \
	    OUT=$(CUDA_MPI_BUILD)/out tests/cuda/mpi.sh --cpu --no-build > $(CUDA_MPI_BUILD)/mpi_sh.log 2>&1 || { cat $(CUDA_MPI_BUILD)/mpi_sh.log; echo "FAILED: tests/cuda/mpi.sh --cpu"; exit 1; }; \
	    echo "✓ tests/cuda/mpi.sh --cpu (the GPU data-parallel check's script, on CPU ranks of the CUDA builds): $$(grep -c '^2 ranks\|^mpirun' $(CUDA_MPI_BUILD)/mpi_sh.log) comparisons passed"; \
	  fi; \
	fi

# ------------------------------------------------------------------- MPI
#   MPICC=...    the MPI compiler wrapper (default: mpicc on PATH); none: no build/mpi
# Data-parallel training (README "Distributed training"): build/mpi/lsae is
# lsae built with LSAE_MPI, which trains under mpirun; latentsae.h itself
# stays free of MPI (latentsae_mpi.h holds the MPI side). Open MPI as Debian
# ships it: mpirun refuses to start as root (CI runs as root) unless told,
# and --oversubscribe lets 3 ranks share 2 cores.
MPICC ?= $(shell command -v mpicc 2>/dev/null)
MPIRUN ?= $(shell command -v mpirun 2>/dev/null)
MPIRUN_FLAGS ?= --oversubscribe $(shell [ "$$(id -u)" = 0 ] && echo --allow-run-as-root)
MPI_BUILD = $(BUILD)/mpi
BENCH_MPI_ROUNDS ?= 5
$(MPI_BUILD):
	@mkdir -p $@
$(MPI_BUILD)/mpi_driver: tests/mpi_driver.c $(HDR) latentsae_mpi.h | $(MPI_BUILD)
	$(MPICC) $(CFLAGS_ALL) -o $@ $< -lm
# the same with the sums cut into many small rounds (odd sizes)
$(MPI_BUILD)/mpi_driver_rounds: tests/mpi_driver.c $(HDR) latentsae_mpi.h | $(MPI_BUILD)
	$(MPICC) $(CFLAGS_ALL) -DLSAE_MPI_SHM_BYTES=4000 -DLSAE_MPI_SEGMENT=777 -o $@ $< -lm
$(MPI_BUILD)/lsae: $(LSAE_SRC) $(HDR) latentsae_mpi.h | $(MPI_BUILD)
	$(MPICC) $(CFLAGS_ALL) -DLSAE_MPI -pthread -o $@ $(LSAE_MAIN) -lm
mpi-build:
	@if [ -n "$(MPICC)" ]; then $(MAKE) --no-print-directory $(MPI_BUILD)/lsae $(MPI_BUILD)/mpi_driver; \
	else echo "✗ no mpicc: build/mpi/lsae (data-parallel training under mpirun) not built (apt install libopenmpi-dev openmpi-bin)"; fi

# tests/mpi_driver.c under mpirun -np 1, 2, 3 (the global batch of 61 rows
# splits unevenly over 2 and 3; one of 2 rows leaves a rank of 3 empty): every statistic and tensor within 1e-5 of
# one process (1 rank: the same bits), the same bits on every rank, and each
# P run twice must print the same digests (bit-identical when repeated).
# The driver's planted faults (gradients not summed; TV and loss summed per
# rank) must be caught. Then lsae train under mpirun against build/lsae,
# repeated, killed and resumed with another P, each rank reading only its
# slice of every batch (1/P of the rows; the bytes of whole-batch reading,
# also with NaN/Inf rows) (tests/test_mpi_cli.py).
test-mpi:
	@if [ -z "$(MPICC)" ] || [ -z "$(MPIRUN)" ]; then \
	  echo "== test-mpi skipped: no mpicc or mpirun (tests/install-deps.sh installs libopenmpi-dev openmpi-bin; it could not here)"; exit 0; fi; \
	if ! $(MPIRUN) --version 2>&1 | grep -q 'Open MPI'; then \
	  echo "== test-mpi skipped: its mpirun flags are Open MPI's, and $(MPIRUN) is another MPI ($$($(MPIRUN) --version 2>&1 | head -1))"; exit 0; fi; \
	$(MAKE) --no-print-directory $(MPI_BUILD)/mpi_driver $(MPI_BUILD)/mpi_driver_rounds $(MPI_BUILD)/lsae > /dev/null || exit 1; \
	OMPI_CC=$(CXX) $(MPICC) -x c++ $(CXXSTD) $(OMP) $(WARN) -DOMPI_SKIP_MPICXX -fsyntax-only tests/mpi_driver.c || \
	  { echo "FAILED: latentsae_mpi.h and tests/mpi_driver.c as C++"; exit 1; }; \
	$(MPICC) $(CSTD) $(WARN) -fsyntax-only tests/mpi_driver.c || { echo "FAILED: tests/mpi_driver.c without OpenMP"; exit 1; }; \
	run="timeout 600 $(MPIRUN) $(MPIRUN_FLAGS)"; d=$(MPI_BUILD); \
	for P in 1 2 3; do \
	  for rep in a b; do \
	    $$run -np $$P $$d/mpi_driver > $$d/driver_$$P$$rep.out 2> $$d/driver_$$P$$rep.err || \
	      { cat $$d/driver_$$P$$rep.out $$d/driver_$$P$$rep.err; echo "FAILED: mpirun -np $$P mpi_driver"; exit 1; }; \
	  done; \
	  grep '^digest' $$d/driver_$$P''a.out > $$d/digest_$$P''a; grep '^digest' $$d/driver_$$P''b.out > $$d/digest_$$P''b; \
	  if ! [ -s $$d/digest_$$P''a ] || ! cmp -s $$d/digest_$$P''a $$d/digest_$$P''b; then \
	    diff $$d/digest_$$P''a $$d/digest_$$P''b; echo "FAILED: two runs with $$P ranks ended with different bits"; exit 1; fi; \
	  echo "== mpirun -np $$P: $$(tail -1 $$d/driver_$$P''a.out); repeated: the same bits"; \
	done; \
	LSAE_MPI_NO_SHM=1 $$run -x LSAE_MPI_NO_SHM -np 3 $$d/mpi_driver > $$d/driver_msg.out 2>&1 || { cat $$d/driver_msg.out; echo "FAILED: mpi_driver with LSAE_MPI_NO_SHM=1"; exit 1; }; \
	grep -q 'sums by MPI messages' $$d/driver_msg.out && grep -q 'sums through a shared window' $$d/driver_3a.out || \
	  { tail -1 $$d/driver_msg.out $$d/driver_3a.out; echo "FAILED: the two ways of summing were not both taken"; exit 1; }; \
	grep '^digest' $$d/driver_msg.out | cmp -s - $$d/digest_3a || { echo "FAILED: the sums by MPI messages and through the shared window differ"; exit 1; }; \
	echo "== 3 ranks summing by MPI messages (LSAE_MPI_NO_SHM=1): the same bits as through the shared window"; \
	for shm in 0 1; do \
	  LSAE_MPI_NO_SHM=$$shm $$run -x LSAE_MPI_NO_SHM -np 3 $$d/mpi_driver_rounds > $$d/driver_rounds.out 2>&1 || { cat $$d/driver_rounds.out; echo "FAILED: mpi_driver_rounds"; exit 1; }; \
	  grep '^digest' $$d/driver_rounds.out | cmp -s - $$d/digest_3a || { echo "FAILED: sums in many small rounds (LSAE_MPI_NO_SHM=$$shm) give other bits"; exit 1; }; \
	done; echo "== the sums cut into rounds of 1000 floats (and 777 by messages): the same bits"; \
	for plant in nosum localtv; do \
	  if $$run -np 2 $$d/mpi_driver --plant $$plant > $$d/plant.out 2>&1; then \
	    echo "FAILED: mpi_driver --plant $$plant (a sabotaged sum across ranks) passed: the comparisons are blind"; exit 1; fi; \
	done; echo "== planted faults (gradients not summed, TV and loss per rank) are caught"; \
	if [ -z "$(PYNUMPY)" ]; then echo "test-mpi: the lsae train part needs a python3 with numpy (apt install python3-numpy, or PYNUMPY=...)"; exit 1; fi; \
	$(MAKE) --no-print-directory $(BUILD)/lsae > /dev/null && $(PYNUMPY) tests/test_mpi_cli.py $(BUILD) "$(MPIRUN) $(MPIRUN_FLAGS)"

# data-parallel speed-up, 2 ranks x 1 thread against 1 x 1 at the same
# global batch (not a test: bench/bench_mpi.py prints medians and the ratio)
$(MPI_BUILD)/bench_mpi: bench/bench_mpi.c $(HDR) latentsae_mpi.h | $(MPI_BUILD)
	$(MPICC) $(CSTD) $(OPT) $(ARCH) $(OMP) $(WARN) -o $@ $< -lm
bench-mpi: $(MPI_BUILD)/bench_mpi
	python3 bench/bench_mpi.py $(BUILD) "$(MPIRUN) $(MPIRUN_FLAGS)" $(BENCH_MPI_ROUNDS)

# ---------------------------------------------------------------- speed

# the AVX2 and the native (AVX-512 where there is one) kernels must train to
# the same bits; needs an x86 CPU with AVX2 and FMA, skipped elsewhere
# test-isa: the training digests of the native and the -mavx2 -mfma builds
# agree; the int8 pre-pass and the decoder cosines, whose AVX2 build has its
# own int8 kernel, pass in an -mavx2 -mfma build (and, on an AVX-512 CPU, both
# in one for AVX-512 without VNNI: AVX2's kernels, AVX-512's bounds;
# on an AMX CPU, also one with LSAE_NO_AMX: the VNNI kernel the native
# build then passes over)
ISA_AVX2_TESTS = test_prepass test_deccos
test-isa: tests/isa_digest.c tests/test_prepass.c tests/test_deccos.c $(TEST_DEPS) | $(BUILD)
	@if echo 'int main(void){return 0;}' | $(CC) -mavx2 -mfma -x c -o /dev/null - 2>/dev/null; then \
	  if grep -q ' avx2' /proc/cpuinfo 2>/dev/null && grep -q ' fma' /proc/cpuinfo 2>/dev/null; then \
	    $(CC) $(CSTD) $(OPT) $(ARCH) $(OMP) $(WARN) -o $(BUILD)/isa_native tests/isa_digest.c -lm && \
	    $(CC) $(CSTD) $(OPT) -mavx2 -mfma $(OMP) $(WARN) -o $(BUILD)/isa_avx2 tests/isa_digest.c -lm && \
	    a=$$($(BUILD)/isa_native) && b=$$($(BUILD)/isa_avx2) && \
	    if [ "$$a" = "$$b" ]; then echo "== native and AVX2 kernels train to the same bits ($$a): ok"; \
	    else echo "FAILED: native build $$a, AVX2 build $$b"; exit 1; fi; \
	    for t in $(ISA_AVX2_TESTS); do \
	      $(CC) $(CSTD) $(OPT) -mavx2 -mfma $(OMP) $(WARN) -o $(BUILD)/isa_avx2_$$t tests/$$t.c -lm && \
	      $(BUILD)/isa_avx2_$$t > /dev/null || { echo "FAILED: $$t built with -mavx2 -mfma"; exit 1; }; \
	    done; echo "== $(ISA_AVX2_TESTS) built with -mavx2 -mfma (the AVX2 int8 kernel): ok"; \
	    if grep -q ' avx512bw' /proc/cpuinfo 2>/dev/null && echo 'int main(void){return 0;}' | $(CC) -march=skylake-avx512 -x c -o /dev/null - 2>/dev/null; then \
	      $(CC) $(CSTD) $(OPT) -march=skylake-avx512 $(OMP) $(WARN) -o $(BUILD)/isa_skx_test_prepass tests/test_prepass.c -lm && \
	      $(BUILD)/isa_skx_test_prepass > /dev/null || { echo "FAILED: test_prepass built for AVX-512 without VNNI (-march=skylake-avx512)"; exit 1; }; \
	      $(CC) $(CSTD) $(OPT) -march=skylake-avx512 $(OMP) $(WARN) -o $(BUILD)/isa_skx_test_deccos tests/test_deccos.c -lm && \
	      $(BUILD)/isa_skx_test_deccos > /dev/null || { echo "FAILED: test_deccos built for AVX-512 without VNNI (-march=skylake-avx512)"; exit 1; }; \
	      echo "== test_prepass and test_deccos built for AVX-512 without VNNI: ok"; fi; \
	    if grep -q ' amx_int8' /proc/cpuinfo 2>/dev/null; then \
	      $(CC) $(CSTD) $(OPT) $(ARCH) -DLSAE_NO_AMX $(OMP) $(WARN) -o $(BUILD)/isa_noamx_test_prepass tests/test_prepass.c -lm && \
	      $(BUILD)/isa_noamx_test_prepass > /dev/null || { echo "FAILED: test_prepass built with LSAE_NO_AMX (the VNNI kernel on an AMX CPU)"; exit 1; }; \
	      echo "== test_prepass built with LSAE_NO_AMX (VNNI where the native build takes AMX): ok"; fi; \
	    if grep -q ' avx_vnni' /proc/cpuinfo 2>/dev/null && echo 'int main(void){return 0;}' | $(CC) -mavx2 -mfma -mavxvnni -x c -o /dev/null - 2>/dev/null; then \
	      $(CC) $(CSTD) $(OPT) -mavx2 -mfma -mavxvnni $(OMP) $(WARN) -o $(BUILD)/isa_avxvnni tests/isa_digest.c -lm && \
	      c=$$($(BUILD)/isa_avxvnni) && [ "$$a" = "$$c" ] || { echo "FAILED: the AVX-VNNI build (-mavx2 -mfma -mavxvnni) trains to $$c, native $$a"; exit 1; }; \
	      for t in $(ISA_AVX2_TESTS); do \
	        $(CC) $(CSTD) $(OPT) -mavx2 -mfma -mavxvnni $(OMP) $(WARN) -o $(BUILD)/isa_avxvnni_$$t tests/$$t.c -lm && \
	        $(BUILD)/isa_avxvnni_$$t > /dev/null || { echo "FAILED: $$t built with -mavx2 -mfma -mavxvnni"; exit 1; }; \
	      done; echo "== the AVX-VNNI build (-mavx2 -mfma -mavxvnni: its int8 kernel) trains to the same bits; $(ISA_AVX2_TESTS): ok"; fi; \
	  else echo "== test-isa skipped: this CPU lacks AVX2/FMA"; fi; \
	else echo "== test-isa skipped: $(CC) has no -mavx2 -mfma"; fi

# make bench: speed against PyTorch and OpenBLAS (bench/run.py builds its
# own binaries; BENCH_ARGS="--quick --rounds 1" for a short run). Timings
# live in bench/, never in tests.
# make bench installs what it needs first as make test does, and OpenBLAS:
# bench/run.py refuses to print a ratio against PyTorch on the reference BLAS.
bench:
	@sh tests/install-deps.sh --bench
	@$(MAKE) --no-print-directory bench-run
bench-run:
	@if [ -z "$(PYTHON)" ]; then echo "bench: needs a python3 with numpy and torch (PYTHON=...)"; exit 1; fi
	CC="$(CC)" $(PYTHON) bench/run.py $(BENCH_ARGS)

# ---------------------------------------------------------- reliability

# every public call with each allocation refused in turn, under ASan + UBSan
# (tests/test_oom.c; `build/asan/test_oom N` refuses allocation N only)
$(BUILD)/asan/test_oom: tests/test_oom.c tests/data/t12x8.pt $(TEST_DEPS) | $(BUILD)/asan
	$(CC) $(CSTD) -O1 $(ARCH) $(OMP) $(WARN) -g $(SANFLAGS) -pthread -o $@ $< -lm
test-oom: $(BUILD)/asan/test_oom
	@echo "== asan/test_oom: every public call, each allocation refused in turn"; ASAN_OPTIONS=detect_leaks=1 $(BUILD)/asan/test_oom

# kill -9 at random moments and --resume, a full disk and a read-only
# directory while saving, NaN rows and an absurd learning rate, end to end
# (tests/test_reliability.py; mounts a small tmpfs when it may)
$(BUILD)/reliability_driver: tests/reliability_driver.c $(HDR) | $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< -lm
$(BUILD)/asan/reliability_driver: tests/reliability_driver.c $(HDR) | $(BUILD)/asan
	$(CC) $(CSTD) -O1 $(ARCH) $(OMP) $(WARN) -g $(SANFLAGS) -o $@ $< -lm
test-reliability: $(BUILD)/lsae $(BUILD)/reliability_driver
	@if [ -z "$(PYNUMPY)" ]; then echo "test-reliability: needs a python3 with numpy (apt install python3-numpy, or PYNUMPY=...)"; exit 1; fi
	$(PYNUMPY) tests/test_reliability.py $(BUILD)

# The rest of the suite under ASan + UBSan as well (make test-sanitize runs
# this first): the PyTorch parity and file-interop drivers, the strict-C99
# file tests, the ISA digest, the quickstart example, the reliability test
# and the report page with the sanitized lsae.
$(BUILD)/asan/quickstart: examples/quickstart.c $(HDR) | $(BUILD)/asan
	$(CC) $(CSTD) -O1 $(ARCH) $(OMP) $(WARN) -g $(SANFLAGS) -o $@ $< -lm
$(BUILD)/asan/strict_test_files: tests/test_files.c $(TEST_DEPS) | $(BUILD)/asan
	$(CC) $(CSTD) -O1 $(WARN) -g $(SANFLAGS) -DLSAE_TEST_NO_POSIX -o $@ $< -lm
ASAN_RUN = ASAN_OPTIONS=detect_leaks=1
test-sanitize-more: $(BUILD)/asan/parity_driver $(BUILD)/asan/files_driver $(BUILD)/asan/strict_test_files $(BUILD)/asan/isa_digest \
                    $(BUILD)/asan/quickstart $(BUILD)/asan/lsae $(BUILD)/asan/reliability_driver $(VENV)/.installed
	@if [ -z "$(PYTHON)" ]; then echo "test-sanitize: needs a python3 with numpy and torch (apt install python3-torch python3-numpy, or PYTHON=...)"; exit 1; fi
	@echo "== asan/strict_test_files"; $(ASAN_RUN) $(BUILD)/asan/strict_test_files > /dev/null
	@echo "== asan/isa_digest"; $(ASAN_RUN) $(BUILD)/asan/isa_digest > /dev/null
	@echo "== asan/quickstart"; $(ASAN_RUN) $(BUILD)/asan/quickstart > /dev/null
	@echo "== asan: tests/test_parity_torch.py"; $(ASAN_RUN) $(PYTHON) tests/test_parity_torch.py $(BUILD)/asan/parity_driver > $(BUILD)/asan/parity.log 2>&1 || \
	  { cat $(BUILD)/asan/parity.log; echo "FAILED: tests/test_parity_torch.py under AddressSanitizer + UBSan"; exit 1; }
	@echo "== asan: tests/test_files_python.py"; $(ASAN_RUN) $(VENV)/bin/python tests/test_files_python.py $(BUILD)/asan/files_driver > $(BUILD)/asan/files.log 2>&1 || \
	  { cat $(BUILD)/asan/files.log; echo "FAILED: tests/test_files_python.py under AddressSanitizer + UBSan"; exit 1; }
	@echo "== asan: tests/test_reliability.py"; $(ASAN_RUN) $(PYNUMPY) tests/test_reliability.py $(BUILD)/asan > $(BUILD)/asan/reliability.log 2>&1 || \
	  { cat $(BUILD)/asan/reliability.log; echo "FAILED: tests/test_reliability.py under AddressSanitizer + UBSan"; exit 1; }
	@echo "== asan: tests/test_report.py"; $(ASAN_RUN) CHROMIUM=$(CHROMIUM) $(PYNUMPY) tests/test_report.py $(BUILD)/asan > $(BUILD)/asan/report.log 2>&1 || \
	  { cat $(BUILD)/asan/report.log; echo "FAILED: tests/test_report.py under AddressSanitizer + UBSan"; exit 1; }
	@echo "== AddressSanitizer + UBSan: parity, interop, strict C99, ISA, quickstart, reliability, report: ok"

# A short training run (then --resume and encode) under valgrind's memcheck:
# zero errors, no leak. Built without OpenMP (libgomp's thread pool is
# reported as leaked and its barriers confuse memcheck) and without AVX-512,
# which valgrind cannot run: AVX2 + FMA where the CPU has them.
VALGRIND ?= valgrind
VG_ARCH ?= $(shell grep -q ' avx2' /proc/cpuinfo 2>/dev/null && grep -q ' fma' /proc/cpuinfo 2>/dev/null && echo -mavx2 -mfma)
VG = $(VALGRIND) -q --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible
VG_DIR = $(BUILD)/valgrind
VG_DATA = examples/data/embeddings/data-00000.npy
$(VG_DIR):
	@mkdir -p $@
$(VG_DIR)/lsae: $(LSAE_SRC) $(HDR) | $(VG_DIR)
	$(CC) $(CSTD) -O1 $(VG_ARCH) $(WARN) -g -pthread -o $@ $(LSAE_MAIN) -lm
test-valgrind: $(VG_DIR)/lsae
	@command -v $(VALGRIND) > /dev/null || { echo "test-valgrind: needs valgrind (apt install valgrind)"; exit 1; }
	@rm -rf $(VG_DIR)/run $(VG_DIR)/enc.jsonl
	@echo "== valgrind memcheck: lsae train (8 steps, checkpoints), train --resume, encode"
	@for cmd in "train --data $(VG_DATA) --k 8 --expansion-factor 2 --batch-size 64 --max-samples 512 --lr-warmup-steps 2 --save-every 3 --out $(VG_DIR)/run" \
	            "train --resume $(VG_DIR)/run" \
	            "encode $(VG_DIR)/run $(VG_DATA) --max-rows 200 -o $(VG_DIR)/enc.jsonl"; do \
	  $(VG) $(VG_DIR)/lsae $$cmd > $(VG_DIR)/log 2>&1 || { cat $(VG_DIR)/log; echo "FAILED under valgrind: lsae $$cmd"; exit 1; }; \
	done; echo "== valgrind memcheck: 0 errors, no leaks"

# ------------------------------------------------------------------ fuzzing
# libFuzzer harnesses for every file parser (tests/fuzz/fuzz_*.c; the
# header comment of each says what it feeds where):
#   make fuzz [FUZZ_SECONDS=300] [FUZZERS="npy torch"]   FUZZ_JOBS (one per core) at a time, niced
#   make test-fuzz       (part of make test) the regression inputs and seed
#                        corpora replayed under gcc + ASan/UBSan (no clang
#                        needed), then a FUZZ_SMOKE_SECONDS (30) run of each
#                        harness when clang has libFuzzer (apt install clang
#                        libclang-rt-14-dev); FUZZ_REQUIRED=1 (CI) makes a
#                        missing libFuzzer an error instead of a skip
# Findings land in build/fuzz/artifacts/NAME/; the work corpus grows in
# build/fuzz/corpus/NAME/. A fixed finding's input goes to tests/fuzz/regress/NAME/.
FUZZERS ?= cfg_json safetensors model npy torch pickle raw hf checkpoint
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 30
FUZZ_NICE ?= nice -n 19
FUZZ_MAX_LEN ?= 16384
FUZZ_DIR = $(BUILD)/fuzz
FUZZ_CFLAGS = -std=c99 -g -O1 $(WARN) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_DEPS = tests/fuzz/fuzz_common.h $(HDR)
FUZZ_ENV = ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
HAVE_LIBFUZZER := $(shell echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}' | \
	$(FUZZ_CC) -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null && echo 1)

info-fuzz:
	@if [ -n "$(HAVE_LIBFUZZER)" ]; then echo "✓ $(FUZZ_CC) with libFuzzer: make test runs a $(FUZZ_SMOKE_SECONDS) s smoke of each fuzz harness"; \
	else echo "✗ no $(FUZZ_CC) with libFuzzer (apt install clang libclang-rt-14-dev): the fuzz smoke is skipped, its regression inputs still replay"; fi

$(FUZZ_DIR):
	@mkdir -p $@
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_DEPS) | $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< -lm
$(FUZZ_DIR)/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c $(FUZZ_DEPS) | $(FUZZ_DIR)
	$(CC) $(CSTD) -O1 $(WARN) -g $(SANFLAGS) -o $@ $< tests/fuzz/replay_main.c -lm

# every harness for $(1) seconds, FUZZ_JOBS (one per core) at a time: they
# all stop after the same time, so they go in batches; then each one's
# executions are printed, and the first that found something fails the run
FUZZ_JOBS ?= $(JOBS)
define lsae_fuzz_run
	@set -e; n=0; for h in $(FUZZERS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$h $(FUZZ_DIR)/artifacts/$$h; rm -f $(FUZZ_DIR)/$$h.rc; \
	  ( rc=0; $(FUZZ_ENV) $(FUZZ_NICE) $(FUZZ_DIR)/fuzz_$$h -max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 -max_len=$(FUZZ_MAX_LEN) \
	       -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$h/ \
	       $(FUZZ_DIR)/corpus/$$h tests/fuzz/seeds/$$h $$(ls -d tests/fuzz/regress/$$h 2>/dev/null) > $(FUZZ_DIR)/$$h.log 2>&1 || rc=$$?; \
	    echo $$rc > $(FUZZ_DIR)/$$h.rc ) & \
	  n=$$((n + 1)); if [ $$n -ge $(FUZZ_JOBS) ]; then wait; n=0; fi; \
	done; wait; \
	for h in $(FUZZERS); do \
	  echo "== fuzz_$$h: $(1) s"; \
	  if [ "$$(cat $(FUZZ_DIR)/$$h.rc 2>/dev/null)" != 0 ]; then \
	    tail -n 60 $(FUZZ_DIR)/$$h.log; echo "FAILED: fuzz_$$h found something; the input is in $(FUZZ_DIR)/artifacts/$$h/ (log $(FUZZ_DIR)/$$h.log)"; exit 1; \
	  fi; \
	  grep -h 'stat::number_of_executed_units\|stat::peak_rss_mb' $(FUZZ_DIR)/$$h.log | sed 's/^/   /'; \
	done
endef

fuzz: $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZERS))
	$(call lsae_fuzz_run,$(FUZZ_SECONDS))

test-fuzz-replay: $(addprefix $(FUZZ_DIR)/replay_,$(FUZZERS))
	@for h in $(FUZZERS); do \
	  printf '== replay %s: ' $$h; \
	  $(FUZZ_ENV) $(FUZZ_DIR)/replay_$$h tests/fuzz/seeds/$$h tests/fuzz/regress/$$h || { echo "FAILED: replay of tests/fuzz/*/$$h"; exit 1; }; \
	done

ifeq ($(HAVE_LIBFUZZER),1)
test-fuzz-smoke: $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZERS))
	$(call lsae_fuzz_run,$(FUZZ_SMOKE_SECONDS))
else
test-fuzz-smoke:
	@if [ "$(FUZZ_REQUIRED)" = 1 ]; then echo "FAILED: FUZZ_REQUIRED=1 but $(FUZZ_CC) cannot link -fsanitize=fuzzer (apt install clang libclang-rt-14-dev)"; exit 1; fi
	@echo "✗ no $(FUZZ_CC) with libFuzzer: fuzz smoke skipped (apt install clang libclang-rt-14-dev)"
endif

test-fuzz: test-fuzz-replay test-fuzz-smoke
# built with the other test programs, one job per core
TEST_PROGRAMS += $(addprefix $(FUZZ_DIR)/replay_,$(FUZZERS))
ifeq ($(HAVE_LIBFUZZER),1)
TEST_PROGRAMS += $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZERS))
endif

# ---------------------------------------------------------------- Windows
# make test-windows: the C tests and lsae built for 64-bit Windows with
# mingw-w64 (warnings as errors, C99, pedantic, OpenMP, linked statically so
# no DLL has to be found) and run under wine, then `lsae.exe train` and
# `lsae.exe encode` on examples/data. Wine's prefix (its C: drive and
# registry) is made once under build/wine, quietly and with a time limit.
# Windows' own compiler (MSVC) is not checked here: see README, Platforms.
MINGW_CC ?= x86_64-w64-mingw32-gcc
WINE ?= $(firstword $(wildcard /usr/lib/wine/wine64) $(shell command -v wine64 wine 2>/dev/null))
WINESERVER ?= $(firstword $(wildcard /usr/lib/wine/wineserver64) $(shell command -v wineserver 2>/dev/null))
WIN_DIR = $(BUILD)/win
WIN_FLAGS = $(CSTD) $(OPT) -fopenmp $(WARN) -g -static
WIN_ENV = WINEPREFIX=$(abspath $(BUILD)/wine) WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" WINELOADER=$(WINE)

$(WIN_DIR):
	@mkdir -p $@
$(WIN_DIR)/%.exe: tests/%.c $(TEST_DEPS) | $(WIN_DIR)
	$(MINGW_CC) $(WIN_FLAGS) -o $@ $< -lm
$(WIN_DIR)/lsae.exe: $(LSAE_SRC) $(HDR) | $(WIN_DIR)
	$(MINGW_CC) $(WIN_FLAGS) -o $@ $(LSAE_MAIN) -lm
# the first run of wine makes its prefix (about 10 s; no Mono or Gecko asked for)
$(BUILD)/wine/.ready:
	@mkdir -p $(BUILD)/wine
	@$(WIN_ENV) timeout 180 $(WINE) wineboot -i > $(BUILD)/wine/setup.log 2>&1 || { cat $(BUILD)/wine/setup.log; echo "FAILED: wine could not set up its prefix in $(BUILD)/wine"; exit 1; }
	@touch $@

ifeq ($(shell command -v $(MINGW_CC) 2>/dev/null),)
test-windows:
	@echo "== test-windows skipped: no $(MINGW_CC) (apt install gcc-mingw-w64-x86-64 wine64, or tests/install-deps.sh)"
else ifeq ($(WINE),)
test-windows:
	@echo "== test-windows skipped: no wine (apt install wine wine64, or tests/install-deps.sh)"
else
TEST_PROGRAMS += $(addprefix $(WIN_DIR)/,$(addsuffix .exe,$(TESTS))) $(WIN_DIR)/lsae.exe
# One wineserver kept for all the programs (-p: it does not exit when the
# last client does, and -k ends it however the recipe ends): a wineserver
# that exits between two programs can race the next one's connection
# ("wine client error: recvmsg: Connection reset by peer", seen once in CI
# on code whose rerun passed).
test-windows: $(addprefix $(WIN_DIR)/,$(addsuffix .exe,$(TESTS))) $(WIN_DIR)/lsae.exe $(BUILD)/wine/.ready
	@if [ -n "$(WINESERVER)" ]; then $(WIN_ENV) $(WINESERVER) -p; trap '$(WIN_ENV) $(WINESERVER) -k' EXIT; fi; \
	for t in $(TESTS); do echo "== wine $$t.exe"; \
	  $(WIN_ENV) timeout 300 $(WINE) $(WIN_DIR)/$$t.exe > $(WIN_DIR)/$$t.log 2>&1 || { cat $(WIN_DIR)/$$t.log; echo "FAILED: $$t.exe under wine"; exit 1; }; \
	  tail -1 $(WIN_DIR)/$$t.log; done; \
	rm -rf $(WIN_DIR)/run $(WIN_DIR)/enc; echo "== wine lsae.exe train, encode"; \
	$(WIN_ENV) timeout 300 $(WINE) $(WIN_DIR)/lsae.exe train --data examples/data/embeddings --k 8 --expansion-factor 2 --batch-size 128 \
	    --max-samples 3840 --save-every 10 --seed 7 --out $(WIN_DIR)/run > $(WIN_DIR)/lsae.log 2>&1 && \
	$(WIN_ENV) timeout 300 $(WINE) $(WIN_DIR)/lsae.exe encode $(WIN_DIR)/run examples/data/embeddings/data-00000.npy -o $(WIN_DIR)/enc >> $(WIN_DIR)/lsae.log 2>&1 && \
	grep -q 'done: 30 optimizer steps' $(WIN_DIR)/lsae.log && [ -s $(WIN_DIR)/run/checkpoint/state.bin ] && [ -s $(WIN_DIR)/enc/top_indices.npy ] || \
	  { cat $(WIN_DIR)/lsae.log; echo "FAILED: lsae.exe under wine"; exit 1; }; \
	echo "== Windows (mingw-w64, wine): ok"
endif

# ------------------------------------------------------------- WebAssembly
# wasm32-wasi with Debian's clang, lld, wasi-libc and libclang-rt-14-dev-wasm32
# (the compiler's builtins for wasm32), run under node's WASI
# (tests/wasi_run.mjs preopens the repository as "."), with the SIMD128
# kernels (-msimd128). test-wasm runs test_core, test_gradcheck, test_badinput
# and test_files (where WASI has no directory listing, no fork and no mmap
# the tests take the strict-C99 paths, as test-strict does), checks that
# isa_digest and examples/encode.c give the bits of x86 built without SIMD
# and without contraction (SIMD128 has no FMA: the header's "Determinism"),
# and opens the page of examples/web in headless Chromium (tests/test_web.py).
# make wasm-page builds that page: the module, a small model trained on
# examples/data, and 2000 bundled texts (examples/web/bundle.js).
WASM_CC ?= clang
WASM_DIR = $(BUILD)/wasm
WASM_CFLAGS = --target=wasm32-wasi $(CSTD) $(OPT) -msimd128 $(WARN)
# wasm-ld gives a program 64 KiB of stack; the file code keeps 4 KiB path
# buffers several calls deep
WASM_LDFLAGS = -Wl,-z,stack-size=8388608
# --single-threaded-gc: node 20's concurrent collector crashes the process at
# exit once a WASI program has grown its memory past about 100 MB
WASI_RUN = node --single-threaded-gc --experimental-wasi-unstable-preview1 --no-warnings tests/wasi_run.mjs
WASM_TESTS = test_core test_gradcheck test_badinput test_files test_deccos
HAVE_WASM := $(shell echo 'int main(void){return 0;}' | $(WASM_CC) --target=wasm32-wasi -x c - -o /dev/null 2>/dev/null && command -v node > /dev/null && echo 1)
WEB = examples/web
WEB_DIR = $(BUILD)/web
WEB_DATA = examples/data/embeddings/data-00000.npy

$(WASM_DIR) $(WEB_DIR):
	@mkdir -p $@
$(WASM_DIR)/%.wasm: tests/%.c $(TEST_DEPS) | $(WASM_DIR)
	$(WASM_CC) $(WASM_CFLAGS) $(WASM_LDFLAGS) -o $@ $< -lm
$(WASM_DIR)/encode.wasm: examples/encode.c $(HDR) | $(WASM_DIR)
	$(WASM_CC) $(WASM_CFLAGS) $(WASM_LDFLAGS) -o $@ $< -lm
# what the wasm build must match bit for bit: x86, portable kernels, a
# product then a sum (no FMA, no contraction)
$(WASM_DIR)/isa_nosimd: tests/isa_digest.c $(HDR) | $(WASM_DIR)
	$(CC) $(CSTD) $(OPT) -DLSAE_NO_SIMD -ffp-contract=off $(WARN) -o $@ $< -lm
$(WASM_DIR)/encode_nosimd: examples/encode.c $(HDR) | $(WASM_DIR)
	$(CC) $(CSTD) $(OPT) -DLSAE_NO_SIMD -ffp-contract=off $(WARN) -pthread -o $@ $< -lm

# the page: the module (no files in a browser: LSAE_NO_STDIO), a model of
# 1536 latents trained for a few seconds, and the bundle
$(WEB)/latentsae.wasm: $(WEB)/web_api.c $(HDR)
	$(WASM_CC) $(WASM_CFLAGS) -mexec-model=reactor -DLSAE_NO_STDIO -o $@ $<
$(WEB_DIR)/model/sae.safetensors: $(BUILD)/lsae | $(WEB_DIR)
	@rm -rf $(WEB_DIR)/run $(WEB_DIR)/model
	$(BUILD)/lsae train --data examples/data/embeddings --k 8 --expansion-factor 4 --batch-size 256 --max-samples 60000 \
	    --lr-warmup-steps 20 --dead-feature-threshold 20000 --out $(WEB_DIR)/run > $(WEB_DIR)/train.log
	@mkdir -p $(WEB_DIR)/model && cp $(WEB_DIR)/run/cfg.json $(WEB_DIR)/run/sae.safetensors $(WEB_DIR)/model/
$(WEB)/bundle.js: $(WEB)/bundle.py $(WEB)/latentsae.wasm $(WEB_DIR)/model/sae.safetensors
	python3 $(WEB)/bundle.py --wasm $(WEB)/latentsae.wasm --model $(WEB_DIR)/model --texts examples/data/texts.txt \
	    --embeddings $(WEB_DATA) --rows 2000 -o $@
wasm-page: $(WEB)/bundle.js
	@echo "open $(WEB)/index.html in a browser"

ifeq ($(HAVE_WASM),1)
test-wasm: $(addprefix $(WASM_DIR)/,$(addsuffix .wasm,$(WASM_TESTS) isa_digest encode)) $(WASM_DIR)/isa_nosimd $(WASM_DIR)/encode_nosimd \
           $(WEB)/bundle.js
	@for t in $(WASM_TESTS); do echo "== wasm/$$t"; \
	  $(WASI_RUN) $(WASM_DIR)/$$t.wasm > $(WASM_DIR)/$$t.log 2>&1 || { cat $(WASM_DIR)/$$t.log; echo "FAILED: $$t under node's WASI"; exit 1; }; \
	  tail -1 $(WASM_DIR)/$$t.log; done
	@a=$$($(WASI_RUN) $(WASM_DIR)/isa_digest.wasm) && b=$$($(WASM_DIR)/isa_nosimd) && \
	if [ "$$a" = "$$b" ]; then echo "== wasm32 SIMD128 trains to the bits of x86 with LSAE_NO_SIMD -ffp-contract=off ($$a): ok"; \
	else echo "FAILED: isa_digest: wasm32 $$a, x86 without SIMD or FMA $$b"; exit 1; fi
	@$(WASI_RUN) $(WASM_DIR)/encode.wasm $(WEB_DIR)/model $(WEB_DATA) 3 > $(WASM_DIR)/encode.out && \
	$(WASM_DIR)/encode_nosimd $(WEB_DIR)/model $(WEB_DATA) 3 > $(WASM_DIR)/encode_nosimd.out && \
	if cmp -s $(WASM_DIR)/encode.out $(WASM_DIR)/encode_nosimd.out; then echo "== examples/encode.c under WASI prints what x86 without SIMD or FMA prints: ok"; \
	else diff $(WASM_DIR)/encode.out $(WASM_DIR)/encode_nosimd.out; echo "FAILED: examples/encode.c under WASI"; exit 1; fi
	@if [ -z "$(PYNUMPY)" ]; then echo "test-wasm: needs python3 with numpy (apt install python3-numpy)"; exit 1; fi
	CHROMIUM=$(CHROMIUM) $(PYNUMPY) tests/test_web.py $(WASM_DIR)/encode_nosimd.out
else
test-wasm:
	@echo "✗ test-wasm skipped: no clang that links for wasm32-wasi, or no node (tests/install-deps.sh installs clang lld wasi-libc libclang-rt-14-dev-wasm32 nodejs)"
endif

# ------------------------------------------------------------- big-endian
# Files on a big-endian host: the tests cross-compiled for s390x (Debian's
# gcc-s390x-linux-gnu) and run under qemu-user, then files carried across
# byte orders: tests/endian_driver.c writes a model, a SAELens model, a
# checkpoint and datasets in every format on x86 and on s390x; each build
# reads both sets and must print the same values (the digests), and the two
# sets must be byte for byte the same. -fexcess-precision=fast: under
# -std=c99 s390x's gcc evaluates float arithmetic in double
# (FLT_EVAL_METHOD 1), which test_files' exact comparisons of float sums do
# not expect; with it float is float, as on x86.
BE_CC ?= s390x-linux-gnu-gcc
BE_RUN = env QEMU_LD_PREFIX=/usr/s390x-linux-gnu qemu-s390x
BE_TESTS = test_files test_badinput test_core
BE_DIR = $(BUILD)/s390x
$(BE_DIR):
	@mkdir -p $@
$(BE_DIR)/%: tests/%.c $(TEST_DEPS) | $(BE_DIR)
	$(BE_CC) $(CSTD) -fexcess-precision=fast $(OPT) $(WARN) -g -o $@ $< -lm
ifeq ($(shell command -v $(BE_CC) > /dev/null 2>&1 && command -v qemu-s390x > /dev/null 2>&1 && test -d /usr/s390x-linux-gnu/lib && echo yes),yes)
test-bigendian: $(addprefix $(BE_DIR)/,$(BE_TESTS) endian_driver) $(BUILD)/endian_driver
	@for t in $(BE_TESTS); do echo "== s390x/$$t (qemu-s390x)"; \
	  LSAE_TEST_EMULATOR=qemu-s390x $(BE_RUN) $(BE_DIR)/$$t > $(BE_DIR)/$$t.log 2>&1 || { tail -n 40 $(BE_DIR)/$$t.log; echo "FAILED: $$t on s390x (log $(BE_DIR)/$$t.log)"; exit 1; }; \
	  tail -n 1 $(BE_DIR)/$$t.log; done
	@e=$(BE_DIR)/endian; pt=tests/data/t12x8.pt; rm -rf $$e; mkdir -p $$e/x86 $$e/s390x; \
	$(BUILD)/endian_driver write $$e/x86 > $$e/x86.write && $(BE_RUN) $(BE_DIR)/endian_driver write $$e/s390x > $$e/s390x.write || { echo "FAILED: endian_driver write"; exit 1; }; \
	cmp -s $$e/x86.write $$e/s390x.write || { diff $$e/x86.write $$e/s390x.write; echo "FAILED: x86 and s390x hold different values before writing"; exit 1; }; \
	$(BUILD)/endian_driver read $$e/x86 $$pt > $$e/x86-reads-x86 && $(BUILD)/endian_driver read $$e/s390x $$pt > $$e/x86-reads-s390x && \
	$(BE_RUN) $(BE_DIR)/endian_driver read $$e/x86 $$pt > $$e/s390x-reads-x86 && $(BE_RUN) $(BE_DIR)/endian_driver read $$e/s390x $$pt > $$e/s390x-reads-s390x || \
	  { echo "FAILED: endian_driver read (a file read back to other values than were written, or refused)"; exit 1; }; \
	grep -v '^data ' $$e/x86.write | while read -r name n dg; do \
	  grep -q "^$$name  *$$n $$dg\$$" $$e/x86-reads-x86 || { echo "FAILED: $$name read back to other values than x86 wrote"; exit 1; }; done || exit 1; \
	for r in x86-reads-s390x s390x-reads-x86 s390x-reads-s390x; do \
	  cmp -s $$e/x86-reads-x86 $$e/$$r || { diff $$e/x86-reads-x86 $$e/$$r; echo "FAILED: $$r differs from x86-reads-x86"; exit 1; }; done; \
	diff -r $$e/x86 $$e/s390x > /dev/null || { diff -r $$e/x86 $$e/s390x; echo "FAILED: the files written on s390x differ from the ones written on x86"; exit 1; }; \
	echo "== big-endian: model, SAELens model, checkpoint written on x86 and on s390x are the same bytes; npy (<f4 >f4 <f2 >f2), safetensors (F32 F16 BF16), raw (f32 f16 bf16) and torch .pt read to the same values on both ($$(wc -l < $$e/x86-reads-x86) items): ok"
else
test-bigendian:
	@echo "✗ test-bigendian skipped: needs $(BE_CC), libc6-dev-s390x-cross and qemu-s390x (apt install gcc-s390x-linux-gnu libc6-dev-s390x-cross qemu-user; tests/install-deps.sh does)"
endif

# ---------------------------------------------------------------- ARM64
# The C tests cross-compiled for aarch64 with Debian's gcc-aarch64-linux-gnu
# (-O2: NEON is baseline on AArch64, so the NEON kernels are what runs) and
# run under qemu-user; then the training digests (tests/isa_digest.c) of
# the NEON build must equal those of the aarch64 LSAE_NO_SIMD build (the
# portable kernels: same order, fused multiply-adds) and, where this
# machine is x86 with AVX2 and FMA, those of the x86 AVX2 build: NEON and
# x86 train to the same bits. Emulation is slow: the digests are of
# problems 0, 1 and 3 (problem 2, d = 768, alone takes minutes under qemu;
# run build/arm64/isa_digest 2 under qemu-aarch64 by hand: it matched x86
# when the kernels were written). test_core also runs built with
# LSAE_NO_SIMD (the portable kernels). Skipped, with a line
# saying so, where the cross compiler or qemu is missing (make test
# installs them: tests/install-deps.sh).
ARM64_CC ?= aarch64-linux-gnu-gcc
ARM64_QEMU ?= qemu-aarch64
ARM64_SYSROOT ?= /usr/aarch64-linux-gnu
ARM64_BUILD = $(BUILD)/arm64
ARM64_CFLAGS = $(CSTD) $(OPT) $(if $(OMP),-fopenmp) $(WARN) -g
ARM64_ISA_PROBLEMS = 0 1 3
# the kill -9 test in test_files re-runs itself: through the emulator (LSAE_TEST_EMULATOR)
ARM64_RUN = QEMU_LD_PREFIX=$(ARM64_SYSROOT) LSAE_TEST_EMULATOR=$(ARM64_QEMU) OMP_WAIT_POLICY=passive $(ARM64_QEMU)
ARM64_BINS = $(addprefix $(ARM64_BUILD)/,$(TESTS)) $(ARM64_BUILD)/nosimd/test_core $(ARM64_BUILD)/isa_digest $(ARM64_BUILD)/isa_digest_nosimd

$(ARM64_BUILD):
	@mkdir -p $@
$(ARM64_BUILD)/%: tests/%.c $(TEST_DEPS) | $(ARM64_BUILD)
	$(ARM64_CC) $(ARM64_CFLAGS) -o $@ $< -lm
$(ARM64_BUILD)/isa_digest_nosimd: tests/isa_digest.c $(HDR) | $(ARM64_BUILD)
	$(ARM64_CC) $(ARM64_CFLAGS) -DLSAE_NO_SIMD -o $@ $< -lm
# the portable kernels too (test_core: the GEMM against the naive loop, top-k against a sort)
$(ARM64_BUILD)/nosimd/test_core: tests/test_core.c $(TEST_DEPS)
	@mkdir -p $(@D)
	$(ARM64_CC) $(ARM64_CFLAGS) -DLSAE_NO_SIMD -o $@ $< -lm
# the x86 reference, where this machine has AVX2 and FMA
ARM64_X86 := $(shell grep -q ' avx2' /proc/cpuinfo 2>/dev/null && grep -q ' fma' /proc/cpuinfo 2>/dev/null && echo $(ARM64_BUILD)/isa_digest_x86)
$(ARM64_BUILD)/isa_digest_x86: tests/isa_digest.c $(HDR) | $(ARM64_BUILD)
	$(CC) $(CSTD) $(OPT) -mavx2 -mfma $(OMP) $(WARN) -o $@ $< -lm

test-arm64:
	@if ! command -v $(ARM64_CC) > /dev/null 2>&1 || ! command -v $(ARM64_QEMU) > /dev/null 2>&1 || [ ! -d $(ARM64_SYSROOT)/lib ]; then \
	  echo "✗ test-arm64 skipped: needs $(ARM64_CC), $(ARM64_SYSROOT) and $(ARM64_QEMU) (apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"; \
	else $(MAKE) --no-print-directory arm64-run; fi
arm64-run: $(ARM64_BINS) $(ARM64_X86)
	@set -e; for t in $(TESTS); do echo "== arm64/$$t (qemu-aarch64)"; $(ARM64_RUN) $(ARM64_BUILD)/$$t > $(ARM64_BUILD)/$$t.log 2>&1 || \
	  { cat $(ARM64_BUILD)/$$t.log; echo "FAILED: $$t built for aarch64, under $(ARM64_QEMU)"; exit 1; }; tail -1 $(ARM64_BUILD)/$$t.log; done
	@echo "== arm64/nosimd/test_core (qemu-aarch64, LSAE_NO_SIMD)"; $(ARM64_RUN) $(ARM64_BUILD)/nosimd/test_core > $(ARM64_BUILD)/nosimd/test_core.log 2>&1 || \
	  { cat $(ARM64_BUILD)/nosimd/test_core.log; echo "FAILED: test_core built for aarch64 with LSAE_NO_SIMD, under $(ARM64_QEMU)"; exit 1; }; tail -1 $(ARM64_BUILD)/nosimd/test_core.log
	@neon=$$($(ARM64_RUN) $(ARM64_BUILD)/isa_digest $(ARM64_ISA_PROBLEMS)) && \
	portable=$$($(ARM64_RUN) $(ARM64_BUILD)/isa_digest_nosimd $(ARM64_ISA_PROBLEMS)) && \
	if [ "$$neon" != "$$portable" ]; then echo "FAILED: aarch64 NEON build $$neon, aarch64 LSAE_NO_SIMD build $$portable"; exit 1; fi && \
	echo "== aarch64: NEON and portable (LSAE_NO_SIMD) kernels train to the same bits ($$neon): ok" && \
	if [ -n "$(ARM64_X86)" ]; then \
	  x86=$$($(ARM64_X86) $(ARM64_ISA_PROBLEMS)) && \
	  if [ "$$neon" != "$$x86" ]; then echo "FAILED: aarch64 NEON build $$neon, x86 AVX2 build $$x86"; exit 1; fi && \
	  echo "== NEON (aarch64) and AVX2 (x86) train to the same bits ($$x86): ok"; \
	else echo "== no x86 CPU with AVX2 and FMA here: the NEON digests were not compared with x86's"; fi

# (last, so that every section's TEST_PROGRAMS += is in the list)
.PHONY: test-programs
test-programs: $(TEST_PROGRAMS)
