/* levels.c - lsae levels: a Matryoshka SAE read as a taxonomy.
   Part of lsae's one translation unit: included by main.c, not compiled alone.

   A Matryoshka SAE's first n_1 latents must reconstruct the data on their
   own, the first n_2 with them, and so on (docs/math.md, section 3): the
   smallest level learns broad directions and the later levels refine them.
   This command shows that structure: for a few latents of the smallest level
   (the coarse ones), the latents of each later level whose decoder rows
   point closest to the coarse latent's (cosine of the W_dec rows), each
   with the texts it is most active on. */

/* cos(a, b) of two d-vectors, in double */
static double levels_cosine(const float *a, const float *b, size_t d)
{
    double ab = 0.0, aa = 0.0, bb = 0.0;
    size_t j;
    for (j = 0; j < d; ++j) {
        ab += (double)a[j] * b[j];
        aa += (double)a[j] * a[j];
        bb += (double)b[j] * b[j];
    }
    return aa > 0.0 && bb > 0.0 ? ab / sqrt(aa * bb) : 0.0;
}

/* One latent: its index, fire rate and its best texts, indented. */
static void levels_print_latent(const scan *s, const texts *tx, size_t l, size_t show, const char *indent, double cosine)
{
    float act[16];
    uint64_t row[16];
    size_t n = top_sorted(s, l, act, row), i;
    printf("%slatent %zu", indent, l);
    if (cosine > -2.0) printf(" (decoder cosine %.2f)", cosine);
    printf(": active on %.2f%% of rows\n", 100.0 * (double)s->fires[l] / (double)(s->rows ? s->rows : 1));
    for (i = 0; i < n && i < show; ++i) {
        printf("%s  %7.3f  ", indent, (double)act[i]);
        if (tx->n) print_clipped(tx->line[row[i]], 110);
        else printf("row %llu", (unsigned long long)row[i]);
        printf("\n");
    }
}

static int cmd_levels(int argc, char **argv)
{
    const char *device = NULL, *precision = NULL, *prepass = NULL;
    const char *usage = "lsae levels MODEL EMBEDDINGS [--texts FILE] [options]";
    const char *about = "For a Matryoshka SAE: a few latents of the smallest level, and for each the latents of every "
                        "later level whose decoder directions are closest to it (cosine), with the texts each is most "
                        "active on. The smallest level holds the broad topics; the later ones refine them.";
    const char *texts_path = NULL;
    uint64_t coarse = 4, children = 3, top = 3, seed = 0, max_rows = 0;
    int threads = 0;
    data_args da;
    char *pos[2], where[PATH_CAP];
    lsae_model *m;
    lsae_dataset *ds;
    const lsae_config *cfg;
    scan s;
    texts tx;
    size_t d, L, i, c, lev, n_ok = 0, n_coarse;
    size_t *pool, *best;
    double *best_cos;
    float *W_dec;
    uint64_t rng;
    opt o[] = {
        OPT_GROUP("options"),
        OPT("--texts", NULL, O_STR, &texts_path, "FILE", NULL, "the text of each row, one line per row, in order"),
        OPT("--coarse", NULL, O_U64, &coarse, "N", "4", "latents of the smallest level shown, drawn by --seed among those active on at least --top rows"),
        OPT("--children", NULL, O_U64, &children, "N", "3", "closest latents shown from each later level"),
        OPT("--top", NULL, O_U64, &top, "N", "3", "texts shown per latent (at most 16)"),
        OPT("--seed", NULL, O_U64, &seed, "N", "0", "seed of the draw of coarse latents"),
        OPT("--max-rows", NULL, O_U64, &max_rows, "N", "all", "look only at the first N rows"),
        OPT("--threads", NULL, O_INT, &threads, "N", "0 = all cores", "threads for encoding"),
        DEVICE_OPTS(device, precision, prepass),
        DATA_OPTS(da),
    };
    memset(&da, 0, sizeof da);
    if (parse_args(argc, argv, o, sizeof o / sizeof o[0], usage, about, pos, 2) != 2) usage_fail("give MODEL and EMBEDDINGS");
    if (top == 0 || top > 16) usage_fail("--top must be between 1 and 16");
    if (coarse == 0 || children == 0) usage_fail("--coarse and --children must be at least 1");
    if (threads < 0) usage_fail("--threads must be >= 0");
    m = open_model(pos[0], where);
    cfg = lsae_model_config(m);
    if (cfg->sae_type != LSAE_SAE_MATRYOSHKA || cfg->matryoshka_levels < 2)
        fail("%s is not a Matryoshka SAE with two levels or more (lsae info shows its type); "
             "train one with --sae-type matryoshka --matryoshka-sizes N1,N2,...", where);
    place_model(m, device, precision, prepass);
    lsae_model_set_num_threads(m, threads);
    d = lsae_model_d_in(m);
    L = lsae_model_num_latents(m);
    W_dec = (float *)xmalloc(L * d * sizeof(float));
    if (lsae_model_get_weights(m, NULL, NULL, W_dec, NULL) != LSAE_OK) lib_fail(LSAE_ERROR, "reading the decoder");
    ds = open_data(pos[1], &da);
    texts_load(&tx, texts_path, lsae_dataset_rows(ds));
    catch_signals();
    scan_run(&s, m, ds, (size_t)top, 0, max_rows, "scanning");

    /* the coarse latents: a seeded draw among the smallest level's latents
       that are active on at least --top rows (what a user would see, not a
       pick of the prettiest) */
    pool = (size_t *)xmalloc(cfg->matryoshka_sizes[0] * sizeof(size_t));
    for (i = 0; i < cfg->matryoshka_sizes[0]; ++i)
        if (s.fires[i] >= top) pool[n_ok++] = i;
    if (n_ok == 0) fail("no latent of the smallest level (%zu latents) is active on %llu rows or more", cfg->matryoshka_sizes[0], (unsigned long long)top);
    n_coarse = coarse < n_ok ? (size_t)coarse : n_ok;
    rng = seed;
    for (i = 0; i < n_coarse; ++i) {
        size_t j = i + (size_t)(splitmix(&rng) % (uint64_t)(n_ok - i)), t = pool[i];
        pool[i] = pool[j];
        pool[j] = t;
    }
    qsort(pool, n_coarse, sizeof *pool, cmp_size);
    best = (size_t *)xmalloc((size_t)children * sizeof(size_t));
    best_cos = (double *)xmalloc((size_t)children * sizeof(double));
    printf("levels of %s:", where);
    for (lev = 0; lev < cfg->matryoshka_levels; ++lev) printf(" %zu", cfg->matryoshka_sizes[lev]);
    printf(" latents (level 1 is latents 0..%zu)\n\n", cfg->matryoshka_sizes[0] - 1);
    for (c = 0; c < n_coarse; ++c) {
        const size_t parent = pool[c];
        printf("level 1 ");
        levels_print_latent(&s, &tx, parent, (size_t)top, "", -3.0);
        for (lev = 1; lev < cfg->matryoshka_levels; ++lev) {
            /* the --children latents of this level's band [n_{lev-1}, n_lev)
               with the largest decoder cosine to the parent, by insertion */
            const size_t b0 = cfg->matryoshka_sizes[lev - 1], b1 = cfg->matryoshka_sizes[lev];
            size_t nb = 0, l, q;
            for (l = b0; l < b1; ++l) {
                double cs;
                if (s.fires[l] == 0) continue; /* a latent that never fires names nothing */
                cs = levels_cosine(W_dec + parent * d, W_dec + l * d, d);
                if (nb == children && cs <= best_cos[nb - 1]) continue;
                q = nb < children ? nb++ : nb - 1;
                for (; q > 0 && best_cos[q - 1] < cs; --q) {
                    best_cos[q] = best_cos[q - 1];
                    best[q] = best[q - 1];
                }
                best_cos[q] = cs;
                best[q] = l;
            }
            printf("  level %zu (latents %zu..%zu), closest:\n", lev + 1, b0, b1 - 1);
            if (nb == 0) printf("    (none of this level's latents fired)\n");
            for (q = 0; q < nb; ++q) levels_print_latent(&s, &tx, best[q], (size_t)top, "    ", best_cos[q]);
        }
        if (c + 1 < n_coarse) printf("\n");
    }
    if (n_coarse < coarse) warn("only %zu latents of the smallest level are active on at least %llu rows; showing those", n_ok, (unsigned long long)top);
    if (fflush(stdout) != 0 || ferror(stdout)) fail("writing to standard output failed");
    free(best); free(best_cos); free(pool); free(W_dec);
    texts_free(&tx);
    scan_free(&s);
    lsae_dataset_close(ds);
    lsae_model_free(m);
    return 0;
}
