/* train_loop.c - lsae train, its second half: the model and trainer made or
   resumed, run.json written, the training loop with its metrics and
   progress, checkpoints, and the summary at the end; then cmd_train, which
   runs the steps of train.c and of this file in order.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

/* ----------------------------------------------------------- checkpoints */

/* --shard-latents: rank 0 streams the checkpoint and the model files to
   disk (lsae_checkpoint_save_pieces, lsae_model_save_pieces: the same bytes
   as one process writes, so the files do not depend on the number of
   shards) and no rank holds the whole model. The library asks for one
   array's rows at a time, in pieces of at most PIECE_BYTES of one shard
   (the pieces' bounds split each shard's range): rank 0 copies its own
   rows (and b_dec with its moments, the same on every rank) straight into
   the library's piece buffer (lsae_trainer_get_piece), and asks the owner
   of any other rows, which copies them into a buffer of one piece and
   sends them (dist.c). So a save adds one piece (a few MB) to each rank of
   slice 0; the other shards of slice 0 serve until rank 0 is done; the
   other slices (the same shards again) take no part. A rank that fails
   aborts the job (fail, lib_fail), so none is left waiting. */
#define PIECE_BYTES ((size_t)4 << 20)

/* the bytes of one row of array `what` (an lsae_piece): d_in floats for
   W_enc, W_dec and their moments, one float for b_enc, b_dec and theirs, a
   uint64 for the counters */
static size_t piece_row_bytes(int what, size_t d)
{
    if (what == LSAE_PIECE_SINCE_FIRED) return sizeof(uint64_t);
    return (what % 4 == LSAE_PIECE_W_ENC || what % 4 == LSAE_PIECE_W_DEC ? d : 1) * sizeof(float);
}

/* the arrays indexed by latent, split over the shards (b_dec and its moments are on every rank) */
static int piece_by_latent(int what)
{
    return what == LSAE_PIECE_SINCE_FIRED || (what >= 0 && what < LSAE_PIECE_SINCE_FIRED && what % 4 != LSAE_PIECE_B_DEC);
}

/* the most latents in one piece: a piece of W_enc at most PIECE_BYTES */
static size_t piece_rows(const train_run *t)
{
    size_t r = PIECE_BYTES / (t->d * sizeof(float));
    return r ? r : 1;
}

/* This rank's rows [l0, l0 + n) (global latents, inside its shard; b_dec
   and its moments: all d) of array `what` into dst */
static size_t shard_piece(void *ctx, int what, size_t l0, size_t n, void *dst)
{
    train_run *t = (train_run *)ctx;
    lsae_result r;
    if (what < 0 || what > LSAE_PIECE_SINCE_FIRED)
        fail("internal: array %d asked for the checkpoint (latent-sharded runs are TopK: no threshold)", what);
    if (piece_by_latent(what) ? l0 < t->l0 || l0 > t->l1 || n > t->l1 - l0 || n > piece_rows(t) : l0 != 0 || n != t->d)
        fail("internal: rows [%zu, %zu) of array %d asked of the shard holding [%zu, %zu)", l0, l0 + n, what, t->l0, t->l1);
    if ((r = lsae_trainer_get_piece(t->tr, what, piece_by_latent(what) ? l0 - t->l0 : 0, n, dst)) != LSAE_OK) lib_fail(r, "saving the checkpoint");
    return n * piece_row_bytes(what, t->d);
}

/* rank 0's fetch for the library: its own rows, else the owner's over MPI */
static lsae_result ckpt_fetch(void *ctx, int what, size_t l0, size_t n, void *dst)
{
    train_run *t = (train_run *)ctx;
    int owner = 0;
    if (piece_by_latent(what))
        for (owner = 0; owner < g_S; ++owner) {
            size_t a, b;
            lsae_shard_range(t->L, owner, g_S, &a, &b);
            if (l0 >= a && l0 < b) break;
        }
    if (owner >= g_S) fail("internal: rows [%zu, %zu) asked for the checkpoint are in no shard", l0, l0 + n);
    if (owner == 0) shard_piece(t, what, l0, n, dst);
    else dist_piece_ask(owner, what, l0, n, dst, n * piece_row_bytes(what, t->d));
    return LSAE_OK;
}

static void save_checkpoint_sharded(train_run *t, const char *blob, size_t blen)
{
    const size_t most = piece_rows(t);
    if (g_rank == 0) {
        /* each shard's range cut into pieces of at most `most` latents */
        lsae_trainer_state st;
        lsae_result r;
        size_t *bounds = (size_t *)xmalloc((t->L / most + (size_t)g_S + 1) * sizeof(size_t)), nb = 1, a, b;
        int q;
        bounds[0] = 0;
        for (q = 0; q < g_S; ++q) {
            lsae_shard_range(t->L, q, g_S, &a, &b);
            while (a < b) {
                a += b - a < most ? b - a : most;
                bounds[nb++] = a;
            }
        }
        memset(&st, 0, sizeof st);   /* the step and b_dec's flag only */
        if ((r = lsae_trainer_get_state(t->tr, &st)) != LSAE_OK) lib_fail(r, "saving the checkpoint");
        if ((r = lsae_checkpoint_save_pieces(t->ck, &t->cfg, st.step, st.b_dec_initialized, bounds, nb, ckpt_fetch, t, blob, blen)) != LSAE_OK)
            lib_fail(r, "saving the checkpoint");
        if ((r = lsae_model_save_pieces(t->a.out, &t->cfg, bounds, nb, ckpt_fetch, t)) != LSAE_OK) lib_fail(r, "saving the model");
        dist_piece_done(g_S);
        free(bounds);
    } else if (g_rank < g_S) {
        /* slice 0's other shards: one piece at a time */
        void *buf = xmalloc(most * (t->d * sizeof(float) > sizeof(uint64_t) ? t->d * sizeof(float) : sizeof(uint64_t)));
        dist_piece_serve(shard_piece, t, buf);
        free(buf);
    }
    t->saved_step = lsae_trainer_steps_done(t->tr);
    t->saved_any = 1;
}

static void save_checkpoint(train_run *t)
{
    char blob[512];
    lsae_loader_stats ls;
    lsae_result r;
    int w;
    if (g_rank != 0 && t->shard) {
        save_checkpoint_sharded(t, NULL, 0);
        return;
    }
    if (g_rank != 0) {
        /* rank 0 writes; every rank holds the same model and state */
        t->saved_step = lsae_trainer_steps_done(t->tr);
        t->saved_any = 1;
        return;
    }
    lsae_loader_get_stats(t->ld, &ls);
    /* the caller blob: where the data stood, and the counters a resumed run continues */
    w = snprintf(blob, sizeof blob,
                 "{\"rows_read\": %llu, \"samples\": %llu, \"batches_skipped\": %llu, \"rows_dropped\": %llu, \"elapsed_s\": %.3f}",
                 (unsigned long long)ls.rows_read, (unsigned long long)t->samples, (unsigned long long)t->batches_skipped,
                 (unsigned long long)ls.rows_dropped, t->elapsed_prev + (now_s() - t->t_start));
    if (w < 0 || (size_t)w >= sizeof blob) fail("internal: checkpoint blob too long");
    /* metrics first, so the log always reaches at least the checkpoint's step */
    if (fflush(t->metrics) != 0 || fsync(fileno(t->metrics)) != 0) fail("%s/metrics.jsonl: write failed: %s", t->a.out, strerror(errno));
    if (t->shard) {
        save_checkpoint_sharded(t, blob, (size_t)w);
        return;
    }
    if ((r = lsae_checkpoint_save(t->ck, t->m, t->tr, blob, (size_t)w)) != LSAE_OK) lib_fail(r, "saving the checkpoint");
    if ((r = lsae_model_save(t->m, t->a.out)) != LSAE_OK) lib_fail(r, "saving the model");
    t->saved_step = lsae_trainer_steps_done(t->tr);
    t->saved_any = 1;
}

/* The checkpoint's model, optimizer state and the counters in its blob.
   --shard-latents: t->m is this rank's shard, and only its rows are read
   from the files (lsae_checkpoint_load_shard_verified, rank 0 having
   verified the files for all), so a rank never holds more than its shard
   (and scratch of the shard's size) at resume either. */
static void load_checkpoint(train_run *t)
{
    char blob[1024];
    const char *err;
    size_t blen = 0;
    json_doc b;
    lsae_result r;
    if (t->shard) {
        /* rank 0 alone reads the files in full to check their hashes, and
           tells every rank its verdict, the directory it found whole and its
           message: the files are read in full once per job, not once per
           rank, and a damaged checkpoint is refused on every rank with rank
           0's one message (each rank still checks state.bin's length, the
           shapes and its own reads) */
        char found[PATH_CAP], msg[1024];
        int32_t code = 0;
        found[0] = msg[0] = 0;
        if (g_rank == 0 && (code = (int32_t)lsae_checkpoint_verify(t->ck, found, sizeof found)) != LSAE_OK)
            snprintf(msg, sizeof msg, "%s", lsae_last_error());
        dist_broadcast(&code, sizeof code);
        dist_broadcast(found, sizeof found);
        dist_broadcast(msg, sizeof msg);
        if (code != LSAE_OK) fail("resuming: %s", msg);
        r = lsae_checkpoint_load_shard_verified(found, t->m, t->tr, blob, sizeof blob - 1, &blen);
    } else {
        r = lsae_checkpoint_load(t->ck, t->m, t->tr, blob, sizeof blob - 1, &blen);
    }
    if (r != LSAE_OK) lib_fail(r, "resuming");
    if (blen >= sizeof blob) fail("%s: checkpoint blob of %zu bytes is not one lsae train wrote", t->ck, blen);
    blob[blen] = 0;
    if (!json_parse(&b, blob, blen, &err)) fail("%s: checkpoint blob is not lsae train's (%s)", t->ck, err);
    t->rows_read0 = json_u64_of(&b, 0, "rows_read", 0);
    t->samples = json_u64_of(&b, 0, "samples", 0);
    t->batches_skipped = json_u64_of(&b, 0, "batches_skipped", 0);
    t->elapsed_prev = json_num_of(&b, 0, "elapsed_s", 0);
    json_doc_free(&b);
}

/* Keep the lines of metrics.jsonl up to `step`: a run resumed from an older
   checkpoint redoes the steps after it, and its curves must not hold them twice. */
static void metrics_truncate(const char *path, uint64_t step)
{
    size_t len;
    char *text = read_file(path, &len), *p, *end;
    out_file of;
    FILE *f;
    if (!text) return;
    f = out_open(&of, path);
    for (p = text; p < text + len; p = end + 1) {
        json_doc v;
        const char *err;
        char *nl = (char *)memchr(p, '\n', (size_t)(text + len - p));
        end = nl ? nl : text + len;
        if (!nl || end == p) continue; /* a torn last line goes */
        if (!json_parse(&v, p, (size_t)(end - p), &err)) continue;
        if (json_num_of(&v, 0, "step", 0) <= (double)step) fwrite(p, 1, (size_t)(end - p) + 1, f);
        json_doc_free(&v);
    }
    free(text);
    out_commit(&of);
}

/* ------------------------------------------------------------- the start */

/* run.json: everything a resume or a report needs to know */
static void train_write_settings(const train_run *t)
{
    const train_args *a = &t->a;
    run_settings rs;
    memset(&rs, 0, sizeof rs);
    rs.run_id = t->run_id;
    rs.lsae_version = lsae_version_string();
    rs.data = t->data_abs;
    rs.texts = a->texts ? t->texts_abs : NULL;
    rs.format = a->da.format;
    rs.tensor = a->da.tensor;
    rs.raw_dtype = a->da.raw_dtype;
    rs.d_in_arg = a->da.d_in;
    rs.rows = t->rows;
    rs.d_in = t->d;
    rs.k = t->cfg.k;
    rs.num_latents = t->L;
    rs.expansion_factor = t->L % t->d == 0 ? t->L / t->d : 0;
    rs.multi_topk = t->cfg.multi_topk;
    rs.normalize_decoder = t->cfg.normalize_decoder;
    rs.batch_size = a->batch;
    rs.grad_acc_steps = a->grad_acc;
    rs.lr = lsae_config_lr(&t->cfg);
    rs.lr_auto = !(a->lr > 0);
    rs.lr_warmup_steps = a->warmup;
    rs.lr_schedule = schedule_name(t->schedule);
    rs.auxk_alpha = a->auxk_alpha;
    rs.dead_feature_threshold = a->dead_thr;
    rs.epochs = a->epochs;
    rs.max_samples = a->max_samples;
    rs.shuffle = !a->no_shuffle;
    rs.seed = a->seed;
    rs.total_steps = t->S;
    rs.save_every = a->save_every;
    rs.init = a->init ? t->init_where : NULL;
    rs.sae_type = a->sae_type;
    rs.batchtopk_threshold_beta = a->btk_beta;
    rs.batchtopk_row_cap = a->btk_cap;
    rs.matryoshka_sizes = a->mat_sizes;
    rs.matryoshka_ks = a->mat_ks;
    rs.matryoshka_loss_weights = a->mat_weights;
    rs.matryoshka_use_batchtopk = a->mat_btk;
    rs.matryoshka_form = a->mat_form;
    rs.k_anneal = a->anneal;
    rs.k_anneal_start = a->anneal_start;
    rs.k_anneal_pct = a->anneal_pct;
    run_settings_write(a->out, &rs);
}

static void train_print_plan(const train_run *t)
{
    const train_args *a = &t->a;
    size_t L = t->L, d = t->d;
    fprintf(stderr, "%s: %s %llu rows x %zu from %s\n", g_cmd, t->resuming ? "resuming on" : "training on", (unsigned long long)t->rows, d, a->data);
    fprintf(stderr, "  model     %zu latents (%s%zu), k %zu%s -> %s\n", L, L % d == 0 ? "expansion " : "", L % d == 0 ? L / d : L, t->cfg.k,
            t->cfg.multi_topk ? ", multi-topk" : "", a->out);
    if (t->cfg.sae_type != LSAE_SAE_TOPK || t->cfg.k_anneal) {
        const lsae_config *c = &t->cfg;
        fprintf(stderr, "  type      %s%s%s%s%s%s%s\n", a->sae_type,
                c->sae_type == LSAE_SAE_MATRYOSHKA ? (c->matryoshka_form == LSAE_MATRYOSHKA_NESTED ? " nested, sizes " : " per-level, sizes ") : "",
                c->sae_type == LSAE_SAE_MATRYOSHKA ? a->mat_sizes : "",
                c->sae_type == LSAE_SAE_MATRYOSHKA && a->mat_ks ? ", ks " : "", c->sae_type == LSAE_SAE_MATRYOSHKA && a->mat_ks ? a->mat_ks : "",
                c->sae_type == LSAE_SAE_BATCHTOPK || (c->sae_type == LSAE_SAE_MATRYOSHKA && c->matryoshka_use_batchtopk)
                    ? (c->batchtopk_row_cap ? ", batch-wide, rows capped at k" : ", batch-wide") : "",
                c->k_anneal ? ", k annealed" : "");
    }
    fprintf(stderr, "  training  %llu optimizer steps: batch %llu x grad-acc %llu, %llu epoch%s%s\n", (unsigned long long)t->S,
            (unsigned long long)a->batch, (unsigned long long)a->grad_acc, (unsigned long long)a->epochs, a->epochs == 1 ? "" : "s",
            a->max_samples ? ", capped by --max-samples" : "");
    if (g_ranks > 1 && t->shard && g_D > 1)
        fprintf(stderr, "  ranks     %d = %d data-parallel slices x %d latent shards: each holds %zu or %zu of the latents and trains on %llu or %llu rows of every batch; "
                "rank 0 writes the files\n", g_ranks, g_D, g_S, t->L / (size_t)g_S, (t->L + (size_t)g_S - 1) / (size_t)g_S,
                (unsigned long long)(a->batch / (uint64_t)g_D), (unsigned long long)((a->batch + (uint64_t)g_D - 1) / (uint64_t)g_D));
    else if (g_ranks > 1 && t->shard)
        fprintf(stderr, "  ranks     %d, latent-sharded: each holds %zu or %zu of the latents and trains on every batch; rank 0 writes the files\n", g_ranks,
                t->L / (size_t)g_S, (t->L + (size_t)g_S - 1) / (size_t)g_S);
    else if (g_ranks > 1)
        fprintf(stderr, "  ranks     %d, data-parallel: each trains on %llu or %llu rows of every batch; rank 0 writes the files\n", g_ranks,
                (unsigned long long)(a->batch / (uint64_t)g_ranks), (unsigned long long)((a->batch + (uint64_t)g_ranks - 1) / (uint64_t)g_ranks));
    fprintf(stderr, "  lr        %.3g%s, %s after %llu warm-up steps; auxk-alpha %g, dead after %llu samples; seed %llu\n",
            lsae_config_lr(&t->cfg), a->lr > 0 ? "" : " (automatic)", schedule_name(t->schedule), (unsigned long long)a->warmup, a->auxk_alpha,
            (unsigned long long)a->dead_thr, (unsigned long long)a->seed);
    if (t->resuming)
        fprintf(stderr, "  resuming  from step %llu of %llu (%llu samples seen)\n", (unsigned long long)t->step0, (unsigned long long)t->S,
                (unsigned long long)t->samples0);
    if (a->warmup >= t->S && t->schedule != LSAE_LR_CONSTANT)
        warn("note: --lr-warmup-steps %llu is not below the run's %llu optimizer steps, so the learning rate only warms up; try --lr-warmup-steps %llu",
             (unsigned long long)a->warmup, (unsigned long long)t->S, (unsigned long long)(t->S / 10 ? t->S / 10 : 1));
}

/* The run's batches: the data order is a function of the data, --batch-size,
   --seed, --no-shuffle, --epochs and --max-samples alone, so runs that agree
   on those see the same batches (lsae sweep feeds one loader to several).
   It starts at `position` (a checkpoint's rows_read; 0 for a new run). */
static lsae_loader *train_loader_open(const train_args *a, lsae_dataset *ds, uint64_t position)
{
    lsae_loader_options lo;
    lsae_loader *ld;
    lsae_result r;
    lo = lsae_loader_options_default((size_t)a->batch);
    lo.shuffle = !a->no_shuffle;
    lo.seed = a->seed;
    lo.epochs = a->epochs;
    lo.max_rows = a->max_samples;
    lo.drop_last = 1;
    if ((r = lsae_loader_create(ds, &lo, &ld)) != LSAE_OK) lib_fail(r, NULL);
    if (position && (r = lsae_loader_seek(ld, position)) != LSAE_OK) lib_fail(r, "resuming the data position");
    return ld;
}

/* Model and trainer (fresh, or from the checkpoint), run.json for a new
   run, metrics.jsonl open for appending. The loader is the caller's
   (train_loader_open at t->rows_read0, once the checkpoint has told it). */
/* --shard-latents: this rank's shard of the full model and trainer t holds
   (from --init of a SAELens model, which every rank reads whole; any other
   --init model and a checkpoint are read a shard at a time, train_start
   and load_checkpoint), which are then freed */
static void train_keep_shard(train_run *t)
{
    const size_t d = t->d, L = t->L, n = t->l1 - t->l0;
    lsae_model *sm = NULL;
    lsae_trainer *st_tr = NULL;
    lsae_trainer_state st;
    lsae_result r;
    float *m[4], *v[4];
    uint64_t *fired;
    int q;
    if ((r = lsae_model_shard_of(t->m, t->l0, t->l1, &sm)) != LSAE_OK) lib_fail(r, "splitting the latents");
    set_prepass(sm, t->a.prepass);
    if ((r = lsae_trainer_create(sm, &t->cfg, &st_tr)) != LSAE_OK) lib_fail(r, NULL);
    if (t->tr) {
        memset(&st, 0, sizeof st);
        for (q = 0; q < 4; ++q) {
            size_t cnt = q == 0 || q == 2 ? L * d : q == 1 ? L : d;
            m[q] = (float *)xmalloc(cnt * sizeof(float));
            v[q] = (float *)xmalloc(cnt * sizeof(float));
        }
        fired = (uint64_t *)xmalloc(L * sizeof(uint64_t));
        st.since_fired = fired;
        st.m_W_enc = m[0]; st.m_b_enc = m[1]; st.m_W_dec = m[2]; st.m_b_dec = m[3];
        st.v_W_enc = v[0]; st.v_b_enc = v[1]; st.v_W_dec = v[2]; st.v_b_dec = v[3];
        if ((r = lsae_trainer_get_state(t->tr, &st)) != LSAE_OK) lib_fail(r, "splitting the latents");
        /* this shard's rows of every array */
        st.since_fired = fired + t->l0;
        st.m_W_enc = m[0] + t->l0 * d; st.m_b_enc = m[1] + t->l0; st.m_W_dec = m[2] + t->l0 * d;
        st.v_W_enc = v[0] + t->l0 * d; st.v_b_enc = v[1] + t->l0; st.v_W_dec = v[2] + t->l0 * d;
        if ((r = lsae_trainer_set_state(st_tr, &st)) != LSAE_OK) lib_fail(r, "splitting the latents");
        for (q = 0; q < 4; ++q) { free(m[q]); free(v[q]); }
        free(fired);
        lsae_trainer_free(t->tr);
    }
    (void)n;
    lsae_model_free(t->m);
    t->m = sm;
    t->tr = st_tr;
}

static void train_start(train_run *t)
{
    const train_args *a = &t->a;
    lsae_result r;
    char path[PATH_CAP];
    if (t->shard) lsae_shard_range(t->L, dist_shard_rank(), g_S, &t->l0, &t->l1);
    if (t->shard && !t->m) {
        /* a new run or a resumed one: only this rank's latents are ever
           made (a checkpoint then overwrites them with its rows) */
        if ((r = lsae_model_create_shard(&t->cfg, NULL, t->l0, t->l1, &t->m)) != LSAE_OK) lib_fail(r, NULL);
        /* --init: this rank's rows of the saved model, read from the file
           (every rank opens it, on a file system they share) */
        if (t->init_rows && (r = lsae_model_load_shard(t->init_where, t->m)) != LSAE_OK) lib_fail(r, "--init");
    } else if (!t->m && (r = lsae_model_create(&t->cfg, NULL, &t->m)) != LSAE_OK) lib_fail(r, NULL);
    /* the trainer's selection follows the model's pre-pass setting */
    set_prepass(t->m, a->prepass);
    if ((r = lsae_trainer_create(t->m, &t->cfg, &t->tr)) != LSAE_OK) lib_fail(r, NULL);
    /* every rank loads the checkpoint (on a file system they share), a
       sharded rank its own rows; then the ranks check that they hold the
       same model (dist_attach) */
    if (t->resuming && !t->fresh) load_checkpoint(t);
    /* --init of a SAELens model gave every rank the whole model: keep a shard */
    if (t->shard && lsae_model_num_latents(t->m) == t->L) train_keep_shard(t);
    dist_attach(t->tr, t->m, t->shard);
    /* before anything is written or printed: every rank fails alike */
    if (a->stop_at && a->stop_at <= lsae_trainer_steps_done(t->tr))
        fail("--stop-at-step %llu: the run is already at step %llu (of %llu)", (unsigned long long)a->stop_at,
             (unsigned long long)lsae_trainer_steps_done(t->tr), (unsigned long long)t->S);
    if (g_rank != 0) {
        /* the other ranks of a data-parallel run write nothing, print nothing */
        t->quiet = 1;
        t->metrics = lsae__fopen("/dev/null", "wb");
        if (!t->metrics) fail("/dev/null: cannot open: %s", strerror(errno));
        t->step = t->step0 = lsae_trainer_steps_done(t->tr);
        t->samples0 = t->samples;
        return;
    }
    if (!t->resuming) train_write_settings(t);
    join_path(path, a->out, "metrics.jsonl");
    if (t->resuming) metrics_truncate(path, lsae_trainer_steps_done(t->tr));
    t->metrics = lsae__fopen(path, t->resuming ? "ab" : "wb");
    if (!t->metrics) fail("%s: cannot write: %s", path, strerror(errno));
    t->step = t->step0 = lsae_trainer_steps_done(t->tr);
    t->samples0 = t->samples;
    if (!t->quiet) train_print_plan(t);
}

/* -------------------------------------------------------------- the loop */

/* " k 23  theta 0.0412": what the SAE type adds to a progress line (k while
   it anneals, BatchTopK's threshold), "" for plain TopK */
static void train_type_progress(const train_run *t, char *buf, size_t cap)
{
    const lsae_config *c = &t->cfg;
    size_t at = 0;
    buf[0] = 0;
    if (c->k_anneal && t->step > 0) text_cat(buf, cap, &at, "  k %zu", t->w.st.k); /* the k of the last step (its window's k_s) */
    if (c->sae_type == LSAE_SAE_BATCHTOPK || (c->sae_type == LSAE_SAE_MATRYOSHKA && c->matryoshka_use_batchtopk))
        text_cat(buf, cap, &at, "  theta %.4g", (double)lsae_model_batchtopk_threshold(t->m));
}

/* The progress after optimizer step t->step: the live line on a terminal,
   else a plain line every --log-every steps (or about every 10 s). */
static void train_print_progress(train_run *t, double now, double fvu)
{
    train_window *w = &t->w;
    const lsae_step_stats *st = &w->st;
    double rate = (double)(t->samples - t->samples0) / (now - t->t_start + 1e-12);
    double eta = (double)(t->S - t->step) * (now - t->t_start) / (double)(t->step - t->step0);
    char etab[32], ty[64];
    fmt_duration(etab, sizeof etab, eta);
    train_type_progress(t, ty, sizeof ty);
    if (g_live) {
        if (now - w->t_last_live >= 0.1 || t->step == t->S) {
            int filled = (int)(20.0 * (double)t->step / (double)t->S), i;
            fprintf(stderr, "\r\033[Kstep %llu/%llu [", (unsigned long long)t->step, (unsigned long long)t->S);
            for (i = 0; i < 20; ++i) fputc(i < filled ? '=' : ' ', stderr);
            fprintf(stderr, "] %3.0f%%  %.0f samples/s  ETA %s  fvu %.4f  dead %.1f%%  lr %.2e%s", 100.0 * (double)t->step / (double)t->S,
                    rate, etab, w->ema, 100.0 * st->dead_fraction, st->lr, ty);
            fflush(stderr);
            g_live_drawn = 1;
            w->t_last_live = now;
        }
    } else if ((t->a.log_every ? t->step % t->a.log_every == 0 : now - w->t_last_line >= 10.0) || t->step == t->step0 + 1 || t->step == t->S) {
        fprintf(stderr, "step %llu/%llu (%.0f%%)  samples %llu  %.0f samples/s  ETA %s  fvu %.4f  auxk %.4g  dead %.2f%%  lr %.3g%s\n",
                (unsigned long long)t->step, (unsigned long long)t->S, 100.0 * (double)t->step / (double)t->S, (unsigned long long)t->samples,
                rate, etab, fvu, st->auxk, 100.0 * st->dead_fraction, st->lr, ty);
        w->t_last_line = now;
    }
}

/* An optimizer step was taken: its line of metrics.jsonl (the means over
   the batches it accumulated), then the progress. */
static void train_log_step(train_run *t)
{
    train_window *w = &t->w;
    const lsae_step_stats *st = &w->st;
    lsae_loader_stats ls;
    double now = now_s(), fvu = w->fvu / (double)w->batches, sps = (double)w->rows / (now - w->t_last_metric + 1e-12);
    double elapsed = t->elapsed_prev + (now - t->t_start);
    t->step = st->step;
    t->samples += w->rows;
    lsae_loader_get_stats(t->ld, &ls);
    fprintf(t->metrics,
            "{\"step\": %llu, \"epoch\": %llu, \"samples\": %llu, \"fvu\": %.6g, \"auxk\": %.6g, \"multi_topk_fvu\": %.6g, "
            "\"loss\": %.6g, \"dead_pct\": %.4g, \"n_dead\": %zu, \"lr\": %.6g, \"grad_norm\": %.6g, \"samples_per_s\": %.1f, "
            "\"elapsed_s\": %.3f",
            (unsigned long long)t->step, (unsigned long long)ls.epoch, (unsigned long long)t->samples, fvu,
            w->auxk / (double)w->batches, w->mtk / (double)w->batches, w->loss / (double)w->batches,
            100.0 * st->dead_fraction, st->n_dead, st->lr, st->grad_norm, sps, elapsed);
    /* the SAE type's own numbers (a TopK run's lines stay as they were) */
    if (t->cfg.k_anneal || t->cfg.sae_type != LSAE_SAE_TOPK)
        fprintf(t->metrics, ", \"k\": %zu, \"batchtopk_threshold\": %.9g", w->st.k, (double)lsae_model_batchtopk_threshold(t->m));
    fputs("}\n", t->metrics);
    fflush(t->metrics);
    w->t_last_metric = now;
    w->ema = isnan(w->ema) ? fvu : 0.9 * w->ema + 0.1 * fvu;
    w->last_fvu[w->n_last++ % 20] = fvu;
    w->batches = w->rows = 0;
    w->fvu = w->auxk = w->mtk = w->loss = 0;
    if (!t->quiet) train_print_progress(t, now, fvu);
}

/* A step went non-finite: nothing of it was applied; say what is left. */
static NORETURN void train_fail_not_finite(const train_run *t)
{
    if (!t->saved_any && !t->resuming) fail("%s; no checkpoint was saved yet: start again with a lower --lr", lsae_last_error());
    /* --resume keeps run.json's --lr and replays the same steps to the same
       NaN, so the library's "lower the learning rate and resume" is, in lsae,
       a new run; say so, or the two pieces of advice read as contradicting */
    fail("%s; the last good checkpoint (step %llu) is in %s, untouched; --resume keeps this run's --lr and would stop here again, "
         "so start a new run with a lower --lr and another --out (--init %s starts it from those weights)",
         lsae_last_error(), (unsigned long long)(t->saved_any ? t->saved_step : t->step0), t->ck, t->ck);
}

/* The clocks and the Ctrl-C handler, before the first batch. */
static void train_loop_begin(train_run *t)
{
    train_window *w = &t->w;
    catch_signals();
    t->t_start = now_s();
    w->ema = NAN;
    w->t_last_line = w->t_last_metric = t->t_start;
}

/* One batch into the run: a trainer step (which takes an optimizer step
   every --grad-acc-steps batches), its metrics line, and a checkpoint every
   --save-every steps. A batch the trainer refuses changes nothing. */
static void train_feed(train_run *t, const float *xb, size_t nrows)
{
    train_window *w = &t->w;
    lsae_result r = lsae_trainer_step(t->tr, xb, nrows, &w->st);
    if (r == LSAE_BAD_BATCH) {
        /* nothing changed in the model: skip the batch, say so once (the
           ranks of a data-parallel run all skip it: the decision is global) */
        t->batches_skipped++;
        if (!w->warned_batch && g_rank == 0) warn("skipping a batch: %s", lsae_last_error());
        w->warned_batch = 1;
        return;
    }
    if (r == LSAE_NOT_FINITE) train_fail_not_finite(t);
    if (r != LSAE_OK) lib_fail(r, "training");
    w->batches++;
    w->rows += w->st.rows_used;
    w->fvu += w->st.fvu;
    w->auxk += w->st.auxk;
    w->mtk += w->st.multi_topk_fvu;
    w->loss += w->st.loss;
    if (!w->st.stepped) return;
    train_log_step(t);
    if (t->a.save_every && t->step % t->a.save_every == 0 && t->step < t->S) {
        save_checkpoint(t);
        if (!g_live && !t->quiet) fprintf(stderr, "saved checkpoint at step %llu\n", (unsigned long long)t->step);
    }
}

/* Batches until the run's last optimizer step, the data's end, Ctrl-C
   (which lets the step in progress finish) or --stop-at-step. Returns 1 when
   stopped by Ctrl-C, 2 at --stop-at-step (between optimizer steps, so the
   checkpoint resumes exactly), 0 at the end. */
static int train_loop(train_run *t)
{
    const float *xb;
    size_t nrows;
    lsae_result r;
    train_loop_begin(t);
    while (t->step < t->S) {
        size_t lo, hi;
        if (t->w.batches == 0 && dist_stop_requested()) return 1;
        /* the same step on every rank: no exchange needed */
        if (t->w.batches == 0 && t->a.stop_at && t->step >= t->a.stop_at) return 2;
        if ((r = lsae_loader_next(t->ld, &xb, &nrows)) != LSAE_OK) lib_fail(r, "reading the data");
        if (nrows == 0) break;
        if (t->sliced || t->shard) {
            /* the loader read and returned this rank's slice alone (or,
               latent-sharded, every rank trains on the whole batch) */
            train_feed(t, xb, nrows);
            continue;
        }
        /* data-parallel: this rank's contiguous share of the global batch
           (sizes differ by at most one row); the whole batch in one process */
        lo = nrows * (size_t)g_rank / (size_t)g_ranks;
        hi = nrows * ((size_t)g_rank + 1) / (size_t)g_ranks;
        train_feed(t, xb + lo * t->d, hi - lo);
    }
    return 0;
}

/* ------------------------------------------------------------ the finish */

/* The mean fvu of the last (up to) 20 optimizer steps of this session; NaN
   when it took none. */
static double train_final_fvu(const train_run *t)
{
    size_t i, nl = t->w.n_last < 20 ? t->w.n_last : 20;
    double s = 0;
    for (i = 0; i < nl; ++i) s += t->w.last_fvu[i];
    return nl ? s / (double)nl : NAN;
}

/* The last optimizer step (when the data ended inside an accumulation
   window) and the last checkpoint. */
static void train_finish_save(train_run *t, int stopped)
{
    train_window *w = &t->w;
    lsae_result r;
    if (!stopped && w->batches > 0) {
        /* the data ended inside an accumulation window: use what was gathered */
        if ((r = lsae_trainer_apply(t->tr, &w->st)) != LSAE_OK) lib_fail(r, "training");
        t->samples += w->rows;
        t->step = w->st.step;
    }
    save_checkpoint(t);
}

/* The last checkpoint and the summary on stdout. */
static void train_finish(train_run *t, int stopped)
{
    train_window *w = &t->w;
    lsae_loader_stats ls;
    double secs, fvu_last;
    size_t nl = w->n_last < 20 ? w->n_last : 20;
    char dur[32];
    train_finish_save(t, stopped);
    if (g_rank != 0) return;
    live_clear();
    secs = now_s() - t->t_start;
    fvu_last = train_final_fvu(t);
    fmt_duration(dur, sizeof dur, secs);
    if (stopped) {
        if (stopped == 2)
            printf("stopped after step %llu of %llu (--stop-at-step); checkpoint saved\n", (unsigned long long)t->step, (unsigned long long)t->S);
        else
            printf("interrupted at step %llu of %llu; checkpoint saved\n", (unsigned long long)t->step, (unsigned long long)t->S);
        printf("continue with: %s --resume %s\n", g_cmd, t->a.out);
    } else {
        printf("done: %llu optimizer steps in %s, %llu samples this session (%.0f samples/s)\n", (unsigned long long)(t->step - t->step0), dur,
               (unsigned long long)(t->samples - t->samples0), (double)(t->samples - t->samples0) / (secs + 1e-12));
    }
    /* st is only set when this session ran a step (a resumed run may have none left) */
    if (nl)
        printf("final fvu %.4f (mean of the last %zu steps), dead latents %.2f%% (%zu of %zu)\n", fvu_last, nl, 100.0 * w->st.dead_fraction,
               w->st.n_dead, t->L);
    if (t->batches_skipped) printf("skipped %llu batches the trainer refused (no variance)\n", (unsigned long long)t->batches_skipped);
    lsae_loader_get_stats(t->ld, &ls);
    if (ls.rows_dropped) printf("dropped %llu rows holding NaN or Inf\n", (unsigned long long)ls.rows_dropped);
    printf("model:   %s (cfg.json + sae.safetensors; checkpoint/ for --resume)\n", t->a.out);
    printf("metrics: %s/metrics.jsonl; see them with: lsae report %s\n", t->a.out, t->a.out);
}

static void train_free(train_run *t)
{
    fclose(t->metrics);
    if (!t->shares_data) {
        lsae_loader_free(t->ld);
        lsae_dataset_close(t->ds);
    }
    lsae_trainer_free(t->tr);
    lsae_model_free(t->m);
    if (t->resuming) run_settings_free(&t->saved);
    free(t);
}

/* The peak resident memory so far in kB (Linux's VmHWM), 0 where unknown:
   LSAE_RSS_STATS=1 prints it (bench/bench_shard_rss.py) */
static long peak_rss_kb(void)
{
    char line[256];
    long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static int cmd_train(int argc, char **argv)
{
    /* on the heap: the run holds several paths of PATH_CAP bytes and the flag table */
    train_run *t = (train_run *)xcalloc(1, sizeof(train_run));
    int stopped;
    train_parse(argc, argv, &t->a);
    if (t->a.resume) train_resume_settings(t);
    else make_run_id(t->run_id);
    dist_broadcast(t->run_id, sizeof t->run_id); /* rank 0's: the default --out names it */
    train_check(t);
    train_open_data(t);
    train_make_config(t);
    train_plan(t);
    train_start(t);
    if (getenv("LSAE_RSS_STATS") && t->resuming)
        fprintf(stderr, "%s: rank %d of %d peak RSS %ld kB at resume\n", g_cmd, g_rank, g_ranks, peak_rss_kb());
    if (getenv("LSAE_RSS_STATS") && t->a.init)
        fprintf(stderr, "%s: rank %d of %d peak RSS %ld kB at init\n", g_cmd, g_rank, g_ranks, peak_rss_kb());
    t->ld = train_loader_open(&t->a, t->ds, t->rows_read0);
    t->sliced = dist_loader(t->ld);
    stopped = train_loop(t);
    if (getenv("LSAE_RSS_STATS"))
        fprintf(stderr, "%s: rank %d of %d peak RSS %ld kB while training\n", g_cmd, g_rank, g_ranks, peak_rss_kb());
    train_finish(t, stopped);
    if (getenv("LSAE_RSS_STATS"))
        fprintf(stderr, "%s: rank %d of %d peak RSS %ld kB with the final checkpoint\n", g_cmd, g_rank, g_ranks, peak_rss_kb());
    if (getenv("LSAE_READ_STATS")) {
        /* for the tests: each rank's share of the reading (stderr, every rank) */
        lsae_loader_stats ls;
        lsae_loader_get_stats(t->ld, &ls);
        fprintf(stderr, "%s: rank %d of %d read %llu rows of the %llu the run went through\n", g_cmd, g_rank, g_ranks,
                (unsigned long long)ls.rows_loaded, (unsigned long long)(ls.rows_read - t->rows_read0));
    }
    train_free(t);
    return stopped == 1 ? 130 : 0;
}
