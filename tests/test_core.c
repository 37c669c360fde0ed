/* Unit tests of latentsae.h's core against independent references:
   top-k against a full sort, the blocked GEMM against the naive loop and a
   double-precision product, encode against a brute-force double encoder,
   config validation, determinism, file round trips. */
#include "test_util.h"
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include "test_internals.h" /* the full-product GEMM, its oracle, a one-row top-k */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------ references */

static const float *ref_vals;
static int ref_cmp(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (ref_vals[i] > ref_vals[j]) return -1;
    if (ref_vals[i] < ref_vals[j]) return 1;
    return i < j ? -1 : i > j;
}

/* full sort of indices: value descending, index ascending */
static void ref_topk(const float *v, int n, int k, int *out)
{
    int *ix = (int *)malloc(sizeof(int) * (size_t)n), i;
    for (i = 0; i < n; ++i) ix[i] = i;
    ref_vals = v;
    qsort(ix, (size_t)n, sizeof(int), ref_cmp);
    for (i = 0; i < k; ++i) out[i] = ix[i];
    free(ix);
}

static void test_topk(void)
{
    static const int sizes[] = { 1, 2, 7, 64, 129, 1000 };
    size_t si;
    int mode;
    for (mode = 0; mode < 4; ++mode)
        for (si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
            int n = sizes[si], ks[4], ki, i;
            float *v = (float *)malloc(sizeof(float) * (size_t)n);
            lsae__kv *heap = (lsae__kv *)malloc(sizeof(lsae__kv) * 2 * (size_t)n);
            int *ref = (int *)malloc(sizeof(int) * (size_t)n);
            ks[0] = 1; ks[1] = n > 3 ? 3 : n; ks[2] = n / 2 ? n / 2 : 1; ks[3] = n;
            for (i = 0; i < n; ++i) {
                if (mode == 0) v[i] = (float)tu_normal();               /* random */
                else if (mode == 1) v[i] = (float)(tu_next() % 3);      /* many ties */
                else if (mode == 2) v[i] = 0.0f;                        /* all zero */
                else v[i] = (float)(n - i) * 0.5f;                      /* sorted input */
            }
            for (ki = 0; ki < 4; ++ki) {
                int k = ks[ki], ok = 1;
                lsae__topk_row(v, (size_t)n, (size_t)k, heap);
                ref_topk(v, n, k, ref);
                for (i = 0; i < k; ++i)
                    if (heap[i].i != ref[i] || heap[i].v != v[ref[i]]) ok = 0;
                CHECKF(ok, "top-k mismatch mode %d n %d k %d", mode, n, k);
            }
            free(v); free(heap); free(ref);
        }
}

/* lsae__compact against the definition. A buffer of n candidates in
   increasing index order is cut back for a top kk; whatever it keeps must be
   exact: in order, between kk and n entries, a superset of the kk best (value
   descending, index ascending), each kept entry beating each dropped one,
   the threshold t with every dropped entry <= t and (since later candidates
   equal to t are rejected) every kept entry >= t. Value patterns: distinct
   values, three values (ties at every cut), mostly zeros (ReLU), and one
   built so that no sampled value fits: the 32 sampled positions (multiples
   of n / 32) hold values far above and below the others, distinct or in
   runs of 16 equal, forcing the exact bisection. */
static void test_compact(void)
{
    static const size_t kks[] = { 1, 5, 64, 100, 384 };
    size_t ki, pattern, extra;
    for (ki = 0; ki < sizeof kks / sizeof kks[0]; ++ki)
        for (pattern = 0; pattern < 5; ++pattern)
            for (extra = 0; extra < 16; extra += 5) {
                const size_t kk = kks[ki], n = lsae__buf_cap(kk) + extra;
                lsae__kv *buf = (lsae__kv *)malloc(n * sizeof(lsae__kv)), *orig = (lsae__kv *)malloc(n * sizeof(lsae__kv));
                int *ref = (int *)malloc(n * sizeof(int));
                float *vals = (float *)malloc(n * sizeof(float)), t = -1.0f;
                unsigned char *kept = (unsigned char *)calloc(n, 1), *sampled = (unsigned char *)calloc(n, 1);
                size_t cnt = n, i, j, bad = 0;
                for (i = 0; i < 32; ++i) sampled[i * n / 32] = (unsigned char)(1 + i % 2);
                for (i = 0; i < n; ++i) {
                    float v;
                    if (pattern == 0) v = (float)tu_uniform();
                    else if (pattern == 1) v = (float)(tu_next() % 3);
                    else if (pattern == 2) v = tu_next() % 4 ? 0.0f : (float)tu_uniform();
                    else v = sampled[i] == 1 ? 1000.0f + (float)i : sampled[i] == 2 ? 0.0f : 1.0f + (float)((i * 7919) % n / (pattern == 4 ? 16 : 1));
                    orig[i].v = vals[i] = v;
                    orig[i].i = (int32_t)(3 * i + 1);
                }
                memcpy(buf, orig, n * sizeof(lsae__kv));
                lsae__compact(buf, &cnt, kk, &t);
                CHECKF(cnt >= kk && cnt <= n, "compact kk %zu pattern %d: kept %zu of %zu", kk, (int)pattern, cnt, n);
                /* kept entries: in order, from the buffer */
                for (i = 0, j = 0; i < cnt && j < n; ++i) {
                    while (j < n && orig[j].i != buf[i].i) ++j;
                    if (j == n || orig[j].v != buf[i].v) { ++bad; break; }
                    kept[j++] = 1;
                }
                /* the kk best are kept; kept beat dropped; t separates */
                ref_topk(vals, (int)n, (int)kk, ref);
                for (i = 0; i < kk; ++i) bad += !kept[ref[i]];
                for (i = 0; i < n; ++i) {
                    if (kept[i] && orig[i].v < t) ++bad;
                    if (!kept[i] && orig[i].v > t) ++bad;
                    for (j = 0; j < n && kept[i]; ++j)
                        if (!kept[j] && lsae__better(orig[j], orig[i])) { ++bad; break; }
                }
                CHECKF(bad == 0, "compact kk %zu pattern %d n %zu: %zu violations", kk, (int)pattern, n, bad);
                free(buf); free(orig); free(ref); free(vals); free(kept); free(sampled);
            }
}

/* lsae__sample32 against a sort written here: the 32 values at i n / 32,
   largest first by lsae__order_bits (-0 below +0, NaN by its bits), equal
   keys in sample order (the same bits either way, but a rank counted
   wrong leaves a place unwritten or written twice, caught as a mismatch
   against the prefilled NaN pattern). Patterns: distinct values, 3
   values, +0 and -0 mixed, all equal, infinities and NaN among them. */
static void test_sample32(void)
{
    static const size_t ns[] = { 32, 33, 100, 1000 };
    size_t ni, pattern, i, j;
    for (ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni)
        for (pattern = 0; pattern < 5; ++pattern) {
            const size_t n = ns[ni];
            lsae__kv *buf = (lsae__kv *)malloc(n * sizeof(lsae__kv));
            float got[32], want[32];
            uint32_t wkey[32];
            for (i = 0; i < n; ++i) {
                float v;
                if (pattern == 0) v = (float)tu_uniform() * 4.0f - 2.0f;
                else if (pattern == 1) v = (float)(tu_next() % 3);
                else if (pattern == 2) v = tu_next() % 2 ? 0.0f : -0.0f;
                else if (pattern == 3) v = 1.5f;
                else {
                    const unsigned r = (unsigned)(tu_next() % 6);
                    v = r == 0 ? (float)HUGE_VAL : r == 1 ? -(float)HUGE_VAL : r == 2 ? (float)NAN : (float)tu_uniform();
                }
                buf[i].v = v;
                buf[i].i = (int32_t)i;
            }
            /* the reference: insertion by key, stable */
            for (i = 0; i < 32; ++i) {
                const float v = buf[i * n / 32].v;
                const uint32_t key = lsae__order_bits(v);
                for (j = i; j > 0 && wkey[j - 1] < key; --j) {
                    wkey[j] = wkey[j - 1];
                    want[j] = want[j - 1];
                }
                wkey[j] = key;
                want[j] = v;
            }
            for (i = 0; i < 32; ++i) got[i] = (float)NAN;
            lsae__sample32(buf, n, got);
            CHECKF(memcmp(got, want, sizeof got) == 0, "sample32 n %zu pattern %d: not the sampled values in order", n, (int)pattern);
            free(buf);
        }
}

/* lsae__cut_above against the definition (the merge of the threads'
   candidates cuts with it before sorting). Candidates in any order (indices
   shuffled) are cut for a top kk: the kept entries must stay in order, be
   at least kk and include the kk best, and each must beat each dropped one
   (the cut is a threshold, so no tie is split). Value patterns: distinct,
   three values (ties at every cut), and sampled positions (multiples of
   n / 32) far above the rest, so that no sample is a usable threshold and
   nothing may be cut. On distinct values it must also cut: kk and at most
   a quarter of the rest kept (about n / 32 more than kk is usual, the
   sample's spacing; its ranks vary). */
static void test_cut_above(void)
{
    static const size_t kks[] = { 1, 32, 128, 300 };
    static const size_t ns[] = { 64, 100, 450, 1000 };
    size_t ki, ni, pattern;
    for (ki = 0; ki < sizeof kks / sizeof kks[0]; ++ki)
        for (ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni)
            for (pattern = 0; pattern < 3; ++pattern) {
                const size_t kk = kks[ki], n = ns[ni];
                lsae__kv *buf, *orig;
                int *ref;
                float *vals;
                unsigned char *kept;
                size_t cnt, i, j, bad = 0;
                if (kk >= n) continue;
                buf = (lsae__kv *)malloc(n * sizeof(lsae__kv));
                orig = (lsae__kv *)malloc(n * sizeof(lsae__kv));
                ref = (int *)malloc(n * sizeof(int));
                vals = (float *)malloc(n * sizeof(float));
                kept = (unsigned char *)calloc(n, 1);
                for (i = 0; i < n; ++i) {
                    const float v = pattern == 0 ? (float)tu_uniform() : pattern == 1 ? (float)(tu_next() % 3) : (float)tu_uniform();
                    orig[i].v = vals[i] = v;
                    orig[i].i = (int32_t)((i * 7919) % n); /* not in index order */
                }
                if (pattern == 2)
                    for (i = 0; i < 32; ++i) orig[i * n / 32].v = vals[i * n / 32] = 1000.0f + (float)i;
                memcpy(buf, orig, n * sizeof(lsae__kv));
                cnt = lsae__cut_above(buf, n, kk);
                CHECKF(cnt >= kk && cnt <= n, "cut_above kk %zu n %zu pattern %d: kept %zu", kk, n, (int)pattern, cnt);
                for (i = 0, j = 0; i < cnt && j < n; ++i) {
                    while (j < n && orig[j].i != buf[i].i) ++j;
                    if (j == n || orig[j].v != buf[i].v) { ++bad; break; }
                    kept[j++] = 1;
                }
                /* ref_topk breaks ties by position; positions and indices
                   order ties differently here, so compare values: the kk-th
                   best value's entries above it must all be kept, and no
                   kept entry may be worse than a dropped one */
                ref_topk(vals, (int)n, (int)kk, ref);
                for (i = 0; i < n; ++i)
                    if (!kept[i] && vals[i] > vals[ref[kk - 1]]) ++bad;
                for (i = 0; i < n; ++i)
                    for (j = 0; j < n && kept[i]; ++j)
                        if (!kept[j] && vals[j] >= vals[i]) { ++bad; break; }
                CHECKF(bad == 0, "cut_above kk %zu n %zu pattern %d: %zu violations", kk, n, (int)pattern, bad);
                if (pattern == 0 && n - kk >= 32)
                    CHECKF(cnt <= kk + (n - kk) / 4, "cut_above kk %zu n %zu: kept %zu, the cut does not cut", kk, n, cnt);
                if (pattern == 2 && kk > 32)
                    CHECKF(cnt == n, "cut_above kk %zu n %zu: no sample fits, yet %zu of %zu kept", kk, n, cnt, n);
                free(buf); free(orig); free(ref); free(vals); free(kept);
            }
}

/* lsae__keep_best against the definition (it had only indirect checks:
   the cut-back's fallback and the AuxK merge): a buffer in increasing
   index order cut to exactly its kk best (value descending, then index),
   in order, and the kk-th best value returned. Patterns: distinct values;
   three values (ties at every cut); runs of 16 equal values; half the
   values equal (0.5), so the kk-th best is often among many ties; a few
   values far above the rest; a mix of -0 and +0 with positives. */
static void test_keep_best(void)
{
    static const size_t ns[] = { 64, 100, 384, 1000 };
    static const size_t kks[] = { 1, 5, 64, 192, 1000 };
    size_t ni, ki, pattern;
    for (ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni)
        for (ki = 0; ki < sizeof kks / sizeof kks[0]; ++ki)
            for (pattern = 0; pattern < 6; ++pattern) {
                const size_t n = ns[ni], kk = kks[ki] < ns[ni] ? kks[ki] : ns[ni];
                lsae__kv *buf = (lsae__kv *)malloc(n * sizeof(lsae__kv));
                float *vals = (float *)malloc(n * sizeof(float)), t;
                int *ref = (int *)malloc(n * sizeof(int));
                unsigned char *want = (unsigned char *)calloc(n, 1);
                size_t i, j, bad = 0;
                for (i = 0; i < n; ++i) {
                    float v;
                    if (pattern == 0) v = (float)tu_uniform();
                    else if (pattern == 1) v = (float)(tu_next() % 3);
                    else if (pattern == 2) v = (float)((i * 7919) % n / 16);
                    else if (pattern == 3) v = tu_next() % 2 ? 0.5f : (float)tu_uniform();
                    else if (pattern == 4) v = i % (n / 32) == 0 ? 1000.0f + (float)i : (float)tu_uniform();
                    else v = tu_next() % 3 == 0 ? (tu_next() % 2 ? -0.0f : 0.0f) : (float)tu_uniform();
                    buf[i].v = vals[i] = v;
                    buf[i].i = (int32_t)(3 * i + 1);
                }
                ref_topk(vals, (int)n, (int)kk, ref);
                for (i = 0; i < kk; ++i) want[ref[i]] = 1;
                t = lsae__keep_best(buf, n, kk);
                /* the kept entries: exactly the wanted ones, in order */
                for (i = 0, j = 0; i < n; ++i)
                    if (want[i]) {
                        if (buf[j].i != (int32_t)(3 * i + 1) || memcmp(&buf[j].v, &vals[i], 4) != 0) ++bad;
                        ++j;
                    }
                CHECKF(bad == 0 && t == vals[ref[kk - 1]], "keep_best n %zu kk %zu pattern %d: %zu wrong entries, t %g (want %g)",
                       n, kk, (int)pattern, bad, (double)t, (double)vals[ref[kk - 1]]);
                free(buf); free(vals); free(ref); free(want);
            }
}

/* lsae__sort_best against a comparison sort written here, on the total
   order it promises: value descending by lsae__order_bits (so +0 before
   -0, NaN by its bits), then index ascending. Sizes across the bucket
   pass's range (16 to 256) and outside it; patterns: distinct values in a
   narrow band (the bucket pass), three values (buckets over 16: the radix
   sort), one value far above the rest (the same), +0 and -0 mixed, NaN
   and infinities among them, and 50 values a few times each (equal values
   in the bucket pass, put in index order there). Every entry's bits and
   index must be in the reference's place. */
static int sort_best_ref_cmp(const void *pa, const void *pb)
{
    const lsae__kv *x = (const lsae__kv *)pa, *y = (const lsae__kv *)pb;
    const uint32_t kx = lsae__order_bits(x->v), ky = lsae__order_bits(y->v);
    if (kx != ky) return kx > ky ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}
static void test_sort_best(void)
{
    static const size_t ns[] = { 1, 15, 16, 17, 100, 150, 255, 256, 257, 600 };
    size_t ni, pattern, i;
    for (ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni)
        for (pattern = 0; pattern < 6; ++pattern) {
            const size_t n = ns[ni], L = 4096;
            lsae__kv *a = (lsae__kv *)malloc(n * sizeof(lsae__kv)), *want = (lsae__kv *)malloc(n * sizeof(lsae__kv));
            lsae__kv *tmp = (lsae__kv *)malloc(n * sizeof(lsae__kv));
            size_t bad = 0;
            for (i = 0; i < n; ++i) {
                float v;
                if (pattern == 0) v = 0.3f + 0.25f * (float)tu_uniform();
                else if (pattern == 1) v = (float)(tu_next() % 3);
                else if (pattern == 2) v = i == n / 2 ? 1e6f : 0.3f + 0.01f * (float)tu_uniform();
                else if (pattern == 3) v = tu_next() % 3 == 0 ? (tu_next() % 2 ? -0.0f : 0.0f) : (float)tu_uniform();
                else if (pattern == 4) {
                    const unsigned r = (unsigned)(tu_next() % 8);
                    v = r == 0 ? (float)HUGE_VAL : r == 1 ? -(float)HUGE_VAL : r == 2 ? (float)NAN : (float)tu_uniform() - 0.5f;
                } else v = 0.3f + 0.01f * (float)(tu_next() % 50);
                a[i].v = v;
                a[i].i = (int32_t)((i * 2654435761u) % L); /* distinct for n <= L, in no order */
            }
            memcpy(want, a, n * sizeof(lsae__kv));
            qsort(want, n, sizeof(lsae__kv), sort_best_ref_cmp);
            lsae__sort_best(a, n, tmp, L);
            for (i = 0; i < n; ++i) bad += memcmp(&a[i].v, &want[i].v, 4) != 0 || a[i].i != want[i].i;
            CHECKF(bad == 0, "sort_best n %zu pattern %d: %zu entries out of place", n, (int)pattern, bad);
            free(a); free(want); free(tmp);
        }
}

/* The trainers the window, select-split and gradient-row tests compare
   (L >= 81 latents, k 4): type 0 TopK with multi_topk, 1 BatchTopK, 2
   nested Matryoshka (levels of 20, 80 and L latents), 3 per-level
   Matryoshka (k 2, 3, 4; no AuxK) */
static lsae_config four_types_config(size_t d, size_t L, int type, int threads)
{
    lsae_config c = lsae_config_default(d);
    c.num_latents = L; c.k = 4; c.seed = 5; c.num_threads = threads;
    c.lr = 1e-2; c.lr_warmup_steps = 2; c.total_steps = 20; c.dead_feature_threshold = 1000;
    if (type == 0) c.multi_topk = 1;
    if (type == 1) c.sae_type = LSAE_SAE_BATCHTOPK;
    if (type >= 2) {
        c.sae_type = LSAE_SAE_MATRYOSHKA;
        c.matryoshka_levels = 3;
        c.matryoshka_sizes[0] = 20; c.matryoshka_sizes[1] = 80; c.matryoshka_sizes[2] = L;
        if (type == 3) {
            c.matryoshka_form = LSAE_MATRYOSHKA_PER_LEVEL;
            c.matryoshka_ks[0] = 2; c.matryoshka_ks[1] = 3; c.matryoshka_ks[2] = 4;
            c.auxk_alpha = 0.0;
        }
    }
    return c;
}

/* lsae__window_grads: the live latents' B3-B4 held to the window's end
   against batch by batch, the same bits. Three trainers per case, B3-B4
   held off (defer -1), held for the whole window (defer 1) and as chosen
   (defer 0: at this shape two slots, so a window of three fills them and
   the held work runs mid-window). Each window first pins a quarter of the
   latents dead (set_state), so AuxK entries and dead latents, taken with
   their batch, mix with held live ones; multi_topk adds a class. Window 2
   grows the batch mid-window (the storage regrown: the held work runs
   first), window 3 reads the gradients mid-window (get_grads runs it), and
   window 4 accumulates five batches before apply. TopK, BatchTopK and the
   two Matryoshka forms; 1 and 3 threads. Every batch's loss, every step's
   gradient norm, the mid-window gradients and the final weights must be
   equal. */
static void test_window_grads(void)
{
    const size_t d = 24, L = 200, rows = 40, n = 2 * L * d + L + d;
    int type, threads;
    for (type = 0; type < 4; ++type)
        for (threads = 1; threads <= 3; threads += 2) {
            lsae_model *m[3];
            lsae_trainer *t[3];
            float *w[3], *g[3], *x = (float *)malloc((rows + 8) * d * sizeof(float));
            uint64_t *pin = (uint64_t *)malloc(L * sizeof(uint64_t));
            double loss[3] = { 0, 0, 0 }, norm[3] = { 0, 0, 0 };
            size_t i, v, same_loss = 1, same_norm = 1, same_g = 1, slots[3];
            int win, bt;
            for (v = 0; v < 3; ++v) {
                lsae_config c = four_types_config(d, L, type, threads);
                c.grad_acc_steps = 3;
                OK(lsae_model_create(&c, NULL, &m[v]));
                OK(lsae_trainer_create(m[v], &c, &t[v]));
                t[v]->defer = v == 0 ? -1 : v == 1 ? 1 : 0;
                w[v] = (float *)malloc(n * sizeof(float));
                g[v] = (float *)malloc(n * sizeof(float));
            }
            tu_seed(17);
            for (win = 0; win < 5; ++win) {
                const int nb = win == 4 ? 5 : 3;
                for (i = 0; i < L; ++i) pin[i] = i % 4 == 1 ? 5000 : 0;
                for (v = 0; v < 3; ++v) {
                    lsae_trainer_state ts;
                    memset(&ts, 0, sizeof ts);
                    OK(lsae_trainer_get_state(t[v], &ts));
                    ts.since_fired = pin;
                    OK(lsae_trainer_set_state(t[v], &ts));
                }
                for (bt = 0; bt < nb; ++bt) {
                    const size_t r = win == 2 && bt == 1 ? rows + 8 : rows;
                    for (i = 0; i < r * d; ++i) x[i] = (float)tu_normal() + (float)(i % d) * 0.03f;
                    for (v = 0; v < 3; ++v) {
                        lsae_step_stats st;
                        OK(lsae_trainer_accumulate(t[v], x, r, &st));
                        loss[v] = st.loss;
                        slots[v] = t[v]->nslots;
                        if (win == 3 && bt == 1) OK(lsae_trainer_get_grads(t[v], g[v], g[v] + L * d, g[v] + L * d + L, g[v] + 2 * L * d + L));
                    }
                    same_loss &= loss[0] == loss[1] && loss[0] == loss[2];
                    if (win == 3 && bt == 1) same_g &= !memcmp(g[0], g[1], n * sizeof(float)) && !memcmp(g[0], g[2], n * sizeof(float));
                }
                for (v = 0; v < 3; ++v) {
                    lsae_step_stats st;
                    OK(lsae_trainer_apply(t[v], &st));
                    norm[v] = st.grad_norm;
                }
                same_norm &= norm[0] == norm[1] && norm[0] == norm[2];
            }
            CHECKF(slots[0] == 1 && slots[1] == 3 && slots[2] == 2, "window type %d: %zu, %zu, %zu slots (want 1, 3, 2)", type, slots[0], slots[1], slots[2]);
            for (v = 0; v < 3; ++v) OK(lsae_model_get_weights(m[v], w[v], w[v] + L * d, w[v] + L * d + L, w[v] + 2 * L * d + L));
            CHECKF(same_loss && same_norm && same_g, "window type %d, %d threads: losses %d, gradient norms %d, mid-window gradients %d equal",
                   type, threads, (int)same_loss, (int)same_norm, (int)same_g);
            CHECKF(!memcmp(w[0], w[1], n * sizeof(float)) && !memcmp(w[0], w[2], n * sizeof(float)),
                   "window type %d, %d threads: the weights differ with B3-B4 held to the window's end", type, threads);
            for (v = 0; v < 3; ++v) {
                lsae_trainer_free(t[v]);
                lsae_model_free(m[v]);
                free(w[v]);
                free(g[v]);
            }
            free(x);
            free(pin);
        }
}

/* The gradient rows are zeroed at a window's first touch, not by Adam
   (lsae__grad_row): rows a window never touches keep stale values that
   nothing may read. Trainer A trains on; before each window a trainer B is
   made from A's weights, moments and counters (set_weights, set_state):
   its gradient memory is all zeros, so it needs no first-touch zeroing.
   Both take the same batch: the gradients (get_grads, where an untouched
   row must read 0), the loss, and the weights after apply must be equal,
   bit for bit. One batch of 40 rows a step touches about half of the 200
   latents; a quarter are pinned dead (AuxK). The four types of
   four_types_config; 1 and 3 threads. */
static void test_grad_rows(void)
{
    const size_t d = 24, L = 200, rows = 40, n = 2 * L * d + L + d;
    int type, threads;
    for (type = 0; type < 4; ++type)
        for (threads = 1; threads <= 3; threads += 2) {
            lsae_config c = four_types_config(d, L, type, threads);
            lsae_model *ma = NULL, *mb = NULL;
            lsae_trainer *ta = NULL, *tb = NULL;
            float *x = (float *)malloc(rows * d * sizeof(float)), *wa = (float *)malloc(n * sizeof(float)), *wb = (float *)malloc(n * sizeof(float));
            float *ga = (float *)malloc(n * sizeof(float)), *gb = (float *)malloc(n * sizeof(float)), *mv = (float *)malloc(2 * n * sizeof(float));
            uint64_t *since = (uint64_t *)malloc(L * sizeof(uint64_t));
            size_t i, same_g = 1, same_w = 1, same_loss = 1;
            int win;
            c.seed = 9;
            OK(lsae_model_create(&c, NULL, &ma));
            OK(lsae_trainer_create(ma, &c, &ta));
            tu_seed(31);
            for (win = 0; win < 6; ++win) {
                lsae_trainer_state st;
                lsae_step_stats sa, sb;
                memset(&st, 0, sizeof st);
                st.since_fired = since;
                st.m_W_enc = mv; st.m_b_enc = mv + L * d; st.m_W_dec = mv + L * d + L; st.m_b_dec = mv + 2 * L * d + L;
                st.v_W_enc = mv + n; st.v_b_enc = mv + n + L * d; st.v_W_dec = mv + n + L * d + L; st.v_b_dec = mv + n + 2 * L * d + L;
                OK(lsae_trainer_get_state(ta, &st));
                for (i = 0; i < L; ++i) since[i] = i % 4 == 1 ? 5000 : since[i];
                OK(lsae_trainer_set_state(ta, &st));
                OK(lsae_model_get_weights(ma, wa, wa + L * d, wa + L * d + L, wa + 2 * L * d + L));
                OK(lsae_model_create(&c, NULL, &mb));
                OK(lsae_model_set_weights(mb, wa, wa + L * d, wa + L * d + L, wa + 2 * L * d + L));
                if (type == 1) OK(lsae_model_set_batchtopk_threshold(mb, lsae_model_batchtopk_threshold(ma)));
                OK(lsae_trainer_create(mb, &c, &tb));
                OK(lsae_trainer_set_state(tb, &st));
                for (i = 0; i < rows * d; ++i) x[i] = (float)tu_normal() + (float)(i % d) * 0.03f;
                OK(lsae_trainer_accumulate(ta, x, rows, &sa));
                OK(lsae_trainer_accumulate(tb, x, rows, &sb));
                same_loss &= sa.loss == sb.loss;
                OK(lsae_trainer_get_grads(ta, ga, ga + L * d, ga + L * d + L, ga + 2 * L * d + L));
                OK(lsae_trainer_get_grads(tb, gb, gb + L * d, gb + L * d + L, gb + 2 * L * d + L));
                same_g &= !memcmp(ga, gb, n * sizeof(float));
                OK(lsae_trainer_apply(ta, &sa));
                OK(lsae_trainer_apply(tb, &sb));
                OK(lsae_model_get_weights(ma, wa, wa + L * d, wa + L * d + L, wa + 2 * L * d + L));
                OK(lsae_model_get_weights(mb, wb, wb + L * d, wb + L * d + L, wb + 2 * L * d + L));
                same_w &= !memcmp(wa, wb, n * sizeof(float)) && sa.grad_norm == sb.grad_norm;
                lsae_trainer_free(tb);
                lsae_model_free(mb);
                tb = NULL; mb = NULL;
            }
            CHECKF(same_loss && same_g && same_w, "gradient rows type %d, %d threads: losses %d, gradients %d, weights after the step %d equal to a fresh trainer's",
                   type, threads, (int)same_loss, (int)same_g, (int)same_w);
            lsae_trainer_free(ta);
            lsae_model_free(ma);
            free(x); free(wa); free(wb); free(ga); free(gb); free(mv); free(since);
        }
}

/* lsae__select with the rows split among the threads against the latents
   split, in training: two trainers whose selections are forced one way and
   the other (select_rows 1: rows whenever there are as many as threads;
   huge: never), a quarter of the latents pinned dead so that the
   AuxK buffers fill, for TopK with multi_topk, BatchTopK and both
   Matryoshka forms, 2 and 3 threads, batches of 40 and 41 rows (the split
   uneven). Every loss and the final weights must be equal. */
static void test_select_split(void)
{
    const size_t d = 24, L = 200, n = 2 * L * d + L + d;
    int type, threads;
    /* the rule itself: rows_per threads would wrap to 0 or 1 here (split
       always), where no row count reaches rows_per a thread */
    CHECK(!lsae__select_by_rows(1000, SIZE_MAX / 2 + 1, 2));
    CHECK(!lsae__select_by_rows(1000, SIZE_MAX / 3 + 1, 3));
    CHECK(!lsae__select_by_rows(SIZE_MAX, SIZE_MAX, 2));
    CHECK(lsae__select_by_rows(128, 64, 2) && !lsae__select_by_rows(127, 64, 2) && !lsae__select_by_rows(1000, 1, 1));
    CHECK(lsae__select_by_rows(192, 64, 3) && !lsae__select_by_rows(191, 64, 3));
    for (type = 0; type < 4; ++type)
        for (threads = 2; threads <= 3; ++threads) {
            lsae_model *m[2];
            lsae_trainer *t[2];
            float *w[2], *x = (float *)malloc(41 * d * sizeof(float));
            uint64_t *pin = (uint64_t *)malloc(L * sizeof(uint64_t));
            size_t i, v, same_loss = 1;
            int step;
            for (v = 0; v < 2; ++v) {
                lsae_config c = four_types_config(d, L, type, threads);
                OK(lsae_model_create(&c, NULL, &m[v]));
                OK(lsae_trainer_create(m[v], &c, &t[v]));
                t[v]->select_rows = v == 0 ? 1 : SIZE_MAX;
                w[v] = (float *)malloc(n * sizeof(float));
            }
            tu_seed(23);
            for (step = 0; step < 6; ++step) {
                const size_t r = step % 2 ? 41 : 40;
                for (i = 0; i < L; ++i) pin[i] = i % 4 == 1 ? 5000 : 0;
                for (i = 0; i < r * d; ++i) x[i] = (float)tu_normal() + (float)(i % d) * 0.03f;
                for (v = 0; v < 2; ++v) {
                    lsae_trainer_state ts;
                    lsae_step_stats st;
                    memset(&ts, 0, sizeof ts);
                    OK(lsae_trainer_get_state(t[v], &ts));
                    ts.since_fired = pin;
                    OK(lsae_trainer_set_state(t[v], &ts));
                    OK(lsae_trainer_step(t[v], x, r, &st));
                    w[v][0] = (float)st.loss; /* compared below, then overwritten by the weights */
                }
                same_loss &= w[0][0] == w[1][0];
            }
            for (v = 0; v < 2; ++v) OK(lsae_model_get_weights(m[v], w[v], w[v] + L * d, w[v] + L * d + L, w[v] + 2 * L * d + L));
            CHECKF(same_loss && !memcmp(w[0], w[1], n * sizeof(float)), "select split type %d, %d threads: losses %d, weights %d equal",
                   type, threads, (int)same_loss, !memcmp(w[0], w[1], n * sizeof(float)));
            for (v = 0; v < 2; ++v) {
                lsae_trainer_free(t[v]);
                lsae_model_free(m[v]);
                free(w[v]);
            }
            free(x);
            free(pin);
        }
}

/* B3's fused kernels against the calls they stand for, bit for bit:
   lsae__dot_axpy against lsae__dot then lsae__axpy, lsae__dot4_axpy4
   against four lsae__dot and an lsae__axpy4, at lengths around the vector
   widths and the 64-element step (tails of every size). A fused kernel
   whose dot summed in another order, or whose axpy was not one rounding
   an element, differs here. */
static void test_fused_kernels(void)
{
    static const size_t ns[] = { 1, 7, 8, 15, 16, 17, 31, 63, 64, 65, 100, 127, 128, 129, 191, 384, 385, 768 };
    size_t ni, i, e;
    for (ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni) {
        const size_t n = ns[ni];
        float *x = (float *)malloc(4 * n * 4), *w = (float *)malloc(n * 4), *y1 = (float *)malloc(n * 4), *y2 = (float *)malloc(n * 4);
        float a[4], d1[4], d2[4];
        const float *xs[4];
        for (i = 0; i < 4 * n; ++i) x[i] = (float)tu_normal();
        for (i = 0; i < n; ++i) { w[i] = (float)tu_normal(); y1[i] = y2[i] = (float)tu_normal(); }
        for (e = 0; e < 4; ++e) { a[e] = (float)tu_normal(); xs[e] = x + e * n; }
        d1[0] = lsae__dot(x, w, n);
        lsae__axpy(y1, a[0], x, n);
        d2[0] = lsae__dot_axpy(x, w, y2, a[0], n);
        CHECKF(!memcmp(d1, d2, 4) && !memcmp(y1, y2, n * 4), "dot_axpy n %zu: other bits than dot then axpy", n);
        for (e = 0; e < 4; ++e) d1[e] = lsae__dot(xs[e], w, n);
        lsae__axpy4(y1, a, xs[0], xs[1], xs[2], xs[3], n);
        lsae__dot4_axpy4(d2, a, xs[0], xs[1], xs[2], xs[3], w, y2, n);
        CHECKF(!memcmp(d1, d2, sizeof d1) && !memcmp(y1, y2, n * 4), "dot4_axpy4 n %zu: other bits than four dots and axpy4", n);
        free(x); free(w); free(y1); free(y2);
    }
}

static void test_gemm(void)
{
    static const size_t dims[] = { 1, 3, 7, 64, 65, 129 };
    size_t a, b, c;
    for (a = 0; a < 6; ++a)
        for (b = 0; b < 6; ++b)
            for (c = 0; c < 6; ++c) {
                size_t M = dims[a], N = dims[b] + 3 * dims[c] % 5, K = dims[c], i, j, p;
                float *A = (float *)malloc(M * K * 4), *B = (float *)malloc(N * K * 4);
                float *C1 = (float *)malloc(M * N * 4), *C2 = (float *)malloc(M * N * 4);
                float *pack = (float *)malloc(lsae__pack_floats(K, 3) * sizeof(float));
                double maxerr = 0, maxref = 0, maxdiff = 0;
                for (i = 0; i < M * K; ++i) A[i] = (float)tu_normal();
                for (i = 0; i < N * K; ++i) B[i] = (float)tu_normal();
                lsae__gemm_nt_naive(C1, A, B, M, N, K);
                lsae__gemm_nt(C2, A, B, M, N, K, pack, 3);
                for (i = 0; i < M; ++i)
                    for (j = 0; j < N; ++j) {
                        double s = 0;
                        for (p = 0; p < K; ++p) s += (double)A[i * K + p] * B[j * K + p];
                        if (fabs(C2[i * N + j] - s) > maxerr) maxerr = fabs(C2[i * N + j] - s);
                        if (fabs(C2[i * N + j] - C1[i * N + j]) > maxdiff) maxdiff = fabs(C2[i * N + j] - C1[i * N + j]);
                        if (fabs(s) > maxref) maxref = fabs(s);
                    }
                /* float sums of K terms of size ~1: error ~ K * 2^-24 * sqrt(K) */
                CHECKF(maxerr <= 1e-6 * (double)K * (maxref > 1 ? maxref : 1) + 1e-6, "GEMM %zux%zux%zu: max error %g vs double", M, N, K, maxerr);
                CHECKF(maxdiff <= 1e-6 * (double)K * (maxref > 1 ? maxref : 1) + 1e-6, "GEMM %zux%zux%zu: blocked and naive differ by %g", M, N, K, maxdiff);
                free(A); free(B); free(C1); free(C2); free(pack);
            }
    {
        /* an output past 8 MiB with every row on a 64-byte boundary: the
           blocked product streams it out (non-temporal stores); C starts
           poisoned with NaN, so an element not written shows */
        const size_t M = 40, N = 65600, K = 9;
        float *A = (float *)malloc(M * K * 4), *B = (float *)malloc(N * K * 4), *C1 = (float *)malloc(M * N * 4);
        unsigned char *raw = (unsigned char *)malloc(M * N * 4 + 64);
        float *C2 = (float *)(void *)(raw + (64 - (size_t)((uintptr_t)raw % 64)) % 64);
        float *pack = (float *)malloc(lsae__pack_floats(K, 3) * sizeof(float));
        size_t i, bad = 0;
        for (i = 0; i < M * K; ++i) A[i] = (float)tu_normal();
        for (i = 0; i < N * K; ++i) B[i] = (float)tu_normal();
        for (i = 0; i < M * N; ++i) C2[i] = NAN;
        lsae__gemm_nt_naive(C1, A, B, M, N, K);
        lsae__gemm_nt(C2, A, B, M, N, K, pack, 3);
        for (i = 0; i < M * N; ++i) bad += !(fabs(C2[i] - C1[i]) <= 1e-5);
        CHECKF(bad == 0, "GEMM %zux%zux%zu into an aligned 10 MiB output: %zu elements wrong or not written", M, N, K, bad);
        free(A); free(B); free(C1); free(raw); free(pack);
    }
}

/* The tile grouping follows the core's L2 (half of it) and does not change
   a bit of the product */
static void test_gemm_groups(void)
{
    const size_t M = 13, N = 64 * 11 + 5, K = 130;
    size_t g, i;
    float *A = (float *)malloc(M * K * 4), *B = (float *)malloc(N * K * 4), *C0 = (float *)malloc(M * N * 4), *C1 = (float *)malloc(M * N * 4);
    float *pack = (float *)malloc((size_t)3 * 8 * K * LSAE__NT * sizeof(float));
    CHECK(lsae__tile_group_for(768, (size_t)2 << 20) == 5);   /* 1 MiB of 192 KiB tiles */
    CHECK(lsae__tile_group_for(768, (size_t)512 << 10) == 1); /* a Zen 2 core: one tile */
    CHECK(lsae__tile_group_for(768, (size_t)1 << 20) == 2);   /* Zen 4 */
    CHECK(lsae__tile_group_for(384, (size_t)512 << 10) == 2);
    CHECK(lsae__tile_group_for(768, 0) == 5);                 /* unknown: 1 MiB */
    CHECK(lsae__tile_group_for(64, (size_t)64 << 20) == 8);   /* at most 8 */
    CHECK(lsae__tile_group_for(8192, (size_t)256 << 10) == 1); /* at least 1 */
    for (i = 0; i < M * K; ++i) A[i] = (float)tu_normal();
    for (i = 0; i < N * K; ++i) B[i] = (float)tu_normal();
    lsae__gemm_nt_g(C0, A, B, M, N, K, pack, 3, 1);
    for (g = 2; g <= 8; ++g) {
        for (i = 0; i < M * N; ++i) C1[i] = NAN;
        lsae__gemm_nt_g(C1, A, B, M, N, K, pack, 3, g);
        CHECKF(!memcmp(C0, C1, M * N * 4), "GEMM %zux%zux%zu: %zu tiles a group gives other bits than 1", M, N, K, g);
    }
    free(A); free(B); free(C0); free(C1); free(pack);
}

static int msg_has(const char *needle) { return strstr(lsae_last_error(), needle) != NULL; }

static void test_config(void)
{
    lsae_config c = lsae_config_default(768);
    lsae_model *m = NULL;
    CHECK(lsae_config_validate(&c) == LSAE_OK);
    CHECK(lsae_config_num_latents(&c) == 768 * 32);
    NEAR(lsae_config_lr(&c), 2e-4 / sqrt(768.0 * 32 / 16384.0), 1e-12);
    c.k = 768 * 32 + 1;
    CHECK(lsae_config_validate(&c) == LSAE_INVALID_ARGS && msg_has("larger than"));
    CHECK(lsae_model_create(&c, NULL, &m) == LSAE_INVALID_ARGS && m == NULL);
    c = lsae_config_default(0);
    CHECK(lsae_config_validate(&c) == LSAE_INVALID_ARGS && msg_has("d_in"));
    c = lsae_config_default(8); c.k = 0;
    CHECK(lsae_config_validate(&c) == LSAE_INVALID_ARGS && msg_has("k is 0"));
    c = lsae_config_default(8); c.expansion_factor = 0;
    CHECK(lsae_config_validate(&c) == LSAE_INVALID_ARGS && msg_has("expansion_factor"));
    c = lsae_config_default(8); c.grad_acc_steps = 0;
    CHECK(lsae_config_validate(&c) == LSAE_INVALID_ARGS && msg_has("grad_acc_steps"));
    c = lsae_config_default(8); c.lr = -1;
    CHECK(lsae_config_validate(&c) == LSAE_INVALID_ARGS && msg_has("lr"));
    c = lsae_config_default(8); c.auxk_alpha = NAN;
    CHECK(lsae_config_validate(&c) == LSAE_INVALID_ARGS && msg_has("auxk_alpha"));
    /* d_in * expansion_factor overflows size_t: 2^70 on 64 bits, 2^38 on 32 */
    c = lsae_config_default((size_t)1 << (sizeof(size_t) * 4 + 8)); c.expansion_factor = (size_t)1 << (sizeof(size_t) * 4 - 2);
    CHECK(lsae_config_validate(&c) == LSAE_INVALID_ARGS);
    c = lsae_config_default(8); c.num_latents = 16; c.k = 16;
    CHECK(lsae_config_validate(&c) == LSAE_OK);

    /* schedule: docs/math.md, section 2.6 */
    c = lsae_config_default(8);
    c.lr_warmup_steps = 10; c.total_steps = 110;
    NEAR(lsae_lr_factor(&c, 0), 0.0, 0);
    NEAR(lsae_lr_factor(&c, 5), 0.5, 1e-15);
    NEAR(lsae_lr_factor(&c, 10), 1.0, 1e-15);
    NEAR(lsae_lr_factor(&c, 60), 0.5, 1e-15);
    NEAR(lsae_lr_factor(&c, 109), 0.01, 1e-15);
    NEAR(lsae_lr_factor(&c, 110), 0.0, 0);
    c.lr_schedule = LSAE_LR_COSINE;
    NEAR(lsae_lr_factor(&c, 60), 0.5, 1e-12);
    NEAR(lsae_lr_factor(&c, 35), 0.5 * (1 + cos(3.141592653589793 * 0.25)), 1e-12);
    c.lr_schedule = LSAE_LR_LINEAR; c.total_steps = 4; /* W = min(10, 4) = 4 */
    NEAR(lsae_lr_factor(&c, 2), 0.5, 1e-15);
    NEAR(lsae_lr_factor(&c, 4), 0.0, 0);
    c.total_steps = 0; /* unknown: constant after warm-up */
    NEAR(lsae_lr_factor(&c, 1000), 1.0, 0);
}

/* added to every encoder bias by make_model: negative values make most
   pre-activations exactly 0, so the selection must break many exact ties */
static double bias_shift = 0.0;

/* a model with non-trivial biases, for encode tests */
static lsae_model *make_model(size_t d, size_t L, size_t k, unsigned long long seed, int threads)
{
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    float *b_enc = (float *)malloc(L * 4), *b_dec = (float *)malloc(d * 4);
    size_t i;
    c.num_latents = L; c.k = k; c.seed = seed; c.num_threads = threads;
    OK(lsae_model_create(&c, NULL, &m));
    for (i = 0; i < L; ++i) b_enc[i] = (float)(bias_shift + 0.05 * tu_normal());
    for (i = 0; i < d; ++i) b_dec[i] = (float)(0.1 * tu_normal());
    OK(lsae_model_set_weights(m, NULL, b_enc, NULL, b_dec));
    free(b_enc); free(b_dec);
    return m;
}

static void test_init(void)
{
    lsae_config c = lsae_config_default(48);
    lsae_model *a = NULL, *b = NULL, *e = NULL;
    size_t L = 48 * 32, i, j;
    float *wa = (float *)malloc(L * 48 * 4), *wb = (float *)malloc(L * 48 * 4), *wd = (float *)malloc(L * 48 * 4);
    float *be = (float *)malloc(L * 4), *bd = (float *)malloc(48 * 4);
    double bound = 1.0 / sqrt(48.0), maxabs = 0, mean = 0;
    c.seed = 7;
    OK(lsae_model_create(&c, NULL, &a));
    c.num_threads = 1;
    OK(lsae_model_create(&c, NULL, &b));
    c.seed = 8;
    OK(lsae_model_create(&c, NULL, &e));
    OK(lsae_model_get_weights(a, wa, be, wd, bd));
    OK(lsae_model_get_weights(b, wb, NULL, NULL, NULL));
    CHECK(memcmp(wa, wb, L * 48 * 4) == 0);            /* same seed, any thread count: same bits */
    OK(lsae_model_get_weights(e, wb, NULL, NULL, NULL));
    CHECK(memcmp(wa, wb, L * 48 * 4) != 0);            /* other seed: other weights */
    for (i = 0; i < L * 48; ++i) {
        if (fabs(wa[i]) > maxabs) maxabs = fabs(wa[i]);
        mean += wa[i];
    }
    mean /= (double)(L * 48);
    CHECK(maxabs <= bound && maxabs > 0.99 * bound);   /* U(-1/sqrt d, 1/sqrt d) */
    CHECK(fabs(mean) < 0.01 * bound);
    for (i = 0; i < L; ++i) {
        double n = 0, dot = 0, nw = 0;
        for (j = 0; j < 48; ++j) { n += (double)wd[i * 48 + j] * wd[i * 48 + j]; dot += (double)wd[i * 48 + j] * wa[i * 48 + j]; nw += (double)wa[i * 48 + j] * wa[i * 48 + j]; }
        if (fabs(sqrt(n) - 1) > 1e-6 || fabs(dot / sqrt(n * nw) - 1) > 1e-6) { CHECKF(0, "W_dec row %zu not the unit W_enc row", i); break; }
        if (be[i] != 0) { CHECKF(0, "b_enc[%zu] = %g", i, be[i]); break; }
    }
    for (j = 0; j < 48; ++j) CHECK(bd[j] == 0);
    lsae_model_free(a); lsae_model_free(b); lsae_model_free(e);
    free(wa); free(wb); free(wd); free(be); free(bd);
}

/* encode against a brute-force double encoder */
static void check_encode(size_t d, size_t L, size_t k, size_t rows, int threads)
{
    lsae_model *m = make_model(d, L, k, 11 + d + L, threads);
    float *x = (float *)malloc(rows * d * 4), *acts = (float *)malloc(rows * k * 4), *xh = (float *)malloc(rows * d * 4);
    float *We = (float *)malloc(L * d * 4), *be = (float *)malloc(L * 4), *Wd = (float *)malloc(L * d * 4), *bd = (float *)malloc(d * 4);
    float *pre = (float *)malloc(L * 4);
    int32_t *idx = (int32_t *)malloc(rows * k * 4);
    int *ref = (int *)malloc(L * sizeof(int));
    size_t r, i, j, bad = 0;
    double maxerr = 0, maxdec = 0;
    for (i = 0; i < rows * d; ++i) x[i] = (float)tu_normal();
    OK(lsae_model_get_weights(m, We, be, Wd, bd));
    OK(lsae_model_encode(m, x, rows, k, acts, idx));
    for (r = 0; r < rows; ++r) {
        for (i = 0; i < L; ++i) {
            double s = be[i];
            for (j = 0; j < d; ++j) s += (double)We[i * d + j] * ((double)x[r * d + j] - bd[j]);
            pre[i] = (float)(s > 0 ? s : 0);
        }
        ref_topk(pre, (int)L, (int)k, ref);
        for (i = 0; i < k; ++i) {
            double err = fabs(acts[r * k + i] - pre[ref[i]]);
            if (err > maxerr) maxerr = err;
            /* an index may differ only where the double values nearly tie,
               and never among exact zeros (those go to the lowest indices) */
            if (idx[r * k + i] != ref[i] && fabs(pre[idx[r * k + i]] - pre[ref[i]]) > 1e-5) ++bad;
            if (idx[r * k + i] != ref[i] && acts[r * k + i] == 0.0f && pre[ref[i]] == 0.0f) ++bad;
            if (i && acts[r * k + i] > acts[r * k + i - 1]) ++bad; /* sorted */
        }
    }
    CHECKF(bad == 0, "encode d %zu L %zu k %zu rows %zu: %zu wrong indices", d, L, k, rows, bad);
    CHECKF(maxerr < 1e-5, "encode d %zu L %zu k %zu: activation error %g", d, L, k, maxerr);
    /* decode against the definition */
    OK(lsae_model_decode(m, acts, idx, rows, k, xh));
    for (r = 0; r < rows; ++r)
        for (j = 0; j < d; ++j) {
            double s = bd[j];
            for (i = 0; i < k; ++i) s += (double)acts[r * k + i] * Wd[(size_t)idx[r * k + i] * d + j];
            if (fabs(s - xh[r * d + j]) > maxdec) maxdec = fabs(s - xh[r * d + j]);
        }
    CHECKF(maxdec < 1e-4, "decode error %g", maxdec);
    lsae_model_free(m);
    free(x); free(acts); free(xh); free(We); free(be); free(Wd); free(bd); free(pre); free(idx); free(ref);
}

static void test_encode(void)
{
    check_encode(16, 100, 5, 13, 0);     /* L not a multiple of the tile, rows not of the row block */
    check_encode(7, 7, 1, 1, 1);         /* k = 1, one row */
    check_encode(9, 40, 40, 6, 3);       /* k = L */
    check_encode(64, 1024, 32, 37, 2);
    check_encode(33, 129, 8, 64, 5);     /* more threads than needed */
    check_encode(32, 700, 16, 150, 2);   /* rows enough that the threads split them (LSAE__SELECT_ROWS_PER_THREAD) */
    check_encode(24, 300, 8, 200, 3);
    /* large k: the candidate buffers are cut back by a sampled threshold */
    check_encode(48, 3000, 64, 19, 3);
    bias_shift = -0.4;                   /* about 1 in 4 pre-activations positive */
    check_encode(32, 2500, 96, 21, 2);
    bias_shift = -1.2;                   /* about 40 positive of 2048: the top 100 ends in zeros */
    check_encode(16, 2048, 100, 23, 2);
    bias_shift = 0.0;
}

static void test_encode_threads(void)
{
    const size_t d = 40, L = 700, k = 12, rows = 300; /* 2 to 4 threads split the rows, 1 the latents */
    lsae_model *m = make_model(d, L, k, 3, 1);
    float *x = (float *)malloc(rows * d * 4), *a1 = (float *)malloc(rows * k * 4), *a2 = (float *)malloc(rows * k * 4);
    int32_t *i1 = (int32_t *)malloc(rows * k * 4), *i2 = (int32_t *)malloc(rows * k * 4);
    size_t i;
    int nt, bad = 0;
    for (i = 0; i < rows * d; ++i) x[i] = (float)tu_normal();
    OK(lsae_model_encode(m, x, rows, k, a1, i1));
    for (nt = 2; nt <= 4; ++nt) {
        lsae_model_set_num_threads(m, nt);
        OK(lsae_model_encode(m, x, rows, k, a2, i2));
        CHECKF(memcmp(a1, a2, rows * k * 4) == 0 && memcmp(i1, i2, rows * k * 4) == 0, "encode with %d threads differs from 1 thread", nt);
    }
    /* several threads encoding with one model at once, each its own rows */
    lsae_model_set_num_threads(m, 2);
    {
        int r;
#ifdef _OPENMP
#pragma omp parallel for num_threads(4) reduction(+:bad)
#endif
        for (r = 0; r < (int)rows; ++r) {
            float a[12];
            int32_t ix[12];
            if (lsae_model_encode(m, x + (size_t)r * d, 1, k, a, ix) != LSAE_OK ||
                memcmp(a, a1 + (size_t)r * k, k * 4) != 0 || memcmp(ix, i1 + (size_t)r * k, k * 4) != 0) ++bad;
        }
    }
    CHECKF(bad == 0, "%d rows differ when encoded from concurrent threads", bad);
    /* NaN rows are refused, naming the row */
    x[7 * d + 3] = NAN;
    CHECK(lsae_model_encode(m, x, rows, k, a2, i2) == LSAE_INVALID_ARGS && msg_has("row 7"));
    CHECK(lsae_model_encode(m, x, rows, L + 1, a2, i2) == LSAE_INVALID_ARGS);
    i1[5] = (int32_t)L;
    CHECK(lsae_model_decode(m, a1, i1, rows, k, x) == LSAE_INVALID_ARGS && msg_has("outside"));
    lsae_model_free(m);
    free(x); free(a1); free(a2); free(i1); free(i2);
}

/* train n steps from seed on fixed data; return the final weights */
static float *train_run(size_t threads, int steps)
{
    const size_t d = 24, rows = 64;
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_step_stats st;
    float *x = (float *)malloc(rows * d * 4), *w;
    size_t i;
    int s;
    c.num_latents = 96; c.k = 4; c.seed = 5; c.num_threads = (int)threads;
    c.lr = 1e-2; c.lr_warmup_steps = 2; c.total_steps = (uint64_t)steps;
    c.multi_topk = 1; c.dead_feature_threshold = 64; c.grad_acc_steps = 2;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_trainer_create(m, &c, &t));
    tu_seed(99);
    for (s = 0; s < 2 * steps; ++s) {
        for (i = 0; i < rows * d; ++i) x[i] = (float)tu_normal() + (float)(i % d) * 0.1f;
        OK(lsae_trainer_step(t, x, rows, &st));
    }
    CHECK(st.stepped && st.step == (uint64_t)steps);
    w = (float *)malloc((96 * d * 2 + 96 + d) * 4);
    OK(lsae_model_get_weights(m, w, w + 96 * d, w + 96 * d + 96, w + 96 * d * 2 + 96));
    lsae_trainer_free(t);
    lsae_model_free(m);
    free(x);
    return w;
}

static void test_determinism(void)
{
    const size_t n = (96 * 24 * 2 + 96 + 24) * 4;
    float *a = train_run(1, 6), *b = train_run(1, 6), *c = train_run(2, 6), *e = train_run(3, 6);
    CHECK(memcmp(a, b, n) == 0);   /* same seed, data, threads */
    CHECK(memcmp(a, c, n) == 0);   /* and the thread count does not matter either */
    CHECK(memcmp(a, e, n) == 0);
    free(a); free(b); free(c); free(e);
}

/* F5's column-blocked decode (lsae__decode_block_cols picks it for large
   L at high reuse) and B3's row blocks (lsae__bgrad_rows_for, for large
   batches at high reuse): too large a shape for a unit test, so the blocks
   are forced here, and must give the bits of a row at a time and of one
   block: every element keeps its chain of multiply-adds, every latent's
   entries their order. d 40 with blocks of 16 and 32 columns leaves short
   last blocks; 48 rows in blocks of 7 and 16 rows cut the latents' runs of
   four entries (the top-k latents that a bias of 0 favours have about 14
   entries of the 4k class a batch); multi_topk decodes the 4k tail after
   the top k, AuxK and zero activations (a negative bias shift) are on; 1
   and 3 threads. The trained weights after 6 optimizer steps must be
   equal. */
static void test_decode_blocks(void)
{
    const size_t d = 40, L = 160, rows = 48, n = L * d * 2 + L + d;
    static const size_t cols[] = { 0, 16, 32, 1, 0, 0, 0 }, brows[] = { 0, 0, 0, 0, 7, 16, 1 };
    float *x = (float *)malloc(rows * d * 4), *ref = (float *)malloc(n * 4), *w = (float *)malloc(n * 4);
    double norms[6], ref_norms[6]; /* the gradient norms B3-B4's row norms add up to (the clip is idle here) */
    size_t ci, i;
    int threads, s;
    /* the choice, for L2 sizes of 256 KiB to 32 MiB and unknown (0) */
    CHECK(lsae__decode_block_cols(L, d, rows, 16, 1) == d);                         /* this shape: a row at a time */
    CHECK(lsae__decode_block_cols_for(3072, 384, 1024, 128, 2, (size_t)2 << 20) == 80); /* MiniLM x8, 2 MiB: 80 columns */
    CHECK(lsae__decode_block_cols_for(3072, 384, 1024, 128, 2, 0) == 80);           /* unknown: as 2 MiB */
    CHECK(lsae__decode_block_cols_for(1536, 384, 1024, 128, 2, (size_t)2 << 20) == 160);
    CHECK(lsae__decode_block_cols_for(3072, 384, 1024, 128, 2, (size_t)512 << 10) == 384); /* 16 columns: too few */
    CHECK(lsae__decode_block_cols_for(1536, 384, 1024, 128, 2, (size_t)32 << 20) == 384);  /* W_dec fits: rows */
    CHECK(lsae__decode_block_cols_for(24576, 768, 512, 64, 2, (size_t)2 << 20) == 768);    /* nomic: too little reuse */
    CHECK(lsae__decode_block_cols_for(3072, 384, 16, 128, 2, (size_t)2 << 20) == 384);     /* a few rows a thread */
    /* B3's row blocks: a quarter of the L2 of rows where a latent has 8
       entries or more a block on average */
    CHECK(lsae__bgrad_rows_for(384, 1024, 3072, 1024 * 128, (size_t)2 << 20) == 341);      /* MiniLM x8, top k */
    CHECK(lsae__bgrad_rows_for(384, 1024, 1536, 1024 * 192, (size_t)2 << 20) == 341);      /* MiniLM x4, AuxK */
    CHECK(lsae__bgrad_rows_for(384, 1024, 3072, 1024 * 128, 0) == 1024);                   /* unknown L2: as 1 MiB, 6 a block */
    CHECK(lsae__bgrad_rows_for(384, 1024, 1536, 1024 * 192, (size_t)512 << 10) == 85);     /* 512 KiB */
    CHECK(lsae__bgrad_rows_for(768, 512, 24576, 512 * 64, (size_t)2 << 20) == 512);        /* nomic: 1 entry a latent */
    CHECK(lsae__bgrad_rows_for(384, 256, 3072, 256 * 128, (size_t)2 << 20) == 256);        /* the batch fits */
    CHECK(lsae__bgrad_rows_for(1 << 20, 4096, 64, 4096 * 64, (size_t)2 << 20) == 32);      /* wide rows: 32 at least */
    for (threads = 1; threads <= 3; threads += 2)
        for (ci = 0; ci < sizeof cols / sizeof cols[0]; ++ci) {
            lsae_config c = lsae_config_default(d);
            lsae_model *m = NULL;
            lsae_trainer *t = NULL;
            lsae_step_stats st;
            float *b_enc = (float *)malloc(L * 4);
            c.num_latents = L; c.k = 4; c.seed = 11; c.num_threads = threads;
            c.lr = 1e-2; c.lr_warmup_steps = 2; c.total_steps = 6;
            c.multi_topk = 1; c.dead_feature_threshold = 30; c.grad_acc_steps = 1;
            OK(lsae_model_create(&c, NULL, &m));
            for (i = 0; i < L; ++i) b_enc[i] = i % 3 ? -0.5f : 0.0f;
            OK(lsae_model_set_weights(m, NULL, b_enc, NULL, NULL));
            OK(lsae_trainer_create(m, &c, &t));
            t->decode_cols = cols[ci];
            t->bgrad_rows = brows[ci];
            tu_seed(7);
            for (s = 0; s < 6; ++s) {
                for (i = 0; i < rows * d; ++i) x[i] = (float)tu_normal() + (float)(i % d) * 0.05f;
                OK(lsae_trainer_step(t, x, rows, &st));
                norms[s] = st.grad_norm;
            }
            OK(lsae_model_get_weights(m, w, w + L * d, w + L * d + L, w + 2 * L * d + L));
            if (threads == 1 && ci == 0) {
                memcpy(ref, w, n * 4);
                memcpy(ref_norms, norms, sizeof norms);
            } else {
                CHECKF(memcmp(ref_norms, norms, sizeof norms) == 0, "decode in blocks of %zu columns, B3 in blocks of %zu rows, %d threads: other gradient norms",
                       cols[ci], brows[ci], threads);
                CHECKF(memcmp(ref, w, n * 4) == 0, "decode in blocks of %zu columns, B3 in blocks of %zu rows, %d threads: other weights than unblocked",
                       cols[ci], brows[ci], threads);
            }
            lsae_trainer_free(t);
            lsae_model_free(m);
            free(b_enc);
        }
    free(x); free(ref); free(w);
}

static void test_trainer_batches(void)
{
    const size_t d = 8, L = 32;
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_step_stats st;
    float x[16 * 8], w0[32 * 8], w1[32 * 8], bd[8];
    size_t i;
    c.num_latents = L; c.k = 4; c.lr = 1e-3;
    OK(lsae_model_create(&c, NULL, &m));
    OK(lsae_trainer_create(m, &c, &t));
    OK(lsae_model_get_weights(m, w0, NULL, NULL, NULL));
    for (i = 0; i < 16 * 8; ++i) x[i] = (float)tu_normal();
    CHECK(lsae_trainer_step(t, x, 1, &st) == LSAE_BAD_BATCH && msg_has("at least 2"));
    for (i = 0; i < 16; ++i) memcpy(x + i * 8, x, 8 * 4); /* all rows equal: TV = 0 */
    CHECK(lsae_trainer_step(t, x, 16, &st) == LSAE_BAD_BATCH && msg_has("variance"));
    OK(lsae_model_get_weights(m, w1, NULL, NULL, bd));
    CHECK(memcmp(w0, w1, sizeof w0) == 0);            /* nothing changed */
    for (i = 0; i < 8; ++i) CHECK(bd[i] == 0);         /* not even b_dec's initialisation */
    CHECK(lsae_trainer_steps_done(t) == 0);
    for (i = 0; i < 16 * 8; ++i) x[i] = (float)tu_normal();
    x[3 * 8 + 1] = NAN; x[9 * 8] = INFINITY;
    OK(lsae_trainer_step(t, x, 16, &st));
    CHECK(st.rows_dropped == 2 && st.rows_used == 14 && st.stepped == 1);
    OK(lsae_model_get_weights(m, w1, NULL, NULL, NULL));
    for (i = 0; i < 32 * 8; ++i) CHECK(isfinite(w1[i]));
    /* an absurd learning rate: refused as non-finite, never silently NaN */
    lsae_trainer_free(t);
    c.lr = 1e30;
    OK(lsae_trainer_create(m, &c, &t));
    {
        lsae_result r = LSAE_OK;
        int s;
        for (s = 0; s < 20 && r == LSAE_OK; ++s) {
            for (i = 0; i < 16 * 8; ++i) x[i] = (float)tu_normal();
            r = lsae_trainer_step(t, x, 16, &st);
        }
        CHECK(r == LSAE_NOT_FINITE);
        CHECK(lsae_trainer_step(t, x, 16, &st) == LSAE_NOT_FINITE);
    }
    lsae_trainer_free(t);
    lsae_model_free(m);

    /* The gradient-norm stop, which the absurd learning rates above never
       reach (they stop on the loss or on the updated weights): a huge encoder
       and a tiny decoder give a finite reconstruction, hence a finite loss,
       but decoder gradients of about 1e20 whose squares overflow. The step
       must say so and leave every weight and Adam moment as it was. */
    {
        static float We[32 * 8], be[32], Wd[32 * 8], bd0[8], mv[2][2][32 * 8 * 2 + 32 + 8];
        static uint64_t since[2][32];
        lsae_trainer_state ts[2];
        int j;
        c = lsae_config_default(d);
        c.num_latents = L; c.k = 4; c.lr = 1e-3;
        c.normalize_decoder = 0; c.init_b_dec = 0;
        OK(lsae_model_create(&c, NULL, &m));
        for (i = 0; i < L * d; ++i) { We[i] = (float)(1e20 * tu_normal()); Wd[i] = (float)(1e-20 * tu_normal()); }
        for (i = 0; i < L; ++i) be[i] = 0;
        for (i = 0; i < d; ++i) bd0[i] = 0;
        OK(lsae_model_set_weights(m, We, be, Wd, bd0));
        OK(lsae_trainer_create(m, &c, &t));
        for (j = 0; j < 2; ++j) {
            /* the whole state, before the step (j = 0) and after it (j = 1) */
            float *p = mv[j][0], *q = mv[j][1];
            ts[j].since_fired = since[j];
            ts[j].m_W_enc = p; ts[j].m_b_enc = p + L * d; ts[j].m_W_dec = p + L * d + L; ts[j].m_b_dec = p + 2 * L * d + L;
            ts[j].v_W_enc = q; ts[j].v_b_enc = q + L * d; ts[j].v_W_dec = q + L * d + L; ts[j].v_b_dec = q + 2 * L * d + L;
            if (j == 1) {
                for (i = 0; i < 16 * 8; ++i) x[i] = (float)tu_normal();
                CHECK(lsae_trainer_step(t, x, 16, &st) == LSAE_NOT_FINITE);
                CHECKF(msg_has("gradient norm is inf at optimizer step 1;") && msg_has("weights left as they were"), "%s", lsae_last_error());
            }
            OK(lsae_trainer_get_state(t, &ts[j]));
        }
        CHECK(ts[1].step == ts[0].step && ts[1].b_dec_initialized == ts[0].b_dec_initialized);
        CHECK(memcmp(mv[0], mv[1], sizeof mv[0]) == 0);          /* no Adam moment moved */
        CHECK(memcmp(since[0], since[1], sizeof since[0]) == 0); /* nor a dead-latent counter */
        OK(lsae_model_get_weights(m, w1, NULL, NULL, NULL));
        CHECK(memcmp(w1, We, sizeof We) == 0);
        OK(lsae_model_get_weights(m, NULL, NULL, w1, bd));
        CHECK(memcmp(w1, Wd, sizeof Wd) == 0 && memcmp(bd, bd0, sizeof bd0) == 0);
        CHECK(lsae_trainer_step(t, x, 16, &st) == LSAE_NOT_FINITE && msg_has("stopped earlier"));
        lsae_trainer_free(t);
        lsae_model_free(m);
    }
}

static void test_files(void)
{
    const size_t d = 20, L = 70;
    lsae_model *m = make_model(d, L, 6, 4, 0), *m2 = NULL;
    float a[2][70 * 20 * 2 + 70 + 20];
    const lsae_config *c2;
    lsae_config c;
    const char *v2024 = "{\"expansion_factor\":32,\"normalize_decoder\":true,\"num_latents\":0,\"k\":64,\"signed\":false,\"d_in\":768}";
    const char *today = "{\"sae_type\": \"TOPK\", \"expansion_factor\": 32, \"normalize_decoder\": true, \"num_latents\": 0, \"k\": 64, \"multi_topk\": false, \"jumprelu_init_threshold\": 0.001, \"k_anneal\": false, \"lista_eta\": 0.1, \"decorr_alpha\": 0.0, \"d_in\": 384}";
    const char *sparsify = "{\"activation\": \"topk\", \"expansion_factor\": 32, \"normalize_decoder\": true, \"num_latents\": 131072, \"k\": 32, \"multi_topk\": false, \"skip_connection\": false, \"transcode\": false, \"d_in\": 4096}";
    OK(lsae_model_save(m, "build/test_model"));
    OK(lsae_model_load("build/test_model", NULL, &m2));
    OK(lsae_model_get_weights(m, a[0], a[0] + L * d, a[0] + L * d + L, a[0] + L * d * 2 + L));
    OK(lsae_model_get_weights(m2, a[1], a[1] + L * d, a[1] + L * d + L, a[1] + L * d * 2 + L));
    CHECK(memcmp(a[0], a[1], sizeof a[0]) == 0);
    c2 = lsae_model_config(m2);
    CHECK(c2->d_in == d && c2->num_latents == L && c2->k == 6 && c2->normalize_decoder == 1);
    lsae_model_free(m2);
    CHECK(lsae_model_load("build/no_such_model", NULL, &m2) == LSAE_NOT_FOUND && m2 == NULL && msg_has("cfg.json"));

    OK(lsae_config_from_json(v2024, strlen(v2024), &c));
    CHECK(c.d_in == 768 && lsae_config_num_latents(&c) == 768 * 32 && c.k == 64);
    OK(lsae_config_from_json(today, strlen(today), &c));
    CHECK(c.d_in == 384 && lsae_config_num_latents(&c) == 384 * 32 && c.k == 64);
    /* 131072 x 4096 floats, twice (encoder and decoder), are 2^32 bytes:
       they fit a 64-bit size_t, and a 32-bit target (wasm32) must refuse them */
    if (sizeof(size_t) >= 8) {
        OK(lsae_config_from_json(sparsify, strlen(sparsify), &c));
        CHECK(c.d_in == 4096 && lsae_config_num_latents(&c) == 131072 && c.k == 32);
    } else {
        CHECK(lsae_config_from_json(sparsify, strlen(sparsify), &c) == LSAE_INVALID_ARGS &&
              msg_has("131072 x d_in 4096 floats do not fit in memory addresses"));
    }
    {
        static const char *refused[] = {
            "{\"d_in\":8,\"k\":2,\"signed\":true}", "{\"d_in\":8,\"k\":2,\"sae_type\":\"gated\"}",
            "{\"d_in\":8,\"k\":2,\"sae_type\":\"jumprelu\"}", "{\"d_in\":8,\"k\":2,\"activation\":\"groupmax\"}",
            "{\"d_in\":8,\"k\":2,\"skip_connection\":true}", "{\"d_in\":8,\"k\":2,\"transcode\":true}" };
        static const char *bad[] = { "{\"k\":2}", "{\"d_in\":-8}", "{\"d_in\":8,\"k\":2", "[1,2]", "{\"d_in\":8,\"k\":\"two\"}", "{\"d_in\":8,\"k\":100000}" };
        size_t i;
        for (i = 0; i < 6; ++i) CHECKF(lsae_config_from_json(refused[i], strlen(refused[i]), &c) == LSAE_UNSUPPORTED, "%s accepted", refused[i]);
        for (i = 0; i < 6; ++i) CHECKF(lsae_config_from_json(bad[i], strlen(bad[i]), &c) != LSAE_OK, "%s accepted", bad[i]);
    }
    /* half floats */
    NEAR(lsae__f16_to_f32(0x3C00), 1.0, 0);
    NEAR(lsae__f16_to_f32(0xC000), -2.0, 0);
    NEAR(lsae__f16_to_f32(0x7BFF), 65504.0, 0);
    NEAR(lsae__f16_to_f32(0x0001), 5.960464477539063e-08, 0);
    NEAR(lsae__f16_to_f32(0x03FF), 6.097555160522461e-05, 0);
    CHECK(isinf(lsae__f16_to_f32(0x7C00)) && isnan(lsae__f16_to_f32(0x7E00)));
    NEAR(lsae__bf16_to_f32(0x3F80), 1.0, 0);
    NEAR(lsae__bf16_to_f32(0xC0A0), -5.0, 0);
    lsae_model_free(m);
}

/* corrupt safetensors files: every one refused with a message, none crashes */
static void write_bytes(const char *path, const char *hdr, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    unsigned long long n = strlen(hdr);
    unsigned char len8[8];
    int i;
    for (i = 0; i < 8; ++i) len8[i] = (unsigned char)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(hdr, 1, strlen(hdr), f);
    for (i = 0; i < (int)data_len; ++i) fputc(0, f);
    fclose(f);
}

static void test_bad_safetensors(void)
{
    struct { const char *hdr; size_t data; const char *msg; } cases[] = {
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "JSON" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "past the end" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "need" },
        { "{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16, "padded" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", 8, "overflows" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "data_offsets" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}", 8, "twice" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "lacks" },
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        lsae__st st;
        FILE *f = NULL;
        lsae_result r;
        write_bytes("build/bad.safetensors", cases[i].hdr, cases[i].data);
        r = lsae__st_open("build/bad.safetensors", NULL, &f, &st);
        CHECKF(r == LSAE_BAD_FILE && msg_has(cases[i].msg) && msg_has("build/bad.safetensors"), "case %zu: %s -> %s", i, cases[i].hdr, lsae_last_error());
        if (r == LSAE_OK) { fclose(f); lsae__st_free(&st); }
    }
    {
        /* a header length of 2^62 is refused before any allocation */
        FILE *f = fopen("build/bad.safetensors", "wb");
        lsae__st st;
        FILE *g = NULL;
        unsigned char len8[8] = { 0, 0, 0, 0, 0, 0, 0, 0x40 };
        fwrite(len8, 1, 8, f);
        fputs("{}", f);
        fclose(f);
        CHECK(lsae__st_open("build/bad.safetensors", NULL, &g, &st) == LSAE_BAD_FILE && msg_has("header claims"));
    }
}

int main(void)
{
    tu_seed(1);
    test_topk();
    test_compact();
    test_sample32();
    test_cut_above();
    test_keep_best();
    test_sort_best();
    test_fused_kernels();
    test_window_grads();
    test_select_split();
    test_grad_rows();
    test_gemm();
    test_gemm_groups();
    test_config();
    test_init();
    test_encode();
    test_encode_threads();
    test_determinism();
    test_decode_blocks();
    test_trainer_batches();
    test_files();
    test_bad_safetensors();
    return TEST_SUMMARY("test_core");
}
