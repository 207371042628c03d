"""A preimage decoder in PyTorch.

`preimage train-decoder` saves the decoder's weights as `RUN/decoder.safetensors`, in PyTorch's
layout and with what the network is (`decoder.json`) in the file's metadata. This module
rebuilds it as a `torch.nn.Module`, so codes taken in PyTorch (a forward hook or
`create_feature_extractor` at the tap's module, which `preimage taps` names) decode without Rust:

    import sys; sys.path.insert(0, "python")      # this folder of the preimage checkout
    from preimage_decoder import load
    decoder, info = load("runs/decoder-fc7")      # the run folder, or its decoder.safetensors
    images = decoder(codes)                       # [N, *info["code_shape"]] or [N, D] -> [N, 3, H, W] in [0, 1]

Needs `torch` and `safetensors`. The layers mirror `src/decoder/upconv.rs` one to one; their
names are the keys of the file, so `load_state_dict` checks every weight (strict).
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

__all__ = ["Decoder", "load"]


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


def load(path, map_location="cpu"):
    """The decoder in a run folder (or its `decoder.safetensors`) and its info (`decoder.json`:
    encoder, tap, code_shape, image_size, preprocessing, ...), in eval mode."""
    if os.path.isdir(path):
        path = os.path.join(path, "decoder.safetensors")
    with safe_open(path, framework="pt", device=str(map_location)) as f:
        meta = f.metadata() or {}
        if "decoder" not in meta:
            raise ValueError(f"{path} holds no decoder description (metadata 'decoder'); is it a preimage decoder.safetensors?")
        info = json.loads(meta["decoder"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    decoder = Decoder(info["plan"])
    decoder.load_state_dict(state, strict=True)
    return decoder.eval(), info
