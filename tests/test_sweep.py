#!/usr/bin/env python3
"""lsae sweep end to end on a slice of examples/data.

    python3 tests/test_sweep.py [BUILD_DIR]

A grid of k 8,16 x expansion 2,4 trained in one pass must give, for each
model, the model `lsae train` trains alone with the same flags and seed,
bit for bit (the sweep feeds every model the batches train's loader gives
it); sweep.json must list every model with its settings, training and
evaluation numbers (checked against `lsae eval --json` and numpy), and
its Pareto flags (checked against the front computed here); Ctrl-C, and a
kill that leaves the models' checkpoints at different steps (and one with
none), must resume to the same files; sweep.html, opened in headless
Chromium with no console errors, must draw one point per model in each of
its three plots, the front's points marked; lists of the
flags every model must share are refused.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser

import numpy as np

import testlib
import test_report  # its Chromium helpers: render, find_chromium, console_errors
from testlib import check, read_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
LSAE = os.path.join(BUILD, "lsae")
SHARD = os.path.join(ROOT, "examples", "data", "embeddings", "data-00000.npy")

# 7680 samples / 128 = 60 optimizer steps, a checkpoint every 10
SHARED = ["--data", SHARD, "--batch-size", "128", "--max-samples", "7680", "--lr-warmup-steps", "5",
          "--dead-feature-threshold", "2000", "--save-every", "10", "--threads", "2", "--seed", "7"]
# expansion 4 (1536 latents) is the case where a resume once drifted by an ulp
# (the automatic lr read back from run.json's 9 digits)
GRID = ["--k", "8,16", "--expansion-factor", "2,4"]
MODELS = {"sae_8_2": (8, 2), "sae_8_4": (8, 4), "sae_16_2": (16, 2), "sae_16_4": (16, 4)}
FILES = ["sae.safetensors", "cfg.json", "checkpoint/sae.safetensors"]  # checkpoint/state.bin holds the elapsed time


def run(args, ok=True):
    return testlib.run([LSAE] + args, ok)


def one_error_line(p, what, code):
    lines = [l for l in p.stderr.split("\n") if l.strip()]
    check(p.returncode == code, f"{what}: exit status {p.returncode}, expected {code}\n{p.stderr}")
    check(len(lines) == 1 and lines[0].startswith("lsae sweep:"), f"{what}: one line naming the command:\n{p.stderr}")
    return lines[0]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def same_files(a, b, what):
    for name in MODELS:
        for f in FILES:
            pa, pb = os.path.join(a, name, f), os.path.join(b, name, f)
            check(os.path.exists(pa) and read(pa) == read(pb), f"{what}: {name}/{f} equals the uninterrupted sweep's")
        ma = [json.loads(l) for l in open(os.path.join(a, name, "metrics.jsonl"))]
        mb = [json.loads(l) for l in open(os.path.join(b, name, "metrics.jsonl"))]
        check([r["step"] for r in mb] == list(range(1, 61)), f"{what}: {name}'s metrics hold every step once")
        check([r["fvu"] for r in ma] == [r["fvu"] for r in mb], f"{what}: {name}'s fvu curve equals the uninterrupted one")


def front(points, sign):
    """the Pareto front of (x, y): x lower is better, y lower (sign 1) or higher (sign -1)"""
    on = []
    for i, (x, y) in enumerate(points):
        dominated = any(j != i and xj <= x and sign * yj <= sign * y and (xj < x or sign * yj < sign * y)
                        for j, (xj, yj) in enumerate(points))
        on.append(not dominated)
    return on


class SvgPoints(HTMLParser):
    """each <svg id="pareto-..."> plot's circles: (label, data-front)"""

    def __init__(self):
        super().__init__()
        self.plots, self.cur, self.scripts, self.external = {}, None, 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and a.get("id", "").startswith("pareto-"):
            self.cur = a["id"][len("pareto-"):]
            self.plots[self.cur] = []
        elif tag == "circle" and self.cur:
            self.plots[self.cur].append((a.get("data-label"), a.get("data-front")))
        elif tag == "script":
            self.scripts += 1
        for k_, v in attrs:
            if k_ in ("src", "href") and v and "://" in v:
                self.external.append(v)

    def handle_endtag(self, tag):
        if tag == "svg":
            self.cur = None


def wait_for(proc, text):
    for line in proc.stderr:
        if text in line:
            return True
    return False


def main():
    tmp = tempfile.mkdtemp(prefix="lsae-sweep-")
    t0 = time.time()
    try:
        x = np.load(SHARD).astype(np.float64)
        d = x.shape[1]

        # ---- the sweep, and each model trained alone
        sw = os.path.join(tmp, "sweep")
        p = run(["sweep"] + SHARED + GRID + ["--queries", "200", "--out", sw])
        check("each batch read once" in p.stderr, "the plan says the batches are shared")
        for name, (k, e) in MODELS.items():
            alone = os.path.join(tmp, "alone_" + name)
            run(["train"] + SHARED + ["--k", str(k), "--expansion-factor", str(e), "--out", alone])
            for f in FILES:
                check(read(os.path.join(sw, name, f)) == read(os.path.join(alone, f)),
                      f"{name}/{f} of the sweep equals lsae train's alone, bit for bit")
            ra = json.load(open(os.path.join(alone, "run.json")))
            rs = json.load(open(os.path.join(sw, name, "run.json")))
            ra.pop("run_id"), rs.pop("run_id")
            check(ra == rs, f"{name}/run.json equals lsae train's but for the run id")
            ma = [json.loads(l) for l in open(os.path.join(alone, "metrics.jsonl"))]
            ms = [json.loads(l) for l in open(os.path.join(sw, name, "metrics.jsonl"))]
            check([r["fvu"] for r in ma] == [r["fvu"] for r in ms] and len(ms) == 60, f"{name}: the same fvu curve as alone")
        # lsae info, eval and report take a model of the sweep as a run
        info = json.loads(run(["info", os.path.join(sw, "sae_16_4"), "--json"]).stdout)
        check(info["k"] == 16 and info["num_latents"] == 4 * d, "lsae info reads a sweep's model")

        # ---- sweep.json
        sj = json.load(open(os.path.join(sw, "sweep.json")))
        check(sj["status"] == "done" and sj["grid"] == {"k": ["8", "16"], "expansion_factor": ["2", "4"]}, f"sweep.json grid {sj['grid']}")
        check(sj["shared"]["batch_size"] == 128 and sj["shared"]["total_steps"] == 60 and sj["shared"]["seed"] == "7", "sweep.json shared")
        check(sj["eval"]["in_sample"] is True and sj["eval"]["queries"] == 200, "sweep.json says what was evaluated")
        check(sorted(m["dir"] for m in sj["models"]) == sorted(MODELS), f"sweep.json has every model: {[m['dir'] for m in sj['models']]}")
        for m in sj["models"]:
            k, e = MODELS[m["dir"]]
            s = m["settings"]
            check(s["k"] == k and s["expansion_factor"] == e and s["num_latents"] == e * d, f"{m['dir']} settings")
            check(m["train"]["steps"] == 60 and 0 < m["train"]["fvu"] < 1, f"{m['dir']} training numbers {m['train']}")
            ev = m["eval"]
            for key in ("fvu", "l0", "dead_fraction", "neighbour_recall_at_10"):
                check(isinstance(ev.get(key), (int, float)), f"{m['dir']} eval has {key}")
            check(0 < ev["l0"] <= k and 0 <= ev["dead_fraction"] <= 1 and 0 <= ev["neighbour_recall_at_10"] <= 1, f"{m['dir']} eval ranges")
        # the same numbers as lsae eval on the model, and fvu as numpy has it
        m0 = next(m for m in sj["models"] if m["dir"] == "sae_16_4")
        ev = json.loads(run(["eval", os.path.join(sw, "sae_16_4"), SHARD, "--json", "--queries", "200", "--seed", "7"]).stdout)
        for key in ("fvu", "l0", "dead_fraction", "neighbour_recall_at_10", "neighbour_ndcg_at_10", "cossim"):
            check(abs(ev[key] - m0["eval"][key]) <= 1e-9 * max(1, abs(ev[key])), f"sweep's {key} {m0['eval'][key]} = lsae eval's {ev[key]}")
        w = read_safetensors(os.path.join(sw, "sae_16_4", "sae.safetensors"))
        pre = np.maximum((x - w["b_dec"]) @ w["encoder.weight"].T.astype(np.float64) + w["encoder.bias"], 0)
        idx = np.argsort(-pre, axis=1, kind="stable")[:, :16]
        act = np.take_along_axis(pre, idx, axis=1)
        xhat = np.einsum("nk,nkd->nd", act, w["W_dec"].astype(np.float64)[idx]) + w["b_dec"]
        fvu_np = ((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        check(abs(m0["eval"]["fvu"] - fvu_np) < 1e-4, f"sweep fvu {m0['eval']['fvu']} vs numpy {fvu_np}")
        check(abs(m0["eval"]["l0"] - (act > 0).sum(1).mean()) < 1e-9, "sweep l0 vs numpy")
        # the Pareto flags, computed again here
        pts = [(m["eval"]["l0"], m["eval"]["fvu"]) for m in sj["models"]]
        check([m["pareto"]["fvu"] for m in sj["models"]] == front(pts, 1), "fvu front")
        pts = [(m["eval"]["l0"], m["eval"]["neighbour_recall_at_10"]) for m in sj["models"]]
        check([m["pareto"]["neighbour_recall"] for m in sj["models"]] == front(pts, -1), "recall front")
        pts = [(m["eval"]["l0"], m["eval"]["dead_fraction"]) for m in sj["models"]]
        check([m["pareto"]["dead_fraction"] for m in sj["models"]] == front(pts, 1), "dead-fraction front")

        # ---- sweep.html: one file, no network, a point per model in each
        # plot, as headless Chromium builds the page (no console errors)
        dom, log = test_report.render(test_report.find_chromium(), os.path.join(sw, "sweep.html"), os.path.join(tmp, "profile"))
        check(not test_report.console_errors(log), f"sweep.html: no console errors in Chromium: {test_report.console_errors(log)}")
        page = SvgPoints()
        page.feed(dom)
        check(sorted(page.plots) == ["dead", "fvu", "recall"], f"three plots: {sorted(page.plots)}")
        check(page.scripts == 0 and not page.external, f"nothing loaded from elsewhere: {page.external}")
        labels = {f"{k}/{e}" for k, e in MODELS.values()}
        flag = {"fvu": "fvu", "recall": "neighbour_recall", "dead": "dead_fraction"}
        for plot, pts in page.plots.items():
            check(len(pts) == len(MODELS) and {l for l, _ in pts} == labels, f"{plot}: one labelled point per model: {pts}")
            want = {f"{MODELS[m['dir']][0]}/{MODELS[m['dir']][1]}": m["pareto"][flag[plot]] for m in sj["models"]}
            check(all((f == "1") == want[l] for l, f in pts), f"{plot}: the front's points are marked")

        # ---- Ctrl-C after the first checkpoints, then --resume: the same files
        sB = os.path.join(tmp, "sweepB")
        proc = subprocess.Popen([LSAE, "sweep"] + SHARED + GRID + ["--queries", "200", "--out", sB], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        check(wait_for(proc, "saved checkpoints at step 10"), "the sweep saves at step 10")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate()
        check(proc.returncode == 130 and "interrupted at step" in out and "--resume" in out, f"Ctrl-C exits 130 and says how to go on: {out}")
        check(json.load(open(os.path.join(sB, "sweep.json")))["status"] == "interrupted", "sweep.json says interrupted")
        p = run(["sweep", "--resume", sB, "--threads", "1"])
        same_files(sw, sB, "Ctrl-C + --resume")
        check(json.load(open(os.path.join(sB, "sweep.json")))["status"] == "done", "the resumed sweep is done")

        # ---- killed with models at different steps: sae_8_4's checkpoint is
        # from step 10 while the others reached 20 (a kill between two saves),
        # and sae_16_2 has none (killed before its first save): all resume exactly
        sC = os.path.join(tmp, "sweepC")
        proc = subprocess.Popen([LSAE, "sweep"] + SHARED + GRID + ["--queries", "200", "--out", sC], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        check(wait_for(proc, "saved checkpoints at step 10"), "the sweep saves at step 10")
        proc.send_signal(signal.SIGSTOP)
        shutil.copytree(os.path.join(sC, "sae_8_4", "checkpoint"), os.path.join(tmp, "ck10"))
        proc.send_signal(signal.SIGCONT)
        check(wait_for(proc, "saved checkpoints at step 20"), "the sweep saves at step 20")
        proc.kill()
        proc.communicate()
        shutil.rmtree(os.path.join(sC, "sae_8_4", "checkpoint"))
        shutil.copytree(os.path.join(tmp, "ck10"), os.path.join(sC, "sae_8_4", "checkpoint"))
        shutil.rmtree(os.path.join(sC, "sae_16_2", "checkpoint"))
        p = run(["sweep", "--resume", sC])
        check("sae_8_4" in p.stderr and "from step 10" in p.stderr and "no checkpoint: from the start" in p.stderr,
              f"the resume says where each model starts:\n{p.stderr}")
        same_files(sw, sC, "kill + --resume")

        # ---- the grid's own flags as lists: an lr axis gives the model train gives with that --lr
        sD = os.path.join(tmp, "sweepD")
        shard1 = SHARD.replace("data-00000", "data-00001")
        run(["sweep"] + SHARED + ["--k", "8", "--expansion-factor", "2", "--lr", "5e-4,1e-3", "--queries", "0", "--out", sD,
                                  "--eval-data", shard1, "--eval-rows", "500"])
        alone = os.path.join(tmp, "alone_lr")
        run(["train"] + SHARED + ["--k", "8", "--expansion-factor", "2", "--lr", "1e-3", "--out", alone])
        check(read(os.path.join(sD, "sae_8_2_lr1e-3", "sae.safetensors")) == read(os.path.join(alone, "sae.safetensors")),
              "an --lr list: each model equals train alone with that --lr")
        sj = json.load(open(os.path.join(sD, "sweep.json")))
        check([m["dir"] for m in sj["models"]] == ["sae_8_2_lr5e-4", "sae_8_2_lr1e-3"], f"lr models named by their lr: {sj['models']}")
        check([m["settings"]["lr"] for m in sj["models"]] == [5e-4, 1e-3] and sj["grid"] == {"lr": ["5e-4", "1e-3"]}, "the lr grid")
        check(sj["eval"]["in_sample"] is False and sj["eval"]["data"] == shard1, f"held-out evaluation data recorded: {sj['eval']}")
        ev = json.loads(run(["eval", os.path.join(sD, "sae_8_2_lr1e-3"), shard1, "--json", "--queries", "0", "--max-rows", "500"]).stdout)
        check(all(m["eval"]["rows"] == 500 for m in sj["models"]) and sj["models"][1]["eval"]["fvu"] == ev["fvu"],
              "--eval-data and --eval-rows: the models evaluated on the held-out rows")

        # ---- refused: lists of what the models share, and more
        for flag, val in (("--batch-size", "64,128"), ("--seed", "1,2"), ("--epochs", "1,2"), ("--max-samples", "100,200"),
                          ("--grad-acc-steps", "1,2"), ("--save-every", "5,10")):
            shared = [a for i, a in enumerate(SHARED) if a != flag and (i == 0 or SHARED[i - 1] != flag)]
            args = ["sweep"] + shared + ["--k", "8,16", flag, val, "--out", os.path.join(tmp, "no")]
            p = run(args, ok=False)
            msg = one_error_line(p, f"{flag} as a list", 2)
            check(f"{flag} cannot be a list" in msg, f"{flag} as a list says why: {msg}")
            check(not os.path.exists(os.path.join(tmp, "no")), f"{flag} as a list leaves no directory")
        msg = one_error_line(run(["sweep"] + SHARED + ["--k", "8,8", "--out", os.path.join(tmp, "no")], ok=False), "a value twice", 2)
        check("twice" in msg, msg)
        msg = one_error_line(run(["sweep"] + SHARED + ["--init", sw + "/sae_8_2", "--out", os.path.join(tmp, "no")], ok=False), "--init", 2)
        msg = one_error_line(run(["sweep", "--resume", sB, "--k", "8,16"], ok=False), "a list on resume", 2)
        check("keeps its grid" in msg, msg)
        msg = one_error_line(run(["sweep", "--resume", sB, "--lr", "1e-3"], ok=False), "a setting changed on resume", 2)
        msg = one_error_line(run(["sweep"] + SHARED + GRID + ["--out", sw], ok=False), "a sweep directory again", 1)
        check("--resume" in msg, msg)
        p = run(["sweep", "--help"])
        check("--expansion-factor" in p.stdout and "--eval-data" in p.stdout and "comma lists" in p.stdout, "sweep --help")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_sweep: {testlib.passed} passed, 0 failed ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
