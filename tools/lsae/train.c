/* train.c - lsae train, its first half: from the command line (or run.json,
   when resumed) to a planned run with its data, config and directory. The
   steps, in the order cmd_train (train_loop.c) takes them: train_parse,
   train_resume_settings, train_check, train_open_data, train_make_config,
   train_plan; then train_loop.c's train_start, train_loop, train_finish.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

#define TRAIN_MAX_OPTS 64

/* The command line of lsae train (on --resume, run.json's settings replace
   the ones that may not change). */
typedef struct train_args {
    const char *data, *texts, *out, *resume, *init, *sched, *device, *precision, *prepass;
    uint64_t k, expansion, num_latents, batch, grad_acc, warmup, dead_thr, epochs, max_samples, save_every, seed, log_every, stop_at;
    double lr, auxk_alpha;
    int multi_topk, no_norm, no_shuffle, threads;
    /* the SAE type (README "SAE types", docs/math.md section 3) */
    const char *sae_type, *mat_sizes, *mat_ks, *mat_weights, *mat_form;
    double btk_beta, anneal_pct;
    uint64_t anneal_start;
    int btk_cap, mat_btk, anneal;
    uint64_t shard;                  /* --shard-latents S (0, 1: not sharded) */
    data_args da;
    opt o[TRAIN_MAX_OPTS];  /* the flag table, for opt_seen after parsing */
    size_t no;
} train_args;

/* The optimizer steps since the last metrics line, and the progress shown. */
typedef struct train_window {
    uint64_t batches, rows;
    double fvu, auxk, mtk, loss;     /* sums over the window's batches */
    double ema;                      /* smoothed fvu for the live line */
    double last_fvu[20];             /* the last 20 steps' fvu, for the summary */
    size_t n_last;
    double t_last_line, t_last_metric, t_last_live;
    int warned_batch;
    lsae_step_stats st;              /* the last step's statistics */
} train_window;

/* A training run in progress: its settings, data, place on disk and counters. */
typedef struct train_run {
    train_args a;
    run_settings saved;              /* run.json, when resuming */
    int resuming;
    char run_id[16], outbuf[PATH_CAP], data_abs[PATH_CAP], texts_abs[PATH_CAP], init_where[PATH_CAP];
    char ck[PATH_CAP];               /* out/checkpoint */
    lsae_lr_schedule schedule;
    lsae_config cfg;
    lsae_dataset *ds;
    size_t d, L;
    uint64_t rows, S;                /* the data's rows; the run's optimizer steps */
    lsae_model *m;
    lsae_trainer *tr;
    lsae_loader *ld;
    uint64_t rows_read0;             /* the data position a resumed run starts at */
    int sliced;                      /* the loader returns this rank's slice of each batch (dist_loader) */
    int shard;                       /* --shard-latents over g_S ranks (in each of g_D slices): this rank holds latents [l0, l1) */
    size_t l0, l1;
    int init_rows;                   /* --init with --shard-latents: train_start reads this rank's rows of init_where */
    uint64_t samples;                /* training rows used, over all sessions */
    uint64_t batches_skipped;        /* batches the trainer refused (no variance) */
    double elapsed_prev;             /* seconds of the sessions before this one */
    double t_start;
    FILE *metrics;
    uint64_t step, step0, samples0;  /* now, and where this session started */
    uint64_t saved_step;
    int saved_any;
    train_window w;
    /* set by lsae sweep, which trains several runs from one loader (sweep.c) */
    int quiet;                       /* no per-run plan, progress or summary: the sweep prints its own */
    int shares_data;                 /* ds and ld are the sweep's: train_free leaves them */
    int fresh_ok;                    /* --resume of a run killed before its first save starts it over */
    int fresh;                       /* ... and this one did */
} train_run;

/* A run id like wandb's (8 characters of [0-9a-z]), as in latent-sae's
   directory names sae_<k>_<expansion>.<run id>. */
static void make_run_id(char *out)
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    uint64_t s;
    int i;
#if defined(_WIN32)
    s = ((uint64_t)time(NULL) * 1000000000ull + (uint64_t)clock() * 1000ull) ^ ((uint64_t)getpid() << 40);
#else
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s = ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 40);
#endif
    for (i = 0; i < 8; ++i) out[i] = digits[splitmix(&s) % 36];
    out[8] = 0;
}

static const char *schedule_name(lsae_lr_schedule s)
{
    return s == LSAE_LR_COSINE ? "cosine" : s == LSAE_LR_CONSTANT ? "constant" : "linear";
}

/* ------------------------------------------------------ the command line */

/* The flag table of lsae train with its defaults in place, in a->o; lsae
   sweep reads it too, to know train's flags and which of them take a value. */
static void train_options(train_args *a)
{
    opt o[] = {
        OPT_GROUP("data"),
        OPT("--data", NULL, O_STR, &a->data, "PATH", NULL, "embeddings: .npy (float32/float16), .safetensors, .pt, a raw dump, or a directory of shards (data-*.npy) read as one; required unless --resume"),
        OPT("--texts", NULL, O_STR, &a->texts, "FILE", NULL, "the text of each row (one line per row), recorded for lsae report and features"),
        OPT("--epochs", NULL, O_U64, &a->epochs, "N", "1", "passes over the data"),
        OPT("--max-samples", NULL, O_U64, &a->max_samples, "N", "0 = no limit", "stop after N rows in all (across epochs)"),
        OPT("--no-shuffle", NULL, O_FLAG, &a->no_shuffle, NULL, NULL, "read rows in file order (default: shards and rows shuffled by --seed)"),
        DATA_OPT_ROWS(a->da),
        OPT_GROUP("model"),
        OPT("--k", NULL, O_U64, &a->k, "N", "32", "active latents per row"),
        OPT("--expansion-factor", NULL, O_U64, &a->expansion, "N", "32", "latents = d_in x N"),
        OPT("--num-latents", NULL, O_U64, &a->num_latents, "N", "0 = d_in x expansion factor", "the number of latents, directly"),
        OPT("--multi-topk", NULL, O_FLAG, &a->multi_topk, NULL, NULL, "also train the top 4k latents to reconstruct (adds fvu(4k)/8 to the loss); only the top k count as fired, as in latent-sae (sparsify counts all 4k)"),
        OPT("--no-normalize-decoder", NULL, O_FLAG, &a->no_norm, NULL, NULL, "let decoder rows have any norm (default: unit rows)"),
        OPT("--init", NULL, O_STR, &a->init, "MODEL", NULL, "start from a saved model (a directory or hf:OWNER/NAME/SUBFOLDER) and keep its b_dec, like sparsify's --finetune; Adam starts fresh"),
        OPT_GROUP("SAE type (README \"SAE types\"; docs/math.md, section 3)"),
        OPT("--sae-type", NULL, O_STR, &a->sae_type, "T", "topk", "topk (each row keeps its k best), batchtopk (the batch keeps its B k best; a learned threshold at inference) or matryoshka (nested prefixes of the latents each reconstruct)"),
        OPT("--batchtopk-threshold-beta", NULL, O_DBL, &a->btk_beta, "X", "0.999", "EMA decay of the BatchTopK inference threshold (batchtopk, or matryoshka with --matryoshka-use-batchtopk)"),
        OPT("--batchtopk-row-cap", NULL, O_FLAG, &a->btk_cap, NULL, NULL, "cap every row at k after the batch-wide pick and at inference, as latent-sae's batchtopk always does (default: uncapped)"),
        OPT("--matryoshka-sizes", NULL, O_STR, &a->mat_sizes, "N,N,..", NULL, "matryoshka: the latents of each level, increasing, the last = the number of latents (e.g. 64,256,1536); required"),
        OPT("--matryoshka-ks", NULL, O_STR, &a->mat_ks, "N,N,..", NULL, "per-level matryoshka: each level's k (e.g. 8,16,32); encoding keeps the last; required for that form"),
        OPT("--matryoshka-loss-weights", NULL, O_STR, &a->mat_weights, "X,X,..", "every level 1", "matryoshka: each level's weight in the loss"),
        OPT("--matryoshka-use-batchtopk", NULL, O_FLAG, &a->mat_btk, NULL, NULL, "matryoshka: pick batch-wide (BatchTopK) instead of per row; the per-level form always caps rows at their level's k"),
        OPT("--matryoshka-form", NULL, O_STR, &a->mat_form, "F", "nested", "nested (one selection, every prefix decodes it, the loss sums the levels: Bussmann et al., SAELens) or per-level (each level its own top k, a weighted mean, no AuxK: latent-sae's, and how its files load)"),
        OPT("--k-anneal", NULL, O_FLAG, &a->anneal, NULL, NULL, "any type: k falls linearly from --k-anneal-start to k over the first --k-anneal-pct of the optimizer steps"),
        OPT("--k-anneal-start", NULL, O_U64, &a->anneal_start, "N", "0 = 4k, at most the number of latents", "the k annealing starts from"),
        OPT("--k-anneal-pct", NULL, O_DBL, &a->anneal_pct, "X", "0.3", "the fraction of the run k falls over"),
        OPT_GROUP("training"),
        OPT("--batch-size", NULL, O_U64, &a->batch, "N", "512", "rows per batch"),
        OPT("--grad-acc-steps", NULL, O_U64, &a->grad_acc, "N", "1", "batches per optimizer step"),
        OPT("--lr", NULL, O_DBL, &a->lr, "X", "automatic: 2e-4 / sqrt(latents / 2^14)", "peak learning rate"),
        OPT("--lr-warmup-steps", NULL, O_U64, &a->warmup, "N", "1000", "optimizer steps of linear warm-up"),
        OPT("--lr-schedule", NULL, O_STR, &a->sched, "S", "linear", "after warm-up: linear (to 0 at the last step), cosine, or constant. Linear is sparsify's default and was latent-sae's until it moved to cosine: give cosine to match latent-sae now"),
        OPT("--auxk-alpha", NULL, O_DBL, &a->auxk_alpha, "X", "0.03125 = 1/32; 0 for per-level matryoshka, which has no AuxK", "weight of the AuxK loss that revives dead latents; 0 turns it off. latent-sae and sparsify default to 0: give 0 to match them; 1/32 is Gao et al.'s value, without which latents that die early stay dead"),
        OPT("--dead-feature-threshold", NULL, O_U64, &a->dead_thr, "N", "10000000", "a latent is dead after N training rows outside every top-k. Rows, as sparsify counts; latent-sae counts rows x d_in, so to match one of its runs give its N / d_in (13020 for 10000000 at d_in 768)"),
        OPT("--seed", NULL, O_U64, &a->seed, "N", "0", "seed of the initial weights and of the data order"),
        OPT_GROUP("output and running"),
        OPT("--out", "-o", O_STR, &a->out, "DIR", "checkpoints/sae_<k>_<expansion>.<run id>", "the run directory"),
        OPT("--save-every", NULL, O_U64, &a->save_every, "N", "1000", "save a checkpoint every N optimizer steps (0: only at the end)"),
        OPT("--resume", NULL, O_STR, &a->resume, "DIR", NULL, "continue the run in DIR from its checkpoint, with its settings and data order"),
        OPT("--stop-at-step", NULL, O_U64, &a->stop_at, "N", "0 = run to the end", "after optimizer step N save a checkpoint and exit (status 0), as Ctrl-C does; --resume goes on from there "
            "exactly (for a job with a time limit, or a stop at a step known in advance)"),
        OPT("--log-every", NULL, O_U64, &a->log_every, "N", "0 = about every 10 s", "without a terminal, print a line every N optimizer steps"),
        OPT("--threads", NULL, O_INT, &a->threads, "N", "0 = all cores, as OpenMP decides", "threads for training"),
        OPT("--shard-latents", NULL, O_U64, &a->shard, "S", "1", "build/mpi/lsae under mpirun -np S: split the latents (their weights and Adam moments) over the S ranks, "
            "each training on every batch, so each holds about 1/S of the model (-np D x S: D data-parallel slices of S shards); topk only; "
            "the files are those of one process, and a run may resume with another S"),
        OPT("--device", NULL, O_STR, &a->device, "D", "cuda when built with LATENTSAE_CUDA and a GPU answers, else cpu", "cpu or cuda"),
        OPT("--precision", NULL, O_STR, &a->precision, "P", "tf32 on CUDA, fp32 on the CPU", "the encoder product's arithmetic on CUDA: fp32, tf32 or bf16"),
        OPT("--int8-prepass", NULL, O_STR, &a->prepass, "P", "auto", PREPASS_HELP),
    };
    a->sched = "linear";
    a->device = "default";
    a->k = 32; a->expansion = 32; a->batch = 512; a->grad_acc = 1; a->warmup = 1000; a->dead_thr = 10000000;
    a->epochs = 1; a->save_every = 1000;
    a->auxk_alpha = 1.0 / 32.0;
    a->sae_type = "topk"; a->mat_form = "nested"; a->btk_beta = 0.999; a->anneal_pct = 0.3;
    a->no = sizeof o / sizeof o[0];
    if (a->no > TRAIN_MAX_OPTS) fail("internal: lsae train has more flags than TRAIN_MAX_OPTS");
    memcpy(a->o, o, sizeof o);
}

static void train_parse(int argc, char **argv, train_args *a)
{
    const char *usage = "lsae train --data PATH [options]";
    const char *about = "Train a TopK sparse autoencoder on embeddings, as latent-sae's train_local.py does (the flags "
                        "carry the same names). The run goes into --out: the model (cfg.json + sae.safetensors, "
                        "loadable by latent-sae and sparsify), checkpoint/ for --resume, run.json and metrics.jsonl. "
                        "On a terminal one live line shows progress; otherwise a plain line every --log-every steps. "
                        "Ctrl-C finishes the current optimizer step, saves a checkpoint and exits. Three defaults differ from latent-sae's, "
                        "each for the reason its help gives: --auxk-alpha, --dead-feature-threshold and --lr-schedule. "
                        "Built as build/mpi/lsae (make, when mpicc is found) it trains data-parallel under mpirun -np P: "
                        "each rank takes its share of every --batch-size rows, rank 0 writes the files (README \"Distributed training\").";
    char *pos[1];
    train_options(a);
    if (parse_args(argc, argv, a->o, a->no, usage, about, pos, 0) != 0) usage_fail("lsae train takes no positional arguments");
    if (a->resume && a->init) usage_fail("--resume continues a run; --init starts a new one from a model: give one");
    if (!a->resume && !a->data) usage_fail("give the embeddings with --data PATH");
    if (a->resume) {
        /* a resumed run is the same run: only where and how fast it runs may change */
        static const char *may_change[] = { "--resume", "--data", "--texts", "--threads", "--device", "--precision", "--int8-prepass", "--save-every", "--log-every", "--shard-latents", "--stop-at-step",
                                            "--format", "--tensor", "--raw-dtype", "--d-in", NULL };
        size_t i, j;
        for (i = 0; i < a->no; ++i) {
            int ok = 0;
            if (!a->o[i].name || !a->o[i].seen) continue;
            for (j = 0; may_change[j]; ++j) ok |= !strcmp(may_change[j], a->o[i].name);
            if (!ok) usage_fail("%s cannot change when resuming: the run keeps the settings in %s/run.json", a->o[i].name, a->resume);
        }
    }
}

/* --resume: the run's settings from its run.json, once the directory is
   known to hold a run that saved at least once. */
static void train_resume_settings(train_run *t)
{
    train_args *a = &t->a;
    const run_settings *rs = &t->saved;
    char path[PATH_CAP], tmp[PATH_CAP + 8], old[PATH_CAP + 8];
    if (!is_dir(a->resume)) fail("%s: no such run directory", a->resume);
    if (!run_settings_read(a->resume, &t->saved)) fail("%s: no run.json here; --resume takes a directory written by lsae train", a->resume);
    t->resuming = 1;
    /* a save cut between its two renames leaves the checkpoint whole at
       checkpoint.tmp or checkpoint.old, where lsae_checkpoint_load finds it */
    join_path(path, a->resume, "checkpoint");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(old, sizeof old, "%s.old", path);
    if (!is_dir(path) && !is_dir(tmp) && !is_dir(old) && t->fresh_ok) t->fresh = 1;
    else if (!is_dir(path) && !is_dir(tmp) && !is_dir(old))
        fail("%s: no checkpoint/ here (the run stopped before its first save); start it again", a->resume);
    a->k = rs->k;
    a->expansion = rs->expansion_factor;
    a->num_latents = rs->num_latents;
    a->multi_topk = rs->multi_topk;
    a->no_norm = !rs->normalize_decoder;
    a->batch = rs->batch_size;
    a->grad_acc = rs->grad_acc_steps;
    /* an automatic learning rate is picked again, not read back: run.json
       keeps 9 digits, and the double the library computes needs 17, so the
       value read back differed in its last bits and a resumed run drifted
       from the uninterrupted one by an ulp here and there (found by lsae
       sweep's test at --expansion-factor 4 with d_in 384) */
    a->lr = rs->lr_auto ? 0 : rs->lr;
    a->warmup = rs->lr_warmup_steps;
    a->sched = rs->lr_schedule;
    a->auxk_alpha = rs->auxk_alpha;
    a->dead_thr = rs->dead_feature_threshold;
    a->epochs = rs->epochs;
    a->max_samples = rs->max_samples;
    a->no_shuffle = !rs->shuffle;
    a->seed = rs->seed;
    /* the SAE type (a run.json from before the types: TopK) */
    a->sae_type = rs->sae_type ? rs->sae_type : "topk";
    a->btk_beta = rs->batchtopk_threshold_beta;
    a->btk_cap = rs->batchtopk_row_cap;
    a->mat_sizes = rs->matryoshka_sizes;
    a->mat_ks = rs->matryoshka_ks;
    a->mat_weights = rs->matryoshka_loss_weights;
    a->mat_btk = rs->matryoshka_use_batchtopk;
    a->mat_form = rs->matryoshka_form ? rs->matryoshka_form : "nested";
    a->anneal = rs->k_anneal;
    a->anneal_start = rs->k_anneal_start;
    a->anneal_pct = rs->k_anneal_pct;
    if (!opt_seen(a->o, a->no, "--save-every")) a->save_every = rs->save_every;
    if (!a->data) a->data = rs->data;
    if (!a->texts && !opt_seen(a->o, a->no, "--data")) a->texts = rs->texts;
    data_args_from_run(&a->da, a->o, a->no, rs);
    if (!a->data) fail("%s/run.json names no data; give --data", a->resume);
    a->out = a->resume;
    snprintf(t->run_id, sizeof t->run_id, "%s", rs->run_id ? rs->run_id : "?");
}

/* The settings, whether given or resumed, checked before any work. */
static void train_check(train_run *t)
{
    const train_args *a = &t->a;
    lsae_result r;
    if (!strcmp(a->sched, "linear")) t->schedule = LSAE_LR_LINEAR;
    else if (!strcmp(a->sched, "cosine")) t->schedule = LSAE_LR_COSINE;
    else if (!strcmp(a->sched, "constant")) t->schedule = LSAE_LR_CONSTANT;
    else usage_fail("--lr-schedule must be linear, cosine or constant, not '%s'", a->sched);
    if (parse_device(a->device) == LSAE_DEVICE_CUDA && (r = lsae_backend_available(LSAE_DEVICE_CUDA)) != LSAE_OK) lib_fail(r, "--device cuda");
    if (a->batch < 2) usage_fail("--batch-size must be at least 2 (fvu needs the variance of a batch)");
    if (a->grad_acc < 1) usage_fail("--grad-acc-steps must be at least 1");
    if (a->epochs < 1) usage_fail("--epochs must be at least 1");
    if (a->k < 1) usage_fail("--k must be at least 1");
    if (a->lr < 0) usage_fail("--lr must be >= 0 (0 picks it automatically)");
    if (a->auxk_alpha < 0) usage_fail("--auxk-alpha must be >= 0");
    if (a->threads < 0) usage_fail("--threads must be >= 0");
    if (a->shard > 1 && (uint64_t)g_ranks % a->shard != 0)
        usage_fail("--shard-latents %llu needs a multiple of %llu ranks (build/mpi/lsae under mpirun -np %llu, or D x %llu for D data-parallel slices), this run has %d",
                   (unsigned long long)a->shard, (unsigned long long)a->shard, (unsigned long long)a->shard, (unsigned long long)a->shard, g_ranks);
    if (a->shard > 1 && strcmp(a->sae_type, "topk") != 0)
        usage_fail("--shard-latents takes --sae-type topk only in this version (with --multi-topk, AuxK, --k-anneal), not %s", a->sae_type);
    t->shard = a->shard > 1;
    if (t->shard) dist_grid((int)a->shard);
    if (!t->resuming && opt_seen(a->o, a->no, "--num-latents") && opt_seen(a->o, a->no, "--expansion-factor"))
        usage_fail("give --expansion-factor or --num-latents, not both");
}

/* ------------------------------------------------------ data and model */

static void train_open_data(train_run *t)
{
    const train_args *a = &t->a;
    texts tx;
    t->ds = open_data(a->data, &a->da);
    t->d = lsae_dataset_d_in(t->ds);
    t->rows = lsae_dataset_rows(t->ds);
    if (t->resuming && (t->saved.rows != t->rows || t->saved.d_in != t->d))
        fail("%s has %llu rows of %zu, but the run was trained on %llu rows of %llu: resume needs the same data", a->data,
             (unsigned long long)t->rows, t->d, (unsigned long long)t->saved.rows, (unsigned long long)t->saved.d_in);
    texts_load(&tx, a->texts, t->rows); /* checked now, not after an hour of training */
    texts_free(&tx);
    abs_path(a->data, t->data_abs);
    if (a->texts) abs_path(a->texts, t->texts_abs);
}

/* --init: the saved model's shape and weights; b_dec kept (no geometric median).
   --shard-latents: only the model's config is read here, and train_start
   reads each rank's rows straight into its shard (lsae_model_load_shard),
   so no rank ever holds the whole model. A SAELens model does not load by
   rows (the library's message says why): it is loaded whole, as without
   sharding, and train_keep_shard keeps the rank's rows. */
static void train_init_from(train_run *t)
{
    const train_args *a = &t->a;
    lsae_model *m0 = NULL;
    lsae_config c0;
    size_t L0, d = t->d;
    float *We, *Wd, *be, *bd;
    lsae_result r;
    char sl[PATH_CAP];
    resolve_model(a->init, t->init_where);
    join_path(sl, t->init_where, "sae.safetensors");
    if (t->shard && exists(sl)) {
        if ((r = lsae_model_load_config(t->init_where, &c0)) != LSAE_OK) lib_fail(r, NULL);
        t->init_rows = 1;
    } else {
        if ((r = lsae_model_load(t->init_where, NULL, &m0)) != LSAE_OK) lib_fail(r, NULL);
        c0 = *lsae_model_config(m0);
    }
    L0 = c0.num_latents;
    if (c0.d_in != d) fail("--init %s expects d_in %zu, but %s has rows of %zu", a->init, c0.d_in, a->data, d);
    if (opt_seen(a->o, a->no, "--k") && a->k != c0.k)
        usage_fail("--k %llu differs from the k %zu of --init %s", (unsigned long long)a->k, c0.k, a->init);
    if ((opt_seen(a->o, a->no, "--num-latents") && a->num_latents != L0) || (opt_seen(a->o, a->no, "--expansion-factor") && a->expansion * d != L0))
        usage_fail("the number of latents differs from the %zu of --init %s", L0, a->init);
    t->cfg.k = c0.k;
    t->cfg.num_latents = L0;
    t->cfg.expansion_factor = L0 % d == 0 ? L0 / d : 0;
    t->cfg.normalize_decoder = c0.normalize_decoder && !a->no_norm;
    t->cfg.multi_topk = c0.multi_topk || a->multi_topk;
    t->cfg.init_b_dec = 0;
    if ((r = lsae_config_validate(&t->cfg)) != LSAE_OK) lib_fail(r, NULL);
    if (!m0) return;
    if ((r = lsae_model_create(&t->cfg, NULL, &t->m)) != LSAE_OK) lib_fail(r, NULL);
    We = (float *)xmalloc(L0 * d * sizeof(float));
    Wd = (float *)xmalloc(L0 * d * sizeof(float));
    be = (float *)xmalloc(L0 * sizeof(float));
    bd = (float *)xmalloc(d * sizeof(float));
    lsae_model_get_weights(m0, We, be, Wd, bd);
    if ((r = lsae_model_set_weights(t->m, We, be, Wd, bd)) != LSAE_OK) lib_fail(r, "--init");
    /* a BatchTopK threshold carries over when both models have one, so its
       EMA continues (the call refuses, changing nothing, when the new type
       has no threshold) */
    if (lsae_model_batchtopk_threshold(m0) > 0) (void)lsae_model_set_batchtopk_threshold(t->m, lsae_model_batchtopk_threshold(m0));
    free(We); free(Wd); free(be); free(bd);
    lsae_model_free(m0);
}

/* "64,256,1536" into up to LSAE_MAX_LEVELS numbers; the count */
static size_t parse_levels(const char *flag, const char *s, double *out, int integers)
{
    size_t n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        double v;
        while (*p == ' ') ++p;
        v = strtod(p, &end);
        if (end == p || !isfinite(v) || (integers && (v < 1 || v != floor(v) || v > 2147483647.0)) || (!integers && v < 0))
            usage_fail("%s expects comma-separated %s, as 64,256,1536; got '%s'", flag, integers ? "whole numbers >= 1" : "numbers >= 0", s);
        if (n == LSAE_MAX_LEVELS) usage_fail("%s: at most %d levels", flag, LSAE_MAX_LEVELS);
        out[n++] = v;
        p = end;
        while (*p == ' ') ++p;
        if (!*p) return n;
        if (*p++ != ',') usage_fail("%s expects comma-separated numbers, as 64,256,1536; got '%s'", flag, s);
    }
}

/* The SAE type's flags into the config (the library checks the values:
   sizes increasing to L, k_i <= n_i, ...). */
static void train_type_config(train_run *t)
{
    const train_args *a = &t->a;
    lsae_config *c = &t->cfg;
    double v[LSAE_MAX_LEVELS];
    size_t n, i;
    int mat;
    if (!strcmp(a->sae_type, "topk")) c->sae_type = LSAE_SAE_TOPK;
    else if (!strcmp(a->sae_type, "batchtopk")) c->sae_type = LSAE_SAE_BATCHTOPK;
    else if (!strcmp(a->sae_type, "matryoshka")) c->sae_type = LSAE_SAE_MATRYOSHKA;
    else usage_fail("--sae-type must be topk, batchtopk or matryoshka, not '%s' (gated, jumprelu and lista are not implemented)", a->sae_type);
    mat = c->sae_type == LSAE_SAE_MATRYOSHKA;
    if (!mat) {
        static const char *mat_flags[] = { "--matryoshka-sizes", "--matryoshka-ks", "--matryoshka-loss-weights", "--matryoshka-use-batchtopk", "--matryoshka-form", NULL };
        for (i = 0; mat_flags[i]; ++i)
            if (opt_seen(a->o, a->no, mat_flags[i])) usage_fail("%s is a matryoshka setting: give --sae-type matryoshka", mat_flags[i]);
    }
    if (c->sae_type == LSAE_SAE_TOPK && (opt_seen(a->o, a->no, "--batchtopk-row-cap") || opt_seen(a->o, a->no, "--batchtopk-threshold-beta")))
        usage_fail("--batchtopk-row-cap and --batchtopk-threshold-beta are batchtopk settings: give --sae-type batchtopk (or matryoshka with --matryoshka-use-batchtopk)");
    c->batchtopk_threshold_beta = a->btk_beta;
    c->batchtopk_row_cap = a->btk_cap;
    if (mat) {
        if (!strcmp(a->mat_form, "nested")) c->matryoshka_form = LSAE_MATRYOSHKA_NESTED;
        else if (!strcmp(a->mat_form, "per-level") || !strcmp(a->mat_form, "per_level")) c->matryoshka_form = LSAE_MATRYOSHKA_PER_LEVEL;
        else usage_fail("--matryoshka-form must be nested or per-level, not '%s'", a->mat_form);
        if (!a->mat_sizes) usage_fail("--sae-type matryoshka needs --matryoshka-sizes (e.g. 64,256,1536, the last = the number of latents)");
        n = parse_levels("--matryoshka-sizes", a->mat_sizes, v, 1);
        c->matryoshka_levels = n;
        for (i = 0; i < n; ++i) c->matryoshka_sizes[i] = (size_t)v[i];
        if (c->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL) {
            if (!a->mat_ks) usage_fail("--matryoshka-form per-level needs --matryoshka-ks, one k per level (e.g. 8,16,32)");
            if (parse_levels("--matryoshka-ks", a->mat_ks, v, 1) != n) usage_fail("--matryoshka-ks needs one k per level of --matryoshka-sizes (%zu)", n);
            for (i = 0; i < n; ++i) c->matryoshka_ks[i] = (size_t)v[i];
            /* no AuxK in this form (latent-sae's): its default is 0 here */
            if (!opt_seen(a->o, a->no, "--auxk-alpha") && !t->resuming) c->auxk_alpha = t->a.auxk_alpha = 0; /* run.json records it */
            if (c->batchtopk_row_cap) usage_fail("--batchtopk-row-cap: the per-level form always caps a row at its level's k");
        } else if (a->mat_ks) {
            usage_fail("--matryoshka-ks is for --matryoshka-form per-level; the nested form keeps one k (--k)");
        }
        if (a->mat_weights && *a->mat_weights) {
            if (parse_levels("--matryoshka-loss-weights", a->mat_weights, v, 0) != n)
                usage_fail("--matryoshka-loss-weights needs one weight per level of --matryoshka-sizes (%zu)", n);
            for (i = 0; i < n; ++i) c->matryoshka_loss_weights[i] = v[i];
        }
        c->matryoshka_use_batchtopk = a->mat_btk;
        if (!a->mat_btk && (opt_seen(a->o, a->no, "--batchtopk-row-cap") || opt_seen(a->o, a->no, "--batchtopk-threshold-beta")))
            usage_fail("--batchtopk-row-cap and --batchtopk-threshold-beta need --matryoshka-use-batchtopk with matryoshka");
    }
    if (!a->anneal && (opt_seen(a->o, a->no, "--k-anneal-start") || opt_seen(a->o, a->no, "--k-anneal-pct")))
        usage_fail("--k-anneal-start and --k-anneal-pct need --k-anneal");
    c->k_anneal = a->anneal;
    c->k_anneal_start = (size_t)a->anneal_start;
    c->k_anneal_pct = a->anneal_pct;
}

static void train_make_config(train_run *t)
{
    const train_args *a = &t->a;
    lsae_result r;
    t->cfg = lsae_config_default(t->d);
    t->cfg.k = (size_t)a->k;
    t->cfg.expansion_factor = (size_t)a->expansion;
    t->cfg.num_latents = (size_t)a->num_latents;
    t->cfg.multi_topk = a->multi_topk;
    t->cfg.normalize_decoder = !a->no_norm;
    t->cfg.auxk_alpha = a->auxk_alpha;
    t->cfg.dead_feature_threshold = a->dead_thr;
    t->cfg.lr = a->lr;
    t->cfg.lr_warmup_steps = a->warmup;
    t->cfg.lr_schedule = t->schedule;
    t->cfg.grad_acc_steps = a->grad_acc;
    t->cfg.seed = a->seed;
    t->cfg.num_threads = a->threads;
    t->cfg.device = parse_device(a->device);
    t->cfg.cuda_device = dist_cuda_device();   /* under mpirun: this rank's GPU (dist.c) */
    t->cfg.precision = parse_precision(a->precision);
    (void)parse_prepass(a->prepass); /* a bad value stops here, before any work */
    train_type_config(t);
    if (a->init) train_init_from(t);
    else if ((r = lsae_config_validate(&t->cfg)) != LSAE_OK) lib_fail(r, NULL);
    t->L = lsae_config_num_latents(&t->cfg);
}

/* The run's length and its directory. */
static void train_plan(train_run *t)
{
    train_args *a = &t->a;
    uint64_t total_rows, batches_planned;
    char path[PATH_CAP];
    /* the run's length in optimizer steps: full batches in each epoch (the
       loader drops a short last batch), the max-samples cap counted in rows */
    if (a->epochs > UINT64_MAX / t->rows) usage_fail("--epochs %llu is too many", (unsigned long long)a->epochs);
    total_rows = t->rows * a->epochs;
    if (a->max_samples && a->max_samples < total_rows) total_rows = a->max_samples;
    batches_planned = (total_rows / t->rows) * (t->rows / a->batch) + (total_rows % t->rows) / a->batch;
    t->S = t->resuming ? t->saved.total_steps : batches_planned / a->grad_acc;
    if (t->S == 0)
        fail("%llu rows give %llu full batches of %llu, less than one optimizer step of %llu batches: lower --batch-size "
             "or --grad-acc-steps, or raise --epochs", (unsigned long long)total_rows, (unsigned long long)batches_planned,
             (unsigned long long)a->batch, (unsigned long long)a->grad_acc);
    t->cfg.total_steps = t->S;
    if (!a->out) {
        if (t->L % t->d == 0) snprintf(t->outbuf, sizeof t->outbuf, "checkpoints/sae_%llu_%zu.%s", (unsigned long long)t->cfg.k, t->L / t->d, t->run_id);
        else snprintf(t->outbuf, sizeof t->outbuf, "checkpoints/sae_%llu_L%zu.%s", (unsigned long long)t->cfg.k, t->L, t->run_id);
        a->out = t->outbuf;
    }
    if (!t->resuming) {
        /* a directory with a model or a checkpoint is a run to keep; one with
           only run.json was stopped before its first save and may start over */
        static const char *marks[] = { "cfg.json", "sae.safetensors", "checkpoint", NULL };
        int i;
        for (i = 0; marks[i]; ++i) {
            join_path(path, a->out, marks[i]);
            if (exists(path)) fail("%s already holds a run (%s): continue it with --resume %s, or choose another --out", a->out, marks[i], a->out);
        }
        if (exists(a->out) && !is_dir(a->out)) fail("%s exists and is not a directory", a->out);
        if (g_rank == 0) make_dirs(a->out);
    }
    join_path(t->ck, a->out, "checkpoint");
}
