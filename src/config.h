/* The model description: mmseg's config names, typed. cJSON stays inside config.c. */
#ifndef SA_CONFIG_H
#define SA_CONFIG_H
#include <stdint.h>

#include "segattn.h"

typedef enum { HEAD_FCN, HEAD_ANN, HEAD_CCNET, HEAD_ISANET, HEAD_EANET, HEAD_NONLOCAL } head_type;

typedef struct {
    int depth, stem_channels, base_channels;
    int strides[4], dilations[4];
    int contract_dilation;
    int n_multi_grid;       /* mmseg's multi_grid: absolute dilations of the last stage's blocks; 0: unused */
    int multi_grid[64];
    struct {
        int stage_mask;  /* bit s-1 set: stage s has spatial bias; 0: none */
        int channels, pool, kernel;
    } spatial_bias;
} backbone_cfg;

#define MAX_SCALES 8

typedef struct {
    head_type type;
    int num_classes, channels;
    int n_in;               /* 1, or 2 for ANN (low, high) */
    int in_channels[2], in_index[2];
    /* fcn (also the convs of ccnet / nonlocal) */
    int num_convs, concat_input, kernel_size, dilation;
    /* ann */
    int project_channels, n_query_scales, query_scales[MAX_SCALES], n_key_pool, key_pool_scales[MAX_SCALES];
    /* ccnet */
    int recurrence;
    /* isanet */
    int isa_channels, down_factor[2];
    /* eanet */
    int memory, out_channels;
    /* nonlocal */
    int reduction, use_scale;
} head_cfg;

typedef struct {
    backbone_cfg backbone;
    head_cfg head;
    float mean[3], std[3];
    int to_rgb, align_corners;
    char *dir;              /* directory of the JSON file: weight paths are relative to it */
    char **weights;
    int n_weights;
    char **classes;
    int n_classes;
    uint8_t (*palette)[3];
    int n_palette;
    int ignore_index;       /* -1: none */
    /* test-time defaults ("test_cfg"): mode 0 whole, 1 slide */
    int slide, crop[2], stride[2];
    int test_scale[2];      /* "test_scale": mmseg's test Resize (long, short), keep ratio; 0: none */
} model_cfg;

int config_load(const char *path, model_cfg *cfg, sa_error *err);
/* Parses JSON text; `path` only names the source in errors (the fuzz target calls this directly). */
int config_parse(const char *text, size_t len, const char *path, model_cfg *cfg, sa_error *err);
void config_free(model_cfg *cfg);
const char *head_type_name(head_type t);

#endif
