/* web_api.c - the small C API that examples/web/index.html calls: latentsae.h
   compiled to WebAssembly, run in the browser.

   Build (make wasm-page does it, and bundles the page's model and texts):

       clang --target=wasm32-wasi -O2 -msimd128 -mexec-model=reactor -DLSAE_NO_STDIO \
             -o examples/web/latentsae.wasm examples/web/web_api.c

   A browser has no files, so the library is built without them
   (LSAE_NO_STDIO): the page reads cfg.json and sae.safetensors itself and
   hands the weights over with web_model_set_weights. Every function here
   returns an lsae_result (0 is LSAE_OK) or a pointer that is 0 on failure,
   with the reason in web_last_error(). Arrays are in the module's memory:
   the page gets room for them from web_alloc. */

#define LATENTSAE_IMPLEMENTATION
#define LATENTSAE_STATIC
#include "../../latentsae.h"

#include <math.h>
#include <stdlib.h>

#define WEB_EXPORT(name) __attribute__((export_name(#name)))

WEB_EXPORT(web_alloc) void *web_alloc(size_t bytes) { return malloc(bytes ? bytes : 1); }
WEB_EXPORT(web_free) void web_free(void *p) { free(p); }
WEB_EXPORT(web_last_error) const char *web_last_error(void) { return lsae_last_error(); }

/* A model of num_latents x d_in with k active latents, weights zero until
   web_model_set_weights (the page reads d_in, num_latents and k from cfg.json). */
WEB_EXPORT(web_model_create) lsae_model *web_model_create(size_t d_in, size_t num_latents, size_t k)
{
    lsae_config c = lsae_config_default(d_in);
    lsae_model *m = NULL;
    c.num_latents = num_latents;
    c.k = k;
    return lsae_model_create(&c, NULL, &m) == LSAE_OK ? m : NULL;
}
WEB_EXPORT(web_model_free) void web_model_free(lsae_model *m) { lsae_model_free(m); }

/* W_enc [L, d], b_enc [L], W_dec [L, d], b_dec [d], as sae.safetensors holds them */
WEB_EXPORT(web_model_set_weights)
int web_model_set_weights(lsae_model *m, const float *W_enc, const float *b_enc, const float *W_dec, const float *b_dec)
{
    return (int)lsae_model_set_weights(m, W_enc, b_enc, W_dec, b_dec);
}

/* the top k latents of each of rows rows of x [rows, d]: acts and idx [rows, k], best first */
WEB_EXPORT(web_encode)
int web_encode(const lsae_model *m, const float *x, size_t rows, size_t k, float *acts, int32_t *idx)
{
    return (int)lsae_model_encode(m, x, rows, k, acts, idx);
}

/* x_hat [rows, d] = sum over the k latents of acts W_dec[idx] + b_dec */
WEB_EXPORT(web_decode)
int web_decode(const lsae_model *m, const float *acts, const int32_t *idx, size_t rows, size_t k, float *x_hat)
{
    return (int)lsae_model_decode(m, acts, idx, rows, k, x_hat);
}

/* The top rows of E [n, d] nearest to q [d] by cosine similarity: their
   row numbers in out_row and similarities in out_sim, most similar first
   (ties: the lower row first). Returns how many were written, min(top, n),
   or -1 (q of norm 0, or bad arguments). */
WEB_EXPORT(web_nearest)
int web_nearest(const float *q, const float *E, size_t n, size_t d, size_t top, int32_t *out_row, float *out_sim)
{
    double qq = 0.0;
    size_t i, j, have = 0;
    if (!q || !E || !out_row || !out_sim || d == 0) return -1;
    for (j = 0; j < d; ++j) qq += (double)q[j] * q[j];
    if (!(qq > 0.0)) return -1;
    for (i = 0; i < n; ++i) {
        const float *e = E + i * d;
        double dot = 0.0, ee = 0.0;
        float sim;
        size_t at;
        for (j = 0; j < d; ++j) {
            dot += (double)q[j] * e[j];
            ee += (double)e[j] * e[j];
        }
        sim = ee > 0.0 ? (float)(dot / sqrt(qq * ee)) : 0.0f;
        /* insertion into the sorted list of the best so far */
        if (have == top && (top == 0 || sim <= out_sim[top - 1])) continue;
        at = have < top ? have++ : top - 1;
        while (at > 0 && out_sim[at - 1] < sim) {
            out_sim[at] = out_sim[at - 1];
            out_row[at] = out_row[at - 1];
            --at;
        }
        out_sim[at] = sim;
        out_row[at] = (int32_t)i;
    }
    return (int)have;
}
