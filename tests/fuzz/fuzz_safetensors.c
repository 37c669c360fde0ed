/* safetensors, header and body. The input is a whole .safetensors file:
   - its header through lsae__st_parse on memory (the length prefix taken
     as the file says, when it fits);
   - the file through lsae__st_open and every tensor's data through
     lsae__st_read_f32 (F32, F16, BF16, F64 conversions);
   - the file as an embeddings dataset (the only 2-D tensor, then the first
     tensor by name), every row read. */
#include "fuzz_common.h"

static void check_parsed(const lsae__st *st, uint64_t file_size)
{
    size_t i;
    uint64_t covered = 0;
    for (i = 0; i < st->n; ++i) {
        const lsae__st_tensor *t = &st->t[i];
        FZ_ASSERT(t->begin <= t->end && st->data_start + t->end <= file_size, "tensor %zu [%llu, %llu) outside the file", i,
                  (unsigned long long)t->begin, (unsigned long long)t->end);
        FZ_ASSERT(t->elem_size > 0 && t->numel == (t->end - t->begin) / t->elem_size && (t->end - t->begin) % t->elem_size == 0,
                  "tensor %zu: %llu elements of %zu bytes in %llu bytes", i, (unsigned long long)t->numel, t->elem_size,
                  (unsigned long long)(t->end - t->begin));
        covered += t->end - t->begin;
    }
    FZ_ASSERT(covered == file_size - st->data_start, "tensors cover %llu of %llu data bytes", (unsigned long long)covered,
              (unsigned long long)(file_size - st->data_start));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    lsae__st st;
    FILE *f = NULL;
    lsae_result r;
    size_t i;
    int opened;
    fz_input_size = size;

    /* the header on memory */
    if (size >= 8) {
        uint64_t hlen = lsae__get_le(data, 8);
        if (hlen <= size - 8) {
            r = lsae__st_parse("mem.safetensors", (const char *)data + 8, (size_t)hlen, size, NULL, &st);
            if (r == LSAE_OK) {
                check_parsed(&st, size);
                lsae__st_free(&st);
            } else {
                fz_check_error(r, "lsae__st_parse");
            }
        }
    }

    /* the file, and every tensor's bytes as floats */
    fz_path(path, sizeof path, "x.safetensors");
    fz_write(path, data, size);
    r = lsae__st_open(path, NULL, &f, &st);
    opened = r == LSAE_OK;
    fz_result("lsae__st_open", r);
    if (opened) {
        check_parsed(&st, size);
        for (i = 0; i < st.n; ++i) {
            const lsae__st_tensor *t = &st.t[i];
            float *buf;
            FZ_ASSERT(lsae__st_find(&st, t->name) == t, "tensor '%s' not found by name", t->name);
            if (t->numel > size) continue; /* an empty dtype cannot be: every dtype has >= 1 byte */
            buf = (float *)malloc(((size_t)t->numel + 1) * sizeof(float));
            if (!buf) abort();
            r = lsae__st_read_f32(f, path, &st, t, 0, (size_t)t->numel, buf);
            if (r != LSAE_OK) fz_check_error(r, "lsae__st_read_f32");
            else FZ_ASSERT(t->dtype != LSAE__DT_OTHER, "read %s as floats", t->dtype_name);
            if (t->numel) {
                r = lsae__st_read_f32(f, path, &st, t, t->numel - 1, 1, buf);
                if (r != LSAE_OK) fz_check_error(r, "lsae__st_read_f32");
            }
            r = lsae__st_read_f32(f, path, &st, t, t->numel, 1, buf);
            FZ_ASSERT(r != LSAE_OK, "read past the end of tensor '%s'", t->name);
            free(buf);
        }
        fclose(f);
    } else {
        fz_check_error(r, "lsae__st_open");
        FZ_ASSERT(f == NULL, "lsae__st_open failed but left a file open");
    }

    /* the file as embeddings */
    {
        lsae_dataset_options o = lsae_dataset_options_default();
        lsae_dataset *ds = NULL;
        char name[LSAE__ST_MAX_NAME];
        name[0] = 0;
        if (opened && st.n) memcpy(name, st.t[0].name, sizeof name);
        if (opened) lsae__st_free(&st);
        o.format = LSAE_FORMAT_SAFETENSORS;
        r = lsae_dataset_open(path, &o, NULL, &ds);
        fz_result("lsae_dataset_open", r);
        if (r == LSAE_OK) { fz_read_all(ds); lsae_dataset_close(ds); }
        else { fz_check_error(r, "lsae_dataset_open"); FZ_ASSERT(ds == NULL, "failed open returned a dataset"); }
        if (name[0]) {
            o.tensor_name = name;
            o.no_mmap = 1;
            r = lsae_dataset_open(path, &o, NULL, &ds);
            if (r == LSAE_OK) { fz_read_all(ds); lsae_dataset_close(ds); }
            else fz_check_error(r, "lsae_dataset_open");
        }
    }
    return 0;
}
