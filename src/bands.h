/* Work bands: items [0, n) of a parallel loop cut into one contiguous band per thread. A thread takes
 * items from the front of its own band, and once that is empty, from the back of the band with the most
 * left. Each thread so stays on the same part of the image from layer to layer (the two cores measured
 * here sit on separate L3 caches, and reading what the other core wrote costs cross-cache transfers),
 * while a core slowed by a neighbour still gets help. Which thread runs an item never changes its result:
 * every item writes its own outputs from thread-private scratch. */
#ifndef SA_BANDS_H
#define SA_BANDS_H
#include <stdatomic.h>
#include <stdint.h>

#define BANDS_MAX 64 /* more threads share bands (the claims are atomic either way) */

typedef struct {
    _Alignas(64) _Atomic uint64_t span; /* front << 32 | back: items [front, back) not yet taken */
} work_band;

typedef struct {
    work_band band[BANDS_MAX];
    int n_bands;
} work_bands;

/* Call once, outside the parallel region, with the team's thread count. */
void bands_init(work_bands *w, int n_items, int threads);
/* The next item for thread t (omp_get_thread_num()), or -1 when every band is empty. */
int bands_next(work_bands *w, int t);

/* One band on its own: items [front, back); take one from the front or the back, -1 once it is empty. */
void band_init(work_band *b, int front, int back);
int band_take(work_band *b, int from_back);
/* The item band_take(b, 0) would return now (another thread may take it first), or -1 once it is empty. */
int band_front(work_band *b);

#endif
