/* GEMM: a register-tiled, cache-blocked FP32 kernel (AVX2/FMA 6×16 micro-kernel over packed panels) for
 * the shipped path, a triple loop as the reference.
 *
 * Determinism: the K dimension is cut into fixed KC blocks and every output element is summed by one
 * micro-kernel call per block, in block order, whatever thread runs it. Threads only split the M×N
 * output into independent tasks, so the result is bit-identical for any thread count. */
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bands.h"
#include "ops.h"

#define MR GEMM_MR
#define NR GEMM_NR
#define KC 1024   /* K block: long enough that C is rarely re-read (measured: 256 → 1024 is +10–20 % on 1×1 convs) */
#define MB_MAX 16 /* A slivers per task (96 rows, ≤ 96 KiB of A in L2 per K block) */
#define NB_MAX 8  /* B slivers per task (128 columns) */

/* Every block carries a 64-byte header: how it was made and how long it is. Big ones (packed weights) come
 * straight from mmap, so that their pages go back to the system when freed (malloc would keep them in its
 * heap and the peak RSS would carry freed source weights) and the aligned inside can use 2 MiB pages. */
#define HDR 64
#define MMAP_FROM (1u << 20)
typedef struct {
    size_t len;
    int mapped;
} block_header;

float *gemm_alloc(size_t floats) {
    size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    char *base;
    block_header h = {0, bytes >= MMAP_FROM};
    if (h.mapped) {
        h.len = (4096 + bytes + 4095) / 4096 * 4096; /* one page in front holds the header */
        base = mmap(NULL, h.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) return NULL;
        madvise(base, h.len, MADV_HUGEPAGE);
        base += 4096 - HDR;
    } else {
        base = aligned_alloc(64, HDR + (bytes ? bytes : 64));
        if (!base) return NULL;
    }
    memcpy(base, &h, sizeof h);
    return (float *)(base + HDR);
}

void gemm_free(float *p) {
    if (!p) return;
    block_header h;
    char *base = (char *)p - HDR;
    memcpy(&h, base, sizeof h);
    if (h.mapped) munmap(base - (4096 - HDR), h.len);
    else free(base);
}

size_t gemm_packed_a_floats(int m, int k) { return (size_t)((m + MR - 1) / MR) * MR * (size_t)k; }
size_t gemm_packed_b_floats(int k, int n) { return (size_t)((n + NR - 1) / NR) * NR * (size_t)k; }

void gemm_pack_a(int trans, int m, int k, const float *a, int lda, float *ap) {
    int ms = (m + MR - 1) / MR;
    /* Weight packing at first use is parallel; packing inside an op's parallel region stays on its thread. */
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && (size_t)m * k >= ((size_t)1 << 16))
    for (int s = 0; s < ms; s++) {
        float *dst = ap + (size_t)s * MR * k;
        int i0 = s * MR, rows = m - i0 < MR ? m - i0 : MR;
        if (trans) {
            for (int p = 0; p < k; p++) {
                const float *src = a + (size_t)p * lda + i0;
                int r = 0;
                for (; r < rows; r++) dst[(size_t)p * MR + r] = src[r];
                for (; r < MR; r++) dst[(size_t)p * MR + r] = 0.f;
            }
        } else {
            for (int r = 0; r < MR; r++) {
                if (r < rows) {
                    const float *src = a + (size_t)(i0 + r) * lda;
                    for (int p = 0; p < k; p++) dst[(size_t)p * MR + r] = src[p];
                } else {
                    for (int p = 0; p < k; p++) dst[(size_t)p * MR + r] = 0.f;
                }
            }
        }
    }
}

void gemm_pack_b(int trans, int k, int n, const float *b, int ldb, float *bp) {
    int ns = (n + NR - 1) / NR, full = n / NR;
    if (!trans) {
        /* Rows in groups of 8 so that reads stream along rows while each sliver gets 512 contiguous bytes. */
        for (int p0 = 0; p0 < k; p0 += 8) {
            int p1 = p0 + 8 < k ? p0 + 8 : k;
            for (int s = 0; s < full; s++) {
                float *dst = bp + (size_t)s * NR * k;
                for (int p = p0; p < p1; p++) {
                    const float *src = b + (size_t)p * ldb + s * NR;
                    _mm256_store_ps(dst + (size_t)p * NR, _mm256_loadu_ps(src));
                    _mm256_store_ps(dst + (size_t)p * NR + 8, _mm256_loadu_ps(src + 8));
                }
            }
        }
        if (full < ns) {
            float *dst = bp + (size_t)full * NR * k;
            int j0 = full * NR, cols = n - j0;
            for (int p = 0; p < k; p++) {
                const float *src = b + (size_t)p * ldb + j0;
                int j = 0;
                for (; j < cols; j++) dst[(size_t)p * NR + j] = src[j];
                for (; j < NR; j++) dst[(size_t)p * NR + j] = 0.f;
            }
        }
        return;
    }
    /* Transposed: 16×16 blocks, so that each block of the sliver (1 KiB) is written while it is in L1
     * and every source line is read once. */
    for (int s = 0; s < ns; s++) {
        float *dst = bp + (size_t)s * NR * k;
        int j0 = s * NR, cols = n - j0 < NR ? n - j0 : NR;
        for (int p0 = 0; p0 < k; p0 += 16) {
            int p1 = p0 + 16 < k ? p0 + 16 : k;
            for (int j = 0; j < NR; j++) {
                if (j < cols) {
                    const float *src = b + (size_t)(j0 + j) * ldb;
                    for (int p = p0; p < p1; p++) dst[(size_t)p * NR + j] = src[p];
                } else {
                    for (int p = p0; p < p1; p++) dst[(size_t)p * NR + j] = 0.f;
                }
            }
        }
    }
}

/* 6×16 AVX2 accumulation of one A sliver by one B sliver into t (row stride ldt). */
static void accumulate_avx2(int kc, const float *a, const float *b, float *t, int ldt) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8), av;
        av = _mm256_broadcast_ss(a + 0), c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(a + 1), c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(a + 2), c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(a + 3), c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(a + 4), c40 = _mm256_fmadd_ps(av, b0, c40), c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(a + 5), c50 = _mm256_fmadd_ps(av, b0, c50), c51 = _mm256_fmadd_ps(av, b1, c51);
        a += MR, b += NR;
    }
    _mm256_store_ps(t + 0 * ldt, c00), _mm256_store_ps(t + 0 * ldt + 8, c01);
    _mm256_store_ps(t + 1 * ldt, c10), _mm256_store_ps(t + 1 * ldt + 8, c11);
    _mm256_store_ps(t + 2 * ldt, c20), _mm256_store_ps(t + 2 * ldt + 8, c21);
    _mm256_store_ps(t + 3 * ldt, c30), _mm256_store_ps(t + 3 * ldt + 8, c31);
    _mm256_store_ps(t + 4 * ldt, c40), _mm256_store_ps(t + 4 * ldt + 8, c41);
    _mm256_store_ps(t + 5 * ldt, c50), _mm256_store_ps(t + 5 * ldt + 8, c51);
}

/* AVX-512: one A sliver by SLIVERS adjacent B slivers (bstep floats apart) at once, 6 × SLIVERS
 * accumulators of 16 lanes. Each output element is still one FMA chain over p in order, exactly as in
 * the AVX2 kernel, so both kernels give bit-identical results. */
#define ROW512(r)                                                                                          \
    do {                                                                                                   \
        __m512 av = _mm512_set1_ps(a[r]);                                                                  \
        c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                                                        \
        if (S > 1) c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);                                       \
        if (S > 2) c##r##2 = _mm512_fmadd_ps(av, b2, c##r##2);                                       \
    } while (0)
#define STORE512(r)                                                                                        \
    do {                                                                                                   \
        _mm512_store_ps(t + r * ldt, c##r##0);                                                             \
        if (S > 1) _mm512_store_ps(t + r * ldt + NR, c##r##1);                                       \
        if (S > 2) _mm512_store_ps(t + r * ldt + 2 * NR, c##r##2);                                   \
    } while (0)
#define DEFINE_ACCUMULATE512(SLIVERS)                                                                      \
    static SA_AVX512 void accumulate_avx512_##SLIVERS(int kc, const float *a, const float *b, size_t bstep, \
                                                      float *t, int ldt) {                                 \
        enum { S = SLIVERS };                                                                              \
        __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00, c20 = c00, \
               c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00, c40 = c00, c41 = c00, c42 = c00,      \
               c50 = c00, c51 = c00, c52 = c00;                                                            \
        const float *bb1 = b + bstep, *bb2 = b + 2 * bstep;                                                \
        for (int p = 0; p < kc; p++) {                                                                     \
            __m512 b0 = _mm512_load_ps(b), b1 = b0, b2 = b0;                                               \
            if (S > 1) b1 = _mm512_load_ps(bb1);                                                     \
            if (S > 2) b2 = _mm512_load_ps(bb2);                                                     \
            ROW512(0); ROW512(1); ROW512(2); ROW512(3); ROW512(4); ROW512(5);                              \
            a += MR, b += NR, bb1 += NR, bb2 += NR;                                                        \
        }                                                                                                  \
        STORE512(0); STORE512(1); STORE512(2); STORE512(3); STORE512(4); STORE512(5);                      \
        (void)c01, (void)c02, (void)c11, (void)c12, (void)c21, (void)c22, (void)c31, (void)c32, (void)c41, \
            (void)c42, (void)c51, (void)c52;                                                               \
    }
DEFINE_ACCUMULATE512(1)
DEFINE_ACCUMULATE512(2)
DEFINE_ACCUMULATE512(3)

/* Which kernel runs: AVX-512 where the CPU has it, unless SEGATTN_ISA=avx2 asks for the AVX2 one (tests
 * compare the two). Decided once; both give the same bits. */
static int use_avx512 = -1;

int gemm_isa_avx512(void) {
    if (use_avx512 < 0) {
        const char *isa = getenv("SEGATTN_ISA");
        __builtin_cpu_init();
        use_avx512 = __builtin_cpu_supports("avx512f") && !(isa && strcmp(isa, "avx2") == 0);
    }
    return use_avx512;
}

void gemm_force_isa(int avx512) { use_avx512 = avx512 && __builtin_cpu_supports("avx512f"); }

/* store_tile for a full-width sliver with 16-lane vectors: the same operations in the same order. */
static SA_AVX512 void store_tile16(const float *t, int ldt, float *c, int ldc, int mr, int mode, float alpha, float beta,
                                   int last, const gemm_epilogue *e, int row, int col) {
    int has_epi = last && e;
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta), zero = _mm512_setzero_ps();
    for (int i = 0; i < mr; i++) {
        float *ci = c + (size_t)i * ldc;
        __m512 v = _mm512_load_ps(t + (size_t)i * ldt);
        if (alpha != 1.f) v = _mm512_mul_ps(v, va);
        if (mode) v = _mm512_add_ps(_mm512_loadu_ps(ci), v);
        else if (beta != 0.f) v = _mm512_add_ps(v, _mm512_mul_ps(vb, _mm512_loadu_ps(ci)));
        if (has_epi) {
            if (e->bias) v = _mm512_add_ps(v, _mm512_set1_ps(e->bias[row + i]));
            if (e->res) v = _mm512_add_ps(v, _mm512_loadu_ps(e->res + (size_t)(row + i) * e->ldr + col));
            if (e->relu) v = _mm512_max_ps(v, zero);
        }
        _mm512_storeu_ps(ci, v);
    }
}

/* Writes one MR×nr tile t (row stride ldt) to C. mode 0: C = alpha·acc + beta·C (C not read when beta is
 * 0); mode 1: C += alpha·acc. `last` applies the epilogue (bias per row, residual, ReLU). */
static void store_tile(const float *t, int ldt, float *c, int ldc, int mr, int nr, int mode, float alpha, float beta,
                       int last, const gemm_epilogue *e, int row, int col) {
    int has_epi = last && e;
    if (nr == NR) {
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta), zero = _mm256_setzero_ps();
        for (int i = 0; i < mr; i++) {
            float *ci = c + (size_t)i * ldc;
            for (int h = 0; h < NR; h += 8) {
                __m256 v = _mm256_load_ps(t + (size_t)i * ldt + h);
                if (alpha != 1.f) v = _mm256_mul_ps(v, va);
                if (mode) v = _mm256_add_ps(_mm256_loadu_ps(ci + h), v);
                else if (beta != 0.f) v = _mm256_add_ps(v, _mm256_mul_ps(vb, _mm256_loadu_ps(ci + h)));
                if (has_epi) {
                    if (e->bias) v = _mm256_add_ps(v, _mm256_set1_ps(e->bias[row + i]));
                    if (e->res) v = _mm256_add_ps(v, _mm256_loadu_ps(e->res + (size_t)(row + i) * e->ldr + col + h));
                    if (e->relu) v = _mm256_max_ps(v, zero);
                }
                _mm256_storeu_ps(ci + h, v);
            }
        }
    } else {
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++) {
                float *cij = c + (size_t)i * ldc + j, v = t[(size_t)i * ldt + j];
                if (alpha != 1.f) v *= alpha;
                if (mode) v = *cij + v;
                else if (beta != 0.f) v = v + beta * *cij;
                if (has_epi) {
                    if (e->bias) v += e->bias[row + i];
                    if (e->res) v += e->res[(size_t)(row + i) * e->ldr + col + j];
                    if (e->relu) v = v > 0.f ? v : 0.f; /* max(v, 0) as _mm256_max_ps: NaN → 0 either way */
                }
                *cij = v;
            }
    }
}

typedef struct {
    int m, n, k, ms, ns, mb, nb, nmb, nnb;
    float alpha, beta;
    const float *ap, *bp;
    float *c;
    int ldc;
    const gemm_epilogue *e;
    int avx512;
    size_t c_sliver; /* 0: C row-major (ldc); else C in packed-B layout, 16-column slivers this many floats apart */
} gemm_job;

/* Where the tile at (row, col) of C starts: col is a multiple of NR. */
static float *c_at(const gemm_job *g, int row, int col) {
    if (g->c_sliver) return g->c + (size_t)(col / NR) * g->c_sliver + (size_t)row * NR;
    return g->c + (size_t)row * g->ldc + col;
}

static void run_task(const gemm_job *g, int task) {
    int bi = task / g->nnb, bj = task % g->nnb;
    int s0 = bi * g->mb, s1 = s0 + g->mb < g->ms ? s0 + g->mb : g->ms;
    int t0 = bj * g->nb, t1 = t0 + g->nb < g->ns ? t0 + g->nb : g->ns;
    for (int p0 = 0; p0 < g->k || p0 == 0; p0 += KC) {
        int kc = g->k - p0 < KC ? g->k - p0 : KC, last = p0 + KC >= g->k;
        for (int t = t0; t < t1;) {
            int group = 1;
            if (g->avx512) group = t1 - t >= 3 ? 3 : t1 - t;
            const float *bs = g->bp + (size_t)t * NR * g->k + (size_t)p0 * NR;
            for (int s = s0; s < s1; s++) {
                const float *as = g->ap + (size_t)s * MR * g->k + (size_t)p0 * MR;
                int row = s * MR, mr = g->m - row < MR ? g->m - row : MR;
                _Alignas(64) float tile[MR * 3 * NR];
                size_t bstep = (size_t)NR * g->k;
                /* The tile's C rows (and residual rows) are far apart and often in DRAM: ask for their lines
                 * now, so that they arrive while the K loop runs instead of stalling the stores. */
                for (int i = 0; i < mr && last; i++) {
                    for (int q = 0; q < group; q++) __builtin_prefetch(c_at(g, row + i, (t + q) * NR), 1);
                    if (g->e && g->e->res) {
                        const float *ri = g->e->res + (size_t)(row + i) * g->e->ldr + t * NR;
                        for (int q = 0; q < group; q++) __builtin_prefetch(ri + q * NR, 0);
                    }
                }
                if (group == 3) accumulate_avx512_3(kc, as, bs, bstep, tile, 3 * NR);
                else if (group == 2) accumulate_avx512_2(kc, as, bs, bstep, tile, 3 * NR);
                else if (g->avx512) accumulate_avx512_1(kc, as, bs, bstep, tile, 3 * NR);
                else accumulate_avx2(kc, as, bs, tile, 3 * NR);
                for (int q = 0; q < group; q++) {
                    int col = (t + q) * NR, nr = g->n - col < NR ? g->n - col : NR;
                    float *ct = c_at(g, row, col);
                    if (g->avx512 && nr == NR)
                        store_tile16(tile + q * NR, 3 * NR, ct, g->ldc, mr, p0 > 0, g->alpha, g->beta, last, g->e, row, col);
                    else
                        store_tile(tile + q * NR, 3 * NR, ct, g->ldc, mr, nr, p0 > 0, g->alpha, g->beta, last, g->e, row, col);
                }
            }
            t += group;
        }
        if (g->k == 0) break;
    }
}

static void run_gemm(gemm_job g, int parallel) {
    g.nmb = (g.ms + MB_MAX - 1) / MB_MAX, g.mb = (g.ms + g.nmb - 1) / g.nmb;
    g.nnb = (g.ns + NB_MAX - 1) / NB_MAX, g.nb = (g.ns + g.nnb - 1) / g.nnb;
    int threads = parallel && !omp_in_parallel() ? omp_get_max_threads() : 1;
    if (threads > 1 && g.nmb * g.nnb < 4 * threads) { /* few tasks: cut M finer so that threads end together */
        g.nmb = (4 * threads + g.nnb - 1) / g.nnb;
        if (g.nmb > g.ms) g.nmb = g.ms;
        g.mb = (g.ms + g.nmb - 1) / g.nmb, g.nmb = (g.ms + g.mb - 1) / g.mb;
    }
    int tasks = g.nmb * g.nnb;
    if (threads > 1 && tasks > 1) {
#pragma omp parallel for schedule(dynamic)
        for (int t = 0; t < tasks; t++) run_task(&g, t);
    } else {
        for (int t = 0; t < tasks; t++) run_task(&g, t);
    }
}

void gemm_packed(int m, int n, int k, float alpha, const float *ap, const float *bp, float beta, float *c, int ldc,
                 const gemm_epilogue *e, int parallel) {
    if (m <= 0 || n <= 0) return;
    gemm_job g = {m, n, k, (m + MR - 1) / MR, (n + NR - 1) / NR, 0, 0, 0, 0, alpha, beta, ap, bp, c, ldc, e, gemm_isa_avx512(), 0};
    run_gemm(g, parallel);
}

void gemm_packed_to_b(int m, int n, int k, float alpha, const float *ap, const float *bp, float *cp, int parallel) {
    if (m <= 0 || n <= 0) return;
    gemm_job g = {m, n, k, (m + MR - 1) / MR, (n + NR - 1) / NR, 0, 0, 0, 0, alpha, 0.f, ap, bp, cp, NR, NULL,
                  gemm_isa_avx512(), (size_t)m * NR};
    run_gemm(g, parallel);
}

size_t gemm_panel_floats(int k) { return (size_t)GEMM_NC * (k > 0 ? k : 1) + 16; }

void gemm_panels(int m, int n, int k, float alpha, const float *ap, gemm_fill_b fill, const void *arg, float beta,
                 float *c, int ldc, const gemm_epilogue *e, float *work) {
    if (m <= 0 || n <= 0) return;
    int panels = (n + GEMM_NC - 1) / GEMM_NC;
    int threads = panels > 1 && !omp_in_parallel() ? omp_get_max_threads() : 1;
    if (threads > panels) threads = panels;
    size_t per = gemm_panel_floats(k);
    float *own = NULL;
    if (!work) {
        own = aligned_alloc(64, ((per * threads * sizeof(float)) + 63) / 64 * 64);
        if (!own) abort();
        work = own;
    }
    work_bands wb; /* panels are pixel ranges: each thread keeps to its band of the image (bands.h) */
    bands_init(&wb, panels, threads);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = omp_get_thread_num();
        float *bp = work + per * (size_t)t;
        for (int pi; (pi = bands_next(&wb, t)) >= 0;) {
            int j0 = pi * GEMM_NC, nc = n - j0 < GEMM_NC ? n - j0 : GEMM_NC;
            fill(arg, j0, nc, bp);
            gemm_epilogue ep;
            if (e) ep = *e, ep.res = e->res ? e->res + j0 : NULL;
            gemm_packed(m, nc, k, alpha, ap, bp, beta, c + j0, ldc, e ? &ep : NULL, 0);
        }
    }
    free(own);
}

typedef struct {
    int trans, k;
    const float *b;
    int ldb;
} dense_b;

static void fill_dense(const void *arg, int j0, int nc, float *bp) {
    const dense_b *d = arg;
    gemm_pack_b(d->trans, d->k, nc, d->trans ? d->b + (size_t)j0 * d->ldb : d->b + j0, d->ldb, bp);
}

void gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
          float beta, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    float *ap = gemm_alloc(gemm_packed_a_floats(m, k) + 16);
    if (!ap) abort();
    gemm_pack_a(trans_a, m, k, a, lda, ap);
    dense_b d = {trans_b, k, b, ldb};
    gemm_panels(m, n, k, alpha, ap, fill_dense, &d, beta, c, ldc, NULL, NULL);
    gemm_free(ap);
}

void gemm_reference(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                    const float *b, int ldb, float beta, float *c, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int p = 0; p < k; p++)
                acc += (double)(trans_a ? a[p * lda + i] : a[i * lda + p]) * (trans_b ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = (float)(alpha * acc + (beta != 0.f ? beta * c[i * ldc + j] : 0.f));
        }
}

void gemm_set_threads(int threads) { (void)threads; /* threads come from OpenMP (omp_set_num_threads) */ }
