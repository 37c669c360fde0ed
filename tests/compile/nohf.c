/* LSAE_NO_HF: no Hugging Face cache lookup (see formats.h). */
#define LSAE_NO_HF
#include "formats.h"
