/* deccos.c - each decoder row's largest cosine to another row, exactly,
   from a cheap product with a proven error bound (docs/eval.md, section 4).

   maxcos[l] = max over l' != l of V(l, l'), where V(a, b) is the dot
   product of the unit rows U[a], U[b] (floats) taken in double precision
   by dc_exact_dot below, rounded to float at the end. A brute-force loop
   over all pairs with dc_exact_dot gives the same bits (tests/test_deccos.c).

   The L x L product is the cost (L^2 d / 2 multiply-adds), so it is not
   computed in double. Instead every pair gets a cheap approximation A(a, b)
   with a bound e(a, b) >= |A(a, b) - V(a, b)|, proved below, so that
   lo = A - e <= V <= hi = A + e. For each row a, LB(a) = max over partners
   of lo is a lower bound of maxcos[a]; a partner b with hi(a, b) < LB(a)
   has V(a, b) < maxcos[a] and cannot be the maximum. The rest (the
   candidates) are computed exactly, and their maximum is maxcos[a]: the
   true maximiser b* is always a candidate, since hi(a, b*) >= V(a, b*) =
   maxcos[a] >= LB(a).

   The pass keeps, per thread, a running LB (only ever growing, and always
   the max of some lo's, so always <= the final LB) and stores every pair
   whose hi reaches the running LB when it is seen: a superset of the final
   candidates. After the pass the stored pairs are filtered by the final LB
   (the max over threads) and computed exactly.

   The approximation, chosen at compile time:

   - AVX-512 VNNI (DC_VNNI): each unit row u is quantised to int8 with its
     own scale, u = s q + r with s = max |u_j| / 127, q_j the nearest
     integer to u_j / s in [-127, 127] (any integer would keep what follows
     true), r = u - s q the residual, taken with one rounding (2^-24
     relative, inside the 1 + 1e-6 that R is rounded up by). Then
         V(a, b) = s_a s_b (q_a . q_b) + (s_a q_a) . r_b + r_a . (s_b q_b) + r_a . r_b
     and by Cauchy-Schwarz, with Q = |s q| and R = |r| per row,
         |V - s_a s_b (q_a . q_b)| <= Q_a R_b + R_a Q_b + R_a R_b.
     q_a . q_b is an exact integer (vpdpbusd on q_a + 128 as unsigned bytes,
     less 128 sum(q_b); |sums| <= d 255 127 < 2^31 for d < 66,000), exact in
     float below 2^24; A = fl(fl(s_a s_b) D) adds two roundings, at most
     2^-23 |A| <= 1.3e-7 for rows of norm 1. The remaining roundings (of e,
     lo and hi in float, of V in double: 1e-13) are below 1e-7; the bound
     adds DC_SLACK = 1e-6 for all of them. For unit rows of d = 768 with no
     outlier coordinates R is about 0.008, so e is about 0.016.
   - elsewhere: the library's fp32 encoder product of the unit rows, whose
     accumulation error for any order of d fused or plain multiply-adds is
     at most gamma_d |u_a| |u_b| ~ d 2^-24 (Higham, Accuracy and Stability,
     3.1); e = 1.01 d 2^-24 + DC_SLACK for every pair.

   Part of lsae's one translation unit (included by main.c), and included
   alone by tests/test_deccos.c: it needs only latentsae.h's internals. */

#if defined(LSAE__AVX512) && defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define DC_VNNI 1
#endif
#define DC_SLACK 1e-6f

typedef struct dc_stats {
    uint64_t stored; /* pairs kept by the running bound during the pass */
    uint64_t exact;  /* of those, computed exactly after the final filter */
} dc_stats;

typedef struct dc_cand {
    uint32_t a, b; /* maxcos[a] may be V(a, b) */
    float hi;
} dc_cand;

typedef struct dc_buf {
    dc_cand *c;
    size_t n, cap;
    int oom;
} dc_buf;

/* V(a, b): the double-precision dot product of two float rows, with eight
   partial sums (element j goes to sum j mod 8) added as ((s0 + s1) + (s2 +
   s3)) + ((s4 + s5) + (s6 + s7)). Each product of two floats is exact in
   double, so a fused multiply-add gives the same bits as a multiply and an
   add; eight chains keep the adder busy. */
static double dc_exact_dot(const float *x, const float *y, size_t d)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t j, i;
    for (j = 0; j + 8 <= d; j += 8)
        for (i = 0; i < 8; ++i) s[i] += (double)x[j + i] * (double)y[j + i];
    for (i = 0; i < 8 && j < d; ++i, ++j) s[i] += (double)x[j] * (double)y[j]; /* the last d mod 8 */
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* keep (a, b, hi): a's maximum may be V(a, b). A full buffer first drops
   the pairs its thread's running bound has since ruled out, and grows only
   if that frees less than half of it. */
static void dc_push(dc_buf *B, const float *lb, uint32_t a, uint32_t b, float hi)
{
    if (B->n == B->cap) {
        size_t i, n = 0;
        for (i = 0; i < B->n; ++i)
            if (B->c[i].hi >= lb[B->c[i].a]) B->c[n++] = B->c[i];
        B->n = n;
        if (B->cap == 0 || n > B->cap / 2) {
            size_t cap = B->cap ? 2 * B->cap : 4096;
            dc_cand *c = cap <= SIZE_MAX / sizeof(dc_cand) ? (dc_cand *)realloc(B->c, cap * sizeof(dc_cand)) : NULL;
            if (!c) {
                if (B->n == B->cap) { B->oom = 1; return; }
            } else {
                B->c = c;
                B->cap = cap;
            }
        }
    }
    B->c[B->n].a = a;
    B->c[B->n].b = b;
    B->c[B->n].hi = hi;
    B->n++;
}

#if defined(DC_VNNI)
/* C[r * 64 + j] = sum_p A[r][p] P[p][j] in int32, r < mr <= 6, j < 64:
   A rows of unsigned bytes (stride lda), P packed as [K4][64][4] signed
   bytes, so one vpdpbusd adds four products per column. Rows mr..5 repeat
   row 0 and are not stored. */
static void dc_kernel_vnni(size_t mr, const uint8_t *A, size_t lda, const int8_t *P, size_t K4, int32_t *C)
{
    const uint8_t *a0 = A, *a1 = A + (mr > 1 ? lda : 0), *a2 = A + (mr > 2 ? 2 * lda : 0);
    const uint8_t *a3 = A + (mr > 3 ? 3 * lda : 0), *a4 = A + (mr > 4 ? 4 * lda : 0), *a5 = A + (mr > 5 ? 5 * lda : 0);
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    __m512i c40 = c00, c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00;
    size_t p;
    for (p = 0; p < K4; ++p) {
        const int8_t *b = P + p * 256;
        const __m512i b0 = _mm512_loadu_si512((const void *)b), b1 = _mm512_loadu_si512((const void *)(b + 64));
        const __m512i b2 = _mm512_loadu_si512((const void *)(b + 128)), b3 = _mm512_loadu_si512((const void *)(b + 192));
        __m512i a;
        int32_t w;
#define DC_ROW(r)                                                               \
        memcpy(&w, a##r + 4 * p, 4);                                            \
        a = _mm512_set1_epi32(w);                                               \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, a, b0); c##r##1 = _mm512_dpbusd_epi32(c##r##1, a, b1); \
        c##r##2 = _mm512_dpbusd_epi32(c##r##2, a, b2); c##r##3 = _mm512_dpbusd_epi32(c##r##3, a, b3);
        DC_ROW(0) DC_ROW(1) DC_ROW(2) DC_ROW(3) DC_ROW(4) DC_ROW(5)
#undef DC_ROW
    }
#define DC_STORE(r)                                                             \
    if (r < mr) {                                                               \
        _mm512_storeu_si512((void *)(C + r * 64), c##r##0); _mm512_storeu_si512((void *)(C + r * 64 + 16), c##r##1); \
        _mm512_storeu_si512((void *)(C + r * 64 + 32), c##r##2); _mm512_storeu_si512((void *)(C + r * 64 + 48), c##r##3); \
    }
    DC_STORE(0) DC_STORE(1) DC_STORE(2) DC_STORE(3) DC_STORE(4) DC_STORE(5)
#undef DC_STORE
}
#define DC_MR 6
#else
#define DC_MR LSAE__MR
#endif

#if defined(DC_VNNI)
/* Quantise the rows U [n, d] as at the top: Au[i][j] = q_ij + 128 (unsigned,
   rows of d4 >= d bytes, padded with 128), Q the same as signed q (padded
   with 0), off[i] = 128 sum_j q_ij, scale[i] = s_i, qn[i] >= |s_i q_i|,
   rn[i] >= |r_i| (rounded up by 1e-6 relative, more than the roundings of
   the residual, 2^-24 relative, and of the sums). d4 is a multiple of 4;
   the rows of Au and Q are written up to d4 only. */
static void dc_quantise(const float *U, size_t n, size_t d, size_t d4, uint8_t *Au, int8_t *Q, int32_t *off, float *scale, float *qn, float *rn)
{
    size_t l, j;
    for (l = 0; l < n; ++l) {
        const float *u = U + l * d;
        __m512 vmx = _mm512_setzero_ps();
        __m512d rr0 = _mm512_setzero_pd(), rr1 = rr0;
        __m512i qq = _mm512_setzero_si512(), sum = qq;
        const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
        float mx = 0.0f, sc, inv, m16[16];
        int32_t i16[16];
        double rr;
        int64_t qqs = 0, sums = 0;
        int i;
        for (j = 0; j < d; j += 16) {
            const __mmask16 k = d - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d - j)) - 1);
            vmx = _mm512_mask_max_ps(vmx, (__mmask16)0xFFFF, vmx, _mm512_abs_ps(_mm512_maskz_loadu_ps(k, u + j)));
        }
        _mm512_storeu_ps(m16, vmx);
        for (i = 0; i < 16; ++i) mx = m16[i] > mx ? m16[i] : mx;
        sc = mx / 127.0f;
        inv = sc > 0 ? 1.0f / sc : 0.0f;
        for (j = 0; j < d4; j += 16) {
            /* lanes past d (and past d4: the stores are masked to d4) are 0 */
            const __mmask16 k = d > j ? (d - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d - j)) - 1)) : (__mmask16)0;
            const __mmask16 k4 = d4 - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d4 - j)) - 1);
            const __m512 x = _mm512_maskz_loadu_ps(k, u + j);
            /* q: any integer would do (the residual below is taken with
               the q chosen); the nearest keeps the bound tight */
            __m512i q = _mm512_mask_cvtps_epi32(_mm512_setzero_si512(), (__mmask16)0xFFFF, _mm512_mul_ps(x, _mm512_set1_ps(inv)));
            __m512 res;
            __m128i q8;
            /* (the masked forms here and below: GCC 12's C++ front end
               warns that the unmasked ones' undefined source may be used
               uninitialized) */
            q = _mm512_mask_min_epi32(q, (__mmask16)0xFFFF, _mm512_mask_max_epi32(q, (__mmask16)0xFFFF, q, lo), hi);
            /* r = u - s q with one rounding (relative 2^-24, inside the
               1 + 1e-6 that rn is rounded up by), summed in double */
            res = _mm512_fnmadd_ps(_mm512_set1_ps(sc), _mm512_mask_cvtepi32_ps(_mm512_setzero_ps(), (__mmask16)0xFFFF, q), x);
            const __m256 l8 = _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(res), 0));
            const __m512d r0 = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, l8);
            rr0 = _mm512_fmadd_pd(r0, r0, rr0);
            {
                const __m256 h = _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(res), 1));
                const __m512d r1 = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, h);
                rr1 = _mm512_fmadd_pd(r1, r1, rr1);
            }
            qq = _mm512_add_epi32(qq, _mm512_mullo_epi32(q, q));
            sum = _mm512_add_epi32(sum, q);
            q8 = _mm512_mask_cvtepi32_epi8(_mm_setzero_si128(), (__mmask16)0xFFFF, q);
            if (Q) _mm_mask_storeu_epi8(Q + l * d4 + j, k4, q8);
            _mm_mask_storeu_epi8(Au + l * d4 + j, k4, _mm_xor_si128(q8, _mm_set1_epi8((char)0x80))); /* q + 128 */
        }
        {
            double r8[8];
            _mm512_storeu_pd(r8, _mm512_add_pd(rr0, rr1));
            rr = ((r8[0] + r8[1]) + (r8[2] + r8[3])) + ((r8[4] + r8[5]) + (r8[6] + r8[7]));
        }
        _mm512_storeu_si512((void *)i16, qq);
        for (i = 0; i < 16; ++i) qqs += i16[i];
        _mm512_storeu_si512((void *)i16, sum);
        for (i = 0; i < 16; ++i) sums += i16[i];
        off[l] = (int32_t)(128 * sums);
        scale[l] = sc;
        qn[l] = (float)((double)sc * sqrt((double)qqs) * (1.0 + 1e-6));
        rn[l] = (float)(sqrt(rr) * (1.0 + 1e-6));
    }
}

/* One tile for dc_kernel_vnni: P[p4][j][i] = Q[c0 + j][4 p4 + i], zero for
   c0 + j >= n. */
static void dc_pack_i8(int8_t *P, const int8_t *Q, size_t n, size_t d4, size_t c0)
{
    size_t j, p4;
    for (j = 0; j < LSAE__NT; ++j) {
        const int8_t *q = c0 + j < n ? Q + (c0 + j) * d4 : NULL;
        for (p4 = 0; p4 < d4 / 4; ++p4) {
            if (q) memcpy(P + p4 * 256 + j * 4, q + 4 * p4, 4);
            else memset(P + p4 * 256 + j * 4, 0, 4);
        }
    }
}
#endif

/* Per latent: the bound's terms, e(a, b) = X[a] Y[b] + Z[a] W[b] + k0. */
typedef struct dc_terms {
    float *X, *Y, *Z, *W, k0;
} dc_terms;

/* One block of approximations C[r][j] = A(r0 + r, c0 + j), r < mr, j < nc:
   updates the thread's running bounds lb and stores the pairs that may be
   a maximum, for the rows (pairs with c0 + j > r0 + r only: the upper
   triangle) and, by symmetry, for the columns. */
static void dc_block(const float *C, size_t r0, size_t mr, size_t c0, size_t nc, const dc_terms *t, float *lb, dc_buf *B)
{
    size_t r, j;
#if defined(LSAE__AVX512)
    /* (the masked forms: GCC 12's C++ front end warns that the unmasked
       ones' undefined source may be used uninitialized) */
#define DC_MAX(x, y) _mm512_mask_max_ps((x), (__mmask16)0xFFFF, (x), (y))
    if (nc == LSAE__NT && r0 + mr <= c0) { /* wholly above the diagonal: 16 columns at a time */
        const __m512 k0 = _mm512_set1_ps(t->k0);
        for (r = 0; r < mr; ++r) {
            const size_t a = r0 + r;
            const __m512 xa = _mm512_set1_ps(t->X[a]), za = _mm512_set1_ps(t->Z[a]);
            __m512 lo[4], hi[4], rl;
            float lba;
            int v;
            for (v = 0; v < 4; ++v) {
                const size_t b = c0 + 16 * (size_t)v;
                const __m512 A = _mm512_loadu_ps(C + r * LSAE__NT + 16 * v);
                const __m512 e = _mm512_fmadd_ps(xa, _mm512_loadu_ps(t->Y + b), _mm512_fmadd_ps(za, _mm512_loadu_ps(t->W + b), k0));
                __m512 cl;
                __mmask16 m;
                lo[v] = _mm512_sub_ps(A, e);
                hi[v] = _mm512_add_ps(A, e);
                cl = DC_MAX(_mm512_loadu_ps(lb + b), lo[v]);
                _mm512_storeu_ps(lb + b, cl);
                m = _mm512_cmp_ps_mask(hi[v], cl, _CMP_GE_OQ);
                if (m) {
                    float h[16];
                    int i;
                    _mm512_storeu_ps(h, hi[v]);
                    for (i = 0; i < 16; ++i)
                        if ((m >> i) & 1) dc_push(B, lb, (uint32_t)(b + (size_t)i), (uint32_t)a, h[i]);
                }
            }
            rl = DC_MAX(DC_MAX(lo[0], lo[1]), DC_MAX(lo[2], lo[3]));
            {
                float h[16];
                int i;
                _mm512_storeu_ps(h, rl);
                for (i = 0; i < 16; ++i)
                    if (h[i] > lb[a]) lb[a] = h[i];
            }
            lba = lb[a];
            for (v = 0; v < 4; ++v) {
                const __mmask16 m = _mm512_cmp_ps_mask(hi[v], _mm512_set1_ps(lba), _CMP_GE_OQ);
                if (m) {
                    float h[16];
                    int i;
                    _mm512_storeu_ps(h, hi[v]);
                    for (i = 0; i < 16; ++i)
                        if ((m >> i) & 1) dc_push(B, lb, (uint32_t)a, (uint32_t)(c0 + 16 * (size_t)v + (size_t)i), h[i]);
                }
            }
        }
        return;
    }
#undef DC_MAX
#elif defined(LSAE__AVX2)
    if (nc == LSAE__NT && r0 + mr <= c0) { /* wholly above the diagonal: 8 columns at a time; the fp32 product, e = k0 */
        const __m256 k0 = _mm256_set1_ps(t->k0);
        for (r = 0; r < mr; ++r) {
            const size_t a = r0 + r;
            __m256 lo[8], hi[8], rl;
            float lba, h[8];
            int v, i;
            for (v = 0; v < 8; ++v) {
                const size_t b = c0 + 8 * (size_t)v;
                const __m256 A = _mm256_loadu_ps(C + r * LSAE__NT + 8 * v);
                __m256 cl;
                int m;
                lo[v] = _mm256_sub_ps(A, k0);
                hi[v] = _mm256_add_ps(A, k0);
                cl = _mm256_max_ps(_mm256_loadu_ps(lb + b), lo[v]);
                _mm256_storeu_ps(lb + b, cl);
                m = _mm256_movemask_ps(_mm256_cmp_ps(hi[v], cl, _CMP_GE_OQ));
                if (m) {
                    _mm256_storeu_ps(h, hi[v]);
                    for (i = 0; i < 8; ++i)
                        if ((m >> i) & 1) dc_push(B, lb, (uint32_t)(b + (size_t)i), (uint32_t)a, h[i]);
                }
            }
            rl = _mm256_max_ps(_mm256_max_ps(_mm256_max_ps(lo[0], lo[1]), _mm256_max_ps(lo[2], lo[3])),
                               _mm256_max_ps(_mm256_max_ps(lo[4], lo[5]), _mm256_max_ps(lo[6], lo[7])));
            _mm256_storeu_ps(h, rl);
            for (i = 0; i < 8; ++i)
                if (h[i] > lb[a]) lb[a] = h[i];
            lba = lb[a];
            for (v = 0; v < 8; ++v) {
                const int m = _mm256_movemask_ps(_mm256_cmp_ps(hi[v], _mm256_set1_ps(lba), _CMP_GE_OQ));
                if (m) {
                    _mm256_storeu_ps(h, hi[v]);
                    for (i = 0; i < 8; ++i)
                        if ((m >> i) & 1) dc_push(B, lb, (uint32_t)a, (uint32_t)(c0 + 8 * (size_t)v + (size_t)i), h[i]);
                }
            }
        }
        return;
    }
#endif
    for (r = 0; r < mr; ++r) {
        const size_t a = r0 + r;
        for (j = a + 1 > c0 ? a + 1 - c0 : 0; j < nc; ++j) {
            const size_t b = c0 + j;
            const float A = C[r * LSAE__NT + j], e = t->X[a] * t->Y[b] + t->Z[a] * t->W[b] + t->k0;
            const float lo = A - e, hi = A + e;
            if (lo > lb[a]) lb[a] = lo;
            if (hi >= lb[a]) dc_push(B, lb, (uint32_t)a, (uint32_t)b, hi);
            if (lo > lb[b]) lb[b] = lo;
            if (hi >= lb[b]) dc_push(B, lb, (uint32_t)b, (uint32_t)a, hi);
        }
    }
}

static int dc_cmp_cand(const void *x, const void *y)
{
    const dc_cand *p = (const dc_cand *)x, *q = (const dc_cand *)y;
    return p->a != q->a ? (p->a > q->a) - (p->a < q->a) : (p->b > q->b) - (p->b < q->b);
}

/* maxcos[l] for the unit rows U [L, d] (NaN for every l when L < 2).
   Returns 1, or 0 when memory runs out. st (may be NULL) gets the counts. */
static int dc_max_cos(const float *U, size_t L, size_t d, float *maxcos, int nthreads, dc_stats *st)
{
    const size_t ntiles = (L + LSAE__NT - 1) / LSAE__NT;
    size_t G, ngroups, l, i, tile_elems, total = 0;
    float *lb = NULL, *terms = NULL;
    dc_buf *bufs = NULL;
    dc_cand *all = NULL;
    double *val = NULL;
    void *pack = NULL;
    dc_terms t;
    int nt = nthreads < 1 ? 1 : nthreads, s, ok = 0;
    ptrdiff_t gi;
#if defined(DC_VNNI)
    const size_t d4 = (d + 3) / 4 * 4;
    uint8_t *Au = NULL;
    int8_t *Q = NULL;
    int32_t *off = NULL; /* 128 sum_j q_b[j]: what the unsigned offset adds */
    float *scale = NULL;
#endif
    if (st) st->stored = st->exact = 0;
    if (L < 2 || d == 0) {
        for (l = 0; l < L; ++l) maxcos[l] = L < 2 ? NAN : 0.0f;
        return 1;
    }
    if (L > UINT32_MAX || (size_t)nt > SIZE_MAX / L / sizeof(float) || L > SIZE_MAX / 4 / sizeof(float)) return 0;
#if defined(DC_VNNI)
    if (d4 >= 66000 || d4 > SIZE_MAX / L || d4 > SIZE_MAX / LSAE__NT) return 0;
    tile_elems = d4 * LSAE__NT; /* bytes */
    G = ((size_t)1 << 20) / (tile_elems + 1);
    G = G < 1 ? 1 : G > 16 ? 16 : G;
#else
    if (d > SIZE_MAX / LSAE__NT / sizeof(float)) return 0;
    tile_elems = d * LSAE__NT * sizeof(float); /* bytes */
    G = lsae__tile_group(d);
#endif
    ngroups = (ntiles + G - 1) / G;
    if ((size_t)nt > SIZE_MAX / G / tile_elems) return 0;
    lb = (float *)malloc((size_t)nt * L * sizeof(float));
    terms = (float *)calloc(4 * L, sizeof(float));
    bufs = (dc_buf *)calloc((size_t)nt, sizeof(dc_buf));
    pack = malloc((size_t)nt * G * tile_elems);
    if (!lb || !terms || !bufs || !pack) goto done;
    t.X = terms; t.Y = terms + L; t.Z = terms + 2 * L; t.W = terms + 3 * L;
    for (l = 0; l < (size_t)nt * L; ++l) lb[l] = -INFINITY;
#if defined(DC_VNNI)
    Au = (uint8_t *)malloc(L * d4);
    Q = (int8_t *)calloc(L * d4, 1);
    off = (int32_t *)malloc((ntiles * LSAE__NT) * sizeof(int32_t));
    scale = (float *)calloc(ntiles * LSAE__NT, sizeof(float));
    if (!Au || !Q || !off || !scale) goto done;
    for (l = 0; l < ntiles * LSAE__NT; ++l) off[l] = 0;
    dc_quantise(U, L, d, d4, Au, Q, off, scale, t.X, t.Y);
    for (l = 0; l < L; ++l) {
        t.Z[l] = t.Y[l];
        t.W[l] = (t.X[l] + t.Y[l]) * (1.0f + 1e-6f);
    }
    /* e = X_a Y_b + Z_a W_b + k0 = Q_a R_b + R_a (Q_b + R_b) + slack */
    t.k0 = DC_SLACK;
#else
    t.k0 = (float)(1.01 * (double)d * 5.9604644775390625e-8) + DC_SLACK; /* 1.01 d 2^-24 */
#endif

    LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (gi = 0; gi < (ptrdiff_t)ngroups; ++gi) {
        const size_t grp = ngroups - 1 - (size_t)gi; /* the last groups have the most rows above them */
        const size_t t0 = grp * G, t1 = t0 + G < ntiles ? t0 + G : ntiles, rows = t1 * LSAE__NT < L ? t1 * LSAE__NT : L;
        const int me = lsae__thread_id();
        float *mylb = lb + (size_t)me * L;
        dc_buf *B = bufs + me;
        float Cf[DC_MR * LSAE__NT];
        size_t tt, r0;
#if defined(DC_VNNI)
        int8_t *P = (int8_t *)pack + (size_t)me * G * tile_elems;
        int32_t Ci[DC_MR * LSAE__NT];
        for (tt = t0; tt < t1; ++tt) dc_pack_i8(P + (tt - t0) * tile_elems, Q, L, d4, tt * LSAE__NT);
#else
        float *P = (float *)pack + (size_t)me * G * d * LSAE__NT;
        for (tt = t0; tt < t1; ++tt)
            lsae__pack_tile(P + (tt - t0) * d * LSAE__NT, U, d, tt * LSAE__NT, L - tt * LSAE__NT < LSAE__NT ? L - tt * LSAE__NT : LSAE__NT);
#endif
        for (r0 = 0; r0 < rows; r0 += DC_MR) {
            const size_t mr = rows - r0 < DC_MR ? rows - r0 : DC_MR;
            for (tt = t0; tt < t1; ++tt) {
                const size_t c0 = tt * LSAE__NT, nc = L - c0 < LSAE__NT ? L - c0 : LSAE__NT;
                if (r0 >= c0 + nc) continue; /* the whole block is on or below the diagonal */
#if defined(DC_VNNI)
                {
                    size_t r;
                    int v;
                    dc_kernel_vnni(mr, Au + r0 * d4, d4, P + (tt - t0) * tile_elems, d4 / 4, Ci);
                    /* A = fl(fl(s_a s_b) D), D = the exact integer q_a . q_b */
                    for (r = 0; r < mr; ++r) {
                        const __m512 sa = _mm512_set1_ps(scale[r0 + r]);
                        for (v = 0; v < 4; ++v) {
                            const __m512i D = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(Ci + r * LSAE__NT + 16 * v)),
                                                               _mm512_loadu_si512((const void *)(off + c0 + 16 * v)));
                            _mm512_storeu_ps(Cf + r * LSAE__NT + 16 * v,
                                             _mm512_mul_ps(_mm512_mul_ps(sa, _mm512_loadu_ps(scale + c0 + 16 * v)),
                                                           _mm512_mask_cvtepi32_ps(_mm512_setzero_ps(), (__mmask16)0xFFFF, D)));
                        }
                    }
                }
#else
                lsae__tile_rows(Cf, LSAE__NT, U + r0 * d, d, mr, P + (tt - t0) * d * LSAE__NT, d, 0);
#endif
                dc_block(Cf, r0, mr, c0, nc, &t, mylb, B);
            }
        }
    }

    /* the final bounds, and the stored pairs they leave */
    for (l = 0; l < L; ++l)
        for (s = 1; s < nt; ++s)
            if (lb[(size_t)s * L + l] > lb[l]) lb[l] = lb[(size_t)s * L + l];
    for (s = 0; s < nt; ++s) {
        if (bufs[s].oom) goto done;
        if (st) st->stored += bufs[s].n;
        for (i = 0; i < bufs[s].n; ++i) total += bufs[s].c[i].hi >= lb[bufs[s].c[i].a];
    }
    all = (dc_cand *)malloc((total ? total : 1) * sizeof(dc_cand));
    val = (double *)malloc((total ? total : 1) * sizeof(double));
    if (!all || !val) goto done;
    total = 0;
    for (s = 0; s < nt; ++s)
        for (i = 0; i < bufs[s].n; ++i)
            if (bufs[s].c[i].hi >= lb[bufs[s].c[i].a]) all[total++] = bufs[s].c[i];
    /* by row, so each row's vector is reused from cache */
    qsort(all, total, sizeof(dc_cand), dc_cmp_cand);
    if (st) st->exact = total;
    {
        ptrdiff_t ci;
        LSAE__OMP(parallel for schedule(static) num_threads(nt))
        for (ci = 0; ci < (ptrdiff_t)total; ++ci)
            val[ci] = dc_exact_dot(U + (size_t)all[ci].a * d, U + (size_t)all[ci].b * d, d);
    }
    {
        double *best = (double *)malloc(L * sizeof(double));
        if (!best) goto done;
        for (l = 0; l < L; ++l) best[l] = -INFINITY;
        for (i = 0; i < total; ++i)
            if (val[i] > best[all[i].a]) best[all[i].a] = val[i];
        for (l = 0; l < L; ++l) maxcos[l] = (float)best[l];
        free(best);
    }
    ok = 1;
done:
    if (bufs)
        for (s = 0; s < nt; ++s) free(bufs[s].c);
    free(bufs); free(lb); free(terms); free(pack); free(all); free(val);
#if defined(DC_VNNI)
    free(Au); free(Q); free(off); free(scale);
#endif
    return ok;
}
