/* latentsae.h - v0.1.0 - public domain / MIT - TopK sparse autoencoders in C

   Trains and runs sparse autoencoders (SAEs) on embedding vectors: TopK
   (Gao et al. 2024), BatchTopK and Matryoshka (see "SAE types" below),
   compatible with latent-sae's model files and, for TopK, sparsify's.

   Do this:
      #define LATENTSAE_IMPLEMENTATION
   before you include this file in *one* C or C++ file to create the
   implementation. Every other file includes it without the define.

      // i.e. it should look like this:
      #include ...
      #define LATENTSAE_IMPLEMENTATION
      #include "latentsae.h"

   Build with `cc -O2 -fopenmp file.c -lm` (OpenMP is optional: without it the
   same code runs on one thread and gives the same numbers). Add -mavx2 -mfma
   (or -march=native) to let the kernels use those instructions; -mavxvnni
   too (or -march=native on a CPU that has it) for the int8 pre-pass's
   AVX-VNNI kernel.

   DOCUMENTATION

   The model (docs/math.md, section 1).  d = input width, L = number of latents,
   k = active latents per input, B = rows in a batch.

      W_enc [L, d]   encoder.weight      b_enc [L]   encoder.bias
      W_dec [L, d]   one unit decoder direction a row
      b_dec [d]      decoder bias, also subtracted before encoding

      encode:  pre = ReLU(W_enc (x - b_dec) + b_enc); keep the k largest,
               sorted largest first, ties to the lower latent index.
      decode:  x_hat = sum_i top_acts[i] * W_dec[top_indices[i]] + b_dec

   Training (docs/math.md, section 2, derives every formula and gradient) is
   latent-sae's step with sparsify's fixes:
   loss = fvu + auxk_alpha * auxk + (multi_topk ? fvu(4k) / 8 : 0), with
   fvu = sum((x - x_hat)^2) / sum((x - mean_rows(x))^2); gradient accumulation;
   global-norm clipping to 1; removal of the decoder-parallel gradient; Adam
   (torch.optim.Adam, betas 0.9/0.999, eps 1e-8); unit-norm decoder rows;
   linear or cosine learning-rate decay after warm-up, counted in optimizer steps.
   The first batch's geometric median initialises b_dec. In the code (section
   "trainer" below, and with the same labels in latentsae_cuda.cu) a step is
   a list of stages, each a function with its math:
      lsae_trainer_accumulate, per batch:
        F1 keep_finite_rows  F2 total_variance  F3 init_b_dec  F4 encode_select
        F5 decode_residuals  F6 auxk_decode     F7 loss
        B1 output_grads      B2 sort_entries    B3 decoder_grads
        B4 encoder_grads     B5 b_dec_grad_output  B6 mark_fired
      lsae_trainer_apply, per grad_acc_steps batches:
        U1 b_dec_grad_input  U2 clip  U3 adam  U4 dead_counters

   SAE types (cfg.sae_type; docs/math.md, section 3, has each one's forward,
   loss, gradient, firing and inference, and where latent-sae, SAELens and
   dictionary_learning differ):
      topk        the above (Gao et al. 2024)
      batchtopk   training keeps the B k best activations of the whole batch
                  (Bussmann et al. 2024), a row any number; inference keeps
                  z >= an EMA threshold learned in training. batchtopk_row_cap
                  caps a row at k, as latent-sae does
      matryoshka  every prefix n_1 < ... < n_m = L of the latents must
                  reconstruct too (Bussmann et al. 2025). Nested form (a):
                  one selection, the loss sums the prefixes' fvu (SAELens,
                  dictionary_learning); per-level form (b): each level picks
                  its own top k_i of its first n_i latents, the loss is their
                  weighted mean, no AuxK (latent-sae's current code)
   and, with any type, k_anneal: k falls linearly from k_anneal_start
   (0 = min(4k, L)) to k over the first k_anneal_pct of the optimizer steps.
   Encoding: lsae_model_encode_sparse serves every type (an uncapped
   BatchTopK row keeps any number of latents; LSAE_TRUNCATED says when the
   room given was short); lsae_model_encode keeps a fixed k
   (lsae_model_encode_k) and refuses an uncapped BatchTopK model. Both find
   the top k of a large model through an int8 pre-pass where AMX tiles,
   AVX-512 VNNI or AVX2 make that faster, recomputing in float32 only the latents its proven
   error bound cannot rule out: the same bits as the float32 pass
   (lsae_model_set_encode_prepass, docs/math.md 2.12).

   Example (compiles as is; also examples/quickstart.c):

   #if 0
      #define LATENTSAE_IMPLEMENTATION
      #include "latentsae.h"
      #include <stdio.h>
      #include <stdlib.h>

      int main(void) {
          size_t d = 64, rows = 256, step, i;
          lsae_config cfg = lsae_config_default(d);   // expansion 32, k 32
          lsae_model *sae = NULL;
          lsae_trainer *tr = NULL;
          lsae_step_stats st;
          float *x = (float *)malloc(rows * d * sizeof(float));
          float acts[32]; int32_t idx[32];
          cfg.k = 8; cfg.total_steps = 100; cfg.lr_warmup_steps = 10;
          if (lsae_model_create(&cfg, NULL, &sae) != LSAE_OK ||
              lsae_trainer_create(sae, &cfg, &tr) != LSAE_OK) {
              fprintf(stderr, "latentsae: %s\n", lsae_last_error());
              return 1;
          }
          for (step = 0; step < 100; ++step) {
              for (i = 0; i < rows * d; ++i) x[i] = (float)rand() / RAND_MAX;
              if (lsae_trainer_step(tr, x, rows, &st) != LSAE_OK) {
                  fprintf(stderr, "latentsae: %s\n", lsae_last_error());
                  return 1;
              }
          }
          printf("fvu %.3f\n", st.fvu);
          lsae_model_encode(sae, x, 1, 8, acts, idx);      // one row, top 8
          for (i = 0; i < 8; ++i) printf("%d:%.3f ", (int)idx[i], acts[i]);
          lsae_model_save(sae, "my_sae");                  // cfg.json + sae.safetensors
          lsae_trainer_free(tr);
          lsae_model_free(sae);
          free(x);
          return 0;
      }
   #endif

   Return conventions. Every function that can fail returns an lsae_result:
   LSAE_OK (0) or a negative code. lsae_last_error() then returns a message a
   person can act on (which file, which offset, what was expected); it is kept
   per thread. The library never prints and never calls exit().

   Objects. lsae_model and lsae_trainer are opaque and made by *_create / *_load;
   *_free(NULL) does nothing. A trainer holds a pointer to its model: free the
   trainer first. Weights go in and out as plain float arrays
   (lsae_model_get_weights / lsae_model_set_weights), so nobody needs the
   internal layout.

   Threads. lsae_model_encode and lsae_model_decode only read the model and may
   be called from several threads at once on one model. A trainer is used by one
   thread at a time. Work inside each call is split with OpenMP; cfg.num_threads
   (0 = OpenMP's default) sets the team size.

   Determinism. Every reduction runs in a fixed order that does not depend on
   the number of threads: the same seed, data and build give a bit-identical
   model, whatever the thread count. The order does not depend on the vector
   width either: built by the same compiler with the same options, the
   AVX-512 and the AVX2 kernels give the same bits (make test-isa checks
   it), and so do the NEON kernels on AArch64, built by GCC from the same
   source (make test-arm64 checks it under qemu-user, and that AArch64's
   portable build agrees). Another compiler, -ffp-contract setting or a
   build without FMA may round differently: GCC fuses a * b + c into one
   FMA where it likes in C++ and in its GNU C modes (-std=gnu99, the
   default), not in ISO C (-std=c99); -ffp-contract=off stops it.
   WebAssembly's SIMD128 has no fused multiply-add, so its kernels round
   each product, then each sum: a wasm32 build (with or without -msimd128)
   gives the bits of an x86-64 build with LSAE_NO_SIMD and
   -ffp-contract=off (make test-wasm checks training and encoding); both
   call the C library's cos and pow for the schedule and Adam's bias
   correction, which may differ in the last bit between libraries (they
   agree on the steps tested).

   Speed. The encoder product is a packed, register-blocked GEMM (AVX-512,
   AVX2+FMA, NEON, WebAssembly SIMD128, or portable C, chosen at compile
   time) with bias, ReLU and the top-k selection fused into it, so [rows, L]
   pre-activations are never stored; the backward pass touches only the
   selected latents (O(B k d)); the optimizer is one vectorised pass.
   Build with -O2 -march=native -fopenmp for the fastest code on the
   machine at hand. On a machine shared with other busy processes,
   OMP_WAIT_POLICY=passive keeps idle OpenMP threads from spinning on cores
   the others need.

   Choices where latent-sae and sparsify leave room (docs/math.md has the why):
   - Defaults: expansion_factor 32, k 32, normalize_decoder on,
     lr_warmup_steps 1000, grad_acc_steps 1 and the automatic lr are
     latent-sae's and sparsify's. Ours where they differ (docs/math.md, 2.7,
     gives the reasons and the settings that match latent-sae):
     auxk_alpha 1/32 (Gao et al.; latent-sae and sparsify 0);
     dead_feature_threshold 10,000,000 counted in rows, as sparsify
     (latent-sae counts rows x d_in); the linear schedule, as sparsify
     (latent-sae now cosine).
   - total_steps = 0 (unknown run length) keeps the learning rate constant
     after warm-up.
   - A latent "fired" when it was in some row's top-k (with multi_topk: the
     top k, as latent-sae; sparsify counts all 4k), or kept by another
     type's selection, whatever its value.
   - Rows holding NaN or Inf are dropped from a training batch and counted in
     lsae_step_stats.rows_dropped; encode refuses them with LSAE_INVALID_ARGS
     naming the row, since it has to return something for every row.
   - If a loss or gradient becomes non-finite the trainer returns
     LSAE_NOT_FINITE and refuses further steps; save the last good checkpoint,
     not the model in memory.
   - Numbers in JSON are parsed with strtod: a program that changes LC_NUMERIC
     away from "C" must restore it before loading a cfg.json.

   Options (define before the #include that has LATENTSAE_IMPLEMENTATION):
      LATENTSAE_STATIC      make every function static to that file
      LSAE_DEF              the storage class of every public function
      LSAE_MALLOC(sz,ctx) / LSAE_FREE(p,ctx)
                            the default allocator (define both or neither);
                            a run-time lsae_allocator overrides it per object
      LSAE_ASSERT(x)        internal consistency checks (default: assert)
      LSAE_NO_STDIO         leave out every function that touches files
      LSAE_NO_TORCH         no torch.save .pt reader (zip + pickle): a .pt
                            dataset is refused with LSAE_UNSUPPORTED naming
                            this option
      LSAE_NO_NPY           no .npy reader: likewise for .npy datasets
      LSAE_NO_SAELENS       no SAELens conversion: lsae_model_save_saelens and
                            lsae_model_load_saelens are left out, and
                            lsae_model_load refuses a SAELens directory with
                            LSAE_UNSUPPORTED naming this option
      LSAE_NO_HF            no Hugging Face cache lookup: lsae_hf_resolve and
                            lsae_model_load_hf are left out
                            (Models in cfg.json + safetensors, checkpoints,
                            safetensors and raw datasets and the loader are
                            the core: they are there whenever stdio is.)
      LSAE_NO_MMAP          read embeddings with stdio even where mmap (POSIX) or
                            MapViewOfFile (Windows) exists
      LSAE_NO_THREADS       no prefetch thread (the loader reads synchronously;
                            the batches are the same)
      LSAE_NO_SIMD          use the portable kernel even where AVX2/FMA or
                            NEON or WebAssembly SIMD128 is on
      LSAE_MAX_SAFETENSORS_HEADER  the largest safetensors JSON header read
                            (default 100,000,000 bytes, as the safetensors crate)
      LATENTSAE_CUDA        run on the GPU through latentsae_cuda.cu (see GPU)
      LSAE_CUDA_NO_CUBLAS   (for latentsae_cuda.cu) no cuBLAS: own GEMM kernel

   GPU (CUDA). Compile latentsae_cuda.cu with nvcc and define LATENTSAE_CUDA
   before every #include of this file (LATENTSAE_IMPLEMENTATION in one):

      nvcc -O3 -arch=native -Xcompiler -fopenmp -c latentsae_cuda.cu
      cc -O2 -fopenmp -DLATENTSAE_CUDA main.c latentsae_cuda.o -L/usr/local/cuda/lib64 \
         -lcublas -lcudart -lstdc++ -lm
      (-fopenmp optional, on both lines or neither, or -lgomp on the second:
      batches are staged for upload by several threads)
      (or -DLSAE_CUDA_NO_CUBLAS on both lines and no -lcublas: our own kernel
      does the encoder product, in float32)

   Then the same calls run on the GPU: cfg.device LSAE_DEVICE_DEFAULT is CUDA
   when a device answers (else the CPU), LSAE_DEVICE_CUDA insists on it, and
   lsae_model_load puts a model on the default device. Weights, gradients,
   Adam moments and dead-latent counters live in GPU memory; the calls take
   and return host arrays and copy through pinned buffers themselves.
   cfg.precision picks the encoder product's arithmetic (TF32 by default,
   FP32, or BF16 with float32 master weights); all else is float32, and the
   step is the CPU's, stage by stage. lsae_model_to_device and
   lsae_model_set_precision move a loaded model and pick its precision
   (what a --device/--precision option needs). Differences a caller can see:
   - lsae_trainer_step/accumulate/apply with stats == NULL return once the
     work is queued, so the next batch is copied while the GPU computes. A
     NaN loss is then reported by the next call (nothing more is changed);
     batches that cannot train (LSAE_BAD_BATCH) are still refused at once.
     With stats the call waits for the GPU.
   - lsae_model_encode/decode leave their outputs unspecified on error.
   - The GPU encode has no BatchTopK threshold: lsae_model_encode and
     lsae_model_encode_sparse refuse a threshold model there with
     LSAE_UNSUPPORTED (move it to the CPU); a per-level Matryoshka model
     encodes its last level's k as on the CPU.
   - Calls on one model are serialised by a lock (still safe from threads).
   - k (and 4k with multi_topk, and d/2 for AuxK) at most 4096 on the GPU.
   - CUDA failures return LSAE_CUDA_ERROR with CUDA's message; after one,
     free the model and trainer.

   Files (docs/files.md has every layout; the functions are under "files" below).
   - Models: DIR/cfg.json + DIR/sae.safetensors, read and written as
     latent-sae and sparsify do (F32, F16, BF16 read; F32 written); every
     cfg.json version in the wild; SAELens directories converted both ways;
     published models found offline in the Hugging Face cache.
   - Embeddings: .npy (v1-v3, <f4/<f2 or big-endian >f4/>f2, C order),
     .safetensors (a 2-D F32, F16 or BF16 tensor), raw f32/f16/bf16 dumps
     (little-endian), torch.save'd .pt tensors, and directories of such
     shards; Parquet through tools/parquet_to_npy.py. Files are
     memory-mapped where POSIX allows, and every header is checked against
     the file's size before anything is allocated.
   - Byte order: every file is read and written the same on a big-endian
     host (s390x) as on x86 and ARM64; the formats are little-endian on disk
     (big-endian .npy aside) and numbers are converted where the host's
     order differs (make test-bigendian).
   - Loader: shuffled (pieces of the data per epoch, rows inside a window),
     seeded, seekable by rows consumed, prefetched by a thread where POSIX
     threads exist (link with -pthread on glibc older than 2.34), NaN/Inf
     rows dropped and counted.
   - Checkpoints: a directory with the model files and state.bin:
        "LSAESTAT", u32 version 1, u32 header size 128, u64 d_in, L, k,
        optimizer steps, u32 b_dec initialised, u32 flags, u64 blob length,
        u64 hashes of cfg.json and sae.safetensors, u64 payload length,
        zero padding to 128; then u64 samples-since-fired [L], Adam m and v
        (W_enc, b_enc, W_dec, b_dec as float32), the caller's blob; then a
        u64 hash of all that (little-endian throughout; the hash is defined
        at lsae__hash). Written as DIR.tmp and swapped in by renames, so a
        kill -9 at any moment leaves a checkpoint that loads. Every array
        is stored latent by latent, so a latent shard resumes reading only
        its rows (lsae_checkpoint_load_shard).
   The .npy and torch readers, SAELens conversion and the Hugging Face
   cache can each be compiled out (LSAE_NO_NPY, LSAE_NO_TORCH,
   LSAE_NO_SAELENS, LSAE_NO_HF; see Options).
   A program that defines _POSIX_C_SOURCE (or builds in the compiler's
   default mode) gets mmap, the prefetch thread and directory listing; a
   strict ISO C build reads with stdio, loads synchronously and takes files
   one at a time. On Windows paths are UTF-8 too (converted for the
   wide-character API), files are mapped with MapViewOfFile, directories
   listed, and the loader reads synchronously.

   Glossary: a latent is "dead" when it has not fired (been in any row's
   top-k, or kept) for more than dead_feature_threshold training rows; AuxK
   trains the top min(d/2, n_dead) dead latents to predict the residual,
   reviving them.

   LICENSE: see the end of this file (MIT or public domain, your choice).
*/

#ifndef LATENTSAE_H
#define LATENTSAE_H

#include <stddef.h>
#include <stdint.h>

#define LSAE_VERSION_MAJOR 0
#define LSAE_VERSION_MINOR 1
#define LSAE_VERSION_PATCH 0
#define LSAE_VERSION_STRING "0.1.0"

#ifndef LSAE_DEF
#ifdef LATENTSAE_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define LSAE_DEF static __attribute__((unused)) /* a static library need not use every function */
#else
#define LSAE_DEF static
#endif
#else
#define LSAE_DEF extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- results */

typedef enum lsae_result {
    LSAE_OK = 0,
    LSAE_ERROR = -1,           /* something else; the message says what */
    LSAE_INVALID_ARGS = -2,    /* NULL pointer, bad config value (k > L, d_in = 0, ...) */
    LSAE_OUT_OF_MEMORY = -3,
    LSAE_BAD_FILE = -4,        /* a file is malformed or disagrees with itself */
    LSAE_IO_ERROR = -5,        /* open, read, write or rename failed */
    LSAE_UNSUPPORTED = -6,     /* valid, but a variant we do not implement */
    LSAE_NOT_FOUND = -7,       /* a file, directory or model is not there */
    LSAE_BAD_BATCH = -8,       /* a batch that cannot train: total variance 0, < 2 finite rows */
    LSAE_NOT_FINITE = -9,      /* a loss, gradient or weight became NaN or Inf */
    LSAE_CUDA_ERROR = -10,     /* a CUDA or cuBLAS call failed; the message has CUDA's words */
    LSAE_TRUNCATED = -11       /* outputs were written but cut short: some row needed more room (lsae_model_encode_sparse) */
} lsae_result;

/* A fixed name for a code ("LSAE_OUT_OF_MEMORY: out of memory"). */
LSAE_DEF const char *lsae_result_string(lsae_result r);
/* The detail of the last failure on this thread; "" if none. */
LSAE_DEF const char *lsae_last_error(void);
LSAE_DEF const char *lsae_version_string(void);

/* -------------------------------------------------------------- allocator */

/* Run-time allocator. Pass NULL wherever one is asked for to use
   LSAE_MALLOC/LSAE_FREE. A struct with a NULL function is refused rather than
   quietly replaced by malloc. Every block the library takes for a model,
   trainer, dataset or loader, and inside any call on them, comes from the
   allocator they were made with (the library aligns blocks itself); the two
   calls that take none, lsae_config_from_json and lsae_hf_resolve, use
   LSAE_MALLOC. Outside it are what the C library and the OS keep for open
   files and directories, memory maps, the prefetch thread and OpenMP's
   runtime. When an allocation fails, the call returns LSAE_OUT_OF_MEMORY
   with a message, frees what it took and leaves its objects as they were,
   so calling it again can succeed (make test-oom checks every allocation of
   every public call). */
typedef struct lsae_allocator {
    void *user;
    void *(*malloc_fn)(size_t size, void *user);
    void (*free_fn)(void *ptr, void *user);
} lsae_allocator;

/* ----------------------------------------------------------------- config */

typedef enum lsae_lr_schedule {
    LSAE_LR_LINEAR = 0,     /* transformers' get_linear_schedule_with_warmup */
    LSAE_LR_COSINE = 1,     /* 0.5 (1 + cos(pi (s - W) / (S - W))) after warm-up */
    LSAE_LR_CONSTANT = 2    /* 1 after warm-up */
} lsae_lr_schedule;

/* Which SAE (docs/math.md, section 3). cfg.json holds the enum's name,
   "TOPK", "BATCHTOPK", "MATRYOSHKA", as latent-sae's serialiser writes it
   (read in any case); its "gated", "jumprelu" and "lista" files are refused
   by name, never read as TopK. */
typedef enum lsae_sae_type {
    LSAE_SAE_TOPK = 0,        /* the k largest per row (Gao et al. 2024) */
    LSAE_SAE_BATCHTOPK = 1,   /* the B k largest of the batch; a threshold at inference */
    LSAE_SAE_MATRYOSHKA = 2   /* nested prefixes of the latents, each a reconstruction */
} lsae_sae_type;

/* The two Matryoshka losses (docs/math.md, sections 3.2 and 3.3). */
typedef enum lsae_matryoshka_form {
    LSAE_MATRYOSHKA_NESTED = 0,    /* (a) one selection; the loss sums every prefix's fvu (Bussmann et al., SAELens) */
    LSAE_MATRYOSHKA_PER_LEVEL = 1  /* (b) each level its own top k_i of its first n_i latents (latent-sae) */
} lsae_matryoshka_form;

/* At most this many Matryoshka levels. */
#define LSAE_MAX_LEVELS 16

typedef enum lsae_device {
    LSAE_DEVICE_DEFAULT = 0,  /* CUDA when built with LATENTSAE_CUDA, else CPU */
    LSAE_DEVICE_CPU = 1,
    LSAE_DEVICE_CUDA = 2
} lsae_device;

/* The arithmetic of the encoder product W_enc (x - b_dec) on CUDA, the one
   dense [rows, d] x [d, L] product; everything else is float32 everywhere.
   The CPU always computes in float32. */
typedef enum lsae_precision {
    LSAE_PRECISION_DEFAULT = 0,  /* TF32 on CUDA with cuBLAS; FP32 otherwise */
    LSAE_PRECISION_FP32 = 1,     /* float32 products (use for parity checks) */
    LSAE_PRECISION_TF32 = 2,     /* tensor cores, 10-bit mantissa inputs, float32 sums */
    LSAE_PRECISION_BF16 = 3      /* bfloat16 copies of W_enc and x - b_dec, float32 sums and master weights */
} lsae_precision;

typedef struct lsae_config {
    /* the model */
    size_t d_in;                   /* input width; required */
    size_t num_latents;            /* L; 0 means d_in * expansion_factor */
    size_t expansion_factor;       /* 32 */
    size_t k;                      /* active latents per row; 32 */
    int normalize_decoder;         /* 1: unit-norm decoder rows */
    int multi_topk;                /* 0: add fvu of the top 4k latents / 8 */

    /* the SAE type and its settings (docs/math.md, section 3); saved in cfg.json */
    lsae_sae_type sae_type;        /* LSAE_SAE_TOPK */
    double batchtopk_threshold_beta; /* 0.999: EMA decay of the BatchTopK inference threshold */
    int batchtopk_row_cap;         /* 0; 1: a row keeps at most k after the batch-wide pick and at inference (latent-sae) */
    size_t matryoshka_levels;      /* number of levels, 0 .. LSAE_MAX_LEVELS (0 unless matryoshka) */
    size_t matryoshka_sizes[LSAE_MAX_LEVELS];   /* n_i: increasing, the last = L */
    size_t matryoshka_ks[LSAE_MAX_LEVELS];      /* k_i of each level (per-level form); 0 = k for every level of the nested form */
    double matryoshka_loss_weights[LSAE_MAX_LEVELS]; /* w_i; all 0 = every level 1 */
    int matryoshka_use_batchtopk;  /* 0; 1: the selection(s) are batch-wide (BatchTopK) */
    lsae_matryoshka_form matryoshka_form; /* LSAE_MATRYOSHKA_NESTED */
    int k_anneal;                  /* 0; 1: k falls linearly from k_anneal_start to k */
    size_t k_anneal_start;         /* 0 = min(4k, L) */
    double k_anneal_pct;           /* 0.3: fraction of total_steps the fall takes */

    /* training */
    double auxk_alpha;             /* 1/32; 0 turns AuxK off */
    uint64_t dead_feature_threshold; /* rows without firing before a latent is dead; 10,000,000 */
    double lr;                     /* 0: 2e-4 / sqrt(L / 2^14) */
    uint64_t lr_warmup_steps;      /* optimizer steps of linear warm-up; 1000 */
    lsae_lr_schedule lr_schedule;  /* LSAE_LR_LINEAR */
    uint64_t total_steps;          /* optimizer steps in the run (S); 0 = unknown */
    uint64_t grad_acc_steps;       /* batches per optimizer step; 1 */
    int init_b_dec;                /* 1: b_dec = geometric median of the first batch */
    uint64_t seed;                 /* every random choice derives from it */

    /* running */
    int num_threads;               /* 0: OpenMP's default */
    lsae_device device;            /* LSAE_DEVICE_DEFAULT */

    /* CUDA (ignored by the CPU) */
    lsae_precision precision;      /* LSAE_PRECISION_DEFAULT */
    int cuda_device;               /* GPU ordinal, as cudaSetDevice; 0 */
} lsae_config;

/* Defaults for an input width (see the doc block for the values). */
LSAE_DEF lsae_config lsae_config_default(size_t d_in);
/* LSAE_OK, or LSAE_INVALID_ARGS with the reason (k > L, d_in = 0, ...). */
LSAE_DEF lsae_result lsae_config_validate(const lsae_config *cfg);
/* L as the config resolves it (num_latents, or d_in * expansion_factor). */
LSAE_DEF size_t lsae_config_num_latents(const lsae_config *cfg);
/* The learning rate the config resolves to (cfg->lr, or the automatic one). */
LSAE_DEF double lsae_config_lr(const lsae_config *cfg);
/* The schedule's factor at optimizer step s (0-based): docs/math.md, 2.6. */
LSAE_DEF double lsae_lr_factor(const lsae_config *cfg, uint64_t s);

/* ------------------------------------------------------------------ model */

typedef struct lsae_model lsae_model;

/* A new model initialised from cfg->seed (docs/math.md, section 1): W_enc uniform in
   +-1/sqrt(d), b_enc = 0, W_dec = W_enc with unit rows, b_dec = 0. */
LSAE_DEF lsae_result lsae_model_create(const lsae_config *cfg, const lsae_allocator *alloc,
                                       lsae_model **out);
LSAE_DEF void lsae_model_free(lsae_model *model);
/* The model's config (num_latents resolved). Valid while the model lives. */
LSAE_DEF const lsae_config *lsae_model_config(const lsae_model *model);
LSAE_DEF size_t lsae_model_d_in(const lsae_model *model);
LSAE_DEF size_t lsae_model_num_latents(const lsae_model *model);
LSAE_DEF size_t lsae_model_k(const lsae_model *model);
/* BatchTopK's inference threshold theta (docs/math.md, 3.1): an EMA of the
   smallest kept activation of each training batch; 0 for other types and
   before training. */
LSAE_DEF float lsae_model_batchtopk_threshold(const lsae_model *model);
/* Number of threads used inside calls on this model (0: OpenMP's default). */
LSAE_DEF void lsae_model_set_num_threads(lsae_model *model, int num_threads);

/* Copy weights out: W_enc and W_dec are [L, d] row-major, b_enc [L], b_dec [d].
   Any pointer may be NULL to skip that tensor. */
LSAE_DEF lsae_result lsae_model_get_weights(const lsae_model *model, float *W_enc, float *b_enc,
                                            float *W_dec, float *b_dec);
/* Copy weights in (same shapes); NULL leaves a tensor as it is. Values are
   taken as given: decoder rows are not renormalised. Non-finite values are
   refused. */
LSAE_DEF lsae_result lsae_model_set_weights(lsae_model *model, const float *W_enc,
                                            const float *b_enc, const float *W_dec,
                                            const float *b_dec);

/* Set BatchTopK's inference threshold theta (docs/math.md, 3.1), e.g. to
   try another sparsity on a trained model. Only models that have one
   (batchtopk, or matryoshka with matryoshka_use_batchtopk); theta must be
   finite and >= 0. lsae_model_save writes it. */
LSAE_DEF lsae_result lsae_model_set_batchtopk_threshold(lsae_model *model, float theta);
/* The k a fixed-k encode uses, what lsae_model_encode's k = 0 means: the
   model's k, or matryoshka_ks[last] for a per-level Matryoshka model (its
   encode keeps the best k_m of all L latents, as latent-sae's). For a
   BatchTopK model with the row cap, k (the most a row keeps). */
LSAE_DEF size_t lsae_model_encode_k(const lsae_model *model);

/* Encode rows x [rows, d] to the k largest activations per row:
   top_acts [rows, k], top_indices [rows, k], sorted largest first, ties to
   the lower index. k = 0 means lsae_model_encode_k(model); any k <= L is
   allowed. A row with fewer than k positive activations is padded with
   zeros at the lowest latents not listed before them.
   Threshold models (batchtopk, or nested matryoshka with
   matryoshka_use_batchtopk, docs/math.md 3.1): with batchtopk_row_cap a row
   keeps the best k of its z with z > 0 and z >= theta; the slots after them
   are padding, value 0, at the indices the plain top k would have put there
   (the latents below theta, best first, then the lowest latents not yet
   listed). Without the row cap a row keeps any number of latents, so this
   refuses the model with LSAE_UNSUPPORTED: use lsae_model_encode_sparse. */
LSAE_DEF lsae_result lsae_model_encode(const lsae_model *model, const float *x, size_t rows,
                                       size_t k, float *top_acts, int32_t *top_indices);
/* x_hat [rows, d] = sum_i top_acts[i] W_dec[top_indices[i]] + b_dec, k per row. */
LSAE_DEF lsae_result lsae_model_decode(const lsae_model *model, const float *top_acts,
                                       const int32_t *top_indices, size_t rows, size_t k,
                                       float *x_hat);

/* Encode rows x [rows, d] to each row's kept latents, for every SAE type:
   row r's count[r] entries are acts[r * capacity + i], indices[r * capacity
   + i], i < counts[r], best first (ties to the lower index); the slots past
   counts[r] are left as they are.
   - Threshold models (see lsae_model_encode): every latent with z > 0 and
     z >= theta; with batchtopk_row_cap the best k of them. Counts vary per
     row (0 .. L without the cap).
   - Other types: lsae_model_encode_k(model) entries per row, exactly what
     lsae_model_encode with k = 0 returns (zero padding included).
   If some row has more entries than capacity, each such row is filled with
   its best capacity entries, *needed (may be NULL) is set to the largest
   count of any row, and the result is LSAE_TRUNCATED: call again with
   capacity = *needed to get them all. Otherwise *needed is the largest
   count and the result LSAE_OK. */
/* The int8 pre-pass of the CPU encode (docs/math.md, 2.12). On (1, the
   default), lsae_model_encode and lsae_model_encode_sparse find each row's
   top k from int8 pre-activations with a proven bound on their error and
   recompute in float32 only the latents that could be in it: the same
   indices and values, bit for bit, as the float32 pass, with less work.
   By default (on = 1) it applies to calls of up to 16 rows in any build
   (those are bound by reading W_enc, and the int8 copy is a quarter of it:
   one row of a 768 x 24576 model 10x faster), and to larger calls in
   builds with AVX-512 VNNI (vpdpbusd: 64 int8 products an instruction,
   four times float32's; with AMX on Linux, tdpbusd: 16 rows at once) or
   AVX2 (vpmaddubsw on 7-bit weights; vpdpbusd on ymm where the build has
   AVX-VNNI) for models with d L >= 2^22 and k <= L / 64, where it measured
   faster; always only for k <= L / 16 and d <= 65536. on = 2 uses it for
   every call (elsewhere the portable int8 product gives the same results,
   slower than float32 on many rows; for tests). on = 1 or 2 also builds the
   model's int8 copy of W_enc now and keeps it (L d bytes) until the
   weights change (training, lsae_model_set_weights): call it again after
   training (lsae_model_load builds it); without a current copy, an encode
   of 2048 rows or more builds a temporary one and a smaller one uses
   float32. on = 0 frees the copy and
   encodes in float32 only. A trainer of the model follows the same
   setting for its step's selection (the same bits either way; it rebuilds
   its own int8 copy once an optimizer step). */
LSAE_DEF lsae_result lsae_model_set_encode_prepass(lsae_model *model, int on);

LSAE_DEF lsae_result lsae_model_encode_sparse(const lsae_model *model, const float *x, size_t rows,
                                              size_t capacity, float *acts, int32_t *indices,
                                              size_t *counts, size_t *needed);
/* x_hat [rows, d] = b_dec + sum over row r's first counts[r] entries of
   acts W_dec[indices] (the layout lsae_model_encode_sparse writes, rows
   capacity apart). */
LSAE_DEF lsae_result lsae_model_decode_sparse(const lsae_model *model, const float *acts,
                                              const int32_t *indices, const size_t *counts,
                                              size_t capacity, size_t rows, float *x_hat);

/* ---------------------------------------------------------------- devices */

/* LSAE_OK when device can run here: the CPU always; CUDA when the program
   was built with LATENTSAE_CUDA and latentsae_cuda.cu and a CUDA device
   answers. Otherwise LSAE_UNSUPPORTED (not built in) or LSAE_CUDA_ERROR
   (built in, no usable device: the message has CUDA's words). A test that
   asserts it catches a misspelled LATENTSAE_CUDA. */
LSAE_DEF lsae_result lsae_backend_available(lsae_device device);
/* Move a model to device (LSAE_DEVICE_DEFAULT: CUDA when available, else the
   CPU); lsae_model_config(model)->device then says where it is. Free the
   model's trainers first. */
LSAE_DEF lsae_result lsae_model_to_device(lsae_model *model, lsae_device device);
/* The precision of the encoder product in lsae_model_encode on CUDA (a
   trainer takes its own from its config). The CPU accepts DEFAULT and FP32. */
LSAE_DEF lsae_result lsae_model_set_precision(lsae_model *model, lsae_precision precision);

/* ---------------------------------------------------------------- trainer */

typedef struct lsae_trainer lsae_trainer;

typedef struct lsae_step_stats {
    double fvu;             /* this batch, global form: sum e^2 / TV */
    double auxk;            /* 0 when AuxK is off or nothing is dead */
    double multi_topk_fvu;  /* 0 unless multi_topk */
    double loss;            /* fvu + auxk_alpha auxk + multi_topk_fvu / 8 */
    double dead_fraction;   /* dead latents / L, after this call */
    size_t n_dead;
    double lr;              /* learning rate of the optimizer step this call made, else of the next */
    double grad_norm;       /* global gradient norm before clipping, when stepped */
    size_t rows_used;
    size_t rows_dropped;    /* rows with NaN or Inf, left out */
    uint64_t step;          /* optimizer steps taken so far */
    int stepped;            /* 1 when this call ended an accumulation window */
    /* the SAE types (docs/math.md, section 3) */
    size_t k;                    /* k_s used by this batch (3.4) */
    float batchtopk_threshold;   /* theta after this batch (0 unless the type has one) */
    size_t levels;               /* Matryoshka levels m, else 0 */
    double level_fvu[LSAE_MAX_LEVELS]; /* fvu of each level's reconstruction; level_fvu[m-1] = fvu */
    size_t rows_enlarged;        /* BatchTopK rows re-selected with more candidates (3.1); per-level: summed over the levels' picks */
} lsae_step_stats;

/* A trainer for model with the training fields of cfg (auxk_alpha, lr, ...);
   the model's own shape fields are used, cfg's are ignored. The SAE type
   and its settings (sae_type, batchtopk_*, matryoshka_*, k_anneal*) come
   from cfg. k_anneal without total_steps is refused (LSAE_INVALID_ARGS:
   the fall takes a fraction of the run); on a CUDA model only TopK without
   k_anneal trains (LSAE_UNSUPPORTED otherwise: use device cpu). */
LSAE_DEF lsae_result lsae_trainer_create(lsae_model *model, const lsae_config *cfg,
                                         lsae_trainer **out);
LSAE_DEF void lsae_trainer_free(lsae_trainer *trainer);
/* One batch of x [rows, d]: forward, backward, and every grad_acc_steps-th
   call the optimizer step. stats may be NULL. On LSAE_BAD_BATCH nothing in the
   trainer or the model changed. */
LSAE_DEF lsae_result lsae_trainer_step(lsae_trainer *trainer, const float *x, size_t rows,
                                       lsae_step_stats *stats);

/* The two halves of lsae_trainer_step, for custom loops and tests:
   accumulate adds this batch's gradient (loss / grad_acc_steps) and never
   steps; apply runs clip, projection, Adam, renormalisation and the dead-latent
   bookkeeping on what was accumulated. Where latents have few entries a batch
   (batch rows x k < 4 latents) and grad_acc_steps > 1, the live latents' part
   of each batch's gradient is added at the window's end (apply, or
   lsae_trainer_get_grads) from the batch's intermediates, which the trainer
   keeps until then: the same sums in the same order, for up to a quarter of
   the parameters' memory more. */
LSAE_DEF lsae_result lsae_trainer_accumulate(lsae_trainer *trainer, const float *x, size_t rows,
                                             lsae_step_stats *stats);
LSAE_DEF lsae_result lsae_trainer_apply(lsae_trainer *trainer, lsae_step_stats *stats);
/* The gradient accumulated so far (before clipping), shaped as the weights.
   Where the trainer holds batches for the window's end (few entries a
   latent), their share is added first: a call that writes to the trainer. */
LSAE_DEF lsae_result lsae_trainer_get_grads(const lsae_trainer *trainer, float *dW_enc,
                                            float *db_enc, float *dW_dec, float *db_dec);

/* Training state, for resume: Adam moments laid out as the weights (m then v),
   samples-since-fired per latent, optimizer steps taken, and whether b_dec has
   been initialised. Accumulated gradients are not state: save between windows. */
typedef struct lsae_trainer_state {
    uint64_t step;
    int b_dec_initialized;
    uint64_t *since_fired;            /* [L] */
    float *m_W_enc, *m_b_enc, *m_W_dec, *m_b_dec;
    float *v_W_enc, *v_b_enc, *v_W_dec, *v_b_dec;
} lsae_trainer_state;
/* Copy state out into caller arrays (NULL skips) or in from them. set refuses
   mid-window (after accumulate without apply). */
LSAE_DEF lsae_result lsae_trainer_get_state(const lsae_trainer *trainer, lsae_trainer_state *st);
LSAE_DEF lsae_result lsae_trainer_set_state(lsae_trainer *trainer, const lsae_trainer_state *st);
LSAE_DEF uint64_t lsae_trainer_steps_done(const lsae_trainer *trainer);

/* The arrays of a model and its trainer, by number: what the streaming saves
   (lsae_checkpoint_save_pieces, lsae_model_save_pieces) ask for, piece by
   piece. The moments and counters are laid out as lsae_trainer_state's. */
typedef enum lsae_piece {
    LSAE_PIECE_W_ENC = 0, LSAE_PIECE_B_ENC = 1, LSAE_PIECE_W_DEC = 2, LSAE_PIECE_B_DEC = 3,
    LSAE_PIECE_M_W_ENC = 4, LSAE_PIECE_M_B_ENC = 5, LSAE_PIECE_M_W_DEC = 6, LSAE_PIECE_M_B_DEC = 7,   /* Adam m */
    LSAE_PIECE_V_W_ENC = 8, LSAE_PIECE_V_B_ENC = 9, LSAE_PIECE_V_W_DEC = 10, LSAE_PIECE_V_B_DEC = 11, /* Adam v */
    LSAE_PIECE_SINCE_FIRED = 12,   /* samples since each latent fired, uint64 */
    LSAE_PIECE_THRESHOLD = 13,     /* the BatchTopK threshold theta, one float */
    LSAE_PIECE_COUNT = 14
} lsae_piece;
/* rows [l0, l0 + n) of array `what` into dst (see lsae_checkpoint_save_pieces) */
typedef lsae_result (*lsae_piece_fn)(void *ctx, int what, size_t l0, size_t n, void *dst);
/* Rows [r0, r0 + n) of one array (an lsae_piece) of the trainer's model's
   latents (a shard's own rows: row 0 is its first latent) into dst, laid out
   as lsae_checkpoint_save_pieces' fetch writes them (b_dec and its moments:
   elements [r0, r0 + n) of d_in; the threshold: r0 = 0, n = 1): a piece of
   a checkpoint copied straight out, with no whole-shard copy of the state
   (lsae_trainer_get_state copies whole arrays). CPU trainers only
   (LSAE_UNSUPPORTED on a GPU: use lsae_trainer_get_state). */
LSAE_DEF lsae_result lsae_trainer_get_piece(const lsae_trainer *trainer, int what, size_t r0, size_t n, void *dst);

/* Data-parallel training (README "Distributed training"). P processes
   ("ranks") each hold the whole model and trainer and feed
   lsae_trainer_step their own rows of every global batch (any split, even an
   empty slice); the trainer makes every global quantity global through this
   interface, so that all ranks take the same optimizer step:
     - the batch's total variance (F2) and its row count,
     - the geometric-median init of b_dec (F3), over all ranks' rows,
     - the loss terms (F7) and the statistics,
     - the gradients (before U1), the fired flags (B6) and the rows of the
       window (U4), so the dead-latent counters and AuxK agree.
   Everything else (weights, Adam, counters) then stays identical on every
   rank without being sent. The sums must come out the same on every rank,
   added in one fixed order (rank 0's part, then rank 1's, ...), so that a run
   repeated with the same P is bit-identical; latentsae_mpi.h implements this
   over MPI, and latentsae_nccl.h adds sum_f32_device over NCCL for CUDA
   trainers. Nothing here needs an MPI, CUDA or NCCL header.
   Each callback returns LSAE_OK, or something else after which the run is
   over (the trainer refuses further calls). */
typedef struct lsae_comm {
    int rank, size;             /* this process, of size (1: one process, nothing is exchanged) */
    void *ctx;                  /* passed to the callbacks */
    /* buf[0..n) <- sum over ranks of every rank's buf[0..n), the same bits on every rank */
    lsae_result (*sum_f32)(void *ctx, float *buf, size_t n);
    lsae_result (*sum_f64)(void *ctx, double *buf, size_t n);
    /* buf[0..bytes) <- root's buf */
    lsae_result (*broadcast)(void *ctx, void *buf, size_t bytes, int root);
    /* recv[r bytes .. (r + 1) bytes) <- rank r's send[0..bytes), for every
       rank r in order (every rank gets every rank's bytes; recv holds size
       times bytes). Only latent-sharded training needs it (the candidate
       lists of lsae_trainer_set_shard_comm); data-parallel training may
       leave it NULL. */
    lsae_result (*allgather)(void *ctx, const void *send, size_t bytes, void *recv);
    /* Optional (NULL: absent), for a trainer on a GPU (LATENTSAE_CUDA):
       dev_buf[0..n) <- the sum over ranks, as sum_f32 but on device memory
       of this rank's GPU, queued on cuda_stream (a cudaStream_t; the sum
       must be complete in stream order when the call returns, or later on
       that stream). A data-parallel CUDA trainer sums its gradient and
       fired flags through it when set (latentsae_nccl.h: NCCL, GPU to GPU)
       and through sum_f32 on a pinned host copy otherwise. The same bits on
       every rank, in a fixed order, as sum_f32. The CPU trainer never
       calls it. Nothing here needs a CUDA header: the pointers are void. */
    lsae_result (*sum_f32_device)(void *ctx, float *dev_buf, size_t n, void *cuda_stream);
} lsae_comm;

/* Train data-parallel over comm (copied; NULL or size 1: one process, as
   before, bit for bit). Call between optimizer steps, on every rank at once
   (it is collective), with the same settings on each: with size > 1 it
   checks that every rank holds the same weights, Adam state, dead-latent
   counters and step as rank 0 (LSAE_INVALID_ARGS on every rank if not),
   so call it after loading a checkpoint. Refused (LSAE_UNSUPPORTED) with
   size > 1 for the batch-wide selections (BatchTopK, Matryoshka with
   matryoshka_use_batchtopk), whose pick would need every rank's candidates.
   A CUDA trainer (LATENTSAE_CUDA) trains data-parallel too, with the same
   exchanges at the same points (README "Distributed training"): the few
   per-batch sums go through pinned host memory and sum_f64, the gradient
   and fired flags once per optimizer step through sum_f32_device when set
   (NCCL), else through sum_f32 on a host copy; its model check downloads
   the state to hash it. That GPU path is compiled and linked by CI but has
   not yet been run on a GPU. With size 1 a CUDA trainer keeps its one-GPU
   path, bit for bit. A CUDA failure on one rank returns there and leaves
   the other ranks waiting in their next sum: end the job (lsae train calls
   MPI_Abort). The step statistics are the global batch's
   (rows_used and rows_dropped are summed over the ranks) and the same on
   every rank; lsae_trainer_get_grads returns this rank's own part of the
   gradient, not yet summed. The gradient is exchanged once per optimizer
   step (grad_acc_steps batches), the other sums are a few numbers (d + 2
   doubles) per batch. */
LSAE_DEF lsae_result lsae_trainer_set_comm(lsae_trainer *trainer, const lsae_comm *comm);

/* Latent-sharded training (README "Distributed training"; docs/math.md
   2.14). S ranks each hold the latents [l0, l1) of L (with their rows of
   W_enc, b_enc, W_dec, their Adam moments and dead-latent counters; b_dec is
   on every rank), so the parameters and optimizer state per rank are about
   1/S of one process's. Every rank passes the SAME rows to every
   accumulate/step; the top-k stays exact: each rank proposes its best K of
   each row, the global K are chosen among the S K candidates (ties to the
   lower global index, the order of one process), each rank decodes the
   picks it holds and the partial reconstructions are summed; AuxK over the
   dead latents likewise. TopK only (with multi_topk, AuxK and k_anneal);
   other types are refused with LSAE_UNSUPPORTED. Combined with
   data-parallel training, a D x S grid: give the trainer both communicators,
   lsae_trainer_set_comm over the D ranks that hold the same shard (each fed
   its slice of the global batch) and lsae_trainer_set_shard_comm over the S
   ranks that share a slice (each fed the same rows).

   lsae_shard_range: the latents [*l0, *l1) that rank `rank` of S holds:
   L r / S to L (r + 1) / S, sizes differing by at most one. */
LSAE_DEF void lsae_shard_range(size_t L, int rank, int S, size_t *l0, size_t *l1);
/* A model holding the latents [l0, l1) of the model cfg describes,
   initialised to exactly those rows of what lsae_model_create(cfg) makes
   (each element of W_enc is drawn from its global position). [0, L) gives
   an ordinary model. A shard model trains (with a shard communicator) and
   copies its rows out (lsae_model_get_weights: [l1 - l0] rows); it cannot
   be encoded with, saved or moved to a GPU: gather the shards into a full
   model first (lsae_model_set_shard_rows), or stream the shards' rows into
   the files (lsae_checkpoint_save_pieces, lsae_model_save_pieces, with
   lsae_trainer_get_piece on each rank: what lsae train does); a saved
   model's rows load into it with lsae_model_load_shard, a checkpoint's
   with lsae_checkpoint_load_shard. */
LSAE_DEF lsae_result lsae_model_create_shard(const lsae_config *cfg, const lsae_allocator *alloc,
                                             size_t l0, size_t l1, lsae_model **out);
/* A shard [l0, l1) copied from a full model in memory. To start S ranks
   from a model file or resume a checkpoint on them, lsae_model_load_shard
   and lsae_checkpoint_load_shard read a shard's rows straight from the
   files, with no full model. */
LSAE_DEF lsae_result lsae_model_shard_of(const lsae_model *full, size_t l0, size_t l1, lsae_model **out);
/* *l0, *l1 and the full model's *L (a full model: 0, L, L). Any may be NULL. */
LSAE_DEF void lsae_model_shard_info(const lsae_model *model, size_t *l0, size_t *l1, size_t *L);
/* Into a full model, rows [l0, l0 + n) of W_enc, b_enc, W_dec from arrays of
   n rows (b_dec: d values, or NULL to leave it): how rank 0 assembles the
   shards it gathered. */
LSAE_DEF lsae_result lsae_model_set_shard_rows(lsae_model *full, size_t l0, size_t n, const float *W_enc,
                                               const float *b_enc, const float *W_dec, const float *b_dec);
/* Train the shard model's trainer latent-sharded over comm (copied): S =
   comm->size ranks, this one rank comm->rank, whose model must hold
   lsae_shard_range(L, rank, S). All callbacks including allgather must be
   set. Collective: call it on every rank between optimizer steps; it
   checks that every rank is at the same step with the same b_dec
   (LSAE_INVALID_ARGS on every rank if not). The statistics (loss, fvu,
   n_dead, grad_norm) are the whole model's and the same on every rank;
   lsae_trainer_get_state and get_grads give this rank's rows (and the
   shared b_dec; get_grads' b_dec mid-window holds only this rank's part of
   the encoder-side term). Per batch the ranks exchange the candidates (B (K
   + ka) of (value, index), 8 bytes each, from each rank) and sum up to three
   [B, d] partial reconstructions (the decode classes in use); per optimizer step d floats and a few
   doubles. NULL: a full model trains alone again. */
LSAE_DEF lsae_result lsae_trainer_set_shard_comm(lsae_trainer *trainer, const lsae_comm *comm);

/* Private: the four parameter tensors, in their order in a parameter slab
   (the CPU's and latentsae_cuda.cu's alike). Not an API. */
enum { LSAE__W_ENC = 0, LSAE__B_ENC = 1, LSAE__W_DEC = 2, LSAE__B_DEC = 3, LSAE__NUM_TENSORS = 4 };

#ifdef LATENTSAE_CUDA
#ifdef LATENTSAE_STATIC
#error "LATENTSAE_CUDA needs the library's functions to be extern: latentsae_cuda.cu calls them. Leave out LATENTSAE_STATIC."
#endif
/* Private: the calls latentsae.h makes into latentsae_cuda.cu, and the one
   it makes back (lsae__cuda_set_error sets lsae_last_error()). Not an API:
   they change with the library. */
lsae_result lsae__cuda_available(int ordinal);
lsae_result lsae__cuda_model_new(void **out, const lsae_config *cfg, const float *host_params, const size_t offset[4]);
void lsae__cuda_model_free(void *cm);
int lsae__cuda_model_trainers(void *cm);
lsae_result lsae__cuda_model_download(void *cm, float *host_params);
lsae_result lsae__cuda_get_weights(void *cm, float *W_enc, float *b_enc, float *W_dec, float *b_dec);
lsae_result lsae__cuda_set_weights(void *cm, const float *W_enc, const float *b_enc, const float *W_dec, const float *b_dec);
lsae_result lsae__cuda_set_precision(void *cm, lsae_precision precision);
lsae_result lsae__cuda_encode(void *cm, const float *x, size_t rows, size_t k, float *top_acts, int32_t *top_indices);
lsae_result lsae__cuda_decode(void *cm, const float *top_acts, const int32_t *top_indices, size_t rows, size_t k, float *x_hat);
lsae_result lsae__cuda_trainer_new(void **out, void *cm, const lsae_config *cfg, uint64_t *step, uint64_t *micro,
                                   uint64_t *rows_in_window, int *b_dec_initialized, int *poisoned);
void lsae__cuda_trainer_free(void *ct);
lsae_result lsae__cuda_trainer_accumulate(void *ct, const float *x, size_t rows, lsae_step_stats *stats, int then_apply);
lsae_result lsae__cuda_trainer_apply(void *ct, lsae_step_stats *stats);
lsae_result lsae__cuda_trainer_get_grads(void *ct, float *dW_enc, float *db_enc, float *dW_dec, float *db_dec);
lsae_result lsae__cuda_trainer_get_state(void *ct, lsae_trainer_state *st);
lsae_result lsae__cuda_trainer_set_state(void *ct, const lsae_trainer_state *st);
/* data-parallel (lsae_trainer_set_comm): comm NULL or size 1 leaves the
   one-GPU path; the caller has checked comm and the ranks' models */
lsae_result lsae__cuda_trainer_set_comm(void *ct, const lsae_comm *comm);
/* For latentsae_nccl.h (a device sum in rank order): out[0..n) <-
   ((parts[0] + parts[1]) + ...) + parts[P-1], parts P arrays of n floats
   one after another in device memory, queued on stream (a cudaStream_t).
   The same additions, in the same order, as latentsae_mpi.h's sum. */
lsae_result lsae__cuda_sum_parts(float *out, const float *parts, size_t n, int P, void *stream);
void lsae__cuda_set_error(const char *msg);
#ifdef LSAE_TESTING
/* Test and benchmark hooks (tests/cuda): one kernel on given data. Only in
   a latentsae_cuda.cu compiled with -DLSAE_TESTING (the Makefile's CUDA
   objects are), for programs that define LSAE_TESTING before including
   this file. They stay in latentsae_cuda.cu because the kernels they run
   are static to it. */
lsae_result lsae__cuda_test_topk(const float *pre, const float *b_enc, const unsigned char *mask, size_t rows, size_t L,
                                 size_t k, size_t ldo, int k_on_device, float *vals, int32_t *idx);
lsae_result lsae__cuda_test_gemm(const float *x, const float *W, size_t rows, size_t L, size_t d, lsae_precision p, float *out);
lsae_result lsae__cuda_test_bench(size_t rows, size_t L, size_t d, size_t k, lsae_precision p, int iters,
                                  double *gemm_ms, double *topk_ms);
#endif /* LSAE_TESTING */
#endif

/* ------------------------------------------------------------------ files */
#ifndef LSAE_NO_STDIO

/* Save dir/cfg.json and dir/sae.safetensors (F32), the layout latent-sae and
   sparsify read. Creates dir if missing. Each file is written to a temporary
   name and renamed into place. A plain TopK model writes the keys older
   readers know; other types add theirs (docs/files.md), and a model with a
   BatchTopK threshold also writes it as the 0-d tensor batchtopk_threshold,
   which lsae_model_load prefers to cfg.json's number. */
LSAE_DEF lsae_result lsae_model_save(const lsae_model *model, const char *dir);
/* Load a model directory written by this library, latent-sae or sparsify
   (F32, F16 or BF16 tensors; any cfg.json version, see lsae_config_from_json),
   or by SAELens (sae_weights.safetensors: converted as lsae_model_load_saelens). */
LSAE_DEF lsae_result lsae_model_load(const char *dir, const lsae_allocator *alloc,
                                     lsae_model **out);
/* The config lsae_model_load(dir) would give its model (num_latents
   resolved), read from cfg.json and checked against sae.safetensors'
   header, without reading or allocating any weights: to size a shard
   (lsae_shard_range on its num_latents) before lsae_model_load_shard.
   A SAELens directory is refused (LSAE_UNSUPPORTED): its config depends on
   its weights (see lsae_model_load_shard). Other errors as lsae_model_load. */
LSAE_DEF lsae_result lsae_model_load_config(const char *dir, lsae_config *cfg);
/* Load a model directory's weights into an existing model, reading only the
   rows the model holds: a shard made by lsae_model_create_shard(cfg, l0,
   l1) gets rows [l0, l1) of W_enc, b_enc and W_dec and all of b_dec, each
   [L, d] or [L] tensor of sae.safetensors being read with one seek and one
   read of its rows, so a rank of a latent-sharded run starts from a saved
   model (lsae train --init) holding about 1/S of it, where lsae_model_load
   and then lsae_model_shard_of would hold the whole model on every rank.
   A full model (lsae_model_create) is the shard [0, L) and gets every row.
   The rows come back bit for bit as from lsae_model_load and
   lsae_model_shard_of: any dtype lsae_model_load reads (converted the same
   way), input_mean folded into b_dec, and the file's BatchTopK threshold
   (its tensor, else cfg.json's number) when both the file's type and the
   model's keep one. The model keeps its own config otherwise (its type,
   normalize_decoder, optimizer settings: a caller fine-tunes with its own),
   but the file's d_in, num_latents and k must be the model's (a shard's:
   the full model's L; lsae_model_load_config gives them). Scratch: one copy
   of the model's own size, so that a failure changes nothing.
   SAELens directories are refused (LSAE_UNSUPPORTED, the message says what
   to do): SAELens stores W_enc transposed ([d_in, d_sae]), and the model
   lsae_model_load converts keeps normalize_decoder only when every decoder
   row is a unit vector, which a shard cannot know from its own rows; load
   it whole with lsae_model_load, or convert it once (lsae_model_load, then
   lsae_model_save) into a directory that loads by rows.
   Errors (the model then unchanged): LSAE_INVALID_ARGS when dir or model is
   NULL or the file's d_in, num_latents or k differ from the model's (the
   message names both); LSAE_NOT_FOUND when there is no cfg.json or
   sae.safetensors; LSAE_BAD_FILE for a file cut short or of other shapes,
   or a tensor holding NaN or Inf; LSAE_UNSUPPORTED as above and for the
   variants lsae_model_load refuses; LSAE_IO_ERROR; LSAE_OUT_OF_MEMORY. */
LSAE_DEF lsae_result lsae_model_load_shard(const char *dir, lsae_model *model);
/* Parse a cfg.json text into cfg (d_in, num_latents, expansion_factor, k,
   normalize_decoder, multi_topk, and the SAE type's keys of docs/math.md
   3.5): latent-sae 2024 and today, sparsify. sae_type is read in any case
   ("BATCHTOPK", "batchtopk"); a batchtopk file without batchtopk_row_cap
   has the cap on and a matryoshka file without matryoshka_form is per-level
   (latent-sae's). Unknown keys are ignored; variants we do not implement
   (signed, groupmax, skip connections, transcoders, sae_type gated,
   jumprelu, lista or unknown) are refused with LSAE_UNSUPPORTED and a
   message naming the key or type. */
LSAE_DEF lsae_result lsae_config_from_json(const char *json, size_t len, lsae_config *cfg);

#ifndef LSAE_NO_SAELENS
/* SAELens: dir/cfg.json ("architecture": "topk", d_in, d_sae, k) and
   dir/sae_weights.safetensors with W_enc [d_in, d_sae] (transposed from
   ours), b_enc, W_dec, b_dec. Save writes SAELens 6's format (F32);
   load reads 6 and earlier (activation_fn_str "topk"), folds
   rescale_acts_by_decoder_norm into the weights and refuses what a
   latent-sae TopK SAE cannot express (apply_b_dec_to_input false,
   normalize_activations, other architectures). */
LSAE_DEF lsae_result lsae_model_save_saelens(const lsae_model *model, const char *dir);
LSAE_DEF lsae_result lsae_model_load_saelens(const char *dir, const lsae_allocator *alloc,
                                             lsae_model **out);
#endif /* LSAE_NO_SAELENS */

/* --------------------------------------------------- Hugging Face cache */
#ifndef LSAE_NO_HF

/* Resolve OWNER/NAME[/SUBFOLDER] in the local Hugging Face hub cache
   (HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else
   ~/.cache/huggingface/hub), offline:
   models--OWNER--NAME/snapshots/<refs/main or the only revision>/SUBFOLDER.
   repo may be OWNER/NAME@REV (a branch or tag under refs/, or a commit).
   subfolder may be NULL or "". path receives the directory (cap bytes).
   When it is not there (LSAE_NOT_FOUND) the message gives the command that
   downloads it (huggingface-cli download OWNER/NAME, with --include for the
   subfolder's files). */
LSAE_DEF lsae_result lsae_hf_resolve(const char *repo, const char *subfolder, char *path, size_t cap);
/* lsae_model_load on what lsae_hf_resolve finds. */
LSAE_DEF lsae_result lsae_model_load_hf(const char *repo, const char *subfolder,
                                        const lsae_allocator *alloc, lsae_model **out);
#endif /* LSAE_NO_HF */

/* ------------------------------------------------------------- checkpoints */

/* A checkpoint directory: the model files (cfg.json, sae.safetensors, which
   latent-sae loads as a model) plus the trainer's state in state.bin (Adam
   moments, step, dead-latent counters, b_dec flag; the format is in the
   doc block at the top of this file and at the "checkpoints" section of
   the implementation) and an opaque caller blob (the loader's rows_read, an RNG
   state, ...). The trainer draws no random numbers after lsae_model_create,
   so the data position is all a resumed run needs beyond this state: keep
   lsae_loader_stats.rows_read in the blob and lsae_loader_seek to it. The whole directory is written as DIR.tmp and swapped into
   place by renames, so a crash (kill -9, power loss) at any moment leaves the
   previous checkpoint or the new one loadable. A save that fails (a full
   disk, a read-only directory: LSAE_IO_ERROR with the system's reason)
   removes DIR.tmp and leaves the previous checkpoint as it was. trainer may
   be NULL (model only: zero moments). A CPU trainer's moments and counters
   are written from its own arrays (no copy: a save needs no memory beyond
   training's); a GPU trainer's are downloaded into host copies first.
   Refused between accumulate and apply, and after the trainer saw a
   non-finite value. */
LSAE_DEF lsae_result lsae_checkpoint_save(const char *dir, const lsae_model *model,
                                          const lsae_trainer *trainer, const void *blob,
                                          size_t blob_len);
/* The same checkpoint from a trainer state held in the caller's arrays
   (every pointer of st set, each the whole model's: L counters, the
   moments laid out as the weights), with no trainer: shards gathered into
   whole arrays, say (lsae_checkpoint_save_pieces below needs no whole
   arrays at all).
   The files are those lsae_checkpoint_save writes for a trainer in that
   state. */
LSAE_DEF lsae_result lsae_checkpoint_save_state(const char *dir, const lsae_model *model,
                                                const lsae_trainer_state *st, const void *blob,
                                                size_t blob_len);
/* Streaming saves: the same files with no whole model in memory, for rank
   0 of a latent-sharded run, whose shards stay on their ranks. The library
   asks the caller for each array's rows as it writes them, through fetch,
   and holds one piece at a time (plus a few KB): fetch(ctx, what, l0, n,
   dst) writes rows [l0, l0 + n) of array `what` to dst as host floats
   (LSAE_PIECE_SINCE_FIRED: uint64) and returns LSAE_OK; anything else
   stops the save, which then leaves no partial file behind. Layout of a
   piece: W_enc, W_dec and their moments n rows of d_in floats, row after
   row ([n, d_in]); b_enc and its moments n floats; the counters n uint64;
   b_dec and its moments are asked whole (l0 = 0, n = d_in); the threshold
   (asked once, first, only by the types that save one: batchtopk,
   matryoshka with matryoshka_use_batchtopk) l0 = 0, n = 1. The arrays
   indexed by latent are asked piece by piece exactly at the bounds:
   bounds[0] = 0 < bounds[1] < ... < bounds[nbounds - 1] = L (the ranks'
   shards, lsae_shard_range, or those cut finer to bound the piece buffer;
   NULL and 0: one piece of L), so a piece never spans two ranks; the buffer
   holds the largest piece of W_enc (its rows times d_in floats). Each piece
   is asked once per file, in the file's order (sae.safetensors: W_dec,
   b_dec, b_enc, W_enc; state.bin: the counters, then m of W_enc, b_enc,
   W_dec, b_dec, then v of the same), lowest rows first: a caller serving
   pieces from other processes answers each request as it comes. The bytes are those lsae_model_save and lsae_checkpoint_save
   write for the model and trainer the pieces make up (cfg as the model's,
   k and num_latents from it), the checkpoint with the same DIR.tmp/DIR.old
   swap. */
/* A checkpoint at optimizer step `step` (lsae_trainer_steps_done) with b_dec
   initialised or not, the model's arrays and the trainer's state fetched
   piece by piece, and the caller's blob. */
LSAE_DEF lsae_result lsae_checkpoint_save_pieces(const char *dir, const lsae_config *cfg, uint64_t step,
                                                 int b_dec_initialized, const size_t *bounds, size_t nbounds,
                                                 lsae_piece_fn fetch, void *ctx, const void *blob,
                                                 size_t blob_len);
/* A model directory as lsae_model_save writes it, the weights fetched piece
   by piece (W_enc, b_enc, W_dec, b_dec and the threshold only). */
LSAE_DEF lsae_result lsae_model_save_pieces(const char *dir, const lsae_config *cfg, const size_t *bounds,
                                            size_t nbounds, lsae_piece_fn fetch, void *ctx);
/* Restores model weights and trainer state from dir into existing objects of
   the same shape (trainer may be NULL: weights only); copies at most blob_cap
   bytes of the blob, its length in *blob_len (may be NULL). Every file is
   checked against state.bin's checksums first; on failure nothing changes.
   If dir is missing because a save was cut between its renames, the newest
   whole checkpoint (DIR.tmp, else DIR.old) is loaded instead. Resuming is
   bit-exact: same seed and thread count give the same model as a run that
   never stopped. Memory: into a CPU trainer that has taken no optimizer
   step (a resume: create the model and trainer, then load) the moments are
   read straight into the trainer and the weights through its gradient
   array, so the load needs no more memory than training does; into one
   that has stepped, scratch copies of the weights and moments are made
   first (the load then holds 1.75x the parameters, gradients and moments
   that training holds), so that a failure changes nothing either way. A
   shard model is
   refused (LSAE_INVALID_ARGS): use lsae_checkpoint_load_shard. */
LSAE_DEF lsae_result lsae_checkpoint_load(const char *dir, lsae_model *model,
                                          lsae_trainer *trainer, void *blob, size_t blob_cap,
                                          size_t *blob_len);
/* Resume one rank of a latent-sharded run: restores into a shard model
   (lsae_model_create_shard(cfg, l0, l1), the checkpoint's d_in, k and
   num_latents L) and its trainer only the latents [l0, l1) the model holds,
   read straight from the files: their rows of W_enc, b_enc and W_dec, of
   those tensors' Adam moments and of the dead-latent counters, plus b_dec,
   its moments, the optimizer step, b_dec's flag, the BatchTopK threshold
   where the type has one, and the blob (as lsae_checkpoint_load). Every
   array of a checkpoint is laid out by latent (sae.safetensors' [L, d]
   and [L] tensors, state.bin's arrays: see the checkpoints section), so a
   shard's rows are one contiguous run of each, read with a seek; the rank
   then holds, besides its shard and trainer, only scratch copies of the
   shard's own size (the weights and the moments, so that a failure
   changes nothing), about 1/S of what lsae_checkpoint_load into a full
   model needs: loading whole and then lsae_model_shard_of would cost every
   rank more than one process's memory exactly when a large run resumes.
   The files do not depend on how the run was split, so any S (or one
   process) resumes any checkpoint; a full model is the shard [0, L) and
   loads as with lsae_checkpoint_load. It checks the whole checkpoint
   against state.bin's hashes first (streamed in 64 KB blocks: reading, not
   memory; lsae_checkpoint_verify and lsae_checkpoint_load_shard_verified,
   below, let one rank do that for all), and the same rows come back bit for bit as from
   lsae_checkpoint_load and lsae_model_shard_of.
   Errors (the model and trainer then unchanged): LSAE_INVALID_ARGS when
   dir or model is NULL, the trainer is another model's or has accumulated
   batches, or the checkpoint's d_in, k or L differ from the model's (a
   shard [l0, l1) with l1 past the checkpoint's L is such a mismatch; the
   message names both); LSAE_NOT_FOUND when there is no checkpoint;
   LSAE_BAD_FILE for a file cut short, corrupted or from another save
   (state.bin's length and hashes), or a tensor of another shape or holding
   NaN or Inf; LSAE_IO_ERROR when a read fails; LSAE_OUT_OF_MEMORY. */
LSAE_DEF lsae_result lsae_checkpoint_load_shard(const char *dir, lsae_model *model,
                                                lsae_trainer *trainer, void *blob, size_t blob_cap,
                                                size_t *blob_len);
/* A job of S ranks need not read the files in full S times: one process
   verifies (lsae_checkpoint_verify), shares its verdict and the directory
   it found with the others (a broadcast), and every rank, only when the
   verdict is LSAE_OK, loads its rows with lsae_checkpoint_load_shard_verified
   (lsae train does this, rank 0 verifying). A failed verdict is then the
   same error on every rank.
   lsae_checkpoint_verify: finds the checkpoint lsae_checkpoint_load(dir)
   would load (dir, or the newest whole one beside it when a save was cut
   between its renames), checks it against state.bin's hashes, reading each
   file in full, and writes its directory to found (cap bytes; "" on error).
   The errors of lsae_checkpoint_load for a missing or damaged checkpoint.
   lsae_checkpoint_load_shard_verified: lsae_checkpoint_load_shard from
   found WITHOUT the hashes: the caller vouches that found was verified (by
   this process or another on the same file system) and has not changed
   since. It still checks state.bin's header and length (a cut state.bin is
   refused), the shapes against the model, and each read (a cut
   sae.safetensors is refused), but corruption that keeps every size is not
   seen: never call it on a directory nobody verified. found must exist
   (LSAE_NOT_FOUND; no .tmp or .old fallback: the verifier chose). */
LSAE_DEF lsae_result lsae_checkpoint_verify(const char *dir, char *found, size_t cap);
LSAE_DEF lsae_result lsae_checkpoint_load_shard_verified(const char *found, lsae_model *model,
                                                         lsae_trainer *trainer, void *blob, size_t blob_cap,
                                                         size_t *blob_len);

/* -------------------------------------------------------------- datasets */

/* Embedding rows on disk, read as float32:
   .npy (v1-v3, C order, <f4 or <f2, or big-endian >f4 or >f2),
   memory-mapped where the OS allows;
   .safetensors holding a 2-D F32/F16/BF16 tensor (named, or the only 2-D one);
   raw dumps (f32, f16, bf16, little-endian; the width must be given);
   torch .pt files holding one 2-D float tensor (torch.save's zip layout);
   a directory of shards (data-*.npy, or every file of one kind, sorted by
   name) read as one dataset. A build with LSAE_NO_NPY or LSAE_NO_TORCH
   keeps the format's enum value and refuses such files with
   LSAE_UNSUPPORTED and a message naming the option. */
typedef enum lsae_format {
    LSAE_FORMAT_AUTO = 0,   /* by extension, then by magic bytes */
    LSAE_FORMAT_NPY = 1,
    LSAE_FORMAT_SAFETENSORS = 2,
    LSAE_FORMAT_RAW = 3,
    LSAE_FORMAT_TORCH = 4
} lsae_format;

typedef enum lsae_dtype {
    LSAE_DTYPE_F32 = 1,
    LSAE_DTYPE_F16 = 2,
    LSAE_DTYPE_BF16 = 3
} lsae_dtype;

typedef struct lsae_dataset_options {
    lsae_format format;        /* LSAE_FORMAT_AUTO */
    const char *tensor_name;   /* .safetensors, .pt dicts: the tensor to read; NULL: the only 2-D one */
    size_t raw_d_in;           /* raw dumps: values per row (required) */
    lsae_dtype raw_dtype;      /* raw dumps: LSAE_DTYPE_F32 */
    int no_mmap;               /* 1: read with stdio even where mmap is available */
} lsae_dataset_options;

typedef struct lsae_dataset lsae_dataset;

LSAE_DEF lsae_dataset_options lsae_dataset_options_default(void);
/* Open a file or a directory of shards; every shard must have the same width.
   AUTO detects a file's format by its magic bytes (\x93NUMPY, a zip, a
   safetensors header), else it is raw when raw_d_in is given. In a directory
   the shards are the files of one kind (by extension; several kinds is an
   error unless format says which), only the data-* / data_* ones when there
   are such, sorted by name; listing a directory needs POSIX. Headers are read
   and checked here; files are memory-mapped where POSIX mmap exists (a file
   truncated while mapped makes later reads fault: do not shrink shards under
   a running job). */
LSAE_DEF lsae_result lsae_dataset_open(const char *path, const lsae_dataset_options *opt,
                                       const lsae_allocator *alloc, lsae_dataset **out);
LSAE_DEF void lsae_dataset_close(lsae_dataset *ds);
LSAE_DEF uint64_t lsae_dataset_rows(const lsae_dataset *ds);
LSAE_DEF size_t lsae_dataset_d_in(const lsae_dataset *ds);
/* Rows [first, first + count) as float32 into out [count, d_in], converted
   from the file's dtype; NaN/Inf are passed through (the loader drops them).
   Rows are numbered across shards in shard order. Not safe to call from two
   threads at once, nor while a prefetching loader reads the same dataset. */
LSAE_DEF lsae_result lsae_dataset_read(lsae_dataset *ds, uint64_t first, size_t count, float *out);
LSAE_DEF size_t lsae_dataset_num_shards(const lsae_dataset *ds);
/* The path of shard i (valid while the dataset is open), or NULL. */
LSAE_DEF const char *lsae_dataset_shard_path(const lsae_dataset *ds, size_t i);

/* Batches for training: shard order shuffled, then rows shuffled inside a
   large in-memory window, all from a seed; a background thread fills the next
   window while the trainer works; rows with NaN/Inf are dropped and counted.
   The sequence depends only on the dataset, the options and the seed, so a
   run resumed with lsae_loader_seek sees exactly the batches it would have;
   it is the same with and without prefetch. The exact sequence (pieces of
   window_rows / 8 rows shuffled per epoch, windows shuffled inside) is
   written down at lsae_loader in the implementation. Memory: a batch, and
   per window (two with prefetch, one without) a row index; rows of
   memory-mapped float32 shards are served from the page cache in place,
   other rows (float16, bfloat16, unmapped files) take window_rows x d_in
   floats per window. */
typedef struct lsae_loader_options {
    size_t batch_size;          /* rows per batch; required */
    int shuffle;                /* 1 */
    uint64_t seed;              /* 0 */
    size_t window_rows;         /* rows shuffled together in memory; 0: about 256 MiB worth */
    int prefetch;               /* 1: read ahead in a background thread */
    uint64_t epochs;            /* passes over the data; 1 */
    uint64_t max_rows;          /* stop after this many source rows; 0: no limit */
    int drop_last;              /* 1: no short final batch */
} lsae_loader_options;

typedef struct lsae_loader_stats {
    uint64_t rows_read;         /* source rows consumed (the position) */
    uint64_t rows_dropped;      /* of those, rows with NaN or Inf */
    uint64_t batches;
    uint64_t epoch;
    double stall_seconds;       /* time next() waited for the disk (without prefetch: all reading) */
    uint64_t rows_loaded;       /* rows this loader read from the dataset: every row of each window it
                                   used, or with lsae_loader_set_comm about its part of each batch */
} lsae_loader_stats;

typedef struct lsae_loader lsae_loader;

LSAE_DEF lsae_loader_options lsae_loader_options_default(size_t batch_size);
/* The loader reads from ds, which must outlive it. */
LSAE_DEF lsae_result lsae_loader_create(lsae_dataset *ds, const lsae_loader_options *opt,
                                        lsae_loader **out);
LSAE_DEF void lsae_loader_free(lsae_loader *ld);
/* The next batch: *batch points to rows x d_in floats, valid until the next
   call; *rows = 0 when the data (all epochs, or max_rows) is used up. */
LSAE_DEF lsae_result lsae_loader_next(lsae_loader *ld, const float **batch, size_t *rows);
LSAE_DEF void lsae_loader_get_stats(const lsae_loader *ld, lsae_loader_stats *stats);
/* Continue from a position (stats.rows_read of an earlier run with the same
   dataset, options and seed): the following batches are the ones that run saw.
   The other counters of the stats start again from 0. */
LSAE_DEF lsae_result lsae_loader_seek(lsae_loader *ld, uint64_t rows_read);
/* Data-parallel reading: with comm of size P > 1, next() returns only this
   rank's contiguous part of each global batch, rows [n r / P, n (r + 1) / P)
   of the n the loader without comm would return (the same bytes; the batch
   sequence, positions and stats.rows_read / rows_dropped are the global
   ones, the same on every rank), and this rank reads only those rows from
   the dataset, one at a time where they lie, with no prefetch thread; a
   batch costs one sum_f64 of P + 1 numbers across the ranks (which rows
   were NaN/Inf, so that every rank cuts the same batch). next() becomes
   collective: call it on every rank in step. NULL or size 1: whole batches
   as before. Call it between batches, every rank at the same position (a
   prefetch thread is stopped, and started again by NULL). */
LSAE_DEF lsae_result lsae_loader_set_comm(lsae_loader *ld, const lsae_comm *comm);

#endif /* LSAE_NO_STDIO */

#ifdef __cplusplus
}
#endif

#endif /* LATENTSAE_H */

/* ======================================================================= */
/*                            IMPLEMENTATION                               */
/* ======================================================================= */

#if defined(LATENTSAE_IMPLEMENTATION) && !defined(LATENTSAE_IMPLEMENTATION_DONE)
#define LATENTSAE_IMPLEMENTATION_DONE

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <errno.h>
#include <limits.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* POSIX extras (fsync, mkdir) only where the compilation mode exposes them:
   a strict -std=c99 build without _POSIX_C_SOURCE still works, minus fsync.
   WASI's libc has mkdir and stat in every mode (its files are the host's,
   through the runtime's preopened directories). */
#if defined(__unix__) || defined(__APPLE__) || defined(__wasi__)
#include <sys/types.h>
#include <sys/stat.h>
#if defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200112L
#include <unistd.h>
#define LSAE__HAVE_FSYNC 1
#endif
#endif

#if defined(LSAE_MALLOC) && defined(LSAE_FREE)
/* user's allocator */
#elif !defined(LSAE_MALLOC) && !defined(LSAE_FREE)
#define LSAE_MALLOC(sz, ctx) ((void)(ctx), malloc(sz))
#define LSAE_FREE(p, ctx) ((void)(ctx), free(p))
#else
#error "Define both or neither of LSAE_MALLOC and LSAE_FREE."
#endif

#ifndef LSAE_ASSERT
#include <assert.h>
#define LSAE_ASSERT(x) assert(x)
#endif

#ifndef LSAE_MAX_SAFETENSORS_HEADER
#define LSAE_MAX_SAFETENSORS_HEADER 100000000u
#endif

/* OpenMP pragmas through _Pragma so that a build without -fopenmp sees
   nothing (no -Wunknown-pragmas) and runs the same loops on one thread. */
#define LSAE__STR(...) #__VA_ARGS__
#ifdef _OPENMP
#define LSAE__OMP(...) _Pragma(LSAE__STR(omp __VA_ARGS__))
#else
#define LSAE__OMP(...)
#endif

#if defined(__cplusplus) && __cplusplus >= 201103L
#define LSAE__THREAD_LOCAL thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define LSAE__THREAD_LOCAL _Thread_local
#elif defined(__GNUC__) || defined(__clang__)
#define LSAE__THREAD_LOCAL __thread
#elif defined(_MSC_VER)
#define LSAE__THREAD_LOCAL __declspec(thread)
#else
#define LSAE__THREAD_LOCAL /* no TLS: messages are shared between threads */
#endif

/* Messages are formatted with C99's %zu. mingw-w64 links Microsoft's
   msvcrt.dll, whose printf family predates C99 and has no 'z' size (gcc
   checks formats against it: "unknown conversion type character 'z'"), so
   there the library formats with mingw's own C99 vsnprintf whatever
   __USE_MINGW_ANSI_STDIO the program chose; MSVC's UCRT has %zu. */
#if defined(__MINGW32__)
#define lsae__vsnprintf __mingw_vsnprintf
#define LSAE__PRINTF(a, b) __attribute__((format(gnu_printf, a, b)))
#define LSAE__MAYBE_UNUSED __attribute__((unused))
#elif defined(__GNUC__) || defined(__clang__)
#define lsae__vsnprintf vsnprintf
#define LSAE__PRINTF(a, b) __attribute__((format(printf, a, b)))
#define LSAE__MAYBE_UNUSED __attribute__((unused))
#else
#define lsae__vsnprintf vsnprintf
#define LSAE__PRINTF(a, b)
#define LSAE__MAYBE_UNUSED
#endif

/* SIMD kernels, chosen at compile time as stb does ("if compiled with
   -msse2, we use SSE2 without any detection"): AVX-512 where the compiler
   was told to use it (-mavx512f or -march=native on such a machine), else
   AVX2 with FMA (-mavx2 -mfma), else NEON on 64-bit ARM (always there:
   AArch64's Advanced SIMD is IEEE single precision, with fused
   multiply-add, division and square root; 32-bit ARM's NEON flushes
   subnormals to zero and has no vector division or square root, so it gets
   the portable code), else
   portable C that the compiler may vectorise. LSAE_NO_SIMD forces the
   portable code. */
#if !defined(LSAE_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#define LSAE__AVX2 1
#if defined(__AVX512F__)
#define LSAE__AVX512 1
#endif
#include <immintrin.h>
#elif !defined(LSAE_NO_SIMD) && defined(__aarch64__) && defined(__ARM_NEON)
#define LSAE__NEON 1
#include <arm_neon.h>
#endif

/* WebAssembly SIMD128 (clang --target=wasm32-wasi -msimd128): 4-lane
   float vectors for the encoder product and the top-k compares. SIMD128
   has no fused multiply-add (only the relaxed-simd extension does, and its
   rounding is left to the engine), so its kernels multiply, then add, as
   the portable code does without FMA: the same bits as that code. */
#if !defined(LSAE_NO_SIMD) && defined(__wasm_simd128__)
#define LSAE__WASM_SIMD 1
#include <wasm_simd128.h>
#endif

/* Multiply-add for the kernels. With FMA hardware it is one fused operation
   everywhere, so a blocked kernel and the naive loop round the same way;
   without it, a product then a sum. On x86 FMA is part of the vector
   extension, and LSAE_NO_SIMD leaves it out; on AArch64 the scalar fused
   multiply-add (fmadd) is baseline, so the portable code keeps it with
   LSAE_NO_SIMD too and trains to the NEON kernels' bits. */
#if (defined(__FMA__) && !defined(LSAE_NO_SIMD)) || (defined(__aarch64__) && defined(__ARM_FEATURE_FMA))
#define LSAE__FMA(a, b, c) fmaf((a), (b), (c))
#else
#define LSAE__FMA(a, b, c) ((a) * (b) + (c))
#endif

typedef char lsae__check_int32[sizeof(int32_t) == 4 ? 1 : -1];
typedef char lsae__check_float[sizeof(float) == 4 ? 1 : -1];

/* ----------------------------------------------------------------- errors */

static LSAE__THREAD_LOCAL char lsae__err_msg[1024];

static lsae_result lsae__err(lsae_result code, const char *fmt, ...) LSAE__PRINTF(2, 3);
static lsae_result lsae__err(lsae_result code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lsae__vsnprintf(lsae__err_msg, sizeof lsae__err_msg, fmt, ap);
    va_end(ap);
    return code;
}

/* snprintf through the same C99 formatter (for text with %zu in it) */
LSAE__MAYBE_UNUSED static int lsae__snprintf(char *buf, size_t cap, const char *fmt, ...) LSAE__PRINTF(3, 4);
LSAE__MAYBE_UNUSED static int lsae__snprintf(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int w;
    va_start(ap, fmt);
    w = lsae__vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return w;
}

/* Put context in front of the message a failed inner call left (which file,
   which part of it): the message becomes the formatted prefix followed by
   the inner one, and code is returned, as lsae__err does. */
LSAE__MAYBE_UNUSED static lsae_result lsae__err_prefix(lsae_result code, const char *fmt, ...) LSAE__PRINTF(2, 3);
LSAE__MAYBE_UNUSED static lsae_result lsae__err_prefix(lsae_result code, const char *fmt, ...)
{
    char inner[sizeof lsae__err_msg];
    size_t n;
    va_list ap;
    memcpy(inner, lsae__err_msg, sizeof inner);
    inner[sizeof inner - 1] = 0;
    va_start(ap, fmt);
    lsae__vsnprintf(lsae__err_msg, sizeof lsae__err_msg, fmt, ap);
    va_end(ap);
    n = strlen(lsae__err_msg);
    if (n + 1 < sizeof lsae__err_msg) snprintf(lsae__err_msg + n, sizeof lsae__err_msg - n, "%s", inner);
    return code;
}

LSAE_DEF const char *lsae_last_error(void) { return lsae__err_msg; }
LSAE_DEF const char *lsae_version_string(void) { return LSAE_VERSION_STRING; }

LSAE_DEF const char *lsae_result_string(lsae_result r)
{
    switch (r) {
    case LSAE_OK: return "LSAE_OK: success";
    case LSAE_ERROR: return "LSAE_ERROR: error";
    case LSAE_INVALID_ARGS: return "LSAE_INVALID_ARGS: invalid argument";
    case LSAE_OUT_OF_MEMORY: return "LSAE_OUT_OF_MEMORY: out of memory";
    case LSAE_BAD_FILE: return "LSAE_BAD_FILE: malformed file";
    case LSAE_IO_ERROR: return "LSAE_IO_ERROR: input/output error";
    case LSAE_UNSUPPORTED: return "LSAE_UNSUPPORTED: unsupported variant";
    case LSAE_NOT_FOUND: return "LSAE_NOT_FOUND: not found";
    case LSAE_BAD_BATCH: return "LSAE_BAD_BATCH: batch cannot be trained on";
    case LSAE_NOT_FINITE: return "LSAE_NOT_FINITE: non-finite loss, gradient or weight";
    case LSAE_CUDA_ERROR: return "LSAE_CUDA_ERROR: CUDA error";
    case LSAE_TRUNCATED: return "LSAE_TRUNCATED: output truncated, more room needed";
    }
    return "unknown lsae_result";
}

/* ------------------------------------------------------- sizes and memory */

/* a * b without wrapping; 0 on overflow. */
static int lsae__mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > (size_t)-1 / a) return 0;
    *out = a * b;
    return 1;
}

static int lsae__add_size(size_t a, size_t b, size_t *out)
{
    if (b > (size_t)-1 - a) return 0;
    *out = a + b;
    return 1;
}

/* a * b * c bytes, with overflow check */
static int lsae__mul3_size(size_t a, size_t b, size_t c, size_t *out)
{
    size_t t;
    return lsae__mul_size(a, b, &t) && lsae__mul_size(t, c, out);
}

#define LSAE__ALIGN 64

static int lsae__allocator_check(const lsae_allocator *a)
{
    return a == NULL || (a->malloc_fn != NULL && a->free_fn != NULL);
}

static void *lsae__raw_malloc(const lsae_allocator *a, size_t n)
{
    if (a) return a->malloc_fn(n, a->user);
    return LSAE_MALLOC(n, NULL);
}

static void lsae__raw_free(const lsae_allocator *a, void *p)
{
    if (!p) return;
    if (a) a->free_fn(p, a->user);
    else LSAE_FREE(p, NULL);
}

/* 64-byte aligned block on top of the user's allocator: the offset back to
   the raw pointer sits in the byte word before the aligned address. */
static void *lsae__malloc(const lsae_allocator *a, size_t n)
{
    size_t total;
    unsigned char *raw, *p;
    if (n == 0) n = 1;
    if (!lsae__add_size(n, LSAE__ALIGN + sizeof(size_t), &total)) return NULL;
    raw = (unsigned char *)lsae__raw_malloc(a, total);
    if (!raw) return NULL;
    p = raw + sizeof(size_t);
    p += (LSAE__ALIGN - ((uintptr_t)p % LSAE__ALIGN)) % LSAE__ALIGN;
    {
        size_t off = (size_t)(p - raw);
        memcpy(p - sizeof(size_t), &off, sizeof off);
    }
    return p;
}

static void lsae__free(const lsae_allocator *a, void *ptr)
{
    unsigned char *p = (unsigned char *)ptr;
    size_t off;
    if (!p) return;
    memcpy(&off, p - sizeof(size_t), sizeof off);
    lsae__raw_free(a, p - off);
}

/* Allocate count * elem bytes, checked; sets the error message on failure. */
static void *lsae__alloc_array(const lsae_allocator *a, size_t count, size_t elem, const char *what)
{
    size_t n;
    void *p;
    if (!lsae__mul_size(count, elem, &n)) {
        lsae__err(LSAE_OUT_OF_MEMORY, "%s: %zu x %zu bytes overflows size_t", what, count, elem);
        return NULL;
    }
    p = lsae__malloc(a, n);
    if (!p) lsae__err(LSAE_OUT_OF_MEMORY, "out of memory allocating %s (%zu bytes)", what, n);
    return p;
}

static int lsae__num_threads(int requested)
{
#ifdef _OPENMP
    return requested > 0 ? requested : omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}

static int lsae__thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* -------------------------------------------------------------------- RNG */

/* SplitMix64 (Steele, Lea, Flood 2014) used as a counter-based generator:
   element i of stream s draws from mix(seed, s, i), so initialisation can run
   in any order or in parallel and still give the same bits. */
static uint64_t lsae__mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) with 24 random bits, exactly representable in float */
static float lsae__uniform(uint64_t seed, uint64_t stream, uint64_t i)
{
    uint64_t h = lsae__mix64(lsae__mix64(seed ^ lsae__mix64(stream)) + i);
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

/* ----------------------------------------------------------------- config */

LSAE_DEF lsae_config lsae_config_default(size_t d_in)
{
    lsae_config c;
    memset(&c, 0, sizeof c);
    c.d_in = d_in;
    c.num_latents = 0;
    c.expansion_factor = 32;
    c.k = 32;
    c.normalize_decoder = 1;
    c.multi_topk = 0;
    c.sae_type = LSAE_SAE_TOPK;
    c.batchtopk_threshold_beta = 0.999;
    c.matryoshka_form = LSAE_MATRYOSHKA_NESTED;
    c.k_anneal_pct = 0.3;
    c.auxk_alpha = 1.0 / 32.0;
    c.dead_feature_threshold = 10000000u;
    c.lr = 0.0;
    c.lr_warmup_steps = 1000;
    c.lr_schedule = LSAE_LR_LINEAR;
    c.total_steps = 0;
    c.grad_acc_steps = 1;
    c.init_b_dec = 1;
    c.seed = 0;
    c.num_threads = 0;
    c.device = LSAE_DEVICE_DEFAULT;
    return c;
}

LSAE_DEF size_t lsae_config_num_latents(const lsae_config *cfg)
{
    size_t L;
    if (!cfg) return 0;
    if (cfg->num_latents) return cfg->num_latents;
    if (!lsae__mul_size(cfg->d_in, cfg->expansion_factor, &L)) return 0;
    return L;
}

/* The SAE type's settings (docs/math.md, section 3): one line saying what is
   wrong, in the words of latent-sae's flags. */
static lsae_result lsae__config_validate_type(const lsae_config *cfg, size_t L)
{
    size_t i, nlev = cfg->matryoshka_levels;
    if (cfg->sae_type != LSAE_SAE_TOPK && cfg->sae_type != LSAE_SAE_BATCHTOPK && cfg->sae_type != LSAE_SAE_MATRYOSHKA)
        return lsae__err(LSAE_INVALID_ARGS, "sae_type %d is not topk (0), batchtopk (1) or matryoshka (2)", (int)cfg->sae_type);
    if (!(cfg->batchtopk_threshold_beta >= 0.0 && cfg->batchtopk_threshold_beta < 1.0))
        return lsae__err(LSAE_INVALID_ARGS, "batchtopk_threshold_beta = %g: must be in [0, 1) (latent-sae's default is 0.999)", cfg->batchtopk_threshold_beta);
    if (cfg->multi_topk && cfg->sae_type != LSAE_SAE_TOPK)
        return lsae__err(LSAE_INVALID_ARGS, "multi_topk is a TopK option; it does not combine with sae_type %s", cfg->sae_type == LSAE_SAE_BATCHTOPK ? "batchtopk" : "matryoshka");
    if (cfg->k_anneal) {
        if (cfg->k_anneal_start && (cfg->k_anneal_start < cfg->k || cfg->k_anneal_start > L))
            return lsae__err(LSAE_INVALID_ARGS, "k_anneal_start = %zu: must lie between k = %zu and L = %zu (0 means min(4k, L))", cfg->k_anneal_start, cfg->k, L);
        if (!(cfg->k_anneal_pct >= 0.0 && cfg->k_anneal_pct <= 1.0))
            return lsae__err(LSAE_INVALID_ARGS, "k_anneal_pct = %g: must be a fraction of the run in [0, 1]", cfg->k_anneal_pct);
    }
    if (cfg->sae_type != LSAE_SAE_MATRYOSHKA) {
        if (nlev) return lsae__err(LSAE_INVALID_ARGS, "matryoshka sizes are set but sae_type is not matryoshka");
        return LSAE_OK;
    }
    if (cfg->matryoshka_form != LSAE_MATRYOSHKA_NESTED && cfg->matryoshka_form != LSAE_MATRYOSHKA_PER_LEVEL)
        return lsae__err(LSAE_INVALID_ARGS, "matryoshka_form %d is not nested (0) or per-level (1)", (int)cfg->matryoshka_form);
    if (nlev == 0 || nlev > LSAE_MAX_LEVELS)
        return lsae__err(LSAE_INVALID_ARGS, "matryoshka needs 1 to %d levels (matryoshka_sizes), got %zu", LSAE_MAX_LEVELS, nlev);
    for (i = 0; i < nlev; ++i) {
        const double w = cfg->matryoshka_loss_weights[i];
        if (cfg->matryoshka_sizes[i] == 0 || (i && cfg->matryoshka_sizes[i] <= cfg->matryoshka_sizes[i - 1]))
            return lsae__err(LSAE_INVALID_ARGS, "matryoshka_sizes must increase and be > 0: size %zu of level %zu follows %zu", cfg->matryoshka_sizes[i], i + 1, i ? cfg->matryoshka_sizes[i - 1] : (size_t)0);
        if (!(w >= 0.0) || !isfinite(w))
            return lsae__err(LSAE_INVALID_ARGS, "matryoshka_loss_weights[%zu] = %g: weights must be finite and >= 0", i, w);
        if (cfg->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL &&
            (cfg->matryoshka_ks[i] == 0 || cfg->matryoshka_ks[i] > cfg->matryoshka_sizes[i]))
            return lsae__err(LSAE_INVALID_ARGS, "matryoshka_ks[%zu] = %zu does not fit its level of %zu latents (need 1 <= k_i <= n_i)", i, cfg->matryoshka_ks[i], cfg->matryoshka_sizes[i]);
    }
    for (i = nlev; i < LSAE_MAX_LEVELS; ++i)
        if (cfg->matryoshka_sizes[i] || cfg->matryoshka_ks[i] || cfg->matryoshka_loss_weights[i] != 0.0)
            return lsae__err(LSAE_INVALID_ARGS, "matryoshka level %zu is set past matryoshka_levels = %zu", i + 1, nlev);
    if (cfg->matryoshka_sizes[nlev - 1] != L)
        return lsae__err(LSAE_INVALID_ARGS, "the last matryoshka size %zu must equal the number of latents L = %zu", cfg->matryoshka_sizes[nlev - 1], L);
    if (cfg->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL && cfg->auxk_alpha != 0.0)
        return lsae__err(LSAE_INVALID_ARGS, "the per-level matryoshka form has no AuxK term (as latent-sae): set auxk_alpha to 0");
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_config_validate(const lsae_config *cfg)
{
    size_t L, n;
    if (!cfg) return lsae__err(LSAE_INVALID_ARGS, "config is NULL");
    if (cfg->d_in == 0) return lsae__err(LSAE_INVALID_ARGS, "d_in is 0: set it to the width of your embeddings (768 for nomic-embed-text-v1.5, 384 for all-MiniLM-L6-v2)");
    if (cfg->num_latents == 0 && cfg->expansion_factor == 0)
        return lsae__err(LSAE_INVALID_ARGS, "num_latents and expansion_factor are both 0: set one of them");
    if (cfg->num_latents == 0 && !lsae__mul_size(cfg->d_in, cfg->expansion_factor, &L))
        return lsae__err(LSAE_INVALID_ARGS, "d_in %zu x expansion_factor %zu overflows", cfg->d_in, cfg->expansion_factor);
    L = lsae_config_num_latents(cfg);
    if (L > (size_t)INT32_MAX || cfg->d_in > (size_t)INT32_MAX)
        return lsae__err(LSAE_INVALID_ARGS, "num_latents %zu or d_in %zu exceeds 2^31 - 1", L, cfg->d_in);
    if (!lsae__mul_size(L, cfg->d_in, &n) || !lsae__mul_size(n, 2 * sizeof(float), &n))
        return lsae__err(LSAE_INVALID_ARGS, "num_latents %zu x d_in %zu floats do not fit in memory addresses", L, cfg->d_in);
    if (cfg->k == 0) return lsae__err(LSAE_INVALID_ARGS, "k is 0: at least one latent must be active");
    if (cfg->k > L) return lsae__err(LSAE_INVALID_ARGS, "k = %zu is larger than the number of latents L = %zu", cfg->k, L);
    if (!(cfg->auxk_alpha >= 0.0) || !isfinite(cfg->auxk_alpha))
        return lsae__err(LSAE_INVALID_ARGS, "auxk_alpha = %g: must be a finite number >= 0", cfg->auxk_alpha);
    if (!(cfg->lr >= 0.0) || !isfinite(cfg->lr))
        return lsae__err(LSAE_INVALID_ARGS, "lr = %g: must be finite and >= 0 (0 picks 2e-4 / sqrt(L / 2^14))", cfg->lr);
    if (cfg->grad_acc_steps == 0) return lsae__err(LSAE_INVALID_ARGS, "grad_acc_steps is 0: use 1 for no accumulation");
    if (cfg->lr_schedule != LSAE_LR_LINEAR && cfg->lr_schedule != LSAE_LR_COSINE && cfg->lr_schedule != LSAE_LR_CONSTANT)
        return lsae__err(LSAE_INVALID_ARGS, "lr_schedule %d is not linear (0), cosine (1) or constant (2)", (int)cfg->lr_schedule);
    if (cfg->num_threads < 0) return lsae__err(LSAE_INVALID_ARGS, "num_threads = %d: use 0 for OpenMP's default", cfg->num_threads);
    if (cfg->device != LSAE_DEVICE_DEFAULT && cfg->device != LSAE_DEVICE_CPU && cfg->device != LSAE_DEVICE_CUDA)
        return lsae__err(LSAE_INVALID_ARGS, "device %d is not one of LSAE_DEVICE_DEFAULT, _CPU, _CUDA", (int)cfg->device);
#ifndef LATENTSAE_CUDA
    if (cfg->device == LSAE_DEVICE_CUDA)
        return lsae__err(LSAE_UNSUPPORTED, "device CUDA asked for, but this program was built without LATENTSAE_CUDA and latentsae_cuda.cu");
#endif
    if (cfg->precision != LSAE_PRECISION_DEFAULT && cfg->precision != LSAE_PRECISION_FP32 &&
        cfg->precision != LSAE_PRECISION_TF32 && cfg->precision != LSAE_PRECISION_BF16)
        return lsae__err(LSAE_INVALID_ARGS, "precision %d is not one of LSAE_PRECISION_DEFAULT, _FP32, _TF32, _BF16", (int)cfg->precision);
#ifdef LATENTSAE_CUDA
    if (cfg->device == LSAE_DEVICE_CPU && cfg->precision != LSAE_PRECISION_DEFAULT && cfg->precision != LSAE_PRECISION_FP32)
#else
    if (cfg->precision != LSAE_PRECISION_DEFAULT && cfg->precision != LSAE_PRECISION_FP32)
#endif
        return lsae__err(LSAE_INVALID_ARGS, "precision TF32 or BF16 asked for on the CPU, which computes in float32: use device CUDA or precision FP32");
    if (cfg->cuda_device < 0) return lsae__err(LSAE_INVALID_ARGS, "cuda_device = %d: GPU ordinals start at 0", cfg->cuda_device);
    return lsae__config_validate_type(cfg, L);
}

LSAE_DEF double lsae_config_lr(const lsae_config *cfg)
{
    double L;
    if (!cfg) return 0.0;
    if (cfg->lr > 0.0) return cfg->lr;
    /* latent-sae / sparsify: 2e-4 scaled by 1/sqrt(L / 2^14) */
    L = (double)lsae_config_num_latents(cfg);
    return L > 0 ? 2e-4 / sqrt(L / 16384.0) : 0.0;
}

LSAE_DEF double lsae_lr_factor(const lsae_config *cfg, uint64_t s)
{
    uint64_t S = cfg->total_steps;
    uint64_t W = cfg->lr_warmup_steps;
    if (S && W > S) W = S;
    if (s < W) return (double)s / (double)W;
    if (cfg->lr_schedule == LSAE_LR_CONSTANT || S == 0) return 1.0;
    if (s >= S) return 0.0;
    if (cfg->lr_schedule == LSAE_LR_COSINE)
        return 0.5 * (1.0 + cos(3.14159265358979323846 * (double)(s - W) / (double)(S - W)));
    return (double)(S - s) / (double)(S - W);
}

/* ------------------------------------------------------------------ model */

/* The four parameter tensors live in one slab, each 64-byte aligned, in the
   order of LSAE__W_ENC ... LSAE__B_DEC (declared with the private CUDA calls
   above, since latentsae_cuda.cu uses the same order); gradients and Adam
   moments use slabs of the same layout, so the optimizer and clipping are
   single passes and one copy moves everything. */

typedef struct lsae__layout {
    size_t offset[LSAE__NUM_TENSORS]; /* in floats */
    size_t count[LSAE__NUM_TENSORS];  /* in floats */
    size_t total;                     /* floats, padding included */
} lsae__layout;

static size_t lsae__round16(size_t n) { return (n + 15u) & ~(size_t)15u; }

static int lsae__make_layout(size_t d, size_t L, lsae__layout *lay)
{
    size_t Ld, at = 0;
    int i;
    if (!lsae__mul_size(L, d, &Ld) || Ld > ((size_t)-1) / 8) return 0;
    lay->count[LSAE__W_ENC] = Ld;
    lay->count[LSAE__B_ENC] = L;
    lay->count[LSAE__W_DEC] = Ld;
    lay->count[LSAE__B_DEC] = d;
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
        lay->offset[i] = at;
        at += lsae__round16(lay->count[i]);
    }
    lay->total = at;
    return 1;
}

struct lsae_model {
    lsae_config cfg;           /* num_latents resolved */
    size_t d, L, k;
    size_t shard_l0, shard_L;  /* a shard (lsae_model_create_shard): latents [shard_l0, shard_l0 + L) of shard_L; shard_L = 0: a full model */
    float batchtopk_threshold;  /* BatchTopK's inference threshold theta (docs/math.md, 3.1); 0 until trained */
    lsae_allocator alloc_copy;
    const lsae_allocator *alloc; /* &alloc_copy, or NULL for LSAE_MALLOC */
    lsae__layout lay;
    float *params;             /* the slab */
    float *W_enc, *b_enc, *W_dec, *b_dec;
    /* The int8 pre-pass of the CPU encode (lsae_model_set_encode_prepass):
       prepass says whether encode may use it; lp is the kept int8 copy of
       W_enc, current while lp_gen == wgen; every change of W_enc adds 1 to
       wgen (set_weights, the optimizer step, a copy back from the GPU) */
    int prepass;
    struct lsae__lp *lp;
    unsigned long wgen, lp_gen;
#ifdef LATENTSAE_CUDA
    void *cuda;                /* device copy (latentsae_cuda.cu), or NULL on the CPU; params is then its host staging */
#endif
};

static void lsae__lp_release(const lsae_allocator *a, struct lsae__lp *q);

static const char *lsae__tensor_names[LSAE__NUM_TENSORS] = { "encoder.weight", "encoder.bias", "W_dec", "b_dec" };

/* w <- w / (||w|| + FLT_EPSILON), as latent-sae's set_decoder_norm_to_unit_norm */
static void lsae__unit_rows(float *W, size_t rows, size_t d, int nthreads)
{
    ptrdiff_t r;
    (void)nthreads;
    LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
    for (r = 0; r < (ptrdiff_t)rows; ++r) {
        float *w = W + (size_t)r * d;
        double ss = 0.0;
        float scale;
        size_t j;
        for (j = 0; j < d; ++j) ss += (double)w[j] * w[j];
        scale = (float)(1.0 / (sqrt(ss) + FLT_EPSILON));
        for (j = 0; j < d; ++j) w[j] *= scale;
    }
}

static lsae_result lsae__model_alloc_rows(const lsae_config *cfg, const lsae_allocator *alloc, size_t l0, size_t l1, lsae_model **out);
LSAE__MAYBE_UNUSED static lsae_result lsae__model_alloc(const lsae_config *cfg, const lsae_allocator *alloc, lsae_model **out)
{
    return lsae__model_alloc_rows(cfg, alloc, 0, 0, out);
}

/* A model of the latents [l0, l1) of cfg's L (l1 = 0: all of them) */
static lsae_result lsae__model_alloc_rows(const lsae_config *cfg, const lsae_allocator *alloc, size_t l0, size_t l1, lsae_model **out)
{
    lsae_model *m;
    lsae_result r;
    *out = NULL;
    if ((r = lsae_config_validate(cfg)) != LSAE_OK) return r;
    if (!lsae__allocator_check(alloc))
        return lsae__err(LSAE_INVALID_ARGS, "allocator given with a NULL malloc_fn or free_fn");
    m = (lsae_model *)lsae__malloc(alloc, sizeof *m);
    if (!m) return lsae__err(LSAE_OUT_OF_MEMORY, "out of memory allocating a model");
    memset(m, 0, sizeof *m);
    if (alloc) { m->alloc_copy = *alloc; m->alloc = &m->alloc_copy; }
    m->cfg = *cfg;
    m->prepass = 1;
    m->d = cfg->d_in;
    m->L = lsae_config_num_latents(cfg);
    m->k = cfg->k;
    m->cfg.num_latents = m->L;
    if (m->L % m->d == 0) m->cfg.expansion_factor = m->L / m->d;
    if (l1 && (l0 >= l1 || l1 > m->L)) {
        lsae__free(alloc, m);
        return lsae__err(LSAE_INVALID_ARGS, "latents [%zu, %zu) are not a range of the model's %zu", l0, l1, m->L);
    }
    if (l1 && l1 - l0 < m->L) {
        /* a shard: cfg (num_latents, k) stays the full model's */
        m->shard_l0 = l0;
        m->shard_L = m->L;
        m->L = l1 - l0;
    }
    if (!lsae__make_layout(m->d, m->L, &m->lay)) {
        lsae__free(alloc, m);
        return lsae__err(LSAE_INVALID_ARGS, "model of %zu x %zu is too large to address", m->L, m->d);
    }
    m->params = (float *)lsae__alloc_array(m->alloc, m->lay.total, sizeof(float), "model weights");
    if (!m->params) {
        lsae__free(alloc, m);
        return LSAE_OUT_OF_MEMORY;
    }
    memset(m->params, 0, m->lay.total * sizeof(float));
    m->W_enc = m->params + m->lay.offset[LSAE__W_ENC];
    m->b_enc = m->params + m->lay.offset[LSAE__B_ENC];
    m->W_dec = m->params + m->lay.offset[LSAE__W_DEC];
    m->b_dec = m->params + m->lay.offset[LSAE__B_DEC];
    *out = m;
    return LSAE_OK;
}

static lsae_result lsae__model_create_rows(const lsae_config *cfg, const lsae_allocator *alloc, size_t l0, size_t l1, lsae_model **out)
{
    lsae_model *m;
    lsae_result r;
    ptrdiff_t row;
    float bound;
    int nt;
    if (!out) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_create: out is NULL");
    *out = NULL;
    if ((r = lsae__model_alloc_rows(cfg, alloc, l0, l1, &m)) != LSAE_OK) return r;
    nt = lsae__num_threads(m->cfg.num_threads);
    /* torch nn.Linear default: kaiming_uniform(a = sqrt 5) = U(-1/sqrt(d), 1/sqrt(d));
       each element drawn from its position in the full W_enc, so a shard
       holds exactly the full model's rows */
    bound = (float)(1.0 / sqrt((double)m->d));
    LSAE__OMP(parallel for schedule(static) num_threads(nt))
    for (row = 0; row < (ptrdiff_t)m->L; ++row) {
        size_t j, base = (size_t)row * m->d, gbase = ((size_t)row + m->shard_l0) * m->d;
        for (j = 0; j < m->d; ++j)
            m->W_enc[base + j] = (2.0f * lsae__uniform(m->cfg.seed, 1, gbase + j) - 1.0f) * bound;
    }
    /* b_enc = 0 (latent-sae zeroes nn.Linear's bias); b_dec = 0 until training */
    memcpy(m->W_dec, m->W_enc, m->lay.count[LSAE__W_DEC] * sizeof(float));
    if (m->cfg.normalize_decoder) lsae__unit_rows(m->W_dec, m->L, m->d, nt);
#ifdef LATENTSAE_CUDA
    if (!m->shard_L && (r = lsae_model_to_device(m, m->cfg.device)) != LSAE_OK) { lsae_model_free(m); return r; }
#endif
    *out = m;
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_create(const lsae_config *cfg, const lsae_allocator *alloc, lsae_model **out)
{
    return lsae__model_create_rows(cfg, alloc, 0, 0, out);
}

LSAE_DEF void lsae_shard_range(size_t L, int rank, int S, size_t *l0, size_t *l1)
{
    /* L r / S without overflowing L r: q = L / S, rem = L % S */
    const size_t q = S > 0 ? L / (size_t)S : 0, rem = S > 0 ? L % (size_t)S : 0;
    if (S < 1 || rank < 0 || rank >= S) { *l0 = *l1 = 0; return; }
    *l0 = q * (size_t)rank + rem * (size_t)rank / (size_t)S;
    *l1 = q * ((size_t)rank + 1) + rem * ((size_t)rank + 1) / (size_t)S;
}

LSAE_DEF lsae_result lsae_model_create_shard(const lsae_config *cfg, const lsae_allocator *alloc, size_t l0, size_t l1, lsae_model **out)
{
    if (!out) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_create_shard: out is NULL");
    *out = NULL;
    if (!cfg) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_create_shard: cfg is NULL");
    if (l1 == 0) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_create_shard: the range [%zu, %zu) is empty", l0, l1);
#ifdef LATENTSAE_CUDA
    if (cfg->device == LSAE_DEVICE_CUDA && !(l0 == 0 && l1 == lsae_config_num_latents(cfg)))
        return lsae__err(LSAE_UNSUPPORTED, "latent-sharded models live on the CPU in this version: use device cpu, "
                         "or train on GPUs data-parallel (lsae_trainer_set_comm; lsae train without --shard-latents), each rank holding the whole model");
#endif
    return lsae__model_create_rows(cfg, alloc, l0, l1, out);
}

LSAE_DEF void lsae_model_shard_info(const lsae_model *m, size_t *l0, size_t *l1, size_t *L)
{
    if (l0) *l0 = m ? m->shard_l0 : 0;
    if (l1) *l1 = m ? m->shard_l0 + m->L : 0;
    if (L) *L = m ? (m->shard_L ? m->shard_L : m->L) : 0;
}

LSAE_DEF lsae_result lsae_model_shard_of(const lsae_model *full, size_t l0, size_t l1, lsae_model **out)
{
    lsae_model *m;
    lsae_result r;
    const lsae_allocator *a;
    size_t d;
    if (!out) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_shard_of: out is NULL");
    *out = NULL;
    if (!full || full->shard_L) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_shard_of: needs a full model (not NULL, not itself a shard)");
#ifdef LATENTSAE_CUDA
    if (full->cuda) return lsae__err(LSAE_UNSUPPORTED, "lsae_model_shard_of: the model is on the GPU; shards live on the CPU");
#endif
    if (l1 == 0) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_shard_of: the range [%zu, %zu) is empty", l0, l1);
    a = full->alloc;
    if ((r = lsae__model_alloc_rows(&full->cfg, a, l0, l1, &m)) != LSAE_OK) return r;
    d = m->d;
    m->batchtopk_threshold = full->batchtopk_threshold;
    m->prepass = full->prepass;
    memcpy(m->W_enc, full->W_enc + l0 * d, m->L * d * sizeof(float));
    memcpy(m->b_enc, full->b_enc + l0, m->L * sizeof(float));
    memcpy(m->W_dec, full->W_dec + l0 * d, m->L * d * sizeof(float));
    memcpy(m->b_dec, full->b_dec, d * sizeof(float));
    *out = m;
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_set_shard_rows(lsae_model *full, size_t l0, size_t n, const float *W_enc,
                                               const float *b_enc, const float *W_dec, const float *b_dec)
{
    size_t d;
    if (!full || full->shard_L) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_set_shard_rows: needs a full model (not NULL, not itself a shard)");
#ifdef LATENTSAE_CUDA
    if (full->cuda) return lsae__err(LSAE_UNSUPPORTED, "lsae_model_set_shard_rows: the model is on the GPU");
#endif
    if (l0 > full->L || n > full->L - l0) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_set_shard_rows: rows [%zu, %zu + %zu) are not in the model's %zu", l0, l0, n, full->L);
    d = full->d;
    if (W_enc) memcpy(full->W_enc + l0 * d, W_enc, n * d * sizeof(float));
    if (b_enc) memcpy(full->b_enc + l0, b_enc, n * sizeof(float));
    if (W_dec) memcpy(full->W_dec + l0 * d, W_dec, n * d * sizeof(float));
    if (b_dec) memcpy(full->b_dec, b_dec, d * sizeof(float));
    full->wgen++;
    return LSAE_OK;
}

LSAE_DEF void lsae_model_free(lsae_model *m)
{
    const lsae_allocator *a;
    lsae_allocator copy;
    if (!m) return;
#ifdef LATENTSAE_CUDA
    if (m->cuda) lsae__cuda_model_free(m->cuda);
#endif
    copy = m->alloc_copy;
    a = m->alloc ? &copy : NULL;
    lsae__lp_release(a, m->lp);
    lsae__free(a, m->params);
    lsae__free(a, m);
}

LSAE_DEF const lsae_config *lsae_model_config(const lsae_model *m) { return m ? &m->cfg : NULL; }
LSAE_DEF size_t lsae_model_d_in(const lsae_model *m) { return m ? m->d : 0; }
LSAE_DEF size_t lsae_model_num_latents(const lsae_model *m) { return m ? m->L : 0; }
LSAE_DEF size_t lsae_model_k(const lsae_model *m) { return m ? m->k : 0; }
LSAE_DEF float lsae_model_batchtopk_threshold(const lsae_model *m) { return m ? m->batchtopk_threshold : 0.0f; }

/* The type keeps a threshold theta, saved as the batchtopk_threshold tensor
   (latent-sae registers the buffer for batchtopk and for matryoshka with
   matryoshka_use_batchtopk; docs/math.md 3.5). */
static int lsae__has_threshold(const lsae_config *c)
{
    return c->sae_type == LSAE_SAE_BATCHTOPK || (c->sae_type == LSAE_SAE_MATRYOSHKA && c->matryoshka_use_batchtopk);
}

/* The type's inference applies theta: batchtopk, and the nested matryoshka
   form with a batch-wide selection. The per-level form encodes its best
   k_m with no threshold, as latent-sae's Sae.encode (docs/math.md 3.3). */
static int lsae__encodes_threshold(const lsae_config *c)
{
    return c->sae_type == LSAE_SAE_BATCHTOPK ||
           (c->sae_type == LSAE_SAE_MATRYOSHKA && c->matryoshka_use_batchtopk && c->matryoshka_form == LSAE_MATRYOSHKA_NESTED);
}

static const char *lsae__sae_type_name(const lsae_config *c)
{
    if (c->sae_type == LSAE_SAE_BATCHTOPK) return "batchtopk";
    if (c->sae_type == LSAE_SAE_MATRYOSHKA) return c->matryoshka_form == LSAE_MATRYOSHKA_NESTED ? "matryoshka (nested)" : "matryoshka (per-level)";
    return "topk";
}

LSAE_DEF lsae_result lsae_model_set_batchtopk_threshold(lsae_model *m, float theta)
{
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_set_batchtopk_threshold: model is NULL");
    if (!lsae__has_threshold(&m->cfg))
        return lsae__err(LSAE_INVALID_ARGS, "lsae_model_set_batchtopk_threshold: a %s model has no BatchTopK threshold", lsae__sae_type_name(&m->cfg));
    if (!(isfinite(theta) && theta >= 0.0f))
        return lsae__err(LSAE_INVALID_ARGS, "lsae_model_set_batchtopk_threshold: theta = %g; it must be finite and >= 0", (double)theta);
    m->batchtopk_threshold = theta;
    return LSAE_OK;
}

LSAE_DEF size_t lsae_model_encode_k(const lsae_model *m)
{
    if (!m) return 0;
    if (m->cfg.sae_type == LSAE_SAE_MATRYOSHKA && m->cfg.matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL && m->cfg.matryoshka_levels)
        return m->cfg.matryoshka_ks[m->cfg.matryoshka_levels - 1];
    return m->k;
}
LSAE_DEF void lsae_model_set_num_threads(lsae_model *m, int n) { if (m && n >= 0) m->cfg.num_threads = n; }

LSAE_DEF lsae_result lsae_model_get_weights(const lsae_model *m, float *W_enc, float *b_enc, float *W_dec, float *b_dec)
{
    float *dst[LSAE__NUM_TENSORS];
    int i;
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_get_weights: model is NULL");
#ifdef LATENTSAE_CUDA
    if (m->cuda) return lsae__cuda_get_weights(m->cuda, W_enc, b_enc, W_dec, b_dec);
#endif
    dst[0] = W_enc; dst[1] = b_enc; dst[2] = W_dec; dst[3] = b_dec;
    for (i = 0; i < LSAE__NUM_TENSORS; ++i)
        if (dst[i]) memcpy(dst[i], m->params + m->lay.offset[i], m->lay.count[i] * sizeof(float));
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_set_weights(lsae_model *m, const float *W_enc, const float *b_enc, const float *W_dec, const float *b_dec)
{
    const float *src[LSAE__NUM_TENSORS];
    int i;
    size_t j;
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_set_weights: model is NULL");
#ifdef LATENTSAE_CUDA
    if (m->cuda) return lsae__cuda_set_weights(m->cuda, W_enc, b_enc, W_dec, b_dec);
#endif
    src[0] = W_enc; src[1] = b_enc; src[2] = W_dec; src[3] = b_dec;
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
        if (!src[i]) continue;
        for (j = 0; j < m->lay.count[i]; ++j)
            if (!isfinite(src[i][j]))
                return lsae__err(LSAE_INVALID_ARGS, "%s[%zu] is %g: weights must be finite; nothing was changed",
                                 lsae__tensor_names[i], j, (double)src[i][j]);
    }
    for (i = 0; i < LSAE__NUM_TENSORS; ++i)
        if (src[i]) memcpy(m->params + m->lay.offset[i], src[i], m->lay.count[i] * sizeof(float));
    m->wgen++; /* the int8 copy of W_enc is stale */
    return LSAE_OK;
}

/* ---------------------------------------------------------------- devices */

/* With LATENTSAE_CUDA the model's weights live on the GPU (m->cuda, made by
   latentsae_cuda.cu) and m->params is only the host staging the file calls
   read and write; every public model and trainer call checks m->cuda /
   t->cuda first and hands over to the .cu file. */

#ifdef LATENTSAE_CUDA
/* latentsae_cuda.cu reports its failures through here */
void lsae__cuda_set_error(const char *msg) { lsae__err(LSAE_CUDA_ERROR, "%s", msg ? msg : ""); }
#endif

LSAE_DEF lsae_result lsae_backend_available(lsae_device device)
{
    if (device == LSAE_DEVICE_CPU || device == LSAE_DEVICE_DEFAULT) return LSAE_OK;
    if (device != LSAE_DEVICE_CUDA) return lsae__err(LSAE_INVALID_ARGS, "device %d is not one of LSAE_DEVICE_DEFAULT, _CPU, _CUDA", (int)device);
#ifdef LATENTSAE_CUDA
    return lsae__cuda_available(0);
#else
    return lsae__err(LSAE_UNSUPPORTED, "this program was built without LATENTSAE_CUDA and latentsae_cuda.cu");
#endif
}

/* A shard (lsae_model_create_shard) holds some of the latents: what needs
   all of them is refused with a message naming the way out. */
#define LSAE__REFUSE_SHARD(m, what) \
    do { if ((m) && (m)->shard_L) return lsae__err(LSAE_UNSUPPORTED, "%s: the model holds latents [%zu, %zu) of %zu (a latent shard); gather the shards into a full model first", \
                                                   what, (m)->shard_l0, (m)->shard_l0 + (m)->L, (m)->shard_L); } while (0)

LSAE_DEF lsae_result lsae_model_to_device(lsae_model *m, lsae_device device)
{
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_to_device: model is NULL");
    if (device == LSAE_DEVICE_CUDA) LSAE__REFUSE_SHARD(m, "lsae_model_to_device");
    if (device != LSAE_DEVICE_CPU && device != LSAE_DEVICE_DEFAULT && device != LSAE_DEVICE_CUDA)
        return lsae__err(LSAE_INVALID_ARGS, "device %d is not one of LSAE_DEVICE_DEFAULT, _CPU, _CUDA", (int)device);
#ifdef LATENTSAE_CUDA
    {
        lsae_result r;
        const int fast = m->cfg.precision == LSAE_PRECISION_TF32 || m->cfg.precision == LSAE_PRECISION_BF16;
        /* DEFAULT is CUDA when a device answers; the CPU otherwise, unless the
           config asked for a precision only CUDA has */
        if (device == LSAE_DEVICE_DEFAULT)
            device = (lsae__cuda_available(m->cfg.cuda_device) == LSAE_OK || fast) ? LSAE_DEVICE_CUDA : LSAE_DEVICE_CPU;
        if (device == LSAE_DEVICE_CUDA && !m->cuda) {
            if ((r = lsae__cuda_model_new(&m->cuda, &m->cfg, m->params, m->lay.offset)) != LSAE_OK) { m->cuda = NULL; return r; }
        } else if (device == LSAE_DEVICE_CPU && m->cuda) {
            if (fast) return lsae__err(LSAE_INVALID_ARGS, "the model's precision is TF32 or BF16, which the CPU does not have: set precision FP32 first");
            if (lsae__cuda_model_trainers(m->cuda) > 0) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_to_device: the model has a trainer on the GPU; free it first");
            if ((r = lsae__cuda_model_download(m->cuda, m->params)) != LSAE_OK) return r;
            m->wgen++; /* trained on the GPU: the int8 copy of W_enc is stale */
            lsae__cuda_model_free(m->cuda);
            m->cuda = NULL;
        }
    }
#else
    if (device == LSAE_DEVICE_CUDA)
        return lsae__err(LSAE_UNSUPPORTED, "device CUDA asked for, but this program was built without LATENTSAE_CUDA and latentsae_cuda.cu");
#endif
    m->cfg.device = device == LSAE_DEVICE_CUDA ? LSAE_DEVICE_CUDA : LSAE_DEVICE_CPU;
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_set_precision(lsae_model *m, lsae_precision p)
{
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_set_precision: model is NULL");
    if (p != LSAE_PRECISION_DEFAULT && p != LSAE_PRECISION_FP32 && p != LSAE_PRECISION_TF32 && p != LSAE_PRECISION_BF16)
        return lsae__err(LSAE_INVALID_ARGS, "precision %d is not one of LSAE_PRECISION_DEFAULT, _FP32, _TF32, _BF16", (int)p);
#ifdef LATENTSAE_CUDA
    if (m->cuda) {
        lsae_result r = lsae__cuda_set_precision(m->cuda, p);
        if (r == LSAE_OK) m->cfg.precision = p;
        return r;
    }
#endif
    if (p != LSAE_PRECISION_DEFAULT && p != LSAE_PRECISION_FP32)
        return lsae__err(LSAE_INVALID_ARGS, "precision TF32 or BF16 asked for on the CPU, which computes in float32");
    m->cfg.precision = p;
    return LSAE_OK;
}

/* ------------------------------------------------------------------ GEMM */

/* The encoder product pre[r, l] = sum_p xc[r, p] W_enc[l, p]: both operands
   are row-major with the d axis contiguous (C = A B^T).

   Blocking (after BLIS, Van Zee and van de Geijn 2015, and Goto and van de
   Geijn 2008): W_enc is cut into tiles of LSAE__NT = 64 latents. A thread
   packs one tile p-major, P[p][j] = W_enc[l0 + j][p] (d x 64 floats: 192 KiB
   at d = 768, which stays in the core's L2), then sweeps every row of the
   batch over it, LSAE__MR rows at a time. The micro-kernel keeps an
   MR x 64 block of C in registers, and for each p loads the 64 floats of
   P[p] (4 zmm or 8 ymm) and broadcasts one float of each row: MR x 64 FMAs
   for 64 + MR loads. With AVX-512 MR = 6 uses 24 of the 32 zmm registers
   as accumulators; with AVX2 the tile is done as 4 panels of 16 latents,
   6 x 16 using 12 of the 16 ymm registers, each panel packed whole
   (LSAE__PIDX); with NEON likewise 4 panels,
   6 x 16 in 24 of the 32 q registers. The tile is packed once and used
   by every row of the batch, so the packing (a transpose) is amortised over
   B x 2 FLOPs per packed float.

   Every output element is one chain of fused multiply-adds over p = 0, 1,
   ..., K - 1, in that order, whatever the kernel, tile, row block or thread
   that computes it: the SIMD kernels, the portable kernel (with hardware
   FMA) and the naive loop (tests/test_internals.h) give the same bits, and
   results do not depend on the thread count. */
#define LSAE__NT 64
#if defined(LSAE__AVX2) || defined(LSAE__NEON)
#define LSAE__MR 6
#else
#define LSAE__MR 4
#endif
#define LSAE__NR 16

/* Where P[p][j] of a packed tile lies. AVX-512 reads a whole row of 64
   latents a step. The 16-latent panels of AVX2 are each stored whole,
   K x 16 contiguous floats (panel j / 16 after the others), so a panel's
   sweep over p reads consecutive cache lines instead of one line in four:
   the full product at 512 x 24,576 x 768 (bench gemm, an -mavx2 -mfma
   build on a 2-core AVX-512 Xeon standing in for an AVX2 machine, against
   OpenBLAS's Haswell kernels) went from 0.87-0.90 of OpenBLAS's rate to
   0.96-1.07, 5 alternated runs each. NEON keeps the row layout (not
   measured on an ARM core). The bits are the same: only where the floats
   sit changes, not the chain over p. */
#if defined(LSAE__AVX2) && !defined(LSAE__AVX512)
#define LSAE__PANELS 1
#define LSAE__PIDX(p, j, K) (((j) / LSAE__NR) * (K) * LSAE__NR + (p) * LSAE__NR + (j) % LSAE__NR)
#define LSAE__PSTEP LSAE__NR
#else
#define LSAE__PIDX(p, j, K) ((p) * LSAE__NT + (j))
#define LSAE__PSTEP LSAE__NT
#endif

/* P[p * NT + j] = W[(l0 + j) * K + p] for j < nt; zero for nt <= j < NT.
   With AVX the bulk goes in 8 x 8 blocks transposed in registers (three
   rounds of shuffles, the classic unpack / shuffle / permute2f128
   sequence), with SIMD128 in 4 x 4 blocks: a scalar transpose writes each
   float to a different cache line and costs a third of the product's
   time; this costs a few percent. */
static void lsae__pack_tile(float *P, const float *W, size_t K, size_t l0, size_t nt)
{
    size_t j = 0, p;
#if defined(LSAE__AVX2)
    for (; j + 8 <= nt; j += 8) {
        const float *w = W + (l0 + j) * K;
        for (p = 0; p + 8 <= K; p += 8) {
            __m256 r0 = _mm256_loadu_ps(w + p), r1 = _mm256_loadu_ps(w + K + p);
            __m256 r2 = _mm256_loadu_ps(w + 2 * K + p), r3 = _mm256_loadu_ps(w + 3 * K + p);
            __m256 r4 = _mm256_loadu_ps(w + 4 * K + p), r5 = _mm256_loadu_ps(w + 5 * K + p);
            __m256 r6 = _mm256_loadu_ps(w + 6 * K + p), r7 = _mm256_loadu_ps(w + 7 * K + p);
            /* pairs of rows interleaved: t0 = r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5] */
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            /* quads: s0 = r0..r3 at columns 0 | 4, s1 at 1 | 5, s2 at 2 | 6, s3 at 3 | 7 */
            __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            /* halves joined: column c of the 8 rows */
            float *o = P + LSAE__PIDX(p, j, K);
            _mm256_storeu_ps(o + 0 * LSAE__PSTEP, _mm256_permute2f128_ps(s0, s4, 0x20));
            _mm256_storeu_ps(o + 1 * LSAE__PSTEP, _mm256_permute2f128_ps(s1, s5, 0x20));
            _mm256_storeu_ps(o + 2 * LSAE__PSTEP, _mm256_permute2f128_ps(s2, s6, 0x20));
            _mm256_storeu_ps(o + 3 * LSAE__PSTEP, _mm256_permute2f128_ps(s3, s7, 0x20));
            _mm256_storeu_ps(o + 4 * LSAE__PSTEP, _mm256_permute2f128_ps(s0, s4, 0x31));
            _mm256_storeu_ps(o + 5 * LSAE__PSTEP, _mm256_permute2f128_ps(s1, s5, 0x31));
            _mm256_storeu_ps(o + 6 * LSAE__PSTEP, _mm256_permute2f128_ps(s2, s6, 0x31));
            _mm256_storeu_ps(o + 7 * LSAE__PSTEP, _mm256_permute2f128_ps(s3, s7, 0x31));
        }
        for (; p < K; ++p) {
            size_t jj;
            for (jj = 0; jj < 8; ++jj) P[LSAE__PIDX(p, j + jj, K)] = w[jj * K + p];
        }
    }
#elif defined(LSAE__WASM_SIMD)
    /* 4 x 4 blocks, transposed by two rounds of shuffles */
    for (; j + 4 <= nt; j += 4) {
        const float *w = W + (l0 + j) * K;
        for (p = 0; p + 4 <= K; p += 4) {
            const v128_t r0 = wasm_v128_load(w + p), r1 = wasm_v128_load(w + K + p);
            const v128_t r2 = wasm_v128_load(w + 2 * K + p), r3 = wasm_v128_load(w + 3 * K + p);
            /* t0 = r0[0] r1[0] r0[1] r1[1], t1 = r0[2] r1[2] r0[3] r1[3], t2 and t3 likewise of r2, r3 */
            const v128_t t0 = wasm_i32x4_shuffle(r0, r1, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(r0, r1, 2, 6, 3, 7);
            const v128_t t2 = wasm_i32x4_shuffle(r2, r3, 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(r2, r3, 2, 6, 3, 7);
            float *o = P + p * LSAE__NT + j;
            wasm_v128_store(o + 0 * LSAE__NT, wasm_i32x4_shuffle(t0, t2, 0, 1, 4, 5)); /* column p of the 4 rows */
            wasm_v128_store(o + 1 * LSAE__NT, wasm_i32x4_shuffle(t0, t2, 2, 3, 6, 7));
            wasm_v128_store(o + 2 * LSAE__NT, wasm_i32x4_shuffle(t1, t3, 0, 1, 4, 5));
            wasm_v128_store(o + 3 * LSAE__NT, wasm_i32x4_shuffle(t1, t3, 2, 3, 6, 7));
        }
        for (; p < K; ++p) {
            size_t jj;
            for (jj = 0; jj < 4; ++jj) P[p * LSAE__NT + j + jj] = w[jj * K + p];
        }
    }
#elif defined(LSAE__NEON)
    /* 4 x 4 blocks transposed in registers: trn1/trn2 on 32-bit lanes
       interleave pairs of rows, then on 64-bit lanes join the pairs */
    for (; j + 4 <= nt; j += 4) {
        const float *w = W + (l0 + j) * K;
        for (p = 0; p + 4 <= K; p += 4) {
            const float32x4_t r0 = vld1q_f32(w + p), r1 = vld1q_f32(w + K + p);
            const float32x4_t r2 = vld1q_f32(w + 2 * K + p), r3 = vld1q_f32(w + 3 * K + p);
            /* t0 = r0[0] r1[0] r0[2] r1[2], t1 = r0[1] r1[1] r0[3] r1[3]; t2, t3 likewise for r2, r3 */
            const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1)), t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
            const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3)), t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
            float *o = P + p * LSAE__NT + j;
            vst1q_f32(o + 0 * LSAE__NT, vreinterpretq_f32_f64(vtrn1q_f64(t0, t2))); /* column 0 of the 4 rows */
            vst1q_f32(o + 1 * LSAE__NT, vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)));
            vst1q_f32(o + 2 * LSAE__NT, vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)));
            vst1q_f32(o + 3 * LSAE__NT, vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)));
        }
        for (; p < K; ++p) {
            size_t jj;
            for (jj = 0; jj < 4; ++jj) P[p * LSAE__NT + j + jj] = w[jj * K + p];
        }
    }
#endif
    for (; j < nt; ++j) {
        const float *w = W + (l0 + j) * K;
        for (p = 0; p < K; ++p) P[LSAE__PIDX(p, j, K)] = w[p];
    }
    for (; j < LSAE__NT; ++j)
        for (p = 0; p < K; ++p) P[LSAE__PIDX(p, j, K)] = 0.0f;
}

#if defined(LSAE__AVX512)
/* C[r * ldc + j] = sum_p A[r][p] P[p][j], r < mr <= 6, j < 64, in zmm
   registers. Rows mr..5 repeat row 0: their sums are computed and not
   stored, so one kernel serves the edge of the batch too. */
static void lsae__ukernel_avx512(size_t mr, const float *A, size_t lda, const float *P, size_t K, float *C, size_t ldc, int stream)
{
    const float *a0 = A, *a1 = A + (mr > 1 ? lda : 0), *a2 = A + (mr > 2 ? 2 * lda : 0);
    const float *a3 = A + (mr > 3 ? 3 * lda : 0), *a4 = A + (mr > 4 ? 4 * lda : 0), *a5 = A + (mr > 5 ? 5 * lda : 0);
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    __m512 c40 = c00, c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00;
    size_t p;
    for (p = 0; p < K; ++p) {
        const float *b = P + p * LSAE__NT;
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32), b3 = _mm512_loadu_ps(b + 48), a;
#define LSAE__ROW512(r)                                                         \
        a = _mm512_set1_ps(a##r[p]);                                            \
        c##r##0 = _mm512_fmadd_ps(a, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(a, b1, c##r##1); \
        c##r##2 = _mm512_fmadd_ps(a, b2, c##r##2); c##r##3 = _mm512_fmadd_ps(a, b3, c##r##3);
        LSAE__ROW512(0) LSAE__ROW512(1) LSAE__ROW512(2) LSAE__ROW512(3) LSAE__ROW512(4) LSAE__ROW512(5)
#undef LSAE__ROW512
    }
#define LSAE__STORE512(r, st)                                                   \
    if (r < mr) {                                                               \
        st(C + r * ldc, c##r##0); st(C + r * ldc + 16, c##r##1);                \
        st(C + r * ldc + 32, c##r##2); st(C + r * ldc + 48, c##r##3);           \
    }
    if (stream) {
        LSAE__STORE512(0, _mm512_stream_ps) LSAE__STORE512(1, _mm512_stream_ps) LSAE__STORE512(2, _mm512_stream_ps)
        LSAE__STORE512(3, _mm512_stream_ps) LSAE__STORE512(4, _mm512_stream_ps) LSAE__STORE512(5, _mm512_stream_ps)
    } else {
        LSAE__STORE512(0, _mm512_storeu_ps) LSAE__STORE512(1, _mm512_storeu_ps) LSAE__STORE512(2, _mm512_storeu_ps)
        LSAE__STORE512(3, _mm512_storeu_ps) LSAE__STORE512(4, _mm512_storeu_ps) LSAE__STORE512(5, _mm512_storeu_ps)
    }
#undef LSAE__STORE512
}
#elif defined(LSAE__AVX2)
/* C[r * ldc + j] = sum_p A[r][p] P[p][j], r < mr <= 6, j < 16 (P and C are
   already offset to the panel), in ymm registers; rows past mr repeat row 0
   and are not stored. */
static void lsae__ukernel_avx2(size_t mr, const float *A, size_t lda, const float *P, size_t K, float *C, size_t ldc, int stream)
{
    const float *a0 = A, *a1 = A + (mr > 1 ? lda : 0), *a2 = A + (mr > 2 ? 2 * lda : 0);
    const float *a3 = A + (mr > 3 ? 3 * lda : 0), *a4 = A + (mr > 4 ? 4 * lda : 0), *a5 = A + (mr > 5 ? 5 * lda : 0);
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    size_t p;
    for (p = 0; p < K; ++p) {
        const float *b = P + p * LSAE__PSTEP;
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), a;
#define LSAE__ROW256(r)                                                         \
        a = _mm256_broadcast_ss(a##r + p);                                      \
        c##r##0 = _mm256_fmadd_ps(a, b0, c##r##0); c##r##1 = _mm256_fmadd_ps(a, b1, c##r##1);
        LSAE__ROW256(0) LSAE__ROW256(1) LSAE__ROW256(2) LSAE__ROW256(3) LSAE__ROW256(4) LSAE__ROW256(5)
#undef LSAE__ROW256
    }
#define LSAE__STORE256(r, st) if (r < mr) { st(C + r * ldc, c##r##0); st(C + r * ldc + 8, c##r##1); }
    if (stream) {
        LSAE__STORE256(0, _mm256_stream_ps) LSAE__STORE256(1, _mm256_stream_ps) LSAE__STORE256(2, _mm256_stream_ps)
        LSAE__STORE256(3, _mm256_stream_ps) LSAE__STORE256(4, _mm256_stream_ps) LSAE__STORE256(5, _mm256_stream_ps)
    } else {
        LSAE__STORE256(0, _mm256_storeu_ps) LSAE__STORE256(1, _mm256_storeu_ps) LSAE__STORE256(2, _mm256_storeu_ps)
        LSAE__STORE256(3, _mm256_storeu_ps) LSAE__STORE256(4, _mm256_storeu_ps) LSAE__STORE256(5, _mm256_storeu_ps)
    }
#undef LSAE__STORE256
}
#elif defined(LSAE__WASM_SIMD)
/* C[r * ldc + j] = sum_p A[r][p] P[p][j], r < mr <= 4, j < 16, in sixteen
   f32x4 accumulators; each step is a product rounded, then a sum rounded
   (acc + a b: the portable kernel's a * b + acc without FMA, bit for bit).
   Rows past mr repeat row 0 and are not stored. */
static void lsae__ukernel_wasm(size_t mr, const float *A, size_t lda, const float *P, size_t K, float *C, size_t ldc)
{
    const float *a0 = A, *a1 = A + (mr > 1 ? lda : 0), *a2 = A + (mr > 2 ? 2 * lda : 0), *a3 = A + (mr > 3 ? 3 * lda : 0);
    v128_t c00 = wasm_f32x4_splat(0.0f), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    v128_t c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    size_t p;
    for (p = 0; p < K; ++p) {
        const float *b = P + p * LSAE__NT;
        const v128_t b0 = wasm_v128_load(b), b1 = wasm_v128_load(b + 4), b2 = wasm_v128_load(b + 8), b3 = wasm_v128_load(b + 12);
        v128_t a;
#define LSAE__ROW128(r)                                                         \
        a = wasm_f32x4_splat(a##r[p]);                                          \
        c##r##0 = wasm_f32x4_add(c##r##0, wasm_f32x4_mul(a, b0)); c##r##1 = wasm_f32x4_add(c##r##1, wasm_f32x4_mul(a, b1)); \
        c##r##2 = wasm_f32x4_add(c##r##2, wasm_f32x4_mul(a, b2)); c##r##3 = wasm_f32x4_add(c##r##3, wasm_f32x4_mul(a, b3));
        LSAE__ROW128(0) LSAE__ROW128(1) LSAE__ROW128(2) LSAE__ROW128(3)
#undef LSAE__ROW128
    }
#define LSAE__STORE128(r)                                                       \
    if (r < mr) {                                                               \
        wasm_v128_store(C + r * ldc, c##r##0); wasm_v128_store(C + r * ldc + 4, c##r##1); \
        wasm_v128_store(C + r * ldc + 8, c##r##2); wasm_v128_store(C + r * ldc + 12, c##r##3); \
    }
    LSAE__STORE128(0) LSAE__STORE128(1) LSAE__STORE128(2) LSAE__STORE128(3)
#undef LSAE__STORE128
}
#elif defined(LSAE__NEON)
/* C[r * ldc + j] = sum_p A[r][p] P[p][j], r < mr <= 6, j < 16 (P and C are
   already offset to the panel), in q registers: 24 accumulators, the 4 of
   P[p] and one broadcast of A (ld1r); rows past mr repeat row 0 and are
   not stored. vfmaq_f32 is one fused multiply-add, as LSAE__FMA. */
static void lsae__ukernel_neon(size_t mr, const float *A, size_t lda, const float *P, size_t K, float *C, size_t ldc)
{
    const float *a0 = A, *a1 = A + (mr > 1 ? lda : 0), *a2 = A + (mr > 2 ? 2 * lda : 0);
    const float *a3 = A + (mr > 3 ? 3 * lda : 0), *a4 = A + (mr > 4 ? 4 * lda : 0), *a5 = A + (mr > 5 ? 5 * lda : 0);
    float32x4_t c00 = vdupq_n_f32(0.0f), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    float32x4_t c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    float32x4_t c40 = c00, c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00;
    size_t p;
    for (p = 0; p < K; ++p) {
        const float *b = P + p * LSAE__NT;
        const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8), b3 = vld1q_f32(b + 12);
        float32x4_t a;
#define LSAE__ROWNEON(r)                                                        \
        a = vld1q_dup_f32(a##r + p);                                            \
        c##r##0 = vfmaq_f32(c##r##0, a, b0); c##r##1 = vfmaq_f32(c##r##1, a, b1); \
        c##r##2 = vfmaq_f32(c##r##2, a, b2); c##r##3 = vfmaq_f32(c##r##3, a, b3);
        LSAE__ROWNEON(0) LSAE__ROWNEON(1) LSAE__ROWNEON(2) LSAE__ROWNEON(3) LSAE__ROWNEON(4) LSAE__ROWNEON(5)
#undef LSAE__ROWNEON
    }
#define LSAE__STORENEON(r)                                                      \
    if (r < mr) {                                                               \
        vst1q_f32(C + r * ldc, c##r##0); vst1q_f32(C + r * ldc + 4, c##r##1);   \
        vst1q_f32(C + r * ldc + 8, c##r##2); vst1q_f32(C + r * ldc + 12, c##r##3); \
    }
    LSAE__STORENEON(0) LSAE__STORENEON(1) LSAE__STORENEON(2) LSAE__STORENEON(3) LSAE__STORENEON(4) LSAE__STORENEON(5)
#undef LSAE__STORENEON
}
#else
/* Portable: C[r * ldc + j] = sum_p A[r * lda + p] * P[p * NT + j],
   r < mr <= MR, j < NR, written so the compiler can keep acc in vector
   registers (the j loop has a constant trip count). */
static void lsae__ukernel_c(size_t mr, const float *A, size_t lda, const float *P, size_t K, float *C, size_t ldc)
{
    float acc[LSAE__MR][LSAE__NR];
    size_t p, r, j;
    for (r = 0; r < LSAE__MR; ++r)
        for (j = 0; j < LSAE__NR; ++j) acc[r][j] = 0.0f;
    if (mr == LSAE__MR) {
        for (p = 0; p < K; ++p) {
            const float *b = P + p * LSAE__NT;
            for (r = 0; r < LSAE__MR; ++r) {
                float a = A[r * lda + p];
                for (j = 0; j < LSAE__NR; ++j) acc[r][j] = LSAE__FMA(a, b[j], acc[r][j]);
            }
        }
    } else {
        for (p = 0; p < K; ++p) {
            const float *b = P + p * LSAE__NT;
            for (r = 0; r < mr; ++r) {
                float a = A[r * lda + p];
                for (j = 0; j < LSAE__NR; ++j) acc[r][j] = LSAE__FMA(a, b[j], acc[r][j]);
            }
        }
    }
    for (r = 0; r < mr; ++r)
        for (j = 0; j < LSAE__NR; ++j) C[r * ldc + j] = acc[r][j];
}
#endif

/* C[r * ldc + j], r < mr, j < NT = rows [0, mr) of A (row stride lda)
   times the packed tile P. stream (AVX builds; C and ldc aligned to the
   vector): non-temporal stores, for a full product whose output will not be
   read again soon; they save reading every line of C before writing it.
   The encoder pass keeps its tile of C in a buffer (stream 0); the
   full-product GEMM that tests and bench/bench.c use
   (tests/test_internals.h) streams its large outputs. */
static void lsae__tile_rows(float *C, size_t ldc, const float *A, size_t lda, size_t mr, const float *P, size_t K, int stream)
{
#if defined(LSAE__AVX512)
    lsae__ukernel_avx512(mr, A, lda, P, K, C, ldc, stream);
#else
    size_t j0;
    for (j0 = 0; j0 < LSAE__NT; j0 += LSAE__NR) {
#if defined(LSAE__AVX2)
        lsae__ukernel_avx2(mr, A, lda, P + LSAE__PIDX(0, j0, K), K, C + j0, ldc, stream);
#elif defined(LSAE__WASM_SIMD)
        (void)stream;
        lsae__ukernel_wasm(mr, A, lda, P + j0, K, C + j0, ldc);
#elif defined(LSAE__NEON)
        (void)stream;
        lsae__ukernel_neon(mr, A, lda, P + j0, K, C + j0, ldc);
#else
        (void)stream;
        lsae__ukernel_c(mr, A, lda, P + j0, K, C + j0, ldc);
#endif
    }
#endif
}

/* One core's L2 cache in bytes, asked of the CPU once (0: not known).
   x86: cpuid leaf 0x80000006, ECX bits 31..16, the L2 in KiB (Intel and
   AMD both report it there; a virtual machine passes the host's on).
   Elsewhere 0. Two threads that race here store the same value. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define LSAE__CPUID 1
static void lsae__cpuid(unsigned leaf, unsigned *a, unsigned *c)
{
    unsigned b, d;
    *a = leaf;
    *c = 0;
    __asm__ __volatile__("cpuid" : "+a"(*a), "=b"(b), "+c"(*c), "=d"(d));
    (void)b;
    (void)d;
}
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#define LSAE__CPUID 1
static void lsae__cpuid(unsigned leaf, unsigned *a, unsigned *c)
{
    int r[4];
    __cpuidex(r, (int)leaf, 0);
    *a = (unsigned)r[0];
    *c = (unsigned)r[2];
}
#endif
static size_t lsae__l2_bytes(void)
{
    static volatile size_t cached = 1; /* 1: not asked yet */
    if (cached == 1) {
        size_t l2 = 0;
#if defined(LSAE__CPUID)
        unsigned a, c;
        lsae__cpuid(0x80000000u, &a, &c);
        if (a >= 0x80000006u) {
            lsae__cpuid(0x80000006u, &a, &c);
            l2 = (size_t)(c >> 16) << 10;
        }
#endif
        cached = l2;
    }
    return cached;
}

/* Tiles packed and used together: each MR-row panel of A is swept across
   all of them while it is in L1, instead of A being streamed from L2/L3
   once per tile. The group must stay in the core's L2 while the whole
   batch sweeps it: half the L2 at most. Measured at 512 x 24,576 x 768 on
   one core of a Xeon with 2 MiB of L2 (bench gemm, this budget varied):
   groups of 192 KiB to 1 MiB ran at the same rate, 1.5 MiB 12% slower,
   2 MiB 30% and 4 MiB 45% slower, so the 1 MiB once fixed here is twice
   the L2 of a Zen 2 or 3 core (512 KiB) and all of a Zen 4's. Unknown L2:
   1 MiB. Between 1 and 8 tiles of K x NT floats (K = d: 192 KiB at d =
   768). The bits do not depend on the grouping (every output is one chain
   over p, lsae__gemm_nt's test runs several). */
static size_t lsae__tile_group_for(size_t K, size_t l2_bytes)
{
    const size_t budget = l2_bytes ? l2_bytes / 2 : (size_t)1 << 20;
    size_t g = budget / (K * LSAE__NT * sizeof(float) + 1);
    return g < 1 ? 1 : g > 8 ? 8 : g;
}
static size_t lsae__tile_group(size_t K) { return lsae__tile_group_for(K, lsae__l2_bytes()); }

/* --------------------------------------------------------- vector helpers */

/* y[0..n) += a x[0..n). Element-wise fused multiply-adds: every build with
   FMA hardware gives the same bits, vectorised or not. */
static void lsae__axpy(float *y, float a, const float *x, size_t n)
{
    size_t j = 0;
#if defined(LSAE__AVX512)
    const __m512 va = _mm512_set1_ps(a);
    for (; j + 32 <= n; j += 32) {
        _mm512_storeu_ps(y + j, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + j), _mm512_loadu_ps(y + j)));
        _mm512_storeu_ps(y + j + 16, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + j + 16), _mm512_loadu_ps(y + j + 16)));
    }
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(y + j, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + j), _mm512_loadu_ps(y + j)));
    if (j < n) {
        const __mmask16 k = (__mmask16)((1u << (n - j)) - 1u);
        _mm512_mask_storeu_ps(y + j, k, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(k, x + j), _mm512_maskz_loadu_ps(k, y + j)));
    }
#elif defined(LSAE__AVX2)
    const __m256 va = _mm256_set1_ps(a);
    for (; j + 16 <= n; j += 16) {
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
        _mm256_storeu_ps(y + j + 8, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j + 8), _mm256_loadu_ps(y + j + 8)));
    }
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
    for (; j < n; ++j) y[j] = LSAE__FMA(a, x[j], y[j]);
#elif defined(LSAE__NEON)
    const float32x4_t va = vdupq_n_f32(a);
    for (; j + 8 <= n; j += 8) {
        vst1q_f32(y + j, vfmaq_f32(vld1q_f32(y + j), va, vld1q_f32(x + j)));
        vst1q_f32(y + j + 4, vfmaq_f32(vld1q_f32(y + j + 4), va, vld1q_f32(x + j + 4)));
    }
    for (; j + 4 <= n; j += 4) vst1q_f32(y + j, vfmaq_f32(vld1q_f32(y + j), va, vld1q_f32(x + j)));
    for (; j < n; ++j) y[j] = LSAE__FMA(a, x[j], y[j]);
#else
    for (; j < n; ++j) y[j] = LSAE__FMA(a, x[j], y[j]);
#endif
}

/* y[0..n) += a[0] x0 + a[1] x1 + a[2] x2 + a[3] x3, as the chain
   y = fma(a3, x3, fma(a2, x2, fma(a1, x1, fma(a0, x0, y)))) element by
   element: the same bits as four lsae__axpy calls in that order, with y
   loaded and stored once instead of four times. */
static void lsae__axpy4(float *y, const float *a, const float *x0, const float *x1, const float *x2, const float *x3, size_t n)
{
    size_t j = 0;
#if defined(LSAE__AVX512)
    const __m512 a0 = _mm512_set1_ps(a[0]), a1 = _mm512_set1_ps(a[1]), a2 = _mm512_set1_ps(a[2]), a3 = _mm512_set1_ps(a[3]);
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_fmadd_ps(a0, _mm512_loadu_ps(x0 + j), _mm512_loadu_ps(y + j));
        v = _mm512_fmadd_ps(a1, _mm512_loadu_ps(x1 + j), v);
        v = _mm512_fmadd_ps(a2, _mm512_loadu_ps(x2 + j), v);
        _mm512_storeu_ps(y + j, _mm512_fmadd_ps(a3, _mm512_loadu_ps(x3 + j), v));
    }
#elif defined(LSAE__AVX2)
    const __m256 a0 = _mm256_set1_ps(a[0]), a1 = _mm256_set1_ps(a[1]), a2 = _mm256_set1_ps(a[2]), a3 = _mm256_set1_ps(a[3]);
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_fmadd_ps(a0, _mm256_loadu_ps(x0 + j), _mm256_loadu_ps(y + j));
        v = _mm256_fmadd_ps(a1, _mm256_loadu_ps(x1 + j), v);
        v = _mm256_fmadd_ps(a2, _mm256_loadu_ps(x2 + j), v);
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(a3, _mm256_loadu_ps(x3 + j), v));
    }
#elif defined(LSAE__NEON)
    const float32x4_t a0 = vdupq_n_f32(a[0]), a1 = vdupq_n_f32(a[1]), a2 = vdupq_n_f32(a[2]), a3 = vdupq_n_f32(a[3]);
    for (; j + 4 <= n; j += 4) {
        float32x4_t v = vfmaq_f32(vld1q_f32(y + j), a0, vld1q_f32(x0 + j));
        v = vfmaq_f32(v, a1, vld1q_f32(x1 + j));
        v = vfmaq_f32(v, a2, vld1q_f32(x2 + j));
        vst1q_f32(y + j, vfmaq_f32(v, a3, vld1q_f32(x3 + j)));
    }
#endif
    for (; j < n; ++j)
        y[j] = LSAE__FMA(a[3], x3[j], LSAE__FMA(a[2], x2[j], LSAE__FMA(a[1], x1[j], LSAE__FMA(a[0], x0[j], y[j]))));
}


/* lsae__axpy4 twice over, y loaded and stored once for the eight rows
   x[0..8): the same chain of fused multiply-adds per element, so the same
   bits as two lsae__axpy4 calls. The sparse passes (decode, B4) gather a
   row per entry and are bound by those loads; this halves the traffic in y
   between them. */
static void lsae__axpy8(float *y, const float *a, const float *const *x, size_t n)
{
    size_t j = 0;
#if defined(LSAE__AVX512) || defined(LSAE__AVX2) || defined(LSAE__NEON)
    const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *x4 = x[4], *x5 = x[5], *x6 = x[6], *x7 = x[7];
#endif
#if defined(LSAE__AVX512)
    const __m512 a0 = _mm512_set1_ps(a[0]), a1 = _mm512_set1_ps(a[1]), a2 = _mm512_set1_ps(a[2]), a3 = _mm512_set1_ps(a[3]);
    const __m512 a4 = _mm512_set1_ps(a[4]), a5 = _mm512_set1_ps(a[5]), a6 = _mm512_set1_ps(a[6]), a7 = _mm512_set1_ps(a[7]);
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_fmadd_ps(a0, _mm512_loadu_ps(x0 + j), _mm512_loadu_ps(y + j));
        v = _mm512_fmadd_ps(a1, _mm512_loadu_ps(x1 + j), v);
        v = _mm512_fmadd_ps(a2, _mm512_loadu_ps(x2 + j), v);
        v = _mm512_fmadd_ps(a3, _mm512_loadu_ps(x3 + j), v);
        v = _mm512_fmadd_ps(a4, _mm512_loadu_ps(x4 + j), v);
        v = _mm512_fmadd_ps(a5, _mm512_loadu_ps(x5 + j), v);
        v = _mm512_fmadd_ps(a6, _mm512_loadu_ps(x6 + j), v);
        _mm512_storeu_ps(y + j, _mm512_fmadd_ps(a7, _mm512_loadu_ps(x7 + j), v));
    }
#elif defined(LSAE__AVX2)
    const __m256 a0 = _mm256_set1_ps(a[0]), a1 = _mm256_set1_ps(a[1]), a2 = _mm256_set1_ps(a[2]), a3 = _mm256_set1_ps(a[3]);
    const __m256 a4 = _mm256_set1_ps(a[4]), a5 = _mm256_set1_ps(a[5]), a6 = _mm256_set1_ps(a[6]), a7 = _mm256_set1_ps(a[7]);
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_fmadd_ps(a0, _mm256_loadu_ps(x0 + j), _mm256_loadu_ps(y + j));
        v = _mm256_fmadd_ps(a1, _mm256_loadu_ps(x1 + j), v);
        v = _mm256_fmadd_ps(a2, _mm256_loadu_ps(x2 + j), v);
        v = _mm256_fmadd_ps(a3, _mm256_loadu_ps(x3 + j), v);
        v = _mm256_fmadd_ps(a4, _mm256_loadu_ps(x4 + j), v);
        v = _mm256_fmadd_ps(a5, _mm256_loadu_ps(x5 + j), v);
        v = _mm256_fmadd_ps(a6, _mm256_loadu_ps(x6 + j), v);
        _mm256_storeu_ps(y + j, _mm256_fmadd_ps(a7, _mm256_loadu_ps(x7 + j), v));
    }
#elif defined(LSAE__NEON)
    const float32x4_t a0 = vdupq_n_f32(a[0]), a1 = vdupq_n_f32(a[1]), a2 = vdupq_n_f32(a[2]), a3 = vdupq_n_f32(a[3]);
    const float32x4_t a4 = vdupq_n_f32(a[4]), a5 = vdupq_n_f32(a[5]), a6 = vdupq_n_f32(a[6]), a7 = vdupq_n_f32(a[7]);
    for (; j + 4 <= n; j += 4) {
        float32x4_t v = vfmaq_f32(vld1q_f32(y + j), a0, vld1q_f32(x0 + j));
        v = vfmaq_f32(v, a1, vld1q_f32(x1 + j));
        v = vfmaq_f32(v, a2, vld1q_f32(x2 + j));
        v = vfmaq_f32(v, a3, vld1q_f32(x3 + j));
        v = vfmaq_f32(v, a4, vld1q_f32(x4 + j));
        v = vfmaq_f32(v, a5, vld1q_f32(x5 + j));
        v = vfmaq_f32(v, a6, vld1q_f32(x6 + j));
        vst1q_f32(y + j, vfmaq_f32(v, a7, vld1q_f32(x7 + j)));
    }
#endif
    if (j < n) {
        lsae__axpy4(y + j, a, x[0] + j, x[1] + j, x[2] + j, x[3] + j, n - j);
        lsae__axpy4(y + j, a + 4, x[4] + j, x[5] + j, x[6] + j, x[7] + j, n - j);
    }
}

/* y[0..n) += a[0] x0, then += a[1] x1, ..., for the m <= 4 rows x[0..m),
   each product rounded, then each sum: y = fl(y + fl(a x)), the bits of
   the ISO C loop y[j] += a x[j] (GCC does not fuse it in -std=c99) that
   lsae_model_decode and lsae_model_decode_sparse ran one element at a time,
   with y loaded and stored once for the m rows. Not lsae__axpy4's fused
   chain: the decode's output keeps its bits. */
static void lsae__axpy_nf(float *y, const float *a, const float *const *x, size_t m, size_t n)
{
    size_t j = 0, i;
#if defined(LSAE__AVX512)
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_loadu_ps(y + j);
        for (i = 0; i < m; ++i) v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(a[i]), _mm512_loadu_ps(x[i] + j)));
        _mm512_storeu_ps(y + j, v);
    }
#endif
#if defined(LSAE__AVX2)
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(y + j);
        for (i = 0; i < m; ++i) v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(a[i]), _mm256_loadu_ps(x[i] + j)));
        _mm256_storeu_ps(y + j, v);
    }
#endif
    for (i = 0; i < m; ++i) {
        size_t jj;
        for (jj = j; jj < n; ++jj) y[jj] += a[i] * x[i][jj];
    }
}

/* x_hat row out = b_dec + sum over the n slots with a nonzero activation,
   in order, of acts[s] W_dec[idx[s]] (lsae__axpy_nf, four rows a pass) */
static void lsae__decode_row_nf(float *out, const lsae_model *m, const float *acts, const int32_t *idx, size_t n)
{
    const float *rows[4];
    float a[4];
    size_t s, c = 0;
    memcpy(out, m->b_dec, m->d * sizeof(float));
    for (s = 0; s < n; ++s) {
        if (acts[s] == 0.0f) continue;
        rows[c] = m->W_dec + (size_t)idx[s] * m->d;
        a[c] = acts[s];
        if (++c == 4) {
            lsae__axpy_nf(out, a, rows, 4, m->d);
            c = 0;
        }
    }
    if (c) lsae__axpy_nf(out, a, rows, c, m->d);
}

/* sum_j a[j] b[j] in a fixed order that SIMD can follow: 64 partial sums,
   s_q = the chain of fused multiply-adds over j = q (mod 64), in increasing
   j; then s_q += s_{q+32}, s_q += s_{q+16}, ..., s_q += s_{q+1} (q below the
   step), and s_0 is the result. Four zmm or eight ymm registers are the 64
   chains (enough independent chains to hide the FMA latency), as are
   sixteen NEON q registers, and the reduction tree is the same whatever the
   vector width, so AVX-512, AVX2, NEON and portable builds agree bit for
   bit. */
#if defined(LSAE__AVX512)
/* Half h (0: lanes 0-7, 1: lanes 8-15) of a zmm. The zero-masked extract,
   not _mm512_extractf64x4_pd or _mm512_castps512_ps256: GCC 12 builds those
   (and _mm512_max_ps, _mm512_sqrt_ps, _mm512_reduce_add_ps) on an
   "undefined" register that its C++ front end then reports as used
   uninitialised, failing -Werror builds. The masked forms start from zero
   and give the same values. */
#define lsae__half256(v, h) _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd((__mmask8)0xFF, _mm512_castps_pd(v), (h)))

/* The reduction tree of lsae__dot on its four zmm chains (lanes q, q + 16,
   q + 32, q + 48 of the 64) */
static float lsae__dot_reduce(__m512 s0, __m512 s1, __m512 s2, __m512 s3)
{
    __m256 w;
    __m128 x;
    s0 = _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3)); /* +32, then +16 */
    w = _mm256_add_ps(lsae__half256(s0, 0), lsae__half256(s0, 1));      /* +8 */
    x = _mm_add_ps(_mm256_castps256_ps128(w), _mm256_extractf128_ps(w, 1)); /* +4 */
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));                                  /* +2 */
    x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));                              /* +1 */
    return _mm_cvtss_f32(x);
}

/* lsae__dot from element j on (a multiple of 64), the chains so far in s0..s3 */
static float lsae__dot_from(const float *a, const float *b, size_t n, size_t j, __m512 s0, __m512 s1, __m512 s2, __m512 s3)
{
    for (; j + 64 <= n; j += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 16), _mm512_loadu_ps(b + j + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 32), _mm512_loadu_ps(b + j + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 48), _mm512_loadu_ps(b + j + 48), s3);
    }
    for (; j < n; j += 16) {
        /* the tail: lanes past n keep their sums (masked FMA adds nothing, not even a zero) */
        const __mmask16 k = (__mmask16)(n - j >= 16 ? 0xFFFFu : (1u << (n - j)) - 1u);
        const __m512 va = _mm512_maskz_loadu_ps(k, a + j), vb = _mm512_maskz_loadu_ps(k, b + j);
        switch ((j % 64) / 16) {
        case 0: s0 = _mm512_mask3_fmadd_ps(va, vb, s0, k); break;
        case 1: s1 = _mm512_mask3_fmadd_ps(va, vb, s1, k); break;
        case 2: s2 = _mm512_mask3_fmadd_ps(va, vb, s2, k); break;
        default: s3 = _mm512_mask3_fmadd_ps(va, vb, s3, k); break;
        }
    }
    return lsae__dot_reduce(s0, s1, s2, s3);
}
#endif

#if defined(LSAE__AVX2) && !defined(LSAE__AVX512)
/* The 64 chains of lsae__dot (lane q of s_i: chain 8 i + q) summed as its
   fixed tree: halves, quarters, eighths, then within the vector */
static float lsae__reduce8(__m256 s0, __m256 s1, __m256 s2, __m256 s3, __m256 s4, __m256 s5, __m256 s6, __m256 s7)
{
    __m128 x;
    s0 = _mm256_add_ps(s0, s4); s1 = _mm256_add_ps(s1, s5); s2 = _mm256_add_ps(s2, s6); s3 = _mm256_add_ps(s3, s7); /* +32 */
    s0 = _mm256_add_ps(s0, s2); s1 = _mm256_add_ps(s1, s3);                                                       /* +16 */
    s0 = _mm256_add_ps(s0, s1);                                                                                   /* +8 */
    x = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));                                    /* +4 */
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));                                                                       /* +2 */
    x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));                                                                   /* +1 */
    return _mm_cvtss_f32(x);
}
#endif

static float lsae__dot(const float *a, const float *b, size_t n)
{
#if defined(LSAE__AVX512)
    const __m512 z = _mm512_setzero_ps();
    return lsae__dot_from(a, b, n, 0, z, z, z, z);
#elif defined(LSAE__AVX2)
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    size_t j = 0;
    for (; j + 64 <= n; j += 64) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 16), _mm256_loadu_ps(b + j + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 24), _mm256_loadu_ps(b + j + 24), s3);
        s4 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 32), _mm256_loadu_ps(b + j + 32), s4);
        s5 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 40), _mm256_loadu_ps(b + j + 40), s5);
        s6 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 48), _mm256_loadu_ps(b + j + 48), s6);
        s7 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 56), _mm256_loadu_ps(b + j + 56), s7);
    }
    if (j < n) {
        /* the tail, lane by lane into the same chains */
        float t[64];
        size_t q;
        _mm256_storeu_ps(t, s0); _mm256_storeu_ps(t + 8, s1); _mm256_storeu_ps(t + 16, s2); _mm256_storeu_ps(t + 24, s3);
        _mm256_storeu_ps(t + 32, s4); _mm256_storeu_ps(t + 40, s5); _mm256_storeu_ps(t + 48, s6); _mm256_storeu_ps(t + 56, s7);
        for (q = 0; j + q < n; ++q) t[q] = LSAE__FMA(a[j + q], b[j + q], t[q]);
        s0 = _mm256_loadu_ps(t); s1 = _mm256_loadu_ps(t + 8); s2 = _mm256_loadu_ps(t + 16); s3 = _mm256_loadu_ps(t + 24);
        s4 = _mm256_loadu_ps(t + 32); s5 = _mm256_loadu_ps(t + 40); s6 = _mm256_loadu_ps(t + 48); s7 = _mm256_loadu_ps(t + 56);
    }
    return lsae__reduce8(s0, s1, s2, s3, s4, s5, s6, s7);
#elif defined(LSAE__NEON)
    /* s[i] holds chains 4i .. 4i + 3 (named: an array of vectors may be kept in memory) */
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    float32x4_t s8 = s0, s9 = s0, s10 = s0, s11 = s0, s12 = s0, s13 = s0, s14 = s0, s15 = s0;
    float32x2_t x;
    size_t j = 0;
    for (; j + 64 <= n; j += 64) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + j), vld1q_f32(b + j));
        s1 = vfmaq_f32(s1, vld1q_f32(a + j + 4), vld1q_f32(b + j + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + j + 8), vld1q_f32(b + j + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + j + 12), vld1q_f32(b + j + 12));
        s4 = vfmaq_f32(s4, vld1q_f32(a + j + 16), vld1q_f32(b + j + 16));
        s5 = vfmaq_f32(s5, vld1q_f32(a + j + 20), vld1q_f32(b + j + 20));
        s6 = vfmaq_f32(s6, vld1q_f32(a + j + 24), vld1q_f32(b + j + 24));
        s7 = vfmaq_f32(s7, vld1q_f32(a + j + 28), vld1q_f32(b + j + 28));
        s8 = vfmaq_f32(s8, vld1q_f32(a + j + 32), vld1q_f32(b + j + 32));
        s9 = vfmaq_f32(s9, vld1q_f32(a + j + 36), vld1q_f32(b + j + 36));
        s10 = vfmaq_f32(s10, vld1q_f32(a + j + 40), vld1q_f32(b + j + 40));
        s11 = vfmaq_f32(s11, vld1q_f32(a + j + 44), vld1q_f32(b + j + 44));
        s12 = vfmaq_f32(s12, vld1q_f32(a + j + 48), vld1q_f32(b + j + 48));
        s13 = vfmaq_f32(s13, vld1q_f32(a + j + 52), vld1q_f32(b + j + 52));
        s14 = vfmaq_f32(s14, vld1q_f32(a + j + 56), vld1q_f32(b + j + 56));
        s15 = vfmaq_f32(s15, vld1q_f32(a + j + 60), vld1q_f32(b + j + 60));
    }
    if (j < n) {
        /* the tail, lane by lane into the same chains */
        float t[64];
        size_t q;
        vst1q_f32(t, s0); vst1q_f32(t + 4, s1); vst1q_f32(t + 8, s2); vst1q_f32(t + 12, s3);
        vst1q_f32(t + 16, s4); vst1q_f32(t + 20, s5); vst1q_f32(t + 24, s6); vst1q_f32(t + 28, s7);
        vst1q_f32(t + 32, s8); vst1q_f32(t + 36, s9); vst1q_f32(t + 40, s10); vst1q_f32(t + 44, s11);
        vst1q_f32(t + 48, s12); vst1q_f32(t + 52, s13); vst1q_f32(t + 56, s14); vst1q_f32(t + 60, s15);
        for (q = 0; j + q < n; ++q) t[q] = LSAE__FMA(a[j + q], b[j + q], t[q]);
        s0 = vld1q_f32(t); s1 = vld1q_f32(t + 4); s2 = vld1q_f32(t + 8); s3 = vld1q_f32(t + 12);
        s4 = vld1q_f32(t + 16); s5 = vld1q_f32(t + 20); s6 = vld1q_f32(t + 24); s7 = vld1q_f32(t + 28);
        s8 = vld1q_f32(t + 32); s9 = vld1q_f32(t + 36); s10 = vld1q_f32(t + 40); s11 = vld1q_f32(t + 44);
        s12 = vld1q_f32(t + 48); s13 = vld1q_f32(t + 52); s14 = vld1q_f32(t + 56); s15 = vld1q_f32(t + 60);
    }
    s0 = vaddq_f32(s0, s8); s1 = vaddq_f32(s1, s9); s2 = vaddq_f32(s2, s10); s3 = vaddq_f32(s3, s11);    /* +32 */
    s4 = vaddq_f32(s4, s12); s5 = vaddq_f32(s5, s13); s6 = vaddq_f32(s6, s14); s7 = vaddq_f32(s7, s15);
    s0 = vaddq_f32(s0, s4); s1 = vaddq_f32(s1, s5); s2 = vaddq_f32(s2, s6); s3 = vaddq_f32(s3, s7);      /* +16 */
    s0 = vaddq_f32(s0, s2); s1 = vaddq_f32(s1, s3);                                                      /* +8 */
    s0 = vaddq_f32(s0, s1);                                                                              /* +4 */
    x = vadd_f32(vget_low_f32(s0), vget_high_f32(s0));                                                   /* +2 */
    return vget_lane_f32(x, 0) + vget_lane_f32(x, 1);                                                    /* +1 */
#else
    float s[64];
    size_t q, step, j = 0;
    for (q = 0; q < 64; ++q) s[q] = 0.0f;
    for (; j < n; ++j) s[j % 64] = LSAE__FMA(a[j], b[j], s[j % 64]);
    for (step = 32; step > 0; step /= 2)
        for (q = 0; q < step; ++q) s[q] += s[q + step];
    return s[0];
#endif
}


/* The dot product x . w in lsae__dot's order (the same bits) and
   y[0..n) += a x (y = fma(a, x, y) element by element), x loaded once for
   both. With AVX2 the dot's 64 chains take 8 of the 16 registers, so one
   entry at a time: where four dots and an lsae__axpy4 loaded each row of
   x twice from the cache below L1 (B3 gathers one a row of the batch per
   entry), this loads it once. With AVX-512 the same in one pass (B3's
   entries past the groups of four); elsewhere the two calls. */
static float lsae__dot_axpy(const float *x, const float *w, float *y, float a, size_t n)
{
#if defined(LSAE__AVX512)
    /* lsae__dot's four chains of 16 and the axpy, x loaded once for both:
       a latent with an entry or two (B3 at nomic x32) is mostly this call */
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const __m512 va = _mm512_set1_ps(a);
    size_t j = 0;
    for (; j + 64 <= n; j += 64) {
        const __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
        const __m512 x2 = _mm512_loadu_ps(x + j + 32), x3 = _mm512_loadu_ps(x + j + 48);
        s0 = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w + j), s0);
        s1 = _mm512_fmadd_ps(x1, _mm512_loadu_ps(w + j + 16), s1);
        s2 = _mm512_fmadd_ps(x2, _mm512_loadu_ps(w + j + 32), s2);
        s3 = _mm512_fmadd_ps(x3, _mm512_loadu_ps(w + j + 48), s3);
        _mm512_storeu_ps(y + j, _mm512_fmadd_ps(va, x0, _mm512_loadu_ps(y + j)));
        _mm512_storeu_ps(y + j + 16, _mm512_fmadd_ps(va, x1, _mm512_loadu_ps(y + j + 16)));
        _mm512_storeu_ps(y + j + 32, _mm512_fmadd_ps(va, x2, _mm512_loadu_ps(y + j + 32)));
        _mm512_storeu_ps(y + j + 48, _mm512_fmadd_ps(va, x3, _mm512_loadu_ps(y + j + 48)));
    }
    if (j < n) {
        const float v = lsae__dot_from(x, w, n, j, s0, s1, s2, s3);
        lsae__axpy(y + j, a, x + j, n - j);
        return v;
    }
    return lsae__dot_reduce(s0, s1, s2, s3);
#elif defined(LSAE__AVX2)
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    const __m256 va = _mm256_set1_ps(a);
    size_t j = 0;
    for (; j + 64 <= n; j += 64) {
#define LSAE__DOT_AXPY8(u)                                                                          \
        {                                                                                           \
            const __m256 xv = _mm256_loadu_ps(x + j + 8 * (u));                                     \
            s##u = _mm256_fmadd_ps(xv, _mm256_loadu_ps(w + j + 8 * (u)), s##u);                     \
            _mm256_storeu_ps(y + j + 8 * (u), _mm256_fmadd_ps(va, xv, _mm256_loadu_ps(y + j + 8 * (u)))); \
        }
        LSAE__DOT_AXPY8(0) LSAE__DOT_AXPY8(1) LSAE__DOT_AXPY8(2) LSAE__DOT_AXPY8(3)
        LSAE__DOT_AXPY8(4) LSAE__DOT_AXPY8(5) LSAE__DOT_AXPY8(6) LSAE__DOT_AXPY8(7)
#undef LSAE__DOT_AXPY8
    }
    if (j < n) {
        /* the tail, lane by lane into the same chains (as lsae__dot) */
        float t[64];
        size_t q;
        _mm256_storeu_ps(t, s0); _mm256_storeu_ps(t + 8, s1); _mm256_storeu_ps(t + 16, s2); _mm256_storeu_ps(t + 24, s3);
        _mm256_storeu_ps(t + 32, s4); _mm256_storeu_ps(t + 40, s5); _mm256_storeu_ps(t + 48, s6); _mm256_storeu_ps(t + 56, s7);
        for (q = 0; j + q < n; ++q) {
            t[q] = LSAE__FMA(x[j + q], w[j + q], t[q]);
            y[j + q] = LSAE__FMA(a, x[j + q], y[j + q]);
        }
        s0 = _mm256_loadu_ps(t); s1 = _mm256_loadu_ps(t + 8); s2 = _mm256_loadu_ps(t + 16); s3 = _mm256_loadu_ps(t + 24);
        s4 = _mm256_loadu_ps(t + 32); s5 = _mm256_loadu_ps(t + 40); s6 = _mm256_loadu_ps(t + 48); s7 = _mm256_loadu_ps(t + 56);
    }
    return lsae__reduce8(s0, s1, s2, s3, s4, s5, s6, s7);
#else
    const float v = lsae__dot(x, w, n);
    lsae__axpy(y, a, x, n);
    return v;
#endif
}

/* B3's inner step for four entries of one latent: out[e] = lsae__dot(x_e, w,
   n) and then y += a_0 x_0 + a_1 x_1 + a_2 x_2 + a_3 x_3 (lsae__axpy4),
   bit for bit those calls, in one pass over the four rows with AVX-512 and
   AVX2 (NEON: the calls): each row is loaded once for both (the rows are gathered from a
   batch-sized array in L2, and two passes load them twice), the four dots
   run together (16 accumulators, the 64 chains of lsae__dot each) and
   share the loads of w, and each y[j] gets the same chain of four FMAs in
   the same order. */
static void lsae__dot4_axpy4(float *out, const float *a, const float *x0, const float *x1, const float *x2, const float *x3,
                             const float *w, float *y, size_t n)
{
#if defined(LSAE__AVX512)
    __m512 s00 = _mm512_setzero_ps(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00, s13 = s00;
    __m512 s20 = s00, s21 = s00, s22 = s00, s23 = s00, s30 = s00, s31 = s00, s32 = s00, s33 = s00;
    const __m512 a0 = _mm512_set1_ps(a[0]), a1 = _mm512_set1_ps(a[1]), a2 = _mm512_set1_ps(a[2]), a3 = _mm512_set1_ps(a[3]);
    size_t j = 0;
    for (; j + 64 <= n; j += 64) {
        const __m512 w0 = _mm512_loadu_ps(w + j), w1 = _mm512_loadu_ps(w + j + 16);
        const __m512 w2 = _mm512_loadu_ps(w + j + 32), w3 = _mm512_loadu_ps(w + j + 48);
        __m512 y0 = _mm512_loadu_ps(y + j), y1 = _mm512_loadu_ps(y + j + 16);
        __m512 y2 = _mm512_loadu_ps(y + j + 32), y3 = _mm512_loadu_ps(y + j + 48);
#define LSAE__DOT4_AXPY_ROW(e)                                                   \
        {                                                                        \
            const __m512 v0 = _mm512_loadu_ps(x##e + j), v1 = _mm512_loadu_ps(x##e + j + 16); \
            const __m512 v2 = _mm512_loadu_ps(x##e + j + 32), v3 = _mm512_loadu_ps(x##e + j + 48); \
            s##e##0 = _mm512_fmadd_ps(v0, w0, s##e##0);                          \
            s##e##1 = _mm512_fmadd_ps(v1, w1, s##e##1);                          \
            s##e##2 = _mm512_fmadd_ps(v2, w2, s##e##2);                          \
            s##e##3 = _mm512_fmadd_ps(v3, w3, s##e##3);                          \
            y0 = _mm512_fmadd_ps(a##e, v0, y0);                                  \
            y1 = _mm512_fmadd_ps(a##e, v1, y1);                                  \
            y2 = _mm512_fmadd_ps(a##e, v2, y2);                                  \
            y3 = _mm512_fmadd_ps(a##e, v3, y3);                                  \
        }
        LSAE__DOT4_AXPY_ROW(0) LSAE__DOT4_AXPY_ROW(1) LSAE__DOT4_AXPY_ROW(2) LSAE__DOT4_AXPY_ROW(3)
#undef LSAE__DOT4_AXPY_ROW
        _mm512_storeu_ps(y + j, y0);
        _mm512_storeu_ps(y + j + 16, y1);
        _mm512_storeu_ps(y + j + 32, y2);
        _mm512_storeu_ps(y + j + 48, y3);
    }
    if (j < n) {
        /* the tails, each as its own kernel finishes it */
        out[0] = lsae__dot_from(x0, w, n, j, s00, s01, s02, s03);
        out[1] = lsae__dot_from(x1, w, n, j, s10, s11, s12, s13);
        out[2] = lsae__dot_from(x2, w, n, j, s20, s21, s22, s23);
        out[3] = lsae__dot_from(x3, w, n, j, s30, s31, s32, s33);
        lsae__axpy4(y + j, a, x0 + j, x1 + j, x2 + j, x3 + j, n - j);
        return;
    }
    out[0] = lsae__dot_reduce(s00, s01, s02, s03);
    out[1] = lsae__dot_reduce(s10, s11, s12, s13);
    out[2] = lsae__dot_reduce(s20, s21, s22, s23);
    out[3] = lsae__dot_reduce(s30, s31, s32, s33);
#elif defined(LSAE__AVX2)
    /* 4 x 8 ymm accumulators do not fit in 16 registers: the 64 chains go a
       quarter at a time (chains 16 q .. 16 q + 15: the elements p with p mod
       64 in that range), 4 entries x 2 ymm, the quarters' sums kept in t.
       Each element of x, w and y is loaded once (y stored once), every chain
       gets its elements in order, and y's chain its four entries in order:
       lsae__dot's bits for the dots, lsae__axpy4's for y. */
    const float *const xs[4] = { x0, x1, x2, x3 };
    const __m256 va0 = _mm256_set1_ps(a[0]), va1 = _mm256_set1_ps(a[1]), va2 = _mm256_set1_ps(a[2]), va3 = _mm256_set1_ps(a[3]);
    const size_t n64 = n / 64 * 64;
    float t[4][64];
    size_t qtr, j, e, q;
    for (qtr = 0; qtr < 4; ++qtr) {
        __m256 s00 = _mm256_setzero_ps(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00;
        for (j = 16 * qtr; j < n64; j += 64) {
#define LSAE__DOT4_AXPY8(u)                                                                         \
            {                                                                                       \
                const __m256 wv = _mm256_loadu_ps(w + j + 8 * (u));                                 \
                __m256 yv = _mm256_loadu_ps(y + j + 8 * (u)), xv;                                   \
                xv = _mm256_loadu_ps(x0 + j + 8 * (u)); s0##u = _mm256_fmadd_ps(xv, wv, s0##u); yv = _mm256_fmadd_ps(va0, xv, yv); \
                xv = _mm256_loadu_ps(x1 + j + 8 * (u)); s1##u = _mm256_fmadd_ps(xv, wv, s1##u); yv = _mm256_fmadd_ps(va1, xv, yv); \
                xv = _mm256_loadu_ps(x2 + j + 8 * (u)); s2##u = _mm256_fmadd_ps(xv, wv, s2##u); yv = _mm256_fmadd_ps(va2, xv, yv); \
                xv = _mm256_loadu_ps(x3 + j + 8 * (u)); s3##u = _mm256_fmadd_ps(xv, wv, s3##u); yv = _mm256_fmadd_ps(va3, xv, yv); \
                _mm256_storeu_ps(y + j + 8 * (u), yv);                                              \
            }
            LSAE__DOT4_AXPY8(0) LSAE__DOT4_AXPY8(1)
#undef LSAE__DOT4_AXPY8
        }
        _mm256_storeu_ps(t[0] + 16 * qtr, s00); _mm256_storeu_ps(t[0] + 16 * qtr + 8, s01);
        _mm256_storeu_ps(t[1] + 16 * qtr, s10); _mm256_storeu_ps(t[1] + 16 * qtr + 8, s11);
        _mm256_storeu_ps(t[2] + 16 * qtr, s20); _mm256_storeu_ps(t[2] + 16 * qtr + 8, s21);
        _mm256_storeu_ps(t[3] + 16 * qtr, s30); _mm256_storeu_ps(t[3] + 16 * qtr + 8, s31);
    }
    /* the tail, lane by lane into the same chains; y entry by entry */
    for (q = 0; n64 + q < n; ++q) {
        for (e = 0; e < 4; ++e) t[e][q] = LSAE__FMA(xs[e][n64 + q], w[n64 + q], t[e][q]);
        y[n64 + q] = LSAE__FMA(a[3], x3[n64 + q], LSAE__FMA(a[2], x2[n64 + q], LSAE__FMA(a[1], x1[n64 + q], LSAE__FMA(a[0], x0[n64 + q], y[n64 + q]))));
    }
    for (e = 0; e < 4; ++e)
        out[e] = lsae__reduce8(_mm256_loadu_ps(t[e]), _mm256_loadu_ps(t[e] + 8), _mm256_loadu_ps(t[e] + 16), _mm256_loadu_ps(t[e] + 24),
                               _mm256_loadu_ps(t[e] + 32), _mm256_loadu_ps(t[e] + 40), _mm256_loadu_ps(t[e] + 48), _mm256_loadu_ps(t[e] + 56));
#else
    /* 4 x 16 NEON q accumulators do not fit: four dots */
    out[0] = lsae__dot(x0, w, n);
    out[1] = lsae__dot(x1, w, n);
    out[2] = lsae__dot(x2, w, n);
    out[3] = lsae__dot(x3, w, n);
    lsae__axpy4(y, a, x0, x1, x2, x3, n);
#endif
}

/* y[0..n) *= s */
static void lsae__scale(float *y, float s, size_t n)
{
    size_t j = 0;
#if defined(LSAE__AVX512)
    const __m512 vs = _mm512_set1_ps(s);
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(y + j, _mm512_mul_ps(_mm512_loadu_ps(y + j), vs));
#elif defined(LSAE__AVX2)
    const __m256 vs = _mm256_set1_ps(s);
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(y + j), vs));
#elif defined(LSAE__NEON)
    const float32x4_t vs = vdupq_n_f32(s);
    for (; j + 4 <= n; j += 4) vst1q_f32(y + j, vmulq_f32(vld1q_f32(y + j), vs));
#endif
    for (; j < n; ++j) y[j] *= s;
}

/* torch.optim.Adam (no weight decay, not amsgrad) over one span, the
   gradient first multiplied by clip:
      g = clip G;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
      p -= step_size * (m / (sqrt(v) / sqrt(1 - b2^t) + eps)),  step_size = lr / (1 - b1^t)
   With zero_g, G is set to 0 for the next window in the same pass (it is
   in cache now; a separate memset would stream the whole slab again): the
   biases'; the weight rows are zeroed at their next first touch instead
   (lsae__grad_row). Separate multiplies
   and adds, no FMA, in every build: the vector and scalar code give the
   same bits. Returns the sum of (p - p) over the new weights: 0 when all are
   finite, NaN as soon as one is not. */
static float lsae__adam_span(float *p, float *G, float *m1, float *m2, size_t n, float clip, float step_size, float bc2_sqrt, int zero_g)
{
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, omb1 = 1.0f - b1, omb2 = 1.0f - b2;
    float bad = 0.0f;
    size_t j = 0;
#if defined(LSAE__AVX512)
    {
        const __m512 vclip = _mm512_set1_ps(clip), vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2), vo1 = _mm512_set1_ps(omb1);
        const __m512 vo2 = _mm512_set1_ps(omb2), vst = _mm512_set1_ps(step_size), vbc = _mm512_set1_ps(bc2_sqrt), veps = _mm512_set1_ps(eps);
        __m512 vbad = _mm512_setzero_ps();
        /* the tail too in vectors (masked), so that every element goes
           through the same operations in any SIMD build */
        for (; j < n; j += 16) {
            const __mmask16 k = (__mmask16)(n - j >= 16 ? 0xFFFFu : (1u << (n - j)) - 1u);
            __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, G + j), vclip);
            __m512 mm = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, m1 + j), vb1), _mm512_mul_ps(g, vo1));
            __m512 vv = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, m2 + j), vb2), _mm512_mul_ps(_mm512_mul_ps(g, g), vo2));
            __m512 pp = _mm512_maskz_loadu_ps(k, p + j);
            pp = _mm512_sub_ps(pp, _mm512_mul_ps(vst, _mm512_div_ps(mm, _mm512_add_ps(_mm512_div_ps(_mm512_maskz_sqrt_ps((__mmask16)0xFFFF, vv), vbc), veps))));
            _mm512_mask_storeu_ps(m1 + j, k, mm);
            _mm512_mask_storeu_ps(m2 + j, k, vv);
            _mm512_mask_storeu_ps(p + j, k, pp);
            if (zero_g) _mm512_mask_storeu_ps(G + j, k, _mm512_setzero_ps());
            vbad = _mm512_add_ps(vbad, _mm512_sub_ps(pp, pp));
        }
        bad = lsae__dot_reduce(vbad, _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
    }
#elif defined(LSAE__AVX2)
    {
        const __m256 vclip = _mm256_set1_ps(clip), vb1 = _mm256_set1_ps(b1), vb2 = _mm256_set1_ps(b2), vo1 = _mm256_set1_ps(omb1);
        const __m256 vo2 = _mm256_set1_ps(omb2), vst = _mm256_set1_ps(step_size), vbc = _mm256_set1_ps(bc2_sqrt), veps = _mm256_set1_ps(eps);
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256 vbad = _mm256_setzero_ps();
        float t[8];
        int q;
        for (; j < n; j += 8) {
            /* lanes below n - j: all eight but at the tail (masked there) */
            const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - j < 8 ? n - j : 8)), lane);
            __m256 g = _mm256_mul_ps(_mm256_maskload_ps(G + j, k), vclip);
            __m256 mm = _mm256_add_ps(_mm256_mul_ps(_mm256_maskload_ps(m1 + j, k), vb1), _mm256_mul_ps(g, vo1));
            __m256 vv = _mm256_add_ps(_mm256_mul_ps(_mm256_maskload_ps(m2 + j, k), vb2), _mm256_mul_ps(_mm256_mul_ps(g, g), vo2));
            __m256 pp = _mm256_maskload_ps(p + j, k);
            pp = _mm256_sub_ps(pp, _mm256_mul_ps(vst, _mm256_div_ps(mm, _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vv), vbc), veps))));
            _mm256_maskstore_ps(m1 + j, k, mm);
            _mm256_maskstore_ps(m2 + j, k, vv);
            _mm256_maskstore_ps(p + j, k, pp);
            if (zero_g) _mm256_maskstore_ps(G + j, k, _mm256_setzero_ps());
            vbad = _mm256_add_ps(vbad, _mm256_sub_ps(pp, pp));
        }
        _mm256_storeu_ps(t, vbad);
        for (q = 0; q < 8; ++q) bad += t[q];
    }
#elif defined(LSAE__NEON)
    {
        const float32x4_t vclip = vdupq_n_f32(clip), vb1 = vdupq_n_f32(b1), vb2 = vdupq_n_f32(b2), vo1 = vdupq_n_f32(omb1);
        const float32x4_t vo2 = vdupq_n_f32(omb2), vst = vdupq_n_f32(step_size), vbc = vdupq_n_f32(bc2_sqrt), veps = vdupq_n_f32(eps);
        float32x4_t vbad = vdupq_n_f32(0.0f);
        /* the tail (under 4) goes through the same vector operations,
           copied to and from a padded block */
        float tg[4] = { 0 }, tm1[4] = { 0 }, tm2[4] = { 0 }, tp[4] = { 0 };
        for (; j < n; j += 4) {
            const size_t nl = n - j < 4 ? n - j : 4;
            float *pg = G + j, *pm1 = m1 + j, *pm2 = m2 + j, *pw = p + j;
            float32x4_t g, mm, vv, pp;
            size_t q;
            if (nl < 4) {
                for (q = 0; q < nl; ++q) { tg[q] = pg[q]; tm1[q] = pm1[q]; tm2[q] = pm2[q]; tp[q] = pw[q]; }
                pg = tg; pm1 = tm1; pm2 = tm2; pw = tp;
            }
            g = vmulq_f32(vld1q_f32(pg), vclip);
            mm = vaddq_f32(vmulq_f32(vld1q_f32(pm1), vb1), vmulq_f32(g, vo1));
            vv = vaddq_f32(vmulq_f32(vld1q_f32(pm2), vb2), vmulq_f32(vmulq_f32(g, g), vo2));
            pp = vsubq_f32(vld1q_f32(pw), vmulq_f32(vst, vdivq_f32(mm, vaddq_f32(vdivq_f32(vsqrtq_f32(vv), vbc), veps))));
            vst1q_f32(pm1, mm);
            vst1q_f32(pm2, vv);
            vst1q_f32(pw, pp);
            if (zero_g) vst1q_f32(pg, vdupq_n_f32(0.0f));
            /* the padding lanes are zeros throughout (pp = 0 - 0 * (0 / (0 + eps))): they add 0 */
            vbad = vaddq_f32(vbad, vsubq_f32(pp, pp));
            if (nl < 4)
                for (q = 0; q < nl; ++q) {
                    if (zero_g) G[j + q] = 0.0f;
                    m1[j + q] = tm1[q]; m2[j + q] = tm2[q]; p[j + q] = tp[q];
                }
        }
        bad = vaddvq_f32(vbad);
    }
#else
    for (; j < n; ++j) {
        float g = G[j] * clip;
        float mm = m1[j] = m1[j] * b1 + g * omb1;
        float vv = m2[j] = m2[j] * b2 + g * g * omb2;
        p[j] -= step_size * (mm / (sqrtf(vv) / bc2_sqrt + eps));
        if (zero_g) G[j] = 0.0f;
        bad += p[j] - p[j];
    }
#endif
    return bad;
}

/* ------------------------------------------------------------------ top-k */

/* A candidate latent: its activation and index. The order is total:
   larger value first, then lower index, so a selection is the same whatever
   order candidates arrive in. */
typedef struct lsae__kv {
    float v;
    int32_t i;
} lsae__kv;

/* A float's bits as an unsigned key in the same order as the values (the
   usual trick: flip all bits of a negative, the sign bit of a positive).
   -0 sorts below +0; the encoder pass only ever produces +0 (ReLU). */
static uint32_t lsae__order_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The inverse of lsae__order_bits */
static float lsae__from_order_bits(uint32_t u)
{
    float v;
    u = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* a[0..n) sorted by increasing latent index (< L): LSD radix sort, 8 bits a
   pass (two passes up to 65,536 latents), through tmp[0..n) */
static void lsae__sort_index(lsae__kv *a, size_t n, lsae__kv *tmp, size_t L)
{
    lsae__kv *src = a, *dst = tmp, *sw;
    unsigned shift;
    for (shift = 0; shift < 32 && ((L - 1) >> shift) != 0; shift += 8) {
        size_t cnt[257], i;
        memset(cnt, 0, sizeof cnt);
        for (i = 0; i < n; ++i) cnt[(((uint32_t)src[i].i >> shift) & 255u) + 1]++;
        for (i = 0; i < 256; ++i) cnt[i + 1] += cnt[i];
        for (i = 0; i < n; ++i) dst[cnt[((uint32_t)src[i].i >> shift) & 255u]++] = src[i];
        sw = src;
        src = dst;
        dst = sw;
    }
    if (src != a) memcpy(a, src, n * sizeof(lsae__kv));
}

/* a[0..n) (16 <= n <= 256) sorted best first, as lsae__sort_best, in one
   bucket pass. Each entry becomes one 64-bit key whose ascending order is
   the order wanted; the span of the values' keys (largest minus smallest
   lsae__order_bits) is cut into 256 equal buckets, best first; a counting
   pass and a scatter put each key in its bucket, and an insertion pass
   finishes each bucket, whose keys never pass another bucket's. A row's
   top-k candidates spread over their span, so a bucket holds one or two:
   the pass is linear. Where a bucket would hold more than 16 (many equal
   values, or one far above the rest) it returns 0 with a untouched, and
   the radix sort runs. */
#define LSAE__SORT_BUCKET_MAX 16
static int lsae__sort_best_buckets(lsae__kv *a, size_t n)
{
    /* each entry as one 64-bit key, ascending = best first: the value's key
       complemented (larger values first) above the index (lower first) */
    uint64_t key[256], out[256];
    uint32_t cnt[257], kmax = 0u, kmin = 0xFFFFFFFFu, span;
    unsigned shift = 0;
    size_t i;
    for (i = 0; i < n; ++i) {
        const uint32_t k = lsae__order_bits(a[i].v);
        kmax = k > kmax ? k : kmax;
        kmin = k < kmin ? k : kmin;
        key[i] = (uint64_t)~k << 32 | (uint32_t)a[i].i;
    }
    span = kmax - kmin;
    while ((span >> shift) > 255u) ++shift;
    memset(cnt, 0, sizeof cnt);
    /* the bucket: (~k - ~kmax) = kmax - k, in [0, span] */
#define LSAE__BUCKET(u) ((((uint32_t)((u) >> 32)) - ~kmax) >> shift)
    for (i = 0; i < n; ++i) cnt[LSAE__BUCKET(key[i]) + 1]++;
    for (i = 1; i <= 256; ++i)
        if (cnt[i] > LSAE__SORT_BUCKET_MAX) return 0;
    for (i = 0; i < 256; ++i) cnt[i + 1] += cnt[i];
    for (i = 0; i < n; ++i) out[cnt[LSAE__BUCKET(key[i])]++] = key[i];
#undef LSAE__BUCKET
    /* insertion: an entry moves only within its bucket */
    for (i = 1; i < n; ++i) {
        const uint64_t e = out[i];
        size_t q = i;
        for (; q > 0 && out[q - 1] > e; --q) out[q] = out[q - 1];
        out[q] = e;
    }
    for (i = 0; i < n; ++i) {
        a[i].v = lsae__from_order_bits(~(uint32_t)(out[i] >> 32));
        a[i].i = (int32_t)(uint32_t)out[i];
    }
    return 1;
}

/* a[0..n) sorted best first (value descending, then index ascending), all
   indices < L: LSD radix sort on the value's key (lsae__order_bits), 8 bits
   a pass, least significant first, through tmp[0..n), then each run of
   equal values put in index order. A pass whose digit is the same for
   every key is skipped (the leading bits of the values mostly are).
   Branch-free apart from that: a comparison sort of a few hundred
   candidates mispredicts on most comparisons. Equal values are rare among
   candidates (they are positive floats), so the runs cost one scan; a
   long run (a model whose pre-activations saturate) is radix-sorted by
   index, never insertion-sorted, so no input is quadratic. From 16 to 256
   entries the bucket pass (lsae__sort_best_buckets) runs first. */
static void lsae__sort_best(lsae__kv *a, size_t n, lsae__kv *tmp, size_t L)
{
    lsae__kv *src = a, *dst = tmp, *sw;
    size_t i, j, r;
    unsigned shift;
    if (n >= 16 && n <= 256 && lsae__sort_best_buckets(a, n)) return;
    for (shift = 0; shift < 32; shift += 8) {
        size_t cnt[257];
#define LSAE__DIGIT(e) ((~lsae__order_bits((e).v) >> shift) & 255u)
        memset(cnt, 0, sizeof cnt);
        for (i = 0; i < n; ++i) cnt[LSAE__DIGIT(src[i]) + 1]++;
        if (n == 0 || cnt[LSAE__DIGIT(src[0]) + 1] == n) continue;
        for (i = 0; i < 256; ++i) cnt[i + 1] += cnt[i];
        for (i = 0; i < n; ++i) dst[cnt[LSAE__DIGIT(src[i])]++] = src[i];
#undef LSAE__DIGIT
        sw = src;
        src = dst;
        dst = sw;
    }
    if (src != a) memcpy(a, src, n * sizeof(lsae__kv));
    /* runs of equal keys (equal bits: +0 and -0 differ, as in the order) */
    for (i = 0; i + 1 < n; i = r) {
        const uint32_t key = lsae__order_bits(a[i].v);
        for (r = i + 1; r < n && lsae__order_bits(a[r].v) == key; ++r) {}
        if (r - i > 16) lsae__sort_index(a + i, r - i, tmp, L);
        else
            for (j = i + 1; j < r; ++j) {
                const lsae__kv e = a[j];
                size_t q = j;
                for (; q > i && a[q - 1].i > e.i; --q) a[q] = a[q - 1];
                a[q] = e;
            }
    }
}

/* ------------------------------------------------------ fused encoder pass */

/* a[0..n) the n < K positive activations of a row, best first: a[n..K)
   become zeros at the lowest latents (< L) not among them, as every other
   latent's activation is 0. scratch: 2 n entries. */
static void lsae__pad_lowest(lsae__kv *a, size_t n, size_t K, lsae__kv *scratch, size_t L)
{
    lsae__kv *byidx = scratch, *tmp = scratch + n;
    size_t l = 0, j = 0, q = n;
    memcpy(byidx, a, n * sizeof(lsae__kv));
    lsae__sort_index(byidx, n, tmp, L);
    for (; q < K && l < L; ++l) {
        if (j < n && (size_t)byidx[j].i == l) { ++j; continue; }
        a[q].v = 0.0f;
        a[q++].i = (int32_t)l;
    }
    LSAE_ASSERT(q == K);
}

/* Candidates a row's buffer holds for a top kk: twice kk, and at least
   kk + 192 so that a small k is not cut back every few candidates. */
static size_t lsae__buf_cap(size_t kk)
{
    return kk == 0 ? 0 : 2 * kk > kk + 192 ? 2 * kk : kk + 192;
}

/* The room allocated for such a buffer: the AVX-512 path appends all the
   accepted candidates of 16 latents before it checks for a full buffer,
   and stores whole registers of 8 entries, so up to 16 entries past the
   capacity get written. */
#define LSAE__BUF_SLACK 16
static size_t lsae__buf_room(size_t kk)
{
    return kk == 0 ? 0 : lsae__buf_cap(kk) + LSAE__BUF_SLACK;
}

/* Scratch for lsae__select over up to rows_cap rows with nthreads threads.
   Each thread keeps, per row, a buffer of lsae__buf_cap(K) candidates for the
   top K and lsae__buf_cap(KA) for the AuxK top KA: candidates that beat the
   row's threshold are appended, and a full buffer is cut back (lsae__compact)
   with a new, higher threshold. That is O(1) amortised per accepted
   candidate, where a heap costs O(log K) (KA = d/2 = 384 makes the AuxK heap
   deep and busy: a dead latent's value often enters while the threshold is
   still low). */
typedef struct lsae__select_ws {
    size_t rows_cap, K, KA;
    int nthreads;
    lsae__kv *bufs;      /* [nthreads][rows_cap][buf_room(K) + buf_room(KA)] */
    size_t *counts;      /* [nthreads][rows_cap][2] */
    float *thr;          /* [nthreads][rows_cap][2] the value to beat to enter each buffer */
    lsae__kv *merge;     /* [nthreads][2 * nthreads * buf_cap(max(K, KA))]: candidates, sort scratch */
    float *pack;         /* [nthreads][tile group][d * NT] */
    int index_order;     /* 1: each row's top K in increasing index order, not best first (the AuxK pick's) */
    size_t rows_per_thread; /* 0: LSAE__SELECT_ROWS_PER_THREAD; tests set others to run both splits */
} lsae__select_ws;

static void lsae__select_ws_free(const lsae_allocator *a, lsae__select_ws *ws)
{
    lsae__free(a, ws->bufs);
    lsae__free(a, ws->counts);
    lsae__free(a, ws->thr);
    lsae__free(a, ws->merge);
    lsae__free(a, ws->pack);
    memset(ws, 0, sizeof *ws);
}

static lsae_result lsae__select_ws_init(const lsae_allocator *a, lsae__select_ws *ws, size_t rows_cap, size_t K, size_t KA, size_t d, int nthreads)
{
    size_t n, n2, nm, np;
    memset(ws, 0, sizeof *ws);
    ws->rows_cap = rows_cap;
    ws->K = K;
    ws->KA = KA;
    ws->nthreads = nthreads;
    if (!lsae__mul3_size((size_t)nthreads, rows_cap, lsae__buf_room(K) + lsae__buf_room(KA), &n) || !lsae__mul3_size((size_t)nthreads, rows_cap, 2, &n2) ||
        !lsae__mul3_size((size_t)nthreads, (size_t)nthreads * 2, lsae__buf_cap(K > KA ? K : KA), &nm) ||
        !lsae__mul3_size((size_t)nthreads * lsae__tile_group(d), d, LSAE__NT, &np))
        return lsae__err(LSAE_OUT_OF_MEMORY, "top-k scratch size overflows");
    if (!(ws->bufs = (lsae__kv *)lsae__alloc_array(a, n, sizeof(lsae__kv), "top-k buffers")) ||
        !(ws->counts = (size_t *)lsae__alloc_array(a, n2, sizeof(size_t), "top-k counts")) ||
        !(ws->thr = (float *)lsae__alloc_array(a, n2, sizeof(float), "top-k thresholds")) ||
        !(ws->merge = (lsae__kv *)lsae__alloc_array(a, nm, sizeof(lsae__kv), "top-k merge scratch")) ||
        !(ws->pack = (float *)lsae__alloc_array(a, np, sizeof(float), "packed encoder tiles"))) {
        lsae__select_ws_free(a, ws);
        return LSAE_OUT_OF_MEMORY;
    }
    return LSAE_OK;
}

/* How many rows to select at once so the buffers stay near 32 MiB: a few
   rows per thread at least, never the whole batch when k is huge. */
static size_t lsae__select_rows(size_t rows, size_t K, size_t KA, int nthreads)
{
    size_t per_row = (size_t)nthreads * (lsae__buf_room(K) + lsae__buf_room(KA)) * sizeof(lsae__kv);
    size_t cap = per_row ? ((size_t)32 << 20) / per_row : rows;
    if (cap < LSAE__MR) cap = LSAE__MR;
    return rows < cap ? rows : cap;
}


#if defined(__GNUC__) || defined(__clang__)
#define LSAE__CTZ(x) ((unsigned)__builtin_ctz(x))
#define LSAE__POPCNT(x) ((unsigned)__builtin_popcount(x))
#else
static unsigned lsae__ctz(unsigned x) { unsigned n = 0; while (!(x & 1u)) { x >>= 1; ++n; } return n; }
LSAE__MAYBE_UNUSED static unsigned lsae__popcnt(unsigned x) { unsigned n = 0; while (x) { x &= x - 1; ++n; } return n; }
#define LSAE__CTZ(x) lsae__ctz(x)
#define LSAE__POPCNT(x) lsae__popcnt(x)
#endif
#if defined(__GNUC__) || defined(__clang__)
#define LSAE__CTZ64(x) ((unsigned)__builtin_ctzll(x))
#else
static unsigned lsae__ctz64(uint64_t x) { unsigned n = 0; while (!(x & 1u)) { x >>= 1; ++n; } return n; }
#define LSAE__CTZ64(x) lsae__ctz64(x)
#endif

/* How many of buf[0..n) have a value above t (*above) and how many at
   least t (*atleast). The vector paths compare 8 (AVX-512) or 4 (AVX2,
   NEON) entries at once, the values being every other 32-bit lane of the
   array (NEON's ld2 splits them from the indices). */
static void lsae__count_from(const lsae__kv *buf, size_t n, float t, size_t *above, size_t *atleast)
{
    size_t i = 0, c = 0, e = 0;
#if defined(LSAE__AVX512)
    const __m512 vt = _mm512_set1_ps(t);
    for (; i + 8 <= n; i += 8) {
        const __m512 v = _mm512_loadu_ps(&buf[i].v);
        c += LSAE__POPCNT((unsigned)_mm512_mask_cmp_ps_mask((__mmask16)0x5555, v, vt, _CMP_GT_OQ));
        e += LSAE__POPCNT((unsigned)_mm512_mask_cmp_ps_mask((__mmask16)0x5555, v, vt, _CMP_GE_OQ));
    }
#elif defined(LSAE__AVX2)
    const __m256 vt = _mm256_set1_ps(t);
    for (; i + 4 <= n; i += 4) {
        const __m256 v = _mm256_loadu_ps(&buf[i].v);
        c += LSAE__POPCNT((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, vt, _CMP_GT_OQ)) & 0x55u);
        e += LSAE__POPCNT((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, vt, _CMP_GE_OQ)) & 0x55u);
    }
#elif defined(LSAE__WASM_SIMD)
    const v128_t vt = wasm_f32x4_splat(t);
    for (; i + 4 <= n; i += 4) {
        /* the values of four entries, lanes 0 and 2 of each pair of entries */
        const v128_t v = wasm_i32x4_shuffle(wasm_v128_load(&buf[i]), wasm_v128_load(&buf[i + 2]), 0, 2, 4, 6);
        c += LSAE__POPCNT((unsigned)wasm_i32x4_bitmask(wasm_f32x4_gt(v, vt)));
        e += LSAE__POPCNT((unsigned)wasm_i32x4_bitmask(wasm_f32x4_ge(v, vt)));
    }
#elif defined(LSAE__NEON)
    const float32x4_t vt = vdupq_n_f32(t);
    while (i + 4 <= n) {
        /* per-lane counts: a true compare is all ones, -1, so subtracting it
           counts one; flushed every 2^20 blocks, long before a lane overflows */
        uint32x4_t vc = vdupq_n_u32(0), ve = vc;
        const size_t end = n - i > ((size_t)4 << 20) ? i + ((size_t)4 << 20) : n;
        for (; i + 4 <= end; i += 4) {
            const float32x4_t v = vld2q_f32(&buf[i].v).val[0];
            vc = vsubq_u32(vc, vcgtq_f32(v, vt));
            ve = vsubq_u32(ve, vcgeq_f32(v, vt));
        }
        c += vaddvq_u32(vc);
        e += vaddvq_u32(ve);
    }
#endif
    for (; i < n; ++i) {
        c += buf[i].v > t;
        e += buf[i].v >= t;
    }
    *above = c;
    *atleast = e;
}

#if defined(LSAE__AVX2) && !defined(LSAE__AVX512)
/* AVX2 has no compress instruction: the entries (8-byte value-index
   pairs) of a vector of four chosen by a 4-bit mask are moved to its front
   by one vpermps, its index vector looked up here: row m lists the 32-bit
   lanes of the chosen pairs, in order (the rest 0; they are stored but
   overwritten or past the count). */
static const int32_t lsae__pack4_lut[16][8] = {
    { 0, 0, 0, 0, 0, 0, 0, 0 }, { 0, 1, 0, 0, 0, 0, 0, 0 }, { 2, 3, 0, 0, 0, 0, 0, 0 }, { 0, 1, 2, 3, 0, 0, 0, 0 },
    { 4, 5, 0, 0, 0, 0, 0, 0 }, { 0, 1, 4, 5, 0, 0, 0, 0 }, { 2, 3, 4, 5, 0, 0, 0, 0 }, { 0, 1, 2, 3, 4, 5, 0, 0 },
    { 6, 7, 0, 0, 0, 0, 0, 0 }, { 0, 1, 6, 7, 0, 0, 0, 0 }, { 2, 3, 6, 7, 0, 0, 0, 0 }, { 0, 1, 2, 3, 6, 7, 0, 0 },
    { 4, 5, 6, 7, 0, 0, 0, 0 }, { 0, 1, 4, 5, 6, 7, 0, 0 }, { 2, 3, 4, 5, 6, 7, 0, 0 }, { 0, 1, 2, 3, 4, 5, 6, 7 }
};
/* bits 0, 2, 4, 6 of a _mm256_movemask_ps (the value lanes of four pairs)
   as bits 0..3 */
static unsigned lsae__even4(unsigned m)
{
    return (m & 1u) | ((m >> 1) & 2u) | ((m >> 2) & 4u) | ((m >> 3) & 8u);
}
/* the pairs of e chosen by m (bit q: pair q) stored from dst on (a whole
   vector written: 32 bytes); returns how many */
static size_t lsae__pack4(lsae__kv *dst, __m256 e, unsigned m)
{
    _mm256_storeu_ps((float *)(void *)dst, _mm256_permutevar8x32_ps(e, _mm256_loadu_si256((const __m256i *)(const void *)lsae__pack4_lut[m])));
    return LSAE__POPCNT(m);
}
#endif

/* buf[0..n) reduced, in place and in order, to the entries whose value is
   above t and the first ties of them whose value equals t */
static void lsae__keep_from(lsae__kv *buf, size_t n, float t, size_t ties)
{
    size_t i = 0, j = 0;
#if defined(LSAE__AVX512)
    /* 8 entries (64-bit lanes) at a time, packed by vpcompressq. The store
       writes a whole register at buf + j, j <= i: only entries already loaded
       are overwritten. */
    const __m512 vt = _mm512_set1_ps(t);
    for (; i + 8 <= n; i += 8) {
        const __m512i e = _mm512_loadu_si512((const void *)(buf + i));
        unsigned m = (unsigned)_mm512_mask_cmp_ps_mask((__mmask16)0x5555, _mm512_castsi512_ps(e), vt, _CMP_GT_OQ);
        if (ties) {
            unsigned eq = (unsigned)_mm512_mask_cmp_ps_mask((__mmask16)0x5555, _mm512_castsi512_ps(e), vt, _CMP_EQ_OQ);
            for (; eq && ties; --ties) {
                m |= eq & (0u - eq); /* the lowest tie left */
                eq &= eq - 1;
            }
        }
        /* the even bits (one per entry) gathered into the low 8 */
        m = (m | (m >> 1)) & 0x3333u;
        m = (m | (m >> 2)) & 0x0F0Fu;
        m = (m | (m >> 4)) & 0x00FFu;
        _mm512_storeu_si512((void *)(buf + j), _mm512_maskz_compress_epi64((__mmask8)m, e));
        j += LSAE__POPCNT(m);
    }
#elif defined(LSAE__AVX2)
    /* 4 entries at a time, packed by lsae__pack4 (the store at buf + j,
       j <= i, overwrites only entries already loaded) */
    const __m256 vt = _mm256_set1_ps(t);
    for (; i + 4 <= n; i += 4) {
        const __m256 e = _mm256_loadu_ps((const float *)(const void *)(buf + i));
        unsigned m = lsae__even4((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(e, vt, _CMP_GT_OQ)));
        if (ties) {
            unsigned eq = lsae__even4((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(e, vt, _CMP_EQ_OQ)));
            for (; eq && ties; --ties) {
                m |= eq & (0u - eq); /* the lowest tie left */
                eq &= eq - 1;
            }
        }
        j += lsae__pack4(buf + j, e, m);
    }
#endif
    for (; i < n; ++i) {
        const int tie = ties && buf[i].v == t, keep = buf[i].v > t || tie;
        ties -= (size_t)tie;
        buf[j] = buf[i];
        j += (size_t)keep;
    }
}

/* s[0..32): the values of buf[i n / 32], i < 32, sorted largest first
   (n >= 32). Sorted by rank: a value's place is the count of keys above
   its own (lsae__order_bits, a total order, so NaN cannot leave a place
   empty) plus the equal keys sampled before it. 32 x 32 compares with no
   branch, where an insertion sort's mispredicted branches cost more (on
   x86 a key's 32 compares are two AVX-512 or four AVX2 vector compares);
   the 32 loads go first and overlap (the buffer is mostly out of cache). */
static void lsae__sample32(const lsae__kv *buf, size_t n, float s[32])
{
    uint32_t key[32];
    float raw[32];
    size_t i;
    for (i = 0; i < 32; ++i) {
        raw[i] = buf[i * n / 32].v;
        key[i] = lsae__order_bits(raw[i]);
    }
#if defined(LSAE__AVX512) || defined(LSAE__AVX2)
    {
        /* the same rank from bit masks over the 32 keys: bit j of gt is
           key[j] > key[i], of eq key[j] == key[i]; lanes j < i are the low
           i bits. rank = popcount(gt) + popcount(eq & low_i) */
#if defined(LSAE__AVX512)
        const __m512i k0 = _mm512_loadu_si512((const void *)key), k1 = _mm512_loadu_si512((const void *)(key + 16));
#else
        /* AVX2 compares signed: flipping the top bit of both sides turns
           the unsigned order into the signed one */
        const __m256i bias = _mm256_set1_epi32((int)0x80000000u);
        __m256i kb[4];
        int c;
        for (c = 0; c < 4; ++c) kb[c] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(key + 8 * c)), bias);
#endif
        for (i = 0; i < 32; ++i) {
            const unsigned low_i = i ? 0xFFFFFFFFu >> (32 - i) : 0u;
            unsigned gt, eq;
#if defined(LSAE__AVX512)
            const __m512i ki = _mm512_set1_epi32((int)key[i]);
            gt = (unsigned)_mm512_cmpgt_epu32_mask(k0, ki) | (unsigned)_mm512_cmpgt_epu32_mask(k1, ki) << 16;
            eq = (unsigned)_mm512_cmpeq_epu32_mask(k0, ki) | (unsigned)_mm512_cmpeq_epu32_mask(k1, ki) << 16;
#else
            const __m256i ki = _mm256_xor_si256(_mm256_set1_epi32((int)key[i]), bias);
            gt = eq = 0u;
            for (c = 0; c < 4; ++c) {
                gt |= (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(kb[c], ki))) << (8 * c);
                eq |= (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(kb[c], ki))) << (8 * c);
            }
#endif
            s[LSAE__POPCNT(gt) + LSAE__POPCNT(eq & low_i)] = raw[i];
        }
    }
#else
    {
        size_t j;
        for (i = 0; i < 32; ++i) {
            unsigned rank = 0;
            for (j = 0; j < 32; ++j) rank += (unsigned)(key[j] > key[i]) + (unsigned)(j < i && key[j] == key[i]);
            s[rank] = raw[i];
        }
    }
#endif
}

/* The first (largest) of the 32 sampled values s (sorted, largest first)
   that at least kk of buf[0..n) exceed (at_least 0) or reach (at_least 1),
   by a bisection over the sample, one counting pass a try (counts only grow
   down the sample); 32 where none does. *at: that count there; *up: the
   count at the sample before it (fewer than kk: the probe that last raised
   the lower end was there), 0 when it is the first. */
static size_t lsae__sample_bisect(const lsae__kv *buf, size_t n, size_t kk, const float *s, int at_least, size_t *at, size_t *up)
{
    size_t lo = 0, hi = 32, c, e;
    *at = n;
    *up = 0;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        size_t got;
        lsae__count_from(buf, n, s[mid], &c, &e);
        got = at_least ? e : c;
        if (got >= kk) {
            hi = mid;
            *at = got;
        } else {
            lo = mid + 1;
            *up = got;
        }
    }
    return hi;
}

/* buf[0..n) (any order, 0 < kk < n) cut in place, keeping their order, to
   the entries whose value exceeds a threshold that at least kk of them
   exceed: the kk best are all kept, since each beats every entry not above
   the threshold, and the sort that follows orders fewer. The threshold is
   one of 32 values sampled at even strides, the largest that kk or more
   entries exceed (a bisection over the sorted sample, one counting pass a
   try, so about n / 32 more than kk stay); where no sampled value does,
   nothing is cut. Returns the count kept. */
static size_t lsae__cut_above(lsae__kv *buf, size_t n, size_t kk)
{
    float s[32];
    size_t hi, kept, below;
    if (n < 64 || n - kk < 32) return n;
    lsae__sample32(buf, n, s);
    hi = lsae__sample_bisect(buf, n, kk, s, 0, &kept, &below);
    if (hi == 32) return n;
    lsae__keep_from(buf, n, s[hi], 0);
    return kept;
}

#if defined(LSAE__AVX512)
/* The kk-th best value of buf[0..n) (64 <= n) bracketed between two of 32
   sampled values: a bisection over the sorted sample (one counting pass a
   try) finds the largest sample s[hi] with at least kk values at or above
   it; the m values in [s[hi], s[hi - 1]) (about n / 32; s[hi - 1] has fewer
   than kk at or above it) are packed out by vcompressps, and the kk-th
   best is the one with fewer than r of them above it and at least r at or
   above it (r = kk less those at or above s[hi - 1]), counted by vector
   compares. Every step is branch-free but the bisection's: a row's fresh
   candidates mispredict a per-entry test (a scalar copy-out with one ran
   slower than the 33-pass bisection it replaced). Returns 0 where the
   bracket holds more than 64 or no sample has kk at or above it, with
   *klo and *khi narrowed to the bracket's keys. */
static int lsae__kth_bracket(const lsae__kv *buf, size_t n, size_t kk, float *t, uint32_t *klo, uint32_t *khi)
{
    float s[32], mv[64 + 16]; /* + 16: a whole vector is stored at mv + m */
    size_t hi, e_hi, e_up, i, j, m = 0, r, nv;
    lsae__sample32(buf, n, s);
    hi = lsae__sample_bisect(buf, n, kk, s, 1, &e_hi, &e_up);
    if (hi < 32) *klo = lsae__order_bits(s[hi]);
    if (hi > 0) *khi = lsae__order_bits(s[hi - 1]) - 1u;
    if (hi == 32 || e_hi - e_up > 64) return 0;
    {
        const __m512 vlo = _mm512_set1_ps(s[hi]), vup = _mm512_set1_ps(hi ? s[hi - 1] : 0.0f);
        for (i = 0; i + 8 <= n; i += 8) {
            const __m512 v = _mm512_loadu_ps(&buf[i].v); /* values in the even lanes */
            __mmask16 in = _mm512_mask_cmp_ps_mask((__mmask16)0x5555, v, vlo, _CMP_GE_OQ);
            if (hi) in = _mm512_mask_cmp_ps_mask(in, v, vup, _CMP_LT_OQ);
            _mm512_storeu_ps(mv + m, _mm512_maskz_compress_ps(in, v));
            m += LSAE__POPCNT((unsigned)in);
        }
        for (; i < n; ++i) {
            const float v = buf[i].v;
            mv[m] = v;
            m += (size_t)((v >= s[hi]) & (!hi | (v < s[hi ? hi - 1 : 0])));
        }
        _mm512_storeu_ps(mv + m, _mm512_setzero_ps()); /* the last vector's lanes past m: defined, and masked off */
    }
    LSAE_ASSERT(m == e_hi - e_up);
    r = kk - e_up;
    nv = (m + 15) / 16;
    for (i = 0; i < m; ++i) {
        const __m512 x = _mm512_set1_ps(mv[i]);
        size_t gt = 0, ge = 0;
        for (j = 0; j < nv; ++j) {
            const __mmask16 live = (__mmask16)(16 * (j + 1) <= m ? 0xFFFFu : (1u << (m % 16)) - 1u);
            const __m512 y = _mm512_loadu_ps(mv + 16 * j);
            gt += LSAE__POPCNT((unsigned)_mm512_mask_cmp_ps_mask(live, y, x, _CMP_GT_OQ));
            ge += LSAE__POPCNT((unsigned)_mm512_mask_cmp_ps_mask(live, y, x, _CMP_GE_OQ));
        }
        if (gt < r && ge >= r) {
            *t = mv[i] == 0.0f ? 0.0f : mv[i]; /* a zero of either sign: +0, as the bisection finds */
            return 1;
        }
    }
    LSAE_ASSERT(0);
    return 0;
}
#endif

/* buf[0..n), in increasing index order, reduced in place and in order to
   its kk best (0 < kk <= n), with no reordering and no scratch: the kk-th
   best value t is found by bisecting its bit pattern (the largest key with
   at least kk values at or above it; 32 counting passes; with AVX-512 the
   bracket of lsae__kth_bracket first, and the bisection only between its
   keys where that fails), then the entries above t are kept with the first
   (lowest-index) of those equal to t. Returns t. */
static float lsae__keep_best(lsae__kv *buf, size_t n, size_t kk)
{
    uint32_t klo = 0x007FFFFFu, khi = 0xFF800000u; /* the keys of -inf and +inf */
    size_t c, e;
    float t = 0.0f;
    int found = 0;
#if defined(LSAE__AVX512)
    if (n >= 64) found = lsae__kth_bracket(buf, n, kk, &t, &klo, &khi);
#endif
    if (!found) {
        while (klo < khi) {
            const uint32_t mid = klo + (uint32_t)((khi - klo) / 2u + 1u);
            lsae__count_from(buf, n, lsae__from_order_bits(mid), &c, &e);
            if (e >= kk) klo = mid;
            else khi = mid - 1u;
        }
        t = lsae__from_order_bits(klo);
    }
    lsae__count_from(buf, n, t, &c, &e);
    lsae__keep_from(buf, n, t, kk - c);
    return t;
}

/* A buffer of n >= lsae__buf_cap(kk) candidates (each row keeps one for
   its top K and one for its AuxK top KA; candidates above the threshold are
   appended by lsae__offer_row) cut back to between kk and
   n - (n - kk) / 4 of them, and the threshold a later candidate must
   exceed raised to match.

   Exactness. A buffer holds its candidates in increasing latent index: a
   row meets a thread's latents in that order and every cut keeps the order.
   A threshold t is exact when the kept entries are at least kk of those
   above t, or, where fewer than kk are above t, all of those and then the
   first of the entries equal to t (the lowest indices) up to kk: whatever
   is dropped now, or rejected later for not exceeding t (a later candidate
   equal to t has a higher index), is worse than kk kept ones.

   Choosing t. 32 values sampled at even strides are sorted; the one at the
   rank that should leave about kk + (n - kk) / 4 above it is tried first,
   then the sample is bisected (counts only grow as t goes down it) until
   one fits either rule; each try is one vector counting pass. Where no
   sampled value fits, t is the kk-th best value itself (lsae__keep_best). */
static void lsae__compact(lsae__kv *buf, size_t *cnt, size_t kk, float *thr)
{
    const size_t n = *cnt, most = n - (n - kk) / 4;
    size_t c, e;
    if (n >= 64) {
        const size_t keep = kk + (n - kk) / 4;
        size_t lo = 0, hi = 31, at = (32 * keep + n - 1) / n; /* 1-based, about 32 keep / n */
        float s[32];
        lsae__sample32(buf, n, s);
        at = at < 1 ? 0 : at > 32 ? 31 : at - 1;
        for (;;) {
            lsae__count_from(buf, n, s[at], &c, &e);
            if (c >= kk && c <= most) {
                lsae__keep_from(buf, n, s[at], 0);
                *cnt = c;
                *thr = s[at];
                return;
            }
            if (c < kk && e >= kk) {
                lsae__keep_from(buf, n, s[at], kk - c);
                *cnt = kk;
                *thr = s[at];
                return;
            }
            if (c < kk) {
                if (at == hi) break;
                lo = at + 1;
            } else {
                if (at == lo) break;
                hi = at - 1;
            }
            at = lo + (hi - lo) / 2;
        }
    }
    *thr = lsae__keep_best(buf, n, kk);
    *cnt = kk;
}

/* One row of a tile: pre_j = ReLU(c[j] + b[j]) for latent l0 + j, j < nt,
   offered to the row's top-K buffer h and, where bit j of dead is set, to
   its AuxK buffer ha. thr[0] and thr[1] hold the value a candidate must
   exceed to enter: 0 until a buffer is first cut back (a zero activation
   never enters; lsae__select adds the zeros a row's top needs at the
   merge), then what the cut-back chose. Within one thread a row meets
   latents in increasing index order, so a candidate that only ties the
   threshold has a higher index than the kept one and loses: the strict
   test is exact, and almost every value is rejected by one vector compare. */
static void lsae__offer_row(const float *c, const float *b, size_t nt, size_t l0, uint64_t dead,
                            lsae__kv *h, size_t *cnt, size_t K, lsae__kv *ha, size_t KA, float *thr)
{
    const size_t capK = lsae__buf_cap(K), capKA = lsae__buf_cap(KA);
    size_t j = 0;
#define LSAE__OFFER_MAIN(jj)                                                    \
    do {                                                                        \
        float x_ = c[jj] + b[jj];                                               \
        x_ = x_ > 0.0f ? x_ : 0.0f; /* ReLU */                                  \
        if (x_ > thr[0]) {                                                      \
            /* append; cut the buffer back when it is full */                 \
            h[cnt[0]].v = x_;                                                   \
            h[cnt[0]].i = (int32_t)(l0 + (jj));                                 \
            if (++cnt[0] == capK) lsae__compact(h, &cnt[0], K, &thr[0]);       \
        }                                                                       \
    } while (0)
#define LSAE__OFFER_AUX(jj)                                                     \
    do {                                                                        \
        float x_ = c[jj] + b[jj];                                               \
        x_ = x_ > 0.0f ? x_ : 0.0f;                                             \
        if (x_ > thr[1]) {                                                      \
            ha[cnt[1]].v = x_;                                                  \
            ha[cnt[1]].i = (int32_t)(l0 + (jj));                                \
            if (++cnt[1] == capKA) lsae__compact(ha, &cnt[1], KA, &thr[1]);    \
        }                                                                       \
    } while (0)
#if defined(LSAE__AVX512)
    if (nt == LSAE__NT) {
        /* the accepted candidates of 16 latents are appended at once: value
           and index interleaved into 16 (v, i) pairs, two registers of 8,
           each packed by vpcompressq and stored whole (the buffers have
           LSAE__BUF_SLACK entries of room past their capacity) */
        const __m512 zero = _mm512_setzero_ps();
        const __m512i pair_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        const __m512i pair_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (j = 0; j < LSAE__NT; j += 16) {
            const __m512 v = _mm512_maskz_max_ps((__mmask16)0xFFFF, _mm512_add_ps(_mm512_loadu_ps(c + j), _mm512_loadu_ps(b + j)), zero); /* ReLU (the masked form: see lsae__half256) */
            const unsigned m = (unsigned)_mm512_cmp_ps_mask(v, _mm512_set1_ps(thr[0]), _CMP_GT_OQ);
            const unsigned ma = KA ? (unsigned)_mm512_cmp_ps_mask(v, _mm512_set1_ps(thr[1]), _CMP_GT_OQ) & (unsigned)((dead >> j) & 0xFFFFu) : 0u;
            __m512i lo, hi, idx;
            if (!(m | ma)) continue;
            idx = _mm512_add_epi32(_mm512_set1_epi32((int)(l0 + j)), iota);
            lo = _mm512_permutex2var_epi32(_mm512_castps_si512(v), pair_lo, idx);
            hi = _mm512_permutex2var_epi32(_mm512_castps_si512(v), pair_hi, idx);
            if (m) {
                _mm512_storeu_si512((void *)(h + cnt[0]), _mm512_maskz_compress_epi64((__mmask8)(m & 0xFFu), lo));
                cnt[0] += LSAE__POPCNT(m & 0xFFu);
                _mm512_storeu_si512((void *)(h + cnt[0]), _mm512_maskz_compress_epi64((__mmask8)(m >> 8), hi));
                cnt[0] += LSAE__POPCNT(m >> 8);
                if (cnt[0] >= capK) lsae__compact(h, &cnt[0], K, &thr[0]);
            }
            if (ma) {
                _mm512_storeu_si512((void *)(ha + cnt[1]), _mm512_maskz_compress_epi64((__mmask8)(ma & 0xFFu), lo));
                cnt[1] += LSAE__POPCNT(ma & 0xFFu);
                _mm512_storeu_si512((void *)(ha + cnt[1]), _mm512_maskz_compress_epi64((__mmask8)(ma >> 8), hi));
                cnt[1] += LSAE__POPCNT(ma >> 8);
                if (cnt[1] >= capKA) lsae__compact(ha, &cnt[1], KA, &thr[1]);
            }
        }
        return;
    }
#elif defined(LSAE__AVX2)
    if (nt == LSAE__NT) {
        /* as the AVX-512 path: the accepted candidates of 8 latents appended
           at once, value and index interleaved into two vectors of four
           pairs, each packed by lsae__pack4 (up to 8 + 3 entries past the
           capacity are written: the room has LSAE__BUF_SLACK) */
        const __m256 zero = _mm256_setzero_ps();
        const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (j = 0; j < LSAE__NT; j += 8) {
            const __m256 v = _mm256_max_ps(_mm256_add_ps(_mm256_loadu_ps(c + j), _mm256_loadu_ps(b + j)), zero);
            const unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(thr[0]), _CMP_GT_OQ));
            const unsigned ma = KA ? (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(thr[1]), _CMP_GT_OQ)) & (unsigned)((dead >> j) & 0xFFu) : 0u;
            __m256 idx, lo, hi, p03, p47;
            if (!(m | ma)) continue;
            idx = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_set1_epi32((int)(l0 + j)), iota));
            lo = _mm256_unpacklo_ps(v, idx); /* pairs 0, 1 | 4, 5 */
            hi = _mm256_unpackhi_ps(v, idx); /* pairs 2, 3 | 6, 7 */
            p03 = _mm256_permute2f128_ps(lo, hi, 0x20);
            p47 = _mm256_permute2f128_ps(lo, hi, 0x31);
            if (m) {
                cnt[0] += lsae__pack4(h + cnt[0], p03, m & 0xFu);
                cnt[0] += lsae__pack4(h + cnt[0], p47, m >> 4);
                if (cnt[0] >= capK) lsae__compact(h, &cnt[0], K, &thr[0]);
            }
            if (ma) {
                cnt[1] += lsae__pack4(ha + cnt[1], p03, ma & 0xFu);
                cnt[1] += lsae__pack4(ha + cnt[1], p47, ma >> 4);
                if (cnt[1] >= capKA) lsae__compact(ha, &cnt[1], KA, &thr[1]);
            }
        }
        return;
    }
#elif defined(LSAE__WASM_SIMD)
    if (nt == LSAE__NT) {
        /* 8 latents per compare, in two f32x4. ReLU as pmax(0, x) = 0 < x ?
           x : 0, which is the scalar x > 0 ? x : 0 for NaN and -0 too. */
        const v128_t zero = wasm_f32x4_splat(0.0f);
        for (j = 0; j < LSAE__NT; j += 8) {
            const v128_t lo = wasm_f32x4_pmax(zero, wasm_f32x4_add(wasm_v128_load(c + j), wasm_v128_load(b + j)));
            const v128_t hi = wasm_f32x4_pmax(zero, wasm_f32x4_add(wasm_v128_load(c + j + 4), wasm_v128_load(b + j + 4)));
            /* the thresholds rise as candidates enter: their values now (a
               superset of what passes; OFFER_MAIN tests each again) */
            const v128_t tm = wasm_f32x4_splat(thr[0]);
            unsigned m = (unsigned)wasm_i32x4_bitmask(wasm_f32x4_gt(lo, tm)) | (unsigned)wasm_i32x4_bitmask(wasm_f32x4_gt(hi, tm)) << 4;
            unsigned ma = 0u;
            if (KA) {
                const v128_t ta = wasm_f32x4_splat(thr[1]);
                ma = ((unsigned)wasm_i32x4_bitmask(wasm_f32x4_gt(lo, ta)) | (unsigned)wasm_i32x4_bitmask(wasm_f32x4_gt(hi, ta)) << 4) &
                     (unsigned)((dead >> j) & 0xFFu);
            }
            while (m) { size_t jj = j + LSAE__CTZ(m); m &= m - 1; LSAE__OFFER_MAIN(jj); }
            while (ma) { size_t jj = j + LSAE__CTZ(ma); ma &= ma - 1; LSAE__OFFER_AUX(jj); }
        }
        return;
    }
#elif defined(LSAE__NEON)
    if (nt == LSAE__NT) {
        /* 16 latents at a time. The thresholds are never negative, so
           c + b > thr exactly when ReLU(c + b) > thr: the compare needs no
           ReLU (and a NaN fails it, as it fails the scalar test). Almost
           always nothing passes, which one horizontal max finds; otherwise
           the lanes that pass become a bit mask (lane q's compare ANDed with
           2^q, summed across) and go through the scalar code, as with AVX2. */
        static const uint32_t lane_bits[4] = { 1u, 2u, 4u, 8u };
        const uint32x4_t bit = vld1q_u32(lane_bits);
        for (j = 0; j < LSAE__NT; j += 16) {
            /* the thresholds as they are now (a cut-back raises them) */
            const float32x4_t t0 = vdupq_n_f32(thr[0]), t1 = vdupq_n_f32(thr[1]);
            const float32x4_t v0 = vaddq_f32(vld1q_f32(c + j), vld1q_f32(b + j));
            const float32x4_t v1 = vaddq_f32(vld1q_f32(c + j + 4), vld1q_f32(b + j + 4));
            const float32x4_t v2 = vaddq_f32(vld1q_f32(c + j + 8), vld1q_f32(b + j + 8));
            const float32x4_t v3 = vaddq_f32(vld1q_f32(c + j + 12), vld1q_f32(b + j + 12));
            const unsigned live = KA ? (unsigned)((dead >> j) & 0xFFFFu) : 0u;
            uint32x4_t g0 = vcgtq_f32(v0, t0), g1 = vcgtq_f32(v1, t0), g2 = vcgtq_f32(v2, t0), g3 = vcgtq_f32(v3, t0);
            unsigned m = 0, ma = 0;
            if (vmaxvq_u32(vorrq_u32(vorrq_u32(g0, g1), vorrq_u32(g2, g3))))
                m = vaddvq_u32(vandq_u32(g0, bit)) | vaddvq_u32(vandq_u32(g1, bit)) << 4 |
                    vaddvq_u32(vandq_u32(g2, bit)) << 8 | vaddvq_u32(vandq_u32(g3, bit)) << 12;
            if (live) {
                g0 = vcgtq_f32(v0, t1); g1 = vcgtq_f32(v1, t1); g2 = vcgtq_f32(v2, t1); g3 = vcgtq_f32(v3, t1);
                if (vmaxvq_u32(vorrq_u32(vorrq_u32(g0, g1), vorrq_u32(g2, g3))))
                    ma = (vaddvq_u32(vandq_u32(g0, bit)) | vaddvq_u32(vandq_u32(g1, bit)) << 4 |
                          vaddvq_u32(vandq_u32(g2, bit)) << 8 | vaddvq_u32(vandq_u32(g3, bit)) << 12) & live;
            }
            while (m) { size_t jj = j + LSAE__CTZ(m); m &= m - 1; LSAE__OFFER_MAIN(jj); }
            while (ma) { size_t jj = j + LSAE__CTZ(ma); ma &= ma - 1; LSAE__OFFER_AUX(jj); }
        }
        return;
    }
#endif
    for (j = 0; j < nt; ++j) {
        LSAE__OFFER_MAIN(j);
        if (KA && ((dead >> j) & 1u)) LSAE__OFFER_AUX(j);
    }
#undef LSAE__OFFER_MAIN
#undef LSAE__OFFER_AUX
}

/* A row's candidates from every thread's buffer (which = 0: the top-K
   buffers, 1: the AuxK ones) into merge in increasing index order: each
   buffer is in index order and the threads' latents interleave. Two
   threads' buffers are merged as the two sorted runs they are (each holds
   whole groups of tiles, so the runs are long and the comparison
   predictable); more are radix-sorted through tmp. Returns the count. */
static size_t lsae__merge_index(const lsae__select_ws *ws, ptrdiff_t row, size_t stride, int which, int team_size, lsae__kv *merge,
                                lsae__kv *tmp, size_t L)
{
    const size_t off = which ? lsae__buf_room(ws->K) : 0;
    size_t na = 0;
    int s;
    if (team_size == 2) {
        const lsae__kv *h0 = ws->bufs + (size_t)row * stride + off;
        const lsae__kv *h1 = ws->bufs + (ws->rows_cap + (size_t)row) * stride + off;
        const size_t n0 = ws->counts[(size_t)row * 2 + (size_t)which], n1 = ws->counts[(ws->rows_cap + (size_t)row) * 2 + (size_t)which];
        size_t i0 = 0, i1 = 0;
        while (i0 < n0 && i1 < n1) merge[na++] = h0[i0].i < h1[i1].i ? h0[i0++] : h1[i1++];
        memcpy(merge + na, h0 + i0, (n0 - i0) * sizeof(lsae__kv));
        na += n0 - i0;
        memcpy(merge + na, h1 + i1, (n1 - i1) * sizeof(lsae__kv));
        na += n1 - i1;
        return na;
    }
    for (s = 0; s < team_size; ++s) {
        const lsae__kv *h = ws->bufs + ((size_t)s * ws->rows_cap + (size_t)row) * stride + off;
        const size_t *cnt = ws->counts + ((size_t)s * ws->rows_cap + (size_t)row) * 2;
        memcpy(merge + na, h, cnt[which] * sizeof(lsae__kv));
        na += cnt[which];
    }
    if (team_size > 1) lsae__sort_index(merge, na, tmp, L);
    return na;
}

/* out[0..kk): the na < kk candidates merge[0..na) (index order) with the
   lowest eligible latents that are not among them at 0, all in index
   order: eligible are the set bits of dead (at least kk of them), or every
   latent < L (dead NULL). Once the zeros are placed, the remaining
   candidates follow as they are. dead: a word at a time, set bits only
   (dead latents are few, and rows with fewer than kk positive values among
   them are the usual case once they have stopped firing). */
static void lsae__pad_index(lsae__kv *out, const lsae__kv *merge, size_t na, size_t kk, const uint64_t *dead, size_t L)
{
    size_t w, j = 0, q = 0, zeros = kk - na;
    for (w = 0; zeros && w < (L + 63) / 64; ++w) {
        uint64_t bits = dead ? dead[w] : ~(uint64_t)0;
        while (bits && zeros) {
            const size_t l = 64 * w + LSAE__CTZ64(bits);
            bits &= bits - 1;
            if (l >= L) break;
            if (j < na && (size_t)merge[j].i == l) out[q++] = merge[j++];
            else { out[q].v = 0.0f; out[q++].i = (int32_t)l; --zeros; }
        }
    }
    memcpy(out + q, merge + j, (na - j) * sizeof(lsae__kv));
    q += na - j;
    LSAE_ASSERT(q == kk);
}

/* A row's kk best from one kind of the threads' buffers (which, as for
   lsae__merge_index), in increasing index order, into out[0..kk): the
   candidates merged by index and the kk best kept in that order, no sort
   on values; with fewer than kk, all of them and the lowest eligible
   latents that are not candidates at 0 (lsae__pad_index; eligible: dead's
   set bits, or every latent where dead is NULL). */
static void lsae__pick_index(const lsae__select_ws *ws, ptrdiff_t row, size_t stride, int which, int team_size, lsae__kv *merge,
                             lsae__kv *tmp, size_t kk, const uint64_t *dead, size_t L, lsae__kv *out)
{
    const size_t n = lsae__merge_index(ws, row, stride, which, team_size, merge, tmp, L);
    if (n >= kk) {
        lsae__keep_best(merge, n, kk);
        memcpy(out, merge, kk * sizeof(lsae__kv));
    } else
        lsae__pad_index(out, merge, n, kk, dead, L);
}

/* One group of tiles [t0, t1) of lsae__select's pass over rows [rb0, rb1):
   the tiles packed into P, then each row block's products offered to the
   rows' buffers (bufs, counts, thr indexed by row). */
static void lsae__select_group(const lsae_model *m, const float *xc, size_t t0, size_t t1, size_t rb0, size_t rb1, float *P, float *Cbuf,
                               const uint64_t *dead_bits, size_t K, size_t KA, lsae__kv *bufs, size_t *counts, float *thr, size_t stride,
                               const lsae__select_ws *ws)
{
    const size_t d = m->d, L = m->L;
    size_t t, r0, r;
    for (t = t0; t < t1; ++t)
        lsae__pack_tile(P + (t - t0) * d * LSAE__NT, m->W_enc, d, t * LSAE__NT, L - t * LSAE__NT < LSAE__NT ? L - t * LSAE__NT : LSAE__NT);
    for (r0 = rb0; r0 < rb1; r0 += LSAE__MR) {
        const size_t mr = rb1 - r0 < LSAE__MR ? rb1 - r0 : LSAE__MR;
        for (t = t0; t < t1; ++t) {
            const size_t l0 = t * LSAE__NT, nt = L - l0 < LSAE__NT ? L - l0 : LSAE__NT;
            const uint64_t dead = KA ? dead_bits[t] : 0;
            lsae__tile_rows(Cbuf, LSAE__NT, xc + r0 * d, d, mr, P + (t - t0) * d * LSAE__NT, d, 0);
            for (r = 0; r < mr; ++r) {
                lsae__kv *h = bufs + (r0 + r) * stride;
                lsae__offer_row(Cbuf + r * LSAE__NT, m->b_enc + l0, nt, l0, dead, h, counts + 2 * (r0 + r), K,
                                h + lsae__buf_room(ws->K), KA, thr + 2 * (r0 + r));
            }
        }
    }
}

/* Row `row`'s results from the team's buffers (team_size of them, slot s
   at ws->bufs + (s rows_cap + row) stride): top [ws->K] its K best, best
   first (or in index order, ws->index_order), and with KA, aux [ws->KA] its
   KA best dead latents in index order. merge: the thread's scratch. */
static void lsae__select_finish_row(const lsae__select_ws *ws, ptrdiff_t row, size_t stride, int team_size, size_t K,
                                    lsae__kv *top, const uint64_t *dead_bits, size_t KA, lsae__kv *aux, lsae__kv *merge, size_t L)
{
    const size_t kmax = ws->K > ws->KA ? ws->K : ws->KA;
    const size_t half = (size_t)team_size * lsae__buf_cap(kmax); /* the sort's scratch follows the candidates */
    size_t n = 0;
    int s;
    if (ws->index_order) {
        /* the K best in index order, as the AuxK pick below: no sort on
           values (lsae__aux_from_dead wants index order) */
        lsae__pick_index(ws, row, stride, 0, team_size, merge, merge + half, K, NULL, L, top + (size_t)row * ws->K);
    } else {
        for (s = 0; s < team_size; ++s) {
            const lsae__kv *h = ws->bufs + ((size_t)s * ws->rows_cap + (size_t)row) * stride;
            const size_t *cnt = ws->counts + ((size_t)s * ws->rows_cap + (size_t)row) * 2;
            memcpy(merge + n, h, cnt[0] * sizeof(lsae__kv));
            n += cnt[0];
        }
        /* only the K best need an order: the rest are cut first */
        if (n > K) n = lsae__cut_above(merge, n, K);
        lsae__sort_best(merge, n, merge + half, L);
        if (n < K) {
            /* fewer than K positive: the rest of the top are zeros, the
               lowest latents that are not among the candidates (every
               other latent's activation is 0) */
            lsae__pad_lowest(merge, n, K, merge + half, L);
        }
        memcpy(top + (size_t)row * ws->K, merge, K * sizeof(lsae__kv));
    }
    if (!KA) return;
    /* the KA best, in index order: the candidates put in index order
       (lsae__merge_index), then the KA best kept in that order, no sort on
       values; fewer than KA positive: with them, the lowest dead latents
       that are not candidates, at 0 (there are at least KA dead latents) */
    lsae__pick_index(ws, row, stride, 1, team_size, merge, merge + half, KA, dead_bits, L, aux + (size_t)row * ws->KA);
}

/* The rows at which lsae__select splits the rows among the threads rather
   than the latents: each thread then runs every latent for its own rows and
   keeps one buffer a row. Splitting the latents gives each row one buffer
   per thread, each a top K of its share of the latents: more values offered
   (a top K of n values in random order takes about K (1 + ln(n / K))
   insertions, so two halves take more than one whole) and a merge of the
   buffers per row, against each thread packing all of W_enc rather than
   its share. Few rows (an encode of a handful) keep the latent split, or
   one thread would do all of it. */
#define LSAE__SELECT_ROWS_PER_THREAD 64

/* Whether lsae__select splits R rows among nth threads (each thread all
   latents for its rows) rather than the latents: at rows_per rows a thread
   or more. R / nth >= rows_per is R >= rows_per nth for integers, without
   the product, which wraps for a rows_per near SIZE_MAX (tests set it). */
static int lsae__select_by_rows(size_t R, size_t rows_per, size_t nth)
{
    return nth > 1 && R / nth >= rows_per;
}

/* The fused encoder pass over R rows of xc [R, d] (x - b_dec, already made):
   pre = ReLU(xc W_enc^T + b_enc) tile by tile, never stored whole, each value
   offered to its row's top-K buffer and, for dead latents, to the top-KA
   buffer among dead latents (AuxK). dead_bits has one word per tile of 64
   latents, bit j for latent 64 t + j (NULL: no AuxK). With many rows the
   threads split the rows (each runs every latent for its rows, one buffer a
   row, LSAE__SELECT_ROWS_PER_THREAD); with few, the latent axis, each
   keeping its own buffers for all R rows, then merged row by row. Because
   the order on candidates is total, the result is the same for any split.
   Output: top [R, ws->K] and aux [R, ws->KA] (those are the row strides;
   the first K and KA of each row are written); each row of top best first,
   each row of aux by increasing latent index (the AuxK decode walks W_dec
   in index order). */
static void lsae__select(const lsae_model *m, const float *xc, size_t R, size_t K, lsae__kv *top,
                         const uint64_t *dead_bits, size_t KA, lsae__kv *aux, lsae__select_ws *ws)
{
    const size_t d = m->d, L = m->L, ntiles = (L + LSAE__NT - 1) / LSAE__NT;
    size_t G = lsae__tile_group(d), ngroups = (ntiles + G - 1) / G;
    const size_t stride = lsae__buf_room(ws->K) + lsae__buf_room(ws->KA), nth_req = ws->nthreads > 1 ? (size_t)ws->nthreads : 1;
    const int by_rows = lsae__select_by_rows(R, ws->rows_per_thread ? ws->rows_per_thread : LSAE__SELECT_ROWS_PER_THREAD, nth_req);
    int team_size = 1;
    /* Split by latents, a few groups shared by the threads: as many for
       each, or one thread still multiplies after the others wait at the
       merge (3 groups of 8 tiles on 2 threads at d 384, L 1,536 kept one
       idle a third of the pass). Smaller groups cost a little reuse of the
       rows, not exactness (any grouping gives the same products and
       candidates). */
    if (!by_rows && ngroups < 8 * nth_req && ngroups % nth_req) {
        ngroups += nth_req - ngroups % nth_req;
        G = (ntiles + ngroups - 1) / ngroups;
        ngroups = (ntiles + G - 1) / G;
    }
    LSAE_ASSERT(R <= ws->rows_cap && K <= ws->K && KA <= ws->KA);
    if (!dead_bits) KA = 0;
    LSAE__OMP(parallel num_threads(ws->nthreads))
    {
        int tid = lsae__thread_id(), nth = 1;
        size_t r, rb0 = 0, rb1 = R;
        ptrdiff_t row, grp;
        const size_t kmax = ws->K > ws->KA ? ws->K : ws->KA;
        lsae__kv *bufs, *merge = ws->merge + (size_t)tid * (size_t)ws->nthreads * 2 * lsae__buf_cap(kmax);
        size_t *counts;
        float *thr;
        float *P = ws->pack + (size_t)tid * G * d * LSAE__NT;
        float Cbuf[LSAE__MR * LSAE__NT];
#ifdef _OPENMP
        nth = omp_get_num_threads();
#endif
        if (by_rows) {
            /* this thread's rows, in slot 0's buffers (a row has one owner) */
            rb0 = R * (size_t)tid / (size_t)nth;
            rb1 = R * ((size_t)tid + 1) / (size_t)nth;
            bufs = ws->bufs;
            counts = ws->counts;
            thr = ws->thr;
        } else {
            LSAE__OMP(single)
            team_size = nth;
            bufs = ws->bufs + (size_t)tid * ws->rows_cap * stride;
            counts = ws->counts + (size_t)tid * ws->rows_cap * 2;
            thr = ws->thr + (size_t)tid * ws->rows_cap * 2;
        }
        for (r = rb0; r < rb1; ++r) {
            counts[2 * r] = counts[2 * r + 1] = 0;
            thr[2 * r] = thr[2 * r + 1] = 0.0f; /* only positive activations are offered */
        }
        /* Split by latents: groups of tiles (lsae__tile_group) are handed
           out as threads come free (the machine may be shared); "monotonic"
           keeps each thread's tiles, and so the latents each of its rows
           meets, in increasing order, which the strict threshold test relies
           on. Split by rows: every group in order, this thread's rows. */
        if (by_rows) {
            for (grp = 0; grp < (ptrdiff_t)ngroups; ++grp) {
                const size_t t0 = (size_t)grp * G, t1 = t0 + G < ntiles ? t0 + G : ntiles;
                lsae__select_group(m, xc, t0, t1, rb0, rb1, P, Cbuf, dead_bits, K, KA, bufs, counts, thr, stride, ws);
            }
            for (row = (ptrdiff_t)rb0; row < (ptrdiff_t)rb1; ++row)
                lsae__select_finish_row(ws, row, stride, 1, K, top, dead_bits, KA, aux, merge, L);
        } else {
            LSAE__OMP(for schedule(monotonic: dynamic, 1) nowait)
            for (grp = 0; grp < (ptrdiff_t)ngroups; ++grp) {
                const size_t t0 = (size_t)grp * G, t1 = t0 + G < ntiles ? t0 + G : ntiles;
                lsae__select_group(m, xc, t0, t1, 0, R, P, Cbuf, dead_bits, K, KA, bufs, counts, thr, stride, ws);
            }
            LSAE__OMP(barrier)
            /* merge: each row's result is the best of every thread's
               candidates (each thread holds fewer than buf_cap(K)) */
            LSAE__OMP(for schedule(static))
            for (row = 0; row < (ptrdiff_t)R; ++row)
                lsae__select_finish_row(ws, row, stride, team_size, K, top, dead_bits, KA, aux, merge, L);
        }
    }
}

/* ------------------------------------- exact top-k through an int8 pre-pass */

/* The encoder pass computes all L pre-activations of a row in float32 to
   keep k of them. The int8 pre-pass (docs/math.md, 2.12) computes them
   first in integers, with a proven bound on the distance to the float32
   value, and recomputes in float32 only the latents that could still be in
   the top k; the result is the same bits as lsae__select's.

   Quantisation. Row r of xc: sx = max_p |xc_p| / 127, xq_p = round(xc_p / sx)
   in [-127, 127], residual rx = xc - sx xq. Latent l: sw = max_p |w_p| / Q,
   wq = round(w / sw) in [-Q, Q], rw = w - sw wq, Q = 127 (LSAE__LPQW; 63 in
   AVX2 builds without VNNI, see lsae__lp_tile). With S = sum_p xq_p wq_p (an exact
   integer) and A = sx sw S, the identity
       xc.w - A = xc.rw + rx.(sw wq)
   and Cauchy-Schwarz give |xc.w - A| <= ||xc|| ||rw|| + ||rx|| ||sw wq||,
   all four norms computed exactly in double and rounded up to float. The
   float32 kernel's own value c (a chain of d multiply-adds) is within
   gamma_d ||xc|| ||w|| of xc.w (gamma_d = d u / (1 - d u), u = 2^-24, with
   or without FMA). So, with E the sum of those terms,
       |c - A| <= E
   and the value the fp32 path keeps, f = ReLU(fl(c + b)), and our
   v = fl(fl(sx sw) fl(S)) + b are within
       eps = E (1 + 2^-16) + 2^-21 (|A| + |b|) + 1e-35
   of each other: 2^-21 = 8u covers the roundings of A, of v, of c + b and
   of v -+ eps (about 6u (|A| + |b|) + 3u E), and 1e-35 what underflow can
   add (d 2^-150 in the chain, 2^-150 |S| in A). lo = v - eps and
   hi = v + eps bracket f before the ReLU, and ReLU is monotone.

   Selection. T = the k-th largest of max(lo, 0) over the row. If hi < T,
   k latents have f >= lo >= T > hi >= f(l): l is strictly worse than k
   others and is not in the top k. If hi <= 0, f(l) = 0. So the latents
   with hi >= T and hi > 0 hold every positive value of the top k, and, as
   in lsae__select, the rest of the top are zeros at the lowest indices not
   among the positives. T is found while streaming (a buffer of lo values
   cut back to the k best, as lsae__compact does; the T so far is a lower
   bound of the final one, so filtering with it keeps a superset; a
   min-heap of the k largest lower bounds keeps it current). The
   candidates are recomputed with the float32 kernel's exact chain:
   c = 0; c = fma(xc_p, w_p, c) for p = 0, ..., d - 1 (LSAE__FMA, the
   kernels' operation), then c + b and ReLU, and sorted by lsae__sort_best.
   They are recomputed best hi first, stopping once the k-th exact value so
   far exceeds the next hi (the rest are then strictly worse).
   A row whose candidates overflow their buffer (data built so that most
   latents sit within eps of the k-th) is handed to lsae__select: exact
   either way, just slower. */

#if defined(LSAE__AVX512) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define LSAE__VNNI 1
#endif
/* AMX (Intel Sapphire Rapids and later, a -march that has it): tdpbusd
   multiplies a tile of 16 rows x 64 unsigned bytes by one of 64 x 16 signed
   bytes (four to a 32-bit group) into 16 x 16 int32 sums: the products and
   sums vpdpbusd makes, so the same exact integers, sixteen rows at once.
   Linux gives a process the tile state (8 KiB a thread) only when it asks
   (lsae__amx_ready); refused, the VNNI kernel does the work. LSAE_NO_AMX
   leaves it out. */
#if defined(LSAE__VNNI) && defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__linux__) && defined(__x86_64__) && !defined(LSAE_NO_AMX)
#define LSAE__AMX 1
#endif
/* What lsae__lp_tile's sums hold: sum_p (xq_p + LSAE__LPOFF) wq_p, so
   S = acc - LSAE__LPOFF wsum: every kernel takes the unsigned bytes
   xq + 128 of a row. LSAE__LPQW: the largest |wq| of the int8 copy, 127,
   or 63 in AVX2 builds without VNNI or AVX-VNNI, whose vpmaddubsw sums
   pairs of products in int16 (lsae__lp_tile). LSAE__LPFAST: the int8
   product is faster than float32's (VNNI, AVX2). */
/* AVX-VNNI (Intel Alder Lake and later client CPUs, Zen 5: vpdpbusd on
   256-bit registers without AVX-512; -mavxvnni or a -march that has it):
   the same unsigned-by-signed products and sums as VNNI, eight latents a
   register, in place of AVX2's vpmaddubsw and vpmaddwd. */
#if defined(LSAE__AVX2) && !defined(LSAE__VNNI) && defined(__AVXVNNI__)
#define LSAE__AVXVNNI 1
#endif
#define LSAE__LPOFF 128
/* LSAE__LPDEAD: a training batch with AuxK takes the pre-pass while at
   most L / LSAE__LPDEAD latents are dead (the dead ones' pick is a float32
   product over them besides). With AVX2's vpmaddubsw the int8 product
   gains less: the -mavx2 -mfma build on a 2-core AVX-512 Xeon (bench
   trainpp 768 24576 64 512 DEAD 4 - 4) measured the pre-pass step at
   1.11-1.15x float32's with none dead, 1.05-1.07x with 8%, 0.99-1.03x with
   15%, 0.94-0.97x with 25%. */
#if defined(LSAE__AVX2) && !defined(LSAE__VNNI) && !defined(LSAE__AVXVNNI)
#define LSAE__LPQW 63
#define LSAE__LPDEAD 8
#else
#define LSAE__LPQW 127
#define LSAE__LPDEAD 2
#endif
#if defined(LSAE__VNNI) || defined(LSAE__AVX2)
#define LSAE__LPFAST 1
#endif

typedef struct lsae__lp {
    size_t d, L, dp, ntiles;  /* dp: d rounded up to a multiple of 4 */
    int8_t *wq;               /* [ntiles][dp / 4][NT][4]: wq[l][p] at ((t dp/4 + p/4) NT + j) 4 + p%4, l = t NT + j */
    int32_t *wsum;            /* [ntiles NT] sum_p wq[l][p] (the unsigned-offset correction) */
    float *sw, *cw, *qn;      /* [ntiles NT] scale; ||rw|| + gamma_d ||w||; ||sw wq||, rounded up */
} lsae__lp;

/* x rounded up to a float (x >= 0, computed in double to within 1e-12) */
static float lsae__up(double x)
{
    float f = (float)(x * (1.0 + 1e-9));
    if ((double)f < x) f = nextafterf(f, FLT_MAX);
    return f;
}

static double lsae__gamma(size_t d)
{
    const double u = 1.0 / 16777216.0;
    return (double)d * u / (1.0 - (double)d * u);
}

/* q = round(v / s) in [-qmax, qmax], as v times inv = 1 / s (any integer
   is correct: the residual is measured, not assumed). Clamped before the
   conversion, which is undefined outside int's range: where the largest
   |v| is subnormal, inv = 1 / s overflows to inf and t is +-inf, or NaN
   for v = 0 (then q = 0). qmax: 127 for a row, LSAE__LPQW for a weight
   (the AVX2 kernel's pair sums must not saturate whatever the row). */
static int lsae__q8(float v, float inv, int qmax)
{
    const float t = v * inv;
    if (t >= (float)qmax) return qmax;
    if (t <= -(float)qmax) return -qmax;
    if (!(t == t)) return 0;
    return (int)(t < 0.0f ? t - 0.5f : t + 0.5f);
}

static void lsae__lp_free(const lsae_allocator *a, lsae__lp *q)
{
    if (!q) return;
    lsae__free(a, q->wq);
    lsae__free(a, q->wsum);
    lsae__free(a, q->sw);
    lsae__free(a, q->cw);
    lsae__free(a, q->qn);
    memset(q, 0, sizeof *q);
}

/* The int8 copy of W [L, d] (W_enc), with its scales and norms. */
#if defined(LSAE__AVX512)
/* One latent's row w [d] quantised as the scalar loop of lsae__lp_build
   does it, 16 entries at a time (the training step rebuilds the int8 copy
   of W_enc every step: 11 ns an entry in the scalar loop, as much as the
   pre-pass saved at 1,024 rows). q is the nearest integer (ties to even,
   where the scalar loop rounds them away from 0: any integer is correct).
   The residual r = w - s q is taken in float with one rounding (fnmadd:
   r_f = r (1 + delta), |delta| <= 2^-24, plus at most 2^-149 where it is
   subnormal), its squares summed in double (exact squares, d 2^-53
   relative for the sum): so ||r|| <= (sqrt(rn2) + sqrt(d) 2^-149)
   (1 + 2e-7), which is what cw takes. ||s q|| = s sqrt(sum q^2) with the
   integer sum exact. Writes the row's bytes into its column of the tile
   (base, groups of 4 entries NT 4 bytes apart, zeros from d to dp) and its
   wsum, sw, cw, qn. Returns 0 when 1 / s overflows (the largest |w|
   subnormal): the scalar loop then does the row. */
static int lsae__lp_quant_row16(const float *w, size_t d, size_t dp, int8_t *base, double g, int32_t *wsum, float *sw, float *cw, float *qn)
{
    /* (the masked forms of the conversions and extracts, and sums through
       memory rather than _mm512_reduce_*: GCC 12's C++ front end warns that
       the unmasked ones' undefined source may be used uninitialized) */
    const __mmask16 all = (__mmask16)0xFFFF;
    __m512 vmx = _mm512_setzero_ps();
    __m512d rr0 = _mm512_setzero_pd(), rr1 = rr0, ww0 = rr0, ww1 = rr0;
    __m512i qq = _mm512_setzero_si512(), qs = qq;
    const __m512i lo = _mm512_set1_epi32(-LSAE__LPQW), hi = _mm512_set1_epi32(LSAE__LPQW);
    float mx = 0.0f, m16[16], s, inv;
    double r8[8], w8[8], rn2 = 0.0, wn2 = 0.0;
    int32_t q16[16], s16[16];
    int64_t qq2 = 0, qsum = 0;
    size_t p, j;
    for (p = 0; p < d; p += 16) {
        const __mmask16 k = d - p >= 16 ? all : (__mmask16)((1u << (d - p)) - 1);
        vmx = _mm512_mask_max_ps(vmx, all, vmx, _mm512_abs_ps(_mm512_maskz_loadu_ps(k, w + p)));
    }
    _mm512_storeu_ps(m16, vmx);
    for (j = 0; j < 16; ++j) mx = m16[j] > mx ? m16[j] : mx;
    s = mx / (float)LSAE__LPQW;
    inv = s > 0.0f ? 1.0f / s : 0.0f;
    if (!(inv <= FLT_MAX)) return 0;
    for (p = 0; p < dp; p += 16) {
        const __mmask16 k = p >= d ? (__mmask16)0 : d - p >= 16 ? all : (__mmask16)((1u << (d - p)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(k, w + p);
        /* the next row's line (in lsae__lp_fill the rows stream from
           memory: 18 -> 14 ms at 768 x 24,576; in Adam's refill the next
           row of the block is already in cache) */
        _mm_prefetch((const char *)(w + d + p), _MM_HINT_T0);
        /* |x inv| <= LSAE__LPQW (1 + 2^-23): no conversion overflows */
        const __m512i q0 = _mm512_mask_cvtps_epi32(_mm512_setzero_si512(), all, _mm512_mul_ps(x, _mm512_set1_ps(inv)));
        const __m512i q = _mm512_mask_min_epi32(q0, all, _mm512_mask_max_epi32(q0, all, q0, lo), hi);
        const __m512 res = _mm512_fnmadd_ps(_mm512_set1_ps(s), _mm512_mask_cvtepi32_ps(_mm512_setzero_ps(), all, q), x);
        const __m512d rl = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(res), 0)));
        const __m512d rh = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(res), 1)));
        const __m512d xl = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(x), 0)));
        const __m512d xh = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(x), 1)));
        int32_t g4[4];
        size_t gi;
        rr0 = _mm512_fmadd_pd(rl, rl, rr0);
        rr1 = _mm512_fmadd_pd(rh, rh, rr1);
        ww0 = _mm512_fmadd_pd(xl, xl, ww0);
        ww1 = _mm512_fmadd_pd(xh, xh, ww1);
        qq = _mm512_add_epi32(qq, _mm512_mullo_epi32(q, q));
        qs = _mm512_add_epi32(qs, q);
        _mm_storeu_si128((__m128i *)(void *)g4, _mm512_mask_cvtepi32_epi8(_mm_setzero_si128(), all, q));
        for (gi = 0; gi < 4 && p + 4 * gi < dp; ++gi) memcpy(base + (p / 4 + gi) * LSAE__NT * 4, &g4[gi], 4);
    }
    _mm512_storeu_pd(r8, _mm512_add_pd(rr0, rr1));
    _mm512_storeu_pd(w8, _mm512_add_pd(ww0, ww1));
    _mm512_storeu_si512((void *)q16, qq);
    _mm512_storeu_si512((void *)s16, qs);
    for (j = 0; j < 8; ++j) {
        rn2 += r8[j];
        wn2 += w8[j];
    }
    for (j = 0; j < 16; ++j) {
        qq2 += q16[j];
        qsum += s16[j];
    }
    *wsum = (int32_t)qsum;
    *sw = s;
    *cw = lsae__up((sqrt(rn2) + sqrt((double)d) * 1.5e-45) * (1.0 + 2e-7) + g * sqrt(wn2));
    *qn = lsae__up((double)s * sqrt((double)qq2));
    return 1;
}
#elif defined(LSAE__AVX2)
/* The same, 8 entries at a time for AVX2 builds (no masked loads: the last
   d % 8 entries take the scalar loop's exact double residual, which the
   bound's (1 + 2e-7) only widens). */
static int lsae__lp_quant_row8(const float *w, size_t d, size_t dp, int8_t *base, double g, int32_t *wsum, float *sw, float *cw, float *qn)
{
    const size_t d8 = d / 8 * 8;
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256i lo = _mm256_set1_epi32(-LSAE__LPQW), hi = _mm256_set1_epi32(LSAE__LPQW);
    __m256 vmx = _mm256_setzero_ps();
    __m256d rr = _mm256_setzero_pd(), ww = rr;
    __m256i qq = _mm256_setzero_si256(), qs = qq;
    double rn2 = 0.0, wn2 = 0.0, acc[4];
    int64_t qq2 = 0, qsum = 0;
    int32_t q8[8], iacc[8];
    float mx = 0.0f, m8[8], s, inv;
    size_t p, j;
    for (p = 0; p < d8; p += 8) vmx = _mm256_max_ps(vmx, _mm256_and_ps(_mm256_loadu_ps(w + p), absm));
    _mm256_storeu_ps(m8, vmx);
    for (j = 0; j < 8; ++j) mx = m8[j] > mx ? m8[j] : mx;
    for (p = d8; p < d; ++p) mx = fabsf(w[p]) > mx ? fabsf(w[p]) : mx;
    s = mx / (float)LSAE__LPQW;
    inv = s > 0.0f ? 1.0f / s : 0.0f;
    if (!(inv <= FLT_MAX)) return 0;
    for (p = 0; p < d8; p += 8) {
        const __m256 x = _mm256_loadu_ps(w + p);
        const __m256i q = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x, _mm256_set1_ps(inv))), lo), hi);
        const __m256 res = _mm256_fnmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(q), x);
        const __m256d rl = _mm256_cvtps_pd(_mm256_castps256_ps128(res)), rh = _mm256_cvtps_pd(_mm256_extractf128_ps(res, 1));
        const __m256d xl = _mm256_cvtps_pd(_mm256_castps256_ps128(x)), xh = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
        rr = _mm256_fmadd_pd(rl, rl, rr);
        rr = _mm256_fmadd_pd(rh, rh, rr);
        ww = _mm256_fmadd_pd(xl, xl, ww);
        ww = _mm256_fmadd_pd(xh, xh, ww);
        qq = _mm256_add_epi32(qq, _mm256_mullo_epi32(q, q));
        qs = _mm256_add_epi32(qs, q);
        _mm256_storeu_si256((__m256i *)(void *)q8, q);
        for (j = 0; j < 8; ++j) base[((p + j) / 4) * LSAE__NT * 4 + (p + j) % 4] = (int8_t)q8[j];
        if (p % 16 == 0) _mm_prefetch((const char *)(w + d + p), _MM_HINT_T0); /* as lsae__lp_quant_row16 */
    }
    _mm256_storeu_pd(acc, rr);
    rn2 = acc[0] + acc[1] + acc[2] + acc[3];
    _mm256_storeu_pd(acc, ww);
    wn2 = acc[0] + acc[1] + acc[2] + acc[3];
    _mm256_storeu_si256((__m256i *)(void *)iacc, qq);
    for (j = 0; j < 8; ++j) qq2 += iacc[j];
    _mm256_storeu_si256((__m256i *)(void *)iacc, qs);
    for (j = 0; j < 8; ++j) qsum += iacc[j];
    for (p = d8; p < dp; ++p) {
        const int v = (p < d && s > 0.0f) ? lsae__q8(w[p], inv, LSAE__LPQW) : 0;
        base[(p / 4) * LSAE__NT * 4 + p % 4] = (int8_t)v;
        qq2 += (int64_t)v * v;
        qsum += v;
        if (p < d) {
            const double r = (double)w[p] - (double)s * v; /* exact */
            rn2 += r * r;
            wn2 += (double)w[p] * w[p];
        }
    }
    *wsum = (int32_t)qsum;
    *sw = s;
    *cw = lsae__up((sqrt(rn2) + sqrt((double)d) * 1.5e-45) * (1.0 + 2e-7) + g * sqrt(wn2));
    *qn = lsae__up((double)s * sqrt((double)qq2));
    return 1;
}
#endif

static void lsae__lp_fill(lsae__lp *q, const float *W, int nthreads);
static lsae_result lsae__lp_build(const lsae_allocator *a, lsae__lp *q, const float *W, size_t L, size_t d, int nthreads)
{
    size_t n, bytes;
    memset(q, 0, sizeof *q);
    q->d = d;
    q->L = L;
    q->dp = (d + 3) / 4 * 4;
    q->ntiles = (L + LSAE__NT - 1) / LSAE__NT;
    n = q->ntiles * LSAE__NT;
    if (!lsae__mul_size(n, q->dp, &bytes)) return lsae__err(LSAE_INVALID_ARGS, "int8 encoder copy of %zu x %zu is too large", L, d);
    q->wq = (int8_t *)lsae__alloc_array(a, bytes, 1, "int8 encoder copy");
    q->wsum = q->wq ? (int32_t *)lsae__alloc_array(a, n, sizeof(int32_t), "int8 encoder copy") : NULL;
    q->sw = q->wsum ? (float *)lsae__alloc_array(a, n, sizeof(float), "int8 encoder copy") : NULL;
    q->cw = q->sw ? (float *)lsae__alloc_array(a, n, sizeof(float), "int8 encoder copy") : NULL;
    q->qn = q->cw ? (float *)lsae__alloc_array(a, n, sizeof(float), "int8 encoder copy") : NULL;
    if (!q->qn) { lsae__lp_free(a, q); return LSAE_OUT_OF_MEMORY; }
    lsae__lp_fill(q, W, nthreads);
    return LSAE_OK;
}

/* The int8 copy of W [L, d] into q as lsae__lp_build allocated it (the
   training step refills one copy every optimizer step: allocating 19 MB a
   step cost page faults worth a tenth of the step) */
static void lsae__lp_fill_row(lsae__lp *q, const float *W, size_t l, double g);
static void lsae__lp_fill(lsae__lp *q, const float *W, int nthreads)
{
    const size_t n = q->ntiles * LSAE__NT;
    const double g = lsae__gamma(q->d);
    ptrdiff_t l;
    (void)nthreads;
    LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
    for (l = 0; l < (ptrdiff_t)n; ++l) lsae__lp_fill_row(q, W, (size_t)l, g);
}

/* Latent l of the int8 copy (l < ntiles NT; past L, the zero padding) from
   row l of W; g = lsae__gamma(d). The optimizer step (lsae__adam) calls it
   for the rows it has just updated, while they are in cache. */
static void lsae__lp_fill_row(lsae__lp *q, const float *W, size_t l, double g)
{
    const size_t d = q->d, t = l / LSAE__NT, j = l % LSAE__NT, dp4 = q->dp / 4;
    int8_t *base = q->wq + t * dp4 * LSAE__NT * 4 + j * 4;
    const float *w = W + l * d;
    double rn2 = 0.0, qn2 = 0.0, wn2 = 0.0;
    float mx = 0.0f, s, inv;
    int32_t sum = 0;
    size_t p;
#if defined(__GNUC__)
    {
        /* A 64-byte line of the copy holds one 4-entry group of 16
           neighbouring latents, so a row writes to dp / 4 lines that the
           previous 15 rows did not touch only every 16th row: each of those
           lines missed then, read from memory before its write. Row l asks
           ahead for its share (dp / 64 lines) of the next 16 rows' lines. */
        const size_t l2 = (l / 16 + 1) * 16, per = (dp4 + 15) / 16, p0 = (l % 16) * per;
        if (l2 < q->ntiles * LSAE__NT) {
            int8_t *nb = q->wq + (l2 / LSAE__NT) * dp4 * LSAE__NT * 4 + (l2 % LSAE__NT) * 4;
            size_t p4;
            for (p4 = p0; p4 < p0 + per && p4 < dp4; ++p4) __builtin_prefetch(nb + p4 * LSAE__NT * 4, 1, 3);
        }
    }
#endif
    if (l >= q->L) {
        for (p = 0; p < q->dp; ++p) base[(p / 4) * LSAE__NT * 4 + p % 4] = 0;
        q->wsum[l] = 0;
        q->sw[l] = q->cw[l] = q->qn[l] = 0.0f;
        return;
    }
#if defined(LSAE__AVX512)
    if (lsae__lp_quant_row16(w, d, q->dp, base, g, q->wsum + l, q->sw + l, q->cw + l, q->qn + l)) return;
#elif defined(LSAE__AVX2)
    if (lsae__lp_quant_row8(w, d, q->dp, base, g, q->wsum + l, q->sw + l, q->cw + l, q->qn + l)) return;
#endif
    for (p = 0; p < d; ++p) mx = fabsf(w[p]) > mx ? fabsf(w[p]) : mx;
    s = mx / (float)LSAE__LPQW;
    inv = s > 0.0f ? 1.0f / s : 0.0f;
    for (p = 0; p < q->dp; ++p) {
        int v = (p < d && s > 0.0f) ? lsae__q8(w[p], inv, LSAE__LPQW) : 0;
        base[(p / 4) * LSAE__NT * 4 + p % 4] = (int8_t)v;
        sum += v;
        if (p < d) {
            const double qv = (double)s * v, r = (double)w[p] - qv; /* s v is exact in double */
            rn2 += r * r;
            qn2 += qv * qv;
            wn2 += (double)w[p] * w[p];
        }
    }
    q->wsum[l] = sum;
    q->sw[l] = s;
    q->cw[l] = lsae__up(sqrt(rn2) + g * sqrt(wn2));
    q->qn[l] = lsae__up(sqrt(qn2));
}

/* One row x [d] for lsae__lp_tile: u [dp] = xq + 128 as unsigned bytes
   (padded with 128, xq = 0), xq = round(x / sx), sx = max_p |x_p| / 127;
   xn >= ||x||, xrn >= ||x - sx xq|| (in double from the actual residual,
   rounded up). */
static void lsae__lp_row(const float *x, size_t d, size_t dp, uint8_t *u, float *sxo, float *xn, float *xrn)
{
    double xn2 = 0.0, rn2 = 0.0;
    float mx = 0.0f, sx, inv;
    size_t p;
#if defined(LSAE__AVX512)
    {
        /* 16 at a time, as lsae__lp_quant_row16 (its comment has the
           bound: the residual in float with one rounding, squares summed
           in double, (1 + 2e-7) and sqrt(d) 2^-149 for the roundings); the
           masked forms for GCC 12's C++ front end, as there */
        const __mmask16 all = (__mmask16)0xFFFF;
        const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
        __m512 vmx = _mm512_setzero_ps();
        __m512d rr0 = _mm512_setzero_pd(), rr1 = rr0, xx0 = rr0, xx1 = rr0;
        float m16[16];
        double r8[8], x8[8];
        size_t j;
        for (p = 0; p < d; p += 16) {
            const __mmask16 k = d - p >= 16 ? all : (__mmask16)((1u << (d - p)) - 1);
            vmx = _mm512_mask_max_ps(vmx, all, vmx, _mm512_abs_ps(_mm512_maskz_loadu_ps(k, x + p)));
        }
        _mm512_storeu_ps(m16, vmx);
        for (j = 0; j < 16; ++j) mx = m16[j] > mx ? m16[j] : mx;
        sx = mx / 127.0f;
        inv = sx > 0.0f ? 1.0f / sx : 0.0f;
        if (inv <= FLT_MAX) {
            for (p = 0; p < dp; p += 16) {
                const __mmask16 k = p >= d ? (__mmask16)0 : d - p >= 16 ? all : (__mmask16)((1u << (d - p)) - 1);
                const __mmask16 kp = dp - p >= 16 ? all : (__mmask16)((1u << (dp - p)) - 1);
                const __m512 v = _mm512_maskz_loadu_ps(k, x + p);
                const __m512i q0 = _mm512_mask_cvtps_epi32(_mm512_setzero_si512(), all, _mm512_mul_ps(v, _mm512_set1_ps(inv)));
                const __m512i q = _mm512_mask_min_epi32(q0, all, _mm512_mask_max_epi32(q0, all, q0, lo), hi);
                const __m512 res = _mm512_fnmadd_ps(_mm512_set1_ps(sx), _mm512_mask_cvtepi32_ps(_mm512_setzero_ps(), all, q), v);
                const __m512d rl = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(res), 0)));
                const __m512d rh = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(res), 1)));
                const __m512d xl = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(v), 0)));
                const __m512d xh = _mm512_mask_cvtps_pd(_mm512_setzero_pd(), (__mmask8)0xFF, _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), (__mmask8)0xF, _mm512_castps_pd(v), 1)));
                const __m128i b = _mm_xor_si128(_mm512_mask_cvtepi32_epi8(_mm_setzero_si128(), all, q), _mm_set1_epi8((char)0x80)); /* q + 128 */
                rr0 = _mm512_fmadd_pd(rl, rl, rr0);
                rr1 = _mm512_fmadd_pd(rh, rh, rr1);
                xx0 = _mm512_fmadd_pd(xl, xl, xx0);
                xx1 = _mm512_fmadd_pd(xh, xh, xx1);
                _mm_mask_storeu_epi8(u + p, kp, b);
            }
            _mm512_storeu_pd(r8, _mm512_add_pd(rr0, rr1));
            _mm512_storeu_pd(x8, _mm512_add_pd(xx0, xx1));
            for (j = 0; j < 8; ++j) {
                rn2 += r8[j];
                xn2 += x8[j];
            }
            *sxo = sx;
            *xn = lsae__up(sqrt(xn2) * (1.0 + 1e-15));
            *xrn = lsae__up((sqrt(rn2) + sqrt((double)d) * 1.5e-45) * (1.0 + 2e-7));
            return;
        }
        mx = 0.0f; /* 1 / sx overflows (the largest |x| subnormal): the loop below */
    }
#elif defined(LSAE__AVX2)
    {
        /* 8 at a time for AVX2 builds, with the bound of the AVX-512 form
           above (lsae__lp_quant_row16's comment: the residual r_f = fl(x -
           sx q) in float with one rounding, |r_f - r| <= 2^-24 |r| + 2^-149,
           its square exact in double and summed there, so ||r|| <=
           (sqrt(rn2) + sqrt(d) 2^-149) (1 + 2e-7)). No masked loads: as in
           lsae__lp_quant_row8, the last d % 8 entries take the scalar loop's
           residual in double (exact but for one rounding of 2^-53, which
           the (1 + 2e-7) covers) and the padding to dp is 128 (xq = 0). q
           is the nearest integer (ties to even; the scalar loop rounds them
           away from 0: any integer is correct, the residual is measured).
           The scalar loop took 7.6 ns an entry on an AVX-512 Xeon built
           -mavx2 -mfma (5.8 us a row of 768; this one 0.55 ns), once a
           row in every encode's pre-pass and three times a row in lsae
           eval (the pre-pass, the neighbour search's x and x_hat). */
        const size_t d8 = d / 8 * 8;
        const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
        const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
        const __m128i flip = _mm_set1_epi8((char)0x80);
        __m256 vmx = _mm256_setzero_ps();
        __m256d rr0 = _mm256_setzero_pd(), rr1 = rr0, xx0 = rr0, xx1 = rr0;
        float m8[8];
        double acc[4];
        size_t j;
        for (p = 0; p < d8; p += 8) vmx = _mm256_max_ps(vmx, _mm256_and_ps(_mm256_loadu_ps(x + p), absm));
        _mm256_storeu_ps(m8, vmx);
        for (j = 0; j < 8; ++j) mx = m8[j] > mx ? m8[j] : mx;
        for (p = d8; p < d; ++p) mx = fabsf(x[p]) > mx ? fabsf(x[p]) : mx;
        sx = mx / 127.0f;
        inv = sx > 0.0f ? 1.0f / sx : 0.0f;
        if (inv <= FLT_MAX) {
            const __m256 vinv = _mm256_set1_ps(inv), vsx = _mm256_set1_ps(sx);
            for (p = 0; p < d8; p += 8) {
                const __m256 v = _mm256_loadu_ps(x + p);
                /* |x inv| <= 127 (1 + 2^-23): no conversion overflows */
                const __m256i q = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, vinv)), lo), hi);
                const __m256 res = _mm256_fnmadd_ps(vsx, _mm256_cvtepi32_ps(q), v);
                const __m256d rl = _mm256_cvtps_pd(_mm256_castps256_ps128(res)), rh = _mm256_cvtps_pd(_mm256_extractf128_ps(res, 1));
                const __m256d xl = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), xh = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
                /* the eight int32 in [-127, 127] to bytes (the packs saturate
                   nothing), + 128 as ^ 0x80 */
                const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
                _mm_storel_epi64((__m128i *)(void *)(u + p), _mm_xor_si128(_mm_packs_epi16(w16, w16), flip));
                rr0 = _mm256_fmadd_pd(rl, rl, rr0);
                rr1 = _mm256_fmadd_pd(rh, rh, rr1);
                xx0 = _mm256_fmadd_pd(xl, xl, xx0);
                xx1 = _mm256_fmadd_pd(xh, xh, xx1);
            }
            _mm256_storeu_pd(acc, _mm256_add_pd(rr0, rr1));
            rn2 = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            _mm256_storeu_pd(acc, _mm256_add_pd(xx0, xx1));
            xn2 = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            for (p = d8; p < dp; ++p) {
                const int v = (p < d && sx > 0.0f) ? lsae__q8(x[p], inv, 127) : 0;
                u[p] = (uint8_t)(v + 128);
                if (p < d) {
                    const double rv = (double)x[p] - (double)sx * v;
                    rn2 += rv * rv;
                    xn2 += (double)x[p] * x[p];
                }
            }
            *sxo = sx;
            *xn = lsae__up(sqrt(xn2) * (1.0 + 1e-15));
            *xrn = lsae__up((sqrt(rn2) + sqrt((double)d) * 1.5e-45) * (1.0 + 2e-7));
            return;
        }
        mx = 0.0f; /* 1 / sx overflows (the largest |x| subnormal): the loop below */
    }
#endif
    for (p = 0; p < d; ++p) mx = fabsf(x[p]) > mx ? fabsf(x[p]) : mx;
    sx = mx / 127.0f;
    inv = sx > 0.0f ? 1.0f / sx : 0.0f;
    for (p = 0; p < dp; ++p) {
        const int v = (p < d && sx > 0.0f) ? lsae__q8(x[p], inv, 127) : 0;
        u[p] = (uint8_t)(v + 128);
        if (p < d) {
            const double rv = (double)x[p] - (double)sx * v;
            rn2 += rv * rv;
            xn2 += (double)x[p] * x[p];
        }
    }
    *sxo = sx;
    *xn = lsae__up(sqrt(xn2));
    *xrn = lsae__up(sqrt(rn2));
}

#if defined(LSAE__AVX2)
/* Two rows' int32 sums of 32 latents, o and (when second) o + LSAE__NT:
   the store of every two-row AVX2 int8 kernel (lsae__lp_tile's, lsae
   eval's 7-bit one) */
#if defined(__GNUC__)
__attribute__((always_inline)) inline
#endif
static void lsae__store_2x32(int32_t *o, int second, __m256i c00, __m256i c01, __m256i c02, __m256i c03, __m256i c10, __m256i c11,
                             __m256i c12, __m256i c13)
{
    _mm256_storeu_si256((__m256i *)(void *)o, c00); _mm256_storeu_si256((__m256i *)(void *)(o + 8), c01);
    _mm256_storeu_si256((__m256i *)(void *)(o + 16), c02); _mm256_storeu_si256((__m256i *)(void *)(o + 24), c03);
    if (second) {
        o += LSAE__NT;
        _mm256_storeu_si256((__m256i *)(void *)o, c10); _mm256_storeu_si256((__m256i *)(void *)(o + 8), c11);
        _mm256_storeu_si256((__m256i *)(void *)(o + 16), c12); _mm256_storeu_si256((__m256i *)(void *)(o + 24), c13);
    }
}
#endif

/* acc[r][j] = sum_p (xq[r][p] + LSAE__LPOFF) wq[l0 + j][p] over the dp
   entries, r < mr <= 6, for one tile (Wt, NT latents): xu are the rows'
   xq + 128 as unsigned bytes (vpdpbusd and vpmaddubsw multiply unsigned by
   signed bytes; the offset comes back out as 128 wsum). Every form gives
   the same exact integers. */
#define LSAE__LPMR 6
#if defined(LSAE__VNNI) || defined(LSAE__AVXVNNI)
/* lsae__lp_tile for one row (an encode of one row, the last of a block):
   the row kernels below would do its work six times (VNNI) or twice
   (AVX-VNNI) on copies of it. Here the tile's 64 latents take eight
   accumulators: with zmm, four for the even steps of the depth and four
   for the odd ones, added at the end (integer sums: the same in any
   order); with ymm, eight vectors of 8 latents. Eight chains keep
   vpdpbusd's 5-cycle latency mostly hidden. */
static void lsae__lp_tile_row1(int32_t *acc, const uint8_t *x, const int8_t *Wt, size_t dp4)
{
    size_t p;
    int32_t v;
#if defined(LSAE__VNNI)
    __m512i e0 = _mm512_setzero_si512(), e1 = e0, e2 = e0, e3 = e0, o0 = e0, o1 = e0, o2 = e0, o3 = e0, a;
    const int8_t *b;
    /* depth step q of the row into the four accumulators c0..c3 */
#define LSAE__ROW1STEP(c0, c1, c2, c3, q)                                       \
    memcpy(&v, x + 4 * (q), 4);                                                 \
    a = _mm512_set1_epi32(v);                                                   \
    b = Wt + (q) * LSAE__NT * 4;                                                \
    c0 = _mm512_dpbusd_epi32(c0, a, _mm512_loadu_si512((const void *)b));       \
    c1 = _mm512_dpbusd_epi32(c1, a, _mm512_loadu_si512((const void *)(b + 64))); \
    c2 = _mm512_dpbusd_epi32(c2, a, _mm512_loadu_si512((const void *)(b + 128))); \
    c3 = _mm512_dpbusd_epi32(c3, a, _mm512_loadu_si512((const void *)(b + 192)));
    for (p = 0; p + 2 <= dp4; p += 2) {
        LSAE__ROW1STEP(e0, e1, e2, e3, p)
        LSAE__ROW1STEP(o0, o1, o2, o3, p + 1)
    }
    if (p < dp4) {
        LSAE__ROW1STEP(e0, e1, e2, e3, p)
    }
#undef LSAE__ROW1STEP
    _mm512_storeu_si512((void *)acc, _mm512_add_epi32(e0, o0));
    _mm512_storeu_si512((void *)(acc + 16), _mm512_add_epi32(e1, o1));
    _mm512_storeu_si512((void *)(acc + 32), _mm512_add_epi32(e2, o2));
    _mm512_storeu_si512((void *)(acc + 48), _mm512_add_epi32(e3, o3));
#else
    __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, a;
    for (p = 0; p < dp4; ++p) {
        const int8_t *b = Wt + p * LSAE__NT * 4;
        memcpy(&v, x + 4 * p, 4);
        a = _mm256_set1_epi32(v);
        c0 = _mm256_dpbusd_avx_epi32(c0, a, _mm256_loadu_si256((const __m256i *)(const void *)b));
        c1 = _mm256_dpbusd_avx_epi32(c1, a, _mm256_loadu_si256((const __m256i *)(const void *)(b + 32)));
        c2 = _mm256_dpbusd_avx_epi32(c2, a, _mm256_loadu_si256((const __m256i *)(const void *)(b + 64)));
        c3 = _mm256_dpbusd_avx_epi32(c3, a, _mm256_loadu_si256((const __m256i *)(const void *)(b + 96)));
        c4 = _mm256_dpbusd_avx_epi32(c4, a, _mm256_loadu_si256((const __m256i *)(const void *)(b + 128)));
        c5 = _mm256_dpbusd_avx_epi32(c5, a, _mm256_loadu_si256((const __m256i *)(const void *)(b + 160)));
        c6 = _mm256_dpbusd_avx_epi32(c6, a, _mm256_loadu_si256((const __m256i *)(const void *)(b + 192)));
        c7 = _mm256_dpbusd_avx_epi32(c7, a, _mm256_loadu_si256((const __m256i *)(const void *)(b + 224)));
    }
    _mm256_storeu_si256((__m256i *)(void *)acc, c0); _mm256_storeu_si256((__m256i *)(void *)(acc + 8), c1);
    _mm256_storeu_si256((__m256i *)(void *)(acc + 16), c2); _mm256_storeu_si256((__m256i *)(void *)(acc + 24), c3);
    _mm256_storeu_si256((__m256i *)(void *)(acc + 32), c4); _mm256_storeu_si256((__m256i *)(void *)(acc + 40), c5);
    _mm256_storeu_si256((__m256i *)(void *)(acc + 48), c6); _mm256_storeu_si256((__m256i *)(void *)(acc + 56), c7);
#endif
}
#endif

static void lsae__lp_tile(int32_t *acc, const uint8_t *xu, size_t ldx, size_t mr, const int8_t *Wt, size_t dp)
{
    const size_t dp4 = dp / 4;
#if defined(LSAE__VNNI) || defined(LSAE__AVXVNNI)
    if (mr == 1) {
        lsae__lp_tile_row1(acc, xu, Wt, dp4);
        return;
    }
#endif
#if defined(LSAE__VNNI)
    const uint8_t *x0 = xu, *x1 = xu + (mr > 1 ? ldx : 0), *x2 = xu + (mr > 2 ? 2 * ldx : 0);
    const uint8_t *x3 = xu + (mr > 3 ? 3 * ldx : 0), *x4 = xu + (mr > 4 ? 4 * ldx : 0), *x5 = xu + (mr > 5 ? 5 * ldx : 0);
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    __m512i c40 = c00, c41 = c00, c42 = c00, c43 = c00, c50 = c00, c51 = c00, c52 = c00, c53 = c00;
    size_t p;
    for (p = 0; p < dp4; ++p) {
        const int8_t *b = Wt + p * LSAE__NT * 4;
        const __m512i b0 = _mm512_loadu_si512((const void *)b), b1 = _mm512_loadu_si512((const void *)(b + 64));
        const __m512i b2 = _mm512_loadu_si512((const void *)(b + 128)), b3 = _mm512_loadu_si512((const void *)(b + 192));
        __m512i a;
        int32_t v;
#define LSAE__ROWVNNI(r)                                                        \
        memcpy(&v, x##r + 4 * p, 4);                                            \
        a = _mm512_set1_epi32(v);                                               \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, a, b0); c##r##1 = _mm512_dpbusd_epi32(c##r##1, a, b1); \
        c##r##2 = _mm512_dpbusd_epi32(c##r##2, a, b2); c##r##3 = _mm512_dpbusd_epi32(c##r##3, a, b3);
        LSAE__ROWVNNI(0) LSAE__ROWVNNI(1) LSAE__ROWVNNI(2) LSAE__ROWVNNI(3) LSAE__ROWVNNI(4) LSAE__ROWVNNI(5)
#undef LSAE__ROWVNNI
    }
#define LSAE__STOREVNNI(r)                                                      \
    if (r < mr) {                                                               \
        _mm512_storeu_si512((void *)(acc + r * LSAE__NT), c##r##0); _mm512_storeu_si512((void *)(acc + r * LSAE__NT + 16), c##r##1); \
        _mm512_storeu_si512((void *)(acc + r * LSAE__NT + 32), c##r##2); _mm512_storeu_si512((void *)(acc + r * LSAE__NT + 48), c##r##3); \
    }
    LSAE__STOREVNNI(0) LSAE__STOREVNNI(1) LSAE__STOREVNNI(2) LSAE__STOREVNNI(3) LSAE__STOREVNNI(4) LSAE__STOREVNNI(5)
#undef LSAE__STOREVNNI
#elif defined(LSAE__AVX2)
#if defined(LSAE__AVXVNNI)
    /* AVX-VNNI (vpdpbusd on ymm) with six rows: 16 latents at a time, twelve
       accumulators, two weight vectors and the row's broadcast bytes (15
       of the 16 registers); a 16-latent strip of the tile (dp 16 bytes)
       stays in L1 while the six rows sweep it. vpdpbusd takes 5 cycles and
       two issue a cycle, so each accumulator must wait for its last sum
       once every 10 products. Eight chains (two rows by 32 latents, the
       pair kernel below) held it at 48 of the 64 products a cycle, twelve
       reach 67 (a 768-deep tile in L1, one Sapphire Rapids core: 163 ->
       225 G products a second; the clock is above the 3.37 GHz the 64
       assumes). The same exact integer sums. Two to five rows (a block's
       last, an encode of a few) take the pair kernel, which does only an
       odd row twice, and one row lsae__lp_tile_row1: six-row work for one
       row made the one-row encode twice as slow. */
    if (mr == 6) {
        const uint8_t *x0 = xu, *x1 = xu + ldx, *x2 = xu + 2 * ldx, *x3 = xu + 3 * ldx, *x4 = xu + 4 * ldx, *x5 = xu + 5 * ldx;
        size_t h, p;
        for (h = 0; h < LSAE__NT; h += 16) {
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
            __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
            for (p = 0; p < dp4; ++p) {
                const int8_t *b = Wt + p * LSAE__NT * 4 + h * 4;
                const __m256i b0 = _mm256_loadu_si256((const __m256i *)(const void *)b), b1 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 32));
                __m256i a;
                int32_t v;
#define LSAE__ROWAVXVNNI(r)                                                     \
                memcpy(&v, x##r + 4 * p, 4);                                        \
                a = _mm256_set1_epi32(v);                                           \
                c##r##0 = _mm256_dpbusd_avx_epi32(c##r##0, a, b0); c##r##1 = _mm256_dpbusd_avx_epi32(c##r##1, a, b1);
                LSAE__ROWAVXVNNI(0) LSAE__ROWAVXVNNI(1) LSAE__ROWAVXVNNI(2) LSAE__ROWAVXVNNI(3) LSAE__ROWAVXVNNI(4) LSAE__ROWAVXVNNI(5)
#undef LSAE__ROWAVXVNNI
            }
#define LSAE__STOREAVXVNNI(r)                                                   \
            _mm256_storeu_si256((__m256i *)(void *)(acc + r * LSAE__NT + h), c##r##0); \
            _mm256_storeu_si256((__m256i *)(void *)(acc + r * LSAE__NT + h + 8), c##r##1);
            LSAE__STOREAVXVNNI(0) LSAE__STOREAVXVNNI(1) LSAE__STOREAVXVNNI(2) LSAE__STOREAVXVNNI(3) LSAE__STOREAVXVNNI(4) LSAE__STOREAVXVNNI(5)
#undef LSAE__STOREAVXVNNI
        }
        return;
    }
#endif
    /* Two rows by 32 latents at a time (eight accumulators, four weight
       vectors, the row's broadcast bytes); a half tile of weights (dp 32
       bytes) stays in L1 while the row pairs sweep it. A step multiplies a
       row's four unsigned bytes by four signed weights of 8 latents and
       adds the sums into their int32 accumulators: one vpdpbusd with
       AVX-VNNI (where six rows come at once, the kernel above); else
       vpmaddubsw into int16 sums of adjacent pairs, which
       saturate above 32767, and vpmaddwd by ones adding each latent's two
       pairs into int32. With the row's xq + 128 (at most 255) and weights
       of at most 63 in size (LSAE__LPQW: this build's int8 copy), a pair is
       at most 2 255 63 = 32130, so every sum is exact. The coarser weights
       only widen the bound (their residual about doubles: more candidates
       recomputed, never a different result). With 8-bit weights the
       products needed the sign trick (|xq| times wq with xq's sign put on
       the weights: a vpxor a product, and the row's |xq|, sign mask and
       correction), and the pre-pass measured 0.97x float32's training
       step at 768 x 24,576, k 64, on a 2-core AVX-512 Xeon built -mavx2
       -mfma; the 7-bit weights 1.11-1.14x (170 -> 230 latents a row
       recomputed), the encode pre-pass 0.95x -> 1.18x. */
#if defined(LSAE__AVXVNNI)
#define LSAE__DOT4(c, a, b) c = _mm256_dpbusd_avx_epi32(c, a, b)
#else
    const __m256i ones = _mm256_set1_epi16(1);
#define LSAE__DOT4(c, a, b) c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones))
#endif
    size_t h, r0, p;
    for (h = 0; h < LSAE__NT; h += 32)
        for (r0 = 0; r0 < mr; r0 += 2) {
            const uint8_t *x0 = xu + r0 * ldx, *x1 = r0 + 1 < mr ? x0 + ldx : x0;
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            for (p = 0; p < dp4; ++p) {
                const int8_t *b = Wt + p * LSAE__NT * 4 + h * 4;
                const __m256i b0 = _mm256_loadu_si256((const __m256i *)(const void *)b), b1 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 32));
                const __m256i b2 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 64)), b3 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 96));
                __m256i a;
                int32_t v;
                memcpy(&v, x0 + 4 * p, 4);
                a = _mm256_set1_epi32(v);
                LSAE__DOT4(c00, a, b0); LSAE__DOT4(c01, a, b1); LSAE__DOT4(c02, a, b2); LSAE__DOT4(c03, a, b3);
                memcpy(&v, x1 + 4 * p, 4);
                a = _mm256_set1_epi32(v);
                LSAE__DOT4(c10, a, b0); LSAE__DOT4(c11, a, b1); LSAE__DOT4(c12, a, b2); LSAE__DOT4(c13, a, b3);
            }
            lsae__store_2x32(acc + r0 * LSAE__NT + h, r0 + 1 < mr, c00, c01, c02, c03, c10, c11, c12, c13);
        }
#undef LSAE__DOT4
#else
    /* portable: 16-bit products summed in 32 bits, a form compilers turn
       into pmaddwd-style vector code */
    size_t r, p, j;
    for (r = 0; r < mr; ++r) {
        int32_t *c = acc + r * LSAE__NT;
        const uint8_t *x = xu + r * ldx;
        for (j = 0; j < LSAE__NT; ++j) c[j] = 0;
        for (p = 0; p < dp4; ++p) {
            const int8_t *b = Wt + p * LSAE__NT * 4;
            const int32_t a0 = x[4 * p], a1 = x[4 * p + 1], a2 = x[4 * p + 2], a3 = x[4 * p + 3];
            for (j = 0; j < LSAE__NT; ++j)
                c[j] += a0 * b[4 * j] + a1 * b[4 * j + 1] + a2 * b[4 * j + 2] + a3 * b[4 * j + 3];
        }
    }
#endif
}

#if defined(LSAE__AMX)
/* arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18), system
   call 158 on x86-64 Linux, made directly: a strict C99 build declares no
   syscall(). The grant is for the whole process and asking again is
   harmless, so two threads that race here both get the same answer.
   1 when the tiles may be used. */
static int lsae__amx_ready(void)
{
    static volatile int state = 0; /* 0 not asked, 1 granted, -1 refused */
    if (state == 0) {
        long ret;
        __asm__ __volatile__("syscall" : "=a"(ret) : "0"(158L), "D"(0x1023L), "S"(18L) : "rcx", "r11", "memory");
        state = ret == 0 ? 1 : -1;
    }
    return state > 0;
}

/* The tile configuration (ldtilecfg's 64 bytes): C tiles 0-3, each 16 rows
   x 16 int32 (a quarter of an NT tile's latents); A tile 4, 16 rows x 64
   bytes of xu; B tile 5, 16 groups of 4 bytes x 16 latents; for the last
   dp mod 64 bytes an A tile 6 and a B tile 7 of that depth. */
typedef struct lsae__amxcfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} lsae__amxcfg;

static void lsae__amx_config(lsae__amxcfg *c, size_t dp)
{
    const size_t tail = dp % 64;
    int i;
    memset(c, 0, sizeof *c);
    c->palette = 1;
    for (i = 0; i < 6; ++i) {
        c->rows[i] = 16;
        c->colsb[i] = 64;
    }
    if (tail) {
        c->rows[6] = 16;
        c->colsb[6] = (uint16_t)tail;
        c->rows[7] = (uint8_t)(tail / 4);
        c->colsb[7] = 64;
    } else {
        /* no tail: tiles 6 and 7 are a second A and B tile of full depth
           (lsae__lp_tile_amx32) */
        c->rows[6] = c->rows[7] = 16;
        c->colsb[6] = c->colsb[7] = 64;
    }
}

/* acc[r][j] for 16 rows r (xu, ldx bytes apart: all 16 are read, so the
   caller pads) and one tile's NT latents, the sums lsae__lp_tile writes.
   Wt's layout [dp/4][NT][4] is already what a B tile reads: 16 of its
   4-byte groups of 16 latents, NT 4 bytes apart. The calling thread has
   loaded lsae__amx_config's configuration. LSAE__AMXMR: the most rows a
   call takes (lsae__lp_tile_amx32), lsae__amx_rows(dp) those it does. */
#define LSAE__AMXMR 32
static size_t lsae__amx_rows(size_t dp) { return dp % 64 ? 16 : 32; }
static void lsae__lp_tile_amx(int32_t *acc, const uint8_t *xu, size_t ldx, const int8_t *Wt, size_t dp)
{
    const size_t nk = dp / 64, ldb = LSAE__NT * 4;
    size_t kc;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (kc = 0; kc < nk; ++kc) {
        const int8_t *b = Wt + kc * 16 * ldb;
        _tile_loadd(4, xu + kc * 64, ldx);
        _tile_loadd(5, b, ldb);
        _tile_dpbusd(0, 4, 5);
        _tile_loadd(5, b + 64, ldb);
        _tile_dpbusd(1, 4, 5);
        _tile_loadd(5, b + 128, ldb);
        _tile_dpbusd(2, 4, 5);
        _tile_loadd(5, b + 192, ldb);
        _tile_dpbusd(3, 4, 5);
    }
    if (dp % 64) {
        const int8_t *b = Wt + nk * 16 * ldb;
        _tile_loadd(6, xu + nk * 64, ldx);
        _tile_loadd(7, b, ldb);
        _tile_dpbusd(0, 6, 7);
        _tile_loadd(7, b + 64, ldb);
        _tile_dpbusd(1, 6, 7);
        _tile_loadd(7, b + 128, ldb);
        _tile_dpbusd(2, 6, 7);
        _tile_loadd(7, b + 192, ldb);
        _tile_dpbusd(3, 6, 7);
    }
    _tile_stored(0, acc, ldb);
    _tile_stored(1, acc + 16, ldb);
    _tile_stored(2, acc + 32, ldb);
    _tile_stored(3, acc + 48, ldb);
}

/* The same sums for 32 rows (all 32 read), dp a multiple of 64: the NT
   latents in two halves of 32, each a 2 x 2 block of C tiles fed per k
   step by two A tiles (rows 0-15, 16-31) and two B tiles. The 16-row
   kernel loads four B tiles for its four products; this one loads two, so
   a row takes half the int8 weights' traffic from L2 (the A tiles, 24 KiB
   of rows, come from L1). That traffic counts once the blocks of rows are
   large (lsae__lp_select: 256 rows, 1.66x -> 1.72x float32's training
   step); with blocks of 64, when the copy came from memory four times as
   often, it made no difference. */
static void lsae__lp_tile_amx32(int32_t *acc, const uint8_t *xu, size_t ldx, const int8_t *Wt, size_t dp)
{
    const size_t nk = dp / 64, ldb = LSAE__NT * 4;
    size_t kc, h;
    for (h = 0; h < 2; ++h) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (kc = 0; kc < nk; ++kc) {
            const int8_t *b = Wt + kc * 16 * ldb + h * 128;
            _tile_loadd(4, xu + kc * 64, ldx);
            _tile_loadd(6, xu + 16 * ldx + kc * 64, ldx);
            _tile_loadd(5, b, ldb);
            _tile_loadd(7, b + 64, ldb);
            _tile_dpbusd(0, 4, 5);
            _tile_dpbusd(1, 4, 7);
            _tile_dpbusd(2, 6, 5);
            _tile_dpbusd(3, 6, 7);
        }
        _tile_stored(0, acc + h * 32, ldb);
        _tile_stored(1, acc + h * 32 + 16, ldb);
        _tile_stored(2, acc + 16 * LSAE__NT + h * 32, ldb);
        _tile_stored(3, acc + 16 * LSAE__NT + h * 32 + 16, ldb);
    }
}
#else
#define LSAE__AMXMR 1
#endif

/* a[0..n) rearranged so that a[0..k) are its k largest; returns the
   smallest of those (the k-th largest). 0 < k <= n. Quickselect with a
   three-way partition (ties go to the middle, so runs of equal values end
   it). */
static float lsae__kth_largest(float *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n; /* the k-th largest lies in a[lo, hi); all before lo are >= it */
    while (hi - lo > 1) {
        const float pv = a[lo + (hi - lo) / 2];
        size_t lt = lo, i = lo, gt = hi; /* [lo, lt) > pv, [lt, i) == pv, [gt, hi) < pv */
        float t;
        while (i < gt) {
            if (a[i] > pv) { t = a[lt]; a[lt++] = a[i]; a[i++] = t; }
            else if (a[i] < pv) { t = a[--gt]; a[gt] = a[i]; a[i] = t; }
            else ++i;
        }
        if (k - 1 < lt) hi = lt;
        else if (k - 1 < gt) return pv;
        else lo = gt;
    }
    return a[k - 1];
}

/* h[0..*n) is a min-heap of at most K values: v enters, replacing the
   least when the heap is full (the caller has checked v > h[0] then) */
static void lsae__minheap_offer(float *h, size_t *n, size_t K, float v)
{
    size_t i, c;
    if (*n < K) {
        i = (*n)++;
        while (i > 0 && h[(i - 1) / 2] > v) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
        h[i] = v;
        return;
    }
    i = 0;
    for (;;) {
        c = 2 * i + 1;
        if (c >= K) break;
        if (c + 1 < K && h[c + 1] < h[c]) ++c;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

/* One row's state in the pre-pass */
typedef struct lsae__lprow {
    float sx, xn, xrn, T;
    size_t nlo, ncand;
    int overflow;
} lsae__lprow;

/* calls of up to this many rows split the tiles between threads (lsae__lp_select) */
#define LSAE__LPSPLIT 16

/* Scratch sizes per row: lo values (cut back to K when full) and candidates */
static size_t lsae__lp_locap(size_t K) { return 2 * K + 64; }
static size_t lsae__lp_candcap(size_t K, size_t L)
{
    size_t c = 16 * K + 1024, q = L / 4 < 16384 ? L / 4 : 16384;
    return c > q ? c : q;
}


/* One row of a tile of nt latents: S = acc - LSAE__LPOFF wsum, A = (sx sw) S,
   v = A + b, eps (the bound of the header comment above), lo = v - eps,
   hi = v + eps into lo[], hi[]; returns bit j set where lo > T or where
   hi >= T and hi > 0 (the latent may enter the lo list or the candidates).
   The vector forms may round eps differently (fused multiply-adds): any
   rounding is inside the bound's slack. */
static uint64_t lsae__lp_bounds(const int32_t *acc, const int32_t *ws, const float *sw, const float *cw, const float *qn, const float *b, size_t nt,
                                float sx, float xn, float xrn, float T, float *lo, float *hi)
{
    const float rel = 1.0f + 1.0f / 65536.0f, sab = 1.0f / 2097152.0f, tiny = 1e-35f;
    uint64_t mask = 0;
    size_t j = 0;
#if defined(LSAE__AVX512)
    if (nt == LSAE__NT) {
        const __m512 vsx = _mm512_set1_ps(sx), vxn = _mm512_set1_ps(xn), vxrn = _mm512_set1_ps(xrn), vrel = _mm512_set1_ps(rel);
        const __m512 vsab = _mm512_set1_ps(sab), vtiny = _mm512_set1_ps(tiny), vT = _mm512_set1_ps(T), zero = _mm512_setzero_ps();
        const __m512i absm = _mm512_set1_epi32(0x7FFFFFFF);
        for (; j < LSAE__NT; j += 16) {
            /* S = acc - 128 wsum (LSAE__LPOFF = 2^7) */
            const __m512i S = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(acc + j)), _mm512_maskz_slli_epi32((__mmask16)0xFFFF, _mm512_loadu_si512((const void *)(ws + j)), 7));
            const __m512 A = _mm512_mul_ps(_mm512_mul_ps(vsx, _mm512_loadu_ps(sw + j)), _mm512_maskz_cvtepi32_ps((__mmask16)0xFFFF, S)); /* masked forms: see lsae__half256 */
            const __m512 bb = _mm512_loadu_ps(b + j), v = _mm512_add_ps(A, bb);
            const __m512 mag = _mm512_add_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(A), absm)),
                                             _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(bb), absm)));
            const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_fmadd_ps(vxn, _mm512_loadu_ps(cw + j), _mm512_mul_ps(vxrn, _mm512_loadu_ps(qn + j))), vrel,
                                                           _mm512_mul_ps(vsab, mag)), vtiny);
            const __m512 l = _mm512_sub_ps(v, e), h = _mm512_add_ps(v, e);
            const __mmask16 ml = _mm512_cmp_ps_mask(l, vT, _CMP_GT_OQ);
            const __mmask16 mh = _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(h, vT, _CMP_GE_OQ), h, zero, _CMP_GT_OQ);
            _mm512_storeu_ps(lo + j, l);
            _mm512_storeu_ps(hi + j, h);
            mask |= (uint64_t)(unsigned)(ml | mh) << j;
        }
        return mask;
    }
#elif defined(LSAE__AVX2)
    if (nt == LSAE__NT) {
        const __m256 vsx = _mm256_set1_ps(sx), vxn = _mm256_set1_ps(xn), vxrn = _mm256_set1_ps(xrn), vrel = _mm256_set1_ps(rel);
        const __m256 vsab = _mm256_set1_ps(sab), vtiny = _mm256_set1_ps(tiny), vT = _mm256_set1_ps(T), zero = _mm256_setzero_ps();
        const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
        for (; j < LSAE__NT; j += 8) {
            const __m256i S = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(acc + j)), _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(ws + j)), 7));
            const __m256 A = _mm256_mul_ps(_mm256_mul_ps(vsx, _mm256_loadu_ps(sw + j)), _mm256_cvtepi32_ps(S));
            const __m256 bb = _mm256_loadu_ps(b + j), v = _mm256_add_ps(A, bb);
            const __m256 mag = _mm256_add_ps(_mm256_and_ps(A, absm), _mm256_and_ps(bb, absm));
            const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(_mm256_fmadd_ps(vxn, _mm256_loadu_ps(cw + j), _mm256_mul_ps(vxrn, _mm256_loadu_ps(qn + j))), vrel,
                                                           _mm256_mul_ps(vsab, mag)), vtiny);
            const __m256 l = _mm256_sub_ps(v, e), h = _mm256_add_ps(v, e);
            const __m256 pass = _mm256_or_ps(_mm256_cmp_ps(l, vT, _CMP_GT_OQ), _mm256_and_ps(_mm256_cmp_ps(h, vT, _CMP_GE_OQ), _mm256_cmp_ps(h, zero, _CMP_GT_OQ)));
            _mm256_storeu_ps(lo + j, l);
            _mm256_storeu_ps(hi + j, h);
            mask |= (uint64_t)(unsigned)_mm256_movemask_ps(pass) << j;
        }
        return mask;
    }
#endif
    for (; j < nt; ++j) {
        const float A = (sx * sw[j]) * (float)(acc[j] - LSAE__LPOFF * ws[j]);
        const float v = A + b[j];
        const float e = (xn * cw[j] + xrn * qn[j]) * rel + sab * (fabsf(A) + fabsf(b[j])) + tiny;
        lo[j] = v - e;
        hi[j] = v + e;
        if (lo[j] > T || (hi[j] >= T && hi[j] > 0.0f)) mask |= (uint64_t)1 << j;
    }
    return mask;
}

/* e[j] = x . w[j] for j < n (n <= 16) by the float32 kernel's exact chain,
   c = 0; c = fma(x_p, w_jp, c) for p = 0, ..., d - 1 (LSAE__FMA, as the
   kernels), each latent its own chain. With AVX2 the chains are vector
   lanes: eight rows' next eight weights are loaded and turned (an 8 x 8
   transpose) so that one vector holds w_jp for eight j at one p; sixteen
   latents run as two chains in flight, since one chain waits on its
   fused multiply-add's latency. Elsewhere, eight scalar chains at a time. */
#if defined(LSAE__AVX2)
/* always inlined where the compiler allows asking: GCC left it a call,
   whose eight outputs then went through memory with a vzeroupper every
   8 floats of the pre-pass recomputation (the training step's pre-pass at
   768 x 24,576, k 64, 4 batches a step: 1.51x -> 1.55x float32's) */
#if defined(__GNUC__)
__attribute__((always_inline)) inline
#endif
static void lsae__t8x8(const float *const *w, size_t p, __m256 *c)
{
    const __m256 r0 = _mm256_loadu_ps(w[0] + p), r1 = _mm256_loadu_ps(w[1] + p), r2 = _mm256_loadu_ps(w[2] + p), r3 = _mm256_loadu_ps(w[3] + p);
    const __m256 r4 = _mm256_loadu_ps(w[4] + p), r5 = _mm256_loadu_ps(w[5] + p), r6 = _mm256_loadu_ps(w[6] + p), r7 = _mm256_loadu_ps(w[7] + p);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5), t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE), s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE), s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    c[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    c[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    c[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    c[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    c[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    c[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    c[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    c[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif
static void lsae__exact_dots(const float *x, const float *const *w, size_t n, size_t d, float *e)
{
    size_t j = 0, p;
#if defined(LSAE__AVX2)
    if (n == 16 || n == 8) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), c[8], c2[8];
        size_t q;
        for (p = 0; p + 8 <= d; p += 8) {
            lsae__t8x8(w, p, c);
            if (n == 16) {
                lsae__t8x8(w + 8, p, c2);
                for (q = 0; q < 8; ++q) {
                    const __m256 xb = _mm256_set1_ps(x[p + q]);
                    a0 = _mm256_fmadd_ps(xb, c[q], a0);
                    a1 = _mm256_fmadd_ps(xb, c2[q], a1);
                }
            } else
                for (q = 0; q < 8; ++q) a0 = _mm256_fmadd_ps(_mm256_set1_ps(x[p + q]), c[q], a0);
        }
        _mm256_storeu_ps(e, a0);
        _mm256_storeu_ps(e + 8, a1);
        /* the last d mod 8 steps of every chain */
        for (; p < d; ++p)
            for (j = 0; j < n; ++j) e[j] = LSAE__FMA(x[p], w[j][p], e[j]);
        return;
    }
#endif
    for (; j + 8 <= n; j += 8) {
        const float *w0 = w[j], *w1 = w[j + 1], *w2 = w[j + 2], *w3 = w[j + 3], *w4 = w[j + 4], *w5 = w[j + 5], *w6 = w[j + 6], *w7 = w[j + 7];
        float e0 = 0.0f, e1 = 0.0f, e2 = 0.0f, e3 = 0.0f, e4 = 0.0f, e5 = 0.0f, e6 = 0.0f, e7 = 0.0f;
        for (p = 0; p < d; ++p) {
            const float xp = x[p];
            e0 = LSAE__FMA(xp, w0[p], e0); e1 = LSAE__FMA(xp, w1[p], e1);
            e2 = LSAE__FMA(xp, w2[p], e2); e3 = LSAE__FMA(xp, w3[p], e3);
            e4 = LSAE__FMA(xp, w4[p], e4); e5 = LSAE__FMA(xp, w5[p], e5);
            e6 = LSAE__FMA(xp, w6[p], e6); e7 = LSAE__FMA(xp, w7[p], e7);
        }
        e[j] = e0; e[j + 1] = e1; e[j + 2] = e2; e[j + 3] = e3; e[j + 4] = e4; e[j + 5] = e5; e[j + 6] = e6; e[j + 7] = e7;
    }
    for (; j < n; ++j) {
        float ev = 0.0f;
        for (p = 0; p < d; ++p) ev = LSAE__FMA(x[p], w[j][p], ev);
        e[j] = ev;
    }
}

/* Part of lsae__lp_select: tiles [ta, tb) of the int8 copy against rows
   [b0, b1) (their bytes in xu, dp apart; sx, xn, xrn in st[r]), the tiles
   in groups of G that stay in cache while the rows sweep them, mrc rows a
   tile product (amx: 0, or the rows an AMX product takes). Each row's
   lower bounds go to its min-heap (lob + r clo; st[r].T is the K-th of
   them, 0 until there are K) and the latents that may still be in its top
   K to its list (cand + r cc, in increasing latent order); a list that
   stays over half full after a cut-back sets st[r].overflow. acc, lo, hi:
   the calling thread's scratch. */
static void lsae__lp_sweep(const lsae_model *m, const lsae__lp *q, const uint8_t *xu, size_t b0, size_t b1, size_t ta, size_t tb, size_t G,
                           size_t mrc, int amx, size_t K, size_t clo, size_t cc, lsae__lprow *st, float *lob, lsae__kv *cand, int32_t *acc,
                           float *lo, float *hi)
{
    const size_t L = m->L, dp = q->dp;
    size_t t0, t, r0, rw, j;
    (void)amx;
    for (t0 = ta; t0 < tb; t0 += G) {
        const size_t t1 = t0 + G < tb ? t0 + G : tb;
        for (r0 = b0; r0 < b1; r0 += mrc) {
            const size_t mr = b1 - r0 < mrc ? b1 - r0 : mrc;
            for (t = t0; t < t1; ++t) {
                const size_t l0 = t * LSAE__NT, nt = L - l0 < LSAE__NT ? L - l0 : LSAE__NT;
                const int32_t *ws = q->wsum + l0;
                const float *sw = q->sw + l0, *cw = q->cw + l0, *qn = q->qn + l0, *b = m->b_enc + l0;
#if defined(LSAE__AMX)
                /* (16 rows or fewer left: the 16-row product, half
                   the tile work; one row's encode 2.0 -> 1.4 ms) */
                if (amx == 32 && mr > 16)
                    lsae__lp_tile_amx32(acc, xu + r0 * dp, dp, q->wq + t * (dp / 4) * LSAE__NT * 4, dp);
                else if (amx)
                    lsae__lp_tile_amx(acc, xu + r0 * dp, dp, q->wq + t * (dp / 4) * LSAE__NT * 4, dp);
                else
#endif
                lsae__lp_tile(acc, xu + r0 * dp, dp, mr, q->wq + t * (dp / 4) * LSAE__NT * 4, dp);
                for (rw = 0; rw < mr; ++rw) {
                    lsae__lprow *s = st + r0 + rw;
                    const int32_t *a = acc + rw * LSAE__NT;
                    const float sx = s->sx, xn = s->xn, xrn = s->xrn, T = s->T;
                    float *lb = lob + (r0 + rw) * clo;
                    lsae__kv *cd = cand + (r0 + rw) * cc;
                    uint64_t mask;
                    if (s->overflow) continue;
                    mask = lsae__lp_bounds(a, ws, sw, cw, qn, b, nt, sx, xn, xrn, T, lo, hi);
                    /* the latents that may enter either list, in increasing order */
                    while (mask) {
                        j = (size_t)LSAE__CTZ64(mask);
                        mask &= mask - 1;
                        if (lo[j] > s->T) {
                            /* the K largest lower bounds so far in a
                               min-heap: T is the K-th of them (0
                               until there are K) */
                            lsae__minheap_offer(lb, &s->nlo, K, lo[j]);
                            if (s->nlo == K) s->T = lb[0];
                        }
                        if (hi[j] >= s->T && hi[j] > 0.0f) {
                            cd[s->ncand].v = hi[j];
                            cd[s->ncand++].i = (int32_t)(l0 + j);
                            if (s->ncand == cc) {
                                /* cut back to those that can still enter */
                                size_t i, n = 0;
                                for (i = 0; i < cc; ++i)
                                    if (cd[i].v >= s->T) cd[n++] = cd[i];
                                s->ncand = n;
                                if (n > cc / 2) { s->overflow = 1; break; }
                            }
                        }
                    }
                }
            }
        }
    }
}

/* Part of lsae__lp_select: one row's top K (out, best first) from its
   candidates cd[0..n) (those whose upper bound reaches T), recomputed in
   float32 from the best upper bound down until the K-th exact value beats
   the next bound. kb: clo floats of scratch; srt: 2 (n + K) entries.
   Returns the latents recomputed. */
static size_t lsae__lp_exact_row(const lsae_model *m, const float *x, lsae__kv *cd, size_t n, float *kb, size_t clo, lsae__kv *srt, size_t K,
                                 lsae__kv *out)
{
    const size_t d = m->d, L = m->L;
    size_t i, c = 0, nb = 0; /* kb[0..nb): positive exact values, cut back to the K best when full */
    /* best upper bound first: once the k-th exact value so far beats the
       next upper bound, the rest are strictly worse */
    lsae__sort_best(cd, n, srt, L);
    for (i = 0; i < n;) {
        size_t nb8 = n - i < 8 ? n - i : 8, jj;
        int32_t id[16];
        float e[16];
        const float *wr[16];
        float kth = 0.0f;
        if (nb >= K) {
            kth = lsae__kth_largest(kb, nb, K);
            nb = K;
            if (cd[i].v < kth) break;
        }
        /* a second eight join when they too pass that test (two chains in
           flight) */
        if (n - i >= 16 && (nb < K || cd[i + 8].v >= kth)) nb8 = 16;
        for (jj = 0; jj < nb8; ++jj) {
            id[jj] = cd[i + jj].i;
            wr[jj] = m->W_enc + (size_t)id[jj] * d;
        }
        lsae__exact_dots(x, wr, nb8, d, e);
        /* + b_enc, ReLU; the positive ones compete (cd[c] with c <= i:
           slots already read) */
        for (jj = 0; jj < nb8; ++jj) {
            const float v = e[jj] + m->b_enc[id[jj]];
            if (v > 0.0f) {
                cd[c].v = v;
                cd[c++].i = id[jj];
                kb[nb++] = v;
                if (nb == clo) { (void)lsae__kth_largest(kb, nb, K); nb = K; }
            }
        }
        i += nb8;
    }
    lsae__sort_best(cd, c, srt, L);
    if (c >= K) {
        memcpy(out, cd, K * sizeof(lsae__kv));
    } else {
        /* fewer than K positive: zeros at the lowest latents not among
           them, as lsae__select pads */
        memcpy(out, cd, c * sizeof(lsae__kv));
        lsae__pad_lowest(out, c, K, srt, L);
    }
    return i;
}

/* lsae__lp_select: the top K of ReLU(xc W_enc^T + b_enc) for R rows, as
   lsae__select writes it (top [R, K], best first), through the int8
   pre-pass. cand_counts (may be NULL): per row, the latents recomputed in
   float32 (L for a row handed to the float32 pass). */
static lsae_result lsae__lp_select(const lsae_model *m, const lsae__lp *q, const float *xc, size_t R, size_t K, lsae__kv *top,
                                   int nthreads, size_t *cand_counts)
{
    const size_t d = m->d, L = m->L, dp = q->dp, clo = lsae__lp_locap(K), cc = lsae__lp_candcap(K, L);
    /* tiles that stay in cache while a block of rows sweeps them (~256 KiB) */
    size_t G = ((size_t)256 << 10) / (dp * LSAE__NT), nover = 0, r;
    /* rows a thread sweeps over a group of tiles: up to 256, and no more
       than an even share of the rows (one block a thread). Each block reads
       the whole int8 copy from memory once (19 MB at 768 x 24,576), which
       the tile products wait on: the training step's pre-pass at k 64,
       batch 512, 4 batches a step went from 1.53x float32's (blocks of 64
       rows, 4 a thread) to 1.66x (256) on AMX tiles (1.72x with the
       32-row tile products), and VNNI's from 1.21x to 1.42x. The cost: a
       thread slowed by another process holds the other up for its whole
       block (with a busy loop on one of the 2 cores that step ran at
       3,390-4,500 samples/s against 3,520-5,540 with the small blocks, 8
       runs each, noisy). The fix for both would split the latents, not the
       rows, between the threads (each tile read once, handed out as
       threads come free, the per-row lists merged), as lsae__select does;
       it is done below for calls of a few rows only (LSAE__LPSPLIT), where
       the lists are small. */
    size_t RB, mrc = LSAE__LPMR, Rp = R, rbmax = 256;
    int amx = 0; /* 0, or the rows a tile product takes (16, 32) */
    /* split: calls of up to LSAE__LPSPLIT rows share the tiles between ns
       threads (a row alone is bound by reading the int8 copy: one thread
       reads it at a fraction of the memory's speed), each with its own
       lists of every row, merged before the exact recomputation */
    const size_t ns = nthreads > 1 && R <= LSAE__LPSPLIT && q->ntiles >= 8 ? ((size_t)nthreads < 4 ? (size_t)nthreads : 4) : 1;
    uint8_t *xu;
    float *lob;
    lsae__kv *cand, *sortbuf;
    lsae__lprow *st;
    ptrdiff_t blk;
    lsae_result res = LSAE_OK;
#if defined(LSAE__AMX)
    /* 32 rows a tile product (16 where dp is not a multiple of 64); the
       rows padded to a multiple of that (zeros) so that the last tile
       load stays inside xu */
    if ((amx = lsae__amx_ready()) != 0) {
        mrc = lsae__amx_rows(dp);
        amx = (int)mrc;
        Rp = (R + mrc - 1) / mrc * mrc;
    }
#endif
    (void)amx;
    RB = R / (size_t)(nthreads > 0 ? nthreads : 1) / mrc * mrc;
    if (G < 1) G = 1;
    if (RB > rbmax) RB = rbmax / mrc * mrc;
    if (RB < mrc) RB = mrc;
    xu = (uint8_t *)lsae__alloc_array(m->alloc, Rp, dp, "int8 rows");
    /* with the split, ns copies of every row's lists, and room for the
       merged candidates of a row */
    lob = xu ? (float *)lsae__alloc_array(m->alloc, ns * R, clo * sizeof(float), "pre-pass scratch") : NULL;
    cand = lob ? (lsae__kv *)lsae__alloc_array(m->alloc, (ns > 1 ? 2 * ns : 1) * R, cc * sizeof(lsae__kv), "pre-pass scratch") : NULL;
    sortbuf = cand ? (lsae__kv *)lsae__alloc_array(m->alloc, (size_t)nthreads, 2 * (ns * cc + K) * sizeof(lsae__kv), "pre-pass scratch") : NULL;
    st = sortbuf ? (lsae__lprow *)lsae__alloc_array(m->alloc, (ns > 1 ? ns + 1 : 1) * R, sizeof(lsae__lprow), "pre-pass scratch") : NULL;
    if (!st) { res = LSAE_OUT_OF_MEMORY; goto done; }
    if (Rp > R) memset(xu + R * dp, 0, (Rp - R) * dp);
    if (ns > 1) {
        /* the rows quantised; part s sweeps tiles [ntiles s / ns,
           ntiles (s + 1) / ns) into its own lists (sts + s R, lob and
           cand + s R rows) */
        lsae__lprow *sts = st + R;
        lsae__kv *merged = cand + ns * R * cc; /* R rows of ns cc */
        for (r = 0; r < R; ++r) lsae__lp_row(xc + r * d, d, dp, xu + r * dp, &st[r].sx, &st[r].xn, &st[r].xrn);
        LSAE__OMP(parallel num_threads((int)ns))
        {
            int32_t acc[(LSAE__LPMR > LSAE__AMXMR ? LSAE__LPMR : LSAE__AMXMR) * LSAE__NT];
            float lo[LSAE__NT], hi[LSAE__NT];
            ptrdiff_t sp;
#if defined(LSAE__AMX)
            lsae__amxcfg tcfg;
            if (amx) {
                lsae__amx_config(&tcfg, dp);
                _tile_loadconfig(&tcfg);
            }
#endif
            /* a loop over the ns parts, not the thread number: every part
               is swept however many threads the runtime gives */
            LSAE__OMP(for schedule(static, 1))
            for (sp = 0; sp < (ptrdiff_t)ns; ++sp) {
                const size_t s = (size_t)sp, ta = q->ntiles * s / ns, tb = q->ntiles * (s + 1) / ns;
                lsae__lprow *my = sts + s * R;
                size_t rr;
                for (rr = 0; rr < R; ++rr) {
                    my[rr] = st[rr];
                    my[rr].T = 0.0f;
                    my[rr].nlo = my[rr].ncand = 0;
                    my[rr].overflow = 0;
                }
                lsae__lp_sweep(m, q, xu, 0, R, ta, tb, G, mrc, amx, K, clo, cc, my, lob + s * R * clo, cand + s * R * cc, acc, lo, hi);
            }
#if defined(LSAE__AMX)
            if (amx) _tile_release();
#endif
        }
        /* the merge: T = the K-th largest of every thread's K largest lower
           bounds (the K largest of all are among them), so the same T as
           one sweep over all tiles; the candidates whose upper bound
           reaches it, the same set as one sweep keeps (each thread kept a
           superset: its own T was never above this one) */
        for (r = 0; r < R; ++r) {
            lsae__lprow *o = st + r;
            float *all = (float *)(void *)(merged + r * ns * cc); /* scratch for the union before the candidates are written */
            size_t s, nu = 0, n = 0, i;
            o->overflow = 0;
            o->T = 0.0f;
            for (s = 0; s < ns; ++s) o->overflow |= sts[s * R + r].overflow;
            if (o->overflow) continue;
            for (s = 0; s < ns; ++s) {
                memcpy(all + nu, lob + (s * R + r) * clo, sts[s * R + r].nlo * sizeof(float));
                nu += sts[s * R + r].nlo;
            }
            if (nu >= K) o->T = lsae__kth_largest(all, nu, K);
            for (s = 0; s < ns; ++s) {
                const lsae__kv *cs = cand + (s * R + r) * cc;
                for (i = 0; i < sts[s * R + r].ncand; ++i)
                    if (cs[i].v >= o->T) merged[r * ns * cc + n++] = cs[i];
            }
            o->ncand = n;
        }
        LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(nthreads))
        for (blk = 0; blk < (ptrdiff_t)R; ++blk) {
            const size_t rw = (size_t)blk;
            lsae__kv *srt = sortbuf + (size_t)lsae__thread_id() * 2 * (ns * cc + K);
            size_t c;
            if (st[rw].overflow) continue;
            c = lsae__lp_exact_row(m, xc + rw * d, merged + rw * ns * cc, st[rw].ncand, lob + rw * clo, clo, srt, K, top + rw * K);
            if (cand_counts) cand_counts[rw] = c;
        }
    } else {
        LSAE__OMP(parallel num_threads(nthreads))
        {
            int32_t acc[(LSAE__LPMR > LSAE__AMXMR ? LSAE__LPMR : LSAE__AMXMR) * LSAE__NT];
            float lo[LSAE__NT], hi[LSAE__NT];
            lsae__kv *srt = sortbuf + (size_t)lsae__thread_id() * 2 * (cc + K);
            ptrdiff_t rr;
#if defined(LSAE__AMX)
            lsae__amxcfg tcfg; /* the tiles are each thread's own */
            if (amx) {
                lsae__amx_config(&tcfg, dp);
                _tile_loadconfig(&tcfg);
            }
#endif
            LSAE__OMP(for schedule(dynamic, 1))
            for (blk = 0; blk < (ptrdiff_t)((R + RB - 1) / RB); ++blk) {
                const size_t b0 = (size_t)blk * RB, b1 = b0 + RB < R ? b0 + RB : R;
                size_t rw;
                /* the block's rows quantised (by the thread that uses them: no
                   barrier between) */
                for (rr = (ptrdiff_t)b0; rr < (ptrdiff_t)b1; ++rr) {
                    lsae__lprow *s = st + rr;
                    lsae__lp_row(xc + (size_t)rr * d, d, dp, xu + (size_t)rr * dp, &s->sx, &s->xn, &s->xrn);
                    s->T = 0.0f;
                    s->nlo = s->ncand = 0;
                    s->overflow = 0;
                }
                lsae__lp_sweep(m, q, xu, b0, b1, 0, q->ntiles, G, mrc, amx, K, clo, cc, st, lob, cand, acc, lo, hi);
                /* each row of the block: the candidates recomputed exactly */
                for (rw = b0; rw < b1; ++rw) {
                    lsae__lprow *s = st + rw;
                    lsae__kv *cd = cand + rw * cc;
                    size_t i, n = 0, c;
                    if (s->overflow) continue;
                    for (i = 0; i < s->ncand; ++i)
                        if (cd[i].v >= s->T) cd[n++] = cd[i];
                    c = lsae__lp_exact_row(m, xc + rw * d, cd, n, lob + rw * clo, clo, srt, K, top + rw * K);
                    if (cand_counts) cand_counts[rw] = c;
                }
            }
#if defined(LSAE__AMX)
            if (amx) _tile_release();
#endif
        }
    }
    /* rows whose candidates overflowed: the float32 pass */
    for (r = 0; r < R; ++r) nover += st[r].overflow != 0;
    if (nover) {
        lsae__select_ws ws;
        float *xo = (float *)lsae__alloc_array(m->alloc, nover, d * sizeof(float), "overflow rows");
        lsae__kv *to = xo ? (lsae__kv *)lsae__alloc_array(m->alloc, nover, K * sizeof(lsae__kv), "overflow rows") : NULL;
        size_t i = 0;
        if (!to || (res = lsae__select_ws_init(m->alloc, &ws, nover, K, 0, d, nthreads)) != LSAE_OK) {
            lsae__free(m->alloc, to);
            lsae__free(m->alloc, xo);
            if (res == LSAE_OK) res = LSAE_OUT_OF_MEMORY;
            goto done;
        }
        for (r = 0; r < R; ++r)
            if (st[r].overflow) memcpy(xo + (i++) * d, xc + r * d, d * sizeof(float));
        lsae__select(m, xo, nover, K, to, NULL, 0, NULL, &ws);
        for (r = 0, i = 0; r < R; ++r)
            if (st[r].overflow) {
                memcpy(top + r * K, to + (i++) * K, K * sizeof(lsae__kv));
                if (cand_counts) cand_counts[r] = L;
            }
        lsae__select_ws_free(m->alloc, &ws);
        lsae__free(m->alloc, to);
        lsae__free(m->alloc, xo);
    }
done:
    lsae__free(m->alloc, st);
    lsae__free(m->alloc, sortbuf);
    lsae__free(m->alloc, cand);
    lsae__free(m->alloc, lob);
    lsae__free(m->alloc, xu);
    return res;
}

/* frees q and what it holds */
static void lsae__lp_release(const lsae_allocator *a, struct lsae__lp *q)
{
    if (!q) return;
    lsae__lp_free(a, q);
    lsae__free(a, q);
}

/* Whether the pre-pass applies to a top K of this model: K small beside L
   (else most latents are candidates), d small enough for 32-bit sums
   (255 127 d < 2^31). */
static int lsae__lp_applies(const lsae_model *m, size_t K, size_t rows)
{
#ifdef LATENTSAE_CUDA
    if (m->cuda) return 0;
#endif
    if (!m->prepass || K == 0 || K > m->L / 16 || m->d > 65536) return 0;
    /* a few rows are bound by reading W_enc: the int8 copy is a quarter of
       it (one row, Zen 4: 768 x 24576 8.1 ms -> 0.8 ms; the AVX2 kernel of
       an -mavx2 build 8.5 ms -> 1.9 ms, 384 x 3072 302 -> 54 us) */
    if (m->prepass == 2 || rows <= 16) return 1;
#if defined(LSAE__LPFAST)
    /* many rows: only where it measured faster (bench/bench.c prepass, one
       thread, Zen 4; AVX-512 VNNI: 768 x 24576 k 32 2.3x, 384 x 12288 1.6x,
       768 x 6144 1.4x, 384 x 3072 1.0x; the AVX2 kernel of an -mavx2 build
       as it was then, with the sign trick, medians of 5 runs: 768 x 24576
       k 32 1.27x, 768 x 12288 1.18x, 384 x 12288 1.20x, 384 x 3072 0.95x;
       on a 2-core AVX-512 Xeon, 2 threads, the -mavx2 build's 7-bit-weight
       kernel 1.25x at 768 x 24576 k 32, 1.22x at 384 x 12288, 0.94x at
       384 x 3072, make bench 2026-12-07): there the fixed costs of a row
       (selection, the recomputed candidates) weigh as much as the product */
    return m->d * m->L >= ((size_t)1 << 22) && K <= m->L / 64;
#else
    return 0; /* the portable int8 product is not faster than float32's */
#endif
}

/* The int8 copy an encode of rows rows uses for a top K: the model's when
   current, else *tmp built now when the call is large enough to repay it
   (2048 rows: building costs about what the float32 pass spends on a few
   hundred rows), else none (*out NULL: the float32 pass). */
static lsae_result lsae__lp_for(const lsae_model *m, size_t rows, size_t K, int nthreads, lsae__lp *tmp, const lsae__lp **out)
{
    lsae_result r;
    *out = NULL;
    memset(tmp, 0, sizeof *tmp);
    if (!lsae__lp_applies(m, K, rows)) return LSAE_OK;
    if (m->lp && m->lp_gen == m->wgen) { *out = m->lp; return LSAE_OK; }
    if (rows < 2048) return LSAE_OK;
    if ((r = lsae__lp_build(m->alloc, tmp, m->W_enc, m->L, m->d, nthreads)) != LSAE_OK) return r;
    *out = tmp;
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_set_encode_prepass(lsae_model *m, int on)
{
    lsae_result r;
    lsae__lp *q;
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_set_encode_prepass: model is NULL");
    lsae__lp_release(m->alloc, m->lp);
    m->lp = NULL;
    if (on < 0 || on > 2) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_set_encode_prepass: on is %d; 0, 1 or 2", on);
    m->prepass = on;
    if (!on || !lsae__lp_applies(m, on == 2 ? m->L / 16 : m->k, 1)) return LSAE_OK;
#ifdef LATENTSAE_CUDA
    if (m->cuda) return LSAE_OK; /* the GPU encode has its own arithmetic */
#endif
    if (m->d > 65536) return LSAE_OK;
    if (!(q = (lsae__lp *)lsae__alloc_array(m->alloc, 1, sizeof *q, "int8 encoder copy"))) return LSAE_OUT_OF_MEMORY;
    if ((r = lsae__lp_build(m->alloc, q, m->W_enc, m->L, m->d, lsae__num_threads(m->cfg.num_threads))) != LSAE_OK) {
        lsae__free(m->alloc, q);
        return r;
    }
    m->lp = q;
    m->lp_gen = m->wgen;
    return LSAE_OK;
}

/* A loaded model keeps its int8 copy where encode will use it (an
   allocation refused fails the load, as any other: an out-of-memory is
   never swallowed) */
LSAE__MAYBE_UNUSED static lsae_result lsae__lp_keep(lsae_model *m)
{
    return lsae__lp_applies(m, m->k, 1) ? lsae_model_set_encode_prepass(m, 1) : LSAE_OK;
}

/* ---------------------------------------------------------- encode, decode */

/* y[0..len) += e[i].v W[e[i].i][0..len) over the n entries with a nonzero
   activation, in order (rows of W are ld apart), four rows per pass over
   y (eight, lsae__axpy8, where there are). Each element of y is its own
   chain of fused multiply-adds, one per entry in order (lsae__axpy4 is four
   of them), so any len and any split of the columns give the same bits;
   the entries past the last full four take lsae__axpy, as before. */
static void lsae__decode_cols(float *y, const lsae__kv *e, size_t n, const float *W, size_t ld, size_t len)
{
    const float *rows[8];
    float a[8];
    size_t i, m = 0;
    for (i = 0; i < n; ++i) {
        if (e[i].v == 0.0f) continue;
        rows[m] = W + (size_t)e[i].i * ld;
        a[m] = e[i].v;
        if (++m == 8) {
            lsae__axpy8(y, a, rows, len); /* two passes of four in one */
            m = 0;
        }
    }
    i = 0;
    if (m >= 4) {
        lsae__axpy4(y, a, rows[0], rows[1], rows[2], rows[3], len);
        i = 4;
    }
    for (; i < m; ++i) lsae__axpy(y, a[i], rows[i], len);
}

/* y += e[i].v W[e[i].i] over the n entries with a nonzero activation, in
   order (rows of W are d long) */
static void lsae__decode_into(float *y, const lsae__kv *e, size_t n, const float *W, size_t d)
{
    lsae__decode_cols(y, e, n, W, d, d);
}

/* Whether row [d] holds no NaN or Inf: those are the floats whose exponent
   bits are all ones, an integer test with no branch per element (eight
   floats a compare on AVX2). The trainer's F1 and encode's input check. */
static int lsae__row_finite(const float *row, size_t d)
{
    uint32_t bad = 0;
    size_t j = 0;
#if defined(LSAE__AVX2)
    {
        const __m256i ones = _mm256_set1_epi32(0x7F800000);
        __m256i acc = _mm256_setzero_si256();
        for (; j + 8 <= d; j += 8) {
            const __m256i e = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(row + j)), ones);
            acc = _mm256_or_si256(acc, _mm256_cmpeq_epi32(e, ones));
        }
        bad = (uint32_t)!_mm256_testz_si256(acc, acc);
    }
#endif
    for (; j < d; ++j) {
        uint32_t u;
        memcpy(&u, row + j, sizeof u);
        bad |= (uint32_t)((u & 0x7F800000u) == 0x7F800000u);
    }
    return !bad;
}

/* Index of the first row of x [rows, d] holding NaN or Inf, or rows. */
static size_t lsae__first_nonfinite_row(const float *x, size_t rows, size_t d)
{
    size_t r;
    for (r = 0; r < rows; ++r)
        if (!lsae__row_finite(x + r * d, d)) return r;
    return rows;
}

/* xc [R, d] = x [R, d] - b_dec */
static void lsae__center(float *xc, const float *x, const float *b_dec, size_t R, size_t d, int nthreads)
{
    ptrdiff_t r;
    (void)nthreads;
    LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
    for (r = 0; r < (ptrdiff_t)R; ++r) {
        size_t j;
        for (j = 0; j < d; ++j) xc[(size_t)r * d + j] = x[(size_t)r * d + j] - b_dec[j];
    }
}

LSAE_DEF lsae_result lsae_model_encode(const lsae_model *m, const float *x, size_t rows, size_t k, float *top_acts, int32_t *top_indices)
{
    lsae__select_ws ws;
    lsae__lp tmpq;
    const lsae__lp *q = NULL;
    lsae__kv *top = NULL;
    float *xc = NULL;
    size_t chunk, c0, bad;
    int nt;
    lsae_result res;
    int thr;
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_encode: model is NULL");
    LSAE__REFUSE_SHARD(m, "lsae_model_encode");
    thr = lsae__encodes_threshold(&m->cfg);
    if (thr && !m->cfg.batchtopk_row_cap)
        return lsae__err(LSAE_UNSUPPORTED, "lsae_model_encode: a %s model without batchtopk_row_cap keeps a varying number of latents per row (z >= theta); "
                         "use lsae_model_encode_sparse", lsae__sae_type_name(&m->cfg));
    if (k == 0) k = lsae_model_encode_k(m);
#ifdef LATENTSAE_CUDA
    if (m->cuda) {
        if (thr) return lsae__err(LSAE_UNSUPPORTED, "lsae_model_encode: the CUDA encode has no BatchTopK threshold (%s model); move the model to the CPU", lsae__sae_type_name(&m->cfg));
        return lsae__cuda_encode(m->cuda, x, rows, k, top_acts, top_indices);
    }
#endif
    if (k > m->L) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_encode: k = %zu is larger than the number of latents %zu", k, m->L);
    if (rows == 0) return LSAE_OK;
    if (!x || !top_acts || !top_indices) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_encode: x, top_acts and top_indices must not be NULL");
    if ((bad = lsae__first_nonfinite_row(x, rows, m->d)) < rows)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_model_encode: row %zu holds NaN or Inf; drop it before encoding", bad);
    nt = lsae__num_threads(m->cfg.num_threads);
    if ((res = lsae__lp_for(m, rows, k, nt, &tmpq, &q)) != LSAE_OK) return res;
    memset(&ws, 0, sizeof ws);
    if (q) chunk = rows < 256 ? rows : 256;
    else {
        chunk = lsae__select_rows(rows, k, 0, nt);
        if ((res = lsae__select_ws_init(m->alloc, &ws, chunk, k, 0, m->d, nt)) != LSAE_OK) return res;
    }
    xc = (float *)lsae__alloc_array(m->alloc, chunk * m->d, sizeof(float), "centred rows");
    top = xc ? (lsae__kv *)lsae__alloc_array(m->alloc, chunk * k, sizeof(lsae__kv), "top-k output") : NULL;
    if (!top) {
        res = LSAE_OUT_OF_MEMORY;
        goto done;
    }
    for (c0 = 0; c0 < rows; c0 += chunk) {
        size_t R = rows - c0 < chunk ? rows - c0 : chunk, i;
        lsae__center(xc, x + c0 * m->d, m->b_dec, R, m->d, nt);
        if (q) {
            if ((res = lsae__lp_select(m, q, xc, R, k, top, nt, NULL)) != LSAE_OK) goto done;
        } else lsae__select(m, xc, R, k, top, NULL, 0, NULL, &ws);
        for (i = 0; i < R * k; ++i) {
            /* capped threshold: the best k that pass, the rest (a suffix,
               the row being best first) padding at 0 */
            top_acts[c0 * k + i] = thr && !(top[i].v > 0.0f && top[i].v >= m->batchtopk_threshold) ? 0.0f : top[i].v;
            top_indices[c0 * k + i] = top[i].i;
        }
    }
done:
    lsae__free(m->alloc, top);
    lsae__free(m->alloc, xc);
    if (!q) lsae__select_ws_free(m->alloc, &ws);
    lsae__lp_free(m->alloc, &tmpq);
    return res;
}

LSAE_DEF lsae_result lsae_model_decode(const lsae_model *m, const float *acts, const int32_t *idx, size_t rows, size_t k, float *x_hat)
{
    size_t i;
    ptrdiff_t r;
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_decode: model is NULL");
    LSAE__REFUSE_SHARD(m, "lsae_model_decode");
#ifdef LATENTSAE_CUDA
    if (m->cuda) return lsae__cuda_decode(m->cuda, acts, idx, rows, k, x_hat);
#endif
    if (rows == 0) return LSAE_OK;
    if (!acts || !idx || !x_hat) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_decode: acts, indices and x_hat must not be NULL");
    for (i = 0; i < rows * k; ++i)
        if (idx[i] < 0 || (size_t)idx[i] >= m->L)
            return lsae__err(LSAE_INVALID_ARGS, "lsae_model_decode: row %zu, slot %zu has latent index %ld outside [0, %zu)",
                             i / k, i % k, (long)idx[i], m->L);
    LSAE__OMP(parallel for schedule(static) num_threads(lsae__num_threads(m->cfg.num_threads)))
    for (r = 0; r < (ptrdiff_t)rows; ++r) {
        lsae__decode_row_nf(x_hat + (size_t)r * m->d, m, acts + (size_t)r * k, idx + (size_t)r * k, k);
    }
    return LSAE_OK;
}

/* A row's kept count among its K candidates (best first): K for a fixed-k
   type, else the length of the prefix with z > 0 and z >= theta (the row is
   sorted, so the entries that pass are a prefix). */
static size_t lsae__sparse_count(const lsae__kv *row, size_t K, int thr, float theta)
{
    size_t n = 0;
    if (!thr) return K;
    while (n < K && row[n].v > 0.0f && row[n].v >= theta) ++n;
    return n;
}

LSAE_DEF lsae_result lsae_model_encode_sparse(const lsae_model *m, const float *x, size_t rows, size_t capacity,
                                              float *acts, int32_t *indices, size_t *counts, size_t *needed)
{
    lsae__select_ws ws;
    lsae__lp tmpq;
    const lsae__lp *q = NULL;
    lsae__kv *top = NULL;
    float *xc = NULL;
    size_t chunk, c0, bad, K, total, most = 0, r;
    int nt, thr, capped, truncated = 0;
    lsae_result res;
    if (needed) *needed = 0;
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_encode_sparse: model is NULL");
    LSAE__REFUSE_SHARD(m, "lsae_model_encode_sparse");
    if (rows == 0) return LSAE_OK;
    if (!x || !counts || (capacity && (!acts || !indices)))
        return lsae__err(LSAE_INVALID_ARGS, "lsae_model_encode_sparse: x, counts, acts and indices must not be NULL");
    if (!lsae__mul_size(rows, capacity, &total))
        return lsae__err(LSAE_INVALID_ARGS, "lsae_model_encode_sparse: rows * capacity = %zu * %zu overflows", rows, capacity);
    thr = lsae__encodes_threshold(&m->cfg);
    capped = !thr || m->cfg.batchtopk_row_cap;
#ifdef LATENTSAE_CUDA
    if (m->cuda) {
        float *ta;
        int32_t *ti;
        size_t kf = lsae_model_encode_k(m), n;
        if (thr) return lsae__err(LSAE_UNSUPPORTED, "lsae_model_encode_sparse: the CUDA encode has no BatchTopK threshold (%s model); move the model to the CPU", lsae__sae_type_name(&m->cfg));
        if (!lsae__mul_size(rows, kf, &n)) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_encode_sparse: rows * k overflows");
        ta = (float *)lsae__alloc_array(m->alloc, n, sizeof(float), "encode output");
        ti = ta ? (int32_t *)lsae__alloc_array(m->alloc, n, sizeof(int32_t), "encode output") : NULL;
        if (!ti) { lsae__free(m->alloc, ta); return LSAE_OUT_OF_MEMORY; }
        if ((res = lsae__cuda_encode(m->cuda, x, rows, kf, ta, ti)) == LSAE_OK)
            for (r = 0; r < rows; ++r) {
                size_t q, c = kf < capacity ? kf : capacity;
                for (q = 0; q < c; ++q) { acts[r * capacity + q] = ta[r * kf + q]; indices[r * capacity + q] = ti[r * kf + q]; }
                counts[r] = c;
            }
        lsae__free(m->alloc, ti);
        lsae__free(m->alloc, ta);
        if (res != LSAE_OK) return res;
        if (needed) *needed = kf;
        if (kf > capacity)
            return lsae__err(LSAE_TRUNCATED, "lsae_model_encode_sparse: rows keep %zu latents but capacity is %zu; call again with capacity %zu", kf, capacity, kf);
        return LSAE_OK;
    }
#endif
    if ((bad = lsae__first_nonfinite_row(x, rows, m->d)) < rows)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_model_encode_sparse: row %zu holds NaN or Inf; drop it before encoding", bad);
    /* candidates per row: the fixed k; capped threshold: k; uncapped: one
       more than fits, so that a full prefix says the row overflows */
    if (capped) K = thr ? m->k : lsae_model_encode_k(m);
    else K = capacity < m->L ? capacity + 1 : m->L;
    nt = lsae__num_threads(m->cfg.num_threads);
    if ((res = lsae__lp_for(m, rows, K, nt, &tmpq, &q)) != LSAE_OK) return res;
    memset(&ws, 0, sizeof ws);
    if (q) chunk = rows < 256 ? rows : 256;
    else {
        chunk = lsae__select_rows(rows, K, 0, nt);
        if ((res = lsae__select_ws_init(m->alloc, &ws, chunk, K, 0, m->d, nt)) != LSAE_OK) return res;
    }
    xc = (float *)lsae__alloc_array(m->alloc, chunk * m->d, sizeof(float), "centred rows");
    top = xc ? (lsae__kv *)lsae__alloc_array(m->alloc, chunk * K, sizeof(lsae__kv), "top-k output") : NULL;
    if (!top) {
        lsae__free(m->alloc, xc);
        lsae__select_ws_free(m->alloc, &ws);
        lsae__lp_free(m->alloc, &tmpq);
        return LSAE_OUT_OF_MEMORY;
    }
    for (c0 = 0; c0 < rows; c0 += chunk) {
        size_t R = rows - c0 < chunk ? rows - c0 : chunk;
        lsae__center(xc, x + c0 * m->d, m->b_dec, R, m->d, nt);
        if (q) {
            if ((res = lsae__lp_select(m, q, xc, R, K, top, nt, NULL)) != LSAE_OK) {
                lsae__free(m->alloc, top);
                lsae__free(m->alloc, xc);
                lsae__lp_free(m->alloc, &tmpq);
                return res;
            }
        } else lsae__select(m, xc, R, K, top, NULL, 0, NULL, &ws);
        for (r = 0; r < R; ++r) {
            const lsae__kv *row = top + r * K;
            size_t n = lsae__sparse_count(row, K, thr, m->batchtopk_threshold), q, c;
            c = n < capacity ? n : capacity;
            for (q = 0; q < c; ++q) {
                acts[(c0 + r) * capacity + q] = row[q].v;
                indices[(c0 + r) * capacity + q] = row[q].i;
            }
            /* uncapped and every candidate passes: the row may hold more
               (counted exactly below) */
            counts[c0 + r] = (!capped && n == K && K > capacity) ? (size_t)-1 : n;
        }
    }
    lsae__free(m->alloc, top);
    top = NULL;
    lsae__select_ws_free(m->alloc, &ws);
    lsae__lp_free(m->alloc, &tmpq);
    /* rows that overflowed an uncapped threshold: select all L latents of
       each, one row at a time, to count them (the same fused pass, so the
       same values as the first) */
    for (r = 0; r < rows; ++r) {
        if (counts[r] != (size_t)-1) continue;
        if (!top) {
            if ((res = lsae__select_ws_init(m->alloc, &ws, 1, m->L, 0, m->d, nt)) != LSAE_OK) { lsae__free(m->alloc, xc); return res; }
            if (!(top = (lsae__kv *)lsae__alloc_array(m->alloc, m->L, sizeof(lsae__kv), "top-k output"))) {
                lsae__select_ws_free(m->alloc, &ws);
                lsae__free(m->alloc, xc);
                return LSAE_OUT_OF_MEMORY;
            }
        }
        lsae__center(xc, x + r * m->d, m->b_dec, 1, m->d, 1);
        lsae__select(m, xc, 1, m->L, top, NULL, 0, NULL, &ws);
        counts[r] = lsae__sparse_count(top, m->L, 1, m->batchtopk_threshold);
    }
    if (top) {
        lsae__free(m->alloc, top);
        lsae__select_ws_free(m->alloc, &ws);
    }
    lsae__free(m->alloc, xc);
    for (r = 0; r < rows; ++r) {
        if (counts[r] > most) most = counts[r];
        if (counts[r] > capacity) { counts[r] = capacity; truncated = 1; }
    }
    if (needed) *needed = most;
    if (truncated)
        return lsae__err(LSAE_TRUNCATED, "lsae_model_encode_sparse: a row keeps %zu latents but capacity is %zu; the best %zu were written; call again with capacity %zu",
                         most, capacity, capacity, most);
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_decode_sparse(const lsae_model *m, const float *acts, const int32_t *idx, const size_t *counts,
                                              size_t capacity, size_t rows, float *x_hat)
{
    size_t r, q, total;
    ptrdiff_t rr;
    if (!m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_decode_sparse: model is NULL");
    LSAE__REFUSE_SHARD(m, "lsae_model_decode_sparse");
    if (rows == 0) return LSAE_OK;
    if (!counts || !x_hat || (capacity && (!acts || !idx)))
        return lsae__err(LSAE_INVALID_ARGS, "lsae_model_decode_sparse: acts, indices, counts and x_hat must not be NULL");
    if (!lsae__mul_size(rows, capacity, &total))
        return lsae__err(LSAE_INVALID_ARGS, "lsae_model_decode_sparse: rows * capacity = %zu * %zu overflows", rows, capacity);
    for (r = 0; r < rows; ++r) {
        if (counts[r] > capacity)
            return lsae__err(LSAE_INVALID_ARGS, "lsae_model_decode_sparse: row %zu has count %zu > capacity %zu", r, counts[r], capacity);
        for (q = 0; q < counts[r]; ++q) {
            int32_t l = idx[r * capacity + q];
            if (l < 0 || (size_t)l >= m->L)
                return lsae__err(LSAE_INVALID_ARGS, "lsae_model_decode_sparse: row %zu, slot %zu has latent index %ld outside [0, %zu)", r, q, (long)l, m->L);
        }
    }
#ifdef LATENTSAE_CUDA
    if (m->cuda) {
        /* the CUDA decode takes capacity slots a row: the unused ones at 0 */
        float *ta = (float *)lsae__alloc_array(m->alloc, total, sizeof(float), "decode input");
        int32_t *ti = ta ? (int32_t *)lsae__alloc_array(m->alloc, total, sizeof(int32_t), "decode input") : NULL;
        lsae_result res;
        if (!ti) { lsae__free(m->alloc, ta); return LSAE_OUT_OF_MEMORY; }
        for (r = 0; r < rows; ++r)
            for (q = 0; q < capacity; ++q) {
                ta[r * capacity + q] = q < counts[r] ? acts[r * capacity + q] : 0.0f;
                ti[r * capacity + q] = q < counts[r] ? idx[r * capacity + q] : 0;
            }
        res = lsae__cuda_decode(m->cuda, ta, ti, rows, capacity, x_hat);
        lsae__free(m->alloc, ti);
        lsae__free(m->alloc, ta);
        return res;
    }
#endif
    LSAE__OMP(parallel for schedule(static) num_threads(lsae__num_threads(m->cfg.num_threads)))
    for (rr = 0; rr < (ptrdiff_t)rows; ++rr) {
        lsae__decode_row_nf(x_hat + (size_t)rr * m->d, m, acts + (size_t)rr * capacity, idx + (size_t)rr * capacity, counts[rr]);
    }
    return LSAE_OK;
}

/* ---------------------------------------------------------------- trainer */

/* latents per partial sum of the b_dec gradient's encoder side (and per
   unit of work in the backward passes) */
#define LSAE__BDEC_CHUNK 256
/* the AuxK decode: rows per block, latents per chunk of W_dec (768 KiB at
   d = 768, of which only the dead rows are read) */
#define LSAE__DEC_ROWS 256
#define LSAE__DEC_CHUNK 256
/* at most this many row ranges in the parallel entry sort (each has C L
   counts) */
#define LSAE__SORT_PARTS 4

/* How a type's step is organised (docs/math.md, section 3): TopK (section
   2: classes top k, 4k tail, AuxK); nested (one selection, TopK or
   batch-wide, decoded band by band: classes = the m bands + AuxK;
   BatchTopK is this with one band); per-level (a selection per level:
   classes = the m levels, no AuxK). */
enum { LSAE__KIND_TOPK = 0, LSAE__KIND_NESTED = 1, LSAE__KIND_PERLEVEL = 2 };
/* A run of one row's selected entries that feed one gradient class: n
   entries from p (zero activations included: B2 leaves them out, B6 counts
   them as fired). */
typedef struct lsae__run {
    const lsae__kv *p;
    size_t n, cls;
} lsae__run;
/* runs per row at most: m bands + AuxK */
#define LSAE__RUNS (LSAE_MAX_LEVELS + 1)
/* enlargement rounds of a batch-wide pick at most (each doubles a row's
   candidates, so 2^40 latents) */
#define LSAE__EXT_BLOCKS 64

struct lsae_trainer {
    lsae_model *m;
    lsae_config cfg;            /* training fields from the caller, shape from the model */
    const lsae_allocator *alloc;
    int nthreads;
    double lr_base;
    size_t K;                   /* the row stride of top (the most a row's fused-pass selection holds): TopK k0, or min(4 k0, L) with
                                   multi_topk; nested: k0, batch-wide min(4 k0, L); per-level: the band selections' largest */
    size_t KA;                  /* AuxK capacity: min(d/2, L) (0 for per-level Matryoshka) */
    /* the SAE type */
    int kind;                   /* LSAE__KIND_* */
    int batchwide;              /* the selection(s) are batch-wide (BatchTopK, 3.1) */
    int row_cap;                /* nested batch-wide: cap a row at k_s after the pick */
    size_t C;                   /* gradient classes: G is [B, C, d] */
    size_t nlev;                /* levels m (BatchTopK: 1 band; TopK: 0) */
    size_t lev_n[LSAE_MAX_LEVELS];  /* n_j, the last = L */
    size_t lev_k[LSAE_MAX_LEVELS];  /* per-level: k_j (the last is replaced by k_s) */
    double lev_w[LSAE_MAX_LEVELS];  /* w_j (all 1 when all were 0) */
    size_t k0;                  /* the largest k_s of the run: k_anneal's start, else k (per-level: of the last level) */
    size_t E;                   /* entries a row holds on average at most (the entry arrays' row size) */
    size_t band_K;              /* per-level: the candidates a band's selection keeps per row */
    size_t lev_M[LSAE_MAX_LEVELS], lev_off[LSAE_MAX_LEVELS], sumM; /* per-level: candidates of level j per row, their offset in lcand's row */
    lsae__run *runs;            /* [cap, LSAE__RUNS] the batch's entries as runs per row */
    size_t *nruns;              /* [cap] */
    const lsae__kv **cand;      /* [cap] batch-wide pick: a row's candidates, best first */
    size_t *ncand, *keep;       /* [cap] how many, how many kept */
    lsae__kv *kept;             /* nested: [cap, k0] the kept entries in band order, rows packed */
    lsae__kv *bandtop;          /* per-level: [m, cap, band_K] each band's candidates */
    lsae__kv *lcand;            /* per-level: [cap, sumM] each level's candidates */
    lsae__kv *ext[LSAE__EXT_BLOCKS]; /* this batch's enlarged candidate lists */
    size_t next;
    /* state */
    float *grads, *adam_m, *adam_v;  /* slabs laid out as the model's */
    float *zero_row;            /* [d] zeros: an untouched row's gradient in Adam */
    unsigned char *gtouch;      /* [L] bit LSAE__GT_DEC: latent l's row of dW_dec holds this window's sum; LSAE__GT_ENC: its row of dW_enc (lsae__grad_row) */
    uint64_t *since_fired;      /* [L] rows since the latent was last in a top-k */
    unsigned char *did_fire;    /* [L] in a top-k during this window */
    uint64_t *dead_bits;        /* [ceil(L / 64)] bit l % 64 of word l / 64: since_fired[l] > threshold, for this batch */
    uint64_t step;              /* optimizer steps done */
    uint64_t micro;             /* batches accumulated in this window */
    uint64_t rows_in_window;
    int b_dec_initialized;
    int poisoned;               /* a non-finite value was seen: refuse to go on */
    /* the Adam moments and dead-latent counters are all zero, as created
       (no optimizer step, set_state or checkpoint since): a checkpoint
       load reads straight into them, and zeroes them again if it fails */
    int state_zero;
    /* per-batch workspace, grown to the largest batch seen */
    size_t cap;
    float *x_used;              /* [cap, d] the finite rows, when some row was not */
    const float *x_rows;        /* [B, d] this step's rows: the caller's x when every row is finite, else x_used */
    float *xc;                  /* [cap, d] x - b_dec */
    lsae__kv *top;              /* [cap, K] */
    lsae__kv *aux;              /* [cap, KA] */
    float *G;                   /* [cap, C, d] dLoss/d(decoder output) per row and class (TopK: main, 4k part, AuxK) */
    lsae__kv *ent;              /* [cap, E] the entries sorted by class, latent: .i the row, .v the activation
                                   (B3 replaces it by its dpre); one array, so B2's scatter writes one line an entry */
    size_t *cursor;             /* [cap] per-row position in the AuxK decode */
    size_t *lat_start;          /* [C L + 1] the current batch's CSR offsets into ent, by class then latent */
    int sort_parts;             /* row ranges the entry sort counts in parallel: min(threads, LSAE__SORT_PARTS) */
    size_t decode_cols;         /* F5's column blocks (lsae__decode_block_cols); 0: chosen per batch (tests set it) */
    size_t bgrad_rows;          /* B3's row blocks (lsae__bgrad_rows_for); 0: chosen per class (tests set it) */
    /* Batches held for the window's end (lsae__window_grads): B3-B4 of the
       live latents wait there, so that each one's rows of W_dec and of the
       gradients move once a window instead of once a batch. t->G, t->xc,
       t->ent and t->lat_start point at the current batch's slot. */
    int defer;                  /* 0: chosen by lsae__window_slots; 1: on; -1: off (tests set it) */
    size_t select_rows;         /* the selections' lsae__select_ws.rows_per_thread (0: the default; tests set it) */
    size_t nslots;              /* batches a window can hold (1: nothing deferred) */
    size_t ndef;                /* batches held now */
    float *G_all, *xc_all;      /* [nslots, cap, C d], [nslots, cap, d] */
    lsae__kv *ent_all;          /* [nslots, cap, E] */
    size_t *lat_all;            /* [nslots, C L + 1] where nslots > 1 */
    size_t *lat_own;            /* [C L + 1] lat_start's own storage (nslots 1) */
    size_t *part_cnt;           /* [sort_parts, C L] their counts, then offsets, then positions in ent */
    double *row_sse;            /* [cap, C] per-row sums of squared errors per class's output (TopK: e, e4, e_hat - e) (F5-F6) */
    double *tv_dim;             /* [d] */
    float *bdec_part;           /* [ceil(L / BDEC_CHUNK), d] per-chunk sums of db_enc[l] W_enc[l] */
    float *grad_row_norm2;      /* [L, 2] squared norms of the gradient rows of W_enc and W_dec, this window (B3-B4, for U2) */
    lsae__select_ws sws;
    lsae__lp lpq;               /* the int8 copy of W_enc the step's pre-pass selection uses, rebuilt each optimizer step (by lsae__adam once it is in use) */
    unsigned long lpq_gen;      /* the model's wgen when lpq was filled */
    /* lsae__aux_from_dead's dead latents' rows of W_enc and b_enc, kept for
       the next batch of the window (W_enc and the dead set change at the
       optimizer step), with its selection scratch */
    float *ad_W, *ad_b;         /* [ad_cap, d], [ad_cap] */
    int32_t *ad_map;            /* [ad_cap] the latent of each gathered row */
    uint64_t *ad_bits;          /* [ceil(L / 64)] the dead set they were gathered for */
    size_t ad_nd, ad_cap;       /* latents gathered, room */
    unsigned long ad_gen;       /* the model's wgen then */
    int ad_valid;
    lsae__select_ws ad_ws;      /* [rows, KA] */
    lsae__kv *ad_top;           /* [ad_ws.rows_cap, KA] */
    size_t prepass_batches;     /* batches selected through the pre-pass (tests and bench read it) */
    size_t prepass_rows, prepass_cand_sum, prepass_cand_max; /* its rows, latents recomputed in float32 (sum, most in a row) */
    /* data-parallel training (lsae_trainer_set_comm): the sums across ranks */
    int has_comm;               /* comm is set (even with size 1: the same path, the same bits as without) */
    int comm_failed;            /* a callback failed: the ranks may disagree now, refuse to go on */
    lsae_comm comm;
    double *comm_buf;           /* [d + LSAE_MAX_LEVELS + 4] what one sum sends */
    float *fire_buf;            /* [L] the fired flags as 0/1, summed across ranks */
    /* latent-sharded training (lsae_trainer_set_shard_comm, docs/math.md
       2.14): this rank holds the latents [l0, l0 + m->L) of Lg; comm is then
       the shard group's */
    size_t Lg, l0;              /* the whole model's L (= m->L unsharded), the first latent held here */
    int shard;                  /* the sharded step runs (scomm set, size > 1) */
    lsae_comm scomm;            /* the shard group (comm, when set, is the data-parallel group: a D x S grid) */
    size_t shard_cap;           /* the rows x slots the exchange buffers hold */
    lsae__kv *sh_send;          /* [rows, W] this rank's candidates per row (W = Ksel + ka slots) */
    lsae__kv *sh_recv;          /* [S, rows, W] every rank's */
    lsae__kv *sh_own;           /* [cap, K + KA] the global picks held here, local indices, by class */
    lsae__kv *sh_scr;           /* [threads, 2 S max(K, KA)] the merge's scratch */
    double *sh_hdr;             /* [2 S] what each rank sends before the candidates: TV and its dead count */
    float *sh_vec;              /* [d] a sum over the shards of one d-vector (U1) */
#ifdef LATENTSAE_CUDA
    void *cuda;                 /* the trainer on the GPU (latentsae_cuda.cu) when the model is there; then nothing above but m is used */
#endif
};

/* This batch's enlarged candidate lists (lsae__reselect) are freed when the
   next batch starts and with the trainer. */
static void lsae__trainer_free_ext(lsae_trainer *t)
{
    size_t i;
    for (i = 0; i < t->next; ++i) lsae__free(t->alloc, t->ext[i]);
    t->next = 0;
}

static void lsae__trainer_free_ws(lsae_trainer *t)
{
    lsae__free(t->alloc, t->x_used);
    lsae__free(t->alloc, t->top); lsae__free(t->alloc, t->aux);
    lsae__free(t->alloc, t->G_all); lsae__free(t->alloc, t->ent_all);
    lsae__free(t->alloc, t->xc_all); lsae__free(t->alloc, t->lat_all);
    lsae__free(t->alloc, t->cursor);
    lsae__free(t->alloc, t->row_sse);
    lsae__free(t->alloc, (void *)t->runs); lsae__free(t->alloc, t->nruns);
    lsae__free(t->alloc, (void *)t->cand); lsae__free(t->alloc, t->ncand); lsae__free(t->alloc, t->keep);
    lsae__free(t->alloc, t->kept); lsae__free(t->alloc, t->bandtop); lsae__free(t->alloc, t->lcand);
    lsae__select_ws_free(t->alloc, &t->sws);
    lsae__lp_free(t->alloc, &t->lpq);
    lsae__free(t->alloc, t->ad_W); lsae__free(t->alloc, t->ad_b); lsae__free(t->alloc, t->ad_map);
    lsae__free(t->alloc, t->ad_bits); lsae__free(t->alloc, t->ad_top);
    lsae__select_ws_free(t->alloc, &t->ad_ws);
    t->ad_W = t->ad_b = NULL; t->ad_map = NULL; t->ad_bits = NULL; t->ad_top = NULL;
    t->ad_nd = t->ad_cap = 0; t->ad_valid = 0;
    lsae__free(t->alloc, t->sh_own);   /* [cap, K + KA]: regrown with the rows */
    t->sh_own = NULL;
    t->runs = NULL; t->nruns = t->ncand = t->keep = NULL; t->cand = NULL;
    t->kept = t->bandtop = t->lcand = NULL;
    t->x_used = t->xc = t->G = t->G_all = t->xc_all = NULL;
    t->top = t->aux = NULL;
    t->ent = t->ent_all = NULL;
    t->lat_all = NULL;
    t->lat_start = t->lat_own;
    t->nslots = 1;
    t->ndef = 0;
    t->cursor = NULL;
    t->row_sse = NULL;
    t->cap = 0;
}

/* A latent is dead while it has not fired for more than
   dead_feature_threshold rows: only dead latents get AuxK entries, and the
   counters change only between windows (lsae__dead_counters, set_state), so
   within a window every latent is either dead or live throughout. */
static int lsae__latent_dead(const lsae_trainer *t, size_t l)
{
    return t->since_fired[l] > t->cfg.dead_feature_threshold;
}

/* Batches a window holds for lsae__window_grads. B3-B4 read, for every
   latent with entries, its rows of W_dec, dW_dec and dW_enc (and write the
   two gradients back): where a latent has an entry or two a batch (nomic
   x32 at B 512: B k / L = 1.3) that traffic is most of their time, paid
   again every batch of the window. Holding the batches' G, xc and entries
   and taking each live latent once over all of them at the window's end
   moves its rows once a window. Measured on a 2-core Xeon, 768 x 24,576,
   k 64, 4 batches a window: 9.5% faster a step with no dead latents, 2.4%
   with a quarter dead (those are taken batch by batch: their AuxK entries
   are many); B 256 with 8 batches 15%; B k / L of 2.7 and 5.3 within the
   noise, so only below 4. Up to grad_acc_steps batches (at most 64), while
   they take no more than a quarter of the trainer's four model-sized
   arrays (parameters, gradients, Adam's two moments); never for a latent
   shard. Returns 1 for none held. */
static size_t lsae__window_slots(const lsae_trainer *t, size_t rows)
{
    const uint64_t acc = t->cfg.grad_acc_steps;
    const size_t d = t->m->d, L = t->m->L;
    double per, n;
    if (t->defer < 0 || acc < 2 || t->m->shard_L) return 1;
    if (t->defer > 0) return acc > 64 ? 64 : (size_t)acc;
    if ((double)rows * (double)t->K >= 4.0 * (double)L) return 1;
    per = (double)rows * (double)(t->C * d + d + 2 * t->E) * sizeof(float) + (double)(t->C * L + 1) * sizeof(size_t);
    n = 1.0 + floor((double)t->m->lay.total * (double)sizeof(float) / per);
    if (n > (double)acc) n = (double)acc;
    if (n > 64.0) n = 64.0;
    return n < 2.0 ? 1 : (size_t)n;
}

/* t->G, t->xc, t->ent and t->lat_start at slot w's storage */
static void lsae__use_slot(lsae_trainer *t, size_t w)
{
    const size_t d = t->m->d;
    t->G = t->G_all + w * t->cap * t->C * d;
    t->xc = t->xc_all + w * t->cap * d;
    t->ent = t->ent_all + w * t->cap * t->E;
    t->lat_start = t->nslots > 1 ? t->lat_all + w * (t->C * t->m->L + 1) : t->lat_own;
}

static void lsae__window_grads(lsae_trainer *t);

static lsae_result lsae__trainer_reserve(lsae_trainer *t, size_t rows)
{
    const size_t d = t->m->d, E = t->E, C = t->C, nb = t->nlev ? t->nlev : 1;
    size_t chunk, nslots;
    lsae_result r;
    if (rows <= t->cap) return LSAE_OK;
    if (t->ndef) lsae__window_grads(t); /* the held batches' work, before their storage goes */
    lsae__trainer_free_ws(t);
    nslots = lsae__window_slots(t, rows);
    if (rows > SIZE_MAX / 64) nslots = 1; /* nslots * rows must not wrap (nslots <= 64) */
    chunk = lsae__select_rows(rows, t->K, t->KA, t->nthreads);
    if ((r = lsae__select_ws_init(t->alloc, &t->sws, chunk, t->K, t->KA, d, t->nthreads)) != LSAE_OK) return r;
    t->sws.rows_per_thread = t->select_rows;
    if (!(t->x_used = (float *)lsae__alloc_array(t->alloc, rows, d * sizeof(float), "batch rows")) ||
        !(t->xc_all = (float *)lsae__alloc_array(t->alloc, nslots * rows, d * sizeof(float), "centred batch")) ||
        !(t->top = (lsae__kv *)lsae__alloc_array(t->alloc, rows, t->K * sizeof(lsae__kv), "top-k of the batch")) ||
        !(t->aux = (lsae__kv *)lsae__alloc_array(t->alloc, rows, (t->KA ? t->KA : 1) * sizeof(lsae__kv), "AuxK top-k of the batch")) ||
        !(t->G_all = (float *)lsae__alloc_array(t->alloc, nslots * rows, C * d * sizeof(float), "output gradients")) ||
        !(t->ent_all = (lsae__kv *)lsae__alloc_array(t->alloc, nslots * rows, E * sizeof(lsae__kv), "entries by latent")) ||
        (nslots > 1 && !(t->lat_all = (size_t *)lsae__alloc_array(t->alloc, nslots, (C * t->m->L + 1) * sizeof(size_t), "held batches' latent offsets"))) ||
        !(t->cursor = (size_t *)lsae__alloc_array(t->alloc, rows, sizeof(size_t), "decode cursors")) ||
        !(t->row_sse = (double *)lsae__alloc_array(t->alloc, rows, C * sizeof(double), "row sums of squared errors")) ||
        !(t->runs = (lsae__run *)lsae__alloc_array(t->alloc, rows, LSAE__RUNS * sizeof(lsae__run), "entry runs")) ||
        !(t->nruns = (size_t *)lsae__alloc_array(t->alloc, rows, sizeof(size_t), "entry run counts")) ||
        !(t->cand = (const lsae__kv **)lsae__alloc_array(t->alloc, rows, sizeof(lsae__kv *), "batch-wide candidates")) ||
        !(t->ncand = (size_t *)lsae__alloc_array(t->alloc, rows, sizeof(size_t), "batch-wide candidate counts")) ||
        !(t->keep = (size_t *)lsae__alloc_array(t->alloc, rows, sizeof(size_t), "batch-wide kept counts")) ||
        (t->kind == LSAE__KIND_NESTED && !(t->kept = (lsae__kv *)lsae__alloc_array(t->alloc, rows, t->k0 * sizeof(lsae__kv), "kept entries by band"))) ||
        (t->kind == LSAE__KIND_PERLEVEL && !(t->bandtop = (lsae__kv *)lsae__alloc_array(t->alloc, rows * nb, t->band_K * sizeof(lsae__kv), "band candidates"))) ||
        (t->kind == LSAE__KIND_PERLEVEL && !(t->lcand = (lsae__kv *)lsae__alloc_array(t->alloc, rows, t->sumM * sizeof(lsae__kv), "level candidates")))) {
        lsae__trainer_free_ws(t);
        return LSAE_OUT_OF_MEMORY;
    }
    if ((uint64_t)rows > (uint64_t)INT32_MAX) {
        lsae__trainer_free_ws(t);
        return lsae__err(LSAE_INVALID_ARGS, "batch of %zu rows is too large for one step; use fewer rows", rows);
    }
    t->cap = rows;
    t->nslots = nslots;
    lsae__use_slot(t, 0);
    return LSAE_OK;
}

/* k_s, the k of optimizer step s (docs/math.md, 3.4):
      k_f = k (per-level Matryoshka: its last level's k), k0 = k_anneal_start
      or min(4 k_f, L), A = floor(k_anneal_pct S), S = total_steps,
      k_s = floor(k0 + (k_f - k0) s / max(A, 1)) for s < A, else k_f.
   The floor is taken in integers: k0 - ceil((k0 - k_f) s / max(A, 1)). */
static size_t lsae__k_at_step(const lsae_config *c, size_t L, uint64_t s)
{
    size_t kf = c->k, k0;
    uint64_t A, num;
    if (c->sae_type == LSAE_SAE_MATRYOSHKA && c->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL && c->matryoshka_levels)
        kf = c->matryoshka_ks[c->matryoshka_levels - 1];
    if (!c->k_anneal) return kf;
    k0 = c->k_anneal_start ? c->k_anneal_start : (4 * kf < L ? 4 * kf : L);
    if (k0 < kf) k0 = kf;
    A = (uint64_t)floor(c->k_anneal_pct * (double)c->total_steps);
    if (s >= A) return kf;
    if (A < 1) A = 1;
    if (s != 0 && (uint64_t)(k0 - kf) > UINT64_MAX / s) /* never at real sizes; the double form then */
        return (size_t)floor((double)k0 + ((double)kf - (double)k0) * (double)s / (double)A);
    num = (uint64_t)(k0 - kf) * s;
    return k0 - (size_t)((num + A - 1) / A);
}

/* The type's layout of a step: kind, classes, levels and the sizes of the
   selection buffers (k0 is the largest k_s the run uses). */
static void lsae__trainer_type(lsae_trainer *t, const lsae_config *c)
{
    const size_t L = t->Lg;
    size_t j, k0 = lsae__k_at_step(c, L, 0);
    double wsum = 0.0;
    t->k0 = k0;
    t->nlev = 0;
    if (c->sae_type == LSAE_SAE_TOPK) {
        t->kind = LSAE__KIND_TOPK;
        t->C = 3;
        t->K = c->multi_topk ? (4 * k0 < L ? 4 * k0 : L) : k0;
        t->E = t->K + t->KA;
        return;
    }
    if (c->sae_type == LSAE_SAE_BATCHTOPK) {
        t->kind = LSAE__KIND_NESTED;
        t->batchwide = 1;
        t->row_cap = c->batchtopk_row_cap;
        t->nlev = 1;
        t->lev_n[0] = L;
        t->lev_w[0] = 1.0;
    } else {
        t->nlev = c->matryoshka_levels;
        for (j = 0; j < t->nlev; ++j) {
            t->lev_n[j] = c->matryoshka_sizes[j];
            t->lev_k[j] = c->matryoshka_ks[j];
            t->lev_w[j] = c->matryoshka_loss_weights[j];
            wsum += t->lev_w[j];
        }
        if (wsum == 0.0)
            for (j = 0; j < t->nlev; ++j) t->lev_w[j] = 1.0;
        t->batchwide = c->matryoshka_use_batchtopk;
        t->kind = c->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL ? LSAE__KIND_PERLEVEL : LSAE__KIND_NESTED;
        t->row_cap = t->kind == LSAE__KIND_PERLEVEL ? 1 : c->batchtopk_row_cap;
    }
    if (t->kind == LSAE__KIND_NESTED) {
        t->C = t->nlev + 1;
        t->K = t->batchwide ? (4 * k0 < L ? 4 * k0 : L) : k0;
        t->E = k0 + t->KA;
        return;
    }
    /* per-level: no AuxK; level j offers M_j candidates per row (its k_j, or
       min(4 k_j, n_j) for a batch-wide pick), made from the bands' own
       selections: band i keeps the best max_{j >= i} M_j of its latents
       (at most its size), which holds every level's share of the band */
    t->KA = 0;
    t->C = t->nlev;
    t->lev_k[t->nlev - 1] = k0;
    t->E = 0;
    t->sumM = 0;
    t->band_K = 0;
    for (j = 0; j < t->nlev; ++j) {
        const size_t kj = t->lev_k[j], n = t->lev_n[j];
        t->lev_M[j] = t->batchwide ? (4 * kj < n ? 4 * kj : n) : kj;
        t->lev_off[j] = t->sumM;
        t->sumM += t->lev_M[j];
        t->E += kj;
    }
    for (j = 0; j < t->nlev; ++j) {
        const size_t size = t->lev_n[j] - (j ? t->lev_n[j - 1] : 0);
        size_t i, most = 0;
        for (i = j; i < t->nlev; ++i) most = t->lev_M[i] > most ? t->lev_M[i] : most;
        most = most < size ? most : size;
        t->band_K = most > t->band_K ? most : t->band_K;
    }
    t->K = t->band_K;
}

LSAE_DEF lsae_result lsae_trainer_create(lsae_model *m, const lsae_config *cfg, lsae_trainer **out)
{
    lsae_trainer *t;
    lsae_config c;
    lsae_result r;
    size_t L;
    if (!out) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_create: out is NULL");
    *out = NULL;
    if (!m || !cfg) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_create: model and config must not be NULL");
    /* the model's shape, the caller's training settings */
    c = *cfg;
    c.d_in = m->d;
    c.num_latents = m->shard_L ? m->shard_L : m->L;   /* a shard trains its rows of the whole model */
    c.expansion_factor = m->cfg.expansion_factor;
    c.k = m->k;
    c.normalize_decoder = m->cfg.normalize_decoder;
    c.multi_topk = m->cfg.multi_topk;
#ifdef LATENTSAE_CUDA
    c.device = m->cfg.device;   /* a trainer runs where its model is */
#endif
    if ((r = lsae_config_validate(&c)) != LSAE_OK) return r;
    if (c.k_anneal && c.total_steps == 0)
        return lsae__err(LSAE_INVALID_ARGS, "k_anneal lowers k over a fraction of the run, and the run's length is unknown: set total_steps (the number of optimizer steps)");
    if (m->shard_L && c.sae_type != LSAE_SAE_TOPK)
        return lsae__err(LSAE_UNSUPPORTED, "latent-sharded training takes topk (with multi_topk, AuxK, k_anneal) only in this version, not %s: train it in one process",
                         c.sae_type == LSAE_SAE_BATCHTOPK ? "batchtopk" : "matryoshka");
    L = m->L;
#ifdef LATENTSAE_CUDA
    if (m->cuda && (c.sae_type != LSAE_SAE_TOPK || c.k_anneal)) {
        const char *ty = c.sae_type == LSAE_SAE_BATCHTOPK ? "batchtopk" : c.sae_type == LSAE_SAE_MATRYOSHKA ? "matryoshka" : "k_anneal";
        return lsae__err(LSAE_UNSUPPORTED, "%s training runs on the CPU only in this version: use device cpu", ty);
    }
#endif
    t = (lsae_trainer *)lsae__malloc(m->alloc, sizeof *t);
    if (!t) return lsae__err(LSAE_OUT_OF_MEMORY, "out of memory allocating a trainer");
    memset(t, 0, sizeof *t);
    t->m = m;
#ifdef LATENTSAE_CUDA
    if (m->cuda) {
        t->alloc = m->alloc;
        t->cfg = c;   /* the counters (step, micro, ...) stay in this struct; the .cu keeps them current */
        if ((r = lsae__cuda_trainer_new(&t->cuda, m->cuda, &c, &t->step, &t->micro, &t->rows_in_window,
                                        &t->b_dec_initialized, &t->poisoned)) != LSAE_OK) { lsae__free(m->alloc, t); return r; }
        *out = t;
        return LSAE_OK;
    }
#endif
    t->cfg = c;
    t->alloc = m->alloc;
    t->nthreads = lsae__num_threads(c.num_threads);
    t->lr_base = lsae_config_lr(&c);
    t->Lg = c.num_latents;
    t->l0 = m->shard_l0;
    t->KA = m->d / 2 < t->Lg ? m->d / 2 : t->Lg;
    lsae__trainer_type(t, &c);
    t->sort_parts = t->nthreads < LSAE__SORT_PARTS ? t->nthreads : LSAE__SORT_PARTS;
    t->b_dec_initialized = !c.init_b_dec;
    if (!(t->grads = (float *)lsae__alloc_array(t->alloc, m->lay.total, sizeof(float), "gradients")) ||
        !(t->adam_m = (float *)lsae__alloc_array(t->alloc, m->lay.total, sizeof(float), "Adam first moments")) ||
        !(t->adam_v = (float *)lsae__alloc_array(t->alloc, m->lay.total, sizeof(float), "Adam second moments")) ||
        !(t->since_fired = (uint64_t *)lsae__alloc_array(t->alloc, L, sizeof(uint64_t), "dead-latent counters")) ||
        !(t->did_fire = (unsigned char *)lsae__alloc_array(t->alloc, L, 1, "fired flags")) ||
        !(t->gtouch = (unsigned char *)lsae__alloc_array(t->alloc, L, 1, "gradient row flags")) ||
        !(t->zero_row = (float *)lsae__alloc_array(t->alloc, m->d, sizeof(float), "a row of zeros")) ||
        !(t->dead_bits = (uint64_t *)lsae__alloc_array(t->alloc, (L + 63) / 64, sizeof(uint64_t), "dead flags")) ||
        !(t->lat_own = t->lat_start = (size_t *)lsae__alloc_array(t->alloc, t->C * L + 1, sizeof(size_t), "latent offsets")) ||
        !(t->part_cnt = (size_t *)lsae__alloc_array(t->alloc, (size_t)t->sort_parts * t->C, L * sizeof(size_t), "entry sort counts")) ||
        !(t->tv_dim = (double *)lsae__alloc_array(t->alloc, m->d, sizeof(double), "variance scratch")) ||
        !(t->bdec_part = (float *)lsae__alloc_array(t->alloc, (L + LSAE__BDEC_CHUNK - 1) / LSAE__BDEC_CHUNK, m->d * sizeof(float), "b_dec partial sums")) ||
        !(t->grad_row_norm2 = (float *)lsae__alloc_array(t->alloc, L, 2 * sizeof(float), "gradient row norms"))) {
        lsae_trainer_free(t);
        return LSAE_OUT_OF_MEMORY;
    }
    memset(t->grads, 0, m->lay.total * sizeof(float));
    memset(t->adam_m, 0, m->lay.total * sizeof(float));
    memset(t->adam_v, 0, m->lay.total * sizeof(float));
    memset(t->since_fired, 0, L * sizeof(uint64_t));
    memset(t->grad_row_norm2, 0, 2 * L * sizeof(float));
    memset(t->did_fire, 0, L);
    memset(t->gtouch, 0, L);
    memset(t->zero_row, 0, m->d * sizeof(float));
    memset(t->dead_bits, 0, (L + 63) / 64 * sizeof(uint64_t));
    t->state_zero = 1;
    *out = t;
    return LSAE_OK;
}

LSAE_DEF void lsae_trainer_free(lsae_trainer *t)
{
    if (!t) return;
#ifdef LATENTSAE_CUDA
    if (t->cuda) lsae__cuda_trainer_free(t->cuda);
#endif
    lsae__trainer_free_ws(t);
    lsae__trainer_free_ext(t);
    lsae__free(t->alloc, t->grads); lsae__free(t->alloc, t->adam_m); lsae__free(t->alloc, t->adam_v);
    lsae__free(t->alloc, t->since_fired); lsae__free(t->alloc, t->did_fire); lsae__free(t->alloc, t->gtouch); lsae__free(t->alloc, t->zero_row); lsae__free(t->alloc, t->dead_bits);
    lsae__free(t->alloc, t->lat_own); lsae__free(t->alloc, t->part_cnt); lsae__free(t->alloc, t->tv_dim); lsae__free(t->alloc, t->bdec_part); lsae__free(t->alloc, t->grad_row_norm2);
    lsae__free(t->alloc, t->comm_buf); lsae__free(t->alloc, t->fire_buf);
    lsae__free(t->alloc, t->sh_send); lsae__free(t->alloc, t->sh_recv); lsae__free(t->alloc, t->sh_own);
    lsae__free(t->alloc, t->sh_scr); lsae__free(t->alloc, t->sh_hdr); lsae__free(t->alloc, t->sh_vec);
    lsae__free(t->alloc, t);
}

LSAE_DEF uint64_t lsae_trainer_steps_done(const lsae_trainer *t) { return t ? t->step : 0; }

/* ------------------------------------------------------------------------
   One training step, as a list of stages.

   lsae_trainer_accumulate (one batch) runs F1-F7 (forward and loss) and
   B1-B6 (backward, adding into the gradients); lsae_trainer_apply (once per
   grad_acc_steps batches) runs U1-U4 (the optimizer step). The labels are
   the ones docs/math.md derives and latentsae_cuda.cu uses for its kernels,
   so the CPU and GPU steps can be read side by side. Shapes: B rows used,
   d inputs, L latents, k per row, K = k (or min(4k, L) with multi_topk),
   KA = min(d/2, L) AuxK slots, ka <= KA of them used this batch,
   w = 1 / grad_acc_steps.
   The other SAE types (docs/math.md, section 3) run the same stages. F4
   turns each row's selection into runs of entries, each run feeding one
   gradient class c < C with output gradient G_c[b] (G is [B, C, d]):
   TopK's three (top k, the 4k tail, AuxK), the nested Matryoshka form's m
   bands and AuxK (BatchTopK: one band and AuxK), the per-level form's m
   levels. A row's runs may have any length (BatchTopK keeps 0 .. L
   entries in a row); B2-B4 see only (class, latent, row, activation), so
   they are the same code for every type. k is k_s (3.4) throughout.
   ------------------------------------------------------------------------ */

/* What one batch's stages hand on to each other. */
typedef struct lsae__batch {
    size_t B, dropped;          /* F1: rows used, rows dropped for NaN/Inf (this rank's) */
    size_t Bg, dropped_g;       /* F2: the same over all ranks (= B, dropped in one process) */
    double TV;                  /* F2: total variance */
    size_t n_dead, ka;          /* F4: dead latents, AuxK picks per row */
    double auxk_scale;          /* F4: min(n_dead / (d/2), 1) */
    size_t k, Ksel;             /* F4: k_s, and what TopK selects per row (k_s, or min(4 k_s, L) with multi_topk) */
    float tau;                  /* F4: the batch-wide pick's smallest value (3.1), of the last level for per-level */
    int has_tau;
    size_t enlarged;            /* F4: rows re-selected with more candidates */
    int prepassed;              /* F4: the selection went through the int8 pre-pass */
    double fvu, fvu4, auxk, loss; /* F7 */
    double lev_fvu[LSAE_MAX_LEVELS]; /* F7: each level's fvu */
} lsae__batch;

/* Sums across the ranks of a data-parallel run (lsae_trainer_set_comm).
   The callback adds the ranks' buffers in rank order and hands every rank
   the same bits, so each rank goes on with the same numbers. A failed sum
   leaves the ranks in unknown states: the trainer refuses to go on. */
static lsae_result lsae__comm_fail(lsae_trainer *t, lsae_result r, const char *what)
{
    t->comm_failed = 1;
    return lsae__err(r == LSAE_OK ? LSAE_ERROR : r, "summing %s across %d ranks failed (%s); the ranks may disagree now: restart from the last checkpoint",
                     what, t->comm.size, lsae_result_string(r));
}
static lsae_result lsae__comm_sum64(lsae_trainer *t, double *buf, size_t n, const char *what)
{
    lsae_result r = t->comm.sum_f64(t->comm.ctx, buf, n);
    return r == LSAE_OK ? LSAE_OK : lsae__comm_fail(t, r, what);
}
static lsae_result lsae__comm_sum32(lsae_trainer *t, float *buf, size_t n, const char *what)
{
    lsae_result r = t->comm.sum_f32(t->comm.ctx, buf, n);
    return r == LSAE_OK ? LSAE_OK : lsae__comm_fail(t, r, what);
}

/* F1. The batch is the rows of x [rows, d] with no NaN or Inf, in order.
   The usual batch has none, and then the step reads x itself (x_rows = x):
   the rows are checked in parallel, and nothing is copied. Otherwise the
   finite rows are copied, in order, to x_used. fvu needs a variance, hence
   at least 2 rows. */
static lsae_result lsae__keep_finite_rows(lsae_trainer *t, const float *x, size_t rows, lsae__batch *b)
{
    const size_t d = t->m->d;
    size_t r, B = 0, nonfinite = 0;
    ptrdiff_t pr;
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads) reduction(+:nonfinite))
    for (pr = 0; pr < (ptrdiff_t)rows; ++pr) nonfinite += (size_t)!lsae__row_finite(x + (size_t)pr * d, d);
    if (!nonfinite) {
        B = rows;
        t->x_rows = x;
    } else {
        for (r = 0; r < rows; ++r)
            if (lsae__row_finite(x + r * d, d)) memcpy(t->x_used + B++ * d, x + r * d, d * sizeof(float));
        t->x_rows = t->x_used;
    }
    b->B = B;
    b->dropped = rows - B;
    b->Bg = B;
    b->dropped_g = b->dropped;
    /* data-parallel: a rank may hold fewer than 2 rows (or none); the global
       count decides, in F2 */
    if (B < 2 && !t->has_comm)
        return lsae__err(LSAE_BAD_BATCH, "batch has %zu finite rows (%zu dropped for NaN/Inf): fvu needs at least 2 rows to have a variance", B, b->dropped);
    return LSAE_OK;
}

/* F2. TV = sum_j sum_b (x[b, j] - mean_b x[b, j])^2, in double: each
   dimension's sum over the rows in row order (tv_dim [d]), then the
   dimensions summed in order. TV = 0 (all rows equal) leaves fvu undefined:
   the batch is refused.
   The rows are read across, LSAE__TV_COLS dimensions at a time: one row's
   slice of the block feeds that many independent sums, where going down one
   column at a time leaves a single chain of dependent double additions
   (about 4 cycles each) and strides through x. Each dimension still adds
   its rows in row order, so the sums are the same bits either way. */
#define LSAE__TV_COLS 32

/* out[c] = sum over rows q in order of X[q, j0 + c], or of
   (X[q, j0 + c] - center[c])^2 when center is given, for c < n (n <=
   LSAE__TV_COLS) */
static void lsae__column_sums(const float *X, size_t B, size_t d, size_t j0, size_t n, const double *center, double *out)
{
    double acc[LSAE__TV_COLS];
    size_t q, c;
    for (c = 0; c < n; ++c) acc[c] = 0.0;
#if defined(LSAE__AVX2)
    if (n == LSAE__TV_COLS) {
        /* the same operations, four dimensions a register: widen, subtract,
           multiply, add, the product rounded as the C below rounds it in
           ISO C mode (-std=c99: GCC does not fuse it there) */
        __m256d a[LSAE__TV_COLS / 4], ctr[LSAE__TV_COLS / 4];
        for (c = 0; c < LSAE__TV_COLS / 4; ++c) {
            a[c] = _mm256_setzero_pd();
            ctr[c] = center ? _mm256_loadu_pd(center + 4 * c) : _mm256_setzero_pd();
        }
        for (q = 0; q < B; ++q) {
            const float *row = X + q * d + j0;
            if (center)
                for (c = 0; c < LSAE__TV_COLS / 4; ++c) {
                    const __m256d diff = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(row + 4 * c)), ctr[c]);
                    a[c] = _mm256_add_pd(a[c], _mm256_mul_pd(diff, diff));
                }
            else
                for (c = 0; c < LSAE__TV_COLS / 4; ++c) a[c] = _mm256_add_pd(a[c], _mm256_cvtps_pd(_mm_loadu_ps(row + 4 * c)));
        }
        for (c = 0; c < LSAE__TV_COLS / 4; ++c) _mm256_storeu_pd(out + 4 * c, a[c]);
        return;
    }
#endif
    for (q = 0; q < B; ++q) {
        const float *row = X + q * d + j0;
        if (center)
            for (c = 0; c < n; ++c) {
                const double diff = row[c] - center[c];
                acc[c] += diff * diff;
            }
        else
            for (c = 0; c < n; ++c) acc[c] += row[c];
    }
    memcpy(out, acc, n * sizeof(double));
}

/* F2 over the ranks of a data-parallel run: the same two passes, each a
   sum over the global batch.
      pass 1: s_j = sum over every rank's rows of x[b, j] (and the row
              counts): one sum across ranks, mean_j = s_j / B_global
      pass 2: tv_j = sum_b (x[b, j] - mean_j)^2, each rank over its rows,
              then summed across ranks
   A rank's own rows are added in row order, as in one process, so with one
   rank this is F2 bit for bit. Summing each rank's variance about its own
   mean instead would leave out the spread between the ranks' means: the
   denominator of fvu must be the global batch's. */
static lsae_result lsae__total_variance_comm(lsae_trainer *t, lsae__batch *b)
{
    const size_t d = t->m->d, B = b->B, nblk = (d + LSAE__TV_COLS - 1) / LSAE__TV_COLS;
    double *s = t->comm_buf, TV = 0.0;
    size_t j;
    ptrdiff_t pk;
    lsae_result r;
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pk = 0; pk < (ptrdiff_t)nblk; ++pk) {
        const size_t j0 = (size_t)pk * LSAE__TV_COLS, n = d - j0 < LSAE__TV_COLS ? d - j0 : LSAE__TV_COLS;
        lsae__column_sums(t->x_rows, B, d, j0, n, NULL, s + j0);
    }
    s[d] = (double)B;
    s[d + 1] = (double)b->dropped;
    if ((r = lsae__comm_sum64(t, s, d + 2, "the batch's column sums")) != LSAE_OK) return r;
    b->Bg = (size_t)s[d];
    b->dropped_g = (size_t)s[d + 1];
    if (b->Bg < 2)
        return lsae__err(LSAE_BAD_BATCH, "batch has %zu finite rows over %d ranks (%zu dropped for NaN/Inf): fvu needs at least 2 rows to have a variance",
                         b->Bg, t->comm.size, b->dropped_g);
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pk = 0; pk < (ptrdiff_t)nblk; ++pk) {
        const size_t j0 = (size_t)pk * LSAE__TV_COLS, n = d - j0 < LSAE__TV_COLS ? d - j0 : LSAE__TV_COLS;
        double mean[LSAE__TV_COLS];
        size_t c;
        for (c = 0; c < n; ++c) mean[c] = s[j0 + c] / (double)b->Bg;
        lsae__column_sums(t->x_rows, B, d, j0, n, mean, t->tv_dim + j0);
    }
    if ((r = lsae__comm_sum64(t, t->tv_dim, d, "the batch's variance")) != LSAE_OK) return r;
    for (j = 0; j < d; ++j) TV += t->tv_dim[j];
    b->TV = TV;
    if (!(TV > 0.0) || !isfinite(TV))
        return lsae__err(LSAE_BAD_BATCH, "batch's total variance is %g (all %zu rows equal?): fvu is undefined, batch refused", TV, b->Bg);
    return LSAE_OK;
}

static lsae_result lsae__total_variance(lsae_trainer *t, lsae__batch *b)
{
    const size_t d = t->m->d, B = b->B, nblk = (d + LSAE__TV_COLS - 1) / LSAE__TV_COLS;
    double TV = 0.0;
    size_t j;
    ptrdiff_t pk;
    if (t->has_comm) return lsae__total_variance_comm(t, b);
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pk = 0; pk < (ptrdiff_t)nblk; ++pk) {
        const size_t j0 = (size_t)pk * LSAE__TV_COLS, n = d - j0 < LSAE__TV_COLS ? d - j0 : LSAE__TV_COLS;
        double mean[LSAE__TV_COLS];
        size_t c;
        lsae__column_sums(t->x_rows, B, d, j0, n, NULL, mean);
        for (c = 0; c < n; ++c) mean[c] /= (double)B;
        lsae__column_sums(t->x_rows, B, d, j0, n, mean, t->tv_dim + j0);
    }
    for (j = 0; j < d; ++j) TV += t->tv_dim[j];
    b->TV = TV;
    if (!(TV > 0.0) || !isfinite(TV))
        return lsae__err(LSAE_BAD_BATCH, "batch's total variance is %g (all %zu rows equal?): fvu is undefined, batch refused", TV, B);
    return LSAE_OK;
}

/* F3. The first batch of a run (cfg.init_b_dec) sets b_dec [d] to the
   geometric median of its rows, before anything is encoded: Weiszfeld's
   iteration from the mean,
       w_b = 1 / max(||x_b - g||, 1e-12),   g <- sum_b w_b x_b / sum_b w_b,
   at most 100 steps, stopping when g moves less than 1e-5 (as sparsify's
   geometric_median). In double; a point sitting on g gets weight 1/1e-12
   instead of 1/0. In a data-parallel run each of the sums (the mean's, and
   per step sum_b w_b x_b with sum_b w_b) is over every rank's rows: each
   rank adds its own rows in order, then one fixed-order sum across ranks,
   so every rank holds the same g; one process skips that sum and divides
   the same partial sums, so it gets the same bits as one rank. */
static lsae_result lsae__init_b_dec(lsae_trainer *t, const lsae__batch *b)
{
    const size_t d = t->m->d, B = b->B;
    const int nthreads = t->nthreads;
    const float *X = t->x_rows;
    /* guess [d], prev [d], sums [d + 1] */
    double *guess, *prev, *s, *w;
    lsae_result r = LSAE_OK;
    int it;
    ptrdiff_t j, pb;
    if (t->b_dec_initialized) return LSAE_OK;
    guess = (double *)lsae__alloc_array(t->alloc, 3 * d + 1, sizeof(double), "geometric median");
    w = guess ? (double *)lsae__alloc_array(t->alloc, B ? B : 1, sizeof(double), "geometric median weights") : NULL;
    if (!w) { lsae__free(t->alloc, guess); return LSAE_OUT_OF_MEMORY; }
    (void)nthreads;
    prev = guess + d;
    s = prev + d;
    LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
    for (j = 0; j < (ptrdiff_t)d; ++j) {
        double sum = 0.0;
        size_t q;
        for (q = 0; q < B; ++q) sum += X[q * d + (size_t)j];
        s[j] = sum;
    }
    if (t->has_comm && (r = lsae__comm_sum64(t, s, d, "the geometric median's mean")) != LSAE_OK) goto done;
    for (j = 0; j < (ptrdiff_t)d; ++j) guess[j] = s[j] / (double)b->Bg;
    for (it = 0; it < 100; ++it) {
        double wsum = 0.0, moved = 0.0;
        size_t q;
        memcpy(prev, guess, d * sizeof(double));
        LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
        for (pb = 0; pb < (ptrdiff_t)B; ++pb) {
            double ss = 0.0;
            size_t i;
            for (i = 0; i < d; ++i) {
                double diff = X[(size_t)pb * d + i] - prev[i];
                ss += diff * diff;
            }
            ss = sqrt(ss);
            w[pb] = 1.0 / (ss > 1e-12 ? ss : 1e-12);
        }
        for (q = 0; q < B; ++q) wsum += w[q];
        LSAE__OMP(parallel for schedule(static) num_threads(nthreads))
        for (j = 0; j < (ptrdiff_t)d; ++j) {
            double sum = 0.0;
            size_t qq;
            for (qq = 0; qq < B; ++qq) sum += w[qq] * X[qq * d + (size_t)j];
            s[j] = sum;
        }
        s[d] = wsum;
        if (t->has_comm && (r = lsae__comm_sum64(t, s, d + 1, "the geometric median's step")) != LSAE_OK) goto done;
        for (j = 0; j < (ptrdiff_t)d; ++j) guess[j] = s[j] / s[d];
        for (q = 0; q < d; ++q) moved += (guess[q] - prev[q]) * (guess[q] - prev[q]);
        if (sqrt(moved) < 1e-5) break;
    }
    for (j = 0; j < (ptrdiff_t)d; ++j) t->m->b_dec[j] = (float)guess[j];
    t->b_dec_initialized = 1;
done:
    lsae__free(t->alloc, w);
    lsae__free(t->alloc, guess);
    return r;
}

/* The dead latents: since_fired[l] > dead_feature_threshold, as bits
   (dead_bits, bit l % 64 of word l / 64) for the AuxK pick; returns how many. */
static size_t lsae__find_dead(lsae_trainer *t)
{
    size_t l, n = 0;
    for (l = 0; l < t->m->L; ++l) {
        uint64_t bit = (uint64_t)1 << (l % 64);
        if (l % 64 == 0) t->dead_bits[l / 64] = 0;
        if (t->since_fired[l] > t->cfg.dead_feature_threshold) {
            t->dead_bits[l / 64] |= bit;
            ++n;
        }
    }
    return n;
}

/* The float whose lsae__order_bits is key. */
static float lsae__key_value(uint32_t key)
{
    uint32_t u = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* The key (lsae__order_bits) of the N-th largest value among the rows'
   candidates cand[b][0 .. ncand[b]), counted with multiplicity: a radix
   select, 8 bits a pass from the most significant, each pass counting the
   candidates that share the prefix found so far. */
static uint32_t lsae__kth_key(const lsae__kv *const *cand, const size_t *ncand, size_t B, size_t N)
{
    uint32_t prefix = 0, mask = 0;
    size_t rank = N - 1;
    int shift;
    for (shift = 24; shift >= 0; shift -= 8) {
        size_t cnt[256], b, i;
        int dg;
        memset(cnt, 0, sizeof cnt);
        for (b = 0; b < B; ++b)
            for (i = 0; i < ncand[b]; ++i) {
                const uint32_t key = lsae__order_bits(cand[b][i].v);
                if ((key & mask) == prefix) cnt[(key >> shift) & 255u]++;
            }
        for (dg = 255; dg > 0; --dg) {
            if (rank < cnt[dg]) break;
            rank -= cnt[dg];
        }
        prefix |= (uint32_t)dg << shift;
        mask |= 255u << shift;
    }
    return prefix;
}

/* Rows rows[0 .. n) selected again over view's latents with Kmax
   candidates each (3.1's enlargement): the same fused pass, so the same
   values; the lists go to a new block of t->ext and t->cand points at them. */
static lsae_result lsae__reselect(lsae_trainer *t, const lsae_model *view, const size_t *rows, size_t n, size_t Kmax)
{
    const size_t d = view->d;
    const size_t chunk = lsae__select_rows(n, Kmax, 0, t->nthreads);
    lsae__select_ws ws;
    lsae__kv *out;
    float *xs;
    size_t c0, i;
    lsae_result r;
    if (t->next == LSAE__EXT_BLOCKS) return lsae__err(LSAE_INVALID_ARGS, "batch-wide pick: too many enlargement rounds");
    if ((r = lsae__select_ws_init(t->alloc, &ws, chunk, Kmax, 0, d, t->nthreads)) != LSAE_OK) return r;
    ws.rows_per_thread = t->select_rows;
    out = (lsae__kv *)lsae__alloc_array(t->alloc, n, Kmax * sizeof(lsae__kv), "enlarged candidates");
    xs = out ? (float *)lsae__alloc_array(t->alloc, chunk, d * sizeof(float), "enlarged rows") : NULL;
    if (!xs) {
        lsae__free(t->alloc, out);
        lsae__select_ws_free(t->alloc, &ws);
        return LSAE_OUT_OF_MEMORY;
    }
    t->ext[t->next++] = out;
    for (c0 = 0; c0 < n; c0 += chunk) {
        const size_t R = n - c0 < chunk ? n - c0 : chunk;
        for (i = 0; i < R; ++i) memcpy(xs + i * d, t->xc + rows[c0 + i] * d, d * sizeof(float));
        lsae__select(view, xs, R, Kmax, out + c0 * Kmax, NULL, 0, NULL, &ws);
    }
    for (i = 0; i < n; ++i) t->cand[rows[i]] = out + i * Kmax;
    lsae__free(t->alloc, xs);
    lsae__select_ws_free(t->alloc, &ws);
    return LSAE_OK;
}

/* The batch-wide pick of 3.1 over view's latents: S = the N best entries of
   the batch in the total order (value desc, row asc, latent asc), found
   from each row's candidates t->cand[b] (its best t->ncand[b], best first;
   M0 each at the start). keep[b] = how many of row b's candidates are in S
   (a prefix), *tau = the smallest value in S. A row all of whose
   candidates are in S may hold more of it: it is selected again with twice
   as many (at most view->L), and S found again, until no such row is left.
   An entry no row offered is worse than its row's last candidate, which is
   outside S, so S is exact. *enlarged counts the rows re-selected. */
static lsae_result lsae__batch_pick(lsae_trainer *t, const lsae_model *view, size_t B, size_t N, size_t M0, float *tau, size_t *enlarged)
{
    const size_t Lv = view->L;
    size_t *grow = NULL;
    lsae_result r = LSAE_OK;
    for (;;) {
        const uint32_t kth = lsae__kth_key(t->cand, t->ncand, B, N);
        size_t q = N, b, ng = 0, Kmax = 0;
        /* the entries above the N-th value are in S; of those equal to it,
           the first in row order, then latent order */
        for (b = 0; b < B; ++b) {
            const lsae__kv *c = t->cand[b];
            size_t i = 0;
            while (i < t->ncand[b] && lsae__order_bits(c[i].v) > kth) ++i;
            t->keep[b] = i;
            q -= i;
        }
        for (b = 0; b < B && q; ++b) {
            const lsae__kv *c = t->cand[b];
            size_t i = t->keep[b];
            while (q && i < t->ncand[b] && lsae__order_bits(c[i].v) == kth) { ++i; --q; }
            t->keep[b] = i;
        }
        *tau = lsae__key_value(kth);
        for (b = 0; b < B; ++b) ng += t->keep[b] == t->ncand[b] && t->ncand[b] < Lv;
        if (!ng) break;
        if (!grow && !(grow = (size_t *)lsae__alloc_array(t->alloc, B, sizeof(size_t), "rows to enlarge"))) return LSAE_OUT_OF_MEMORY;
        ng = 0;
        for (b = 0; b < B; ++b)
            if (t->keep[b] == t->ncand[b] && t->ncand[b] < Lv) {
                const size_t M = 2 * t->ncand[b] < Lv ? 2 * t->ncand[b] : Lv;
                if (t->ncand[b] == M0) ++*enlarged;
                grow[ng++] = b;
                Kmax = M > Kmax ? M : Kmax;
            }
        if ((r = lsae__reselect(t, view, grow, ng, Kmax)) != LSAE_OK) break;
        for (b = 0; b < ng; ++b) {
            const size_t row = grow[b];
            t->ncand[row] = 2 * t->ncand[row] < Lv ? 2 * t->ncand[row] : Lv;
        }
    }
    lsae__free(t->alloc, grow);
    return r;
}

/* theta <- fl(fl(theta beta) + fl(tau (1 - beta))) in float32, beta and
   1 - beta rounded to float first (3.1, as latent-sae's buffer update);
   volatile keeps each product rounded (no fused multiply-add).
   Without the row cap, a theta of 0 is taken to be unset and the batch's
   tau sets it (Bussmann et al.'s start): an EMA from 0 at beta 0.999 stays
   far below tau for thousands of batches, and uncapped inference would
   then keep hundreds of latents per row. With the cap, and in the
   per-level Matryoshka form (whose encode ignores theta), theta moves from
   0 as latent-sae's does, so its runs are reproduced. */
static void lsae__theta_step(lsae_trainer *t, float tau)
{
    const float beta = (float)t->cfg.batchtopk_threshold_beta, omb = (float)(1.0 - t->cfg.batchtopk_threshold_beta);
    volatile float a, c;
    const int uncapped_inference = !t->cfg.batchtopk_row_cap &&
        !(t->cfg.sae_type == LSAE_SAE_MATRYOSHKA && t->cfg.matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL);
    if (uncapped_inference && t->m->batchtopk_threshold == 0.0f) {
        t->m->batchtopk_threshold = tau;
        return;
    }
    a = t->m->batchtopk_threshold * beta;
    c = tau * omb;
    t->m->batchtopk_threshold = a + c;
}

/* The nested form's (and BatchTopK's) runs: row b's kept entries
   cand[b][0 .. keep[b]) regrouped by band (stable: best first within a
   band) into t->kept, one run per band (class j), then the AuxK run. */
static void lsae__band_runs(lsae_trainer *t, const lsae__batch *b)
{
    const size_t B = b->B, nl = t->nlev;
    size_t r, off = 0;
    for (r = 0; r < B; ++r) {
        lsae__run *ru = t->runs + r * LSAE__RUNS;
        const lsae__kv *c = t->cand[r];
        const size_t n = t->keep[r];
        if (nl == 1) {
            ru[0].p = c; ru[0].n = n; ru[0].cls = 0;
        } else {
            size_t cnt[LSAE_MAX_LEVELS], start[LSAE_MAX_LEVELS], i, j, at = off;
            lsae__kv *dst = t->kept;
            memset(cnt, 0, sizeof cnt);
            for (i = 0; i < n; ++i) {
                for (j = 0; (size_t)c[i].i >= t->lev_n[j]; ++j) {}
                cnt[j]++;
            }
            for (j = 0; j < nl; ++j) {
                start[j] = at;
                ru[j].p = dst + at; ru[j].n = cnt[j]; ru[j].cls = j;
                at += cnt[j];
            }
            for (i = 0; i < n; ++i) {
                for (j = 0; (size_t)c[i].i >= t->lev_n[j]; ++j) {}
                dst[start[j]++] = c[i];
            }
            off = at;
        }
        ru[nl].p = t->aux + r * t->KA; ru[nl].n = b->ka; ru[nl].cls = nl;
        t->nruns[r] = nl + 1;
    }
}

/* F4, per-level Matryoshka (3.3): one product, band by band (each band's
   latents selected with the band's own candidates, so every latent's
   pre-activation is computed once), then level j's candidates are the best
   M_j of bands 1..j merged, and its kept entries their best k_j, or the
   batch-wide pick of B k_j among them, capped at k_j. */
static lsae_result lsae__select_levels(lsae_trainer *t, lsae__batch *b)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, B = b->B, nl = t->nlev, bK = t->band_K;
    size_t M[LSAE_MAX_LEVELS], bandK[LSAE_MAX_LEVELS], i, j, r;
    ptrdiff_t pr;
    lsae_result res;
    t->lev_k[nl - 1] = b->k;
    for (j = 0; j < nl; ++j) M[j] = t->batchwide ? (4 * t->lev_k[j] < t->lev_n[j] ? 4 * t->lev_k[j] : t->lev_n[j]) : t->lev_k[j];
    for (i = 0; i < nl; ++i) {
        lsae_model view = *m;
        const size_t lo = i ? t->lev_n[i - 1] : 0, size = t->lev_n[i] - lo;
        lsae__kv *bt = t->bandtop + i * t->cap * bK;
        size_t most = 0;
        for (j = i; j < nl; ++j) most = M[j] > most ? M[j] : most;
        bandK[i] = most < size ? most : size;
        view.L = size;
        view.W_enc = m->W_enc + lo * d;
        view.b_enc = m->b_enc + lo;
        for (r = 0; r < B; r += t->sws.rows_cap) {
            size_t R = B - r < t->sws.rows_cap ? B - r : t->sws.rows_cap;
            lsae__select(&view, t->xc + r * d, R, bandK[i], bt + r * bK, NULL, 0, NULL, &t->sws);
        }
        if (lo)
            for (r = 0; r < B; ++r)
                for (j = 0; j < bandK[i]; ++j) bt[r * bK + j].i += (int32_t)lo;
    }
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pr = 0; pr < (ptrdiff_t)B; ++pr) {
        const size_t row = (size_t)pr;
        size_t jj, q, ii;
        for (jj = 0; jj < nl; ++jj) {
            size_t pos[LSAE_MAX_LEVELS];
            lsae__kv *out = t->lcand + row * t->sumM + t->lev_off[jj];
            memset(pos, 0, sizeof pos);
            for (q = 0; q < M[jj]; ++q) {
                size_t best = nl;
                const lsae__kv *bv = NULL;
                for (ii = 0; ii <= jj; ++ii) {
                    const lsae__kv *e;
                    if (pos[ii] == bandK[ii]) continue;
                    e = t->bandtop + ii * t->cap * bK + row * bK + pos[ii];
                    if (!bv || e->v > bv->v || (e->v == bv->v && e->i < bv->i)) { bv = e; best = ii; }
                }
                out[q] = *bv;
                pos[best]++;
            }
        }
        t->nruns[row] = 0;
    }
    for (j = 0; j < nl; ++j) {
        for (r = 0; r < B; ++r) {
            t->cand[r] = t->lcand + r * t->sumM + t->lev_off[j];
            t->ncand[r] = M[j];
            t->keep[r] = t->lev_k[j];
        }
        if (t->batchwide) {
            lsae_model view = *m;
            float tau = 0.0f;
            view.L = t->lev_n[j];
            if ((res = lsae__batch_pick(t, &view, B, B * t->lev_k[j], M[j], &tau, &b->enlarged)) != LSAE_OK) return res;
            for (r = 0; r < B; ++r)
                if (t->keep[r] > t->lev_k[j]) t->keep[r] = t->lev_k[j];
            b->tau = tau;
            b->has_tau = 1;
        }
        for (r = 0; r < B; ++r) {
            lsae__run *ru = t->runs + r * LSAE__RUNS + t->nruns[r]++;
            ru->p = t->cand[r];
            ru->n = t->keep[r];
            ru->cls = j;
        }
    }
    return LSAE_OK;
}

/* The AuxK pick of a step whose top went through the pre-pass: per row the
   ka largest of ReLU(xc W_enc^T + b_enc) among the dead latents, in latent
   order, as lsae__select writes t->aux. The dead latents' rows of W_enc
   and b_enc are gathered into a model of n_dead latents and lsae__select
   picks its top ka: each value is the same float32 chain over p as in the
   full pass (the pre-pass's recomputation rests on that too), and the
   gathered order keeps the latent order, so ties (to the lower latent)
   and the zeros that pad a row with fewer than ka positive values (the
   lowest dead latents) fall the same way. Costs B n_dead d: worth it
   while few latents are dead. The gathered rows serve every batch of an
   accumulation window (kept while wgen and the dead set are unchanged),
   and they and the scratch stay allocated: gathering 19 MB into a fresh
   allocation (page faults, one thread) each batch cost about 4% of the
   pre-pass step at 768 x 24,576 with 25% dead. */
static lsae_result lsae__aux_from_dead(lsae_trainer *t, const lsae__batch *b)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, L = m->L, B = b->B, nd = b->n_dead, ka = b->ka, nw = (L + 63) / 64;
    const size_t rows = lsae__select_rows(B, t->KA, 0, t->nthreads);
    lsae_model sub;
    size_t l, j, r, i, q;
    ptrdiff_t jj;
    lsae_result res;
    LSAE_ASSERT(ka <= t->KA);
    if (nd > t->ad_cap) {
        lsae__free(t->alloc, t->ad_W); lsae__free(t->alloc, t->ad_b); lsae__free(t->alloc, t->ad_map);
        t->ad_W = t->ad_b = NULL;
        t->ad_map = NULL;
        t->ad_cap = 0;
        t->ad_valid = 0;
        if (!(t->ad_W = (float *)lsae__alloc_array(t->alloc, nd, d * sizeof(float), "AuxK dead latents")) ||
            !(t->ad_b = (float *)lsae__alloc_array(t->alloc, nd, sizeof(float), "AuxK dead latents")) ||
            !(t->ad_map = (int32_t *)lsae__alloc_array(t->alloc, nd, sizeof(int32_t), "AuxK dead latents")))
            return LSAE_OUT_OF_MEMORY;
        t->ad_cap = nd;
    }
    if (!t->ad_bits && !(t->ad_bits = (uint64_t *)lsae__alloc_array(t->alloc, nw, sizeof(uint64_t), "AuxK dead latents")))
        return LSAE_OUT_OF_MEMORY;
    if (!t->ad_ws.bufs || !t->ad_top || t->ad_ws.rows_cap < rows) {
        /* (both again after either was refused: an out-of-memory return
           may leave the scratch without its output rows) */
        lsae__select_ws_free(t->alloc, &t->ad_ws);
        lsae__free(t->alloc, t->ad_top);
        t->ad_top = NULL;
        if ((res = lsae__select_ws_init(t->alloc, &t->ad_ws, rows, t->KA, 0, d, t->nthreads)) != LSAE_OK) return res;
        t->ad_ws.index_order = 1; /* the pick comes out in latent order: no sort by value, none back */
        t->ad_ws.rows_per_thread = t->select_rows;
        if (!(t->ad_top = (lsae__kv *)lsae__alloc_array(t->alloc, rows, t->KA * sizeof(lsae__kv), "AuxK pick"))) return LSAE_OUT_OF_MEMORY;
    }
    if (!t->ad_valid || t->ad_gen != m->wgen || t->ad_nd != nd || memcmp(t->ad_bits, t->dead_bits, nw * sizeof(uint64_t)) != 0) {
        for (l = 0, j = 0; l < L; ++l)
            if ((t->dead_bits[l / 64] >> (l % 64)) & 1u) {
                t->ad_b[j] = m->b_enc[l];
                t->ad_map[j++] = (int32_t)l;
            }
        LSAE_ASSERT(j == nd && ka <= nd);
        LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
        for (jj = 0; jj < (ptrdiff_t)nd; ++jj)
            memcpy(t->ad_W + (size_t)jj * d, m->W_enc + (size_t)t->ad_map[jj] * d, d * sizeof(float));
        memcpy(t->ad_bits, t->dead_bits, nw * sizeof(uint64_t));
        t->ad_nd = nd;
        t->ad_gen = m->wgen;
        t->ad_valid = 1;
    }
    sub = *m;
    sub.L = nd;
    sub.W_enc = t->ad_W;
    sub.b_enc = t->ad_b;
    for (r = 0; r < B; r += rows) {
        const size_t R = B - r < rows ? B - r : rows;
        lsae__select(&sub, t->xc + r * d, R, ka, t->ad_top, NULL, 0, NULL, &t->ad_ws);
        for (i = 0; i < R; ++i) {
            lsae__kv *out = t->aux + (r + i) * t->KA;
            const lsae__kv *sel = t->ad_top + i * t->ad_ws.K; /* lsae__select's rows are ws.K apart */
            for (q = 0; q < ka; ++q) { /* ad_map increases: index order kept */
                out[q].v = sel[q].v;
                out[q].i = t->ad_map[sel[q].i];
            }
        }
    }
    return LSAE_OK;
}

/* F4 through the int8 pre-pass (docs/math.md 2.12), when it applies: the
   same top Ksel of every row, bit for bit, as lsae__select, from an int8
   product with a proven error bound and a float32 recomputation of only
   the latents that bound leaves in doubt. W_enc moves every step, so its
   int8 copy is rebuilt: O(L d) against the O(B L d) product it replaces;
   here when stale, else the optimizer step (lsae__adam) refilled it. With an AuxK pick this step (ka > 0) the bound, which screens
   for the top of all latents, says nothing about the top of the dead ones:
   lsae__aux_from_dead picks those in float32 from the dead latents alone,
   while at most L / LSAE__LPDEAD latents are dead (beyond that the full
   float32 pass, which yields both picks at once, costs less). Sets
   b->prepassed when it ran. */
static lsae_result lsae__select_prepass(lsae_trainer *t, lsae__batch *b)
{
    lsae_model *m = t->m;
    const size_t B = b->B, K = b->Ksel;
    lsae__kv *out;
    size_t *cnt;
    lsae_result r;
    size_t i;
    b->prepassed = 0;
    if ((b->ka && b->n_dead > m->L / LSAE__LPDEAD) || !lsae__lp_applies(m, K, B)) return LSAE_OK;
    /* W_enc moves once an optimizer step: the batches of an accumulation
       window share one copy */
    if (t->lpq.wq && t->lpq.L == m->L && t->lpq.d == m->d) {
        if (t->lpq_gen != m->wgen) lsae__lp_fill(&t->lpq, m->W_enc, t->nthreads);
    } else {
        lsae__lp_free(t->alloc, &t->lpq);
        if ((r = lsae__lp_build(t->alloc, &t->lpq, m->W_enc, m->L, m->d, t->nthreads)) != LSAE_OK) return r;
    }
    t->lpq_gen = m->wgen;
    /* lsae__lp_select writes rows of K; t->top's rows are t->K >= K apart */
    out = t->K == K ? t->top : (lsae__kv *)lsae__alloc_array(t->alloc, B, K * sizeof(lsae__kv), "pre-pass selection");
    if (!out) return LSAE_OUT_OF_MEMORY;
    if (!(cnt = (size_t *)lsae__alloc_array(t->alloc, B ? B : 1, sizeof(size_t), "pre-pass counts"))) {
        if (out != t->top) lsae__free(t->alloc, out);
        return LSAE_OUT_OF_MEMORY;
    }
    r = lsae__lp_select(m, &t->lpq, t->xc, B, K, out, t->nthreads, cnt);
    if (r == LSAE_OK)
        for (i = 0; i < B; ++i) {
            t->prepass_cand_sum += cnt[i];
            if (cnt[i] > t->prepass_cand_max) t->prepass_cand_max = cnt[i];
        }
    t->prepass_rows += r == LSAE_OK ? B : 0;
    lsae__free(t->alloc, cnt);
    if (out != t->top) {
        if (r == LSAE_OK)
            for (i = B; i-- > 0;) memcpy(t->top + i * t->K, out + i * K, K * sizeof(lsae__kv));
        lsae__free(t->alloc, out);
    }
    if (r == LSAE_OK && b->ka) r = lsae__aux_from_dead(t, b);
    if (r == LSAE_OK) {
        b->prepassed = 1;
        t->prepass_batches++;
    }
    return r;
}

/* F4. Encoder and selection:
      xc  = x - b_dec                                  [B, d]
      pre = ReLU(xc W_enc^T + b_enc)                   [B, L]
      top = per row, the K largest of pre (largest first, ties to the lower
            latent)                                    [B, K]
      aux = per row, the ka largest of pre among dead latents, in latent
            order                                      [B, KA], ka used
   With AuxK on (Gao et al. B.1): ka = min(d/2, n_dead) and the AuxK loss is
   scaled by min(n_dead / (d/2), 1). pre is never stored: lsae__select
   computes it a tile at a time and offers each tile to the row's selection
   (the fused encoder pass above). K is k_s (3.4), or min(4 k_s, L) with
   multi_topk or a batch-wide pick (whose rows offer that many candidates,
   3.1). The selection becomes runs of entries per row, each feeding one
   gradient class (TopK: top k, the 4k tail, AuxK; nested: the bands of
   the kept entries, AuxK; per-level: lsae__select_levels). */
static lsae_result lsae__encode_select(lsae_trainer *t, lsae__batch *b)
{
    lsae_model *m = t->m;
    const size_t d = m->d, L = m->L, B = b->B;
    size_t r;
    lsae_result res;
    if (t->cfg.auxk_alpha > 0.0) {
        b->n_dead = lsae__find_dead(t);
        b->ka = d / 2 < b->n_dead ? d / 2 : b->n_dead;
        b->auxk_scale = d / 2 ? (double)b->n_dead / (double)(d / 2) : 0.0;
        if (b->auxk_scale > 1.0) b->auxk_scale = 1.0;
    } else {
        size_t l;
        for (l = 0; l < L; ++l) b->n_dead += t->since_fired[l] > t->cfg.dead_feature_threshold;
    }
    b->k = lsae__k_at_step(&t->cfg, t->Lg, t->step);
    lsae__center(t->xc, t->x_rows, m->b_dec, B, d, t->nthreads);
    if (t->kind == LSAE__KIND_PERLEVEL) return lsae__select_levels(t, b);
    b->Ksel = (t->kind == LSAE__KIND_TOPK ? t->cfg.multi_topk : t->batchwide) ? (4 * b->k < L ? 4 * b->k : L) : b->k;
    if ((res = lsae__select_prepass(t, b)) != LSAE_OK) return res;
    if (!b->prepassed)
        for (r = 0; r < B; r += t->sws.rows_cap) {
            size_t R = B - r < t->sws.rows_cap ? B - r : t->sws.rows_cap;
            lsae__select(m, t->xc + r * d, R, b->Ksel, t->top + r * t->K, b->ka ? t->dead_bits : NULL, b->ka, t->aux + r * t->KA, &t->sws);
        }
    if (t->kind == LSAE__KIND_TOPK) {
        for (r = 0; r < B; ++r) {
            lsae__run *ru = t->runs + r * LSAE__RUNS;
            ru[0].p = t->top + r * t->K;          ru[0].n = b->k;           ru[0].cls = 0;
            ru[1].p = t->top + r * t->K + b->k;   ru[1].n = b->Ksel - b->k; ru[1].cls = 1;
            ru[2].p = t->aux + r * t->KA;         ru[2].n = b->ka;          ru[2].cls = 2;
            t->nruns[r] = 3;
        }
        return LSAE_OK;
    }
    for (r = 0; r < B; ++r) {
        t->cand[r] = t->top + r * t->K;
        t->ncand[r] = b->Ksel;
        t->keep[r] = b->k;
    }
    if (t->batchwide) {
        if ((res = lsae__batch_pick(t, m, B, B * b->k, b->Ksel, &b->tau, &b->enlarged)) != LSAE_OK) return res;
        b->has_tau = 1;
        if (t->row_cap)
            for (r = 0; r < B; ++r)
                if (t->keep[r] > b->k) t->keep[r] = b->k;
    }
    lsae__band_runs(t, b);
    return LSAE_OK;
}

/* The columns of W_dec to decode at a time in F5. A row's k latents are
   spread over all of W_dec, so decoding a row at a time reads k whole rows
   of W_dec from wherever they are; once W_dec outgrows a core's L2 (2.4 MB
   at d 384, L 1,536) that is the L3, again for every row. Taking the
   columns in blocks whose slice of W_dec (L x cols floats) fits in half the
   L2 reads each slice from the L3 once a thread, then from the L2 for all
   the thread's rows: worth it when each latent is decoded by many rows
   (B K / L of them on average; 43 at L 3,072, k 128, B 1,024). Each element
   keeps its chain of multiply-adds (lsae__decode_cols): same bits. Returns
   d for a row at a time. l2_bytes: the core's L2 (0: unknown, taken as
   2 MiB). */
static size_t lsae__decode_block_cols_for(size_t L, size_t d, size_t B, size_t K, int nthreads, size_t l2_bytes)
{
    const size_t l2 = l2_bytes ? l2_bytes : (size_t)2 << 20;
    size_t cols;
    if ((size_t)nthreads * 16 > B || B * K < 16 * L || L * d * sizeof(float) <= l2 / 2) return d;
    cols = l2 / 2 / (L * sizeof(float));
    cols -= cols % 16;
    return cols < 32 ? d : cols;
}
static size_t lsae__decode_block_cols(size_t L, size_t d, size_t B, size_t K, int nthreads)
{
    return lsae__decode_block_cols_for(L, d, B, K, nthreads, lsae__l2_bytes());
}

/* F5. Decode and residuals, per row b (G is [B, 3, d]: three outputs a row):
      G0[b] <- e  = x - (b_dec + sum_{i<k} a_i W_dec[l_i])
      G1[b] <- e4 = x - (b_dec + sum_{i<K} a_i W_dec[l_i])       (multi_topk)
      row_sse[b] = (sum e^2, sum e4^2, 0) in double
   A row's k latents are spread over all of W_dec, so a row at a time is as
   good an order as any. e4 continues from the top-k decode, as torch's sum
   over the first k then the next 3k would not: the sum order is ours. */
static void lsae__decode_residuals(lsae_trainer *t, const lsae__batch *b)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, k = b->k, K = b->Ksel, cols = t->decode_cols ? t->decode_cols : lsae__decode_block_cols(m->L, d, b->B, K, t->nthreads);
    ptrdiff_t pr;
    if (cols < d) {
        /* column blocks: a thread's rows, block by block */
        LSAE__OMP(parallel num_threads(t->nthreads))
        {
            int tid = lsae__thread_id(), nth = 1;
            size_t r0, r1, row, j0;
#ifdef _OPENMP
            nth = omp_get_num_threads();
#endif
            r0 = b->B * (size_t)tid / (size_t)nth;
            r1 = b->B * ((size_t)tid + 1) / (size_t)nth;
            for (j0 = 0; j0 < d; j0 += cols) {
                const size_t len = d - j0 < cols ? d - j0 : cols;
                for (row = r0; row < r1; ++row) {
                    float *g0 = t->G + row * 3 * d + j0, *g1 = g0 + d;
                    const lsae__kv *tk = t->top + row * t->K;
                    memcpy(g0, m->b_dec + j0, len * sizeof(float));
                    lsae__decode_cols(g0, tk, k, m->W_dec + j0, d, len);
                    if (K > k) {
                        memcpy(g1, g0, len * sizeof(float));
                        lsae__decode_cols(g1, tk + k, K - k, m->W_dec + j0, d, len);
                    }
                }
            }
        }
    }
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pr = 0; pr < (ptrdiff_t)b->B; ++pr) {
        const size_t row = (size_t)pr;
        const float *xb = t->x_rows + row * d;
        float *g0 = t->G + row * 3 * d, *g1 = g0 + d;
        const lsae__kv *tk = t->top + row * t->K;
        double s0 = 0.0, s1 = 0.0;
        size_t j;
        if (cols >= d) {
            memcpy(g0, m->b_dec, d * sizeof(float));
            lsae__decode_into(g0, tk, k, m->W_dec, d);
        }
        if (K > k) {
            if (cols >= d) {
                memcpy(g1, g0, d * sizeof(float));
                lsae__decode_into(g1, tk + k, K - k, m->W_dec, d);
            }
            for (j = 0; j < d; ++j) {
                g1[j] = xb[j] - g1[j];
                s1 += (double)g1[j] * g1[j];
            }
        }
        for (j = 0; j < d; ++j) {
            g0[j] = xb[j] - g0[j];
            s0 += (double)g0[j] * g0[j];
        }
        t->row_sse[3 * row] = s0;
        t->row_sse[3 * row + 1] = s1;
        t->row_sse[3 * row + 2] = 0.0;
    }
}

/* F5 for the nested and per-level forms (and BatchTopK, one band), per
   row b, the outputs y_j (class j's run is band j, or level j's kept
   entries):
      nested:    y_1 = b_dec + band 1's terms, y_j = y_{j-1} + band j's terms
      per-level: y_j = b_dec + level j's terms
      G_j[b] <- e_j = x - y_j,   row_sse[b][j] = sum e_j^2 in double */
static void lsae__decode_levels(lsae_trainer *t, const lsae__batch *b)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, C = t->C, nl = t->nlev;
    const int chained = t->kind == LSAE__KIND_NESTED;
    ptrdiff_t pr;
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pr = 0; pr < (ptrdiff_t)b->B; ++pr) {
        const size_t row = (size_t)pr;
        const float *xb = t->x_rows + row * d;
        const lsae__run *ru = t->runs + row * LSAE__RUNS;
        float *g = t->G + row * C * d;
        size_t j, i;
        for (j = 0; j < nl; ++j) {
            memcpy(g + j * d, chained && j ? g + (j - 1) * d : m->b_dec, d * sizeof(float));
            lsae__decode_into(g + j * d, ru[j].p, ru[j].n, m->W_dec, d);
        }
        for (j = 0; j < nl; ++j) {
            float *y = g + j * d;
            double s = 0.0;
            for (i = 0; i < d; ++i) {
                y[i] = xb[i] - y[i];
                s += (double)y[i] * y[i];
            }
            t->row_sse[row * C + j] = s;
        }
        for (; j < C; ++j) t->row_sse[row * C + j] = 0.0;
    }
}

/* F6. AuxK decode, when ka > 0:
      e_hat = sum_{j<ka} aux_a_j W_dec[aux_l_j]    (no b_dec: e already has it)
      G_aux[b] <- e_hat - e,  row_sse[b][aux] = sum (e_hat - e)^2
   (the AuxK class is the last, C - 1; e is the whole SAE's residual: TopK's
   G0, the nested form's last level)    The dead latents' W_dec rows are read over and over (each is picked by
   many rows), so the batch goes in blocks of LSAE__DEC_ROWS rows and, for
   each block, W_dec in chunks of LSAE__DEC_CHUNK latents: a chunk's rows stay
   in cache while every row of the block adds the entries it has in that
   chunk (each row's AuxK entries are in latent order, so they come as one
   run per chunk). A row's sum runs in latent order whatever the blocks and
   threads. */
static void lsae__auxk_decode(lsae_trainer *t, const lsae__batch *b)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, L = m->L, B = b->B, ka = b->ka, nblocks = (B + LSAE__DEC_ROWS - 1) / LSAE__DEC_ROWS;
    const size_t C = t->C, ga = C - 1, ge = t->kind == LSAE__KIND_TOPK ? 0 : t->nlev - 1;
    ptrdiff_t blk;
    if (!ka) return;
    LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(t->nthreads))
    for (blk = 0; blk < (ptrdiff_t)nblocks; ++blk) {
        const size_t b0 = (size_t)blk * LSAE__DEC_ROWS, b1 = b0 + LSAE__DEC_ROWS < B ? b0 + LSAE__DEC_ROWS : B;
        size_t row, c0, j;
        for (row = b0; row < b1; ++row) {
            memset(t->G + row * C * d + ga * d, 0, d * sizeof(float));
            t->cursor[row] = 0;
        }
        for (c0 = 0; c0 < L; c0 += LSAE__DEC_CHUNK) {
            const int32_t c1 = (int32_t)(c0 + LSAE__DEC_CHUNK < L ? c0 + LSAE__DEC_CHUNK : L);
            for (row = b0; row < b1; ++row) {
                const lsae__kv *ax = t->aux + row * t->KA;
                float *g2 = t->G + row * C * d + ga * d;
                size_t q0 = t->cursor[row], q = q0;
                while (q < ka && ax[q].i < c1) ++q;
                lsae__decode_into(g2, ax + q0, q - q0, m->W_dec, d);
                t->cursor[row] = q;
            }
        }
        for (row = b0; row < b1; ++row) {
            float *g0 = t->G + row * C * d + ge * d, *g2 = t->G + row * C * d + ga * d;
            double s2 = 0.0;
            for (j = 0; j < d; ++j) {
                g2[j] -= g0[j];
                s2 += (double)g2[j] * g2[j];
            }
            t->row_sse[C * row + ga] = s2;
        }
    }
}

/* F7. The loss, from the per-row sums in row order:
      fvu  = sum e^2 / TV,  fvu4 = sum e4^2 / TV (multi_topk),
      auxk = scale sum (e_hat - e)^2 / TV (AuxK),
      loss = fvu + auxk_alpha auxk + fvu4 / 8
   The other types (section 3), with fvu_j each level's fvu (BatchTopK: one):
      nested:    loss = sum_j w_j fvu_j + auxk_alpha auxk,   fvu = fvu_m
      per-level: loss = sum_j w_j fvu_j / sum_j w_j,         fvu = fvu_m
   A non-finite loss stops the trainer before any gradient or weight moves. */
static lsae_result lsae__loss(lsae_trainer *t, lsae__batch *b)
{
    double se = 0.0, se4 = 0.0, sa = 0.0;
    size_t r, j;
    if (t->kind == LSAE__KIND_TOPK) {
        for (r = 0; r < b->B; ++r) {
            se += t->row_sse[3 * r];
            se4 += t->row_sse[3 * r + 1];
            sa += t->row_sse[3 * r + 2];
        }
        if (t->has_comm) {
            /* the global batch's sums: each rank's, in row order, then across ranks */
            lsae_result res;
            t->comm_buf[0] = se; t->comm_buf[1] = se4; t->comm_buf[2] = sa;
            if ((res = lsae__comm_sum64(t, t->comm_buf, 3, "the loss")) != LSAE_OK) return res;
            se = t->comm_buf[0]; se4 = t->comm_buf[1]; sa = t->comm_buf[2];
        }
        b->fvu = se / b->TV;
        b->fvu4 = b->Ksel > b->k ? se4 / b->TV : 0.0;
        b->auxk = b->ka ? b->auxk_scale * sa / b->TV : 0.0;
        b->loss = b->fvu + t->cfg.auxk_alpha * b->auxk + b->fvu4 / 8.0;
    } else {
        const size_t C = t->C, nl = t->nlev;
        double sl[LSAE_MAX_LEVELS], wl = 0.0, wsum = 0.0;
        memset(sl, 0, sizeof sl);
        for (r = 0; r < b->B; ++r) {
            for (j = 0; j < nl; ++j) sl[j] += t->row_sse[C * r + j];
            if (C > nl) sa += t->row_sse[C * r + nl];
        }
        if (t->has_comm) {
            lsae_result res;
            memcpy(t->comm_buf, sl, nl * sizeof(double));
            t->comm_buf[nl] = sa;
            if ((res = lsae__comm_sum64(t, t->comm_buf, nl + 1, "the loss")) != LSAE_OK) return res;
            memcpy(sl, t->comm_buf, nl * sizeof(double));
            sa = t->comm_buf[nl];
        }
        for (j = 0; j < nl; ++j) {
            b->lev_fvu[j] = sl[j] / b->TV;
            wl += t->lev_w[j] * b->lev_fvu[j];
            wsum += t->lev_w[j];
        }
        b->fvu = b->lev_fvu[nl - 1];
        b->auxk = b->ka ? b->auxk_scale * sa / b->TV : 0.0;
        b->loss = t->kind == LSAE__KIND_PERLEVEL ? wl / wsum : wl + t->cfg.auxk_alpha * b->auxk;
    }
    if (!isfinite(b->loss)) {
        t->poisoned = 1;
        /* steps are named 1-based, as in stats->step, the weight check in U3 and
           a checkpoint's step count: t->step + 1 is the step that went wrong */
        return lsae__err(LSAE_NOT_FINITE, "loss is %g at optimizer step %llu (fvu %g, auxk %g): the weights have diverged; lower the learning rate and resume from the last good checkpoint",
                         b->loss, (unsigned long long)(t->step + 1), b->fvu, b->auxk);
    }
    return LSAE_OK;
}

/* B1 for the nested and per-level forms, G_j = e_j on entry (3.2, 3.3):
      nested:    g_j = g_{j+1} - 2 w w_j e_j / TV  (g_{m+1} = 0: band j's
                 latents are in every output from level j on)
      per-level: G_j = -2 w (w_j / sum_i w_i) e_j / TV
      AuxK:      G_aux = 2 w alpha scale (e_hat - e_m) / TV  (c_aux) */
static void lsae__output_grads_levels(lsae_trainer *t, const lsae__batch *b, double w, float c_aux)
{
    const size_t d = t->m->d, C = t->C, nl = t->nlev;
    float c[LSAE_MAX_LEVELS];
    double wsum = 0.0;
    size_t j;
    ptrdiff_t pr;
    for (j = 0; j < nl; ++j) wsum += t->lev_w[j];
    for (j = 0; j < nl; ++j)
        c[j] = (float)(t->kind == LSAE__KIND_PERLEVEL ? -2.0 * w * (t->lev_w[j] / wsum) / b->TV : -2.0 * w * t->lev_w[j] / b->TV);
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pr = 0; pr < (ptrdiff_t)b->B; ++pr) {
        float *g = t->G + (size_t)pr * C * d;
        size_t jj, i;
        for (jj = nl; jj-- > 0;) {
            float *gj = g + jj * d;
            if (t->kind == LSAE__KIND_NESTED && jj + 1 < nl) {
                const float *gn = gj + d;
                for (i = 0; i < d; ++i) gj[i] = gn[i] + c[jj] * gj[i];
            } else {
                for (i = 0; i < d; ++i) gj[i] = c[jj] * gj[i];
            }
        }
        if (C > nl)
            for (i = 0; i < d; ++i) g[nl * d + i] = c_aux * g[nl * d + i];
    }
}

/* B1. The loss's gradient with respect to the three decoder outputs, in
   place of the residuals (G0 = e, G1 = e4, G2 = e_hat - e on entry):
      dL/dx_hat    = -2 w e / TV  - 2 w e4 / (8 TV)  (x_hat_4k shares the first
                                                      k terms with x_hat)
      dL/dx_hat_4k = -2 w e4 / (8 TV)                (the 4k-only latents)
      dL/de_hat    =  2 w alpha scale (e_hat - e) / TV   (e held constant)
   Latents in a row's top k feel the first, the 4k tail the second, AuxK
   latents the third. */
static void lsae__output_grads(lsae_trainer *t, const lsae__batch *b)
{
    const size_t d = t->m->d;
    const double w = 1.0 / (double)t->cfg.grad_acc_steps;
    const float c_main = (float)(-2.0 * w / b->TV);
    const float c_multi = (float)(b->Ksel > b->k ? -2.0 * w / (8.0 * b->TV) : 0.0);
    const float c_aux = (float)(b->ka ? 2.0 * w * t->cfg.auxk_alpha * b->auxk_scale / b->TV : 0.0);
    ptrdiff_t pr;
    if (t->kind != LSAE__KIND_TOPK) {
        lsae__output_grads_levels(t, b, w, c_aux);
        return;
    }
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pr = 0; pr < (ptrdiff_t)b->B; ++pr) {
        float *g0 = t->G + (size_t)pr * 3 * d, *g1 = g0 + d, *g2 = g1 + d;
        size_t j;
        for (j = 0; j < d; ++j) {
            float e1 = g1[j];
            g0[j] = c_main * g0[j] + (c_multi != 0.0f ? c_multi * e1 : 0.0f);
            g1[j] = c_multi * e1;
            g2[j] = c_aux * g2[j];
        }
    }
}

/* B2. Entries by latent. An entry is (row b, slot s) with a positive
   activation (ReLU passes gradient only where pre > 0, and a zero activation
   adds nothing to W_dec either); it belongs to one of three classes by the
   output gradient it uses: G0 (s < k), G1 (k <= s < K), G2 (AuxK). A stable
   counting sort by (class, latent) puts each entry's row and activation in
   ent (.i, .v), with lat_start [3 L + 1] the CSR offsets; within a
   latent the entries stay by row then slot, so every sum in B3-B4 runs in one
   fixed order. The rows are cut into nparts ranges counted and placed in
   parallel, each with its own counts (part_cnt); a bucket's entries from
   part p go after those of parts before p: the order of a serial pass. */
static void lsae__sort_entries(lsae_trainer *t, const lsae__batch *b)
{
    const size_t L = t->m->L, B = b->B;
    const size_t nb = t->C * L, nparts = (size_t)t->sort_parts < B ? (size_t)t->sort_parts : B;
    size_t i;
    ptrdiff_t pp;
    /* counts per part */
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pp = 0; pp < (ptrdiff_t)nparts; ++pp) {
        size_t *cnt = t->part_cnt + (size_t)pp * nb, r0 = B * (size_t)pp / nparts, r1 = B * ((size_t)pp + 1) / nparts, rr, ii;
        memset(cnt, 0, nb * sizeof(size_t));
        for (rr = r0; rr < r1; ++rr) {
            const lsae__run *ru = t->runs + rr * LSAE__RUNS;
            size_t q;
            for (q = 0; q < t->nruns[rr]; ++q) {
                const lsae__kv *e = ru[q].p;
                size_t *cc = cnt + ru[q].cls * L;
                for (ii = 0; ii < ru[q].n; ++ii) cc[(size_t)e[ii].i] += e[ii].v > 0.0f;
            }
        }
    }
    /* each part's count becomes its offset within the bucket; the bucket
       totals, summed in order, the buckets' starts */
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pp = 0; pp < (ptrdiff_t)nb; ++pp) {
        size_t run = 0, q;
        for (q = 0; q < nparts; ++q) {
            const size_t c_ = t->part_cnt[q * nb + (size_t)pp];
            t->part_cnt[q * nb + (size_t)pp] = run;
            run += c_;
        }
        t->lat_start[pp + 1] = run;
    }
    t->lat_start[0] = 0;
    for (i = 0; i < nb; ++i) t->lat_start[i + 1] += t->lat_start[i];
    /* place: each part's offsets made positions (bucket start + offset), so
       an entry reads and bumps one counter */
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pp = 0; pp < (ptrdiff_t)nparts; ++pp) {
        size_t *fill = t->part_cnt + (size_t)pp * nb, r0 = B * (size_t)pp / nparts, r1 = B * ((size_t)pp + 1) / nparts, rr, ii;
        for (ii = 0; ii < nb; ++ii) fill[ii] += t->lat_start[ii];
        for (rr = r0; rr < r1; ++rr) {
            const lsae__run *ru = t->runs + rr * LSAE__RUNS;
            size_t qr;
            for (qr = 0; qr < t->nruns[rr]; ++qr) {
                const lsae__kv *e = ru[qr].p;
                const size_t base = ru[qr].cls * L;
                for (ii = 0; ii < ru[qr].n; ++ii)
                    if (e[ii].v > 0.0f) {
                        const size_t q = fill[base + (size_t)e[ii].i]++;
                        t->ent[q].i = (int32_t)rr;
                        t->ent[q].v = e[ii].v;
                    }
            }
        }
    }
}

/* The rows of a batch that B3 takes as one block. A latent's entries
   gather one row of G each, d floats, from a batch-sized array: at B =
   1,024 and d = 384 a class of G is 1.5 MiB, and it does not stay in a
   core's L2 beside the chunk's rows of W_dec and dW_dec that stream past
   it. Taking a chunk's latents over rows [0, R), then [R, 2R), ... keeps a
   block of R rows (a quarter of the L2) there for all of the chunk's
   latents. Worth it only when a latent has entries enough in a block (8 on
   average: E / L of them in the batch, R / B of those in a block); with
   fewer the blocks only cut the four-entry steps short. Measured on a Xeon
   with 2 MiB of L2, 2 threads, blocks of 341 rows: MiniLM x4 (L 1,536, k
   128, B 1,024) 8-12% faster a step, x8 4% (its top-k class has 13 entries
   a latent and block); at d 768, L 24,576, B 512 (about 1.3 entries a
   latent of a class) blocks of 170 rows ran 4% slower, and this returns B.
   Each latent's entries are by row, so each sum keeps its order: same
   bits. Returns B for no blocks. */
static size_t lsae__bgrad_rows_for(size_t d, size_t B, size_t L, size_t E, size_t l2_bytes)
{
    const size_t l2 = l2_bytes ? l2_bytes : (size_t)1 << 20;
    size_t R = l2 / 4 / (d * sizeof(float) + 1);
    if (R < 32) R = 32;
    if (R >= B || E / L * R / B < 8) return B;
    return R;
}

/* The first q in [q0, q1) whose entry's row is >= r (entries by row). */
static size_t lsae__rows_below(const lsae__kv *ent, size_t q0, size_t q1, size_t r)
{
    while (q0 < q1 && (size_t)ent[q0].i < r) ++q0;
    return q0;
}

/* B3's step over entries ent[q0..q1) of one latent, one class cls of one
   batch (G that batch's output gradients, C d floats a row): for each,
   dpre = G_cls[row] . wd replaces its activation a, and gd += a G_cls[row];
   four entries at a time (wd and gd pass through registers once for four
   rows; same sums, same order), then one by one. */
static void lsae__dec_entries(lsae__kv *ent, size_t q0, size_t q1, const float *G, size_t C, size_t cls, size_t d, const float *wd, float *gd)
{
    size_t q = q0;
    for (; q + 4 <= q1; q += 4) {
        lsae__kv *e = ent + q;
        float a[4], dpre[4];
        a[0] = e[0].v; a[1] = e[1].v; a[2] = e[2].v; a[3] = e[3].v;
        lsae__dot4_axpy4(dpre, a, G + (size_t)e[0].i * C * d + cls * d, G + (size_t)e[1].i * C * d + cls * d,
                         G + (size_t)e[2].i * C * d + cls * d, G + (size_t)e[3].i * C * d + cls * d, wd, gd, d);
        e[0].v = dpre[0]; e[1].v = dpre[1]; e[2].v = dpre[2]; e[3].v = dpre[3];
    }
    for (; q < q1; ++q) ent[q].v = lsae__dot_axpy(G + (size_t)ent[q].i * C * d + cls * d, wd, gd, ent[q].v, d);
}

/* B4's step over entries ent[q0..q1) of one latent (their dpre from B3),
   rows of xc d floats apart: ge += dpre xc[row] and *sb += dpre, in entry
   order; eight entries a pass (two of four, the same chains), then four,
   then one. */
static void lsae__enc_entries(const lsae__kv *ent, size_t q0, size_t q1, const float *xc, size_t d, float *ge, float *sb)
{
    size_t q = q0;
    float s = *sb;
    for (; q + 8 <= q1; q += 8) {
        const float *xr[8];
        float a[8];
        size_t i;
        for (i = 0; i < 8; ++i) {
            xr[i] = xc + (size_t)ent[q + i].i * d;
            a[i] = ent[q + i].v;
        }
        lsae__axpy8(ge, a, xr, d);
        for (i = 0; i < 8; ++i) s += a[i];
    }
    for (; q + 4 <= q1; q += 4) {
        const lsae__kv *e = ent + q;
        const float a[4] = { e[0].v, e[1].v, e[2].v, e[3].v };
        lsae__axpy4(ge, a, xc + (size_t)e[0].i * d, xc + (size_t)e[1].i * d, xc + (size_t)e[2].i * d, xc + (size_t)e[3].i * d, d);
        s += a[0];
        s += a[1];
        s += a[2];
        s += a[3];
    }
    for (; q < q1; ++q) {
        lsae__axpy(ge, ent[q].v, xc + (size_t)ent[q].i * d, d);
        s += ent[q].v;
    }
    *sb = s;
}

/* The gradient rows of W_dec and W_enc are zeroed when a window first
   touches them, not by the optimizer step: Adam reads a row only where the
   window touched it (lsae__adam; an untouched row's gradient is 0) and
   leaves every row as it is. Where latents have few entries a batch (nomic
   x32 at one batch a step: a quarter of them have none) that is a quarter
   of the rows Adam no longer reads, and no pass writing zeros over both
   arrays (a fifth of its traffic) for B3-B4 to read back; a row's first
   touch zeroes it in cache instead. Readers of the whole array (the sum
   across ranks, lsae_trainer_get_grads) zero the untouched rows first
   (lsae__grads_dense). b_enc's and b_dec's gradients stay zeroed by Adam. */
#define LSAE__GT_DEC 1
#define LSAE__GT_ENC 2
static float *lsae__grad_row(lsae_trainer *t, size_t l, int which)
{
    const size_t d = t->m->d;
    float *g = t->grads + t->m->lay.offset[which == LSAE__GT_DEC ? LSAE__W_DEC : LSAE__W_ENC] + l * d;
    if (!(t->gtouch[l] & which)) {
        memset(g, 0, d * sizeof(float));
        t->gtouch[l] = (unsigned char)(t->gtouch[l] | which);
    }
    return g;
}

/* Every gradient row as the window's sum: the untouched ones zeroed */
static void lsae__grads_dense(lsae_trainer *t)
{
    ptrdiff_t pl;
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pl = 0; pl < (ptrdiff_t)t->m->L; ++pl) {
        (void)lsae__grad_row(t, (size_t)pl, LSAE__GT_DEC);
        (void)lsae__grad_row(t, (size_t)pl, LSAE__GT_ENC);
    }
}

/* B3. Decoder side, per latent l (no atomics: llm.c's rule, split by output
   index), class by class, for each entry (row b, activation a, g = G_class[b]):
      dpre        = g . W_dec[l]     (the gradient reaching pre[b, l]; kept in
                                      ent[].v in place of a, for B4)
      dW_dec[l]  += a g
   and then ||dW_dec[l]||^2 for the clip (grad_row_norm2[l][1]), while the row
   is in cache: a row no batch touched since has not changed. B3 and B4 are
   two passes so that each gathers rows from one batch-sized array that stays
   in a core's L2 (1.5 MiB at B = 512, d = 768) instead of three: this one G
   and W_dec, B4 xc and W_enc; where a class of G is larger than that, a
   chunk's latents take their entries a block of rows at a time
   (lsae__bgrad_rows_for). */
static void lsae__decoder_grads(lsae_trainer *t, size_t B, int dead_only)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, L = m->L, nchunks = (L + LSAE__BDEC_CHUNK - 1) / LSAE__BDEC_CHUNK;
    const size_t C = t->C;
    size_t cls;
    ptrdiff_t c;
    for (cls = 0; cls < C; ++cls) {
        const size_t *st = t->lat_start + cls * L, R = t->bgrad_rows ? t->bgrad_rows : lsae__bgrad_rows_for(d, B, L, st[L] - st[0], lsae__l2_bytes());
        if (st[L] == st[0]) continue;
        LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(t->nthreads))
        for (c = 0; c < (ptrdiff_t)nchunks; ++c) {
            const size_t l0 = (size_t)c * LSAE__BDEC_CHUNK, l1 = l0 + LSAE__BDEC_CHUNK < L ? l0 + LSAE__BDEC_CHUNK : L;
            size_t cur[LSAE__BDEC_CHUNK], r1 = 0, l;
            for (l = l0; l < l1; ++l) cur[l - l0] = st[l];
            do {
                r1 = r1 + R < B ? r1 + R : B;
                for (l = l0; l < l1; ++l) {
                    const float *wd = m->W_dec + l * d;
                    float *gd;
                    size_t q = cur[l - l0], qe;
                    if (dead_only && !lsae__latent_dead(t, l)) continue; /* held for the window's end */
                    qe = r1 == B ? st[l + 1] : lsae__rows_below(t->ent, q, st[l + 1], r1);
                    if (qe > q) {
                        gd = lsae__grad_row(t, l, LSAE__GT_DEC);
                        lsae__dec_entries(t->ent, q, qe, t->G, C, cls, d, wd, gd); /* dpre replaces a, for B4 */
                        cur[l - l0] = qe;
                    }
                    /* the last block: the row is done, and still in cache */
                    if (r1 == B && st[l + 1] > st[l]) {
                        gd = t->grads + m->lay.offset[LSAE__W_DEC] + l * d;
                        t->grad_row_norm2[2 * l + 1] = lsae__dot(gd, gd, d);
                    }
                }
            } while (r1 < B);
        }
    }
}

/* B4. Encoder side, per latent l, over its entries of all three classes in
   order (dpre from B3):
      dW_enc[l] += dpre xc[b],   db_enc[l] += dpre
   and ||dW_enc[l]||^2 for the clip (grad_row_norm2[l][0]).
   The gradient reaching the encoder input, dxc[b] = sum over b's entries of
   dpre W_enc[l], is only needed summed over rows (for b_dec), and
   sum_b dxc[b] = W_enc^T db_enc: W_enc is the same for every batch of a
   window, so U1 takes that product once per optimizer step. */
static void lsae__encoder_grads(lsae_trainer *t, int dead_only)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, L = m->L, nchunks = (L + LSAE__BDEC_CHUNK - 1) / LSAE__BDEC_CHUNK;
    float *gb_enc = t->grads + m->lay.offset[LSAE__B_ENC];
    ptrdiff_t c;
    LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(t->nthreads))
    for (c = 0; c < (ptrdiff_t)nchunks; ++c) {
        size_t l, l1 = ((size_t)c + 1) * LSAE__BDEC_CHUNK < L ? ((size_t)c + 1) * LSAE__BDEC_CHUNK : L;
        for (l = (size_t)c * LSAE__BDEC_CHUNK; l < l1; ++l) {
            float *ge, sb = 0.0f;
            size_t cls, n = 0;
            if (dead_only && !lsae__latent_dead(t, l)) continue; /* held for the window's end */
            for (cls = 0; cls < t->C; ++cls) n += t->lat_start[cls * L + l + 1] - t->lat_start[cls * L + l];
            if (!n) continue;
            ge = lsae__grad_row(t, l, LSAE__GT_ENC);
            for (cls = 0; cls < t->C; ++cls) lsae__enc_entries(t->ent, t->lat_start[cls * L + l], t->lat_start[cls * L + l + 1], t->xc, d, ge, &sb);
            gb_enc[l] += sb;
            t->grad_row_norm2[2 * l] = lsae__dot(ge, ge, d);
        }
    }
}

/* The held batches' B3-B4 for the live latents (lsae__window_slots), at
   the window's end (apply; get_grads; a full set of slots; storage about to
   be regrown). Each live latent l in turn, its rows of W_dec, dW_dec and
   dW_enc in cache throughout:
      B3  for each held batch in order, each class in order, each entry
          (row b, activation a) by row:  dpre = G_c[b] . W_dec[l],
          dW_dec[l] += a G_c[b]  (dpre kept in the entry)
      B4  for each held batch in order: its entries in the same order,
          dW_enc[l] += dpre xc[b], sb += dpre; then db_enc[l] += sb
   and the two squared row norms of the final rows. A latent's entries meet
   its rows in the order B3-B4 would have taken them batch by batch (a
   batch's classes, rows in each; the batches in turn), with the same
   kernels, so every sum, and the trained weights, have the same bits.
   Dead latents took theirs with their batch (their many AuxK entries read
   G and xc from the batch's own arrays while those are in cache). */
static void lsae__window_grads(lsae_trainer *t)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, L = m->L, C = t->C, ns = t->ndef, nlat = C * L + 1, nchunks = (L + LSAE__BDEC_CHUNK - 1) / LSAE__BDEC_CHUNK;
    const size_t gstride = t->cap * C * d, xstride = t->cap * d, estride = t->cap * t->E;
    float *gb_enc = t->grads + m->lay.offset[LSAE__B_ENC];
    ptrdiff_t c;
    if (!ns) return;
    LSAE__OMP(parallel for schedule(dynamic, 1) num_threads(t->nthreads))
    for (c = 0; c < (ptrdiff_t)nchunks; ++c) {
        const size_t l0 = (size_t)c * LSAE__BDEC_CHUNK, l1 = l0 + LSAE__BDEC_CHUNK < L ? l0 + LSAE__BDEC_CHUNK : L;
        size_t l;
        for (l = l0; l < l1; ++l) {
            const float *wd = m->W_dec + l * d;
            float *gd, *ge;
            size_t w, cls, q, touched = 0;
            if (lsae__latent_dead(t, l)) continue;
            for (w = 0; w < ns; ++w)
                for (cls = 0; cls < C; ++cls) touched += t->lat_all[w * nlat + cls * L + l + 1] - t->lat_all[w * nlat + cls * L + l];
            if (!touched) continue;
            gd = lsae__grad_row(t, l, LSAE__GT_DEC);
            ge = lsae__grad_row(t, l, LSAE__GT_ENC);
            for (w = 0; w < ns; ++w) {
                const size_t *st = t->lat_all + w * nlat;
                const float *G = t->G_all + w * gstride;
                lsae__kv *ent = t->ent_all + w * estride;
                for (cls = 0; cls < C; ++cls) {
                    const size_t qe = st[cls * L + l + 1];
                    q = st[cls * L + l];
                    lsae__dec_entries(ent, q, qe, G, C, cls, d, wd, gd);
                }
            }
            t->grad_row_norm2[2 * l + 1] = lsae__dot(gd, gd, d);
            for (w = 0; w < ns; ++w) {
                const size_t *st = t->lat_all + w * nlat;
                const float *xc = t->xc_all + w * xstride;
                const lsae__kv *ent = t->ent_all + w * estride;
                float sb = 0.0f;
                size_t n = 0;
                for (cls = 0; cls < C; ++cls) {
                    const size_t qe = st[cls * L + l + 1];
                    q = st[cls * L + l];
                    n += qe - q;
                    lsae__enc_entries(ent, q, qe, xc, d, ge, &sb);
                }
                if (n) gb_enc[l] += sb;
            }
            t->grad_row_norm2[2 * l] = lsae__dot(ge, ge, d);
        }
    }
    t->ndef = 0;
    lsae__use_slot(t, 0);
}

/* B5. b_dec, the decoder-output side: db_dec += sum_b G0[b] (x_hat = ... +
   b_dec; for the nested form G0 is band 1's class, the sum of every level's
   output gradient; per-level: sum_b sum_j G_j[b], every level's output has
   b_dec). The encoder-input side (x - b_dec) is U1. Each dimension's sum
   runs over the rows in order (and a row's levels in order), in float; the
   rows are read across, LSAE__TV_COLS dimensions at a time, as in F2, so
   that many sums advance together instead of one chain down a column. */
static void lsae__b_dec_grad_output(lsae_trainer *t, const lsae__batch *b)
{
    const size_t d = t->m->d, C = t->C, nsum = t->kind == LSAE__KIND_PERLEVEL ? t->nlev : 1,
                 nblk = (d + LSAE__TV_COLS - 1) / LSAE__TV_COLS;
    float *gb_dec = t->grads + t->m->lay.offset[LSAE__B_DEC];
    ptrdiff_t pk;
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pk = 0; pk < (ptrdiff_t)nblk; ++pk) {
        const size_t j0 = (size_t)pk * LSAE__TV_COLS, n = d - j0 < LSAE__TV_COLS ? d - j0 : LSAE__TV_COLS;
        float s_out[LSAE__TV_COLS];
        size_t row, j, c = 0;
#if defined(LSAE__AVX2)
        if (n == LSAE__TV_COLS) {
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
            for (row = 0; row < b->B; ++row)
                for (j = 0; j < nsum; ++j) {
                    const float *g = t->G + row * C * d + j * d + j0;
                    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(g));
                    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(g + 8));
                    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(g + 16));
                    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(g + 24));
                }
            _mm256_storeu_ps(s_out, a0);
            _mm256_storeu_ps(s_out + 8, a1);
            _mm256_storeu_ps(s_out + 16, a2);
            _mm256_storeu_ps(s_out + 24, a3);
            c = n;
        }
#endif
        if (c < n) {
            for (c = 0; c < n; ++c) s_out[c] = 0.0f;
            for (row = 0; row < b->B; ++row)
                for (j = 0; j < nsum; ++j) {
                    const float *g = t->G + row * C * d + j * d + j0;
                    for (c = 0; c < n; ++c) s_out[c] += g[c];
                }
        }
        for (c = 0; c < n; ++c) gb_dec[j0 + c] += s_out[c];
    }
}

/* B6. A latent fired when it was in some row's top k, whatever its value
   (as latent-sae and sparsify count it): not the 4k tail, not AuxK. The
   other types: every kept entry (per-level: the last level's). U4 turns
   these flags into the dead-latent counters. */
static void lsae__mark_fired(lsae_trainer *t, const lsae__batch *b)
{
    /* the classes that are kept entries: TopK's top k, the nested form's
       bands (BatchTopK's one), the per-level form's last level */
    const size_t c0 = t->kind == LSAE__KIND_PERLEVEL ? t->nlev - 1 : 0,
                 c1 = t->kind == LSAE__KIND_TOPK ? 1 : t->nlev;
    size_t r, i, q;
    for (r = 0; r < b->B; ++r) {
        const lsae__run *ru = t->runs + r * LSAE__RUNS;
        for (q = 0; q < t->nruns[r]; ++q)
            if (ru[q].cls >= c0 && ru[q].cls < c1)
                for (i = 0; i < ru[q].n; ++i) t->did_fire[ru[q].p[i].i] = 1;
    }
    t->micro++;
    t->rows_in_window += b->Bg;   /* every rank counts the global batch: the counters stay the same everywhere */
}

/* ------------------------------------------------------------------------
   Latent-sharded training (lsae_trainer_set_shard_comm; docs/math.md 2.14).
   S ranks hold the latents [l0, l0 + L) of Lg each and see the same rows.
   F1-F3 need no exchange (every rank has the batch and computes the same
   TV and b_dec). F4 is exact: each rank's best Ksel of a row (and its best
   ka among its dead latents) are the only latents that can be in the
   global best Ksel (ka) of the row, because the order on candidates
   (value descending, then global index) is total; so the global pick is
   the best Ksel of the S Ksel candidates, and every rank makes the same
   pick from the same gathered lists. A rank decodes only the picks it
   holds; x_hat is b_dec plus the sum over ranks of those partial decodes
   (F5-F6), after which every rank holds the same residuals, loss and
   output gradients G (B1), and B2-B6 touch only its own rows. The global
   sums of U1 (W_enc^T db_enc, over all latents), U2 (the squared gradient
   norm) and the dead counts are summed across the shards.
   ------------------------------------------------------------------------ */

static lsae_result lsae__shard_fail(lsae_trainer *t, lsae_result r, const char *what)
{
    t->comm_failed = 1;
    return lsae__err(r == LSAE_OK ? LSAE_ERROR : r, "exchanging %s across %d latent shards failed (%s); the ranks may disagree now: restart from the last checkpoint",
                     what, t->scomm.size, lsae_result_string(r));
}

/* The exchange buffers for B rows of W candidate slots */
static lsae_result lsae__shard_reserve(lsae_trainer *t, size_t B, size_t W)
{
    const size_t S = (size_t)t->scomm.size, per = t->K > t->KA ? t->K : t->KA;
    size_t need;
    if (!lsae__mul_size(B, W, &need)) return lsae__err(LSAE_INVALID_ARGS, "a batch of %zu rows with %zu candidates each is too large to address", B, W);
    if (!t->sh_own && !(t->sh_own = (lsae__kv *)lsae__alloc_array(t->alloc, t->cap, (t->K + t->KA) * sizeof(lsae__kv), "shard picks"))) return LSAE_OUT_OF_MEMORY;
    if (!t->sh_scr && !(t->sh_scr = (lsae__kv *)lsae__alloc_array(t->alloc, (size_t)t->nthreads * 4 * S, per * sizeof(lsae__kv), "shard merge scratch"))) return LSAE_OUT_OF_MEMORY;
    if (need <= t->shard_cap) return LSAE_OK;
    lsae__free(t->alloc, t->sh_send);
    lsae__free(t->alloc, t->sh_recv);
    t->sh_recv = NULL;
    t->shard_cap = 0;
    if (!(t->sh_send = (lsae__kv *)lsae__alloc_array(t->alloc, need, sizeof(lsae__kv), "shard candidates")) ||
        !(t->sh_recv = (lsae__kv *)lsae__alloc_array(t->alloc, need, S * sizeof(lsae__kv), "every shard's candidates")))
        return LSAE_OUT_OF_MEMORY;
    t->shard_cap = need;
    return LSAE_OK;
}

/* F4, sharded. The dead count and TV are gathered first (every rank must
   have been given the same batch: its TV must be rank 0's, bit for bit);
   then each rank's candidates per row, W = Ksel + ka slots: its best
   min(Ksel, L) with global indices, then its best min(ka, its dead) among
   its dead latents, the unused slots holding value -1 (below every
   activation, which is >= 0). The global pick of a row is the best Ksel of
   the gathered top slots (lsae__sort_best: value descending, then index)
   and the best ka of the gathered AuxK slots, put in index order, exactly
   the lists one process would select. The picks held here then become the
   row's three runs with local indices. */
static lsae_result lsae__shard_select(lsae_trainer *t, lsae__batch *b)
{
    lsae_model *m = t->m;
    const size_t d = m->d, L = m->L, Lg = t->Lg, l0 = t->l0, B = b->B, S = (size_t)t->scomm.size;
    size_t nd_local, Kl, kal, W, r, q;
    ptrdiff_t pr;
    lsae_result res;
    /* the dead set (this shard's bits) and the global dead count */
    nd_local = lsae__find_dead(t);
    t->sh_hdr[0] = b->TV;
    t->sh_hdr[1] = (double)nd_local;
    if ((res = t->scomm.allgather(t->scomm.ctx, t->sh_hdr, 2 * sizeof(double), t->sh_hdr + 2)) != LSAE_OK)
        return lsae__shard_fail(t, res, "the dead counts");
    b->n_dead = 0;
    for (q = 0; q < S; ++q) {
        if (memcmp(&t->sh_hdr[2 + 2 * q], &t->sh_hdr[2], sizeof(double)) != 0) {
            t->comm_failed = 1;
            return lsae__err(LSAE_INVALID_ARGS, "latent shard %zu was given another batch than shard 0 (total variance %.17g against %.17g): every rank of a latent-sharded run "
                             "must pass the same rows; restart from the last checkpoint", q, t->sh_hdr[2 + 2 * q], t->sh_hdr[2]);
        }
        b->n_dead += (size_t)t->sh_hdr[2 + 2 * q + 1];
    }
    if (t->cfg.auxk_alpha > 0.0) {
        b->ka = d / 2 < b->n_dead ? d / 2 : b->n_dead;
        b->auxk_scale = d / 2 ? (double)b->n_dead / (double)(d / 2) : 0.0;
        if (b->auxk_scale > 1.0) b->auxk_scale = 1.0;
    }
    b->k = lsae__k_at_step(&t->cfg, Lg, t->step);
    b->Ksel = t->cfg.multi_topk ? (4 * b->k < Lg ? 4 * b->k : Lg) : b->k;
    Kl = b->Ksel < L ? b->Ksel : L;
    kal = b->ka < nd_local ? b->ka : nd_local;
    W = b->Ksel + b->ka;
    if ((res = lsae__shard_reserve(t, B, W)) != LSAE_OK) return res;
    lsae__center(t->xc, t->x_rows, m->b_dec, B, d, t->nthreads);
    for (r = 0; r < B; r += t->sws.rows_cap) {
        size_t R = B - r < t->sws.rows_cap ? B - r : t->sws.rows_cap;
        lsae__select(m, t->xc + r * d, R, Kl, t->top + r * t->K, kal ? t->dead_bits : NULL, kal, t->aux + r * t->KA, &t->sws);
    }
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pr = 0; pr < (ptrdiff_t)B; ++pr) {
        const size_t row = (size_t)pr;
        lsae__kv *out = t->sh_send + row * W;
        size_t i;
        for (i = 0; i < b->Ksel; ++i) {
            out[i].v = i < Kl ? t->top[row * t->K + i].v : -1.0f;
            out[i].i = i < Kl ? t->top[row * t->K + i].i + (int32_t)l0 : 0;
        }
        for (i = 0; i < b->ka; ++i) {
            out[b->Ksel + i].v = i < kal ? t->aux[row * t->KA + i].v : -1.0f;
            out[b->Ksel + i].i = i < kal ? t->aux[row * t->KA + i].i + (int32_t)l0 : 0;
        }
    }
    if ((res = t->scomm.allgather(t->scomm.ctx, t->sh_send, B * W * sizeof(lsae__kv), t->sh_recv)) != LSAE_OK)
        return lsae__shard_fail(t, res, "the candidates");
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pr = 0; pr < (ptrdiff_t)B; ++pr) {
        const size_t row = (size_t)pr, per = t->K > t->KA ? t->K : t->KA;
        lsae__kv *scr = t->sh_scr + (size_t)lsae__thread_id() * 4 * S * per, *tmp = scr + 2 * S * per;
        lsae__kv *own = t->sh_own + row * (t->K + t->KA), *top = t->top + row * t->K, *aux = t->aux + row * t->KA;
        lsae__run *ru = t->runs + row * LSAE__RUNS;
        size_t n, i, s, c, start;
        /* the global top Ksel, then the global ka of the dead, in index order */
        for (n = 0, s = 0; s < S; ++s)
            for (i = 0; i < b->Ksel; ++i) {
                const lsae__kv e = t->sh_recv[(s * B + row) * W + i];
                if (e.v >= 0.0f) scr[n++] = e;
            }
        lsae__sort_best(scr, n, tmp, Lg);
        memcpy(top, scr, b->Ksel * sizeof(lsae__kv));
        if (b->ka) {
            for (n = 0, s = 0; s < S; ++s)
                for (i = 0; i < b->ka; ++i) {
                    const lsae__kv e = t->sh_recv[(s * B + row) * W + b->Ksel + i];
                    if (e.v >= 0.0f) scr[n++] = e;
                }
            lsae__sort_best(scr, n, tmp, Lg);
            memcpy(aux, scr, b->ka * sizeof(lsae__kv));
            lsae__sort_index(aux, b->ka, tmp, Lg);
        }
        /* the picks held here, local indices: top k, the 4k tail, AuxK */
        for (c = 0, n = 0; c < 3; ++c) {
            const lsae__kv *src = c == 0 ? top : c == 1 ? top + b->k : aux;
            const size_t cnt = c == 0 ? b->k : c == 1 ? b->Ksel - b->k : b->ka;
            start = n;
            for (i = 0; i < cnt; ++i)
                if ((size_t)src[i].i >= l0 && (size_t)src[i].i < l0 + L) {
                    own[n].v = src[i].v;
                    own[n++].i = src[i].i - (int32_t)l0;
                }
            ru[c].p = own + start;
            ru[c].n = n - start;
            ru[c].cls = c;
        }
        t->nruns[row] = 3;
    }
    return LSAE_OK;
}

/* F5-F6, sharded: each rank decodes the picks it holds, per row and class,
   into G [B, 3, d] (no b_dec); the three partial sums are summed across
   the shards (rank order); then as lsae__decode_residuals and
   lsae__auxk_decode:
      x_hat = b_dec + P0,  e = x - x_hat,  x_hat4 = x_hat + P1,  e4 = x - x_hat4,
      e_hat = P2,  G2 = e_hat - e,  row_sse as there. */
static lsae_result lsae__shard_decode(lsae_trainer *t, const lsae__batch *b)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, B = b->B;
    size_t cls[3], nc = 0, row, ci;
    ptrdiff_t pr;
    lsae_result res;
    /* only the classes in use this batch are summed (the 4k tail with
       multi_topk, AuxK with dead latents), packed at the front of G as
       [B, nc, d]; then moved to their places in [B, 3, d], from the last
       row down (a packed block never lies above its place, so no block is
       overwritten before it is moved) */
    cls[nc++] = 0;
    if (b->Ksel > b->k) cls[nc++] = 1;
    if (b->ka) cls[nc++] = 2;
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pr = 0; pr < (ptrdiff_t)B; ++pr) {
        const lsae__run *ru = t->runs + (size_t)pr * LSAE__RUNS;
        float *g = t->G + (size_t)pr * nc * d;
        size_t c;
        memset(g, 0, nc * d * sizeof(float));
        for (c = 0; c < nc; ++c) lsae__decode_into(g + c * d, ru[cls[c]].p, ru[cls[c]].n, m->W_dec, d);
    }
    if ((res = t->scomm.sum_f32(t->scomm.ctx, t->G, B * nc * d)) != LSAE_OK) return lsae__shard_fail(t, res, "the partial reconstructions");
    for (row = B; row-- > 0;) {
        int used[3] = { 0, 0, 0 };
        for (ci = nc; ci-- > 0;) {
            memmove(t->G + (row * 3 + cls[ci]) * d, t->G + (row * nc + ci) * d, d * sizeof(float));
            used[cls[ci]] = 1;
        }
        for (ci = 1; ci < 3; ++ci)   /* a class not in use holds zeros, as in one process */
            if (!used[ci]) memset(t->G + (row * 3 + ci) * d, 0, d * sizeof(float));
    }
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pr = 0; pr < (ptrdiff_t)B; ++pr) {
        const size_t row = (size_t)pr;
        const float *xb = t->x_rows + row * d;
        float *g0 = t->G + row * 3 * d, *g1 = g0 + d, *g2 = g1 + d;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0;
        size_t j;
        for (j = 0; j < d; ++j) g0[j] = m->b_dec[j] + g0[j];
        if (b->Ksel > b->k)
            for (j = 0; j < d; ++j) {
                g1[j] = xb[j] - (g0[j] + g1[j]);
                s1 += (double)g1[j] * g1[j];
            }
        for (j = 0; j < d; ++j) {
            g0[j] = xb[j] - g0[j];
            s0 += (double)g0[j] * g0[j];
        }
        if (b->ka)
            for (j = 0; j < d; ++j) {
                g2[j] -= g0[j];
                s2 += (double)g2[j] * g2[j];
            }
        t->row_sse[3 * row] = s0;
        t->row_sse[3 * row + 1] = s1;
        t->row_sse[3 * row + 2] = s2;
    }
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_trainer_accumulate(lsae_trainer *t, const float *x, size_t rows, lsae_step_stats *stats)
{
    lsae__batch b;
    lsae_result r;
    if (!t) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_accumulate: trainer is NULL");
#ifdef LATENTSAE_CUDA
    if (t->cuda) return lsae__cuda_trainer_accumulate(t->cuda, x, rows, stats, 0);
#endif
    if (t->poisoned) return lsae__err(LSAE_NOT_FINITE, "training stopped earlier on a non-finite loss or gradient; reload the last good checkpoint and lower the learning rate");
    if (t->comm_failed) return lsae__err(LSAE_ERROR, "training stopped earlier when a sum across ranks failed; restart from the last checkpoint");
    if (t->m->shard_L && !t->shard)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_accumulate: the model holds latents [%zu, %zu) of %zu: set the shard communicator (lsae_trainer_set_shard_comm) first",
                         t->m->shard_l0, t->m->shard_l0 + t->m->L, t->m->shard_L);
    if (!x && rows) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_accumulate: x is NULL");
    if ((r = lsae__trainer_reserve(t, rows < 2 ? 2 : rows)) != LSAE_OK) return r;
    if (t->nslots > 1) {
        /* the next free slot: all held, the held ones' work is done first */
        if (t->ndef == t->nslots) lsae__window_grads(t);
        lsae__use_slot(t, t->ndef);
    }
    lsae__trainer_free_ext(t);
    memset(&b, 0, sizeof b);
    /* forward */
    if ((r = lsae__keep_finite_rows(t, x, rows, &b)) != LSAE_OK) return r;  /* F1 */
    if ((r = lsae__total_variance(t, &b)) != LSAE_OK) return r;             /* F2 */
    if ((r = lsae__init_b_dec(t, &b)) != LSAE_OK) return r;                 /* F3 */
    if (t->shard) {                                                         /* F4-F6 over the latent shards */
        if ((r = lsae__shard_select(t, &b)) != LSAE_OK) return r;
        if ((r = lsae__shard_decode(t, &b)) != LSAE_OK) return r;
    } else {
        if ((r = lsae__encode_select(t, &b)) != LSAE_OK) return r;          /* F4 */
        if (t->kind == LSAE__KIND_TOPK) lsae__decode_residuals(t, &b);      /* F5 */
        else lsae__decode_levels(t, &b);
        lsae__auxk_decode(t, &b);                                           /* F6 */
    }
    if ((r = lsae__loss(t, &b)) != LSAE_OK) return r;                       /* F7 */
    /* backward: adds into the gradients of the window */
    lsae__output_grads(t, &b);                                              /* B1 */
    lsae__sort_entries(t, &b);                                              /* B2 */
    lsae__decoder_grads(t, b.B, t->nslots > 1);                             /* B3 */
    lsae__encoder_grads(t, t->nslots > 1);                                  /* B4 */
    lsae__b_dec_grad_output(t, &b);                                         /* B5 */
    lsae__mark_fired(t, &b);                                                /* B6 */
    if (t->nslots > 1) t->ndef++; /* this batch's live latents: at the window's end */
    /* the threshold moves once per batch, after the pick (3.1); a batch
       refused above leaves it as it was */
    if (b.has_tau) lsae__theta_step(t, b.tau);
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->fvu = b.fvu;
        stats->auxk = b.auxk;
        stats->multi_topk_fvu = b.fvu4;
        stats->loss = b.loss;
        stats->n_dead = b.n_dead;
        stats->dead_fraction = (double)b.n_dead / (double)t->Lg;
        stats->lr = t->lr_base * lsae_lr_factor(&t->cfg, t->step);
        stats->rows_used = b.Bg;        /* the global batch's, in a data-parallel run */
        stats->rows_dropped = b.dropped_g;
        stats->step = t->step;
        stats->stepped = 0;
        stats->k = b.k;
        stats->batchtopk_threshold = b.has_tau ? t->m->batchtopk_threshold : 0.0f;
        stats->levels = t->kind == LSAE__KIND_TOPK || t->cfg.sae_type == LSAE_SAE_BATCHTOPK ? 0 : t->nlev;
        if (stats->levels) memcpy(stats->level_fvu, b.lev_fvu, t->nlev * sizeof(double));
        stats->rows_enlarged = b.enlarged;
    }
    return LSAE_OK;
}

/* U0 (data-parallel runs only). The window's gradient is the sum of the
   ranks' gradients (each rank's is of the global loss: its rows' terms,
   divided by the global TV), so the four tensors are summed across ranks, in
   rank order, before U1 needs db_enc; a latent fired in the window when it
   fired on any rank (the 0/1 flags summed, then > 0). The squared row norms
   B3-B4 kept are of this rank's part only: they are taken again from the
   summed rows, every row (an untouched row is 0, as it is in one process,
   and a touched row's norm is of its final value, as B3-B4 leave it). After
   this every rank holds the same gradient and flags, so U1-U4 take the same
   step everywhere and the weights, Adam's moments and the dead-latent
   counters never need sending. */
static lsae_result lsae__comm_window(lsae_trainer *t)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, L = m->L;
    const float *gW_enc = t->grads + m->lay.offset[LSAE__W_ENC], *gW_dec = t->grads + m->lay.offset[LSAE__W_DEC];
    lsae_result r;
    ptrdiff_t pl;
    size_t l;
    lsae__grads_dense(t); /* every rank's rows in full, the untouched ones 0 */
    if ((r = lsae__comm_sum32(t, t->grads, m->lay.total, "the gradients")) != LSAE_OK) return r;
    for (l = 0; l < L; ++l) t->fire_buf[l] = t->did_fire[l] ? 1.0f : 0.0f;
    if ((r = lsae__comm_sum32(t, t->fire_buf, L, "the fired flags")) != LSAE_OK) return r;
    for (l = 0; l < L; ++l) t->did_fire[l] = t->fire_buf[l] > 0.0f;
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (pl = 0; pl < (ptrdiff_t)L; ++pl) {
        const float *ge = gW_enc + (size_t)pl * d, *gd = gW_dec + (size_t)pl * d;
        t->grad_row_norm2[2 * (size_t)pl] = lsae__dot(ge, ge, d);
        t->grad_row_norm2[2 * (size_t)pl + 1] = lsae__dot(gd, gd, d);
    }
    return LSAE_OK;
}

/* U1. b_dec, the encoder-input side, for the whole window:
      db_dec -= W_enc^T db_enc           (out [d], part [chunks, d] scratch)
   (B4 explains why this is the sum over rows of the gradient reaching
   x - b_dec). The latent sums go into fixed chunks of LSAE__BDEC_CHUNK
   latents, then the chunks are added in order: the same for any thread
   count. Also used by lsae_trainer_get_grads mid-window. */
static void lsae__b_dec_grad_input(const lsae_trainer *t, float *out, float *part)
{
    const lsae_model *m = t->m;
    const size_t d = m->d, L = m->L, nchunks = (L + LSAE__BDEC_CHUNK - 1) / LSAE__BDEC_CHUNK;
    const float *gb_enc = t->grads + m->lay.offset[LSAE__B_ENC];
    ptrdiff_t c;
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (c = 0; c < (ptrdiff_t)nchunks; ++c) {
        float *p = part + (size_t)c * d;
        size_t l, l1 = ((size_t)c + 1) * LSAE__BDEC_CHUNK < L ? ((size_t)c + 1) * LSAE__BDEC_CHUNK : L;
        memset(p, 0, d * sizeof(float));
        for (l = (size_t)c * LSAE__BDEC_CHUNK; l < l1; ++l)
            if (gb_enc[l] != 0.0f) lsae__axpy(p, gb_enc[l], m->W_enc + l * d, d);
    }
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads))
    for (c = 0; c < (ptrdiff_t)d; ++c) {
        float s = 0.0f;
        size_t q;
        for (q = 0; q < nchunks; ++q) s += part[q * d + (size_t)c];
        out[c] -= s;
    }
}

/* U2. The global gradient norm and the clip factor, as
   torch.nn.utils.clip_grad_norm_(params, 1.0):
      n = sqrt(sum of every g^2),  clip = min(1 / (n + 1e-6), 1)
   The rows of W_enc and W_dec come from the squared norms B3-B4 kept as they
   updated them, added in latent order; the biases directly. A non-finite n
   stops the trainer with the weights as they were. */
static lsae_result lsae__clip(lsae_trainer *t, double *norm, float *clip)
{
    const lsae_model *m = t->m;
    const float *gb_enc = t->grads + m->lay.offset[LSAE__B_ENC], *gb_dec = t->grads + m->lay.offset[LSAE__B_DEC];
    double norm2 = 0.0;
    size_t c;
    for (c = 0; c < 2 * m->L; ++c) norm2 += t->grad_row_norm2[c];
    if (t->shard) {
        /* this shard's rows and b_enc, summed over the shards; b_dec (the
           same on every shard) once */
        lsae_result r;
        norm2 += (double)lsae__dot(gb_enc, gb_enc, m->L);
        if ((r = t->scomm.sum_f64(t->scomm.ctx, &norm2, 1)) != LSAE_OK) return lsae__shard_fail(t, r, "the gradient norm");
        norm2 += (double)lsae__dot(gb_dec, gb_dec, m->d);
    } else
        norm2 += (double)lsae__dot(gb_enc, gb_enc, m->L) + (double)lsae__dot(gb_dec, gb_dec, m->d);
    *norm = sqrt(norm2);
    if (!isfinite(*norm)) {
        t->poisoned = 1;
        return lsae__err(LSAE_NOT_FINITE, "gradient norm is %g at optimizer step %llu; weights left as they were. Lower the learning rate and resume from the last good checkpoint",
                         *norm, (unsigned long long)(t->step + 1));
    }
    *clip = 1.0 / (*norm + 1e-6) < 1.0 ? (float)(1.0 / (*norm + 1e-6)) : 1.0f;
    return LSAE_OK;
}

/* floats per unit of work in the element-wise Adam pass */
#define LSAE__ADAM_CHUNK 16384

/* U3. Adam at learning rate lr, torch.optim.Adam (no weight decay, not
   amsgrad) at step s = step + 1 (lsae__adam_span has the update), on the
   clipped gradient clip * g. For a W_dec row w (normalize_decoder) the
   gradient first loses its component along the unit row, g -= (g . w) w,
   and the row is renormalised after the update, w / (||w|| + FLT_EPSILON).
   The pass zeroes the biases' gradients for the next window and clears
   the row flags (the next window zeroes the weight rows it touches,
   lsae__grad_row). Returns nonzero when a weight became NaN or Inf. */
static int lsae__adam(lsae_trainer *t, float clip, double lr)
{
    lsae_model *m = t->m;
    const size_t d = m->d, L = m->L;
    const double bc1 = 1.0 - pow(0.9, (double)(t->step + 1)), bc2 = 1.0 - pow(0.999, (double)(t->step + 1));
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float *P = m->params, *G = t->grads, *M1 = t->adam_m, *M2 = t->adam_v;
    const size_t wenc0 = m->lay.offset[LSAE__W_ENC], benc0 = m->lay.offset[LSAE__B_ENC];
    const size_t wdec0 = m->lay.offset[LSAE__W_DEC], wdec1 = m->lay.offset[LSAE__B_DEC];
    const int normalize = m->cfg.normalize_decoder;
    /* The trainer's int8 copy of W_enc (the pre-pass selection's) is
       refilled here when the last batch used it and it was current: a
       full model's rows */
    const int refill = t->lpq.wq && t->lpq.L == L && t->lpq.d == d && t->lpq_gen == m->wgen;
    /* W_enc a block of whole rows at a time (each row then quantised into
       the int8 copy while it is in cache, where it is refilled: a separate
       lsae__lp_fill reads all of W_enc back from memory; at 768 x 24,576 on
       2 cores Adam took 29 ms and that fill 7 ms, Adam with the refill
       takes 34 ms). Adam is element-wise, so any split gives the same
       bits. A row the window never touched has gradient 0: it is updated
       from zeros (t->zero_row) without reading its row of G. */
    const size_t rows_per = LSAE__ADAM_CHUNK / d ? LSAE__ADAM_CHUNK / d : 1, nblk = (L + rows_per - 1) / rows_per;
    const double gq = lsae__gamma(d);
    float bad = 0.0f;
    ptrdiff_t pc, row;
    t->state_zero = 0;
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads) reduction(+:bad))
    for (pc = 0; pc < (ptrdiff_t)nblk; ++pc) {
        const size_t r0 = (size_t)pc * rows_per, r1 = L - r0 < rows_per ? L : r0 + rows_per;
        size_t l;
        for (l = r0; l < r1; ++l) {
            const size_t i0 = wenc0 + l * d;
            const int touched = (t->gtouch[l] & LSAE__GT_ENC) != 0;
            bad += lsae__adam_span(P + i0, touched ? G + i0 : t->zero_row, M1 + i0, M2 + i0, d, clip, step_size, bc2_sqrt, 0);
            if (refill) lsae__lp_fill_row(&t->lpq, m->W_enc, l, gq);
        }
    }
    /* b_enc, then b_dec (their gradients zeroed as they go) */
    bad += lsae__adam_span(P + benc0, G + benc0, M1 + benc0, M2 + benc0, L, clip, step_size, bc2_sqrt, 1);
    bad += lsae__adam_span(P + wdec1, G + wdec1, M1 + wdec1, M2 + wdec1, m->lay.total - wdec1, clip, step_size, bc2_sqrt, 1);
    /* W_dec, one row at a time: clip, project, Adam, renormalise (a row
       the window never touched: g = 0 throughout, the same bits as a row
       of zeros through the same steps) */
    LSAE__OMP(parallel for schedule(static) num_threads(t->nthreads) reduction(+:bad))
    for (row = 0; row < (ptrdiff_t)L; ++row) {
        size_t base = wdec0 + (size_t)row * d;
        float *p = P + base, *g = G + base;
        if (t->gtouch[row] & LSAE__GT_DEC) {
            lsae__scale(g, clip, d);
            if (normalize) lsae__axpy(g, -lsae__dot(g, p, d), p, d);
        } else
            g = t->zero_row;
        bad += lsae__adam_span(p, g, M1 + base, M2 + base, d, 1.0f, step_size, bc2_sqrt, 0);
        if (normalize) {
            float ss = lsae__dot(p, p, d);
            lsae__scale(p, (float)(1.0 / (sqrt((double)ss) + FLT_EPSILON)), d);
            bad += lsae__dot(p, p, d) * 0.0f; /* NaN if the row is */
        }
    }
    memset(t->gtouch, 0, L); /* the next window zeroes the rows it touches */
    m->wgen++; /* W_enc moved: the int8 copy of it is stale */
    if (refill && bad == 0.0f) t->lpq_gen = m->wgen; /* except the trainer's, refilled above */
    return !(bad == 0.0f);
}

/* U4. Dead-latent bookkeeping: every latent's rows-since-fired grows by the
   rows of the window; those that fired (B6) restart at 0. Then the window
   closes: one more optimizer step. Returns the dead count after it. */
static size_t lsae__dead_counters(lsae_trainer *t)
{
    const size_t L = t->m->L;
    size_t l, n_dead = 0;
    for (l = 0; l < L; ++l) {
        t->since_fired[l] = t->did_fire[l] ? 0 : t->since_fired[l] + t->rows_in_window;
        t->did_fire[l] = 0;
        n_dead += t->since_fired[l] > t->cfg.dead_feature_threshold;
    }
    memset(t->grad_row_norm2, 0, 2 * L * sizeof(float));
    t->micro = 0;
    t->rows_in_window = 0;
    t->step++;
    return n_dead;
}

LSAE_DEF lsae_result lsae_trainer_apply(lsae_trainer *t, lsae_step_stats *stats)
{
    double norm = 0.0, lr;
    float clip = 1.0f;
    int nonfinite;
    size_t n_dead;
    lsae_result r;
    if (!t) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_apply: trainer is NULL");
#ifdef LATENTSAE_CUDA
    if (t->cuda) return lsae__cuda_trainer_apply(t->cuda, stats);
#endif
    if (t->poisoned) return lsae__err(LSAE_NOT_FINITE, "training stopped earlier on a non-finite loss or gradient; reload the last good checkpoint");
    if (t->micro == 0) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_apply: no batch accumulated since the last optimizer step");
    if (t->comm_failed) return lsae__err(LSAE_ERROR, "training stopped earlier when a sum across ranks failed; restart from the last checkpoint");
    lsae__window_grads(t);                                                             /* the held batches' B3-B4 */
    if (t->has_comm && (r = lsae__comm_window(t)) != LSAE_OK) return r;                  /* U0 */
    if (t->shard) {
        /* U1 over the shards: W_enc^T db_enc sums over every latent, so each
           shard's part (of its rows), negated, is summed across the shards */
        float *gb_dec = t->grads + t->m->lay.offset[LSAE__B_DEC];
        size_t j;
        memset(t->sh_vec, 0, t->m->d * sizeof(float));
        lsae__b_dec_grad_input(t, t->sh_vec, t->bdec_part);
        if ((r = t->scomm.sum_f32(t->scomm.ctx, t->sh_vec, t->m->d)) != LSAE_OK) return lsae__shard_fail(t, r, "b_dec's gradient");
        for (j = 0; j < t->m->d; ++j) gb_dec[j] += t->sh_vec[j];
    } else
        lsae__b_dec_grad_input(t, t->grads + t->m->lay.offset[LSAE__B_DEC], t->bdec_part); /* U1 */
    if ((r = lsae__clip(t, &norm, &clip)) != LSAE_OK) return r;                        /* U2 */
    lr = t->lr_base * lsae_lr_factor(&t->cfg, t->step);
    nonfinite = lsae__adam(t, clip, lr);                                               /* U3 */
    n_dead = lsae__dead_counters(t);                                                   /* U4 */
    if (t->shard) {
        /* the whole model's dead count, and whether any shard's weights
           went non-finite (then every shard stops) */
        t->sh_hdr[0] = (double)n_dead;
        t->sh_hdr[1] = nonfinite ? 1.0 : 0.0;
        if ((r = t->scomm.sum_f64(t->scomm.ctx, t->sh_hdr, 2)) != LSAE_OK) return lsae__shard_fail(t, r, "the dead counts");
        n_dead = (size_t)t->sh_hdr[0];
        nonfinite = t->sh_hdr[1] > 0.0;
    }
    if (stats) {
        stats->stepped = 1;
        stats->grad_norm = norm;
        stats->lr = lr;
        stats->step = t->step;
        stats->n_dead = n_dead;
        stats->dead_fraction = (double)n_dead / (double)t->Lg;
    }
    if (nonfinite) {
        t->poisoned = 1;
        return lsae__err(LSAE_NOT_FINITE, "a weight became NaN or Inf at optimizer step %llu (learning rate %g): lower it and resume from the last good checkpoint",
                         (unsigned long long)t->step, lr);
    }
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_trainer_step(lsae_trainer *t, const float *x, size_t rows, lsae_step_stats *stats)
{
    lsae_result r;
#ifdef LATENTSAE_CUDA
    if (t && t->cuda) return lsae__cuda_trainer_accumulate(t->cuda, x, rows, stats, 1);
#endif
    r = lsae_trainer_accumulate(t, x, rows, stats);
    if (r != LSAE_OK) return r;
    if (t->micro >= t->cfg.grad_acc_steps) return lsae_trainer_apply(t, stats);
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_trainer_get_grads(const lsae_trainer *t, float *dW_enc, float *db_enc, float *dW_dec, float *db_dec)
{
    float *dst[LSAE__NUM_TENSORS];
    int i;
    if (!t) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_get_grads: trainer is NULL");
#ifdef LATENTSAE_CUDA
    if (t->cuda) return lsae__cuda_trainer_get_grads(t->cuda, dW_enc, db_enc, dW_dec, db_dec);
#endif
    /* the held batches' share first (it only completes sums the window
       owes: the trainer is the same to every other call) */
    lsae__window_grads((lsae_trainer *)t);
    dst[0] = dW_enc; dst[1] = db_enc; dst[2] = dW_dec; dst[3] = db_dec;
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
        const float *src = t->grads + t->m->lay.offset[i];
        const size_t d = t->m->d;
        size_t l;
        if (!dst[i]) continue;
        if (i != LSAE__W_ENC && i != LSAE__W_DEC) {
            memcpy(dst[i], src, t->m->lay.count[i] * sizeof(float));
            continue;
        }
        /* a weight row the window has not touched is 0 (its memory is
           stale until the first touch zeroes it: lsae__grad_row) */
        for (l = 0; l < t->m->L; ++l) {
            if (t->gtouch[l] & (i == LSAE__W_DEC ? LSAE__GT_DEC : LSAE__GT_ENC)) memcpy(dst[i] + l * d, src + l * d, d * sizeof(float));
            else memset(dst[i] + l * d, 0, d * sizeof(float));
        }
    }
    if (db_dec && t->micro) {
        /* the window's encoder-input side of b_dec, not yet added */
        float *part = (float *)lsae__alloc_array(t->alloc, (t->m->L + LSAE__BDEC_CHUNK - 1) / LSAE__BDEC_CHUNK, t->m->d * sizeof(float), "b_dec partial sums");
        if (!part) return LSAE_OUT_OF_MEMORY;
        lsae__b_dec_grad_input(t, db_dec, part);
        lsae__free(t->alloc, part);
    }
    return LSAE_OK;
}

/* A hash of what must be equal on every rank of a data-parallel run: the
   weights, Adam's moments, the dead-latent counters and the step count
   (64-bit words, each mixed in: fast, and any changed bit changes it). */
static uint64_t lsae__state_hash_of(uint64_t step, int b_dec_initialized, const float *params, const float *adam_m,
                                    const float *adam_v, size_t n, const uint64_t *since_fired, size_t L)
{
    const float *slab[3];
    uint64_t h = 0x9E3779B97F4A7C15ull ^ step ^ ((uint64_t)b_dec_initialized << 63);
    size_t q, i;
    slab[0] = params; slab[1] = adam_m; slab[2] = adam_v;
    for (q = 0; q < 3; ++q) {
        const unsigned char *p = (const unsigned char *)slab[q];
        for (i = 0; i + 2 <= n; i += 2) {
            uint64_t w;
            memcpy(&w, p + i * 4, 8);
            h = (h ^ w) * 0x100000001B3ull;
            h ^= h >> 29;
        }
        if (i < n) {
            uint32_t w;
            memcpy(&w, p + i * 4, 4);
            h = (h ^ w) * 0x100000001B3ull;
        }
    }
    for (i = 0; i < L; ++i) h = (h ^ since_fired[i]) * 0x100000001B3ull;
    return lsae__mix64(h);
}

/* The hash of the trainer's state. A CUDA trainer's lives on the GPU: it
   is downloaded (the weights into the model's host slab, which is staging
   for the file calls anyway; Adam and the counters into scratch), so the
   ranks compare the same things as CPU ranks do. */
static lsae_result lsae__state_hash(const lsae_trainer *t, uint64_t *out)
{
    const lsae_model *m = t->m;
#ifdef LATENTSAE_CUDA
    if (t->cuda) {
        const size_t n = m->lay.total;
        lsae_trainer_state st;
        float *mv;
        uint64_t *since;
        lsae_result r;
        int i;
        float **pm[LSAE__NUM_TENSORS], **pv[LSAE__NUM_TENSORS];
        if (n > (SIZE_MAX / sizeof(float)) / 2) return lsae__err(LSAE_OUT_OF_MEMORY, "the trainer state is too large to hash");
        mv = (float *)lsae__alloc_array(t->alloc, 2 * n, sizeof(float), "the Adam state to compare across ranks");
        since = mv ? (uint64_t *)lsae__alloc_array(t->alloc, m->L, sizeof(uint64_t), "the counters to compare across ranks") : NULL;
        if (!since) { lsae__free(t->alloc, mv); return LSAE_OUT_OF_MEMORY; }
        memset(&st, 0, sizeof st);
        pm[0] = &st.m_W_enc; pm[1] = &st.m_b_enc; pm[2] = &st.m_W_dec; pm[3] = &st.m_b_dec;
        pv[0] = &st.v_W_enc; pv[1] = &st.v_b_enc; pv[2] = &st.v_W_dec; pv[3] = &st.v_b_dec;
        for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
            *pm[i] = mv + m->lay.offset[i];
            *pv[i] = mv + n + m->lay.offset[i];
        }
        st.since_fired = since;
        if ((r = lsae__cuda_model_download(m->cuda, m->params)) == LSAE_OK && (r = lsae__cuda_trainer_get_state(t->cuda, &st)) == LSAE_OK)
            *out = lsae__state_hash_of(t->step, t->b_dec_initialized, m->params, mv, mv + n, n, since, m->L);
        lsae__free(t->alloc, since);
        lsae__free(t->alloc, mv);
        return r;
    }
#endif
    *out = lsae__state_hash_of(t->step, t->b_dec_initialized, m->params, t->adam_m, t->adam_v, m->lay.total, t->since_fired, m->L);
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_trainer_set_comm(lsae_trainer *t, const lsae_comm *comm)
{
    size_t nbuf;
    if (!t) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_comm: trainer is NULL");
    if (t->micro) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_comm: %llu batches are accumulated but not applied; set the communicator between optimizer steps", (unsigned long long)t->micro);
    if (!comm) {
#ifdef LATENTSAE_CUDA
        lsae_result r;
        if (t->cuda && (r = lsae__cuda_trainer_set_comm(t->cuda, NULL)) != LSAE_OK) return r;
#endif
        lsae__free(t->alloc, t->comm_buf); lsae__free(t->alloc, t->fire_buf);
        t->comm_buf = NULL; t->fire_buf = NULL;
        t->has_comm = 0;
        return LSAE_OK;
    }
    if (comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_comm: rank %d of size %d is not a rank", comm->rank, comm->size);
    if (!comm->sum_f32 || !comm->sum_f64 || !comm->broadcast)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_comm: sum_f32, sum_f64 and broadcast must all be set");
    if (comm->size > 1 && t->batchwide)
        return lsae__err(LSAE_UNSUPPORTED, "%s with a batch-wide pick cannot train data-parallel (%d ranks) in this version: its selection needs every rank's candidates. "
                         "Data-parallel training takes topk (with multi_topk, AuxK, k_anneal) and matryoshka without matryoshka_use_batchtopk; run batch-wide types in one process",
                         t->cfg.sae_type == LSAE_SAE_BATCHTOPK ? "batchtopk" : "matryoshka", comm->size);
    nbuf = t->m->d + LSAE_MAX_LEVELS + 4;
#ifdef LATENTSAE_CUDA
    if (t->cuda) nbuf = 0;   /* a GPU trainer's exchange buffers are latentsae_cuda.cu's */
#endif
    if (nbuf) {
        if (!t->comm_buf && !(t->comm_buf = (double *)lsae__alloc_array(t->alloc, nbuf, sizeof(double), "sums across ranks"))) return LSAE_OUT_OF_MEMORY;
        if (!t->fire_buf && !(t->fire_buf = (float *)lsae__alloc_array(t->alloc, t->m->L, sizeof(float), "fired flags across ranks"))) return LSAE_OUT_OF_MEMORY;
    }
    if (comm->size > 1) {
        /* Every rank must start from the same model and state, or each would
           step its own model with the others' gradients. Rank 0's hash is
           compared on every rank and the verdicts summed, so all ranks
           return the same answer (and none waits for another in a sum).
           A rank whose own part failed (a GPU trainer's exchange buffers,
           reading its state from the GPU) still takes part in both
           exchanges, counted as differing, so every rank refuses together
           and none is left waiting. */
        uint64_t h = 0, h0;
        double differ = 1.0;
        char why[512];
        lsae_result r, rh = LSAE_OK;
#ifdef LATENTSAE_CUDA
        /* the GPU trainer keeps its own copy of comm and its pinned buffers */
        if (t->cuda) rh = lsae__cuda_trainer_set_comm(t->cuda, comm);
#endif
        if (rh == LSAE_OK) rh = lsae__state_hash(t, &h);
        why[0] = 0;
        if (rh != LSAE_OK) lsae__snprintf(why, sizeof why, "%s", lsae__err_msg); /* before anything else writes the message */
        h0 = h;
        if ((r = comm->broadcast(comm->ctx, &h0, sizeof h0, 0)) == LSAE_OK) {
            differ = (rh != LSAE_OK || h0 != h) ? 1.0 : 0.0;
            r = comm->sum_f64(comm->ctx, &differ, 1);
        }
        if (r != LSAE_OK || rh != LSAE_OK || differ > 0.0) {
#ifdef LATENTSAE_CUDA
            if (t->cuda) (void)lsae__cuda_trainer_set_comm(t->cuda, t->has_comm ? &t->comm : NULL); /* as it was */
#endif
            if (r != LSAE_OK)
                return lsae__err(r, "lsae_trainer_set_comm: comparing the ranks' models (a broadcast and a sum) failed (%s)", lsae_result_string(r));
            if (rh != LSAE_OK)
                return lsae__err(rh, "lsae_trainer_set_comm: this rank could not take part (%s: %s)", lsae_result_string(rh), why);
            return lsae__err(LSAE_INVALID_ARGS, "%.0f of the %d ranks hold another model or trainer state than rank 0 (this rank %s): every rank must start from the same weights, "
                             "Adam state, counters and step (the same seed and settings, or the same checkpoint)", differ, comm->size, h0 != h ? "differs" : "agrees");
        }
    }
#ifdef LATENTSAE_CUDA
    else if (t->cuda) {
        /* one rank: the GPU trainer keeps its one-GPU path */
        lsae_result r = lsae__cuda_trainer_set_comm(t->cuda, comm);
        if (r != LSAE_OK) return r;
    }
#endif
    t->comm = *comm;
    t->has_comm = 1;
    t->comm_failed = 0;
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_trainer_set_shard_comm(lsae_trainer *t, const lsae_comm *comm)
{
    const lsae_model *m;
    size_t l0, l1, S, q;
    double mine[4];
    lsae_result r;
    if (!t) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_shard_comm: trainer is NULL");
    m = t->m;
    if (t->micro) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_shard_comm: %llu batches are accumulated but not applied; set the communicator between optimizer steps", (unsigned long long)t->micro);
    if (!comm || comm->size == 1) {
        if (m->shard_L) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_shard_comm: the model holds latents [%zu, %zu) of %zu; it trains only with its shard group (%s)",
                                         m->shard_l0, m->shard_l0 + m->L, m->shard_L, comm ? "size 1 given" : "NULL given");
        t->shard = 0;
        return LSAE_OK;
    }
    if (comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_shard_comm: rank %d of size %d is not a rank", comm->rank, comm->size);
    if (!comm->sum_f32 || !comm->sum_f64 || !comm->broadcast || !comm->allgather)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_shard_comm: sum_f32, sum_f64, broadcast and allgather must all be set");
#ifdef LATENTSAE_CUDA
    if (t->cuda) return lsae__err(LSAE_UNSUPPORTED, "latent-sharded training runs on the CPU only in this version: shard the latents on CPU ranks (device cpu), "
                                  "or train on GPUs data-parallel (lsae_trainer_set_comm; lsae train without --shard-latents), each rank holding the whole model");
#endif
    if (t->cfg.sae_type != LSAE_SAE_TOPK)
        return lsae__err(LSAE_UNSUPPORTED, "latent-sharded training takes topk (with multi_topk, AuxK, k_anneal) only in this version, not %s: train it in one process",
                         t->cfg.sae_type == LSAE_SAE_BATCHTOPK ? "batchtopk" : "matryoshka");
    S = (size_t)comm->size;
    lsae_shard_range(t->Lg, comm->rank, comm->size, &l0, &l1);
    if (l0 != t->l0 || l1 != t->l0 + m->L)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_shard_comm: rank %d of %d must hold latents [%zu, %zu) of %zu (lsae_shard_range); its model holds [%zu, %zu)",
                         comm->rank, comm->size, l0, l1, t->Lg, t->l0, t->l0 + m->L);
    lsae__free(t->alloc, t->sh_hdr);
    t->sh_hdr = NULL;
    if (!(t->sh_hdr = (double *)lsae__alloc_array(t->alloc, S + 1, 4 * sizeof(double), "shard exchange header"))) return LSAE_OUT_OF_MEMORY;
    if (!t->sh_vec && !(t->sh_vec = (float *)lsae__alloc_array(t->alloc, m->d, sizeof(float), "shard b_dec sum"))) return LSAE_OUT_OF_MEMORY;
    /* every shard at the same step with the same b_dec: compared with rank
       0's on every rank, from the same gathered numbers, so all agree */
    mine[0] = (double)t->step;
    mine[1] = (double)t->b_dec_initialized;
    {
        /* FNV-1a over b_dec's bytes, its low 52 bits (exact in a double) */
        const unsigned char *pb = (const unsigned char *)m->b_dec;
        uint64_t h = 0xcbf29ce484222325ull;
        for (q = 0; q < m->d * sizeof(float); ++q) h = (h ^ pb[q]) * 0x100000001b3ull;
        mine[2] = (double)(h & (((uint64_t)1 << 52) - 1));
    }
    mine[3] = (double)t->Lg;
    if ((r = comm->allgather(comm->ctx, mine, sizeof mine, t->sh_hdr)) != LSAE_OK)
        return lsae__err(r, "lsae_trainer_set_shard_comm: gathering the shards' steps failed (%s)", lsae_result_string(r));
    for (q = 1; q < S; ++q)
        if (memcmp(t->sh_hdr + 4 * q, t->sh_hdr, sizeof mine) != 0)
            return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_shard_comm: shard %zu is at step %.0f (b_dec %s) and shard 0 at step %.0f: every shard must start from the same "
                             "settings and seed, or the same checkpoint", q, t->sh_hdr[4 * q], t->sh_hdr[4 * q + 2] == t->sh_hdr[2] ? "the same" : "another", t->sh_hdr[0]);
    t->scomm = *comm;
    t->shard = 1;
    t->comm_failed = 0;
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_trainer_get_state(const lsae_trainer *t, lsae_trainer_state *st)
{
    float *dm[LSAE__NUM_TENSORS], *dv[LSAE__NUM_TENSORS];
    int i;
    if (!t || !st) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_get_state: trainer and state must not be NULL");
#ifdef LATENTSAE_CUDA
    if (t->cuda) return lsae__cuda_trainer_get_state(t->cuda, st);
#endif
    st->step = t->step;
    st->b_dec_initialized = t->b_dec_initialized;
    if (st->since_fired) memcpy(st->since_fired, t->since_fired, t->m->L * sizeof(uint64_t));
    dm[0] = st->m_W_enc; dm[1] = st->m_b_enc; dm[2] = st->m_W_dec; dm[3] = st->m_b_dec;
    dv[0] = st->v_W_enc; dv[1] = st->v_b_enc; dv[2] = st->v_W_dec; dv[3] = st->v_b_dec;
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
        if (dm[i]) memcpy(dm[i], t->adam_m + t->m->lay.offset[i], t->m->lay.count[i] * sizeof(float));
        if (dv[i]) memcpy(dv[i], t->adam_v + t->m->lay.offset[i], t->m->lay.count[i] * sizeof(float));
    }
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_trainer_get_piece(const lsae_trainer *t, int what, size_t r0, size_t n, void *dst)
{
    const lsae_model *m;
    const float *from;
    size_t rows, per, i;
    if (!t || !dst) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_get_piece: trainer and dst must not be NULL");
    m = t->m;
#ifdef LATENTSAE_CUDA
    if (t->cuda || m->cuda) return lsae__err(LSAE_UNSUPPORTED, "lsae_trainer_get_piece: the trainer is on the GPU; use lsae_trainer_get_state");
#endif
    if (what < 0 || what >= LSAE_PIECE_COUNT) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_get_piece: array %d is none of the lsae_piece numbers", what);
    i = (size_t)what % LSAE__NUM_TENSORS;
    rows = what == LSAE_PIECE_THRESHOLD ? 1 : what != LSAE_PIECE_SINCE_FIRED && i == LSAE__B_DEC ? m->d : m->L;
    if (r0 > rows || n > rows - r0)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_get_piece: rows [%zu, %zu) of array %d, which has %zu", r0, r0 + n, what, rows);
    if (what == LSAE_PIECE_THRESHOLD) { memcpy(dst, &m->batchtopk_threshold, sizeof(float)); return LSAE_OK; }
    if (what == LSAE_PIECE_SINCE_FIRED) { memcpy(dst, t->since_fired + r0, n * sizeof(uint64_t)); return LSAE_OK; }
    per = i == LSAE__W_ENC || i == LSAE__W_DEC ? m->d : 1;
    from = what < LSAE_PIECE_M_W_ENC ? m->params : what < LSAE_PIECE_V_W_ENC ? t->adam_m : t->adam_v;
    memcpy(dst, from + m->lay.offset[i] + r0 * per, n * per * sizeof(float));
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_trainer_set_state(lsae_trainer *t, const lsae_trainer_state *st)
{
    const float *sm[LSAE__NUM_TENSORS], *sv[LSAE__NUM_TENSORS];
    int i;
    size_t j;
    if (!t || !st) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_state: trainer and state must not be NULL");
#ifdef LATENTSAE_CUDA
    if (t->cuda) return lsae__cuda_trainer_set_state(t->cuda, st);
#endif
    if (t->micro) return lsae__err(LSAE_INVALID_ARGS, "lsae_trainer_set_state: %llu batches are accumulated but not applied; set state between optimizer steps", (unsigned long long)t->micro);
    sm[0] = st->m_W_enc; sm[1] = st->m_b_enc; sm[2] = st->m_W_dec; sm[3] = st->m_b_dec;
    sv[0] = st->v_W_enc; sv[1] = st->v_b_enc; sv[2] = st->v_W_dec; sv[3] = st->v_b_dec;
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
        const size_t n = t->m->lay.count[i];
        for (j = 0; sm[i] && j < n; ++j)
            if (!isfinite(sm[i][j])) return lsae__err(LSAE_INVALID_ARGS, "Adam first moment of %s[%zu] is not finite", lsae__tensor_names[i], j);
        for (j = 0; sv[i] && j < n; ++j)
            if (!(sv[i][j] >= 0.0f) || !isfinite(sv[i][j])) return lsae__err(LSAE_INVALID_ARGS, "Adam second moment of %s[%zu] is %g; it must be finite and >= 0", lsae__tensor_names[i], j, (double)sv[i][j]);
    }
    t->step = st->step;
    t->b_dec_initialized = st->b_dec_initialized;
    t->state_zero = 0;
    if (st->since_fired) memcpy(t->since_fired, st->since_fired, t->m->L * sizeof(uint64_t));
    /* (an array that is already the trainer's own, as a checkpoint load
       into a new trainer passes them, is not copied onto itself) */
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
        if (sm[i] && sm[i] != t->adam_m + t->m->lay.offset[i]) memcpy(t->adam_m + t->m->lay.offset[i], sm[i], t->m->lay.count[i] * sizeof(float));
        if (sv[i] && sv[i] != t->adam_v + t->m->lay.offset[i]) memcpy(t->adam_v + t->m->lay.offset[i], sv[i], t->m->lay.count[i] * sizeof(float));
    }
    return LSAE_OK;
}

/* ------------------------------------------------------------------- JSON */

/* A small JSON reader for cfg.json and safetensors headers: the text is
   tokenised once into a flat array (like jsmn); each token records where its
   subtree ends, so skipping a value is O(1). Depth is capped so hostile input
   cannot exhaust the stack. Strings stay escaped in the text and are compared
   or decoded on demand. */
typedef enum { LSAE__J_OBJ, LSAE__J_ARR, LSAE__J_STR, LSAE__J_NUM, LSAE__J_TRUE, LSAE__J_FALSE, LSAE__J_NULL } lsae__jtype;

typedef struct lsae__jtok {
    lsae__jtype type;
    size_t start, end;   /* bytes of the text; for strings, inside the quotes */
    size_t next;         /* index of the token after this whole value */
    size_t size;         /* members of an object (key-value pairs) or an array */
} lsae__jtok;

typedef struct lsae__json {
    const char *s;
    size_t n;
    lsae__jtok *tok;
    size_t ntok, cap;
    const lsae_allocator *alloc;
} lsae__json;

#define LSAE__JSON_MAX_DEPTH 64

static void lsae__json_free(lsae__json *j) { lsae__free(j->alloc, j->tok); j->tok = NULL; j->ntok = j->cap = 0; }

static int lsae__json_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static lsae_result lsae__json_new_tok(lsae__json *j, size_t *idx)
{
    if (j->ntok == j->cap) {
        size_t ncap = j->cap ? j->cap * 2 : 64;
        lsae__jtok *nt = (lsae__jtok *)lsae__alloc_array(j->alloc, ncap, sizeof(lsae__jtok), "JSON tokens");
        if (!nt) return LSAE_OUT_OF_MEMORY;
        if (j->tok) memcpy(nt, j->tok, j->ntok * sizeof(lsae__jtok));
        lsae__free(j->alloc, j->tok);
        j->tok = nt;
        j->cap = ncap;
    }
    *idx = j->ntok++;
    memset(&j->tok[*idx], 0, sizeof(lsae__jtok));
    return LSAE_OK;
}

static lsae_result lsae__json_value(lsae__json *j, size_t *pos, int depth);

static lsae_result lsae__json_string(lsae__json *j, size_t *pos, size_t *out_tok)
{
    size_t p = *pos + 1, ti;
    lsae_result r;
    while (p < j->n && j->s[p] != '"') {
        unsigned char c = (unsigned char)j->s[p];
        if (c < 0x20) return lsae__err(LSAE_BAD_FILE, "JSON: control character in a string at byte %zu", p);
        if (c == '\\') {
            if (p + 1 >= j->n) break;
            c = (unsigned char)j->s[p + 1];
            if (c == 'u') {
                size_t q;
                for (q = p + 2; q < p + 6; ++q)
                    if (q >= j->n || !((j->s[q] >= '0' && j->s[q] <= '9') || (j->s[q] >= 'a' && j->s[q] <= 'f') || (j->s[q] >= 'A' && j->s[q] <= 'F')))
                        return lsae__err(LSAE_BAD_FILE, "JSON: bad \\u escape at byte %zu", p);
                p += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", (char)c)) return lsae__err(LSAE_BAD_FILE, "JSON: bad escape at byte %zu", p);
            p += 2;
            continue;
        }
        ++p;
    }
    if (p >= j->n) return lsae__err(LSAE_BAD_FILE, "JSON: string starting at byte %zu never ends", *pos);
    if ((r = lsae__json_new_tok(j, &ti)) != LSAE_OK) return r;
    j->tok[ti].type = LSAE__J_STR;
    j->tok[ti].start = *pos + 1;
    j->tok[ti].end = p;
    j->tok[ti].next = ti + 1;
    *pos = p + 1;
    if (out_tok) *out_tok = ti;
    return LSAE_OK;
}

static void lsae__json_skip_ws(const lsae__json *j, size_t *pos)
{
    while (*pos < j->n && lsae__json_ws(j->s[*pos])) ++*pos;
}

static lsae_result lsae__json_value(lsae__json *j, size_t *pos, int depth)
{
    size_t ti, p;
    lsae_result r;
    char c;
    lsae__json_skip_ws(j, pos);
    if (*pos >= j->n) return lsae__err(LSAE_BAD_FILE, "JSON: text ends where a value was expected (byte %zu)", *pos);
    if (depth > LSAE__JSON_MAX_DEPTH) return lsae__err(LSAE_BAD_FILE, "JSON: nested deeper than %d at byte %zu", LSAE__JSON_MAX_DEPTH, *pos);
    c = j->s[*pos];
    if (c == '"') return lsae__json_string(j, pos, NULL);
    if ((r = lsae__json_new_tok(j, &ti)) != LSAE_OK) return r;
    j->tok[ti].start = *pos;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        size_t count = 0;
        j->tok[ti].type = c == '{' ? LSAE__J_OBJ : LSAE__J_ARR;
        ++*pos;
        lsae__json_skip_ws(j, pos);
        if (*pos < j->n && j->s[*pos] == close) {
            ++*pos;
        } else {
            for (;;) {
                if (c == '{') {
                    lsae__json_skip_ws(j, pos);
                    if (*pos >= j->n || j->s[*pos] != '"') return lsae__err(LSAE_BAD_FILE, "JSON: expected a key string at byte %zu", *pos);
                    if ((r = lsae__json_string(j, pos, NULL)) != LSAE_OK) return r;
                    lsae__json_skip_ws(j, pos);
                    if (*pos >= j->n || j->s[*pos] != ':') return lsae__err(LSAE_BAD_FILE, "JSON: expected ':' at byte %zu", *pos);
                    ++*pos;
                }
                if ((r = lsae__json_value(j, pos, depth + 1)) != LSAE_OK) return r;
                ++count;
                lsae__json_skip_ws(j, pos);
                if (*pos < j->n && j->s[*pos] == ',') { ++*pos; continue; }
                if (*pos < j->n && j->s[*pos] == close) { ++*pos; break; }
                return lsae__err(LSAE_BAD_FILE, "JSON: expected ',' or '%c' at byte %zu", close, *pos);
            }
        }
        j->tok[ti].size = count;
    } else if (c == '-' && j->n - *pos >= 9 && memcmp(j->s + *pos + 1, "Infinity", 8) == 0) {
        /* Python's json writes -Infinity too */
        j->tok[ti].type = LSAE__J_NUM;
        *pos += 9;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        p = *pos;
        if (j->s[p] == '-') ++p;
        if (p >= j->n || !(j->s[p] >= '0' && j->s[p] <= '9')) return lsae__err(LSAE_BAD_FILE, "JSON: bad number at byte %zu", *pos);
        while (p < j->n && ((j->s[p] >= '0' && j->s[p] <= '9') || j->s[p] == '.' || j->s[p] == 'e' || j->s[p] == 'E' || j->s[p] == '+' || j->s[p] == '-')) ++p;
        j->tok[ti].type = LSAE__J_NUM;
        *pos = p;
    } else if (j->n - *pos >= 4 && memcmp(j->s + *pos, "true", 4) == 0) {
        j->tok[ti].type = LSAE__J_TRUE; *pos += 4;
    } else if (j->n - *pos >= 5 && memcmp(j->s + *pos, "false", 5) == 0) {
        j->tok[ti].type = LSAE__J_FALSE; *pos += 5;
    } else if (j->n - *pos >= 4 && memcmp(j->s + *pos, "null", 4) == 0) {
        j->tok[ti].type = LSAE__J_NULL; *pos += 4;
    } else if (j->n - *pos >= 3 && (memcmp(j->s + *pos, "NaN", 3) == 0 || memcmp(j->s + *pos, "Inf", 3) == 0)) {
        /* Python's json writes NaN and Infinity; read them as numbers */
        j->tok[ti].type = LSAE__J_NUM;
        *pos += memcmp(j->s + *pos, "NaN", 3) == 0 ? 3 : (j->n - *pos >= 8 && memcmp(j->s + *pos, "Infinity", 8) == 0 ? 8 : 3);
    } else {
        return lsae__err(LSAE_BAD_FILE, "JSON: unexpected character '%c' at byte %zu", c, *pos);
    }
    j->tok[ti].end = *pos;
    j->tok[ti].next = j->ntok;
    return LSAE_OK;
}

/* Parse text [0, n) that must hold one JSON value (trailing spaces allowed). */
LSAE__MAYBE_UNUSED static lsae_result lsae__json_parse(lsae__json *j, const char *s, size_t n, const lsae_allocator *alloc)
{
    size_t pos = 0;
    lsae_result r;
    memset(j, 0, sizeof *j);
    j->s = s;
    j->n = n;
    j->alloc = alloc;
    if ((r = lsae__json_value(j, &pos, 0)) != LSAE_OK) { lsae__json_free(j); return r; }
    lsae__json_skip_ws(j, &pos);
    if (pos != n) { lsae__json_free(j); return lsae__err(LSAE_BAD_FILE, "JSON: unexpected text after the value at byte %zu", pos); }
    return LSAE_OK;
}

/* four hex digits, already checked by the tokeniser */
static unsigned long lsae__hex4(const char *p)
{
    unsigned long v = 0;
    int i;
    for (i = 0; i < 4; ++i) {
        char c = p[i];
        v = v * 16 + (unsigned long)(c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c - 'A' + 10);
    }
    return v;
}

/* Decode string token t into buf (NUL-terminated, UTF-8). 0 if it does not
   fit; buf then holds the part that did, still terminated (callers print it). */
static int lsae__json_str(const lsae__json *j, size_t t, char *buf, size_t cap)
{
    size_t p = j->tok[t].start, e = j->tok[t].end, o = 0;
    if (cap == 0) return 0;
    while (p < e) {
        unsigned long cp;
        char c = j->s[p];
        if (c != '\\') {
            if (o + 1 >= cap) { buf[o] = 0; return 0; }
            buf[o++] = c;
            ++p;
            continue;
        }
        c = j->s[p + 1];
        if (c != 'u') {
            if (o + 1 >= cap) { buf[o] = 0; return 0; }
            buf[o++] = c == 'b' ? '\b' : c == 'f' ? '\f' : c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c;
            p += 2;
            continue;
        }
        cp = lsae__hex4(j->s + p + 2);
        p += 6;
        if (cp >= 0xD800 && cp < 0xDC00 && p + 6 <= e && j->s[p] == '\\' && j->s[p + 1] == 'u') {
            unsigned long lo = lsae__hex4(j->s + p + 2);
            if (lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
        }
        if (o + 5 >= cap) { buf[o] = 0; return 0; }
        if (cp < 0x80) buf[o++] = (char)cp;
        else if (cp < 0x800) { buf[o++] = (char)(0xC0 | (cp >> 6)); buf[o++] = (char)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) { buf[o++] = (char)(0xE0 | (cp >> 12)); buf[o++] = (char)(0x80 | ((cp >> 6) & 0x3F)); buf[o++] = (char)(0x80 | (cp & 0x3F)); }
        else { buf[o++] = (char)(0xF0 | (cp >> 18)); buf[o++] = (char)(0x80 | ((cp >> 12) & 0x3F)); buf[o++] = (char)(0x80 | ((cp >> 6) & 0x3F)); buf[o++] = (char)(0x80 | (cp & 0x3F)); }
    }
    buf[o] = 0;
    return 1;
}

static int lsae__json_str_eq(const lsae__json *j, size_t t, const char *want)
{
    char buf[256];
    if (j->tok[t].type != LSAE__J_STR) return 0;
    if (j->tok[t].end - j->tok[t].start >= sizeof buf) return 0;
    return lsae__json_str(j, t, buf, sizeof buf) && strcmp(buf, want) == 0;
}

/* The value token of key in object token obj, or 0 when absent (token 0 is
   never a value: it is the root). */
LSAE__MAYBE_UNUSED static size_t lsae__json_get(const lsae__json *j, size_t obj, const char *key)
{
    size_t t, i;
    if (j->tok[obj].type != LSAE__J_OBJ) return 0;
    t = obj + 1;
    for (i = 0; i < j->tok[obj].size; ++i) {
        size_t val = t + 1;
        if (lsae__json_str_eq(j, t, key)) return val;
        t = j->tok[val].next;
    }
    return 0;
}

/* A non-negative integer value, exactly (no float detour); 1.0e3-style and
   32.0 are accepted when integral. 0 if not such a number or > max. */
LSAE__MAYBE_UNUSED static int lsae__json_u64(const lsae__json *j, size_t t, uint64_t max, uint64_t *out)
{
    size_t p = j->tok[t].start, e = j->tok[t].end;
    uint64_t v = 0;
    if (j->tok[t].type != LSAE__J_NUM) return 0;
    if (p < e && j->s[p] == '-') {
        /* "-0" is 0; anything else negative is refused */
        size_t q = p + 1;
        while (q < e && (j->s[q] == '0' || j->s[q] == '.')) ++q;
        if (q != e) return 0;
        *out = 0;
        return 1;
    }
    for (; p < e && j->s[p] >= '0' && j->s[p] <= '9'; ++p) {
        unsigned d = (unsigned)(j->s[p] - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    if (p < e) {
        /* a fraction or exponent: go through double, then insist it is integral */
        char buf[64];
        double dv;
        size_t len = j->tok[t].end - j->tok[t].start;
        if (len >= sizeof buf) return 0;
        memcpy(buf, j->s + j->tok[t].start, len);
        buf[len] = 0;
        dv = strtod(buf, NULL);
        if (!(dv >= 0.0) || dv > 9007199254740992.0 || floor(dv) != dv) return 0;
        v = (uint64_t)dv;
    }
    if (v > max) return 0;
    *out = v;
    return 1;
}

/* A JSON number token as a double (strtod: see the note on LC_NUMERIC in
   the doc block). The library's own readers want integers (lsae__json_u64);
   lsae's tools read run.json and metrics.jsonl through this. */
LSAE__MAYBE_UNUSED static int lsae__json_double(const lsae__json *j, size_t t, double *out)
{
    char buf[64];
    size_t len;
    if (j->tok[t].type != LSAE__J_NUM) return 0;
    len = j->tok[t].end - j->tok[t].start;
    if (len >= sizeof buf) return 0;
    memcpy(buf, j->s + j->tok[t].start, len);
    buf[len] = 0;
    *out = strtod(buf, NULL);
    return 1;
}

LSAE__MAYBE_UNUSED static int lsae__json_bool(const lsae__json *j, size_t t, int *out)
{
    if (j->tok[t].type == LSAE__J_TRUE) { *out = 1; return 1; }
    if (j->tok[t].type == LSAE__J_FALSE) { *out = 0; return 1; }
    return 0;
}

/* ------------------------------------------------------------ half floats */

/* IEEE binary16 to float, exact (subnormals, Inf and NaN included) */
static float lsae__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
    float f;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 */
        f = (float)man * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    if (exp == 31) bits = sign | 0x7F800000u | (man << 13);
    else bits = sign | ((exp + 112u) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}

/* bfloat16 is the top half of a float */
static float lsae__bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int lsae__little_endian(void)
{
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}

/* Convert n elements of dtype in src to floats (this machine's byte order)
   in dst. dtype is an LSAE__DT_* number: 1 = F32, 2 = F16, 3 = BF16, all
   little-endian as every format here stores them, or 5 = F32, 6 = F16 and
   7 = BF16 big-endian (npy '>f4', '>f2' and torch byteorder "big": what
   numpy and torch save on a big-endian machine).
   Bytes are assembled by shifts, so the result is the same on any host; the
   memcpy is the case where the file's order is the host's. */
LSAE__MAYBE_UNUSED static void lsae__to_f32(float *dst, const unsigned char *src, size_t n, int dtype)
{
    size_t i;
    if (dtype == 1 || dtype == 5) {
        const int big = dtype == 5;
        if (big == !lsae__little_endian()) {
            memcpy(dst, src, n * 4);
            return;
        }
        for (i = 0; i < n; ++i) {
            const unsigned char *e = src + 4 * i;
            uint32_t b = big ? ((uint32_t)e[0] << 24) | ((uint32_t)e[1] << 16) | ((uint32_t)e[2] << 8) | (uint32_t)e[3]
                             : (uint32_t)e[0] | ((uint32_t)e[1] << 8) | ((uint32_t)e[2] << 16) | ((uint32_t)e[3] << 24);
            memcpy(&dst[i], &b, 4);
        }
        return;
    }
    for (i = 0; i < n; ++i) {
        uint16_t h = dtype >= 6 ? (uint16_t)((src[2 * i] << 8) | src[2 * i + 1]) : (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
        dst[i] = dtype == 3 || dtype == 7 ? lsae__bf16_to_f32(h) : lsae__f16_to_f32(h);
    }
}

#ifndef LSAE_NO_STDIO
/* -------------------------------------------------------------- file utils */

#if defined(_WIN32)
#define lsae__fseek _fseeki64
#define lsae__ftell _ftelli64
typedef long long lsae__off;
#elif defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200112L
#define lsae__fseek fseeko
#define lsae__ftell ftello
typedef off_t lsae__off;
#else
#define lsae__fseek fseek
#define lsae__ftell ftell
typedef long lsae__off;
#endif

/* Every path this library takes or gives is UTF-8. Windows' narrow file
   calls (fopen, rename, _mkdir, ...) read a path in the ANSI code page
   instead, so a name outside it (Cyrillic, CJK, emoji on a Western system)
   would not open; every file call below therefore converts the path to
   UTF-16 and uses the wide-character API. The conversion refuses bytes that
   are not UTF-8 rather than guessing. Paths are the usual at most MAX_PATH
   (260) characters unless the program declares itself long-path aware. */
#if defined(_WIN32)
#include <direct.h>
#include <io.h>
#include <wchar.h>

/* The ten Win32 functions used, declared here as <windows.h> declares them
   (same types, so a program that includes both compiles), rather than
   including <windows.h>, whose macros (NEAR, FAR, ERROR, min, max, ...)
   would land in the program's translation unit, as stb's headers avoid. */
#ifdef __cplusplus
extern "C" {
#endif
struct _SECURITY_ATTRIBUTES;
#if defined(_WIN64)
typedef unsigned __int64 lsae__win_size; /* SIZE_T */
#else
typedef unsigned long lsae__win_size;
#endif
__declspec(dllimport) int __stdcall MultiByteToWideChar(unsigned int code_page, unsigned long flags, const char *s, int n, wchar_t *w, int wcap);
__declspec(dllimport) int __stdcall WideCharToMultiByte(unsigned int code_page, unsigned long flags, const wchar_t *w, int n, char *s, int cap, const char *default_char, int *used_default);
__declspec(dllimport) unsigned long __stdcall GetLastError(void);
__declspec(dllimport) int __stdcall MoveFileExW(const wchar_t *from, const wchar_t *to, unsigned long flags);
__declspec(dllimport) unsigned long __stdcall GetFileAttributesW(const wchar_t *path);
__declspec(dllimport) void *__stdcall CreateFileW(const wchar_t *path, unsigned long access, unsigned long share, struct _SECURITY_ATTRIBUTES *sa,
                                                  unsigned long disposition, unsigned long flags, void *template_file);
__declspec(dllimport) void *__stdcall CreateFileMappingW(void *file, struct _SECURITY_ATTRIBUTES *sa, unsigned long protect, unsigned long size_high,
                                                         unsigned long size_low, const wchar_t *name);
__declspec(dllimport) void *__stdcall MapViewOfFile(void *mapping, unsigned long access, unsigned long off_high, unsigned long off_low, lsae__win_size n);
__declspec(dllimport) int __stdcall UnmapViewOfFile(const void *p);
__declspec(dllimport) int __stdcall CloseHandle(void *h);
#ifdef __cplusplus
}
#endif
/* their constants, from the Windows SDK's documentation */
#define LSAE__CP_UTF8 65001u
#define LSAE__MB_ERR_INVALID_CHARS 0x8ul
#define LSAE__MOVEFILE_REPLACE_EXISTING 0x1ul
#define LSAE__MOVEFILE_WRITE_THROUGH 0x8ul
#define LSAE__INVALID_FILE_ATTRIBUTES 0xFFFFFFFFul
#define LSAE__FILE_ATTRIBUTE_DIRECTORY 0x10ul
#define LSAE__GENERIC_READ 0x80000000ul
#define LSAE__FILE_SHARE_ALL 0x7ul /* read | write | delete */
#define LSAE__OPEN_EXISTING 3ul
#define LSAE__FILE_ATTRIBUTE_NORMAL 0x80ul
#define LSAE__PAGE_READONLY 0x2ul
#define LSAE__FILE_MAP_READ 0x4ul
#define LSAE__INVALID_HANDLE ((void *)(intptr_t)-1)

#define LSAE__WPATH_CAP 4096

/* UTF-8 path to UTF-16 in out[cap]; 0 (errno set) when it is not UTF-8 or too long. */
static int lsae__wpath(const char *path, wchar_t *out, int cap)
{
    if (MultiByteToWideChar(LSAE__CP_UTF8, LSAE__MB_ERR_INVALID_CHARS, path, -1, out, cap) > 0) return 1;
    errno = GetLastError() == 122 /* ERROR_INSUFFICIENT_BUFFER */ ? ENAMETOOLONG : EINVAL;
    return 0;
}

/* errno from the last Win32 error, so that callers report strerror(errno)
   on every system. */
static void lsae__win_errno(void)
{
    /* the codes (winerror.h): 2 and 3 file or path not found, 5 access
       denied, 32 sharing violation (open elsewhere), 80 and 183 exists,
       39 and 112 disk full, 145 directory not empty, 206 name too long */
    unsigned long e = GetLastError();
    errno = (e == 2 || e == 3) ? ENOENT : (e == 5 || e == 32) ? EACCES : (e == 80 || e == 183) ? EEXIST
            : (e == 39 || e == 112) ? ENOSPC : e == 145 ? ENOTEMPTY : e == 206 ? ENAMETOOLONG : EIO;
}

static FILE *lsae__fopen(const char *path, const char *mode)
{
    wchar_t wp[LSAE__WPATH_CAP], wm[8];
    size_t i;
    if (!lsae__wpath(path, wp, LSAE__WPATH_CAP)) return NULL;
    for (i = 0; mode[i] && i + 1 < sizeof wm / sizeof wm[0]; ++i) wm[i] = (wchar_t)mode[i];
    wm[i] = 0;
    return _wfopen(wp, wm);
}

static int lsae__remove(const char *path)
{
    wchar_t wp[LSAE__WPATH_CAP];
    return lsae__wpath(path, wp, LSAE__WPATH_CAP) ? _wremove(wp) : -1;
}

/* rename() that replaces an existing target, as POSIX rename does (Windows'
   rename refuses with EEXIST). MOVEFILE_WRITE_THROUGH returns only once the
   move is on disk, which is what the fsync of the directory does on POSIX.
   For a directory the target must not exist (callers move it away first). */
static int lsae__rename(const char *from, const char *to)
{
    wchar_t wf[LSAE__WPATH_CAP], wt[LSAE__WPATH_CAP];
    if (!lsae__wpath(from, wf, LSAE__WPATH_CAP) || !lsae__wpath(to, wt, LSAE__WPATH_CAP)) return -1;
    if (MoveFileExW(wf, wt, LSAE__MOVEFILE_REPLACE_EXISTING | LSAE__MOVEFILE_WRITE_THROUGH)) return 0;
    lsae__win_errno();
    return -1;
}
#else
#define lsae__fopen fopen
#define lsae__remove remove
#define lsae__rename rename
#endif

static int lsae__path_join(char *buf, size_t cap, const char *dir, const char *name)
{
    size_t n = strlen(dir);
    int w = (n && (dir[n - 1] == '/' || dir[n - 1] == '\\')) ? snprintf(buf, cap, "%s%s", dir, name)
                                                               : snprintf(buf, cap, "%s/%s", dir, name);
    return w >= 0 && (size_t)w < cap;
}

/* Size of an open file, or -1 */
static int lsae__file_size(FILE *f, uint64_t *size)
{
    lsae__off end;
    if (lsae__fseek(f, 0, SEEK_END) != 0) return 0;
    end = lsae__ftell(f);
    if (end < 0 || lsae__fseek(f, 0, SEEK_SET) != 0) return 0;
    *size = (uint64_t)end;
    return 1;
}

static int lsae__seek(FILE *f, uint64_t off)
{
    if (off > (uint64_t)(((uint64_t)1 << 62))) return 0;
    return lsae__fseek(f, (lsae__off)off, SEEK_SET) == 0;
}

static lsae_result lsae__open_read(const char *path, FILE **f)
{
    *f = lsae__fopen(path, "rb");
    if (!*f) {
        int e = errno;
        return lsae__err(e == ENOENT ? LSAE_NOT_FOUND : LSAE_IO_ERROR, "%s: cannot open: %s", path, strerror(e));
    }
    return LSAE_OK;
}

/* Read a whole small file (at most max bytes) into a NUL-terminated buffer. */
static lsae_result lsae__read_small_file(const char *path, size_t max, const lsae_allocator *a, char **out, size_t *len)
{
    FILE *f;
    uint64_t size;
    char *buf;
    lsae_result r;
    *out = NULL;
    if ((r = lsae__open_read(path, &f)) != LSAE_OK) return r;
    if (!lsae__file_size(f, &size)) { fclose(f); return lsae__err(LSAE_IO_ERROR, "%s: cannot find its size", path); }
    if (size > max) { fclose(f); return lsae__err(LSAE_BAD_FILE, "%s: %llu bytes, more than the %zu expected of such a file", path, (unsigned long long)size, max); }
    buf = (char *)lsae__malloc(a, (size_t)size + 1);
    if (!buf) { fclose(f); return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory reading it", path); }
    if (size && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        lsae__free(a, buf);
        return lsae__err(LSAE_IO_ERROR, "%s: read failed", path);
    }
    fclose(f);
    buf[size] = 0;
    *out = buf;
    *len = (size_t)size;
    return LSAE_OK;
}

/* Make a directory if it is not there (one level). */
static lsae_result lsae__mkdir(const char *dir)
{
    int rc;
#if defined(_WIN32)
    wchar_t wd[LSAE__WPATH_CAP];
    rc = lsae__wpath(dir, wd, LSAE__WPATH_CAP) ? _wmkdir(wd) : -1;
#elif defined(__unix__) || defined(__APPLE__) || defined(__wasi__)
    rc = mkdir(dir, 0777);
#else
    rc = 0; /* no way to make one: rely on it being there */
#endif
    if (rc != 0 && errno != EEXIST)
        return lsae__err(LSAE_IO_ERROR, "%s: cannot create directory: %s", dir, strerror(errno));
    return LSAE_OK;
}

static int lsae__exists(const char *path);
static int lsae__is_dir(const char *path);

/* A file written under a temporary name and renamed over the target only
   when every byte is on disk: a crash leaves the old file or the new one,
   never half of one. */
typedef struct lsae__afile {
    FILE *f;
    char tmp[4096];
    char path[4096];
    int failed, err;
} lsae__afile;

static lsae_result lsae__afile_open(lsae__afile *af, const char *path)
{
    int w;
    memset(af, 0, sizeof *af);
    w = snprintf(af->tmp, sizeof af->tmp, "%s.tmp", path);
    if (w < 0 || (size_t)w >= sizeof af->tmp || strlen(path) >= sizeof af->path)
        return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", path);
    memcpy(af->path, path, strlen(path) + 1);
    af->f = lsae__fopen(af->tmp, "wb");
    if (!af->f) {
        int e = errno;
        return lsae__err(LSAE_IO_ERROR, "%s: cannot create: %s", af->tmp, strerror(e));
    }
    return LSAE_OK;
}

static void lsae__afile_write(lsae__afile *af, const void *p, size_t n)
{
    if (af->failed || n == 0) return;
    if (fwrite(p, 1, n, af->f) != n) {
        af->failed = 1;
        af->err = errno;
    }
}

LSAE__MAYBE_UNUSED static void lsae__afile_abort(lsae__afile *af)
{
    if (af->f) fclose(af->f);
    af->f = NULL;
    lsae__remove(af->tmp);
}

static lsae_result lsae__afile_commit(lsae__afile *af)
{
    if (!af->failed && fflush(af->f) != 0) { af->failed = 1; af->err = errno; }
#ifdef LSAE__HAVE_FSYNC
    if (!af->failed && fsync(fileno(af->f)) != 0) { af->failed = 1; af->err = errno; }
#elif defined(_WIN32)
    if (!af->failed && _commit(_fileno(af->f)) != 0) { af->failed = 1; af->err = errno; } /* FlushFileBuffers */
#endif
    if (fclose(af->f) != 0 && !af->failed) { af->failed = 1; af->err = errno; }
    af->f = NULL;
    if (af->failed) {
        lsae__remove(af->tmp);
        return lsae__err(LSAE_IO_ERROR, "%s: write failed (%s); the previous file, if any, is untouched", af->path, strerror(af->err));
    }
    if (lsae__rename(af->tmp, af->path) != 0) {
        int e = errno;
        lsae__remove(af->tmp);
        return lsae__err(LSAE_IO_ERROR, "%s: cannot rename %s into place: %s", af->path, af->tmp, strerror(e));
    }
    return LSAE_OK;
}

/* ------------------------------------------------------------ safetensors */

/* safetensors: 8-byte little-endian header length N, N bytes of JSON
   {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}},
   then the data. Offsets are relative to the end of the header. We check what
   the format's own reader checks: the header fits the file, every tensor's
   byte count equals its shape times its dtype size, and the tensors tile the
   data exactly (no gap, no overlap, nothing after). */
enum { LSAE__DT_OTHER = 0, LSAE__DT_F32 = 1, LSAE__DT_F16 = 2, LSAE__DT_BF16 = 3, LSAE__DT_F64 = 4,
       LSAE__DT_F32_BE = 5, LSAE__DT_F16_BE = 6, LSAE__DT_BF16_BE = 7 /* big-endian: npy and torch shards only (lsae__to_f32) */ };

/* The dtype whose bytes are this machine's float32s, usable in place */
#define LSAE__DT_F32_NATIVE (lsae__little_endian() ? LSAE__DT_F32 : LSAE__DT_F32_BE)

#define LSAE__ST_MAX_DIMS 8
#define LSAE__ST_MAX_NAME 512

typedef struct lsae__st_tensor {
    char name[LSAE__ST_MAX_NAME];
    char dtype_name[16];
    int dtype;                 /* LSAE__DT_*; OTHER for ones we cannot convert */
    size_t elem_size;
    int ndim;
    uint64_t shape[LSAE__ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;       /* relative to data_start */
} lsae__st_tensor;

typedef struct lsae__st {
    lsae__st_tensor *t;
    size_t n;
    uint64_t data_start, file_size;
    const lsae_allocator *alloc;
} lsae__st;

static void lsae__st_free(lsae__st *st) { lsae__free(st->alloc, st->t); st->t = NULL; st->n = 0; }

static const struct { const char *name; size_t size; int code; } lsae__st_dtypes[] = {
    { "F64", 8, LSAE__DT_F64 }, { "F32", 4, LSAE__DT_F32 }, { "F16", 2, LSAE__DT_F16 }, { "BF16", 2, LSAE__DT_BF16 },
    { "I64", 8, 0 }, { "I32", 4, 0 }, { "I16", 2, 0 }, { "I8", 1, 0 }, { "U64", 8, 0 }, { "U32", 4, 0 },
    { "U16", 2, 0 }, { "U8", 1, 0 }, { "BOOL", 1, 0 }, { "F8_E4M3", 1, 0 }, { "F8_E5M2", 1, 0 }
};

static int lsae__st_cmp_begin(const void *a, const void *b)
{
    const lsae__st_tensor *x = (const lsae__st_tensor *)a, *y = (const lsae__st_tensor *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

/* Parse and validate a header (hdr, hlen) of a file of file_size bytes. */
static lsae_result lsae__st_parse(const char *path, const char *hdr, size_t hlen, uint64_t file_size, const lsae_allocator *a, lsae__st *st)
{
    lsae__json j;
    lsae_result r;
    size_t tk, i, n = 0;
    uint64_t data_len, at;
    memset(st, 0, sizeof *st);
    st->alloc = a;
    st->data_start = 8 + (uint64_t)hlen;
    st->file_size = file_size;
    if (st->data_start > file_size)
        return lsae__err(LSAE_BAD_FILE, "%s: header of %zu bytes runs past the end of the %llu-byte file", path, hlen, (unsigned long long)file_size);
    data_len = file_size - st->data_start;
    if ((r = lsae__json_parse(&j, hdr, hlen, a)) != LSAE_OK) return lsae__err_prefix(r, "%s: safetensors header: ", path);
    if (j.tok[0].type != LSAE__J_OBJ) { lsae__json_free(&j); return lsae__err(LSAE_BAD_FILE, "%s: safetensors header is not a JSON object", path); }
    st->t = (lsae__st_tensor *)lsae__alloc_array(a, j.tok[0].size ? j.tok[0].size : 1, sizeof(lsae__st_tensor), "safetensors tensor list");
    if (!st->t) { lsae__json_free(&j); return LSAE_OUT_OF_MEMORY; }
    tk = 1;
    for (i = 0; i < j.tok[0].size; ++i) {
        size_t key = tk, val = tk + 1, dt, sh, off, q;
        lsae__st_tensor *t;
        char dname[32];
        tk = j.tok[val].next;
        if (lsae__json_str_eq(&j, key, "__metadata__")) {
            if (j.tok[val].type != LSAE__J_OBJ) { r = lsae__err(LSAE_BAD_FILE, "%s: __metadata__ is not an object", path); goto fail; }
            continue;
        }
        t = &st->t[n];
        memset(t, 0, sizeof *t);
        if (!lsae__json_str(&j, key, t->name, sizeof t->name)) { r = lsae__err(LSAE_BAD_FILE, "%s: a tensor name is longer than %d bytes", path, LSAE__ST_MAX_NAME - 1); goto fail; }
        if (j.tok[val].type != LSAE__J_OBJ) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' is not described by an object", path, t->name); goto fail; }
        dt = lsae__json_get(&j, val, "dtype");
        sh = lsae__json_get(&j, val, "shape");
        off = lsae__json_get(&j, val, "data_offsets");
        if (!dt || !sh || !off) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' lacks %s", path, t->name, !dt ? "dtype" : !sh ? "shape" : "data_offsets"); goto fail; }
        if (j.tok[dt].type != LSAE__J_STR || !lsae__json_str(&j, dt, dname, sizeof dname)) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has a bad dtype", path, t->name); goto fail; }
        for (q = 0; q < sizeof lsae__st_dtypes / sizeof lsae__st_dtypes[0]; ++q)
            if (strcmp(dname, lsae__st_dtypes[q].name) == 0) break;
        if (q == sizeof lsae__st_dtypes / sizeof lsae__st_dtypes[0]) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has unknown dtype '%s'", path, t->name, dname); goto fail; }
        memcpy(t->dtype_name, dname, strlen(dname) + 1);
        t->dtype = lsae__st_dtypes[q].code;
        t->elem_size = lsae__st_dtypes[q].size;
        if (j.tok[sh].type != LSAE__J_ARR || j.tok[sh].size > LSAE__ST_MAX_DIMS) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has a bad shape (an array of at most %d sizes is expected)", path, t->name, LSAE__ST_MAX_DIMS); goto fail; }
        t->ndim = (int)j.tok[sh].size;
        t->numel = 1;
        for (q = 0; q < j.tok[sh].size; ++q) {
            size_t e = sh + 1 + q; /* sizes are scalars: one token each */
            if (!lsae__json_u64(&j, e, (uint64_t)1 << 62, &t->shape[q])) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has a bad size in its shape", path, t->name); goto fail; }
            if (t->shape[q] && t->numel > ((uint64_t)1 << 62) / t->shape[q]) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has a shape whose product overflows", path, t->name); goto fail; }
            t->numel *= t->shape[q];
        }
        if (j.tok[off].type != LSAE__J_ARR || j.tok[off].size != 2 ||
            !lsae__json_u64(&j, off + 1, (uint64_t)1 << 62, &t->begin) || !lsae__json_u64(&j, off + 2, (uint64_t)1 << 62, &t->end) || t->end < t->begin) {
            r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has bad data_offsets (two byte offsets, begin <= end, expected)", path, t->name);
            goto fail;
        }
        if (t->numel > ((uint64_t)1 << 62) / t->elem_size || t->numel * t->elem_size != t->end - t->begin) {
            r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' spans %llu bytes but its shape and dtype %s need %llu", path, t->name,
                          (unsigned long long)(t->end - t->begin), dname, (unsigned long long)(t->numel * t->elem_size));
            goto fail;
        }
        if (t->end > data_len) {
            r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' ends at data byte %llu, past the end of the file (%llu data bytes): truncated?", path, t->name,
                          (unsigned long long)t->end, (unsigned long long)data_len);
            goto fail;
        }
        for (q = 0; q < n; ++q)
            if (strcmp(st->t[q].name, t->name) == 0) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' appears twice", path, t->name); goto fail; }
        ++n;
    }
    st->n = n;
    lsae__json_free(&j);
    /* the tensors must tile [0, data_len) */
    {
        lsae__st_tensor *sorted = (lsae__st_tensor *)lsae__alloc_array(a, n ? n : 1, sizeof(lsae__st_tensor), "safetensors check");
        if (!sorted) { lsae__st_free(st); return LSAE_OUT_OF_MEMORY; }
        if (n) memcpy(sorted, st->t, n * sizeof(lsae__st_tensor));
        qsort(sorted, n, sizeof(lsae__st_tensor), lsae__st_cmp_begin);
        at = 0;
        for (i = 0; i < n; ++i) {
            if (sorted[i].begin != at) {
                r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' starts at data byte %llu where %llu was expected (tensors overlap or leave a gap)",
                              path, sorted[i].name, (unsigned long long)sorted[i].begin, (unsigned long long)at);
                lsae__free(a, sorted);
                lsae__st_free(st);
                return r;
            }
            at = sorted[i].end;
        }
        lsae__free(a, sorted);
        if (at != data_len) {
            lsae__st_free(st);
            return lsae__err(LSAE_BAD_FILE, "%s: tensors cover %llu data bytes but the file holds %llu after its header (truncated or padded?)",
                             path, (unsigned long long)at, (unsigned long long)data_len);
        }
    }
    return LSAE_OK;
fail:
    lsae__json_free(&j);
    lsae__st_free(st);
    return r;
}

/* Open path and read its header. f is left open for lsae__st_read_f32. */
static lsae_result lsae__st_open(const char *path, const lsae_allocator *a, FILE **fp, lsae__st *st)
{
    FILE *f;
    unsigned char len8[8];
    uint64_t hlen = 0, size;
    char *hdr;
    lsae_result r;
    int i;
    *fp = NULL;
    memset(st, 0, sizeof *st);
    if ((r = lsae__open_read(path, &f)) != LSAE_OK) return r;
    if (!lsae__file_size(f, &size)) { fclose(f); return lsae__err(LSAE_IO_ERROR, "%s: cannot find its size", path); }
    if (size < 8 || fread(len8, 1, 8, f) != 8) { fclose(f); return lsae__err(LSAE_BAD_FILE, "%s: %llu bytes is too short for a safetensors file (8-byte header length expected)", path, (unsigned long long)size); }
    for (i = 7; i >= 0; --i) hlen = (hlen << 8) | len8[i];
    if (hlen > LSAE_MAX_SAFETENSORS_HEADER) { fclose(f); return lsae__err(LSAE_BAD_FILE, "%s: safetensors header claims %llu bytes, more than the %u allowed", path, (unsigned long long)hlen, (unsigned)LSAE_MAX_SAFETENSORS_HEADER); }
    if (hlen > size - 8) { fclose(f); return lsae__err(LSAE_BAD_FILE, "%s: safetensors header claims %llu bytes but the file has only %llu after the length", path, (unsigned long long)hlen, (unsigned long long)(size - 8)); }
    hdr = (char *)lsae__malloc(a, (size_t)hlen + 1);
    if (!hdr) { fclose(f); return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory for a %llu-byte header", path, (unsigned long long)hlen); }
    if (fread(hdr, 1, (size_t)hlen, f) != (size_t)hlen) { lsae__free(a, hdr); fclose(f); return lsae__err(LSAE_IO_ERROR, "%s: read of the header failed", path); }
    /* the format pads the header with spaces; trailing ones are fine JSON whitespace */
    r = lsae__st_parse(path, hdr, (size_t)hlen, size, a, st);
    lsae__free(a, hdr);
    if (r != LSAE_OK) { fclose(f); return r; }
    *fp = f;
    return LSAE_OK;
}

static const lsae__st_tensor *lsae__st_find(const lsae__st *st, const char *name)
{
    size_t i;
    for (i = 0; i < st->n; ++i)
        if (strcmp(st->t[i].name, name) == 0) return &st->t[i];
    return NULL;
}

/* Read elements [first, first + count) of tensor t as floats into dst. */
static lsae_result lsae__st_read_f32(FILE *f, const char *path, const lsae__st *st, const lsae__st_tensor *t, uint64_t first, size_t count, float *dst)
{
    unsigned char buf[1 << 16];
    size_t per = sizeof buf / t->elem_size, done = 0;
    if (t->dtype == LSAE__DT_OTHER)
        return lsae__err(LSAE_UNSUPPORTED, "%s: tensor '%s' is %s; only F32, F16, BF16 and F64 can be read as floats", path, t->name, t->dtype_name);
    if (first > t->numel || count > t->numel - first)
        return lsae__err(LSAE_INVALID_ARGS, "%s: elements %llu..%llu asked of tensor '%s' with %llu", path, (unsigned long long)first, (unsigned long long)(first + count), t->name, (unsigned long long)t->numel);
    if (t->dtype == LSAE__DT_F32 && lsae__little_endian()) {
        /* straight into place */
        if (!lsae__seek(f, st->data_start + t->begin + first * 4) || (count && fread(dst, 4, count, f) != count))
            return lsae__err(LSAE_IO_ERROR, "%s: read of tensor '%s' failed", path, t->name);
        return LSAE_OK;
    }
    if (!lsae__seek(f, st->data_start + t->begin + first * t->elem_size))
        return lsae__err(LSAE_IO_ERROR, "%s: seek to tensor '%s' failed", path, t->name);
    while (done < count) {
        size_t n = count - done < per ? count - done : per, i;
        if (fread(buf, t->elem_size, n, f) != n) return lsae__err(LSAE_IO_ERROR, "%s: read of tensor '%s' failed", path, t->name);
        if (t->dtype == LSAE__DT_F64) {
            for (i = 0; i < n; ++i) {
                uint64_t b = 0;
                double v;
                int q;
                for (q = 7; q >= 0; --q) b = (b << 8) | buf[8 * i + (size_t)q];
                memcpy(&v, &b, 8);
                dst[done + i] = (float)v;
            }
        } else {
            lsae__to_f32(dst + done, buf, n, t->dtype);
        }
        done += n;
    }
    return LSAE_OK;
}

/* The one writer of the saved files' data (sae.safetensors, state.bin):
   bytes into an lsae__afile, hashed on the way when h is set (state.bin's
   checksum). The data comes from an lsae__src: whole arrays in memory
   (lsae_model_save, lsae_checkpoint_save) or rows asked piece by piece of
   the caller (lsae_model_save_pieces, lsae_checkpoint_save_pieces), so
   both write the same bytes by the same code. */
typedef struct lsae__hash lsae__hash;
static void lsae__hash_update(lsae__hash *s, const void *data, size_t n);
static void lsae__put_le(unsigned char *p, uint64_t v, int nbytes);

typedef struct lsae__ckpt_writer {
    lsae__afile af;
    lsae__hash *h;   /* NULL: no checksum */
} lsae__ckpt_writer;

static void lsae__cw_write(lsae__ckpt_writer *w, const void *p, size_t n)
{
    if (w->h) lsae__hash_update(w->h, p, n);
    lsae__afile_write(&w->af, p, n);
}

/* floats as little-endian bytes */
static void lsae__cw_floats(lsae__ckpt_writer *w, const float *x, size_t n)
{
    if (lsae__little_endian()) { lsae__cw_write(w, x, n * sizeof(float)); return; }
    {
        unsigned char b[4];
        size_t i;
        for (i = 0; i < n; ++i) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            lsae__put_le(b, u, 4);
            lsae__cw_write(w, b, 4);
        }
    }
}

/* uint64s as little-endian bytes */
static void lsae__cw_u64s(lsae__ckpt_writer *w, const uint64_t *x, size_t n)
{
    if (lsae__little_endian()) { lsae__cw_write(w, x, n * sizeof(uint64_t)); return; }
    {
        unsigned char b[8];
        size_t i;
        for (i = 0; i < n; ++i) { lsae__put_le(b, x[i], 8); lsae__cw_write(w, b, 8); }
    }
}

/* Where the writer gets an array's values, by its lsae_piece number: a
   whole array (whole[what]), else the caller's fetch into buf, one piece of
   rows at a time (the latent-indexed arrays at the bounds, b_dec and its
   moments in one piece of d). */
typedef struct lsae__src {
    const void *whole[LSAE_PIECE_COUNT];
    float theta;               /* the threshold, whole[LSAE_PIECE_THRESHOLD] points here */
    const size_t *bounds;      /* nbounds piece boundaries in latents, 0 .. L */
    size_t nbounds;
    lsae_piece_fn fetch;
    void *ctx;
    void *buf;                 /* the largest piece */
    size_t one[2];             /* bounds of one piece, 0 and L */
} lsae__src;

static const char *lsae__piece_names[LSAE_PIECE_COUNT] = {
    "W_enc", "b_enc", "W_dec", "b_dec", "Adam m of W_enc", "Adam m of b_enc", "Adam m of W_dec", "Adam m of b_dec",
    "Adam v of W_enc", "Adam v of b_enc", "Adam v of W_dec", "Adam v of b_dec", "samples since fired", "batchtopk threshold"
};

/* indexed by latent: fetched at the bounds */
static int lsae__piece_by_latent(int what)
{
    return what == LSAE_PIECE_SINCE_FIRED || (what < LSAE_PIECE_SINCE_FIRED && what % 4 != LSAE_PIECE_B_DEC);
}

/* Array `what`, rows [0, rows) of per values each, into w. */
static lsae_result lsae__src_emit(lsae__src *s, lsae__ckpt_writer *w, int what, size_t rows, size_t per)
{
    const int split = lsae__piece_by_latent(what);
    size_t j, np = split ? s->nbounds - 1 : 1;
    if (s->whole[what]) {
        if (what == LSAE_PIECE_SINCE_FIRED) lsae__cw_u64s(w, (const uint64_t *)s->whole[what], rows * per);
        else lsae__cw_floats(w, (const float *)s->whole[what], rows * per);
        return LSAE_OK;
    }
    if (!s->fetch) return lsae__err(LSAE_ERROR, "%s: internal: no data for %s", w->af.path, lsae__piece_names[what]);
    for (j = 0; j < np; ++j) {
        size_t l0 = split ? s->bounds[j] : 0, n = split ? s->bounds[j + 1] - l0 : rows;
        lsae_result r = s->fetch(s->ctx, what, l0, n, s->buf);
        if (r != LSAE_OK)
            return lsae__err(r, "%s: the fetch of rows [%zu, %zu) of %s failed (%s)", w->af.path, l0, l0 + n, lsae__piece_names[what], lsae_result_string(r));
        if (what == LSAE_PIECE_SINCE_FIRED) lsae__cw_u64s(w, (const uint64_t *)s->buf, n * per);
        else lsae__cw_floats(w, (const float *)s->buf, n * per);
    }
    return LSAE_OK;
}

/* Write F32 tensors as a safetensors file (atomically). Tensors are laid out
   in name order, as the safetensors library does for one dtype. Each
   tensor's data is its data array, or (data NULL) src's array `what`. */
typedef struct lsae__st_out {
    const char *name;
    int ndim;
    uint64_t shape[2];
    const float *data;
    int what;
} lsae__st_out;

static int lsae__st_out_cmp(const void *a, const void *b)
{
    return strcmp(((const lsae__st_out *)a)->name, ((const lsae__st_out *)b)->name);
}

static lsae_result lsae__st_write_src(const char *path, lsae__st_out *ts, size_t n, const char *metadata_json, lsae__src *src)
{
    char hdr[8192];
    size_t hl = 0, i;
    uint64_t at = 0, hlen;
    unsigned char len8[8];
    lsae__ckpt_writer w;
    lsae_result r;
    int wn, q;
    qsort(ts, n, sizeof *ts, lsae__st_out_cmp);
    wn = snprintf(hdr, sizeof hdr, "{\"__metadata__\":%s", metadata_json ? metadata_json : "{\"format\":\"pt\"}");
    if (wn < 0 || (size_t)wn >= sizeof hdr) return lsae__err(LSAE_INVALID_ARGS, "%s: safetensors metadata too long", path);
    hl = (size_t)wn;
    for (i = 0; i < n; ++i) {
        uint64_t numel = 1, bytes;
        for (q = 0; q < ts[i].ndim; ++q) numel *= ts[i].shape[q];
        bytes = numel * 4;
        if (ts[i].ndim == 0)
            wn = snprintf(hdr + hl, sizeof hdr - hl, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[%llu,%llu]}",
                         ts[i].name, (unsigned long long)at, (unsigned long long)(at + bytes));
        else if (ts[i].ndim == 1)
            wn = snprintf(hdr + hl, sizeof hdr - hl, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%llu],\"data_offsets\":[%llu,%llu]}",
                         ts[i].name, (unsigned long long)ts[i].shape[0], (unsigned long long)at, (unsigned long long)(at + bytes));
        else
            wn = snprintf(hdr + hl, sizeof hdr - hl, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%llu,%llu],\"data_offsets\":[%llu,%llu]}",
                         ts[i].name, (unsigned long long)ts[i].shape[0], (unsigned long long)ts[i].shape[1], (unsigned long long)at, (unsigned long long)(at + bytes));
        if (wn < 0 || (size_t)wn >= sizeof hdr - hl) return lsae__err(LSAE_INVALID_ARGS, "%s: safetensors header too long", path);
        hl += (size_t)wn;
        at += bytes;
    }
    if (hl + 1 >= sizeof hdr) return lsae__err(LSAE_INVALID_ARGS, "%s: safetensors header too long", path);
    hdr[hl++] = '}';
    while (hl % 8 && hl < sizeof hdr) hdr[hl++] = ' '; /* pad so the data is 8-byte aligned */
    hlen = hl;
    for (q = 0; q < 8; ++q) len8[q] = (unsigned char)(hlen >> (8 * q));
    if ((r = lsae__afile_open(&w.af, path)) != LSAE_OK) return r;
    w.h = NULL;
    lsae__cw_write(&w, len8, 8);
    lsae__cw_write(&w, hdr, hl);
    for (i = 0; i < n; ++i) {
        size_t rows = ts[i].ndim ? (size_t)ts[i].shape[0] : 1, per = ts[i].ndim == 2 ? (size_t)ts[i].shape[1] : 1;
        if (ts[i].data) lsae__cw_floats(&w, ts[i].data, rows * per);
        else if (!src || (r = lsae__src_emit(src, &w, ts[i].what, rows, per)) != LSAE_OK) {
            lsae__afile_abort(&w.af);
            return src ? r : lsae__err(LSAE_ERROR, "%s: internal: no data for tensor '%s'", path, ts[i].name);
        }
    }
    return lsae__afile_commit(&w.af);
}

/* ----------------------------------------------------------- model files */

/* cfg.json of every version in the wild:
   - latent-sae 2024: {"expansion_factor", "normalize_decoder", "num_latents", "k", "signed", "d_in"}
   - latent-sae today: about 30 keys, "sae_type": "TOPK", plus training-only
     ones (k_anneal, decorr_alpha, ...) that do not change what a saved model
     computes, and two that do: "use_skip" (refused) and "mean_center" (an
     input_mean tensor, folded into b_dec on load: x - mean - b_dec is
     x - (b_dec + mean), and the decoder adds both back, so a plain SAE with
     b_dec + mean computes the same thing)
   - sparsify: "activation": "topk" | "groupmax", "skip_connection", "transcode"
   Unknown keys are ignored; num_latents 0 means d_in * expansion_factor. */
/* A comma-separated list as latent-sae stores matryoshka_sizes / _ks /
   _loss_weights ("256,1024,4096"; "" = none): up to LSAE_MAX_LEVELS numbers
   into out (as doubles), their count into *n. 0 on a malformed list. */
static int lsae__parse_list(const char *s, double *out, size_t *n)
{
    *n = 0;
    while (*s == ' ') ++s;
    if (!*s) return 1;
    for (;;) {
        char *end;
        double v;
        while (*s == ' ') ++s;
        v = strtod(s, &end);
        if (end == s || !isfinite(v) || *n >= LSAE_MAX_LEVELS) return 0;
        out[(*n)++] = v;
        s = end;
        while (*s == ' ') ++s;
        if (!*s) return 1;
        if (*s++ != ',') return 0;
    }
}

static lsae_result lsae__config_from_json(const char *text, size_t len, const lsae_allocator *alloc, lsae_config *cfg, int *mean_center, float *theta)
{
    lsae__json j;
    lsae_result r;
    size_t t;
    uint64_t u;
    int b, type = LSAE_SAE_TOPK;
    char s[64], list[1024];
    *mean_center = 0;
    *theta = 0.0f;
    if (!text || !cfg) return lsae__err(LSAE_INVALID_ARGS, "lsae_config_from_json: text and cfg must not be NULL");
    if ((r = lsae__json_parse(&j, text, len, alloc)) != LSAE_OK) return r;
    if (j.tok[0].type != LSAE__J_OBJ) { lsae__json_free(&j); return lsae__err(LSAE_BAD_FILE, "cfg.json is not a JSON object"); }
#define LSAE__CFG_FAIL(code, ...) do { r = lsae__err(code, __VA_ARGS__); lsae__json_free(&j); return r; } while (0)
    /* variants that are not a plain TopK SAE: refuse, never misread */
    if ((t = lsae__json_get(&j, 0, "sae_type")) != 0) {
        size_t q;
        if (j.tok[t].type != LSAE__J_STR || !lsae__json_str(&j, t, s, sizeof s)) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: sae_type is not a short string");
        for (q = 0; s[q]; ++q) if (s[q] >= 'A' && s[q] <= 'Z') s[q] = (char)(s[q] - 'A' + 'a');
        /* latent-sae's serialiser writes the enum's name ("BATCHTOPK");
           its value ("batchtopk") and str(SaeType.X) are read too */
        q = strncmp(s, "saetype.", 8) == 0 ? 8 : 0;
        if (strcmp(s + q, "topk") == 0) type = LSAE_SAE_TOPK;
        else if (strcmp(s + q, "batchtopk") == 0) type = LSAE_SAE_BATCHTOPK;
        else if (strcmp(s + q, "matryoshka") == 0) type = LSAE_SAE_MATRYOSHKA;
        else LSAE__CFG_FAIL(LSAE_UNSUPPORTED, "cfg.json: sae_type \"%s\" is not supported; latentsae implements topk, batchtopk and matryoshka SAEs", s);
    }
    if ((t = lsae__json_get(&j, 0, "activation")) != 0) {
        if (j.tok[t].type != LSAE__J_STR || !lsae__json_str(&j, t, s, sizeof s)) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: activation is not a short string");
        if (strcmp(s, "topk") != 0) LSAE__CFG_FAIL(LSAE_UNSUPPORTED, "cfg.json: activation \"%s\" is not supported; latentsae implements TopK only (not sparsify's groupmax)", s);
    }
    if ((t = lsae__json_get(&j, 0, "signed")) != 0 && lsae__json_bool(&j, t, &b) && b)
        LSAE__CFG_FAIL(LSAE_UNSUPPORTED, "cfg.json: \"signed\": true (signed activations) is not supported; latentsae implements ReLU TopK SAEs");
    if ((t = lsae__json_get(&j, 0, "skip_connection")) != 0 && lsae__json_bool(&j, t, &b) && b)
        LSAE__CFG_FAIL(LSAE_UNSUPPORTED, "cfg.json: \"skip_connection\": true is not supported (the model has a W_skip term latentsae does not compute)");
    if ((t = lsae__json_get(&j, 0, "transcode")) != 0 && lsae__json_bool(&j, t, &b) && b)
        LSAE__CFG_FAIL(LSAE_UNSUPPORTED, "cfg.json: \"transcode\": true (a transcoder, predicting another layer) is not supported");
    if ((t = lsae__json_get(&j, 0, "use_skip")) != 0 && lsae__json_bool(&j, t, &b) && b)
        LSAE__CFG_FAIL(LSAE_UNSUPPORTED, "cfg.json: \"use_skip\": true (latent-sae's skip connection, W_skip) is not supported");
    if ((t = lsae__json_get(&j, 0, "mean_center")) != 0 && !lsae__json_bool(&j, t, mean_center))
        LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"mean_center\" must be true or false");

    if (!(t = lsae__json_get(&j, 0, "d_in"))) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: no \"d_in\" (the input width); latent-sae and sparsify both write it");
    if (!lsae__json_u64(&j, t, (uint64_t)INT32_MAX, &u) || u == 0) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"d_in\" must be a positive integer");
    *cfg = lsae_config_default((size_t)u);
    if ((t = lsae__json_get(&j, 0, "num_latents")) != 0) {
        if (!lsae__json_u64(&j, t, (uint64_t)INT32_MAX, &u)) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"num_latents\" must be an integer >= 0");
        cfg->num_latents = (size_t)u;
    }
    if ((t = lsae__json_get(&j, 0, "expansion_factor")) != 0) {
        if (!lsae__json_u64(&j, t, (uint64_t)INT32_MAX, &u)) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"expansion_factor\" must be an integer >= 0");
        cfg->expansion_factor = (size_t)u;
    }
    if ((t = lsae__json_get(&j, 0, "k")) != 0) {
        if (!lsae__json_u64(&j, t, (uint64_t)INT32_MAX, &u) || u == 0) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"k\" must be a positive integer");
        cfg->k = (size_t)u;
    }
    if ((t = lsae__json_get(&j, 0, "normalize_decoder")) != 0 && !lsae__json_bool(&j, t, &cfg->normalize_decoder))
        LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"normalize_decoder\" must be true or false");
    if ((t = lsae__json_get(&j, 0, "multi_topk")) != 0 && !lsae__json_bool(&j, t, &cfg->multi_topk))
        LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"multi_topk\" must be true or false");
    /* the SAE type's settings (docs/math.md, 3.5); a TopK file's
       batchtopk/matryoshka keys (latent-sae writes them all) are ignored */
    cfg->sae_type = (lsae_sae_type)type;
    if (lsae__has_threshold(cfg) || type == LSAE_SAE_BATCHTOPK || type == LSAE_SAE_MATRYOSHKA) {
        double v;
        if ((t = lsae__json_get(&j, 0, "batchtopk_threshold_beta")) != 0) {
            if (!lsae__json_double(&j, t, &v)) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"batchtopk_threshold_beta\" must be a number");
            cfg->batchtopk_threshold_beta = v;
        }
        if ((t = lsae__json_get(&j, 0, "batchtopk_threshold")) != 0) {
            if (!lsae__json_double(&j, t, &v) || !(v >= 0.0 && v <= FLT_MAX)) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"batchtopk_threshold\" must be a finite number >= 0");
            *theta = (float)v;
        }
        /* latent-sae always caps a batchtopk row at k: its files have no key */
        cfg->batchtopk_row_cap = type == LSAE_SAE_BATCHTOPK;
        if ((t = lsae__json_get(&j, 0, "batchtopk_row_cap")) != 0 && !lsae__json_bool(&j, t, &cfg->batchtopk_row_cap))
            LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"batchtopk_row_cap\" must be true or false");
    }
    if (type == LSAE_SAE_MATRYOSHKA) {
        static const char *keys[3] = { "matryoshka_sizes", "matryoshka_ks", "matryoshka_loss_weights" };
        double vals[3][LSAE_MAX_LEVELS];
        size_t n[3], i, q;
        for (q = 0; q < 3; ++q) {
            n[q] = 0;
            if (!(t = lsae__json_get(&j, 0, keys[q]))) continue;
            if (j.tok[t].type != LSAE__J_STR || !lsae__json_str(&j, t, list, sizeof list) || !lsae__parse_list(list, vals[q], &n[q]))
                LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"%s\" must be a string of at most %d comma-separated numbers, as \"256,1024,4096\"", keys[q], LSAE_MAX_LEVELS);
        }
        if (n[0] == 0) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: a matryoshka SAE needs \"matryoshka_sizes\"");
        cfg->matryoshka_form = LSAE_MATRYOSHKA_PER_LEVEL; /* latent-sae's only form */
        if ((t = lsae__json_get(&j, 0, "matryoshka_form")) != 0) {
            if (j.tok[t].type != LSAE__J_STR || !lsae__json_str(&j, t, s, sizeof s)) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: matryoshka_form is not a short string");
            if (strcmp(s, "nested") == 0) cfg->matryoshka_form = LSAE_MATRYOSHKA_NESTED;
            else if (strcmp(s, "per_level") != 0 && strcmp(s, "per-level") != 0)
                LSAE__CFG_FAIL(LSAE_UNSUPPORTED, "cfg.json: matryoshka_form \"%s\" is not \"nested\" or \"per_level\"", s);
        }
        if (cfg->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL ? n[1] != n[0] : (n[1] && n[1] != n[0]))
            LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: %zu matryoshka_sizes but %zu matryoshka_ks", n[0], n[1]);
        if (n[2] && n[2] != n[0])
            LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: %zu matryoshka_sizes but %zu matryoshka_loss_weights (\"\" means all 1)", n[0], n[2]);
        cfg->matryoshka_levels = n[0];
        for (i = 0; i < n[0]; ++i) {
            if (vals[0][i] < 1 || vals[0][i] > INT32_MAX || vals[0][i] != floor(vals[0][i]) ||
                (n[1] && (vals[1][i] < 1 || vals[1][i] > INT32_MAX || vals[1][i] != floor(vals[1][i]))))
                LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: matryoshka_sizes and matryoshka_ks must be positive integers");
            cfg->matryoshka_sizes[i] = (size_t)vals[0][i];
            /* the nested form keeps one k: its ks (k at every level) are for latent-sae */
            cfg->matryoshka_ks[i] = cfg->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL ? (size_t)vals[1][i] : 0;
            cfg->matryoshka_loss_weights[i] = n[2] ? vals[2][i] : 0.0;
        }
        if ((t = lsae__json_get(&j, 0, "matryoshka_use_batchtopk")) != 0 && !lsae__json_bool(&j, t, &cfg->matryoshka_use_batchtopk))
            LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"matryoshka_use_batchtopk\" must be true or false");
        /* the per-level form has no AuxK (docs/math.md, 3.3) */
        if (cfg->matryoshka_form == LSAE_MATRYOSHKA_PER_LEVEL) cfg->auxk_alpha = 0.0;
    }
    if ((t = lsae__json_get(&j, 0, "k_anneal")) != 0 && !lsae__json_bool(&j, t, &cfg->k_anneal))
        LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"k_anneal\" must be true or false");
    if (cfg->k_anneal) {
        double v;
        if ((t = lsae__json_get(&j, 0, "k_anneal_start")) != 0) {
            if (!lsae__json_u64(&j, t, (uint64_t)INT32_MAX, &u)) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"k_anneal_start\" must be an integer >= 0");
            cfg->k_anneal_start = (size_t)u;
        }
        if ((t = lsae__json_get(&j, 0, "k_anneal_pct")) != 0) {
            if (!lsae__json_double(&j, t, &v)) LSAE__CFG_FAIL(LSAE_BAD_FILE, "cfg.json: \"k_anneal_pct\" must be a number");
            cfg->k_anneal_pct = v;
        }
    }
#undef LSAE__CFG_FAIL
    lsae__json_free(&j);
    return lsae_config_validate(cfg);
}

LSAE_DEF lsae_result lsae_config_from_json(const char *text, size_t len, lsae_config *cfg)
{
    int mean_center;
    float theta;
    return lsae__config_from_json(text, len, NULL, cfg, &mean_center, &theta);
}

/* v with the fewest digits (15 to 17) that read back as the same double:
   0.3, not 0.29999999999999999 */
static void lsae__short_double(char *buf, size_t cap, double v)
{
    int p;
    for (p = 15; p <= 17; ++p) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* append printf output to buf [cap] at *at; 0 when it does not fit */
static int lsae__cat(char *buf, size_t cap, size_t *at, const char *fmt, ...)
{
    va_list ap;
    int w;
    if (*at >= cap) return 0;
    va_start(ap, fmt);
    w = vsnprintf(buf + *at, cap - *at, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= cap - *at) { *at = cap; return 0; }
    *at += (size_t)w;
    return 1;
}

/* The type's keys of cfg.json (docs/math.md 3.5), after the TopK ones:
   latent-sae's names and spellings (sae_type as the enum's name, the
   Matryoshka lists as comma strings), plus our batchtopk_row_cap and
   matryoshka_form. A nested model writes matryoshka_ks = k at every level,
   so that latent-sae encodes its best k of all L. */
static void lsae__cfg_type_keys(const lsae_config *c, size_t k, float theta, char *buf, size_t cap, size_t *at)
{
    static const char *lists[3] = { "matryoshka_sizes", "matryoshka_ks", "matryoshka_loss_weights" };
    size_t i, q, nw = 0;
    char num[40];
    lsae__cat(buf, cap, at, ", \"sae_type\": \"%s\"", c->sae_type == LSAE_SAE_BATCHTOPK ? "BATCHTOPK" : c->sae_type == LSAE_SAE_MATRYOSHKA ? "MATRYOSHKA" : "TOPK");
    if (lsae__has_threshold(c)) {
        lsae__short_double(num, sizeof num, c->batchtopk_threshold_beta);
        lsae__cat(buf, cap, at, ", \"batchtopk_threshold\": %.9g, \"batchtopk_threshold_beta\": %s, \"batchtopk_row_cap\": %s",
                  (double)theta, num, c->batchtopk_row_cap ? "true" : "false");
    }
    if (c->sae_type == LSAE_SAE_MATRYOSHKA) {
        for (i = 0; i < c->matryoshka_levels; ++i) nw += c->matryoshka_loss_weights[i] != 0.0;
        for (q = 0; q < 3; ++q) {
            lsae__cat(buf, cap, at, ", \"%s\": \"", lists[q]);
            for (i = 0; i < c->matryoshka_levels && (q < 2 || nw); ++i) {
                if (q == 0) lsae__cat(buf, cap, at, "%s%zu", i ? "," : "", c->matryoshka_sizes[i]);
                else if (q == 1) lsae__cat(buf, cap, at, "%s%zu", i ? "," : "", c->matryoshka_form == LSAE_MATRYOSHKA_NESTED ? k : c->matryoshka_ks[i]);
                else { lsae__short_double(num, sizeof num, c->matryoshka_loss_weights[i]); lsae__cat(buf, cap, at, "%s%s", i ? "," : "", num); }
            }
            lsae__cat(buf, cap, at, "\"");
        }
        lsae__cat(buf, cap, at, ", \"matryoshka_use_batchtopk\": %s, \"matryoshka_form\": \"%s\"", c->matryoshka_use_batchtopk ? "true" : "false",
                  c->matryoshka_form == LSAE_MATRYOSHKA_NESTED ? "nested" : "per_level");
    }
    lsae__short_double(num, sizeof num, c->k_anneal_pct);
    lsae__cat(buf, cap, at, ", \"k_anneal\": %s, \"k_anneal_start\": %zu, \"k_anneal_pct\": %s", c->k_anneal ? "true" : "false", c->k_anneal_start, num);
}

/* dir/sae.safetensors and dir/cfg.json of a d x L model of config c
   (num_latents resolved), its arrays from src (src->theta the threshold). */
static lsae_result lsae__model_write(const char *dir, const lsae_config *c, size_t d, size_t L, size_t k, lsae__src *src)
{
    char path[4096], cfgtext[4096];
    lsae__st_out ts[LSAE__NUM_TENSORS + 1];
    lsae__afile af;
    lsae_result r;
    int i, w, nts = LSAE__NUM_TENSORS;
    size_t at;
    if ((r = lsae__mkdir(dir)) != LSAE_OK) return r;
    src->whole[LSAE_PIECE_THRESHOLD] = &src->theta;
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
        ts[i].name = lsae__tensor_names[i];
        ts[i].data = NULL;
        ts[i].what = i;   /* LSAE_PIECE_W_ENC ... LSAE_PIECE_B_DEC */
        ts[i].ndim = (i == LSAE__W_ENC || i == LSAE__W_DEC) ? 2 : 1;
        ts[i].shape[0] = i == LSAE__B_DEC ? d : L;
        ts[i].shape[1] = d;
    }
    if (lsae__has_threshold(c)) {
        /* theta as latent-sae registers it: a 0-d float32 buffer */
        ts[nts].name = "batchtopk_threshold";
        ts[nts].data = NULL;
        ts[nts].what = LSAE_PIECE_THRESHOLD;
        ts[nts].ndim = 0;
        ts[nts].shape[0] = ts[nts].shape[1] = 0;
        ++nts;
    }
    if (!lsae__path_join(path, sizeof path, dir, "sae.safetensors")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    if ((r = lsae__st_write_src(path, ts, (size_t)nts, NULL, src)) != LSAE_OK) return r;
    /* the keys latent-sae's SaeConfig and sparsify's SparseCoderConfig read;
       num_latents is written resolved so no reader has to multiply. A plain
       TopK model writes exactly these (older readers load it); other types
       and k-annealing add theirs before d_in. */
    w = lsae__snprintf(cfgtext, sizeof cfgtext,
                 "{\"expansion_factor\": %zu, \"normalize_decoder\": %s, \"num_latents\": %zu, \"k\": %zu, \"multi_topk\": %s",
                 L % d == 0 ? L / d : (L + d - 1) / d, c->normalize_decoder ? "true" : "false", L, k,
                 c->multi_topk ? "true" : "false");
    if (w < 0 || (size_t)w >= sizeof cfgtext) return lsae__err(LSAE_ERROR, "cfg.json text too long");
    at = (size_t)w;
    if (c->sae_type != LSAE_SAE_TOPK || c->k_anneal) lsae__cfg_type_keys(c, k, src->theta, cfgtext, sizeof cfgtext, &at);
    if (!lsae__cat(cfgtext, sizeof cfgtext, &at, ", \"d_in\": %zu}\n", d)) return lsae__err(LSAE_ERROR, "cfg.json text too long");
    w = (int)at;
    if (!lsae__path_join(path, sizeof path, dir, "cfg.json")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    if ((r = lsae__afile_open(&af, path)) != LSAE_OK) return r;
    lsae__afile_write(&af, cfgtext, (size_t)w);
    return lsae__afile_commit(&af);
}

/* src of a whole model's weights, in place */
static void lsae__src_of_model(lsae__src *s, const lsae_model *m)
{
    int i;
    memset(s, 0, sizeof *s);
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) s->whole[i] = m->params + m->lay.offset[i];
    s->theta = m->batchtopk_threshold;
}

LSAE_DEF lsae_result lsae_model_save(const lsae_model *m, const char *dir)
{
    lsae__src src;
#ifdef LATENTSAE_CUDA
    lsae_result r;
#endif
    LSAE__REFUSE_SHARD(m, "lsae_model_save");
    if (!m || !dir) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_save: model and dir must not be NULL");
#ifdef LATENTSAE_CUDA
    if (m->cuda && (r = lsae__cuda_model_download(m->cuda, m->params)) != LSAE_OK) return r;
#endif
    lsae__src_of_model(&src, m);
    return lsae__model_write(dir, &m->cfg, m->d, m->L, m->k, &src);
}

/* The piecewise saves' start: cfg checked and resolved into *rc (as
   lsae_model_create resolves it), the bounds checked, the piece buffer
   allocated and the threshold fetched (types that save one). */
static lsae_result lsae__pieces_begin(const char *fn, const lsae_config *cfg, const size_t *bounds, size_t nbounds,
                                      lsae_piece_fn fetch, void *ctx, lsae_config *rc, lsae__src *s)
{
    size_t L, d, j, most = 0, per, bytes;
    lsae_result r;
    memset(s, 0, sizeof *s);
    if (!cfg || !fetch) return lsae__err(LSAE_INVALID_ARGS, "%s: cfg and fetch must not be NULL", fn);
    if ((r = lsae_config_validate(cfg)) != LSAE_OK) return lsae__err_prefix(r, "%s: ", fn);
    *rc = *cfg;
    d = cfg->d_in;
    L = lsae_config_num_latents(cfg);
    rc->num_latents = L;
    if (L % d == 0) rc->expansion_factor = L / d;
    if (!bounds && nbounds == 0) {
        /* one piece of all L */
        s->one[0] = 0;
        s->one[1] = L;
        bounds = s->one;
        nbounds = 2;
    }
    if (!bounds || nbounds < 2 || bounds[0] != 0 || bounds[nbounds - 1] != L)
        return lsae__err(LSAE_INVALID_ARGS, "%s: bounds must run from 0 to the model's %zu latents (at least two of them, or NULL and 0 for one piece)", fn, L);
    for (j = 0; j + 1 < nbounds; ++j) {
        if (bounds[j + 1] <= bounds[j])
            return lsae__err(LSAE_INVALID_ARGS, "%s: bounds[%zu] = %zu does not rise above bounds[%zu] = %zu", fn, j + 1, bounds[j + 1], j, bounds[j]);
        if (bounds[j + 1] - bounds[j] > most) most = bounds[j + 1] - bounds[j];
    }
    per = d * sizeof(float) > sizeof(uint64_t) ? d * sizeof(float) : sizeof(uint64_t);
    if (!lsae__mul_size(most, per, &bytes)) return lsae__err(LSAE_INVALID_ARGS, "%s: a piece of %zu x %zu is too large to address", fn, most, d);
    if (!(s->buf = lsae__alloc_array(NULL, bytes, 1, "a checkpoint piece"))) return LSAE_OUT_OF_MEMORY;
    s->bounds = bounds;
    s->nbounds = nbounds;
    s->fetch = fetch;
    s->ctx = ctx;
    if (lsae__has_threshold(rc)) {
        if ((r = fetch(ctx, LSAE_PIECE_THRESHOLD, 0, 1, &s->theta)) != LSAE_OK) {
            lsae__free(NULL, s->buf);
            s->buf = NULL;
            return lsae__err(r, "%s: the fetch of the batchtopk threshold failed (%s)", fn, lsae_result_string(r));
        }
    }
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_save_pieces(const char *dir, const lsae_config *cfg, const size_t *bounds, size_t nbounds,
                                            lsae_piece_fn fetch, void *ctx)
{
    lsae_config rc;
    lsae__src src;
    lsae_result r;
    if (!dir) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_save_pieces: dir must not be NULL");
    if ((r = lsae__pieces_begin("lsae_model_save_pieces", cfg, bounds, nbounds, fetch, ctx, &rc, &src)) != LSAE_OK) return r;
    r = lsae__model_write(dir, &rc, rc.d_in, rc.num_latents, rc.k, &src);
    lsae__free(NULL, src.buf);
    return r;
}

/* The four tensors of a d x L model are in st with their shapes and a
   float dtype. Checked on the header alone, so that lsae_model_load can
   refuse a cfg.json whose sizes the weights file does not hold before it
   allocates anything for them. */
static lsae_result lsae__check_weights(const char *path, const lsae__st *st, size_t d, size_t L)
{
    int i;
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
        const lsae__st_tensor *t = lsae__st_find(st, lsae__tensor_names[i]);
        uint64_t want0 = i == LSAE__B_DEC ? d : L;
        int want_nd = (i == LSAE__W_ENC || i == LSAE__W_DEC) ? 2 : 1;
        if (!t) return lsae__err(LSAE_BAD_FILE, "%s: no tensor '%s' (a latent-sae/sparsify SAE has encoder.weight, encoder.bias, W_dec, b_dec)", path, lsae__tensor_names[i]);
        if (t->ndim != want_nd || t->shape[0] != want0 || (want_nd == 2 && t->shape[1] != d)) {
            if (t->ndim < 2 && want_nd < 2)
                return lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has %llu elements, but cfg.json implies %llu", path, t->name, (unsigned long long)t->numel, (unsigned long long)want0);
            return lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has shape [%llu%s%llu], but cfg.json says [%llu%s%llu]", path, t->name,
                             (unsigned long long)t->shape[0], t->ndim > 1 ? ", " : "", t->ndim > 1 ? (unsigned long long)t->shape[1] : 0ull,
                             (unsigned long long)want0, want_nd > 1 ? ", " : "", want_nd > 1 ? (unsigned long long)d : 0ull);
        }
        if (t->dtype != LSAE__DT_F32 && t->dtype != LSAE__DT_F16 && t->dtype != LSAE__DT_BF16 && t->dtype != LSAE__DT_F64)
            return lsae__err(LSAE_UNSUPPORTED, "%s: tensor '%s' is %s; F32, F16, BF16 (or F64) expected", path, t->name, t->dtype_name);
    }
    return LSAE_OK;
}

/* Load sae.safetensors (path) into an existing model of the right
   shape. Any tensor beyond the four is refused (never ignored), except
   input_mean of a mean_center model, which is folded into b_dec, and the
   scalar batchtopk_threshold buffer latent-sae registers for some
   configurations but never reads when encoding a TopK SAE.
   A shard model (lsae_model_create_shard) gets only its latents' rows: the
   file must hold the full model's [shard_L, d] tensors, and each of
   encoder.weight, encoder.bias and W_dec is read from row shard_l0 on
   (the rows of a [L, d] tensor are contiguous in the file, so this is one
   seek and one read of L_r d values per tensor: a rank never holds, or
   reads into memory, the other shards' rows); b_dec is read whole. */
static lsae_result lsae__load_weights(lsae_model *m, const char *path, int mean_center)
{
    FILE *f;
    lsae__st st;
    lsae_result r;
    int i;
    size_t j;
    const size_t l0 = m->shard_l0, Lf = m->shard_L ? m->shard_L : m->L;
    if ((r = lsae__st_open(path, m->alloc, &f, &st)) != LSAE_OK) return r;
    if ((r = lsae__check_weights(path, &st, m->d, Lf)) != LSAE_OK) goto done;
    for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
        const lsae__st_tensor *t = lsae__st_find(&st, lsae__tensor_names[i]);
        /* the first element of this model's rows: row l0 of a [Lf, d] or
           [Lf] tensor (b_dec: 0); check_weights saw the shapes, and
           l0 + L <= Lf, so first + count <= numel, which st_read_f32 checks
           again */
        size_t per = i == LSAE__W_ENC || i == LSAE__W_DEC ? m->d : 1, first = 0;
        if (i != LSAE__B_DEC && !lsae__mul_size(l0, per, &first)) {
            r = lsae__err(LSAE_INVALID_ARGS, "%s: row %zu of tensor '%s' is past any addressable element", path, l0, t->name);
            goto done;
        }
        if ((r = lsae__st_read_f32(f, path, &st, t, first, m->lay.count[i], m->params + m->lay.offset[i])) != LSAE_OK) goto done;
        for (j = 0; j < m->lay.count[i]; ++j)
            if (!isfinite(m->params[m->lay.offset[i] + j])) {
                r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' holds NaN or Inf at element %zu", path, t->name, first + j);
                goto done;
            }
    }
    for (j = 0; j < st.n; ++j) {
        const lsae__st_tensor *t = &st.t[j];
        int q, known = 0;
        for (q = 0; q < LSAE__NUM_TENSORS; ++q) known |= strcmp(t->name, lsae__tensor_names[q]) == 0;
        if (known || (strcmp(t->name, "batchtopk_threshold") == 0 && t->numel == 1)) continue;
        if (strcmp(t->name, "input_mean") == 0 && mean_center) continue;
        if (strncmp(t->name, "W_skip", 6) == 0) { r = lsae__err(LSAE_UNSUPPORTED, "%s: holds %s (a skip connection), which latentsae does not compute", path, t->name); goto done; }
        if (strcmp(t->name, "input_mean") == 0) { r = lsae__err(LSAE_BAD_FILE, "%s: holds input_mean but cfg.json does not say \"mean_center\": true", path); goto done; }
        r = lsae__err(LSAE_UNSUPPORTED, "%s: holds tensor '%s', which a TopK SAE does not have; refusing rather than ignoring it", path, t->name);
        goto done;
    }
    {
        /* latent-sae's learned theta lives only in this buffer; ours too
           (cfg.json's number is a copy), so the tensor wins */
        const lsae__st_tensor *t = lsae__st_find(&st, "batchtopk_threshold");
        if (t && lsae__has_threshold(&m->cfg)) {
            float v;
            if ((r = lsae__st_read_f32(f, path, &st, t, 0, 1, &v)) != LSAE_OK) goto done;
            if (!(isfinite(v) && v >= 0.0f)) { r = lsae__err(LSAE_BAD_FILE, "%s: batchtopk_threshold is %g; a threshold must be finite and >= 0", path, (double)v); goto done; }
            m->batchtopk_threshold = v;
        }
    }
    if (mean_center) {
        const lsae__st_tensor *t = lsae__st_find(&st, "input_mean");
        float *mu;
        if (!t || t->ndim != 1 || t->shape[0] != m->d) { r = lsae__err(LSAE_BAD_FILE, "%s: cfg.json says \"mean_center\": true but there is no input_mean tensor of %zu values", path, m->d); goto done; }
        if (!(mu = (float *)lsae__alloc_array(m->alloc, m->d, sizeof(float), "input_mean"))) { r = LSAE_OUT_OF_MEMORY; goto done; }
        if ((r = lsae__st_read_f32(f, path, &st, t, 0, m->d, mu)) == LSAE_OK)
            for (j = 0; j < m->d; ++j) {
                /* the folded b_dec must be as finite as the tensors checked above */
                float v = m->params[m->lay.offset[LSAE__B_DEC] + j] + mu[j];
                if (!isfinite(v)) {
                    r = lsae__err(LSAE_BAD_FILE, "%s: input_mean[%zu] is %g; folded into b_dec it gives %g, not a finite number", path, j, (double)mu[j], (double)v);
                    break;
                }
                m->params[m->lay.offset[LSAE__B_DEC] + j] = v;
            }
        lsae__free(m->alloc, mu);
    }
done:
    fclose(f);
    lsae__st_free(&st);
    return r;
}

/* A latentsae / latent-sae / sparsify directory's cfg.json parsed (as
   lsae_model_load reads it: *mean_center, *theta from
   lsae__config_from_json) and checked against sae.safetensors' header, whose
   path goes to path. cfg.json's sizes are only claims: the weights file
   must hold them before a model of that size is allocated (a 20-byte
   cfg.json can describe petabytes). */
static lsae_result lsae__model_dir_cfg(const char *dir, const lsae_allocator *alloc, lsae_config *cfg, int *mean_center, float *theta,
                                       char *path, size_t cap)
{
    char *text = NULL;
    size_t len = 0; /* set by lsae__read_small_file; gcc cannot always see it */
    lsae_result r;
    FILE *f;
    lsae__st st;
    if (!lsae__path_join(path, cap, dir, "cfg.json")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    if ((r = lsae__read_small_file(path, 1 << 20, alloc, &text, &len)) != LSAE_OK) {
        if (r == LSAE_NOT_FOUND)
            return lsae__err(r, "%s: no cfg.json here; a model directory holds cfg.json and sae.safetensors", dir);
        return r;
    }
    r = lsae__config_from_json(text, len, alloc, cfg, mean_center, theta);
    lsae__free(alloc, text);
    if (r != LSAE_OK) return lsae__err_prefix(r, "%s: ", path);
    if (!lsae__path_join(path, cap, dir, "sae.safetensors")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    if ((r = lsae__st_open(path, alloc, &f, &st)) != LSAE_OK) return r;
    fclose(f);
    r = lsae__check_weights(path, &st, cfg->d_in, lsae_config_num_latents(cfg));
    lsae__st_free(&st);
    return r;
}

/* dir holds a SAELens model (sae_weights.safetensors, no sae.safetensors) */
static int lsae__is_saelens_dir(const char *dir)
{
    char path[4096];
    return lsae__path_join(path, sizeof path, dir, "sae.safetensors") && !lsae__exists(path) &&
           lsae__path_join(path, sizeof path, dir, "sae_weights.safetensors") && lsae__exists(path);
}

LSAE_DEF lsae_result lsae_model_load(const char *dir, const lsae_allocator *alloc, lsae_model **out)
{
    char path[4096];
    lsae_config cfg;
    lsae_model *m;
    lsae_result r;
    int mean_center = 0;
    float theta = 0.0f;
    if (!out) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_load: out is NULL");
    *out = NULL;
    if (!dir) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_load: dir is NULL");
    if (!lsae__allocator_check(alloc)) return lsae__err(LSAE_INVALID_ARGS, "allocator given with a NULL malloc_fn or free_fn");
    /* a SAELens directory converts on the fly */
    if (lsae__is_saelens_dir(dir))
#ifndef LSAE_NO_SAELENS
        return lsae_model_load_saelens(dir, alloc, out);
#else
        return lsae__err(LSAE_UNSUPPORTED, "%s: a SAELens model (sae_weights.safetensors), but this build has no SAELens conversion (compiled with LSAE_NO_SAELENS)", dir);
#endif
    if ((r = lsae__model_dir_cfg(dir, alloc, &cfg, &mean_center, &theta, path, sizeof path)) != LSAE_OK) return r;
    if ((r = lsae__model_alloc(&cfg, alloc, &m)) != LSAE_OK) return r;
    m->batchtopk_threshold = lsae__has_threshold(&cfg) ? theta : 0.0f; /* the tensor, if any, wins below */
    if ((r = lsae__load_weights(m, path, mean_center)) != LSAE_OK) { lsae_model_free(m); return r; }
    *out = m;
#ifdef LATENTSAE_CUDA
    if ((r = lsae_model_to_device(m, LSAE_DEVICE_DEFAULT)) != LSAE_OK) { *out = NULL; lsae_model_free(m); return r; }
#endif
    if ((r = lsae__lp_keep(m)) != LSAE_OK) { *out = NULL; lsae_model_free(m); return r; }
    return LSAE_OK;
}

/* what lsae_model_load_config and lsae_model_load_shard answer for a SAELens
   directory: a shard of it cannot be read by rows (lsae_model_load_shard's
   doc comment) */
static lsae_result lsae__saelens_by_rows(const char *fn, const char *dir)
{
    return lsae__err(LSAE_UNSUPPORTED, "%s: %s is a SAELens model (sae_weights.safetensors), which does not load by rows: its W_enc is stored "
                     "transposed and its normalize_decoder depends on every decoder row. Load it whole (lsae_model_load), or convert it once "
                     "(lsae_model_load, then lsae_model_save to another directory) and load that", fn, dir);
}

LSAE_DEF lsae_result lsae_model_load_config(const char *dir, lsae_config *cfg)
{
    char path[4096];
    lsae_config c;
    lsae_result r;
    int mean_center = 0;
    float theta = 0.0f;
    if (!dir || !cfg) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_load_config: dir and cfg must not be NULL");
    if (lsae__is_saelens_dir(dir)) return lsae__saelens_by_rows("lsae_model_load_config", dir);
    if ((r = lsae__model_dir_cfg(dir, NULL, &c, &mean_center, &theta, path, sizeof path)) != LSAE_OK) return r;
    /* resolved as lsae__model_alloc resolves the loaded model's */
    c.num_latents = lsae_config_num_latents(&c);
    if (c.num_latents % c.d_in == 0) c.expansion_factor = c.num_latents / c.d_in;
    *cfg = c;
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_load_shard(const char *dir, lsae_model *m)
{
    char path[4096];
    lsae_config fc;
    lsae_result r;
    int mean_center = 0;
    float theta = 0.0f, *w;
    size_t Lf;
    if (!dir || !m) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_load_shard: dir and model must not be NULL");
    if (lsae__is_saelens_dir(dir)) return lsae__saelens_by_rows("lsae_model_load_shard", dir);
    if ((r = lsae__model_dir_cfg(dir, m->alloc, &fc, &mean_center, &theta, path, sizeof path)) != LSAE_OK) return r;
    Lf = m->shard_L ? m->shard_L : m->L;
    if (fc.d_in != m->d || lsae_config_num_latents(&fc) != Lf || fc.k != m->k) {
        if (m->shard_L)
            return lsae__err(LSAE_INVALID_ARGS, "lsae_model_load_shard: %s is a model of d_in %zu, L %zu, k %zu, but the model is d_in %zu, k %zu, holding latents [%zu, %zu) of L %zu",
                             dir, fc.d_in, lsae_config_num_latents(&fc), fc.k, m->d, m->k, m->shard_l0, m->shard_l0 + m->L, Lf);
        return lsae__err(LSAE_INVALID_ARGS, "lsae_model_load_shard: %s is a model of d_in %zu, L %zu, k %zu, but the model is d_in %zu, L %zu, k %zu",
                         dir, fc.d_in, lsae_config_num_latents(&fc), fc.k, m->d, m->L, m->k);
    }
    /* the rows into a scratch copy of the model's size first, so that a
       failure leaves the model as it was */
    w = (float *)lsae__alloc_array(m->alloc, m->lay.total, sizeof(float), "model weights");
    if (!w) return LSAE_OUT_OF_MEMORY;
    {
        lsae_model tmpm = *m;
        tmpm.params = w;
        /* the file's type decides whether its threshold is read (as
           lsae_model_load, which keeps one only for a type that has one) */
        tmpm.cfg = fc;
        tmpm.batchtopk_threshold = lsae__has_threshold(&fc) ? theta : 0.0f;
        if ((r = lsae__load_weights(&tmpm, path, mean_center)) != LSAE_OK) { lsae__free(m->alloc, w); return r; }
        theta = tmpm.batchtopk_threshold;
    }
    /* through set_weights, so a full model on a GPU gets them too */
    r = lsae_model_set_weights(m, w + m->lay.offset[LSAE__W_ENC], w + m->lay.offset[LSAE__B_ENC],
                               w + m->lay.offset[LSAE__W_DEC], w + m->lay.offset[LSAE__B_DEC]);
    lsae__free(m->alloc, w);
    if (r != LSAE_OK) return r;
    if (lsae__has_threshold(&fc) && lsae__has_threshold(&m->cfg)) m->batchtopk_threshold = theta;
    return LSAE_OK;
}

/* ======================================================================
   Everything below is the file-format part of the library (docs/files.md):
   platform helpers, hashing, embeddings datasets (npy, safetensors, raw,
   torch .pt, shard directories), the shuffling loader, checkpoints, the
   Hugging Face cache and SAELens conversion.
   ====================================================================== */

/* ------------------------------------------------------- platform extras */

/* POSIX facilities are used only where the compilation mode exposes them
   (_POSIX_C_SOURCE >= 200112L: any default gcc/clang mode, or a program that
   defines it before its first #include). A strict -std=c99 build gets the
   portable fallbacks: stdio reads instead of mmap, the loader's synchronous
   path instead of a thread, clock() instead of a monotonic clock, and no
   directory listing. LSAE_NO_THREADS and LSAE_NO_MMAP force the fallbacks. */
#if (defined(__unix__) || defined(__APPLE__)) && defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200112L
#define LSAE__POSIX 1
#include <fcntl.h>
#include <dirent.h>
#include <time.h>
#if !defined(LSAE_NO_MMAP)
#include <sys/mman.h>
#define LSAE__HAVE_MMAP 1
#endif
#if !defined(LSAE_NO_THREADS)
#include <pthread.h>
#define LSAE__HAVE_THREADS 1
#endif
#else
#include <time.h>
#if defined(_WIN32) && !defined(LSAE_NO_MMAP)
#define LSAE__HAVE_MMAP 1 /* CreateFileMapping + MapViewOfFile */
#endif
#endif

/* Directory listing: POSIX's readdir, or Windows' _wfindfirst64 */
#if defined(LSAE__POSIX) || defined(_WIN32)
#define LSAE__HAVE_LISTDIR 1
#endif

/* Seconds on a monotonic clock where there is one (the loader's stall time). */
static double lsae__now(void)
{
#if defined(LSAE__POSIX) && defined(CLOCK_MONOTONIC)
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
#if defined(__wasi__)
    /* WASI has no process clock (its clock() is a deprecated emulation of
       one); its libc declares C11's timespec_get in every mode */
    struct timespec wall;
    return timespec_get(&wall, TIME_UTC) ? (double)wall.tv_sec + 1e-9 * (double)wall.tv_nsec : 0.0;
#else
    return (double)clock() / (double)CLOCKS_PER_SEC;
#endif
}

static char *lsae__strdup(const lsae_allocator *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = (char *)lsae__malloc(a, n);
    if (p) memcpy(p, s, n);
    return p;
}

static uint64_t lsae__get_le(const unsigned char *p, int nbytes)
{
    uint64_t v = 0;
    int i;
    for (i = nbytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

static void lsae__put_le(unsigned char *p, uint64_t v, int nbytes)
{
    int i;
    for (i = 0; i < nbytes; ++i) p[i] = (unsigned char)(v >> (8 * i));
}

/* ---------------------------------------------------------------- hashing */

/* The checksum of checkpoint files: a 64-bit hash over 8-byte little-endian
   words (the tail zero-padded), then the byte length:
       h = 0x9E3779B97F4A7C15 (FNV-free constant, the golden ratio)
       for each word w:  h = rotl64(h ^ (w * 0x87C37B91114253D5), 31) * 0x4CF5AD432745937F + 0x52DCE729
       h ^= length; h = mix64(h)                  (SplitMix64's finaliser)
   It is not cryptographic; it catches torn writes and bit rot, and runs at
   memory speed so a checkpoint of a large model costs no noticeable time. */
struct lsae__hash {
    uint64_t h, len;
    unsigned char tail[8];
    size_t ntail;
};

static void lsae__hash_init(lsae__hash *s) { s->h = 0x9E3779B97F4A7C15ull; s->len = 0; s->ntail = 0; }

static void lsae__hash_word(lsae__hash *s, uint64_t w)
{
    uint64_t x = s->h ^ (w * 0x87C37B91114253D5ull);
    s->h = ((x << 31) | (x >> 33)) * 0x4CF5AD432745937Full + 0x52DCE729ull;
}

static void lsae__hash_update(lsae__hash *s, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    s->len += n;
    while (n && s->ntail) {
        s->tail[s->ntail++] = *p++;
        --n;
        if (s->ntail == 8) { lsae__hash_word(s, lsae__get_le(s->tail, 8)); s->ntail = 0; }
    }
    if (lsae__little_endian()) {
        while (n >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            lsae__hash_word(s, w);
            p += 8;
            n -= 8;
        }
    } else {
        while (n >= 8) { lsae__hash_word(s, lsae__get_le(p, 8)); p += 8; n -= 8; }
    }
    while (n) { s->tail[s->ntail++] = *p++; --n; }
}

static uint64_t lsae__hash_final(const lsae__hash *s)
{
    lsae__hash t = *s;
    if (t.ntail) {
        memset(t.tail + t.ntail, 0, 8 - t.ntail);
        lsae__hash_word(&t, lsae__get_le(t.tail, 8));
    }
    return lsae__mix64(t.h ^ t.len);
}

/* Hash of a whole file's bytes. */
static lsae_result lsae__hash_file(const char *path, uint64_t *out, uint64_t *size)
{
    unsigned char buf[1 << 16];
    lsae__hash h;
    FILE *f;
    size_t n;
    lsae_result r;
    if ((r = lsae__open_read(path, &f)) != LSAE_OK) return r;
    lsae__hash_init(&h);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) lsae__hash_update(&h, buf, n);
    if (ferror(f)) { fclose(f); return lsae__err(LSAE_IO_ERROR, "%s: read failed", path); }
    fclose(f);
    *out = lsae__hash_final(&h);
    if (size) *size = h.len;
    return LSAE_OK;
}

/* ------------------------------------------------------- directory helpers */

static int lsae__is_dir(const char *path)
{
#if defined(__unix__) || defined(__APPLE__) || defined(__wasi__)
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
#elif defined(_WIN32)
    wchar_t wp[LSAE__WPATH_CAP];
    unsigned long at;
    if (!lsae__wpath(path, wp, LSAE__WPATH_CAP)) return 0;
    at = GetFileAttributesW(wp);
    return at != LSAE__INVALID_FILE_ATTRIBUTES && (at & LSAE__FILE_ATTRIBUTE_DIRECTORY);
#else
    (void)path;
    return 0;
#endif
}

static int lsae__exists(const char *path)
{
    FILE *f;
    if (lsae__is_dir(path)) return 1;
    f = lsae__fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Remove an empty directory (C's remove() does it on POSIX systems). */
static int lsae__rmdir(const char *dir)
{
#if defined(_WIN32)
    wchar_t wd[LSAE__WPATH_CAP];
    return lsae__wpath(dir, wd, LSAE__WPATH_CAP) ? _wrmdir(wd) : -1;
#else
    return remove(dir);
#endif
}

/* Make every missing directory of a path (mkdir -p). */
static lsae_result lsae__mkdirs(const char *dir)
{
    char buf[4096];
    size_t n = strlen(dir), i;
    lsae_result r;
    if (n == 0 || n >= sizeof buf) return lsae__err(LSAE_INVALID_ARGS, "bad directory path '%s'", dir);
    memcpy(buf, dir, n + 1);
    for (i = 1; i < n; ++i) {
        if (buf[i] != '/' && buf[i] != '\\') continue;
        buf[i] = 0;
        if (!lsae__is_dir(buf) && (r = lsae__mkdir(buf)) != LSAE_OK) return r;
        buf[i] = dir[i];
    }
    return lsae__mkdir(buf);
}

/* Flush a directory's entries (the renames in it) to disk, where POSIX allows. */
static void lsae__fsync_dir(const char *dir)
{
#if defined(LSAE__POSIX) && defined(LSAE__HAVE_FSYNC)
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
#else
    (void)dir;
#endif
}

/* The names in a directory (regular files and directories, no "." and ".."),
   sorted by strcmp. Needs POSIX or Windows; a strict C99 build cannot list. */
typedef struct lsae__names {
    char **v;
    size_t n, cap;
    const lsae_allocator *alloc;
} lsae__names;

static void lsae__names_free(lsae__names *l)
{
    size_t i;
    for (i = 0; i < l->n; ++i) lsae__free(l->alloc, l->v[i]);
    lsae__free(l->alloc, l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static lsae_result lsae__names_push(lsae__names *l, const char *s)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? 2 * l->cap : 64;
        char **nv = (char **)lsae__alloc_array(l->alloc, ncap, sizeof(char *), "directory listing");
        if (!nv) return LSAE_OUT_OF_MEMORY;
        if (l->n) memcpy(nv, l->v, l->n * sizeof(char *));
        lsae__free(l->alloc, l->v);
        l->v = nv;
        l->cap = ncap;
    }
    if (!(l->v[l->n] = lsae__strdup(l->alloc, s))) return lsae__err(LSAE_OUT_OF_MEMORY, "out of memory listing a directory");
    ++l->n;
    return LSAE_OK;
}

static int lsae__cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static lsae_result lsae__list_dir(const char *dir, const lsae_allocator *a, lsae__names *out)
{
    memset(out, 0, sizeof *out);
    out->alloc = a;
#if defined(LSAE__POSIX)
    {
        DIR *d = opendir(dir);
        struct dirent *e;
        lsae_result r;
        if (!d) {
            int err = errno;
            return lsae__err(err == ENOENT ? LSAE_NOT_FOUND : LSAE_IO_ERROR, "%s: cannot list directory: %s", dir, strerror(err));
        }
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            if ((r = lsae__names_push(out, e->d_name)) != LSAE_OK) { closedir(d); lsae__names_free(out); return r; }
        }
        closedir(d);
    }
#elif defined(_WIN32)
    {
        /* the C runtime's _wfindfirst64 (FindFirstFileW underneath) */
        wchar_t pattern[LSAE__WPATH_CAP];
        char name[4 * 260]; /* a name is at most 255 UTF-16 units, 3 UTF-8 bytes each */
        struct _wfinddata64_t fd;
        intptr_t h;
        size_t n;
        lsae_result r;
        if (!lsae__wpath(dir, pattern, LSAE__WPATH_CAP - 2)) return lsae__err(LSAE_INVALID_ARGS, "%s: not a UTF-8 path, or too long", dir);
        n = wcslen(pattern);
        if (n && pattern[n - 1] != L'/' && pattern[n - 1] != L'\\') pattern[n++] = L'\\';
        pattern[n++] = L'*';
        pattern[n] = 0;
        h = _wfindfirst64(pattern, &fd);
        if (h == -1) {
            int err = errno;
            if (err == ENOENT && lsae__is_dir(dir)) return LSAE_OK; /* empty */
            return lsae__err(err == ENOENT ? LSAE_NOT_FOUND : LSAE_IO_ERROR, "%s: cannot list directory: %s", dir, strerror(err));
        }
        do {
            if (wcscmp(fd.name, L".") == 0 || wcscmp(fd.name, L"..") == 0) continue;
            /* names back to UTF-8, the encoding every path here is in */
            if (WideCharToMultiByte(LSAE__CP_UTF8, 0, fd.name, -1, name, (int)sizeof name, NULL, NULL) <= 0) continue;
            if ((r = lsae__names_push(out, name)) != LSAE_OK) { _findclose(h); lsae__names_free(out); return r; }
        } while (_wfindnext64(h, &fd) == 0);
        _findclose(h);
    }
#else
    return lsae__err(LSAE_UNSUPPORTED, "%s: listing a directory needs POSIX (this build is strict ISO C: define _POSIX_C_SOURCE 200809L before including, or name the file)", dir);
#endif
    if (out->n) qsort(out->v, out->n, sizeof(char *), lsae__cmp_str);
    return LSAE_OK;
}

/* ---------------------------------------------------------- dataset shards */

/* One file of embeddings: rows x d values of one dtype, contiguous, starting
   at byte `offset`. Every reader below (npy, safetensors, raw, torch) only
   works out these numbers from the file's header and checks them against
   the file's size; the rows are then read (or mapped) the same way. */
typedef struct lsae__shard {
    char *path;
    lsae_format format;
    int dtype;                  /* LSAE__DT_F32 / _F16 / _BF16 (little-endian), _F32_BE / _F16_BE / _BF16_BE */
    size_t elem;                /* bytes per value */
    uint64_t offset;            /* byte offset of row 0 */
    uint64_t rows, cols;
    uint64_t first;             /* global index of row 0 in the dataset */
    const unsigned char *map;   /* the whole file, mapped; NULL: read with stdio */
    size_t map_len;
} lsae__shard;

#define LSAE__MAX_BYTES ((uint64_t)1 << 62)

/* rows x cols x elem bytes without overflow (everything below 2^62). */
static int lsae__shape_bytes(uint64_t rows, uint64_t cols, size_t elem, uint64_t *out)
{
    if (cols && rows > LSAE__MAX_BYTES / cols) return 0;
    if (rows * cols > LSAE__MAX_BYTES / elem) return 0;
    *out = rows * cols * elem;
    return 1;
}

/* Check that the data of a shard lies inside the file (npy and torch
   headers; unused when LSAE_NO_NPY and LSAE_NO_TORCH leave out both). */
LSAE__MAYBE_UNUSED static lsae_result lsae__shard_check_size(const char *path, const char *what, uint64_t offset, uint64_t rows, uint64_t cols, size_t elem,
                                          uint64_t file_size, int exact)
{
    uint64_t bytes;
    if (!lsae__shape_bytes(rows, cols, elem, &bytes) || offset > LSAE__MAX_BYTES - bytes)
        return lsae__err(LSAE_BAD_FILE, "%s: %s shape [%llu, %llu] is too large (its byte count overflows)", path, what,
                         (unsigned long long)rows, (unsigned long long)cols);
    if (offset + bytes > file_size)
        return lsae__err(LSAE_BAD_FILE, "%s: %s [%llu, %llu] needs %llu bytes from offset %llu, but the file has %llu: truncated?", path, what,
                         (unsigned long long)rows, (unsigned long long)cols, (unsigned long long)bytes, (unsigned long long)offset,
                         (unsigned long long)file_size);
    if (exact && offset + bytes != file_size)
        return lsae__err(LSAE_BAD_FILE, "%s: %s [%llu, %llu] ends at byte %llu, but the file has %llu bytes (%llu extra)", path, what,
                         (unsigned long long)rows, (unsigned long long)cols, (unsigned long long)(offset + bytes),
                         (unsigned long long)file_size, (unsigned long long)(file_size - offset - bytes));
    return LSAE_OK;
}

/* ------------------------------------------------------------------- npy */
#ifndef LSAE_NO_NPY

/* NumPy's .npy format (numpy/lib/format.py, NEP 1):
     bytes 0-5   "\x93NUMPY"
     byte 6, 7   major, minor version (1.0, 2.0 or 3.0)
     then        header length: uint16 LE (v1) or uint32 LE (v2, v3)
     then        the header: a Python dict literal, ASCII (v1, v2) or UTF-8 (v3),
                 {'descr': '<f4', 'fortran_order': False, 'shape': (N, D), }
                 padded with spaces and ended by '\n'
     then        the data, C order unless fortran_order.
   We take float32 and float16 in either byte order ('<f4', '<f2', '>f4',
   '>f2'; '=' and '|' mean this machine's), 2-D, C order; anything else is
   refused with its name. */
#define LSAE__NPY_MAX_HEADER (1u << 20)

typedef struct lsae__npy_hdr {
    char descr[32];
    int fortran, have_descr, have_fortran, have_shape;
    int ndim;
    uint64_t shape[8];
} lsae__npy_hdr;

static void lsae__py_ws(const char *s, size_t n, size_t *p) { while (*p < n && (s[*p] == ' ' || s[*p] == '\t' || s[*p] == '\n' || s[*p] == '\r')) ++*p; }

/* a Python string literal in ' or " (no escapes appear in npy headers) */
static int lsae__py_str(const char *s, size_t n, size_t *p, char *out, size_t cap)
{
    char q;
    size_t o = 0;
    if (*p >= n || (s[*p] != '\'' && s[*p] != '"')) return 0;
    q = s[(*p)++];
    while (*p < n && s[*p] != q) {
        if (s[*p] == '\\' || o + 1 >= cap) return 0;
        out[o++] = s[(*p)++];
    }
    if (*p >= n) return 0;
    ++*p;
    out[o] = 0;
    return 1;
}

static lsae_result lsae__npy_parse_dict(const char *path, const char *s, size_t n, lsae__npy_hdr *h)
{
    size_t p = 0;
    char key[64];
    memset(h, 0, sizeof *h);
    lsae__py_ws(s, n, &p);
    if (p >= n || s[p] != '{') return lsae__err(LSAE_BAD_FILE, "%s: npy header does not start with '{' (byte %zu of the header)", path, p);
    ++p;
    for (;;) {
        lsae__py_ws(s, n, &p);
        if (p < n && s[p] == '}') break;
        if (!lsae__py_str(s, n, &p, key, sizeof key)) return lsae__err(LSAE_BAD_FILE, "%s: npy header: a quoted key expected at byte %zu of the header", path, p);
        lsae__py_ws(s, n, &p);
        if (p >= n || s[p] != ':') return lsae__err(LSAE_BAD_FILE, "%s: npy header: ':' expected after '%s'", path, key);
        ++p;
        lsae__py_ws(s, n, &p);
        if (strcmp(key, "descr") == 0) {
            if (p < n && s[p] == '[') return lsae__err(LSAE_UNSUPPORTED, "%s: npy holds a structured dtype (a record list); only float32 ('<f4', '>f4') and float16 ('<f2', '>f2') are read", path);
            if (!lsae__py_str(s, n, &p, h->descr, sizeof h->descr)) return lsae__err(LSAE_BAD_FILE, "%s: npy header: 'descr' is not a short string", path);
            h->have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (n - p >= 4 && memcmp(s + p, "True", 4) == 0) { h->fortran = 1; p += 4; }
            else if (n - p >= 5 && memcmp(s + p, "False", 5) == 0) { h->fortran = 0; p += 5; }
            else return lsae__err(LSAE_BAD_FILE, "%s: npy header: 'fortran_order' is not True or False", path);
            h->have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (p >= n || s[p] != '(') return lsae__err(LSAE_BAD_FILE, "%s: npy header: 'shape' is not a tuple", path);
            ++p;
            for (;;) {
                uint64_t v = 0;
                size_t digits = 0;
                lsae__py_ws(s, n, &p);
                if (p < n && s[p] == ')') { ++p; break; }
                while (p < n && s[p] >= '0' && s[p] <= '9') {
                    unsigned dg = (unsigned)(s[p] - '0');
                    if (v > (LSAE__MAX_BYTES - dg) / 10)
                        return lsae__err(LSAE_BAD_FILE, "%s: npy header: a size in 'shape' is larger than 2^62", path);
                    v = v * 10 + dg;
                    ++p;
                    ++digits;
                }
                if (!digits) return lsae__err(LSAE_BAD_FILE, "%s: npy header: 'shape' holds something other than non-negative integers", path);
                if (p < n && s[p] == 'L') ++p; /* Python 2 long */
                if (h->ndim >= 8) return lsae__err(LSAE_BAD_FILE, "%s: npy header: more than 8 dimensions", path);
                h->shape[h->ndim++] = v;
                lsae__py_ws(s, n, &p);
                if (p < n && s[p] == ',') { ++p; continue; }
                if (p < n && s[p] == ')') { ++p; break; }
                return lsae__err(LSAE_BAD_FILE, "%s: npy header: ',' or ')' expected in 'shape'", path);
            }
            h->have_shape = 1;
        } else {
            return lsae__err(LSAE_BAD_FILE, "%s: npy header has an unexpected key '%s' (only descr, fortran_order, shape are defined)", path, key);
        }
        lsae__py_ws(s, n, &p);
        if (p < n && s[p] == ',') { ++p; continue; }
        if (p < n && s[p] == '}') break;
        return lsae__err(LSAE_BAD_FILE, "%s: npy header: ',' or '}' expected at byte %zu of the header", path, p);
    }
    if (!h->have_descr || !h->have_fortran || !h->have_shape)
        return lsae__err(LSAE_BAD_FILE, "%s: npy header lacks '%s'", path, !h->have_descr ? "descr" : !h->have_fortran ? "fortran_order" : "shape");
    return LSAE_OK;
}

static lsae_result lsae__npy_open(const char *path, FILE *f, uint64_t size, const lsae_allocator *a, lsae__shard *sh)
{
    unsigned char pre[12];
    uint64_t hlen, off;
    char *hdr;
    lsae__npy_hdr h;
    lsae_result r;
    int major;
    if (size < 10 || fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
        return lsae__err(LSAE_BAD_FILE, "%s: not an npy file (no \\x93NUMPY magic at byte 0)", path);
    major = pre[6];
    if (major == 1) {
        hlen = lsae__get_le(pre + 8, 2);
        off = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12 || fread(pre + 10, 1, 2, f) != 2) return lsae__err(LSAE_BAD_FILE, "%s: npy v%d header length cut short", path, major);
        hlen = lsae__get_le(pre + 8, 4);
        off = 12;
    } else {
        return lsae__err(LSAE_UNSUPPORTED, "%s: npy format version %d.%d; versions 1.0, 2.0 and 3.0 are read", path, major, pre[7]);
    }
    if (hlen > LSAE__NPY_MAX_HEADER)
        return lsae__err(LSAE_BAD_FILE, "%s: npy header claims %llu bytes, more than the %u allowed", path, (unsigned long long)hlen, LSAE__NPY_MAX_HEADER);
    if (off + hlen > size)
        return lsae__err(LSAE_BAD_FILE, "%s: npy header of %llu bytes runs past the end of the %llu-byte file", path, (unsigned long long)hlen, (unsigned long long)size);
    hdr = (char *)lsae__malloc(a, (size_t)hlen + 1);
    if (!hdr) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory reading the npy header", path);
    if (hlen && fread(hdr, 1, (size_t)hlen, f) != (size_t)hlen) { lsae__free(a, hdr); return lsae__err(LSAE_IO_ERROR, "%s: read of the npy header failed", path); }
    hdr[hlen] = 0;
    r = lsae__npy_parse_dict(path, hdr, (size_t)hlen, &h);
    lsae__free(a, hdr);
    if (r != LSAE_OK) return r;
    off += hlen;
    {
        const char *d = h.descr;
        char bo = d[0];
        /* '<' little-endian, '>' big-endian, '=' (and '|', and no mark) this machine's */
        int big = bo == '>' || (bo != '<' && !lsae__little_endian());
        if (bo == '<' || bo == '>' || bo == '=' || bo == '|') ++d;
        if (strcmp(d, "f4") == 0) { sh->dtype = big ? LSAE__DT_F32_BE : LSAE__DT_F32; sh->elem = 4; }
        else if (strcmp(d, "f2") == 0) { sh->dtype = big ? LSAE__DT_F16_BE : LSAE__DT_F16; sh->elem = 2; }
        else return lsae__err(LSAE_UNSUPPORTED, "%s: npy dtype '%s' is not float32 ('<f4', '>f4') or float16 ('<f2', '>f2'); convert it with arr.astype(np.float32)", path, h.descr);
    }
    if (h.fortran)
        return lsae__err(LSAE_UNSUPPORTED, "%s: npy array is in Fortran (column-major) order; save it in C order (np.ascontiguousarray(arr))", path);
    if (h.ndim != 2) {
        if (h.ndim == 1)
            return lsae__err(LSAE_BAD_FILE, "%s: npy array is 1-D (shape (%llu,)); embeddings must be 2-D [rows, width] (use arr.reshape(1, -1) for one row)", path, (unsigned long long)h.shape[0]);
        return lsae__err(LSAE_BAD_FILE, "%s: npy array has %d dimensions; embeddings must be 2-D [rows, width]", path, h.ndim);
    }
    sh->format = LSAE_FORMAT_NPY;
    sh->offset = off;
    sh->rows = h.shape[0];
    sh->cols = h.shape[1];
    return lsae__shard_check_size(path, "npy array", off, sh->rows, sh->cols, sh->elem, size, 1);
}
#endif /* LSAE_NO_NPY */

/* ------------------------------------------------------ safetensors data */

static lsae_result lsae__st_shard_open(const char *path, const char *name, const lsae_allocator *a, lsae__shard *sh)
{
    FILE *f;
    lsae__st st;
    const lsae__st_tensor *t = NULL;
    lsae_result r;
    size_t i, n2 = 0;
    if ((r = lsae__st_open(path, a, &f, &st)) != LSAE_OK) return r;
    fclose(f);
    if (name) {
        if (!(t = lsae__st_find(&st, name))) {
            r = lsae__err(LSAE_NOT_FOUND, "%s: no tensor named '%s' (it holds %zu tensor%s%s%s)", path, name, st.n, st.n == 1 ? "" : "s",
                          st.n ? ", the first is " : "", st.n ? st.t[0].name : "");
            lsae__st_free(&st);
            return r;
        }
    } else {
        for (i = 0; i < st.n; ++i)
            if (st.t[i].ndim == 2) { if (!t) t = &st.t[i]; ++n2; }
        if (n2 != 1) {
            r = lsae__err(n2 ? LSAE_INVALID_ARGS : LSAE_BAD_FILE, "%s: %zu two-dimensional tensors; %s", path, n2,
                          n2 ? "name the one to read (tensor_name)" : "embeddings must be a 2-D [rows, width] tensor");
            lsae__st_free(&st);
            return r;
        }
    }
    if (t->ndim != 2) {
        r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has %d dimensions; embeddings must be 2-D [rows, width]", path, t->name, t->ndim);
    } else if (t->dtype != LSAE__DT_F32 && t->dtype != LSAE__DT_F16 && t->dtype != LSAE__DT_BF16) {
        r = lsae__err(LSAE_UNSUPPORTED, "%s: tensor '%s' is %s; embeddings are read from F32, F16 or BF16", path, t->name, t->dtype_name);
    } else {
        sh->format = LSAE_FORMAT_SAFETENSORS;
        sh->dtype = t->dtype;
        sh->elem = t->elem_size;
        sh->offset = st.data_start + t->begin;
        sh->rows = t->shape[0];
        sh->cols = t->shape[1];
        r = LSAE_OK; /* lsae__st_parse already checked the bytes against the shape and the file */
    }
    lsae__st_free(&st);
    return r;
}

/* ------------------------------------------------------------------- raw */

static lsae_result lsae__raw_open(const char *path, uint64_t size, size_t d, lsae_dtype dt, lsae__shard *sh)
{
    uint64_t row_bytes;
    const char *name = dt == LSAE_DTYPE_F16 ? "f16" : dt == LSAE_DTYPE_BF16 ? "bf16" : "f32";
    if (d == 0) return lsae__err(LSAE_INVALID_ARGS, "%s: a raw dump has no header: give its width (raw_d_in, --d-in)", path);
    if (dt != LSAE_DTYPE_F32 && dt != LSAE_DTYPE_F16 && dt != LSAE_DTYPE_BF16)
        return lsae__err(LSAE_INVALID_ARGS, "%s: raw dtype %d is not f32 (1), f16 (2) or bf16 (3)", path, (int)dt);
    sh->format = LSAE_FORMAT_RAW;
    sh->dtype = (int)dt;
    sh->elem = dt == LSAE_DTYPE_F32 ? 4 : 2;
    if (!lsae__shape_bytes(1, d, sh->elem, &row_bytes)) return lsae__err(LSAE_INVALID_ARGS, "%s: width %zu is too large", path, d);
    if (size % row_bytes != 0)
        return lsae__err(LSAE_BAD_FILE, "%s: %llu bytes is not a whole number of %s rows of width %zu (%llu bytes each; %llu bytes left over): wrong width or dtype?",
                         path, (unsigned long long)size, name, d, (unsigned long long)row_bytes, (unsigned long long)(size % row_bytes));
    sh->offset = 0;
    sh->rows = size / row_bytes;
    sh->cols = d;
    return LSAE_OK;
}

/* ------------------------------------------------------------ torch .pt */
#ifndef LSAE_NO_TORCH

/* torch.save (since torch 1.6) writes a zip archive (APPNOTE.TXT, stored,
   not compressed) holding
     PREFIX/data.pkl      the object, pickled (protocol 2)
     PREFIX/data/KEY      one entry per storage: its raw bytes, in the order
                          byteorder says (both are read)
     PREFIX/byteorder     "little" or "big" (newer torch; absent = little)
     PREFIX/version       and a few more we do not need
   PREFIX is the file's stem in older torch and "archive" in newer ones, so
   we take whatever stands before "/data.pkl". A tensor is pickled as
     torch._utils._rebuild_tensor_v2(STORAGE, storage_offset, size, stride, requires_grad, hooks[, metadata])
   where STORAGE is a persistent id
     ('storage', torch.FloatStorage | HalfStorage | BFloat16Storage, KEY, location, numel).
   We read the central directory (ZIP64 included, for files over 4 GiB), run
   the pickle through a small stack machine that knows only the opcodes of
   protocols 2-4 and builds nothing but strings, numbers, tuples, dicts and
   these tensors, and accept one 2-D contiguous float tensor (the object
   itself, or the only 2-D tensor of a dict, list or tuple). */

typedef struct lsae__zip_entry {
    uint64_t local_offset, size, comp_size;
    int method;
    size_t name_off, name_len;      /* into the central directory buffer */
} lsae__zip_entry;

typedef struct lsae__zip {
    unsigned char *cd;              /* the central directory */
    size_t cd_len;
    lsae__zip_entry *e;
    size_t n;
    const lsae_allocator *alloc;
} lsae__zip;

static void lsae__zip_free(lsae__zip *z)
{
    lsae__free(z->alloc, z->cd);
    lsae__free(z->alloc, z->e);
    z->cd = NULL;
    z->e = NULL;
    z->n = 0;
}

#define LSAE__ZIP_MAX_CD ((uint64_t)64 << 20)

static lsae_result lsae__zip_open(const char *path, FILE *f, uint64_t size, const lsae_allocator *a, lsae__zip *z)
{
    unsigned char tail[65536 + 22], rec[56];
    uint64_t tail_len = size < sizeof tail ? size : sizeof tail, cd_off, cd_size, count, pos;
    size_t i, at;
    int found = 0;
    memset(z, 0, sizeof *z);
    z->alloc = a;
    if (tail_len < 22 || !lsae__seek(f, size - tail_len) || fread(tail, 1, (size_t)tail_len, f) != (size_t)tail_len)
        return lsae__err(LSAE_BAD_FILE, "%s: too short for a zip archive (torch.save's format)", path);
    /* the end-of-central-directory record: the last "PK\5\6" with room for its 22 bytes */
    for (i = (size_t)tail_len - 22 + 1; i-- > 0;)
        if (tail[i] == 'P' && tail[i + 1] == 'K' && tail[i + 2] == 5 && tail[i + 3] == 6) { found = 1; break; }
    if (!found) return lsae__err(LSAE_BAD_FILE, "%s: no zip end-of-central-directory record (not a torch.save file, or truncated)", path);
    count = lsae__get_le(tail + i + 10, 2);
    cd_size = lsae__get_le(tail + i + 12, 4);
    cd_off = lsae__get_le(tail + i + 16, 4);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        /* ZIP64: a locator sits 20 bytes before the record and points at the zip64 record */
        uint64_t loc = size - tail_len + i, z64;
        if (loc < 20 || !lsae__seek(f, loc - 20) || fread(rec, 1, 20, f) != 20 || lsae__get_le(rec, 4) != 0x07064b50u)
            return lsae__err(LSAE_BAD_FILE, "%s: zip64 archive without a zip64 locator", path);
        z64 = lsae__get_le(rec + 8, 8);
        if (z64 > size - 56 || !lsae__seek(f, z64) || fread(rec, 1, 56, f) != 56 || lsae__get_le(rec, 4) != 0x06064b50u)
            return lsae__err(LSAE_BAD_FILE, "%s: bad zip64 end-of-central-directory record at offset %llu", path, (unsigned long long)z64);
        count = lsae__get_le(rec + 32, 8);
        cd_size = lsae__get_le(rec + 40, 8);
        cd_off = lsae__get_le(rec + 48, 8);
    }
    if (cd_size > LSAE__ZIP_MAX_CD || cd_off > size || cd_size > size - cd_off || count > cd_size / 46)
        return lsae__err(LSAE_BAD_FILE, "%s: zip central directory (%llu entries, %llu bytes at offset %llu) does not fit the %llu-byte file", path,
                         (unsigned long long)count, (unsigned long long)cd_size, (unsigned long long)cd_off, (unsigned long long)size);
    z->cd_len = (size_t)cd_size;
    z->cd = (unsigned char *)lsae__malloc(a, z->cd_len ? z->cd_len : 1);
    z->e = (lsae__zip_entry *)lsae__alloc_array(a, count ? (size_t)count : 1, sizeof(lsae__zip_entry), "zip entries");
    if (!z->cd || !z->e) { lsae__zip_free(z); return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory reading the zip directory", path); }
    if (!lsae__seek(f, cd_off) || fread(z->cd, 1, z->cd_len, f) != z->cd_len) { lsae__zip_free(z); return lsae__err(LSAE_IO_ERROR, "%s: read of the zip directory failed", path); }
    for (pos = 0, at = 0; at < count; ++at) {
        lsae__zip_entry *e = &z->e[at];
        const unsigned char *c = z->cd + pos;
        uint64_t nl, xl, cl;
        if (pos + 46 > cd_size || lsae__get_le(c, 4) != 0x02014b50u) { lsae__zip_free(z); return lsae__err(LSAE_BAD_FILE, "%s: zip central directory entry %zu is malformed", path, at); }
        e->method = (int)lsae__get_le(c + 10, 2);
        e->comp_size = lsae__get_le(c + 20, 4);
        e->size = lsae__get_le(c + 24, 4);
        nl = lsae__get_le(c + 28, 2);
        xl = lsae__get_le(c + 30, 2);
        cl = lsae__get_le(c + 32, 2);
        e->local_offset = lsae__get_le(c + 42, 4);
        if (pos + 46 + nl + xl + cl > cd_size) { lsae__zip_free(z); return lsae__err(LSAE_BAD_FILE, "%s: zip central directory entry %zu runs past the directory", path, at); }
        e->name_off = (size_t)(pos + 46);
        e->name_len = (size_t)nl;
        {
            /* the ZIP64 extra field (id 1) carries the 64-bit values that are 0xFFFFFFFF above, in this order */
            const unsigned char *x = c + 46 + nl, *xe = x + xl;
            while (x + 4 <= xe) {
                uint64_t id = lsae__get_le(x, 2), len = lsae__get_le(x + 2, 2);
                const unsigned char *v = x + 4;
                if (x + 4 + len > xe) break;
                if (id == 1) {
                    const unsigned char *ve = v + len;
                    if (e->size == 0xFFFFFFFFu && v + 8 <= ve) { e->size = lsae__get_le(v, 8); v += 8; }
                    if (e->comp_size == 0xFFFFFFFFu && v + 8 <= ve) { e->comp_size = lsae__get_le(v, 8); v += 8; }
                    if (e->local_offset == 0xFFFFFFFFu && v + 8 <= ve) { e->local_offset = lsae__get_le(v, 8); v += 8; }
                }
                x += 4 + len;
            }
        }
        pos += 46 + nl + xl + cl;
    }
    z->n = (size_t)count;
    return LSAE_OK;
}

/* The entry whose name ends with suffix (after prefix_len bytes of prefix, if prefix is given). */
static const lsae__zip_entry *lsae__zip_find(const lsae__zip *z, const char *prefix, size_t prefix_len, const char *suffix)
{
    size_t i, sl = strlen(suffix);
    for (i = 0; i < z->n; ++i) {
        const char *nm = (const char *)z->cd + z->e[i].name_off;
        size_t nl = z->e[i].name_len;
        if (prefix) {
            if (nl == prefix_len + sl && memcmp(nm, prefix, prefix_len) == 0 && memcmp(nm + prefix_len, suffix, sl) == 0) return &z->e[i];
        } else if (nl >= sl && memcmp(nm + nl - sl, suffix, sl) == 0 && (nl == sl || nm[nl - sl - 1] == '/' || suffix[0] == '/')) {
            return &z->e[i];
        }
    }
    return NULL;
}

/* Byte offset of an entry's data: the local header has its own name and extra lengths. */
static lsae_result lsae__zip_data_offset(const char *path, FILE *f, uint64_t size, const lsae__zip_entry *e, uint64_t *out)
{
    unsigned char lh[30];
    uint64_t off;
    if (e->method != 0)
        return lsae__err(LSAE_UNSUPPORTED, "%s: zip entry is compressed (method %d); torch.save stores entries uncompressed", path, e->method);
    if (e->comp_size != e->size) return lsae__err(LSAE_BAD_FILE, "%s: stored zip entry with different compressed and plain sizes", path);
    if (e->local_offset > size - 30 || !lsae__seek(f, e->local_offset) || fread(lh, 1, 30, f) != 30 || lsae__get_le(lh, 4) != 0x04034b50u)
        return lsae__err(LSAE_BAD_FILE, "%s: bad zip local header at offset %llu", path, (unsigned long long)e->local_offset);
    off = e->local_offset + 30 + lsae__get_le(lh + 26, 2) + lsae__get_le(lh + 28, 2);
    if (off > size || e->size > size - off)
        return lsae__err(LSAE_BAD_FILE, "%s: zip entry data (%llu bytes at offset %llu) runs past the end of the %llu-byte file: truncated?", path,
                         (unsigned long long)e->size, (unsigned long long)off, (unsigned long long)size);
    *out = off;
    return LSAE_OK;
}

/* --- the pickle machine --- */

enum { LSAE__PV_NONE, LSAE__PV_INT, LSAE__PV_STR, LSAE__PV_BOOL, LSAE__PV_FLOAT, LSAE__PV_TUPLE, LSAE__PV_LIST, LSAE__PV_DICT,
       LSAE__PV_GLOBAL, LSAE__PV_STORAGE, LSAE__PV_TENSOR, LSAE__PV_OBJ, LSAE__PV_MARK };

typedef struct lsae__pv {
    int type;
    int64_t i;          /* INT, BOOL; STORAGE: numel */
    size_t s, n;        /* STR: offset, length in the pickle; GLOBAL: module string value, name string value;
                           TUPLE/LIST/DICT: first index into kids, count; STORAGE: key string value, dtype;
                           TENSOR: storage value, args tuple value */
} lsae__pv;

typedef struct lsae__pickle {
    const unsigned char *p;
    size_t len;
    lsae__pv *v; size_t nv, capv;         /* values */
    size_t *kids; size_t nk, capk;        /* children of tuples (each list/dict copies into a fresh run when it grows) */
    size_t *stack; size_t ns, caps;
    size_t *memo; size_t nmemo;
    const lsae_allocator *alloc;
    const char *path;
} lsae__pickle;

/* growable buffers stop at 2^40 bytes, or at SIZE_MAX where size_t is
   narrower (wasm32: 32 bits) */
static const size_t lsae__grow_limit = (uint64_t)SIZE_MAX > ((uint64_t)1 << 40) ? (size_t)((uint64_t)1 << 40) : SIZE_MAX;

static int lsae__grow(const lsae_allocator *a, void **buf, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *nb;
    if (need <= *cap) return 1;
    ncap = *cap ? *cap : 64;
    while (ncap < need) {
        if (ncap > lsae__grow_limit / elem) return 0;
        ncap *= 2;
    }
    nb = lsae__malloc(a, ncap * elem);
    if (!nb) return 0;
    if (*buf) memcpy(nb, *buf, *cap * elem);
    lsae__free(a, *buf);
    *buf = nb;
    *cap = ncap;
    return 1;
}

static size_t lsae__pv_new(lsae__pickle *P, int type)
{
    void *b = P->v;
    if (!lsae__grow(P->alloc, &b, &P->capv, P->nv + 1, sizeof(lsae__pv))) return (size_t)-1;
    P->v = (lsae__pv *)b;
    memset(&P->v[P->nv], 0, sizeof(lsae__pv));
    P->v[P->nv].type = type;
    return P->nv++;
}

static int lsae__pv_push(lsae__pickle *P, size_t idx)
{
    void *b = P->stack;
    if (idx == (size_t)-1 || !lsae__grow(P->alloc, &b, &P->caps, P->ns + 1, sizeof(size_t))) return 0;
    P->stack = (size_t *)b;
    P->stack[P->ns++] = idx;
    return 1;
}

/* A run of count fresh kid slots; returns its first index. */
static size_t lsae__pv_kids(lsae__pickle *P, size_t count)
{
    void *b = P->kids;
    size_t first = P->nk;
    if (!lsae__grow(P->alloc, &b, &P->capk, P->nk + count + 1, sizeof(size_t))) return (size_t)-1;
    P->kids = (size_t *)b;
    P->nk += count;
    return first;
}

static int lsae__pv_streq(const lsae__pickle *P, size_t v, const char *s)
{
    size_t n = strlen(s);
    return P->v[v].type == LSAE__PV_STR && P->v[v].n == n && memcmp(P->p + P->v[v].s, s, n) == 0;
}

static int lsae__pv_global_is(const lsae__pickle *P, size_t v, const char *mod, const char *name)
{
    return P->v[v].type == LSAE__PV_GLOBAL && lsae__pv_streq(P, P->v[v].s, mod) && lsae__pv_streq(P, P->v[v].n, name);
}

/* Append items to container c (a list or dict): in place when its run is
   the newest one (a list built by APPENDs in a row), else into a fresh run
   holding the old items and the new. Copying is rare in what torch.save
   writes (a dict's SETITEMS batches of 1000), but a hostile pickle can make
   every APPEND copy; all runs together are therefore capped at twice the
   pickle's length (plus a little), which no real file comes near, so time
   and memory stay linear in the input. */
static lsae_result lsae__pv_append(lsae__pickle *P, size_t c, const size_t *items, size_t nitems)
{
    size_t old_first = P->v[c].s, old_n = P->v[c].n, first, i, budget = 2 * P->len + 1024;
    int in_place = old_first + old_n == P->nk;
    size_t grow = in_place ? nitems : old_n + nitems;
    if (P->nk > budget || grow > budget - P->nk)
        return lsae__err(LSAE_BAD_FILE, "%s: data.pkl: lists and dicts grow to more than %zu items in a %zu-byte pickle; not one torch.save writes",
                         P->path, budget, P->len);
    first = lsae__pv_kids(P, grow);
    if (first == (size_t)-1) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
    if (in_place) first = old_first;
    else for (i = 0; i < old_n; ++i) P->kids[first + i] = P->kids[old_first + i];
    for (i = 0; i < nitems; ++i) P->kids[first + old_n + i] = items[i];
    P->v[c].s = first;
    P->v[c].n = old_n + nitems;
    return LSAE_OK;
}

#define LSAE__PK_FAIL(...) do { return lsae__err(LSAE_BAD_FILE, __VA_ARGS__); } while (0)

static lsae_result lsae__pickle_run(lsae__pickle *P, size_t *result)
{
    size_t pos = 0;
    const unsigned char *p = P->p;
    const size_t n = P->len;
#define LSAE__NEED(k) do { if (n - pos < (size_t)(k)) LSAE__PK_FAIL("%s: data.pkl ends inside an opcode at byte %zu", P->path, pos); } while (0)
#define LSAE__POP(dst) do { if (P->ns == 0 || P->v[P->stack[P->ns - 1]].type == LSAE__PV_MARK) LSAE__PK_FAIL("%s: data.pkl: stack underflow at byte %zu", P->path, pos); (dst) = P->stack[--P->ns]; } while (0)
#define LSAE__PUSH(idx) do { if (!lsae__pv_push(P, (idx))) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path); } while (0)
    while (pos < n) {
        unsigned char op = p[pos++];
        size_t v, a, b, m, k, cnt;
        uint64_t len;
        switch (op) {
        case 0x80: LSAE__NEED(1); ++pos; break;                     /* PROTO */
        case 0x95: LSAE__NEED(8); pos += 8; break;                  /* FRAME */
        case '.':                                                   /* STOP */
            LSAE__POP(v);
            *result = v;
            return LSAE_OK;
        case '(':                                                   /* MARK */
            LSAE__PUSH(lsae__pv_new(P, LSAE__PV_MARK));
            break;
        case 'N': LSAE__PUSH(lsae__pv_new(P, LSAE__PV_NONE)); break;
        case 0x88: case 0x89:                                       /* NEWTRUE, NEWFALSE */
            v = lsae__pv_new(P, LSAE__PV_BOOL);
            if (v == (size_t)-1) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
            P->v[v].i = op == 0x88;
            LSAE__PUSH(v);
            break;
        case 'J': case 'K': case 'M': case 0x8a: {                  /* BININT, BININT1, BININT2, LONG1 */
            int64_t iv;
            if (op == 'J') { LSAE__NEED(4); iv = (int32_t)(uint32_t)lsae__get_le(p + pos, 4); pos += 4; }
            else if (op == 'K') { LSAE__NEED(1); iv = p[pos]; pos += 1; }
            else if (op == 'M') { LSAE__NEED(2); iv = (int64_t)lsae__get_le(p + pos, 2); pos += 2; }
            else {
                LSAE__NEED(1);
                len = p[pos++];
                LSAE__NEED(len);
                if (len > 8) LSAE__PK_FAIL("%s: data.pkl: an integer of %u bytes", P->path, (unsigned)len);
                {
                    uint64_t u = len ? lsae__get_le(p + pos, (int)len) : 0;
                    if (len && len < 8 && (p[pos + len - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * len); /* sign-extend */
                    memcpy(&iv, &u, 8);
                }
                pos += (size_t)len;
            }
            v = lsae__pv_new(P, LSAE__PV_INT);
            if (v == (size_t)-1) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
            P->v[v].i = iv;
            LSAE__PUSH(v);
            break;
        }
        case 'G': LSAE__NEED(8); pos += 8; LSAE__PUSH(lsae__pv_new(P, LSAE__PV_FLOAT)); break; /* BINFLOAT */
        case 'X': case 0x8c: case 'T': case 'U': case 'B': case 'C': case 0x8d: case 0x8e: { /* strings and bytes */
            int w = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            LSAE__NEED(w);
            len = lsae__get_le(p + pos, w);
            pos += (size_t)w;
            if (len > n - pos) LSAE__PK_FAIL("%s: data.pkl: a string of %llu bytes runs past the end", P->path, (unsigned long long)len);
            v = lsae__pv_new(P, LSAE__PV_STR);
            if (v == (size_t)-1) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
            P->v[v].s = pos;
            P->v[v].n = (size_t)len;
            pos += (size_t)len;
            LSAE__PUSH(v);
            break;
        }
        case 'c': {                                                 /* GLOBAL module\nname\n */
            size_t s1 = pos, e1, s2, e2;
            while (pos < n && p[pos] != '\n') ++pos;
            if (pos >= n) LSAE__PK_FAIL("%s: data.pkl: unterminated GLOBAL", P->path);
            e1 = pos++;
            s2 = pos;
            while (pos < n && p[pos] != '\n') ++pos;
            if (pos >= n) LSAE__PK_FAIL("%s: data.pkl: unterminated GLOBAL", P->path);
            e2 = pos++;
            a = lsae__pv_new(P, LSAE__PV_STR);
            b = lsae__pv_new(P, LSAE__PV_STR);
            v = lsae__pv_new(P, LSAE__PV_GLOBAL);
            if (v == (size_t)-1 || a == (size_t)-1 || b == (size_t)-1) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
            P->v[a].s = s1; P->v[a].n = e1 - s1;
            P->v[b].s = s2; P->v[b].n = e2 - s2;
            P->v[v].s = a; P->v[v].n = b;
            LSAE__PUSH(v);
            break;
        }
        case 0x93:                                                  /* STACK_GLOBAL */
            LSAE__POP(b);
            LSAE__POP(a);
            v = lsae__pv_new(P, LSAE__PV_GLOBAL);
            if (v == (size_t)-1) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
            P->v[v].s = a; P->v[v].n = b;
            LSAE__PUSH(v);
            break;
        case 'q': case 'r': case 0x94: {                            /* BINPUT, LONG_BINPUT, MEMOIZE */
            void *mb = P->memo;
            size_t cap = P->nmemo, oldcap = P->nmemo;
            if (op == 0x94) k = (size_t)-1;
            else if (op == 'q') { LSAE__NEED(1); k = p[pos++]; }
            else { LSAE__NEED(4); k = (size_t)lsae__get_le(p + pos, 4); pos += 4; }
            if (P->ns == 0) LSAE__PK_FAIL("%s: data.pkl: memo of an empty stack", P->path);
            if (k == (size_t)-1) {
                /* MEMOIZE uses the next free index: count what is set */
                for (k = 0; k < P->nmemo && P->memo[k] != (size_t)-1; ++k) {}
            }
            /* a pickler numbers its memo 0, 1, 2, ... as it stores objects, each
               of which made at least one value here: a larger index is not
               from a pickler (and would size the memo from 4 bytes of input) */
            if (k > ((size_t)1 << 24) || k >= P->nv)
                LSAE__PK_FAIL("%s: data.pkl: memo index %zu with only %zu objects unpickled; not written by a pickler", P->path, k, P->nv);
            if (k >= cap) {
                if (!lsae__grow(P->alloc, &mb, &cap, k + 1, sizeof(size_t))) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
                P->memo = (size_t *)mb;
                for (m = oldcap; m < cap; ++m) P->memo[m] = (size_t)-1;
                P->nmemo = cap;
            }
            P->memo[k] = P->stack[P->ns - 1];
            break;
        }
        case 'h': case 'j':                                         /* BINGET, LONG_BINGET */
            if (op == 'h') { LSAE__NEED(1); k = p[pos++]; }
            else { LSAE__NEED(4); k = (size_t)lsae__get_le(p + pos, 4); pos += 4; }
            if (k >= P->nmemo || P->memo[k] == (size_t)-1) LSAE__PK_FAIL("%s: data.pkl: memo %zu used before it is set", P->path, k);
            LSAE__PUSH(P->memo[k]);
            break;
        case ')': case 't': case 0x85: case 0x86: case 0x87: case ']': case 'l': { /* tuples and lists */
            size_t first;
            if (op == ')') cnt = 0;
            else if (op == 0x85 || op == 0x86 || op == 0x87) cnt = (size_t)(op - 0x84);
            else if (op == ']') cnt = 0;
            else {
                for (m = P->ns; m > 0 && P->v[P->stack[m - 1]].type != LSAE__PV_MARK; --m) {}
                if (m == 0) LSAE__PK_FAIL("%s: data.pkl: TUPLE without MARK", P->path);
                cnt = P->ns - m;
            }
            if (cnt > P->ns) LSAE__PK_FAIL("%s: data.pkl: stack underflow at byte %zu", P->path, pos);
            first = lsae__pv_kids(P, cnt);
            v = lsae__pv_new(P, (op == ']' || op == 'l') ? LSAE__PV_LIST : LSAE__PV_TUPLE);
            if (first == (size_t)-1 || v == (size_t)-1) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
            for (m = 0; m < cnt; ++m) {
                P->kids[first + m] = P->stack[P->ns - cnt + m];
                if (P->v[P->kids[first + m]].type == LSAE__PV_MARK) LSAE__PK_FAIL("%s: data.pkl: MARK inside a tuple", P->path);
            }
            P->ns -= cnt;
            if (op == 't' || op == 'l') --P->ns; /* the mark */
            P->v[v].s = first;
            P->v[v].n = cnt;
            LSAE__PUSH(v);
            break;
        }
        case '}': LSAE__PUSH(lsae__pv_new(P, LSAE__PV_DICT)); break; /* EMPTY_DICT */
        case 'a': case 's': case 'e': case 'u': {                   /* APPEND, SETITEM, APPENDS, SETITEMS */
            size_t c;
            if (op == 'a') cnt = 1;
            else if (op == 's') cnt = 2;
            else {
                for (m = P->ns; m > 0 && P->v[P->stack[m - 1]].type != LSAE__PV_MARK; --m) {}
                if (m == 0) LSAE__PK_FAIL("%s: data.pkl: APPENDS/SETITEMS without MARK", P->path);
                cnt = P->ns - m;
            }
            if (P->ns < cnt + 1 + ((op == 'e' || op == 'u') ? 1u : 0u)) LSAE__PK_FAIL("%s: data.pkl: stack underflow at byte %zu", P->path, pos);
            c = P->stack[P->ns - cnt - 1 - ((op == 'e' || op == 'u') ? 1 : 0)];
            if (P->v[c].type == LSAE__PV_LIST || P->v[c].type == LSAE__PV_DICT) {
                lsae_result ar = lsae__pv_append(P, c, P->stack + P->ns - cnt, cnt);
                if (ar != LSAE_OK) return ar;
            } else if (P->v[c].type != LSAE__PV_OBJ) {
                LSAE__PK_FAIL("%s: data.pkl: items added to something that is not a list or dict", P->path);
            }
            P->ns -= cnt;
            if (op == 'e' || op == 'u') --P->ns;
            break;
        }
        case 'Q': {                                                 /* BINPERSID: a storage */
            size_t t0;
            LSAE__POP(a);
            if (P->v[a].type != LSAE__PV_TUPLE || P->v[a].n < 5) LSAE__PK_FAIL("%s: data.pkl: persistent id is not a 5-tuple ('storage', type, key, location, numel)", P->path);
            t0 = P->v[a].s;
            if (!lsae__pv_streq(P, P->kids[t0], "storage") || P->v[P->kids[t0 + 1]].type != LSAE__PV_GLOBAL || P->v[P->kids[t0 + 2]].type != LSAE__PV_STR ||
                P->v[P->kids[t0 + 4]].type != LSAE__PV_INT || P->v[P->kids[t0 + 4]].i < 0)
                LSAE__PK_FAIL("%s: data.pkl: persistent id is not ('storage', type, key, location, numel)", P->path);
            v = lsae__pv_new(P, LSAE__PV_STORAGE);
            if (v == (size_t)-1) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
            P->v[v].s = P->kids[t0 + 2];
            P->v[v].n = P->kids[t0 + 1];  /* the storage type global */
            P->v[v].i = P->v[P->kids[t0 + 4]].i;
            LSAE__PUSH(v);
            break;
        }
        case 'R': case 0x81: {                                      /* REDUCE, NEWOBJ */
            LSAE__POP(a);
            LSAE__POP(b);
            if (op == 'R' && (lsae__pv_global_is(P, b, "torch._utils", "_rebuild_tensor_v2") || lsae__pv_global_is(P, b, "torch._utils", "_rebuild_tensor"))) {
                v = lsae__pv_new(P, LSAE__PV_TENSOR);
                if (v == (size_t)-1) return lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory unpickling", P->path);
                if (P->v[a].type != LSAE__PV_TUPLE || P->v[a].n < 4) LSAE__PK_FAIL("%s: data.pkl: _rebuild_tensor with %zu arguments", P->path, P->v[a].n);
                P->v[v].s = P->kids[P->v[a].s];
                P->v[v].n = a;
            } else if (op == 'R' && lsae__pv_global_is(P, b, "torch._utils", "_rebuild_parameter") && P->v[a].type == LSAE__PV_TUPLE && P->v[a].n >= 1) {
                v = P->kids[P->v[a].s];     /* a Parameter: its data tensor */
            } else if (op == 'R' && lsae__pv_global_is(P, b, "collections", "OrderedDict")) {
                v = lsae__pv_new(P, LSAE__PV_DICT);
            } else {
                v = lsae__pv_new(P, LSAE__PV_OBJ);
            }
            LSAE__PUSH(v);
            break;
        }
        case 'b':                                                   /* BUILD: state is dropped */
            LSAE__POP(a);
            if (P->ns == 0) LSAE__PK_FAIL("%s: data.pkl: BUILD on an empty stack", P->path);
            break;
        case '0':                                                   /* POP */
            LSAE__POP(a);
            break;
        default:
            LSAE__PK_FAIL("%s: data.pkl: pickle opcode 0x%02x at byte %zu is not one torch.save writes for a tensor", P->path, op, pos - 1);
        }
    }
    LSAE__PK_FAIL("%s: data.pkl ends without STOP", P->path);
#undef LSAE__NEED
#undef LSAE__POP
#undef LSAE__PUSH
}

/* whether tensor value t has a size tuple of two entries */
static int lsae__pickle_is_2d(const lsae__pickle *P, size_t t)
{
    size_t args = P->v[t].n, sz;
    if (P->v[args].type != LSAE__PV_TUPLE || P->v[args].n < 4) return 0;
    sz = P->kids[P->v[args].s + 2];
    return P->v[sz].type == LSAE__PV_TUPLE && P->v[sz].n == 2;
}

/* Find the tensor to read in the unpickled value v: v itself, or the one
   2-D tensor (or the one named `name`) inside a dict, list or tuple. */
static size_t lsae__pickle_pick(const lsae__pickle *P, size_t v, const char *name, size_t *found)
{
    size_t i, pick = (size_t)-1;
    *found = 0;
    if (P->v[v].type == LSAE__PV_TENSOR) { *found = 1; return v; }
    if (P->v[v].type == LSAE__PV_DICT) {
        for (i = 0; i + 1 < P->v[v].n; i += 2) {
            size_t key = P->kids[P->v[v].s + i], val = P->kids[P->v[v].s + i + 1];
            if (P->v[val].type != LSAE__PV_TENSOR) continue;
            if (name ? lsae__pv_streq(P, key, name) : lsae__pickle_is_2d(P, val)) { ++*found; pick = val; }
        }
    } else if (P->v[v].type == LSAE__PV_LIST || P->v[v].type == LSAE__PV_TUPLE) {
        for (i = 0; i < P->v[v].n; ++i) {
            size_t val = P->kids[P->v[v].s + i];
            if (P->v[val].type == LSAE__PV_TENSOR && lsae__pickle_is_2d(P, val)) { ++*found; pick = val; }
        }
    }
    return pick;
}

static lsae_result lsae__torch_open(const char *path, FILE *f, uint64_t size, const char *name, const lsae_allocator *a, lsae__shard *sh)
{
    lsae__zip z;
    lsae__pickle P;
    const lsae__zip_entry *pk, *de, *bo;
    int big = 0; /* the storages' byte order (PREFIX/byteorder; absent: little, as older torch wrote) */
    uint64_t pk_off, d_off, dim[2], st[2], soff;
    size_t prefix_len, top = 0, tv, found, args, stv, ty;
    unsigned char *pkl = NULL;
    char key[256], ename[300];
    lsae_result r;
    int q;
    memset(&P, 0, sizeof P);
    if ((r = lsae__zip_open(path, f, size, a, &z)) != LSAE_OK) {
        unsigned char m[2];
        if (lsae__seek(f, 0) && fread(m, 1, 2, f) == 2 && m[0] == 0x80)
            return lsae__err(LSAE_UNSUPPORTED, "%s: a legacy (pre-1.6, non-zip) torch file; load and re-save it with a current torch.save", path);
        return r;
    }
    if (!(pk = lsae__zip_find(&z, NULL, 0, "data.pkl"))) { r = lsae__err(LSAE_BAD_FILE, "%s: zip archive without a data.pkl: not written by torch.save", path); goto done; }
    prefix_len = pk->name_len - 8; /* "PREFIX/" */
    if ((bo = lsae__zip_find(&z, (const char *)z.cd + pk->name_off, prefix_len, "byteorder")) != NULL) {
        uint64_t bo_off;
        char order[8] = { 0 };
        if ((r = lsae__zip_data_offset(path, f, size, bo, &bo_off)) != LSAE_OK) goto done;
        if (bo->size > 7 || !lsae__seek(f, bo_off) || fread(order, 1, (size_t)bo->size, f) != (size_t)bo->size) { r = lsae__err(LSAE_BAD_FILE, "%s: bad byteorder entry", path); goto done; }
        /* "big": saved on a big-endian machine, storages in that order */
        if (strcmp(order, "big") == 0) big = 1;
        else if (strcmp(order, "little") != 0) { r = lsae__err(LSAE_BAD_FILE, "%s: byteorder entry says '%s'; 'little' or 'big' expected", path, order); goto done; }
    }
    if ((r = lsae__zip_data_offset(path, f, size, pk, &pk_off)) != LSAE_OK) goto done;
    if (pk->size > ((uint64_t)64 << 20)) { r = lsae__err(LSAE_BAD_FILE, "%s: data.pkl of %llu bytes; a tensor's pickle is a few hundred", path, (unsigned long long)pk->size); goto done; }
    pkl = (unsigned char *)lsae__malloc(a, (size_t)pk->size + 1);
    if (!pkl) { r = lsae__err(LSAE_OUT_OF_MEMORY, "%s: out of memory reading data.pkl", path); goto done; }
    if (!lsae__seek(f, pk_off) || fread(pkl, 1, (size_t)pk->size, f) != (size_t)pk->size) { r = lsae__err(LSAE_IO_ERROR, "%s: read of data.pkl failed", path); goto done; }
    P.p = pkl;
    P.len = (size_t)pk->size;
    P.alloc = a;
    P.path = path;
    if ((r = lsae__pickle_run(&P, &top)) != LSAE_OK) goto done;
    tv = lsae__pickle_pick(&P, top, name, &found);
    if (found != 1) {
        r = lsae__err(found ? LSAE_INVALID_ARGS : LSAE_BAD_FILE, "%s: holds %zu %s%s; %s", path, found,
                      name ? "tensors named " : "2-D tensors", name ? name : "", found ? "name the one to read" : "torch.save(tensor) of one 2-D float tensor is expected");
        goto done;
    }
    args = P.v[tv].n;
    stv = P.v[tv].s;
    if (P.v[stv].type != LSAE__PV_STORAGE) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor without a storage", path); goto done; }
    {
        size_t ka = P.v[args].s, sz = P.kids[ka + 2], sd = P.kids[ka + 3], so = P.kids[ka + 1];
        if (P.v[so].type != LSAE__PV_INT || P.v[so].i < 0 || P.v[sz].type != LSAE__PV_TUPLE || P.v[sd].type != LSAE__PV_TUPLE) {
            r = lsae__err(LSAE_BAD_FILE, "%s: _rebuild_tensor arguments are not (storage, offset, size, stride, ...)", path);
            goto done;
        }
        if (P.v[sz].n != 2 || P.v[sd].n != 2) {
            r = lsae__err(LSAE_BAD_FILE, "%s: tensor has %zu dimensions; embeddings must be 2-D [rows, width]", path, P.v[sz].n);
            goto done;
        }
        for (q = 0; q < 2; ++q) {
            size_t dv = P.kids[P.v[sz].s + (size_t)q], sv = P.kids[P.v[sd].s + (size_t)q];
            if (P.v[dv].type != LSAE__PV_INT || P.v[dv].i < 0 || P.v[sv].type != LSAE__PV_INT || P.v[sv].i < 0) {
                r = lsae__err(LSAE_BAD_FILE, "%s: tensor size or stride is not a non-negative integer", path);
                goto done;
            }
            dim[q] = (uint64_t)P.v[dv].i;
            st[q] = (uint64_t)P.v[sv].i;
        }
        soff = (uint64_t)P.v[so].i;
    }
    /* contiguous in C order: stride (width, 1), except along dimensions of size 1 */
    if ((dim[1] > 1 && st[1] != 1) || (dim[0] > 1 && st[0] != dim[1])) {
        r = lsae__err(LSAE_UNSUPPORTED, "%s: tensor [%llu, %llu] has strides (%llu, %llu), not C-contiguous (%llu, 1); save tensor.contiguous()", path,
                      (unsigned long long)dim[0], (unsigned long long)dim[1], (unsigned long long)st[0], (unsigned long long)st[1], (unsigned long long)dim[1]);
        goto done;
    }
    ty = P.v[stv].n;
    if (lsae__pv_global_is(&P, ty, "torch", "FloatStorage")) { sh->dtype = big ? LSAE__DT_F32_BE : LSAE__DT_F32; sh->elem = 4; }
    else if (lsae__pv_global_is(&P, ty, "torch", "HalfStorage")) { sh->dtype = big ? LSAE__DT_F16_BE : LSAE__DT_F16; sh->elem = 2; }
    else if (lsae__pv_global_is(&P, ty, "torch", "BFloat16Storage")) { sh->dtype = big ? LSAE__DT_BF16_BE : LSAE__DT_BF16; sh->elem = 2; }
    else {
        /* STACK_GLOBAL takes any two values: the name is printed only when it is a string */
        size_t nm = P.v[ty].type == LSAE__PV_GLOBAL ? P.v[ty].n : 0;
        int named = nm && P.v[nm].type == LSAE__PV_STR && P.v[nm].n < 256;
        r = lsae__err(LSAE_UNSUPPORTED, "%s: tensor storage is %.*s; embeddings are read from float32, float16 or bfloat16 tensors", path,
                      named ? (int)P.v[nm].n : 7, named ? (const char *)P.p + P.v[nm].s : "unknown");
        goto done;
    }
    {
        size_t kv = P.v[stv].s;
        uint64_t numel = (uint64_t)P.v[stv].i, need, bytes;
        if (P.v[kv].n >= sizeof key) { r = lsae__err(LSAE_BAD_FILE, "%s: storage key too long", path); goto done; }
        memcpy(key, P.p + P.v[kv].s, P.v[kv].n);
        key[P.v[kv].n] = 0;
        if (snprintf(ename, sizeof ename, "data/%s", key) >= (int)sizeof ename) { r = lsae__err(LSAE_BAD_FILE, "%s: storage key too long", path); goto done; }
        if (!(de = lsae__zip_find(&z, (const char *)z.cd + pk->name_off, prefix_len, ename))) {
            r = lsae__err(LSAE_BAD_FILE, "%s: the archive has no entry %.*s%s for the tensor's storage", path, (int)prefix_len, (const char *)z.cd + pk->name_off, ename);
            goto done;
        }
        if ((r = lsae__zip_data_offset(path, f, size, de, &d_off)) != LSAE_OK) goto done;
        if (!lsae__shape_bytes(numel, 1, sh->elem, &bytes) || bytes != de->size) {
            r = lsae__err(LSAE_BAD_FILE, "%s: storage of %llu elements of %zu bytes, but its entry holds %llu bytes", path, (unsigned long long)numel, sh->elem, (unsigned long long)de->size);
            goto done;
        }
        if (!lsae__shape_bytes(dim[0], dim[1], 1, &need) || soff > numel || need > numel - soff) {
            r = lsae__err(LSAE_BAD_FILE, "%s: tensor [%llu, %llu] at storage offset %llu does not fit its storage of %llu elements", path,
                          (unsigned long long)dim[0], (unsigned long long)dim[1], (unsigned long long)soff, (unsigned long long)numel);
            goto done;
        }
        sh->format = LSAE_FORMAT_TORCH;
        sh->offset = d_off + soff * sh->elem;
        sh->rows = dim[0];
        sh->cols = dim[1];
        r = lsae__shard_check_size(path, "tensor", sh->offset, sh->rows, sh->cols, sh->elem, size, 0);
    }
done:
    lsae__free(a, P.v);
    lsae__free(a, P.kids);
    lsae__free(a, P.stack);
    lsae__free(a, P.memo);
    lsae__free(a, pkl);
    lsae__zip_free(&z);
    return r;
}
#endif /* LSAE_NO_TORCH */

/* ------------------------------------------------------------ datasets */

struct lsae_dataset {
    lsae_allocator alloc_copy;
    const lsae_allocator *alloc;
    size_t d;
    uint64_t rows;
    lsae__shard *shards;
    size_t nshards;
    FILE *f;                    /* the one open shard for unmapped reads */
    size_t f_shard;
    unsigned char *buf;         /* conversion scratch for unmapped reads */
};

#define LSAE__DS_BUF (1u << 20)

LSAE_DEF lsae_dataset_options lsae_dataset_options_default(void)
{
    lsae_dataset_options o;
    memset(&o, 0, sizeof o);
    o.format = LSAE_FORMAT_AUTO;
    o.tensor_name = NULL;
    o.raw_d_in = 0;
    o.raw_dtype = LSAE_DTYPE_F32;
    o.no_mmap = 0;
    return o;
}

static const char *lsae__ext(const char *path)
{
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    if (!dot || (slash && dot < slash)) return "";
    return dot + 1;
}

static int lsae__ieq(const char *a, const char *b)
{
    for (; *a && *b; ++a, ++b) {
        char x = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a, y = *b >= 'A' && *b <= 'Z' ? (char)(*b - 'A' + 'a') : *b;
        if (x != y) return 0;
    }
    return *a == *b;
}

/* The format a file name suggests, or AUTO when it says nothing. */
static lsae_format lsae__format_by_ext(const char *path)
{
    const char *e = lsae__ext(path);
    if (lsae__ieq(e, "npy")) return LSAE_FORMAT_NPY;
    if (lsae__ieq(e, "safetensors")) return LSAE_FORMAT_SAFETENSORS;
    if (lsae__ieq(e, "pt") || lsae__ieq(e, "pth")) return LSAE_FORMAT_TORCH;
    if (lsae__ieq(e, "bin") || lsae__ieq(e, "raw") || lsae__ieq(e, "f32") || lsae__ieq(e, "f16") || lsae__ieq(e, "bf16")) return LSAE_FORMAT_RAW;
    return LSAE_FORMAT_AUTO;
}

static void lsae__shard_unmap(lsae__shard *sh)
{
#if defined(LSAE__HAVE_MMAP) && defined(_WIN32)
    if (sh->map) UnmapViewOfFile((const void *)sh->map);
#elif defined(LSAE__HAVE_MMAP)
    if (sh->map) munmap((void *)(uintptr_t)sh->map, sh->map_len);
#endif
    sh->map = NULL;
    sh->map_len = 0;
}

/* Map the whole file read-only where mmap exists; on any failure the shard
   is simply read with stdio. The descriptor is closed at once: the mapping
   keeps the file, so a directory of thousands of shards holds no fds. */
static void lsae__shard_map(lsae__shard *sh, uint64_t size)
{
#if defined(LSAE__HAVE_MMAP) && defined(_WIN32)
    /* the same on Windows: the view keeps the file mapping (and the file)
       alive after both handles are closed. FILE_SHARE_DELETE lets the file
       be renamed or deleted while mapped, as on POSIX. */
    wchar_t wp[LSAE__WPATH_CAP];
    void *file, *mapping, *p;
    if (size == 0 || size > (uint64_t)(size_t)-1 || !lsae__wpath(sh->path, wp, LSAE__WPATH_CAP)) return;
    file = CreateFileW(wp, LSAE__GENERIC_READ, LSAE__FILE_SHARE_ALL, NULL, LSAE__OPEN_EXISTING, LSAE__FILE_ATTRIBUTE_NORMAL, NULL);
    if (file == LSAE__INVALID_HANDLE) return;
    mapping = CreateFileMappingW(file, NULL, LSAE__PAGE_READONLY, 0, 0, NULL);
    CloseHandle(file);
    if (!mapping) return;
    p = MapViewOfFile(mapping, LSAE__FILE_MAP_READ, 0, 0, (lsae__win_size)size);
    CloseHandle(mapping);
    if (!p) return;
    sh->map = (const unsigned char *)p;
    sh->map_len = (size_t)size;
#elif defined(LSAE__HAVE_MMAP)
    int fd;
    void *p;
    if (size == 0 || size > (uint64_t)(size_t)-1) return;
    fd = open(sh->path, O_RDONLY);
    if (fd < 0) return;
    p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return;
    sh->map = (const unsigned char *)p;
    sh->map_len = (size_t)size;
#else
    (void)sh;
    (void)size;
#endif
}

/* Open one file as a shard: detect its format, read its header, check it. */
static lsae_result lsae__shard_open(const char *path, const lsae_dataset_options *opt, const lsae_allocator *a, lsae__shard *sh)
{
    FILE *f;
    uint64_t size;
    unsigned char magic[16];
    size_t got;
    lsae_format fmt = opt->format;
    lsae_result r;
    memset(sh, 0, sizeof *sh);
    if ((r = lsae__open_read(path, &f)) != LSAE_OK) return r;
    if (!lsae__file_size(f, &size)) { fclose(f); return lsae__err(LSAE_IO_ERROR, "%s: cannot find its size", path); }
    got = fread(magic, 1, sizeof magic, f);
    if (!lsae__seek(f, 0)) { fclose(f); return lsae__err(LSAE_IO_ERROR, "%s: seek failed", path); }
    if (fmt == LSAE_FORMAT_AUTO) {
        /* by content first: the magic bytes do not lie, extensions sometimes do
           (latent-sae 2024 wrote headerless dumps named .npy) */
        if (got >= 6 && memcmp(magic, "\x93NUMPY", 6) == 0) fmt = LSAE_FORMAT_NPY;
        else if (got >= 4 && memcmp(magic, "PK\x03\x04", 4) == 0) fmt = LSAE_FORMAT_TORCH;
        else if (got >= 9 && lsae__get_le(magic, 8) <= LSAE_MAX_SAFETENSORS_HEADER && lsae__get_le(magic, 8) + 8 <= size && magic[8] == '{') fmt = LSAE_FORMAT_SAFETENSORS;
        else if (opt->raw_d_in) fmt = LSAE_FORMAT_RAW;
        else if (lsae__format_by_ext(path) == LSAE_FORMAT_SAFETENSORS || lsae__format_by_ext(path) == LSAE_FORMAT_TORCH)
            fmt = lsae__format_by_ext(path); /* a damaged one: its reader says what is wrong (a header claiming 2^62 bytes, ...) */
        else {
            lsae_format by_ext = lsae__format_by_ext(path);
            fclose(f);
            if (by_ext == LSAE_FORMAT_NPY)
                return lsae__err(LSAE_BAD_FILE, "%s: named .npy but has no \\x93NUMPY header; if it is a raw dump of floats, give its width (raw_d_in / --d-in) and dtype", path);
            return lsae__err(LSAE_BAD_FILE, "%s: not an npy, safetensors or torch file; if it is a raw dump of floats, give its width (raw_d_in / --d-in) and dtype", path);
        }
    }
    switch (fmt) {
#ifndef LSAE_NO_NPY
    case LSAE_FORMAT_NPY: r = lsae__npy_open(path, f, size, a, sh); break;
#else
    case LSAE_FORMAT_NPY: r = lsae__err(LSAE_UNSUPPORTED, "%s: an .npy file, but this build has no .npy reader (compiled with LSAE_NO_NPY)", path); break;
#endif
    case LSAE_FORMAT_SAFETENSORS: fclose(f); f = NULL; r = lsae__st_shard_open(path, opt->tensor_name, a, sh); break;
    case LSAE_FORMAT_RAW: r = lsae__raw_open(path, size, opt->raw_d_in, opt->raw_dtype, sh); break;
#ifndef LSAE_NO_TORCH
    case LSAE_FORMAT_TORCH: r = lsae__torch_open(path, f, size, opt->tensor_name, a, sh); break;
#else
    case LSAE_FORMAT_TORCH: r = lsae__err(LSAE_UNSUPPORTED, "%s: a torch .pt file, but this build has no torch .pt reader (compiled with LSAE_NO_TORCH)", path); break;
#endif
    default: r = lsae__err(LSAE_INVALID_ARGS, "format %d is not one of LSAE_FORMAT_*", (int)fmt); break;
    }
    if (f) fclose(f);
    if (r != LSAE_OK) return r;
    if (sh->cols == 0 && sh->rows > 0) return lsae__err(LSAE_BAD_FILE, "%s: rows of width 0", path);
    if (sh->cols > (uint64_t)INT32_MAX) return lsae__err(LSAE_BAD_FILE, "%s: width %llu is larger than 2^31 - 1", path, (unsigned long long)sh->cols);
    if (!(sh->path = lsae__strdup(a, path))) return lsae__err(LSAE_OUT_OF_MEMORY, "out of memory");
    if (!opt->no_mmap) lsae__shard_map(sh, size);
    return LSAE_OK;
}

static int lsae__has_data_prefix(const char *name) { return strncmp(name, "data-", 5) == 0 || strncmp(name, "data_", 5) == 0; }

/* The shard files of a directory: every file of one kind (by extension),
   or only the data-* / data_* ones when there are any (latent-sae keeps
   side files such as chunk_offsets.npy beside its shards), sorted by name. */
static lsae_result lsae__dir_shards(const char *dir, const lsae_dataset_options *opt, const lsae_allocator *a, lsae__names *out)
{
    lsae__names all;
    size_t i, count[5] = { 0, 0, 0, 0, 0 }, kinds = 0, ndata = 0;
    lsae_format kind = opt->format;
    lsae_result r;
    char path[4096];
    memset(out, 0, sizeof *out);
    out->alloc = a;
    if ((r = lsae__list_dir(dir, a, &all)) != LSAE_OK) return r;
    for (i = 0; i < all.n; ++i) {
        lsae_format k = lsae__format_by_ext(all.v[i]);
        if (all.v[i][0] == '.') continue;
        if (!lsae__path_join(path, sizeof path, dir, all.v[i]) || lsae__is_dir(path)) continue;
        ++count[(int)k];
    }
    if (kind == LSAE_FORMAT_AUTO) {
        int k;
        for (k = 1; k <= 4; ++k)
            if (count[k] && (k != LSAE_FORMAT_RAW || opt->raw_d_in)) { ++kinds; kind = (lsae_format)k; }
        if (kinds == 0) {
            lsae__names_free(&all);
            return lsae__err(LSAE_NOT_FOUND, "%s: no shards (.npy, .safetensors, .pt; raw .bin/.raw/.f32/.f16/.bf16 with a width given) in this directory", dir);
        }
        if (kinds > 1) {
            lsae__names_free(&all);
            return lsae__err(LSAE_INVALID_ARGS, "%s: shards of several kinds (%zu .npy, %zu .safetensors, %zu .pt, %zu raw); choose one with the format option", dir,
                             count[LSAE_FORMAT_NPY], count[LSAE_FORMAT_SAFETENSORS], count[LSAE_FORMAT_TORCH], count[LSAE_FORMAT_RAW]);
        }
    }
    for (i = 0; i < all.n; ++i) {
        lsae_format k = lsae__format_by_ext(all.v[i]);
        if (all.v[i][0] == '.' || !lsae__path_join(path, sizeof path, dir, all.v[i]) || lsae__is_dir(path)) continue;
        /* raw dumps carry any name (latent-sae wrote them as .npy) when the format is given */
        if (k != kind && !(opt->format == LSAE_FORMAT_RAW && k != LSAE_FORMAT_SAFETENSORS && k != LSAE_FORMAT_TORCH)) continue;
        if (lsae__has_data_prefix(all.v[i])) ++ndata;
    }
    for (i = 0; i < all.n; ++i) {
        lsae_format k = lsae__format_by_ext(all.v[i]);
        if (all.v[i][0] == '.' || !lsae__path_join(path, sizeof path, dir, all.v[i]) || lsae__is_dir(path)) continue;
        if (k != kind && !(opt->format == LSAE_FORMAT_RAW && k != LSAE_FORMAT_SAFETENSORS && k != LSAE_FORMAT_TORCH)) continue;
        if (ndata && !lsae__has_data_prefix(all.v[i])) continue;
        if ((r = lsae__names_push(out, path)) != LSAE_OK) { lsae__names_free(&all); lsae__names_free(out); return r; }
    }
    lsae__names_free(&all);
    if (out->n == 0) return lsae__err(LSAE_NOT_FOUND, "%s: no shard files of the requested kind here", dir);
    return LSAE_OK;
}

LSAE_DEF void lsae_dataset_close(lsae_dataset *ds)
{
    size_t i;
    lsae_allocator copy;
    const lsae_allocator *a;
    if (!ds) return;
    copy = ds->alloc_copy;
    a = ds->alloc ? &copy : NULL;
    for (i = 0; i < ds->nshards; ++i) {
        lsae__shard_unmap(&ds->shards[i]);
        lsae__free(a, ds->shards[i].path);
    }
    if (ds->f) fclose(ds->f);
    lsae__free(a, ds->shards);
    lsae__free(a, ds->buf);
    lsae__free(a, ds);
}

LSAE_DEF lsae_result lsae_dataset_open(const char *path, const lsae_dataset_options *opt_in, const lsae_allocator *alloc, lsae_dataset **out)
{
    lsae_dataset_options opt = opt_in ? *opt_in : lsae_dataset_options_default();
    lsae__names files;
    lsae_dataset *ds;
    lsae_result r = LSAE_OK;
    size_t i;
    if (!out) return lsae__err(LSAE_INVALID_ARGS, "lsae_dataset_open: out is NULL");
    *out = NULL;
    if (!path) return lsae__err(LSAE_INVALID_ARGS, "lsae_dataset_open: path is NULL");
    if (!lsae__allocator_check(alloc)) return lsae__err(LSAE_INVALID_ARGS, "allocator given with a NULL malloc_fn or free_fn");
    if (opt.format == LSAE_FORMAT_RAW && opt.raw_d_in == 0)
        return lsae__err(LSAE_INVALID_ARGS, "%s: raw dumps have no header: give their width (raw_d_in / --d-in)", path);
    memset(&files, 0, sizeof files);
    files.alloc = alloc;
    if (lsae__is_dir(path)) {
        if ((r = lsae__dir_shards(path, &opt, alloc, &files)) != LSAE_OK) return r;
    } else if ((r = lsae__names_push(&files, path)) != LSAE_OK) {
        lsae__names_free(&files); /* the list may have grown before the name's copy failed */
        return r;
    }
    ds = (lsae_dataset *)lsae__malloc(alloc, sizeof *ds);
    if (!ds) { lsae__names_free(&files); return lsae__err(LSAE_OUT_OF_MEMORY, "out of memory opening a dataset"); }
    memset(ds, 0, sizeof *ds);
    if (alloc) { ds->alloc_copy = *alloc; ds->alloc = &ds->alloc_copy; }
    ds->shards = (lsae__shard *)lsae__alloc_array(ds->alloc, files.n, sizeof(lsae__shard), "shard list");
    ds->buf = ds->shards ? (unsigned char *)lsae__malloc(ds->alloc, LSAE__DS_BUF) : NULL;
    if (!ds->buf) { lsae__names_free(&files); lsae_dataset_close(ds); return lsae__err(LSAE_OUT_OF_MEMORY, "out of memory opening a dataset"); }
    for (i = 0; i < files.n; ++i) {
        lsae__shard *sh = &ds->shards[i];
        if ((r = lsae__shard_open(files.v[i], &opt, ds->alloc, sh)) != LSAE_OK) break;
        ++ds->nshards;
        if (i == 0) ds->d = (size_t)sh->cols;
        if (sh->cols != ds->d) {
            r = lsae__err(LSAE_BAD_FILE, "%s: rows of width %llu, but %s has width %zu; every shard of a dataset must have the same width", sh->path,
                          (unsigned long long)sh->cols, ds->shards[0].path, ds->d);
            break;
        }
        if (opt.raw_d_in && sh->cols != opt.raw_d_in) {
            r = lsae__err(LSAE_BAD_FILE, "%s: rows of width %llu, but a width of %zu was given", sh->path, (unsigned long long)sh->cols, opt.raw_d_in);
            break;
        }
        sh->first = ds->rows;
        ds->rows += sh->rows;
    }
    lsae__names_free(&files);
    if (r != LSAE_OK) { lsae_dataset_close(ds); return r; }
    if (ds->d == 0) { lsae_dataset_close(ds); return lsae__err(LSAE_BAD_FILE, "%s: no rows (width 0)", path); }
    *out = ds;
    return LSAE_OK;
}

LSAE_DEF uint64_t lsae_dataset_rows(const lsae_dataset *ds) { return ds ? ds->rows : 0; }
LSAE_DEF size_t lsae_dataset_d_in(const lsae_dataset *ds) { return ds ? ds->d : 0; }
LSAE_DEF size_t lsae_dataset_num_shards(const lsae_dataset *ds) { return ds ? ds->nshards : 0; }

LSAE_DEF const char *lsae_dataset_shard_path(const lsae_dataset *ds, size_t i)
{
    return ds && i < ds->nshards ? ds->shards[i].path : NULL;
}

static size_t lsae__find_shard(const lsae_dataset *ds, uint64_t g);

/* Where global row g's bytes lie, when they can be used as float32 in place
   (a mapped F32 shard in this machine's byte order), else NULL. */
static const unsigned char *lsae__dataset_direct(const lsae_dataset *ds, uint64_t g)
{
    const lsae__shard *sh = &ds->shards[lsae__find_shard(ds, g)];
    if (!sh->map || sh->dtype != LSAE__DT_F32_NATIVE) return NULL;
    return sh->map + sh->offset + (g - sh->first) * ds->d * 4;
}

/* the shard holding global row g: the last one whose first row is <= g */
static size_t lsae__find_shard(const lsae_dataset *ds, uint64_t g)
{
    size_t lo = 0, hi = ds->nshards;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (ds->shards[mid].first <= g) lo = mid;
        else hi = mid;
    }
    while (lo + 1 < ds->nshards && ds->shards[lo].rows == 0) ++lo;
    return lo;
}

LSAE_DEF lsae_result lsae_dataset_read(lsae_dataset *ds, uint64_t first, size_t count, float *out)
{
    size_t done = 0, nvals;
    if (!ds || (!out && count)) return lsae__err(LSAE_INVALID_ARGS, "lsae_dataset_read: dataset and out must not be NULL");
    if (first > ds->rows || count > ds->rows - first)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_dataset_read: rows %llu..%llu asked of a dataset of %llu", (unsigned long long)first,
                         (unsigned long long)first + count, (unsigned long long)ds->rows);
    if (!lsae__mul_size(count, ds->d, &nvals)) return lsae__err(LSAE_INVALID_ARGS, "lsae_dataset_read: %zu rows x %zu overflows", count, ds->d);
    while (done < count) {
        size_t s = lsae__find_shard(ds, first + done);
        lsae__shard *sh = &ds->shards[s];
        uint64_t local = first + done - sh->first, avail = sh->rows - local;
        size_t n = (size_t)(count - done < avail ? count - done : avail);
        uint64_t off = sh->offset + local * ds->d * sh->elem;
        size_t vals = n * ds->d;
        float *dst = out + done * ds->d;
        if (sh->map) {
            lsae__to_f32(dst, sh->map + off, vals, sh->dtype);
        } else {
            lsae_result r;
            if (!ds->f || ds->f_shard != s) {
                if (ds->f) fclose(ds->f);
                ds->f = NULL;
                if ((r = lsae__open_read(sh->path, &ds->f)) != LSAE_OK) return r;
                ds->f_shard = s;
            }
            if (!lsae__seek(ds->f, off)) return lsae__err(LSAE_IO_ERROR, "%s: seek to byte %llu failed", sh->path, (unsigned long long)off);
            if (sh->dtype == LSAE__DT_F32_NATIVE) {
                if (fread(dst, 4, vals, ds->f) != vals)
                    return lsae__err(LSAE_IO_ERROR, "%s: read of %zu rows at byte %llu failed (file shrunk?)", sh->path, n, (unsigned long long)off);
            } else {
                size_t per = LSAE__DS_BUF / sh->elem, got = 0;
                while (got < vals) {
                    size_t m = vals - got < per ? vals - got : per;
                    if (fread(ds->buf, sh->elem, m, ds->f) != m)
                        return lsae__err(LSAE_IO_ERROR, "%s: read of %zu rows at byte %llu failed (file shrunk?)", sh->path, n, (unsigned long long)off);
                    lsae__to_f32(dst + got, ds->buf, m, sh->dtype);
                    got += m;
                }
            }
        }
        done += n;
    }
    return LSAE_OK;
}

/* ---------------------------------------------------------------- loader */

/* The batch sequence, exactly (so a run can be resumed, and so another
   implementation could reproduce it):

   N = dataset rows. The stream is epochs x N source rows (cut at max_rows);
   its position g (rows_read) is in epoch e = g / N at virtual row r = g % N.

   Pieces: every shard is cut into pieces of P = max(1, window_rows / 8) rows
   (the last piece of a shard shorter). In epoch e the pieces are put in the
   order of a Fisher-Yates shuffle drawn from key(seed, e, ~0) (no shuffle:
   file order), and their rows, concatenated, are the epoch's virtual rows.
   Shuffling pieces rather than whole shards mixes a single big file too;
   with shards smaller than P it is exactly a shuffle of the shard order.

   Windows: virtual rows [w W, min((w + 1) W, N)) form window w of the epoch
   (W = window_rows). A window is brought in whole by the prefetch thread (a
   few long sequential passes, one per piece it touches: pages of mapped
   float32 shards are touched, other rows read and converted) and its rows
   are emitted in the order of a Fisher-Yates shuffle drawn from
   key(seed, e, w).

   Rows holding NaN or Inf are skipped and counted; the others fill batches of
   batch_size rows in stream order, across window and epoch boundaries. A
   batch ends right after its last row, so rows_read after a batch is the
   stream position just past it, and seeking there reproduces what follows.

   The random draws: key(seed, a, b) = mix(seed ^ mix(a ^ mix(b + 0x632BE59BD9B4E019)))
   with mix = SplitMix64's finaliser; draw i of a shuffle is mix(key + i), and
   Fisher-Yates for i = n-1 down to 1 swaps i with draw(i) mod (i + 1) (the
   bias of the modulo is below n / 2^64). */

enum { LSAE__WIN_FREE = 0, LSAE__WIN_FILLING = 1, LSAE__WIN_READY = 2 };

typedef struct lsae__window {
    uint64_t index;         /* window sequence number in the stream */
    uint64_t start;         /* stream position of its first row */
    size_t n;               /* rows */
    const unsigned char **rowp; /* [W] where each row's float32 bytes are, in virtual order */
    float *rows;            /* [W, d] rows that had to be converted; allocated when first needed */
    uint32_t *perm;         /* [W] emission order */
    unsigned char touch;    /* what reading the pages gave, kept so it is not optimised away */
    int state;
    lsae_result err;
    char msg[512];
} lsae__window;

struct lsae_loader {
    lsae_dataset *ds;
    lsae_loader_options opt;
    const lsae_allocator *alloc;
    size_t d;
    uint64_t N, total, W, P, nw;    /* rows, stream length, window rows, piece rows, windows per epoch */
    /* pieces in file order */
    uint64_t *piece_first, *piece_rows;
    size_t npieces;
    /* the epoch whose piece order is cached (used by whoever fills windows) */
    uint64_t order_epoch;
    int have_order;
    size_t *order;                  /* [npieces] */
    uint64_t *vstart;               /* [npieces + 1] virtual start of each piece in that order */
    /* windows */
    lsae__window win[2];
    int nslots;
    uint64_t next_use;              /* window sequence number the consumer takes next */
    uint64_t next_fill;             /* ... the filler fills next */
    int holding;                    /* the consumer holds slot next_use - 1 */
    /* consumer */
    uint64_t pos;
    float *batch;
    lsae_loader_stats stats;
    /* data-parallel reading (lsae_loader_set_comm): this rank's part only */
    lsae_comm comm;
    int parted;                     /* comm.size > 1 */
    int part_have;                  /* win[0].perm holds window win[0].index */
    double *part_sum;               /* [P + 1] the NaN/Inf counts of the ranks, then the failed ranks */
    double *part_bad;               /* [part_bad_cap] offsets from the batch start of the NaN/Inf rows */
    double *part_mine;              /* [part_mine_cap] ... of those this rank found in a round */
    size_t part_bad_cap, part_mine_cap;
    float *part_row;                /* [d] a row checked for another round of the batch */
    /* the prefetch thread */
    int threaded, stop;
#ifdef LSAE__HAVE_THREADS
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
};

static uint64_t lsae__key(uint64_t seed, uint64_t a, uint64_t b)
{
    return lsae__mix64(seed ^ lsae__mix64(a ^ lsae__mix64(b + 0x632BE59BD9B4E019ull)));
}

static void lsae__shuffle_u32(uint32_t *v, size_t n, uint64_t key)
{
    size_t i;
    for (i = n; i-- > 1;) {
        size_t j = (size_t)(lsae__mix64(key + i) % (uint64_t)(i + 1));
        uint32_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static void lsae__shuffle_size(size_t *v, size_t n, uint64_t key)
{
    size_t i;
    for (i = n; i-- > 1;) {
        size_t j = (size_t)(lsae__mix64(key + i) % (uint64_t)(i + 1));
        size_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

LSAE_DEF lsae_loader_options lsae_loader_options_default(size_t batch_size)
{
    lsae_loader_options o;
    memset(&o, 0, sizeof o);
    o.batch_size = batch_size;
    o.shuffle = 1;
    o.seed = 0;
    o.window_rows = 0;
    o.prefetch = 1;
    o.epochs = 1;
    o.max_rows = 0;
    o.drop_last = 1;
    return o;
}

/* The piece order and virtual starts of epoch e. */
static void lsae__epoch_order(lsae_loader *ld, uint64_t e)
{
    size_t i;
    uint64_t at = 0;
    if (ld->have_order && ld->order_epoch == e) return;
    for (i = 0; i < ld->npieces; ++i) ld->order[i] = i;
    if (ld->opt.shuffle) lsae__shuffle_size(ld->order, ld->npieces, lsae__key(ld->opt.seed, e, ~(uint64_t)0));
    for (i = 0; i < ld->npieces; ++i) {
        ld->vstart[i] = at;
        at += ld->piece_rows[ld->order[i]];
    }
    ld->vstart[ld->npieces] = at;
    ld->order_epoch = e;
    ld->have_order = 1;
}

/* 1 if any of the d float32 values at x (in this machine's byte order: a
   batch row, already converted from its file) is NaN or Inf. A float is NaN
   or Inf exactly when its exponent bits are all ones, and then
   (bits & 0x7F800000) + 0x00800000 carries into bit 31; two floats go
   through a 64-bit word at once (the low half's sum never reaches bit 32),
   four words per step on independent accumulators: no branch and no
   comparison chain, several GB/s even where the compiler does not vectorise.
   Which float lands in which half of a word depends on the byte order, but
   both halves are tested alike, so the same code is right on either. */
static int lsae__row_nonfinite(const unsigned char *x, size_t d)
{
    const uint64_t M = 0x7F8000007F800000ull, A = 0x0080000000800000ull;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0, n = d * 4;
    for (; i + 32 <= n; i += 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, x + i, 8);
        memcpy(&w1, x + i + 8, 8);
        memcpy(&w2, x + i + 16, 8);
        memcpy(&w3, x + i + 24, 8);
        a0 |= (w0 & M) + A;
        a1 |= (w1 & M) + A;
        a2 |= (w2 & M) + A;
        a3 |= (w3 & M) + A;
    }
    for (; i + 4 <= n; i += 4) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        a0 |= (uint64_t)((u & 0x7F800000u) + 0x00800000u);
    }
    return ((a0 | a1 | a2 | a3) & 0x8000000080000000ull) != 0;
}

/* Read window number j (in stream order) into w: rows, NaN flags, emission order.
   Touches only w and the epoch-order cache, so the prefetch thread can run it
   while the consumer reads the other slot. */
static lsae_result lsae__window_fill(lsae_loader *ld, lsae__window *w, uint64_t j)
{
    uint64_t e = j / ld->nw, wi = j % ld->nw, v0 = wi * ld->W, v, vend;
    size_t lo, hi, r;
    lsae_result res;
    w->index = j;
    w->start = e * ld->N + v0;
    w->n = (size_t)((ld->N - v0) < ld->W ? (ld->N - v0) : ld->W);
    lsae__epoch_order(ld, e);
    /* the first piece that covers virtual row v0 */
    lo = 0;
    hi = ld->npieces;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (ld->vstart[mid] <= v0) lo = mid;
        else hi = mid;
    }
    v = v0;
    vend = v0 + w->n;
    /* Rows of a memory-mapped float32 shard in this machine's byte order
       (little-endian on x86 and ARM64) are used where they lie (no copy: the
       batch is gathered straight from the page cache);
       other rows are read and converted into w->rows, in slices of about
       256 KiB. A mapped slice has one byte of each of its pages read here,
       so a file not yet in the page cache is read from disk by this (the
       prefetch) thread, not by the consumer. Non-finite rows are found as
       they are copied into a batch, while they are in cache: the data is
       read once. */
    {
        const size_t rb = ld->d * sizeof(float);
        size_t slice = ((size_t)256 << 10) / rb;
        if (slice == 0) slice = 1;
        while (v < vend) {
            size_t p = ld->order[lo], at = (size_t)(v - v0);
            uint64_t in = v - ld->vstart[lo], take = ld->piece_rows[p] - in;
            const unsigned char *direct;
            if (take > vend - v) take = vend - v;
            if (take > slice) take = slice;
            direct = lsae__dataset_direct(ld->ds, ld->piece_first[p] + in);
            if (direct) {
                const size_t bytes = (size_t)take * rb;
                size_t q;
                unsigned char touch = 0;
                for (r = 0; r < (size_t)take; ++r) w->rowp[at + r] = direct + r * rb;
                for (q = 0; q < bytes; q += 4096) touch ^= direct[q];
                touch ^= direct[bytes - 1];
                w->touch ^= touch;
            } else {
                if (!w->rows && !(w->rows = (float *)lsae__alloc_array(ld->alloc, (size_t)ld->W, rb, "loader window (lower window_rows?)")))
                    return LSAE_OUT_OF_MEMORY;
                if ((res = lsae_dataset_read(ld->ds, ld->piece_first[p] + in, (size_t)take, w->rows + at * ld->d)) != LSAE_OK) return res;
                for (r = 0; r < (size_t)take; ++r) w->rowp[at + r] = (const unsigned char *)(w->rows + (at + r) * ld->d);
            }
            for (r = at; r < at + (size_t)take; ++r) w->perm[r] = (uint32_t)r;
            v += take;
            if (v >= ld->vstart[lo + 1]) ++lo;
        }
    }
    if (ld->opt.shuffle) lsae__shuffle_u32(w->perm, w->n, lsae__key(ld->opt.seed, e, wi));
    return LSAE_OK;
}

static uint64_t lsae__windows_total(const lsae_loader *ld)
{
    /* windows up to and including the one holding the last stream row */
    uint64_t last;
    if (ld->total == 0) return 0;
    last = ld->total - 1;
    return (last / ld->N) * ld->nw + (last % ld->N) / ld->W + 1;
}

#ifdef LSAE__HAVE_THREADS
static void *lsae__prefetch_main(void *arg)
{
    lsae_loader *ld = (lsae_loader *)arg;
    uint64_t end = lsae__windows_total(ld);
    for (;;) {
        lsae__window *w;
        lsae_result r;
        pthread_mutex_lock(&ld->mu);
        while (!ld->stop && ld->next_fill < end && ld->win[ld->next_fill % 2].state != LSAE__WIN_FREE) pthread_cond_wait(&ld->cv, &ld->mu);
        if (ld->stop || ld->next_fill >= end) { pthread_mutex_unlock(&ld->mu); break; }
        w = &ld->win[ld->next_fill % 2];
        w->state = LSAE__WIN_FILLING;
        pthread_mutex_unlock(&ld->mu);
        r = lsae__window_fill(ld, w, ld->next_fill);
        pthread_mutex_lock(&ld->mu);
        w->err = r;
        if (r != LSAE_OK) {
            size_t n = strlen(lsae__err_msg);
            if (n >= sizeof w->msg) n = sizeof w->msg - 1;
            memcpy(w->msg, lsae__err_msg, n);
            w->msg[n] = 0;
        }
        w->state = LSAE__WIN_READY;
        ++ld->next_fill;
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
        if (r != LSAE_OK) break;
    }
    return NULL;
}
#endif

static void lsae__loader_stop(lsae_loader *ld)
{
#ifdef LSAE__HAVE_THREADS
    if (ld->threaded) {
        pthread_mutex_lock(&ld->mu);
        ld->stop = 1;
        pthread_cond_broadcast(&ld->cv);
        pthread_mutex_unlock(&ld->mu);
        pthread_join(ld->thread, NULL);
        ld->threaded = 0;
    }
#endif
    ld->stop = 0;
}

/* Start reading ahead from the window that holds ld->pos. */
static void lsae__loader_start(lsae_loader *ld)
{
    uint64_t j = ld->pos < ld->total ? (ld->pos / ld->N) * ld->nw + (ld->pos % ld->N) / ld->W : lsae__windows_total(ld);
    ld->win[0].state = ld->win[1].state = LSAE__WIN_FREE;
    ld->next_use = ld->next_fill = j;
    ld->holding = 0;
#ifdef LSAE__HAVE_THREADS
    ld->part_have = 0;
    if (ld->opt.prefetch && ld->nslots == 2 && ld->pos < ld->total && !ld->parted) {
        ld->stop = 0;
        ld->threaded = pthread_create(&ld->thread, NULL, lsae__prefetch_main, ld) == 0;
        /* no thread (resource limits): the synchronous path gives the same batches */
    }
#endif
}

LSAE_DEF void lsae_loader_free(lsae_loader *ld)
{
    int i;
    if (!ld) return;
    lsae__loader_stop(ld);
#ifdef LSAE__HAVE_THREADS
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv);
#endif
    for (i = 0; i < 2; ++i) {
        lsae__free(ld->alloc, ld->win[i].rows);
        lsae__free(ld->alloc, (void *)ld->win[i].rowp);
        lsae__free(ld->alloc, ld->win[i].perm);
    }
    lsae__free(ld->alloc, ld->piece_first);
    lsae__free(ld->alloc, ld->piece_rows);
    lsae__free(ld->alloc, ld->order);
    lsae__free(ld->alloc, ld->vstart);
    lsae__free(ld->alloc, ld->batch);
    lsae__free(ld->alloc, ld->part_sum);
    lsae__free(ld->alloc, ld->part_bad);
    lsae__free(ld->alloc, ld->part_mine);
    lsae__free(ld->alloc, ld->part_row);
    lsae__free(ld->alloc, ld);
}

LSAE_DEF lsae_result lsae_loader_create(lsae_dataset *ds, const lsae_loader_options *opt, lsae_loader **out)
{
    lsae_loader *ld;
    size_t i, s;
    uint64_t W;
    if (!out) return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_create: out is NULL");
    *out = NULL;
    if (!ds || !opt) return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_create: dataset and options must not be NULL");
    if (opt->batch_size == 0) return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_create: batch_size is 0");
    if (ds->rows == 0) return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_create: the dataset (%s%s) has no rows", ds->nshards ? ds->shards[0].path : "", ds->nshards > 1 ? ", ..." : "");
    if (opt->epochs == 0) return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_create: epochs is 0");
    ld = (lsae_loader *)lsae__malloc(ds->alloc, sizeof *ld);
    if (!ld) return lsae__err(LSAE_OUT_OF_MEMORY, "out of memory creating a loader");
    memset(ld, 0, sizeof *ld);
    ld->ds = ds;
    ld->opt = *opt;
    ld->alloc = ds->alloc;
    ld->d = ds->d;
    ld->N = ds->rows;
    ld->total = opt->epochs > UINT64_MAX / ds->rows ? UINT64_MAX : opt->epochs * ds->rows;
    if (opt->max_rows && opt->max_rows < ld->total) ld->total = opt->max_rows;
    /* the window: about 256 MiB of float32 rows by default, at least a batch,
       at most the dataset, and a row index must fit the uint32 permutation */
    W = opt->window_rows ? opt->window_rows : ((uint64_t)256 << 20) / ((uint64_t)ds->d * 4);
    if (W < opt->batch_size) W = opt->window_rows ? W : opt->batch_size;
    if (W == 0) W = 1;
    if (W > ld->N) W = ld->N;
    if (W > UINT32_MAX) W = UINT32_MAX;
    ld->W = W;
    ld->P = W / 8 ? W / 8 : 1;
    ld->nw = (ld->N + W - 1) / W;
#ifdef LSAE__HAVE_THREADS
    ld->nslots = opt->prefetch ? 2 : 1;
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv, NULL);
#else
    ld->nslots = 1;
#endif
    /* pieces */
    for (s = 0; s < ds->nshards; ++s) ld->npieces += (size_t)((ds->shards[s].rows + ld->P - 1) / ld->P);
    if (!(ld->piece_first = (uint64_t *)lsae__alloc_array(ld->alloc, ld->npieces, sizeof(uint64_t), "loader pieces")) ||
        !(ld->piece_rows = (uint64_t *)lsae__alloc_array(ld->alloc, ld->npieces, sizeof(uint64_t), "loader pieces")) ||
        !(ld->order = (size_t *)lsae__alloc_array(ld->alloc, ld->npieces, sizeof(size_t), "loader piece order")) ||
        !(ld->vstart = (uint64_t *)lsae__alloc_array(ld->alloc, ld->npieces + 1, sizeof(uint64_t), "loader piece order")) ||
        !(ld->batch = (float *)lsae__alloc_array(ld->alloc, opt->batch_size, ld->d * sizeof(float), "loader batch"))) {
        lsae_loader_free(ld);
        return LSAE_OUT_OF_MEMORY;
    }
    for (s = 0, i = 0; s < ds->nshards; ++s) {
        uint64_t at;
        for (at = 0; at < ds->shards[s].rows; at += ld->P, ++i) {
            ld->piece_first[i] = ds->shards[s].first + at;
            ld->piece_rows[i] = ds->shards[s].rows - at < ld->P ? ds->shards[s].rows - at : ld->P;
        }
    }
    for (i = 0; i < (size_t)ld->nslots; ++i) {
        if (!(ld->win[i].rowp = (const unsigned char **)lsae__alloc_array(ld->alloc, (size_t)W, sizeof(unsigned char *), "loader window rows")) ||
            !(ld->win[i].perm = (uint32_t *)lsae__alloc_array(ld->alloc, (size_t)W, sizeof(uint32_t), "loader window order"))) {
            lsae_loader_free(ld);
            return LSAE_OUT_OF_MEMORY;
        }
    }
    lsae__loader_start(ld);
    *out = ld;
    return LSAE_OK;
}

/* The window that holds ld->pos, ready to read; waits for the prefetch
   thread, or fills it here. The wait is stall time. */
static lsae_result lsae__loader_window(lsae_loader *ld, lsae__window **out)
{
    lsae__window *w = &ld->win[ld->next_use % (uint64_t)ld->nslots];
    double t0;
    if (ld->holding) {
        lsae__window *h = &ld->win[(ld->next_use - 1) % (uint64_t)ld->nslots];
        if (ld->pos < h->start + h->n) { *out = h; return LSAE_OK; }
        /* done with it: hand the slot back to the filler */
#ifdef LSAE__HAVE_THREADS
        if (ld->threaded) pthread_mutex_lock(&ld->mu);
#endif
        h->state = LSAE__WIN_FREE;
        ld->holding = 0;
#ifdef LSAE__HAVE_THREADS
        if (ld->threaded) { pthread_cond_broadcast(&ld->cv); pthread_mutex_unlock(&ld->mu); }
#endif
        w = &ld->win[ld->next_use % (uint64_t)ld->nslots];
    }
    t0 = lsae__now();
#ifdef LSAE__HAVE_THREADS
    if (ld->threaded) {
        pthread_mutex_lock(&ld->mu);
        while (w->state != LSAE__WIN_READY) pthread_cond_wait(&ld->cv, &ld->mu);
        pthread_mutex_unlock(&ld->mu);
        if (w->err != LSAE_OK) { ld->stats.stall_seconds += lsae__now() - t0; return lsae__err(w->err, "%s", w->msg); }
    } else
#endif
    {
        lsae_result r = lsae__window_fill(ld, w, ld->next_use);
        if (r != LSAE_OK) { ld->stats.stall_seconds += lsae__now() - t0; return r; }
        w->state = LSAE__WIN_READY;
    }
    ld->stats.stall_seconds += lsae__now() - t0;
    ld->stats.rows_loaded += w->n;
    ++ld->next_use;
    ld->holding = 1;
    *out = w;
    return LSAE_OK;
}

/* ------------------------------------------- data-parallel reading (parts) */

/* The dataset row at stream position p (< total), without reading any data:
   the emission order of p's window (the same draw as lsae__window_fill,
   kept in win[0].perm while the positions stay in that window) and its
   epoch's piece order. */
static void lsae__part_row(lsae_loader *ld, uint64_t p, uint64_t *row)
{
    uint64_t e = p / ld->N, wi = (p % ld->N) / ld->W, v0 = wi * ld->W, v;
    lsae__window *w = &ld->win[0];
    size_t lo = 0, hi, i;
    if (!ld->part_have || w->index != e * ld->nw + wi) {
        w->index = e * ld->nw + wi;
        w->start = e * ld->N + v0;
        w->n = (size_t)((ld->N - v0) < ld->W ? (ld->N - v0) : ld->W);
        for (i = 0; i < w->n; ++i) w->perm[i] = (uint32_t)i;
        if (ld->opt.shuffle) lsae__shuffle_u32(w->perm, w->n, lsae__key(ld->opt.seed, e, wi));
        ld->part_have = 1;
    }
    lsae__epoch_order(ld, e);
    v = v0 + w->perm[p - w->start];
    hi = ld->npieces;
    while (hi - lo > 1) { /* the piece holding virtual row v */
        size_t mid = lo + (hi - lo) / 2;
        if (ld->vstart[mid] <= v) lo = mid;
        else hi = mid;
    }
    *row = ld->piece_first[ld->order[lo]] + (v - ld->vstart[lo]);
}

/* The row at stream position p into dst: a copy out of the page cache for a
   mapped float32 shard, else that one row read and converted. */
static lsae_result lsae__part_fetch(lsae_loader *ld, uint64_t p, float *dst)
{
    uint64_t g;
    const unsigned char *direct;
    lsae__part_row(ld, p, &g);
    ++ld->stats.rows_loaded;
    direct = lsae__dataset_direct(ld->ds, g);
    if (direct) {
        memcpy(dst, direct, ld->d * sizeof(float));
        return LSAE_OK;
    }
    return lsae_dataset_read(ld->ds, g, 1, dst);
}

/* *v holds at least n doubles (grown by doubling); 0 when out of memory */
static int lsae__part_room(lsae_loader *ld, double **v, size_t *cap, size_t n)
{
    size_t c = *cap ? *cap : 64;
    double *nv;
    if (n <= *cap) return 1;
    while (c < n) c *= 2;
    if (!(nv = (double *)lsae__alloc_array(ld->alloc, c, sizeof(double), "loader NaN/Inf row list"))) return 0;
    if (*cap) memcpy(nv, *v, *cap * sizeof(double));
    lsae__free(ld->alloc, *v);
    *v = nv;
    *cap = c;
    return 1;
}

/* next() with a communicator. The global batch is the first B finite rows of
   the stream from pos0; rank r returns those numbered [n r / P, n (r + 1) / P).
   Which rows are finite is found out together, in rounds: a round checks the
   next `need` stream positions (need = the finite rows still missing), cut
   into P contiguous chunks, rank q checking chunk q, and one sum tells every
   rank how many NaN/Inf rows each chunk held and where (offsets from pos0,
   integers well below 2^53: exact in the double sum). Without NaN/Inf rows
   (the usual case) there is one round, chunk r is exactly rank r's part and
   the rows it read are the ones it returns; otherwise the part is read again
   by walking the positions past the known bad ones. A rank whose read fails
   says so in the sum, and every rank returns an error. */
static lsae_result lsae__part_next(lsae_loader *ld, const float **batch, size_t *rows)
{
    const size_t B = ld->opt.batch_size, d = ld->d;
    const uint64_t P = (uint64_t)ld->comm.size, r = (uint64_t)ld->comm.rank;
    uint64_t pos0 = ld->pos, s = pos0, need = B, nbad = 0, c0 = 0, c1 = 0;
    size_t count, lo, hi;
    lsae_loader_stats stats0 = ld->stats;
    double t0 = lsae__now();
    lsae_result res = LSAE_OK;
    char msg[sizeof lsae__err_msg];
    msg[0] = 0;
    while (need > 0 && s < ld->total) {
        uint64_t m = ld->total - s < need ? ld->total - s : need;
        uint64_t a = s + m * r / P, b = s + m * (r + 1) / P, p, mine = 0, before = 0, tb = 0, q;
        int failed = 0;
        if (s == pos0) {
            c0 = a - pos0;
            c1 = b - pos0;
        }
        for (p = a; p < b; ++p) {
            /* the first round's rows go where the batch wants them */
            float *dst = s == pos0 ? ld->batch + (size_t)(p - pos0) * d : ld->part_row;
            if ((res = lsae__part_fetch(ld, p, dst)) != LSAE_OK) { failed = 1; break; }
            if (lsae__row_nonfinite((const unsigned char *)dst, d)) {
                if (!lsae__part_room(ld, &ld->part_mine, &ld->part_mine_cap, (size_t)mine + 1)) { res = LSAE_OUT_OF_MEMORY; failed = 1; break; }
                ld->part_mine[mine++] = (double)(p - pos0);
            }
        }
        if (failed) memcpy(msg, lsae__err_msg, sizeof msg);
        for (q = 0; q <= P; ++q) ld->part_sum[q] = 0;
        ld->part_sum[r] = (double)mine;
        ld->part_sum[P] = failed;
        if (ld->comm.sum_f64(ld->comm.ctx, ld->part_sum, (size_t)P + 1) != LSAE_OK) {
            res = LSAE_ERROR;
            snprintf(msg, sizeof msg, "lsae_loader_next: summing the NaN/Inf row counts across the ranks failed");
            goto fail;
        }
        if (ld->part_sum[P] != 0) {
            if (!failed) {
                res = LSAE_IO_ERROR;
                snprintf(msg, sizeof msg, "lsae_loader_next: %.0f other rank(s) failed to read their rows of the batch", ld->part_sum[P]);
            }
            goto fail;
        }
        for (q = 0; q < P; ++q) {
            if (q < r) before += (uint64_t)ld->part_sum[q];
            tb += (uint64_t)ld->part_sum[q];
        }
        if (tb) {
            /* every rank's bad offsets, in stream order, after the earlier
               rounds': a sum over tb slots, each rank filling its own */
            if (!lsae__part_room(ld, &ld->part_bad, &ld->part_bad_cap, (size_t)(nbad + tb))) {
                /* the other ranks wait in the sum below: the caller
                   must end the job (lsae train does, MPI_Abort) */
                res = LSAE_OUT_OF_MEMORY;
                memcpy(msg, lsae__err_msg, sizeof msg);
                goto fail;
            }
            for (q = 0; q < tb; ++q) ld->part_bad[nbad + q] = 0;
            for (q = 0; q < mine; ++q) ld->part_bad[nbad + before + q] = ld->part_mine[q];
            if (ld->comm.sum_f64(ld->comm.ctx, ld->part_bad + nbad, (size_t)tb) != LSAE_OK) {
                res = LSAE_ERROR;
                snprintf(msg, sizeof msg, "lsae_loader_next: gathering the NaN/Inf rows across the ranks failed");
                goto fail;
            }
        }
        nbad += tb;
        need -= m - tb;
        s += m;
    }
    count = (size_t)(B - need);
    ld->pos = s;
    ld->stats.rows_dropped += nbad;
    ld->stats.rows_read = ld->pos;
    ld->stats.epoch = ld->pos / ld->N;
    if (count == 0 || (count < B && ld->opt.drop_last)) { ld->stats.stall_seconds += lsae__now() - t0; return LSAE_OK; }
    lo = (size_t)((uint64_t)count * r / P);
    hi = (size_t)((uint64_t)count * (r + 1) / P);
    if (nbad == 0) {
        /* one round of count rows: chunk r is this rank's part, already read */
        *batch = ld->batch + lo * d;
    } else {
        /* walk the positions past the bad ones to finite rows lo .. hi; a
           row of this rank's first-round chunk lies at batch row o already
           and moves down to f - lo <= o (in increasing o, so no row is
           overwritten before it is moved), the others are read */
        uint64_t o, f = 0, bi = 0;
        for (o = 0; o < s - pos0 && f < hi; ++o) {
            if (bi < nbad && ld->part_bad[bi] == (double)o) { ++bi; continue; }
            if (f < lo) { ++f; continue; }
            if (o >= c0 && o < c1) {
                if (o != f - lo) memmove(ld->batch + (size_t)(f - lo) * d, ld->batch + (size_t)o * d, d * sizeof(float));
            } else if ((res = lsae__part_fetch(ld, pos0 + o, ld->batch + (size_t)(f - lo) * d)) != LSAE_OK) {
                /* only this rank failed (a read that worked a moment ago):
                   the others go on, and the caller's error stops the job */
                memcpy(msg, lsae__err_msg, sizeof msg);
                goto fail;
            }
            ++f;
        }
        *batch = ld->batch;
    }
    ++ld->stats.batches;
    *rows = hi - lo;
    ld->stats.stall_seconds += lsae__now() - t0;
    return LSAE_OK;
fail:
    /* the loader stays where this call found it, as lsae_loader_next does */
    ld->pos = pos0;
    ld->stats = stats0;
    ld->part_have = 0;
    memcpy(lsae__err_msg, msg, sizeof msg);
    return res != LSAE_OK ? res : LSAE_ERROR;
}

LSAE_DEF lsae_result lsae_loader_set_comm(lsae_loader *ld, const lsae_comm *comm)
{
    if (!ld) return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_set_comm: loader is NULL");
    if (comm && (comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size))
        return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_set_comm: rank %d of size %d is not a rank", comm->rank, comm->size);
    if (comm && comm->size > 1 && !comm->sum_f64) return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_set_comm: sum_f64 must be set");
    lsae__loader_stop(ld);
    lsae__free(ld->alloc, ld->part_sum);
    lsae__free(ld->alloc, ld->part_row);
    ld->part_sum = NULL;
    ld->part_row = NULL;
    ld->parted = 0;
    memset(&ld->comm, 0, sizeof ld->comm);
    if (comm && comm->size > 1) {
        if (!(ld->part_sum = (double *)lsae__alloc_array(ld->alloc, (size_t)comm->size + 1, sizeof(double), "loader rank counts")) ||
            !(ld->part_row = (float *)lsae__alloc_array(ld->alloc, ld->d, sizeof(float), "loader row"))) {
            lsae__free(ld->alloc, ld->part_sum);
            ld->part_sum = NULL;
            lsae__loader_start(ld);
            return LSAE_OUT_OF_MEMORY;
        }
        ld->comm = *comm;
        ld->parted = 1;
    }
    /* the windows are read again from the position, as after a seek */
    lsae__loader_start(ld);
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_loader_next(lsae_loader *ld, const float **batch, size_t *rows)
{
    size_t count = 0, B;
    uint64_t pos0;
    lsae_loader_stats stats0;
    if (!ld || !batch || !rows) return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_next: loader, batch and rows must not be NULL");
    *batch = ld->batch;
    *rows = 0;
    if (ld->parted) return lsae__part_next(ld, batch, rows);
    B = ld->opt.batch_size;
    pos0 = ld->pos;
    stats0 = ld->stats;
    while (count < B && ld->pos < ld->total) {
        lsae__window *w = NULL;
        size_t off, end;
        lsae_result r = lsae__loader_window(ld, &w);
        if (r != LSAE_OK) {
            /* Leave the loader where this call found it, with the windows
               read again from there (a failed window is never kept): a
               batch that spans two windows must not lose the rows taken
               from the first, and a retry after, say, memory was freed
               gives exactly the batch this call would have. */
            char msg[sizeof lsae__err_msg];
            memcpy(msg, lsae__err_msg, sizeof msg);
            lsae__loader_stop(ld);
            ld->pos = pos0;
            ld->stats = stats0;
            lsae__loader_start(ld);
            memcpy(lsae__err_msg, msg, sizeof msg);
            return r;
        }
        off = (size_t)(ld->pos - w->start);
        end = w->n;
        if ((uint64_t)(end - off) > ld->total - ld->pos) end = off + (size_t)(ld->total - ld->pos);
        while (off < end && count < B) {
            uint32_t src = w->perm[off++];
#if defined(__GNUC__) || defined(__clang__)
            /* the rows come from random places: start fetching one a few
               rows ahead (its first lines and its page-table walk) while
               this one is copied */
            if (off + 3 < end) {
                const unsigned char *nx = w->rowp[w->perm[off + 3]];
                __builtin_prefetch(nx, 0, 0);
                __builtin_prefetch(nx + 64, 0, 0);
                __builtin_prefetch(nx + 4 * ld->d - 1, 0, 0);
            }
#endif
            /* copy, then check the copy while it is in cache; a bad row is overwritten by the next */
            memcpy(ld->batch + count * ld->d, w->rowp[src], ld->d * sizeof(float));
            if (lsae__row_nonfinite((const unsigned char *)(ld->batch + count * ld->d), ld->d)) ++ld->stats.rows_dropped;
            else ++count;
        }
        ld->pos = w->start + off;
    }
    ld->stats.rows_read = ld->pos;
    ld->stats.epoch = ld->pos / ld->N;
    if (count == 0 || (count < B && ld->opt.drop_last)) return LSAE_OK;
    ++ld->stats.batches;
    *rows = count;
    return LSAE_OK;
}

LSAE_DEF void lsae_loader_get_stats(const lsae_loader *ld, lsae_loader_stats *stats)
{
    if (!stats) return;
    if (!ld) { memset(stats, 0, sizeof *stats); return; }
    *stats = ld->stats;
}

LSAE_DEF lsae_result lsae_loader_seek(lsae_loader *ld, uint64_t rows_read)
{
    if (!ld) return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_seek: loader is NULL");
    if (rows_read > ld->total)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_loader_seek: position %llu is past the end of the stream (%llu rows: %llu epochs of %llu%s)",
                         (unsigned long long)rows_read, (unsigned long long)ld->total, (unsigned long long)ld->opt.epochs, (unsigned long long)ld->N,
                         ld->opt.max_rows ? ", cut at max_rows" : "");
    lsae__loader_stop(ld);
    ld->pos = rows_read;
    memset(&ld->stats, 0, sizeof ld->stats);
    ld->stats.rows_read = rows_read;
    ld->stats.epoch = rows_read / ld->N;
    lsae__loader_start(ld);
    return LSAE_OK;
}

/* ------------------------------------------------------------ checkpoints */

/* A checkpoint is a directory:
     cfg.json, sae.safetensors   the model, as lsae_model_save writes it (so
                                 latent-sae and sparsify load a checkpoint too)
     state.bin                   the trainer's state, this format (all little-endian):

     offset  size  field
          0     8  magic "LSAESTAT"
          8     4  format version, 1
         12     4  header size in bytes, 128
         16     8  d_in
         24     8  num_latents L
         32     8  k
         40     8  optimizer steps taken
         48     4  b_dec initialised (0 or 1)
         52     4  flags, 0
         56     8  blob length in bytes
         64     8  hash of cfg.json's bytes
         72     8  hash of sae.safetensors' bytes
         80     8  payload length in bytes (everything between header and trailer)
         88    40  zero
        128        payload: samples-since-fired  uint64 [L]
                            Adam m: W_enc [L, d], b_enc [L], W_dec [L, d], b_dec [d]  float32
                            Adam v: the same four                                      float32
                            the caller's blob                                          bytes
        end     8  trailer: hash of every byte before it

   "hash" is lsae__hash (see its comment): the trailer catches a torn or
   corrupted state.bin, the two model hashes a model file that does not
   belong with it. Every file is written under NAME.tmp, flushed, fsync'd and
   renamed.

   The directory as a whole survives a crash at any instant. Save writes
   DIR.tmp/ completely (files fsync'd, then the directory), then renames
   DIR -> DIR.old, DIR.tmp -> DIR, and removes DIR.old. Whenever DIR is
   missing, a whole checkpoint is at DIR.tmp (verified by its hashes) or at
   DIR.old: lsae_checkpoint_load looks there, and the next save first puts
   the newest whole one back at DIR. */

#define LSAE__STATE_HDR 128u
#define LSAE__STATE_VERSION 1u

/* Remove a checkpoint-like directory: only the files a checkpoint holds (and
   their .tmp leftovers), then the directory; anything else in it stops the
   removal with an error rather than being deleted. */
static lsae_result lsae__ckpt_rmdir(const char *dir)
{
    static const char *names[] = { "cfg.json", "sae.safetensors", "state.bin", "cfg.json.tmp", "sae.safetensors.tmp", "state.bin.tmp" };
    char p[4096];
    size_t i;
    if (!lsae__is_dir(dir)) return LSAE_OK;
    for (i = 0; i < sizeof names / sizeof names[0]; ++i)
        if (lsae__path_join(p, sizeof p, dir, names[i])) lsae__remove(p);
    if (lsae__rmdir(dir) != 0)
        return lsae__err(LSAE_IO_ERROR, "%s: cannot remove it (%s); it holds files a checkpoint does not write, so it was left alone", dir, strerror(errno));
    return LSAE_OK;
}

/* Check a checkpoint directory: state.bin whole, model files matching. Fills
   the header fields. Returns LSAE_OK, or why not. */
typedef struct lsae__ckpt_info {
    uint64_t d, L, k, step, blob_len, payload;
    int b_dec_init;
} lsae__ckpt_info;

static lsae_result lsae__ckpt_check(const char *dir, lsae__ckpt_info *info, int hash);
static lsae_result lsae__ckpt_verify(const char *dir, lsae__ckpt_info *info)
{
    return lsae__ckpt_check(dir, info, 1);
}

/* state.bin's header and length checked against each other (hash 0: only
   that, for a directory the caller verified: see
   lsae_checkpoint_load_shard_verified), then (hash 1) the hashes of
   state.bin, cfg.json and sae.safetensors, reading each in full */
static lsae_result lsae__ckpt_check(const char *dir, lsae__ckpt_info *info, int hash)
{
    char p[4096];
    unsigned char hdr[LSAE__STATE_HDR], buf[1 << 16], tr[8];
    FILE *f;
    uint64_t size, h_cfg, h_st, want, left;
    lsae__hash h;
    lsae_result r;
    if (!lsae__path_join(p, sizeof p, dir, "state.bin")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    if ((r = lsae__open_read(p, &f)) != LSAE_OK) return r;
    if (!lsae__file_size(f, &size) || size < LSAE__STATE_HDR + 8 || fread(hdr, 1, LSAE__STATE_HDR, f) != LSAE__STATE_HDR) {
        fclose(f);
        return lsae__err(LSAE_BAD_FILE, "%s: too short for a latentsae state file (%u-byte header and 8-byte trailer)", p, LSAE__STATE_HDR);
    }
    if (memcmp(hdr, "LSAESTAT", 8) != 0) { fclose(f); return lsae__err(LSAE_BAD_FILE, "%s: no LSAESTAT magic at byte 0: not a latentsae state file", p); }
    if (lsae__get_le(hdr + 8, 4) != LSAE__STATE_VERSION) {
        fclose(f);
        return lsae__err(LSAE_UNSUPPORTED, "%s: state format version %u; this library reads version %u", p, (unsigned)lsae__get_le(hdr + 8, 4), LSAE__STATE_VERSION);
    }
    if (lsae__get_le(hdr + 12, 4) != LSAE__STATE_HDR) { fclose(f); return lsae__err(LSAE_BAD_FILE, "%s: header size %u, expected %u", p, (unsigned)lsae__get_le(hdr + 12, 4), LSAE__STATE_HDR); }
    info->d = lsae__get_le(hdr + 16, 8);
    info->L = lsae__get_le(hdr + 24, 8);
    info->k = lsae__get_le(hdr + 32, 8);
    info->step = lsae__get_le(hdr + 40, 8);
    info->b_dec_init = (int)lsae__get_le(hdr + 48, 4);
    info->blob_len = lsae__get_le(hdr + 56, 8);
    h_cfg = lsae__get_le(hdr + 64, 8);
    h_st = lsae__get_le(hdr + 72, 8);
    info->payload = lsae__get_le(hdr + 80, 8);
    if (info->payload != size - LSAE__STATE_HDR - 8) {
        fclose(f);
        return lsae__err(LSAE_BAD_FILE, "%s: header says %llu payload bytes, the file holds %llu: truncated?", p, (unsigned long long)info->payload,
                         (unsigned long long)(size - LSAE__STATE_HDR - 8));
    }
    /* payload = 8 L + 4 (2 (2 L d + L + d)) + blob, checked without overflow */
    if (info->d == 0 || info->L == 0 || info->d > INT32_MAX || info->L > INT32_MAX || info->blob_len > LSAE__MAX_BYTES || info->L * info->d > ((uint64_t)1 << 56) ||
        (want = 8 * info->L + 8 * (2 * info->L * info->d + info->L + info->d) + info->blob_len) != info->payload) {
        fclose(f);
        return lsae__err(LSAE_BAD_FILE, "%s: payload of %llu bytes does not match d_in %llu, L %llu and a %llu-byte blob", p, (unsigned long long)info->payload,
                         (unsigned long long)info->d, (unsigned long long)info->L, (unsigned long long)info->blob_len);
    }
    if (!hash) { fclose(f); return LSAE_OK; }
    lsae__hash_init(&h);
    lsae__hash_update(&h, hdr, LSAE__STATE_HDR);
    for (left = info->payload; left;) {
        size_t n = left < sizeof buf ? (size_t)left : sizeof buf;
        if (fread(buf, 1, n, f) != n) { fclose(f); return lsae__err(LSAE_IO_ERROR, "%s: read failed", p); }
        lsae__hash_update(&h, buf, n);
        left -= n;
    }
    if (fread(tr, 1, 8, f) != 8) { fclose(f); return lsae__err(LSAE_IO_ERROR, "%s: read failed", p); }
    fclose(f);
    if (lsae__get_le(tr, 8) != lsae__hash_final(&h)) return lsae__err(LSAE_BAD_FILE, "%s: checksum mismatch: the file is corrupted or was cut short", p);
    {
        uint64_t hc, hs;
        if (!lsae__path_join(p, sizeof p, dir, "cfg.json")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
        if ((r = lsae__hash_file(p, &hc, NULL)) != LSAE_OK) return r;
        if (hc != h_cfg) return lsae__err(LSAE_BAD_FILE, "%s: does not match the checkpoint's state.bin (written by another save?)", p);
        if (!lsae__path_join(p, sizeof p, dir, "sae.safetensors")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
        if ((r = lsae__hash_file(p, &hs, NULL)) != LSAE_OK) return r;
        if (hs != h_st) return lsae__err(LSAE_BAD_FILE, "%s: does not match the checkpoint's state.bin (written by another save?)", p);
    }
    return LSAE_OK;
}

static int lsae__sibling(char *buf, size_t cap, const char *dir, const char *suffix)
{
    size_t n = strlen(dir);
    int w;
    while (n > 1 && (dir[n - 1] == '/' || dir[n - 1] == '\\')) --n;
    w = snprintf(buf, cap, "%.*s%s", (int)n, dir, suffix);
    return w >= 0 && (size_t)w < cap;
}

/* Put the newest whole checkpoint back at dir after an interrupted swap. */
static lsae_result lsae__ckpt_recover(const char *dir, const char *tmp, const char *old)
{
    lsae__ckpt_info info;
    lsae_result r;
    if (lsae__is_dir(dir)) return LSAE_OK;
    if (lsae__is_dir(tmp) && lsae__ckpt_verify(tmp, &info) == LSAE_OK) {
        if (lsae__rename(tmp, dir) != 0) return lsae__err(LSAE_IO_ERROR, "%s: cannot rename %s into place: %s", dir, tmp, strerror(errno));
    } else if (lsae__is_dir(old)) {
        if (lsae__rename(old, dir) != 0) return lsae__err(LSAE_IO_ERROR, "%s: cannot rename %s into place: %s", dir, old, strerror(errno));
    }
    if ((r = lsae__ckpt_rmdir(old)) != LSAE_OK) return r;
    return LSAE_OK;
}

/* What a save writes: the model's shape and config (num_latents
   resolved), the state header's fields, where the arrays come from, and the
   blob. copy_state: lsae_checkpoint_save, whose trainer's state (t; NULL:
   zero moments) is copied out into whole arrays once the model files are
   written. */
typedef struct lsae__ckpt_job {
    const lsae_config *cfg;
    size_t d, L, k;
    uint64_t step;
    int b_dec_init;
    lsae__src *src;
    const void *blob;
    size_t blob_len;
    int copy_state;
    const lsae_trainer *t;
    const lsae_allocator *alloc;
    size_t lay_total;                         /* copy_state: the layout of the model's weights */
    const size_t *lay_offset;
} lsae__ckpt_job;

/* A CUDA trainer keeps its state on the GPU: the checkpoint calls copy it
   through host scratch rather than reading and writing its arrays in place. */
static int lsae__trainer_on_gpu(const lsae_trainer *t)
{
#ifdef LATENTSAE_CUDA
    return t->cuda != NULL;
#else
    (void)t;
    return 0;
#endif
}

/* Write a whole checkpoint into the new, empty directory tmp, every file
   flushed to disk. */
static lsae_result lsae__ckpt_write(const char *tmp, lsae__ckpt_job *job)
{
    char p[4096];
    lsae__ckpt_writer w;
    lsae__hash h;
    unsigned char hdr[LSAE__STATE_HDR], tr[8];
    uint64_t h_cfg, h_st, payload;
    lsae_result r = LSAE_OK;
    size_t L = job->L, d = job->d, i, count[LSAE__NUM_TENSORS];
    lsae__src *src = job->src;
    uint64_t *since = NULL;
    float *mv = NULL;
    if ((r = lsae__model_write(tmp, job->cfg, d, L, job->k, src)) != LSAE_OK) return r;
    if (!lsae__path_join(p, sizeof p, tmp, "cfg.json") || (r = lsae__hash_file(p, &h_cfg, NULL)) != LSAE_OK) return r;
    if (!lsae__path_join(p, sizeof p, tmp, "sae.safetensors") || (r = lsae__hash_file(p, &h_st, NULL)) != LSAE_OK) return r;
    payload = 8 * (uint64_t)L + 8 * (2 * (uint64_t)L * d + L + d) + job->blob_len;
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, "LSAESTAT", 8);
    lsae__put_le(hdr + 8, LSAE__STATE_VERSION, 4);
    lsae__put_le(hdr + 12, LSAE__STATE_HDR, 4);
    lsae__put_le(hdr + 16, d, 8);
    lsae__put_le(hdr + 24, L, 8);
    lsae__put_le(hdr + 32, job->k, 8);
    lsae__put_le(hdr + 40, job->step, 8);
    lsae__put_le(hdr + 48, (uint64_t)(job->b_dec_init != 0), 4);
    lsae__put_le(hdr + 56, job->blob_len, 8);
    lsae__put_le(hdr + 64, h_cfg, 8);
    lsae__put_le(hdr + 72, h_st, 8);
    lsae__put_le(hdr + 80, payload, 8);
    if (!lsae__path_join(p, sizeof p, tmp, "state.bin")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", tmp);
    if (job->copy_state && job->t && !lsae__trainer_on_gpu(job->t)) {
        /* a CPU trainer's own arrays, written as they lie (its moments are
           laid out like the weights): a copy of them (4 L d floats) made
           a save peak at 1.4x the training's memory */
        const lsae_trainer *t = job->t;
        src->whole[LSAE_PIECE_SINCE_FIRED] = t->since_fired;
        for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
            src->whole[LSAE_PIECE_M_W_ENC + i] = t->adam_m + job->lay_offset[i];
            src->whole[LSAE_PIECE_V_W_ENC + i] = t->adam_v + job->lay_offset[i];
        }
    } else if (job->copy_state) {
        /* a GPU trainer's state (or none: zero moments) through the public
           accessor, in slabs laid out like the weights */
        lsae_trainer_state st;
        float *dst_m[LSAE__NUM_TENSORS];
        since = (uint64_t *)lsae__alloc_array(job->alloc, L, sizeof(uint64_t), "checkpoint counters");
        mv = (float *)lsae__alloc_array(job->alloc, job->lay_total, 2 * sizeof(float), "checkpoint Adam moments");
        if (!since || !mv) { lsae__free(job->alloc, since); lsae__free(job->alloc, mv); return LSAE_OUT_OF_MEMORY; }
        memset(since, 0, L * sizeof(uint64_t));
        memset(mv, 0, job->lay_total * 2 * sizeof(float));
        memset(&st, 0, sizeof st);
        for (i = 0; i < LSAE__NUM_TENSORS; ++i) dst_m[i] = mv + job->lay_offset[i];
        st.since_fired = since;
        st.m_W_enc = dst_m[0]; st.m_b_enc = dst_m[1]; st.m_W_dec = dst_m[2]; st.m_b_dec = dst_m[3];
        st.v_W_enc = dst_m[0] + job->lay_total; st.v_b_enc = dst_m[1] + job->lay_total;
        st.v_W_dec = dst_m[2] + job->lay_total; st.v_b_dec = dst_m[3] + job->lay_total;
        if (job->t && (r = lsae_trainer_get_state(job->t, &st)) != LSAE_OK) { lsae__free(job->alloc, since); lsae__free(job->alloc, mv); return r; }
        src->whole[LSAE_PIECE_SINCE_FIRED] = since;
        for (i = 0; i < LSAE__NUM_TENSORS; ++i) {
            src->whole[LSAE_PIECE_M_W_ENC + i] = dst_m[i];
            src->whole[LSAE_PIECE_V_W_ENC + i] = dst_m[i] + job->lay_total;
        }
    }
    if ((r = lsae__afile_open(&w.af, p)) != LSAE_OK) { lsae__free(job->alloc, since); lsae__free(job->alloc, mv); return r; }
    lsae__hash_init(&h);
    w.h = &h;
    lsae__cw_write(&w, hdr, sizeof hdr);
    /* counters [L], Adam m of W_enc [L, d], b_enc [L], W_dec [L, d], b_dec [d], then v of the same */
    count[LSAE__W_ENC] = count[LSAE__W_DEC] = d;
    count[LSAE__B_ENC] = 1;
    r = lsae__src_emit(src, &w, LSAE_PIECE_SINCE_FIRED, L, 1);
    for (i = 0; r == LSAE_OK && i < 2 * LSAE__NUM_TENSORS; ++i) {
        size_t q = i % LSAE__NUM_TENSORS;
        r = q == LSAE__B_DEC ? lsae__src_emit(src, &w, LSAE_PIECE_M_W_ENC + (int)i, d, 1) : lsae__src_emit(src, &w, LSAE_PIECE_M_W_ENC + (int)i, L, count[q]);
    }
    lsae__free(job->alloc, since);
    lsae__free(job->alloc, mv);
    if (r != LSAE_OK) { lsae__afile_abort(&w.af); return r; }
    if (job->blob_len) lsae__cw_write(&w, job->blob, job->blob_len);
    lsae__put_le(tr, lsae__hash_final(&h), 8);
    lsae__afile_write(&w.af, tr, 8);
    if ((r = lsae__afile_commit(&w.af)) != LSAE_OK) return r;
    lsae__fsync_dir(tmp);
    return LSAE_OK;
}

static lsae_result lsae__checkpoint_save(const char *dir, lsae__ckpt_job *job);

/* The job of a whole model: its weights in place; with given, the state
   from the caller's whole arrays (no copy), else copied from t. */
static lsae_result lsae__checkpoint_save_model(const char *dir, const lsae_model *m, const lsae_trainer *t, const lsae_trainer_state *given,
                                               const void *blob, size_t blob_len)
{
    lsae__src src;
    lsae__ckpt_job job;
    if (!dir || !m) return lsae__err(LSAE_INVALID_ARGS, "lsae_checkpoint_save: dir and model must not be NULL");
    LSAE__REFUSE_SHARD(m, "lsae_checkpoint_save");
    if (blob_len && !blob) return lsae__err(LSAE_INVALID_ARGS, "lsae_checkpoint_save: blob is NULL but blob_len is %zu", blob_len);
    if (t && t->m != m) return lsae__err(LSAE_INVALID_ARGS, "lsae_checkpoint_save: the trainer belongs to another model");
    /* the trainer's internals are read here, never changed: a window in the
       middle of accumulation, or a poisoned trainer, cannot make a checkpoint */
    if (t && t->micro) return lsae__err(LSAE_INVALID_ARGS, "lsae_checkpoint_save: %llu batches accumulated but not applied; save between optimizer steps", (unsigned long long)t->micro);
    if (t && t->poisoned) return lsae__err(LSAE_NOT_FINITE, "lsae_checkpoint_save: the trainer saw a non-finite value; keep the last good checkpoint");
#ifdef LATENTSAE_CUDA
    {
        /* lsae_model_save downloaded the weights before this was split out */
        lsae_result r;
        if (m->cuda && (r = lsae__cuda_model_download(m->cuda, m->params)) != LSAE_OK) return r;
    }
#endif
    lsae__src_of_model(&src, m);
    memset(&job, 0, sizeof job);
    job.cfg = &m->cfg;
    job.d = m->d;
    job.L = m->L;
    job.k = m->k;
    job.step = given ? given->step : t ? t->step : 0;
    job.b_dec_init = given ? given->b_dec_initialized != 0 : t ? t->b_dec_initialized != 0 : 1;
    job.src = &src;
    job.blob = blob;
    job.blob_len = blob_len;
    if (given) {
        src.whole[LSAE_PIECE_SINCE_FIRED] = given->since_fired;
        src.whole[LSAE_PIECE_M_W_ENC] = given->m_W_enc; src.whole[LSAE_PIECE_M_B_ENC] = given->m_b_enc;
        src.whole[LSAE_PIECE_M_W_DEC] = given->m_W_dec; src.whole[LSAE_PIECE_M_B_DEC] = given->m_b_dec;
        src.whole[LSAE_PIECE_V_W_ENC] = given->v_W_enc; src.whole[LSAE_PIECE_V_B_ENC] = given->v_b_enc;
        src.whole[LSAE_PIECE_V_W_DEC] = given->v_W_dec; src.whole[LSAE_PIECE_V_B_DEC] = given->v_b_dec;
    } else {
        job.copy_state = 1;
        job.t = t;
        job.alloc = m->alloc;
        job.lay_total = m->lay.total;
        job.lay_offset = m->lay.offset;
    }
    return lsae__checkpoint_save(dir, &job);
}

LSAE_DEF lsae_result lsae_checkpoint_save(const char *dir, const lsae_model *m, const lsae_trainer *t, const void *blob, size_t blob_len)
{
    return lsae__checkpoint_save_model(dir, m, t, NULL, blob, blob_len);
}

LSAE_DEF lsae_result lsae_checkpoint_save_state(const char *dir, const lsae_model *m, const lsae_trainer_state *st, const void *blob, size_t blob_len)
{
    if (!st || !st->since_fired || !st->m_W_enc || !st->m_b_enc || !st->m_W_dec || !st->m_b_dec || !st->v_W_enc || !st->v_b_enc || !st->v_W_dec || !st->v_b_dec)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_checkpoint_save_state: the state and every array in it must be given");
    return lsae__checkpoint_save_model(dir, m, NULL, st, blob, blob_len);
}

LSAE_DEF lsae_result lsae_checkpoint_save_pieces(const char *dir, const lsae_config *cfg, uint64_t step, int b_dec_initialized,
                                                 const size_t *bounds, size_t nbounds, lsae_piece_fn fetch, void *ctx,
                                                 const void *blob, size_t blob_len)
{
    lsae_config rc;
    lsae__src src;
    lsae__ckpt_job job;
    lsae_result r;
    if (!dir) return lsae__err(LSAE_INVALID_ARGS, "lsae_checkpoint_save_pieces: dir must not be NULL");
    if (blob_len && !blob) return lsae__err(LSAE_INVALID_ARGS, "lsae_checkpoint_save_pieces: blob is NULL but blob_len is %zu", blob_len);
    if ((r = lsae__pieces_begin("lsae_checkpoint_save_pieces", cfg, bounds, nbounds, fetch, ctx, &rc, &src)) != LSAE_OK) return r;
    memset(&job, 0, sizeof job);
    job.cfg = &rc;
    job.d = rc.d_in;
    job.L = rc.num_latents;
    job.k = rc.k;
    job.step = step;
    job.b_dec_init = b_dec_initialized != 0;
    job.src = &src;
    job.blob = blob;
    job.blob_len = blob_len;
    r = lsae__checkpoint_save(dir, &job);
    lsae__free(NULL, src.buf);
    return r;
}

static lsae_result lsae__checkpoint_save(const char *dir, lsae__ckpt_job *job)
{
    char tmp[4096], old[4096], parent[4096];
    lsae_result r;
    if (!lsae__sibling(tmp, sizeof tmp, dir, ".tmp") || !lsae__sibling(old, sizeof old, dir, ".old") || !lsae__sibling(parent, sizeof parent, dir, "/.."))
        return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    if ((r = lsae__ckpt_recover(dir, tmp, old)) != LSAE_OK) return r;
    if ((r = lsae__ckpt_rmdir(tmp)) != LSAE_OK) return r;
    if ((r = lsae__ckpt_rmdir(old)) != LSAE_OK) return r;
    if ((r = lsae__mkdirs(tmp)) != LSAE_OK) return r;
    if ((r = lsae__ckpt_write(tmp, job)) != LSAE_OK) {
        /* Nothing was swapped: the previous checkpoint is whole at dir. The
           partial one goes, so that a full disk gets its space back. */
        static const char file_note[] = "; the previous file, if any, is untouched";
        char msg[sizeof lsae__err_msg];
        size_t n;
        memcpy(msg, lsae__err_msg, sizeof msg);
        msg[sizeof msg - 1] = 0;
        n = strlen(msg);
        if (n >= sizeof file_note - 1 && strcmp(msg + n - (sizeof file_note - 1), file_note) == 0) msg[n - (sizeof file_note - 1)] = 0;
        (void)lsae__ckpt_rmdir(tmp);
        return lsae__err(r, "%s: not saved, the previous checkpoint (if any) is untouched: %s", dir, msg);
    }
    /* the swap: from here on a whole checkpoint is always at dir, dir.tmp or dir.old */
    if (lsae__is_dir(dir) && lsae__rename(dir, old) != 0) return lsae__err(LSAE_IO_ERROR, "%s: cannot move the previous checkpoint to %s: %s", dir, old, strerror(errno));
    if (lsae__rename(tmp, dir) != 0) return lsae__err(LSAE_IO_ERROR, "%s: cannot rename %s into place: %s (the new checkpoint is whole at %s)", dir, tmp, strerror(errno), tmp);
    lsae__fsync_dir(parent);
    return lsae__ckpt_rmdir(old);
}

/* Read state.bin's payload into the trainer (NULL: only check it) and the
   blob: for a shard model (lsae_model_create_shard) only its latents'
   rows [l0, l0 + L_r) of the counters and of the moments of W_enc, b_enc
   and W_dec, and b_dec's moments whole. Each array of the payload is laid
   out by latent, so a shard's rows are one contiguous run in each: a seek
   and a read per array, and the scratch copies are the shard's size (a
   full model is the shard [0, L), read front to back). The offsets are
   file positions (uint64): lsae__ckpt_verify checked that the payload's
   length is 8 L + 8 (2 L d + L + d) + blob with L d < 2^56, so none of
   them can wrap. A CPU trainer whose moments and counters are still all
   zero (state_zero: just created, the resume of a run) gets the moments
   read straight into its own arrays, with no scratch copy of them (4 L d
   floats: that copy made a resume peak at 1.55x the training's memory),
   and zeroed again when anything fails, so that a failure still leaves
   it as it was. */
static lsae_result lsae__ckpt_read_state(const char *dir, const lsae__ckpt_info *info, lsae_model *m, lsae_trainer *t, void *blob, size_t blob_cap)
{
    char p[4096];
    FILE *f;
    lsae_result r;
    size_t L = m->L, i;
    const uint64_t l0 = m->shard_l0, Lf = info->L, d = info->d;
    /* in floats: where each tensor starts in one moment section (m, then
       v), and the section's length */
    const uint64_t sec_at[LSAE__NUM_TENSORS] = { 0, Lf * d, Lf * d + Lf, 2 * Lf * d + Lf }, sec = 2 * Lf * d + Lf + d;
    const uint64_t moments = LSAE__STATE_HDR + 8 * Lf;
    uint64_t *since;
    float *mv = NULL, *mv_m, *mv_v;
    lsae_trainer_state st;
    const int in_place = t && t->state_zero && !lsae__trainer_on_gpu(t);
    if (l0 > Lf || L > Lf - l0) return lsae__err(LSAE_INVALID_ARGS, "checkpoint state: latents [%zu, %zu) asked of %llu", m->shard_l0, m->shard_l0 + L, (unsigned long long)Lf);
    if (!lsae__path_join(p, sizeof p, dir, "state.bin")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    if ((r = lsae__open_read(p, &f)) != LSAE_OK) return r;
    since = (uint64_t *)lsae__alloc_array(m->alloc, L, sizeof(uint64_t), "checkpoint counters");
    if (since && !in_place) {
        mv = (float *)lsae__alloc_array(m->alloc, m->lay.total, 2 * sizeof(float), "checkpoint Adam moments");
        if (mv) memset(mv, 0, m->lay.total * 2 * sizeof(float));
    }
    if (!since || (!in_place && !mv)) { fclose(f); lsae__free(m->alloc, since); return LSAE_OUT_OF_MEMORY; }
    mv_m = in_place ? t->adam_m : mv;
    mv_v = in_place ? t->adam_v : mv + m->lay.total;
    r = LSAE_OK;
    if (!lsae__seek(f, LSAE__STATE_HDR + 8 * l0) || fread(since, 8, L, f) != L) r = lsae__err(LSAE_IO_ERROR, "%s: read failed", p);
    if (!lsae__little_endian())
        for (i = 0; i < L; ++i) since[i] = lsae__get_le((const unsigned char *)&since[i], 8);
    for (i = 0; r == LSAE_OK && i < 2 * LSAE__NUM_TENSORS; ++i) {
        const size_t q = i % LSAE__NUM_TENSORS, n = m->lay.count[q];
        float *dst = (i >= LSAE__NUM_TENSORS ? mv_v : mv_m) + m->lay.offset[q];
        /* the shard's first row of this tensor (b_dec: all of it) */
        const uint64_t row0 = q == LSAE__B_DEC ? 0 : q == LSAE__B_ENC ? l0 : l0 * d;
        size_t j;
        if (!lsae__seek(f, moments + 4 * ((i >= LSAE__NUM_TENSORS ? sec : 0) + sec_at[q] + row0)) || fread(dst, 4, n, f) != n)
            r = lsae__err(LSAE_IO_ERROR, "%s: read failed", p);
        if (!lsae__little_endian())
            for (j = 0; j < n; ++j) { uint32_t u = (uint32_t)lsae__get_le((const unsigned char *)&dst[j], 4); memcpy(&dst[j], &u, 4); }
    }
    if (r == LSAE_OK && blob && blob_cap) {
        size_t n = info->blob_len < blob_cap ? (size_t)info->blob_len : blob_cap;
        if (n && (!lsae__seek(f, moments + 8 * sec) || fread(blob, 1, n, f) != n)) r = lsae__err(LSAE_IO_ERROR, "%s: read failed", p);
    }
    fclose(f);
    if (r == LSAE_OK && t) {
        memset(&st, 0, sizeof st);
        st.step = info->step;
        st.b_dec_initialized = info->b_dec_init;
        st.since_fired = since;
        st.m_W_enc = mv_m + m->lay.offset[0]; st.m_b_enc = mv_m + m->lay.offset[1];
        st.m_W_dec = mv_m + m->lay.offset[2]; st.m_b_dec = mv_m + m->lay.offset[3];
        st.v_W_enc = mv_v + m->lay.offset[0]; st.v_b_enc = mv_v + m->lay.offset[1];
        st.v_W_dec = mv_v + m->lay.offset[2]; st.v_b_dec = mv_v + m->lay.offset[3];
        /* in place, set_state checks the moments where they lie and
           copies nothing (the arrays are its own) */
        r = lsae_trainer_set_state(t, &st);
        if (r != LSAE_OK) r = lsae__err_prefix(r, "checkpoint state: ");
    }
    if (r != LSAE_OK && in_place) {
        /* as created: all zero again */
        memset(t->adam_m, 0, m->lay.total * sizeof(float));
        memset(t->adam_v, 0, m->lay.total * sizeof(float));
    }
    lsae__free(m->alloc, since);
    lsae__free(m->alloc, mv);
    return r;
}

/* lsae_checkpoint_load and lsae_checkpoint_load_shard: the model's latents
   (all of a full model's, a shard's own) from the checkpoint at dir (or the
   newest whole one beside it); fn names the caller in messages. */
/* The checkpoint at dir, or when a save was cut between its two renames
   the newest whole one beside it (dir.tmp, else dir.old), verified against
   its hashes: its directory into found (cap bytes), its header into info. */
static lsae_result lsae__ckpt_find(const char *dir, char *found, size_t cap, lsae__ckpt_info *info)
{
    char tmp[4096], old[4096];
    const char *cands[3];
    lsae_result r = LSAE_NOT_FOUND, first_err = LSAE_OK;
    char first_msg[1024];
    size_t c, nc = 0;
    if (!lsae__sibling(tmp, sizeof tmp, dir, ".tmp") || !lsae__sibling(old, sizeof old, dir, ".old")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    /* dir is whole whenever it exists; when it does not, a save was cut
       between its two renames and the newest whole one is dir.tmp, else dir.old */
    if (lsae__is_dir(dir)) cands[nc++] = dir;
    else { cands[nc++] = tmp; cands[nc++] = old; }
    first_msg[0] = 0;
    for (c = 0; c < nc; ++c) {
        if (!lsae__is_dir(cands[c])) continue;
        if ((r = lsae__ckpt_verify(cands[c], info)) != LSAE_OK) {
            if (first_err == LSAE_OK) { first_err = r; memcpy(first_msg, lsae__err_msg, sizeof first_msg); first_msg[sizeof first_msg - 1] = 0; }
            continue;
        }
        break;
    }
    if (c == nc) {
        if (first_err != LSAE_OK) return lsae__err(first_err, "%s", first_msg);
        return lsae__err(LSAE_NOT_FOUND, "%s: no checkpoint here (nor at %s or %s)", dir, tmp, old);
    }
    if (strlen(cands[c]) >= cap) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", cands[c]);
    strcpy(found, cands[c]);
    return LSAE_OK;
}

/* lsae_checkpoint_load and lsae_checkpoint_load_shard(_verified): the
   model's latents (all of a full model's, a shard's own) from the checkpoint
   at dir (or the newest whole one beside it); fn names the caller in
   messages. verified: dir is the directory lsae_checkpoint_verify found, and
   only state.bin's header and length are checked, not the hashes. */
static lsae_result lsae__checkpoint_load(const char *fn, const char *dir, int verified, lsae_model *m, lsae_trainer *t, void *blob, size_t blob_cap,
                                         size_t *blob_len)
{
    char found[4096], p[4096];
    lsae__ckpt_info info;
    lsae_result r;
    size_t Lf;
    float *w = NULL, theta = 0.0f;
    if (blob_len) *blob_len = 0;
    if (!dir || !m) return lsae__err(LSAE_INVALID_ARGS, "%s: dir and model must not be NULL", fn);
    if (t && t->m != m) return lsae__err(LSAE_INVALID_ARGS, "%s: the trainer belongs to another model", fn);
    Lf = m->shard_L ? m->shard_L : m->L;
    if (verified) {
        if (!lsae__is_dir(dir)) return lsae__err(LSAE_NOT_FOUND, "%s: no checkpoint here (%s takes the directory lsae_checkpoint_verify found)", dir, fn);
        if ((r = lsae__ckpt_check(dir, &info, 0)) != LSAE_OK) return r;
    } else {
        if ((r = lsae__ckpt_find(dir, found, sizeof found, &info)) != LSAE_OK) return r;
        dir = found;
    }
    if (info.d != m->d || info.L != Lf || info.k != m->k) {
        if (m->shard_L)
            return lsae__err(LSAE_INVALID_ARGS, "%s: checkpoint of d_in %llu, L %llu, k %llu, but the model is d_in %zu, k %zu, holding latents [%zu, %zu) of L %zu", dir,
                             (unsigned long long)info.d, (unsigned long long)info.L, (unsigned long long)info.k, m->d, m->k, m->shard_l0, m->shard_l0 + m->L, Lf);
        return lsae__err(LSAE_INVALID_ARGS, "%s: checkpoint of d_in %llu, L %llu, k %llu, but the model is d_in %zu, L %zu, k %zu", dir,
                         (unsigned long long)info.d, (unsigned long long)info.L, (unsigned long long)info.k, m->d, m->L, m->k);
    }
    if (t && t->micro) return lsae__err(LSAE_INVALID_ARGS, "%s: the trainer has accumulated batches; load into a trainer between optimizer steps", fn);
    /* weights into a scratch copy first, so a failure leaves the model as it
       was. A CPU trainer's gradient array, the model's size, holds
       nothing between optimizer steps (its weight rows are stale until a
       window's first touch zeroes them, lsae__grad_row; Adam zeroes the
       biases') and serves as that copy, zeroed after: no allocation of the
       model's size */
    {
        const int in_grads = t != NULL && t->grads != NULL && !lsae__trainer_on_gpu(t);
        lsae_model tmpm = *m;
        w = in_grads ? t->grads : (float *)lsae__alloc_array(m->alloc, m->lay.total, sizeof(float), "checkpoint weights");
        if (!w) return LSAE_OUT_OF_MEMORY;
        tmpm.params = w;
        if (!lsae__path_join(p, sizeof p, dir, "sae.safetensors")) r = lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
        else r = lsae__load_weights(&tmpm, p, 0);
        theta = tmpm.batchtopk_threshold; /* BatchTopK's theta: resume continues its EMA */
        if (r == LSAE_OK) r = lsae__ckpt_read_state(dir, &info, m, t, blob, blob_cap);
        /* through set_weights, so a model on a GPU gets them too */
        if (r == LSAE_OK)
            r = lsae_model_set_weights(m, w + m->lay.offset[LSAE__W_ENC], w + m->lay.offset[LSAE__B_ENC],
                                       w + m->lay.offset[LSAE__W_DEC], w + m->lay.offset[LSAE__B_DEC]);
        if (in_grads) memset(t->grads, 0, m->lay.total * sizeof(float));
        else lsae__free(m->alloc, w);
    }
    if (r != LSAE_OK) return r;
    m->batchtopk_threshold = theta;
    if (blob_len) *blob_len = (size_t)info.blob_len;
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_checkpoint_load(const char *dir, lsae_model *m, lsae_trainer *t, void *blob, size_t blob_cap, size_t *blob_len)
{
    if (blob_len) *blob_len = 0;
    /* a shard holds some of the checkpoint's latents: not "the same shape" */
    if (m && m->shard_L)
        return lsae__err(LSAE_INVALID_ARGS, "lsae_checkpoint_load: the model holds latents [%zu, %zu) of %zu (a latent shard); load its rows with lsae_checkpoint_load_shard",
                         m->shard_l0, m->shard_l0 + m->L, m->shard_L);
    return lsae__checkpoint_load("lsae_checkpoint_load", dir, 0, m, t, blob, blob_cap, blob_len);
}

LSAE_DEF lsae_result lsae_checkpoint_load_shard(const char *dir, lsae_model *m, lsae_trainer *t, void *blob, size_t blob_cap, size_t *blob_len)
{
    return lsae__checkpoint_load("lsae_checkpoint_load_shard", dir, 0, m, t, blob, blob_cap, blob_len);
}

LSAE_DEF lsae_result lsae_checkpoint_verify(const char *dir, char *found, size_t cap)
{
    lsae__ckpt_info info;
    if (!dir || !found || !cap) return lsae__err(LSAE_INVALID_ARGS, "lsae_checkpoint_verify: dir and found must not be NULL, cap not 0");
    found[0] = 0;
    return lsae__ckpt_find(dir, found, cap, &info);
}

LSAE_DEF lsae_result lsae_checkpoint_load_shard_verified(const char *found, lsae_model *m, lsae_trainer *t, void *blob, size_t blob_cap, size_t *blob_len)
{
    return lsae__checkpoint_load("lsae_checkpoint_load_shard_verified", found, 1, m, t, blob, blob_cap, blob_len);
}

/* --------------------------------------------------- Hugging Face cache */
#ifndef LSAE_NO_HF

/* huggingface_hub's cache layout (file_download.py), read offline:
     HUB/models--OWNER--NAME/refs/main          the commit hash main points at
     HUB/models--OWNER--NAME/snapshots/HASH/... the files (links into blobs/)
   HUB is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (the older name), else
   $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
   ~/.cache/huggingface/hub (%USERPROFILE% on Windows). A repo may be written
   OWNER/NAME@REV to pick a branch or tag under refs/, or a commit hash. */

static lsae_result lsae__hf_hub_dir(char *buf, size_t cap)
{
    const char *v;
    int w;
    if ((v = getenv("HF_HUB_CACHE")) != NULL && *v) w = snprintf(buf, cap, "%s", v);
    else if ((v = getenv("HUGGINGFACE_HUB_CACHE")) != NULL && *v) w = snprintf(buf, cap, "%s", v);
    else if ((v = getenv("HF_HOME")) != NULL && *v) w = snprintf(buf, cap, "%s/hub", v);
    else if ((v = getenv("XDG_CACHE_HOME")) != NULL && *v) w = snprintf(buf, cap, "%s/huggingface/hub", v);
    else if ((v = getenv("HOME")) != NULL && *v) w = snprintf(buf, cap, "%s/.cache/huggingface/hub", v);
    else if ((v = getenv("USERPROFILE")) != NULL && *v) w = snprintf(buf, cap, "%s/.cache/huggingface/hub", v);
    else return lsae__err(LSAE_NOT_FOUND, "no Hugging Face cache: none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, HOME is set");
    if (w < 0 || (size_t)w >= cap) return lsae__err(LSAE_INVALID_ARGS, "Hugging Face cache path too long");
    return LSAE_OK;
}

static int lsae__hf_name_ok(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || n > 96 || s[0] == '.' || (n >= 2 && s[0] == '-' && s[1] == '-')) return 0;
    for (i = 0; i < n; ++i) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.')) return 0;
        if (c == '.' && i + 1 < n && s[i + 1] == '.') return 0;
    }
    return 1;
}

static int lsae__hf_rev_ok(const char *s)
{
    size_t i, n = strlen(s);
    if (n == 0 || n > 200 || s[0] == '/' || strstr(s, "..")) return 0;
    for (i = 0; i < n; ++i) {
        if (s[i] == '\\' || (unsigned char)s[i] < 0x20) return 0;
        /* no empty or "." path component: "." would name snapshots/ itself */
        if ((i == 0 || s[i - 1] == '/') && (s[i] == '/' || (s[i] == '.' && (i + 1 == n || s[i + 1] == '/')))) return 0;
    }
    return s[n - 1] != '/';
}

static lsae_result lsae__hf_missing(const char *repo, const char *sub, const char *hub, const char *why)
{
    if (sub && *sub)
        return lsae__err(LSAE_NOT_FOUND, "%s (subfolder %s) is not in the Hugging Face cache at %s (%s); download it with:  huggingface-cli download %s --include '%s/*'",
                         repo, sub, hub, why, repo, sub);
    return lsae__err(LSAE_NOT_FOUND, "%s is not in the Hugging Face cache at %s (%s); download it with:  huggingface-cli download %s", repo, hub, why, repo);
}

/* lsae_hf_resolve with the allocator of the caller's model (the refs file
   and the snapshot listing are read into it); out of memory is reported as
   such, never mistaken for a missing file. */
static lsae_result lsae__hf_resolve(const char *repo_in, const char *subfolder, const lsae_allocator *alloc, char *path, size_t cap)
{
    char hub[4096], repo[256], rev[256], base[4096], p[4096], hash[256];
    const char *slash, *at;
    size_t n;
    lsae_result r;
    int w;
    if (!repo_in || !path || cap == 0) return lsae__err(LSAE_INVALID_ARGS, "lsae_hf_resolve: repo and path must not be NULL");
    path[0] = 0;
    at = strchr(repo_in, '@');
    n = at ? (size_t)(at - repo_in) : strlen(repo_in);
    if (n >= sizeof repo) return lsae__err(LSAE_INVALID_ARGS, "repo name too long: %s", repo_in);
    memcpy(repo, repo_in, n);
    repo[n] = 0;
    if (at) {
        if (strlen(at + 1) >= sizeof rev || !lsae__hf_rev_ok(at + 1)) return lsae__err(LSAE_INVALID_ARGS, "bad revision in '%s'", repo_in);
        memcpy(rev, at + 1, strlen(at + 1) + 1);
    } else {
        memcpy(rev, "main", 5);
    }
    slash = strchr(repo, '/');
    if (!slash || strchr(slash + 1, '/') || !lsae__hf_name_ok(repo, (size_t)(slash - repo)) || !lsae__hf_name_ok(slash + 1, strlen(slash + 1)))
        return lsae__err(LSAE_INVALID_ARGS, "'%s' is not a Hugging Face repo id (OWNER/NAME, e.g. enjalot/sae-nomic-text-v1.5-FineWeb-edu-100BT)", repo_in);
    if (subfolder && (subfolder[0] == '/' || strstr(subfolder, "..") || strchr(subfolder, '\\')))
        return lsae__err(LSAE_INVALID_ARGS, "subfolder '%s' must be a relative path inside the repo", subfolder);
    if ((r = lsae__hf_hub_dir(hub, sizeof hub)) != LSAE_OK) return r;
    w = snprintf(base, sizeof base, "%s/models--%.*s--%s", hub, (int)(slash - repo), repo, slash + 1);
    if (w < 0 || (size_t)w >= sizeof base) return lsae__err(LSAE_INVALID_ARGS, "path too long for %s", repo);
    if (!lsae__is_dir(base)) return lsae__hf_missing(repo_in, subfolder, hub, "no models--OWNER--NAME folder");
    /* the revision: refs/REV holds a commit hash; a hash is used as it is */
    w = snprintf(p, sizeof p, "%s/refs/%s", base, rev);
    if (w < 0 || (size_t)w >= sizeof p) return lsae__err(LSAE_INVALID_ARGS, "path too long for %s", repo);
    {
        char *text = NULL;
        size_t len = 0;
        if ((r = lsae__read_small_file(p, 1024, alloc, &text, &len)) == LSAE_OUT_OF_MEMORY) return r;
        if (r == LSAE_OK) {
            while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ')) --len;
            if (len == 0 || len >= sizeof hash) { lsae__free(alloc, text); return lsae__err(LSAE_BAD_FILE, "%s: not a commit hash", p); }
            memcpy(hash, text, len);
            hash[len] = 0;
            lsae__free(alloc, text);
            if (!lsae__hf_rev_ok(hash) || strchr(hash, '/')) return lsae__err(LSAE_BAD_FILE, "%s: not a commit hash", p);
        } else if (at) {
            memcpy(hash, rev, strlen(rev) + 1); /* OWNER/NAME@HASH */
        } else {
            /* no refs/main: if exactly one snapshot is there, that is the one */
            lsae__names snaps;
            w = snprintf(p, sizeof p, "%s/snapshots", base);
            if (w < 0 || (size_t)w >= sizeof p) return lsae__err(LSAE_INVALID_ARGS, "path too long for %s", repo);
            if ((r = lsae__list_dir(p, alloc, &snaps)) == LSAE_OUT_OF_MEMORY) return r;
            if (r != LSAE_OK || snaps.n == 0) {
                if (snaps.v) lsae__names_free(&snaps);
                return lsae__hf_missing(repo_in, subfolder, hub, "no refs/main and no snapshots");
            }
            if (snaps.n > 1) {
                r = lsae__err(LSAE_INVALID_ARGS, "%s: no refs/main and %zu snapshots (%s, %s, ...); pick one as %s@REVISION", base, snaps.n, snaps.v[0], snaps.v[1], repo);
                lsae__names_free(&snaps);
                return r;
            }
            memcpy(hash, snaps.v[0], strlen(snaps.v[0]) + 1 < sizeof hash ? strlen(snaps.v[0]) + 1 : sizeof hash);
            hash[sizeof hash - 1] = 0;
            lsae__names_free(&snaps);
        }
    }
    if (subfolder && *subfolder) w = snprintf(p, sizeof p, "%s/snapshots/%s/%s", base, hash, subfolder);
    else w = snprintf(p, sizeof p, "%s/snapshots/%s", base, hash);
    if (w < 0 || (size_t)w >= sizeof p) return lsae__err(LSAE_INVALID_ARGS, "path too long for %s", repo);
    if (!lsae__is_dir(p)) return lsae__hf_missing(repo_in, subfolder, hub, subfolder && *subfolder ? "the snapshot lacks that subfolder" : "the snapshot folder is missing");
    if ((size_t)w >= cap) return lsae__err(LSAE_INVALID_ARGS, "lsae_hf_resolve: the path needs %d bytes, path has %zu", w + 1, cap);
    memcpy(path, p, (size_t)w + 1);
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_hf_resolve(const char *repo, const char *subfolder, char *path, size_t cap)
{
    return lsae__hf_resolve(repo, subfolder, NULL, path, cap);
}

LSAE_DEF lsae_result lsae_model_load_hf(const char *repo, const char *subfolder, const lsae_allocator *alloc, lsae_model **out)
{
    char dir[4096], p[4096];
    lsae_result r;
    if (!out) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_load_hf: out is NULL");
    *out = NULL;
    if (!lsae__allocator_check(alloc)) return lsae__err(LSAE_INVALID_ARGS, "allocator given with a NULL malloc_fn or free_fn");
    if ((r = lsae__hf_resolve(repo, subfolder, alloc, dir, sizeof dir)) != LSAE_OK) return r;
    /* a snapshot holds links into blobs/; a missing blob (an interrupted download) reads as a missing file */
    if (!lsae__path_join(p, sizeof p, dir, "cfg.json") || !lsae__exists(p) ||
        !((lsae__path_join(p, sizeof p, dir, "sae.safetensors") && lsae__exists(p)) ||
          (lsae__path_join(p, sizeof p, dir, "sae_weights.safetensors") && lsae__exists(p)))) {
        char hub[4096];
        if (lsae__hf_hub_dir(hub, sizeof hub) != LSAE_OK) hub[0] = 0;
        return lsae__hf_missing(repo, subfolder, hub, "cfg.json or sae.safetensors missing from the snapshot: download interrupted?");
    }
    return lsae_model_load(dir, alloc, out);
}
#endif /* LSAE_NO_HF */

/* ----------------------------------------------------------------- SAELens */
#ifndef LSAE_NO_SAELENS

/* SAELens (decoderesearch/SAELens) keeps a model as
     cfg.json                 {"architecture": "topk", "d_in": d, "d_sae": L, "k": k,
                               "dtype": "float32", "apply_b_dec_to_input": true,
                               "normalize_activations": "none",
                               "rescale_acts_by_decoder_norm": false, "metadata": {...}, ...}
                              (before 6.0: "activation_fn_str": "topk",
                               "activation_fn_kwargs": {"k": k})
     sae_weights.safetensors  W_enc [d, L] (transposed from ours), b_enc [L],
                              W_dec [L, d], b_dec [d]
   and encodes topk(x_in @ W_enc + b_enc) then ReLU, with
   x_in = x - b_dec: the same activations and latents as latent-sae's
   ReLU-then-topk (they differ only in which zero latents fill a row that has
   fewer than k positive ones). rescale_acts_by_decoder_norm multiplies the
   pre-activations by the decoder row norms and divides them out again in the
   decoder; we fold it into the weights (W_enc and b_enc scaled by the norms,
   W_dec rows divided by them), which is SAELens's own fold_W_dec_norm and
   gives the same activations. What we cannot express is refused:
   apply_b_dec_to_input false, activation normalisation, a fine-tuning
   scaling factor, and architectures other than TopK. */

static lsae_result lsae__saelens_cfg(const char *text, size_t len, const lsae_allocator *alloc, size_t *d, size_t *L, size_t *k, int *rescale)
{
    lsae__json j;
    lsae_result r;
    size_t t, kw;
    uint64_t u;
    int b;
    char s[64];
    if ((r = lsae__json_parse(&j, text, len, alloc)) != LSAE_OK) return r;
#define LSAE__SL_FAIL(code, ...) do { r = lsae__err(code, __VA_ARGS__); lsae__json_free(&j); return r; } while (0)
    if (j.tok[0].type != LSAE__J_OBJ) LSAE__SL_FAIL(LSAE_BAD_FILE, "cfg.json is not a JSON object");
    {
        char arch[64] = "standard", act[64] = "";
        if ((t = lsae__json_get(&j, 0, "architecture")) != 0 && (j.tok[t].type != LSAE__J_STR || !lsae__json_str(&j, t, arch, sizeof arch)))
            LSAE__SL_FAIL(LSAE_BAD_FILE, "cfg.json: \"architecture\" is not a short string");
        if (((t = lsae__json_get(&j, 0, "activation_fn_str")) != 0 || (t = lsae__json_get(&j, 0, "activation_fn")) != 0) && j.tok[t].type == LSAE__J_STR)
            lsae__json_str(&j, t, act, sizeof act);
        if (strcmp(arch, "topk") != 0 && !(strcmp(arch, "standard") == 0 && strcmp(act, "topk") == 0))
            LSAE__SL_FAIL(LSAE_UNSUPPORTED, "cfg.json: SAELens architecture \"%s\"%s%s is not a TopK SAE; latentsae converts TopK SAEs only", arch,
                          act[0] ? " with activation " : "", act);
    }
    if (!(t = lsae__json_get(&j, 0, "d_in")) || !lsae__json_u64(&j, t, INT32_MAX, &u) || u == 0) LSAE__SL_FAIL(LSAE_BAD_FILE, "cfg.json: no positive integer \"d_in\"");
    *d = (size_t)u;
    if (!(t = lsae__json_get(&j, 0, "d_sae")) || !lsae__json_u64(&j, t, INT32_MAX, &u) || u == 0) LSAE__SL_FAIL(LSAE_BAD_FILE, "cfg.json: no positive integer \"d_sae\"");
    *L = (size_t)u;
    t = lsae__json_get(&j, 0, "k");
    if (!t && (kw = lsae__json_get(&j, 0, "activation_fn_kwargs")) != 0) t = lsae__json_get(&j, kw, "k");
    if (!t || !lsae__json_u64(&j, t, INT32_MAX, &u) || u == 0) LSAE__SL_FAIL(LSAE_BAD_FILE, "cfg.json: no positive integer \"k\" (nor activation_fn_kwargs.k)");
    *k = (size_t)u;
    if ((t = lsae__json_get(&j, 0, "apply_b_dec_to_input")) != 0 && lsae__json_bool(&j, t, &b) && !b)
        LSAE__SL_FAIL(LSAE_UNSUPPORTED, "cfg.json: \"apply_b_dec_to_input\": false; latent-sae's encoder always subtracts b_dec first");
    if ((t = lsae__json_get(&j, 0, "normalize_activations")) != 0 && j.tok[t].type != LSAE__J_NULL && !(lsae__json_bool(&j, t, &b) && !b) &&
        !lsae__json_str_eq(&j, t, "none")) {
        s[0] = 0;
        if (j.tok[t].type == LSAE__J_STR) lsae__json_str(&j, t, s, sizeof s);
        LSAE__SL_FAIL(LSAE_UNSUPPORTED, "cfg.json: \"normalize_activations\": \"%s\" rescales inputs at run time; only \"none\" converts", s[0] ? s : "true");
    }
    if ((t = lsae__json_get(&j, 0, "finetuning_scaling_factor")) != 0 && lsae__json_bool(&j, t, &b) && b)
        LSAE__SL_FAIL(LSAE_UNSUPPORTED, "cfg.json: \"finetuning_scaling_factor\": true is not supported");
    *rescale = 0;
    if ((t = lsae__json_get(&j, 0, "rescale_acts_by_decoder_norm")) != 0 && !lsae__json_bool(&j, t, rescale))
        LSAE__SL_FAIL(LSAE_BAD_FILE, "cfg.json: \"rescale_acts_by_decoder_norm\" must be true or false");
#undef LSAE__SL_FAIL
    lsae__json_free(&j);
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_load_saelens(const char *dir, const lsae_allocator *alloc, lsae_model **out)
{
    char path[4096], *text = NULL;
    size_t len, d = 0, L = 0, k = 0, i, j;
    int rescale = 0, unit = 1;
    lsae_config cfg;
    lsae_model *m = NULL;
    lsae_result r;
    FILE *f = NULL;
    lsae__st st;
    float *wt = NULL;
    static const char *names[4] = { "W_enc", "b_enc", "W_dec", "b_dec" };
    if (!out) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_load_saelens: out is NULL");
    *out = NULL;
    if (!dir) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_load_saelens: dir is NULL");
    if (!lsae__allocator_check(alloc)) return lsae__err(LSAE_INVALID_ARGS, "allocator given with a NULL malloc_fn or free_fn");
    if (!lsae__path_join(path, sizeof path, dir, "cfg.json")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    if ((r = lsae__read_small_file(path, 1 << 20, alloc, &text, &len)) != LSAE_OK) return r;
    r = lsae__saelens_cfg(text, len, alloc, &d, &L, &k, &rescale);
    lsae__free(alloc, text);
    if (r != LSAE_OK) return lsae__err_prefix(r, "%s: ", path);
    cfg = lsae_config_default(d);
    cfg.num_latents = L;
    cfg.k = k;
    if ((r = lsae_config_validate(&cfg)) != LSAE_OK) return lsae__err_prefix(r, "%s: ", path);
    if (!lsae__path_join(path, sizeof path, dir, "sae_weights.safetensors")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    /* the weights file's header first: it must hold the sizes cfg.json
       claims before a model of that size is allocated */
    if ((r = lsae__st_open(path, alloc, &f, &st)) != LSAE_OK) return r;
    for (i = 0; i < 4; ++i) {
        const lsae__st_tensor *t = lsae__st_find(&st, names[i]);
        uint64_t s0 = i == 0 ? d : i == 3 ? d : L, s1 = i == 0 ? L : d;
        int nd = (i == 0 || i == 2) ? 2 : 1;
        if (!t) { r = lsae__err(LSAE_BAD_FILE, "%s: no tensor '%s' (a SAELens SAE has W_enc, b_enc, W_dec, b_dec)", path, names[i]); goto done; }
        if (t->ndim != nd || t->shape[0] != s0 || (nd == 2 && t->shape[1] != s1)) {
            r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' has the wrong shape for d_in %zu, d_sae %zu (W_enc is [d_in, d_sae] in SAELens)", path, names[i], d, L);
            goto done;
        }
        if (t->dtype != LSAE__DT_F32 && t->dtype != LSAE__DT_F16 && t->dtype != LSAE__DT_BF16 && t->dtype != LSAE__DT_F64) {
            r = lsae__err(LSAE_UNSUPPORTED, "%s: tensor '%s' is %s; F32, F16, BF16 (or F64) expected", path, t->name, t->dtype_name);
            goto done;
        }
    }
    if ((r = lsae__model_alloc(&cfg, alloc, &m)) != LSAE_OK) goto done;
    for (i = 0; i < st.n; ++i) {
        const lsae__st_tensor *t = &st.t[i];
        int q, known = 0;
        for (q = 0; q < 4; ++q) known |= strcmp(t->name, names[q]) == 0;
        if (!known && strcmp(t->name, "scaling_factor") == 0 && t->ndim == 1 && t->shape[0] == L) {
            /* older SAELens files carry a fine-tuning scaling factor; all ones
               (as SAELens itself then drops it) is harmless, anything else is not */
            float *sf = (float *)lsae__alloc_array(m->alloc, L, sizeof(float), "scaling_factor");
            if (!sf) { r = LSAE_OUT_OF_MEMORY; goto done; }
            if ((r = lsae__st_read_f32(f, path, &st, t, 0, L, sf)) == LSAE_OK)
                for (j = 0; j < L; ++j)
                    if (sf[j] != 1.0f) { r = lsae__err(LSAE_UNSUPPORTED, "%s: scaling_factor[%zu] is %g; only an all-ones scaling factor converts", path, j, (double)sf[j]); break; }
            lsae__free(m->alloc, sf);
            if (r != LSAE_OK) goto done;
            continue;
        }
        if (!known) { r = lsae__err(LSAE_UNSUPPORTED, "%s: holds tensor '%s', which a SAELens TopK SAE does not have; refusing rather than ignoring it", path, t->name); goto done; }
    }
    for (i = 0; i < 4; ++i) {
        const lsae__st_tensor *t = lsae__st_find(&st, names[i]);
        float *dst = i == 0 ? NULL : m->params + m->lay.offset[i == 1 ? LSAE__B_ENC : i == 2 ? LSAE__W_DEC : LSAE__B_DEC];
        if (i == 0) {
            if (!(wt = (float *)lsae__alloc_array(m->alloc, L, d * sizeof(float), "W_enc transpose"))) { r = LSAE_OUT_OF_MEMORY; goto done; }
            dst = wt;
        }
        if ((r = lsae__st_read_f32(f, path, &st, t, 0, (size_t)t->numel, dst)) != LSAE_OK) goto done;
        for (j = 0; j < (size_t)t->numel; ++j)
            if (!isfinite(dst[j])) { r = lsae__err(LSAE_BAD_FILE, "%s: tensor '%s' holds NaN or Inf at element %zu", path, t->name, j); goto done; }
    }
    /* W_enc [d, L] -> ours [L, d] */
    for (i = 0; i < d; ++i)
        for (j = 0; j < L; ++j) m->W_enc[j * d + i] = wt[i * L + j];
    for (j = 0; j < L; ++j) {
        double ss = 0;
        for (i = 0; i < d; ++i) ss += (double)m->W_dec[j * d + i] * m->W_dec[j * d + i];
        if (rescale) {
            /* SAELens's norm (clamped at 1e-8 as its get_W_dec_norm) folded into encoder and decoder */
            float n = (float)sqrt(ss);
            if (n < 1e-8f) n = 1e-8f;
            for (i = 0; i < d; ++i) { m->W_enc[j * d + i] *= n; m->W_dec[j * d + i] /= n; }
            m->b_enc[j] *= n;
            /* a norm past float's range (or weights near it) overflows the fold */
            for (i = 0; i <= d; ++i)
                if (!isfinite(i < d ? m->W_enc[j * d + i] : m->b_enc[j]) || !isfinite(i < d ? m->W_dec[j * d + i] : 0.0f)) {
                    r = lsae__err(LSAE_BAD_FILE, "%s: W_dec row %zu has norm %g; folding rescale_acts_by_decoder_norm into W_enc and b_enc leaves float32's range",
                                  path, j, sqrt(ss));
                    goto done;
                }
        } else if (fabs(sqrt(ss) - 1.0) > 1e-4) {
            unit = 0;
        }
    }
    /* keep unit decoder rows unit when training goes on; leave others alone */
    m->cfg.normalize_decoder = unit;
done:
    if (m) lsae__free(m->alloc, wt);
    fclose(f);
    lsae__st_free(&st);
    if (r != LSAE_OK) { lsae_model_free(m); return r; }
#ifdef LATENTSAE_CUDA
    if ((r = lsae_model_to_device(m, LSAE_DEVICE_DEFAULT)) != LSAE_OK) { lsae_model_free(m); return r; }
#endif
    if ((r = lsae__lp_keep(m)) != LSAE_OK) { lsae_model_free(m); return r; }
    *out = m;
    return LSAE_OK;
}

LSAE_DEF lsae_result lsae_model_save_saelens(const lsae_model *m, const char *dir)
{
    char path[4096], cfgtext[1024];
    lsae__st_out ts[4];
    lsae__afile af;
    lsae_result r;
    float *wt;
    size_t i, j;
    int w;
    LSAE__REFUSE_SHARD(m, "lsae_model_save_saelens");
    if (!m || !dir) return lsae__err(LSAE_INVALID_ARGS, "lsae_model_save_saelens: model and dir must not be NULL");
#ifdef LATENTSAE_CUDA
    if (m->cuda && (r = lsae__cuda_model_download(m->cuda, m->params)) != LSAE_OK) return r;
#endif
    if ((r = lsae__mkdirs(dir)) != LSAE_OK) return r;
    if (!(wt = (float *)lsae__alloc_array(m->alloc, m->L, m->d * sizeof(float), "W_enc transpose"))) return LSAE_OUT_OF_MEMORY;
    for (j = 0; j < m->L; ++j)
        for (i = 0; i < m->d; ++i) wt[i * m->L + j] = m->W_enc[j * m->d + i];
    ts[0].name = "W_enc"; ts[0].ndim = 2; ts[0].shape[0] = m->d; ts[0].shape[1] = m->L; ts[0].data = wt;
    ts[1].name = "b_enc"; ts[1].ndim = 1; ts[1].shape[0] = m->L; ts[1].shape[1] = 0; ts[1].data = m->b_enc;
    ts[2].name = "W_dec"; ts[2].ndim = 2; ts[2].shape[0] = m->L; ts[2].shape[1] = m->d; ts[2].data = m->W_dec;
    ts[3].name = "b_dec"; ts[3].ndim = 1; ts[3].shape[0] = m->d; ts[3].shape[1] = 0; ts[3].data = m->b_dec;
    if (!lsae__path_join(path, sizeof path, dir, "sae_weights.safetensors")) { lsae__free(m->alloc, wt); return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir); }
    r = lsae__st_write_src(path, ts, 4, NULL, NULL); /* every tensor's data given */
    lsae__free(m->alloc, wt);
    if (r != LSAE_OK) return r;
    /* SAELens 6's keys, plus the pre-6 activation keys (ignored by 6, read by 5) */
    w = lsae__snprintf(cfgtext, sizeof cfgtext,
                 "{\"architecture\": \"topk\", \"d_in\": %zu, \"d_sae\": %zu, \"k\": %zu, \"dtype\": \"float32\", \"device\": \"cpu\", "
                 "\"apply_b_dec_to_input\": true, \"normalize_activations\": \"none\", \"reshape_activations\": \"none\", "
                 "\"rescale_acts_by_decoder_norm\": false, \"activation_fn_str\": \"topk\", \"activation_fn_kwargs\": {\"k\": %zu}, "
                 "\"metadata\": {\"sae_lens_version\": \"6.0.0\", \"sae_lens_training_version\": \"6.0.0\", \"converted_from\": \"latentsae %s\"}}\n",
                 m->d, m->L, m->k, m->k, LSAE_VERSION_STRING);
    if (w < 0 || (size_t)w >= sizeof cfgtext) return lsae__err(LSAE_ERROR, "cfg.json text too long");
    if (!lsae__path_join(path, sizeof path, dir, "cfg.json")) return lsae__err(LSAE_INVALID_ARGS, "path too long: %s", dir);
    if ((r = lsae__afile_open(&af, path)) != LSAE_OK) return r;
    lsae__afile_write(&af, cfgtext, (size_t)w);
    return lsae__afile_commit(&af);
}
#endif /* LSAE_NO_SAELENS */
#endif /* LSAE_NO_STDIO */

#endif /* LATENTSAE_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the latentsae authors
Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain.
Anyone is free to copy, modify, publish, use, compile, sell, or distribute this
software, either in source code form or as a compiled binary, for any purpose,
commercial or non-commercial, and by any means.
In jurisdictions that recognize copyright laws, the author or authors of this
software dedicate any and all copyright interest in the software to the public
domain. We make this dedication for the benefit of the public at large and to
the detriment of our heirs and successors. We intend this dedication to be an
overt act of relinquishment in perpetuity of all present and future rights to
this software under copyright law.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN
ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION
WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
------------------------------------------------------------------------------
*/
