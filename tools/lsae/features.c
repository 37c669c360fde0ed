/* features.c - lsae features: the rows each latent is most active on.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

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
    const char *device = NULL, *precision = NULL, *prepass = NULL;
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
        DEVICE_OPTS(device, precision, prepass),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 2) != 2) usage_fail("give MODEL and EMBEDDINGS");
    if (top == 0 || top > 10000) usage_fail("--top must be between 1 and 10000");
    if (latents_spec && sample) usage_fail("give --latents or --sample, not both");
    if (threads < 0) usage_fail("--threads must be >= 0");
    m = open_model(pos[0], where);
    place_model(m, device, precision, prepass);
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
