/* data.c - opening embeddings and models, --device, the scan of a model over a
   dataset (eval, features, report) and texts files.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

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
   directory actually read (resolve_model: only that, loading nothing). */
static void resolve_model(const char *spec, char *where)
{
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
}

static lsae_model *open_model(const char *spec, char *where)
{
    lsae_model *m = NULL;
    lsae_result r;
    resolve_model(spec, where);
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

/* --int8-prepass: auto leaves the library's choice (lsae_model_set_encode_prepass's
   default, by the CPU's instructions and the model's shape); off is 0 (float32
   only), on is 2 (every call). The library gives the same bits either way. */
static int parse_prepass(const char *prepass)
{
    if (!prepass || !strcmp(prepass, "auto")) return -1;
    if (!strcmp(prepass, "off")) return 0;
    if (!strcmp(prepass, "on")) return 2;
    usage_fail("--int8-prepass must be auto, off or on, not '%s'", prepass);
    return -1;
}

static void set_prepass(lsae_model *m, const char *prepass)
{
    const int on = parse_prepass(prepass);
    lsae_result r;
    if (on >= 0 && (r = lsae_model_set_encode_prepass(m, on)) != LSAE_OK) lib_fail(r, "--int8-prepass");
}

static void place_model(lsae_model *m, const char *device, const char *precision, const char *prepass)
{
    lsae_result r;
    lsae_device dev = parse_device(device);
    lsae_precision p = parse_precision(precision);
    if (dev == LSAE_DEVICE_CUDA && (r = lsae_backend_available(LSAE_DEVICE_CUDA)) != LSAE_OK) lib_fail(r, "--device cuda");
    if ((r = lsae_model_to_device(m, dev)) != LSAE_OK) lib_fail(r, "--device");
    if ((r = lsae_model_set_precision(m, p)) != LSAE_OK) lib_fail(r, "--precision");
    set_prepass(m, prepass);
}

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

/* ------------------------------------------------- codes of every SAE type */

/* A chunk's codes: row i's count[i] entries at acts/idx[i * cap ..], best
   first. Every SAE type goes through lsae_model_encode_sparse: TopK,
   Matryoshka and a capped BatchTopK keep their fixed k (the encode_k of
   the model), an uncapped BatchTopK model keeps every latent at or above
   its threshold, any number a row; cap grows to the largest row seen. */
typedef struct codes {
    size_t cap, rows_cap, most;
    float *acts;
    int32_t *idx;
    size_t *count;
} codes;

/* 1 when the model's rows keep a varying number of latents (uncapped BatchTopK) */
static int model_varying_k(const lsae_model *m)
{
    const lsae_config *c = lsae_model_config(m);
    int thr = c->sae_type == LSAE_SAE_BATCHTOPK ||
              (c->sae_type == LSAE_SAE_MATRYOSHKA && c->matryoshka_use_batchtopk && c->matryoshka_form == LSAE_MATRYOSHKA_NESTED);
    return thr && !c->batchtopk_row_cap;
}

static void codes_init(codes *c, const lsae_model *m, size_t rows_cap)
{
    memset(c, 0, sizeof *c);
    c->rows_cap = rows_cap;
    c->cap = lsae_model_encode_k(m);
    if (model_varying_k(m) && c->cap < lsae_model_num_latents(m)) c->cap = 2 * c->cap < lsae_model_num_latents(m) ? 2 * c->cap : lsae_model_num_latents(m);
    if (rows_cap > SIZE_MAX / sizeof(float) / c->cap) fail("codes of %zu rows x %zu latents do not fit in memory", rows_cap, c->cap);
    c->acts = (float *)xcalloc(rows_cap * c->cap, sizeof(float));
    c->idx = (int32_t *)xcalloc(rows_cap * c->cap, sizeof(int32_t));
    c->count = (size_t *)xcalloc(rows_cap + 1, sizeof(size_t));
}

/* encode n <= rows_cap rows of x; returns LSAE_OK or the library's error */
static lsae_result codes_encode(codes *c, const lsae_model *m, const float *x, size_t n)
{
    size_t need = 0;
    lsae_result r = lsae_model_encode_sparse(m, x, n, c->cap, c->acts, c->idx, c->count, &need);
    if (r == LSAE_TRUNCATED) {
        /* a row keeps more than cap: make room for it and encode again */
        if (c->rows_cap > SIZE_MAX / sizeof(float) / need) fail("codes of %zu rows x %zu latents do not fit in memory", c->rows_cap, need);
        c->cap = need;
        c->acts = (float *)xrealloc(c->acts, c->rows_cap * c->cap * sizeof(float));
        c->idx = (int32_t *)xrealloc(c->idx, c->rows_cap * c->cap * sizeof(int32_t));
        r = lsae_model_encode_sparse(m, x, n, c->cap, c->acts, c->idx, c->count, &need);
    }
    if (r == LSAE_OK && need > c->most) c->most = need;
    return r;
}

static lsae_result codes_decode(const codes *c, const lsae_model *m, size_t n, float *xhat)
{
    return lsae_model_decode_sparse(m, c->acts, c->idx, c->count, c->cap, n, xhat);
}

static void codes_free(codes *c)
{
    free(c->acts); free(c->idx); free(c->count);
    memset(c, 0, sizeof *c);
}

/* printf onto buf [cap] at *at, cut short when full */
static void text_cat(char *buf, size_t cap, size_t *at, const char *fmt, ...)
{
    va_list ap;
    int w;
    if (*at + 1 >= cap) return;
    va_start(ap, fmt);
    w = vsnprintf(buf + *at, cap - *at, fmt, ap);
    va_end(ap);
    if (w > 0) *at += (size_t)w < cap - *at ? (size_t)w : cap - *at - 1;
}

/* The model's SAE type in words, for lsae info and the reports:
   "topk", "batchtopk (threshold 0.0123, uncapped)", "matryoshka per-level
   (sizes 64,256,1536; ks 8,16,32)", with ", k annealed" when it was. */
static void model_type_text(const lsae_model *m, char *buf, size_t cap)
{
    const lsae_config *c = lsae_model_config(m);
    size_t at = 0, i;
#define TYPE_CAT(...) text_cat(buf, cap, &at, __VA_ARGS__)
    buf[0] = 0;
    if (c->sae_type == LSAE_SAE_BATCHTOPK) {
        TYPE_CAT("batchtopk (threshold %.6g, %s)", (double)lsae_model_batchtopk_threshold(m), c->batchtopk_row_cap ? "rows capped at k" : "uncapped");
    } else if (c->sae_type == LSAE_SAE_MATRYOSHKA) {
        TYPE_CAT("matryoshka %s (sizes ", c->matryoshka_form == LSAE_MATRYOSHKA_NESTED ? "nested" : "per-level");
        for (i = 0; i < c->matryoshka_levels; ++i) TYPE_CAT("%s%zu", i ? "," : "", c->matryoshka_sizes[i]);
        if (c->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL) {
            TYPE_CAT("; ks ");
            for (i = 0; i < c->matryoshka_levels; ++i) TYPE_CAT("%s%zu", i ? "," : "", c->matryoshka_ks[i]);
        }
        if (c->matryoshka_use_batchtopk)
            TYPE_CAT("; batch-wide selection, threshold %.6g%s", (double)lsae_model_batchtopk_threshold(m),
                     c->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL ? " (not used by encode)" : c->batchtopk_row_cap ? ", rows capped at k" : ", uncapped");
        TYPE_CAT(")");
    } else {
        TYPE_CAT("topk");
    }
    if (c->k_anneal) TYPE_CAT(", k annealed from %zu over %.3g of the run", c->k_anneal_start ? c->k_anneal_start : 4 * lsae_model_encode_k(m), c->k_anneal_pct);
#undef TYPE_CAT
}

static void scan_run(scan *s, lsae_model *m, lsae_dataset *ds, size_t T, int want_recon, uint64_t max_rows, const char *what)
{
    const size_t chunk = 2048;
    size_t d = lsae_model_d_in(m), k = lsae_model_encode_k(m), L = lsae_model_num_latents(m), j;
    uint64_t total = lsae_dataset_rows(ds), first;
    float *x, *xhat = NULL;
    codes cd;
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
    codes_init(&cd, m, chunk);
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
        if ((r = codes_encode(&cd, m, x, kept)) != LSAE_OK) lib_fail(r, NULL);
        for (i = 0; i < kept; ++i)
            for (q = 0; q < cd.count[i]; ++q) {
                float a = cd.acts[i * cd.cap + q];
                size_t l = (size_t)cd.idx[i * cd.cap + q];
                if (!(a > 0.0f)) continue;
                s->fires[l]++;
                s->active++;
                if (T) top_push(s, l, a, rowid[i]);
            }
        if (want_recon) {
            if ((r = codes_decode(&cd, m, kept, xhat)) != LSAE_OK) lib_fail(r, NULL);
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
    free(x); free(rowid); free(xhat);
    codes_free(&cd);
}

static void scan_free(scan *s)
{
    free(s->fires); free(s->top_act); free(s->top_row); free(s->top_n);
    free(s->shift); free(s->sx); free(s->sxx); free(s->se);
    memset(s, 0, sizeof *s);
}

/* ================================================================ texts */

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
        char *nl = (char *)memchr(p, '\n', (size_t)(t->buf + len - p));
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
