/* latentsae_mpi.h - the lsae_comm of latentsae.h over MPI, for data-parallel
   training (README "Distributed training").

   Include it after latentsae.h and <mpi.h>, in one or more files (everything
   here is static):

       #include <mpi.h>
       #include "latentsae.h"
       #include "latentsae_mpi.h"

       lsae_mpi mc;
       lsae_comm comm;
       MPI_Init(&argc, &argv);
       lsae_mpi_init(&mc, MPI_COMM_WORLD, &comm);
       lsae_trainer_set_comm(trainer, &comm);
       ... every rank: lsae_trainer_step(trainer, its rows of the batch, ...)
       lsae_mpi_free(&mc);
       MPI_Finalize();

   latentsae.h itself needs no MPI: the trainer only calls the function
   pointers of lsae_comm. This file is the one place that does.

   Why not MPI_Allreduce. MPI_SUM leaves the order of the additions to the
   library: it may change with the message size, the number of ranks, the
   algorithm tuned in (Open MPI's "coll/tuned" picks one by size), and MPI
   does not promise that every rank gets the same bits. A data-parallel run
   must be bit-identical when repeated with the same P, and every rank must
   take the same optimizer step from the same numbers (the weights are never
   sent; they stay equal because every rank computes the same update). So the
   sum here is a reduce-scatter written on plain data movement, whose order
   we fix:

     1. the buffer [n] is cut into P chunks, chunk j = [n j / P, n (j+1) / P);
     2. MPI_Alltoallv sends chunk j of every rank to rank j (data movement
        only: no arithmetic inside MPI);
     3. rank j adds its P copies of chunk j in rank order,
           out = ((buf_0 + buf_1) + buf_2) + ... + buf_{P-1}
        the same order on every run, whoever arrived first;
     4. MPI_Allgatherv hands every rank all the summed chunks (data
        movement), so every rank holds the same bits.

   Each rank sends and receives about 2 n (P - 1) / P elements, what a ring
   all-reduce moves. Long buffers go in segments of LSAE_MPI_SEGMENT elements,
   so the counts fit MPI's int and the scratch stays small. With one rank
   every call returns the buffer unchanged.

   Failures. MPI's default error handler (MPI_ERRORS_ARE_FATAL) aborts the
   whole job on a communication error, and mpirun ends every rank when one
   dies; the callbacks return LSAE_ERROR only under a handler that returns
   errors. */
#ifndef LATENTSAE_MPI_H
#define LATENTSAE_MPI_H

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* static, and a file need not use every function */
#if defined(__GNUC__) || defined(__clang__)
#define LSAE_MPI_DEF static __attribute__((unused))
#else
#define LSAE_MPI_DEF static
#endif

#ifndef LSAE_MPI_SEGMENT
#define LSAE_MPI_SEGMENT ((size_t)1 << 22) /* elements per reduce-scatter round: 16 MiB of float */
#endif

typedef struct lsae_mpi {
    MPI_Comm comm;
    int rank, size;
    void *scratch;      /* [P chunk] the copies of this rank's chunk, then [P] counts and offsets */
    size_t cap;         /* bytes */
    int *counts;        /* [4 P]: send/receive counts and offsets */
} lsae_mpi;

LSAE_MPI_DEF int lsae__mpi_reserve(lsae_mpi *c, size_t bytes)
{
    void *p;
    if (bytes <= c->cap) return 0;
    p = realloc(c->scratch, bytes);
    if (!p) return -1;
    c->scratch = p;
    c->cap = bytes;
    return 0;
}

/* The fixed-order sum of buf [n] (elements of `esize` bytes, MPI type `dt`)
   across the ranks; add(acc, x, n) adds x into acc element-wise. */
LSAE_MPI_DEF lsae_result lsae__mpi_sum(lsae_mpi *c, void *buf, size_t n, size_t esize, MPI_Datatype dt,
                                 void (*add)(void *acc, const void *x, size_t n))
{
    const int P = c->size;
    size_t at;
    int i;
    if (P == 1 || n == 0) return LSAE_OK;
    for (at = 0; at < n; at += LSAE_MPI_SEGMENT) {
        const size_t seg = n - at < LSAE_MPI_SEGMENT ? n - at : LSAE_MPI_SEGMENT;
        unsigned char *base = (unsigned char *)buf + at * esize, *mine;
        int *sc = c->counts, *sd = sc + P, *rc = sd + P, *rd = rc + P;
        size_t lo = seg * (size_t)c->rank / (size_t)P, hi = seg * ((size_t)c->rank + 1) / (size_t)P, len = hi - lo;
        for (i = 0; i < P; ++i) {
            size_t a = seg * (size_t)i / (size_t)P, b = seg * ((size_t)i + 1) / (size_t)P;
            sc[i] = (int)(b - a);           /* my chunk i goes to rank i */
            sd[i] = (int)a;
            rc[i] = (int)len;               /* rank i's copy of my chunk */
            rd[i] = (int)(len * (size_t)i);
        }
        if (lsae__mpi_reserve(c, (size_t)P * (len ? len : 1) * esize) != 0) return LSAE_OUT_OF_MEMORY;
        if (MPI_Alltoallv(base, sc, sd, dt, c->scratch, rc, rd, dt, c->comm) != MPI_SUCCESS) return LSAE_ERROR;
        /* rank order: copy 0, then add 1, 2, ... into it */
        mine = (unsigned char *)c->scratch;
        for (i = 1; i < P; ++i) add(mine, mine + (size_t)i * len * esize, len);
        memcpy(base + lo * esize, mine, len * esize);
        /* every rank gets every summed chunk (in place: each rank's own chunk is already there) */
        for (i = 0; i < P; ++i) {
            size_t a = seg * (size_t)i / (size_t)P, b = seg * ((size_t)i + 1) / (size_t)P;
            rc[i] = (int)(b - a);
            rd[i] = (int)a;
        }
        if (MPI_Allgatherv(MPI_IN_PLACE, 0, dt, base, rc, rd, dt, c->comm) != MPI_SUCCESS) return LSAE_ERROR;
    }
    return LSAE_OK;
}

LSAE_MPI_DEF void lsae__mpi_add_f32(void *acc, const void *x, size_t n)
{
    float *a = (float *)acc;
    const float *b = (const float *)x;
    size_t i;
    for (i = 0; i < n; ++i) a[i] += b[i];
}

LSAE_MPI_DEF void lsae__mpi_add_f64(void *acc, const void *x, size_t n)
{
    double *a = (double *)acc;
    const double *b = (const double *)x;
    size_t i;
    for (i = 0; i < n; ++i) a[i] += b[i];
}

LSAE_MPI_DEF lsae_result lsae__mpi_sum_f32(void *ctx, float *buf, size_t n)
{
    return lsae__mpi_sum((lsae_mpi *)ctx, buf, n, sizeof(float), MPI_FLOAT, lsae__mpi_add_f32);
}

LSAE_MPI_DEF lsae_result lsae__mpi_sum_f64(void *ctx, double *buf, size_t n)
{
    return lsae__mpi_sum((lsae_mpi *)ctx, buf, n, sizeof(double), MPI_DOUBLE, lsae__mpi_add_f64);
}

LSAE_MPI_DEF lsae_result lsae__mpi_broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    lsae_mpi *c = (lsae_mpi *)ctx;
    size_t at;
    if (c->size == 1) return LSAE_OK;
    for (at = 0; at < bytes; at += (size_t)INT_MAX / 2) {
        size_t n = bytes - at < (size_t)INT_MAX / 2 ? bytes - at : (size_t)INT_MAX / 2;
        if (MPI_Bcast((unsigned char *)buf + at, (int)n, MPI_BYTE, root, c->comm) != MPI_SUCCESS) return LSAE_ERROR;
    }
    return LSAE_OK;
}

/* Fill *out for the communicator comm (MPI must be initialised). c must
   outlive every trainer that uses out. */
LSAE_MPI_DEF lsae_result lsae_mpi_init(lsae_mpi *c, MPI_Comm comm, lsae_comm *out)
{
    memset(c, 0, sizeof *c);
    c->comm = comm;
    if (MPI_Comm_rank(comm, &c->rank) != MPI_SUCCESS || MPI_Comm_size(comm, &c->size) != MPI_SUCCESS) return LSAE_ERROR;
    if (!(c->counts = (int *)malloc(4 * (size_t)c->size * sizeof(int)))) return LSAE_OUT_OF_MEMORY;
    memset(out, 0, sizeof *out);
    out->rank = c->rank;
    out->size = c->size;
    out->ctx = c;
    out->sum_f32 = lsae__mpi_sum_f32;
    out->sum_f64 = lsae__mpi_sum_f64;
    out->broadcast = lsae__mpi_broadcast;
    return LSAE_OK;
}

LSAE_MPI_DEF void lsae_mpi_free(lsae_mpi *c)
{
    free(c->scratch);
    free(c->counts);
    c->scratch = NULL;
    c->counts = NULL;
    c->cap = 0;
}

/* The rows [*lo, *hi) of a global batch of n rows that rank `rank` of `size`
   trains on: contiguous, sizes differing by at most one (n need not divide). */
LSAE_MPI_DEF void lsae_mpi_slice(size_t n, int rank, int size, size_t *lo, size_t *hi)
{
    *lo = n * (size_t)rank / (size_t)size;
    *hi = n * ((size_t)rank + 1) / (size_t)size;
}

#endif /* LATENTSAE_MPI_H */
