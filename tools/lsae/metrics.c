/* metrics.c - every number `lsae eval` reports about a model on a dataset,
   for eval and for the commands that compare models (eval_compute and its
   JSON). The definitions, with the math, are in docs/eval.md; each comment
   below names its section there.

   One pass over the rows: each chunk is read, its finite rows encoded and
   decoded, and the sums of every reconstruction metric, the latents' fire
   counts and the L0 histogram are taken from it; the same chunk is the
   candidate set of the neighbour search for the query rows, in the
   original space and in the reconstructions' space. After the pass, the
   decoder's rows are compared with each other (max_decoder_cos).

   The neighbour products (queries against rows) and the decoder cosines
   both go through deccos.c's bounded product: a cheap product of all
   pairs (int8 where the build has a fast int8 kernel and d is small
   enough, else the library's float32 encoder kernels, lsae__pack_tile and
   lsae__tile_rows) with a proven bound on its error, and an exact double
   product only for the pairs the bound cannot rule out (nn_side below), so
   the results are those of the exact products.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

static int eval_error(char *err, size_t errcap, const char *fmt, ...) PRINTF_LIKE(3, 4);
static int eval_error(char *err, size_t errcap, const char *fmt, ...)
{
    va_list ap;
    if (err && errcap) {
        va_start(ap, fmt);
        vsnprintf(err, errcap, fmt, ap);
        va_end(ap);
    }
    return 0;
}

/* ================================================ neighbour lists (docs/eval.md, section 5) */

/* One query's best EVAL_NN rows so far, best first: higher cosine first,
   and on equal cosines the lower row first. Rows are offered in increasing
   order, so a row that only ties the last kept one stays out. */
typedef struct eval_nn {
    double s[EVAL_NN];
    uint64_t r[EVAL_NN];
    int n;
} eval_nn;

static void nn_offer(eval_nn *h, double s, uint64_t row)
{
    int pos;
    if (h->n == EVAL_NN && !(s > h->s[EVAL_NN - 1])) return;
    pos = h->n < EVAL_NN ? h->n++ : EVAL_NN - 1;
    while (pos > 0 && s > h->s[pos - 1]) {
        h->s[pos] = h->s[pos - 1];
        h->r[pos] = h->r[pos - 1];
        --pos;
    }
    h->s[pos] = s;
    h->r[pos] = row;
}

/* The query rows: `want` of rows [0, total), each set of that size equally
   likely, in increasing order (selection sampling, Knuth's Algorithm S:
   row i is taken with probability needed / rows left). Returns how many. */
static size_t pick_queries(uint64_t total, uint64_t want, uint64_t seed, uint64_t *rows)
{
    uint64_t s = seed, i, need = want;
    size_t n = 0;
    for (i = 0; i < total && need; ++i) {
        double u = (double)(splitmix(&s) >> 11) * (1.0 / 9007199254740992.0); /* uniform in [0, 1), 53 bits */
        if (u * (double)(total - i) < (double)need) {
            rows[n++] = i;
            --need;
        }
    }
    return n;
}

/* Unit rows: out[i] = v[i] / |v[i]| (norm in double), a zero row stays zero. */
static void unit_rows(float *out, const float *v, size_t n, size_t d)
{
    size_t i, j;
    for (i = 0; i < n; ++i) {
        double s = 0;
        for (j = 0; j < d; ++j) s += (double)v[i * d + j] * (double)v[i * d + j];
        s = s > 0 ? 1.0 / sqrt(s) : 0.0;
        for (j = 0; j < d; ++j) out[i * d + j] = (float)((double)v[i * d + j] * s);
    }
}

/* Unit vectors made ready for the bounded product of deccos.c: the cosine
   of a query and a row is V = their unit vectors' dot product in double
   (dc_exact_dot), found exactly; the product of all queries with all rows
   is only approximated (deccos.c's int8 product where it is fast, else
   fp32), with the bound e >= |A - V| of deccos.c's top comment, and a row
   is computed exactly for a query only when A + e beats the query's 10th
   best so far. The rows are deccos.c's row side (a), the queries its
   column side (b): e = X_a Y_b + Z_a W_b + k0, the rows holding X, Z and
   the queries Y, W (in their X, Z). For the queries the vectors are also
   packed in tiles of 64. */
typedef struct nn_side {
    size_t n, cap, d;
    int i8;       /* the int8 product (deccos.c: DC_INT8 and d <= DC_INT8_MAXD) */
    float *unit;  /* [n, d] */
    float *X, *Z; /* the bound's terms per vector: rows X = |u|, Z = |r|; queries X = cw >= |r| (deccos.c's Y), Z = qn = |s q| (W); 0 for fp32 */
#if defined(DC_INT8)
    size_t dp;
    uint8_t *Au;  /* rows: [n, dp] (deccos.c's dc_rows_i8) */
    float *scale; /* rows: s */
    lsae__lp lp;  /* queries: the library's int8 tiles, sums, scales and norms */
#endif
    float *P;     /* queries, fp32: the encoder's tiles of [d][64] */
} nn_side;

static void nn_side_init(nn_side *S, size_t cap, size_t d, int query)
{
    const size_t tiles = (cap + LSAE__NT - 1) / LSAE__NT, padded = tiles * LSAE__NT + 1;
    memset(S, 0, sizeof *S);
    S->cap = cap;
    S->d = d;
    if (d > SIZE_MAX / sizeof(float) / padded) fail("neighbours: %zu x %zu overflows size_t", cap, d);
    S->unit = (float *)xcalloc(padded * d, sizeof(float));
    S->X = (float *)xcalloc(padded, sizeof(float));
    S->Z = (float *)xcalloc(padded, sizeof(float));
#if defined(DC_INT8)
    /* LSAE_EVAL_FP32_BOUND=1: the fp32 product and its bound instead, for
       tests: both searches are exact, so they must find the same lists */
    S->i8 = d <= DC_INT8_MAXD && !getenv("LSAE_EVAL_FP32_BOUND");
    if (S->i8) {
        S->dp = (d + 3) / 4 * 4;
        if (!query) {
            S->Au = (uint8_t *)xcalloc(padded * S->dp, 1);
            S->scale = (float *)xcalloc(padded, sizeof(float));
        }
        return;
    }
#endif
    if (query) S->P = (float *)xcalloc(padded * d, sizeof(float));
}

static void nn_side_free(nn_side *S)
{
    free(S->unit); free(S->X); free(S->Z); free(S->P);
#if defined(DC_INT8)
    free(S->Au); free(S->scale);
    lsae__lp_free(NULL, &S->lp);
#endif
    memset(S, 0, sizeof *S);
}

/* S holds the n vectors v, as unit vectors (and their quantisation) */
static void nn_side_set(nn_side *S, const float *v, size_t n, int query, int nthreads)
{
    const size_t d = S->d, tiles = (n + LSAE__NT - 1) / LSAE__NT, nb = (n + 63) / 64;
    size_t t;
    ptrdiff_t bi;
    S->n = n;
    (void)nthreads;
    /* each vector on its own: blocks of 64 over the threads */
    LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
    for (bi = 0; bi < (ptrdiff_t)nb; ++bi) {
        const size_t i0 = (size_t)bi * 64, cnt = n - i0 < 64 ? n - i0 : 64;
        unit_rows(S->unit + i0 * d, v + i0 * d, cnt, d);
    }
#if defined(DC_INT8)
    if (S->i8) {
        if (query) {
            lsae__lp_free(NULL, &S->lp);
            if (n == 0) return; /* (no tiles: nn_chunk has nothing to sweep) */
            if (dc_cols(&S->lp, S->unit, n, d, NULL, NULL, NULL, NULL, nthreads) != LSAE_OK) fail("neighbours: %s", lsae_last_error());
            memcpy(S->X, S->lp.cw, n * sizeof(float));
            memcpy(S->Z, S->lp.qn, n * sizeof(float));
        } else
            dc_rows_i8(S->unit, n, d, S->dp, S->Au, S->scale, S->X, S->Z, nthreads);
        return;
    }
#endif
    if (query)
        for (t = 0; t < tiles; ++t)
            lsae__pack_tile(S->P + t * d * LSAE__NT, S->unit, d, t * LSAE__NT, n - t * LSAE__NT < LSAE__NT ? n - t * LSAE__NT : LSAE__NT);
}

/* v rounded down to a float: a bound to compare float approximations with */
static float nn_below(double v)
{
    float f = (float)v;
    if ((double)f > v) f = nextafterf(f, -INFINITY);
    return f;
}

/* Offer rows R (ids rowid) to every query's list in Qs. Threads take
   groups of query tiles (each list has one writer), and each group sweeps
   the chunk's rows once, a block of rows at a time, across all its tiles
   while those rows are in L1. thr[j] is the j-th query's 10th best so far
   (rounded down; -inf until the list is full, +inf past the last query):
   a row whose A + e does not beat it cannot enter the list, since
   V <= A + e; the others are computed exactly. A query is not its own
   neighbour. */
static void nn_chunk(const nn_side *R, const uint64_t *rowid, const nn_side *Qs, const uint64_t *qrow, eval_nn *lists, int nthreads)
{
    const size_t d = R->d, n = R->n, nq = Qs->n, ntiles = (nq + LSAE__NT - 1) / LSAE__NT;
    const int i8 = R->i8;
    /* e = X_a Y_b + Z_a W_b + k0: k0 the slack (int8), or the fp32
       product's whole bound (X, Z are 0) */
    const float k0 = i8 ? DC_SLACK : (float)(1.01 * (double)d * 5.9604644775390625e-8) + DC_SLACK; /* deccos.c: 1.01 d 2^-24 */
    const size_t mrmax = i8 ? LSAE__LPMR : LSAE__MR;
    size_t G, ngroups, per;
    ptrdiff_t grp;
#if defined(DC_INT8)
    const size_t tile_bytes = R->dp * LSAE__NT;
    G = i8 ? ((size_t)1 << 20) / (tile_bytes + 1) : lsae__tile_group(d);
#else
    G = lsae__tile_group(d);
#endif
    /* enough groups for every thread */
    per = (ntiles + (size_t)nthreads - 1) / (size_t)nthreads;
    G = G > per ? per : G;
    G = G < 1 ? 1 : G > 16 ? 16 : G;
    ngroups = (ntiles + G - 1) / G;
    LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(nthreads))
    for (grp = 0; grp < (ptrdiff_t)ngroups; ++grp) {
        float *thr = (float *)xmalloc(G * LSAE__NT * sizeof(float));
        float Cf[DC_MR * LSAE__NT];
#if defined(DC_INT8)
        int32_t Ci[LSAE__LPMR * LSAE__NT];
#endif
        const size_t t0 = (size_t)grp * G, t1 = t0 + G < ntiles ? t0 + G : ntiles;
        size_t r0, r, j, t;
        for (t = t0; t < t1; ++t)
            for (j = 0; j < LSAE__NT; ++j) {
                const eval_nn *h = t * LSAE__NT + j < nq ? lists + t * LSAE__NT + j : NULL;
                thr[(t - t0) * LSAE__NT + j] = !h ? INFINITY : h->n == EVAL_NN ? nn_below(h->s[EVAL_NN - 1]) : -INFINITY;
            }
        for (r0 = 0; r0 < n; r0 += mrmax) {
            const size_t mr = n - r0 < mrmax ? n - r0 : mrmax;
            for (t = t0; t < t1; ++t) {
                const size_t q0 = t * LSAE__NT;
                float *th = thr + (t - t0) * LSAE__NT;
#if defined(DC_INT8)
                if (i8) {
                    dc_tile(Ci, R->Au + r0 * R->dp, R->dp, mr, Qs->lp.wq + t * tile_bytes, R->dp);
                    dc_approx_i8(Cf, Ci, mr, R->scale + r0, Qs->lp.sw + q0, Qs->lp.wsum + q0);
                } else
#endif
                lsae__tile_rows(Cf, LSAE__NT, R->unit + r0 * d, d, mr, Qs->P + t * d * LSAE__NT, d, 0);
                for (r = 0; r < mr; ++r) {
                    const size_t a = r0 + r;
                    unsigned char cand[LSAE__NT];
                    int any = 0;
#if defined(LSAE__AVX512)
                    { /* hi = A + e for 16 queries at a time, against their thresholds */
                        const __m512 xa = _mm512_set1_ps(R->X[a]), za = _mm512_set1_ps(R->Z[a]), vk = _mm512_set1_ps(k0);
                        int v, i;
                        for (v = 0; v < 4; ++v) {
                            const size_t q = q0 + 16 * (size_t)v;
                            const __m512 A = _mm512_loadu_ps(Cf + r * LSAE__NT + 16 * v);
                            const __m512 e = _mm512_fmadd_ps(xa, _mm512_loadu_ps(Qs->X + q), _mm512_fmadd_ps(za, _mm512_loadu_ps(Qs->Z + q), vk));
                            const __mmask16 m = _mm512_cmp_ps_mask(_mm512_add_ps(A, e), _mm512_loadu_ps(th + 16 * v), _CMP_GT_OQ);
                            for (i = 0; i < 16; ++i) cand[16 * v + i] = (unsigned char)((m >> i) & 1);
                            any |= m != 0;
                        }
                    }
#elif defined(LSAE__AVX2)
                    { /* the same, 8 at a time */
                        const __m256 xa = _mm256_set1_ps(R->X[a]), za = _mm256_set1_ps(R->Z[a]), vk = _mm256_set1_ps(k0);
                        int v, i;
                        for (v = 0; v < 8; ++v) {
                            const size_t q = q0 + 8 * (size_t)v;
                            const __m256 e = _mm256_fmadd_ps(xa, _mm256_loadu_ps(Qs->X + q), _mm256_fmadd_ps(za, _mm256_loadu_ps(Qs->Z + q), vk));
                            const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_add_ps(_mm256_loadu_ps(Cf + r * LSAE__NT + 8 * v), e),
                                                                           _mm256_loadu_ps(th + 8 * v), _CMP_GT_OQ));
                            for (i = 0; i < 8; ++i) cand[8 * v + i] = (unsigned char)((m >> i) & 1);
                            any |= m != 0;
                        }
                    }
#else
                    for (j = 0; j < LSAE__NT; ++j) {
                        const float e = R->X[a] * Qs->X[q0 + j] + R->Z[a] * Qs->Z[q0 + j] + k0;
                        cand[j] = (unsigned char)(Cf[r * LSAE__NT + j] + e > th[j]);
                        any |= cand[j];
                    }
#endif
                    if (!any) continue;
                    for (j = 0; j < LSAE__NT; ++j) {
                        eval_nn *h;
                        double V;
                        if (!cand[j] || rowid[a] == qrow[q0 + j]) continue;
                        h = lists + q0 + j;
                        V = dc_exact_dot(R->unit + a * d, Qs->unit + (q0 + j) * d, d);
                        if (h->n == EVAL_NN && !(V > h->s[EVAL_NN - 1])) continue;
                        nn_offer(h, V, rowid[a]);
                        if (h->n == EVAL_NN) th[j] = nn_below(h->s[EVAL_NN - 1]);
                    }
                }
            }
        }
        free(thr);
    }
}

/* recall@10 and nDCG@10 of one query (docs/eval.md, section 5): truth is
   the originals' list, got the reconstructions'; a row of got is relevant
   (gain 1) when it is in truth. */
static void nn_score(const eval_nn *truth, const eval_nn *got, double *recall, double *ndcg)
{
    double dcg = 0, idcg = 0;
    int i, j, hits = 0;
    for (i = 0; i < got->n; ++i) {
        int rel = 0;
        for (j = 0; j < truth->n; ++j) rel |= truth->r[j] == got->r[i];
        hits += rel;
        if (rel) dcg += 1.0 / log2((double)i + 2.0);
    }
    for (i = 0; i < truth->n; ++i) idcg += 1.0 / log2((double)i + 2.0);
    *recall = truth->n ? (double)hits / (double)truth->n : NAN;
    *ndcg = idcg > 0 ? dcg / idcg : NAN;
}

/* ============================================ decoder cosines (docs/eval.md, section 4) */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-th percentile, q in [0, 100], with linear interpolation between
   the order statistics at rank q/100 (n - 1), as numpy.percentile's default. */
static double percentile(const float *v, size_t n, double q)
{
    double *a, h, out;
    size_t i, lo;
    if (!n) return NAN;
    a = (double *)xmalloc(n * sizeof(double));
    for (i = 0; i < n; ++i) a[i] = (double)v[i];
    qsort(a, n, sizeof(double), cmp_double);
    h = q / 100.0 * (double)(n - 1);
    lo = (size_t)floor(h);
    out = lo + 1 < n ? a[lo] + (h - (double)lo) * (a[lo + 1] - a[lo]) : a[n - 1];
    free(a);
    return out;
}

/* ======================================================== the pass */

#define EVAL_BLK 64 /* rows per block of the reconstruction sums */

/* Density bin of a latent that fired: floor(log10(fires / rows)) + 10,
   clamped to [0, 9], found by exact comparisons (fires 10^j >= rows), not
   by log10, so a rate of exactly 10^-j is in the bin that starts there. */
/* Bin i holds log10(fires / rows) in [i - 10, i - 9); bin 9 also takes a
   rate of 1, bin 0 everything below 10^-9. rate >= 10^-j is tested as
   fires 10^j >= rows, exact for these integers in double (both are below
   2^53 after the product for any real count), so a rate of exactly 10^-j
   opens its own decade. */
static int density_bin(uint64_t fires, uint64_t rows)
{
    int j;
    double p = 1.0;
    for (j = 1; j < EVAL_DENSITY_BINS; ++j) {
        p *= 10.0; /* 10^j */
        if ((double)fires * p >= (double)rows) return EVAL_DENSITY_BINS - j;
    }
    return 0;
}

static void eval_metrics_free(eval_metrics *e)
{
    free(e->l0_hist);
    free(e->fires);
    free(e->max_decoder_cos);
    free(e->query_rows);
    memset(e, 0, sizeof *e);
}

static int eval_compute(lsae_model *m, lsae_dataset *ds, const eval_options *o, eval_metrics *out, char *err, size_t errcap)
{
    const size_t chunk = 2048;
    const size_t d = lsae_model_d_in(m), L = lsae_model_num_latents(m), k = lsae_model_encode_k(m);
    /* the most latents a row may keep: k, or any number up to L for an
       uncapped BatchTopK model (its threshold decides) */
    const size_t kmax = model_varying_k(m) ? L : k;
    const int nthreads = lsae__num_threads(o->threads);
    uint64_t total = lsae_dataset_rows(ds), first, n_pos = 0, never = 0, alive = 0, over1 = 0, over10 = 0;
    double *shift, *sx, *sxx, *se, *part, sum_cos = 0, sum_ratio = 0, sum_xh2 = 0, sum_dot = 0, tv = 0, sse = 0, perdim = 0, N;
    float *x, *xhat, *W = NULL;
    codes cd;
    uint64_t *rowid, active = 0;
    size_t j, l, nq = 0;
    nn_side Sq, Sh, Sr;
    eval_nn *nn_x = NULL, *nn_h = NULL;
    double t0 = now_s();
    lsae_result r;
    memset(out, 0, sizeof *out);
    if (lsae_dataset_d_in(ds) != d)
        return eval_error(err, errcap, "the embeddings have rows of %zu values, but the model expects d_in %zu", lsae_dataset_d_in(ds), d);
    if (o->max_rows && o->max_rows < total) total = o->max_rows;
    if (chunk > SIZE_MAX / d / sizeof(float) || chunk > SIZE_MAX / k / sizeof(float)) return eval_error(err, errcap, "d_in or k too large");
    out->d = d; out->L = L; out->k = k;
    out->fires = (uint64_t *)xcalloc(L, sizeof(uint64_t));
    out->l0_hist_len = kmax + 1;
    out->l0_hist = (uint64_t *)xcalloc(kmax + 1, sizeof(uint64_t));
    shift = (double *)xcalloc(d, sizeof(double));
    sx = (double *)xcalloc(d, sizeof(double));
    sxx = (double *)xcalloc(d, sizeof(double));
    se = (double *)xcalloc(d, sizeof(double));
    if (d > (SIZE_MAX / sizeof(double) - 5) / 3 / (chunk / EVAL_BLK + 1)) return eval_error(err, errcap, "d_in too large");
    part = (double *)xcalloc((chunk / EVAL_BLK + 1) * (3 * d + 5), sizeof(double));
    x = (float *)xcalloc(chunk * d, sizeof(float));
    xhat = (float *)xcalloc(chunk * d, sizeof(float));
    codes_init(&cd, m, chunk);
    rowid = (uint64_t *)xcalloc(chunk, sizeof(uint64_t));
    memset(&Sq, 0, sizeof Sq); memset(&Sh, 0, sizeof Sh); memset(&Sr, 0, sizeof Sr);

    /* the queries: read, their finite ones kept, encoded and decoded, as
       unit vectors packed for the product (docs/eval.md, section 5) */
    if (o->queries && total > EVAL_NN) {
        uint64_t want = o->queries < total ? o->queries : total;
        size_t i, kept = 0;
        float *q, *qh;
        codes qc;
        if (want > SIZE_MAX / d / sizeof(float) || want > SIZE_MAX / k / sizeof(float)) return eval_error(err, errcap, "--queries too large");
        out->query_rows = (uint64_t *)xcalloc((size_t)want, sizeof(uint64_t));
        nq = pick_queries(total, want, o->seed, out->query_rows);
        q = (float *)xcalloc(nq * d, sizeof(float));
        for (i = 0; i < nq; ++i) {
            if ((r = lsae_dataset_read(ds, out->query_rows[i], 1, q + kept * d)) != LSAE_OK) {
                free(q);
                eval_metrics_free(out);
                return eval_error(err, errcap, "%s", lsae_last_error());
            }
            if (row_finite(q + kept * d, d)) out->query_rows[kept++] = out->query_rows[i];
        }
        nq = kept;
        codes_init(&qc, m, nq + 1);
        qh = (float *)xcalloc(nq * d + 1, sizeof(float));
        if ((r = codes_encode(&qc, m, q, nq)) != LSAE_OK || (r = codes_decode(&qc, m, nq, qh)) != LSAE_OK) {
            free(q); free(qh);
            codes_free(&qc);
            eval_metrics_free(out);
            return eval_error(err, errcap, "%s", lsae_last_error());
        }
        nn_side_init(&Sq, nq, d, 1);
        nn_side_set(&Sq, q, nq, 1, nthreads);
        nn_side_init(&Sh, nq, d, 1);
        nn_side_set(&Sh, qh, nq, 1, nthreads);
        nn_side_init(&Sr, chunk, d, 0);
        nn_x = (eval_nn *)xcalloc(nq + 1, sizeof(eval_nn));
        nn_h = (eval_nn *)xcalloc(nq + 1, sizeof(eval_nn));
        free(q); free(qh);
        codes_free(&qc);
    }

    for (first = 0; first < total; first += chunk) {
        size_t n = (size_t)(total - first < chunk ? total - first : chunk), i, kept = 0, s;
        check_interrupted();
        if ((r = lsae_dataset_read(ds, first, n, x)) != LSAE_OK) break;
        for (i = 0; i < n; ++i) { /* compact the finite rows to the front */
            if (!row_finite(x + i * d, d)) { out->rows_skipped++; continue; }
            if (kept != i) memcpy(x + kept * d, x + i * d, d * sizeof(float));
            rowid[kept++] = first + i;
        }
        if (!kept) continue;
        if ((r = codes_encode(&cd, m, x, kept)) != LSAE_OK) break;
        if ((r = codes_decode(&cd, m, kept, xhat)) != LSAE_OK) break;
        if (out->rows == 0)
            for (j = 0; j < d; ++j) shift[j] = x[j];
        {
            /* the sums by blocks of EVAL_BLK rows over the threads, then
               added block by block in order: the same bits for any number
               of threads */
            const size_t nb = (kept + EVAL_BLK - 1) / EVAL_BLK;
            ptrdiff_t bi;
            LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
            for (bi = 0; bi < (ptrdiff_t)nb; ++bi) {
                double *px = part + (size_t)bi * (3 * d + 5), *pxx = px + d, *pe = pxx + d, *pr = pe + d;
                const size_t i0 = (size_t)bi * EVAL_BLK, i1 = i0 + EVAL_BLK < kept ? i0 + EVAL_BLK : kept;
                size_t ii, jj;
                memset(px, 0, (3 * d + 5) * sizeof(double));
                for (ii = i0; ii < i1; ++ii) {
                    const float *xi = x + ii * d, *hi = xhat + ii * d;
                    double xx = 0, hh = 0, xh = 0;
                    /* per dimension, x shifted by the first row so the variance
                       does not cancel away (docs/eval.md, section 1) */
                    for (jj = 0; jj < d; ++jj) {
                        const double v = (double)xi[jj] - shift[jj], e = (double)xi[jj] - (double)hi[jj];
                        px[jj] += v;
                        pxx[jj] += v * v;
                        pe[jj] += e * e;
                        xx += (double)xi[jj] * (double)xi[jj];
                        hh += (double)hi[jj] * (double)hi[jj];
                        xh += (double)xi[jj] * (double)hi[jj];
                    }
                    /* per row (section 2) */
                    if (xx > 0 && hh > 0) pr[0] += xh / sqrt(xx * hh);
                    if (xx > 0) { pr[1] += sqrt(hh / xx); pr[2] += 1; }
                    pr[3] += hh;
                    pr[4] += xh;
                }
            }
            for (i = 0; i < nb; ++i) {
                const double *px = part + i * (3 * d + 5), *pxx = px + d, *pe = pxx + d, *pr = pe + d;
                for (j = 0; j < d; ++j) {
                    sx[j] += px[j];
                    sxx[j] += pxx[j];
                    se[j] += pe[j];
                }
                sum_cos += pr[0];
                sum_ratio += pr[1];
                n_pos += (uint64_t)pr[2];
                sum_xh2 += pr[3];
                sum_dot += pr[4];
            }
        }
        for (i = 0; i < kept; ++i) {
            size_t nact = 0;
            /* latents (section 3): active = in the top-k with activation > 0 */
            for (s = 0; s < cd.count[i]; ++s)
                if (cd.acts[i * cd.cap + s] > 0.0f) {
                    out->fires[cd.idx[i * cd.cap + s]]++;
                    nact++;
                }
            out->l0_hist[nact]++;
            active += nact;
        }
        if (nq) {
            nn_side_set(&Sr, x, kept, 0, nthreads);
            nn_chunk(&Sr, rowid, &Sq, out->query_rows, nn_x, nthreads);
            nn_side_set(&Sr, xhat, kept, 0, nthreads);
            nn_chunk(&Sr, rowid, &Sh, out->query_rows, nn_h, nthreads);
        }
        out->rows += kept;
        progress_scan("evaluating", first + n, total, t0);
    }
    live_clear();
    free(x); free(xhat); codes_free(&cd); free(rowid); free(part);
    nn_side_free(&Sq); nn_side_free(&Sh); nn_side_free(&Sr);
    if (first < total) { /* a library call failed */
        free(shift); free(sx); free(sxx); free(se); free(nn_x); free(nn_h);
        eval_metrics_free(out);
        return eval_error(err, errcap, "%s", lsae_last_error());
    }
    if (out->rows < 2) {
        uint64_t rows = out->rows;
        free(shift); free(sx); free(sxx); free(se); free(nn_x); free(nn_h);
        eval_metrics_free(out);
        return eval_error(err, errcap, "%llu finite rows; fvu needs at least 2", (unsigned long long)rows);
    }

    /* reconstruction (docs/eval.md, sections 1 and 2) */
    N = (double)out->rows;
    for (j = 0; j < d; ++j) {
        double tvj = sxx[j] - sx[j] * sx[j] / N; /* sum over rows of (x_j - mean_j)^2 */
        if (tvj < 0) tvj = 0;
        tv += tvj;
        sse += se[j];
        if (tvj > 0) { perdim += se[j] / tvj; out->dims_varying++; }
    }
    out->fvu = tv > 0 ? sse / tv : NAN;
    out->explained_variance = tv > 0 ? 1.0 - sse / tv : NAN;
    out->fvu_per_dim = out->dims_varying ? perdim / (double)out->dims_varying : NAN;
    out->mse = sse / (N * (double)d);
    out->cossim = sum_cos / N;
    out->l2_ratio = n_pos ? sum_ratio / (double)n_pos : NAN;
    out->relative_reconstruction_bias = sum_dot != 0 ? (sum_xh2 / N) / (sum_dot / N) : NAN;
    free(shift); free(sx); free(sxx); free(se);

    /* latents (section 3) */
    out->l0_mean = (double)active / N;
    for (l = 0; l < L; ++l) {
        const uint64_t f = out->fires[l];
        if (!f) { never++; continue; }
        alive++;
        out->density_hist[density_bin(f, out->rows)]++;
        over1 += (double)f > 0.01 * N;
        over10 += (double)f > 0.1 * N;
    }
    out->density_never = never;
    out->frac_alive = (double)alive / (double)L;
    out->dead_fraction = (double)never / (double)L;
    out->freq_over_1pct = (double)over1 / (double)L;
    out->freq_over_10pct = (double)over10 / (double)L;

    /* neighbours (section 5): a query needs EVAL_NN other rows */
    out->recall_at_10 = out->ndcg_at_10 = NAN;
    if (nq && out->rows > EVAL_NN) {
        double sr = 0, sn = 0, rc, nd;
        size_t q;
        for (q = 0; q < nq; ++q) {
            nn_score(nn_x + q, nn_h + q, &rc, &nd);
            sr += rc;
            sn += nd;
        }
        out->queries = nq;
        out->recall_at_10 = sr / (double)nq;
        out->ndcg_at_10 = sn / (double)nq;
    } else {
        free(out->query_rows);
        out->query_rows = NULL;
    }
    free(nn_x); free(nn_h);

    /* decoder (section 4) */
    if (d > SIZE_MAX / L / sizeof(float)) return eval_error(err, errcap, "W_dec: %zu x %zu overflows size_t", L, d);
    W = (float *)xmalloc(L * d * sizeof(float));
    if ((r = lsae_model_get_weights(m, NULL, NULL, W, NULL)) != LSAE_OK) {
        free(W);
        eval_metrics_free(out);
        return eval_error(err, errcap, "%s", lsae_last_error());
    }
    unit_rows(W, W, L, d);
    out->max_decoder_cos = (float *)xcalloc(L, sizeof(float));
    {
        dc_stats st;
        if (!dc_max_cos(W, L, d, out->max_decoder_cos, nthreads, &st)) fail("decoder cosines: out of memory");
        if (getenv("LSAE_EVAL_STATS"))
            fprintf(stderr, "decoder cosines: %zu latents, %llu pairs kept in the pass, %llu computed exactly (%.2f per latent)\n", L,
                    (unsigned long long)st.stored, (unsigned long long)st.exact, (double)st.exact / (double)L);
    }
    free(W);
    if (L > 1) {
        double s = 0;
        for (l = 0; l < L; ++l) s += (double)out->max_decoder_cos[l];
        out->max_decoder_cossim_mean = s / (double)L;
        out->max_decoder_cossim_p99 = percentile(out->max_decoder_cos, L, 99.0);
    } else {
        out->max_decoder_cossim_mean = out->max_decoder_cossim_p99 = NAN;
    }
    return 1;
}

/* ================================================================ JSON */

static void json_u64_array(FILE *f, const uint64_t *v, size_t n)
{
    size_t i;
    fputc('[', f);
    for (i = 0; i < n; ++i) fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)v[i]);
    fputc(']', f);
}

/* Every metric but the per-row and per-latent arrays, as JSON members (no
   braces): the scalars and the two small histograms. What lsae sweep keeps
   of each model in sweep.json. */
static void eval_metrics_write_json_summary(FILE *f, const eval_metrics *e)
{
    size_t i;
    fprintf(f, "\"rows\": %llu, \"rows_skipped\": %llu, \"d_in\": %llu, \"num_latents\": %llu, \"k\": %llu",
            (unsigned long long)e->rows, (unsigned long long)e->rows_skipped, (unsigned long long)e->d, (unsigned long long)e->L,
            (unsigned long long)e->k);
    fputs(", \"fvu\": ", f); json_num(f, e->fvu);
    fputs(", \"fvu_per_dim\": ", f); json_num(f, e->fvu_per_dim);
    fprintf(f, ", \"dims_varying\": %llu", (unsigned long long)e->dims_varying);
    fputs(", \"explained_variance\": ", f); json_num(f, e->explained_variance);
    fputs(", \"mse\": ", f); json_num(f, e->mse);
    fputs(", \"cossim\": ", f); json_num(f, e->cossim);
    fputs(", \"l2_ratio\": ", f); json_num(f, e->l2_ratio);
    fputs(", \"relative_reconstruction_bias\": ", f); json_num(f, e->relative_reconstruction_bias);
    fputs(", \"l0\": ", f); json_num(f, e->l0_mean);
    fputs(", \"l0_histogram\": ", f); json_u64_array(f, e->l0_hist, e->l0_hist_len);
    fputs(", \"frac_alive\": ", f); json_num(f, e->frac_alive);
    fputs(", \"dead_fraction\": ", f); json_num(f, e->dead_fraction);
    fprintf(f, ", \"never_fired\": %llu", (unsigned long long)e->density_never);
    fputs(", \"freq_over_1pct\": ", f); json_num(f, e->freq_over_1pct);
    fputs(", \"freq_over_10pct\": ", f); json_num(f, e->freq_over_10pct);
    fputs(", \"log10_density_histogram\": {\"edges\": [", f);
    for (i = 0; i <= EVAL_DENSITY_BINS; ++i) fprintf(f, "%s%d", i ? ", " : "", (int)i - EVAL_DENSITY_BINS);
    fputs("], \"latents\": ", f);
    json_u64_array(f, e->density_hist, EVAL_DENSITY_BINS);
    fprintf(f, ", \"never\": %llu}", (unsigned long long)e->density_never);
    fputs(", \"max_decoder_cossim\": {\"mean\": ", f); json_num(f, e->max_decoder_cossim_mean);
    fputs(", \"p99\": ", f); json_num(f, e->max_decoder_cossim_p99);
    fputs("}", f);
    fprintf(f, ", \"neighbour_queries\": %llu", (unsigned long long)e->queries);
    fputs(", \"neighbour_recall_at_10\": ", f); json_num(f, e->queries ? e->recall_at_10 : NAN);
    fputs(", \"neighbour_ndcg_at_10\": ", f); json_num(f, e->queries ? e->ndcg_at_10 : NAN);
}

/* The summary and then the arrays: the queries' rows, every latent's fire
   count and its largest decoder cosine. */
static void eval_metrics_write_json_members(FILE *f, const eval_metrics *e)
{
    size_t i;
    eval_metrics_write_json_summary(f, e);
    fputs(", \"neighbour_query_rows\": ", f); json_u64_array(f, e->query_rows, (size_t)e->queries);
    fputs(", \"fires\": ", f); json_u64_array(f, e->fires, (size_t)e->L);
    fputs(", \"max_decoder_cossim_per_latent\": [", f);
    for (i = 0; i < (size_t)e->L && e->max_decoder_cos; ++i) {
        if (i) fputs(", ", f);
        json_num(f, (double)e->max_decoder_cos[i]);
    }
    fputc(']', f);
}

LSAE__MAYBE_UNUSED static void eval_metrics_write_json(FILE *f, const eval_metrics *e)
{
    fputc('{', f);
    eval_metrics_write_json_members(f, e);
    fputs("}\n", f);
}
