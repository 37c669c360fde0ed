/* cfg.json: the JSON tokeniser and every reader of its values, on memory.
   The input is the file's text, read as latent-sae/sparsify (lsae_config_from_json)
   and as SAELens (lsae__saelens_cfg). */
#include "fuzz_common.h"

/* every token through the decoders the readers use */
static void walk(const lsae__json *j)
{
    size_t t;
    char buf[256];
    for (t = 0; t < j->ntok; ++t) {
        uint64_t u;
        double dv;
        int b;
        FZ_ASSERT(j->tok[t].start <= j->tok[t].end && j->tok[t].end <= j->n, "token %zu spans [%zu, %zu) of %zu bytes", t, j->tok[t].start,
                  j->tok[t].end, j->n);
        FZ_ASSERT(j->tok[t].next > t && j->tok[t].next <= j->ntok, "token %zu: next %zu of %zu", t, j->tok[t].next, j->ntok);
        switch (j->tok[t].type) {
        case LSAE__J_STR:
            if (lsae__json_str(j, t, buf, sizeof buf)) FZ_ASSERT(strlen(buf) < sizeof buf, "decoded string overflows");
            (void)lsae__json_str(j, t, buf, 3);
            (void)lsae__json_str_eq(j, t, "d_in");
            break;
        case LSAE__J_NUM:
            (void)lsae__json_u64(j, t, UINT64_MAX, &u);
            (void)lsae__json_double(j, t, &dv);
            break;
        case LSAE__J_OBJ:
            (void)lsae__json_get(j, t, "k");
            break;
        default:
            (void)lsae__json_bool(j, t, &b);
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    lsae_config cfg;
    lsae__json j;
    lsae_result r;
    size_t d = 0, L = 0, k = 0;
    int rescale = 0;
    fz_input_size = size;

    r = lsae_config_from_json(text, size, &cfg);
    fz_result("lsae_config_from_json", r);
    if (r == LSAE_OK) {
        /* what the loader then relies on */
        size_t nl = lsae_config_num_latents(&cfg);
        FZ_ASSERT(cfg.d_in > 0 && cfg.d_in <= INT32_MAX && nl > 0 && nl <= INT32_MAX && cfg.k > 0 && cfg.k <= nl,
                  "accepted d_in %zu, L %zu, k %zu", cfg.d_in, nl, cfg.k);
    } else {
        fz_check_error(r, "lsae_config_from_json");
    }

    r = lsae__saelens_cfg(text, size, NULL, &d, &L, &k, &rescale);
    fz_result("lsae__saelens_cfg", r);
    if (r == LSAE_OK) FZ_ASSERT(d > 0 && d <= INT32_MAX && L > 0 && L <= INT32_MAX && k > 0, "SAELens accepted d_in %zu, d_sae %zu, k %zu", d, L, k);
    else fz_check_error(r, "lsae__saelens_cfg");

    if (lsae__json_parse(&j, text, size, NULL) == LSAE_OK) {
        walk(&j);
        lsae__json_free(&j);
    }
    return 0;
}
