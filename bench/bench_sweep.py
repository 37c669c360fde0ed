#!/usr/bin/env python3
"""lsae sweep with n models against n separate lsae train runs on the same data.

    python3 bench/bench_sweep.py [BUILD_DIR] [--reps 3] [--data PATH]
    (make bench-sweep)

Both sides train the same models with the same flags (the sweep's models are
bit-identical to the separate runs: tests/test_sweep.py); the sweep reads each
batch once and feeds it to every model, the separate runs each read the data
and start a process of their own. The sweep also evaluates its models
afterwards (with the smallest evaluation it allows here: --queries 0
--eval-rows 1000), so two ratios are reported: the whole sweep process
against the n train processes (the honest bound: the sweep does more), and
the sweep's training phase (the time it prints, from its first batch to its
last checkpoint) against them. Runs alternate (sweep, separate, sweep, ...) so a busy neighbour
hurts both alike; the median of --reps runs of each is reported, with the
machine and the ISA the build targets.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from run import machine  # noqa: E402  the CPU, its cores and ISA, as bench/run.py prints them


def timed(cmd):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return time.perf_counter() - t, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=os.path.join(ROOT, "build"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--data", default=os.path.join(ROOT, "examples", "data", "embeddings"))
    ap.add_argument("--k", default="32,64")
    ap.add_argument("--expansion-factor", default="8,16")
    ap.add_argument("--batch-size", default="512")
    ap.add_argument("--epochs", default="1")
    a = ap.parse_args()
    lsae = os.path.join(os.path.abspath(a.build), "lsae")
    shared = ["--data", a.data, "--batch-size", a.batch_size, "--epochs", a.epochs, "--lr-warmup-steps", "5", "--seed", "1",
              "--save-every", "0"]
    models = [(k, e) for k in a.k.split(",") for e in a.expansion_factor.split(",")]
    n = len(models)
    tmp = tempfile.mkdtemp(prefix="lsae-bench-sweep-")
    t_sweep, t_sep, t_train = [], [], []
    try:
        for rep in range(a.reps):
            out = os.path.join(tmp, f"sweep{rep}")
            t, stdout = timed([lsae, "sweep"] + shared + ["--k", a.k, "--expansion-factor", a.expansion_factor,
                                                          "--queries", "0", "--eval-rows", "1000", "--out", out])
            t_sweep.append(t)
            m = re.search(r"trained in [^(]*\(([0-9.]+) s", stdout)
            t_train.append(float(m.group(1)))
            t = 0.0
            for k, e in models:
                t += timed([lsae, "train"] + shared + ["--k", k, "--expansion-factor", e, "--out", os.path.join(tmp, f"sep{rep}_{k}_{e}")])[0]
            t_sep.append(t)
            print(f"rep {rep + 1}: lsae sweep {t_sweep[-1]:.2f} s (training {t_train[-1]:.2f} s), {n} x lsae train {t_sep[-1]:.2f} s",
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ms, mp, mt = statistics.median(t_sweep), statistics.median(t_sep), statistics.median(t_train)
    print(f"machine: {machine()}")
    print(f"grid: k {a.k} x expansion {a.expansion_factor} ({n} models), batch {a.batch_size}, {a.epochs} epoch(s) of {a.data}")
    print(f"median of {a.reps}: lsae sweep {ms:.2f} s (its training phase {mt:.2f} s), {n} separate lsae train {mp:.2f} s")
    print(f"ratio sweep / separate: {ms / mp:.3f} for the whole sweep (with its evaluation), {mt / mp:.3f} for its training")


if __name__ == "__main__":
    main()
