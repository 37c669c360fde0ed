/* Minimal test harness: CHECK records a failure and goes on; NEAR fails on
   NaN as well as on distance; main returns the failure count. */
#ifndef LSAE_TEST_UTIL_H
#define LSAE_TEST_UTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int tu_failures = 0;
static int tu_checks = 0;

#define CHECK(cond) do { ++tu_checks; if (!(cond)) { ++tu_failures; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECKF(cond, ...) do { ++tu_checks; if (!(cond)) { ++tu_failures; \
    fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define NEAR(a, b, tol) do { double tu_a = (double)(a), tu_b = (double)(b), tu_d = fabs(tu_a - tu_b); ++tu_checks; \
    if (!(tu_d <= (tol)) || tu_d != tu_d) { ++tu_failures; \
    fprintf(stderr, "%s:%d: NEAR failed: %s = %.9g, %s = %.9g, |diff| %.3g > %.3g\n", \
            __FILE__, __LINE__, #a, tu_a, #b, tu_b, tu_d, (double)(tol)); } } while (0)
#define OK(expr) do { lsae_result tu_r = (expr); ++tu_checks; if (tu_r != LSAE_OK) { ++tu_failures; \
    fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #expr, lsae_result_string(tu_r), lsae_last_error()); } } while (0)

#define TEST_SUMMARY(name) (printf("%s: %d checks, %d failed\n", (name), tu_checks, tu_failures), tu_failures ? 1 : 0)

/* xorshift64* for test data, independent of the library's generator */
static unsigned long long tu_rng_state = 88172645463325252ull;
static void tu_seed(unsigned long long s) { tu_rng_state = s * 2654435761ull + 88172645463325252ull; if (!tu_rng_state) tu_rng_state = 1; }
static unsigned long long tu_next(void)
{
    tu_rng_state ^= tu_rng_state >> 12;
    tu_rng_state ^= tu_rng_state << 25;
    tu_rng_state ^= tu_rng_state >> 27;
    return tu_rng_state * 2685821657736338717ull;
}
static double tu_uniform(void) { return (double)(tu_next() >> 11) * (1.0 / 9007199254740992.0); }
static double tu_normal(void)
{
    double u1 = tu_uniform(), u2 = tu_uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ||a - b|| / ||b||, with NaN propagated */
#if defined(__GNUC__)
__attribute__((unused))
#endif
static double tu_rel_err(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    size_t i;
    for (i = 0; i < n; ++i) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    if (den == 0) return sqrt(num);
    return sqrt(num / den);
}
#endif
