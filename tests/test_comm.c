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
     more than one rank (LSAE_UNSUPPORTED). */
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

static lsae_comm comm_of(int size, int doubling)
{
    lsae_comm c;
    memset(&c, 0, sizeof c);
    c.rank = 0;
    c.size = size;
    c.sum_f32 = doubling ? dbl_f32 : same_f32;
    c.sum_f64 = doubling ? dbl_f64 : same_f64;
    c.broadcast = no_bcast;
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
    return TEST_SUMMARY("test_comm");
}
