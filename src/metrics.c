/* Confusion matrix, IoU / Acc tables, and their JSON files. */
#include "metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CONFUSION_FORMAT "segattn-confusion-1"
#define MAX_CONFUSION_BYTES (64u << 20)

int confusion_init(sa_confusion *c, int k, const char *const *names, const char *dataset, sa_error *err) {
    memset(c, 0, sizeof *c);
    if (k < 1 || k > SA_MAX_CLASSES) return sa_fail(err, SA_EXIT_INPUT, "confusion matrix: %d classes (1 .. %d)", k, SA_MAX_CLASSES);
    c->k = k;
    c->m = calloc((size_t)k * k, sizeof *c->m);
    c->pred_other = calloc((size_t)k, sizeof *c->pred_other);
    c->names = calloc((size_t)k, sizeof *c->names);
    int bad = !c->m || !c->pred_other || !c->names;
    for (int i = 0; i < k && !bad; i++) {
        char fallback[16];
        snprintf(fallback, sizeof fallback, "%d", i);
        bad = !(c->names[i] = strdup(names && names[i] ? names[i] : fallback));
    }
    if (!bad && dataset) bad = !(c->dataset = strdup(dataset));
    if (bad) {
        confusion_free(c);
        return sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
    }
    return SA_OK;
}

void confusion_free(sa_confusion *c) {
    if (c->names)
        for (int i = 0; i < c->k; i++) free(c->names[i]);
    free(c->names);
    free(c->m);
    free(c->pred_other);
    free(c->dataset);
    memset(c, 0, sizeof *c);
}

void confusion_add(sa_confusion *c, const uint8_t *gt, const uint8_t *pred, size_t n, int ignore_index) {
    const int k = c->k;
    for (size_t i = 0; i < n; i++) {
        int g = gt[i], p = pred[i];
        if (g == ignore_index || p >= k) continue;
        if (g >= k) c->pred_other[p]++;
        else c->m[(size_t)g * k + p]++;
    }
    c->images++;
}

int confusion_merge(sa_confusion *into, const sa_confusion *from, const char *where, sa_error *err) {
    if (into->k != from->k)
        return sa_fail(err, SA_EXIT_INPUT, "%s: %d classes, the others have %d", where, from->k, into->k);
    for (int i = 0; i < into->k; i++)
        if (strcmp(into->names[i], from->names[i]) != 0)
            return sa_fail(err, SA_EXIT_INPUT, "%s: class %d is '%s', the others have '%s'", where, i, from->names[i],
                           into->names[i]);
    if ((into->dataset || from->dataset) &&
        (!into->dataset || !from->dataset || strcmp(into->dataset, from->dataset) != 0))
        return sa_fail(err, SA_EXIT_INPUT, "%s: dataset '%s', the others have '%s'", where,
                       from->dataset ? from->dataset : "", into->dataset ? into->dataset : "");
    for (size_t i = 0; i < (size_t)into->k * into->k; i++) into->m[i] += from->m[i];
    for (int i = 0; i < into->k; i++) into->pred_other[i] += from->pred_other[i];
    into->images += from->images;
    return SA_OK;
}

int confusion_save(const sa_confusion *c, const char *path, sa_error *err) {
    atomic_out o;
    int code = atomic_open(&o, path, err);
    if (code) return code;
    FILE *f = o.f;
    fprintf(f, "{\"format\": \"%s\", \"dataset\": ", CONFUSION_FORMAT);
    json_write_string(f, c->dataset ? c->dataset : "");
    fprintf(f, ", \"num_classes\": %d, \"images\": %lld, \"shard\": [%d, %d],\n \"classes\": [", c->k,
            (long long)c->images, c->shard_k, c->shard_n);
    for (int i = 0; i < c->k; i++) {
        if (i) fputs(", ", f);
        json_write_string(f, c->names[i]);
    }
    fputs("],\n \"matrix\": [", f);
    for (int r = 0; r < c->k; r++) {
        fputs(r ? ",\n  [" : "\n  [", f);
        for (int q = 0; q < c->k; q++) fprintf(f, "%s%llu", q ? ", " : "", (unsigned long long)c->m[(size_t)r * c->k + q]);
        fputc(']', f);
    }
    fputs("],\n \"pred_other\": [", f);
    for (int q = 0; q < c->k; q++) fprintf(f, "%s%llu", q ? ", " : "", (unsigned long long)c->pred_other[q]);
    fputs("]}\n", f);
    return atomic_commit(&o, err);
}

/* A JSON number that is a whole count a double holds exactly. */
static int get_count(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

static int get_counts(const cJSON *arr, int k, uint64_t *out) {
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != k) return 0;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) if (!get_count(e, &out[i++])) return 0;
    return 1;
}

int confusion_parse(sa_confusion *c, const char *text, size_t len, const char *where, sa_error *err) {
    memset(c, 0, sizeof *c);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return sa_fail(err, SA_EXIT_INPUT, "%s: not valid JSON", where);
    int code = SA_OK;
    const char **names = NULL;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *jk = cJSON_GetObjectItemCaseSensitive(root, "num_classes");
    const cJSON *jc = cJSON_GetObjectItemCaseSensitive(root, "classes");
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(root, "dataset");
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(root, "matrix");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(root, "pred_other");
    const cJSON *ji = cJSON_GetObjectItemCaseSensitive(root, "images");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(root, "shard");
    uint64_t k64 = 0, images = 0, sk = 0, sn = 0;
    if (!cJSON_IsObject(root) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, CONFUSION_FORMAT) != 0)
        code = sa_fail(err, SA_EXIT_INPUT, "%s: format: not a segattn confusion matrix (\"%s\")", where, CONFUSION_FORMAT);
    else if (!get_count(jk, &k64) || k64 < 1 || k64 > SA_MAX_CLASSES)
        code = sa_fail(err, SA_EXIT_INPUT, "%s: num_classes: must be a count in [1, %d]", where, SA_MAX_CLASSES);
    else if (!cJSON_IsArray(jc) || cJSON_GetArraySize(jc) != (int)k64)
        code = sa_fail(err, SA_EXIT_INPUT, "%s: classes: must list num_classes names", where);
    else if (jd && !cJSON_IsString(jd))
        code = sa_fail(err, SA_EXIT_INPUT, "%s: dataset: must be a string", where);
    else if (!get_count(ji, &images) || images > INT64_MAX)
        code = sa_fail(err, SA_EXIT_INPUT, "%s: images: must be a count", where);
    else if (js && (!cJSON_IsArray(js) || cJSON_GetArraySize(js) != 2 || !get_count(js->child, &sk) ||
                    !get_count(js->child->next, &sn) || sn > 1000000 || sk > sn || (sn && !sk)))
        code = sa_fail(err, SA_EXIT_INPUT, "%s: shard: must be [k, n] with 1 <= k <= n, or [0, 0]", where);
    else if (!cJSON_IsArray(jm) || cJSON_GetArraySize(jm) != (int)k64)
        code = sa_fail(err, SA_EXIT_INPUT, "%s: matrix: must have num_classes rows", where);
    if (!code) {
        int k = (int)k64, i = 0;
        names = calloc((size_t)k, sizeof *names);
        if (!names) code = sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
        const cJSON *e;
        cJSON_ArrayForEach(e, jc) {
            if (code) break;
            if (!cJSON_IsString(e)) code = sa_fail(err, SA_EXIT_INPUT, "%s: classes[%d]: must be a string", where, i);
            else names[i++] = e->valuestring;
        }
        if (!code) code = confusion_init(c, k, names, jd && jd->valuestring[0] ? jd->valuestring : NULL, err);
        i = 0;
        cJSON_ArrayForEach(e, jm) {
            if (code) break;
            if (!get_counts(e, k, c->m + (size_t)i * k))
                code = sa_fail(err, SA_EXIT_INPUT, "%s: matrix[%d]: must be %d counts", where, i, k);
            i++;
        }
        if (!code && jo && !get_counts(jo, k, c->pred_other))
            code = sa_fail(err, SA_EXIT_INPUT, "%s: pred_other: must be %d counts", where, k);
        c->images = (int64_t)images;
        c->shard_k = (int)sk, c->shard_n = (int)sn;
    }
    free(names);
    cJSON_Delete(root);
    if (code) confusion_free(c);
    return code;
}

int confusion_load(sa_confusion *c, const char *path, sa_error *err) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) return sa_fail(err, SA_EXIT_INPUT, "%s: cannot open: %s", path, strerror(errno));
    char *text = malloc(MAX_CONFUSION_BYTES + 1);
    if (!text) {
        fclose(f);
        return sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
    }
    size_t len = fread(text, 1, MAX_CONFUSION_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    int code;
    if (bad) code = sa_fail(err, SA_EXIT_INPUT, "%s: read error", path);
    else if (len > MAX_CONFUSION_BYTES) code = sa_fail(err, SA_EXIT_INPUT, "%s: larger than 64 MiB", path);
    else code = confusion_parse(c, text, len, path, err);
    free(text);
    return code;
}

int metrics_compute(const sa_confusion *c, sa_metrics *mt, sa_error *err) {
    memset(mt, 0, sizeof *mt);
    const int k = c->k;
    mt->k = k;
    mt->iou = malloc((size_t)k * sizeof *mt->iou);
    mt->acc = malloc((size_t)k * sizeof *mt->acc);
    mt->area_label = malloc((size_t)k * sizeof *mt->area_label);
    if (!mt->iou || !mt->acc || !mt->area_label) {
        metrics_free(mt);
        return sa_fail(err, SA_EXIT_INTERNAL, "out of memory");
    }
    uint64_t sum_i = 0, sum_l = 0;
    double s_iou = 0, s_acc = 0;
    for (int q = 0; q < k; q++) {
        uint64_t inter = c->m[(size_t)q * k + q], label = 0, pred = c->pred_other[q];
        for (int r = 0; r < k; r++) label += c->m[(size_t)q * k + r], pred += c->m[(size_t)r * k + q];
        uint64_t uni = pred + label - inter;
        mt->area_label[q] = label;
        mt->iou[q] = uni ? (double)inter / (double)uni : NAN;
        mt->acc[q] = label ? (double)inter / (double)label : NAN;
        if (uni) s_iou += mt->iou[q], mt->n_iou++;
        if (label) s_acc += mt->acc[q], mt->n_acc++;
        sum_i += inter, sum_l += label;
    }
    mt->aacc = sum_l ? (double)sum_i / (double)sum_l : NAN;
    mt->miou = mt->n_iou ? s_iou / mt->n_iou : NAN;
    mt->macc = mt->n_acc ? s_acc / mt->n_acc : NAN;
    return SA_OK;
}

void metrics_free(sa_metrics *mt) {
    free(mt->iou);
    free(mt->acc);
    free(mt->area_label);
    memset(mt, 0, sizeof *mt);
}

/* A percentage with two decimals as mmseg rounds it (np.round(x * 100, 2)), or null. */
static void json_pct(FILE *f, double v) {
    if (isnan(v)) fputs("null", f);
    else fprintf(f, "%.2f", round(v * 10000.0) / 100.0);
}

static void json_frac(FILE *f, double v) {
    if (isnan(v)) fputs("null", f);
    else fprintf(f, "%.17g", v);
}

int metrics_save(const char *path, const sa_confusion *c, const sa_metrics *mt, const char *config, sa_error *err) {
    atomic_out o;
    int code = atomic_open(&o, path, err);
    if (code) return code;
    FILE *f = o.f;
    fputs("{\"dataset\": ", f);
    json_write_string(f, c->dataset ? c->dataset : "");
    if (config) {
        fputs(", \"config\": ", f);
        json_write_string(f, config);
    }
    fprintf(f, ", \"images\": %lld,\n \"aAcc\": ", (long long)c->images);
    json_pct(f, mt->aacc);
    fputs(", \"mIoU\": ", f);
    json_pct(f, mt->miou);
    fputs(", \"mAcc\": ", f);
    json_pct(f, mt->macc);
    fputs(",\n \"fractions\": {\"aAcc\": ", f);
    json_frac(f, mt->aacc);
    fputs(", \"mIoU\": ", f);
    json_frac(f, mt->miou);
    fputs(", \"mAcc\": ", f);
    json_frac(f, mt->macc);
    fputs("},\n \"classes\": [", f);
    for (int q = 0; q < mt->k; q++) {
        fputs(q ? ",\n  {\"name\": " : "\n  {\"name\": ", f);
        json_write_string(f, c->names[q]);
        fputs(", \"IoU\": ", f);
        json_pct(f, mt->iou[q]);
        fputs(", \"Acc\": ", f);
        json_pct(f, mt->acc[q]);
        fprintf(f, ", \"pixels\": %llu}", (unsigned long long)mt->area_label[q]);
    }
    fputs("]}\n", f);
    return atomic_commit(&o, err);
}
