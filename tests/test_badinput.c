/* Absurd sizes in every file a user can hand the library (issue 7, "Bad
   input"): a header claiming 2^62 bytes, shapes whose product overflows,
   sizes a small file cannot hold, k > L, d_in disagreeing between cfg.json
   and the weights. Each must be refused with a message that names the file
   and the problem, and before anything is allocated for the claimed size:
   the allocator passed in refuses (and records) any block over LIMIT, and
   counts blocks so error paths are seen to free what they took. Inputs the
   fuzz harnesses (tests/fuzz) found are replayed by make test-fuzz; these
   are the cases written down by hand. */
#include "test_util.h"
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <string.h>
#include <stdint.h>

#define TDIR "build/badinput_tmp"
#define LIMIT ((size_t)4 << 20) /* the largest legitimate block here is the dataset's 1 MiB buffer */

typedef struct watch {
    size_t largest, over_size;
    long live, over;
} watch;

static void *w_malloc(size_t n, void *u)
{
    watch *w = (watch *)u;
    if (n > w->largest) w->largest = n;
    if (n > LIMIT) { ++w->over; w->over_size = n; return NULL; }
    ++w->live;
    return malloc(n);
}

static void w_free(void *p, void *u)
{
    if (p) --((watch *)u)->live;
    free(p);
}

static watch W;
static lsae_allocator A;

static const lsae_allocator *fresh(void)
{
    memset(&W, 0, sizeof W);
    A.user = &W;
    A.malloc_fn = w_malloc;
    A.free_fn = w_free;
    return &A;
}

static int msg_has(const char *s) { return strstr(lsae_last_error(), s) != NULL; }

/* refused with code, the message holding want and the file's name, nothing
   large asked for, nothing left allocated */
#define REFUSED(r, code, want, file, what) do { \
    CHECKF((r) == (code) && msg_has(want) && msg_has(file), "%s: %s: %s", what, lsae_result_string(r), lsae_last_error()); \
    CHECKF(W.over == 0, "%s: asked for %zu bytes before refusing", what, W.over_size); \
    CHECKF(W.live == 0, "%s: %ld blocks not freed", what, W.live); } while (0)

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

/* a safetensors file: 8-byte length, the header, data bytes (zeros) */
static void st_file(const char *path, const char *hdr, size_t data)
{
    size_t n = strlen(hdr), i;
    unsigned char *b = (unsigned char *)calloc(8 + n + data + 1, 1);
    for (i = 0; i < 8; ++i) b[i] = (unsigned char)((unsigned long long)n >> (8 * i));
    memcpy(b + 8, hdr, n);
    write_bytes(path, b, 8 + n + data);
    free(b);
}

/* a safetensors file with the given data bytes */
/* data: n bytes of float32 values, stored little-endian as safetensors
   says (docs/files.md) whatever this machine's byte order */
static void st_file_data(const char *path, const char *hdr, const float *data, size_t n)
{
    size_t hl = strlen(hdr), i;
    unsigned char *b = (unsigned char *)calloc(8 + hl + n + 1, 1);
    for (i = 0; i < 8; ++i) b[i] = (unsigned char)((unsigned long long)hl >> (8 * i));
    memcpy(b + 8, hdr, hl);
    for (i = 0; i + 4 <= n; i += 4) {
        uint32_t u;
        memcpy(&u, &data[i / 4], 4);
        lsae__put_le(b + 8 + hl + i, u, 4);
    }
    write_bytes(path, b, 8 + hl + n);
    free(b);
}

/* ------------------------------------------------------------ safetensors */

static void test_safetensors(void)
{
    const char *p = TDIR "/e.safetensors";
    lsae_dataset_options o = lsae_dataset_options_default();
    lsae_dataset *ds = NULL;
    lsae_result r;
    static const struct { const char *hdr; size_t data; const char *msg; } cases[] = {
        /* product of the shape overflows */
        { "{\"x\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648,2147483648],\"data_offsets\":[0,16]}}", 16, "overflows" },
        { "{\"x\":{\"dtype\":\"F32\",\"shape\":[18446744073709551615,1],\"data_offsets\":[0,16]}}", 16, "bad size" },
        /* offsets a small file cannot hold */
        { "{\"x\":{\"dtype\":\"F32\",\"shape\":[1073741824,1073741824],\"data_offsets\":[0,4611686018427387904]}}", 16, "past the end" },
        { "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[4611686018427387888,4611686018427387904]}}", 16, "past the end" },
        /* the shape disagrees with the bytes */
        { "{\"x\":{\"dtype\":\"F32\",\"shape\":[1048576,1048576],\"data_offsets\":[0,16]}}", 16, "need" },
    };
    size_t i;
    /* a header length of 2^62, and one just over the cap */
    {
        unsigned char b[16] = { 0, 0, 0, 0, 0, 0, 0, 0x40, '{', '}' };
        write_bytes(p, b, 10);
        r = lsae_dataset_open(p, &o, fresh(), &ds);
        REFUSED(r, LSAE_BAD_FILE, "header claims 4611686018427387904 bytes", p, "2^62-byte header");
        lsae__put_le(b, (uint64_t)LSAE_MAX_SAFETENSORS_HEADER + 1, 8);
        write_bytes(p, b, 10);
        o.format = LSAE_FORMAT_SAFETENSORS;
        r = lsae_dataset_open(p, &o, fresh(), &ds);
        REFUSED(r, LSAE_BAD_FILE, "more than the", p, "header over the cap");
        /* under the cap but past the end of the file */
        lsae__put_le(b, 1000, 8);
        write_bytes(p, b, 10);
        r = lsae_dataset_open(p, &o, fresh(), &ds);
        REFUSED(r, LSAE_BAD_FILE, "only 2 after the length", p, "header past the end");
    }
    for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        char what[32];
        snprintf(what, sizeof what, "safetensors case %zu", i);
        st_file(p, cases[i].hdr, cases[i].data);
        r = lsae_dataset_open(p, &o, fresh(), &ds);
        REFUSED(r, LSAE_BAD_FILE, cases[i].msg, p, what);
    }
    /* the control: the same writer and a sane header open */
    st_file(p, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16);
    OK(lsae_dataset_open(p, &o, fresh(), &ds));
    CHECK(ds && lsae_dataset_rows(ds) == 2 && lsae_dataset_d_in(ds) == 2);
    lsae_dataset_close(ds);
    CHECK(W.live == 0 && W.over == 0);
}

/* ------------------------------------------------------------------ models */

/* a 2 x 3 model's weights (d_in 2, L 3) */
static const char *ST_2x3 =
    "{\"encoder.weight\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]},"
    "\"encoder.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]},"
    "\"W_dec\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[36,60]},"
    "\"b_dec\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[60,68]}}";
/* the same in SAELens's names (W_enc is [d_in, d_sae]) */
static const char *SL_2x3 =
    "{\"W_enc\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b_enc\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]},"
    "\"W_dec\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[36,60]},"
    "\"b_dec\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[60,68]}}";

static void test_models(void)
{
    const char *dir = TDIR "/model", *sl = TDIR "/saelens";
    lsae_model *m = NULL;
    lsae_result r;
    lsae__mkdirs(dir);
    lsae__mkdirs(sl);
    st_file(TDIR "/model/sae.safetensors", ST_2x3, 68);
    st_file(TDIR "/saelens/sae_weights.safetensors", SL_2x3, 68);

    /* the controls: both load */
    write_text(TDIR "/model/cfg.json", "{\"d_in\": 2, \"num_latents\": 3, \"k\": 1}");
    OK(lsae_model_load(dir, fresh(), &m));
    CHECK(m && lsae_model_d_in(m) == 2 && lsae_model_num_latents(m) == 3);
    lsae_model_free(m);
    m = NULL;
    CHECK(W.live == 0 && W.over == 0);
    write_text(TDIR "/saelens/cfg.json", "{\"architecture\": \"topk\", \"d_in\": 2, \"d_sae\": 3, \"k\": 1}");
    OK(lsae_model_load_saelens(sl, fresh(), &m));
    CHECK(m && lsae_model_d_in(m) == 2 && lsae_model_num_latents(m) == 3);
    lsae_model_free(m);
    m = NULL;
    CHECK(W.live == 0 && W.over == 0);

    /* folds that leave float32: a NaN input_mean (mean_center) and a
       SAELens decoder row whose norm overflows (rescale_acts_by_decoder_norm) */
    {
        float data[19];
        size_t i;
        static const char *mc =
            "{\"encoder.weight\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]},"
            "\"encoder.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]},"
            "\"W_dec\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[36,60]},"
            "\"b_dec\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[60,68]},"
            "\"input_mean\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[68,76]}}";
        for (i = 0; i < 19; ++i) data[i] = 0.5f;
        data[17] = (float)NAN;
        st_file_data(TDIR "/model/sae.safetensors", mc, data, 76);
        write_text(TDIR "/model/cfg.json", "{\"d_in\": 2, \"num_latents\": 3, \"k\": 1, \"mean_center\": true}");
        r = lsae_model_load(dir, fresh(), &m);
        REFUSED(r, LSAE_BAD_FILE, "input_mean[0] is nan", "sae.safetensors", "NaN input_mean");
        data[17] = 3e38f;
        data[15] = data[16] = 3e38f; /* b_dec + input_mean overflows */
        st_file_data(TDIR "/model/sae.safetensors", mc, data, 76);
        r = lsae_model_load(dir, fresh(), &m);
        REFUSED(r, LSAE_BAD_FILE, "folded into b_dec it gives inf", "sae.safetensors", "input_mean + b_dec overflows");
        st_file(TDIR "/model/sae.safetensors", ST_2x3, 68);
        for (i = 0; i < 17; ++i) data[i] = i >= 9 && i < 15 ? 3e38f : 0.25f; /* W_dec rows of norm 4.2e38 */
        st_file_data(TDIR "/saelens/sae_weights.safetensors", SL_2x3, data, 68);
        write_text(TDIR "/saelens/cfg.json", "{\"architecture\": \"topk\", \"d_in\": 2, \"d_sae\": 3, \"k\": 1, \"rescale_acts_by_decoder_norm\": true}");
        r = lsae_model_load_saelens(sl, fresh(), &m);
        REFUSED(r, LSAE_BAD_FILE, "leaves float32's range", "sae_weights.safetensors", "SAELens rescale overflow");
        for (i = 9; i < 15; ++i) data[i] = 3.0f;  /* the control: norms of 4.2 fold fine */
        st_file_data(TDIR "/saelens/sae_weights.safetensors", SL_2x3, data, 68);
        OK(lsae_model_load_saelens(sl, fresh(), &m));
        lsae_model_free(m);
        m = NULL;
        st_file(TDIR "/saelens/sae_weights.safetensors", SL_2x3, 68);
    }

    /* cfg.json refusals, each for our loader (saelens 0: model/cfg.json
       beside sae.safetensors) or SAELens's (1: saelens/cfg.json beside
       sae_weights.safetensors); the error names the file at fault */
    {
        static const struct {
            int saelens;
            const char *json;
            lsae_result code;
            const char *want, *file, *what;
        } cases[] = {
            /* a model of petabytes claimed, the weights file holds 2 x 3:
               refused by the weights' header, before the model is allocated */
            { 0, "{\"d_in\": 1000000, \"num_latents\": 2000000000, \"k\": 2}", LSAE_BAD_FILE,
              "cfg.json says [2000000000, 1000000]", "sae.safetensors", "cfg.json of 2e15 weights" },
            { 1, "{\"architecture\": \"topk\", \"d_in\": 1000000, \"d_sae\": 2000000000, \"k\": 1}", LSAE_BAD_FILE,
              "wrong shape for d_in 1000000, d_sae 2000000000", "sae_weights.safetensors", "SAELens cfg.json of 2e15 weights" },
            { 1, "{\"architecture\": \"topk\", \"d_in\": 2147483647, \"d_sae\": 2147483647, \"k\": 1}", LSAE_INVALID_ARGS,
              "do not fit in memory addresses", "cfg.json", "SAELens cfg.json of 2^62 weights" },
            /* d_in mismatch */
            { 0, "{\"d_in\": 3, \"num_latents\": 3, \"k\": 1}", LSAE_BAD_FILE,
              "has shape [3, 2], but cfg.json says [3, 3]", "sae.safetensors", "d_in mismatch" },
            { 1, "{\"architecture\": \"topk\", \"d_in\": 3, \"d_sae\": 3, \"k\": 1}", LSAE_BAD_FILE,
              "wrong shape for d_in 3", "sae_weights.safetensors", "SAELens d_in mismatch" },
            /* k > L */
            { 0, "{\"d_in\": 2, \"num_latents\": 3, \"k\": 4}", LSAE_INVALID_ARGS,
              "k = 4 is larger than the number of latents L = 3", "cfg.json", "k > L" },
            { 1, "{\"architecture\": \"topk\", \"d_in\": 2, \"d_sae\": 3, \"k\": 4}", LSAE_INVALID_ARGS,
              "k = 4 is larger than the number of latents L = 3", "cfg.json", "SAELens k > L" },
            /* d_in x expansion_factor overflows, and sizes past 2^31 */
            { 0, "{\"d_in\": 2147483647, \"expansion_factor\": 2147483647, \"k\": 1}", LSAE_INVALID_ARGS,
              "exceeds 2^31 - 1", "cfg.json", "L over 2^31" },
            { 0, "{\"d_in\": 4294967296, \"k\": 1}", LSAE_BAD_FILE,
              "\"d_in\" must be a positive integer", "cfg.json", "d_in over 2^31" },
            { 0, "{\"d_in\": 1e300, \"k\": 1}", LSAE_BAD_FILE,
              "\"d_in\" must be a positive integer", "cfg.json", "d_in 1e300" },
        };
        /* where size_t has 32 bits (wasm32) these sizes do not fit it, so
           cfg.json itself is refused, before the weights are looked at */
        static const struct {
            const char *what;
            lsae_result code;
            const char *want, *file;
        } narrow[] = {
            { "cfg.json of 2e15 weights", LSAE_INVALID_ARGS, "2000000000 x d_in 1000000 floats do not fit in memory addresses", "cfg.json" },
            { "SAELens cfg.json of 2e15 weights", LSAE_INVALID_ARGS, "2000000000 x d_in 1000000 floats do not fit in memory addresses", "cfg.json" },
            { "L over 2^31", LSAE_INVALID_ARGS, "d_in 2147483647 x expansion_factor 2147483647 overflows", "cfg.json" },
        };
        size_t q, n;
        for (q = 0; q < sizeof cases / sizeof cases[0]; ++q) {
            lsae_result code = cases[q].code;
            const char *want = cases[q].want, *file = cases[q].file;
            for (n = 0; sizeof(size_t) < 8 && n < sizeof narrow / sizeof narrow[0]; ++n)
                if (strcmp(narrow[n].what, cases[q].what) == 0) { code = narrow[n].code; want = narrow[n].want; file = narrow[n].file; }
            write_text(cases[q].saelens ? TDIR "/saelens/cfg.json" : TDIR "/model/cfg.json", cases[q].json);
            r = cases[q].saelens ? lsae_model_load_saelens(sl, fresh(), &m) : lsae_model_load(dir, fresh(), &m);
            REFUSED(r, code, want, file, cases[q].what);
            CHECK(m == NULL);
        }
    }
    /* a cfg.json nested past any sane depth: refused, not a stack overflow */
    {
        size_t n = 200000, i;
        char *deep = (char *)malloc(n + 1);
        for (i = 0; i < n; ++i) deep[i] = '[';
        deep[n] = 0;
        write_text(TDIR "/model/cfg.json", deep);
        r = lsae_model_load(dir, fresh(), &m);
        REFUSED(r, LSAE_BAD_FILE, "nested deeper than", "cfg.json", "deep JSON");
        free(deep);
    }
    /* a 2 GiB cfg.json is not read */
    {
        FILE *f = fopen(TDIR "/model/cfg.json", "wb");
        fseek(f, (long)(1 << 21), SEEK_SET);
        fputc('}', f);
        fclose(f);
        r = lsae_model_load(dir, fresh(), &m);
        REFUSED(r, LSAE_BAD_FILE, "more than the 1048576 expected", "cfg.json", "2 MiB cfg.json");
    }
}

/* --------------------------------------------------------------------- npy */

static void npy_file(const char *path, int major, uint64_t hlen_claim, const char *dict, size_t data)
{
    unsigned char b[512];
    size_t pl = major == 1 ? 10 : 12, n = strlen(dict);
    memset(b, 0, sizeof b);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    lsae__put_le(b + 8, hlen_claim ? hlen_claim : n, major == 1 ? 2 : 4);
    memcpy(b + pl, dict, n);
    write_bytes(path, b, pl + n + data);
}

static void test_npy(void)
{
    const char *p = TDIR "/a.npy";
    lsae_dataset *ds = NULL;
    lsae_result r;
    npy_file(p, 2, 0xFFFFFFFFu, "{}", 0);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "claims 4294967295 bytes", p, "npy 4 GiB header");
    npy_file(p, 1, 60000, "{}", 0);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "runs past the end", p, "npy header past the end");
    npy_file(p, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904), }", 64);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "overflows", p, "npy shape overflow");
    npy_file(p, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 1), }", 64);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "overflows", p, "npy 2^62 rows");
    npy_file(p, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000), }", 64);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "truncated", p, "npy shape past the end");
    npy_file(p, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (184467440737095516150, 1), }", 64);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "larger than 2^62", p, "npy size over 2^64");
    npy_file(p, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2147483648), }", 0);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "larger than 2^31 - 1", p, "npy width over 2^31");
    /* the control */
    npy_file(p, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 16);
    OK(lsae_dataset_open(p, NULL, fresh(), &ds));
    CHECK(ds && lsae_dataset_rows(ds) == 2);
    lsae_dataset_close(ds);
    CHECK(W.live == 0 && W.over == 0);
}

/* --------------------------------------------------------------------- raw */

static void test_raw(void)
{
    const char *p = TDIR "/a.bin";
    lsae_dataset_options o = lsae_dataset_options_default();
    lsae_dataset *ds = NULL;
    lsae_result r;
    float x[6] = { 1, 2, 3, 4, 5, 6 };
    write_bytes(p, x, sizeof x);
    o.format = LSAE_FORMAT_RAW;
#if SIZE_MAX > 0xFFFFFFFFu
    o.raw_d_in = (size_t)1 << 62;
    r = lsae_dataset_open(p, &o, fresh(), &ds);
    REFUSED(r, LSAE_INVALID_ARGS, "width 4611686018427387904 is too large", p, "raw width 2^62");
    o.raw_d_in = (size_t)-1;
    r = lsae_dataset_open(p, &o, fresh(), &ds);
    REFUSED(r, LSAE_INVALID_ARGS, "too large", p, "raw width 2^64 - 1");
#else
    /* a 32-bit size_t (wasm32) cannot name a row too large to count in
       bytes: the widest is refused by the file's size */
    o.raw_d_in = (size_t)-1;
    r = lsae_dataset_open(p, &o, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "not a whole number", p, "raw width 2^32 - 1");
#endif
    o.raw_d_in = 4;
    r = lsae_dataset_open(p, &o, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "not a whole number", p, "raw width not dividing");
    write_bytes(p, x, 0);
#if SIZE_MAX > 0xFFFFFFFFu
    o.raw_d_in = (size_t)1 << 40;
    r = lsae_dataset_open(p, &o, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "larger than 2^31 - 1", p, "raw width 2^40 (empty file)");
#else
    o.raw_d_in = (size_t)1 << 31;
    r = lsae_dataset_open(p, &o, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "larger than 2^31 - 1", p, "raw width 2^31 (empty file)");
#endif
    write_bytes(p, x, sizeof x);
    o.raw_d_in = 3;
    OK(lsae_dataset_open(p, &o, fresh(), &ds));
    CHECK(ds && lsae_dataset_rows(ds) == 2);
    lsae_dataset_close(ds);
    CHECK(W.live == 0 && W.over == 0);
}

/* ------------------------------------------------------------------- torch */

static unsigned char zb[1 << 16];
static size_t zn;

static void zle(uint64_t v, int n) { lsae__put_le(zb + zn, v, n); zn += (size_t)n; }
static void zput(const void *p, size_t n) { memcpy(zb + zn, p, n); zn += n; }

/* a stored zip of (name, bytes) entries, as torch.save writes */
static void write_zip(const char *path, const char *const *names, const unsigned char *const *data, const size_t *lens, int n)
{
    size_t off[8], cd;
    int i;
    zn = 0;
    for (i = 0; i < n; ++i) {
        off[i] = zn;
        zle(0x04034b50u, 4); zle(20, 2); zle(0, 2); zle(0, 2); zle(0, 4); zle(0, 4);
        zle(lens[i], 4); zle(lens[i], 4); zle(strlen(names[i]), 2); zle(0, 2);
        zput(names[i], strlen(names[i]));
        zput(data[i], lens[i]);
    }
    cd = zn;
    for (i = 0; i < n; ++i) {
        zle(0x02014b50u, 4); zle(20, 2); zle(20, 2); zle(0, 2); zle(0, 2); zle(0, 4); zle(0, 4);
        zle(lens[i], 4); zle(lens[i], 4); zle(strlen(names[i]), 2); zle(0, 2); zle(0, 2); zle(0, 2); zle(0, 2); zle(0, 4);
        zle(off[i], 4);
        zput(names[i], strlen(names[i]));
    }
    zle(0x06054b50u, 4); zle(0, 2); zle(0, 2); zle((uint64_t)n, 2); zle((uint64_t)n, 2); zle(zn - cd, 4); zle(cd, 4); zle(0, 2);
    write_bytes(path, zb, zn);
}

static unsigned char pk[1 << 16];
static size_t pn;
static void pput(const char *s, size_t n) { memcpy(pk + pn, s, n); pn += n; }
static void pstr(const char *s) { pk[pn++] = 'X'; lsae__put_le(pk + pn, strlen(s), 4); pn += 4; pput(s, strlen(s)); }
static void pint(uint64_t v) { pk[pn++] = 0x8a; pk[pn++] = 8; lsae__put_le(pk + pn, v, 8); pn += 8; } /* LONG1, 8 bytes */

/* torch._utils._rebuild_tensor_v2(('storage', STORAGE, '0', 'cpu', numel), offset, (rows, cols), (cols, 1), False, OrderedDict())
   with STORAGE torch.FloatStorage unless storage_type names another */
static const char *storage_type = "FloatStorage";
static void tensor_pickle(uint64_t numel, uint64_t offset, uint64_t rows, uint64_t cols)
{
    pn = 0;
    pput("\x80\x02", 2);
    pput("ctorch._utils\n_rebuild_tensor_v2\n", 33);
    pput("((", 2);
    pstr("storage");
    pput("ctorch\n", 7);
    pput(storage_type, strlen(storage_type));
    pput("\n", 1);
    pstr("0");
    pstr("cpu");
    pint(numel);
    pput("tQ", 2);
    pint(offset);
    pint(rows); pint(cols); pk[pn++] = 0x86;
    pint(cols); pint(1); pk[pn++] = 0x86;
    pk[pn++] = 0x89;
    pput("ccollections\nOrderedDict\n)R", 27);
    pput("tR.", 3);
}

/* a torch.save'd file: the pickle, the byteorder entry, the storage's bytes */
static void torch_file_with(const char *path, const unsigned char *pkl, size_t pkl_len, const char *byteorder,
                            const unsigned char *storage, size_t storage_bytes)
{
    const char *names[3] = { "archive/data.pkl", "archive/byteorder", "archive/data/0" };
    const unsigned char *data[3];
    size_t lens[3];
    data[0] = pkl; lens[0] = pkl_len;
    data[1] = (const unsigned char *)byteorder; lens[1] = strlen(byteorder);
    data[2] = storage; lens[2] = storage_bytes;
    write_zip(path, names, data, lens, 3);
}

static void torch_file(const char *path, const unsigned char *pkl, size_t pkl_len, size_t storage_bytes)
{
    static unsigned char st[4096];
    torch_file_with(path, pkl, pkl_len, "little", st, storage_bytes);
}

/* The storages in either byte order: 24 values as FloatStorage,
   HalfStorage and BFloat16Storage, stored little-endian (byteorder
   "little") and big-endian ("big", what torch writes on s390x), all read
   to the same floats; any other byteorder word is refused. */
static void test_torch_byteorder(const char *p)
{
    static const char *const types[3] = { "FloatStorage", "HalfStorage", "BFloat16Storage" };
    unsigned char bytes[96];
    float want[24], got[24];
    lsae_dataset *ds = NULL;
    lsae_result r;
    size_t i, ty, big;
    for (i = 0; i < 24; ++i) want[i] = (float)i * 0.25f - 3.0f; /* exact in all three */
    for (ty = 0; ty < 3; ++ty)
        for (big = 0; big < 2; ++big) {
            size_t elem = ty == 0 ? 4 : 2, q;
            for (i = 0; i < 24; ++i) {
                uint32_t u;
                memcpy(&u, &want[i], 4);
                if (ty == 2) u >>= 16; /* bfloat16: the top half */
                else if (ty == 1) {
                    /* float16 of a normal float with at most 11 significant bits: rebias the exponent, cut the mantissa */
                    uint32_t e = (u >> 23) & 0xFFu;
                    u = ((u >> 16) & 0x8000u) | (e ? ((e - 112u) << 10) | ((u & 0x7FFFFFu) >> 13) : 0u);
                }
                for (q = 0; q < elem; ++q) bytes[elem * i + (big ? elem - 1 - q : q)] = (unsigned char)(u >> (8 * q));
            }
            storage_type = types[ty];
            tensor_pickle(24, 0, 6, 4);
            torch_file_with(p, pk, pn, big ? "big" : "little", bytes, 24 * elem);
            OK(lsae_dataset_open(p, NULL, fresh(), &ds));
            if (ds) {
                memset(got, 0, sizeof got);
                OK(lsae_dataset_read(ds, 0, 6, got));
                CHECKF(memcmp(got, want, sizeof want) == 0, "torch %s, byteorder %s: got %g, want %g", types[ty], big ? "big" : "little",
                       (double)got[1], (double)want[1]);
                lsae_dataset_close(ds);
                ds = NULL;
            }
            CHECK(W.live == 0 && W.over == 0);
        }
    storage_type = "FloatStorage";
    tensor_pickle(24, 0, 6, 4);
    torch_file_with(p, pk, pn, "middle", bytes, 96);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "'little' or 'big' expected", p, "torch byteorder 'middle'");
}

static void test_torch(void)
{
    const char *p = TDIR "/t.pt";
    lsae_dataset *ds = NULL;
    lsae_result r;
    /* the control: 24 floats as [6, 4] */
    tensor_pickle(24, 0, 6, 4);
    torch_file(p, pk, pn, 96);
    OK(lsae_dataset_open(p, NULL, fresh(), &ds));
    CHECK(ds && lsae_dataset_rows(ds) == 6 && lsae_dataset_d_in(ds) == 4);
    lsae_dataset_close(ds);
    CHECK(W.live == 0 && W.over == 0);
    test_torch_byteorder(p);
    /* a storage of 2^62 elements in a 96-byte entry */
    tensor_pickle((uint64_t)1 << 62, 0, 6, 4);
    torch_file(p, pk, pn, 96);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "storage of 4611686018427387904 elements", p, "torch storage 2^62");
    /* sizes whose product overflows, or exceeds the storage */
    tensor_pickle(24, 0, (uint64_t)1 << 62, (uint64_t)1 << 62);
    torch_file(p, pk, pn, 96);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "does not fit its storage", p, "torch size overflow");
    tensor_pickle(24, 0, 1u << 20, 1u << 20);
    torch_file(p, pk, pn, 96);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "does not fit its storage", p, "torch size past the storage");
    tensor_pickle(24, (uint64_t)1 << 62, 6, 4);
    torch_file(p, pk, pn, 96);
    r = lsae_dataset_open(p, NULL, fresh(), &ds);
    REFUSED(r, LSAE_BAD_FILE, "does not fit its storage", p, "torch offset 2^62");
    /* a string claiming 2^63 bytes */
    {
        static const unsigned char s[] = { 0x80, 0x04, 0x8d, 0, 0, 0, 0, 0, 0, 0, 0x80, '.' };
        torch_file(p, s, sizeof s, 96);
        r = lsae_dataset_open(p, NULL, fresh(), &ds);
        REFUSED(r, LSAE_BAD_FILE, "runs past the end", p, "pickle string of 2^63 bytes");
    }
    /* a memo index of 2^24 from a 5-byte opcode */
    {
        static const unsigned char s[] = { 0x80, 0x02, 'N', 'r', 0xFF, 0xFF, 0xFF, 0x00, '.' };
        torch_file(p, s, sizeof s, 96);
        r = lsae_dataset_open(p, NULL, fresh(), &ds);
        REFUSED(r, LSAE_BAD_FILE, "memo", p, "pickle memo index 2^24");
    }
    /* a list grown one APPEND at a time: linear memory, not quadratic */
    {
        size_t i;
        pn = 0;
        pput("\x80\x02]", 3);
        for (i = 0; i < 10000; ++i) pput("Na", 2);
        pk[pn++] = '.';
        torch_file(p, pk, pn, 96);
        r = lsae_dataset_open(p, NULL, fresh(), &ds);
        REFUSED(r, LSAE_BAD_FILE, "holds 0 2-D tensors", p, "list of 10000 appends");
        CHECKF(W.largest < ((size_t)2 << 20), "a 40 kB pickle took a block of %zu bytes", W.largest);
    }
    /* a storage type made by STACK_GLOBAL from a string and a list: the
       message must not print the list as if it were a string of the pickle
       (it once printed bytes from wherever the list's items were) */
    {
        static const char head[] = "\x80\x02]q\x00]q\x01Na0Na0", tail[] =
            "ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storageX\x05\x00\x00\x00torchh\x01\x93"
            "X\x01\x00\x00\x00" "0" "X\x03\x00\x00\x00" "cpu" "K\x18tQK\x00K\x06K\x04\x86K\x04K\x01\x86\x89}tR.";
        size_t i;
        pn = 0;
        pput(head, sizeof head - 1);
        for (i = 0; i < 40; ++i) pput("h\x01Na0h\x00Na0", 10);
        pput(tail, sizeof tail - 1);
        torch_file(p, pk, pn, 96);
        r = lsae_dataset_open(p, NULL, fresh(), &ds);
        REFUSED(r, LSAE_UNSUPPORTED, "tensor storage is unknown; embeddings", p, "storage type from STACK_GLOBAL of a list");
    }
    /* a zip whose central directory claims 2^40 bytes (zip64), and whose data.pkl claims 2^40 */
    {
        unsigned char z[200];
        memset(z, 0, sizeof z);
        memcpy(z, "PK\x03\x04", 4);
        /* zip64 end record at 30, locator at 86, end record at 106 */
        lsae__put_le(z + 30, 0x06064b50u, 4);
        lsae__put_le(z + 30 + 32, 1, 8);
        lsae__put_le(z + 30 + 40, (uint64_t)1 << 40, 8);
        lsae__put_le(z + 30 + 48, 0, 8);
        lsae__put_le(z + 86, 0x07064b50u, 4);
        lsae__put_le(z + 86 + 8, 30, 8);
        lsae__put_le(z + 106, 0x06054b50u, 4);
        lsae__put_le(z + 106 + 10, 0xFFFF, 2);
        lsae__put_le(z + 106 + 12, 0xFFFFFFFFu, 4);
        lsae__put_le(z + 106 + 16, 0xFFFFFFFFu, 4);
        write_bytes(p, z, 128);
        r = lsae_dataset_open(p, NULL, fresh(), &ds);
        REFUSED(r, LSAE_BAD_FILE, "does not fit", p, "zip directory of 2^40 bytes");
    }
    {
        /* data.pkl's entry says 2^32 - 2 bytes; the file is small */
        tensor_pickle(24, 0, 6, 4);
        torch_file(p, pk, pn, 96);
        lsae__put_le(zb + 18, 0xFFFFFFFEu, 4);
        lsae__put_le(zb + 22, 0xFFFFFFFEu, 4);
        {
            /* and in the central directory (the reader's source) */
            size_t cd = (size_t)lsae__get_le(zb + zn - 6, 4);
            lsae__put_le(zb + cd + 20, 0xFFFFFFFEu, 4);
            lsae__put_le(zb + cd + 24, 0xFFFFFFFEu, 4);
        }
        write_bytes(p, zb, zn);
        r = lsae_dataset_open(p, NULL, fresh(), &ds);
        REFUSED(r, LSAE_BAD_FILE, "runs past the end", p, "data.pkl of 4 GiB");
    }
}

/* -------------------------------------------------------------------- JSON */

/* A string too long for the caller's buffer: refused, and the buffer is
   still a terminated string (messages print it). */
static void test_json(void)
{
    const char *text = "{\"normalize_activations\": \"layer_norm_with_a_name_far_longer_than_the_sixty_four_bytes_a_caller_keeps\u00e9\", "
                       "\"architecture\": \"topk\", \"d_in\": 2, \"d_sae\": 3, \"k\": 1}";
    lsae__json j;
    char buf[16];
    size_t t, d, L, k;
    int rescale, cap;
    lsae_result r;
    OK(lsae__json_parse(&j, text, strlen(text), NULL));
    t = lsae__json_get(&j, 0, "normalize_activations");
    CHECK(t != 0);
    for (cap = 1; cap <= 16; ++cap) {
        memset(buf, 'X', sizeof buf);
        CHECK(lsae__json_str(&j, t, buf, (size_t)cap) == 0);
        CHECKF(memchr(buf, 0, (size_t)cap) != NULL, "lsae__json_str left %d bytes unterminated", cap);
    }
    lsae__json_free(&j);
    r = lsae__saelens_cfg(text, strlen(text), NULL, &d, &L, &k, &rescale);
    CHECKF(r == LSAE_UNSUPPORTED && msg_has("\"layer_norm_with_a_name") && strlen(lsae_last_error()) < 250, "%s", lsae_last_error());
}

/* ------------------------------------------------------------- checkpoints */

static void test_checkpoint(void)
{
    const char *dir = TDIR "/ckpt";
    char p[256];
    lsae_config c = lsae_config_default(4);
    lsae_model *m = NULL, *m2 = NULL;
    unsigned char *b;
    long n;
    FILE *f;
    lsae_result r;
    c.num_latents = 8;
    c.k = 2;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_checkpoint_save(dir, m, NULL, "blob", 4));
    OK(lsae_model_create(&c, fresh(), &m2));
    snprintf(p, sizeof p, "%s/state.bin", dir);
    f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = (unsigned char *)malloc((size_t)n);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) CHECK(0);
    fclose(f);
    /* header fields claiming 2^31 latents, or a 2^62-byte blob: refused before the payload is read */
    lsae__put_le(b + 24, (uint64_t)1 << 31, 8);
    write_bytes(p, b, (size_t)n);
    r = lsae_checkpoint_load(dir, m2, NULL, NULL, 0, NULL);
    CHECKF(r == LSAE_BAD_FILE && msg_has("does not match d_in 4, L 2147483648") && msg_has(p), "%s", lsae_last_error());
    lsae__put_le(b + 24, 8, 8);
    lsae__put_le(b + 56, (uint64_t)1 << 62, 8);
    write_bytes(p, b, (size_t)n);
    r = lsae_checkpoint_load(dir, m2, NULL, NULL, 0, NULL);
    CHECKF(r == LSAE_BAD_FILE && msg_has("payload") && msg_has(p), "%s", lsae_last_error());
    lsae__put_le(b + 56, 4, 8);
    lsae__put_le(b + 80, (uint64_t)1 << 62, 8);
    write_bytes(p, b, (size_t)n);
    r = lsae_checkpoint_load(dir, m2, NULL, NULL, 0, NULL);
    CHECKF(r == LSAE_BAD_FILE && msg_has("truncated") && msg_has(p), "%s", lsae_last_error());
    CHECK(W.over == 0);
    /* a checkpoint of another shape: d_in mismatch */
    {
        lsae_config c5 = lsae_config_default(5);
        lsae_model *m5 = NULL;
        c5.num_latents = 8;
        c5.k = 2;
        OK(lsae_model_create(&c5, NULL, &m5));
        OK(lsae_checkpoint_save(TDIR "/ckpt5", m5, NULL, NULL, 0));
        r = lsae_checkpoint_load(TDIR "/ckpt5", m2, NULL, NULL, 0, NULL);
        CHECKF(r == LSAE_INVALID_ARGS && msg_has("checkpoint of d_in 5, L 8, k 2, but the model is d_in 4, L 8, k 2"), "%s", lsae_last_error());
        lsae_model_free(m5);
    }
    free(b);
    lsae_model_free(m);
    lsae_model_free(m2);
    CHECK(W.live == 0 && W.over == 0);
}

int main(void)
{
    tu_seed(7);
    (void)tu_normal;
    lsae__mkdirs(TDIR);
    test_safetensors();
    test_models();
    test_npy();
    test_raw();
    test_torch();
    test_json();
    test_checkpoint();
    return TEST_SUMMARY("test_badinput");
}
