/* Trains a small fixed problem (AuxK with dead latents, Multi-TopK, gradient
   accumulation, a d that is not a multiple of the vector width) and prints a
   digest of the final weights. `make test-isa` builds it for -march=native
   and for -mavx2 -mfma and requires the same digest: every reduction in the
   library runs in one fixed order whatever the vector width, so the AVX-512
   and AVX2 kernels must give the same bits. (Without FMA hardware, or with
   LSAE_NO_SIMD, products and sums round separately: other bits.) */
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    const size_t d = 100, L = 1600, rows = 96;
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_trainer_state st;
    uint64_t *since = (uint64_t *)calloc(L, sizeof(uint64_t)), h = 1469598103934665603ull;
    float *x = (float *)malloc(rows * d * sizeof(float)), *w = (float *)malloc((2 * L * d + L + d) * sizeof(float));
    size_t i, step;
    c.num_latents = L; c.k = 24; c.multi_topk = 1; c.grad_acc_steps = 2; c.seed = 3;
    c.dead_feature_threshold = 1000; c.lr = 1e-3; c.lr_warmup_steps = 2; c.total_steps = 6;
    if (!since || !x || !w || lsae_model_create(&c, NULL, &m) != LSAE_OK || lsae_trainer_create(m, &c, &t) != LSAE_OK) {
        fprintf(stderr, "isa_digest: %s\n", lsae_last_error());
        return 1;
    }
    for (i = 0; i < L; ++i) since[i] = i % 3 ? 0 : 5000; /* a third of the latents start dead */
    memset(&st, 0, sizeof st);
    st.since_fired = since;
    if (lsae_trainer_set_state(t, &st) != LSAE_OK) return 1;
    for (step = 0; step < 12; ++step) {
        for (i = 0; i < rows * d; ++i) x[i] = 2.0f * lsae__uniform(77, step, i) - 1.0f + (i % d < 10 ? 0.5f : 0.0f);
        if (lsae_trainer_step(t, x, rows, NULL) != LSAE_OK) {
            fprintf(stderr, "isa_digest: %s\n", lsae_last_error());
            return 1;
        }
    }
    lsae_model_get_weights(m, w, w + L * d, w + L * d + L, w + 2 * L * d + L);
    for (i = 0; i < (2 * L * d + L + d) * sizeof(float); ++i) h = (h ^ ((const unsigned char *)w)[i]) * 1099511628211ull; /* FNV-1a */
    printf("%016llx\n", (unsigned long long)h);
    lsae_trainer_free(t);
    lsae_model_free(m);
    free(since); free(x); free(w);
    return 0;
}
