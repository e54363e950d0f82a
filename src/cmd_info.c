/* segattn info and segattn bench: what a model is made of, and how fast it runs. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model.h"
#include "util.h"

static int parse_size(const char *s, int *h, int *w) {
    char tail;
    return sscanf(s, "%dx%d%c", h, w, &tail) == 2 && *h >= 1 && *w >= 1 && *h <= 16384 && *w <= 16384;
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
    "usage: segattn bench [-c MODEL.json] [--size HxW] [-r RUNS] [-t THREADS] [--profile] [--random-weights]\n"
    "\n"
    "Times whole predictions (network, resize and argmax) on a fixed pseudo-random image after one warm-up run,\n"
    "and prints min / median / max wall seconds, GFLOP/s (2 x direct-convolution MACs per second) and peak RSS.\n"
    "\n"
    "  -c, --config FILE     model JSON (default: the shipped CamVid CCNet model)\n"
    "  -w, --weights FILE    weights (default: the config's \"weights\" list)\n"
    "      --size HxW        input height x width (default 360x480)\n"
    "  -r, --runs N          timed runs (default 5)\n"
    "  -t, --threads N       threads (default: all cores)\n"
    "      --profile         one line per layer: time, shape in -> out, GFLOP/s\n"
    "      --random-weights  random weights instead of weight files\n"
    "      --json            one JSON line instead of the table\n"
    "  -h, --help            this help\n";

typedef struct {
    const char *config;
    const char *weights[16];
    int n_weights, h, w, runs, threads, profile, random, json;
} model_opts;

enum { OPT_SIZE = 300, OPT_PROFILE, OPT_RANDOM, OPT_JSON };

static int parse_model_opts(int argc, char **argv, model_opts *o, const char *help) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'}, {"weights", required_argument, 0, 'w'},
        {"size", required_argument, 0, OPT_SIZE}, {"runs", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'}, {"profile", no_argument, 0, OPT_PROFILE},
        {"random-weights", no_argument, 0, OPT_RANDOM}, {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->h = 360, o->w = 480, o->runs = 5;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:w:r:t:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': o->config = optarg; break;
        case 'w':
            if (o->n_weights == 16) { fprintf(stderr, "segattn: error: at most 16 -w files\n"); return SA_EXIT_USAGE; }
            o->weights[o->n_weights++] = optarg;
            break;
        case OPT_SIZE:
            if (!parse_size(optarg, &o->h, &o->w)) {
                fprintf(stderr, "segattn: error: --size: '%s' is not HxW\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case 'r':
            o->runs = atoi(optarg);
            if (o->runs < 1 || o->runs > 10000) {
                fprintf(stderr, "segattn: error: --runs: '%s' is not a count in [1, 10000]\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case 't':
            if (!parse_threads(optarg, &o->threads)) {
                fprintf(stderr, "segattn: error: --threads: '%s' is not a count in [1, 1024]\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case OPT_PROFILE: o->profile = 1; break;
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
    if (!o->config) o->config = default_config_path();
    return 0;
}

static sa_model *open_model(const model_opts *o) {
    sa_error err = {0};
    sa_model *m = o->random ? sa_model_load_random(o->config, &err) : sa_model_load(o->config, o->weights, o->n_weights, &err);
    if (!m) report(&err);
    else if (!o->random) warn_unused(o->config, m);
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
    printf("model      %s\n", o.config);
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
        snprintf(in, sizeof in, "%dx%dx%d", r->in_c, r->in_h, r->in_w);
        snprintf(out, sizeof out, "%dx%dx%d", r->out_c, r->out_h, r->out_w);
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

int cmd_bench(int argc, char **argv) {
    model_opts o;
    int code = parse_model_opts(argc, argv, &o, BENCH_HELP);
    if (code) return code < 0 ? 0 : code;
    sa_model *m = open_model(&o);
    if (!m) return SA_EXIT_MODEL;
    sa_error err = {0};
    m->ctx.want_log = o.profile;
    sa_image img = {o.w, o.h, malloc((size_t)o.w * o.h * 3)};
    unsigned seed = 7;
    for (size_t i = 0; img.rgb && i < (size_t)o.w * o.h * 3; i++) seed = seed * 1664525u + 1013904223u, img.rgb[i] = (uint8_t)(seed >> 24);
    sa_run_opts ro = {.threads = o.threads};
    sa_labels lab;
    double *t = malloc((size_t)o.runs * sizeof *t);
    if (!img.rgb || !t) { fprintf(stderr, "segattn: error: out of memory\n"); return SA_EXIT_INTERNAL; }
    if ((code = sa_predict(m, &img, &ro, &lab, NULL, &err))) { report(&err); return code; } /* warm-up, plans the arena */
    sa_labels_free(&lab);
    for (int i = 0; i < m->ctx.n_log; i++) m->ctx.log[i].seconds = 0;
    for (int r = 0; r < o.runs; r++) {
        double t0 = wall_seconds();
        if ((code = sa_predict(m, &img, &ro, &lab, NULL, &err))) { report(&err); return code; }
        t[r] = wall_seconds() - t0;
        sa_labels_free(&lab);
    }
    qsort(t, (size_t)o.runs, sizeof *t, by_double);
    double median = t[o.runs / 2], flops = 2 * m->ctx.macs_total;
    if (o.json) {
        printf("{\"engine\": \"segattn\", \"config\": \"%s\", \"hw\": [%d, %d], \"threads\": %d, \"min_s\": %.4f, "
               "\"median_s\": %.4f, \"max_s\": %.4f, \"gflop\": %.2f, \"gflops\": %.1f, \"peak_rss_mb\": %ld}\n",
               o.config, o.h, o.w, o.threads, t[0], median, t[o.runs - 1], flops / 1e9, flops / median / 1e9,
               peak_rss_kib() / 1024);
    } else {
        printf("%s at %dx%d, %d runs: min %.4f s, median %.4f s, max %.4f s; %.1f GFLOP, %.1f GFLOP/s; peak RSS %ld MiB\n",
               o.config, o.h, o.w, o.runs, t[0], median, t[o.runs - 1], flops / 1e9, flops / median / 1e9,
               peak_rss_kib() / 1024);
    }
    if (o.profile) {
        printf("\n%-48s %10s %-16s %-16s %9s\n", "layer", "ms/run", "input", "output", "GFLOP/s");
        for (int i = 0; i < m->ctx.n_log; i++) {
            const layer_record *r = &m->ctx.log[i];
            char in[32], out[32];
            double s = r->seconds / o.runs;
            snprintf(in, sizeof in, "%dx%dx%d", r->in_c, r->in_h, r->in_w);
            snprintf(out, sizeof out, "%dx%dx%d", r->out_c, r->out_h, r->out_w);
            printf("%-48s %10.3f %-16s %-16s %9.1f\n", r->name, 1e3 * s, in, out, s > 0 ? 2 * r->macs / s / 1e9 : 0);
        }
    }
    free(t), free(img.rgb);
    sa_model_free(m);
    return 0;
}
