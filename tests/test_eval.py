#!/usr/bin/env python3
"""lsae eval's metrics against numpy, on the bundled real embeddings.

    python3 tests/test_eval.py [BUILD_DIR]

Trains a small SAE on the first shard of examples/data with build/lsae, runs
`lsae eval --json`, and computes every metric again from its definition in
docs/eval.md with numpy in float64, from the model's sae.safetensors (read
by testlib, not by the library under test) and the .npy data: within 1e-5,
1e-3 for the ranking metrics (recall@10, nDCG@10), exactly for counts. Then
the same with --max-rows and a NaN row, a second seed for the queries, and
the text output. Needs numpy. Exits non-zero on the first failure.
"""

import json
import math
import os
import shutil
import sys
import tempfile
from fractions import Fraction

import numpy as np

import testlib
from testlib import check, read_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
LSAE = os.path.join(BUILD, "lsae")
SHARD = os.path.join(ROOT, "examples", "data", "embeddings", "data-00000.npy")
NN = 10

KEYS = ("fvu", "explained_variance", "mse", "cossim", "l2_ratio", "relative_reconstruction_bias", "l0", "l0_histogram",
        "frac_alive", "dead_fraction", "freq_over_1pct", "freq_over_10pct", "log10_density_histogram",
        "max_decoder_cossim", "neighbour_recall_at_10", "neighbour_ndcg_at_10", "neighbour_queries")


def run(args, ok=True):
    return testlib.run([LSAE] + args, ok)


def close(a, b, tol, what):
    check(a is not None and abs(a - b) <= tol, f"{what}: lsae {a}, numpy {b} (tolerance {tol})")


def expected(w, x, k, query_rows, idx32):
    """Every metric of docs/eval.md from its definition, float64."""
    x = x.astype(np.float64)
    idx32 = np.asarray(idx32)
    We, be, Wd, bd = (w[n].astype(np.float64) for n in ("encoder.weight", "encoder.bias", "W_dec", "b_dec"))
    n, d = x.shape
    L = We.shape[0]
    # the model (docs/math.md, section 1): top k of ReLU(W_enc (x - b_dec) + b_enc), decoded
    pre = np.maximum((x - bd) @ We.T + be, 0)
    idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    acts = np.take_along_axis(pre, idx, axis=1)
    # Where the k-th and (k+1)-th pre-activations tie within float32
    # rounding, the library's float32 encoder may keep the other latent: on
    # those rows (and only there, checked) the choice is the encoder's, as
    # `lsae encode` reports it, with its float64 activations.
    diff = np.nonzero((np.sort(idx, 1) != np.sort(idx32, 1)).any(1))[0]
    for r in diff:
        mine, theirs = np.sort(pre[r, idx[r]]), np.sort(pre[r, idx32[r]])
        check(np.all(np.abs(mine - theirs) <= 1e-5 * max(mine[-1], 1e-30)), f"row {r}: lsae's top-k {idx32[r]} is not a near-tie of {idx[r]}")
        idx[r] = idx32[r]
        acts[r] = pre[r, idx32[r]]
    check(len(diff) <= n // 500, f"{len(diff)} rows encoded differently from float64: more than near-ties")
    xh = np.einsum("rk,rkd->rd", acts, Wd[idx]) + bd
    e = {}
    # section 1: fvu, both forms, and explained variance
    err = ((x - xh) ** 2)
    tv = ((x - x.mean(0)) ** 2)
    e["fvu"] = err.sum() / tv.sum()
    vary = tv.sum(0) > 0
    e["fvu_per_dim"] = np.mean(err.sum(0)[vary] / tv.sum(0)[vary])
    e["dims_varying"] = int(vary.sum())
    e["explained_variance"] = 1 - err.sum(1).mean() / tv.sum(1).mean()
    e["mse"] = err.mean()
    # section 2: per row
    nx, nh = np.linalg.norm(x, axis=1), np.linalg.norm(xh, axis=1)
    e["cossim"] = np.mean((x * xh).sum(1) / (nx * nh))
    e["l2_ratio"] = np.mean(nh / nx)
    e["relative_reconstruction_bias"] = np.mean(nh ** 2) / np.mean((x * xh).sum(1))
    # section 3: latents
    active = acts > 0
    l0 = active.sum(1)
    e["l0"] = l0.mean()
    e["l0_histogram"] = np.bincount(l0, minlength=k + 1).tolist()
    fires = np.bincount(idx[active], minlength=L)
    e["fires"] = fires.tolist()
    e["frac_alive"] = np.mean(fires > 0)
    e["dead_fraction"] = np.mean(fires == 0)
    e["never_fired"] = int((fires == 0).sum())
    e["freq_over_1pct"] = np.mean(fires / n > 0.01)
    e["freq_over_10pct"] = np.mean(fires / n > 0.10)
    # the density histogram: bin floor(log10(fires / n)) + 10, clamped to
    # [0, 9] (bin 9 is [-1, 0], bin 0 everything below -9); the floor taken
    # exactly, with rationals, so that a rate of exactly 10^-e lands in its
    # own decade (a float log10 can round it down)
    hist = [0] * 10
    for f in fires[fires > 0]:
        rate = Fraction(int(f), n)
        dec = math.floor(math.log10(int(f)) - math.log10(n))
        while Fraction(10) ** (dec + 1) <= rate:
            dec += 1
        while Fraction(10) ** dec > rate:
            dec -= 1
        hist[min(max(dec + 10, 0), 9)] += 1
    e["log10_density_histogram"] = {"edges": list(range(-10, 1)), "latents": hist, "never": e["never_fired"]}
    # section 4: decoder cosines, the full L x L matrix (small here)
    U = Wd / np.linalg.norm(Wd, axis=1, keepdims=True)
    G = U @ U.T
    np.fill_diagonal(G, -np.inf)
    mc = G.max(1)
    e["max_decoder_cossim_per_latent"] = mc
    e["max_decoder_cossim"] = {"mean": mc.mean(), "p99": np.percentile(mc, 99)}
    # section 5: neighbours, exact, by cosine, a query not its own neighbour
    q = np.asarray(query_rows)

    def knn(v):
        # in double: the adversarial rows below have neighbours 1e-4 apart
        v = v.astype(np.float64)
        u = v / np.linalg.norm(v, axis=1, keepdims=True)
        s = u[q] @ u.T
        s[np.arange(len(q)), q] = -np.inf
        return np.argsort(-s, axis=1, kind="stable")[:, :NN]

    truth, got = knn(x), knn(xh)
    disc = 1 / np.log2(np.arange(NN) + 2)
    rel = np.array([[g in set(t) for g in gr] for t, gr in zip(truth, got)], dtype=np.float64)
    e["neighbour_recall_at_10"] = rel.sum(1).mean() / NN
    e["neighbour_ndcg_at_10"] = np.mean((rel * disc).sum(1) / disc.sum())
    return e


def lsae_indices(run_dir, path, tmp, max_rows=None):
    out = os.path.join(tmp, "enc")
    run(["encode", run_dir, path, "-o", out] + (["--max-rows", str(max_rows)] if max_rows else []))
    return np.load(os.path.join(out, "top_indices.npy"))


def compare(ev, ex, what):
    for key in ("fvu", "fvu_per_dim", "explained_variance", "mse", "cossim", "l2_ratio", "relative_reconstruction_bias",
                "l0", "frac_alive", "dead_fraction", "freq_over_1pct", "freq_over_10pct"):
        close(ev[key], ex[key], 1e-5, f"{what} {key}")
    for key in ("dims_varying", "never_fired", "l0_histogram", "fires", "log10_density_histogram"):
        check(ev[key] == ex[key], f"{what} {key}: lsae {ev[key]} numpy {ex[key]}"[:600])
    close(ev["max_decoder_cossim"]["mean"], ex["max_decoder_cossim"]["mean"], 1e-5, f"{what} max_decoder_cossim mean")
    close(ev["max_decoder_cossim"]["p99"], ex["max_decoder_cossim"]["p99"], 1e-5, f"{what} max_decoder_cossim p99")
    dev = np.max(np.abs(np.array(ev["max_decoder_cossim_per_latent"]) - ex["max_decoder_cossim_per_latent"]))
    check(dev <= 1e-5, f"{what} max_decoder_cossim_per_latent: largest deviation {dev}")
    close(ev["neighbour_recall_at_10"], ex["neighbour_recall_at_10"], 1e-3, f"{what} recall@10")
    close(ev["neighbour_ndcg_at_10"], ex["neighbour_ndcg_at_10"], 1e-3, f"{what} nDCG@10")


def main():
    tmp = tempfile.mkdtemp(prefix="lsae-eval-test-")
    try:
        x = np.load(SHARD).astype(np.float32)
        n, d = x.shape
        run_dir = os.path.join(tmp, "run")
        run(["train", "--data", SHARD, "--k", "16", "--expansion-factor", "4", "--batch-size", "128", "--max-samples", "7680",
             "--lr-warmup-steps", "5", "--threads", "2", "--seed", "3", "--out", run_dir])
        w = read_safetensors(os.path.join(run_dir, "sae.safetensors"))
        k = json.load(open(os.path.join(run_dir, "cfg.json")))["k"]
        L = w["W_dec"].shape[0]

        # ---- every row of the shard, the default 1,000 queries
        ev = json.loads(run(["eval", run_dir, SHARD, "--json"]).stdout)
        for key in KEYS:
            check(key in ev, f"eval --json has the key {key}")
        check(ev["rows"] == n and ev["num_latents"] == L and ev["k"] == k and ev["d_in"] == d, "eval --json header")
        q = ev["neighbour_query_rows"]
        check(ev["neighbour_queries"] == 1000 and len(q) == 1000 and len(set(q)) == 1000 and q == sorted(q)
              and 0 <= q[0] and q[-1] < n, "1,000 distinct query rows among the evaluated ones, in order")
        idx32 = lsae_indices(run_dir, SHARD, tmp)
        ex = expected(w, x, k, q, idx32)
        compare(ev, ex, "eval")
        check(0 < ev["neighbour_recall_at_10"] < 1 and 0 < ev["max_decoder_cossim"]["mean"] < 1,
              "the metrics are not degenerate on this model")

        # ---- the queries follow --seed, and the same seed gives the same queries
        ev2 = json.loads(run(["eval", run_dir, SHARD, "--json", "--seed", "5", "--queries", "300"]).stdout)
        q2 = ev2["neighbour_query_rows"]
        check(ev2["neighbour_queries"] == 300 and len(set(q2)) == 300 and q2 != q[:300], "--seed 5 --queries 300: other rows")
        ex2 = expected(w, x, k, q2, idx32)
        close(ev2["neighbour_recall_at_10"], ex2["neighbour_recall_at_10"], 1e-3, "seed 5 recall@10")
        close(ev2["neighbour_ndcg_at_10"], ex2["neighbour_ndcg_at_10"], 1e-3, "seed 5 nDCG@10")
        ev3 = json.loads(run(["eval", run_dir, SHARD, "--json", "--seed", "5", "--queries", "300", "--threads", "1"]).stdout)
        check(ev3["neighbour_query_rows"] == q2 and ev3["neighbour_recall_at_10"] == ev2["neighbour_recall_at_10"]
              and ev3["max_decoder_cossim_per_latent"] == ev2["max_decoder_cossim_per_latent"], "one thread gives the same answer")

        # ---- --max-rows, a NaN row left out, --queries 0
        sub = x[:3001].copy()
        sub[1234, 5] = np.nan
        path = os.path.join(tmp, "sub.npy")
        np.save(path, sub)
        ev4 = json.loads(run(["eval", run_dir, path, "--json", "--max-rows", "3000", "--queries", "200"]).stdout)
        check(ev4["rows"] == 2999 and ev4["rows_skipped"] == 1, "--max-rows 3000 with a NaN row: 2999 rows evaluated")
        keep = np.r_[0:1234, 1235:3000]
        q4 = ev4["neighbour_query_rows"]
        check(1234 not in q4 and ev4["neighbour_queries"] == len(q4) and 195 <= len(q4) <= 200, "a NaN row is never a query")
        # query rows are row numbers of the file: the evaluated set is numbered after the NaN row is dropped
        pos = {r: i for i, r in enumerate(keep)}
        ex4 = expected(w, x[keep], k, [pos[r] for r in q4], idx32[keep])
        compare(ev4, ex4, "--max-rows 3000 with a NaN row")
        ev5 = json.loads(run(["eval", run_dir, SHARD, "--json", "--queries", "0", "--max-rows", "500"]).stdout)
        check(ev5["neighbour_queries"] == 0 and ev5["neighbour_recall_at_10"] is None and ev5["neighbour_query_rows"] == [],
              "--queries 0: no neighbour metrics (null)")

        # ---- neighbours against the bound: every row u + 0.01 noise, so the
        # cosines sit within 1e-4 of each other, far inside the int8
        # product's error (about 1e-2): the bounded search must keep nearly
        # every row as a candidate and still find the exact lists (a bound
        # that left out the query or row terms gave other neighbours here)
        rng = np.random.default_rng(11)
        u0 = x[0].astype(np.float64)
        adv = (u0 + 0.01 * np.linalg.norm(u0) / math.sqrt(d) * rng.standard_normal((2500, d))).astype(np.float32)
        path = os.path.join(tmp, "adv.npy")
        np.save(path, adv)
        ev6 = json.loads(run(["eval", run_dir, path, "--json"]).stdout)
        ex6 = expected(w, adv, k, ev6["neighbour_query_rows"], lsae_indices(run_dir, path, tmp))
        compare(ev6, ex6, "near-identical rows")
        # numpy's reconstructions differ from ours in the last bits, which
        # can reorder near-equal neighbours among them; the search through
        # the fp32 product and its own bound (LSAE_EVAL_FP32_BOUND) sees the
        # same reconstructions, so the two exact searches must agree exactly
        os.environ["LSAE_EVAL_FP32_BOUND"] = "1"
        try:
            ev7 = json.loads(run(["eval", run_dir, path, "--json"]).stdout)
        finally:
            del os.environ["LSAE_EVAL_FP32_BOUND"]
        check(ev7["neighbour_query_rows"] == ev6["neighbour_query_rows"] and ev7["neighbour_recall_at_10"] == ev6["neighbour_recall_at_10"]
              and ev7["neighbour_ndcg_at_10"] == ev6["neighbour_ndcg_at_10"],
              f"near-identical rows: the int8 and fp32 bounded searches agree (recall {ev6['neighbour_recall_at_10']} / {ev7['neighbour_recall_at_10']})")

        # ---- the text output names every metric
        p = run(["eval", run_dir, SHARD, "--queries", "100"])
        for label in ("explained variance", "cossim", "l2 ratio", "relative bias", "alive", "fire rate > 1%", "fire rate > 10%",
                      "max decoder cosine", "recall@10", "nDCG@10", "latent-sae 2024", "global, sparsify 2025"):
            check(label in p.stdout, f"eval's text shows {label}")
        p = run(["eval", "--help"])
        check("--queries" in p.stdout and "x_hat_q against every x_hat" in p.stdout, "eval --help defines the neighbour search")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_eval: all {testlib.passed} checks passed")


if __name__ == "__main__":
    main()
