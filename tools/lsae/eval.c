/* eval.c - lsae eval: how well a model reconstructs embeddings, and how it
   uses its latents.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

/* Dead latents by the trainer's own counters, when MODEL is a run directory
   with a checkpoint: latents out of every top-k for more than
   dead_feature_threshold training samples. Returns 0 when not available. */
static int training_dead(const char *where, const lsae_model *m, size_t *n_dead, double *step, double *threshold, char *why, size_t why_cap)
{
    char ck[PATH_CAP];
    run_settings run;
    lsae_config cfg;
    lsae_model *m2 = NULL;
    lsae_trainer *tr = NULL;
    lsae_trainer_state st;
    size_t L = lsae_model_num_latents(m), l;
    uint64_t *since;
    int ok = 0;
    join_path(ck, where, "checkpoint");
    snprintf(why, why_cap, "needs a run directory with checkpoint/ (lsae train writes one)");
    if (!is_dir(ck) || !run_settings_read(where, &run)) return 0;
    cfg = *lsae_model_config(m);
    cfg.dead_feature_threshold = run.dead_feature_threshold;
    cfg.init_b_dec = 0;
    run_settings_free(&run);
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

/* What eval measures, for its two ways of printing it. */
typedef struct eval_result {
    const char *model, *data;
    const scan *s;
    double fvu, fvu_per_dim, mse, l0;
    size_t dims_varying, never_fired;
    uint64_t hist[NBUCKET], hist_max;
    int have_dead;        /* the training counters were read: */
    size_t n_dead;
    double dead_step, dead_threshold;
    char why[1200];       /* ... or why not */
    const probe_result *probing; /* --labels, or NULL */
} eval_result;

/* fvu in its two forms from the scan's per-dimension sums (docs/math.md,
   sections 2.1 and 2.2): the global one, sum of squared errors over total
   variance, and latent-sae 2024's mean over dimensions of the per-dimension
   ratio, over the dimensions that vary. */
static void eval_measure(eval_result *e, const scan *s)
{
    double N = (double)s->rows, tv = 0, sse = 0, perdim = 0;
    size_t j, l;
    int b;
    for (j = 0; j < s->d; ++j) {
        /* variance of dim j from shifted sums: sum (x - mean)^2 = sxx - sx^2 / N */
        double tvj = s->sxx[j] - s->sx[j] * s->sx[j] / N;
        if (tvj < 0) tvj = 0;
        tv += tvj;
        sse += s->se[j];
        if (tvj > 0) { perdim += s->se[j] / tvj; e->dims_varying++; }
    }
    e->fvu = tv > 0 ? sse / tv : NAN;
    e->fvu_per_dim = e->dims_varying ? perdim / (double)e->dims_varying : NAN;
    e->mse = sse / (N * (double)s->d);
    e->l0 = (double)s->active / N;
    for (l = 0; l < s->L; ++l) {
        b = bucket_of(s->fires[l], s->rows);
        e->hist[b]++;
        if (e->hist[b] > e->hist_max) e->hist_max = e->hist[b];
        e->never_fired += s->fires[l] == 0;
    }
}

static void eval_print_json(const eval_result *e)
{
    const scan *s = e->s;
    int b;
    printf("{\"model\": ");
    json_str(stdout, e->model);
    printf(", \"data\": ");
    json_str(stdout, e->data);
    printf(", \"rows\": %llu, \"rows_skipped\": %llu, \"d_in\": %zu, \"num_latents\": %zu, \"k\": %zu",
           (unsigned long long)s->rows, (unsigned long long)s->skipped, s->d, s->L, s->k);
    printf(", \"fvu\": "); json_num(stdout, e->fvu);
    printf(", \"fvu_per_dim\": "); json_num(stdout, e->fvu_per_dim);
    printf(", \"dims_varying\": %zu", e->dims_varying);
    printf(", \"mse\": "); json_num(stdout, e->mse);
    printf(", \"l0\": "); json_num(stdout, e->l0);
    printf(", \"never_fired\": %zu", e->never_fired);
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
    const scan *s = e->s;
    char ev[32];
    int b;
    printf("eval of %s on %s\n", e->model, e->data);
    printf("  %llu rows", (unsigned long long)s->rows);
    if (s->skipped) printf(" (%llu more left out for NaN/Inf)", (unsigned long long)s->skipped);
    printf(", d_in %zu, %zu latents, k %zu\n\n", s->d, s->L, s->k);
    printf("reconstruction\n");
    printf("  fvu                  %-10.4f global, sparsify 2025: sum of squared errors / total variance\n", e->fvu);
    printf("  fvu (per-dim mean)   %-10.4f latent-sae 2024: mean over dims of squared error / variance\n", e->fvu_per_dim);
    if (e->dims_varying < s->d)
        printf("                                  (over the %zu dims that vary; %zu constant dims have no variance to explain)\n",
               e->dims_varying, s->d - e->dims_varying);
    snprintf(ev, sizeof ev, "%.2f%%", 100.0 * (1.0 - e->fvu));
    printf("  explained variance   %-10s 1 - fvu\n", ev);
    printf("  mse                  %-10.4g mean over rows and dims of (x - x_hat)^2\n", e->mse);
    printf("sparsity\n");
    printf("  L0                   %-10.2f active latents per row (k = %zu)\n", e->l0, s->k);
    printf("latents\n");
    printf("  never fired          %-10zu %.2f%% of latents: not active on any of these rows\n", e->never_fired,
           100.0 * (double)e->never_fired / (double)s->L);
    if (e->have_dead)
        printf("  dead (training)      %-10zu %.2f%%: out of every top-k for > %.0f samples at step %.0f\n", e->n_dead,
               100.0 * (double)e->n_dead / (double)s->L, e->dead_threshold, e->dead_step);
    else
        printf("  dead (training)      n/a        %s\n", e->why);
    printf("fire rate (fraction of rows a latent is active on): latents per bucket\n");
    for (b = 0; b < NBUCKET; ++b) {
        int bar = e->hist_max ? (int)((40.0 * (double)e->hist[b] + (double)e->hist_max - 1) / (double)e->hist_max) : 0;
        printf("  %-12s %8llu  ", bucket_name[b], (unsigned long long)e->hist[b]);
        while (bar-- > 0) putchar('#');
        putchar('\n');
    }
    if (e->probing) { putchar('\n'); probe_write_text(stdout, e->probing, s->d); }
}

static int cmd_eval(int argc, char **argv)
{
    const char *device = NULL, *precision = NULL;
    const char *usage = "lsae eval MODEL EMBEDDINGS [options]";
    const char *about = "Measure how well MODEL reconstructs EMBEDDINGS and how it uses its latents: fvu in two forms "
                        "(the global one, sum of squared errors over total variance, used by sparsify since 2025, and "
                        "latent-sae 2024's mean of per-dimension ratios; they differ, so each is labelled), MSE, L0, "
                        "latents that never fire on these rows, dead latents by the training counters (for a run "
                        "directory), and a histogram of fire rates. A latent fires on a row when it is in the row's "
                        "top-k with activation > 0. Rows holding NaN or Inf are left out and counted.";
    uint64_t max_rows = 0;
    int threads = 0, as_json = 0;
    data_args da;
    char *pos[2], where[PATH_CAP];
    lsae_model *m;
    lsae_dataset *ds;
    scan s;
    eval_result e;
    probe_options po;
    probe_result pr;
    opt o[] = {
        OPT_GROUP("options"),
        OPT("--json", NULL, O_FLAG, &as_json, NULL, NULL, "print one JSON object instead of text"),
        OPT("--max-rows", NULL, O_U64, &max_rows, "N", "all", "evaluate only the first N rows"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores", "threads for encoding"),
        OPT_GROUP("probing"),
        OPT("--labels", NULL, O_STR, &po.labels_path, "FILE", NULL, "one label per row: k-sparse probing, k = 1, 2, 5, 20 (probe.c's top comment)"),
        OPT("--probe-min-rows", NULL, O_U64, &po.min_class_rows, "N", "100", "probe each class with at least N labelled rows, one-vs-rest; report the mean held-out accuracy"),
        OPT("--probe-seed", NULL, O_U64, &po.seed, "N", "0", "which rows are held out (1 in 5) and which negatives are drawn"),
        DEVICE_OPTS(device, precision),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    memset(&po, 0, sizeof po);
    po.min_class_rows = 100;
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 2) != 2) usage_fail("give MODEL and EMBEDDINGS");
    if (threads < 0) usage_fail("--threads must be >= 0");
    if (po.labels_path && po.min_class_rows < 2) usage_fail("--probe-min-rows must be >= 2");
    m = open_model(pos[0], where);
    place_model(m, device, precision);
    lsae_model_set_num_threads(m, threads);
    ds = open_data(pos[1], &da);
    catch_signals();
    scan_run(&s, m, ds, 0, 1, max_rows, "evaluating");
    if (s.rows < 2) fail("%s: %llu finite rows; fvu needs at least 2", pos[1], (unsigned long long)s.rows);
    memset(&e, 0, sizeof e);
    e.model = where;
    e.data = pos[1];
    e.s = &s;
    eval_measure(&e, &s);
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
    scan_free(&s);
    lsae_dataset_close(ds);
    lsae_model_free(m);
    return 0;
}
