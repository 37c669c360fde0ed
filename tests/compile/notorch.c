/* LSAE_NO_TORCH: no torch .pt reader (see formats.h). */
#define LSAE_NO_TORCH
#include "formats.h"
