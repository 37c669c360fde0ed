/* The header included twice in one translation unit: once for the
   declarations, once with the implementation (stb's rule 1: the
   implementation must sit outside the include guard). Calling a function the
   implementation defines proves it was compiled, so a misplaced guard fails
   to link rather than passing quietly. Built as C and as C++. */
#include "../../latentsae.h"
#include "../../latentsae.h"
#define LATENTSAE_IMPLEMENTATION
#include "../../latentsae.h"
#include "../../latentsae.h" /* a second implementation include is a no-op */
#include <stdio.h>
#include <string.h>

int main(void)
{
    lsae_config c = lsae_config_default(16);
    lsae_model *m = NULL;
    float x[16] = { 1.0f }, acts[4];
    int32_t idx[4];
    c.k = 4;
    if (strcmp(lsae_version_string(), LSAE_VERSION_STRING) != 0) return 1;
    if (lsae_model_create(&c, NULL, &m) != LSAE_OK) return 1;
    if (lsae_model_encode(m, x, 1, 0, acts, idx) != LSAE_OK) return 1;
    lsae_model_free(m);
    printf("twice: ok\n");
    return 0;
}
