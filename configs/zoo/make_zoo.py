#!/usr/bin/env python3
"""Writes configs/zoo/*.json: segattn model descriptions of mmsegmentation's published ResNetV1c-d8 models,
{ann, ccnet, isanet, nonlocal, fcn} x {r50, r101} x {Cityscapes 512x1024, Cityscapes 769x769, VOC 2012 aug 512x512,
ADE20K 512x512}, with mmseg's config values (SPEC-mmseg §10) and the datasets' class names and palettes.

    python3 configs/zoo/make_zoo.py        (rewrites every JSON in this folder)

Weights are not named: pass the converted checkpoint with -w (see docs/convert-notes.md).
Two fields are informative for now (src/config.c ignores them): "test_scale", mmseg's test Resize scale
(pass it as --scale L,S), and "reduce_zero_label" (ADE20K labels: 0 is 'other', classes are 1..150).
"""
import json
import os

HEADS = {
    "ann": {"type": "ann", "in_channels": [1024, 2048], "in_index": [2, 3], "channels": 512, "project_channels": 256,
            "query_scales": [1], "key_pool_scales": [1, 3, 6, 8]},
    "ccnet": {"type": "ccnet", "in_channels": 2048, "in_index": 3, "channels": 512, "recurrence": 2},
    "isanet": {"type": "isanet", "in_channels": 2048, "in_index": 3, "channels": 512, "isa_channels": 256,
               "down_factor": [8, 8]},
    "nonlocal": {"type": "nonlocal", "in_channels": 2048, "in_index": 3, "channels": 512, "reduction": 2,
                 "use_scale": True, "mode": "embedded_gaussian"},
    "fcn": {"type": "fcn", "in_channels": 2048, "in_index": 3, "channels": 512, "num_convs": 2, "concat_input": True,
            "kernel_size": 3},
}

CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle"]
CITYSCAPES_PALETTE = [[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
                      [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
                      [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32]]
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
VOC_PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128],
               [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0], [192, 128, 0], [64, 0, 128], [192, 0, 128],
               [64, 128, 128], [192, 128, 128], [0, 64, 0], [128, 64, 0], [0, 192, 0], [128, 192, 0], [0, 64, 128]]
# mmseg ADE20KDataset METAINFO (mmseg/datasets/ade.py), in order; 'bed ' keeps mmseg's trailing space.
ADE_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag"]
ADE_PALETTE = [
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80], [140, 140, 140],
    [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70],
    [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3], [0, 102, 200],
    [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220],
    [255, 9, 92], [112, 9, 255], [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
    [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20],
    [255, 8, 41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140],
    [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0], [0, 0, 255],
    [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255], [11, 200, 200], [255, 82, 0], [0, 255, 245],
    [0, 61, 255], [0, 255, 112], [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],
    [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173], [10, 0, 255], [173, 255, 0],
    [0, 255, 153], [255, 92, 0], [255, 0, 255], [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20],
    [255, 184, 184], [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194], [0, 255, 82],
    [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255], [0, 122, 255], [0, 255, 163], [255, 153, 0],
    [0, 255, 10], [255, 112, 0], [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],
    [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255], [0, 214, 255], [255, 0, 112],
    [92, 255, 0], [0, 224, 255], [112, 224, 255], [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0],
    [255, 0, 163], [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235], [245, 0, 255],
    [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0], [0, 204, 255], [20, 0, 255], [255, 255, 0],
    [0, 153, 255], [0, 41, 255], [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],
    [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0], [0, 133, 255], [255, 214, 0],
    [25, 194, 194], [102, 255, 0], [92, 0, 255]]

# name suffix -> (classes, palette, align_corners, test_cfg, test_scale, description)
DATASETS = {
    "cityscapes-512x1024": (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, False, None, [2048, 1024],
                            "Cityscapes, trained on 512x1024 crops, whole-image test"),
    "cityscapes-769x769": (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, True,
                           {"mode": "slide", "crop_size": [769, 769], "stride": [513, 513]}, [2049, 1025],
                           "Cityscapes, trained on 769x769 crops, sliding-window test, align_corners"),
    "voc12aug-512x512": (VOC_CLASSES, VOC_PALETTE, False, None, [2048, 512],
                         "Pascal VOC 2012 + SBD aug, 512x512 crops, whole-image test"),
    "ade20k-512x512": (ADE_CLASSES, ADE_PALETTE, False, None, [2048, 512],
                       "ADE20K (150 classes), 512x512 crops, whole-image test"),
}

MMSEG_DIR = {"ann": "ann", "ccnet": "ccnet", "isanet": "isanet", "nonlocal": "nonlocal_net", "fcn": "fcn"}


def make(head, depth, dataset):
    classes, palette, align, test_cfg, scale, what = DATASETS[dataset]
    assert len(classes) == len(palette) and len(classes) in (19, 21, 150)
    cfg = {
        "backbone": {"type": "ResNetV1c", "depth": depth, "stem_channels": 64, "base_channels": 64,
                     "strides": [1, 2, 1, 1], "dilations": [1, 1, 2, 4], "contract_dilation": True},
        "decode_head": {"type": HEADS[head]["type"], "num_classes": len(classes),
                        **{k: v for k, v in HEADS[head].items() if k != "type"}},
        "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "to_rgb": True,
        "align_corners": align,
    }
    if test_cfg:
        cfg["test_cfg"] = test_cfg
    cfg["test_scale"] = scale
    if dataset.startswith("ade20k"):
        cfg["reduce_zero_label"] = True
    cfg["classes"] = classes
    cfg["palette"] = palette
    cfg["ignore_index"] = 255
    cfg["note"] = (f"mmseg configs/{MMSEG_DIR[head]}/{head}_r{depth}-d8_*_{dataset}: {what}. No weights named: "
                   f"convert the checkpoint with scripts/convert_mmseg.py and pass it with -w; "
                   f"test Resize: --scale {scale[0]},{scale[1]}")
    return cfg


def dump(obj):
    """JSON with one palette colour per line."""
    text = json.dumps(obj, indent=1)
    # fold the innermost [r, g, b] triples and short number lists onto one line
    import re
    return re.sub(r"\[\s*(-?[0-9.]+(?:,\s*-?[0-9.]+)*)\s*\]", lambda m: "[" + ", ".join(
        x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    n = 0
    for head in HEADS:
        for depth in (50, 101):
            for dataset in DATASETS:
                path = os.path.join(here, f"{head}_r{depth}-d8_{dataset}.json")
                with open(path, "w") as f:
                    f.write(dump(make(head, depth, dataset)))
                n += 1
    print(f"wrote {n} configs to {here}")


if __name__ == "__main__":
    main()
