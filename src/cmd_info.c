/* segattn info and segattn bench: what a model is made of, and how fast it runs. */
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_options.h"
#include "model.h"
#include "module_bench.h"
#include "util.h"

static int parse_size(const char *s, int *h, int *w) {
    char tail;
    return sscanf(s, "%dx%d%c", h, w, &tail) == 2 && *h >= 1 && *w >= 1 && *h <= 16384 && *w <= 16384;
}

/* A layer's input and output shapes as "CxHxW", for the per-layer tables. */
static void layer_shapes(const layer_record *r, char in[32], char out[32]) {
    snprintf(in, 32, "%dx%dx%d", r->in_c, r->in_h, r->in_w);
    snprintf(out, 32, "%dx%dx%d", r->out_c, r->out_h, r->out_w);
}

static const char *INFO_HELP =
    "usage: segattn info [-c MODEL.json] [-w FILE]... [--size HxW] [--random-weights]\n"
    "\n"
    "Prints every layer with its output shape, parameters and multiply-accumulates (MACs) at the given input\n"
    "size, the totals, and the tensors the model reads with their dtype and shape.\n"
    "\n"
    "  -c, --config FILE     model JSON (default: the shipped CamVid CCNet model)\n"
    "  -w, --weights FILE    weights (default: the config's \"weights\" list)\n"
    "      --size HxW        input height x width (default 360x480)\n"
    "      --random-weights  do not read weight files (shapes and counts only)\n"
    "  -h, --help            this help\n";

static const char *BENCH_HELP =
    "usage: segattn bench [-c MODEL.json] [--size HxW] [-r RUNS] [--min-time S] [-t THREADS] [--profile] [--scaling]\n"
    "                     [--random-weights]\n"
    "       segattn bench --module NAME | --all [--input 1xCxHxW] [-r RUNS] [-t THREADS] [--profile] [--json]\n"
    "\n"
    "Times whole predictions (network, resize and argmax) on a fixed pseudo-random image after one warm-up run,\n"
    "and prints min / median / max wall seconds, GFLOP/s (2 x direct-convolution MACs per second) and peak RSS.\n"
    "\n"
    "With --module (or --all) it measures one bare context module with random weights instead, as the\n"
    "efficiency papers count it: parameters, MACs (every layer as a direct computation, from the same layer\n"
    "log as `info`), median wall seconds and peak extra memory (activation arena high-water mark, input\n"
    "excluded). Modules: nonlocal (self-attention, inter = C), nonlocal_r2 (mmseg, inter = C/2), ccnet (RCCA,\n"
    "recurrence 2), ann (APNB), isanet (global + local relation), eanet (external attention, memory 64),\n"
    "spatial_bias (the Spatial Bias branch). -r 0 counts without timing.\n"
    "\n"
    "      --module NAME     one module; with --profile, its layers\n"
    "      --all             every module, one table\n"
    "      --input NxCxHxW   module input (default 1x512x128x128; N must be 1)\n"
    "  -c, --config FILE     model JSON (default: the shipped CamVid CCNet model)\n"
    "  -w, --weights FILE    weights (default: the config's \"weights\" list)\n"
    "      --size HxW        input height x width (default 360x480)\n"
    "  -r, --runs N          timed runs (default 5; 3 with --module / --all)\n"
    "      --min-time S      go on with more runs until the timed runs took S seconds in all (default 0)\n"
    "  -t, --threads N       threads (default: all cores)\n"
    "      --profile         one line per layer: time, shape in -> out, GFLOP/s\n"
    "      --scaling         also time every run on 1 thread, alternating with the -t runs (so that both see\n"
    "                        the same load on a shared machine), and report the speed-up: min over min, and\n"
    "                        the median of the speed-ups of the pairs; with --profile, each layer's fastest\n"
    "                        run on either thread count and their ratio\n"
    "      --random-weights  random weights instead of weight files\n"
    "      --json            one JSON line instead of the table\n"
    "  -h, --help            this help\n";

typedef struct {
    model_args model;      /* -c, -w */
    sa_run_opts run;       /* -t */
    int h, w, runs, profile, random, json, scaling;
    const char *module;   /* bench --module */
    int all, in_c, in_h, in_w, runs_given;
    double min_time;      /* bench: seconds of timed runs to reach, beyond -r */
} model_opts;

#define RUNS_MAX 10000 /* -r, and the runs --min-time may add */

enum { OPT_SIZE = 300, OPT_PROFILE, OPT_RANDOM, OPT_JSON, OPT_MODULE, OPT_ALL, OPT_INPUT, OPT_SCALING, OPT_MIN_TIME };

static int parse_input(const char *s, int *c, int *h, int *w) {
    int n;
    char tail;
    if (sscanf(s, "%dx%dx%dx%d%c", &n, c, h, w, &tail) != 4) return 0;
    return n == 1 && *c >= 1 && *c <= 65536 && *h >= 1 && *w >= 1 && *h <= 4096 && *w <= 4096;
}

static int parse_model_opts(int argc, char **argv, model_opts *o, const char *help) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'}, {"weights", required_argument, 0, 'w'},
        {"size", required_argument, 0, OPT_SIZE}, {"runs", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'}, {"profile", no_argument, 0, OPT_PROFILE},
        {"random-weights", no_argument, 0, OPT_RANDOM}, {"json", no_argument, 0, OPT_JSON},
        {"module", required_argument, 0, OPT_MODULE}, {"all", no_argument, 0, OPT_ALL},
        {"input", required_argument, 0, OPT_INPUT}, {"scaling", no_argument, 0, OPT_SCALING},
        {"min-time", required_argument, 0, OPT_MIN_TIME},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->h = 360, o->w = 480, o->runs = 5;
    o->in_c = 512, o->in_h = o->in_w = 128;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:w:r:t:h", longopts, NULL)) != -1) {
        int taken = parse_model_option(opt, optarg, &o->model, &o->run);
        if (taken < 0) return SA_EXIT_USAGE;
        if (taken) continue;
        switch (opt) {
        case OPT_SIZE:
            if (!parse_size(optarg, &o->h, &o->w)) {
                fprintf(stderr, "segattn: error: --size: '%s' is not HxW\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case 'r':
            o->runs = atoi(optarg);
            if (o->runs < 0 || o->runs > RUNS_MAX || (o->runs == 0 && strcmp(optarg, "0") != 0)) {
                fprintf(stderr, "segattn: error: --runs: '%s' is not a count in [0, 10000]\n", optarg);
                return SA_EXIT_USAGE;
            }
            o->runs_given = 1;
            break;
        case OPT_MODULE:
            if (help != BENCH_HELP) { fputs(help, stderr); return SA_EXIT_USAGE; }
            o->module = optarg;
            break;
        case OPT_ALL:
            if (help != BENCH_HELP) { fputs(help, stderr); return SA_EXIT_USAGE; }
            o->all = 1;
            break;
        case OPT_INPUT:
            if (help != BENCH_HELP) { fputs(help, stderr); return SA_EXIT_USAGE; }
            if (!parse_input(optarg, &o->in_c, &o->in_h, &o->in_w)) {
                fprintf(stderr, "segattn: error: --input: '%s' is not 1xCxHxW\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case OPT_PROFILE: o->profile = 1; break;
        case OPT_SCALING:
            if (help != BENCH_HELP) { fputs(help, stderr); return SA_EXIT_USAGE; }
            o->scaling = 1;
            break;
        case OPT_MIN_TIME: {
            char *end;
            if (help != BENCH_HELP) { fputs(help, stderr); return SA_EXIT_USAGE; }
            o->min_time = strtod(optarg, &end);
            if (end == optarg || *end || !(o->min_time >= 0 && o->min_time <= 86400)) {
                fprintf(stderr, "segattn: error: --min-time: '%s' is not seconds in [0, 86400]\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        }
        case OPT_RANDOM: o->random = 1; break;
        case OPT_JSON: o->json = 1; break;
        case 'h': fputs(help, stdout); return -1;
        default: fputs(help, stderr); return SA_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "segattn: error: unexpected argument '%s'\n", argv[optind]);
        return SA_EXIT_USAGE;
    }
    if (o->module && o->all) {
        fprintf(stderr, "segattn: error: --module and --all exclude each other\n");
        return SA_EXIT_USAGE;
    }
    if (o->min_time > 0 && (o->module || o->all)) {
        fprintf(stderr, "segattn: error: --min-time times whole predictions only (not with --module, --all)\n");
        return SA_EXIT_USAGE;
    }
    if (o->scaling && (o->module || o->all)) {
        fprintf(stderr, "segattn: error: --scaling times whole predictions only (not with --module, --all)\n");
        return SA_EXIT_USAGE;
    }
    if (!o->module && !o->all && o->runs == 0) {
        fprintf(stderr, "segattn: error: --runs 0 only counts modules (--module, --all)\n");
        return SA_EXIT_USAGE;
    }
    if (!o->model.config) o->model.config = default_config_path();
    return 0;
}

static sa_model *open_model(const model_opts *o) {
    sa_error err = {0};
    sa_model *m = o->random ? sa_model_load_random(o->model.config, &err) : sa_model_load(o->model.config, o->model.weights, o->model.n_weights, &err);
    if (!m) report(&err);
    else if (!o->random) warn_unused(o->model.config, m);
    return m;
}

static void human(double v, char *buf, size_t n) {
    if (v >= 1e9) snprintf(buf, n, "%.2fG", v / 1e9);
    else if (v >= 1e6) snprintf(buf, n, "%.2fM", v / 1e6);
    else if (v >= 1e3) snprintf(buf, n, "%.1fK", v / 1e3);
    else snprintf(buf, n, "%.0f", v);
}

int cmd_info(int argc, char **argv) {
    model_opts o;
    int code = parse_model_opts(argc, argv, &o, INFO_HELP);
    if (code) return code < 0 ? 0 : code;
    sa_model *m = open_model(&o);
    if (!m) return SA_EXIT_MODEL;
    sa_error err = {0};
    m->ctx.want_log = 1;
    if ((code = model_plan(m, o.h, o.w, &err))) { report(&err); sa_model_free(m); return code; }
    const model_cfg *c = &m->cfg;
    printf("model      %s\n", o.model.config);
    printf("backbone   ResNetV1c-%d (stem %d, base %d, strides %d,%d,%d,%d, dilations %d,%d,%d,%d)%s\n", c->backbone.depth,
           c->backbone.stem_channels, c->backbone.base_channels, c->backbone.strides[0], c->backbone.strides[1],
           c->backbone.strides[2], c->backbone.strides[3], c->backbone.dilations[0], c->backbone.dilations[1],
           c->backbone.dilations[2], c->backbone.dilations[3], c->backbone.spatial_bias.stage_mask ? " + spatial bias" : "");
    printf("head       %s, %d classes, %d channels\n", head_type_name(c->head.type), c->head.num_classes, c->head.channels);
    printf("input      3x%dx%d\n\n", o.h, o.w);
    printf("%-48s %-16s %-16s %10s %10s\n", "layer", "input", "output", "params", "MACs");
    double params = 0;
    for (int i = 0; i < m->ctx.n_log; i++) {
        const layer_record *r = &m->ctx.log[i];
        char in[32], out[32], p[16], mac[16];
        layer_shapes(r, in, out);
        human(r->params, p, sizeof p), human(r->macs, mac, sizeof mac);
        printf("%-48s %-16s %-16s %10s %10s\n", r->name, in, out, p, mac);
        params += r->params;
    }
    char p[16], mac[16];
    human(params, p, sizeof p), human(m->ctx.macs_total, mac, sizeof mac);
    printf("\ntotal      %s parameters (BN folded), %s MACs, %.1f MiB activation arena\n\n", p, mac,
           (double)m->ctx.ar.high / 1048576.0);
    printf("tensors read (name dtype shape):\n%s", m->used ? m->used : "");
    sa_model_free(m);
    return 0;
}

static int by_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

long peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}

static void module_line(const model_opts *o, const module_stats *st, const char *name) {
    double extra = (st->arena_bytes - st->input_bytes) / 1048576.0, gf = st->median_s > 0 ? 2 * st->macs / st->median_s / 1e9 : 0;
    if (o->json) {
        printf("{\"engine\": \"segattn\", \"module\": \"%s\", \"input\": [1, %d, %d, %d], \"threads\": %d, \"runs\": %d, "
               "\"params\": %.0f, \"macs\": %.0f, \"min_s\": %.4f, \"median_s\": %.4f, \"max_s\": %.4f, \"gflops\": %.1f, "
               "\"extra_mib\": %.2f, \"arena_mib\": %.2f}\n",
               name, o->in_c, o->in_h, o->in_w, st->threads, st->runs, st->params, st->macs, st->min_s, st->median_s,
               st->max_s, gf, extra, st->arena_bytes / 1048576.0);
        return;
    }
    char p[16], mac[16], t[16] = "-", g[16] = "-";
    human(st->params, p, sizeof p), human(st->macs, mac, sizeof mac);
    if (st->runs) snprintf(t, sizeof t, "%.4f", st->median_s), snprintf(g, sizeof g, "%.1f", gf);
    printf("%-13s %10s %10s %10s %9s %10.1f\n", name, p, mac, t, g, extra);
}

/* bench --module NAME / --all: bare context modules (module_bench.c). */
static int bench_modules(model_opts *o) {
    if (!o->runs_given) o->runs = 3;
    if (o->module) {
        int known = 0;
        for (int i = 0; i < N_MODULES; i++) known |= strcmp(o->module, MODULES[i].name) == 0;
        if (!known) {
            fprintf(stderr, "segattn: error: --module: unknown module '%s' (one of:", o->module);
            for (int i = 0; i < N_MODULES; i++) fprintf(stderr, " %s", MODULES[i].name);
            fprintf(stderr, ")\n");
            return SA_EXIT_USAGE;
        }
    }
    if (!o->json) {
        printf("input 1x%dx%dx%d, %d threads, %d timed runs after one warm-up (median); random weights\n", o->in_c,
               o->in_h, o->in_w, o->run.threads > 0 ? o->run.threads : omp_get_max_threads(), o->runs);
        printf("MACs: every layer as a direct computation (1x1 conv = C_in x C_out per pixel, attention = both\n"
               "matmuls); extra MiB: activation arena high-water mark minus the input map\n\n");
        printf("%-13s %10s %10s %10s %9s %10s\n", "module", "params", "MACs", "median s", "GFLOP/s", "extra MiB");
    }
    for (int i = 0; i < N_MODULES; i++) {
        const char *name = MODULES[i].name;
        if (o->module && strcmp(o->module, name) != 0) continue;
        module_stats st;
        sa_error err = {0};
        int code = module_bench(name, o->in_c, o->in_h, o->in_w, o->runs, o->run.threads, &st, &err);
        if (code) { report(&err); return code; }
        module_line(o, &st, name);
        fflush(stdout);
        if (o->profile && !o->json) {
            printf("  %s\n\n  %-44s %-16s %-16s %10s %10s %10s\n", MODULES[i].what, "layer", "input", "output", "params",
                   "MACs", "ms/run");
            for (int l = 0; l < st.n_log; l++) {
                const layer_record *r = &st.log[l];
                char in[32], out[32], p[16], mac[16];
                layer_shapes(r, in, out);
                human(r->params, p, sizeof p), human(r->macs, mac, sizeof mac);
                printf("  %-44s %-16s %-16s %10s %10s %10.2f\n", r->name, in, out, p, mac, 1e3 * r->seconds);
            }
            printf("\n");
        }
        module_stats_free(&st);
    }
    return 0;
}

/* One timed prediction on `threads` threads; minus the exit code after reporting an error. */
static double timed_predict(sa_model *m, const sa_image *img, int threads) {
    sa_run_opts ro = {.threads = threads};
    sa_labels lab;
    sa_error err = {0};
    double t0 = wall_seconds();
    int code = sa_predict(m, img, &ro, &lab, NULL, &err);
    double t = wall_seconds() - t0;
    if (code) {
        report(&err);
        return -code;
    }
    sa_labels_free(&lab);
    return t;
}

/* Each layer's time in the run just made, if faster than fastest[i] so far; then a clean log for the next.
 * Without layers (plain --profile) the log keeps summing over the runs. */
static void keep_fastest(sa_model *m, double *fastest, int layers) {
    if (!layers) return;
    for (int i = 0; i < layers && i < m->ctx.n_log; i++)
        if (m->ctx.log[i].seconds < fastest[i]) fastest[i] = m->ctx.log[i].seconds;
    for (int i = 0; i < m->ctx.n_log; i++) m->ctx.log[i].seconds = 0;
}

/* Whole predictions of a model (bench without --module / --all). */
int cmd_bench(int argc, char **argv) {
    model_opts o;
    int code = parse_model_opts(argc, argv, &o, BENCH_HELP);
    if (code) return code < 0 ? 0 : code;
    if (o.module || o.all) return bench_modules(&o);
    sa_model *m = open_model(&o);
    if (!m) return SA_EXIT_MODEL;
    m->ctx.want_log = o.profile;
    sa_image img = {o.w, o.h, malloc((size_t)o.w * o.h * 3)};
    unsigned seed = 7;
    for (size_t i = 0; img.rgb && i < (size_t)o.w * o.h * 3; i++) seed = seed * 1664525u + 1013904223u, img.rgb[i] = (uint8_t)(seed >> 24);
    int threads = o.run.threads > 0 ? o.run.threads : omp_get_max_threads();
    /* With --min-time the run count is open-ended, up to the cap that -r has. */
    int cap = o.min_time > 0 ? RUNS_MAX : o.runs, runs = 0;
    double *t = malloc(3 * (size_t)cap * sizeof *t), *t1 = t + cap, *pair = t1 + cap; /* t1: the --scaling runs on 1 thread */
    if (!img.rgb || !t) { fprintf(stderr, "segattn: error: out of memory\n"); return SA_EXIT_INTERNAL; }
    /* Warm-ups (each plans the arena for its thread count). With --scaling the 1-thread runs alternate with
     * the others, so that a neighbour's load on a shared machine falls on both alike. */
    double w = timed_predict(m, &img, threads), spent = 0;
    if (w >= 0 && o.scaling) w = timed_predict(m, &img, 1);
    if (w < 0) return (int)-w;
    for (int i = 0; i < m->ctx.n_log; i++) m->ctx.log[i].seconds = 0;
    /* --scaling --profile: each layer's fastest run on -t threads ([0]) and on 1 ([1]). Every switch of
     * thread count replans and so restarts the log, which then holds that one run. */
    int layers = o.profile && o.scaling ? m->ctx.n_log : 0;
    double *fastest = layers ? malloc(2 * (size_t)layers * sizeof *fastest) : NULL;
    if (layers && !fastest) { fprintf(stderr, "segattn: error: out of memory\n"); return SA_EXIT_INTERNAL; }
    for (int i = 0; i < 2 * layers; i++) fastest[i] = INFINITY;
    for (; runs < cap && (runs < o.runs || spent < o.min_time); runs++) {
        if ((t[runs] = timed_predict(m, &img, threads)) < 0) return (int)-t[runs];
        keep_fastest(m, fastest, layers);
        spent += t[runs];
        if (!o.scaling) continue;
        if ((t1[runs] = timed_predict(m, &img, 1)) < 0) return (int)-t1[runs];
        keep_fastest(m, fastest + layers, layers);
        spent += t1[runs];
        pair[runs] = t1[runs] / t[runs];
    }
    qsort(t, (size_t)runs, sizeof *t, by_double);
    if (o.scaling) qsort(t1, (size_t)runs, sizeof *t1, by_double), qsort(pair, (size_t)runs, sizeof *pair, by_double);
    double median = t[runs / 2], flops = 2 * m->ctx.macs_total;
    if (o.json) {
        printf("{\"engine\": \"segattn\", \"config\": \"%s\", \"hw\": [%d, %d], \"threads\": %d, \"runs\": %d, \"min_s\": %.4f, "
               "\"median_s\": %.4f, \"max_s\": %.4f, \"gflop\": %.2f, \"gflops\": %.1f, \"peak_rss_mb\": %ld",
               o.model.config, o.h, o.w, threads, runs, t[0], median, t[runs - 1], flops / 1e9, flops / median / 1e9,
               peak_rss_kib() / 1024);
        if (o.scaling) {
            printf(", \"one_thread\": {\"min_s\": %.4f, \"median_s\": %.4f, \"max_s\": %.4f}, \"scaling\": %.3f, "
                   "\"scaling_pairs_median\": %.3f, \"scaling_pairs\": [",
                   t1[0], t1[runs / 2], t1[runs - 1], t1[0] / t[0], pair[runs / 2]);
            /* Every pair's speed-up, sorted: scripts/bench.sh pools the pairs of several such processes. */
            for (int i = 0; i < runs; i++) printf("%s%.3f", i ? ", " : "", pair[i]);
            printf("]");
        }
        printf("}\n");
    } else {
        printf("%s at %dx%d, %d runs on %d thread(s): min %.4f s, median %.4f s, max %.4f s; %.1f GFLOP, %.1f GFLOP/s; "
               "peak RSS %ld MiB\n",
               o.model.config, o.h, o.w, runs, threads, t[0], median, t[runs - 1], flops / 1e9, flops / median / 1e9,
               peak_rss_kib() / 1024);
        if (o.scaling)
            printf("on 1 thread, alternating: min %.4f s, median %.4f s, max %.4f s; 1 -> %d threads: %.2fx min over min, "
                   "%.2fx median of the pairs\n",
                   t1[0], t1[runs / 2], t1[runs - 1], threads, t1[0] / t[0], pair[runs / 2]);
    }
    if (layers) {
        printf("\n%-48s %10s %10s %8s %-16s %-16s\n", "layer (fastest run of each)", "ms 1 thr", "ms -t", "speed-up",
               "input", "output");
        double sum1 = 0, sumt = 0;
        for (int i = 0; i < layers; i++) {
            const layer_record *r = &m->ctx.log[i];
            char in[32], out[32];
            double ft = fastest[i], f1 = fastest[layers + i];
            sumt += ft, sum1 += f1;
            layer_shapes(r, in, out);
            printf("%-48s %10.3f %10.3f %7.2fx %-16s %-16s\n", r->name, 1e3 * f1, 1e3 * ft, ft > 0 ? f1 / ft : 0, in, out);
        }
        printf("%-48s %10.3f %10.3f %7.2fx\n", "sum over layers", 1e3 * sum1, 1e3 * sumt, sumt > 0 ? sum1 / sumt : 0);
    } else if (o.profile) {
        printf("\n%-48s %10s %-16s %-16s %9s\n", "layer", "ms/run", "input", "output", "GFLOP/s");
        for (int i = 0; i < m->ctx.n_log; i++) {
            const layer_record *r = &m->ctx.log[i];
            char in[32], out[32];
            double s = r->seconds / runs;
            layer_shapes(r, in, out);
            printf("%-48s %10.3f %-16s %-16s %9.1f\n", r->name, 1e3 * s, in, out, s > 0 ? 2 * r->macs / s / 1e9 : 0);
        }
    }
    free(t), free(fastest), free(img.rgb);
    sa_model_free(m);
    return 0;
}
