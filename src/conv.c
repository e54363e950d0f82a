/* Convolution: BN folding at load, a direct reference, and the shipped kernel (1×1 convs straight into
 * the blocked GEMM; 3×3 stride-1 through Winograd F(4×4, 3×3); others through an im2col written panel by
 * panel straight into the GEMM's packed B layout, never of the whole image). Bias, residual and ReLU are
 * fused into the GEMM epilogue or the Winograd output transform. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "util.h"

#define BN_EPS 1e-5

int conv_load(weight_store *ws, conv2d *c, const conv_spec *s, sa_error *err) {
    memset(c, 0, sizeof *c);
    c->cout = s->cout, c->cin = s->cin, c->kh = c->kw = s->k;
    c->stride = s->stride ? s->stride : 1, c->pad = s->pad, c->dil = s->dil ? s->dil : 1, c->relu = s->relu;
    snprintf(c->name, sizeof c->name, "%.*s", (int)(strrchr(s->weight, '.') - s->weight), s->weight);
    size_t per_out = (size_t)s->cin * s->k * s->k;
    c->w = gemm_alloc((size_t)s->cout * per_out);
    c->b = calloc((size_t)s->cout, sizeof(float));
    double *bn = malloc(2 * (size_t)s->cout * sizeof(double)); /* scale, shift */
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
        if ((code = bn_load(ws, s->bn, s->cout, bn, bn + s->cout, err))) goto done;
        for (int o = 0; o < s->cout; o++) conv_fold_affine(c, o, bn[o], bn[s->cout + o]);
    }
done:
    free(bn);
    if (code) conv_free(c);
    else c->release_source = 1;
    return code;
}

int bn_load(weight_store *ws, const char *prefix, int n, double *scale, double *shift, sa_error *err) {
    static const char *parts[4] = {"weight", "bias", "running_mean", "running_var"};
    float *bn = malloc(4 * (size_t)n * sizeof(float));
    if (!bn) return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", prefix);
    int64_t vec[1] = {n};
    char key[256];
    int code = SA_OK;
    for (int i = 0; i < 4 && !code; i++) {
        snprintf(key, sizeof key, "%s.%s", prefix, parts[i]);
        code = weights_read(ws, key, 1, vec, bn + (size_t)i * n, err);
    }
    for (int o = 0; o < n && !code; o++) {
        scale[o] = bn[o] / sqrt((double)bn[3 * n + o] + BN_EPS);
        shift[o] = bn[n + o] - bn[2 * n + o] * scale[o];
    }
    free(bn);
    return code;
}

void conv_fold_affine(conv2d *c, int o, double scale, double shift) {
    size_t per_out = (size_t)c->cin * c->kh * c->kw;
    for (size_t i = 0; i < per_out; i++) c->w[o * per_out + i] = (float)(c->w[o * per_out + i] * scale);
    c->b[o] = (float)(c->b[o] * scale + shift);
}

void conv_free(conv2d *c) {
    gemm_free(c->w), free(c->b), gemm_free(c->packed), gemm_free(c->wino);
    c->w = c->b = c->packed = c->wino = NULL;
    c->prepared = 0;
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

static int use_winograd = 1;
void conv_set_winograd(int on) { use_winograd = on; }

static int winograd_path(const conv2d *c) { return use_winograd && winograd_applies(c); }

/* Packs the weights once, on first use: spatial bias rescales some convs after conv_load. Not thread-safe;
 * convs run from the main thread. */
static void conv_prepare(const conv2d *cc) {
    conv2d *c = (conv2d *)cc;
    if (c->prepared == 1 + use_winograd || (c->prepared && !c->w)) return; /* the source may be gone */
    gemm_free(c->packed), gemm_free(c->wino);
    c->packed = c->wino = NULL;
    if (winograd_path(c)) {
        c->wino = winograd_transform_weights(c);
    } else {
        int k = c->cin * c->kh * c->kw;
        c->packed = gemm_alloc(gemm_packed_a_floats(c->cout, k) + 16);
        if (c->packed) gemm_pack_a(0, c->cout, k, c->w, k, c->packed);
    }
    if (!c->packed && !c->wino) abort();
    c->prepared = 1 + use_winograd;
    if (c->release_source) {
        gemm_free(c->w);
        c->w = NULL;
    }
}

size_t conv_scratch_floats(const conv2d *c, tensor in) {
    if (winograd_path(c)) return winograd_scratch_floats(c, in) + 16;
    return (size_t)omp_get_max_threads() * gemm_panel_floats(c->cin * c->kh * c->kw) + 16;
}

typedef struct {
    const conv2d *c;
    tensor in;
    int ow;
} im2col_arg;

/* B panel = columns [j0, j0 + nc) of the im2col matrix (rows (i, ky, kx)), written straight into the
 * packed layout: sliver s, row r, lane l at bp[(s·K + r)·16 + l]. */
static void fill_im2col(const void *arg, int j0, int nc, float *bp) {
    const im2col_arg *a = arg;
    const conv2d *c = a->c;
    tensor in = a->in;
    int kk = c->kh * c->kw, K = c->cin * kk, ns = (nc + GEMM_NR - 1) / GEMM_NR;
    for (int s = 0; s < ns; s++) {
        int p0 = j0 + s * GEMM_NR, np = nc - s * GEMM_NR < GEMM_NR ? nc - s * GEMM_NR : GEMM_NR;
        int y0 = p0 / a->ow, x0 = p0 % a->ow;
        float *dst = bp + (size_t)s * K * GEMM_NR;
        for (int r = 0; r < K; r++, dst += GEMM_NR) {
            int i = r / kk, ky = r % kk / c->kw, kx = r % c->kw;
            const float *src = in.d + (size_t)i * in.h * in.w;
            int y = y0, x = x0, p = 0;
            for (; p < np; p++) {
                int iy = y * c->stride - c->pad + ky * c->dil, ix = x * c->stride - c->pad + kx * c->dil;
                dst[p] = (iy >= 0 && iy < in.h && ix >= 0 && ix < in.w) ? src[iy * in.w + ix] : 0.f;
                if (++x == a->ow) x = 0, y++;
            }
            for (; p < GEMM_NR; p++) dst[p] = 0.f;
        }
    }
}

/* The same panel with AVX-512, for stride 1 or 2: the 16 pixels of a sliver split into runs along output
 * rows (a sliver that crosses a row end is two), and a K row of a run is one (stride 1) or two (stride 2,
 * then the even elements) loads masked to the image and to the run's lanes, blended by lanes. The same
 * values as fill_im2col, without its per-element bounds checks. 16 pixels span at most 3 output rows when
 * rows are at least 8 wide (im2col_avx512_applies). */
#define IM2COL_RUNS 3
#define IM2COL_MAX_KW 16
static int im2col_avx512_applies(const im2col_arg *a) {
    return (a->c->stride == 1 || a->c->stride == 2) && a->c->kw <= IM2COL_MAX_KW && a->ow >= 8 && gemm_isa_avx512();
}

static SA_AVX512 void fill_im2col_avx512(const im2col_arg *a, int j0, int nc, float *bp) {
    const conv2d *c = a->c;
    tensor in = a->in;
    int kk = c->kh * c->kw, K = c->cin * kk, ns = (nc + GEMM_NR - 1) / GEMM_NR, st = c->stride;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    for (int s = 0; s < ns; s++) {
        int p0 = j0 + s * GEMM_NR, np = nc - s * GEMM_NR < GEMM_NR ? nc - s * GEMM_NR : GEMM_NR;
        /* runs: lanes [l0, l1) at output row y, lane l at column x0 + (l − l0) */
        int run_y[IM2COL_RUNS], run_x[IM2COL_RUNS], nr = 0;
        __mmask16 run_lanes[IM2COL_RUNS];
        for (int l0 = 0, l1; l0 < np; l0 = l1) {
            int p = p0 + l0, y = p / a->ow, x = p % a->ow;
            l1 = l0 + (a->ow - x < np - l0 ? a->ow - x : np - l0);
            run_y[nr] = y, run_x[nr] = x - l0; /* the column lane 0 would have */
            run_lanes[nr++] = (__mmask16)(((1u << l1) - 1) & ~((1u << l0) - 1));
        }
        /* per run and kernel column: the elements to load (element j is column ix0 + j; lane j / st is the
         * run's and the column inside the image) */
        uint32_t want[IM2COL_RUNS][IM2COL_MAX_KW];
        for (int k = 0; k < nr; k++)
            for (int kx = 0; kx < c->kw; kx++) {
                int ix0 = run_x[k] * st - c->pad + kx * c->dil;
                uint32_t m = 0;
                for (int l = 0; l < 16; l++)
                    if (run_lanes[k] >> l & 1 && ix0 + l * st >= 0 && ix0 + l * st < in.w) m |= 1u << (l * st);
                want[k][kx] = m;
            }
        float *dst = bp + (size_t)s * K * GEMM_NR;
        for (int r = 0; r < K; r++, dst += GEMM_NR) {
            int i = r / kk, ky = r % kk / c->kw, kx = r % c->kw;
            const float *plane = in.d + (size_t)i * in.h * in.w;
            __m512 v = _mm512_setzero_ps();
            for (int k = 0; k < nr; k++) {
                int iy = run_y[k] * st - c->pad + ky * c->dil;
                if (iy < 0 || iy >= in.h) continue;
                int ix0 = run_x[k] * st - c->pad + kx * c->dil; /* input column of lane 0 */
                const float *row = plane + (size_t)iy * in.w;
                uint32_t m = want[k][kx];
                __m512 x;
                if (st == 1) {
                    x = _mm512_maskz_loadu_ps((__mmask16)m, row + ix0);
                } else {
                    __m512 lo = _mm512_maskz_loadu_ps((__mmask16)m, row + ix0),
                           hi = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), row + ix0 + 16);
                    x = _mm512_permutex2var_ps(lo, even, hi);
                }
                v = _mm512_mask_mov_ps(v, run_lanes[k], x);
            }
            _mm512_storeu_ps(dst, v);
        }
    }
}

static void fill_im2col_any(const void *arg, int j0, int nc, float *bp) {
    if (im2col_avx512_applies(arg)) fill_im2col_avx512(arg, j0, nc, bp);
    else fill_im2col(arg, j0, nc, bp);
}

static void fill_pointwise(const void *arg, int j0, int nc, float *bp) {
    const im2col_arg *a = arg;
    int n = a->in.h * a->in.w;
    gemm_pack_b(0, a->c->cin, nc, a->in.d + j0, n, bp);
}

void conv_fast(const conv2d *c, tensor in, tensor out, const tensor *residual, float *scratch) {
    conv_prepare(c);
    scratch = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63); /* packed operands want 32-byte rows */
    if (c->wino) {
        winograd_conv(c, c->wino, in, out, residual, scratch);
        return;
    }
    int n = out.h * out.w, k = c->cin * c->kh * c->kw;
    im2col_arg a = {c, in, out.w};
    gemm_epilogue e = {c->b, residual ? residual->d : NULL, n, c->relu};
    gemm_panels(c->cout, n, k, 1.f, c->packed, is_pointwise(c) ? fill_pointwise : fill_im2col_any, &a, 0.f, out.d, n, &e,
                scratch);
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
