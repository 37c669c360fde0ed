"""Peak resident memory per rank of latent-sharded training (--shard-latents
2) against one process, at a shape where the parameters and Adam's state
dominate (d 384, 49,152 latents: 8 L d floats = 604 MB in one process; a
batch of 256 rows). Every run is build/mpi/lsae with 1 thread a rank;
LSAE_RSS_STATS=1 makes each rank print its peak RSS (VmHWM) after the
training loop and again after the final checkpoint, which rank 0 streams to
disk piece by piece (lsae_checkpoint_save_pieces: one piece of at most 4 MB
of one shard's rows of one array at a time, from itself or the shard's
owner), so no rank ever holds the whole model: a save adds about one piece
to each rank's peak.
Not a test: memory, not results (tests/test_mpi_cli.py checks those).

    python3 bench/bench_shard_rss.py BUILD "mpirun --oversubscribe ..."
"""
import os
import re
import subprocess
import sys
import tempfile

build, mpirun = sys.argv[1], sys.argv[2].split()
args = ["--data", "examples/data/embeddings", "--batch-size", "256", "--expansion-factor", "128", "--k", "32", "--threads", "1",
        "--max-samples", "2560", "--save-every", "0", "--lr-warmup-steps", "2"]
env = dict(os.environ, LSAE_RSS_STATS="1")
peak = {}
with tempfile.TemporaryDirectory() as tmp:
    for S in (1, 2):
        extra = ["--shard-latents", str(S)] if S > 1 else []
        p = subprocess.run(mpirun + ["-x", "LSAE_RSS_STATS", "-np", str(S), f"{build}/mpi/lsae", "train"] + args + extra
                           + ["--out", os.path.join(tmp, f"s{S}")], capture_output=True, text=True, env=env, check=True)
        for m in re.finditer(r"rank (\d+) of \d+ peak RSS (\d+) kB (while training|with the final checkpoint)", p.stderr):
            peak[(S, int(m.group(1)), m.group(3))] = int(m.group(2)) / 1024.0
one = peak[(1, 0, "while training")]
print(f"d 384, L 49152, batch 256, 1 thread a rank: one process peak RSS {one:.0f} MB while training, "
      f"{peak[(1, 0, 'with the final checkpoint')]:.0f} MB with the final checkpoint")
for r in (0, 1):
    t, c = peak[(2, r, "while training")], peak[(2, r, "with the final checkpoint")]
    print(f"  2 latent shards, rank {r}: {t:.0f} MB while training ({t / one:.2f} of one process), "
          f"{c:.0f} MB with the final checkpoint ({c / one:.2f})")
