/* Runs the library's training step on a problem written by
   tests/test_parity_torch.py and writes what it computed, for comparison
   with PyTorch.
   in:  int64 header[16] = magic 0x4C534145, version 2, d, L, k, multi_topk,
        normalize_decoder, grad_acc_steps, n_steps, B, init_b_dec, lr_schedule,
        lr_warmup_steps, total_steps, dead_feature_threshold, num_threads;
        int64 type[8] = sae_type, batchtopk_row_cap, matryoshka_levels,
        matryoshka_form, matryoshka_use_batchtopk, k_anneal, k_anneal_start, 0;
        double auxk_alpha, lr, batchtopk_threshold_beta, k_anneal_pct;
        int64 matryoshka_sizes[16], matryoshka_ks[16]; double matryoshka_loss_weights[16];
        float32 W_enc[L*d], b_enc[L], W_dec[L*d], b_dec[d]; uint64 since_fired[L];
        float32 X[n_steps * grad_acc_steps * B * d]
   out: per optimizer step: per batch double[9 + 16] = fvu, auxk,
        multi_topk_fvu, loss, k, batchtopk_threshold (the step statistics'),
        the model's threshold after the batch, levels, rows_enlarged,
        level_fvu[16]; float32 grads (as the weights, accumulated, before
        clipping); float32 b_dec before the step; double lr used; float32
        weights after the step; uint64 since_fired[L] */
#define LATENTSAE_IMPLEMENTATION
#include "../latentsae.h"
#include <stdio.h>
#include <stdlib.h>

static void die(const char *what)
{
    fprintf(stderr, "parity_driver: %s: %s\n", what, lsae_last_error());
    exit(1);
}

static void *rd(FILE *f, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p || (n && fread(p, 1, n, f) != n)) { fprintf(stderr, "parity_driver: short input\n"); exit(1); }
    return p;
}

int main(int argc, char **argv)
{
    FILE *in, *out;
    int64_t *h, *ty, *lv;
    double *dv, *lw;
    size_t d, L, B, n_steps, acc, s, a, N;
    float *We, *be, *Wd, *bd, *X, *buf;
    uint64_t *since;
    lsae_config c;
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_trainer_state st;
    if (argc != 3) { fprintf(stderr, "usage: parity_driver IN OUT\n"); return 2; }
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    if (!in || !out) { perror("parity_driver"); return 1; }
    h = (int64_t *)rd(in, 16 * 8);
    if (h[0] != 0x4C534145 || h[1] != 2) { fprintf(stderr, "parity_driver: bad magic or version (want 2)\n"); return 1; }
    ty = (int64_t *)rd(in, 8 * 8);
    dv = (double *)rd(in, 4 * 8);
    lv = (int64_t *)rd(in, 2 * LSAE_MAX_LEVELS * 8);
    lw = (double *)rd(in, LSAE_MAX_LEVELS * 8);
    d = (size_t)h[2]; L = (size_t)h[3]; acc = (size_t)h[7]; n_steps = (size_t)h[8]; B = (size_t)h[9];
    c = lsae_config_default(d);
    c.num_latents = L; c.k = (size_t)h[4]; c.multi_topk = (int)h[5]; c.normalize_decoder = (int)h[6];
    c.grad_acc_steps = acc; c.init_b_dec = (int)h[10]; c.lr_schedule = (lsae_lr_schedule)h[11];
    c.lr_warmup_steps = (uint64_t)h[12]; c.total_steps = (uint64_t)h[13]; c.dead_feature_threshold = (uint64_t)h[14];
    c.num_threads = (int)h[15]; c.auxk_alpha = dv[0]; c.lr = dv[1];
    c.sae_type = (lsae_sae_type)ty[0]; c.batchtopk_row_cap = (int)ty[1]; c.matryoshka_levels = (size_t)ty[2];
    c.matryoshka_form = (lsae_matryoshka_form)ty[3]; c.matryoshka_use_batchtopk = (int)ty[4];
    c.k_anneal = (int)ty[5]; c.k_anneal_start = (size_t)ty[6];
    c.batchtopk_threshold_beta = dv[2]; c.k_anneal_pct = dv[3];
    for (s = 0; s < LSAE_MAX_LEVELS; ++s) {
        c.matryoshka_sizes[s] = (size_t)lv[s];
        c.matryoshka_ks[s] = (size_t)lv[LSAE_MAX_LEVELS + s];
        c.matryoshka_loss_weights[s] = lw[s];
    }
    We = (float *)rd(in, L * d * 4); be = (float *)rd(in, L * 4); Wd = (float *)rd(in, L * d * 4); bd = (float *)rd(in, d * 4);
    since = (uint64_t *)rd(in, L * 8);
    X = (float *)rd(in, n_steps * acc * B * d * 4);
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK) die("model");
    if (lsae_model_set_weights(m, We, be, Wd, bd) != LSAE_OK) die("weights");
    if (lsae_trainer_create(m, &c, &t) != LSAE_OK) die("trainer");
    memset(&st, 0, sizeof st);
    st.since_fired = since;
    st.b_dec_initialized = !c.init_b_dec;
    if (lsae_trainer_set_state(t, &st) != LSAE_OK) die("state");
    N = 2 * L * d + L + d;
    buf = (float *)malloc(N * 4);
    for (s = 0; s < n_steps; ++s) {
        lsae_step_stats ss;
        double lr;
        for (a = 0; a < acc; ++a) {
            double v[9 + LSAE_MAX_LEVELS];
            size_t j;
            memset(&ss, 0, sizeof ss);
            if (lsae_trainer_accumulate(t, X + (s * acc + a) * B * d, B, &ss) != LSAE_OK) die("accumulate");
            v[0] = ss.fvu; v[1] = ss.auxk; v[2] = ss.multi_topk_fvu; v[3] = ss.loss;
            v[4] = (double)ss.k; v[5] = (double)ss.batchtopk_threshold; v[6] = (double)lsae_model_batchtopk_threshold(m);
            v[7] = (double)ss.levels; v[8] = (double)ss.rows_enlarged;
            for (j = 0; j < LSAE_MAX_LEVELS; ++j) v[9 + j] = ss.level_fvu[j];
            fwrite(v, 8, 9 + LSAE_MAX_LEVELS, out);
        }
        lsae_trainer_get_grads(t, buf, buf + L * d, buf + L * d + L, buf + 2 * L * d + L);
        fwrite(buf, 4, N, out);
        lsae_model_get_weights(m, NULL, NULL, NULL, buf);
        fwrite(buf, 4, d, out); /* b_dec as the step saw it (after the median init) */
        if (lsae_trainer_apply(t, &ss) != LSAE_OK) die("apply");
        lr = ss.lr;
        fwrite(&lr, 8, 1, out);
        lsae_model_get_weights(m, buf, buf + L * d, buf + L * d + L, buf + 2 * L * d + L);
        fwrite(buf, 4, N, out);
        lsae_trainer_get_state(t, &st);
        fwrite(since, 8, L, out);
    }
    fclose(out);
    fclose(in);
    lsae_trainer_free(t);
    lsae_model_free(m);
    /* everything back, so LeakSanitizer (make test-sanitize) sees no leak */
    free(h); free(ty); free(dv); free(lv); free(lw); free(We); free(be); free(Wd); free(bd); free(since); free(X); free(buf);
    return 0;
}
