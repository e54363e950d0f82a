/* Segmentation metrics as mmseg's IoUMetric computes them (SPEC §13), from one confusion matrix
 * accumulated over a whole split, and that matrix saved to and merged from JSON files. */
#ifndef SA_METRICS_H
#define SA_METRICS_H
#include <stddef.h>
#include <stdint.h>

#include "segattn.h"

#define SA_MAX_CLASSES 256

typedef struct {
    int k;
    uint64_t *m;          /* k × k, row = ground-truth class, column = predicted class */
    uint64_t *pred_other; /* k: predictions at pixels whose label is outside [0, k-1] and not ignored
                           * (mmseg counts them in the prediction histogram only) */
    char **names;         /* k class names */
    char *dataset;        /* free text carried through save / merge ("camvid", …); may be NULL */
    int64_t images;       /* images accumulated */
    int shard_k, shard_n; /* which shard this matrix covers (0/0: all of it) */
} sa_confusion;

int confusion_init(sa_confusion *c, int k, const char *const *names, const char *dataset, sa_error *err);
void confusion_free(sa_confusion *c);
/* One image: pixels with gt == ignore_index are skipped; gt outside [0, k-1] counts only in pred_other;
 * predictions outside [0, k-1] are not counted (mmseg's histograms stop at k-1). */
void confusion_add(sa_confusion *c, const uint8_t *gt, const uint8_t *pred, size_t n, int ignore_index);
/* into += from; both must have the same classes and dataset. */
int confusion_merge(sa_confusion *into, const sa_confusion *from, const char *where, sa_error *err);

/* {"format": "segattn-confusion-1", "dataset", "num_classes", "classes", "images", "shard": [k, n],
 *  "matrix": [[…] × k] (rows ground truth), "pred_other": […]}; written atomically. */
int confusion_save(const sa_confusion *c, const char *path, sa_error *err);
int confusion_load(sa_confusion *c, const char *path, sa_error *err);
/* The same from text in memory (`where` names it in errors); for the fuzz target and tests. */
int confusion_parse(sa_confusion *c, const char *text, size_t len, const char *where, sa_error *err);

typedef struct {
    int k;
    double *iou, *acc;        /* per class, fractions; NaN where the class has no union / no label */
    uint64_t *area_label;     /* per class L_c (ground-truth pixels) */
    double aacc, miou, macc;  /* fractions; NaN-excluding means */
    int n_iou, n_acc;         /* classes in each mean */
} sa_metrics;

int metrics_compute(const sa_confusion *c, sa_metrics *out, sa_error *err);
void metrics_free(sa_metrics *mt);
/* Metrics as JSON (percentages, two decimals as mmseg prints, plus the exact fractions); atomically.
 * `config` may be NULL. */
int metrics_save(const char *path, const sa_confusion *c, const sa_metrics *mt, const char *config, sa_error *err);

#endif
