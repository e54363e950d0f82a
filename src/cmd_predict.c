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
    "  -q, --quiet           no progress output\n"
    "  -h, --help            this help\n"
    "\n"
    "Exit status: 0 when every image was written or skipped, 3 when any input failed (the others are still\n"
    "written), 2 usage, 4 model, 5 output, 6 internal.\n";

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
            if (out) snprintf(path, n, "%s/%s.png", out, stem);
            else snprintf(path, n, "%s_seg.png", stem);
        }
    }
    free(stem);
    return path;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

int cmd_predict(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'},   {"weights", required_argument, 0, 'w'},
        {"output", required_argument, 0, 'o'},   {"format", required_argument, 0, 'f'},
        {"threads", required_argument, 0, 't'},  {"logits", required_argument, 0, OPT_LOGITS},
        {"force", no_argument, 0, OPT_FORCE},    {"max-pixels", required_argument, 0, OPT_MAX_PIXELS},
        {"shard", required_argument, 0, OPT_SHARD}, {"json", required_argument, 0, OPT_JSON},
        {"opacity", required_argument, 0, OPT_OPACITY}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    const char *config = NULL, *out = NULL, *logits_path = NULL, *json_path = NULL;
    const char *weights[16];
    int n_weights = 0, format = SA_OUT_COLOR, quiet = 0, force = 0, shard_k = 1, shard_n = 1;
    float opacity = 0.5f;
    sa_run_opts ro = {0};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:w:o:f:t:qh", longopts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'c': config = optarg; break;
        case 'w':
            if (n_weights == 16) { fprintf(stderr, "segattn: error: at most 16 -w files\n"); return SA_EXIT_USAGE; }
            weights[n_weights++] = optarg;
            break;
        case 'o': out = optarg; break;
        case 'f':
            if ((format = parse_format(optarg)) < 0) {
                fprintf(stderr, "segattn: error: --format: '%s' is not color, index, overlay or cityscapes-id\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case 't':
            if (!parse_threads(optarg, &ro.threads)) {
                fprintf(stderr, "segattn: error: --threads: '%s' is not a count in [1, 1024]\n", optarg);
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
        case 'h': fputs(HELP, stdout); return 0;
        default: fputs(HELP, stderr); return SA_EXIT_USAGE;
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
    if (!config) config = default_config_path();
    sa_model *m = sa_model_load(config, weights, n_weights, &err);
    if (!m) { report(&err); paths_free(&inputs); return err.code; }
    warn_unused(config, m);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int tty = isatty(2), failed = 0, fatal = 0, done = 0, skipped = 0, K = sa_model_num_classes(m);
    double t_start = wall_seconds();
    FILE *json = NULL;
    char *json_tmp = NULL;
    if (json_path) {
        json_tmp = malloc(strlen(json_path) + 16);
        sprintf(json_tmp, "%s.tmp", json_path);
        json = fopen(json_tmp, "w");
        if (!json) {
            fprintf(stderr, "segattn: error: %s: cannot write: %s\n", json_path, strerror(errno));
            sa_model_free(m), paths_free(&inputs), free(json_tmp);
            return SA_EXIT_OUTPUT;
        }
        fprintf(json, "{\"config\": ");
        json_string(json, config);
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
                json_string(json, in);
                fprintf(json, ", \"output\": ");
                json_string(json, dst);
                fprintf(json, ", \"width\": %d, \"height\": %d, \"seconds\": %.4f, \"class_fractions\": {", lab.w, lab.h, t_net);
                for (int k = 0; k < K; k++) {
                    const char *name = sa_model_class_name(m, k);
                    char fallback[16];
                    snprintf(fallback, sizeof fallback, "%d", k);
                    fprintf(json, "%s", k ? ", " : "");
                    json_string(json, name ? name : fallback);
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
            double el = wall_seconds() - t_start, rate = done ? done / el : 0;
            int left = inputs.n - i - 1;
            if (tty) {
                fprintf(stderr, "\r[%d/%d] %.2f img/s  ETA %ds   ", i + 1, inputs.n, rate,
                        rate > 0 ? (int)(left / rate) : 0);
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
        int bad = ferror(json) | (fclose(json) != 0);
        if (bad || rename(json_tmp, json_path) != 0) {
            fprintf(stderr, "segattn: error: %s: cannot write: %s\n", json_path, strerror(errno));
            remove(json_tmp);
            if (!fatal) fatal = SA_EXIT_OUTPUT;
        }
    }
    free(json_tmp);
    if (!quiet && (skipped || failed || inputs.n > 1))
        fprintf(stderr, "segattn: %d written, %d skipped (already there), %d failed%s\n", done, skipped, failed,
                interrupted ? ", interrupted" : "");
    sa_model_free(m);
    paths_free(&inputs);
    if (fatal) return fatal;
    if (interrupted) return 130;
    return failed ? SA_EXIT_INPUT : 0;
}
