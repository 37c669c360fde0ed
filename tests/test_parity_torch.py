#!/usr/bin/env python3
"""Parity of latentsae's training step with a PyTorch implementation of
docs/math.md, sections 2 and 3 (tests/torch_ref.py): identical weights and
batches go through both, 5 optimizer steps, with AuxK on/off, Multi-TopK
on/off, grad_acc_steps 1, 2 and 3 (plus the b_dec median initialisation, a
warm-up and the cosine schedule), and the other SAE types: BatchTopK
(uncapped, capped, accumulated, a row holding more than 4k of the batch's
picks), Matryoshka nested and per-level (per-row and batch-wide selections,
unequal weights, the large row inside each level's search) and k-annealing. Every loss, level fvu, BatchTopK threshold,
accumulated gradient and updated parameter must agree to 1e-5 relative
(||c - t|| / ||t||); k, the level count, the enlarged rows and the
dead-latent counters must be equal. PyTorch runs in float64, so the bar
measures the C float32 step against the exact step, not against PyTorch's own
rounding. For TopK the section-3 reference is also checked against section
2's TorchSae (a self-check of the reference).

Usage: test_parity_torch.py [path/to/parity_driver]"""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_ref import (NESTED, PER_LEVEL, SAE_BATCHTOPK, SAE_MATRYOSHKA, SAE_TOPK,  # noqa: E402
                       TorchSae, TorchTrainer, TypedSae, TypedTrainer)

DRIVER = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "build", "parity_driver")
TOL = 1e-5
MAXLEV = 16  # LSAE_MAX_LEVELS


def rel(c, t):
    c = np.asarray(c, dtype=np.float64).ravel()
    t = np.asarray(t, dtype=np.float64).ravel()
    den = np.linalg.norm(t)
    err = np.linalg.norm(c - t)
    return err / den if den > 0 else err


def run_case(name, d=32, L=256, k=8, B=64, multi=False, auxk_alpha=1 / 32, acc=1, steps=5,
             init_b_dec=False, schedule=0, warmup=0, total=5, lr=3e-3, threads=0, seed=0,
             sae_type=SAE_TOPK, row_cap=False, beta=0.999, sizes=(), ks=(), weights=(),
             use_batchtopk=False, form=NESTED, k_anneal=False, k_anneal_start=0, k_anneal_pct=0.3,
             big_row=0.0, b_enc_shift=0.0):
    rng = np.random.default_rng(seed)
    # a non-trivial point: random encoder, unit decoder rows, small biases
    W_enc = rng.uniform(-1, 1, (L, d)).astype(np.float32) / np.sqrt(d, dtype=np.float32)
    W_dec = W_enc / (np.linalg.norm(W_enc, axis=1, keepdims=True) + np.finfo(np.float32).eps)
    W_dec = W_dec.astype(np.float32)
    b_enc = (0.05 * rng.standard_normal(L) + b_enc_shift).astype(np.float32)
    b_dec = (0.1 * rng.standard_normal(d)).astype(np.float32) if not init_b_dec else np.zeros(d, np.float32)
    threshold = 1000
    since = np.where(rng.random(L) < 0.5, 5000, 0).astype(np.uint64)  # about half the latents start dead
    # data with structure: a few directions plus noise, so top-k picks are not near ties
    X = (rng.standard_normal((steps * acc * B, d)) + 0.3).astype(np.float32)
    if big_row:
        # row 3 of every batch much larger than the rest: it holds far more
        # than 4k of the batch's B k best activations (section 3.1's search)
        X[3::B] *= np.float32(big_row)
    m = len(sizes)
    lv = np.zeros(2 * MAXLEV, np.int64)
    lv[:m] = sizes
    lv[MAXLEV:MAXLEV + len(ks)] = ks
    lw = np.zeros(MAXLEV)
    lw[:len(weights)] = weights

    with tempfile.TemporaryDirectory() as tmp:
        fin, fout = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
        with open(fin, "wb") as f:
            f.write(struct.pack("<16q", 0x4C534145, 2, d, L, k, int(multi), 1, acc, steps, B, int(init_b_dec),
                                schedule, warmup, total, threshold, threads))
            f.write(struct.pack("<8q", sae_type, int(row_cap), m, form, int(use_batchtopk), int(k_anneal),
                                k_anneal_start, 0))
            f.write(struct.pack("<4d", auxk_alpha, lr, beta, k_anneal_pct))
            f.write(lv.astype("<i8").tobytes())
            f.write(lw.astype("<f8").tobytes())
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

    def t(a):
        return torch.tensor(a, dtype=t64)

    sae = TypedSae(t(W_enc), t(b_enc), t(W_dec), t(b_dec), k, sae_type=sae_type, multi_topk=multi,
                   row_cap=row_cap, sizes=sizes, ks=ks, weights=weights, use_batchtopk=use_batchtopk, form=form)
    tr = TypedTrainer(sae, lr, auxk_alpha, threshold, acc, warmup, total, schedule,
                      since_fired=torch.tensor(since.astype(np.int64)), init_b_dec=init_b_dec,
                      beta=beta, k_anneal=k_anneal, k_anneal_start=k_anneal_start, k_anneal_pct=k_anneal_pct)
    # self-check: for TopK the section-3 reference must be section 2's TorchSae step
    old = None
    if sae_type == SAE_TOPK and not k_anneal:
        old_sae = TorchSae(t(W_enc), t(b_enc), t(W_dec), t(b_dec), k, multi_topk=multi)
        old = TorchTrainer(old_sae, lr, auxk_alpha, threshold, acc, warmup, total, schedule,
                           since_fired=torch.tensor(since.astype(np.int64)), init_b_dec=init_b_dec)
    names = ["W_enc", "b_enc", "W_dec", "b_dec"]
    worst = {}
    failures = []
    ks_seen, enlarged, taus = [], 0, []

    def check(what, c, t):
        e = rel(c, t)
        worst[what] = max(worst.get(what, 0.0), e)
        if not (e <= TOL):
            failures.append(f"{name}: {what}: relative error {e:.3g} > {TOL}")

    def same(what, c, t):
        if c != t:
            failures.append(f"{name}: {what}: library {c}, reference {t}")

    for s in range(steps):
        did_fire = torch.zeros(L, dtype=torch.bool)
        old_fire = torch.zeros(L, dtype=torch.bool)
        for a in range(acc):
            v = take("<f8", 9 + MAXLEV)
            x = t(X[(s * acc + a) * B:(s * acc + a + 1) * B])
            r = tr.accumulate(x, did_fire)
            where = f"step {s} batch {a}"
            check("fvu", [v[0]], [r["fvu"]])
            check("auxk", [v[1]], [r["auxk"]])
            check("multi_topk_fvu", [v[2]], [r["multi"]])
            check("loss", [v[3]], [r["loss"]])
            same(f"k at {where}", int(v[4]), r["k"])
            ks_seen.append(r["k"])
            if r["tau"] is not None:
                taus.append(r["tau"])
            check("theta (stats)", [v[5]], [r["theta"]])
            check("theta (model)", [v[6]], [r["theta"]])
            if sae_type == SAE_MATRYOSHKA:
                same(f"levels at {where}", int(v[7]), m)
                check("level_fvu", v[9:9 + m], r["level_fvu"])
            if r["rows_enlarged"] is not None:
                same(f"rows_enlarged at {where}", int(v[8]), r["rows_enlarged"])
                enlarged += r["rows_enlarged"]
            if old is not None:
                o = old.accumulate(x, old_fire)
                if max(abs(p - q) / max(abs(q), 1e-300) for p, q in zip((r["fvu"], r["auxk"], r["multi"]), o)) > 1e-12:
                    failures.append(f"{name}: self-check: TypedSae's losses differ from TorchSae's at {where}")
        grads_c = split(take("<f4", N))
        b_dec_c = take("<f4", d)
        check("b_dec before step", b_dec_c, sae.b_dec.detach().numpy())
        for nm, gc, p in zip(names, grads_c, sae.params()):
            check("grad " + nm, gc, p.grad.numpy())
        if old is not None:
            for nm, p, q in zip(names, sae.params(), old.sae.params()):
                if rel(p.grad.numpy(), q.grad.numpy()) > 1e-12:
                    failures.append(f"{name}: self-check: grad {nm} differs from TorchSae's at step {s}")
        lr_c = take("<f8", 1)[0]
        lr_t = tr.apply(acc * B, did_fire)
        check("lr", [lr_c], [lr_t])
        params_c = split(take("<f4", N))
        for nm, pc, p in zip(names, params_c, sae.params()):
            check("param " + nm, pc, p.detach().numpy())
        since_c = take("<u8", L)
        if not np.array_equal(since_c.astype(np.int64), tr.since_fired.numpy()):
            bad = np.flatnonzero(since_c.astype(np.int64) != tr.since_fired.numpy())
            failures.append(f"{name}: dead-latent counters differ at step {s} (latents {bad[:8].tolist()}...)")
        if old is not None:
            old.apply(acc * B, old_fire)
            if not np.array_equal(old.since_fired.numpy(), tr.since_fired.numpy()) or \
                    max(rel(p.detach().numpy(), q.detach().numpy()) for p, q in zip(sae.params(), old.sae.params())) > 1e-12:
                failures.append(f"{name}: self-check: TypedTrainer's step differs from TorchTrainer's at step {s}")
    assert off == len(raw), "driver wrote more than expected"
    if k_anneal and len(set(ks_seen)) < 4:
        failures.append(f"{name}: the case does not anneal: k per batch {ks_seen}")
    if big_row and not enlarged:
        failures.append(f"{name}: no row needed more than 4k of the batch's picks")
    if b_enc_shift and min(taus) > 0:
        failures.append(f"{name}: S never held a zero")
    summary = " ".join(f"{k}={v:.1e}" for k, v in sorted(worst.items())
                       if k.startswith(("grad", "param", "fvu", "auxk", "multi", "theta", "level", "loss")) and v > 0)
    extra = (f" k {ks_seen}" if k_anneal else "") + (f" rows enlarged {enlarged}" if enlarged else "")
    print(f"  {name}: worst relative errors: {summary}{extra}")
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
        # the other SAE types (docs/math.md, section 3); theta is compared per batch
        ("batchtopk auxk", dict(sae_type=SAE_BATCHTOPK, seed=11)),
        ("batchtopk capped", dict(sae_type=SAE_BATCHTOPK, row_cap=True, beta=0.9, seed=12)),
        ("batchtopk acc2", dict(sae_type=SAE_BATCHTOPK, acc=2, seed=43)),
        ("batchtopk row > 4k", dict(sae_type=SAE_BATCHTOPK, big_row=8.0, seed=14)),
        # b_enc - 1.5: about 1% of the activations are positive, fewer than
        # B k, so S holds zeros (tau = 0) and kept zeros count as fired
        ("batchtopk zeros in S", dict(sae_type=SAE_BATCHTOPK, b_enc_shift=-1.5, seed=25)),
        ("nested topk", dict(sae_type=SAE_MATRYOSHKA, sizes=(32, 96, 256), seed=15)),
        ("nested batchtopk", dict(sae_type=SAE_MATRYOSHKA, sizes=(32, 96, 256), use_batchtopk=True, seed=16)),
        ("nested weights", dict(sae_type=SAE_MATRYOSHKA, sizes=(16, 64, 256), weights=(3.0, 0.5, 1.0), seed=17)),
        ("per-level topk", dict(sae_type=SAE_MATRYOSHKA, form=PER_LEVEL, sizes=(32, 96, 256), ks=(2, 4, 8),
                                auxk_alpha=0.0, seed=18)),
        ("per-level batchtopk", dict(sae_type=SAE_MATRYOSHKA, form=PER_LEVEL, sizes=(32, 96, 256), ks=(2, 4, 8),
                                     use_batchtopk=True, weights=(1.0, 2.0, 0.5), auxk_alpha=0.0, seed=19)),
        # the candidate search inside each level's n_j latents (per-level), and
        # with the cap on the one nested selection
        ("per-level batchtopk row > 4k", dict(sae_type=SAE_MATRYOSHKA, form=PER_LEVEL, sizes=(32, 96, 256),
                                              ks=(2, 4, 8), use_batchtopk=True, auxk_alpha=0.0, big_row=8.0,
                                              seed=23)),
        ("nested batchtopk capped row > 4k", dict(sae_type=SAE_MATRYOSHKA, sizes=(32, 96, 256), use_batchtopk=True,
                                                  row_cap=True, big_row=8.0, threads=3, seed=24)),
        # A = floor(0.7 * 5) = 3 of 5 steps. TopK from 30: k_s = 30, 22, 15, 8, 8
        # (the quotients 22/3 and 44/3 are not integers, so the floor is
        # exercised); BatchTopK from min(4k, L) = 32: 32, 24, 16, 8, 8;
        # per-level from 21 to k_3 = 8: 21, 16, 12, 8, 8
        # (TopK with Multi-TopK: min(4 k_s, L) follows k_s; BatchTopK with
        # grad_acc_steps 2: both batches of a window use the step's k_s)
        ("k_anneal topk+multi", dict(k_anneal=True, k_anneal_start=30, k_anneal_pct=0.7, total=5, multi=True,
                                     seed=20)),
        ("k_anneal batchtopk acc2", dict(sae_type=SAE_BATCHTOPK, k_anneal=True, k_anneal_pct=0.7, total=5, acc=2,
                                         seed=21)),
        ("k_anneal per-level", dict(sae_type=SAE_MATRYOSHKA, form=PER_LEVEL, sizes=(32, 96, 256), ks=(2, 4, 8),
                                    k_anneal=True, k_anneal_start=21, k_anneal_pct=0.7, total=5, auxk_alpha=0.0,
                                    seed=22)),
        # the model's k (5) is not k_m (8): per-level anneals from min(4 k_m, L) = 32 to k_m
        ("k_anneal per-level, k != k_m", dict(k=5, sae_type=SAE_MATRYOSHKA, form=PER_LEVEL, sizes=(32, 96, 256),
                                              ks=(2, 4, 8), k_anneal=True, k_anneal_pct=0.7, total=5,
                                              auxk_alpha=0.0, seed=26)),
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
