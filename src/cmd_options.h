/* Command-line options shared by predict and eval (implemented in cmd_predict.c). */
#ifndef SA_CMD_OPTIONS_H
#define SA_CMD_OPTIONS_H
#include <getopt.h>

#include "segattn.h"

enum { OPT_MODE = 300, OPT_CROP, OPT_STRIDE, OPT_SCALE, OPT_TTA, OPT_FLIP };

#define INFER_LONGOPTS                                                                                      \
    {"mode", required_argument, 0, OPT_MODE}, {"crop", required_argument, 0, OPT_CROP},                     \
        {"stride", required_argument, 0, OPT_STRIDE}, {"scale", required_argument, 0, OPT_SCALE},          \
        {"tta", required_argument, 0, OPT_TTA}, {"flip", no_argument, 0, OPT_FLIP}

extern const char *const INFER_HELP;

/* Handles one of the INFER_LONGOPTS: 1 when taken, 0 when `opt` is not one of them, -1 after printing
 * a usage error. */
int parse_infer_option(int opt, const char *arg, sa_run_opts *ro);
/* The model a command runs: -c CONFIG, -w WEIGHTS (repeatable), and -t THREADS into the run options. */
typedef struct {
    const char *config;
    const char *weights[16];
    int n_weights;
} model_args;

/* Handles -c, -w and -t: 1 when taken, 0 when `opt` is none of them, -1 after printing a usage error. */
int parse_model_option(int opt, const char *arg, model_args *ma, sa_run_opts *ro);

/* "K/N" with 1 <= K <= N. */
int parse_shard(const char *s, int *k, int *n);
/* A progress line on a terminal: "\r[done/total] rate img/s  ETA". */
void progress_tty(int i, int n, int done, double elapsed);

#endif
