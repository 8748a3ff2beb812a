/*
 * freeport: prints N (default 1, at most 64) distinct free TCP ports on
 * 127.0.0.1, space-separated on one line, for scripts such as ./quickstart.sh
 * that have no portable way to ask the kernel. Usage: freeport [N]
 */
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "tests/integration/harness.h"

int main(int argc, char **argv)
{
    char errmsg[TPDB_ERRMSG_SIZE] = "";
    unsigned ports[64];
    unsigned long n = 1;
    if (argc > 2 || (argc == 2 && (n = strtoul(argv[1], NULL, 10)) == 0)) {
        fprintf(stderr, "usage: freeport [N]\n");
        return 2;
    }
    if (n > 64 || harnessFreePorts(ports, (unsigned)n, errmsg) != TPDB_OK) {
        fprintf(stderr, "freeport: %s\n", n > 64 ? "N is at most 64" : errmsg);
        return 1;
    }
    for (unsigned long i = 0; i < n; i++) {
        printf("%s%u", i > 0 ? " " : "", ports[i]);
    }
    printf("\n");
    return 0;
}
