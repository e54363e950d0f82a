/* Measured single-precision FMA peak of this machine: every thread runs 12 independent chains of 8-wide
 * AVX2 fused multiply-adds (enough to cover the FMA latency on two ports) for about half a second; the
 * best of three rounds is printed as GFLOP/s (one FMA = 2 flops). Used by scripts/bench.sh.
 * build: cc -O2 -mavx2 -mfma -fopenmp scripts/fma_peak.c -o fma_peak;  run: ./fma_peak [threads] */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 12

static double chains(long iters, float seed) {
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    __m256 c0 = _mm256_set1_ps(seed), c1 = _mm256_set1_ps(seed + 1), c2 = _mm256_set1_ps(seed + 2),
           c3 = _mm256_set1_ps(seed + 3), c4 = _mm256_set1_ps(seed + 4), c5 = _mm256_set1_ps(seed + 5),
           c6 = _mm256_set1_ps(seed + 6), c7 = _mm256_set1_ps(seed + 7), c8 = _mm256_set1_ps(seed + 8),
           c9 = _mm256_set1_ps(seed + 9), c10 = _mm256_set1_ps(seed + 10), c11 = _mm256_set1_ps(seed + 11);
    for (long it = 0; it < iters; it++) {
        c0 = _mm256_fmadd_ps(c0, a, b), c1 = _mm256_fmadd_ps(c1, a, b), c2 = _mm256_fmadd_ps(c2, a, b);
        c3 = _mm256_fmadd_ps(c3, a, b), c4 = _mm256_fmadd_ps(c4, a, b), c5 = _mm256_fmadd_ps(c5, a, b);
        c6 = _mm256_fmadd_ps(c6, a, b), c7 = _mm256_fmadd_ps(c7, a, b), c8 = _mm256_fmadd_ps(c8, a, b);
        c9 = _mm256_fmadd_ps(c9, a, b), c10 = _mm256_fmadd_ps(c10, a, b), c11 = _mm256_fmadd_ps(c11, a, b);
        __asm__ volatile("" : "+x"(c0), "+x"(c1), "+x"(c2), "+x"(c3), "+x"(c4), "+x"(c5));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    float out[8], sum = 0;
    _mm256_storeu_ps(out, s);
    for (int j = 0; j < 8; j++) sum += out[j];
    return sum; /* keeps the chains alive */
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1) threads = 1;
    omp_set_num_threads(threads);
    long iters = 100000000;
    double best = 0, sink = 0;
    for (int round = 0; round < 3; round++) {
        double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        sink += chains(iters, (float)omp_get_thread_num());
        double t = omp_get_wtime() - t0, gflops = 2.0 * 8 * CHAINS * (double)iters * threads / t / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("{\"threads\": %d, \"fma_peak_gflops\": %.1f, \"sink\": %g}\n", threads, best, sink > 0 ? 1.0 : 0.0);
    return 0;
}
