/* Decoder cosines (tools/lsae/deccos.c, docs/eval.md section 4): each row's
   largest cosine to another row, computed from a cheap product (the
   library's int8 product with AVX-512 VNNI or AVX2, fp32 elsewhere) and an
   error bound, must equal a brute force over all pairs in double bit for
   bit, on rows built to defeat the bound: many partners within the bound
   of the maximum, exact duplicates, outlier coordinates that make the int8
   quantisation coarse, zero rows, sizes that are not multiples of the
   tile, the row block or 4. And the pieces, each against an independent
   reference: this build's int8 kernel (dc_tile: on AVX2 without VNNI the
   7-bit one of deccos.c) against the integer product, its row
   quantisation (dc_row) against its contract in long double, and the
   bound |A - V| <= e that the pass and lsae eval's neighbour search rely
   on, pair by pair. */
#include "test_util.h"
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <string.h>
#include "../tools/lsae/deccos.c"

/* the definition, written out again: V(a, b) = the double dot product of
   the float rows with element j in partial sum j mod 8, the sums added as
   ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)); the max over b != a */
static void brute(const float *U, size_t L, size_t d, float *out)
{
    size_t a, b, j;
    for (a = 0; a < L; ++a) {
        double best = -INFINITY;
        for (b = 0; b < L; ++b) {
            double s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, v;
            if (b == a) continue;
            for (j = 0; j < d; ++j) s[j % 8] += (double)U[a * d + j] * (double)U[b * d + j];
            v = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
            if (v > best) best = v;
        }
        out[a] = L > 1 ? (float)best : NAN;
    }
}

static void unit(float *U, size_t L, size_t d)
{
    size_t i, j;
    for (i = 0; i < L; ++i) {
        double s = 0;
        for (j = 0; j < d; ++j) s += (double)U[i * d + j] * U[i * d + j];
        s = s > 0 ? 1.0 / sqrt(s) : 0.0;
        for (j = 0; j < d; ++j) U[i * d + j] = (float)(U[i * d + j] * s);
    }
}

/* compare with the brute force, with 1 and 3 threads; returns the number
   of pairs computed exactly */
static uint64_t check_case(const char *what, const float *U, size_t L, size_t d)
{
    float *want = (float *)malloc((L ? L : 1) * sizeof(float)), *got = (float *)malloc((L ? L : 1) * sizeof(float));
    dc_stats st;
    size_t l, bad = 0;
    int th;
    uint64_t exact = 0;
    brute(U, L, d, want);
    for (th = 1; th <= 3; th += 2) {
        memset(got, 0, (L ? L : 1) * sizeof(float));
        CHECKF(dc_max_cos(U, L, d, got, th, &st), "%s: dc_max_cos failed", what);
        for (l = 0, bad = 0; l < L; ++l)
            if (memcmp(&got[l], &want[l], sizeof(float)) != 0 && !(got[l] != got[l] && want[l] != want[l])) {
                if (!bad) fprintf(stderr, "%s, %d threads: latent %zu: %.9g, brute force %.9g\n", what, th, l, got[l], want[l]);
                ++bad;
            }
        CHECKF(bad == 0, "%s, %d threads: %zu of %zu maxima differ from the brute force", what, th, bad, L);
        if (th == 1) exact = st.exact;
    }
    printf("  %-44s L %4zu d %4zu: %6.1f pairs computed exactly per latent\n", what, L, d, L ? (double)exact / (double)L : 0.0);
    free(want);
    free(got);
    return exact;
}

#if defined(DC_INT8)
/* dc_tile (this build's: the 7-bit kernel of an AVX2 build without VNNI,
   else the library's lsae__lp_tile) against the integer product written
   out: for row bytes q_a + DC_UOFF and columns q_b in lsae__lp_build's
   layout, |q| <= DC_QMAX, acc - DC_ROFF sum_p q_b equals sum_p q_a q_b
   exactly, for mr = 1..6 rows, odd and even numbers of four-byte steps,
   random values and the extremes (every product DC_QMAX^2 of one sign: an
   int16 sum that saturated or wrapped, or a lost sign, would show); rows
   past mr are not written */
static void tile_exact(void)
{
    static const size_t dps[] = { 4, 8, 12, 16, 100, 388, 768 };
    size_t di, mode, mr, r, j, p, bad = 0;
    for (di = 0; di < sizeof dps / sizeof dps[0]; ++di)
        for (mode = 0; mode < 5; ++mode) {
            const size_t dp = dps[di], ldx = dp + 4 * (mode % 3);
            const int Q = DC_QMAX;
            int8_t *Wt = (int8_t *)malloc(dp * LSAE__NT), *wq = (int8_t *)malloc(dp * LSAE__NT);
            uint8_t *xu = (uint8_t *)malloc(LSAE__LPMR * ldx);
            int *xq = (int *)malloc(LSAE__LPMR * ldx * sizeof(int));
            int32_t acc[(LSAE__LPMR + 1) * LSAE__NT];
            /* mode 0 random; 1 all +-Q (signs random); 2 rows and weights
               +Q (the largest positive sums); 3 rows -Q, weights +Q; 4
               rows +Q, weights -Q (the largest negative) */
            for (j = 0; j < LSAE__NT; ++j)
                for (p = 0; p < dp; ++p) {
                    const int w = mode == 0 ? (int)(tu_next() % (2 * (unsigned)Q + 1)) - Q : mode == 1 ? (tu_next() & 1 ? Q : -Q) : mode == 4 ? -Q : Q;
                    wq[j * dp + p] = (int8_t)w;
                    Wt[(p / 4) * LSAE__NT * 4 + j * 4 + p % 4] = (int8_t)w;
                }
            for (r = 0; r < LSAE__LPMR; ++r)
                for (p = 0; p < ldx; ++p) {
                    const int x = mode == 0 ? (int)(tu_next() % (2 * (unsigned)Q + 1)) - Q : mode == 1 ? (tu_next() & 1 ? Q : -Q) : mode == 3 ? -Q : Q;
                    xq[r * ldx + p] = x;
                    xu[r * ldx + p] = (uint8_t)(x + DC_UOFF);
                }
            for (mr = 1; mr <= LSAE__LPMR; ++mr) {
                for (j = 0; j < (LSAE__LPMR + 1) * LSAE__NT; ++j) acc[j] = 12345;
                dc_tile(acc, xu, ldx, mr, Wt, dp);
                for (r = 0; r < LSAE__LPMR + 1; ++r)
                    for (j = 0; j < LSAE__NT; ++j) {
                        long long want = 0, ws = 0;
                        if (r >= mr) { bad += acc[r * LSAE__NT + j] != 12345; continue; }
                        for (p = 0; p < dp; ++p) {
                            want += (long long)xq[r * ldx + p] * wq[j * dp + p];
                            ws += wq[j * dp + p];
                        }
                        if ((long long)acc[r * LSAE__NT + j] - DC_ROFF * ws != want) {
                            if (!bad) fprintf(stderr, "dc_tile: dp %zu mode %zu mr %zu row %zu latent %zu: %lld, want %lld\n", dp, mode, mr, r, j,
                                              (long long)acc[r * LSAE__NT + j] - DC_ROFF * ws, want);
                            ++bad;
                        }
                    }
            }
            free(Wt); free(wq); free(xu); free(xq);
        }
    CHECKF(bad == 0, "dc_tile: %zu sums differ from the integer product", bad);
}

/* dc_row (this build's: dc_row7 or lsae__lp_row) against its contract, in
   long double: every byte is q + DC_UOFF with |q| <= DC_QMAX and the
   padding q = 0, nothing written past dp; xn >= ||x|| and xrn >= ||x - sx
   q|| for the q it wrote, and neither more than 1e-5 relative (plus 1e-40)
   above (a bound that held by being huge would pass every other check and
   make every pair a candidate). On lengths around the vector widths, and
   rows of ordinary, subnormal (1 / sx overflows), near-subnormal, huge and
   zero values, and rows on the rounding ties x / sx = n + 1/2. */
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
                if (scales[si] < 0) /* ties: DC_QMAX at 0, the rest k + 1/2 of sx = 1 */
                    x[p] = p == 0 ? (float)DC_QMAX : (float)((int)(tu_next() % (2 * DC_QMAX - 1)) - (DC_QMAX - 1)) + 0.5f;
                else
                    x[p] = (float)(scales[si] * tu_normal());
            }
            memset(u, 0xAB, dp + 16);
            dc_row(x, d, dp, u, &sx, &xn, &xrn);
            for (p = 0; p < dp; ++p) {
                const int q = (int)u[p] - DC_UOFF;
                if (q < -DC_QMAX || q > DC_QMAX || (p >= d && q != 0)) ++bad;
                if (p < d) {
                    const long double rv = (long double)x[p] - (long double)sx * q;
                    n2 += (long double)x[p] * x[p];
                    r2 += rv * rv;
                }
            }
            for (p = dp; p < dp + 16; ++p) bad += u[p] != 0xAB;
            if (!(sx >= 0.0f) || !((long double)xn >= sqrtl(n2)) || !((long double)xrn >= sqrtl(r2)) ||
                (long double)xn > sqrtl(n2) * (1 + 1e-5L) + 1e-40L || (long double)xrn > sqrtl(r2) * (1 + 1e-5L) + 1e-40L) {
                if (!bad) fprintf(stderr, "dc_row: d %zu scale %g: sx %g xn %.9g (||x|| %.9Lg) xrn %.9g (||r|| %.9Lg)\n", d, scales[si], sx, xn,
                                  sqrtl(n2), xrn, sqrtl(r2));
                ++bad;
            }
            ++rows;
            free(x); free(u);
        }
    CHECKF(bad == 0, "dc_row: %zu of %zu rows break its bounds or byte ranges", bad, rows);
}

/* The bound end to end, as the pass and the neighbour search use it: for
   unit rows U, the row side (dc_rows_i8), the column side (dc_cols, from
   the rows' quantisation and on its own: the two must agree), dc_tile and
   dc_approx_i8 give A(a, b) with |A - V| <= X_a cw_b + Z_a qn_b +
   DC_SLACK, V the dot product in long double; on random rows (d 768, and
   an odd number of four-byte steps) and rows whose scale an outlier sets */
static void bound_holds(void)
{
    static const size_t ds[] = { 768, 100, 37 };
    size_t di, mode, a, b, j, bad = 0, mism = 0, pairs = 0;
    for (di = 0; di < sizeof ds / sizeof ds[0]; ++di)
        for (mode = 0; mode < 2; ++mode) {
            const size_t d = ds[di], dp = (d + 3) / 4 * 4, n = 131, ntiles = (n + LSAE__NT - 1) / LSAE__NT;
            float *U = (float *)malloc(n * d * sizeof(float)), *sc = (float *)malloc(n * sizeof(float));
            float *X = (float *)malloc(n * sizeof(float)), *Z = (float *)malloc(n * sizeof(float));
            uint8_t *Au = (uint8_t *)malloc(n * dp);
            lsae__lp q, q2;
            int32_t Ci[LSAE__LPMR * LSAE__NT];
            float C[LSAE__LPMR * LSAE__NT];
            for (j = 0; j < n * d; ++j) U[j] = (float)tu_normal();
            if (mode == 1)
                for (a = 0; a < n; ++a) U[a * d + a % d] = 40.0f;
            unit(U, n, d);
            dc_rows_i8(U, n, d, dp, Au, sc, X, Z, 2);
            CHECK(dc_cols(&q, U, n, d, Au, sc, X, Z, 2) == LSAE_OK);
            CHECK(dc_cols(&q2, U, n, d, NULL, NULL, NULL, NULL, 1) == LSAE_OK);
            for (j = 0; j < ntiles * LSAE__NT; ++j)
                mism += q.wsum[j] != q2.wsum[j] || q.sw[j] != q2.sw[j] || q.cw[j] != q2.cw[j] || q.qn[j] != q2.qn[j];
            mism += memcmp(q.wq, q2.wq, ntiles * LSAE__NT * dp) != 0;
            for (a = 0; a < n; a += LSAE__LPMR) {
                const size_t mr = n - a < LSAE__LPMR ? n - a : LSAE__LPMR;
                size_t t, r;
                for (t = 0; t < ntiles; ++t) {
                    dc_tile(Ci, Au + a * dp, dp, mr, q.wq + t * (dp / 4) * LSAE__NT * 4, dp);
                    dc_approx_i8(C, Ci, mr, sc + a, q.sw + t * LSAE__NT, q.wsum + t * LSAE__NT);
                    for (r = 0; r < mr; ++r)
                        for (j = 0; j < LSAE__NT && t * LSAE__NT + j < n; ++j) {
                            const size_t ra = a + r;
                            long double V = 0, err, e;
                            b = t * LSAE__NT + j;
                            {
                                size_t p;
                                for (p = 0; p < d; ++p) V += (long double)U[ra * d + p] * U[b * d + p];
                            }
                            e = (long double)X[ra] * q.cw[b] + (long double)Z[ra] * q.qn[b] + DC_SLACK;
                            err = fabsl((long double)C[r * LSAE__NT + j] - V);
                            if (!(err <= e)) {
                                if (!bad) fprintf(stderr, "bound: d %zu mode %zu pair (%zu, %zu): |A - V| = %.9Lg > e = %.9Lg\n", d, mode, ra, b, err, e);
                                ++bad;
                            }
                            ++pairs;
                        }
                }
            }
            lsae__lp_free(NULL, &q);
            lsae__lp_free(NULL, &q2);
            free(U); free(sc); free(X); free(Z); free(Au);
        }
    CHECKF(mism == 0, "dc_cols: the columns from the rows' quantisation and on their own differ (%zu)", mism);
    CHECKF(bad == 0, "the int8 bound fails for %zu of %zu pairs", bad, pairs);
}
#endif

int main(void)
{
    const size_t Ls[] = {2, 3, 7, 64, 65, 517}, ds[] = {1, 5, 37, 96, 131};
    size_t i, j, l, L, d, li, di;
    float *U, nanout = 0;
    tu_seed(11);
#if defined(DC_INT8)
    tile_exact();
    row_bounds();
    bound_holds();
#endif
    /* random rows over sizes that cut tiles, row blocks and 4-byte groups */
    for (li = 0; li < sizeof Ls / sizeof Ls[0]; ++li)
        for (di = 0; di < sizeof ds / sizeof ds[0]; ++di) {
            char what[64];
            L = Ls[li];
            d = ds[di];
            U = (float *)malloc(L * d * sizeof(float));
            for (i = 0; i < L * d; ++i) U[i] = (float)tu_normal();
            unit(U, L, d);
            snprintf(what, sizeof what, "random rows");
            check_case(what, U, L, d);
            free(U);
        }

    /* one latent: no partner, NaN */
    U = (float *)calloc(8, sizeof(float));
    U[0] = 1;
    CHECK(dc_max_cos(U, 1, 8, &nanout, 2, NULL) && nanout != nanout);
    free(U);

    /* a cluster: 300 rows a hair apart (1e-5), every partner far inside
       the bound of the maximum; exact duplicates among them, and 40 other
       random rows */
    L = 340;
    d = 192;
    U = (float *)malloc(L * d * sizeof(float));
    {
        float *base = (float *)malloc(d * sizeof(float));
        uint64_t ex;
        for (j = 0; j < d; ++j) base[j] = (float)tu_normal();
        for (l = 0; l < 300; ++l)
            for (j = 0; j < d; ++j) U[l * d + j] = base[j] + (float)(1e-5 * tu_normal());
        for (l = 0; l < 10; ++l) memcpy(U + (100 + l) * d, U + l * d, d * sizeof(float));
        for (l = 300; l < L; ++l)
            for (j = 0; j < d; ++j) U[l * d + j] = (float)tu_normal();
        unit(U, L, d);
        ex = check_case("cluster of near-duplicates", U, L, d);
        CHECKF(ex >= 300 * 299 / 2, "the cluster should make most pairs candidates, got %llu", (unsigned long long)ex);
        free(base);
    }
    free(U);

    /* outliers: one large coordinate per row, the rest small, so the int8
       scale is set by the outlier and the rest quantise to 0 or +-1 (a
       large residual, a loose bound); rows sharing the outlier's coordinate
       have cosines near 1 that differ in the small coordinates only */
    L = 400;
    d = 256;
    U = (float *)malloc(L * d * sizeof(float));
    for (l = 0; l < L; ++l) {
        for (j = 0; j < d; ++j) U[l * d + j] = (float)(0.004 * tu_normal());
        U[l * d + l % 5] = 1.0f;
    }
    unit(U, L, d);
    check_case("outlier coordinates", U, L, d);
    free(U);

    /* residuals aligned to defeat the int8 bound: a on the int8 grid
       (r_a = 0), b = s (p_b + 0.49 sign(a)) so that q_b = p_b and r_b =
       0.49 s sign(a) points along a, and V(a, b) exceeds its approximation
       by 0.49 s_a s_b sum |p_a|, close to the Cauchy-Schwarz bound
       |s_a q_a| |r_b|. c is on the grid with V(a, c) between: above
       b's approximation by 0.35 s_a s_b sum |p_a|, so a bound at half
       the true one would rule b out and give V(a, c) as a's maximum (the
       other rows are far below; rows of norm about 1 keep the 1e-6 slack
       out of it).
       Powers of two for the scales keep every value exact. */
    L = 3 + 61;
    d = 64;
    U = (float *)malloc(L * d * sizeof(float));
    {
        const double sa = 1.0 / 1024, sb = 1.0 / 512;
        int pa[64], pb[64], sum = 0, acc = 0;
        for (j = 0; j < d; ++j) {
            pa[j] = (int)(60 + tu_next() % 61) * (tu_next() & 1 ? 1 : -1);
            pb[j] = pa[j] / 2 + (int)(tu_next() % 41) - 20; /* |pb| <= 80: well correlated with a */
        }
        pa[0] = pb[0] = 127; /* the largest: s = 127 s / 127 exactly */
        for (j = 1; j < d; ++j) sum += abs(pa[j]);
        for (j = 0; j < d; ++j) {
            int dc = 0;
            if (j > 0 && acc + abs(pa[j]) <= (int)(0.35 * (sum + 127))) { dc = pa[j] > 0 ? 1 : -1; acc += abs(pa[j]); }
            U[0 * d + j] = (float)(sa * pa[j]);
            U[1 * d + j] = (float)(sb * (pb[j] + (j ? (pa[j] > 0 ? 0.49 : -0.49) : 0.0)));
            U[2 * d + j] = (float)(sb * (pb[j] + dc));
        }
        for (l = 3; l < L; ++l)
            for (j = 0; j < d; ++j) U[l * d + j] = (float)(0.01 * tu_normal()); /* far below */
        {
            float mc[3];
            double vb = 0, vc = 0;
            for (j = 0; j < d; ++j) {
                vb += (double)U[j] * U[d + j];
                vc += (double)U[j] * U[2 * d + j];
            }
            CHECKF(vb > vc, "the construction: V(a, b) %.9g > V(a, c) %.9g", vb, vc);
            brute(U, 3, d, mc);
            CHECKF(mc[0] == (float)vb, "the construction: b is a's partner");
        }
        check_case("residuals aligned with the partner", U, L, d);
    }
    free(U);

    /* zero rows (cosine 0 with every row) among rows all at negative or
       zero cosine to each other: the maximum of some rows is the 0 of a
       zero row, of a zero row the 0 of anything */
    L = 130;
    d = 64;
    U = (float *)calloc(L * d, sizeof(float));
    for (l = 0; l < L; ++l) {
        if (l % 3 == 0) continue; /* zero */
        U[l * d + (l / 2) % d] = l % 2 ? 1.0f : -1.0f;
    }
    check_case("zero rows, orthogonal and opposite rows", U, L, d);
    free(U);

    /* rows all equal: every cosine 1 (or within a rounding of it) */
    L = 70;
    d = 33;
    U = (float *)malloc(L * d * sizeof(float));
    for (j = 0; j < d; ++j) U[j] = (float)tu_normal();
    for (l = 1; l < L; ++l) memcpy(U + l * d, U, d * sizeof(float));
    unit(U, L, d);
    check_case("all rows equal", U, L, d);
    free(U);

    return TEST_SUMMARY("test_deccos");
}
