#!/usr/bin/env python3
"""Checks scripts/convert_mmseg.py end to end (issue 6). Run from the repository root:

    /usr/bin/python3 tests/convert/test_convert.py

Needs Debian's python3-torch (only to *make* checkpoints and reference outputs; the converter itself runs with
torch made unimportable), PIL, numpy, ./segattn built, and the reference model ../shared/reference/segref.py
(or $SEGREF). Prints one line per check; exit status 0 when every check passed.

1. tiny mmseg-named models of every head (segref.py), saved by torch.save in the zip and the legacy format as
   mmseg checkpoints {"meta", "state_dict"}: conversion is bit-exact (F32 and the other dtypes), auxiliary_head
   is dropped (kept with --keep-aux), the written model JSON runs in `segattn predict --logits` and matches
   PyTorch within 1e-3 of max|logit|; --fp16 halves the floats;
2. an official-EANet-named checkpoint (--from eanet): renamed onto segattn's names, multi_grid config, logits;
3. malicious pickles (os.system in the pickle, in both container formats and nested in meta) are refused
   and nothing runs;
4. every configs/zoo/*.json loads with `segattn info --random-weights --size 64x64`, and one r50 model per head
   at real mmseg width (random weights, segref layout, with its auxiliary head) goes through torch.save ->
   convert -> `segattn info -w` against the matching zoo config: every tensor present, every shape equal,
   none unused, and the converter's own model JSON equals the zoo config's backbone and head.
"""
import glob
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.chdir(REPO)
SEGATTN = os.environ.get("SEGATTN_BIN") or "./segattn"
CONVERT = os.path.join(REPO, "scripts", "convert_mmseg.py")
FAILED = []
T0 = time.time()


def cpu_seconds():
    import resource
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def section(name):
    print(f"# {name} (at {time.time() - T0:.1f} s wall, {cpu_seconds():.1f} s CPU)", flush=True)


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        FAILED.append(name)
    return ok


try:
    import numpy as np
    import torch
    from PIL import Image
except ImportError as e:
    print(f"FAIL imports: {e} (install python3-torch, python3-numpy, python3-pil)")
    sys.exit(1)
REF_DIRS = [os.environ.get("SEGREF", ""), os.path.join(REPO, "..", "shared", "reference"), "/work/shared/reference"]
for d in REF_DIRS:
    if d and os.path.exists(os.path.join(d, "segref.py")):
        sys.path.insert(0, d)
        break
try:
    import segref
except ImportError:
    print("FAIL segref: ../shared/reference/segref.py not found (set SEGREF to its folder)")
    sys.exit(1)

torch.set_grad_enabled(False)
torch.set_num_threads(2)
TMP = tempfile.mkdtemp(prefix="segattn_convert_")
# The converter must not need PyTorch: it runs with a `torch` module on its path that refuses to import.
NOTORCH = os.path.join(TMP, "notorch")
os.makedirs(NOTORCH)
with open(os.path.join(NOTORCH, "torch.py"), "w") as f:
    f.write("raise ImportError('convert_mmseg.py must not import torch')\n")


def convert(ckpt, prefix, *extra):
    env = dict(os.environ, PYTHONPATH=NOTORCH)
    return subprocess.run([sys.executable, CONVERT, ckpt, prefix, *extra], capture_output=True, text=True, env=env)


DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
      "BOOL": np.bool_, "BF16": np.uint16}


def read_st(path):
    """Minimal safetensors reader: {name: numpy array}, plus the dtype names."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    hdr.pop("__metadata__", None)
    arrays, dtypes = {}, {}
    for k, v in hdr.items():
        a, b = v["data_offsets"]
        arrays[k] = np.frombuffer(data[a:b], DT[v["dtype"]]).reshape(v["shape"])
        dtypes[k] = v["dtype"]
    return arrays, dtypes


def randomise(model, seed):
    """Non-trivial BN statistics and affine parameters, CCNet gamma != 0, BN step counters set."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            m.num_batches_tracked.fill_(1234)
        if isinstance(m, segref.Scale):
            m.scale.fill_(0.7)
    return model.eval()


def mmseg_ckpt(model, meta):
    return {"meta": meta, "state_dict": model.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]}}


def image(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3)).astype(np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
    path = os.path.join(TMP, f"img{seed}.png")
    img.save(path)
    return path, np.asarray(img)


def torch_logits(model, rgb):
    x = torch.from_numpy(rgb.astype(np.float64)).permute(2, 0, 1)[None]
    x = (x - torch.tensor(segref.MEAN, dtype=torch.float64)[:, None, None]) / torch.tensor(segref.STD, dtype=torch.float64)[:, None, None]
    m = model.double()
    out = m.decode_head(m.backbone(x)).float().numpy()
    model.float()
    return out


def segattn_logits(cfg, weights, img_path, tag):
    out = os.path.join(TMP, f"{tag}_logits.safetensors")
    cmd = [SEGATTN, "predict", "-q", "--force", "-t", "2", "-c", cfg, "--logits", out,
           "-o", os.path.join(TMP, f"{tag}.png"), img_path]
    if weights:
        cmd[6:6] = ["-w", weights]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        return None, str(e)
    if r.returncode != 0:
        return None, r.stderr.strip()[-300:]
    return read_st(out)[0]["logits"], r.stderr


def info(args):
    try:
        r = subprocess.run([SEGATTN, "info", *args, "--size", "64x64"], capture_output=True, text=True)
    except OSError as e:
        return -1, str(e)
    return r.returncode, r.stderr.strip()[-300:]


def compare_logits(name, ref, got, tol=1e-3):
    if got is None or ref.shape != got.shape:
        return check(name, False, f"shape {None if got is None else got.shape} vs {ref.shape}")
    err = float(np.abs(ref - got).max() / max(np.abs(ref).max(), 1e-12))
    return check(name, err <= tol, f"max err {err:.2e} of max|logit|")


def same_tensors(name, sd, path, skip_prefix="auxiliary_head."):
    arrays, dtypes = read_st(path)
    want = {k: v for k, v in sd.items() if not k.startswith(skip_prefix)} if skip_prefix else dict(sd)
    missing = sorted(set(want) - set(arrays))
    extra = sorted(set(arrays) - set(want))
    bad = [k for k, v in want.items() if k in arrays and (tuple(v.shape) != arrays[k].shape or
           v.contiguous().numpy().tobytes() != arrays[k].tobytes() or
           str(v.dtype) != {"F32": "torch.float32", "I64": "torch.int64", "F16": "torch.float16"}.get(dtypes[k]))]
    return check(name, not missing and not extra and not bad,
                 f"{len(want)} tensors" if not (missing or extra or bad) else
                 f"missing {missing[:3]}, extra {extra[:3]}, differing {bad[:3]}")


# ------------------------------------------------------------------------------------------------------
# 1. tiny mmseg models, both formats
# ------------------------------------------------------------------------------------------------------

CITY = ["road", "sidewalk", "building", "wall", "fence"]
PAL = [[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153]]


def tiny(head, depth, seed):
    torch.manual_seed(seed)
    base, stem = (8, 16) if depth < 50 else (4, 16)
    bb = segref.ResNetV1c(depth=depth, stem_channels=stem, base_channels=base)
    ch = bb.out_channels
    K = 5
    if head == "fcn":
        hd = segref.FCNHead(ch[3], 16, K, 3, num_convs=2, concat_input=True)
    elif head == "ann":
        hd = segref.ANNHead((ch[2], ch[3]), 16, K, 8, (2, 3))
    elif head == "ccnet":
        hd = segref.CCHead(ch[3], 16, K, 3, recurrence=2)
    elif head == "isanet":
        hd = segref.ISAHead(ch[3], 16, K, 8, 3, (4, 4))
    elif head == "nonlocal":
        hd = segref.NLHead(ch[3], 16, K, 3, reduction=2)
    aux = segref.FCNHead(ch[2], 8, K, 2, num_convs=1, concat_input=False)
    return randomise(segref.Segmentor(bb, hd, aux), seed)


section("1. tiny mmseg models, zip and legacy format")
TINY = [("ccnet", 18), ("ann", 50), ("isanet", 50), ("nonlocal", 18), ("fcn", 50)]
img_path, rgb = image(72, 88, 1)
for i, (head, depth) in enumerate(TINY):
    model = tiny(head, depth, 10 + i)
    extra_cfg = "down_factor=(4, 4)" if head == "isanet" else ""
    meta = {"CLASSES": tuple(CITY), "PALETTE": PAL, "mmseg_version": "0.30.0",
            "config": f"norm_cfg = dict(type='SyncBN', requires_grad=True)\nmodel = dict(decode_head=dict({extra_cfg}))\n"
                      "test_cfg = dict(mode='whole')\n"}
    sd = model.state_dict()
    ref = torch_logits(model, rgb)
    for fmt in ("zip", "legacy"):
        tag = f"tiny_{head}_r{depth}_{fmt}"
        ckpt = os.path.join(TMP, tag + ".pth")
        torch.save(mmseg_ckpt(model, meta), ckpt, _use_new_zipfile_serialization=(fmt == "zip"))
        r = convert(ckpt, os.path.join(TMP, tag))
        if not check(f"{tag}: converts without torch", r.returncode == 0, r.stderr.strip()[-200:]):
            continue
        same_tensors(f"{tag}: tensors bit-exact, auxiliary_head dropped", sd, os.path.join(TMP, tag + ".safetensors"))
        cfg = json.load(open(os.path.join(TMP, tag + ".json")))
        check(f"{tag}: model JSON has classes and palette", cfg.get("classes") == CITY and cfg.get("palette") == PAL)
        got, err = segattn_logits(os.path.join(TMP, tag + ".json"), None, img_path, tag)
        compare_logits(f"{tag}: segattn predict --logits vs PyTorch", ref, got)
        if got is not None:
            check(f"{tag}: no unused-weights warning", "not used" not in err, err.strip()[-200:])
    if i == 0:
        tag = f"tiny_{head}_r{depth}_keepaux"
        r = convert(os.path.join(TMP, f"tiny_{head}_r{depth}_zip.pth"), os.path.join(TMP, tag), "--keep-aux", "--no-config")
        check(f"{tag}: --keep-aux keeps auxiliary_head, --no-config writes no JSON", r.returncode == 0 and
              not os.path.exists(os.path.join(TMP, tag + ".json")) and
              same_tensors(f"{tag}: tensors bit-exact with auxiliary_head", sd, os.path.join(TMP, tag + ".safetensors"), None))
    if i == 1:
        tag = f"tiny_{head}_r{depth}_fp16"
        r = convert(os.path.join(TMP, f"tiny_{head}_r{depth}_legacy.pth"), os.path.join(TMP, tag), "--fp16")
        arrays, dtypes = read_st(os.path.join(TMP, tag + ".safetensors"))
        ok = r.returncode == 0 and all(
            (dtypes[k] == "F16" and np.array_equal(arrays[k], v.numpy().astype(np.float16))) if v.is_floating_point()
            else dtypes[k] == "I64" for k, v in sd.items() if not k.startswith("auxiliary_head."))
        check(f"{tag}: --fp16 stores floats as F16 (rounded), counters as I64", ok, r.stderr.strip()[-200:])
        got, _ = segattn_logits(os.path.join(TMP, tag + ".json"), None, img_path, tag)
        compare_logits(f"{tag}: F16 weights vs PyTorch (2e-2)", ref, got, 2e-2)

# The options that leave no trace in the weights come from the training config text stored in meta (mmcv
# pretty_text of a Cityscapes 769x769 config here).
CFG_769 = """norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    backbone=dict(
        type='ResNetV1c', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False, style='pytorch', contract_dilation=True),
    decode_head=dict(
        type='CCHead', in_channels=64, in_index=3, channels=16, recurrence=3, dropout_ratio=0.1,
        num_classes=5, norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(769, 769), stride=(513, 513)))
img_norm_cfg = dict(
    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
"""
model = tiny("ccnet", 18, 10)
ckpt = os.path.join(TMP, "cfg769.pth")
torch.save(mmseg_ckpt(model, {"config": CFG_769, "CLASSES": CITY, "PALETTE": PAL}), ckpt)
r = convert(ckpt, os.path.join(TMP, "cfg769"))
cfg = json.load(open(os.path.join(TMP, "cfg769.json"))) if r.returncode == 0 else {}
check("meta config text: align_corners, slide test_cfg and recurrence read from it",
      cfg.get("align_corners") is True and cfg.get("test_cfg") == {"mode": "slide", "crop_size": [769, 769], "stride": [513, 513]}
      and cfg["decode_head"]["recurrence"] == 3 and cfg["backbone"]["dilations"] == [1, 1, 2, 4], json.dumps(cfg)[:300])
rc, err = info(["-c", os.path.join(TMP, "cfg769.json")])
check("meta config text: the written JSON loads with its weights (segattn info)", rc == 0, err)

# Other dtypes, a non-contiguous tensor, a 0-dim tensor, numpy values / sets / bytes in meta; an object array refused.
odd = {"t": torch.arange(12.0).reshape(3, 4).t(), "bf": torch.randn(5).to(torch.bfloat16), "f64": torch.randn(3).double(),
       "h": torch.randn(2, 2).half(), "zero_dim": torch.tensor(2.5), "i32": torch.arange(3, dtype=torch.int32)}
for fmt in ("zip", "legacy"):
    ckpt = os.path.join(TMP, f"odd_{fmt}.pth")
    torch.save({"meta": {"best": np.float64(0.5), "arr": np.arange(3), "s": {1, 2}, "b": b"xy"}, "state_dict": odd}, ckpt,
               _use_new_zipfile_serialization=(fmt == "zip"))
    r = convert(ckpt, os.path.join(TMP, f"odd_{fmt}"))
    arrays, dtypes = read_st(os.path.join(TMP, f"odd_{fmt}.safetensors")) if r.returncode == 0 else ({}, {})
    ok = r.returncode == 0 and np.array_equal(arrays["t"], odd["t"].numpy()) and arrays["t"].shape == (4, 3)
    ok = ok and dtypes["bf"] == "BF16" and arrays["bf"].tobytes() == odd["bf"].view(torch.int16).numpy().tobytes()
    ok = ok and dtypes["f64"] == "F32" and np.array_equal(arrays["f64"], odd["f64"].numpy().astype(np.float32))
    ok = ok and dtypes["h"] == "F16" and arrays["h"].tobytes() == odd["h"].numpy().tobytes()
    ok = ok and arrays["zero_dim"].shape == () and float(arrays["zero_dim"]) == 2.5 and dtypes["i32"] == "I32"
    check(f"odd tensors ({fmt}): transposed, BF16 and F16 bit-exact, F64 -> F32, 0-dim kept, numpy values in meta", ok,
          r.stderr.strip()[-200:])
torch.save({"meta": {"o": np.array([None, "x"], dtype=object)}, "state_dict": odd}, os.path.join(TMP, "objarr.pth"))
r = convert(os.path.join(TMP, "objarr.pth"), os.path.join(TMP, "objarr"))
check("numpy object array in meta: refused", r.returncode == 1 and "refusing" in r.stderr, r.stderr.strip()[-200:])

# ------------------------------------------------------------------------------------------------------
# 2. official EANet naming (--from eanet)
# ------------------------------------------------------------------------------------------------------


def to_official_eanet(name):
    """segattn's names -> MenghaoGuo/EANet model_torch.py names (SPEC §14.3)."""
    import re
    rules = [(r"backbone\.stem\.7\.(.*)", "extractor.1.{}"), (r"backbone\.stem\.(\d)\.(.*)", "extractor.0.{}.{}"),
             (r"backbone\.layer(\d)\.(.*)", None), (r"decode_head\.fc0\.(.*)", "fc0.{}"),
             (r"decode_head\.ea\.conv2\.conv\.(.*)", "linu.conv2.0.{}"), (r"decode_head\.ea\.conv2\.bn\.(.*)", "linu.conv2.1.{}"),
             (r"decode_head\.ea\.(.*)", "linu.{}"), (r"decode_head\.fc1\.(.*)", "fc1.0.{}"),
             (r"decode_head\.conv_seg\.(.*)", "fc2.{}")]
    for pat, repl in rules:
        m = re.fullmatch(pat, name)
        if m:
            if repl is None:
                return f"extractor.{int(m.group(1)) + 3}.{m.group(2)}"
            return repl.format(*m.groups())
    raise KeyError(name)


section("2. official EANet checkpoint (--from eanet)")
torch.manual_seed(7)
bb = segref.ResNetV1c(depth=50, stem_channels=16, base_channels=4)
for blk, d in zip(bb.layer4, (2, 8, 16)):  # official EANet multi-grid dilations of layer4
    blk.conv2.dilation, blk.conv2.padding = (d, d), (d, d)
ea_model = randomise(segref.Segmentor(bb, segref.EAHead(bb.out_channels[3], 16, 21, 3, memory=8)), 7)
with torch.no_grad():  # the trained official checkpoint has independent linear_0 / linear_1
    ea_model.decode_head.ea.linear_1.weight.add_(torch.randn_like(ea_model.decode_head.ea.linear_1.weight) * 0.1)
ea_sd = ea_model.state_dict()
official = {to_official_eanet(k): v for k, v in ea_sd.items()}
check("eanet: official names built (extractor.0.0, extractor.1, linu.*, fc2)",
      {"extractor.0.0.weight", "extractor.1.running_var", "extractor.7.2.conv3.weight", "linu.linear_1.weight",
       "linu.conv2.1.weight", "fc1.0.conv.weight", "fc2.bias"} <= set(official))
ea_ref = torch_logits(ea_model, rgb)
for fmt in ("zip", "legacy"):
    tag = f"eanet_official_{fmt}"
    ckpt = os.path.join(TMP, tag + ".pth")
    torch.save({"net": official, "epoch": 40}, ckpt, _use_new_zipfile_serialization=(fmt == "zip"))
    r = convert(ckpt, os.path.join(TMP, tag), "--from", "eanet")
    if not check(f"{tag}: converts with --from eanet", r.returncode == 0, r.stderr.strip()[-200:]):
        continue
    same_tensors(f"{tag}: renamed to segattn names, bit-exact", ea_sd, os.path.join(TMP, tag + ".safetensors"))
    cfg = json.load(open(os.path.join(TMP, tag + ".json")))
    bbc = cfg["backbone"]
    check(f"{tag}: config stem 16, multi_grid [2, 8, 16], align_corners, VOC classes",
          bbc["stem_channels"] == 16 and bbc.get("multi_grid") == [2, 8, 16] and cfg["align_corners"] is True and
          len(cfg.get("classes", [])) == 21 and cfg["decode_head"]["memory"] == 8, json.dumps(bbc))
    got, _ = segattn_logits(os.path.join(TMP, tag + ".json"), None, img_path, tag)
    compare_logits(f"{tag}: segattn predict --logits vs PyTorch", ea_ref, got)
r = convert(os.path.join(TMP, "tiny_ccnet_r18_zip.pth"), os.path.join(TMP, "not_eanet"), "--from", "eanet")
check("eanet: an mmseg checkpoint is refused by --from eanet", r.returncode != 0 and "EANet" in r.stderr, r.stderr.strip())

# ------------------------------------------------------------------------------------------------------
# 3. malicious pickles
# ------------------------------------------------------------------------------------------------------

section("3. malicious pickles")
MARK = os.path.join(TMP, "pwned")


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARK}",))


def zip_with_pickle(path, payload):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")


def legacy_with_pickle(path, payload):
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(payload)
        pickle.dump([], f, protocol=2)


evil_cases = {
    "zip, os.system at top level": (zip_with_pickle, pickle.dumps(Evil(), protocol=2)),
    "zip, os.system nested in meta": (zip_with_pickle, pickle.dumps({"meta": {"x": [Evil()]}, "state_dict": {}}, protocol=2)),
    "legacy, os.system at top level": (legacy_with_pickle, pickle.dumps(Evil(), protocol=2)),
    "legacy, protocol-0 GLOBAL posix.system": (legacy_with_pickle, f"cposix\nsystem\n(Vtouch {MARK}\ntR.".encode()),
    "zip, builtins.eval, protocol 4": (zip_with_pickle, f"c__builtin__\neval\n(V__import__('os').system('touch {MARK}')\ntR.".encode()),
    "zip, persistent 'module' record": (zip_with_pickle, b"\x80\x02(X\x06\x00\x00\x00moduleq\x00tQ."),
}
for name, (writer, payload) in evil_cases.items():
    path = os.path.join(TMP, "evil.pth")
    writer(path, payload)
    r = convert(path, os.path.join(TMP, "evil"))
    check(f"malicious ({name}): refused, nothing ran", r.returncode != 0 and "refusing" in r.stderr and
          not os.path.exists(MARK) and not os.path.exists(os.path.join(TMP, "evil.safetensors")), r.stderr.strip()[-160:])
# a bare pickle file (no torch container) holding the gadget
with open(os.path.join(TMP, "evil_bare.pth"), "wb") as f:
    pickle.dump(Evil(), f, protocol=2)
r = convert(os.path.join(TMP, "evil_bare.pth"), os.path.join(TMP, "evil"))
check("malicious (bare pickle): refused, nothing ran", r.returncode != 0 and not os.path.exists(MARK), r.stderr.strip()[-160:])
with open(os.path.join(TMP, "garbage.pth"), "wb") as f:
    f.write(b"\x80\x02garbage" * 10)
r = convert(os.path.join(TMP, "garbage.pth"), os.path.join(TMP, "garbage"))
check("corrupt pickle: clean error, no traceback", r.returncode == 1 and "Traceback" not in r.stderr, r.stderr.strip()[-160:])

# ------------------------------------------------------------------------------------------------------
# 4. the model zoo configs
# ------------------------------------------------------------------------------------------------------

section("4. configs/zoo")
zoo = sorted(glob.glob("configs/zoo/*.json"))
check("zoo: 40 configs ({ann,ccnet,isanet,nonlocal,fcn} x {r50,r101} x 4 datasets)", len(zoo) == 40, f"{len(zoo)} found")


with ThreadPoolExecutor(2) as pool:
    results = list(pool.map(lambda c: info(["-c", c, "--random-weights"]), zoo))
bad = [f"{c}: {e}" for c, (rc, e) in zip(zoo, results) if rc != 0]
check(f"zoo: every config loads (segattn info --random-weights --size 64x64, {len(zoo)} configs)", not bad, "; ".join(bad[:3]))
bad = []
for c in zoo:
    cfg = json.load(open(c))
    K = cfg["decode_head"]["num_classes"]
    ok = len(cfg.get("classes", [])) == K and len(cfg.get("palette", [])) == K and cfg.get("ignore_index") == 255
    ok &= (cfg["align_corners"] is True) == ("769" in c) and ("test_cfg" in cfg) == ("769" in c)
    ok &= K == (19 if "cityscapes" in c else 21 if "voc" in c else 150)
    ok &= cfg["backbone"]["depth"] == (101 if "_r101-" in c else 50) and "weights" not in cfg
    if not ok:
        bad.append(c)
check("zoo: classes, palettes, align_corners, slide test_cfg per dataset; no weights named", not bad, ", ".join(bad[:3]))


def real_layout(head, seed):
    """An r50-d8 mmseg model at full width (SPEC §10), Cityscapes classes, with its auxiliary head."""
    torch.manual_seed(seed)
    bb = segref.ResNetV1c(depth=50)
    K = 19
    hd = {"fcn": lambda: segref.FCNHead(2048, 512, K, 3, 2, True),
          "ann": lambda: segref.ANNHead((1024, 2048), 512, K, 256, (2, 3)),
          "ccnet": lambda: segref.CCHead(2048, 512, K, 3, 2),
          "isanet": lambda: segref.ISAHead(2048, 512, K, 256, 3, (8, 8)),
          "nonlocal": lambda: segref.NLHead(2048, 512, K, 3, 2)}[head]()
    return segref.Segmentor(bb, hd, segref.FCNHead(1024, 256, K, 2, 1, False))


section("4b. random checkpoints at mmseg layout against the zoo configs")
# SEGATTN_PARITY_QUICK (make asan-test) skips this part: five 50M-parameter models are slow under the sanitizers.
LAYOUT_HEADS = [] if os.environ.get("SEGATTN_PARITY_QUICK") else ["ann", "ccnet", "isanet", "nonlocal", "fcn"]
def fill_random(model, seed):
    """Random values from a 1M-number pool, taken at random offsets (cheap for 50M numbers)."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.rand(1 << 20, generator=g) * 0.02 - 0.01
    for p in model.state_dict().values():
        if p.is_floating_point():
            flat, done = p.view(-1), 0
            while done < flat.numel():
                start = int(torch.randint(0, 1 << 19, (1,), generator=g))
                k = min(flat.numel() - done, (1 << 20) - start)
                flat[done:done + k].copy_(pool[start:start + k] + (0.5 if p.ndim <= 1 else 0.0))
                done += k


# Parameter init is the slow part of building a 50M-parameter model: skip it, then fill with cheap random values.
_inits = {n: getattr(torch.nn.init, n) for n in ("kaiming_uniform_", "uniform_", "normal_")}
for n in _inits:
    setattr(torch.nn.init, n, lambda t, *a, **k: t)
for j, head in enumerate(LAYOUT_HEADS):
    t0 = time.time()
    model = real_layout(head, j)
    fill_random(model, j)
    ckpt = os.path.join(TMP, f"real_{head}.pth")
    torch.save({"meta": {"CLASSES": tuple(json.load(open("configs/zoo/fcn_r50-d8_cityscapes-512x1024.json"))["classes"])},
                "state_dict": model.state_dict()}, ckpt)
    n_params = sum(p.numel() for k, p in model.state_dict().items() if not k.startswith("auxiliary_head."))
    del model
    r = convert(ckpt, os.path.join(TMP, f"real_{head}"))
    os.remove(ckpt)
    zcfg = f"configs/zoo/{head}_r50-d8_cityscapes-512x1024.json"
    rc, err = info(["-c", zcfg, "-w", os.path.join(TMP, f"real_{head}.safetensors")]) if r.returncode == 0 else (-1, r.stderr)
    check(f"zoo: {zcfg} reads a random r50 {head} checkpoint at mmseg layout ({n_params / 1e6:.1f}M numbers): "
          "all tensors present, shapes equal, none unused", rc == 0 and "not used" not in err, err)
    if r.returncode == 0:
        mine, want = json.load(open(os.path.join(TMP, f"real_{head}.json"))), json.load(open(zcfg))
        check(f"zoo: converter's JSON for it equals {zcfg} (backbone, decode_head)",
              mine["backbone"] == want["backbone"] and mine["decode_head"] == want["decode_head"],
              json.dumps(mine["decode_head"]) + " vs " + json.dumps(want["decode_head"]))
    os.remove(os.path.join(TMP, f"real_{head}.safetensors"))
for n, f in _inits.items():
    setattr(torch.nn.init, n, f)

subprocess.run(["rm", "-rf", TMP])
print(f"{'FAILED ' + str(len(FAILED)) + ' check(s)' if FAILED else 'all checks passed'} in {time.time() - T0:.1f} s "
      f"({cpu_seconds():.1f} s CPU)")
sys.exit(1 if FAILED else 0)
