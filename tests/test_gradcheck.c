/* Finite-difference check of the trainer's gradients for all four
   parameters, with AuxK and Multi-TopK on, and for the other SAE types
   (BatchTopK with and without the row cap, Matryoshka nested and per-level,
   each with a per-row and a batch-wide selection). The reference is an
   independent double-precision forward written here from docs/math.md,
   sections 2 and 3 (dense, with the selections found by sorting); central
   differences of it are compared with the library's float32 analytic
   gradient. */
#include "test_util.h"
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <string.h>

typedef struct {
    size_t d, L, k, B;
    int multi;
    double alpha;
    const unsigned char *dead;
    const double *X;
    double *e_frozen; /* [B, d]: the residual at the base point; AuxK treats it as a constant (stopgrad) */
    int freeze;       /* 0: record e_frozen; 1: use it */
    /* the SAE type (docs/math.md, section 3); all 0 is TopK */
    int type;         /* LSAE_SAE_TOPK, _BATCHTOPK, _MATRYOSHKA */
    int cap;          /* batchtopk_row_cap */
    int per_level;    /* matryoshka_form = LSAE_MATRYOSHKA_PER_LEVEL */
    int batch_wide;   /* matryoshka_use_batchtopk */
    size_t m, sizes[4], ks[4];
    double w[4];      /* loss weights as given (all 0 = all 1) */
} problem;

static const double *sort_vals;
static int sort_cmp(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_vals[i] > sort_vals[j]) return -1;
    if (sort_vals[i] < sort_vals[j]) return 1;
    return i < j ? -1 : i > j;
}

/* loss(params); sel (if not NULL) receives every selected index, to detect a
   selection change between the +h and -h evaluations. params: W_enc | b_enc | W_dec | b_dec */
static double ref_loss(const problem *p, const double *params, int *sel)
{
    const size_t d = p->d, L = p->L, k = p->k, B = p->B;
    const double *We = params, *be = We + L * d, *Wd = be + L, *bd = Wd + L * d;
    size_t K = p->multi ? (4 * k < L ? 4 * k : L) : k, n_dead = 0, ka, b, i, j, ns = 0;
    double *pre = (double *)malloc(L * sizeof(double)), *mean = (double *)calloc(d, sizeof(double));
    double *aux = (double *)malloc(L * sizeof(double));
    int *ix = (int *)malloc(L * sizeof(int)), *ax = (int *)malloc(L * sizeof(int));
    double TV = 0, se = 0, se4 = 0, sa = 0, scale;
    for (i = 0; i < L; ++i) n_dead += p->dead[i];
    ka = d / 2 < n_dead ? d / 2 : n_dead;
    scale = (double)n_dead / (double)(d / 2);
    if (scale > 1) scale = 1;
    for (b = 0; b < B; ++b) for (j = 0; j < d; ++j) mean[j] += p->X[b * d + j] / (double)B;
    for (b = 0; b < B; ++b) for (j = 0; j < d; ++j) TV += (p->X[b * d + j] - mean[j]) * (p->X[b * d + j] - mean[j]);
    for (b = 0; b < B; ++b) {
        const double *x = p->X + b * d;
        double xh[64], xh4[64], eh[64];
        for (i = 0; i < L; ++i) {
            double s = be[i];
            for (j = 0; j < d; ++j) s += We[i * d + j] * (x[j] - bd[j]);
            pre[i] = s > 0 ? s : 0;
            aux[i] = p->dead[i] ? pre[i] : -1e300;
            ix[i] = ax[i] = (int)i;
        }
        sort_vals = pre; qsort(ix, L, sizeof(int), sort_cmp);
        sort_vals = aux; qsort(ax, L, sizeof(int), sort_cmp);
        for (j = 0; j < d; ++j) { xh[j] = bd[j]; eh[j] = 0; }
        for (i = 0; i < k; ++i) for (j = 0; j < d; ++j) xh[j] += pre[ix[i]] * Wd[(size_t)ix[i] * d + j];
        for (j = 0; j < d; ++j) xh4[j] = xh[j];
        for (i = k; i < K; ++i) for (j = 0; j < d; ++j) xh4[j] += pre[ix[i]] * Wd[(size_t)ix[i] * d + j];
        for (i = 0; i < ka; ++i) for (j = 0; j < d; ++j) eh[j] += pre[ax[i]] * Wd[(size_t)ax[i] * d + j];
        for (j = 0; j < d; ++j) {
            double e = x[j] - xh[j], e4 = x[j] - xh4[j];

            se += e * e;
            se4 += e4 * e4;
            double ef;
            if (!p->freeze) p->e_frozen[b * d + j] = e;
            ef = p->e_frozen[b * d + j];
            sa += (eh[j] - ef) * (eh[j] - ef);
        }
        if (sel) {
            for (i = 0; i < K; ++i) sel[ns++] = ix[i];
            for (i = 0; i < ka; ++i) sel[ns++] = ax[i];
        }
    }
    free(pre); free(mean); free(aux); free(ix); free(ax);
    return se / TV + p->alpha * (ka ? scale * sa / TV : 0) + (p->multi ? se4 / TV / 8 : 0);
}

/* [B, L] keep mask of one selection among the first n latents of each row
   (docs/math.md, section 3): the best k of each row (value descending, ties
   to the lower latent), or batch-wide the B k best entries (value
   descending, then the lower row, then the lower latent), then with the cap
   each row's best min(count, k) of those. */
static void select_keep(const double *pre, size_t B, size_t L, size_t n, size_t k, int batch_wide, int cap,
                        unsigned char *keep)
{
    size_t b, i, c;
    int *ix = (int *)malloc(B * L * sizeof(int));
    memset(keep, 0, B * L);
    if (!batch_wide) {
        for (b = 0; b < B; ++b) {
            for (i = 0; i < n; ++i) ix[i] = (int)i;
            sort_vals = pre + b * L; qsort(ix, n, sizeof(int), sort_cmp);
            for (i = 0; i < k; ++i) keep[b * L + (size_t)ix[i]] = 1;
        }
        free(ix);
        return;
    }
    /* flat index b L + l orders by row, then latent: sort_cmp's tie rule */
    for (b = 0, c = 0; b < B; ++b) for (i = 0; i < n; ++i) ix[c++] = (int)(b * L + i);
    sort_vals = pre; qsort(ix, c, sizeof(int), sort_cmp);
    for (i = 0; i < B * k; ++i) keep[ix[i]] = 1;
    if (cap) {
        for (b = 0; b < B; ++b) {
            size_t kept = 0;
            for (i = 0; i < n; ++i) ix[i] = (int)i;
            sort_vals = pre + b * L; qsort(ix, n, sizeof(int), sort_cmp);
            for (i = 0; i < n; ++i) {
                unsigned char *q = keep + b * L + (size_t)ix[i];
                if (*q && ++kept > k) *q = 0;
            }
        }
    }
    free(ix);
}

/* The loss of section 3 for BatchTopK and both Matryoshka forms. sel (if
   not NULL) receives every keep mask and AuxK pick as ints, to detect a
   selection change; it holds (m + 2) B L ints. */
static double ref_loss_typed(const problem *p, const double *params, int *sel)
{
    const size_t d = p->d, L = p->L, k = p->k, B = p->B;
    const double *We = params, *be = We + L * d, *Wd = be + L, *bd = Wd + L * d;
    size_t n_dead = 0, ka, b, i, j, l, lev, nlev = p->type == LSAE_SAE_MATRYOSHKA ? p->m : 1;
    double *pre = (double *)malloc(B * L * sizeof(double)), *mean = (double *)calloc(d, sizeof(double));
    double *aux = (double *)malloc(L * sizeof(double)), *xh = (double *)malloc(B * d * sizeof(double));
    unsigned char *keep = (unsigned char *)malloc(B * L);
    int *ax = (int *)malloc(L * sizeof(int));
    double TV = 0, loss = 0, sa = 0, scale, w[4], wsum = 0;
    for (lev = 0; lev < nlev; ++lev) { w[lev] = p->type == LSAE_SAE_MATRYOSHKA ? p->w[lev] : 1; wsum += w[lev]; }
    if (wsum == 0) for (lev = 0, wsum = (double)nlev; lev < nlev; ++lev) w[lev] = 1;
    for (i = 0; i < L; ++i) n_dead += p->dead[i];
    ka = d / 2 < n_dead ? d / 2 : n_dead;
    if (p->alpha == 0) ka = 0;
    scale = (double)n_dead / (double)(d / 2);
    if (scale > 1) scale = 1;
    for (b = 0; b < B; ++b) for (j = 0; j < d; ++j) mean[j] += p->X[b * d + j] / (double)B;
    for (b = 0; b < B; ++b) for (j = 0; j < d; ++j) TV += (p->X[b * d + j] - mean[j]) * (p->X[b * d + j] - mean[j]);
    for (b = 0; b < B; ++b)
        for (i = 0; i < L; ++i) {
            double s = be[i];
            for (j = 0; j < d; ++j) s += We[i * d + j] * (p->X[b * d + j] - bd[j]);
            pre[b * L + i] = s > 0 ? s : 0;
        }
    if (p->type == LSAE_SAE_MATRYOSHKA && p->per_level) {
        /* (b): each level its own selection among its first n_j latents and
           its own k_j (batch-wide: always capped); the weighted mean; no AuxK */
        for (lev = 0; lev < nlev; ++lev) {
            double se = 0;
            select_keep(pre, B, L, p->sizes[lev], p->ks[lev], p->batch_wide, 1, keep);
            for (b = 0; b < B; ++b) {
                for (j = 0; j < d; ++j) xh[b * d + j] = bd[j];
                for (l = 0; l < L; ++l)
                    if (keep[b * L + l]) for (j = 0; j < d; ++j) xh[b * d + j] += pre[b * L + l] * Wd[l * d + j];
                for (j = 0; j < d; ++j) { double e = p->X[b * d + j] - xh[b * d + j]; se += e * e; }
            }
            loss += w[lev] * se / TV;
            if (sel) for (i = 0; i < B * L; ++i) sel[lev * B * L + i] = keep[i];
        }
        loss /= wsum;
    } else {
        /* BatchTopK (3.1), or nested Matryoshka (3.2): one selection over all
           L, every prefix n_j decodes it; AuxK on the last level's residual */
        const int bw = p->type == LSAE_SAE_BATCHTOPK || p->batch_wide;
        select_keep(pre, B, L, L, k, bw, bw && p->cap, keep);
        if (sel) for (i = 0; i < B * L; ++i) sel[i] = keep[i];
        for (b = 0; b < B; ++b) for (j = 0; j < d; ++j) xh[b * d + j] = bd[j];
        for (lev = 0; lev < nlev; ++lev) {
            size_t lo = lev ? p->sizes[lev - 1] : 0, hi = p->type == LSAE_SAE_MATRYOSHKA ? p->sizes[lev] : L;
            double se = 0;
            for (b = 0; b < B; ++b) {
                for (l = lo; l < hi; ++l)
                    if (keep[b * L + l]) for (j = 0; j < d; ++j) xh[b * d + j] += pre[b * L + l] * Wd[l * d + j];
                for (j = 0; j < d; ++j) { double e = p->X[b * d + j] - xh[b * d + j]; se += e * e; }
            }
            loss += w[lev] * se / TV;
        }
        /* xh now holds the whole SAE's reconstruction x_hat_m */
        for (b = 0; b < B && ka; ++b) {
            double eh[64];
            for (i = 0; i < L; ++i) { aux[i] = p->dead[i] ? pre[b * L + i] : -1e300; ax[i] = (int)i; }
            sort_vals = aux; qsort(ax, L, sizeof(int), sort_cmp);
            for (j = 0; j < d; ++j) eh[j] = 0;
            for (i = 0; i < ka; ++i) for (j = 0; j < d; ++j) eh[j] += pre[b * L + (size_t)ax[i]] * Wd[(size_t)ax[i] * d + j];
            for (j = 0; j < d; ++j) {
                double ef;
                if (!p->freeze) p->e_frozen[b * d + j] = p->X[b * d + j] - xh[b * d + j];
                ef = p->e_frozen[b * d + j];
                sa += (eh[j] - ef) * (eh[j] - ef);
            }
            if (sel) for (i = 0; i < ka; ++i) sel[B * L + b * (d / 2) + i] = ax[i];
        }
        if (ka) loss += p->alpha * scale * sa / TV;
    }
    free(pre); free(mean); free(aux); free(xh); free(keep); free(ax);
    return loss;
}

static double loss_of(const problem *p, const double *params, int *sel)
{
    return p->type == LSAE_SAE_TOPK ? ref_loss(p, params, sel) : ref_loss_typed(p, params, sel);
}

/* ty: NULL for TopK, else the SAE type's fields of a problem (type, cap,
   per_level, batch_wide, m, sizes, ks, w) */
static void run_case_ty(size_t d, size_t L, size_t k, size_t B, int multi, double alpha, size_t n_dead_set,
                        size_t grad_acc, const problem *ty)
{
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_trainer_state st;
    lsae_step_stats ss;
    size_t N = 2 * L * d + L + d, i, skipped = 0, checked = 0, bad = 0;
    float *pf = (float *)malloc(N * 4), *gf = (float *)malloc(N * 4), *Xf = (float *)malloc(B * d * 4);
    double *pd = (double *)malloc(N * 8), *Xd = (double *)malloc(B * d * 8), worst = 0;
    uint64_t *since = (uint64_t *)calloc(L, 8);
    unsigned char *dead = (unsigned char *)calloc(L, 1);
    size_t K = multi ? (4 * k < L ? 4 * k : L) : k;
    size_t nsel = ty ? (ty->m + 2) * B * L : B * (K + d / 2);
    int *s0 = (int *)calloc(nsel, sizeof(int)), *s1 = (int *)calloc(nsel, sizeof(int)), *s2 = (int *)calloc(nsel, sizeof(int));
    problem p;
    double scale_g = 0;
    c.num_latents = L; c.k = k; c.multi_topk = multi; c.auxk_alpha = alpha; c.init_b_dec = 0;
    c.dead_feature_threshold = 100; c.grad_acc_steps = grad_acc; c.seed = 42;
    memset(&p, 0, sizeof p);
    if (ty) {
        size_t q;
        p = *ty;
        c.sae_type = (lsae_sae_type)ty->type;
        c.batchtopk_row_cap = ty->cap;
        c.matryoshka_use_batchtopk = ty->batch_wide;
        c.matryoshka_form = ty->per_level ? LSAE_MATRYOSHKA_PER_LEVEL : LSAE_MATRYOSHKA_NESTED;
        c.matryoshka_levels = ty->m;
        for (q = 0; q < ty->m; ++q) {
            c.matryoshka_sizes[q] = ty->sizes[q];
            c.matryoshka_ks[q] = ty->per_level ? ty->ks[q] : 0;
            c.matryoshka_loss_weights[q] = ty->w[q];
        }
    }
    OK(lsae_model_create(&c, NULL, &m));
    /* a non-trivial point: random biases, decoder rows of mixed norms (the
       gradient does not assume unit rows) */
    for (i = 0; i < L; ++i) pf[i] = 0;
    {
        float *We = pf, *be = We + L * d, *Wd = be + L, *bd = Wd + L * d;
        OK(lsae_model_get_weights(m, We, NULL, Wd, NULL));
        for (i = 0; i < L; ++i) be[i] = (float)(0.1 * tu_normal());
        for (i = 0; i < L * d; ++i) Wd[i] *= (float)(0.5 + tu_uniform());
        for (i = 0; i < d; ++i) bd[i] = (float)(0.2 * tu_normal());
        OK(lsae_model_set_weights(m, We, be, Wd, bd));
    }
    for (i = 0; i < N; ++i) pd[i] = pf[i];
    for (i = 0; i < B * d; ++i) Xd[i] = Xf[i] = (float)(tu_normal() + 0.5);
    /* make the last n_dead_set latents dead */
    for (i = L - n_dead_set; i < L; ++i) { since[i] = 1000; dead[i] = 1; }
    OK(lsae_trainer_create(m, &c, &t));
    memset(&st, 0, sizeof st);
    st.since_fired = since;
    st.b_dec_initialized = 1;
    OK(lsae_trainer_set_state(t, &st));
    OK(lsae_trainer_accumulate(t, Xf, B, &ss));
    OK(lsae_trainer_get_grads(t, gf, gf + L * d, gf + L * d + L, gf + 2 * L * d + L));

    p.d = d; p.L = L; p.k = k; p.B = B; p.multi = multi; p.alpha = alpha; p.dead = dead; p.X = Xd;
    p.e_frozen = (double *)malloc(B * d * sizeof(double));
    p.freeze = 0;
    /* the library's losses agree with the reference */
    {
        double ref = loss_of(&p, pd, s0);
        p.freeze = 1;
        NEAR(ss.loss, ref, 1e-5 * fabs(ref));
        if (ty && (ty->type == LSAE_SAE_BATCHTOPK || ty->batch_wide)) {
            /* the batch-wide pick must differ from every row's top k here (for
               the per-level form: the last level's), or the case would check
               TopK again */
            const int *keep = ty->per_level ? s0 + (ty->m - 1) * B * L : s0;
            const size_t kk = ty->per_level ? ty->ks[ty->m - 1] : k;
            size_t b, l, uneven = 0;
            for (b = 0; b < B; ++b) {
                size_t cnt = 0;
                for (l = 0; l < L; ++l) cnt += (size_t)keep[b * L + l];
                uneven += cnt != kk;
            }
            CHECKF(uneven > 0, "every row keeps k: the batch-wide selection is not exercised");
        }
        CHECK(alpha == 0 || n_dead_set == 0 || ss.auxk > 0);
        CHECK(!multi || ss.multi_topk_fvu > 0);
    }
    for (i = 0; i < N; ++i) if (fabs(gf[i]) > scale_g) scale_g = fabs(gf[i]);
    for (i = 0; i < N; ++i) {
        const double h = 1e-6;
        double save = pd[i], lp, lm, fd, an = (double)gf[i] * (double)grad_acc, err;
        pd[i] = save + h; lp = loss_of(&p, pd, s1);
        pd[i] = save - h; lm = loss_of(&p, pd, s2);
        pd[i] = save;
        if (memcmp(s1, s0, nsel * sizeof(int)) != 0 || memcmp(s2, s0, nsel * sizeof(int)) != 0) { ++skipped; continue; }
        fd = (lp - lm) / (2 * h);
        /* float32 analytic gradient: relative 1e-4 of itself plus 1e-5 of the largest gradient */
        err = fabs(an - fd) / (1e-4 * fabs(fd) + 1e-5 * scale_g * grad_acc);
        if (err > worst) worst = err;
        ++checked;
        if (err > 1 && ++bad > 10) { ++tu_checks; ++tu_failures; continue; } /* print the first 10 */
        if (err > 1) {
            const char *names[4] = { "W_enc", "b_enc", "W_dec", "b_dec" };
            size_t off[5], q;
            off[0] = 0; off[1] = L * d; off[2] = off[1] + L; off[3] = off[2] + L * d; off[4] = N;
            for (q = 0; q < 4 && i >= off[q + 1]; ++q) {}
            CHECKF(0, "type %d cap %d per-level %d batch-wide %d levels %zu d %zu L %zu k %zu multi %d alpha %g: d%s[%zu] analytic %.9g, finite difference %.9g",
                   p.type, p.cap, p.per_level, p.batch_wide, p.m, d, L, k, multi, alpha, names[q], i - off[q], an, fd);
        }
    }
    printf("  %sd %zu L %zu k %zu B %zu multi %d auxk_alpha %.3g dead %zu grad_acc %zu: %zu coordinates checked, %zu skipped (selection changed), worst error %.3f of tolerance\n",
           !ty ? "" : ty->type == LSAE_SAE_BATCHTOPK ? (ty->cap ? "batchtopk capped: " : "batchtopk: ")
           : ty->per_level ? (ty->batch_wide ? "per-level batchtopk: " : "per-level topk: ")
           : ty->batch_wide ? (ty->cap ? "nested batchtopk capped: " : "nested batchtopk: ") : "nested topk: ",
           d, L, k, B, multi, alpha, n_dead_set, grad_acc, checked, skipped, worst);
    CHECK(skipped * 20 < checked); /* nearly every coordinate must be checkable */
    /* each parameter got a nonzero gradient somewhere */
    {
        size_t off[5], q;
        off[0] = 0; off[1] = L * d; off[2] = off[1] + L; off[3] = off[2] + L * d; off[4] = N;
        for (q = 0; q < 4; ++q) {
            double s = 0;
            for (i = off[q]; i < off[q + 1]; ++i) s += fabs(gf[i]);
            CHECKF(s > 0, "tensor %zu has an all-zero gradient", q);
        }
    }
    lsae_trainer_free(t);
    lsae_model_free(m);
    free(p.e_frozen);
    free(pf); free(gf); free(Xf); free(pd); free(Xd); free(since); free(dead); free(s0); free(s1); free(s2);
}

static void run_case(size_t d, size_t L, size_t k, size_t B, int multi, double alpha, size_t n_dead_set, size_t grad_acc)
{
    run_case_ty(d, L, k, B, multi, alpha, n_dead_set, grad_acc, NULL);
}

static problem sae_type(int type, int cap, int per_level, int batch_wide, size_t m, const size_t *sizes,
                        const size_t *ks, const double *w)
{
    problem t;
    size_t q;
    memset(&t, 0, sizeof t);
    t.type = type; t.cap = cap; t.per_level = per_level; t.batch_wide = batch_wide; t.m = m;
    for (q = 0; q < m; ++q) { t.sizes[q] = sizes[q]; t.ks[q] = ks ? ks[q] : 0; t.w[q] = w ? w[q] : 0; }
    return t;
}

int main(void)
{
    static const size_t sizes[3] = { 6, 12, 24 }, ks[3] = { 1, 2, 3 };
    static const double w[3] = { 2.0, 0.5, 1.0 };
    problem ty;
    tu_seed(2024);
    run_case(8, 24, 3, 6, 1, 1.0 / 32, 12, 1);   /* auxk and multi-topk on */
    run_case(8, 24, 3, 6, 1, 0.5, 20, 1);        /* heavy AuxK: k_aux = d/2 = 4 of 20 dead */
    run_case(10, 40, 2, 7, 0, 0.25, 3, 1);       /* few dead: k_aux = 3, scale 3/5 */
    run_case(6, 30, 4, 5, 1, 0, 0, 1);           /* AuxK off */
    run_case(8, 24, 3, 6, 1, 0.1, 10, 3);        /* gradient divided by grad_acc_steps */
    run_case(12, 16, 5, 9, 1, 0.3, 8, 1);        /* 4k = 20 > L = 16: clamps to L */
    /* docs/math.md, section 3 */
    ty = sae_type(LSAE_SAE_BATCHTOPK, 0, 0, 0, 0, NULL, NULL, NULL);
    run_case_ty(8, 24, 3, 6, 0, 0.25, 10, 1, &ty);     /* BatchTopK, AuxK on */
    ty = sae_type(LSAE_SAE_BATCHTOPK, 1, 0, 0, 0, NULL, NULL, NULL);
    run_case_ty(8, 24, 3, 6, 0, 0.25, 10, 1, &ty);     /* with the row cap */
    ty = sae_type(LSAE_SAE_MATRYOSHKA, 0, 0, 0, 3, sizes, NULL, w);
    run_case_ty(8, 24, 3, 6, 0, 0.25, 10, 1, &ty);     /* nested, unequal weights, AuxK on e_m */
    ty = sae_type(LSAE_SAE_MATRYOSHKA, 0, 0, 1, 3, sizes, NULL, NULL);
    run_case_ty(8, 24, 3, 6, 0, 0.25, 10, 1, &ty);     /* nested on one batch-wide selection */
    ty = sae_type(LSAE_SAE_MATRYOSHKA, 1, 0, 1, 3, sizes, NULL, w);
    run_case_ty(8, 24, 3, 6, 0, 0.25, 10, 1, &ty);     /* nested, batch-wide with the row cap */
    ty = sae_type(LSAE_SAE_MATRYOSHKA, 0, 1, 0, 3, sizes, ks, w);
    run_case_ty(8, 24, 3, 6, 0, 0, 0, 1, &ty);         /* per-level: own top k_j each, weighted mean */
    run_case_ty(40, 24, 3, 6, 0, 0, 0, 1, &ty);        /* d 40: b_dec's sums through the 32-wide vector block and a tail */
    ty = sae_type(LSAE_SAE_MATRYOSHKA, 0, 1, 1, 3, sizes, ks, NULL);
    run_case_ty(8, 24, 3, 6, 0, 0, 0, 1, &ty);         /* per-level, batch-wide and capped */
    return TEST_SUMMARY("test_gradcheck");
}
