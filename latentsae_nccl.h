/* latentsae_nccl.h - the lsae_comm of latentsae.h over MPI and NCCL, for
   data-parallel training of a CUDA trainer with one GPU per rank (README
   "Distributed training").

   Include it after <mpi.h>, latentsae.h (with LATENTSAE_CUDA) and
   latentsae_mpi.h; link NCCL (-lnccl) and the CUDA runtime. Everything here
   is static:

       #include <mpi.h>
       #define LATENTSAE_CUDA
       #include "latentsae.h"
       #include "latentsae_mpi.h"
       #include "latentsae_nccl.h"

       lsae_nccl nc;
       lsae_comm comm;
       MPI_Init(&argc, &argv);
       lsae_nccl_init(&nc, MPI_COMM_WORLD, &comm);   (sets this rank's GPU)
       cfg.cuda_device = nc.device;                  (the model on that GPU)
       ... lsae_model_to_device(model, LSAE_DEVICE_CUDA), lsae_trainer_create
       lsae_trainer_set_comm(trainer, &comm);
       ... every rank: lsae_trainer_step(trainer, its rows of the batch, ...)
       lsae_nccl_free(&nc);
       MPI_Finalize();

   What goes where. The per-batch sums (a few doubles: the batch's column
   sums and variance, the geometric median's sums, the loss), the model
   check's broadcast and the allgather are latentsae_mpi.h's, on host
   memory. The gradient and the fired flags, once per optimizer step, stay
   on the GPUs: lsae_comm's sum_f32_device, here with NCCL.

   The GPU of each rank: its rank among the ranks on its node
   (lsae_mpi_local_rank: MPI_Comm_split_type, MPI_COMM_TYPE_SHARED, ordered
   by world rank), so with N ranks on a
   node they take GPUs 0 .. N-1 (as CUDA_VISIBLE_DEVICES numbers them), or
   the GPU LSAE_NCCL_DEVICE names (a launcher that gives each rank its own
   CUDA_VISIBLE_DEVICES: set it to 0 on every rank). More ranks on a node
   than GPUs is refused: NCCL cannot run two ranks on one
   GPU. To share a GPU between ranks, train without LSAE_NCCL (the sums then
   go through host memory, latentsae_mpi.h).

   Determinism. ncclAllReduce leaves the order of the additions to NCCL (it
   depends on the algorithm, protocol, channel count and topology NCCL picks;
   NCCL_ALGO=Ring NCCL_PROTO=Simple pin some of it, not all, across
   versions). So the sum here does no arithmetic inside NCCL: it is
   latentsae_mpi.h's reduce-scatter written with NCCL's data movement:

     1. the buffer [n] is cut into P chunks, chunk j = [n j / P, n (j+1) / P);
     2. ncclSend / ncclRecv (one group) bring chunk j of every rank to rank j;
     3. rank j adds its P copies in rank order on its GPU,
           out = ((buf_0 + buf_1) + buf_2) + ... + buf_{P-1}
        (lsae__cuda_sum_parts in latentsae_cuda.cu, round to nearest, no
        contraction);
     4. P ncclBroadcasts (one group) hand every rank every summed chunk.

   So a run repeated with the same P gives the same bits, every rank holds
   the same bits, and they are the same bits as the host path's (the same
   additions in the same order), whatever NCCL_ALGO or NCCL_PROTO say. P
   ranks against one rank agree within rounding only (the sums are added in
   another order), not bit for bit: the bar is 1e-5 relative (README).

   Failures return LSAE_ERROR (LSAE_OUT_OF_MEMORY for memory) and leave a
   line in the lsae_nccl's err[]; the trainer then refuses further work.
   This path is compiled and linked by CI (make test-cuda-build) and has not
   yet been run on a GPU. */
#ifndef LATENTSAE_NCCL_H
#define LATENTSAE_NCCL_H

#ifndef LATENTSAE_MPI_H
#error "latentsae_nccl.h: include latentsae_mpi.h first (the host-side sums are its)"
#endif
#ifndef LATENTSAE_CUDA
#error "latentsae_nccl.h is for CUDA trainers: define LATENTSAE_CUDA before including latentsae.h, and link latentsae_cuda.o"
#endif

#include <stdio.h>
#include <cuda_runtime.h>
#include <nccl.h>

#ifndef LSAE_NCCL_SEGMENT
#define LSAE_NCCL_SEGMENT ((size_t)1 << 24) /* floats per round of the device sum: 64 MiB */
#endif

typedef struct lsae_nccl {
    lsae_mpi mpi;       /* first, so a pointer to lsae_nccl is one to its lsae_mpi: the host callbacks take it as theirs */
    ncclComm_t nccl;
    int rank, size;
    int local_rank;     /* among the ranks on this node */
    int device;         /* this rank's GPU: local_rank */
    float *scratch;     /* [cap] on device: the P copies of this rank's chunk */
    size_t cap;         /* floats */
    char err[1200];     /* the last failure, for the caller to print (room for lsae_last_error()) */
} lsae_nccl;

LSAE_MPI_DEF lsae_result lsae__nccl_fail(lsae_nccl *c, lsae_result r, const char *what, const char *why)
{
    snprintf(c->err, sizeof c->err, "%s: %s", what, why);
    return r;
}

/* device scratch for n floats */
LSAE_MPI_DEF lsae_result lsae__nccl_reserve(lsae_nccl *c, size_t n)
{
    cudaError_t e;
    if (n <= c->cap) return LSAE_OK;
    if (n > (size_t)-1 / sizeof(float)) return lsae__nccl_fail(c, LSAE_OUT_OF_MEMORY, "NCCL sum scratch", "size overflows");
    if (c->scratch) {
        (void)cudaFree(c->scratch);
        c->scratch = NULL;
        c->cap = 0;
    }
    if ((e = cudaMalloc((void **)&c->scratch, n * sizeof(float))) != cudaSuccess) {
        c->scratch = NULL;
        (void)cudaGetLastError();
        return lsae__nccl_fail(c, LSAE_OUT_OF_MEMORY, "NCCL sum scratch", cudaGetErrorString(e));
    }
    c->cap = n;
    return LSAE_OK;
}

/* lsae_comm's sum_f32_device: buf [n] in this rank's GPU memory, queued on
   stream (see the top of this file for the order of the additions) */
LSAE_MPI_DEF lsae_result lsae__nccl_sum_f32_device(void *ctx, float *buf, size_t n, void *stream)
{
    lsae_nccl *c = (lsae_nccl *)ctx;
    cudaStream_t s = (cudaStream_t)stream;
    const int P = c->size;
    size_t at;
    int i, dev = -1;
    ncclResult_t nr;
    lsae_result r;
    if (P == 1 || n == 0) return LSAE_OK;
    if (cudaGetDevice(&dev) != cudaSuccess || dev != c->device) {
        (void)cudaGetLastError();
        return lsae__nccl_fail(c, LSAE_ERROR, "NCCL sum", "the trainer's GPU is not this rank's NCCL GPU (set cfg.cuda_device = lsae_nccl.device)");
    }
    for (at = 0; at < n; at += LSAE_NCCL_SEGMENT) {
        const size_t seg = n - at < LSAE_NCCL_SEGMENT ? n - at : LSAE_NCCL_SEGMENT;
        float *base = buf + at;
        const size_t lo = seg * (size_t)c->rank / (size_t)P, hi = seg * ((size_t)c->rank + 1) / (size_t)P, len = hi - lo;
        if ((r = lsae__nccl_reserve(c, (size_t)P * (seg / (size_t)P + 1))) != LSAE_OK) return r;
        /* 2: my chunk i to rank i; rank i's copy of my chunk into slot i */
        if ((nr = ncclGroupStart()) != ncclSuccess) return lsae__nccl_fail(c, LSAE_ERROR, "ncclGroupStart", ncclGetErrorString(nr));
        for (i = 0; i < P; ++i) {
            const size_t a = seg * (size_t)i / (size_t)P, b = seg * ((size_t)i + 1) / (size_t)P;
            if (i == c->rank) continue;
            /* both sides skip an empty chunk: sender and receiver compute the same lengths */
            if (b > a && (nr = ncclSend(base + a, b - a, ncclFloat, i, c->nccl, s)) != ncclSuccess) break;
            if (len && (nr = ncclRecv(c->scratch + (size_t)i * len, len, ncclFloat, i, c->nccl, s)) != ncclSuccess) break;
        }
        if (i < P) {
            (void)ncclGroupEnd();
            return lsae__nccl_fail(c, LSAE_ERROR, "ncclSend/ncclRecv", ncclGetErrorString(nr));
        }
        if ((nr = ncclGroupEnd()) != ncclSuccess) return lsae__nccl_fail(c, LSAE_ERROR, "ncclGroupEnd", ncclGetErrorString(nr));
        /* 3: my own copy into slot rank, then the P copies added in rank order */
        if (len) {
            cudaError_t e = cudaMemcpyAsync(c->scratch + (size_t)c->rank * len, base + lo, len * sizeof(float), cudaMemcpyDeviceToDevice, s);
            if (e != cudaSuccess) {
                (void)cudaGetLastError();
                return lsae__nccl_fail(c, LSAE_ERROR, "NCCL sum", cudaGetErrorString(e));
            }
            if (lsae__cuda_sum_parts(base + lo, c->scratch, len, P, stream) != LSAE_OK)
                return lsae__nccl_fail(c, LSAE_ERROR, "NCCL sum", lsae_last_error());
        }
        /* 4: every rank gets every summed chunk (in place on its owner) */
        if ((nr = ncclGroupStart()) != ncclSuccess) return lsae__nccl_fail(c, LSAE_ERROR, "ncclGroupStart", ncclGetErrorString(nr));
        for (i = 0; i < P; ++i) {
            const size_t a = seg * (size_t)i / (size_t)P, b = seg * ((size_t)i + 1) / (size_t)P;
            if (b > a && (nr = ncclBroadcast(base + a, base + a, b - a, ncclFloat, i, c->nccl, s)) != ncclSuccess) break;
        }
        if (i < P) {
            (void)ncclGroupEnd();
            return lsae__nccl_fail(c, LSAE_ERROR, "ncclBroadcast", ncclGetErrorString(nr));
        }
        if ((nr = ncclGroupEnd()) != ncclSuccess) return lsae__nccl_fail(c, LSAE_ERROR, "ncclGroupEnd", ncclGetErrorString(nr));
    }
    return LSAE_OK;
}

/* Fill *out for the communicator comm (MPI must be initialised; collective
   over comm): latentsae_mpi.h's callbacks for the host-side sums, and
   sum_f32_device over a NCCL communicator on this rank's GPU, which is
   made the calling thread's current device. c must outlive every trainer
   that uses out. On failure c->err says why (and MPI may have left other
   ranks waiting: abort the job). */
LSAE_MPI_DEF lsae_result lsae_nccl_init(lsae_nccl *c, MPI_Comm comm, lsae_comm *out)
{
    ncclUniqueId id;
    ncclResult_t nr;
    cudaError_t e;
    int ngpu = 0, on_node = 0;
    lsae_result r;
    MPI_Comm node;
    memset(c, 0, sizeof *c);
    if ((r = lsae_mpi_init(&c->mpi, comm, out)) != LSAE_OK) return lsae__nccl_fail(c, r, "lsae_nccl_init", "setting up MPI failed");
    c->rank = c->mpi.rank;
    c->size = c->mpi.size;
    if (lsae_mpi_local_rank(comm, &c->local_rank) != LSAE_OK) return lsae__nccl_fail(c, LSAE_ERROR, "lsae_nccl_init", "finding this rank's place on its node failed");
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node) != MPI_SUCCESS ||
        MPI_Comm_size(node, &on_node) != MPI_SUCCESS)
        return lsae__nccl_fail(c, LSAE_ERROR, "lsae_nccl_init", "counting the ranks on this node failed");
    MPI_Comm_free(&node);
    if ((e = cudaGetDeviceCount(&ngpu)) != cudaSuccess) {
        (void)cudaGetLastError();
        ngpu = 0;
    }
    /* LSAE_NCCL_DEVICE=n: this rank's GPU is n (a launcher that gives each
       rank its own CUDA_VISIBLE_DEVICES: then every rank says 0) */
    if (getenv("LSAE_NCCL_DEVICE")) {
        c->device = atoi(getenv("LSAE_NCCL_DEVICE"));
        on_node = 0;
    } else
        c->device = c->local_rank;
    if (on_node > ngpu) {
        char why[200];
        snprintf(why, sizeof why, "%d ranks on this node and %d GPUs: the NCCL build needs a GPU per rank (the build without LSAE_NCCL sums through host memory and lets ranks share a GPU)",
                 on_node, ngpu);
        return lsae__nccl_fail(c, LSAE_UNSUPPORTED, "lsae_nccl_init", why);
    }
    if ((e = cudaSetDevice(c->device)) != cudaSuccess) {
        (void)cudaGetLastError();
        return lsae__nccl_fail(c, LSAE_ERROR, "cudaSetDevice", cudaGetErrorString(e));
    }
    memset(&id, 0, sizeof id);
    if (c->rank == 0 && (nr = ncclGetUniqueId(&id)) != ncclSuccess) {
        /* the others wait in the broadcast: the caller must abort the job */
        return lsae__nccl_fail(c, LSAE_ERROR, "ncclGetUniqueId", ncclGetErrorString(nr));
    }
    if (MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, comm) != MPI_SUCCESS) return lsae__nccl_fail(c, LSAE_ERROR, "lsae_nccl_init", "broadcasting the NCCL id failed");
    if ((nr = ncclCommInitRank(&c->nccl, c->size, id, c->rank)) != ncclSuccess) {
        c->nccl = NULL;
        return lsae__nccl_fail(c, LSAE_ERROR, "ncclCommInitRank", ncclGetErrorString(nr));
    }
    out->ctx = c;   /* c->mpi is at offset 0: the host callbacks read it there */
    out->sum_f32_device = lsae__nccl_sum_f32_device;
    return LSAE_OK;
}

LSAE_MPI_DEF void lsae_nccl_free(lsae_nccl *c)
{
    if (c->nccl) (void)ncclCommDestroy(c->nccl);
    c->nccl = NULL;
    if (c->scratch) (void)cudaFree(c->scratch);
    c->scratch = NULL;
    c->cap = 0;
    lsae_mpi_free(&c->mpi);
}

#endif /* LATENTSAE_NCCL_H */
