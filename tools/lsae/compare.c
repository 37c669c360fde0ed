/* compare.c - lsae compare: which latents two models share, by the cosine
   of their decoder rows, and which latents of B have no partner in A.
   Part of lsae's one translation unit: included by main.c, not compiled alone.

   The similarity of latent b of B and latent a of A is the cosine of their
   decoder rows (the directions they write into embedding space),

       cos(b, a) = <W_dec^B[b], W_dec^A[a]> / (|W_dec^B[b]| |W_dec^A[a]|),

   signed: a row and its negative are opposite features, not one (a row of
   norm 0 has cosine 0 to everything).

   The matching is greedy and one-to-one: take the most similar pair of
   latents that are both still free, match them, repeat. Ties go to the
   lower index of B, then of A. Pairs below a floor (0.5, or --threshold if
   lower) are never matched, so a latent left without a partner is one whose
   best free partner is below the floor. Greedy is exact about what it
   claims: every matched pair is the most similar pair left at the time it
   was taken, a pair of mutual nearest neighbours is always matched to each
   other, and (a textbook bound for greedy weighted matching) the matched
   cosines add up to at least half of what the best possible one-to-one
   matching achieves. Why not the optimal (Hungarian) assignment: it is
   O(L^3) time and O(L_B L_A) memory, about 1.5e13 steps and 2.4 GB at
   L = 24,576, where this takes seconds; and it maximises the sum over all
   latents, so it would trade one strong pair for two middling ones, while
   the question here is per latent: has it a close partner?

   Cost. The cosines are one product of the normalised decoders,
   [L_B, d] x [L_A, d]^T, 2 L_B L_A d flops (9.3e11 at L = 24,576, d = 768),
   done with the library's packed GEMM tiles (latentsae.h, "GEMM") in blocks
   of B rows over threads, and never stored whole: each block keeps, per row
   of B, the best A latent and the pairs at or above the floor (the best
   MAX_CAND of them; see greedy_match for the rare row that runs out), and
   per A latent its best B latent. The kept pairs' cosines are computed again
   in double precision, so the matching does not hang on float rounding. */

#define COMPARE_MAX_CAND 32   /* pairs kept per latent of B, best first */
#define COMPARE_BLOCK 48      /* rows of B per block: a multiple of LSAE__MR (4 or 6) */
#define COMPARE_MARGIN 1e-4   /* float cosines within this of the floor are checked in double */

typedef struct compare_side {
    const float *W;   /* [L, d] decoder rows as loaded */
    double *norm;     /* [L] their Euclidean norms, in double */
    float *unit;      /* [L, d] the rows divided by their norms (0 for a zero row) */
    size_t L;
} compare_side;

/* What compare_models finds; arrays are indexed by latent. */
typedef struct compare_result {
    size_t LA, LB;
    double floor;         /* no pair below it is matched */
    int32_t *match;       /* [LB] the A latent matched to each B latent, or -1 */
    double *match_cos;    /* [LB] its cosine (NAN when unmatched) */
    int32_t *b_best;      /* [LB] the most similar A latent, matched or not */
    double *b_best_cos;   /* [LB] */
    int32_t *a_best;      /* [LA] the most similar B latent */
    double *a_best_cos;   /* [LA] */
    size_t rows_refilled; /* rows of B whose kept pairs ran out and were found again */
} compare_result;

static void *xcalloc3(size_t a, size_t b, size_t c)
{
    size_t n;
    if (!lsae__mul_size(a, b, &n)) fail("out of memory: %zu x %zu x %zu bytes overflows", a, b, c);
    return xcalloc(n, c);
}

/* sum_p x[p] y[p] in double: the exact check of a float cosine */
static double dot_double(const float *x, const float *y, size_t d)
{
    double s = 0;
    size_t p;
    for (p = 0; p < d; ++p) s += (double)x[p] * (double)y[p];
    return s;
}

static double cosine_double(const compare_side *B, size_t b, const compare_side *A, size_t a, size_t d)
{
    double n = B->norm[b] * A->norm[a];
    return n > 0 ? dot_double(B->W + b * d, A->W + a * d, d) / n : 0.0;
}

static void side_prepare(compare_side *s, const float *W, size_t L, size_t d)
{
    size_t l, p;
    s->W = W;
    s->L = L;
    s->norm = (double *)xcalloc(L, sizeof(double));
    s->unit = (float *)xcalloc3(L, d, sizeof(float));
    for (l = 0; l < L; ++l) {
        double n = sqrt(dot_double(W + l * d, W + l * d, d));
        s->norm[l] = n;
        if (n > 0)
            for (p = 0; p < d; ++p) s->unit[l * d + p] = (float)((double)W[l * d + p] / n);
    }
}

static void side_free(compare_side *s)
{
    free(s->norm);
    free(s->unit);
    memset(s, 0, sizeof *s);
}

/* a pair of row b's list: more similar first, then the lower A index */
typedef struct cand {
    double cos;
    int32_t a;
} cand;

static int cand_before(const cand *x, const cand *y) { return x->cos > y->cos || (x->cos == y->cos && x->a < y->a); }
static int cmp_cand(const void *x, const void *y)
{
    const cand *p = (const cand *)x, *q = (const cand *)y;
    return cand_before(p, q) ? -1 : cand_before(q, p) ? 1 : 0;
}

/* the per-row lists: row b's pairs are list[b * MAX_CAND, + n[b]), sorted;
   overflow[b]: more than MAX_CAND pairs reached the floor */
typedef struct cand_lists {
    cand *list;
    uint32_t *n;
    unsigned char *overflow;
} cand_lists;

/* Row b's pairs (b, a) with cos >= floor, over the A latents for which
   `skip` is 0 (skip NULL: all), in double, best first: the first MAX_CAND
   into its list. Used for rows whose block candidates ran out. */
static void row_refill(cand_lists *cl, size_t b, const compare_side *B, const compare_side *A, size_t d, double floor, const unsigned char *skip)
{
    cand *dst = cl->list + b * COMPARE_MAX_CAND, *all = NULL;
    size_t a, n = 0, cap = 0;
    for (a = 0; a < A->L; ++a) {
        double c;
        if (skip && skip[a]) continue;
        c = cosine_double(B, b, A, a, d);
        if (!(c >= floor)) continue;
        if (n == cap) { cap = cap ? 2 * cap : 64; all = (cand *)xrealloc(all, cap * sizeof(cand)); }
        all[n].cos = c;
        all[n].a = (int32_t)a;
        ++n;
    }
    if (n) qsort(all, n, sizeof(cand), cmp_cand);
    cl->n[b] = (uint32_t)(n < COMPARE_MAX_CAND ? n : COMPARE_MAX_CAND);
    cl->overflow[b] = n > COMPARE_MAX_CAND;
    if (n) memcpy(dst, all, cl->n[b] * sizeof(cand));
    free(all);
}

/* The blocked product: fills every row's candidate list and best A latent,
   and every A latent's best B latent (in float; refined after). */
static void compare_scan(const compare_side *B, const compare_side *A, size_t d, double floor, int threads, cand_lists *cl,
                         int32_t *b_best, int32_t *a_best)
{
    const size_t NT = LSAE__NT, tiles = (A->L + LSAE__NT - 1) / LSAE__NT;
    const size_t blocks = (B->L + COMPARE_BLOCK - 1) / COMPARE_BLOCK, tile_floats = d * LSAE__NT;
    const float low = (float)(floor - COMPARE_MARGIN);
    int nth = lsae__num_threads(threads);
    float *packed = (float *)xcalloc3(tiles, tile_floats, sizeof(float));
    float *col_best = (float *)xcalloc3((size_t)nth, A->L, sizeof(float)); /* per thread, then merged */
    int32_t *col_arg = (int32_t *)xcalloc3((size_t)nth, A->L, sizeof(int32_t));
    long long t, blk;
    size_t i, a;
    int th;

    /* A once, in the GEMM's packed tiles (d x 64 floats each, p-major) */
    LSAE__OMP(parallel for schedule(static) num_threads(nth))
    for (t = 0; t < (long long)tiles; ++t) {
        size_t l0 = (size_t)t * NT, nt = A->L - l0 < NT ? A->L - l0 : NT;
        lsae__pack_tile(packed + (size_t)t * tile_floats, A->unit, d, l0, nt);
    }
    for (i = 0; i < (size_t)nth * A->L; ++i) { col_best[i] = -INFINITY; col_arg[i] = -1; }

    LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(nth))
    for (blk = 0; blk < (long long)blocks; ++blk) {
        float C[COMPARE_BLOCK * LSAE__NT];
        float row_best[COMPARE_BLOCK];
        int32_t row_arg[COMPARE_BLOCK];
        size_t b0 = (size_t)blk * COMPARE_BLOCK, nb = B->L - b0 < COMPARE_BLOCK ? B->L - b0 : COMPARE_BLOCK;
        size_t tt, r, j, ncand = 0, capcand = 256;
        float *cb = col_best + (size_t)lsae__thread_id() * A->L;
        int32_t *ca = col_arg + (size_t)lsae__thread_id() * A->L;
        cand *pend = (cand *)malloc(capcand * sizeof(cand));   /* this block's pairs near the floor */
        uint32_t *pend_row = (uint32_t *)malloc(capcand * sizeof(uint32_t));
        int oom = !pend || !pend_row;
        for (r = 0; r < nb; ++r) { row_best[r] = -INFINITY; row_arg[r] = -1; }
        for (tt = 0; tt < tiles; ++tt) {
            size_t l0 = tt * NT, nt = A->L - l0 < NT ? A->L - l0 : NT;
            for (r = 0; r < nb; r += LSAE__MR) {
                size_t mr = nb - r < LSAE__MR ? nb - r : LSAE__MR;
                lsae__tile_rows(C + r * NT, NT, B->unit + (b0 + r) * d, d, mr, packed + tt * tile_floats, d, 0);
            }
            for (r = 0; r < nb; ++r)
                for (j = 0; j < nt; ++j) {
                    float c = C[r * NT + j];
                    /* strict >: the lower index keeps a tie (rows and tiles go up) */
                    if (c > row_best[r]) { row_best[r] = c; row_arg[r] = (int32_t)(l0 + j); }
                    /* blocks come to a thread in any order: a tie goes to the lower B index explicitly */
                    if (c > cb[l0 + j] || (c == cb[l0 + j] && (int32_t)(b0 + r) < ca[l0 + j])) { cb[l0 + j] = c; ca[l0 + j] = (int32_t)(b0 + r); }
                    if (c >= low && !oom) {
                        if (ncand == capcand) {
                            cand *np;
                            uint32_t *nr;
                            capcand *= 2;
                            np = (cand *)realloc(pend, capcand * sizeof(cand));
                            if (np) pend = np;
                            nr = (uint32_t *)realloc(pend_row, capcand * sizeof(uint32_t));
                            if (nr) pend_row = nr;
                            if (!np || !nr) { oom = 1; continue; }
                        }
                        pend[ncand].cos = (double)c;
                        pend[ncand].a = (int32_t)(l0 + j);
                        pend_row[ncand++] = (uint32_t)r;
                    }
                }
        }
        if (oom) {
            /* no fail() inside a parallel region: the block's rows find their pairs again, alone, below */
            for (r = 0; r < nb; ++r) { cl->n[b0 + r] = 0; cl->overflow[b0 + r] = 2; b_best[b0 + r] = row_arg[r]; }
        } else {
            /* each row's pairs in double, kept when they reach the floor, best first */
            for (r = 0; r < nb; ++r) {
                cand *dst = cl->list + (b0 + r) * COMPARE_MAX_CAND;
                size_t q, n = 0, total = 0;
                for (q = 0; q < ncand; ++q) {
                    cand x;
                    size_t s;
                    if (pend_row[q] != r) continue;
                    x.a = pend[q].a;
                    x.cos = cosine_double(B, b0 + r, A, (size_t)x.a, d);
                    if (!(x.cos >= floor)) continue;
                    ++total;
                    /* insertion into the sorted top MAX_CAND */
                    if (n == COMPARE_MAX_CAND && !cand_before(&x, &dst[n - 1])) continue;
                    s = n < COMPARE_MAX_CAND ? n++ : n - 1;
                    while (s > 0 && cand_before(&x, &dst[s - 1])) { dst[s] = dst[s - 1]; --s; }
                    dst[s] = x;
                }
                cl->n[b0 + r] = (uint32_t)n;
                cl->overflow[b0 + r] = total > COMPARE_MAX_CAND;
                b_best[b0 + r] = row_arg[r];
            }
        }
        free(pend);
        free(pend_row);
    }
    /* the rows a block could not hold, again one by one */
    for (i = 0; i < B->L; ++i)
        if (cl->overflow[i] == 2) row_refill(cl, i, B, A, d, floor, NULL);
    /* each A latent's best B latent over the threads: the higher cosine, then the lower B index */
    for (a = 0; a < A->L; ++a) {
        float bc = -INFINITY;
        int32_t arg = -1;
        for (th = 0; th < nth; ++th) {
            float c = col_best[(size_t)th * A->L + a];
            int32_t g = col_arg[(size_t)th * A->L + a];
            if (g < 0) continue;
            if (arg < 0 || c > bc || (c == bc && g < arg)) { bc = c; arg = g; }
        }
        a_best[a] = arg;
    }
    free(packed);
    free(col_best);
    free(col_arg);
}

/* heap of B rows keyed by their current pair: higher cosine first, then lower b */
static int heap_before(const cand_lists *cl, const uint32_t *pos, uint32_t x, uint32_t y)
{
    double cx = cl->list[(size_t)x * COMPARE_MAX_CAND + pos[x]].cos, cy = cl->list[(size_t)y * COMPARE_MAX_CAND + pos[y]].cos;
    return cx > cy || (cx == cy && x < y);
}

static void heap_down(uint32_t *h, size_t n, size_t i, const cand_lists *cl, const uint32_t *pos)
{
    for (;;) {
        size_t c = 2 * i + 1, best = i;
        uint32_t t;
        if (c < n && heap_before(cl, pos, h[c], h[best])) best = c;
        if (c + 1 < n && heap_before(cl, pos, h[c + 1], h[best])) best = c + 1;
        if (best == i) return;
        t = h[i]; h[i] = h[best]; h[best] = t;
        i = best;
    }
}

/* Greedy one-to-one matching over the kept pairs, lazily: a heap holds each
   unmatched B row at its best pair not yet ruled out. The top of the heap is
   then the most similar pair of all that remain; if its A latent is free the
   pair is matched (what a sort of every pair by cosine, walked from the top,
   would do), if not, the row moves to its next pair. A row whose MAX_CAND
   pairs are all taken while more reached the floor (`overflow`) finds its
   pairs again among the A latents still free: those not kept were no more
   similar than the last kept, so the order is the same as with every pair
   kept. */
static void greedy_match(cand_lists *cl, const compare_side *B, const compare_side *A, size_t d, double floor, compare_result *res)
{
    size_t LB = B->L, n = 0, i;
    uint32_t *heap = (uint32_t *)xcalloc(LB ? LB : 1, sizeof(uint32_t));
    uint32_t *pos = (uint32_t *)xcalloc(LB ? LB : 1, sizeof(uint32_t));
    unsigned char *taken = (unsigned char *)xcalloc(A->L ? A->L : 1, 1);
    for (i = 0; i < LB; ++i) {
        res->match[i] = -1;
        res->match_cos[i] = NAN;
        if (cl->n[i]) heap[n++] = (uint32_t)i;
    }
    for (i = n / 2; i-- > 0;) heap_down(heap, n, i, cl, pos);
    while (n) {
        uint32_t b = heap[0];
        const cand *c = cl->list + (size_t)b * COMPARE_MAX_CAND + pos[b];
        if (!taken[c->a]) {
            taken[c->a] = 1;
            res->match[b] = c->a;
            res->match_cos[b] = c->cos;
            heap[0] = heap[--n];
        } else if (++pos[b] < cl->n[b]) {
            /* its key went down: nothing else to do */
        } else if (cl->overflow[b]) {
            row_refill(cl, b, B, A, d, floor, taken);
            pos[b] = 0;
            res->rows_refilled++;
            if (!cl->n[b]) heap[0] = heap[--n];
        } else {
            heap[0] = heap[--n];
        }
        if (n) heap_down(heap, n, 0, cl, pos);
    }
    free(heap); free(pos); free(taken);
}

/* The whole comparison of decoders WB [LB, d] against WA [LA, d]. */
static void compare_models(const float *WB, size_t LB, const float *WA, size_t LA, size_t d, double floor, int threads, compare_result *res)
{
    compare_side A, B;
    cand_lists cl;
    size_t i;
    if (LA > INT32_MAX || LB > INT32_MAX) fail("models of more than %d latents are not supported", INT32_MAX);
    memset(res, 0, sizeof *res);
    res->LA = LA; res->LB = LB; res->floor = floor;
    side_prepare(&A, WA, LA, d);
    side_prepare(&B, WB, LB, d);
    cl.list = (cand *)xcalloc3(LB, COMPARE_MAX_CAND, sizeof(cand));
    cl.n = (uint32_t *)xcalloc(LB, sizeof(uint32_t));
    cl.overflow = (unsigned char *)xcalloc(LB, 1);
    res->match = (int32_t *)xcalloc(LB, sizeof(int32_t));
    res->match_cos = (double *)xcalloc(LB, sizeof(double));
    res->b_best = (int32_t *)xcalloc(LB, sizeof(int32_t));
    res->b_best_cos = (double *)xcalloc(LB, sizeof(double));
    res->a_best = (int32_t *)xcalloc(LA, sizeof(int32_t));
    res->a_best_cos = (double *)xcalloc(LA, sizeof(double));
    compare_scan(&B, &A, d, floor, threads, &cl, res->b_best, res->a_best);
    /* best partners in double; a row with pairs at the floor has its best first in its list */
    for (i = 0; i < LB; ++i) {
        const cand *first = cl.list + i * COMPARE_MAX_CAND;
        res->b_best_cos[i] = cosine_double(&B, i, &A, (size_t)res->b_best[i], d);
        if (cl.n[i] && (first->cos > res->b_best_cos[i] || (first->cos == res->b_best_cos[i] && first->a < res->b_best[i]))) {
            res->b_best[i] = first->a;
            res->b_best_cos[i] = first->cos;
        }
    }
    for (i = 0; i < LA; ++i) res->a_best_cos[i] = cosine_double(&B, (size_t)res->a_best[i], &A, i, d);
    greedy_match(&cl, &B, &A, d, floor, res);
    free(cl.list); free(cl.n); free(cl.overflow);
    side_free(&A);
    side_free(&B);
}

static void compare_result_free(compare_result *r)
{
    free(r->match); free(r->match_cos); free(r->b_best); free(r->b_best_cos); free(r->a_best); free(r->a_best_cos);
    memset(r, 0, sizeof *r);
}

/* ============================================================= the command */

static const uint64_t *g_unmatched_fires; /* qsort has no context argument */
static const double *g_unmatched_best;
/* with data: the most active first; without: the least similar first; then by index */
static int cmp_unmatched(const void *x, const void *y)
{
    size_t a = *(const size_t *)x, b = *(const size_t *)y;
    if (g_unmatched_fires) {
        if (g_unmatched_fires[a] != g_unmatched_fires[b]) return g_unmatched_fires[a] > g_unmatched_fires[b] ? -1 : 1;
    } else if (g_unmatched_best[a] != g_unmatched_best[b]) {
        return g_unmatched_best[a] < g_unmatched_best[b] ? -1 : 1;
    }
    return a < b ? -1 : a > b;
}

static float *decoder_of(lsae_model *m)
{
    size_t L = lsae_model_num_latents(m), d = lsae_model_d_in(m);
    float *W = (float *)xcalloc3(L, d, sizeof(float));
    lsae_result r = lsae_model_get_weights(m, NULL, NULL, W, NULL);
    if (r != LSAE_OK) lib_fail(r, NULL);
    return W;
}

static int cmd_compare(int argc, char **argv)
{
    const char *usage = "lsae compare A B [--data EMBEDDINGS --texts FILE] [options]";
    const char *about =
        "Match the latents of model B to those of model A (same d_in; any numbers of latents) by the cosine of "
        "their decoder rows, one to one, and say what B learned that A did not. The matching is greedy: the most "
        "similar pair of latents both still free is matched first, then the next, ties to the lower index; pairs "
        "below 0.5 (or --threshold, if lower) are never matched. Greedy rather than the optimal (Hungarian) "
        "assignment, which costs O(L^3) (hours at 24,576 latents) and would trade one close pair for two loose "
        "ones. Printed: for cosine 0.9, 0.7 and 0.5, the matched pairs, and (not one to one) how many latents of "
        "B have some latent of A that close, and of A some latent of B; then the latents of B with no partner "
        "at --threshold, each with its closest latent of A. With --data they are ranked by how often they fire "
        "there, most first, with their top rows (and texts, with --texts); without, the least similar first.";
    const char *data = NULL, *texts_path = NULL;
    double threshold = 0.5, cuts[4];
    uint64_t list = 20, top = 5, max_rows = 0;
    int threads = 0, as_json = 0, ncut = 3, i;
    data_args da;
    char *pos[2], whereA[PATH_CAP], whereB[PATH_CAP];
    lsae_model *mA, *mB;
    float *WA, *WB;
    size_t LA, LB, d, l, n_unmatched = 0, n_listed, never = 0;
    size_t *unmatched;
    compare_result res;
    lsae_dataset *ds = NULL;
    scan s;
    texts tx;
    double t0;
    opt o[] = {
        OPT_GROUP("options"),
        OPT("--threshold", NULL, O_DBL, &threshold, "C", "0.5", "a latent of B with no partner at cosine C or more is listed as new"),
        OPT("--list", NULL, O_U64, &list, "N", "20", "how many of them to show in detail (0 = all)"),
        OPT("--data", NULL, O_STR, &data, "PATH", NULL, "embeddings to rank them by fire rate and show their top rows"),
        OPT("--texts", NULL, O_STR, &texts_path, "FILE", NULL, "the text of each row of --data, one line per row"),
        OPT("--top", NULL, O_U64, &top, "N", "5", "rows shown per latent"),
        OPT("--json", NULL, O_FLAG, &as_json, NULL, NULL, "print one JSON object instead of text"),
        OPT("--max-rows", NULL, O_U64, &max_rows, "N", "all", "look only at the first N rows of --data"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores", "threads for the cosines and for encoding"),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 2) != 2) usage_fail("give two models, A and B");
    if (!(threshold > 0 && threshold <= 1)) usage_fail("--threshold must be in (0, 1], not %g", threshold);
    if (top == 0 || top > 1000) usage_fail("--top must be between 1 and 1000");
    if (threads < 0) usage_fail("--threads must be >= 0");
    if (texts_path && !data) usage_fail("--texts needs --data: the texts are those of its rows");
    mA = open_model(pos[0], whereA);
    mB = open_model(pos[1], whereB);
    d = lsae_model_d_in(mA);
    if (lsae_model_d_in(mB) != d)
        fail("the models live in different spaces: A has d_in %zu, B has d_in %zu", d, lsae_model_d_in(mB));
    LA = lsae_model_num_latents(mA);
    LB = lsae_model_num_latents(mB);
    WA = decoder_of(mA);
    WB = decoder_of(mB);
    cuts[0] = 0.9; cuts[1] = 0.7; cuts[2] = 0.5;
    if (threshold != 0.9 && threshold != 0.7 && threshold != 0.5) {
        /* the threshold's own row, in descending order */
        for (i = ncut; i > 0 && cuts[i - 1] < threshold; --i) cuts[i] = cuts[i - 1];
        cuts[i] = threshold;
        ++ncut;
    }
    catch_signals();
    t0 = now_s();
    compare_models(WB, LB, WA, LA, d, threshold < 0.5 ? threshold : 0.5, threads, &res);
    if (g_live) fprintf(stderr, "%s: %zu x %zu cosines in %.2f s\n", g_cmd, LB, LA, now_s() - t0);
    check_interrupted();

    memset(&s, 0, sizeof s);
    memset(&tx, 0, sizeof tx);
    if (data) {
        lsae_model_set_num_threads(mB, threads);
        ds = open_data(data, &da);
        texts_load(&tx, texts_path, lsae_dataset_rows(ds));
        scan_run(&s, mB, ds, (size_t)top, 0, max_rows, "encoding with B");
    }
    unmatched = (size_t *)xcalloc(LB ? LB : 1, sizeof(size_t));
    for (l = 0; l < LB; ++l)
        if (!(res.match_cos[l] >= threshold)) {
            unmatched[n_unmatched++] = l;
            if (data && !s.fires[l]) ++never;
        }
    g_unmatched_fires = data ? s.fires : NULL;
    g_unmatched_best = res.b_best_cos;
    qsort(unmatched, n_unmatched, sizeof(size_t), cmp_unmatched);
    n_listed = list && list < n_unmatched ? (size_t)list : n_unmatched;

    if (as_json) {
        size_t q;
        float *act = (float *)xmalloc((size_t)top * sizeof(float));
        uint64_t *row = (uint64_t *)xmalloc((size_t)top * sizeof(uint64_t));
        printf("{\"a\": {\"model\": ");
        json_str(stdout, whereA);
        printf(", \"num_latents\": %zu, \"k\": %zu, \"d_in\": %zu}, \"b\": {\"model\": ", LA, lsae_model_k(mA), d);
        json_str(stdout, whereB);
        printf(", \"num_latents\": %zu, \"k\": %zu, \"d_in\": %zu}", LB, lsae_model_k(mB), d);
        printf(", \"matching\": \"greedy\", \"floor\": %.9g, \"threshold\": %.9g, \"rows_refilled\": %zu, \"counts\": [", res.floor, threshold,
               res.rows_refilled);
        for (i = 0; i < ncut; ++i) {
            size_t pairs = 0, bn = 0, an = 0;
            for (l = 0; l < LB; ++l) { pairs += res.match_cos[l] >= cuts[i]; bn += res.b_best_cos[l] >= cuts[i]; }
            for (l = 0; l < LA; ++l) an += res.a_best_cos[l] >= cuts[i];
            printf("%s{\"cosine\": %.9g, \"matched\": %zu, \"b_with_near_a\": %zu, \"a_with_near_b\": %zu}", i ? ", " : "", cuts[i], pairs, bn, an);
        }
        printf("], \"match\": [");
        for (l = 0; l < LB; ++l) printf("%s%d", l ? "," : "", (int)res.match[l]);
        printf("], \"match_cosine\": [");
        for (l = 0; l < LB; ++l) { if (l) putchar(','); json_num(stdout, res.match_cos[l]); }
        printf("], \"b_best\": [");
        for (l = 0; l < LB; ++l) printf("%s%d", l ? "," : "", (int)res.b_best[l]);
        printf("], \"b_best_cosine\": [");
        for (l = 0; l < LB; ++l) { if (l) putchar(','); json_num(stdout, res.b_best_cos[l]); }
        printf("], \"a_best\": [");
        for (l = 0; l < LA; ++l) printf("%s%d", l ? "," : "", (int)res.a_best[l]);
        printf("], \"a_best_cosine\": [");
        for (l = 0; l < LA; ++l) { if (l) putchar(','); json_num(stdout, res.a_best_cos[l]); }
        printf("], \"unmatched\": [");
        for (l = 0; l < n_unmatched; ++l) printf("%s%zu", l ? "," : "", unmatched[l]);
        printf("]");
        if (data) printf(", \"rows\": %llu, \"unmatched_never_fire\": %zu", (unsigned long long)s.rows, never);
        printf(", \"listed\": [");
        for (l = 0; l < n_listed; ++l) {
            size_t b = unmatched[l];
            printf("%s{\"latent\": %zu, \"best_a\": %d, \"best_cosine\": ", l ? ", " : "", b, (int)res.b_best[b]);
            json_num(stdout, res.b_best_cos[b]);
            if (data) {
                size_t n = top_sorted(&s, b, act, row);
                printf(", \"fires\": %llu, \"fire_rate\": ", (unsigned long long)s.fires[b]);
                json_num(stdout, s.rows ? (double)s.fires[b] / (double)s.rows : NAN);
                printf(", \"top\": [");
                for (q = 0; q < n; ++q) {
                    printf("%s{\"row\": %llu, \"act\": %.9g", q ? ", " : "", (unsigned long long)row[q], (double)act[q]);
                    if (tx.n) { printf(", \"text\": "); json_str(stdout, tx.line[row[q]]); }
                    printf("}");
                }
                printf("]");
            }
            printf("}");
        }
        printf("]}\n");
        free(act); free(row);
    } else {
        size_t q;
        float *act = (float *)xmalloc((size_t)top * sizeof(float));
        uint64_t *row = (uint64_t *)xmalloc((size_t)top * sizeof(uint64_t));
        int32_t *taken_by = (int32_t *)xcalloc(LA ? LA : 1, sizeof(int32_t)); /* the B latent matched to each A latent at --threshold */
        for (l = 0; l < LA; ++l) taken_by[l] = -1;
        for (l = 0; l < LB; ++l)
            if (res.match_cos[l] >= threshold) taken_by[res.match[l]] = (int32_t)l;
        printf("A: %s (%zu latents, k %zu)\nB: %s (%zu latents, k %zu)\nd_in %zu; greedy one-to-one matching by decoder cosine\n\n",
               whereA, LA, lsae_model_k(mA), whereB, LB, lsae_model_k(mB), d);
        printf("  cosine >=   matched pairs (one to one)        B latents with an A latent   A latents with a B latent\n");
        printf("                                                that close                   that close\n");
        for (i = 0; i < ncut; ++i) {
            size_t pairs = 0, bn = 0, an = 0;
            char left[64];
            for (l = 0; l < LB; ++l) { pairs += res.match_cos[l] >= cuts[i]; bn += res.b_best_cos[l] >= cuts[i]; }
            for (l = 0; l < LA; ++l) an += res.a_best_cos[l] >= cuts[i];
            snprintf(left, sizeof left, "%zu (%.1f%% of B, %.1f%% of A)", pairs, 100.0 * (double)pairs / (double)LB, 100.0 * (double)pairs / (double)LA);
            printf("  %-10.3g  %-34s %8zu (%5.1f%%)           %8zu (%5.1f%%)\n", cuts[i], left, bn, 100.0 * (double)bn / (double)LB, an,
                   100.0 * (double)an / (double)LA);
        }
        printf("\n%zu latents of B have no partner in A at cosine >= %g", n_unmatched, threshold);
        if (data) printf(" (%zu of them never fire on these %llu rows)", never, (unsigned long long)s.rows);
        if (n_listed) printf("; %s %zu:\n", n_listed == n_unmatched ? "all" : data ? "the most active" : "the least similar", n_listed);
        else printf(".\n");
        for (l = 0; l < n_listed; ++l) {
            size_t b = unmatched[l];
            printf("\nB latent %zu: closest A latent %d at cosine %.3f", b, (int)res.b_best[b], res.b_best_cos[b]);
            if (res.b_best[b] >= 0 && taken_by[res.b_best[b]] >= 0) /* a split: B has two latents near that one */
                printf(" (matched to B latent %d at %.3f)", (int)taken_by[res.b_best[b]], res.match_cos[taken_by[res.b_best[b]]]);
            if (data) {
                size_t n = top_sorted(&s, b, act, row);
                printf("; active on %.2f%% of rows (%llu)\n", 100.0 * (double)s.fires[b] / (double)(s.rows ? s.rows : 1),
                       (unsigned long long)s.fires[b]);
                for (q = 0; q < n; ++q) {
                    printf("  %7.3f  ", (double)act[q]);
                    if (tx.n) print_clipped(tx.line[row[q]], 150);
                    else printf("row %llu", (unsigned long long)row[q]);
                    printf("\n");
                }
            } else {
                printf("\n");
            }
        }
        free(act); free(row); free(taken_by);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) fail("writing to standard output failed");
    free(unmatched);
    compare_result_free(&res);
    texts_free(&tx);
    scan_free(&s);
    if (ds) lsae_dataset_close(ds);
    free(WA); free(WB);
    lsae_model_free(mA);
    lsae_model_free(mB);
    return 0;
}
