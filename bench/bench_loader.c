/* bench_loader: how fast the loader serves shuffled batches from page-cached
   shards, against a plain sequential read() of the same bytes in the same
   run, and how much it stalls when the consumer is faster than the disk.

     make bench-loader            (or: cc -O2 -march=native bench/bench_loader.c -o build/bench_loader -lm)
     build/bench_loader [MiB] [d] [runs]      defaults: 512 MiB of float32 rows, d 768, 5 runs

   It writes MiB of float32 rows as 8 npy shards under build/bench_data/
   (once), reads them all so they sit in the page cache, then for each of
   `runs` rounds times
     seq        read() of every shard file in 4 MiB chunks (no parsing, no copy out)
     mmap+pf    lsae_loader: shuffled batches of 4096 rows, 64 MiB windows,
                memory-mapped shards, background prefetch
     stdio+pf   the same, shards read with fread instead of mmap
     mmap sync  the same without the prefetch thread
   and prints the median rows/s and GB/s (bytes of float32 rows delivered
   per second) and each mode's share of seq. Then two training-like runs
   with a fake step: one that takes no time (the consumer is faster than
   the data: the loader's stall time is the whole wait) and one of 20 ms per
   batch (prefetch hides the reading: stall ~ the first window only); with
   --cold the shards are first evicted from the page cache
   (posix_fadvise DONTNEED), so the data comes from the disk. */
#define _POSIX_C_SOURCE 200809L
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NSHARDS 8
#define DIR "build/bench_data"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void shard_path(char *buf, size_t cap, int i) { snprintf(buf, cap, DIR "/data-%05d.npy", i); }

static void make_shards(size_t rows_per, size_t d)
{
    char p[256], hdr[128];
    size_t r, c, hl;
    float *row = (float *)malloc(d * sizeof(float));
    int i;
    if (system("mkdir -p " DIR) != 0) exit(1);
    for (i = 0; i < NSHARDS; ++i) {
        FILE *f;
        unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0 };
        shard_path(p, sizeof p, i);
        f = fopen(p, "rb");
        if (f) {
            fseek(f, 0, SEEK_END);
            if ((size_t)ftell(f) > rows_per * d * 4) { fclose(f); continue; } /* already there */
            fclose(f);
        }
        snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }", rows_per, d);
        hl = strlen(hdr);
        while ((10 + hl + 1) % 64) hdr[hl++] = ' ';
        hdr[hl++] = '\n';
        pre[8] = (unsigned char)hl;
        pre[9] = (unsigned char)(hl >> 8);
        f = fopen(p, "wb");
        fwrite(pre, 1, 10, f);
        fwrite(hdr, 1, hl, f);
        for (r = 0; r < rows_per; ++r) {
            for (c = 0; c < d; ++c) row[c] = (float)((r * 31 + c * 7 + (size_t)i) % 1000) * 1e-3f;
            fwrite(row, sizeof(float), d, f);
        }
        fclose(f);
    }
    free(row);
}

/* read every shard with read(): the bytes a loader has to bring in */
static double seq_read(size_t *bytes)
{
    static char buf[4 << 20];
    char p[256];
    double t0 = now();
    int i;
    *bytes = 0;
    for (i = 0; i < NSHARDS; ++i) {
        int fd;
        ssize_t n;
        shard_path(p, sizeof p, i);
        fd = open(p, O_RDONLY);
        while ((n = read(fd, buf, sizeof buf)) > 0) *bytes += (size_t)n;
        close(fd);
    }
    return now() - t0;
}

static void evict(void)
{
    char p[256];
    int i;
    for (i = 0; i < NSHARDS; ++i) {
        int fd;
        shard_path(p, sizeof p, i);
        fd = open(p, O_RDONLY);
        if (fd >= 0) {
#ifdef POSIX_FADV_DONTNEED
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
#endif
            close(fd);
        }
    }
}

/* epochs over the data in shuffled batches; step_ms of fake work per batch.
   Returns the time of the batch loop (what a training run sees once it has
   started); *setup gets the time to open the dataset and create the loader. */
static double loader_pass(int no_mmap, int prefetch, double step_ms, uint64_t epochs, uint64_t *rows, double *stall, double *setup)
{
    lsae_dataset_options o = lsae_dataset_options_default();
    lsae_loader_options lo;
    lsae_dataset *ds = NULL;
    lsae_loader *ld = NULL;
    lsae_loader_stats st;
    const float *b;
    size_t n;
    double t0, t;
    volatile float sink = 0;
    o.no_mmap = no_mmap;
    if (lsae_dataset_open(DIR, &o, NULL, &ds) != LSAE_OK) { fprintf(stderr, "%s\n", lsae_last_error()); exit(1); }
    lo = lsae_loader_options_default(4096);
    lo.seed = 1;
    lo.prefetch = prefetch;
    lo.window_rows = ((size_t)64 << 20) / (lsae_dataset_d_in(ds) * 4);
    lo.epochs = epochs;
    t0 = now();
    if (lsae_loader_create(ds, &lo, &ld) != LSAE_OK) { fprintf(stderr, "%s\n", lsae_last_error()); exit(1); }
    *setup = now() - t0;
    t0 = now();
    *rows = 0;
    for (;;) {
        if (lsae_loader_next(ld, &b, &n) != LSAE_OK) { fprintf(stderr, "%s\n", lsae_last_error()); exit(1); }
        if (n == 0) break;
        sink += b[(n - 1) * lsae_dataset_d_in(ds)]; /* touch the batch */
        *rows += n;
        if (step_ms > 0) {
            double until = now() + step_ms * 1e-3;
            while (now() < until) {}
        }
    }
    t = now() - t0;
    lsae_loader_get_stats(ld, &st);
    *stall = st.stall_seconds;
    lsae_loader_free(ld);
    lsae_dataset_close(ds);
    (void)sink;
    return t;
}

int main(int argc, char **argv)
{
    size_t mib = 512, d = 768, rows_per, bytes = 0;
    int runs = 5, i, m, cold = 0;
    double tseq[32], tl[3][32], stall, setup, setups[32];
    uint64_t rows = 0;
    const char *names[3] = { "mmap+pf", "stdio+pf", "mmap sync" };
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--cold") == 0) cold = 1;
        else if (i == 1 || (i == 2 && cold)) mib = (size_t)atoi(argv[i]);
    }
    {
        int pos = 0;
        for (i = 1; i < argc; ++i) {
            if (argv[i][0] == '-') continue;
            if (pos == 0) mib = (size_t)atoi(argv[i]);
            else if (pos == 1) d = (size_t)atoi(argv[i]);
            else if (pos == 2) runs = atoi(argv[i]);
            ++pos;
        }
    }
    if (runs > 32) runs = 32;
    rows_per = (mib << 20) / NSHARDS / (d * 4);
    make_shards(rows_per, d);
    seq_read(&bytes); /* into the page cache */
    printf("%d shards of %zu rows x %zu float32 (%.0f MiB in all), batches of 4096, windows of 64 MiB, median of %d runs\n",
           NSHARDS, rows_per, d, (double)bytes / (1 << 20), runs);
    for (i = 0; i < runs; ++i) {
        tseq[i] = seq_read(&bytes);
        for (m = 0; m < 3; ++m) tl[m][i] = loader_pass(m == 1, m != 2, 0, 3, &rows, &stall, m == 0 ? &setups[i] : &setup);
    }
    {
        double s = median(tseq, runs);
        double row_bytes = (double)d * 4;
        printf("  %-10s %10.0f rows/s  %6.2f GB/s\n", "seq read", (double)bytes / row_bytes / s, (double)bytes / s / 1e9);
        bytes *= 3; /* the loader runs 3 epochs per timing */
        for (m = 0; m < 3; ++m) {
            double t = median(tl[m], runs);
            printf("  %-10s %10.0f rows/s  %6.2f GB/s  %5.1f%% of seq\n", names[m], (double)rows / t, (double)rows * row_bytes / t / 1e9,
                   100.0 * s * 3 / t * ((double)rows * row_bytes / (double)bytes));
        }
        printf("  (3 epochs per loader timing; opening the dataset and creating the loader, not timed above: median %.3f s)\n", median(setups, runs));
    }
    /* stall time: a consumer with nothing to do, and one with 20 ms steps */
    {
        double t;
        if (cold) evict();
        t = loader_pass(0, 1, 0, 1, &rows, &stall, &setup);
        printf("  %s, consumer faster than the data (0 ms steps): %.3f s, stall %.3f s (%.0f%%)\n", cold ? "cold" : "page-cached", t, stall, 100 * stall / t);
        if (cold) evict();
        t = loader_pass(0, 1, 20, 1, &rows, &stall, &setup);
        printf("  %s, 20 ms steps: %.3f s, stall %.3f s (%.1f%%; the first window is always waited for)\n", cold ? "cold" : "page-cached", t, stall, 100 * stall / t);
    }
    return 0;
}
