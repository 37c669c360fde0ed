/* The body of the per-format opt-out checks (formats.c, notorch.c,
   nonpy.c, nosaelens.c, nohf.c, noformats.c): each defines the LSAE_NO_*
   options it tests, then includes this file. Built by make test-compile in
   every language mode and run from the repository root (it reads
   tests/data/t12x8.pt); its files go next to the binary (argv[0].*).

   Whatever is left out, the core must still work: a model saved and loaded
   (cfg.json + sae.safetensors), a checkpoint, a raw dump and a safetensors
   tensor read as datasets, the loader. A reader that is left out must say
   so: the file it would have read is refused with LSAE_UNSUPPORTED and a
   message naming the option, never misread as another format. The public
   functions of SAELens and the Hugging Face cache must be gone from the
   declarations when they are left out: this file then declares variables of
   the same names, which would not compile beside the functions. */
#define LATENTSAE_IMPLEMENTATION
#include "../../latentsae.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LSAE_NO_SAELENS
static const int lsae_model_save_saelens = 1, lsae_model_load_saelens = 1;
#endif
#ifdef LSAE_NO_HF
static const int lsae_hf_resolve = 1, lsae_model_load_hf = 1;
#endif

static int failures = 0;

#define FMT_CHECK(cond, what)                                                       \
    do {                                                                            \
        if (!(cond)) {                                                              \
            printf("FAILED (%s:%d): %s; last error: %s\n", __FILE__, __LINE__, what, \
                   lsae_last_error());                                              \
            ++failures;                                                             \
        }                                                                           \
    } while (0)

#ifdef LSAE_NO_NPY
static const int no_npy = 1;
#else
static const int no_npy = 0;
#endif
#ifdef LSAE_NO_TORCH
static const int no_torch = 1;
#else
static const int no_torch = 0;
#endif

/* r from a call on a file of some format: LSAE_OK when the format is
   compiled in; when it is left out, LSAE_UNSUPPORTED with a message that
   names the option */
static void expect(lsae_result r, int left_out, const char *option, const char *what)
{
    if (!left_out) {
        FMT_CHECK(r == LSAE_OK, what);
        return;
    }
    FMT_CHECK(r == LSAE_UNSUPPORTED, what);
    FMT_CHECK(strstr(lsae_last_error(), option) != NULL, what);
}

/* a scratch path next to the binary: argv[0] followed by suffix */
static const char *scratch(const char *argv0, const char *suffix)
{
    static char buf[8][1024];
    static int next = 0;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s%s", argv0, suffix);
    return p;
}

/* a little-endian 2 x 4 float32 .npy (version 1.0), the header padded to 128 bytes */
static int write_npy(const char *path, const float *v)
{
    char hdr[128] = "\x93NUMPY\x01\x00";
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }";
    size_t n = strlen(dict), i;
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (10 + n + 1 > sizeof hdr) { fclose(f); return 0; }
    hdr[8] = (char)(sizeof hdr - 10); /* the header's length, uint16 little-endian */
    hdr[9] = 0;
    memset(hdr + 10, ' ', sizeof hdr - 10);
    memcpy(hdr + 10, dict, n);
    hdr[sizeof hdr - 1] = '\n';
    fwrite(hdr, 1, sizeof hdr, f);
    for (i = 0; i < 8; ++i) {
        unsigned char b[4];
        uint32_t u;
        memcpy(&u, &v[i], 4);
        b[0] = (unsigned char)u; b[1] = (unsigned char)(u >> 8); b[2] = (unsigned char)(u >> 16); b[3] = (unsigned char)(u >> 24);
        fwrite(b, 1, 4, f);
    }
    return fclose(f) == 0;
}

int main(int argc, char **argv)
{
    const char *me = argc > 0 ? argv[0] : "formats";
    const char *model_dir = scratch(me, ".model"), *ckpt_dir = scratch(me, ".ckpt");
    const char *raw_path = scratch(me, ".f32"), *npy_path = scratch(me, ".npy"), *sl_dir = scratch(me, ".saelens");
    lsae_config c = lsae_config_default(4);
    lsae_model *m = NULL, *m2 = NULL;
    lsae_dataset *ds = NULL;
    lsae_dataset_options o = lsae_dataset_options_default();
    lsae_loader *ld = NULL;
    lsae_loader_options lo = lsae_loader_options_default(2);
    float vals[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, back[8], w1[64], w2[64];
    const float *batch;
    size_t rows;
    FILE *f;
    char blob[4];
    c.num_latents = 16;
    c.k = 2;

    /* the core: a model and a checkpoint round trip */
    FMT_CHECK(lsae_model_create(&c, NULL, &m) == LSAE_OK, "create a model");
    if (!m) return 1;
    FMT_CHECK(lsae_model_save(m, model_dir) == LSAE_OK, "save a model");
    FMT_CHECK(lsae_model_load(model_dir, NULL, &m2) == LSAE_OK, "load it back");
    if (m2) {
        FMT_CHECK(lsae_model_get_weights(m, w1, NULL, NULL, NULL) == LSAE_OK && lsae_model_get_weights(m2, w2, NULL, NULL, NULL) == LSAE_OK &&
                      memcmp(w1, w2, sizeof w1) == 0, "the loaded model is the saved one");
        lsae_model_free(m2);
        m2 = NULL;
    }
    FMT_CHECK(lsae_checkpoint_save(ckpt_dir, m, NULL, "abc", 4) == LSAE_OK, "save a checkpoint");
    FMT_CHECK(lsae_checkpoint_load(ckpt_dir, m, NULL, blob, sizeof blob, NULL) == LSAE_OK && memcmp(blob, "abc", 4) == 0, "load the checkpoint");

    /* the core datasets: a raw dump through the loader, a safetensors tensor */
    f = fopen(raw_path, "wb");
    FMT_CHECK(f && fwrite(vals, sizeof(float), 8, f) == 8 && fclose(f) == 0, "write a raw dump");
    o.raw_d_in = 4;
    FMT_CHECK(lsae_dataset_open(raw_path, &o, NULL, &ds) == LSAE_OK && lsae_dataset_rows(ds) == 2, "open the raw dump");
    lo.shuffle = 0;
    lo.prefetch = 0;
    if (ds && lsae_loader_create(ds, &lo, &ld) == LSAE_OK) {
        FMT_CHECK(lsae_loader_next(ld, &batch, &rows) == LSAE_OK && rows == 2 && memcmp(batch, vals, sizeof vals) == 0, "a batch of the raw dump");
        lsae_loader_free(ld);
    } else {
        FMT_CHECK(0, "a loader on the raw dump");
    }
    lsae_dataset_close(ds);
    ds = NULL;
    o = lsae_dataset_options_default();
    o.tensor_name = "W_dec";
    {
        char st_path[1100];
        snprintf(st_path, sizeof st_path, "%s/sae.safetensors", model_dir);
        FMT_CHECK(lsae_dataset_open(st_path, &o, NULL, &ds) == LSAE_OK && lsae_dataset_rows(ds) == 16 && lsae_dataset_d_in(ds) == 4,
                  "a safetensors tensor as a dataset");
        lsae_dataset_close(ds);
        ds = NULL;
    }

    /* .npy: read, or refused by name */
    FMT_CHECK(write_npy(npy_path, vals), "write an .npy");
    expect(lsae_dataset_open(npy_path, NULL, NULL, &ds), no_npy, "LSAE_NO_NPY", "open an .npy");
    if (no_npy) FMT_CHECK(ds == NULL, "no dataset comes back");
    else FMT_CHECK(ds && lsae_dataset_rows(ds) == 2 && lsae_dataset_read(ds, 0, 2, back) == LSAE_OK && memcmp(back, vals, sizeof vals) == 0,
                   "read the .npy");
    lsae_dataset_close(ds);
    ds = NULL;

    /* torch .pt, by extension and by its zip magic: read, or refused by name */
    expect(lsae_dataset_open("tests/data/t12x8.pt", NULL, NULL, &ds), no_torch, "LSAE_NO_TORCH", "open tests/data/t12x8.pt");
    if (no_torch) FMT_CHECK(ds == NULL, "no dataset comes back");
    else FMT_CHECK(ds && lsae_dataset_rows(ds) == 12 && lsae_dataset_d_in(ds) == 8, "tests/data/t12x8.pt is 12 x 8");
    lsae_dataset_close(ds);
    ds = NULL;
    o = lsae_dataset_options_default();
    o.format = LSAE_FORMAT_TORCH;
    expect(lsae_dataset_open("tests/data/t12x8.pt", &o, NULL, &ds), no_torch, "LSAE_NO_TORCH", "open tests/data/t12x8.pt as LSAE_FORMAT_TORCH");
    lsae_dataset_close(ds);
    ds = NULL;

    /* SAELens: a round trip, or lsae_model_load refusing a SAELens directory
       (made here as our own files with the weights renamed) */
#ifdef LSAE_NO_SAELENS
    (void)lsae_model_save_saelens;
    (void)lsae_model_load_saelens;
    {
        char from[1100], to[1100];
        FMT_CHECK(lsae_model_save(m, sl_dir) == LSAE_OK, "save a model to make a SAELens-like directory");
        snprintf(from, sizeof from, "%s/sae.safetensors", sl_dir);
        snprintf(to, sizeof to, "%s/sae_weights.safetensors", sl_dir);
        remove(to);
        FMT_CHECK(rename(from, to) == 0, "rename sae.safetensors to sae_weights.safetensors");
        expect(lsae_model_load(sl_dir, NULL, &m2), 1, "LSAE_NO_SAELENS", "lsae_model_load on a SAELens directory without SAELens");
        FMT_CHECK(m2 == NULL, "no model comes back");
    }
#else
    FMT_CHECK(lsae_model_save_saelens(m, sl_dir) == LSAE_OK, "save as SAELens");
    expect(lsae_model_load(sl_dir, NULL, &m2), 0, "", "lsae_model_load converts the SAELens directory");
    if (m2) {
        FMT_CHECK(lsae_model_get_weights(m2, w2, NULL, NULL, NULL) == LSAE_OK && memcmp(w1, w2, sizeof w1) == 0, "the converted model is the saved one");
        lsae_model_free(m2);
        m2 = NULL;
    }
#endif

    /* the Hugging Face cache: a repository name it must refuse before any lookup */
#ifdef LSAE_NO_HF
    (void)lsae_hf_resolve;
    (void)lsae_model_load_hf;
#else
    {
        char path[256];
        FMT_CHECK(lsae_hf_resolve("not a repository", NULL, path, sizeof path) == LSAE_INVALID_ARGS, "lsae_hf_resolve refuses a bad name");
    }
#endif

    lsae_model_free(m);
    printf("%s: %s\n", me, failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
