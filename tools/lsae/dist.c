/* dist.c - lsae train under mpirun: data-parallel training (README
   "Distributed training"). Only in build/mpi/lsae, built with LSAE_MPI by
   `make` when mpicc is found; without LSAE_MPI every function here is the
   one-process case (rank 0 of 1) and lsae is as it always was.

   How a run is spread: every rank opens the same data and runs the same
   loader (the batch sequence is a function of the data, the batch size and
   the seed alone), and trains on its own contiguous slice of each global
   batch (lsae_mpi_slice: sizes differ by at most one row). The trainer sums
   what is global across the ranks (latentsae.h, lsae_trainer_set_comm), so
   every rank holds the same model after every step; rank 0 alone writes
   run.json, metrics.jsonl, checkpoints and the model, and prints. The files
   do not depend on the number of ranks, so a run may be resumed with another.
   Each rank's loader reads only the rows of its own slice
   (lsae_loader_set_comm: the batch sequence and the shuffle are computed on
   every rank from the seed, without reading data; one small sum per batch
   tells every rank where the NaN/Inf rows were, so all cut the same batch),
   so P ranks read about 1/P of the data each. LSAE_READ_STATS=1 makes every
   rank print, at the end, how many rows it read; LSAE_MPI_READ_ALL=1 brings
   back the whole batch on every rank (the same bits, for comparing).

   GPUs (a LATENTSAE_CUDA build, --device cuda): data-parallel training
   runs on GPUs too (latent sharding stays on the CPU). build/cuda-mpi/lsae
   sums through host memory (latentsae_mpi.h), and every rank trains on GPU
   0 (ranks may share it), or with LSAE_MPI_GPU_PER_RANK=1 on the GPU of its
   rank among the ranks on its node. build/cuda-nccl/lsae (LSAE_NCCL) sums
   the gradient GPU to GPU with NCCL (latentsae_nccl.h) and always takes the
   GPU of its node-local rank (one GPU per rank; LSAE_NCCL_DEVICE=n names
   it instead). Either way the ranks' sums
   are added in rank order, so a repeat with the same P gives the same bits.

   Failures: a rank that fails prints its line and aborts the whole job
   (MPI_Abort), so no rank is left waiting in a sum; one that dies outright
   (kill -9) makes mpirun end the others. Ctrl-C goes to mpirun, which ends
   the job (the last checkpoint stays); a SIGINT or SIGTERM sent to rank 0
   alone stops every rank after the current optimizer step, with a checkpoint,
   as in one process.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

static int g_rank = 0, g_ranks = 1;   /* this process, of how many */
static char g_who[32] = "";           /* " [rank 1 of 2]" after g_cmd in the messages of the ranks but 0 */
/* --shard-latents S on P = D S ranks: world rank r is shard r % S of the
   data-parallel slice r / S (so ranks 0 .. S - 1 are slice 0's shards) */
static int g_S = 1, g_D = 1;
#ifdef LSAE_MPI
static lsae_mpi g_mpi;
static lsae_comm g_comm;
static lsae_mpi g_mpi_shard, g_mpi_data;   /* with S > 1: the shard group (same slice), the data group (same shard, D > 1) */
static lsae_comm g_scomm, g_dcomm;
static MPI_Comm g_split[2];
#endif
#ifdef LSAE_NCCL
#if !defined(LSAE_MPI) || !defined(LATENTSAE_CUDA)
#error "LSAE_NCCL needs LSAE_MPI and LATENTSAE_CUDA (build/cuda-nccl/lsae in the Makefile)"
#endif
static lsae_nccl g_nccl;
static lsae_comm g_ncomm;       /* g_comm with the gradient summed by NCCL */
static int g_nccl_up = 0;
#endif
static int g_local_rank = 0;    /* among the ranks on this node: picks the GPU */

/* The end of a failed command: with several ranks the whole job goes (a
   rank other than 0 waits a moment first, so that when every rank meets the
   same error, rank 0's line is the one printed last and the job still ends). */
static NORETURN void dist_exit_failed(int code)
{
#ifdef LSAE_MPI
    if (g_ranks > 1) {
        fflush(stderr);
        if (g_rank != 0) {
            struct timespec ts;
            ts.tv_sec = 1;
            ts.tv_nsec = 0;
            nanosleep(&ts, NULL);
        }
        MPI_Abort(MPI_COMM_WORLD, code);
    }
#endif
    exit(code);
}

/* MPI up, before any command runs; argv as MPI_Init may have changed it. */
static void dist_start(int *argc, char ***argv)
{
#ifdef LSAE_MPI
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "lsae: MPI_Init failed\n");
        exit(1);
    }
    if (lsae_mpi_init(&g_mpi, MPI_COMM_WORLD, &g_comm) != LSAE_OK) {
        fprintf(stderr, "lsae: setting up MPI failed\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    g_rank = g_comm.rank;
    g_ranks = g_comm.size;
    if (g_rank > 0) snprintf(g_who, sizeof g_who, " [rank %d of %d]", g_rank, g_ranks);
#ifdef LATENTSAE_CUDA
    if (g_ranks > 1 && lsae_mpi_local_rank(MPI_COMM_WORLD, &g_local_rank) != LSAE_OK) {
        fprintf(stderr, "lsae: finding this rank's place on its node failed\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
#endif
#else
    (void)argc;
    (void)argv;
#endif
}

static void dist_end(void)
{
#ifdef LSAE_NCCL
    if (g_nccl_up) lsae_nccl_free(&g_nccl);
    g_nccl_up = 0;
#endif
#ifdef LSAE_MPI
    if (g_S > 1) {
        lsae_mpi_free(&g_mpi_shard);
        MPI_Comm_free(&g_split[0]);
        if (g_D > 1) { lsae_mpi_free(&g_mpi_data); MPI_Comm_free(&g_split[1]); }
    }
    lsae_mpi_free(&g_mpi);
    MPI_Finalize();
#endif
}

/* --shard-latents S: the world's D x S grid, each rank in its shard group
   (the S ranks of its slice) and, with D > 1, its data group (the D ranks
   holding its shard). Collective. */
static void dist_grid(int S)
{
#ifdef LSAE_MPI
    g_S = S;
    g_D = g_ranks / S;
    if (MPI_Comm_split(MPI_COMM_WORLD, g_rank / S, g_rank, &g_split[0]) != MPI_SUCCESS ||
        MPI_Comm_split(MPI_COMM_WORLD, g_rank % S, g_rank, &g_split[1]) != MPI_SUCCESS)
        fail("splitting the %d ranks into %d slices of %d latent shards failed", g_ranks, g_ranks / S, S);
    if (lsae_mpi_init(&g_mpi_shard, g_split[0], &g_scomm) != LSAE_OK) fail("setting up the latent shard groups failed");
    if (g_D > 1) {
        if (lsae_mpi_init(&g_mpi_data, g_split[1], &g_dcomm) != LSAE_OK) fail("setting up the data-parallel groups failed");
    } else
        MPI_Comm_free(&g_split[1]);
#else
    (void)S;
#endif
}

/* The GPU this rank trains on (cfg.cuda_device): its node-local rank with
   NCCL (one GPU per rank) or with LSAE_MPI_GPU_PER_RANK=1; else 0, every
   rank on one GPU. One process: 0, as always. */
static int dist_cuda_device(void)
{
#ifdef LSAE_NCCL
    return getenv("LSAE_NCCL_DEVICE") ? atoi(getenv("LSAE_NCCL_DEVICE")) : g_local_rank;   /* as lsae_nccl_init picks it */
#else
    const char *e = getenv("LSAE_MPI_GPU_PER_RANK");
    return e && !strcmp(e, "1") ? g_local_rank : 0;
#endif
}

/* This rank's shard, 0 .. g_S - 1 (its slice is g_rank / g_S) */
static int dist_shard_rank(void) { return g_rank % g_S; }

/* The trainer sums across the ranks (one rank: the trainer as without
   MPI); with shard set (--shard-latents), across its shard group and, in a
   grid, its data group. */
static void dist_attach(lsae_trainer *tr, const lsae_model *m, int shard)
{
#ifdef LSAE_MPI
    lsae_result r;
    if (g_ranks > 1 && shard && g_D > 1 && (r = lsae_trainer_set_comm(tr, &g_dcomm)) != LSAE_OK) lib_fail(r, "training data-parallel over the latent shards' slices");
    if (g_ranks > 1 && shard && (r = lsae_trainer_set_shard_comm(tr, &g_scomm)) != LSAE_OK) lib_fail(r, "training latent-sharded on several ranks");
#ifdef LSAE_NCCL
    /* a trainer on a GPU sums its gradient through NCCL; set up here, when
       every rank has its model on its GPU (collective: every rank is here) */
    if (g_ranks > 1 && !shard && lsae_model_config(m)->device == LSAE_DEVICE_CUDA) {
        if (!g_nccl_up) {
            if (lsae_nccl_init(&g_nccl, MPI_COMM_WORLD, &g_ncomm) != LSAE_OK) fail("setting up NCCL failed: %s", g_nccl.err);
            g_nccl_up = 1;
        }
        if ((r = lsae_trainer_set_comm(tr, &g_ncomm)) != LSAE_OK) lib_fail(r, "training on several GPUs (NCCL)");
        return;
    }
#endif
    if (g_ranks > 1 && !shard && (r = lsae_trainer_set_comm(tr, &g_comm)) != LSAE_OK) lib_fail(r, "training on several ranks");
#else
    (void)tr;
    (void)shard;
#endif
    (void)m;
}

/* --shard-latents checkpoints: rank 0 writes the files and, as it goes,
   asks the other shards of slice 0 for their rows of one array at a time: a
   request (what, l0, n) to the owner, answered with the piece's bytes. The
   others serve requests until rank 0 says it is done (what = -1). Point to
   point on the world communicator (the trainer's sums use collectives on
   communicators of their own), the bytes in segments that fit MPI's int. */
enum { DIST_TAG_ASK = 78, DIST_TAG_PIECE = 79 };

/* bytes of buf to (send) or from peer */
static void dist_piece_bytes(int peer, int send, void *buf, size_t bytes)
{
#ifdef LSAE_MPI
    const size_t seg = (size_t)1 << 30;
    size_t at;
    for (at = 0; at < bytes; at += seg) {
        int n = (int)(bytes - at < seg ? bytes - at : seg);
        if (send ? MPI_Send((unsigned char *)buf + at, n, MPI_BYTE, peer, DIST_TAG_PIECE, MPI_COMM_WORLD) != MPI_SUCCESS
                 : MPI_Recv((unsigned char *)buf + at, n, MPI_BYTE, peer, DIST_TAG_PIECE, MPI_COMM_WORLD, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            fail("moving a latent shard's rows to rank 0 for the checkpoint failed");
    }
#else
    (void)peer;
    (void)send;
    (void)buf;
    (void)bytes;
#endif
}

static void dist_piece_send_ask(int to, int64_t what, size_t l0, size_t n)
{
#ifdef LSAE_MPI
    int64_t q[3];
    q[0] = what;
    q[1] = (int64_t)l0;
    q[2] = (int64_t)n;
    if (MPI_Send(q, (int)sizeof q, MPI_BYTE, to, DIST_TAG_ASK, MPI_COMM_WORLD) != MPI_SUCCESS)
        fail("asking rank %d for its latent shard's rows for the checkpoint failed", to);
#else
    (void)to;
    (void)what;
    (void)l0;
    (void)n;
    fail("internal: a latent shard's rows asked of rank %d without MPI", to);
#endif
}

/* On rank 0: rows [l0, l0 + n) of array `what` (an lsae_piece) from rank
   `owner`, bytes of them, into dst. */
static void dist_piece_ask(int owner, int what, size_t l0, size_t n, void *dst, size_t bytes)
{
    dist_piece_send_ask(owner, what, l0, n);
    dist_piece_bytes(owner, 0, dst, bytes);
}

/* On ranks 1 .. S - 1 of slice 0: answer rank 0's requests, each with the
   piece fill puts in buf (returning its length), until rank 0 is done. */
static void dist_piece_serve(size_t (*fill)(void *ctx, int what, size_t l0, size_t n, void *buf), void *ctx, void *buf)
{
#ifdef LSAE_MPI
    for (;;) {
        int64_t q[3];
        if (MPI_Recv(q, (int)sizeof q, MPI_BYTE, 0, DIST_TAG_ASK, MPI_COMM_WORLD, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            fail("waiting for rank 0's requests for the checkpoint failed");
        if (q[0] < 0) return;
        dist_piece_bytes(0, 1, buf, fill(ctx, (int)q[0], (size_t)q[1], (size_t)q[2], buf));
    }
#else
    (void)fill;
    (void)ctx;
    (void)buf;
#endif
}

/* On rank 0: the save is written; ranks 1 .. S - 1 stop serving. */
static void dist_piece_done(int S)
{
    int r;
    for (r = 1; r < S; ++r) dist_piece_send_ask(r, -1, 0, 0);
}

/* The loader returns this rank's slice of each global batch and reads only
   those rows (one process: the whole batch). Returns 1 when it slices. */
static int dist_loader(lsae_loader *ld)
{
#ifdef LSAE_MPI
    lsae_result r;
    if (g_S > 1) {
        /* latent shards: each slice's rows (the whole batch with one slice),
           read by each of its shards */
        if (g_D > 1 && (r = lsae_loader_set_comm(ld, &g_dcomm)) != LSAE_OK) lib_fail(r, "reading the data on several ranks");
        return g_D > 1;
    }
    /* LSAE_MPI_READ_ALL=1: every rank reads each whole batch and keeps its
       slice, as before lsae_loader_set_comm (the tests compare the two) */
    if (g_ranks > 1 && !getenv("LSAE_MPI_READ_ALL")) {
        if ((r = lsae_loader_set_comm(ld, &g_comm)) != LSAE_OK) lib_fail(r, "reading the data on several ranks");
        return 1;
    }
#else
    (void)ld;
#endif
    return 0;
}

/* Rank 0's bytes in buf on every rank. */
static void dist_broadcast(void *buf, size_t bytes)
{
#ifdef LSAE_MPI
    if (g_ranks > 1 && g_comm.broadcast(g_comm.ctx, buf, bytes, 0) != LSAE_OK) fail("broadcast across ranks failed");
#else
    (void)buf;
    (void)bytes;
#endif
}

/* Whether to stop now: rank 0's Ctrl-C flag, the same answer on every rank. */
static int dist_stop_requested(void)
{
    int stop = g_stop != 0;
    if (g_ranks > 1) dist_broadcast(&stop, sizeof stop);
    return stop;
}
