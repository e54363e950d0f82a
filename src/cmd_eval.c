/* segattn eval: score a model on a dataset split (mmseg's IoU metric), or merge saved confusion matrices. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_options.h"
#include "datasets.h"
#include "metrics.h"
#include "tensor.h"

static const char *HELP =
    "usage: segattn eval [-c MODEL.json] --dataset camvid|cityscapes|voc --root DIR [options]\n"
    "       segattn eval --merge A.json B.json ... [--json OUT] [--save-confusion OUT]\n"
    "\n"
    "Runs the model over a dataset split, accumulates one confusion matrix over all of it and prints\n"
    "per-class IoU and Acc, then aAcc, mIoU and mAcc (classes with no pixels in the ground truth nor the\n"
    "prediction are left out of the means, as mmseg does).\n"
    "\n"
    "  -c, --config FILE     model JSON (default: configs/camvid_r18-d8_ccnet.json beside the program)\n"
    "  -w, --weights FILE    safetensors weights; repeat for several files (default: the config's list)\n"
    "  -d, --dataset NAME    camvid      ROOT/images/*.jpg, ROOT/labels/<stem>.png (11 = void, ignored)\n"
    "                        cityscapes  ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png with\n"
    "                                    ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png (19 trainIds)\n"
    "                        voc         ROOT/JPEGImages/<id>.jpg, ROOT/SegmentationClass/<id>.png (palette\n"
    "                                    indices, 255 ignored), ids from ROOT/ImageSets/Segmentation/val.txt\n"
    "  -r, --root DIR        the dataset directory\n"
    "      --split NAME|FILE cityscapes: split directory (default val); voc: ImageSets/Segmentation/NAME.txt\n"
    "                        (default val); any dataset: a file listing the images (camvid: stems; voc: ids;\n"
    "                        cityscapes: paths relative to leftImg8bit/)\n"
    "      --limit N         only the first N images of the split\n"
    "      --shard K/N       only images i with i mod N = K-1 (after --limit); merge the parts with --merge\n"
    "      --json FILE       write the metrics as JSON\n"
    "      --save-confusion FILE  write the raw confusion matrix as JSON (input of --merge)\n"
    "      --merge           sum the confusion matrices given as arguments and print their metrics\n"
    "  -t, --threads N       threads (default: all cores)\n"
    "      --max-pixels N    refuse larger images (default 67108864)\n"
    "%s"
    "  -q, --quiet           no progress output\n"
    "  -h, --help            this help\n"
    "\n"
    "Results go to stdout, progress and errors to stderr. An image that cannot be read is reported and\n"
    "skipped; the metrics of the others are still printed, and the exit status is then 3.\n"
    "Exit status: 0 success, 2 usage, 3 input, 4 model, 5 output, 6 internal, 130 interrupted.\n";

enum { OPT_LIMIT = 256, OPT_SHARD, OPT_JSON, OPT_SAVE, OPT_MERGE, OPT_MAX_PIXELS, OPT_SPLIT };

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { (void)sig; interrupted = 1; }

static void pct(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "nan");
    else snprintf(buf, n, "%.2f", round(v * 10000.0) / 100.0);
}

/* mmseg's two tables: per class, then the summary. */
static void print_table(const sa_confusion *c, const sa_metrics *mt) {
    int wn = 5;
    for (int q = 0; q < c->k; q++)
        if ((int)strlen(c->names[q]) > wn) wn = (int)strlen(c->names[q]);
    char line[400];
    int n = snprintf(line, sizeof line, "+-%.*s-+--------+--------+", wn,
                     "----------------------------------------------------------------------------------------------");
    (void)n;
    printf("per class results (%s, %lld images):\n%s\n| %-*s |  IoU   |  Acc   |\n%s\n", c->dataset ? c->dataset : "?",
           (long long)c->images, line, wn, "Class", line);
    for (int q = 0; q < c->k; q++) {
        char a[32], b[32];
        pct(a, sizeof a, mt->iou[q]);
        pct(b, sizeof b, mt->acc[q]);
        printf("| %-*s | %6s | %6s |\n", wn, c->names[q], a, b);
    }
    char a[32], b[32], d[32];
    pct(a, sizeof a, mt->aacc), pct(b, sizeof b, mt->miou), pct(d, sizeof d, mt->macc);
    printf("%s\nSummary:\n+--------+--------+--------+\n|  aAcc  |  mIoU  |  mAcc  |\n+--------+--------+--------+\n"
           "| %6s | %6s | %6s |\n+--------+--------+--------+\n",
           line, a, b, d);
    printf("aAcc: %s  mIoU: %s  mAcc: %s  (%d of %d classes in mIoU)\n", a, b, d, mt->n_iou, c->k);
}

static int finish(const sa_confusion *c, const char *json_path, const char *save_path, const char *config, int quiet) {
    sa_error err = {0};
    sa_metrics mt;
    int code = metrics_compute(c, &mt, &err);
    if (code) { report(&err); return code; }
    print_table(c, &mt);
    fflush(stdout);
    if (json_path && (code = metrics_save(json_path, c, &mt, config, &err))) report(&err);
    if (!code && save_path && (code = confusion_save(c, save_path, &err))) report(&err);
    if (!code && !quiet && json_path) fprintf(stderr, "segattn: metrics written to %s\n", json_path);
    if (!code && !quiet && save_path) fprintf(stderr, "segattn: confusion matrix written to %s\n", save_path);
    metrics_free(&mt);
    return code;
}

static int merge(int n, char **files, const char *json_path, const char *save_path, int quiet) {
    sa_error err = {0};
    sa_confusion total = {0}, part;
    int code = SA_OK, shard_n = -1;
    char *seen = NULL;
    for (int i = 0; i < n && !code; i++) {
        if ((code = confusion_load(&part, files[i], &err))) { report(&err); break; }
        /* shards: each K/N at most once, all with the same N */
        int k = part.shard_k, nn = part.shard_n;
        if (i == 0) {
            total = part;
            memset(&part, 0, sizeof part);
            total.shard_k = total.shard_n = 0;
        } else if ((code = confusion_merge(&total, &part, files[i], &err))) {
            report(&err);
        }
        if (!code && nn > 0) {
            if (shard_n < 0) {
                shard_n = nn;
                seen = calloc((size_t)nn + 1, 1);
                if (!seen) { fprintf(stderr, "segattn: error: out of memory\n"); code = SA_EXIT_INTERNAL; }
            }
            if (!code && nn != shard_n) {
                fprintf(stderr, "segattn: error: %s: shard %d/%d, the others are parts of %d\n", files[i], k, nn, shard_n);
                code = SA_EXIT_INPUT;
            } else if (!code && seen[k]) {
                fprintf(stderr, "segattn: error: %s: shard %d/%d is given twice\n", files[i], k, nn);
                code = SA_EXIT_INPUT;
            } else if (!code) {
                seen[k] = 1;
            }
        } else if (!code && shard_n > 0) {
            fprintf(stderr, "segattn: error: %s: a whole split, the others are shards of %d\n", files[i], shard_n);
            code = SA_EXIT_INPUT;
        }
        if (i) confusion_free(&part);
    }
    if (!code && shard_n > 0) {
        int missing = 0;
        for (int k = 1; k <= shard_n; k++) missing += !seen[k];
        if (missing)
            fprintf(stderr, "segattn: warning: %d of %d shards missing: the metrics cover part of the split\n", missing, shard_n);
    }
    if (!code) code = finish(&total, json_path, save_path, NULL, quiet);
    free(seen);
    confusion_free(&total);
    return code;
}

int cmd_eval(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, 0, 'c'},     {"weights", required_argument, 0, 'w'},
        {"dataset", required_argument, 0, 'd'},    {"root", required_argument, 0, 'r'},
        {"split", required_argument, 0, OPT_SPLIT}, {"limit", required_argument, 0, OPT_LIMIT},
        {"shard", required_argument, 0, OPT_SHARD}, {"json", required_argument, 0, OPT_JSON},
        {"save-confusion", required_argument, 0, OPT_SAVE}, {"merge", no_argument, 0, OPT_MERGE},
        {"threads", required_argument, 0, 't'},    {"max-pixels", required_argument, 0, OPT_MAX_PIXELS},
        {"quiet", no_argument, 0, 'q'},            {"help", no_argument, 0, 'h'},
        INFER_LONGOPTS,                            {0, 0, 0, 0}};
    const char *dataset = NULL, *root = NULL, *split = NULL, *json_path = NULL, *save_path = NULL;
    model_args ma = {0};
    int quiet = 0, do_merge = 0, shard_k = 1, shard_n = 1, sharded = 0;
    long limit = -1;
    sa_run_opts ro = {0};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:w:d:r:t:qh", longopts, NULL)) != -1) {
        char *end;
        int taken = parse_infer_option(opt, optarg, &ro);
        if (!taken) taken = parse_model_option(opt, optarg, &ma, &ro);
        if (taken < 0) return SA_EXIT_USAGE;
        if (taken) continue;
        switch (opt) {
        case 'd': dataset = optarg; break;
        case 'r': root = optarg; break;
        case OPT_SPLIT: split = optarg; break;
        case OPT_LIMIT:
            limit = strtol(optarg, &end, 10);
            if (*end || limit < 1) {
                fprintf(stderr, "segattn: error: --limit: '%s' is not a positive count\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case OPT_SHARD:
            if (!parse_shard(optarg, &shard_k, &shard_n)) {
                fprintf(stderr, "segattn: error: --shard: '%s' is not K/N with 1 <= K <= N\n", optarg);
                return SA_EXIT_USAGE;
            }
            sharded = 1;
            break;
        case OPT_JSON: json_path = optarg; break;
        case OPT_SAVE: save_path = optarg; break;
        case OPT_MERGE: do_merge = 1; break;
        case OPT_MAX_PIXELS:
            ro.max_pixels = strtoll(optarg, &end, 10);
            if (*end || ro.max_pixels < 1) {
                fprintf(stderr, "segattn: error: --max-pixels: '%s' is not a positive count\n", optarg);
                return SA_EXIT_USAGE;
            }
            break;
        case 'q': quiet = 1; break;
        case 'h': printf(HELP, INFER_HELP); return 0;
        default: fprintf(stderr, HELP, INFER_HELP); return SA_EXIT_USAGE;
        }
    }
    if (do_merge) {
        if (optind >= argc) {
            fprintf(stderr, "segattn: error: --merge needs the confusion files to sum\n");
            return SA_EXIT_USAGE;
        }
        if (dataset || root || ma.config) {
            fprintf(stderr, "segattn: error: --merge takes confusion files only (no --dataset, --root or -c)\n");
            return SA_EXIT_USAGE;
        }
        return merge(argc - optind, argv + optind, json_path, save_path, quiet);
    }
    if (optind < argc) {
        fprintf(stderr, "segattn: error: unexpected argument '%s' (eval reads its images from --root)\n", argv[optind]);
        return SA_EXIT_USAGE;
    }
    int kind = dataset ? dataset_kind(dataset) : -1;
    if (kind < 0 || !root) {
        fprintf(stderr, "segattn: error: eval needs --dataset camvid|cityscapes|voc and --root DIR%s\n",
                dataset && kind < 0 ? " (unknown dataset name)" : "");
        return SA_EXIT_USAGE;
    }
    sa_error err = {0};
    sa_dataset ds;
    if (dataset_open(&ds, kind, root, split, &err)) { report(&err); return err.code; }
    int total = ds.images.n;
    if (limit > 0 && limit < total) total = (int)limit;
    int *items = malloc((size_t)total * sizeof *items), n = 0;
    if (!items) { fprintf(stderr, "segattn: error: out of memory\n"); dataset_free(&ds); return SA_EXIT_INTERNAL; }
    for (int i = 0; i < total; i++)
        if (i % shard_n == shard_k - 1) items[n++] = i;

    if (!ma.config) ma.config = default_config_path();
    const char *config = ma.config;
    sa_model *m = sa_model_load(config, ma.weights, ma.n_weights, &err);
    if (!m) { report(&err); free(items); dataset_free(&ds); return err.code; }
    warn_unused(config, m);
    int K = sa_model_num_classes(m);
    if (K != ds.k && !quiet)
        fprintf(stderr, "segattn: warning: the model has %d classes, %s has %d%s\n", K, ds.name, ds.k,
                K > ds.k ? " (predictions of the others are not counted)" : "");
    sa_confusion conf;
    if (confusion_init(&conf, ds.k, ds.classes, ds.name, &err)) {
        report(&err);
        sa_model_free(m), free(items), dataset_free(&ds);
        return err.code;
    }
    if (sharded) conf.shard_k = shard_k, conf.shard_n = shard_n;

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int tty = isatty(2), failed = 0, fatal = 0, done = 0;
    double t_start = wall_seconds();
    for (int j = 0; j < n && !interrupted && !fatal; j++) {
        int i = items[j];
        const char *in = ds.images.path[i];
        sa_image img = {0};
        sa_labels gt = {0}, pred = {0};
        double t0 = wall_seconds();
        int code = dataset_load_label(&ds, i, ro.max_pixels, &gt, &err);
        if (!code) code = sa_image_load(in, ro.max_pixels, &img, &err);
        if (!code && (img.w != gt.w || img.h != gt.h))
            code = sa_fail(&err, SA_EXIT_INPUT, "%s: %dx%d image, but its label map %s is %dx%d", in, img.w, img.h,
                           ds.labels.path[i], gt.w, gt.h);
        if (!code) code = sa_predict(m, &img, &ro, &pred, NULL, &err);
        if (!code) confusion_add(&conf, gt.id, pred.id, (size_t)gt.w * gt.h, SA_LABEL_IGNORE);
        sa_labels_free(&gt), sa_labels_free(&pred), sa_image_free(&img);
        if (code) {
            report(&err);
            if (code == SA_EXIT_INPUT) failed++;
            else fatal = code;
        } else {
            done++;
        }
        if (!quiet) {
            if (tty) progress_tty(j + 1, n, done, wall_seconds() - t_start);
            else if (!code) fprintf(stderr, "[%d/%d] %s (%.2f s)\n", j + 1, n, in, wall_seconds() - t0);
        }
    }
    if (!quiet && tty) fputc('\n', stderr);
    int code = fatal;
    if (!code && interrupted) {
        fprintf(stderr, "segattn: interrupted after %d of %d images; no metrics\n", done + failed, n);
        code = 130;
    }
    if (!code) {
        if (failed) fprintf(stderr, "segattn: %d of %d images failed; the metrics cover the other %d\n", failed, n, done);
        code = finish(&conf, json_path, save_path, config, quiet);
        if (!code && failed) code = SA_EXIT_INPUT;
    }
    confusion_free(&conf);
    sa_model_free(m);
    free(items);
    dataset_free(&ds);
    return code;
}
