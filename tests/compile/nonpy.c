/* LSAE_NO_NPY: no .npy reader (see formats.h). */
#define LSAE_NO_NPY
#include "formats.h"
