/* Small ops with no weights: pooling, concatenation, softmax. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "bands.h"
#include "ops.h"

void maxpool3x3s2_reference(tensor in, tensor out) {
    for (int c = 0; c < in.c; c++) {
        const float *src = in.d + (size_t)c * in.h * in.w;
        for (int y = 0; y < out.h; y++)
            for (int x = 0; x < out.w; x++) {
                float m = -FLT_MAX;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int iy = 2 * y + dy, ix = 2 * x + dx;
                        if (iy >= 0 && iy < in.h && ix >= 0 && ix < in.w && src[iy * in.w + ix] > m) m = src[iy * in.w + ix];
                    }
                out.d[((size_t)c * out.h + y) * out.w + x] = m;
            }
    }
}

static inline float max2(float a, float b) { return a > b ? a : b; }

/* Output row y of one channel, POOL_CHUNK columns at a time: first the max of the 3 input rows per column
 * (contiguous, so it vectorises), then of 3 neighbouring columns. A missing row above or below is replaced
 * by the centre row and a missing column by −∞, neither of which can win, so the bits are the reference's. */
#define POOL_CHUNK 256
static void pool_row(const float *src, int h, int w, int y, float *dst, int ow) {
    const float *mid = src + (size_t)2 * y * w, *up = y > 0 ? mid - w : mid, *down = 2 * y + 1 < h ? mid + w : mid;
    float col[2 * POOL_CHUNK + 1];
    for (int x0 = 0; x0 < ow; x0 += POOL_CHUNK) {
        int n = ow - x0 < POOL_CHUNK ? ow - x0 : POOL_CHUNK, first = 2 * x0 - 1; /* input column of col[0] */
        int lo = first < 0 ? 1 : 0, hi = 2 * n + 1 < w - first ? 2 * n + 1 : w - first;
        if (lo) col[0] = -INFINITY;
        for (int j = hi; j < 2 * n + 1; j++) col[j] = -INFINITY;
        for (int j = lo; j < hi; j++) col[j] = max2(max2(up[first + j], mid[first + j]), down[first + j]);
        for (int i = 0; i < n; i++) dst[x0 + i] = max2(max2(col[2 * i], col[2 * i + 1]), col[2 * i + 2]);
    }
}

void maxpool3x3s2_fast(tensor in, tensor out) {
    work_bands wb; /* by rows, not channels: each thread reads the band of the stem output it wrote (bands.h) */
    bands_init(&wb, out.h, omp_get_max_threads());
#pragma omp parallel
    for (int y; (y = bands_next(&wb, omp_get_thread_num())) >= 0;)
        for (int c = 0; c < in.c; c++)
            pool_row(in.d + (size_t)c * in.h * in.w, in.h, in.w, y, out.d + ((size_t)c * out.h + y) * out.w, out.w);
}

tensor maxpool3x3s2(run_ctx *ctx, tensor in) {
    tensor out = ctx_tensor(ctx, in.c, (in.h - 1) / 2 + 1, (in.w - 1) / 2 + 1);
    int id = ctx_log(ctx, "backbone.maxpool", in, out, 0, 0);
    if (ctx->dry || ctx->ar.failed) return out;
    double t0 = wall_seconds();
    maxpool3x3s2_fast(in, out);
    ctx_log_time(ctx, id, t0);
    return out;
}

/* Copies between layers run on every thread (a serial 5 MiB copy leaves the other cores idle for as long
 * as a small conv takes). Each thread copies the same share of every channel's pixels: the band of rows
 * that the convs before and after give it (bands.h), so that a core copies what it wrote and will read. */
void copy_planes(float *dst, const float *src, int channels, size_t plane) {
    size_t n = (size_t)channels * plane;
#pragma omp parallel if (n >= ((size_t)1 << 16))
    {
        int t = omp_get_thread_num(), threads = omp_get_num_threads();
        size_t p0 = plane * t / threads, p1 = plane * (t + 1) / threads;
        for (int c = 0; c < channels; c++)
            memcpy(dst + (size_t)c * plane + p0, src + (size_t)c * plane + p0, (p1 - p0) * sizeof(float));
    }
}

tensor concat_channels(run_ctx *ctx, tensor a, tensor b) {
    tensor out = ctx_tensor(ctx, a.c + b.c, a.h, a.w);
    if (!ctx->dry && !ctx->ar.failed) {
        copy_planes(out.d, a.d, a.c, tensor_plane(a));
        copy_planes(out.d + tensor_numel(a), b.d, b.c, tensor_plane(b));
    }
    return out;
}

void adaptive_avg_pool(tensor in, int s, float *out) {
    /* Channels split across threads (each sums its own windows in the same order: any thread count gives the
     * same bits); serial, ANN's key pooling left the second core waiting 0.36 ms per pooled 64x45x60 tensor,
     * two per attention block on R18. */
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && tensor_numel(in) >= ((size_t)1 << 15))
    for (int c = 0; c < in.c; c++) {
        const float *src = in.d + (size_t)c * in.h * in.w;
        for (int i = 0; i < s; i++) {
            int y0 = i * in.h / s, y1 = ((i + 1) * in.h + s - 1) / s;
            for (int j = 0; j < s; j++) {
                int x0 = j * in.w / s, x1 = ((j + 1) * in.w + s - 1) / s;
                float sum = 0;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) sum += src[y * in.w + x];
                out[((size_t)c * s + i) * s + j] = sum / (float)((y1 - y0) * (x1 - x0));
            }
        }
    }
}

void softmax_inplace(float *x, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    float sum = 0;
    for (int i = 0; i < n; i++) sum += x[i] = expf(x[i] - m);
    float inv = 1.f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}
