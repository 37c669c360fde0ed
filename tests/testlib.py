"""What the fail-fast Python tests share (test_cli.py, test_report.py,
test_reliability.py; run as scripts, so tests/ is on sys.path): a check that
stops at the first failure and counts the ones that passed, a subprocess
runner that stops when a command fails, and a reader of our float32
sae.safetensors that does not go through the library under test."""
import json
import os
import struct
import subprocess
import sys

import numpy as np

passed = 0


def check(cond, what):
    global passed
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    passed += 1


def run(cmd, ok=True, **kw):
    """subprocess.run with text output captured; ok: a non-zero exit fails the test"""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if ok and p.returncode != 0:
        print(f"FAIL: {' '.join(cmd)} exited {p.returncode}\n{p.stdout}{p.stderr}")
        sys.exit(1)
    return p


def read_safetensors(path):
    """name -> float32 array, parsed from the bytes (the format's header:
    8-byte little-endian length, JSON, then the data)"""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", t
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(t["shape"])
    return out


def texts_of_first_shard(texts_path, out_dir, rows=10000):
    """examples/data's texts.txt cut to the rows of its first shard
    (data-00000.npy: lines 0..9999), written to out_dir; its path"""
    out = os.path.join(out_dir, "texts0.txt")
    with open(texts_path, encoding="utf-8") as f:
        lines = f.read().split("\n")[:rows]
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return out
