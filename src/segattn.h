/* segattn — attention-based semantic segmentation on the CPU, with the numbers of mmsegmentation.
 *
 * The whole life of a prediction, in the order the program does it:
 *
 *   sa_error err = {0};
 *   sa_model *m = sa_model_load("configs/camvid_r18-d8_ccnet.json", NULL, 0, &err);  // JSON + safetensors
 *   sa_image img;   sa_image_load("examples/0016E5_07959.jpg", 0, &img, &err);        // RGB bytes (0: default size cap)
 *   sa_labels lab;  sa_predict(m, &img, &(sa_run_opts){.threads = 2}, &lab, NULL, &err); // network + argmax
 *   sa_labels_write_png("out.png", &lab, m, SA_OUT_COLOR, &img, 0.5f, &err);           // palette PNG
 *   sa_labels_free(&lab); sa_image_free(&img); sa_model_free(m);
 *
 * Every call that can fail returns 0 on success or one of the SA_EXIT_* codes, and fills `err` with one
 * located line ("file: tensor or field: what is wrong"). Nothing in the library prints or exits. */
#ifndef SEGATTN_H
#define SEGATTN_H
#include <stddef.h>
#include <stdint.h>

/* Exit codes, shared by the library's return values and the command line. */
enum {
    SA_OK = 0,
    SA_EXIT_USAGE = 2,    /* bad command line */
    SA_EXIT_INPUT = 3,    /* image or list unreadable, undecodable, too large */
    SA_EXIT_MODEL = 4,    /* config or weights invalid */
    SA_EXIT_OUTPUT = 5,   /* output could not be written */
    SA_EXIT_INTERNAL = 6, /* out of memory or a bug */
};

typedef struct {
    int code;
    char msg[1024];
} sa_error;

int sa_fail(sa_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

typedef struct sa_model sa_model;

typedef struct {
    int w, h;      /* pixels */
    uint8_t *rgb;  /* h * w * 3, row-major */
} sa_image;

typedef struct {
    int w, h;
    uint8_t *id;   /* h * w class ids */
} sa_labels;

/* Head logits before resizing, [1, K, h, w] as mmseg's decode head returns them. */
typedef struct {
    int k, h, w;
    float *data;
} sa_logits;

#define SA_MAX_TTA 16

/* Inference mode (sa_run_opts.mode). */
enum { SA_MODE_CONFIG = 0, SA_MODE_WHOLE, SA_MODE_SLIDE };

typedef struct {
    int threads;          /* 0: all cores */
    int64_t max_pixels;   /* refuse larger images; 0: default SA_DEFAULT_MAX_PIXELS */
    /* How the network sees the image, as mmseg's test pipeline and test_cfg (SPEC §11-12). All zero: the
     * config's test_cfg (whole image unless it says slide), no resize, no augmentation. */
    int mode;             /* SA_MODE_CONFIG (the config's test_cfg), SA_MODE_WHOLE or SA_MODE_SLIDE */
    int crop[2];          /* slide window (h, w); 0: the config's crop_size */
    int stride[2];        /* slide stride (h, w); 0: the config's stride */
    int scale[2];         /* test scale: keep-ratio resize into a (long, short) box, in either order; 0: none */
    int n_ratios;         /* test-time augmentation: image scale ratios (0: none, or {1} when flip is set) */
    double ratios[SA_MAX_TTA];
    int flip;             /* test-time augmentation: also run each scale flipped left-right */
} sa_run_opts;

#define SA_DEFAULT_MAX_PIXELS (64LL * 1024 * 1024)

enum { SA_OUT_COLOR, SA_OUT_INDEX, SA_OUT_OVERLAY, SA_OUT_CITYSCAPES_ID };

/* Load: `config` is a model JSON; weight files come from `weights` or, when n_weights is 0, from the
 * JSON's "weights" list (paths relative to the JSON file). */
sa_model *sa_model_load(const char *config, const char *const *weights, int n_weights, sa_error *err);
/* The same architecture with deterministic random weights: for timing and shape reports only. */
sa_model *sa_model_load_random(const char *config, sa_error *err);
void sa_model_free(sa_model *m);
/* Tensors in the weight files that the model did not use (other than auxiliary_head.* and
 * num_batches_tracked), comma-separated; NULL when none. Owned by the model. */
const char *sa_model_unused_tensors(const sa_model *m);
/* "FILE: TENSOR: N of M values are NaN or infinite" for the first weight tensor holding any (and how many
 * other tensors do); NULL when all are finite. Owned by the model. */
const char *sa_model_nonfinite_weights(const sa_model *m);
int sa_model_num_classes(const sa_model *m);
const char *sa_model_class_name(const sa_model *m, int k);
const uint8_t *sa_model_palette(const sa_model *m, int k);

int sa_image_load(const char *path, int64_t max_pixels, sa_image *img, sa_error *err);
void sa_image_free(sa_image *img);

/* Run: the network on one image, then bilinear resize of the logits to the image and argmax.
 * `logits` may be NULL; when given it receives the head output (caller frees with sa_logits_free). */
int sa_predict(sa_model *m, const sa_image *img, const sa_run_opts *opts, sa_labels *out,
               sa_logits *logits, sa_error *err);
/* With a test scale, slide mode or augmentation, `logits` receives instead: the logits at the network's
 * input size (slide: the sum / count average of the windows) without augmentation, or the averaged
 * class probabilities [1, K, H, W] at the image size with augmentation. */
void sa_labels_free(sa_labels *l);
void sa_logits_free(sa_logits *l);

/* Write: the label map as a PNG, written to a temporary name and renamed, so a failed write leaves
 * nothing behind. `img` and `opacity` are used by SA_OUT_OVERLAY only. */
int sa_labels_write_png(const char *path, const sa_labels *lab, const sa_model *m, int kind,
                        const sa_image *img, float opacity, sa_error *err);
int sa_logits_write(const char *path, const sa_logits *l, sa_error *err);

/* The default palette used when a config has none: Pascal VOC's bit-interleaved colour map. */
void sa_default_color(int k, uint8_t rgb[3]);

#endif
