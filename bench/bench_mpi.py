"""Data-parallel speed-up on this machine (make bench-mpi): bench_mpi at
1 rank x 1 thread and at 2 ranks x 1 thread, the same global batch, runs
interleaved (so a neighbour's load hits both alike), the median samples/s of
each and their ratio. The issue's target is 1.8x on 2 cores.

    python3 bench/bench_mpi.py BUILD "mpirun --oversubscribe ..." [rounds]
"""
import re
import statistics
import subprocess
import sys

build, mpirun = sys.argv[1], sys.argv[2].split()
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
# d, L (expansion 8 at d = 768), k, global batch, timed steps
shapes = [(768, 6144, 32, 2048, 4), (768, 6144, 32, 8192, 2)]
for d, L, k, B, steps in shapes:
    rate = {1: [], 2: []}
    sums = []
    for _ in range(rounds):
        for P in (1, 2):
            out = subprocess.run(mpirun + ["-np", str(P), f"{build}/mpi/bench_mpi", str(d), str(L), str(k), str(B), str(steps)],
                                 capture_output=True, text=True, check=True).stdout
            rate[P].append(float(re.search(r"samples/s ([0-9.]+)", out).group(1)))
            m = re.search(r"gradient sum \(([0-9.]+) MB\) ([0-9.]+) ms", out)
            if m:
                sums.append(float(m.group(2)))
                mb = m.group(1)
    m1, m2 = statistics.median(rate[1]), statistics.median(rate[2])
    print(f"d {d} L {L} k {k} global batch {B}: 1 rank {m1:.0f} samples/s ({1e3 * B / m1:.0f} ms a step), "
          f"2 ranks {m2:.0f} samples/s ({1e3 * B / m2:.0f} ms a step): {m2 / m1:.2f}x "
          f"(median of {rounds}; 2-rank runs {min(rate[2]) / m1:.2f}x to {max(rate[2]) / m1:.2f}x); "
          f"the gradient's sum alone ({mb} MB) {statistics.median(sums):.0f} ms")
