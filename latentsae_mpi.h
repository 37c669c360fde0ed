/* latentsae_mpi.h - the lsae_comm of latentsae.h over MPI, for data-parallel
   and latent-sharded training (README "Distributed training").

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

   When every rank is on one node (MPI_Comm_split_type finds them all), the
   same additions run through an MPI-3 shared window instead (step 2 and 4
   become copies into and out of shared memory; lsae__mpi_sum_shared):
   the same bits, about twice as fast as the messages on the 2-core machine
   this was measured on. LSAE_MPI_NO_SHM=1 in the environment of every rank
   (mpirun -x LSAE_MPI_NO_SHM) keeps the messages.

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

#ifndef LSAE_MPI_SHM_BYTES
#define LSAE_MPI_SHM_BYTES ((size_t)16 << 20) /* bytes per rank per round of the shared-memory sum */
#endif

typedef struct lsae_mpi {
    MPI_Comm comm;
    int rank, size;
    void *scratch;      /* [P chunk] the copies of this rank's chunk, then [P] counts and offsets */
    size_t cap;         /* bytes */
    int *counts;        /* [4 P]: send/receive counts and offsets */
    /* all ranks on one node: a shared window (MPI-3) instead of messages */
    int shm;
    MPI_Comm node;
    MPI_Win win;
    unsigned char **slot;   /* [P] each rank's input slot of LSAE_MPI_SHM_BYTES, in every rank's address space */
    unsigned char *result;  /* LSAE_MPI_SHM_BYTES: the summed round, chunk j written by rank j */
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
   across the ranks; add(out, a, b, n) sets out = a + b element-wise (out may be a). */
LSAE_MPI_DEF lsae_result lsae__mpi_sum(lsae_mpi *c, void *buf, size_t n, size_t esize, MPI_Datatype dt,
                                 void (*add)(void *out, const void *a, const void *b, size_t n))
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
        for (i = 1; i < P; ++i) add(mine, mine, mine + (size_t)i * len * esize, len);
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

/* The same sum when every rank is on one node, through an MPI-3 shared
   window. Rank j sums chunk j (the chunks as above): each rank copies into
   its own slot the chunks the other ranks sum (not its own); after a
   barrier, rank j adds chunk j of every rank's buffer in rank order, taking
   its own part from its buffer and the others' from their slots (the same
   additions as above, so the same bits), and writes the sum to its buffer
   and to the shared result; after a second barrier every rank copies the
   other ranks' summed chunks out. Per rank and round that moves n (P - 1) /
   P elements in, n (P - 1) / P out and reads n of the slots, where copying
   the whole buffer in and out moved 2 n, and the first addition writes
   a + b at once instead of a copy of a and then += b. On the 2-core machine
   this was measured on, MPI's messages between processes moved 18.9 MB in
   about 25 ms (37.8 MB of gradient: 48 ms a sum); see bench/bench_mpi.c
   for this path's time. The next round's (or call's) first barrier is
   reached only after every rank copied the result out, so two barriers a
   round suffice. */
LSAE_MPI_DEF lsae_result lsae__mpi_sum_shared(lsae_mpi *c, void *buf, size_t n, size_t esize,
                                             void (*add)(void *out, const void *a, const void *b, size_t n))
{
    const int P = c->size;
    const size_t per = LSAE_MPI_SHM_BYTES / esize;
    size_t at;
    int i;
    for (at = 0; at < n; at += per) {
        const size_t seg = n - at < per ? n - at : per;
        unsigned char *base = (unsigned char *)buf + at * esize;
        const size_t lo = seg * (size_t)c->rank / (size_t)P, hi = seg * ((size_t)c->rank + 1) / (size_t)P;
        for (i = 0; i < P; ++i) {
            const size_t a = seg * (size_t)i / (size_t)P, b = seg * ((size_t)i + 1) / (size_t)P;
            if (i != c->rank) memcpy(c->slot[c->rank] + a * esize, base + a * esize, (b - a) * esize);
        }
        MPI_Win_sync(c->win);
        if (MPI_Barrier(c->node) != MPI_SUCCESS) return LSAE_ERROR;
        MPI_Win_sync(c->win);
        if (hi > lo) {
            /* rank i's chunk: this rank's buffer for i == rank, else i's slot */
#define LSAE__MPI_PART(i) ((i) == c->rank ? base + lo * esize : c->slot[(i)] + lo * esize)
            unsigned char *res = c->result + lo * esize;
            add(res, LSAE__MPI_PART(0), LSAE__MPI_PART(1), hi - lo);
            for (i = 2; i < P; ++i) add(res, res, LSAE__MPI_PART(i), hi - lo);
#undef LSAE__MPI_PART
            memcpy(base + lo * esize, res, (hi - lo) * esize);
        }
        MPI_Win_sync(c->win);
        if (MPI_Barrier(c->node) != MPI_SUCCESS) return LSAE_ERROR;
        MPI_Win_sync(c->win);
        for (i = 0; i < P; ++i) {
            const size_t a = seg * (size_t)i / (size_t)P, b = seg * ((size_t)i + 1) / (size_t)P;
            if (i != c->rank) memcpy(base + a * esize, c->result + a * esize, (b - a) * esize);
        }
    }
    return LSAE_OK;
}

/* out[i] = a[i] + b[i]; out may be a (an accumulation) */
LSAE_MPI_DEF void lsae__mpi_add_f32(void *out, const void *a, const void *b, size_t n)
{
    float *o = (float *)out;
    const float *x = (const float *)a, *y = (const float *)b;
    size_t i;
    for (i = 0; i < n; ++i) o[i] = x[i] + y[i];
}

LSAE_MPI_DEF void lsae__mpi_add_f64(void *out, const void *a, const void *b, size_t n)
{
    double *o = (double *)out;
    const double *x = (const double *)a, *y = (const double *)b;
    size_t i;
    for (i = 0; i < n; ++i) o[i] = x[i] + y[i];
}

LSAE_MPI_DEF lsae_result lsae__mpi_sum_f32(void *ctx, float *buf, size_t n)
{
    lsae_mpi *c = (lsae_mpi *)ctx;
    if (c->shm && n > 0) return lsae__mpi_sum_shared(c, buf, n, sizeof(float), lsae__mpi_add_f32);
    return lsae__mpi_sum(c, buf, n, sizeof(float), MPI_FLOAT, lsae__mpi_add_f32);
}

LSAE_MPI_DEF lsae_result lsae__mpi_sum_f64(void *ctx, double *buf, size_t n)
{
    lsae_mpi *c = (lsae_mpi *)ctx;
    if (c->shm && n > 0) return lsae__mpi_sum_shared(c, buf, n, sizeof(double), lsae__mpi_add_f64);
    return lsae__mpi_sum(c, buf, n, sizeof(double), MPI_DOUBLE, lsae__mpi_add_f64);
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

/* Every rank's send[0..bytes) into recv in rank order (latent-sharded
   training's candidate lists): data movement only, so every rank holds the
   same bytes. MPI_Allgather while the total fits MPI's int count; beyond,
   each rank's part is broadcast from it in turn, in segments. */
LSAE_MPI_DEF lsae_result lsae__mpi_allgather(void *ctx, const void *send, size_t bytes, void *recv)
{
    lsae_mpi *c = (lsae_mpi *)ctx;
    const size_t seg_max = (size_t)INT_MAX / 2;
    size_t at;
    int r;
    if (c->size == 1 || bytes == 0) {
        if (bytes) memmove(recv, send, bytes);
        return LSAE_OK;
    }
    if (bytes <= (size_t)INT_MAX / (size_t)c->size)
        return MPI_Allgather((void *)send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, c->comm) == MPI_SUCCESS ? LSAE_OK : LSAE_ERROR;
    memmove((unsigned char *)recv + (size_t)c->rank * bytes, send, bytes);
    for (r = 0; r < c->size; ++r)
        for (at = 0; at < bytes; at += seg_max) {
            size_t n = bytes - at < seg_max ? bytes - at : seg_max;
            if (MPI_Bcast((unsigned char *)recv + (size_t)r * bytes + at, (int)n, MPI_BYTE, r, c->comm) != MPI_SUCCESS) return LSAE_ERROR;
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
    /* every rank on this node (same order): sum through a shared window,
       unless LSAE_MPI_NO_SHM=1 asks for the messages (the same bits) */
    if (c->size > 1 && !(getenv("LSAE_MPI_NO_SHM") && !strcmp(getenv("LSAE_MPI_NO_SHM"), "1"))) {
        int nsize = 0, i;
        void *mine = NULL;
        if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &c->node) != MPI_SUCCESS) return LSAE_ERROR;
        MPI_Comm_size(c->node, &nsize);
        if (nsize == c->size) {
            MPI_Aint bytes = (MPI_Aint)(c->rank == 0 ? 2 * LSAE_MPI_SHM_BYTES : LSAE_MPI_SHM_BYTES);
            if (!(c->slot = (unsigned char **)malloc((size_t)c->size * sizeof *c->slot))) return LSAE_OUT_OF_MEMORY;
            if (MPI_Win_allocate_shared(bytes, 1, MPI_INFO_NULL, c->node, &mine, &c->win) != MPI_SUCCESS) return LSAE_ERROR;
            for (i = 0; i < c->size; ++i) {
                MPI_Aint sz;
                int du;
                void *p;
                if (MPI_Win_shared_query(c->win, i, &sz, &du, &p) != MPI_SUCCESS) return LSAE_ERROR;
                c->slot[i] = (unsigned char *)p;
            }
            c->result = c->slot[0] + LSAE_MPI_SHM_BYTES;
            MPI_Win_lock_all(MPI_MODE_NOCHECK, c->win);
            c->shm = 1;
        } else {
            MPI_Comm_free(&c->node);
        }
    }
    memset(out, 0, sizeof *out);
    out->rank = c->rank;
    out->size = c->size;
    out->ctx = c;
    out->sum_f32 = lsae__mpi_sum_f32;
    out->sum_f64 = lsae__mpi_sum_f64;
    out->broadcast = lsae__mpi_broadcast;
    out->allgather = lsae__mpi_allgather;
    return LSAE_OK;
}

LSAE_MPI_DEF void lsae_mpi_free(lsae_mpi *c)
{
    if (c->shm) {
        MPI_Win_unlock_all(c->win);
        MPI_Win_free(&c->win);
        MPI_Comm_free(&c->node);
        free(c->slot);
        c->slot = NULL;
        c->shm = 0;
    }
    free(c->scratch);
    free(c->counts);
    c->scratch = NULL;
    c->counts = NULL;
    c->cap = 0;
}

/* This rank's index among the ranks of comm on its node, in rank order
   (how a rank picks its GPU: latentsae_nccl.h, lsae train under mpirun).
   Collective over comm. */
LSAE_MPI_DEF lsae_result lsae_mpi_local_rank(MPI_Comm comm, int *local_rank)
{
    MPI_Comm node;
    int rank;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS) return LSAE_ERROR;
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) != MPI_SUCCESS) return LSAE_ERROR;
    if (MPI_Comm_rank(node, local_rank) != MPI_SUCCESS) { MPI_Comm_free(&node); return LSAE_ERROR; }
    MPI_Comm_free(&node);
    return LSAE_OK;
}

/* The rows [*lo, *hi) of a global batch of n rows that rank `rank` of `size`
   trains on: contiguous, sizes differing by at most one (n need not divide). */
LSAE_MPI_DEF void lsae_mpi_slice(size_t n, int rank, int size, size_t *lo, size_t *hi)
{
    *lo = n * (size_t)rank / (size_t)size;
    *hi = n * ((size_t)rank + 1) / (size_t)size;
}

#endif /* LATENTSAE_MPI_H */
