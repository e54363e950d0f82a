# Developer tool (not needed to build or test): makes extra parity vectors with the plain-PyTorch
# reference (../shared/reference/segref.py), computed in float64, in the layout of tests/data/<case>/.
# usage: /usr/bin/python3 tests/gen/make_vectors.py OUT_DIR CASE_JSON
#   CASE_JSON: {"name": ..., "backbone": {...}, "decode_head": {...}, "sizes": [[h, w], [h, w]], "seed": n}
import json, os, sys
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REF = os.environ.get("SEGREF", os.path.join(os.path.dirname(__file__), "../../../shared/reference"))
sys.path.insert(0, REF)
import segref  # noqa: E402
import st  # noqa: E402

out_root, spec = sys.argv[1], json.loads(sys.argv[2])
torch.manual_seed(spec.get("seed", 0))
bb, hd = dict(spec["backbone"]), dict(spec["decode_head"])
bb.pop("type", None)
multi_grid = bb.pop("multi_grid", None)
backbone = segref.ResNetV1c(**bb)
if multi_grid:  # mmseg's multi_grid: absolute dilations of the last stage's blocks
    for blk, d in zip(backbone.layer4, multi_grid):
        conv = blk.conv2 if isinstance(blk, segref.Bottleneck) else blk.conv1
        conv.dilation, conv.padding = (d, d), (d, d)
kind = hd.pop("type")
K, C, cin, idx = hd.pop("num_classes"), hd.pop("channels"), hd.pop("in_channels"), hd.pop("in_index")
if kind == "fcn":
    head = segref.FCNHead(cin, C, K, idx, hd.get("num_convs", 2), hd.get("concat_input", True))
elif kind == "ann":
    head = segref.ANNHead(tuple(cin), C, K, hd["project_channels"], tuple(idx), tuple(hd.get("query_scales", [1])),
                          tuple(hd.get("key_pool_scales", [1, 3, 6, 8])))
elif kind == "ccnet":
    head = segref.CCHead(cin, C, K, idx, hd.get("recurrence", 2))
elif kind == "isanet":
    head = segref.ISAHead(cin, C, K, hd["isa_channels"], idx, tuple(hd.get("down_factor", [8, 8])))
elif kind == "eanet":
    head = segref.EAHead(cin, C, K, idx, hd.get("memory", 64))
elif kind == "nonlocal":
    head = segref.NLHead(cin, C, K, idx, hd.get("reduction", 2))
model = segref.Segmentor(backbone, head).eval()
# Random BN statistics and non-zero gammas so every path matters.
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.dim() == 0:
            p.fill_(0.7)
        elif p.dim() == 1:
            p.copy_(torch.rand_like(p) * 0.5 + 0.75 if name.endswith("weight") else torch.randn_like(p) * 0.1)
        else:
            fan = p[0].numel()
            p.copy_(torch.randn_like(p) * (2.0 / fan) ** 0.5)
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(torch.randn_like(b) * 0.1)
        elif name.endswith("running_var"):
            b.copy_(torch.rand_like(b) * 0.5 + 0.75)
d = os.path.join(out_root, spec["name"])
os.makedirs(d, exist_ok=True)
sd = {k: v.detach().numpy().astype(np.float32) if v.dtype.is_floating_point else v.numpy()
      for k, v in model.state_dict().items()}
st.save(os.path.join(d, "weights.safetensors"), sd)
cfg = {"backbone": spec["backbone"], "decode_head": spec["decode_head"], "mean": list(segref.MEAN),
       "std": list(segref.STD), "to_rgb": True, "align_corners": False, "note": "made by tests/gen/make_vectors.py"}
json.dump(cfg, open(os.path.join(d, "model.json"), "w"), indent=1)
model = model.double()
camvid = os.path.join(REF, "../data/camvid/val/images")
files = sorted(os.listdir(camvid))
rng = np.random.default_rng(spec.get("seed", 0))
for i, (h, w) in enumerate(spec["sizes"]):
    img = np.asarray(Image.open(os.path.join(camvid, files[rng.integers(len(files))])).convert("RGB"))
    y, x = rng.integers(0, img.shape[0] - h + 1), rng.integers(0, img.shape[1] - w + 1)
    crop = np.ascontiguousarray(img[y:y + h, x:x + w])
    Image.fromarray(crop).save(os.path.join(d, f"input{i}.png"))
    t = (torch.from_numpy(crop.astype(np.float32)) - torch.tensor(segref.MEAN)) / torch.tensor(segref.STD)
    t = t.permute(2, 0, 1)[None].double()
    with torch.no_grad():
        feats = model.backbone(t)
        logits = model.decode_head(feats)
        up = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
    top2 = up.topk(2, 1).values[0]
    labels = up.argmax(1)[0].numpy().astype(np.uint8)
    exp = {"input": t.float().numpy(), "logits": logits.float().numpy(), "margin": (top2[0] - top2[1]).numpy().astype(np.float16)}
    for s in range(4):
        exp[f"backbone.layer{s + 1}"] = feats[s].float().numpy()
    st.save(os.path.join(d, f"expected{i}.safetensors"), exp)
    Image.fromarray(labels).save(os.path.join(d, f"labels{i}.png"))
print(d)
