/* The self-attention block shared by ANN (AFNB, APNB), ISSA and non-local: query/key/value projections,
 * scaled dot-product softmax over the keys, context, optional output projection (mmseg's
 * _SelfAttentionBlock, SPEC §5). */
#ifndef SA_ATTENTION_H
#define SA_ATTENTION_H
#include "model.h"

#define ATTN_MAX_PROJ 4

typedef struct {
    conv2d query[ATTN_MAX_PROJ], key[ATTN_MAX_PROJ];
    int n_query, n_key;
    int share_key_query;        /* the query projection is the key projection (APNB) */
    conv2d value, out;
    int has_out;
    int channels;               /* attention width */
    float scale;                /* similarity multiplier */
    int n_key_pool;             /* ANN: keys and values pooled to these s×s grids, concatenated */
    int key_pool[MAX_SCALES];
} attention_block;

/* Tokens that attend only among themselves (ISSA), already in group order: group g is positions
 * g·size .. g·size+size−1 of the map (the caller permutes; 1×1 projections do not mind the order). */
typedef struct {
    int n_groups, size;
} token_groups;

/* Loads a projection: one conv is "<prefix>", several are "<prefix>.<i>". With `norm` each is a
 * ConvModule (conv + BN + ReLU), else a plain conv with bias. */
int attention_load_projection(weight_store *ws, conv2d *convs, int n, const char *prefix, int cin, int cout, int norm,
                              sa_error *err);
void attention_free(attention_block *a);

/* ctx = attention(query_feats → key_feats), then out projection (+ residual, when given). With groups, the
 * maps must be the same and hold n_groups·size positions. */
tensor attention_forward(run_ctx *ctx, const attention_block *a, tensor query_feats, tensor key_feats,
                         const tensor *residual, const token_groups *groups);

/* The core, exposed for the tests: ctx[cv × nq] = v[cv × nk] · softmax(scale · qᵀk)ᵀ, with q [d × nq] and
 * k [d × nk] channel-major. The fast version works through blocks of queries in `scratch`, sized for the
 * threads it will have: omp_get_max_threads() when called outside a parallel region, else 1. */
void attend_reference(int d, int nq, int nk, int cv, const float *q, const float *k, const float *v, float scale,
                      float *out);
size_t attend_scratch_floats(int d, int nq, int nk, int cv, int threads);
void attend(int d, int nq, int nk, int cv, const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
            float scale, float *out, int ldo, float *scratch);

/* Row softmax in place, AVX2 (the fast twin of softmax_inplace). */
void softmax_row_fast(float *x, int n);

/* CCNet's criss-cross attention (src/head_ccnet.c): out = gamma · CCA(q, k, v) + x. The fast kernel works
 * on position-major copies in `scratch` (criss_cross_scratch_floats); the reference is the plain loop. */
size_t criss_cross_scratch_floats(int d, int c, int h, int w);
void criss_cross(tensor q, tensor k, tensor v, tensor x, float gamma, tensor out, float *scratch);
void criss_cross_reference(tensor q, tensor k, tensor v, tensor x, float gamma, tensor out);

#endif
