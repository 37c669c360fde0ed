/* lsae_tool.h - what the commands of lsae share.

   Included once, by main.c, after latentsae.h (see main.c for why the tool
   is one translation unit). The bodies live in util.c (messages, memory,
   paths, files written atomically, JSON in and out), options.c (the command
   line), data.c (opening data and models, the scan over a dataset, texts
   files) and run_settings.c (run.json). */

#ifndef LSAE_TOOL_H
#define LSAE_TOOL_H

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/types.h>
#if defined(_WIN32)
/* Windows: the C runtime's names for the few POSIX calls used here; files,
   directories and paths go through the library's UTF-8 helpers (lsae__fopen,
   lsae__is_dir, lsae__mkdir, ...: see util.c) */
#include <direct.h>
#include <io.h>
#include <process.h>
#define isatty _isatty
#define fileno _fileno
#define getpid _getpid
#define getcwd _getcwd
#define fsync _commit
#else
#include <unistd.h>
#endif

#if defined(__MINGW32__)
/* mingw's C99 printf (main.c asks for it), which has %zu */
#define NORETURN __attribute__((noreturn))
#define PRINTF_LIKE(a, b) __attribute__((format(gnu_printf, a, b)))
#elif defined(__GNUC__) || defined(__clang__)
#define NORETURN __attribute__((noreturn))
#define PRINTF_LIKE(a, b) __attribute__((format(printf, a, b)))
#else
#define NORETURN
#define PRINTF_LIKE(a, b)
#endif

#define PATH_CAP 4096

/* ------------------------------------------------------ messages (util.c) */

static char g_cmd[64] = "lsae";          /* "lsae train": the prefix of every message */
static volatile sig_atomic_t g_stop = 0; /* set by SIGINT/SIGTERM; the work loops poll it */
static int g_live = 0;       /* stderr is a terminal: progress is one line redrawn in place */
static int g_live_drawn = 0; /* such a line is on screen and must be cleared before other text */

/* Every failure is one line on stderr, "lsae CMD: what went wrong", then
   exit 1 (fail, lib_fail), 2 for a bad command line (usage_fail) or 130
   after Ctrl-C (check_interrupted); each first removes the temporary files
   of the outputs in flight. */
static NORETURN void fail(const char *fmt, ...) PRINTF_LIKE(1, 2);
static NORETURN void usage_fail(const char *fmt, ...) PRINTF_LIKE(1, 2);
static NORETURN void lib_fail(lsae_result r, const char *context);
static void warn(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void live_clear(void);
static void catch_signals(void);
static void check_interrupted(void);

/* ------------------------------------------------- small helpers (util.c) */

static void *xmalloc(size_t n);
static void *xcalloc(size_t count, size_t size);
static void *xrealloc(void *p, size_t n);
static double now_s(void);
static void fmt_duration(char *out, size_t cap, double s);
static uint64_t splitmix(uint64_t *s);
static int cmp_size(const void *a, const void *b);
static int ends_with(const char *s, const char *suffix);

static void join_path(char *out, const char *dir, const char *name); /* out: PATH_CAP bytes */
static int is_dir(const char *p);
static int exists(const char *p);
static long long file_size(const char *p);
static void make_dirs(const char *path);            /* mkdir -p */
static void abs_path(const char *p, char *out);     /* out: PATH_CAP bytes */
static char *read_file(const char *path, size_t *len);

/* An output file, written with the library's atomic writer (PATH.tmp, then
   renamed over PATH) and known to fail() and Ctrl-C, which remove it. Write
   to out->af.f with stdio; out_commit checks every write. */
typedef struct out_file {
    lsae__afile af;
    int slot;
} out_file;

static FILE *out_open(out_file *o, const char *path);
static void out_commit(out_file *o);

/* JSON out: a string (escaped, '<' '>' '&' as \u00XX so it may sit in an
   HTML <script>, bad UTF-8 as U+FFFD) and a number (NaN and Inf as null). */
static void json_str(FILE *f, const char *s);
static void json_num(FILE *f, double v);

/* JSON in: the library's tokenizer (lsae__json: a flat token array, token 0
   the root, lsae__json_get giving a member's token or 0) over text kept
   alive beside it (json_load's own, or the caller's for json_parse). The
   getters take an object token and a key and give `def` when the key is
   absent or of another type. */
typedef struct json_doc {
    char *text;         /* owned text (json_load), or NULL */
    lsae__json j;
} json_doc;

static int json_parse(json_doc *doc, const char *s, size_t n, const char **err); /* s must outlive doc; *err: why not, until the next library call */
static int json_load(const char *path, json_doc *doc);  /* 0 when there is no file; fail() when it is broken */
static void json_doc_free(json_doc *doc);
static double json_num_of(const json_doc *doc, size_t obj, const char *key, double def);
static uint64_t json_u64_of(const json_doc *doc, size_t obj, const char *key, uint64_t def);
static char *json_str_of(const json_doc *doc, size_t obj, const char *key); /* malloc'd; NULL when absent or not a string */

/* ----------------------------------------------- command line (options.c) */

enum { O_FLAG, O_U64, O_INT, O_DBL, O_STR };

/* One flag: name, where its value goes, and its line in --help. A row with
   only `group` set starts a section of the help. */
typedef struct opt {
    const char *group;
    const char *name;   /* "--batch-size" */
    const char *alias;  /* "-o", or NULL */
    int kind;
    void *dst;
    const char *meta;   /* "N", "PATH" */
    const char *def;    /* the default as shown; NULL: none */
    const char *help;
    int seen;           /* given on the command line */
} opt;

#define OPT_GROUP(title) { title, NULL, NULL, 0, NULL, NULL, NULL, NULL, 0 }
#define OPT(name, alias, kind, dst, meta, def, help) { NULL, name, alias, kind, dst, meta, def, help, 0 }

/* argv (after the command word) into the table and up to maxpos positional
   arguments; returns how many positionals there were. -h prints the help. */
static int parse_args(int argc, char **argv, opt *o, size_t n, const char *usage, const char *about, char **pos, int maxpos);
static int opt_seen(const opt *o, size_t n, const char *name);

/* ----------------------------------------------- data and models (data.c) */

/* The data options every command that reads embeddings shares. */
typedef struct data_args {
    const char *format;    /* auto|npy|safetensors|raw|pt */
    const char *tensor;
    const char *raw_dtype; /* f32|f16|bf16 */
    uint64_t d_in;
} data_args;

#define DATA_OPTS(da) OPT_GROUP("data (what EMBEDDINGS / --data may be)"), DATA_OPT_ROWS(da)
#define DATA_OPT_ROWS(da) \
    OPT("--format", NULL, O_STR, &(da).format, "FMT", "auto", "auto, npy, safetensors, raw or pt; auto goes by extension, then by the file's first bytes"), \
    OPT("--tensor", NULL, O_STR, &(da).tensor, "NAME", "the only 2-D tensor", "which tensor of a .safetensors file holds the rows"), \
    OPT("--raw-dtype", NULL, O_STR, &(da).raw_dtype, "T", NULL, "read a headerless dump of f32, f16 or bf16 values (needs --d-in)"), \
    OPT("--d-in", NULL, O_U64, &(da).d_in, "N", "from the file", "values per row: required for raw dumps, otherwise checked against the file")

#define PREPASS_HELP "the CPU's exact int8 screen for each row's top k: auto (where this build's instructions and " \
    "the model's shape measured faster), off (float32 only: for a CPU whose int8 multiply-adds are no faster than its " \
    "float32 ones) or on (every call, for measuring); the same results either way"
#define DEVICE_OPTS(device, precision, prepass) \
    OPT("--device", NULL, O_STR, &(device), "D", "cuda when built with LATENTSAE_CUDA and a GPU answers, else cpu", "cpu or cuda"), \
    OPT("--precision", NULL, O_STR, &(precision), "P", "tf32 on CUDA, fp32 on the CPU", "the encoder product's arithmetic on CUDA: fp32, tf32 or bf16"), \
    OPT("--int8-prepass", NULL, O_STR, &(prepass), "P", "auto", PREPASS_HELP)

static lsae_dataset *open_data(const char *path, const data_args *a);
static lsae_model *open_model(const char *spec, char *where); /* where: PATH_CAP bytes, the directory read */
static lsae_device parse_device(const char *s);
static lsae_precision parse_precision(const char *s);
static void place_model(lsae_model *m, const char *device, const char *precision, const char *prepass);
static int parse_prepass(const char *prepass);
static void set_prepass(lsae_model *m, const char *prepass);
static int row_finite(const float *x, size_t d);
static void progress_scan(const char *what, uint64_t done, uint64_t total, double t0);

/* One pass of a model over a dataset, the core of eval, features and report:
   every finite row is encoded; optionally decoded for the reconstruction
   sums; each latent's fire count and its top-T rows are kept. A latent
   "fires" on a row when it is among the row's top-k with activation > 0. */
typedef struct scan {
    size_t d, L, k, T;
    uint64_t rows;        /* rows encoded */
    uint64_t skipped;     /* rows left out for NaN/Inf */
    uint64_t *fires;      /* [L] */
    uint64_t active;      /* sum over rows of active latents (for L0) */
    /* top rows per latent: a min-heap of T entries each */
    float *top_act;       /* [L, T] */
    uint64_t *top_row;    /* [L, T] */
    uint32_t *top_n;      /* [L] */
    /* reconstruction sums, in double, per dimension; x shifted by the first
       row so the variance does not cancel away */
    int want_recon;
    double *shift, *sx, *sxx, *se;
} scan;

static void scan_run(scan *s, lsae_model *m, lsae_dataset *ds, size_t T, int want_recon, uint64_t max_rows, const char *what);
static size_t top_sorted(const scan *s, size_t l, float *act, uint64_t *row); /* latent l's kept rows, best first */
static void scan_free(scan *s);

/* A text file, one text a line, indexed by line (row) number. */
typedef struct texts {
    char *buf;
    char **line;
    size_t n;
} texts;

static void texts_load(texts *t, const char *path, uint64_t want_rows); /* path NULL: no texts */
static void texts_free(texts *t);

/* ------------------------------------------------- run.json (run_settings.c) */

/* The settings of a training run, as run.json holds them: written once by
   lsae train when the run starts, read back by train --resume, report, info
   and eval. Strings are NULL where run.json has null; those the reader
   returns are its own (run_settings_free), those given to the writer the
   caller's. */
typedef struct run_settings {
    const char *run_id, *lsae_version;
    const char *data, *texts;                /* absolute paths */
    const char *format, *tensor, *raw_dtype;  /* the data options given, or NULL */
    uint64_t d_in_arg;                  /* --d-in as given (0: none) */
    uint64_t rows, d_in;                /* the data's shape */
    uint64_t k, num_latents, expansion_factor;
    int multi_topk, normalize_decoder;
    uint64_t batch_size, grad_acc_steps;
    double lr;                          /* the peak learning rate used */
    int lr_auto;                        /* ... picked by the library, not --lr */
    uint64_t lr_warmup_steps;
    const char *lr_schedule;                 /* linear, cosine, constant */
    double auxk_alpha;
    uint64_t dead_feature_threshold, epochs, max_samples;
    int shuffle;
    uint64_t seed, total_steps, save_every;
    const char *init;                        /* --init's model directory, or NULL */
    /* the SAE type (README "SAE types"); a run.json without them is a TopK run */
    const char *sae_type;                    /* topk, batchtopk, matryoshka */
    double batchtopk_threshold_beta;
    int batchtopk_row_cap;
    const char *matryoshka_sizes, *matryoshka_ks, *matryoshka_loss_weights; /* as given: "64,256,1536", or NULL */
    int matryoshka_use_batchtopk;
    const char *matryoshka_form;             /* nested, per-level */
    int k_anneal;
    uint64_t k_anneal_start;
    double k_anneal_pct;
} run_settings;

static void run_settings_write(const char *dir, const run_settings *rs);
static int run_settings_read(const char *dir, run_settings *rs); /* 0 when DIR has no run.json */
static void run_settings_free(run_settings *rs);
/* The data options recorded in run.json fill those not given on the command line. */
static void data_args_from_run(data_args *da, const opt *o, size_t n, const run_settings *rs);

/* ------------------------------------------------------ metrics (metrics.c) */

/* Every number `lsae eval` reports, in one pass of a model over a dataset
   (plus a product of the decoder with itself and a nearest-neighbour search):
   the definitions are in docs/eval.md. Other commands (sweep, compare,
   report) call eval_compute too. */
typedef struct eval_options {
    uint64_t max_rows;   /* rows of the data evaluated (the first ones); 0 = all */
    uint64_t queries;    /* neighbour-preservation queries (a sample of the evaluated rows); 0 = skip */
    uint64_t seed;       /* which rows are the queries */
    int threads;         /* threads of eval's own loops; 0 = OpenMP's default (the model keeps its own setting) */
} eval_options;

#define EVAL_NN 10            /* neighbours per query: recall@10, nDCG@10 */
#define EVAL_DENSITY_BINS 10  /* bin i: log10(fires / rows) in [i - 10, i - 9); bin 0 also holds all below -10, bin 9 is [-1, 0] */
typedef struct eval_metrics {
    uint64_t rows, d, L, k;
    uint64_t rows_skipped;                    /* rows of the data left out for NaN/Inf */
    double fvu, explained_variance, mse, cossim, l2_ratio, relative_reconstruction_bias;
    double fvu_per_dim;                       /* latent-sae 2024's form: mean over varying dims of error / variance */
    uint64_t dims_varying;                    /* the dims fvu_per_dim averages over */
    double l0_mean;
    uint64_t *l0_hist; size_t l0_hist_len;   /* l0_hist[n]: rows with n active (> 0) latents, n = 0..k */
    double frac_alive, dead_fraction, freq_over_1pct, freq_over_10pct;
    uint64_t *fires;                          /* [L] rows each latent was active on */
    uint64_t density_never;                   /* latents never active */
    uint64_t density_hist[EVAL_DENSITY_BINS]; /* the others by log10 of their fire rate */
    float *max_decoder_cos;                   /* [L] largest cosine to another decoder row (NaN when L < 2) */
    double max_decoder_cossim_mean, max_decoder_cossim_p99;
    uint64_t queries;                         /* 0 when not computed */
    uint64_t *query_rows;                     /* [queries] the rows (of the data) used as queries, increasing */
    double recall_at_10, ndcg_at_10;
} eval_metrics;

/* Fills *out (free it with eval_metrics_free). Returns 1 on success; on
   failure returns 0 with a message in err (errcap bytes) and *out empty.
   Out of memory and Ctrl-C end the program, as everywhere in the tool. */
static int eval_compute(lsae_model *m, lsae_dataset *ds, const eval_options *o,
                        eval_metrics *out, char *err, size_t errcap);
static void eval_metrics_free(eval_metrics *e);
/* one JSON object with the keys (and the arrays) */
static void eval_metrics_write_json(FILE *f, const eval_metrics *e);
/* the same members without the braces, for a caller adding its own */
static void eval_metrics_write_json_summary(FILE *f, const eval_metrics *e); /* no arrays: for sweep.json */
static void eval_metrics_write_json_members(FILE *f, const eval_metrics *e);

/* ----------------------------------------- probing (probe.c, eval --labels) */

/* k-sparse probing of a labelling of the rows: the definition is probe.c's
   top comment. Each task is one class against the rest. */
#define PROBE_NK 4     /* k = 1, 2, 5, 20 */
#define PROBE_KMAX 20

typedef struct probe_options {
    const char *labels_path;  /* one label per row */
    uint64_t max_rows;        /* rows of the data read; 0 = all */
    uint64_t min_class_rows;  /* a class is probed when it has this many rows */
    uint64_t seed;            /* which rows are held out, which negatives are drawn */
    int threads;              /* 0 = OpenMP's default */
} probe_options;

typedef struct probe_task {
    char *label;
    uint32_t cls;
    uint64_t positives, negatives, train_rows, test_rows;
    int skipped;                       /* no training positive, negative or held-out row */
    int32_t latents[PROBE_KMAX];       /* chosen latents, best first */
    size_t n_latents;
    int32_t dims[PROBE_KMAX];          /* chosen embedding dims, best first */
    size_t n_dims;
    double sae_acc[PROBE_NK], emb_topk_acc[PROBE_NK], emb_all_acc; /* held-out accuracy; NaN: k too large */
    int nonconverged;
} probe_task;

typedef struct probe_result {
    const char *labels_path;
    uint64_t label_lines, rows, rows_labelled, rows_empty_label, rows_beyond_labels, rows_nonfinite, label_lines_unused;
    uint64_t min_class_rows, seed;
    size_t classes, n_tasks, tasks_skipped, nonconverged;
    probe_task *tasks;
    double sae_acc[PROBE_NK], emb_topk_acc[PROBE_NK], emb_all_acc; /* means over the tasks that ran */
} probe_result;

/* Reads the labels, encodes the labelled rows with m and fits every probe;
   fail()s on bad input like the rest of the tool. */
static void probe_run(lsae_model *m, lsae_dataset *ds, const probe_options *o, probe_result *out);
static void probe_free(probe_result *r);
static void probe_write_json(FILE *f, const probe_result *r); /* the value of eval's "probing" key */
static void probe_write_text(FILE *f, const probe_result *r, size_t d);

/* The report's evaluation section (report_metrics.c): e's table and bar
   charts, or a note saying `why` not when e is NULL. */
static void report_metrics(FILE *f, const eval_metrics *e, const char *data_note, const char *why);

#endif
