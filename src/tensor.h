/* Activations: one image, channel-major (C × H × W) float maps, allocated from one arena per run. */
#ifndef SA_TENSOR_H
#define SA_TENSOR_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int c, h, w;
    float *d;
} tensor;

static inline size_t tensor_numel(tensor t) { return (size_t)t.c * t.h * t.w; }
static inline size_t tensor_plane(tensor t) { return (size_t)t.h * t.w; }

/* A first-fit allocator over one buffer. The forward pass runs twice per input size: a dry run with no
 * buffer (kernels skip their arithmetic) that measures the high-water mark, then real runs inside a
 * buffer of exactly that size. The allocation sequence does not depend on data, so the plan is exact. */
typedef struct {
    size_t off, size;
} arena_block;

#define ARENA_MAX_LIVE 512

typedef struct {
    char *base;       /* NULL during the dry run */
    size_t capacity;  /* bytes available (SIZE_MAX during the dry run) */
    size_t high;      /* high-water mark in bytes */
    int n;            /* live blocks, sorted by offset */
    arena_block live[ARENA_MAX_LIVE];
    int failed;       /* an allocation did not fit: the run must be abandoned */
} arena;

void arena_reset(arena *a, char *base, size_t capacity);
void *arena_alloc(arena *a, size_t bytes);
void arena_free(arena *a, void *p);

/* Per-layer record kept by the dry run (info) and by profiled runs (bench --profile). */
typedef struct {
    char name[96];
    int in_c, in_h, in_w, out_c, out_h, out_w;
    double macs;     /* multiply-accumulates of the layer as a direct computation */
    double params;
    double seconds;  /* wall time, profiled runs only */
} layer_record;

/* Run context handed to every op: the arena, whether this is the dry run, and the layer log. */
typedef struct {
    arena ar;
    int dry;
    int want_log;    /* keep per-layer records (dry run) and their times (real runs) */
    layer_record *log;
    int n_log, cap_log, log_pos;
    double macs_total;
} run_ctx;

tensor ctx_tensor(run_ctx *ctx, int c, int h, int w);
float *ctx_scratch(run_ctx *ctx, size_t floats);
void ctx_release(run_ctx *ctx, tensor t);
void ctx_release_ptr(run_ctx *ctx, void *p);
/* Every op calls ctx_log once: the dry run records the layer (and counts its MACs); a real run gets the
 * same index back so that ctx_log_time can add the op's wall time to its record. */
int ctx_log(run_ctx *ctx, const char *name, tensor in, tensor out, double macs, double params);
void ctx_log_time(run_ctx *ctx, int id, double t0);
double wall_seconds(void);

#endif
