/* Internal model pieces: the backbone, the decode heads behind one small interface, and the model. */
#ifndef SA_MODEL_H
#define SA_MODEL_H
#include "config.h"
#include "ops.h"

typedef struct spatial_bias spatial_bias;

typedef struct {
    conv2d conv1, conv2, conv3, down; /* conv3 only in Bottleneck blocks */
    int has_down, bottleneck;
    spatial_bias *sb;                 /* Spatial Bias branch (Bottleneck only), or NULL */
} res_block;

typedef struct {
    conv2d stem[3];
    res_block *blocks[4];
    int n_blocks[4];
    int out_channels[4];
} resnet;

int resnet_load(resnet *r, const backbone_cfg *cfg, weight_store *ws, sa_error *err);
void resnet_free(resnet *r);
/* Runs the backbone on the normalised image; stages whose bit is in keep_mask are returned in out[],
 * everything else is released as soon as it is consumed. */
void resnet_forward(run_ctx *ctx, const resnet *r, tensor img, int keep_mask, tensor out[4]);

/* A decode head: loads its weights (prefix "decode_head.") and maps the selected backbone features to
 * logits at backbone resolution. */
typedef struct {
    const char *name;
    void *(*load)(const head_cfg *cfg, weight_store *ws, sa_error *err);
    tensor (*forward)(run_ctx *ctx, const void *head, const tensor *feats); /* feats[i] = stage in_index[i] */
    void (*free)(void *head);
} head_vtable;

extern const head_vtable head_fcn, head_ann, head_ccnet, head_isanet, head_eanet, head_nonlocal;

/* Shared by the heads: a ConvModule (conv + BN [+ ReLU]) and a plain biased conv, named as mmseg names them. */
int load_conv_module(weight_store *ws, conv2d *c, const char *prefix, int cin, int cout, int k, int pad, int dil,
                     int relu, sa_error *err);
int load_plain_conv(weight_store *ws, conv2d *c, const char *prefix, int cin, int cout, int k, sa_error *err);
/* Runs `conv` on cat[a, b] without keeping the concatenation longer than needed. */
tensor conv_on_concat(run_ctx *ctx, const conv2d *conv, tensor a, tensor b);
/* The final 1×1 classifier, `decode_head.conv_seg`. */
int load_conv_seg(weight_store *ws, conv2d *c, int channels, int num_classes, sa_error *err);

struct sa_model {
    model_cfg cfg;
    resnet backbone;
    const head_vtable *head_ops;
    void *head;
    char *unused;
    char *nonfinite;           /* weights_nonfinite: NaN / Inf weights, or NULL */
    char *used;                /* "name dtype [shape]" lines of every tensor read */
    run_ctx ctx;
    char *arena_mem;
    size_t arena_size;
    int planned_h, planned_w;  /* input size the arena was planned for */
    int planned_threads;       /* and the thread count: conv scratch depends on it */
};

/* Plans the arena for an input size (dry run); with a layer log when ctx.want_log is set. */
int model_plan(sa_model *m, int h, int w, sa_error *err);



/* The FCN body that CCNet and non-local share: convs.0, [middle], convs.1.., conv_cat on cat[x, f], conv_seg. */
typedef struct {
    conv2d convs[16];
    int num_convs, concat_input;
    conv2d conv_cat, conv_seg;
} fcn_body;
int fcn_body_load(fcn_body *b, const head_cfg *cfg, weight_store *ws, sa_error *err);
void fcn_body_free(fcn_body *b);
typedef tensor (*fcn_middle)(run_ctx *ctx, const void *arg, tensor x);
tensor fcn_body_forward(run_ctx *ctx, const fcn_body *b, tensor x, fcn_middle middle, const void *arg);
#endif
