/* The pickle inside a torch .pt file. The input is data.pkl alone:
   - on memory, through the stack machine (lsae__pickle_run) and the choice
     of tensor (lsae__pickle_pick);
   - wrapped in a well-formed torch.save zip (archive/data.pkl = the input,
     archive/byteorder, storages archive/data/0 (256 bytes), data/1 (32) and
     data/2 (64)), opened as an embeddings dataset so the tensor's storage,
     offset, size and stride are checked against real entries, rows read.
   Mutating a whole .pt file (fuzz_torch.c) rarely gets a changed pickle
   past the zip layer; this harness starts behind it. */
#include "fuzz_common.h"

static unsigned char *zbuf;
static size_t zlen, zcap;

static void zput(const void *p, size_t n)
{
    if (zlen + n > zcap) {
        size_t nc = zcap ? zcap : 4096;
        unsigned char *nb;
        while (nc < zlen + n) nc *= 2;
        nb = (unsigned char *)realloc(zbuf, nc);
        if (!nb) abort();
        zbuf = nb;
        zcap = nc;
    }
    memcpy(zbuf + zlen, p, n);
    zlen += n;
}

static void zle(uint64_t v, int n)
{
    unsigned char b[8];
    lsae__put_le(b, v, n);
    zput(b, (size_t)n);
}

typedef struct { const char *name; const unsigned char *data; size_t len; size_t off; } zent;

/* a stored (uncompressed) zip, as torch.save writes one; CRCs are not checked by the reader */
static void make_zip(zent *e, int n)
{
    int i;
    size_t cd;
    zlen = 0;
    for (i = 0; i < n; ++i) {
        e[i].off = zlen;
        zle(0x04034b50u, 4); zle(20, 2); zle(0, 2); zle(0, 2); zle(0, 2); zle(0, 2);
        zle(0, 4); zle(e[i].len, 4); zle(e[i].len, 4); zle(strlen(e[i].name), 2); zle(0, 2);
        zput(e[i].name, strlen(e[i].name));
        if (e[i].len) zput(e[i].data, e[i].len);
    }
    cd = zlen;
    for (i = 0; i < n; ++i) {
        zle(0x02014b50u, 4); zle(20, 2); zle(20, 2); zle(0, 2); zle(0, 2); zle(0, 2); zle(0, 2);
        zle(0, 4); zle(e[i].len, 4); zle(e[i].len, 4); zle(strlen(e[i].name), 2); zle(0, 2); zle(0, 2);
        zle(0, 2); zle(0, 2); zle(0, 4); zle(e[i].off, 4);
        zput(e[i].name, strlen(e[i].name));
    }
    zle(0x06054b50u, 4); zle(0, 2); zle(0, 2); zle((uint64_t)n, 2); zle((uint64_t)n, 2);
    zle(zlen - cd, 4); zle(cd, 4); zle(0, 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char s0[256], s1[32], s2[64];
    char path[600];
    lsae__pickle P;
    lsae_result r;
    size_t top = 0, found, i;
    int pass;
    fz_input_size = size;

    /* on memory */
    memset(&P, 0, sizeof P);
    P.p = data;
    P.len = size;
    P.path = "mem/data.pkl";
    r = lsae__pickle_run(&P, &top);
    fz_result("lsae__pickle_run", r);
    if (r == LSAE_OK) {
        FZ_ASSERT(top < P.nv, "result value %zu of %zu", top, P.nv);
        for (i = 0; i < P.nv; ++i) {
            const lsae__pv *v = &P.v[i];
            if (v->type == LSAE__PV_STR) FZ_ASSERT(v->s <= size && v->n <= size - v->s, "string [%zu, +%zu) outside %zu bytes", v->s, v->n, size);
            if (v->type == LSAE__PV_TUPLE || v->type == LSAE__PV_LIST || v->type == LSAE__PV_DICT)
                FZ_ASSERT(v->s <= P.nk && v->n <= P.nk - v->s, "children [%zu, +%zu) outside %zu", v->s, v->n, P.nk);
        }
        (void)lsae__pickle_pick(&P, top, NULL, &found);
        (void)lsae__pickle_pick(&P, top, "x", &found);
    } else {
        fz_check_error(r, "lsae__pickle_run");
    }
    lsae__free(NULL, P.v);
    lsae__free(NULL, P.kids);
    lsae__free(NULL, P.stack);
    lsae__free(NULL, P.memo);

    /* in a torch.save archive */
    {
        zent e[6];
        for (i = 0; i < sizeof s0 / 4; ++i) { float f = (float)i; memcpy(s0 + 4 * i, &f, 4); }
        for (i = 0; i < sizeof s1; ++i) s1[i] = (unsigned char)(i * 37u);
        for (i = 0; i < sizeof s2; ++i) s2[i] = (unsigned char)(i * 11u);
        e[0].name = "archive/data.pkl"; e[0].data = data; e[0].len = size;
        e[1].name = "archive/byteorder"; e[1].data = (const unsigned char *)"little"; e[1].len = 6;
        e[2].name = "archive/data/0"; e[2].data = s0; e[2].len = sizeof s0;
        e[3].name = "archive/data/1"; e[3].data = s1; e[3].len = sizeof s1;
        e[4].name = "archive/data/2"; e[4].data = s2; e[4].len = sizeof s2;
        e[5].name = "archive/version"; e[5].data = (const unsigned char *)"3\n"; e[5].len = 2;
        make_zip(e, 6);
        fz_input_size = zlen;
        fz_path(path, sizeof path, "x.pt");
        fz_write(path, zbuf, zlen);
    }
    for (pass = 0; pass < 2; ++pass) {
        lsae_dataset_options o = lsae_dataset_options_default();
        o.format = LSAE_FORMAT_TORCH;
        o.tensor_name = pass ? "x" : NULL;
        o.no_mmap = pass;
        fz_open_read_all(path, &o, 0);
    }
    return 0;
}
