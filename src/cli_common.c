#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

const char *default_config_path(void) {
    static char path[PATH_MAX + 64];
    const char *home = getenv("SEGATTN_HOME");
    char exe[PATH_MAX];
    if (home && *home) {
        snprintf(path, sizeof path, "%s/configs/camvid_r18-d8_ccnet.json", home);
        return path;
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return "configs/camvid_r18-d8_ccnet.json";
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(path, sizeof path, "%s/configs/camvid_r18-d8_ccnet.json", exe);
    return path;
}

void report(const sa_error *err) { fprintf(stderr, "segattn: error: %s\n", err->msg); }

int parse_threads(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v < 1 || v > 1024) return 0;
    *out = (int)v;
    return 1;
}

void warn_unused(const char *config, const sa_model *m) {
    const char *unused = sa_model_unused_tensors(m);
    if (unused) fprintf(stderr, "segattn: warning: %s: weights not used by the model: %s\n", config, unused);
    const char *nonfinite = sa_model_nonfinite_weights(m);
    if (nonfinite) fprintf(stderr, "segattn: warning: %s\n", nonfinite);
}
