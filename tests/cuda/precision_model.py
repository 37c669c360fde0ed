#!/usr/bin/env python3
"""Where the tolerances of tests/cuda/test_cuda.c come from.

Runs on the CPU with PyTorch (no GPU needed). It trains the SAE of
tests/torch_ref.py (docs/math.md, section 2) with the encoder product
computed three ways: exactly (float64 of float32 inputs), with TF32 inputs
(each operand rounded to 10 explicit mantissa bits, as tensor cores do), and
with BF16 inputs (7 bits). Everything else is float64, so the differences measured are
those of the encoder product's precision alone, as in the library.

It prints, for the shapes test_cuda uses:
  - the norm-wise relative error of the encoder product (-> the GEMM bounds);
  - the largest relative difference of the per-step fvu over a 20-step run
    against the exact run (-> the TF32/BF16 training bounds);
  - how often float32 rounding alone (two summation orders) flips a top-k
    selection over 20 steps (-> why the strict fp32 run uses tiny shapes).

Usage: precision_model.py [--steps N] [--seed S]"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_ref import TorchSae, TorchTrainer  # noqa: E402


def round_mantissa(x, bits):
    """Round float32 values to `bits` explicit mantissa bits, to nearest even."""
    x32 = x.to(torch.float32).contiguous()
    i = x32.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    drop = 23 - bits
    half = 1 << (drop - 1)
    lsb = (i >> drop) & 1
    i = (i + half - 1 + lsb) & ~((1 << drop) - 1) & 0xFFFFFFFF
    i = torch.where(i >= 2 ** 31, i - 2 ** 32, i).to(torch.int32)
    return i.view(torch.float32).to(x.dtype)


class RoundedSae(TorchSae):
    bits = None

    def pre_acts(self, x):
        xc = x - self.b_dec
        W = self.W_enc
        if self.bits is not None:
            # a straight-through rounding: the forward value is rounded, the
            # gradient is that of the exact product (the library's backward
            # uses float32 weights)
            xc = xc + (round_mantissa(xc.detach(), self.bits) - xc.detach())
            W = W + (round_mantissa(W.detach(), self.bits) - W.detach())
        return torch.relu(xc @ W.T + self.b_enc)


def gemm_error(rows, L, d, bits, gen):
    x = torch.randn(rows, d, generator=gen, dtype=torch.float32)
    W = (torch.rand(L, d, generator=gen) * 2 - 1) / d ** 0.5
    ref = x.double() @ W.double().T
    got = round_mantissa(x, bits).double() @ round_mantissa(W, bits).double().T
    return float((got - ref).norm() / ref.norm())


def make_data(steps, B, d, gen):
    X = torch.randn(steps * B, d, generator=gen, dtype=torch.float64)
    X[:, :8] += 1.0
    return X.to(torch.float32).double()


def run(bits, d, L, k, B, steps, X, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    W_enc = ((torch.rand(L, d, generator=gen) * 2 - 1) / d ** 0.5).to(torch.float32)
    W_dec = W_enc / (W_enc.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps)
    b_enc = (0.05 * torch.randn(L, generator=gen)).to(torch.float32)
    b_dec = torch.zeros(d, dtype=torch.float32)
    sae = RoundedSae(W_enc.to(dtype), b_enc.to(dtype), W_dec.to(dtype), b_dec.to(dtype), k, multi_topk=True)
    sae.bits = bits
    tr = TorchTrainer(sae, 2e-3, 1 / 32, 300, 1, 3, steps, 0, init_b_dec=True)
    fvus, idx_hist = [], []
    for s in range(steps):
        x = X[s * B:(s + 1) * B].to(dtype)
        did_fire = torch.zeros(L, dtype=torch.bool)
        with torch.no_grad():
            pre = sae.pre_acts(x) if not tr.need_b_dec else None
        fvu, _, _ = tr.accumulate(x, did_fire)
        if pre is not None:
            idx_hist.append(pre.topk(min(4 * k, L), dim=1).indices)
        tr.apply(B, did_fire)
        fvus.append(fvu)
    return fvus, idx_hist


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    gen = torch.Generator().manual_seed(a.seed)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    print("encoder product, norm-wise relative error against float64:")
    for rows, L, d in [(37, 131, 75), (256, 2048, 768)]:
        t = gemm_error(rows, L, d, 10, gen)
        b = gemm_error(rows, L, d, 7, gen)
        print(f"  {rows}x{L}x{d}: TF32 {t:.2e}  BF16 {b:.2e}")

    d, L, k, B = 64, 512, 16, 128
    X = make_data(a.steps, B, d, gen)
    ref, _ = run(None, d, L, k, B, a.steps, X, a.seed)
    print(f"{a.steps}-step run d={d} L={L} k={k} B={B} (multi-topk, AuxK, median init), "
          "largest relative fvu difference against the exact run:")
    for name, bits in [("TF32", 10), ("BF16", 7)]:
        got, _ = run(bits, d, L, k, B, a.steps, X, a.seed)
        worst = max(abs(g - r) / abs(r) for g, r in zip(got, ref))
        print(f"  {name}: {worst:.2e}")

    print("float32 alone (exact float64 run vs a float32 run): top-k selections that differ")
    for (d, L, k, B) in [(16, 64, 4, 32), (64, 512, 16, 128)]:
        X = make_data(a.steps, B, d, gen)
        f64, i64 = run(None, d, L, k, B, a.steps, X, a.seed)
        f32, i32 = run(None, d, L, k, B, a.steps, X, a.seed, dtype=torch.float32)
        flips = sum(int((p.sort(dim=1).values != q.sort(dim=1).values).any(dim=1).sum()) for p, q in zip(i64, i32))
        worst = max(abs(g - r) / abs(r) for g, r in zip(f32, f64))
        print(f"  d={d} L={L} k={k} B={B}: rows with a different top-4k set {flips} of {B * (a.steps - 1)}, "
              f"largest fvu difference {worst:.1e}")


if __name__ == "__main__":
    main()
