#!/usr/bin/env python3
"""Convert an mmsegmentation (or official EANet) PyTorch checkpoint to segattn's safetensors + model JSON.

    convert_mmseg.py CHECKPOINT.pth OUT_PREFIX [--fp16] [--keep-aux] [--from mmseg|eanet] [--no-config]

writes OUT_PREFIX.safetensors and, when the architecture can be recognised from the tensors, OUT_PREFIX.json
(classes and palette from the checkpoint's meta when it has them; test mode, align_corners and a few head
options from the training config text in meta["config"] when present, else mmseg's defaults).

No PyTorch needed: both checkpoint formats (the zip format of torch >= 1.6 and the legacy pre-1.6 stream)
are read with the standard library and numpy. The unpickler resolves only the handful of globals a state
dict needs (tensor/storage rebuilding, OrderedDict, numeric numpy scalars/arrays) and refuses every other
global with an error before anything is called, so a checkpoint cannot run code.
"""
import argparse
import collections
import io
import json
import os
import pickle
import re
import struct
import sys
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class CheckpointError(Exception):
    """The file is not a checkpoint we can read, or it asks for something we refuse."""


# ------------------------------------------------------------------------------------------------------
# Tensors and storages, as plain data
# ------------------------------------------------------------------------------------------------------

# torch storage class name -> (numpy dtype, safetensors dtype). BF16 has no numpy type: raw uint16.
STORAGE_TYPES = {
    "FloatStorage": (np.float32, "F32"), "DoubleStorage": (np.float64, "F64"), "HalfStorage": (np.float16, "F16"),
    "BFloat16Storage": (np.uint16, "BF16"), "LongStorage": (np.int64, "I64"), "IntStorage": (np.int32, "I32"),
    "ShortStorage": (np.int16, "I16"), "CharStorage": (np.int8, "I8"), "ByteStorage": (np.uint8, "U8"),
    "BoolStorage": (np.bool_, "BOOL"), "UntypedStorage": (np.uint8, "U8"),
}


class Inert:
    """Our own record classes: a pickle may not BUILD (set attributes on) them."""

    def __setstate__(self, state):
        raise CheckpointError("refusing to set the state of a tensor or storage record")


class StorageType(Inert):
    """What `torch.FloatStorage` and friends unpickle to: a name, never callable."""

    def __init__(self, name):
        self.name = name
        self.np_dtype, self.st_dtype = STORAGE_TYPES[name]


class Storage(Inert):
    """A flat buffer of one dtype (numpy 1-D array), filled from the archive."""

    def __init__(self, stype, numel):
        self.stype, self.numel, self.array = stype, numel, None


class Tensor(Inert):
    """A materialised tensor: a C-contiguous numpy array and its safetensors dtype name."""

    def __init__(self, array, st_dtype):
        self.array, self.st_dtype = array, st_dtype

    @property
    def shape(self):
        return tuple(self.array.shape)


class PendingTensor(Inert):
    """A tensor whose storage is read after the pickle (legacy format); resolved by materialise()."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _native(raw, np_dtype, little, count, offset=0):
    """A read-only numpy view of raw bytes in native byte order (a copy only when the order differs)."""
    dt = np.dtype(np_dtype)
    src = dt.newbyteorder("<" if little else ">")
    a = np.frombuffer(raw, src, count=count, offset=offset)
    return a if src.isnative or dt.itemsize == 1 else a.astype(dt)


def _check_ints(what, values):
    if not isinstance(values, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise CheckpointError(f"malformed tensor record: {what} is not a tuple of integers")
    return tuple(values)


def _view(storage, offset, size, stride):
    """A tensor from its storage: bounds-checked; a plain slice when contiguous, else gathered into a copy."""
    arr = storage.array
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0 or len(size) != len(stride):
        raise CheckpointError("malformed tensor record: negative size, stride or offset")
    n = 1
    for s in size:
        n *= s
    if n > arr.size:
        raise CheckpointError(f"tensor of size {list(size)} is larger than its storage of {arr.size} elements")
    if n:
        last = offset + sum((sz - 1) * st for sz, st in zip(size, stride))
        if last >= arr.size:
            raise CheckpointError(f"tensor of size {list(size)} reaches element {last} of a storage of {arr.size}")
        contiguous = all(st == int(np.prod(size[i + 1:], dtype=np.int64)) for i, st in enumerate(stride) if size[i] > 1)
        if contiguous:  # the common case: a plain slice of the storage, no gather needed
            return Tensor(arr[offset:offset + n].reshape(size), storage.stype.st_dtype)
        item = arr.itemsize
        view = np.lib.stride_tricks.as_strided(arr[offset:], shape=size, strides=[s * item for s in stride],
                                               writeable=False)
        out = np.array(view, order="C")
    else:
        out = np.zeros(size, arr.dtype)
    return Tensor(out, storage.stype.st_dtype)


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    """torch._utils._rebuild_tensor(_v2): the only way a tensor appears in a state dict."""
    if not isinstance(storage, Storage):
        raise CheckpointError("malformed tensor record: its storage is not a storage reference")
    if not isinstance(storage_offset, int):
        raise CheckpointError("malformed tensor record: storage offset is not an integer")
    size, stride = _check_ints("size", size), _check_ints("stride", stride)
    if storage.array is None:
        return PendingTensor(storage, storage_offset, size, stride)
    return _view(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *rest):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its data for our purposes."""
    if not isinstance(data, (Tensor, PendingTensor)):
        raise CheckpointError("malformed parameter record: its data is not a tensor")
    return data


def _codecs_encode(text, encoding="utf-8"):
    """protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("refusing _codecs.encode with unexpected arguments")
    return text.encode("latin1")


def _np_dtype(spec, align=False, copy=False):
    d = np.dtype(spec) if isinstance(spec, str) else None
    if d is None or d.kind not in "biufc":
        raise CheckpointError(f"refusing numpy dtype {spec!r} (only numeric dtypes are allowed)")
    return d


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
        raise CheckpointError("refusing a non-numeric numpy scalar")
    return np.frombuffer(data, dtype, count=1)[0]


NDARRAY = Inert()  # what `numpy.ndarray` unpickles to: only a marker for _reconstruct


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not NDARRAY:
        raise CheckpointError("refusing a numpy array subclass")
    return np.core.multiarray._reconstruct(np.ndarray, (0,), b"b")


def _ordered_dict(*args):
    if args and not isinstance(args[0], (list, tuple)):
        raise CheckpointError("refusing OrderedDict built from a non-sequence")
    return collections.OrderedDict(*args)


def _set(items=()):
    if not isinstance(items, (list, tuple)):
        raise CheckpointError("refusing set built from a non-sequence")
    return set(items)


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): _set,
    ("__builtin__", "set"): _set,
    ("numpy", "dtype"): _np_dtype,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
}
for _name in STORAGE_TYPES:
    ALLOWED_GLOBALS[("torch", _name)] = StorageType(_name)


class SafeUnpickler(pickle.Unpickler):
    """Resolves only ALLOWED_GLOBALS; storages come from `storage_source(record)`."""

    def __init__(self, file, storage_source):
        super().__init__(file)
        self.storage_source = storage_source

    def find_class(self, module, name):
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise CheckpointError(
                f"refusing to load: the checkpoint references '{module}.{name}', which a state dict never needs "
                "(only tensor/storage rebuilding, OrderedDict and numeric numpy values are allowed); "
                "it may try to run code")
        return obj

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
            raise CheckpointError(f"refusing persistent object of kind {kind!r} (only tensor storages are allowed)")
        return self.storage_source(pid)


def _load_pickle(file, storage_source):
    """Unpickles one pickle from a binary file object, which is left just after its STOP opcode."""
    try:
        return SafeUnpickler(file, storage_source).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
            struct.error, RecursionError, MemoryError) as e:
        raise CheckpointError(f"corrupt or unsupported pickle: {type(e).__name__}: {e}") from None


def _storage_record(pid, legacy):
    want = 6 if legacy else 5
    if len(pid) != want:
        raise CheckpointError(f"malformed storage record of {len(pid)} fields")
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if not isinstance(stype, StorageType):
        raise CheckpointError("malformed storage record: unknown storage type")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0 or numel > 1 << 40:
        raise CheckpointError("malformed storage record: bad key or size")
    return stype, key, numel


def _materialise(obj, memo=None):
    """Replaces PendingTensor objects (legacy format) by Tensors, recursively through dicts, lists, tuples."""
    if isinstance(obj, PendingTensor):
        return _view(obj.storage, obj.offset, obj.size, obj.stride)
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _materialise(obj[k])
        return obj
    if isinstance(obj, list):
        return [_materialise(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v) for v in obj)
    return obj


def read_zip_checkpoint(path):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError("zip archive without exactly one <folder>/data.pkl: not a PyTorch checkpoint")
        prefix = pkls[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"unknown byte order {byteorder!r}")
        storages = {}

        def source(pid):
            stype, key, numel = _storage_record(pid, legacy=False)
            if key in storages:
                return storages[key]
            entry = prefix + "data/" + key
            if entry not in names:
                raise CheckpointError(f"storage {key!r} missing from the archive")
            raw = zf.read(entry)
            itemsize = np.dtype(stype.np_dtype).itemsize
            if len(raw) < numel * itemsize:
                raise CheckpointError(f"storage {key!r} holds {len(raw)} bytes, expected {numel * itemsize}")
            st = Storage(stype, numel)
            st.array = _native(raw, stype.np_dtype, byteorder == "little", numel)
            storages[key] = st
            return st

        return _load_pickle(io.BytesIO(zf.read(pkls[0])), source)


def read_legacy_checkpoint(path):
    with open(path, "rb") as f:
        data = f.read()
    buf = io.BytesIO(data)

    def load_from(source):
        return _load_pickle(buf, source)

    def no_storage(pid):
        raise CheckpointError("unexpected storage in the checkpoint header")

    if load_from(no_storage) != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (bad magic number)")
    if load_from(no_storage) != LEGACY_PROTOCOL:
        raise CheckpointError("unsupported legacy checkpoint protocol version")
    sys_info = load_from(no_storage)
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    storages = {}

    def source(pid):
        stype, key, numel = _storage_record(pid, legacy=True)
        view = pid[5]
        if key not in storages:
            storages[key] = Storage(stype, numel)
        root = storages[key]
        if root.stype.name != stype.name:
            raise CheckpointError(f"storage {key!r} used with two dtypes")
        if view is None:
            return root
        # A view of a larger storage (pre-1.0 files): (view_key, offset, size) in elements.
        if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, (int, str)) for v in view)):
            raise CheckpointError("malformed storage view record")
        vkey, off, vsize = view
        if vkey not in storages:
            v = Storage(stype, vsize)
            v.view_of = (root, off)
            storages[vkey] = v
        return storages[vkey]

    result = load_from(source)
    keys = load_from(no_storage)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError("malformed storage key list")
    pos = buf.tell()
    for key in keys:
        st = storages.get(key)
        if st is None:
            raise CheckpointError(f"storage {key!r} listed but never referenced")
        if pos + 8 > len(data):
            raise CheckpointError("truncated checkpoint (storage header)")
        (numel,) = struct.unpack_from("<q" if little else ">q", data, pos)
        itemsize = np.dtype(st.stype.np_dtype).itemsize
        pos += 8
        if numel != st.numel or pos + numel * itemsize > len(data):
            raise CheckpointError(f"storage {key!r}: size mismatch or truncated data")
        st.array = _native(data, st.stype.np_dtype, little, numel, pos)
        pos += numel * itemsize
    for st in storages.values():
        if getattr(st, "view_of", None):
            root, off = st.view_of
            if root.array is None or off + st.numel > root.array.size:
                raise CheckpointError("storage view outside its storage")
            st.array = root.array[off:off + st.numel]
        elif st.array is None:
            raise CheckpointError("a storage has no data in the file")
    return _materialise(result)


def read_checkpoint(path):
    """Reads a .pth written by torch.save (either format) without PyTorch."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] == b"PK\x03\x04":
        return read_zip_checkpoint(path)
    if head[:1] == b"\x80":
        return read_legacy_checkpoint(path)
    if len(head) >= 8:
        with open(path, "rb") as f:
            f.seek(257)
            if f.read(5) == b"ustar":
                raise CheckpointError("tar-format checkpoint (PyTorch < 0.4) is not supported")
    raise CheckpointError("not a PyTorch checkpoint (neither a zip archive nor a pickle stream)")


# ------------------------------------------------------------------------------------------------------
# State dict extraction and renaming
# ------------------------------------------------------------------------------------------------------

def extract_state_dict(obj, source):
    """Returns (ordered {name: Tensor}, meta dict)."""
    meta = {}
    if isinstance(obj, dict) and isinstance(obj.get("meta"), dict):
        meta = obj["meta"]
    sd = None
    if isinstance(obj, dict):
        for key in (("net", "state_dict", "model") if source == "eanet" else ("state_dict", "model", "net")):
            if isinstance(obj.get(key), dict):
                sd = obj[key]
                break
        if sd is None and obj and all(isinstance(v, Tensor) for v in obj.values()):
            sd = obj
    if sd is None:
        raise CheckpointError("no state dict found (expected a dict with 'state_dict', or a plain state dict)")
    out = collections.OrderedDict()
    for k, v in sd.items():
        if not isinstance(k, str):
            raise CheckpointError("state dict key is not a string")
        if not isinstance(v, Tensor):
            raise CheckpointError(f"state dict entry {k!r} is not a tensor")
        if k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out, meta


EANET_MAP = [  # official EANet (MenghaoGuo/EANet model_torch.py) -> segattn's mmseg-style names (SPEC §14.3/14.5)
    (r"extractor\.0\.([0-6])\.(.*)", "backbone.stem.{0}.{1}"),  # conv, BN, ReLU, conv, BN, ReLU, conv
    (r"extractor\.1\.(.*)", "backbone.stem.7.{0}"),
    (r"extractor\.4\.(.*)", "backbone.layer1.{0}"),
    (r"extractor\.5\.(.*)", "backbone.layer2.{0}"),
    (r"extractor\.6\.(.*)", "backbone.layer3.{0}"),
    (r"extractor\.7\.(.*)", "backbone.layer4.{0}"),
    (r"fc0\.(conv|bn)\.(.*)", "decode_head.fc0.{0}.{1}"),
    (r"linu\.conv1\.(.*)", "decode_head.ea.conv1.{0}"),
    (r"linu\.linear_0\.(.*)", "decode_head.ea.linear_0.{0}"),
    (r"linu\.linear_1\.(.*)", "decode_head.ea.linear_1.{0}"),
    (r"linu\.conv2\.0\.(.*)", "decode_head.ea.conv2.conv.{0}"),
    (r"linu\.conv2\.1\.(.*)", "decode_head.ea.conv2.bn.{0}"),
    (r"fc1\.0\.(conv|bn)\.(.*)", "decode_head.fc1.{0}.{1}"),
    (r"fc2\.(.*)", "decode_head.conv_seg.{0}"),
]


def rename_eanet(sd):
    out, unknown = collections.OrderedDict(), []
    for k, v in sd.items():
        for pat, repl in EANET_MAP:
            m = re.fullmatch(pat, k)
            if m:
                out[repl.format(*m.groups())] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError("not an official EANet checkpoint: unexpected tensors " + ", ".join(unknown[:8]) +
                              (f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""))
    if "backbone.stem.7.weight" not in out or "decode_head.ea.linear_0.weight" not in out:
        raise CheckpointError("not an official EANet checkpoint: extractor.1 (bn1) or linu.linear_0 missing")
    return out


# ------------------------------------------------------------------------------------------------------
# Architecture recognition -> segattn model JSON
# ------------------------------------------------------------------------------------------------------

def _shape(sd, name):
    t = sd.get(name)
    if t is None:
        raise ValueError(f"tensor {name} missing")
    return t.shape


def _count(sd, prefix):
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


DEPTHS = {(2, 2, 2, 2, False): 18, (3, 4, 6, 3, False): 34, (3, 4, 6, 3, True): 50, (3, 4, 23, 3, True): 101,
          (3, 8, 36, 3, True): 152}


def _config_value(text, key):
    """First `key=<python literal>` in an mmcv config text (numbers, bools, tuples/lists of numbers, strings)."""
    m = re.search(r"\b" + re.escape(key) + r"\s*=\s*(True|False|None|'[^']*'|\"[^\"]*\"|[-0-9.e]+|[\(\[][-0-9.e,\s]*[\)\]])",
                  text)
    if not m:
        return None
    v = m.group(1)
    if v in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[v]
    if v[0] in "'\"":
        return v[1:-1]
    if v[0] in "([":
        parts = [p for p in re.split(r"[,\s]+", v[1:-1]) if p]
        return [float(p) if re.search(r"[.e]", p) else int(p) for p in parts]
    return float(v) if re.search(r"[.e]", v) else int(v)


def infer_backbone(sd):
    if "backbone.stem.0.weight" not in sd:
        raise ValueError("no backbone.stem.0.weight: not a ResNetV1c (deep stem) backbone")
    counts = tuple(_count(sd, f"backbone.layer{s}.") for s in range(1, 5))
    bottleneck = "backbone.layer1.0.conv3.weight" in sd
    depth = DEPTHS.get(counts + (bottleneck,))
    if depth is None:
        raise ValueError(f"ResNet blocks per stage {counts} match no known depth")
    stem = _shape(sd, "backbone.stem.6.weight")[0]
    base = _shape(sd, "backbone.layer1.0.conv1.weight")[0]
    bb = {"type": "ResNetV1c", "depth": depth, "stem_channels": stem, "base_channels": base,
          "strides": [1, 2, 1, 1], "dilations": [1, 1, 2, 4], "contract_dilation": True}
    sb_stages = [s for s in range(1, 5) if f"backbone.layer{s}.0.SB.sb_conv.weight" in sd]
    if sb_stages:
        fr = _shape(sd, f"backbone.layer{sb_stages[0]}.0.SB.feature_reduction.0.weight")
        sbw = _shape(sd, f"backbone.layer{sb_stages[0]}.0.SB.sb_conv.weight")
        bb["spatial_bias"] = {"stages": sb_stages, "channels": fr[0], "pool": int(round(sbw[0] ** 0.5)), "kernel": sbw[2]}
    return bb, (base * (4 if bottleneck else 1) * 2 ** np.arange(4)).tolist()


def infer_head(sd, stage_channels, text):
    p = "decode_head."
    num_classes = _shape(sd, p + "conv_seg.weight")[0]

    def index_of(cin):
        if cin not in stage_channels:
            raise ValueError(f"head input of {cin} channels matches no backbone stage")
        return stage_channels.index(cin)

    h = {}
    if p + "fusion.stages.0.key_project.conv.weight" in sd:
        low = _shape(sd, p + "fusion.stages.0.key_project.conv.weight")[1]
        high = _shape(sd, p + "fusion.stages.0.query_project.conv.weight")[1]
        n_stages = _count(sd, p + "fusion.stages.")
        h = {"type": "ann", "in_channels": [low, high], "in_index": [index_of(low), index_of(high)],
             "channels": _shape(sd, p + "bottleneck.conv.weight")[0],
             "project_channels": _shape(sd, p + "fusion.stages.0.key_project.conv.weight")[0],
             "query_scales": _config_value(text, "query_scales") or [1] * n_stages,
             "key_pool_scales": _config_value(text, "key_pool_scales") or [1, 3, 6, 8]}
        if len(h["query_scales"]) != n_stages:
            h["query_scales"] = [1] * n_stages
    elif p + "in_conv.conv.weight" in sd:
        w = _shape(sd, p + "in_conv.conv.weight")
        h = {"type": "isanet", "in_channels": w[1], "in_index": index_of(w[1]), "channels": w[0],
             "isa_channels": _shape(sd, p + "global_relation.key_project.0.conv.weight")[0],
             "down_factor": _config_value(text, "down_factor") or [8, 8]}
    elif p + "ea.linear_0.weight" in sd:
        w = _shape(sd, p + "fc0.conv.weight")
        h = {"type": "eanet", "in_channels": w[1], "in_index": index_of(w[1]), "channels": w[0],
             "memory": _shape(sd, p + "ea.linear_0.weight")[0], "out_channels": _shape(sd, p + "fc1.conv.weight")[0]}
    elif p + "convs.0.conv.weight" in sd:
        w = _shape(sd, p + "convs.0.conv.weight")
        h = {"in_channels": w[1], "in_index": index_of(w[1]), "channels": w[0]}
        if p + "cca.query_conv.weight" in sd:
            h = {"type": "ccnet", **h, "recurrence": _config_value(text, "recurrence") or 2}
        elif p + "nl_block.g.conv.weight" in sd:
            inter = _shape(sd, p + "nl_block.g.conv.weight")[0]
            use_scale = _config_value(text, "use_scale")
            h = {"type": "nonlocal", **h, "reduction": max(h["channels"] // inter, 1),
                 "use_scale": True if use_scale is None else use_scale, "mode": "embedded_gaussian"}
        else:
            h = {"type": "fcn", **h, "num_convs": _count(sd, p + "convs."),
                 "concat_input": p + "conv_cat.conv.weight" in sd, "kernel_size": w[2]}
            dil = _config_value(text, "dilation")
            if isinstance(dil, int) and dil > 1:
                h["dilation"] = dil
    else:
        raise ValueError("decode head type not recognised (fcn, ann, ccnet, isanet, eanet, nonlocal)")
    h["num_classes"] = num_classes
    order = ["type", "num_classes", "in_channels", "in_index", "channels"]
    return {k: h[k] for k in order + [k for k in h if k not in order]}


def _classes_palette(meta):
    dm = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    classes = meta.get("CLASSES", dm.get("classes"))
    palette = meta.get("PALETTE", dm.get("palette"))
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        classes = list(classes)
    else:
        classes = None
    try:
        palette = [[int(c) for c in rgb] for rgb in palette] if palette is not None else None
        if palette and not all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette):
            palette = None
    except (TypeError, ValueError):
        palette = None
    return classes, palette


VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


def voc_palette():
    """The standard VOC bit-interleaved colour map (SPEC §13)."""
    out = []
    for i in range(21):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append([r, g, b])
    return out


def build_config(sd, meta, source, weights_name):
    text = meta.get("config") if isinstance(meta.get("config"), str) else ""
    bb, stage_channels = infer_backbone(sd)
    head = infer_head(sd, stage_channels, text)
    cfg = {"backbone": bb, "decode_head": head}
    notes = []
    if source == "eanet":
        # Official EANet: stem 3->64->64->128 (stem_channels 128), layer4 dilations 2, 8, 16 (multi-grid (1,2,4) x 4
        # after block 0), logits upsampled with align_corners=True (SPEC §14.2, 14.1).
        if bb["depth"] >= 50:
            bb["multi_grid"] = [2, 8, 16]
        cfg["align_corners"] = True
        classes, palette = (VOC_CLASSES, voc_palette()) if head["num_classes"] == 21 else (None, None)
        notes.append("official EANet checkpoint; its published numbers use multi-scale + flip testing")
    else:
        for key in ("strides", "dilations"):
            v = _config_value(text, key)
            if isinstance(v, list) and len(v) == 4:
                bb[key] = v
        v = _config_value(text, "contract_dilation")
        if isinstance(v, bool):
            bb["contract_dilation"] = v
        v = _config_value(text, "multi_grid")
        if isinstance(v, list) and v:
            notes.append("the training config sets multi_grid; check backbone.multi_grid")
        cfg["align_corners"] = bool(_config_value(text, "align_corners"))
        classes, palette = _classes_palette(meta)
    m = re.search(r"mean=\[([-0-9.,\s]+)\]", text)
    s = re.search(r"std=\[([-0-9.,\s]+)\]", text)
    cfg["mean"] = [float(x) for x in m.group(1).split(",") if x.strip()] if m else [123.675, 116.28, 103.53]
    cfg["std"] = [float(x) for x in s.group(1).split(",") if x.strip()] if s else [58.395, 57.12, 57.375]
    if len(cfg["mean"]) != 3 or len(cfg["std"]) != 3:
        cfg["mean"], cfg["std"] = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    cfg["to_rgb"] = True
    cfg["weights"] = [weights_name]
    if classes is not None and len(classes) == head["num_classes"]:
        cfg["classes"] = classes
    if palette is not None and len(palette) >= head["num_classes"]:
        cfg["palette"] = palette[: max(head["num_classes"], 1)]
    if "classes" in cfg or source == "eanet":
        cfg["ignore_index"] = 255
    tm = re.search(r"test_cfg\s*=\s*dict\(((?:[^()]|\([^()]*\))*)\)", text)
    if tm and re.search(r"mode\s*=\s*'slide'", tm.group(1)):
        crop, stride = _config_value(tm.group(1), "crop_size"), _config_value(tm.group(1), "stride")
        if isinstance(crop, list) and isinstance(stride, list) and len(crop) == 2 and len(stride) == 2:
            cfg["test_cfg"] = {"mode": "slide", "crop_size": crop, "stride": stride}
    if notes:
        cfg["note"] = "; ".join(notes)
    return cfg


# ------------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------------

def to_output_dtype(t, fp16):
    """Only dtypes segattn's reader knows; F64 becomes F32; --fp16 halves float tensors that fit."""
    a, d = t.array, t.st_dtype
    if d == "F64":
        a, d = a.astype(np.float32), "F32"
    elif d in ("I16", "I8"):
        a, d = a.astype(np.int32), "I32"
    if fp16 and d in ("F32", "BF16"):
        f = a if d == "F32" else (a.astype(np.uint32) << 16).view(np.float32)
        with np.errstate(over="ignore"):
            h = f.astype(np.float16)
        if np.isfinite(f).all() and not np.isfinite(h).all():
            return Tensor(np.array(f, order="C"), "F32"), True  # would overflow in half precision: keep F32
        return Tensor(h, "F16"), False
    return Tensor(a if a.flags.c_contiguous else np.array(a, order="C"), d), False


def write_safetensors(path, tensors, metadata):
    header, offset = {}, 0
    for name, t in tensors.items():
        n = t.array.nbytes
        header[name] = {"dtype": t.st_dtype, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for t in tensors.values():
            a = t.array if t.array.dtype.byteorder != ">" else t.array.astype(t.array.dtype.newbyteorder("<"))
            f.write(np.array(a, order="C", copy=False).reshape(-1).data)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Convert an mmsegmentation .pth checkpoint to segattn safetensors "
                                 "(+ model JSON), without PyTorch.")
    ap.add_argument("checkpoint")
    ap.add_argument("out_prefix", help="writes OUT_PREFIX.safetensors and OUT_PREFIX.json")
    ap.add_argument("--fp16", action="store_true", help="store float tensors as F16 (half the size)")
    ap.add_argument("--keep-aux", action="store_true", help="keep auxiliary_head.* tensors (not used at inference)")
    ap.add_argument("--from", dest="source", choices=("mmseg", "eanet"), default="mmseg",
                    help="checkpoint naming: mmseg (default) or the official EANet code (MenghaoGuo/EANet)")
    ap.add_argument("--no-config", action="store_true", help="do not write OUT_PREFIX.json")
    args = ap.parse_args(argv)
    try:
        obj = read_checkpoint(args.checkpoint)
        sd, meta = extract_state_dict(obj, args.source)
        if args.source == "eanet":
            sd = rename_eanet(sd)
        dropped = [k for k in sd if k.startswith("auxiliary_head.")] if not args.keep_aux else []
        out, kept_f32 = collections.OrderedDict(), []
        for k, t in sd.items():
            if k in dropped:
                continue
            out[k], overflow = to_output_dtype(t, args.fp16)
            if overflow:
                kept_f32.append(k)
    except CheckpointError as e:
        print(f"convert_mmseg: {args.checkpoint}: {e}", file=sys.stderr)
        return 1
    except (OSError, zipfile.BadZipFile) as e:
        print(f"convert_mmseg: {args.checkpoint}: {e}", file=sys.stderr)
        return 1
    weights_path = args.out_prefix + ".safetensors"
    meta_out = {"format": "pt", "source": os.path.basename(args.checkpoint), "naming": "mmseg",
                "converted_by": "segattn scripts/convert_mmseg.py"}
    if isinstance(meta.get("mmseg_version"), str):
        meta_out["mmseg_version"] = meta["mmseg_version"]
    try:
        write_safetensors(weights_path, out, meta_out)
    except OSError as e:
        print(f"convert_mmseg: {weights_path}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {weights_path}: {len(out)} tensors" + (f", dropped {len(dropped)} auxiliary_head tensors"
                                                          if dropped else ""))
    if kept_f32:
        print(f"note: {len(kept_f32)} tensors kept as F32 (they overflow F16): {', '.join(kept_f32[:4])}")
    if not args.no_config:
        try:
            cfg = build_config(sd, meta, args.source, os.path.basename(weights_path))
        except ValueError as e:
            print(f"note: no model JSON written ({e}); write one by hand (see configs/zoo)")
            return 0
        cfg_path = args.out_prefix + ".json"
        with open(cfg_path + ".tmp", "w") as f:
            json.dump(cfg, f, indent=1)
            f.write("\n")
        os.replace(cfg_path + ".tmp", cfg_path)
        what = [cfg["decode_head"]["type"], f"r{cfg['backbone']['depth']}", f"{cfg['decode_head']['num_classes']} classes"]
        if "classes" not in cfg:
            what.append("no class names in the checkpoint")
        print(f"wrote {cfg_path}: {', '.join(what)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
