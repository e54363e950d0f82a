/* Pieces every decode head is built from: ConvModules under mmseg's names, the classifier, and the FCN body
 * that the FCN, CCNet and non-local heads share. */
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

int load_conv_module(weight_store *ws, conv2d *c, const char *prefix, int cin, int cout, int k, int pad, int dil,
                     int relu, sa_error *err) {
    char w[160], bn[160];
    snprintf(w, sizeof w, "%s.conv.weight", prefix);
    snprintf(bn, sizeof bn, "%s.bn", prefix);
    conv_spec s = {w, bn, NULL, cout, cin, k, 1, pad, dil, relu, 4};
    return conv_load(ws, c, &s, err);
}

int load_plain_conv(weight_store *ws, conv2d *c, const char *prefix, int cin, int cout, int k, sa_error *err) {
    char w[160], b[160];
    snprintf(w, sizeof w, "%s.weight", prefix);
    snprintf(b, sizeof b, "%s.bias", prefix);
    conv_spec s = {w, NULL, b, cout, cin, k, 1, k / 2, 1, 0, 4};
    return conv_load(ws, c, &s, err);
}

int load_conv_seg(weight_store *ws, conv2d *c, int channels, int num_classes, sa_error *err) {
    return load_plain_conv(ws, c, "decode_head.conv_seg", channels, num_classes, 1, err);
}

tensor conv_on_concat(run_ctx *ctx, const conv2d *conv, tensor a, tensor b) {
    tensor cat = concat_channels(ctx, a, b);
    tensor out = conv_forward(ctx, conv, cat, NULL);
    ctx_release(ctx, cat);
    return out;
}

int fcn_body_load(fcn_body *b, const head_cfg *cfg, weight_store *ws, sa_error *err) {
    memset(b, 0, sizeof *b);
    b->num_convs = cfg->num_convs, b->concat_input = cfg->concat_input;
    int k = cfg->kernel_size, code;
    char p[64];
    for (int i = 0; i < cfg->num_convs; i++) {
        snprintf(p, sizeof p, "decode_head.convs.%d", i);
        if ((code = load_conv_module(ws, &b->convs[i], p, i ? cfg->channels : cfg->in_channels[0], cfg->channels, k,
                                     k / 2 * cfg->dilation, cfg->dilation, 1, err)))
            return code;
    }
    if (cfg->concat_input &&
        (code = load_conv_module(ws, &b->conv_cat, "decode_head.conv_cat", cfg->in_channels[0] + cfg->channels,
                                 cfg->channels, k, k / 2, 1, 1, err)))
        return code;
    return load_conv_seg(ws, &b->conv_seg, cfg->channels, cfg->num_classes, err);
}

void fcn_body_free(fcn_body *b) {
    for (int i = 0; i < b->num_convs; i++) conv_free(&b->convs[i]);
    conv_free(&b->conv_cat), conv_free(&b->conv_seg);
}

tensor fcn_body_forward(run_ctx *ctx, const fcn_body *b, tensor x, fcn_middle middle, const void *arg) {
    tensor f = x;
    for (int i = 0; i < b->num_convs; i++) {
        tensor g = conv_forward(ctx, &b->convs[i], f, NULL);
        if (f.d != x.d) ctx_release(ctx, f);
        f = g;
        if (i == 0 && middle) {
            g = middle(ctx, arg, f);
            ctx_release(ctx, f);
            f = g;
        }
    }
    if (b->concat_input) {
        tensor g = conv_on_concat(ctx, &b->conv_cat, x, f);
        if (f.d != x.d) ctx_release(ctx, f);
        f = g;
    }
    tensor logits = conv_forward(ctx, &b->conv_seg, f, NULL);
    if (f.d != x.d) ctx_release(ctx, f);
    return logits;
}

/* ---- FCN head: the body alone. ---- */
static void *fcn_load(const head_cfg *cfg, weight_store *ws, sa_error *err) {
    fcn_body *b = calloc(1, sizeof *b);
    if (!b) { sa_fail(err, SA_EXIT_INTERNAL, "decode_head: out of memory"); return NULL; }
    if (fcn_body_load(b, cfg, ws, err)) { fcn_body_free(b); free(b); return NULL; }
    return b;
}

static tensor fcn_forward(run_ctx *ctx, const void *head, const tensor *feats) {
    return fcn_body_forward(ctx, head, feats[0], NULL, NULL);
}

static void fcn_free(void *head) {
    if (head) fcn_body_free(head);
    free(head);
}

const head_vtable head_fcn = {"fcn", fcn_load, fcn_forward, fcn_free};
