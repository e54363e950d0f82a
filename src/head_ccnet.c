/* CCNet (Huang et al., ICCV 2019): criss-cross attention applied `recurrence` times with the same weights
 * between the two FCN convs. Each pixel attends to its row and its column in one softmax, itself counted
 * once (in the row part) — SPEC §7. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

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

/* out = gamma · criss-cross(q, k, v) + x, per output row so rows split across threads. `scratch` holds
 * H + W energies per thread. */
void criss_cross(tensor q, tensor k, tensor v, tensor x, float gamma, tensor out, float *scratch) {
    int H = x.h, W = x.w, d = q.c, C = v.c;
    size_t plane = (size_t)H * W;
#pragma omp parallel for schedule(static)
    for (int y = 0; y < H; y++) {
        float *e = scratch + (size_t)omp_get_thread_num() * (H + W);
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
    }
}

static tensor cca_once(run_ctx *ctx, const ccnet_head *h, tensor x) {
    tensor q = conv_forward(ctx, &h->query, x, NULL), k = conv_forward(ctx, &h->key, x, NULL);
    tensor v = conv_forward(ctx, &h->value, x, NULL);
    tensor out = ctx_tensor(ctx, x.c, x.h, x.w);
    float *scratch = ctx_scratch(ctx, (size_t)omp_get_max_threads() * (x.h + x.w));
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
        if (!ctx->dry && !ctx->ar.failed) memcpy(f.d, x.d, tensor_numel(x) * sizeof(float));
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
