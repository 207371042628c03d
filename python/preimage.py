"""preimage's networks in PyTorch.

`preimage train-decoder` saves a decoder as `RUN/decoder.safetensors` and `train-encoder` its
encoder as `RUN/encoder.safetensors`, both in PyTorch's layout with what the network is in the
file's metadata. This module rebuilds them as `torch.nn.Module`s, so codes taken in PyTorch
decode without Rust, and our posenet encodes there too:

    import sys; sys.path.insert(0, "python")        # this folder of the preimage checkout
    import preimage
    decoder, info = preimage.load_decoder("runs/decoder-fc7")   # run folder or decoder.safetensors
    images = decoder(codes)              # [N, *info["code_shape"]] or [N, D] -> [N, 3, H, W] in [0, 1]
    encoder = preimage.load_encoder("runs/posenet")            # run folder or encoder.safetensors
    images = torch.stack([preimage.image_transform(encoder)(PIL.Image.open(f).convert("RGB")) for f in files])
    codes = encoder(images, ["fc7"])["fc7"]                     # dict by tap

Needs `torch` and `safetensors`. The layers mirror `src/decoder/upconv.rs` and
`src/encoder/net.rs` one to one; their names are the keys of the files, so `load_state_dict`
checks every weight (strict). torchvision's AlexNet and VGG are torchvision's own modules.
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

__all__ = ["Decoder", "Encoder", "image_transform", "load_codes", "load_decoder", "load_encoder", "save_codes"]


class Stage(nn.Module):
    """Doubles the map: a stride-2 4x4 up-convolution (or nearest 2x + 3x3 convolution), then
    3x3 convolutions; leaky ReLU after each."""

    def __init__(self, cin, cout, upsample, convs):
        super().__init__()
        if upsample == "deconv":
            self.deconv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
        elif upsample == "resize":
            self.resize_conv = nn.Conv2d(cin, cout, 3, padding=1)
        else:
            raise ValueError(f"unknown upsample {upsample!r}")
        self.upsample = upsample
        self.convs = nn.ModuleList(nn.Conv2d(cout, cout, 3, padding=1) for _ in range(convs))

    def forward(self, x, slope):
        if self.upsample == "deconv":
            x = self.deconv(x)
        else:
            x = self.resize_conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = F.leaky_relu(x, slope)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), slope)
        return x


class Decoder(nn.Module):
    """Codes -> `[0, 1]` RGB images, built from a decoder's plan (`decoder.json`'s `plan`)."""

    def __init__(self, plan):
        super().__init__()
        arch = plan["arch"]
        self.code_shape = list(plan["code_shape"])
        self.image_size = list(plan["image_size"])
        self.base = list(plan["base"])
        self.slope = arch["leaky_slope"]
        self.output = arch["output"]
        self.fcs = nn.ModuleList()
        self.pre = nn.ModuleList()
        if len(self.code_shape) == 1:
            dims = [self.code_shape[0], *arch["fc"], math.prod(self.base)]
            self.fcs.extend(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        else:
            c = self.code_shape[0]
            for o in arch["spatial_convs"]:
                self.pre.append(nn.Conv2d(c, o, 3, padding=1))
                c = o
        c = self.base[0]
        self.stages = nn.ModuleList()
        for o in plan["stages"]:
            self.stages.append(Stage(c, o, arch["upsample"], arch["convs_per_stage"]))
            c = o
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, codes):
        n = codes.shape[0]
        if self.fcs:
            x = codes.reshape(n, -1)
            for fc in self.fcs:
                x = F.leaky_relu(fc(x), self.slope)
            x = x.reshape(n, *self.base)
        else:
            x = codes.reshape(n, *self.code_shape)
            for conv in self.pre:
                x = F.leaky_relu(conv(x), self.slope)
        for stage in self.stages:
            x = stage(x, self.slope)
        y = self.out(x)
        if self.output == "sigmoid":
            y = torch.sigmoid(y)
        elif self.output == "tanh":
            y = (torch.tanh(y) + 1) * 0.5
        elif self.output == "clamp":
            y = y.clamp(0, 1)
        elif self.output != "none":
            raise ValueError(f"unknown output activation {self.output!r}")
        # The chain's overshoot is centre-cropped to the image size (D&B's 256 -> 227).
        h, w = self.image_size
        oy, ox = (y.shape[2] - h) // 2, (y.shape[3] - w) // 2
        return y[:, :, oy : oy + h, ox : ox + w]


def _read(path, folder_file, key, what):
    if os.path.isdir(path):
        path = os.path.join(path, folder_file)
    with safe_open(path, framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if key not in meta:
            raise ValueError(f"{path} holds no {what} description (metadata {key!r}); is it a preimage {folder_file}?")
        state = {k: f.get_tensor(k) for k in f.keys()}
    return json.loads(meta[key]), state


def load_decoder(path):
    """The decoder in a run folder (or its `decoder.safetensors`) and its info (`decoder.json`:
    encoder, tap, code_shape, image_size, preprocessing, ...), in eval mode."""
    info, state = _read(path, "decoder.safetensors", "decoder", "decoder")
    decoder = Decoder(info["plan"])
    decoder.load_state_dict(state, strict=True)
    return decoder.eval(), info


class Encoder(nn.Module):
    """A preimage encoder (posenet, or any spec `preimage` writes) from its spec: the plan of
    convolutions (+ BatchNorm) with ReLU, max pools, fully connected layers and side heads,
    each step's output readable at its tap (Caffe names: conv1 .. fc8, prob, pose)."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec["mean"]).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec["std"]).reshape(1, 3, 1, 1), persistent=False)
        h, w = spec["input_size"]
        shape, taps, modules = [3, h, w], {}, {}
        for layer in spec["layers"]:
            op = layer["op"]
            if op == "conv":
                k, s, p = layer["kernel"], layer["stride"], layer["pad"]
                modules[layer["key"]] = nn.Conv2d(shape[0], layer["out"], k, stride=s, padding=p)
                if layer.get("bn_key"):
                    modules[layer["bn_key"]] = nn.BatchNorm2d(layer["out"])
                shape = [layer["out"], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
            elif op == "max_pool":
                k, s, p = layer["kernel"], layer["stride"], layer["pad"]
                shape = [shape[0], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1]
            elif op == "adaptive_avg":
                shape = [shape[0], layer["size"], layer["size"]]
            elif op == "flatten":
                shape = [math.prod(shape)]
            elif op == "fc":
                source = taps[layer["from"]] if layer.get("from") else shape
                modules[layer["key"]] = nn.Linear(math.prod(source), layer["out"])
                if not layer.get("from"):
                    shape = [layer["out"]]
            if layer.get("tap"):
                taps[layer["tap"]] = shape if op != "fc" else [layer["out"]]
        # Keys such as `features.0` and `pose` become nested modules named like the file's keys.
        for key, module in modules.items():
            parent = self
            *path, last = key.split(".")
            for part in path:
                if not hasattr(parent, part):
                    parent.add_module(part, nn.Module())
                parent = getattr(parent, part)
            parent.add_module(last, module)
        self.tap_shapes = taps

    def _module(self, key):
        m = self
        for part in key.split("."):
            m = getattr(m, part)
        return m

    def forward(self, images, taps):
        """`[0, 1]` RGB images `[N, 3, H, W]` (resized and centre-cropped as the encoder's
        preprocessing says) -> {tap: activation} for the requested taps."""
        x = (images - self.mean) / self.std
        want, out, seen = set(taps), {}, {}
        for layer in self.spec["layers"]:
            if not want:
                break
            op = layer["op"]
            if op == "conv":
                x = self._module(layer["key"])(x)
                if layer.get("bn_key"):
                    x = self._module(layer["bn_key"])(x)
                x = F.relu(x)
            elif op == "max_pool":
                x = F.max_pool2d(x, layer["kernel"], layer["stride"], layer["pad"])
            elif op == "adaptive_avg":
                x = F.adaptive_avg_pool2d(x, layer["size"])
            elif op == "flatten":
                x = x.flatten(1)
            elif op == "fc":
                source = seen[layer["from"]].flatten(1) if layer.get("from") else x.flatten(1)
                y = self._module(layer["key"])(source)
                if layer["relu"]:
                    y = F.relu(y)
                if layer.get("from"):
                    # A side head (pose) does not feed the trunk.
                    out[layer["tap"]] = y
                    want.discard(layer["tap"])
                    continue
                x = y
            elif op == "softmax":
                x = F.softmax(x.flatten(1), dim=1)
            tap = layer.get("tap")
            if tap:
                seen[tap] = x
                if tap in want:
                    out[tap] = x
                    want.discard(tap)
        if want:
            raise KeyError(f"unknown taps {sorted(want)}; valid: {list(self.tap_shapes)}")
        return out


def load_encoder(path):
    """The encoder a `train-encoder` run saved (its folder, or `encoder.safetensors`), in eval
    mode (BatchNorm with running statistics, as preimage uses a frozen encoder)."""
    spec, state = _read(path, "encoder.safetensors", "preimage_encoder_spec", "encoder")
    encoder = Encoder(spec)
    for layer in spec["layers"]:
        if layer.get("bn_key"):
            # PyTorch counts BatchNorm's training steps; preimage does not keep the count.
            state.setdefault(layer["bn_key"] + ".num_batches_tracked", torch.tensor(0))
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def image_transform(net):
    """The torchvision transform giving the pixels preimage feeds `net` (an `Encoder`, or a
    decoder's info): resized (PIL bilinear; the shorter side, or `[h, w]` exactly, as the spec's
    `resize` says), centre crop, `[0, 1]` tensor. The
    encoder normalizes them itself, as in preimage. Needs torchvision."""
    from torchvision import transforms

    if isinstance(net, Encoder):
        resize, crop = net.spec["resize"], net.spec["input_size"]
    else:
        resize, crop = net["preprocessing"]["resize"], net["preprocessing"]["crop"]
    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(list(crop)), transforms.ToTensor()])


def save_codes(path, codes, ids=None, labels=None):
    """Codes taken in PyTorch (`{tap: tensor [N, ...]}`, e.g. from `create_feature_extractor`)
    as a code file that `preimage reconstruct`, `edit` and `invert --codes` read: rows named by
    `ids` (file names, say; default 000000, 000001, ...), optional integer `labels`."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in codes.items()}
    counts = {t.shape[0] for t in tensors.values()}
    if len(counts) != 1:
        raise ValueError(f"every tap needs the same number of rows, got {sorted(counts)}")
    (rows,) = counts
    if ids is not None and len(ids) != rows:
        raise ValueError(f"{len(ids)} ids for {rows} rows")
    if labels is not None:
        tensors["label"] = torch.as_tensor(labels, dtype=torch.int64)
    save_file(tensors, path, metadata={"ids": json.dumps(list(ids))} if ids is not None else None)


def load_codes(path):
    """A code file (`preimage extract`'s or `save_codes`'): `({tap: tensor}, ids, metadata)`;
    the dict also holds `label` and `pose` where the file has them, and `metadata` is the file's
    (encoder, weights_sha256, preprocessing, ... as JSON strings). A `.pt` from `extract --out
    F.pt` is `torch.load`ed (weights only)."""
    with open(path, "rb") as f:
        is_zip = f.read(2) == b"PK"
    if is_zip:
        saved = torch.load(path, weights_only=True, map_location="cpu")
        meta = dict(saved.pop("__metadata__", {}))
        ids = saved.pop("ids", None)
        tensors = {k: v for k, v in saved.items() if isinstance(v, torch.Tensor)}
        rows = next((t.shape[0] for k, t in tensors.items() if k not in ("label", "pose")), 0)
        return tensors, list(ids) if ids is not None else [f"{i:06}" for i in range(rows)], meta
    with safe_open(path, framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "ids_tensor" in meta:  # too many ids for the header (100 MB): their JSON as uint8
        meta["ids"] = bytes(tensors.pop(meta.pop("ids_tensor")).numpy()).decode()
    rows = next((t.shape[0] for k, t in tensors.items() if k not in ("label", "pose")), 0)
    ids = json.loads(meta["ids"]) if "ids" in meta else [f"{i:06}" for i in range(rows)]
    return tensors, ids, meta
