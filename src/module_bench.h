/* `segattn bench --module`: one context module on its own, built with random weights from the head's own
 * pieces, measured as the efficiency papers measure it (parameters, MACs, wall time, extra memory). */
#ifndef SA_MODULE_BENCH_H
#define SA_MODULE_BENCH_H
#include "model.h"

/* Each head's context module alone, on a head object from its vtable's load (x is left alive). */
tensor nonlocal_context(run_ctx *ctx, const void *head, tensor x); /* theta/phi/g, attention, conv_out, + x */
tensor ccnet_context(run_ctx *ctx, const void *head, tensor x);    /* criss-cross attention × recurrence */
tensor ann_context(run_ctx *ctx, const void *head, tensor x);      /* APNB with its bottleneck */
tensor isanet_context(run_ctx *ctx, const void *head, tensor x);   /* global + local relation, padded, cropped */
tensor eanet_context(run_ctx *ctx, const void *head, tensor x);    /* external attention, + x, ReLU */

/* The spatial-bias branch of a Bottleneck (spatial_bias.c). */
int spatial_bias_load(spatial_bias **out, weight_store *ws, const char *prefix, conv2d *conv2, const backbone_cfg *cfg,
                      sa_error *err);
void spatial_bias_free(spatial_bias *sb);
void spatial_bias_branch(run_ctx *ctx, const spatial_bias *sb, tensor t, tensor up);
int spatial_bias_out_maps(const spatial_bias *sb);

typedef struct {
    const char *name;    /* --module NAME */
    const char *what;    /* the module's boundaries, one line */
} module_info;
extern const module_info MODULES[];
extern const int N_MODULES;

typedef struct {
    double params;       /* distinct parameters (BN folded into conv biases; shared weights once) */
    double macs;         /* the dry run's ctx_log MACs: every layer as a direct computation */
    double input_bytes;  /* the input map, which lives in the arena too */
    double arena_bytes;  /* arena high-water mark of the module run, input included */
    double min_s, median_s, max_s; /* wall seconds (runs > 0) */
    int runs, threads;
    layer_record *log;   /* the dry run's layers (malloc'd) */
    int n_log;
} module_stats;

/* Builds module `name` for a c × h × w input, plans it (dry run) and, when runs > 0, times `runs` runs
 * after one warm-up with `threads` threads (0: OpenMP's default). */
int module_bench(const char *name, int c, int h, int w, int runs, int threads, module_stats *st, sa_error *err);
void module_stats_free(module_stats *st);

#endif
