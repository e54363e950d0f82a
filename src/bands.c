#include "bands.h"

static uint64_t span_of(uint32_t front, uint32_t back) { return (uint64_t)front << 32 | back; }

void band_init(work_band *b, int front, int back) { atomic_init(&b->span, span_of((uint32_t)front, (uint32_t)back)); }

void bands_init(work_bands *w, int n_items, int threads) {
    int nb = threads < 1 ? 1 : threads > BANDS_MAX ? BANDS_MAX : threads;
    w->n_bands = nb;
    for (int b = 0; b < nb; b++)
        band_init(&w->band[b], (int)((int64_t)n_items * b / nb), (int)((int64_t)n_items * (b + 1) / nb));
}

int band_take(work_band *b, int from_back) {
    uint64_t s = atomic_load_explicit(&b->span, memory_order_relaxed);
    for (;;) {
        uint32_t front = (uint32_t)(s >> 32), back = (uint32_t)s;
        if (front >= back) return -1;
        uint64_t next = from_back ? span_of(front, back - 1) : span_of(front + 1, back);
        if (atomic_compare_exchange_weak_explicit(&b->span, &s, next, memory_order_acq_rel, memory_order_relaxed))
            return (int)(from_back ? back - 1 : front);
    }
}

int band_front(work_band *b) {
    uint64_t s = atomic_load_explicit(&b->span, memory_order_relaxed);
    uint32_t front = (uint32_t)(s >> 32), back = (uint32_t)s;
    return front < back ? (int)front : -1;
}

int bands_next(work_bands *w, int t) {
    int item = band_take(&w->band[t % w->n_bands], 0);
    while (item < 0) {
        int fullest = -1;
        uint32_t most = 0;
        for (int b = 0; b < w->n_bands; b++) {
            uint64_t s = atomic_load_explicit(&w->band[b].span, memory_order_relaxed);
            uint32_t front = (uint32_t)(s >> 32), back = (uint32_t)s;
            if (back > front && back - front > most) most = back - front, fullest = b;
        }
        if (fullest < 0) return -1;
        item = band_take(&w->band[fullest], 1);
    }
    return item;
}
