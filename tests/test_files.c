/* Tests of latentsae.h's file formats against independent expectations:
   cfg.json of every version, npy / safetensors / raw / torch readers and
   their error paths (each malformed file refused with a message naming it),
   shard directories, the loader (every row exactly once per epoch, NaN rows
   dropped and counted, seek, prefetch and synchronous paths identical; on
   2-4 ranks as threads, each rank's slice of every batch read alone),
   checkpoints (round trip, corruption, every crash window, kill -9 at random
   moments, bit-exact resume), the Hugging Face cache and SAELens files.
   Files written by numpy, torch and the safetensors library are checked in
   tests/test_files_python.py. Built with POSIX (threads, mmap, fork) unless
   LSAE_TEST_NO_POSIX is defined, which exercises the portable fallbacks. */
#ifndef LSAE_TEST_NO_POSIX
#define _POSIX_C_SOURCE 200809L
#endif
#include "test_util.h"
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <string.h>
#include <stdint.h>
#ifdef LSAE__POSIX
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#define TDIR "build/files_tmp"

static int msg_has(const char *s) { return strstr(lsae_last_error(), s) != NULL; }

/* a safetensors file of these tensors, every one's data given (the
   library's one writer, with no piece source) */
static lsae_result st_write(const char *path, lsae__st_out *ts, size_t n, const char *metadata_json)
{
    return lsae__st_write_src(path, ts, n, metadata_json, NULL);
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

/* n bytes of elem-byte numbers in this machine's order, written in the
   order a file says (big_endian 0: little-endian, as every format here
   stores them; docs/files.md), so the tests write the same bytes on a
   big-endian host as on x86 */
static void fwrite_ordered(FILE *f, const void *p, size_t n, size_t elem, int big_endian)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i, q;
    if (elem < 2 || lsae__little_endian() == !big_endian) { if (n) fwrite(p, 1, n, f); return; }
    for (i = 0; i + elem <= n; i += elem)
        for (q = elem; q-- > 0;) fputc(b[i + q], f);
}

/* floats (elem 4) or half floats (elem 2) as little-endian bytes */
static void write_le(const char *path, const void *p, size_t n, size_t elem)
{
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); exit(1); }
    fwrite_ordered(f, p, n, elem, 0);
    fclose(f);
}

/* an npy file written by hand from the format description: magic, version,
   header length, header text padded to 64 bytes with spaces and '\n'; the
   data (numbers in this machine's order) in the byte order descr names */
static void write_npy(const char *path, int major, const char *descr, const char *extra, const char *shape, const void *data, size_t nbytes)
{
    char hdr[512];
    unsigned char pre[12];
    size_t hl, pl = major == 1 ? 10 : 12;
    FILE *f;
    snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", descr, extra ? extra : "False", shape);
    hl = strlen(hdr);
    while ((pl + hl + 1) % 64) hdr[hl++] = ' ';
    hdr[hl++] = '\n';
    hdr[hl] = 0;
    memcpy(pre, "\x93NUMPY", 6);
    pre[6] = (unsigned char)major;
    pre[7] = 0;
    if (major == 1) { pre[8] = (unsigned char)hl; pre[9] = (unsigned char)(hl >> 8); }
    else { pre[8] = (unsigned char)hl; pre[9] = (unsigned char)(hl >> 8); pre[10] = 0; pre[11] = 0; }
    f = fopen(path, "wb");
    fwrite(pre, 1, pl, f);
    fwrite(hdr, 1, hl, f);
    fwrite_ordered(f, data, nbytes, strstr(descr, "f2") ? 2 : strstr(descr, "f4") ? 4 : strstr(descr, "f8") ? 8 : 1,
                   descr[0] == '>' || (descr[0] != '<' && !lsae__little_endian())); /* '=', '|': this machine's */
    fclose(f);
}

/* rows whose first value is the row's id, the rest a hash of (id, column) */
static float cell(uint64_t id, size_t c) { return c == 0 ? (float)id : (float)((lsae__mix64(id * 1000003u + c) >> 40) % 1000) / 1000.0f; }

static void make_rows(float *x, uint64_t first, size_t n, size_t d)
{
    size_t r, c;
    for (r = 0; r < n; ++r)
        for (c = 0; c < d; ++c) x[r * d + c] = cell(first + r, c);
}

static void make_npy_shard(const char *path, uint64_t first, size_t n, size_t d)
{
    float *x = (float *)malloc(n * d * sizeof(float) + 1);
    char shape[64];
    make_rows(x, first, n, d);
    snprintf(shape, sizeof shape, "(%zu, %zu)", n, d);
    write_npy(path, 1, "<f4", NULL, shape, x, n * d * sizeof(float));
    free(x);
}

static void rm_tree_files(const char *dir, const char *const *names, size_t n)
{
    char p[1024];
    size_t i;
    for (i = 0; i < n; ++i) { snprintf(p, sizeof p, "%s/%s", dir, names[i]); remove(p); }
    lsae__rmdir(dir); /* remove() does not remove a directory on Windows */
}

/* --------------------------------------------------------------- cfg.json */

static void test_cfg_versions(void)
{
    lsae_config c;
    const char *v2024 = "{\"expansion_factor\":32,\"normalize_decoder\":true,\"num_latents\":0,\"k\":64,\"signed\":false,\"d_in\":768}";
    const char *today = "{\"sae_type\": \"TOPK\", \"expansion_factor\": 4, \"use_skip\": false, \"skip_rank\": 0, \"normalize_decoder\": true, "
                        "\"mean_center\": false, \"num_latents\": 0, \"k\": 4, \"multi_topk\": false, \"jumprelu_init_threshold\": 0.001, "
                        "\"jumprelu_bandwidth\": 0.001, \"sparsity_penalty\": 0.001, \"jumprelu_max_active\": 512, \"k_anneal\": false, "
                        "\"k_anneal_start\": 0, \"k_anneal_pct\": 0.3, \"lista_eta\": 0.1, \"lista_steps\": 1, \"decorr_alpha\": 0.0, "
                        "\"max_fire_rate\": 0.0, \"fire_rate_penalty\": 1.0, \"batchtopk_threshold\": 0.0, \"batchtopk_threshold_beta\": 0.999, "
                        "\"matryoshka_sizes\": \"\", \"matryoshka_ks\": \"\", \"matryoshka_use_batchtopk\": false, \"matryoshka_loss_weights\": \"\", "
                        "\"cosine_alpha_init\": 0.5, \"cosine_per_feature\": true, \"decoder_init_norm\": 0.0, \"d_in\": 16}";
    const char *sparsify = "{\"activation\": \"topk\", \"expansion_factor\": 32, \"normalize_decoder\": true, \"num_latents\": 65536, \"k\": 32, "
                           "\"multi_topk\": false, \"skip_connection\": false, \"transcode\": false, \"d_in\": 2048}";
    static const struct { const char *json; const char *msg; } refused[] = {
        { "{\"d_in\": 8, \"k\": 2, \"signed\": true}", "signed" },
        { "{\"d_in\": 8, \"k\": 2, \"activation\": \"groupmax\"}", "groupmax" },
        { "{\"d_in\": 8, \"k\": 2, \"skip_connection\": true}", "skip_connection" },
        { "{\"d_in\": 8, \"k\": 2, \"transcode\": true}", "transcode" },
        { "{\"d_in\": 8, \"k\": 2, \"sae_type\": \"GATED\"}", "gated" },
        { "{\"d_in\": 8, \"k\": 2, \"sae_type\": \"jumprelu\"}", "jumprelu" },
        { "{\"d_in\": 8, \"k\": 2, \"use_skip\": true}", "use_skip" },
    };
    size_t i;
    OK(lsae_config_from_json(v2024, strlen(v2024), &c));
    CHECK(c.d_in == 768 && lsae_config_num_latents(&c) == 768 * 32 && c.k == 64 && c.normalize_decoder == 1);
    OK(lsae_config_from_json(today, strlen(today), &c));
    CHECK(c.d_in == 16 && lsae_config_num_latents(&c) == 64 && c.k == 4 && c.multi_topk == 0);
    {
        /* Python's json.dump writes NaN, Infinity and -Infinity for floats we do not read */
        const char *py = "{\"d_in\": 8, \"k\": 2, \"a\": NaN, \"b\": Infinity, \"c\": -Infinity, \"e\": [1e-3, -0.5, \"\\u00e9\"]}";
        OK(lsae_config_from_json(py, strlen(py), &c));
        CHECK(c.d_in == 8 && c.k == 2);
    }
    OK(lsae_config_from_json(sparsify, strlen(sparsify), &c));
    CHECK(c.d_in == 2048 && lsae_config_num_latents(&c) == 65536 && c.k == 32);
    for (i = 0; i < sizeof refused / sizeof refused[0]; ++i) {
        lsae_result r = lsae_config_from_json(refused[i].json, strlen(refused[i].json), &c);
        CHECKF(r == LSAE_UNSUPPORTED && msg_has(refused[i].msg), "%s -> %s: %s", refused[i].json, lsae_result_string(r), lsae_last_error());
    }
}

/* model directories with extra tensors: mean_center folded, others refused */
static void test_model_extras(void)
{
    lsae_config c = lsae_config_default(8);
    lsae_model *m = NULL, *m2 = NULL;
    float W[32 * 8], be[32], Wd[32 * 8], bd[8], mu[8], bd2[8], x[3 * 8], acts[3 * 4], acts2[3 * 4], xs[3 * 8];
    int32_t idx[3 * 4], idx2[3 * 4];
    lsae__st_out ts[5];
    const char *dir = TDIR "/mc_model";
    char path[256];
    size_t i, j;
    lsae_result r;
    c.k = 4;
    c.expansion_factor = 4;
    c.seed = 3;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_model_get_weights(m, W, be, Wd, bd));
    for (i = 0; i < 8; ++i) { bd[i] = (float)tu_normal() * 0.1f; mu[i] = (float)tu_normal() * 0.5f; }
    for (i = 0; i < 32; ++i) be[i] = (float)tu_normal() * 0.01f;
    OK(lsae_model_set_weights(m, NULL, be, NULL, bd));
    OK(lsae_model_save(m, dir));
    /* latent-sae today with mean_center: cfg flag plus an input_mean tensor */
    ts[0].name = "encoder.weight"; ts[0].ndim = 2; ts[0].shape[0] = 32; ts[0].shape[1] = 8; ts[0].data = W;
    ts[1].name = "encoder.bias"; ts[1].ndim = 1; ts[1].shape[0] = 32; ts[1].data = be;
    ts[2].name = "W_dec"; ts[2].ndim = 2; ts[2].shape[0] = 32; ts[2].shape[1] = 8; ts[2].data = Wd;
    ts[3].name = "b_dec"; ts[3].ndim = 1; ts[3].shape[0] = 8; ts[3].data = bd;
    ts[4].name = "input_mean"; ts[4].ndim = 1; ts[4].shape[0] = 8; ts[4].data = mu;
    snprintf(path, sizeof path, "%s/sae.safetensors", dir);
    OK(st_write(path, ts, 5, NULL));
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    {
        const char *cj = "{\"sae_type\": \"TOPK\", \"expansion_factor\": 4, \"mean_center\": true, \"num_latents\": 0, \"k\": 4, \"d_in\": 8}";
        write_bytes(path, cj, strlen(cj));
    }
    OK(lsae_model_load(dir, NULL, &m2));
    if (m2) {
        OK(lsae_model_get_weights(m2, NULL, NULL, NULL, bd2));
        for (i = 0; i < 8; ++i) CHECK(bd2[i] == bd[i] + mu[i]);
        /* encode(x) of the folded model = encode(x - mu) of the plain one */
        for (i = 0; i < 3 * 8; ++i) x[i] = (float)tu_normal();
        for (i = 0; i < 3; ++i)
            for (j = 0; j < 8; ++j) xs[i * 8 + j] = x[i * 8 + j] - mu[j];
        OK(lsae_model_encode(m2, x, 3, 0, acts, idx));
        OK(lsae_model_encode(m, xs, 3, 0, acts2, idx2));
        for (i = 0; i < 12; ++i) { CHECK(idx[i] == idx2[i]); NEAR(acts[i], acts2[i], 1e-5); }
        lsae_model_free(m2);
        m2 = NULL;
    }
    /* input_mean without the flag, the flag without input_mean */
    {
        const char *cj = "{\"expansion_factor\": 4, \"num_latents\": 0, \"k\": 4, \"d_in\": 8}";
        write_bytes(path, cj, strlen(cj));
        r = lsae_model_load(dir, NULL, &m2);
        CHECKF(r == LSAE_BAD_FILE && msg_has("input_mean") && m2 == NULL, "%s", lsae_last_error());
    }
    /* (st_write sorts its list by name: find the extra tensor again) */
    for (i = 0; i < 5; ++i)
        if (strcmp(ts[i].name, "input_mean") == 0) ts[i].name = "W_skip";
    snprintf(path, sizeof path, "%s/sae.safetensors", dir);
    OK(st_write(path, ts, 5, NULL));
    r = lsae_model_load(dir, NULL, &m2);
    CHECKF(r == LSAE_UNSUPPORTED && msg_has("W_skip"), "%s", lsae_last_error());
    for (i = 0; i < 5; ++i)
        if (strcmp(ts[i].name, "W_skip") == 0) ts[i].name = "mystery";
    OK(st_write(path, ts, 5, NULL));
    r = lsae_model_load(dir, NULL, &m2);
    CHECKF(r == LSAE_UNSUPPORTED && msg_has("mystery") && msg_has(path), "%s", lsae_last_error());
    lsae_model_free(m);
}

/* --------------------------------------------------------------- readers */

static lsae_result open_one(const char *path, lsae_dataset **ds)
{
    lsae_dataset_options o = lsae_dataset_options_default();
    return lsae_dataset_open(path, &o, NULL, ds);
}

static void test_npy(void)
{
    float x[6 * 5], y[6 * 5];
    uint16_t h[4] = { 0x3C00, 0xC000, 0x7BFF, 0x0001 }; /* 1, -2, 65504, 2^-24 */
    float hv[4];
    lsae_dataset *ds = NULL;
    const char *p = TDIR "/a.npy";
    static const struct { const char *descr, *fortran, *shape; size_t bytes; lsae_result code; const char *msg; } bad[] = {
        { "<f4", "True", "(6, 5)", 120, LSAE_UNSUPPORTED, "Fortran" },
        { "<f8", NULL, "(6, 5)", 240, LSAE_UNSUPPORTED, "'<f8'" },
        { ">f8", NULL, "(6, 5)", 240, LSAE_UNSUPPORTED, "'>f8'" },
        { "<i4", NULL, "(6, 5)", 120, LSAE_UNSUPPORTED, "'<i4'" },
        { "<f4", NULL, "(2, 3, 5)", 120, LSAE_BAD_FILE, "3 dimensions" },
        { "<f4", NULL, "(30,)", 120, LSAE_BAD_FILE, "1-D" },
        { "<f4", NULL, "(6, 5)", 100, LSAE_BAD_FILE, "truncated" },
        { "<f4", NULL, "(6, 5)", 124, LSAE_BAD_FILE, "extra" },
        { "<f4", NULL, "(4611686018427387904, 4611686018427387904)", 120, LSAE_BAD_FILE, "overflow" },
        { "<f4", NULL, "(99999999999999999999999, 5)", 120, LSAE_BAD_FILE, "2^62" },
    };
    size_t i;
    lsae_result r;
    make_rows(x, 0, 6, 5);
    for (i = 1; i <= 3; ++i) {
        write_npy(p, (int)i, "<f4", NULL, "(6, 5)", x, sizeof x);
        OK(open_one(p, &ds));
        if (ds) {
            CHECK(lsae_dataset_rows(ds) == 6 && lsae_dataset_d_in(ds) == 5);
            OK(lsae_dataset_read(ds, 0, 6, y));
            CHECKF(memcmp(x, y, sizeof x) == 0, "npy v%zu f32 rows differ", i);
            lsae_dataset_close(ds);
            ds = NULL;
        }
    }
    /* the other byte orders numpy writes: '>' (np.save on a big-endian
       machine), '=' and '|' (this machine's); read mapped and with stdio */
    for (i = 0; i < 6; ++i) {
        static const char *const orders[3] = { ">f4", "=f4", "|f4" };
        lsae_dataset_options o = lsae_dataset_options_default();
        o.no_mmap = (int)(i % 2);
        write_npy(p, 1, orders[i / 2], NULL, "(6, 5)", x, sizeof x);
        OK(lsae_dataset_open(p, &o, NULL, &ds));
        if (ds) {
            memset(y, 0, sizeof y);
            OK(lsae_dataset_read(ds, 0, 6, y));
            CHECKF(memcmp(x, y, sizeof x) == 0, "npy %s rows differ (no_mmap %d)", orders[i / 2], o.no_mmap);
            lsae_dataset_close(ds);
            ds = NULL;
        }
    }
    for (i = 0; i < 2; ++i) {
        write_npy(p, 1, i ? ">f2" : "<f2", NULL, "(1, 4)", h, sizeof h);
        OK(open_one(p, &ds));
        if (ds) {
            memset(hv, 0, sizeof hv);
            OK(lsae_dataset_read(ds, 0, 1, hv));
            CHECKF(hv[0] == 1.0f && hv[1] == -2.0f && hv[2] == 65504.0f && hv[3] == ldexpf(1.0f, -24), "npy %s", i ? ">f2" : "<f2");
            lsae_dataset_close(ds);
            ds = NULL;
        }
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        unsigned char buf[256];
        memset(buf, 0, sizeof buf);
        write_npy(p, 1, bad[i].descr, bad[i].fortran, bad[i].shape, buf, bad[i].bytes);
        r = open_one(p, &ds);
        CHECKF(r == bad[i].code && ds == NULL && msg_has(bad[i].msg) && msg_has(p), "case %zu (%s %s): %s: %s", i, bad[i].descr, bad[i].shape,
               lsae_result_string(r), lsae_last_error());
    }
    /* broken headers */
    {
        unsigned char v4[16] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 4, 0, 10, 0 };
        unsigned char huge[16] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0xFF, 0xFF, 0xFF, 0xFF };
        unsigned char past[16] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 200, 0, '{', '}' };
        write_bytes(p, v4, sizeof v4);
        r = open_one(p, &ds);
        CHECKF(r == LSAE_UNSUPPORTED && msg_has("version 4"), "%s", lsae_last_error());
        write_bytes(p, huge, sizeof huge);
        r = open_one(p, &ds);
        CHECKF(r == LSAE_BAD_FILE && msg_has("claims 4294967295"), "%s", lsae_last_error());
        write_bytes(p, past, sizeof past);
        r = open_one(p, &ds);
        CHECKF(r == LSAE_BAD_FILE && msg_has("runs past"), "%s", lsae_last_error());
        write_bytes(p, "just text", 9);
        r = open_one(p, &ds);
        CHECKF(r == LSAE_BAD_FILE && msg_has("no \\x93NUMPY header") && msg_has("raw"), "%s", lsae_last_error());
    }
    {
        unsigned char buf[8] = { 0 };
        write_npy(p, 1, "<f4', 'extra': 'x", NULL, "(1, 2)", buf, 8);
        r = open_one(p, &ds);
        CHECKF(r == LSAE_BAD_FILE && msg_has("unexpected key 'extra'"), "%s", lsae_last_error());
    }
}

static void test_raw(void)
{
    float x[4 * 3], y[4 * 3];
    uint16_t bf[3] = { 0x3F80, 0xC040, 0x0000 }; /* 1, -3, 0 */
    float bv[3];
    lsae_dataset_options o = lsae_dataset_options_default();
    lsae_dataset *ds = NULL;
    const char *p = TDIR "/a.bin";
    lsae_result r;
    make_rows(x, 10, 4, 3);
    write_le(p, x, sizeof x, 4);
    o.raw_d_in = 3;
    OK(lsae_dataset_open(p, &o, NULL, &ds));
    if (ds) {
        CHECK(lsae_dataset_rows(ds) == 4);
        OK(lsae_dataset_read(ds, 1, 3, y));
        CHECK(memcmp(x + 3, y, 9 * sizeof(float)) == 0);
        lsae_dataset_close(ds);
        ds = NULL;
    }
    o.raw_d_in = 5;
    r = lsae_dataset_open(p, &o, NULL, &ds);
    CHECKF(r == LSAE_BAD_FILE && msg_has("48 bytes") && msg_has("width 5") && msg_has("8 bytes left over"), "%s", lsae_last_error());
    o.raw_d_in = 0;
    o.format = LSAE_FORMAT_RAW;
    r = lsae_dataset_open(p, &o, NULL, &ds);
    CHECKF(r == LSAE_INVALID_ARGS && msg_has("width"), "%s", lsae_last_error());
    r = open_one(p, &ds); /* .bin without a width: cannot tell */
    CHECKF(r == LSAE_BAD_FILE && msg_has("raw"), "%s", lsae_last_error());
    write_le(p, bf, sizeof bf, 2);
    o.raw_d_in = 3;
    o.raw_dtype = LSAE_DTYPE_BF16;
    OK(lsae_dataset_open(p, &o, NULL, &ds));
    if (ds) {
        OK(lsae_dataset_read(ds, 0, 1, bv));
        CHECK(bv[0] == 1.0f && bv[1] == -3.0f && bv[2] == 0.0f);
        r = lsae_dataset_read(ds, 1, 1, bv);
        CHECK(r == LSAE_INVALID_ARGS && msg_has("asked of a dataset of 1"));
        lsae_dataset_close(ds);
    }
}

static void test_safetensors_data(void)
{
    float a[3 * 4], b[5], c[2 * 4], y[3 * 4];
    lsae__st_out ts[3];
    lsae_dataset_options o = lsae_dataset_options_default();
    lsae_dataset *ds = NULL;
    const char *p = TDIR "/e.safetensors";
    lsae_result r;
    make_rows(a, 0, 3, 4);
    make_rows(c, 7, 2, 4);
    memset(b, 0, sizeof b);
    ts[0].name = "emb"; ts[0].ndim = 2; ts[0].shape[0] = 3; ts[0].shape[1] = 4; ts[0].data = a;
    ts[1].name = "ids"; ts[1].ndim = 1; ts[1].shape[0] = 5; ts[1].data = b;
    OK(st_write(p, ts, 2, NULL));
    OK(lsae_dataset_open(p, &o, NULL, &ds)); /* the only 2-D tensor */
    if (ds) {
        OK(lsae_dataset_read(ds, 0, 3, y));
        CHECK(lsae_dataset_d_in(ds) == 4 && memcmp(a, y, sizeof a) == 0);
        lsae_dataset_close(ds);
        ds = NULL;
    }
    ts[2].name = "other"; ts[2].ndim = 2; ts[2].shape[0] = 2; ts[2].shape[1] = 4; ts[2].data = c;
    OK(st_write(p, ts, 3, NULL));
    r = lsae_dataset_open(p, &o, NULL, &ds);
    CHECKF(r == LSAE_INVALID_ARGS && msg_has("2 two-dimensional") && msg_has("tensor_name"), "%s", lsae_last_error());
    o.tensor_name = "other";
    OK(lsae_dataset_open(p, &o, NULL, &ds));
    if (ds) {
        OK(lsae_dataset_read(ds, 0, 2, y));
        CHECK(lsae_dataset_rows(ds) == 2 && memcmp(c, y, sizeof c) == 0);
        lsae_dataset_close(ds);
        ds = NULL;
    }
    o.tensor_name = "missing";
    r = lsae_dataset_open(p, &o, NULL, &ds);
    CHECKF(r == LSAE_NOT_FOUND && msg_has("'missing'"), "%s", lsae_last_error());
    o.tensor_name = "ids";
    r = lsae_dataset_open(p, &o, NULL, &ds);
    CHECKF(r == LSAE_BAD_FILE && msg_has("1 dimensions"), "%s", lsae_last_error());
}

/* safetensors headers beyond test_core's cases: each refused, naming the file */
static void st_file(const char *path, const char *hdr, size_t data)
{
    FILE *f = fopen(path, "wb");
    unsigned char len8[8];
    size_t i, n = strlen(hdr);
    for (i = 0; i < 8; ++i) len8[i] = (unsigned char)((unsigned long long)n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(hdr, 1, n, f);
    for (i = 0; i < data; ++i) fputc(0, f);
    fclose(f);
}

static void test_safetensors_headers(void)
{
    static const struct { const char *hdr; size_t data; const char *msg; } cases[] = {
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "gap" },
        { "{\"__metadata__\":[1,2],\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "__metadata__" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "bad shape" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "bad size" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}}", 8, "data_offsets" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,16]}}", 16, "data_offsets" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "at most 8" },
        { "{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "need 6" },
        { "[1, 2, 3]", 0, "not a JSON object" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}trailing", 8, "after the value" },
    };
    const char *p = TDIR "/bad.safetensors";
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        lsae_dataset *ds = NULL;
        lsae_dataset_options o = lsae_dataset_options_default();
        lsae_result r;
        st_file(p, cases[i].hdr, cases[i].data);
        o.format = LSAE_FORMAT_SAFETENSORS;
        r = lsae_dataset_open(p, &o, NULL, &ds);
        CHECKF(r == LSAE_BAD_FILE && msg_has(cases[i].msg) && msg_has(p), "case %zu: %s -> %s: %s", i, cases[i].hdr, lsae_result_string(r), lsae_last_error());
    }
    {
        lsae_dataset *ds = NULL;
        lsae_dataset_options o = lsae_dataset_options_default();
        o.format = LSAE_FORMAT_SAFETENSORS;
        write_bytes(p, "abc", 3);
        CHECK(lsae_dataset_open(p, &o, NULL, &ds) == LSAE_BAD_FILE && msg_has("too short"));
    }
    /* a model whose weights file was cut short: refused, no model returned */
    {
        lsae_config c = lsae_config_default(8);
        lsae_model *m = NULL, *m2 = NULL;
        FILE *f;
        long n;
        char *buf;
        c.k = 2;
        c.expansion_factor = 2;
        OK(lsae_model_create(&c, NULL, &m));
        OK(lsae_model_save(m, TDIR "/cut_model"));
        f = fopen(TDIR "/cut_model/sae.safetensors", "rb");
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = (char *)malloc((size_t)n);
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) CHECK(0);
        fclose(f);
        write_bytes(TDIR "/cut_model/sae.safetensors", buf, (size_t)n - 10);
        CHECK(lsae_model_load(TDIR "/cut_model", NULL, &m2) == LSAE_BAD_FILE && m2 == NULL && msg_has("truncated"));
        free(buf);
        lsae_model_free(m);
    }
}

static void test_torch_errors(void)
{
    /* real torch files are in test_files_python.py; here the zip layer's refusals */
    const char *p = TDIR "/t.pt";
    lsae_dataset *ds = NULL;
    lsae_result r;
    unsigned char z[64];
    memset(z, 0, sizeof z);
    memcpy(z, "PK\x03\x04", 4);
    write_bytes(p, z, sizeof z);
    r = open_one(p, &ds);
    CHECKF(r == LSAE_BAD_FILE && msg_has("end-of-central-directory"), "%s", lsae_last_error());
    /* an end record whose directory lies outside the file */
    memset(z, 0, sizeof z);
    memcpy(z, "PK\x03\x04", 4);
    memcpy(z + 30, "PK\x05\x06", 4);
    z[30 + 10] = 1;
    z[30 + 12] = 46;
    z[30 + 16] = 200;
    write_bytes(p, z, 52);
    r = open_one(p, &ds);
    CHECKF(r == LSAE_BAD_FILE && msg_has("central directory"), "%s", lsae_last_error());
    /* a legacy (non-zip) torch file starts with a pickle */
    {
        unsigned char legacy[40] = { 0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19 };
        const char *lp = TDIR "/legacy.pt";
        write_bytes(lp, legacy, sizeof legacy);
        r = open_one(lp, &ds);
        CHECKF((r == LSAE_UNSUPPORTED && msg_has("legacy")) || r == LSAE_BAD_FILE, "%s", lsae_last_error());
    }
}

/* ------------------------------------------------------------ directories */

static void test_directory(void)
{
    const char *dir = TDIR "/shards";
    lsae_dataset *ds = NULL;
    float *all, *want;
    lsae_result r;
    size_t d = 6;
    int pass;
    lsae__mkdirs(dir);
    make_npy_shard(TDIR "/shards/data-00001.npy", 7, 5, d);
    make_npy_shard(TDIR "/shards/data-00000.npy", 0, 7, d);
    make_npy_shard(TDIR "/shards/data-00002.npy", 12, 0, d); /* an empty shard is fine */
    make_npy_shard(TDIR "/shards/data-00003.npy", 12, 9, d);
    make_npy_shard(TDIR "/shards/chunk_offsets.npy", 1000, 3, 2); /* a side file, ignored */
    all = (float *)malloc(21 * d * sizeof(float));
    want = (float *)malloc(21 * d * sizeof(float));
    make_rows(want, 0, 21, d);
    for (pass = 0; pass < 2; ++pass) {
        lsae_dataset_options o = lsae_dataset_options_default();
        o.no_mmap = pass;
#ifdef LSAE__HAVE_LISTDIR
        OK(lsae_dataset_open(dir, &o, NULL, &ds));
        if (ds) {
            CHECK(lsae_dataset_num_shards(ds) == 4 && lsae_dataset_rows(ds) == 21 && lsae_dataset_d_in(ds) == d);
            CHECK(strstr(lsae_dataset_shard_path(ds, 0), "data-00000.npy") != NULL);
            OK(lsae_dataset_read(ds, 0, 21, all));
            CHECKF(memcmp(all, want, 21 * d * sizeof(float)) == 0, "shard concatenation differs (no_mmap %d)", pass);
            OK(lsae_dataset_read(ds, 5, 10, all)); /* across three shards */
            CHECK(memcmp(all, want + 5 * d, 10 * d * sizeof(float)) == 0);
            lsae_dataset_close(ds);
            ds = NULL;
        }
#else
        r = lsae_dataset_open(dir, &o, NULL, &ds);
        CHECKF(r == LSAE_UNSUPPORTED && msg_has("POSIX"), "%s", lsae_last_error());
#endif
    }
#ifdef LSAE__HAVE_LISTDIR
    make_npy_shard(TDIR "/shards/data-00004.npy", 0, 2, d + 1);
    r = open_one(dir, &ds);
    CHECKF(r == LSAE_BAD_FILE && msg_has("data-00004.npy") && msg_has("same width"), "%s", lsae_last_error());
    remove(TDIR "/shards/data-00004.npy");
    write_bytes(TDIR "/shards/data-00005.pt", "PK", 2);
    r = open_one(dir, &ds);
    CHECKF(r == LSAE_INVALID_ARGS && msg_has("several kinds"), "%s", lsae_last_error());
    remove(TDIR "/shards/data-00005.pt");
    lsae__mkdirs(TDIR "/empty");
    r = open_one(TDIR "/empty", &ds);
    CHECKF(r == LSAE_NOT_FOUND && msg_has("no shards"), "%s", lsae_last_error());
#endif
    r = open_one(TDIR "/no_such_file.npy", &ds);
    CHECKF(r == LSAE_NOT_FOUND && msg_has("no_such_file.npy"), "%s", lsae_last_error());
    free(all);
    free(want);
}

/* ----------------------------------------------------------------- loader */

/* A dataset of n rows (ids 0..n-1) in nshards npy shards: f16 when half is
   1; f32 otherwise, little-endian, or when half is 2 every other shard
   big-endian ('>f4': read through a conversion on x86, in place on a
   big-endian host). */
static lsae_dataset *make_dataset(const char *name, size_t n, size_t d, size_t nshards, int half, const uint64_t *nan_rows, size_t nnan)
{
    char dir[256], p[300];
    lsae_dataset *ds = NULL;
    size_t s, at = 0;
    snprintf(dir, sizeof dir, TDIR "/%s", name);
    lsae__mkdirs(dir);
#ifndef LSAE__HAVE_LISTDIR
    nshards = 1; /* a strict ISO C build cannot list a directory: one file */
#endif
    for (s = 0; s < nshards; ++s) {
        size_t rows = n / nshards + (s < n % nshards), r, c, q;
        float *x = (float *)malloc(rows * d * sizeof(float) + 4);
        char shape[64];
        make_rows(x, at, rows, d);
        for (q = 0; q < nnan; ++q)
            if (nan_rows[q] >= at && nan_rows[q] < at + rows) x[(nan_rows[q] - at) * d + 1 + q % (d - 1)] = q % 2 ? (float)INFINITY : (float)NAN;
        snprintf(p, sizeof p, "%s/data-%05zu.npy", dir, s);
        snprintf(shape, sizeof shape, "(%zu, %zu)", rows, d);
        if (half == 1) {
            /* ids up to 2048 are exact in f16 */
            uint16_t *h = (uint16_t *)malloc(rows * d * 2 + 2);
            for (r = 0; r < rows * d; ++r) {
                float v = x[r];
                uint16_t bits;
                if (v != v) bits = 0x7E00;
                else if (v == (float)INFINITY) bits = 0x7C00;
                else {
                    /* exact for the integers and thousandths used here, rounded to nearest otherwise */
                    int e;
                    float m = frexpf(v, &e);
                    if (v == 0) bits = 0;
                    else {
                        long mant = lrintf(ldexpf(m, 11)); /* 1024..2048 */
                        if (mant == 2048) { mant = 1024; ++e; }
                        bits = (uint16_t)(((e - 1 + 15) << 10) | (mant - 1024));
                        if (e - 1 + 15 <= 0) bits = 0; /* tiny: flush (not produced here except 0.001-ish) */
                    }
                }
                h[r] = bits;
            }
            write_npy(p, 1, "<f2", NULL, shape, h, rows * d * 2);
            free(h);
        } else {
            write_npy(p, 1, half == 2 && s % 2 ? ">f4" : "<f4", NULL, shape, x, rows * d * sizeof(float));
        }
        (void)c;
        free(x);
        at += rows;
    }
    if (nshards == 1) OK(open_one(p, &ds));
    else OK(open_one(dir, &ds));
    return ds;
}

typedef struct run_log {
    float *rows;         /* every batch, concatenated */
    size_t nrows;
    size_t nb;
    uint64_t pos[4096];  /* rows_read after each batch */
    size_t size[4096];
    lsae_loader_stats st;
} run_log;

static void run_loader(lsae_dataset *ds, const lsae_loader_options *o, uint64_t seek_to, run_log *log, size_t cap_rows)
{
    lsae_loader *ld = NULL;
    const float *b;
    size_t n, d = lsae_dataset_d_in(ds);
    memset(log, 0, sizeof *log);
    log->rows = (float *)malloc(cap_rows * d * sizeof(float) + 4);
    OK(lsae_loader_create(ds, o, &ld));
    if (!ld) return;
    if (seek_to) OK(lsae_loader_seek(ld, seek_to));
    for (;;) {
        lsae_loader_stats st;
        lsae_result r = lsae_loader_next(ld, &b, &n);
        if (r != LSAE_OK) { OK(r); break; }
        if (n == 0) break;
        CHECK(log->nrows + n <= cap_rows && log->nb < 4096);
        if (log->nrows + n > cap_rows || log->nb >= 4096) break;
        memcpy(log->rows + log->nrows * d, b, n * d * sizeof(float));
        log->nrows += n;
        lsae_loader_get_stats(ld, &st);
        log->pos[log->nb] = st.rows_read;
        log->size[log->nb++] = n;
    }
    lsae_loader_get_stats(ld, &log->st);
    lsae_loader_free(ld);
}

static void test_loader(void)
{
    const size_t n = 1000, d = 5;
    uint64_t nans[] = { 3, 250, 251, 999, 500 };
    lsae_dataset *ds = make_dataset("loader", n, d, 7, 0, NULL, 0);
    lsae_dataset *dn = make_dataset("loader_nan", n, d, 3, 2, nans, 5);
    lsae_dataset *dh = make_dataset("loader_f16", n, d, 4, 1, NULL, 0);
    lsae_loader_options o;
    run_log a, b;
    size_t i, e;
    if (!ds || !dn || !dh) return;
    /* no shuffle: the rows in file order, batches across shards */
    o = lsae_loader_options_default(64);
    o.shuffle = 0;
    o.drop_last = 0;
    run_loader(ds, &o, 0, &a, 2 * n);
    CHECK(a.nrows == n && a.nb == 16 && a.size[15] == n - 15 * 64 && a.st.rows_read == n);
    for (i = 0; i < a.nrows; ++i) CHECKF(a.rows[i * d] == (float)i, "row %zu is id %g", i, (double)a.rows[i * d]);
    free(a.rows);
    /* shuffle, 3 epochs, small window: each epoch a permutation of all rows */
    o = lsae_loader_options_default(50);
    o.seed = 42;
    o.window_rows = 128;
    o.epochs = 3;
    run_loader(ds, &o, 0, &a, 4 * n);
    CHECK(a.nrows == 3 * n && a.st.rows_read == 3 * n && a.st.rows_dropped == 0 && a.st.epoch == 3);
    for (e = 0; e < 3 && a.nrows == 3 * n; ++e) {
        unsigned char *seen = (unsigned char *)calloc(n, 1);
        size_t dup = 0, inorder = 0;
        for (i = 0; i < n; ++i) {
            float id = a.rows[(e * n + i) * d];
            size_t k = (size_t)id;
            CHECK(id >= 0 && id < (float)n && (float)k == id);
            if (k < n) { dup += seen[k]; seen[k] = 1; }
            if ((size_t)id == i) ++inorder;
            /* the row's content travels with it */
            CHECK(a.rows[(e * n + i) * d + 3] == cell(k, 3));
        }
        CHECKF(dup == 0, "epoch %zu: %zu rows seen twice", e, dup);
        CHECKF(inorder < 50, "epoch %zu looks unshuffled (%zu rows in place)", e, inorder);
        free(seen);
    }
    CHECK(memcmp(a.rows, a.rows + n * d, n * d * sizeof(float)) != 0); /* epochs differ */
    /* deterministic; prefetch and synchronous identical; seed matters */
    o.prefetch = 0;
    run_loader(ds, &o, 0, &b, 4 * n);
    CHECK(b.nrows == a.nrows && memcmp(a.rows, b.rows, a.nrows * d * sizeof(float)) == 0);
    free(b.rows);
    o.prefetch = 1;
    run_loader(ds, &o, 0, &b, 4 * n);
    CHECK(b.nrows == a.nrows && memcmp(a.rows, b.rows, a.nrows * d * sizeof(float)) == 0);
    free(b.rows);
    o.seed = 43;
    run_loader(ds, &o, 0, &b, 4 * n);
    CHECK(b.nrows == a.nrows && memcmp(a.rows, b.rows, a.nrows * d * sizeof(float)) != 0);
    free(b.rows);
    o.seed = 42;
    {
        /* rows served in place from the mapping, or read into the window: the same batches */
        lsae_dataset_options dop = lsae_dataset_options_default();
        lsae_dataset *du = NULL;
        dop.no_mmap = 1;
        OK(lsae_dataset_open(lsae_dataset_num_shards(ds) > 1 ? TDIR "/loader" : lsae_dataset_shard_path(ds, 0), &dop, NULL, &du));
        if (du) {
            run_loader(du, &o, 0, &b, 4 * n);
            CHECK(b.nrows == a.nrows && memcmp(a.rows, b.rows, a.nrows * d * sizeof(float)) == 0);
            free(b.rows);
            lsae_dataset_close(du);
        }
    }
    o.seed = 42;
    /* seek to the position after any batch: the rest is what the full run saw */
    {
        size_t cuts[] = { 0, 1, 7, 19, 20, 21, 40, 58 }, q;
        for (q = 0; q < sizeof cuts / sizeof cuts[0]; ++q) {
            size_t c = cuts[q], before = 0;
            if (c >= a.nb) continue;
            for (i = 0; i <= c; ++i) before += a.size[i];
            o.prefetch = (int)(q % 2);
            run_loader(ds, &o, a.pos[c], &b, 4 * n);
            CHECKF(b.nrows == a.nrows - before && memcmp(b.rows, a.rows + before * d, b.nrows * d * sizeof(float)) == 0, "seek after batch %zu", c);
            CHECK(b.st.rows_read == 3 * n);
            free(b.rows);
        }
    }
    free(a.rows);
    /* max_rows cuts the stream; drop_last drops the short tail */
    o = lsae_loader_options_default(64);
    o.seed = 1;
    o.max_rows = 300;
    run_loader(ds, &o, 0, &a, 2 * n);
    CHECK(a.nrows == 256 && a.st.rows_read == 300);
    free(a.rows);
    o.drop_last = 0;
    run_loader(ds, &o, 0, &a, 2 * n);
    CHECK(a.nrows == 300 && a.size[a.nb - 1] == 300 - 256);
    free(a.rows);
    /* NaN and Inf rows: never served, each counted once */
    o = lsae_loader_options_default(33);
    o.seed = 5;
    o.window_rows = 200;
    o.drop_last = 0;
    run_loader(dn, &o, 0, &a, 2 * n);
    CHECK(a.nrows == n - 5 && a.st.rows_dropped == 5 && a.st.rows_read == n);
    for (i = 0; i < a.nrows; ++i) {
        size_t c, q;
        for (c = 0; c < d; ++c) CHECK(isfinite(a.rows[i * d + c]));
        for (q = 0; q < 5; ++q) CHECK(a.rows[i * d] != (float)nans[q]);
    }
    free(a.rows);
    /* f16 shards give the same ids in the same order as f32 ones would */
    o = lsae_loader_options_default(64);
    o.seed = 9;
    o.window_rows = 100;
    run_loader(dh, &o, 0, &a, 2 * n);
    o.prefetch = 0;
    run_loader(dh, &o, 0, &b, 2 * n);
    CHECK(a.nrows == 960 && b.nrows == 960 && memcmp(a.rows, b.rows, a.nrows * d * sizeof(float)) == 0);
    {
        unsigned char *seen = (unsigned char *)calloc(n, 1);
        size_t dup = 0;
        for (i = 0; i < a.nrows; ++i) {
            size_t k = (size_t)a.rows[i * d];
            if (k < n) { dup += seen[k]; seen[k] = 1; }
        }
        CHECK(dup == 0);
        free(seen);
    }
    free(a.rows);
    free(b.rows);
    /* errors */
    {
        lsae_loader *ld = NULL;
        o = lsae_loader_options_default(0);
        CHECK(lsae_loader_create(ds, &o, &ld) == LSAE_INVALID_ARGS && ld == NULL && msg_has("batch_size"));
        o = lsae_loader_options_default(10);
        OK(lsae_loader_create(ds, &o, &ld));
        CHECK(lsae_loader_seek(ld, n + 1) == LSAE_INVALID_ARGS && msg_has("past the end"));
        lsae_loader_free(ld);
    }
    lsae_dataset_close(ds);
    lsae_dataset_close(dn);
    lsae_dataset_close(dh);
}

/* ------------------------------------------------------------ checkpoints */

static const char *const ckpt_files[] = { "cfg.json", "sae.safetensors", "state.bin", "cfg.json.tmp", "sae.safetensors.tmp", "state.bin.tmp" };
#define RM_CKPT(dir) rm_tree_files((dir), ckpt_files, 6)

static void copy_file(const char *from, const char *to)
{
    FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
    char buf[65536];
    size_t n;
    if (!f || !g) { fprintf(stderr, "copy %s -> %s failed\n", from, to); exit(1); }
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, g);
    fclose(f);
    fclose(g);
}

static void copy_ckpt(const char *from, const char *to)
{
    char a[512], b[512];
    int i;
    lsae__mkdirs(to);
    for (i = 0; i < 3; ++i) {
        snprintf(a, sizeof a, "%s/%s", from, ckpt_files[i]);
        snprintf(b, sizeof b, "%s/%s", to, ckpt_files[i]);
        copy_file(a, b);
    }
}

/* A small model and trainer, trained a few steps on fixed data. */
static void small_run(lsae_model **m, lsae_trainer **t, int steps, uint64_t seed)
{
    lsae_config c = lsae_config_default(12);
    float x[40 * 12];
    int s;
    size_t i;
    c.k = 3;
    c.expansion_factor = 4;
    c.seed = seed;
    c.lr_warmup_steps = 2;
    c.dead_feature_threshold = 50; /* some latents die: AuxK and the counters matter */
    c.total_steps = 100;
    OK(lsae_model_create(&c, NULL, m));
    OK(lsae_trainer_create(*m, &c, t));
    for (s = 0; s < steps; ++s) {
        for (i = 0; i < 40 * 12; ++i) x[i] = cell((uint64_t)s * 1000 + i / 12, i % 12 + 1) - 0.5f;
        OK(lsae_trainer_step(*t, x, 40, NULL));
    }
}

static int same_state(lsae_model *a, lsae_trainer *ta, lsae_model *b, lsae_trainer *tb)
{
    size_t L = lsae_model_num_latents(a), d = lsae_model_d_in(a), n = 2 * L * d + L + d;
    float *wa = (float *)malloc(n * 4 * sizeof(float)), *wb = (float *)malloc(n * 4 * sizeof(float));
    uint64_t *sa = (uint64_t *)malloc(L * 8), *sb = (uint64_t *)malloc(L * 8);
    lsae_trainer_state s1, s2;
    int same;
    memset(&s1, 0, sizeof s1);
    memset(&s2, 0, sizeof s2);
    lsae_model_get_weights(a, wa, wa + L * d, wa + L * d + L, wa + 2 * L * d + L);
    lsae_model_get_weights(b, wb, wb + L * d, wb + L * d + L, wb + 2 * L * d + L);
    s1.since_fired = sa; s1.m_W_enc = wa + n; s1.m_b_enc = wa + n + L * d; s1.m_W_dec = wa + n + L * d + L; s1.m_b_dec = wa + n + 2 * L * d + L;
    s1.v_W_enc = wa + 2 * n; s1.v_b_enc = wa + 2 * n + L * d; s1.v_W_dec = wa + 2 * n + L * d + L; s1.v_b_dec = wa + 2 * n + 2 * L * d + L;
    s2.since_fired = sb; s2.m_W_enc = wb + n; s2.m_b_enc = wb + n + L * d; s2.m_W_dec = wb + n + L * d + L; s2.m_b_dec = wb + n + 2 * L * d + L;
    s2.v_W_enc = wb + 2 * n; s2.v_b_enc = wb + 2 * n + L * d; s2.v_W_dec = wb + 2 * n + L * d + L; s2.v_b_dec = wb + 2 * n + 2 * L * d + L;
    lsae_trainer_get_state(ta, &s1);
    lsae_trainer_get_state(tb, &s2);
    same = memcmp(wa, wb, n * 3 * sizeof(float)) == 0 && memcmp(sa, sb, L * 8) == 0 && s1.step == s2.step && s1.b_dec_initialized == s2.b_dec_initialized;
    free(wa); free(wb); free(sa); free(sb);
    return same;
}

/* 1 when the two files hold the same bytes */
static int same_file(const char *a, const char *b)
{
    FILE *f = fopen(a, "rb"), *g = fopen(b, "rb");
    int ca = 0, cb = 0, same = f && g;
    while (same && (ca = fgetc(f)) != EOF) {
        cb = fgetc(g);
        same = ca == cb;
    }
    if (same) same = fgetc(g) == EOF;
    if (f) fclose(f);
    if (g) fclose(g);
    return same;
}

/* lsae_checkpoint_save_state (a trainer state in whole arrays, no trainer)
   writes the bytes lsae_checkpoint_save writes for a trainer in that state */
static void test_checkpoint_save_state(void)
{
    const char *da = TDIR "/ckpt_t", *db = TDIR "/ckpt_s";
    static const char *const names[3] = { "cfg.json", "sae.safetensors", "state.bin" };
    char pa[256], pb[256], blob[] = "rows_read=99";
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_trainer_state st;
    size_t L, d, i;
    float *mv;
    uint64_t *since;
    RM_CKPT(da);
    RM_CKPT(db);
    small_run(&m, &t, 7, 3);
    L = lsae_model_num_latents(m);
    d = lsae_model_d_in(m);
    mv = (float *)malloc(2 * (2 * L * d + L + d) * sizeof(float));
    since = (uint64_t *)malloc(L * sizeof(uint64_t));
    memset(&st, 0, sizeof st);
    st.since_fired = since;
    st.m_W_enc = mv; st.m_b_enc = mv + L * d; st.m_W_dec = mv + L * d + L; st.m_b_dec = mv + 2 * L * d + L;
    st.v_W_enc = st.m_b_dec + d; st.v_b_enc = st.v_W_enc + L * d; st.v_W_dec = st.v_b_enc + L; st.v_b_dec = st.v_W_dec + L * d;
    OK(lsae_trainer_get_state(t, &st));
    CHECK(st.step == 7);
    OK(lsae_checkpoint_save(da, m, t, blob, sizeof blob));
    OK(lsae_checkpoint_save_state(db, m, &st, blob, sizeof blob));
    for (i = 0; i < 3; ++i) {
        snprintf(pa, sizeof pa, "%s/%s", da, names[i]);
        snprintf(pb, sizeof pb, "%s/%s", db, names[i]);
        CHECKF(same_file(pa, pb), "lsae_checkpoint_save_state: %s differs from lsae_checkpoint_save's", names[i]);
    }
    st.v_b_dec = NULL;
    CHECK(lsae_checkpoint_save_state(db, m, &st, NULL, 0) == LSAE_INVALID_ARGS);
    free(mv);
    free(since);
    lsae_trainer_free(t);
    lsae_model_free(m);
    RM_CKPT(da);
    RM_CKPT(db);
}

/* lsae_checkpoint_save_pieces and lsae_model_save_pieces (how a
   latent-sharded run's rank 0 streams the shards to disk) write the bytes
   lsae_checkpoint_save and lsae_model_save write, the arrays served here
   from whole copies in 3 uneven pieces. */
typedef struct piece_src {
    size_t L, d;
    float *arr[12];            /* by lsae_piece: weights, m, v */
    uint64_t *since;
    float theta;
    const size_t *bounds;
    size_t nb;
    int swap;                  /* 1: serve the second piece's rows for the first (must change the files) */
    int fail_at;               /* > 0: the fail_at-th call fails */
    int calls, bad;            /* calls; requests not at the bounds */
} piece_src;

static lsae_result piece_fetch(void *ctx, int what, size_t l0, size_t n, void *dst)
{
    piece_src *s = (piece_src *)ctx;
    size_t j, per = 1;
    ++s->calls;
    if (s->fail_at && s->calls == s->fail_at) return LSAE_IO_ERROR;
    if (what == LSAE_PIECE_THRESHOLD) {
        if (l0 != 0 || n != 1) ++s->bad;
        memcpy(dst, &s->theta, sizeof(float));
        return LSAE_OK;
    }
    if (what < 0 || what > LSAE_PIECE_SINCE_FIRED) { ++s->bad; return LSAE_INVALID_ARGS; }
    if (what != LSAE_PIECE_SINCE_FIRED && what % 4 == LSAE_PIECE_B_DEC) {
        if (l0 != 0 || n != s->d) ++s->bad;
        memcpy(dst, s->arr[what], s->d * sizeof(float));
        return LSAE_OK;
    }
    for (j = 0; j + 1 < s->nb && s->bounds[j] != l0; ++j) {}
    if (j + 1 >= s->nb || s->bounds[j + 1] != l0 + n) { ++s->bad; return LSAE_INVALID_ARGS; }
    if (s->swap && j == 0) l0 = s->bounds[1];   /* the same count of rows, from the wrong place */
    if (what == LSAE_PIECE_SINCE_FIRED) { memcpy(dst, s->since + l0, n * sizeof(uint64_t)); return LSAE_OK; }
    if (what % 4 == LSAE_PIECE_W_ENC || what % 4 == LSAE_PIECE_W_DEC) per = s->d;
    memcpy(dst, s->arr[what] + l0 * per, n * per * sizeof(float));
    return LSAE_OK;
}

/* the same pieces straight out of the trainer (lsae_trainer_get_piece) */
static lsae_result trainer_fetch(void *ctx, int what, size_t l0, size_t n, void *dst)
{
    return lsae_trainer_get_piece((const lsae_trainer *)ctx, what, l0, n, dst);
}

/* m with its trainer t (NULL: zero moments, as lsae_checkpoint_save writes them) */
static void pieces_case(lsae_model *m, lsae_trainer *t, const char *tag)
{
    static const char *const names[3] = { "cfg.json", "sae.safetensors", "state.bin" };
    char da[256], db[256], ma[256], mb[256], pa[512], pb[512], blob[] = "rows_read=123";
    piece_src s;
    lsae_trainer_state st;
    size_t L = lsae_model_num_latents(m), d = lsae_model_d_in(m), bounds[4], i, n = 2 * L * d + L + d;
    float *all = (float *)calloc(3 * n, sizeof(float));
    uint64_t step = 0;
    int b_dec_init = 1;
    snprintf(da, sizeof da, TDIR "/pieces_%s_a", tag);
    snprintf(db, sizeof db, TDIR "/pieces_%s_b", tag);
    snprintf(ma, sizeof ma, TDIR "/pieces_%s_ma", tag);
    snprintf(mb, sizeof mb, TDIR "/pieces_%s_mb", tag);
    RM_CKPT(da);
    RM_CKPT(db);
    memset(&s, 0, sizeof s);
    s.L = L;
    s.d = d;
    for (i = 0; i < 3; ++i) {
        s.arr[4 * i + 0] = all + i * n;
        s.arr[4 * i + 1] = all + i * n + L * d;
        s.arr[4 * i + 2] = all + i * n + L * d + L;
        s.arr[4 * i + 3] = all + i * n + 2 * L * d + L;
    }
    s.since = (uint64_t *)calloc(L, sizeof(uint64_t));
    s.theta = lsae_model_batchtopk_threshold(m);
    OK(lsae_model_get_weights(m, s.arr[0], s.arr[1], s.arr[2], s.arr[3]));
    if (t) {
        memset(&st, 0, sizeof st);
        st.since_fired = s.since;
        st.m_W_enc = s.arr[4]; st.m_b_enc = s.arr[5]; st.m_W_dec = s.arr[6]; st.m_b_dec = s.arr[7];
        st.v_W_enc = s.arr[8]; st.v_b_enc = s.arr[9]; st.v_W_dec = s.arr[10]; st.v_b_dec = s.arr[11];
        OK(lsae_trainer_get_state(t, &st));
        step = st.step;
        b_dec_init = st.b_dec_initialized;
    }
    /* 3 uneven pieces: 5, L - 12, 7 */
    bounds[0] = 0; bounds[1] = 5; bounds[2] = L - 7; bounds[3] = L;
    s.bounds = bounds;
    s.nb = 4;
    OK(lsae_checkpoint_save(da, m, t, blob, sizeof blob));
    OK(lsae_checkpoint_save_pieces(db, lsae_model_config(m), step, b_dec_init, bounds, 4, piece_fetch, &s, blob, sizeof blob));
    /* every piece asked once: the weights and the moments (3 pieces of 3 arrays, b_dec whole), the counters, the threshold if any */
    CHECKF(s.bad == 0 && s.calls == 3 * (3 * 3 + 1) + 3 + (lsae_model_config(m)->sae_type != LSAE_SAE_TOPK), "%s: %d calls, %d not at the bounds", tag, s.calls, s.bad);
    for (i = 0; i < 3; ++i) {
        snprintf(pa, sizeof pa, "%s/%s", da, names[i]);
        snprintf(pb, sizeof pb, "%s/%s", db, names[i]);
        CHECKF(same_file(pa, pb), "%s: lsae_checkpoint_save_pieces: %s differs from lsae_checkpoint_save's", tag, names[i]);
    }
    if (t) {
        /* lsae_trainer_get_piece serves the same bytes; it refuses rows past the end */
        OK(lsae_checkpoint_save_pieces(db, lsae_model_config(m), step, b_dec_init, bounds, 4, trainer_fetch, t, blob, sizeof blob));
        for (i = 0; i < 3; ++i) {
            snprintf(pa, sizeof pa, "%s/%s", da, names[i]);
            snprintf(pb, sizeof pb, "%s/%s", db, names[i]);
            CHECKF(same_file(pa, pb), "%s: lsae_trainer_get_piece: %s differs from lsae_checkpoint_save's", tag, names[i]);
        }
        CHECK(lsae_trainer_get_piece(t, LSAE_PIECE_W_DEC, L - 2, 3, all) == LSAE_INVALID_ARGS);
        CHECK(lsae_trainer_get_piece(t, LSAE_PIECE_M_B_DEC, 0, d + 1, all) == LSAE_INVALID_ARGS);
        CHECK(lsae_trainer_get_piece(t, LSAE_PIECE_COUNT, 0, 1, all) == LSAE_INVALID_ARGS);
    }
    OK(lsae_model_save(m, ma));
    OK(lsae_model_save_pieces(mb, lsae_model_config(m), bounds, 4, piece_fetch, &s));
    for (i = 0; i < 2; ++i) {
        snprintf(pa, sizeof pa, "%s/%s", ma, names[i]);
        snprintf(pb, sizeof pb, "%s/%s", mb, names[i]);
        CHECKF(same_file(pa, pb), "%s: lsae_model_save_pieces: %s differs from lsae_model_save's", tag, names[i]);
    }
    /* the check can fail: rows served from the wrong piece change the files */
    s.swap = 1;
    OK(lsae_model_save_pieces(mb, lsae_model_config(m), bounds, 4, piece_fetch, &s));
    snprintf(pa, sizeof pa, "%s/sae.safetensors", ma);
    snprintf(pb, sizeof pb, "%s/sae.safetensors", mb);
    CHECK(!same_file(pa, pb));
    s.swap = 0;
    /* one piece (NULL bounds) writes the same too */
    bounds[1] = L;   /* what the callback checks the requests against */
    s.nb = 2;
    OK(lsae_checkpoint_save_pieces(db, lsae_model_config(m), step, b_dec_init, NULL, 0, piece_fetch, &s, blob, sizeof blob));
    snprintf(pa, sizeof pa, "%s/state.bin", da);
    snprintf(pb, sizeof pb, "%s/state.bin", db);
    CHECK(same_file(pa, pb));
    /* a failed fetch: an error, the previous checkpoint left whole, no DIR.tmp */
    s.calls = 0;
    s.fail_at = 12;
    CHECK(lsae_checkpoint_save_pieces(db, lsae_model_config(m), step + 1, b_dec_init, bounds, 2, piece_fetch, &s, blob, sizeof blob) == LSAE_IO_ERROR);
    CHECKF(strstr(lsae_last_error(), "fetch") != NULL, "%s", lsae_last_error());
    snprintf(pb, sizeof pb, "%s.tmp", db);
    CHECK(!lsae__is_dir(pb));
    snprintf(pb, sizeof pb, "%s/state.bin", db);
    CHECK(same_file(pa, pb));
    s.fail_at = 0;
    /* bounds that do not cover [0, L) in rising order are refused */
    bounds[0] = 0; bounds[1] = 9; bounds[2] = 9; bounds[3] = L;
    CHECK(lsae_model_save_pieces(mb, lsae_model_config(m), bounds, 4, piece_fetch, &s) == LSAE_INVALID_ARGS);
    bounds[2] = L - 1;
    CHECK(lsae_model_save_pieces(mb, lsae_model_config(m), bounds, 3, piece_fetch, &s) == LSAE_INVALID_ARGS);
    CHECK(lsae_model_save_pieces(mb, lsae_model_config(m), bounds, 4, NULL, &s) == LSAE_INVALID_ARGS);
    RM_CKPT(da);
    RM_CKPT(db);
    RM_CKPT(ma);
    RM_CKPT(mb);
    free(all);
    free(s.since);
}

static void test_checkpoint_save_pieces(void)
{
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_config c = lsae_config_default(12);
    small_run(&m, &t, 7, 3);
    pieces_case(m, t, "topk");
    lsae_trainer_free(t);
    lsae_model_free(m);
    /* a type with a threshold (in sae.safetensors and cfg.json), no trainer */
    c.k = 5;
    c.expansion_factor = 4;
    c.sae_type = LSAE_SAE_BATCHTOPK;
    c.seed = 11;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_model_set_batchtopk_threshold(m, 0.375f));
    pieces_case(m, NULL, "btk");
    lsae_model_free(m);
}

static void test_checkpoint_roundtrip(void)
{
    const char *dir = TDIR "/ckpt";
    lsae_model *m = NULL, *m2 = NULL, *m3 = NULL;
    lsae_trainer *t = NULL, *t2 = NULL;
    char blob[64] = "rows_read=12345", back[64];
    size_t blen = 0;
    lsae_result r;
    RM_CKPT(dir);
    small_run(&m, &t, 6, 1);
    small_run(&m2, &t2, 0, 2); /* another model of the same shape */
    OK(lsae_checkpoint_save(dir, m, t, blob, strlen(blob) + 1));
    OK(lsae_checkpoint_load(dir, m2, t2, back, sizeof back, &blen));
    CHECK(blen == strlen(blob) + 1 && strcmp(back, blob) == 0);
    CHECK(same_state(m, t, m2, t2) && lsae_trainer_steps_done(t2) == 6);
    /* the checkpoint is also a model directory latent-sae loads */
    OK(lsae_model_load(dir, NULL, &m3));
    lsae_model_free(m3);
    /* a second save replaces the first, leaving no .tmp or .old behind */
    OK(lsae_checkpoint_save(dir, m, t, NULL, 0));
    CHECK(!lsae__is_dir(TDIR "/ckpt.tmp") && !lsae__is_dir(TDIR "/ckpt.old"));
    OK(lsae_checkpoint_load(dir, m2, t2, back, sizeof back, &blen));
    CHECK(blen == 0);
    /* corruption anywhere in state.bin is caught by the checksum; nothing changes */
    {
        FILE *f = fopen(TDIR "/ckpt/state.bin", "r+b");
        int ch;
        fseek(f, 300, SEEK_SET);
        ch = fgetc(f);
        fseek(f, 300, SEEK_SET);
        fputc(ch ^ 1, f);
        fclose(f);
        r = lsae_checkpoint_load(dir, m2, t2, NULL, 0, NULL);
        CHECKF(r == LSAE_BAD_FILE && msg_has("checksum") && msg_has("state.bin"), "%s", lsae_last_error());
        CHECK(same_state(m, t, m2, t2));
    }
    /* a model file from another save is caught too */
    OK(lsae_checkpoint_save(dir, m, t, NULL, 0));
    OK(lsae_model_save(m2, TDIR "/other_model"));
    {
        float *b = (float *)malloc(12 * sizeof(float));
        size_t i;
        lsae_model_get_weights(m2, NULL, NULL, NULL, b);
        for (i = 0; i < 12; ++i) b[i] += 1.0f;
        lsae_model_set_weights(m2, NULL, NULL, NULL, b);
        OK(lsae_model_save(m2, TDIR "/other_model"));
        copy_file(TDIR "/other_model/sae.safetensors", TDIR "/ckpt/sae.safetensors");
        r = lsae_checkpoint_load(dir, m2, t2, NULL, 0, NULL);
        CHECKF(r == LSAE_BAD_FILE && msg_has("sae.safetensors") && msg_has("does not match"), "%s", lsae_last_error());
        free(b);
    }
    /* shape mismatch */
    {
        lsae_model *m4 = NULL;
        lsae_config c = lsae_config_default(10);
        c.k = 3;
        c.expansion_factor = 4;
        OK(lsae_checkpoint_save(dir, m, t, NULL, 0));
        OK(lsae_model_create(&c, NULL, &m4));
        r = lsae_checkpoint_load(dir, m4, NULL, NULL, 0, NULL);
        CHECKF(r == LSAE_INVALID_ARGS && msg_has("d_in 12"), "%s", lsae_last_error());
        lsae_model_free(m4);
    }
    r = lsae_checkpoint_load(TDIR "/no_ckpt", m2, t2, NULL, 0, NULL);
    CHECKF(r == LSAE_NOT_FOUND, "%s", lsae_last_error());
    lsae_trainer_free(t);
    lsae_trainer_free(t2);
    lsae_model_free(m);
    lsae_model_free(m2);
}

/* lsae_checkpoint_load_shard (how a latent-sharded run's ranks resume, each
   reading only its rows) gives every shard exactly the bytes of
   lsae_checkpoint_load into a full model followed by lsae_model_shard_of:
   weights, Adam moments, dead counters, step, b_dec's flag, threshold and
   blob; over S = 1, 2, 3 of 49 latents (uneven: 24/25, 16/16/17), so a row
   offset off by one in any array shows. Then the errors. */

/* the shard's whole state: weights (get_weights: its rows), then the trainer
   state (t NULL: zeros), in arrays of its L_r rows */
typedef struct shard_snap {
    size_t L, d;
    float *w, *mv;          /* [2 L d + L + d] weights; [2 (2 L d + L + d)] m then v */
    uint64_t *since, step;
    int b_dec_init;
    float theta;
} shard_snap;

static void snap_take(shard_snap *s, const lsae_model *m, const lsae_trainer *t)
{
    size_t L = lsae_model_num_latents(m), d = lsae_model_d_in(m), n = 2 * L * d + L + d;
    lsae_trainer_state st;
    s->L = L;
    s->d = d;
    s->w = (float *)calloc(n, sizeof(float));
    s->mv = (float *)calloc(2 * n, sizeof(float));
    s->since = (uint64_t *)calloc(L, sizeof(uint64_t));
    s->step = 0;
    s->b_dec_init = 0;
    s->theta = lsae_model_batchtopk_threshold(m);
    OK(lsae_model_get_weights(m, s->w, s->w + L * d, s->w + L * d + L, s->w + 2 * L * d + L));
    if (!t) return;
    memset(&st, 0, sizeof st);
    st.since_fired = s->since;
    st.m_W_enc = s->mv; st.m_b_enc = s->mv + L * d; st.m_W_dec = s->mv + L * d + L; st.m_b_dec = s->mv + 2 * L * d + L;
    st.v_W_enc = s->mv + n; st.v_b_enc = st.v_W_enc + L * d; st.v_W_dec = st.v_b_enc + L; st.v_b_dec = st.v_W_dec + L * d;
    OK(lsae_trainer_get_state(t, &st));
    s->step = st.step;
    s->b_dec_init = st.b_dec_initialized;
}

/* the rows [l0, l0 + n) of a full snapshot, laid out as a shard's */
static void snap_rows(shard_snap *out, const shard_snap *full, size_t l0, size_t n)
{
    const size_t d = full->d, L = full->L, nf = 2 * L * d + L + d, ns = 2 * n * d + n + d;
    size_t q;
    out->L = n;
    out->d = d;
    out->w = (float *)calloc(ns, sizeof(float));
    out->mv = (float *)calloc(2 * ns, sizeof(float));
    out->since = (uint64_t *)calloc(n, sizeof(uint64_t));
    out->step = full->step;
    out->b_dec_init = full->b_dec_init;
    out->theta = full->theta;
    memcpy(out->since, full->since + l0, n * sizeof(uint64_t));
    for (q = 0; q < 3; ++q) {
        const float *f = q == 0 ? full->w : full->mv + (q - 1) * nf;
        float *o = q == 0 ? out->w : out->mv + (q - 1) * ns;
        memcpy(o, f + l0 * d, n * d * sizeof(float));                       /* W_enc */
        memcpy(o + n * d, f + L * d + l0, n * sizeof(float));               /* b_enc */
        memcpy(o + n * d + n, f + L * d + L + l0 * d, n * d * sizeof(float)); /* W_dec */
        memcpy(o + 2 * n * d + n, f + 2 * L * d + L, d * sizeof(float));    /* b_dec */
    }
}

/* which part differs, or NULL when every byte is the same */
static const char *snap_diff(const shard_snap *a, const shard_snap *b, int with_state)
{
    const size_t n = 2 * a->L * a->d + a->L + a->d;
    if (a->L != b->L || a->d != b->d) return "shape";
    if (memcmp(a->w, b->w, n * sizeof(float)) != 0) return "weights";
    if (memcmp(&a->theta, &b->theta, sizeof(float)) != 0) return "threshold";
    if (!with_state) return NULL;
    if (memcmp(a->mv, b->mv, n * sizeof(float)) != 0) return "Adam m";
    if (memcmp(a->mv + n, b->mv + n, n * sizeof(float)) != 0) return "Adam v";
    if (memcmp(a->since, b->since, a->L * sizeof(uint64_t)) != 0) return "dead counters";
    if (a->step != b->step || a->b_dec_init != b->b_dec_init) return "step or b_dec flag";
    return NULL;
}

static void snap_free(shard_snap *s)
{
    free(s->w);
    free(s->mv);
    free(s->since);
    memset(s, 0, sizeof *s);
}

/* from into to, less its last `cut` bytes */
static void copy_cut(const char *from, const char *to, long cut)
{
    FILE *f = fopen(from, "rb");
    long n;
    char *buf;
    if (!f) { fprintf(stderr, "cannot read %s\n", from); exit(1); }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (char *)malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "cannot read %s\n", from); exit(1); }
    fclose(f);
    write_bytes(to, buf, (size_t)(n > cut ? n - cut : 0));
    free(buf);
}

static void test_checkpoint_load_shard(void)
{
    const char *dir = TDIR "/ckpt_shard", *cut = TDIR "/ckpt_shard_cut";
    const size_t d = 12, L = 49;
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL, *mf = NULL, *ref = NULL, *sm = NULL;
    lsae_trainer *t = NULL, *tf = NULL, *st = NULL;
    shard_snap full, want, got, before, after;
    char blob[] = "{\"rows_read\": 4321}", back[64];
    size_t blen = 0, l0, l1;
    float x[40 * 12];
    lsae_result r;
    int S, q, s;
    size_t i;
    const char *diff;
    RM_CKPT(dir);
    RM_CKPT(cut);
    c.k = 3;
    c.num_latents = L;
    c.expansion_factor = 0;
    c.seed = 23;
    c.lr_warmup_steps = 2;
    c.dead_feature_threshold = 50; /* some latents die: the counters differ by latent */
    c.total_steps = 100;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_trainer_create(m, &c, &t));
    for (s = 0; s < 9; ++s) {
        for (i = 0; i < 40 * d; ++i) x[i] = cell((uint64_t)s * 1000 + i / d, i % d + 1) - 0.5f;
        OK(lsae_trainer_step(t, x, 40, NULL));
    }
    OK(lsae_checkpoint_save(dir, m, t, blob, sizeof blob));
    /* the reference: the whole checkpoint into a full model (another seed:
       everything must come from the files) */
    c.seed = 99;
    OK(lsae_model_create(&c, NULL, &mf));
    OK(lsae_trainer_create(mf, &c, &tf));
    OK(lsae_checkpoint_load(dir, mf, tf, NULL, 0, NULL));
    snap_take(&full, mf, tf);
    CHECK(full.step == 9 && full.b_dec_init == 1);
    {
        /* the counters must differ by latent, or a row offset in them would pass unseen */
        int varied = 0;
        for (i = 1; i < L; ++i) varied |= full.since[i] != full.since[0];
        CHECK(varied);
    }
    for (S = 1; S <= 3; ++S)
        for (q = 0; q < S; ++q) {
            lsae_shard_range(L, q, S, &l0, &l1);
            OK(lsae_model_shard_of(mf, l0, l1, &ref));
            snap_rows(&want, &full, l0, l1 - l0);
            /* the shard_of path and the rows cut out by hand agree (the reference is right) */
            snap_take(&got, ref, NULL);
            CHECKF((diff = snap_diff(&got, &want, 0)) == NULL, "S %d, shard %d: lsae_model_shard_of differs from the rows by hand (%s)", S, q, diff);
            snap_free(&got);
            OK(lsae_model_create_shard(&c, NULL, l0, l1, &sm));
            OK(lsae_trainer_create(sm, &c, &st));
            memset(back, 0, sizeof back);
            OK(lsae_checkpoint_load_shard(dir, sm, st, back, sizeof back, &blen));
            CHECKF(blen == sizeof blob && memcmp(back, blob, sizeof blob) == 0, "S %d, shard %d: the blob (%zu bytes)", S, q, blen);
            snap_take(&got, sm, st);
            CHECKF((diff = snap_diff(&got, &want, 1)) == NULL, "S %d, shard %d, latents [%zu, %zu): %s differ from lsae_checkpoint_load + lsae_model_shard_of",
                   S, q, l0, l1, diff);
            snap_free(&got);
            snap_free(&want);
            lsae_trainer_free(st);
            lsae_model_free(sm);
            lsae_model_free(ref);
            st = NULL; sm = NULL; ref = NULL;
        }
    /* a shard and its trainer to see the errors change nothing */
    lsae_shard_range(L, 1, 3, &l0, &l1);
    OK(lsae_model_create_shard(&c, NULL, l0, l1, &sm));
    OK(lsae_trainer_create(sm, &c, &st));
    snap_take(&before, sm, st);
    /* state.bin cut short by 8 bytes, and sae.safetensors cut by 4: refused
       (the length and the hashes), the shard unchanged */
    copy_ckpt(dir, cut);
    copy_cut(TDIR "/ckpt_shard/state.bin", TDIR "/ckpt_shard_cut/state.bin", 8);
    r = lsae_checkpoint_load_shard(cut, sm, st, NULL, 0, NULL);
    CHECKF(r == LSAE_BAD_FILE && msg_has("state.bin"), "a cut state.bin: %s", lsae_last_error());
    copy_ckpt(dir, cut);
    copy_cut(TDIR "/ckpt_shard/sae.safetensors", TDIR "/ckpt_shard_cut/sae.safetensors", 4);
    r = lsae_checkpoint_load_shard(cut, sm, st, NULL, 0, NULL);
    CHECKF(r == LSAE_BAD_FILE && msg_has("sae.safetensors"), "a cut sae.safetensors: %s", lsae_last_error());
    snap_take(&after, sm, st);
    CHECKF((diff = snap_diff(&after, &before, 1)) == NULL, "a refused load changed the shard (%s)", diff);
    snap_free(&after);
    /* the whole model's loader refuses a shard, naming the call to use */
    r = lsae_checkpoint_load(dir, sm, st, NULL, 0, NULL);
    CHECKF(r == LSAE_INVALID_ARGS && msg_has("lsae_checkpoint_load_shard"), "%s", lsae_last_error());
    /* a trainer of another model */
    r = lsae_checkpoint_load_shard(dir, sm, tf, NULL, 0, NULL);
    CHECKF(r == LSAE_INVALID_ARGS && msg_has("another model"), "%s", lsae_last_error());
    r = lsae_checkpoint_load_shard(dir, NULL, NULL, NULL, 0, NULL);
    CHECK(r == LSAE_INVALID_ARGS);
    snap_take(&after, sm, st);
    CHECKF((diff = snap_diff(&after, &before, 1)) == NULL, "a refused load changed the shard (%s)", diff);
    snap_free(&after);
    snap_free(&before);
    lsae_trainer_free(st);
    lsae_model_free(sm);
    st = NULL; sm = NULL;
    /* l1 past the checkpoint's L: a shard [40, 55) of a 55-latent model
       against the 49 latents on disk, and one of another d_in */
    {
        lsae_config c2 = c;
        c2.num_latents = 55;
        OK(lsae_model_create_shard(&c2, NULL, 40, 55, &sm));
        r = lsae_checkpoint_load_shard(dir, sm, NULL, NULL, 0, NULL);
        CHECKF(r == LSAE_INVALID_ARGS && msg_has("L 49") && msg_has("[40, 55) of L 55"), "%s", lsae_last_error());
        lsae_model_free(sm);
        c2 = lsae_config_default(10);
        c2.k = 3;
        c2.num_latents = L;
        OK(lsae_model_create_shard(&c2, NULL, 0, 20, &sm));
        r = lsae_checkpoint_load_shard(dir, sm, NULL, NULL, 0, NULL);
        CHECKF(r == LSAE_INVALID_ARGS && msg_has("d_in 12"), "%s", lsae_last_error());
        lsae_model_free(sm);
        sm = NULL;
    }
    /* a full model is the shard [0, L): the same as lsae_checkpoint_load */
    c.seed = 7;
    OK(lsae_model_create(&c, NULL, &sm));
    OK(lsae_trainer_create(sm, &c, &st));
    OK(lsae_checkpoint_load_shard(dir, sm, st, NULL, 0, NULL));
    snap_take(&got, sm, st);
    CHECKF((diff = snap_diff(&got, &full, 1)) == NULL, "a full model through lsae_checkpoint_load_shard: %s differ", diff);
    snap_free(&got);
    lsae_trainer_free(st);
    lsae_model_free(sm);
    snap_free(&full);
    lsae_trainer_free(tf);
    lsae_model_free(mf);
    lsae_trainer_free(t);
    lsae_model_free(m);
    RM_CKPT(dir);
    RM_CKPT(cut);
    /* a type with a threshold (BatchTopK: shards do not train it, but they
       load): the threshold comes with every shard's rows */
    c = lsae_config_default(d);
    c.k = 5;
    c.num_latents = L;
    c.expansion_factor = 0;
    c.sae_type = LSAE_SAE_BATCHTOPK;
    c.seed = 11;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_model_set_batchtopk_threshold(m, 0.375f));
    OK(lsae_checkpoint_save(dir, m, NULL, NULL, 0));
    snap_take(&full, m, NULL);
    for (q = 0; q < 2; ++q) {
        lsae_shard_range(L, q, 2, &l0, &l1);
        snap_rows(&want, &full, l0, l1 - l0);
        OK(lsae_model_create_shard(&c, NULL, l0, l1, &sm));
        OK(lsae_checkpoint_load_shard(dir, sm, NULL, NULL, 0, NULL));
        snap_take(&got, sm, NULL);
        CHECKF((diff = snap_diff(&got, &want, 0)) == NULL && got.theta == 0.375f, "batchtopk, shard %d of 2: %s differ (theta %g)", q, diff ? diff : "none", (double)got.theta);
        snap_free(&got);
        snap_free(&want);
        lsae_model_free(sm);
        sm = NULL;
    }
    snap_free(&full);
    lsae_model_free(m);
    RM_CKPT(dir);
}

/* A checkpoint loaded into a trainer that has not stepped reads Adam's
   moments straight into the trainer's arrays and the weights through its
   (zero) gradient array, with no scratch copy of either: the result is
   that of a load into a trainer that had stepped (the scratch path), bit
   for bit, and the next optimizer step too (the gradients zero again). A
   failure past the files' hashes (a non-finite moment under the verified
   load, which checks only the length) leaves that trainer as created:
   moments, counters, step and gradients zero, the model unchanged. */
static void test_checkpoint_load_in_place(void)
{
    const char *dir = TDIR "/ckpt_inplace", *bad = TDIR "/ckpt_inplace_bad";
    char p[512];
    lsae_model *m = NULL, *a = NULL, *b = NULL;
    lsae_trainer *t = NULL, *ta = NULL, *tb = NULL;
    shard_snap s0, s1, s2;
    const char *diff;
    float x[40 * 12], *g;
    size_t i, L, d, n;
    lsae_result r;
    RM_CKPT(dir);
    RM_CKPT(bad);
    small_run(&m, &t, 7, 5);
    OK(lsae_checkpoint_save(dir, m, t, NULL, 0));
    L = lsae_model_num_latents(m);
    d = lsae_model_d_in(m);
    n = 2 * L * d + L + d;
    g = (float *)malloc(4 * n * sizeof(float));
    small_run(&a, &ta, 0, 9); /* a new trainer: the in-place path */
    small_run(&b, &tb, 2, 9); /* one that has stepped: scratch copies */
    snap_take(&s0, a, ta);
    /* m_W_enc[0] made NaN, the length kept: the verified load reads it */
    copy_ckpt(dir, bad);
    snprintf(p, sizeof p, "%s/state.bin", bad);
    {
        /* a quiet NaN as the file stores floats: little-endian */
        static const unsigned char nan_le[4] = { 0x00, 0x00, 0xC0, 0x7F };
        FILE *f = fopen(p, "r+b");
        fseek(f, (long)(LSAE__STATE_HDR + 8 * L), SEEK_SET);
        fwrite(nan_le, 1, 4, f);
        fclose(f);
    }
    r = lsae_checkpoint_load_shard_verified(bad, a, ta, NULL, 0, NULL);
    CHECKF(r != LSAE_OK && msg_has("not finite"), "a NaN moment into a new trainer: %s", lsae_last_error());
    snap_take(&s1, a, ta);
    CHECKF((diff = snap_diff(&s1, &s0, 1)) == NULL, "a failed in-place load changed the new trainer (%s)", diff);
    OK(lsae_trainer_get_grads(ta, g, g + L * d, g + L * d + L, g + 2 * L * d + L));
    for (i = 0; i < n && g[i] == 0.0f; ++i) {}
    CHECKF(i == n, "a failed in-place load left gradient %zu at %g", i, (double)g[i]);
    snap_free(&s1);
    /* a good load: the same bits both ways, and the same next step */
    OK(lsae_checkpoint_load(dir, a, ta, NULL, 0, NULL));
    OK(lsae_checkpoint_load(dir, b, tb, NULL, 0, NULL));
    snap_take(&s1, a, ta);
    snap_take(&s2, b, tb);
    CHECKF((diff = snap_diff(&s1, &s2, 1)) == NULL, "in-place and scratch loads differ (%s)", diff);
    snap_free(&s1);
    snap_free(&s2);
    for (i = 0; i < 40 * 12; ++i) x[i] = cell(777000 + i / 12, i % 12 + 1) - 0.5f;
    OK(lsae_trainer_step(ta, x, 40, NULL));
    OK(lsae_trainer_step(tb, x, 40, NULL));
    snap_take(&s1, a, ta);
    snap_take(&s2, b, tb);
    CHECKF((diff = snap_diff(&s1, &s2, 1)) == NULL, "a step after the in-place load differs from one after the scratch load (%s)", diff);
    snap_free(&s0);
    snap_free(&s1);
    snap_free(&s2);
    free(g);
    lsae_trainer_free(t); lsae_model_free(m);
    lsae_trainer_free(ta); lsae_model_free(a);
    lsae_trainer_free(tb); lsae_model_free(b);
    RM_CKPT(dir);
    RM_CKPT(bad);
}

/* lsae_checkpoint_verify + lsae_checkpoint_load_shard_verified (one rank
   hashes the files, the others take its verdict): the verified load gives
   each shard the bytes of lsae_checkpoint_load_shard; the verifier refuses
   a corrupted file of the right size (which only the hashes can see) and
   finds dir.tmp when dir is missing; the verified load still refuses a cut
   state.bin and a missing directory, changing nothing. */
static void test_checkpoint_verify_shared(void)
{
    const char *dir = TDIR "/ckpt_vshare", *bad = TDIR "/ckpt_vshare_bad";
    char found[512], tmpdir[512], p[512];
    lsae_model *m = NULL, *a = NULL, *b = NULL;
    lsae_trainer *t = NULL, *ta = NULL, *tb = NULL;
    const lsae_config *c;
    shard_snap sa, sb;
    size_t l0, l1;
    const char *diff;
    lsae_result r;
    int q;
    RM_CKPT(dir);
    RM_CKPT(bad);
    small_run(&m, &t, 7, 5);
    c = lsae_model_config(m);
    OK(lsae_checkpoint_save(dir, m, t, NULL, 0));
    OK(lsae_checkpoint_verify(dir, found, sizeof found));
    CHECKF(strcmp(found, dir) == 0, "verify found %s", found);
    for (q = 0; q < 3; ++q) {
        lsae_shard_range(lsae_model_num_latents(m), q, 3, &l0, &l1);
        OK(lsae_model_create_shard(c, NULL, l0, l1, &a));
        OK(lsae_trainer_create(a, c, &ta));
        OK(lsae_model_create_shard(c, NULL, l0, l1, &b));
        OK(lsae_trainer_create(b, c, &tb));
        OK(lsae_checkpoint_load_shard(dir, a, ta, NULL, 0, NULL));
        OK(lsae_checkpoint_load_shard_verified(found, b, tb, NULL, 0, NULL));
        snap_take(&sa, a, ta);
        snap_take(&sb, b, tb);
        CHECKF((diff = snap_diff(&sb, &sa, 1)) == NULL, "shard %d of 3: the verified load's %s differ", q, diff);
        snap_free(&sa);
        snap_free(&sb);
        lsae_trainer_free(ta);
        lsae_model_free(a);
        if (q < 2) { lsae_trainer_free(tb); lsae_model_free(b); }
    }
    /* b, tb: the last shard, to see the refusals change nothing */
    snap_take(&sa, b, tb);
    /* one byte of W_dec's data changed, the size kept: only the hashes see it */
    copy_ckpt(dir, bad);
    {
        FILE *f;
        long n;
        int ch;
        snprintf(p, sizeof p, "%s/sae.safetensors", bad);
        f = fopen(p, "r+b");
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, n / 2, SEEK_SET);
        ch = fgetc(f);
        fseek(f, n / 2, SEEK_SET);
        fputc(ch ^ 0x10, f);
        fclose(f);
    }
    r = lsae_checkpoint_verify(bad, found, sizeof found);
    CHECKF(r == LSAE_BAD_FILE && msg_has("sae.safetensors") && found[0] == 0, "a corrupted sae.safetensors: %s", lsae_last_error());
    /* a cut state.bin: its length, checked without the hashes */
    copy_ckpt(dir, bad);
    snprintf(p, sizeof p, "%s/state.bin", dir);
    snprintf(tmpdir, sizeof tmpdir, "%s/state.bin", bad);
    copy_cut(p, tmpdir, 8);
    r = lsae_checkpoint_load_shard_verified(bad, b, tb, NULL, 0, NULL);
    CHECKF(r == LSAE_BAD_FILE && msg_has("state.bin"), "a cut state.bin, verified load: %s", lsae_last_error());
    r = lsae_checkpoint_load_shard_verified(TDIR "/no_such_ckpt", b, tb, NULL, 0, NULL);
    CHECKF(r == LSAE_NOT_FOUND, "a missing directory, verified load: %s", lsae_last_error());
    snap_take(&sb, b, tb);
    CHECKF((diff = snap_diff(&sb, &sa, 1)) == NULL, "a refused verified load changed the shard (%s)", diff);
    snap_free(&sb);
    snap_free(&sa);
    /* dir missing (a save cut between its renames): the verifier finds dir.tmp */
    RM_CKPT(bad);
    snprintf(tmpdir, sizeof tmpdir, "%s.tmp", bad);
    RM_CKPT(tmpdir);
    copy_ckpt(dir, tmpdir);
    OK(lsae_checkpoint_verify(bad, found, sizeof found));
    CHECKF(strcmp(found, tmpdir) == 0, "verify of a missing dir found %s, not %s", found, tmpdir);
    OK(lsae_checkpoint_load_shard_verified(found, b, tb, NULL, 0, NULL));
    CHECK(lsae_checkpoint_verify(dir, NULL, 0) == LSAE_INVALID_ARGS);
    RM_CKPT(tmpdir);
    lsae_trainer_free(tb);
    lsae_model_free(b);
    lsae_trainer_free(t);
    lsae_model_free(m);
    RM_CKPT(dir);
    RM_CKPT(bad);
}

/* lsae_model_load_shard (how a latent-sharded lsae train --init starts,
   each rank reading only its rows of the model file) gives every shard
   exactly the bytes of lsae_model_load followed by lsae_model_shard_of,
   over S = 1, 2, 3 of 49 latents (uneven: 24/25, 16/16/17), with b_enc and
   b_dec nonzero so that a row offset off by one in any tensor shows; a
   mean_center file (input_mean folded into b_dec) and a BatchTopK
   threshold too. Then the errors, each leaving the shard unchanged. */
static const char *const model_files[] = { "cfg.json", "sae.safetensors", "sae_weights.safetensors" };

static void load_shard_case(const char *dir, const lsae_config *shard_cfg, const char *tag)
{
    lsae_model *full = NULL, *ref = NULL, *sm = NULL;
    shard_snap want, got;
    size_t L, l0, l1;
    const char *diff;
    int S, q;
    OK(lsae_model_load(dir, NULL, &full));
    if (!full) return;
    L = lsae_model_num_latents(full);
    for (S = 1; S <= 3; ++S)
        for (q = 0; q < S; ++q) {
            lsae_shard_range(L, q, S, &l0, &l1);
            OK(lsae_model_shard_of(full, l0, l1, &ref));
            snap_take(&want, ref, NULL);
            /* another seed: every byte must come from the file */
            OK(lsae_model_create_shard(shard_cfg, NULL, l0, l1, &sm));
            OK(lsae_model_load_shard(dir, sm));
            snap_take(&got, sm, NULL);
            CHECKF((diff = snap_diff(&got, &want, 0)) == NULL, "%s, S %d, shard %d, latents [%zu, %zu): %s differ from lsae_model_load + lsae_model_shard_of",
                   tag, S, q, l0, l1, diff);
            snap_free(&got);
            snap_free(&want);
            lsae_model_free(sm);
            lsae_model_free(ref);
            sm = NULL; ref = NULL;
        }
    lsae_model_free(full);
}

static void test_model_load_shard(void)
{
    const char *dir = TDIR "/model_shard", *cut = TDIR "/model_shard_cut", *sl = TDIR "/model_shard_saelens";
    const size_t d = 12, L = 49;
    lsae_config c = lsae_config_default(d), got_cfg;
    lsae_model *m = NULL, *sm = NULL;
    shard_snap before, after, full;
    float *W = (float *)malloc(L * d * sizeof(float)), *Wd = (float *)malloc(L * d * sizeof(float)), be[49], bd[12], mu[12];
    lsae__st_out ts[5];
    char path[256], from[256];
    const char *diff;
    size_t i, l0, l1;
    lsae_result r;
    rm_tree_files(dir, model_files, 3);
    rm_tree_files(cut, model_files, 3);
    c.k = 3;
    c.num_latents = L;
    c.expansion_factor = 0;
    c.seed = 23;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_model_get_weights(m, W, be, Wd, bd));
    for (i = 0; i < L; ++i) be[i] = (float)tu_normal() * 0.1f;
    for (i = 0; i < d; ++i) { bd[i] = (float)tu_normal() * 0.1f; mu[i] = (float)tu_normal() * 0.5f; }
    OK(lsae_model_set_weights(m, NULL, be, NULL, bd));
    OK(lsae_model_save(m, dir));
    /* the config, with no weights read */
    OK(lsae_model_load_config(dir, &got_cfg));
    CHECKF(got_cfg.d_in == d && got_cfg.num_latents == L && got_cfg.k == 3 && got_cfg.normalize_decoder == c.normalize_decoder,
           "lsae_model_load_config: d_in %zu, L %zu, k %zu", got_cfg.d_in, got_cfg.num_latents, got_cfg.k);
    c.seed = 99;
    load_shard_case(dir, &c, "F32 TopK");
    /* the shard's own settings stay its own (a fine-tune's): another lr and
       no decoder normalisation, the same rows */
    {
        lsae_config c2 = c;
        c2.lr = 1e-3;
        c2.normalize_decoder = 0;
        load_shard_case(dir, &c2, "other settings");
        OK(lsae_model_create_shard(&c2, NULL, 10, 30, &sm));
        OK(lsae_model_load_shard(dir, sm));
        CHECK(lsae_model_config(sm)->normalize_decoder == 0 && lsae_model_config(sm)->lr == 1e-3);
        lsae_model_free(sm);
        sm = NULL;
    }
    /* errors: a shard [2, 19) of 3 whose state must survive each */
    lsae_shard_range(L, 0, 3, &l0, &l1);
    OK(lsae_model_create_shard(&c, NULL, l0 + 2, l1 + 2, &sm));
    snap_take(&before, sm, NULL);
    /* sae.safetensors cut by 4 bytes: its header promises more data than there is */
    lsae__mkdirs(cut);
    snprintf(from, sizeof from, "%s/cfg.json", dir);
    snprintf(path, sizeof path, "%s/cfg.json", cut);
    copy_file(from, path);
    snprintf(from, sizeof from, "%s/sae.safetensors", dir);
    snprintf(path, sizeof path, "%s/sae.safetensors", cut);
    copy_cut(from, path, 4);
    r = lsae_model_load_shard(cut, sm);
    CHECKF(r == LSAE_BAD_FILE && msg_has("sae.safetensors"), "a cut sae.safetensors: %s", lsae_last_error());
    /* no such directory; NULLs */
    r = lsae_model_load_shard(TDIR "/no_such_model", sm);
    CHECKF(r == LSAE_NOT_FOUND, "a missing directory: %s", lsae_last_error());
    CHECK(lsae_model_load_shard(NULL, sm) == LSAE_INVALID_ARGS);
    CHECK(lsae_model_load_shard(dir, NULL) == LSAE_INVALID_ARGS);
    CHECK(lsae_model_load_config(dir, NULL) == LSAE_INVALID_ARGS);
    snap_take(&after, sm, NULL);
    CHECKF((diff = snap_diff(&after, &before, 0)) == NULL, "a refused load changed the shard (%s)", diff);
    snap_free(&after);
    snap_free(&before);
    lsae_model_free(sm);
    sm = NULL;
    {
        /* l1 past the file's L: a shard [40, 55) of a 55-latent model against
           the 49 latents on disk; another d_in; another k */
        lsae_config c2 = c;
        c2.num_latents = 55;
        OK(lsae_model_create_shard(&c2, NULL, 40, 55, &sm));
        snap_take(&before, sm, NULL);
        r = lsae_model_load_shard(dir, sm);
        CHECKF(r == LSAE_INVALID_ARGS && msg_has("L 49") && msg_has("[40, 55) of L 55"), "%s", lsae_last_error());
        snap_take(&after, sm, NULL);
        CHECKF((diff = snap_diff(&after, &before, 0)) == NULL, "l1 past L changed the shard (%s)", diff);
        snap_free(&after);
        snap_free(&before);
        lsae_model_free(sm);
        c2 = lsae_config_default(10);
        c2.k = 3;
        c2.num_latents = L;
        OK(lsae_model_create_shard(&c2, NULL, 0, 20, &sm));
        snap_take(&before, sm, NULL);
        r = lsae_model_load_shard(dir, sm);
        CHECKF(r == LSAE_INVALID_ARGS && msg_has("d_in 12"), "%s", lsae_last_error());
        snap_take(&after, sm, NULL);
        CHECKF((diff = snap_diff(&after, &before, 0)) == NULL, "another d_in changed the shard (%s)", diff);
        snap_free(&after);
        snap_free(&before);
        lsae_model_free(sm);
        c2 = c;
        c2.k = 4;
        OK(lsae_model_create_shard(&c2, NULL, 0, 20, &sm));
        r = lsae_model_load_shard(dir, sm);
        CHECKF(r == LSAE_INVALID_ARGS && msg_has("k 3") && msg_has("k 4"), "%s", lsae_last_error());
        lsae_model_free(sm);
        sm = NULL;
    }
    /* a full model is the shard [0, L): lsae_model_load's bytes */
    OK(lsae_model_create(&c, NULL, &sm));
    OK(lsae_model_load_shard(dir, sm));
    snap_take(&full, m, NULL);
    snap_take(&after, sm, NULL);
    CHECKF((diff = snap_diff(&after, &full, 0)) == NULL, "a full model through lsae_model_load_shard: %s differ", diff);
    snap_free(&after);
    snap_free(&full);
    lsae_model_free(sm);
    sm = NULL;
    /* latent-sae with mean_center: input_mean folded into every shard's b_dec */
    ts[0].name = "encoder.weight"; ts[0].ndim = 2; ts[0].shape[0] = L; ts[0].shape[1] = d; ts[0].data = W;
    ts[1].name = "encoder.bias"; ts[1].ndim = 1; ts[1].shape[0] = L; ts[1].data = be;
    ts[2].name = "W_dec"; ts[2].ndim = 2; ts[2].shape[0] = L; ts[2].shape[1] = d; ts[2].data = Wd;
    ts[3].name = "b_dec"; ts[3].ndim = 1; ts[3].shape[0] = d; ts[3].data = bd;
    ts[4].name = "input_mean"; ts[4].ndim = 1; ts[4].shape[0] = d; ts[4].data = mu;
    snprintf(path, sizeof path, "%s/sae.safetensors", dir);
    OK(st_write(path, ts, 5, NULL));
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    {
        const char *cj = "{\"sae_type\": \"TOPK\", \"mean_center\": true, \"num_latents\": 49, \"k\": 3, \"d_in\": 12}";
        write_bytes(path, cj, strlen(cj));
    }
    load_shard_case(dir, &c, "mean_center");
    /* BatchTopK: the threshold comes with every shard's rows; a TopK shard
       (no threshold) keeps its own */
    lsae_model_free(m);
    m = NULL;
    rm_tree_files(dir, model_files, 3);
    c.sae_type = LSAE_SAE_BATCHTOPK;
    c.k = 5;
    c.seed = 11;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_model_set_batchtopk_threshold(m, 0.375f));
    OK(lsae_model_save(m, dir));
    c.seed = 12;
    load_shard_case(dir, &c, "batchtopk");
    OK(lsae_model_create_shard(&c, NULL, 5, 30, &sm));
    OK(lsae_model_load_shard(dir, sm));
    CHECKF(lsae_model_batchtopk_threshold(sm) == 0.375f, "batchtopk shard: theta %g", (double)lsae_model_batchtopk_threshold(sm));
    lsae_model_free(sm);
    c.sae_type = LSAE_SAE_TOPK;
    OK(lsae_model_create_shard(&c, NULL, 5, 30, &sm));
    OK(lsae_model_load_shard(dir, sm));
    CHECKF(lsae_model_batchtopk_threshold(sm) == 0.0f, "a TopK shard took a threshold: %g", (double)lsae_model_batchtopk_threshold(sm));
    lsae_model_free(sm);
    sm = NULL;
#ifndef LSAE_NO_SAELENS
    /* SAELens (W_enc stored transposed) is refused by rows, saying what to do */
    rm_tree_files(sl, model_files, 3);
    c.sae_type = LSAE_SAE_TOPK;
    c.k = 3;
    lsae_model_free(m);
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_model_save_saelens(m, sl));
    OK(lsae_model_create_shard(&c, NULL, 0, 20, &sm));
    r = lsae_model_load_shard(sl, sm);
    CHECKF(r == LSAE_UNSUPPORTED && msg_has("SAELens") && msg_has("lsae_model_save"), "%s", lsae_last_error());
    r = lsae_model_load_config(sl, &got_cfg);
    CHECKF(r == LSAE_UNSUPPORTED && msg_has("SAELens"), "%s", lsae_last_error());
    lsae_model_free(sm);
    rm_tree_files(sl, model_files, 3);
#endif
    lsae_model_free(m);
    free(W);
    free(Wd);
    rm_tree_files(dir, model_files, 3);
    rm_tree_files(cut, model_files, 3);
}

/* Every state a save can be cut in, made by hand, loads the right checkpoint. */
static void test_checkpoint_crash_windows(void)
{
    const char *dir = TDIR "/cw", *tmp = TDIR "/cw.tmp", *old = TDIR "/cw.old";
    lsae_model *m = NULL, *mb = NULL, *mx = NULL;
    lsae_trainer *t = NULL, *tb = NULL, *tx = NULL;
    RM_CKPT(dir); RM_CKPT(tmp); RM_CKPT(old);
    small_run(&m, &t, 3, 1);   /* the older checkpoint */
    small_run(&mb, &tb, 5, 1); /* the newer one */
    small_run(&mx, &tx, 0, 7);
    OK(lsae_checkpoint_save(old, m, t, "A", 1));
    OK(lsae_checkpoint_save(TDIR "/cw_new", mb, tb, "B", 1));
    /* cut between the two renames: dir missing, dir.tmp whole, dir.old whole */
    copy_ckpt(TDIR "/cw_new", tmp);
    OK(lsae_checkpoint_load(dir, mx, tx, NULL, 0, NULL));
    CHECK(lsae_trainer_steps_done(tx) == 5 && same_state(mb, tb, mx, tx));
    /* cut while dir.tmp was being written (state.bin missing): dir.old */
    {
        char p[256];
        snprintf(p, sizeof p, "%s/state.bin", tmp);
        remove(p);
    }
    OK(lsae_checkpoint_load(dir, mx, tx, NULL, 0, NULL));
    CHECK(lsae_trainer_steps_done(tx) == 3 && same_state(m, t, mx, tx));
    /* a torn state.bin in dir.tmp is no better */
    {
        char p[256];
        FILE *f;
        snprintf(p, sizeof p, "%s/state.bin", tmp);
        copy_file(TDIR "/cw_new/state.bin", p);
        f = fopen(p, "r+b");
        fseek(f, -3, SEEK_END);
        fputc('x', f);
        fclose(f);
    }
    OK(lsae_checkpoint_load(dir, mx, tx, NULL, 0, NULL));
    CHECK(lsae_trainer_steps_done(tx) == 3);
    /* the next save repairs: dir.tmp whole again -> it becomes dir, then the new save replaces it */
    copy_ckpt(TDIR "/cw_new", tmp);
    OK(lsae_checkpoint_save(dir, mb, tb, "C", 1));
    CHECK(lsae__is_dir(dir) && !lsae__is_dir(tmp) && !lsae__is_dir(old));
    {
        char b[4] = { 0 };
        size_t bl = 0;
        OK(lsae_checkpoint_load(dir, mx, tx, b, sizeof b, &bl));
        CHECK(bl == 1 && b[0] == 'C' && lsae_trainer_steps_done(tx) == 5);
    }
    /* a stale dir.tmp beside a whole dir: dir wins, the save clears the leftover */
    copy_ckpt(TDIR "/cw_new", tmp);
    OK(lsae_checkpoint_load(dir, mx, tx, NULL, 0, NULL));
    OK(lsae_checkpoint_save(dir, m, t, NULL, 0));
    CHECK(!lsae__is_dir(tmp) && lsae_trainer_steps_done(t) == 3);
    /* a leftover holding foreign files is not deleted */
    lsae__mkdirs(tmp);
    write_bytes(TDIR "/cw.tmp/precious.txt", "x", 1);
    CHECK(lsae_checkpoint_save(dir, m, t, NULL, 0) == LSAE_IO_ERROR && msg_has("left alone"));
    remove(TDIR "/cw.tmp/precious.txt");
    OK(lsae_checkpoint_save(dir, m, t, NULL, 0));
    lsae_trainer_free(t); lsae_trainer_free(tb); lsae_trainer_free(tx);
    lsae_model_free(m); lsae_model_free(mb); lsae_model_free(mx);
}

#ifdef LSAE__POSIX
/* The saver: resumes from the checkpoint if there is one, then trains and
   saves in a loop until it is killed. Run as a fresh process (exec), since
   OpenMP's thread pool does not survive a bare fork. */
static int ckpt_saver(void)
{
    const char *dir = TDIR "/k9";
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    uint64_t s, step;
    small_run(&m, &t, 1, 1);
    if (lsae_checkpoint_load(dir, m, t, &step, sizeof step, NULL) != LSAE_OK && lsae__is_dir(dir)) return 5;
    for (s = 0;; ++s) {
        float x[40 * 12];
        size_t i;
        step = lsae_trainer_steps_done(t);
        if (lsae_checkpoint_save(dir, m, t, &step, sizeof step) != LSAE_OK) return 3;
        for (i = 0; i < 40 * 12; ++i) x[i] = cell(s * 77 + i / 12, i % 12 + 1) - 0.5f;
        if (lsae_trainer_step(t, x, 40, NULL) != LSAE_OK) return 4;
    }
}

/* kill -9 a process that saves checkpoints in a loop, at random moments:
   the checkpoint always loads, and its state is the one its blob names.
   The saver is this program run again. Built for another machine and run
   under a user-mode emulator (make test-arm64 and test-bigendian: qemu-user), exec would
   meet a foreign binary, so LSAE_TEST_EMULATOR names the emulator to run it
   with (the SIGKILL then ends the emulator, and the saver with it). */
static void test_checkpoint_kill9(const char *self)
{
    const char *dir = TDIR "/k9";
    int round, loaded = 0, mid_save = 0, swap_cut = 0;
    RM_CKPT(dir); RM_CKPT(TDIR "/k9.tmp"); RM_CKPT(TDIR "/k9.old");
    for (round = 0; round < 12; ++round) {
        pid_t pid = fork();
        if (pid == 0) {
            const char *emulator = getenv("LSAE_TEST_EMULATOR");
            setenv("OMP_NUM_THREADS", "1", 1); /* tiny steps: most of the saver's time is spent saving */
            if (emulator && *emulator) execlp(emulator, emulator, self, "--ckpt-saver", (char *)NULL);
            else execl(self, self, "--ckpt-saver", (char *)NULL);
            _exit(6);
        } else if (pid > 0) {
            struct timespec ts;
            int status;
            if (round == 0) {
                /* let the first checkpoint appear (however slow this build or machine), then kill at random */
                int waited;
                ts.tv_sec = 0;
                ts.tv_nsec = 5000000L;
                for (waited = 0; waited < 6000 && !lsae__is_dir(dir); ++waited) nanosleep(&ts, NULL);
            }
            ts.tv_sec = 0;
            ts.tv_nsec = (long)(lsae__mix64((uint64_t)round) % 200) * 1000000L;
            nanosleep(&ts, NULL);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            CHECKF(WIFSIGNALED(status), "round %d: the saver exited by itself (status %d)", round, status);
            mid_save += lsae__is_dir(TDIR "/k9.tmp");
            swap_cut += !lsae__is_dir(dir);
            {
                lsae_model *m = NULL;
                lsae_trainer *t = NULL;
                uint64_t step = ~(uint64_t)0;
                size_t bl = 0;
                lsae_result r;
                small_run(&m, &t, 0, 9);
                r = lsae_checkpoint_load(dir, m, t, &step, sizeof step, &bl);
                CHECKF(r == LSAE_OK, "round %d: %s", round, lsae_last_error());
                CHECK(bl == sizeof step && step == lsae_trainer_steps_done(t));
                loaded += r == LSAE_OK;
                lsae_trainer_free(t);
                lsae_model_free(m);
            }
        }
    }
    CHECK(loaded == 12);
    printf("  kill -9 at random moments: %d of 12 rounds loaded a checkpoint (%d killed mid-save, %d of them between the renames)\n", loaded, mid_save, swap_cut);
}
#endif

/* Train N steps straight, or N/2, checkpoint, fresh objects, load, seek,
   the rest: the two models must be bit-identical. */
static void test_resume_bitexact(void)
{
    const size_t n = 3000, d = 16, B = 64;
    const int N = 24;
    lsae_dataset *ds = make_dataset("resume", n, d, 5, 0, NULL, 0);
    lsae_loader_options lo = lsae_loader_options_default(B);
    lsae_config c = lsae_config_default(d);
    lsae_model *m1 = NULL, *m2 = NULL;
    lsae_trainer *t1 = NULL, *t2 = NULL;
    lsae_loader *l1 = NULL, *l2 = NULL;
    const float *b;
    size_t rows, L;
    uint64_t pos = 0;
    int s, pass;
    float *w1, *w2;
    if (!ds) return;
    lo.seed = 11;
    lo.window_rows = 500;
    lo.epochs = 2;
    c.k = 4;
    c.expansion_factor = 4;
    c.seed = 5;
    c.total_steps = (uint64_t)N;
    c.lr_warmup_steps = 3;
    c.dead_feature_threshold = 300;
    c.num_threads = 2;
    for (pass = 0; pass < 2; ++pass) {
        lo.prefetch = pass;
        /* straight */
        OK(lsae_model_create(&c, NULL, &m1));
        OK(lsae_trainer_create(m1, &c, &t1));
        OK(lsae_loader_create(ds, &lo, &l1));
        for (s = 0; s < N && l1; ++s) {
            OK(lsae_loader_next(l1, &b, &rows));
            OK(lsae_trainer_step(t1, b, rows, NULL));
        }
        /* half, checkpoint, forget everything */
        OK(lsae_model_create(&c, NULL, &m2));
        OK(lsae_trainer_create(m2, &c, &t2));
        OK(lsae_loader_create(ds, &lo, &l2));
        for (s = 0; s < N / 2 && l2; ++s) {
            lsae_loader_stats st;
            OK(lsae_loader_next(l2, &b, &rows));
            OK(lsae_trainer_step(t2, b, rows, NULL));
            lsae_loader_get_stats(l2, &st);
            pos = st.rows_read;
        }
        OK(lsae_checkpoint_save(TDIR "/resume_ckpt", m2, t2, &pos, sizeof pos));
        lsae_loader_free(l2);
        lsae_trainer_free(t2);
        lsae_model_free(m2);
        pos = 0;
        /* fresh objects, from a different seed even: everything comes from the checkpoint */
        c.seed = 99;
        OK(lsae_model_create(&c, NULL, &m2));
        OK(lsae_trainer_create(m2, &c, &t2));
        c.seed = 5;
        OK(lsae_checkpoint_load(TDIR "/resume_ckpt", m2, t2, &pos, sizeof pos, NULL));
        OK(lsae_loader_create(ds, &lo, &l2));
        OK(lsae_loader_seek(l2, pos));
        for (s = N / 2; s < N && l2; ++s) {
            OK(lsae_loader_next(l2, &b, &rows));
            OK(lsae_trainer_step(t2, b, rows, NULL));
        }
        L = lsae_model_num_latents(m1);
        w1 = (float *)malloc((2 * L * d + L + d) * sizeof(float));
        w2 = (float *)malloc((2 * L * d + L + d) * sizeof(float));
        lsae_model_get_weights(m1, w1, w1 + L * d, w1 + L * d + L, w1 + 2 * L * d + L);
        lsae_model_get_weights(m2, w2, w2 + L * d, w2 + L * d + L, w2 + 2 * L * d + L);
        CHECKF(memcmp(w1, w2, (2 * L * d + L + d) * sizeof(float)) == 0, "resumed model differs from the straight run (prefetch %d)", pass);
        CHECK(same_state(m1, t1, m2, t2));
        free(w1);
        free(w2);
        lsae_loader_free(l1); lsae_loader_free(l2);
        lsae_trainer_free(t1); lsae_trainer_free(t2);
        lsae_model_free(m1); lsae_model_free(m2);
        m1 = m2 = NULL; t1 = t2 = NULL; l1 = l2 = NULL;
    }
    lsae_dataset_close(ds);
}

/* -------------------------------------------------------- Hugging Face cache */

#ifdef LSAE__POSIX
static void test_hf(void)
{
    const char *hub = TDIR "/hf/hub";
    char path[1024], want[1024];
    lsae_model *m = NULL, *m2 = NULL;
    lsae_config c = lsae_config_default(8);
    lsae_result r;
    c.k = 2;
    c.expansion_factor = 2;
    lsae__mkdirs(TDIR "/hf/hub/models--owner--sae-name/refs");
    write_bytes(TDIR "/hf/hub/models--owner--sae-name/refs/main", "abc123\n", 7);
    OK(lsae_model_create(&c, NULL, &m));
    lsae__mkdirs(TDIR "/hf/hub/models--owner--sae-name/snapshots/abc123/64_32");
    OK(lsae_model_save(m, TDIR "/hf/hub/models--owner--sae-name/snapshots/abc123/64_32"));
    lsae__mkdirs(TDIR "/hf/hub/models--owner--sae-name/snapshots/old999/64_32");
    setenv("HF_HUB_CACHE", hub, 1);
    OK(lsae_hf_resolve("owner/sae-name", "64_32", path, sizeof path));
    snprintf(want, sizeof want, "%s/models--owner--sae-name/snapshots/abc123/64_32", hub);
    CHECKF(strcmp(path, want) == 0, "%s", path);
    OK(lsae_model_load_hf("owner/sae-name", "64_32", NULL, &m2));
    CHECK(m2 && lsae_model_d_in(m2) == 8);
    lsae_model_free(m2);
    m2 = NULL;
    /* a revision by name or commit */
    OK(lsae_hf_resolve("owner/sae-name@old999", "64_32", path, sizeof path));
    CHECK(strstr(path, "snapshots/old999/64_32") != NULL);
    /* missing subfolder, missing repo: the message is the download command */
    r = lsae_hf_resolve("owner/sae-name", "32_64", path, sizeof path);
    CHECKF(r == LSAE_NOT_FOUND && msg_has("huggingface-cli download owner/sae-name --include '32_64/*'"), "%s", lsae_last_error());
    r = lsae_model_load_hf("enjalot/sae-nomic-text-v1.5-FineWeb-edu-100BT", "64_32", NULL, &m2);
    CHECKF(r == LSAE_NOT_FOUND && msg_has("huggingface-cli download enjalot/sae-nomic-text-v1.5-FineWeb-edu-100BT --include '64_32/*'") && msg_has(hub),
           "%s", lsae_last_error());
    /* a snapshot folder whose files are missing (interrupted download) */
    r = lsae_model_load_hf("owner/sae-name@old999", "64_32", NULL, &m2);
    CHECKF(r == LSAE_NOT_FOUND && msg_has("interrupted"), "%s", lsae_last_error());
    /* no refs/main: the one snapshot, or an error naming the choice */
    remove(TDIR "/hf/hub/models--owner--sae-name/refs/main");
    r = lsae_hf_resolve("owner/sae-name", "64_32", path, sizeof path);
    CHECKF(r == LSAE_INVALID_ARGS && msg_has("2 snapshots") && msg_has("@REVISION"), "%s", lsae_last_error());
    remove(TDIR "/hf/hub/models--owner--sae-name/snapshots/old999/64_32");
    remove(TDIR "/hf/hub/models--owner--sae-name/snapshots/old999");
    OK(lsae_hf_resolve("owner/sae-name", "64_32", path, sizeof path));
    CHECK(strstr(path, "snapshots/abc123/64_32") != NULL);
    /* HF_HOME/hub when HF_HUB_CACHE is unset */
    unsetenv("HF_HUB_CACHE");
    setenv("HF_HOME", TDIR "/hf", 1);
    OK(lsae_hf_resolve("owner/sae-name", "64_32", path, sizeof path));
    CHECK(strncmp(path, TDIR "/hf/hub/", strlen(TDIR "/hf/hub/")) == 0);
    /* bad names */
    CHECK(lsae_hf_resolve("no-slash", NULL, path, sizeof path) == LSAE_INVALID_ARGS);
    CHECK(lsae_hf_resolve("a/b/c", NULL, path, sizeof path) == LSAE_INVALID_ARGS);
    CHECK(lsae_hf_resolve("owner/../x", NULL, path, sizeof path) == LSAE_INVALID_ARGS);
    CHECK(lsae_hf_resolve("owner/sae-name", "../../etc", path, sizeof path) == LSAE_INVALID_ARGS);
    /* "." as a revision or commit would name snapshots/ itself (found by tests/fuzz/fuzz_hf.c) */
    CHECK(lsae_hf_resolve("owner/sae-name@.", "64_32", path, sizeof path) == LSAE_INVALID_ARGS && msg_has("bad revision"));
    CHECK(lsae_hf_resolve("owner/sae-name@refs/./main", NULL, path, sizeof path) == LSAE_INVALID_ARGS);
    CHECK(lsae_hf_resolve("owner/sae-name@refs//main", NULL, path, sizeof path) == LSAE_INVALID_ARGS);
    CHECK(lsae_hf_resolve("owner/sae-name@main/", NULL, path, sizeof path) == LSAE_INVALID_ARGS);
    lsae__mkdirs(TDIR "/hf/hub/models--owner--sae-name/snapshots/64_32");
    write_bytes(TDIR "/hf/hub/models--owner--sae-name/refs/main", ".\n", 2);
    r = lsae_hf_resolve("owner/sae-name", "64_32", path, sizeof path);
    CHECKF(r == LSAE_BAD_FILE && msg_has("refs/main: not a commit hash"), "%s: %s", path, lsae_last_error());
    remove(TDIR "/hf/hub/models--owner--sae-name/refs/main");
    remove(TDIR "/hf/hub/models--owner--sae-name/snapshots/64_32");
    CHECK(lsae_hf_resolve("owner/sae-name", "64_32", path, 10) == LSAE_INVALID_ARGS);
    unsetenv("HF_HOME");
    lsae_model_free(m);
}
#endif

/* ----------------------------------------------------------------- SAELens */

/* SAELens's encode, in double: topk over (x - b_dec) @ W_enc + b_enc (W_enc [d, L]),
   times the decoder norms when rescaling, then ReLU. */
static void saelens_encode_ref(const float *WencT, const float *benc, const float *Wdec, const float *bdec, size_t d, size_t L, size_t k,
                               int rescale, const float *x, double *acts, int32_t *idx)
{
    double *pre = (double *)malloc(L * sizeof(double));
    size_t l, i, q;
    for (l = 0; l < L; ++l) {
        double s = benc[l], nn = 0;
        for (i = 0; i < d; ++i) s += ((double)x[i] - bdec[i]) * WencT[i * L + l];
        if (rescale) {
            for (i = 0; i < d; ++i) nn += (double)Wdec[l * d + i] * Wdec[l * d + i];
            s *= sqrt(nn);
        }
        pre[l] = s;
    }
    for (q = 0; q < k; ++q) {
        size_t best = 0;
        for (l = 1; l < L; ++l)
            if (pre[l] > pre[best]) best = l;
        acts[q] = pre[best] > 0 ? pre[best] : 0;
        idx[q] = (int32_t)best;
        pre[best] = -INFINITY;
    }
    free(pre);
}

static void test_saelens(void)
{
    lsae_config c = lsae_config_default(10);
    lsae_model *m = NULL, *m2 = NULL;
    const size_t d = 10, L = 40, k = 5, R = 20;
    float W[40 * 10], be[40], Wd[40 * 10], bd[10], W2[40 * 10], be2[40], Wd2[40 * 10], bd2[10], WT[10 * 40];
    float x[20 * 10], acts[20 * 5];
    int32_t idx[20 * 5], ridx[5];
    double racts[5];
    size_t i, l, r;
    lsae_result res;
    c.k = k;
    c.num_latents = L;
    c.seed = 4;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_model_get_weights(m, W, be, Wd, bd));
    for (i = 0; i < L; ++i) be[i] = (float)tu_normal() * 0.05f;
    for (i = 0; i < d; ++i) bd[i] = (float)tu_normal() * 0.1f;
    OK(lsae_model_set_weights(m, NULL, be, NULL, bd));
    OK(lsae_model_save_saelens(m, TDIR "/saelens"));
    OK(lsae_model_load(TDIR "/saelens", NULL, &m2)); /* detected by its file names */
    if (!m2) return;
    OK(lsae_model_get_weights(m2, W2, be2, Wd2, bd2));
    CHECK(memcmp(W, W2, sizeof W) == 0 && memcmp(be, be2, sizeof be) == 0 && memcmp(Wd, Wd2, sizeof Wd) == 0 && memcmp(bd, bd2, sizeof bd) == 0);
    CHECK(lsae_model_k(m2) == k && lsae_model_config(m2)->normalize_decoder == 1);
    lsae_model_free(m2);
    m2 = NULL;
    /* rescale_acts_by_decoder_norm with non-unit decoder rows: folded, same activations */
    for (l = 0; l < L; ++l)
        for (i = 0; i < d; ++i) { Wd[l * d + i] *= 0.5f + (float)(l % 7) * 0.3f; WT[i * L + l] = W[l * d + i]; }
    {
        lsae__st_out ts[4];
        const char *cj = "{\"architecture\": \"topk\", \"d_in\": 10, \"d_sae\": 40, \"k\": 5, \"dtype\": \"float32\", \"apply_b_dec_to_input\": true, "
                         "\"normalize_activations\": \"none\", \"rescale_acts_by_decoder_norm\": true, \"metadata\": {\"sae_lens_version\": \"6.5.0\"}}";
        ts[0].name = "W_enc"; ts[0].ndim = 2; ts[0].shape[0] = d; ts[0].shape[1] = L; ts[0].data = WT;
        ts[1].name = "b_enc"; ts[1].ndim = 1; ts[1].shape[0] = L; ts[1].data = be;
        ts[2].name = "W_dec"; ts[2].ndim = 2; ts[2].shape[0] = L; ts[2].shape[1] = d; ts[2].data = Wd;
        ts[3].name = "b_dec"; ts[3].ndim = 1; ts[3].shape[0] = d; ts[3].data = bd;
        lsae__mkdirs(TDIR "/saelens2");
        OK(st_write(TDIR "/saelens2/sae_weights.safetensors", ts, 4, NULL));
        write_bytes(TDIR "/saelens2/cfg.json", cj, strlen(cj));
        OK(lsae_model_load_saelens(TDIR "/saelens2", NULL, &m2));
        if (!m2) return;
        for (i = 0; i < R * d; ++i) x[i] = (float)tu_normal();
        OK(lsae_model_encode(m2, x, R, 0, acts, idx));
        for (r = 0; r < R; ++r) {
            saelens_encode_ref(WT, be, Wd, bd, d, L, k, 1, x + r * d, racts, ridx);
            for (i = 0; i < k; ++i) {
                CHECKF(racts[i] == 0 || idx[r * k + i] == ridx[i], "row %zu rank %zu: latent %d, SAELens %d", r, i, idx[r * k + i], ridx[i]);
                NEAR(acts[r * k + i], racts[i], 1e-5 * (1 + fabs(racts[i])));
            }
        }
        lsae_model_free(m2);
        m2 = NULL;
        /* pre-6 keys: architecture "standard" with activation_fn_str "topk", k in activation_fn_kwargs */
        cj = "{\"architecture\": \"standard\", \"d_in\": 10, \"d_sae\": 40, \"activation_fn_str\": \"topk\", \"activation_fn_kwargs\": {\"k\": 5}, "
             "\"normalize_activations\": false, \"model_name\": \"gpt2\", \"hook_name\": \"blocks.0.hook_resid_pre\"}";
        write_bytes(TDIR "/saelens2/cfg.json", cj, strlen(cj));
        OK(lsae_model_load_saelens(TDIR "/saelens2", NULL, &m2));
        CHECK(m2 && lsae_model_k(m2) == 5 && lsae_model_config(m2)->normalize_decoder == 0);
        lsae_model_free(m2);
        m2 = NULL;
        /* what cannot be expressed is refused */
        cj = "{\"architecture\": \"jumprelu\", \"d_in\": 10, \"d_sae\": 40}";
        write_bytes(TDIR "/saelens2/cfg.json", cj, strlen(cj));
        res = lsae_model_load_saelens(TDIR "/saelens2", NULL, &m2);
        CHECKF(res == LSAE_UNSUPPORTED && msg_has("jumprelu") && msg_has("cfg.json"), "%s", lsae_last_error());
        cj = "{\"architecture\": \"topk\", \"d_in\": 10, \"d_sae\": 40, \"k\": 5, \"apply_b_dec_to_input\": false}";
        write_bytes(TDIR "/saelens2/cfg.json", cj, strlen(cj));
        res = lsae_model_load_saelens(TDIR "/saelens2", NULL, &m2);
        CHECKF(res == LSAE_UNSUPPORTED && msg_has("apply_b_dec_to_input"), "%s", lsae_last_error());
        cj = "{\"architecture\": \"topk\", \"d_in\": 10, \"d_sae\": 40, \"k\": 5, \"normalize_activations\": \"expected_average_only_in\"}";
        write_bytes(TDIR "/saelens2/cfg.json", cj, strlen(cj));
        res = lsae_model_load_saelens(TDIR "/saelens2", NULL, &m2);
        CHECKF(res == LSAE_UNSUPPORTED && msg_has("expected_average_only_in"), "%s", lsae_last_error());
        /* an all-ones scaling_factor (older SAELens) is accepted, another one is not */
        {
            lsae__st_out t5[5];
            float sf[40];
            for (i = 0; i < L; ++i) sf[i] = 1.0f;
            memcpy(t5, ts, sizeof ts);
            t5[4].name = "scaling_factor"; t5[4].ndim = 1; t5[4].shape[0] = L; t5[4].data = sf;
            cj = "{\"architecture\": \"topk\", \"d_in\": 10, \"d_sae\": 40, \"k\": 5}";
            write_bytes(TDIR "/saelens2/cfg.json", cj, strlen(cj));
            OK(st_write(TDIR "/saelens2/sae_weights.safetensors", t5, 5, NULL));
            OK(lsae_model_load_saelens(TDIR "/saelens2", NULL, &m2));
            lsae_model_free(m2);
            m2 = NULL;
            sf[3] = 2.0f;
            OK(st_write(TDIR "/saelens2/sae_weights.safetensors", t5, 5, NULL));
            res = lsae_model_load_saelens(TDIR "/saelens2", NULL, &m2);
            CHECKF(res == LSAE_UNSUPPORTED && msg_has("scaling_factor[3]"), "%s", lsae_last_error());
            OK(st_write(TDIR "/saelens2/sae_weights.safetensors", ts, 4, NULL));
        }
        cj = "{\"architecture\": \"topk\", \"d_in\": 10, \"d_sae\": 41, \"k\": 5}";
        write_bytes(TDIR "/saelens2/cfg.json", cj, strlen(cj));
        res = lsae_model_load_saelens(TDIR "/saelens2", NULL, &m2);
        CHECKF(res == LSAE_BAD_FILE && msg_has("W_enc") && msg_has("wrong shape"), "%s", lsae_last_error());
    }
    lsae_model_free(m);
}

/* an allocator that counts, to prove every byte is returned */
/* ----------------------------------------------- SAE types: files, encode */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static size_t read_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n = 0;
    if (f) { n = fread(buf, 1, cap - 1, f); fclose(f); }
    buf[n] = 0;
    return n;
}

/* z [rows, L] = ReLU(W_enc (x - b_dec) + b_enc) in double: the brute-force
   reference the encodes are checked against */
static void ref_z(const lsae_model *m, const float *x, size_t rows, double *z)
{
    size_t d = lsae_model_d_in(m), L = lsae_model_num_latents(m), r, l, j;
    float *We = (float *)malloc(L * d * sizeof(float)), *be = (float *)malloc(L * sizeof(float)), *bd = (float *)malloc(d * sizeof(float));
    lsae_model_get_weights(m, We, be, NULL, bd);
    for (r = 0; r < rows; ++r)
        for (l = 0; l < L; ++l) {
            double s = be[l];
            for (j = 0; j < d; ++j) s += (double)We[l * d + j] * ((double)x[r * d + j] - bd[j]);
            z[r * L + l] = s > 0 ? s : 0;
        }
    free(We); free(be); free(bd);
}

/* latents of row z [L] with z > 0 and z >= theta (theta < 0: every one with
   z > 0), best first, ties to the lower index: their count */
static size_t ref_keep(const double *z, size_t L, double theta, int32_t *idx)
{
    size_t n = 0, a, b;
    for (a = 0; a < L; ++a) if (z[a] > 0 && z[a] >= theta) idx[n++] = (int32_t)a;
    for (a = 1; a < n; ++a) /* insertion sort, value descending */
        for (b = a; b > 0 && (z[idx[b]] > z[idx[b - 1]] || (z[idx[b]] == z[idx[b - 1]] && idx[b] < idx[b - 1])); --b) {
            int32_t t = idx[b]; idx[b] = idx[b - 1]; idx[b - 1] = t;
        }
    return n;
}

static void test_sae_types(void)
{
    enum { D = 12, LL = 48, K = 5, R = 40 };
    lsae_config c = lsae_config_default(D);
    lsae_model *m = NULL, *m2 = NULL, *mt = NULL;
    static float x[R * D], acts[R * LL], xh[R * D], xr[R * LL], ta[R * LL];
    static int32_t idx[R * LL], ti[R * LL], want[LL], idx2[R * LL];
    static size_t cnt[R];
    static double z[R * LL], sorted[R * LL];
    static char text[8192];
    double theta = 0;
    size_t r, q, n, need = 0, most = 0, i;
    lsae_result res;
    tu_seed(77);
    for (i = 0; i < R * D; ++i) x[i] = (float)tu_normal();
    c.num_latents = LL;
    c.k = K;
    c.sae_type = LSAE_SAE_BATCHTOPK;
    OK(lsae_model_create(&c, NULL, &m));
    {
        /* a positive b_enc, so that rows keep many latents */
        float be[LL];
        for (i = 0; i < LL; ++i) be[i] = (float)(0.3 * tu_uniform());
        OK(lsae_model_set_weights(m, NULL, be, NULL, NULL));
    }
    ref_z(m, x, R, z);
    /* theta in the middle of a wide gap between two of the batch's values
       near its 70th percentile, so float32 and double agree on every pick */
    {
        size_t nz = 0, best = 0;
        double gap = -1;
        for (i = 0; i < R * LL; ++i) if (z[i] > 0) sorted[nz++] = z[i];
        qsort(sorted, nz, sizeof(double), cmp_double);
        for (i = nz * 6 / 10; i + 1 < nz * 8 / 10; ++i)
            if (sorted[i + 1] - sorted[i] > gap) { gap = sorted[i + 1] - sorted[i]; best = i; }
        theta = 0.5 * (sorted[best] + sorted[best + 1]);
        CHECK(gap > 1e-5);
    }
    CHECK(lsae_model_set_batchtopk_threshold(m, -1.0f) == LSAE_INVALID_ARGS);
    CHECK(lsae_model_set_batchtopk_threshold(m, (float)NAN) == LSAE_INVALID_ARGS);
    OK(lsae_model_set_batchtopk_threshold(m, (float)theta));
    theta = lsae_model_batchtopk_threshold(m);
    CHECK(lsae_model_encode_k(m) == K);

    /* uncapped: every z >= theta, against brute force */
    OK(lsae_model_encode_sparse(m, x, R, LL, acts, idx, cnt, &need));
    for (r = 0; r < R; ++r) {
        n = ref_keep(z + r * LL, LL, theta, want);
        if (n > most) most = n;
        CHECKF(cnt[r] == n, "row %zu keeps %zu, brute force %zu", r, cnt[r], n);
        for (q = 0; q < n && q < cnt[r]; ++q) {
            CHECKF(idx[r * LL + q] == want[q], "row %zu slot %zu: latent %d, brute force %d", r, q, (int)idx[r * LL + q], (int)want[q]);
            NEAR(acts[r * LL + q], z[r * LL + want[q]], 1e-5);
        }
    }
    CHECK(need == most && most > K); /* some row keeps more than k: the point of BatchTopK */
    /* decode_sparse against the double reconstruction */
    OK(lsae_model_decode_sparse(m, acts, idx, cnt, LL, R, xh));
    {
        float Wd[LL * D], bd[D];
        OK(lsae_model_get_weights(m, NULL, NULL, Wd, bd));
        for (r = 0; r < R; ++r)
            for (i = 0; i < D; ++i) {
                double s = bd[i];
                n = ref_keep(z + r * LL, LL, theta, want);
                for (q = 0; q < n; ++q) s += z[r * LL + want[q]] * Wd[want[q] * D + i];
                NEAR(xh[r * D + i], s, 1e-4);
            }
    }
    /* truncation: capacity 3 keeps each row's best 3, says how many were needed */
    need = 0;
    res = lsae_model_encode_sparse(m, x, R, 3, acts, idx, cnt, &need);
    CHECKF(res == LSAE_TRUNCATED && need == most && msg_has("capacity"), "%s %zu: %s", lsae_result_string(res), need, lsae_last_error());
    for (r = 0; r < R; ++r) {
        n = ref_keep(z + r * LL, LL, theta, want);
        CHECK(cnt[r] == (n < 3 ? n : 3));
        for (q = 0; q < cnt[r]; ++q) CHECK(idx[r * 3 + q] == want[q]);
    }
    /* capacity exactly the largest count: no truncation */
    OK(lsae_model_encode_sparse(m, x, R, most, acts, idx, cnt, &need));
    CHECK(need == most);
    /* the fixed-k encode refuses the uncapped model and names the way out */
    CHECK(lsae_model_encode(m, x, R, 0, ta, ti) == LSAE_UNSUPPORTED && msg_has("lsae_model_encode_sparse") && msg_has("batchtopk"));

    /* the row cap: threshold, then the best k; padding at 0 where the plain
       top k would have its indices */
    c.batchtopk_row_cap = 1;
    OK(lsae_model_create(&c, NULL, &m2));
    {
        float We[LL * D], be[LL], Wd[LL * D], bd[D];
        OK(lsae_model_get_weights(m, We, be, Wd, bd));
        OK(lsae_model_set_weights(m2, We, be, Wd, bd));
        c.sae_type = LSAE_SAE_TOPK;
        c.batchtopk_row_cap = 0;
        OK(lsae_model_create(&c, NULL, &mt));
        OK(lsae_model_set_weights(mt, We, be, Wd, bd));
    }
    OK(lsae_model_set_batchtopk_threshold(m2, (float)theta));
    CHECK(lsae_model_set_batchtopk_threshold(mt, 1.0f) == LSAE_INVALID_ARGS && msg_has("topk"));
    OK(lsae_model_encode(m2, x, R, 0, ta, ti));
    OK(lsae_model_encode(mt, x, R, 0, acts, idx));
    OK(lsae_model_encode_sparse(m2, x, R, K, xr, idx2, cnt, &need));
    CHECK(need <= K);
    for (r = 0; r < R; ++r) {
        int32_t w2[LL];
        n = ref_keep(z + r * LL, LL, theta, w2);
        if (n > K) n = K;
        CHECK(cnt[r] == n);
        for (q = 0; q < K; ++q) {
            CHECK(ti[r * K + q] == idx[r * K + q]); /* the plain top k's indices, padding included */
            if (q < n) { CHECK(ti[r * K + q] == w2[q] && ta[r * K + q] == xr[r * K + q]); NEAR(ta[r * K + q], z[r * LL + w2[q]], 1e-5); }
            else CHECK(ta[r * K + q] == 0.0f);
        }
    }
    /* TopK: encode_sparse is the fixed-k encode */
    OK(lsae_model_encode_sparse(mt, x, R, K, xr, idx2, cnt, &need));
    CHECK(need == K && cnt[0] == K && memcmp(xr, acts, sizeof(float) * R * K) == 0);
    CHECK(lsae_model_encode_sparse(mt, x, R, K - 1, xr, idx2, cnt, &need) == LSAE_TRUNCATED && need == K);

    /* files: a TopK model without k_anneal writes cfg.json as before */
    OK(lsae_model_save(mt, TDIR "/types_topk"));
    read_text(TDIR "/types_topk/cfg.json", text, sizeof text);
    CHECKF(strcmp(text, "{\"expansion_factor\": 4, \"normalize_decoder\": true, \"num_latents\": 48, \"k\": 5, \"multi_topk\": false, \"d_in\": 12}\n") == 0, "%s", text);
    lsae_model_free(mt);
    /* BatchTopK: sae_type as latent-sae's serialiser, theta in the tensor and in cfg.json */
    OK(lsae_model_save(m, TDIR "/types_btk"));
    read_text(TDIR "/types_btk/cfg.json", text, sizeof text);
    CHECKF(strstr(text, "\"sae_type\": \"BATCHTOPK\"") && strstr(text, "\"batchtopk_row_cap\": false") && strstr(text, "\"batchtopk_threshold_beta\": 0.999"), "%s", text);
    read_text(TDIR "/types_btk/sae.safetensors", text, sizeof text);
    CHECKF(strstr(text + 8, "\"batchtopk_threshold\":{\"dtype\":\"F32\",\"shape\":[]"), "%s", text + 8);
    OK(lsae_model_load(TDIR "/types_btk", NULL, &mt));
    CHECK(lsae_model_config(mt)->sae_type == LSAE_SAE_BATCHTOPK && lsae_model_config(mt)->batchtopk_row_cap == 0 &&
          lsae_model_batchtopk_threshold(mt) == (float)theta);
    lsae_model_free(mt);
    {
        /* the tensor wins over cfg.json's number; latent-sae's file (no
           batchtopk_row_cap) loads capped */
        const char *lsae_cfg = "{\"sae_type\": \"BATCHTOPK\", \"expansion_factor\": 4, \"normalize_decoder\": true, \"num_latents\": 48, \"k\": 5, "
                               "\"multi_topk\": false, \"batchtopk_threshold\": 0.0, \"batchtopk_threshold_beta\": 0.999, \"k_anneal\": true, "
                               "\"k_anneal_start\": 0, \"k_anneal_pct\": 0.25, \"matryoshka_sizes\": \"\", \"d_in\": 12}";
        write_bytes(TDIR "/types_btk/cfg.json", lsae_cfg, strlen(lsae_cfg));
        OK(lsae_model_load(TDIR "/types_btk", NULL, &mt));
        CHECK(lsae_model_batchtopk_threshold(mt) == (float)theta && lsae_model_config(mt)->batchtopk_row_cap == 1);
        CHECK(lsae_model_config(mt)->k_anneal == 1 && lsae_model_config(mt)->k_anneal_pct == 0.25);
        OK(lsae_model_encode(mt, x, R, 0, xr, idx2));
        CHECK(memcmp(xr, ta, sizeof(float) * R * K) == 0 && memcmp(idx2, ti, sizeof(int32_t) * R * K) == 0);
        lsae_model_free(mt);
    }
    /* a checkpoint keeps theta */
    {
        lsae_trainer *t = NULL;
        OK(lsae_model_set_batchtopk_threshold(m2, 0.125f));
        c.sae_type = LSAE_SAE_BATCHTOPK;
        c.batchtopk_row_cap = 1;
        c.total_steps = 10;
        if (lsae_trainer_create(m2, &c, &t) == LSAE_OK) {
            RM_CKPT(TDIR "/types_ckpt");
            OK(lsae_checkpoint_save(TDIR "/types_ckpt", m2, t, NULL, 0));
            OK(lsae_model_set_batchtopk_threshold(m2, 0.5f));
            OK(lsae_checkpoint_load(TDIR "/types_ckpt", m2, t, NULL, 0, NULL));
            CHECK(lsae_model_batchtopk_threshold(m2) == 0.125f);
            lsae_trainer_free(t);
        } else {
            printf("test_sae_types: the trainer does not take batchtopk yet (%s); checkpoint theta not checked\n", lsae_last_error());
        }
    }
    lsae_model_free(m2);
    lsae_model_free(m);

    /* Matryoshka: per-level encodes its last k; the lists as comma strings */
    c = lsae_config_default(D);
    c.num_latents = LL;
    c.k = K;
    c.sae_type = LSAE_SAE_MATRYOSHKA;
    c.matryoshka_form = LSAE_MATRYOSHKA_PER_LEVEL;
    c.auxk_alpha = 0;
    c.matryoshka_levels = 3;
    c.matryoshka_sizes[0] = 8; c.matryoshka_sizes[1] = 24; c.matryoshka_sizes[2] = LL;
    c.matryoshka_ks[0] = 2; c.matryoshka_ks[1] = 4; c.matryoshka_ks[2] = 7;
    c.matryoshka_loss_weights[0] = 0.5; c.matryoshka_loss_weights[1] = 1; c.matryoshka_loss_weights[2] = 2;
    c.matryoshka_use_batchtopk = 1;
    OK(lsae_model_create(&c, NULL, &m));
    CHECK(lsae_model_encode_k(m) == 7);
    OK(lsae_model_set_batchtopk_threshold(m, 1e9f)); /* not used by the per-level encode */
    OK(lsae_model_encode(m, x, R, 0, ta, ti)); /* 7 > K: ta [R, 7] fits in acts */
    OK(lsae_model_encode_sparse(m, x, R, 7, acts, idx, cnt, &need));
    CHECK(need == 7 && cnt[R - 1] == 7);
    ref_z(m, x, 1, z);
    n = ref_keep(z, LL, -1, want);
    for (q = 0; q < 7 && q < n; ++q) CHECK(idx[q] == want[q]);
    OK(lsae_model_save(m, TDIR "/types_mat"));
    read_text(TDIR "/types_mat/cfg.json", text, sizeof text);
    CHECKF(strstr(text, "\"sae_type\": \"MATRYOSHKA\"") && strstr(text, "\"matryoshka_sizes\": \"8,24,48\"") && strstr(text, "\"matryoshka_ks\": \"2,4,7\"") &&
           strstr(text, "\"matryoshka_loss_weights\": \"0.5,1,2\"") && strstr(text, "\"matryoshka_form\": \"per_level\"") &&
           strstr(text, "\"matryoshka_use_batchtopk\": true"), "%s", text);
    OK(lsae_model_load(TDIR "/types_mat", NULL, &m2));
    {
        const lsae_config *c2 = lsae_model_config(m2);
        CHECK(c2->sae_type == LSAE_SAE_MATRYOSHKA && c2->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL && c2->matryoshka_levels == 3 &&
              c2->matryoshka_sizes[1] == 24 && c2->matryoshka_ks[2] == 7 && c2->matryoshka_loss_weights[0] == 0.5 && c2->matryoshka_use_batchtopk &&
              lsae_model_batchtopk_threshold(m2) == 1e9f);
    }
    lsae_model_free(m2);
    lsae_model_free(m);
    /* nested: one k, written as k at every level for latent-sae; no weights = "" */
    c.matryoshka_form = LSAE_MATRYOSHKA_NESTED;
    c.matryoshka_ks[0] = c.matryoshka_ks[1] = c.matryoshka_ks[2] = 0;
    c.matryoshka_loss_weights[0] = c.matryoshka_loss_weights[1] = c.matryoshka_loss_weights[2] = 0;
    c.matryoshka_use_batchtopk = 0;
    c.k_anneal = 1;
    c.k_anneal_start = 20;
    OK(lsae_model_create(&c, NULL, &m));
    CHECK(lsae_model_encode_k(m) == K);
    CHECK(lsae_model_set_batchtopk_threshold(m, 1.0f) == LSAE_INVALID_ARGS);
    OK(lsae_model_save(m, TDIR "/types_nest"));
    read_text(TDIR "/types_nest/cfg.json", text, sizeof text);
    CHECKF(strstr(text, "\"matryoshka_ks\": \"5,5,5\"") && strstr(text, "\"matryoshka_loss_weights\": \"\"") && strstr(text, "\"matryoshka_form\": \"nested\"") &&
           strstr(text, "\"k_anneal\": true, \"k_anneal_start\": 20") && !strstr(text, "batchtopk_threshold"), "%s", text);
    read_text(TDIR "/types_nest/sae.safetensors", text, sizeof text);
    CHECK(!strstr(text + 8, "batchtopk_threshold"));
    OK(lsae_model_load(TDIR "/types_nest", NULL, &m2));
    CHECK(lsae_model_config(m2)->matryoshka_form == LSAE_MATRYOSHKA_NESTED && lsae_model_config(m2)->k_anneal_start == 20 && lsae_model_config(m2)->auxk_alpha > 0);
    lsae_model_free(m2);
    lsae_model_free(m);

    /* refusals name the type; a matryoshka file without its lists is malformed */
    {
        static const struct { const char *json; lsae_result code; const char *msg; } bad[] = {
            { "{\"d_in\": 8, \"k\": 2, \"sae_type\": \"LISTA\"}", LSAE_UNSUPPORTED, "lista" },
            { "{\"d_in\": 8, \"k\": 2, \"sae_type\": \"gated\"}", LSAE_UNSUPPORTED, "gated" },
            { "{\"d_in\": 8, \"k\": 2, \"sae_type\": \"JumpReLU\"}", LSAE_UNSUPPORTED, "jumprelu" },
            { "{\"d_in\": 8, \"k\": 2, \"sae_type\": \"topk_v9\"}", LSAE_UNSUPPORTED, "topk_v9" },
            { "{\"d_in\": 8, \"k\": 2, \"num_latents\": 16, \"sae_type\": \"MATRYOSHKA\"}", LSAE_BAD_FILE, "matryoshka_sizes" },
            { "{\"d_in\": 8, \"k\": 2, \"num_latents\": 16, \"sae_type\": \"MATRYOSHKA\", \"matryoshka_sizes\": \"4,16\", \"matryoshka_ks\": \"2\"}", LSAE_BAD_FILE, "matryoshka_ks" },
            { "{\"d_in\": 8, \"k\": 2, \"num_latents\": 16, \"sae_type\": \"MATRYOSHKA\", \"matryoshka_sizes\": \"4,x\", \"matryoshka_ks\": \"2,2\"}", LSAE_BAD_FILE, "matryoshka_sizes" },
            { "{\"d_in\": 8, \"k\": 2, \"num_latents\": 16, \"sae_type\": \"MATRYOSHKA\", \"matryoshka_sizes\": \"4,15\", \"matryoshka_ks\": \"2,2\"}", LSAE_INVALID_ARGS, "last matryoshka size" },
        };
        for (i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
            res = lsae_config_from_json(bad[i].json, strlen(bad[i].json), &c);
            CHECKF(res == bad[i].code && msg_has(bad[i].msg), "%s -> %s: %s", bad[i].json, lsae_result_string(res), lsae_last_error());
        }
        /* latent-sae's matryoshka file: per-level, no AuxK, the enum in lower case too */
        {
            const char *lm = "{\"sae_type\": \"matryoshka\", \"num_latents\": 16, \"k\": 3, \"matryoshka_sizes\": \"4, 16\", \"matryoshka_ks\": \"2,3\", "
                             "\"matryoshka_loss_weights\": \"\", \"matryoshka_use_batchtopk\": false, \"d_in\": 8}";
            OK(lsae_config_from_json(lm, strlen(lm), &c));
            CHECK(c.sae_type == LSAE_SAE_MATRYOSHKA && c.matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL && c.auxk_alpha == 0 &&
                  c.matryoshka_levels == 2 && c.matryoshka_sizes[0] == 4 && c.matryoshka_ks[1] == 3 && c.matryoshka_loss_weights[1] == 0);
        }
    }
    CHECK(strstr(lsae_result_string(LSAE_TRUNCATED), "LSAE_TRUNCATED") != NULL);
}

static long live_allocs = 0;
static void *count_malloc(size_t n, void *u) { (void)u; ++live_allocs; return malloc(n); }
static void count_free(void *p, void *u) { (void)u; if (p) --live_allocs; free(p); }

static void test_allocator(void)
{
    lsae_allocator a;
    lsae_dataset *ds = NULL;
    lsae_loader *ld = NULL;
    lsae_loader_options o = lsae_loader_options_default(16);
    const float *b;
    size_t n;
    a.user = NULL;
    a.malloc_fn = count_malloc;
    a.free_fn = count_free;
    make_npy_shard(TDIR "/alloc.npy", 0, 100, 4);
    OK(lsae_dataset_open(TDIR "/alloc.npy", NULL, &a, &ds));
    OK(lsae_loader_create(ds, &o, &ld));
    OK(lsae_loader_next(ld, &b, &n));
    CHECK(n == 16 && live_allocs > 0);
    lsae_loader_free(ld);
    lsae_dataset_close(ds);
    CHECKF(live_allocs == 0, "%ld allocations not freed", live_allocs);
}

/* ------------------------------------------- the loader on several ranks */

/* lsae_loader_set_comm: P ranks, each a thread with its own dataset handle
   and loader, summing through a fake communicator (the sums of whole
   numbers the loader makes are exact in any order). Rank r's batch must be
   rows [n r / P, n (r + 1) / P) of the one-process loader's batch of n, the
   same bytes, with the same rows_read after every batch and the same
   rows_dropped; the ranks together read only about what they return. */
typedef struct rank_world {
    int P;
    double acc[4096], res[4096];
    int arrived, leaving, fail_at, calls;
#ifdef LSAE__HAVE_THREADS
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
} rank_world;

typedef struct rank_arg {
    rank_world *w;
    int rank;
    const char *path;
    lsae_loader_options o;
    uint64_t seek_to;
    run_log log;
    lsae_result err;
} rank_arg;

/* one rank of a world of one thread: its sums fail at call fail_at */
static lsae_result failing_sum(void *ctx, double *buf, size_t n)
{
    rank_world *w = (rank_world *)ctx;
    (void)buf;
    (void)n;
    return ++w->calls == w->fail_at ? LSAE_IO_ERROR : LSAE_OK;
}

#ifdef LSAE__HAVE_THREADS
static lsae_result world_sum(void *ctx, double *buf, size_t n)
{
    rank_arg *a = (rank_arg *)ctx;
    rank_world *w = a->w;
    size_t i;
    if (n > 4096) return LSAE_ERROR;
    pthread_mutex_lock(&w->mu);
    while (w->leaving > 0) pthread_cond_wait(&w->cv, &w->mu); /* the last round's results are still being taken */
    if (w->arrived == 0)
        for (i = 0; i < n; ++i) w->acc[i] = 0;
    for (i = 0; i < n; ++i) w->acc[i] += buf[i];
    if (++w->arrived == w->P) {
        memcpy(w->res, w->acc, n * sizeof(double));
        w->arrived = 0;
        w->leaving = w->P;
        pthread_cond_broadcast(&w->cv);
    } else {
        while (w->leaving == 0) pthread_cond_wait(&w->cv, &w->mu);
    }
    memcpy(buf, w->res, n * sizeof(double));
    if (--w->leaving == 0) pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return LSAE_OK;
}

static void *rank_main(void *p)
{
    rank_arg *a = (rank_arg *)p;
    lsae_dataset *ds = NULL;
    lsae_loader *ld = NULL;
    lsae_comm c;
    size_t d, cap = 4096 * 8;
    memset(&a->log, 0, sizeof a->log);
    memset(&c, 0, sizeof c);
    c.rank = a->rank;
    c.size = a->w->P;
    c.ctx = a;
    c.sum_f64 = world_sum;
    if ((a->err = lsae_dataset_open(a->path, NULL, NULL, &ds)) != LSAE_OK) return NULL;
    d = lsae_dataset_d_in(ds);
    a->log.rows = (float *)malloc(cap * d * sizeof(float));
    if ((a->err = lsae_loader_create(ds, &a->o, &ld)) != LSAE_OK) { lsae_dataset_close(ds); return NULL; }
    if (a->seek_to && (a->err = lsae_loader_seek(ld, a->seek_to)) != LSAE_OK) goto done;
    if ((a->err = lsae_loader_set_comm(ld, &c)) != LSAE_OK) goto done;
    for (;;) {
        const float *b;
        size_t n;
        lsae_loader_stats st;
        if ((a->err = lsae_loader_next(ld, &b, &n)) != LSAE_OK) break;
        lsae_loader_get_stats(ld, &st);
        /* the end: no batch counted (a rank's slice of a real batch may be empty) */
        if (st.batches == a->log.nb || a->log.nb >= 4096 || a->log.nrows + n > cap) break;
        memcpy(a->log.rows + a->log.nrows * d, b, n * d * sizeof(float));
        a->log.nrows += n;
        a->log.pos[a->log.nb] = st.rows_read;
        a->log.size[a->log.nb++] = n;
    }
done:
    lsae_loader_get_stats(ld, &a->log.st);
    lsae_loader_free(ld);
    lsae_dataset_close(ds);
    return NULL;
}
#endif

/* P ranks against the one-process loader on the dataset at path */
static void check_ranks(const char *what, const char *path, const lsae_loader_options *o, uint64_t seek_to, int P)
{
#ifdef LSAE__HAVE_THREADS
    rank_world w;
    rank_arg a[4];
    pthread_t th[4];
    run_log ref;
    lsae_dataset *ds = NULL;
    size_t d, bi, r, at[4] = { 0, 0, 0, 0 }, refat = 0;
    uint64_t loaded = 0;
    int ok = 1;
    memset(&w, 0, sizeof w);
    w.P = P;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    OK(lsae_dataset_open(path, NULL, NULL, &ds));
    if (!ds) return;
    d = lsae_dataset_d_in(ds);
    run_loader(ds, o, seek_to, &ref, 4096 * 8);
    lsae_dataset_close(ds);
    for (r = 0; r < (size_t)P; ++r) {
        memset(&a[r], 0, sizeof a[r]);
        a[r].w = &w;
        a[r].rank = (int)r;
        a[r].path = path;
        a[r].o = *o;
        a[r].seek_to = seek_to;
        CHECK(pthread_create(&th[r], NULL, rank_main, &a[r]) == 0);
    }
    for (r = 0; r < (size_t)P; ++r) pthread_join(th[r], NULL);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    for (r = 0; r < (size_t)P; ++r) {
        CHECKF(a[r].err == LSAE_OK, "%s, rank %zu of %d: %s", what, r, P, lsae_result_string(a[r].err));
        CHECKF(a[r].log.nb == ref.nb, "%s, rank %zu of %d: %zu batches, one process %zu", what, r, P, a[r].log.nb, ref.nb);
        CHECKF(a[r].log.st.rows_read == ref.st.rows_read && a[r].log.st.rows_dropped == ref.st.rows_dropped && a[r].log.st.batches == ref.st.batches,
               "%s, rank %zu of %d: rows_read %llu dropped %llu, one process %llu %llu", what, r, P, (unsigned long long)a[r].log.st.rows_read,
               (unsigned long long)a[r].log.st.rows_dropped, (unsigned long long)ref.st.rows_read, (unsigned long long)ref.st.rows_dropped);
        if (a[r].log.nb != ref.nb) ok = 0;
        loaded += a[r].log.st.rows_loaded;
    }
    for (bi = 0; ok && bi < ref.nb; ++bi) {
        size_t n = ref.size[bi];
        for (r = 0; r < (size_t)P; ++r) {
            size_t lo = n * r / (size_t)P, hi = n * (r + 1) / (size_t)P;
            if (a[r].log.size[bi] != hi - lo || a[r].log.pos[bi] != ref.pos[bi] ||
                memcmp(a[r].log.rows + at[r] * d, ref.rows + (refat + lo) * d, (hi - lo) * d * sizeof(float)) != 0) {
                CHECKF(0, "%s: batch %zu, rank %zu of %d: %zu rows at %llu, not rows %zu..%zu of the one-process batch at %llu", what, bi, r, P,
                       a[r].log.size[bi], (unsigned long long)a[r].log.pos[bi], lo, hi, (unsigned long long)ref.pos[bi]);
                ok = 0;
                break;
            }
            at[r] += hi - lo;
        }
        refat += n;
    }
    if (ok) CHECK(1);
    /* what the ranks read: the rows they return, the rows checked for
       NaN/Inf, and again the returned rows another rank had checked */
    /* what the ranks read: every position once (checked for NaN/Inf by one
       rank), plus, in a batch with k NaN/Inf rows, at most 2 k rows of each
       slice that another rank had checked; without such rows exactly once */
    {
        uint64_t once = ref.st.rows_read - seek_to;
        CHECKF(loaded >= once && loaded <= once + 2 * (uint64_t)P * ref.st.rows_dropped && (ref.st.rows_dropped || loaded == once),
               "%s, %d ranks: read %llu rows together, for %llu positions (%llu dropped)", what, P, (unsigned long long)loaded,
               (unsigned long long)once, (unsigned long long)ref.st.rows_dropped);
    }
    for (r = 0; r < (size_t)P; ++r) free(a[r].log.rows);
    free(ref.rows);
#else
    (void)what; (void)path; (void)o; (void)seek_to; (void)P;
#endif
}

static void test_loader_ranks(void)
{
    const size_t n = 1000, d = 5;
    uint64_t nans[40];
    lsae_loader_options o;
    lsae_dataset *ds;
    lsae_loader *ld = NULL;
    lsae_comm c;
    rank_world w;
    size_t i;
    int P;
    for (i = 0; i < 40; ++i) nans[i] = (i * 7919u) % n;         /* scattered */
    nans[38] = 400; nans[39] = 401;                              /* and a pair */
    ds = make_dataset("ranks_nan", n, d, 3, 2, nans, 40);        /* f32, every other shard big-endian (read, not mapped) */
    lsae_dataset_close(ds);
    ds = make_dataset("ranks_f16", n, d, 2, 1, nans, 10);
    lsae_dataset_close(ds);
    ds = make_dataset("ranks", n, d, 4, 0, NULL, 0);
    for (P = 2; P <= 4; ++P) {
        o = lsae_loader_options_default(50);
        o.seed = 9;
        o.window_rows = 128;
        o.epochs = 3;
        check_ranks("NaN rows, 3 epochs, window 128", TDIR "/ranks_nan", &o, 0, P);
        check_ranks("NaN rows, resumed at 777", TDIR "/ranks_nan", &o, 777, P);
        o.batch_size = 301;                                      /* batches across several windows */
        o.drop_last = 0;
        o.max_rows = 2500;
        check_ranks("NaN rows, batch 301 over windows of 128, short last batch", TDIR "/ranks_nan", &o, 0, P);
        o = lsae_loader_options_default(37);
        o.seed = 4;
        check_ranks("float16 with NaN rows", TDIR "/ranks_f16", &o, 0, P);
        o.shuffle = 0;
        o.epochs = 2;
        o.drop_last = 0;
        check_ranks("no NaN rows, no shuffle", TDIR "/ranks", &o, 0, P);
        o.batch_size = 2;                                        /* fewer rows than ranks: some slices are empty */
        o.max_rows = 41;
        check_ranks("batch of 2", TDIR "/ranks", &o, 0, P);
    }
    /* the argument checks, and a failed sum leaves the loader where it was */
    if (!ds) return;
    o = lsae_loader_options_default(16);
    OK(lsae_loader_create(ds, &o, &ld));
    if (!ld) return;
    memset(&c, 0, sizeof c);
    memset(&w, 0, sizeof w);
    c.rank = 2;
    c.size = 2;
    c.ctx = &w;
    CHECK(lsae_loader_set_comm(ld, &c) == LSAE_INVALID_ARGS && msg_has("rank 2 of size 2"));
    c.rank = 1;
    CHECK(lsae_loader_set_comm(ld, &c) == LSAE_INVALID_ARGS && msg_has("sum_f64"));
    CHECK(lsae_loader_set_comm(NULL, &c) == LSAE_INVALID_ARGS);
    c.sum_f64 = failing_sum;
    w.fail_at = 2;
    OK(lsae_loader_set_comm(ld, &c));
    {
        /* rank 1 of 2 alone (its sums add nothing): the second half of each
           of the one-process loader's batches of 16 */
        const float *b, *rb;
        size_t rows, rrows;
        lsae_loader_stats st;
        lsae_loader *one = NULL;
        OK(lsae_loader_create(ds, &o, &one));
        if (!one) return;
        OK(lsae_loader_next(ld, &b, &rows));
        OK(lsae_loader_next(one, &rb, &rrows));
        CHECK(rows == 8 && rrows == 16 && memcmp(b, rb + 8 * d, 8 * d * sizeof(float)) == 0);
        CHECK(lsae_loader_next(ld, &b, &rows) == LSAE_ERROR && rows == 0 && msg_has("summing"));
        lsae_loader_get_stats(ld, &st);
        CHECK(st.rows_read == 16 && st.batches == 1 && st.rows_loaded == 8);
        OK(lsae_loader_next(ld, &b, &rows));
        OK(lsae_loader_next(one, &rb, &rrows));
        lsae_loader_get_stats(ld, &st);
        CHECK(rows == 8 && st.rows_read == 32 && st.rows_loaded == 16 && memcmp(b, rb + 8 * d, 8 * d * sizeof(float)) == 0);
        OK(lsae_loader_set_comm(ld, NULL));                      /* back to whole batches */
        OK(lsae_loader_next(ld, &b, &rows));
        OK(lsae_loader_next(one, &rb, &rrows));
        lsae_loader_get_stats(ld, &st);
        CHECK(rows == 16 && st.rows_read == 48 && memcmp(b, rb, 16 * d * sizeof(float)) == 0 && st.rows_loaded == 16 + n);
        lsae_loader_free(one);
    }
    lsae_loader_free(ld);
    lsae_dataset_close(ds);
}

int main(int argc, char **argv)
{
#ifdef LSAE__POSIX
    if (argc > 1 && strcmp(argv[1], "--ckpt-saver") == 0) return ckpt_saver();
#endif
    (void)argc;
    (void)argv;
    tu_seed(77);
    lsae__mkdirs(TDIR);
    test_cfg_versions();
    test_model_extras();
    test_npy();
    test_raw();
    test_safetensors_data();
    test_safetensors_headers();
    test_torch_errors();
    test_directory();
    test_loader();
    test_loader_ranks();
    test_checkpoint_roundtrip();
    test_checkpoint_save_state();
    test_checkpoint_save_pieces();
    test_checkpoint_load_shard();
    test_model_load_shard();
    test_checkpoint_verify_shared();
    test_checkpoint_load_in_place();
    test_checkpoint_crash_windows();
#ifdef LSAE__POSIX
    test_checkpoint_kill9(argv[0]);
    test_hf();
#endif
    test_resume_bitexact();
    test_saelens();
    test_allocator();
    test_sae_types();
    return TEST_SUMMARY("test_files");
}
