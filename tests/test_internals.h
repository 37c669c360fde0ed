/* latentsae's internals as test entry points: code that only tests and
   benchmarks call, kept out of the shipped header.

   Include after latentsae.h in the one file that defines
   LATENTSAE_IMPLEMENTATION: what is here calls the implementation's static
   functions and macros (lsae__pack_tile, lsae__tile_rows, lsae__sort_best,
   LSAE__MR, LSAE__OMP, ...), which are visible only in that translation
   unit. Used by tests/test_core.c and bench/bench.c.

   Why a file here rather than a block in latentsae.h behind a test macro:
   the library never calls any of it, so a user of the header would only
   read past it, and nothing here needs more than the translation unit
   already sees. A rename inside the header breaks these builds at once,
   so they cannot drift from the kernels they exercise. (The CUDA hooks are
   different: they live in latentsae_cuda.cu, whose kernels are static to
   that file, so they stay there behind LSAE_TESTING.) */
#ifndef LSAE_TEST_INTERNALS_H
#define LSAE_TEST_INTERNALS_H

#if !defined(LATENTSAE_IMPLEMENTATION_DONE)
#error "include tests/test_internals.h after latentsae.h with LATENTSAE_IMPLEMENTATION"
#endif

/* ------------------------------------------------------------------ GEMM */

/* The oracle: C[M, N] = A[M, K] B[N, K]^T, one element at a time. */
LSAE__MAYBE_UNUSED static void lsae__gemm_nt_naive(float *C, const float *A, const float *B, size_t M, size_t N, size_t K)
{
    size_t i, j, p;
    for (i = 0; i < M; ++i)
        for (j = 0; j < N; ++j) {
            float acc = 0.0f;
            for (p = 0; p < K; ++p) acc = LSAE__FMA(A[i * K + p], B[j * K + p], acc);
            C[i * N + j] = acc;
        }
}

/* floats of packing scratch that lsae__gemm_nt needs */
LSAE__MAYBE_UNUSED static size_t lsae__pack_floats(size_t K, int nthreads)
{
    return (size_t)nthreads * lsae__tile_group(K) * K * LSAE__NT;
}

/* Blocked, parallel C[M, N] = A[M, K] B[N, K]^T: the encoder pass's
   packing and micro-kernels (lsae__pack_tile, lsae__tile_rows) as a plain
   full product, for the GEMM tests and bench/bench.c. pack is scratch of lsae__pack_floats(K, nthreads)
   floats (the caller has checked that size for overflow). */
/* lsae__gemm_nt with G tiles a group (the library's lsae__tile_group(K));
   pack holds nthreads G K NT floats */
LSAE__MAYBE_UNUSED static void lsae__gemm_nt_g(float *C, const float *A, const float *B, size_t M, size_t N, size_t K, float *pack, int nthreads, size_t G)
{
    const size_t ntiles = (N + LSAE__NT - 1) / LSAE__NT, ngroups = (ntiles + G - 1) / G;
    ptrdiff_t grp;
    int stream = 0;
    (void)nthreads;
#if defined(LSAE__AVX2)
    /* an output past 8 MiB goes out with non-temporal stores (it leaves the
       caches anyway), where every row of C is aligned to the vector */
    {
        const size_t vec = sizeof(float) * LSAE__NR;
        stream = (size_t)((uintptr_t)C % vec) == 0 && (N * sizeof(float)) % vec == 0 && M * N > ((size_t)2 << 20);
    }
#endif
    LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(nthreads))
    for (grp = 0; grp < (ptrdiff_t)ngroups; ++grp) {
        float *P = pack + (size_t)lsae__thread_id() * G * K * LSAE__NT;
        float Cbuf[LSAE__MR * LSAE__NT];
        size_t t0 = (size_t)grp * G, t1 = t0 + G < ntiles ? t0 + G : ntiles, t, r0, r, j;
        for (t = t0; t < t1; ++t) {
            size_t l0 = t * LSAE__NT;
            lsae__pack_tile(P + (t - t0) * K * LSAE__NT, B, K, l0, N - l0 < LSAE__NT ? N - l0 : LSAE__NT);
        }
        for (r0 = 0; r0 < M; r0 += LSAE__MR) {
            size_t mr = M - r0 < LSAE__MR ? M - r0 : LSAE__MR;
            for (t = t0; t < t1; ++t) {
                size_t l0 = t * LSAE__NT, nt = N - l0 < LSAE__NT ? N - l0 : LSAE__NT;
                const float *Pt = P + (t - t0) * K * LSAE__NT;
                if (nt == LSAE__NT) {
                    lsae__tile_rows(C + r0 * N + l0, N, A + r0 * K, K, mr, Pt, K, stream);
                    continue;
                }
                lsae__tile_rows(Cbuf, LSAE__NT, A + r0 * K, K, mr, Pt, K, 0);
                for (r = 0; r < mr; ++r)
                    for (j = 0; j < nt; ++j) C[(r0 + r) * N + l0 + j] = Cbuf[r * LSAE__NT + j];
            }
        }
#if defined(LSAE__AVX2)
        if (stream) _mm_sfence(); /* the streamed stores ordered before the threads join */
#endif
    }
}

LSAE__MAYBE_UNUSED static void lsae__gemm_nt(float *C, const float *A, const float *B, size_t M, size_t N, size_t K, float *pack, int nthreads)
{
    lsae__gemm_nt_g(C, A, B, M, N, K, pack, nthreads, lsae__tile_group(K));
}

/* ------------------------------------------------------------------ top-k */

/* The order of lsae__kv as a comparison: a before b when a is larger, or
   equal with the lower index (the library sorts by keys in this order,
   lsae__sort_best). */
LSAE__MAYBE_UNUSED static int lsae__better(lsae__kv a, lsae__kv b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

/* Quickselect (Hoare 1961) on the total order: rearranges a[0..n) so that
   a[0..k) hold the k best, a[k - 1] being the k-th best; 0 < k <= n. The
   candidates of one selection have distinct indices, so no two compare
   equal and the kept set is unique. Median-of-three pivots; Hoare's
   partition with the pivot taken from the middle never leaves a side empty. */
LSAE__MAYBE_UNUSED static void lsae__nth_best(lsae__kv *a, size_t n, size_t k)
{
    ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1;
    const ptrdiff_t target = (ptrdiff_t)k - 1;
    lsae__kv tmp;
#define LSAE__SWAP(x, y) (tmp = a[x], a[x] = a[y], a[y] = tmp)
    while (hi > lo) {
        ptrdiff_t mid = lo + (hi - lo) / 2, i = lo - 1, j = hi + 1;
        lsae__kv pivot;
        /* order a[lo], a[mid], a[hi] best first; the median becomes the pivot */
        if (lsae__better(a[hi], a[lo])) LSAE__SWAP(lo, hi);
        if (lsae__better(a[mid], a[lo])) LSAE__SWAP(mid, lo);
        if (lsae__better(a[hi], a[mid])) LSAE__SWAP(hi, mid);
        pivot = a[mid];
        for (;;) {
            do ++i; while (lsae__better(a[i], pivot));
            do --j; while (lsae__better(pivot, a[j]));
            if (i >= j) break;
            LSAE__SWAP(i, j);
        }
        /* a[lo..j] are no worse than the pivot, a[j+1..hi] no better */
        if (target <= j) hi = j;
        else lo = j + 1;
    }
#undef LSAE__SWAP
}

/* The k largest of v[0..n), best first, in buf[0..k):
   quickselect, then the library's radix sort (lsae__sort_best). buf is scratch of 2 n entries. */
LSAE__MAYBE_UNUSED static void lsae__topk_row(const float *v, size_t n, size_t k, lsae__kv *buf)
{
    size_t i;
    if (k == 0) return;
    for (i = 0; i < n; ++i) {
        buf[i].v = v[i];
        buf[i].i = (int32_t)i;
    }
    lsae__nth_best(buf, n, k);
    lsae__sort_best(buf, k, buf + n, n);
}

#endif /* LSAE_TEST_INTERNALS_H */
