#!/usr/bin/env bash
# tests/cuda/run.sh: the GPU checks of latentsae_cuda.cu, in one go, on a
# machine with an NVIDIA GPU, nvcc and (for the baseline) PyTorch:
#   1. build test_cuda, bench_cuda (cuBLAS) and test_cuda_nocublas for this GPU
#   2. test_cuda: every kernel and a 20-step training run against the CPU
#      path, library workspaces poisoned with NaN (LSAE_CUDA_POISON=1)
#   3. test_cuda_nocublas --small: the same with our own GEMM kernel
#   4. the command-line tool trains on the bundled data with --device cuda,
#      and its eval on the GPU and the CPU must agree
#   4b. tests/cuda/mpi.sh: data-parallel training, ranks as threads
#      (test_cuda_dp) and under mpirun (mpi_driver --device cuda, lsae
#      train), 2 ranks on the GPU through host memory against 1 process
#      (1e-5, a repeat the same bytes), the
#      step time of each, and the NCCL build when there are 2+ GPUs
#      (about 2 minutes; --no-mpi leaves it out)
#   5. bench_cuda and tests/cuda/torch_bench.py at d=768, L=24576, k=64,
#      batch 4096 on the same GPU
#   6. one table (tests/cuda/table.py), also written to $OUT/table.md
#   7. compute-sanitizer memcheck / initcheck / racecheck on test_cuda --small,
#      last because slowest; the table is written again with their results
# Every step has a wall-clock cap, so a hung step cannot take the rest of a
# device lease. About 5 minutes on an H100 (sanitizers capped at 150 s each).
#
# Usage: tests/cuda/run.sh [--quick] [--no-torch] [--no-sanitizer] [--no-mpi] [--steps N]
#                          [--sanitizers memcheck,initcheck,racecheck] [--sanitizer-cap S]
#   --quick         skip the sanitizers and the AuxK/BF16 timings
# Logs go to $OUT (the device tool's output folder) or build/cuda/out.
# Exit status: 0 when every check passed (the timings do not fail it).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

QUICK=0 TORCH=1 SANITIZE=1 MPI=1 STEPS=20 SAN_CAP=150 SAN_TOOLS="memcheck initcheck racecheck"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; SANITIZE=0 ;;
        --no-torch) TORCH=0 ;;
        --no-sanitizer) SANITIZE=0 ;;
        --no-mpi) MPI=0 ;;
        --steps) shift; STEPS="${1:?--steps needs a number}" ;;
        --sanitizer-cap) shift; SAN_CAP="${1:?--sanitizer-cap needs seconds}" ;;
        --sanitizers) shift; SAN_TOOLS="${1:?--sanitizers needs a list}"; SAN_TOOLS="${SAN_TOOLS//,/ }" ;;
        -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$STEPS" in ''|*[!0-9]*) echo "run.sh: --steps needs a positive number" >&2; exit 2 ;; esac

OUT_DIR="${OUT:-build/cuda/out}"
mkdir -p "$OUT_DIR"
status=0
note() { echo; echo "== $*"; }
# every step has a wall-clock cap, so one hung or slow step cannot eat the
# device lease of the rest (exit 124 = capped)
cap() { local secs=$1; shift; timeout --kill-after=5 "$secs" "$@"; }

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
CC_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
if [ -z "$GPU" ]; then
    echo "run.sh: nvidia-smi sees no GPU; on a machine without one, 'make test' runs the no-GPU checks" >&2
    exit 1
fi
NVCC_BIN=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
[ -n "$NVCC_BIN" ] || { echo "run.sh: nvcc not found" >&2; exit 1; }
ARCH="-arch=native"
[ -n "$CC_CAP" ] && ARCH="-arch=sm_${CC_CAP}"
PYTHON=$(command -v python3 || true)
{
    echo "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | head -1)"
    "$NVCC_BIN" --version | tail -2
    [ -n "$PYTHON" ] && "$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null
} | tee "$OUT_DIR/env.txt"

note "build ($ARCH)"
rm -f build/cuda/latentsae_cuda.o build/cuda/latentsae_cuda_nocublas.o   # built here, for this GPU
if ! make -j"$(nproc)" --no-print-directory NVCC="$NVCC_BIN" CUDA_ARCH="$ARCH" \
        build/cuda/test_cuda build/cuda/bench_cuda build/cuda/test_cuda_nocublas build/cuda/lsae > "$OUT_DIR/build.log" 2>&1; then
    tail -30 "$OUT_DIR/build.log"
    echo "run.sh: build failed (full log: $OUT_DIR/build.log)" >&2
    exit 1
fi
echo "$ARCH" > build/cuda/latentsae_cuda.arch   # tests/cuda/mpi.sh reuses the objects built for this GPU
echo "ok"

note "test_cuda (cuBLAS build), workspaces poisoned"
LSAE_CUDA_POISON=1 cap 150 build/cuda/test_cuda > "$OUT_DIR/test.log" 2>&1 || { echo "test_cuda failed (exit $?)"; status=1; }
grep -v '^RESULT' "$OUT_DIR/test.log" | tail -60

note "test_cuda_nocublas --small (our own GEMM kernel)"
LSAE_CUDA_POISON=1 cap 60 build/cuda/test_cuda_nocublas --small > "$OUT_DIR/test_nocublas.log" 2>&1 || { echo "test_cuda_nocublas failed (exit $?)"; status=1; }
tail -3 "$OUT_DIR/test_nocublas.log"

note "lsae end to end on the GPU (bundled data: train --device cuda, eval on GPU and CPU)"
rm -rf "$OUT_DIR/run"
if cap 90 build/cuda/lsae train --device cuda --data examples/data/embeddings --k 8 --expansion-factor 4 --epochs 2 \
        --lr-warmup-steps 20 --out "$OUT_DIR/run" > "$OUT_DIR/lsae.log" 2>&1; then
    tail -3 "$OUT_DIR/lsae.log"
    fvu_gpu=$(cap 60 build/cuda/lsae eval --device cuda --precision fp32 "$OUT_DIR/run" examples/data/embeddings --json 2>>"$OUT_DIR/lsae.log" | sed -n 's/.*"fvu": *\([0-9.e+-]*\).*/\1/p')
    fvu_cpu=$(cap 60 build/cuda/lsae eval --device cpu "$OUT_DIR/run" examples/data/embeddings --json 2>>"$OUT_DIR/lsae.log" | sed -n 's/.*"fvu": *\([0-9.e+-]*\).*/\1/p')
    echo "eval fvu: GPU (fp32) $fvu_gpu, CPU $fvu_cpu"
    if [ -z "$fvu_gpu" ] || [ -z "$fvu_cpu" ] || ! awk -v a="$fvu_gpu" -v b="$fvu_cpu" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4 * b) }'; then
        echo "lsae eval differs between GPU and CPU"; status=1
    fi
else
    tail -5 "$OUT_DIR/lsae.log"; echo "lsae train --device cuda failed"; status=1
fi

if [ "$MPI" = 1 ]; then
    note "data-parallel on the GPU (tests/cuda/mpi.sh)"
    OUT="$OUT_DIR" cap 420 tests/cuda/mpi.sh || { echo "tests/cuda/mpi.sh failed (exit $?)"; status=1; }
fi

note "bench_cuda"
BENCH_ARGS=(--steps "$STEPS")
[ "$QUICK" = 1 ] && BENCH_ARGS+=(--no-auxk --precisions "fp32,tf32")
if cap 120 build/cuda/bench_cuda "${BENCH_ARGS[@]}" > "$OUT_DIR/bench_lsae.txt" 2>&1; then
    grep -v '^RESULT' "$OUT_DIR/bench_lsae.txt"
else
    echo "bench_cuda failed:"; tail -5 "$OUT_DIR/bench_lsae.txt"; status=1
fi

TORCH_FILE=""
if [ "$TORCH" = 1 ]; then
    note "PyTorch eager baseline"
    TB_ARGS=(--steps 10)
    [ "$QUICK" = 1 ] && TB_ARGS+=(--no-auxk)
    if [ -n "$PYTHON" ] && "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        if cap 120 "$PYTHON" tests/cuda/torch_bench.py "${TB_ARGS[@]}" > "$OUT_DIR/bench_torch.txt" 2>&1; then
            grep -v '^RESULT' "$OUT_DIR/bench_torch.txt"
        else
            echo "torch_bench failed:"; tail -5 "$OUT_DIR/bench_torch.txt"
        fi
        TORCH_FILE="$OUT_DIR/bench_torch.txt"
    else
        echo "no python3 with CUDA PyTorch: the baseline column stays empty"
    fi
fi

SAN_LOGS=()
make_table() {
    if [ -n "$PYTHON" ]; then
        "$PYTHON" tests/cuda/table.py --gpu "$GPU" --test "$OUT_DIR/test.log" --test-nocublas "$OUT_DIR/test_nocublas.log" \
            --lsae "$OUT_DIR/bench_lsae.txt" ${TORCH_FILE:+--torch "$TORCH_FILE"} ${SAN_LOGS[@]+--sanitizer "${SAN_LOGS[@]}"} | tee "$OUT_DIR/table.md"
    else
        grep '^RESULT' "$OUT_DIR"/*.txt "$OUT_DIR/test.log"
    fi
}
note "table"
make_table
# the sanitizers last: they are the slowest step, and the table above is
# already written if the lease runs out during them
if [ "$SANITIZE" = 1 ]; then
    SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
    if [ -z "$SAN" ]; then
        echo "run.sh: compute-sanitizer not found, skipped"
    else
        for tool in $SAN_TOOLS; do
            note "compute-sanitizer --tool $tool test_cuda --small"
            log="$OUT_DIR/sanitizer-$tool.log"
            cap "$SAN_CAP" "$SAN" --tool "$tool" --error-exitcode 3 build/cuda/test_cuda --small > "$log" 2>&1
            rc=$?
            tail -2 "$log"
            if [ $rc = 124 ]; then echo "(timed out after $SAN_CAP s: not counted as a failure)";
            elif [ $rc != 0 ]; then status=1; fi
            SAN_LOGS+=("$log")
        done
    fi
fi

[ ${#SAN_LOGS[@]} -gt 0 ] && { note "table, with the sanitizers"; make_table; }
echo
[ $status = 0 ] && echo "run.sh: all checks passed" || echo "run.sh: CHECKS FAILED (logs in $OUT_DIR)"
exit $status
