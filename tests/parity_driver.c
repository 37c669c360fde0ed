/* Runs the library's training step on a problem written by
   tests/test_parity_torch.py and writes what it computed, for comparison
   with PyTorch.
   in:  int64 header[16] = magic 0x4C534145, version 1, d, L, k, multi_topk,
        normalize_decoder, grad_acc_steps, n_steps, B, init_b_dec, lr_schedule,
        lr_warmup_steps, total_steps, dead_feature_threshold, num_threads;
        double auxk_alpha, lr;
        float32 W_enc[L*d], b_enc[L], W_dec[L*d], b_dec[d]; uint64 since_fired[L];
        float32 X[n_steps * grad_acc_steps * B * d]
   out: per optimizer step: per batch double fvu, auxk, multi_topk_fvu;
        float32 grads (as the weights, accumulated, before clipping);
        double lr used; float32 weights after the step; uint64 since_fired[L]; float32 b_dec before the step */
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
    int64_t *h;
    double *dv;
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
    if (h[0] != 0x4C534145 || h[1] != 1) { fprintf(stderr, "parity_driver: bad magic\n"); return 1; }
    dv = (double *)rd(in, 2 * 8);
    d = (size_t)h[2]; L = (size_t)h[3]; acc = (size_t)h[7]; n_steps = (size_t)h[8]; B = (size_t)h[9];
    c = lsae_config_default(d);
    c.num_latents = L; c.k = (size_t)h[4]; c.multi_topk = (int)h[5]; c.normalize_decoder = (int)h[6];
    c.grad_acc_steps = acc; c.init_b_dec = (int)h[10]; c.lr_schedule = (lsae_lr_schedule)h[11];
    c.lr_warmup_steps = (uint64_t)h[12]; c.total_steps = (uint64_t)h[13]; c.dead_feature_threshold = (uint64_t)h[14];
    c.num_threads = (int)h[15]; c.auxk_alpha = dv[0]; c.lr = dv[1];
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
            double v[3];
            if (lsae_trainer_accumulate(t, X + (s * acc + a) * B * d, B, &ss) != LSAE_OK) die("accumulate");
            v[0] = ss.fvu; v[1] = ss.auxk; v[2] = ss.multi_topk_fvu;
            fwrite(v, 8, 3, out);
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
    free(h); free(dv); free(We); free(be); free(Wd); free(bd); free(since); free(X); free(buf);
    return 0;
}
