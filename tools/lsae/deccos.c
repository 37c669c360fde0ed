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

   - where the library has a fast int8 product (LSAE__LPFAST: AVX-512 VNNI,
     or AVX2 with its sign trick; DC_INT8), and d <= 65,536: the library's
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

#if defined(DC_INT8)
/* The row side of the int8 product for n unit rows U [n, d]: Au [n, dp]
   (lsae__lp_row's bytes), scale s, X = |u| and Z = |r| rounded up. */
static void dc_rows_i8(const float *U, size_t n, size_t d, size_t dp, uint8_t *Au, float *scale, float *X, float *Z, int nthreads)
{
    ptrdiff_t l;
    (void)nthreads;
    LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
    for (l = 0; l < (ptrdiff_t)n; ++l)
        lsae__lp_row(U + (size_t)l * d, d, dp, Au + (size_t)l * dp, scale + l, X + l, Z + l);
}

/* The approximations of a block from lsae__lp_tile's sums:
   C[r][j] = fl(fl(sa[r] sb[j]) fl(q_a . q_b)), q_a . q_b = Ci - LSAE__LPOFF wsum[j] */
static void dc_approx_i8(float *C, const int32_t *Ci, size_t mr, const float *sa, const float *sb, const int32_t *wsum)
{
    size_t r, j;
#if defined(LSAE__AVX2)
    /* 8 at a time: the same products and conversion (round to nearest, as
       the scalar cast), so the same bits; the scalar loop was 2% of an AVX2
       build's lsae eval */
    const __m256i off = _mm256_set1_epi32(LSAE__LPOFF);
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
            C[r * LSAE__NT + j] = (sa[r] * sb[j]) * (float)(Ci[r * LSAE__NT + j] - LSAE__LPOFF * wsum[j]);
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
    size_t G = 1, ngroups, l, i, tile_elems = 0, total = 0, mrmax = LSAE__MR;
    float *lb = NULL, *terms = NULL;
    dc_buf *bufs = NULL;
    dc_cand *all = NULL;
    double *val = NULL;
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
        if (lsae__lp_build(NULL, &q, U, L, d, nt) != LSAE_OK) goto done;
        Au = (uint8_t *)malloc(L * dp);
        scale = (float *)malloc(L * sizeof(float));
        if (!Au || !scale) goto done;
        dc_rows_i8(U, L, d, dp, Au, scale, t.X, t.Z, nt);
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
                    lsae__lp_tile(Ci, Au + r0 * dp, dp, mr, q.wq + tt * (dp / 4) * LSAE__NT * 4, dp);
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
#if defined(DC_INT8)
    free(Au); free(scale);
    lsae__lp_free(NULL, &q);
#endif
    return ok;
}
