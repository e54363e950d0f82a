/* Evaluation datasets on disk: which images, which label maps, and how label values become class ids
 * (255 = ignored). Layouts as mmseg reads them (SPEC §13). */
#ifndef SA_DATASETS_H
#define SA_DATASETS_H
#include "inputs.h"
#include "segattn.h"

enum { SA_DATASET_CAMVID, SA_DATASET_CITYSCAPES, SA_DATASET_VOC };

#define SA_LABEL_IGNORE 255

typedef struct {
    int kind;
    const char *name;              /* "camvid", "cityscapes", "voc" */
    int k;                         /* classes */
    const char *const *classes;    /* k names */
    path_list images, labels;      /* image i is scored against label i */
} sa_dataset;

/* "camvid" | "cityscapes" | "voc" → SA_DATASET_*, or -1. */
int dataset_kind(const char *name);
/* Lists a split under root:
 *   camvid      images/ (*.jpg, *.png) with labels/<stem>.png (ids 0-10, 11 = void → ignored). split: NULL for
 *               every image, or a file of image stems (or file names), one per line.
 *   cityscapes  leftImg8bit/<split>/<city>/X_leftImg8bit.png with gtFine/<split>/<city>/X_gtFine_labelIds.png
 *               (labelIds → the 19 trainIds, others ignored; X_gtFine_labelTrainIds.png is read as is when
 *               the labelIds file is missing). split: a split name (default "val"), or a file of image paths
 *               relative to leftImg8bit/ (the "_leftImg8bit.png" suffix may be left out).
 *   voc         JPEGImages/<id>.jpg with SegmentationClass/<id>.png (palette indices, 255 ignored). split: a
 *               file of ids, or a name under ImageSets/Segmentation/ (default "val"). */
int dataset_open(sa_dataset *d, int kind, const char *root, const char *split, sa_error *err);
void dataset_free(sa_dataset *d);
/* Label map i as class ids (SA_LABEL_IGNORE where ignored). */
int dataset_load_label(const sa_dataset *d, int i, int64_t max_pixels, sa_labels *gt, sa_error *err);
/* Maps one raw label value of the dataset's files to a class id. */
uint8_t dataset_map_label(int kind, uint8_t raw);

#endif
