/* Trains four small fixed problems and prints one digest of each: the final
   weights, Adam's moments, the dead-latent counters and the bits of every
   step's statistics (and, mid-window, of the accumulated gradients).

   The problems between them take every path of the step: AuxK with a third
   of the latents dead, Multi-TopK, gradient accumulation over 2 and 3
   batches (a window's gradients read back half way), rows with NaN/Inf
   dropped, normalize_decoder off, the linear, cosine and constant schedules,
   d not a multiple of the vector width, a batch (513) not a multiple of any
   block size.

   Each problem runs at 1 and 3 threads and must give the same digest (every
   reduction in the library runs in one fixed order whatever the thread
   count; exit 1 otherwise). `make test-isa` builds this file for
   -march=native and for -mavx2 -mfma and requires the same digests: the
   order does not depend on the vector width either, so the AVX-512 and AVX2
   kernels must give the same bits. (Without FMA hardware, or with
   LSAE_NO_SIMD on x86, products and sums round separately: other bits.
   On AArch64 fused multiply-add is baseline and the portable code keeps
   it: `make test-arm64` requires the NEON build, the LSAE_NO_SIMD build
   and the x86 AVX2 build to give the same digests.)

   The same digests are how a restructuring of the step is checked to leave
   training bit for bit as it was: build this file against the old and the
   new header and compare.

   `isa_digest 0 3` prints the digests of problems 0 and 3 only (for slow
   targets: `make test-arm64` runs the aarch64 build under emulation). */
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct problem {
    size_t d, L, k, rows;
    int multi_topk, normalize_decoder, nan_rows, start_dead;
    double auxk_alpha;
    uint64_t grad_acc_steps;
    lsae_lr_schedule schedule;
    int steps;
} problem;

static uint64_t digest;
static void mix(const void *p, size_t n) /* FNV-1a */
{
    size_t i;
    for (i = 0; i < n; ++i) digest = (digest ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
}

static int train(int id, const problem *p, int threads, uint64_t *out)
{
    const size_t d = p->d, L = p->L, P = 2 * L * d + L + d;
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_trainer_state st;
    lsae_step_stats ss;
    uint64_t counts[2];
    uint64_t *since = (uint64_t *)calloc(L, sizeof(uint64_t));
    float *x = (float *)malloc(p->rows * d * sizeof(float)), *w = (float *)malloc(4 * P * sizeof(float));
    float *m1 = w + P, *m2 = w + 2 * P, *g = w + 3 * P;
    size_t i;
    int s, ok = 0;
    digest = 1469598103934665603ull;
    c.num_latents = L; c.k = p->k; c.multi_topk = p->multi_topk; c.auxk_alpha = p->auxk_alpha;
    c.grad_acc_steps = p->grad_acc_steps; c.normalize_decoder = p->normalize_decoder; c.lr_schedule = p->schedule;
    c.seed = 3 + (uint64_t)id; c.dead_feature_threshold = 1000; c.lr = 1e-3; c.lr_warmup_steps = 2; c.total_steps = 8;
    c.num_threads = threads;
    if (!since || !x || !w || lsae_model_create(&c, NULL, &m) != LSAE_OK || lsae_trainer_create(m, &c, &t) != LSAE_OK) goto done;
    if (p->start_dead) {
        for (i = 0; i < L; ++i) since[i] = i % 3 ? 0 : 5000; /* a third of the latents start dead */
        memset(&st, 0, sizeof st);
        st.since_fired = since;
        if (lsae_trainer_set_state(t, &st) != LSAE_OK) goto done;
    }
    for (s = 0; s < p->steps; ++s) {
        for (i = 0; i < p->rows * d; ++i) x[i] = 2.0f * lsae__uniform(77 + (uint64_t)id, (uint64_t)s, i) - 1.0f + (i % d < 10 ? 0.5f : 0.0f);
        if (p->nan_rows) {
            x[3 * d + 1] = NAN;
            x[(p->rows - 1) * d] = INFINITY;
        }
        memset(&ss, 0, sizeof ss);
        if (lsae_trainer_step(t, x, p->rows, &ss) != LSAE_OK) goto done;
        mix(&ss.fvu, sizeof ss.fvu); mix(&ss.auxk, sizeof ss.auxk); mix(&ss.multi_topk_fvu, sizeof ss.multi_topk_fvu);
        mix(&ss.loss, sizeof ss.loss); mix(&ss.grad_norm, sizeof ss.grad_norm); mix(&ss.lr, sizeof ss.lr);
        counts[0] = ss.n_dead; counts[1] = ss.rows_used; /* size_t: 8 bytes on x86-64, 4 on wasm32 */
        mix(counts, sizeof counts);
        if (s == 1 && p->grad_acc_steps > 1) { /* mid-window: b_dec's input side is added on the way out */
            if (lsae_trainer_get_grads(t, g, g + L * d, g + L * d + L, g + 2 * L * d + L) != LSAE_OK) goto done;
            mix(g, P * sizeof(float));
        }
    }
    lsae_model_get_weights(m, w, w + L * d, w + L * d + L, w + 2 * L * d + L);
    memset(&st, 0, sizeof st);
    st.since_fired = since;
    st.m_W_enc = m1; st.m_b_enc = m1 + L * d; st.m_W_dec = m1 + L * d + L; st.m_b_dec = m1 + 2 * L * d + L;
    st.v_W_enc = m2; st.v_b_enc = m2 + L * d; st.v_W_dec = m2 + L * d + L; st.v_b_dec = m2 + 2 * L * d + L;
    if (lsae_trainer_get_state(t, &st) != LSAE_OK) goto done;
    mix(w, 3 * P * sizeof(float)); /* weights, first and second moments */
    mix(since, L * sizeof(uint64_t));
    mix(&st.step, sizeof st.step);
    *out = digest;
    ok = 1;
done:
    if (!ok) fprintf(stderr, "isa_digest: problem %d, %d threads: %s\n", id, threads, lsae_last_error());
    lsae_trainer_free(t);
    lsae_model_free(m);
    free(since); free(x); free(w);
    return ok;
}

int main(int argc, char **argv)
{
    /*                    d     L   k rows multi norm nan dead  alpha  acc  schedule   steps */
    static const problem problems[] = {
        { 100, 1600, 24,  96, 1, 1, 0, 1, 1.0 / 32, 2, LSAE_LR_LINEAR,   12 },
        {  64, 2048, 16, 200, 0, 0, 1, 0, 0.0,      1, LSAE_LR_COSINE,    9 },
        { 768, 2048, 32, 300, 0, 1, 1, 1, 1.0 / 32, 3, LSAE_LR_LINEAR,    9 },
        {  37,  600,  7, 513, 1, 1, 0, 1, 0.5,      1, LSAE_LR_CONSTANT, 10 },
    };
    const int nprob = (int)(sizeof problems / sizeof problems[0]);
    int a, i, printed = 0;
    for (a = 0; a < (argc > 1 ? argc - 1 : nprob); ++a) {
        uint64_t one = 0, three = 0;
        i = argc > 1 ? atoi(argv[a + 1]) : a;
        if (i < 0 || i >= nprob) {
            fprintf(stderr, "isa_digest: no problem %s (0 to %d)\n", argv[a + 1], nprob - 1);
            return 1;
        }
        if (!train(i, &problems[i], 1, &one) || !train(i, &problems[i], 3, &three)) return 1;
        if (one != three) {
            fprintf(stderr, "isa_digest: problem %d trains to other bits at 3 threads (%016llx) than at 1 (%016llx)\n", i,
                    (unsigned long long)three, (unsigned long long)one);
            return 1;
        }
        printf("%s%016llx", printed++ ? " " : "", (unsigned long long)one);
    }
    printf("\n");
    return 0;
}
