/* latentsae benchmarks (timings live here, never in tests/).

     bench peak                          fp32 FMA peak of this machine, per ISA
     bench gemm M N K REPS               our blocked GEMM vs cblas_sgemm (when
                                         built with -DLSAE_BENCH_CBLAS -lopenblas)
     bench encode D L K B REPS           lsae_model_encode, samples/s
     bench prepass D L K B REPS [NPY STEPS]
                                         lsae_model_encode with the int8
                                         pre-pass (kept copy; per-call copy)
                                         against the float32 pass, interleaved
                                         in every rep; one-row latency; the
                                         candidate counts per row. With NPY
                                         (float16/32 [rows, D]) the rows come
                                         from it and the model is trained on
                                         them for STEPS steps of 256 rows
     bench train D L K B ACC DEAD STEPS  optimizer steps of B x ACC rows with a
                                         fraction DEAD of latents held dead
     bench trainpp D L K B DEAD STEPS [NPY|- [ACC]]
                                         training steps with the selection
                                         through the int8 pre-pass against the
                                         float32 pass: two trainers of the same
                                         model, stepped in turn on the same
                                         batches (NPY: rows from it, else
                                         synthetic), a fraction DEAD of latents
                                         held dead as in bench train, ACC
                                         batches an optimizer step (1; NPY "-"
                                         for synthetic rows); the ratio
                                         of median step times, whether the
                                         weights stay the same bits, the
                                         batches that used it
     bench variants D L K B ROUNDS       one training step of each SAE type
                                         (docs/math.md, section 3) against TopK,
                                         interleaved in every round

   Each prints "key value" lines that bench/run.py reads. Times are medians
   over REPS (or STEPS) after one warm-up. Threads: OMP_NUM_THREADS.
   Peak memory: ru_maxrss, and the same minus the resident size before the
   model was made (the data the benchmark itself holds). */
#define _POSIX_C_SOURCE 200809L
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include "../tests/test_internals.h" /* lsae__gemm_nt, the full product timed against sgemm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#ifdef LSAE_BENCH_CBLAS
#include <cblas.h>
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds used by the whole process (all threads) */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* current resident set, bytes (Linux /proc; 0 elsewhere) */
static double rss_now(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (double)res * 4096.0;
}

static double rss_peak(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double gauss(void)
{
    /* Box-Muller on SplitMix64 */
    double u1, u2;
    rng_state = lsae__mix64(rng_state);
    u1 = ((double)(rng_state >> 11) + 1.0) / 9007199254740993.0;
    rng_state = lsae__mix64(rng_state);
    u2 = (double)(rng_state >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* rows like sentence embeddings: a shared offset plus noise, unit norm */
static float *make_data(size_t rows, size_t d)
{
    float *x = (float *)malloc(rows * d * sizeof(float)), *mu = (float *)malloc(d * sizeof(float));
    size_t r, j;
    for (j = 0; j < d; ++j) mu[j] = (float)gauss();
    for (r = 0; r < rows; ++r) {
        double n = 0;
        for (j = 0; j < d; ++j) {
            x[r * d + j] = 0.5f * mu[j] + (float)gauss();
            n += (double)x[r * d + j] * x[r * d + j];
        }
        for (j = 0; j < d; ++j) x[r * d + j] = (float)(x[r * d + j] / sqrt(n));
    }
    free(mu);
    return x;
}

static const char *isa(void)
{
#if defined(LSAE__AVX512)
    return "avx512";
#elif defined(LSAE__AVX2)
    return "avx2";
#else
    return "portable";
#endif
}

/* 1 when the int8 pre-pass runs on AMX tiles (built for them and granted
   by the kernel), else 0 */
static int amx_used(void)
{
#if defined(LSAE__AMX)
    return lsae__amx_ready();
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------ peak */

#if defined(__AVX2__) && defined(__FMA__)
/* 12 independent FMA chains per thread: more than latency (4) x ports (2) */
static double peak_avx2(long iters)
{
    double t0 = now(), t;
    float sink = 0;
    LSAE__OMP(parallel reduction(+:sink))
    {
        /* distinct starting values, or the compiler merges the chains */
        __m256 a0 = _mm256_set1_ps(1.0f), a1 = _mm256_set1_ps(1.1f), a2 = _mm256_set1_ps(1.2f), a3 = _mm256_set1_ps(1.3f);
        __m256 a4 = _mm256_set1_ps(1.4f), a5 = _mm256_set1_ps(1.5f), a6 = _mm256_set1_ps(1.6f), a7 = _mm256_set1_ps(1.7f);
        __m256 a8 = _mm256_set1_ps(1.8f), a9 = _mm256_set1_ps(1.9f), a10 = _mm256_set1_ps(2.0f), a11 = _mm256_set1_ps(2.1f);
        const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
        float o[8];
        long i;
        for (i = 0; i < iters; ++i) {
            a0 = _mm256_fmadd_ps(a0, b, c); a1 = _mm256_fmadd_ps(a1, b, c); a2 = _mm256_fmadd_ps(a2, b, c);
            a3 = _mm256_fmadd_ps(a3, b, c); a4 = _mm256_fmadd_ps(a4, b, c); a5 = _mm256_fmadd_ps(a5, b, c);
            a6 = _mm256_fmadd_ps(a6, b, c); a7 = _mm256_fmadd_ps(a7, b, c); a8 = _mm256_fmadd_ps(a8, b, c);
            a9 = _mm256_fmadd_ps(a9, b, c); a10 = _mm256_fmadd_ps(a10, b, c); a11 = _mm256_fmadd_ps(a11, b, c);
        }
        a0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
        a0 = _mm256_add_ps(a0, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
        _mm256_storeu_ps(o, a0);
        sink += o[0];
    }
    t = now() - t0;
    if (sink == 12345.f) printf("#\n");
    return 2.0 * 8 * 12 * (double)iters * lsae__num_threads(0) / t;
}
#endif

#if defined(__AVX512F__)
static double peak_avx512(long iters)
{
    double t0 = now(), t;
    float sink = 0;
    LSAE__OMP(parallel reduction(+:sink))
    {
        __m512 a0 = _mm512_set1_ps(1.0f), a1 = _mm512_set1_ps(1.1f), a2 = _mm512_set1_ps(1.2f), a3 = _mm512_set1_ps(1.3f);
        __m512 a4 = _mm512_set1_ps(1.4f), a5 = _mm512_set1_ps(1.5f), a6 = _mm512_set1_ps(1.6f), a7 = _mm512_set1_ps(1.7f);
        __m512 a8 = _mm512_set1_ps(1.8f), a9 = _mm512_set1_ps(1.9f), a10 = _mm512_set1_ps(2.0f), a11 = _mm512_set1_ps(2.1f);
        const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
        long i;
        for (i = 0; i < iters; ++i) {
            a0 = _mm512_fmadd_ps(a0, b, c); a1 = _mm512_fmadd_ps(a1, b, c); a2 = _mm512_fmadd_ps(a2, b, c);
            a3 = _mm512_fmadd_ps(a3, b, c); a4 = _mm512_fmadd_ps(a4, b, c); a5 = _mm512_fmadd_ps(a5, b, c);
            a6 = _mm512_fmadd_ps(a6, b, c); a7 = _mm512_fmadd_ps(a7, b, c); a8 = _mm512_fmadd_ps(a8, b, c);
            a9 = _mm512_fmadd_ps(a9, b, c); a10 = _mm512_fmadd_ps(a10, b, c); a11 = _mm512_fmadd_ps(a11, b, c);
        }
        a0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
        a0 = _mm512_add_ps(a0, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
        {
            /* through memory, not _mm512_reduce_add_ps: GCC 12's C++ front
               end warns about the reduction's undefined upper half */
            float lanes[16];
            _mm512_storeu_ps(lanes, a0);
            sink += lanes[0] + lanes[15];
        }
    }
    t = now() - t0;
    if (sink == 12345.f) printf("#\n");
    return 2.0 * 16 * 12 * (double)iters * lsae__num_threads(0) / t;
}
#endif

static int run_peak(void)
{
    double v[5];
    int i;
    printf("threads %d\n", lsae__num_threads(0));
#if defined(__AVX512F__)
    for (i = 0; i < 5; ++i) v[i] = peak_avx512(100000000L);
    qsort(v, 5, sizeof *v, cmp_d);
    printf("peak_avx512_gflops %.1f\n", v[4] / 1e9); /* the best of 5: a peak */
#endif
#if defined(__AVX2__) && defined(__FMA__)
    for (i = 0; i < 5; ++i) v[i] = peak_avx2(100000000L);
    qsort(v, 5, sizeof *v, cmp_d);
    printf("peak_avx2_gflops %.1f\n", v[4] / 1e9);
#endif
    (void)v; (void)i;
    return 0;
}

/* ------------------------------------------------------------------ gemm */

static int run_gemm(size_t M, size_t N, size_t K, int reps)
{
    float *A = make_data(M, K), *B = make_data(N, K), *C = NULL;
    int nt = lsae__num_threads(0), i;
    float *pack = (float *)malloc(lsae__pack_floats(K, nt) * sizeof(float));
    double *t = (double *)malloc(sizeof(double) * (size_t)(reps + 1)), flops = 2.0 * (double)M * (double)N * (double)K;
    double *tc = (double *)malloc(sizeof(double) * (size_t)(reps + 1));
    /* C aligned to a cache line, as a caller who wants the product streamed
       out (non-temporal stores) would allocate it */
    if (posix_memalign((void **)&C, 64, M * N * sizeof(float)) != 0) { fprintf(stderr, "bench: out of memory\n"); return 1; }
    printf("isa %s\nthreads %d\n", isa(), nt);
    /* the L2 the CPU reports (0: unknown) and the tiles a group it gives */
    printf("l2_kib %zu\ntile_group %zu\n", lsae__l2_bytes() >> 10, lsae__tile_group(K));
    for (i = 0; i <= reps; ++i) {
        double t0 = now(), c0 = cpu_now();
        lsae__gemm_nt(C, A, B, M, N, K, pack, nt);
        t[i] = now() - t0;
        tc[i] = cpu_now() - c0;
    }
    printf("gemm_ours_gflops %.1f\n", flops / median(t + 1, reps) / 1e9);
    printf("gemm_ours_gflops_per_cpu %.1f\n", flops / median(tc + 1, reps) / 1e9);
#ifdef LSAE_BENCH_CBLAS
    for (i = 0; i <= reps; ++i) {
        double t0 = now(), c0 = cpu_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)K, B, (int)K, 0.0f, C, (int)N);
        t[i] = now() - t0;
        tc[i] = cpu_now() - c0;
    }
    printf("gemm_openblas_gflops %.1f\n", flops / median(t + 1, reps) / 1e9);
    printf("gemm_openblas_gflops_per_cpu %.1f\n", flops / median(tc + 1, reps) / 1e9);
#endif
    free(tc);
    free(A); free(B); free(C); free(pack); free(t);
    return 0;
}

/* ---------------------------------------------------------------- encode */

static int run_encode(size_t d, size_t L, size_t k, size_t B, int reps)
{
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    float *x = make_data(B, d), *acts = (float *)malloc(B * k * sizeof(float));
    int32_t *idx = (int32_t *)malloc(B * k * sizeof(int32_t));
    double *t = (double *)malloc(sizeof(double) * (size_t)(reps + 1)), *tc = (double *)malloc(sizeof(double) * (size_t)(reps + 1));
    int i;
    c.num_latents = L; c.k = k; c.seed = 1;
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
    /* as lsae_model_load leaves a model: the int8 copy of W_enc kept where
       the encode pre-pass applies by default */
    if (lsae_model_set_encode_prepass(m, 1) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
    printf("isa %s\nthreads %d\n", isa(), lsae__num_threads(0));
    for (i = 0; i <= reps; ++i) {
        double t0 = now(), c0 = cpu_now();
        if (lsae_model_encode(m, x, B, k, acts, idx) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
        t[i] = now() - t0;
        tc[i] = cpu_now() - c0;
    }
    printf("encode_samples_per_s %.1f\n", (double)B / median(t + 1, reps));
    printf("encode_samples_per_cpu_s %.1f\n", (double)B / median(tc + 1, reps));
    lsae_model_free(m);
    free(x); free(acts); free(idx); free(t); free(tc);
    return 0;
}

/* rows [rows, d] of a .npy file of float16 or float32 (C order), or NULL */
static float *load_npy(const char *path, size_t rows, size_t d, size_t *got)
{
    FILE *f = fopen(path, "rb");
    unsigned char h[10];
    char hdr[512];
    size_t hl, i, n;
    int f16;
    float *x;
    if (!f || fread(h, 1, 10, f) != 10) { if (f) fclose(f); return NULL; }
    hl = (size_t)h[8] | (size_t)h[9] << 8;
    if (hl >= sizeof hdr || fread(hdr, 1, hl, f) != hl) { fclose(f); return NULL; }
    hdr[hl] = 0;
    f16 = strstr(hdr, "<f2") != NULL;
    x = (float *)malloc(rows * d * sizeof(float));
    for (n = 0; n < rows; ++n) {
        for (i = 0; i < d; ++i) {
            if (f16) {
                unsigned char b[2];
                unsigned hv, e, fr;
                float v;
                if (fread(b, 1, 2, f) != 2) goto end;
                hv = (unsigned)b[0] | (unsigned)b[1] << 8;
                e = (hv >> 10) & 31u; fr = hv & 1023u;
                v = e == 0 ? ldexpf((float)fr, -24) : ldexpf((float)(fr | 1024u), (int)e - 25);
                x[n * d + i] = (hv >> 15) ? -v : v;
            } else if (fread(x + n * d + i, 4, 1, f) != 1) goto end;
        }
    }
end:
    fclose(f);
    *got = n;
    return x;
}

static int run_prepass(size_t d, size_t L, size_t k, size_t B, int reps, const char *npy, int steps)
{
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    float *x, *a0 = (float *)malloc(B * k * sizeof(float)), *a1 = (float *)malloc(B * k * sizeof(float));
    int32_t *i0 = (int32_t *)malloc(B * k * sizeof(int32_t)), *i1 = (int32_t *)malloc(B * k * sizeof(int32_t));
    double *tf = (double *)malloc(sizeof(double) * (size_t)(reps + 1)), *tk = (double *)malloc(sizeof(double) * (size_t)(reps + 1));
    double *tt = (double *)malloc(sizeof(double) * (size_t)(reps + 1)), *t1f = (double *)malloc(sizeof(double) * 64), *t1k = (double *)malloc(sizeof(double) * 64);
    size_t got = B, *cnt = (size_t *)malloc(B * sizeof(size_t)), r;
    int i, same = 1;
    c.num_latents = L; c.k = k; c.seed = 1;
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
    if (npy) {
        lsae_trainer *t = NULL;
        lsae_step_stats st;
        memset(&st, 0, sizeof st);
        size_t nrows = B > 256 * (size_t)steps ? B : 256 * (size_t)steps;
        float *all = load_npy(npy, nrows, d, &got);
        if (!all || got < 256) { fprintf(stderr, "bench: cannot read %zu rows of %zu from %s\n", nrows, d, npy); return 1; }
        c.total_steps = (size_t)steps; c.lr_warmup_steps = (size_t)steps / 10;
        if (lsae_trainer_create(m, &c, &t) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
        for (i = 0; i < steps; ++i)
            if (lsae_trainer_step(t, all + ((size_t)i * 256 % (got - 255)) * d, 256, &st) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
        printf("trained_steps %d\nfvu %.4f\n", steps, st.fvu);
        lsae_trainer_free(t);
        x = all;
        if (got < B) B = got;
    } else x = make_data(B, d);
    printf("isa %s\nvnni %d\namx %d\nthreads %d\n", isa(),
#if defined(LSAE__VNNI)
           1,
#else
           0,
#endif
           amx_used(), lsae__num_threads(0));
    /* each rep: float32, pre-pass with the kept copy, pre-pass building its copy in the call */
    for (i = 0; i <= reps; ++i) {
        double t0;
        lsae_model_set_encode_prepass(m, 0);
        t0 = now();
        if (lsae_model_encode(m, x, B, k, a0, i0) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
        tf[i] = now() - t0;
        lsae_model_set_encode_prepass(m, 2);
        t0 = now();
        if (lsae_model_encode(m, x, B, k, a1, i1) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
        tk[i] = now() - t0;
        same &= !memcmp(a0, a1, B * k * sizeof(float)) && !memcmp(i0, i1, B * k * sizeof(int32_t));
        m->wgen++; /* the kept copy stale: the call builds its own */
        t0 = now();
        if (lsae_model_encode(m, x, B, k, a1, i1) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
        tt[i] = now() - t0;
        same &= !memcmp(a0, a1, B * k * sizeof(float)) && !memcmp(i0, i1, B * k * sizeof(int32_t));
    }
    printf("encode_fp32_samples_per_s %.1f\n", (double)B / median(tf + 1, reps));
    printf("encode_prepass_samples_per_s %.1f\n", (double)B / median(tk + 1, reps));
    printf("encode_prepass_percall_samples_per_s %.1f\n", (double)B / median(tt + 1, reps));
    printf("encode_prepass_speedup %.2f\nencode_prepass_percall_speedup %.2f\n", median(tf + 1, reps) / median(tk + 1, reps), median(tf + 1, reps) / median(tt + 1, reps));
    printf("prepass_bit_identical %d\n", same);
    /* one row: 64 encodes of one row each way, interleaved */
    lsae_model_set_encode_prepass(m, 2);
    for (i = 0; i < 64; ++i) {
        double t0;
        m->prepass = 0;
        t0 = now();
        lsae_model_encode(m, x + (size_t)(i % 16) * d, 1, k, a0, i0);
        t1f[i] = now() - t0;
        m->prepass = 2;
        t0 = now();
        lsae_model_encode(m, x + (size_t)(i % 16) * d, 1, k, a1, i1);
        t1k[i] = now() - t0;
        same &= !memcmp(a0, a1, k * sizeof(float)) && !memcmp(i0, i1, k * sizeof(int32_t));
    }
    printf("one_row_fp32_us %.1f\none_row_prepass_us %.1f\none_row_bit_identical %d\n", 1e6 * median(t1f + 1, 63), 1e6 * median(t1k + 1, 63), same);
    /* candidates per row */
    {
        float *xc = (float *)malloc(B * d * sizeof(float));
        lsae__kv *top = (lsae__kv *)malloc(B * k * sizeof(lsae__kv));
        double sum = 0;
        size_t *sorted = (size_t *)malloc(B * sizeof(size_t)), j, tmp;
        lsae__center(xc, x, m->b_dec, B, d, 1);
        if (lsae__lp_select(m, (const lsae__lp *)m->lp, xc, B, k, top, lsae__num_threads(0), cnt) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
        for (r = 0; r < B; ++r) { sum += (double)cnt[r]; sorted[r] = cnt[r]; }
        for (r = 1; r < B; ++r) /* insertion sort, B is small */
            for (j = r; j > 0 && sorted[j - 1] > sorted[j]; --j) { tmp = sorted[j]; sorted[j] = sorted[j - 1]; sorted[j - 1] = tmp; }
        printf("candidates_mean %.1f\ncandidates_p99 %zu\ncandidates_max %zu\n", sum / (double)B, sorted[(B * 99) / 100 < B ? (B * 99) / 100 : B - 1], sorted[B - 1]);
        free(xc); free(top); free(sorted);
    }
    lsae_model_free(m);
    free(x); free(a0); free(a1); free(i0); free(i1); free(tf); free(tk); free(tt); free(t1f); free(t1k); free(cnt);
    return 0;
}

/* ----------------------------------------------------------------- train */

static int run_train(size_t d, size_t L, size_t k, size_t B, size_t acc, double dead_frac, int steps)
{
    const size_t nbatches = 8;
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *tr = NULL;
    lsae_trainer_state st;
    lsae_step_stats ss;
    float *x = make_data(nbatches * B, d);
    uint64_t *since = (uint64_t *)malloc(L * sizeof(uint64_t));
    unsigned char *dead = (unsigned char *)malloc(L);
    double *t = (double *)malloc(sizeof(double) * (size_t)(steps + 1)), *tc = (double *)malloc(sizeof(double) * (size_t)(steps + 1));
    double rss0, n_dead_sum = 0;
    size_t l, batch = 0, a;
    int s;
    c.num_latents = L; c.k = k; c.seed = 1; c.grad_acc_steps = acc;
    c.lr_warmup_steps = 10; c.total_steps = 1000;
    rss0 = rss_now();
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK || lsae_trainer_create(m, &c, &tr) != LSAE_OK) {
        fprintf(stderr, "bench: %s\n", lsae_last_error());
        return 1;
    }
    /* a fixed set of latents held dead, as in a run where AuxK is active:
       every optimizer step starts from the same counters (lsae_trainer_set_state
       with only since_fired given leaves the Adam moments alone) */
    for (l = 0; l < L; ++l) {
        rng_state = lsae__mix64(rng_state);
        dead[l] = (double)(rng_state >> 11) / 9007199254740992.0 < dead_frac;
    }
    memset(&st, 0, sizeof st);
    for (s = -1; s < steps; ++s) {
        double t0, c0;
        for (l = 0; l < L; ++l) since[l] = dead[l] ? c.dead_feature_threshold + 1 : 0;
        st.since_fired = since;
        st.step = lsae_trainer_steps_done(tr);
        st.b_dec_initialized = s >= 0; /* the warm-up step also runs the geometric median */
        if (lsae_trainer_set_state(tr, &st) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
        t0 = now();
        c0 = cpu_now();
        for (a = 0; a < acc; ++a) {
            if (lsae_trainer_step(tr, x + (batch % nbatches) * B * d, B, &ss) != LSAE_OK) {
                fprintf(stderr, "bench: %s\n", lsae_last_error());
                return 1;
            }
            ++batch;
            if (s >= 0 && a == 0) n_dead_sum += (double)ss.n_dead;
        }
        if (s >= 0) {
            t[s] = now() - t0;
            tc[s] = cpu_now() - c0;
        }
    }
    printf("isa %s\nthreads %d\n", isa(), lsae__num_threads(0));
    printf("train_samples_per_s %.1f\n", (double)(B * acc) / median(t, steps));
    printf("train_samples_per_cpu_s %.1f\n", (double)(B * acc) / median(tc, steps));
    printf("dead_fraction %.3f\n", n_dead_sum / steps / (double)L);
    printf("fvu %.4f\n", ss.fvu);
    printf("peak_rss_mb %.1f\n", rss_peak() / 1048576.0);
    printf("peak_rss_lib_mb %.1f\n", (rss_peak() - rss0) / 1048576.0);
    printf("params_mb %.1f\n", (double)(2 * L * d + L + d) * 4.0 / 1048576.0);
    lsae_trainer_free(tr);
    lsae_model_free(m);
    free(x); free(since); free(dead); free(t); free(tc);
    return 0;
}

/* -------------------------------------------------------------- variants */

enum { BV_TOPK, BV_BATCHTOPK, BV_BATCHTOPK_CAP, BV_NESTED, BV_NESTED_BT, BV_PERLEVEL, BV_PERLEVEL_BT, BV_ANNEAL, BV_COUNT };
static const char *bv_name[BV_COUNT] = { "topk", "batchtopk", "batchtopk_cap", "matryoshka_nested", "matryoshka_nested_bt",
                                         "matryoshka_per_level", "matryoshka_per_level_bt", "topk_k_anneal_start" };

static void bv_config(lsae_config *c, int v, size_t L, size_t k)
{
    size_t j;
    if (v == BV_BATCHTOPK || v == BV_BATCHTOPK_CAP) {
        c->sae_type = LSAE_SAE_BATCHTOPK;
        c->batchtopk_row_cap = v == BV_BATCHTOPK_CAP;
    } else if (v >= BV_NESTED && v <= BV_PERLEVEL_BT) {
        /* four levels, L/16, L/4, L/2, L; per-level k_j = k/4, k/2, 3k/4, k */
        c->sae_type = LSAE_SAE_MATRYOSHKA;
        c->matryoshka_levels = 4;
        c->matryoshka_sizes[0] = L / 16; c->matryoshka_sizes[1] = L / 4; c->matryoshka_sizes[2] = L / 2; c->matryoshka_sizes[3] = L;
        c->matryoshka_use_batchtopk = v == BV_NESTED_BT || v == BV_PERLEVEL_BT;
        if (v == BV_PERLEVEL || v == BV_PERLEVEL_BT) {
            c->matryoshka_form = LSAE_MATRYOSHKA_PER_LEVEL;
            for (j = 0; j < 4; ++j) c->matryoshka_ks[j] = k * (j + 1) / 4 ? k * (j + 1) / 4 : 1;
            c->auxk_alpha = 0.0;
        }
    } else if (v == BV_ANNEAL) {
        c->k_anneal = 1;   /* its first step: k_s = min(4k, L) */
    }
}

/* For ROUNDS rounds, each variant in turn: a trainer on the one model, one
   untimed warm-up step, then one timed step (the first batch of a trainer
   also runs the geometric median, so it is the warm-up); the order rotates
   from round to round. Per variant the
   median time and the median, over rounds, of its time / TopK's time in the
   same round. */
static int run_variants(size_t d, size_t L, size_t k, size_t B, int rounds)
{
    const size_t nbatches = 4;
    lsae_config c0 = lsae_config_default(d);
    lsae_model *m = NULL;
    float *x = make_data(nbatches * B, d);
    double *t = (double *)malloc(sizeof(double) * BV_COUNT * (size_t)rounds), *ratio = (double *)malloc(sizeof(double) * BV_COUNT * (size_t)rounds);
    size_t batch = 0;
    int r, v, vi;
    c0.num_latents = L; c0.k = k; c0.seed = 1;
    c0.lr_warmup_steps = 10; c0.total_steps = 1000;
    if (lsae_model_create(&c0, NULL, &m) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
    for (r = 0; r < rounds; ++r)
        for (vi = 0; vi < BV_COUNT; ++vi) {
            /* each round starts one variant later, so that none always
               runs first (or after the same neighbour) */
            const int w = (vi + r) % BV_COUNT;
            lsae_config c = c0;
            lsae_trainer *tr = NULL;
            lsae_step_stats ss;
            double t0;
            int s;
            bv_config(&c, w, L, k);
            if (lsae_trainer_create(m, &c, &tr) != LSAE_OK) { fprintf(stderr, "bench %s: %s\n", bv_name[w], lsae_last_error()); return 1; }
            for (s = 0; s < 2; ++s) {
                t0 = now();
                if (lsae_trainer_step(tr, x + (batch++ % nbatches) * B * d, B, &ss) != LSAE_OK) {
                    fprintf(stderr, "bench %s: %s\n", bv_name[w], lsae_last_error());
                    return 1;
                }
                t[(size_t)w * (size_t)rounds + (size_t)r] = now() - t0;
            }
            if (r == 0) printf("k_%s %zu\nenlarged_%s %zu\n", bv_name[w], ss.k, bv_name[w], ss.rows_enlarged);
            lsae_trainer_free(tr);
        }
    printf("isa %s\nthreads %d\n", isa(), lsae__num_threads(0));
    /* the ratios first: median() sorts in place */
    for (v = 0; v < BV_COUNT; ++v)
        for (r = 0; r < rounds; ++r) ratio[(size_t)v * (size_t)rounds + (size_t)r] = t[(size_t)v * (size_t)rounds + (size_t)r] / t[(size_t)r];
    for (v = 0; v < BV_COUNT; ++v) {
        printf("ratio_%s %.3f\n", bv_name[v], median(ratio + (size_t)v * (size_t)rounds, rounds));
        printf("step_ms_%s %.1f\n", bv_name[v], 1e3 * median(t + (size_t)v * (size_t)rounds, rounds));
    }
    lsae_model_free(m);
    free(x); free(t); free(ratio);
    return 0;
}

/* the training step with the pre-pass (m->prepass 1, the default: it runs
   where lsae__lp_applies says it is faster) against the float32 selection
   (prepass 0), interleaved step by step on the same batches */
static int run_trainpp(size_t d, size_t L, size_t k, size_t B, double dead_frac, int steps, const char *npy, size_t acc)
{
    uint64_t *since = (uint64_t *)malloc(L * sizeof(uint64_t));
    unsigned char *dead = (unsigned char *)malloc(L);
    lsae_trainer_state st;
    size_t l;
    lsae_config c = lsae_config_default(d);
    lsae_model *m[2] = { NULL, NULL };
    lsae_trainer *tr[2] = { NULL, NULL };
    size_t got = 0, nrows = 8 * B, v;
    float *x = npy ? load_npy(npy, nrows, d, &got) : make_data(nrows, d);
    double *t[2], *tc[2];
    lsae_step_stats ss;
    int s, same = 1;
    if (!x || (npy && got < B)) { fprintf(stderr, "bench: cannot read %zu rows of %zu from %s\n", B, d, npy); return 1; }
    if (!npy) got = nrows;
    c.num_latents = L; c.k = k; c.seed = 1; c.grad_acc_steps = acc;
    c.lr_warmup_steps = 10; c.total_steps = 1000;
    for (v = 0; v < 2; ++v) {
        t[v] = (double *)malloc(sizeof(double) * (size_t)(steps + 1));
        tc[v] = (double *)malloc(sizeof(double) * (size_t)(steps + 1));
        if (lsae_model_create(&c, NULL, &m[v]) != LSAE_OK || lsae_model_set_encode_prepass(m[v], (int)v) != LSAE_OK ||
            lsae_trainer_create(m[v], &c, &tr[v]) != LSAE_OK) {
            fprintf(stderr, "bench: %s\n", lsae_last_error());
            return 1;
        }
    }
    for (l = 0; l < L; ++l) {
        rng_state = lsae__mix64(rng_state);
        dead[l] = (double)(rng_state >> 11) / 9007199254740992.0 < dead_frac;
    }
    memset(&st, 0, sizeof st);
    for (s = -1; s < steps; ++s) {
        for (v = 0; v < 2; ++v) {
            double t0, c0;
            size_t a;
            for (l = 0; l < L; ++l) since[l] = dead[l] ? c.dead_feature_threshold + 1 : 0;
            st.since_fired = since;
            st.step = lsae_trainer_steps_done(tr[v]);
            st.b_dec_initialized = s >= 0;
            if (lsae_trainer_set_state(tr[v], &st) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
            t0 = now();
            c0 = cpu_now();
            /* an optimizer step: acc batches (both trainers see the same ones) */
            for (a = 0; a < acc; ++a) {
                const float *xb = x + (((size_t)(s + 1) * acc + a) * B % (got - B + 1)) * d;
                if (lsae_trainer_step(tr[v], xb, B, &ss) != LSAE_OK) { fprintf(stderr, "bench: %s\n", lsae_last_error()); return 1; }
            }
            if (s >= 0) {
                t[v][s] = now() - t0;
                tc[v][s] = cpu_now() - c0;
            }
        }
    }
    same = !memcmp(m[0]->W_enc, m[1]->W_enc, L * d * sizeof(float)) && !memcmp(m[0]->W_dec, m[1]->W_dec, L * d * sizeof(float)) &&
           !memcmp(m[0]->b_enc, m[1]->b_enc, L * sizeof(float)) && !memcmp(m[0]->b_dec, m[1]->b_dec, d * sizeof(float));
    printf("isa %s\namx %d\nthreads %d\n", isa(), amx_used(), lsae__num_threads(0));
    printf("train_fp32_samples_per_s %.1f\ntrain_prepass_samples_per_s %.1f\n", (double)(B * acc) / median(t[0], steps), (double)(B * acc) / median(t[1], steps));
    printf("train_prepass_speedup %.3f\n", median(t[0], steps) / median(t[1], steps));
    /* CPU time: with one thread, less disturbed by other processes than wall time */
    printf("train_prepass_cpu_speedup %.3f\n", median(tc[0], steps) / median(tc[1], steps));
    printf("train_prepass_batches %zu\ntrain_batches %zu\n", tr[1]->prepass_batches, (size_t)(steps + 1) * acc);
    printf("train_candidates_mean %.1f\ntrain_candidates_max %zu\n", tr[1]->prepass_rows ? (double)tr[1]->prepass_cand_sum / (double)tr[1]->prepass_rows : 0.0,
           tr[1]->prepass_cand_max);
    printf("train_prepass_bit_identical %d\nfvu %.4f\nn_dead %zu\n", same, ss.fvu, ss.n_dead);
    free(since);
    free(dead);
    for (v = 0; v < 2; ++v) {
        lsae_trainer_free(tr[v]);
        lsae_model_free(m[v]);
        free(t[v]);
        free(tc[v]);
    }
    free(x);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "peak") == 0) return run_peak();
    if (argc == 6 && strcmp(argv[1], "gemm") == 0)
        return run_gemm((size_t)atol(argv[2]), (size_t)atol(argv[3]), (size_t)atol(argv[4]), atoi(argv[5]));
    if (argc == 7 && strcmp(argv[1], "encode") == 0)
        return run_encode((size_t)atol(argv[2]), (size_t)atol(argv[3]), (size_t)atol(argv[4]), (size_t)atol(argv[5]), atoi(argv[6]));
    if ((argc == 7 || argc == 9) && strcmp(argv[1], "prepass") == 0)
        return run_prepass((size_t)atol(argv[2]), (size_t)atol(argv[3]), (size_t)atol(argv[4]), (size_t)atol(argv[5]), atoi(argv[6]),
                           argc == 9 ? argv[7] : NULL, argc == 9 ? atoi(argv[8]) : 0);
    if (argc == 9 && strcmp(argv[1], "train") == 0)
        return run_train((size_t)atol(argv[2]), (size_t)atol(argv[3]), (size_t)atol(argv[4]), (size_t)atol(argv[5]),
                         (size_t)atol(argv[6]), atof(argv[7]), atoi(argv[8]));
    /* trainpp ... [NPY [ACC]]: NPY "-" for the synthetic rows; ACC batches an optimizer step (1) */
    if ((argc >= 8 && argc <= 10) && strcmp(argv[1], "trainpp") == 0)
        return run_trainpp((size_t)atol(argv[2]), (size_t)atol(argv[3]), (size_t)atol(argv[4]), (size_t)atol(argv[5]), atof(argv[6]), atoi(argv[7]),
                           argc >= 9 && strcmp(argv[8], "-") != 0 ? argv[8] : NULL, argc == 10 && atol(argv[9]) > 0 ? (size_t)atol(argv[9]) : 1);
    if (argc == 7 && strcmp(argv[1], "variants") == 0)
        return run_variants((size_t)atol(argv[2]), (size_t)atol(argv[3]), (size_t)atol(argv[4]), (size_t)atol(argv[5]), atoi(argv[6]));
    fprintf(stderr, "usage: bench peak | gemm M N K REPS | encode D L K B REPS | train D L K B ACC DEAD STEPS | trainpp D L K B DEAD STEPS [NPY|- [ACC]] | variants D L K B ROUNDS\n");
    return 2;
}
