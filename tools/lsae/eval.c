/* eval.c - lsae eval: how well a model reconstructs embeddings, and how it
   uses its latents.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

/* Dead latents by the trainer's own counters, when MODEL is a run directory
   with a checkpoint: latents out of every top-k for more than
   dead_feature_threshold training samples. Returns 0 when not available.
   Only checkpoint/state.bin's header and its per-latent counters are read
   (docs/files.md, "state.bin"): building a trainer and loading the whole
   checkpoint (the Adam moments, twice the model) to get them cost about
   1.5 s of a 20 s eval at d 768, 24,576 latents. The header must name this
   model's shape and the file must be as long as the header says; its
   hash is checked by `lsae train --resume`, which uses the rest. */
static int training_dead(const char *where, const lsae_model *m, size_t *n_dead, double *step, double *threshold, char *why, size_t why_cap)
{
    char ck[PATH_CAP], sb[PATH_CAP];
    unsigned char hdr[128], b8[8];
    run_settings run;
    uint64_t dead_threshold;
    const size_t L = lsae_model_num_latents(m), d = lsae_model_d_in(m);
    uint64_t fsize = 0, payload, n = 0;
    size_t l;
    FILE *f;
    int ok = 0;
    join_path(ck, where, "checkpoint");
    snprintf(why, why_cap, "needs a run directory with checkpoint/ (lsae train writes one)");
    if (!is_dir(ck) || !run_settings_read(where, &run)) return 0;
    dead_threshold = run.dead_feature_threshold;
    run_settings_free(&run);
    join_path(sb, ck, "state.bin");
    snprintf(why, why_cap, "checkpoint/state.bin unreadable");
    if (!(f = lsae__fopen(sb, "rb"))) return 0;
    if (!lsae__file_size(f, &fsize) || fread(hdr, 1, sizeof hdr, f) != sizeof hdr) goto done;
    payload = lsae__get_le(hdr + 80, 8);
    if (memcmp(hdr, "LSAESTAT", 8) != 0 || lsae__get_le(hdr + 8, 4) != 1 || lsae__get_le(hdr + 12, 4) != 128) {
        snprintf(why, why_cap, "checkpoint/state.bin: not a trainer state of format 1");
        goto done;
    }
    if (lsae__get_le(hdr + 16, 8) != (uint64_t)d || lsae__get_le(hdr + 24, 8) != (uint64_t)L) {
        snprintf(why, why_cap, "checkpoint/state.bin is for d_in %llu, %llu latents, not this model's", (unsigned long long)lsae__get_le(hdr + 16, 8),
                 (unsigned long long)lsae__get_le(hdr + 24, 8));
        goto done;
    }
    if (payload < 8 * (uint64_t)L || fsize < 136 || fsize - 136 != payload) {
        snprintf(why, why_cap, "checkpoint/state.bin is cut short or has the wrong length");
        goto done;
    }
    for (l = 0; l < L; ++l) {
        if (fread(b8, 1, 8, f) != 8) goto done;
        n += lsae__get_le(b8, 8) > dead_threshold;
    }
    *n_dead = (size_t)n;
    *step = (double)lsae__get_le(hdr + 40, 8);
    *threshold = (double)dead_threshold;
    ok = 1;
done:
    fclose(f);
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

/* What eval prints: the metrics (metrics.c) and the training counters. */
typedef struct eval_result {
    const char *model, *data;
    const eval_metrics *m;
    uint64_t hist[NBUCKET], hist_max;
    int have_dead;        /* the training counters were read: */
    size_t n_dead;
    double dead_step, dead_threshold;
    char why[1200];       /* ... or why not */
    const probe_result *probing; /* --labels, or NULL */
} eval_result;

/* the fire-rate buckets of the text output (and the JSON's fire_rate_histogram) */
static void eval_buckets(eval_result *e)
{
    size_t l;
    int b;
    for (l = 0; l < e->m->L; ++l) {
        b = bucket_of(e->m->fires[l], e->m->rows);
        e->hist[b]++;
        if (e->hist[b] > e->hist_max) e->hist_max = e->hist[b];
    }
}

static void eval_print_json(const eval_result *e)
{
    int b;
    printf("{\"model\": ");
    json_str(stdout, e->model);
    printf(", \"data\": ");
    json_str(stdout, e->data);
    printf(", ");
    eval_metrics_write_json_members(stdout, e->m);
    if (e->have_dead) printf(", \"dead\": %zu, \"dead_at_step\": %.0f, \"dead_feature_threshold\": %.0f", e->n_dead, e->dead_step, e->dead_threshold);
    else { printf(", \"dead\": null, \"dead_unavailable\": "); json_str(stdout, e->why); }
    printf(", \"fire_rate_histogram\": [");
    for (b = 0; b < NBUCKET; ++b) {
        printf("%s{\"bucket\": ", b ? ", " : "");
        json_str(stdout, bucket_name[b]);
        printf(", \"latents\": %llu}", (unsigned long long)e->hist[b]);
    }
    printf("]");
    if (e->probing) { printf(", \"probing\": "); probe_write_json(stdout, e->probing); }
    printf("}\n");
}

static void eval_print_text(const eval_result *e)
{
    const eval_metrics *m = e->m;
    char ev[32];
    uint64_t lmax = 0;
    int b;
    printf("eval of %s on %s\n", e->model, e->data);
    printf("  %llu rows", (unsigned long long)m->rows);
    if (m->rows_skipped) printf(" (%llu more left out for NaN/Inf)", (unsigned long long)m->rows_skipped);
    printf(", d_in %llu, %llu latents, k %llu\n\n", (unsigned long long)m->d, (unsigned long long)m->L, (unsigned long long)m->k);
    printf("reconstruction\n");
    printf("  fvu                  %-10.4f global, sparsify 2025: sum of squared errors / total variance\n", m->fvu);
    printf("  fvu (per-dim mean)   %-10.4f latent-sae 2024: mean over dims of squared error / variance\n", m->fvu_per_dim);
    if (m->dims_varying < m->d)
        printf("                                  (over the %llu dims that vary; %llu constant dims have no variance to explain)\n",
               (unsigned long long)m->dims_varying, (unsigned long long)(m->d - m->dims_varying));
    snprintf(ev, sizeof ev, "%.2f%%", 100.0 * m->explained_variance);
    printf("  explained variance   %-10s 1 - fvu: 1 - squared error / squared distance to the mean (SAEBench)\n", ev);
    printf("  mse                  %-10.4g mean over rows and dims of (x - x_hat)^2\n", m->mse);
    printf("  cossim               %-10.4f mean over rows of cos(x, x_hat)\n", m->cossim);
    printf("  l2 ratio             %-10.4f mean over rows of |x_hat| / |x|\n", m->l2_ratio);
    printf("  relative bias        %-10.4f mean |x_hat|^2 / mean x.x_hat (1: no shrinkage)\n", m->relative_reconstruction_bias);
    printf("sparsity\n");
    if (m->l0_hist_len > m->k + 1) /* an uncapped BatchTopK model: its threshold decides the count */
        printf("  L0                   %-10.2f active latents per row (at or above the threshold; k = %llu in training)\n", m->l0_mean,
               (unsigned long long)m->k);
    else
        printf("  L0                   %-10.2f active latents per row (k = %llu)\n", m->l0_mean, (unsigned long long)m->k);
    if (m->l0_hist_len && m->l0_hist[m->l0_hist_len - 1] != m->rows) { /* a distribution to show */
        /* counts from the smallest to the largest L0 seen, one line per
           count, or per run of counts when there would be more than 24 lines
           (a threshold model's counts spread over tens of values) */
        size_t lo = 0, hi = m->l0_hist_len - 1, width, a, c;
        while (lo < hi && !m->l0_hist[lo]) ++lo;
        while (hi > lo && !m->l0_hist[hi]) --hi;
        width = hi - lo + 1 > 24 ? (hi - lo + 1 + 19) / 20 : 1;
        for (a = lo; a <= hi; a += width) {
            uint64_t rows_in = 0;
            for (c = a; c < a + width && c <= hi; ++c) rows_in += m->l0_hist[c];
            if (rows_in > lmax) lmax = rows_in;
        }
        printf("  rows by L0:\n");
        for (a = lo; a <= hi; a += width) {
            uint64_t rows_in = 0;
            int bar;
            char label[48];
            for (c = a; c < a + width && c <= hi; ++c) rows_in += m->l0_hist[c];
            if (!rows_in) continue;
            bar = (int)((40.0 * (double)rows_in + (double)lmax - 1) / (double)lmax);
            if (width == 1) snprintf(label, sizeof label, "%zu", a);
            else snprintf(label, sizeof label, "%zu-%zu", a, a + width - 1 < hi ? a + width - 1 : hi);
            printf("    %9s %10llu  ", label, (unsigned long long)rows_in);
            while (bar-- > 0) putchar('#');
            putchar('\n');
        }
    }
    printf("latents\n");
    printf("  never fired          %-10llu %.2f%% of latents: not active on any of these rows\n", (unsigned long long)m->density_never,
           100.0 * m->dead_fraction);
    if (e->have_dead)
        printf("  dead (training)      %-10zu %.2f%%: out of every top-k for > %.0f samples at step %.0f\n", e->n_dead,
               100.0 * (double)e->n_dead / (double)m->L, e->dead_threshold, e->dead_step);
    else
        printf("  dead (training)      n/a        %s\n", e->why);
    printf("  alive                %-10.4f fraction of latents active on at least one row\n", m->frac_alive);
    printf("  fire rate > 1%%       %-10.4f fraction of latents active on more than 1%% of rows\n", m->freq_over_1pct);
    printf("  fire rate > 10%%      %-10.4f fraction of latents active on more than 10%% of rows\n", m->freq_over_10pct);
    printf("  max decoder cosine   %-10.4f mean over latents of the largest cosine to another decoder row (p99 %.4f)\n",
           m->max_decoder_cossim_mean, m->max_decoder_cossim_p99);
    printf("fire rate (fraction of rows a latent is active on): latents per bucket\n");
    for (b = 0; b < NBUCKET; ++b) {
        int bar = e->hist_max ? (int)((40.0 * (double)e->hist[b] + (double)e->hist_max - 1) / (double)e->hist_max) : 0;
        printf("  %-12s %8llu  ", bucket_name[b], (unsigned long long)e->hist[b]);
        while (bar-- > 0) putchar('#');
        putchar('\n');
    }
    printf("neighbours (cosine, top %d, exact)\n", EVAL_NN);
    if (m->queries) {
        printf("  recall@%d            %-10.4f of each query's %d nearest rows by x, the share found by x_hat (%llu queries)\n",
               EVAL_NN, m->recall_at_10, EVAL_NN, (unsigned long long)m->queries);
        printf("  nDCG@%d              %-10.4f the same, weighted by rank\n", EVAL_NN, m->ndcg_at_10);
    } else
        printf("  not measured         (--queries 0, or fewer than %d rows)\n", EVAL_NN + 1);
    if (e->probing) { putchar('\n'); probe_write_text(stdout, e->probing, m->d); }
}

static int cmd_eval(int argc, char **argv)
{
    const char *device = NULL, *precision = NULL, *prepass = NULL;
    const char *usage = "lsae eval MODEL EMBEDDINGS [options]";
    const char *about = "Measure how well MODEL reconstructs EMBEDDINGS and how it uses its latents: fvu in two forms "
                        "(the global one, sum of squared errors over total variance, used by sparsify since 2025, and "
                        "latent-sae 2024's mean of per-dimension ratios; they differ, so each is labelled), explained "
                        "variance (SAEBench's, 1 - the global fvu), MSE, cossim, l2 ratio, relative reconstruction bias, "
                        "L0 and its distribution, latents that never fire on these rows, the fractions alive and firing "
                        "on over 1% and 10% of rows, a log10 histogram of fire rates, dead latents by the training counters "
                        "(for a run directory), each decoder row's largest cosine to another (mean and 99th percentile), "
                        "and neighbour preservation: for --queries rows chosen by --seed, their 10 nearest other rows by "
                        "cosine, exact, among the evaluated rows, once by the original vectors (x_q against every x) and "
                        "once by the reconstructions (x_hat_q against every x_hat); recall@10 is the share of the first "
                        "list found in the second, nDCG@10 the same with relevance 1 for a row of the first list and "
                        "weight 1/log2(rank + 1). A latent fires on a row when it is in the row's top-k with activation "
                        "> 0. Rows holding NaN or Inf are left out and counted. Definitions: docs/eval.md. With --labels, "
                        "k-sparse probing as SAEBench does it: for each class with enough rows, one balanced "
                        "one-vs-rest task; the k = 1, 2, 5, 20 latents whose mean activation differs most between "
                        "the class and the rest, an L2 logistic regression on them (standardised), its accuracy "
                        "on 20% of rows held out; the mean over the classes, next to the same probe on the "
                        "embedding's k dims chosen the same way and on all its dims (docs/probing.md).";
    uint64_t max_rows = 0, queries = 1000, seed = 0;
    int threads = 0, as_json = 0;
    data_args da;
    char *pos[2], where[PATH_CAP], err[1024];
    lsae_model *m;
    lsae_dataset *ds;
    eval_options eo;
    eval_metrics em;
    eval_result e;
    probe_options po;
    probe_result pr;
    opt o[] = {
        OPT_GROUP("options"),
        OPT("--json", NULL, O_FLAG, &as_json, NULL, NULL, "print one JSON object instead of text"),
        OPT("--max-rows", NULL, O_U64, &max_rows, "N", "all", "evaluate only the first N rows"),
        OPT("--queries", NULL, O_U64, &queries, "N", "1000", "neighbour-preservation queries, a sample of the evaluated rows (0: skip)"),
        OPT("--seed", NULL, O_U64, &seed, "N", "0", "which rows are the queries"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores", "threads for encoding and the metrics"),
        OPT_GROUP("probing"),
        OPT("--labels", NULL, O_STR, &po.labels_path, "FILE", NULL, "one label per row (rows past its end or with an empty label are left out): k-sparse probing, k = 1, 2, 5, 20"),
        OPT("--probe-min-rows", NULL, O_U64, &po.min_class_rows, "N", "100", "probe each class with at least N rows, one-vs-rest (smaller ones are only negatives); report the mean held-out accuracy over them"),
        OPT("--probe-seed", NULL, O_U64, &po.seed, "N", "0", "which rows are held out (1 in 5) and which negatives are drawn"),
        DEVICE_OPTS(device, precision, prepass),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    memset(&po, 0, sizeof po);
    po.min_class_rows = 100;
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 2) != 2) usage_fail("give MODEL and EMBEDDINGS");
    if (threads < 0) usage_fail("--threads must be >= 0");
    if (po.labels_path && po.min_class_rows < 2) usage_fail("--probe-min-rows must be >= 2");
    m = open_model(pos[0], where);
    place_model(m, device, precision, prepass);
    lsae_model_set_num_threads(m, threads);
    ds = open_data(pos[1], &da);
    catch_signals();
    memset(&eo, 0, sizeof eo);
    eo.max_rows = max_rows;
    eo.queries = queries;
    eo.seed = seed;
    eo.threads = threads;
    if (!eval_compute(m, ds, &eo, &em, err, sizeof err)) fail("%s: %s", pos[1], err);
    memset(&e, 0, sizeof e);
    e.model = where;
    e.data = pos[1];
    e.m = &em;
    eval_buckets(&e);
    e.have_dead = training_dead(where, m, &e.n_dead, &e.dead_step, &e.dead_threshold, e.why, sizeof e.why);
    if (po.labels_path) {
        po.max_rows = max_rows;
        po.threads = threads;
        probe_run(m, ds, &po, &pr);
        e.probing = &pr;
    }
    if (as_json) eval_print_json(&e);
    else eval_print_text(&e);
    if (e.probing) probe_free(&pr);
    eval_metrics_free(&em);
    lsae_dataset_close(ds);
    lsae_model_free(m);
    return 0;
}
