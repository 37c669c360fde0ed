/* latentsae_cuda.cu - the CUDA backend of latentsae.h - public domain / MIT

   Build it with nvcc and link it to a program that defines LATENTSAE_CUDA
   before including latentsae.h (LATENTSAE_IMPLEMENTATION in one file):

      nvcc -O3 -arch=native -Xcompiler -fopenmp -c latentsae_cuda.cu   (cuBLAS)
      nvcc -O3 -arch=native -DLSAE_CUDA_NO_CUBLAS -c latentsae_cuda.cu
      cc -O2 -fopenmp -DLATENTSAE_CUDA main.c latentsae_cuda.o -L/usr/local/cuda/lib64 \
         -lcublas -lcudart -lstdc++ -lm

   -Xcompiler -fopenmp is optional: it lets the host copy each training batch
   into pinned memory with several threads (2 ms -> 0.5 ms of a 3 ms H100
   step at d=768, batch 4096, when stats are asked for every step). A
   latentsae_cuda.o built with it needs OpenMP's runtime at link time:
   -fopenmp, or -lgomp for a program compiled without it.

   Needs compute capability 7.0 or newer (__match_any_sync) and CUDA 11.4 or
   newer (cublasGetStatusString). Compiled here with CUDA 13.0 (whose oldest
   target is sm_75) for sm_75, sm_80 and sm_90.

   What runs where. The four parameters, their gradients, Adam's moments and
   the dead-latent counters live in device memory, in slabs laid out as the
   host model's (latentsae.h's lsae__layout, tensors in the order
   LSAE__W_ENC, LSAE__B_ENC, LSAE__W_DEC, LSAE__B_DEC), so one copy moves a
   model. The host model's slab is only staging for the file calls. A
   training step is the CPU's step (docs/math.md, section 2), stage by
   stage: the host functions under "one training step" below carry the
   CPU's stage names and labels, in its order, and each kernel names the
   stage it does. Float operations are written with explicit rounding
   (__fmul_rn, __fadd_rn, fmaf) wherever the CPU code does the same
   operation, so that with equal inputs the decode, the parameter gradients
   and Adam give the CPU's bits; only the reductions (dot products,
   variance, norms) sum in another order.

   One training batch (accumulate), stage by stage:
     F1  host: drop rows with NaN/Inf while copying the batch into a pinned
         buffer (two, used in turn); refuse batches with < 2 rows or all
         rows equal (TV = 0) before any device work; upload x [B, d]
     F2  per-dimension variance in double, TV, and B1's coefficients
     F3  b_dec = geometric median (first batch only; Weiszfeld in double)
     F4  xc = x - b_dec; pre = xc W_enc^T (cuBLAS TF32/FP32/BF16, or our
         kernel); per row top-K of ReLU(pre + b_enc) (radix select, K up
         to 4096) and the AuxK top-ka among dead latents
     F5, F6, B1  one kernel: residuals e (k), e4 (4k), e_hat - e (AuxK)
         per row, their sums of squares, and dLoss/d(decoder outputs)
     F7  fvu, auxk, multi-topk fvu, loss; a non-finite loss poisons the
         trainer on the device and every later kernel that would change
         state returns at once
     B2  entries sorted by latent (stable radix sort)
     B3  dpre of every entry (one dot product with a W_dec row)
     B3, B4  per latent, without atomics, in the CPU's order: the W_dec,
         W_enc and b_enc gradients
     B5, U1  b_dec's gradient, both sides (U1 per batch here)
     B6  which latents fired
   One optimizer step (apply): U2 global norm (fixed chunks, double) and
   clip; U3 projection of W_dec rows, Adam (torch.optim.Adam),
   renormalisation; U4 the dead-latent counters and the next window's dead
   mask. All on the device.

   Data-parallel training (lsae_trainer_set_comm with size > 1; README
   "Distributed training", "On GPUs"). The same exchanges as the CPU
   trainer, at the same points: F2's column sums with the row counts and
   then the variance about the global mean, F3's sums (first batch), F7's
   loss terms, and at U0 (before U2) the gradient slab and the fired flags.
   Each rank's part is reduced on its GPU in a fixed order (kernels under
   "data-parallel runs"), the ranks' parts are added through lsae_comm in
   rank order (pinned host memory and sum_f64 / sum_f32, or sum_f32_device
   on the device for the gradient when the comm has it: latentsae_nccl.h),
   and the sums go back to the device; U1 stays per batch (it is linear in
   the batch, so summing it across ranks is the same sum). A rank's slice
   may be empty: it launches no kernel over rows and still takes part in
   every sum. The host waits for the device at each exchange. With one
   rank the step is the one-GPU step below, bit for bit. Compiled and
   linked by CI; not yet run on a GPU (tests/cuda/mpi.sh is the check).

   Asynchrony. Calls without stats return once their work is queued: the
   host copies the next batch while the GPU computes this one. The device
   keeps a status word (poisoned by a NaN loss, gradient norm or weight);
   every call polls the copy of it the previous call queued, without
   waiting, and reports a failure as soon as it is seen.
*/

#define LATENTSAE_CUDA
#include "latentsae.h"

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#ifndef LSAE_CUDA_NO_CUBLAS
#include <cublas_v2.h>
#endif
#include <cub/device/device_radix_sort.cuh>

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

static_assert(sizeof(unsigned long long) == sizeof(uint64_t), "dead-latent counters are copied as uint64_t");
static_assert(sizeof(int32_t) == sizeof(int), "latent indices are int32");

/* largest k the per-row selection sorts in shared memory (8 bytes a key) */
#define LSAE__KMAX 4096
/* rows x L floats of pre-activations computed at once: 1 GiB */
#define LSAE__PRE_BUDGET ((size_t)1 << 30)
/* rows per chunk for encode/decode, so host copies overlap GPU work */
#define LSAE__IO_ROWS 4096
/* elements per partial sum of the gradient norm (U2) */
#define LSAE__NORM_CHUNK 16384
#define LSAE__FULL 0xffffffffu

/* why a trainer stopped (lsae__dstat.poisoned) */
enum { LSAE__OK_STATE = 0, LSAE__POISON_LOSS = 1, LSAE__POISON_NORM = 2, LSAE__POISON_WEIGHTS = 3 };

/* ================================================================ errors */

/* Every failure goes through here: the message into lsae_last_error(), the
   code back to the caller. A failed allocation is LSAE_OUT_OF_MEMORY, any
   other CUDA failure LSAE_CUDA_ERROR. */
static lsae_result lsae__cu_msg(lsae_result code, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lsae__cuda_set_error(buf);
    return code;
}

static lsae_result lsae__cu_fail(cudaError_t e, const char *what, int line)
{
    /* clear the error if it is not sticky, so later calls see their own */
    (void)cudaGetLastError();
    return lsae__cu_msg(e == cudaErrorMemoryAllocation ? LSAE_OUT_OF_MEMORY : LSAE_CUDA_ERROR,
                        "CUDA error %s (%s) in %s (latentsae_cuda.cu:%d)", cudaGetErrorName(e),
                        cudaGetErrorString(e), what, line);
}

#define LSAE__CU(call) do { cudaError_t lsae__e = (call); \
    if (lsae__e != cudaSuccess) return lsae__cu_fail(lsae__e, #call, __LINE__); } while (0)
/* after every kernel launch: a bad configuration shows here, a fault at the next synchronisation */
#define LSAE__LAUNCHED(name) do { cudaError_t lsae__e = cudaGetLastError(); \
    if (lsae__e != cudaSuccess) return lsae__cu_fail(lsae__e, "launching lsae__" #name "_kernel", __LINE__); } while (0)

#ifndef LSAE_CUDA_NO_CUBLAS
static lsae_result lsae__blas_fail(cublasStatus_t s, const char *what, int line)
{
    return lsae__cu_msg(s == CUBLAS_STATUS_ALLOC_FAILED ? LSAE_OUT_OF_MEMORY : LSAE_CUDA_ERROR,
                        "cuBLAS error %s (%s) in %s (latentsae_cuda.cu:%d)", cublasGetStatusName(s),
                        cublasGetStatusString(s), what, line);
}
#define LSAE__BLAS(call) do { cublasStatus_t lsae__s = (call); \
    if (lsae__s != CUBLAS_STATUS_SUCCESS) return lsae__blas_fail(lsae__s, #call, __LINE__); } while (0)
#endif

/* Restores the calling thread's current device when a call returns: the
   library selects the model's device for its own work only. */
struct lsae__device_guard {
    int prev, ok;
    lsae__device_guard() : prev(0), ok(0)
    {
        ok = cudaGetDevice(&prev) == cudaSuccess;
        if (!ok) (void)cudaGetLastError();
    }
    ~lsae__device_guard()
    {
        if (ok) (void)cudaSetDevice(prev);
    }
    lsae__device_guard(const lsae__device_guard &) = delete;
    lsae__device_guard &operator=(const lsae__device_guard &) = delete;
};

/* a * b without wrapping */
static int lsae__cu_mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > (size_t)-1 / a) return 0;
    *out = a * b;
    return 1;
}

/* count elements of T in device memory; *p is NULL on failure */
template <class T>
static lsae_result lsae__dalloc(T **p, size_t count, const char *what)
{
    size_t bytes;
    cudaError_t e;
    *p = NULL;
    if (!lsae__cu_mul(count ? count : 1, sizeof(T), &bytes))
        return lsae__cu_msg(LSAE_OUT_OF_MEMORY, "%s: %zu elements of %zu bytes overflow size_t", what, count, sizeof(T));
    e = cudaMalloc((void **)p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        (void)cudaGetLastError();
        return lsae__cu_msg(e == cudaErrorMemoryAllocation ? LSAE_OUT_OF_MEMORY : LSAE_CUDA_ERROR,
                            "cannot allocate %zu bytes of GPU memory for %s: %s", bytes, what, cudaGetErrorString(e));
    }
    return LSAE_OK;
}

/* the same in pinned host memory (page-locked, so copies run at full speed and asynchronously) */
template <class T>
static lsae_result lsae__halloc(T **p, size_t count, const char *what)
{
    size_t bytes;
    cudaError_t e;
    *p = NULL;
    if (!lsae__cu_mul(count ? count : 1, sizeof(T), &bytes))
        return lsae__cu_msg(LSAE_OUT_OF_MEMORY, "%s: %zu elements of %zu bytes overflow size_t", what, count, sizeof(T));
    e = cudaMallocHost((void **)p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        (void)cudaGetLastError();
        return lsae__cu_msg(e == cudaErrorMemoryAllocation ? LSAE_OUT_OF_MEMORY : LSAE_CUDA_ERROR,
                            "cannot allocate %zu bytes of pinned host memory for %s: %s", bytes, what, cudaGetErrorString(e));
    }
    return LSAE_OK;
}

/* Release paths cannot report: a failure there is ignored on purpose. */
template <class T> static void lsae__dfree(T **p) { if (*p) (void)cudaFree((void *)*p); *p = NULL; }
template <class T> static void lsae__hfree(T **p) { if (*p) (void)cudaFreeHost((void *)*p); *p = NULL; }

static size_t lsae__next_pow2(size_t n)
{
    size_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

static unsigned lsae__grid(size_t n, unsigned block, unsigned cap)
{
    size_t g = (n + block - 1) / block;
    if (g < 1) g = 1;
    return g > cap ? cap : (unsigned)g;
}

/* ========================================================= device status */

/* What the host needs back from a step, and the trainer's device-side
   control state; copied whole to pinned memory at the end of each call. */
typedef struct lsae__dstat {
    double tv;                 /* total variance of the batch */
    double se, se4, sa;        /* sums of squares: residual, 4k residual, AuxK error */
    double fvu, fvu4, auxk, loss;
    double norm;               /* global gradient norm, before clipping */
    double scale;              /* AuxK scale min(n_dead / (d/2), 1) for the window */
    double gm_wsum;            /* geometric median: sum of the weights */
    double poison_loss, poison_fvu, poison_auxk, poison_norm;
    unsigned long long poison_step;
    float c_main, c_multi, c_aux, clip;
    int n_dead;                /* latents with since_fired > threshold */
    int ka;                    /* min(d/2, n_dead) */
    int poisoned;              /* LSAE__POISON_*; 0 healthy */
    int weights_bad;           /* Adam wrote a non-finite weight this step */
    int gm_done;               /* geometric median converged */
    int pad_;
} lsae__dstat;

/* ============================================================== reductions */

/* Sum of v over a 1-D block of T threads, in a fixed order (so the same
   inputs always give the same bits); every thread gets the sum. sh holds 32
   doubles. All threads of the block must call it. */
template <int T>
__device__ double lsae__block_sum(double v, double *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int off;
    for (off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(LSAE__FULL, v, off);
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double r = lane < T / 32 ? sh[lane] : 0.0;
        for (off = 16; off > 0; off >>= 1) r += __shfl_xor_sync(LSAE__FULL, r, off);
        if (lane == 0) sh[0] = r;
    }
    __syncthreads();
    return sh[0];
}

/* ================================================================ kernels */

/* ---- elementwise ---- */

/* xc [R, d] = x [R, d] - b_dec (the CPU's lsae__center); xc may be x */
__global__ void lsae__center_kernel(float *xc, const float *x, const float *__restrict__ b_dec, size_t n, int d)
{
    size_t i;
    for (i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        xc[i] = __fsub_rn(x[i], b_dec[i % (size_t)d]);
}

/* dst [n] = bfloat16(src), round to nearest even */
__global__ void lsae__to_bf16_kernel(__nv_bfloat16 *__restrict__ dst, const float *__restrict__ src, size_t n)
{
    size_t i;
    for (i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

/* ---- the encoder product without cuBLAS ---- */

/* C [R, L] = A [R, d] W [L, d]^T, both operands with d contiguous. 64 x 64
   tiles of C per block of 256 threads, 4 x 4 per thread, d in steps of 16
   through shared memory. Each element is one fmaf chain over p = 0, 1, ...,
   d - 1, the order of the CPU's GEMM kernels (lsae__tile_rows), so with FMA
   on both sides the results are the CPU's bits. */
#define LSAE__GT 64
#define LSAE__GK 16
__global__ void __launch_bounds__(256) lsae__gemm_nt_kernel(float *__restrict__ C, const float *__restrict__ A,
                                                           const float *__restrict__ W, int R, int L, int d)
{
    __shared__ float As[LSAE__GK][LSAE__GT + 1];
    __shared__ float Ws[LSAE__GK][LSAE__GT + 1];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int r0 = blockIdx.y * LSAE__GT, l0 = blockIdx.x * LSAE__GT;
    float acc[4][4];
    int i, j, q, p0, kk;
#pragma unroll
    for (i = 0; i < 4; ++i)
#pragma unroll
        for (j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (p0 = 0; p0 < d; p0 += LSAE__GK) {
        const int kmax = d - p0 < LSAE__GK ? d - p0 : LSAE__GK;
#pragma unroll
        for (q = 0; q < 4; ++q) {
            const int e = tid + 256 * q, row = e >> 4, c = e & 15, p = p0 + c;
            As[c][row] = (r0 + row < R && p < d) ? A[(size_t)(r0 + row) * d + p] : 0.0f;
            Ws[c][row] = (l0 + row < L && p < d) ? W[(size_t)(l0 + row) * d + p] : 0.0f;
        }
        __syncthreads();
        for (kk = 0; kk < kmax; ++kk) {
            float a[4], w[4];
#pragma unroll
            for (i = 0; i < 4; ++i) a[i] = As[kk][ty * 4 + i];
#pragma unroll
            for (j = 0; j < 4; ++j) w[j] = Ws[kk][tx * 4 + j];
#pragma unroll
            for (i = 0; i < 4; ++i)
#pragma unroll
                for (j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], w[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (i = 0; i < 4; ++i)
#pragma unroll
        for (j = 0; j < 4; ++j) {
            const int r = r0 + ty * 4 + i, l = l0 + tx * 4 + j;
            if (r < R && l < L) C[(size_t)r * L + l] = acc[i][j];
        }
}

/* ---- F4 per-row selection (top-k) ---- */

/* The k largest of v_l = ReLU(pre[l] + b_enc[l]) over l < L (only where
   mask[l], if a mask is given), ordered by value descending, ties to the
   lower index: exactly the order of the CPU's selection (lsae__select).

   v >= +0 (the ReLU maps -0 and NaN to +0), so the bits u of v order as the
   values do. The kernel finds the k-th largest u by radix select, eight
   bits a pass from the top (4 passes of a 256-bin histogram), then collects
   every element above it plus, in index order, the first ones equal to it,
   and sorts those (a bitonic network in shared memory) by the key
   (u << 32) | (2^32 - 1 - l): distinct for distinct l, larger for a larger
   value or a lower index. One block of LSAE__TK threads a row; values are
   recomputed from pre each pass (pre sits in L2 after the first).

   out_v/out_i [R, ldo]: the first k slots hold the selection, the rest (up
   to ldo) are value 0, index 0, so readers never meet unwritten memory.
   k = *k_dev when k_dev is given (AuxK's k_aux, known only on the device),
   else k_fixed; kcap is a power of two >= k, the shared key array's size.

   Cost: with cache set (the launcher sets it when L more floats fit in
   shared memory beside the keys) the first pass keeps every u in shared
   memory and the other passes read it there, so pre is read from memory
   once (a [4096, 24576] pre is 403 MB: five reads through L2 were most of
   this kernel's time). After the first pass only elements matching the
   prefix count, a few per row: a warp with none skips the histogram
   update (__match_any_sync and the atomic), which is the costly part. */
#define LSAE__TK 512
#define LSAE__UMASKED 0xffffffffu        /* not a ReLU output's bits (those are <= +inf's, 0x7f800000) */
#define LSAE__TK_CACHE_MAX (112u * 1024u) /* keys + row cache: two blocks of 512 threads still fit on an SM */
__device__ __forceinline__ unsigned lsae__relu_bits(float pre, float b)
{
    float v = __fadd_rn(pre, b);
    v = v > 0.0f ? v : 0.0f;
    return __float_as_uint(v);
}

__device__ __forceinline__ unsigned long long lsae__make_key(unsigned u, int i)
{
    return ((unsigned long long)u << 32) | (unsigned long long)(0xffffffffu - (unsigned)i);
}

__global__ void __launch_bounds__(LSAE__TK) lsae__select_kernel(float *__restrict__ out_v, int32_t *__restrict__ out_i, int ldo,
                                                             const float *__restrict__ pre, const float *__restrict__ b_enc, int L,
                                                             const unsigned char *__restrict__ mask, int k_fixed,
                                                             const int *__restrict__ k_dev, int kcap, int cache, int vec4)
{
    extern __shared__ __align__(16) unsigned long long lsae__keys[];   /* [kcap], then, with cache, u of the row [L] */
    unsigned *const ucache = (unsigned *)(lsae__keys + ((kcap + 1) & ~1)); /* 16-byte aligned for uint4 */
    __shared__ unsigned hist[256];
    __shared__ unsigned warp_cnt[LSAE__TK / 32], warp_off[LSAE__TK / 32];
    __shared__ unsigned s_digit, s_krem, s_binn, s_total, s_tile, s_gt, s_all;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const size_t row = blockIdx.x;
    const float *p = pre + row * (size_t)L;
    float *ov = out_v + row * (size_t)ldo;
    int32_t *oi = out_i + row * (size_t)ldo;
    unsigned prefix = 0, pmask = 0, krem, n_gt, n_eq, n_sel, running = 0;
    int k = k_dev ? *k_dev : k_fixed, pass, base, s, take_all = 0;
    if (k < 0) k = 0;
    if (k > ldo) k = ldo;
    if (k > kcap) k = kcap;
    if (k == 0) {
        for (s = tid; s < ldo; s += LSAE__TK) { ov[s] = 0.0f; oi[s] = 0; }
        return;
    }
    krem = (unsigned)k;

    /* 0. with cache: u of the whole row into shared memory, loads independent
       of each other (float4 when vec4) so that many are in flight */
    if (cache) {
        if (vec4) {
            const float4 *p4 = (const float4 *)p, *b4 = (const float4 *)b_enc;
            for (s = tid; s < L / 4; s += LSAE__TK) {
                const float4 a = p4[s], bb = __ldg(b4 + s);
                uint4 u;
                u.x = lsae__relu_bits(a.x, bb.x); u.y = lsae__relu_bits(a.y, bb.y);
                u.z = lsae__relu_bits(a.z, bb.z); u.w = lsae__relu_bits(a.w, bb.w);
                if (mask) {
                    if (!mask[4 * s]) u.x = LSAE__UMASKED;
                    if (!mask[4 * s + 1]) u.y = LSAE__UMASKED;
                    if (!mask[4 * s + 2]) u.z = LSAE__UMASKED;
                    if (!mask[4 * s + 3]) u.w = LSAE__UMASKED;
                }
                ((uint4 *)ucache)[s] = u;
            }
        } else {
            for (s = tid; s < L; s += LSAE__TK) ucache[s] = (!mask || mask[s]) ? lsae__relu_bits(p[s], b_enc[s]) : LSAE__UMASKED;
        }
        __syncthreads();
    }

    /* 1. radix select: after pass p the top 8(p+1) bits of the threshold are
       known; krem counts how many elements equal to the prefix so far are
       still to be taken. Invariant: (elements with u above the prefix's
       range) = k - krem. */
    for (pass = 0; pass < 4; ++pass) {
        const int shift = 24 - 8 * pass;
        for (s = tid; s < 256; s += LSAE__TK) hist[s] = 0;
        __syncthreads();
        for (base = 0; base < L; base += LSAE__TK) {   /* same trip count in every lane: __match_any_sync sees all 32 */
            const int i = base + tid;
            unsigned digit = 256; /* not eligible */
            if (i < L) {
                const unsigned u = cache ? ucache[i] : (!mask || mask[i]) ? lsae__relu_bits(p[i], b_enc[i]) : LSAE__UMASKED;
                if (u != LSAE__UMASKED && (u & pmask) == prefix) digit = (u >> shift) & 255u;
            }
            /* lanes with the same digit add once (the bins of one row are few and hot) */
            if (__any_sync(LSAE__FULL, digit < 256)) {
                const unsigned peers = __match_any_sync(LSAE__FULL, digit);
                if (digit < 256 && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], (unsigned)__popc(peers));
            }
        }
        __syncthreads();
        if (warp == 0) {
            /* lane owns bins [8 lane, 8 lane + 8); suffix sums over lanes find
               the bin where the count from the top reaches krem */
            unsigned local = 0, incl, tot, above;
            int b, off, mine;
            for (b = 0; b < 8; ++b) local += hist[lane * 8 + b];
            incl = local;
            for (off = 1; off < 32; off <<= 1) {
                const unsigned t = __shfl_down_sync(LSAE__FULL, incl, off);
                if (lane + off < 32) incl += t;
            }
            tot = __shfl_sync(LSAE__FULL, incl, 0);
            if (pass == 0 && tot <= krem) {
                /* no more candidates than k: take them all */
                if (lane == 0) { s_all = 1; s_total = tot; }
            } else {
                above = incl - local;
                mine = above < krem && krem <= incl;
                if (lane == 0) s_all = 0;
                if (mine) {
                    unsigned cum = above;
                    for (b = 7; b >= 0; --b) {
                        const unsigned h = hist[lane * 8 + b];
                        if (cum + h >= krem) { s_digit = (unsigned)(lane * 8 + b); s_krem = krem - cum; s_binn = h; break; }
                        cum += h;
                    }
                }
            }
        }
        __syncthreads();
        if (s_all) { take_all = 1; break; }
        prefix |= s_digit << shift;
        pmask |= 255u << shift;
        krem = s_krem;
    }

    /* 2. collect: elements above the threshold in any order (their keys are
       sorted next), elements equal to it in index order, the first n_eq */
    n_gt = take_all ? 0u : (unsigned)k - krem;
    n_eq = take_all ? s_total : krem;
    n_sel = n_gt + n_eq;
    for (s = tid; s < kcap; s += LSAE__TK) lsae__keys[s] = 0ull; /* below every real key */
    if (tid == 0) s_gt = 0;
    __syncthreads();
    /* After the last pass the threshold has all 32 bits, and s_binn elements
       equal it. When all of them are taken (krem == s_binn: no tie at the
       threshold to break by index, the usual case for continuous values) or
       take_all, the selection is exactly the elements >= the threshold,
       found in any order (the sort below orders them): no scan in index
       order, and no barrier in the loop. */
    if (take_all || krem == s_binn) {
        for (base = 0; base < L; base += LSAE__TK) {
            const int i = base + tid;
            if (i < L) {
                const unsigned u = cache ? ucache[i] : (!mask || mask[i]) ? lsae__relu_bits(p[i], b_enc[i]) : LSAE__UMASKED;
                if (u != LSAE__UMASKED && (take_all || u >= prefix)) {
                    const unsigned pos = atomicAdd(&s_gt, 1u);
                    if (pos < n_sel) lsae__keys[pos] = lsae__make_key(u, i);
                }
            }
        }
    } else {
        /* a tie at the threshold: the first n_eq equal ones by index */
        for (base = 0; base < L; base += LSAE__TK) {
            const int i = base + tid;
            int gt = 0, eq = 0;
            unsigned u = 0, bal;
            if (i < L) {
                u = cache ? ucache[i] : (!mask || mask[i]) ? lsae__relu_bits(p[i], b_enc[i]) : LSAE__UMASKED;
                if (u != LSAE__UMASKED) {
                    if (take_all) eq = 1;
                    else { gt = u > prefix; eq = u == prefix; }
                }
            }
            if (gt) {
                const unsigned pos = atomicAdd(&s_gt, 1u);
                if (pos < n_gt) lsae__keys[pos] = lsae__make_key(u, i);
            }
            bal = __ballot_sync(LSAE__FULL, eq);
            if (lane == 0) warp_cnt[warp] = (unsigned)__popc(bal);
            __syncthreads();
            if (warp == 0) {
                const unsigned c = lane < LSAE__TK / 32 ? warp_cnt[lane] : 0u;
                unsigned incl = c;
                int off;
                for (off = 1; off < 32; off <<= 1) {
                    const unsigned t = __shfl_up_sync(LSAE__FULL, incl, off);
                    if (lane >= off) incl += t;
                }
                if (lane < LSAE__TK / 32) warp_off[lane] = incl - c;
                if (lane == 31) s_tile = incl;
            }
            __syncthreads();
            if (eq) {
                const unsigned rank = running + warp_off[warp] + (unsigned)__popc(bal & ((1u << lane) - 1u));
                if (rank < n_eq) lsae__keys[n_gt + rank] = lsae__make_key(u, i);
            }
            running += s_tile;
            /* the next tile's writes to warp_cnt, warp_off and s_tile come after
               its first barrier, which every thread reaches after these reads */
        }
    }
    __syncthreads();

    /* 3. bitonic sort, descending, of the kcap keys (padding zeros sink) */
    {
        unsigned size, stride, q;
        for (size = 2; size <= (unsigned)kcap; size <<= 1)
            for (stride = size >> 1; stride > 0; stride >>= 1) {
                for (q = tid; q < (unsigned)kcap / 2; q += LSAE__TK) {
                    const unsigned pos = 2 * q - (q & (stride - 1)), par = pos + stride;
                    const unsigned long long a = lsae__keys[pos], b = lsae__keys[par];
                    const int desc = (pos & size) == 0;
                    if (desc ? (a < b) : (a > b)) { lsae__keys[pos] = b; lsae__keys[par] = a; }
                }
                __syncthreads();
            }
    }

    /* 4. out */
    for (s = tid; s < ldo; s += LSAE__TK) {
        if ((unsigned)s < n_sel) {
            const unsigned long long key = lsae__keys[s];
            ov[s] = __uint_as_float((unsigned)(key >> 32));
            oi[s] = (int32_t)(0xffffffffu - (unsigned)(key & 0xffffffffull));
        } else {
            ov[s] = 0.0f;
            oi[s] = 0;
        }
    }
}

/* ---- inference decode ---- */

/* x_hat [R, d] = b_dec + sum_s acts[s] W_dec[idx[s]] per row, skipping zero
   activations, each term added as the CPU's lsae_model_decode does. One
   block a row. Indices were checked on the host. */
__global__ void lsae__decode_kernel(float *__restrict__ x_hat, const float *__restrict__ acts, const int32_t *__restrict__ idx,
                                    const float *__restrict__ W_dec, const float *__restrict__ b_dec, int k, int d)
{
    const size_t r = blockIdx.x;
    const float *a = acts + r * (size_t)k;
    const int32_t *ix = idx + r * (size_t)k;
    int j, s;
    for (j = threadIdx.x; j < d; j += blockDim.x) {
        float out = b_dec[j];
        for (s = 0; s < k; ++s) {
            const float as = a[s];
            if (as == 0.0f) continue;
            out = __fadd_rn(out, __fmul_rn(as, W_dec[(size_t)ix[s] * d + j]));
        }
        x_hat[r * (size_t)d + j] = out;
    }
}

/* ---- F2 total variance ---- */

/* tv_dim[j] = sum_r (x[r, j] - mean_j)^2 in double, mean_j = sum_r x[r, j] / B.
   Block (32, 32): 32 dimensions, 32 row groups summed in a fixed order. */
__global__ void lsae__total_variance_kernel(double *__restrict__ tv_dim, const float *__restrict__ x, int B, int d)
{
    __shared__ double part[32][33];
    __shared__ double mean_s[32];
    const int tx = threadIdx.x, ty = threadIdx.y, j = blockIdx.x * 32 + tx;
    double s = 0.0;
    int r, q;
    if (j < d)
        for (r = ty; r < B; r += 32) s += (double)x[(size_t)r * d + j];
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0) {
        double m = 0.0;
        for (q = 0; q < 32; ++q) m += part[q][tx];
        mean_s[tx] = m / (double)B;
    }
    __syncthreads();
    s = 0.0;
    if (j < d) {
        const double mean = mean_s[tx];
        for (r = ty; r < B; r += 32) {
            const double diff = (double)x[(size_t)r * d + j] - mean;
            s += diff * diff;
        }
    }
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && j < d) {
        double v = 0.0;
        for (q = 0; q < 32; ++q) v += part[q][tx];
        tv_dim[j] = v;
    }
}

/* TV = sum_j tv_dim[j] in the CPU's order, then B1's loss coefficients
   (w = 1 / grad_acc_steps; the CPU forms them in lsae__output_grads):
     c_main  = -2 w / TV,  c_multi = -2 w / (8 TV) with multi-topk,
     c_aux   = 2 w alpha scale / TV when some latent is dead. One thread. */
__global__ void lsae__total_variance_finish_kernel(lsae__dstat *st, const double *__restrict__ tv_dim, int d, double w,
                                       double alpha, int multi, int aux_on)
{
    double TV = 0.0;
    int j, ka;
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    for (j = 0; j < d; ++j) TV += tv_dim[j];
    st->tv = TV;
    ka = aux_on ? st->ka : 0;
    st->c_main = (float)(-2.0 * w / TV);
    st->c_multi = (float)(multi ? -2.0 * w / (8.0 * TV) : 0.0);
    st->c_aux = (float)(ka ? 2.0 * w * alpha * st->scale / TV : 0.0);
}

/* ---- F3 b_dec = geometric median of the first batch (lsae__init_b_dec) ---- */

/* guess[j] = mean over rows, in the CPU's order; resets the convergence flag */
__global__ void lsae__gm_mean_kernel(double *__restrict__ guess, const float *__restrict__ x, int B, int d, lsae__dstat *st)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    int r;
    if (j == 0) st->gm_done = 0;
    if (j < d) {
        double s = 0.0;
        for (r = 0; r < B; ++r) s += (double)x[(size_t)r * d + j];
        guess[j] = s / (double)B;
    }
}

/* w[b] = 1 / max(||x_b - guess||, 1e-12), one warp a row */
__global__ void lsae__gm_weights_kernel(double *__restrict__ w, const double *__restrict__ guess, const float *__restrict__ x,
                                        int B, int d, const lsae__dstat *st)
{
    const int lane = threadIdx.x & 31;
    const int b = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
    double s = 0.0;
    int i, off;
    if (st->gm_done || st->poisoned || b >= B) return; /* whole warps leave together */
    for (i = lane; i < d; i += 32) {
        const double diff = (double)x[(size_t)b * d + i] - guess[i];
        s += diff * diff;
    }
    for (off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(LSAE__FULL, s, off);
    if (lane == 0) {
        s = sqrt(s);
        w[b] = 1.0 / (s > 1e-12 ? s : 1e-12);
    }
}

__global__ void __launch_bounds__(1024) lsae__gm_wsum_kernel(lsae__dstat *st, const double *__restrict__ w, int B)
{
    __shared__ double sh[32];
    double s = 0.0;
    int r;
    if (st->gm_done || st->poisoned) return;
    for (r = threadIdx.x; r < B; r += 1024) s += w[r];
    s = lsae__block_sum<1024>(s, sh);
    if (threadIdx.x == 0) st->gm_wsum = s;
}

/* prev = guess; guess[j] = sum_q w[q] x[q, j] / wsum, in the CPU's order */
__global__ void lsae__gm_update_kernel(double *__restrict__ guess, double *__restrict__ prev, const double *__restrict__ w,
                                       const float *__restrict__ x, int B, int d, const lsae__dstat *st)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    double s = 0.0;
    int q;
    if (st->gm_done || st->poisoned || j >= d) return;
    for (q = 0; q < B; ++q) s += w[q] * (double)x[(size_t)q * d + j];
    prev[j] = guess[j];
    guess[j] = s / st->gm_wsum;
}

/* stop when the guess moved less than 1e-5 */
__global__ void __launch_bounds__(1024) lsae__gm_check_kernel(lsae__dstat *st, const double *__restrict__ guess,
                                                             const double *__restrict__ prev, int d)
{
    __shared__ double sh[32];
    double s = 0.0;
    int j;
    if (st->gm_done || st->poisoned) return;
    for (j = threadIdx.x; j < d; j += 1024) {
        const double diff = guess[j] - prev[j];
        s += diff * diff;
    }
    s = lsae__block_sum<1024>(s, sh);
    if (threadIdx.x == 0 && sqrt(s) < 1e-5) st->gm_done = 1;
}

__global__ void lsae__gm_finish_kernel(float *__restrict__ b_dec, const double *__restrict__ guess, int d, const lsae__dstat *st)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (st->poisoned || j >= d) return;
    b_dec[j] = (float)guess[j];
}

/* ---- F5 decode and residuals, F6 AuxK decode, B1 output gradients: one kernel ---- */

/* Per row b (one block):
     e0 = x - (b_dec + sum_{i<k} a_i W_dec[l_i])
     e1 = x - (b_dec + sum_{i<K} a_i W_dec[l_i])           (multi-topk, K = 4k)
     e2 = sum_{j<ka} aux_a_j W_dec[aux_l_j] - e0          (AuxK)
   row_sse[b] = (sum e0^2, sum e1^2, sum e2^2) in double, and
     G0 = c_main e0 + c_multi e1,  G1 = c_multi e1,  G2 = c_aux e2,
   the gradients of the loss with respect to the three decoder outputs.
   Each sum over slots is an fmaf chain in slot order, as the CPU's. */
#define LSAE__TD 256
__global__ void __launch_bounds__(LSAE__TD) lsae__decode_residuals_kernel(float *__restrict__ G, double *__restrict__ row_sse,
        const float *__restrict__ x, const float *__restrict__ topv, const int32_t *__restrict__ topi,
        const float *__restrict__ auxv, const int32_t *__restrict__ auxi, const float *__restrict__ W_dec,
        const float *__restrict__ b_dec, const lsae__dstat *st, int d, int k, int K, int KA)
{
    __shared__ double sh[32];
    const size_t b = blockIdx.x;
    const float *xb = x + b * (size_t)d;
    float *g0 = G + b * 3 * (size_t)d, *g1 = g0 + d, *g2 = g1 + d;
    const float *tv = topv + b * (size_t)K, *av = auxv + b * (size_t)KA;
    const int32_t *ti = topi + b * (size_t)K, *ai = auxi + b * (size_t)KA;
    const float cm = st->c_main, cmu = st->c_multi, ca = st->c_aux;
    int ka = KA ? st->ka : 0, j, i;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0;
    if (ka > KA) ka = KA;
    for (j = threadIdx.x; j < d; j += LSAE__TD) {
        float acc = b_dec[j], e0, e1 = 0.0f, e2 = 0.0f;
        for (i = 0; i < k; ++i) {
            const float a = tv[i];
            if (a != 0.0f) acc = fmaf(a, W_dec[(size_t)ti[i] * d + j], acc);
        }
        if (K > k) {
            float acc4 = acc;
            for (i = k; i < K; ++i) {
                const float a = tv[i];
                if (a != 0.0f) acc4 = fmaf(a, W_dec[(size_t)ti[i] * d + j], acc4);
            }
            e1 = __fsub_rn(xb[j], acc4);
            s1 += (double)e1 * e1;
        }
        e0 = __fsub_rn(xb[j], acc);
        s0 += (double)e0 * e0;
        if (ka > 0) {
            float ah = 0.0f;
            for (i = 0; i < ka; ++i) {
                const float a = av[i];
                if (a != 0.0f) ah = fmaf(a, W_dec[(size_t)ai[i] * d + j], ah);
            }
            e2 = __fsub_rn(ah, e0);
            s2 += (double)e2 * e2;
        }
        g0[j] = __fadd_rn(__fmul_rn(cm, e0), cmu != 0.0f ? __fmul_rn(cmu, e1) : 0.0f);
        g1[j] = __fmul_rn(cmu, e1);
        g2[j] = __fmul_rn(ca, e2);
    }
    s0 = lsae__block_sum<LSAE__TD>(s0, sh);
    s1 = lsae__block_sum<LSAE__TD>(s1, sh);
    s2 = lsae__block_sum<LSAE__TD>(s2, sh);
    if (threadIdx.x == 0) {
        row_sse[3 * b] = s0;
        row_sse[3 * b + 1] = s1;
        row_sse[3 * b + 2] = s2;
    }
}

/* fvu = se / TV, fvu4 = se4 / TV, auxk = scale sa / TV,
   loss = fvu + alpha auxk + fvu4 / 8; a non-finite loss poisons the trainer
   (the CPU returns LSAE_NOT_FINITE there, before the backward pass). */
__global__ void __launch_bounds__(1024) lsae__loss_kernel(lsae__dstat *st, const double *__restrict__ row_sse, int B,
                                                         int multi, int aux_on, double alpha, unsigned long long step)
{
    __shared__ double sh[32];
    double se = 0.0, se4 = 0.0, sa = 0.0;
    int r;
    for (r = threadIdx.x; r < B; r += 1024) {
        se += row_sse[3 * (size_t)r];
        se4 += row_sse[3 * (size_t)r + 1];
        sa += row_sse[3 * (size_t)r + 2];
    }
    se = lsae__block_sum<1024>(se, sh);
    se4 = lsae__block_sum<1024>(se4, sh);
    sa = lsae__block_sum<1024>(sa, sh);
    if (threadIdx.x == 0) {
        const double TV = st->tv;
        const int ka = aux_on ? st->ka : 0;
        const double fvu = se / TV, fvu4 = multi ? se4 / TV : 0.0, auxk = ka ? st->scale * sa / TV : 0.0;
        const double loss = fvu + alpha * auxk + fvu4 / 8.0;
        st->se = se; st->se4 = se4; st->sa = sa;
        st->fvu = fvu; st->fvu4 = fvu4; st->auxk = auxk; st->loss = loss;
        if (!isfinite(loss) && !st->poisoned) {
            st->poisoned = LSAE__POISON_LOSS;
            st->poison_loss = loss; st->poison_fvu = fvu; st->poison_auxk = auxk;
            st->poison_step = step;
        }
    }
}

/* ---- B3 (first half) dpre of every entry ---- */

/* Per row b (one block): for every selected slot s with a positive
   activation, dpre[b, s] = G_slot . W_dec[l_s] (one warp a slot).
   Slots: [0, k) main, [k, K) the multi-topk tail, [K, K + KA) AuxK.

   The gradient through the encoder's input x - b_dec (for b_dec) is not
   formed per row: sum_b dxc[b] = sum_b sum_s dpre[b, s] W_enc[l_s]
   = sum_l (sum of dpre over l's entries) W_enc[l], which
   lsae__b_dec_grad_input_kernel computes from the per-latent sums that
   lsae__latent_grads_kernel leaves. That halves this kernel's gathers
   (B E d reads of W_enc rows, 0.8 GB a step at d=768, L=24576, k=64,
   B=4096) for one read of W_enc (75 MB).

   vec4: d % 4 == 0 and W_dec, G 16-byte aligned, so a lane loads four
   floats at a time; the dot is then summed in another order than the
   scalar loop, a float32 rounding difference (the CPU's order is not
   reproduced bit for bit here either: the bar is 1e-5 relative). */
#define LSAE__TB 256
__global__ void __launch_bounds__(LSAE__TB) lsae__entry_dpre_kernel(float *__restrict__ dpre,
        const float *__restrict__ G, const float *__restrict__ topv, const int32_t *__restrict__ topi,
        const float *__restrict__ auxv, const int32_t *__restrict__ auxi, const float *__restrict__ W_dec,
        int d, int k, int K, int KA, int vec4)
{
    const size_t b = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, E = K + KA;
    const float *gb = G + b * 3 * (size_t)d;
    int s, j, off;
    for (s = warp; s < E; s += LSAE__TB / 32) {
        const float a = s < K ? topv[b * (size_t)K + s] : auxv[b * (size_t)KA + (s - K)];
        float dv = 0.0f;
        if (a > 0.0f) {
            const int l = s < K ? topi[b * (size_t)K + s] : auxi[b * (size_t)KA + (s - K)];
            const float *g = gb + (s < k ? 0 : s < K ? d : 2 * d);
            const float *wd = W_dec + (size_t)l * d;
            if (vec4) {
                const float4 *g4 = (const float4 *)g, *w4 = (const float4 *)wd;
                float d0 = 0.0f, d1 = 0.0f;
                for (j = lane; j < d / 4; j += 32) {
                    const float4 gv = g4[j], wv = __ldg(w4 + j);
                    d0 = fmaf(gv.x, wv.x, d0); d1 = fmaf(gv.y, wv.y, d1);
                    d0 = fmaf(gv.z, wv.z, d0); d1 = fmaf(gv.w, wv.w, d1);
                }
                dv = d0 + d1;
            } else {
                for (j = lane; j < d; j += 32) dv = fmaf(g[j], wd[j], dv);
            }
            for (off = 16; off > 0; off >>= 1) dv += __shfl_xor_sync(LSAE__FULL, dv, off);
        }
        if (lane == 0) dpre[b * (size_t)E + s] = dv;
    }
}

/* ---- B2 entries by latent ---- */

/* keys[e] = latent of entry e = b E + s when its activation is positive,
   else L (sorted past every latent); ents[e] = e */
__global__ void lsae__entry_keys_kernel(unsigned *__restrict__ keys, int *__restrict__ ents, const float *__restrict__ topv,
                                        const int32_t *__restrict__ topi, const float *__restrict__ auxv,
                                        const int32_t *__restrict__ auxi, size_t n, int K, int KA, int L)
{
    const int E = K + KA;
    size_t e;
    for (e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const size_t b = e / (size_t)E;
        const int s = (int)(e % (size_t)E);
        const float a = s < K ? topv[b * K + s] : auxv[b * KA + (s - K)];
        const int l = s < K ? topi[b * K + s] : auxi[b * KA + (s - K)];
        keys[e] = a > 0.0f ? (unsigned)l : (unsigned)L;
        ents[e] = (int)e;
    }
}

/* lat_start[l] = first position in the sorted keys with key >= l, l <= L */
__global__ void lsae__lat_start_kernel(int *__restrict__ lat_start, const unsigned *__restrict__ keys, int n, int L)
{
    const int l = blockIdx.x * blockDim.x + threadIdx.x;
    int lo = 0, hi = n;
    if (l > L) return;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (keys[mid] < (unsigned)l) lo = mid + 1;
        else hi = mid;
    }
    lat_start[l] = lo;
}

/* ---- B3 (second half) and B4 per-latent gradients; B5 + U1 b_dec; B6 fired ---- */

/* Per latent l (one block), over its entries in (row, slot) order:
     dW_dec[l] += sum a G_slot,  dW_enc[l] += sum dpre xc_b,  db_enc[l] += sum dpre
   each an fmaf chain added to the gradient once, as the CPU. */
__global__ void __launch_bounds__(LSAE__TD) lsae__latent_grads_kernel(float *__restrict__ gW_enc, float *__restrict__ gb_enc,
        float *__restrict__ gW_dec, float *__restrict__ lat_dsum, const int *__restrict__ lat_start, const int *__restrict__ ents,
        const float *__restrict__ topv, const float *__restrict__ auxv, const float *__restrict__ dpre,
        const float *__restrict__ G, const float *__restrict__ xc, const lsae__dstat *st, int d, int k, int K, int KA)
{
    const size_t l = blockIdx.x;
    const int q0 = lat_start[l], q1 = lat_start[l + 1], E = K + KA;
    int j, q;
    if (st->poisoned) return;
    if (q0 >= q1) {
        if (threadIdx.x == 0) lat_dsum[l] = 0.0f;
        return;
    }
    for (j = threadIdx.x; j < d; j += LSAE__TD) {
        float ad = 0.0f, ae = 0.0f;
        for (q = q0; q < q1; ++q) {
            const int ent = ents[q];
            const size_t b = (size_t)(ent / E);
            const int s = ent % E;
            const float a = s < K ? topv[b * K + s] : auxv[b * KA + (s - K)];
            const float *g = G + b * 3 * (size_t)d + (s < k ? 0 : s < K ? d : 2 * d);
            ad = fmaf(a, g[j], ad);
            ae = fmaf(dpre[ent], xc[b * (size_t)d + j], ae);
        }
        gW_dec[l * d + j] = __fadd_rn(gW_dec[l * d + j], ad);
        gW_enc[l * d + j] = __fadd_rn(gW_enc[l * d + j], ae);
    }
    if (threadIdx.x == 0) {
        float sb = 0.0f;
        for (q = q0; q < q1; ++q) sb = __fadd_rn(sb, dpre[ents[q]]);
        gb_enc[l] = __fadd_rn(gb_enc[l], sb);
        lat_dsum[l] = sb;
    }
}

/* The same for d % 4 == 0, d <= 4096, 16-byte aligned rows: one thread
   per four dimensions (blockDim.x = d / 4 rounded up to a warp), float4
   loads, and each chunk of a latent's entries (row offsets, activation,
   dpre) read once into shared memory by the block instead of by every
   thread. The sums are the same fmaf chains in the same order: the bits
   equal lsae__latent_grads_kernel's. */
#define LSAE__LG4_MAXT 1024
__global__ void __launch_bounds__(LSAE__LG4_MAXT) lsae__latent_grads4_kernel(float *__restrict__ gW_enc, float *__restrict__ gb_enc,
        float *__restrict__ gW_dec, float *__restrict__ lat_dsum, const int *__restrict__ lat_start, const int *__restrict__ ents,
        const float *__restrict__ topv, const float *__restrict__ auxv, const float *__restrict__ dpre,
        const float *__restrict__ G, const float *__restrict__ xc, const lsae__dstat *st, int d, int k, int K, int KA)
{
    __shared__ unsigned long long s_goff[LSAE__LG4_MAXT], s_xoff[LSAE__LG4_MAXT];
    __shared__ float s_a[LSAE__LG4_MAXT], s_dp[LSAE__LG4_MAXT];
    const size_t l = blockIdx.x;
    const int q0 = lat_start[l], q1 = lat_start[l + 1], E = K + KA, tid = threadIdx.x, nt = blockDim.x, d4 = d / 4;
    float4 ad = make_float4(0.0f, 0.0f, 0.0f, 0.0f), ae = ad;
    float sb = 0.0f;
    int c0, q;
    if (st->poisoned) return;
    if (q0 >= q1) {
        if (tid == 0) lat_dsum[l] = 0.0f;
        return;
    }
    for (c0 = q0; c0 < q1; c0 += nt) {
        const int n = q1 - c0 < nt ? q1 - c0 : nt;
        __syncthreads(); /* the previous chunk is consumed */
        if (tid < n) {
            const int ent = ents[c0 + tid];
            const size_t b = (size_t)(ent / E);
            const int s = ent % E;
            s_a[tid] = s < K ? topv[b * K + s] : auxv[b * KA + (s - K)];
            s_goff[tid] = b * 3 * (size_t)d + (size_t)(s < k ? 0 : s < K ? d : 2 * d);
            s_xoff[tid] = b * (size_t)d;
            s_dp[tid] = dpre[ent];
        }
        __syncthreads();
        if (tid < d4)
            for (q = 0; q < n; ++q) {
                const float a = s_a[q], dp = s_dp[q];
                const float4 g = ((const float4 *)(G + s_goff[q]))[tid], x = ((const float4 *)(xc + s_xoff[q]))[tid];
                ad.x = fmaf(a, g.x, ad.x); ad.y = fmaf(a, g.y, ad.y); ad.z = fmaf(a, g.z, ad.z); ad.w = fmaf(a, g.w, ad.w);
                ae.x = fmaf(dp, x.x, ae.x); ae.y = fmaf(dp, x.y, ae.y); ae.z = fmaf(dp, x.z, ae.z); ae.w = fmaf(dp, x.w, ae.w);
            }
        if (tid == 0)
            for (q = 0; q < n; ++q) sb = __fadd_rn(sb, s_dp[q]);
    }
    if (tid < d4) {
        float4 *wd = (float4 *)(gW_dec + l * d) + tid, *we = (float4 *)(gW_enc + l * d) + tid;
        float4 od = *wd, oe = *we;
        od.x = __fadd_rn(od.x, ad.x); od.y = __fadd_rn(od.y, ad.y); od.z = __fadd_rn(od.z, ad.z); od.w = __fadd_rn(od.w, ad.w);
        oe.x = __fadd_rn(oe.x, ae.x); oe.y = __fadd_rn(oe.y, ae.y); oe.z = __fadd_rn(oe.z, ae.z); oe.w = __fadd_rn(oe.w, ae.w);
        *wd = od;
        *we = oe;
    }
    if (tid == 0) {
        gb_enc[l] = __fadd_rn(gb_enc[l], sb);
        lat_dsum[l] = sb;
    }
}

/* din_part[c, j] = sum over latents l of chunk c of lat_dsum[l] W_enc[l, j]:
   the gradient through the encoder input, summed over the batch (see
   lsae__entry_dpre_kernel), in LSAE__DIN_CHUNKS chunks of latents so
   that enough blocks stream W_enc. Block (32, 8): 32 dimensions, 8 latent
   strides added in a fixed order: deterministic. */
#define LSAE__DIN_CHUNKS 64
__global__ void lsae__b_dec_grad_input_kernel(float *__restrict__ din_part, const float *__restrict__ lat_dsum,
                                         const float *__restrict__ W_enc, int L, int d, const lsae__dstat *st)
{
    __shared__ float part[8][33];
    const int tx = threadIdx.x, ty = threadIdx.y, j = blockIdx.x * 32 + tx, c = blockIdx.y;
    const int per = (L + LSAE__DIN_CHUNKS - 1) / LSAE__DIN_CHUNKS, l0 = c * per, l1 = l0 + per < L ? l0 + per : L;
    float acc = 0.0f;
    int l, q;
    if (st->poisoned) return;
    if (j < d)
        for (l = l0 + ty; l < l1; l += 8) {
            const float w = lat_dsum[l];
            if (w != 0.0f) acc = fmaf(w, W_enc[(size_t)l * d + j], acc);
        }
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && j < d) {
        float t = 0.0f;
        for (q = 0; q < 8; ++q) t = __fadd_rn(t, part[q][tx]);
        din_part[(size_t)c * d + j] = t;
    }
}

/* db_dec[j] += sum_b G0[b, j] - sum_c din_part[c, j]: through the decoder
   output and through the encoder input x - b_dec. Block (32, 32): 32
   dimensions, 32 row groups added in a fixed order. */
__global__ void lsae__b_dec_grad_kernel(float *__restrict__ gb_dec, const float *__restrict__ G, const float *__restrict__ din_part,
                                       int B, int d, const lsae__dstat *st)
{
    __shared__ float po[32][33], pi[32][33];
    const int tx = threadIdx.x, ty = threadIdx.y, j = blockIdx.x * 32 + tx;
    float so = 0.0f, si = 0.0f;
    int r, q;
    if (st->poisoned) return;
    if (j < d) {
        for (r = ty; r < B; r += 32) so = __fadd_rn(so, G[(size_t)r * 3 * d + j]);
        for (r = ty; r < LSAE__DIN_CHUNKS; r += 32) si = __fadd_rn(si, din_part[(size_t)r * d + j]);
    }
    po[ty][tx] = so;
    pi[ty][tx] = si;
    __syncthreads();
    if (ty == 0 && j < d) {
        float to = 0.0f, tin = 0.0f;
        for (q = 0; q < 32; ++q) { to = __fadd_rn(to, po[q][tx]); tin = __fadd_rn(tin, pi[q][tx]); }
        gb_dec[j] = __fadd_rn(gb_dec[j], __fsub_rn(to, tin));
    }
}

/* a latent fired when it was in some row's top k (not the 4k tail, not AuxK) */
__global__ void lsae__mark_fired_kernel(unsigned char *__restrict__ did_fire, const int32_t *__restrict__ topi, size_t n, int k,
                                      int K, const lsae__dstat *st)
{
    size_t e;
    if (st->poisoned) return;
    for (e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x)
        did_fire[topi[(e / (size_t)k) * K + e % (size_t)k]] = 1;
}

/* ---- the optimizer step (apply): U2 clip, U3 Adam ---- */

/* partial[c] = sum of g^2 over elements [c CHUNK, (c + 1) CHUNK), in double */
__global__ void __launch_bounds__(256) lsae__sumsq_kernel(double *__restrict__ partial, const float *__restrict__ g, size_t n)
{
    __shared__ double sh[32];
    const size_t i0 = (size_t)blockIdx.x * LSAE__NORM_CHUNK;
    size_t i1 = i0 + LSAE__NORM_CHUNK, i;
    double s = 0.0;
    if (i1 > n) i1 = n;
    for (i = i0 + threadIdx.x; i < i1; i += 256) s += (double)g[i] * g[i];
    s = lsae__block_sum<256>(s, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* norm = sqrt(sum of partials); clip as torch.nn.utils.clip_grad_norm_(., 1.0):
   1 / (norm + 1e-6) when that is < 1. A non-finite norm poisons the trainer
   before Adam (the CPU returns there and leaves the weights). */
__global__ void __launch_bounds__(1024) lsae__clip_kernel(lsae__dstat *st, const double *__restrict__ partial, int nchunks,
                                                                unsigned long long step)
{
    __shared__ double sh[32];
    double s = 0.0;
    int c;
    for (c = threadIdx.x; c < nchunks; c += 1024) s += partial[c];
    s = lsae__block_sum<1024>(s, sh);
    if (threadIdx.x == 0) {
        const double norm = sqrt(s);
        st->norm = norm;
        st->clip = 1.0 / (norm + 1e-6) < 1.0 ? (float)(1.0 / (norm + 1e-6)) : 1.0f;
        st->weights_bad = 0;
        if (!isfinite(norm) && !st->poisoned) {
            st->poisoned = LSAE__POISON_NORM;
            st->poison_norm = norm;
            st->poison_step = step;
        }
    }
}

/* torch.optim.Adam on one element, with the clipped gradient g:
     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
     p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
   in the CPU's operation order, each rounded once. */
__device__ __forceinline__ float lsae__adam_one(float p, float g, float *m1, float *m2, float step_size, float bc2_sqrt)
{
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    const float mm = __fadd_rn(__fmul_rn(*m1, b1), __fmul_rn(g, 1.0f - b1));
    const float vv = __fadd_rn(__fmul_rn(*m2, b2), __fmul_rn(__fmul_rn(g, g), 1.0f - b2));
    *m1 = mm;
    *m2 = vv;
    return __fsub_rn(p, __fmul_rn(step_size, __fdiv_rn(mm, __fadd_rn(__fdiv_rn(__fsqrt_rn(vv), bc2_sqrt), eps))));
}

/* every parameter element in [i0, i1) (the slab without W_dec) */
__global__ void lsae__adam_flat_kernel(float *__restrict__ P, const float *__restrict__ G, float *__restrict__ M1,
                                       float *__restrict__ M2, size_t i0, size_t i1, lsae__dstat *st,
                                       float step_size, float bc2_sqrt)
{
    const float clip = st->clip;
    size_t i;
    int bad = 0;
    if (st->poisoned) return;
    for (i = i0 + blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < i1; i += (size_t)gridDim.x * blockDim.x) {
        const float g = __fmul_rn(G[i], clip);
        float m1 = M1[i], m2 = M2[i];
        const float p = lsae__adam_one(P[i], g, &m1, &m2, step_size, bc2_sqrt);
        M1[i] = m1;
        M2[i] = m2;
        P[i] = p;
        bad |= !isfinite(p);
    }
    if (bad) st->weights_bad = 1;
}

/* W_dec, one block a row: clip; remove the gradient's component along the
   (unit) row, g -= (g . w) w; Adam; renormalise w / (||w|| + FLT_EPSILON).
   The two dot products are summed in double here; the CPU sums them in
   float in its own fixed order (lsae__dot): a rounding difference inside
   the 1e-5 bar, like every other reduction here. */
#define LSAE__TA 256
__global__ void __launch_bounds__(LSAE__TA) lsae__adam_wdec_kernel(float *__restrict__ P, float *__restrict__ G,
        float *__restrict__ M1, float *__restrict__ M2, int d, int normalize, lsae__dstat *st,
        float step_size, float bc2_sqrt)
{
    __shared__ double sh[32];
    const size_t base = (size_t)blockIdx.x * d;
    float *p = P + base, *g = G + base, *m1 = M1 + base, *m2 = M2 + base;
    const float clip = st->clip;
    int j, bad = 0;
    if (st->poisoned) return;
    for (j = threadIdx.x; j < d; j += LSAE__TA) g[j] = __fmul_rn(g[j], clip);
    if (normalize) {
        double par = 0.0;
        float fpar;
        for (j = threadIdx.x; j < d; j += LSAE__TA) par += (double)g[j] * p[j];
        fpar = (float)lsae__block_sum<LSAE__TA>(par, sh);
        for (j = threadIdx.x; j < d; j += LSAE__TA) g[j] = __fsub_rn(g[j], __fmul_rn(fpar, p[j]));
    }
    for (j = threadIdx.x; j < d; j += LSAE__TA) {
        float a = m1[j], b = m2[j];
        p[j] = lsae__adam_one(p[j], g[j], &a, &b, step_size, bc2_sqrt);
        m1[j] = a;
        m2[j] = b;
    }
    if (normalize) {
        double ss = 0.0;
        float sc;
        for (j = threadIdx.x; j < d; j += LSAE__TA) ss += (double)p[j] * p[j];
        ss = lsae__block_sum<LSAE__TA>(ss, sh);
        sc = (float)(1.0 / (sqrt(ss) + FLT_EPSILON));
        for (j = threadIdx.x; j < d; j += LSAE__TA) p[j] = __fmul_rn(p[j], sc);
    }
    for (j = threadIdx.x; j < d; j += LSAE__TA) bad |= !isfinite(p[j]);
    if (bad) st->weights_bad = 1;
}

/* ---- U4 dead latents, and the dead mask F4 reads in the next window ---- */

__global__ void lsae__dead_reset_kernel(lsae__dstat *st, int guard)
{
    if (guard && st->poisoned) return;
    st->n_dead = 0;
}

/* with bookkeep: since_fired grows by the window's rows and restarts where
   the latent fired; then dead[l] = since_fired[l] > threshold, counted
   exactly in integers (warp sums, one atomic a warp) */
__global__ void __launch_bounds__(256) lsae__dead_count_kernel(unsigned long long *__restrict__ since, unsigned char *__restrict__ did_fire,
        unsigned char *__restrict__ dead, int L, unsigned long long rows, unsigned long long threshold,
        lsae__dstat *st, int bookkeep, int guard)
{
    size_t l;
    int n = 0, off;
    if (guard && st->poisoned) return;
    for (l = blockIdx.x * (size_t)blockDim.x + threadIdx.x; l < (size_t)L; l += (size_t)gridDim.x * blockDim.x) {
        unsigned long long s = since[l];
        if (bookkeep) {
            s = did_fire[l] ? 0ull : s + rows;
            since[l] = s;
            did_fire[l] = 0;
        }
        dead[l] = s > threshold;
        n += s > threshold;
    }
    for (off = 16; off > 0; off >>= 1) n += __shfl_xor_sync(LSAE__FULL, n, off);
    if ((threadIdx.x & 31) == 0 && n > 0) atomicAdd(&st->n_dead, n);
}

/* k_aux = min(d/2, n_dead), scale = min(n_dead / (d/2), 1) (Gao et al. B.1) */
__global__ void lsae__dead_finish_kernel(lsae__dstat *st, int half_d, int guard)
{
    const int n = st->n_dead;
    double scale;
    if (guard && st->poisoned) return;
    st->ka = half_d < n ? half_d : n;
    scale = half_d ? (double)n / (double)half_d : 0.0;
    st->scale = scale > 1.0 ? 1.0 : scale;
}

/* the CPU poisons after the bookkeeping when a weight went non-finite */
__global__ void lsae__apply_finish_kernel(lsae__dstat *st, unsigned long long step)
{
    if (!st->poisoned && st->weights_bad) {
        st->poisoned = LSAE__POISON_WEIGHTS;
        st->poison_step = step;
    }
}

/* ---- data-parallel runs (lsae_trainer_set_comm, size > 1) ---- */

/* The per-rank halves of the global sums the CPU trainer exchanges
   (latentsae.h: lsae__total_variance_comm, lsae__init_b_dec, lsae__loss,
   lsae__comm_window). Each is this rank's part over its own rows, in a
   fixed order (so a repeat gives the same bits); the host adds the ranks'
   parts through lsae_comm and hands the sums back. Only the data-parallel
   path launches them: the one-GPU kernels above are untouched. */

/* s[j] = sum_r x[r, j] in double (F2 pass 1, F3's mean): 32 row groups per
   dimension, then the groups added in order, as lsae__total_variance_kernel */
__global__ void lsae__col_sums_kernel(double *__restrict__ s_out, const float *__restrict__ x, int B, int d)
{
    __shared__ double part[32][33];
    const int tx = threadIdx.x, ty = threadIdx.y, j = blockIdx.x * 32 + tx;
    double s = 0.0;
    int r, q;
    if (j < d)
        for (r = ty; r < B; r += 32) s += (double)x[(size_t)r * d + j];
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && j < d) {
        double m = 0.0;
        for (q = 0; q < 32; ++q) m += part[q][tx];
        s_out[j] = m;
    }
}

/* tv_dim[j] = sum_r (x[r, j] - mean[j])^2 in double about the global mean
   (F2 pass 2), the same row groups */
__global__ void lsae__col_sqdev_kernel(double *__restrict__ tv_dim, const float *__restrict__ x, const double *__restrict__ mean,
                                       int B, int d)
{
    __shared__ double part[32][33];
    const int tx = threadIdx.x, ty = threadIdx.y, j = blockIdx.x * 32 + tx;
    double s = 0.0;
    int r, q;
    if (j < d) {
        const double m = mean[j];
        for (r = ty; r < B; r += 32) {
            const double diff = (double)x[(size_t)r * d + j] - m;
            s += diff * diff;
        }
    }
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && j < d) {
        double v = 0.0;
        for (q = 0; q < 32; ++q) v += part[q][tx];
        tv_dim[j] = v;
    }
}

/* F3, one Weiszfeld step's sums over this rank's rows: s[j] = sum_q w[q]
   x[q, j] (j < d) and s[d] = sum_q w[q], rows in order */
__global__ void lsae__gm_sums_kernel(double *__restrict__ s_out, const double *__restrict__ w, const float *__restrict__ x,
                                     int B, int d)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    double s = 0.0;
    int q;
    if (j < d)
        for (q = 0; q < B; ++q) s += w[q] * (double)x[(size_t)q * d + j];
    else if (j == d)
        for (q = 0; q < B; ++q) s += w[q];
    else
        return;
    s_out[j] = s;
}

/* F7, this rank's part: out = (sum se, sum se4, sum sa) over its rows (the
   block sums of lsae__loss_kernel) */
__global__ void __launch_bounds__(1024) lsae__loss_sums_kernel(double *__restrict__ out, const double *__restrict__ row_sse, int B)
{
    __shared__ double sh[32];
    double se = 0.0, se4 = 0.0, sa = 0.0;
    int r;
    for (r = threadIdx.x; r < B; r += 1024) {
        se += row_sse[3 * (size_t)r];
        se4 += row_sse[3 * (size_t)r + 1];
        sa += row_sse[3 * (size_t)r + 2];
    }
    se = lsae__block_sum<1024>(se, sh);
    se4 = lsae__block_sum<1024>(se4, sh);
    sa = lsae__block_sum<1024>(sa, sh);
    if (threadIdx.x == 0) {
        out[0] = se;
        out[1] = se4;
        out[2] = sa;
    }
}

/* F7 from the global sums: the rest of lsae__loss_kernel, one thread */
__global__ void lsae__loss_finish_kernel(lsae__dstat *st, const double *__restrict__ sums, int multi, int aux_on, double alpha,
                                         unsigned long long step)
{
    const double se = sums[0], se4 = sums[1], sa = sums[2], TV = st->tv;
    const int ka = aux_on ? st->ka : 0;
    const double fvu = se / TV, fvu4 = multi ? se4 / TV : 0.0, auxk = ka ? st->scale * sa / TV : 0.0;
    const double loss = fvu + alpha * auxk + fvu4 / 8.0;
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    st->se = se; st->se4 = se4; st->sa = sa;
    st->fvu = fvu; st->fvu4 = fvu4; st->auxk = auxk; st->loss = loss;
    if (!isfinite(loss) && !st->poisoned) {
        st->poisoned = LSAE__POISON_LOSS;
        st->poison_loss = loss; st->poison_fvu = fvu; st->poison_auxk = auxk;
        st->poison_step = step;
    }
}

/* U0: the fired flags as 0/1 floats for the sum across ranks, and back
   (fired on any rank: the sum > 0) */
__global__ void lsae__fire_to_float_kernel(float *__restrict__ f, const unsigned char *__restrict__ did_fire, size_t L)
{
    size_t l;
    for (l = blockIdx.x * (size_t)blockDim.x + threadIdx.x; l < L; l += (size_t)gridDim.x * blockDim.x)
        f[l] = did_fire[l] ? 1.0f : 0.0f;
}

__global__ void lsae__fire_from_float_kernel(unsigned char *__restrict__ did_fire, const float *__restrict__ f, size_t L)
{
    size_t l;
    for (l = blockIdx.x * (size_t)blockDim.x + threadIdx.x; l < L; l += (size_t)gridDim.x * blockDim.x)
        did_fire[l] = f[l] > 0.0f;
}

/* latentsae_nccl.h's sum: out = ((parts[0] + parts[1]) + ...) + parts[P-1],
   element-wise, the order of latentsae_mpi.h (__fadd_rn: no contraction) */
__global__ void lsae__sum_parts_kernel(float *__restrict__ out, const float *__restrict__ parts, size_t n, int P)
{
    size_t i;
    int p;
    for (i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float s = parts[i];
        for (p = 1; p < P; ++p) s = __fadd_rn(s, parts[(size_t)p * n + i]);
        out[i] = s;
    }
}

/* ================================================================= model */

struct lsae__cuda_model {
    int dev;
    size_t d, L, k;
    int normalize;
    int precision;              /* resolved: LSAE_PRECISION_FP32, _TF32 or _BF16 */
    size_t off[4], total;       /* the host layout: W_enc, b_enc, W_dec, b_dec, in floats */
    float *params;              /* [total] on the device */
    __nv_bfloat16 *W_enc_bf16;  /* [L, d], made on the first BF16 product */
    int bf16_stale;             /* W_enc changed since the copy was made */
    cudaStream_t stream;        /* every call on this model and its trainers runs on it, in order */
#ifndef LSAE_CUDA_NO_CUBLAS
    cublasHandle_t blas;
#endif
    std::mutex mu;              /* one call at a time on the model, its stream and workspaces */
    int trainers;
    int broken;                 /* a CUDA failure: refuse further work */
    int poison;                 /* LSAE_CUDA_POISON set: workspaces filled with NaN before use (tests) */
    /* encode/decode: chunks of io_rows rows, two pinned slots used in turn */
    size_t io_rows, io_k;
    int io_has_pre, io_has_bf;
    float *io_hx[2];            /* pinned [io_rows, d]: encode input, decode output */
    float *io_hv[2];            /* pinned [io_rows, io_k]: encode output, decode input */
    int32_t *io_hi[2];
    cudaEvent_t io_done[2];     /* the slot's chunk is finished on the device */
    float *io_x;                /* [io_rows, d] */
    __nv_bfloat16 *io_xbf;      /* [io_rows, d] */
    float *io_pre;              /* [io_rows, L] */
    float *io_v;                /* [io_rows, io_k] */
    int32_t *io_i;
};
typedef struct lsae__cuda_model lsae__cm;

/* DEFAULT is TF32 with cuBLAS, FP32 without; -1: not available in this build */
static int lsae__resolve_precision(lsae_precision p)
{
#ifdef LSAE_CUDA_NO_CUBLAS
    if (p == LSAE_PRECISION_DEFAULT || p == LSAE_PRECISION_FP32) return LSAE_PRECISION_FP32;
    return -1;
#else
    if (p == LSAE_PRECISION_DEFAULT) return LSAE_PRECISION_TF32;
    if (p == LSAE_PRECISION_FP32 || p == LSAE_PRECISION_TF32 || p == LSAE_PRECISION_BF16) return (int)p;
    return -1;
#endif
}

static lsae_result lsae__precision_error(lsae_precision p)
{
#ifdef LSAE_CUDA_NO_CUBLAS
    return lsae__cu_msg(LSAE_UNSUPPORTED, "precision %d needs cuBLAS, but latentsae_cuda.cu was built with LSAE_CUDA_NO_CUBLAS (its own kernel computes in float32): use LSAE_PRECISION_FP32 or DEFAULT", (int)p);
#else
    return lsae__cu_msg(LSAE_INVALID_ARGS, "precision %d is not one of LSAE_PRECISION_DEFAULT, _FP32, _TF32, _BF16", (int)p);
#endif
}

lsae_result lsae__cuda_available(int ordinal)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return lsae__cu_msg(LSAE_CUDA_ERROR, "no usable CUDA device: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    }
    if (n <= 0) return lsae__cu_msg(LSAE_CUDA_ERROR, "no CUDA device found");
    if (ordinal < 0 || ordinal >= n) return lsae__cu_msg(LSAE_CUDA_ERROR, "cuda_device = %d, but this machine has %d CUDA device(s)", ordinal, n);
    return LSAE_OK;
}

static void lsae__io_free(lsae__cm *cm)
{
    int i;
    for (i = 0; i < 2; ++i) {
        lsae__hfree(&cm->io_hx[i]);
        lsae__hfree(&cm->io_hv[i]);
        lsae__hfree(&cm->io_hi[i]);
    }
    lsae__dfree(&cm->io_x);
    lsae__dfree(&cm->io_xbf);
    lsae__dfree(&cm->io_pre);
    lsae__dfree(&cm->io_v);
    lsae__dfree(&cm->io_i);
    cm->io_rows = cm->io_k = 0;
}

/* Workspace for chunks of rows x k (encode: need_pre; BF16: need_bf). */
static lsae_result lsae__io_reserve(lsae__cm *cm, size_t rows, size_t k, int need_pre, int need_bf)
{
    size_t nr, nk, n;
    lsae_result r;
    int i;
    if (k == 0) k = 1;
    if (rows <= cm->io_rows && k <= cm->io_k && (!need_pre || cm->io_has_pre) && (!need_bf || cm->io_has_bf)) return LSAE_OK;
    LSAE__CU(cudaStreamSynchronize(cm->stream)); /* the old buffers may still be in use */
    nr = rows > cm->io_rows ? rows : cm->io_rows;
    nk = k > cm->io_k ? k : cm->io_k;
    cm->io_has_pre |= need_pre;
    cm->io_has_bf |= need_bf;
    lsae__io_free(cm);
    if (!lsae__cu_mul(nr, nk, &n) || !lsae__cu_mul(nr, cm->d, &n) || !lsae__cu_mul(nr, cm->L, &n))
        return lsae__cu_msg(LSAE_OUT_OF_MEMORY, "encode workspace of %zu rows overflows size_t", nr);
    for (i = 0; i < 2; ++i) {
        if ((r = lsae__halloc(&cm->io_hx[i], nr * cm->d, "encode input staging")) != LSAE_OK ||
            (r = lsae__halloc(&cm->io_hv[i], nr * nk, "encode output staging")) != LSAE_OK ||
            (r = lsae__halloc(&cm->io_hi[i], nr * nk, "encode output staging")) != LSAE_OK) goto fail;
    }
    if ((r = lsae__dalloc(&cm->io_x, nr * cm->d, "encode rows")) != LSAE_OK ||
        (r = lsae__dalloc(&cm->io_v, nr * nk, "encode activations")) != LSAE_OK ||
        (r = lsae__dalloc(&cm->io_i, nr * nk, "encode indices")) != LSAE_OK) goto fail;
    if (cm->io_has_pre && (r = lsae__dalloc(&cm->io_pre, nr * cm->L, "pre-activations")) != LSAE_OK) goto fail;
    if (cm->io_has_bf && (r = lsae__dalloc(&cm->io_xbf, nr * cm->d, "bfloat16 rows")) != LSAE_OK) goto fail;
    cm->io_rows = nr;
    cm->io_k = nk;
    return LSAE_OK;
fail:
    lsae__io_free(cm);
    return r;
}

void lsae__cuda_model_free(void *cmv)
{
    lsae__cm *cm = (lsae__cm *)cmv;
    int i;
    if (!cm) return;
    lsae__device_guard dg;
    if (cudaSetDevice(cm->dev) == cudaSuccess && cm->stream) (void)cudaStreamSynchronize(cm->stream);
    lsae__io_free(cm);
    lsae__dfree(&cm->params);
    lsae__dfree(&cm->W_enc_bf16);
    for (i = 0; i < 2; ++i)
        if (cm->io_done[i]) (void)cudaEventDestroy(cm->io_done[i]);
#ifndef LSAE_CUDA_NO_CUBLAS
    if (cm->blas) (void)cublasDestroy(cm->blas);
#endif
    if (cm->stream) (void)cudaStreamDestroy(cm->stream);
    (void)cudaGetLastError();
    delete cm;
}

int lsae__cuda_model_trainers(void *cmv) { return cmv ? ((lsae__cm *)cmv)->trainers : 0; }

lsae_result lsae__cuda_model_new(void **out, const lsae_config *cfg, const float *host_params, const size_t offset[4])
{
    lsae__cm *cm;
    lsae_result r;
    int prec, i;
    if (!out || !cfg || !host_params || !offset) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae__cuda_model_new: NULL argument");
    *out = NULL;
    if ((prec = lsae__resolve_precision(cfg->precision)) < 0) return lsae__precision_error(cfg->precision);
    if ((r = lsae__cuda_available(cfg->cuda_device)) != LSAE_OK) return r;
    lsae__device_guard dg;
    cm = new (std::nothrow) lsae__cm(); /* value-initialised: every plain field is 0 */
    if (!cm) return lsae__cu_msg(LSAE_OUT_OF_MEMORY, "out of memory allocating the CUDA model state");
    cm->dev = cfg->cuda_device;
    cm->d = cfg->d_in;
    cm->L = cfg->num_latents;
    cm->k = cfg->k;
    cm->normalize = cfg->normalize_decoder;
    cm->precision = prec;
    for (i = 0; i < 4; ++i) cm->off[i] = offset[i];
    cm->total = offset[3] + ((cm->d + 15u) & ~(size_t)15u); /* as latentsae.h's lsae__make_layout */
    {
        const char *p = getenv("LSAE_CUDA_POISON");
        cm->poison = p && *p && *p != '0';
    }
#define LSAE__NEW_FAIL(expr) do { if ((r = (expr)) != LSAE_OK) { lsae__cuda_model_free(cm); return r; } } while (0)
    {
        cudaError_t e = cudaSetDevice(cm->dev);
        if (e != cudaSuccess) LSAE__NEW_FAIL(lsae__cu_fail(e, "cudaSetDevice", __LINE__));
        e = cudaStreamCreateWithFlags(&cm->stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) { cm->stream = NULL; LSAE__NEW_FAIL(lsae__cu_fail(e, "cudaStreamCreateWithFlags", __LINE__)); }
        for (i = 0; i < 2; ++i) {
            e = cudaEventCreateWithFlags(&cm->io_done[i], cudaEventDisableTiming);
            if (e != cudaSuccess) { cm->io_done[i] = NULL; LSAE__NEW_FAIL(lsae__cu_fail(e, "cudaEventCreateWithFlags", __LINE__)); }
        }
    }
#ifndef LSAE_CUDA_NO_CUBLAS
    {
        cublasStatus_t s = cublasCreate(&cm->blas);
        if (s != CUBLAS_STATUS_SUCCESS) { cm->blas = NULL; LSAE__NEW_FAIL(lsae__blas_fail(s, "cublasCreate", __LINE__)); }
        s = cublasSetStream(cm->blas, cm->stream);
        if (s != CUBLAS_STATUS_SUCCESS) LSAE__NEW_FAIL(lsae__blas_fail(s, "cublasSetStream", __LINE__));
    }
#endif
    LSAE__NEW_FAIL(lsae__dalloc(&cm->params, cm->total, "model weights"));
    {
        cudaError_t e = cudaMemcpyAsync(cm->params, host_params, cm->total * sizeof(float), cudaMemcpyHostToDevice, cm->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(cm->stream);
        if (e != cudaSuccess) LSAE__NEW_FAIL(lsae__cu_fail(e, "uploading the model weights", __LINE__));
    }
#undef LSAE__NEW_FAIL
    cm->bf16_stale = 1;
    *out = cm;
    return LSAE_OK;
}

#define LSAE__LOCK(cm) std::lock_guard<std::mutex> lsae__guard((cm)->mu); \
    lsae__device_guard lsae__dev_guard; \
    LSAE__CU(cudaSetDevice((cm)->dev)); \
    if ((cm)->broken) return lsae__cu_msg(LSAE_CUDA_ERROR, "an earlier CUDA failure left this model unusable: free it and load it again")

/* a CUDA failure inside a model call leaves the model refusing work */
static lsae_result lsae__cm_check(lsae__cm *cm, lsae_result r)
{
    if (r == LSAE_CUDA_ERROR) cm->broken = 1;
    return r;
}

lsae_result lsae__cuda_model_download(void *cmv, float *host_params)
{
    lsae__cm *cm = (lsae__cm *)cmv;
    if (!cm || !host_params) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae__cuda_model_download: NULL argument");
    {
        LSAE__LOCK(cm);
        LSAE__CU(cudaMemcpyAsync(host_params, cm->params, cm->total * sizeof(float), cudaMemcpyDeviceToHost, cm->stream));
        LSAE__CU(cudaStreamSynchronize(cm->stream));
    }
    return LSAE_OK;
}

static const char *lsae__cu_tensor_names[4] = { "encoder.weight", "encoder.bias", "W_dec", "b_dec" };

static size_t lsae__cm_count(const lsae__cm *cm, int i)
{
    return (i == 0 || i == 2) ? cm->L * cm->d : i == 1 ? cm->L : cm->d;
}

lsae_result lsae__cuda_get_weights(void *cmv, float *W_enc, float *b_enc, float *W_dec, float *b_dec)
{
    lsae__cm *cm = (lsae__cm *)cmv;
    float *dst[4] = { W_enc, b_enc, W_dec, b_dec };
    int i;
    if (!cm) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_get_weights: model is NULL");
    {
        LSAE__LOCK(cm);
        for (i = 0; i < 4; ++i)
            if (dst[i]) LSAE__CU(cudaMemcpyAsync(dst[i], cm->params + cm->off[i], lsae__cm_count(cm, i) * sizeof(float), cudaMemcpyDeviceToHost, cm->stream));
        LSAE__CU(cudaStreamSynchronize(cm->stream));
    }
    return LSAE_OK;
}

lsae_result lsae__cuda_set_weights(void *cmv, const float *W_enc, const float *b_enc, const float *W_dec, const float *b_dec)
{
    lsae__cm *cm = (lsae__cm *)cmv;
    const float *src[4] = { W_enc, b_enc, W_dec, b_dec };
    size_t j;
    int i;
    if (!cm) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_set_weights: model is NULL");
    for (i = 0; i < 4; ++i) {
        if (!src[i]) continue;
        for (j = 0; j < lsae__cm_count(cm, i); ++j)
            if (!std::isfinite(src[i][j]))
                return lsae__cu_msg(LSAE_INVALID_ARGS, "%s[%zu] is %g: weights must be finite; nothing was changed",
                                    lsae__cu_tensor_names[i], j, (double)src[i][j]);
    }
    {
        LSAE__LOCK(cm);
        for (i = 0; i < 4; ++i)
            if (src[i]) LSAE__CU(cudaMemcpyAsync(cm->params + cm->off[i], src[i], lsae__cm_count(cm, i) * sizeof(float), cudaMemcpyHostToDevice, cm->stream));
        LSAE__CU(cudaStreamSynchronize(cm->stream));
        if (W_enc) cm->bf16_stale = 1;
    }
    return LSAE_OK;
}

lsae_result lsae__cuda_set_precision(void *cmv, lsae_precision p)
{
    lsae__cm *cm = (lsae__cm *)cmv;
    int prec;
    if (!cm) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_set_precision: model is NULL");
    if ((prec = lsae__resolve_precision(p)) < 0) return lsae__precision_error(p);
    {
        std::lock_guard<std::mutex> g(cm->mu);
        cm->precision = prec;
    }
    return LSAE_OK;
}

/* ----------------------------------------------------------- launchers */

/* pre [R, L] = xc [R, d] W_enc^T in the given precision. xbf: scratch of
   R x d bfloat16 for LSAE_PRECISION_BF16. */
static lsae_result lsae__encoder_product(lsae__cm *cm, int precision, float *pre, const float *xc, __nv_bfloat16 *xbf, size_t R)
{
    const float *W = cm->params + cm->off[LSAE__W_ENC];
    if (R == 0) return LSAE_OK;
#ifdef LSAE_CUDA_NO_CUBLAS
    (void)precision;
    (void)xbf;
    {
        dim3 grid((unsigned)((cm->L + LSAE__GT - 1) / LSAE__GT), (unsigned)((R + LSAE__GT - 1) / LSAE__GT));
        lsae__gemm_nt_kernel<<<grid, 256, 0, cm->stream>>>(pre, xc, W, (int)R, (int)cm->L, (int)cm->d);
        LSAE__LAUNCHED(gemm);
    }
#else
    {
        const float one = 1.0f, zero = 0.0f;
        /* column-major view: pre^T [L, R] = W_enc^T-as-stored (d x L, op T) times xc^T (d x R) */
        if (precision == LSAE_PRECISION_BF16) {
            if (!cm->W_enc_bf16) {
                lsae_result r = lsae__dalloc(&cm->W_enc_bf16, cm->L * cm->d, "bfloat16 copy of W_enc");
                if (r != LSAE_OK) return r;
                cm->bf16_stale = 1;
            }
            if (cm->bf16_stale) {
                lsae__to_bf16_kernel<<<lsae__grid(cm->L * cm->d, 256, 65535), 256, 0, cm->stream>>>(cm->W_enc_bf16, W, cm->L * cm->d);
                LSAE__LAUNCHED(to_bf16);
                cm->bf16_stale = 0;
            }
            lsae__to_bf16_kernel<<<lsae__grid(R * cm->d, 256, 65535), 256, 0, cm->stream>>>(xbf, xc, R * cm->d);
            LSAE__LAUNCHED(to_bf16);
            LSAE__BLAS(cublasGemmEx(cm->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)cm->L, (int)R, (int)cm->d, &one,
                                    cm->W_enc_bf16, CUDA_R_16BF, (int)cm->d, xbf, CUDA_R_16BF, (int)cm->d, &zero,
                                    pre, CUDA_R_32F, (int)cm->L, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        } else {
            LSAE__BLAS(cublasGemmEx(cm->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)cm->L, (int)R, (int)cm->d, &one,
                                    W, CUDA_R_32F, (int)cm->d, xc, CUDA_R_32F, (int)cm->d, &zero,
                                    pre, CUDA_R_32F, (int)cm->L,
                                    precision == LSAE_PRECISION_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
        }
    }
#endif
    return LSAE_OK;
}

/* per-row top-k of ReLU(pre + b_enc) into [R, ldo]; k from k_dev when given */
static lsae_result lsae__select(cudaStream_t s, float *ov, int32_t *oi, size_t ldo, const float *pre, const float *b_enc,
                              size_t R, size_t L, const unsigned char *mask, size_t k, const int *k_dev)
{
    size_t kcap = lsae__next_pow2((k_dev ? ldo : k) ? (k_dev ? ldo : k) : 1);
    if (kcap > LSAE__KMAX || ldo > (size_t)INT_MAX || L > (size_t)INT_MAX)
        return lsae__cu_msg(LSAE_UNSUPPORTED, "top-k of %zu exceeds the GPU limit of %d", k_dev ? ldo : k, LSAE__KMAX);
    size_t smem = kcap * sizeof(unsigned long long);
    /* with the row cache: keys padded to 16 bytes (see ucache), then L values */
    const size_t smem_cached = ((kcap + 1) & ~(size_t)1) * sizeof(unsigned long long) + L * sizeof(unsigned);
    int cache = 0, dev = 0, optin = 0;
    if (R == 0) return LSAE_OK;
    /* keep the row's values in shared memory when they fit beside the keys */
    if (smem_cached <= LSAE__TK_CACHE_MAX && cudaGetDevice(&dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
        smem_cached + 2048 <= (size_t)optin) {
        smem = smem_cached;
        cache = 1;
        LSAE__CU(cudaFuncSetAttribute(lsae__select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    }
    const int vec4 = L % 4 == 0 && ((uintptr_t)pre & 15) == 0 && ((uintptr_t)b_enc & 15) == 0;
    lsae__select_kernel<<<(unsigned)R, LSAE__TK, smem, s>>>(ov, oi, (int)ldo, pre, b_enc, (int)L, mask, (int)k, k_dev, (int)kcap, cache,
                                                          vec4);
    LSAE__LAUNCHED(select);
    return LSAE_OK;
}

/* the first non-finite float of a row, by its bits (no -ffast-math can remove it) */
static int lsae__row_finite(const float *row, size_t d)
{
    unsigned bad = 0;
    size_t j;
    for (j = 0; j < d; ++j) {
        uint32_t u;
        memcpy(&u, &row[j], 4);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return !bad;
}

/* --------------------------------------------------------- encode/decode */

static lsae_result lsae__encode_locked(lsae__cm *cm, const float *x, size_t rows, size_t k, float *acts, int32_t *idx)
{
    const size_t d = cm->d, L = cm->L;
    size_t R = LSAE__IO_ROWS, per = LSAE__PRE_BUDGET / (L * sizeof(float)), nchunks, c;
    lsae_result r;
    if (per < 1) per = 1;
    if (R > per) R = per;
    if (R > rows) R = rows;
    if ((r = lsae__io_reserve(cm, R, k, 1, cm->precision == LSAE_PRECISION_BF16)) != LSAE_OK) return r;
    nchunks = (rows + R - 1) / R;
    for (c = 0; c <= nchunks; ++c) {
        if (c < nchunks) {
            const int slot = (int)(c & 1);
            const size_t r0 = c * R, n = rows - r0 < R ? rows - r0 : R;
            size_t q;
            /* the slot's previous chunk (c - 2) is done and was read back at c - 1 */
            LSAE__CU(cudaEventSynchronize(cm->io_done[slot]));
            for (q = 0; q < n; ++q) {
                const float *row = x + (r0 + q) * d;
                if (!lsae__row_finite(row, d)) {
                    (void)cudaStreamSynchronize(cm->stream);
                    return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_encode: row %zu holds NaN or Inf; drop it before encoding", r0 + q);
                }
                memcpy(cm->io_hx[slot] + q * d, row, d * sizeof(float));
            }
            LSAE__CU(cudaMemcpyAsync(cm->io_x, cm->io_hx[slot], n * d * sizeof(float), cudaMemcpyHostToDevice, cm->stream));
            if (cm->poison) {
                LSAE__CU(cudaMemsetAsync(cm->io_pre, 0xff, n * L * sizeof(float), cm->stream));
                LSAE__CU(cudaMemsetAsync(cm->io_v, 0xff, n * k * sizeof(float), cm->stream));
                LSAE__CU(cudaMemsetAsync(cm->io_i, 0xff, n * k * sizeof(int32_t), cm->stream));
            }
            lsae__center_kernel<<<lsae__grid(n * d, 256, 65535), 256, 0, cm->stream>>>(cm->io_x, cm->io_x, cm->params + cm->off[LSAE__B_DEC], n * d, (int)d);
            LSAE__LAUNCHED(center);
            if ((r = lsae__encoder_product(cm, cm->precision, cm->io_pre, cm->io_x, cm->io_xbf, n)) != LSAE_OK) return r;
            if ((r = lsae__select(cm->stream, cm->io_v, cm->io_i, k, cm->io_pre, cm->params + cm->off[LSAE__B_ENC], n, L, NULL, k, NULL)) != LSAE_OK) return r;
            LSAE__CU(cudaMemcpyAsync(cm->io_hv[slot], cm->io_v, n * k * sizeof(float), cudaMemcpyDeviceToHost, cm->stream));
            LSAE__CU(cudaMemcpyAsync(cm->io_hi[slot], cm->io_i, n * k * sizeof(int32_t), cudaMemcpyDeviceToHost, cm->stream));
            LSAE__CU(cudaEventRecord(cm->io_done[slot], cm->stream));
        }
        if (c >= 1) {
            /* the previous chunk, while the GPU works on this one */
            const int slot = (int)((c - 1) & 1);
            const size_t r0 = (c - 1) * R, n = rows - r0 < R ? rows - r0 : R;
            LSAE__CU(cudaEventSynchronize(cm->io_done[slot]));
            memcpy(acts + r0 * k, cm->io_hv[slot], n * k * sizeof(float));
            memcpy(idx + r0 * k, cm->io_hi[slot], n * k * sizeof(int32_t));
        }
    }
    return LSAE_OK;
}

lsae_result lsae__cuda_encode(void *cmv, const float *x, size_t rows, size_t k, float *top_acts, int32_t *top_indices)
{
    lsae__cm *cm = (lsae__cm *)cmv;
    if (!cm) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_encode: model is NULL");
    if (k == 0) k = cm->k;
    if (k > cm->L) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_encode: k = %zu is larger than the number of latents %zu", k, cm->L);
    if (rows == 0) return LSAE_OK;
    if (!x || !top_acts || !top_indices) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_encode: x, top_acts and top_indices must not be NULL");
    if (k > LSAE__KMAX)
        return lsae__cu_msg(LSAE_UNSUPPORTED, "lsae_model_encode: k = %zu is over the GPU's top-k limit of %d; move the model to the CPU (lsae_model_to_device) for such k", k, LSAE__KMAX);
    {
        LSAE__LOCK(cm);
        return lsae__cm_check(cm, lsae__encode_locked(cm, x, rows, k, top_acts, top_indices));
    }
}

static lsae_result lsae__decode_locked(lsae__cm *cm, const float *acts, const int32_t *idx, size_t rows, size_t k, float *x_hat)
{
    const size_t d = cm->d;
    const size_t R = rows < LSAE__IO_ROWS ? rows : LSAE__IO_ROWS;
    size_t nchunks, c;
    lsae_result r;
    if ((r = lsae__io_reserve(cm, R, k, 0, 0)) != LSAE_OK) return r;
    nchunks = (rows + R - 1) / R;
    for (c = 0; c <= nchunks; ++c) {
        if (c < nchunks) {
            const int slot = (int)(c & 1);
            const size_t r0 = c * R, n = rows - r0 < R ? rows - r0 : R;
            LSAE__CU(cudaEventSynchronize(cm->io_done[slot]));
            memcpy(cm->io_hv[slot], acts + r0 * k, n * k * sizeof(float));
            memcpy(cm->io_hi[slot], idx + r0 * k, n * k * sizeof(int32_t));
            LSAE__CU(cudaMemcpyAsync(cm->io_v, cm->io_hv[slot], n * k * sizeof(float), cudaMemcpyHostToDevice, cm->stream));
            LSAE__CU(cudaMemcpyAsync(cm->io_i, cm->io_hi[slot], n * k * sizeof(int32_t), cudaMemcpyHostToDevice, cm->stream));
            if (cm->poison) LSAE__CU(cudaMemsetAsync(cm->io_x, 0xff, n * d * sizeof(float), cm->stream));
            lsae__decode_kernel<<<(unsigned)n, 256, 0, cm->stream>>>(cm->io_x, cm->io_v, cm->io_i, cm->params + cm->off[LSAE__W_DEC],
                                                                     cm->params + cm->off[LSAE__B_DEC], (int)k, (int)d);
            LSAE__LAUNCHED(decode);
            LSAE__CU(cudaMemcpyAsync(cm->io_hx[slot], cm->io_x, n * d * sizeof(float), cudaMemcpyDeviceToHost, cm->stream));
            LSAE__CU(cudaEventRecord(cm->io_done[slot], cm->stream));
        }
        if (c >= 1) {
            const int slot = (int)((c - 1) & 1);
            const size_t r0 = (c - 1) * R, n = rows - r0 < R ? rows - r0 : R;
            LSAE__CU(cudaEventSynchronize(cm->io_done[slot]));
            memcpy(x_hat + r0 * d, cm->io_hx[slot], n * d * sizeof(float));
        }
    }
    return LSAE_OK;
}

lsae_result lsae__cuda_decode(void *cmv, const float *acts, const int32_t *idx, size_t rows, size_t k, float *x_hat)
{
    lsae__cm *cm = (lsae__cm *)cmv;
    size_t i, n;
    if (!cm) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_decode: model is NULL");
    if (rows == 0) return LSAE_OK;
    if (!acts || !idx || !x_hat) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_decode: acts, indices and x_hat must not be NULL");
    if (!lsae__cu_mul(rows, k, &n) || k > (size_t)INT_MAX) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_decode: %zu rows x %zu slots overflow", rows, k);
    for (i = 0; i < n; ++i)
        if (idx[i] < 0 || (size_t)idx[i] >= cm->L)
            return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_model_decode: row %zu, slot %zu has latent index %ld outside [0, %zu)",
                                i / k, i % k, (long)idx[i], cm->L);
    {
        LSAE__LOCK(cm);
        return lsae__cm_check(cm, lsae__decode_locked(cm, acts, idx, rows, k, x_hat));
    }
}

/* =============================================================== trainer */

struct lsae__cuda_trainer {
    lsae__cm *cm;
    lsae_config cfg;            /* validated by latentsae.h; the model's shape */
    size_t d, L, k;
    size_t K;                   /* latents selected per row: k, or min(4k, L) with multi_topk */
    size_t KA;                  /* AuxK slots per row: min(d/2, L), 0 when auxk_alpha is 0 */
    size_t E;                   /* K + KA: entries per row */
    int precision;
    double lr_base;
    /* The counters live in latentsae.h's struct lsae_trainer (passed at
       creation), so the header's own code (checkpoints) reads them as for a
       CPU trainer. */
    uint64_t *step, *micro, *rows_in_window;
    int *b_dec_initialized;
    int *poisoned;              /* 1 once a NaN/Inf was seen (the header's meaning) */
    int reason;                 /* LSAE__POISON_*: which one, for the message */
    int broken;
    /* state, laid out as the model's slab */
    float *grads, *adam_m, *adam_v;
    unsigned long long *since;  /* [L] rows since the latent was last in a top-k */
    unsigned char *did_fire;    /* [L] fired in this window */
    unsigned char *dead;        /* [L] dead at the start of the window */
    lsae__dstat *dst;           /* device status and statistics */
    lsae__dstat *hst;           /* pinned copy of it, queued at the end of each call */
    cudaEvent_t st_ev;
    int st_pending;
    double *norm_partial;       /* [nchunks] */
    size_t nchunks;
    double *gm_guess, *gm_prev, *tv_dim; /* [d] */
    int *lat_start;             /* [L + 1] */
    float *lat_dsum;            /* [L] this batch's sum of dpre per latent */
    float *din_part;            /* [LSAE__DIN_CHUNKS, d] */
    /* per batch, grown to the largest batch seen */
    size_t cap, pre_rows;
    float *hx[2];               /* pinned [cap, d]: batches copied here in turn */
    cudaEvent_t hx_free[2];     /* the slot's upload is done */
    int hx_next;
    float *x, *xc;              /* [cap, d] the finite rows, and x - b_dec */
    float *pre;                 /* [pre_rows, L] */
    __nv_bfloat16 *xbf;         /* [pre_rows, d] */
    float *topv, *auxv;         /* [cap, K], [cap, max(KA, 1)] */
    int32_t *topi, *auxi;
    float *G;                   /* [cap, 3, d] */
    float *dpre;                /* [cap, E] */
    double *row_sse;             /* [cap, 3] */
    double *gm_w;               /* [cap] */
    unsigned *keys_in, *keys_out; /* [cap E] */
    int *ents_in, *ents_out;
    void *sort_tmp;
    size_t sort_tmp_bytes;
    int end_bit;                /* bits of the largest key (L) */
    /* Data-parallel (lsae__cuda_trainer_set_comm, size > 1 only: with one
       rank nothing below is used and the step is the one-GPU step, bit for
       bit). The exchanges are the CPU trainer's, at the same points. */
    int has_comm;
    int comm_failed;            /* a sum across ranks failed: the ranks may disagree, refuse work */
    lsae_comm comm;
    double *hsum;               /* pinned [d + 2]: a per-batch sum on its way to and from sum_f64 */
    double *dsum;               /* [d + 2] on the device: the same sums there */
    float *hgrad;               /* pinned [total]: the gradient for sum_f32 (no sum_f32_device) */
    unsigned char *hfire8;      /* pinned [L]: the fired flags for sum_f32 */
    float *hfire;               /* host [L] */
    float *dfire;               /* [L] on the device, for sum_f32_device */
    size_t Bg, dropped_g;       /* this batch's rows and dropped rows over every rank */
};
typedef struct lsae__cuda_trainer lsae__ct;

static void lsae__ct_free_batch(lsae__ct *t)
{
    int i;
    for (i = 0; i < 2; ++i) lsae__hfree(&t->hx[i]);
    lsae__dfree(&t->x); lsae__dfree(&t->xc); lsae__dfree(&t->pre); lsae__dfree(&t->xbf);
    lsae__dfree(&t->topv); lsae__dfree(&t->auxv); lsae__dfree(&t->topi); lsae__dfree(&t->auxi);
    lsae__dfree(&t->G); lsae__dfree(&t->dpre); lsae__dfree(&t->row_sse); lsae__dfree(&t->gm_w);
    lsae__dfree(&t->keys_in); lsae__dfree(&t->keys_out); lsae__dfree(&t->ents_in); lsae__dfree(&t->ents_out);
    lsae__dfree(&t->sort_tmp);
    t->sort_tmp_bytes = 0;
    t->cap = t->pre_rows = 0;
}

static void lsae__ct_destroy(lsae__ct *t)
{
    int i;
    if (!t) return;
    lsae__device_guard dg;
    if (t->cm && cudaSetDevice(t->cm->dev) == cudaSuccess && t->cm->stream) (void)cudaStreamSynchronize(t->cm->stream);
    lsae__ct_free_batch(t);
    lsae__dfree(&t->grads); lsae__dfree(&t->adam_m); lsae__dfree(&t->adam_v);
    lsae__dfree(&t->since); lsae__dfree(&t->did_fire); lsae__dfree(&t->dead);
    lsae__dfree(&t->dst); lsae__hfree(&t->hst);
    lsae__dfree(&t->norm_partial); lsae__dfree(&t->gm_guess); lsae__dfree(&t->gm_prev); lsae__dfree(&t->tv_dim);
    lsae__dfree(&t->lat_start);
    lsae__dfree(&t->lat_dsum);
    lsae__dfree(&t->din_part);
    lsae__hfree(&t->hsum); lsae__dfree(&t->dsum); lsae__hfree(&t->hgrad); lsae__hfree(&t->hfire8); lsae__dfree(&t->dfire);
    delete[] t->hfire;
    t->hfire = NULL;
    if (t->st_ev) (void)cudaEventDestroy(t->st_ev);
    for (i = 0; i < 2; ++i)
        if (t->hx_free[i]) (void)cudaEventDestroy(t->hx_free[i]);
    (void)cudaGetLastError();
    delete t;
}

/* the dead mask, n_dead, k_aux and scale from since_fired (at creation, set_state) */
static lsae_result lsae__ct_recount_dead(lsae__ct *t)
{
    cudaStream_t s = t->cm->stream;
    lsae__dead_reset_kernel<<<1, 1, 0, s>>>(t->dst, 0);
    LSAE__LAUNCHED(dead_reset);
    lsae__dead_count_kernel<<<lsae__grid(t->L, 256, 4096), 256, 0, s>>>(t->since, t->did_fire, t->dead, (int)t->L, 0ull,
                                                                         (unsigned long long)t->cfg.dead_feature_threshold, t->dst, 0, 0);
    LSAE__LAUNCHED(dead_count);
    lsae__dead_finish_kernel<<<1, 1, 0, s>>>(t->dst, (int)(t->d / 2), 0);
    LSAE__LAUNCHED(dead_finish);
    return LSAE_OK;
}

lsae_result lsae__cuda_trainer_new(void **out, void *cmv, const lsae_config *c, uint64_t *step, uint64_t *micro,
                                   uint64_t *rows_in_window, int *b_dec_initialized, int *poisoned)
{
    lsae__cm *cm = (lsae__cm *)cmv;
    lsae__ct *t;
    lsae_result r;
    int prec, i;
    size_t K, KA;
    if (!out || !cm || !c || !step || !micro || !rows_in_window || !b_dec_initialized || !poisoned)
        return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_create: NULL argument");
    *out = NULL;
    if ((prec = lsae__resolve_precision(c->precision)) < 0) return lsae__precision_error(c->precision);
    K = c->multi_topk ? (4 * cm->k < cm->L ? 4 * cm->k : cm->L) : cm->k;
    KA = c->auxk_alpha > 0.0 ? (cm->d / 2 < cm->L ? cm->d / 2 : cm->L) : 0;
    if (K > LSAE__KMAX)
        return lsae__cu_msg(LSAE_UNSUPPORTED, "the GPU trainer selects at most %d latents a row; k = %zu%s needs %zu. Train on the CPU or lower k",
                            LSAE__KMAX, cm->k, c->multi_topk ? " with multi_topk (4k)" : "", K);
    if (KA > LSAE__KMAX)
        return lsae__cu_msg(LSAE_UNSUPPORTED, "AuxK selects up to d/2 = %zu latents a row, over the GPU limit of %d; set auxk_alpha = 0 or train on the CPU",
                            KA, LSAE__KMAX);
    t = new (std::nothrow) lsae__ct();
    if (!t) return lsae__cu_msg(LSAE_OUT_OF_MEMORY, "out of memory allocating the CUDA trainer state");
    t->cm = cm;
    t->cfg = *c;
    t->d = cm->d;
    t->L = cm->L;
    t->k = cm->k;
    t->K = K;
    t->KA = KA;
    t->E = t->K + t->KA;
    t->precision = prec;
    t->lr_base = lsae_config_lr(c);
    t->step = step;
    t->micro = micro;
    t->rows_in_window = rows_in_window;
    t->b_dec_initialized = b_dec_initialized;
    t->poisoned = poisoned;
    *step = *micro = *rows_in_window = 0;
    *poisoned = 0;
    *b_dec_initialized = !c->init_b_dec;
    t->nchunks = (cm->total + LSAE__NORM_CHUNK - 1) / LSAE__NORM_CHUNK;
    for (t->end_bit = 1; ((size_t)1 << t->end_bit) <= cm->L; ++t->end_bit) {}
    {
        std::lock_guard<std::mutex> g(cm->mu);
        lsae__device_guard dg;
        cudaError_t e;
#define LSAE__TNEW(expr) do { if ((r = (expr)) != LSAE_OK) goto fail; } while (0)
        if ((e = cudaSetDevice(cm->dev)) != cudaSuccess) { r = lsae__cu_fail(e, "cudaSetDevice", __LINE__); goto fail; }
        if (cm->broken) { r = lsae__cu_msg(LSAE_CUDA_ERROR, "an earlier CUDA failure left this model unusable: free it and load it again"); goto fail; }
        LSAE__TNEW(lsae__dalloc(&t->grads, cm->total, "gradients"));
        LSAE__TNEW(lsae__dalloc(&t->adam_m, cm->total, "Adam first moments"));
        LSAE__TNEW(lsae__dalloc(&t->adam_v, cm->total, "Adam second moments"));
        LSAE__TNEW(lsae__dalloc(&t->since, t->L, "dead-latent counters"));
        LSAE__TNEW(lsae__dalloc(&t->did_fire, t->L, "fired flags"));
        LSAE__TNEW(lsae__dalloc(&t->dead, t->L, "dead flags"));
        LSAE__TNEW(lsae__dalloc(&t->dst, 1, "trainer status"));
        LSAE__TNEW(lsae__halloc(&t->hst, 1, "trainer status"));
        LSAE__TNEW(lsae__dalloc(&t->norm_partial, t->nchunks, "norm partial sums"));
        LSAE__TNEW(lsae__dalloc(&t->gm_guess, t->d, "geometric median"));
        LSAE__TNEW(lsae__dalloc(&t->gm_prev, t->d, "geometric median"));
        LSAE__TNEW(lsae__dalloc(&t->tv_dim, t->d, "variance scratch"));
        LSAE__TNEW(lsae__dalloc(&t->lat_start, t->L + 1, "latent offsets"));
        LSAE__TNEW(lsae__dalloc(&t->lat_dsum, t->L, "latent gradient sums"));
        LSAE__TNEW(lsae__dalloc(&t->din_part, (size_t)LSAE__DIN_CHUNKS * t->d, "input gradient sums"));
        if ((e = cudaEventCreateWithFlags(&t->st_ev, cudaEventDisableTiming)) != cudaSuccess) { t->st_ev = NULL; r = lsae__cu_fail(e, "cudaEventCreate", __LINE__); goto fail; }
        for (i = 0; i < 2; ++i)
            if ((e = cudaEventCreateWithFlags(&t->hx_free[i], cudaEventDisableTiming)) != cudaSuccess) { t->hx_free[i] = NULL; r = lsae__cu_fail(e, "cudaEventCreate", __LINE__); goto fail; }
        if ((e = cudaMemsetAsync(t->grads, 0, cm->total * sizeof(float), cm->stream)) != cudaSuccess ||
            (e = cudaMemsetAsync(t->adam_m, 0, cm->total * sizeof(float), cm->stream)) != cudaSuccess ||
            (e = cudaMemsetAsync(t->adam_v, 0, cm->total * sizeof(float), cm->stream)) != cudaSuccess ||
            (e = cudaMemsetAsync(t->since, 0, t->L * sizeof(unsigned long long), cm->stream)) != cudaSuccess ||
            (e = cudaMemsetAsync(t->did_fire, 0, t->L, cm->stream)) != cudaSuccess ||
            (e = cudaMemsetAsync(t->dst, 0, sizeof(lsae__dstat), cm->stream)) != cudaSuccess) { r = lsae__cu_fail(e, "cudaMemsetAsync", __LINE__); goto fail; }
        LSAE__TNEW(lsae__ct_recount_dead(t));
        if ((e = cudaStreamSynchronize(cm->stream)) != cudaSuccess) { r = lsae__cu_fail(e, "cudaStreamSynchronize", __LINE__); goto fail; }
#undef LSAE__TNEW
        memset(t->hst, 0, sizeof *t->hst);
        cm->trainers++;
    }
    *out = t;
    return LSAE_OK;
fail:
    {
        std::lock_guard<std::mutex> g(cm->mu);
        if (r == LSAE_CUDA_ERROR) cm->broken = 1;
        lsae__ct_destroy(t);
    }
    return r;
}

void lsae__cuda_trainer_free(void *ctv)
{
    lsae__ct *t = (lsae__ct *)ctv;
    lsae__cm *cm;
    if (!t) return;
    cm = t->cm;
    {
        std::lock_guard<std::mutex> g(cm->mu);
        lsae__ct_destroy(t);
        cm->trainers--;
    }
}

/* Workspace for batches of up to rows rows. */
static lsae_result lsae__ct_reserve(lsae__ct *t, size_t rows)
{
    const size_t d = t->d, L = t->L;
    size_t n, per;
    lsae_result r;
    int i;
    if (rows <= t->cap) return LSAE_OK;
    LSAE__CU(cudaStreamSynchronize(t->cm->stream));
    lsae__ct_free_batch(t);
    if (!lsae__cu_mul(rows, t->E, &n) || n > (size_t)INT_MAX || rows > (size_t)INT_MAX)
        return lsae__cu_msg(LSAE_INVALID_ARGS, "batch of %zu rows x %zu selected latents is too large for one step; use fewer rows", rows, t->E);
    if (!lsae__cu_mul(rows, 3 * d, &n))
        return lsae__cu_msg(LSAE_OUT_OF_MEMORY, "batch of %zu rows overflows size_t", rows);
    per = LSAE__PRE_BUDGET / (L * sizeof(float));
    if (per < 1) per = 1;
    if (per > 32768) per = 32768; /* gridDim.y of our GEMM kernel, and enough for any product */
    t->pre_rows = rows < per ? rows : per;
    for (i = 0; i < 2; ++i)
        if ((r = lsae__halloc(&t->hx[i], rows * d, "batch staging")) != LSAE_OK) goto fail;
    if ((r = lsae__dalloc(&t->x, rows * d, "batch rows")) != LSAE_OK ||
        (r = lsae__dalloc(&t->xc, rows * d, "centred batch")) != LSAE_OK ||
        (r = lsae__dalloc(&t->pre, t->pre_rows * L, "pre-activations")) != LSAE_OK ||
        (r = lsae__dalloc(&t->topv, rows * t->K, "top-k activations")) != LSAE_OK ||
        (r = lsae__dalloc(&t->topi, rows * t->K, "top-k indices")) != LSAE_OK ||
        (r = lsae__dalloc(&t->auxv, rows * (t->KA ? t->KA : 1), "AuxK activations")) != LSAE_OK ||
        (r = lsae__dalloc(&t->auxi, rows * (t->KA ? t->KA : 1), "AuxK indices")) != LSAE_OK ||
        (r = lsae__dalloc(&t->G, rows * 3 * d, "output gradients")) != LSAE_OK ||
        (r = lsae__dalloc(&t->dpre, rows * t->E, "latent gradients")) != LSAE_OK ||
        (r = lsae__dalloc(&t->row_sse, rows * 3, "row sums")) != LSAE_OK ||
        (r = lsae__dalloc(&t->gm_w, rows, "median weights")) != LSAE_OK ||
        (r = lsae__dalloc(&t->keys_in, rows * t->E, "entry keys")) != LSAE_OK ||
        (r = lsae__dalloc(&t->keys_out, rows * t->E, "entry keys")) != LSAE_OK ||
        (r = lsae__dalloc(&t->ents_in, rows * t->E, "entries")) != LSAE_OK ||
        (r = lsae__dalloc(&t->ents_out, rows * t->E, "entries")) != LSAE_OK) goto fail;
    if (t->precision == LSAE_PRECISION_BF16 && (r = lsae__dalloc(&t->xbf, t->pre_rows * d, "bfloat16 rows")) != LSAE_OK) goto fail;
    {
        size_t bytes = 0;
        cudaError_t e = cub::DeviceRadixSort::SortPairs(NULL, bytes, t->keys_in, t->keys_out, t->ents_in, t->ents_out,
                                                        (int)(rows * t->E), 0, t->end_bit, t->cm->stream);
        if (e != cudaSuccess) { r = lsae__cu_fail(e, "cub::DeviceRadixSort::SortPairs (size query)", __LINE__); goto fail; }
        if ((r = lsae__dalloc((unsigned char **)&t->sort_tmp, bytes, "sort scratch")) != LSAE_OK) goto fail;
        t->sort_tmp_bytes = bytes;
    }
    t->cap = rows;
    return LSAE_OK;
fail:
    lsae__ct_free_batch(t);
    return r;
}

/* ------------------------------------------------------------------------
   One training step on the GPU: the stages of latentsae.h's trainer, with
   its labels (F1-F7 forward and loss, B1-B6 backward, U1-U4 optimizer;
   docs/math.md derives them), in the same order. Each stage is a host
   function named as the CPU's that queues its kernels. Where one kernel
   does the work of two stages its label names both: F5, F6 and B1 are one
   pass over each row's decode; B3's dW_dec is formed with B4 in one pass
   over each latent's entries; U1 (b_dec through the encoder input) runs
   per batch, with B5, since W_enc is read anyway.
   ------------------------------------------------------------------------ */

/* F1, the copy: the finite rows of x into dst; *all_equal tells whether
   every kept row equals the first numerically (then the total variance is
   exactly 0: the mean of equal floats is that float, in double, so F2's
   refusal can be made here, before any device work).

   With stats every step the trainer waits for the GPU, so this copy (a
   4096 x 768 batch is 12.6 MB read, checked and written to pinned memory)
   is not hidden behind the previous step: one thread took ~2 ms of a
   ~5 ms step on an H100 machine. With OpenMP (nvcc -Xcompiler -fopenmp)
   each thread copies the finite rows of its own range of rows to the
   front of the same range of dst; the ranges are then closed up in order,
   which moves memory only when rows were dropped. The kept rows and their
   order are the same for any number of threads. */
#define LSAE__STAGE_MAXT 64
static size_t lsae__copy_finite_rows(float *dst, const float *x, size_t rows, size_t d, int *all_equal)
{
    size_t kept[LSAE__STAGE_MAXT], B, r, j;
    int nt = 1, t, equal = 1;
#ifdef _OPENMP
    if (rows * d >= ((size_t)1 << 16) && !omp_in_parallel()) {
        nt = omp_get_max_threads();
        if (nt > LSAE__STAGE_MAXT) nt = LSAE__STAGE_MAXT;
        if ((size_t)nt > rows) nt = (int)rows;
    }
#pragma omp parallel for num_threads(nt) schedule(static, 1)
#endif
    for (t = 0; t < nt; ++t) {
        const size_t r0 = rows * (size_t)t / (size_t)nt, r1 = rows * (size_t)(t + 1) / (size_t)nt;
        size_t n = 0, q;
        for (q = r0; q < r1; ++q) {
            const float *row = x + q * d;
            if (!lsae__row_finite(row, d)) continue;
            memcpy(dst + (r0 + n) * d, row, d * sizeof(float));
            ++n;
        }
        kept[t] = n;
    }
    B = kept[0];
    for (t = 1; t < nt; ++t) {
        const size_t r0 = rows * (size_t)t / (size_t)nt;
        if (kept[t] && r0 != B) memmove(dst + B * d, dst + r0 * d, kept[t] * d * sizeof(float));
        B += kept[t];
    }
    for (r = 1; r < B && equal; ++r)
        for (j = 0; j < d; ++j)
            if (dst[r * d + j] != dst[j]) { equal = 0; break; }
    *all_equal = equal;
    return B;
}

/* F1. x [B, d] <- the finite rows, copied on the host into one of two
   pinned buffers (used in turn, so the next batch is copied while this one
   is on the GPU), then uploaded. Fewer than 2 rows, or all rows equal (TV
   = 0, F2's refusal), are refused before any device work. */
static lsae_result lsae__keep_finite_rows(lsae__ct *t, const float *x, size_t rows, size_t *B_out, size_t *dropped_out)
{
    cudaStream_t s = t->cm->stream;
    const size_t d = t->d;
    const int slot = t->hx_next;
    int all_equal;
    size_t B;
    LSAE__CU(cudaEventSynchronize(t->hx_free[slot]));
    B = lsae__copy_finite_rows(t->hx[slot], x, rows, d, &all_equal);
    *B_out = B;
    *dropped_out = rows - B;
    /* data-parallel: a rank may hold fewer than 2 rows (or none), and its
       rows may all be equal while the global batch's are not: the global
       counts and TV decide, in F2, on every rank alike */
    if (t->has_comm) {
        if (B == 0) return LSAE_OK;
    } else if (B < 2)
        return lsae__cu_msg(LSAE_BAD_BATCH, "batch has %zu finite rows (%zu dropped for NaN/Inf): fvu needs at least 2 rows to have a variance", B, rows - B);
    else if (all_equal)
        return lsae__cu_msg(LSAE_BAD_BATCH, "batch's total variance is 0 (all %zu rows equal?): fvu is undefined, batch refused", B);
    LSAE__CU(cudaMemcpyAsync(t->x, t->hx[slot], B * d * sizeof(float), cudaMemcpyHostToDevice, s));
    LSAE__CU(cudaEventRecord(t->hx_free[slot], s));
    t->hx_next = slot ^ 1;
    return LSAE_OK;
}

/* A test aid (LSAE_CUDA_POISON): every per-batch workspace is filled with
   NaN before the step, so a stage that reads what no stage wrote shows. */
static lsae_result lsae__poison_workspace(lsae__ct *t, size_t B)
{
    cudaStream_t s = t->cm->stream;
    const size_t d = t->d, L = t->L, K = t->K, KA = t->KA, E = t->E;
    LSAE__CU(cudaMemsetAsync(t->xc, 0xff, B * d * sizeof(float), s));
    LSAE__CU(cudaMemsetAsync(t->pre, 0xff, t->pre_rows * L * sizeof(float), s));
    LSAE__CU(cudaMemsetAsync(t->topv, 0xff, B * K * sizeof(float), s));
    LSAE__CU(cudaMemsetAsync(t->topi, 0xff, B * K * sizeof(int32_t), s));
    LSAE__CU(cudaMemsetAsync(t->G, 0xff, B * 3 * d * sizeof(float), s));
    LSAE__CU(cudaMemsetAsync(t->lat_dsum, 0xff, L * sizeof(float), s));
    LSAE__CU(cudaMemsetAsync(t->din_part, 0xff, (size_t)LSAE__DIN_CHUNKS * d * sizeof(float), s));
    LSAE__CU(cudaMemsetAsync(t->dpre, 0xff, B * E * sizeof(float), s));
    LSAE__CU(cudaMemsetAsync(t->row_sse, 0xff, B * 3 * sizeof(double), s));
    LSAE__CU(cudaMemsetAsync(t->keys_out, 0xff, B * E * sizeof(unsigned), s));
    LSAE__CU(cudaMemsetAsync(t->lat_start, 0xff, (L + 1) * sizeof(int), s));
    if (KA) {
        LSAE__CU(cudaMemsetAsync(t->auxv, 0xff, B * KA * sizeof(float), s));
        LSAE__CU(cudaMemsetAsync(t->auxi, 0xff, B * KA * sizeof(int32_t), s));
    }
    return LSAE_OK;
}

/* ------------------------------------------------ data-parallel exchanges

   With comm set (size > 1) the trainer makes the same sums across ranks as
   the CPU trainer, at the same points and with the same meaning (latentsae.h:
   lsae__total_variance_comm, lsae__init_b_dec, lsae__loss,
   lsae__comm_window): each rank's part over its own rows comes from the
   device to pinned host memory, lsae_comm adds the ranks' parts in rank
   order, and the sums go back to the device. The per-batch sums are d + 2
   doubles and fewer; the gradient is summed once per optimizer step, on the
   device when the comm has sum_f32_device (NCCL). Every rank makes the same
   calls in the same order whatever its rows (an empty slice sends zeros),
   so no rank waits for another that skipped a sum. The host waits for the
   device at each exchange: a data-parallel step is not queued ahead. */

static lsae_result lsae__ct_comm_fail(lsae__ct *t, lsae_result r, const char *what)
{
    t->comm_failed = 1;
    return lsae__cu_msg(r == LSAE_OK ? LSAE_ERROR : r, "summing %s across %d ranks failed (%s); the ranks may disagree now: restart from the last checkpoint",
                        what, t->comm.size, lsae_result_string(r));
}

/* hsum[0..n) <- dev[0..n), waited for */
static lsae_result lsae__ct_down(lsae__ct *t, const double *dev, size_t n)
{
    LSAE__CU(cudaMemcpyAsync(t->hsum, dev, n * sizeof(double), cudaMemcpyDeviceToHost, t->cm->stream));
    LSAE__CU(cudaStreamSynchronize(t->cm->stream));
    return LSAE_OK;
}

/* dev[0..n) <- hsum[0..n), waited for: the host writes hsum again soon */
static lsae_result lsae__ct_up(lsae__ct *t, double *dev, size_t n)
{
    LSAE__CU(cudaMemcpyAsync(dev, t->hsum, n * sizeof(double), cudaMemcpyHostToDevice, t->cm->stream));
    LSAE__CU(cudaStreamSynchronize(t->cm->stream));
    return LSAE_OK;
}

/* hsum[0..n) <- the sum over ranks (rank order, the same bits everywhere) */
static lsae_result lsae__ct_sum64(lsae__ct *t, size_t n, const char *what)
{
    lsae_result r = t->comm.sum_f64(t->comm.ctx, t->hsum, n);
    return r == LSAE_OK ? LSAE_OK : lsae__ct_comm_fail(t, r, what);
}

/* F2 over the ranks, as the CPU's lsae__total_variance_comm:
      pass 1: s_j = sum over every rank's rows of x[b, j], with the row and
              dropped-row counts: one sum, mean_j = s_j / B_global
      pass 2: tv_j = sum_b (x[b, j] - mean_j)^2 over this rank's rows, then
              summed across ranks; TV = sum_j tv_j in order
   The global batch decides the refusals (fewer than 2 rows, TV = 0), so
   every rank refuses the same batch. B1's coefficients then come from the
   global TV, by the one-GPU finish kernel. */
static lsae_result lsae__total_variance_comm(lsae__ct *t, size_t B, size_t dropped)
{
    cudaStream_t s = t->cm->stream;
    const size_t d = t->d;
    const double w = 1.0 / (double)t->cfg.grad_acc_steps;
    const unsigned gd = (unsigned)((d + 31) / 32);
    double TV = 0.0;
    size_t j;
    lsae_result r;
    if (B) {
        lsae__col_sums_kernel<<<gd, dim3(32, 32), 0, s>>>(t->dsum, t->x, (int)B, (int)d);
        LSAE__LAUNCHED(col_sums);
        if ((r = lsae__ct_down(t, t->dsum, d)) != LSAE_OK) return r;
    } else
        for (j = 0; j < d; ++j) t->hsum[j] = 0.0;
    t->hsum[d] = (double)B;
    t->hsum[d + 1] = (double)dropped;
    if ((r = lsae__ct_sum64(t, d + 2, "the batch's column sums")) != LSAE_OK) return r;
    t->Bg = (size_t)t->hsum[d];
    t->dropped_g = (size_t)t->hsum[d + 1];
    if (t->Bg < 2)
        return lsae__cu_msg(LSAE_BAD_BATCH, "batch has %zu finite rows over %d ranks (%zu dropped for NaN/Inf): fvu needs at least 2 rows to have a variance",
                            t->Bg, t->comm.size, t->dropped_g);
    for (j = 0; j < d; ++j) t->hsum[j] = t->hsum[j] / (double)t->Bg;
    if (B) {
        if ((r = lsae__ct_up(t, t->dsum, d)) != LSAE_OK) return r;
        lsae__col_sqdev_kernel<<<gd, dim3(32, 32), 0, s>>>(t->tv_dim, t->x, t->dsum, (int)B, (int)d);
        LSAE__LAUNCHED(col_sqdev);
        if ((r = lsae__ct_down(t, t->tv_dim, d)) != LSAE_OK) return r;
    } else
        for (j = 0; j < d; ++j) t->hsum[j] = 0.0;
    if ((r = lsae__ct_sum64(t, d, "the batch's variance")) != LSAE_OK) return r;
    for (j = 0; j < d; ++j) TV += t->hsum[j];
    if (!(TV > 0.0) || !std::isfinite(TV))
        return lsae__cu_msg(LSAE_BAD_BATCH, "batch's total variance is %g (all %zu rows equal?): fvu is undefined, batch refused", TV, t->Bg);
    /* the summed tv_dim to the device: the finish kernel adds it in the
       same order, so the device's TV is the one just checked */
    if ((r = lsae__ct_up(t, t->tv_dim, d)) != LSAE_OK) return r;
    lsae__total_variance_finish_kernel<<<1, 1, 0, s>>>(t->dst, t->tv_dim, (int)d, w, t->cfg.auxk_alpha, t->K > t->k, t->KA > 0);
    LSAE__LAUNCHED(total_variance_finish);
    return LSAE_OK;
}

/* F3 over the ranks, as the CPU's lsae__init_b_dec with comm: the mean and
   each Weiszfeld step's sums (sum_b w_b x_b and sum_b w_b) over every rank's
   rows, one fixed-order sum each; the guess, the step and the stopping test
   on the host in double, the same numbers on every rank. The first batch
   of a run only. */
static lsae_result lsae__init_b_dec_comm(lsae__ct *t, size_t B)
{
    cudaStream_t s = t->cm->stream;
    const size_t d = t->d;
    const unsigned gd = lsae__grid(d + 1, 256, 1u << 30);
    double *guess, *prev;
    lsae_result r = LSAE_OK;
    size_t j;
    int it;
    guess = new (std::nothrow) double[2 * d];
    if (!guess) return lsae__cu_msg(LSAE_OUT_OF_MEMORY, "out of memory for the geometric median");
    prev = guess + d;
#define LSAE__GM(expr) do { if ((r = (expr)) != LSAE_OK) goto done; } while (0)
#define LSAE__GMC(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { r = lsae__cu_fail(e_, #call, __LINE__); goto done; } } while (0)
    if (B) {
        lsae__col_sums_kernel<<<(unsigned)((d + 31) / 32), dim3(32, 32), 0, s>>>(t->dsum, t->x, (int)B, (int)d);
        LSAE__GMC(cudaGetLastError());
        LSAE__GM(lsae__ct_down(t, t->dsum, d));
    } else
        for (j = 0; j < d; ++j) t->hsum[j] = 0.0;
    LSAE__GM(lsae__ct_sum64(t, d, "the geometric median's mean"));
    for (j = 0; j < d; ++j) guess[j] = t->hsum[j] / (double)t->Bg;
    /* lsae__gm_weights_kernel skips its work once gm_done is set */
    LSAE__GMC(cudaMemsetAsync(&t->dst->gm_done, 0, sizeof(int), s));
    for (it = 0; it < 100; ++it) {
        double moved = 0.0;
        memcpy(prev, guess, d * sizeof(double));
        if (B) {
            memcpy(t->hsum, guess, d * sizeof(double));
            LSAE__GM(lsae__ct_up(t, t->gm_guess, d));
            lsae__gm_weights_kernel<<<(unsigned)((B + 7) / 8), 256, 0, s>>>(t->gm_w, t->gm_guess, t->x, (int)B, (int)d, t->dst);
            LSAE__GMC(cudaGetLastError());
            lsae__gm_sums_kernel<<<gd, 256, 0, s>>>(t->dsum, t->gm_w, t->x, (int)B, (int)d);
            LSAE__GMC(cudaGetLastError());
            LSAE__GM(lsae__ct_down(t, t->dsum, d + 1));
        } else
            for (j = 0; j <= d; ++j) t->hsum[j] = 0.0;
        LSAE__GM(lsae__ct_sum64(t, d + 1, "the geometric median's step"));
        for (j = 0; j < d; ++j) guess[j] = t->hsum[j] / t->hsum[d];
        for (j = 0; j < d; ++j) moved += (guess[j] - prev[j]) * (guess[j] - prev[j]);
        if (std::sqrt(moved) < 1e-5) break;
    }
    memcpy(t->hsum, guess, d * sizeof(double));
    LSAE__GM(lsae__ct_up(t, t->gm_guess, d));
    lsae__gm_finish_kernel<<<lsae__grid(d, 256, 1u << 30), 256, 0, s>>>(t->cm->params + t->cm->off[LSAE__B_DEC], t->gm_guess, (int)d, t->dst);
    LSAE__GMC(cudaGetLastError());
    *t->b_dec_initialized = 1;
#undef LSAE__GM
#undef LSAE__GMC
done:
    delete[] guess;
    return r;
}

/* F7 over the ranks: this rank's sums of the row terms, summed across the
   ranks (the CPU's lsae__loss with comm), then the loss from the global
   sums and TV; a non-finite loss poisons every rank alike. */
static lsae_result lsae__loss_comm(lsae__ct *t, size_t B)
{
    cudaStream_t s = t->cm->stream;
    lsae_result r;
    if (B) {
        lsae__loss_sums_kernel<<<1, 1024, 0, s>>>(t->dsum, t->row_sse, (int)B);
        LSAE__LAUNCHED(loss_sums);
        if ((r = lsae__ct_down(t, t->dsum, 3)) != LSAE_OK) return r;
    } else
        t->hsum[0] = t->hsum[1] = t->hsum[2] = 0.0;
    if ((r = lsae__ct_sum64(t, 3, "the loss")) != LSAE_OK) return r;
    if ((r = lsae__ct_up(t, t->dsum, 3)) != LSAE_OK) return r;
    lsae__loss_finish_kernel<<<1, 1, 0, s>>>(t->dst, t->dsum, t->K > t->k, t->KA > 0, t->cfg.auxk_alpha, (unsigned long long)((*t->step) + 1));
    LSAE__LAUNCHED(loss_finish);
    return LSAE_OK;
}

/* U0 (the CPU's lsae__comm_window): the window's gradient is the sum of
   the ranks' gradients (each of the global loss: its rows' terms over the
   global TV), and a latent fired when it fired on any rank (0/1 flags
   summed, then > 0). On the device through sum_f32_device when the comm
   has it, else through pinned host copies and sum_f32. Then U2-U4 take the
   same step on every rank, and the weights, Adam's moments and the
   counters never need sending. (U2 here sums the whole summed slab, so
   nothing like the CPU's kept row norms needs redoing.) */
static lsae_result lsae__comm_window(lsae__ct *t)
{
    cudaStream_t s = t->cm->stream;
    const size_t total = t->cm->total, L = t->L;
    const unsigned gl = lsae__grid(L, 256, 65535);
    lsae_result r;
    size_t l;
    if (t->comm.sum_f32_device) {
        if ((r = t->comm.sum_f32_device(t->comm.ctx, t->grads, total, (void *)s)) != LSAE_OK) return lsae__ct_comm_fail(t, r, "the gradients");
        lsae__fire_to_float_kernel<<<gl, 256, 0, s>>>(t->dfire, t->did_fire, L);
        LSAE__LAUNCHED(fire_to_float);
        if ((r = t->comm.sum_f32_device(t->comm.ctx, t->dfire, L, (void *)s)) != LSAE_OK) return lsae__ct_comm_fail(t, r, "the fired flags");
        lsae__fire_from_float_kernel<<<gl, 256, 0, s>>>(t->did_fire, t->dfire, L);
        LSAE__LAUNCHED(fire_from_float);
        return LSAE_OK;
    }
    LSAE__CU(cudaMemcpyAsync(t->hgrad, t->grads, total * sizeof(float), cudaMemcpyDeviceToHost, s));
    LSAE__CU(cudaMemcpyAsync(t->hfire8, t->did_fire, L, cudaMemcpyDeviceToHost, s));
    LSAE__CU(cudaStreamSynchronize(s));
    if ((r = t->comm.sum_f32(t->comm.ctx, t->hgrad, total)) != LSAE_OK) return lsae__ct_comm_fail(t, r, "the gradients");
    for (l = 0; l < L; ++l) t->hfire[l] = t->hfire8[l] ? 1.0f : 0.0f;
    if ((r = t->comm.sum_f32(t->comm.ctx, t->hfire, L)) != LSAE_OK) return lsae__ct_comm_fail(t, r, "the fired flags");
    for (l = 0; l < L; ++l) t->hfire8[l] = t->hfire[l] > 0.0f;
    LSAE__CU(cudaMemcpyAsync(t->grads, t->hgrad, total * sizeof(float), cudaMemcpyHostToDevice, s));
    LSAE__CU(cudaMemcpyAsync(t->did_fire, t->hfire8, L, cudaMemcpyHostToDevice, s));
    /* the pinned copies must not be rewritten before these copies ran */
    LSAE__CU(cudaStreamSynchronize(s));
    return LSAE_OK;
}

/* F2. TV = sum_j sum_b (x[b, j] - mean_b x[b, j])^2 in double, per dimension
   then summed in the CPU's order; the same kernel forms B1's coefficients. */
static lsae_result lsae__total_variance(lsae__ct *t, size_t B, size_t dropped)
{
    cudaStream_t s = t->cm->stream;
    const double w = 1.0 / (double)t->cfg.grad_acc_steps;
    if (t->has_comm) return lsae__total_variance_comm(t, B, dropped);
    lsae__total_variance_kernel<<<(unsigned)((t->d + 31) / 32), dim3(32, 32), 0, s>>>(t->tv_dim, t->x, (int)B, (int)t->d);
    LSAE__LAUNCHED(total_variance);
    lsae__total_variance_finish_kernel<<<1, 1, 0, s>>>(t->dst, t->tv_dim, (int)t->d, w, t->cfg.auxk_alpha, t->K > t->k, t->KA > 0);
    LSAE__LAUNCHED(total_variance_finish);
    return LSAE_OK;
}

/* F3. The first batch of a run: b_dec <- geometric median of x (Weiszfeld
   from the mean in double, at most 100 iterations; the iterations after
   convergence return at once on the device). */
static lsae_result lsae__init_b_dec(lsae__ct *t, size_t B)
{
    cudaStream_t s = t->cm->stream;
    const size_t d = t->d;
    const unsigned gd = lsae__grid(d, 256, 1u << 30);
    int it;
    if (*t->b_dec_initialized) return LSAE_OK;
    if (t->has_comm) return lsae__init_b_dec_comm(t, B);
    lsae__gm_mean_kernel<<<gd, 256, 0, s>>>(t->gm_guess, t->x, (int)B, (int)d, t->dst);
    LSAE__LAUNCHED(gm_mean);
    for (it = 0; it < 100; ++it) {
        lsae__gm_weights_kernel<<<(unsigned)((B + 7) / 8), 256, 0, s>>>(t->gm_w, t->gm_guess, t->x, (int)B, (int)d, t->dst);
        LSAE__LAUNCHED(gm_weights);
        lsae__gm_wsum_kernel<<<1, 1024, 0, s>>>(t->dst, t->gm_w, (int)B);
        LSAE__LAUNCHED(gm_wsum);
        lsae__gm_update_kernel<<<gd, 256, 0, s>>>(t->gm_guess, t->gm_prev, t->gm_w, t->x, (int)B, (int)d, t->dst);
        LSAE__LAUNCHED(gm_update);
        lsae__gm_check_kernel<<<1, 1024, 0, s>>>(t->dst, t->gm_guess, t->gm_prev, (int)d);
        LSAE__LAUNCHED(gm_check);
    }
    lsae__gm_finish_kernel<<<gd, 256, 0, s>>>(t->cm->params + t->cm->off[LSAE__B_DEC], t->gm_guess, (int)d, t->dst);
    LSAE__LAUNCHED(gm_finish);
    *t->b_dec_initialized = 1;
    return LSAE_OK;
}

/* F4. xc = x - b_dec; pre = xc W_enc^T (cuBLAS, or our kernel, in
   t->pre_rows rows at a time); per row the top K of ReLU(pre + b_enc) and
   the AuxK top ka among the dead latents. The dead mask, ka and the AuxK
   scale were set by U4 of the previous window (or at creation / set_state);
   the CPU computes them here from the same counters. */
static lsae_result lsae__encode_select(lsae__ct *t, size_t B)
{
    lsae__cm *cm = t->cm;
    cudaStream_t s = cm->stream;
    const size_t d = t->d, L = t->L, K = t->K, KA = t->KA;
    const float *b_enc = cm->params + cm->off[LSAE__B_ENC];
    size_t r0;
    lsae_result r;
    lsae__center_kernel<<<lsae__grid(B * d, 256, 65535), 256, 0, s>>>(t->xc, t->x, cm->params + cm->off[LSAE__B_DEC], B * d, (int)d);
    LSAE__LAUNCHED(center);
    for (r0 = 0; r0 < B; r0 += t->pre_rows) {
        const size_t R = B - r0 < t->pre_rows ? B - r0 : t->pre_rows;
        if ((r = lsae__encoder_product(cm, t->precision, t->pre, t->xc + r0 * d, t->xbf, R)) != LSAE_OK) return r;
        if ((r = lsae__select(s, t->topv + r0 * K, t->topi + r0 * K, K, t->pre, b_enc, R, L, NULL, K, NULL)) != LSAE_OK) return r;
        if (KA && (r = lsae__select(s, t->auxv + r0 * KA, t->auxi + r0 * KA, KA, t->pre, b_enc, R, L, t->dead, 0, &t->dst->ka)) != LSAE_OK) return r;
    }
    return LSAE_OK;
}

/* F5, F6 and B1 in one kernel, a block per row: the residuals e (k), e4
   (the 4k tail) and e_hat - e (AuxK), their sums of squares into row_sse,
   and in G the loss's gradients with respect to the three decoder outputs
   (coefficients from F2's kernel). */
static lsae_result lsae__decode_residuals(lsae__ct *t, size_t B)
{
    lsae__cm *cm = t->cm;
    lsae__decode_residuals_kernel<<<(unsigned)B, LSAE__TD, 0, cm->stream>>>(t->G, t->row_sse, t->x, t->topv, t->topi, t->auxv, t->auxi,
                                                                            cm->params + cm->off[LSAE__W_DEC], cm->params + cm->off[LSAE__B_DEC],
                                                                            t->dst, (int)t->d, (int)t->k, (int)t->K, (int)t->KA);
    LSAE__LAUNCHED(decode_residuals);
    return LSAE_OK;
}

/* F7. fvu, fvu4, auxk and the loss from the per-row sums; a non-finite loss
   poisons the trainer on the device, and every later kernel that would
   change state returns at once (the CPU returns before B1). */
static lsae_result lsae__loss(lsae__ct *t, size_t B)
{
    if (t->has_comm) return lsae__loss_comm(t, B);
    lsae__loss_kernel<<<1, 1024, 0, t->cm->stream>>>(t->dst, t->row_sse, (int)B, t->K > t->k, t->KA > 0, t->cfg.auxk_alpha,
                                                     (unsigned long long)((*t->step) + 1));
    LSAE__LAUNCHED(loss);
    return LSAE_OK;
}

/* B2. Entries (row, slot) with a positive activation sorted by latent with
   a stable radix sort, so within a latent by (row, slot); lat_start [L + 1]
   the offsets. (The CPU also sorts by class; here a latent's entries carry
   their slot, which tells the class.) */
static lsae_result lsae__sort_entries(lsae__ct *t, size_t B)
{
    cudaStream_t s = t->cm->stream;
    const size_t n = B * t->E;
    size_t bytes = 0;
    lsae__entry_keys_kernel<<<lsae__grid(n, 256, 65535), 256, 0, s>>>(t->keys_in, t->ents_in, t->topv, t->topi, t->auxv, t->auxi,
                                                                      n, (int)t->K, (int)t->KA, (int)t->L);
    LSAE__LAUNCHED(entry_keys);
    LSAE__CU(cub::DeviceRadixSort::SortPairs(NULL, bytes, t->keys_in, t->keys_out, t->ents_in, t->ents_out, (int)n, 0, t->end_bit, s));
    if (bytes > t->sort_tmp_bytes)
        return lsae__cu_msg(LSAE_CUDA_ERROR, "internal: radix sort wants %zu bytes of scratch, %zu reserved", bytes, t->sort_tmp_bytes);
    bytes = t->sort_tmp_bytes;
    LSAE__CU(cub::DeviceRadixSort::SortPairs(t->sort_tmp, bytes, t->keys_in, t->keys_out, t->ents_in, t->ents_out, (int)n, 0, t->end_bit, s));
    lsae__lat_start_kernel<<<lsae__grid(t->L + 1, 256, 1u << 30), 256, 0, s>>>(t->lat_start, t->keys_out, (int)n, (int)t->L);
    LSAE__LAUNCHED(lat_start);
    return LSAE_OK;
}

/* B3, first half: dpre = G_class[b] . W_dec[l] for every entry, a block per
   row (dpre [B, E], read by B4 through the sorted entries). */
static lsae_result lsae__entry_dpre(lsae__ct *t, size_t B)
{
    lsae__cm *cm = t->cm;
    const float *W_dec = cm->params + cm->off[LSAE__W_DEC];
    const int vec4 = t->d % 4 == 0 && ((uintptr_t)W_dec & 15) == 0 && ((uintptr_t)t->G & 15) == 0;
    lsae__entry_dpre_kernel<<<(unsigned)B, LSAE__TB, 0, cm->stream>>>(t->dpre, t->G, t->topv, t->topi, t->auxv, t->auxi, W_dec,
                                                                      (int)t->d, (int)t->k, (int)t->K, (int)t->KA, vec4);
    LSAE__LAUNCHED(entry_dpre);
    return LSAE_OK;
}

/* B3, second half, and B4: per latent l (a block), over its sorted entries,
   dW_dec[l] += sum a G_class[b], dW_enc[l] += sum dpre xc[b],
   db_enc[l] += sum dpre; the batch's sum of dpre per latent stays in
   lat_dsum for U1. float4 kernel when d and the rows allow it. */
static lsae_result lsae__latent_grads(lsae__ct *t)
{
    lsae__cm *cm = t->cm;
    float *gW_enc = t->grads + cm->off[LSAE__W_ENC], *gb_enc = t->grads + cm->off[LSAE__B_ENC], *gW_dec = t->grads + cm->off[LSAE__W_DEC];
    const size_t d = t->d;
    const int lg4 = d % 4 == 0 && d / 4 <= LSAE__LG4_MAXT && ((uintptr_t)gW_enc & 15) == 0 && ((uintptr_t)gW_dec & 15) == 0 &&
                    ((uintptr_t)t->G & 15) == 0 && ((uintptr_t)t->xc & 15) == 0;
    if (lg4) {
        const unsigned nthr = (unsigned)((d / 4 + 31) / 32 * 32);
        lsae__latent_grads4_kernel<<<(unsigned)t->L, nthr, 0, cm->stream>>>(gW_enc, gb_enc, gW_dec, t->lat_dsum, t->lat_start, t->ents_out,
                                                                            t->topv, t->auxv, t->dpre, t->G, t->xc, t->dst, (int)d,
                                                                            (int)t->k, (int)t->K, (int)t->KA);
    } else {
        lsae__latent_grads_kernel<<<(unsigned)t->L, LSAE__TD, 0, cm->stream>>>(gW_enc, gb_enc, gW_dec, t->lat_dsum, t->lat_start, t->ents_out,
                                                                               t->topv, t->auxv, t->dpre, t->G, t->xc, t->dst, (int)d,
                                                                               (int)t->k, (int)t->K, (int)t->KA);
    }
    LSAE__LAUNCHED(latent_grads);
    return LSAE_OK;
}

/* B5 + U1: db_dec += sum_b G0[b] - W_enc^T (this batch's db_enc). The CPU
   takes U1 once per window from the accumulated db_enc; the sum is the
   same, the rounding not. */
static lsae_result lsae__b_dec_grad(lsae__ct *t, size_t B)
{
    lsae__cm *cm = t->cm;
    cudaStream_t s = cm->stream;
    const size_t d = t->d;
    lsae__b_dec_grad_input_kernel<<<dim3((unsigned)((d + 31) / 32), LSAE__DIN_CHUNKS), dim3(32, 8), 0, s>>>(t->din_part, t->lat_dsum,
                                                                                                           cm->params + cm->off[LSAE__W_ENC],
                                                                                                           (int)t->L, (int)d, t->dst);
    LSAE__LAUNCHED(b_dec_grad_input);
    lsae__b_dec_grad_kernel<<<(unsigned)((d + 31) / 32), dim3(32, 32), 0, s>>>(t->grads + cm->off[LSAE__B_DEC], t->G, t->din_part, (int)B,
                                                                               (int)d, t->dst);
    LSAE__LAUNCHED(b_dec_grad);
    return LSAE_OK;
}

/* B6. did_fire[l] = 1 for every latent in some row's top k; the window's
   row count and batch count grow. */
static lsae_result lsae__mark_fired(lsae__ct *t, size_t B)
{
    if (B) {
        lsae__mark_fired_kernel<<<lsae__grid(B * t->k, 256, 65535), 256, 0, t->cm->stream>>>(t->did_fire, t->topi, B * t->k, (int)t->k,
                                                                                            (int)t->K, t->dst);
        LSAE__LAUNCHED(mark_fired);
    }
    (*t->micro)++;
    /* data-parallel: every rank counts the global batch, so the dead-latent
       counters stay the same everywhere (the CPU's B6) */
    (*t->rows_in_window) += t->has_comm ? t->Bg : B;
    return LSAE_OK;
}

/* Queue one batch's forward and backward (latentsae.h's
   lsae_trainer_accumulate, F1-B6). Returns before the GPU is done. */
static lsae_result lsae__ct_accumulate(lsae__ct *t, const float *x, size_t rows, size_t *B_out, size_t *dropped_out)
{
    size_t B;
    lsae_result r;
    *B_out = *dropped_out = 0;
    if ((r = lsae__ct_reserve(t, rows < 2 ? 2 : rows)) != LSAE_OK) return r;
    /* forward */
    if ((r = lsae__keep_finite_rows(t, x, rows, B_out, dropped_out)) != LSAE_OK) return r;  /* F1 */
    B = *B_out;
    /* B = 0 only on a data-parallel rank with an empty slice: it launches
       nothing over rows but still takes part in every sum (F2, F3, F7) */
    if (t->cm->poison && B && (r = lsae__poison_workspace(t, B)) != LSAE_OK) return r;
    if ((r = lsae__total_variance(t, B, *dropped_out)) != LSAE_OK) return r;              /* F2 */
    if ((r = lsae__init_b_dec(t, B)) != LSAE_OK) return r;                                 /* F3 */
    if (B && (r = lsae__encode_select(t, B)) != LSAE_OK) return r;                         /* F4 */
    if (B && (r = lsae__decode_residuals(t, B)) != LSAE_OK) return r;                      /* F5, F6, B1 */
    if ((r = lsae__loss(t, B)) != LSAE_OK) return r;                                       /* F7 */
    /* backward: adds into the gradients of the window */
    if (B) {
        if ((r = lsae__sort_entries(t, B)) != LSAE_OK) return r;                           /* B2 */
        if ((r = lsae__entry_dpre(t, B)) != LSAE_OK) return r;                             /* B3 */
        if ((r = lsae__latent_grads(t)) != LSAE_OK) return r;                              /* B3, B4 */
        if ((r = lsae__b_dec_grad(t, B)) != LSAE_OK) return r;                             /* B5, U1 */
    }
    return lsae__mark_fired(t, B);                                                         /* B6 */
}

/* U2. n = sqrt(sum of every g^2) over the whole gradient slab (fixed
   chunks, double); clip = min(1 / (n + 1e-6), 1); a non-finite n poisons
   the trainer before Adam. */
static lsae_result lsae__clip(lsae__ct *t)
{
    cudaStream_t s = t->cm->stream;
    lsae__sumsq_kernel<<<(unsigned)t->nchunks, 256, 0, s>>>(t->norm_partial, t->grads, t->cm->total);
    LSAE__LAUNCHED(sumsq);
    lsae__clip_kernel<<<1, 1024, 0, s>>>(t->dst, t->norm_partial, (int)t->nchunks, (unsigned long long)((*t->step) + 1));
    LSAE__LAUNCHED(clip);
    return LSAE_OK;
}

/* U3. Adam at lr (torch.optim.Adam, step s = step + 1) on the clipped
   gradient: everything but W_dec element-wise; W_dec a row a block, with
   the projection before and the renormalisation after; then the gradients
   are zeroed for the next window. */
static lsae_result lsae__adam(lsae__ct *t, double lr)
{
    lsae__cm *cm = t->cm;
    cudaStream_t s = cm->stream;
    const size_t wdec0 = cm->off[LSAE__W_DEC], wdec1 = wdec0 + t->L * t->d;
    const double bc1 = 1.0 - pow(0.9, (double)((*t->step) + 1)), bc2 = 1.0 - pow(0.999, (double)((*t->step) + 1));
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    lsae__adam_flat_kernel<<<lsae__grid(wdec0, 256, 65535), 256, 0, s>>>(cm->params, t->grads, t->adam_m, t->adam_v, 0, wdec0,
                                                                         t->dst, step_size, bc2_sqrt);
    LSAE__LAUNCHED(adam_flat);
    lsae__adam_flat_kernel<<<lsae__grid(cm->total - wdec1, 256, 65535), 256, 0, s>>>(cm->params, t->grads, t->adam_m, t->adam_v, wdec1,
                                                                                     cm->total, t->dst, step_size, bc2_sqrt);
    LSAE__LAUNCHED(adam_flat);
    lsae__adam_wdec_kernel<<<(unsigned)t->L, LSAE__TA, 0, s>>>(cm->params + wdec0, t->grads + wdec0, t->adam_m + wdec0,
                                                               t->adam_v + wdec0, (int)t->d, cm->normalize, t->dst, step_size, bc2_sqrt);
    LSAE__LAUNCHED(adam_wdec);
    LSAE__CU(cudaMemsetAsync(t->grads, 0, cm->total * sizeof(float), s));
    cm->bf16_stale = 1;
    return LSAE_OK;
}

/* U4. since_fired grows by the window's rows and restarts where a latent
   fired (B6); the dead mask, n_dead, ka and the AuxK scale of the next
   window (F4) from it; a weight that U3 made non-finite poisons the trainer
   now, after the bookkeeping, as on the CPU. One more optimizer step. */
static lsae_result lsae__dead_counters(lsae__ct *t)
{
    cudaStream_t s = t->cm->stream;
    lsae__dead_reset_kernel<<<1, 1, 0, s>>>(t->dst, 1);
    LSAE__LAUNCHED(dead_reset);
    lsae__dead_count_kernel<<<lsae__grid(t->L, 256, 4096), 256, 0, s>>>(t->since, t->did_fire, t->dead, (int)t->L,
                                                                         (unsigned long long)(*t->rows_in_window),
                                                                         (unsigned long long)t->cfg.dead_feature_threshold, t->dst, 1, 1);
    LSAE__LAUNCHED(dead_count);
    lsae__dead_finish_kernel<<<1, 1, 0, s>>>(t->dst, (int)(t->d / 2), 1);
    LSAE__LAUNCHED(dead_finish);
    lsae__apply_finish_kernel<<<1, 1, 0, s>>>(t->dst, (unsigned long long)((*t->step) + 1));
    LSAE__LAUNCHED(apply_finish);
    (*t->micro) = 0;
    (*t->rows_in_window) = 0;
    (*t->step)++;
    return LSAE_OK;
}

/* Queue the optimizer step (lsae_trainer_apply, U1-U4; U1 was queued with
   each batch's B5). *lr_used: its learning rate. */
static lsae_result lsae__ct_apply(lsae__ct *t, double *lr_used)
{
    const double lr = t->lr_base * lsae_lr_factor(&t->cfg, (*t->step));
    lsae_result r;
    *lr_used = lr;
    if (t->has_comm && (r = lsae__comm_window(t)) != LSAE_OK) return r; /* U0 */
    if ((r = lsae__clip(t)) != LSAE_OK) return r;            /* U2 */
    if ((r = lsae__adam(t, lr)) != LSAE_OK) return r;        /* U3 */
    return lsae__dead_counters(t);                           /* U4 */
}

/* queue a copy of the device status; the next call reads it without waiting */
static lsae_result lsae__ct_queue_status(lsae__ct *t)
{
    LSAE__CU(cudaMemcpyAsync(t->hst, t->dst, sizeof(lsae__dstat), cudaMemcpyDeviceToHost, t->cm->stream));
    LSAE__CU(cudaEventRecord(t->st_ev, t->cm->stream));
    t->st_pending = 1;
    return LSAE_OK;
}

/* read the last queued status: wait for it, or only if it is there already */
static lsae_result lsae__ct_poll(lsae__ct *t, int wait)
{
    if (!t->st_pending) return LSAE_OK;
    if (wait) {
        LSAE__CU(cudaEventSynchronize(t->st_ev));
    } else {
        cudaError_t e = cudaEventQuery(t->st_ev);
        if (e == cudaErrorNotReady) {
            (void)cudaGetLastError(); /* not an error: clear it */
            return LSAE_OK;
        }
        if (e != cudaSuccess) return lsae__cu_fail(e, "cudaEventQuery", __LINE__);
    }
    t->st_pending = 0;
    if (t->hst->poisoned) { t->reason = t->hst->poisoned; *t->poisoned = 1; }
    return LSAE_OK;
}

/* the CPU's LSAE_NOT_FINITE messages, from what the device recorded
   (poison_step is the 1-based step that went wrong, as on the CPU) */
static lsae_result lsae__ct_poison_error(const lsae__ct *t)
{
    const lsae__dstat *h = t->hst;
    if (t->reason == LSAE__POISON_LOSS)
        return lsae__cu_msg(LSAE_NOT_FINITE, "loss is %g at optimizer step %llu (fvu %g, auxk %g): the weights have diverged; lower the learning rate and resume from the last good checkpoint",
                            h->poison_loss, h->poison_step, h->poison_fvu, h->poison_auxk);
    if (t->reason == LSAE__POISON_NORM)
        return lsae__cu_msg(LSAE_NOT_FINITE, "gradient norm is %g at optimizer step %llu; weights left as they were. Lower the learning rate and resume from the last good checkpoint",
                            h->poison_norm, h->poison_step);
    return lsae__cu_msg(LSAE_NOT_FINITE, "a weight became NaN or Inf at optimizer step %llu: lower the learning rate and resume from the last good checkpoint",
                        h->poison_step);
}

/* a CUDA failure inside a trainer call leaves the trainer refusing work */
static lsae_result lsae__ct_check(lsae__ct *t, lsae_result r)
{
    if (r == LSAE_CUDA_ERROR) t->broken = 1;
    return r;
}

#define LSAE__TLOCK(t) LSAE__LOCK((t)->cm); \
    if ((t)->broken) return lsae__cu_msg(LSAE_CUDA_ERROR, "an earlier CUDA failure left this trainer unusable: free it")

static lsae_result lsae__ct_accumulate_call(lsae__ct *t, const float *x, size_t rows, lsae_step_stats *stats, int then_apply)
{
    size_t B = 0, dropped = 0;
    double lr = 0.0;
    int stepped = 0;
    lsae_result r;
    /* data-parallel: wait for the status, so every rank sees a poisoned
       step at the same call and none goes into a sum the others left */
    if ((r = lsae__ct_poll(t, t->has_comm)) != LSAE_OK) return r;
    if (*t->poisoned) return lsae__ct_poison_error(t);
    if (t->comm_failed) return lsae__cu_msg(LSAE_ERROR, "training stopped earlier when a sum across ranks failed; restart from the last checkpoint");
    if (!x && rows) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_accumulate: x is NULL");
    if ((r = lsae__ct_accumulate(t, x, rows, &B, &dropped)) != LSAE_OK) return r;
    if (t->has_comm) {
        /* the statistics are the global batch's, as on the CPU */
        B = t->Bg;
        dropped = t->dropped_g;
    }
    if (then_apply && (*t->micro) >= t->cfg.grad_acc_steps) {
        if ((r = lsae__ct_apply(t, &lr)) != LSAE_OK) return r;
        stepped = 1;
    }
    if ((r = lsae__ct_queue_status(t)) != LSAE_OK) return r;
    if (stats) {
        const lsae__dstat *h = t->hst;
        if ((r = lsae__ct_poll(t, 1)) != LSAE_OK) return r;
        memset(stats, 0, sizeof *stats);
        stats->fvu = h->fvu;
        stats->auxk = h->auxk;
        stats->multi_topk_fvu = h->fvu4;
        stats->loss = h->loss;
        stats->n_dead = (size_t)h->n_dead;
        stats->dead_fraction = (double)h->n_dead / (double)t->L;
        stats->lr = stepped ? lr : t->lr_base * lsae_lr_factor(&t->cfg, (*t->step));
        stats->grad_norm = stepped ? h->norm : 0.0;
        stats->rows_used = B;
        stats->rows_dropped = dropped;
        stats->step = (*t->step);
        stats->stepped = stepped;
        if (*t->poisoned) return lsae__ct_poison_error(t);
    }
    return LSAE_OK;
}

lsae_result lsae__cuda_trainer_accumulate(void *ctv, const float *x, size_t rows, lsae_step_stats *stats, int then_apply)
{
    lsae__ct *t = (lsae__ct *)ctv;
    if (!t) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_accumulate: trainer is NULL");
    {
        LSAE__TLOCK(t);
        return lsae__ct_check(t, lsae__ct_accumulate_call(t, x, rows, stats, then_apply));
    }
}

static lsae_result lsae__ct_apply_call(lsae__ct *t, lsae_step_stats *stats)
{
    double lr = 0.0;
    lsae_result r;
    if ((r = lsae__ct_poll(t, t->has_comm)) != LSAE_OK) return r;
    if (*t->poisoned) return lsae__ct_poison_error(t);
    if (t->comm_failed) return lsae__cu_msg(LSAE_ERROR, "training stopped earlier when a sum across ranks failed; restart from the last checkpoint");
    if ((*t->micro) == 0) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_apply: no batch accumulated since the last optimizer step");
    if ((r = lsae__ct_apply(t, &lr)) != LSAE_OK) return r;
    if ((r = lsae__ct_queue_status(t)) != LSAE_OK) return r;
    if (stats) {
        if ((r = lsae__ct_poll(t, 1)) != LSAE_OK) return r;
        stats->stepped = 1;
        stats->grad_norm = t->hst->norm;
        stats->lr = lr;
        stats->step = (*t->step);
        stats->n_dead = (size_t)t->hst->n_dead;
        stats->dead_fraction = (double)t->hst->n_dead / (double)t->L;
        if (*t->poisoned) return lsae__ct_poison_error(t);
    }
    return LSAE_OK;
}

lsae_result lsae__cuda_trainer_apply(void *ctv, lsae_step_stats *stats)
{
    lsae__ct *t = (lsae__ct *)ctv;
    if (!t) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_apply: trainer is NULL");
    {
        LSAE__TLOCK(t);
        return lsae__ct_check(t, lsae__ct_apply_call(t, stats));
    }
}

static size_t lsae__ct_count(const lsae__ct *t, int i)
{
    return (i == 0 || i == 2) ? t->L * t->d : i == 1 ? t->L : t->d;
}

lsae_result lsae__cuda_trainer_get_grads(void *ctv, float *dW_enc, float *db_enc, float *dW_dec, float *db_dec)
{
    lsae__ct *t = (lsae__ct *)ctv;
    float *dst[4] = { dW_enc, db_enc, dW_dec, db_dec };
    int i;
    if (!t) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_get_grads: trainer is NULL");
    {
        LSAE__TLOCK(t);
        for (i = 0; i < 4; ++i)
            if (dst[i]) LSAE__CU(cudaMemcpyAsync(dst[i], t->grads + t->cm->off[i], lsae__ct_count(t, i) * sizeof(float), cudaMemcpyDeviceToHost, t->cm->stream));
        LSAE__CU(cudaStreamSynchronize(t->cm->stream));
    }
    return LSAE_OK;
}

lsae_result lsae__cuda_trainer_get_state(void *ctv, lsae_trainer_state *st)
{
    lsae__ct *t = (lsae__ct *)ctv;
    float *dm[4], *dv[4];
    int i;
    if (!t || !st) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_get_state: trainer and state must not be NULL");
    dm[0] = st->m_W_enc; dm[1] = st->m_b_enc; dm[2] = st->m_W_dec; dm[3] = st->m_b_dec;
    dv[0] = st->v_W_enc; dv[1] = st->v_b_enc; dv[2] = st->v_W_dec; dv[3] = st->v_b_dec;
    {
        LSAE__TLOCK(t);
        st->step = (*t->step);
        st->b_dec_initialized = (*t->b_dec_initialized);
        if (st->since_fired) LSAE__CU(cudaMemcpyAsync(st->since_fired, t->since, t->L * sizeof(uint64_t), cudaMemcpyDeviceToHost, t->cm->stream));
        for (i = 0; i < 4; ++i) {
            if (dm[i]) LSAE__CU(cudaMemcpyAsync(dm[i], t->adam_m + t->cm->off[i], lsae__ct_count(t, i) * sizeof(float), cudaMemcpyDeviceToHost, t->cm->stream));
            if (dv[i]) LSAE__CU(cudaMemcpyAsync(dv[i], t->adam_v + t->cm->off[i], lsae__ct_count(t, i) * sizeof(float), cudaMemcpyDeviceToHost, t->cm->stream));
        }
        LSAE__CU(cudaStreamSynchronize(t->cm->stream));
    }
    return LSAE_OK;
}

lsae_result lsae__cuda_trainer_set_state(void *ctv, const lsae_trainer_state *st)
{
    lsae__ct *t = (lsae__ct *)ctv;
    const float *sm[4], *sv[4];
    const char *names[4] = { "encoder.weight", "encoder.bias", "W_dec", "b_dec" };
    size_t j;
    int i;
    if (!t || !st) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_set_state: trainer and state must not be NULL");
    if ((*t->micro)) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_set_state: %llu batches are accumulated but not applied; set state between optimizer steps", (unsigned long long)(*t->micro));
    sm[0] = st->m_W_enc; sm[1] = st->m_b_enc; sm[2] = st->m_W_dec; sm[3] = st->m_b_dec;
    sv[0] = st->v_W_enc; sv[1] = st->v_b_enc; sv[2] = st->v_W_dec; sv[3] = st->v_b_dec;
    for (i = 0; i < 4; ++i) {
        const size_t n = lsae__ct_count(t, i);
        for (j = 0; sm[i] && j < n; ++j)
            if (!std::isfinite(sm[i][j])) return lsae__cu_msg(LSAE_INVALID_ARGS, "Adam first moment of %s[%zu] is not finite", names[i], j);
        for (j = 0; sv[i] && j < n; ++j)
            if (!(sv[i][j] >= 0.0f) || !std::isfinite(sv[i][j]))
                return lsae__cu_msg(LSAE_INVALID_ARGS, "Adam second moment of %s[%zu] is %g; it must be finite and >= 0", names[i], j, (double)sv[i][j]);
    }
    {
        LSAE__TLOCK(t);
        (*t->step) = st->step;
        (*t->b_dec_initialized) = st->b_dec_initialized;
        if (st->since_fired) LSAE__CU(cudaMemcpyAsync(t->since, st->since_fired, t->L * sizeof(uint64_t), cudaMemcpyHostToDevice, t->cm->stream));
        for (i = 0; i < 4; ++i) {
            if (sm[i]) LSAE__CU(cudaMemcpyAsync(t->adam_m + t->cm->off[i], sm[i], lsae__ct_count(t, i) * sizeof(float), cudaMemcpyHostToDevice, t->cm->stream));
            if (sv[i]) LSAE__CU(cudaMemcpyAsync(t->adam_v + t->cm->off[i], sv[i], lsae__ct_count(t, i) * sizeof(float), cudaMemcpyHostToDevice, t->cm->stream));
        }
        if (lsae__ct_check(t, lsae__ct_recount_dead(t)) != LSAE_OK) return LSAE_CUDA_ERROR;
        LSAE__CU(cudaStreamSynchronize(t->cm->stream));
    }
    return LSAE_OK;
}

/* Data-parallel training (lsae_trainer_set_comm; latentsae.h has checked
   comm and that every rank holds the same state). The buffers of the
   exchanges: a few doubles each way per batch, and for the gradient a
   pinned host copy when the comm has no device sum. */
lsae_result lsae__cuda_trainer_set_comm(void *ctv, const lsae_comm *comm)
{
    lsae__ct *t = (lsae__ct *)ctv;
    lsae_result r;
    if (!t) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae_trainer_set_comm: trainer is NULL");
    {
        LSAE__TLOCK(t);
        /* a queued copy may still read the pinned buffers freed below */
        LSAE__CU(cudaStreamSynchronize(t->cm->stream));
        t->has_comm = 0;
        t->comm_failed = 0;
        lsae__hfree(&t->hsum); lsae__dfree(&t->dsum); lsae__hfree(&t->hgrad); lsae__hfree(&t->hfire8); lsae__dfree(&t->dfire);
        delete[] t->hfire;
        t->hfire = NULL;
        if (!comm || comm->size <= 1) return LSAE_OK;   /* one rank: the one-GPU step, bit for bit */
        if ((r = lsae__halloc(&t->hsum, t->d + 2, "sums across ranks")) != LSAE_OK ||
            (r = lsae__dalloc(&t->dsum, t->d + 2, "sums across ranks")) != LSAE_OK)
            return r;
        if (comm->sum_f32_device) {
            if ((r = lsae__dalloc(&t->dfire, t->L, "fired flags across ranks")) != LSAE_OK) return r;
        } else {
            if ((r = lsae__halloc(&t->hgrad, t->cm->total, "the gradient summed across ranks")) != LSAE_OK ||
                (r = lsae__halloc(&t->hfire8, t->L, "fired flags across ranks")) != LSAE_OK)
                return r;
            t->hfire = new (std::nothrow) float[t->L];
            if (!t->hfire) return lsae__cu_msg(LSAE_OUT_OF_MEMORY, "out of memory for the fired flags across ranks");
        }
        t->comm = *comm;
        t->has_comm = 1;
    }
    return LSAE_OK;
}

/* latentsae_nccl.h's rank-order addition of the chunks it gathered */
lsae_result lsae__cuda_sum_parts(float *out, const float *parts, size_t n, int P, void *stream)
{
    if (!out || !parts || P < 1) return lsae__cu_msg(LSAE_INVALID_ARGS, "lsae__cuda_sum_parts: NULL buffer or P < 1");
    if (n == 0) return LSAE_OK;
    lsae__sum_parts_kernel<<<lsae__grid(n, 256, 65535), 256, 0, (cudaStream_t)stream>>>(out, parts, n, P);
    LSAE__LAUNCHED(sum_parts);
    return LSAE_OK;
}

/* ============================================================ test hooks */

/* For tests/cuda and benchmarks only: run one kernel on given data.
   Compiled with -DLSAE_TESTING only (latentsae.h declares them then). */
#ifdef LSAE_TESTING

/* a model of width d with L latents whose W_enc is W (NULL: zeros), on device 0 */
static lsae_result lsae__test_model(lsae__cm **out, size_t d, size_t L, lsae_precision p, const float *W)
{
    size_t off[4], total, i;
    float *slab;
    lsae_config c = lsae_config_default(d);
    lsae_result r;
    void *cm = NULL;
    *out = NULL;
    off[LSAE__W_ENC] = 0;
    off[LSAE__B_ENC] = off[LSAE__W_ENC] + ((L * d + 15) & ~(size_t)15);
    off[LSAE__W_DEC] = off[LSAE__B_ENC] + ((L + 15) & ~(size_t)15);
    off[LSAE__B_DEC] = off[LSAE__W_DEC] + ((L * d + 15) & ~(size_t)15);
    total = off[LSAE__B_DEC] + ((d + 15) & ~(size_t)15);
    slab = (float *)calloc(total, sizeof(float));
    if (!slab) return lsae__cu_msg(LSAE_OUT_OF_MEMORY, "test model: out of host memory");
    if (W)
        for (i = 0; i < L * d; ++i) slab[i] = W[i];
    c.num_latents = L;
    c.k = 1;
    c.precision = p;
    c.device = LSAE_DEVICE_CUDA;
    r = lsae__cuda_model_new(&cm, &c, slab, off);
    free(slab);
    *out = (lsae__cm *)cm;
    return r;
}

lsae_result lsae__cuda_test_topk(const float *pre, const float *b_enc, const unsigned char *mask, size_t rows, size_t L,
                                 size_t k, size_t ldo, int k_on_device, float *vals, int32_t *idx)
{
    lsae__cm *cm = NULL;
    float *d_pre = NULL, *d_b = NULL, *d_v = NULL;
    int32_t *d_i = NULL;
    unsigned char *d_mask = NULL;
    int *d_k = NULL;
    const int kk = (int)k;
    lsae_result r;
    if (k > ldo) return lsae__cu_msg(LSAE_INVALID_ARGS, "test_topk: k > ldo");
    if ((r = lsae__test_model(&cm, 1, L, LSAE_PRECISION_DEFAULT, NULL)) != LSAE_OK) return r;
#define LSAE__TT(expr) do { if ((r = (expr)) != LSAE_OK) goto done; } while (0)
#define LSAE__TC(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { r = lsae__cu_fail(e_, #call, __LINE__); goto done; } } while (0)
    LSAE__TT(lsae__dalloc(&d_pre, rows * L, "test"));
    LSAE__TT(lsae__dalloc(&d_b, L, "test"));
    LSAE__TT(lsae__dalloc(&d_v, rows * ldo, "test"));
    LSAE__TT(lsae__dalloc(&d_i, rows * ldo, "test"));
    LSAE__TT(lsae__dalloc(&d_k, 1, "test"));
    if (mask) {
        LSAE__TT(lsae__dalloc(&d_mask, L, "test"));
        LSAE__TC(cudaMemcpy(d_mask, mask, L, cudaMemcpyHostToDevice));
    }
    LSAE__TC(cudaMemcpy(d_pre, pre, rows * L * sizeof(float), cudaMemcpyHostToDevice));
    LSAE__TC(cudaMemcpy(d_b, b_enc, L * sizeof(float), cudaMemcpyHostToDevice));
    LSAE__TC(cudaMemcpy(d_k, &kk, sizeof(int), cudaMemcpyHostToDevice));
    LSAE__TC(cudaMemset(d_v, 0xff, rows * ldo * sizeof(float)));   /* NaN: unwritten slots show */
    LSAE__TC(cudaMemset(d_i, 0xff, rows * ldo * sizeof(int32_t)));
    LSAE__TT(lsae__select(cm->stream, d_v, d_i, ldo, d_pre, d_b, rows, L, d_mask, k, k_on_device ? d_k : NULL));
    LSAE__TC(cudaStreamSynchronize(cm->stream));
    LSAE__TC(cudaMemcpy(vals, d_v, rows * ldo * sizeof(float), cudaMemcpyDeviceToHost));
    LSAE__TC(cudaMemcpy(idx, d_i, rows * ldo * sizeof(int32_t), cudaMemcpyDeviceToHost));
done:
    lsae__dfree(&d_pre); lsae__dfree(&d_b); lsae__dfree(&d_v); lsae__dfree(&d_i); lsae__dfree(&d_k); lsae__dfree(&d_mask);
    lsae__cuda_model_free(cm);
    return r;
}

lsae_result lsae__cuda_test_gemm(const float *x, const float *W, size_t rows, size_t L, size_t d, lsae_precision p, float *out)
{
    lsae__cm *cm = NULL;
    float *d_x = NULL, *d_pre = NULL;
    __nv_bfloat16 *d_xbf = NULL;
    lsae_result r;
    if ((r = lsae__test_model(&cm, d, L, p, W)) != LSAE_OK) return r;
    LSAE__TT(lsae__dalloc(&d_x, rows * d, "test"));
    LSAE__TT(lsae__dalloc(&d_pre, rows * L, "test"));
    LSAE__TT(lsae__dalloc(&d_xbf, rows * d, "test"));
    LSAE__TC(cudaMemcpy(d_x, x, rows * d * sizeof(float), cudaMemcpyHostToDevice));
    LSAE__TC(cudaMemset(d_pre, 0xff, rows * L * sizeof(float)));
    LSAE__TT(lsae__encoder_product(cm, cm->precision, d_pre, d_x, d_xbf, rows));
    LSAE__TC(cudaStreamSynchronize(cm->stream));
    LSAE__TC(cudaMemcpy(out, d_pre, rows * L * sizeof(float), cudaMemcpyDeviceToHost));
done:
    lsae__dfree(&d_x); lsae__dfree(&d_pre); lsae__dfree(&d_xbf);
    lsae__cuda_model_free(cm);
    return r;
}

/* uniform in [-scale, scale) from a counter hash, for benchmark data */
__global__ void lsae__fill_kernel(float *p, size_t n, unsigned long long seed, float scale)
{
    size_t i;
    for (i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned long long z = seed + i * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        p[i] = ((float)(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * scale;
    }
}

/* Mean milliseconds of the encoder product ([rows, d] x [d, L]) and of the
   top-k selection over its output, on random data, after two warm-ups,
   timed with CUDA events. */
lsae_result lsae__cuda_test_bench(size_t rows, size_t L, size_t d, size_t k, lsae_precision p, int iters,
                                  double *gemm_ms, double *topk_ms)
{
    lsae__cm *cm = NULL;
    float *d_x = NULL, *d_pre = NULL, *d_v = NULL;
    int32_t *d_i = NULL;
    __nv_bfloat16 *d_xbf = NULL;
    cudaEvent_t ev[3] = { NULL, NULL, NULL };
    float ms_g = 0.0f, ms_t = 0.0f;
    lsae_result r;
    int it, i;
    *gemm_ms = *topk_ms = 0.0;
    if ((r = lsae__test_model(&cm, d, L, p, NULL)) != LSAE_OK) return r;
    for (i = 0; i < 3; ++i) LSAE__TC(cudaEventCreate(&ev[i]));
    LSAE__TT(lsae__dalloc(&d_x, rows * d, "bench"));
    LSAE__TT(lsae__dalloc(&d_pre, rows * L, "bench"));
    LSAE__TT(lsae__dalloc(&d_xbf, rows * d, "bench"));
    LSAE__TT(lsae__dalloc(&d_v, rows * k, "bench"));
    LSAE__TT(lsae__dalloc(&d_i, rows * k, "bench"));
    lsae__fill_kernel<<<lsae__grid(L * d, 256, 65535), 256, 0, cm->stream>>>(cm->params + cm->off[LSAE__W_ENC], L * d, 1, 1.0f / sqrtf((float)d));
    LSAE__TC(cudaGetLastError());
    lsae__fill_kernel<<<lsae__grid(rows * d, 256, 65535), 256, 0, cm->stream>>>(d_x, rows * d, 2, 1.0f);
    LSAE__TC(cudaGetLastError());
    for (it = -2; it < iters; ++it) {
        float a = 0.0f, b = 0.0f;
        cm->bf16_stale = 1; /* a BF16 product pays its W_enc conversion, as after every optimizer step */
        LSAE__TC(cudaEventRecord(ev[0], cm->stream));
        LSAE__TT(lsae__encoder_product(cm, cm->precision, d_pre, d_x, d_xbf, rows));
        LSAE__TC(cudaEventRecord(ev[1], cm->stream));
        LSAE__TT(lsae__select(cm->stream, d_v, d_i, k, d_pre, cm->params + cm->off[LSAE__B_ENC], rows, L, NULL, k, NULL));
        LSAE__TC(cudaEventRecord(ev[2], cm->stream));
        LSAE__TC(cudaEventSynchronize(ev[2]));
        LSAE__TC(cudaEventElapsedTime(&a, ev[0], ev[1]));
        LSAE__TC(cudaEventElapsedTime(&b, ev[1], ev[2]));
        if (it >= 0) { ms_g += a; ms_t += b; }
    }
    *gemm_ms = iters > 0 ? ms_g / iters : 0.0;
    *topk_ms = iters > 0 ? ms_t / iters : 0.0;
done:
#undef LSAE__TT
#undef LSAE__TC
    for (i = 0; i < 3; ++i)
        if (ev[i]) (void)cudaEventDestroy(ev[i]);
    lsae__dfree(&d_x); lsae__dfree(&d_pre); lsae__dfree(&d_xbf); lsae__dfree(&d_v); lsae__dfree(&d_i);
    lsae__cuda_model_free(cm);
    return r;
}
#endif /* LSAE_TESTING */
