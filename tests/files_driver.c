/* A command-line window on latentsae.h's file functions for
   tests/test_files_python.py, which checks them against numpy, torch,
   safetensors and latent-sae itself:

     files_driver encode MODEL_DIR X.f32 ROWS OUT   top-k of X [ROWS, d] (raw float32):
                                                    OUT.acts (float32), OUT.idx (int32)
     files_driver create MODEL_DIR D L K SEED       a fresh model with non-zero biases, saved
     files_driver convert IN_DIR OUT_DIR            load (any format), save latent-sae format
     files_driver saelens IN_DIR OUT_DIR            load (any format), save SAELens format
     files_driver dump PATH OUT.f32 [opts]          every row of a dataset as float32
     files_driver open PATH [opts]                  open a dataset; print "ok ROWS D" or the error
   opts: --d-in N --dtype f32|f16|bf16 --tensor NAME --no-mmap --format npy|safetensors|raw|torch
   Exit status 0 on success, 2 when the library refused (the message on stdout). */
#define _POSIX_C_SOURCE 200809L
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(lsae_result r)
{
    printf("%s: %s\n", lsae_result_string(r), lsae_last_error());
    fflush(stdout); /* LeakSanitizer ends the process without flushing stdio */
    return 2;
}

static void *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    void *p;
    long sz;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc((size_t)sz + 1);
    *n = fread(p, 1, (size_t)sz, f);
    fclose(f);
    return p;
}

static int spill(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) return 1;
    return fclose(f) != 0;
}

static void parse_opts(int argc, char **argv, int from, lsae_dataset_options *o)
{
    int i;
    for (i = from; i < argc; ++i) {
        if (strcmp(argv[i], "--d-in") == 0 && i + 1 < argc) o->raw_d_in = (size_t)strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
            ++i;
            o->raw_dtype = strcmp(argv[i], "f16") == 0 ? LSAE_DTYPE_F16 : strcmp(argv[i], "bf16") == 0 ? LSAE_DTYPE_BF16 : LSAE_DTYPE_F32;
        } else if (strcmp(argv[i], "--tensor") == 0 && i + 1 < argc) o->tensor_name = argv[++i];
        else if (strcmp(argv[i], "--no-mmap") == 0) o->no_mmap = 1;
        else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc) {
            ++i;
            o->format = strcmp(argv[i], "npy") == 0 ? LSAE_FORMAT_NPY : strcmp(argv[i], "safetensors") == 0 ? LSAE_FORMAT_SAFETENSORS
                      : strcmp(argv[i], "raw") == 0 ? LSAE_FORMAT_RAW : strcmp(argv[i], "torch") == 0 ? LSAE_FORMAT_TORCH : LSAE_FORMAT_AUTO;
        }
    }
}

int main(int argc, char **argv)
{
    lsae_result r;
    if (argc >= 6 && strcmp(argv[1], "encode") == 0) {
        /* encode MODEL X ROWS OUT [sparse]: lsae_model_encode with the
           model's encode k, or (sparse) lsae_model_encode_sparse into L
           slots a row, the slots past a row's count at 0 */
        lsae_model *m = NULL;
        size_t rows = (size_t)strtoull(argv[4], NULL, 10), n, k, d, i, q, *cnt, need = 0;
        float *x, *acts;
        int32_t *idx;
        char p[4096];
        int sparse = argc >= 7 && strcmp(argv[6], "sparse") == 0;
        if ((r = lsae_model_load(argv[2], NULL, &m)) != LSAE_OK) return fail(r);
        d = lsae_model_d_in(m);
        k = sparse ? lsae_model_num_latents(m) : lsae_model_encode_k(m);
        x = (float *)slurp(argv[3], &n);
        if (!x || n != rows * d * sizeof(float)) { printf("%s: expected %zu x %zu floats\n", argv[3], rows, d); return 1; }
        acts = (float *)malloc(rows * k * sizeof(float));
        idx = (int32_t *)malloc(rows * k * sizeof(int32_t));
        cnt = (size_t *)malloc((rows + 1) * sizeof(size_t));
        if (sparse) {
            if ((r = lsae_model_encode_sparse(m, x, rows, k, acts, idx, cnt, &need)) == LSAE_OK)
                for (i = 0; i < rows; ++i)
                    for (q = cnt[i]; q < k; ++q) { acts[i * k + q] = 0.0f; idx[i * k + q] = 0; }
        } else {
            r = lsae_model_encode(m, x, rows, 0, acts, idx);
        }
        free(cnt);
        if (r != LSAE_OK) { /* a refusal the tests ask for: free everything, so a sanitizer run sees no leak */
            int rc = fail(r);
            lsae_model_free(m);
            free(x); free(acts); free(idx);
            return rc;
        }
        snprintf(p, sizeof p, "%s.acts", argv[5]);
        if (spill(p, acts, rows * k * sizeof(float))) return 1;
        snprintf(p, sizeof p, "%s.idx", argv[5]);
        if (spill(p, idx, rows * k * sizeof(int32_t))) return 1;
        printf("ok %zu %zu %zu %.9g\n", rows, k, lsae_model_num_latents(m), (double)lsae_model_batchtopk_threshold(m));
        lsae_model_free(m);
        free(x); free(acts); free(idx);
        return 0;
    }
    if (argc >= 7 && strcmp(argv[1], "create") == 0) {
        lsae_config c = lsae_config_default((size_t)strtoull(argv[3], NULL, 10));
        lsae_model *m = NULL;
        float *be, *bd;
        size_t i, L;
        c.num_latents = (size_t)strtoull(argv[4], NULL, 10);
        c.k = (size_t)strtoull(argv[5], NULL, 10);
        c.seed = strtoull(argv[6], NULL, 10);
        {
            /* create DIR d L k seed [batchtopk|nested|per-level] [cap] [btk] [anneal] [theta=X]
               (nested and per-level: levels L/4, L/2, L with ks k/4, k/2, k) */
            int a;
            float theta = -1;
            for (a = 7; a < argc; ++a) {
                if (!strcmp(argv[a], "batchtopk")) c.sae_type = LSAE_SAE_BATCHTOPK;
                else if (!strcmp(argv[a], "nested") || !strcmp(argv[a], "per-level")) {
                    c.sae_type = LSAE_SAE_MATRYOSHKA;
                    c.matryoshka_form = !strcmp(argv[a], "nested") ? LSAE_MATRYOSHKA_NESTED : LSAE_MATRYOSHKA_PER_LEVEL;
                    c.matryoshka_levels = 3;
                    c.matryoshka_sizes[0] = c.num_latents / 4; c.matryoshka_sizes[1] = c.num_latents / 2; c.matryoshka_sizes[2] = c.num_latents;
                    if (c.matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL) {
                        c.matryoshka_ks[0] = c.k / 4; c.matryoshka_ks[1] = c.k / 2; c.matryoshka_ks[2] = c.k;
                        c.auxk_alpha = 0;
                    }
                    c.matryoshka_loss_weights[0] = 1; c.matryoshka_loss_weights[1] = 1; c.matryoshka_loss_weights[2] = 2;
                } else if (!strcmp(argv[a], "cap")) c.batchtopk_row_cap = 1;
                else if (!strcmp(argv[a], "btk")) c.matryoshka_use_batchtopk = 1;
                else if (!strcmp(argv[a], "anneal")) { c.k_anneal = 1; c.k_anneal_pct = 0.25; }
                else if (!strncmp(argv[a], "theta=", 6)) theta = (float)strtod(argv[a] + 6, NULL);
                else { printf("create: unknown option %s\n", argv[a]); return 1; }
            }
            if ((r = lsae_model_create(&c, NULL, &m)) != LSAE_OK) return fail(r);
            if (theta >= 0 && (r = lsae_model_set_batchtopk_threshold(m, theta)) != LSAE_OK) return fail(r);
        }
        L = lsae_model_num_latents(m);
        be = (float *)malloc(L * sizeof(float));
        bd = (float *)malloc(c.d_in * sizeof(float));
        /* small biases, so encode exercises both */
        for (i = 0; i < L; ++i) be[i] = (float)((int)(i * 2654435761u % 2001) - 1000) * 1e-5f;
        for (i = 0; i < c.d_in; ++i) bd[i] = (float)((int)(i * 40503u % 2001) - 1000) * 1e-4f;
        if ((r = lsae_model_set_weights(m, NULL, be, NULL, bd)) != LSAE_OK) return fail(r);
        if ((r = lsae_model_save(m, argv[2])) != LSAE_OK) return fail(r);
        lsae_model_free(m);
        free(be); free(bd);
        printf("ok\n");
        return 0;
    }
    if (argc >= 4 && (strcmp(argv[1], "convert") == 0 || strcmp(argv[1], "saelens") == 0)) {
        lsae_model *m = NULL;
        if ((r = lsae_model_load(argv[2], NULL, &m)) != LSAE_OK) return fail(r);
        r = strcmp(argv[1], "saelens") == 0 ? lsae_model_save_saelens(m, argv[3]) : lsae_model_save(m, argv[3]);
        if (r != LSAE_OK) return fail(r);
        lsae_model_free(m);
        printf("ok\n");
        return 0;
    }
    if (argc >= 3 && (strcmp(argv[1], "dump") == 0 || strcmp(argv[1], "open") == 0)) {
        lsae_dataset_options o = lsae_dataset_options_default();
        lsae_dataset *ds = NULL;
        int dump = strcmp(argv[1], "dump") == 0;
        parse_opts(argc, argv, dump ? 4 : 3, &o);
        if ((r = lsae_dataset_open(argv[2], &o, NULL, &ds)) != LSAE_OK) return fail(r);
        if (dump) {
            uint64_t rows = lsae_dataset_rows(ds);
            size_t d = lsae_dataset_d_in(ds);
            float *x = (float *)malloc((size_t)rows * d * sizeof(float) + 4);
            if ((r = lsae_dataset_read(ds, 0, (size_t)rows, x)) != LSAE_OK) return fail(r);
            if (spill(argv[3], x, (size_t)rows * d * sizeof(float))) return 1;
            free(x);
        }
        printf("ok %llu %zu\n", (unsigned long long)lsae_dataset_rows(ds), lsae_dataset_d_in(ds));
        lsae_dataset_close(ds);
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top of tests/files_driver.c\n");
    return 1;
}
