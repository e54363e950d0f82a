/* CCNet (Huang et al., ICCV 2019): criss-cross attention applied `recurrence` times with the same weights
 * between the two FCN convs. Each pixel attends to its row and its column in one softmax, itself counted
 * once (in the row part) — SPEC §7. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "model.h"
#include "util.h"

typedef struct {
    fcn_body body;
    conv2d query, key, value;
    float gamma;
    int recurrence;
} ccnet_head;

static void ccnet_free(void *p) {
    ccnet_head *h = p;
    if (!h) return;
    fcn_body_free(&h->body), conv_free(&h->query), conv_free(&h->key), conv_free(&h->value);
    free(h);
}

static void *ccnet_load(const head_cfg *cfg, weight_store *ws, sa_error *err) {
    ccnet_head *h = calloc(1, sizeof *h);
    if (!h) { sa_fail(err, SA_EXIT_INTERNAL, "decode_head: out of memory"); return NULL; }
    int c = cfg->channels, code;
    h->recurrence = cfg->recurrence;
    code = fcn_body_load(&h->body, cfg, ws, err);
    if (!code) code = load_plain_conv(ws, &h->query, "decode_head.cca.query_conv", c, c / 8, 1, err);
    if (!code) code = load_plain_conv(ws, &h->key, "decode_head.cca.key_conv", c, c / 8, 1, err);
    if (!code) code = load_plain_conv(ws, &h->value, "decode_head.cca.value_conv", c, c, 1, err);
    if (!code) code = weights_read(ws, "decode_head.cca.gamma.scale", 0, NULL, &h->gamma, err);
    if (code) { ccnet_free(h); return NULL; }
    return h;
}

/* The reference: out = gamma · criss-cross(q, k, v) + x, straight from the definition. */
void criss_cross_reference(tensor q, tensor k, tensor v, tensor x, float gamma, tensor out) {
    int H = x.h, W = x.w, d = q.c, C = v.c;
    size_t plane = (size_t)H * W;
    float *e = malloc((size_t)(H + W) * sizeof *e);
    for (int y = 0; y < H; y++)
        for (int xx = 0; xx < W; xx++) {
            size_t p = (size_t)y * W + xx;
            float m = -INFINITY;
            for (int i = 0; i < H; i++) {
                float acc = 0;
                for (int c = 0; c < d; c++) acc += q.d[c * plane + p] * k.d[c * plane + (size_t)i * W + xx];
                e[i] = i == y ? -INFINITY : acc;
            }
            for (int j = 0; j < W; j++) {
                float acc = 0;
                for (int c = 0; c < d; c++) acc += q.d[c * plane + p] * k.d[c * plane + (size_t)y * W + j];
                e[H + j] = acc;
            }
            for (int i = 0; i < H + W; i++) m = e[i] > m ? e[i] : m;
            float sum = 0;
            for (int i = 0; i < H + W; i++) sum += e[i] = expf(e[i] - m);
            float inv = 1.f / sum;
            for (int c = 0; c < C; c++) {
                const float *vc = v.d + c * plane;
                float acc = 0;
                for (int i = 0; i < H; i++) acc += e[i] * vc[(size_t)i * W + xx];
                for (int j = 0; j < W; j++) acc += e[H + j] * vc[(size_t)y * W + j];
                out.d[c * plane + p] = gamma * (acc * inv) + x.d[c * plane + p];
            }
        }
    free(e);
}

size_t criss_cross_scratch_floats(int d, int c, int h, int w) {
    return (size_t)h * w * (2 * d + c) + (size_t)omp_get_max_threads() * (h + w + 16 + (size_t)w * c) + 64;
}

static inline float dot(const float *a, const float *b, int n) {
    int i = 0;
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

/* o[0..n) += w · src[0..n), n ≤ 64 lanes at a time by the caller. */
static inline void axpy(float *o, float w, const float *src, int n) {
    int i = 0;
    __m256 vw = _mm256_set1_ps(w);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(src + i), _mm256_loadu_ps(o + i)));
    for (; i < n; i++) o[i] += w * src[i];
}

/* Fast: q, k, v copied position-major so that every energy is one contiguous d-vector dot product and the
 * aggregation adds contiguous C-vectors; rows of the output split across threads, each pixel's sums in a
 * fixed order, so the result does not depend on the thread count. */
void criss_cross(tensor q, tensor k, tensor v, tensor x, float gamma, tensor out, float *scratch) {
    int H = x.h, W = x.w, d = q.c, C = v.c;
    size_t plane = (size_t)H * W;
    float *qt = scratch, *kt = qt + plane * d, *vt = kt + plane * d, *thr = vt + plane * C;
#pragma omp parallel for schedule(static)
    for (int y = 0; y < H; y++) {
        for (int c = 0; c < d; c++)
            for (int xx = 0; xx < W; xx++) {
                size_t p = (size_t)y * W + xx;
                qt[p * d + c] = q.d[c * plane + p], kt[p * d + c] = k.d[c * plane + p];
            }
        for (int c = 0; c < C; c++)
            for (int xx = 0; xx < W; xx++) {
                size_t p = (size_t)y * W + xx;
                vt[p * C + c] = v.d[c * plane + p];
            }
    }
#pragma omp parallel for schedule(static)
    for (int y = 0; y < H; y++) {
        float *e = thr + (size_t)omp_get_thread_num() * (H + W + 16 + (size_t)W * C), *acc = e + H + W + 16;
        for (int xx = 0; xx < W; xx++) {
            size_t p = (size_t)y * W + xx;
            const float *qp = qt + p * d;
            for (int i = 0; i < H; i++) e[i] = dot(qp, kt + ((size_t)i * W + xx) * d, d);
            for (int j = 0; j < W; j++) e[H + j] = dot(qp, kt + ((size_t)y * W + j) * d, d);
            e[y] = -INFINITY; /* the pixel itself is counted once, in its row */
            softmax_row_fast(e, H + W);
            float *o = acc + (size_t)xx * C;
            for (int c0 = 0; c0 < C; c0 += 64) {
                int n = C - c0 < 64 ? C - c0 : 64;
                memset(o + c0, 0, (size_t)n * sizeof(float));
                for (int i = 0; i < H; i++)
                    if (i != y) axpy(o + c0, e[i], vt + ((size_t)i * W + xx) * C + c0, n);
                for (int j = 0; j < W; j++) axpy(o + c0, e[H + j], vt + ((size_t)y * W + j) * C + c0, n);
            }
        }
        for (int c = 0; c < C; c++)
            for (int xx = 0; xx < W; xx++) {
                size_t p = (size_t)c * plane + (size_t)y * W + xx;
                out.d[p] = gamma * acc[(size_t)xx * C + c] + x.d[p];
            }
    }
}

static tensor cca_once(run_ctx *ctx, const ccnet_head *h, tensor x) {
    tensor q = conv_forward(ctx, &h->query, x, NULL), k = conv_forward(ctx, &h->key, x, NULL);
    tensor v = conv_forward(ctx, &h->value, x, NULL);
    tensor out = ctx_tensor(ctx, x.c, x.h, x.w);
    float *scratch = ctx_scratch(ctx, criss_cross_scratch_floats(q.c, v.c, x.h, x.w));
    int id = ctx_log(ctx, "decode_head.cca", x, out, (double)x.h * x.w * (x.h + x.w) * (q.c + v.c), 0);
    if (!ctx->dry && !ctx->ar.failed) {
        double t0 = wall_seconds();
        criss_cross(q, k, v, x, h->gamma, out, scratch);
        ctx_log_time(ctx, id, t0);
    }
    ctx_release_ptr(ctx, scratch);
    ctx_release(ctx, v), ctx_release(ctx, k), ctx_release(ctx, q);
    return out;
}

static tensor ccnet_middle(run_ctx *ctx, const void *arg, tensor x) {
    const ccnet_head *h = arg;
    tensor f = x;
    for (int r = 0; r < h->recurrence; r++) {
        tensor g = cca_once(ctx, h, f);
        if (r) ctx_release(ctx, f);
        f = g;
    }
    if (h->recurrence == 0) { /* keep the contract: the middle returns a fresh tensor */
        f = ctx_tensor(ctx, x.c, x.h, x.w);
        if (!ctx->dry && !ctx->ar.failed) copy_planes(f.d, x.d, x.c, tensor_plane(x));
    }
    return f;
}

static tensor ccnet_forward(run_ctx *ctx, const void *p, const tensor *feats) {
    const ccnet_head *h = p;
    return fcn_body_forward(ctx, &h->body, feats[0], ccnet_middle, h);
}

/* RCCA alone (criss-cross attention `recurrence` times): `segattn bench --module ccnet` runs it. */
tensor ccnet_context(run_ctx *ctx, const void *p, tensor x) { return ccnet_middle(ctx, p, x); }

const head_vtable head_ccnet = {"ccnet", ccnet_load, ccnet_forward, ccnet_free};
