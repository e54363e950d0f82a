/* segattn predict: images, folders and lists through one model, with resumable output. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_options.h"
#include "inputs.h"
#include "tensor.h"
#include "util.h"

static const char *HELP =
    "usage: segattn predict [options] IMAGE|DIR|@LIST [...]\n"
    "\n"
    "Segments each image and writes a PNG. A DIR adds its images (sorted by name); @LIST adds one path per line.\n"
    "\n"
    "  -c, --config FILE     model JSON (default: configs/camvid_r18-d8_ccnet.json beside the program)\n"
    "  -w, --weights FILE    safetensors weights; repeat for models in several files\n"
    "                        (default: the \"weights\" list of the config)\n"
    "  -o, --output PATH     output file for one image; otherwise a directory, created if missing, that\n"
    "                        receives <stem>.png per input (default: <stem>_seg.png in the current directory)\n"
    "  -f, --format KIND     color (default), index (8-bit class ids), overlay (colours blended over the\n"
    "                        image), cityscapes-id (trainId mapped to Cityscapes labelId)\n"
    "      --opacity A       overlay opacity in [0, 1] (default 0.5)\n"
    "      --logits FILE     also write the decode head's logits [1, K, h, w] as F32 safetensors\n"
    "                        (one image only)\n"
    "  -t, --threads N       threads (default: all cores)\n"
    "      --force           overwrite outputs that already exist (default: skip them, so a run resumes)\n"
    "      --max-pixels N    refuse images with more pixels (default 67108864)\n"
    "      --shard K/N       process only inputs i with i mod N = K-1 (1 <= K <= N)\n"
    "      --json FILE       write per-image timings and class pixel fractions as JSON\n"
    "%s"
    "  -q, --quiet           no progress output\n"
    "  -h, --help            this help\n"
    "\n"
    "Exit status: 0 when every image was written or skipped, 3 when any input failed (the others are still\n"
    "written), 2 usage, 4 model, 5 output, 6 internal, 130 interrupted (run again to resume).\n";

const char *const INFER_HELP =
    "inference (defaults: the config's test_cfg, else the whole image at its own size):\n"
    "      --mode whole|slide  one pass over the whole image, or overlapping windows averaged\n"
    "      --crop H,W        slide window (default: the config's test_cfg crop_size)\n"
    "      --stride H,W      slide stride (default: the config's test_cfg stride)\n"
    "      --scale L,S       resize (keeping the aspect ratio) into a long x short box first, as mmseg's\n"
    "                        test Resize (e.g. 2048,1024 for Cityscapes, 2048,512 for VOC); logits are\n"
    "                        resized back to the image (default: the config's \"test_scale\"; 'none' to skip)\n"
    "      --tta scales=R,R,...  test-time augmentation: run at each ratio of the image (or of --scale)\n"
    "                        and average the softmax (e.g. scales=0.5,0.75,1,1.25,1.5,1.75)\n"
    "      --flip            test-time augmentation: also run each scale mirrored\n";

static int parse_pair(const char *s, int *a, int *b) {
    char tail;
    if (sscanf(s, "%d,%d%c", a, b, &tail) == 2 || sscanf(s, "%dx%d%c", a, b, &tail) == 2) return *a >= 1 && *b >= 1 && *a <= 65536 && *b <= 65536;
    if (sscanf(s, "%d%c", a, &tail) == 1) return *b = *a, *a >= 1 && *a <= 65536;
    return 0;
}

int parse_infer_option(int opt, const char *arg, sa_run_opts *ro) {
    switch (opt) {
    case OPT_MODE:
        if (strcmp(arg, "whole") == 0) ro->mode = SA_MODE_WHOLE;
        else if (strcmp(arg, "slide") == 0) ro->mode = SA_MODE_SLIDE;
        else {
            fprintf(stderr, "segattn: error: --mode: '%s' is not whole or slide\n", arg);
            return -1;
        }
        return 1;
    case OPT_CROP:
    case OPT_STRIDE:
    case OPT_SCALE: {
        int *dst = opt == OPT_CROP ? ro->crop : opt == OPT_STRIDE ? ro->stride : ro->scale;
        if (opt == OPT_SCALE && strcmp(arg, "none") == 0) { /* overrides a config's test_scale */
            ro->scale[0] = ro->scale[1] = -1;
            return 1;
        }
        if (!parse_pair(arg, &dst[0], &dst[1])) {
            fprintf(stderr, "segattn: error: --%s: '%s' is not H,W (or N) with sides in [1, 65536]\n",
                    opt == OPT_CROP ? "crop" : opt == OPT_STRIDE ? "stride" : "scale", arg);
            return -1;
        }
        return 1;
    }
    case OPT_TTA: {
        const char *p = strncmp(arg, "scales=", 7) == 0 ? arg + 7 : arg;
        ro->n_ratios = 0;
        while (*p) {
            char *end;
            double r = strtod(p, &end);
            if (end == p || !(r > 0 && r <= 16) || ro->n_ratios == SA_MAX_TTA || (*end && *end != ',')) {
                fprintf(stderr, "segattn: error: --tta: '%s' is not scales=R,R,... (at most %d ratios in (0, 16])\n",
                        arg, SA_MAX_TTA);
                return -1;
            }
            ro->ratios[ro->n_ratios++] = r;
            p = *end ? end + 1 : end;
        }
        if (!ro->n_ratios) {
            fprintf(stderr, "segattn: error: --tta: no ratios in '%s'\n", arg);
            return -1;
        }
        return 1;
    }
    case OPT_FLIP: ro->flip = 1; return 1;
    default: return 0;
    }
}

void progress_tty(int i, int n, int done, double elapsed) {
    double rate = done && elapsed > 0 ? done / elapsed : 0;
    int left = n - i, width = 24, fill = n ? (int)((long)width * i / n) : width;
    char bar[32];
    for (int b = 0; b < width; b++) bar[b] = b < fill ? '#' : '.';
    bar[width] = 0;
    if (rate > 0) fprintf(stderr, "\r[%s] %d/%d  %.2f img/s  ETA %ds   ", bar, i, n, rate, (int)(left / rate + 0.5));
    else fprintf(stderr, "\r[%s] %d/%d   ", bar, i, n);
}

enum { OPT_LOGITS = 256, OPT_FORCE, OPT_MAX_PIXELS, OPT_SHARD, OPT_JSON, OPT_OPACITY };

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

static int parse_format(const char *s) {
    if (strcmp(s, "color") == 0 || strcmp(s, "colour") == 0) return SA_OUT_COLOR;
    if (strcmp(s, "index") == 0) return SA_OUT_INDEX;
    if (strcmp(s, "overlay") == 0) return SA_OUT_OVERLAY;
    if (strcmp(s, "cityscapes-id") == 0) return SA_OUT_CITYSCAPES_ID;
    return -1;
}

int parse_model_option(int opt, const char *arg, model_args *ma, sa_run_opts *ro) {
    switch (opt) {
    case 'c': ma->config = arg; return 1;
    case 'w':
        if (ma->n_weights == 16) {
            fprintf(stderr, "segattn: error: at most 16 -w files\n");
            return -1;
        }
        ma->weights[ma->n_weights++] = arg;
        return 1;
    case 't':
        if (!parse_threads(arg, &ro->threads)) {
            fprintf(stderr, "segattn: error: --threads: '%s' is not a count in [1, 1024]\n", arg);
            return -1;
        }
        return 1;
    default: return 0;
    }
}

int parse_shard(const char *s, int *k, int *n) {
    char tail;
    return sscanf(s, "%d/%d%c", k, n, &tail) == 2 && *n >= 1 && *k >= 1 && *k <= *n;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *output_path(const char *input, const char *out, int out_is_dir) {
    char *stem = path_stem(input), *path;
    if (!stem) return NULL;
    if (out && !out_is_dir) {
        path = strdup(out);
    } else {
        size_t n = strlen(stem) + (out ? strlen(out) : 0) + 16;
        path = malloc(n);
        if (path) {
            if (out) snprintf(path, n, "%s%s%s.png", out, out[strlen(out) - 1] == '/' ? "" : "/", stem);
            else snprintf(path, n, "%s_seg.png", stem);
        }
    }
    free(stem);
    return path;
}

int cmd_predict(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'},   {"weights", required_argument, 0, 'w'},
        {"output", required_argument, 0, 'o'},   {"format", required_argument, 0, 'f'},
        {"threads", required_argument, 0, 't'},  {"logits", required_argument, 0, OPT_LOGITS},
        {"force", no_argument, 0, OPT_FORCE},    {"max-pixels", required_argument, 0, OPT_MAX_PIXELS},
        {"shard", required_argument, 0, OPT_SHARD}, {"json", required_argument, 0, OPT_JSON},
        {"opacity", required_argument, 0, OPT_OPACITY}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},           INFER_LONGOPTS, {0, 0, 0, 0}};
    const char *out = NULL, *logits_path = NULL, *json_path = NULL;
    model_args ma = {0};
    int format = SA_OUT_COLOR, quiet = 0, force = 0, shard_k = 1, shard_n = 1;
    float opacity = 0.5f;
    sa_run_opts ro = {0};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:w:o:f:t:qh", longopts, NULL)) != -1) {
        char *end;
        int taken = parse_infer_option(opt, optarg, &ro);
        if (!taken) taken = parse_model_option(opt, optarg, &ma, &ro);
        if (taken < 0) return SA_EXIT_USAGE;
        if (taken) continue;
        switch (opt) {
        case 'o': out = optarg; break;
        case 'f':
            if ((format = parse_format(optarg)) < 0) {
                fprintf(stderr, "segattn: error: --format: '%s' is not color, index, overlay or cityscapes-id\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case OPT_LOGITS: logits_path = optarg; break;
        case OPT_FORCE: force = 1; break;
        case OPT_MAX_PIXELS:
            ro.max_pixels = strtoll(optarg, &end, 10);
            if (*end || ro.max_pixels < 1) {
                fprintf(stderr, "segattn: error: --max-pixels: '%s' is not a positive count\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case OPT_SHARD:
            if (!parse_shard(optarg, &shard_k, &shard_n)) {
                fprintf(stderr, "segattn: error: --shard: '%s' is not K/N with 1 <= K <= N\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case OPT_JSON: json_path = optarg; break;
        case OPT_OPACITY:
            opacity = strtof(optarg, &end);
            if (*end || !(opacity >= 0 && opacity <= 1)) {
                fprintf(stderr, "segattn: error: --opacity: '%s' is not in [0, 1]\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case 'q': quiet = 1; break;
        case 'h': printf(HELP, INFER_HELP); return 0;
        default: fprintf(stderr, HELP, INFER_HELP); return SA_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "segattn: error: predict needs at least one IMAGE, DIR or @LIST\n");
        return SA_EXIT_USAGE;
    }
    sa_error err = {0};
    path_list all = {0}, inputs = {0};
    for (int i = optind; i < argc; i++)
        if (paths_expand(&all, argv[i], &err)) { report(&err); paths_free(&all); return err.code; }
    for (int i = 0; i < all.n; i++)
        if (i % shard_n == shard_k - 1 && paths_add(&inputs, all.path[i])) {
            fprintf(stderr, "segattn: error: out of memory\n");
            return SA_EXIT_INTERNAL;
        }
    int single = all.n == 1 && argv[optind][0] != '@' && !is_dir(argv[optind]);
    paths_free(&all);
    if (logits_path && inputs.n != 1) {
        fprintf(stderr, "segattn: error: --logits needs exactly one input image\n");
        paths_free(&inputs);
        return SA_EXIT_USAGE;
    }
    int out_is_dir = out && (!single || is_dir(out));
    if (out_is_dir && !is_dir(out) && mkdir(out, 0777) != 0) {
        fprintf(stderr, "segattn: error: %s: cannot create output directory: %s\n", out, strerror(errno));
        paths_free(&inputs);
        return SA_EXIT_OUTPUT;
    }
    if (!ma.config) ma.config = default_config_path();
    const char *config = ma.config;
    sa_model *m = sa_model_load(config, ma.weights, ma.n_weights, &err);
    if (!m) { report(&err); paths_free(&inputs); return err.code; }
    warn_unused(config, m);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int tty = isatty(2), failed = 0, fatal = 0, done = 0, skipped = 0, K = sa_model_num_classes(m);
    double t_start = wall_seconds();
    FILE *json = NULL;
    atomic_out json_out = {0};
    if (json_path) {
        if (atomic_open(&json_out, json_path, &err)) {
            report(&err);
            sa_model_free(m), paths_free(&inputs);
            return err.code;
        }
        json = json_out.f;
        fprintf(json, "{\"config\": ");
        json_write_string(json, config);
        fprintf(json, ", \"images\": [");
    }
    double *fractions = calloc((size_t)K, sizeof *fractions);
    for (int i = 0; i < inputs.n && !interrupted && !fatal; i++) {
        const char *in = inputs.path[i];
        char *dst = output_path(in, out, out_is_dir);
        if (!dst) { fatal = SA_EXIT_INTERNAL; break; }
        if (!force && access(dst, F_OK) == 0) {
            skipped++;
            if (!quiet && !tty) fprintf(stderr, "[%d/%d] %s: %s exists, skipped\n", i + 1, inputs.n, in, dst);
            free(dst);
            continue;
        }
        sa_image img;
        sa_labels lab = {0};
        sa_logits lg = {0};
        double t0 = wall_seconds();
        int code = sa_image_load(in, ro.max_pixels, &img, &err);
        if (!code) {
            code = sa_predict(m, &img, &ro, &lab, logits_path ? &lg : NULL, &err);
            double t_net = wall_seconds() - t0;
            if (!code && logits_path) code = sa_logits_write(logits_path, &lg, &err);
            if (!code) code = sa_labels_write_png(dst, &lab, m, format, &img, opacity, &err);
            if (!code && json) {
                size_t n = (size_t)lab.w * lab.h;
                memset(fractions, 0, (size_t)K * sizeof *fractions);
                for (size_t p = 0; p < n; p++) fractions[lab.id[p]] += 1.0 / (double)n;
                fprintf(json, "%s\n  {\"input\": ", done ? "," : "");
                json_write_string(json, in);
                fprintf(json, ", \"output\": ");
                json_write_string(json, dst);
                fprintf(json, ", \"width\": %d, \"height\": %d, \"seconds\": %.4f, \"class_fractions\": {", lab.w, lab.h, t_net);
                for (int k = 0; k < K; k++) {
                    const char *name = sa_model_class_name(m, k);
                    char fallback[16];
                    snprintf(fallback, sizeof fallback, "%d", k);
                    fprintf(json, "%s", k ? ", " : "");
                    json_write_string(json, name ? name : fallback);
                    fprintf(json, ": %.6f", fractions[k]);
                }
                fprintf(json, "}}");
            }
            sa_labels_free(&lab), sa_logits_free(&lg), sa_image_free(&img);
        }
        if (code) {
            report(&err);
            if (code == SA_EXIT_INPUT) failed++;
            else fatal = code; /* a model, output or memory failure would repeat on every image */
        } else {
            done++;
        }
        if (!quiet) {
            if (tty) {
                progress_tty(i + 1, inputs.n, done, wall_seconds() - t_start);
            } else if (!code) {
                fprintf(stderr, "[%d/%d] %s -> %s (%.2f s)\n", i + 1, inputs.n, in, dst, wall_seconds() - t0);
            }
        }
        free(dst);
    }
    if (!quiet && tty) fputc('\n', stderr);
    free(fractions);
    if (json) {
        fprintf(json, "\n]}\n");
        if (atomic_commit(&json_out, &err)) {
            report(&err);
            if (!fatal) fatal = err.code;
        }
    }
    if (!quiet && (skipped || failed || inputs.n > 1))
        fprintf(stderr, "segattn: %d written, %d skipped (already there), %d failed%s\n", done, skipped, failed,
                interrupted ? ", interrupted" : "");
    sa_model_free(m);
    paths_free(&inputs);
    if (fatal) return fatal;
    if (interrupted) return 130;
    return failed ? SA_EXIT_INPUT : 0;
}
