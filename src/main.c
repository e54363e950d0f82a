/* The command line: argument parsing and the sub-commands. No arithmetic lives here; this is the only
 * file that prints to the user or picks an exit code. */
#include <getopt.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char *USAGE =
    "segattn — attention-based semantic segmentation on the CPU (mmsegmentation models)\n"
    "\n"
    "usage: segattn <command> [options]\n"
    "\n"
    "commands:\n"
    "  predict   segment images: segattn predict [-c MODEL.json] IMAGE|DIR|@LIST ...\n"
    "  eval      score a model on a dataset split (CamVid, Cityscapes, Pascal VOC layouts)\n"
    "  info      print a model's layers, output shapes, parameters and MACs\n"
    "  bench     time a model (or one context module) on a given input size\n"
    "\n"
    "Run 'segattn <command> --help' for the options of each command.\n"
    "\n"
    "exit codes: 0 success, 2 usage, 3 input (image, list, dataset), 4 model (config or weights),\n"
    "            5 output (cannot write), 6 internal (out of memory), 130 interrupted (run again to resume)\n";

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
#ifdef __GLIBC__
    /* Source weights are freed once packed or transformed; a fixed mmap threshold gives those blocks back
     * to the system instead of letting glibc raise the threshold and keep them in its heap (-40 MiB peak
     * RSS on the R18 model). */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
#endif
    const char *cmd = argv[1];
    if (strcmp(cmd, "predict") == 0) return cmd_predict(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    fprintf(stderr, "segattn: unknown command '%s' (try segattn --help)\n", cmd);
    return 2;
}
