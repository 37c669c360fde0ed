#!/usr/bin/env python3
"""Open an `lsae report` page in headless Chromium and check it renders.

    python3 tests/test_report.py [BUILD_DIR]

Trains a small SAE on a slice of examples/data, writes its report and loads
it with `chromium --headless --dump-dom` at report.html#selftest. The page
records its own state in <div id="lsae-status">: how many chart lines were
drawn, how many latent cards the browser rendered, what searches found, and
every error (window.onerror and console.error are captured from the first
script on). Chromium's console log is checked too. The same check is run on
a copy of the page with a broken script, which must fail, so this test can
tell a good page from a bad one. The evaluation section's bar charts (feature
density, L0, neighbour recall) must have one bar per bin, holding the numbers
`lsae eval --json` gives for the same run and data. Needs chromium (Debian: apt-get install chromium).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import testlib
from testlib import check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
LSAE = os.path.join(BUILD, "lsae")
DATA = os.path.join(ROOT, "examples", "data")
SHARD = os.path.join(DATA, "embeddings", "data-00000.npy")



def find_chromium():
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    print("FAIL: no chromium to open the report with: apt-get install chromium")
    sys.exit(1)


def render(chromium, html_path, profile):
    """The page's DOM after load (and its scripts), and Chromium's console log."""
    cmd = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
           "--dump-dom", "file://" + html_path + "#selftest"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        print(f"FAIL: chromium exited {p.returncode}:\n{p.stderr[-2000:]}")
        sys.exit(1)
    return p.stdout, p.stderr


def status(dom):
    m = re.search(r'<div id="lsae-status"([^>]*)>', dom)
    if not m:
        return {}
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1)))


def console_errors(log):
    # Chromium logs page console messages as CONSOLE(line)] "text"; an
    # uncaught exception shows as "Uncaught ...".
    return [l for l in log.split("\n") if "CONSOLE" in l and ("Uncaught" in l or "rror" in l)]


def main():
    chromium = find_chromium()
    tmp = tempfile.mkdtemp(prefix="lsae-report-")
    try:
        texts = os.path.join(tmp, "texts.txt")
        with open(os.path.join(DATA, "texts.txt"), encoding="utf-8") as f:
            lines = f.read().split("\n")[:10000]
        with open(texts, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        run = os.path.join(tmp, "run")
        p = subprocess.run([LSAE, "train", "--data", SHARD, "--texts", texts, "--k", "8", "--expansion-factor", "2",
                            "--batch-size", "128", "--max-samples", "6400", "--lr-warmup-steps", "5",
                            "--dead-feature-threshold", "1000", "--out", run], capture_output=True, text=True)
        check(p.returncode == 0, f"training the run to report on: {p.stderr}")
        p = subprocess.run([LSAE, "report", run], capture_output=True, text=True)
        check(p.returncode == 0, f"lsae report: {p.stderr}")
        page = os.path.join(run, "report.html")
        html = open(page, encoding="utf-8").read()
        check(not re.search(r'(src|href)="(https?:)?//', html), "the page loads nothing from the network")

        dom, log = render(chromium, page, os.path.join(tmp, "profile"))
        st = status(dom)
        check(st.get("ready") == "1", f"the page's scripts ran to the end: {st}")
        errs = re.search(r'<pre id="lsae-errors">(.*?)</pre>', dom, re.S)
        check(st.get("errors") == "0", f"no script errors on the page: {errs.group(1) if errs else '?'}")
        check(not console_errors(log), f"no errors in Chromium's console: {console_errors(log)}")
        check(st.get("charts") == "5", f"5 training curves drawn (fvu, auxk, dead %, lr, samples/s): {st.get('charts')}")
        for name in ("fvu", "auxk", "dead", "lr", "speed"):
            m = re.search(r'<svg class="chart" id="chart-%s".*?<polyline[^>]*points="([^"]*)"' % name, dom, re.S)
            check(m and len(m.group(1).split()) >= 10, f"chart {name} has a line of 10+ points")
        check(int(st.get("cards", 0)) == 100, f"the browser rendered its first page of latents: {st.get('cards')}")
        check(int(st.get("search-hits", 0)) >= 1, f"searching the word '{st.get('search-word')}' finds its latent")
        check(st.get("id-hits") == "1", "searching #latent finds exactly that latent")
        check(st.get("none-hits") == "0", "a search for nonsense finds nothing")
        check(re.search(r'class="card" data-latent="\d+"', dom) is not None, "latent cards in the DOM")

        # the evaluation section: lsae eval's numbers on the run's data as bar charts
        ev = json.loads(subprocess.run([LSAE, "eval", run, SHARD, "--json"], capture_output=True, text=True, check=True).stdout)

        def bars(name):
            m = re.search(r'<svg class="chart bars" id="chart-%s".*?</svg>' % name, dom, re.S)
            check(m is not None, f"the {name} chart is on the page")
            return [float(v) for v in re.findall(r'<rect class="histbar"[^>]*data-value="([^"]*)"', m.group(0))]

        dens = bars("density")
        want = [ev["log10_density_histogram"]["never"]] + ev["log10_density_histogram"]["latents"]
        check(len(dens) == 11, f"density: a bar for 'never' and each of the 10 decades: {len(dens)}")
        check(dens == want, f"density bars are eval's histogram: {dens} vs {want}")
        check(sum(dens) == ev["num_latents"], "density bars count every latent once")
        l0 = bars("l0")
        check(len(l0) == 8 + 1, f"L0: a bar for each count 0..k (k = 8): {len(l0)}")
        check(l0 == ev["l0_histogram"] and sum(l0) == ev["rows"], f"L0 bars are eval's L0 histogram over all rows: {l0}")
        nb = bars("neighbours")
        check(len(nb) == 2 and abs(nb[0] - ev["neighbour_recall_at_10"]) < 1e-6 and abs(nb[1] - ev["neighbour_ndcg_at_10"]) < 1e-6,
              f"neighbour bars are eval's recall@10 and nDCG@10: {nb}")
        check(re.search(r'<table class="summary" id="eval-metrics">.*?<td>fvu</td><td>%.4f</td>' % ev["fvu"], dom, re.S),
              "the evaluation table shows eval's fvu")
        p = subprocess.run([LSAE, "report", run, "--queries", "0", "-o", os.path.join(tmp, "noq.html")], capture_output=True, text=True)
        check(p.returncode == 0, f"lsae report --queries 0: {p.stderr}")
        noq = open(os.path.join(tmp, "noq.html"), encoding="utf-8").read()
        check('id="chart-density"' in noq and 'id="chart-neighbours"' not in noq and "Neighbour preservation not measured" in noq,
              "--queries 0: no neighbour chart, a note instead")
        first_text = re.search(r'<li><span class="act">[0-9.]+</span>([^<]+)</li>', dom)
        check(first_text and first_text.group(1) in lines, "cards show the rows' texts")

        # the harness must fail on a broken page: the same page with a script error
        bad = os.path.join(run, "broken.html")
        with open(bad, "w", encoding="utf-8") as f:
            f.write(html.replace("var data=JSON.parse(", "var data=JSON.parse(undefinedThing+", 1))
        dom, log = render(chromium, bad, os.path.join(tmp, "profile"))
        st = status(dom)
        check(st.get("ready") == "1" and int(st.get("errors", 0)) >= 1, f"a broken page is caught: {st}")
        check(st.get("cards") == "0", "a broken page renders no cards")
        check(console_errors(log), "Chromium's console shows the broken page's error")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_report: {testlib.passed} passed, 0 failed")


if __name__ == "__main__":
    main()
