#!/usr/bin/env python3
"""Embeddings put into more dimensions by a fixed random orthonormal map, for
measuring at a model width we have no real embeddings of (bench/run.py and
README: the int8 pre-pass on a trained nomic-shaped model, 768 x 24,576,
from the bundled 384-d MiniLM embeddings). Lengths and angles are kept, so
the rows keep their real structure, in a d_in-dimensional subspace.

    python3 bench/widen_embeddings.py OUT.npy D_OUT IN.npy [IN.npy ...]

Needs numpy. Seeded: the same inputs give the same file."""
import sys

import numpy as np


def main():
    if len(sys.argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    out, d_out, ins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    x = np.concatenate([np.load(p).astype(np.float32) for p in ins])
    if d_out < x.shape[1]:
        sys.stderr.write(f"widen_embeddings: {d_out} is fewer dimensions than the inputs' {x.shape[1]}\n")
        return 2
    q, _ = np.linalg.qr(np.random.default_rng(d_out).standard_normal((d_out, x.shape[1])))
    np.save(out, (x @ q.T).astype(np.float32))
    print(f"{out}: {x.shape[0]} x {d_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
