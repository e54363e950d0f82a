/* Measured single-precision FMA peak of this machine: every thread runs 12 independent chains of fused
 * multiply-adds (enough to cover the FMA latency on two ports) for about half a second, with the widest
 * vectors the CPU has (AVX-512 where present, as segattn's GEMM uses, else AVX2); the best of three rounds
 * is printed as GFLOP/s (one FMA = 2 flops). Used by scripts/bench.sh.
 * build: cc -O2 -mavx2 -mfma -fopenmp scripts/fma_peak.c -o fma_peak;  run: ./fma_peak [threads] */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* One chain body per vector width; V is the vector type, P the intrinsic prefix, L its lanes. */
#define CHAINS_BODY(V, P, L)                                                                               \
    const V a = P##_set1_ps(0.999999f), b = P##_set1_ps(1e-7f);                                            \
    V c[12];                                                                                               \
    for (int j = 0; j < 12; j++) c[j] = P##_set1_ps(seed + j);                                             \
    for (long it = 0; it < iters; it++) {                                                                  \
        c[0] = P##_fmadd_ps(c[0], a, b), c[1] = P##_fmadd_ps(c[1], a, b), c[2] = P##_fmadd_ps(c[2], a, b);    \
        c[3] = P##_fmadd_ps(c[3], a, b), c[4] = P##_fmadd_ps(c[4], a, b), c[5] = P##_fmadd_ps(c[5], a, b);    \
        c[6] = P##_fmadd_ps(c[6], a, b), c[7] = P##_fmadd_ps(c[7], a, b), c[8] = P##_fmadd_ps(c[8], a, b);    \
        c[9] = P##_fmadd_ps(c[9], a, b), c[10] = P##_fmadd_ps(c[10], a, b), c[11] = P##_fmadd_ps(c[11], a, b); \
    }                                                                                                      \
    float out[L], sum = 0;                                                                                 \
    for (int j = 0; j < 12; j++) {                                                                         \
        P##_storeu_ps(out, c[j]);                                                                          \
        for (int l = 0; l < L; l++) sum += out[l];                                                         \
    }                                                                                                      \
    return sum; /* keeps the chains alive */

static double chains256(long iters, float seed) { CHAINS_BODY(__m256, _mm256, 8) }
__attribute__((target("avx512f"))) static double chains512(long iters, float seed) { CHAINS_BODY(__m512, _mm512, 16) }

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1) threads = 1;
    omp_set_num_threads(threads);
    int wide = __builtin_cpu_supports("avx512f"), lanes = wide ? 16 : 8;
    long iters = wide ? 50000000 : 100000000;
    double best = 0, sink = 0;
    for (int round = 0; round < 3; round++) {
        double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        sink += wide ? chains512(iters, (float)omp_get_thread_num()) : chains256(iters, (float)omp_get_thread_num());
        double t = omp_get_wtime() - t0, gflops = 2.0 * lanes * 12 * (double)iters * threads / t / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("{\"threads\": %d, \"vector_bits\": %d, \"fma_peak_gflops\": %.1f, \"sink\": %g}\n", threads, 32 * lanes, best,
           sink > 0 ? 1.0 : 0.0);
    return 0;
}
