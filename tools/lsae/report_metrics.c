/* report_metrics.c - the report's "Evaluation" section: the metrics of
   eval_compute (metrics.c) on the run's data as a table and three bar charts,
   the feature density (latents by log10 of their fire rate), the L0
   distribution (rows by how many latents are active) and neighbour
   preservation (recall@10 and nDCG@10).
   Part of lsae's one translation unit: included by main.c after report.c,
   whose nice_step and html_text it uses; not compiled alone. */

typedef struct bar {
    char label[24];   /* under the bar (some are skipped when crowded) */
    char tip[96];     /* the bar's <title>: what it counts, in words */
    double value;
} bar;

/* A bar chart as inline SVG, in the style of svg_chart: y from 0 to a round
   maximum (or to ymax_fixed when > 0), one <rect class="histbar"> per bar (not "bar": the browser's CSS styles that) with
   its value in data-value, so a test can count the bars and read them. */
static void svg_bars(FILE *f, const char *id, const char *title, const char *xlabel, const bar *b, size_t n, double ymax_fixed,
                     const char *color)
{
    const double W = 520, H = 250, X0 = 62, X1 = 508, Y0 = 36, Y1 = 206;
    double ymax = 0, ystep, slot, width;
    size_t i, every;
    for (i = 0; i < n; ++i)
        if (isfinite(b[i].value) && b[i].value > ymax) ymax = b[i].value;
    if (ymax_fixed > 0) ymax = ymax_fixed;
    if (!(ymax > 0)) ymax = 1;
    ystep = nice_step(ymax / 4);
    if (ymax_fixed <= 0) ymax = ceil(ymax / ystep - 1e-9) * ystep;
    slot = (X1 - X0) / (double)(n ? n : 1);
    width = slot > 3 ? slot * 0.8 : slot;
    every = (size_t)ceil((double)n / 16.0); /* at most ~16 labels under the bars */
    if (every < 1) every = 1;
    fprintf(f, "<figure class=\"chart-box\"><svg class=\"chart bars\" id=\"chart-%s\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"", id, W, H);
    html_text(f, title);
    fprintf(f, "\">\n<text class=\"title\" x=\"%.0f\" y=\"20\">", X0);
    html_text(f, title);
    fputs("</text>\n", f);
    svg_y_grid(f, ymax, ystep, X0, X1, Y0, Y1);
    for (i = 0; i < n; ++i) {
        double v = isfinite(b[i].value) && b[i].value > 0 ? b[i].value : 0, h = (Y1 - Y0) * (v < ymax ? v : ymax) / ymax;
        double x = X0 + slot * (double)i + (slot - width) / 2;
        fprintf(f, "<rect class=\"histbar\" data-label=\"%s\" data-value=\"%.9g\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"><title>",
                b[i].label, isfinite(b[i].value) ? b[i].value : 0.0, x, Y1 - h, width, h, color);
        html_text(f, b[i].tip);
        fputs("</title></rect>\n", f);
        if (i % every == 0)
            fprintf(f, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x + width / 2, Y1 + 14, b[i].label);
    }
    fprintf(f, "<line class=\"axis\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>\n", X0, X1, Y1, Y1);
    fprintf(f, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", X1, H - 4);
    html_text(f, xlabel);
    fputs("</text>\n</svg></figure>\n", f);
}

static void metric_row(FILE *f, const char *name, double v, const char *fmt, const char *what)
{
    char buf[64];
    if (isfinite(v)) snprintf(buf, sizeof buf, fmt, v);
    else snprintf(buf, sizeof buf, "n/a");
    fputs("<tr><td>", f);
    html_text(f, name);
    fputs("</td><td>", f);
    html_text(f, buf);
    fputs("</td><td>", f);
    html_text(f, what);
    fputs("</td></tr>\n", f);
}

/* The section; e NULL: no data to evaluate on, `why` says so. */
static void report_metrics(FILE *f, const eval_metrics *e, const char *data_note, const char *why)
{
    bar *b;
    size_t i, n;
    char title[128];
    fputs("<h2>Evaluation</h2>\n", f);
    if (!e) {
        fputs("<p class=\"note\">", f);
        html_text(f, why);
        fputs("</p>\n", f);
        return;
    }
    fputs("<p class=\"note\">The trained model on ", f);
    html_text(f, data_note);
    fprintf(f, " (%llu rows%s), as <code>lsae eval</code> measures it. A latent fires on a row when it is in the row's top-k "
               "with activation &gt; 0.</p>\n<table class=\"summary\" id=\"eval-metrics\">\n",
            (unsigned long long)e->rows, e->rows_skipped ? ", rows with NaN or Inf left out" : "");
    metric_row(f, "fvu", e->fvu, "%.4f", "sum of squared errors / total variance");
    metric_row(f, "explained variance", e->explained_variance, "%.4f", "1 - residual variance / variance about the mean");
    metric_row(f, "mse", e->mse, "%.4g", "mean over rows and dims of (x - x_hat)^2");
    metric_row(f, "cosine(x, x_hat)", e->cossim, "%.4f", "mean over rows");
    metric_row(f, "l2 ratio", e->l2_ratio, "%.4f", "mean |x_hat| / |x|");
    metric_row(f, "relative reconstruction bias", e->relative_reconstruction_bias, "%.4f", "1 means no shrinkage");
    metric_row(f, "L0", e->l0_mean, "%.2f", "active latents per row, mean");
    metric_row(f, "alive", e->frac_alive, "%.4f", "fraction of latents that fire at least once");
    metric_row(f, "dead", e->dead_fraction, "%.4f", "fraction that never fire here");
    metric_row(f, "fire on > 1% of rows", e->freq_over_1pct, "%.4f", "fraction of latents");
    metric_row(f, "fire on > 10% of rows", e->freq_over_10pct, "%.4f", "fraction of latents");
    metric_row(f, "max decoder cosine, mean", e->max_decoder_cossim_mean, "%.4f", "each latent's largest cosine to another decoder row");
    metric_row(f, "max decoder cosine, p99", e->max_decoder_cossim_p99, "%.4f", "its 99th percentile");
    if (e->queries) {
        metric_row(f, "neighbour recall@10", e->recall_at_10, "%.4f", "of each query's 10 nearest rows by x, the share found by x_hat");
        metric_row(f, "neighbour nDCG@10", e->ndcg_at_10, "%.4f", "the same, weighted by rank");
    }
    fputs("</table>\n<div class=\"charts\" style=\"margin-top:12px\">\n", f);

    /* feature density: never, then bin i = [i - 10, i - 9) of log10(fires / rows), bin 0 everything below -9, bin 9 [-1, 0] */
    n = EVAL_DENSITY_BINS + 1;
    b = (bar *)xcalloc(n, sizeof(bar));
    snprintf(b[0].label, sizeof b[0].label, "never");
    snprintf(b[0].tip, sizeof b[0].tip, "%llu latents never fire", (unsigned long long)e->density_never);
    b[0].value = (double)e->density_never;
    for (i = 0; i < EVAL_DENSITY_BINS; ++i) {
        int lo = (int)i - EVAL_DENSITY_BINS;
        bar *x = b + i + 1;
        x->value = (double)e->density_hist[i];
        if (i == 0) {
            snprintf(x->label, sizeof x->label, "&lt;%d", lo + 1);
            snprintf(x->tip, sizeof x->tip, "%llu latents fire on under 1e%d of rows", (unsigned long long)e->density_hist[i], lo + 1);
        } else {
            snprintf(x->label, sizeof x->label, "%d", lo);
            if (lo == -1) snprintf(x->tip, sizeof x->tip, "%llu latents fire on 1e-1 of rows or more", (unsigned long long)e->density_hist[i]);
            else snprintf(x->tip, sizeof x->tip, "%llu latents fire on 1e%d to 1e%d of rows", (unsigned long long)e->density_hist[i], lo, lo + 1);
        }
    }
    svg_bars(f, "density", "feature density (latents by fire rate)", "log10(fires / rows)", b, n, 0, "#2a62b8");
    free(b);

    /* L0: rows by their number of active latents, 0..k */
    n = e->l0_hist_len;
    b = (bar *)xcalloc(n ? n : 1, sizeof(bar));
    for (i = 0; i < n; ++i) {
        snprintf(b[i].label, sizeof b[i].label, "%zu", i);
        snprintf(b[i].tip, sizeof b[i].tip, "%llu rows with %zu active latents", (unsigned long long)e->l0_hist[i], i);
        b[i].value = (double)e->l0_hist[i];
    }
    snprintf(title, sizeof title, "L0 per row (mean %.2f, k %llu)", e->l0_mean, (unsigned long long)e->k);
    svg_bars(f, "l0", title, "active latents per row", b, n, 0, "#2f8a4a");
    free(b);

    /* neighbour preservation */
    if (e->queries) {
        bar nb[2];
        memset(nb, 0, sizeof nb);
        snprintf(nb[0].label, sizeof nb[0].label, "recall@10");
        snprintf(nb[0].tip, sizeof nb[0].tip, "recall@10 %.4f", e->recall_at_10);
        nb[0].value = e->recall_at_10;
        snprintf(nb[1].label, sizeof nb[1].label, "nDCG@10");
        snprintf(nb[1].tip, sizeof nb[1].tip, "nDCG@10 %.4f", e->ndcg_at_10);
        nb[1].value = e->ndcg_at_10;
        snprintf(title, sizeof title, "neighbour preservation (%llu queries)", (unsigned long long)e->queries);
        svg_bars(f, "neighbours", title, "nearest neighbours by x_hat vs by x", nb, 2, 1.0, "#7a3fb0");
    } else {
        fputs("<p class=\"note\">Neighbour preservation not measured (--queries 0, or too few rows).</p>\n", f);
    }
    fputs("</div>\n", f);
}
