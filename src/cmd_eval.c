#include <stdio.h>

#include "cli.h"

int cmd_eval(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "segattn: error: eval is not built yet\n");
    return SA_EXIT_USAGE;
}
