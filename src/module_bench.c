/* `segattn bench --module`: a context module on its own. The heads' load functions build it (random
 * weights from the synthetic weight store), the heads' own forward pieces run it, and the numbers come
 * from the same machinery as a whole model: MACs from the dry run's layer log, extra memory from the
 * arena's high-water mark, time from real runs inside a buffer of exactly that size. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "module_bench.h"
#include "util.h"

const module_info MODULES[] = {
    {"nonlocal", "non-local / self-attention, inter = C: theta, phi, g (1x1 C->C), softmax(QK^T/sqrt(C)) V, conv_out+BN, +x"},
    {"nonlocal_r2", "mmseg's NonLocal2d (reduction 2): theta, phi, g 1x1 C->C/2, attention at C/2, conv_out C/2->C+BN, +x"},
    {"ccnet", "RCCA: criss-cross attention twice with shared weights (q, k 1x1 C->C/8, v 1x1 C->C, gamma, +x)"},
    {"ann", "APNB: shared key/query 1x1 C->C/2, value C->C/2, keys pooled to 1,3,6,8 (110), out C/2->C, 1x1 2C->C"},
    {"isanet", "ISA: global + local relation (8x8 groups), q, k 2 x ConvBNReLU C->C/2, v C->C, output_project C->C"},
    {"eanet", "external attention, memory 64: conv1 1x1 C->C, linear_0 C->64, double norm, linear_1 64->C, conv2+BN, +x, ReLU"},
    {"spatial_bias", "spatial-bias branch: 1x1 C->5+BN+ReLU, pool 10x10, 1x3 conv over channels (100->100), resize, BN, ReLU"},
};
const int N_MODULES = (int)(sizeof MODULES / sizeof MODULES[0]);

typedef struct {
    int kind;                 /* index into MODULES */
    const head_vtable *ops;   /* NULL for spatial_bias */
    void *head;
    spatial_bias *sb;
} module;

static int module_index(const char *name) {
    for (int i = 0; i < N_MODULES; i++)
        if (strcmp(name, MODULES[i].name) == 0) return i;
    return -1;
}

static void module_free(module *m) {
    if (m->ops && m->head) m->ops->free(m->head);
    spatial_bias_free(m->sb);
    memset(m, 0, sizeof *m);
}

static int module_build(module *m, int kind, int c, sa_error *err) {
    memset(m, 0, sizeof *m);
    m->kind = kind;
    weight_store ws = {0};
    ws.synthetic = 1, ws.seed = 12345;
    int code = weights_finish(&ws, err);
    const char *name = MODULES[kind].name;
    if (!code && strcmp(name, "spatial_bias") == 0) {
        backbone_cfg b = {0};
        b.spatial_bias.stage_mask = 1, b.spatial_bias.channels = 5, b.spatial_bias.pool = 10, b.spatial_bias.kernel = 3;
        /* The branch folds its maps' share of the block's bn2; a 1×1 stand-in conv2 takes the rest. */
        conv2d conv2;
        conv_spec s = {"m.conv2.weight", NULL, NULL, c, c, 1, 1, 0, 1, 0, 4};
        code = conv_load(&ws, &conv2, &s, err);
        if (!code) code = spatial_bias_load(&m->sb, &ws, "m", &conv2, &b, err);
        conv_free(&conv2);
    } else if (!code) {
        head_cfg h = {0};
        h.num_classes = 19, h.channels = c, h.n_in = 1, h.in_channels[0] = h.in_channels[1] = c;
        h.in_index[0] = 3, h.num_convs = 2, h.concat_input = 1, h.kernel_size = 3, h.dilation = 1;
        if (strncmp(name, "nonlocal", 8) == 0) {
            h.type = HEAD_NONLOCAL, m->ops = &head_nonlocal;
            h.reduction = strcmp(name, "nonlocal_r2") == 0 ? 2 : 1, h.use_scale = 1;
        } else if (strcmp(name, "ccnet") == 0) {
            if (c < 8) return sa_fail(err, SA_EXIT_USAGE, "--module ccnet needs at least 8 channels");
            h.type = HEAD_CCNET, m->ops = &head_ccnet, h.recurrence = 2;
        } else if (strcmp(name, "ann") == 0) {
            h.type = HEAD_ANN, m->ops = &head_ann, h.n_in = 2, h.in_index[0] = 2;
            h.project_channels = c / 2 > 0 ? c / 2 : 1, h.n_query_scales = 1, h.query_scales[0] = 1;
            static const int pools[4] = {1, 3, 6, 8};
            h.n_key_pool = 4;
            memcpy(h.key_pool_scales, pools, sizeof pools);
        } else if (strcmp(name, "isanet") == 0) {
            h.type = HEAD_ISANET, m->ops = &head_isanet;
            h.isa_channels = c / 2 > 0 ? c / 2 : 1, h.down_factor[0] = h.down_factor[1] = 8;
        } else {
            h.type = HEAD_EANET, m->ops = &head_eanet, h.memory = 64, h.out_channels = c / 2 > 0 ? c / 2 : 1;
        }
        m->head = m->ops->load(&h, &ws, err);
        if (!m->head) code = err->code ? err->code : SA_EXIT_INTERNAL;
    }
    weights_close(&ws);
    if (code) module_free(m);
    return code;
}

static tensor module_forward(run_ctx *ctx, const module *m, tensor x) {
    if (m->sb) {
        tensor up = ctx_tensor(ctx, spatial_bias_out_maps(m->sb), x.h, x.w);
        spatial_bias_branch(ctx, m->sb, x, up);
        return up;
    }
    if (m->ops == &head_nonlocal) return nonlocal_context(ctx, m->head, x);
    if (m->ops == &head_ccnet) return ccnet_context(ctx, m->head, x);
    if (m->ops == &head_ann) return ann_context(ctx, m->head, x);
    if (m->ops == &head_isanet) return isanet_context(ctx, m->head, x);
    return eanet_context(ctx, m->head, x);
}

/* Parameters of the distinct layers the run went through (a layer applied twice, as in RCCA, counts once). */
static double distinct_params(const run_ctx *ctx) {
    double p = 0;
    for (int i = 0; i < ctx->n_log; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = strcmp(ctx->log[i].name, ctx->log[j].name) == 0;
        if (!seen) p += ctx->log[i].params;
    }
    return p;
}

static int by_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void module_stats_free(module_stats *st) {
    free(st->log);
    st->log = NULL;
    st->n_log = 0;
}

int module_bench(const char *name, int c, int h, int w, int runs, int threads, module_stats *st, sa_error *err) {
    memset(st, 0, sizeof *st);
    int kind = module_index(name);
    if (kind < 0) return sa_fail(err, SA_EXIT_USAGE, "--module: unknown module '%s'", name);
    if (threads > 0) {
        omp_set_num_threads(threads);
        gemm_set_threads(threads);
    }
    module m;
    int code = module_build(&m, kind, c, err);
    if (code) return code;
    run_ctx ctx = {0};
    ctx.dry = 1, ctx.want_log = 1;
    arena_reset(&ctx.ar, NULL, SIZE_MAX);
    tensor x = ctx_tensor(&ctx, c, h, w);
    tensor y = module_forward(&ctx, &m, x);
    ctx_release(&ctx, y), ctx_release(&ctx, x);
    ctx.dry = 0;
    st->macs = ctx.macs_total, st->params = distinct_params(&ctx);
    st->input_bytes = (double)tensor_numel(x) * sizeof(float), st->arena_bytes = (double)ctx.ar.high;
    st->runs = runs, st->threads = threads > 0 ? threads : omp_get_max_threads();
    if (ctx.ar.failed) code = sa_fail(err, SA_EXIT_INTERNAL, "arena: too many live tensors while planning");
    char *mem = NULL;
    double *t = NULL;
    if (!code && runs > 0) {
        mem = (char *)gemm_alloc((ctx.ar.high + sizeof(float) - 1) / sizeof(float)); /* huge pages, as the model's arena */
        t = malloc((size_t)runs * sizeof *t);
        if (!mem || !t)
            code = sa_fail(err, SA_EXIT_INTERNAL, "out of memory: %.1f MiB for the module's activations",
                           (double)ctx.ar.high / 1048576.0);
    }
    for (int r = -1; !code && runs > 0 && r < runs; r++) { /* r = -1: warm-up */
        arena_reset(&ctx.ar, mem, ctx.ar.high);
        ctx.log_pos = 0;
        x = ctx_tensor(&ctx, c, h, w);
        unsigned seed = 7;
        for (size_t i = 0; i < tensor_numel(x); i++) {
            seed = seed * 1664525u + 1013904223u;
            x.d[i] = (float)(seed >> 8) / 16777216.f * 2.f - 1.f;
        }
        if (r == 0)
            for (int i = 0; i < ctx.n_log; i++) ctx.log[i].seconds = 0;
        double t0 = wall_seconds();
        y = module_forward(&ctx, &m, x);
        if (r >= 0) t[r] = wall_seconds() - t0;
        ctx_release(&ctx, y), ctx_release(&ctx, x);
        if (ctx.ar.failed) code = sa_fail(err, SA_EXIT_INTERNAL, "arena: the run did not follow its plan");
    }
    if (!code && runs > 0) {
        qsort(t, (size_t)runs, sizeof *t, by_double);
        st->min_s = t[0], st->median_s = t[runs / 2], st->max_s = t[runs - 1];
        for (int i = 0; i < ctx.n_log; i++) ctx.log[i].seconds /= runs;
    }
    st->log = ctx.log, st->n_log = ctx.n_log;
    ctx.log = NULL;
    free(ctx.log), gemm_free((float *)mem), free(t);
    module_free(&m);
    if (code) module_stats_free(st);
    return code;
}
