/* run_settings.c - run.json, the settings of a training run: one writer
   (lsae train, when a run starts) and one reader (train --resume, report,
   info, eval). Its keys and the way each value is written are fixed: old run
   directories must read back the same, so change nothing here without a
   reader for what was written before.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

static void json_str_or_null(FILE *f, const char *s)
{
    if (s) json_str(f, s);
    else fputs("null", f);
}

static const char *json_bool_text(int b) { return b ? "true" : "false"; }

/* The seed is written as a string: JSON readers that keep numbers as
   doubles would round a 64-bit seed. lr and auxk_alpha are written with 17
   significant digits, which read back as the same double: with 9, a resumed
   run's learning rate could differ from the original's in the last bit, and
   the resumed model from an uninterrupted run's. */
static void run_settings_write(const char *dir, const run_settings *rs)
{
    char path[PATH_CAP];
    out_file of;
    FILE *f;
    join_path(path, dir, "run.json");
    f = out_open(&of, path);
    fprintf(f, "{\n  \"run_id\": \"%s\",\n  \"lsae_version\": \"%s\",\n  \"data\": ", rs->run_id, rs->lsae_version);
    json_str(f, rs->data);
    fprintf(f, ",\n  \"texts\": ");
    json_str_or_null(f, rs->texts);
    fprintf(f, ",\n  \"format\": ");
    json_str_or_null(f, rs->format);
    fprintf(f, ",\n  \"tensor\": ");
    json_str_or_null(f, rs->tensor);
    fprintf(f, ",\n  \"raw_dtype\": ");
    json_str_or_null(f, rs->raw_dtype);
    fprintf(f, ",\n  \"d_in_arg\": %llu,\n  \"rows\": %llu,\n  \"d_in\": %llu,\n", (unsigned long long)rs->d_in_arg,
            (unsigned long long)rs->rows, (unsigned long long)rs->d_in);
    fprintf(f, "  \"k\": %llu,\n  \"num_latents\": %llu,\n  \"expansion_factor\": %llu,\n  \"multi_topk\": %s,\n  \"normalize_decoder\": %s,\n",
            (unsigned long long)rs->k, (unsigned long long)rs->num_latents, (unsigned long long)rs->expansion_factor,
            json_bool_text(rs->multi_topk), json_bool_text(rs->normalize_decoder));
    fprintf(f, "  \"batch_size\": %llu,\n  \"grad_acc_steps\": %llu,\n  \"lr\": %.17g,\n  \"lr_auto\": %s,\n  \"lr_warmup_steps\": %llu,\n",
            (unsigned long long)rs->batch_size, (unsigned long long)rs->grad_acc_steps, rs->lr, json_bool_text(rs->lr_auto),
            (unsigned long long)rs->lr_warmup_steps);
    fprintf(f, "  \"lr_schedule\": \"%s\",\n  \"auxk_alpha\": %.17g,\n  \"dead_feature_threshold\": %llu,\n", rs->lr_schedule, rs->auxk_alpha,
            (unsigned long long)rs->dead_feature_threshold);
    fprintf(f, "  \"epochs\": %llu,\n  \"max_samples\": %llu,\n  \"shuffle\": %s,\n  \"seed\": \"%llu\",\n  \"total_steps\": %llu,\n",
            (unsigned long long)rs->epochs, (unsigned long long)rs->max_samples, json_bool_text(rs->shuffle), (unsigned long long)rs->seed,
            (unsigned long long)rs->total_steps);
    fprintf(f, "  \"save_every\": %llu,\n  \"init\": ", (unsigned long long)rs->save_every);
    json_str_or_null(f, rs->init);
    fprintf(f, ",\n  \"sae_type\": ");
    json_str(f, rs->sae_type ? rs->sae_type : "topk");
    fprintf(f, ",\n  \"batchtopk_threshold_beta\": %.17g,\n  \"batchtopk_row_cap\": %s,\n  \"matryoshka_sizes\": ", rs->batchtopk_threshold_beta,
            json_bool_text(rs->batchtopk_row_cap));
    json_str_or_null(f, rs->matryoshka_sizes);
    fprintf(f, ",\n  \"matryoshka_ks\": ");
    json_str_or_null(f, rs->matryoshka_ks);
    fprintf(f, ",\n  \"matryoshka_loss_weights\": ");
    json_str_or_null(f, rs->matryoshka_loss_weights);
    fprintf(f, ",\n  \"matryoshka_use_batchtopk\": %s,\n  \"matryoshka_form\": ", json_bool_text(rs->matryoshka_use_batchtopk));
    json_str(f, rs->matryoshka_form ? rs->matryoshka_form : "nested");
    fprintf(f, ",\n  \"k_anneal\": %s,\n  \"k_anneal_start\": %llu,\n  \"k_anneal_pct\": %.17g", json_bool_text(rs->k_anneal),
            (unsigned long long)rs->k_anneal_start, rs->k_anneal_pct);
    fprintf(f, "\n}\n");
    out_commit(&of);
}

/* A key run.json lacks (only a hand-edited file lacks one: lsae train has
   always written them all) reads as 0 or NULL, or as lsae train's default
   where 0 means nothing: grad_acc_steps, epochs, normalize_decoder, shuffle,
   lr_schedule, save_every and dead_feature_threshold. */
static int run_settings_read(const char *dir, run_settings *rs)
{
    char path[PATH_CAP], *seed;
    json_doc doc;
    memset(rs, 0, sizeof *rs);
    join_path(path, dir, "run.json");
    if (!json_load(path, &doc)) return 0;
    rs->run_id = json_str_of(&doc, 0, "run_id");
    rs->lsae_version = json_str_of(&doc, 0, "lsae_version");
    rs->data = json_str_of(&doc, 0, "data");
    rs->texts = json_str_of(&doc, 0, "texts");
    rs->format = json_str_of(&doc, 0, "format");
    rs->tensor = json_str_of(&doc, 0, "tensor");
    rs->raw_dtype = json_str_of(&doc, 0, "raw_dtype");
    rs->d_in_arg = json_u64_of(&doc, 0, "d_in_arg", 0);
    rs->rows = json_u64_of(&doc, 0, "rows", 0);
    rs->d_in = json_u64_of(&doc, 0, "d_in", 0);
    rs->k = json_u64_of(&doc, 0, "k", 0);
    rs->num_latents = json_u64_of(&doc, 0, "num_latents", 0);
    rs->expansion_factor = json_u64_of(&doc, 0, "expansion_factor", 0);
    rs->multi_topk = json_num_of(&doc, 0, "multi_topk", 0) != 0;
    rs->normalize_decoder = json_num_of(&doc, 0, "normalize_decoder", 1) != 0;
    rs->batch_size = json_u64_of(&doc, 0, "batch_size", 0);
    rs->grad_acc_steps = json_u64_of(&doc, 0, "grad_acc_steps", 1);
    rs->lr = json_num_of(&doc, 0, "lr", 0);
    rs->lr_auto = json_num_of(&doc, 0, "lr_auto", 0) != 0;
    rs->lr_warmup_steps = json_u64_of(&doc, 0, "lr_warmup_steps", 0);
    rs->lr_schedule = json_str_of(&doc, 0, "lr_schedule");
    if (!rs->lr_schedule) {
        char *linear = (char *)xmalloc(sizeof "linear");
        strcpy(linear, "linear");
        rs->lr_schedule = linear;
    }
    rs->auxk_alpha = json_num_of(&doc, 0, "auxk_alpha", 0);
    rs->dead_feature_threshold = json_u64_of(&doc, 0, "dead_feature_threshold", 10000000);
    rs->epochs = json_u64_of(&doc, 0, "epochs", 1);
    rs->max_samples = json_u64_of(&doc, 0, "max_samples", 0);
    rs->shuffle = json_num_of(&doc, 0, "shuffle", 1) != 0;
    seed = json_str_of(&doc, 0, "seed");
    rs->seed = seed ? strtoull(seed, NULL, 10) : 0;
    free(seed);
    rs->total_steps = json_u64_of(&doc, 0, "total_steps", 0);
    rs->save_every = json_u64_of(&doc, 0, "save_every", 1000);
    rs->init = json_str_of(&doc, 0, "init");
    /* the SAE type: absent in the run.json of a TopK run from before the types */
    rs->sae_type = json_str_of(&doc, 0, "sae_type");
    rs->batchtopk_threshold_beta = json_num_of(&doc, 0, "batchtopk_threshold_beta", 0.999);
    rs->batchtopk_row_cap = json_num_of(&doc, 0, "batchtopk_row_cap", 0) != 0;
    rs->matryoshka_sizes = json_str_of(&doc, 0, "matryoshka_sizes");
    rs->matryoshka_ks = json_str_of(&doc, 0, "matryoshka_ks");
    rs->matryoshka_loss_weights = json_str_of(&doc, 0, "matryoshka_loss_weights");
    rs->matryoshka_use_batchtopk = json_num_of(&doc, 0, "matryoshka_use_batchtopk", 0) != 0;
    rs->matryoshka_form = json_str_of(&doc, 0, "matryoshka_form");
    rs->k_anneal = json_num_of(&doc, 0, "k_anneal", 0) != 0;
    rs->k_anneal_start = json_u64_of(&doc, 0, "k_anneal_start", 0);
    rs->k_anneal_pct = json_num_of(&doc, 0, "k_anneal_pct", 0.3);
    json_doc_free(&doc);
    return 1;
}

static void run_settings_free(run_settings *rs)
{
    /* the reader's strings: its own copies, const only to the commands */
    free((void *)rs->run_id); free((void *)rs->lsae_version); free((void *)rs->data); free((void *)rs->texts);
    free((void *)rs->format); free((void *)rs->tensor); free((void *)rs->raw_dtype); free((void *)rs->lr_schedule);
    free((void *)rs->init); free((void *)rs->sae_type); free((void *)rs->matryoshka_sizes); free((void *)rs->matryoshka_ks);
    free((void *)rs->matryoshka_loss_weights); free((void *)rs->matryoshka_form);
    memset(rs, 0, sizeof *rs);
}

static void data_args_from_run(data_args *da, const opt *o, size_t n, const run_settings *rs)
{
    if (!rs) return;
    if (!opt_seen(o, n, "--format") && rs->format) da->format = rs->format;
    if (!opt_seen(o, n, "--tensor") && rs->tensor) da->tensor = rs->tensor;
    if (!opt_seen(o, n, "--raw-dtype") && rs->raw_dtype) da->raw_dtype = rs->raw_dtype;
    if (!opt_seen(o, n, "--d-in") && rs->d_in_arg > 0) da->d_in = rs->d_in_arg;
}
