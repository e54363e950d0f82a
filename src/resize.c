/* Bilinear resizing with PyTorch's rules (coordinates in float32), and the fused resize + argmax that
 * turns head logits into labels without holding K full-size maps. */
#include <float.h>
#include <math.h>

#include "ops.h"

typedef struct {
    int i0, i1;
    float lambda;
} axis_tap;

static axis_tap axis_source(int dst, int in, int out, int align_corners) {
    float src;
    if (align_corners) {
        float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.f;
        src = scale * (float)dst;
    } else {
        float scale = (float)in / (float)out;
        src = scale * ((float)dst + 0.5f) - 0.5f;
        if (src < 0) src = 0;
    }
    axis_tap t;
    t.i0 = (int)src;
    if (t.i0 > in - 1) t.i0 = in - 1;
    t.i1 = t.i0 + 1 < in ? t.i0 + 1 : in - 1;
    t.lambda = src - (float)t.i0;
    return t;
}

static inline float tap(const float *p, int w, axis_tap ty, axis_tap tx) {
    float a = p[ty.i0 * w + tx.i0], b = p[ty.i0 * w + tx.i1], c = p[ty.i1 * w + tx.i0], d = p[ty.i1 * w + tx.i1];
    return (1.f - ty.lambda) * ((1.f - tx.lambda) * a + tx.lambda * b) + ty.lambda * ((1.f - tx.lambda) * c + tx.lambda * d);
}

void resize_bilinear(tensor in, tensor out, int align_corners) {
#pragma omp parallel for schedule(static)
    for (int y = 0; y < out.h; y++) {
        axis_tap ty = axis_source(y, in.h, out.h, align_corners);
        for (int x = 0; x < out.w; x++) {
            axis_tap tx = axis_source(x, in.w, out.w, align_corners);
            for (int c = 0; c < in.c; c++)
                out.d[((size_t)c * out.h + y) * out.w + x] = tap(in.d + (size_t)c * in.h * in.w, in.w, ty, tx);
        }
    }
}

void resize_argmax(tensor logits, int h, int w, int align_corners, uint8_t *labels, float *margin) {
#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) {
        axis_tap ty = axis_source(y, logits.h, h, align_corners);
        for (int x = 0; x < w; x++) {
            axis_tap tx = axis_source(x, logits.w, w, align_corners);
            float best = -FLT_MAX, second = -FLT_MAX;
            int arg = 0;
            for (int c = 0; c < logits.c; c++) {
                float v = tap(logits.d + (size_t)c * logits.h * logits.w, logits.w, ty, tx);
                if (v > best) second = best, best = v, arg = c;
                else if (v > second) second = v;
            }
            labels[(size_t)y * w + x] = (uint8_t)arg;
            if (margin) margin[(size_t)y * w + x] = logits.c > 1 ? best - second : INFINITY;
        }
    }
}
