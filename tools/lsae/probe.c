/* probe.c - k-sparse probing for lsae eval --labels: how much of a labelling
   of the rows a handful of SAE latents carries, next to the same probe on
   the embedding itself.
   Part of lsae's one translation unit: included by main.c, not compiled alone.
   docs/probing.md gives the same definition for users.

   The method is SAEBench's sparse probing (Gurnee et al.'s k-sparse probes
   as SAEBench runs them), on embeddings instead of language-model tokens:

   Rows. Row i of the data has the label on line i of the labels file, with
   surrounding blanks removed. Rows past the end of the labels file, rows
   whose label is empty and rows holding NaN or Inf are left out (counted);
   lines of the labels file past the rows evaluated are ignored (counted).

   Tasks: one binary task per class, one-vs-rest, for each class with at
   least min_class_rows rows (smaller classes still serve as negatives).
   As in SAEBench, a task is balanced: its positives are all the rows of the
   class, its negatives as many rows (or all, if fewer) drawn from the rows
   of every other label, as they come (SAEBench draws them evenly from each
   other class; with classes of very unequal size, as Debian's sections, that
   leaves the big classes short of negatives). Which ones is fixed by a hash,
   not a random stream,
   so it can be recomputed row by row (tests/test_probe.py does):
       mix(x)  = splitmix64's output for state x (x + 0x9E3779B97F4A7C15,
                 then the two xor-shift-multiply rounds and a final xor-shift)
       S       = mix(seed)
       negatives of class c: the other rows in increasing order of
                 (mix(mix(S ^ fnv1a64(c)) ^ row), row), the first n taken
       a row is held out (test) when mix(S ^ row) % 5 == 0, else it trains:
                 20% held out, SAEBench's 4,000 / 1,000 proportion, and each
                 row on the same side in every task.
   The reported number is the held-out accuracy, averaged over the tasks
   (SAEBench averages over its classes the same way).

   Choosing k latents (SAEBench's get_top_k_mean_diff_mask): over the
   training rows of a task, the mean activation of every latent on the
   positives and on the negatives (a latent outside a row's top-k, or not
   above 0, has activation 0 there); the k latents with the largest
   |mean_pos - mean_neg|, ties to the lower index. The means are sums over
   each row's k (index, activation) pairs: no [rows, L] matrix is formed.
   The same rule on the embedding's d dimensions gives the "top-k dims"
   baseline (SAEBench's llm_top_k probes); "all dims" uses every dimension.

   The probe: L2-regularised logistic regression with an unpenalised
   intercept, C = 1 (scikit-learn's LogisticRegression defaults, which
   SAEBench uses), on features standardised with the training rows' mean
   and standard deviation (a constant feature is only centred). SAEBench
   fits raw activations; standardising makes the fixed C = 1 penalty
   independent of the scale a given SAE happens to give its activations, so
   probes of different SAEs and of the embedding are comparable. For the
   all-dims baseline SAEBench trains a probe with Adam on a GPU; here it is
   the same exact logistic regression as the others. The fit minimises
       f(w, b) = 1/2 |w|^2 + C sum_i [ softplus(s_i) - t_i s_i ],
       s_i = w . z_i + b,  t_i in {0, 1}
   by Newton's method: gradient g = (w, 0) + C sum_i (p_i - t_i) (z_i, 1),
   Hessian H = diag(1, .., 1, 0) + C sum_i p_i (1 - p_i) (z_i, 1)(z_i, 1)^T,
   p_i = sigmoid(s_i); the step solves H delta = -g by Cholesky, with
   backtracking (Armijo) on f; it stops when the Newton decrement
   -g.delta / 2 falls under 1e-12 (1 + |f|). f is strictly convex, so this
   is its unique minimum, reached in a fixed sequence of operations: the
   same answer on any number of threads. A row is predicted positive when
   s > 0, as scikit-learn's predict does. */

#define PROBE_TEST_MOD 5 /* one row in 5 held out */

static const size_t probe_k_values[PROBE_NK] = { 1, 2, 5, 20 };

static uint64_t probe_mix(uint64_t x) { return splitmix(&x); }

static uint64_t probe_fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; ++s) { h ^= (unsigned char)*s; h *= 0x100000001b3ull; }
    return h;
}

/* --------------------------------------------------- logistic regression */

static double probe_softplus(double s) { return s > 0 ? s + log1p(exp(-s)) : log1p(exp(s)); }
static double probe_sigmoid(double s) { return s >= 0 ? 1.0 / (1.0 + exp(-s)) : exp(s) / (1.0 + exp(s)); }

/* dot product in four fixed lanes: vectorisable without reassociating, so
   the result does not depend on the compiler's choices */
static double probe_dot(const double *a, const double *b, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; ++i) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* s = Z w + b over n rows; Z column-major with leading dimension ld */
static void probe_scores(const double *Z, size_t ld, size_t n, size_t p, const double *w, double *s)
{
    size_t i, j;
    for (i = 0; i < n; ++i) s[i] = w[p];
    for (j = 0; j < p; ++j) {
        const double *z = Z + j * ld;
        double wj = w[j];
        if (wj == 0.0) continue;
        for (i = 0; i < n; ++i) s[i] += wj * z[i];
    }
}

static double probe_objective(const double *w, size_t p, const double *s, const unsigned char *t, size_t n, double C)
{
    double reg = 0, loss = 0;
    size_t i, j;
    for (j = 0; j < p; ++j) reg += w[j] * w[j];
    for (i = 0; i < n; ++i) loss += probe_softplus(s[i]) - (t[i] ? s[i] : 0.0);
    return 0.5 * reg + C * loss;
}

/* In-place Cholesky of the m x m matrix A (row-major, lower triangle used),
   then solve A x = b into b. Returns 0 when A is not positive definite. */
static int probe_cholesky_solve(double *A, size_t m, double *b)
{
    size_t i, j, q;
    for (j = 0; j < m; ++j) {
        double v = A[j * m + j];
        for (q = 0; q < j; ++q) v -= A[j * m + q] * A[j * m + q];
        if (!(v > 0)) return 0;
        v = sqrt(v);
        A[j * m + j] = v;
        for (i = j + 1; i < m; ++i) {
            double u = A[i * m + j];
            for (q = 0; q < j; ++q) u -= A[i * m + q] * A[j * m + q];
            A[i * m + j] = u / v;
        }
    }
    for (i = 0; i < m; ++i) { /* L y = b */
        double u = b[i];
        for (q = 0; q < i; ++q) u -= A[i * m + q] * b[q];
        b[i] = u / A[i * m + i];
    }
    for (i = m; i-- > 0;) { /* L^T x = y */
        double u = b[i];
        for (q = i + 1; q < m; ++q) u -= A[q * m + i] * b[q];
        b[i] = u / A[i * m + i];
    }
    return 1;
}

/* Fit w[0..p-1] and the intercept w[p] on n rows of Z (column-major, column
   j at Z + j * ld) with labels t. Returns the Newton iterations taken, or -1
   when it did not converge in 100 (w then holds the last iterate). */
static int logreg_fit(const double *Z, size_t ld, size_t n, size_t p, const unsigned char *t, double C, double *w)
{
    size_t m = p + 1, i, j, l;
    double *s = (double *)xmalloc(n * sizeof(double));
    double *s_new = (double *)xmalloc(n * sizeof(double));
    double *v = (double *)xmalloc(n * sizeof(double));
    double *r = (double *)xmalloc(n * sizeof(double));
    double *V = (double *)xmalloc(p * n * sizeof(double) + 1);
    double *H = (double *)xmalloc(m * m * sizeof(double));
    double *g = (double *)xmalloc(m * sizeof(double));
    double *delta = (double *)xmalloc(m * sizeof(double));
    double *w_new = (double *)xmalloc(m * sizeof(double));
    double f;
    int it, result = -1;
    for (j = 0; j < m; ++j) w[j] = 0.0;
    probe_scores(Z, ld, n, p, w, s);
    f = probe_objective(w, p, s, t, n, C);
    for (it = 1; it <= 100; ++it) {
        double sum_v = 0, sum_r = 0, decrement, step = 1.0, f_new = f;
        int accepted = 0;
        for (i = 0; i < n; ++i) {
            double pi = probe_sigmoid(s[i]);
            r[i] = C * (pi - (t[i] ? 1.0 : 0.0));
            v[i] = C * pi * (1.0 - pi);
            sum_r += r[i];
            sum_v += v[i];
        }
        /* gradient, and V = diag(v) Z for the Hessian's Gram products */
        for (j = 0; j < p; ++j) {
            const double *z = Z + j * ld;
            double *vz = V + j * n;
            g[j] = w[j] + probe_dot(r, z, n);
            for (i = 0; i < n; ++i) vz[i] = v[i] * z[i];
        }
        g[p] = sum_r;
        /* H (lower triangle): column j against column l, and the intercept row */
        for (j = 0; j < p; ++j) {
            for (l = 0; l <= j; ++l) H[j * m + l] = probe_dot(V + j * n, Z + l * ld, n);
            H[j * m + j] += 1.0;
        }
        for (l = 0; l < p; ++l) {
            const double *vz = V + l * n;
            double u = 0;
            for (i = 0; i < n; ++i) u += vz[i];
            H[p * m + l] = u;
        }
        H[p * m + p] = sum_v;
        for (j = 0; j < m; ++j) delta[j] = -g[j];
        if (!probe_cholesky_solve(H, m, delta)) break;
        decrement = 0;
        for (j = 0; j < m; ++j) decrement -= g[j] * delta[j];
        if (decrement / 2 <= 1e-12 * (1.0 + fabs(f))) { result = it - 1; break; }
        /* backtracking line search (Armijo, c = 1e-4) on f */
        while (step > 1e-10) {
            for (j = 0; j < m; ++j) w_new[j] = w[j] + step * delta[j];
            probe_scores(Z, ld, n, p, w_new, s_new);
            f_new = probe_objective(w_new, p, s_new, t, n, C);
            if (f_new <= f - 1e-4 * step * decrement) { accepted = 1; break; }
            step *= 0.5;
        }
        if (!accepted) { result = it; break; } /* no descent left to find at double precision */
        memcpy(w, w_new, m * sizeof(double));
        memcpy(s, s_new, n * sizeof(double));
        f = f_new;
    }
    free(s); free(s_new); free(v); free(r); free(V); free(H); free(g); free(delta); free(w_new);
    return result;
}

/* ----------------------------------------------------------------- tasks */

/* A labelled row, as kept in memory: its data row, class, and the model's
   k (latent, activation) pairs; its embedding sits in the x array. */
typedef struct probe_data {
    size_t n, d, L, k;
    uint64_t *row;     /* [n] data row */
    uint32_t *cls;     /* [n] class id */
    float *x;          /* [n, d] */
    float *act;        /* [n, k] activations, max(0, a) */
    int32_t *idx;      /* [n, k] */
    char **names;      /* [classes] */
    uint64_t *count;   /* [classes] */
    size_t classes;
    uint64_t S;        /* mix(seed) */
} probe_data;

/* the k largest |diff| (ties to the lower index), best first, into top[] */
static size_t probe_top_abs(const double *diff, size_t n, size_t k, int32_t *top)
{
    double best[PROBE_KMAX];
    size_t have = 0, i, q;
    if (k > n) k = n;
    for (i = 0; i < n; ++i) {
        double a = fabs(diff[i]);
        if (have == k && !(a > best[k - 1])) continue;
        q = have < k ? have++ : k - 1;
        while (q > 0 && a > best[q - 1]) { best[q] = best[q - 1]; top[q] = top[q - 1]; --q; }
        best[q] = a;
        top[q] = (int32_t)i;
    }
    return have;
}

/* Standardise column z (n values, the first n_train of them training rows)
   with the training rows' mean and population standard deviation; a column
   whose deviation is under 10 eps of its scale is only centred (as
   scikit-learn's StandardScaler). */
static void probe_standardise(double *z, size_t n, size_t n_train)
{
    double mean = 0, var = 0, sd;
    size_t i;
    for (i = 0; i < n_train; ++i) mean += z[i];
    mean /= (double)n_train;
    for (i = 0; i < n_train; ++i) var += (z[i] - mean) * (z[i] - mean);
    sd = sqrt(var / (double)n_train);
    if (sd < 10 * DBL_EPSILON) sd = 1.0;
    for (i = 0; i < n; ++i) z[i] = (z[i] - mean) / sd;
}

/* Fit on the first n_train rows of Z's first p columns, accuracy on the rest. */
static double probe_fit_accuracy(const double *Z, size_t n, size_t n_train, size_t p, const unsigned char *t, int *nonconverged)
{
    double *w = (double *)xmalloc((p + 1) * sizeof(double));
    double *s = (double *)xmalloc((n - n_train) * sizeof(double) + 1);
    size_t i, correct = 0;
    if (logreg_fit(Z, n, n_train, p, t, 1.0, w) < 0) *nonconverged = 1;
    probe_scores(Z + n_train, n, n - n_train, p, w, s);
    for (i = n_train; i < n; ++i) correct += (s[i - n_train] > 0) == (t[i] != 0);
    free(w);
    free(s);
    return (double)correct / (double)(n - n_train);
}

typedef struct probe_key {
    uint64_t key, pos; /* hash, then position in probe_data */
    uint64_t row;
} probe_key;

static int probe_key_cmp(const void *a, const void *b)
{
    const probe_key *x = (const probe_key *)a, *y = (const probe_key *)b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static void probe_task_run(const probe_data *pd, uint32_t c, probe_task *tk)
{
    size_t n_all = pd->n, npos = 0, nrest = 0, nneg, n, n_train = 0, n_test = 0, i, j, q, ki;
    uint64_t T = probe_mix(pd->S ^ probe_fnv1a(pd->names[c]));
    probe_key *rest;
    size_t *members, *order;
    unsigned char *t;
    double *sum_pos, *sum_neg, *diff, *Z;
    int32_t *slot;
    double np_train = 0, nn_train = 0;
    int nonconv = 0;
    for (i = 0; i < n_all; ++i) { if (pd->cls[i] == c) npos++; else nrest++; }
    rest = (probe_key *)xmalloc(nrest * sizeof(probe_key) + 1);
    members = (size_t *)xmalloc(n_all * sizeof(size_t));
    for (i = 0, q = 0; i < n_all; ++i)
        if (pd->cls[i] != c) { rest[q].key = probe_mix(T ^ pd->row[i]); rest[q].pos = i; rest[q].row = pd->row[i]; q++; }
    qsort(rest, nrest, sizeof(probe_key), probe_key_cmp);
    nneg = nrest < npos ? nrest : npos;
    /* the task's rows in data order: positives, and the chosen negatives */
    {
        unsigned char *chosen = (unsigned char *)xcalloc(n_all, 1);
        for (i = 0; i < nneg; ++i) chosen[rest[i].pos] = 1;
        for (i = 0, n = 0; i < n_all; ++i)
            if (pd->cls[i] == c || chosen[i]) members[n++] = i;
        free(chosen);
    }
    free(rest);
    /* training rows first, then held-out rows, each in data order */
    order = (size_t *)xmalloc(n * sizeof(size_t) + 1);
    for (i = 0; i < n; ++i) if (probe_mix(pd->S ^ pd->row[members[i]]) % PROBE_TEST_MOD != 0) order[n_train++] = members[i];
    for (i = 0; i < n; ++i) if (probe_mix(pd->S ^ pd->row[members[i]]) % PROBE_TEST_MOD == 0) order[n_train + n_test++] = members[i];
    free(members);
    t = (unsigned char *)xmalloc(n + 1);
    for (i = 0; i < n; ++i) {
        t[i] = pd->cls[order[i]] == c;
        if (i < n_train) { if (t[i]) np_train++; else nn_train++; }
    }
    tk->positives = npos;
    tk->negatives = nneg;
    tk->train_rows = n_train;
    tk->test_rows = n_test;
    for (ki = 0; ki < PROBE_NK; ++ki) tk->sae_acc[ki] = tk->emb_topk_acc[ki] = NAN;
    tk->emb_all_acc = NAN;
    if (np_train == 0 || nn_train == 0 || n_test == 0) {
        tk->skipped = 1;
        free(order); free(t);
        return;
    }

    /* latents: mean activation on the positives minus on the negatives, from
       the sparse pairs; then the embedding's dims the same way */
    sum_pos = (double *)xcalloc(pd->L, sizeof(double));
    sum_neg = (double *)xcalloc(pd->L, sizeof(double));
    for (i = 0; i < n_train; ++i) {
        double *sum = t[i] ? sum_pos : sum_neg;
        const float *a = pd->act + order[i] * pd->k;
        const int32_t *ix = pd->idx + order[i] * pd->k;
        for (q = 0; q < pd->k; ++q) if (a[q] > 0) sum[ix[q]] += a[q];
    }
    diff = (double *)xmalloc((pd->L > pd->d ? pd->L : pd->d) * sizeof(double));
    for (j = 0; j < pd->L; ++j) diff[j] = sum_pos[j] / np_train - sum_neg[j] / nn_train;
    tk->n_latents = probe_top_abs(diff, pd->L, PROBE_KMAX, tk->latents);
    free(sum_pos); free(sum_neg);
    sum_pos = (double *)xcalloc(pd->d, sizeof(double));
    sum_neg = (double *)xcalloc(pd->d, sizeof(double));
    for (i = 0; i < n_train; ++i) {
        double *sum = t[i] ? sum_pos : sum_neg;
        const float *x = pd->x + order[i] * pd->d;
        for (j = 0; j < pd->d; ++j) sum[j] += x[j];
    }
    for (j = 0; j < pd->d; ++j) diff[j] = sum_pos[j] / np_train - sum_neg[j] / nn_train;
    tk->n_dims = probe_top_abs(diff, pd->d, PROBE_KMAX, tk->dims);
    free(sum_pos); free(sum_neg); free(diff);

    /* the chosen latents as dense columns (column-major, [n_latents, n]) */
    Z = (double *)xmalloc((pd->d > PROBE_KMAX ? pd->d : PROBE_KMAX) * n * sizeof(double));
    slot = (int32_t *)xmalloc(pd->L * sizeof(int32_t));
    for (j = 0; j < pd->L; ++j) slot[j] = -1;
    for (j = 0; j < tk->n_latents; ++j) slot[tk->latents[j]] = (int32_t)j;
    memset(Z, 0, tk->n_latents * n * sizeof(double));
    for (i = 0; i < n; ++i) {
        const float *a = pd->act + order[i] * pd->k;
        const int32_t *ix = pd->idx + order[i] * pd->k;
        for (q = 0; q < pd->k; ++q)
            if (a[q] > 0 && slot[ix[q]] >= 0) Z[(size_t)slot[ix[q]] * n + i] = a[q];
    }
    free(slot);
    for (j = 0; j < tk->n_latents; ++j) probe_standardise(Z + j * n, n, n_train);
    for (ki = 0; ki < PROBE_NK; ++ki)
        if (probe_k_values[ki] <= tk->n_latents) tk->sae_acc[ki] = probe_fit_accuracy(Z, n, n_train, probe_k_values[ki], t, &nonconv);
    /* the chosen dims */
    for (j = 0; j < tk->n_dims; ++j) {
        for (i = 0; i < n; ++i) Z[j * n + i] = pd->x[order[i] * pd->d + (size_t)tk->dims[j]];
        probe_standardise(Z + j * n, n, n_train);
    }
    for (ki = 0; ki < PROBE_NK; ++ki)
        if (probe_k_values[ki] <= tk->n_dims) tk->emb_topk_acc[ki] = probe_fit_accuracy(Z, n, n_train, probe_k_values[ki], t, &nonconv);
    /* every dim */
    for (j = 0; j < pd->d; ++j) {
        for (i = 0; i < n; ++i) Z[j * n + i] = pd->x[order[i] * pd->d + j];
        probe_standardise(Z + j * n, n, n_train);
    }
    tk->emb_all_acc = probe_fit_accuracy(Z, n, n_train, pd->d, t, &nonconv);
    tk->nonconverged = nonconv;
    free(Z); free(order); free(t);
}

/* ------------------------------------------------------------- the run */

static char *probe_trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t') ++s;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
    return s;
}

static const char **g_probe_sort_names; /* qsort has no context argument */
static int probe_name_cmp(const void *a, const void *b)
{
    return strcmp(g_probe_sort_names[*(const size_t *)a], g_probe_sort_names[*(const size_t *)b]);
}

static void probe_run(lsae_model *m, lsae_dataset *ds, const probe_options *o, probe_result *out)
{
    const size_t chunk = 2048;
    texts lab;
    probe_data pd;
    codes cd;
    uint64_t total = lsae_dataset_rows(ds), first;
    size_t cap = 0, i, c, ki;
    float *x;
    const char **name_of; /* [pd.n] the label of each kept row, until classes are numbered */
    size_t *perm;
    double t0 = now_s();
    lsae_result r;
    memset(out, 0, sizeof *out);
    memset(&pd, 0, sizeof pd);
    {   /* texts_load would call it a texts file */
        FILE *f = fopen(o->labels_path, "rb");
        if (!f) fail("%s: cannot read the labels file: %s", o->labels_path, strerror(errno));
        fclose(f);
    }
    texts_load(&lab, o->labels_path, 0);
    if (o->max_rows && o->max_rows < total) total = o->max_rows;
    out->labels_path = o->labels_path;
    out->label_lines = lab.n;
    out->rows = total;
    out->min_class_rows = o->min_class_rows;
    out->seed = o->seed;
    out->label_lines_unused = lab.n > total ? lab.n - total : 0;
    pd.d = lsae_model_d_in(m);
    pd.L = lsae_model_num_latents(m);
    pd.k = lsae_model_encode_k(m);
    codes_init(&cd, m, chunk);
    pd.S = probe_mix(o->seed);
    if (lsae_dataset_d_in(ds) != pd.d)
        fail("the embeddings have rows of %zu values, but the model expects d_in %zu", lsae_dataset_d_in(ds), pd.d);
    x = (float *)xmalloc(chunk * pd.d * sizeof(float));
    name_of = NULL;
    /* read the labelled rows, encode them, keep their embeddings and pairs */
    for (first = 0; first < total; first += chunk) {
        size_t nread = (size_t)(total - first < chunk ? total - first : chunk), kept0 = pd.n;
        check_interrupted();
        if ((r = lsae_dataset_read(ds, first, nread, x)) != LSAE_OK) lib_fail(r, NULL);
        for (i = 0; i < nread; ++i) {
            uint64_t row = first + i;
            const char *label = row < lab.n ? probe_trim(lab.line[row]) : "";
            if (!*label) { if (row < lab.n) out->rows_empty_label++; else out->rows_beyond_labels++; continue; }
            if (!row_finite(x + i * pd.d, pd.d)) { out->rows_nonfinite++; continue; }
            if (pd.n == cap) {
                cap = cap ? 2 * cap : 4096;
                pd.row = (uint64_t *)xrealloc(pd.row, cap * sizeof(uint64_t));
                pd.x = (float *)xrealloc(pd.x, cap * pd.d * sizeof(float));
                pd.act = (float *)xrealloc(pd.act, cap * pd.k * sizeof(float));
                pd.idx = (int32_t *)xrealloc(pd.idx, cap * pd.k * sizeof(int32_t));
                name_of = (const char **)xrealloc((void *)name_of, cap * sizeof(char *));
            }
            memcpy(pd.x + pd.n * pd.d, x + i * pd.d, pd.d * sizeof(float));
            pd.row[pd.n] = row;
            name_of[pd.n] = label;
            pd.n++;
        }
        if (pd.n > kept0) {
            size_t q, j;
            if ((r = codes_encode(&cd, m, pd.x + kept0 * pd.d, pd.n - kept0)) != LSAE_OK) lib_fail(r, NULL);
            if (cd.cap > pd.k) {
                /* an uncapped BatchTopK row keeps more than the rows so far:
                   widen every row's slots (from the last row back, in place) */
                size_t i2;
                pd.act = (float *)xrealloc(pd.act, cap * cd.cap * sizeof(float));
                pd.idx = (int32_t *)xrealloc(pd.idx, cap * cd.cap * sizeof(int32_t));
                for (i2 = kept0; i2-- > 0;) {
                    memmove(pd.act + i2 * cd.cap, pd.act + i2 * pd.k, pd.k * sizeof(float));
                    memmove(pd.idx + i2 * cd.cap, pd.idx + i2 * pd.k, pd.k * sizeof(int32_t));
                    for (q = pd.k; q < cd.cap; ++q) { pd.act[i2 * cd.cap + q] = 0; pd.idx[i2 * cd.cap + q] = 0; }
                }
                pd.k = cd.cap;
            }
            for (j = 0; j < pd.n - kept0; ++j)
                for (q = 0; q < pd.k; ++q) {
                    /* slots past a row's count, and zero activations, are padding */
                    float a = q < cd.count[j] ? cd.acts[j * cd.cap + q] : 0.0f;
                    pd.act[(kept0 + j) * pd.k + q] = a > 0 ? a : 0;
                    pd.idx[(kept0 + j) * pd.k + q] = q < cd.count[j] ? cd.idx[j * cd.cap + q] : 0;
                }
        }
        progress_scan("probing: encoding the labelled rows", first + nread, total, t0);
    }
    live_clear();
    free(x);
    out->rows_labelled = pd.n;
    /* number the classes in byte order of their labels */
    perm = (size_t *)xmalloc(pd.n * sizeof(size_t) + 1);
    for (i = 0; i < pd.n; ++i) perm[i] = i;
    g_probe_sort_names = name_of;
    qsort(perm, pd.n, sizeof(size_t), probe_name_cmp);
    pd.cls = (uint32_t *)xmalloc(pd.n * sizeof(uint32_t) + 1);
    pd.names = (char **)xmalloc(pd.n * sizeof(char *) + sizeof(char *));
    pd.count = (uint64_t *)xcalloc(pd.n + 1, sizeof(uint64_t));
    for (i = 0; i < pd.n; ++i) {
        if (i == 0 || strcmp(name_of[perm[i]], name_of[perm[i - 1]])) pd.names[pd.classes++] = (char *)name_of[perm[i]];
        pd.cls[perm[i]] = (uint32_t)(pd.classes - 1);
        pd.count[pd.classes - 1]++;
    }
    free(perm);
    out->classes = pd.classes;
    /* the tasks: classes with enough rows, and some other rows to contrast */
    out->tasks = (probe_task *)xcalloc(pd.classes + 1, sizeof(probe_task));
    for (c = 0; c < pd.classes; ++c)
        if (pd.count[c] >= o->min_class_rows && pd.count[c] < pd.n) {
            probe_task *tk = &out->tasks[out->n_tasks++];
            size_t len = strlen(pd.names[c]);
            tk->label = (char *)xmalloc(len + 1);
            memcpy(tk->label, pd.names[c], len + 1);
            tk->cls = (uint32_t)c;
        }
    {   /* one task per thread at a time: each is computed in a fixed order, so
           the answers do not depend on the number of threads */
        ptrdiff_t ti;
        LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(lsae__num_threads(o->threads)))
        for (ti = 0; ti < (ptrdiff_t)out->n_tasks; ++ti) probe_task_run(&pd, out->tasks[ti].cls, &out->tasks[ti]);
    }
    /* means over the tasks that ran */
    for (ki = 0; ki < PROBE_NK; ++ki) out->sae_acc[ki] = out->emb_topk_acc[ki] = 0;
    out->emb_all_acc = 0;
    for (i = 0; i < out->n_tasks; ++i) {
        const probe_task *tk = &out->tasks[i];
        if (tk->skipped) { out->tasks_skipped++; continue; }
        out->nonconverged += tk->nonconverged;
        for (ki = 0; ki < PROBE_NK; ++ki) { out->sae_acc[ki] += tk->sae_acc[ki]; out->emb_topk_acc[ki] += tk->emb_topk_acc[ki]; }
        out->emb_all_acc += tk->emb_all_acc;
    }
    {
        double nt = (double)(out->n_tasks - out->tasks_skipped);
        for (ki = 0; ki < PROBE_NK; ++ki) { out->sae_acc[ki] /= nt; out->emb_topk_acc[ki] /= nt; } /* NaN when no task ran */
        out->emb_all_acc /= nt;
    }
    if (out->nonconverged) warn("probing: %zu logistic regressions did not converge in 100 Newton steps", out->nonconverged);
    free((void *)name_of);
    free(pd.row); free(pd.cls); free(pd.x); free(pd.act); free(pd.idx); free(pd.names); free(pd.count);
    codes_free(&cd);
    texts_free(&lab);
}

static void probe_free(probe_result *r)
{
    size_t i;
    for (i = 0; i < r->n_tasks; ++i) free(r->tasks[i].label);
    free(r->tasks);
    memset(r, 0, sizeof *r);
}

static void probe_json_accs(FILE *f, const char *key, const double *acc)
{
    size_t ki;
    fprintf(f, ", \"%s\": [", key);
    for (ki = 0; ki < PROBE_NK; ++ki) { if (ki) fputs(", ", f); json_num(f, acc[ki]); }
    fputc(']', f);
}

static void probe_write_json(FILE *f, const probe_result *r)
{
    size_t i, j, ki;
    fputs("{\"labels\": ", f);
    json_str(f, r->labels_path);
    fprintf(f, ", \"label_lines\": %llu, \"rows\": %llu, \"rows_labelled\": %llu, \"rows_empty_label\": %llu, "
               "\"rows_beyond_labels\": %llu, \"rows_nonfinite\": %llu, \"label_lines_unused\": %llu",
            (unsigned long long)r->label_lines, (unsigned long long)r->rows, (unsigned long long)r->rows_labelled,
            (unsigned long long)r->rows_empty_label, (unsigned long long)r->rows_beyond_labels,
            (unsigned long long)r->rows_nonfinite, (unsigned long long)r->label_lines_unused);
    fprintf(f, ", \"classes\": %zu, \"min_class_rows\": %llu, \"seed\": %llu, \"test_fraction\": 0.2, \"C\": 1"
               ", \"scheme\": \"one-vs-rest per class, balanced\", \"tasks_run\": %zu, \"tasks_skipped\": %zu",
            r->classes, (unsigned long long)r->min_class_rows, (unsigned long long)r->seed,
            r->n_tasks - r->tasks_skipped, r->tasks_skipped);
    fputs(", \"k\": [", f);
    for (ki = 0; ki < PROBE_NK; ++ki) fprintf(f, "%s%zu", ki ? ", " : "", probe_k_values[ki]);
    fputc(']', f);
    probe_json_accs(f, "sae_accuracy", r->sae_acc);
    probe_json_accs(f, "embedding_topk_accuracy", r->emb_topk_acc);
    fputs(", \"embedding_all_accuracy\": ", f);
    json_num(f, r->emb_all_acc);
    fputs(", \"tasks\": [", f);
    for (i = 0; i < r->n_tasks; ++i) {
        const probe_task *tk = &r->tasks[i];
        fputs(i ? ", {\"label\": " : "{\"label\": ", f);
        json_str(f, tk->label);
        fprintf(f, ", \"positives\": %llu, \"negatives\": %llu, \"train_rows\": %llu, \"test_rows\": %llu, \"skipped\": %s",
                (unsigned long long)tk->positives, (unsigned long long)tk->negatives, (unsigned long long)tk->train_rows,
                (unsigned long long)tk->test_rows, tk->skipped ? "true" : "false");
        fputs(", \"latents\": [", f);
        for (j = 0; j < tk->n_latents; ++j) fprintf(f, "%s%ld", j ? ", " : "", (long)tk->latents[j]);
        fputs("], \"dims\": [", f);
        for (j = 0; j < tk->n_dims; ++j) fprintf(f, "%s%ld", j ? ", " : "", (long)tk->dims[j]);
        fputc(']', f);
        probe_json_accs(f, "sae_accuracy", tk->sae_acc);
        probe_json_accs(f, "embedding_topk_accuracy", tk->emb_topk_acc);
        fputs(", \"embedding_all_accuracy\": ", f);
        json_num(f, tk->emb_all_acc);
        fputc('}', f);
    }
    fputs("]}", f);
}

static void probe_write_text(FILE *f, const probe_result *r, size_t d)
{
    size_t ki, i;
    fprintf(f, "probing (%s): k-sparse probes, one-vs-rest per class, held-out accuracy\n", r->labels_path);
    fprintf(f, "  %llu rows labelled", (unsigned long long)r->rows_labelled);
    if (r->rows_empty_label) fprintf(f, "; %llu with an empty label left out", (unsigned long long)r->rows_empty_label);
    if (r->rows_beyond_labels) fprintf(f, "; %llu past the labels file's %llu lines left out", (unsigned long long)r->rows_beyond_labels,
                                       (unsigned long long)r->label_lines);
    if (r->rows_nonfinite) fprintf(f, "; %llu holding NaN/Inf left out", (unsigned long long)r->rows_nonfinite);
    if (r->label_lines_unused) fprintf(f, "; %llu label lines past the rows ignored", (unsigned long long)r->label_lines_unused);
    fprintf(f, "\n  %zu classes; %zu with >= %llu rows probed (balanced: as many negatives from the other labels), "
               "20%% of rows held out (seed %llu)\n",
            r->classes, r->n_tasks - r->tasks_skipped, (unsigned long long)r->min_class_rows, (unsigned long long)r->seed);
    if (r->n_tasks == r->tasks_skipped) {
        fprintf(f, "  no class to probe: each needs >= %llu rows (--probe-min-rows) and other rows to contrast\n",
                (unsigned long long)r->min_class_rows);
        return;
    }
    fprintf(f, "  %-4s %-12s %s\n", "k", "SAE latents", "embedding dims (the k chosen the same way)");
    for (ki = 0; ki < PROBE_NK; ++ki) {
        char a[32], b[32];
        if (isfinite(r->sae_acc[ki])) snprintf(a, sizeof a, "%.4f", r->sae_acc[ki]); else snprintf(a, sizeof a, "n/a");
        if (isfinite(r->emb_topk_acc[ki])) snprintf(b, sizeof b, "%.4f", r->emb_topk_acc[ki]); else snprintf(b, sizeof b, "n/a");
        fprintf(f, "  %-4zu %-12s %s\n", probe_k_values[ki], a, b);
    }
    fprintf(f, "  all  %-12s %.4f (all %zu dims)\n", "", r->emb_all_acc, d);
    for (i = 0; i < r->n_tasks; ++i)
        if (r->tasks[i].skipped)
            fprintf(f, "  class %s skipped: its split left no training positive, negative or held-out row\n", r->tasks[i].label);
}
