#!/usr/bin/python3
"""Helpers of tests/test_eval.c (Debian's python3 with numpy and PIL).

  eval_trees.py build CAMVID_SPLIT OUT N W H
      The first N images of a CamVid split, resized to W×H (image bilinear, labels nearest), laid out
      three ways under OUT: camvid/ (images/ + labels/), cityscapes/ (leftImg8bit + gtFine labelIds, the
      CamVid ids 0-10 written as the labelIds of trainIds 0-10, void as 0) and voc/ (JPEGImages +
      SegmentationClass palette PNGs, void as 255, ImageSets/Segmentation/val.txt). Image files hold the
      same pixels in every layout (PNG data, also under the .jpg names).

  eval_trees.py check PRED_DIR LABEL_DIR K IGNORE METRICS_JSON
      mmseg's IoU metric computed here with numpy from index PNGs, compared with segattn's metrics JSON.

  eval_trees.py slide IMAGE CROP_H CROP_W STRIDE_H STRIDE_W OUT_DIR
      Writes the slide windows of IMAGE as OUT_DIR/win<i>.png and their boxes in OUT_DIR/boxes.txt.

  eval_trees.py slide_check IMAGE_H IMAGE_W BOXES WIN_LOGITS_PREFIX ALIGN GOT_LOGITS
      Rebuilds slide inference from the whole-window logits: bilinear (PyTorch's rule) to the window,
      sum / count; compares with segattn's slide logits.

  eval_trees.py tta_check H W ALIGN PLAIN_LOGITS FLIPPED_LOGITS GOT_PROBS
      Softmax average of the image and of its mirror (flipped back), compared with segattn --tta.
"""
import json
import os
import sys

import numpy as np
from PIL import Image

LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def voc_palette():
    pal = []
    for k in range(256):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        pal += [r, g, b]
    return pal


def build(src, out, n, w, h):
    names = sorted(os.listdir(os.path.join(src, "images")))[:n]
    for d in ["camvid/images", "camvid/labels", "cityscapes/leftImg8bit/val/aachen", "cityscapes/leftImg8bit/val/bremen",
              "cityscapes/gtFine/val/aachen", "cityscapes/gtFine/val/bremen", "voc/JPEGImages", "voc/SegmentationClass",
              "voc/ImageSets/Segmentation"]:
        os.makedirs(os.path.join(out, d), exist_ok=True)
    table = np.zeros(256, np.uint8)
    table[:11] = LABEL_IDS[:11]
    stems = []
    for i, f in enumerate(names):
        stem = f.rsplit(".", 1)[0]
        stems.append(stem)
        im = Image.open(os.path.join(src, "images", f)).convert("RGB").resize((w, h), Image.BILINEAR)
        lab = np.array(Image.open(os.path.join(src, "labels", stem + ".png")).resize((w, h), Image.NEAREST))
        im.save(os.path.join(out, "camvid/images", stem + ".png"))
        Image.fromarray(lab).save(os.path.join(out, "camvid/labels", stem + ".png"))
        city = "aachen" if i % 2 == 0 else "bremen"
        cs = "%s_%06d_000019" % (city, i)
        im.save(os.path.join(out, "cityscapes/leftImg8bit/val", city, cs + "_leftImg8bit.png"))
        Image.fromarray(table[lab]).save(os.path.join(out, "cityscapes/gtFine/val", city, cs + "_gtFine_labelIds.png"))
        im.save(os.path.join(out, "voc/JPEGImages", stem + ".jpg"), format="PNG")
        p = Image.fromarray(np.where(lab < 11, lab, 255).astype(np.uint8), mode="P")
        p.putpalette(voc_palette())
        p.save(os.path.join(out, "voc/SegmentationClass", stem + ".png"))
    with open(os.path.join(out, "voc/ImageSets/Segmentation/val.txt"), "w") as f:
        f.write("\n".join(stems) + "\n")


def check(pred_dir, label_dir, k, ignore, metrics_json):
    inter = np.zeros(k, np.int64)
    area_p = np.zeros(k, np.int64)
    area_l = np.zeros(k, np.int64)
    for f in sorted(os.listdir(label_dir)):
        lab = np.array(Image.open(os.path.join(label_dir, f))).astype(np.int64)
        pred = np.array(Image.open(os.path.join(pred_dir, f))).astype(np.int64)
        keep = lab != ignore
        lab, pred = lab[keep], pred[keep]
        inter += np.bincount(pred[pred == lab], minlength=256)[:k]
        area_p += np.bincount(pred, minlength=256)[:k]
        area_l += np.bincount(lab, minlength=256)[:k]
    union = area_p + area_l - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
        acc = inter / area_l
    want = {"aAcc": inter.sum() / area_l.sum(), "mIoU": np.nanmean(iou), "mAcc": np.nanmean(acc)}
    got = json.load(open(metrics_json))
    bad = []
    for key, v in want.items():
        if abs(got["fractions"][key] - v) > 1e-12:
            bad.append("%s: segattn %r, numpy %r" % (key, got["fractions"][key], v))
        if got[key] != round(v * 100, 2):
            bad.append("%s (percent): segattn %r, numpy %r" % (key, got[key], round(v * 100, 2)))
    for c in range(k):
        g = got["classes"][c]
        if (g["IoU"] is None) != bool(np.isnan(iou[c])) or (g["IoU"] is not None and g["IoU"] != round(iou[c] * 100, 2)):
            bad.append("class %d IoU: segattn %r, numpy %r" % (c, g["IoU"], iou[c]))
        if g["pixels"] != area_l[c]:
            bad.append("class %d pixels: segattn %r, numpy %r" % (c, g["pixels"], area_l[c]))
    if bad:
        print("\n".join(bad))
        sys.exit(1)


def resize_bilinear(x, oh, ow, align):
    """PyTorch F.interpolate(mode='bilinear'), float32 coordinates, x is K×H×W."""
    k, ih, iw = x.shape

    def axis(o, i):
        d = np.arange(o, dtype=np.float32)
        if align:
            s = np.float32((i - 1) / (o - 1)) if o > 1 else np.float32(0)
            src = s * d
        else:
            src = np.maximum(np.float32(i / o) * (d + np.float32(0.5)) - np.float32(0.5), np.float32(0))
        i0 = np.minimum(np.floor(src).astype(np.int64), i - 1)
        i1 = np.minimum(i0 + 1, i - 1)
        lam = (src - i0).astype(np.float32)
        return i0, i1, lam

    y0, y1, ly = axis(oh, ih)
    x0, x1, lx = axis(ow, iw)
    a, b = x[:, y0][:, :, x0], x[:, y0][:, :, x1]
    c, d = x[:, y1][:, :, x0], x[:, y1][:, :, x1]
    ly, lx = ly[None, :, None], lx[None, None, :]
    one = np.float32(1)
    return (one - ly) * ((one - lx) * a + lx * b) + ly * ((one - lx) * c + lx * d)


def load_logits(path):
    import struct
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    t = hdr["logits"]
    s, e = t["data_offsets"]
    return np.frombuffer(raw[8 + n + s:8 + n + e], np.float32).reshape(t["shape"])[0]


def slide(image, ch, cw, sh, sw, out):
    im = np.array(Image.open(image).convert("RGB"))
    H, W = im.shape[:2]
    hg = max(H - ch + sh - 1, 0) // sh + 1
    wg = max(W - cw + sw - 1, 0) // sw + 1
    boxes = []
    for i in range(hg):
        for j in range(wg):
            y1, x1 = i * sh, j * sw
            y2, x2 = min(y1 + ch, H), min(x1 + cw, W)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            Image.fromarray(im[y1:y2, x1:x2]).save(os.path.join(out, "win%d.png" % len(boxes)))
            boxes.append("%d %d %d %d" % (y1, y2, x1, x2))
    with open(os.path.join(out, "boxes.txt"), "w") as f:
        f.write("\n".join(boxes) + "\n")


def slide_check(H, W, boxes, prefix, align, got_path):
    preds = None
    count = np.zeros((1, H, W), np.float32)
    for i, line in enumerate(open(boxes).read().split("\n")):
        if not line:
            continue
        y1, y2, x1, x2 = map(int, line.split())
        lg = load_logits("%s%d.safetensors" % (prefix, i))
        up = resize_bilinear(lg, y2 - y1, x2 - x1, align)
        if preds is None:
            preds = np.zeros((lg.shape[0], H, W), np.float32)
        preds[:, y1:y2, x1:x2] += up
        count[:, y1:y2, x1:x2] += 1
    want = preds / count
    got = load_logits(got_path)
    err = np.abs(got - want).max() / np.abs(want).max()
    if got.shape != want.shape or err > 1e-5:
        print("slide logits differ: shape %s vs %s, rel err %g" % (got.shape, want.shape, err))
        sys.exit(1)


def softmax(x):
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def tta_check(H, W, align, plain, flipped, got_path):
    a = resize_bilinear(load_logits(plain), H, W, align)
    b = resize_bilinear(load_logits(flipped), H, W, align)[:, :, ::-1]
    want = (softmax(a) + softmax(b)) / 2
    got = load_logits(got_path)
    err = np.abs(got - want).max()
    if got.shape != want.shape or err > 1e-5:
        print("tta probabilities differ: shape %s vs %s, max err %g" % (got.shape, want.shape, err))
        sys.exit(1)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "build":
        build(a[0], a[1], int(a[2]), int(a[3]), int(a[4]))
    elif cmd == "check":
        check(a[0], a[1], int(a[2]), int(a[3]), a[4])
    elif cmd == "slide":
        slide(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), a[5])
    elif cmd == "slide_check":
        slide_check(int(a[0]), int(a[1]), a[2], a[3], int(a[4]), a[5])
    elif cmd == "tta_check":
        tta_check(int(a[0]), int(a[1]), int(a[2]), a[3], a[4], a[5])
    else:
        sys.exit("unknown command " + cmd)
