"""How much of the objects' colour do codes hold, and how much do decoders give back?

    python bench/colour_probe.py runs/codes.safetensors data/render [RECON_DIR ...]

Needs numpy and pillow (not used by CI). For 3 000 random rows of the code file: a ridge
regression from each tap's codes to the object's mean chroma (its mean RGB minus the grey level;
object pixels = those far from the corner colour), trained on 2 000 rows, R^2 on the other
1 000. For each RECON_DIR (from `preimage reconstruct`): mean |pixel - its grey level| of up to
200 reconstructions against their originals.
"""
import glob, json, os, struct, sys

import numpy as np
from PIL import Image


def read_codes(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    ids = json.loads(header["__metadata__"]["ids"])
    taps = {}
    for k, v in header.items():
        if k in ("__metadata__", "label", "pose") or v["dtype"] != "F32":
            continue
        a, b = v["data_offsets"]
        taps[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.float32).reshape(v["shape"][0], -1)
    return ids, taps


def rgb(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def object_chroma(img):
    mask = np.abs(img - img[0, 0]).sum(-1) > 0.25
    c = img[mask].mean(0) if mask.sum() > 20 else img.reshape(-1, 3).mean(0)
    return c - c.mean()


def ridge_r2(x, y, train=2000, lam=10.0):
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-6)
    xa = np.c_[x, np.ones(len(x))]
    w = np.linalg.solve(xa[:train].T @ xa[:train] + lam * np.eye(xa.shape[1]), xa[:train].T @ y[:train])
    p = xa[train:] @ w
    return 1 - ((p - y[train:]) ** 2).sum() / ((y[train:] - y[train:].mean(0)) ** 2).sum()


def main():
    codes, data, recons = sys.argv[1], sys.argv[2], sys.argv[3:]
    ids, taps = read_codes(codes)
    sel = np.random.default_rng(0).choice(len(ids), min(3000, len(ids)), replace=False)
    y = np.array([object_chroma(rgb(os.path.join(data, ids[i]))) for i in sel])
    for tap, x in taps.items():
        print(f"{tap:6} {x.shape[1]:6} values: object chroma R^2 (held out) = {ridge_r2(x[sel], y):.3f}")
    chroma = lambda img: np.abs(img - img.mean(-1, keepdims=True)).mean()
    for d in recons:
        files = sorted(glob.glob(os.path.join(d, "**", "*.png"), recursive=True))[:200]
        r = np.mean([chroma(rgb(f)) for f in files])
        o = np.mean([chroma(rgb(os.path.join(data, os.path.relpath(f, d)))) for f in files])
        print(f"{d}: mean chroma {r:.4f} (originals {o:.4f}, {len(files)} images)")


if __name__ == "__main__":
    main()
