/* info.c - lsae info: what a model holds.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

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
    FILE *f = lsae__fopen(path, "rb");
    unsigned char len8[8];
    uint64_t hl = 0;
    char *hdr;
    const char *err;
    json_doc doc;
    size_t key, i, q;
    int t;
    if (!f) fail("%s: cannot open: %s", path, strerror(errno));
    if (fread(len8, 1, 8, f) != 8) { fclose(f); fail("%s: shorter than a safetensors header", path); }
    for (t = 7; t >= 0; --t) hl = (hl << 8) | len8[t];
    if (hl > 100000000u) { fclose(f); fail("%s: safetensors header of %llu bytes is implausible", path, (unsigned long long)hl); }
    hdr = (char *)xmalloc((size_t)hl + 1);
    if (fread(hdr, 1, (size_t)hl, f) != hl) { fclose(f); free(hdr); fail("%s: file ends inside its header", path); }
    fclose(f);
    hdr[hl] = 0;
    if (!json_parse(&doc, hdr, (size_t)hl, &err)) { free(hdr); fail("%s: header is not a JSON object", path); }
    doc.text = hdr; /* freed with the document */
    if (doc.j.tok[0].type != LSAE__J_OBJ) { json_doc_free(&doc); fail("%s: header is not a JSON object", path); }
    /* the root's members: a key token, then its value's tokens up to .next */
    for (key = 1, i = 0; i < doc.j.tok[0].size; ++i, key = doc.j.tok[key + 1].next) {
        size_t val = key + 1, sh = lsae__json_get(&doc.j, val, "shape");
        char *name = (char *)xmalloc(doc.j.tok[key].end - doc.j.tok[key].start + 8), *dt = json_str_of(&doc, val, "dtype");
        lsae__json_str(&doc.j, key, name, doc.j.tok[key].end - doc.j.tok[key].start + 8);
        if (strcmp(name, "__metadata__")) {
            printf("  %-16s %-5s [", name, dt ? dt : "?");
            if (sh && doc.j.tok[sh].type == LSAE__J_ARR) {
                size_t e = sh + 1;
                for (q = 0; q < doc.j.tok[sh].size; ++q, e = doc.j.tok[e].next) {
                    double v = 0;
                    lsae__json_double(&doc.j, e, &v);
                    printf("%s%.0f", q ? ", " : "", v);
                }
            }
            printf("]\n");
        }
        free(name);
        free(dt);
    }
    json_doc_free(&doc);
}

/* The last complete line of a metrics.jsonl, parsed (doc owns the text);
   0 when there is none. */
static int last_metrics(const char *path, json_doc *doc)
{
    size_t n;
    const char *err;
    char *text = read_file(path, &n), *end, *start;
    if (!text) return 0;
    end = text + n;
    while (end > text && (end[-1] == '\n' || end[-1] == ' ')) --end;
    start = end;
    while (start > text && start[-1] != '\n') --start;
    if (end > start && json_parse(doc, start, (size_t)(end - start), &err)) {
        doc->text = text;
        return 1;
    }
    free(text);
    return 0;
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
    run_settings run;
    json_doc last;
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
    /* checksum of the float32 weights as loaded, in the order docs/math.md
       (section 1) lists the four tensors: equal for the
       same model whatever dtype or file order stored it */
    h = fnv1a(h, We, L * d * sizeof(float));
    h = fnv1a(h, be, L * sizeof(float));
    h = fnv1a(h, Wd, L * d * sizeof(float));
    h = fnv1a(h, bd, d * sizeof(float));
    row_norms(We, L, d, &a0, &a1, &a2);
    row_norms(Wd, L, d, &d0, &d1, &d2);
    vec_stats(be, L, &e0, &e1, &e2);
    for (j = 0; j < d; ++j) bdn += (double)bd[j] * bd[j];
    bdn = sqrt(bdn);
    have_run = run_settings_read(where, &run);
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
        {
            char ty[512];
            model_type_text(m, ty, sizeof ty);
            printf(", \"sae_type\": \"%s\", \"sae_type_text\": ", c->sae_type == LSAE_SAE_BATCHTOPK ? "batchtopk" : c->sae_type == LSAE_SAE_MATRYOSHKA ? "matryoshka" : "topk");
            json_str(stdout, ty);
            printf(", \"encode_k\": %zu, \"batchtopk_threshold\": %.9g", lsae_model_encode_k(m), (double)lsae_model_batchtopk_threshold(m));
        }
        printf(", \"encoder_row_norm\": {\"min\": %.9g, \"mean\": %.9g, \"max\": %.9g}", a0, a1, a2);
        printf(", \"decoder_row_norm\": {\"min\": %.9g, \"mean\": %.9g, \"max\": %.9g}", d0, d1, d2);
        printf(", \"encoder_bias\": {\"min\": %.9g, \"mean\": %.9g, \"max\": %.9g}", e0, e1, e2);
        printf(", \"b_dec_norm\": %.9g, \"checksum\": \"fnv1a64:%016llx\"", bdn, (unsigned long long)h);
        if (have_run) printf(", \"total_steps\": %llu", (unsigned long long)run.total_steps);
        if (have_last) printf(", \"step\": %.0f, \"fvu\": %.9g", json_num_of(&last, 0, "step", 0), json_num_of(&last, 0, "fvu", NAN));
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
        {
            char ty[512];
            model_type_text(m, ty, sizeof ty);
            printf("type       %s\n", ty);
        }
        printf("file       sae.safetensors, %.1f MB\n", (double)sz / 1e6);
        print_safetensors_header(path);
        printf("norms      encoder.weight rows  min %.4g  mean %.4g  max %.4g\n", a0, a1, a2);
        printf("           W_dec rows           min %.4g  mean %.4g  max %.4g%s\n", d0, d1, d2,
               c->normalize_decoder ? "  (unit rows expected)" : "");
        printf("           encoder.bias         min %.4g  mean %.4g  max %.4g\n", e0, e1, e2);
        printf("           b_dec                L2 norm %.4g\n", bdn);
        printf("checksum   fnv1a64:%016llx  (float32 weights: encoder.weight, encoder.bias, W_dec, b_dec)\n", (unsigned long long)h);
        if (have_run) {
            printf("training   run %s: batch %llu x grad-acc %llu, %llu optimizer steps planned, lr %.3g, data %s\n",
                   run.run_id ? run.run_id : "?", (unsigned long long)run.batch_size, (unsigned long long)run.grad_acc_steps,
                   (unsigned long long)run.total_steps, run.lr, run.data ? run.data : "?");
            if (have_last)
                printf("           at step %.0f: fvu %.4f, dead %.2f%%, %.0f samples seen\n", json_num_of(&last, 0, "step", 0),
                       json_num_of(&last, 0, "fvu", NAN), json_num_of(&last, 0, "dead_pct", NAN), json_num_of(&last, 0, "samples", 0));
        }
    }
    if (have_run) run_settings_free(&run);
    if (have_last) json_doc_free(&last);
    free(We); free(Wd); free(be); free(bd);
    lsae_model_free(m);
    return 0;
}
