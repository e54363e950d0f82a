/* CamVid, Cityscapes and Pascal VOC 2012 layouts: image and label lists, and label decoding. */
#include "datasets.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "png_index.h"
#include "util.h"

static const char *const CAMVID[] = {"sky", "building", "pole", "road", "sidewalk", "tree",
                                     "sign", "fence", "car", "pedestrian", "bicyclist"};
static const char *const CITYSCAPES[] = {"road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                                         "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                                         "truck", "bus", "train", "motorcycle", "bicycle"};
static const char *const VOC[] = {"background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
                                  "car", "cat", "chair", "cow", "diningtable", "dog", "horse",
                                  "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"};
/* Cityscapes labelId → trainId (cityscapesScripts labels.py); 255 for every id not evaluated. */
static const uint8_t CS_LABEL_IDS[19] = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33};

int dataset_kind(const char *name) {
    if (strcmp(name, "camvid") == 0) return SA_DATASET_CAMVID;
    if (strcmp(name, "cityscapes") == 0) return SA_DATASET_CITYSCAPES;
    if (strcmp(name, "voc") == 0 || strcmp(name, "pascal_voc") == 0) return SA_DATASET_VOC;
    return -1;
}

uint8_t dataset_map_label(int kind, uint8_t raw) {
    switch (kind) {
    case SA_DATASET_CAMVID: return raw == 11 ? SA_LABEL_IGNORE : raw;
    case SA_DATASET_CITYSCAPES:
        for (int t = 0; t < 19; t++)
            if (CS_LABEL_IDS[t] == raw) return (uint8_t)t;
        return SA_LABEL_IGNORE;
    default: return raw;
    }
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static char *fmt(const char *f, const char *a, const char *b, const char *c) {
    size_t n = strlen(f) + strlen(a) + strlen(b) + strlen(c) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, f, a, b, c);
    return p;
}

static int add_pair(sa_dataset *d, char *img, char *lab, sa_error *err) {
    int code = img && lab ? paths_add(&d->images, img) : SA_EXIT_INTERNAL;
    if (!code && (code = paths_add(&d->labels, lab))) d->images.n--, free(d->images.path[d->images.n]);
    free(img), free(lab);
    return code ? sa_fail(err, SA_EXIT_INTERNAL, "out of memory") : SA_OK;
}

/* The non-empty lines of a split file. */
static int read_split(const char *file, path_list *lines, sa_error *err) {
    char *arg = fmt("@%s", file, "", "");
    if (!arg) return sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
    int code = paths_expand(lines, arg, err);
    free(arg);
    return code;
}

static int open_camvid(sa_dataset *d, const char *root, const char *split, sa_error *err) {
    char *img_dir = path_join(root, "images"), *lab_dir = path_join(root, "labels");
    path_list imgs = {0}, lines = {0};
    int code = img_dir && lab_dir ? SA_OK : sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
    if (!code && !is_dir(img_dir)) code = sa_fail(err, SA_EXIT_INPUT, "%s: no images/ directory (CamVid layout: images/ + labels/)", root);
    if (!code && split) {
        if (!(code = read_split(split, &lines, err))) {
            for (int i = 0; i < lines.n && !code; i++) {
                const char *l = lines.path[i];
                char *p = NULL;
                if (is_image_name(l)) p = fmt("%s/%s%s", img_dir, l, "");
                else {
                    static const char *ext[] = {".png", ".jpg", ".jpeg", ".bmp"};
                    for (int e = 0; e < 4 && !p; e++) {
                        char *q = fmt("%s/%s%s", img_dir, l, ext[e]);
                        if (q && is_file(q)) p = q;
                        else free(q);
                    }
                    if (!p) code = sa_fail(err, SA_EXIT_INPUT, "%s:%d: no image '%s' in %s", split, i + 1, l, img_dir);
                }
                if (!code) code = p ? paths_add(&imgs, p) : sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
                free(p);
            }
        }
    } else if (!code) {
        code = paths_expand(&imgs, img_dir, err);
    }
    for (int i = 0; i < imgs.n && !code; i++) {
        char *stem = path_stem(imgs.path[i]);
        code = stem ? add_pair(d, strdup(imgs.path[i]), fmt("%s/%s.png%s", lab_dir, stem, ""), err)
                    : sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
        free(stem);
    }
    paths_free(&imgs), paths_free(&lines);
    free(img_dir), free(lab_dir);
    return code;
}

static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every *_leftImg8bit.png one directory level below dir (the cities), sorted by path. */
static int list_cityscapes(const char *dir, path_list *out, sa_error *err) {
    DIR *d = opendir(dir);
    if (!d) return sa_fail(err, SA_EXIT_INPUT, "%s: cannot open directory: %s", dir, strerror(errno));
    int code = SA_OK;
    struct dirent *e;
    while (!code && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *city = path_join(dir, e->d_name);
        if (!city) { code = sa_fail(err, SA_EXIT_INTERNAL, "out of memory"); break; }
        DIR *c = is_dir(city) ? opendir(city) : NULL;
        struct dirent *f;
        while (c && !code && (f = readdir(c))) {
            if (f->d_name[0] == '.' || !has_suffix(f->d_name, "_leftImg8bit.png")) continue;
            char *p = path_join(city, f->d_name);
            if (!p || paths_add(out, p)) code = sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
            free(p);
        }
        if (c) closedir(c);
        free(city);
    }
    closedir(d);
    if (!code) qsort(out->path, (size_t)out->n, sizeof *out->path, by_string);
    return code;
}

static int open_cityscapes(sa_dataset *d, const char *root, const char *split, sa_error *err) {
    path_list rel = {0}; /* image paths relative to leftImg8bit/, without the suffix */
    int code = SA_OK;
    const size_t suffix = strlen("_leftImg8bit.png");
    if (split && is_file(split)) {
        code = read_split(split, &rel, err);
        for (int i = 0; i < rel.n && !code; i++)
            if (has_suffix(rel.path[i], "_leftImg8bit.png")) rel.path[i][strlen(rel.path[i]) - suffix] = 0;
    } else {
        char *dir = fmt("%s/leftImg8bit/%s%s", root, split ? split : "val", "");
        path_list found = {0};
        if (!dir) code = sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
        else if (!is_dir(dir)) code = sa_fail(err, SA_EXIT_INPUT, "%s: no such directory (Cityscapes layout: leftImg8bit/<split>/<city>/)", dir);
        else code = list_cityscapes(dir, &found, err);
        size_t skip = dir ? strlen(root) + strlen("/leftImg8bit/") : 0;
        for (int i = 0; i < found.n && !code; i++) {
            char *p = found.path[i] + skip;
            p[strlen(p) - suffix] = 0;
            if (paths_add(&rel, p)) code = sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
        }
        paths_free(&found);
        free(dir);
    }
    for (int i = 0; i < rel.n && !code; i++)
        code = add_pair(d, fmt("%s/leftImg8bit/%s_leftImg8bit.png", root, rel.path[i], ""),
                        fmt("%s/gtFine/%s_gtFine_labelIds.png", root, rel.path[i], ""), err);
    paths_free(&rel);
    return code;
}

static int open_voc(sa_dataset *d, const char *root, const char *split, sa_error *err) {
    char *file = split && is_file(split) ? strdup(split)
                                          : fmt("%s/ImageSets/Segmentation/%s.txt", root, split ? split : "val", "");
    path_list ids = {0};
    int code = file ? read_split(file, &ids, err) : sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
    for (int i = 0; i < ids.n && !code; i++) {
        if (strchr(ids.path[i], '/')) {
            code = sa_fail(err, SA_EXIT_INPUT, "%s:%d: '%s' is not an image id", file, i + 1, ids.path[i]);
            break;
        }
        code = add_pair(d, fmt("%s/JPEGImages/%s.jpg%s", root, ids.path[i], ""),
                        fmt("%s/SegmentationClass/%s.png%s", root, ids.path[i], ""), err);
    }
    paths_free(&ids);
    free(file);
    return code;
}

int dataset_open(sa_dataset *d, int kind, const char *root, const char *split, sa_error *err) {
    memset(d, 0, sizeof *d);
    d->kind = kind;
    int code;
    if (!is_dir(root)) return sa_fail(err, SA_EXIT_INPUT, "%s: dataset root is not a directory", root);
    switch (kind) {
    case SA_DATASET_CAMVID:
        d->name = "camvid", d->k = 11, d->classes = CAMVID;
        code = open_camvid(d, root, split, err);
        break;
    case SA_DATASET_CITYSCAPES:
        d->name = "cityscapes", d->k = 19, d->classes = CITYSCAPES;
        code = open_cityscapes(d, root, split, err);
        break;
    case SA_DATASET_VOC:
        d->name = "voc", d->k = 21, d->classes = VOC;
        code = open_voc(d, root, split, err);
        break;
    default: return sa_fail(err, SA_EXIT_USAGE, "unknown dataset kind %d", kind);
    }
    if (!code && d->images.n == 0) code = sa_fail(err, SA_EXIT_INPUT, "%s: the %s split has no images", root, d->name);
    if (code) dataset_free(d);
    return code;
}

void dataset_free(sa_dataset *d) {
    paths_free(&d->images);
    paths_free(&d->labels);
}

int dataset_load_label(const sa_dataset *d, int i, int64_t max_pixels, sa_labels *gt, sa_error *err) {
    memset(gt, 0, sizeof *gt);
    const char *path = d->labels.path[i];
    char *alt = NULL;
    int kind = d->kind;
    if (kind == SA_DATASET_CITYSCAPES && access(path, F_OK) != 0 && has_suffix(path, "_gtFine_labelIds.png")) {
        /* no labelIds: the trainIds file that cityscapesScripts makes (mmseg's own input) */
        size_t n = strlen(path) - strlen("labelIds.png");
        alt = malloc(n + strlen("labelTrainIds.png") + 1);
        if (!alt) return sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
        memcpy(alt, path, n);
        strcpy(alt + n, "labelTrainIds.png");
        if (access(alt, F_OK) == 0) path = alt, kind = -1;
    }
    int code = png_index_load(path, max_pixels, &gt->w, &gt->h, &gt->id, err);
    free(alt);
    if (code) return code;
    size_t n = (size_t)gt->w * gt->h;
    if (kind >= 0) {
        uint8_t map[256];
        for (int v = 0; v < 256; v++) map[v] = dataset_map_label(kind, (uint8_t)v);
        for (size_t p = 0; p < n; p++) gt->id[p] = map[gt->id[p]];
    }
    return SA_OK;
}
