/* Data-parallel training speed (make bench-mpi; bench/bench_mpi.sh runs it
   under mpirun at 1 and 2 ranks and prints the ratio).

       mpirun -np P build/mpi/bench_mpi [d L k B steps]

   Every rank trains with one thread on its slice of a global batch of B
   synthetic rows (sizes differ by at most one; the same batch every step),
   through latentsae_mpi.h; one warm-up step (b_dec's geometric median, first-touch of the buffers),
   then `steps` optimizer steps between two barriers. Rank 0 prints
   "samples/s X" for the global batch: the same work at any P, so the ratio
   of two runs is the speed-up. Not a test: timings live in bench/. */
#define LATENTSAE_IMPLEMENTATION
#include <mpi.h>
#include "../latentsae.h"
#include "../latentsae_mpi.h"
#include <stdio.h>
#include <stdlib.h>

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
    size_t d = 768, L = 6144, k = 32, B = 2048, steps = 5, lo, hi, i, j, s;
    lsae_mpi mc;
    lsae_comm comm = { 0, 1, NULL, NULL, NULL, NULL, NULL, NULL };
    lsae_config c;
    lsae_model *m;
    lsae_trainer *tr;
    float *x;
    double t0, t1;
    MPI_Init(&argc, &argv);
    if (argc > 5) {
        d = (size_t)atol(argv[1]); L = (size_t)atol(argv[2]); k = (size_t)atol(argv[3]);
        B = (size_t)atol(argv[4]); steps = (size_t)atol(argv[5]);
    }
    if (lsae_mpi_init(&mc, MPI_COMM_WORLD, &comm) != LSAE_OK) MPI_Abort(MPI_COMM_WORLD, 1);
    lsae_mpi_slice(B, comm.rank, comm.size, &lo, &hi);
    c = lsae_config_default(d);
    c.num_latents = L;
    c.k = k;
    c.num_threads = 1;
    c.lr_warmup_steps = 10;
    c.dead_feature_threshold = 100000; /* AuxK on for most latents after a few steps would change the work; keep it off here */
    x = (float *)malloc((hi - lo + 1) * d * sizeof(float));
    if (!x || lsae_model_create(&c, NULL, &m) != LSAE_OK || lsae_trainer_create(m, &c, &tr) != LSAE_OK ||
        (comm.size > 1 && lsae_trainer_set_comm(tr, &comm) != LSAE_OK)) {
        fprintf(stderr, "bench_mpi: %s\n", lsae_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* one batch, made outside the clock and fed every step */
    for (i = lo; i < hi; ++i)
        for (j = 0; j < d; ++j)
            x[(i - lo) * d + j] = (float)((double)(mix(i * d + j) >> 11) * (1.0 / 9007199254740992.0) - 0.5);
    t0 = 0.0;
    for (s = 0; s <= steps; ++s) {
        if (s == 1) {
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = MPI_Wtime();
        }
        if (lsae_trainer_step(tr, x, hi - lo, NULL) != LSAE_OK) {
            fprintf(stderr, "bench_mpi: %s\n", lsae_last_error());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    t1 = MPI_Wtime();
    if (comm.rank == 0)
        printf("ranks %d d %zu L %zu k %zu batch %zu steps %zu: %.3f s, samples/s %.1f\n", comm.size, d, L, k, B, steps, t1 - t0,
               (double)(steps * B) / (t1 - t0));
    if (comm.size > 1) {
        /* what one step's gradient exchange costs alone: the best of 3 sums
           of a buffer the size of the gradient (2 L d + L + d floats) */
        size_t n = 2 * L * d + L + d;
        float *g = (float *)calloc(n, sizeof(float));
        double best = 1e30;
        int it;
        for (it = 0; g && it < 3; ++it) {
            double a;
            MPI_Barrier(MPI_COMM_WORLD);
            a = MPI_Wtime();
            comm.sum_f32(comm.ctx, g, n);
            MPI_Barrier(MPI_COMM_WORLD);
            if (MPI_Wtime() - a < best) best = MPI_Wtime() - a;
        }
        if (comm.rank == 0) printf("gradient sum (%.1f MB) %.1f ms\n", (double)n * 4.0 / 1e6, 1e3 * best);
        free(g);
    }
    lsae_trainer_free(tr);
    lsae_model_free(m);
    free(x);
    lsae_mpi_free(&mc);
    MPI_Finalize();
    return 0;
}
