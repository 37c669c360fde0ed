/* The example from latentsae.h's doc block, as a program: train a small SAE
   on random data, encode a row, save the model.
   cc -O2 -fopenmp -I.. quickstart.c -lm */
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    size_t d = 64, rows = 256, step, i;
    lsae_config cfg = lsae_config_default(d);   /* expansion 32, k 32 */
    lsae_model *sae = NULL;
    lsae_trainer *tr = NULL;
    lsae_step_stats st;
    float *x = (float *)malloc(rows * d * sizeof(float));
    float acts[32]; int32_t idx[32];
    cfg.k = 8; cfg.total_steps = 100; cfg.lr_warmup_steps = 10;
    if (lsae_model_create(&cfg, NULL, &sae) != LSAE_OK ||
        lsae_trainer_create(sae, &cfg, &tr) != LSAE_OK) {
        fprintf(stderr, "latentsae: %s\n", lsae_last_error());
        return 1;
    }
    for (step = 0; step < 100; ++step) {
        for (i = 0; i < rows * d; ++i) x[i] = (float)rand() / (float)RAND_MAX;
        if (lsae_trainer_step(tr, x, rows, &st) != LSAE_OK) {
            fprintf(stderr, "latentsae: %s\n", lsae_last_error());
            return 1;
        }
    }
    printf("fvu %.3f\n", st.fvu);
    lsae_model_encode(sae, x, 1, 8, acts, idx);      /* one row, top 8 */
    for (i = 0; i < 8; ++i) printf("%d:%.3f ", (int)idx[i], acts[i]);
    printf("\n");
    if (lsae_model_save(sae, "build/quickstart_sae") != LSAE_OK)  /* cfg.json + sae.safetensors */
        fprintf(stderr, "latentsae: %s\n", lsae_last_error());
    lsae_trainer_free(tr);
    lsae_model_free(sae);
    free(x);
    return 0;
}
