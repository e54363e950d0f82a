#include "attention.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "bands.h"
#include "util.h"

/* Scores of one query block (keys × queries) at a time, never N×N. A block of up to 512 KiB stays in its
 * thread's L2 for the softmax and the second GEMM; but every block reads all of the keys and values again,
 * so where they are wide and many (R101's 8192 keys of 256 + 256 channels) blocks of up to 8 MiB, whose
 * scores go through memory, cost less (query_block). */
#define SCORE_L2_FLOATS (128u << 10)
#define SCORE_BIG_FLOATS (2u << 20)

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

/* Queries per block: whichever of the two score budgets moves fewer floats per query, counting the keys
 * and values read once per block and, for blocks past L2, 3 more passes over the scores (GEMM store,
 * softmax, GEMM load). R18's non-local (2700 keys, 64 + 64 channels) takes 48 queries, 5.9 against 6.8 ms
 * with 768; R101's (8192 keys, 256 + 256) 256, as 16 took 248 against 198 ms. On several threads at
 * least 4 blocks per thread, so that the bands can even out (ANN's 110 pooled keys: 3 blocks otherwise). */
static int query_block(int nq, int nk, int d, int cv, int threads) {
    int keys = nk > 0 ? nk : 1, small = (int)(SCORE_L2_FLOATS / (unsigned)keys), big = (int)(SCORE_BIG_FLOATS / (unsigned)keys);
    if (small < GEMM_NR) small = GEMM_NR;
    if (big < GEMM_NR) big = GEMM_NR;
    double cost_small = (double)(d + cv) / small, cost_big = (double)(d + cv) / big + 3;
    int b = cost_small <= cost_big ? small : big;
    int quarter = (nq + 4 * threads - 1) / (4 * threads); /* a quarter of one thread's share */
    if (threads > 1 && b > quarter) b = (quarter + GEMM_NR - 1) / GEMM_NR * GEMM_NR;
    else b = b / GEMM_NR * GEMM_NR;
    return b > nq ? nq : b;
}

/* e^x for x ≤ 0-ish arguments of a softmax: 2^n · p(r), r = x − n·ln 2, |r| ≤ ln 2 / 2, p the degree-6
 * Taylor polynomial (relative error ~1e-7). Same code on every thread: deterministic. */
static inline __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.f)), _mm256_set1_ps(-87.f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline float hsum256(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

static inline float hmax256(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* Row softmax in place, vectorised; the summation order depends on n only. */
void softmax_row_fast(float *x, int n) {
    int n8 = n / 8 * 8, i;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (i = 0; i < n8; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    float m = hmax256(vm);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    __m256 mm = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
    for (i = 0; i < n8; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), mm));
        _mm256_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    float sum = hsum256(vs);
    if (i < n) {
        _Alignas(32) float t[8] = {0};
        int r = n - i;
        for (int j = 0; j < 8; j++) t[j] = j < r ? x[i + j] - m : -INFINITY;
        _mm256_store_ps(t, exp256(_mm256_load_ps(t)));
        for (int j = 0; j < r; j++) sum += x[i + j] = t[j];
    }
    __m256 inv = _mm256_set1_ps(1.f / sum);
    for (i = 0; i < n8; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= 1.f / sum;
}

#define PAD16(n) (((size_t)(n) + 15) / 16 * 16)

/* One thread's buffers: the packed queries and the scores of a block of nb queries. */
static size_t block_floats(int d, int nk, int nb) { return PAD16(gemm_packed_b_floats(d, nb)) + PAD16(gemm_packed_b_floats(nk, nb)); }

size_t attend_scratch_floats(int d, int nq, int nk, int cv, int threads) {
    return PAD16(gemm_packed_a_floats(nk, d)) + PAD16(gemm_packed_a_floats(cv, nk)) +
           (size_t)threads * block_floats(d, nk, query_block(nq, nk, d, cv, threads)) + 16;
}

/* Softmax over the keys of the 16 queries of one packed sliver of scores (nk rows × 16 lanes), in place:
 * the columns of the sliver are the rows softmax_row_fast would see, and it does the same arithmetic in
 * the same order (8 partial sums by key index mod 8, added as hsum256 adds them, then the tail one by
 * one), so the probabilities are bit-identical to the row version. Lanes past `cols` come out zero. */
static void softmax_sliver(float *x, int nk, int cols) {
    _Alignas(32) int32_t keep[16];
    for (int l = 0; l < 16; l++) keep[l] = l < cols ? -1 : 0;
    const __m256 k0 = _mm256_castsi256_ps(_mm256_load_si256((const __m256i *)keep)),
                 k1 = _mm256_castsi256_ps(_mm256_load_si256((const __m256i *)(keep + 8)));
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
    for (int p = 0; p < nk; p++) {
        __m256 a = _mm256_and_ps(_mm256_load_ps(x + 16 * p), k0), b = _mm256_and_ps(_mm256_load_ps(x + 16 * p + 8), k1);
        _mm256_store_ps(x + 16 * p, a), _mm256_store_ps(x + 16 * p + 8, b);
        m0 = _mm256_max_ps(m0, a), m1 = _mm256_max_ps(m1, b);
    }
    int n8 = nk / 8 * 8;
    __m256 acc[8][2];
    for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int p = 0; p < n8; p++) {
        __m256 e0 = exp256(_mm256_sub_ps(_mm256_load_ps(x + 16 * p), m0));
        __m256 e1 = exp256(_mm256_sub_ps(_mm256_load_ps(x + 16 * p + 8), m1));
        _mm256_store_ps(x + 16 * p, e0), _mm256_store_ps(x + 16 * p + 8, e1);
        acc[p % 8][0] = _mm256_add_ps(acc[p % 8][0], e0), acc[p % 8][1] = _mm256_add_ps(acc[p % 8][1], e1);
    }
    __m256 sum[2];
    for (int h = 0; h < 2; h++)
        sum[h] = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(acc[0][h], acc[4][h]), _mm256_add_ps(acc[2][h], acc[6][h])),
                               _mm256_add_ps(_mm256_add_ps(acc[1][h], acc[5][h]), _mm256_add_ps(acc[3][h], acc[7][h])));
    for (int p = n8; p < nk; p++) {
        __m256 e0 = exp256(_mm256_sub_ps(_mm256_load_ps(x + 16 * p), m0));
        __m256 e1 = exp256(_mm256_sub_ps(_mm256_load_ps(x + 16 * p + 8), m1));
        _mm256_store_ps(x + 16 * p, e0), _mm256_store_ps(x + 16 * p + 8, e1);
        sum[0] = _mm256_add_ps(sum[0], e0), sum[1] = _mm256_add_ps(sum[1], e1);
    }
    __m256 i0 = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.f), sum[0]), k0),
           i1 = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.f), sum[1]), k1);
    for (int p = 0; p < nk; p++) {
        _mm256_store_ps(x + 16 * p, _mm256_mul_ps(_mm256_load_ps(x + 16 * p), i0));
        _mm256_store_ps(x + 16 * p + 8, _mm256_mul_ps(_mm256_load_ps(x + 16 * p + 8), i1));
    }
}

/* Per block of queries: scoresᵀ = scale · kᵀq (keys × queries) through the blocked GEMM, written straight
 * in the packed layout the second GEMM reads; softmax down each query's column; then ctx = v · scoresᵀ.
 * Keys and values are packed once; scores never exist as a row-major matrix, so no transposing pass. Outside
 * a parallel region each thread runs whole blocks from its band of queries, start to end in its own buffers:
 * no barrier between the three steps, and a block's scores stay in that core's L2. */
void attend(int d, int nq, int nk, int cv, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
            float scale, float *out, int ldo, float *scratch) {
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads(), block = query_block(nq, nk, d, cv, threads);
    int blocks = (nq + block - 1) / block;
    float *kp = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *vp = kp + PAD16(gemm_packed_a_floats(nk, d)), *buffers = vp + PAD16(gemm_packed_a_floats(cv, nk));
    work_bands wb;
    bands_init(&wb, blocks, threads);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#pragma omp sections
        {
#pragma omp section
            gemm_pack_a(1, nk, d, k, ldk, kp);
#pragma omp section
            gemm_pack_a(0, cv, nk, v, ldv, vp);
        }
        int t = omp_get_thread_num();
        float *qp = buffers + (size_t)t * block_floats(d, nk, block), *sp = qp + PAD16(gemm_packed_b_floats(d, block));
        for (int b; (b = bands_next(&wb, t)) >= 0;) {
            int i0 = b * block, nb = nq - i0 < block ? nq - i0 : block, slivers = (nb + GEMM_NR - 1) / GEMM_NR;
            gemm_pack_b(0, d, nb, q + i0, ldq, qp);
            gemm_packed_to_b(nk, nb, d, scale, kp, qp, sp, 0);
            for (int s = 0; s < slivers; s++)
                softmax_sliver(sp + (size_t)s * GEMM_NR * nk, nk, nb - s * GEMM_NR < GEMM_NR ? nb - s * GEMM_NR : GEMM_NR);
            gemm_packed(cv, nb, nk, 1.f, vp, sp, 0.f, out + i0, ldo, NULL, 0);
        }
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
    size_t per_thread = attend_scratch_floats(d, n, n, cv, 1);
    float *scratch = ctx_scratch(ctx, per_thread * (size_t)threads);
    if (!ctx->dry && !ctx->ar.failed) {
        int plane = (int)tensor_plane(q);
        /* Static: each thread takes one run of groups (for the local relation, one band of the image), and the
         * groups are too small for a shared counter between cores on separate caches (dynamic measured 2.0
         * against 1.5 ms per relation on R18's 2 threads). A group is a run of columns: attend reads it in
         * place, rows `plane` apart. */
#pragma omp parallel for schedule(static)
        for (int gi = 0; gi < g->n_groups; gi++) {
            size_t at = (size_t)gi * n;
            attend(d, n, n, cv, q.d + at, plane, k.d + at, plane, v.d + at, plane, scale, out.d + at, plane,
                   scratch + per_thread * (size_t)omp_get_thread_num());
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
        float *scratch = ctx_scratch(ctx, attend_scratch_floats(a->channels, nq, nk, v.c, omp_get_max_threads()));
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
