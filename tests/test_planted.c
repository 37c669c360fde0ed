/* Planted dictionary: data are sums of k random unit directions out of D
   (positive coefficients) plus small noise. After training, at least 90% of
   the true directions must have a decoder row with cosine >= 0.9. */
#include "test_util.h"
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <string.h>

int main(int argc, char **argv)
{
    const size_t d = 32, D = 64, k = 3, L = 128, B = 256;
    const int steps = argc > 1 ? atoi(argv[1]) : 1500;
    float *dict = (float *)malloc(D * d * 4), *x = (float *)malloc(B * d * 4), *Wd = (float *)malloc(L * d * 4);
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_step_stats st;
    size_t i, j, r, found = 0;
    int s;
    double mean_best = 0;
    tu_seed(7);
    for (i = 0; i < D; ++i) {
        double n = 0;
        for (j = 0; j < d; ++j) { dict[i * d + j] = (float)tu_normal(); n += (double)dict[i * d + j] * dict[i * d + j]; }
        for (j = 0; j < d; ++j) dict[i * d + j] = (float)(dict[i * d + j] / sqrt(n));
    }
    c.num_latents = L; c.k = k; c.seed = 1; c.lr = 4e-3;
    c.lr_warmup_steps = 50; c.total_steps = (uint64_t)steps;
    c.dead_feature_threshold = 5000; /* rows */
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_trainer_create(m, &c, &t));
    for (s = 0; s < steps; ++s) {
        for (r = 0; r < B; ++r) {
            float *row = x + r * d;
            size_t pick[3], q;
            for (j = 0; j < d; ++j) row[j] = (float)(0.01 * tu_normal());
            for (q = 0; q < k; ++q) {
                size_t p;
                int again;
                do { /* k distinct directions */
                    p = (size_t)(tu_next() % D);
                    again = 0;
                    for (j = 0; j < q; ++j) again |= pick[j] == p;
                } while (again);
                pick[q] = p;
                {
                    float coef = (float)(0.5 + tu_uniform());
                    for (j = 0; j < d; ++j) row[j] += coef * dict[p * d + j];
                }
            }
        }
        OK(lsae_trainer_step(t, x, B, &st));
        if (s % 500 == 0 || s == steps - 1) printf("  step %4d fvu %.4f auxk %.4f dead %.1f%%\n", s, st.fvu, st.auxk, 100 * st.dead_fraction);
    }
    OK(lsae_model_get_weights(m, NULL, NULL, Wd, NULL));
    for (i = 0; i < D; ++i) {
        double best = -1;
        for (r = 0; r < L; ++r) {
            double dot = 0, n = 0;
            for (j = 0; j < d; ++j) { dot += (double)Wd[r * d + j] * dict[i * d + j]; n += (double)Wd[r * d + j] * Wd[r * d + j]; }
            dot /= sqrt(n);
            if (dot > best) best = dot;
        }
        mean_best += best / (double)D;
        found += best >= 0.9;
    }
    printf("  %zu of %zu planted directions recovered (cosine >= 0.9), mean best cosine %.3f, final fvu %.4f\n", found, D, mean_best, st.fvu);
    CHECKF(found * 10 >= D * 9, "only %zu of %zu directions recovered", found, D);
    CHECK(st.fvu < 0.1);
    lsae_trainer_free(t);
    lsae_model_free(m);
    free(dict); free(x); free(Wd);
    return TEST_SUMMARY("test_planted");
}
