/* encode.c - lsae encode: the top-k latents of every row, as a .npy pair or JSONL.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

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

/* rows [first, first + n) of ds into x [n, d]; every row must be finite,
   since an encoding has one code per row (named by path in the message) */
static void read_finite_rows(lsae_dataset *ds, const char *path, uint64_t first, size_t n, size_t d, float *x)
{
    lsae_result r;
    size_t i;
    if ((r = lsae_dataset_read(ds, first, n, x)) != LSAE_OK) lib_fail(r, NULL);
    for (i = 0; i < n; ++i)
        if (!row_finite(x + i * d, d))
            fail("%s: row %llu holds NaN or Inf; an encoding needs every row finite (drop or fix it first)", path, (unsigned long long)(first + i));
}

static int cmd_encode(int argc, char **argv)
{
    const char *device = NULL, *precision = NULL, *prepass = NULL;
    const char *usage = "lsae encode MODEL EMBEDDINGS -o OUT [options]";
    const char *about = "Encode every row of EMBEDDINGS with MODEL: the top-k latent indices and activations of each "
                        "row, largest first (latent-sae's top_indices and top_acts). OUT is a directory that gets "
                        "top_indices.npy (int32 [rows, k]) and top_acts.npy (float32 [rows, k]), or a .jsonl file "
                        "with one {\"top_indices\": [...], \"top_acts\": [...]} line per row, or - for JSONL on "
                        "standard output. Row i of the output is row i of the input; a row holding NaN or Inf is "
                        "an error. MODEL is a directory or hf:OWNER/NAME/SUBFOLDER. Every SAE type: a per-level "
                        "Matryoshka model keeps the k of its last level; an uncapped BatchTopK model keeps every "
                        "latent at or above its threshold, so its JSONL lines vary in length and its .npy pair is as "
                        "wide as the row that keeps the most (found in a first pass), shorter rows padded with "
                        "activation 0 at index 0.";
    const char *out = NULL, *format = NULL;
    uint64_t k = 0, max_rows = 0;
    int threads = 0;
    data_args da;
    char *pos[2], where[PATH_CAP], p_idx[PATH_CAP], p_act[PATH_CAP];
    lsae_model *m;
    lsae_dataset *ds;
    out_file a_idx, a_act, a_jsonl;
    FILE *f_idx = NULL, *f_act = NULL, *f_jsonl = NULL;
    size_t d, chunk = 2048, i, q;
    uint64_t rows, first;
    float *x, *acts;
    int32_t *idx;
    codes cd;
    int jsonl, varying;
    double t0 = now_s();
    lsae_result r;
    opt o[] = {
        OPT_GROUP("output"),
        OPT("--out", "-o", O_STR, &out, "OUT", NULL, "a directory (for the .npy pair), a .jsonl file, or - (JSONL on stdout); required"),
        OPT("--format", NULL, O_STR, &format, "F", "npy, or jsonl when OUT ends in .jsonl or is -", "npy or jsonl"),
        OPT("--k", NULL, O_U64, &k, "N", "the model's k (per-level Matryoshka: its last level's)", "latents kept per row (not for an uncapped BatchTopK model, whose threshold decides)"),
        OPT("--max-rows", NULL, O_U64, &max_rows, "N", "all", "encode only the first N rows"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores, as OpenMP decides", "threads for encoding"),
        DEVICE_OPTS(device, precision, prepass),
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
    place_model(m, device, precision, prepass);
    varying = model_varying_k(m);
    if (varying && k) usage_fail("--k: %s is an uncapped BatchTopK model; its threshold decides how many latents a row keeps", pos[0]);
    if (k == 0) k = lsae_model_encode_k(m);
    if (k > lsae_model_num_latents(m)) usage_fail("--k %llu is larger than the model's %zu latents", (unsigned long long)k, lsae_model_num_latents(m));
    lsae_model_set_num_threads(m, threads);
    ds = open_data(pos[1], &da);
    d = lsae_model_d_in(m);
    if (lsae_dataset_d_in(ds) != d)
        fail("%s has rows of %zu values, but the model expects d_in %zu", pos[1], lsae_dataset_d_in(ds), d);
    rows = lsae_dataset_rows(ds);
    if (max_rows && max_rows < rows) rows = max_rows;
    catch_signals();
    x = (float *)xcalloc(chunk * d, sizeof(float));
    if (varying) {
        /* the rows keep any number of latents: for the .npy pair, a first
           pass finds the widest row */
        codes_init(&cd, m, chunk);
        if (!jsonl) {
            for (first = 0; first < rows; first += chunk) {
                size_t n = (size_t)(rows - first < chunk ? rows - first : chunk);
                check_interrupted();
                read_finite_rows(ds, pos[1], first, n, d, x);
                if ((r = codes_encode(&cd, m, x, n)) != LSAE_OK) lib_fail(r, NULL);
                progress_scan("encoding: counting the latents per row", first + n, rows, t0);
            }
            k = cd.most ? cd.most : 1;
        }
    }
    if (jsonl) {
        if (!strcmp(out, "-")) f_jsonl = stdout;
        else f_jsonl = out_open(&a_jsonl, out);
    } else {
        if (exists(out) && !is_dir(out)) fail("%s exists and is not a directory: the .npy pair goes into a directory (or name a .jsonl file)", out);
        make_dirs(out);
        join_path(p_idx, out, "top_indices.npy");
        join_path(p_act, out, "top_acts.npy");
        f_idx = out_open(&a_idx, p_idx);
        f_act = out_open(&a_act, p_act);
        npy_header(f_idx, "<i4", rows, k);
        npy_header(f_act, "<f4", rows, k);
    }
    acts = (float *)xcalloc(chunk * (size_t)k, sizeof(float));
    idx = (int32_t *)xcalloc(chunk * (size_t)k, sizeof(int32_t));
    for (first = 0; first < rows; first += chunk) {
        size_t n = (size_t)(rows - first < chunk ? rows - first : chunk);
        check_interrupted();
        read_finite_rows(ds, pos[1], first, n, d, x);
        if (varying) {
            /* the sparse codes, into k slots a row: padding at activation 0, index 0 */
            if ((r = codes_encode(&cd, m, x, n)) != LSAE_OK) lib_fail(r, NULL);
            if (!jsonl)
                for (i = 0; i < n; ++i)
                    for (q = 0; q < k; ++q) {
                        acts[i * k + q] = q < cd.count[i] ? cd.acts[i * cd.cap + q] : 0.0f;
                        idx[i * k + q] = q < cd.count[i] ? cd.idx[i * cd.cap + q] : 0;
                    }
        } else if ((r = lsae_model_encode(m, x, n, (size_t)k, acts, idx)) != LSAE_OK) lib_fail(r, NULL);
        if (jsonl) {
            for (i = 0; i < n; ++i) {
                const size_t nk = varying ? cd.count[i] : (size_t)k, st = varying ? cd.cap : (size_t)k;
                const float *ra = varying ? cd.acts : acts;
                const int32_t *ri = varying ? cd.idx : idx;
                fputs("{\"top_indices\": [", f_jsonl);
                for (q = 0; q < nk; ++q) fprintf(f_jsonl, "%s%d", q ? ", " : "", (int)ri[i * st + q]);
                fputs("], \"top_acts\": [", f_jsonl);
                for (q = 0; q < nk; ++q) fprintf(f_jsonl, "%s%.9g", q ? ", " : "", (double)ra[i * st + q]);
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
        else out_commit(&a_jsonl);
    } else {
        out_commit(&a_idx);
        out_commit(&a_act);
    }
    if (f_jsonl != stdout && varying)
        fprintf(stderr, "%s: %llu rows, threshold %.6g, up to %zu latents a row -> %s%s (%.1fs)\n", g_cmd, (unsigned long long)rows,
                (double)lsae_model_batchtopk_threshold(m), cd.most, out, jsonl ? "" : "/{top_indices,top_acts}.npy", now_s() - t0);
    else if (f_jsonl != stdout)
        fprintf(stderr, "%s: %llu rows, k %llu -> %s%s (%.1fs)\n", g_cmd, (unsigned long long)rows, (unsigned long long)k, out,
                jsonl ? "" : "/{top_indices,top_acts}.npy", now_s() - t0);
    free(x); free(acts); free(idx);
    if (varying) codes_free(&cd);
    lsae_dataset_close(ds);
    lsae_model_free(m);
    return 0;
}
