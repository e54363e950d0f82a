/* Convolution: BN folding at load, a direct reference, and the shipped kernel (1×1 convs straight into
 * GEMM; others through an im2col of a band of output columns, never of the whole image). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "util.h"

#define BN_EPS 1e-5
#define IM2COL_BYTES (6u << 20) /* im2col band: a few MiB keeps it in L3 next to the weights */

int conv_load(weight_store *ws, conv2d *c, const conv_spec *s, sa_error *err) {
    memset(c, 0, sizeof *c);
    c->cout = s->cout, c->cin = s->cin, c->kh = c->kw = s->k;
    c->stride = s->stride ? s->stride : 1, c->pad = s->pad, c->dil = s->dil ? s->dil : 1, c->relu = s->relu;
    snprintf(c->name, sizeof c->name, "%.*s", (int)(strrchr(s->weight, '.') - s->weight), s->weight);
    size_t per_out = (size_t)s->cin * s->k * s->k;
    c->w = malloc((size_t)s->cout * per_out * sizeof(float));
    c->b = calloc((size_t)s->cout, sizeof(float));
    float *bn = malloc(4 * (size_t)s->cout * sizeof(float));
    int code = SA_OK;
    if (!c->w || !c->b || !bn) {
        code = sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", s->weight);
        goto done;
    }
    int64_t wshape4[4] = {s->cout, s->cin, s->k, s->k}, wshape3[3] = {s->cout, s->cin, 1};
    if ((code = weights_read(ws, s->weight, s->wdims == 3 ? 3 : 4, s->wdims == 3 ? wshape3 : wshape4, c->w, err)))
        goto done;
    int64_t vec[1] = {s->cout};
    if (s->bias && (code = weights_read(ws, s->bias, 1, vec, c->b, err))) goto done;
    if (s->bn) {
        static const char *parts[4] = {"weight", "bias", "running_mean", "running_var"};
        char key[256];
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "%s.%s", s->bn, parts[i]);
            if ((code = weights_read(ws, key, 1, vec, bn + (size_t)i * s->cout, err))) goto done;
        }
        for (int o = 0; o < s->cout; o++) {
            double gamma = bn[o], beta = bn[s->cout + o], mean = bn[2 * s->cout + o], var = bn[3 * s->cout + o];
            double scale = gamma / sqrt(var + BN_EPS);
            for (size_t i = 0; i < per_out; i++) c->w[o * per_out + i] = (float)(c->w[o * per_out + i] * scale);
            c->b[o] = (float)((c->b[o] - mean) * scale + beta);
        }
    }
done:
    free(bn);
    if (code) conv_free(c);
    return code;
}

void conv_free(conv2d *c) {
    free(c->w);
    free(c->b);
    c->w = c->b = NULL;
}

void conv_out_size(const conv2d *c, int h, int w, int *oh, int *ow) {
    *oh = (h + 2 * c->pad - c->dil * (c->kh - 1) - 1) / c->stride + 1;
    *ow = (w + 2 * c->pad - c->dil * (c->kw - 1) - 1) / c->stride + 1;
}

static void epilogue(const conv2d *c, tensor out, const tensor *residual) {
    size_t plane = tensor_plane(out);
#pragma omp parallel for schedule(static)
    for (int o = 0; o < out.c; o++) {
        float *y = out.d + o * plane;
        const float *r = residual ? residual->d + o * plane : NULL;
        float bias = c->b[o];
        for (size_t i = 0; i < plane; i++) {
            float v = y[i] + bias;
            if (r) v += r[i];
            y[i] = c->relu && v < 0 ? 0 : v;
        }
    }
}

void conv_reference(const conv2d *c, tensor in, tensor out, const tensor *residual) {
    for (int o = 0; o < out.c; o++)
        for (int y = 0; y < out.h; y++)
            for (int x = 0; x < out.w; x++) {
                double acc = 0;
                for (int i = 0; i < c->cin; i++)
                    for (int ky = 0; ky < c->kh; ky++)
                        for (int kx = 0; kx < c->kw; kx++) {
                            int iy = y * c->stride - c->pad + ky * c->dil, ix = x * c->stride - c->pad + kx * c->dil;
                            if (iy < 0 || iy >= in.h || ix < 0 || ix >= in.w) continue;
                            acc += (double)c->w[((o * c->cin + i) * c->kh + ky) * c->kw + kx] *
                                   in.d[((size_t)i * in.h + iy) * in.w + ix];
                        }
                out.d[((size_t)o * out.h + y) * out.w + x] = (float)acc;
            }
    epilogue(c, out, residual);
}

static int is_pointwise(const conv2d *c) { return c->kh == 1 && c->kw == 1 && c->stride == 1 && c->pad == 0; }

static int band_columns(const conv2d *c, int n) {
    size_t k = (size_t)c->cin * c->kh * c->kw;
    size_t cols = IM2COL_BYTES / (k * sizeof(float));
    if (cols < 64) cols = 64;
    return cols > (size_t)n ? n : (int)cols;
}

size_t conv_scratch_floats(const conv2d *c, tensor in) {
    if (is_pointwise(c)) return 0;
    int oh, ow;
    conv_out_size(c, in.h, in.w, &oh, &ow);
    return (size_t)c->cin * c->kh * c->kw * band_columns(c, oh * ow);
}

/* Rows (i, ky, kx), columns = output positions [p0, p0 + np). */
static void im2col_band(const conv2d *c, tensor in, int ow, int p0, int np, float *cols) {
    int kk = c->kh * c->kw;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < c->cin * kk; r++) {
        int i = r / kk, ky = r % kk / c->kw, kx = r % c->kw;
        const float *src = in.d + (size_t)i * in.h * in.w;
        float *dst = cols + (size_t)r * np;
        int y = p0 / ow, x = p0 % ow;
        for (int p = 0; p < np; p++) {
            int iy = y * c->stride - c->pad + ky * c->dil, ix = x * c->stride - c->pad + kx * c->dil;
            dst[p] = (iy >= 0 && iy < in.h && ix >= 0 && ix < in.w) ? src[iy * in.w + ix] : 0.f;
            if (++x == ow) x = 0, y++;
        }
    }
}

void conv_fast(const conv2d *c, tensor in, tensor out, const tensor *residual, float *scratch) {
    int n = out.h * out.w, k = c->cin * c->kh * c->kw;
    if (is_pointwise(c)) {
        gemm(0, 0, c->cout, n, k, 1.f, c->w, k, in.d, n, 0.f, out.d, n);
    } else {
        int band = band_columns(c, n);
        for (int p0 = 0; p0 < n; p0 += band) {
            int np = n - p0 < band ? n - p0 : band;
            im2col_band(c, in, out.w, p0, np, scratch);
            gemm(0, 0, c->cout, np, k, 1.f, c->w, k, scratch, np, 0.f, out.d + p0, n);
        }
    }
    epilogue(c, out, residual);
}

tensor conv_forward(run_ctx *ctx, const conv2d *c, tensor in, const tensor *residual) {
    int oh, ow;
    conv_out_size(c, in.h, in.w, &oh, &ow);
    tensor out = ctx_tensor(ctx, c->cout, oh, ow);
    size_t scratch_n = conv_scratch_floats(c, in);
    float *scratch = scratch_n ? ctx_scratch(ctx, scratch_n) : NULL;
    double params = (double)c->cout * c->cin * c->kh * c->kw + c->cout;
    int id = ctx_log(ctx, c->name, in, out, (double)c->cout * c->cin * c->kh * c->kw * oh * ow, params);
    if (!ctx->dry && !ctx->ar.failed) {
        double t0 = wall_seconds();
        conv_fast(c, in, out, residual, scratch);
        ctx_log_time(ctx, id, t0);
    }
    if (scratch) ctx_release_ptr(ctx, scratch);
    return out;
}
