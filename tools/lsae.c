/* lsae - the latentsae command-line tool.

   lsae train    --data PATH [options]          train a TopK SAE on embeddings
   lsae encode   MODEL EMBEDDINGS -o OUT        top-k latents of every row
   lsae eval     MODEL EMBEDDINGS               reconstruction and latent usage
   lsae info     MODEL                          what a model holds
   lsae features MODEL EMBEDDINGS [--texts F]   top-activating rows per latent
   lsae report   RUN_DIR                        one self-contained HTML page

   `lsae COMMAND --help` lists every flag with its default. Flags are named as
   latent-sae's train_local.py names them (--batch-size, --grad-acc-steps,
   --k, --expansion-factor, ...), so a command line carries over.

   A training run is a directory (default checkpoints/sae_<k>_<expansion>.<run id>/,
   latent-sae's naming):
      cfg.json, sae.safetensors   the model, loadable by latent-sae and sparsify
      checkpoint/                 model + optimizer state + data position (resume)
      run.json                    the options of the run, for resume and report
      metrics.jsonl               one JSON object per optimizer step
      report.html                 written by `lsae report`

   Conventions: every failure is one line on stderr, "lsae CMD: what went
   wrong", and a non-zero exit (2 for a bad command line, 1 otherwise, 130
   after Ctrl-C). Every file is written under a temporary name and renamed,
   so a failure never leaves half a file where a whole one stood.

   Built by `make` as build/lsae; it is one C file on top of latentsae.h and
   uses POSIX for signals, terminals and directories. */

#define _POSIX_C_SOURCE 200809L
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__GNUC__) || defined(__clang__)
#define NORETURN __attribute__((noreturn))
#define PRINTF_LIKE(a, b) __attribute__((format(printf, a, b)))
#else
#define NORETURN
#define PRINTF_LIKE(a, b)
#endif

#define PATH_CAP 4096

/* ================================================================ errors */

static char g_cmd[64] = "lsae";          /* "lsae train": the prefix of every message */
static volatile sig_atomic_t g_stop = 0; /* set by SIGINT/SIGTERM; the work loops poll it */

/* Temporary files in flight: removed on failure so nothing half-written stays. */
#define MAX_TMP 8
static char g_tmp[MAX_TMP][PATH_CAP];

static int g_live = 0;       /* stderr is a terminal: progress is one line redrawn in place */
static int g_live_drawn = 0; /* such a line is on screen and must be cleared before other text */

static void live_clear(void)
{
    if (g_live_drawn) {
        fputs("\r\033[K", stderr);
        g_live_drawn = 0;
    }
}

static void remove_tmp_files(void)
{
    int i;
    for (i = 0; i < MAX_TMP; ++i)
        if (g_tmp[i][0]) {
            remove(g_tmp[i]);
            g_tmp[i][0] = 0;
        }
}

/* One line: newlines inside a message (from a path, say) become spaces. */
static void vmessage(const char *fmt, va_list ap)
{
    char buf[2048];
    size_t i;
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (i = 0; buf[i]; ++i)
        if (buf[i] == '\n' || buf[i] == '\r') buf[i] = ' ';
    live_clear();
    fprintf(stderr, "%s: %s\n", g_cmd, buf);
}

static NORETURN void fail(const char *fmt, ...) PRINTF_LIKE(1, 2);
static NORETURN void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
    remove_tmp_files();
    exit(1);
}

/* A bad command line: exit 2, pointing at --help. */
static NORETURN void usage_fail(const char *fmt, ...) PRINTF_LIKE(1, 2);
static NORETURN void usage_fail(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    live_clear();
    fprintf(stderr, "%s: %s (see %s --help)\n", g_cmd, buf, g_cmd);
    remove_tmp_files();
    exit(2);
}

/* A library call failed: its own message says what and where. */
static NORETURN void lib_fail(lsae_result r, const char *context)
{
    const char *detail = lsae_last_error();
    if (!detail || !*detail) detail = lsae_result_string(r);
    if (context) fail("%s: %s", context, detail);
    fail("%s", detail);
}

static void warn(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
}

static void on_signal(int sig)
{
    g_stop = sig; /* only a flag: the loops notice it at a safe point */
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* For the commands that only read: Ctrl-C removes their partial output. */
static void check_interrupted(void)
{
    if (g_stop) {
        live_clear();
        fprintf(stderr, "%s: interrupted; partial output removed\n", g_cmd);
        remove_tmp_files();
        exit(130);
    }
}

/* ========================================================= small helpers */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) fail("out of memory (%zu bytes)", n);
    return p;
}

static void *xcalloc(size_t count, size_t size)
{
    void *p;
    if (size && count > (size_t)-1 / size) fail("out of memory (%zu x %zu bytes)", count, size);
    p = calloc(count ? count : 1, size ? size : 1);
    if (!p) fail("out of memory (%zu x %zu bytes)", count, size);
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) fail("out of memory (%zu bytes)", n);
    return q;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void join_path(char *out, const char *dir, const char *name)
{
    size_t n = strlen(dir);
    int w = snprintf(out, PATH_CAP, (n && dir[n - 1] == '/') ? "%s%s" : "%s/%s", dir, name);
    if (w < 0 || w >= PATH_CAP) fail("path too long: %s/%s", dir, name);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static long long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

/* mkdir -p */
static void make_dirs(const char *path)
{
    char buf[PATH_CAP];
    size_t i, n = strlen(path);
    if (n == 0 || n >= sizeof buf) fail("bad directory name '%s'", path);
    memcpy(buf, path, n + 1);
    for (i = 1; i <= n; ++i) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) fail("%s: cannot create directory: %s", buf, strerror(errno));
            if (!is_dir(buf)) fail("%s: exists and is not a directory", buf);
            buf[i] = c;
        }
    }
}

static void abs_path(const char *p, char *out)
{
    if (p[0] == '/') {
        if (strlen(p) >= PATH_CAP) fail("path too long: %s", p);
        strcpy(out, p);
        return;
    }
    if (!getcwd(out, PATH_CAP)) fail("cannot read the current directory: %s", strerror(errno));
    if (strlen(out) + 1 + strlen(p) >= PATH_CAP) fail("path too long: %s", p);
    strcat(out, "/");
    strcat(out, p);
}

/* Whole file into memory, NUL-terminated. NULL (errno set) when it cannot be read. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (!f) return NULL;
    for (;;) {
        size_t got;
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 131072;
            buf = (char *)xrealloc(buf, cap + 1);
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        free(buf);
        errno = e ? e : EIO;
        return NULL;
    }
    fclose(f);
    if (!buf) buf = (char *)xmalloc(1);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* "1h02m03s", "4m05s", "12.3s" */
static void fmt_duration(char *out, size_t cap, double s)
{
    long t;
    if (!(s >= 0) || s > 1e9) { snprintf(out, cap, "?"); return; }
    if (s < 60) { snprintf(out, cap, "%.1fs", s); return; }
    t = (long)(s + 0.5);
    if (t < 3600) snprintf(out, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(out, cap, "%ldh%02ldm%02lds", t / 3600, (t / 60) % 60, t % 60);
}

/* ====================================================== atomic file write */

/* A file written as PATH.<pid>.tmp and renamed over PATH by af_commit: a
   reader sees the old file or the new one, never a mix. */
typedef struct afile {
    FILE *f;
    char path[PATH_CAP];
    int slot;
} afile;

static FILE *af_open(afile *a, const char *path)
{
    int i, w;
    for (i = 0; i < MAX_TMP && g_tmp[i][0]; ++i) {}
    if (i == MAX_TMP) fail("too many files open for writing at once");
    w = snprintf(g_tmp[i], PATH_CAP, "%s.%ld.tmp", path, (long)getpid());
    if (w < 0 || w >= PATH_CAP || strlen(path) >= PATH_CAP) fail("path too long: %s", path);
    strcpy(a->path, path);
    a->slot = i;
    a->f = fopen(g_tmp[i], "wb");
    if (!a->f) {
        int e = errno;
        g_tmp[i][0] = 0;
        fail("%s: cannot write: %s", path, strerror(e));
    }
    return a->f;
}

static void af_commit(afile *a)
{
    int bad = fflush(a->f) != 0 || ferror(a->f);
    int e = errno;
    if (!bad && fsync(fileno(a->f)) != 0 && errno != EINVAL) { bad = 1; e = errno; }
    if (fclose(a->f) != 0 && !bad) { bad = 1; e = errno; }
    a->f = NULL;
    if (bad) fail("%s: write failed: %s", a->path, strerror(e));
    if (rename(g_tmp[a->slot], a->path) != 0) fail("%s: cannot rename the finished file into place: %s", a->path, strerror(errno));
    g_tmp[a->slot][0] = 0;
}

/* ============================================================ JSON output */

/* A JSON string: control characters escaped, '<' as \u003c (so the text can
   sit inside an HTML <script> block), and invalid UTF-8 replaced by U+FFFD so
   any text file gives valid JSON. */
static void json_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    while (*p) {
        unsigned c = *p;
        if (c == '"' || c == '\\') { fputc('\\', f); fputc((int)c, f); ++p; }
        else if (c == '\n') { fputs("\\n", f); ++p; }
        else if (c == '\t') { fputs("\\t", f); ++p; }
        else if (c == '\r') { fputs("\\r", f); ++p; }
        else if (c < 0x20 || c == 0x7f) { fprintf(f, "\\u%04x", c); ++p; }
        else if (c == '<' || c == '>' || c == '&') { fprintf(f, "\\u%04x", c); ++p; }
        else if (c < 0x80) { fputc((int)c, f); ++p; }
        else {
            /* a well-formed UTF-8 sequence is copied, anything else replaced */
            int n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0, i;
            for (i = 1; i < n; ++i)
                if ((p[i] & 0xC0) != 0x80) break;
            if (n == 0 || i < n) { fputs("\\ufffd", f); ++p; }
            else { fwrite(p, 1, (size_t)n, f); p += n; }
        }
    }
    fputc('"', f);
}

/* A JSON number; NaN and Inf, which JSON lacks, become null. */
static void json_num(FILE *f, double v)
{
    if (!isfinite(v)) fputs("null", f);
    else fprintf(f, "%.9g", v);
}

/* ============================================================= JSON input */

/* A small reader for run.json, metrics.jsonl, checkpoint blobs and
   safetensors headers: a tree of values, strings decoded to UTF-8. */
typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jval {
    jtype t;
    double num;
    int b;
    char *str;
    size_t n;            /* items of an array or object */
    char **keys;         /* object keys */
    struct jval *items;
} jval;

typedef struct {
    const char *s;
    size_t i, n;
    int depth;
    const char *err;
} jparser;

static void jfree(jval *v)
{
    size_t i;
    if (!v) return;
    for (i = 0; i < v->n; ++i) {
        jfree(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

static void jws(jparser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')) ++p->i;
}

static int jhex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    int i;
    for (i = 0; i < 4; ++i) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static char *jstring(jparser *p)
{
    size_t cap = 32, o = 0;
    char *out = (char *)xmalloc(cap);
    ++p->i; /* the opening quote */
    while (p->i < p->n && p->s[p->i] != '"') {
        unsigned cp;
        char c = p->s[p->i];
        if (o + 8 >= cap) { cap *= 2; out = (char *)xrealloc(out, cap); }
        if ((unsigned char)c < 0x20) { p->err = "control character in a string"; free(out); return NULL; }
        if (c != '\\') { out[o++] = c; ++p->i; continue; }
        if (p->i + 1 >= p->n) break;
        c = p->s[p->i + 1];
        p->i += 2;
        switch (c) {
        case '"': out[o++] = '"'; continue;
        case '\\': out[o++] = '\\'; continue;
        case '/': out[o++] = '/'; continue;
        case 'b': out[o++] = '\b'; continue;
        case 'f': out[o++] = '\f'; continue;
        case 'n': out[o++] = '\n'; continue;
        case 'r': out[o++] = '\r'; continue;
        case 't': out[o++] = '\t'; continue;
        case 'u': break;
        default: p->err = "bad escape in a string"; free(out); return NULL;
        }
        if (p->i + 4 > p->n || !jhex4(p->s + p->i, &cp)) { p->err = "bad \\u escape"; free(out); return NULL; }
        p->i += 4;
        if (cp >= 0xD800 && cp < 0xDC00 && p->i + 6 <= p->n && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
            unsigned lo;
            if (jhex4(p->s + p->i + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p->i += 6;
            }
        }
        if (cp < 0x80) out[o++] = (char)cp;
        else if (cp < 0x800) { out[o++] = (char)(0xC0 | (cp >> 6)); out[o++] = (char)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) { out[o++] = (char)(0xE0 | (cp >> 12)); out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[o++] = (char)(0x80 | (cp & 0x3F)); }
        else { out[o++] = (char)(0xF0 | (cp >> 18)); out[o++] = (char)(0x80 | ((cp >> 12) & 0x3F)); out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[o++] = (char)(0x80 | (cp & 0x3F)); }
    }
    if (p->i >= p->n) { p->err = "string never ends"; free(out); return NULL; }
    ++p->i;
    out[o] = 0;
    return out;
}

static int jvalue(jparser *p, jval *v)
{
    char c;
    memset(v, 0, sizeof *v);
    jws(p);
    if (p->i >= p->n) { p->err = "text ends where a value was expected"; return 0; }
    if (++p->depth > 64) { p->err = "nested too deeply"; return 0; }
    c = p->s[p->i];
    if (c == '{' || c == '[') {
        size_t cap = 0;
        char close = c == '{' ? '}' : ']';
        v->t = c == '{' ? J_OBJ : J_ARR;
        ++p->i;
        jws(p);
        if (p->i < p->n && p->s[p->i] == close) { ++p->i; --p->depth; return 1; }
        for (;;) {
            char *key = NULL;
            if (v->t == J_OBJ) {
                jws(p);
                if (p->i >= p->n || p->s[p->i] != '"') { p->err = "expected a key"; return 0; }
                if (!(key = jstring(p))) return 0;
                jws(p);
                if (p->i >= p->n || p->s[p->i] != ':') { free(key); p->err = "expected ':'"; return 0; }
                ++p->i;
            }
            if (v->n == cap) {
                cap = cap ? cap * 2 : 8;
                v->items = (jval *)xrealloc(v->items, cap * sizeof(jval));
                if (v->t == J_OBJ) v->keys = (char **)xrealloc(v->keys, cap * sizeof(char *));
            }
            if (v->t == J_OBJ) v->keys[v->n] = key;
            if (!jvalue(p, &v->items[v->n])) { v->n++; return 0; }
            v->n++;
            jws(p);
            if (p->i < p->n && p->s[p->i] == ',') { ++p->i; continue; }
            if (p->i < p->n && p->s[p->i] == close) { ++p->i; break; }
            p->err = "expected ',' or a closing bracket";
            return 0;
        }
    } else if (c == '"') {
        v->t = J_STR;
        if (!(v->str = jstring(p))) return 0;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        char *end;
        v->t = J_NUM;
        v->num = strtod(p->s + p->i, &end);
        if (end == p->s + p->i) { p->err = "bad number"; return 0; }
        p->i = (size_t)(end - p->s);
    } else if (p->n - p->i >= 4 && !strncmp(p->s + p->i, "true", 4)) { v->t = J_BOOL; v->b = 1; p->i += 4; }
    else if (p->n - p->i >= 5 && !strncmp(p->s + p->i, "false", 5)) { v->t = J_BOOL; p->i += 5; }
    else if (p->n - p->i >= 4 && !strncmp(p->s + p->i, "null", 4)) { v->t = J_NULL; p->i += 4; }
    else if (p->n - p->i >= 3 && !strncmp(p->s + p->i, "NaN", 3)) { v->t = J_NUM; v->num = NAN; p->i += 3; }
    else { p->err = "unexpected character"; return 0; }
    --p->depth;
    return 1;
}

/* Parse s[0, n) as one JSON value. 0 with *err (and the byte offset) on failure. */
static int jparse(const char *s, size_t n, jval *out, const char **err, size_t *at)
{
    jparser p;
    memset(&p, 0, sizeof p);
    p.s = s;
    p.n = n;
    if (!jvalue(&p, out)) { jfree(out); *err = p.err ? p.err : "malformed"; *at = p.i; return 0; }
    jws(&p);
    if (p.i != n) { jfree(out); *err = "text after the value"; *at = p.i; return 0; }
    return 1;
}

static const jval *jget(const jval *o, const char *key)
{
    size_t i;
    if (!o || o->t != J_OBJ) return NULL;
    for (i = 0; i < o->n; ++i)
        if (!strcmp(o->keys[i], key)) return &o->items[i];
    return NULL;
}

static double jnum(const jval *o, const char *key, double def)
{
    const jval *v = jget(o, key);
    return v && v->t == J_NUM ? v->num : v && v->t == J_BOOL ? v->b : def;
}

static const char *jstr(const jval *o, const char *key)
{
    const jval *v = jget(o, key);
    return v && v->t == J_STR ? v->str : NULL;
}

/* Read and parse a JSON file; 0 if it is not there, fail() if it is broken. */
static int jload(const char *path, jval *out)
{
    size_t n, at;
    const char *err;
    char *text = read_file(path, &n);
    if (!text) {
        if (errno == ENOENT) return 0;
        fail("%s: cannot read: %s", path, strerror(errno));
    }
    if (!jparse(text, n, out, &err, &at)) { free(text); fail("%s: not valid JSON (%s at byte %zu)", path, err, at); }
    free(text);
    return 1;
}

/* ========================================================= option parsing */

enum { O_FLAG, O_U64, O_INT, O_DBL, O_STR };

/* One flag: name, where its value goes, and its line in --help. A row with
   only `group` set starts a section of the help. */
typedef struct opt {
    const char *group;
    const char *name;   /* "--batch-size" */
    const char *alias;  /* "-o", or NULL */
    int kind;
    void *dst;
    const char *meta;   /* "N", "PATH" */
    const char *def;    /* the default as shown; NULL: none */
    const char *help;
    int seen;           /* given on the command line */
} opt;

#define OPT_GROUP(title) { title, NULL, NULL, 0, NULL, NULL, NULL, NULL, 0 }
#define OPT(name, alias, kind, dst, meta, def, help) { NULL, name, alias, kind, dst, meta, def, help, 0 }

/* Print `text` wrapped to 79 columns, continuation lines indented by `indent`. */
static void wrap(FILE *f, const char *text, int col, int indent)
{
    const char *p = text;
    int first = 1; /* the first word follows what is already on the line */
    while (*p) {
        const char *w = p;
        int len;
        while (*w && *w != ' ') ++w;
        len = (int)(w - p);
        if (!first && col + 1 + len > 79) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (!first) {
            fputc(' ', f);
            ++col;
        }
        first = 0;
        fwrite(p, 1, (size_t)len, f);
        col += len;
        p = w;
        while (*p == ' ') ++p;
    }
    fputc('\n', f);
}

static void print_help(const char *usage, const char *about, const opt *o, size_t n)
{
    size_t i;
    printf("usage: %s\n\n", usage);
    wrap(stdout, about, 0, 0);
    for (i = 0; i < n; ++i) {
        char left[96], help[1024];
        int col;
        if (o[i].group) {
            printf("\n%s:\n", o[i].group);
            continue;
        }
        snprintf(left, sizeof left, "  %s%s%s%s%s", o[i].alias ? o[i].alias : "", o[i].alias ? ", " : "", o[i].name,
                 o[i].meta ? " " : "", o[i].meta ? o[i].meta : "");
        col = printf("%s", left);
        if (col < 30) printf("%*s", 30 - col, "");
        else printf("\n%30s", "");
        snprintf(help, sizeof help, "%s%s%s%s", o[i].help, o[i].def ? " (default: " : "", o[i].def ? o[i].def : "", o[i].def ? ")" : "");
        wrap(stdout, help, 30, 30);
    }
    printf("\n  -h, --help                  this text\n");
}

static void parse_value(opt *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case O_U64: {
        unsigned long long x;
        if (!*v || *v == '-' || isspace((unsigned char)*v)) usage_fail("%s expects a whole number >= 0, got '%s'", o->name, v);
        x = strtoull(v, &end, 10);
        if (*end || errno) usage_fail("%s expects a whole number >= 0, got '%s'", o->name, v);
        *(uint64_t *)o->dst = (uint64_t)x;
        break;
    }
    case O_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < INT_MIN || x > INT_MAX) usage_fail("%s expects a whole number, got '%s'", o->name, v);
        *(int *)o->dst = (int)x;
        break;
    }
    case O_DBL: {
        double x = strtod(v, &end);
        if (!*v || *end || !isfinite(x)) usage_fail("%s expects a number, got '%s'", o->name, v);
        *(double *)o->dst = x;
        break;
    }
    case O_STR:
        *(const char **)o->dst = v;
        break;
    }
}

/* Parse argv (after the command word) into the table and up to maxpos
   positional arguments; returns how many positionals there were. */
static int parse_args(int argc, char **argv, opt *o, size_t n, const char *usage, const char *about, char **pos, int maxpos)
{
    int i, np = 0, only_pos = 0;
    for (i = 0; i < argc; ++i) {
        const char *a = argv[i], *eq, *val = NULL;
        char flag[64];
        size_t j, len;
        opt *hit = NULL;
        if (only_pos || a[0] != '-' || a[1] == 0) {
            if (np >= maxpos) usage_fail("unexpected argument '%s'", a);
            pos[np++] = argv[i];
            continue;
        }
        if (!strcmp(a, "--")) { only_pos = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help(usage, about, o, n);
            exit(0);
        }
        eq = strchr(a, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        if (len < sizeof flag) {
            /* --batch_size is --batch-size: latent-sae's newer scripts spell flags with underscores */
            memcpy(flag, a, len);
            flag[len] = 0;
            for (j = 2; j < len; ++j)
                if (flag[j] == '_') flag[j] = '-';
            for (j = 0; j < n; ++j) {
                if (!o[j].name) continue;
                if (!strcmp(o[j].name, flag) || (o[j].alias && !strcmp(o[j].alias, flag))) { hit = &o[j]; break; }
            }
        }
        if (!hit) usage_fail("unknown option '%.*s'", (int)len, a);
        if (hit->kind == O_FLAG) {
            if (eq) usage_fail("%s takes no value", hit->name);
            *(int *)hit->dst = 1;
        } else {
            if (eq) val = eq + 1;
            else if (i + 1 < argc) val = argv[++i];
            else usage_fail("%s needs a value (%s)", hit->name, hit->meta ? hit->meta : "a value");
            parse_value(hit, val);
        }
        hit->seen = 1;
    }
    return np;
}

static int opt_seen(const opt *o, size_t n, const char *name)
{
    size_t i;
    for (i = 0; i < n; ++i)
        if (o[i].name && !strcmp(o[i].name, name)) return o[i].seen;
    return 0;
}

/* ============================================================ data, model */

/* The data options every command that reads embeddings shares. */
typedef struct data_args {
    const char *format;    /* auto|npy|safetensors|raw|pt */
    const char *tensor;
    const char *raw_dtype; /* f32|f16|bf16 */
    uint64_t d_in;
} data_args;

#define DATA_OPTS(da) OPT_GROUP("data (what EMBEDDINGS / --data may be)"), DATA_OPT_ROWS(da)
#define DATA_OPT_ROWS(da) \
    OPT("--format", NULL, O_STR, &(da).format, "FMT", "auto", "auto, npy, safetensors, raw or pt; auto goes by extension, then by the file's first bytes"), \
    OPT("--tensor", NULL, O_STR, &(da).tensor, "NAME", "the only 2-D tensor", "which tensor of a .safetensors file holds the rows"), \
    OPT("--raw-dtype", NULL, O_STR, &(da).raw_dtype, "T", NULL, "read a headerless dump of f32, f16 or bf16 values (needs --d-in)"), \
    OPT("--d-in", NULL, O_U64, &(da).d_in, "N", "from the file", "values per row: required for raw dumps, otherwise checked against the file")

static lsae_dataset *open_data(const char *path, const data_args *a)
{
    lsae_dataset_options o = lsae_dataset_options_default();
    lsae_dataset *ds = NULL;
    lsae_result r;
    const char *fmt = a->format ? a->format : "auto";
    if (!strcmp(fmt, "auto")) o.format = LSAE_FORMAT_AUTO;
    else if (!strcmp(fmt, "npy")) o.format = LSAE_FORMAT_NPY;
    else if (!strcmp(fmt, "safetensors")) o.format = LSAE_FORMAT_SAFETENSORS;
    else if (!strcmp(fmt, "raw")) o.format = LSAE_FORMAT_RAW;
    else if (!strcmp(fmt, "pt")) o.format = LSAE_FORMAT_TORCH;
    else usage_fail("--format must be auto, npy, safetensors, raw or pt, not '%s'", fmt);
    if (a->raw_dtype) {
        if (!strcmp(a->raw_dtype, "f32")) o.raw_dtype = LSAE_DTYPE_F32;
        else if (!strcmp(a->raw_dtype, "f16")) o.raw_dtype = LSAE_DTYPE_F16;
        else if (!strcmp(a->raw_dtype, "bf16")) o.raw_dtype = LSAE_DTYPE_BF16;
        else usage_fail("--raw-dtype must be f32, f16 or bf16, not '%s'", a->raw_dtype);
        if (o.format == LSAE_FORMAT_AUTO) o.format = LSAE_FORMAT_RAW;
        else if (o.format != LSAE_FORMAT_RAW) usage_fail("--raw-dtype goes with raw dumps, not --format %s", fmt);
    }
    if (o.format == LSAE_FORMAT_RAW && !a->d_in) usage_fail("a raw dump has no header: give its width with --d-in");
    o.raw_d_in = (size_t)a->d_in;
    o.tensor_name = a->tensor;
    if (!exists(path)) fail("%s: no such file or directory", path);
    if ((r = lsae_dataset_open(path, &o, NULL, &ds)) != LSAE_OK) lib_fail(r, NULL);
    if (a->d_in && lsae_dataset_d_in(ds) != a->d_in)
        fail("%s: rows are %zu values wide, but --d-in says %llu", path, lsae_dataset_d_in(ds), (unsigned long long)a->d_in);
    if (lsae_dataset_rows(ds) == 0) fail("%s: holds no rows", path);
    return ds;
}

/* MODEL is a directory (cfg.json + sae.safetensors, a run directory
   included) or hf:OWNER/NAME[/SUBFOLDER] in the local Hugging Face cache,
   as latent-sae's Sae.load_from_disk / Sae.load_from_hub. `where` gets the
   directory actually read. */
static lsae_model *open_model(const char *spec, char *where)
{
    lsae_model *m = NULL;
    lsae_result r;
    if (!strncmp(spec, "hf:", 3)) {
        char repo[512];
        const char *s = spec + 3, *slash = strchr(s, '/'), *sub = NULL;
        size_t rl;
        if (!slash || slash == s || !slash[1]) fail("'%s': write a Hugging Face model as hf:OWNER/NAME or hf:OWNER/NAME/SUBFOLDER", spec);
        sub = strchr(slash + 1, '/');
        rl = sub ? (size_t)(sub - s) : strlen(s);
        if (rl >= sizeof repo) fail("'%s': repository name too long", spec);
        memcpy(repo, s, rl);
        repo[rl] = 0;
        if (sub) ++sub;
        if ((r = lsae_hf_resolve(repo, sub && *sub ? sub : NULL, where, PATH_CAP)) != LSAE_OK) lib_fail(r, NULL);
    } else {
        if (strlen(spec) >= PATH_CAP) fail("path too long: %s", spec);
        strcpy(where, spec);
        if (!exists(spec)) fail("%s: no such model directory", spec);
        if (!is_dir(spec)) fail("%s: a model is a directory holding cfg.json and sae.safetensors (hf:OWNER/NAME/SUBFOLDER for the Hugging Face cache)", spec);
    }
    if ((r = lsae_model_load(where, NULL, &m)) != LSAE_OK) lib_fail(r, NULL);
    return m;
}

/* --device and --precision for the commands that encode: parse, then move
   the loaded model (LSAE_DEVICE_DEFAULT: CUDA when this lsae was built with
   LATENTSAE_CUDA and a GPU answers, else the CPU). */
static lsae_device parse_device(const char *s)
{
    if (!s || !strcmp(s, "default") || !strcmp(s, "auto")) return LSAE_DEVICE_DEFAULT;
    if (!strcmp(s, "cpu")) return LSAE_DEVICE_CPU;
    if (!strcmp(s, "cuda")) return LSAE_DEVICE_CUDA;
    usage_fail("--device must be cpu or cuda, not '%s'", s);
    return LSAE_DEVICE_CPU;
}

static lsae_precision parse_precision(const char *s)
{
    if (!s || !strcmp(s, "default")) return LSAE_PRECISION_DEFAULT;
    if (!strcmp(s, "fp32")) return LSAE_PRECISION_FP32;
    if (!strcmp(s, "tf32")) return LSAE_PRECISION_TF32;
    if (!strcmp(s, "bf16")) return LSAE_PRECISION_BF16;
    usage_fail("--precision must be fp32, tf32 or bf16, not '%s'", s);
    return LSAE_PRECISION_DEFAULT;
}

static void place_model(lsae_model *m, const char *device, const char *precision)
{
    lsae_result r;
    lsae_device dev = parse_device(device);
    lsae_precision p = parse_precision(precision);
    if (dev == LSAE_DEVICE_CUDA && (r = lsae_backend_available(LSAE_DEVICE_CUDA)) != LSAE_OK) lib_fail(r, "--device cuda");
    if ((r = lsae_model_to_device(m, dev)) != LSAE_OK) lib_fail(r, "--device");
    if ((r = lsae_model_set_precision(m, p)) != LSAE_OK) lib_fail(r, "--precision");
}

#define DEVICE_OPTS(device, precision) \
    OPT("--device", NULL, O_STR, &(device), "D", "cuda when built with LATENTSAE_CUDA and a GPU answers, else cpu", "cpu or cuda"), \
    OPT("--precision", NULL, O_STR, &(precision), "P", "tf32 on CUDA, fp32 on the CPU", "the encoder product's arithmetic on CUDA: fp32, tf32 or bf16")

static int row_finite(const float *x, size_t d)
{
    size_t j;
    for (j = 0; j < d; ++j)
        if (!isfinite(x[j])) return 0;
    return 1;
}

/* ============================================================ progress */

static void progress_scan(const char *what, uint64_t done, uint64_t total, double t0)
{
    static double last = 0;
    double t = now_s();
    if (!g_live || (t - last < 0.2 && done < total)) return;
    last = t;
    fprintf(stderr, "\r\033[K%s: %s %llu/%llu rows (%.0f%%), %.0f rows/s", g_cmd, what, (unsigned long long)done,
            (unsigned long long)total, 100.0 * (double)done / (double)(total ? total : 1), (double)done / (t - t0 + 1e-9));
    g_live_drawn = 1;
}

/* ========================================================== scan (shared) */

/* One pass of a model over a dataset, the core of eval, features and report:
   every finite row is encoded; optionally decoded for the reconstruction
   sums; each latent's fire count and its top-T rows are kept. A latent
   "fires" on a row when it is among the row's top-k with activation > 0. */
typedef struct scan {
    size_t d, L, k, T;
    uint64_t rows;        /* rows encoded */
    uint64_t skipped;     /* rows left out for NaN/Inf */
    uint64_t *fires;      /* [L] */
    uint64_t active;      /* sum over rows of active latents (for L0) */
    /* top rows per latent: a min-heap of T entries each */
    float *top_act;       /* [L, T] */
    uint64_t *top_row;    /* [L, T] */
    uint32_t *top_n;      /* [L] */
    /* reconstruction sums, in double, per dimension; x shifted by the first
       row so the variance does not cancel away */
    int want_recon;
    double *shift, *sx, *sxx, *se;
} scan;

/* heap order: lower activation is worse; on ties the later row is worse,
   so the kept rows are the same whatever the chunking */
static int top_worse(float a, uint64_t ra, float b, uint64_t rb) { return a < b || (a == b && ra > rb); }

static void top_push(scan *s, size_t l, float act, uint64_t row)
{
    float *h = s->top_act + l * s->T;
    uint64_t *hr = s->top_row + l * s->T;
    uint32_t n = s->top_n[l];
    size_t pos;
    if (n < s->T) {
        pos = n;
        s->top_n[l] = n + 1;
        while (pos > 0) {
            size_t parent = (pos - 1) / 2;
            if (!top_worse(act, row, h[parent], hr[parent])) break;
            h[pos] = h[parent];
            hr[pos] = hr[parent];
            pos = parent;
        }
        h[pos] = act;
        hr[pos] = row;
        return;
    }
    if (!top_worse(h[0], hr[0], act, row)) return;
    pos = 0;
    for (;;) {
        size_t c = 2 * pos + 1;
        if (c >= n) break;
        if (c + 1 < n && top_worse(h[c + 1], hr[c + 1], h[c], hr[c])) ++c;
        if (!top_worse(h[c], hr[c], act, row)) break;
        h[pos] = h[c];
        hr[pos] = hr[c];
        pos = c;
    }
    h[pos] = act;
    hr[pos] = row;
}

/* Latent l's kept rows, best first, into act/row (T entries); returns the count. */
static size_t top_sorted(const scan *s, size_t l, float *act, uint64_t *row)
{
    size_t n = s->top_n[l], i, j;
    memcpy(act, s->top_act + l * s->T, n * sizeof(float));
    memcpy(row, s->top_row + l * s->T, n * sizeof(uint64_t));
    for (i = 1; i < n; ++i) { /* insertion sort: T is small */
        float a = act[i];
        uint64_t r = row[i];
        for (j = i; j > 0 && top_worse(act[j - 1], row[j - 1], a, r); --j) {
            act[j] = act[j - 1];
            row[j] = row[j - 1];
        }
        act[j] = a;
        row[j] = r;
    }
    return n;
}

static void scan_run(scan *s, lsae_model *m, lsae_dataset *ds, size_t T, int want_recon, uint64_t max_rows, const char *what)
{
    const size_t chunk = 2048;
    size_t d = lsae_model_d_in(m), k = lsae_model_k(m), L = lsae_model_num_latents(m), j;
    uint64_t total = lsae_dataset_rows(ds), first;
    float *x, *acts, *xhat = NULL;
    int32_t *idx;
    uint64_t *rowid;
    double t0 = now_s();
    lsae_result r;
    memset(s, 0, sizeof *s);
    if (lsae_dataset_d_in(ds) != d)
        fail("the embeddings have rows of %zu values, but the model expects d_in %zu", lsae_dataset_d_in(ds), d);
    if (max_rows && max_rows < total) total = max_rows;
    s->d = d; s->L = L; s->k = k; s->T = T; s->want_recon = want_recon;
    s->fires = (uint64_t *)xcalloc(L, sizeof(uint64_t));
    if (T) {
        s->top_act = (float *)xcalloc(L * T, sizeof(float));
        s->top_row = (uint64_t *)xcalloc(L * T, sizeof(uint64_t));
        s->top_n = (uint32_t *)xcalloc(L, sizeof(uint32_t));
    }
    if (want_recon) {
        s->shift = (double *)xcalloc(d, sizeof(double));
        s->sx = (double *)xcalloc(d, sizeof(double));
        s->sxx = (double *)xcalloc(d, sizeof(double));
        s->se = (double *)xcalloc(d, sizeof(double));
        xhat = (float *)xcalloc(chunk * d, sizeof(float));
    }
    x = (float *)xcalloc(chunk * d, sizeof(float));
    acts = (float *)xcalloc(chunk * k, sizeof(float));
    idx = (int32_t *)xcalloc(chunk * k, sizeof(int32_t));
    rowid = (uint64_t *)xcalloc(chunk, sizeof(uint64_t));
    for (first = 0; first < total; first += chunk) {
        size_t n = (size_t)(total - first < chunk ? total - first : chunk), i, kept = 0, q;
        check_interrupted();
        if ((r = lsae_dataset_read(ds, first, n, x)) != LSAE_OK) lib_fail(r, NULL);
        for (i = 0; i < n; ++i) { /* compact the finite rows to the front */
            if (!row_finite(x + i * d, d)) { s->skipped++; continue; }
            if (kept != i) memcpy(x + kept * d, x + i * d, d * sizeof(float));
            rowid[kept++] = first + i;
        }
        if (!kept) continue;
        if ((r = lsae_model_encode(m, x, kept, k, acts, idx)) != LSAE_OK) lib_fail(r, NULL);
        for (i = 0; i < kept; ++i)
            for (q = 0; q < k; ++q) {
                float a = acts[i * k + q];
                size_t l = (size_t)idx[i * k + q];
                if (!(a > 0.0f)) continue;
                s->fires[l]++;
                s->active++;
                if (T) top_push(s, l, a, rowid[i]);
            }
        if (want_recon) {
            if ((r = lsae_model_decode(m, acts, idx, kept, k, xhat)) != LSAE_OK) lib_fail(r, NULL);
            if (s->rows == 0)
                for (j = 0; j < d; ++j) s->shift[j] = x[j];
            for (i = 0; i < kept; ++i)
                for (j = 0; j < d; ++j) {
                    double v = (double)x[i * d + j] - s->shift[j], e = (double)x[i * d + j] - (double)xhat[i * d + j];
                    s->sx[j] += v;
                    s->sxx[j] += v * v;
                    s->se[j] += e * e;
                }
        }
        s->rows += kept;
        progress_scan(what, first + n, total, t0);
    }
    live_clear();
    free(x); free(acts); free(idx); free(rowid); free(xhat);
}

static void scan_free(scan *s)
{
    free(s->fires); free(s->top_act); free(s->top_row); free(s->top_n);
    free(s->shift); free(s->sx); free(s->sxx); free(s->se);
    memset(s, 0, sizeof *s);
}

/* ================================================================ texts */

/* A text file, one text a line, indexed by line (row) number. */
typedef struct texts {
    char *buf;
    char **line;
    size_t n;
} texts;

static void texts_load(texts *t, const char *path, uint64_t want_rows)
{
    size_t len, cap = 1024, i;
    char *p;
    memset(t, 0, sizeof *t);
    if (!path) return;
    t->buf = read_file(path, &len);
    if (!t->buf) fail("%s: cannot read the texts file: %s", path, strerror(errno));
    t->line = (char **)xmalloc(cap * sizeof(char *));
    p = t->buf;
    while (p < t->buf + len) {
        char *nl = memchr(p, '\n', (size_t)(t->buf + len - p));
        char *end = nl ? nl : t->buf + len;
        if (end > p && end[-1] == '\r') end[-1] = 0;
        *end = 0;
        if (t->n == cap) { cap *= 2; t->line = (char **)xrealloc(t->line, cap * sizeof(char *)); }
        t->line[t->n++] = p;
        p = end + 1;
    }
    for (i = 0; i < t->n; ++i) { /* tabs and stray control bytes would break the columns */
        char *c;
        for (c = t->line[i]; *c; ++c)
            if ((unsigned char)*c < 0x20) *c = ' ';
    }
    if (want_rows && t->n != want_rows)
        fail("%s has %zu lines, but the embeddings have %llu rows: the texts file needs one line per row, in the same order",
             path, t->n, (unsigned long long)want_rows);
}

static void texts_free(texts *t)
{
    free(t->buf);
    free(t->line);
    memset(t, 0, sizeof *t);
}

/* ================================================================= info */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    for (i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* min / mean / max of the L2 norms of `rows` rows of width d */
static void row_norms(const float *W, size_t rows, size_t d, double *mn, double *mean, double *mx)
{
    size_t r, j;
    double s = 0;
    *mn = INFINITY;
    *mx = 0;
    for (r = 0; r < rows; ++r) {
        double ss = 0, nr;
        for (j = 0; j < d; ++j) ss += (double)W[r * d + j] * W[r * d + j];
        nr = sqrt(ss);
        s += nr;
        if (nr < *mn) *mn = nr;
        if (nr > *mx) *mx = nr;
    }
    *mean = rows ? s / (double)rows : 0;
    if (!rows) *mn = 0;
}

static void vec_stats(const float *v, size_t n, double *mn, double *mean, double *mx)
{
    size_t i;
    double s = 0;
    *mn = INFINITY;
    *mx = -INFINITY;
    for (i = 0; i < n; ++i) {
        s += v[i];
        if (v[i] < *mn) *mn = v[i];
        if (v[i] > *mx) *mx = v[i];
    }
    *mean = n ? s / (double)n : 0;
}

/* Print each tensor of a safetensors file as stored: name, dtype, shape. */
static void print_safetensors_header(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char len8[8];
    uint64_t hl = 0;
    char *hdr;
    jval v;
    const char *err;
    size_t at, i, q;
    int t;
    if (!f) fail("%s: cannot open: %s", path, strerror(errno));
    if (fread(len8, 1, 8, f) != 8) { fclose(f); fail("%s: shorter than a safetensors header", path); }
    for (t = 7; t >= 0; --t) hl = (hl << 8) | len8[t];
    if (hl > 100000000u) { fclose(f); fail("%s: safetensors header of %llu bytes is implausible", path, (unsigned long long)hl); }
    hdr = (char *)xmalloc((size_t)hl + 1);
    if (fread(hdr, 1, (size_t)hl, f) != hl) { fclose(f); free(hdr); fail("%s: file ends inside its header", path); }
    fclose(f);
    hdr[hl] = 0;
    if (!jparse(hdr, (size_t)hl, &v, &err, &at) || v.t != J_OBJ) { free(hdr); fail("%s: header is not a JSON object", path); }
    free(hdr);
    for (i = 0; i < v.n; ++i) {
        const jval *sh = jget(&v.items[i], "shape");
        const char *dt = jstr(&v.items[i], "dtype");
        if (!strcmp(v.keys[i], "__metadata__")) continue;
        printf("  %-16s %-5s [", v.keys[i], dt ? dt : "?");
        for (q = 0; sh && sh->t == J_ARR && q < sh->n; ++q) printf("%s%.0f", q ? ", " : "", sh->items[q].num);
        printf("]\n");
    }
    jfree(&v);
}

/* The last complete line of a metrics.jsonl; 0 when there is none. */
static int last_metrics(const char *path, jval *out)
{
    size_t n, at;
    const char *err;
    char *text = read_file(path, &n), *end, *start;
    int ok = 0;
    if (!text) return 0;
    end = text + n;
    while (end > text && (end[-1] == '\n' || end[-1] == ' ')) --end;
    start = end;
    while (start > text && start[-1] != '\n') --start;
    if (end > start) ok = jparse(start, (size_t)(end - start), out, &err, &at);
    free(text);
    return ok;
}

static int cmd_info(int argc, char **argv)
{
    const char *usage = "lsae info MODEL";
    const char *about = "Show what a model holds: its config, each tensor's dtype and shape as stored, the norms of "
                        "its weights and a checksum of them. MODEL is a directory (cfg.json + sae.safetensors; a run "
                        "directory of lsae train) or hf:OWNER/NAME/SUBFOLDER from the local Hugging Face cache.";
    int as_json = 0;
    opt o[] = {
        OPT_GROUP("options"),
        OPT("--json", NULL, O_FLAG, &as_json, NULL, NULL, "print one JSON object instead of text"),
    };
    char *pos[1], where[PATH_CAP], path[PATH_CAP];
    lsae_model *m;
    const lsae_config *c;
    size_t d, L;
    float *We, *be, *Wd, *bd;
    double a0, a1, a2, d0, d1, d2, e0, e1, e2, bdn = 0;
    uint64_t h = 0xcbf29ce484222325ull;
    jval run, last;
    size_t j;
    int have_run, have_last = 0;
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 1) != 1) usage_fail("give one MODEL");
    m = open_model(pos[0], where);
    c = lsae_model_config(m);
    d = lsae_model_d_in(m);
    L = lsae_model_num_latents(m);
    We = (float *)xmalloc(L * d * sizeof(float));
    Wd = (float *)xmalloc(L * d * sizeof(float));
    be = (float *)xmalloc(L * sizeof(float));
    bd = (float *)xmalloc(d * sizeof(float));
    lsae_model_get_weights(m, We, be, Wd, bd);
    /* checksum of the float32 weights as loaded, in the order the SPEC lists
       them: equal for the same model whatever dtype or file order stored it */
    h = fnv1a(h, We, L * d * sizeof(float));
    h = fnv1a(h, be, L * sizeof(float));
    h = fnv1a(h, Wd, L * d * sizeof(float));
    h = fnv1a(h, bd, d * sizeof(float));
    row_norms(We, L, d, &a0, &a1, &a2);
    row_norms(Wd, L, d, &d0, &d1, &d2);
    vec_stats(be, L, &e0, &e1, &e2);
    for (j = 0; j < d; ++j) bdn += (double)bd[j] * bd[j];
    bdn = sqrt(bdn);
    join_path(path, where, "run.json");
    have_run = jload(path, &run);
    if (have_run) {
        /* how far the run got: the last line of its metrics */
        join_path(path, where, "metrics.jsonl");
        have_last = last_metrics(path, &last);
    }
    if (as_json) {
        printf("{\"path\": ");
        json_str(stdout, where);
        printf(", \"d_in\": %zu, \"num_latents\": %zu, \"expansion_factor\": %zu, \"k\": %zu, \"normalize_decoder\": %s, \"multi_topk\": %s",
               d, L, c->expansion_factor, lsae_model_k(m), c->normalize_decoder ? "true" : "false", c->multi_topk ? "true" : "false");
        printf(", \"encoder_row_norm\": {\"min\": %.9g, \"mean\": %.9g, \"max\": %.9g}", a0, a1, a2);
        printf(", \"decoder_row_norm\": {\"min\": %.9g, \"mean\": %.9g, \"max\": %.9g}", d0, d1, d2);
        printf(", \"encoder_bias\": {\"min\": %.9g, \"mean\": %.9g, \"max\": %.9g}", e0, e1, e2);
        printf(", \"b_dec_norm\": %.9g, \"checksum\": \"fnv1a64:%016llx\"", bdn, (unsigned long long)h);
        if (have_run) printf(", \"total_steps\": %.0f", jnum(&run, "total_steps", 0));
        if (have_last) printf(", \"step\": %.0f, \"fvu\": %.9g", jnum(&last, "step", 0), jnum(&last, "fvu", NAN));
        printf("}\n");
    } else {
        long long sz;
        join_path(path, where, "sae.safetensors");
        sz = file_size(path);
        printf("model      %s\n", where);
        printf("config     d_in %zu, num_latents %zu", d, L);
        if (L % d == 0) printf(" (expansion_factor %zu)", L / d);
        printf(", k %zu, normalize_decoder %s, multi_topk %s\n", lsae_model_k(m), c->normalize_decoder ? "true" : "false",
               c->multi_topk ? "true" : "false");
        printf("file       sae.safetensors, %.1f MB\n", (double)sz / 1e6);
        print_safetensors_header(path);
        printf("norms      encoder.weight rows  min %.4g  mean %.4g  max %.4g\n", a0, a1, a2);
        printf("           W_dec rows           min %.4g  mean %.4g  max %.4g%s\n", d0, d1, d2,
               c->normalize_decoder ? "  (unit rows expected)" : "");
        printf("           encoder.bias         min %.4g  mean %.4g  max %.4g\n", e0, e1, e2);
        printf("           b_dec                L2 norm %.4g\n", bdn);
        printf("checksum   fnv1a64:%016llx  (float32 weights: encoder.weight, encoder.bias, W_dec, b_dec)\n", (unsigned long long)h);
        if (have_run) {
            const char *data = jstr(&run, "data");
            printf("training   run %s: batch %.0f x grad-acc %.0f, %.0f optimizer steps planned, lr %.3g, data %s\n",
                   jstr(&run, "run_id") ? jstr(&run, "run_id") : "?", jnum(&run, "batch_size", 0), jnum(&run, "grad_acc_steps", 0),
                   jnum(&run, "total_steps", 0), jnum(&run, "lr", 0), data ? data : "?");
            if (have_last)
                printf("           at step %.0f: fvu %.4f, dead %.2f%%, %.0f samples seen\n", jnum(&last, "step", 0),
                       jnum(&last, "fvu", NAN), jnum(&last, "dead_pct", NAN), jnum(&last, "samples", 0));
        }
    }
    if (have_run) jfree(&run);
    if (have_last) jfree(&last);
    free(We); free(Wd); free(be); free(bd);
    lsae_model_free(m);
    return 0;
}

/* =============================================================== encode */

static int host_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}

/* n 4-byte values, written little-endian as .npy's '<i4' / '<f4' say */
static void write_le32(FILE *f, const void *src, size_t n)
{
    if (host_little_endian()) {
        fwrite(src, 4, n, f);
    } else {
        const unsigned char *p = (const unsigned char *)src;
        size_t i;
        for (i = 0; i < n; ++i) {
            unsigned char b[4];
            b[0] = p[4 * i + 3]; b[1] = p[4 * i + 2]; b[2] = p[4 * i + 1]; b[3] = p[4 * i];
            fwrite(b, 1, 4, f);
        }
    }
}

/* .npy version 1.0 header for a C-order [rows, cols] array; the data starts
   at a multiple of 64 bytes, as numpy writes it. */
static void npy_header(FILE *f, const char *descr, uint64_t rows, uint64_t cols)
{
    char dict[160];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%llu, %llu), }", descr,
                     (unsigned long long)rows, (unsigned long long)cols);
    size_t pad = (64 - (10 + (size_t)n + 1) % 64) % 64, hl = (size_t)n + pad + 1;
    unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0 };
    pre[8] = (unsigned char)(hl & 0xff);
    pre[9] = (unsigned char)(hl >> 8);
    fwrite(pre, 1, 10, f);
    fwrite(dict, 1, (size_t)n, f);
    while (pad--) fputc(' ', f);
    fputc('\n', f);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int cmd_encode(int argc, char **argv)
{
    const char *device = NULL, *precision = NULL;
    const char *usage = "lsae encode MODEL EMBEDDINGS -o OUT [options]";
    const char *about = "Encode every row of EMBEDDINGS with MODEL: the top-k latent indices and activations of each "
                        "row, largest first (latent-sae's top_indices and top_acts). OUT is a directory that gets "
                        "top_indices.npy (int32 [rows, k]) and top_acts.npy (float32 [rows, k]), or a .jsonl file "
                        "with one {\"top_indices\": [...], \"top_acts\": [...]} line per row, or - for JSONL on "
                        "standard output. Row i of the output is row i of the input; a row holding NaN or Inf is "
                        "an error. MODEL is a directory or hf:OWNER/NAME/SUBFOLDER.";
    const char *out = NULL, *format = NULL;
    uint64_t k = 0, max_rows = 0;
    int threads = 0;
    data_args da;
    char *pos[2], where[PATH_CAP], p_idx[PATH_CAP], p_act[PATH_CAP];
    lsae_model *m;
    lsae_dataset *ds;
    afile a_idx, a_act, a_jsonl;
    FILE *f_idx = NULL, *f_act = NULL, *f_jsonl = NULL;
    size_t d, chunk = 2048, i, q;
    uint64_t rows, first;
    float *x, *acts;
    int32_t *idx;
    int jsonl;
    double t0 = now_s();
    lsae_result r;
    opt o[] = {
        OPT_GROUP("output"),
        OPT("--out", "-o", O_STR, &out, "OUT", NULL, "a directory (for the .npy pair), a .jsonl file, or - (JSONL on stdout); required"),
        OPT("--format", NULL, O_STR, &format, "F", "npy, or jsonl when OUT ends in .jsonl or is -", "npy or jsonl"),
        OPT("--k", NULL, O_U64, &k, "N", "the model's k", "latents kept per row"),
        OPT("--max-rows", NULL, O_U64, &max_rows, "N", "all", "encode only the first N rows"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores, as OpenMP decides", "threads for encoding"),
        DEVICE_OPTS(device, precision),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    /* the data options share the table; their defaults are the zeroed struct */
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 2) != 2) usage_fail("give MODEL and EMBEDDINGS");
    if (!out) usage_fail("give the output with -o OUT");
    if (!format) format = (ends_with(out, ".jsonl") || !strcmp(out, "-")) ? "jsonl" : "npy";
    if (strcmp(format, "npy") && strcmp(format, "jsonl")) usage_fail("--format must be npy or jsonl, not '%s'", format);
    jsonl = !strcmp(format, "jsonl");
    if (!jsonl && !strcmp(out, "-")) usage_fail("the .npy pair needs a directory, not -");
    if (threads < 0) usage_fail("--threads must be >= 0");
    m = open_model(pos[0], where);
    place_model(m, device, precision);
    if (k == 0) k = lsae_model_k(m);
    if (k > lsae_model_num_latents(m)) usage_fail("--k %llu is larger than the model's %zu latents", (unsigned long long)k, lsae_model_num_latents(m));
    lsae_model_set_num_threads(m, threads);
    ds = open_data(pos[1], &da);
    d = lsae_model_d_in(m);
    if (lsae_dataset_d_in(ds) != d)
        fail("%s has rows of %zu values, but the model expects d_in %zu", pos[1], lsae_dataset_d_in(ds), d);
    rows = lsae_dataset_rows(ds);
    if (max_rows && max_rows < rows) rows = max_rows;
    catch_signals();
    if (jsonl) {
        if (!strcmp(out, "-")) f_jsonl = stdout;
        else f_jsonl = af_open(&a_jsonl, out);
    } else {
        if (exists(out) && !is_dir(out)) fail("%s exists and is not a directory: the .npy pair goes into a directory (or name a .jsonl file)", out);
        make_dirs(out);
        join_path(p_idx, out, "top_indices.npy");
        join_path(p_act, out, "top_acts.npy");
        f_idx = af_open(&a_idx, p_idx);
        f_act = af_open(&a_act, p_act);
        npy_header(f_idx, "<i4", rows, k);
        npy_header(f_act, "<f4", rows, k);
    }
    x = (float *)xcalloc(chunk * d, sizeof(float));
    acts = (float *)xcalloc(chunk * (size_t)k, sizeof(float));
    idx = (int32_t *)xcalloc(chunk * (size_t)k, sizeof(int32_t));
    for (first = 0; first < rows; first += chunk) {
        size_t n = (size_t)(rows - first < chunk ? rows - first : chunk);
        check_interrupted();
        if ((r = lsae_dataset_read(ds, first, n, x)) != LSAE_OK) lib_fail(r, NULL);
        for (i = 0; i < n; ++i)
            if (!row_finite(x + i * d, d))
                fail("%s: row %llu holds NaN or Inf; an encoding needs every row finite (drop or fix it first)", pos[1], (unsigned long long)(first + i));
        if ((r = lsae_model_encode(m, x, n, (size_t)k, acts, idx)) != LSAE_OK) lib_fail(r, NULL);
        if (jsonl) {
            for (i = 0; i < n; ++i) {
                fputs("{\"top_indices\": [", f_jsonl);
                for (q = 0; q < k; ++q) fprintf(f_jsonl, "%s%d", q ? ", " : "", (int)idx[i * k + q]);
                fputs("], \"top_acts\": [", f_jsonl);
                for (q = 0; q < k; ++q) fprintf(f_jsonl, "%s%.9g", q ? ", " : "", (double)acts[i * k + q]);
                fputs("]}\n", f_jsonl);
            }
            if (f_jsonl == stdout && ferror(stdout)) fail("writing to standard output failed");
        } else {
            write_le32(f_idx, idx, n * (size_t)k);
            write_le32(f_act, acts, n * (size_t)k);
        }
        progress_scan("encoding", first + n, rows, t0);
    }
    live_clear();
    if (jsonl) {
        if (f_jsonl == stdout) { if (fflush(stdout) != 0) fail("writing to standard output failed"); }
        else af_commit(&a_jsonl);
    } else {
        af_commit(&a_idx);
        af_commit(&a_act);
    }
    if (f_jsonl != stdout)
        fprintf(stderr, "%s: %llu rows, k %llu -> %s%s (%.1fs)\n", g_cmd, (unsigned long long)rows, (unsigned long long)k, out,
                jsonl ? "" : "/{top_indices,top_acts}.npy", now_s() - t0);
    free(x); free(acts); free(idx);
    lsae_dataset_close(ds);
    lsae_model_free(m);
    return 0;
}

/* ================================================================= eval */

/* Dead latents by the trainer's own counters, when MODEL is a run directory
   with a checkpoint: latents out of every top-k for more than
   dead_feature_threshold training samples. Returns 0 when not available. */
static int training_dead(const char *where, const lsae_model *m, size_t *n_dead, double *step, double *threshold, char *why, size_t why_cap)
{
    char path[PATH_CAP], ck[PATH_CAP];
    jval run;
    lsae_config cfg;
    lsae_model *m2 = NULL;
    lsae_trainer *tr = NULL;
    lsae_trainer_state st;
    size_t L = lsae_model_num_latents(m), l;
    uint64_t *since;
    int ok = 0;
    join_path(path, where, "run.json");
    join_path(ck, where, "checkpoint");
    snprintf(why, why_cap, "needs a run directory with checkpoint/ (lsae train writes one)");
    if (!is_dir(ck) || !jload(path, &run)) return 0;
    cfg = *lsae_model_config(m);
    cfg.dead_feature_threshold = (uint64_t)jnum(&run, "dead_feature_threshold", 10000000);
    cfg.init_b_dec = 0;
    jfree(&run);
    since = (uint64_t *)xcalloc(L, sizeof(uint64_t));
    snprintf(why, why_cap, "checkpoint/ unreadable");
    if (lsae_model_create(&cfg, NULL, &m2) != LSAE_OK || lsae_trainer_create(m2, &cfg, &tr) != LSAE_OK ||
        lsae_checkpoint_load(ck, m2, tr, NULL, 0, NULL) != LSAE_OK) {
        snprintf(why, why_cap, "checkpoint/ unreadable: %s", lsae_last_error());
    } else {
        memset(&st, 0, sizeof st);
        st.since_fired = since;
        if (lsae_trainer_get_state(tr, &st) == LSAE_OK) {
            *n_dead = 0;
            for (l = 0; l < L; ++l) *n_dead += since[l] > cfg.dead_feature_threshold;
            *step = (double)st.step;
            *threshold = (double)cfg.dead_feature_threshold;
            ok = 1;
        }
    }
    lsae_trainer_free(tr);
    lsae_model_free(m2);
    free(since);
    return ok;
}

/* Fire-rate histogram buckets: never, then decades from 1e-5 to 1. */
#define NBUCKET 7
static const char *bucket_name[NBUCKET] = { "never", "< 1e-5", "1e-5 - 1e-4", "1e-4 - 1e-3", "1e-3 - 1e-2", "1e-2 - 1e-1", ">= 1e-1" };

static int bucket_of(uint64_t fires, uint64_t rows)
{
    double r;
    if (fires == 0) return 0;
    r = (double)fires / (double)rows;
    if (r < 1e-5) return 1;
    if (r < 1e-4) return 2;
    if (r < 1e-3) return 3;
    if (r < 1e-2) return 4;
    if (r < 1e-1) return 5;
    return 6;
}

static int cmd_eval(int argc, char **argv)
{
    const char *device = NULL, *precision = NULL;
    const char *usage = "lsae eval MODEL EMBEDDINGS [options]";
    const char *about = "Measure how well MODEL reconstructs EMBEDDINGS and how it uses its latents: fvu in two forms "
                        "(SPEC's global one, used by sparsify since 2025, and latent-sae 2024's mean of per-dimension "
                        "ratios; they differ, so each is labelled), MSE, L0, latents that never fire on these rows, "
                        "dead latents by the training counters (for a run directory), and a histogram of fire rates. "
                        "A latent fires on a row when it is in the row's top-k with activation > 0. Rows holding "
                        "NaN or Inf are left out and counted.";
    uint64_t max_rows = 0;
    int threads = 0, as_json = 0;
    data_args da;
    char *pos[2], where[PATH_CAP];
    lsae_model *m;
    lsae_dataset *ds;
    scan s;
    size_t j, l, dims_used = 0, n_dead = 0, never = 0;
    uint64_t hist[NBUCKET] = { 0 }, maxh = 0;
    double N, tv = 0, sse = 0, perdim = 0, fvu, fvu_pd, mse, l0, step = 0, thr = 0;
    char why[1200];
    int have_dead, b;
    opt o[] = {
        OPT_GROUP("options"),
        OPT("--json", NULL, O_FLAG, &as_json, NULL, NULL, "print one JSON object instead of text"),
        OPT("--max-rows", NULL, O_U64, &max_rows, "N", "all", "evaluate only the first N rows"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores", "threads for encoding"),
        DEVICE_OPTS(device, precision),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 2) != 2) usage_fail("give MODEL and EMBEDDINGS");
    if (threads < 0) usage_fail("--threads must be >= 0");
    m = open_model(pos[0], where);
    place_model(m, device, precision);
    lsae_model_set_num_threads(m, threads);
    ds = open_data(pos[1], &da);
    catch_signals();
    scan_run(&s, m, ds, 0, 1, max_rows, "evaluating");
    if (s.rows < 2) fail("%s: %llu finite rows; fvu needs at least 2", pos[1], (unsigned long long)s.rows);
    N = (double)s.rows;
    for (j = 0; j < s.d; ++j) {
        /* variance of dim j from shifted sums: sum (x - mean)^2 = sxx - sx^2 / N */
        double tvj = s.sxx[j] - s.sx[j] * s.sx[j] / N;
        if (tvj < 0) tvj = 0;
        tv += tvj;
        sse += s.se[j];
        if (tvj > 0) { perdim += s.se[j] / tvj; dims_used++; }
    }
    fvu = tv > 0 ? sse / tv : NAN;
    fvu_pd = dims_used ? perdim / (double)dims_used : NAN;
    mse = sse / (N * (double)s.d);
    l0 = (double)s.active / N;
    for (l = 0; l < s.L; ++l) {
        b = bucket_of(s.fires[l], s.rows);
        hist[b]++;
        if (hist[b] > maxh) maxh = hist[b];
        never += s.fires[l] == 0;
    }
    have_dead = training_dead(where, m, &n_dead, &step, &thr, why, sizeof why);
    if (as_json) {
        printf("{\"model\": ");
        json_str(stdout, where);
        printf(", \"data\": ");
        json_str(stdout, pos[1]);
        printf(", \"rows\": %llu, \"rows_skipped\": %llu, \"d_in\": %zu, \"num_latents\": %zu, \"k\": %zu",
               (unsigned long long)s.rows, (unsigned long long)s.skipped, s.d, s.L, s.k);
        printf(", \"fvu\": "); json_num(stdout, fvu);
        printf(", \"fvu_per_dim\": "); json_num(stdout, fvu_pd);
        printf(", \"dims_varying\": %zu", dims_used);
        printf(", \"mse\": "); json_num(stdout, mse);
        printf(", \"l0\": "); json_num(stdout, l0);
        printf(", \"never_fired\": %zu", never);
        if (have_dead) printf(", \"dead\": %zu, \"dead_at_step\": %.0f, \"dead_feature_threshold\": %.0f", n_dead, step, thr);
        else { printf(", \"dead\": null, \"dead_unavailable\": "); json_str(stdout, why); }
        printf(", \"fire_rate_histogram\": [");
        for (b = 0; b < NBUCKET; ++b) {
            printf("%s{\"bucket\": ", b ? ", " : "");
            json_str(stdout, bucket_name[b]);
            printf(", \"latents\": %llu}", (unsigned long long)hist[b]);
        }
        printf("]}\n");
    } else {
        printf("eval of %s on %s\n", where, pos[1]);
        printf("  %llu rows", (unsigned long long)s.rows);
        if (s.skipped) printf(" (%llu more left out for NaN/Inf)", (unsigned long long)s.skipped);
        printf(", d_in %zu, %zu latents, k %zu\n\n", s.d, s.L, s.k);
        printf("reconstruction\n");
        printf("  fvu                  %-10.4f SPEC/sparsify 2025: sum of squared errors / total variance\n", fvu);
        printf("  fvu (per-dim mean)   %-10.4f latent-sae 2024: mean over dims of squared error / variance\n", fvu_pd);
        if (dims_used < s.d)
            printf("                                  (over the %zu dims that vary; %zu constant dims have no variance to explain)\n",
                   dims_used, s.d - dims_used);
        {
            char ev[32];
            snprintf(ev, sizeof ev, "%.2f%%", 100.0 * (1.0 - fvu));
            printf("  explained variance   %-10s 1 - fvu\n", ev);
        }
        printf("  mse                  %-10.4g mean over rows and dims of (x - x_hat)^2\n", mse);
        printf("sparsity\n");
        printf("  L0                   %-10.2f active latents per row (k = %zu)\n", l0, s.k);
        printf("latents\n");
        printf("  never fired          %-10zu %.2f%% of latents: not active on any of these rows\n", never, 100.0 * (double)never / (double)s.L);
        if (have_dead)
            printf("  dead (training)      %-10zu %.2f%%: out of every top-k for > %.0f samples at step %.0f\n", n_dead,
                   100.0 * (double)n_dead / (double)s.L, thr, step);
        else
            printf("  dead (training)      n/a        %s\n", why);
        printf("fire rate (fraction of rows a latent is active on): latents per bucket\n");
        for (b = 0; b < NBUCKET; ++b) {
            int bar = maxh ? (int)((40.0 * (double)hist[b] + (double)maxh - 1) / (double)maxh) : 0;
            printf("  %-12s %8llu  ", bucket_name[b], (unsigned long long)hist[b]);
            while (bar-- > 0) putchar('#');
            putchar('\n');
        }
    }
    scan_free(&s);
    lsae_dataset_close(ds);
    lsae_model_free(m);
    return 0;
}

/* ============================================================= features */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* "12,40-45" into a sorted list of latent ids below L */
static size_t parse_latents(const char *spec, size_t L, size_t **out)
{
    size_t n = 0, cap = 16;
    size_t *v = (size_t *)xmalloc(cap * sizeof(size_t));
    const char *p = spec;
    while (*p) {
        char *end;
        unsigned long long a, b;
        if (!isdigit((unsigned char)*p)) usage_fail("--latents: expected a number at '%s' (write e.g. 12,40-45)", p);
        a = b = strtoull(p, &end, 10);
        p = end;
        if (*p == '-') {
            if (!isdigit((unsigned char)p[1])) usage_fail("--latents: bad range at '%s'", p);
            b = strtoull(p + 1, &end, 10);
            p = end;
        }
        if (b < a) usage_fail("--latents: range %llu-%llu runs backwards", a, b);
        if (b >= L) usage_fail("--latents: latent %llu does not exist (the model has %zu, numbered 0..%zu)", b, L, L - 1);
        for (; a <= b; ++a) {
            if (n == cap) { cap *= 2; v = (size_t *)xrealloc(v, cap * sizeof(size_t)); }
            v[n++] = (size_t)a;
        }
        if (*p == ',') ++p;
        else if (*p) usage_fail("--latents: unexpected '%c' (write e.g. 12,40-45)", *p);
    }
    qsort(v, n, sizeof *v, cmp_size);
    *out = v;
    return n;
}

/* Print at most max bytes of s, cut at a UTF-8 character boundary. */
static void print_clipped(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max) { fputs(s, stdout); return; }
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) --max;
    fwrite(s, 1, max, stdout);
    fputs("...", stdout);
}

static int cmd_features(int argc, char **argv)
{
    const char *device = NULL, *precision = NULL;
    const char *usage = "lsae features MODEL EMBEDDINGS [--texts FILE] [options]";
    const char *about = "For each chosen latent, the rows of EMBEDDINGS it is most active on (with their text, when "
                        "a texts file with one line per row is given) and how often it fires. Without --latents or "
                        "--sample, every latent is listed, by index.";
    const char *texts_path = NULL, *latents_spec = NULL;
    uint64_t top = 10, sample = 0, seed = 0, max_rows = 0;
    int threads = 0, as_json = 0;
    data_args da;
    char *pos[2], where[PATH_CAP];
    lsae_model *m;
    lsae_dataset *ds;
    scan s;
    texts tx;
    size_t *chosen = NULL, n_chosen = 0, c, i, L;
    float *act;
    uint64_t *row;
    opt o[] = {
        OPT_GROUP("options"),
        OPT("--texts", NULL, O_STR, &texts_path, "FILE", NULL, "the text of each row, one line per row, in order"),
        OPT("--latents", NULL, O_STR, &latents_spec, "LIST", NULL, "which latents, e.g. 12,40-45"),
        OPT("--sample", NULL, O_U64, &sample, "N", NULL, "N latents at random (by --seed) among those active on at least --top rows"),
        OPT("--top", NULL, O_U64, &top, "N", "10", "rows shown per latent"),
        OPT("--seed", NULL, O_U64, &seed, "N", "0", "seed of --sample"),
        OPT("--json", NULL, O_FLAG, &as_json, NULL, NULL, "JSON lines: {latent, fires, fire_rate, top: [{row, act, text}]}"),
        OPT("--max-rows", NULL, O_U64, &max_rows, "N", "all", "look only at the first N rows"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores", "threads for encoding"),
        DEVICE_OPTS(device, precision),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 2) != 2) usage_fail("give MODEL and EMBEDDINGS");
    if (top == 0 || top > 10000) usage_fail("--top must be between 1 and 10000");
    if (latents_spec && sample) usage_fail("give --latents or --sample, not both");
    if (threads < 0) usage_fail("--threads must be >= 0");
    m = open_model(pos[0], where);
    place_model(m, device, precision);
    lsae_model_set_num_threads(m, threads);
    L = lsae_model_num_latents(m);
    if (latents_spec) n_chosen = parse_latents(latents_spec, L, &chosen);
    ds = open_data(pos[1], &da);
    texts_load(&tx, texts_path, lsae_dataset_rows(ds));
    catch_signals();
    scan_run(&s, m, ds, (size_t)top, 0, max_rows, "scanning");
    if (sample) {
        /* a seeded draw, not a pick of the prettiest: what a user would see */
        size_t n_ok = 0;
        uint64_t rng = seed;
        chosen = (size_t *)xmalloc(L * sizeof(size_t));
        for (i = 0; i < L; ++i)
            if (s.fires[i] >= top) chosen[n_ok++] = i;
        n_chosen = sample < n_ok ? (size_t)sample : n_ok;
        for (i = 0; i < n_chosen; ++i) {
            size_t jx = i + (size_t)(splitmix(&rng) % (uint64_t)(n_ok - i)), t = chosen[i];
            chosen[i] = chosen[jx];
            chosen[jx] = t;
        }
        qsort(chosen, n_chosen, sizeof *chosen, cmp_size);
        if (n_chosen < sample) warn("only %zu latents are active on at least %llu rows; showing those", n_ok, (unsigned long long)top);
    } else if (!latents_spec) {
        chosen = (size_t *)xmalloc(L * sizeof(size_t));
        for (i = 0; i < L; ++i) chosen[i] = i;
        n_chosen = L;
    }
    act = (float *)xmalloc((size_t)top * sizeof(float));
    row = (uint64_t *)xmalloc((size_t)top * sizeof(uint64_t));
    for (c = 0; c < n_chosen; ++c) {
        size_t l = chosen[c], n = top_sorted(&s, l, act, row);
        double rate = (double)s.fires[l] / (double)(s.rows ? s.rows : 1);
        if (as_json) {
            printf("{\"latent\": %zu, \"fires\": %llu, \"fire_rate\": %.9g, \"top\": [", l, (unsigned long long)s.fires[l], rate);
            for (i = 0; i < n; ++i) {
                printf("%s{\"row\": %llu, \"act\": %.9g", i ? ", " : "", (unsigned long long)row[i], (double)act[i]);
                if (tx.n) { printf(", \"text\": "); json_str(stdout, tx.line[row[i]]); }
                printf("}");
            }
            printf("]}\n");
            continue;
        }
        printf("latent %zu: active on %.2f%% of rows (%llu of %llu)\n", l, 100.0 * rate, (unsigned long long)s.fires[l],
               (unsigned long long)s.rows);
        for (i = 0; i < n; ++i) {
            printf("  %7.3f  ", (double)act[i]);
            if (tx.n) print_clipped(tx.line[row[i]], 150);
            else printf("row %llu", (unsigned long long)row[i]);
            printf("\n");
        }
        if (c + 1 < n_chosen) printf("\n");
    }
    if (fflush(stdout) != 0 || ferror(stdout)) fail("writing to standard output failed");
    free(act); free(row); free(chosen);
    texts_free(&tx);
    scan_free(&s);
    lsae_dataset_close(ds);
    lsae_model_free(m);
    return 0;
}

/* =============================================================== report */

/* metrics.jsonl as columns, one entry per line that parsed */
typedef struct metrics {
    size_t n, cap;
    double *step, *fvu, *auxk, *mtk, *dead, *lr, *sps, *loss;
} metrics;

static void metrics_push(metrics *mt, const jval *v)
{
    if (mt->n == mt->cap) {
        mt->cap = mt->cap ? mt->cap * 2 : 256;
        mt->step = (double *)xrealloc(mt->step, mt->cap * sizeof(double));
        mt->fvu = (double *)xrealloc(mt->fvu, mt->cap * sizeof(double));
        mt->auxk = (double *)xrealloc(mt->auxk, mt->cap * sizeof(double));
        mt->mtk = (double *)xrealloc(mt->mtk, mt->cap * sizeof(double));
        mt->dead = (double *)xrealloc(mt->dead, mt->cap * sizeof(double));
        mt->lr = (double *)xrealloc(mt->lr, mt->cap * sizeof(double));
        mt->sps = (double *)xrealloc(mt->sps, mt->cap * sizeof(double));
        mt->loss = (double *)xrealloc(mt->loss, mt->cap * sizeof(double));
    }
    mt->step[mt->n] = jnum(v, "step", NAN);
    mt->fvu[mt->n] = jnum(v, "fvu", NAN);
    mt->auxk[mt->n] = jnum(v, "auxk", NAN);
    mt->mtk[mt->n] = jnum(v, "multi_topk_fvu", NAN);
    mt->dead[mt->n] = jnum(v, "dead_pct", NAN);
    mt->lr[mt->n] = jnum(v, "lr", NAN);
    mt->sps[mt->n] = jnum(v, "samples_per_s", NAN);
    mt->loss[mt->n] = jnum(v, "loss", NAN);
    mt->n++;
}

/* Read metrics.jsonl; a torn last line (a crash mid-write) is skipped, any
   other bad line is an error that names it. Returns 0 when there is no file. */
static int metrics_load(const char *path, metrics *mt)
{
    size_t len, lineno = 0;
    char *text = read_file(path, &len), *p, *end;
    memset(mt, 0, sizeof *mt);
    if (!text) {
        if (errno == ENOENT) return 0;
        fail("%s: cannot read: %s", path, strerror(errno));
    }
    for (p = text; p < text + len; p = end + 1) {
        jval v;
        const char *err;
        size_t at;
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        end = nl ? nl : text + len;
        ++lineno;
        if (end == p) continue;
        if (!jparse(p, (size_t)(end - p), &v, &err, &at)) {
            if (!nl) break; /* unfinished last line */
            free(text);
            fail("%s: line %zu is not JSON (%s at byte %zu)", path, lineno, err, at);
        }
        metrics_push(mt, &v);
        jfree(&v);
    }
    free(text);
    return 1;
}

static void metrics_free(metrics *mt)
{
    free(mt->step); free(mt->fvu); free(mt->auxk); free(mt->mtk);
    free(mt->dead); free(mt->lr); free(mt->sps); free(mt->loss);
    memset(mt, 0, sizeof *mt);
}

static double nice_step(double v)
{
    double e, f;
    if (!(v > 0)) return 1;
    e = pow(10, floor(log10(v)));
    f = v / e;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * e;
}

typedef struct line_spec {
    const char *name;
    const double *y;
    const char *color;
} line_spec;

/* A line chart as inline SVG: y from 0 to a round maximum, x over the steps.
   Long runs are reduced to the min and max of each of ~600 buckets, which
   keeps spikes visible. */
static void svg_chart(FILE *f, const char *id, const char *title, const double *x, size_t n, const line_spec *ls, int nl)
{
    const double W = 520, H = 250, X0 = 62, X1 = 508, Y0 = 36, Y1 = 214;
    double xmin = INFINITY, xmax = -INFINITY, ymax = 0, ystep, xstep, t;
    size_t i, buckets = 600;
    int li, any = 0;
    for (i = 0; i < n; ++i) {
        if (!isfinite(x[i])) continue;
        if (x[i] < xmin) xmin = x[i];
        if (x[i] > xmax) xmax = x[i];
        for (li = 0; li < nl; ++li)
            if (isfinite(ls[li].y[i])) { any = 1; if (ls[li].y[i] > ymax) ymax = ls[li].y[i]; }
    }
    if (!isfinite(xmin)) { xmin = 0; xmax = 1; }
    if (xmax <= xmin) xmax = xmin + 1;
    if (!(ymax > 0)) ymax = 1;
    ystep = nice_step(ymax / 4);
    ymax = ceil(ymax / ystep - 1e-9) * ystep;
    xstep = nice_step((xmax - xmin) / 5);
    fprintf(f, "<figure class=\"chart-box\"><svg class=\"chart\" id=\"chart-%s\" data-series=\"%s\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"%s\">\n",
            id, id, W, H, title);
    fprintf(f, "<text class=\"title\" x=\"%.0f\" y=\"20\">%s</text>\n", X0, title);
    for (t = 0; t <= ymax + ystep * 1e-6; t += ystep) {
        double y = Y1 - (Y1 - Y0) * t / ymax;
        char lab[32];
        /* 5000 samples/s reads better as 5k than as 5e+03 */
        if (t >= 1000) snprintf(lab, sizeof lab, "%.3gk", t / 1000);
        else snprintf(lab, sizeof lab, "%.3g", t);
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                X0, X1, y, y, X0 - 6, y + 4, lab);
    }
    for (t = ceil(xmin / xstep) * xstep; t <= xmax + xstep * 1e-6; t += xstep) {
        double xx = X0 + (X1 - X0) * (t - xmin) / (xmax - xmin);
        fprintf(f, "<line class=\"axis\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.6g</text>\n",
                xx, xx, Y1, Y1 + 4, xx, Y1 + 18, t);
    }
    fprintf(f, "<line class=\"axis\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>\n", X0, X1, Y1, Y1);
    fprintf(f, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">optimizer step</text>\n", X1, H - 4);
    for (li = 0; li < nl && any; ++li) {
        size_t b, per = n > buckets ? (n + buckets - 1) / buckets : 1;
        fprintf(f, "<polyline class=\"line\" data-name=\"%s\" stroke=\"%s\" points=\"", ls[li].name, ls[li].color);
        for (b = 0; b < n; b += per) {
            size_t e = b + per < n ? b + per : n, lo = n, hi = n, q;
            for (q = b; q < e; ++q) {
                if (!isfinite(ls[li].y[q]) || !isfinite(x[q])) continue;
                if (lo == n || ls[li].y[q] < ls[li].y[lo]) lo = q;
                if (hi == n || ls[li].y[q] > ls[li].y[hi]) hi = q;
            }
            if (lo == n) continue;
            if (lo > hi) { q = lo; lo = hi; hi = q; }
            fprintf(f, "%.1f,%.1f ", X0 + (X1 - X0) * (x[lo] - xmin) / (xmax - xmin), Y1 - (Y1 - Y0) * ls[li].y[lo] / ymax);
            if (hi != lo)
                fprintf(f, "%.1f,%.1f ", X0 + (X1 - X0) * (x[hi] - xmin) / (xmax - xmin), Y1 - (Y1 - Y0) * ls[li].y[hi] / ymax);
        }
        fprintf(f, "\"/>\n");
        if (nl > 1)
            fprintf(f, "<text class=\"legend\" x=\"%.0f\" y=\"%.0f\" fill=\"%s\" text-anchor=\"end\">%s</text>\n", X1, 20.0 + 14.0 * li, ls[li].color, ls[li].name);
    }
    if (!any) fprintf(f, "<text class=\"tick\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">no values</text>\n", (X0 + X1) / 2, (Y0 + Y1) / 2);
    fprintf(f, "</svg></figure>\n");
}

static void html_text(FILE *f, const char *s)
{
    for (; *s; ++s) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

static const char *REPORT_CSS =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d232a;background:#f6f7f9}"
    "header{background:#1d2a3a;color:#fff;padding:18px 28px}header h1{margin:0;font-size:20px}"
    "header p{margin:4px 0 0;color:#b9c6d6}main{padding:8px 28px 40px;max-width:1180px}"
    "h2{font-size:16px;margin:26px 0 10px}table.summary{border-collapse:collapse;background:#fff;border:1px solid #dde2e8}"
    "table.summary td{padding:4px 14px;border-bottom:1px solid #eef1f4}table.summary td:first-child{color:#5b6775}"
    ".charts{display:flex;flex-wrap:wrap;gap:12px}.chart-box{margin:0;background:#fff;border:1px solid #dde2e8;border-radius:6px}"
    "svg.chart{width:520px;max-width:100%;height:auto;display:block}svg .title{font-weight:600;font-size:13px}"
    "svg .tick{font-size:10px;fill:#66717e}svg .legend{font-size:11px}svg .grid{stroke:#eceff3}svg .axis{stroke:#9aa4b0}"
    "svg .line{fill:none;stroke-width:1.6}"
    ".controls{display:flex;gap:10px;align-items:center;margin-bottom:10px;flex-wrap:wrap}"
    "#q{flex:1;min-width:240px;padding:7px 10px;font-size:14px;border:1px solid #c5cdd6;border-radius:5px}"
    "#sort{padding:6px}#count{color:#5b6775}"
    ".card{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:8px 14px;margin-bottom:8px}"
    ".card .head{display:flex;gap:14px;align-items:center}.card .lid{font-weight:600;min-width:90px}"
    ".card .rate{color:#5b6775;min-width:210px}.bar{flex:1;max-width:220px;height:6px;background:#eef1f4;border-radius:3px}"
    ".bar i{display:block;height:6px;background:#3d7bd9;border-radius:3px}"
    ".card ol{margin:6px 0 2px;padding-left:22px}.card li{margin:1px 0}.card .act{display:inline-block;width:52px;color:#8a5a00;font-variant-numeric:tabular-nums}"
    "#more{margin-top:6px;padding:6px 14px}.note{color:#5b6775}#lsae-errors:empty{display:none}#lsae-errors{color:#b00020}";

/* The browser: filters and renders the embedded latents. Kept as plain ES5
   so any browser runs it; text goes in through textContent, never HTML. */
static const char *REPORT_JS =
    "(function(){\n"
    "var el=document.getElementById('lsae-data');if(!el)return;\n"
    "var data=JSON.parse(el.textContent),texts=data.texts||{},lat=data.latents;\n"
    "var q=document.getElementById('q'),sortSel=document.getElementById('sort'),list=document.getElementById('list'),\n"
    "    more=document.getElementById('more'),count=document.getElementById('count');\n"
    "var PAGE=100,shown=PAGE,matches=[],maxFires=1,i;\n"
    "for(i=0;i<lat.length;i++)if(lat[i][1]>maxFires)maxFires=lat[i][1];\n"
    "var hay=lat.map(function(l){return l[2].map(function(r){return (texts[r]||'').toLowerCase();}).join('\\n');});\n"
    "function pct(f){var r=100*f/data.rows;return (r>=1?r.toFixed(1):r>=0.01?r.toFixed(2):r.toExponential(1))+'%';}\n"
    "function filter(){\n"
    "  var s=q.value.trim().toLowerCase(),out=[],m=s.match(/^#?(\\d+)$/),words=s?s.split(/\\s+/):[],j,w,ok;\n"
    "  for(j=0;j<lat.length;j++){\n"
    "    if(!s){out.push(j);continue;}\n"
    "    if(m){if(String(lat[j][0])===m[1])out.push(j);continue;}\n"
    "    ok=true;for(w=0;w<words.length;w++)if(hay[j].indexOf(words[w])<0){ok=false;break;}\n"
    "    if(ok)out.push(j);\n"
    "  }\n"
    "  var mode=sortSel.value;\n"
    "  out.sort(function(a,b){var A=lat[a],B=lat[b];\n"
    "    if(mode==='id')return A[0]-B[0];\n"
    "    if(mode==='rare')return (A[1]-B[1])||(A[0]-B[0]);\n"
    "    return (B[1]-A[1])||(A[0]-B[0]);});\n"
    "  matches=out;shown=PAGE;render();return out.length;\n"
    "}\n"
    "function card(j){\n"
    "  var l=lat[j],d=document.createElement('div'),h=document.createElement('div'),s,b,ol,k;\n"
    "  d.className='card';d.setAttribute('data-latent',l[0]);h.className='head';\n"
    "  s=document.createElement('span');s.className='lid';s.textContent='latent '+l[0];h.appendChild(s);\n"
    "  s=document.createElement('span');s.className='rate';s.textContent='active on '+pct(l[1])+' of rows ('+l[1]+')';h.appendChild(s);\n"
    "  b=document.createElement('span');b.className='bar';s=document.createElement('i');\n"
    "  s.style.width=Math.max(1,Math.round(100*Math.sqrt(l[1]/maxFires)))+'%';b.appendChild(s);h.appendChild(b);\n"
    "  d.appendChild(h);ol=document.createElement('ol');\n"
    "  for(k=0;k<l[2].length;k++){var li=document.createElement('li'),a=document.createElement('span');\n"
    "    a.className='act';a.textContent=l[3][k].toFixed(3);li.appendChild(a);\n"
    "    li.appendChild(document.createTextNode(texts[l[2][k]]!==undefined?texts[l[2][k]]:'row '+l[2][k]));ol.appendChild(li);}\n"
    "  d.appendChild(ol);return d;\n"
    "}\n"
    "function render(){\n"
    "  var frag=document.createDocumentFragment(),n=Math.min(shown,matches.length),j;\n"
    "  for(j=0;j<n;j++)frag.appendChild(card(matches[j]));\n"
    "  list.textContent='';list.appendChild(frag);\n"
    "  count.textContent=matches.length+' of '+lat.length+' latents'+(n<matches.length?' (showing '+n+')':'');\n"
    "  more.hidden=n>=matches.length;\n"
    "}\n"
    "q.addEventListener('input',filter);sortSel.addEventListener('change',filter);\n"
    "more.addEventListener('click',function(){shown+=PAGE;render();});\n"
    "filter();\n"
    "window.lsaeBrowser={search:function(s){q.value=s;return filter();},latents:lat,texts:texts};\n"
    "})();\n";

/* Runs last, in its own script so it still reports when the browser
   script failed: the counts and errors a test (or a curious person) can
   read from the DOM. With #selftest in the URL it also drives the search. */
static const char *REPORT_STATUS_JS =
    "(function(){\n"
    "var st=document.getElementById('lsae-status'),list=document.getElementById('list'),b=window.lsaeBrowser;\n"
    "st.setAttribute('data-charts',document.querySelectorAll('svg.chart polyline').length);\n"
    "st.setAttribute('data-cards',list?list.children.length:0);\n"
    "try{\n"
    "  if(location.hash==='#selftest'&&b&&b.latents.length){\n"
    "    var l=b.latents[0],t=b.texts[l[2][0]]||'',w=(t.toLowerCase().match(/[a-z]{4,}/)||[''])[0];\n"
    "    st.setAttribute('data-search-word',w);\n"
    "    st.setAttribute('data-search-hits',w?b.search(w):-1);\n"
    "    st.setAttribute('data-id-hits',b.search('#'+l[0]));\n"
    "    st.setAttribute('data-none-hits',b.search('zzzzqqqq no such words'));\n"
    "    b.search('');\n"
    "  }\n"
    "}catch(e){window.__lsaeErrors.push('selftest: '+e);}\n"
    "var errs=window.__lsaeErrors||[];\n"
    "document.getElementById('lsae-errors').textContent=errs.join('\\n');\n"
    "st.setAttribute('data-errors',errs.length);\n"
    "st.setAttribute('data-ready','1');\n"
    "})();\n";

typedef struct report_feat {
    const scan *s;
    const texts *tx;
    size_t max_latents;
} report_feat;

static const uint64_t *g_sort_fires; /* qsort has no context argument */
static int cmp_by_fires(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (g_sort_fires[x] != g_sort_fires[y]) return g_sort_fires[x] > g_sort_fires[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static void summary_row(FILE *f, const char *k, const char *v)
{
    fputs("<tr><td>", f);
    html_text(f, k);
    fputs("</td><td>", f);
    html_text(f, v);
    fputs("</td></tr>\n", f);
}

static void write_report(const char *path, const char *run_dir, const jval *run, const metrics *mt, const lsae_model *m,
                         const report_feat *rf, const char *data_note)
{
    afile af;
    FILE *f = af_open(&af, path);
    char buf[512];
    size_t L = lsae_model_num_latents(m), i, j;
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>", f);
    html_text(f, run_dir);
    fputs(" - lsae report</title>\n", f);
    /* first of all, so errors in anything after are caught and shown */
    fputs("<script>window.__lsaeErrors=[];window.addEventListener('error',function(e){window.__lsaeErrors.push(String(e.message||e));});"
          "(function(){var ce=console.error;console.error=function(){window.__lsaeErrors.push(Array.prototype.join.call(arguments,' '));"
          "if(ce)ce.apply(console,arguments);};})();</script>\n", f);
    fprintf(f, "<style>%s</style>\n</head><body>\n<header><h1>SAE training run ", REPORT_CSS);
    html_text(f, run && jstr(run, "run_id") ? jstr(run, "run_id") : run_dir);
    fputs("</h1><p>", f);
    html_text(f, run_dir);
    fprintf(f, " &middot; latentsae %s</p></header>\n<main>\n", lsae_version_string());

    fputs("<h2>Run</h2>\n<table class=\"summary\">\n", f);
    snprintf(buf, sizeof buf, "%zu latents (expansion %.3g), k %zu, d_in %zu%s", L, (double)L / (double)lsae_model_d_in(m),
             lsae_model_k(m), lsae_model_d_in(m), lsae_model_config(m)->multi_topk ? ", multi-topk" : "");
    summary_row(f, "model", buf);
    if (run) {
        const char *data = jstr(run, "data");
        if (data) {
            snprintf(buf, sizeof buf, "%s (%.0f rows)", data, jnum(run, "rows", 0));
            summary_row(f, "data", buf);
        }
        snprintf(buf, sizeof buf, "batch %.0f x grad-acc %.0f, %.0f optimizer steps planned (%.3g epochs)", jnum(run, "batch_size", 0),
                 jnum(run, "grad_acc_steps", 1), jnum(run, "total_steps", 0), jnum(run, "epochs", 1));
        summary_row(f, "training", buf);
        snprintf(buf, sizeof buf, "%.3g%s, %s schedule, %.0f warm-up steps", jnum(run, "lr", 0), jnum(run, "lr_auto", 0) ? " (automatic)" : "",
                 jstr(run, "lr_schedule") ? jstr(run, "lr_schedule") : "?", jnum(run, "lr_warmup_steps", 0));
        summary_row(f, "learning rate", buf);
        snprintf(buf, sizeof buf, "auxk alpha %.4g, dead after %.0f samples without firing", jnum(run, "auxk_alpha", 0), jnum(run, "dead_feature_threshold", 0));
        summary_row(f, "dead latents", buf);
    }
    if (mt && mt->n) {
        size_t last = mt->n - 1, w = mt->n < 20 ? mt->n : 20;
        double s = 0, sp = 0;
        size_t cnt = 0, cs = 0;
        for (i = mt->n - w; i < mt->n; ++i) if (isfinite(mt->fvu[i])) { s += mt->fvu[i]; cnt++; }
        for (i = 0; i < mt->n; ++i) if (isfinite(mt->sps[i])) { sp += mt->sps[i]; cs++; }
        snprintf(buf, sizeof buf, "step %.0f: fvu %.4f (mean of the last %zu steps), dead %.2f%%", mt->step[last], cnt ? s / (double)cnt : NAN, cnt,
                 mt->dead[last]);
        summary_row(f, "last logged", buf);
        snprintf(buf, sizeof buf, "%.0f samples/s on average", cs ? sp / (double)cs : NAN);
        summary_row(f, "speed", buf);
    }
    fputs("</table>\n", f);

    fputs("<h2>Training curves</h2>\n", f);
    if (mt && mt->n) {
        line_spec fl[2];
        int nf = 1;
        double any_mtk = 0;
        for (i = 0; i < mt->n; ++i) if (isfinite(mt->mtk[i]) && mt->mtk[i] > 0) any_mtk = 1;
        fl[0].name = "fvu"; fl[0].y = mt->fvu; fl[0].color = "#2a62b8";
        if (any_mtk) { fl[1].name = "fvu of top 4k"; fl[1].y = mt->mtk; fl[1].color = "#c2611d"; nf = 2; }
        fputs("<div class=\"charts\">\n", f);
        svg_chart(f, "fvu", "fvu (fraction of variance unexplained)", mt->step, mt->n, fl, nf);
        fl[0].name = "auxk"; fl[0].y = mt->auxk; fl[0].color = "#7a3fb0";
        svg_chart(f, "auxk", "AuxK loss (dead-latent revival)", mt->step, mt->n, fl, 1);
        fl[0].name = "dead %"; fl[0].y = mt->dead; fl[0].color = "#b8322a";
        svg_chart(f, "dead", "dead latents (%)", mt->step, mt->n, fl, 1);
        fl[0].name = "lr"; fl[0].y = mt->lr; fl[0].color = "#2f8a4a";
        svg_chart(f, "lr", "learning rate", mt->step, mt->n, fl, 1);
        fl[0].name = "samples/s"; fl[0].y = mt->sps; fl[0].color = "#8a6d1d";
        svg_chart(f, "speed", "throughput (samples/s)", mt->step, mt->n, fl, 1);
        fputs("</div>\n", f);
    } else {
        fputs("<p class=\"note\">No metrics.jsonl in this directory: nothing to plot.</p>\n", f);
    }

    fputs("<h2>Features</h2>\n", f);
    if (rf && rf->s) {
        const scan *s = rf->s;
        size_t *ids = (size_t *)xmalloc(L * sizeof(size_t)), n = 0, never = 0;
        float *act = (float *)xmalloc(s->T * sizeof(float));
        uint64_t *row = (uint64_t *)xmalloc(s->T * sizeof(uint64_t));
        for (i = 0; i < L; ++i) {
            if (s->fires[i]) ids[n++] = i;
            else never++;
        }
        if (rf->max_latents && n > rf->max_latents) {
            g_sort_fires = s->fires;
            qsort(ids, n, sizeof *ids, cmp_by_fires);
            n = rf->max_latents;
            qsort(ids, n, sizeof *ids, cmp_size);
        }
        fprintf(f, "<p class=\"note\">The %zu latents that fire on ", n);
        html_text(f, data_note);
        fprintf(f, " (%llu rows)%s, each with the rows it is most active on. %zu latents never fire there. "
                   "Search by words in the top texts, or by latent number (e.g. #12).</p>\n",
                (unsigned long long)s->rows, rf->max_latents && n == rf->max_latents ? ", the most frequent first kept" : "", never);
        fputs("<div id=\"browser\"><div class=\"controls\"><input id=\"q\" type=\"search\" placeholder=\"search: words in the top texts, or #latent\" autocomplete=\"off\">"
              "<select id=\"sort\"><option value=\"fires\">most active first</option><option value=\"rare\">rarest first</option>"
              "<option value=\"id\">by latent number</option></select><span id=\"count\"></span></div>\n"
              "<div id=\"list\"></div><button id=\"more\" hidden>show more</button></div>\n", f);
        /* the data: [latent, fires, [rows], [acts]] and the text of each row shown */
        fprintf(f, "<script id=\"lsae-data\" type=\"application/json\">{\"rows\": %llu, \"k\": %zu, \"num_latents\": %zu, \"latents\": [",
                (unsigned long long)s->rows, s->k, L);
        for (i = 0; i < n; ++i) {
            size_t l = ids[i], c = top_sorted(s, l, act, row);
            fprintf(f, "%s[%zu,%llu,[", i ? ",\n" : "\n", l, (unsigned long long)s->fires[l]);
            for (j = 0; j < c; ++j) fprintf(f, "%s%llu", j ? "," : "", (unsigned long long)row[j]);
            fputs("],[", f);
            for (j = 0; j < c; ++j) fprintf(f, "%s%.4g", j ? "," : "", (double)act[j]);
            fputs("]]", f);
        }
        fputs("], \"texts\": {", f);
        if (rf->tx && rf->tx->n) {
            /* each row's text once, however many latents show it */
            unsigned char *used = (unsigned char *)xcalloc(rf->tx->n, 1);
            int first = 1;
            for (i = 0; i < n; ++i) {
                size_t c = top_sorted(s, ids[i], act, row);
                for (j = 0; j < c; ++j) {
                    if (row[j] >= rf->tx->n || used[row[j]]) continue;
                    used[row[j]] = 1;
                    fprintf(f, "%s\"%llu\": ", first ? "\n" : ",\n", (unsigned long long)row[j]);
                    json_str(f, rf->tx->line[row[j]]);
                    first = 0;
                }
            }
            free(used);
        }
        fputs("}}</script>\n", f);
        fprintf(f, "<script>%s</script>\n", REPORT_JS);
        free(ids); free(act); free(row);
    } else {
        fputs("<p class=\"note\">No feature browser: give the embeddings with --data (lsae train records them in run.json).</p>\n", f);
    }
    fputs("<pre id=\"lsae-errors\"></pre>\n<div id=\"lsae-status\" hidden data-ready=\"0\"></div>\n", f);
    fprintf(f, "<script>%s</script>\n</main></body></html>\n", REPORT_STATUS_JS);
    af_commit(&af);
}

/* Data options recorded in run.json fill the ones not given on the command line. */
static void data_args_from_run(data_args *da, const opt *o, size_t n, const jval *run)
{
    if (!run) return;
    if (!opt_seen(o, n, "--format") && jstr(run, "format")) da->format = jstr(run, "format");
    if (!opt_seen(o, n, "--tensor") && jstr(run, "tensor")) da->tensor = jstr(run, "tensor");
    if (!opt_seen(o, n, "--raw-dtype") && jstr(run, "raw_dtype")) da->raw_dtype = jstr(run, "raw_dtype");
    if (!opt_seen(o, n, "--d-in") && jnum(run, "d_in_arg", 0) > 0) da->d_in = (uint64_t)jnum(run, "d_in_arg", 0);
}

static int cmd_report(int argc, char **argv)
{
    const char *device = NULL, *precision = NULL;
    const char *usage = "lsae report RUN_DIR [options]";
    const char *about = "Write one self-contained HTML file for a training run (no network, no CDN): its settings, "
                        "training curves as inline SVG (fvu, AuxK, dead %, learning rate, samples/s, from "
                        "metrics.jsonl) and a feature browser (search latents by words in their top texts or by "
                        "number; see each latent's top rows and fire rate), made by encoding the run's data with "
                        "the trained model. The data and texts files default to those lsae train recorded in "
                        "RUN_DIR/run.json.";
    const char *out = NULL, *data = NULL, *texts_path = NULL;
    uint64_t top = 8, max_latents = 0, max_rows = 0;
    int threads = 0, have_run, have_metrics;
    data_args da;
    char *pos[1], where[PATH_CAP], path[PATH_CAP], outbuf[PATH_CAP];
    jval run;
    metrics mt;
    lsae_model *m;
    lsae_dataset *ds = NULL;
    scan s;
    texts tx;
    report_feat rf;
    opt o[] = {
        OPT_GROUP("options"),
        OPT("--out", "-o", O_STR, &out, "FILE", "RUN_DIR/report.html", "where to write the page"),
        OPT("--data", NULL, O_STR, &data, "PATH", "the run's data (run.json)", "embeddings for the feature browser"),
        OPT("--texts", NULL, O_STR, &texts_path, "FILE", "the run's texts (run.json)", "the text of each row, one line per row"),
        OPT("--top", NULL, O_U64, &top, "N", "8", "rows shown per latent"),
        OPT("--max-latents", NULL, O_U64, &max_latents, "N", "0 = every latent that fires", "keep only the N most active latents (a smaller page)"),
        OPT("--max-rows", NULL, O_U64, &max_rows, "N", "all", "encode only the first N rows"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores", "threads for encoding"),
        DEVICE_OPTS(device, precision),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 1) != 1) usage_fail("give one RUN_DIR");
    if (top == 0 || top > 1000) usage_fail("--top must be between 1 and 1000");
    if (threads < 0) usage_fail("--threads must be >= 0");
    if (!is_dir(pos[0])) fail("%s: no such run directory", pos[0]);
    join_path(path, pos[0], "run.json");
    have_run = jload(path, &run);
    join_path(path, pos[0], "metrics.jsonl");
    have_metrics = metrics_load(path, &mt);
    m = open_model(pos[0], where);
    place_model(m, device, precision);
    lsae_model_set_num_threads(m, threads);
    if (!data && have_run) data = jstr(&run, "data");
    if (!texts_path && have_run && !opt_seen(o, sizeof o / sizeof o[0], "--data")) texts_path = jstr(&run, "texts");
    data_args_from_run(&da, o, sizeof o / sizeof o[0], have_run ? &run : NULL);
    if (data && !exists(data)) {
        if (opt_seen(o, sizeof o / sizeof o[0], "--data")) fail("%s: no such file or directory", data);
        warn("the run's data %s is not there any more: no feature browser (give --data)", data);
        data = NULL;
    }
    if (texts_path && !exists(texts_path)) {
        if (opt_seen(o, sizeof o / sizeof o[0], "--texts")) fail("%s: no such file", texts_path);
        warn("the run's texts %s are not there any more: the browser shows row numbers", texts_path);
        texts_path = NULL;
    }
    if (!have_metrics && !data) fail("%s has no metrics.jsonl and no data to browse features with: give --data", pos[0]);
    memset(&rf, 0, sizeof rf);
    memset(&tx, 0, sizeof tx);
    memset(&s, 0, sizeof s);
    catch_signals();
    if (data) {
        ds = open_data(data, &da);
        texts_load(&tx, texts_path, lsae_dataset_rows(ds));
        scan_run(&s, m, ds, (size_t)top, 0, max_rows, "encoding for the feature browser");
        rf.s = &s;
        rf.tx = &tx;
        rf.max_latents = (size_t)max_latents;
    }
    if (!out) { join_path(outbuf, pos[0], "report.html"); out = outbuf; }
    write_report(out, pos[0], have_run ? &run : NULL, have_metrics ? &mt : NULL, m, data ? &rf : NULL, data ? data : "");
    fprintf(stderr, "%s: wrote %s (%.2f MB): %zu logged steps, %s\n", g_cmd, out, (double)file_size(out) / 1e6, have_metrics ? mt.n : 0,
            data ? "feature browser included" : "no feature browser");
    if (have_metrics) metrics_free(&mt);
    if (have_run) jfree(&run);
    texts_free(&tx);
    scan_free(&s);
    if (ds) lsae_dataset_close(ds);
    lsae_model_free(m);
    return 0;
}

/* ================================================================ train */

/* A run id like wandb's (8 characters of [0-9a-z]), as in latent-sae's
   directory names sae_<k>_<expansion>.<run id>. */
static void make_run_id(char *out)
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    struct timespec ts;
    uint64_t s;
    int i;
    clock_gettime(CLOCK_REALTIME, &ts);
    s = ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 40);
    for (i = 0; i < 8; ++i) out[i] = digits[splitmix(&s) % 36];
    out[8] = 0;
}

static const char *schedule_name(lsae_lr_schedule s)
{
    return s == LSAE_LR_COSINE ? "cosine" : s == LSAE_LR_CONSTANT ? "constant" : "linear";
}

/* What a training run needs beyond lsae_config: its data, its place on disk
   and its counters. */
typedef struct run_state {
    const char *dir;
    char ck[PATH_CAP];          /* dir/checkpoint */
    lsae_model *m;
    lsae_trainer *tr;
    lsae_loader *ld;
    uint64_t samples;           /* training rows used, over all sessions */
    uint64_t batches_skipped;   /* batches the trainer refused (no variance) */
    double elapsed_prev;        /* seconds of the sessions before this one */
    double t_start;
    FILE *metrics;
    uint64_t saved_step;
    int saved_any;
} run_state;

static void save_checkpoint(run_state *rs)
{
    char blob[512];
    lsae_loader_stats ls;
    lsae_result r;
    int w;
    lsae_loader_get_stats(rs->ld, &ls);
    /* the caller blob: where the data stood, and the counters a resumed run continues */
    w = snprintf(blob, sizeof blob,
                 "{\"rows_read\": %llu, \"samples\": %llu, \"batches_skipped\": %llu, \"rows_dropped\": %llu, \"elapsed_s\": %.3f}",
                 (unsigned long long)ls.rows_read, (unsigned long long)rs->samples, (unsigned long long)rs->batches_skipped,
                 (unsigned long long)ls.rows_dropped, rs->elapsed_prev + (now_s() - rs->t_start));
    if (w < 0 || (size_t)w >= sizeof blob) fail("internal: checkpoint blob too long");
    /* metrics first, so the log always reaches at least the checkpoint's step */
    if (fflush(rs->metrics) != 0 || fsync(fileno(rs->metrics)) != 0) fail("%s/metrics.jsonl: write failed: %s", rs->dir, strerror(errno));
    if ((r = lsae_checkpoint_save(rs->ck, rs->m, rs->tr, blob, (size_t)w)) != LSAE_OK) lib_fail(r, "saving the checkpoint");
    if ((r = lsae_model_save(rs->m, rs->dir)) != LSAE_OK) lib_fail(r, "saving the model");
    rs->saved_step = lsae_trainer_steps_done(rs->tr);
    rs->saved_any = 1;
}

/* Keep the lines of metrics.jsonl up to `step`: a run resumed from an older
   checkpoint redoes the steps after it, and its curves must not hold them twice. */
static void metrics_truncate(const char *path, uint64_t step)
{
    size_t len;
    char *text = read_file(path, &len), *p, *end;
    afile af;
    FILE *f;
    if (!text) return;
    f = af_open(&af, path);
    for (p = text; p < text + len; p = end + 1) {
        jval v;
        const char *err;
        size_t at;
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        end = nl ? nl : text + len;
        if (!nl || end == p) continue; /* a torn last line goes */
        if (!jparse(p, (size_t)(end - p), &v, &err, &at)) continue;
        if (jnum(&v, "step", 0) <= (double)step) fwrite(p, 1, (size_t)(end - p) + 1, f);
        jfree(&v);
    }
    free(text);
    af_commit(&af);
}

static int cmd_train(int argc, char **argv)
{
    const char *usage = "lsae train --data PATH [options]";
    const char *about = "Train a TopK sparse autoencoder on embeddings, as latent-sae's train_local.py does (the flags "
                        "carry the same names). The run goes into --out: the model (cfg.json + sae.safetensors, "
                        "loadable by latent-sae and sparsify), checkpoint/ for --resume, run.json and metrics.jsonl. "
                        "On a terminal one live line shows progress; otherwise a plain line every --log-every steps. "
                        "Ctrl-C finishes the current optimizer step, saves a checkpoint and exits.";
    const char *data = NULL, *texts_path = NULL, *out = NULL, *resume = NULL, *init = NULL, *sched = "linear", *device = "default", *precision = NULL;
    uint64_t k = 32, expansion = 32, num_latents = 0, batch = 512, grad_acc = 1, warmup = 1000, dead_thr = 10000000, epochs = 1,
             max_samples = 0, save_every = 1000, seed = 0, log_every = 0;
    double lr = 0, auxk_alpha = 1.0 / 32.0;
    int multi_topk = 0, no_norm = 0, no_shuffle = 0, threads = 0;
    data_args da;
    opt o[] = {
        OPT_GROUP("data"),
        OPT("--data", NULL, O_STR, &data, "PATH", NULL, "embeddings: .npy (float32/float16), .safetensors, .pt, a raw dump, or a directory of shards (data-*.npy) read as one; required unless --resume"),
        OPT("--texts", NULL, O_STR, &texts_path, "FILE", NULL, "the text of each row (one line per row), recorded for lsae report and features"),
        OPT("--epochs", NULL, O_U64, &epochs, "N", "1", "passes over the data"),
        OPT("--max-samples", NULL, O_U64, &max_samples, "N", "0 = no limit", "stop after N rows in all (across epochs)"),
        OPT("--no-shuffle", NULL, O_FLAG, &no_shuffle, NULL, NULL, "read rows in file order (default: shards and rows shuffled by --seed)"),
        DATA_OPT_ROWS(da),
        OPT_GROUP("model"),
        OPT("--k", NULL, O_U64, &k, "N", "32", "active latents per row"),
        OPT("--expansion-factor", NULL, O_U64, &expansion, "N", "32", "latents = d_in x N"),
        OPT("--num-latents", NULL, O_U64, &num_latents, "N", "0 = d_in x expansion factor", "the number of latents, directly"),
        OPT("--multi-topk", NULL, O_FLAG, &multi_topk, NULL, NULL, "also train the top 4k latents to reconstruct (adds fvu(4k)/8 to the loss)"),
        OPT("--no-normalize-decoder", NULL, O_FLAG, &no_norm, NULL, NULL, "let decoder rows have any norm (default: unit rows)"),
        OPT("--init", NULL, O_STR, &init, "MODEL", NULL, "start from a saved model (a directory or hf:OWNER/NAME/SUBFOLDER) and keep its b_dec, like sparsify's --finetune; Adam starts fresh"),
        OPT_GROUP("training"),
        OPT("--batch-size", NULL, O_U64, &batch, "N", "512", "rows per batch"),
        OPT("--grad-acc-steps", NULL, O_U64, &grad_acc, "N", "1", "batches per optimizer step"),
        OPT("--lr", NULL, O_DBL, &lr, "X", "automatic: 2e-4 / sqrt(latents / 2^14)", "peak learning rate"),
        OPT("--lr-warmup-steps", NULL, O_U64, &warmup, "N", "1000", "optimizer steps of linear warm-up"),
        OPT("--lr-schedule", NULL, O_STR, &sched, "S", "linear", "after warm-up: linear (to 0 at the last step), cosine, or constant"),
        OPT("--auxk-alpha", NULL, O_DBL, &auxk_alpha, "X", "0.03125 = 1/32", "weight of the AuxK loss that revives dead latents; 0 turns it off"),
        OPT("--dead-feature-threshold", NULL, O_U64, &dead_thr, "N", "10000000", "a latent is dead after N training rows outside every top-k"),
        OPT("--seed", NULL, O_U64, &seed, "N", "0", "seed of the initial weights and of the data order"),
        OPT_GROUP("output and running"),
        OPT("--out", "-o", O_STR, &out, "DIR", "checkpoints/sae_<k>_<expansion>.<run id>", "the run directory"),
        OPT("--save-every", NULL, O_U64, &save_every, "N", "1000", "save a checkpoint every N optimizer steps (0: only at the end)"),
        OPT("--resume", NULL, O_STR, &resume, "DIR", NULL, "continue the run in DIR from its checkpoint, with its settings and data order"),
        OPT("--log-every", NULL, O_U64, &log_every, "N", "0 = about every 10 s", "without a terminal, print a line every N optimizer steps"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores, as OpenMP decides", "threads for training"),
        OPT("--device", NULL, O_STR, &device, "D", "cuda when built with LATENTSAE_CUDA and a GPU answers, else cpu", "cpu or cuda"),
        OPT("--precision", NULL, O_STR, &precision, "P", "tf32 on CUDA, fp32 on the CPU", "the encoder product's arithmetic on CUDA: fp32, tf32 or bf16"),
    };
    const size_t no = sizeof o / sizeof o[0];
    char *pos[1], run_id[16], outbuf[PATH_CAP], path[PATH_CAP], data_abs[PATH_CAP], texts_abs[PATH_CAP], init_where[PATH_CAP];
    jval run;
    int have_run = 0;
    lsae_config cfg;
    lsae_lr_schedule schedule;
    lsae_device dev;
    lsae_dataset *ds;
    lsae_loader_options lo;
    lsae_loader_stats ls;
    lsae_step_stats st;
    lsae_result r;
    run_state rs;
    size_t d, L;
    uint64_t rows, S, total_rows, batches_planned, step, step0, samples0, win_batches = 0, win_rows = 0, rows_read0 = 0;
    double win_fvu = 0, win_auxk = 0, win_mtk = 0, win_loss = 0, ema = NAN, t_last_line, t_last_metric, t_last_live = 0;
    double last_fvu[20];
    size_t n_last = 0;
    const float *xb;
    size_t nrows;
    int stopped = 0, warned_batch = 0;
    texts tx;

    memset(&da, 0, sizeof da);
    memset(&st, 0, sizeof st);
    if (parse_args(argc, argv, o, no, usage, about, pos, 0) != 0) usage_fail("lsae train takes no positional arguments");
    if (resume && init) usage_fail("--resume continues a run; --init starts a new one from a model: give one");
    if (!resume && !data) usage_fail("give the embeddings with --data PATH");
    if (resume) {
        /* a resumed run is the same run: only where and how fast it runs may change */
        static const char *may_change[] = { "--resume", "--data", "--texts", "--threads", "--device", "--precision", "--save-every", "--log-every",
                                            "--format", "--tensor", "--raw-dtype", "--d-in", NULL };
        size_t i, j;
        for (i = 0; i < no; ++i) {
            int ok = 0;
            if (!o[i].name || !o[i].seen) continue;
            for (j = 0; may_change[j]; ++j) ok |= !strcmp(may_change[j], o[i].name);
            if (!ok) usage_fail("%s cannot change when resuming: the run keeps the settings in %s/run.json", o[i].name, resume);
        }
        if (!is_dir(resume)) fail("%s: no such run directory", resume);
        join_path(path, resume, "run.json");
        if (!(have_run = jload(path, &run))) fail("%s: no run.json here; --resume takes a directory written by lsae train", resume);
        join_path(path, resume, "checkpoint");
        {
            /* a save cut between its two renames leaves the checkpoint whole
               at checkpoint.tmp or checkpoint.old, where lsae_checkpoint_load finds it */
            char tmp[PATH_CAP + 8], old[PATH_CAP + 8];
            snprintf(tmp, sizeof tmp, "%s.tmp", path);
            snprintf(old, sizeof old, "%s.old", path);
            if (!is_dir(path) && !is_dir(tmp) && !is_dir(old))
                fail("%s: no checkpoint/ here (the run stopped before its first save); start it again", resume);
        }
        k = (uint64_t)jnum(&run, "k", 0);
        expansion = (uint64_t)jnum(&run, "expansion_factor", 0);
        num_latents = (uint64_t)jnum(&run, "num_latents", 0);
        multi_topk = (int)jnum(&run, "multi_topk", 0);
        no_norm = !(int)jnum(&run, "normalize_decoder", 1);
        batch = (uint64_t)jnum(&run, "batch_size", 0);
        grad_acc = (uint64_t)jnum(&run, "grad_acc_steps", 1);
        lr = jnum(&run, "lr", 0);
        warmup = (uint64_t)jnum(&run, "lr_warmup_steps", 0);
        sched = jstr(&run, "lr_schedule") ? jstr(&run, "lr_schedule") : "linear";
        auxk_alpha = jnum(&run, "auxk_alpha", 0);
        dead_thr = (uint64_t)jnum(&run, "dead_feature_threshold", 0);
        epochs = (uint64_t)jnum(&run, "epochs", 1);
        max_samples = (uint64_t)jnum(&run, "max_samples", 0);
        no_shuffle = !(int)jnum(&run, "shuffle", 1);
        seed = jstr(&run, "seed") ? strtoull(jstr(&run, "seed"), NULL, 10) : 0;
        if (!opt_seen(o, no, "--save-every")) save_every = (uint64_t)jnum(&run, "save_every", 1000);
        if (!data) data = jstr(&run, "data");
        if (!texts_path && !opt_seen(o, no, "--data")) texts_path = jstr(&run, "texts");
        data_args_from_run(&da, o, no, &run);
        if (!data) fail("%s/run.json names no data; give --data", resume);
        out = resume;
        snprintf(run_id, sizeof run_id, "%s", jstr(&run, "run_id") ? jstr(&run, "run_id") : "?");
    } else {
        make_run_id(run_id);
    }
    if (!strcmp(sched, "linear")) schedule = LSAE_LR_LINEAR;
    else if (!strcmp(sched, "cosine")) schedule = LSAE_LR_COSINE;
    else if (!strcmp(sched, "constant")) schedule = LSAE_LR_CONSTANT;
    else usage_fail("--lr-schedule must be linear, cosine or constant, not '%s'", sched);
    dev = parse_device(device);
    if (dev == LSAE_DEVICE_CUDA && (r = lsae_backend_available(LSAE_DEVICE_CUDA)) != LSAE_OK) lib_fail(r, "--device cuda");
    if (batch < 2) usage_fail("--batch-size must be at least 2 (fvu needs the variance of a batch)");
    if (grad_acc < 1) usage_fail("--grad-acc-steps must be at least 1");
    if (epochs < 1) usage_fail("--epochs must be at least 1");
    if (k < 1) usage_fail("--k must be at least 1");
    if (lr < 0) usage_fail("--lr must be >= 0 (0 picks it automatically)");
    if (auxk_alpha < 0) usage_fail("--auxk-alpha must be >= 0");
    if (threads < 0) usage_fail("--threads must be >= 0");
    if (!resume && opt_seen(o, no, "--num-latents") && opt_seen(o, no, "--expansion-factor"))
        usage_fail("give --expansion-factor or --num-latents, not both");

    /* the data */
    ds = open_data(data, &da);
    d = lsae_dataset_d_in(ds);
    rows = lsae_dataset_rows(ds);
    if (have_run && ((uint64_t)jnum(&run, "rows", 0) != rows || (size_t)jnum(&run, "d_in", 0) != d))
        fail("%s has %llu rows of %zu, but the run was trained on %.0f rows of %.0f: resume needs the same data", data,
             (unsigned long long)rows, d, jnum(&run, "rows", 0), jnum(&run, "d_in", 0));
    texts_load(&tx, texts_path, rows); /* checked now, not after an hour of training */
    texts_free(&tx);
    abs_path(data, data_abs);
    if (texts_path) abs_path(texts_path, texts_abs);

    /* the model's config */
    cfg = lsae_config_default(d);
    cfg.k = (size_t)k;
    cfg.expansion_factor = (size_t)expansion;
    cfg.num_latents = (size_t)num_latents;
    cfg.multi_topk = multi_topk;
    cfg.normalize_decoder = !no_norm;
    cfg.auxk_alpha = auxk_alpha;
    cfg.dead_feature_threshold = dead_thr;
    cfg.lr = lr;
    cfg.lr_warmup_steps = warmup;
    cfg.lr_schedule = schedule;
    cfg.grad_acc_steps = grad_acc;
    cfg.seed = seed;
    cfg.num_threads = threads;
    cfg.device = dev;
    cfg.precision = parse_precision(precision);
    memset(&rs, 0, sizeof rs);
    if (init) {
        /* --init: the saved model's shape and weights; b_dec kept (no geometric median) */
        lsae_model *m0 = open_model(init, init_where);
        const lsae_config *c0 = lsae_model_config(m0);
        size_t L0 = lsae_model_num_latents(m0);
        if (lsae_model_d_in(m0) != d) fail("--init %s expects d_in %zu, but %s has rows of %zu", init, lsae_model_d_in(m0), data, d);
        if (opt_seen(o, no, "--k") && k != lsae_model_k(m0)) usage_fail("--k %llu differs from the k %zu of --init %s", (unsigned long long)k, lsae_model_k(m0), init);
        if ((opt_seen(o, no, "--num-latents") && num_latents != L0) || (opt_seen(o, no, "--expansion-factor") && expansion * d != L0))
            usage_fail("the number of latents differs from the %zu of --init %s", L0, init);
        cfg.k = lsae_model_k(m0);
        cfg.num_latents = L0;
        cfg.expansion_factor = L0 % d == 0 ? L0 / d : 0;
        cfg.normalize_decoder = c0->normalize_decoder && !no_norm;
        cfg.multi_topk = c0->multi_topk || multi_topk;
        cfg.init_b_dec = 0;
        if ((r = lsae_config_validate(&cfg)) != LSAE_OK) lib_fail(r, NULL);
        if ((r = lsae_model_create(&cfg, NULL, &rs.m)) != LSAE_OK) lib_fail(r, NULL);
        {
            float *We = (float *)xmalloc(L0 * d * sizeof(float)), *Wd = (float *)xmalloc(L0 * d * sizeof(float));
            float *be = (float *)xmalloc(L0 * sizeof(float)), *bd = (float *)xmalloc(d * sizeof(float));
            lsae_model_get_weights(m0, We, be, Wd, bd);
            if ((r = lsae_model_set_weights(rs.m, We, be, Wd, bd)) != LSAE_OK) lib_fail(r, "--init");
            free(We); free(Wd); free(be); free(bd);
        }
        lsae_model_free(m0);
    } else {
        if ((r = lsae_config_validate(&cfg)) != LSAE_OK) lib_fail(r, NULL);
    }
    L = lsae_config_num_latents(&cfg);

    /* the run's length in optimizer steps: full batches in each epoch (the
       loader drops a short last batch), the max-samples cap counted in rows */
    if (epochs > UINT64_MAX / rows) usage_fail("--epochs %llu is too many", (unsigned long long)epochs);
    total_rows = rows * epochs;
    if (max_samples && max_samples < total_rows) total_rows = max_samples;
    batches_planned = (total_rows / rows) * (rows / batch) + (total_rows % rows) / batch;
    S = have_run ? (uint64_t)jnum(&run, "total_steps", 0) : batches_planned / grad_acc;
    if (S == 0)
        fail("%llu rows give %llu full batches of %llu, less than one optimizer step of %llu batches: lower --batch-size "
             "or --grad-acc-steps, or raise --epochs", (unsigned long long)total_rows, (unsigned long long)batches_planned,
             (unsigned long long)batch, (unsigned long long)grad_acc);
    cfg.total_steps = S;

    /* the run directory */
    if (!out) {
        if (L % d == 0) snprintf(outbuf, sizeof outbuf, "checkpoints/sae_%llu_%zu.%s", (unsigned long long)cfg.k, L / d, run_id);
        else snprintf(outbuf, sizeof outbuf, "checkpoints/sae_%llu_L%zu.%s", (unsigned long long)cfg.k, L, run_id);
        out = outbuf;
    }
    if (!resume) {
        /* a directory with a model or a checkpoint is a run to keep; one with
           only run.json was stopped before its first save and may start over */
        static const char *marks[] = { "cfg.json", "sae.safetensors", "checkpoint", NULL };
        int i;
        for (i = 0; marks[i]; ++i) {
            join_path(path, out, marks[i]);
            if (exists(path)) fail("%s already holds a run (%s): continue it with --resume %s, or choose another --out", out, marks[i], out);
        }
        if (exists(out) && !is_dir(out)) fail("%s exists and is not a directory", out);
        make_dirs(out);
    }
    rs.dir = out;
    join_path(rs.ck, out, "checkpoint");

    /* model and trainer */
    if (!rs.m && (r = lsae_model_create(&cfg, NULL, &rs.m)) != LSAE_OK) lib_fail(r, NULL);
    if ((r = lsae_trainer_create(rs.m, &cfg, &rs.tr)) != LSAE_OK) lib_fail(r, NULL);
    if (resume) {
        char blob[1024];
        size_t blen = 0;
        jval b;
        const char *err;
        size_t at;
        if ((r = lsae_checkpoint_load(rs.ck, rs.m, rs.tr, blob, sizeof blob - 1, &blen)) != LSAE_OK) lib_fail(r, "resuming");
        if (blen >= sizeof blob) fail("%s: checkpoint blob of %zu bytes is not one lsae train wrote", rs.ck, blen);
        blob[blen] = 0;
        if (!jparse(blob, blen, &b, &err, &at)) fail("%s: checkpoint blob is not lsae train's (%s)", rs.ck, err);
        rows_read0 = (uint64_t)jnum(&b, "rows_read", 0);
        rs.samples = (uint64_t)jnum(&b, "samples", 0);
        rs.batches_skipped = (uint64_t)jnum(&b, "batches_skipped", 0);
        rs.elapsed_prev = jnum(&b, "elapsed_s", 0);
        jfree(&b);
    }
    lo = lsae_loader_options_default((size_t)batch);
    lo.shuffle = !no_shuffle;
    lo.seed = seed;
    lo.epochs = epochs;
    lo.max_rows = max_samples;
    lo.drop_last = 1;
    if ((r = lsae_loader_create(ds, &lo, &rs.ld)) != LSAE_OK) lib_fail(r, NULL);
    if (resume && rows_read0 && (r = lsae_loader_seek(rs.ld, rows_read0)) != LSAE_OK) lib_fail(r, "resuming the data position");

    /* run.json: everything a resume or a report needs to know */
    if (!resume) {
        afile af;
        FILE *f;
        join_path(path, out, "run.json");
        f = af_open(&af, path);
        fprintf(f, "{\n  \"run_id\": \"%s\",\n  \"lsae_version\": \"%s\",\n  \"data\": ", run_id, lsae_version_string());
        json_str(f, data_abs);
        fprintf(f, ",\n  \"texts\": ");
        if (texts_path) json_str(f, texts_abs); else fputs("null", f);
        fprintf(f, ",\n  \"format\": ");
        if (da.format) json_str(f, da.format); else fputs("null", f);
        fprintf(f, ",\n  \"tensor\": ");
        if (da.tensor) json_str(f, da.tensor); else fputs("null", f);
        fprintf(f, ",\n  \"raw_dtype\": ");
        if (da.raw_dtype) json_str(f, da.raw_dtype); else fputs("null", f);
        fprintf(f, ",\n  \"d_in_arg\": %llu,\n  \"rows\": %llu,\n  \"d_in\": %zu,\n", (unsigned long long)da.d_in, (unsigned long long)rows, d);
        fprintf(f, "  \"k\": %zu,\n  \"num_latents\": %zu,\n  \"expansion_factor\": %zu,\n  \"multi_topk\": %s,\n  \"normalize_decoder\": %s,\n",
                cfg.k, L, L % d == 0 ? L / d : 0, cfg.multi_topk ? "true" : "false", cfg.normalize_decoder ? "true" : "false");
        fprintf(f, "  \"batch_size\": %llu,\n  \"grad_acc_steps\": %llu,\n  \"lr\": %.9g,\n  \"lr_auto\": %s,\n  \"lr_warmup_steps\": %llu,\n",
                (unsigned long long)batch, (unsigned long long)grad_acc, lsae_config_lr(&cfg), lr > 0 ? "false" : "true", (unsigned long long)warmup);
        fprintf(f, "  \"lr_schedule\": \"%s\",\n  \"auxk_alpha\": %.9g,\n  \"dead_feature_threshold\": %llu,\n", schedule_name(schedule), auxk_alpha,
                (unsigned long long)dead_thr);
        fprintf(f, "  \"epochs\": %llu,\n  \"max_samples\": %llu,\n  \"shuffle\": %s,\n  \"seed\": \"%llu\",\n  \"total_steps\": %llu,\n",
                (unsigned long long)epochs, (unsigned long long)max_samples, no_shuffle ? "false" : "true", (unsigned long long)seed,
                (unsigned long long)S);
        fprintf(f, "  \"save_every\": %llu,\n  \"init\": ", (unsigned long long)save_every);
        if (init) json_str(f, init_where); else fputs("null", f);
        fprintf(f, "\n}\n");
        af_commit(&af);
    }
    join_path(path, out, "metrics.jsonl");
    if (resume) metrics_truncate(path, lsae_trainer_steps_done(rs.tr));
    rs.metrics = fopen(path, resume ? "ab" : "wb");
    if (!rs.metrics) fail("%s: cannot write: %s", path, strerror(errno));

    step = step0 = lsae_trainer_steps_done(rs.tr);
    samples0 = rs.samples;
    fprintf(stderr, "%s: %s %llu rows x %zu from %s\n", g_cmd, resume ? "resuming on" : "training on", (unsigned long long)rows, d, data);
    fprintf(stderr, "  model     %zu latents (%s%zu), k %zu%s -> %s\n", L, L % d == 0 ? "expansion " : "", L % d == 0 ? L / d : L, cfg.k,
            cfg.multi_topk ? ", multi-topk" : "", out);
    fprintf(stderr, "  training  %llu optimizer steps%s: batch %llu x grad-acc %llu, %llu epoch%s%s\n", (unsigned long long)S,
            resume ? "" : "", (unsigned long long)batch, (unsigned long long)grad_acc, (unsigned long long)epochs, epochs == 1 ? "" : "s",
            max_samples ? ", capped by --max-samples" : "");
    fprintf(stderr, "  lr        %.3g%s, %s after %llu warm-up steps; auxk-alpha %g, dead after %llu samples; seed %llu\n",
            lsae_config_lr(&cfg), lr > 0 ? "" : " (automatic)", schedule_name(schedule), (unsigned long long)warmup, auxk_alpha,
            (unsigned long long)dead_thr, (unsigned long long)seed);
    if (resume) fprintf(stderr, "  resuming  from step %llu of %llu (%llu samples seen)\n", (unsigned long long)step0, (unsigned long long)S, (unsigned long long)samples0);
    if (warmup >= S && schedule != LSAE_LR_CONSTANT)
        warn("note: --lr-warmup-steps %llu is not below the run's %llu optimizer steps, so the learning rate only warms up; try --lr-warmup-steps %llu",
             (unsigned long long)warmup, (unsigned long long)S, (unsigned long long)(S / 10 ? S / 10 : 1));

    catch_signals();
    rs.t_start = now_s();
    t_last_line = t_last_metric = rs.t_start;
    while (step < S) {
        if (g_stop && win_batches == 0) { stopped = 1; break; }
        if ((r = lsae_loader_next(rs.ld, &xb, &nrows)) != LSAE_OK) lib_fail(r, "reading the data");
        if (nrows == 0) break;
        r = lsae_trainer_step(rs.tr, xb, nrows, &st);
        if (r == LSAE_BAD_BATCH) {
            /* nothing changed in the model: skip the batch, say so once */
            rs.batches_skipped++;
            if (!warned_batch) warn("skipping a batch: %s", lsae_last_error());
            warned_batch = 1;
            continue;
        }
        if (r == LSAE_NOT_FINITE) {
            if (!rs.saved_any && !resume) fail("%s; no checkpoint was saved yet: start again with a lower --lr", lsae_last_error());
            /* --resume keeps run.json's --lr and replays the same steps to the same
               NaN, so the library's "lower the learning rate and resume" is, in lsae,
               a new run; say so, or the two pieces of advice read as contradicting */
            fail("%s; the last good checkpoint (step %llu) is in %s, untouched; --resume keeps this run's --lr and would stop here again, "
                 "so start a new run with a lower --lr and another --out (--init %s starts it from those weights)",
                 lsae_last_error(), (unsigned long long)(rs.saved_any ? rs.saved_step : step0), rs.ck, rs.ck);
        }
        if (r != LSAE_OK) lib_fail(r, "training");
        win_batches++;
        win_rows += st.rows_used;
        win_fvu += st.fvu;
        win_auxk += st.auxk;
        win_mtk += st.multi_topk_fvu;
        win_loss += st.loss;
        if (!st.stepped) continue;
        {
            double t = now_s(), fvu = win_fvu / (double)win_batches, sps = (double)win_rows / (t - t_last_metric + 1e-12);
            double elapsed = rs.elapsed_prev + (t - rs.t_start), rate;
            step = st.step;
            rs.samples += win_rows;
            lsae_loader_get_stats(rs.ld, &ls);
            fprintf(rs.metrics,
                    "{\"step\": %llu, \"epoch\": %llu, \"samples\": %llu, \"fvu\": %.6g, \"auxk\": %.6g, \"multi_topk_fvu\": %.6g, "
                    "\"loss\": %.6g, \"dead_pct\": %.4g, \"n_dead\": %zu, \"lr\": %.6g, \"grad_norm\": %.6g, \"samples_per_s\": %.1f, "
                    "\"elapsed_s\": %.3f}\n",
                    (unsigned long long)step, (unsigned long long)ls.epoch, (unsigned long long)rs.samples, fvu,
                    win_auxk / (double)win_batches, win_mtk / (double)win_batches, win_loss / (double)win_batches,
                    100.0 * st.dead_fraction, st.n_dead, st.lr, st.grad_norm, sps, elapsed);
            fflush(rs.metrics);
            t_last_metric = t;
            ema = isnan(ema) ? fvu : 0.9 * ema + 0.1 * fvu;
            last_fvu[n_last++ % 20] = fvu;
            win_batches = win_rows = 0;
            win_fvu = win_auxk = win_mtk = win_loss = 0;
            rate = (double)(rs.samples - samples0) / (t - rs.t_start + 1e-12);
            {
                double eta = (double)(S - step) * (t - rs.t_start) / (double)(step - step0);
                char etab[32];
                fmt_duration(etab, sizeof etab, eta);
                if (g_live) {
                    if (t - t_last_live >= 0.1 || step == S) {
                        int filled = (int)(20.0 * (double)step / (double)S), i;
                        fprintf(stderr, "\r\033[Kstep %llu/%llu [", (unsigned long long)step, (unsigned long long)S);
                        for (i = 0; i < 20; ++i) fputc(i < filled ? '=' : ' ', stderr);
                        fprintf(stderr, "] %3.0f%%  %.0f samples/s  ETA %s  fvu %.4f  dead %.1f%%  lr %.2e", 100.0 * (double)step / (double)S,
                                rate, etab, ema, 100.0 * st.dead_fraction, st.lr);
                        fflush(stderr);
                        g_live_drawn = 1;
                        t_last_live = t;
                    }
                } else if ((log_every ? step % log_every == 0 : t - t_last_line >= 10.0) || step == step0 + 1 || step == S) {
                    fprintf(stderr, "step %llu/%llu (%.0f%%)  samples %llu  %.0f samples/s  ETA %s  fvu %.4f  auxk %.4g  dead %.2f%%  lr %.3g\n",
                            (unsigned long long)step, (unsigned long long)S, 100.0 * (double)step / (double)S, (unsigned long long)rs.samples,
                            rate, etab, fvu, st.auxk, 100.0 * st.dead_fraction, st.lr);
                    t_last_line = t;
                }
            }
        }
        if (save_every && step % save_every == 0 && step < S) {
            save_checkpoint(&rs);
            if (!g_live) fprintf(stderr, "saved checkpoint at step %llu\n", (unsigned long long)step);
        }
    }
    if (!stopped && win_batches > 0) {
        /* the data ended inside an accumulation window: use what was gathered */
        if ((r = lsae_trainer_apply(rs.tr, &st)) != LSAE_OK) lib_fail(r, "training");
        rs.samples += win_rows;
        step = st.step;
    }
    save_checkpoint(&rs);
    live_clear();
    {
        double t = now_s() - rs.t_start, fvu_last = 0;
        size_t i, nl = n_last < 20 ? n_last : 20;
        char dur[32];
        for (i = 0; i < nl; ++i) fvu_last += last_fvu[i];
        fvu_last = nl ? fvu_last / (double)nl : NAN;
        fmt_duration(dur, sizeof dur, t);
        if (stopped) {
            printf("interrupted at step %llu of %llu; checkpoint saved\n", (unsigned long long)step, (unsigned long long)S);
            printf("continue with: %s --resume %s\n", g_cmd, out);
        } else {
            printf("done: %llu optimizer steps in %s, %llu samples this session (%.0f samples/s)\n", (unsigned long long)(step - step0), dur,
                   (unsigned long long)(rs.samples - samples0), (double)(rs.samples - samples0) / (t + 1e-12));
        }
        /* st is only set when this session ran a step (a resumed run may have none left) */
        if (nl) printf("final fvu %.4f (mean of the last %zu steps), dead latents %.2f%% (%zu of %zu)\n", fvu_last, nl, 100.0 * st.dead_fraction, st.n_dead, L);
        if (rs.batches_skipped) printf("skipped %llu batches the trainer refused (no variance)\n", (unsigned long long)rs.batches_skipped);
        lsae_loader_get_stats(rs.ld, &ls);
        if (ls.rows_dropped) printf("dropped %llu rows holding NaN or Inf\n", (unsigned long long)ls.rows_dropped);
        printf("model:   %s (cfg.json + sae.safetensors; checkpoint/ for --resume)\n", out);
        printf("metrics: %s/metrics.jsonl; see them with: lsae report %s\n", out, out);
    }
    fclose(rs.metrics);
    lsae_loader_free(rs.ld);
    lsae_trainer_free(rs.tr);
    lsae_model_free(rs.m);
    lsae_dataset_close(ds);
    if (have_run) jfree(&run);
    return stopped ? 130 : 0;
}

/* ================================================================= main */

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *about;
} command;

static const command commands[] = {
    { "train", cmd_train, "train a TopK sparse autoencoder on embeddings" },
    { "encode", cmd_encode, "top-k latent indices and activations of every row" },
    { "eval", cmd_eval, "fvu, MSE, L0, dead latents and fire rates of a model on embeddings" },
    { "info", cmd_info, "a model's config, tensors, norms and checksum" },
    { "features", cmd_features, "the rows each latent is most active on, with their texts" },
    { "report", cmd_report, "one self-contained HTML page: training curves and a feature browser" },
};

static void print_usage(FILE *f)
{
    size_t i;
    fprintf(f, "usage: lsae COMMAND [options]   (lsae COMMAND --help for its flags)\n\n"
               "TopK sparse autoencoders for embedding vectors (latentsae %s).\n\ncommands:\n", lsae_version_string());
    for (i = 0; i < sizeof commands / sizeof commands[0]; ++i) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].about);
    fprintf(f, "\nexample:\n  lsae train --data embeddings/ --batch-size 512 --grad-acc-steps 4 --k 64 --expansion-factor 128\n"
               "  lsae features checkpoints/sae_64_128.<id> embeddings/ --texts texts.txt --sample 10\n");
}

/* OpenMP threads that spin at a barrier lose whole time slices when another
   process shares the cores: on 2 cores with one busy neighbour, training the
   demo ran 4.3x slower with libgomp's default policy than with passive
   waiting (9.9k vs 32k samples/s), while on an idle machine passive costs
   about 15%. Shared machines are the common case, so passive is the default
   here; OMP_WAIT_POLICY=active in the environment takes it back. libgomp
   reads the policy when it loads, before main, hence the one re-exec. */
static void prefer_passive_openmp(char **argv)
{
#if defined(_OPENMP) && defined(__linux__)
    if (getenv("OMP_WAIT_POLICY") || getenv("LSAE_REEXECED")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0 || setenv("LSAE_REEXECED", "1", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc?): go on with the default policy */
    unsetenv("OMP_WAIT_POLICY");
#else
    (void)argv;
#endif
}

int main(int argc, char **argv)
{
    size_t i;
    prefer_passive_openmp(argv);
    g_live = isatty(fileno(stderr));
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || (!strcmp(argv[1], "help") && argc == 2)) {
        print_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("lsae (latentsae) %s\n", lsae_version_string());
        return 0;
    }
    if (!strcmp(argv[1], "help")) {
        char *h[2];
        h[0] = argv[2];
        h[1] = (char *)"--help";
        for (i = 0; i < sizeof commands / sizeof commands[0]; ++i)
            if (!strcmp(commands[i].name, argv[2])) {
                snprintf(g_cmd, sizeof g_cmd, "lsae %s", commands[i].name);
                return commands[i].run(1, h + 1);
            }
    }
    for (i = 0; i < sizeof commands / sizeof commands[0]; ++i)
        if (!strcmp(commands[i].name, argv[1])) {
            snprintf(g_cmd, sizeof g_cmd, "lsae %s", commands[i].name);
            return commands[i].run(argc - 2, argv + 2);
        }
    fprintf(stderr, "lsae: unknown command '%s' (commands: train, encode, eval, info, features, report; see lsae --help)\n", argv[1]);
    return 2;
}
