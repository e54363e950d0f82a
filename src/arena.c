#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARENA_ALIGN 64
/* The dry run hands out addresses from this fake base so every pointer is distinct and never NULL. */
#define DRY_BASE ((uintptr_t)1 << 20)

void arena_reset(arena *a, char *base, size_t capacity) {
    a->base = base;
    a->capacity = capacity;
    a->high = 0;
    a->n = 0;
    a->failed = 0;
}

static uintptr_t arena_origin(const arena *a) { return a->base ? (uintptr_t)a->base : DRY_BASE; }

void *arena_alloc(arena *a, size_t bytes) {
    size_t need = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (need == 0) need = ARENA_ALIGN;
    if (a->n == ARENA_MAX_LIVE) { a->failed = 1; return NULL; }
    size_t start = 0;
    int slot = 0;
    for (; slot < a->n; slot++) {
        if (a->live[slot].off - start >= need) break;
        start = a->live[slot].off + a->live[slot].size;
    }
    if (start + need > a->capacity) { a->failed = 1; return NULL; }
    memmove(&a->live[slot + 1], &a->live[slot], (size_t)(a->n - slot) * sizeof(arena_block));
    a->live[slot] = (arena_block){start, need};
    a->n++;
    if (start + need > a->high) a->high = start + need;
    return (void *)(arena_origin(a) + start);
}

void arena_free(arena *a, void *p) {
    if (!p) return;
    size_t off = (size_t)((uintptr_t)p - arena_origin(a));
    for (int i = 0; i < a->n; i++) {
        if (a->live[i].off == off) {
            memmove(&a->live[i], &a->live[i + 1], (size_t)(a->n - i - 1) * sizeof(arena_block));
            a->n--;
            return;
        }
    }
}

tensor ctx_tensor(run_ctx *ctx, int c, int h, int w) {
    tensor t = {c, h, w, NULL};
    t.d = arena_alloc(&ctx->ar, tensor_numel(t) * sizeof(float));
    return t;
}

float *ctx_scratch(run_ctx *ctx, size_t floats) { return arena_alloc(&ctx->ar, floats * sizeof(float)); }

void ctx_release(run_ctx *ctx, tensor t) { arena_free(&ctx->ar, t.d); }
void ctx_release_ptr(run_ctx *ctx, void *p) { arena_free(&ctx->ar, p); }

int ctx_log(run_ctx *ctx, const char *name, tensor in, tensor out, double macs, double params) {
    if (!ctx->want_log) {
        if (ctx->dry) ctx->macs_total += macs;
        return -1;
    }
    if (!ctx->dry) return ctx->log_pos < ctx->n_log ? ctx->log_pos++ : -1;
    ctx->macs_total += macs;
    if (ctx->n_log == ctx->cap_log) {
        int cap = ctx->cap_log ? 2 * ctx->cap_log : 256;
        layer_record *grown = realloc(ctx->log, (size_t)cap * sizeof *grown);
        if (!grown) return -1;
        ctx->log = grown;
        ctx->cap_log = cap;
    }
    layer_record *r = &ctx->log[ctx->n_log];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->in_c = in.c, r->in_h = in.h, r->in_w = in.w;
    r->out_c = out.c, r->out_h = out.h, r->out_w = out.w;
    r->macs = macs;
    r->params = params;
    r->seconds = 0;
    return ctx->n_log++;
}

double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ctx_log_time(run_ctx *ctx, int id, double t0) {
    if (id >= 0 && !ctx->dry) ctx->log[id].seconds += wall_seconds() - t0;
}
