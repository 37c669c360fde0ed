#!/usr/bin/env bash
# tests/cuda/mpi.sh: data-parallel training on GPUs (README "Distributed
# training"), on a machine with an NVIDIA GPU, nvcc and Open MPI (mpicc,
# mpirun); called by tests/cuda/run.sh, or alone:
#   1. build build/cuda/lsae, build/cuda-mpi/lsae (the sums through host
#      memory) and, when nccl.h is there, build/cuda-nccl/lsae, for this GPU
#   1b. build/cuda/test_cuda_dp: 2 and 3 ranks as threads of one process,
#      each with its own trainer on the GPU, no MPI (so it runs even where
#      Open MPI is missing): every statistic, tensor and Adam moment within
#      1e-5 of one trainer, a repeat the same bits, sum_f32_device the bits
#      of the host path, one rank the one-process bits
#   2. tests/mpi_driver.c --device cuda (build/cuda-mpi/mpi_driver) on 1, 2,
#      3 ranks sharing the GPU: TopK with multi-topk and AuxK, 61 rows a
#      batch with a NaN row, and 2 rows a batch (one rank's slice empty on
#      3); every tensor and Adam moment within 1e-5 of one process on the
#      GPU, the dead counters exact; 2 ranks twice: the same digests
#   2b. the same global batch (256 rows, 20 optimizer steps, d=384 bundled
#      data, 1536 latents, k=16, FP32) on 1 process and on 2 ranks sharing
#      GPU 0 through the host path: every tensor of the saved models within
#      1e-5 of the one-process run (relative to the tensor's largest value),
#      metrics.jsonl the same steps, samples and dead counts, fvu within 2e-5;
#      2 ranks run again: the same bytes
#   3. the time of a step, 1 process against 2 ranks on the one GPU, at
#      d=768, L=24576, k=64, batch 4096, TF32 (synthetic data; needs numpy)
#   4. with 2 or more GPUs: the NCCL build (a GPU per rank): its device sum
#      (tests/compile/nccl_comm.c), the run of 2 within 1e-5 of one process,
#      a repeat the same bytes, and its step time; one GPU: skipped, said so
# Every step has a wall-clock cap. About 2-3 minutes on an H100 (the build
# is most of it when run.sh has not built latentsae_cuda.o already).
#
# Usage: tests/cuda/mpi.sh [--no-build] [--no-timing] [--cpu]
#   --cpu   the same runs with --device cpu and no GPU (no timing, no NCCL):
#           checks this script and the builds' CPU path on any machine
# Logs go to $OUT/mpi (the device tool's output folder) or build/cuda/out/mpi.
# Exit status: 0 when every check passed (the timings do not fail it).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

BUILD=1 TIMING=1 DEVICE=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --cpu) DEVICE=cpu; TIMING=0 ;;
        --no-timing) TIMING=0 ;;
        -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "mpi.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

OUT_DIR="${OUT:-build/cuda/out}/mpi"
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
status=0
note() { echo; echo "== mpi.sh: $*"; }
cap() { local secs=$1; shift; timeout --kill-after=5 "$secs" "$@"; }
fail() { echo "FAILED: $*"; status=1; }

NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
CC_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
[ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ] || { echo "mpi.sh: nvidia-smi sees no GPU (--cpu runs the same on the CPU)" >&2; exit 1; }
[ "$DEVICE" = cpu ] && NGPU=0
MPIRUN=$(command -v mpirun || true)
MPICC=$(command -v mpicc || true)
HAVE_MPI=1
if [ -z "$MPIRUN" ] || [ -z "$MPICC" ]; then
    HAVE_MPI=0
elif ! "$MPIRUN" --version 2>&1 | grep -q 'Open MPI'; then
    echo "mpi.sh: $MPIRUN is not Open MPI (its flags here are Open MPI's): the MPI steps are skipped"
    HAVE_MPI=0
fi
MPIFLAGS=(--oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && MPIFLAGS+=(--allow-run-as-root)
PYTHON=$(command -v python3 || true)
[ -n "$PYTHON" ] || { echo "mpi.sh: no python3 to compare the models" >&2; exit 1; }
NVCC_BIN=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
ARCH="-arch=native"
[ -n "$CC_CAP" ] && ARCH="-arch=sm_${CC_CAP}"
echo "mpi.sh: --device $DEVICE, $NGPU GPU(s) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); $([ "$HAVE_MPI" = 1 ] && "$MPIRUN" --version 2>&1 | head -1 || echo 'no MPI')"

if [ "$BUILD" = 1 ]; then
    note "build ($ARCH)"
    TARGETS="build/cuda/lsae build/cuda/test_cuda_dp"
    [ "$HAVE_MPI" = 1 ] && TARGETS="$TARGETS build/cuda-mpi/lsae build/cuda-mpi/mpi_driver"
    NCCL_OK=0
    if [ "$HAVE_MPI" = 1 ] && { [ -f /usr/local/cuda/include/nccl.h ] || [ -f /usr/include/nccl.h ]; }; then
        TARGETS="$TARGETS build/cuda-nccl/lsae build/cuda-nccl/nccl_comm"; NCCL_OK=1
    fi
    ARCH_VAR=(CUDA_ARCH="$ARCH")
    [ "$DEVICE" = cpu ] && ARCH_VAR=()
    # an object built for another GPU (make test builds for sm_90) would
    # fail at the first launch: rebuild unless run.sh built it for this one
    if [ "$DEVICE" = cuda ] && [ "$(cat build/cuda/latentsae_cuda.arch 2>/dev/null)" != "$ARCH" ]; then
        rm -f build/cuda/latentsae_cuda.o build/cuda/latentsae_cuda_nocublas.o
    fi
    if ! cap 300 make -j"$(nproc)" --no-print-directory NVCC="$NVCC_BIN" "${ARCH_VAR[@]}" $TARGETS > "$OUT_DIR/build.log" 2>&1; then
        tail -30 "$OUT_DIR/build.log"; echo "mpi.sh: build failed (log: $OUT_DIR/build.log)" >&2; exit 1
    fi
    [ "$DEVICE" = cuda ] && echo "$ARCH" > build/cuda/latentsae_cuda.arch
    echo "ok ($TARGETS)"
    [ "$NCCL_OK" = 1 ] || echo "no nccl.h or no MPI: the NCCL build is not made"
fi

# the library alone, no MPI: ranks as threads of one process, each with its
# own GPU trainer on GPU 0 (tests/cuda/test_cuda_dp.c)
DP_DEV=()
[ "$DEVICE" = cpu ] && DP_DEV=(--cpu)
note "test_cuda_dp ${DP_DEV[*]}: 2 and 3 ranks as threads against one trainer"
if cap 120 build/cuda/test_cuda_dp "${DP_DEV[@]}" > "$OUT_DIR/test_cuda_dp.log" 2>&1; then
    cat "$OUT_DIR/test_cuda_dp.log"
else
    cat "$OUT_DIR/test_cuda_dp.log"; fail "test_cuda_dp ${DP_DEV[*]}"
fi

if [ "$HAVE_MPI" = 0 ]; then
    echo
    echo "mpi.sh: no mpirun/mpicc (Open MPI) here: the MPI steps (mpi_driver, lsae train on 2 ranks, timings, NCCL) are SKIPPED"
    [ $status = 0 ] && echo "mpi.sh: the checks that ran passed" || echo "mpi.sh: CHECKS FAILED (logs in $OUT_DIR)"
    exit $status
fi

# the library through tests/mpi_driver.c: 61 rows a batch over 1, 2 and 3
# ranks (and 2 rows: on 3 ranks one slice empty), a NaN row, AuxK on, every
# tensor and Adam moment within 1e-5 of one process on the GPU and the
# counters exact after 20 steps; 1 rank the one-process bits; 2 ranks twice
# the same digests
DRV_DEV=(--device cuda)
[ "$DEVICE" = cpu ] && DRV_DEV=()
note "tests/mpi_driver.c ${DRV_DEV[*]} on 1, 2 and 3 ranks"
for P in 1 2 3 2; do
    log="$OUT_DIR/driver_$P.log"
    [ -f "$log" ] && log="$OUT_DIR/driver_${P}b.log"
    if cap 120 "$MPIRUN" "${MPIFLAGS[@]}" -np $P build/cuda-mpi/mpi_driver "${DRV_DEV[@]}" > "$log" 2>&1; then
        tail -1 "$log"
    else
        tail -8 "$log"; fail "mpirun -np $P build/cuda-mpi/mpi_driver ${DRV_DEV[*]}"
    fi
done
if [ -f "$OUT_DIR/driver_2b.log" ]; then
    if cmp -s <(grep '^digest' "$OUT_DIR/driver_2.log") <(grep '^digest' "$OUT_DIR/driver_2b.log") && grep -q '^digest' "$OUT_DIR/driver_2.log"; then
        echo "mpi_driver, 2 ranks run twice: the same digests"
    else
        fail "mpi_driver, 2 ranks run twice: other digests"
    fi
fi

# the same global batch on 1 process and on P ranks; each rank gets its
# slice of every batch (lsae's loader), the sums go through host memory
ARGS=(--data examples/data/embeddings --batch-size 256 --expansion-factor 4 --k 16 --max-samples 5120
      --lr-warmup-steps 5 --log-every 1 --save-every 0 --device "$DEVICE" --precision fp32)
one() { cap 120 build/cuda/lsae train "${ARGS[@]}" --out "$1" > "$1.log" 2>&1; }
ranks() { local np=$1 bin=$2 dir=$3; shift 3; cap 180 "$MPIRUN" "${MPIFLAGS[@]}" "$@" -np "$np" "$bin" train "${ARGS[@]}" --out "$dir" > "$dir.log" 2>&1; }
compare() { "$PYTHON" tests/cuda/compare_models.py "$@" | tee -a "$OUT_DIR/compare.txt"; return "${PIPESTATUS[0]}"; }

note "1 process against 2 ranks through host memory, both on GPU 0 (20 steps, FP32, --device $DEVICE)"
if one "$OUT_DIR/p1"; then
    grep -c '"step"' "$OUT_DIR/p1/metrics.jsonl" | xargs -I{} echo "1 process: {} optimizer steps"
    if ranks 2 build/cuda-mpi/lsae "$OUT_DIR/p2"; then
        compare "$OUT_DIR/p2" "$OUT_DIR/p1" --metrics --label "2 ranks (host path) vs 1 process" || status=1
        if ranks 2 build/cuda-mpi/lsae "$OUT_DIR/p2b"; then
            compare "$OUT_DIR/p2b" "$OUT_DIR/p2" --same-bits --label "2 ranks run twice" || status=1
        else
            tail -5 "$OUT_DIR/p2b.log"; fail "mpirun -np 2 build/cuda-mpi/lsae (repeat)"
        fi
    else
        tail -8 "$OUT_DIR/p2.log"; fail "mpirun -np 2 build/cuda-mpi/lsae train --device cuda"
    fi
    # a rank of 1 under mpirun keeps the one-GPU path: the same bytes
    if ranks 1 build/cuda-mpi/lsae "$OUT_DIR/m1"; then
        compare "$OUT_DIR/m1" "$OUT_DIR/p1" --same-bits --label "mpirun -np 1 vs 1 process" || status=1
    else
        tail -5 "$OUT_DIR/m1.log"; fail "mpirun -np 1 build/cuda-mpi/lsae"
    fi
else
    tail -8 "$OUT_DIR/p1.log"; fail "build/cuda/lsae train --device cuda (the reference)"
fi

# the time of a step: median of batch / samples_per_s over the steps after
# the first 3 (each step logged); the one-GPU step and two ranks sharing it
step_ms() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if l.strip()]
t = sorted(float(sys.argv[2]) / r["samples_per_s"] * 1e3 for r in rows[3:] if r.get("samples_per_s"))
print(f"{t[len(t) // 2]:.2f}" if t else "n/a")
EOF
}
BIG=()
if [ "$TIMING" = 1 ]; then
    note "step time, d=768, L=24576, k=64, batch 4096, TF32"
    SYN="build/cuda/mpi_synth"
    if "$PYTHON" -c 'import numpy' 2>/dev/null; then
        mkdir -p "$SYN"
        [ -f "$SYN/data-00000.npy" ] || "$PYTHON" -c '
import numpy as np, sys
rng = np.random.default_rng(3)
np.save(sys.argv[1] + "/data-00000.npy", rng.standard_normal((4096 * 14, 768), dtype=np.float32))' "$SYN"
        BIG=(--data "$SYN" --batch-size 4096 --expansion-factor 32 --k 64 --max-samples $((4096 * 14)) --lr-warmup-steps 5
             --log-every 1 --save-every 0 --device cuda --precision tf32)
        if cap 120 build/cuda/lsae train "${BIG[@]}" --out "$OUT_DIR/t1" > "$OUT_DIR/t1.log" 2>&1; then
            T1=$(step_ms "$OUT_DIR/t1" 4096)
        else T1="failed"; tail -3 "$OUT_DIR/t1.log"; fi
        if cap 180 "$MPIRUN" "${MPIFLAGS[@]}" -np 2 build/cuda-mpi/lsae train "${BIG[@]}" --out "$OUT_DIR/t2" > "$OUT_DIR/t2.log" 2>&1; then
            T2=$(step_ms "$OUT_DIR/t2" 4096)
        else T2="failed"; tail -3 "$OUT_DIR/t2.log"; fi
        echo "step time (ms, median): 1 process $T1; 2 ranks on one GPU, sums through host memory $T2" | tee "$OUT_DIR/timing.txt"
    else
        echo "no numpy: the synthetic data for the timing is not made; timing skipped"
    fi
fi

note "NCCL (a GPU per rank)"
if [ "$NGPU" -lt 2 ]; then
    echo "skipped: $NGPU GPU on this machine; the NCCL build needs one GPU per rank (2 or more)"
elif [ ! -x build/cuda-nccl/lsae ]; then
    echo "skipped: build/cuda-nccl/lsae was not built (no nccl.h?)"
else
    if cap 60 "$MPIRUN" "${MPIFLAGS[@]}" -np 2 build/cuda-nccl/nccl_comm --init > "$OUT_DIR/nccl_comm.log" 2>&1; then
        cat "$OUT_DIR/nccl_comm.log"
        grep -q WRONG "$OUT_DIR/nccl_comm.log" && fail "the NCCL device sum"
    else
        tail -5 "$OUT_DIR/nccl_comm.log"; fail "nccl_comm --init on 2 GPUs"
    fi
    if [ -d "$OUT_DIR/p1" ] && ranks 2 build/cuda-nccl/lsae "$OUT_DIR/n2"; then
        compare "$OUT_DIR/n2" "$OUT_DIR/p1" --metrics --label "2 ranks (NCCL) vs 1 process" || status=1
        # the same additions in the same order as the host path: expected the
        # same bytes as p2 (GPUs 0 and 1 there, GPU 0 twice here); said, not failed
        compare "$OUT_DIR/n2" "$OUT_DIR/p2" --same-bits --label "NCCL vs host path, 2 ranks (informative)" || true
        if ranks 2 build/cuda-nccl/lsae "$OUT_DIR/n2b"; then
            compare "$OUT_DIR/n2b" "$OUT_DIR/n2" --same-bits --label "2 ranks (NCCL) run twice" || status=1
        else tail -5 "$OUT_DIR/n2b.log"; fail "NCCL repeat"; fi
    else
        [ -f "$OUT_DIR/n2.log" ] && tail -8 "$OUT_DIR/n2.log"; fail "mpirun -np 2 build/cuda-nccl/lsae train"
    fi
    if [ ${#BIG[@]} -gt 0 ]; then
        if cap 180 "$MPIRUN" "${MPIFLAGS[@]}" -np 2 build/cuda-nccl/lsae train "${BIG[@]}" --out "$OUT_DIR/tn2" > "$OUT_DIR/tn2.log" 2>&1; then
            echo "step time (ms, median): 2 ranks on 2 GPUs, NCCL: $(step_ms "$OUT_DIR/tn2" 4096)" | tee -a "$OUT_DIR/timing.txt"
        else tail -3 "$OUT_DIR/tn2.log"; fi
    fi
fi

echo
[ $status = 0 ] && echo "mpi.sh: all checks passed" || echo "mpi.sh: CHECKS FAILED (logs in $OUT_DIR)"
exit $status
