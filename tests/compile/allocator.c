/* LSAE_MALLOC/LSAE_FREE overridden at compile time, and an lsae_allocator at
   run time: every byte the library takes comes back. */
#include <stdio.h>
#include <stdlib.h>
static long live_blocks = 0;
static void *counting_malloc(size_t n, void *ctx) { (void)ctx; ++live_blocks; return malloc(n); }
static void counting_free(void *p, void *ctx) { (void)ctx; if (p) --live_blocks; free(p); }
#define LSAE_MALLOC(sz, ctx) counting_malloc((sz), (ctx))
#define LSAE_FREE(p, ctx) counting_free((p), (ctx))
#define LATENTSAE_IMPLEMENTATION
#include "../../latentsae.h"

static long user_blocks = 0;
static void *user_malloc(size_t n, void *u) { ++*(long *)u; return malloc(n); }
static void user_free(void *p, void *u) { if (p) --*(long *)u; free(p); }

int main(void)
{
    lsae_config c = lsae_config_default(8);
    lsae_model *m = NULL;
    lsae_trainer *t = NULL;
    lsae_allocator a;
    float x[4 * 8];
    int i;
    for (i = 0; i < 32; ++i) x[i] = (float)(i % 7) - (float)(i % 3);
    c.k = 2;
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK || lsae_trainer_create(m, &c, &t) != LSAE_OK) return 1;
    if (lsae_trainer_step(t, x, 4, NULL) != LSAE_OK) return 1;
    lsae_trainer_free(t);
    lsae_model_free(m);
    if (live_blocks != 0) { printf("allocator: %ld blocks leaked through LSAE_MALLOC\n", live_blocks); return 1; }
    a.user = &user_blocks; a.malloc_fn = user_malloc; a.free_fn = user_free;
    if (lsae_model_create(&c, &a, &m) != LSAE_OK || lsae_trainer_create(m, &c, &t) != LSAE_OK) return 1;
    if (lsae_trainer_step(t, x, 4, NULL) != LSAE_OK) return 1;
    if (user_blocks == 0 || live_blocks != 0) { printf("allocator: the run-time allocator was not used\n"); return 1; }
    lsae_trainer_free(t);
    lsae_model_free(m);
    a.free_fn = NULL;
    if (lsae_model_create(&c, &a, &m) != LSAE_INVALID_ARGS) { printf("allocator: half an allocator accepted\n"); return 1; }
    printf("allocator: %s\n", user_blocks == 0 ? "ok" : "leak");
    return user_blocks == 0 ? 0 : 1;
}
