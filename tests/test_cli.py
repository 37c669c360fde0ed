#!/usr/bin/env python3
"""End-to-end tests of build/lsae and build/encode on a slice of the bundled data.

    python3 tests/test_cli.py [BUILD_DIR]

Trains a small SAE on the first shard of examples/data, then checks what a user
relies on: the run directory's files, metrics.jsonl, eval's numbers, encode's
output against an independent numpy encoder and against examples/encode.c
(from a directory and from a Hugging Face cache layout), features, info,
resume after Ctrl-C giving the same model as an uninterrupted run, and that
every error is one line on stderr with a non-zero exit and leaves no
half-written file. Needs numpy. Exits non-zero on the first failure.
"""

import json
import math
import re
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile

import numpy as np

import testlib
from testlib import check, read_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
LSAE = os.path.join(BUILD, "lsae")
ENCODE = os.path.join(BUILD, "encode")
DATA = os.path.join(ROOT, "examples", "data")
SHARD = os.path.join(DATA, "embeddings", "data-00000.npy")  # rows 0..9999 of texts.txt
TEXTS = os.path.join(DATA, "texts.txt")



def run(args, ok=True, env=None):
    return testlib.run([LSAE] + args, ok, env=env)


def numpy_encode(w, x, k):
    """docs/math.md, section 1, written again in numpy (float64): ReLU(W_enc (x - b_dec) + b_enc), top k."""
    pre = np.maximum((x.astype(np.float64) - w["b_dec"]) @ w["encoder.weight"].T.astype(np.float64) + w["encoder.bias"], 0)
    idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(pre, idx, axis=1)


def one_error_line(p, what, code=None):
    lines = [l for l in p.stderr.split("\n") if l.strip()]
    check(p.returncode != 0, f"{what}: exit status should be non-zero, was 0")
    if code is not None:
        check(p.returncode == code, f"{what}: exit status {p.returncode}, expected {code}")
    check(len(lines) == 1, f"{what}: expected one line on stderr, got {len(lines)}:\n{p.stderr}")
    check(lines[0].startswith("lsae"), f"{what}: message should name the tool: {lines[0]}")
    return lines[0]


# The training cases of the SAE types (batchtopk, matryoshka, k-annealing)
# run by default; LSAE_TEST_SAE_TRAINING=0 leaves them out (everything else
# about the types: files, encode, eval, flags, refusals, is always tested).
SAE_TRAINING = os.environ.get("LSAE_TEST_SAE_TRAINING", "1") == "1"


def numpy_pre(w, x):
    return np.maximum((x.astype(np.float64) - w["b_dec"]) @ w["encoder.weight"].T.astype(np.float64) + w["encoder.bias"], 0)


def retype(src, dst, extra):
    """A copy of the model directory src with cfg.json's keys changed by extra
    (the weights stay; no batchtopk_threshold tensor, so cfg.json's counts)."""
    os.makedirs(dst)
    shutil.copy(os.path.join(src, "sae.safetensors"), dst)
    cfg = json.load(open(os.path.join(src, "cfg.json")))
    cfg.update(extra)
    json.dump(cfg, open(os.path.join(dst, "cfg.json"), "w"))


def test_sae_types(tmp, runA, x, texts0, train):
    n, d = x.shape
    L = 2 * d
    w = read_safetensors(os.path.join(runA, "sae.safetensors"))
    pre = numpy_pre(w, x)
    # ---- an uncapped BatchTopK model: every z > 0 and z >= theta, any number a row.
    # theta in the middle of a wide gap near the 8th best of a typical row
    vals = np.sort(pre[pre > 0])
    at = np.searchsorted(vals, np.median(np.sort(pre, axis=1)[:, -8]))
    g = at - 500 + np.argmax(np.diff(vals[at - 500:at + 500]))
    theta = float(np.float32(0.5 * (vals[g] + vals[g + 1])))
    btk = os.path.join(tmp, "btk")
    retype(runA, btk, {"sae_type": "BATCHTOPK", "batchtopk_threshold": theta, "batchtopk_row_cap": False})
    keep = (pre > 0) & (pre >= theta)
    counts = keep.sum(1)
    check(counts.max() > 8 and counts.min() < 8, f"rows keep {counts.min()}..{counts.max()} latents")
    info = json.loads(run(["info", btk, "--json"]).stdout)
    check(info["sae_type"] == "batchtopk" and abs(info["batchtopk_threshold"] - theta) < 1e-9 and "uncapped" in info["sae_type_text"],
          f"info names the type and threshold: {info['sae_type_text']}")
    enc = os.path.join(tmp, "btk_enc")
    run(["encode", btk, SHARD, "-o", enc])
    ti, ta = np.load(os.path.join(enc, "top_indices.npy")), np.load(os.path.join(enc, "top_acts.npy"))
    check(ti.shape == (n, counts.max()), f"the .npy pair is as wide as the widest row: {ti.shape}, {counts.max()}")
    ok_rows = sum(set(ti[i][ta[i] > 0].tolist()) == set(np.nonzero(keep[i])[0].tolist()) for i in range(n))
    check(ok_rows == n, f"encode keeps z >= theta as numpy does on {ok_rows} of {n} rows")
    check(np.abs(np.where(ta > 0, ta - np.take_along_axis(pre, ti, 1), 0)).max() < 1e-4, "batchtopk acts match numpy")
    jl = os.path.join(tmp, "btk.jsonl")
    run(["encode", btk, SHARD, "-o", jl, "--max-rows", "200"])
    rows = [json.loads(l) for l in open(jl)]
    check([len(r["top_indices"]) for r in rows] == counts[:200].tolist(), "JSONL rows are as long as their counts")
    p = run(["encode", btk, SHARD, "-o", jl, "--k", "4"], ok=False)
    check("batchtopk" in one_error_line(p, "--k on an uncapped batchtopk model", 2).lower(), "--k refused, naming the type")
    ev = json.loads(run(["eval", btk, SHARD, "--json"]).stdout)
    check(abs(ev["l0"] - counts.mean()) < 1e-6, f"eval's L0 is the mean count: {ev['l0']} vs {counts.mean()}")
    xh = np.zeros((n, d)) + w["b_dec"]
    for i in range(n):
        idx = np.nonzero(keep[i])[0]
        xh[i] += pre[i, idx] @ w["W_dec"][idx].astype(np.float64)
    e2 = ((x - xh) ** 2).sum()
    tv = ((x - x.mean(0)) ** 2).sum()
    check(abs(ev["fvu"] - e2 / tv) < 1e-4, f"batchtopk eval fvu {ev['fvu']} vs numpy {e2 / tv}")
    p = subprocess.run([ENCODE, btk, SHARD, "4"], capture_output=True, text=True)
    a, b = p.stdout.split("top_acts = ")
    check(json.loads(a.split("top_indices = ")[1]) == [ti[i][:counts[i]].tolist() for i in range(4)], "encode.c = lsae encode for batchtopk")
    p = run(["features", btk, SHARD, "--texts", texts0, "--latents", "0-3", "--top", "3", "--json"])
    fl = [json.loads(l) for l in p.stdout.strip().split("\n")]
    check([f["fires"] for f in fl] == keep[:, :4].sum(0).tolist(), "features counts batchtopk fires")
    # ---- capped: the best k of those, zero-padded
    capd = os.path.join(tmp, "btk_cap")
    retype(runA, capd, {"sae_type": "batchtopk", "batchtopk_threshold": theta})  # latent-sae's file: no row_cap key, capped
    run(["encode", capd, SHARD, "-o", enc + "_cap"])
    tc, ac = np.load(os.path.join(enc + "_cap", "top_indices.npy")), np.load(os.path.join(enc + "_cap", "top_acts.npy"))
    check(tc.shape == (n, 8) and ((ac > 0).sum(1) == np.minimum(counts, 8)).all(), "capped: min(count, k) kept a row")
    check((np.where(ac > 0, tc, -1) == np.where(ta[:, :8] > 0, ti[:, :8], -1)).all(), "capped = the uncapped's best k")
    # ---- per-level matryoshka: encodes the last level's k (12 here, not k = 8)
    mat = os.path.join(tmp, "mat")
    retype(runA, mat, {"sae_type": "MATRYOSHKA", "matryoshka_sizes": f"{L // 4},{L}", "matryoshka_ks": "4,12", "matryoshka_loss_weights": ""})
    run(["encode", mat, SHARD, "-o", enc + "_mat"])
    tm = np.load(os.path.join(enc + "_mat", "top_indices.npy"))
    idx_np, _ = numpy_encode(w, x, 12)
    check(tm.shape == (n, 12) and (np.sort(tm, 1) == np.sort(idx_np, 1)).mean() > 0.99, "per-level matryoshka encodes its last k")
    check("per-level" in run(["info", mat]).stdout, "info names the matryoshka form")
    ev = json.loads(run(["eval", mat, SHARD, "--json", "--max-rows", "500"]).stdout)
    check(abs(ev["l0"] - 12) < 0.5, f"matryoshka eval L0 {ev['l0']}")
    # ---- refusals name the type
    for t in ("gated", "jumprelu", "lista"):
        bad = os.path.join(tmp, "bad_" + t)
        retype(runA, bad, {"sae_type": t.upper()})
        check(t in one_error_line(run(["info", bad], ok=False), f"a {t} model", 1).lower(), f"a {t} model is refused by name")
    p = run(["train", "--data", SHARD, "--sae-type", "gated", "--out", os.path.join(tmp, "g")], ok=False)
    check("gated" in one_error_line(p, "train --sae-type gated", 2), "train refuses gated by name")
    for args, word in ((["--matryoshka-sizes", "64,768"], "--sae-type matryoshka"),
                       (["--sae-type", "matryoshka"], "--matryoshka-sizes"),
                       (["--sae-type", "matryoshka", "--matryoshka-sizes", "192,768", "--matryoshka-form", "per-level"], "--matryoshka-ks"),
                       (["--sae-type", "matryoshka", "--matryoshka-sizes", "192,768", "--matryoshka-form", "diagonal"], "diagonal"),
                       (["--sae-type", "batchtopk", "--k-anneal-pct", "0.5"], "--k-anneal"),
                       (["--batchtopk-row-cap"], "batchtopk")):
        p = run(["train", "--data", SHARD, "--expansion-factor", "2", "--out", os.path.join(tmp, "f")] + args, ok=False)
        check(word in one_error_line(p, f"train {' '.join(args)}", 2), f"train {' '.join(args)} names {word}")
    p = run(["train", "--help"])
    for flag in ("--sae-type", "--batchtopk-threshold-beta", "--batchtopk-row-cap", "--matryoshka-sizes", "--matryoshka-ks",
                 "--matryoshka-loss-weights", "--matryoshka-use-batchtopk", "--matryoshka-form", "--k-anneal", "--k-anneal-start",
                 "--k-anneal-pct"):
        check(flag + " " in p.stdout or flag + "\n" in p.stdout, f"train --help lists {flag}")
    if not SAE_TRAINING:
        print("test_cli: training of the SAE types skipped (LSAE_TEST_SAE_TRAINING=0)")
        return
    # ---- training each type: files, run.json, resume
    cases = {
        "batchtopk": ["--sae-type", "batchtopk"],
        "batchtopk_cap_anneal": ["--sae-type", "batchtopk", "--batchtopk-row-cap", "--k-anneal", "--k-anneal-pct", "0.5"],
        "nested": ["--sae-type", "matryoshka", "--matryoshka-sizes", f"{L // 4},{L // 2},{L}", "--matryoshka-loss-weights", "1,1,2"],
        "per_level": ["--sae-type", "matryoshka", "--matryoshka-form", "per-level", "--matryoshka-sizes", f"{L // 4},{L}",
                      "--matryoshka-ks", "4,8", "--matryoshka-use-batchtopk"],
        "topk_anneal": ["--k-anneal"],
    }
    for name, args in cases.items():
        out = os.path.join(tmp, "t_" + name)
        run(["train"] + train + ["--save-every", "30", "--out", out] + args)
        cfg = json.load(open(os.path.join(out, "cfg.json")))
        rj = json.load(open(os.path.join(out, "run.json")))
        m = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
        if "anneal" in name:
            # k falls from 4 k to k over the first half, so the fvu may rise
            # while it falls: compare from the step where k reached its end
            ks_ = [r["k"] for r in m]
            check(ks_[0] == 32 and ks_[-1] == 8 and all(a >= b for a, b in zip(ks_, ks_[1:])), f"{name}: k anneals 32 -> 8: {ks_[:3]}...{ks_[-3:]}")
            m0 = next(r for r in m if r["k"] == 8)
        else:
            m0 = m[0]
        check(0 < m[-1]["fvu"] < 1 and m[-1]["fvu"] < m0["fvu"], f"{name}: fvu falls {m0['fvu']} -> {m[-1]['fvu']}")
        want_type = {"batchtopk": "BATCHTOPK", "batchtopk_cap_anneal": "BATCHTOPK", "nested": "MATRYOSHKA", "per_level": "MATRYOSHKA",
                     "topk_anneal": "TOPK"}[name]
        check(cfg["sae_type"] == want_type, f"{name}: cfg.json sae_type {cfg.get('sae_type')}")
        check(rj["sae_type"] == args[1] if args[0] == "--sae-type" else rj["sae_type"] == "topk", f"{name}: run.json keeps the type")
        if "batchtopk" in name or name == "per_level":
            st = read_safetensors(os.path.join(out, "sae.safetensors"))
            check("batchtopk_threshold" in st and float(st["batchtopk_threshold"]) > 0, f"{name}: a learned threshold in the tensor")
        if name == "per_level":
            check(rj["auxk_alpha"] == 0 and cfg["matryoshka_ks"] == "4,8", f"{name}: no AuxK, ks kept")
        if "anneal" in name:
            check(cfg["k_anneal"] is True and rj["k_anneal"] is True, f"{name}: k_anneal recorded")
        ev = json.loads(run(["eval", out, SHARD, "--json", "--max-rows", "1000"]).stdout)
        check(0 < ev["fvu"] < 1, f"{name}: eval fvu {ev['fvu']}")
        if name == "nested":
            check_levels(out, L)
        # Ctrl-C after the first checkpoint, then --resume (theta, k's schedule
        # and the type from run.json and the checkpoint): the same model, bit for bit
        proc = subprocess.Popen([LSAE, "train"] + train + ["--save-every", "30", "--out", out + "_r"] + args,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if "saved checkpoint at step 30" in line:
                proc.send_signal(signal.SIGINT)
                break
        proc.communicate()
        check(proc.returncode == 130, f"{name}: Ctrl-C exits 130")
        run(["train", "--resume", out + "_r", "--threads", "2"])
        ra, rb = read_safetensors(os.path.join(out, "sae.safetensors")), read_safetensors(os.path.join(out + "_r", "sae.safetensors"))
        check(set(ra) == set(rb) and all(np.array_equal(ra[k_], rb[k_]) for k_ in ra), f"{name}: resumed = uninterrupted, bit for bit")


def check_levels(out, L):
    """lsae levels on a trained nested Matryoshka model: under each coarse
    latent, each later level lists the latents of its band, among those that
    fire on the scanned rows, with the largest decoder cosine, recomputed here
    in float64 from sae.safetensors and numpy's own encode of those rows"""
    p = run(["levels", out, SHARD, "--coarse", "3", "--children", "2", "--top", "2", "--max-rows", "2000"])
    w = read_safetensors(os.path.join(out, "sae.safetensors"))
    W = w["W_dec"].astype(np.float64)
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    x = np.load(SHARD)[:2000]
    idx, val = numpy_encode(w, x, 8)
    fired = np.zeros(L, bool)
    fired[np.unique(idx[val > 0])] = True
    bands = [(0, L // 4), (L // 4, L // 2), (L // 2, L)]
    parents = [int(t) for t in re.findall(r"^level 1 latent (\d+):", p.stdout, re.M)]
    check(len(parents) == 3 and all(q < L // 4 for q in parents), f"levels: 3 coarse latents of the first band: {parents}")
    blocks = re.split(r"^level 1 latent ", p.stdout, flags=re.M)[1:]
    for parent, block in zip(parents, blocks):
        for lev, (b0, b1) in enumerate(bands[1:], start=2):
            sect = block.split(f"level {lev} (latents {b0}..{b1 - 1}), closest:")[1].split("level ")[0]
            got = [int(t) for t in re.findall(r"latent (\d+) \(decoder cosine", sect)]
            cand = [l for l in range(b0, b1) if fired[l]]
            cs = U[cand] @ U[parent]
            want = [cand[i] for i in np.argsort(-cs, kind="stable")[:2]]
            check(got == want, f"levels: latent {parent}, level {lev}: children {got}, numpy {want}")
    p = run(["levels", os.path.join(os.path.dirname(out), "runA"), SHARD], ok=False)
    check("matryoshka" in one_error_line(p, "levels on a TopK model", 1).lower(), "levels refuses a TopK model, naming the type")


TRAIN = ["--data", SHARD, "--texts", None, "--k", "8", "--expansion-factor", "2", "--batch-size", "128",
         "--max-samples", "7680", "--lr-warmup-steps", "5", "--dead-feature-threshold", "2000",
         "--save-every", "10", "--threads", "2", "--seed", "7"]


def main():
    tmp = tempfile.mkdtemp(prefix="lsae-test-")
    try:
        # texts for the first shard: its 10,000 lines
        texts0 = testlib.texts_of_first_shard(TEXTS, tmp)
        with open(texts0, encoding="utf-8") as f:
            lines = f.read().split("\n")
        train = [a if a is not None else texts0 for a in TRAIN]
        x = np.load(SHARD).astype(np.float32)
        n, d = x.shape

        # ---- train: 7680 samples / 128 = 60 optimizer steps
        runA = os.path.join(tmp, "runA")
        p = run(["train"] + train + ["--out", runA])
        for name in ("cfg.json", "sae.safetensors", "run.json", "metrics.jsonl", "checkpoint/state.bin",
                     "checkpoint/cfg.json", "checkpoint/sae.safetensors"):
            check(os.path.isfile(os.path.join(runA, name)), f"train wrote {name}")
        check("done: 60 optimizer steps" in p.stdout, f"summary names the steps: {p.stdout}")
        check("final fvu" in p.stdout and runA in p.stdout, "summary gives the final fvu and the model's place")
        # the int8 pre-pass on every batch trains the same model, bit for bit
        runP = os.path.join(tmp, "runP")
        run(["train"] + train + ["--out", runP, "--int8-prepass", "on"])
        check(open(os.path.join(runA, "sae.safetensors"), "rb").read() == open(os.path.join(runP, "sae.safetensors"), "rb").read(),
              "train --int8-prepass on: sae.safetensors byte for byte as without it")
        shutil.rmtree(runP)
        p = run(["train"] + train + ["--out", runP, "--int8-prepass", "sometimes"], ok=False)
        check("--int8-prepass" in one_error_line(p, "train with a bad --int8-prepass", 2), "names --int8-prepass")
        check(not os.path.exists(runP), "a bad --int8-prepass makes no run directory")
        cfg = json.load(open(os.path.join(runA, "cfg.json")))
        check(cfg["d_in"] == d and cfg["k"] == 8 and cfg["num_latents"] == 2 * d, f"cfg.json {cfg}")
        m = [json.loads(l) for l in open(os.path.join(runA, "metrics.jsonl"))]
        check([r["step"] for r in m] == list(range(1, 61)), "metrics.jsonl has one line per optimizer step")
        for r in m:
            for key in ("fvu", "auxk", "dead_pct", "lr", "samples_per_s", "samples", "loss"):
                check(key in r and isinstance(r[key], (int, float)) and math.isfinite(r[key]), f"metric {key} in {r}")
        check(0 < m[-1]["fvu"] < 1 and np.mean([r["fvu"] for r in m[-5:]]) < m[0]["fvu"] - 0.05,
              f"fvu falls: {m[0]['fvu']} -> {m[-1]['fvu']}")
        check(m[-1]["samples"] == 7680, "samples counted")
        check(m[0]["lr"] == 0 and abs(m[-1]["lr"]) < m[10]["lr"], "lr warms up then decays")
        run_json = json.load(open(os.path.join(runA, "run.json")))
        check(run_json["total_steps"] == 60 and run_json["texts"] == texts0, "run.json records the run")

        # ---- eval
        p = run(["eval", runA, SHARD, "--json"])
        ev = json.loads(p.stdout)
        w = read_safetensors(os.path.join(runA, "sae.safetensors"))
        L = 2 * d
        check(ev["rows"] == n and ev["num_latents"] == L and ev["k"] == 8, f"eval header {ev}")
        check(0 < ev["fvu"] < 1 and 0 < ev["fvu_per_dim"] < 1.5, f"eval fvu {ev['fvu']} {ev['fvu_per_dim']}")
        check(0 < ev["l0"] <= 8 and ev["mse"] > 0, "eval l0 and mse")
        check(sum(b["latents"] for b in ev["fire_rate_histogram"]) == L, "histogram counts every latent")
        check(ev["fire_rate_histogram"][0]["latents"] == ev["never_fired"], "never-fired bucket")
        check(ev["dead"] is not None and 0 <= ev["dead"] <= L, "dead latents from the checkpoint's counters")
        # the checkpoint is the last step's: its counters give the trainer's own last count
        check(ev["dead"] == m[-1]["n_dead"] and ev["dead_at_step"] == 60, f"dead {ev['dead']} at step {ev['dead_at_step']}: "
              f"the trainer logged {m[-1]['n_dead']} at step 60")
        # the same numbers from numpy
        idx_np, act_np = numpy_encode(w, x, 8)
        xhat = np.zeros((n, d))
        for j in range(8):
            xhat += act_np[:, j:j + 1] * w["W_dec"][idx_np[:, j]]
        xhat += w["b_dec"]
        xd = x.astype(np.float64)
        e2 = ((xd - xhat) ** 2)
        tv = ((xd - xd.mean(0)) ** 2)
        check(abs(ev["fvu"] - e2.sum() / tv.sum()) < 1e-4, f"eval fvu {ev['fvu']} vs numpy {e2.sum() / tv.sum()}")
        vary = tv.sum(0) > 0  # all-MiniLM-L6-v2 has dims that are always 0; they have no fvu
        check(ev["dims_varying"] == vary.sum(), f"eval counts the dims that vary: {ev['dims_varying']}")
        check(abs(ev["fvu_per_dim"] - np.mean(e2.sum(0)[vary] / tv.sum(0)[vary])) < 1e-4, "eval per-dim fvu vs numpy")
        check(abs(ev["mse"] - e2.mean()) < 1e-7, "eval mse vs numpy")
        p = run(["eval", runA, SHARD])
        check("latent-sae 2024" in p.stdout and "global, sparsify 2025" in p.stdout, "eval labels both fvu forms")
        # the same rows as a raw f32 dump and as a named tensor in a .safetensors file
        raw = os.path.join(tmp, "rows.f32")
        x.tofile(raw)
        ev_raw = json.loads(run(["eval", runA, raw, "--raw-dtype", "f32", "--d-in", str(d), "--json"]).stdout)
        check(ev_raw["rows"] == n and ev_raw["fvu"] == ev["fvu"], "eval of a raw dump = eval of the .npy")
        st_path = os.path.join(tmp, "rows.safetensors")
        hdr = json.dumps({"ids": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                          "emb": {"dtype": "F32", "shape": [n, d], "data_offsets": [16, 16 + x.nbytes]}}).encode()
        hdr += b" " * (-len(hdr) % 8)
        with open(st_path, "wb") as f:
            f.write(struct.pack("<Q", len(hdr)) + hdr + np.zeros(4, "<f4").tobytes() + x.astype("<f4").tobytes())
        ev_st = json.loads(run(["eval", runA, st_path, "--tensor", "emb", "--json"]).stdout)
        check(ev_st["fvu"] == ev["fvu"], "eval of a .safetensors tensor = eval of the .npy")
        p = run(["eval", runA, raw, "--raw-dtype", "f32"], ok=False)
        one_error_line(p, "raw dump without --d-in", 2)
        p = run(["eval", runA, SHARD, "--d-in", "768"], ok=False)
        one_error_line(p, "--d-in that disagrees with the file", 1)

        # ---- encode: the .npy pair against numpy, JSONL against the pair
        enc = os.path.join(tmp, "enc")
        run(["encode", runA, SHARD, "-o", enc])
        ti = np.load(os.path.join(enc, "top_indices.npy"))
        ta = np.load(os.path.join(enc, "top_acts.npy"))
        check(ti.shape == (n, 8) and ti.dtype == np.int32 and ta.dtype == np.float32, f"npy shapes {ti.shape} {ti.dtype}")
        check(np.all(np.diff(ta, axis=1) <= 0), "activations sorted largest first")
        check(np.abs(ta - act_np).max() < 1e-4, f"acts match numpy: {np.abs(ta - act_np).max()}")
        same = (ti == idx_np).all(1)
        # a row may differ only where two candidates tie within float32 rounding
        check(same.mean() > 0.99, f"indices match numpy on {same.mean():.4f} of rows")
        # --int8-prepass: the int8 screen on every call, or never, gives the
        # same files as the library's choice (float32 at this small shape)
        for mode in ("on", "off"):
            run(["encode", runA, SHARD, "-o", enc + "_" + mode, "--int8-prepass", mode])
            for f in ("top_indices.npy", "top_acts.npy"):
                check(open(os.path.join(enc, f), "rb").read() == open(os.path.join(enc + "_" + mode, f), "rb").read(),
                      f"encode --int8-prepass {mode}: {f} byte for byte as without it")
        p = run(["encode", runA, SHARD, "-o", enc + "_bad", "--int8-prepass", "fast"], ok=False)
        check("--int8-prepass" in one_error_line(p, "bad --int8-prepass", 2), "names --int8-prepass")
        check(not os.path.exists(enc + "_bad"), "a bad --int8-prepass writes nothing")
        jl = os.path.join(tmp, "enc.jsonl")
        run(["encode", runA, SHARD, "-o", jl, "--max-rows", "50"])
        rows = [json.loads(l) for l in open(jl)]
        check(len(rows) == 50 and all(r["top_indices"] == ti[i].tolist() for i, r in enumerate(rows)), "JSONL = npy indices")
        # %.9g round-trips a float32 exactly
        check(all(np.array_equal(np.array(r["top_acts"], dtype=np.float32), ta[i]) for i, r in enumerate(rows)), "JSONL = npy acts")

        # ---- examples/encode.c, from a directory and from a Hugging Face cache layout
        def parse_encode(out):
            ns = {}
            a, b = out.split("top_acts = ")
            ns["idx"] = np.array(json.loads(a.split("top_indices = ")[1]))
            ns["acts"] = np.array(json.loads(b), dtype=np.float64)
            return ns
        p = subprocess.run([ENCODE, runA, SHARD, "4"], capture_output=True, text=True)
        check(p.returncode == 0, f"encode.c runs: {p.stderr}")
        e = parse_encode(p.stdout)
        check((e["idx"] == ti[:4]).all() and np.array_equal(e["acts"].astype(np.float32), ta[:4]), "encode.c = lsae encode")
        hub = os.path.join(tmp, "hub")
        snap = os.path.join(hub, "models--tester--demo-sae", "snapshots", "0123abcd", "8_2")
        os.makedirs(snap)
        os.makedirs(os.path.join(hub, "models--tester--demo-sae", "refs"))
        with open(os.path.join(hub, "models--tester--demo-sae", "refs", "main"), "w") as f:
            f.write("0123abcd")
        for name in ("cfg.json", "sae.safetensors"):
            shutil.copy(os.path.join(runA, name), snap)
        env = dict(os.environ, HF_HUB_CACHE=hub)
        p = subprocess.run([ENCODE, "tester/demo-sae/8_2", SHARD, "4"], capture_output=True, text=True, env=env)
        check(p.returncode == 0, f"encode.c loads from the HF cache: {p.stderr}")
        check((parse_encode(p.stdout)["idx"] == ti[:4]).all(), "encode.c from the HF cache = from the directory")
        jl2 = os.path.join(tmp, "hf.jsonl")
        run(["encode", "hf:tester/demo-sae/8_2", SHARD, "-o", jl2, "--max-rows", "4"], env=env)
        check([json.loads(l)["top_indices"] for l in open(jl2)] == ti[:4].tolist(), "lsae encode hf:OWNER/NAME/SUB")
        p = run(["info", "hf:tester/demo-sae/missing"], ok=False, env=env)
        one_error_line(p, "hf: model not in the cache", 1)

        # ---- features
        p = run(["features", runA, SHARD, "--texts", texts0, "--latents", "0-4,7", "--top", "5", "--json"])
        feats = [json.loads(l) for l in p.stdout.strip().split("\n")]
        check([f["latent"] for f in feats] == [0, 1, 2, 3, 4, 7], "features lists the chosen latents")
        fires = np.zeros(L, dtype=np.int64)
        np.add.at(fires, ti[ta > 0], 1)
        for f in feats:
            check(f["fires"] == fires[f["latent"]], f"fire count of latent {f['latent']}")
            acts = [t["act"] for t in f["top"]]
            check(acts == sorted(acts, reverse=True) and len(acts) == min(5, f["fires"]), "top rows sorted")
            for t in f["top"]:
                check(t["text"] == lines[t["row"]], "text of the row")
                check(f["latent"] in ti[t["row"]].tolist(), "the row has the latent in its top-k")
        p = run(["features", runA, SHARD, "--texts", texts0, "--sample", "3", "--top", "4"])
        check(p.stdout.count("latent ") == 3 and "active on" in p.stdout, "features --sample prints 3 latents")

        # ---- info: same weights in the run and its checkpoint, same checksum
        i1 = json.loads(run(["info", runA, "--json"]).stdout)
        i2 = json.loads(run(["info", os.path.join(runA, "checkpoint"), "--json"]).stdout)
        check(i1["checksum"] == i2["checksum"] and i1["checksum"].startswith("fnv1a64:"), "info checksum")
        check(abs(i1["decoder_row_norm"]["min"] - 1) < 1e-4 and abs(i1["decoder_row_norm"]["max"] - 1) < 1e-4, "unit decoder rows")
        check(i1["num_latents"] == L and i1["k"] == 8, "info shape")
        p = run(["info", runA])
        check("encoder.weight" in p.stdout and "F32" in p.stdout and "checksum" in p.stdout, "info text")

        # ---- resume: Ctrl-C after the first checkpoint, then --resume, gives runA's model exactly
        runB = os.path.join(tmp, "runB")
        proc = subprocess.Popen([LSAE, "train"] + train + ["--out", runB], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:
            if "saved checkpoint at step 10" in line:
                proc.send_signal(signal.SIGINT)
                break
        out, _ = proc.communicate()
        check(proc.returncode == 130, f"Ctrl-C exits 130 (got {proc.returncode}): {out}")
        check("interrupted at step" in out and "--resume" in out, f"Ctrl-C says how to continue: {out}")
        stopped_at = int(out.split("interrupted at step ")[1].split()[0])
        check(10 <= stopped_at < 60, f"stopped mid-run at {stopped_at}")
        mB = [json.loads(l)["step"] for l in open(os.path.join(runB, "metrics.jsonl"))]
        check(mB[-1] == stopped_at, "metrics reach the checkpoint")
        p = run(["train", "--resume", runB, "--threads", "2"])
        check(f"from step {stopped_at}" in p.stderr, "resume says where it starts")
        mB = [json.loads(l) for l in open(os.path.join(runB, "metrics.jsonl"))]
        check([r["step"] for r in mB] == list(range(1, 61)), "resumed metrics: every step once")
        wa = read_safetensors(os.path.join(runA, "sae.safetensors"))
        wb = read_safetensors(os.path.join(runB, "sae.safetensors"))
        check(all(np.array_equal(wa[k_], wb[k_]) for k_ in wa), "resumed run = uninterrupted run, bit for bit")
        check([r["fvu"] for r in mB] == [r["fvu"] for r in m], "resumed fvu curve = uninterrupted curve")
        p = run(["train", "--resume", runB, "--k", "4"], ok=False)
        one_error_line(p, "resume with a changed --k", 2)
        # --stop-at-step: the same stop at a step fixed in advance, exit 0, twice
        runS = os.path.join(tmp, "runS")
        p = run(["train"] + train + ["--out", runS, "--stop-at-step", "17"])
        check("stopped after step 17 of 60 (--stop-at-step); checkpoint saved" in p.stdout and "--resume" in p.stdout,
              f"--stop-at-step 17 stops there and says how to continue: {p.stdout}")
        check(json.loads(open(os.path.join(runS, "metrics.jsonl")).readlines()[-1])["step"] == 17, "--stop-at-step: metrics end at step 17")
        p = run(["train", "--resume", runS, "--stop-at-step", "33"])
        check("stopped after step 33 of 60" in p.stdout and "from step 17" in p.stderr, f"--stop-at-step again on resume: {p.stdout}")
        p = run(["train", "--resume", runS, "--stop-at-step", "20"], ok=False)
        check("--stop-at-step 20: the run is already at step 33" in one_error_line(p, "--stop-at-step behind the checkpoint", 1),
              "--stop-at-step behind the checkpoint is refused")
        run(["train", "--resume", runS])
        wsr = read_safetensors(os.path.join(runS, "sae.safetensors"))
        check(all(np.array_equal(wa[k_], wsr[k_]) for k_ in wa), "stopped at 17 and 33, resumed: the uninterrupted run, bit for bit")

        # ---- --init: starts from runA's weights and keeps its b_dec
        runC = os.path.join(tmp, "runC")
        run(["train", "--data", SHARD, "--init", runA, "--batch-size", "128", "--max-samples", "1280",
             "--lr-warmup-steps", "2", "--save-every", "0", "--out", runC])
        mC = [json.loads(l) for l in open(os.path.join(runC, "metrics.jsonl"))]
        check(mC[0]["fvu"] < m[0]["fvu"] - 0.1, f"--init starts trained: {mC[0]['fvu']} vs fresh {m[0]['fvu']}")
        check(json.load(open(os.path.join(runC, "cfg.json")))["num_latents"] == L, "--init keeps the shape")

        # ---- errors: one line, non-zero, nothing half-written
        p = run(["eval", runA, os.path.join(tmp, "missing.npy")], ok=False)
        check("missing.npy" in one_error_line(p, "missing data file", 1), "names the missing file")
        p = run(["info", os.path.join(tmp, "no-model")], ok=False)
        one_error_line(p, "missing model", 1)
        wrong = os.path.join(tmp, "wrong.npy")
        np.save(wrong, np.random.default_rng(0).standard_normal((100, d + 16)).astype(np.float32))
        target = os.path.join(tmp, "keep.jsonl")
        with open(target, "w") as f:
            f.write("OLD\n")
        p = run(["encode", runA, wrong, "-o", target], ok=False)
        msg = one_error_line(p, "wrong width", 1)
        check(str(d) in msg and str(d + 16) in msg, f"wrong-width message gives both widths: {msg}")
        check(open(target).read() == "OLD\n", "a failed encode leaves the old file as it was")
        nanfile = os.path.join(tmp, "nan.npy")
        xn = x[:5000].copy()
        xn[4321, 3] = np.nan
        np.save(nanfile, xn)
        p = run(["encode", runA, nanfile, "-o", target], ok=False)
        check("4321" in one_error_line(p, "NaN row mid-file", 1), "NaN row named")
        check(open(target).read() == "OLD\n", "an encode failing after 2 chunks leaves the old file whole")
        check(not [f for f in os.listdir(tmp) if f.endswith(".tmp")], "no temporary files left behind")
        ev2 = json.loads(run(["eval", runA, nanfile, "--json"]).stdout)
        check(ev2["rows"] == 4999 and ev2["rows_skipped"] == 1, "eval leaves NaN rows out and counts them")
        p = run(["train", "--data", SHARD, "--bogus-flag"], ok=False)
        check("--bogus-flag" in one_error_line(p, "bad flag", 2), "names the bad flag")
        p = run(["train", "--data", SHARD, "--batch-size", "many"], ok=False)
        one_error_line(p, "bad number", 2)
        p = run(["train", "--k", "8"], ok=False)
        one_error_line(p, "train without --data", 2)
        p = run(["train"] + train + ["--out", runA], ok=False)
        check("--resume" in one_error_line(p, "existing run directory", 1), "points at --resume")
        p = run(["train", "--data", SHARD, "--k", "5000", "--expansion-factor", "2", "--out", os.path.join(tmp, "bigk")], ok=False)
        one_error_line(p, "k larger than the latents", 1)
        p = run(["train", "--data", SHARD, "--device", "cuda", "--out", os.path.join(tmp, "cuda")], ok=False)
        one_error_line(p, "cuda without a CUDA build")
        p = run(["features", runA, SHARD, "--texts", os.path.join(DATA, "packages.tsv")], ok=False)
        one_error_line(p, "texts file of the wrong length", 1)
        p = run(["frobnicate"], ok=False)
        one_error_line(p, "unknown command", 2)
        p = run(["train", "--help"])
        for flag in ("--batch-size", "--grad-acc-steps", "--k", "--expansion-factor", "--num-latents", "--lr",
                     "--lr-warmup-steps", "--lr-schedule", "--auxk-alpha", "--dead-feature-threshold", "--multi-topk",
                     "--save-every", "--epochs", "--max-samples", "--out", "--resume", "--init", "--seed",
                     "--no-shuffle", "--threads", "--d-in", "--raw-dtype", "--tensor", "--device", "--int8-prepass"):
            check(flag + " " in p.stdout or flag + "\n" in p.stdout, f"train --help lists {flag}")
        check(p.stdout.count("(default: ") >= 20, "train --help gives defaults")

        # ---- report (the page itself is checked in a browser by tests/test_report.py)
        p = run(["report", runA])
        html = open(os.path.join(runA, "report.html"), encoding="utf-8").read()
        check(html.count("<svg class=\"chart\"") == 5 and "lsae-data" in html, "report has 5 charts and the browser data")
        check("http://" not in html and "https://" not in html, "report loads nothing from the network")
        # ---- the SAE types
        test_sae_types(tmp, runA, x, texts0, train)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_cli: {testlib.passed} passed, 0 failed")


if __name__ == "__main__":
    main()
