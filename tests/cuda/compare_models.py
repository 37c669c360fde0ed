"""Compare the saved models (sae.safetensors) of two lsae train runs, as
tests/test_mpi_cli.py's rel_diff does: for every tensor, the largest
difference relative to that tensor's largest value in the reference run.
Pure Python (struct, array): the GPU machine need not have numpy.

    python3 tests/cuda/compare_models.py RUN REF [--tol 1e-5] [--same-bits]
                                         [--metrics] [--label TEXT]

--same-bits: the two files must be byte for byte the same instead.
--metrics:   also the steps, samples and dead counts of metrics.jsonl equal,
             and fvu within 2e-5 relative (as test_mpi_cli.py).
Prints one line; exit 1 when the check fails.
"""
import argparse
import array
import json
import os
import struct
import sys

DTYPES = {"F32": ("f", 4), "F64": ("d", 8), "F16": ("e", 2)}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        code, size = DTYPES[meta["dtype"]]
        a, b = meta["data_offsets"]
        if code == "e":
            vals = [struct.unpack_from("<e", data, a + i)[0] for i in range(0, b - a, 2)]
        else:
            arr = array.array(code)
            arr.frombytes(data[a:b])
            if sys.byteorder != "little":
                arr.byteswap()
            vals = arr
        out[name] = vals
    return out


def rel_diff(run, ref):
    ta = read_safetensors(os.path.join(run, "sae.safetensors"))
    tb = read_safetensors(os.path.join(ref, "sae.safetensors"))
    if sorted(ta) != sorted(tb):
        return None, f"different tensors: {sorted(ta)} vs {sorted(tb)}"
    worst, where = 0.0, ""
    for name in sorted(tb):
        x, y = ta[name], tb[name]
        if len(x) != len(y):
            return None, f"{name}: {len(x)} vs {len(y)} values"
        scale = max(abs(v) for v in y) or 1.0
        d = max(abs(float(a) - float(b)) for a, b in zip(x, y)) / scale
        if d != d:  # NaN
            return None, f"{name}: NaN"
        if d >= worst:
            worst, where = d, name
    return worst, where


def metrics(d):
    with open(os.path.join(d, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("ref")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--same-bits", action="store_true")
    ap.add_argument("--metrics", action="store_true")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    label = a.label or f"{a.run} vs {a.ref}"
    ok = True
    if a.same_bits:
        with open(os.path.join(a.run, "sae.safetensors"), "rb") as f1, open(os.path.join(a.ref, "sae.safetensors"), "rb") as f2:
            same = f1.read() == f2.read()
        print(f"{label}: {'the same bytes' if same else 'DIFFERENT bytes'}")
        return 0 if same else 1
    worst, where = rel_diff(a.run, a.ref)
    if worst is None:
        print(f"{label}: FAILED ({where})")
        return 1
    ok = worst <= a.tol
    msg = f"{label}: every tensor within {worst:.3g} of the reference (worst {where}; bar {a.tol:g})"
    if a.metrics:
        m, r = metrics(a.run), metrics(a.ref)
        if len(m) != len(r):
            ok = False
            msg += f"; metrics.jsonl has {len(m)} lines, the reference {len(r)}"
        else:
            for x, y in zip(m, r):
                if x["step"] != y["step"] or x["samples"] != y["samples"] or x["n_dead"] != y["n_dead"]:
                    ok = False
                    msg += f"; step {y['step']}: steps/samples/dead counts differ ({x} vs {y})"
                    break
                if abs(x["fvu"] - y["fvu"]) > 2e-5 * max(abs(y["fvu"]), 1e-6):
                    ok = False
                    msg += f"; step {y['step']}: fvu {x['fvu']} vs {y['fvu']}"
                    break
            else:
                msg += f"; metrics.jsonl: {len(m)} steps, the same samples and dead counts, fvu within 2e-5"
    print(("" if ok else "FAILED: ") + msg)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
