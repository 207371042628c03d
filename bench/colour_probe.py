"""How much of the objects' colour do codes hold, and how much do decoders give back?

    python bench/colour_probe.py runs/codes.safetensors data/render [RECON_DIR ...]

Needs numpy and pillow (not used by CI). For 3 000 random rows of the code file: a ridge
regression from each tap's codes to the object's mean chroma (its mean RGB minus the grey level;
object pixels = those far from the corner colour), trained on 2 000 rows, R^2 on the other
1 000. For each RECON_DIR (from `preimage reconstruct`): mean |pixel - its grey level| of up to
200 reconstructions against their originals, and whether the object's hue came back: the angle
between the object's chroma vectors (mean RGB minus its grey level, over the original's object
pixels) in the reconstruction and in the original (median, and the share within 30 degrees;
unrelated hues give a median of 90 and a share of 1/6).
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


def object_mask(img):
    return np.abs(img - img[0, 0]).sum(-1) > 0.25


def object_chroma(img, mask=None):
    mask = object_mask(img) if mask is None else mask
    c = img[mask].mean(0) if mask.sum() > 20 else img.reshape(-1, 3).mean(0)
    return c - c.mean()


def hue_angle(recon, orig):
    mask = object_mask(orig)
    a, b = object_chroma(recon, mask), object_chroma(orig, mask)
    cos = (a @ b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


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
        pairs = [(rgb(f), rgb(os.path.join(data, os.path.relpath(f, d)))) for f in files]
        r = np.mean([chroma(a) for a, _ in pairs])
        o = np.mean([chroma(b) for _, b in pairs])
        ang = np.array([hue_angle(a, b) for a, b in pairs])
        print(f"{d}: mean chroma {r:.4f} (originals {o:.4f}), object hue angle median {np.median(ang):.0f} deg, "
              f"within 30 deg {np.mean(ang < 30) * 100:.0f} % ({len(files)} images)")


if __name__ == "__main__":
    main()
