#!/usr/bin/env python3
"""The PyTorch side of bench/run.py: one optimizer step of docs/math.md,
section 2, in float32, timed like bench/bench.c times latentsae.

  torch_bench.py train D L K B ACC DEAD STEPS THREADS DECODE
  torch_bench.py encode D L K B REPS THREADS
  torch_bench.py blas       which BLAS PyTorch and numpy run on (blas_ok 1
                            when an optimised one, 0 on the reference BLAS)

The step is tests/torch_ref.py's TorchSae/TorchTrainer (written from
docs/math.md, checked against latentsae by tests/test_parity_torch.py).
DECODE picks how the sparse decoder runs:
  eager   latent-sae's CPU path (latentsae/utils/eleuther.py eager_decode):
          scatter the k activations into a dense [B, L] buffer, then a dense
          product with W_dec; this is what latent-sae runs without Triton
  gather  tests/torch_ref.py: gather the k rows of W_dec, weighted sum
As in bench.c, a fixed fraction DEAD of the latents is held dead for every
step (the dead-latent counters are reset before each optimizer step), so
AuxK does its full work every step. Prints "key value" lines."""
import math
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from torch_ref import TorchSae, TorchTrainer  # noqa: E402


class EagerSae(TorchSae):
    """latent-sae's CPU decoder: dense scatter, then a matrix product."""

    def decode(self, acts, idx):
        buf = acts.new_zeros(acts.shape[:-1] + (self.W_dec.shape[0],))
        dense = buf.scatter(-1, idx, acts)
        return dense @ self.W_dec


def make_data(rows, d, rng):
    """Unit rows of a shared offset plus noise, like bench.c's make_data."""
    mu = rng.standard_normal(d).astype(np.float32)
    x = 0.5 * mu + rng.standard_normal((rows, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return torch.from_numpy(x.astype(np.float32))


def make_sae(cls, d, L, k, rng):
    """latent-sae's initialisation: nn.Linear's U(-1/sqrt d, 1/sqrt d), zero
    bias, decoder = unit rows of the encoder."""
    bound = 1.0 / math.sqrt(d)
    W_enc = torch.from_numpy(rng.uniform(-bound, bound, (L, d)).astype(np.float32))
    W_dec = W_enc / (W_enc.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps)
    return cls(W_enc, torch.zeros(L), W_dec, torch.zeros(d), k)


def train(d, L, k, B, acc, dead_frac, steps, decode):
    rng = np.random.default_rng(1)
    x = make_data(8 * B, d, rng)
    sae = make_sae(EagerSae if decode == "eager" else TorchSae, d, L, k, rng)
    threshold = 10_000_000
    dead = torch.from_numpy(rng.random(L) < dead_frac)
    since = torch.where(dead, threshold + 1, 0).to(torch.int64)
    lr = 2e-4 / math.sqrt(L / 2 ** 14)
    tr = TorchTrainer(sae, lr, 1 / 32, threshold, acc, 10, 1000, 0, since_fired=since, init_b_dec=True)
    times, cpu, batch, n_dead = [], [], 0, 0
    for s in range(-1, steps):  # step -1: warm-up (and the geometric median)
        tr.since_fired = since.clone()
        did_fire = torch.zeros(L, dtype=torch.bool)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(acc):
            xb = x[(batch % 8) * B:(batch % 8 + 1) * B]
            fvu, _, _ = tr.accumulate(xb, did_fire)
            batch += 1
        tr.apply(acc * B, did_fire)
        if s >= 0:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            n_dead += int(dead.sum())
    print(f"train_samples_per_s {B * acc / statistics.median(times):.1f}")
    print(f"train_samples_per_cpu_s {B * acc / statistics.median(cpu):.1f}")
    print(f"dead_fraction {n_dead / steps / L:.3f}")
    print(f"fvu {fvu:.4f}")
    print(f"peak_rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


@torch.no_grad()
def encode(d, L, k, B, reps):
    rng = np.random.default_rng(1)
    x = make_data(B, d, rng)
    sae = make_sae(TorchSae, d, L, k, rng)
    times, cpu = [], []
    for i in range(reps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        sae.pre_acts(x).topk(k, dim=1)
        if i:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    print(f"encode_samples_per_s {B / statistics.median(times):.1f}")
    print(f"encode_samples_per_cpu_s {B / statistics.median(cpu):.1f}")


def blas():
    """Which BLAS this process's PyTorch and numpy loaded. Debian's
    python3-torch and python3-numpy link the system libblas.so.3; installed
    without recommends that is the reference BLAS (netlib, in .../blas/),
    many times slower than OpenBLAS, and a speed-up measured against it is
    meaningless. threadpoolctl names the optimised libraries it finds; the
    reference one it cannot name, so its path in /proc/self/maps tells."""
    import threadpoolctl
    x = torch.randn(64, 64)
    (x @ x).sum().item()
    (np.ones((64, 64)) @ np.ones((64, 64))).sum()
    known = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    try:
        maps = open("/proc/self/maps").read().split()
    except OSError:
        maps = []
    reference = sorted({p for p in maps if "libblas.so" in p and "/blas/" in p})
    fast = [i for i in known if i.get("internal_api") in ("openblas", "mkl", "blis")]
    desc = "; ".join(f"{i['internal_api']} {i.get('version') or ''} ({i.get('architecture') or '?'} kernels)" for i in fast)
    if reference:
        desc = (desc + "; " if desc else "") + "reference BLAS " + ",".join(reference)
    print(f"blas_ok {int(bool(fast) and not reference)}")
    print(f"blas_desc {desc or 'none found'}")


def main():
    a = sys.argv[1:]
    if a == ["blas"]:
        blas()
    elif a and a[0] == "train" and len(a) == 10:
        torch.set_num_threads(int(a[8]))
        print(f"threads {torch.get_num_threads()}")
        train(int(a[1]), int(a[2]), int(a[3]), int(a[4]), int(a[5]), float(a[6]), int(a[7]), a[9])
    elif a and a[0] == "encode" and len(a) == 7:
        torch.set_num_threads(int(a[6]))
        print(f"threads {torch.get_num_threads()}")
        encode(int(a[1]), int(a[2]), int(a[3]), int(a[4]), int(a[5]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
