#!/usr/bin/env python3
"""Convert Parquet files with an embedding column to .npy shards latentsae reads.

latent-sae 2024 published its training embeddings as a Hugging Face dataset
of Parquet files, one list<float> column per row ("embedding"). latentsae
reads .npy directly (memory-mapped), so this streams the Parquet row groups
into shards data-00000.npy, data-00001.npy, ... of --rows-per-shard rows:

    python3 tools/parquet_to_npy.py INPUT OUTDIR [--column embedding]
        [--rows-per-shard 1000000] [--dtype float32|float16]

INPUT is a .parquet file or a directory of them (read in name order). Every
embedding must have the same length; a null or ragged row stops the
conversion with its file and row number. Memory stays at one row group plus
one shard. Needs pyarrow and numpy.
"""
import argparse
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def parquet_files(path):
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.endswith(".parquet"))
        if not names:
            sys.exit(f"{path}: no .parquet files")
        return [os.path.join(path, n) for n in names]
    return [path]


def column_to_matrix(col, where):
    """A list<float> / fixed_size_list<float> / large_list column chunk -> 2-D numpy array."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if col.null_count:
        first = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
        sys.exit(f"{where}: row {first} has a null embedding")
    t = col.type
    if pa.types.is_fixed_size_list(t):
        width = t.list_size
        values = col.flatten()
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = np.asarray(col.offsets)
        lengths = np.diff(offsets)
        if len(lengths) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        width = int(lengths[0])
        bad = np.nonzero(lengths != width)[0]
        if len(bad):
            sys.exit(f"{where}: row {bad[0]} has {lengths[bad[0]]} values, row 0 has {width}")
        values = col.flatten()
    else:
        sys.exit(f"{where}: the column is {t}, not a list of floats")
    if not pa.types.is_floating(values.type):
        sys.exit(f"{where}: the embedding values are {values.type}, not floats")
    arr = values.to_numpy(zero_copy_only=False)
    return arr.reshape(-1, width)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("outdir")
    ap.add_argument("--column", default="embedding")
    ap.add_argument("--rows-per-shard", type=int, default=1_000_000)
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    args = ap.parse_args()
    if args.rows_per_shard <= 0:
        sys.exit("--rows-per-shard must be positive")
    os.makedirs(args.outdir, exist_ok=True)
    dtype = np.dtype(args.dtype)
    shard, parts, held, width, total = 0, [], 0, None, 0

    def flush(final=False):
        nonlocal shard, parts, held
        while held >= args.rows_per_shard or (final and held):
            block = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
            out, rest = block[: args.rows_per_shard], block[args.rows_per_shard:]
            path = os.path.join(args.outdir, f"data-{shard:05d}.npy")
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(out, dtype=dtype))
            os.replace(tmp, path)  # never a half-written shard under the final name
            shard += 1
            parts = [rest] if len(rest) else []
            held = len(rest)

    for path in parquet_files(args.input):
        pf = pq.ParquetFile(path)
        if args.column not in pf.schema_arrow.names:
            sys.exit(f"{path}: no column '{args.column}' (it has {', '.join(pf.schema_arrow.names)})")
        row0 = 0
        for rg in range(pf.num_row_groups):
            tbl = pf.read_row_group(rg, columns=[args.column])
            m = column_to_matrix(tbl.column(0), f"{path} (row group {rg}, rows from {row0})")
            row0 += len(m)
            if len(m) == 0:
                continue
            if width is None:
                width = m.shape[1]
            elif m.shape[1] != width:
                sys.exit(f"{path}: embeddings of width {m.shape[1]}, earlier ones {width}")
            parts.append(m)
            held += len(m)
            total += len(m)
            flush()
    flush(final=True)
    print(f"{total} rows of width {width} in {shard} shard(s) in {args.outdir}")


if __name__ == "__main__":
    main()
