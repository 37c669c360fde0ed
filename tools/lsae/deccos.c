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
   (the max over threads) and computed exactly, each row's from the
   largest hi down until hi cannot beat the largest V found.

   The approximation, chosen at compile time:

   - where the library has a fast int8 product (LSAE__LPFAST: AVX-512 VNNI,
     or AVX2; DC_INT8), and d <= 65,536: with VNNI or AVX-VNNI the library's
     int8 copy of the encode pre-pass (latentsae.h, lsae__lp_build,
     lsae__lp_row, lsae__lp_tile; docs/math.md 2.12). Every unit row u is
     quantised with its own scale, u = s q + r with s = max |u_j| / 127, q_j
     the nearest integer to u_j / s in [-127, 127] (any integer would keep
     what follows true), r = u - s q the residual. Then, exactly,
         V(a, b) = u_a . (s_b q_b + r_b) = s_a s_b (q_a . q_b) + u_a . r_b + r_a . (s_b q_b)
     and by Cauchy-Schwarz
         |V - s_a s_b (q_a . q_b)| <= |u_a| |r_b| + |r_a| |s_b q_b|.
     The four norms are the library's: taken in double from the actual
     residuals and rounded up to float (xn, xrn of the row side; cw >= |r_b|,
     it adds the encoder's gamma_d |u_b|, and qn of the column side). q_a .
     q_b is an exact integer (|q_a . q_b| <= 127^2 d, and the kernels' sums
     with the unsigned offset <= 255 127 d < 2^31); A = fl(fl(s_a s_b)
     fl(q_a . q_b)) adds three roundings, at most 2^-22 |A| <= 2.4e-7 for
     rows of norm 1. The remaining roundings (of e, lo and hi in float, of V
     in double: 1e-13) are below 1e-7; the bound adds DC_SLACK = 1e-6 for all
     of them. For unit rows of d = 768 with no outlier coordinates |r| is
     about 0.008, so e is about 0.016.
     AVX2 builds without VNNI or AVX-VNNI (DC_I7) quantise both sides to 7 bits
     instead, s = max |u_j| / 63, q_j in [-63, 63] (dc_row7, dc_cols): the
     same identity and bound with their own measured norms (cw = |r_b|, qn
     = |u_b| + |r_b| >= |s_b q_b|), |q_a . q_b| <= 63^2 d, the kernel's sums
     with its offset 64 at most 127 63 d < 2^31; |r| about 0.016, e about
     0.032, for a kernel that adds two steps' pair sums in int16 (see DC_I7
     below).
   - elsewhere: the library's fp32 encoder product of the unit rows, whose
     accumulation error for any order of d fused or plain multiply-adds is
     at most gamma_d |u_a| |u_b| ~ d 2^-24 (Higham, Accuracy and Stability,
     3.1); e = 1.01 d 2^-24 + DC_SLACK for every pair.

   Part of lsae's one translation unit (included by main.c), and included
   alone by tests/test_deccos.c: it needs only latentsae.h's internals. */

#if defined(LSAE__LPFAST)
#define DC_INT8 1
#endif
#define DC_SLACK 1e-6f
#define DC_INT8_MAXD 65536 /* lsae__lp_applies' limit: 255 127 d < 2^31 */
#define DC_MR LSAE__LPMR   /* the most rows a block: the int8 kernel's (the fp32 one takes LSAE__MR <= it) */
typedef char dc_check_mr[LSAE__MR <= LSAE__LPMR ? 1 : -1];

typedef struct dc_stats {
    uint64_t stored; /* pairs kept by the running bound during the pass */
    uint64_t exact;  /* of those, computed exactly (past the final filter, until a row's maximum is settled) */
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
    size_t j = 0, i;
#if defined(LSAE__AVX2)
    /* the eight sums in two vectors, s0-s3 and s4-s7: each lane adds the
       same exact products in the same order, so the same bits (the scalar
       loop was 0.65 us a pair at d 768, the exact pairs 3% of an AVX2
       build's lsae eval) */
    {
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
        for (; j + 8 <= d; j += 8) {
            const __m256 vx = _mm256_loadu_ps(x + j), vy = _mm256_loadu_ps(y + j);
            lo = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(vx)), _mm256_cvtps_pd(_mm256_castps256_ps128(vy)), lo);
            hi = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(vx, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(vy, 1)), hi);
        }
        _mm256_storeu_pd(s, lo);
        _mm256_storeu_pd(s + 4, hi);
    }
#endif
    for (; j + 8 <= d; j += 8)
        for (i = 0; i < 8; ++i) s[i] += (double)x[j + i] * (double)y[j + i];
    for (i = 0; i < 8 && j < d; ++i, ++j) s[i] += (double)x[j] * (double)y[j]; /* the last d mod 8 */
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

#if defined(DC_INT8)
/* The quantisation and the product of the pass.

   AVX2 without VNNI (DC_I7): vpmaddubsw multiplies unsigned by signed
   bytes into int16 sums of adjacent pairs, which saturate above 32767. The
   library's kernel (lsae__lp_tile) keeps 8 bits for the rows and 7 for
   the weights (pairs up to 2 255 63 = 32130), so every pair sum must be
   widened to int32 by a vpmaddwd before the next is added (until
   2026-12-07 it kept 8 bits on both sides with the sign trick: per step a
   vpxor on the weights, and the row's |xq| and sign mask).
   Here both sides are quantised to 7 bits instead, q in [-63, 63] (dc_row7;
   the same quantisation for rows and columns, dc_cols lays the columns
   out as lsae__lp_build does), the rows given as unsigned bytes xu = q_a +
   64 in [1, 127]. A pair sum of vpmaddubsw is then at most 2 127 63 =
   16002 in size, two of them added in int16 at most 32004 < 32767, so
   one vpmaddwd (by ones, into int32) serves two four-byte steps: five
   vector uops per 64 products per row where the library's kernel takes
   six and a half (the sign trick took eight). acc = sum_p (q_a,p +
   64) q_b,p = q_a . q_b + 64 wsum_b with |acc| <= 127 63 dp < 2^31 for dp
   <= DC_INT8_MAXD. 1.4x the speed of the library's sign-trick kernel of
   then on a 2-core AVX-512 Xeon built -mavx2 -mfma (80 against 56 GMAC/s a
   thread in L2). Coarser
   quantisation only widens the bound (|r| about doubles: more candidates
   computed exactly), never the result: the top comment's bound holds for
   any integers q, since the residuals r = u - s q are measured, not
   assumed.

   Elsewhere (VNNI, AVX-VNNI, or no fast int8 product): the library's rows, columns
   and kernel as they are. DC_QMAX is the largest |q|, DC_UOFF the offset
   the row bytes carry, DC_ROFF the one left in the kernel's sums (acc =
   q_a . q_b + DC_ROFF wsum_b). */
#if defined(LSAE__AVX2) && !defined(LSAE__VNNI) && !defined(LSAE__AVXVNNI)
#define DC_I7 1
#define DC_QMAX 63 /* the largest |q|, both sides */
#define DC_UOFF 64 /* the row bytes: q + DC_UOFF */
#define DC_ROFF 64
#else
#define DC_QMAX 127
#define DC_UOFF 128
#define DC_ROFF LSAE__LPOFF
#endif

#if defined(DC_I7)
/* q = round(v / s) in [-63, 63] as v times inv = 1 / s, lsae__q8's
   clamps (inv may be inf for a subnormal largest |v|; NaN gives 0) */
static int dc_q7(float v, float inv)
{
    const float t = v * inv;
    if (t >= 63.0f) return 63;
    if (t <= -63.0f) return -63;
    if (!(t == t)) return 0;
    return (int)(t < 0.0f ? t - 0.5f : t + 0.5f);
}

/* One row x [d] for dc_tile: u [dp] = xq + 64 in [1, 127] (the padding 64,
   xq = 0), xq = round(x / sx) in [-63, 63], sx = max_p |x_p| / 63; xn >=
   ||x||, xrn >= ||x - sx xq|| rounded up to floats. lsae__lp_row's AVX2
   form with 63 for 127, and its bound: the residual r_f = fl(x - sx q) is
   taken in float with one rounding, |r_f - r| <= 2^-24 |r| + 2^-149, its
   square is exact in double and summed there (relative error below d
   2^-53), so ||r|| <= (sqrt(rn2) + sqrt(d) 2^-149)(1 + 2e-7); the last d
   mod 8 entries have their residual in double (sx q exact, one rounding
   of 2^-53). |x inv| <= 63 (1 + 2^-23): no conversion overflows. */
static void dc_row7(const float *x, size_t d, size_t dp, uint8_t *u, float *sxo, float *xn, float *xrn)
{
    const size_t d8 = d / 8 * 8;
    double xn2 = 0.0, rn2 = 0.0;
    float mx = 0.0f, sx, inv, m8[8];
    size_t p, j;
    {
        const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
        __m256 vmx = _mm256_setzero_ps();
        for (p = 0; p < d8; p += 8) vmx = _mm256_max_ps(vmx, _mm256_and_ps(_mm256_loadu_ps(x + p), absm));
        _mm256_storeu_ps(m8, vmx);
        for (j = 0; j < 8; ++j) mx = m8[j] > mx ? m8[j] : mx;
        for (p = d8; p < d; ++p) mx = fabsf(x[p]) > mx ? fabsf(x[p]) : mx;
    }
    sx = mx / 63.0f;
    inv = sx > 0.0f ? 1.0f / sx : 0.0f;
    p = 0;
    if (inv <= FLT_MAX) {
        const __m256 vinv = _mm256_set1_ps(inv), vsx = _mm256_set1_ps(sx);
        const __m256i lo = _mm256_set1_epi32(-63), hi = _mm256_set1_epi32(63);
        const __m128i off = _mm_set1_epi8(64);
        __m256d rr0 = _mm256_setzero_pd(), rr1 = rr0, xx0 = rr0, xx1 = rr0;
        double acc[4];
        for (; p < d8; p += 8) {
            const __m256 v = _mm256_loadu_ps(x + p);
            const __m256i q = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, vinv)), lo), hi);
            const __m256 res = _mm256_fnmadd_ps(vsx, _mm256_cvtepi32_ps(q), v);
            const __m256d rl = _mm256_cvtps_pd(_mm256_castps256_ps128(res)), rh = _mm256_cvtps_pd(_mm256_extractf128_ps(res, 1));
            const __m256d xl = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), xh = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
            /* eight int32 in [-63, 63] to bytes (the packs saturate nothing), + 64 */
            const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
            _mm_storel_epi64((__m128i *)(void *)(u + p), _mm_add_epi8(_mm_packs_epi16(w16, w16), off));
            rr0 = _mm256_fmadd_pd(rl, rl, rr0);
            rr1 = _mm256_fmadd_pd(rh, rh, rr1);
            xx0 = _mm256_fmadd_pd(xl, xl, xx0);
            xx1 = _mm256_fmadd_pd(xh, xh, xx1);
        }
        _mm256_storeu_pd(acc, _mm256_add_pd(rr0, rr1));
        rn2 = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        _mm256_storeu_pd(acc, _mm256_add_pd(xx0, xx1));
        xn2 = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
    /* the last d mod 8 entries and the padding; every entry when 1 / sx
       overflows (the largest |x| subnormal: q is +-63 or 0 there, and the
       residual is measured all the same) */
    for (; p < dp; ++p) {
        const int v = (p < d && sx > 0.0f) ? dc_q7(x[p], inv) : 0;
        u[p] = (uint8_t)(v + 64);
        if (p < d) {
            const double rv = (double)x[p] - (double)sx * v;
            rn2 += rv * rv;
            xn2 += (double)x[p] * x[p];
        }
    }
    *sxo = sx;
    *xn = lsae__up(sqrt(xn2) * (1.0 + 1e-15));
    *xrn = lsae__up((sqrt(rn2) + sqrt((double)d) * 1.5e-45) * (1.0 + 2e-7));
}
#endif

/* acc[r][j] = sum_p (xq[r][p] + DC_ROFF) wq[l0 + j][p] over the dp entries,
   r < mr <= LSAE__LPMR, for one tile (Wt: lsae__lp_build's [dp/4][NT][4]
   of NT latents); xu: dc_row's bytes, rows ldx apart. */
static void dc_tile(int32_t *acc, const uint8_t *xu, size_t ldx, size_t mr, const int8_t *Wt, size_t dp)
{
#if defined(DC_I7)
    /* Two rows by 32 latents at a time (eight int32 accumulators, a row's
       two broadcast steps, the ones; the weights as memory operands); the
       half tile of weights (dp 32 bytes) stays in L1 while the row pairs
       sweep it. Two four-byte steps a pass: per row and 8 latents two
       vpmaddubsw, their vpaddw (exact: the block comment above), one
       vpmaddwd and one vpaddd; an odd last step alone. */
    const size_t dp4 = dp / 4, ld = LSAE__NT * 4;
    const __m256i ones = _mm256_set1_epi16(1), zero = _mm256_setzero_si256();
    size_t h, r0, p;
    for (h = 0; h < LSAE__NT; h += 32)
        for (r0 = 0; r0 < mr; r0 += 2) {
            const uint8_t *x0 = xu + r0 * ldx, *x1 = r0 + 1 < mr ? x0 + ldx : x0;
            __m256i c00 = zero, c01 = zero, c02 = zero, c03 = zero, c10 = zero, c11 = zero, c12 = zero, c13 = zero;
            int32_t *o = acc + r0 * LSAE__NT + h;
            int32_t v;
#define DC_LD(ptr) _mm256_loadu_si256((const __m256i *)(const void *)(ptr))
#define DC_PAIR(a, a2, b, c) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(a, DC_LD(b)), _mm256_maddubs_epi16(a2, DC_LD((b) + ld))), ones))
#define DC_ONE(a, b, c) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, DC_LD(b)), ones))
            for (p = 0; p + 2 <= dp4; p += 2) {
                const int8_t *b = Wt + p * ld + h * 4;
                __m256i a, a2;
                memcpy(&v, x0 + 4 * p, 4); a = _mm256_set1_epi32(v);
                memcpy(&v, x0 + 4 * p + 4, 4); a2 = _mm256_set1_epi32(v);
                DC_PAIR(a, a2, b, c00); DC_PAIR(a, a2, b + 32, c01); DC_PAIR(a, a2, b + 64, c02); DC_PAIR(a, a2, b + 96, c03);
                memcpy(&v, x1 + 4 * p, 4); a = _mm256_set1_epi32(v);
                memcpy(&v, x1 + 4 * p + 4, 4); a2 = _mm256_set1_epi32(v);
                DC_PAIR(a, a2, b, c10); DC_PAIR(a, a2, b + 32, c11); DC_PAIR(a, a2, b + 64, c12); DC_PAIR(a, a2, b + 96, c13);
            }
            if (p < dp4) {
                const int8_t *b = Wt + p * ld + h * 4;
                __m256i a;
                memcpy(&v, x0 + 4 * p, 4); a = _mm256_set1_epi32(v);
                DC_ONE(a, b, c00); DC_ONE(a, b + 32, c01); DC_ONE(a, b + 64, c02); DC_ONE(a, b + 96, c03);
                memcpy(&v, x1 + 4 * p, 4); a = _mm256_set1_epi32(v);
                DC_ONE(a, b, c10); DC_ONE(a, b + 32, c11); DC_ONE(a, b + 64, c12); DC_ONE(a, b + 96, c13);
            }
#undef DC_ONE
#undef DC_PAIR
#undef DC_LD
            lsae__store_2x32(o, r0 + 1 < mr, c00, c01, c02, c03, c10, c11, c12, c13);
        }
#else
    lsae__lp_tile(acc, xu, ldx, mr, Wt, dp);
#endif
}

/* One row of the row side: u [dp] = xq + DC_UOFF with |xq| <= DC_QMAX
   (the padding xq = 0), sx, xn >= ||x||, xrn >= ||x - sx xq|| (dc_row7,
   or lsae__lp_row) */
static void dc_row(const float *x, size_t d, size_t dp, uint8_t *u, float *sxo, float *xn, float *xrn)
{
#if defined(DC_I7)
    dc_row7(x, d, dp, u, sxo, xn, xrn);
#else
    lsae__lp_row(x, d, dp, u, sxo, xn, xrn);
#endif
}

/* The row side of the int8 product for n unit rows U [n, d]: Au [n, dp]
   (dc_row's bytes), scale s, X = |u| and Z = |r| rounded up. */
static void dc_rows_i8(const float *U, size_t n, size_t d, size_t dp, uint8_t *Au, float *scale, float *X, float *Z, int nthreads)
{
    ptrdiff_t l;
    (void)nthreads;
    LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
    for (l = 0; l < (ptrdiff_t)n; ++l)
        dc_row(U + (size_t)l * d, d, dp, Au + (size_t)l * dp, scale + l, X + l, Z + l);
}

/* The column side for n unit rows U [n, d], in the layout and fields of
   the library's lsae__lp (lsae__lp_build): the int8 tiles wq, wsum = sum_p
   q_p, the scale sw, and the bound's terms cw >= |r| and qn >= |s q|.
   DC_I7: the 7-bit quantisation of dc_row7 (the rows' own when Au, scale,
   X, Z are given: then they must be dc_rows_i8's of U; else taken here),
   cw = |r| and qn = |u| + |r| >= |s q| (the triangle inequality, rounded
   up); the latents past n in the last tile are all 0. Elsewhere
   lsae__lp_build (whose cw also holds the encoder's gamma_d |u|: a
   larger bound is still a bound). Returns LSAE_OK or the library's error. */
static lsae_result dc_cols(lsae__lp *q, const float *U, size_t n, size_t d, const uint8_t *Au, const float *scale, const float *X, const float *Z,
                           int nthreads)
{
#if defined(DC_I7)
    const size_t dp = (d + 3) / 4 * 4, dp4 = dp / 4;
    uint8_t *own = NULL;
    float *oscale = NULL, *oX = NULL, *oZ = NULL;
    size_t bytes, l;
    ptrdiff_t li;
    memset(q, 0, sizeof *q);
    q->d = d;
    q->L = n;
    q->dp = dp;
    q->ntiles = (n + LSAE__NT - 1) / LSAE__NT;
    l = q->ntiles * LSAE__NT;
    if (!lsae__mul_size(l, dp, &bytes)) return lsae__err(LSAE_INVALID_ARGS, "int8 copy of %zu x %zu is too large", n, d);
    q->wq = (int8_t *)lsae__alloc_array(NULL, bytes ? bytes : 1, 1, "int8 copy");
    q->wsum = q->wq ? (int32_t *)lsae__alloc_array(NULL, l ? l : 1, sizeof(int32_t), "int8 copy") : NULL;
    q->sw = q->wsum ? (float *)lsae__alloc_array(NULL, l ? l : 1, sizeof(float), "int8 copy") : NULL;
    q->cw = q->sw ? (float *)lsae__alloc_array(NULL, l ? l : 1, sizeof(float), "int8 copy") : NULL;
    q->qn = q->cw ? (float *)lsae__alloc_array(NULL, l ? l : 1, sizeof(float), "int8 copy") : NULL;
    if (!q->qn) { lsae__lp_free(NULL, q); return LSAE_OUT_OF_MEMORY; }
    if (!Au) {
        own = (uint8_t *)malloc(n * dp + 1); /* (n dp <= bytes: checked above) */
        oscale = (float *)malloc((n ? n : 1) * sizeof(float));
        oX = (float *)malloc((n ? n : 1) * sizeof(float));
        oZ = (float *)malloc((n ? n : 1) * sizeof(float));
        if (!own || !oscale || !oX || !oZ) {
            free(own); free(oscale); free(oX); free(oZ);
            lsae__lp_free(NULL, q);
            return lsae__err(LSAE_OUT_OF_MEMORY, "int8 copy of %zu x %zu", n, d);
        }
        dc_rows_i8(U, n, d, dp, own, oscale, oX, oZ, nthreads);
        Au = own; scale = oscale; X = oX; Z = oZ;
    }
    (void)nthreads;
    LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
    for (li = 0; li < (ptrdiff_t)(q->ntiles * LSAE__NT); ++li) {
        const size_t lat = (size_t)li, t = lat / LSAE__NT, j = lat % LSAE__NT;
        int8_t *base = q->wq + t * dp4 * LSAE__NT * 4 + j * 4;
        size_t p;
        int32_t sum = 0;
        if (lat >= n) {
            for (p = 0; p < dp; ++p) base[(p / 4) * LSAE__NT * 4 + p % 4] = 0;
            q->wsum[lat] = 0;
            q->sw[lat] = q->cw[lat] = q->qn[lat] = 0.0f;
            continue;
        }
        for (p = 0; p < dp; ++p) {
            const int v = (int)Au[lat * dp + p] - 64;
            base[(p / 4) * LSAE__NT * 4 + p % 4] = (int8_t)v;
            sum += v;
        }
        q->wsum[lat] = sum;
        q->sw[lat] = scale[lat];
        q->cw[lat] = Z[lat];
        q->qn[lat] = lsae__up((double)X[lat] + (double)Z[lat]);
    }
    free(own); free(oscale); free(oX); free(oZ);
    return LSAE_OK;
#else
    (void)Au; (void)scale; (void)X; (void)Z;
    return lsae__lp_build(NULL, q, U, n, d, nthreads);
#endif
}

/* The approximations of a block from dc_tile's sums:
   C[r][j] = fl(fl(sa[r] sb[j]) fl(q_a . q_b)), q_a . q_b = Ci - DC_ROFF wsum[j] */
static void dc_approx_i8(float *C, const int32_t *Ci, size_t mr, const float *sa, const float *sb, const int32_t *wsum)
{
    size_t r, j;
#if defined(LSAE__AVX2)
    /* 8 at a time: the same products and conversion (round to nearest, as
       the scalar cast), so the same bits; the scalar loop was 2% of an AVX2
       build's lsae eval */
    const __m256i off = _mm256_set1_epi32(DC_ROFF);
    for (r = 0; r < mr; ++r) {
        const __m256 va = _mm256_set1_ps(sa[r]);
        for (j = 0; j < LSAE__NT; j += 8) {
            const __m256i q = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(Ci + r * LSAE__NT + j)),
                                               _mm256_mullo_epi32(off, _mm256_loadu_si256((const __m256i *)(const void *)(wsum + j))));
            _mm256_storeu_ps(C + r * LSAE__NT + j, _mm256_mul_ps(_mm256_mul_ps(va, _mm256_loadu_ps(sb + j)), _mm256_cvtepi32_ps(q)));
        }
    }
#else
    for (r = 0; r < mr; ++r)
        for (j = 0; j < LSAE__NT; ++j)
            C[r * LSAE__NT + j] = (sa[r] * sb[j]) * (float)(Ci[r * LSAE__NT + j] - DC_ROFF * wsum[j]);
#endif
}
#endif

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
    if (nc == LSAE__NT && r0 + mr <= c0) { /* wholly above the diagonal: 8 columns at a time */
        const __m256 k0 = _mm256_set1_ps(t->k0);
        for (r = 0; r < mr; ++r) {
            const size_t a = r0 + r;
            const __m256 xa = _mm256_set1_ps(t->X[a]), za = _mm256_set1_ps(t->Z[a]);
            __m256 lo[8], hi[8], rl;
            float lba, h[8];
            int v, i;
            for (v = 0; v < 8; ++v) {
                const size_t b = c0 + 8 * (size_t)v;
                const __m256 A = _mm256_loadu_ps(C + r * LSAE__NT + 8 * v);
                const __m256 e = _mm256_fmadd_ps(xa, _mm256_loadu_ps(t->Y + b), _mm256_fmadd_ps(za, _mm256_loadu_ps(t->W + b), k0));
                __m256 cl;
                int m;
                lo[v] = _mm256_sub_ps(A, e);
                hi[v] = _mm256_add_ps(A, e);
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

/* by row a, then by hi from the largest (then by b, a fixed order) */
static int dc_cmp_cand(const void *x, const void *y)
{
    const dc_cand *p = (const dc_cand *)x, *q = (const dc_cand *)y;
    if (p->a != q->a) return (p->a > q->a) - (p->a < q->a);
    if (p->hi != q->hi) return (p->hi < q->hi) - (p->hi > q->hi);
    return (p->b > q->b) - (p->b < q->b);
}

/* maxcos[l] for the unit rows U [L, d] (NaN for every l when L < 2).
   Returns 1, or 0 when memory runs out. st (may be NULL) gets the counts. */
static int dc_max_cos(const float *U, size_t L, size_t d, float *maxcos, int nthreads, dc_stats *st)
{
    const size_t ntiles = (L + LSAE__NT - 1) / LSAE__NT;
    size_t G = 1, ngroups, l, i, tile_elems = 0, total = 0, mrmax = LSAE__MR;
    float *lb = NULL, *terms = NULL;
    dc_buf *bufs = NULL;
    dc_cand *all = NULL;
    float *pack = NULL; /* the fp32 product's tiles, per thread */
    dc_terms t;
    int nt = nthreads < 1 ? 1 : nthreads, s, ok = 0, i8 = 0;
    ptrdiff_t gi;
#if defined(DC_INT8)
    const size_t dp = (d + 3) / 4 * 4;
    lsae__lp q;   /* the column side: the library's int8 tiles, sums, scales, norms */
    uint8_t *Au = NULL;
    float *scale = NULL;
    memset(&q, 0, sizeof q);
    i8 = d <= DC_INT8_MAXD;
#endif
    if (st) st->stored = st->exact = 0;
    if (L < 2 || d == 0) {
        for (l = 0; l < L; ++l) maxcos[l] = L < 2 ? NAN : 0.0f;
        return 1;
    }
    if (L > UINT32_MAX || (size_t)nt > SIZE_MAX / L / sizeof(float) || L > SIZE_MAX / 4 / sizeof(float)) return 0;
    if (i8) {
#if defined(DC_INT8)
        if (dp > SIZE_MAX / L || dp > SIZE_MAX / LSAE__NT) return 0;
        G = ((size_t)1 << 20) / (dp * LSAE__NT + 1); /* tiles of int8 a group (1 MiB) */
        G = G < 1 ? 1 : G > 16 ? 16 : G;
        mrmax = LSAE__LPMR;
#endif
    } else {
        if (d > SIZE_MAX / LSAE__NT / sizeof(float)) return 0;
        tile_elems = d * LSAE__NT;
        G = lsae__tile_group(d);
        if ((size_t)nt > SIZE_MAX / G / tile_elems / sizeof(float)) return 0;
    }
    ngroups = (ntiles + G - 1) / G;
    lb = (float *)malloc((size_t)nt * L * sizeof(float));
    terms = (float *)calloc(4 * L, sizeof(float));
    bufs = (dc_buf *)calloc((size_t)nt, sizeof(dc_buf));
    if (!i8) pack = (float *)malloc((size_t)nt * G * tile_elems * sizeof(float));
    if (!lb || !terms || !bufs || (!i8 && !pack)) goto done;
    t.X = terms; t.Y = terms + L; t.Z = terms + 2 * L; t.W = terms + 3 * L;
    for (l = 0; l < (size_t)nt * L; ++l) lb[l] = -INFINITY;
    if (i8) {
#if defined(DC_INT8)
        /* e = X_a Y_b + Z_a W_b + k0 = |u_a| |r_b| + |r_a| |s_b q_b| + slack */
        Au = (uint8_t *)malloc(L * dp);
        scale = (float *)malloc(L * sizeof(float));
        if (!Au || !scale) goto done;
        dc_rows_i8(U, L, d, dp, Au, scale, t.X, t.Z, nt);
        if (dc_cols(&q, U, L, d, Au, scale, t.X, t.Z, nt) != LSAE_OK) goto done;
        for (l = 0; l < L; ++l) {
            t.Y[l] = q.cw[l];
            t.W[l] = q.qn[l];
        }
        t.k0 = DC_SLACK;
#endif
    } else {
        t.k0 = (float)(1.01 * (double)d * 5.9604644775390625e-8) + DC_SLACK; /* 1.01 d 2^-24; X, Y, Z, W are 0 */
    }

    LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(nt))
    for (gi = 0; gi < (ptrdiff_t)ngroups; ++gi) {
        const size_t grp = ngroups - 1 - (size_t)gi; /* the last groups have the most rows above them */
        const size_t t0 = grp * G, t1 = t0 + G < ntiles ? t0 + G : ntiles, rows = t1 * LSAE__NT < L ? t1 * LSAE__NT : L;
        const int me = lsae__thread_id();
        float *mylb = lb + (size_t)me * L;
        dc_buf *B = bufs + me;
        float Cf[DC_MR * LSAE__NT];
        float *P = i8 ? NULL : pack + (size_t)me * G * tile_elems;
        size_t tt, r0;
#if defined(DC_INT8)
        int32_t Ci[LSAE__LPMR * LSAE__NT];
#endif
        if (!i8)
            for (tt = t0; tt < t1; ++tt)
                lsae__pack_tile(P + (tt - t0) * tile_elems, U, d, tt * LSAE__NT, L - tt * LSAE__NT < LSAE__NT ? L - tt * LSAE__NT : LSAE__NT);
        for (r0 = 0; r0 < rows; r0 += mrmax) {
            const size_t mr = rows - r0 < mrmax ? rows - r0 : mrmax;
            for (tt = t0; tt < t1; ++tt) {
                const size_t c0 = tt * LSAE__NT, nc = L - c0 < LSAE__NT ? L - c0 : LSAE__NT;
                if (r0 >= c0 + nc) continue; /* the whole block is on or below the diagonal */
#if defined(DC_INT8)
                if (i8) {
                    dc_tile(Ci, Au + r0 * dp, dp, mr, q.wq + tt * (dp / 4) * LSAE__NT * 4, dp);
                    dc_approx_i8(Cf, Ci, mr, scale + r0, q.sw + c0, q.wsum + c0);
                } else
#endif
                lsae__tile_rows(Cf, LSAE__NT, U + r0 * d, d, mr, P + (tt - t0) * tile_elems, d, 0);
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
    if (!all) goto done;
    total = 0;
    for (s = 0; s < nt; ++s)
        for (i = 0; i < bufs[s].n; ++i)
            if (bufs[s].c[i].hi >= lb[bufs[s].c[i].a]) all[total++] = bufs[s].c[i];
    /* By row, and within a row by hi from the largest. A row's candidates
       are computed in that order until the next one's hi is at most the
       largest V found: from there on every candidate has V <= hi <= that
       V (hi only falls), so none can raise it. The value is the maximum
       over the whole list: if the maximiser b* was left out, V(a, b*) <=
       hi(a, b*) <= the largest V found <= V(a, b*). At 24,576 x 768 with
       an AVX2 build's 7-bit bound: 26 candidates a latent, 5.6 computed. */
    qsort(all, total, sizeof(dc_cand), dc_cmp_cand);
    {
        size_t *start = (size_t *)calloc(L + 1, sizeof(size_t));
        unsigned long long computed = 0;
        ptrdiff_t li;
        if (!start) goto done;
        for (i = 0; i < total; ++i) start[all[i].a + 1]++;
        for (l = 0; l < L; ++l) start[l + 1] += start[l];
        LSAE__OMP(parallel for schedule(dynamic, 256) num_threads(nt) reduction(+:computed))
        for (li = 0; li < (ptrdiff_t)L; ++li) {
            double best = -INFINITY;
            size_t c;
            for (c = start[li]; c < start[li + 1] && !((double)all[c].hi <= best); ++c) {
                const double v = dc_exact_dot(U + (size_t)li * d, U + (size_t)all[c].b * d, d);
                if (v > best) best = v;
                computed++;
            }
            maxcos[li] = (float)best;
        }
        free(start);
        if (st) st->exact = computed;
    }
    ok = 1;
done:
    if (bufs)
        for (s = 0; s < nt; ++s) free(bufs[s].c);
    free(bufs); free(lb); free(terms); free(pack); free(all);
#if defined(DC_INT8)
    free(Au); free(scale);
    lsae__lp_free(NULL, &q);
#endif
    return ok;
}
