/* LSAE_NO_STDIO: the library without any file function (no stdio, no
   POSIX calls) still compiles warning-free and encodes from memory. */
#define LSAE_NO_STDIO
#define LATENTSAE_IMPLEMENTATION
#include "../../latentsae.h"
#include <stdio.h>

int main(void)
{
    lsae_config c = lsae_config_default(8);
    lsae_model *m = NULL;
    float x[8] = { 1.0f }, acts[2];
    int32_t idx[2];
    c.k = 2;
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK || lsae_model_encode(m, x, 1, 0, acts, idx) != LSAE_OK) return 1;
    lsae_model_free(m);
    printf("nostdio: ok\n");
    return 0;
}
