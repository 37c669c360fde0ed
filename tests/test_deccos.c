/* Decoder cosines (tools/lsae/deccos.c, docs/eval.md section 4): each row's
   largest cosine to another row, computed from a cheap product (the
   library's int8 product with AVX-512 VNNI or AVX2, fp32 elsewhere) and an
   error bound, must equal a brute force over all pairs in double bit for
   bit, on rows built to defeat the bound: many partners within the bound
   of the maximum, exact duplicates, outlier coordinates that make the int8
   quantisation coarse, zero rows, sizes that are not multiples of the
   tile, the row block or 4. */
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

int main(void)
{
    const size_t Ls[] = {2, 3, 7, 64, 65, 517}, ds[] = {1, 5, 37, 96, 131};
    size_t i, j, l, L, d, li, di;
    float *U, nanout = 0;
    tu_seed(11);
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
