/* Hugging Face cache resolution (lsae_hf_resolve, lsae_model_load_hf) on a
   fake cache tree built from the input:
     byte 0          mode: bit 0 the cache is $HF_HOME/hub (else $HF_HUB_CACHE);
                     bit 1 a subfolder is passed (else NULL); bit 2 the refs
                     file exists; bit 3 a small output buffer (16 + 8 * (mode >> 4))
     then, split at NUL bytes:
       the repo id as a user types it (OWNER/NAME[@REV])
       the subfolder
       the refs/REV file's text (a commit hash, as huggingface_hub writes it)
       names of snapshot folders to create (each also gets the subfolder)
   The tree holds what the input names where the name is a plain path inside
   it; the snapshot the refs file names is created too. A resolved path must
   be a directory inside one snapshot folder of the repo (not the snapshots
   folder itself), fit the buffer, and be reached without "..". */
#define _XOPEN_SOURCE 700 /* realpath */
#include "fuzz_common.h"
#include <limits.h>

#define MAXF 12

static int safe_name(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || n > 100 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return 0;
    for (i = 0; i < n; ++i)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '/' || s[i] == '\\') return 0;
    return 1;
}

/* a relative path of safe names */
static int safe_path(const char *s)
{
    const char *p = s, *q;
    if (!*s || strlen(s) > 300) return 0;
    for (;;) {
        q = strchr(p, '/');
        if (!safe_name(p, q ? (size_t)(q - p) : strlen(p))) return 0;
        if (!q) return 1;
        p = q + 1;
    }
}

/* mkdir -p base/rel (rel already checked by safe_path) */
static void mkdirs(const char *base, const char *rel)
{
    char buf[1024];
    size_t i, n;
    if (snprintf(buf, sizeof buf, "%s/%s", base, rel) >= (int)sizeof buf) return;
    n = strlen(buf);
    for (i = strlen(base) + 1; i <= n; ++i) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            mkdir(buf, 0777);
            buf[i] = c;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char root[600], hub[700], models[1024], tmp[1200], out[4096], realhub[PATH_MAX], realout[PATH_MAX];
    char *copy, *f[MAXF], *at;
    size_t nf = 0, i, cap;
    int mode;
    const char *repo, *sub, *refs;
    char id[256], rev[256];
    lsae_result r;
    fz_input_size = size;
    if (size < 1) return 0;
    mode = data[0];
    copy = (char *)malloc(size + 1);
    if (!copy) abort();
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = 0;
    f[nf++] = copy;
    for (i = 0; i + 1 < size && nf < MAXF; ++i)
        if (copy[i] == 0) f[nf++] = copy + i + 1;
    repo = f[0];
    sub = nf > 1 ? f[1] : "";
    refs = nf > 2 ? f[2] : "";

    /* the tree */
    fz_path(root, sizeof root, "hf");
    fz_rm_tree(root);
    mkdir(root, 0777);
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    unsetenv("HF_HOME");
    unsetenv("XDG_CACHE_HOME");
    if (mode & 1) {
        setenv("HF_HOME", root, 1);
        snprintf(hub, sizeof hub, "%s/hub", root);
    } else {
        snprintf(hub, sizeof hub, "%s/cache", root);
        setenv("HF_HUB_CACHE", hub, 1);
    }
    mkdir(hub, 0777);
    at = strchr(repo, '@');
    snprintf(id, sizeof id, "%.*s", at ? (int)(at - repo) : (int)strlen(repo), repo);
    snprintf(rev, sizeof rev, "%s", at ? at + 1 : "main");
    {
        char *slash = strchr(id, '/');
        if (slash && safe_name(id, (size_t)(slash - id)) && safe_name(slash + 1, strlen(slash + 1)))
            snprintf(models, sizeof models, "%s/models--%.*s--%s", hub, (int)(slash - id), id, slash + 1);
        else
            snprintf(models, sizeof models, "%s/models--o--n", hub);
    }
    mkdir(models, 0777);
    snprintf(tmp, sizeof tmp, "%s/snapshots", models);
    mkdir(tmp, 0777);
    if ((mode & 4) && safe_path(rev)) {
        char rp[1400];
        mkdirs(models, "refs");
        snprintf(rp, sizeof rp, "%s/refs", models);
        if (strchr(rev, '/')) {
            char d[300];
            snprintf(d, sizeof d, "%.*s", (int)(strrchr(rev, '/') - rev), rev);
            mkdirs(rp, d);
        }
        snprintf(rp, sizeof rp, "%s/refs/%s", models, rev);
        fz_write(rp, refs, strlen(refs));
    }
    {
        /* the snapshot the refs file names, and the ones listed */
        char h[256];
        size_t n = strlen(refs);
        while (n && (refs[n - 1] == '\n' || refs[n - 1] == '\r' || refs[n - 1] == ' ')) --n;
        snprintf(h, sizeof h, "%.*s", (int)(n < 255 ? n : 255), refs);
        for (i = 2; i < nf; ++i) {
            const char *name = i == 2 ? h : f[i];
            if (!safe_name(name, strlen(name))) continue;
            mkdirs(tmp, name);
            if (*sub && safe_path(sub)) {
                char s2[700];
                snprintf(s2, sizeof s2, "%s/%s", name, sub);
                if (strlen(name) + 1 + strlen(sub) < sizeof s2) mkdirs(tmp, s2);
            }
        }
    }

    cap = (mode & 8) ? 16 + 8 * (size_t)(mode >> 4) : sizeof out;
    memset(out, 'Z', sizeof out);
    r = lsae_hf_resolve(repo, (mode & 2) ? sub : NULL, out, cap);
    fz_result("lsae_hf_resolve", r);
    if (r == LSAE_OK) {
        FZ_ASSERT(memchr(out, 0, cap) != NULL, "resolved path not terminated within %zu bytes", cap);
        FZ_ASSERT(strncmp(out, hub, strlen(hub)) == 0 && out[strlen(hub)] == '/', "'%s' is not under the cache %s", out, hub);
        FZ_ASSERT(strstr(out, "/../") == NULL, "'%s' walks with ..", out);
        FZ_ASSERT(lsae__is_dir(out), "'%s' is not a directory", out);
        /* inside a snapshot: strictly below models--OWNER--NAME/snapshots/ */
        snprintf(tmp, sizeof tmp, "%s/snapshots", models);
        FZ_ASSERT(realpath(tmp, realhub) && realpath(out, realout) && strncmp(realout, realhub, strlen(realhub)) == 0 &&
                  realout[strlen(realhub)] == '/', "'%s' is not inside a snapshot of %s", out, models);
    } else {
        fz_check_error(r, "lsae_hf_resolve");
        FZ_ASSERT(out[0] == 0, "failed resolve left text in the path");
    }
    {
        lsae_model *m = NULL;
        r = lsae_model_load_hf(repo, (mode & 2) ? sub : NULL, NULL, &m);
        FZ_ASSERT(r != LSAE_OK && m == NULL, "a model loaded from an empty snapshot");
        fz_check_error(r, "lsae_model_load_hf");
    }
    free(copy);
    return 0;
}
