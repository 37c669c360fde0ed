#!/usr/bin/env python3
"""lsae eval --labels (k-sparse probing, tools/lsae/probe.c) against scikit-learn.

    build/venv/bin/python tests/test_probe.py [BUILD_DIR]

Trains a small SAE on the bundled embeddings (examples/data), labels each row
with its Debian section (examples/data/packages.tsv), and runs
`lsae eval --labels --json`. Then the probing is done again here from its
definition (probe.c's top comment): the held-out split and the negatives from
the same hashes, the k latents (and embedding dims) with the largest
|mean on positives - mean on negatives| by numpy, and the probes by
scikit-learn (StandardScaler, then LogisticRegression with C = 1, lbfgs run to
a tight tolerance) on the activations `lsae encode` writes. The chosen latents
and dims must be identical, and every held-out accuracy equal to
scikit-learn's to within one test row (see TOLERANCE). Needs numpy and
scikit-learn (the Makefile's venv). Exits non-zero on the first failure.
"""

import json
import os
import sys
import tempfile

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import testlib
from testlib import check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
LSAE = os.path.join(BUILD, "lsae")
DATA = os.path.join(ROOT, "examples", "data")
EMB = os.path.join(DATA, "embeddings")

KS = [1, 2, 5, 20]
MIN_ROWS = 300      # sections with at least this many rows are probed
LABEL_LINES = 19500  # the labels file stops short of the 20,000 rows
SEED = 7
M64 = (1 << 64) - 1

# Both sides compute the optimum of the same strictly convex objective: probe.c
# by Newton's method to a decrement of 1e-12, scikit-learn by L-BFGS to a
# gradient of 1e-10. Their weights then agree to about 1e-7, so a held-out
# prediction can differ only for a row whose score is within ~1e-6 of 0. The
# tolerance: no accuracy may differ by more than one test row, at most 1% of
# the probes may differ at all, and the means over classes within 1e-3.
TOLERANCE_PROBES_DIFFERING = 0.01


def mix(x):
    """splitmix64's output for state x"""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def top_abs(diff, k):
    """indices of the k largest |diff|, ties to the lower index"""
    return list(np.lexsort((np.arange(len(diff)), -np.abs(diff)))[:k])


def sk_accuracy(Ztr, ytr, Zte, yte):
    sc = StandardScaler().fit(Ztr)
    clf = LogisticRegression(C=1.0, tol=1e-10, max_iter=100000).fit(sc.transform(Ztr), ytr)
    return float((clf.predict(sc.transform(Zte)) == yte).mean())


def main():
    tmp = tempfile.mkdtemp(prefix="lsae_probe_")
    run_dir = os.path.join(tmp, "run")
    testlib.run([LSAE, "train", "--data", EMB, "--k", "8", "--expansion-factor", "4", "--batch-size", "256",
                 "--max-samples", "100000", "--lr-warmup-steps", "20", "--out", run_dir])

    # labels: the section for the big sections and for one small one (fonts,
    # 203 rows: a negative for the others, too small to be probed); empty for
    # the rest (left out); the file ends before the data does (rows past it
    # left out)
    sections = [l.split("\t")[3] for l in open(os.path.join(DATA, "packages.tsv")).read().splitlines()[1:]]
    counts = {}
    for s in sections[:LABEL_LINES]:
        counts[s] = counts.get(s, 0) + 1
    keep = {s for s, c in counts.items() if c >= MIN_ROWS} | {"fonts"}
    labels = [s if s in keep else "" for s in sections[:LABEL_LINES]]
    labels[5] = "  " + labels[5] + " "  # blanks around a label are not part of it
    labels_path = os.path.join(tmp, "labels.txt")
    with open(labels_path, "w") as f:
        f.write("\n".join(labels) + "\n")
    labels[5] = labels[5].strip()

    probe_args = ["--labels", labels_path, "--probe-min-rows", str(MIN_ROWS), "--probe-seed", str(SEED), "--queries", "0"]
    pr = json.loads(testlib.run([LSAE, "eval", run_dir, EMB, "--json"] + probe_args).stdout)["probing"]
    # the same answers on one thread (the tasks run in parallel, each in a fixed order)
    pr1 = json.loads(testlib.run([LSAE, "eval", run_dir, EMB, "--json", "--threads", "1"] + probe_args).stdout)["probing"]
    check(pr1 == pr, "eval --labels gives other answers on one thread")
    text = testlib.run([LSAE, "eval", run_dir, EMB, "--max-rows", "4000"] + probe_args).stdout
    check("probing (" in text and "all 384 dims" in text and "20% of rows held out" in text,
          f"eval's text output has the probing table:\n{text}")

    enc_dir = os.path.join(tmp, "enc")
    testlib.run([LSAE, "encode", run_dir, EMB, "-o", enc_dir])
    idx = np.load(os.path.join(enc_dir, "top_indices.npy"))
    act = np.maximum(np.load(os.path.join(enc_dir, "top_acts.npy")).astype(np.float64), 0)
    X = np.concatenate([np.load(os.path.join(EMB, f)) for f in sorted(os.listdir(EMB))]).astype(np.float32).astype(np.float64)
    n_rows, d = X.shape
    L = json.load(open(os.path.join(run_dir, "cfg.json")))["num_latents"]

    # which rows count
    used = [r for r in range(n_rows) if r < len(labels) and labels[r]]
    check(pr["rows_labelled"] == len(used), f"rows_labelled {pr['rows_labelled']}, expected {len(used)}")
    check(pr["rows_beyond_labels"] == n_rows - LABEL_LINES, f"rows_beyond_labels {pr['rows_beyond_labels']}")
    check(pr["rows_empty_label"] == LABEL_LINES - len(used), f"rows_empty_label {pr['rows_empty_label']}")
    check(pr["classes"] == len(keep), f"classes {pr['classes']}, expected {len(keep)}")
    probed = sorted(s for s in keep if counts[s] >= MIN_ROWS)
    check([t["label"] for t in pr["tasks"]] == probed, f"tasks {[t['label'] for t in pr['tasks']]}, expected {probed}")
    check(pr["k"] == KS, f"k {pr['k']}")

    S = mix(SEED)
    is_test = {r: mix(S ^ r) % 5 == 0 for r in used}
    n_probes = n_differ = 0
    means = {"sae_accuracy": [[] for _ in KS], "embedding_topk_accuracy": [[] for _ in KS], "embedding_all_accuracy": []}
    for task in pr["tasks"]:
        c = task["label"]
        pos = [r for r in used if labels[r] == c]
        rest = [r for r in used if labels[r] != c]
        T = mix(S ^ fnv1a(c))
        rest.sort(key=lambda r: (mix(T ^ r), r))
        neg = set(rest[:min(len(pos), len(rest))])
        rows = [r for r in used if labels[r] == c or r in neg]
        train = np.array([r for r in rows if not is_test[r]])
        test = np.array([r for r in rows if is_test[r]])
        ytr = np.array([labels[r] == c for r in train])
        yte = np.array([labels[r] == c for r in test])
        got = (task["positives"], task["negatives"], task["train_rows"], task["test_rows"])
        want = (len(pos), len(neg), len(train), len(test))
        check(got == want, f"{c}: positives, negatives, train, test rows {got}, expected {want}")

        # the k latents / dims with the largest |mean_pos - mean_neg| over the training rows
        def means_diff(tr_pos, tr_neg):
            sp = np.bincount(idx[tr_pos].ravel(), weights=act[tr_pos].ravel(), minlength=L)
            sn = np.bincount(idx[tr_neg].ravel(), weights=act[tr_neg].ravel(), minlength=L)
            return sp / len(tr_pos) - sn / len(tr_neg)
        lat = top_abs(means_diff(train[ytr], train[~ytr]), 20)
        dims = top_abs(X[train[ytr]].mean(0) - X[train[~ytr]].mean(0), 20)
        check(task["latents"] == [int(v) for v in lat], f"{c}: chosen latents {task['latents']}, numpy: {lat}")
        check(task["dims"] == [int(v) for v in dims], f"{c}: chosen dims {task['dims']}, numpy: {dims}")

        # dense columns of the chosen latents (only 20 of them)
        def latent_cols(rs):
            out = np.zeros((len(rs), len(lat)))
            col = {l: j for j, l in enumerate(lat)}
            for i, r in enumerate(rs):
                for l, a in zip(idx[r], act[r]):
                    if a > 0 and int(l) in col:
                        out[i, col[int(l)]] = a
            return out
        Ltr, Lte = latent_cols(train), latent_cols(test)
        one_row = 1.0 / len(test) + 1e-12
        for ki, k in enumerate(KS):
            for key, tr, te in (("sae_accuracy", Ltr[:, :k], Lte[:, :k]),
                                ("embedding_topk_accuracy", X[train][:, dims[:k]], X[test][:, dims[:k]])):
                want = sk_accuracy(tr, ytr, te, yte)
                got = task[key][ki]
                n_probes += 1
                n_differ += abs(got - want) > 1e-8  # the JSON holds 9 digits
                check(abs(got - want) <= one_row, f"{c}: {key} k={k}: lsae {got}, scikit-learn {want} (one test row = {one_row:.4g})")
                means[key][ki].append(want)
        want = sk_accuracy(X[train], ytr, X[test], yte)
        got = task["embedding_all_accuracy"]
        n_probes += 1
        n_differ += abs(got - want) > 1e-8  # the JSON holds 9 digits
        check(abs(got - want) <= one_row, f"{c}: embedding_all_accuracy: lsae {got}, scikit-learn {want}")
        means["embedding_all_accuracy"].append(want)

    check(n_differ <= TOLERANCE_PROBES_DIFFERING * n_probes,
          f"{n_differ} of {n_probes} probes' accuracies differ from scikit-learn's (allowed: 1%)")
    for key in ("sae_accuracy", "embedding_topk_accuracy"):
        for ki, k in enumerate(KS):
            check(abs(pr[key][ki] - np.mean(means[key][ki])) <= 1e-3, f"mean {key} k={k}: {pr[key][ki]} vs {np.mean(means[key][ki])}")
    check(abs(pr["embedding_all_accuracy"] - np.mean(means["embedding_all_accuracy"])) <= 1e-3, "mean embedding_all_accuracy")
    print(f"probing: {len(pr['tasks'])} classes, {n_probes} probes; chosen latents and dims identical to numpy's; "
          f"{n_probes - n_differ} accuracies equal to scikit-learn's, {n_differ} within one test row")
    print(f"  mean held-out accuracy, SAE k={KS}: {[round(v, 4) for v in pr['sae_accuracy']]}, "
          f"embedding top-k: {[round(v, 4) for v in pr['embedding_topk_accuracy']]}, all dims: {pr['embedding_all_accuracy']:.4f}")
    print(f"test_probe: {testlib.passed} checks passed")


if __name__ == "__main__":
    main()
