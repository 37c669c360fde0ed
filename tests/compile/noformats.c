/* Every optional format left out at once, only the core left (see
   formats.h): helpers the readers share must not be left unused. */
#define LSAE_NO_TORCH
#define LSAE_NO_NPY
#define LSAE_NO_SAELENS
#define LSAE_NO_HF
#include "formats.h"
