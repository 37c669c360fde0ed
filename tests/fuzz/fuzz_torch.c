/* torch .pt files (torch.save's zip archive and its pickle), whole: the
   input is a .pt file, opened as an embeddings dataset (the one 2-D
   tensor, then the tensor named "x" of a dict), mapped and through stdio,
   every row read. fuzz_pickle.c reaches deeper into the pickle alone. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    lsae_dataset_options o = lsae_dataset_options_default();
    int pass;
    fz_input_size = size;
    fz_path(path, sizeof path, "x.pt");
    fz_write(path, data, size);
    for (pass = 0; pass < 3; ++pass) {
        o.format = pass == 1 ? LSAE_FORMAT_AUTO : LSAE_FORMAT_TORCH;
        o.tensor_name = pass == 2 ? "x" : NULL;
        o.no_mmap = pass == 1;
        fz_open_read_all(path, &o, 0);
    }
    return 0;
}
