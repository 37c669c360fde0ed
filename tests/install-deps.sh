#!/bin/sh
# What `make test` (and `make bench`) need, installed on first use: checks
# each thing and asks apt-get (Debian 12 and its derivatives) only for what
# is missing, so a second run installs nothing and needs no network. The
# Python packages that are not Debian's (latent-sae, safetensors, pyarrow,
# ...) go into build/venv from PyPI, by the Makefile (tests/requirements-files.txt).
#
#   tests/install-deps.sh          what the tests need
#   tests/install-deps.sh --bench  also what make bench needs (OpenBLAS, so
#                                  that PyTorch and numpy are not on the
#                                  reference BLAS; threadpoolctl to check)
#   LSAE_NO_INSTALL=1              only say what is missing, and fail
set -u
bench=0
[ "${1:-}" = "--bench" ] && bench=1

missing=""
need() { missing="$missing $1"; }

have() { command -v "$1" > /dev/null 2>&1; }
# Debian's python3 is the one apt-get installs modules for (another python3
# may come first on PATH: the Makefile looks at both)
py=/usr/bin/python3
[ -x $py ] || py=python3
pyhas() { $py -c "import $1" > /dev/null 2>&1; }

have cc || need build-essential
have c++ || need build-essential
have make || need make
have python3 || need python3
if have $py; then
    pyhas numpy || need python3-numpy
    pyhas torch || need python3-torch
    pyhas ensurepip || need python3-venv
else
    # no Python at all (a minimal Debian): the modules cannot be asked
    # about yet, and none of them is there
    need python3-numpy; need python3-torch; need python3-venv
fi
have valgrind || need valgrind
have chromium || need chromium
have clang || need clang
# libFuzzer's runtime is not a dependency of Debian's clang
if have clang && ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}' |
        clang -fsanitize=fuzzer -x c - -o /dev/null > /dev/null 2>&1; then
    need libclang-rt-14-dev
fi
have clang || need libclang-rt-14-dev
# make test-windows: the tests built with mingw-w64 and run under wine (Debian's
# wine64 puts its loader in /usr/lib/wine; the wine package adds the wine command)
have x86_64-w64-mingw32-gcc || need gcc-mingw-w64-x86-64
[ -x /usr/lib/wine/wine64 ] || have wine64 || need wine64
have wine || [ -x /usr/bin/wine-stable ] || need wine
# make test-wasm: clang for wasm32-wasi (Debian's clang 14 with lld,
# wasi-libc and the compiler's wasm32 builtins) and node for WASI
have wasm-ld || need lld
[ -e /usr/include/wasm32-wasi/stdio.h ] || need wasi-libc
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a > /dev/null 2>&1 || need libclang-rt-14-dev-wasm32
have node || need nodejs
# make test-bigendian: the tests cross-compiled for s390x, run under qemu-user
have s390x-linux-gnu-gcc || need gcc-s390x-linux-gnu
[ -e /usr/s390x-linux-gnu/include/stdio.h ] || need libc6-dev-s390x-cross
have qemu-s390x || need qemu-user
# make test-arm64: the C tests built for aarch64 and run under qemu-user
have aarch64-linux-gnu-gcc || need gcc-aarch64-linux-gnu
[ -e /usr/aarch64-linux-gnu/include/stdio.h ] || need libc6-dev-arm64-cross
have qemu-aarch64 || need qemu-user
# make test-mpi: data-parallel training under mpirun, with Open MPI (mpicc
# is in libopenmpi-dev, mpirun in openmpi-bin)
have mpicc || need libopenmpi-dev
have mpirun || need openmpi-bin
if [ $bench = 1 ]; then
    # PyTorch and numpy load the system BLAS: with only libblas3 (the
    # reference BLAS, what --no-install-recommends leaves) their products are
    # many times slower and a speed ratio against them means nothing
    [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so.0 ] || [ -e /usr/lib/aarch64-linux-gnu/libopenblas.so.0 ] || need libopenblas0
    # bench.c's GEMM against OpenBLAS links -lopenblas: libopenblas.so is in
    # libopenblas-dev (a cblas.h alone may be libblas-dev's, the reference
    # BLAS, and then run.py leaves the comparison out)
    [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] || [ -e /usr/lib/aarch64-linux-gnu/libopenblas.so ] || need libopenblas-dev
    pyhas threadpoolctl || need python3-threadpoolctl
fi

# each package once, in order
pkgs=$(printf '%s\n' $missing | awk 'NF && !seen[$0]++' | tr '\n' ' ')
if [ -z "$pkgs" ]; then
    if [ $bench = 1 ]; then echo "✓ everything make bench needs is installed"; else echo "✓ everything make test needs is installed"; fi
    exit 0
fi

if [ "${LSAE_NO_INSTALL:-0}" = 1 ]; then
    echo "install-deps: missing $pkgs (LSAE_NO_INSTALL=1: not installing); apt-get install $pkgs" >&2
    exit 1
fi
if ! have apt-get; then
    echo "install-deps: missing $pkgs, and this is not a Debian system (no apt-get): install their equivalents and run make test again" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if have sudo; then SUDO="sudo"; else
        echo "install-deps: missing $pkgs; run as root (or install sudo): apt-get install $pkgs" >&2
        exit 1
    fi
fi
echo "== installing what make test needs: $pkgs"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || { echo "install-deps: apt-get update failed" >&2; exit 1; }
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $pkgs > /dev/null ||
    { echo "install-deps: apt-get install $pkgs failed" >&2; exit 1; }
echo "== installed: $pkgs"
