#!/usr/bin/env python3
"""Parity of latentsae's training step with a PyTorch implementation of
docs/math.md, section 2 (tests/torch_ref.py): identical weights and batches go
through both, 5 optimizer steps, with AuxK on/off, Multi-TopK on/off, grad_acc_steps 1 and 3
(plus the b_dec median initialisation, a warm-up and the cosine schedule).
Every loss, accumulated gradient and updated parameter must agree to 1e-5
relative (||c - t|| / ||t||). PyTorch runs in float64, so the bar measures the
C float32 step against the exact step, not against PyTorch's own rounding.

Usage: test_parity_torch.py [path/to/parity_driver]"""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import TorchSae, TorchTrainer  # noqa: E402

DRIVER = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "build", "parity_driver")
TOL = 1e-5


def rel(c, t):
    c = np.asarray(c, dtype=np.float64).ravel()
    t = np.asarray(t, dtype=np.float64).ravel()
    den = np.linalg.norm(t)
    err = np.linalg.norm(c - t)
    return err / den if den > 0 else err


def run_case(name, d=32, L=256, k=8, B=64, multi=False, auxk_alpha=1 / 32, acc=1, steps=5,
             init_b_dec=False, schedule=0, warmup=0, total=5, lr=3e-3, threads=0, seed=0):
    rng = np.random.default_rng(seed)
    # a non-trivial point: random encoder, unit decoder rows, small biases
    W_enc = rng.uniform(-1, 1, (L, d)).astype(np.float32) / np.sqrt(d, dtype=np.float32)
    W_dec = W_enc / (np.linalg.norm(W_enc, axis=1, keepdims=True) + np.finfo(np.float32).eps)
    W_dec = W_dec.astype(np.float32)
    b_enc = (0.05 * rng.standard_normal(L)).astype(np.float32)
    b_dec = (0.1 * rng.standard_normal(d)).astype(np.float32) if not init_b_dec else np.zeros(d, np.float32)
    threshold = 1000
    since = np.where(rng.random(L) < 0.5, 5000, 0).astype(np.uint64)  # about half the latents start dead
    # data with structure: a few directions plus noise, so top-k picks are not near ties
    X = (rng.standard_normal((steps * acc * B, d)) + 0.3).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        fin, fout = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
        with open(fin, "wb") as f:
            f.write(struct.pack("<16q", 0x4C534145, 1, d, L, k, int(multi), 1, acc, steps, B, int(init_b_dec),
                                schedule, warmup, total, threshold, threads))
            f.write(struct.pack("<2d", auxk_alpha, lr))
            for a in (W_enc, b_enc, W_dec, b_dec):
                f.write(a.astype("<f4").tobytes())
            f.write(since.astype("<u8").tobytes())
            f.write(X.astype("<f4").tobytes())
        subprocess.run([DRIVER, fin, fout], check=True)
        raw = open(fout, "rb").read()

    N = 2 * L * d + L + d
    off = 0

    def take(dtype, n):
        nonlocal off
        a = np.frombuffer(raw, dtype=dtype, count=n, offset=off)
        off += a.nbytes
        return a

    def split(flat):
        return [flat[:L * d], flat[L * d:L * d + L], flat[L * d + L:2 * L * d + L], flat[2 * L * d + L:]]

    t64 = torch.float64
    sae = TorchSae(torch.tensor(W_enc, dtype=t64), torch.tensor(b_enc, dtype=t64),
                   torch.tensor(W_dec, dtype=t64), torch.tensor(b_dec, dtype=t64), k, multi_topk=multi)
    tr = TorchTrainer(sae, lr, auxk_alpha, threshold, acc, warmup, total, schedule,
                      since_fired=torch.tensor(since.astype(np.int64)), init_b_dec=init_b_dec)
    names = ["W_enc", "b_enc", "W_dec", "b_dec"]
    worst = {}
    failures = []

    def check(what, c, t):
        e = rel(c, t)
        worst[what] = max(worst.get(what, 0.0), e)
        if not (e <= TOL):
            failures.append(f"{name}: {what}: relative error {e:.3g} > {TOL}")

    for s in range(steps):
        did_fire = torch.zeros(L, dtype=torch.bool)
        for a in range(acc):
            fvu_c, auxk_c, multi_c = take("<f8", 3)
            x = torch.tensor(X[(s * acc + a) * B:(s * acc + a + 1) * B], dtype=t64)
            fvu_t, auxk_t, multi_t = tr.accumulate(x, did_fire)
            check("fvu", [fvu_c], [fvu_t])
            check("auxk", [auxk_c], [auxk_t])
            check("multi_topk_fvu", [multi_c], [multi_t])
        grads_c = split(take("<f4", N))
        b_dec_c = take("<f4", d)
        check("b_dec before step", b_dec_c, sae.b_dec.detach().numpy())
        for nm, gc, p in zip(names, grads_c, sae.params()):
            check("grad " + nm, gc, p.grad.numpy())
        lr_c = take("<f8", 1)[0]
        lr_t = tr.apply(acc * B, did_fire)
        check("lr", [lr_c], [lr_t])
        params_c = split(take("<f4", N))
        for nm, pc, p in zip(names, params_c, sae.params()):
            check("param " + nm, pc, p.detach().numpy())
        since_c = take("<u8", L)
        if not np.array_equal(since_c.astype(np.int64), tr.since_fired.numpy()):
            failures.append(f"{name}: dead-latent counters differ at step {s}")
    assert off == len(raw), "driver wrote more than expected"
    summary = " ".join(f"{k}={v:.1e}" for k, v in sorted(worst.items()) if k.startswith(("grad", "param", "fvu", "auxk", "multi")))
    print(f"  {name}: worst relative errors: {summary}")
    return failures


def main():
    if not os.path.exists(DRIVER):
        print(f"parity_driver not found at {DRIVER}; run make first", file=sys.stderr)
        return 2
    cases = [
        ("plain", dict(auxk_alpha=0.0)),
        ("auxk", dict(auxk_alpha=1 / 32)),
        ("multi", dict(auxk_alpha=0.0, multi=True)),
        ("auxk+multi", dict(auxk_alpha=0.5, multi=True)),
        ("plain acc3", dict(auxk_alpha=0.0, acc=3)),
        ("auxk acc3", dict(auxk_alpha=1 / 32, acc=3)),
        ("multi acc3", dict(auxk_alpha=0.0, multi=True, acc=3)),
        ("auxk+multi acc3", dict(auxk_alpha=0.5, multi=True, acc=3)),
        ("median init + warm-up", dict(init_b_dec=True, warmup=2, total=5, auxk_alpha=1 / 32)),
        ("cosine, 3 threads", dict(schedule=1, warmup=1, total=6, threads=3, multi=True, acc=2, seed=3)),
        # d/2 = 64 AuxK picks a row and 4k = 128: the selection's sampled cut-backs run
        ("wide auxk+multi acc2", dict(d=128, L=1024, k=32, B=48, auxk_alpha=1 / 32, multi=True, acc=2, seed=5)),
    ]
    failures = []
    for name, kw in cases:
        failures += run_case(name, **kw)
    for f in failures:
        print("FAIL", f)
    print(f"test_parity_torch: {len(cases)} cases, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
