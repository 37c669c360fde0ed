/* LSAE_NO_SAELENS: no SAELens conversion (see formats.h). */
#define LSAE_NO_SAELENS
#include "formats.h"
