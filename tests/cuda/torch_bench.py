#!/usr/bin/env python3
"""PyTorch eager baseline for tests/cuda/run.sh: the training step of
tests/torch_ref.py (docs/math.md, section 2, written with ordinary torch
ops: dense encoder product, torch.topk, gather-and-sum decode, autograd,
clip_grad_norm_, torch.optim.Adam) timed on the same GPU and shape as bench_cuda.

Prints RESULT lines for tests/cuda/table.py:
  torch_train_{fp32,tf32}_ms        one optimizer step (accumulate + apply),
                                    data already on the GPU
  torch_train_auxk_{fp32,tf32}_ms   the same with half the latents dead
  torch_encode_{fp32,tf32}_rows_per_s  pre-activations + topk, no_grad
  torch_gemm_{fp32,tf32,bf16}_tflops   the encoder product alone at the shape
  torch_mm8192_{tf32,bf16}_tflops   an 8192^3 product: what the card reaches

fp32 is PyTorch's default for float32 matmul (allow_tf32 False); tf32 turns
torch.backends.cuda.matmul.allow_tf32 on.

Usage: torch_bench.py [--d 768] [--L 24576] [--k 64] [--B 4096] [--steps 10]
                      [--device cuda] [--precisions fp32,tf32] [--no-auxk] [--no-mm]
(--device cpu with tiny sizes checks the script without a GPU.)"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch_ref import TorchSae, TorchTrainer  # noqa: E402


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, warmup, reps):
    for _ in range(warmup):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(dev)
    return (time.perf_counter() - t0) / reps * 1e3


def make_trainer(d, L, k, dev, half_dead, threshold=10_000_000):
    gen = torch.Generator(device="cpu").manual_seed(0)
    W_enc = (torch.rand(L, d, generator=gen) * 2 - 1) / d ** 0.5
    W_dec = W_enc / (W_enc.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps)
    sae = TorchSae(W_enc.to(dev), torch.zeros(L, device=dev), W_dec.to(dev), torch.zeros(d, device=dev), k)
    since = torch.zeros(L, dtype=torch.int64, device=dev)
    if half_dead:
        since[::2] = threshold + 1
    lr = 2e-4 / (L / 2 ** 14) ** 0.5
    return TorchTrainer(sae, lr, 1 / 32, threshold, 1, 1000, 100000, 0, since_fired=since, init_b_dec=False)


def main():
    ap = argparse.ArgumentParser(description="PyTorch eager SAE step baseline")
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--L", type=int, default=24576)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--B", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precisions", default="fp32,tf32")
    ap.add_argument("--no-auxk", action="store_true")
    ap.add_argument("--no-mm", action="store_true")
    a = ap.parse_args()
    if a.d < 2 or a.L < 1 or not 1 <= a.k <= a.L or a.B < 2 or a.steps < 1:
        ap.error("bad sizes")
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("torch_bench: torch sees no CUDA device", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    X = [torch.rand(a.B, a.d, device=dev) * 2 - 1 for _ in range(4)]
    for x in X:
        x[:, :16] += 0.5
    print(f"torch_bench: torch {torch.__version__} on {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}")
    for prec in a.precisions.split(","):
        if prec not in ("fp32", "tf32"):
            ap.error(f"unknown precision {prec}")
        torch.backends.cuda.matmul.allow_tf32 = prec == "tf32"
        torch.backends.cudnn.allow_tf32 = prec == "tf32"
        for tag, half_dead in [("", False)] + ([] if a.no_auxk else [("_auxk", True)]):
            tr = make_trainer(a.d, a.L, a.k, dev, half_dead)
            state = {"i": 0}

            def step():
                x = X[state["i"] % len(X)]
                state["i"] += 1
                did_fire = torch.zeros(a.L, dtype=torch.bool, device=dev)
                tr.accumulate(x, did_fire)
                tr.apply(a.B, did_fire)

            ms = timed(step, dev, 3, a.steps)
            print(f"RESULT torch_train{tag}_{prec}_ms {ms:.4f}")
            print(f"  torch train{tag} {prec}: {ms:.3f} ms/step")
            del tr
        sae = make_trainer(a.d, a.L, a.k, dev, False).sae

        def encode():
            with torch.no_grad():
                for x in X:
                    sae.pre_acts(x).topk(a.k, dim=1)

        ms = timed(encode, dev, 1, max(1, a.steps // 4))
        print(f"RESULT torch_encode_{prec}_rows_per_s {len(X) * a.B / (ms * 1e-3):.0f}")

        def gemm():
            X[0] @ sae.W_enc.data.T

        ms = timed(gemm, dev, 2, a.steps)
        print(f"RESULT torch_gemm_{prec}_tflops {2.0 * a.B * a.L * a.d / (ms * 1e-3) / 1e12:.2f}")
        del sae
    if not a.no_mm and dev.type == "cuda":
        n = 8192
        torch.backends.cuda.matmul.allow_tf32 = True
        A = torch.randn(n, n, device=dev)
        Bm = torch.randn(n, n, device=dev)
        ms = timed(lambda: A @ Bm, dev, 3, 10)
        print(f"RESULT torch_mm8192_tf32_tflops {2.0 * n ** 3 / (ms * 1e-3) / 1e12:.1f}")
        Ah, Bh = A.bfloat16(), Bm.bfloat16()
        ms = timed(lambda: Ah @ Bh, dev, 3, 10)
        print(f"RESULT torch_mm8192_bf16_tflops {2.0 * n ** 3 / (ms * 1e-3) / 1e12:.1f}")
        torch.backends.cuda.matmul.allow_tf32 = False
        W_bf = (torch.rand(a.L, a.d, device=dev) - 0.5).bfloat16()
        x_bf = X[0].bfloat16()
        ms = timed(lambda: x_bf @ W_bf.T, dev, 2, a.steps)
        print(f"RESULT torch_gemm_bf16_tflops {2.0 * a.B * a.L * a.d / (ms * 1e-3) / 1e12:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
