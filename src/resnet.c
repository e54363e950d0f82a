/* ResNetV1c (deep stem, pytorch-style strides) with dilation as in mmseg's d8 models (SPEC §2). */
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

/* Loads block `prefix`'s spatial-bias branch and folds the first `planes` channels of its wider bn2 into
 * conv2 (the rest scale the bias maps). */
int spatial_bias_load(spatial_bias **out, weight_store *ws, const char *prefix, conv2d *conv2, const backbone_cfg *cfg,
                      sa_error *err);
void spatial_bias_free(spatial_bias *sb);
int spatial_bias_maps(const backbone_cfg *cfg);
/* conv2 of a block with spatial bias: cat[conv2(t), resize(sb(t))], then bn2 and ReLU. */
tensor spatial_bias_conv2(run_ctx *ctx, const res_block *blk, tensor t);

static const int BLOCKS[][5] = {{18, 2, 2, 2, 2}, {34, 3, 4, 6, 3}, {50, 3, 4, 6, 3}, {101, 3, 4, 23, 3}, {152, 3, 8, 36, 3}};

static int load_block(weight_store *ws, res_block *blk, const backbone_cfg *cfg, int stage, int index, int inplanes,
                      int planes, int stride, int dil, sa_error *err) {
    char p[64], w[96], bn[96], dw[96], dbn[96];
    snprintf(p, sizeof p, "backbone.layer%d.%d", stage + 1, index);
    int expansion = blk->bottleneck ? 4 : 1, code;
    blk->has_down = index == 0 && (stride != 1 || inplanes != planes * expansion);
    if (blk->has_down) {
        snprintf(dw, sizeof dw, "%s.downsample.0.weight", p);
        snprintf(dbn, sizeof dbn, "%s.downsample.1", p);
        conv_spec s = {dw, dbn, NULL, planes * expansion, inplanes, 1, stride, 0, 1, 0, 4};
        if ((code = conv_load(ws, &blk->down, &s, err))) return code;
    }
    snprintf(w, sizeof w, "%s.conv1.weight", p), snprintf(bn, sizeof bn, "%s.bn1", p);
    if (!blk->bottleneck) {
        conv_spec c1 = {w, bn, NULL, planes, inplanes, 3, stride, dil, dil, 1, 4};
        if ((code = conv_load(ws, &blk->conv1, &c1, err))) return code;
        snprintf(w, sizeof w, "%s.conv2.weight", p), snprintf(bn, sizeof bn, "%s.bn2", p);
        conv_spec c2 = {w, bn, NULL, planes, planes, 3, 1, 1, 1, 1, 4}; /* never dilated in mmseg */
        return conv_load(ws, &blk->conv2, &c2, err);
    }
    conv_spec c1 = {w, bn, NULL, planes, inplanes, 1, 1, 0, 1, 1, 4};
    if ((code = conv_load(ws, &blk->conv1, &c1, err))) return code;
    int with_sb = (cfg->spatial_bias.stage_mask >> stage) & 1, maps = with_sb ? spatial_bias_maps(cfg) : 0;
    snprintf(w, sizeof w, "%s.conv2.weight", p), snprintf(bn, sizeof bn, "%s.bn2", p);
    /* With spatial bias, bn2 spans planes + maps channels: the spatial-bias code folds it itself. */
    conv_spec c2 = {w, with_sb ? NULL : bn, NULL, planes, planes, 3, stride, dil, dil, !with_sb, 4};
    if ((code = conv_load(ws, &blk->conv2, &c2, err))) return code;
    if (with_sb && (code = spatial_bias_load(&blk->sb, ws, p, &blk->conv2, cfg, err))) return code;
    snprintf(w, sizeof w, "%s.conv3.weight", p), snprintf(bn, sizeof bn, "%s.bn3", p);
    conv_spec c3 = {w, bn, NULL, planes * 4, planes + maps, 1, 1, 0, 1, 1, 4};
    return conv_load(ws, &blk->conv3, &c3, err);
}

int resnet_load(resnet *r, const backbone_cfg *cfg, weight_store *ws, sa_error *err) {
    memset(r, 0, sizeof *r);
    const int *counts = NULL;
    for (size_t i = 0; i < sizeof BLOCKS / sizeof BLOCKS[0]; i++)
        if (BLOCKS[i][0] == cfg->depth) counts = &BLOCKS[i][1];
    int half = cfg->stem_channels / 2, code;
    static const char *stem_w[3] = {"backbone.stem.0.weight", "backbone.stem.3.weight", "backbone.stem.6.weight"};
    static const char *stem_bn[3] = {"backbone.stem.1", "backbone.stem.4", "backbone.stem.7"};
    int stem_in[3] = {3, half, half}, stem_out[3] = {half, half, cfg->stem_channels};
    for (int i = 0; i < 3; i++) {
        conv_spec s = {stem_w[i], stem_bn[i], NULL, stem_out[i], stem_in[i], 3, i == 0 ? 2 : 1, 1, 1, 1, 4};
        if ((code = conv_load(ws, &r->stem[i], &s, err))) return code;
    }
    int bottleneck = cfg->depth >= 50, inplanes = cfg->stem_channels;
    for (int s = 0; s < 4; s++) {
        int planes = cfg->base_channels << s, dil = cfg->dilations[s];
        int first_dil = cfg->contract_dilation && dil > 1 ? dil / 2 : dil;
        r->n_blocks[s] = counts[s];
        r->blocks[s] = calloc((size_t)counts[s], sizeof(res_block));
        if (!r->blocks[s]) return sa_fail(err, SA_EXIT_INTERNAL, "backbone: out of memory");
        for (int b = 0; b < counts[s]; b++) {
            res_block *blk = &r->blocks[s][b];
            blk->bottleneck = bottleneck;
            int block_dil = b ? dil : first_dil;
            if (s == 3 && cfg->n_multi_grid) block_dil = cfg->multi_grid[b]; /* mmseg: absolute, block by block */
            if ((code = load_block(ws, blk, cfg, s, b, inplanes, planes, b ? 1 : cfg->strides[s], block_dil, err)))
                return code;
            inplanes = planes * (bottleneck ? 4 : 1);
        }
        r->out_channels[s] = inplanes;
    }
    return SA_OK;
}

void resnet_free(resnet *r) {
    for (int i = 0; i < 3; i++) conv_free(&r->stem[i]);
    for (int s = 0; s < 4; s++) {
        for (int b = 0; r->blocks[s] && b < r->n_blocks[s]; b++) {
            res_block *blk = &r->blocks[s][b];
            conv_free(&blk->conv1), conv_free(&blk->conv2), conv_free(&blk->conv3), conv_free(&blk->down);
            spatial_bias_free(blk->sb);
        }
        free(r->blocks[s]);
    }
    memset(r, 0, sizeof *r);
}

static tensor block_forward(run_ctx *ctx, const res_block *blk, tensor x) {
    tensor identity = blk->has_down ? conv_forward(ctx, &blk->down, x, NULL) : x;
    tensor t = conv_forward(ctx, &blk->conv1, x, NULL), out;
    if (blk->bottleneck) {
        tensor u = blk->sb ? spatial_bias_conv2(ctx, blk, t) : conv_forward(ctx, &blk->conv2, t, NULL);
        ctx_release(ctx, t);
        out = conv_forward(ctx, &blk->conv3, u, &identity);
        ctx_release(ctx, u);
    } else {
        out = conv_forward(ctx, &blk->conv2, t, &identity);
        ctx_release(ctx, t);
    }
    if (blk->has_down) ctx_release(ctx, identity);
    return out;
}

void resnet_forward(run_ctx *ctx, const resnet *r, tensor img, int keep_mask, tensor out[4]) {
    tensor x = img;
    for (int i = 0; i < 3; i++) {
        tensor y = conv_forward(ctx, &r->stem[i], x, NULL);
        if (i) ctx_release(ctx, x);
        x = y;
    }
    tensor pooled = maxpool3x3s2(ctx, x);
    ctx_release(ctx, x);
    x = pooled;
    int last_stage = 0;
    for (int s = 0; s < 4; s++)
        if (keep_mask >> s & 1) last_stage = s;
    int x_is_kept = 0;
    for (int s = 0; s <= last_stage; s++) {
        for (int b = 0; b < r->n_blocks[s]; b++) {
            tensor y = block_forward(ctx, &r->blocks[s][b], x);
            if (!x_is_kept) ctx_release(ctx, x);
            x = y;
            x_is_kept = 0;
        }
        out[s] = x;
        x_is_kept = keep_mask >> s & 1;
    }
    if (!x_is_kept) ctx_release(ctx, x);
}
