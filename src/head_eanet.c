/* EANet external attention (Guo et al., TPAMI 2022) under mmseg-style names (SPEC §14.5): two small shared
 * memories as 1×1 convs, softmax over pixels, then L1 over the memory slots, residual and ReLU. */
#include <math.h>
#include <stdlib.h>

#include "model.h"
#include "module_bench.h"
#include "util.h"

typedef struct {
    conv2d fc0, conv1, linear0, linear1, conv2, fc1, conv_seg;
} eanet_head;

static void eanet_free(void *p) {
    eanet_head *h = p;
    if (!h) return;
    conv2d *all[] = {&h->fc0, &h->conv1, &h->linear0, &h->linear1, &h->conv2, &h->fc1, &h->conv_seg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) conv_free(all[i]);
    free(h);
}

static void *eanet_load(const head_cfg *cfg, weight_store *ws, sa_error *err) {
    eanet_head *h = calloc(1, sizeof *h);
    if (!h) { sa_fail(err, SA_EXIT_INTERNAL, "decode_head: out of memory"); return NULL; }
    int c = cfg->channels, mem = cfg->memory, code;
    conv_spec l0 = {"decode_head.ea.linear_0.weight", NULL, NULL, mem, c, 1, 1, 0, 1, 0, 3};
    conv_spec l1 = {"decode_head.ea.linear_1.weight", NULL, NULL, c, mem, 1, 1, 0, 1, 0, 3};
    code = load_conv_module(ws, &h->fc0, "decode_head.fc0", cfg->in_channels[0], c, 3, 1, 1, 1, err);
    if (!code) code = load_plain_conv(ws, &h->conv1, "decode_head.ea.conv1", c, c, 1, err);
    if (!code) code = conv_load(ws, &h->linear0, &l0, err);
    if (!code) code = conv_load(ws, &h->linear1, &l1, err);
    /* conv2 is conv + BN without ReLU; the ReLU comes after the residual add, which the epilogue orders so. */
    if (!code) code = load_conv_module(ws, &h->conv2, "decode_head.ea.conv2", c, c, 1, 0, 1, 1, err);
    if (!code) code = load_conv_module(ws, &h->fc1, "decode_head.fc1", c, cfg->out_channels, 3, 1, 1, 1, err);
    if (!code) code = load_conv_seg(ws, &h->conv_seg, cfg->out_channels, cfg->num_classes, err);
    if (code) { eanet_free(h); return NULL; }
    return h;
}

/* a[m, ·] ← softmax over the n pixels; then each pixel's column ← a / (1e-9 + Σ_m a). */
void external_attention_normalise(tensor a, float *column_sums) {
    int n = a.h * a.w, m = a.c;
#pragma omp parallel for schedule(static)
    for (int s = 0; s < m; s++) softmax_inplace(a.d + (size_t)s * n, n);
#pragma omp parallel for schedule(static)
    for (int p = 0; p < n; p++) {
        float sum = 0;
        for (int s = 0; s < m; s++) sum += a.d[(size_t)s * n + p];
        column_sums[p] = 1e-9f + sum;
    }
#pragma omp parallel for schedule(static)
    for (int s = 0; s < m; s++)
        for (int p = 0; p < n; p++) a.d[(size_t)s * n + p] /= column_sums[p];
}

/* The external attention module alone (conv1 … conv2, residual, ReLU); `segattn bench --module eanet` runs it. */
tensor eanet_context(run_ctx *ctx, const void *p, tensor idn) {
    const eanet_head *h = p;
    tensor x = conv_forward(ctx, &h->conv1, idn, NULL);
    tensor a = conv_forward(ctx, &h->linear0, x, NULL);
    ctx_release(ctx, x);
    float *sums = ctx_scratch(ctx, tensor_plane(a));
    int id = ctx_log(ctx, "decode_head.ea.normalise", a, a, 0, 0);
    if (!ctx->dry && !ctx->ar.failed) {
        double t0 = wall_seconds();
        external_attention_normalise(a, sums);
        ctx_log_time(ctx, id, t0);
    }
    ctx_release_ptr(ctx, sums);
    x = conv_forward(ctx, &h->linear1, a, NULL);
    ctx_release(ctx, a);
    tensor y = conv_forward(ctx, &h->conv2, x, &idn);
    ctx_release(ctx, x);
    return y;
}

static tensor eanet_forward(run_ctx *ctx, const void *p, const tensor *feats) {
    const eanet_head *h = p;
    tensor idn = conv_forward(ctx, &h->fc0, feats[0], NULL);
    tensor y = eanet_context(ctx, h, idn);
    ctx_release(ctx, idn);
    tensor z = conv_forward(ctx, &h->fc1, y, NULL);
    ctx_release(ctx, y);
    tensor logits = conv_forward(ctx, &h->conv_seg, z, NULL);
    ctx_release(ctx, z);
    return logits;
}

const head_vtable head_eanet = {"eanet", eanet_load, eanet_forward, eanet_free};
