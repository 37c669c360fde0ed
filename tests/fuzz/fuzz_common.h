/* Shared by the libFuzzer harnesses in tests/fuzz (one parser each).

   Each harness defines LLVMFuzzerTestOneInput and includes this file, which
   brings in the whole library. Built two ways:
     clang -fsanitize=fuzzer,address,undefined   the fuzzer (make fuzz)
     cc ... tests/fuzz/replay_main.c             replays files, no clang needed
                                                 (make test-fuzz-replay)

   Every allocation the library makes goes through fz_malloc (LSAE_MALLOC),
   which aborts when one block is larger than FZ_ALLOC_BASE plus
   FZ_ALLOC_FACTOR times the input: a header that claims an absurd size
   must be refused before anything is allocated for it, so such an
   allocation is a finding, not an out-of-memory error to return.

   Files go to a private directory under /dev/shm (else $TMPDIR, else /tmp),
   removed at exit. */
#ifndef LSAE_FUZZ_COMMON_H
#define LSAE_FUZZ_COMMON_H

#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <dirent.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>

#ifndef FZ_ALLOC_BASE
#define FZ_ALLOC_BASE ((size_t)4 << 20)   /* fixed buffers: the dataset's 1 MiB conversion buffer, ... */
#endif
#ifndef FZ_ALLOC_FACTOR
#define FZ_ALLOC_FACTOR 64                /* JSON tokens, pickle values: a few dozen bytes per input byte, doubled */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FZ_UNUSED __attribute__((unused))
#else
#define FZ_UNUSED
#endif

static size_t fz_input_size = 0;

static void *fz_malloc(size_t n)
{
    size_t limit = FZ_ALLOC_BASE + FZ_ALLOC_FACTOR * fz_input_size;
    if (n > limit) {
        fprintf(stderr, "fuzz: the library asked for %zu bytes on a %zu-byte input (limit %zu): an absurd size was not refused first\n",
                n, fz_input_size, limit);
        abort();
    }
    return malloc(n);
}

#define LSAE_MALLOC(sz, ctx) ((void)(ctx), fz_malloc(sz))
#define LSAE_FREE(p, ctx) ((void)(ctx), free(p))
#define LATENTSAE_IMPLEMENTATION
#include "../../latentsae.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------------------ scratch files */

static char fz_dir[512];

/* remove a tree this harness made (no symlinks are ever made in it) */
FZ_UNUSED static void fz_rm_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0) return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        if (d) {
            while ((e = readdir(d)) != NULL) {
                char sub[1024];
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
                if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= (int)sizeof sub) continue;
                fz_rm_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

FZ_UNUSED static void fz_cleanup(void)
{
    if (fz_dir[0]) fz_rm_tree(fz_dir);
    fz_dir[0] = 0;
}

/* the private directory, made on first use */
FZ_UNUSED static const char *fz_tmpdir(void)
{
    const char *base;
    struct stat sb;
    if (fz_dir[0]) return fz_dir;
    base = getenv("LSAE_FUZZ_TMP");
    if (!base || !*base) base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
    if (!base) base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(fz_dir, sizeof fz_dir, "%s/lsae-fuzz-XXXXXX", base);
    if (!mkdtemp(fz_dir)) {
        fprintf(stderr, "fuzz: cannot make a scratch directory under %s: %s\n", base, strerror(errno));
        abort();
    }
    atexit(fz_cleanup);
    return fz_dir;
}

/* path of a scratch file */
FZ_UNUSED static const char *fz_path(char *buf, size_t cap, const char *name)
{
    if (snprintf(buf, cap, "%s/%s", fz_tmpdir(), name) >= (int)cap) abort();
    return buf;
}

FZ_UNUSED static void fz_write(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno)); abort(); }
    if (n && fwrite(p, 1, n, f) != n) { fprintf(stderr, "fuzz: short write to %s\n", path); abort(); }
    if (fclose(f) != 0) { fprintf(stderr, "fuzz: cannot close %s\n", path); abort(); }
}

/* A property the library promises does not hold: report like a crash. */
#define FZ_ASSERT(cond, ...) do { if (!(cond)) { fprintf(stderr, "fuzz: property failed: %s: ", #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } } while (0)

/* FZ_VERBOSE=1 in the environment: say what each main call gave (to see
   which seeds get where). */
FZ_UNUSED static void fz_result(const char *what, lsae_result r)
{
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("FZ_VERBOSE") != NULL;
    if (verbose) fprintf(stderr, "  %s: %s%s%s\n", what, lsae_result_string(r), r ? " | " : "", r ? lsae_last_error() : "");
}

/* Every failure must leave a message that says something. */
FZ_UNUSED static void fz_check_error(lsae_result r, const char *what)
{
    const char *m = lsae_last_error();
    FZ_ASSERT(r < 0 && r >= LSAE_CUDA_ERROR, "%s returned %d", what, (int)r);
    FZ_ASSERT(m && m[0] != 0, "%s failed (%s) with an empty message", what, lsae_result_string(r));
}

/* Read every row of an open dataset, a bounded slice at a time. Rows x
   width was checked against the file, so it is at most the file's bytes. */
FZ_UNUSED static void fz_read_all(lsae_dataset *ds)
{
    uint64_t rows = lsae_dataset_rows(ds), at = 0;
    size_t d = lsae_dataset_d_in(ds), per, i;
    float *buf;
    lsae_result r;
    FZ_ASSERT(d > 0, "an open dataset has width 0");
    FZ_ASSERT(rows <= (uint64_t)fz_input_size, "%llu rows from a %zu-byte input", (unsigned long long)rows, fz_input_size);
    FZ_ASSERT(rows == 0 || d <= fz_input_size, "width %zu from a %zu-byte input", d, fz_input_size);
    per = d > 4096 ? 1 : 4096 / d;
    /* an empty dataset may be wide (a 0-byte raw file of any width): no buffer for rows it does not have */
    buf = (float *)malloc(rows ? per * d * sizeof(float) : sizeof(float));
    if (!buf) abort();
    while (at < rows) {
        size_t n = rows - at < per ? (size_t)(rows - at) : per;
        r = lsae_dataset_read(ds, at, n, buf);
        if (r != LSAE_OK) { fz_check_error(r, "lsae_dataset_read"); break; }
        for (i = 0; i < n * d; ++i) { volatile float v = buf[i]; (void)v; }
        at += n;
    }
    /* past the end is refused */
    r = lsae_dataset_read(ds, rows, 1, buf);
    FZ_ASSERT(r == LSAE_INVALID_ARGS, "reading past the end gave %d", (int)r);
    free(buf);
}

/* Open path as an embeddings dataset with o: when it opens, its width is
   want_d (unless 0) and every row reads; when not, the error is clean and no
   dataset came back. The harnesses of the dataset formats call this once
   per option set they try. */
FZ_UNUSED static void fz_open_read_all(const char *path, const lsae_dataset_options *o, size_t want_d)
{
    lsae_dataset *ds = NULL;
    const lsae_result r = lsae_dataset_open(path, o, NULL, &ds);
    fz_result("lsae_dataset_open", r);
    if (r == LSAE_OK) {
        if (want_d) FZ_ASSERT(lsae_dataset_d_in(ds) == want_d, "width %zu asked, %zu given", want_d, lsae_dataset_d_in(ds));
        fz_read_all(ds);
        lsae_dataset_close(ds);
    } else {
        fz_check_error(r, "lsae_dataset_open");
        FZ_ASSERT(ds == NULL, "failed open returned a dataset");
    }
}

#endif
