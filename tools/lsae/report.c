/* report.c - lsae report: one self-contained HTML page for a training run,
   its settings, its training curves as inline SVG and a feature browser.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

/* metrics.jsonl as columns, one entry per line that parsed */
typedef struct metrics {
    size_t n, cap;
    double *step, *fvu, *auxk, *mtk, *dead, *lr, *sps, *loss;
} metrics;

static void metrics_push(metrics *mt, const json_doc *v)
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
    mt->step[mt->n] = json_num_of(v, 0, "step", NAN);
    mt->fvu[mt->n] = json_num_of(v, 0, "fvu", NAN);
    mt->auxk[mt->n] = json_num_of(v, 0, "auxk", NAN);
    mt->mtk[mt->n] = json_num_of(v, 0, "multi_topk_fvu", NAN);
    mt->dead[mt->n] = json_num_of(v, 0, "dead_pct", NAN);
    mt->lr[mt->n] = json_num_of(v, 0, "lr", NAN);
    mt->sps[mt->n] = json_num_of(v, 0, "samples_per_s", NAN);
    mt->loss[mt->n] = json_num_of(v, 0, "loss", NAN);
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
        json_doc v;
        const char *err;
        char *nl = (char *)memchr(p, '\n', (size_t)(text + len - p));
        end = nl ? nl : text + len;
        ++lineno;
        if (end == p) continue;
        if (!json_parse(&v, p, (size_t)(end - p), &err)) {
            if (!nl) break; /* unfinished last line */
            free(text);
            fail("%s: line %zu is not JSON (%s)", path, lineno, err);
        }
        metrics_push(mt, &v);
        json_doc_free(&v);
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

/* The horizontal grid lines of a chart and their labels, from 0 to ymax
   every ystep, for a plot area [X0, X1] x [Y0, Y1] (SVG y grows down). */
static void svg_y_grid(FILE *f, double ymax, double ystep, double X0, double X1, double Y0, double Y1)
{
    double t;
    for (t = 0; t <= ymax + ystep * 1e-6; t += ystep) {
        double y = Y1 - (Y1 - Y0) * t / ymax;
        char lab[32];
        /* 5000 samples/s reads better as 5k than as 5e+03 */
        if (t >= 1000) snprintf(lab, sizeof lab, "%.3gk", t / 1000);
        else snprintf(lab, sizeof lab, "%.3g", t);
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                X0, X1, y, y, X0 - 6, y + 4, lab);
    }
}

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
    svg_y_grid(f, ymax, ystep, X0, X1, Y0, Y1);
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

/* The page's head and the run's settings, its model and its last logged step. */
static void report_summary(FILE *f, const char *run_dir, const run_settings *run, const metrics *mt, const lsae_model *m)
{
    char buf[512];
    size_t L = lsae_model_num_latents(m), i;
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>", f);
    html_text(f, run_dir);
    fputs(" - lsae report</title>\n", f);
    /* first of all, so errors in anything after are caught and shown */
    fputs("<script>window.__lsaeErrors=[];window.addEventListener('error',function(e){window.__lsaeErrors.push(String(e.message||e));});"
          "(function(){var ce=console.error;console.error=function(){window.__lsaeErrors.push(Array.prototype.join.call(arguments,' '));"
          "if(ce)ce.apply(console,arguments);};})();</script>\n", f);
    fprintf(f, "<style>%s</style>\n</head><body>\n<header><h1>SAE training run ", REPORT_CSS);
    html_text(f, run && run->run_id ? run->run_id : run_dir);
    fputs("</h1><p>", f);
    html_text(f, run_dir);
    fprintf(f, " &middot; latentsae %s</p></header>\n<main>\n", lsae_version_string());

    fputs("<h2>Run</h2>\n<table class=\"summary\">\n", f);
    snprintf(buf, sizeof buf, "%zu latents (expansion %.3g), k %zu, d_in %zu%s", L, (double)L / (double)lsae_model_d_in(m),
             lsae_model_k(m), lsae_model_d_in(m), lsae_model_config(m)->multi_topk ? ", multi-topk" : "");
    summary_row(f, "model", buf);
    if (run) {
        if (run->data) {
            snprintf(buf, sizeof buf, "%s (%llu rows)", run->data, (unsigned long long)run->rows);
            summary_row(f, "data", buf);
        }
        snprintf(buf, sizeof buf, "batch %llu x grad-acc %llu, %llu optimizer steps planned (%.3g epochs)", (unsigned long long)run->batch_size,
                 (unsigned long long)run->grad_acc_steps, (unsigned long long)run->total_steps, (double)run->epochs);
        summary_row(f, "training", buf);
        snprintf(buf, sizeof buf, "%.3g%s, %s schedule, %llu warm-up steps", run->lr, run->lr_auto ? " (automatic)" : "", run->lr_schedule,
                 (unsigned long long)run->lr_warmup_steps);
        summary_row(f, "learning rate", buf);
        snprintf(buf, sizeof buf, "auxk alpha %.4g, dead after %llu samples without firing", run->auxk_alpha,
                 (unsigned long long)run->dead_feature_threshold);
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
}

/* The five charts of metrics.jsonl. */
static void report_curves(FILE *f, const metrics *mt)
{
    line_spec fl[2];
    int nf = 1;
    double any_mtk = 0;
    size_t i;
    fputs("<h2>Training curves</h2>\n", f);
    if (!mt || !mt->n) {
        fputs("<p class=\"note\">No metrics.jsonl in this directory: nothing to plot.</p>\n", f);
        return;
    }
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
}

/* The browser's data: [latent, fires, [rows], [acts]] for each latent shown
   (ids[0, n)), then the text of each row shown, once. */
static void report_browser_data(FILE *f, const report_feat *rf, const size_t *ids, size_t n, size_t L)
{
    const scan *s = rf->s;
    float *act = (float *)xmalloc(s->T * sizeof(float));
    uint64_t *row = (uint64_t *)xmalloc(s->T * sizeof(uint64_t));
    size_t i, j;
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
    free(act); free(row);
}

/* The feature browser: the latents that fire (the --max-latents most
   frequent, when given), its controls, its data and its script. */
static void report_features(FILE *f, const report_feat *rf, size_t L, const char *data_note)
{
    const scan *s;
    size_t *ids, n = 0, never = 0, i;
    fputs("<h2>Features</h2>\n", f);
    if (!rf || !rf->s) {
        fputs("<p class=\"note\">No feature browser: give the embeddings with --data (lsae train records them in run.json).</p>\n", f);
        return;
    }
    s = rf->s;
    ids = (size_t *)xmalloc(L * sizeof(size_t));
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
    report_browser_data(f, rf, ids, n, L);
    fprintf(f, "<script>%s</script>\n", REPORT_JS);
    free(ids);
}

static void write_report(const char *path, const char *run_dir, const run_settings *run, const metrics *mt, const lsae_model *m,
                         const report_feat *rf, const char *data_note, const eval_metrics *em, const char *em_why)
{
    out_file of;
    FILE *f = out_open(&of, path);
    report_summary(f, run_dir, run, mt, m);
    report_curves(f, mt);
    report_metrics(f, em, data_note, em_why);
    report_features(f, rf, lsae_model_num_latents(m), data_note);
    fputs("<pre id=\"lsae-errors\"></pre>\n<div id=\"lsae-status\" hidden data-ready=\"0\"></div>\n", f);
    fprintf(f, "<script>%s</script>\n</main></body></html>\n", REPORT_STATUS_JS);
    out_commit(&of);
}

static int cmd_report(int argc, char **argv)
{
    const char *device = NULL, *precision = NULL, *prepass = NULL;
    const char *usage = "lsae report RUN_DIR [options]";
    const char *about = "Write one self-contained HTML file for a training run (no network, no CDN): its settings, "
                        "training curves as inline SVG (fvu, AuxK, dead %, learning rate, samples/s, from "
                        "metrics.jsonl), the trained model's metrics on the run's data as lsae eval gives them "
                        "(a table, the feature-density and L0 histograms and neighbour recall@10 / nDCG@10) and a "
                        "feature browser (search latents by words in their top texts or by "
                        "number; see each latent's top rows and fire rate), made by encoding the run's data with "
                        "the trained model. The data and texts files default to those lsae train recorded in "
                        "RUN_DIR/run.json.";
    const char *out = NULL, *data = NULL, *texts_path = NULL;
    uint64_t top = 8, max_latents = 0, max_rows = 0, queries = 1000, seed = 0;
    int threads = 0, have_run, have_metrics, have_eval = 0;
    eval_metrics em;
    char em_why[512];
    data_args da;
    char *pos[1], where[PATH_CAP], path[PATH_CAP], outbuf[PATH_CAP];
    run_settings run;
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
        OPT("--queries", NULL, O_U64, &queries, "N", "1000", "neighbour-preservation queries, as lsae eval (0: skip)"),
        OPT("--seed", NULL, O_U64, &seed, "N", "0", "which rows are the queries"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores", "threads for encoding"),
        DEVICE_OPTS(device, precision, prepass),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    memset(&em, 0, sizeof em);
    snprintf(em_why, sizeof em_why, "No evaluation: give the embeddings with --data (lsae train records them in run.json).");
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 1) != 1) usage_fail("give one RUN_DIR");
    if (top == 0 || top > 1000) usage_fail("--top must be between 1 and 1000");
    if (threads < 0) usage_fail("--threads must be >= 0");
    if (!is_dir(pos[0])) fail("%s: no such run directory", pos[0]);
    have_run = run_settings_read(pos[0], &run);
    join_path(path, pos[0], "metrics.jsonl");
    have_metrics = metrics_load(path, &mt);
    m = open_model(pos[0], where);
    place_model(m, device, precision, prepass);
    lsae_model_set_num_threads(m, threads);
    if (!data && have_run) data = run.data;
    if (!texts_path && have_run && !opt_seen(o, sizeof o / sizeof o[0], "--data")) texts_path = run.texts;
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
        {
            eval_options eo;
            char err[400];
            memset(&eo, 0, sizeof eo);
            eo.max_rows = max_rows;
            eo.queries = queries;
            eo.seed = seed;
            eo.threads = threads;
            have_eval = eval_compute(m, ds, &eo, &em, err, sizeof err);
            if (!have_eval) {
                warn("no evaluation section: %s", err);
                snprintf(em_why, sizeof em_why, "No evaluation: %s", err);
            }
        }
    }
    if (!out) { join_path(outbuf, pos[0], "report.html"); out = outbuf; }
    write_report(out, pos[0], have_run ? &run : NULL, have_metrics ? &mt : NULL, m, data ? &rf : NULL, data ? data : "", have_eval ? &em : NULL, em_why);
    fprintf(stderr, "%s: wrote %s (%.2f MB): %zu logged steps, %s\n", g_cmd, out, (double)file_size(out) / 1e6, have_metrics ? mt.n : 0,
            data ? "feature browser included" : "no feature browser");
    if (have_metrics) metrics_free(&mt);
    if (have_run) run_settings_free(&run);
    eval_metrics_free(&em);
    texts_free(&tx);
    scan_free(&s);
    if (ds) lsae_dataset_close(ds);
    lsae_model_free(m);
    return 0;
}
