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

/* Rows of the map a thread takes at a time: their energies and sums stay within ~2 MiB, and every thread
 * gets a share. Each column of v is then read once per chunk rather than once per pixel. */
static int chunk_rows(int c, int h, int w, int threads) {
    size_t row = (size_t)w * (c + h + w) * sizeof(float);
    int r = (int)((2u << 20) / row), share = (h + threads - 1) / threads;
    if (r > share) r = share;
    return r < 1 ? 1 : r;
}

size_t criss_cross_scratch_floats(int d, int c, int h, int w) {
    int threads = omp_get_max_threads();
    size_t chunk = (size_t)chunk_rows(c, h, w, threads) * w * (c + h + w) + 16;
    return (size_t)h * w * (2 * d + c) + (size_t)threads * chunk + 64;
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

/* o[0..n) = o (or 0 when !add) + Σ e[i] · v[i·stride + 0..n) over i in [0, m) but `skip`, in i order for
 * every element. 64 sums stay in registers across the i loop: one load per FMA. */
static void weighted_sum(float *o, int add, const float *e, int m, int skip, const float *v, size_t stride, int n) {
    int c = 0;
    for (; c + 64 <= n; c += 64) {
        __m256 a[8];
        for (int k = 0; k < 8; k++) a[k] = add ? _mm256_loadu_ps(o + c + 8 * k) : _mm256_setzero_ps();
        for (int i = 0; i < m; i++) {
            if (i == skip) continue;
            __m256 wi = _mm256_set1_ps(e[i]);
            const float *vi = v + (size_t)i * stride + c;
            for (int k = 0; k < 8; k++) a[k] = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 8 * k), a[k]);
        }
        for (int k = 0; k < 8; k++) _mm256_storeu_ps(o + c + 8 * k, a[k]);
    }
    for (; c + 8 <= n; c += 8) {
        __m256 a = add ? _mm256_loadu_ps(o + c) : _mm256_setzero_ps();
        for (int i = 0; i < m; i++)
            if (i != skip) a = _mm256_fmadd_ps(_mm256_set1_ps(e[i]), _mm256_loadu_ps(v + (size_t)i * stride + c), a);
        _mm256_storeu_ps(o + c, a);
    }
    for (; c < n; c++) {
        float a = add ? o[c] : 0;
        for (int i = 0; i < m; i++)
            if (i != skip) a = fmaf(e[i], v[(size_t)i * stride + c], a);
        o[c] = a;
    }
}

/* Fast: q, k, v copied position-major so that every energy is one contiguous d-vector dot product and the
 * aggregation adds contiguous C-vectors. Each thread takes a band of rows, a chunk of rows at a time. Within
 * a chunk the column sums go column by column, so that a column of v is read once for all the chunk's rows;
 * then the row sums. Each pixel adds its column, then its row, in a fixed order, so the result does not
 * depend on the thread count. */
void criss_cross(tensor q, tensor k, tensor v, tensor x, float gamma, tensor out, float *scratch) {
    int H = x.h, W = x.w, d = q.c, C = v.c, R = chunk_rows(C, H, W, omp_get_max_threads());
    size_t plane = (size_t)H * W, chunk_floats = (size_t)R * W * (C + H + W) + 16;
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
#pragma omp parallel
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads(), band_end = (int)((long)H * (t + 1) / T);
        /* e: a chunk's softmax weights, H + W per pixel (column, then row); acc: its sums, C per pixel */
        float *e = thr + (size_t)t * chunk_floats, *acc = e + (size_t)R * W * (H + W);
        for (int y0 = (int)((long)H * t / T); y0 < band_end; y0 += R) {
            int y1 = y0 + R < band_end ? y0 + R : band_end;
            for (int y = y0; y < y1; y++)
                for (int xx = 0; xx < W; xx++) {
                    size_t p = (size_t)y * W + xx;
                    float *ep = e + ((size_t)(y - y0) * W + xx) * (H + W);
                    const float *qp = qt + p * d;
                    for (int i = 0; i < H; i++) ep[i] = dot(qp, kt + ((size_t)i * W + xx) * d, d);
                    for (int j = 0; j < W; j++) ep[H + j] = dot(qp, kt + ((size_t)y * W + j) * d, d);
                    ep[y] = -INFINITY; /* the pixel itself is counted once, in its row */
                    softmax_row_fast(ep, H + W);
                }
            for (int xx = 0; xx < W; xx++)
                for (int y = y0; y < y1; y++) {
                    size_t at = (size_t)(y - y0) * W + xx;
                    weighted_sum(acc + at * C, 0, e + at * (H + W), H, y, vt + (size_t)xx * C, (size_t)W * C, C);
                }
            for (size_t at = 0; at < (size_t)(y1 - y0) * W; at++)
                weighted_sum(acc + at * C, 1, e + at * (H + W) + H, W, -1, vt + ((size_t)y0 * W + at / W * W) * C, C, C);
            for (int c = 0; c < C; c++)
                for (size_t at = 0; at < (size_t)(y1 - y0) * W; at++) {
                    size_t p = (size_t)c * plane + (size_t)y0 * W + at;
                    out.d[p] = gamma * acc[at * C + c] + x.d[p];
                }
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
