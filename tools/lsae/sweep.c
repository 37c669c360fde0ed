/* sweep.c - lsae sweep: a grid of SAEs trained in one pass over the data,
   then evaluated, with a page that shows which to keep.

   Every model of the grid is an lsae train run of its own (a directory
   under --out with cfg.json, sae.safetensors, checkpoint/, run.json and
   metrics.jsonl, so lsae eval, report and info work on each), made by
   train.c's own code from a command line the sweep writes for it. What the
   sweep adds is the loop: one loader reads each batch once and the batch
   goes to every model's trainer in turn, as SAELens and dictionary_learning
   train several SAEs from one activation buffer. The loader's order is a
   function of the data, --batch-size, --seed, --no-shuffle, --epochs and
   --max-samples alone (train_loader_open), so each model sees exactly the
   batches lsae train would show it alone, and its model is the same, bit
   for bit. Those flags are therefore one value for the whole sweep; the
   flags that only shape a model or its optimizer may be comma lists, and
   the grid is their cartesian product.

   Resume. Every model saves its checkpoint (with the loader position,
   rows_read) at the same batches. A kill between two models' saves leaves
   some a save ahead of the others, so --resume starts the shared loader at
   the smallest position and feeds each model only the batches after its
   own: every model continues exactly where its checkpoint stands.

   Then each model is evaluated with eval_compute (metrics.c; the metrics are
   defined in docs/eval.md) and DIR/sweep.json and DIR/sweep.html are
   written: the table, and the Pareto fronts of fvu, neighbour recall@10 and
   dead fraction against L0 as inline SVG.
   Part of lsae's one translation unit: included by main.c after report.c,
   whose nice_step, html_text and REPORT_CSS the page uses. */

#define SWEEP_MAX_MODELS 1024

/* The flags that may be lists: they shape one model and its optimizer and
   nothing the other models share. `key` names the flag in sweep.json; `tag`
   marks its value in a model's directory name. */
static const struct sweep_listable {
    const char *flag, *key, *tag;
} sweep_listable[] = {
    { "--k", "k", "" },
    { "--expansion-factor", "expansion_factor", "" },
    { "--num-latents", "num_latents", "" },
    { "--lr", "lr", "lr" },
    { "--lr-warmup-steps", "lr_warmup_steps", "warmup" },
    { "--lr-schedule", "lr_schedule", "" },
    { "--auxk-alpha", "auxk_alpha", "auxk" },
    { "--dead-feature-threshold", "dead_feature_threshold", "dead" },
    { "--sae-type", "sae_type", "" },
    { "--batchtopk-threshold-beta", "batchtopk_threshold_beta", "beta" },
    { "--k-anneal-start", "k_anneal_start", "kstart" },
    { "--k-anneal-pct", "k_anneal_pct", "kpct" },
};

/* Flags whose one value is itself a comma list (a Matryoshka level each):
   a sweep passes them whole to every model, never as a grid axis. */
static int sweep_comma_value(const char *flag)
{
    return !strcmp(flag, "--matryoshka-sizes") || !strcmp(flag, "--matryoshka-ks") || !strcmp(flag, "--matryoshka-loss-weights");
}
#define SWEEP_NLISTABLE (sizeof sweep_listable / sizeof sweep_listable[0])

/* Why a flag cannot be a list: NULL when it can. */
static const char *sweep_why_single(const char *flag)
{
    static const char *order[] = { "--batch-size", "--seed", "--epochs", "--max-samples", NULL };
    static const char *data[] = { "--data", "--texts", "--format", "--tensor", "--raw-dtype", "--d-in", NULL };
    size_t i;
    for (i = 0; i < SWEEP_NLISTABLE; ++i)
        if (!strcmp(flag, sweep_listable[i].flag)) return NULL;
    for (i = 0; order[i]; ++i)
        if (!strcmp(flag, order[i]))
            return "every model of a sweep is fed the same batches, and --batch-size, --seed (the data order), --epochs and "
                   "--max-samples decide which batches those are; run one sweep per value";
    for (i = 0; data[i]; ++i)
        if (!strcmp(flag, data[i])) return "a sweep reads one dataset";
    if (!strcmp(flag, "--grad-acc-steps"))
        return "the models take their optimizer steps, and save their checkpoints with the data position, on the same batches; "
               "run one sweep per value";
    if (!strcmp(flag, "--save-every")) return "the models save their checkpoints together, at the same data position";
    return "it is one setting of the whole sweep";
}

typedef struct sweep_axis {
    const char *flag, *key, *tag;
    char *copy;          /* the list as given, cut at its commas */
    char **v;            /* its values */
    size_t n;
} sweep_axis;

typedef struct sweep_args {
    const char *out, *resume, *eval_data;
    uint64_t eval_rows, queries;
    int eval_given;                      /* --eval-data, --eval-rows or --queries on this command line */
    int threads;                         /* --threads, for the split of the cores */
    char **pass;                         /* the train flags given once: name (and value) as every model gets them */
    size_t npass;
    sweep_axis axis[SWEEP_NLISTABLE];
    size_t naxes;
    train_args *table;                   /* train's flag table (train_options), for the names */
} sweep_args;

/* One model of the sweep: its run, and what the page shows of it. */
typedef struct sweep_model {
    train_run *t;
    char dir[PATH_CAP];                  /* under --out */
    const char *name;                    /* the last part of dir */
    char **argv;                         /* the command line its run was parsed from (train_args points into it) */
    size_t argc;
    size_t *value;                       /* [naxes] which value of each axis */
    double train_fvu, train_dead_pct;    /* the last 20 logged steps' mean fvu; the last dead % */
    uint64_t train_steps;
    int have_eval;
    eval_metrics em;
    int front_fvu, front_recall, front_dead;
} sweep_model;

typedef struct sweep {
    sweep_args a;
    int resuming;
    char outbuf[PATH_CAP], json_path[PATH_CAP];
    size_t n;
    sweep_model *m;
    lsae_loader *ld;
    uint64_t position0;                  /* where the shared loader starts: the smallest checkpoint position */
    uint64_t S;
    char *eval_data_owned;               /* --eval-data read back from sweep.json */
} sweep;

/* ------------------------------------------------------ the command line */

static void sweep_add_pass(sweep_args *sa, const char *s)
{
    sa->pass = (char **)xrealloc(sa->pass, (sa->npass + 1) * sizeof(char *));
    sa->pass[sa->npass++] = (char *)s;
}

static void sweep_parse(int argc, char **argv, sweep_args *sa)
{
    const char *usage = "lsae sweep --data PATH --k 32,64,128 --expansion-factor 16,32 [train options] --out DIR";
    const char *about =
        "Train a grid of SAEs in one pass over the data: each batch is read once and fed to every model. These "
        "train flags may be comma lists, and the grid is their cartesian product: --k, --expansion-factor, "
        "--num-latents, --lr, --lr-warmup-steps, --lr-schedule, --auxk-alpha, --dead-feature-threshold, --sae-type, "
        "--batchtopk-threshold-beta, --k-anneal-start, --k-anneal-pct. --matryoshka-sizes, --matryoshka-ks and "
        "--matryoshka-loss-weights are one comma list each, the same for every model. The "
        "others take one value for all models: --batch-size, --seed, --epochs, --max-samples and --no-shuffle "
        "decide the batches every model shares, and --grad-acc-steps and --save-every when the models step and "
        "save together. Each model is an lsae train run in its own directory under --out (lsae eval, report and "
        "info work on it) and equals the model lsae train trains alone with the same flags, bit for bit. After "
        "training every model is evaluated (fvu, L0, dead fraction, neighbour recall@10 and the rest of lsae "
        "eval's metrics) on --eval-data, by default the training data itself (in-sample). --out gets "
        "sweep.json (the grid, each model's settings, training and evaluation metrics) and sweep.html (a table "
        "and the Pareto fronts against L0, one file, no network). Ctrl-C saves every model; --resume DIR "
        "continues them exactly.";
    train_args *ta = (train_args *)xcalloc(1, sizeof(train_args));
    opt o[TRAIN_MAX_OPTS + 8];
    const char *sval[TRAIN_MAX_OPTS];
    int fval[TRAIN_MAX_OPTS];
    size_t n = 0, i, j, first_train;
    char *pos[1];
    train_options(ta);
    sa->table = ta;
    sa->queries = 1000;
    opt own[] = {
        OPT_GROUP("sweep"),
        OPT("--out", "-o", O_STR, &sa->out, "DIR", "checkpoints/sweep.<run id>", "the sweep's directory: one run directory per model, sweep.json, sweep.html"),
        OPT("--resume", NULL, O_STR, &sa->resume, "DIR", NULL, "continue the sweep in DIR: every model from its checkpoint"),
        OPT("--eval-data", NULL, O_STR, &sa->eval_data, "PATH", "the training data (in-sample)", "embeddings to evaluate the trained models on (a held-out set)"),
        OPT("--eval-rows", NULL, O_U64, &sa->eval_rows, "N", "0 = all", "evaluate on the first N rows"),
        OPT("--queries", NULL, O_U64, &sa->queries, "N", "1000", "neighbour-preservation queries per model (0: skip)"),
    };
    n = sizeof own / sizeof own[0];
    memcpy(o, own, sizeof own);
    first_train = n;
    /* train's flags, each value taken as text here (it may be a list); the
       model's own train_parse reads it later */
    for (i = 0; i < ta->no; ++i) {
        opt c = ta->o[i];
        if (c.name && (!strcmp(c.name, "--out") || !strcmp(c.name, "--resume"))) continue;
        if (c.name && c.kind == O_FLAG) c.dst = &fval[n - first_train];
        else if (c.name) {
            c.kind = O_STR;
            c.dst = &sval[n - first_train];
        }
        o[n++] = c;
    }
    memset(sval, 0, sizeof sval);
    memset(fval, 0, sizeof fval);
    if (parse_args(argc, argv, o, n, usage, about, pos, 0) != 0) usage_fail("lsae sweep takes no positional arguments");
    sa->eval_given = opt_seen(o, n, "--eval-data") || opt_seen(o, n, "--eval-rows") || opt_seen(o, n, "--queries");
    for (i = first_train; i < n; ++i) {
        const char *v = sval[i - first_train];
        const struct sweep_listable *ls = NULL;
        sweep_axis *ax;
        char *p;
        if (!o[i].name || !o[i].seen) continue;
        if (!strcmp(o[i].name, "--init")) usage_fail("--init is for one run (lsae train --init); a sweep starts every model fresh");
        if (!strcmp(o[i].name, "--stop-at-step")) usage_fail("--stop-at-step is for one run (lsae train); stop a sweep with Ctrl-C, which saves every model's checkpoint");
        if (!strcmp(o[i].name, "--threads")) sa->threads = atoi(v);
        if (o[i].kind == O_FLAG) {
            sweep_add_pass(sa, (char *)o[i].name);
            continue;
        }
        if (!strchr(v, ',') || sweep_comma_value(o[i].name)) {
            sweep_add_pass(sa, (char *)o[i].name);
            sweep_add_pass(sa, (char *)v);
            continue;
        }
        if (sa->resume) usage_fail("%s %s: a resumed sweep keeps its grid (sweep.json); lists are for a new sweep", o[i].name, v);
        for (j = 0; j < SWEEP_NLISTABLE; ++j)
            if (!strcmp(sweep_listable[j].flag, o[i].name)) ls = &sweep_listable[j];
        if (!ls) usage_fail("%s cannot be a list (%s): %s", o[i].name, v, sweep_why_single(o[i].name));
        ax = &sa->axis[sa->naxes++];
        ax->flag = ls->flag; ax->key = ls->key; ax->tag = ls->tag;
        ax->copy = (char *)xmalloc(strlen(v) + 1);
        strcpy(ax->copy, v);
        ax->v = (char **)xmalloc((strlen(v) + 1) * sizeof(char *));
        for (p = ax->copy;;) {
            char *c = strchr(p, ',');
            if (c) *c = 0;
            if (!*p) usage_fail("%s %s: an empty value in the list", ax->flag, v);
            for (j = 0; j < ax->n; ++j)
                if (!strcmp(ax->v[j], p)) usage_fail("%s %s lists %s twice", ax->flag, v, p);
            ax->v[ax->n++] = p;
            if (!c) break;
            p = c + 1;
        }
    }
    if (sa->threads < 0) usage_fail("--threads must be >= 0");
}

/* ---------------------------------------------------------- the models */

/* A model's directory name: sae_<k>_<expansion> as latent-sae names runs
   (sae_<k>_L<latents> when the latents are no multiple of d_in), then each
   other axis' value, e.g. sae_32_16_lr0.001; characters outside
   [A-Za-z0-9.+-] become '_'. */
static void sweep_model_name(const sweep *sw, const sweep_model *sm, char *out, size_t cap)
{
    const train_run *t = sm->t;
    size_t i, len;
    if (t->L % t->d == 0) snprintf(out, cap, "sae_%llu_%zu", (unsigned long long)t->cfg.k, t->L / t->d);
    else snprintf(out, cap, "sae_%llu_L%zu", (unsigned long long)t->cfg.k, t->L);
    for (i = 0; i < sw->a.naxes; ++i) {
        const sweep_axis *ax = &sw->a.axis[i];
        if (!strcmp(ax->flag, "--k") || !strcmp(ax->flag, "--expansion-factor") || !strcmp(ax->flag, "--num-latents")) continue;
        len = strlen(out);
        snprintf(out + len, cap - len, "_%s%s", ax->tag, ax->v[sm->value[i]]);
    }
    for (i = 0; out[i]; ++i)
        if (!isalnum((unsigned char)out[i]) && !strchr(".+-_", out[i])) out[i] = '_';
}

/* Model `idx` of the grid as an lsae train command line: the flags given
   once, then this model's value of each axis (the first axis varies
   slowest). */
static void sweep_model_argv(const sweep_args *sa, sweep_model *sm, size_t idx)
{
    size_t i, rest = idx;
    sm->argv = (char **)xmalloc((sa->npass + 2 * sa->naxes + 1) * sizeof(char *));
    sm->value = (size_t *)xcalloc(sa->naxes + 1, sizeof(size_t));
    for (i = 0; i < sa->npass; ++i) sm->argv[sm->argc++] = sa->pass[i];
    for (i = sa->naxes; i-- > 0;) {
        sm->value[i] = rest % sa->axis[i].n;
        rest /= sa->axis[i].n;
    }
    for (i = 0; i < sa->naxes; ++i) {
        sm->argv[sm->argc++] = (char *)sa->axis[i].flag;
        sm->argv[sm->argc++] = sa->axis[i].v[sm->value[i]];
    }
    sm->argv[sm->argc] = NULL;
}

/* The models of a new sweep, each parsed and checked as lsae train would. */
static void sweep_new_models(sweep *sw)
{
    sweep_args *sa = &sw->a;
    size_t i, j, n = 1;
    for (i = 0; i < sa->naxes; ++i) {
        if (n > SWEEP_MAX_MODELS / sa->axis[i].n) usage_fail("the grid has more than %d models", SWEEP_MAX_MODELS);
        n *= sa->axis[i].n;
    }
    sw->n = n;
    sw->m = (sweep_model *)xcalloc(n, sizeof(sweep_model));
    for (i = 0; i < n; ++i) {
        sweep_model *sm = &sw->m[i];
        sweep_model_argv(sa, sm, i);
        sm->t = (train_run *)xcalloc(1, sizeof(train_run));
        train_parse((int)sm->argc, sm->argv, &sm->t->a);
        make_run_id(sm->t->run_id);
        for (j = 0; j < i; ++j) /* run ids only need to differ inside one sweep, but they must */
            if (!strcmp(sw->m[j].t->run_id, sm->t->run_id)) { make_run_id(sm->t->run_id); j = (size_t)-1; }
        train_check(sm->t);
    }
}

/* The models of a sweep to resume: the directories sweep.json lists, each
   resumed as lsae train --resume would, with the flags given now (those a
   resume may change). */
static void sweep_resume_models(sweep *sw)
{
    sweep_args *sa = &sw->a;
    json_doc doc;
    size_t arr, tok, i;
    if (!is_dir(sa->resume)) fail("%s: no such sweep directory", sa->resume);
    join_path(sw->json_path, sa->resume, "sweep.json");
    if (!json_load(sw->json_path, &doc)) fail("%s: no sweep.json here; --resume takes a directory written by lsae sweep", sa->resume);
    arr = lsae__json_get(&doc.j, 0, "models");
    if (!arr || doc.j.tok[arr].type != LSAE__J_ARR || doc.j.tok[arr].size == 0) fail("%s: lists no models", sw->json_path);
    sw->n = doc.j.tok[arr].size;
    sw->m = (sweep_model *)xcalloc(sw->n, sizeof(sweep_model));
    for (i = 0, tok = arr + 1; i < sw->n; ++i, tok = doc.j.tok[tok].next) {
        sweep_model *sm = &sw->m[i];
        char *name = json_str_of(&doc, tok, "dir");
        size_t j;
        if (!name || !*name || strchr(name, '/') || !strcmp(name, "..")) fail("%s: model %zu has no directory name", sw->json_path, i);
        join_path(sm->dir, sa->resume, name);
        free(name);
        sm->argv = (char **)xmalloc((sa->npass + 3) * sizeof(char *));
        sm->argv[sm->argc++] = (char *)"--resume";
        sm->argv[sm->argc++] = sm->dir;
        for (j = 0; j < sa->npass; ++j) sm->argv[sm->argc++] = sa->pass[j];
        sm->argv[sm->argc] = NULL;
        sm->value = (size_t *)xcalloc(1, sizeof(size_t));
        sm->t = (train_run *)xcalloc(1, sizeof(train_run));
        sm->t->fresh_ok = 1; /* killed before its first save: it starts over, from its run.json */
        train_parse((int)sm->argc, sm->argv, &sm->t->a);
        train_resume_settings(sm->t);
        train_check(sm->t);
    }
    json_doc_free(&doc);
    sw->resuming = 1;
}

/* One dataset for all: opened by the first model, lent to the others. */
static void sweep_open_data(sweep *sw)
{
    train_run *t0 = sw->m[0].t;
    size_t i;
    train_open_data(t0);
    t0->shares_data = 1;
    for (i = 1; i < sw->n; ++i) {
        train_run *t = sw->m[i].t;
        t->ds = t0->ds;
        t->d = t0->d;
        t->rows = t0->rows;
        memcpy(t->data_abs, t0->data_abs, sizeof t->data_abs);
        memcpy(t->texts_abs, t0->texts_abs, sizeof t->texts_abs);
        t->shares_data = 1;
        if (t->resuming && (t->saved.rows != t->rows || t->saved.d_in != t->d))
            fail("%s has %llu rows of %zu, but %s was trained on %llu rows of %llu: resume needs the same data", t0->a.data,
                 (unsigned long long)t->rows, t->d, t->a.out, (unsigned long long)t->saved.rows, (unsigned long long)t->saved.d_in);
    }
}

/* Configs, plans and directories; then models, trainers and checkpoints,
   and the one loader at the smallest checkpoint position. */
static void sweep_start(sweep *sw)
{
    size_t i, j;
    for (i = 0; i < sw->n; ++i) {
        sweep_model *sm = &sw->m[i];
        train_run *t = sm->t;
        train_make_config(t);
        if (!sw->resuming) {
            char name[512];
            sweep_model_name(sw, sm, name, sizeof name);
            join_path(sm->dir, sw->a.out, name);
            for (j = 0; j < i; ++j)
                if (!strcmp(sw->m[j].dir, sm->dir)) usage_fail("two models of the grid would share the directory %s", name);
            t->a.out = sm->dir;
        }
        sm->name = strrchr(sm->dir, '/') ? strrchr(sm->dir, '/') + 1 : sm->dir;
        train_plan(t);
        if (i && t->S != sw->S) fail("internal: the models of a sweep plan different numbers of steps");
        sw->S = t->S;
    }
    sw->position0 = UINT64_MAX;
    for (i = 0; i < sw->n; ++i) {
        train_run *t = sw->m[i].t;
        t->quiet = 1;
        train_start(t);
        if (t->rows_read0 < sw->position0) sw->position0 = t->rows_read0;
    }
    sw->ld = train_loader_open(&sw->m[0].t->a, sw->m[0].t->ds, sw->position0);
    for (i = 0; i < sw->n; ++i) sw->m[i].t->ld = sw->ld;
}

/* ------------------------------------------------------------ sweep.json */

static void sweep_write_json(sweep *sw, const char *status)
{
    const train_run *t0 = sw->m[0].t;
    out_file of;
    FILE *f = out_open(&of, sw->json_path);
    size_t i, j;
    fprintf(f, "{\n  \"lsae_version\": \"%s\",\n  \"status\": \"%s\",\n  \"data\": ", lsae_version_string(), status);
    json_str(f, t0->data_abs);
    fprintf(f, ",\n  \"rows\": %llu,\n  \"d_in\": %zu,\n", (unsigned long long)t0->rows, t0->d);
    /* what every model shares: the batches and the optimizer steps */
    fprintf(f, "  \"shared\": {\"batch_size\": %llu, \"grad_acc_steps\": %llu, \"epochs\": %llu, \"max_samples\": %llu, \"shuffle\": %s, "
               "\"seed\": \"%llu\", \"total_steps\": %llu, \"save_every\": %llu},\n",
            (unsigned long long)t0->a.batch, (unsigned long long)t0->a.grad_acc, (unsigned long long)t0->a.epochs,
            (unsigned long long)t0->a.max_samples, t0->a.no_shuffle ? "false" : "true", (unsigned long long)t0->a.seed,
            (unsigned long long)sw->S, (unsigned long long)t0->a.save_every);
    /* the grid: each list as given (a resumed sweep keeps the one it read) */
    fputs("  \"grid\": {", f);
    for (i = 0; i < sw->a.naxes; ++i) {
        fprintf(f, "%s\"%s\": [", i ? ", " : "", sw->a.axis[i].key);
        for (j = 0; j < sw->a.axis[i].n; ++j) {
            if (j) fputs(", ", f);
            json_str(f, sw->a.axis[i].v[j]);
        }
        fputc(']', f);
    }
    fputs("},\n  \"eval\": {\"data\": ", f);
    json_str(f, sw->a.eval_data ? sw->a.eval_data : t0->data_abs);
    fprintf(f, ", \"in_sample\": %s, \"max_rows\": %llu, \"queries\": %llu},\n  \"models\": [", sw->a.eval_data ? "false" : "true",
            (unsigned long long)sw->a.eval_rows, (unsigned long long)sw->a.queries);
    for (i = 0; i < sw->n; ++i) {
        const sweep_model *sm = &sw->m[i];
        const train_run *t = sm->t;
        fprintf(f, "%s\n    {\"dir\": ", i ? "," : "");
        json_str(f, sm->name);
        fputs(", \"run_id\": ", f);
        json_str(f, t->run_id);
        fprintf(f, ",\n     \"settings\": {\"k\": %zu, \"num_latents\": %zu, \"expansion_factor\": %zu, \"multi_topk\": %s, "
                   "\"normalize_decoder\": %s, \"lr\": %.9g, \"lr_auto\": %s, \"lr_warmup_steps\": %llu, \"lr_schedule\": \"%s\", "
                   "\"auxk_alpha\": %.9g, \"dead_feature_threshold\": %llu},\n",
                t->cfg.k, t->L, t->L % t->d == 0 ? t->L / t->d : 0, t->cfg.multi_topk ? "true" : "false",
                t->cfg.normalize_decoder ? "true" : "false", lsae_config_lr(&t->cfg), t->a.lr > 0 ? "false" : "true",
                (unsigned long long)t->a.warmup, schedule_name(t->schedule), t->a.auxk_alpha, (unsigned long long)t->a.dead_thr);
        fprintf(f, "     \"train\": {\"steps\": %llu, \"fvu\": ", (unsigned long long)sm->train_steps);
        json_num(f, sm->train_fvu);
        fputs(", \"dead_pct\": ", f);
        json_num(f, sm->train_dead_pct);
        fputs("},\n     \"eval\": ", f);
        if (!sm->have_eval) fputs("null", f);
        else {
            fputc('{', f);
            eval_metrics_write_json_summary(f, &sm->em);
            fputc('}', f);
        }
        fprintf(f, ",\n     \"pareto\": {\"fvu\": %s, \"neighbour_recall\": %s, \"dead_fraction\": %s}", sm->front_fvu ? "true" : "false",
                sm->front_recall ? "true" : "false", sm->front_dead ? "true" : "false");
        fputs(",\n     \"grid\": {", f);
        for (j = 0; j < sw->a.naxes; ++j) {
            fprintf(f, "%s\"%s\": ", j ? ", " : "", sw->a.axis[j].key);
            json_str(f, sw->a.axis[j].v[sm->value[j]]);
        }
        fputs("}}", f);
    }
    fputs("\n  ]\n}\n", f);
    out_commit(&of);
}

/* A resumed sweep's grid, read back from its sweep.json (for the page and
   the file, which keep it), and its evaluation settings unless given anew;
   the models are matched by directory. */
static void sweep_read_grid(sweep *sw)
{
    json_doc doc;
    size_t g, i, tok, mt, ev;
    if (!json_load(sw->json_path, &doc)) return;
    ev = lsae__json_get(&doc.j, 0, "eval");
    if (ev && !sw->a.eval_given) {
        sw->a.eval_rows = json_u64_of(&doc, ev, "max_rows", 0);
        sw->a.queries = json_u64_of(&doc, ev, "queries", sw->a.queries);
        if (json_num_of(&doc, ev, "in_sample", 1) == 0) sw->a.eval_data = sw->eval_data_owned = json_str_of(&doc, ev, "data");
    }
    g = lsae__json_get(&doc.j, 0, "grid");
    if (g && doc.j.tok[g].type == LSAE__J_OBJ) {
        for (i = 0, tok = g + 1; i < doc.j.tok[g].size && sw->a.naxes < SWEEP_NLISTABLE; ++i) {
            size_t key = tok, val = tok + 1, j, e;
            char kb[64];
            const struct sweep_listable *ls = NULL;
            tok = doc.j.tok[val].next;
            if (!lsae__json_str(&doc.j, key, kb, sizeof kb) || doc.j.tok[val].type != LSAE__J_ARR) continue;
            for (j = 0; j < SWEEP_NLISTABLE; ++j)
                if (!strcmp(sweep_listable[j].key, kb)) ls = &sweep_listable[j];
            if (!ls) continue;
            {
                sweep_axis *ax = &sw->a.axis[sw->a.naxes++];
                ax->flag = ls->flag; ax->key = ls->key; ax->tag = ls->tag;
                ax->v = (char **)xcalloc(doc.j.tok[val].size + 1, sizeof(char *));
                for (j = 0, e = val + 1; j < doc.j.tok[val].size; ++j, e = doc.j.tok[e].next) {
                    size_t len = doc.j.tok[e].end - doc.j.tok[e].start + 1;
                    ax->v[ax->n] = (char *)xmalloc(len + 1);
                    if (!lsae__json_str(&doc.j, e, ax->v[ax->n], len + 1)) { free(ax->v[ax->n]); continue; }
                    ax->n++;
                }
            }
        }
    }
    /* each model's position in the grid */
    mt = lsae__json_get(&doc.j, 0, "models");
    for (i = 0, tok = mt + 1; mt && i < doc.j.tok[mt].size && i < sw->n; ++i, tok = doc.j.tok[tok].next) {
        size_t mg = lsae__json_get(&doc.j, tok, "grid"), a;
        free(sw->m[i].value);
        sw->m[i].value = (size_t *)xcalloc(sw->a.naxes + 1, sizeof(size_t));
        for (a = 0; a < sw->a.naxes && mg; ++a) {
            char *v = json_str_of(&doc, mg, sw->a.axis[a].key);
            size_t j;
            for (j = 0; v && j < sw->a.axis[a].n; ++j)
                if (!strcmp(sw->a.axis[a].v[j], v)) sw->m[i].value[a] = j;
            free(v);
        }
    }
    json_doc_free(&doc);
}

/* --------------------------------------------------------------- the loop */

static void sweep_progress(sweep *sw, uint64_t step, double t0, uint64_t samples0, int final)
{
    static double t_last = 0;
    const train_run *t = sw->m[0].t;
    double now = now_s(), rate = (double)(t->samples - samples0) / (now - t0 + 1e-12);
    double fmin = INFINITY, fmax = -INFINITY;
    char etab[32];
    size_t i;
    if (!final && now - t_last < (g_live ? 0.1 : 10.0) && step != t->step0 + 1 &&
        !(t->a.log_every && step % t->a.log_every == 0))
        return;
    t_last = now;
    for (i = 0; i < sw->n; ++i) {
        double e = sw->m[i].t->w.ema;
        if (e < fmin) fmin = e;
        if (e > fmax) fmax = e;
    }
    fmt_duration(etab, sizeof etab, (double)(sw->S - step) * (now - t0) / (double)(step - t->step0 + (step == t->step0)));
    fprintf(stderr, "%sstep %llu/%llu (%.0f%%)  %zu models  %.0f samples/s (x%zu models)  ETA %s  fvu %.4f..%.4f%s", g_live ? "\r\033[K" : "",
            (unsigned long long)step, (unsigned long long)sw->S, 100.0 * (double)step / (double)sw->S, sw->n, rate, sw->n, etab, fmin, fmax,
            g_live ? "" : "\n");
    if (g_live) {
        fflush(stderr);
        g_live_drawn = 1;
    }
}

/* Each batch, read once, goes to every model whose checkpoint is not ahead
   of it; the models take their optimizer steps, and save, on the same
   batches. Returns 1 when stopped by Ctrl-C.

   Threads: the models take their steps one after another, each trainer
   step using every thread (--threads). The other way, models side by side
   with threads / n each (an OpenMP loop over the models), was measured on
   the 2-core Xeon (AVX-512) this was written on, in the same session,
   alternating, 3 runs each, whole sweep including evaluation: k 32,64 x
   expansion 8,16, batch 512, 40 steps: one after another 15.4/15.9/16.0 s,
   side by side 16.2/16.9/16.5 s; k 8,16 x expansion 2,4, batch 128: 6.2/5.4/6.1 s
   against 6.5/5.9/5.3 s (a tie). Each step is a few large products that
   split well over the threads, while models side by side hold two models'
   weights and Adam state in the caches at once, and they would need
   train_feed (files, messages, exits on error) to run on several threads.
   So the simple order it is. */
static int sweep_loop(sweep *sw)
{
    const float *xb;
    size_t nrows, i;
    lsae_loader_stats ls;
    lsae_result r;
    uint64_t samples0 = sw->m[0].t->samples, step = sw->m[0].t->step;
    double t0;
    for (i = 0; i < sw->n; ++i) train_loop_begin(sw->m[i].t);
    t0 = now_s();
    for (;;) {
        int pending = 0, open_window = 0, saved = 0;
        for (i = 0; i < sw->n; ++i) {
            pending |= sw->m[i].t->step < sw->S;
            open_window |= sw->m[i].t->w.batches != 0;
        }
        if (!pending) break;
        if (g_stop && !open_window) return 1;
        lsae_loader_get_stats(sw->ld, &ls);
        if ((r = lsae_loader_next(sw->ld, &xb, &nrows)) != LSAE_OK) lib_fail(r, "reading the data");
        if (nrows == 0) break;
        for (i = 0; i < sw->n; ++i) {
            train_run *t = sw->m[i].t;
            uint64_t before = t->saved_step;
            /* a model whose checkpoint lies ahead (a kill between two
               models' saves) has seen this batch already */
            if (ls.rows_read < t->rows_read0 || t->step >= sw->S) continue;
            train_feed(t, xb, nrows);
            saved |= t->saved_step != before;
        }
        for (i = 0; i < sw->n; ++i)
            if (sw->m[i].t->step > step) step = sw->m[i].t->step;
        if (sw->m[0].t->w.batches == 0) sweep_progress(sw, step, t0, samples0, 0);
        if (saved && !g_live) fprintf(stderr, "saved checkpoints at step %llu\n", (unsigned long long)step);
    }
    sweep_progress(sw, step, t0, samples0, 1);
    return 0;
}

/* -------------------------------------------------------- the evaluation */

/* The Pareto front of (x, y), x smaller is better, y smaller (sign 1) or
   larger (sign -1) is better: a point is on it when no other point is at
   least as good in both and better in one. NaN points are off it. */
static void sweep_front(const double *x, const double *y, double sign, size_t n, int *on)
{
    size_t i, j;
    for (i = 0; i < n; ++i) {
        on[i] = isfinite(x[i]) && isfinite(y[i]);
        for (j = 0; j < n && on[i]; ++j) {
            if (j == i || !isfinite(x[j]) || !isfinite(y[j])) continue;
            if (x[j] <= x[i] && sign * y[j] <= sign * y[i] && (x[j] < x[i] || sign * y[j] < sign * y[i])) on[i] = 0;
        }
    }
}

static void sweep_evaluate(sweep *sw)
{
    lsae_dataset *ds = sw->m[0].t->ds;
    eval_options eo;
    size_t i;
    double *x = (double *)xcalloc(sw->n + 1, sizeof(double)), *y = (double *)xcalloc(sw->n + 1, sizeof(double));
    int *on = (int *)xcalloc(sw->n + 1, sizeof(int));
    char err[512];
    if (sw->a.eval_data) {
        data_args da = sw->m[0].t->a.da;
        ds = open_data(sw->a.eval_data, &da);
    }
    memset(&eo, 0, sizeof eo);
    eo.max_rows = sw->a.eval_rows;
    eo.queries = sw->a.queries;
    eo.seed = sw->m[0].t->a.seed;
    eo.threads = sw->a.threads;
    for (i = 0; i < sw->n; ++i) {
        sweep_model *sm = &sw->m[i];
        if (g_live) fprintf(stderr, "\r\033[Kevaluating %s (%zu of %zu)", sm->name, i + 1, sw->n);
        lsae_model_set_num_threads(sm->t->m, sw->a.threads);
        if (!eval_compute(sm->t->m, ds, &eo, &sm->em, err, sizeof err)) fail("evaluating %s: %s", sm->dir, err);
        sm->have_eval = 1;
        check_interrupted();
    }
    live_clear();
    for (i = 0; i < sw->n; ++i) { x[i] = sw->m[i].em.l0_mean; y[i] = sw->m[i].em.fvu; }
    sweep_front(x, y, 1, sw->n, on);
    for (i = 0; i < sw->n; ++i) sw->m[i].front_fvu = on[i];
    for (i = 0; i < sw->n; ++i) y[i] = sw->m[i].em.queries ? sw->m[i].em.recall_at_10 : NAN;
    sweep_front(x, y, -1, sw->n, on);
    for (i = 0; i < sw->n; ++i) sw->m[i].front_recall = on[i];
    for (i = 0; i < sw->n; ++i) y[i] = sw->m[i].em.dead_fraction;
    sweep_front(x, y, 1, sw->n, on);
    for (i = 0; i < sw->n; ++i) sw->m[i].front_dead = on[i];
    if (sw->a.eval_data) lsae_dataset_close(ds);
    free(x); free(y); free(on);
}

/* ------------------------------------------------------------- the page */

typedef struct sweep_point {
    double x, y;
    const char *label;
    int front;
} sweep_point;

/* A scatter plot as inline SVG, in report.c's chart frame and style: one
   <circle class="pt"> per model that has both values, labelled; the front's
   points marked (data-front="1") and joined by a line. */
static void svg_scatter(FILE *f, const char *id, const char *title, const char *xname, const char *yname, const sweep_point *p, size_t n, int y_unit)
{
    const double W = 520, H = 270, X0 = 62, X1 = 500, Y0 = 36, Y1 = 224;
    double xmin = INFINITY, xmax = -INFINITY, ymax = 0, xstep, ystep, t;
    size_t i, j, nf = 0, nl = 0, *order = (size_t *)xmalloc((n + 1) * sizeof(size_t));
    double *lx = (double *)xmalloc((n + 1) * sizeof(double)), *lyv = (double *)xmalloc((n + 1) * sizeof(double));
    for (i = 0; i < n; ++i) {
        if (!isfinite(p[i].x) || !isfinite(p[i].y)) continue;
        if (p[i].x < xmin) xmin = p[i].x;
        if (p[i].x > xmax) xmax = p[i].x;
        if (p[i].y > ymax) ymax = p[i].y;
    }
    if (!isfinite(xmin)) { xmin = 0; xmax = 1; }
    /* a margin of a tenth each side, so end points and labels sit inside */
    t = xmax > xmin ? (xmax - xmin) / 10 : (xmin > 0 ? xmin / 10 : 1);
    xmin = xmin - t < 0 ? 0 : xmin - t;
    xmax += t;
    if (y_unit) ymax = 1;
    if (!(ymax > 0)) ymax = 1;
    ystep = nice_step(ymax / 4);
    ymax = ceil(ymax * 1.08 / ystep - 1e-9) * ystep;
    if (y_unit && ymax > 1) ymax = 1;
    xstep = nice_step((xmax - xmin) / 5);
    fprintf(f, "<figure class=\"chart-box\"><svg class=\"chart scatter\" id=\"pareto-%s\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"", id, W, H);
    html_text(f, title);
    fprintf(f, "\">\n<text class=\"title\" x=\"%.0f\" y=\"20\">", X0);
    html_text(f, title);
    fputs("</text>\n", f);
    for (t = 0; t <= ymax + ystep * 1e-6; t += ystep) {
        double yy = Y1 - (Y1 - Y0) * t / ymax;
        fprintf(f, "<line class=\"grid\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n",
                X0, X1, yy, yy, X0 - 6, yy + 4, t);
    }
    for (t = ceil(xmin / xstep) * xstep; t <= xmax + xstep * 1e-6; t += xstep) {
        double xx = X0 + (X1 - X0) * (t - xmin) / (xmax - xmin);
        fprintf(f, "<line class=\"axis\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.6g</text>\n",
                xx, xx, Y1, Y1 + 4, xx, Y1 + 18, t);
    }
    fprintf(f, "<line class=\"axis\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>\n", X0, X1, Y1, Y1);
    fprintf(f, "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", X1, H - 8, xname);
    fprintf(f, "<text class=\"tick\" x=\"12\" y=\"%.1f\" transform=\"rotate(-90 12 %.1f)\" text-anchor=\"middle\">%s</text>\n", (Y0 + Y1) / 2,
            (Y0 + Y1) / 2, yname);
    /* the front, left to right */
    for (i = 0; i < n; ++i)
        if (p[i].front) order[nf++] = i;
    for (i = 1; i < nf; ++i)
        for (j = i; j > 0 && p[order[j]].x < p[order[j - 1]].x; --j) { size_t s = order[j]; order[j] = order[j - 1]; order[j - 1] = s; }
    if (nf > 1) {
        fputs("<polyline class=\"front\" points=\"", f);
        for (i = 0; i < nf; ++i)
            fprintf(f, "%.1f,%.1f ", X0 + (X1 - X0) * (p[order[i]].x - xmin) / (xmax - xmin), Y1 - (Y1 - Y0) * p[order[i]].y / ymax);
        fputs("\"/>\n", f);
    }
    for (i = 0; i < n; ++i) {
        double cx, cy, ly;
        size_t q;
        if (!isfinite(p[i].x) || !isfinite(p[i].y)) continue;
        cx = X0 + (X1 - X0) * (p[i].x - xmin) / (xmax - xmin);
        cy = Y1 - (Y1 - Y0) * (p[i].y > ymax ? ymax : p[i].y) / ymax;
        /* a TopK model's L0 is about its k, so models of one k share an x:
           a label that would cover an earlier one moves down a line */
        ly = cy - 6;
        for (q = 0; q < nl; ++q)
            if (fabs(lx[q] - cx) < 40 && fabs(lyv[q] - ly) < 10) { ly = lyv[q] + 11; q = (size_t)-1; }
        lx[nl] = cx;
        lyv[nl++] = ly;
        fprintf(f, "<circle class=\"pt%s\" data-front=\"%d\" data-label=\"", p[i].front ? " on-front" : "", p[i].front);
        html_text(f, p[i].label);
        fprintf(f, "\" cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\"><title>", cx, cy);
        html_text(f, p[i].label);
        fprintf(f, ": %s %.4g, %s %.4g</title></circle><text class=\"ptlabel\" x=\"%.1f\" y=\"%.1f\">", xname, p[i].x, yname, p[i].y, cx + 6, ly);
        html_text(f, p[i].label);
        fputs("</text>\n", f);
    }
    if (!nf) fprintf(f, "<text class=\"tick\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">no values</text>\n", (X0 + X1) / 2, (Y0 + Y1) / 2);
    fputs("</svg></figure>\n", f);
    free(order); free(lx); free(lyv);
}

static void sweep_write_page(const sweep *sw, const char *path)
{
    out_file of;
    FILE *f = out_open(&of, path);
    sweep_point *p = (sweep_point *)xcalloc(sw->n + 1, sizeof(sweep_point));
    char **labels = (char **)xcalloc(sw->n + 1, sizeof(char *));
    size_t i, j;
    for (i = 0; i < sw->n; ++i) {
        const train_run *t = sw->m[i].t;
        char buf[256];
        size_t len;
        /* k/expansion, then the other axes' values */
        if (t->L % t->d == 0) snprintf(buf, sizeof buf, "%zu/%zu", t->cfg.k, t->L / t->d);
        else snprintf(buf, sizeof buf, "%zu/L%zu", t->cfg.k, t->L);
        for (j = 0; j < sw->a.naxes; ++j) {
            const sweep_axis *ax = &sw->a.axis[j];
            if (!strcmp(ax->flag, "--k") || !strcmp(ax->flag, "--expansion-factor") || !strcmp(ax->flag, "--num-latents")) continue;
            len = strlen(buf);
            snprintf(buf + len, sizeof buf - len, " %s%s", ax->tag, ax->v[sw->m[i].value[j]]);
        }
        labels[i] = (char *)xmalloc(strlen(buf) + 1);
        strcpy(labels[i], buf);
    }
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>", f);
    html_text(f, sw->a.out);
    fprintf(f, " - lsae sweep</title>\n<style>%s"
               "svg .pt{fill:#9aa4b0;stroke:#fff;stroke-width:1}svg .pt.on-front{fill:#d2452b}svg .front{fill:none;stroke:#d2452b;stroke-width:1.5;stroke-dasharray:4 3}"
               "svg .ptlabel{font-size:9.5px;fill:#3b4652}table.models{border-collapse:collapse;background:#fff;border:1px solid #dde2e8}"
               "table.models th,table.models td{padding:4px 10px;border-bottom:1px solid #eef1f4;text-align:right;font-variant-numeric:tabular-nums}"
               "table.models th:first-child,table.models td:first-child{text-align:left}table.models tr.front td:first-child{font-weight:600}"
               "</style>\n</head><body>\n<header><h1>SAE sweep: %zu models</h1><p>",
            REPORT_CSS, sw->n);
    html_text(f, sw->a.out);
    fprintf(f, " &middot; latentsae %s</p></header>\n<main>\n", lsae_version_string());
    fprintf(f, "<p class=\"note\">Each model was trained on the same %llu optimizer steps of %llu rows from ", (unsigned long long)sw->S,
            (unsigned long long)sw->m[0].t->a.batch * sw->m[0].t->a.grad_acc);
    html_text(f, sw->m[0].t->data_abs);
    fputs(" and evaluated on ", f);
    html_text(f, sw->a.eval_data ? sw->a.eval_data : "the same data (in-sample)");
    fputs(". A model is on a Pareto front when no other model has a lower (or equal) L0 and a better (or equal) value; "
          "the front is drawn in red.</p>\n<div class=\"charts\">\n", f);
    for (i = 0; i < sw->n; ++i) { p[i].x = sw->m[i].em.l0_mean; p[i].y = sw->m[i].em.fvu; p[i].label = labels[i]; p[i].front = sw->m[i].front_fvu; }
    svg_scatter(f, "fvu", "fvu against L0 (lower is better)", "L0", "fvu", p, sw->n, 0);
    for (i = 0; i < sw->n; ++i) { p[i].y = sw->m[i].em.queries ? sw->m[i].em.recall_at_10 : NAN; p[i].front = sw->m[i].front_recall; }
    svg_scatter(f, "recall", "neighbour recall@10 against L0 (higher is better)", "L0", "recall@10", p, sw->n, 1);
    for (i = 0; i < sw->n; ++i) { p[i].y = sw->m[i].em.dead_fraction; p[i].front = sw->m[i].front_dead; }
    svg_scatter(f, "dead", "dead fraction against L0 (lower is better)", "L0", "dead fraction", p, sw->n, 0);
    fputs("</div>\n<h2>Models</h2>\n<table class=\"models\">\n<tr><th>model</th><th>k</th><th>latents</th><th>lr</th><th>fvu (train)</th>"
          "<th>fvu</th><th>L0</th><th>dead %</th><th>recall@10</th><th>on a front</th></tr>\n", f);
    for (i = 0; i < sw->n; ++i) {
        const sweep_model *sm = &sw->m[i];
        const train_run *t = sm->t;
        fprintf(f, "<tr class=\"%s\"><td>", sm->front_fvu || sm->front_recall ? "front" : "");
        html_text(f, sm->name);
        fprintf(f, "</td><td>%zu</td><td>%zu</td><td>%.3g</td><td>%.4f</td><td>%.4f</td><td>%.2f</td><td>%.2f</td><td>%.3f</td><td>%s%s%s</td></tr>\n",
                t->cfg.k, t->L, lsae_config_lr(&t->cfg), sm->train_fvu, sm->em.fvu, sm->em.l0_mean, 100.0 * sm->em.dead_fraction,
                sm->em.queries ? sm->em.recall_at_10 : NAN, sm->front_fvu ? "fvu " : "", sm->front_recall ? "recall " : "",
                sm->front_dead ? "dead" : "");
    }
    fputs("</table>\n<p class=\"note\">Each model's directory holds an lsae train run: <code>lsae report DIR/MODEL</code> draws its curves "
          "and features, <code>lsae eval</code> gives every metric. sweep.json has these numbers and more.</p>\n</main></body></html>\n", f);
    out_commit(&of);
    for (i = 0; i < sw->n; ++i) free(labels[i]);
    free(labels);
    free(p);
}

/* -------------------------------------------------------------- the command */

/* The last 20 logged steps' mean fvu and the last dead %, from the model's
   metrics.jsonl (so a resumed sweep reports all of each run, not a session). */
static void sweep_train_summary(sweep_model *sm)
{
    char path[PATH_CAP];
    metrics mt;
    size_t i, c = 0;
    double s = 0;
    sm->train_fvu = sm->train_dead_pct = NAN;
    sm->train_steps = sm->t->step;
    join_path(path, sm->dir, "metrics.jsonl");
    if (!metrics_load(path, &mt)) return;
    for (i = mt.n > 20 ? mt.n - 20 : 0; i < mt.n; ++i)
        if (isfinite(mt.fvu[i])) { s += mt.fvu[i]; c++; }
    if (c) sm->train_fvu = s / (double)c;
    if (mt.n) sm->train_dead_pct = mt.dead[mt.n - 1];
    metrics_free(&mt);
}

static void sweep_print_plan(const sweep *sw)
{
    const train_run *t = sw->m[0].t;
    size_t i;
    fprintf(stderr, "%s: %s %zu models on %llu rows x %zu from %s -> %s\n", g_cmd, sw->resuming ? "resuming" : "training", sw->n,
            (unsigned long long)t->rows, t->d, t->a.data, sw->a.out);
    fprintf(stderr, "  training  %llu optimizer steps each: batch %llu x grad-acc %llu, %llu epoch%s, seed %llu; each batch read once\n",
            (unsigned long long)sw->S, (unsigned long long)t->a.batch, (unsigned long long)t->a.grad_acc, (unsigned long long)t->a.epochs,
            t->a.epochs == 1 ? "" : "s", (unsigned long long)t->a.seed);
    for (i = 0; i < sw->n; ++i) {
        const train_run *u = sw->m[i].t;
        fprintf(stderr, "  %-24s %zu latents, k %zu, lr %.3g%s", sw->m[i].name, u->L, u->cfg.k, lsae_config_lr(&u->cfg), u->a.lr > 0 ? "" : " (auto)");
        if (u->resuming) fprintf(stderr, ", from step %llu%s", (unsigned long long)u->step0, u->fresh ? " (no checkpoint: from the start)" : "");
        fputc('\n', stderr);
    }
    if (t->a.warmup >= sw->S && t->schedule != LSAE_LR_CONSTANT)
        warn("note: --lr-warmup-steps %llu is not below the run's %llu optimizer steps, so the learning rate only warms up",
             (unsigned long long)t->a.warmup, (unsigned long long)sw->S);
}

static void sweep_free(sweep *sw)
{
    size_t i, j;
    for (i = 0; i < sw->a.naxes; ++i) {
        sweep_axis *ax = &sw->a.axis[i];
        /* a list from the command line is cut in its copy; one read back from sweep.json owns its strings */
        if (!ax->copy)
            for (j = 0; j < ax->n; ++j) free(ax->v[j]);
        free(ax->copy);
        free(ax->v);
    }
    if (sw->eval_data_owned) free(sw->eval_data_owned);
    free(sw->a.pass);
    free(sw->a.table);
    free(sw->m);
    free(sw);
}

static int cmd_sweep(int argc, char **argv)
{
    sweep *sw = (sweep *)xcalloc(1, sizeof(sweep));
    size_t i;
    int stopped;
    char page[PATH_CAP];
    lsae_loader_stats ls;
    lsae_dataset *ds;
    double t_train, t_eval;
    sweep_parse(argc, argv, &sw->a);
    if (sw->a.resume) {
        sweep_resume_models(sw);
        sw->a.out = sw->a.resume;
        sweep_read_grid(sw);
    } else {
        char id[16];
        if (!sw->a.out) {
            make_run_id(id);
            snprintf(sw->outbuf, sizeof sw->outbuf, "checkpoints/sweep.%s", id);
            sw->a.out = sw->outbuf;
        }
        join_path(sw->json_path, sw->a.out, "sweep.json");
        if (exists(sw->json_path)) fail("%s already holds a sweep: continue it with --resume %s, or choose another --out", sw->a.out, sw->a.out);
        sweep_new_models(sw);
    }
    sweep_open_data(sw);
    if (!sw->resuming) make_dirs(sw->a.out);
    sweep_start(sw);
    if (!sw->resuming) sweep_write_json(sw, "training");
    sweep_print_plan(sw);
    t_train = now_s();
    stopped = sweep_loop(sw);
    lsae_loader_get_stats(sw->ld, &ls);
    for (i = 0; i < sw->n; ++i) {
        train_run *t = sw->m[i].t;
        /* a model still ahead of the loader keeps the checkpoint it has */
        if (ls.rows_read >= t->rows_read0) train_finish_save(t, stopped);
    }
    live_clear();
    /* the loader's prefetch thread reads the dataset: it goes before eval reads it */
    lsae_loader_free(sw->ld);
    for (i = 0; i < sw->n; ++i) {
        sw->m[i].t->ld = NULL;
        sweep_train_summary(&sw->m[i]);
    }
    if (stopped) {
        sweep_write_json(sw, "interrupted");
        printf("interrupted at step %llu of %llu; every model's checkpoint saved\n", (unsigned long long)sw->m[0].t->step, (unsigned long long)sw->S);
        printf("continue with: %s --resume %s\n", g_cmd, sw->a.out);
    } else {
        char dur_train[32], dur_eval[32];
        t_train = now_s() - t_train;
        t_eval = now_s();
        sweep_evaluate(sw);
        t_eval = now_s() - t_eval;
        fmt_duration(dur_train, sizeof dur_train, t_train);
        fmt_duration(dur_eval, sizeof dur_eval, t_eval);
        printf("done: %zu models trained in %s (%.3f s; %llu optimizer steps this session), evaluated in %s (%.3f s)\n", sw->n, dur_train,
               t_train, (unsigned long long)(sw->S - sw->m[0].t->step0), dur_eval, t_eval);
        sweep_write_json(sw, "done");
        join_path(page, sw->a.out, "sweep.html");
        sweep_write_page(sw, page);
        printf("%-28s %8s %8s %8s %8s %10s\n", "model", "fvu", "L0", "dead %", "recall", "front");
        for (i = 0; i < sw->n; ++i) {
            const sweep_model *sm = &sw->m[i];
            char recall[32];
            if (sm->em.queries) snprintf(recall, sizeof recall, "%.3f", sm->em.recall_at_10);
            else snprintf(recall, sizeof recall, "-");
            printf("%-28s %8.4f %8.2f %8.2f %8s %10s\n", sm->name, sm->em.fvu, sm->em.l0_mean, 100.0 * sm->em.dead_fraction, recall,
                   sm->front_fvu && sm->front_recall ? "both" : sm->front_fvu ? "fvu" : sm->front_recall ? "recall" : "");
        }
        printf("sweep:   %s/sweep.json, %s\n", sw->a.out, page);
    }
    ds = sw->m[0].t->ds;
    for (i = 0; i < sw->n; ++i) {
        eval_metrics_free(&sw->m[i].em);
        train_free(sw->m[i].t);
        free(sw->m[i].argv);
        free(sw->m[i].value);
    }
    lsae_dataset_close(ds);
    sweep_free(sw);
    return stopped ? 130 : 0;
}
