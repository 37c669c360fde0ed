/* LATENTSAE_STATIC: every function static to this file, so two libraries
   built into one program cannot clash. */
#define LATENTSAE_STATIC
#define LATENTSAE_IMPLEMENTATION
#include "../../latentsae.h"
#include <stdio.h>

int main(void)
{
    lsae_config c = lsae_config_default(8);
    printf("static: %s\n", lsae_config_validate(&c) == LSAE_OK ? "ok" : lsae_last_error());
    return lsae_config_validate(&c) == LSAE_OK ? 0 : 1;
}
