/* Every file format compiled in (the default): see formats.h. */
#include "formats.h"
