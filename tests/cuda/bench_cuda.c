/* Times latentsae on the GPU at one shape (default d=768, L=24576, k=64,
   batch 4096) and prints RESULT lines for tests/cuda/table.py.

   bench_cuda [--d N] [--L N] [--k N] [--B N] [--steps N] [--precisions fp32,tf32,bf16] [--no-auxk]

   Per precision:
   - the encoder product ([B, d] x [d, L]) and the top-k over its output,
     each alone on device-resident random data (CUDA events, mean of
     --steps runs after two warm-ups);
   - a training step through the public API from host memory (upload
     included): steady state with stats = NULL (the library overlaps the
     host's copy of the next batch with the GPU's work), and with stats on
     every step (the call waits for the GPU each time); four distinct
     batches in turn, after three warm-up steps (the first initialises
     b_dec from the geometric median);
   - the same with half the latents dead, so AuxK selects d/2 = 384 more
     latents a row and backpropagates through them;
   - lsae_model_encode of 4 x B rows from host memory, k per row.
   Wall-clock times from CLOCK_MONOTONIC. */
#define _POSIX_C_SOURCE 200809L
#define LSAE_TESTING /* the kernel hooks lsae__cuda_test_* (latentsae_cuda.cu built with -DLSAE_TESTING) */
#define LATENTSAE_IMPLEMENTATION
#include "../../latentsae.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef LATENTSAE_CUDA
#error "tests/cuda/bench_cuda.c is built with -DLATENTSAE_CUDA"
#endif

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void die(const char *what, lsae_result r)
{
    fprintf(stderr, "bench_cuda: %s: %s: %s\n", what, lsae_result_string(r), lsae_last_error());
    exit(1);
}

#define TRY(what, expr) do { lsae_result r_ = (expr); if (r_ != LSAE_OK) die(what, r_); } while (0)

/* xorshift data: a few strong directions plus noise, like embeddings */
static unsigned long long g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void)
{
    g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
    return (float)((g_rng * 2685821657736338717ull) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
}

static void train_bench(const char *tag, lsae_precision p, size_t d, size_t L, size_t k, size_t B, int steps,
                        const float *X, int nbatch, int half_dead)
{
    lsae_config cfg = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_step_stats st;
    double t0, ms_async, ms_sync;
    int i;
    cfg.num_latents = L;
    cfg.k = k;
    cfg.device = LSAE_DEVICE_CUDA;
    cfg.precision = p;
    cfg.total_steps = 100000;
    TRY("model", lsae_model_create(&cfg, NULL, &m));
    TRY("trainer", lsae_trainer_create(m, &cfg, &t));
    if (half_dead) {
        lsae_trainer_state s;
        size_t l;
        memset(&s, 0, sizeof s);
        s.since_fired = (uint64_t *)calloc(L, sizeof(uint64_t));
        for (l = 0; l < L; l += 2) s.since_fired[l] = cfg.dead_feature_threshold + 1;
        s.b_dec_initialized = 0;
        TRY("set_state", lsae_trainer_set_state(t, &s));
        free(s.since_fired);
    }
    for (i = 0; i < 3; ++i) TRY("warm-up step", lsae_trainer_step(t, X + (size_t)(i % nbatch) * B * d, B, &st));
    t0 = now_ms();
    for (i = 0; i < steps; ++i)
        TRY("step", lsae_trainer_step(t, X + (size_t)(i % nbatch) * B * d, B, i == steps - 1 ? &st : NULL));
    ms_async = (now_ms() - t0) / steps;
    t0 = now_ms();
    for (i = 0; i < steps; ++i) TRY("step", lsae_trainer_step(t, X + (size_t)(i % nbatch) * B * d, B, &st));
    ms_sync = (now_ms() - t0) / steps;
    printf("RESULT train%s_%s_ms %.4f\n", tag, p == LSAE_PRECISION_FP32 ? "fp32" : p == LSAE_PRECISION_TF32 ? "tf32" : "bf16", ms_async);
    printf("RESULT train%s_stats_%s_ms %.4f\n", tag, p == LSAE_PRECISION_FP32 ? "fp32" : p == LSAE_PRECISION_TF32 ? "tf32" : "bf16", ms_sync);
    printf("  train%s %s: %.3f ms/step (stats NULL), %.3f ms/step (stats each step), fvu %.4f, dead %zu\n", tag,
           p == LSAE_PRECISION_FP32 ? "fp32" : p == LSAE_PRECISION_TF32 ? "tf32" : "bf16", ms_async, ms_sync, st.fvu, st.n_dead);
    lsae_trainer_free(t);
    lsae_model_free(m);
}

int main(int argc, char **argv)
{
    size_t d = 768, L = 24576, k = 64, B = 4096, n, i;
    int steps = 20, auxk = 1, a, q, nbatch = 4;
    const char *precs = "fp32,tf32,bf16";
    float *X;
    for (a = 1; a < argc; ++a) {
        if (a + 1 < argc && strcmp(argv[a], "--d") == 0) d = (size_t)atol(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--L") == 0) L = (size_t)atol(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--k") == 0) k = (size_t)atol(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--B") == 0) B = (size_t)atol(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--steps") == 0) steps = atoi(argv[++a]);
        else if (a + 1 < argc && strcmp(argv[a], "--precisions") == 0) precs = argv[++a];
        else if (strcmp(argv[a], "--no-auxk") == 0) auxk = 0;
        else {
            fprintf(stderr, "usage: bench_cuda [--d N] [--L N] [--k N] [--B N] [--steps N] [--precisions fp32,tf32,bf16] [--no-auxk]\n");
            return 2;
        }
    }
    if (!d || !L || !k || !B || steps < 1 || k > L) { fprintf(stderr, "bench_cuda: bad sizes\n"); return 2; }
    TRY("CUDA", lsae_backend_available(LSAE_DEVICE_CUDA));
    printf("RESULT shape_d %zu\nRESULT shape_L %zu\nRESULT shape_k %zu\nRESULT shape_B %zu\n", d, L, k, B);
    n = (size_t)nbatch * B * d;
    X = (float *)malloc(n * sizeof(float));
    if (!X) { fprintf(stderr, "bench_cuda: out of memory\n"); return 1; }
    for (i = 0; i < n; ++i) X[i] = frand() + (i % d < 16 ? 0.5f : 0.0f);
    for (q = 0; q < 3; ++q) {
        const lsae_precision p = q == 0 ? LSAE_PRECISION_FP32 : q == 1 ? LSAE_PRECISION_TF32 : LSAE_PRECISION_BF16;
        const char *pn = q == 0 ? "fp32" : q == 1 ? "tf32" : "bf16";
        double gms = 0, tms = 0;
        lsae_result r;
        if (!strstr(precs, pn)) continue;
        r = lsae__cuda_test_bench(B, L, d, k, p, steps, &gms, &tms);
        if (r == LSAE_UNSUPPORTED) { printf("  %s: not in this build\n", pn); continue; }
        if (r != LSAE_OK) die("kernel benchmark", r);
        printf("RESULT gemm_%s_ms %.4f\nRESULT gemm_%s_tflops %.2f\nRESULT topk_ms %.4f\n", pn, gms, pn,
               2.0 * B * L * d / (gms * 1e-3) / 1e12, tms);
        printf("  encoder product %s: %.3f ms (%.1f TFLOP/s); top-%zu of %zu: %.3f ms\n", pn, gms, 2.0 * B * L * d / (gms * 1e-3) / 1e12,
               k, L, tms);
        train_bench("", p, d, L, k, B, steps, X, nbatch, 0);
        if (auxk) train_bench("_auxk", p, d, L, k, B, steps, X, nbatch, 1);
        {
            lsae_config cfg = lsae_config_default(d);
            lsae_model *m = NULL;
            const size_t rows = (size_t)nbatch * B;
            float *acts = (float *)malloc(rows * k * sizeof(float));
            int32_t *idx = (int32_t *)malloc(rows * k * sizeof(int32_t));
            double t0, ms;
            cfg.num_latents = L;
            cfg.k = k;
            cfg.device = LSAE_DEVICE_CUDA;
            cfg.precision = p;
            if (!acts || !idx) { fprintf(stderr, "bench_cuda: out of memory\n"); return 1; }
            TRY("model", lsae_model_create(&cfg, NULL, &m));
            TRY("encode warm-up", lsae_model_encode(m, X, rows, k, acts, idx));
            t0 = now_ms();
            TRY("encode", lsae_model_encode(m, X, rows, k, acts, idx));
            ms = now_ms() - t0;
            printf("RESULT encode_%s_rows_per_s %.0f\n", pn, rows / (ms * 1e-3));
            printf("  encode %s: %zu rows in %.2f ms (%.0f rows/s)\n", pn, rows, ms, rows / (ms * 1e-3));
            lsae_model_free(m);
            free(acts);
            free(idx);
        }
    }
    free(X);
    return 0;
}
