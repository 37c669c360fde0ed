/* Finite-difference check of the trainer's gradients for all four
   parameters, with AuxK and Multi-TopK on. The reference is an independent
   double-precision forward written here from docs/math.md, section 2
   (dense, with the selections found by sorting); central differences of it
   are compared with the library's float32 analytic gradient. */
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

static void run_case(size_t d, size_t L, size_t k, size_t B, int multi, double alpha, size_t n_dead_set, size_t grad_acc)
{
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_trainer_state st;
    lsae_step_stats ss;
    size_t N = 2 * L * d + L + d, i, skipped = 0, checked = 0;
    float *pf = (float *)malloc(N * 4), *gf = (float *)malloc(N * 4), *Xf = (float *)malloc(B * d * 4);
    double *pd = (double *)malloc(N * 8), *Xd = (double *)malloc(B * d * 8), worst = 0;
    uint64_t *since = (uint64_t *)calloc(L, 8);
    unsigned char *dead = (unsigned char *)calloc(L, 1);
    size_t K = multi ? (4 * k < L ? 4 * k : L) : k, nsel = B * (K + d / 2);
    int *s0 = (int *)calloc(nsel, sizeof(int)), *s1 = (int *)calloc(nsel, sizeof(int)), *s2 = (int *)calloc(nsel, sizeof(int));
    problem p;
    double scale_g = 0;
    c.num_latents = L; c.k = k; c.multi_topk = multi; c.auxk_alpha = alpha; c.init_b_dec = 0;
    c.dead_feature_threshold = 100; c.grad_acc_steps = grad_acc; c.seed = 42;
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
        double ref = ref_loss(&p, pd, s0);
        p.freeze = 1;
        NEAR(ss.loss, ref, 1e-5 * fabs(ref));
        CHECK(alpha == 0 || n_dead_set == 0 || ss.auxk > 0);
        CHECK(!multi || ss.multi_topk_fvu > 0);
    }
    for (i = 0; i < N; ++i) if (fabs(gf[i]) > scale_g) scale_g = fabs(gf[i]);
    for (i = 0; i < N; ++i) {
        const double h = 1e-6;
        double save = pd[i], lp, lm, fd, an = (double)gf[i] * (double)grad_acc, err;
        pd[i] = save + h; lp = ref_loss(&p, pd, s1);
        pd[i] = save - h; lm = ref_loss(&p, pd, s2);
        pd[i] = save;
        if (memcmp(s1, s0, nsel * sizeof(int)) != 0 || memcmp(s2, s0, nsel * sizeof(int)) != 0) { ++skipped; continue; }
        fd = (lp - lm) / (2 * h);
        /* float32 analytic gradient: relative 1e-4 of itself plus 1e-5 of the largest gradient */
        err = fabs(an - fd) / (1e-4 * fabs(fd) + 1e-5 * scale_g * grad_acc);
        if (err > worst) worst = err;
        ++checked;
        if (err > 1) {
            const char *names[4] = { "W_enc", "b_enc", "W_dec", "b_dec" };
            size_t off[5], q;
            off[0] = 0; off[1] = L * d; off[2] = off[1] + L; off[3] = off[2] + L * d; off[4] = N;
            for (q = 0; q < 4 && i >= off[q + 1]; ++q) {}
            CHECKF(0, "d %zu L %zu k %zu multi %d alpha %g: d%s[%zu] analytic %.9g, finite difference %.9g",
                   d, L, k, multi, alpha, names[q], i - off[q], an, fd);
        }
    }
    printf("  d %zu L %zu k %zu B %zu multi %d auxk_alpha %.3g dead %zu grad_acc %zu: %zu coordinates checked, %zu skipped (selection changed), worst error %.3f of tolerance\n",
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

int main(void)
{
    tu_seed(2024);
    run_case(8, 24, 3, 6, 1, 1.0 / 32, 12, 1);   /* auxk and multi-topk on */
    run_case(8, 24, 3, 6, 1, 0.5, 20, 1);        /* heavy AuxK: k_aux = d/2 = 4 of 20 dead */
    run_case(10, 40, 2, 7, 0, 0.25, 3, 1);       /* few dead: k_aux = 3, scale 3/5 */
    run_case(6, 30, 4, 5, 1, 0, 0, 1);           /* AuxK off */
    run_case(8, 24, 3, 6, 1, 0.1, 10, 3);        /* gradient divided by grad_acc_steps */
    run_case(12, 16, 5, 9, 1, 0.3, 8, 1);        /* 4k = 20 > L = 16: clamps to L */
    return TEST_SUMMARY("test_gradcheck");
}
