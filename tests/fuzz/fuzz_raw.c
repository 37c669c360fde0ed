/* Raw dumps and the size arithmetic every reader shares. The input is
     bytes 0-7    the width d (little-endian, any value)
     byte  8      the dtype (1 f32, 2 f16, 3 bf16; others must be refused)
     bytes 9-16   a file size, an offset and rows/cols for the pure checks
                  (lsae__raw_open, lsae__shard_check_size) with values no
                  file here could have: up to 2^64
     the rest     a raw file, opened as a dataset with that width and
                  dtype (format RAW, and AUTO by content), rows read.
   Whatever the checks accept must be true: rows x cols x elem bytes fit
   the file without overflow. */
#include "fuzz_common.h"

static uint64_t rd(const uint8_t *data, size_t size, size_t at, int n)
{
    unsigned char b[8] = { 0 };
    size_t i;
    for (i = 0; i < (size_t)n && at + i < size; ++i) b[i] = data[at + i];
    return lsae__get_le(b, n);
}

/* a * b <= limit, without overflow */
static int fits(uint64_t a, uint64_t b, uint64_t limit) { return a == 0 || b <= limit / a; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    uint64_t dw = rd(data, size, 0, 8), fsize = rd(data, size, 9, 8);
    size_t d = (size_t)dw;
    lsae_dtype dt = (lsae_dtype)rd(data, size, 8, 1);
    lsae__shard sh;
    lsae_result r;
    int pass;
    fz_input_size = size;

    /* pure: a raw file of fsize bytes */
    memset(&sh, 0, sizeof sh);
    r = lsae__raw_open("mem.bin", fsize, d, dt, &sh);
    fz_result("lsae__raw_open", r);
    if (r == LSAE_OK) {
        FZ_ASSERT(dt == LSAE_DTYPE_F32 || dt == LSAE_DTYPE_F16 || dt == LSAE_DTYPE_BF16, "dtype %d accepted", (int)dt);
        FZ_ASSERT(sh.cols == d && d > 0 && sh.elem == (dt == LSAE_DTYPE_F32 ? 4u : 2u), "shard of width %llu, elem %zu", (unsigned long long)sh.cols, sh.elem);
        FZ_ASSERT(fits(sh.rows, sh.cols, UINT64_MAX / sh.elem) && sh.rows * sh.cols * sh.elem == fsize,
                  "%llu rows x %zu x %zu bytes is not the file's %llu", (unsigned long long)sh.rows, d, sh.elem, (unsigned long long)fsize);
    } else {
        fz_check_error(r, "lsae__raw_open");
    }

    /* pure: the shared bounds check, on values from the input */
    {
        uint64_t off = rd(data, size, 17, 8), rows = rd(data, size, 25, 8), cols = rd(data, size, 33, 8);
        size_t elem = (size_t)(rd(data, size, 41, 1) % 9) + 1;
        int exact = (int)(rd(data, size, 42, 1) & 1);
        r = lsae__shard_check_size("mem.bin", "array", off, rows, cols, elem, fsize, exact);
        if (r == LSAE_OK) {
            uint64_t bytes;
            FZ_ASSERT(fits(rows, cols, UINT64_MAX) && fits(rows * cols, elem, UINT64_MAX), "accepted an overflowing shape");
            bytes = rows * cols * elem;
            FZ_ASSERT(bytes <= fsize && off <= fsize - bytes, "[%llu, %llu] x %zu at %llu accepted in %llu bytes", (unsigned long long)rows,
                      (unsigned long long)cols, elem, (unsigned long long)off, (unsigned long long)fsize);
            FZ_ASSERT(!exact || off + bytes == fsize, "exact check accepted a short shape");
        } else {
            fz_check_error(r, "lsae__shard_check_size");
        }
    }

    /* the rest as a file */
    if (size < 9) return 0;
    fz_path(path, sizeof path, "x.bin");
    fz_write(path, data + 9, size - 9);
    for (pass = 0; pass < 2; ++pass) {
        lsae_dataset_options o = lsae_dataset_options_default();
        o.format = pass ? LSAE_FORMAT_AUTO : LSAE_FORMAT_RAW;
        o.raw_d_in = d;
        o.raw_dtype = dt;
        o.no_mmap = pass;
        fz_open_read_all(path, &o, pass == 0 ? d : 0);
    }
    return 0;
}
