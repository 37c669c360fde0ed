/* lsae - the latentsae command-line tool.

   lsae train    --data PATH [options]          train a TopK SAE on embeddings
   lsae encode   MODEL EMBEDDINGS -o OUT        top-k latents of every row
   lsae eval     MODEL EMBEDDINGS               reconstruction and latent usage
   lsae info     MODEL                          what a model holds
   lsae features MODEL EMBEDDINGS [--texts F]   top-activating rows per latent
   lsae compare  A B [--data E --texts F]       latents of B with and without a partner in A
   lsae report   RUN_DIR                        one self-contained HTML page
   lsae sweep    --data PATH --k 32,64 [...]    a grid of SAEs from one pass over the data

   `lsae COMMAND --help` lists every flag with its default. Flags are named as
   latent-sae's train_local.py names them (--batch-size, --grad-acc-steps,
   --k, --expansion-factor, ...), so a command line carries over.

   A training run is a directory (default checkpoints/sae_<k>_<expansion>.<run id>/,
   latent-sae's naming):
      cfg.json, sae.safetensors   the model, loadable by latent-sae and sparsify
      checkpoint/                 model + optimizer state + data position (resume)
      run.json                    the options of the run, for resume and report
      metrics.jsonl               one JSON object per optimizer step
      report.html                 written by `lsae report`

   Conventions: every failure is one line on stderr, "lsae CMD: what went
   wrong", and a non-zero exit (2 for a bad command line, 1 otherwise, 130
   after Ctrl-C). Every file is written under a temporary name and renamed,
   so a failure never leaves half a file where a whole one stood.

   Built by `make` as build/lsae from this file alone: `cc tools/lsae/main.c`.
   It uses POSIX for signals, terminals and directories, and the C
   runtime's equivalents on Windows (x86_64-w64-mingw32-gcc tools/lsae/main.c).

   Why one translation unit. Each command is a file of its own (train.c and
   train_loop.c, encode.c, eval.c with its metrics in metrics.c, features.c, info.c, report.c with its
   page in report_page.c), sharing lsae_tool.h and the helpers in util.c,
   options.c, data.c and run_settings.c. They read JSON and write files
   atomically with the library's own code (lsae__json_*, lsae__afile_*),
   which latentsae.h keeps static: visible only in the translation unit
   that defines LATENTSAE_IMPLEMENTATION. So this file defines it, includes
   latentsae.h and the shared header, and then #includes every other .c
   file of the tool (a "unity build"): one compiler run, one object, no
   second copy of the JSON reader or the atomic writer, and the files stay
   rooms of their own. The other .c files are not compiled alone. */

#define _POSIX_C_SOURCE 200809L
/* mingw-w64: C99's printf (%zu, %lld) instead of msvcrt.dll's */
#define __USE_MINGW_ANSI_STDIO 1
#define LATENTSAE_IMPLEMENTATION
#ifdef LSAE_MPI
#include <mpi.h>
#endif
#include "../../latentsae.h"
#ifdef LSAE_MPI
#include "../../latentsae_mpi.h" /* build/mpi/lsae: lsae train under mpirun (dist.c) */
#endif
#ifdef LSAE_NCCL
#include "../../latentsae_nccl.h" /* build/cuda-nccl/lsae: the gradient summed GPU to GPU (dist.c) */
#endif
#include "lsae_tool.h"

/* data-parallel training under mpirun (a no-op without LSAE_MPI) */
#include "dist.c"

/* shared: messages, memory, paths, output files, JSON; flags; data and models; run.json */
#include "util.c"
#include "options.c"
#include "data.c"
#include "run_settings.c"
#include "deccos.c"
#include "metrics.c"

/* the commands */
#include "train.c"
#include "train_loop.c"
#include "encode.c"
#include "probe.c"
#include "eval.c"
#include "info.c"
#include "features.c"
#include "levels.c"
#include "compare.c"
#include "report_page.c"
#include "report.c"
#include "report_metrics.c"
#include "sweep.c"

/* ================================================================= main */

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *about;
} command;

static const command commands[] = {
    { "train", cmd_train, "train a TopK sparse autoencoder on embeddings" },
    { "encode", cmd_encode, "top-k latent indices and activations of every row" },
    { "eval", cmd_eval, "fvu, MSE, L0, dead latents and fire rates of a model on embeddings" },
    { "info", cmd_info, "a model's config, tensors, norms and checksum" },
    { "features", cmd_features, "the rows each latent is most active on, with their texts" },
    { "levels", cmd_levels, "a Matryoshka SAE as a taxonomy: coarse latents and their closest finer ones" },
    { "compare", cmd_compare, "match the latents of two models by decoder cosine: what B learned that A did not" },
    { "report", cmd_report, "one self-contained HTML page: training curves and a feature browser" },
    { "sweep", cmd_sweep, "train a grid of SAEs in one pass over the data, evaluate them, show the Pareto fronts" },
};

static void print_usage(FILE *f)
{
    size_t i;
    fprintf(f, "usage: lsae COMMAND [options]   (lsae COMMAND --help for its flags)\n\n"
               "TopK sparse autoencoders for embedding vectors (latentsae %s).\n\ncommands:\n", lsae_version_string());
    for (i = 0; i < sizeof commands / sizeof commands[0]; ++i) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].about);
    fprintf(f, "\nexample:\n  lsae train --data embeddings/ --batch-size 512 --grad-acc-steps 4 --k 64 --expansion-factor 128\n"
               "  lsae features checkpoints/sae_64_128.<id> embeddings/ --texts texts.txt --sample 10\n");
}

/* OpenMP threads that spin at a barrier lose whole time slices when another
   process shares the cores: on 2 cores with one busy neighbour, training the
   demo ran 4.3x slower with libgomp's default policy than with passive
   waiting (9.9k vs 32k samples/s), while on an idle machine passive costs
   about 15%. Shared machines are the common case, so passive is the default
   here; OMP_WAIT_POLICY=active in the environment takes it back. libgomp
   reads the policy when it loads, before main, hence the one re-exec. */
static void prefer_passive_openmp(char **argv)
{
#if defined(_OPENMP) && defined(__linux__)
    if (getenv("OMP_WAIT_POLICY") || getenv("LSAE_REEXECED")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0 || setenv("LSAE_REEXECED", "1", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc?): go on with the default policy */
    unsetenv("OMP_WAIT_POLICY");
#else
    (void)argv;
#endif
}

static int run_main(int argc, char **argv);

int main(int argc, char **argv)
{
    int code;
    prefer_passive_openmp(argv);
    dist_start(&argc, &argv);
    code = run_main(argc, argv);
    dist_end();
    return code;
}

static int run_main(int argc, char **argv)
{
    size_t i;
    g_live = isatty(fileno(stderr));
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || (!strcmp(argv[1], "help") && argc == 2)) {
        print_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("lsae (latentsae) %s\n", lsae_version_string());
        return 0;
    }
    if (!strcmp(argv[1], "help")) {
        char *h[2];
        h[0] = argv[2];
        h[1] = (char *)"--help";
        for (i = 0; i < sizeof commands / sizeof commands[0]; ++i)
            if (!strcmp(commands[i].name, argv[2])) {
                snprintf(g_cmd, sizeof g_cmd, "lsae %s", commands[i].name);
                return commands[i].run(1, h + 1);
            }
    }
    for (i = 0; i < sizeof commands / sizeof commands[0]; ++i)
        if (!strcmp(commands[i].name, argv[1])) {
            snprintf(g_cmd, sizeof g_cmd, "lsae %s", commands[i].name);
            if (g_ranks > 1 && strcmp(commands[i].name, "train") != 0)
                fail("only lsae train runs on several ranks (mpirun -np %d); run %s as one process", g_ranks, commands[i].name);
            return commands[i].run(argc - 2, argv + 2);
        }
    fprintf(stderr, "lsae: unknown command '%s' (commands: train, encode, eval, info, features, compare, report, sweep; see lsae --help)\n", argv[1]);
    return 2;
}
