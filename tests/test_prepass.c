/* The int8 pre-pass of the CPU encode (docs/math.md, 2.12) against the
   float32 pass: the same indices and values, bit for bit, for
   lsae_model_encode and lsae_model_encode_sparse, on the bundled MiniLM
   embeddings with a trained model, on random data, and on data built
   against it: rows and latents whose pre-activations sit within the int8
   bound of the k-th (the rows then recompute many latents or go to the
   float32 pass), exact ties, rows with fewer than k positive values, a
   zero row. The float32 pass is the reference (the ISA digest test and
   test_core check it against a float64 product). Also: the candidate
   counts show the pre-pass ran (a test that always fell back would pass
   blind), and a stale int8 copy is not used after the weights change.
   First, the int8 tile kernel of this build (AVX-512 VNNI, AVX2, portable)
   against the integer product written out. */
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include "test_util.h"
#include <string.h>

/* IEEE half to float (the .npy shards are float16) */
static float half_to_float(unsigned h)
{
    unsigned s = (h >> 15) & 1u, e = (h >> 10) & 31u, f = h & 1023u;
    float v;
    if (e == 0) v = ldexpf((float)f, -24);
    else if (e == 31) v = f ? NAN : INFINITY;
    else v = ldexpf((float)(f | 1024u), (int)e - 25);
    return s ? -v : v;
}

/* rows [n, 384] from examples/data/embeddings/data-00000.npy, or NULL */
static float *load_minilm(size_t n)
{
    FILE *f = fopen("examples/data/embeddings/data-00000.npy", "rb");
    unsigned char hdr[10];
    size_t hl, i;
    float *x;
    unsigned char *raw;
    if (!f) return NULL;
    if (fread(hdr, 1, 10, f) != 10) { fclose(f); return NULL; }
    hl = (size_t)hdr[8] | (size_t)hdr[9] << 8;
    fseek(f, (long)(10 + hl), SEEK_SET);
    x = (float *)malloc(n * 384 * sizeof(float));
    raw = (unsigned char *)malloc(n * 384 * 2);
    if (!x || !raw || fread(raw, 2, n * 384, f) != n * 384) { fclose(f); free(x); free(raw); return NULL; }
    fclose(f);
    for (i = 0; i < n * 384; ++i) x[i] = half_to_float((unsigned)raw[2 * i] | (unsigned)raw[2 * i + 1] << 8);
    free(raw);
    return x;
}

/* encode and encode_sparse with the pre-pass on and off: bit-identical */
static void compare(lsae_model *m, const float *x, size_t rows, size_t k, const char *what)
{
    float *a0 = (float *)malloc(rows * k * sizeof(float)), *a1 = (float *)malloc(rows * k * sizeof(float));
    int32_t *i0 = (int32_t *)malloc(rows * k * sizeof(int32_t)), *i1 = (int32_t *)malloc(rows * k * sizeof(int32_t));
    size_t *c0 = (size_t *)malloc(rows * sizeof(size_t)), *c1 = (size_t *)malloc(rows * sizeof(size_t)), r, bad = 0;
    OK(lsae_model_set_encode_prepass(m, 0));
    OK(lsae_model_encode(m, x, rows, k, a0, i0));
    OK(lsae_model_set_encode_prepass(m, 2));
    OK(lsae_model_encode(m, x, rows, k, a1, i1));
    for (r = 0; r < rows; ++r)
        if (memcmp(a0 + r * k, a1 + r * k, k * sizeof(float)) || memcmp(i0 + r * k, i1 + r * k, k * sizeof(int32_t))) {
            if (!bad) fprintf(stderr, "%s: row %zu differs (first: idx %d %d, value %.9g %.9g)\n", what, r, (int)i0[r * k], (int)i1[r * k], a0[r * k], a1[r * k]);
            ++bad;
        }
    CHECKF(bad == 0, "%s: %zu of %zu rows differ from the float32 encode", what, bad, rows);
    /* the default (the pre-pass where it is faster, in VNNI and AVX2 builds) */
    OK(lsae_model_set_encode_prepass(m, 1));
    OK(lsae_model_encode(m, x, rows, k, a1, i1));
    CHECKF(!memcmp(a0, a1, rows * k * sizeof(float)) && !memcmp(i0, i1, rows * k * sizeof(int32_t)), "%s: the default encode differs from the float32 one", what);
    /* a call of a few rows (the pre-pass by default in every build) */
    OK(lsae_model_encode(m, x, 5, k, a1, i1));
    CHECKF(!memcmp(a0, a1, 5 * k * sizeof(float)) && !memcmp(i0, i1, 5 * k * sizeof(int32_t)), "%s: a default encode of 5 rows differs from the float32 one", what);
    OK(lsae_model_set_encode_prepass(m, 2));
    if (k == lsae_model_encode_k(m)) {
        bad = 0;
        OK(lsae_model_set_encode_prepass(m, 0));
        OK(lsae_model_encode_sparse(m, x, rows, k, a0, i0, c0, NULL));
        OK(lsae_model_set_encode_prepass(m, 2));
        OK(lsae_model_encode_sparse(m, x, rows, k, a1, i1, c1, NULL));
        for (r = 0; r < rows; ++r)
            if (c0[r] != c1[r] || memcmp(a0 + r * k, a1 + r * k, c0[r] * sizeof(float)) || memcmp(i0 + r * k, i1 + r * k, c0[r] * sizeof(int32_t))) ++bad;
        CHECKF(bad == 0, "%s: encode_sparse: %zu of %zu rows differ", what, bad, rows);
    }
    free(a0); free(a1); free(i0); free(i1); free(c0); free(c1);
}

/* the pre-pass called directly: per-row candidate counts (mean, max, rows
   that fell back to the float32 pass), and the result against lsae__select */
static void candidates(lsae_model *m, const float *x, size_t rows, size_t k, const char *what, double *mean, size_t *over)
{
    lsae__lp q;
    lsae__select_ws ws;
    float *xc = (float *)malloc(rows * m->d * sizeof(float));
    lsae__kv *t0 = (lsae__kv *)malloc(rows * k * sizeof(lsae__kv)), *t1 = (lsae__kv *)malloc(rows * k * sizeof(lsae__kv));
    size_t *cnt = (size_t *)malloc(rows * sizeof(size_t)), r, mx = 0;
    double s = 0;
    lsae__center(xc, x, m->b_dec, rows, m->d, 1);
    OK(lsae__lp_build(NULL, &q, m->W_enc, m->L, m->d, 2));
    OK(lsae__lp_select(m, &q, xc, rows, k, t1, 2, cnt));
    OK(lsae__select_ws_init(NULL, &ws, rows, k, 0, m->d, 2));
    lsae__select(m, xc, rows, k, t0, NULL, 0, NULL, &ws);
    CHECKF(memcmp(t0, t1, rows * k * sizeof(lsae__kv)) == 0, "%s: lsae__lp_select differs from lsae__select", what);
    *over = 0;
    for (r = 0; r < rows; ++r) {
        s += (double)cnt[r];
        if (cnt[r] > mx) mx = cnt[r];
        if (cnt[r] == m->L) ++*over;
    }
    *mean = s / (double)rows;
    printf("  %-34s d %zu L %zu k %zu: candidates per row mean %.1f, max %zu, %zu of %zu rows to float32\n", what, m->d, m->L, k, *mean, mx, *over, rows);
    lsae__select_ws_free(NULL, &ws);
    lsae__lp_free(NULL, &q);
    free(xc); free(t0); free(t1); free(cnt);
}

/* The inputs of a tile test: rows x rows of ldx bytes (xq and the kernels'
   xq + 128) and 64 latents of dp weights (wq row by row, Wt in the int8
   copy's [dp/4][64][4] layout). mode 0 random; 1 rows +-127 and weights
   +-LSAE__LPQW (signs random); 2 rows and weights at their largest (the
   largest positive pairs); 3 rows -127, weights at their largest (the
   largest negative). */
static void tile_inputs(size_t mode, size_t dp, size_t ldx, size_t rows, int8_t *Wt, int8_t *wq, int8_t *xq, uint8_t *xu)
{
    size_t j, p, r;
    for (j = 0; j < LSAE__NT; ++j)
        for (p = 0; p < dp; ++p) {
            const int w = mode == 0 ? (int)(tu_next() % (2 * LSAE__LPQW + 1)) - LSAE__LPQW : mode == 1 ? (tu_next() & 1 ? LSAE__LPQW : -LSAE__LPQW) : LSAE__LPQW;
            wq[j * dp + p] = (int8_t)w;
            Wt[(p / 4) * LSAE__NT * 4 + j * 4 + p % 4] = (int8_t)w;
        }
    for (r = 0; r < rows; ++r)
        for (p = 0; p < ldx; ++p) {
            const int x = mode == 0 ? (int)(tu_next() % 255) - 127 : mode == 1 ? (tu_next() & 1 ? 127 : -127) : mode == 2 ? 127 : -127;
            xq[r * ldx + p] = (int8_t)x;
            xu[r * ldx + p] = (uint8_t)(x + 128);
        }
}

/* acc [nrows][64] from a tile kernel that wrote its first `written` rows:
   those must be the integer product (less LSAE__LPOFF sum_p wq), the rest
   still 12345. Returns the entries that are not; the first is printed
   (with what, dp, mode, extra) when none was before (*bad 0). */
static size_t tile_check(const int32_t *acc, size_t nrows, size_t written, const int8_t *xq, const int8_t *wq, size_t dp, size_t ldx, size_t bad,
                         const char *what, size_t mode, size_t extra)
{
    size_t r, j, p, n = 0;
    for (r = 0; r < nrows; ++r)
        for (j = 0; j < LSAE__NT; ++j) {
            long long want = 0, ws = 0;
            if (r >= written) { n += acc[r * LSAE__NT + j] != 12345; continue; }
            for (p = 0; p < dp; ++p) {
                want += (long long)xq[r * ldx + p] * wq[j * dp + p];
                ws += wq[j * dp + p];
            }
            if ((long long)acc[r * LSAE__NT + j] - LSAE__LPOFF * ws != want) {
                if (!bad && !n)
                    fprintf(stderr, "%s: dp %zu mode %zu (%zu) row %zu latent %zu: %lld, want %lld\n", what, dp, mode, extra, r, j,
                            (long long)acc[r * LSAE__NT + j] - LSAE__LPOFF * ws, want);
                ++n;
            }
        }
    return n;
}

/* lsae__lp_tile against the integer product written out, for every
   kernel this build has (VNNI, AVX-VNNI, AVX2's vpmaddubsw, portable): acc
   less LSAE__LPOFF sum_p wq equals sum_p xq wq exactly, for mr = 1..6 rows,
   on random bytes and on the extremes, rows of +-127 and weights of
   +-LSAE__LPQW, the largest this build's int8 copy holds (every product of
   one sign at its largest: an int16 pair sum that saturated or a lost sign
   would show), and rows past mr are not written */
static void tile_exact(void)
{
    static const size_t dps[] = { 4, 8, 12, 100, 388, 768 };
    size_t di, mode, mr, j, bad = 0;
    for (di = 0; di < sizeof dps / sizeof dps[0]; ++di)
        for (mode = 0; mode < 4; ++mode) {
            const size_t dp = dps[di], ldx = dp + 4 * mode;
            int8_t *Wt = (int8_t *)malloc(dp * LSAE__NT), *wq = (int8_t *)malloc(dp * LSAE__NT);
            uint8_t *xu = (uint8_t *)malloc(LSAE__LPMR * ldx);
            int8_t *xq = (int8_t *)malloc(LSAE__LPMR * ldx);
            int32_t acc[(LSAE__LPMR + 1) * LSAE__NT];
            tile_inputs(mode, dp, ldx, LSAE__LPMR, Wt, wq, xq, xu);
            for (mr = 1; mr <= LSAE__LPMR; ++mr) {
                for (j = 0; j < (LSAE__LPMR + 1) * LSAE__NT; ++j) acc[j] = 12345;
                lsae__lp_tile(acc, xu, ldx, mr, Wt, dp);
                bad += tile_check(acc, LSAE__LPMR + 1, mr, xq, wq, dp, ldx, bad, "lsae__lp_tile (mr)", mode, mr);
            }
            free(Wt); free(wq); free(xu); free(xq);
        }
    CHECKF(bad == 0, "lsae__lp_tile: %zu sums differ from the integer product", bad);
}

/* lsae__lp_row (this build's form: AVX-512, AVX2 8 at a time with a
   scalar tail, or the scalar loop) against its contract, in long double:
   every byte is xq + 128 with |xq| <= 127 and the padding 128; xn >= ||x||
   and xrn >= ||x - sx xq||, the residual of the bytes it wrote (any
   integers are allowed; the bounds must hold for those it chose). On
   lengths around the vector widths (tails of 1 to 15, padding of 1 to 3),
   and on rows of ordinary, tiny (subnormal largest |x|: 1 / sx overflows),
   near-subnormal (subnormal residuals), huge and zero values, and rows
   whose entries sit on the rounding ties x / sx = n + 1/2. */
static void row_bounds(void)
{
    static const size_t ds[] = { 1, 3, 4, 7, 8, 9, 15, 16, 17, 23, 31, 33, 96, 100, 130, 383, 384, 768, 769 };
    static const double scales[] = { 1.0, 1e-42, 1e-36, 1e-30, 1e30, 0.0, -1.0 };
    size_t di, si, p, bad = 0, rows = 0;
    for (di = 0; di < sizeof ds / sizeof ds[0]; ++di)
        for (si = 0; si < sizeof scales / sizeof scales[0]; ++si) {
            const size_t d = ds[di], dp = (d + 3) / 4 * 4;
            float *x = (float *)malloc(d * sizeof(float)), sx = -1.0f, xn = -1.0f, xrn = -1.0f;
            uint8_t *u = (uint8_t *)malloc(dp + 16);
            long double n2 = 0, r2 = 0;
            for (p = 0; p < d; ++p) {
                if (scales[si] < 0) /* ties: 127 at 0, the rest k + 1/2 of sx = 1 */
                    x[p] = p == 0 ? 127.0f : (float)((int)(tu_next() % 253) - 126) + 0.5f;
                else
                    x[p] = (float)(scales[si] * tu_normal());
            }
            memset(u, 0xAB, dp + 16);
            lsae__lp_row(x, d, dp, u, &sx, &xn, &xrn);
            for (p = 0; p < dp; ++p) {
                const int q = (int)u[p] - 128;
                if (q < -127 || (p >= d && q != 0)) ++bad;
                if (p < d) {
                    const long double rv = (long double)x[p] - (long double)sx * q;
                    n2 += (long double)x[p] * x[p];
                    r2 += rv * rv;
                }
            }
            for (p = dp; p < dp + 16; ++p) bad += u[p] != 0xAB; /* nothing written past dp */
            if (!(sx >= 0.0f) || !((long double)xn >= sqrtl(n2)) || !((long double)xrn >= sqrtl(r2))) {
                if (!bad) fprintf(stderr, "lsae__lp_row: d %zu scale %g: sx %g xn %.9g (||x|| %.9Lg) xrn %.9g (||r|| %.9Lg)\n", d, scales[si], sx, xn,
                                  sqrtl(n2), xrn, sqrtl(r2));
                ++bad;
            }
            ++rows;
            free(x); free(u);
        }
    CHECKF(bad == 0, "lsae__lp_row: %zu of %zu rows break its bounds or byte ranges", bad, rows);
}

/* lsae__lp_build's weight side (this build's form: AVX-512 16 at a time,
   AVX2 8 at a time with a scalar tail, or the scalar loop) against its
   contract, in long double: every wq in [-LSAE__LPQW, LSAE__LPQW] (63 in
   AVX2 builds without VNNI: a larger one would saturate that kernel's
   pair sums), the padding past d and the latents past L zero, wsum the sum
   of the row's wq, cw >= ||w - sw wq|| and qn >= ||sw wq||. Rows of
   ordinary, tiny (subnormal largest |w|: 1 / sw overflows and the scalar
   loop's clamps decide), huge and zero values, rows on the rounding ties,
   at lengths around the vector widths. */
static void copy_bounds(void)
{
    static const size_t ds[] = { 1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 100, 383, 768 };
    static const double scales[] = { 1.0, 1e-42, 1e-36, 1e30, 0.0, -1.0 };
    const size_t L = 2 * sizeof scales / sizeof scales[0];
    size_t di, l, p, bad = 0, rows = 0;
    for (di = 0; di < sizeof ds / sizeof ds[0]; ++di) {
        const size_t d = ds[di];
        float *W = (float *)malloc(L * d * sizeof(float));
        lsae__lp q;
        for (l = 0; l < L; ++l) {
            const double sc = scales[l % (L / 2)];
            for (p = 0; p < d; ++p)
                W[l * d + p] = sc < 0 ? (p == 0 ? (float)LSAE__LPQW : (float)((int)(tu_next() % (2 * LSAE__LPQW - 1)) - (LSAE__LPQW - 1)) + 0.5f)
                                      : (float)(sc * tu_normal());
        }
        OK(lsae__lp_build(NULL, &q, W, L, d, 2));
        for (l = 0; l < q.ntiles * LSAE__NT; ++l) {
            long double r2 = 0, s2 = 0;
            long long sum = 0;
            size_t row_bad = 0;
            for (p = 0; p < q.dp; ++p) {
                const int v = q.wq[(l / LSAE__NT) * (q.dp / 4) * LSAE__NT * 4 + (p / 4) * LSAE__NT * 4 + (l % LSAE__NT) * 4 + p % 4];
                if (v < -LSAE__LPQW || v > LSAE__LPQW || ((p >= d || l >= L) && v != 0)) ++row_bad;
                sum += v;
                if (p < d && l < L) {
                    const long double sv = (long double)q.sw[l] * v, rv = (long double)W[l * d + p] - sv;
                    r2 += rv * rv;
                    s2 += sv * sv;
                }
            }
            if (sum != q.wsum[l] || !((long double)q.cw[l] >= sqrtl(r2)) || !((long double)q.qn[l] >= sqrtl(s2))) ++row_bad;
            if (row_bad && !bad)
                fprintf(stderr, "lsae__lp_build: d %zu latent %zu (scale %g): %zu bad (wsum %d of %lld, cw %.9g for %.9Lg, qn %.9g for %.9Lg)\n", d, l,
                        l < L ? scales[l % (L / 2)] : 0.0, row_bad, (int)q.wsum[l], sum, q.cw[l], sqrtl(r2), q.qn[l], sqrtl(s2));
            bad += row_bad != 0;
            ++rows;
        }
        lsae__lp_free(NULL, &q);
        free(W);
    }
    CHECKF(bad == 0, "lsae__lp_build: %zu of %zu latents break the copy's ranges or bounds", bad, rows);
}

#if defined(LSAE__AMX)
/* lsae__lp_tile_amx (the AMX tiles: 16 rows a product, the depth in 64-byte
   steps and a shorter last step) against the integer product written out,
   on the depths of tile_exact: 4, 8, 12 (only the short step), 100 and 388
   (full steps and a short one), 64, 384 and 768 (full steps only); at
   the last three lsae__lp_tile_amx32 too (32 rows a product); the rows
   past a kernel's are not written */
static void tile_exact_amx(void)
{
    /* dp multiples of 64 take the 32-row kernel too */
    static const size_t dps[] = { 4, 8, 12, 64, 100, 384, 388, 768 };
    size_t di, mode, j, bad = 0, kern, ran32 = 0;
    lsae__amxcfg cfg;
    if (!lsae__amx_ready()) {
        printf("test_prepass: AMX built in but refused by the kernel; its kernel not tested here\n");
        return;
    }
    for (di = 0; di < sizeof dps / sizeof dps[0]; ++di)
        for (kern = 0; kern < 2; ++kern)
            for (mode = 0; mode < 4; ++mode) {
                const size_t dp = dps[di], ldx = dp + 4 * mode, rows = kern ? 32 : 16;
                int8_t *Wt, *wq, *xq;
                uint8_t *xu;
                int32_t acc[LSAE__AMXMR * LSAE__NT];
                if (kern && lsae__amx_rows(dp) != 32) continue;
                Wt = (int8_t *)malloc(dp * LSAE__NT);
                wq = (int8_t *)malloc(dp * LSAE__NT);
                xu = (uint8_t *)malloc(rows * ldx);
                xq = (int8_t *)malloc(rows * ldx);
                tile_inputs(mode, dp, ldx, rows, Wt, wq, xq, xu);
                for (j = 0; j < LSAE__AMXMR * LSAE__NT; ++j) acc[j] = 12345;
                lsae__amx_config(&cfg, dp);
                _tile_loadconfig(&cfg);
                if (kern) {
                    lsae__lp_tile_amx32(acc, xu, ldx, Wt, dp);
                    ++ran32;
                } else
                    lsae__lp_tile_amx(acc, xu, ldx, Wt, dp);
                _tile_release();
                /* rows past the kernel's are not written */
                bad += tile_check(acc, LSAE__AMXMR, rows, xq, wq, dp, ldx, bad, kern ? "lsae__lp_tile_amx32 (rows)" : "lsae__lp_tile_amx (rows)", mode, rows);
                free(Wt); free(wq); free(xu); free(xq);
            }
    CHECKF(bad == 0, "lsae__lp_tile_amx: %zu sums differ from the integer product", bad);
    CHECKF(ran32 == 12, "lsae__lp_tile_amx32 ran %zu times, want 12", ran32);
}
#endif

static lsae_model *make(size_t d, size_t L, size_t k)
{
    lsae_config c = lsae_config_default(d);
    lsae_model *m = NULL;
    c.num_latents = L;
    c.k = k;
    c.seed = 7;
    OK(lsae_model_create(&c, NULL, &m));
    return m;
}

/* 1,024 latents, k, 8 steps with 2 of warm-up, of the given type */
static lsae_config train_cfg(size_t d, size_t k, lsae_sae_type type)
{
    lsae_config c = lsae_config_default(d);
    c.num_latents = 1024;
    c.k = k;
    c.total_steps = 8;
    c.lr_warmup_steps = 2;
    c.sae_type = type;
    return c;
}

/* Train a model steps batches with the pre-pass off (0) and forced on (2):
   the weights, the Adam state's result and every step's loss must be the
   same bits. pin (may be NULL): rows-since-fired set on both trainers
   before every optimizer window, so that the same latents are dead in
   every window. Returns the batches the pre-pass selected (run 2). */
static size_t train_both_r(const lsae_config *c0, const float *x, size_t rows, size_t batch, size_t steps, const char *what, size_t *refilled_out,
                           const uint64_t *pin)
{
    lsae_model *m[2] = { NULL, NULL };
    lsae_trainer *t[2] = { NULL, NULL };
    float *w[2] = { NULL, NULL };
    size_t used = 0, i, v, n, refilled = 0, refill_bad = 0;
    int same_loss = 1;
    n = 0;
    for (v = 0; v < 2; ++v) {
        OK(lsae_model_create(c0, NULL, &m[v]));
        OK(lsae_model_set_encode_prepass(m[v], v ? 2 : 0));
        OK(lsae_trainer_create(m[v], c0, &t[v]));
    }
    for (i = 0; i < steps; ++i) {
        lsae_step_stats st[2];
        const float *xb = x + ((i * batch) % (rows - batch + 1)) * c0->d_in;
        if (pin && i % (c0->grad_acc_steps ? c0->grad_acc_steps : 1) == 0)
            for (v = 0; v < 2; ++v) {
                lsae_trainer_state ts;
                memset(&ts, 0, sizeof ts);
                OK(lsae_trainer_get_state(t[v], &ts));
                ts.since_fired = (uint64_t *)(uintptr_t)pin;
                OK(lsae_trainer_set_state(t[v], &ts));
            }
        for (v = 0; v < 2; ++v) OK(lsae_trainer_step(t[v], xb, batch, &st[v]));
        if (memcmp(&st[0].loss, &st[1].loss, sizeof st[0].loss) || memcmp(&st[0].fvu, &st[1].fvu, sizeof st[0].fvu)) same_loss = 0;
        /* after an optimizer step the trainer's int8 copy counts as current
           only where Adam refilled it row by row: it must be the copy a
           fresh build of the new W_enc gives, byte for byte */
        if (st[1].stepped && t[1]->lpq.wq && t[1]->lpq_gen == m[1]->wgen) {
            lsae__lp q;
            const size_t nl = t[1]->lpq.ntiles * LSAE__NT;
            OK(lsae__lp_build(NULL, &q, m[1]->W_enc, m[1]->L, m[1]->d, 2));
            if (memcmp(q.wq, t[1]->lpq.wq, nl * q.dp) || memcmp(q.wsum, t[1]->lpq.wsum, nl * sizeof(int32_t)) || memcmp(q.sw, t[1]->lpq.sw, nl * sizeof(float)) ||
                memcmp(q.cw, t[1]->lpq.cw, nl * sizeof(float)) || memcmp(q.qn, t[1]->lpq.qn, nl * sizeof(float)))
                ++refill_bad;
            ++refilled;
            lsae__lp_free(NULL, &q);
        }
    }
    CHECKF(same_loss, "%s: a step's loss or fvu differs with the pre-pass", what);
    CHECKF(refill_bad == 0, "%s: %zu of %zu int8 copies refilled by the optimizer step differ from a fresh build", what, refill_bad, refilled);
    if (refilled_out) *refilled_out = refilled;
    n = m[0]->L * m[0]->d;
    for (v = 0; v < 2; ++v) {
        w[v] = (float *)malloc((2 * n + m[0]->L + m[0]->d) * sizeof(float));
        OK(lsae_model_get_weights(m[v], w[v], w[v] + n, w[v] + n + m[0]->L, w[v] + 2 * n + m[0]->L));
    }
    CHECKF(!memcmp(w[0], w[1], (2 * n + m[0]->L + m[0]->d) * sizeof(float)), "%s: the trained weights differ with the pre-pass", what);
    CHECKF(t[0]->prepass_batches == 0, "%s: the pre-pass ran with it off", what);
    used = t[1]->prepass_batches;
    printf("  training: %-40s %zu of %zu batches through the pre-pass\n", what, used, steps);
    for (v = 0; v < 2; ++v) {
        lsae_trainer_free(t[v]);
        lsae_model_free(m[v]);
        free(w[v]);
    }
    return used;
}

static size_t train_both(const lsae_config *c0, const float *x, size_t rows, size_t batch, size_t steps, const char *what)
{
    return train_both_r(c0, x, rows, batch, steps, what, NULL, NULL);
}

int main(void)
{
    double mean;
    size_t over, i, j;
    tu_seed(3);
    tile_exact();
    row_bounds();
    copy_bounds();
#if defined(LSAE__AMX)
    tile_exact_amx();
#endif
    /* 1. the bundled MiniLM embeddings, a model trained on them a little */
    {
        const size_t n = 4096, d = 384;
        float *x = load_minilm(n);
        lsae_config c = lsae_config_default(d);
        lsae_model *m = NULL;
        lsae_trainer *t = NULL;
        lsae_step_stats st;
        CHECKF(x != NULL, "examples/data/embeddings/data-00000.npy not readable (run from the repository root)");
        if (x) {
            c.expansion_factor = 8;
            c.k = 32;
            c.total_steps = 16;
            c.lr_warmup_steps = 2;
            OK(lsae_model_create(&c, NULL, &m));
            OK(lsae_trainer_create(m, &c, &t));
            for (i = 0; i < 16; ++i) OK(lsae_trainer_step(t, x + (i % 16) * 256 * d, 256, &st));
            lsae_trainer_free(t);
            compare(m, x, 1024, 32, "MiniLM, trained x8 k32");
            compare(m, x, 300, 8, "MiniLM, trained x8, top 8");
            candidates(m, x, 1024, 32, "MiniLM embeddings, trained x8", &mean, &over);
            CHECKF(mean < 0.5 * (double)m->L && over < 1024, "the pre-pass did not run on the MiniLM rows (mean %.1f)", mean);
            /* a stale copy is not used: keep one, change W_enc, encode */
            {
                float *w = (float *)malloc(m->L * d * sizeof(float));
                OK(lsae_model_set_encode_prepass(m, 2));
                OK(lsae_model_get_weights(m, w, NULL, NULL, NULL));
                for (j = 0; j < m->L * d; ++j) w[j] = -w[j];
                OK(lsae_model_set_weights(m, w, NULL, NULL, NULL));
                CHECK(m->lp != NULL && m->lp_gen != m->wgen);
                compare(m, x, 200, 32, "MiniLM, after set_weights");
                free(w);
            }
            lsae_model_free(m);
            free(x);
        }
    }
    /* 2. random rows, freshly initialised models, a few shapes */
    {
        static const size_t shapes[][3] = { { 100, 3200, 32 }, { 384, 3072, 32 }, { 256, 2048, 8 }, { 130, 1000, 16 }, { 768, 4096, 64 }, { 768, 6144, 32 } };
        for (i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) {
            const size_t d = shapes[i][0], L = shapes[i][1], k = shapes[i][2], n = 120;
            lsae_model *m = make(d, L, k);
            float *x = (float *)malloc(n * d * sizeof(float));
            char what[64];
            tu_seed(i + 1);
            for (j = 0; j < n * d; ++j) x[j] = (float)tu_normal();
            sprintf(what, "random %zu x %zu k %zu", d, L, k);
            compare(m, x, n, k, what);
            candidates(m, x, n, k, what, &mean, &over);
            lsae_model_free(m);
            free(x);
        }
    }
    /* 3. built against the bound */
    {
        const size_t d = 256, L = 2048, k = 32, n = 96;
        lsae_model *m = make(d, L, k);
        float *W = (float *)malloc(L * d * sizeof(float)), *b = (float *)malloc(L * sizeof(float));
        float *x = (float *)malloc(n * d * sizeof(float)), *u = (float *)malloc(d * sizeof(float));
        tu_seed(99);
        for (j = 0; j < d; ++j) u[j] = (float)tu_normal();
        /* (a) every latent is u plus a perturbation well inside the int8
           error, and rows are near u: most pre-activations lie within eps
           of the k-th; (b) latents 0-255 copy latents 256-511 exactly (ties,
           broken by index); (c) a band of latents whose perturbation is at
           the size of the bound */
        for (i = 0; i < L; ++i)
            for (j = 0; j < d; ++j) {
                const double scale = i < 1024 ? 1e-4 : i < 1536 ? 3e-3 : 3e-2;
                W[i * d + j] = u[j] + (float)(scale * tu_normal());
            }
        for (i = 0; i < 256; ++i) memcpy(W + i * d, W + (256 + i) * d, d * sizeof(float));
        for (i = 0; i < L; ++i) b[i] = 0.0f;
        for (i = 0; i < n; ++i)
            for (j = 0; j < d; ++j) x[i * d + j] = u[j] * (i % 3 == 0 ? 1.0f : -0.01f) + (float)(0.05 * tu_normal());
        /* row 1: all zero (x = b_dec = 0) */
        memset(x + d, 0, d * sizeof(float));
        OK(lsae_model_set_weights(m, W, b, NULL, NULL));
        compare(m, x, n, k, "adversarial: near-equal latents, ties");
        candidates(m, x, n, k, "adversarial: near-equal latents", &mean, &over);
        CHECKF(over > 0 && over < n, "the adversarial rows should include some that go to float32 and some that do not (%zu of %zu)", over, n);
        /* fewer than k positive: a bias that leaves a handful above zero */
        for (i = 0; i < L; ++i) b[i] = i % 97 == 0 ? 0.0f : -50.0f;
        OK(lsae_model_set_weights(m, W, b, NULL, NULL));
        compare(m, x, n, k, "adversarial: fewer than k positive");
        candidates(m, x, n, k, "adversarial: fewer than k positive", &mean, &over);
        lsae_model_free(m);
        free(W); free(b); free(x); free(u);
    }
    /* 4. integer rows and weights with a 127 in each: the int8 copy is exact,
       eps is tiny beside the gaps between values (every candidate's hi is
       about its value: stopping the recomputation early or ordering it
       wrongly shows), and the float32 sums are exact integers, with many
       ties among them */
    {
      static const double noise[3] = { 0.0, 0.05, 0.3 };
      size_t v;
      for (v = 0; v < 3; ++v) {
        const size_t d = 64, L = 2048, k = 32, n = 128;
        lsae_model *m = make(d, L, k);
        char what[64];
        float *W = (float *)malloc(L * d * sizeof(float)), *b = (float *)calloc(L, sizeof(float)), *x = (float *)malloc(n * d * sizeof(float));
        tu_seed(4242);
        /* noise > 0: off the int8 grid, so eps is about as wide as the gaps */
        for (i = 0; i < L * d; ++i) W[i] = (float)((int)(tu_next() % 255) - 127) + (float)(noise[v] * tu_normal());
        for (i = 0; i < L; ++i) W[i * d + i % d] = 127.0f;
        for (i = 0; i < n * d; ++i) x[i] = (float)((int)(tu_next() % 17) - 8);
        for (i = 0; i < n; ++i) x[i * d + (i * 7) % d] = 127.0f;
        for (i = 0; i < L; ++i) b[i] = (float)((int)(tu_next() % 201) - 100);
        OK(lsae_model_set_weights(m, W, b, NULL, NULL));
        sprintf(what, "integer rows, weights + %.2g noise", noise[v]);
        compare(m, x, n, k, what);
        candidates(m, x, n, k, what, &mean, &over);
        lsae_model_free(m);
        free(W); free(b); free(x);
      }
    }
    /* 5. extreme magnitudes: latents whose largest weight is subnormal (the
       int8 scale 1/s overflows to inf), huge ones, exact zeros, and rows
       of the same kinds. Each entry's quantisation must stay defined (no
       float-to-int overflow: the sanitizer builds of this test trap it),
       and the encode stay the float32 one. */
    {
        const size_t d = 96, L = 2048, k = 16, n = 40;
        lsae_model *m = make(d, L, k);
        float *W = (float *)malloc(L * d * sizeof(float)), *b = (float *)calloc(L, sizeof(float)), *x = (float *)malloc(n * d * sizeof(float));
        tu_seed(555);
        for (i = 0; i < L; ++i) {
            /* one latent in 8 tiny (largest |w| 1e-42, subnormal), one huge
               (1e30), one all zero; the rest ordinary */
            const double scale = i % 8 == 1 ? 1e-42 : i % 8 == 2 ? 1e30 : i % 8 == 3 ? 0.0 : 1.0;
            for (j = 0; j < d; ++j) W[i * d + j] = (float)(scale * tu_normal());
        }
        for (i = 0; i < n; ++i) {
            const double scale = i % 4 == 1 ? 1e-41 : i % 4 == 2 ? 1e-30 : i % 4 == 3 ? 0.0 : 1.0;
            for (j = 0; j < d; ++j) x[i * d + j] = (float)(scale * tu_normal());
        }
        OK(lsae_model_set_weights(m, W, b, NULL, NULL));
        compare(m, x, n, k, "extreme magnitudes");
        candidates(m, x, n, k, "extreme magnitudes", &mean, &over);
        lsae_model_free(m);
        free(W); free(b); free(x);
    }
    /* 6. training: the step's selection through the pre-pass gives the same
       bits as the float32 pass, for each type that selects per row; steps
       with an AuxK pick take it from the gathered dead latents, or the
       float32 pass when most latents are dead */
    {
        /* small (the MiniLM rows' first 96 values, 1,024 latents, 64-row
           batches, 8 of them): this test also runs under the sanitizers,
           valgrind and qemu */
        const size_t n = 2048, d = 96, NB = 64, NS = 8;
        float *xf = load_minilm(n), *x = xf ? (float *)malloc(n * d * sizeof(float)) : NULL;
        if (x) {
            lsae_config c = train_cfg(d, 16, LSAE_SAE_TOPK);
            for (i = 0; i < n; ++i) memcpy(x + i * d, xf + i * 384, d * sizeof(float));
            free(xf);
            size_t used;
            size_t refilled;
            c.seed = 11;
            used = train_both_r(&c, x, n, NB, NS, "TopK 1024 latents k16, no dead", &refilled, NULL);
            CHECKF(used == NS, "TopK: %zu of %d batches went through the pre-pass", used, (int)NS);
            /* every step: the first batch's selection built the copy, and
               each optimizer step refills it */
            CHECKF(refilled == NS, "TopK: Adam refilled the int8 copy in %zu of %d steps", refilled, (int)NS);
            c.multi_topk = 1;
            used = train_both(&c, x, n, NB, NS, "Multi-TopK");
            CHECKF(used == NS, "Multi-TopK: %zu of %d batches went through the pre-pass", used, (int)NS);
            c.multi_topk = 0;
            /* dead after 4 batches without firing: AuxK steps from the 5th batch */
            c.dead_feature_threshold = 4 * NB;
            used = train_both(&c, x, n, NB, NS, "TopK, AuxK: dead latents after 4 batches");
            CHECKF(used == NS, "TopK with dead latents: %zu of %d batches through the pre-pass", used, (int)NS);
            /* most latents dead (AuxK from 2.5 batches on, few fire in one):
               those steps take the float32 pass */
            c.dead_feature_threshold = 5 * NB / 2;
            c.k = 2;
            used = train_both(&c, x, n, NB, NS, "TopK k2, most latents dead");
            CHECKF(used >= 1 && used < NS, "TopK with most latents dead: %zu of %d batches through the pre-pass (want some, not all)", used, (int)NS);
            c.k = 16;
            /* the same quarter of the latents dead in every window of two
               batches: the AuxK pick's gathered dead rows serve both
               batches of a window and must be gathered again after each
               optimizer step (W_enc moved, the dead set did not) */
            {
                uint64_t pin[1024];
                for (j = 0; j < 1024; ++j) pin[j] = j % 4 == 1 ? 1000000 : 0;
                c.grad_acc_steps = 2;
                c.total_steps = NS / 2;
                c.dead_feature_threshold = 4 * NB;
                used = train_both_r(&c, x, n, NB, NS, "TopK, AuxK, 25% dead pinned, accumulation 2", NULL, pin);
                CHECKF(used == NS || LSAE__LPDEAD > 4, "TopK, pinned dead: %zu of %d batches through the pre-pass", used, (int)NS);
            }
            c.auxk_alpha = 0.0;
            c.grad_acc_steps = 2;
            c.total_steps = NS / 2;
            used = train_both(&c, x, n, NB, NS, "TopK, AuxK off, accumulation 2");
            CHECKF(used == NS, "TopK, AuxK off: %zu of %d batches through the pre-pass", used, (int)NS);
            c = train_cfg(d, 16, LSAE_SAE_MATRYOSHKA);
            c.matryoshka_levels = 3;
            c.matryoshka_sizes[0] = 128; c.matryoshka_sizes[1] = 512; c.matryoshka_sizes[2] = 1024;
            used = train_both(&c, x, n, NB, NS, "Matryoshka nested");
            CHECKF(used == NS, "Matryoshka nested: %zu of %d batches through the pre-pass", used, (int)NS);
            c = train_cfg(d, 4, LSAE_SAE_BATCHTOPK);
            used = train_both(&c, x, n, NB, NS, "BatchTopK k4");
            CHECKF(used == NS, "BatchTopK: %zu of %d batches through the pre-pass", used, (int)NS);
            c.k_anneal = 1;
            used = train_both(&c, x, n, NB, NS, "BatchTopK k4, k annealed from 16");
            CHECKF(used == NS, "BatchTopK annealed: %zu of %d batches through the pre-pass", used, (int)NS);
            free(x);
        }
    }
    return TEST_SUMMARY("test_prepass");
}
