/* ANN (Zhu et al., ICCV 2019): AFNB fuses layer3 keys into layer4 queries, APNB is self-attention with
 * pyramid-pooled keys on the fused map (SPEC §6). */
#include <math.h>
#include <stdlib.h>

#include "attention.h"
#include "module_bench.h"
#include "util.h"

typedef struct {
    int n_stages;
    attention_block fusion[MAX_SCALES], context[MAX_SCALES];
    conv2d fusion_bottleneck, bottleneck, context_bottleneck, conv_seg;
} ann_head;

static void ann_free(void *p) {
    ann_head *h = p;
    if (!h) return;
    for (int s = 0; s < h->n_stages; s++) attention_free(&h->fusion[s]), attention_free(&h->context[s]);
    conv_free(&h->fusion_bottleneck), conv_free(&h->bottleneck), conv_free(&h->context_bottleneck), conv_free(&h->conv_seg);
    free(h);
}

static int load_block(weight_store *ws, attention_block *a, const char *prefix, int key_in, int query_in, int channels,
                      int out_channels, int share, const head_cfg *cfg, sa_error *err) {
    char p[128];
    int code;
    a->channels = channels, a->scale = 1.f / sqrtf((float)channels);
    a->n_key = a->n_query = 1, a->has_out = 1, a->share_key_query = share;
    a->n_key_pool = cfg->n_key_pool;
    for (int i = 0; i < cfg->n_key_pool; i++) a->key_pool[i] = cfg->key_pool_scales[i];
    snprintf(p, sizeof p, "%s.key_project", prefix);
    if ((code = attention_load_projection(ws, a->key, 1, p, key_in, channels, 1, err))) return code;
    /* A shared query projection is stored twice in the state_dict; the copy is read (shape-checked) and dropped. */
    snprintf(p, sizeof p, "%s.query_project", prefix);
    if ((code = attention_load_projection(ws, a->query, 1, p, query_in, channels, 1, err))) return code;
    if (share) conv_free(&a->query[0]), a->n_query = 0;
    snprintf(p, sizeof p, "%s.value_project", prefix);
    if ((code = load_plain_conv(ws, &a->value, p, key_in, channels, 1, err))) return code;
    snprintf(p, sizeof p, "%s.out_project", prefix);
    return load_plain_conv(ws, &a->out, p, channels, out_channels, 1, err);
}

static void *ann_load(const head_cfg *cfg, weight_store *ws, sa_error *err) {
    ann_head *h = calloc(1, sizeof *h);
    if (!h) { sa_fail(err, SA_EXIT_INTERNAL, "decode_head: out of memory"); return NULL; }
    int low = cfg->in_channels[0], high = cfg->in_channels[1], c = cfg->channels, proj = cfg->project_channels, code = 0;
    h->n_stages = cfg->n_query_scales;
    char p[96];
    for (int s = 0; s < h->n_stages && !code; s++) {
        snprintf(p, sizeof p, "decode_head.fusion.stages.%d", s);
        code = load_block(ws, &h->fusion[s], p, low, high, proj, high, 0, cfg, err);
        snprintf(p, sizeof p, "decode_head.context.stages.%d", s);
        if (!code) code = load_block(ws, &h->context[s], p, c, c, proj, c, 1, cfg, err);
    }
    if (!code) code = load_conv_module(ws, &h->fusion_bottleneck, "decode_head.fusion.bottleneck", 2 * high, high, 1, 0, 1, 0, err);
    if (!code) code = load_conv_module(ws, &h->bottleneck, "decode_head.bottleneck", high, c, 3, 1, 1, 1, err);
    if (!code) code = load_conv_module(ws, &h->context_bottleneck, "decode_head.context.bottleneck", 2 * c, c, 1, 0, 1, 1, err);
    if (!code) code = load_conv_seg(ws, &h->conv_seg, c, cfg->num_classes, err);
    if (code) { ann_free(h); return NULL; }
    return h;
}

/* Sum of the stages' contexts, then the bottleneck on cat[context, query map]. */
static tensor pyramid_block(run_ctx *ctx, const attention_block *stages, int n, const conv2d *bottleneck, tensor query,
                            tensor key) {
    tensor sum = attention_forward(ctx, &stages[0], query, key, NULL, NULL);
    for (int s = 1; s < n; s++) {
        tensor more = attention_forward(ctx, &stages[s], query, key, NULL, NULL);
        if (!ctx->dry && !ctx->ar.failed)
            for (size_t i = 0; i < tensor_numel(sum); i++) sum.d[i] += more.d[i];
        ctx_release(ctx, more);
    }
    tensor out = conv_on_concat(ctx, bottleneck, sum, query);
    ctx_release(ctx, sum);
    return out;
}

/* APNB alone (self-attention with pyramid-pooled keys, then the bottleneck on cat[context, x]). */
tensor ann_context(run_ctx *ctx, const void *p, tensor x) {
    const ann_head *h = p;
    return pyramid_block(ctx, h->context, h->n_stages, &h->context_bottleneck, x, x);
}

static tensor ann_forward(run_ctx *ctx, const void *p, const tensor *feats) {
    const ann_head *h = p;
    tensor fused = pyramid_block(ctx, h->fusion, h->n_stages, &h->fusion_bottleneck, feats[1], feats[0]);
    tensor f = conv_forward(ctx, &h->bottleneck, fused, NULL);
    ctx_release(ctx, fused);
    tensor g = pyramid_block(ctx, h->context, h->n_stages, &h->context_bottleneck, f, f);
    ctx_release(ctx, f);
    tensor logits = conv_forward(ctx, &h->conv_seg, g, NULL);
    ctx_release(ctx, g);
    return logits;
}

const head_vtable head_ann = {"ann", ann_load, ann_forward, ann_free};
