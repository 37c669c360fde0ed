#!/usr/bin/env python3
"""Open examples/web/index.html (after make wasm-page) in headless Chromium.

    python3 tests/test_web.py ENCODE_OUTPUT

The page runs latentsae.wasm on the bundled model and texts; opened at
#selftest it picks latents itself and records what it showed in
<div id="lsae-status">. Checked: no script or console errors, the latents
and nearest texts are shown and change with the choice, and the browser's
top latents and activations of the first three texts are those in
ENCODE_OUTPUT (examples/encode.c on the same model and rows, built for x86
with LSAE_NO_SIMD and -ffp-contract=off: the same bits, docs in the
header's "Determinism"). A copy of the page with a broken script must fail.
Nothing is loaded from the network.
"""

import os
import re
import shutil
import struct
import sys
import tempfile

import testlib
from testlib import check
from test_report import console_errors, find_chromium, render, status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEB = os.path.join(ROOT, "examples", "web")


def f32(x):
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


def encode_rows(path):
    """top_indices and top_acts printed by examples/encode.c, flattened."""
    text = open(path, encoding="utf-8").read()
    out = {}
    for name in ("top_indices", "top_acts"):
        m = re.search(name + r" = \[(.*?)\]\]", text, re.S)
        check(m, f"{path} has {name}")
        out[name] = [float(v) for v in re.findall(r"[-0-9.e+]+", m.group(1))]
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    want = encode_rows(sys.argv[1])
    chromium = find_chromium()
    for name in ("index.html", "page.js", "bundle.js", "latentsae.wasm"):
        check(os.path.exists(os.path.join(WEB, name)), f"examples/web/{name} is there (make wasm-page)")
    html = open(os.path.join(WEB, "index.html"), encoding="utf-8").read()
    check(not re.search(r'(src|href)="(https?:)?//', html), "the page loads nothing from the network")

    tmp = tempfile.mkdtemp(prefix="lsae-web-")
    try:
        dom, log = render(chromium, os.path.join(WEB, "index.html"), os.path.join(tmp, "profile"))
        st = status(dom)
        check(st.get("ready") == "1", f"the page's scripts ran to the end: {st}")
        errs = re.search(r'<pre id="lsae-errors">(.*?)</pre>', dom, re.S)
        check(st.get("errors") == "0", f"no script errors on the page: {errs.group(1) if errs else '?'}")
        check(not console_errors(log), f"no errors in Chromium's console: {console_errors(log)}")
        k = int(st.get("latents", 0))
        check(k >= 1, f"the text's latents are listed: {st.get('latents')}")
        check(int(st.get("all-results", 0)) == 8 and int(st.get("one-results", 0)) == 8, f"8 nearest texts shown: {st}")
        check(st.get("none-results") == "0", "no latent chosen: no texts shown, no error")
        check(st.get("other-first", "") != "", "another text chosen: results shown again")
        check(st.get("one-rows") != st.get("result-rows") or k == 1, "one latent decodes to other neighbours than all of them")
        check(re.search(r'<ol id="results"><li data-row="\d+"><span class="sim">[0-9.-]+</span>', dom) is not None,
              "the nearest texts are in the DOM with their similarities")

        idx = [int(v) for v in st.get("top-indices", "").split(",") if v]
        acts = [float(v) for v in st.get("top-acts", "").split(",") if v]
        n = len(want["top_indices"])
        check(idx == [int(v) for v in want["top_indices"]][:len(idx)] and len(idx) == n,
              f"the browser's top latents of the first texts = encode.c's: {idx} vs {want['top_indices']}")
        check(len(acts) == n and all(f32(a) == f32(b) for a, b in zip(acts, want["top_acts"])),
              "the browser's activations = encode.c's without SIMD or FMA, bit for bit")

        # the harness must fail on a broken page
        bad = os.path.join(tmp, "web")
        shutil.copytree(WEB, bad)
        js = open(os.path.join(bad, "page.js"), encoding="utf-8").read()
        with open(os.path.join(bad, "page.js"), "w", encoding="utf-8") as f:
            f.write(js.replace("var cfg = JSON.parse(B.cfg);", "var cfg = JSON.parse(undefinedThing);", 1))
        dom, log = render(chromium, os.path.join(bad, "index.html"), os.path.join(tmp, "profile"))
        st = status(dom)
        check(st.get("ready") == "1" and int(st.get("errors", 0)) >= 1, f"a broken page is caught: {st}")
        check(console_errors(log), "Chromium's console shows the broken page's error")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_web: {testlib.passed} passed, 0 failed")


if __name__ == "__main__":
    main()
