/* Model JSON → model_cfg. Every field is type- and range-checked; an error names the file and field. */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_CONFIG_BYTES (16u << 20)

typedef struct {
    const char *path;
    sa_error *err;
} parser;

static const char *HEAD_NAMES[] = {"fcn", "ann", "ccnet", "isanet", "eanet", "nonlocal"};

const char *head_type_name(head_type t) { return HEAD_NAMES[t]; }

static int bad(parser *p, const char *field, const char *what) {
    return sa_fail(p->err, SA_EXIT_MODEL, "%s: %s: %s", p->path, field, what);
}

/* An integer field: absent → def (or an error when required), else a whole number in [lo, hi]. */
static int get_int(parser *p, const cJSON *obj, const char *field, const char *key, int required, int def, int lo,
                   int hi, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    char name[96];
    snprintf(name, sizeof name, "%s%s", field, key);
    if (!j) {
        if (required) return bad(p, name, "missing");
        *out = def;
        return SA_OK;
    }
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || j->valuedouble < lo || j->valuedouble > hi) {
        char what[96];
        snprintf(what, sizeof what, "must be a whole number in [%d, %d]", lo, hi);
        return bad(p, name, what);
    }
    *out = (int)j->valuedouble;
    return SA_OK;
}

static int get_bool(parser *p, const cJSON *obj, const char *field, const char *key, int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    char name[96];
    snprintf(name, sizeof name, "%s%s", field, key);
    if (!j) { *out = def; return SA_OK; }
    if (!cJSON_IsBool(j)) return bad(p, name, "must be true or false");
    *out = cJSON_IsTrue(j);
    return SA_OK;
}

/* An array of n_min..n_max whole numbers in [lo, hi]; a single number counts as an array of one when
 * `scalar_ok`. Absent: `def` (n_def values), or an error when def is NULL. */
static int get_ints(parser *p, const cJSON *obj, const char *field, const char *key, int scalar_ok, int n_min,
                    int n_max, int lo, int hi, const int *def, int n_def, int *out, int *n_out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    char name[96], what[128];
    snprintf(name, sizeof name, "%s%s", field, key);
    if (!j) {
        if (!def) return bad(p, name, "missing");
        memcpy(out, def, (size_t)n_def * sizeof *out);
        *n_out = n_def;
        return SA_OK;
    }
    snprintf(what, sizeof what, "must be %s%d to %d whole numbers in [%d, %d]", scalar_ok ? "a number or " : "", n_min,
             n_max, lo, hi);
    int n = 0;
    if (scalar_ok && cJSON_IsNumber(j)) {
        if (n_min > 1) return bad(p, name, what);
        if (j->valuedouble != floor(j->valuedouble) || j->valuedouble < lo || j->valuedouble > hi) return bad(p, name, what);
        out[n++] = (int)j->valuedouble;
    } else {
        if (!cJSON_IsArray(j)) return bad(p, name, what);
        int len = cJSON_GetArraySize(j);
        if (len < n_min || len > n_max) return bad(p, name, what);
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < lo || e->valuedouble > hi)
                return bad(p, name, what);
            out[n++] = (int)e->valuedouble;
        }
    }
    *n_out = n;
    return SA_OK;
}

static int get_floats3(parser *p, const cJSON *obj, const char *key, const float *def, float *out, int nonzero) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j) { memcpy(out, def, 3 * sizeof *out); return SA_OK; }
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != 3) return bad(p, key, "must be an array of 3 numbers");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || fabs(e->valuedouble) > 1e6 ||
            (nonzero && e->valuedouble == 0))
            return bad(p, key, nonzero ? "must hold 3 finite non-zero numbers" : "must hold 3 finite numbers");
        out[i++] = (float)e->valuedouble;
    }
    return SA_OK;
}

static int get_strings(parser *p, const cJSON *root, const char *key, int max, char ***out, int *n_out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL, *n_out = 0;
    if (!j) return SA_OK;
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) > max) return bad(p, key, "must be an array of strings");
    int n = cJSON_GetArraySize(j);
    char **s = calloc((size_t)n + 1, sizeof *s);
    if (!s) return sa_fail(p->err, SA_EXIT_INTERNAL, "%s: out of memory", p->path);
    *out = s;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        if (!cJSON_IsString(e)) return bad(p, key, "must be an array of strings");
        s[(*n_out)++] = strdup(e->valuestring);
    }
    return SA_OK;
}

static const int STAGE_CHANNELS_EXPANSION[] = {1, 4};

static int stage_out_channels(const backbone_cfg *b, int stage) {
    int expansion = STAGE_CHANNELS_EXPANSION[b->depth >= 50];
    return b->base_channels * (1 << stage) * expansion;
}

static int parse_backbone(parser *p, const cJSON *j, backbone_cfg *b) {
    if (!cJSON_IsObject(j)) return bad(p, "backbone", "missing or not an object");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "ResNetV1c") != 0)
        return bad(p, "backbone.type", "must be \"ResNetV1c\"");
    int code, n;
    static const int strides[4] = {1, 2, 1, 1}, dilations[4] = {1, 1, 2, 4};
    if ((code = get_int(p, j, "backbone.", "depth", 1, 0, 18, 152, &b->depth))) return code;
    if (b->depth != 18 && b->depth != 34 && b->depth != 50 && b->depth != 101 && b->depth != 152)
        return bad(p, "backbone.depth", "must be 18, 34, 50, 101 or 152");
    if ((code = get_int(p, j, "backbone.", "stem_channels", 0, 64, 2, 4096, &b->stem_channels))) return code;
    if (b->stem_channels % 2) return bad(p, "backbone.stem_channels", "must be even (the stem halves it)");
    if ((code = get_int(p, j, "backbone.", "base_channels", 0, 64, 1, 4096, &b->base_channels))) return code;
    if ((code = get_ints(p, j, "backbone.", "strides", 0, 4, 4, 1, 2, strides, 4, b->strides, &n))) return code;
    if ((code = get_ints(p, j, "backbone.", "dilations", 0, 4, 4, 1, 16, dilations, 4, b->dilations, &n))) return code;
    if ((code = get_bool(p, j, "backbone.", "contract_dilation", 1, &b->contract_dilation))) return code;
    if (cJSON_GetObjectItemCaseSensitive(j, "multi_grid") && !cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "multi_grid"))) {
        if ((code = get_ints(p, j, "backbone.", "multi_grid", 0, 1, 64, 1, 64, NULL, 0, b->multi_grid, &b->n_multi_grid)))
            return code;
        if (b->n_multi_grid != (b->depth == 18 ? 2 : 3))
            return bad(p, "backbone.multi_grid", "needs one dilation per block of the last stage (2 for depth 18, else 3)");
    }
    const cJSON *sb = cJSON_GetObjectItemCaseSensitive(j, "spatial_bias");
    b->spatial_bias.stage_mask = 0;
    if (sb && !cJSON_IsNull(sb)) {
        if (!cJSON_IsObject(sb)) return bad(p, "backbone.spatial_bias", "must be an object");
        if (b->depth < 50) return bad(p, "backbone.spatial_bias", "needs a Bottleneck backbone (depth 50, 101 or 152)");
        int stages[4], ns;
        static const int def_stages[3] = {1, 2, 3};
        if ((code = get_ints(p, sb, "backbone.spatial_bias.", "stages", 0, 0, 4, 1, 4, def_stages, 3, stages, &ns)))
            return code;
        for (int i = 0; i < ns; i++) b->spatial_bias.stage_mask |= 1 << (stages[i] - 1);
        if ((code = get_int(p, sb, "backbone.spatial_bias.", "channels", 0, 5, 1, 256, &b->spatial_bias.channels)))
            return code;
        if ((code = get_int(p, sb, "backbone.spatial_bias.", "pool", 0, 10, 1, 64, &b->spatial_bias.pool))) return code;
        if ((code = get_int(p, sb, "backbone.spatial_bias.", "kernel", 0, 3, 1, 256, &b->spatial_bias.kernel)))
            return code;
        if (b->spatial_bias.kernel > b->spatial_bias.channels)
            return bad(p, "backbone.spatial_bias.kernel", "must not exceed spatial_bias.channels");
    }
    return SA_OK;
}

static int parse_head(parser *p, const cJSON *j, const backbone_cfg *b, head_cfg *h) {
    if (!cJSON_IsObject(j)) return bad(p, "decode_head", "missing or not an object");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    int t = -1;
    for (int i = 0; cJSON_IsString(type) && i < 6; i++)
        if (strcmp(type->valuestring, HEAD_NAMES[i]) == 0) t = i;
    if (t < 0) return bad(p, "decode_head.type", "must be one of fcn, ann, ccnet, isanet, eanet, nonlocal");
    h->type = (head_type)t;
    const char *f = "decode_head.";
    int code, n;
    if ((code = get_int(p, j, f, "num_classes", 1, 0, 1, 256, &h->num_classes))) return code;
    if ((code = get_int(p, j, f, "channels", 1, 0, 1, 8192, &h->channels))) return code;
    int n_in = h->type == HEAD_ANN ? 2 : 1;
    if ((code = get_ints(p, j, f, "in_channels", 1, n_in, n_in, 1, 16384, NULL, 0, h->in_channels, &h->n_in))) return code;
    if ((code = get_ints(p, j, f, "in_index", 1, n_in, n_in, 0, 3, NULL, 0, h->in_index, &n))) return code;
    for (int i = 0; i < n_in; i++) {
        int have = stage_out_channels(b, h->in_index[i]);
        if (h->in_channels[i] != have) {
            char what[128];
            snprintf(what, sizeof what, "%d does not match the %d channels of backbone stage %d", h->in_channels[i], have,
                     h->in_index[i] + 1);
            return bad(p, "decode_head.in_channels", what);
        }
    }
    /* The FCN body fields also shape the convs of CCNet and non-local, which force num_convs = 2. */
    int fcn_like = h->type == HEAD_FCN || h->type == HEAD_CCNET || h->type == HEAD_NONLOCAL;
    if (fcn_like) {
        if ((code = get_int(p, j, f, "num_convs", 0, 2, 0, 16, &h->num_convs))) return code;
        if (h->type != HEAD_FCN && h->num_convs != 2) return bad(p, "decode_head.num_convs", "must be 2 for this head");
        if ((code = get_bool(p, j, f, "concat_input", 1, &h->concat_input))) return code;
        if ((code = get_int(p, j, f, "kernel_size", 0, 3, 1, 7, &h->kernel_size))) return code;
        if (h->kernel_size % 2 == 0) return bad(p, "decode_head.kernel_size", "must be odd");
        if ((code = get_int(p, j, f, "dilation", 0, 1, 1, 16, &h->dilation))) return code;
        if (h->num_convs == 0 && h->in_channels[0] != h->channels)
            return bad(p, "decode_head.num_convs", "0 needs in_channels equal to channels");
    }
    static const int one[1] = {1}, pools[4] = {1, 3, 6, 8}, eight[2] = {8, 8};
    const cJSON *mode;
    switch (h->type) {
    case HEAD_FCN: break;
    case HEAD_ANN:
        if ((code = get_int(p, j, f, "project_channels", 1, 0, 1, 8192, &h->project_channels))) return code;
        if ((code = get_ints(p, j, f, "query_scales", 1, 1, MAX_SCALES, 1, 1, one, 1, h->query_scales, &h->n_query_scales)))
            return code;
        if ((code = get_ints(p, j, f, "key_pool_scales", 1, 1, MAX_SCALES, 1, 64, pools, 4, h->key_pool_scales,
                             &h->n_key_pool)))
            return code;
        break;
    case HEAD_CCNET:
        if ((code = get_int(p, j, f, "recurrence", 0, 2, 0, 16, &h->recurrence))) return code;
        if (h->channels < 8) return bad(p, "decode_head.channels", "must be at least 8 (criss-cross uses channels/8)");
        break;
    case HEAD_ISANET:
        if ((code = get_int(p, j, f, "isa_channels", 1, 0, 1, 8192, &h->isa_channels))) return code;
        if ((code = get_ints(p, j, f, "down_factor", 0, 2, 2, 1, 64, eight, 2, h->down_factor, &n))) return code;
        break;
    case HEAD_EANET:
        if ((code = get_int(p, j, f, "memory", 0, 64, 1, 4096, &h->memory))) return code;
        if ((code = get_int(p, j, f, "out_channels", 0, h->channels / 2 ? h->channels / 2 : 1, 1, 8192, &h->out_channels)))
            return code;
        break;
    case HEAD_NONLOCAL:
        if ((code = get_int(p, j, f, "reduction", 0, 2, 1, 8192, &h->reduction))) return code;
        if ((code = get_bool(p, j, f, "use_scale", 1, &h->use_scale))) return code;
        mode = cJSON_GetObjectItemCaseSensitive(j, "mode");
        if (mode && (!cJSON_IsString(mode) || strcmp(mode->valuestring, "embedded_gaussian") != 0))
            return bad(p, "decode_head.mode", "only \"embedded_gaussian\" is supported");
        break;
    }
    return SA_OK;
}

static int parse_palette(parser *p, const cJSON *root, model_cfg *cfg) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, "palette");
    if (!j) return SA_OK;
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) > 256) return bad(p, "palette", "must be an array of [r, g, b]");
    int n = cJSON_GetArraySize(j);
    cfg->palette = calloc((size_t)n + 1, sizeof *cfg->palette);
    if (!cfg->palette) return sa_fail(p->err, SA_EXIT_INTERNAL, "%s: out of memory", p->path);
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        int rgb[3], k;
        char name[32];
        snprintf(name, sizeof name, "palette[%d]", cfg->n_palette);
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 3) return bad(p, name, "must be [r, g, b]");
        k = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, e) {
            if (!cJSON_IsNumber(c) || c->valuedouble != floor(c->valuedouble) || c->valuedouble < 0 || c->valuedouble > 255)
                return bad(p, name, "colour values must be whole numbers in [0, 255]");
            rgb[k++] = (int)c->valuedouble;
        }
        for (k = 0; k < 3; k++) cfg->palette[cfg->n_palette][k] = (uint8_t)rgb[k];
        cfg->n_palette++;
    }
    return SA_OK;
}

static int parse_test_cfg(parser *p, const cJSON *root, model_cfg *cfg) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, "test_cfg");
    if (!j) return SA_OK;
    if (!cJSON_IsObject(j)) return bad(p, "test_cfg", "must be an object");
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(j, "mode");
    if (mode && (!cJSON_IsString(mode) || (strcmp(mode->valuestring, "whole") && strcmp(mode->valuestring, "slide"))))
        return bad(p, "test_cfg.mode", "must be \"whole\" or \"slide\"");
    cfg->slide = mode && strcmp(mode->valuestring, "slide") == 0;
    if (!cfg->slide) return SA_OK;
    int code, n;
    if ((code = get_ints(p, j, "test_cfg.", "crop_size", 0, 2, 2, 1, 1 << 15, NULL, 0, cfg->crop, &n))) return code;
    if ((code = get_ints(p, j, "test_cfg.", "stride", 0, 2, 2, 1, 1 << 15, NULL, 0, cfg->stride, &n))) return code;
    return SA_OK;
}

int config_parse(const char *text, size_t len, const char *path, model_cfg *cfg, sa_error *err) {
    memset(cfg, 0, sizeof *cfg);
    cfg->ignore_index = -1;
    parser p = {path, err};
    /* cJSON takes a NUL for white space; JSON text has none. */
    const char *nul = memchr(text, 0, len);
    if (nul) return sa_fail(err, SA_EXIT_MODEL, "%s: NUL byte at offset %ld: not JSON text", path, (long)(nul - text));
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= text && at <= text + len ? (long)(at - text) : -1;
        return sa_fail(err, SA_EXIT_MODEL, "%s: invalid JSON near byte %ld", path, off);
    }
    static const float mean[3] = {123.675f, 116.28f, 103.53f}, std[3] = {58.395f, 57.12f, 57.375f};
    int code, n_scale;
    if (!cJSON_IsObject(root)) code = bad(&p, "(top level)", "must be an object");
    else if ((code = parse_backbone(&p, cJSON_GetObjectItemCaseSensitive(root, "backbone"), &cfg->backbone))) ;
    else if ((code = parse_head(&p, cJSON_GetObjectItemCaseSensitive(root, "decode_head"), &cfg->backbone, &cfg->head))) ;
    else if ((code = get_floats3(&p, root, "mean", mean, cfg->mean, 0))) ;
    else if ((code = get_floats3(&p, root, "std", std, cfg->std, 1))) ;
    else if ((code = get_bool(&p, root, "", "to_rgb", 1, &cfg->to_rgb))) ;
    else if ((code = get_bool(&p, root, "", "align_corners", 0, &cfg->align_corners))) ;
    else if ((code = get_strings(&p, root, "weights", 16, &cfg->weights, &cfg->n_weights))) ;
    else if ((code = get_strings(&p, root, "classes", 256, &cfg->classes, &cfg->n_classes))) ;
    else if ((code = parse_palette(&p, root, cfg))) ;
    else if ((code = get_int(&p, root, "", "ignore_index", 0, -1, -1, 255, &cfg->ignore_index))) ;
    else if ((code = parse_test_cfg(&p, root, cfg))) ;
    else if (cJSON_GetObjectItemCaseSensitive(root, "test_scale") &&
             (code = get_ints(&p, root, "", "test_scale", 0, 2, 2, 1, 1 << 15, NULL, 0, cfg->test_scale, &n_scale))) ;
    else if (cfg->n_classes && cfg->n_classes != cfg->head.num_classes)
        code = bad(&p, "classes", "count differs from decode_head.num_classes");
    else if (cfg->n_palette && cfg->n_palette < cfg->head.num_classes)
        code = bad(&p, "palette", "has fewer colours than decode_head.num_classes");
    cJSON_Delete(root);
    if (code) config_free(cfg);
    return code;
}

int config_load(const char *path, model_cfg *cfg, sa_error *err) {
    memset(cfg, 0, sizeof *cfg);
    FILE *f = fopen(path, "rb");
    if (!f) return sa_fail(err, SA_EXIT_MODEL, "%s: cannot open config: %s", path, strerror(errno));
    char *text = malloc(MAX_CONFIG_BYTES + 1);
    if (!text) { fclose(f); return sa_fail(err, SA_EXIT_INTERNAL, "%s: out of memory", path); }
    size_t len = fread(text, 1, MAX_CONFIG_BYTES + 1, f);
    int read_error = ferror(f);
    fclose(f);
    if (read_error) { free(text); return sa_fail(err, SA_EXIT_MODEL, "%s: read error", path); }
    if (len > MAX_CONFIG_BYTES) { free(text); return sa_fail(err, SA_EXIT_MODEL, "%s: config larger than 16 MiB", path); }
    int code = config_parse(text, len, path, cfg, err);
    free(text);
    if (code) return code;
    cfg->dir = path_dirname(path);
    return SA_OK;
}

void config_free(model_cfg *cfg) {
    for (int i = 0; i < cfg->n_weights; i++) free(cfg->weights[i]);
    for (int i = 0; i < cfg->n_classes; i++) free(cfg->classes[i]);
    free(cfg->weights);
    free(cfg->classes);
    free(cfg->palette);
    free(cfg->dir);
    memset(cfg, 0, sizeof *cfg);
}
