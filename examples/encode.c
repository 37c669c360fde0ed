/* encode.c - the inference example of latent-sae's README, in C.

   In Python (latent-sae):

       from latentsae import Sae
       sae_model = Sae.load_from_hub("enjalot/sae-nomic-text-v1.5-FineWeb-edu-100BT", "64_32")
       # or from disk
       sae_model = Sae.load_from_disk("models/sae_64_32.3mq7ckj7")
       features = sae_model.encode(embeddings)
       print(features.top_indices)
       print(features.top_acts)

   Here:

       build/encode enjalot/sae-nomic-text-v1.5-FineWeb-edu-100BT/64_32 embeddings.npy
       build/encode models/sae_64_32.3mq7ckj7 embeddings.npy [ROWS]

   MODEL is a model directory (cfg.json + sae.safetensors) when one is there,
   otherwise OWNER/NAME/SUBFOLDER in the local Hugging Face cache (put there
   by `huggingface-cli download OWNER/NAME`; nothing is downloaded here).
   EMBEDDINGS is any file lsae reads (.npy, .safetensors, .pt, a directory of
   shards); make one from texts with tools/embed.py, which normalises the
   vectors as the README's SentenceTransformer call does. The first ROWS rows
   (default 3, the README's three texts) are encoded and printed.

   Every SAE type: lsae_model_encode_sparse gives each row the latents its
   type keeps (TopK and Matryoshka a fixed k, a BatchTopK model every latent
   at or above its learned threshold, any number a row), as Sae.encode does.

   Build: cc -O2 -fopenmp -pthread examples/encode.c -o encode -lm  (or make) */

#define _POSIX_C_SOURCE 200809L
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Sae.load_from_disk for a directory, Sae.load_from_hub for OWNER/NAME/SUBFOLDER */
static lsae_result load(const char *spec, lsae_model **m)
{
    char repo[512];
    const char *slash, *sub;
    size_t n;
    if (is_dir(spec)) return lsae_model_load(spec, NULL, m);
    slash = strchr(spec, '/');
    sub = slash ? strchr(slash + 1, '/') : NULL;
    n = sub ? (size_t)(sub - spec) : strlen(spec);
    if (!slash || n >= sizeof repo) return lsae_model_load(spec, NULL, m); /* let it say what is missing */
    memcpy(repo, spec, n);
    repo[n] = 0;
    return lsae_model_load_hf(repo, sub ? sub + 1 : NULL, NULL, m);
}

/* row r's count[r] entries, cap apart */
static void print_rows(const char *name, const float *acts, const int32_t *idx, const size_t *count, size_t rows, size_t cap)
{
    size_t r, i;
    printf("%s = [", name);
    for (r = 0; r < rows; ++r) {
        printf("%s[", r ? ",\n  " : "");
        for (i = 0; i < count[r]; ++i) {
            if (idx) printf("%s%d", i ? ", " : "", (int)idx[r * cap + i]);
            else printf("%s%.9g", i ? ", " : "", (double)acts[r * cap + i]);
        }
        printf("]");
    }
    printf("]\n");
}

int main(int argc, char **argv)
{
    lsae_model *sae = NULL;
    lsae_dataset *ds = NULL;
    size_t rows = 3, d, k, need = 0, *count;
    float *x, *top_acts;
    int32_t *top_indices;
    lsae_result r;
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL EMBEDDINGS [ROWS]\n"
                        "  MODEL: a model directory, or OWNER/NAME/SUBFOLDER in the Hugging Face cache\n", argv[0]);
        return 2;
    }
    if (argc == 4) rows = (size_t)strtoul(argv[3], NULL, 10);
    if ((r = load(argv[1], &sae)) != LSAE_OK) {
        fprintf(stderr, "encode: %s\n", lsae_last_error());
        return 1;
    }
    if ((r = lsae_dataset_open(argv[2], NULL, NULL, &ds)) != LSAE_OK) {
        fprintf(stderr, "encode: %s\n", lsae_last_error());
        lsae_model_free(sae);
        return 1;
    }
    d = lsae_model_d_in(sae);
    k = lsae_model_encode_k(sae); /* the room a row needs, unless the model has a threshold */
    if (lsae_dataset_d_in(ds) != d) {
        fprintf(stderr, "encode: %s has rows of %zu values, the model expects %zu\n", argv[2], lsae_dataset_d_in(ds), d);
        return 1;
    }
    if (rows > lsae_dataset_rows(ds)) rows = (size_t)lsae_dataset_rows(ds);
    x = (float *)malloc(rows * d * sizeof(float) + 1);
    top_acts = (float *)malloc(rows * k * sizeof(float) + 1);
    top_indices = (int32_t *)malloc(rows * k * sizeof(int32_t) + 1);
    count = (size_t *)malloc(rows * sizeof(size_t) + 1);
    if (!x || !top_acts || !top_indices || !count) {
        fprintf(stderr, "encode: out of memory\n");
        return 1;
    }
    /* features = sae_model.encode(embeddings) */
    if ((r = lsae_dataset_read(ds, 0, rows, x)) == LSAE_OK &&
        (r = lsae_model_encode_sparse(sae, x, rows, k, top_acts, top_indices, count, &need)) == LSAE_TRUNCATED) {
        /* a BatchTopK row keeps more than k: make the room it asks for */
        k = need;
        top_acts = (float *)realloc(top_acts, rows * k * sizeof(float) + 1);
        top_indices = (int32_t *)realloc(top_indices, rows * k * sizeof(int32_t) + 1);
        if (!top_acts || !top_indices) {
            fprintf(stderr, "encode: out of memory\n");
            return 1;
        }
        r = lsae_model_encode_sparse(sae, x, rows, k, top_acts, top_indices, count, &need);
    }
    if (r != LSAE_OK) {
        fprintf(stderr, "encode: %s\n", lsae_last_error());
        return 1;
    }
    print_rows("top_indices", NULL, top_indices, count, rows, k);
    print_rows("top_acts", top_acts, NULL, count, rows, k);
    free(count);
    free(x);
    free(top_acts);
    free(top_indices);
    lsae_dataset_close(ds);
    lsae_model_free(sae);
    return 0;
}
