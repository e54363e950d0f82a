/* Sub-commands of the segattn program and the helpers they share. */
#ifndef SA_CLI_H
#define SA_CLI_H
#include "segattn.h"

int cmd_predict(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* configs/camvid_r18-d8_ccnet.json beside the executable (or under $SEGATTN_HOME). */
const char *default_config_path(void);
/* One located line on stderr for an error. */
void report(const sa_error *err);
int parse_threads(const char *s, int *out);
/* Reports unused tensors, and weights that are NaN or infinite, as one warning line each. */
void warn_unused(const char *config, const sa_model *m);

#endif
