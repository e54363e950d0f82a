/* The operations the heads and the backbone are made of. Every op has a plain reference twin that the
 * Check suites compare it with; the fast one is what runs. Ops take a run_ctx, allocate their output
 * from its arena and skip their arithmetic in the dry run. */
#ifndef SA_OPS_H
#define SA_OPS_H
#include "tensor.h"
#include "weights.h"

/* A 2-D convolution with BatchNorm folded in, and its fused epilogue: + bias, + residual, ReLU. */
typedef struct {
    int cout, cin, kh, kw, stride, pad, dil;
    int relu;
    float *w; /* cout × cin × kh × kw */
    float *b; /* cout */
    char name[96];
    /* Prepared on first use (after any load-time edits of w): the weights as a packed GEMM A operand, or
     * their Winograd transform for 3×3 stride-1 convs. */
    int prepared;
    float *packed, *wino;
    /* Set for a model's convs: once prepared, `w` is freed, so a model holds one copy of its weights. */
    int release_source;
} conv2d;

/* How a convolution's weights are named in the state_dict:
 *   weight  "<prefix>.conv.weight" style full key of the weight tensor
 *   bn      prefix of a BatchNorm to fold ("….bn", "….bn1", "stem.1"), or NULL
 *   bias    full key of a conv bias, or NULL
 * `wdims` is 4 for Conv2d, 3 for Conv1d (kernel 1) weights. */
typedef struct {
    const char *weight, *bn, *bias;
    int cout, cin, k, stride, pad, dil, relu, wdims;
} conv_spec;

int conv_load(weight_store *ws, conv2d *c, const conv_spec *s, sa_error *err);
void conv_free(conv2d *c);
/* BatchNorm "<prefix>.{weight,bias,running_mean,running_var}" over n channels (eps 1e-5) as the affine map
 * y = scale·x + shift per channel. */
int bn_load(weight_store *ws, const char *prefix, int n, double *scale, double *shift, sa_error *err);
/* Folds y = scale·x + shift into output channel o of c (weights and bias). */
void conv_fold_affine(conv2d *c, int o, double scale, double shift);
void conv_out_size(const conv2d *c, int h, int w, int *oh, int *ow);

/* out = act(conv(in) + b + residual); residual may be NULL. */
tensor conv_forward(run_ctx *ctx, const conv2d *c, tensor in, const tensor *residual);
/* The two kernels behind conv_forward, on caller-provided buffers (tests compare them). */
void conv_reference(const conv2d *c, tensor in, tensor out, const tensor *residual);
size_t conv_scratch_floats(const conv2d *c, tensor in);
void conv_fast(const conv2d *c, tensor in, tensor out, const tensor *residual, float *scratch);
/* Whether conv_fast may use Winograd for 3×3 stride-1 convs (default on; tests measure both paths). */
void conv_set_winograd(int on);

/* Winograd F(4×4, 3×3) for 3×3 stride-1 convs of any padding and dilation (src/winograd.c). */
int winograd_applies(const conv2d *c);
float *winograd_transform_weights(const conv2d *c); /* 36 packed A operands, cout × cin each */
size_t winograd_scratch_floats(const conv2d *c, tensor in);
void winograd_conv(const conv2d *c, const float *u, tensor in, tensor out, const tensor *residual, float *scratch);

/* C[m×n] = alpha·op(A)·op(B) + beta·C, row-major, op = transpose when trans is set. */
void gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
          float beta, float *c, int ldc);
void gemm_reference(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                    const float *b, int ldb, float beta, float *c, int ldc);
void gemm_set_threads(int threads);
/* 1 when the AVX-512 micro-kernel runs (CPU has it and SEGATTN_ISA is not "avx2"); gemm_force_isa picks
 * one for tests. The kernels give identical bits. */
int gemm_isa_avx512(void);
void gemm_force_isa(int avx512);
/* Functions built for AVX-512 on top of the x86-64-v3 baseline; called only where gemm_isa_avx512(). */
#define SA_AVX512 __attribute__((target("avx512f")))

/* The blocked GEMM on packed operands. A packs as ceil(m/6) slivers of k×6 floats (row r of the sliver at
 * [p·6 + r]), B as ceil(n/16) slivers of k×16 floats; both zero-padded, 32-byte aligned. The epilogue (NULL
 * for none) adds bias[row], then res[row·ldr + col], then applies ReLU. With `parallel` (and outside a
 * parallel region) output blocks are shared among the OpenMP threads; the K summation order never depends
 * on the thread count, so results are bit-identical for any number of threads. */
#define GEMM_MR 6
#define GEMM_NR 16
typedef struct {
    const float *bias, *res;
    int ldr, relu;
} gemm_epilogue;
/* 64-byte aligned floats for packed operands (mmap and huge pages for big ones); release with gemm_free. */
float *gemm_alloc(size_t floats);
void gemm_free(float *p);
size_t gemm_packed_a_floats(int m, int k);
size_t gemm_packed_b_floats(int k, int n);
void gemm_pack_a(int trans, int m, int k, const float *a, int lda, float *ap);
void gemm_pack_b(int trans, int k, int n, const float *b, int ldb, float *bp);
void gemm_packed(int m, int n, int k, float alpha, const float *ap, const float *bp, float beta, float *c, int ldc,
                 const gemm_epilogue *e, int parallel);
/* C = alpha·A·B written as a packed B operand (m × n in slivers of 16 columns, m·16 floats apart; lanes
 * past n left unwritten), so that a product can feed the next GEMM without a repacking pass. */
void gemm_packed_to_b(int m, int n, int k, float alpha, const float *ap, const float *bp, float *cp, int parallel);
/* The same with B produced panel by panel (GEMM_NC columns at a time, packed into a per-thread buffer of
 * gemm_panel_floats(k) by `fill`), so that B never exists whole: im2col and 1×1 convs stream through it.
 * Panels are shared among threads. `work` holds threads × gemm_panel_floats(k) floats, or NULL. */
#define GEMM_NC 256
typedef void (*gemm_fill_b)(const void *arg, int j0, int nc, float *bp);
size_t gemm_panel_floats(int k);
void gemm_panels(int m, int n, int k, float alpha, const float *ap, gemm_fill_b fill, const void *arg, float beta,
                 float *c, int ldc, const gemm_epilogue *e, float *work);

/* 3×3 max pooling, stride 2, padding 1 (ResNetV1c's stem): the plain loop and the row-vectorised one. */
tensor maxpool3x3s2(run_ctx *ctx, tensor in);
void maxpool3x3s2_reference(tensor in, tensor out);
void maxpool3x3s2_fast(tensor in, tensor out);
tensor concat_channels(run_ctx *ctx, tensor a, tensor b);
void copy_planes(float *dst, const float *src, int channels, size_t plane);
/* PyTorch adaptive average pooling of every channel to s×s (bins may overlap). */
void adaptive_avg_pool(tensor in, int s, float *out /* c × s × s */);

/* Bilinear resize with PyTorch's coordinate rule (align_corners either way). */
void resize_bilinear(tensor in, tensor out, int align_corners);
/* Resize logits to h×w and take the first maximal class per pixel, without materialising the resized
 * logits; margin (top-1 minus top-2, may be NULL) for tests. */
void resize_argmax(tensor logits, int h, int w, int align_corners, uint8_t *labels, float *margin);

/* Row softmax in place over n values (max-subtracted). */
void softmax_inplace(float *x, int n);

#endif
