/* Non-local (Wang et al., CVPR 2018), embedded Gaussian, between the two FCN convs (SPEC §9). It is the
 * shared attention block with theta as query, phi as key, g as value and conv_out (+ residual) as output. */
#include <math.h>
#include <stdlib.h>

#include "attention.h"
#include "module_bench.h"
#include "util.h"

typedef struct {
    fcn_body body;
    attention_block nl;
} nonlocal_head;

static void nonlocal_free(void *p) {
    nonlocal_head *h = p;
    if (!h) return;
    fcn_body_free(&h->body), attention_free(&h->nl);
    free(h);
}

/* mmcv's g/theta/phi are ConvModules without norm or activation: keys "<x>.conv.weight" and "<x>.conv.bias". */
static int load_unnormed(weight_store *ws, conv2d *c, const char *name, int cin, int cout, sa_error *err) {
    char w[96], b[96];
    snprintf(w, sizeof w, "decode_head.nl_block.%s.conv.weight", name);
    snprintf(b, sizeof b, "decode_head.nl_block.%s.conv.bias", name);
    conv_spec s = {w, NULL, b, cout, cin, 1, 1, 0, 1, 0, 4};
    return conv_load(ws, c, &s, err);
}

static void *nonlocal_load(const head_cfg *cfg, weight_store *ws, sa_error *err) {
    nonlocal_head *h = calloc(1, sizeof *h);
    if (!h) { sa_fail(err, SA_EXIT_INTERNAL, "decode_head: out of memory"); return NULL; }
    int c = cfg->channels, inter = c / cfg->reduction > 0 ? c / cfg->reduction : 1;
    attention_block *a = &h->nl;
    a->channels = inter, a->n_query = a->n_key = 1, a->has_out = 1;
    a->scale = cfg->use_scale ? 1.f / sqrtf((float)inter) : 1.f;
    int code = fcn_body_load(&h->body, cfg, ws, err);
    if (!code) code = load_unnormed(ws, &a->query[0], "theta", c, inter, err);
    if (!code) code = load_unnormed(ws, &a->key[0], "phi", c, inter, err);
    if (!code) code = load_unnormed(ws, &a->value, "g", c, inter, err);
    if (!code) code = load_conv_module(ws, &a->out, "decode_head.nl_block.conv_out", inter, c, 1, 0, 1, 0, err);
    if (code) { nonlocal_free(h); return NULL; }
    return h;
}

static tensor nonlocal_block(run_ctx *ctx, const void *arg, tensor x) {
    return attention_forward(ctx, arg, x, x, &x, NULL);
}

/* The non-local block alone (theta, phi, g, attention, conv_out, residual). */
tensor nonlocal_context(run_ctx *ctx, const void *p, tensor x) {
    const nonlocal_head *h = p;
    return nonlocal_block(ctx, &h->nl, x);
}

static tensor nonlocal_forward(run_ctx *ctx, const void *p, const tensor *feats) {
    const nonlocal_head *h = p;
    return fcn_body_forward(ctx, &h->body, feats[0], nonlocal_block, &h->nl);
}

const head_vtable head_nonlocal = {"nonlocal", nonlocal_load, nonlocal_forward, nonlocal_free};
