/* Helpers shared by the Check suites. */
#ifndef SA_TESTUTIL_H
#define SA_TESTUTIL_H
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights.h"

/* Reads any float tensor of a safetensors file into a malloc'd array; shape into dims (may be NULL). */
static inline float *load_tensor(const char *path, const char *name, int *ndim, int64_t *dims) {
    weight_store ws = {0};
    sa_error err = {0};
    if (weights_open(&ws, path, &err) || weights_finish(&ws, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        weights_close(&ws);
        return NULL;
    }
    const st_tensor *t = weights_find(&ws, name);
    float *out = NULL;
    if (t) {
        size_t n = 1;
        for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
        out = malloc((n ? n : 1) * sizeof(float));
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        int nd = t->ndim;
        if (ndim) *ndim = nd;
        if (dims) memcpy(dims, shape, (size_t)nd * sizeof *dims);
        if (weights_read(&ws, name, nd, shape, out, &err)) free(out), out = NULL;
    }
    weights_close(&ws);
    return out;
}

/* Deterministic values in [-1, 1). */
static inline float test_rand(unsigned *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 16777216.f * 2.f - 1.f;
}

/* The program under test: $SEGATTN_BIN (make asan-test points it at the sanitized build), else ./segattn. */
static inline const char *segattn_bin(void) {
    const char *b = getenv("SEGATTN_BIN");
    return b && *b ? b : "./segattn";
}

/* Runs a shell command, returns its exit status (or -1). */
static inline int run_status(const char *cmd) {
    int s = system(cmd);
    return s == -1 ? -1 : (s & 0x7f) ? 128 + (s & 0x7f) : (s >> 8) & 0xff;
}

#endif
