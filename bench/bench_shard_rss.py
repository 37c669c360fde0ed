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

Then the resume: the finished runs' checkpoints are resumed (no steps are
left, so each rank loads and stops there) in one process and on 2 and 3
shards, and each rank prints its peak RSS once the checkpoint is in
(LSAE_RSS_STATS' "at resume"). A sharded rank reads only its latents' rows
of the files (lsae_checkpoint_load_shard), so it should peak near 1/S of
one process's resume plus what every rank holds anyway (the batch, buffers,
MPI). With a third argument, a build directory of the code before (every
rank loading the whole checkpoint, then keeping its shard), the same
resumes run with its mpi/lsae too, on the same checkpoints, for the
before/after in one run on one machine.
Then --init: a new run starts from the one-process run's model (cfg.json +
sae.safetensors; one optimizer step) in one process and on 2 and 3 shards,
and each rank prints its peak RSS once it holds its model (LSAE_RSS_STATS'
"at init"). A sharded rank reads only its rows of the model file
(lsae_model_load_shard); before, every rank loaded the whole model and
copied its shard out. The base build, when given, runs the same starts.
Not a test: memory, not results (tests/test_mpi_cli.py checks those).

    python3 bench/bench_shard_rss.py BUILD "mpirun --oversubscribe ..." [BASE_BUILD]
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

build, mpirun = sys.argv[1], sys.argv[2].split()
base = sys.argv[3] if len(sys.argv) > 3 else None
args = ["--data", "examples/data/embeddings", "--batch-size", "256", "--expansion-factor", "128", "--k", "32", "--threads", "1",
        "--max-samples", "2560", "--save-every", "0", "--lr-warmup-steps", "2"]
env = dict(os.environ, LSAE_RSS_STATS="1")
WHEN = r"(while training|with the final checkpoint|at resume|at init)"


def lsae(bdir, S, cmd, tag, peak):
    """build bdir's mpi/lsae train on S ranks (S > 1: --shard-latents S);
    each rank's peaks into peak[(tag, rank, when)] in MB"""
    extra = ["--shard-latents", str(S)] if S > 1 else []
    p = subprocess.run(mpirun + ["-x", "LSAE_RSS_STATS", "-np", str(S), f"{bdir}/mpi/lsae", "train"] + cmd + extra,
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{bdir}/mpi/lsae on {S} ranks failed:\n{p.stdout}{p.stderr}")
    for m in re.finditer(r"rank (\d+) of \d+ peak RSS (\d+) kB " + WHEN, p.stderr):
        peak[(tag, int(m.group(1)), m.group(3))] = int(m.group(2)) / 1024.0


peak = {}
with tempfile.TemporaryDirectory() as tmp:
    for S in (1, 2):
        lsae(build, S, args + ["--out", os.path.join(tmp, f"s{S}")], S, peak)
    # the resumes: one process from its own checkpoint, 2 and 3 shards from
    # the 2-shard run's (the files do not depend on S)
    builds = [("after", build)] + ([("before", base)] if base else [])
    for name, bdir in builds:
        lsae(bdir, 1, ["--resume", os.path.join(tmp, "s1")], ("resume", name, 1), peak)
        for S in (2, 3):
            lsae(bdir, S, ["--resume", os.path.join(tmp, "s2")], ("resume", name, S), peak)
    # --init from the one-process run's model: one step each (only the
    # start is measured), each run its own --out
    init = [x for x in args if x not in ("--max-samples", "2560")] + ["--max-samples", "256", "--init", os.path.join(tmp, "s1")]
    for name, bdir in builds:
        for S in (1, 2, 3):
            lsae(bdir, S, init + ["--out", os.path.join(tmp, f"init_{name}_{S}")], ("init", name, S), peak)
            shutil.rmtree(os.path.join(tmp, f"init_{name}_{S}"))
one = peak[(1, 0, "while training")]
print(f"d 384, L 49152, batch 256, 1 thread a rank: one process peak RSS {one:.0f} MB while training, "
      f"{peak[(1, 0, 'with the final checkpoint')]:.0f} MB with the final checkpoint")
for r in (0, 1):
    t, c = peak[(2, r, "while training")], peak[(2, r, "with the final checkpoint")]
    print(f"  2 latent shards, rank {r}: {t:.0f} MB while training ({t / one:.2f} of one process), "
          f"{c:.0f} MB with the final checkpoint ({c / one:.2f})")
for name, bdir in builds:
    res1 = peak[(("resume", name, 1), 0, "at resume")]
    print(f"resume ({name}: {bdir}/mpi/lsae): one process peak RSS {res1:.0f} MB once the checkpoint is loaded")
    for S in (2, 3):
        ranks = ", ".join(f"rank {r} {peak[(('resume', name, S), r, 'at resume')]:.0f} MB "
                          f"({peak[(('resume', name, S), r, 'at resume')] / res1:.2f})" for r in range(S))
        print(f"  {S} latent shards: {ranks}")
for name, bdir in builds:
    ini1 = peak[(("init", name, 1), 0, "at init")]
    print(f"--init ({name}: {bdir}/mpi/lsae): one process peak RSS {ini1:.0f} MB once it holds the model")
    for S in (2, 3):
        ranks = ", ".join(f"rank {r} {peak[(('init', name, S), r, 'at init')]:.0f} MB "
                          f"({peak[(('init', name, S), r, 'at init')] / ini1:.2f})" for r in range(S))
        print(f"  {S} latent shards: {ranks}")
