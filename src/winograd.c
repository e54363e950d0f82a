/* Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions, dilated ones included.
 *
 * A dilated conv (dilation d) is d×d undilated convs on the dilation-interleaved sub-grids, so a tile is
 * 4×4 outputs spaced d apart (origin oy, ox) fed by 6×6 inputs spaced d apart from (oy − pad, ox − pad).
 * The weights' transform U = G g Gᵀ is 36 matrices cout × cin (packed as GEMM A operands), 4× the plain
 * weights: small convs keep it, big ones keep g and rebuild U in L2-sized pieces per batch (the lean
 * path), which is as fast and keeps the model's weights at their plain size. Tiles stream through in
 * batches: input transform V = Bᵀ d B into 36 packed B operands (cin × batch), 36 GEMMs
 * M = U·V, output transform Y = Aᵀ M A with bias, residual and ReLU fused. A batch is one thread's from
 * start to end and every tile's sums run in a fixed order, so the result does not depend on the thread
 * count. */
#include <immintrin.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bands.h"
#include "ops.h"

#define WT 36
#define LANES GEMM_NR
#define BATCH_BYTES (6u << 20) /* V and M of one thread's batch of tiles */

/* Row runs. Tiles are ordered so that, for dilation d = 1, 2, 4 or 8, the d tiles of one tile column of the
 * d sub-grids sit in d consecutive lanes (see count_tiles): lane L of a run then has its output origin at
 * column out_col + 4·d·(L / d) + L % d, and input q of a tile row at that plus q·d − pad. So the inputs of a
 * row come from 5 contiguous loads (masked to the image) and a stride-4 deinterleave of d-float units, and
 * the outputs go back by the inverse interleave and masked vector stores, instead of gathers and scalar
 * stores. A sliver is up to RUNS_MAX runs (an image row of tiles shorter than 16 lanes splits it), blended
 * by lanes. */
#define RUNS_MAX 4
typedef struct {
    int32_t out_row, out_col; /* output origin lane 0 would have (see above) */
    uint16_t lanes;           /* bits a .. b − 1 */
    uint16_t load_mask[5];    /* lanes of the 5 row loads inside the image */
    uint16_t store_mask[4];   /* values of the 4 row stores that are the run's and inside the output */
} row_run;

/* Where the 36 inputs of the 16 tiles of a sliver are: as row runs, or else as gather indices into a
 * channel plane with the lanes that lie inside it. The same for every channel, so worked out once per
 * (conv, sliver) instead of once per (sliver, channel). */
typedef struct {
    _Alignas(64) int32_t idx[WT][16];
    uint16_t mask[WT];
    row_run run[RUNS_MAX];
    uint8_t n_runs; /* 0: gathers */
} gather_plan;
#define PLAN_FLOATS ((sizeof(gather_plan) + 63) / 64 * 16)

int winograd_applies(const conv2d *c) { return c->kh == 3 && c->kw == 3 && c->stride == 1; }

/* G (6×3) of F(4, 3) with interpolation points 0, ±1, ±2, ∞. */
static const double G[6][3] = {{1. / 4, 0, 0},         {-1. / 6, -1. / 6, -1. / 6}, {-1. / 6, 1. / 6, -1. / 6},
                               {1. / 24, 1. / 12, 1. / 6}, {1. / 24, -1. / 12, 1. / 6}, {0, 0, 1}};

static int out_slivers(const conv2d *c) { return (c->cout + GEMM_MR - 1) / GEMM_MR; }
/* Stride between the 36 packed matrices: one cache line more than their size, so that the 36 streams of
 * the weight transform (and of the GEMMs) do not all fall into the same cache sets. */
static size_t xi_stride(const conv2d *c) { return gemm_packed_a_floats(c->cout, c->cin) + 16; }

/* Weight transforms run once per conv, on its first use, inside the first predict: parallel over output
 * slivers (each writes only its own rows, zero padding included), so that they and the first touch of
 * their pages do not leave the other cores waiting. */
static float *transform_all(const conv2d *c) {
    size_t xs = xi_stride(c), sliver = (size_t)GEMM_MR * c->cin;
    int ms = out_slivers(c);
    float *u = gemm_alloc(WT * xs);
    if (!u) return NULL;
    for (int xi = 0; xi < WT; xi++) memset(u + xi * xs + ms * sliver, 0, (xs - ms * sliver) * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1)
    for (int s = 0; s < ms; s++) {
        for (int xi = 0; xi < WT; xi++) memset(u + xi * xs + s * sliver, 0, sliver * sizeof(float));
        int o1 = (s + 1) * GEMM_MR < c->cout ? (s + 1) * GEMM_MR : c->cout;
        for (int o = s * GEMM_MR; o < o1; o++) {
            float *dst = u + s * sliver + o % GEMM_MR; /* packed A: sliver, row */
            for (int i = 0; i < c->cin; i++) {
                const float *g = c->w + ((size_t)o * c->cin + i) * 9;
                double t[6][3];
                for (int r = 0; r < 6; r++)
                    for (int q = 0; q < 3; q++) t[r][q] = G[r][0] * g[q] + G[r][1] * g[3 + q] + G[r][2] * g[6 + q];
                for (int r = 0; r < 6; r++)
                    for (int q = 0; q < 6; q++)
                        dst[(size_t)(r * 6 + q) * xs + (size_t)i * GEMM_MR] =
                            (float)(t[r][0] * G[q][0] + t[r][1] * G[q][1] + t[r][2] * G[q][2]);
            }
        }
    }
    return u;
}

/* Tiles in image-row order: tile row ty of every sub-grid (image rows ry + 4·d·ty … + 3·d) before tile row
 * ty + 1, so that a run of tiles, and so a thread's band of them, covers a band of image rows, as the
 * pixel bands of the 1×1 convs before and after do. Within a row, tile column tx of the d sub-grids
 * (rx = 0 .. d − 1, output columns rx + 4·d·tx + d·q) is d consecutive tiles, so that a run of lanes covers
 * whole output columns (see row_run). Every sub-grid gets as many tile columns as the widest, so a row is
 * a whole number of d-tile groups; tiles that fall wholly right of the output only read zeros and write
 * nothing. */
static int count_tiles(const conv2d *c, int oh, int ow, int *origins) {
    int d = c->dil, n = 0, nrx = d < ow ? d : ow, ntx = ((ow + d - 1) / d + 3) / 4;
    for (int ty = 0; 4 * d * ty < oh; ty++)
        for (int ry = 0; ry < d && ry < oh; ry++) {
            if (4 * ty >= (oh - ry + d - 1) / d) continue;
            for (int tx = 0; tx < ntx; tx++)
                for (int rx = 0; rx < nrx; rx++, n++)
                    if (origins) origins[2 * n] = ry + 4 * d * ty, origins[2 * n + 1] = rx + 4 * d * tx;
        }
    return n;
}

/* One schedule, two sources of U. Every thread takes whole batches of tiles from its band (bands.h) and
 * runs them start to end in its own buffers: input transform into V, the 36 GEMMs M = U·V, output
 * transform. No barrier inside the conv, and a thread reads its own V and the image rows of its band; only at
 * the end of a conv does a thread that is done take output blocks of a batch still running elsewhere,
 * reading that batch's V (batch_share).
 * Small weights (U under 8 MiB) keep U, transformed once at load. Big ones (the 256/512-channel stages)
 * keep only the taps g and rebuild U per batch, a block of output channels at a time into an L2-sized
 * buffer (the lean path): it costs a few per cent of the GEMMs' work and keeps the weights at 9 floats per
 * (cout, cin) pair instead of 36. An earlier lean schedule shared one V among the threads and split the
 * output channels instead; every thread then read the whole V, half of it from the other core's cache. */
#define LEAN_U_BYTES (8u << 20)
/* V of one thread's lean batch: 48 MiB on 1 or 2 threads, 96 MiB shared by more. Every batch rebuilds
 * all of U, so fewer, larger batches matter most where cin is large (R101's 2048/2560 -> 512 head convs:
 * 24 instead of 48 MiB per thread on 2 threads made them 13-15 % slower; peak RSS +22 MiB). */
#define LEAN_V_BYTES (48u << 20)
/* Output slivers per block of the lean path: 48 rows, so that each V value loaded feeds 48 rows of FMAs
 * and the 6 U[ξ] of a row of ξ stay in L2. */
#define LEAN_BLOCK_SLIVERS 8

static int lean_schedule(const conv2d *c) { return (size_t)WT * c->cin * c->cout * sizeof(float) > LEAN_U_BYTES; }

/* Tiles per batch: within the budget, in equal batches, a multiple of the thread count (else one thread
 * does a whole batch more than the other at the end: 7 batches on 2 threads left the 32->64 stem conv at
 * 1.4x from 1 to 2 threads). With stored U at least four batches per thread when there are several, so
 * that a thread on a slower core (the two vCPUs measured here differ by up to 25 %, and not always the same
 * one) can hand a quarter of its share to the other by whole batches; with two, R18's 64-channel convs
 * kept one core idle for a quarter of the conv (four made them 11-17 % faster on 2 threads). One thread
 * keeps two. Lean batches rebuild U each, so one per thread where it fits. */
static int batch_tiles(const conv2d *c, int ntiles, int threads) {
    int lean = lean_schedule(c), per_thread = lean ? 1 : threads > 1 ? 4 : 2;
    size_t per_tile = (size_t)WT * (lean ? c->cin : c->cin + c->cout) * sizeof(float);
    int t = (int)((lean ? LEAN_V_BYTES * 2 / (threads > 2 ? threads : 2) : BATCH_BYTES) / per_tile) / LANES * LANES;
    int share = (ntiles + per_thread * threads - 1) / (per_thread * threads);
    share = (share + LANES - 1) / LANES * LANES;
    if (t > share) t = share;
    /* Lean batches of at least 6 slivers (two full groups of the AVX-512 kernel), even where V then passes
     * the budget (cin ≥ 1024): fewer tiles would rebuild U too often and feed the GEMM thin B panels. */
    int least = lean ? 6 * LANES : 2 * LANES;
    if (t < least) t = least;
    if (t > 32 * LANES) t = 32 * LANES;
    int slivers = (ntiles + LANES - 1) / LANES, per = t / LANES, batches = (slivers + per - 1) / per;
    if (threads > 1) {
        batches = (batches + threads - 1) / threads * threads;
        if (batches > slivers) batches = slivers;
    }
    return (slivers + batches - 1) / batches * LANES;
}

/* One thread's buffers: V of a batch, the rebuilt U of a row of ξ (lean path only), M of a block. */
typedef struct {
    int tiles, block_slivers;
    size_t vstride, ustride, mstride, per_thread;
} wino_plan;

static wino_plan plan_conv(const conv2d *c, int ntiles, int threads) {
    wino_plan p;
    int ms = out_slivers(c), lean = lean_schedule(c), blocks = lean ? (ms + LEAN_BLOCK_SLIVERS - 1) / LEAN_BLOCK_SLIVERS : 1;
    p.tiles = batch_tiles(c, ntiles, threads);
    p.block_slivers = (ms + blocks - 1) / blocks;
    p.vstride = (size_t)p.tiles * c->cin + 16; /* the 16: off the 4 KiB grid */
    p.ustride = lean ? (size_t)p.block_slivers * GEMM_MR * c->cin + 16 : 0;
    p.mstride = (size_t)p.block_slivers * GEMM_MR * p.tiles + 16;
    p.per_thread = (WT * p.vstride + 6 * p.ustride + WT * p.mstride + 15) / 16 * 16;
    return p;
}

size_t winograd_scratch_floats(const conv2d *c, tensor in) {
    int oh, ow, threads = omp_get_max_threads();
    conv_out_size(c, in.h, in.w, &oh, &ow);
    int n = count_tiles(c, oh, ow, NULL);
    return plan_conv(c, n, threads).per_thread * threads + 2 * (size_t)n + 64 + (size_t)(n + LANES - 1) / LANES * PLAN_FLOATS;
}

/* The 9 taps of g as 9 packed A operands per sliver: tap k of sliver s at g[(s·9 + k)·cin·6], row r of
 * input channel i at [i·6 + r]. The same layout as U's, so that U[ξ] of a sliver is a sum of its taps. */
static float *pack_taps(const conv2d *c) {
    int ms = out_slivers(c);
    size_t tap = (size_t)c->cin * GEMM_MR;
    float *g = gemm_alloc((size_t)ms * 9 * tap + 16);
    if (!g) return NULL;
    memset(g + (size_t)ms * 9 * tap, 0, 16 * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1)
    for (int s = 0; s < ms; s++) {
        float *gs = g + (size_t)s * 9 * tap;
        memset(gs, 0, 9 * tap * sizeof(float));
        int o1 = (s + 1) * GEMM_MR < c->cout ? (s + 1) * GEMM_MR : c->cout;
        for (int o = s * GEMM_MR; o < o1; o++)
            for (int i = 0; i < c->cin; i++)
                for (int k = 0; k < 9; k++)
                    gs[k * tap + (size_t)i * GEMM_MR + o % GEMM_MR] = c->w[((size_t)o * c->cin + i) * 9 + k];
    }
    return g;
}

float *winograd_transform_weights(const conv2d *c) { return lean_schedule(c) ? pack_taps(c) : transform_all(c); }

/* Row r of U = G g Gᵀ for one (cout, cin) pair, or a vector of them: t_b = Σ_a G[r][a]·g[a][b] from the 9
 * taps x[3a + b], then u[q] = Σ_b t_b·G[q][b]. G's zeros and ones are skipped and its paired rows (1, 2 and
 * 3, 4) share their common sums, which is 129 operations per pair for the 36 values instead of 270: the
 * lean path rebuilds U for every batch on every thread. One source for float and __m512 (C contracts
 * nothing here, -std=c11), so both paths give the same bits. */
#define DEFINE_U_ROW(NAME, T, ATTR)                                                                         \
    static inline ATTR T NAME##_g(int r, T x0, T x1, T x2) { /* G[r] · (x0, x1, x2) */                   \
        switch (r) {                                                                                      \
        case 0: return x0 * 0.25f;                                                                        \
        case 1: return ((x0 + x2) + x1) * (-1.f / 6);                                                     \
        case 2: return ((x0 + x2) - x1) * (-1.f / 6);                                                     \
        case 3: return (x0 * (1.f / 24) + x2 * (1.f / 6)) + x1 * (1.f / 12);                              \
        case 4: return (x0 * (1.f / 24) + x2 * (1.f / 6)) - x1 * (1.f / 12);                              \
        default: return x2;                                                                               \
        }                                                                                                 \
    }                                                                                                     \
    static inline ATTR void NAME(int r, const T *x, T *u) {                                               \
        T t0 = NAME##_g(r, x[0], x[3], x[6]), t1 = NAME##_g(r, x[1], x[4], x[7]), t2 = NAME##_g(r, x[2], x[5], x[8]); \
        T s = t0 + t2, p = t0 * (1.f / 24) + t2 * (1.f / 6), h = t1 * (1.f / 12);                          \
        u[0] = t0 * 0.25f, u[1] = (s + t1) * (-1.f / 6), u[2] = (s - t1) * (-1.f / 6);                     \
        u[3] = p + h, u[4] = p - h, u[5] = t2;                                                            \
    }
DEFINE_U_ROW(u_row, float, )
DEFINE_U_ROW(u_row_512, __m512, SA_AVX512)

/* U[ξ] for ξ = 6r + q, q = 0..5, of slivers [s0, s1): u + q·ustride, packed A of (s1 − s0) slivers. */
static void transform_row(const conv2d *c, const float *g, int s0, int s1, int r, float *u, size_t ustride) {
    size_t tap = (size_t)c->cin * GEMM_MR;
    for (int s = s0; s < s1; s++) {
        const float *gs = g + (size_t)s * 9 * tap;
        float *us = u + (size_t)(s - s0) * tap;
        for (size_t j = 0; j < tap; j++) {
            float x[9], y[6];
            for (int k = 0; k < 9; k++) x[k] = gs[k * tap + j];
            u_row(r, x, y);
            for (int q = 0; q < 6; q++) us[q * ustride + j] = y[q];
        }
    }
}

static SA_AVX512 void transform_row_avx512(const conv2d *c, const float *g, int s0, int s1, int r, float *u,
                                           size_t ustride) {
    size_t tap = (size_t)c->cin * GEMM_MR;
    for (int s = s0; s < s1; s++) {
        const float *gs = g + (size_t)s * 9 * tap;
        float *us = u + (size_t)(s - s0) * tap;
        for (size_t j = 0; j < tap; j += 16) {
            __mmask16 m = tap - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (tap - j)) - 1);
            __m512 x[9], y[6];
            for (int k = 0; k < 9; k++) /* rows 0 and 5 of G read one row of taps each: load only that */
                x[k] = (r == 0 && k >= 3) || (r == 5 && k < 6) ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, gs + k * tap + j);
            u_row_512(r, x, y);
            for (int q = 0; q < 6; q++) _mm512_mask_storeu_ps(us + q * ustride + j, m, y[q]);
        }
    }
}

/* y = Bᵀ x along one dimension of 6, for a vector of tiles at once: one definition for both vector widths
 * (P the intrinsic prefix), so the AVX2 and AVX-512 paths cannot drift apart and give the same bits. */
#define DEFINE_BT6(NAME, VEC, P, ATTR)                                                                     \
    static inline ATTR void NAME(const VEC *x, VEC *y, int step) {                                         \
        const VEC four = P##_set1_ps(4.f), five = P##_set1_ps(5.f), two = P##_set1_ps(2.f);                \
        VEC x0 = x[0], x1 = x[step], x2 = x[2 * step], x3 = x[3 * step], x4 = x[4 * step], x5 = x[5 * step]; \
        y[0] = P##_fmadd_ps(four, x0, P##_fnmadd_ps(five, x2, x4));                                        \
        y[step] = P##_fnmadd_ps(four, P##_add_ps(x1, x2), P##_add_ps(x3, x4));                             \
        y[2 * step] = P##_fmadd_ps(four, P##_sub_ps(x1, x2), P##_sub_ps(x4, x3));                          \
        y[3 * step] = P##_fmadd_ps(two, P##_sub_ps(x3, x1), P##_sub_ps(x4, x2));                           \
        y[4 * step] = P##_fmadd_ps(two, P##_sub_ps(x1, x3), P##_sub_ps(x4, x2));                           \
        y[5 * step] = P##_fmadd_ps(four, x1, P##_fnmadd_ps(five, x3, x5));                                 \
    }
DEFINE_BT6(bt6, __m256, _mm256, )
DEFINE_BT6(bt6_512, __m512, _mm512, SA_AVX512)

/* 8 tiles (half a packed-B sliver) of one input channel → V[ξ][sliver][ch][lane]: masked vector gathers
 * (zero outside the image and for lanes past nt), then Bᵀ d B on 8 tiles at once. */
static void input_tiles8(const conv2d *c, tensor in, int ch, const int *org, int nt, float *v, size_t xi_stride) {
    __m256 d[WT], t[WT];
    const float *src = in.d + (size_t)ch * in.h * in.w;
    int dl = c->dil;
    _Alignas(32) int oy[8], ox[8];
    for (int l = 0; l < 8; l++) {
        oy[l] = l < nt ? org[2 * l] - c->pad : -(6 * dl + 1); /* lanes past nt: every row outside */
        ox[l] = l < nt ? org[2 * l + 1] - c->pad : 0;
    }
    __m256i vy = _mm256_load_si256((const __m256i *)oy), vx = _mm256_load_si256((const __m256i *)ox);
    __m256i base = _mm256_add_epi32(_mm256_mullo_epi32(vy, _mm256_set1_epi32(in.w)), vx);
    __m256i hmax = _mm256_set1_epi32(in.h), wmax = _mm256_set1_epi32(in.w), neg1 = _mm256_set1_epi32(-1);
    __m256i colmask[6];
    for (int q = 0; q < 6; q++) {
        __m256i x = _mm256_add_epi32(vx, _mm256_set1_epi32(q * dl));
        colmask[q] = _mm256_and_si256(_mm256_cmpgt_epi32(x, neg1), _mm256_cmpgt_epi32(wmax, x));
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int r = 0; r < 6; r++) {
        __m256i y = _mm256_add_epi32(vy, _mm256_set1_epi32(r * dl));
        __m256i rowmask = _mm256_and_si256(_mm256_cmpgt_epi32(y, neg1), _mm256_cmpgt_epi32(hmax, y));
        __m256i rowidx = _mm256_add_epi32(base, _mm256_set1_epi32(r * dl * in.w));
        for (int q = 0; q < 6; q++) {
            __m256i m = _mm256_and_si256(rowmask, colmask[q]);
            __m256i idx = _mm256_add_epi32(rowidx, _mm256_set1_epi32(q * dl));
            d[r * 6 + q] = _mm256_mask_i32gather_ps(zero, src, idx, _mm256_castsi256_ps(m), 4);
        }
    }
    for (int q = 0; q < 6; q++) bt6(d + q, t + q, 6); /* columns */
    for (int r = 0; r < 6; r++) bt6(t + r * 6, d + r * 6, 1); /* rows */
    for (int k = 0; k < WT; k++) _mm256_storeu_ps(v + (size_t)k * xi_stride, d[k]);
}

/* 16 tiles (one packed-B sliver) of one input channel. */
static void input_tiles(const conv2d *c, tensor in, int ch, const int *org, int nt, float *v, size_t xi_stride) {
    input_tiles8(c, in, ch, org, nt < 8 ? nt : 8, v, xi_stride);
    input_tiles8(c, in, ch, org + 16, nt > 8 ? nt - 8 : 0, v + 8, xi_stride);
}

/* Y (16 values × LANES tiles) of output channel o into the output, + bias, + residual, ReLU. */
static void scatter_tiles(const conv2d *c, tensor out, const tensor *res, int o, const int *org, int nt,
                          float y[16][LANES]) {
    size_t plane = tensor_plane(out);
    float *dst = out.d + (size_t)o * plane;
    const float *rs = res ? res->d + (size_t)o * plane : NULL;
    float bias = c->b[o];
    int dl = c->dil;
    for (int l = 0; l < nt; l++) {
        int oy = org[2 * l], ox = org[2 * l + 1];
        for (int r = 0; r < 4; r++) {
            int yy = oy + r * dl;
            if (yy >= out.h) break;
            for (int q = 0; q < 4; q++) {
                int xx = ox + q * dl;
                if (xx >= out.w) break;
                size_t at = (size_t)yy * out.w + xx;
                float v = y[r * 4 + q][l] + bias;
                if (rs) v += rs[at];
                dst[at] = c->relu ? (v > 0.f ? v : 0.f) : v;
            }
        }
    }
}

/* 16 tiles of output channel o: M[ξ][o][tiles] → Y = Aᵀ M A, + bias, + residual, ReLU. */
static void output_tiles(const conv2d *c, tensor out, const tensor *res, int o, const int *org, int nt, const float *m,
                         size_t xi_stride) {
    float t[24][LANES];
    for (int q = 0; q < 6; q++) /* columns: t = Aᵀ m (4 × 6) */
        for (int l = 0; l < LANES; l++) {
            float m0 = m[(size_t)q * xi_stride + l], m1 = m[(size_t)(6 + q) * xi_stride + l],
                  m2 = m[(size_t)(12 + q) * xi_stride + l], m3 = m[(size_t)(18 + q) * xi_stride + l],
                  m4 = m[(size_t)(24 + q) * xi_stride + l], m5 = m[(size_t)(30 + q) * xi_stride + l];
            float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
            t[q][l] = m0 + s12 + s34;
            t[6 + q][l] = d12 + 2.f * d34;
            t[12 + q][l] = s12 + 4.f * s34;
            t[18 + q][l] = d12 + 8.f * d34 + m5;
        }
    float y[16][LANES];
    for (int r = 0; r < 4; r++)
        for (int l = 0; l < LANES; l++) {
            float m0 = t[r * 6][l], m1 = t[r * 6 + 1][l], m2 = t[r * 6 + 2][l], m3 = t[r * 6 + 3][l],
                  m4 = t[r * 6 + 4][l], m5 = t[r * 6 + 5][l];
            float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
            y[r * 4][l] = m0 + s12 + s34;
            y[r * 4 + 1][l] = d12 + 2.f * d34;
            y[r * 4 + 2][l] = s12 + 4.f * s34;
            y[r * 4 + 3][l] = d12 + 8.f * d34 + m5;
        }
    scatter_tiles(c, out, res, o, org, nt, y);
}

/* The AVX-512 path from here on: the same transforms with 16-lane vectors (one packed-B sliver per call),
 * the same operations in the same order as the AVX2/scalar code, so the bits do not depend on which runs. */

/* Row runs take dilations whose d-float units tile a vector: 1, 2, 4, 8 (index log2 d in the tables). */
static int run_dil_index(int dl) { return dl == 1 ? 0 : dl == 2 ? 1 : dl == 4 ? 2 : dl == 8 ? 3 : -1; }

/* The gather plan of one sliver (tiles org[0..nt), lanes past nt empty): its row runs where there are at
 * most RUNS_MAX of them covering every tile, else the gather indices. */
static void plan_sliver(const conv2d *c, tensor in, tensor out, const int *org, int nt, gather_plan *gp) {
    int dl = c->dil;
    gp->n_runs = 0;
    for (int a = 0, b; run_dil_index(dl) >= 0 && a < nt; a = b) {
        int out_col = org[2 * a + 1] - 4 * dl * (a / dl) - a % dl;
        for (b = a + 1; b < nt && org[2 * b] == org[2 * a] && org[2 * b + 1] == out_col + 4 * dl * (b / dl) + b % dl;) b++;
        if (gp->n_runs == RUNS_MAX) {
            gp->n_runs = 0;
            break;
        }
        row_run *r = &gp->run[gp->n_runs++];
        r->out_row = org[2 * a], r->out_col = out_col;
        r->lanes = (uint16_t)(((1u << b) - 1) & ~((1u << a) - 1));
        for (int v = 0; v < 5; v++) {
            uint16_t m = 0;
            for (int e = 0; e < 16; e++) {
                int x = out_col - c->pad + 16 * v + e;
                if (x >= 0 && x < in.w) m |= (uint16_t)(1u << e);
            }
            r->load_mask[v] = m;
        }
        for (int v = 0; v < 4; v++) { /* value e of store v: unit k = (16v + e) / d = 4·(L / d) + q, L's offset (16v + e) % d */
            uint16_t m = 0;
            for (int e = 0; e < 16; e++) {
                int k = (16 * v + e) / dl, lane = dl * (k / 4) + (16 * v + e) % dl, x = out_col + 16 * v + e;
                if ((r->lanes >> lane & 1) && x >= 0 && x < out.w) m |= (uint16_t)(1u << e);
            }
            r->store_mask[v] = m;
        }
    }
    if (gp->n_runs) return;
    for (int k = 0; k < WT; k++) {
        int r = k / 6, q = k % 6;
        uint16_t m = 0;
        for (int l = 0; l < 16; l++) {
            int y = l < nt ? org[2 * l] - c->pad + r * dl : -1, x = l < nt ? org[2 * l + 1] - c->pad + q * dl : -1;
            int inside = y >= 0 && y < in.h && x >= 0 && x < in.w;
            gp->idx[k][l] = inside ? y * in.w + x : 0;
            if (inside) m |= (uint16_t)(1u << l);
        }
        gp->mask[k] = m;
    }
}

/* Permute indices over d-float units (d = 1, 2, 4, 8), for _mm512_permutex2var_ps on a pair (a, b):
 *   SPLIT: the even (odd) units of a then b, in order;
 *   ZIP:   units of a and b alternating, from the first (second) half of each;
 *   SHIFT: each lane d lanes further on (q = 4 from q = 0), and for q = 5 (from q = 1) another d for the last
 *          d lanes, which come from b, the load beyond the run. */
#define SPLIT_IDX(d, h, L) ((2 * ((L) / (d)) + (h)) * (d) + (L) % (d))
#define ZIP_IDX(d, h, L) ((((L) / (d)) % 2 ? 16 : 0) + ((h) * (8 / (d)) + (L) / (d) / 2) * (d) + (L) % (d))
#define SHIFT_IDX(d, h, L) ((L) + (d) + ((h) && (L) >= 16 - (d) ? (d) : 0))
#define LANES16(F, d, h) {F(d, h, 0), F(d, h, 1), F(d, h, 2), F(d, h, 3), F(d, h, 4), F(d, h, 5), F(d, h, 6), F(d, h, 7), \
                          F(d, h, 8), F(d, h, 9), F(d, h, 10), F(d, h, 11), F(d, h, 12), F(d, h, 13), F(d, h, 14), F(d, h, 15)}
#define UNIT_TABLE(F) {{LANES16(F, 1, 0), LANES16(F, 1, 1)}, {LANES16(F, 2, 0), LANES16(F, 2, 1)}, \
                       {LANES16(F, 4, 0), LANES16(F, 4, 1)}, {LANES16(F, 8, 0), LANES16(F, 8, 1)}}
static const int32_t UNIT_SPLIT[4][2][16] __attribute__((aligned(64))) = UNIT_TABLE(SPLIT_IDX);
static const int32_t UNIT_ZIP[4][2][16] __attribute__((aligned(64))) = UNIT_TABLE(ZIP_IDX);
static const int32_t UNIT_SHIFT[4][2][16] __attribute__((aligned(64))) = UNIT_TABLE(SHIFT_IDX);

static inline SA_AVX512 __m512 unit_perm(const int32_t *idx, __m512 a, __m512 b) {
    return _mm512_permutex2var_ps(a, _mm512_load_si512(idx), b);
}

/* One row of a row run, as if it were 16 lanes long: y[q] lane L = image row `row` at column
 * col0 + 4·d·(L / d) + L % d + q·d (zero outside the image), the same values the gathers would fetch.
 * In d-float units: e[0..3] hold units 0 .. 64/d − 1 and y[q] wants units 4·(L / d) + q, a stride-4
 * deinterleave in two split levels; q = 4, 5 are q = 0, 1 one unit group further, with e[4] beyond. */
static inline SA_AVX512 void load_row_run(const float *row, int col0, const uint16_t *load_mask, int di, __m512 *y) {
    __m512 e[5];
    for (int v = 0; v < 5; v++) e[v] = _mm512_maskz_loadu_ps(load_mask[v], row + col0 + 16 * v);
    const int32_t *ev = UNIT_SPLIT[di][0], *od = UNIT_SPLIT[di][1];
    __m512 e01 = unit_perm(ev, e[0], e[1]), o01 = unit_perm(od, e[0], e[1]), e23 = unit_perm(ev, e[2], e[3]),
           o23 = unit_perm(od, e[2], e[3]);
    y[0] = unit_perm(ev, e01, e23), y[2] = unit_perm(od, e01, e23), y[1] = unit_perm(ev, o01, o23), y[3] = unit_perm(od, o01, o23);
    y[4] = unit_perm(UNIT_SHIFT[di][0], y[0], e[4]);
    y[5] = unit_perm(UNIT_SHIFT[di][1], y[1], e[4]);
}

static SA_AVX512 void input_tiles_avx512(const float *src, int h, int w, int dl, int pad, size_t next_plane,
                                         const gather_plan *gp, float *v, size_t xi_stride) {
    __m512 d[WT], t[WT];
    const __m512 zero = _mm512_setzero_ps();
    if (gp->n_runs) {
        int di = run_dil_index(dl);
        for (int k = 0; k < WT; k++) d[k] = zero;
        for (int i = 0; i < gp->n_runs; i++) {
            const row_run *run = &gp->run[i];
            int col0 = run->out_col - pad;
            for (int r = 0; r < 6; r++) {
                int y = run->out_row - pad + r * dl;
                if (y < 0 || y >= h) continue; /* zero rows */
                const float *row = src + (ptrdiff_t)y * w;
                __m512 yq[6];
                load_row_run(row, col0, run->load_mask, di, yq);
                for (int q = 0; q < 6; q++) d[r * 6 + q] = _mm512_mask_mov_ps(d[r * 6 + q], run->lanes, yq[q]);
                /* The next channel's plane is read by the next jobs: ask for its lines of this row now (the
                 * loads above stall on the first touch of every row otherwise). */
                for (int lv = 0; lv < 5; lv++)
                    if (run->load_mask[lv]) _mm_prefetch((const char *)(row + next_plane + col0 + 16 * lv), _MM_HINT_T0);
            }
        }
    } else {
        for (int k = 0; k < WT; k++)
            d[k] = _mm512_mask_i32gather_ps(zero, gp->mask[k], _mm512_load_si512(gp->idx[k]), src, 4);
    }
    for (int q = 0; q < 6; q++) bt6_512(d + q, t + q, 6); /* columns */
    for (int r = 0; r < 6; r++) bt6_512(t + r * 6, d + r * 6, 1); /* rows */
    for (int k = 0; k < WT; k++) _mm512_storeu_ps(v + (size_t)k * xi_stride, d[k]);
}

/* Aᵀ along one dimension of 6 → 4, as the scalar code: ((m0 + s12) + s34), d12 + 2·d34, s12 + 4·s34,
 * (d12 + 8·d34) + m5, products rounded before the sums (C contracts nothing here: -std=c11). */
static inline SA_AVX512 void at6_512(__m512 m0, __m512 m1, __m512 m2, __m512 m3, __m512 m4, __m512 m5, __m512 *y,
                                     int step) {
    __m512 s12 = _mm512_add_ps(m1, m2), d12 = _mm512_sub_ps(m1, m2), s34 = _mm512_add_ps(m3, m4),
           d34 = _mm512_sub_ps(m3, m4);
    y[0] = _mm512_add_ps(_mm512_add_ps(m0, s12), s34);
    y[step] = _mm512_add_ps(d12, _mm512_mul_ps(_mm512_set1_ps(2.f), d34));
    y[2 * step] = _mm512_add_ps(s12, _mm512_mul_ps(_mm512_set1_ps(4.f), s34));
    y[3 * step] = _mm512_add_ps(_mm512_add_ps(d12, _mm512_mul_ps(_mm512_set1_ps(8.f), d34)), m5);
}

/* The outputs of a sliver's row runs (see row_run): y[r·4 + q] lane L of a run goes to row oy + r·d, column
 * out_col + 4·d·(L / d) + L % d + q·d. Interleaved by unit zips (the inverse of load_row_run's split, once
 * per r for all runs) into 4 vectors of 16 consecutive columns, then + bias, + residual, ReLU as
 * scatter_tiles does them (max(v, 0) gives its +0 for −0 and NaN), and stores masked to each run's lanes
 * and the output: the same values in the same places. */
static SA_AVX512 void store_row_runs(const conv2d *c, tensor out, const tensor *res, int o, const gather_plan *gp,
                                     const __m512 *y) {
    size_t plane = tensor_plane(out);
    float *dst = out.d + (size_t)o * plane;
    const float *rs = res ? res->d + (size_t)o * plane : NULL;
    int dl = c->dil, di = run_dil_index(dl);
    const int32_t *lo = UNIT_ZIP[di][0], *hi = UNIT_ZIP[di][1];
    const __m512 bias = _mm512_set1_ps(c->b[o]), zero = _mm512_setzero_ps();
    for (int r = 0; r < 4; r++) {
        const __m512 *q = y + 4 * r;
        __m512 a_lo = unit_perm(lo, q[0], q[2]), a_hi = unit_perm(hi, q[0], q[2]), b_lo = unit_perm(lo, q[1], q[3]),
               b_hi = unit_perm(hi, q[1], q[3]);
        __m512 w[4] = {unit_perm(lo, a_lo, b_lo), unit_perm(hi, a_lo, b_lo), unit_perm(lo, a_hi, b_hi),
                       unit_perm(hi, a_hi, b_hi)};
        for (int i = 0; i < gp->n_runs; i++) {
            const row_run *run = &gp->run[i];
            int oy = run->out_row + r * dl;
            if (oy >= out.h) continue;
            for (int v = 0; v < 4; v++) { /* 16 output columns from out_col + 16·v */
                __mmask16 keep = run->store_mask[v];
                if (!keep) continue;
                ptrdiff_t at = (ptrdiff_t)oy * out.w + run->out_col + 16 * v; /* may start left of the row: masked */
                __m512 x = _mm512_add_ps(w[v], bias);
                if (rs) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(keep, rs + at));
                if (c->relu) x = _mm512_max_ps(x, zero);
                _mm512_mask_storeu_ps(dst + at, keep, x);
            }
        }
    }
}

static SA_AVX512 void output_tiles_avx512(const conv2d *c, tensor out, const tensor *res, int o, const int *org,
                                          int nt, const float *m, size_t xi_stride, const gather_plan *gp) {
    __m512 t[24];
    for (int q = 0; q < 6; q++) /* columns: t = Aᵀ m (4 × 6) */
        at6_512(_mm512_loadu_ps(m + (size_t)q * xi_stride), _mm512_loadu_ps(m + (size_t)(6 + q) * xi_stride),
                _mm512_loadu_ps(m + (size_t)(12 + q) * xi_stride), _mm512_loadu_ps(m + (size_t)(18 + q) * xi_stride),
                _mm512_loadu_ps(m + (size_t)(24 + q) * xi_stride), _mm512_loadu_ps(m + (size_t)(30 + q) * xi_stride),
                t + q, 6);
    __m512 yv[16];
    for (int r = 0; r < 4; r++)
        at6_512(t[r * 6], t[r * 6 + 1], t[r * 6 + 2], t[r * 6 + 3], t[r * 6 + 4], t[r * 6 + 5], yv + 4 * r, 1);
    if (gp && gp->n_runs) {
        store_row_runs(c, out, res, o, gp, yv);
        return;
    }
    _Alignas(64) float y[16][LANES];
    for (int k = 0; k < 16; k++) _mm512_store_ps(y[k], yv[k]);
    scatter_tiles(c, out, res, o, org, nt, y);
}

/* One packed-B sliver of tiles in, one channel's tiles out: the AVX-512 code where the GEMM uses it. */
static void input_sliver(const conv2d *c, tensor in, int ch, const int *org, int nt, float *v, size_t xi_stride,
                         const gather_plan *gp) {
    size_t plane = (size_t)in.h * in.w;
    if (gp) input_tiles_avx512(in.d + ch * plane, in.h, in.w, c->dil, c->pad, ch + 1 < c->cin ? plane : 0, gp, v, xi_stride);
    else input_tiles(c, in, ch, org, nt, v, xi_stride);
}

static void output_sliver(const conv2d *c, tensor out, const tensor *res, int o, const int *org, int nt,
                          const float *m, size_t xi_stride, const gather_plan *gp) {
    if (gemm_isa_avx512()) output_tiles_avx512(c, out, res, o, org, nt, m, xi_stride, gp);
    else output_tiles(c, out, res, o, org, nt, m, xi_stride);
}

/* One conv's run: what every thread reads. */
typedef struct {
    const conv2d *c;
    const float *u;
    tensor in, out;
    const tensor *residual;
    wino_plan p;
    const int *org;
    gather_plan *plans;
    int n, ms;
    size_t pa;
} wino_run;

/* A batch whose V its thread has transformed, open to the others: once no whole batch is left, a thread
 * that is done takes output blocks of it, reading that V. Lean batches are all shared (one per thread,
 * each rebuilding U); with stored U only the last batches taken, one per thread, where a core slowed by a
 * neighbour would otherwise hold up the conv by up to a whole batch. */
typedef struct {
    work_band blocks;  /* blocks of the batch not yet taken */
    _Atomic int ready; /* b0, v and the batch's gather plans are complete */
    int b0;
    const float *v;
} batch_share;
#define SHARED_BATCHES_MAX 64 /* more shared batches than this (many threads, huge images): no block sharing */
#define SHARED_BLOCKS_MAX 96
/* A helper joins a batch only while this many output slivers of it are untaken: joining pulls the owner's
 * whole V across caches and writes rows of the owner's band, which the next layer's owner then pulls back.
 * For the last few small blocks that cost more than it saved (helping with a 2-sliver block of R18's
 * 64-channel convs took 0.37 ms where the owner needed 0.1); with 8 R18 ran 1-3 % and R101 1.5 % faster on 2
 * threads (sum of per-layer minima). */
#define HELP_MIN_SLIVERS 8

/* Blocks of a shared batch: sliver ranges start[i] .. start[i + 1] that shrink toward the end, each the
 * slivers left over the thread count (at least 2, at most cap), so that the last ones, where a helper and
 * the owner meet, are small. Their count, or 0 past SHARED_BLOCKS_MAX. */
static int shared_blocks(int ms, int cap, int threads, int *start) {
    int n = 0, s = 0;
    while (s < ms) {
        if (n == SHARED_BLOCKS_MAX) return 0;
        int left = ms - s, size = (left + threads - 1) / threads;
        size = size > cap ? cap : size < 2 ? 2 : size;
        start[n++] = s;
        s += size < left ? size : left;
    }
    start[n] = ms;
    return n;
}

/* Tiles in the batch at tile b0 (the last batch may be short), and in its sliver starting t0 tiles in. */
static int batch_size(const wino_run *w, int b0) { return w->n - b0 < w->p.tiles ? w->n - b0 : w->p.tiles; }
static int sliver_size(int nb, int t0) { return nb - t0 < LANES ? nb - t0 : LANES; }

/* Input transform of the batch at tile b0 into v (and its gather plans, by the thread that uses them). */
static void batch_input(const wino_run *w, int b0, float *v) {
    const conv2d *c = w->c;
    int nb = batch_size(w, b0), ns = (nb + LANES - 1) / LANES;
    for (int s = 0; w->plans && s < ns; s++)
        plan_sliver(c, w->in, w->out, w->org + 2 * (b0 + s * LANES), sliver_size(nb, s * LANES),
                    w->plans + (b0 + s * LANES) / LANES);
    for (int ch = 0; ch < c->cin; ch++) /* channel-major: one plane stays in L1 for all slivers */
        for (int s = 0; s < ns; s++) {
            int t0 = s * LANES;
            input_sliver(c, w->in, ch, w->org + 2 * (b0 + t0), sliver_size(nb, t0),
                         v + (size_t)s * LANES * c->cin + (size_t)ch * LANES, w->p.vstride,
                         w->plans ? w->plans + (b0 + t0) / LANES : NULL);
        }
}

/* Output slivers s0 .. s1 (at most block_slivers) of the batch at tile b0: the 36 GEMMs M = U·V and the
 * output transform, in the calling thread's ubuf and m. */
static void batch_block(const wino_run *w, int b0, int s0, int s1, const float *v, float *ubuf, float *m) {
    const conv2d *c = w->c;
    int nb = batch_size(w, b0), ns = (nb + LANES - 1) / LANES, T = w->p.tiles;
    int o0 = s0 * GEMM_MR, rows = (s1 * GEMM_MR < c->cout ? s1 * GEMM_MR : c->cout) - o0;
    for (int r = 0; r < 6; r++) {
        const float *ur = w->u + 6 * r * w->pa + (size_t)o0 * c->cin; /* stored U: its slivers s0.. */
        size_t us = w->pa;
        if (w->p.ustride) { /* lean: rebuild U[6r .. 6r + 5] of the block from the taps */
            if (gemm_isa_avx512()) transform_row_avx512(c, w->u, s0, s1, r, ubuf, w->p.ustride);
            else transform_row(c, w->u, s0, s1, r, ubuf, w->p.ustride);
            ur = ubuf, us = w->p.ustride;
        }
        for (int q = 0; q < 6; q++)
            gemm_packed(rows, ns * LANES, c->cin, 1.f, ur + q * us, v + (size_t)(6 * r + q) * w->p.vstride, 0.f,
                        m + (size_t)(6 * r + q) * w->p.mstride, T, NULL, 0);
    }
    for (int o = 0; o < rows; o++)
        for (int s = 0; s < ns; s++) {
            int t0 = s * LANES;
            output_sliver(c, w->out, w->residual, o0 + o, w->org + 2 * (b0 + t0), sliver_size(nb, t0),
                          m + (size_t)o * T + t0, w->p.mstride, w->plans ? w->plans + (b0 + t0) / LANES : NULL);
        }
}

/* See "One schedule, two sources of U" above. */
void winograd_conv(const conv2d *c, const float *u, tensor in, tensor out, const tensor *residual, float *scratch) {
    int threads = omp_get_max_threads(), n = count_tiles(c, out.h, out.w, NULL), ms = out_slivers(c);
    wino_run w = {c, u, in, out, residual, plan_conv(c, n, threads), NULL, NULL, n, ms, xi_stride(c)};
    int *org = (int *)(scratch + w.p.per_thread * threads);
    count_tiles(c, out.h, out.w, org);
    w.org = org;
    w.plans = gemm_isa_avx512() ? (gather_plan *)(((uintptr_t)(org + 2 * n) + 63) & ~(uintptr_t)63) : NULL;
    int T = w.p.tiles, batches = (n + T - 1) / T, lean = w.p.ustride != 0, bs = w.p.block_slivers;
    /* Batches taken before first_shared run alone, in blocks of block_slivers (one block with stored U). */
    int first_shared = lean || batches < threads ? 0 : batches - threads, slots = batches - first_shared;
    int block_start[SHARED_BLOCKS_MAX + 1], nshared = 0;
    if (threads > 1 && slots <= SHARED_BATCHES_MAX) nshared = shared_blocks(ms, lean ? bs : ms, threads, block_start);
    int share = nshared > 1;
    batch_share shared[SHARED_BATCHES_MAX];
    for (int k = 0; share && k < slots; k++) atomic_init(&shared[k].ready, 0);
    _Atomic int taken = 0;
    work_bands wb; /* batches are runs of tiles in image-row order: each thread keeps to its band (bands.h) */
    bands_init(&wb, batches, threads);
#pragma omp parallel
    {
        float *v = scratch + w.p.per_thread * omp_get_thread_num(), *ubuf = v + WT * w.p.vstride, *m = ubuf + 6 * w.p.ustride;
        for (int bi; (bi = bands_next(&wb, omp_get_thread_num())) >= 0;) {
            int k = share ? atomic_fetch_add_explicit(&taken, 1, memory_order_relaxed) - first_shared : -1;
            batch_input(&w, bi * T, v);
            if (k < 0) {
                for (int s0 = 0; s0 < ms; s0 += bs) batch_block(&w, bi * T, s0, s0 + bs < ms ? s0 + bs : ms, v, ubuf, m);
                continue;
            }
            band_init(&shared[k].blocks, 0, nshared);
            shared[k].b0 = bi * T, shared[k].v = v;
            atomic_store_explicit(&shared[k].ready, 1, memory_order_release);
            for (int blk; (blk = band_take(&shared[k].blocks, 0)) >= 0;)
                batch_block(&w, bi * T, block_start[blk], block_start[blk + 1], v, ubuf, m);
        }
        /* Every batch is taken, so no owner overwrites its V again: help with the blocks left, in the same
         * front-to-back order as the owner, so that a helper joining late gets the small ones, unless so
         * little is left that the owner is better off alone (HELP_MIN_SLIVERS). */
        for (int k = 0; share && k < slots; k++) {
            if (!atomic_load_explicit(&shared[k].ready, memory_order_acquire)) continue;
            int next = band_front(&shared[k].blocks);
            if (next < 0 || ms - block_start[next] < HELP_MIN_SLIVERS) continue;
            for (int blk; (blk = band_take(&shared[k].blocks, 0)) >= 0;)
                batch_block(&w, shared[k].b0, block_start[blk], block_start[blk + 1], shared[k].v, ubuf, m);
        }
    }
}
