#!/usr/bin/env python3
"""Write examples/web/bundle.js: what the page needs, in one script.

    python3 examples/web/bundle.py --wasm examples/web/latentsae.wasm --model DIR \
        --texts examples/data/texts.txt --embeddings examples/data/embeddings/data-00000.npy \
        --rows 2000 -o examples/web/bundle.js

A page opened from file:// may not fetch() the files beside it (Chromium
refuses), but it may load a <script>: so the module, the model (cfg.json and
sae.safetensors) and the first ROWS texts with their embeddings (float16, as
examples/data stores them) go into one script as base64. Python's standard
library only: make wasm-page runs it on a fresh machine.
"""

import argparse
import ast
import base64
import json
import os
import struct
import sys


def npy_rows(path, rows):
    """The first rows of a 2-D little-endian .npy (version 1-3) as raw bytes, its dtype and width."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            sys.exit(f"bundle.py: {path} is not a .npy file")
        major = f.read(2)[0]
        hlen = struct.unpack("<H", f.read(2))[0] if major == 1 else struct.unpack("<I", f.read(4))[0]
        header = ast.literal_eval(f.read(hlen).decode("latin-1"))
        descr, shape = header["descr"], header["shape"]
        if descr not in ("<f2", "<f4") or header["fortran_order"] or len(shape) != 2:
            sys.exit(f"bundle.py: {path}: want a C-order 2-D <f2 or <f4 array, have {header}")
        n = min(rows, shape[0])
        size = 2 if descr == "<f2" else 4
        data = f.read(n * shape[1] * size)
        if len(data) != n * shape[1] * size:
            sys.exit(f"bundle.py: {path} is shorter than its header says")
        return data, ("f16" if size == 2 else "f32"), n, shape[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--model", required=True, help="a model directory: cfg.json + sae.safetensors")
    ap.add_argument("--texts", required=True)
    ap.add_argument("--embeddings", required=True, help="a .npy whose row i is line i of --texts")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()

    data, dtype, n, d = npy_rows(a.embeddings, a.rows)
    with open(a.texts, encoding="utf-8") as f:
        texts = f.read().split("\n")[:n]
    if len(texts) != n:
        sys.exit(f"bundle.py: {a.texts} has fewer than {n} lines")
    with open(os.path.join(a.model, "cfg.json"), encoding="utf-8") as f:
        cfg = f.read()
    with open(os.path.join(a.model, "sae.safetensors"), "rb") as f:
        weights = f.read()
    with open(a.wasm, "rb") as f:
        wasm = f.read()

    def b64(b):
        return json.dumps(base64.b64encode(b).decode("ascii"))

    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("// written by examples/web/bundle.py (make wasm-page); not edited by hand\n")
        f.write("window.LSAE_BUNDLE = {\n")
        f.write(f"  wasm: {b64(wasm)},\n")
        f.write(f"  cfg: {json.dumps(cfg)},\n")
        f.write(f"  safetensors: {b64(weights)},\n")
        f.write(f"  rows: {n}, d: {d}, dtype: {json.dumps(dtype)},\n")
        f.write(f"  embeddings: {b64(data)},\n")
        f.write(f"  texts: {json.dumps(texts, ensure_ascii=True)}\n")
        f.write("};\n")
    os.replace(tmp, a.out)
    print(f"bundle.py: {a.out}: the module ({len(wasm)} bytes), the model ({len(weights)} bytes), {n} texts of width {d}")


if __name__ == "__main__":
    main()
