/* Feeds files to a harness's LLVMFuzzerTestOneInput without libFuzzer, so
   the regression inputs and seed corpora run under any compiler (gcc with
   ASan + UBSan in make test). Arguments are files or directories (every
   regular file in them, in name order). Exits non-zero if none was read;
   a finding aborts, as under libFuzzer. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t replayed = 0;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;
    unsigned char *buf;
    if (!f) { fprintf(stderr, "replay: cannot open %s\n", path); return 1; }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); fprintf(stderr, "replay: cannot size %s\n", path); return 1; }
    buf = (unsigned char *)malloc((size_t)n + 1);
    if (!buf || (n && fread(buf, 1, (size_t)n, f) != (size_t)n)) { fclose(f); free(buf); fprintf(stderr, "replay: cannot read %s\n", path); return 1; }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    ++replayed;
    return 0;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    int bad = 0;
    if (!d) { fprintf(stderr, "replay: cannot list %s\n", dir); return 1; }
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat sb;
        if (e->d_name[0] == '.') continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (n == cap) {
            char **nn = (char **)realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            if (!nn) abort();
            names = nn;
        }
        names[n] = (char *)malloc(strlen(path) + 1);
        if (!names[n]) abort();
        memcpy(names[n], path, strlen(path) + 1);
        ++n;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp);
    for (i = 0; i < n; ++i) {
        bad |= run_file(names[i]);
        free(names[i]);
    }
    free(names);
    return bad;
}

int main(int argc, char **argv)
{
    int i, bad = 0;
    for (i = 1; i < argc; ++i) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) continue; /* an absent corpus directory is fine */
        bad |= S_ISDIR(sb.st_mode) ? run_dir(argv[i]) : run_file(argv[i]);
    }
    printf("replayed %zu inputs\n", replayed);
    return bad || replayed == 0;
}
