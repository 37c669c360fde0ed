/* Failing allocations: every public call, with the N-th allocation refused,
   for every N from 1 to the number of allocations the whole scenario makes.

   The hook counts the allocations of the run-time lsae_allocator and of the
   compile-time default (LSAE_MALLOC, overridden below) as one sequence and
   refuses number N. Each public call of the scenario must then
     - return LSAE_OUT_OF_MEMORY with a message exactly when an allocation was
       refused during it (LSAE_OK otherwise: an OOM is never swallowed),
     - succeed when called again (the objects it was given stay usable), and
   the whole run must
     - compute the same bits as the run without a failure (a failed call
       changed nothing: no half-written trainer, loader or model),
     - give every block back once everything is freed (no leak), and
     - take nothing from the default allocator inside a call that was given
       a run-time allocator (no allocation escapes it).
   Built with ASan + UBSan by make test-oom (a crash, overflow or use after
   free on an error path is then a failure too); `test_oom N` runs the
   scenario failing allocation N only.

   The prefetching loader allocates in its own thread, where the N-th
   allocation is not at a fixed point of the scenario; it has its own sweep
   in which an OOM may surface at the next call that needs the window. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <pthread.h>

/* the default allocator goes through the hook too (kind 0) */
static void *hook_malloc(size_t n, int kind);
static void hook_free(void *p, int kind);
#define LSAE_MALLOC(sz, ctx) ((void)(ctx), hook_malloc((sz), 0))
#define LSAE_FREE(p, ctx) ((void)(ctx), hook_free((p), 0))
#include "test_util.h"
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <sys/stat.h>

#define TD "build/oom_tmp"

/* ------------------------------------------------------------------ hook */

static struct {
    pthread_mutex_t mu;
    long count;        /* allocations asked for in this run */
    long fail_at;      /* refuse allocation number fail_at (1-based); 0: none */
    int sticky;        /* and every later one, until the call that met it returns */
    long injected;     /* refusals so far */
    long live[2];      /* blocks out: [0] LSAE_MALLOC, [1] the run-time allocator */
    long escaped;      /* LSAE_MALLOC blocks taken inside a call given an allocator */
    int custom_scope;  /* such a call is running */
    int bad_user;      /* the run-time allocator got another user pointer */
} H = { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, { 0, 0 }, 0, 0, 0 };

static const char *g_call = "";  /* the call running, for the escape report */
static int g_escape_prints = 0, g_leak_prints = 0;

static void *hook_malloc(size_t n, int kind)
{
    void *p = NULL;
    pthread_mutex_lock(&H.mu);
    ++H.count;
    if (H.fail_at && (H.count == H.fail_at || (H.sticky && H.count > H.fail_at))) {
        ++H.injected;
    } else if ((p = malloc(n)) != NULL) {
        ++H.live[kind];
    }
    if (kind == 0 && H.custom_scope && !H.escaped++ && g_escape_prints++ < 10)
        fprintf(stderr, "test_oom: LSAE_MALLOC inside %s, which was given an allocator\n", g_call);
    pthread_mutex_unlock(&H.mu);
    return p;
}

static void hook_free(void *p, int kind)
{
    if (!p) return;
    pthread_mutex_lock(&H.mu);
    --H.live[kind];
    pthread_mutex_unlock(&H.mu);
    free(p);
}

static void *rt_malloc(size_t n, void *user)
{
    if (user != (void *)&H) H.bad_user = 1;
    return hook_malloc(n, 1);
}
static void rt_free(void *p, void *user)
{
    if (user != (void *)&H) H.bad_user = 1;
    hook_free(p, 1);
}

static long injected(void)
{
    long v;
    pthread_mutex_lock(&H.mu);
    v = H.injected;
    pthread_mutex_unlock(&H.mu);
    return v;
}

/* after the call that met the refusals: allocations succeed again */
static void stop_failing(void)
{
    pthread_mutex_lock(&H.mu);
    H.fail_at = 0;
    pthread_mutex_unlock(&H.mu);
}

/* -------------------------------------------------------------- checking */

static long g_run = 0;        /* N of the run in progress */
static long g_oom_calls = 0;  /* calls that returned LSAE_OUT_OF_MEMORY, all runs */
static int g_reported = 0;    /* failures printed, to keep a bad build's output short */
static int g_line_reports[1024];

static void call_failed(int line, const char *expr, lsae_result r, const char *why)
{
    ++tu_failures;
    /* the first three of each line of this file, 40 in all */
    if (line >= 0 && line < 1024 && g_line_reports[line]++ >= 3) return;
    if (g_reported++ < 40)
        fprintf(stderr, "test_oom.c:%d: N = %ld: %s: %s returned %s: %s\n", line, g_run, why, expr, lsae_result_string(r), lsae_last_error());
}

/* One public call (custom: it was given the run-time allocator, directly or
   through its objects). The message is cleared first so a stale one cannot
   pass for this call's. */
#define CALL(custom, expr) do { \
        long inj0_ = injected(); lsae_result r_; \
        ++tu_checks; lsae__err_msg[0] = 0; g_call = #expr; \
        H.custom_scope = (custom); r_ = (expr); H.custom_scope = 0; \
        if (injected() > inj0_) { \
            if (r_ != LSAE_OUT_OF_MEMORY) call_failed(__LINE__, #expr, r_, "an allocation was refused, but the call did not say LSAE_OUT_OF_MEMORY"); \
            else if (!strstr(lsae_last_error(), "memory")) call_failed(__LINE__, #expr, r_, "LSAE_OUT_OF_MEMORY without a message saying so"); \
            else ++g_oom_calls; \
            stop_failing(); \
            H.custom_scope = (custom); r_ = (expr); H.custom_scope = 0; \
            if (r_ != LSAE_OK) call_failed(__LINE__, #expr, r_, "called again after LSAE_OUT_OF_MEMORY, it failed"); \
        } else if (r_ != LSAE_OK) { \
            call_failed(__LINE__, #expr, r_, "failed although no allocation was refused"); \
        } \
    } while (0)

/* everything a run computes, hashed: a failed call must leave no trace */
static uint64_t g_digest;
static void digest(const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; ++i) g_digest = (g_digest ^ b[i]) * 0x100000001B3ull;
}

static void digest_model(const lsae_model *m)
{
    size_t L, d;
    float *w;
    if (!m) { digest("none", 4); return; }
    L = lsae_model_num_latents(m);
    d = lsae_model_d_in(m);
    w = (float *)malloc((2 * L * d + L + d) * sizeof(float));
    if (!w) exit(2);
    lsae_model_get_weights(m, w, w + L * d, w + L * d + L, w + 2 * L * d + L);
    digest(w, (2 * L * d + L + d) * sizeof(float));
    free(w);
}

/* -------------------------------------------------------------- fixtures */

enum { D = 8, L = 32, K = 4, R = 24, ROWS = 40 };

static float row_value(size_t r, size_t c) { return (float)((lsae__mix64(r * 131 + c) >> 40) % 2000) / 1000.0f - 1.0f; }

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) { fprintf(stderr, "test_oom: cannot write %s\n", path); exit(2); }
}

static void write_npy(const char *path, const char *descr, const void *data, size_t rows, size_t esize)
{
    unsigned char buf[128 + ROWS * D * 4];
    char hdr[128];
    size_t hl;
    snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%zu, %d), }", descr, rows, D);
    hl = strlen(hdr);
    while (10 + hl + 1 < 128) hdr[hl++] = ' ';
    hdr[hl++] = '\n';
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)hl;
    buf[9] = 0;
    memcpy(buf + 10, hdr, hl);
    memcpy(buf + 128, data, rows * D * esize);
    write_file(path, buf, 128 + rows * D * esize);
}

static uint16_t f32_to_f16(float f)
{
    /* exact for the values used (multiples of 1/1000 in [-1, 1] are rounded by truncation; the library only has to read what is written) */
    uint32_t u, mant;
    int e;
    memcpy(&u, &f, 4);
    e = (int)((u >> 23) & 0xff) - 127 + 15;
    mant = (u >> 13) & 0x3ff;
    if ((u & 0x7fffffff) == 0 || e <= 0) return (uint16_t)((u >> 16) & 0x8000);
    return (uint16_t)(((u >> 16) & 0x8000) | ((uint32_t)e << 10) | mant);
}

static char g_pt_path[1024];

static void make_fixtures(void)
{
    float x[ROWS * D];
    uint16_t h[ROWS * D], bf[ROWS * D];
    size_t i;
    char st[4096];
    for (i = 0; i < ROWS * D; ++i) {
        uint32_t u;
        x[i] = row_value(i / D, i % D);
        h[i] = f32_to_f16(x[i]);
        memcpy(&u, &x[i], 4);
        bf[i] = (uint16_t)(u >> 16);
    }
    lsae__mkdirs(TD "/shards");
    lsae__mkdirs(TD "/hub/models--tester--oom-sae/refs");
    lsae__mkdirs(TD "/hub/models--tester--oom-sae/snapshots/c0ffee/sub");
    lsae__mkdirs(TD "/hub/models--tester--oom-one/snapshots/beef01");
    write_file(TD "/hub/models--tester--oom-sae/refs/main", "c0ffee\n", 7);
    write_npy(TD "/f32.npy", "<f4", x, ROWS, 4);
    {
        /* NaN rows for the loader on ranks (its lists of them grow) */
        float xn[ROWS * D];
        memcpy(xn, x, sizeof xn);
        for (i = 0; i < ROWS; i += 3) xn[i * D + 1] = (float)NAN;
        write_npy(TD "/nan.npy", "<f4", xn, ROWS, 4);
    }
    write_npy(TD "/f16.npy", "<f2", h, ROWS, 2);
    write_npy(TD "/shards/data-0.npy", "<f4", x, ROWS / 2, 4);
    write_npy(TD "/shards/data-1.npy", "<f4", x + ROWS / 2 * D, ROWS / 2, 4);
    write_file(TD "/rows.f32", x, sizeof x);
    write_file(TD "/rows.bf16", bf, sizeof bf);
    {
        /* safetensors: a 1-D tensor beside the 2-D one */
        int n = snprintf(st + 8, sizeof st - 8, "{\"ids\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"emb\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[8,%d]}}", ROWS, D, 8 + ROWS * D * 4);
        size_t hl = (size_t)n;
        while (hl % 8) st[8 + hl++] = ' ';
        lsae__put_le((unsigned char *)st, hl, 8);
        memset(st + 8 + hl, 0, 8);
        memcpy(st + 8 + hl + 8, x, sizeof x);
        write_file(TD "/rows.safetensors", st, 8 + hl + 8 + sizeof x);
    }
    setenv("HF_HUB_CACHE", TD "/hub", 1);
}

/* --------------------------------------------------------------- scenario */

static lsae_allocator g_A;

/* Read 5 rows from the middle and every row of a dataset file, with mmap and
   with stdio. */
static void dataset_calls(const char *path, const lsae_dataset_options *o)
{
    lsae_dataset_options opt = *o;
    int pass;
    for (pass = 0; pass < 2; ++pass) {
        lsae_dataset *ds = NULL;
        float out[ROWS * D];
        uint64_t n;
        opt.no_mmap = pass;
        CALL(1, lsae_dataset_open(path, &opt, &g_A, &ds));
        if (!ds) continue;
        n = lsae_dataset_rows(ds);
        CALL(1, lsae_dataset_read(ds, 3, 5, out));
        digest(out, 5 * D * sizeof(float));
        CALL(1, lsae_dataset_read(ds, 0, (size_t)n, out));
        digest(out, (size_t)n * D * sizeof(float));
        digest(&n, sizeof n);
        lsae_dataset_close(ds);
    }
}

static lsae_result same_f64(void *ctx, double *buf, size_t n) { (void)ctx; (void)buf; (void)n; return LSAE_OK; }

/* A loader over a dataset (f16 rows are converted into the window, f32 ones
   are used in place): batches across window and epoch boundaries, a seek. */
static void loader_calls(const char *path, int prefetch)
{
    lsae_dataset *ds = NULL;
    lsae_loader *ld = NULL;
    lsae_loader_options lo = lsae_loader_options_default(7);
    lsae_loader_stats ls;
    const float *b;
    size_t n;
    int i;
    lsae_comm lone;
    memset(&lone, 0, sizeof lone);
    lone.rank = 1;
    lone.size = 2;
    lone.sum_f64 = same_f64;
    lo.seed = 5;
    lo.window_rows = 16;
    lo.epochs = 2;
    lo.prefetch = prefetch;
    CALL(1, lsae_dataset_open(path, NULL, &g_A, &ds));
    if (!ds) return;
    CALL(1, lsae_loader_create(ds, &lo, &ld));
    for (i = 0; ld && i < 6; ++i) {
        n = 0;
        CALL(1, lsae_loader_next(ld, &b, &n));
        digest(&n, sizeof n);
        digest(b, n * D * sizeof(float));
    }
    if (ld) {
        lsae_loader_get_stats(ld, &ls);
        digest(&ls.rows_read, sizeof ls.rows_read);
        CALL(1, lsae_loader_seek(ld, 9));
        for (i = 0; i < 3; ++i) {
            n = 0;
            CALL(1, lsae_loader_next(ld, &b, &n));
            digest(&n, sizeof n);
            digest(b, n * D * sizeof(float));
        }
        /* rank 1 of 2 reading its slices alone (a peer whose sums add
           nothing), across windows and the epoch, then whole batches again */
        CALL(1, lsae_loader_set_comm(ld, &lone));
        for (i = 0; i < 8; ++i) {
            n = 0;
            CALL(1, lsae_loader_next(ld, &b, &n));
            digest(&n, sizeof n);
            digest(b, n * D * sizeof(float));
        }
        CALL(1, lsae_loader_set_comm(ld, NULL));
        n = 0;
        CALL(1, lsae_loader_next(ld, &b, &n));
        digest(b, n * D * sizeof(float));
    }
    lsae_loader_free(ld);
    lsae_dataset_close(ds);
}

/* a communicator of two ranks that hold the same rows (tests/test_comm.c) */
static lsae_result dbl_f32(void *ctx, float *buf, size_t n) { size_t i; (void)ctx; for (i = 0; i < n; ++i) buf[i] += buf[i]; return LSAE_OK; }
static lsae_result dbl_f64(void *ctx, double *buf, size_t n) { size_t i; (void)ctx; for (i = 0; i < n; ++i) buf[i] += buf[i]; return LSAE_OK; }
static lsae_result no_bcast(void *ctx, void *buf, size_t bytes, int root) { (void)ctx; (void)buf; (void)bytes; (void)root; return LSAE_OK; }
/* latent shards: this rank's bytes stand for both ranks' */
static lsae_result twice_gather(void *ctx, const void *send, size_t bytes, void *recv)
{
    (void)ctx;
    memcpy(recv, send, bytes);
    memcpy((unsigned char *)recv + bytes, send, bytes);
    return LSAE_OK;
}

static void scenario(void)
{
    static const char json[] = "{\"expansion_factor\": 4, \"normalize_decoder\": true, \"num_latents\": 32, \"k\": 4, \"signed\": false, \"d_in\": 8}";
    lsae_config c = lsae_config_default(D), c2, cj;
    lsae_model *m = NULL, *m2 = NULL, *m3 = NULL;
    lsae_trainer *t = NULL, *t2 = NULL;
    lsae_step_stats st;
    lsae_trainer_state ts;
    static float x[4 * R * D], acts[R * K], xhat[R * D];
    static int32_t idx[R * K];
    static float g[2 * L * D + L + D], mv[2 * (2 * L * D + L + D)];
    static uint64_t since[L];
    char path[1024], blob[16] = "position 123";
    size_t i, bl = 0;
    int s;
    lsae_dataset_options o = lsae_dataset_options_default();

    g_A.user = &H;
    g_A.malloc_fn = rt_malloc;
    g_A.free_fn = rt_free;
    tu_seed(7);
    for (i = 0; i < sizeof x / sizeof x[0]; ++i) x[i] = (float)tu_normal() * (1.0f + (float)(i % 5));

    /* config */
    c.k = K;
    c.num_latents = L;
    c.seed = 3;
    c.num_threads = 1;
    c.total_steps = 8;
    c.lr_warmup_steps = 2;
    c.dead_feature_threshold = 30; /* latents die within the run: AuxK works too */
    CALL(0, lsae_config_validate(&c));
    {
        double v[3];
        size_t nl = lsae_config_num_latents(&c);
        v[0] = lsae_config_lr(&c);
        v[1] = lsae_lr_factor(&c, 1);
        v[2] = lsae_lr_factor(&c, 5);
        digest(v, sizeof v);
        digest(&nl, sizeof nl);
    }
    CALL(0, lsae_config_from_json(json, strlen(json), &cj));
    digest(&cj.num_latents, sizeof cj.num_latents);
    CALL(0, lsae_backend_available(LSAE_DEVICE_CPU));

    /* model */
    CALL(1, lsae_model_create(&c, &g_A, &m));
    if (!m) return;
    CALL(1, lsae_model_to_device(m, LSAE_DEVICE_CPU));
    CALL(1, lsae_model_set_precision(m, LSAE_PRECISION_FP32));
    CALL(1, lsae_model_encode(m, x, R, 0, acts, idx));
    digest(acts, sizeof acts);
    digest(idx, sizeof idx);
    CALL(1, lsae_model_decode(m, acts, idx, R, K, xhat));
    digest(xhat, sizeof xhat);

    /* trainer: steps (the first sets b_dec), a window by halves, state */
    CALL(1, lsae_trainer_create(m, &c, &t));
    for (s = 0; t && s < 3; ++s) {
        CALL(1, lsae_trainer_step(t, x + (size_t)s * R * D, R, &st));
        digest(&st.loss, sizeof st.loss);
    }
    if (t) {
        CALL(1, lsae_trainer_accumulate(t, x + 3 * R * D, R, &st));
        CALL(1, lsae_trainer_get_grads(t, g, g + L * D, g + L * D + L, g + 2 * L * D + L));
        digest(g, sizeof g);
        CALL(1, lsae_trainer_apply(t, &st));
        digest(&st.grad_norm, sizeof st.grad_norm);
        memset(&ts, 0, sizeof ts);
        ts.since_fired = since;
        ts.m_W_enc = mv; ts.m_b_enc = mv + L * D; ts.m_W_dec = mv + L * D + L; ts.m_b_dec = mv + 2 * L * D + L;
        ts.v_W_enc = ts.m_b_dec + D; ts.v_b_enc = ts.v_W_enc + L * D; ts.v_W_dec = ts.v_b_enc + L; ts.v_b_dec = ts.v_W_dec + L * D;
        CALL(1, lsae_trainer_get_state(t, &ts));
        digest(mv, sizeof mv);
        digest(since, sizeof since);
        CALL(1, lsae_trainer_set_state(t, &ts));
    }
    CALL(1, lsae_model_get_weights(m, g, g + L * D, g + L * D + L, g + 2 * L * D + L));
    CALL(1, lsae_model_set_weights(m, g, g + L * D, g + L * D + L, g + 2 * L * D + L));
    digest_model(m);

    /* checkpoint: save, load into fresh objects of another seed, train both on */
    CALL(1, lsae_checkpoint_save(TD "/ck", m, t, blob, sizeof blob));
    if (t) CALL(1, lsae_checkpoint_save_state(TD "/ck_state", m, &ts, blob, sizeof blob));
    c2 = c;
    c2.seed = 99;
    CALL(1, lsae_model_create(&c2, &g_A, &m2));
    if (m2) CALL(1, lsae_trainer_create(m2, &c, &t2));
    if (t2) {
        memset(blob, 0, sizeof blob);
        CALL(1, lsae_checkpoint_load(TD "/ck", m2, t2, blob, sizeof blob, &bl));
        digest(blob, sizeof blob);
        digest(&bl, sizeof bl);
        CALL(1, lsae_trainer_step(t2, x, R, &st));
        if (t) CALL(1, lsae_trainer_step(t, x, R, &st));
        digest_model(m2);
        digest_model(m);
    }
    lsae_trainer_free(t2);
    lsae_model_free(m2);
    m2 = NULL;
    t2 = NULL;

    /* the training step through the int8 pre-pass (forced: prepass 2), its
       per-step int8 copy and, once latents die, the AuxK pick from the
       gathered dead latents */
    {
        lsae_config c3 = c;
        c3.num_latents = 16 * K;
        CALL(1, lsae_model_create(&c3, &g_A, &m2));
        if (m2) CALL(1, lsae_model_set_encode_prepass(m2, 2));
        if (m2) CALL(1, lsae_trainer_create(m2, &c3, &t2));
        for (s = 0; t2 && s < 4; ++s) {
            CALL(1, lsae_trainer_step(t2, x + (size_t)s * R * D, R, &st));
            digest(&st.loss, sizeof st.loss);
        }
        if (m2) digest_model(m2);
        lsae_trainer_free(t2);
        lsae_model_free(m2);
        m2 = NULL;
        t2 = NULL;
    }

    /* data-parallel: a trainer on a communicator (the first step sets b_dec
       by the sums across ranks) */
    {
        lsae_comm cm;
        memset(&cm, 0, sizeof cm);
        cm.size = 2;
        cm.sum_f32 = dbl_f32;
        cm.sum_f64 = dbl_f64;
        cm.broadcast = no_bcast;
        CALL(1, lsae_model_create(&c, &g_A, &m2));
        if (m2) CALL(1, lsae_trainer_create(m2, &c, &t2));
        if (t2) CALL(1, lsae_trainer_set_comm(t2, &cm));
        for (s = 0; t2 && s < 2; ++s) {
            CALL(1, lsae_trainer_step(t2, x + (size_t)s * R * D, R, &st));
            digest(&st.loss, sizeof st.loss);
        }
        if (m2) digest_model(m2);
        lsae_trainer_free(t2);
        lsae_model_free(m2);
        m2 = NULL;
        t2 = NULL;
    }

    /* latent shards: shard 0 of 2 made from the config (a communicator that
       gathers this rank's bytes twice stands for the other rank), and the
       second half of a model */
    {
        lsae_comm cm;
        memset(&cm, 0, sizeof cm);
        cm.size = 2;
        cm.sum_f32 = dbl_f32;
        cm.sum_f64 = dbl_f64;
        cm.broadcast = no_bcast;
        cm.allgather = twice_gather;
        CALL(1, lsae_model_create_shard(&c, &g_A, 0, L / 2, &m2));
        if (m2) CALL(1, lsae_trainer_create(m2, &c, &t2));
        if (t2) CALL(1, lsae_trainer_set_shard_comm(t2, &cm));
        for (s = 0; t2 && s < 3; ++s) {
            CALL(1, lsae_trainer_step(t2, x + (size_t)s * R * D, R, &st));
            digest(&st.loss, sizeof st.loss);
        }
        if (m2) digest_model(m2);
        lsae_trainer_free(t2);
        lsae_model_free(m2);
        m2 = NULL;
        t2 = NULL;
        CALL(1, lsae_model_shard_of(m, L / 2, L, &m2));
        digest_model(m2);
        lsae_model_free(m2);
        m2 = NULL;
        /* the second half resumed from the checkpoint, its rows alone */
        CALL(1, lsae_model_create_shard(&c, &g_A, L / 2, L, &m2));
        if (m2) CALL(1, lsae_trainer_create(m2, &c, &t2));
        if (t2) {
            memset(blob, 0, sizeof blob);
            CALL(1, lsae_checkpoint_load_shard(TD "/ck", m2, t2, blob, sizeof blob, &bl));
            digest(blob, sizeof blob);
            digest_model(m2);
        }
        lsae_trainer_free(t2);
        lsae_model_free(m2);
        m2 = NULL;
        t2 = NULL;
    }

    /* model files: ours, SAELens's (both loaders), the Hugging Face cache */
    CALL(1, lsae_model_save(m, TD "/model"));
    CALL(1, lsae_model_load(TD "/model", &g_A, &m3));
    digest_model(m3);
    lsae_model_free(m3);
    m3 = NULL;
    CALL(1, lsae_model_save_saelens(m, TD "/saelens"));
    CALL(1, lsae_model_load_saelens(TD "/saelens", &g_A, &m3));
    digest_model(m3);
    lsae_model_free(m3);
    m3 = NULL;
    CALL(1, lsae_model_load(TD "/saelens", &g_A, &m3));
    digest_model(m3);
    lsae_model_free(m3);
    m3 = NULL;
    CALL(1, lsae_model_save(m, TD "/hub/models--tester--oom-sae/snapshots/c0ffee/sub"));
    CALL(1, lsae_model_save(m, TD "/hub/models--tester--oom-one/snapshots/beef01"));
    path[0] = 0;
    CALL(0, lsae_hf_resolve("tester/oom-sae", "sub", path, sizeof path));
    digest(path, strlen(path));
    CALL(0, lsae_hf_resolve("tester/oom-one", NULL, path, sizeof path)); /* no refs/main: the only snapshot */
    digest(path, strlen(path));
    CALL(1, lsae_model_load_hf("tester/oom-sae", "sub", &g_A, &m3));
    digest_model(m3);
    lsae_model_free(m3);
    m3 = NULL;
    CALL(1, lsae_model_load_hf("tester/oom-one", NULL, &g_A, &m3));
    digest_model(m3);
    lsae_model_free(m3);
    m3 = NULL;
    lsae_trainer_free(t);
    lsae_model_free(m);

    /* datasets of every format, and a directory of shards */
    dataset_calls(TD "/f32.npy", &o);
    dataset_calls(TD "/f16.npy", &o);
    dataset_calls(TD "/shards", &o);
    dataset_calls(TD "/rows.safetensors", &o);
    dataset_calls(g_pt_path, &o);
    o.format = LSAE_FORMAT_RAW;
    o.raw_d_in = D;
    dataset_calls(TD "/rows.f32", &o);
    o.raw_dtype = LSAE_DTYPE_BF16;
    dataset_calls(TD "/rows.bf16", &o);
    o = lsae_dataset_options_default();
    o.tensor_name = "emb";
    dataset_calls(TD "/rows.safetensors", &o);

    /* loaders, synchronous */
    loader_calls(TD "/f16.npy", 0);
    loader_calls(TD "/f32.npy", 0);
    loader_calls(TD "/shards", 0);
    loader_calls(TD "/nan.npy", 0);
}

/* The prefetching loader: the window's rows are allocated in the prefetch
   thread, and a refusal there surfaces at the next lsae_loader_next that
   needs that window (or never, if nobody needs it). */
static long g_reported_inj;
#define CALL_ASYNC(expr) do { \
        lsae_result r_; \
        ++tu_checks; lsae__err_msg[0] = 0; \
        H.custom_scope = 1; r_ = (expr); H.custom_scope = 0; \
        if (r_ == LSAE_OUT_OF_MEMORY) { \
            if (injected() <= g_reported_inj) call_failed(__LINE__, #expr, r_, "LSAE_OUT_OF_MEMORY but no allocation was refused"); \
            g_reported_inj = injected(); ++g_oom_calls; \
            H.custom_scope = 1; r_ = (expr); H.custom_scope = 0; \
            if (r_ != LSAE_OK) call_failed(__LINE__, #expr, r_, "called again after LSAE_OUT_OF_MEMORY, it failed"); \
        } else if (r_ != LSAE_OK) call_failed(__LINE__, #expr, r_, "failed"); \
    } while (0)

static void scenario_prefetch(void)
{
    lsae_dataset *ds = NULL;
    lsae_loader *ld = NULL;
    lsae_loader_options lo = lsae_loader_options_default(7);
    const float *b;
    size_t n;
    int i;
    g_A.user = &H;
    g_A.malloc_fn = rt_malloc;
    g_A.free_fn = rt_free;
    g_reported_inj = 0;
    lo.seed = 5;
    lo.window_rows = 16;
    lo.epochs = 2;
    lo.prefetch = 1;
    CALL_ASYNC(lsae_dataset_open(TD "/f16.npy", NULL, &g_A, &ds));
    if (!ds) return;
    CALL_ASYNC(lsae_loader_create(ds, &lo, &ld));
    for (i = 0; ld && i < 9; ++i) {
        n = 0;
        CALL_ASYNC(lsae_loader_next(ld, &b, &n));
        digest(&n, sizeof n);
        digest(b, n * D * sizeof(float));
        if (i == 5) CALL_ASYNC(lsae_loader_seek(ld, 9));
    }
    lsae_loader_free(ld);
    lsae_dataset_close(ds);
}

/* One run of a scenario failing allocation fail_at (0: none); returns its
   digest and the allocations it asked for. */
static uint64_t run_once(void (*fn)(void), long fail_at, int sticky, long *count)
{
    long live0, live1;
    g_run = fail_at;
    g_digest = 0xcbf29ce484222325ull;
    pthread_mutex_lock(&H.mu);
    H.count = 0;
    H.fail_at = fail_at;
    H.sticky = sticky;
    H.injected = 0;
    H.escaped = 0;
    pthread_mutex_unlock(&H.mu);
    fn();
    pthread_mutex_lock(&H.mu);
    *count = H.count;
    H.fail_at = 0;
    live0 = H.live[0];
    live1 = H.live[1];
    pthread_mutex_unlock(&H.mu);
    ++tu_checks;
    if (live0 || live1) {
        ++tu_failures;
        if (g_leak_prints++ < 10)
            fprintf(stderr, "test_oom: N = %ld: %ld blocks of LSAE_MALLOC and %ld of the run-time allocator not freed\n", fail_at, live0, live1);
    }
    H.live[0] = H.live[1] = 0;
    ++tu_checks;
    if (H.escaped) {
        ++tu_failures;
        if (g_escape_prints++ < 10) fprintf(stderr, "test_oom: N = %ld: %ld allocations escaped the run-time allocator\n", fail_at, H.escaped);
    }
    ++tu_checks;
    if (fail_at && fail_at <= *count && (sticky ? H.injected < 1 : H.injected != 1)) {
        ++tu_failures;
        fprintf(stderr, "test_oom: N = %ld: %ld refusals, expected %s1\n", fail_at, H.injected, sticky ? "at least " : "");
    }
    return g_digest;
}

/* sticky: refuse the N-th allocation and all that follow in the same call
   (memory that stays short: the error paths must not need any) */
static void sweep(const char *name, void (*fn)(void), int sticky, long only)
{
    long total = 0, n, count;
    int bad_digest = 0;
    uint64_t ref = run_once(fn, 0, 0, &total), got;
    long oom0 = g_oom_calls;
    for (n = only ? only : 1; n <= (only ? only : total); ++n) {
        got = run_once(fn, n, sticky, &count);
        ++tu_checks;
        if (got != ref) {
            ++tu_failures;
            if (bad_digest++ < 10) fprintf(stderr, "test_oom: %s: N = %ld: the run computed other bits than the run without a failure\n", name, n);
        }
    }
    printf("  %s: %ld allocations; refused in turn%s: %ld calls returned LSAE_OUT_OF_MEMORY; %d of %ld runs computed other bits than the run without a failure\n",
           name, total, sticky ? " (and all after, within the call)" : "", g_oom_calls - oom0, bad_digest, only ? 1 : total);
}

int main(int argc, char **argv)
{
    long only = argc > 1 ? atol(argv[1]) : 0;
    snprintf(g_pt_path, sizeof g_pt_path, "%s", argc > 2 ? argv[2] : "tests/data/t12x8.pt");
    make_fixtures();
    sweep("every public call", scenario, 0, only);
    sweep("every public call", scenario, 1, only);
    if (!only) sweep("prefetching loader", scenario_prefetch, 0, 0);
    CHECK(!H.bad_user);
    return TEST_SUMMARY("test_oom");
}
