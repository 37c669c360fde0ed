/* util.c - lsae's messages, memory, paths, output files and JSON.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

/* ================================================================ errors */

/* The output files in flight: removed on failure so nothing half-written stays. */
#define MAX_OUT_FILES 8
static out_file *g_out[MAX_OUT_FILES];

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
    for (i = 0; i < MAX_OUT_FILES; ++i)
        if (g_out[i]) {
            lsae__afile_abort(&g_out[i]->af);
            g_out[i] = NULL;
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
    fprintf(stderr, "%s%s: %s\n", g_cmd, g_who, buf);
}

static NORETURN void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
    remove_tmp_files();
    dist_exit_failed(1);
}

/* A bad command line: exit 2, pointing at --help. */
static NORETURN void usage_fail(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    live_clear();
    fprintf(stderr, "%s%s: %s (see %s --help)\n", g_cmd, g_who, buf, g_cmd);
    remove_tmp_files();
    dist_exit_failed(2);
}

/* A library call failed: its own message says what and where. */
static NORETURN void lib_fail(lsae_result r, const char *context)
{
    const char *detail = lsae_last_error();
    if (!detail || !*detail) detail = lsae_result_string(r);
    if (context) fail("%s: %s", context, detail);
    fail("%s", detail);
}

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
#if defined(_WIN32)
    /* Ctrl-C arrives as SIGINT through the C runtime; there is no sigaction */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
#else
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
#endif
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
#if defined(_WIN32)
    return (double)clock() / CLOCKS_PER_SEC; /* wall time since start on Windows */
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
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

/* splitmix64: a seeded stream for --sample and run ids */
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

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* ================================================================ paths */

static void join_path(char *out, const char *dir, const char *name)
{
    size_t n = strlen(dir);
    int w = snprintf(out, PATH_CAP, (n && dir[n - 1] == '/') ? "%s%s" : "%s/%s", dir, name);
    if (w < 0 || w >= PATH_CAP) fail("path too long: %s/%s", dir, name);
}

#if defined(_WIN32)
/* the library's helpers, which take UTF-8 paths to the wide-character API */
static int is_dir(const char *p) { return lsae__is_dir(p); }
static int exists(const char *p) { return lsae__exists(p); }
static long long file_size(const char *p)
{
    FILE *f = lsae__fopen(p, "rb");
    uint64_t size;
    int ok;
    if (!f) return -1;
    ok = lsae__file_size(f, &size);
    fclose(f);
    return ok ? (long long)size : -1;
}
#define mkdir(path, mode) mkdir_utf8(path)
static int mkdir_utf8(const char *path)
{
    wchar_t w[LSAE__WPATH_CAP];
    return lsae__wpath(path, w, LSAE__WPATH_CAP) ? _wmkdir(w) : -1;
}
#else
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
#endif

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
#if defined(_WIN32)
    if (p[0] == '/' || p[0] == '\\' || (p[0] && p[1] == ':')) { /* \\server\share, C:\... */
#else
    if (p[0] == '/') {
#endif
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
    FILE *f = lsae__fopen(path, "rb");
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

/* ========================================================= output files */

static FILE *out_open(out_file *o, const char *path)
{
    lsae_result r;
    int i;
    for (i = 0; i < MAX_OUT_FILES && g_out[i]; ++i) {}
    if (i == MAX_OUT_FILES) fail("too many files open for writing at once");
    if ((r = lsae__afile_open(&o->af, path)) != LSAE_OK) {
        /* the library names its temporary file; the user named PATH, and
           errno still holds fopen's reason (the library only formatted its
           message since) */
        int e = errno;
        if (r == LSAE_IO_ERROR && e) fail("%s: cannot write: %s", path, strerror(e));
        lib_fail(r, NULL);
    }
    o->slot = i;
    g_out[i] = o;
    return o->af.f;
}

static void out_commit(out_file *o)
{
    lsae_result r;
    /* the commands write with fprintf, which the library's writer does not
       see: an error any of those writes met makes the commit fail */
    if (ferror(o->af.f) && !o->af.failed) {
        o->af.failed = 1;
        o->af.err = errno ? errno : EIO;
    }
    g_out[o->slot] = NULL; /* the commit closes the file and removes the temporary on failure */
    if ((r = lsae__afile_commit(&o->af)) != LSAE_OK) lib_fail(r, NULL);
}

/* ============================================================ JSON output */

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

static void json_num(FILE *f, double v)
{
    if (!isfinite(v)) fputs("null", f);
    else fprintf(f, "%.9g", v);
}

/* ============================================================= JSON input */

static int json_parse(json_doc *doc, const char *s, size_t n, const char **err)
{
    memset(doc, 0, sizeof *doc);
    if (lsae__json_parse(&doc->j, s, n, NULL) == LSAE_OK) return 1;
    *err = lsae_last_error();
    if (!strncmp(*err, "JSON: ", 6)) *err += 6; /* the caller's message already says JSON */
    return 0;
}

static int json_load(const char *path, json_doc *doc)
{
    size_t n;
    const char *err;
    char *text = read_file(path, &n);
    if (!text) {
        if (errno == ENOENT) return 0;
        fail("%s: cannot read: %s", path, strerror(errno));
    }
    if (!json_parse(doc, text, n, &err)) { free(text); fail("%s: not valid JSON (%s)", path, err); }
    doc->text = text;
    return 1;
}

static void json_doc_free(json_doc *doc)
{
    lsae__json_free(&doc->j);
    free(doc->text);
    memset(doc, 0, sizeof *doc);
}

/* A number; true and false count as 1 and 0. */
static double json_num_of(const json_doc *doc, size_t obj, const char *key, double def)
{
    size_t t = lsae__json_get(&doc->j, obj, key);
    double v;
    int b;
    if (!t) return def;
    if (lsae__json_double(&doc->j, t, &v)) return v;
    if (lsae__json_bool(&doc->j, t, &b)) return b;
    return def;
}

/* A whole number >= 0, exact to 2^64 - 1; a fraction is cut as a cast would. */
static uint64_t json_u64_of(const json_doc *doc, size_t obj, const char *key, uint64_t def)
{
    size_t t = lsae__json_get(&doc->j, obj, key);
    uint64_t u;
    double v;
    if (t && lsae__json_u64(&doc->j, t, UINT64_MAX, &u)) return u;
    v = json_num_of(doc, obj, key, NAN);
    if (v >= 0 && v < 18446744073709551616.0) return (uint64_t)v;
    return def;
}

static char *json_str_of(const json_doc *doc, size_t obj, const char *key)
{
    size_t t = lsae__json_get(&doc->j, obj, key), cap;
    char *s;
    if (!t || doc->j.tok[t].type != LSAE__J_STR) return NULL;
    /* decoding never lengthens a JSON string; the slack is for the decoder's
       room check before each \u escape */
    cap = doc->j.tok[t].end - doc->j.tok[t].start + 8;
    s = (char *)xmalloc(cap);
    lsae__json_str(&doc->j, t, s, cap);
    return s;
}
