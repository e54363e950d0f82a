/* The loader's widening of F16 and BF16 (vector and parallel) against the scalar definitions, over every
 * 16-bit pattern, from a data offset that is not a multiple of the vector width. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weights.h"

#define PATTERNS 65536
#define EXTRA 5 /* a tail shorter than a vector */

static void write_patterns(const char *path) {
    int n = PATTERNS + EXTRA;
    char header[512];
    /* "pad" (1 F16) in front puts the other tensors at odd half-word offsets of the data */
    int len = snprintf(header, sizeof header,
                       "{\"pad\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]},"
                       "\"h\":{\"dtype\":\"F16\",\"shape\":[%d],\"data_offsets\":[2,%d]},"
                       "\"b\":{\"dtype\":\"BF16\",\"shape\":[%d],\"data_offsets\":[%d,%d]}}",
                       n, 2 + 2 * n, n, 2 + 2 * n, 2 + 4 * n);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    uint64_t hl = (uint64_t)len;
    ck_assert_int_eq(fwrite(&hl, 8, 1, f), 1);
    ck_assert_int_eq(fwrite(header, 1, (size_t)len, f), (size_t)len);
    uint16_t v = 0;
    ck_assert_int_eq(fwrite(&v, 2, 1, f), 1);
    for (int copy = 0; copy < 2; copy++)
        for (int i = 0; i < n; i++) {
            v = (uint16_t)(i % PATTERNS);
            ck_assert_int_eq(fwrite(&v, 2, 1, f), 1);
        }
    ck_assert_int_eq(fclose(f), 0);
}

static void expect_same(const float *got, float (*scalar)(uint16_t), int n) {
    for (int i = 0; i < n; i++) {
        float want = scalar((uint16_t)(i % PATTERNS));
        if (isnan(want)) {
            ck_assert_msg(isnan(got[i]), "pattern %#x: %g, expected a NaN", i % PATTERNS, got[i]);
            continue;
        }
        ck_assert_msg(memcmp(&got[i], &want, 4) == 0, "pattern %#x: %a, expected %a", i % PATTERNS, got[i], want);
    }
}

START_TEST(widening_matches_scalar_for_every_pattern) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/sa_widen_%d.safetensors", (int)getpid());
    write_patterns(path);
    weight_store ws = {0};
    sa_error err = {0};
    ck_assert_int_eq(weights_open(&ws, path, &err), SA_OK);
    ck_assert_int_eq(weights_finish(&ws, &err), SA_OK);
    int n = PATTERNS + EXTRA;
    int64_t shape[1] = {n};
    float *out = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(weights_read(&ws, "h", 1, shape, out, &err), SA_OK);
    expect_same(out, f16_to_f32, n);
    /* exponent all ones: 2 signs x 1024 mantissas, and the tail repeats patterns 0..4 (finite) */
    ck_assert_int_eq(weights_find(&ws, "h")->nonfinite, 2048);
    ck_assert_int_eq(weights_read(&ws, "b", 1, shape, out, &err), SA_OK);
    expect_same(out, bf16_to_f32, n);
    ck_assert_int_eq(weights_find(&ws, "b")->nonfinite, 2 * 128); /* 8 exponent bits all ones, 7 free */
    free(out);
    weights_close(&ws);
    unlink(path);
}
END_TEST

Suite *weights_suite(void) {
    Suite *s = suite_create("weights");
    TCase *t = tcase_create("widening");
    tcase_add_test(t, widening_matches_scalar_for_every_pattern);
    suite_add_tcase(s, t);
    return s;
}
