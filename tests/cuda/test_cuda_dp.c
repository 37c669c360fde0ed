/* Data-parallel training of CUDA trainers without MPI (lsae_trainer_set_comm
   with size > 1): P ranks as P threads of this process, each with its own
   model and trainer on GPU 0, summing through a communicator over shared
   memory that adds the ranks' buffers in rank order (what latentsae_mpi.h
   does across processes), against one GPU trainer fed the whole of each
   global batch.

   test_cuda_dp          on the GPU (tests/cuda/mpi.sh runs it first: it
                         needs no MPI)
   test_cuda_dp --cpu    the same on CPU trainers (make test-cuda-build runs
                         it: the harness is checked where there is no GPU)

   The checks, 20 optimizer steps of d=64, L=512, k=8 with multi-topk and
   AuxK (latents go dead after 100 rows), FP32, the geometric-median init,
   a global batch of 61 rows with one NaN row:
   - 2 and 3 ranks: every statistic of every step within 1e-5 of one
     process, the rows used and dropped and the dead count equal; after the
     20 steps every tensor and Adam moment within 1e-5 of its largest value,
     the dead-latent counters exact; every rank holds the same bits;
   - 2 rows a batch on 3 ranks (slices of 0, 1 and 1 rows), the same but
     tensors within 1e-4 (see there why);
   - 2 ranks run twice: the same bits;
   - 2 ranks with the gradient summed through sum_f32_device (here: the
     device buffer copied to the host, the same host sum, copied back; the
     path latentsae_nccl.h takes on the device): the bits of the host path;
   - a communicator of one rank: the one-process bits exactly;
   - a rank started with another seed: refused on every rank. */
#define LATENTSAE_IMPLEMENTATION
#include "../../latentsae.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef LATENTSAE_CUDA
#include <cuda_runtime_api.h>
#endif

#define D 64
#define LAT 512
#define GB 61
#define STEPS 20
#define PMAX 3
#define NT (2 * LAT * D + LAT + D)
#define TOL 1e-5

static lsae_device g_device = LSAE_DEVICE_CUDA;

/* tests/test_util.h's CHECK, without its unused helpers */
static int tu_failures = 0, tu_checks = 0;
#define CHECK(cond) do { ++tu_checks; if (!(cond)) { ++tu_failures; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECKF(cond, ...) do { ++tu_checks; if (!(cond)) { ++tu_failures; \
    fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define TEST_SUMMARY(name) (printf("%s: %d checks, %d failed\n", (name), tu_checks, tu_failures), tu_failures ? 1 : 0)

/* ------------------------------------------------ ranks as threads */

typedef struct group {
    int P;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    unsigned gen;
    void *slot[PMAX];
} group;

typedef struct rank_ctx {
    group *g;
    int rank;
} rank_ctx;

static void barrier(group *g)
{
    unsigned gen;
    pthread_mutex_lock(&g->mu);
    gen = g->gen;
    if (++g->arrived == g->P) {
        g->arrived = 0;
        g->gen++;
        pthread_cond_broadcast(&g->cv);
    } else
        while (gen == g->gen) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* every rank adds every rank's buffer in rank order into its own copy
   (after the first barrier); nobody writes its buffer before all have read */
static lsae_result th_sum_f32(void *ctx, float *buf, size_t n)
{
    rank_ctx *r = (rank_ctx *)ctx;
    group *g = r->g;
    float *acc = (float *)malloc((n ? n : 1) * sizeof(float));
    size_t i;
    int s;
    if (!acc) return LSAE_OUT_OF_MEMORY;
    g->slot[r->rank] = buf;
    barrier(g);
    memcpy(acc, g->slot[0], n * sizeof(float));
    for (s = 1; s < g->P; ++s)
        for (i = 0; i < n; ++i) acc[i] += ((const float *)g->slot[s])[i];
    barrier(g);
    memcpy(buf, acc, n * sizeof(float));
    free(acc);
    return LSAE_OK;
}

static lsae_result th_sum_f64(void *ctx, double *buf, size_t n)
{
    rank_ctx *r = (rank_ctx *)ctx;
    group *g = r->g;
    double *acc = (double *)malloc((n ? n : 1) * sizeof(double));
    size_t i;
    int s;
    if (!acc) return LSAE_OUT_OF_MEMORY;
    g->slot[r->rank] = buf;
    barrier(g);
    memcpy(acc, g->slot[0], n * sizeof(double));
    for (s = 1; s < g->P; ++s)
        for (i = 0; i < n; ++i) acc[i] += ((const double *)g->slot[s])[i];
    barrier(g);
    memcpy(buf, acc, n * sizeof(double));
    free(acc);
    return LSAE_OK;
}

static lsae_result th_bcast(void *ctx, void *buf, size_t bytes, int root)
{
    rank_ctx *r = (rank_ctx *)ctx;
    group *g = r->g;
    g->slot[r->rank] = buf;
    barrier(g);
    if (r->rank != root) memcpy(buf, g->slot[root], bytes);
    barrier(g);
    return LSAE_OK;
}

static int g_device_sums;   /* calls of th_sum_device (any rank) */

#ifdef LATENTSAE_CUDA
/* sum_f32_device: the device buffer to the host on the trainer's stream,
   the host sum above, and back; the same additions as th_sum_f32 */
static lsae_result th_sum_device(void *ctx, float *dev_buf, size_t n, void *stream)
{
    rank_ctx *r = (rank_ctx *)ctx;
    cudaStream_t s = (cudaStream_t)stream;
    float *h = (float *)malloc((n ? n : 1) * sizeof(float));
    lsae_result res;
    if (!h) return LSAE_OUT_OF_MEMORY;
    if (r->rank == 0) ++g_device_sums;   /* one thread writes it */
    if (cudaMemcpyAsync(h, dev_buf, n * sizeof(float), cudaMemcpyDeviceToHost, s) != cudaSuccess || cudaStreamSynchronize(s) != cudaSuccess) {
        free(h);
        return LSAE_ERROR;
    }
    res = th_sum_f32(ctx, h, n);
    if (res == LSAE_OK && (cudaMemcpyAsync(dev_buf, h, n * sizeof(float), cudaMemcpyHostToDevice, s) != cudaSuccess || cudaStreamSynchronize(s) != cudaSuccess))
        res = LSAE_ERROR;
    free(h);
    return res;
}
#endif

/* ------------------------------------------------ data and state */

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unif(uint64_t i, uint64_t salt) { return (double)(mix(i * 1000003ull + salt) >> 11) / 9007199254740992.0; }

/* a few atoms a row plus noise; row 7 of batch 3 has a NaN */
static void make_row(float *out, uint64_t i)
{
    size_t j, a;
    for (j = 0; j < D; ++j) out[j] = (float)(0.5 + 0.05 * (unif(i, 1000 + j) - 0.5));
    for (a = 0; a < 3; ++a) {
        uint64_t atom = mix(i * 7 + a) % 96;
        double w = 0.5 + unif(i, 2000 + a);
        for (j = 0; j < D; ++j) out[j] += (float)(w * (unif(atom, 3000 + j) - 0.5));
    }
    if (i == 3 * GB + 7) out[5] = NAN;
}

static lsae_config config(uint64_t seed)
{
    lsae_config c = lsae_config_default(D);
    c.num_latents = LAT;
    c.k = 8;
    c.multi_topk = 1;
    c.auxk_alpha = 1.0 / 32.0;
    c.dead_feature_threshold = 100;
    c.lr = 2e-3;
    c.lr_warmup_steps = 3;
    c.seed = seed;
    c.num_threads = 1;
    c.device = g_device;
    c.precision = LSAE_PRECISION_FP32;
    return c;
}

typedef struct snap {
    float t[3][NT];             /* weights, Adam m, Adam v */
    uint64_t fired[LAT];
    double stat[STEPS][5];      /* loss, fvu, auxk, multi-topk fvu, grad norm */
    size_t count[STEPS][3];     /* n_dead, rows used, rows dropped */
    uint64_t digest;
    int ok;
} snap;

static void take(snap *s, const lsae_model *m, const lsae_trainer *tr)
{
    lsae_trainer_state st;
    float *p = s->t[0];
    const size_t L = LAT, d = D;
    size_t i;
    uint64_t h = 1469598103934665603ull;
    const unsigned char *b;
    lsae_model_get_weights(m, p, p + L * d, p + L * d + L, p + 2 * L * d + L);
    memset(&st, 0, sizeof st);
    st.since_fired = s->fired;
    p = s->t[1];
    st.m_W_enc = p; st.m_b_enc = p + L * d; st.m_W_dec = p + L * d + L; st.m_b_dec = p + 2 * L * d + L;
    p = s->t[2];
    st.v_W_enc = p; st.v_b_enc = p + L * d; st.v_W_dec = p + L * d + L; st.v_b_dec = p + 2 * L * d + L;
    if (lsae_trainer_get_state(tr, &st) != LSAE_OK) s->ok = 0;
    b = (const unsigned char *)s->t;
    for (i = 0; i < sizeof s->t; ++i) h = (h ^ b[i]) * 1099511628211ull;
    b = (const unsigned char *)s->fired;
    for (i = 0; i < sizeof s->fired; ++i) h = (h ^ b[i]) * 1099511628211ull;
    s->digest = h;
}

/* ------------------------------------------------ a run */

typedef struct job {
    group *g;
    int rank, P, devsum, size1, seed_off;
    size_t gb;
    snap *out;                  /* rank 0's: statistics and state */
    uint64_t digest;
    lsae_result set_comm_r;
    char err[1200];             /* room for lsae_last_error() */
} job;

static void *rank_main(void *arg)
{
    job *j = (job *)arg;
    rank_ctx me;
    lsae_comm c;
    lsae_config cfg = config(7 + (uint64_t)j->seed_off);
    lsae_model *m = NULL;
    lsae_trainer *tr = NULL;
    lsae_step_stats st;
    float x[GB * D];
    size_t s, i, lo = j->gb * (size_t)j->rank / (size_t)j->P, hi = j->gb * ((size_t)j->rank + 1) / (size_t)j->P;
    snap *mine = (snap *)calloc(1, sizeof(snap));
    me.g = j->g;
    me.rank = j->rank;
    memset(&c, 0, sizeof c);
    c.rank = j->rank;
    c.size = j->size1 ? 1 : j->P;
    c.ctx = &me;
    c.sum_f32 = th_sum_f32;
    c.sum_f64 = th_sum_f64;
    c.broadcast = th_bcast;
#ifdef LATENTSAE_CUDA
    if (j->devsum) c.sum_f32_device = th_sum_device;
#endif
    mine->ok = 1;
    if (lsae_model_create(&cfg, NULL, &m) != LSAE_OK || lsae_trainer_create(m, &cfg, &tr) != LSAE_OK) {
        snprintf(j->err, sizeof j->err, "rank %d: creating the model: %s", j->rank, lsae_last_error());
        mine->ok = 0;
        goto out;   /* the other ranks then wait: the caller's timeout ends it */
    }
    j->set_comm_r = lsae_trainer_set_comm(tr, &c);
    if (j->set_comm_r != LSAE_OK) {
        snprintf(j->err, sizeof j->err, "rank %d: set_comm: %s", j->rank, lsae_last_error());
        mine->ok = 0;
        goto out;
    }
    for (s = 0; s < STEPS; ++s) {
        for (i = lo; i < hi; ++i) make_row(x + (i - lo) * D, (uint64_t)(s * GB + i));
        memset(&st, 0, sizeof st);
        if (lsae_trainer_step(tr, hi > lo ? x : NULL, hi - lo, &st) != LSAE_OK) {
            snprintf(j->err, sizeof j->err, "rank %d, step %zu: %s", j->rank, s, lsae_last_error());
            mine->ok = 0;
            break;
        }
        mine->stat[s][0] = st.loss; mine->stat[s][1] = st.fvu; mine->stat[s][2] = st.auxk;
        mine->stat[s][3] = st.multi_topk_fvu; mine->stat[s][4] = st.grad_norm;
        mine->count[s][0] = st.n_dead; mine->count[s][1] = st.rows_used; mine->count[s][2] = st.rows_dropped;
    }
    take(mine, m, tr);
    j->digest = mine->digest;
out:
    if (j->rank == 0) memcpy(j->out, mine, sizeof *mine);
    else if (!mine->ok) j->out->ok = 0;
    free(mine);
    lsae_trainer_free(tr);
    lsae_model_free(m);
    return NULL;
}

/* P ranks as threads; 0 when every rank ran and all hold rank 0's bits */
static int run(int P, size_t gb, int devsum, int size1, int seed_off_last, snap *out, lsae_result *set_comm_r)
{
    group g;
    job jobs[PMAX];
    pthread_t th[PMAX];
    int r, bad = 0;
    memset(&g, 0, sizeof g);
    g.P = P;
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    memset(out, 0, sizeof *out);
    out->ok = 1;
    for (r = 0; r < P; ++r) {
        memset(&jobs[r], 0, sizeof jobs[r]);
        jobs[r].g = &g;
        jobs[r].rank = r;
        jobs[r].P = P;
        jobs[r].gb = gb;
        jobs[r].devsum = devsum;
        jobs[r].size1 = size1;
        jobs[r].seed_off = r == P - 1 ? seed_off_last : 0;
        jobs[r].out = out;
        pthread_create(&th[r], NULL, rank_main, &jobs[r]);
    }
    for (r = 0; r < P; ++r) pthread_join(th[r], NULL);
    for (r = 0; r < P; ++r) {
        if (set_comm_r) set_comm_r[r] = jobs[r].set_comm_r;
        if (jobs[r].err[0] && !set_comm_r) { printf("  %s\n", jobs[r].err); bad = 1; }
        if (!set_comm_r && jobs[r].digest != jobs[0].digest) { printf("  rank %d holds other bits than rank 0\n", r); bad = 1; }
    }
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    return bad || !out->ok;
}

/* one trainer on the whole of each batch: the reference */
static void reference(size_t gb, snap *out)
{
    lsae_config cfg = config(7);
    lsae_model *m = NULL;
    lsae_trainer *tr = NULL;
    lsae_step_stats st;
    float x[GB * D];
    size_t s, i;
    memset(out, 0, sizeof *out);
    out->ok = 1;
    if (lsae_model_create(&cfg, NULL, &m) != LSAE_OK || lsae_trainer_create(m, &cfg, &tr) != LSAE_OK) {
        printf("  reference: %s\n", lsae_last_error());
        out->ok = 0;
        return;
    }
    for (s = 0; s < STEPS; ++s) {
        for (i = 0; i < gb; ++i) make_row(x + i * D, (uint64_t)(s * GB + i));
        if (lsae_trainer_step(tr, x, gb, &st) != LSAE_OK) {
            printf("  reference, step %zu: %s\n", s, lsae_last_error());
            out->ok = 0;
            break;
        }
        out->stat[s][0] = st.loss; out->stat[s][1] = st.fvu; out->stat[s][2] = st.auxk;
        out->stat[s][3] = st.multi_topk_fvu; out->stat[s][4] = st.grad_norm;
        out->count[s][0] = st.n_dead; out->count[s][1] = st.rows_used; out->count[s][2] = st.rows_dropped;
    }
    take(out, m, tr);
    lsae_trainer_free(tr);
    lsae_model_free(m);
}

/* worst tensor difference relative to the tensor's largest value; *stat the
   worst statistic's; *counts 1 if a count or dead counter differs */
static char g_worst_name[64];   /* which tensor diff found worst */

static double diff(const snap *a, const snap *b, double *stat, int *counts)
{
    static const size_t off[5] = { 0, LAT * D, LAT * D + LAT, 2 * LAT * D + LAT, NT };
    static const char *slab[3] = { "", "Adam m of ", "Adam v of " }, *tn[4] = { "W_enc", "b_enc", "W_dec", "b_dec" };
    double worst = 0.0;
    size_t q, t, i, s;
    *stat = 0.0;
    *counts = memcmp(a->fired, b->fired, sizeof a->fired) != 0 || memcmp(a->count, b->count, sizeof a->count) != 0;
    for (q = 0; q < 3; ++q)
        for (t = 0; t < 4; ++t) {
            double dmax = 0.0, bmax = 0.0, e;
            for (i = off[t]; i < off[t + 1]; ++i) {
                double dd = fabs((double)a->t[q][i] - (double)b->t[q][i]);
                if (dd > dmax || dd != dd) dmax = dd;
                if (fabs((double)b->t[q][i]) > bmax) bmax = fabs((double)b->t[q][i]);
            }
            e = bmax > 0.0 ? dmax / bmax : dmax;
            if (e > worst || e != e) {
                worst = e;
                snprintf(g_worst_name, sizeof g_worst_name, "%s%s", slab[q], tn[t]);
            }
        }
    for (s = 0; s < STEPS; ++s)
        for (q = 0; q < 5; ++q) {
            double e = fabs(a->stat[s][q] - b->stat[s][q]) / (fabs(b->stat[s][q]) > 1e-30 ? fabs(b->stat[s][q]) : 1.0);
            if (e > *stat || e != e) *stat = e;
        }
    return worst;
}

int main(int argc, char **argv)
{
    static snap ref, ref2, a, b;
    double w, sd;
    int counts, i;
    size_t s, most_dead = 0;
    lsae_result rc[PMAX];
    for (i = 1; i < argc; ++i)
        if (!strcmp(argv[i], "--cpu")) g_device = LSAE_DEVICE_CPU;
    if (g_device == LSAE_DEVICE_CUDA && lsae_backend_available(LSAE_DEVICE_CUDA) != LSAE_OK) {
        printf("test_cuda_dp: no GPU answers (%s); --cpu runs the same on CPU trainers\n", lsae_last_error());
        return 2;
    }
    printf("test_cuda_dp: data-parallel trainers as threads, on the %s\n", g_device == LSAE_DEVICE_CUDA ? "GPU" : "CPU");
    reference(GB, &ref);
    CHECK(ref.ok);
    for (s = 0; s < STEPS; ++s)
        if (ref.count[s][0] > most_dead) most_dead = ref.count[s][0];
    CHECKF(most_dead > 0 && ref.count[3][2] == 1, "the reference must see dead latents (%zu) and batch 3's NaN row (%zu dropped)", most_dead, ref.count[3][2]);

    /* 2 and 3 ranks, 61 rows */
    for (i = 2; i <= 3; ++i) {
        CHECK(run(i, GB, 0, 0, 0, &a, NULL) == 0);
        w = diff(&a, &ref, &sd, &counts);
        CHECKF(w <= TOL && sd <= TOL && !counts, "%d ranks: tensors %.3g, statistics %.3g of one process, counts %s", i, w, sd, counts ? "differ" : "agree");
        printf("  %d ranks: every tensor within %.2g (worst: %s), every statistic within %.2g of one process; counts and dead counters equal\n", i, w, g_worst_name, sd);
        if (i == 2) {
            CHECK(run(2, GB, 0, 0, 0, &b, NULL) == 0);
            CHECKF(b.digest == a.digest, "2 ranks run twice: other bits (%016llx, %016llx)", (unsigned long long)a.digest, (unsigned long long)b.digest);
            printf("  2 ranks run twice: the same bits\n");
            g_device_sums = 0;
            CHECK(run(2, GB, 1, 0, 0, &b, NULL) == 0);
            CHECKF(b.digest == a.digest, "2 ranks, gradient through sum_f32_device: other bits than the host path");
            if (g_device == LSAE_DEVICE_CUDA) CHECKF(g_device_sums == 2 * STEPS, "sum_f32_device called %d times, want 2 a step (gradient, fired flags)", g_device_sums);
            else CHECKF(g_device_sums == 0, "a CPU trainer called sum_f32_device %d times", g_device_sums);
            printf("  2 ranks, the gradient and fired flags through sum_f32_device (%d calls): the bits of the host path\n", g_device_sums);
        }
    }
    /* 2 rows a batch on 3 ranks: slices of 0, 1 and 1 rows */
    reference(2, &ref2);
    CHECK(ref2.ok);
    CHECK(run(3, 2, 0, 0, 0, &a, NULL) == 0);
    /* 1e-4 here: with 2 rows a batch an element whose gradient nearly
       cancels moves by about lr whatever its rounding (Adam), so a
       regrouped sum shows more (6.8e-6 measured on the CPU); a rank's part
       lost or counted twice is off by far more */
    w = diff(&a, &ref2, &sd, &counts);
    CHECKF(w <= 1e-4 && sd <= TOL && !counts, "2 rows on 3 ranks: tensors %.3g, statistics %.3g, counts %s", w, sd, counts ? "differ" : "agree");
    printf("  2 rows a batch on 3 ranks (one slice empty): tensors within %.2g (worst: %s), statistics within %.2g of one process\n", w, g_worst_name, sd);
    /* a communicator of one rank: the one-process bits */
    CHECK(run(1, GB, 0, 1, 0, &a, NULL) == 0);
    CHECKF(a.digest == ref.digest, "a one-rank communicator changed the bits");
    printf("  a one-rank communicator: the one-process bits\n");
    /* a rank with another seed: refused on every rank */
    run(2, GB, 0, 0, 1, &a, rc);
    CHECKF(rc[0] == LSAE_INVALID_ARGS && rc[1] == LSAE_INVALID_ARGS, "a rank with another seed: set_comm gave %s and %s", lsae_result_string(rc[0]), lsae_result_string(rc[1]));
    printf("  a rank with another seed: refused on both ranks\n");
    return TEST_SUMMARY("test_cuda_dp");
}
