/* Data-parallel training against one process (make test-mpi runs it under
   mpirun -np 1, 2 and 3).

   Every rank trains on its own slice of each global batch through
   latentsae_mpi.h; rank 0 also trains a second model in one process, with no
   communicator, on the whole of each batch. After each batch the global
   statistics (loss, fvu, auxk, 4k fvu, level fvus, dead count, rows used and
   dropped, gradient norm) must agree with the one-process run within 1e-5
   relative, and after 20 optimizer steps every tensor (the four weights and
   Adam's two moments of each) within 1e-5 relative to the tensor's largest
   value, and the dead-latent counters exactly. Every rank must end with the
   same bits (rank 0's digest is broadcast and compared). With one rank the
   data-parallel path must give the one-process bits exactly.

   The global batch, 61 rows, is split 31/30 over 2 ranks and 21/20/20 over
   3; one batch holds a NaN row (dropped, counted globally). The data are
   generated per row from the row's index, so each rank makes only its own
   rows (rank 0 makes all of them for its reference run).

   The cases: TopK with Multi-TopK and AuxK (latents go dead after 100 rows,
   so AuxK is on for most steps); nested Matryoshka with AuxK; per-level
   Matryoshka with 2-batch gradient accumulation; TopK with k annealing. And
   BatchTopK, which must be refused with LSAE_UNSUPPORTED on more than one
   rank (and train on one).

   Prints one line "digest CASE HEX" per case (rank 0): make test-mpi runs
   each P twice and requires the same lines (a run repeated with the same P
   is bit-identical), and once more with LSAE_MPI_NO_SHM=1 (the sums by MPI
   messages instead of a shared window: the same additions, the same bits).

   "topk-2-rows" trains on a global batch of 2 rows: on 3 ranks one rank's
   slice is empty and the others hold one row each (the global batch
   decides the refusals; an empty rank still takes part in every sum).

   --plant nosum|localtv: sabotage the communicator (the gradients, or the
   double sums: TV, the loss), to show the comparisons fail (exit 1).

   --device cuda (built with LATENTSAE_CUDA and latentsae_cuda.o:
   build/cuda-mpi/mpi_driver, run by tests/cuda/mpi.sh): every trainer, the
   ranks' and rank 0's one-process reference, on the GPU (FP32 products;
   ranks may share a GPU); the types the GPU trainer lacks are skipped. */
#define LATENTSAE_IMPLEMENTATION
#include <mpi.h>
#include "../latentsae.h"
#include "../latentsae_mpi.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D 32
#define GB 61           /* global batch rows */
#define STEPS 20
#define TOL 1e-5

static int g_rank, g_size, g_fail, g_cuda;
/* TOL, but 1e-4 for the 2-row case on the GPU: with 2 rows a batch an
   element whose gradient nearly cancels moves by about lr whatever its
   rounding (Adam), so a regrouped sum shows more there (test_cuda_dp.c
   measured 6.8e-6 on the CPU at d=64); a rank's part lost or counted twice
   is off by far more than 1e-4 */
static double g_tol = TOL;
static double g_worst_tensor, g_worst_stat;
static size_t g_most_dead;   /* the checks must have seen AuxK at work */

static void failf(const char *fmt, const char *a, const char *b, double x, double y)
{
    fprintf(stderr, "rank %d: ", g_rank);
    fprintf(stderr, fmt, a, b, x, y);
    fputc('\n', stderr);
    g_fail = 1;
}

/* splitmix64, for data independent of the library's generator */
static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unif(uint64_t a, uint64_t b) { return (double)(mix(mix(a) ^ b) >> 11) * (1.0 / 9007199254740992.0); }

/* row i of the data: 3 of 48 fixed atoms with positive weights, an offset
   and a little noise (a structure an SAE can find); row 7 of batch 3 NaN */
static void make_row(float *out, uint64_t i)
{
    size_t j, a;
    for (j = 0; j < D; ++j) out[j] = (float)(0.5 + 0.05 * (unif(i, 1000 + j) - 0.5));
    for (a = 0; a < 3; ++a) {
        uint64_t atom = mix(i * 7 + a) % 48;
        double w = 0.5 + unif(i, 2000 + a);
        for (j = 0; j < D; ++j) out[j] += (float)(w * (unif(atom, 3000 + j) - 0.5));
    }
    if (i == 3 * GB + 7) out[5] = NAN;
}

typedef struct tcase {
    const char *name;
    lsae_sae_type type;
    lsae_matryoshka_form form;
    size_t levels, sizes[3], ks[3];
    int multi_topk, anneal, batchwide;
    double auxk_alpha;
    uint64_t grad_acc;
    size_t gb;          /* the global batch's rows (0: GB) */
} tcase;

static lsae_config case_config(const tcase *tc)
{
    lsae_config c = lsae_config_default(D);
    size_t j;
    c.num_latents = 256;
    c.k = 6;
    c.multi_topk = tc->multi_topk;
    c.auxk_alpha = tc->auxk_alpha;
    c.dead_feature_threshold = 100;
    c.lr = 2e-3;
    c.lr_warmup_steps = 3;
    c.grad_acc_steps = tc->grad_acc;
    c.total_steps = STEPS;
    c.seed = 7;
    c.num_threads = 1;
    c.sae_type = tc->type;
    c.matryoshka_form = tc->form;
    c.matryoshka_levels = tc->levels;
    c.matryoshka_use_batchtopk = tc->batchwide;
    for (j = 0; j < tc->levels; ++j) {
        c.matryoshka_sizes[j] = tc->sizes[j];
        c.matryoshka_ks[j] = tc->ks[j];
    }
    c.k_anneal = tc->anneal;
#ifdef LATENTSAE_CUDA
    if (g_cuda) {
        c.device = LSAE_DEVICE_CUDA;
        c.precision = LSAE_PRECISION_FP32;
    }
#endif
    return c;
}

static void near_stat(const char *cs, const char *what, double a, double b)
{
    double e = fabs(a - b) / (fabs(b) > 1e-30 ? fabs(b) : 1.0);
    if (e > g_worst_stat) g_worst_stat = e;
    if (!(e <= g_tol)) failf("%s: %s %.9g, one process %.9g", cs, what, a, b);
}

/* max |a - b| <= TOL max |b| */
static void near_tensor(const char *cs, const char *what, const float *a, const float *b, size_t n, int exact)
{
    double dmax = 0.0, bmax = 0.0, e;
    size_t i;
    for (i = 0; i < n; ++i) {
        double dd = fabs((double)a[i] - (double)b[i]);
        if (dd > dmax || dd != dd) dmax = dd;
        if (fabs((double)b[i]) > bmax) bmax = fabs((double)b[i]);
    }
    e = bmax > 0 ? dmax / bmax : dmax;
    if (e > g_worst_tensor) g_worst_tensor = e;
    if (exact ? memcmp(a, b, n * sizeof(float)) != 0 : !(e <= g_tol)) failf("%s: %s differs by %.3g of its largest value %.3g", cs, what, e, bmax);
}

/* the whole state: weights, Adam moments, counters, steps */
typedef struct snap {
    float *t;           /* W_enc b_enc W_dec b_dec, m of each, v of each: 3 slabs */
    uint64_t *fired;
    size_t n, L;
} snap;

static void take(snap *s, lsae_model *m, lsae_trainer *tr)
{
    const size_t d = lsae_model_d_in(m), L = lsae_model_num_latents(m), n = 2 * L * d + L + d;
    lsae_trainer_state st;
    float *p;
    s->n = n;
    s->L = L;
    s->t = (float *)calloc(3 * n, sizeof(float));
    s->fired = (uint64_t *)calloc(L, sizeof(uint64_t));
    p = s->t;
    lsae_model_get_weights(m, p, p + L * d, p + L * d + L, p + 2 * L * d + L);
    memset(&st, 0, sizeof st);
    st.since_fired = s->fired;
    p = s->t + n;
    st.m_W_enc = p; st.m_b_enc = p + L * d; st.m_W_dec = p + L * d + L; st.m_b_dec = p + 2 * L * d + L;
    p = s->t + 2 * n;
    st.v_W_enc = p; st.v_b_enc = p + L * d; st.v_W_dec = p + L * d + L; st.v_b_dec = p + 2 * L * d + L;
    lsae_trainer_get_state(tr, &st);
}

static uint64_t digest(const snap *s)
{
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = (const unsigned char *)s->t;
    size_t i;
    for (i = 0; i < 3 * s->n * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
    p = (const unsigned char *)s->fired;
    for (i = 0; i < s->L * sizeof(uint64_t); ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void compare(const char *cs, const snap *a, const snap *b, int exact)
{
    static const char *names[3] = { "weights", "Adam m", "Adam v" };
    const size_t L = a->L, d = D;
    size_t off[5], q, i;
    static const char *tn[4] = { "W_enc", "b_enc", "W_dec", "b_dec" };
    char what[64];
    off[0] = 0; off[1] = L * d; off[2] = L * d + L; off[3] = 2 * L * d + L; off[4] = a->n;
    for (q = 0; q < 3; ++q)
        for (i = 0; i < 4; ++i) {
            snprintf(what, sizeof what, "%s of %s", names[q], tn[i]);
            near_tensor(cs, what, a->t + q * a->n + off[i], b->t + q * b->n + off[i], off[i + 1] - off[i], exact);
        }
    for (i = 0; i < L; ++i)
        if (a->fired[i] != b->fired[i]) {
            failf("%s: %s %.0f, one process %.0f", cs, "a dead-latent counter", (double)a->fired[i], (double)b->fired[i]);
            break;
        }
}

static void compare_stats(const char *cs, const lsae_step_stats *a, const lsae_step_stats *b)
{
    size_t j;
    near_stat(cs, "loss", a->loss, b->loss);
    near_stat(cs, "fvu", a->fvu, b->fvu);
    near_stat(cs, "auxk", a->auxk, b->auxk);
    near_stat(cs, "multi_topk_fvu", a->multi_topk_fvu, b->multi_topk_fvu);
    near_stat(cs, "grad_norm", a->grad_norm, b->grad_norm);
    for (j = 0; j < b->levels; ++j) near_stat(cs, "a level's fvu", a->level_fvu[j], b->level_fvu[j]);
    if (a->n_dead != b->n_dead || a->rows_used != b->rows_used || a->rows_dropped != b->rows_dropped || a->stepped != b->stepped ||
        a->step != b->step || a->k != b->k)
        failf("%s: %s differ (n_dead, rows used, rows dropped, k: %.0f ...), one process %.0f", cs, "the counts", (double)a->n_dead, (double)b->n_dead);
}

/* sabotage, to see the checks fail */
static lsae_result plant_nosum32(void *ctx, float *buf, size_t n) { (void)ctx; (void)buf; (void)n; return LSAE_OK; }
static lsae_result plant_nosum64(void *ctx, double *buf, size_t n) { (void)ctx; (void)buf; (void)n; return LSAE_OK; }

static void run_case(const tcase *tc, const lsae_comm *comm)
{
    lsae_config c = case_config(tc);
    lsae_model *m = NULL, *mr = NULL;
    lsae_trainer *tr = NULL, *trr = NULL;
    lsae_step_stats st, str;
    lsae_result r;
    const size_t gb = tc->gb ? tc->gb : GB;
    size_t lo, hi, nb = STEPS * tc->grad_acc, s;
    float *x = (float *)malloc(GB * D * sizeof(float));
    snap a, b;
    uint64_t h, h0;
    g_tol = g_cuda && tc->gb ? 1e-4 : TOL;
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK || lsae_trainer_create(m, &c, &tr) != LSAE_OK) {
        fprintf(stderr, "rank %d: %s: %s\n", g_rank, tc->name, lsae_last_error());
        g_fail = 1;
        return;
    }
    r = lsae_trainer_set_comm(tr, comm);
    if ((tc->batchwide || tc->type == LSAE_SAE_BATCHTOPK) && comm->size > 1) {
        if (r != LSAE_UNSUPPORTED) failf("%s: set_comm gave %s for a batch-wide pick on %.0f ranks, want LSAE_UNSUPPORTED%.0f", tc->name, lsae_result_string(r), comm->size, 0);
        else if (g_rank == 0) printf("refused %s: %s\n", tc->name, lsae_last_error());
        lsae_trainer_free(tr);
        lsae_model_free(m);
        free(x);
        return;
    }
    if (r != LSAE_OK) { fprintf(stderr, "rank %d: %s: set_comm: %s\n", g_rank, tc->name, lsae_last_error()); g_fail = 1; return; }
    if (g_rank == 0 && (lsae_model_create(&c, NULL, &mr) != LSAE_OK || lsae_trainer_create(mr, &c, &trr) != LSAE_OK)) {
        fprintf(stderr, "%s: %s\n", tc->name, lsae_last_error());
        g_fail = 1;
        return;
    }
    lsae_mpi_slice(gb, g_rank, g_size, &lo, &hi);
    for (s = 0; s < nb; ++s) {
        size_t i;
        /* this rank's rows; rank 0 makes them all, for its one-process run */
        for (i = 0; i < gb; ++i)
            if (g_rank == 0 || (i >= lo && i < hi)) make_row(x + i * D, (uint64_t)(s * GB + i));
        memset(&st, 0, sizeof st);
        if ((r = lsae_trainer_step(tr, x + lo * D, hi - lo, &st)) != LSAE_OK) {
            fprintf(stderr, "rank %d: %s, batch %zu: %s\n", g_rank, tc->name, s, lsae_last_error());
            g_fail = 1;
            break;
        }
        if (g_rank == 0) {
            memset(&str, 0, sizeof str);
            if (lsae_trainer_step(trr, x, gb, &str) != LSAE_OK) { fprintf(stderr, "%s: reference: %s\n", tc->name, lsae_last_error()); g_fail = 1; break; }
            compare_stats(tc->name, &st, &str);
            if (str.n_dead > g_most_dead) g_most_dead = str.n_dead;
            if (s == 3 && gb == GB && st.rows_dropped != 1) failf("%s: %s (%.0f) should count batch 3's NaN row over all ranks (%.0f)", tc->name, "rows_dropped", (double)st.rows_dropped, 1);
        }
    }
    take(&a, m, tr);
    h = digest(&a);
    /* every rank holds the same model */
    h0 = h;
    comm->broadcast(comm->ctx, &h0, sizeof h0, 0);
    if (h0 != h) failf("%s: %s, rank 0's digest %.0f, this rank's %.0f", tc->name, "the ranks disagree", (double)h0, (double)h);
    if (g_rank == 0) {
        take(&b, mr, trr);
        compare(tc->name, &a, &b, comm->size == 1);
        printf("digest %s %016llx\n", tc->name, (unsigned long long)h);
        free(b.t); free(b.fired);
        lsae_trainer_free(trr);
        lsae_model_free(mr);
    }
    free(a.t); free(a.fired);
    lsae_trainer_free(tr);
    lsae_model_free(m);
    free(x);
}

int main(int argc, char **argv)
{
    static const tcase cases[] = {
        { "topk-multi-auxk", LSAE_SAE_TOPK, LSAE_MATRYOSHKA_NESTED, 0, { 0 }, { 0 }, 1, 0, 0, 1.0 / 32.0, 1, 0 },
        { "matryoshka-nested", LSAE_SAE_MATRYOSHKA, LSAE_MATRYOSHKA_NESTED, 3, { 32, 96, 256 }, { 0 }, 0, 0, 0, 1.0 / 32.0, 1, 0 },
        { "matryoshka-per-level-acc2", LSAE_SAE_MATRYOSHKA, LSAE_MATRYOSHKA_PER_LEVEL, 2, { 64, 256 }, { 4, 6 }, 0, 0, 0, 0.0, 2, 0 },
        { "topk-anneal", LSAE_SAE_TOPK, LSAE_MATRYOSHKA_NESTED, 0, { 0 }, { 0 }, 0, 1, 0, 1.0 / 32.0, 1, 0 },
        /* refused on more than one rank; on one, as one process */
        { "batchtopk", LSAE_SAE_BATCHTOPK, LSAE_MATRYOSHKA_NESTED, 0, { 0 }, { 0 }, 0, 0, 0, 1.0 / 32.0, 1, 0 },
        { "matryoshka-batchwide", LSAE_SAE_MATRYOSHKA, LSAE_MATRYOSHKA_NESTED, 2, { 64, 256 }, { 0 }, 0, 0, 1, 1.0 / 32.0, 1, 0 },
        /* 2 rows a batch: on 3 ranks, slices of 0, 1 and 1 rows */
        { "topk-2-rows", LSAE_SAE_TOPK, LSAE_MATRYOSHKA_NESTED, 0, { 0 }, { 0 }, 1, 0, 0, 1.0 / 32.0, 1, 2 },
    };
    lsae_mpi mc;
    lsae_comm comm = { 0, 1, NULL, NULL, NULL, NULL, NULL, NULL };
    int i, any;
    const char *plant = argc > 2 && !strcmp(argv[1], "--plant") ? argv[2] : NULL;
    MPI_Init(&argc, &argv);
    if (argc > 2 && !strcmp(argv[1], "--device") && !strcmp(argv[2], "cuda")) {
#ifdef LATENTSAE_CUDA
        g_cuda = 1;
#else
        fprintf(stderr, "--device cuda: this mpi_driver was built without LATENTSAE_CUDA\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
#endif
        plant = NULL;
    }
    if (lsae_mpi_init(&mc, MPI_COMM_WORLD, &comm) != LSAE_OK) { fprintf(stderr, "lsae_mpi_init failed\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
    g_rank = comm.rank;
    g_size = comm.size;
    if (plant && !strcmp(plant, "nosum")) comm.sum_f32 = plant_nosum32;
    else if (plant && !strcmp(plant, "localtv")) comm.sum_f64 = plant_nosum64;
    else if (plant) { fprintf(stderr, "--plant nosum or localtv\n"); MPI_Abort(MPI_COMM_WORLD, 2); }
    for (i = 0; i < (int)(sizeof cases / sizeof cases[0]); ++i) {
        tcase tc = cases[i];
        if (g_cuda && (tc.type != LSAE_SAE_TOPK || tc.anneal)) {
            /* the GPU trainer trains TopK (multi-topk, AuxK) without k annealing */
            if (g_rank == 0) printf("skipped on the GPU: %s\n", tc.name);
            continue;
        }
        run_case(&tc, &comm);
    }
    if (comm.size > 1) {
        /* a rank with another model (here: another seed) is refused on every rank */
        lsae_config c = case_config(&cases[0]);
        lsae_model *m = NULL;
        lsae_trainer *tr = NULL;
        lsae_result r;
        if (g_rank == comm.size - 1) c.seed = 8;
        if (lsae_model_create(&c, NULL, &m) != LSAE_OK || lsae_trainer_create(m, &c, &tr) != LSAE_OK) g_fail = 1;
        r = lsae_trainer_set_comm(tr, &comm);
        if (r != LSAE_INVALID_ARGS || !strstr(lsae_last_error(), "1 of the")) {
            fprintf(stderr, "rank %d: a rank with another seed: set_comm gave %s (%s)\n", g_rank, lsae_result_string(r), lsae_last_error());
            g_fail = 1;
        } else if (g_rank == 0) {
            printf("refused a rank with another seed: %s\n", lsae_last_error());
        }
        lsae_trainer_free(tr);
        lsae_model_free(m);
    }
    MPI_Allreduce(&g_fail, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (g_rank == 0 && g_most_dead == 0) { fprintf(stderr, "no latent went dead: AuxK was never tested\n"); any = 1; }
    if (g_rank == 0)
        printf("mpi_driver%s: %d ranks: %s (worst relative difference from one process: tensors %.3g, statistics %.3g; up to %zu of 256 latents dead; sums %s)\n",
               g_cuda ? " --device cuda" : "", comm.size, any ? "FAILED" : "ok", g_worst_tensor, g_worst_stat, g_most_dead,
               comm.size == 1 ? "none" : mc.shm ? "through a shared window" : "by MPI messages");
    lsae_mpi_free(&mc);
    MPI_Finalize();
    return any ? 1 : 0;
}
