/* .npy: the header dict parser on memory (lsae__npy_parse_dict), then the
   whole file as an embeddings dataset, mapped and through stdio, every row
   read. The input is a whole .npy file. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    lsae__npy_hdr h;
    lsae_dataset_options o = lsae_dataset_options_default();
    lsae_result r;
    int pass, i;
    fz_input_size = size;

    /* the dict: after the prefix when there is one, else the whole input */
    {
        size_t off = 0;
        if (size >= 10 && memcmp(data, "\x93NUMPY", 6) == 0) off = data[6] == 1 ? 10 : 12;
        if (off <= size) {
            r = lsae__npy_parse_dict("mem.npy", (const char *)data + off, size - off, &h);
            if (r == LSAE_OK) {
                FZ_ASSERT(h.have_descr && h.have_fortran && h.have_shape && h.ndim >= 0 && h.ndim <= 8, "parsed a header without its keys");
                FZ_ASSERT(memchr(h.descr, 0, sizeof h.descr) != NULL, "descr not terminated");
                for (i = 0; i < h.ndim; ++i) FZ_ASSERT(h.shape[i] <= LSAE__MAX_BYTES, "size %llu", (unsigned long long)h.shape[i]);
            } else {
                fz_check_error(r, "lsae__npy_parse_dict");
            }
        }
    }

    fz_path(path, sizeof path, "x.npy");
    fz_write(path, data, size);
    for (pass = 0; pass < 2; ++pass) {
        o.format = pass ? LSAE_FORMAT_AUTO : LSAE_FORMAT_NPY;
        o.no_mmap = pass;
        fz_open_read_all(path, &o, 0);
    }
    return 0;
}
