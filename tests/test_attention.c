/* The attention kernels (attend, criss-cross, vectorised softmax) against their plain references, and the
 * fast kernels' results bit-identical for 1 and 2 threads. */
#include <math.h>
#include <omp.h>

#include "attention.h"
#include "ops.h"
#include "testutil.h"

static float *rand_buf(size_t n, unsigned seed, float scale) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = scale * test_rand(&seed);
    return x;
}

static double rel_err(const float *ref, const float *got, size_t n) {
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < n; i++) {
        max_ref = fmax(max_ref, fabs(ref[i]));
        max_err = fmax(max_err, fabs((double)ref[i] - got[i]));
    }
    return max_err / (1e-30 + max_ref);
}

START_TEST(softmax_fast_matches) {
    static const int ns[] = {1, 3, 8, 13, 64, 105, 1000};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int n = ns[t];
        float *a = rand_buf((size_t)n, 11 + t, 20.f), *b = malloc((size_t)n * sizeof(float));
        memcpy(b, a, (size_t)n * sizeof(float));
        softmax_inplace(a, n);
        softmax_row_fast(b, n);
        for (int i = 0; i < n; i++) ck_assert_msg(fabsf(a[i] - b[i]) <= 1e-6f * (1 + a[i]), "softmax n %d at %d", n, i);
        free(a), free(b);
    }
}
END_TEST

static void check_attend(int d, int nq, int nk, int cv) {
    float *q = rand_buf((size_t)d * nq, 1, 1.f), *k = rand_buf((size_t)d * nk, 2, 1.f),
          *v = rand_buf((size_t)cv * nk, 3, 1.f);
    float *ref = malloc((size_t)cv * nq * sizeof(float)), *got = malloc((size_t)cv * nq * sizeof(float));
    float *scratch = malloc(attend_scratch_floats(d, nq, nk, cv, omp_get_max_threads()) * sizeof(float));
    float scale = 1.f / sqrtf((float)d);
    attend_reference(d, nq, nk, cv, q, k, v, scale, ref);
    attend(d, nq, nk, cv, q, nq, k, nk, v, nk, scale, got, nq, scratch);
    double e = rel_err(ref, got, (size_t)cv * nq);
    ck_assert_msg(e < 1e-5, "attend d %d nq %d nk %d cv %d: error %g", d, nq, nk, cv, e);
    free(q), free(k), free(v), free(ref), free(got), free(scratch);
}

START_TEST(attend_matches_reference) {
    check_attend(1, 1, 1, 1);
    check_attend(3, 5, 7, 2);
    check_attend(16, 37, 50, 19);
    check_attend(64, 300, 110, 64);
    check_attend(24, 2100, 600, 9); /* several query blocks */
    check_attend(32, 2100, 8192, 32); /* wide keys: blocks of 256 queries, scores past L2 */
}
END_TEST

static void cc_tensors(int d, int c, int h, int w, tensor *q, tensor *k, tensor *v, tensor *x) {
    *q = (tensor){d, h, w, rand_buf((size_t)d * h * w, 21, 1.f)};
    *k = (tensor){d, h, w, rand_buf((size_t)d * h * w, 22, 1.f)};
    *v = (tensor){c, h, w, rand_buf((size_t)c * h * w, 23, 1.f)};
    *x = (tensor){c, h, w, rand_buf((size_t)c * h * w, 24, 1.f)};
}

START_TEST(criss_cross_matches_reference) {
    /* the last: rows of 157 KiB, so each thread goes through its band in chunks of 13 rows */
    static const int shapes[][4] = {{2, 3, 1, 1}, {2, 5, 3, 4}, {16, 128, 9, 13}, {5, 70, 17, 6}, {8, 16, 1, 9}, {8, 512, 40, 64}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int d = shapes[t][0], c = shapes[t][1], h = shapes[t][2], w = shapes[t][3];
        tensor q, k, v, x;
        cc_tensors(d, c, h, w, &q, &k, &v, &x);
        tensor ref = {c, h, w, malloc((size_t)c * h * w * sizeof(float))};
        tensor got = {c, h, w, malloc((size_t)c * h * w * sizeof(float))};
        float *scratch = malloc(criss_cross_scratch_floats(d, c, h, w) * sizeof(float));
        criss_cross_reference(q, k, v, x, 0.7f, ref);
        criss_cross(q, k, v, x, 0.7f, got, scratch);
        double e = rel_err(ref.d, got.d, tensor_numel(ref));
        ck_assert_msg(e < 1e-5, "criss-cross d %d c %d %dx%d: error %g", d, c, h, w, e);
        free(q.d), free(k.d), free(v.d), free(x.d), free(ref.d), free(got.d), free(scratch);
    }
}
END_TEST

/* Runs `fill(out)` with 1 and then 2 OpenMP threads; the outputs must be the same bits. */
typedef void (*kernel_fn)(float *out);

static void same_bits(kernel_fn fn, size_t n, const char *what) {
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    fn(a);
    omp_set_num_threads(2);
    fn(b);
    omp_set_num_threads(saved);
    ck_assert_msg(memcmp(a, b, n * sizeof(float)) == 0, "%s differs between 1 and 2 threads", what);
    free(a), free(b);
}

static void run_gemm(float *c) {
    float *a = rand_buf(300 * 517, 31, 1.f), *b = rand_buf(517 * 701, 32, 1.f);
    gemm(0, 0, 300, 701, 517, 1.f, a, 517, b, 701, 0.f, c, 701);
    free(a), free(b);
}

static void run_conv_ch(float *out, int k, int stride, int dil, int cin, int cout) {
    conv2d c = {.cout = cout, .cin = cin, .kh = k, .kw = k, .stride = stride, .pad = dil * (k / 2), .dil = dil,
                .relu = 1, .name = "t"};
    size_t nw = (size_t)cout * cin * k * k;
    float *w = rand_buf(nw, 41, 0.2f);
    c.w = gemm_alloc(nw), c.b = rand_buf(cout, 42, 1.f); /* conv_free gives w back with gemm_free */
    memcpy(c.w, w, nw * sizeof(float));
    free(w);
    tensor in = {cin, 61, 77, rand_buf((size_t)cin * 61 * 77, 43, 1.f)};
    int oh, ow;
    conv_out_size(&c, in.h, in.w, &oh, &ow);
    tensor o = {cout, oh, ow, out};
    tensor res = {cout, oh, ow, rand_buf((size_t)cout * oh * ow, 44, 1.f)};
    float *scratch = malloc((conv_scratch_floats(&c, in) + 16) * sizeof(float)); /* sized for the current threads */
    conv_fast(&c, in, o, &res, scratch);
    free(scratch), free(in.d), free(res.d);
    conv_free(&c);
}
static void run_conv(float *out, int k, int stride, int dil) { run_conv_ch(out, k, stride, dil, 33, 40); }
static void run_conv_wino_lean(float *out) { run_conv_ch(out, 3, 1, 4, 256, 264); } /* U > 8 MiB: rebuilt per batch */
static void run_conv_wino(float *out) { run_conv(out, 3, 1, 2); }
static void run_conv_im2col(float *out) { run_conv(out, 3, 2, 1); }
static void run_conv_1x1(float *out) { run_conv(out, 1, 1, 1); }

static void run_attend(float *out) {
    float *q = rand_buf(32 * 900, 51, 1.f), *k = rand_buf(32 * 700, 52, 1.f), *v = rand_buf(48 * 700, 53, 1.f);
    float *scratch = malloc(attend_scratch_floats(32, 900, 700, 48, omp_get_max_threads()) * sizeof(float));
    attend(32, 900, 700, 48, q, 900, k, 700, v, 700, 0.3f, out, 900, scratch);
    free(q), free(k), free(v), free(scratch);
}

/* 8192 keys: 256 queries per block on 1 thread, 80 on 2 (4 blocks per thread). */
static void run_attend_wide(float *out) {
    float *q = rand_buf(32 * 600, 54, 1.f), *k = rand_buf(32 * 8192, 55, 1.f), *v = rand_buf(40 * 8192, 56, 1.f);
    float *scratch = malloc(attend_scratch_floats(32, 600, 8192, 40, omp_get_max_threads()) * sizeof(float));
    attend(32, 600, 8192, 40, q, 600, k, 8192, v, 8192, 0.3f, out, 600, scratch);
    free(q), free(k), free(v), free(scratch);
}

static void run_cc_shape(float *out, int d, int c, int h, int w) {
    tensor q, k, v, x;
    cc_tensors(d, c, h, w, &q, &k, &v, &x);
    float *scratch = malloc(criss_cross_scratch_floats(d, c, h, w) * sizeof(float)); /* sized for the current threads */
    tensor o = {c, h, w, out};
    criss_cross(q, k, v, x, 0.5f, o, scratch);
    free(q.d), free(k.d), free(v.d), free(x.d), free(scratch);
}
static void run_cc(float *out) { run_cc_shape(out, 16, 64, 23, 31); }
static void run_cc_chunked(float *out) { run_cc_shape(out, 8, 512, 40, 64); } /* chunks of 13 rows: 1 thread 4, 2 threads 2 + 2 */

START_TEST(kernels_thread_count_invariant) {
    same_bits(run_gemm, 300 * 701, "gemm");
    same_bits(run_conv_wino, 40 * 61 * 77, "winograd conv");
    same_bits(run_conv_wino_lean, 264 * 61 * 77, "winograd conv, U rebuilt per batch");
    same_bits(run_conv_im2col, 40 * 31 * 39, "im2col conv");
    same_bits(run_conv_1x1, 40 * 61 * 77, "1x1 conv");
    same_bits(run_attend, 48 * 900, "attend");
    same_bits(run_attend_wide, 40 * 600, "attend, wide keys");
    same_bits(run_cc, 64 * 23 * 31, "criss-cross");
    same_bits(run_cc_chunked, 512 * 40 * 64, "criss-cross in chunks of rows");
}
END_TEST

Suite *attention_suite(void) {
    Suite *s = suite_create("attention");
    TCase *t = tcase_create("kernels");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, softmax_fast_matches);
    tcase_add_test(t, attend_matches_reference);
    tcase_add_test(t, criss_cross_matches_reference);
    tcase_add_test(t, kernels_thread_count_invariant);
    suite_add_tcase(s, t);
    return s;
}
