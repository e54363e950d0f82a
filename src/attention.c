#include "attention.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define SCORE_BLOCK_FLOATS (1u << 20) /* query block × keys: 4 MiB of scores at a time, never N×N */

int attention_load_projection(weight_store *ws, conv2d *convs, int n, const char *prefix, int cin, int cout, int norm,
                              sa_error *err) {
    char p[160];
    for (int i = 0; i < n; i++) {
        if (n == 1) snprintf(p, sizeof p, "%s", prefix);
        else snprintf(p, sizeof p, "%s.%d", prefix, i);
        int in = i ? cout : cin, code;
        code = norm ? load_conv_module(ws, &convs[i], p, in, cout, 1, 0, 1, 1, err)
                    : load_plain_conv(ws, &convs[i], p, in, cout, 1, err);
        if (code) return code;
    }
    return SA_OK;
}

void attention_free(attention_block *a) {
    for (int i = 0; i < a->n_query; i++) conv_free(&a->query[i]);
    for (int i = 0; i < a->n_key; i++) conv_free(&a->key[i]);
    conv_free(&a->value), conv_free(&a->out);
}

void attend_reference(int d, int nq, int nk, int cv, const float *q, const float *k, const float *v, float scale,
                      float *out) {
    double *s = malloc((size_t)nk * sizeof *s);
    for (int i = 0; i < nq; i++) {
        double m = -INFINITY, sum = 0;
        for (int j = 0; j < nk; j++) {
            double acc = 0;
            for (int c = 0; c < d; c++) acc += (double)q[(size_t)c * nq + i] * k[(size_t)c * nk + j];
            s[j] = acc * scale;
            if (s[j] > m) m = s[j];
        }
        for (int j = 0; j < nk; j++) sum += s[j] = exp(s[j] - m);
        for (int c = 0; c < cv; c++) {
            double acc = 0;
            for (int j = 0; j < nk; j++) acc += s[j] * v[(size_t)c * nk + j];
            out[(size_t)c * nq + i] = (float)(acc / sum);
        }
    }
    free(s);
}

static int query_block(int nq, int nk) {
    int b = (int)(SCORE_BLOCK_FLOATS / (unsigned)(nk > 0 ? nk : 1));
    if (b < 16) b = 16;
    return b > nq ? nq : b;
}

size_t attend_scratch_floats(int nq, int nk) { return (size_t)query_block(nq, nk) * nk; }

void attend(int d, int nq, int nk, int cv, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
            float scale, float *out, int ldo, float *scratch) {
    int block = query_block(nq, nk);
    for (int i0 = 0; i0 < nq; i0 += block) {
        int nb = nq - i0 < block ? nq - i0 : block;
        gemm(1, 0, nb, nk, d, scale, q + i0, ldq, k, ldk, 0.f, scratch, nk);
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
        for (int i = 0; i < nb; i++) softmax_inplace(scratch + (size_t)i * nk, nk);
        gemm(0, 1, cv, nb, nk, 1.f, v, ldv, scratch, nk, 0.f, out + i0, ldo);
    }
}

static tensor project(run_ctx *ctx, const conv2d *convs, int n, tensor x) {
    tensor y = x;
    for (int i = 0; i < n; i++) {
        tensor z = conv_forward(ctx, &convs[i], y, NULL);
        if (i) ctx_release(ctx, y);
        y = z;
    }
    return y;
}

/* PPM key pooling: every channel pooled to each s×s grid, concatenated along positions. */
static tensor pool_keys(run_ctx *ctx, const attention_block *a, tensor x) {
    int n = 0;
    for (int i = 0; i < a->n_key_pool; i++) n += a->key_pool[i] * a->key_pool[i];
    tensor out = ctx_tensor(ctx, x.c, 1, n);
    float *tmp = ctx_scratch(ctx, (size_t)x.c * 64 * 64);
    if (!ctx->dry && !ctx->ar.failed) {
        int at = 0;
        for (int i = 0; i < a->n_key_pool; i++) {
            int s = a->key_pool[i], ss = s * s;
            adaptive_avg_pool(x, s, tmp);
            for (int c = 0; c < x.c; c++) memcpy(out.d + (size_t)c * n + at, tmp + (size_t)c * ss, (size_t)ss * sizeof(float));
            at += ss;
        }
    }
    ctx_release_ptr(ctx, tmp);
    return out;
}

static void attend_groups(run_ctx *ctx, const token_groups *g, tensor q, tensor k, tensor v, float scale, tensor out) {
    int threads = omp_get_max_threads(), n = g->size, d = q.c, cv = v.c;
    size_t per_thread = (size_t)(2 * d + 2 * cv) * n + attend_scratch_floats(n, n);
    float *scratch = ctx_scratch(ctx, per_thread * (size_t)threads);
    if (!ctx->dry && !ctx->ar.failed) {
        size_t plane = tensor_plane(q);
#pragma omp parallel for schedule(dynamic)
        for (int gi = 0; gi < g->n_groups; gi++) {
            float *qg = scratch + per_thread * (size_t)omp_get_thread_num(), *kg = qg + (size_t)d * n,
                  *vg = kg + (size_t)d * n, *og = vg + (size_t)cv * n, *s = og + (size_t)cv * n;
            const int *idx = g->index + (size_t)gi * n;
            for (int c = 0; c < d; c++)
                for (int t = 0; t < n; t++) qg[c * n + t] = q.d[c * plane + idx[t]], kg[c * n + t] = k.d[c * plane + idx[t]];
            for (int c = 0; c < cv; c++)
                for (int t = 0; t < n; t++) vg[c * n + t] = v.d[c * plane + idx[t]];
            attend(d, n, n, cv, qg, n, kg, n, vg, n, scale, og, n, s);
            for (int c = 0; c < cv; c++)
                for (int t = 0; t < n; t++) out.d[c * plane + idx[t]] = og[c * n + t];
        }
    }
    ctx_release_ptr(ctx, scratch);
}

tensor attention_forward(run_ctx *ctx, const attention_block *a, tensor query_feats, tensor key_feats,
                         const tensor *residual, const token_groups *groups) {
    tensor k = project(ctx, a->key, a->n_key, key_feats);
    int shared = a->share_key_query && query_feats.d == key_feats.d;
    tensor q = shared ? k : project(ctx, a->share_key_query ? a->key : a->query,
                                    a->share_key_query ? a->n_key : a->n_query, query_feats);
    tensor v = conv_forward(ctx, &a->value, key_feats, NULL);
    if (a->n_key_pool) {
        tensor kp = pool_keys(ctx, a, k), vp = pool_keys(ctx, a, v);
        if (!shared) ctx_release(ctx, k);
        ctx_release(ctx, v);
        k = kp, v = vp;
        shared = 0;
    }
    tensor context = ctx_tensor(ctx, v.c, query_feats.h, query_feats.w);
    int nq = query_feats.h * query_feats.w, nk = k.h * k.w;
    double macs = groups ? 2.0 * groups->n_groups * groups->size * groups->size * (a->channels + v.c) / 2
                         : (double)nq * nk * (a->channels + v.c);
    int id = ctx_log(ctx, "attention", query_feats, context, macs, 0);
    double t0 = wall_seconds();
    if (groups) {
        attend_groups(ctx, groups, q, k, v, a->scale, context);
    } else {
        float *scratch = ctx_scratch(ctx, attend_scratch_floats(nq, nk));
        if (!ctx->dry && !ctx->ar.failed) attend(a->channels, nq, nk, v.c, q.d, nq, k.d, nk, v.d, nk, a->scale, context.d, nq, scratch);
        ctx_release_ptr(ctx, scratch);
    }
    ctx_log_time(ctx, id, t0);
    if (!shared) ctx_release(ctx, q);
    ctx_release(ctx, k), ctx_release(ctx, v);
    if (!a->has_out) return context;
    tensor out = conv_forward(ctx, &a->out, context, residual);
    ctx_release(ctx, context);
    return out;
}
