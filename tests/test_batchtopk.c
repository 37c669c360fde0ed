/* The training step of the other SAE types (docs/math.md, section 3)
   against independent references: BatchTopK's batch-wide pick against a
   brute-force sort of all B L entries of the batch (ties, many zeros, rows
   that hold more than 4 k_s of the pick so that enlargement runs, k_s = L),
   its threshold recurrence against a float32 computation in the test, the
   Matryoshka levels' fvu against a double-precision decode of the codes,
   the k-annealing schedule value by value, thread-count bit-identity for
   every type and form, and the refusals. */
#include "test_util.h"
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <string.h>

/* ------------------------------------------------------------ references */

typedef struct ent { float v; int row, lat; } ent;

/* the batch's total order: value desc, row asc, latent asc */
static int ent_cmp(const void *a, const void *b)
{
    const ent *x = (const ent *)a, *y = (const ent *)b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return x->lat < y->lat ? -1 : x->lat > y->lat;
}

/* every activation of the batch, by the model's own encoder (k = L gives
   each row's whole sorted code, so the values are the library's bits) */
static ent *all_entries(const lsae_model *m, const float *x, size_t B)
{
    const size_t L = lsae_model_num_latents(m);
    float *acts = (float *)malloc(B * L * sizeof(float));
    int32_t *idx = (int32_t *)malloc(B * L * sizeof(int32_t));
    ent *e = (ent *)malloc(B * L * sizeof(ent));
    size_t r, i;
    OK(lsae_model_encode(m, x, B, L, acts, idx));
    for (r = 0; r < B; ++r)
        for (i = 0; i < L; ++i) {
            e[r * L + i].v = acts[r * L + i];
            e[r * L + i].row = (int)r;
            e[r * L + i].lat = idx[r * L + i];
        }
    free(acts);
    free(idx);
    qsort(e, B * L, sizeof(ent), ent_cmp);
    return e;
}

/* docs/math.md 3.1: uncapped, a theta of 0 is unset and tau sets it;
   otherwise (and capped always) the float32 EMA */
static float theta_ref(float theta, float tau, double beta, int starts_at_tau)
{
    volatile float a = theta * (float)beta;
    volatile float b = tau * (float)(1.0 - beta);
    if (starts_at_tau && theta == 0.0f) return tau;
    return a + b;
}

static lsae_model *make_model(size_t d, size_t L, size_t k, int threads, unsigned long long seed)
{
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    c.num_latents = L;
    c.k = k;
    c.seed = seed;
    c.num_threads = threads;
    OK(lsae_model_create(&c, NULL, &m));
    return m;
}

static lsae_config train_cfg(const lsae_model *m, int threads)
{
    lsae_config c = *lsae_model_config(m);
    c.init_b_dec = 0;
    c.lr = 1e-3;
    c.lr_warmup_steps = 0;
    c.num_threads = threads;
    return c;
}

/* ------------------------------------------------------ batch-wide pick */

/* kind: 0 random; 1 ties and many zeros (most encoder biases very
   negative, rows repeated); 2 a few rows 50 times larger than the rest,
   so they hold more than 4 k of the pick; cap: batchtopk_row_cap */
static void check_pick(size_t d, size_t L, size_t k, size_t B, int kind, int cap, int threads)
{
    lsae_model *m = make_model(d, L, k, threads, 7 + (unsigned long long)kind);
    lsae_config c = train_cfg(m, threads);
    lsae_trainer *t = NULL;
    float *x = (float *)malloc(B * d * sizeof(float));
    size_t r, j, l, batch, N = B * k, enlarged = 0;
    float theta = 0.0f;
    tu_seed(100 + (unsigned long long)kind);
    for (r = 0; r < B; ++r)
        for (j = 0; j < d; ++j) x[r * d + j] = (float)tu_normal();
    if (kind == 1) {
        for (l = 0; l < L; ++l)
            if (l % 47) m->b_enc[l] = -1e3f;
        for (r = 1; r < B; r += 3) memcpy(x + r * d, x + (r - 1) * d, d * sizeof(float));
    }
    if (kind == 2)
        for (r = 0; r < B; r += 5)
            for (j = 0; j < d; ++j) x[r * d + j] *= 50.0f;
    c.sae_type = LSAE_SAE_BATCHTOPK;
    c.batchtopk_row_cap = cap;
    c.batchtopk_threshold_beta = 0.9;
    OK(lsae_trainer_create(m, &c, &t));
    for (batch = 0; batch < 3; ++batch) {
        lsae_step_stats st;
        ent *e = all_entries(m, x, B);  /* no optimizer step between batches: same weights */
        size_t *want = (size_t *)calloc(B, sizeof(size_t));
        int bad = 0;
        OK(lsae_trainer_accumulate(t, x, B, &st));
        for (l = 0; l < N; ++l) want[e[l].row]++;
        for (r = 0; r < B && !bad; ++r) {
            const lsae__run *ru = t->runs + r * LSAE__RUNS;
            size_t n = cap && want[r] > k ? k : want[r], q = 0;
            if (t->nruns[r] != 2 || ru[0].n != n) { bad = 1; fprintf(stderr, "row %zu keeps %zu, brute force %zu\n", r, ru[0].n, n); break; }
            /* the row's kept entries are its best n in the order: the
               brute-force list's entries of row r, in order */
            for (l = 0; l < N && q < n; ++l)
                if ((size_t)e[l].row == r) {
                    if (ru[0].p[q].i != e[l].lat || ru[0].p[q].v != e[l].v) { bad = 1; break; }
                    ++q;
                }
        }
        CHECKF(!bad, "kind %d cap %d threads %d batch %zu: kept entries differ from the brute-force pick", kind, cap, threads, batch);
        theta = theta_ref(theta, e[N - 1].v, c.batchtopk_threshold_beta, !cap);
        CHECKF(memcmp(&theta, &st.batchtopk_threshold, sizeof theta) == 0 && st.batchtopk_threshold == lsae_model_batchtopk_threshold(m),
               "kind %d batch %zu: theta %.9g, float32 recurrence %.9g (tau %.9g)", kind, batch, st.batchtopk_threshold, theta, e[N - 1].v);
        CHECK(st.k == k && st.levels == 0);
        enlarged += st.rows_enlarged;
        free(want);
        free(e);
    }
    if (kind != 0 && 4 * k < L) CHECKF(enlarged > 0, "kind %d: no row was enlarged", kind);
    lsae_trainer_free(t);
    lsae_model_free(m);
    free(x);
}

static void test_pick(void)
{
    int threads;
    for (threads = 1; threads <= 3; ++threads) {
        check_pick(16, 64, 3, 24, 0, 0, threads);
        check_pick(16, 64, 3, 24, 0, 1, threads);
        check_pick(16, 96, 2, 30, 1, 0, threads);   /* zeros in S: row 0 takes the zeros, enlarged to L */
        check_pick(16, 96, 2, 30, 1, 1, threads);
        check_pick(16, 256, 2, 40, 2, 0, threads);  /* big rows hold more than 4 k of S */
        check_pick(16, 256, 2, 40, 2, 1, threads);
        check_pick(8, 16, 16, 10, 0, 0, threads);   /* k_s = L: everything */
    }
}

/* ------------------------------------------------------------- Matryoshka */

/* per-level with matryoshka_use_batchtopk: level j keeps, of the batch's
   B k_j best entries among its first n_j latents, a row's best k_j (always
   capped); theta follows the last level's tau, before the cap. Every fifth
   row is 50 times larger, so rows hold more than their 4 k_j candidates. */
static void test_perlevel_pick(void)
{
    const size_t d = 16, L = 128, B = 30, nl = 3;
    const size_t sizes[3] = { 8, 40, 128 }, ks[3] = { 1, 2, 3 };
    lsae_model *m = make_model(d, L, 3, 2, 17);
    lsae_config c = train_cfg(m, 2);
    lsae_trainer *t = NULL;
    lsae_step_stats st;
    float *x = (float *)malloc(B * d * sizeof(float));
    size_t r, j, lev, i;
    int bad = 0;
    ent *e;
    tu_seed(19);
    for (r = 0; r < B; ++r)
        for (j = 0; j < d; ++j) x[r * d + j] = (float)tu_normal() * (r % 5 == 0 ? 50.0f : 1.0f);
    c.sae_type = LSAE_SAE_MATRYOSHKA;
    c.matryoshka_form = LSAE_MATRYOSHKA_PER_LEVEL;
    c.matryoshka_use_batchtopk = 1;
    c.matryoshka_levels = nl;
    c.auxk_alpha = 0.0;
    for (lev = 0; lev < nl; ++lev) { c.matryoshka_sizes[lev] = sizes[lev]; c.matryoshka_ks[lev] = ks[lev]; }
    OK(lsae_trainer_create(m, &c, &t));
    e = all_entries(m, x, B);
    OK(lsae_trainer_accumulate(t, x, B, &st));
    for (lev = 0; lev < nl && !bad; ++lev) {
        size_t *cnt = (size_t *)calloc(B, sizeof(size_t)), taken = 0;
        float tau = 0.0f;
        /* the brute-force S of this level, in order; a row keeps its first k_j */
        for (i = 0; i < B * L && taken < B * ks[lev]; ++i) {
            const lsae__run *ru = t->runs + (size_t)e[i].row * LSAE__RUNS + lev;
            if ((size_t)e[i].lat >= sizes[lev]) continue;
            ++taken;
            tau = e[i].v;
            if (cnt[e[i].row] < ks[lev]) {
                if (cnt[e[i].row] >= ru->n || ru->p[cnt[e[i].row]].i != e[i].lat || ru->p[cnt[e[i].row]].v != e[i].v) bad = 1;
                cnt[e[i].row]++;
            }
        }
        for (r = 0; r < B; ++r)
            if (t->runs[r * LSAE__RUNS + lev].n != cnt[r] || t->runs[r * LSAE__RUNS + lev].cls != lev) bad = 1;
        CHECKF(!bad, "per-level batch-wide pick, level %zu, differs from the brute-force pick", lev);
        if (lev == nl - 1) {
            const float want = theta_ref(0.0f, tau, c.batchtopk_threshold_beta, 0); /* per-level: from 0 */
            CHECKF(memcmp(&want, &st.batchtopk_threshold, sizeof want) == 0, "theta %.9g, expected %.9g", st.batchtopk_threshold, want);
        }
        free(cnt);
    }
    CHECKF(st.rows_enlarged > 0, "no row was enlarged");
    free(e);
    lsae_trainer_free(t);
    lsae_model_free(m);
    free(x);
}

/* the levels' fvu against a double decode of the library's own codes
   (nested with a TopK selection: the best k of all L, each level the
   codes below n_j), and the loss from them */
static void test_nested_levels(void)
{
    const size_t d = 12, L = 48, k = 5, B = 20;
    lsae_model *m = make_model(d, L, k, 1, 3);
    lsae_config c = train_cfg(m, 1);
    lsae_trainer *t = NULL;
    lsae_step_stats st;
    float *x = (float *)malloc(B * d * sizeof(float)), *acts = (float *)malloc(B * k * sizeof(float));
    int32_t *idx = (int32_t *)malloc(B * k * sizeof(int32_t));
    double tv = 0.0, se[3] = { 0, 0, 0 }, mean;
    const size_t sizes[3] = { 8, 20, 48 };
    const double w[3] = { 1.0, 0.5, 2.0 };
    size_t r, j, i, lev;
    tu_seed(5);
    for (r = 0; r < B * d; ++r) x[r] = (float)tu_normal();
    c.sae_type = LSAE_SAE_MATRYOSHKA;
    c.matryoshka_form = LSAE_MATRYOSHKA_NESTED;
    c.matryoshka_levels = 3;
    for (lev = 0; lev < 3; ++lev) { c.matryoshka_sizes[lev] = sizes[lev]; c.matryoshka_loss_weights[lev] = w[lev]; }
    c.auxk_alpha = 0.0;
    OK(lsae_trainer_create(m, &c, &t));
    OK(lsae_model_encode(m, x, B, k, acts, idx));
    OK(lsae_trainer_accumulate(t, x, B, &st));
    for (j = 0; j < d; ++j) {
        mean = 0.0;
        for (r = 0; r < B; ++r) mean += x[r * d + j];
        mean /= (double)B;
        for (r = 0; r < B; ++r) tv += (x[r * d + j] - mean) * (x[r * d + j] - mean);
    }
    for (lev = 0; lev < 3; ++lev)
        for (r = 0; r < B; ++r)
            for (j = 0; j < d; ++j) {
                double y = m->b_dec[j];
                for (i = 0; i < k; ++i)
                    if ((size_t)idx[r * k + i] < sizes[lev]) y += (double)acts[r * k + i] * m->W_dec[(size_t)idx[r * k + i] * d + j];
                se[lev] += (x[r * d + j] - y) * (x[r * d + j] - y);
            }
    CHECK(st.levels == 3);
    for (lev = 0; lev < 3; ++lev) NEAR(st.level_fvu[lev], se[lev] / tv, 1e-5);
    CHECK(st.fvu == st.level_fvu[2]);
    NEAR(st.loss, w[0] * se[0] / tv + w[1] * se[1] / tv + w[2] * se[2] / tv, 1e-5);
    lsae_trainer_free(t);
    /* AuxK on the last level's residual: every third latent dead, so
       n_dead = 16 > d/2 = 6 picks a row, scale 1 */
    {
        lsae_trainer_state ts;
        uint64_t since[48];
        ent *e = all_entries(m, x, B);
        size_t *got = (size_t *)calloc(B, sizeof(size_t));
        double *r2 = (double *)malloc(B * d * sizeof(double)), sa = 0.0;
        c.auxk_alpha = 0.5;
        c.dead_feature_threshold = 100;
        OK(lsae_trainer_create(m, &c, &t));
        memset(&ts, 0, sizeof ts);
        for (i = 0; i < L; ++i) since[i] = i % 3 == 0 ? 101 : 0;
        ts.since_fired = since;
        ts.b_dec_initialized = 1;   /* (0 would run the geometric median: b_dec would move) */
        OK(lsae_trainer_set_state(t, &ts));
        OK(lsae_trainer_accumulate(t, x, B, &st));
        /* r = e_hat - e_m, e_m = x - (b_dec + the row's top k) */
        for (r = 0; r < B; ++r)
            for (j = 0; j < d; ++j) {
                double y = m->b_dec[j];
                for (i = 0; i < k; ++i) y += (double)acts[r * k + i] * m->W_dec[(size_t)idx[r * k + i] * d + j];
                r2[r * d + j] = -(x[r * d + j] - y);
            }
        for (i = 0; i < B * L; ++i) {
            const size_t row = (size_t)e[i].row, l = (size_t)e[i].lat;
            if (l % 3 || got[row] == d / 2) continue;
            got[row]++;
            for (j = 0; j < d; ++j) r2[row * d + j] += (double)e[i].v * m->W_dec[l * d + j];
        }
        for (i = 0; i < B * d; ++i) sa += r2[i] * r2[i];
        CHECK(st.n_dead == 16);
        NEAR(st.auxk, sa / tv, 1e-5 * (1.0 + sa / tv));
        NEAR(st.loss, w[0] * st.level_fvu[0] + w[1] * st.level_fvu[1] + w[2] * st.level_fvu[2] + 0.5 * st.auxk, 1e-9);
        lsae_trainer_free(t);
        c.auxk_alpha = 0.0;
        free(e); free(got); free(r2);
    }
    /* per-level, TopK: level j's codes are the best k_j below n_j */
    {
        const size_t ks[3] = { 2, 3, 5 };
        double sel[3] = { 0, 0, 0 };
        c.matryoshka_form = LSAE_MATRYOSHKA_PER_LEVEL;
        for (lev = 0; lev < 3; ++lev) c.matryoshka_ks[lev] = ks[lev];
        OK(lsae_trainer_create(m, &c, &t));
        OK(lsae_trainer_accumulate(t, x, B, &st));
        for (lev = 0; lev < 3; ++lev) {
            /* the best ks[lev] of the first sizes[lev] latents of each row */
            ent *e = all_entries(m, x, B);
            size_t *got = (size_t *)calloc(B, sizeof(size_t));
            double *y = (double *)malloc(B * d * sizeof(double));
            for (r = 0; r < B; ++r)
                for (j = 0; j < d; ++j) y[r * d + j] = m->b_dec[j];
            for (i = 0; i < B * L; ++i) {
                const size_t row = (size_t)e[i].row, l = (size_t)e[i].lat;
                if (l >= sizes[lev] || got[row] == ks[lev]) continue;
                got[row]++;
                for (j = 0; j < d; ++j) y[row * d + j] += (double)e[i].v * m->W_dec[l * d + j];
            }
            for (r = 0; r < B * d; ++r) sel[lev] += (x[r] - y[r]) * (x[r] - y[r]);
            NEAR(st.level_fvu[lev], sel[lev] / tv, 1e-5);
            free(got); free(y); free(e);
        }
        NEAR(st.loss, (w[0] * sel[0] + w[1] * sel[1] + w[2] * sel[2]) / tv / 3.5, 1e-5);
        CHECK(st.fvu == st.level_fvu[2] && st.levels == 3);
        lsae_trainer_free(t);
    }
    lsae_model_free(m);
    free(x); free(acts); free(idx);
}

/* ------------------------------------------------------------ k-annealing */

static size_t k_ref(size_t kf, size_t k0, unsigned long long S, double pct, unsigned long long s)
{
    long long A = (long long)floor(pct * (double)S), num;
    if ((long long)s >= A) return kf;
    if (A < 1) A = 1;
    /* floor((k0 A + (kf - k0) s) / A), all positive */
    num = (long long)k0 * A - (long long)(k0 - kf) * (long long)s;
    return (size_t)(num / A);
}

static void test_k_anneal(void)
{
    const size_t d = 8, L = 40, k = 3, B = 12;
    lsae_model *m = make_model(d, L, k, 1, 9);
    lsae_config c = train_cfg(m, 1);
    lsae_trainer *t = NULL;
    lsae_step_stats st;
    float *x = (float *)malloc(B * d * sizeof(float));
    unsigned long long s;
    size_t i;
    int bad = 0;
    tu_seed(11);
    for (i = 0; i < B * d; ++i) x[i] = (float)tu_normal();
    /* refused without a run length */
    c.k_anneal = 1;
    c.total_steps = 0;
    CHECK(lsae_trainer_create(m, &c, &t) == LSAE_INVALID_ARGS && t == NULL && strstr(lsae_last_error(), "total_steps") != NULL);
    /* the schedule, through the trainer: k0 = min(4k, L) = 12, S = 23, A = floor(0.7 * 23) = 16 */
    c.total_steps = 23;
    c.k_anneal_pct = 0.7;
    c.grad_acc_steps = 2;
    OK(lsae_trainer_create(m, &c, &t));
    for (s = 0; s < 25 && !bad; ++s) {
        size_t want = k_ref(k, 12, 23, 0.7, s), fired = 0, r;
        OK(lsae_trainer_accumulate(t, x, B, &st));
        if (st.k != want) { bad = 1; fprintf(stderr, "step %llu: k_s %zu, expected %zu\n", s, st.k, want); }
        /* every row's top k_s is kept */
        for (r = 0; r < B; ++r) fired += t->runs[r * LSAE__RUNS].n;
        if (fired != B * want) bad = 1;
        OK(lsae_trainer_accumulate(t, x, B, &st));   /* the same k_s for the whole window */
        if (st.k != want) bad = 1;
        OK(lsae_trainer_apply(t, &st));
    }
    CHECK(!bad);
    lsae_trainer_free(t);
    /* the function, value by value, over several settings */
    {
        const size_t starts[3] = { 0, 3, 40 };
        const double pcts[4] = { 0.0, 0.3, 1.0, 0.05 };
        size_t a, b2;
        for (a = 0; a < 3; ++a)
            for (b2 = 0; b2 < 4; ++b2) {
                lsae_config cc = c;
                cc.k_anneal_start = starts[a];
                cc.k_anneal_pct = pcts[b2];
                cc.total_steps = 97;
                for (s = 0; s < 110; ++s)
                    if (lsae__k_at_step(&cc, L, s) != k_ref(k, starts[a] ? starts[a] : 12, 97, pcts[b2], s)) bad = 1;
            }
        CHECK(!bad);
    }
    lsae_model_free(m);
    free(x);
}

/* ------------------------------------------------- thread-count identity */

enum { V_BATCHTOPK, V_BATCHTOPK_CAP, V_NESTED, V_NESTED_BT, V_PERLEVEL, V_PERLEVEL_BT, V_TOPK_ANNEAL, V_BT_ANNEAL, V_COUNT };
static const char *variant_name[V_COUNT] = { "batchtopk", "batchtopk capped", "nested", "nested batchtopk", "per-level", "per-level batchtopk", "topk k_anneal", "batchtopk k_anneal" };

/* 6 optimizer steps (grad_acc_steps 2, AuxK with dead latents where the
   type has it) of variant v at the given thread count: the weights and theta */
static float *train_variant(int v, int threads, float *theta)
{
    const size_t d = 20, L = 160, k = 4, B = 48;
    lsae_model *m = make_model(d, L, k, threads, 21);
    lsae_config c = train_cfg(m, threads);
    lsae_trainer *t = NULL;
    float *x = (float *)malloc(B * d * sizeof(float)), *out;
    size_t i, n = (2 * L * d + L + d);
    int step;
    tu_seed(31);
    c.grad_acc_steps = 2;
    c.dead_feature_threshold = 60;
    c.total_steps = 6;
    if (v == V_BATCHTOPK || v == V_BATCHTOPK_CAP || v == V_BT_ANNEAL) {
        c.sae_type = LSAE_SAE_BATCHTOPK;
        c.batchtopk_row_cap = v == V_BATCHTOPK_CAP;
    } else if (v != V_TOPK_ANNEAL) {
        c.sae_type = LSAE_SAE_MATRYOSHKA;
        c.matryoshka_levels = 3;
        c.matryoshka_sizes[0] = 16; c.matryoshka_sizes[1] = 64; c.matryoshka_sizes[2] = L;
        c.matryoshka_use_batchtopk = v == V_NESTED_BT || v == V_PERLEVEL_BT;
        if (v == V_PERLEVEL || v == V_PERLEVEL_BT) {
            c.matryoshka_form = LSAE_MATRYOSHKA_PER_LEVEL;
            c.matryoshka_ks[0] = 2; c.matryoshka_ks[1] = 3; c.matryoshka_ks[2] = k;
            c.auxk_alpha = 0.0;
        }
    }
    if (v == V_TOPK_ANNEAL || v == V_BT_ANNEAL) c.k_anneal = 1;
    OK(lsae_trainer_create(m, &c, &t));
    for (step = 0; step < 12; ++step) {
        lsae_step_stats st;
        for (i = 0; i < B * d; ++i) x[i] = (float)tu_normal() * (i % 7 == 0 ? 3.0f : 1.0f);
        OK(lsae_trainer_step(t, x, B, &st));
    }
    out = (float *)malloc(n * sizeof(float));
    OK(lsae_model_get_weights(m, out, out + L * d, out + L * d + L, out + 2 * L * d + L));
    *theta = lsae_model_batchtopk_threshold(m);
    lsae_trainer_free(t);
    lsae_model_free(m);
    free(x);
    return out;
}

static void test_threads(void)
{
    const size_t n = 2 * 160 * 20 + 160 + 20;
    int v, th;
    for (v = 0; v < V_COUNT; ++v) {
        float t1, tn;
        float *a = train_variant(v, 1, &t1);
        for (th = 2; th <= 3; ++th) {
            float *b = train_variant(v, th, &tn);
            CHECKF(memcmp(a, b, n * sizeof(float)) == 0 && memcmp(&t1, &tn, sizeof t1) == 0, "%s: %d threads train other bits than 1", variant_name[v], th);
            free(b);
        }
        CHECKF((v == V_BATCHTOPK || v == V_BATCHTOPK_CAP || v == V_NESTED_BT || v == V_PERLEVEL_BT || v == V_BT_ANNEAL) == (t1 > 0.0f),
               "%s: theta %g", variant_name[v], t1);
        free(a);
    }
}

int main(void)
{
    test_pick();
    test_perlevel_pick();
    test_nested_levels();
    test_k_anneal();
    test_threads();
    /* the CUDA trainer's refusal of these types is compiled with the CUDA
       build only (lsae_trainer_create, LATENTSAE_CUDA); nothing to run here */
    return TEST_SUMMARY("test_batchtopk");
}
