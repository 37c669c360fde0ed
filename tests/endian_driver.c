/* Files across byte orders: make test-bigendian runs this once built for
   x86 and once for s390x (big-endian, under qemu-user), and compares.

     endian_driver write DIR     writes with the library: a model
                                 (DIR/model, latent-sae format), the same as
                                 SAELens (DIR/saelens), a checkpoint with a
                                 trainer state and a blob (DIR/ckpt); and by
                                 hand, byte by byte, datasets in every format
                                 and byte order the reader takes (DIR/data)
     endian_driver read DIR [PT] reads all of that back (and the torch file
                                 PT), checks every value it knows, and prints
                                 one line per item: name, count, digest

   Every value is built from integers by exact float operations, so both
   hosts hold the same numbers without computing anything that could round
   differently (no training step, no libm). The digest is lsae__hash over
   each float's bit pattern as a 4-byte little-endian word: the same numbers
   give the same digest on any host. What make test-bigendian requires:
   write's printed digests equal read's on the same host (a round trip),
   read prints the same lines on both hosts for the files of either, and the
   files written on the two hosts are byte for byte the same. Exit status 0
   when every check passed, 1 otherwise (the failures on stderr). */
#define _POSIX_C_SOURCE 200809L
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D 12
#define L 48 /* expansion 4 */
#define ROWS 5

static int failures = 0;

static void fail(const char *what)
{
    fprintf(stderr, "endian_driver: %s: %s\n", what, lsae_last_error());
    ++failures;
}

/* value i of stream s: a multiple of 1/64 in [-4, 4), exact in float32,
   float16 and bfloat16 (at most 8 significant bits) */
static float val(unsigned s, size_t i)
{
    uint64_t h = lsae__mix64((uint64_t)s * 1000003u + i);
    return (float)((int)(h % 512) - 256) / 64.0f;
}

static uint64_t digest(const float *x, size_t n)
{
    lsae__hash h;
    size_t i;
    lsae__hash_init(&h);
    for (i = 0; i < n; ++i) {
        uint32_t u;
        unsigned char le[4];
        memcpy(&u, &x[i], 4);
        lsae__put_le(le, u, 4);
        lsae__hash_update(&h, le, 4);
    }
    return lsae__hash_final(&h);
}

static void print_item(const char *name, const float *x, size_t n)
{
    printf("%-22s %6zu %016llx\n", name, n, (unsigned long long)digest(x, n));
}

/* the model's four tensors, then the trainer's state, as one array each */
static void model_values(float *w)
{
    size_t i;
    for (i = 0; i < 2 * L * D + L + D; ++i) w[i] = val(1, i);
}

static lsae_model *new_model(void)
{
    lsae_config c = lsae_config_default(D);
    lsae_model *m = NULL;
    c.k = 4;
    c.expansion_factor = L / D;
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK) { fail("lsae_model_create"); exit(1); }
    return m;
}

static lsae_trainer *new_trainer(lsae_model *m)
{
    lsae_config c = lsae_config_default(D);
    lsae_trainer *t = NULL;
    if (lsae_trainer_create(m, &c, &t) != LSAE_OK) { fail("lsae_trainer_create"); exit(1); }
    return t;
}

/* the trainer state as floats for the digest: step, b_dec_initialized and
   since_fired (small integers here, exact as floats), then the moments */
static size_t state_values(const lsae_trainer *t, float *out)
{
    const size_t P = 2 * L * D + L + D;
    lsae_trainer_state st;
    uint64_t since[L];
    float *mv = (float *)malloc(2 * P * sizeof(float));
    size_t i, n = 0;
    memset(&st, 0, sizeof st);
    st.since_fired = since;
    st.m_W_enc = mv; st.m_b_enc = mv + L * D; st.m_W_dec = mv + L * D + L; st.m_b_dec = mv + 2 * L * D + L;
    st.v_W_enc = mv + P; st.v_b_enc = mv + P + L * D; st.v_W_dec = mv + P + L * D + L; st.v_b_dec = mv + P + 2 * L * D + L;
    if (lsae_trainer_get_state(t, &st) != LSAE_OK) fail("lsae_trainer_get_state");
    out[n++] = (float)st.step;
    out[n++] = (float)st.b_dec_initialized;
    for (i = 0; i < L; ++i) out[n++] = (float)since[i];
    for (i = 0; i < 2 * P; ++i) out[n++] = mv[i];
    free(mv);
    return n;
}

static void set_state(lsae_trainer *t)
{
    const size_t P = 2 * L * D + L + D;
    lsae_trainer_state st;
    uint64_t since[L];
    float *mv = (float *)malloc(2 * P * sizeof(float));
    size_t i;
    for (i = 0; i < L; ++i) since[i] = 1000 + 37 * i;
    /* moments: v must be >= 0 */
    for (i = 0; i < P; ++i) { mv[i] = val(2, i) / 1024.0f; mv[P + i] = (val(3, i) + 4.0f) / 4096.0f; }
    st.step = 7;
    st.b_dec_initialized = 1;
    st.since_fired = since;
    st.m_W_enc = mv; st.m_b_enc = mv + L * D; st.m_W_dec = mv + L * D + L; st.m_b_dec = mv + 2 * L * D + L;
    st.v_W_enc = mv + P; st.v_b_enc = mv + P + L * D; st.v_W_dec = mv + P + L * D + L; st.v_b_dec = mv + P + 2 * L * D + L;
    if (lsae_trainer_set_state(t, &st) != LSAE_OK) fail("lsae_trainer_set_state");
    free(mv);
}

static const unsigned char BLOB[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 0xF0, 0x0D, 0xBE, 0xEF };

/* ------------------------------------------------------- hand-written data */

static FILE *open_w(const char *dir, const char *name)
{
    char p[1024];
    FILE *f;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (!(f = fopen(p, "wb"))) { fprintf(stderr, "endian_driver: cannot write %s\n", p); exit(1); }
    return f;
}

/* one number of `bytes` bytes, in the order given (the file's, never the host's) */
static void put(FILE *f, uint32_t v, int bytes, int big)
{
    int q;
    for (q = 0; q < bytes; ++q) fputc((int)((v >> (8 * (big ? bytes - 1 - q : q))) & 0xFF), f);
}

/* the ROWS x D dataset values (stream 4) in a storage type: 4 float32,
   2 float16, 3 bfloat16 (the top half of the float32: exact, values have 8
   significant bits) */
static uint32_t bits_as(float v, int type)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    if (type == 4) return u;
    if (type == 3) return u >> 16;
    {
        /* float16: every value is 0 or k/64 with |k| <= 256: exponent from 2^-6 to 2^2, normal */
        uint32_t sign = (u >> 16) & 0x8000u, e = (u >> 23) & 0xFFu, man = u & 0x7FFFFFu;
        if (e == 0) return sign;
        return sign | ((e - 112u) << 10) | (man >> 13);
    }
}

static void write_values(FILE *f, int type, int big)
{
    size_t i;
    for (i = 0; i < ROWS * D; ++i) put(f, bits_as(val(4, i), type), type == 4 ? 4 : 2, big);
}

static void write_npy(const char *dir, const char *name, const char *descr, int type, int big)
{
    char hdr[128];
    size_t hl;
    FILE *f = open_w(dir, name);
    snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%d, %d), }", descr, ROWS, D);
    hl = strlen(hdr);
    while ((10 + hl + 1) % 64) hdr[hl++] = ' ';
    hdr[hl++] = '\n';
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    put(f, (uint32_t)hl, 2, 0);
    fwrite(hdr, 1, hl, f);
    write_values(f, type, big);
    fclose(f);
}

static void write_safetensors(const char *dir, const char *name, const char *dtype, int type)
{
    char hdr[256];
    size_t hl, i;
    int n = snprintf(hdr, sizeof hdr, "{\"emb\":{\"dtype\":\"%s\",\"shape\":[%d,%d],\"data_offsets\":[0,%d]}}", dtype, ROWS, D,
                     ROWS * D * (type == 4 ? 4 : 2));
    FILE *f = open_w(dir, name);
    hl = (size_t)n;
    while (hl % 8) hdr[hl++] = ' ';
    for (i = 0; i < 8; ++i) fputc((int)(((uint64_t)hl >> (8 * i)) & 0xFF), f);
    fwrite(hdr, 1, hl, f);
    write_values(f, type, 0);
    fclose(f);
}

static void write_raw(const char *dir, const char *name, int type)
{
    FILE *f = open_w(dir, name);
    write_values(f, type, 0);
    fclose(f);
}

static const struct { const char *file; lsae_dtype raw; } DATA[] = {
    { "le_f4.npy", (lsae_dtype)0 }, { "be_f4.npy", (lsae_dtype)0 }, { "le_f2.npy", (lsae_dtype)0 }, { "be_f2.npy", (lsae_dtype)0 },
    { "f32.safetensors", (lsae_dtype)0 }, { "f16.safetensors", (lsae_dtype)0 }, { "bf16.safetensors", (lsae_dtype)0 },
    { "f32.raw", LSAE_DTYPE_F32 }, { "f16.raw", LSAE_DTYPE_F16 }, { "bf16.raw", LSAE_DTYPE_BF16 },
};

static int cmd_write(const char *dir)
{
    char p[1024];
    float w[2 * L * D + L + D], s[2 + L + 2 * (2 * L * D + L + D)];
    lsae_model *m = new_model();
    lsae_trainer *t;
    model_values(w);
    if (lsae_model_set_weights(m, w, w + L * D, w + L * D + L, w + 2 * L * D + L) != LSAE_OK) fail("lsae_model_set_weights");
    print_item("model", w, sizeof w / sizeof w[0]);
    snprintf(p, sizeof p, "%s/model", dir);
    if (lsae_model_save(m, p) != LSAE_OK) fail("lsae_model_save");
    snprintf(p, sizeof p, "%s/saelens", dir);
    if (lsae_model_save_saelens(m, p) != LSAE_OK) fail("lsae_model_save_saelens");
    t = new_trainer(m);
    set_state(t);
    print_item("checkpoint.state", s, state_values(t, s));
    snprintf(p, sizeof p, "%s/ckpt", dir);
    if (lsae_checkpoint_save(p, m, t, BLOB, sizeof BLOB) != LSAE_OK) fail("lsae_checkpoint_save");
    lsae_trainer_free(t);
    lsae_model_free(m);

    snprintf(p, sizeof p, "%s/data", dir);
    if (lsae__mkdirs(p) != LSAE_OK) fail("mkdir data");
    write_npy(p, "le_f4.npy", "<f4", 4, 0);
    write_npy(p, "be_f4.npy", ">f4", 4, 1);
    write_npy(p, "le_f2.npy", "<f2", 2, 0);
    write_npy(p, "be_f2.npy", ">f2", 2, 1);
    write_safetensors(p, "f32.safetensors", "F32", 4);
    write_safetensors(p, "f16.safetensors", "F16", 2);
    write_safetensors(p, "bf16.safetensors", "BF16", 3);
    write_raw(p, "f32.raw", 4);
    write_raw(p, "f16.raw", 2);
    write_raw(p, "bf16.raw", 3);
    {
        float x[ROWS * D];
        size_t i;
        for (i = 0; i < ROWS * D; ++i) x[i] = val(4, i);
        print_item("data", x, ROWS * D);
    }
    return failures != 0;
}

/* ------------------------------------------------------------------ read */

static void read_dataset(const char *path, const char *label, lsae_dtype raw, int no_mmap, const float *want)
{
    lsae_dataset_options o = lsae_dataset_options_default();
    lsae_dataset *ds = NULL;
    float *x;
    size_t n;
    char what[1100];
    o.no_mmap = no_mmap;
    if (raw) { o.raw_d_in = D; o.raw_dtype = raw; }
    snprintf(what, sizeof what, "%s (no_mmap %d)", path, no_mmap);
    if (lsae_dataset_open(path, &o, NULL, &ds) != LSAE_OK) { fail(what); return; }
    n = (size_t)lsae_dataset_rows(ds) * lsae_dataset_d_in(ds);
    x = (float *)calloc(n + 1, sizeof(float));
    if (lsae_dataset_read(ds, 0, (size_t)lsae_dataset_rows(ds), x) != LSAE_OK) fail(what);
    if (want && (n != ROWS * D || memcmp(x, want, n * sizeof(float)) != 0)) {
        fprintf(stderr, "endian_driver: %s: values differ from the ones written (first: %g, want %g)\n", what, (double)x[0], (double)want[0]);
        ++failures;
    }
    if (!no_mmap) print_item(label, x, n);
    free(x);
    lsae_dataset_close(ds);
}

static int cmd_read(const char *dir, const char *pt)
{
    char p[1024];
    const size_t P = 2 * L * D + L + D;
    float w[2 * L * D + L + D], got[2 * L * D + L + D], s[2 + L + 2 * (2 * L * D + L + D)], s_want[2 + L + 2 * (2 * L * D + L + D)];
    float x[ROWS * D];
    unsigned char blob[64];
    size_t blen = 0, i, ns;
    lsae_model *m = NULL;
    lsae_trainer *t;

    model_values(w);
    snprintf(p, sizeof p, "%s/model", dir);
    if (lsae_model_load(p, NULL, &m) != LSAE_OK) { fail(p); return 1; }
    if (lsae_model_get_weights(m, got, got + L * D, got + L * D + L, got + 2 * L * D + L) != LSAE_OK) fail("get_weights");
    if (memcmp(got, w, sizeof w) != 0) { fprintf(stderr, "endian_driver: %s: weights differ from the ones written\n", p); ++failures; }
    print_item("model", got, P);
    lsae_model_free(m);
    m = NULL;

    snprintf(p, sizeof p, "%s/saelens", dir);
    if (lsae_model_load_saelens(p, NULL, &m) != LSAE_OK) { fail(p); return 1; }
    if (lsae_model_get_weights(m, got, got + L * D, got + L * D + L, got + 2 * L * D + L) != LSAE_OK) fail("get_weights");
    if (memcmp(got, w, sizeof w) != 0) { fprintf(stderr, "endian_driver: %s: weights differ from the ones written\n", p); ++failures; }
    print_item("saelens", got, P);
    lsae_model_free(m);

    /* the checkpoint into a fresh model and trainer; the state wanted is the
       one set_state gives a trainer */
    m = new_model();
    t = new_trainer(m);
    set_state(t);
    ns = state_values(t, s_want);
    lsae_trainer_free(t);
    lsae_model_free(m);
    m = new_model();
    t = new_trainer(m);
    snprintf(p, sizeof p, "%s/ckpt", dir);
    if (lsae_checkpoint_load(p, m, t, blob, sizeof blob, &blen) != LSAE_OK) fail(p);
    if (lsae_model_get_weights(m, got, got + L * D, got + L * D + L, got + 2 * L * D + L) != LSAE_OK) fail("get_weights");
    if (memcmp(got, w, sizeof w) != 0) { fprintf(stderr, "endian_driver: %s: weights differ from the ones written\n", p); ++failures; }
    if (state_values(t, s) != ns || memcmp(s, s_want, ns * sizeof(float)) != 0) { fprintf(stderr, "endian_driver: %s: trainer state differs from the one written\n", p); ++failures; }
    if (blen != sizeof BLOB || memcmp(blob, BLOB, sizeof BLOB) != 0) { fprintf(stderr, "endian_driver: %s: blob differs\n", p); ++failures; }
    print_item("checkpoint.model", got, P);
    print_item("checkpoint.state", s, ns);
    lsae_trainer_free(t);
    lsae_model_free(m);

    for (i = 0; i < ROWS * D; ++i) x[i] = val(4, i);
    for (i = 0; i < sizeof DATA / sizeof DATA[0]; ++i) {
        snprintf(p, sizeof p, "%s/data/%s", dir, DATA[i].file);
        read_dataset(p, DATA[i].file, DATA[i].raw, 0, x);
        read_dataset(p, DATA[i].file, DATA[i].raw, 1, x);
    }
    /* a file from the real torch.save (values unknown here: the digest is
       compared across hosts; make test-interop checks them against torch) */
    if (pt) {
        read_dataset(pt, "torch .pt", (lsae_dtype)0, 0, NULL);
        read_dataset(pt, "torch .pt", (lsae_dtype)0, 1, NULL);
    }
    return failures != 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "write") == 0) return cmd_write(argv[2]);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "read") == 0) return cmd_read(argv[2], argc == 4 ? argv[3] : NULL);
    fprintf(stderr, "usage: endian_driver write DIR | endian_driver read DIR [FILE.pt]\n");
    return 2;
}
