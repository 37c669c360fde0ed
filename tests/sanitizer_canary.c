/* A throwaway program with a planted fault, built with the same sanitizer
   flags as the suite: `canary leak` loses a block, `canary overflow` writes
   one byte past one, `canary clean` does neither. `make test-sanitize` runs
   all three first and fails unless the two faults are reported (and the
   clean run is not): a sanitizer that is silently off (LeakSanitizer cannot
   run under some debuggers and sandboxes, and then says nothing) would
   otherwise make every "no leak" of the suite mean nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    /* the size comes from the command line so that no compiler can see
       through the fault and remove it */
    size_t n = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 24;
    char *volatile p = (char *)malloc(n);
    if (!p || argc < 2) return 2;
    memset(p, 1, n);
    if (!strcmp(argv[1], "overflow")) p[n] = 7;         /* one past the end */
    else if (!strcmp(argv[1], "leak")) p = NULL;        /* the only pointer gone */
    else if (strcmp(argv[1], "clean") != 0) return 2;
    printf("canary %s: %d\n", argv[1], p ? p[0] : 0);
    free(p);
    return 0;
}
