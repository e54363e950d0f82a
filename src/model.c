/* The model: config + weights → backbone and head; arena planning; one forward pass; labels. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"
#include "model.h"
#include "ops.h"
#include "util.h"

static const head_vtable *const HEADS[] = {[HEAD_FCN] = &head_fcn,     [HEAD_ANN] = &head_ann,
                                           [HEAD_CCNET] = &head_ccnet, [HEAD_ISANET] = &head_isanet,
                                           [HEAD_EANET] = &head_eanet, [HEAD_NONLOCAL] = &head_nonlocal};

static sa_model *load(const char *config, const char *const *weights, int n_weights, int random, sa_error *err) {
    sa_model *m = calloc(1, sizeof *m);
    if (!m) { sa_fail(err, SA_EXIT_INTERNAL, "out of memory"); return NULL; }
    weight_store ws = {0};
    ws.synthetic = random;
    ws.seed = 12345;
    int code = config_load(config, &m->cfg, err);
    if (random) n_weights = -1; /* no files at all */
    else if (!code && n_weights == 0 && m->cfg.n_weights == 0)
        code = sa_fail(err, SA_EXIT_MODEL, "%s: weights: none given (use -w or a \"weights\" list)", config);
    for (int i = 0; !code && n_weights >= 0 && i < (n_weights ? n_weights : m->cfg.n_weights); i++) {
        char *path = n_weights ? strdup(weights[i]) : path_join(m->cfg.dir, m->cfg.weights[i]);
        code = path ? weights_open(&ws, path, err) : sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
        free(path);
    }
    if (!code) code = weights_finish(&ws, err);
    if (!code) code = resnet_load(&m->backbone, &m->cfg.backbone, &ws, err);
    if (!code) {
        m->head_ops = HEADS[m->cfg.head.type];
        m->head = m->head_ops->load(&m->cfg.head, &ws, err);
        if (!m->head) code = err->code ? err->code : SA_EXIT_MODEL;
    }
    if (!code) m->unused = weights_unused(&ws), m->used = weights_used(&ws), m->nonfinite = weights_nonfinite(&ws);
    weights_close(&ws); /* every weight now lives, folded, in the layers */
    if (code) {
        sa_model_free(m);
        return NULL;
    }
    return m;
}

sa_model *sa_model_load(const char *config, const char *const *weights, int n_weights, sa_error *err) {
    return load(config, weights, n_weights, 0, err);
}

sa_model *sa_model_load_random(const char *config, sa_error *err) { return load(config, NULL, 0, 1, err); }

void sa_model_free(sa_model *m) {
    if (!m) return;
    if (m->head_ops && m->head) m->head_ops->free(m->head);
    resnet_free(&m->backbone);
    config_free(&m->cfg);
    free(m->unused);
    free(m->nonfinite);
    free(m->used);
    gemm_free((float *)m->arena_mem);
    free(m->ctx.log);
    free(m);
}

const char *sa_model_unused_tensors(const sa_model *m) { return m->unused; }
const char *sa_model_nonfinite_weights(const sa_model *m) { return m->nonfinite; }
int sa_model_num_classes(const sa_model *m) { return m->cfg.head.num_classes; }
const char *sa_model_class_name(const sa_model *m, int k) {
    return k >= 0 && k < m->cfg.n_classes ? m->cfg.classes[k] : NULL;
}

const uint8_t *sa_model_palette(const sa_model *m, int k) {
    static uint8_t fallback[256][3];
    if (k >= 0 && k < m->cfg.n_palette) return m->cfg.palette[k];
    sa_default_color(k & 255, fallback[k & 255]);
    return fallback[k & 255];
}

static void run_network(sa_model *m, tensor img, tensor *logits) {
    const head_cfg *h = &m->cfg.head;
    int keep = 0;
    for (int i = 0; i < h->n_in; i++) keep |= 1 << h->in_index[i];
    tensor stages[4] = {{0}};
    resnet_forward(&m->ctx, &m->backbone, img, keep, stages);
    tensor feats[2];
    for (int i = 0; i < h->n_in; i++) feats[i] = stages[h->in_index[i]];
    *logits = m->head_ops->forward(&m->ctx, m->head, feats);
    for (int s = 0; s < 4; s++)
        if (keep >> s & 1) ctx_release(&m->ctx, stages[s]);
}

int model_plan(sa_model *m, int h, int w, sa_error *err) {
    run_ctx *ctx = &m->ctx;
    ctx->dry = 1;
    ctx->n_log = 0;
    ctx->macs_total = 0;
    arena_reset(&ctx->ar, NULL, SIZE_MAX);
    tensor img = ctx_tensor(ctx, 3, h, w), logits;
    run_network(m, img, &logits);
    ctx->dry = 0;
    if (ctx->ar.failed) return sa_fail(err, SA_EXIT_INTERNAL, "arena: too many live tensors while planning");
    size_t need = ctx->ar.high;
    if (need > m->arena_size) {
        gemm_free((float *)m->arena_mem);
        /* Huge-page backed (gemm_alloc): convs walk channel planes tens of KiB apart, and with 4 KiB pages
         * every plane is a TLB miss (measured: the R101 1x1 convs ran ~20 % slower from a malloc'd arena). */
        m->arena_mem = (char *)gemm_alloc((need + sizeof(float) - 1) / sizeof(float));
        m->arena_size = m->arena_mem ? need : 0;
        if (!m->arena_mem)
            return sa_fail(err, SA_EXIT_INTERNAL, "out of memory: %.1f MiB of activations for a %dx%d input",
                           (double)need / 1048576.0, w, h);
    }
    m->planned_h = h, m->planned_w = w, m->planned_threads = omp_get_max_threads();
    return SA_OK;
}

/* The image goes in as the arena's first tensor: (pixel − mean) / std in the model's channel order. */
static tensor normalise_into_arena(sa_model *m, const sa_image *img) {
    tensor t = ctx_tensor(&m->ctx, 3, img->h, img->w);
    size_t plane = (size_t)img->h * img->w;
    for (int c = 0; c < 3; c++) {
        int src = m->cfg.to_rgb ? c : 2 - c;
        float mean = m->cfg.mean[c], std = m->cfg.std[c];
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < plane; i++) t.d[c * plane + i] = ((float)img->rgb[i * 3 + src] - mean) / std;
    }
    return t;
}

int model_forward(sa_model *m, const sa_image *img, tensor *logits, sa_error *err) {
    int code;
    int replan = img->h != m->planned_h || img->w != m->planned_w || omp_get_max_threads() != m->planned_threads;
    if (replan && (code = model_plan(m, img->h, img->w, err))) return code;
    run_ctx *ctx = &m->ctx;
    arena_reset(&ctx->ar, m->arena_mem, m->arena_size);
    ctx->log_pos = 0;
    tensor x = normalise_into_arena(m, img);
    run_network(m, x, logits);
    if (ctx->ar.failed) return sa_fail(err, SA_EXIT_INTERNAL, "arena: the run did not follow its plan");
    return SA_OK;
}

int sa_predict(sa_model *m, const sa_image *img, const sa_run_opts *opts, sa_labels *out, sa_logits *logits,
               sa_error *err) {
    memset(out, 0, sizeof *out);
    if (logits) memset(logits, 0, sizeof *logits);
    if (opts && opts->threads > 0) {
        omp_set_num_threads(opts->threads);
        gemm_set_threads(opts->threads);
    }
    /* The config's test scale applies unless the caller chose one, or none (negative sides). */
    sa_run_opts scaled, defaults = {0};
    if (!opts) opts = &defaults;
    if ((opts->scale[0] < 0 || (opts->scale[0] == 0 && m->cfg.test_scale[0] > 0))) {
        scaled = *opts;
        scaled.scale[0] = opts->scale[0] < 0 ? 0 : m->cfg.test_scale[0];
        scaled.scale[1] = opts->scale[0] < 0 ? 0 : m->cfg.test_scale[1];
        opts = &scaled;
    }
    if (!infer_is_plain(m, opts)) return infer_predict(m, img, opts, out, logits, err);
    tensor lg;
    int code = model_forward(m, img, &lg, err);
    if (code) return code;
    out->w = img->w, out->h = img->h;
    out->id = malloc((size_t)img->w * img->h);
    if (!out->id) return sa_fail(err, SA_EXIT_INTERNAL, "out of memory for a %dx%d label map", img->w, img->h);
    resize_argmax(lg, img->h, img->w, m->cfg.align_corners, out->id, NULL);
    if (logits) {
        logits->k = lg.c, logits->h = lg.h, logits->w = lg.w;
        logits->data = malloc(tensor_numel(lg) * sizeof(float));
        if (!logits->data) return sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
        memcpy(logits->data, lg.d, tensor_numel(lg) * sizeof(float));
    }
    return SA_OK;
}

void sa_labels_free(sa_labels *l) {
    free(l->id);
    l->id = NULL;
}

void sa_logits_free(sa_logits *l) {
    free(l->data);
    l->data = NULL;
}

int sa_logits_write(const char *path, const sa_logits *l, sa_error *err) {
    st_out t = {"logits", 4, {1, l->k, l->h, l->w}, l->data};
    return st_write_f32(path, &t, 1, err);
}
