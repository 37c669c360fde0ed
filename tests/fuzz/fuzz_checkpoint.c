/* Checkpoints: state.bin as lsae_checkpoint_load reads it, beside a fixed
   model (d_in 4, L 8, k 2: cfg.json and sae.safetensors written once).
   The input is
     byte 0     mode: bit 0 seal it (write the model files' hashes at bytes
                64-79 and the trailer hash over the rest, so mutations get
                past the checksums to the fields behind them); bit 1 load
                into a trainer (else weights only); bit 2 the checkpoint is
                at DIR.tmp with DIR missing (an interrupted swap)
     the rest   state.bin
   A checkpoint that loads gives a blob no longer than the file said, and
   a trainer that can take a step. */
#include "fuzz_common.h"

static char ck[600], ck2[600], ck2tmp[700];

static void setup(void)
{
    static int done = 0;
    lsae_config c;
    lsae_model *m = NULL;
    if (done) return;
    done = 1;
    c = lsae_config_default(4);
    c.num_latents = 8;
    c.k = 2;
    c.seed = 3;
    fz_path(ck, sizeof ck, "ck");
    fz_path(ck2, sizeof ck2, "ck2");
    snprintf(ck2tmp, sizeof ck2tmp, "%s.tmp", ck2);
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK || lsae_model_save(m, ck) != LSAE_OK || lsae_model_save(m, ck2tmp) != LSAE_OK) {
        fprintf(stderr, "fuzz: cannot write the fixed model: %s\n", lsae_last_error());
        abort();
    }
    lsae_model_free(m);
}

static uint64_t file_hash(const char *dir, const char *name)
{
    char p[800];
    uint64_t h = 0;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (lsae__hash_file(p, &h, NULL) != LSAE_OK) abort();
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char state[800];
    const char *dir, *load;
    unsigned char *buf;
    size_t n;
    int mode;
    lsae_config c;
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    unsigned char blob[64];
    size_t blen = 12345;
    lsae_result r;
    fz_input_size = size;
    if (size < 1) return 0;
    setup();
    mode = data[0];
    dir = (mode & 4) ? ck2tmp : ck;
    load = (mode & 4) ? ck2 : ck;
    n = size - 1;
    buf = (unsigned char *)malloc(n + 1);
    if (!buf) abort();
    memcpy(buf, data + 1, n);
    if ((mode & 1) && n >= LSAE__STATE_HDR + 8) {
        lsae__hash h;
        lsae__put_le(buf + 64, file_hash(dir, "cfg.json"), 8);
        lsae__put_le(buf + 72, file_hash(dir, "sae.safetensors"), 8);
        lsae__hash_init(&h);
        lsae__hash_update(&h, buf, n - 8);
        lsae__put_le(buf + n - 8, lsae__hash_final(&h), 8);
    }
    snprintf(state, sizeof state, "%s/state.bin", dir);
    fz_write(state, buf, n);
    free(buf);

    c = lsae_config_default(4);
    c.num_latents = 8;
    c.k = 2;
    c.seed = 5;
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK) abort();
    if ((mode & 2) && lsae_trainer_create(m, &c, &t) != LSAE_OK) abort();
    r = lsae_checkpoint_load(load, m, t, blob, sizeof blob, &blen);
    fz_result("lsae_checkpoint_load", r);
    if (r == LSAE_OK) {
        float W[8 * 4];
        size_t i;
        FZ_ASSERT(blen <= n, "a %zu-byte blob from a %zu-byte state.bin", blen, n);
        if (lsae_model_get_weights(m, W, NULL, NULL, NULL) != LSAE_OK) abort();
        for (i = 0; i < 8 * 4; ++i) FZ_ASSERT(W[i] == W[i], "NaN weight after a load");
        if (t) {
            float x[8 * 4];
            lsae_step_stats st;
            for (i = 0; i < 8 * 4; ++i) x[i] = (float)((i * 7) % 11) - 5.0f;
            r = lsae_trainer_step(t, x, 8, &st);
            if (r != LSAE_OK) fz_check_error(r, "lsae_trainer_step after a checkpoint load");
        }
    } else {
        fz_check_error(r, "lsae_checkpoint_load");
        FZ_ASSERT(blen == 0, "a failed load reported a blob of %zu bytes", blen);
    }
    lsae_trainer_free(t);
    lsae_model_free(m);
    return 0;
}
