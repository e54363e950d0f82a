/* The shipped convolution and GEMM against their plain references, over a sweep of shapes. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops.h"
#include "testutil.h"

static void fill(float *x, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) x[i] = test_rand(&seed);
}

/* A conv with pseudo-random weights and bias (seeds seed, seed + 1), and a pseudo-random input for it. */
static conv2d test_conv(int cin, int cout, int k, int stride, int pad, int dil, int relu, unsigned seed) {
    conv2d c = {.cout = cout, .cin = cin, .kh = k, .kw = k, .stride = stride, .pad = pad, .dil = dil, .relu = relu, .name = "test"};
    c.w = gemm_alloc((size_t)cout * cin * k * k); /* conv_free gives it back with gemm_free */
    c.b = malloc((size_t)cout * sizeof(float));
    fill(c.w, (size_t)cout * cin * k * k, seed), fill(c.b, (size_t)cout, seed + 1);
    return c;
}

static tensor test_input(int c, int h, int w, unsigned seed) {
    tensor in = {c, h, w, malloc((size_t)c * h * w * sizeof(float))};
    fill(in.d, tensor_numel(in), seed);
    return in;
}

/* A buffer for the output of conv c on input in. */
static tensor test_output(const conv2d *c, tensor in) {
    int oh, ow;
    conv_out_size(c, in.h, in.w, &oh, &ow);
    return (tensor){c->cout, oh, ow, malloc((size_t)c->cout * oh * ow * sizeof(float))};
}

/* max|ref − got| / (1 + max|ref|): the error on the layer's own scale. */
static double scaled_error(tensor ref, const float *got) {
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < tensor_numel(ref); i++) {
        max_ref = fmax(max_ref, fabs(ref.d[i]));
        max_err = fmax(max_err, fabs(ref.d[i] - got[i]));
    }
    return max_err / (1.0 + max_ref);
}

/* conv_fast against conv_reference; returns max|error| / (1 + max|ref|), the layer's scale. */
static double conv_error(int cin, int cout, int k, int stride, int pad, int dil, int h, int w, int relu,
                         int with_residual) {
    conv2d c = test_conv(cin, cout, k, stride, pad, dil, relu, 1);
    tensor in = test_input(cin, h, w, 3);
    tensor ref = test_output(&c, in), got = test_output(&c, in), res = test_output(&c, in);
    fill(res.d, tensor_numel(res), 4);
    float *scratch = malloc((conv_scratch_floats(&c, in) + 1) * sizeof(float));
    conv_reference(&c, in, ref, with_residual ? &res : NULL);
    conv_fast(&c, in, got, with_residual ? &res : NULL, scratch);
    double worst = scaled_error(ref, got.d);
    conv_free(&c);
    free(in.d), free(ref.d), free(got.d), free(res.d), free(scratch);
    return worst;
}

static void check_conv(int cin, int cout, int k, int stride, int dil, int h, int w, int relu, int with_residual) {
    double worst = conv_error(cin, cout, k, stride, dil * (k / 2), dil, h, w, relu, with_residual);
    double tol = k == 3 && stride == 1 ? 5e-5 : 5e-6; /* Winograd runs 3×3 stride 1: ~10× the rounding */
    ck_assert_msg(worst < tol, "conv cin %d cout %d k %d s %d d %d %dx%d: error %g", cin, cout, k, stride, dil, h, w, worst);
}

START_TEST(conv_sweep) {
    static const int ks[] = {1, 3}, strides[] = {1, 2}, dils[] = {1, 2, 4};
    static const int chans[][2] = {{3, 5}, {13, 7}, {16, 24}, {37, 19}};
    static const int sizes[][2] = {{1, 1}, {7, 9}, {17, 23}};
    int n = 0;
    for (size_t a = 0; a < 2; a++)
        for (size_t b = 0; b < 2; b++)
            for (size_t d = 0; d < 3; d++)
                for (size_t ch = 0; ch < 4; ch++)
                    for (size_t s = 0; s < 3; s++, n++)
                        check_conv(chans[ch][0], chans[ch][1], ks[a], strides[b], dils[d], sizes[s][0], sizes[s][1],
                                   n % 2, n % 3 == 0);
}
END_TEST

START_TEST(conv_large_band) {
    /* Enough columns and input channels that the im2col works through several bands. */
    check_conv(70, 9, 3, 1, 2, 61, 67, 1, 1);
    check_conv(130, 11, 3, 1, 1, 45, 60, 0, 0);
}
END_TEST

/* Winograd F(4×4, 3×3) (3×3 stride 1, any dilation and padding) against the direct reference. */
START_TEST(winograd_sweep) {
    static const int dils[] = {1, 2, 4};
    static const int chans[][2] = {{3, 5}, {13, 7}, {16, 24}, {37, 19}, {70, 41}};
    static const int sizes[][2] = {{1, 1}, {2, 3}, {5, 4}, {7, 9}, {17, 23}, {30, 33}};
    double worst = 0;
    int n = 0;
    for (int wino = 1; wino >= 0; wino--) {
        conv_set_winograd(wino);
        for (size_t d = 0; d < 3; d++)
            for (size_t ch = 0; ch < 5; ch++)
                for (size_t s = 0; s < 6; s++, n++) {
                    int pad = n % 5 == 4 ? 0 : dils[d]; /* mostly "same" padding, sometimes none */
                    if (pad == 0 && (sizes[s][0] <= 2 * dils[d] || sizes[s][1] <= 2 * dils[d])) pad = dils[d];
                    double e = conv_error(chans[ch][0], chans[ch][1], 3, 1, pad, dils[d], sizes[s][0], sizes[s][1],
                                          n % 2, n % 3 == 0);
                    ck_assert_msg(e < (wino ? 5e-5 : 5e-6), "winograd %d cin %d cout %d d %d pad %d %dx%d: error %g", wino,
                                  chans[ch][0], chans[ch][1], dils[d], pad, sizes[s][0], sizes[s][1], e);
                    if (wino && e > worst) worst = e;
                }
    }
    fprintf(stderr, "winograd_sweep: worst error %.3g of 1 + max|ref|\n", worst);
    conv_set_winograd(1);
    /* Many tiles (several batches), wide channels. */
    double e = conv_error(67, 45, 3, 1, 2, 2, 97, 131, 1, 1);
    ck_assert_msg(e < 5e-5, "winograd large: error %g", e);
    /* Weights big enough for the lean path (36·cin·cout floats over 8 MiB: U rebuilt per batch). */
    e = conv_error(250, 270, 3, 1, 2, 2, 13, 11, 0, 1);
    ck_assert_msg(e < 5e-5, "winograd lean path: error %g", e);
}
END_TEST

START_TEST(gemm_sweep) {
    static const int dims[][3] = {{1, 1, 1}, {5, 7, 3}, {17, 33, 65}, {64, 100, 9}, {3, 257, 31}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int m = dims[i][0], n = dims[i][1], k = dims[i][2];
                float *a = malloc((size_t)m * k * 4), *b = malloc((size_t)k * n * 4);
                float *c1 = malloc((size_t)m * n * 4), *c2 = malloc((size_t)m * n * 4);
                fill(a, (size_t)m * k, 5), fill(b, (size_t)k * n, 6), fill(c1, (size_t)m * n, 7);
                memcpy(c2, c1, (size_t)m * n * 4);
                gemm_reference(ta, tb, m, n, k, 0.5f, a, ta ? m : k, b, tb ? k : n, 1.f, c1, n);
                gemm(ta, tb, m, n, k, 0.5f, a, ta ? m : k, b, tb ? k : n, 1.f, c2, n);
                for (size_t j = 0; j < (size_t)m * n; j++)
                    ck_assert_msg(fabsf(c1[j] - c2[j]) < 1e-4f * (1 + fabsf(c1[j])), "gemm %dx%dx%d t%d%d", m, n, k, ta, tb);
                free(a), free(b), free(c1), free(c2);
            }
}
END_TEST

/* The AVX-512 kernel (groups of 1–3 B slivers) and the AVX2 one must give the same bits, with several K
 * blocks, ragged edges and every group size. Skipped where the CPU has no AVX-512. */
START_TEST(gemm_isa_kernels_identical) {
    if (!gemm_isa_avx512()) return;
    static const int dims[][3] = {{6, 48, 5}, {13, 80, 300}, {7, 33, 600}, {64, 129, 513}, {1, 17, 1}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        int m = dims[i][0], n = dims[i][1], k = dims[i][2];
        float *a = malloc((size_t)m * k * 4), *b = malloc((size_t)k * n * 4);
        float *c1 = malloc((size_t)m * n * 4), *c2 = malloc((size_t)m * n * 4);
        fill(a, (size_t)m * k, 11), fill(b, (size_t)k * n, 12), fill(c1, (size_t)m * n, 13);
        memcpy(c2, c1, (size_t)m * n * 4);
        gemm(0, 0, m, n, k, 1.f, a, k, b, n, 0.5f, c1, n);
        gemm_force_isa(0);
        gemm(0, 0, m, n, k, 1.f, a, k, b, n, 0.5f, c2, n);
        gemm_force_isa(1);
        ck_assert_msg(memcmp(c1, c2, (size_t)m * n * 4) == 0, "avx512 and avx2 differ at %dx%dx%d", m, n, k);
        free(a), free(b), free(c1), free(c2);
    }
}
END_TEST

/* Winograd with AVX-512 (row runs loaded with contiguous loads and permutes, gathers where a sliver is more
 * than 4 runs or the dilation is not 1, 2, 4 or 8) against the AVX2 gathers: the same input values, so the
 * same bits. Widths give whole and partial row runs, with and without padding. */
START_TEST(winograd_isa_identical) {
    if (!gemm_isa_avx512()) return;
    static const int shapes[][6] = {/* cin, cout, h, w, dil, pad */
                                    {19, 13, 9, 131, 1, 1}, {7, 20, 12, 128, 1, 0}, {11, 9, 21, 140, 2, 2},
                                    {5, 6, 17, 256, 2, 2},  {9, 7, 30, 97, 2, 1},  {6, 5, 40, 260, 4, 4},
                                    {250, 270, 10, 131, 1, 1} /* weights over 8 MiB: U rebuilt per batch */,
                                    /* slivers made of 2-4 shorter runs (tile rows of 8 or 15, sub-grid rows
                                     * of 8), and runs too short to take (gathers) */
                                    {8, 8, 13, 32, 1, 1}, {10, 9, 45, 60, 2, 2}, {7, 6, 45, 60, 1, 1},
                                    {6, 5, 30, 70, 1, 0}, {5, 7, 23, 21, 2, 2}, {9, 6, 19, 25, 1, 1},
                                    /* dilation 4 and 8 (runs of d-float units), widths that are not a whole
                                     * number of tile columns, padding other than d */
                                    {7, 9, 45, 60, 4, 4}, {6, 7, 29, 61, 4, 3}, {5, 6, 30, 70, 8, 8}, {4, 5, 33, 131, 8, 5},
                                    {6, 5, 64, 128, 2, 2}, {5, 4, 17, 19, 3, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *sh = shapes[i];
        conv2d c = test_conv(sh[0], sh[1], 3, 1, sh[5], sh[4], 1, 21);
        tensor in = test_input(c.cin, sh[2], sh[3], 23);
        tensor a = test_output(&c, in), b = test_output(&c, in), res = test_output(&c, in), ref = test_output(&c, in);
        size_t n = tensor_numel(a);
        fill(res.d, n, 24);
        float *scratch = malloc((conv_scratch_floats(&c, in) + 16) * sizeof(float));
        conv_fast(&c, in, a, &res, scratch);
        gemm_force_isa(0);
        conv_fast(&c, in, b, &res, scratch);
        gemm_force_isa(1);
        ck_assert_msg(memcmp(a.d, b.d, n * sizeof(float)) == 0, "winograd avx512 and avx2 differ: cin %d %dx%d d %d pad %d",
                      c.cin, in.h, in.w, c.dil, c.pad);
        conv_reference(&c, in, ref, &res);
        double err = scaled_error(ref, a.d);
        ck_assert_msg(err < 5e-5, "winograd %dx%d d %d: error %g", in.h, in.w, c.dil, err);
        conv_free(&c);
        free(in.d), free(a.d), free(b.d), free(res.d), free(ref.d), free(scratch);
    }
}
END_TEST

/* The im2col convs (strides 1 and 2, Winograd off for the 3×3 stride-1 ones) with the AVX-512 fill (row
 * runs of masked loads) against the AVX2 path's scalar fill: the same packed values, so the same bits.
 * Widths give slivers in one row, across a row end, and rows shorter than a sliver (the scalar fallback). */
START_TEST(im2col_isa_identical) {
    if (!gemm_isa_avx512()) return;
    static const int shapes[][8] = {/* cin, cout, k, stride, dil, h, w, pad */
                                    {3, 32, 3, 2, 1, 37, 61, 1}, {13, 9, 3, 2, 1, 20, 33, 1}, {7, 5, 1, 2, 1, 19, 45, 0},
                                    {5, 6, 7, 2, 1, 23, 29, 3}, {6, 7, 3, 1, 2, 15, 40, 2}, {4, 5, 3, 2, 1, 9, 11, 1},
                                    {9, 8, 5, 1, 1, 12, 70, 2}};
    conv_set_winograd(0);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *sh = shapes[i];
        conv2d c = test_conv(sh[0], sh[1], sh[2], sh[3], sh[7], sh[4], 1, 41);
        tensor in = test_input(c.cin, sh[5], sh[6], 43);
        tensor a = test_output(&c, in), b = test_output(&c, in);
        size_t n = tensor_numel(a);
        float *scratch = malloc((conv_scratch_floats(&c, in) + 16) * sizeof(float));
        conv_fast(&c, in, a, NULL, scratch);
        gemm_force_isa(0);
        conv_fast(&c, in, b, NULL, scratch);
        gemm_force_isa(1);
        ck_assert_msg(memcmp(a.d, b.d, n * sizeof(float)) == 0, "im2col avx512 and avx2 differ: k %d s %d d %d %dx%d",
                      c.kh, c.stride, c.dil, in.h, in.w);
        conv_free(&c);
        free(in.d), free(a.d), free(b.d), free(scratch);
    }
    conv_set_winograd(1);
}
END_TEST

/* Threads take batches of tiles from bands and steal from each other: whole batches and, at the end of a
 * conv, output blocks of a batch still running (every lean batch; with stored U the last one per thread,
 * here the shapes with 3 or more slivers; 5 threads on 2 cores steal a dozen blocks or more per run).
 * Neither who runs a batch or a block nor how many threads there are may change a bit. Both sources of U
 * (stored, and rebuilt per batch for weights over 8 MiB), dilations 1, 2 and 4, sizes that leave partial
 * batches and slivers. */
START_TEST(winograd_thread_count_identical) {
    static const int shapes[][6] = {/* cin, cout, h, w, dil, pad */
                                    {13, 19, 37, 53, 1, 1}, {24, 10, 29, 61, 2, 2}, {9, 17, 45, 60, 4, 4},
                                    {250, 270, 23, 41, 2, 2} /* lean */, {260, 250, 15, 37, 1, 1} /* lean */};
    int saved = omp_get_max_threads();
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *sh = shapes[i];
        conv2d c = test_conv(sh[0], sh[1], 3, 1, sh[5], sh[4], 1, 31);
        tensor in = test_input(c.cin, sh[2], sh[3], 33), first = test_output(&c, in), now = test_output(&c, in);
        size_t n = tensor_numel(first);
        static const int counts[] = {1, 2, 3, 5};
        for (int k = 0; k < 4; k++) {
            omp_set_num_threads(counts[k]);
            memset(now.d, 0xff, n * sizeof(float)); /* NaNs: an output left unwritten cannot pass for the last run's */
            float *scratch = malloc((conv_scratch_floats(&c, in) + 16) * sizeof(float));
            conv_fast(&c, in, k ? now : first, NULL, scratch);
            free(scratch);
            ck_assert_msg(k == 0 || memcmp(first.d, now.d, n * sizeof(float)) == 0,
                          "winograd cin %d cout %d %dx%d d %d: %d threads differ from 1", c.cin, c.cout, in.h, in.w,
                          c.dil, counts[k]);
        }
        omp_set_num_threads(saved);
        conv_free(&c);
        free(in.d), free(first.d), free(now.d);
    }
}
END_TEST

START_TEST(resize_matches_pytorch_rule) {
    /* 2 → 4 with align_corners false: PyTorch gives 1, 1.25, 1.75, 2 for [1, 2]. */
    float src[2] = {1, 2}, dst[4];
    tensor in = {1, 1, 2, src}, out = {1, 1, 4, dst};
    resize_bilinear(in, out, 0);
    ck_assert_float_eq_tol(dst[0], 1.f, 1e-6);
    ck_assert_float_eq_tol(dst[1], 1.25f, 1e-6);
    ck_assert_float_eq_tol(dst[2], 1.75f, 1e-6);
    ck_assert_float_eq_tol(dst[3], 2.f, 1e-6);
    resize_bilinear(in, out, 1); /* align_corners true: 1, 4/3, 5/3, 2 */
    ck_assert_float_eq_tol(dst[1], 4.f / 3, 1e-6);
    ck_assert_float_eq_tol(dst[2], 5.f / 3, 1e-6);
}
END_TEST

START_TEST(maxpool_fast_matches_reference) {
    /* Odd and even sizes, 1-pixel edges, and rows wider than one chunk of the fast path (256 outputs). */
    const int sizes[][3] = {{3, 1, 1}, {2, 1, 7}, {5, 7, 1}, {3, 9, 12}, {4, 10, 11}, {7, 33, 65}, {2, 5, 1031}, {3, 6, 512}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        tensor in = test_input(sizes[k][0], sizes[k][1], sizes[k][2], 11 + (unsigned)k);
        int oh = (in.h - 1) / 2 + 1, ow = (in.w - 1) / 2 + 1;
        tensor ref = {in.c, oh, ow, malloc((size_t)in.c * oh * ow * sizeof(float))};
        tensor got = {in.c, oh, ow, malloc((size_t)in.c * oh * ow * sizeof(float))};
        memset(got.d, 0xff, tensor_numel(got) * sizeof(float)); /* NaNs: an output left unwritten cannot match */
        maxpool3x3s2_reference(in, ref);
        maxpool3x3s2_fast(in, got);
        ck_assert_msg(memcmp(ref.d, got.d, tensor_numel(ref) * sizeof(float)) == 0, "maxpool %dx%dx%d differs", in.c, in.h, in.w);
        free(in.d), free(ref.d), free(got.d);
    }
}
END_TEST

START_TEST(adaptive_pool_overlapping_bins) {
    /* 5 → 3: bins [0,2) [1,4) [3,5), as PyTorch. */
    float src[5] = {1, 2, 3, 4, 5}, dst[9];
    tensor in = {1, 1, 5, src};
    adaptive_avg_pool(in, 3, dst); /* height 1 → every row bin is row 0 */
    ck_assert_float_eq_tol(dst[0], 1.5f, 1e-6);
    ck_assert_float_eq_tol(dst[1], 3.f, 1e-6);
    ck_assert_float_eq_tol(dst[2], 4.5f, 1e-6);
}
END_TEST

Suite *conv_suite(void) {
    Suite *s = suite_create("conv");
    TCase *t = tcase_create("kernels");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, conv_sweep);
    tcase_add_test(t, conv_large_band);
    tcase_add_test(t, winograd_sweep);
    tcase_add_test(t, gemm_sweep);
    tcase_add_test(t, gemm_isa_kernels_identical);
    tcase_add_test(t, winograd_isa_identical);
    tcase_add_test(t, winograd_thread_count_identical);
    tcase_add_test(t, im2col_isa_identical);
    tcase_add_test(t, resize_matches_pytorch_rule);
    tcase_add_test(t, adaptive_pool_overlapping_bins);
    tcase_add_test(t, maxpool_fast_matches_reference);
    suite_add_tcase(s, t);
    return s;
}
