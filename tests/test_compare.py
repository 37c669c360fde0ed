#!/usr/bin/env python3
"""lsae compare against a numpy computation of its definition.

    python3 tests/test_compare.py [BUILD_DIR]

`lsae compare A B` matches the latents of B to those of A one to one by the
cosine of their decoder rows, greedily: the most similar pair of latents both
still free first, ties to the lower index of B, then of A; pairs below the
floor (0.5, or --threshold when lower) are never matched. Here the same
matching is computed again in numpy, in float64, from the weights as written
in sae.safetensors (read without the library), on:

- two SAEs trained with build/lsae on examples/data (k 8 x 768 latents and
  k 16 x 1536 latents, different seeds), both ways round and at a lower
  threshold: the matching, the pair counts at 0.9 / 0.7 / 0.5, each side's
  most similar partner and the list of B's latents without a partner must
  equal numpy's;
- a model against itself: every latent matched to itself at cosine 1;
- a copy with its latents permuted (rows of sae.safetensors shuffled with
  numpy): matched back to the permutation exactly;
- a made-up pair with a cluster of 100 near-duplicate latents in A and 150 in
  B, so that rows of B have more pairs above the floor than lsae keeps per
  row and must find them again during the matching (rows_refilled > 0), plus
  latents with decoder rows of other norms and a zero row;
- --data/--texts: the unmatched latents ranked by fire count, with the same
  counts and top rows as `lsae features` and the rows' texts;
- errors: models of different d_in, a bad --threshold.
Needs numpy. Exits non-zero on the first failure.
"""

import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

import testlib
from testlib import check, read_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
LSAE = os.path.join(BUILD, "lsae")
DATA = os.path.join(ROOT, "examples", "data")
SHARD = os.path.join(DATA, "embeddings", "data-00000.npy")  # rows 0..9999 of texts.txt
TEXTS = os.path.join(DATA, "texts.txt")


def run(args, ok=True):
    return testlib.run([LSAE] + args, ok)


def compare_json(a, b, *extra):
    return json.loads(run(["compare", a, b, "--json", "--threads", "2", *extra]).stdout)


def write_model(path, tensors, cfg):
    """cfg.json and an F32 sae.safetensors (docs/files.md), written here byte by byte"""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump(cfg, f)
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(path, "sae.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def decoder(path):
    return read_safetensors(os.path.join(path, "sae.safetensors"))["W_dec"].astype(np.float64)


def unit(W):
    n = np.linalg.norm(W, axis=1, keepdims=True)
    return np.divide(W, n, out=np.zeros_like(W), where=n > 0)


def greedy(WB, WA, floor):
    """The definition: every pair (b, a) with cosine >= floor, most similar
    first (ties: lower b, then lower a), taken when both are still free."""
    C = unit(WB) @ unit(WA).T
    bi, ai = np.nonzero(C >= floor)
    c = C[bi, ai]
    order = np.lexsort((ai, bi, -c))
    match = np.full(len(WB), -1)
    mcos = np.full(len(WB), np.nan)
    taken = np.zeros(len(WA), bool)
    for o in order:
        b, a = bi[o], ai[o]
        if match[b] < 0 and not taken[a]:
            match[b], mcos[b], taken[a] = a, c[o], True
    return match, mcos, C


def check_against_numpy(what, pathA, pathB, threshold=0.5, WA=None, WB=None):
    WA = decoder(pathA) if WA is None else WA
    WB = decoder(pathB) if WB is None else WB
    extra = [] if threshold == 0.5 else ["--threshold", repr(threshold)]
    out = compare_json(pathA, pathB, *extra, "--list", "0")
    floor = min(0.5, threshold)
    match, mcos, C = greedy(WB, WA, floor)
    got = np.array(out["match"])
    check(out["matching"] == "greedy" and out["floor"] == floor, f"{what}: matching greedy, floor {floor}: {out['matching']}, {out['floor']}")
    check(len(got) == len(WB) and out["b"]["num_latents"] == len(WB) and out["a"]["num_latents"] == len(WA), f"{what}: one entry per latent of B")
    diff = np.nonzero(got != match)[0]
    check(len(diff) == 0, f"{what}: the matching equals numpy's greedy matching ({len(diff)} latents of B differ, "
                          f"first {diff[:5].tolist()}: lsae {got[diff[:5]].tolist()}, numpy {match[diff[:5]].tolist()})")
    m = got >= 0
    check(len(set(got[m].tolist())) == int(m.sum()), f"{what}: one to one (no A latent matched twice)")
    gcos = np.array([np.nan if v is None else v for v in out["match_cosine"]], dtype=np.float64)
    check(np.array_equal(np.isnan(gcos), ~m) and np.allclose(gcos[m], mcos[m], rtol=0, atol=1e-9),
          f"{what}: matched cosines equal numpy's within 1e-9")
    check(np.array_equal(out["b_best"], C.argmax(1)) and np.allclose(out["b_best_cosine"], C.max(1), rtol=0, atol=1e-9),
          f"{what}: each B latent's most similar A latent and its cosine")
    check(np.array_equal(out["a_best"], C.argmax(0)) and np.allclose(out["a_best_cosine"], C.max(0), rtol=0, atol=1e-9),
          f"{what}: each A latent's most similar B latent and its cosine")
    cuts = sorted({0.9, 0.7, 0.5, threshold}, reverse=True)
    want = [{"cosine": t, "matched": int((mcos >= t).sum()), "b_with_near_a": int((C.max(1) >= t).sum()),
             "a_with_near_b": int((C.max(0) >= t).sum())} for t in cuts]
    check(out["counts"] == want, f"{what}: counts at {cuts}: lsae {out['counts']}, numpy {want}")
    unmatched = np.nonzero(~(mcos >= threshold))[0]
    check(sorted(out["unmatched"]) == unmatched.tolist(), f"{what}: the B latents without a partner at {threshold}")
    # without data: the least similar first, then by index
    order = sorted(unmatched.tolist(), key=lambda b: (C.max(1)[b], b))
    listed = [e["latent"] for e in out["listed"]]
    check(listed == order, f"{what}: listed least similar first")
    return out, match, mcos, C


def main():
    tmp = tempfile.mkdtemp(prefix="lsae-compare-")
    try:
        texts0 = testlib.texts_of_first_shard(TEXTS, tmp)
        with open(texts0, encoding="utf-8") as f:
            lines = f.read().split("\n")
        runA, runB = os.path.join(tmp, "k8"), os.path.join(tmp, "k16")
        common = ["--data", SHARD, "--batch-size", "256", "--epochs", "4", "--lr", "3e-3", "--lr-warmup-steps", "10", "--threads", "2"]
        run(["train", *common, "--k", "8", "--expansion-factor", "2", "--seed", "1", "--out", runA])
        run(["train", *common, "--k", "16", "--expansion-factor", "4", "--seed", "2", "--out", runB])

        # ---- two trained models, both ways, and a threshold below the default floor
        out, match, mcos, C = check_against_numpy("k8 vs k16", runA, runB)
        n5 = int((mcos >= 0.5).sum())
        check(n5 > 50 and (C.max(1) >= 0.5).sum() > n5, f"the trained models share latents, some contested (a real test of greedy): {n5} pairs")
        check_against_numpy("k16 vs k8", runB, runA)
        check_against_numpy("k8 vs k16 at 0.3", runA, runB, threshold=0.3)
        check_against_numpy("k8 vs k16 at 0.8", runA, runB, threshold=0.8)

        # ---- a model against itself
        out = compare_json(runB, runB)
        L = out["b"]["num_latents"]
        check(out["match"] == list(range(L)), "a model against itself: every latent matched to itself")
        check(min(out["match_cosine"]) > 1 - 1e-9, f"... at cosine 1: min {min(out['match_cosine'])}")
        check(out["counts"][0]["matched"] == L and out["unmatched"] == [], "... all of them counted at 0.9, none unmatched")

        # ---- a copy with its latents permuted: B[i] = A[perm[i]]
        w = read_safetensors(os.path.join(runB, "sae.safetensors"))
        perm = np.random.default_rng(5).permutation(L)
        permuted = os.path.join(tmp, "permuted")
        write_model(permuted, {"W_dec": w["W_dec"][perm], "b_dec": w["b_dec"], "encoder.bias": w["encoder.bias"][perm],
                               "encoder.weight": w["encoder.weight"][perm]},
                    json.load(open(os.path.join(runB, "cfg.json"))))
        out = compare_json(runB, permuted)
        check(out["match"] == perm.tolist(), "a permuted copy is matched back to the permutation exactly")
        check(min(out["match_cosine"]) > 1 - 1e-9, "... at cosine 1")
        out = compare_json(permuted, runB)
        check(out["match"] == np.argsort(perm).tolist(), "... and the other way round to the inverse permutation")

        # ---- near-duplicates: more pairs per row than lsae keeps, rows found again while matching
        rng = np.random.default_rng(11)
        d = 32
        v = rng.standard_normal(d)
        v /= np.linalg.norm(v)

        def cluster(n):
            u = rng.standard_normal((n, d))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            return v + 0.6 * u

        WA = np.vstack([cluster(100), rng.standard_normal((99, d)), np.zeros((1, d))])
        WB = np.vstack([rng.standard_normal((30, d)), cluster(150), np.zeros((1, d)), rng.standard_normal((19, d))])
        WA *= rng.uniform(0.2, 3.0, (len(WA), 1))  # norms other than 1: the cosine divides them out
        WB *= rng.uniform(0.2, 3.0, (len(WB), 1))
        for name, W in (("dupA", WA), ("dupB", WB)):
            L = len(W)
            write_model(os.path.join(tmp, name), {"W_dec": W, "b_dec": np.zeros(d), "encoder.bias": np.zeros(L),
                                                  "encoder.weight": W.astype(np.float32)},
                        {"expansion_factor": 1, "normalize_decoder": False, "num_latents": L, "k": 4, "multi_topk": False, "d_in": d})
        WA32 = WA.astype(np.float32).astype(np.float64)
        WB32 = WB.astype(np.float32).astype(np.float64)
        out, match, mcos, C = check_against_numpy("near-duplicates", os.path.join(tmp, "dupA"), os.path.join(tmp, "dupB"), WA=WA32, WB=WB32)
        check((C[30:180, :100] >= 0.5).sum(1).min() > 32, "the cluster's rows have more than 32 pairs above 0.5 each")
        check(out["rows_refilled"] > 0, f"rows of B ran out of kept pairs and found them again: {out['rows_refilled']}")
        check_against_numpy("near-duplicates at 0.3", os.path.join(tmp, "dupA"), os.path.join(tmp, "dupB"), threshold=0.3, WA=WA32, WB=WB32)

        # ---- with data and texts: the unmatched latents by fire count, with their top rows
        out = compare_json(runA, runB, "--data", SHARD, "--texts", texts0, "--list", "10", "--top", "4")
        check(out["rows"] == 10000, f"the data's rows: {out.get('rows')}")
        listed = out["listed"]
        check(len(listed) == 10, f"--list 10 lists 10: {len(listed)}")
        ids = ",".join(str(e["latent"]) for e in listed)
        feats = {}
        for line in run(["features", runB, SHARD, "--texts", texts0, "--latents", ids, "--top", "4", "--json", "--threads", "2"]).stdout.splitlines():
            e = json.loads(line)
            feats[e["latent"]] = e
        allfires = {}
        for line in run(["features", runB, SHARD, "--top", "1", "--json", "--threads", "2"]).stdout.splitlines():
            e = json.loads(line)
            allfires[e["latent"]] = e["fires"]
        ranked = sorted(out["unmatched"], key=lambda b: (-allfires[b], b))[:10]
        check([e["latent"] for e in listed] == ranked, "with --data: the unmatched latents that fire most first")
        check(out["unmatched_never_fire"] == sum(1 for b in out["unmatched"] if allfires[b] == 0), "unmatched latents that never fire, counted")
        for e in listed:
            f = feats[e["latent"]]
            check(e["fires"] == f["fires"] and e["top"] == f["top"], f"latent {e['latent']}: fires and top rows as lsae features shows them")
            check(all(t["text"] == lines[t["row"]] for t in e["top"]), f"latent {e['latent']}: each top row with its text")

        # the text form says the same
        p = run(["compare", runA, runB, "--data", SHARD, "--texts", texts0, "--list", "2", "--top", "2"])
        check("greedy one-to-one" in p.stdout, "the text output names the matching")
        n = len(out["unmatched"])
        check(f"{n} latents of B have no partner in A at cosine >= 0.5" in p.stdout, f"the text output counts the unmatched: {p.stdout[:800]}")
        check(f"B latent {listed[0]['latent']}: closest A latent {listed[0]['best_a']}" in p.stdout, "the text output lists the most active first")
        check(lines[listed[0]["top"][0]["row"]][:100] in p.stdout, "... with its top text")

        # ---- errors: one line, the right exit status
        other = os.path.join(tmp, "other_d")
        write_model(other, {"W_dec": np.eye(4, 8), "b_dec": np.zeros(8), "encoder.bias": np.zeros(4), "encoder.weight": np.eye(4, 8)},
                    {"expansion_factor": 1, "normalize_decoder": False, "num_latents": 4, "k": 2, "multi_topk": False, "d_in": 8})
        p = run(["compare", runA, other], ok=False)
        errs = [l for l in p.stderr.splitlines() if l.strip()]
        check(p.returncode == 1 and len(errs) == 1 and "d_in" in errs[0], f"models of different d_in: one line, exit 1: {p.returncode} {p.stderr}")
        for bad in ("0", "1.5", "-0.2"):
            p = run(["compare", runA, runB, "--threshold", bad], ok=False)
            check(p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, f"--threshold {bad}: one line, exit 2")
        p = run(["compare", runA, runB, "--texts", texts0], ok=False)
        check(p.returncode == 2, "--texts without --data is a usage error")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_compare: {testlib.passed} passed, 0 failed")


if __name__ == "__main__":
    main()
