/* ISANet (Huang et al., 2019): interlaced sparse self-attention. The map is padded (centred) to whole
 * down_factor groups; a global relation among the tokens sharing a position inside their group (a
 * strided sub-grid), then a local relation inside each contiguous group, then the crop back (SPEC §8). */
#include <math.h>
#include <stdlib.h>

#include "attention.h"
#include "module_bench.h"
#include "util.h"

typedef struct {
    conv2d in_conv, out_conv, conv_seg;
    attention_block relation[2]; /* global, local */
    int lh, lw;
} isanet_head;

static void isanet_free(void *p) {
    isanet_head *h = p;
    if (!h) return;
    conv_free(&h->in_conv), conv_free(&h->out_conv), conv_free(&h->conv_seg);
    attention_free(&h->relation[0]), attention_free(&h->relation[1]);
    free(h);
}

static int load_relation(weight_store *ws, attention_block *a, const char *name, int c, int isa, sa_error *err) {
    char p[96];
    int code;
    a->channels = isa, a->scale = 1.f / sqrtf((float)isa), a->n_key = a->n_query = 2, a->has_out = 1;
    snprintf(p, sizeof p, "decode_head.%s.key_project", name);
    if ((code = attention_load_projection(ws, a->key, 2, p, c, isa, 1, err))) return code;
    snprintf(p, sizeof p, "decode_head.%s.query_project", name);
    if ((code = attention_load_projection(ws, a->query, 2, p, c, isa, 1, err))) return code;
    snprintf(p, sizeof p, "decode_head.%s.value_project", name);
    if ((code = load_plain_conv(ws, &a->value, p, c, c, 1, err))) return code;
    snprintf(p, sizeof p, "decode_head.%s.output_project", name);
    return load_conv_module(ws, &a->out, p, c, c, 1, 0, 1, 1, err);
}

static void *isanet_load(const head_cfg *cfg, weight_store *ws, sa_error *err) {
    isanet_head *h = calloc(1, sizeof *h);
    if (!h) { sa_fail(err, SA_EXIT_INTERNAL, "decode_head: out of memory"); return NULL; }
    int c = cfg->channels, code;
    h->lh = cfg->down_factor[0], h->lw = cfg->down_factor[1];
    code = load_conv_module(ws, &h->in_conv, "decode_head.in_conv", cfg->in_channels[0], c, 3, 1, 1, 1, err);
    if (!code) code = load_relation(ws, &h->relation[0], "global_relation", c, cfg->isa_channels, err);
    if (!code) code = load_relation(ws, &h->relation[1], "local_relation", c, cfg->isa_channels, err);
    if (!code) code = load_conv_module(ws, &h->out_conv, "decode_head.out_conv", 2 * c, c, 1, 0, 1, 1, err);
    if (!code) code = load_conv_seg(ws, &h->conv_seg, c, cfg->num_classes, err);
    if (code) { isanet_free(h); return NULL; }
    return h;
}

/* Padded position of token (gy, ly, gx, lx): row gy·lh + ly, column gx·lw + lx. Global groups are
 * indexed by (ly, lx) and hold every (gy, gx); local groups the other way round. */
static void make_groups(int gh, int gw, int lh, int lw, int local, int *index) {
    int wp = gw * lw, n = 0;
    int outer_a = local ? gh : lh, outer_b = local ? gw : lw, inner_a = local ? lh : gh, inner_b = local ? lw : gw;
    for (int a = 0; a < outer_a; a++)
        for (int b = 0; b < outer_b; b++)
            for (int i = 0; i < inner_a; i++)
                for (int j = 0; j < inner_b; j++) {
                    int gy = local ? a : i, ly = local ? i : a, gx = local ? b : j, lx = local ? j : b;
                    index[n++] = (gy * lh + ly) * wp + gx * lw + lx;
                }
}

/* dst[c][j] = src[c][from[j]], 0 where from[j] < 0: one pass per channel plane, which stays in cache. */
static void permute_positions(run_ctx *ctx, tensor src, const int *from, tensor dst) {
    int id = ctx_log(ctx, "isanet.permute", src, dst, 0, 0);
    double t0 = wall_seconds();
    if (ctx->dry || ctx->ar.failed) return;
    size_t n = tensor_plane(dst), sp = tensor_plane(src);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < dst.c; c++) {
        const float *s = src.d + (size_t)c * sp;
        float *d = dst.d + (size_t)c * n;
        for (size_t j = 0; j < n; j++) d[j] = from[j] >= 0 ? s[from[j]] : 0.f;
    }
    ctx_log_time(ctx, id, t0);
}

/* The ISA module alone: pad to whole groups, global relation, local relation, crop (a new tensor). Each
 * relation runs on the map permuted into its group order, so that a group is a run of columns: three
 * per-channel permutations (pad and order, global to local order, order back and crop) instead of
 * gathering q, k, v and scattering the context per group, whose reads at stride lw missed cache. */
tensor isanet_context(run_ctx *ctx, const void *p, tensor x) {
    const isanet_head *h = p;
    int gh = (x.h + h->lh - 1) / h->lh, gw = (x.w + h->lw - 1) / h->lw, hp = gh * h->lh, wp = gw * h->lw;
    int top = (hp - x.h) / 2, left = (wp - x.w) / 2, n = hp * wp;
    int *from_x = (int *)ctx_scratch(ctx, 4 * (size_t)n + (size_t)x.h * x.w);
    int *from_global = from_x + n, *from_local = from_global + n, *where = from_local + (size_t)x.h * x.w;
    tensor ordered = ctx_tensor(ctx, x.c, hp, wp);
    if (!ctx->dry && !ctx->ar.failed) {
        int *order = where + n; /* padded position of each token: in global order, then in local order */
        make_groups(gh, gw, h->lh, h->lw, 0, order);
        for (int j = 0; j < n; j++) {
            int y = order[j] / wp - top, xx = order[j] % wp - left;
            from_x[j] = y >= 0 && y < x.h && xx >= 0 && xx < x.w ? y * x.w + xx : -1;
            where[order[j]] = j;
        }
        make_groups(gh, gw, h->lh, h->lw, 1, order);
        for (int j = 0; j < n; j++) from_global[j] = where[order[j]];
        for (int j = 0; j < n; j++) where[order[j]] = j;
        for (int y = 0; y < x.h; y++)
            for (int xx = 0; xx < x.w; xx++) from_local[y * x.w + xx] = where[(y + top) * wp + xx + left];
    }
    permute_positions(ctx, x, from_x, ordered);
    token_groups global = {h->lh * h->lw, gh * gw}, local = {gh * gw, h->lh * h->lw};
    tensor g = attention_forward(ctx, &h->relation[0], ordered, ordered, NULL, &global);
    ctx_release(ctx, ordered);
    tensor reordered = ctx_tensor(ctx, x.c, hp, wp);
    permute_positions(ctx, g, from_global, reordered);
    ctx_release(ctx, g);
    tensor l = attention_forward(ctx, &h->relation[1], reordered, reordered, NULL, &local);
    ctx_release(ctx, reordered);
    tensor cropped = ctx_tensor(ctx, x.c, x.h, x.w);
    permute_positions(ctx, l, from_local, cropped);
    ctx_release(ctx, l);
    ctx_release_ptr(ctx, from_x);
    return cropped;
}

static tensor isanet_forward(run_ctx *ctx, const void *p, const tensor *feats) {
    const isanet_head *h = p;
    tensor x = conv_forward(ctx, &h->in_conv, feats[0], NULL);
    tensor cropped = isanet_context(ctx, h, x);
    tensor out = conv_on_concat(ctx, &h->out_conv, cropped, x);
    ctx_release(ctx, cropped), ctx_release(ctx, x);
    tensor logits = conv_forward(ctx, &h->conv_seg, out, NULL);
    ctx_release(ctx, out);
    return logits;
}

const head_vtable head_isanet = {"isanet", isanet_load, isanet_forward, isanet_free};
