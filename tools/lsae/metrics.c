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

   The neighbour products (queries against rows) use the library's encoder
   kernels, lsae__pack_tile and lsae__tile_rows (latentsae.h, "the encoder
   product"): the same packing and register blocking as encoding, so they
   run at encoding's speed per multiply-add. The decoder cosines are
   deccos.c's: an exact maximum from a cheaper product with a bound.
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
    float s[EVAL_NN];
    uint64_t r[EVAL_NN];
    int n;
} eval_nn;

static void nn_offer(eval_nn *h, float s, uint64_t row)
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

/* The queries' unit vectors packed as the library's encoder packs W_enc:
   tile t holds queries [64 t, 64 t + 64) as a [d, 64] panel. */
static float *pack_queries(const float *unit, size_t nq, size_t d)
{
    size_t ntiles = (nq + LSAE__NT - 1) / LSAE__NT, t, floats;
    float *P;
    if (ntiles && d > SIZE_MAX / LSAE__NT / ntiles / sizeof(float)) fail("queries: %zu x %zu overflows size_t", nq, d);
    floats = ntiles * d * LSAE__NT;
    P = (float *)xcalloc(floats ? floats : 1, sizeof(float));
    for (t = 0; t < ntiles; ++t)
        lsae__pack_tile(P + t * d * LSAE__NT, unit, d, t * LSAE__NT, nq - t * LSAE__NT < LSAE__NT ? nq - t * LSAE__NT : LSAE__NT);
    return P;
}

/* Offer rows X[0..n) (ids rowid, 1 / |x| in inv_norm) to every query's list:
   cos(q, x) = (q / |q|) . x / |x|, the product C = X Q^T by the encoder's
   kernel. Threads take groups of query tiles (each list has one writer),
   and each group sweeps the chunk's rows once, MR at a time, across all its
   tiles while those rows are in L1. A query is not its own neighbour. */
static void nn_chunk(const float *X, const float *inv_norm, const uint64_t *rowid, size_t n, size_t d, const float *packed, size_t nq,
                     const uint64_t *qrow, eval_nn *lists, int nthreads)
{
    const size_t ntiles = (nq + LSAE__NT - 1) / LSAE__NT, G = lsae__tile_group(d), ngroups = (ntiles + G - 1) / G;
    ptrdiff_t grp;
    (void)nthreads;
    LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(nthreads))
    for (grp = 0; grp < (ptrdiff_t)ngroups; ++grp) {
        float Cbuf[LSAE__MR * LSAE__NT], *thr = (float *)xmalloc(G * LSAE__NT * sizeof(float));
        const size_t t0 = (size_t)grp * G, t1 = t0 + G < ntiles ? t0 + G : ntiles;
        size_t r0, r, j, t;
        /* thr: each list's entry to beat (-inf until it is full) */
        for (t = t0; t < t1; ++t)
            for (j = 0; j < LSAE__NT; ++j) {
                const eval_nn *h = t * LSAE__NT + j < nq ? lists + t * LSAE__NT + j : NULL;
                thr[(t - t0) * LSAE__NT + j] = h && h->n == EVAL_NN ? h->s[EVAL_NN - 1] : -INFINITY;
            }
        for (r0 = 0; r0 < n; r0 += LSAE__MR) {
            const size_t mr = n - r0 < LSAE__MR ? n - r0 : LSAE__MR;
            for (t = t0; t < t1; ++t) {
                const size_t q0 = t * LSAE__NT, nt = nq - q0 < LSAE__NT ? nq - q0 : LSAE__NT;
                lsae__tile_rows(Cbuf, LSAE__NT, X + r0 * d, d, mr, packed + t * d * LSAE__NT, d, 0);
                for (r = 0; r < mr; ++r) {
                    const float w = inv_norm[r0 + r];
                    const uint64_t row = rowid[r0 + r];
#if defined(LSAE__AVX512)
                    /* most rows beat no list's last entry: test 64 at once */
                    if (nt == LSAE__NT) {
                        const __m512 vw = _mm512_set1_ps(w);
                        const float *c = Cbuf + r * LSAE__NT, *th = thr + (t - t0) * LSAE__NT;
                        __mmask16 k0 = _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_loadu_ps(c), vw), _mm512_loadu_ps(th), _CMP_GT_OQ);
                        __mmask16 k1 = _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_loadu_ps(c + 16), vw), _mm512_loadu_ps(th + 16), _CMP_GT_OQ);
                        __mmask16 k2 = _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_loadu_ps(c + 32), vw), _mm512_loadu_ps(th + 32), _CMP_GT_OQ);
                        __mmask16 k3 = _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_loadu_ps(c + 48), vw), _mm512_loadu_ps(th + 48), _CMP_GT_OQ);
                        if (!(k0 | k1 | k2 | k3)) continue;
                    }
#endif
                    for (j = 0; j < nt; ++j) {
                        eval_nn *h = lists + q0 + j;
                        const float s = Cbuf[r * LSAE__NT + j] * w;
                        if (h->n == EVAL_NN && !(s > h->s[EVAL_NN - 1])) continue;
                        if (row == qrow[q0 + j]) continue;
                        nn_offer(h, s, row);
                        if (h->n == EVAL_NN) thr[(t - t0) * LSAE__NT + j] = h->s[EVAL_NN - 1];
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
    double *shift, *sx, *sxx, *se, sum_cos = 0, sum_ratio = 0, sum_xh2 = 0, sum_dot = 0, tv = 0, sse = 0, perdim = 0, N;
    float *x, *xhat, *inv_x, *inv_h, *W = NULL;
    codes cd;
    uint64_t *rowid, active = 0;
    size_t j, l, nq = 0;
    float *Pq = NULL, *Ph = NULL;
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
    x = (float *)xcalloc(chunk * d, sizeof(float));
    xhat = (float *)xcalloc(chunk * d, sizeof(float));
    codes_init(&cd, m, chunk);
    rowid = (uint64_t *)xcalloc(chunk, sizeof(uint64_t));
    inv_x = (float *)xcalloc(chunk, sizeof(float));
    inv_h = (float *)xcalloc(chunk, sizeof(float));

    /* the queries: read, their finite ones kept, encoded and decoded, as
       unit vectors packed for the product (docs/eval.md, section 5) */
    if (o->queries && total > EVAL_NN) {
        uint64_t want = o->queries < total ? o->queries : total;
        size_t i, kept = 0;
        float *q, *qh, *qu;
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
        qu = (float *)xcalloc(nq * d + 1, sizeof(float));
        if ((r = codes_encode(&qc, m, q, nq)) != LSAE_OK || (r = codes_decode(&qc, m, nq, qh)) != LSAE_OK) {
            free(q); free(qh); free(qu);
            codes_free(&qc);
            eval_metrics_free(out);
            return eval_error(err, errcap, "%s", lsae_last_error());
        }
        unit_rows(qu, q, nq, d);
        Pq = pack_queries(qu, nq, d);
        unit_rows(qu, qh, nq, d);
        Ph = pack_queries(qu, nq, d);
        nn_x = (eval_nn *)xcalloc(nq + 1, sizeof(eval_nn));
        nn_h = (eval_nn *)xcalloc(nq + 1, sizeof(eval_nn));
        free(q); free(qh); free(qu);
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
        for (i = 0; i < kept; ++i) {
            const float *xi = x + i * d, *hi = xhat + i * d;
            double xx = 0, hh = 0, xh = 0;
            size_t nact = 0;
            /* per dimension, x shifted by the first row so the variance
               does not cancel away (docs/eval.md, section 1) */
            for (j = 0; j < d; ++j) {
                const double v = (double)xi[j] - shift[j], e = (double)xi[j] - (double)hi[j];
                sx[j] += v;
                sxx[j] += v * v;
                se[j] += e * e;
                xx += (double)xi[j] * (double)xi[j];
                hh += (double)hi[j] * (double)hi[j];
                xh += (double)xi[j] * (double)hi[j];
            }
            /* per row (section 2) */
            if (xx > 0 && hh > 0) sum_cos += xh / sqrt(xx * hh);
            if (xx > 0) { sum_ratio += sqrt(hh / xx); n_pos++; }
            sum_xh2 += hh;
            sum_dot += xh;
            inv_x[i] = xx > 0 ? (float)(1.0 / sqrt(xx)) : 0.0f;
            inv_h[i] = hh > 0 ? (float)(1.0 / sqrt(hh)) : 0.0f;
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
            nn_chunk(x, inv_x, rowid, kept, d, Pq, nq, out->query_rows, nn_x, nthreads);
            nn_chunk(xhat, inv_h, rowid, kept, d, Ph, nq, out->query_rows, nn_h, nthreads);
        }
        out->rows += kept;
        progress_scan("evaluating", first + n, total, t0);
    }
    live_clear();
    free(x); free(xhat); codes_free(&cd); free(rowid); free(inv_x); free(inv_h); free(Pq); free(Ph);
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
