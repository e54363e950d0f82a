/* Spatial Bias (Go et al., arXiv 2302.12505) inside Bottleneck blocks, as SPEC §15.1: a 1×1 reduction to
 * a few maps, adaptive pooling to pool×pool, a 1×kernel convolution across the reduced channels that is
 * fully connected over the pooled positions, resized to the conv2 output and concatenated after it. */
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

struct spatial_bias {
    conv2d reduce;           /* 1×1 planes → channels, BN, ReLU */
    int channels, pool, kernel, maps;
    float *w, *b;            /* sb_conv: [pool², pool², kernel], [pool²] */
    float *bn_scale, *bn_shift; /* the maps' share of bn2 */
};

int spatial_bias_maps(const backbone_cfg *cfg) { return cfg->spatial_bias.channels - cfg->spatial_bias.kernel + 1; }

void spatial_bias_free(spatial_bias *sb) {
    if (!sb) return;
    conv_free(&sb->reduce);
    free(sb->w), free(sb->b), free(sb->bn_scale), free(sb->bn_shift);
    free(sb);
}

int spatial_bias_load(spatial_bias **out, weight_store *ws, const char *prefix, conv2d *conv2, const backbone_cfg *cfg,
                      sa_error *err) {
    spatial_bias *sb = calloc(1, sizeof *sb);
    if (!sb) return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", prefix);
    *out = sb;
    sb->channels = cfg->spatial_bias.channels, sb->pool = cfg->spatial_bias.pool, sb->kernel = cfg->spatial_bias.kernel;
    sb->maps = spatial_bias_maps(cfg);
    int planes = conv2->cout, pp = sb->pool * sb->pool, wide = planes + sb->maps, code;
    char w[128], bn[128];
    snprintf(w, sizeof w, "%s.SB.feature_reduction.0.weight", prefix);
    snprintf(bn, sizeof bn, "%s.SB.feature_reduction.1", prefix);
    conv_spec rs = {w, bn, NULL, sb->channels, planes, 1, 1, 0, 1, 1, 4};
    if ((code = conv_load(ws, &sb->reduce, &rs, err))) return code;
    sb->w = malloc((size_t)pp * pp * sb->kernel * sizeof(float));
    sb->b = malloc((size_t)pp * sizeof(float));
    double *bn2 = malloc(2 * (size_t)wide * sizeof(double)); /* bn2 as scale, shift */
    sb->bn_scale = malloc((size_t)sb->maps * sizeof(float));
    sb->bn_shift = malloc((size_t)sb->maps * sizeof(float));
    if (!sb->w || !sb->b || !bn2 || !sb->bn_scale || !sb->bn_shift) {
        free(bn2);
        return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", prefix);
    }
    int64_t wshape[3] = {pp, pp, sb->kernel}, bshape[1] = {pp};
    snprintf(w, sizeof w, "%s.SB.sb_conv.weight", prefix);
    if ((code = weights_read(ws, w, 3, wshape, sb->w, err))) goto done;
    snprintf(w, sizeof w, "%s.SB.sb_conv.bias", prefix);
    if ((code = weights_read(ws, w, 1, bshape, sb->b, err))) goto done;
    snprintf(bn, sizeof bn, "%s.bn2", prefix);
    if ((code = bn_load(ws, bn, wide, bn2, bn2 + wide, err))) goto done;
    for (int o = 0; o < planes; o++) conv_fold_affine(conv2, o, bn2[o], bn2[wide + o]);
    for (int m = 0; m < sb->maps; m++)
        sb->bn_scale[m] = (float)bn2[planes + m], sb->bn_shift[m] = (float)bn2[wide + planes + m];
    conv2->relu = 1;
done:
    free(bn2);
    return code;
}

/* The branch alone: relu(bn(resize(sb_conv(pool(reduce(t)))))) written into `up` (maps × H × W), which the
 * caller allocated. */
void spatial_bias_branch(run_ctx *ctx, const spatial_bias *sb, tensor t, tensor up) {
    tensor r = conv_forward(ctx, &sb->reduce, t, NULL);
    int P = sb->pool, pp = P * P;
    tensor pooled = ctx_tensor(ctx, sb->channels, P, P), maps = ctx_tensor(ctx, sb->maps, P, P);
    int id = ctx_log(ctx, "spatial_bias", t, maps, (double)sb->maps * pp * pp * sb->kernel, (double)pp * pp * sb->kernel + pp);
    if (!ctx->dry && !ctx->ar.failed) {
        double t0 = wall_seconds();
        adaptive_avg_pool(r, P, pooled.d);
        for (int m = 0; m < sb->maps; m++)
            for (int o = 0; o < pp; o++) {
                double acc = sb->b[o];
                for (int q = 0; q < pp; q++)
                    for (int k = 0; k < sb->kernel; k++)
                        acc += (double)sb->w[((size_t)o * pp + q) * sb->kernel + k] * pooled.d[(size_t)(m + k) * pp + q];
                maps.d[(size_t)m * pp + o] = (float)acc;
            }
        resize_bilinear(maps, up, 0);
        size_t plane = tensor_plane(up);
        for (int m = 0; m < sb->maps; m++)
            for (size_t i = 0; i < plane; i++) {
                float v = up.d[m * plane + i] * sb->bn_scale[m] + sb->bn_shift[m];
                up.d[m * plane + i] = v > 0 ? v : 0;
            }
        ctx_log_time(ctx, id, t0);
    }
    ctx_release(ctx, maps), ctx_release(ctx, pooled), ctx_release(ctx, r);
}

int spatial_bias_out_maps(const spatial_bias *sb) { return sb->maps; }

tensor spatial_bias_conv2(run_ctx *ctx, const res_block *blk, tensor t) {
    const spatial_bias *sb = blk->sb;
    tensor u = conv_forward(ctx, &blk->conv2, t, NULL);
    tensor out = ctx_tensor(ctx, u.c + sb->maps, u.h, u.w);
    if (!ctx->dry && !ctx->ar.failed) copy_planes(out.d, u.d, u.c, tensor_plane(u));
    ctx_release(ctx, u);
    tensor up = {sb->maps, out.h, out.w, out.d ? out.d + tensor_numel(u) : NULL};
    spatial_bias_branch(ctx, sb, t, up);
    return out;
}
