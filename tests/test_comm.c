/* The data-parallel path of the trainer (lsae_trainer_set_comm) without MPI,
   so that it runs wherever the C tests run (no OpenMP, C++, ASan + UBSan,
   valgrind, the cross builds); tests/mpi_driver.c runs it over real MPI.

   - Two ranks holding the same rows are simulated by one process whose
     communicator doubles every sum (rank 0's part plus rank 1's identical
     part, in rank order: exact in floating point). That is one process
     training on the batch written twice, [x; x]: every statistic and, after
     20 optimizer steps, every tensor (weights, Adam's moments) must agree
     within 1e-5 relative with a plain trainer on [x; x], the dead-latent
     counters exactly, rows_used = 2 B. (A trainer that forgot a sum would
     be off by a factor 2 somewhere; the checks are planted-fault tested
     below.)
   - A one-rank communicator gives the bits of no communicator.
   - A sum that fails stops the trainer with a message; later calls refuse.
   - set_comm refuses bad ranks, missing callbacks, a window in progress, a
     rank whose model differs from rank 0's, and the batch-wide types on
     more than one rank (LSAE_UNSUPPORTED).
   - Latent sharding (lsae_trainer_set_shard_comm), ranks as threads (POSIX
     builds; skipped elsewhere): 2 and 3 shards (100 latents: 50/50 and
     33/33/34) and 2 x 2, 2 x 3 grids with data parallelism, against one
     process on the same model (with exact ties planted across shards) and
     batches: every tensor, statistic and dead counter after 20 steps within
     1e-5, AuxK on; a repeated run bit-identical; planted faults seen; shard
     models hold the full model's rows and refuse what needs all of them. */
#include "test_util.h"
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <string.h>

#define D 24
#define L 96
#define B 37
#define STEPS 20

/* ------------------------------------------------------ fake communicators */

static int g_calls, g_fail_at, g_plant;

static lsae_result dbl_f32(void *ctx, float *buf, size_t n)
{
    size_t i;
    (void)ctx;
    ++g_calls;
    if (g_fail_at && g_calls == g_fail_at) return LSAE_ERROR;
    if (g_plant == 1) return LSAE_OK;     /* planted: the gradients are not summed */
    for (i = 0; i < n; ++i) buf[i] = buf[i] + buf[i];
    return LSAE_OK;
}
static lsae_result dbl_f64(void *ctx, double *buf, size_t n)
{
    size_t i;
    (void)ctx;
    ++g_calls;
    if (g_fail_at && g_calls == g_fail_at) return LSAE_ERROR;
    if (g_plant == 2) return LSAE_OK;     /* planted: TV, the loss and the median stay local */
    for (i = 0; i < n; ++i) buf[i] = buf[i] + buf[i];
    return LSAE_OK;
}
static lsae_result same_f32(void *ctx, float *buf, size_t n) { (void)ctx; (void)buf; (void)n; ++g_calls; return LSAE_OK; }
static lsae_result same_f64(void *ctx, double *buf, size_t n) { (void)ctx; (void)buf; (void)n; ++g_calls; return LSAE_OK; }
static lsae_result no_bcast(void *ctx, void *buf, size_t bytes, int root) { (void)ctx; (void)buf; (void)bytes; (void)root; return LSAE_OK; }
/* rank 0 "holds another model": its hash arrives changed */
static lsae_result other_bcast(void *ctx, void *buf, size_t bytes, int root) { (void)ctx; (void)root; if (bytes) ((unsigned char *)buf)[0] ^= 1; return LSAE_OK; }

/* lsae_comm's optional device sum (CUDA trainers only): a CPU trainer must
   never call it, so here it only counts and fails */
static int g_device_calls;
static lsae_result never_device(void *ctx, float *dev_buf, size_t n, void *stream)
{
    (void)ctx; (void)dev_buf; (void)n; (void)stream;
    ++g_device_calls;
    return LSAE_ERROR;
}

static lsae_comm comm_of(int size, int doubling)
{
    lsae_comm c;
    memset(&c, 0, sizeof c);
    c.rank = 0;
    c.size = size;
    c.sum_f32 = doubling ? dbl_f32 : same_f32;
    c.sum_f64 = doubling ? dbl_f64 : same_f64;
    c.broadcast = no_bcast;
    c.sum_f32_device = never_device;
    return c;
}

/* ----------------------------------------------------------------- data */

static float g_x[STEPS * 2][B * D];

static void make_data(void)
{
    size_t s, i, j;
    tu_seed(11);
    for (s = 0; s < STEPS * 2; ++s)
        for (i = 0; i < B; ++i)
            for (j = 0; j < D; ++j) g_x[s][i * D + j] = (float)(0.3 + tu_normal() * (1.0 + (double)(j % 4)));
    g_x[2][5 * D + 3] = NAN; /* a dropped row, counted on both "ranks" */
}

typedef struct snap {
    float w[3][2 * L * D + L + D];
    uint64_t fired[L];
} snap;

static void take(snap *s, lsae_model *m, lsae_trainer *t)
{
    lsae_trainer_state st;
    float *p;
    memset(s, 0, sizeof *s);
    p = s->w[0];
    OK(lsae_model_get_weights(m, p, p + L * D, p + L * D + L, p + 2 * L * D + L));
    memset(&st, 0, sizeof st);
    st.since_fired = s->fired;
    p = s->w[1];
    st.m_W_enc = p; st.m_b_enc = p + L * D; st.m_W_dec = p + L * D + L; st.m_b_dec = p + 2 * L * D + L;
    p = s->w[2];
    st.v_W_enc = p; st.v_b_enc = p + L * D; st.v_W_dec = p + L * D + L; st.v_b_dec = p + 2 * L * D + L;
    OK(lsae_trainer_get_state(t, &st));
}

/* max |a - b| / max |b| over each tensor of the three slabs */
static double worst_diff(const snap *a, const snap *b)
{
    static const size_t off[5] = { 0, L * D, L * D + L, 2 * L * D + L, 2 * L * D + L + D };
    double worst = 0.0;
    size_t q, t, i;
    for (q = 0; q < 3; ++q)
        for (t = 0; t < 4; ++t) {
            double dm = 0.0, bm = 0.0;
            for (i = off[t]; i < off[t + 1]; ++i) {
                double dd = fabs((double)a->w[q][i] - (double)b->w[q][i]);
                if (dd > dm || dd != dd) dm = dd;
                if (fabs((double)b->w[q][i]) > bm) bm = fabs((double)b->w[q][i]);
            }
            dm = bm > 0 ? dm / bm : dm;
            if (dm > worst || dm != dm) worst = dm;
        }
    return worst;
}

static lsae_config config(lsae_sae_type type, int variant)
{
    lsae_config c = lsae_config_default(D);
    c.num_latents = L;
    c.k = 5;
    c.seed = 5;
    c.num_threads = 1;
    c.lr = 3e-3;
    c.lr_warmup_steps = 2;
    c.total_steps = STEPS;
    c.dead_feature_threshold = 120; /* dead within a few steps: AuxK runs */
    c.sae_type = type;
    if (type == LSAE_SAE_TOPK) {
        c.multi_topk = variant == 0;
        c.k_anneal = variant == 1;
    } else if (type == LSAE_SAE_MATRYOSHKA) {
        c.matryoshka_levels = 2;
        c.matryoshka_sizes[0] = 32;
        c.matryoshka_sizes[1] = L;
        c.matryoshka_form = variant == 0 ? LSAE_MATRYOSHKA_NESTED : LSAE_MATRYOSHKA_PER_LEVEL;
        c.matryoshka_ks[0] = 3;
        c.matryoshka_ks[1] = 5;
        if (variant == 1) c.auxk_alpha = 0.0;
        c.grad_acc_steps = variant == 1 ? 2 : 1;
    }
    return c;
}

/* STEPS optimizer steps on a "2-rank" trainer (the doubling communicator)
   and on a plain one fed [x; x]; returns the worst tensor difference, and
   *stat_diff the worst statistic's, *counts_differ if a count did */
static double doubled_vs_plain(lsae_config c, double *stat_diff, int *counts_differ, size_t *most_dead)
{
    static float xx[2 * B * D];
    static snap a, b;
    lsae_model *m1 = NULL, *m2 = NULL;
    lsae_trainer *t1 = NULL, *t2 = NULL;
    lsae_step_stats s1, s2;
    lsae_comm cm = comm_of(2, 1);
    size_t s, nb = STEPS * c.grad_acc_steps;
    double w;
    *stat_diff = 0.0;
    *counts_differ = 0;
    OK(lsae_model_create(&c, NULL, &m1));
    OK(lsae_model_create(&c, NULL, &m2));
    OK(lsae_trainer_create(m1, &c, &t1));
    OK(lsae_trainer_create(m2, &c, &t2));
    OK(lsae_trainer_set_comm(t1, &cm));
    for (s = 0; s < nb; ++s) {
        const double *p1[5], *p2[5];
        size_t q;
        memcpy(xx, g_x[s], sizeof g_x[s]);
        memcpy(xx + B * D, g_x[s], sizeof g_x[s]);
        OK(lsae_trainer_step(t1, g_x[s], B, &s1));
        OK(lsae_trainer_step(t2, xx, 2 * B, &s2));
        p1[0] = &s1.loss; p1[1] = &s1.fvu; p1[2] = &s1.auxk; p1[3] = &s1.multi_topk_fvu; p1[4] = &s1.grad_norm;
        p2[0] = &s2.loss; p2[1] = &s2.fvu; p2[2] = &s2.auxk; p2[3] = &s2.multi_topk_fvu; p2[4] = &s2.grad_norm;
        for (q = 0; q < 5; ++q) {
            double e = fabs(*p1[q] - *p2[q]) / (fabs(*p2[q]) > 1e-30 ? fabs(*p2[q]) : 1.0);
            if (e > *stat_diff || e != e) *stat_diff = e;
        }
        for (q = 0; q < s2.levels; ++q) {
            double e = fabs(s1.level_fvu[q] - s2.level_fvu[q]) / fabs(s2.level_fvu[q]);
            if (e > *stat_diff || e != e) *stat_diff = e;
        }
        if (s1.n_dead != s2.n_dead || s1.rows_used != s2.rows_used || s1.rows_dropped != s2.rows_dropped || s1.k != s2.k) *counts_differ = 1;
        if (s2.n_dead > *most_dead) *most_dead = s2.n_dead;
    }
    take(&a, m1, t1);
    take(&b, m2, t2);
    w = worst_diff(&a, &b);
    if (memcmp(a.fired, b.fired, sizeof a.fired) != 0) *counts_differ = 1;
    lsae_trainer_free(t1);
    lsae_trainer_free(t2);
    lsae_model_free(m1);
    lsae_model_free(m2);
    return w;
}

/* ------------------------------------------------ latent sharding (threads) */

/* S ranks as S threads of this process, each with its own shard model and
   trainer, exchanging through a communicator over shared memory: the real
   collective pattern (every rank blocks until all arrive), without MPI.
   Sums add the ranks' buffers in rank order. Where there are no POSIX
   threads (Windows, WASI builds) this part is skipped. */
#if defined(__unix__) && !defined(__wasi__)
#include <pthread.h>
#define SH_THREADS 1

#define LS 100          /* uneven over 3 shards: 33, 33, 34 */
#define SMAX 3
#define DMAX 2          /* data-parallel replicas of the shard group (a D x S grid) */
#define SH_STEPS 20

typedef struct sh_group {
    int S;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    unsigned gen;
    const void *slot[SMAX];
    int plant;          /* 1: the partial reconstructions are not summed; 2: the last shard's candidates are lost */
} sh_group;

typedef struct sh_rank {
    sh_group *g;
    int rank;
} sh_rank;

static void sh_barrier(sh_group *g)
{
    unsigned gen;
    pthread_mutex_lock(&g->mu);
    gen = g->gen;
    if (++g->arrived == g->S) {
        g->arrived = 0;
        g->gen++;
        pthread_cond_broadcast(&g->cv);
    } else
        while (gen == g->gen) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* every rank reads every rank's buffer (after the first barrier), in rank
   order, into its own copy; nobody writes its buffer before all have read */
static lsae_result sh_sum_f32(void *ctx, float *buf, size_t n)
{
    sh_rank *r = (sh_rank *)ctx;
    sh_group *g = r->g;
    float *acc = (float *)malloc((n ? n : 1) * sizeof(float));
    size_t i;
    int s;
    if (!acc) return LSAE_OUT_OF_MEMORY;
    g->slot[r->rank] = buf;
    sh_barrier(g);
    memcpy(acc, g->slot[0], n * sizeof(float));
    for (s = 1; s < g->S; ++s)
        for (i = 0; i < n; ++i) acc[i] += ((const float *)g->slot[s])[i];
    sh_barrier(g);
    if (!(g->plant == 1 && n > 1000)) memcpy(buf, acc, n * sizeof(float));
    free(acc);
    return LSAE_OK;
}
static lsae_result sh_sum_f64(void *ctx, double *buf, size_t n)
{
    sh_rank *r = (sh_rank *)ctx;
    sh_group *g = r->g;
    double *acc = (double *)malloc((n ? n : 1) * sizeof(double));
    size_t i;
    int s;
    if (!acc) return LSAE_OUT_OF_MEMORY;
    g->slot[r->rank] = buf;
    sh_barrier(g);
    memcpy(acc, g->slot[0], n * sizeof(double));
    for (s = 1; s < g->S; ++s)
        for (i = 0; i < n; ++i) acc[i] += ((const double *)g->slot[s])[i];
    sh_barrier(g);
    memcpy(buf, acc, n * sizeof(double));
    free(acc);
    return LSAE_OK;
}
static lsae_result sh_bcast(void *ctx, void *buf, size_t bytes, int root)
{
    sh_rank *r = (sh_rank *)ctx;
    sh_group *g = r->g;
    g->slot[r->rank] = buf;
    sh_barrier(g);
    if (r->rank != root) memcpy(buf, g->slot[root], bytes);
    sh_barrier(g);
    return LSAE_OK;
}
static lsae_result sh_allgather(void *ctx, const void *send, size_t bytes, void *recv)
{
    sh_rank *r = (sh_rank *)ctx;
    sh_group *g = r->g;
    int s;
    g->slot[r->rank] = send;
    sh_barrier(g);
    for (s = 0; s < g->S; ++s) {
        memcpy((unsigned char *)recv + (size_t)s * bytes, g->slot[s], bytes);
        if (g->plant == 2 && s == g->S - 1 && bytes > 1000) {
            /* planted: the last shard's candidates arrive as "none" */
            float none = -1.0f;
            size_t q;
            for (q = 0; q + 8 <= bytes; q += 8) memcpy((unsigned char *)recv + (size_t)s * bytes + q, &none, 4);
        }
    }
    sh_barrier(g);
    return LSAE_OK;
}

/* the whole model's tensors and state, as one process holds them */
typedef struct sh_snap {
    float w[3][2 * LS * D + LS + D];   /* weights, Adam m, Adam v: W_enc, b_enc, W_dec, b_dec */
    uint64_t fired[LS];
    double stat[SH_STEPS][6];          /* loss, fvu, auxk, fvu4, grad_norm, n_dead */
} sh_snap;

static float g_xs[SH_STEPS][B * D];

typedef struct sh_job {
    sh_group *g;        /* the shard group */
    int rank;           /* in it */
    sh_group *gd;       /* the data-parallel group (NULL: D = 1) */
    int drank;          /* in it */
    size_t lo, hi;      /* its rows of each batch */
    const lsae_model *full;            /* the shards start from its rows */
    lsae_config cfg;
    sh_snap *out;                      /* each rank fills its rows (rank 0 also b_dec and the statistics) */
    lsae_result err;
    char msg[1100];
} sh_job;

static void sh_stats_row(double *row, const lsae_step_stats *st)
{
    row[0] = st->loss; row[1] = st->fvu; row[2] = st->auxk; row[3] = st->multi_topk_fvu; row[4] = st->grad_norm; row[5] = (double)st->n_dead;
}

/* the state of model m and trainer t into the snapshot at latent l0 */
static lsae_result sh_take(sh_snap *s, const lsae_model *m, const lsae_trainer *t, size_t l0, int with_bdec)
{
    static const size_t off[4] = { 0, LS * D, LS * D + LS, 2 * LS * D + LS };
    float bd[3][D];
    lsae_trainer_state st;
    lsae_result r;
    int q;
    if ((r = lsae_model_get_weights(m, s->w[0] + off[0] + l0 * D, s->w[0] + off[1] + l0, s->w[0] + off[2] + l0 * D, bd[0])) != LSAE_OK) return r;
    memset(&st, 0, sizeof st);
    st.since_fired = s->fired + l0;
    st.m_W_enc = s->w[1] + off[0] + l0 * D; st.m_b_enc = s->w[1] + off[1] + l0; st.m_W_dec = s->w[1] + off[2] + l0 * D; st.m_b_dec = bd[1];
    st.v_W_enc = s->w[2] + off[0] + l0 * D; st.v_b_enc = s->w[2] + off[1] + l0; st.v_W_dec = s->w[2] + off[2] + l0 * D; st.v_b_dec = bd[2];
    if ((r = lsae_trainer_get_state(t, &st)) != LSAE_OK) return r;
    if (with_bdec)
        for (q = 0; q < 3; ++q) memcpy(s->w[q] + off[3], bd[q], sizeof bd[q]);
    return LSAE_OK;
}

static void *sh_run(void *arg)
{
    sh_job *j = (sh_job *)arg;
    sh_rank me, med;
    lsae_comm c, cd;
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_step_stats st;
    size_t l0, l1, s;
    lsae_result r;
    me.g = j->g;
    me.rank = j->rank;
    memset(&c, 0, sizeof c);
    c.rank = j->rank;
    c.size = j->g->S;
    c.ctx = &me;
    c.sum_f32 = sh_sum_f32;
    c.sum_f64 = sh_sum_f64;
    c.broadcast = sh_bcast;
    c.allgather = sh_allgather;
    cd = c;
    if (j->gd) {
        med.g = j->gd;
        med.rank = j->drank;
        cd.rank = j->drank;
        cd.size = j->gd->S;
        cd.ctx = &med;
    }
    lsae_shard_range(LS, j->rank, j->g->S, &l0, &l1);
    if ((r = lsae_model_shard_of(j->full, l0, l1, &m)) != LSAE_OK ||
        (r = lsae_trainer_create(m, &j->cfg, &t)) != LSAE_OK ||
        (j->gd && (r = lsae_trainer_set_comm(t, &cd)) != LSAE_OK) ||
        (r = lsae_trainer_set_shard_comm(t, &c)) != LSAE_OK) goto done;
    for (s = 0; s < SH_STEPS; ++s) {
        if ((r = lsae_trainer_step(t, g_xs[s] + j->lo * D, j->hi - j->lo, &st)) != LSAE_OK) goto done;
        if (j->rank == 0 && j->drank == 0) sh_stats_row(j->out->stat[s], &st);
    }
    /* the data-parallel replicas hold the same shard: the first writes it */
    r = j->drank == 0 ? sh_take(j->out, m, t, l0, j->rank == 0) : LSAE_OK;
done:
    j->err = r;
    if (r != LSAE_OK) snprintf(j->msg, sizeof j->msg, "%s", lsae_last_error());
    lsae_trainer_free(t);
    lsae_model_free(m);
    return NULL;
}

static void sh_group_init(sh_group *g, int size, int plant)
{
    memset(g, 0, sizeof *g);
    g->S = size;
    g->plant = plant;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

/* P x S ranks (P data-parallel replicas of S shards) from the full model's
   rows: rank (dr, sr) holds shard sr and trains on rows [B dr / P,
   B (dr + 1) / P) of each batch (P = 1: every row); returns the first
   rank's error */
static lsae_result sh_grid(const lsae_model *full, lsae_config cfg, int P, int S, int plant, sh_snap *out)
{
    sh_group gs[DMAX], gd[SMAX];
    sh_job jobs[DMAX * SMAX];
    pthread_t th[DMAX * SMAX];
    int i, n = P * S;
    for (i = 0; i < P; ++i) sh_group_init(&gs[i], S, plant);
    for (i = 0; i < S; ++i) sh_group_init(&gd[i], P, 0);
    memset(out, 0, sizeof *out);
    for (i = 0; i < n; ++i) {
        const int dr = i / S, sr = i % S;
        jobs[i].g = &gs[dr];
        jobs[i].rank = sr;
        jobs[i].gd = P > 1 ? &gd[sr] : NULL;
        jobs[i].drank = dr;
        jobs[i].lo = (size_t)B * (size_t)dr / (size_t)P;
        jobs[i].hi = (size_t)B * ((size_t)dr + 1) / (size_t)P;
        jobs[i].full = full;
        jobs[i].cfg = cfg;
        jobs[i].out = out;
        jobs[i].err = LSAE_OK;
        jobs[i].msg[0] = 0;
        pthread_create(&th[i], NULL, sh_run, &jobs[i]);
    }
    for (i = 0; i < n; ++i) pthread_join(th[i], NULL);
    for (i = 0; i < P; ++i) { pthread_mutex_destroy(&gs[i].mu); pthread_cond_destroy(&gs[i].cv); }
    for (i = 0; i < S; ++i) { pthread_mutex_destroy(&gd[i].mu); pthread_cond_destroy(&gd[i].cv); }
    for (i = 0; i < n; ++i)
        if (jobs[i].err != LSAE_OK) {
            fprintf(stderr, "  rank (%d, %d) of %d x %d: %s: %s\n", i / S, i % S, P, S, lsae_result_string(jobs[i].err), jobs[i].msg);
            return jobs[i].err;
        }
    return LSAE_OK;
}

static lsae_result sh_sharded(const lsae_model *full, lsae_config cfg, int S, int plant, sh_snap *out)
{
    return sh_grid(full, cfg, 1, S, plant, out);
}

static lsae_config sh_config(int variant)
{
    lsae_config c = lsae_config_default(D);
    c.num_latents = LS;
    c.k = 5;
    c.seed = 9;
    c.num_threads = 1;
    c.lr = 3e-3;
    c.lr_warmup_steps = 2;
    c.total_steps = SH_STEPS;
    c.dead_feature_threshold = 120; /* dead within a few steps: AuxK runs */
    c.multi_topk = variant == 0;
    c.k_anneal = variant == 1;
    return c;
}

/* The full model of the reference, with ties planted: latents 70 and 95
   (shards 2 and 3 of 3) copy latents 3 and 40 exactly, so their
   activations tie in every row and the lower index must win, as in one
   process; the shards start from this model's rows. */
static lsae_model *sh_full(lsae_config c)
{
    static float W[2][LS * D], bb[LS];
    lsae_model *m = NULL;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_model_get_weights(m, W[0], bb, W[1], NULL));
    memcpy(W[0] + 70 * D, W[0] + 3 * D, D * sizeof(float));
    memcpy(W[1] + 70 * D, W[1] + 3 * D, D * sizeof(float));
    memcpy(W[0] + 95 * D, W[0] + 40 * D, D * sizeof(float));
    memcpy(W[1] + 95 * D, W[1] + 40 * D, D * sizeof(float));
    OK(lsae_model_set_weights(m, W[0], bb, W[1], NULL));
    return m;
}

/* one process on the same model and batches */
static void sh_single(lsae_config c, sh_snap *out)
{
    lsae_model *m = sh_full(c);
    lsae_trainer *t = NULL;
    lsae_step_stats st;
    size_t s;
    memset(out, 0, sizeof *out);
    OK(lsae_trainer_create(m, &c, &t));
    for (s = 0; s < SH_STEPS; ++s) {
        OK(lsae_trainer_step(t, g_xs[s], B, &st));
        sh_stats_row(out->stat[s], &st);
    }
    OK(sh_take(out, m, t, 0, 1));
    lsae_trainer_free(t);
    lsae_model_free(m);
}

/* worst relative difference of each tensor (max |a - b| / max |b|) and of
   each statistic; *counters_differ when the dead-latent counters do */
static double sh_diff(const sh_snap *a, const sh_snap *b, double *stat_diff, int *counters_differ)
{
    static const size_t off[5] = { 0, LS * D, LS * D + LS, 2 * LS * D + LS, 2 * LS * D + LS + D };
    double worst = 0.0;
    size_t q, t, i;
    for (q = 0; q < 3; ++q)
        for (t = 0; t < 4; ++t) {
            double dm = 0.0, bm = 0.0;
            for (i = off[t]; i < off[t + 1]; ++i) {
                double dd = fabs((double)a->w[q][i] - (double)b->w[q][i]);
                if (dd > dm || dd != dd) dm = dd;
                if (fabs((double)b->w[q][i]) > bm) bm = fabs((double)b->w[q][i]);
            }
            dm = bm > 0 ? dm / bm : dm;
            if (dm > worst || dm != dm) worst = dm;
        }
    *stat_diff = 0.0;
    for (t = 0; t < SH_STEPS; ++t)
        for (q = 0; q < 6; ++q) {
            double e = fabs(a->stat[t][q] - b->stat[t][q]) / (fabs(b->stat[t][q]) > 1e-30 ? fabs(b->stat[t][q]) : 1.0);
            if (e > *stat_diff || e != e) *stat_diff = e;
        }
    *counters_differ = memcmp(a->fired, b->fired, sizeof a->fired) != 0;
    return worst;
}

static void sh_tests(void)
{
    static sh_snap one, sh, again;
    static const char *names[2] = { "multi-topk, auxk", "k annealed, auxk" };
    double w, sd;
    int v, S, cd;
    size_t s, i, j, most_dead = 0;
    tu_seed(23);
    for (s = 0; s < SH_STEPS; ++s)
        for (i = 0; i < B; ++i)
            for (j = 0; j < D; ++j) g_xs[s][i * D + j] = (float)(0.3 + tu_normal() * (1.0 + (double)(j % 4)));
    for (v = 0; v < 2; ++v) {
        lsae_config c = sh_config(v);
        lsae_model *full = sh_full(c);
        sh_single(c, &one);
        for (s = 0; s < SH_STEPS; ++s) most_dead = (size_t)one.stat[s][5] > most_dead ? (size_t)one.stat[s][5] : most_dead;
        for (S = 2; S <= 3; ++S) {
            OK(sh_sharded(full, c, S, 0, &sh));
            w = sh_diff(&sh, &one, &sd, &cd);
            CHECKF(w <= 1e-5, "%s, %d shards: tensors differ from one process by %.3g", names[v], S, w);
            CHECKF(sd <= 1e-5, "%s, %d shards: statistics differ from one process by %.3g", names[v], S, sd);
            CHECKF(!cd, "%s, %d shards: the dead-latent counters differ from one process", names[v], S);
            printf("  %d latent shards (threads) vs one process, %s: tensors %.2g, statistics %.2g\n", S, names[v], w, sd);
        }
        /* repeated: the same bits */
        OK(sh_sharded(full, c, 3, 0, &again));
        CHECKF(memcmp(&sh, &again, sizeof sh) == 0, "%s: two 3-shard runs differ", names[v]);
        /* combined with data parallelism: 2 x 2 and 2 x 3 grids (rows 18 + 19) */
        for (S = 2; S <= 3; ++S) {
            OK(sh_grid(full, c, 2, S, 0, &sh));
            w = sh_diff(&sh, &one, &sd, &cd);
            CHECKF(w <= 1e-5 && sd <= 1e-5 && !cd, "%s, 2 x %d grid: tensors %.3g, statistics %.3g, counters %s", names[v], S, w, sd, cd ? "differ" : "agree");
            printf("  2 data-parallel x %d latent shards (threads) vs one process, %s: tensors %.2g, statistics %.2g\n", S, names[v], w, sd);
        }
        lsae_model_free(full);
    }
    CHECKF(most_dead > 0, "no latent went dead: AuxK was not exercised");
    /* planted faults are seen */
    {
        lsae_config c = sh_config(0);
        lsae_model *full = sh_full(c);
        int plant;
        sh_single(c, &one);
        for (plant = 1; plant <= 2; ++plant) {
            OK(sh_sharded(full, c, 3, plant, &sh));
            w = sh_diff(&sh, &one, &sd, &cd);
            CHECKF(w > 1e-3 || sd > 1e-3, "planted fault %d (%s) not seen: tensors %.3g, statistics %.3g", plant,
                   plant == 1 ? "partial reconstructions not summed" : "a shard's candidates lost", w, sd);
        }
        lsae_model_free(full);
    }
    /* a shard made from the config holds exactly the full model's rows */
    {
        lsae_config c = sh_config(0);
        static float Wf[2][LS * D], Ws[2][LS * D];
        lsae_model *full = NULL, *part = NULL;
        size_t l0, l1, a, bL;
        OK(lsae_model_create(&c, NULL, &full));
        OK(lsae_model_get_weights(full, Wf[0], NULL, Wf[1], NULL));
        lsae_shard_range(LS, 1, 3, &l0, &l1);
        CHECK(l0 == 33 && l1 == 66);
        lsae_shard_range(LS, 2, 3, &l0, &l1);
        CHECK(l0 == 66 && l1 == 100);
        OK(lsae_model_create_shard(&c, NULL, l0, l1, &part));
        CHECK(lsae_model_num_latents(part) == 34);
        lsae_model_shard_info(part, &a, NULL, &bL);
        CHECK(a == 66 && bL == LS);
        OK(lsae_model_get_weights(part, Ws[0], NULL, Ws[1], NULL));
        CHECK(memcmp(Ws[0], Wf[0] + l0 * D, (l1 - l0) * D * sizeof(float)) == 0);
        CHECK(memcmp(Ws[1], Wf[1] + l0 * D, (l1 - l0) * D * sizeof(float)) == 0);
        /* what needs every latent refuses a shard */
        CHECKF(lsae_model_save(part, "/nonexistent/x") == LSAE_UNSUPPORTED && strstr(lsae_last_error(), "latent shard"), "%s", lsae_last_error());
        CHECK(lsae_model_encode(part, g_xs[0], 2, 0, NULL, NULL) == LSAE_UNSUPPORTED);
        /* and it trains only with its shard group */
        {
            lsae_trainer *t = NULL;
            lsae_comm one_rank = comm_of(1, 0), sc = comm_of(3, 0);
            OK(lsae_trainer_create(part, &c, &t));
            CHECKF(lsae_trainer_step(t, g_xs[0], B, NULL) == LSAE_INVALID_ARGS && strstr(lsae_last_error(), "shard communicator"), "%s", lsae_last_error());
            CHECK(lsae_trainer_set_shard_comm(t, &one_rank) == LSAE_INVALID_ARGS);
            CHECKF(lsae_trainer_set_shard_comm(t, &sc) == LSAE_INVALID_ARGS && strstr(lsae_last_error(), "allgather"), "%s", lsae_last_error());
            sc.allgather = sh_allgather;
            sc.rank = 1; /* rank 1 of 3 holds [33, 66), not [66, 100) */
            CHECKF(lsae_trainer_set_shard_comm(t, &sc) == LSAE_INVALID_ARGS && strstr(lsae_last_error(), "[33, 66)"), "%s", lsae_last_error());
            lsae_trainer_free(t);
        }
        /* the other SAE types are refused */
        {
            lsae_config cm = c;
            lsae_model *pm = NULL;
            lsae_trainer *t = NULL;
            cm.sae_type = LSAE_SAE_BATCHTOPK;
            cm.multi_topk = 0;
            OK(lsae_model_create_shard(&cm, NULL, 0, 50, &pm));
            CHECKF(lsae_trainer_create(pm, &cm, &t) == LSAE_UNSUPPORTED && strstr(lsae_last_error(), "topk"), "%s", lsae_last_error());
            lsae_model_free(pm);
        }
        lsae_model_free(part);
        lsae_model_free(full);
    }
}
#endif

int main(void)
{
    static const struct { lsae_sae_type type; int variant; const char *name; } cases[] = {
        { LSAE_SAE_TOPK, 0, "topk, multi-topk, auxk" },
        { LSAE_SAE_TOPK, 1, "topk, k annealed" },
        { LSAE_SAE_MATRYOSHKA, 0, "matryoshka nested" },
        { LSAE_SAE_MATRYOSHKA, 1, "matryoshka per-level, grad-acc 2" },
    };
    size_t i, most_dead = 0;
    double sd, w;
    int cd;
    make_data();

    /* two identical ranks = one process on the batch twice */
    for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        w = doubled_vs_plain(config(cases[i].type, cases[i].variant), &sd, &cd, &most_dead);
        CHECKF(w <= 1e-5, "%s: tensors differ by %.3g", cases[i].name, w);
        CHECKF(sd <= 1e-5, "%s: statistics differ by %.3g", cases[i].name, sd);
        CHECKF(!cd, "%s: the counts (dead, rows used and dropped, k, counters) differ", cases[i].name);
        printf("  2 ranks (simulated) vs one process, %s: tensors %.2g, statistics %.2g\n", cases[i].name, w, sd);
    }
    CHECKF(most_dead > 0, "no latent went dead: AuxK was not exercised");

    /* the checks see a sum left out */
    for (g_plant = 1; g_plant <= 2; ++g_plant) {
        w = doubled_vs_plain(config(LSAE_SAE_TOPK, 0), &sd, &cd, &most_dead);
        CHECKF(w > 1e-3 || sd > 1e-3, "planted fault %d (a sum across ranks left out) not seen: tensors %.3g, statistics %.3g", g_plant, w, sd);
    }
    g_plant = 0;

    /* one rank: the bits of no communicator */
    {
        static snap a, b;
        lsae_config c = config(LSAE_SAE_TOPK, 0);
        lsae_model *m1 = NULL, *m2 = NULL;
        lsae_trainer *t1 = NULL, *t2 = NULL;
        lsae_comm one = comm_of(1, 0);
        size_t s;
        OK(lsae_model_create(&c, NULL, &m1));
        OK(lsae_model_create(&c, NULL, &m2));
        OK(lsae_trainer_create(m1, &c, &t1));
        OK(lsae_trainer_create(m2, &c, &t2));
        g_calls = 0;
        OK(lsae_trainer_set_comm(t1, &one));
        for (s = 0; s < STEPS; ++s) {
            OK(lsae_trainer_step(t1, g_x[s], B, NULL));
            OK(lsae_trainer_step(t2, g_x[s], B, NULL));
        }
        CHECK(g_calls > 0);
        take(&a, m1, t1);
        take(&b, m2, t2);
        CHECKF(memcmp(&a, &b, sizeof a) == 0, "a one-rank communicator changed the bits");
        /* set back to none: the plain path again */
        OK(lsae_trainer_set_comm(t1, NULL));
        g_calls = 0;
        OK(lsae_trainer_step(t1, g_x[0], B, NULL));
        CHECK(g_calls == 0);
        lsae_trainer_free(t1);
        lsae_trainer_free(t2);
        lsae_model_free(m1);
        lsae_model_free(m2);
    }

    CHECKF(g_device_calls == 0, "a CPU trainer called sum_f32_device %d times", g_device_calls);

    /* a failed sum stops the trainer */
    {
        lsae_config c = config(LSAE_SAE_TOPK, 0);
        lsae_model *m = NULL;
        lsae_trainer *t = NULL;
        lsae_comm cm = comm_of(2, 1);
        int at, seen_accumulate = 0, seen_apply = 0;
        OK(lsae_model_create(&c, NULL, &m));
        for (at = 1; at <= 12; ++at) {
            lsae_result r = LSAE_OK;
            int s;
            OK(lsae_trainer_create(m, &c, &t));
            OK(lsae_trainer_set_comm(t, &cm));
            g_calls = 0;
            g_fail_at = at;
            for (s = 0; s < 3 && r == LSAE_OK; ++s) {
                r = lsae_trainer_accumulate(t, g_x[s], B, NULL);
                if (r != LSAE_OK) { seen_accumulate = 1; break; }
                r = lsae_trainer_apply(t, NULL);
                if (r != LSAE_OK) seen_apply = 1;
            }
            CHECKF(r == LSAE_ERROR && strstr(lsae_last_error(), "across 2 ranks"), "failing sum %d: %s (%s)", at, lsae_result_string(r), lsae_last_error());
            g_fail_at = 0;
            CHECK(lsae_trainer_accumulate(t, g_x[5], B, NULL) == LSAE_ERROR && strstr(lsae_last_error(), "restart"));
            lsae_trainer_free(t);
            t = NULL;
        }
        CHECK(seen_accumulate && seen_apply);
        lsae_model_free(m);
    }

    /* refusals */
    {
        lsae_config c = config(LSAE_SAE_TOPK, 0);
        lsae_model *m = NULL;
        lsae_trainer *t = NULL;
        lsae_comm cm = comm_of(2, 1), bad;
        OK(lsae_model_create(&c, NULL, &m));
        OK(lsae_trainer_create(m, &c, &t));
        CHECK(lsae_trainer_set_comm(NULL, &cm) == LSAE_INVALID_ARGS);
        bad = cm; bad.rank = 2;
        CHECK(lsae_trainer_set_comm(t, &bad) == LSAE_INVALID_ARGS);
        bad = cm; bad.size = 0;
        CHECK(lsae_trainer_set_comm(t, &bad) == LSAE_INVALID_ARGS);
        bad = cm; bad.sum_f64 = NULL;
        CHECK(lsae_trainer_set_comm(t, &bad) == LSAE_INVALID_ARGS);
        bad = cm; bad.broadcast = other_bcast;
        CHECKF(lsae_trainer_set_comm(t, &bad) == LSAE_INVALID_ARGS && strstr(lsae_last_error(), "same weights"), "%s", lsae_last_error());
        OK(lsae_trainer_accumulate(t, g_x[0], B, NULL));
        CHECK(lsae_trainer_set_comm(t, &cm) == LSAE_INVALID_ARGS && strstr(lsae_last_error(), "accumulated"));
        lsae_trainer_free(t);
        lsae_model_free(m);
        for (i = 0; i < 2; ++i) {
            lsae_config cb = config(i ? LSAE_SAE_MATRYOSHKA : LSAE_SAE_BATCHTOPK, 0);
            lsae_comm one = comm_of(1, 0);
            if (i) cb.matryoshka_use_batchtopk = 1;
            OK(lsae_model_create(&cb, NULL, &m));
            OK(lsae_trainer_create(m, &cb, &t));
            CHECKF(lsae_trainer_set_comm(t, &cm) == LSAE_UNSUPPORTED && strstr(lsae_last_error(), "batch-wide"), "%s", lsae_last_error());
            OK(lsae_trainer_set_comm(t, &one)); /* one rank: nothing to gather */
            OK(lsae_trainer_step(t, g_x[0], B, NULL));
            lsae_trainer_free(t);
            lsae_model_free(m);
        }
    }
#ifdef SH_THREADS
    sh_tests();
#else
    printf("  latent sharding: skipped (no POSIX threads in this build)\n");
#endif
    return TEST_SUMMARY("test_comm");
}
