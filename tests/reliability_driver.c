/* The library side of tests/test_reliability.py: saves and loads that the
   Python test runs on a full disk or a read-only directory, and a digest of
   whatever a checkpoint or model directory loads to.

   reliability_driver save-ckpt DIR SEED     train 3 steps from SEED, lsae_checkpoint_save
   reliability_driver save-model DIR SEED    the same, lsae_model_save
   reliability_driver save-saelens DIR SEED  the same, lsae_model_save_saelens
   reliability_driver ckpt DIR D L K         lsae_checkpoint_load into a fresh model and
                                             trainer of that shape; print the step, a digest
                                             of weights and state, and the blob
   reliability_driver model DIR              lsae_model_load; print its digest

   A failure prints "LSAE_...: message" on one line and exits 3 for
   LSAE_IO_ERROR, 1 for anything else; success prints the digest and exits 0. */
#define _POSIX_C_SOURCE 200809L
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int report(lsae_result r)
{
    printf("%s: %s\n", lsae_result_string(r), lsae_last_error());
    return r == LSAE_IO_ERROR ? 3 : 1;
}

/* FNV-1a over the bytes */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

static uint64_t model_digest(const lsae_model *m, uint64_t h)
{
    size_t L = lsae_model_num_latents(m), d = lsae_model_d_in(m), n = 2 * L * d + L + d;
    float *w = (float *)malloc(n * sizeof(float));
    if (!w) exit(2);
    lsae_model_get_weights(m, w, w + L * d, w + L * d + L, w + 2 * L * d + L);
    h = fnv(h, w, n * sizeof(float));
    free(w);
    return h;
}

static int save(const char *kind, const char *dir, uint64_t seed)
{
    lsae_config c = lsae_config_default(16);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_result r;
    float x[64 * 16];
    int s, i, rc = 0;
    char blob[32];
    c.num_latents = 256; /* 16 KiB a tensor: a checkpoint takes about 100 KiB */
    c.k = 4;
    c.seed = seed;
    c.num_threads = 1;
    c.lr_warmup_steps = 1;
    /* every way out below frees what it made: the failed saves are exactly
       what the ASan run of test_reliability.py exercises, with leak checks on */
    if ((r = lsae_model_create(&c, NULL, &m)) != LSAE_OK || (r = lsae_trainer_create(m, &c, &t)) != LSAE_OK) goto done;
    for (s = 0; s < 3; ++s) {
        for (i = 0; i < 64 * 16; ++i) x[i] = (float)((lsae__mix64(seed * 7919 + (uint64_t)(s * 64 * 16 + i)) >> 40) % 2001) / 1000.0f - 1.0f;
        if ((r = lsae_trainer_step(t, x, 64, NULL)) != LSAE_OK) goto done;
    }
    snprintf(blob, sizeof blob, "seed %llu", (unsigned long long)seed);
    if (!strcmp(kind, "save-ckpt")) r = lsae_checkpoint_save(dir, m, t, blob, strlen(blob));
    else if (!strcmp(kind, "save-model")) r = lsae_model_save(m, dir);
    else r = lsae_model_save_saelens(m, dir);
    if (r == LSAE_OK) printf("%016llx\n", (unsigned long long)model_digest(m, 0xcbf29ce484222325ull));
done:
    if (r != LSAE_OK) rc = report(r);
    lsae_trainer_free(t);
    lsae_model_free(m);
    return rc;
}

static int load_ckpt(const char *dir, size_t d, size_t L, size_t k)
{
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_trainer_state st;
    lsae_result r;
    char blob[1024];
    size_t bl = 0, n = 2 * L * d + L + d;
    uint64_t h = 0xcbf29ce484222325ull, *since = (uint64_t *)malloc(L * 8);
    float *mv = (float *)malloc(2 * n * sizeof(float));
    int rc = 0;
    if (!since || !mv) { free(since); free(mv); return 2; }
    c.num_latents = L;
    c.k = k;
    c.num_threads = 1;
    if ((r = lsae_model_create(&c, NULL, &m)) != LSAE_OK || (r = lsae_trainer_create(m, &c, &t)) != LSAE_OK) goto done;
    memset(blob, 0, sizeof blob);
    if ((r = lsae_checkpoint_load(dir, m, t, blob, sizeof blob - 1, &bl)) != LSAE_OK) goto done;
    memset(&st, 0, sizeof st);
    st.since_fired = since;
    st.m_W_enc = mv; st.m_b_enc = mv + L * d; st.m_W_dec = st.m_b_enc + L; st.m_b_dec = st.m_W_dec + L * d;
    st.v_W_enc = st.m_b_dec + d; st.v_b_enc = st.v_W_enc + L * d; st.v_W_dec = st.v_b_enc + L; st.v_b_dec = st.v_W_dec + L * d;
    if ((r = lsae_trainer_get_state(t, &st)) != LSAE_OK) goto done;
    h = model_digest(m, h);
    h = fnv(h, mv, 2 * n * sizeof(float));
    h = fnv(h, since, L * 8);
    printf("step %llu digest %016llx blob %s\n", (unsigned long long)st.step, (unsigned long long)h, blob);
done:
    if (r != LSAE_OK) rc = report(r);
    lsae_trainer_free(t);
    lsae_model_free(m);
    free(since);
    free(mv);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strncmp(argv[1], "save-", 5)) return save(argv[1], argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 6 && !strcmp(argv[1], "ckpt"))
        return load_ckpt(argv[2], (size_t)strtoull(argv[3], NULL, 10), (size_t)strtoull(argv[4], NULL, 10), (size_t)strtoull(argv[5], NULL, 10));
    if (argc == 3 && !strcmp(argv[1], "model")) {
        lsae_model *m = NULL;
        lsae_result r = lsae_model_load(argv[2], NULL, &m);
        if (r != LSAE_OK) return report(r);
        printf("%016llx\n", (unsigned long long)model_digest(m, 0xcbf29ce484222325ull));
        lsae_model_free(m);
        return 0;
    }
    fprintf(stderr, "usage: see the top of tests/reliability_driver.c\n");
    return 2;
}
