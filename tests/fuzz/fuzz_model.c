/* A model directory, as lsae_model_load reads it: cfg.json then the weights
   (sae.safetensors, or SAELens's sae_weights.safetensors). The input is
     one mode byte (bit 0: SAELens layout), cfg.json's text, the separator
     "\n#SAFETENSORS#\n", the weights file's bytes
   (no separator: no weights file). What is checked beyond the parsers:
   the shapes in cfg.json against the tensors (d_in mismatch, k > L), and
   that nothing is allocated for a model before the weights file has been
   found to hold it. A model that loads must encode and decode a row. */
#include "fuzz_common.h"

static const char SEP[] = "\n#SAFETENSORS#\n";

static const uint8_t *find_sep(const uint8_t *p, size_t n)
{
    size_t sl = sizeof SEP - 1, i;
    for (i = 0; i + sl <= n; ++i)
        if (memcmp(p + i, SEP, sl) == 0) return p + i;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[600], cfgp[700], stp[700], other[700];
    const uint8_t *sep, *body;
    size_t cfg_len, st_len;
    int saelens;
    lsae_model *m = NULL;
    lsae_result r;
    fz_input_size = size;
    if (size < 1) return 0;
    saelens = data[0] & 1;
    body = data + 1;
    sep = find_sep(body, size - 1);
    cfg_len = sep ? (size_t)(sep - body) : size - 1;
    st_len = sep ? size - 1 - cfg_len - (sizeof SEP - 1) : 0;

    fz_path(dir, sizeof dir, "model");
    mkdir(dir, 0777);
    snprintf(cfgp, sizeof cfgp, "%s/cfg.json", dir);
    snprintf(stp, sizeof stp, "%s/%s", dir, saelens ? "sae_weights.safetensors" : "sae.safetensors");
    snprintf(other, sizeof other, "%s/%s", dir, saelens ? "sae.safetensors" : "sae_weights.safetensors");
    unlink(other);
    fz_write(cfgp, body, cfg_len);
    if (sep) fz_write(stp, sep + sizeof SEP - 1, st_len);
    else unlink(stp);

    r = lsae_model_load(dir, NULL, &m);
    fz_result("lsae_model_load", r);
    if (r != LSAE_OK) {
        fz_check_error(r, "lsae_model_load");
        FZ_ASSERT(m == NULL, "a failed load returned a model");
    } else {
        size_t d = lsae_model_d_in(m), L = lsae_model_num_latents(m), k = lsae_model_k(m), i;
        float *x, *acts, *xh;
        int32_t *idx;
        FZ_ASSERT(d > 0 && L > 0 && k > 0 && k <= L, "loaded d_in %zu, L %zu, k %zu", d, L, k);
        /* the weights came from the file: 2 L d floats of at least 2 bytes each */
        FZ_ASSERT(L <= st_len / 2 && d <= st_len / 2 && L * d <= st_len / 4, "a %zu x %zu model from a %zu-byte weights file", L, d, st_len);
        {
            /* no NaN or Inf gets into a loaded model, folds (mean_center, SAELens rescaling) included */
            float *w = (float *)malloc((2 * L * d + L + d) * sizeof(float));
            if (!w) abort();
            r = lsae_model_get_weights(m, w, w + L * d, w + L * d + L, w + 2 * L * d + L);
            FZ_ASSERT(r == LSAE_OK, "get_weights: %s", lsae_last_error());
            for (i = 0; i < 2 * L * d + L + d; ++i) FZ_ASSERT(isfinite(w[i]), "weight %zu of a loaded model is %g", i, (double)w[i]);
            free(w);
        }
        x = (float *)calloc(d, sizeof(float));
        xh = (float *)calloc(d, sizeof(float));
        acts = (float *)calloc(k, sizeof(float));
        idx = (int32_t *)calloc(k, sizeof(int32_t));
        if (!x || !xh || !acts || !idx) abort();
        for (i = 0; i < d; ++i) x[i] = (float)(i % 7) - 3.0f;
        r = lsae_model_encode(m, x, 1, 0, acts, idx);
        FZ_ASSERT(r == LSAE_OK, "a loaded model does not encode: %s", lsae_last_error());
        for (i = 0; i < k; ++i) FZ_ASSERT(idx[i] >= 0 && (size_t)idx[i] < L, "latent index %d of %zu", (int)idx[i], L);
        r = lsae_model_decode(m, acts, idx, 1, k, xh);
        FZ_ASSERT(r == LSAE_OK, "a loaded model does not decode: %s", lsae_last_error());
        free(x);
        free(xh);
        free(acts);
        free(idx);
        lsae_model_free(m);
    }
    return 0;
}
