#!/usr/bin/env python3
"""PyTorch reference for `preimage bench`: the same workloads, shapes and timing method
(median of N runs after warm-up, min, max, peak RSS per workload), written as JSON that
`preimage bench --pytorch FILE` reads to print the ratio preimage/PyTorch per workload.

    python3 bench/pytorch_reference.py --json bench/pytorch.json [--device cpu|cuda] [--threads N]
"""
import argparse, json, os, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mib():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None


def timed(name, fn, runs, warmup, sync):
    reset_peak()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        fn(); sync()
    ms = []
    for _ in range(runs):
        t = time.perf_counter(); fn(); sync(); ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    r = dict(name=name, median_ms=ms[len(ms) // 2], min_ms=ms[0], max_ms=ms[-1], runs=runs,
             peak_mib=peak_mib(), value=None, note="",
             device_mib=torch.cuda.max_memory_reserved() / 2**20 if cuda else None)
    print(f"  {name:<34} median {r['median_ms']:9.2f} ms  (min {r['min_ms']:.2f}, max {r['max_ms']:.2f})", flush=True)
    return r


class BenchDecoder(nn.Module):
    """fc → reshape to base → 4×4 stride-2 up-convs with leaky ReLU (as src/bench.rs)."""
    def __init__(self, code, fc, base, ups, crop):
        super().__init__()
        dims = [code] + fc + [base[0] * base[1] * base[2]]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        ch = [base[0]] + ups
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, 2, 1) for a, b in zip(ch, ch[1:]))
        self.base, self.crop = base, crop

    def forward(self, x):
        for fc in self.fcs:
            x = F.leaky_relu(fc(x), 0.2)
        y = x.view(x.shape[0], *self.base)
        for i, up in enumerate(self.ups):
            y = up(y)
            if i < len(self.ups) - 1:
                y = F.leaky_relu(y, 0.2)
        s = y.shape[2]
        if self.crop < s:
            o = (s - self.crop) // 2
            y = y[:, :, o:o + self.crop, o:o + self.crop]
        return y


def posenet(classes=13):
    """src/encoder/posenet.rs with its defaults."""
    def block(i, o, k, s):
        return [nn.Conv2d(i, o, k, s, k // 2), nn.BatchNorm2d(o), nn.ReLU()]
    layers = block(3, 32, 5, 2) + [nn.MaxPool2d(2)] + block(32, 64, 3, 1) + [nn.MaxPool2d(2)] \
        + block(64, 96, 3, 1) + block(96, 96, 3, 1) + block(96, 64, 3, 1) + [nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 512), nn.ReLU(),
                         nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, classes))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--data", help="rendered image folder for the extraction throughput (as preimage bench --data)")
    ap.add_argument("--only", default="", help="comma-separated name fragments, as preimage bench --only")
    a = ap.parse_args()
    only = [o for o in a.only.split(",") if o]
    wants = lambda name: not only or any(o in name for o in only)
    names = ["decoder_step_a_512_to_64", "decoder_step_b_fc6_to_227", "encoder_forward_posenet_64",
             "encoder_forward_alexnet_224", "encoder_forward_vgg16_224", "optim_iteration_posenet_conv5",
             "optim_iteration_alexnet_conv5", "optim_iteration_vgg16_conv5_3", "decoder_forward_1_image", "extract_posenet_4_taps"]
    for o in only:
        if not any(o in n for n in names):
            ap.error(f"--only '{o}' matches no workload (workloads: {', '.join(names)})")
    # Bad paths fail now, not after minutes of timing; --json's folder is made, as preimage does.
    parent = os.path.dirname(os.path.abspath(a.json))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        ap.error(f"--json {a.json}: cannot create folder {parent}: {e}")
    if a.data and wants("extract_posenet_4_taps") and not png_files(a.data):
        ap.error(f"--data {a.data}: no .png files under it" if os.path.isdir(a.data) else f"--data {a.data}: not a folder")
    torch.set_num_threads(a.threads)
    try:
        dev = torch.device(a.device)
    except RuntimeError as e:
        ap.error(f"--device '{a.device}': {e}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device '{a.device}': this torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False)")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        ap.error(f"--device '{a.device}': there are {torch.cuda.device_count()} CUDA devices")
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    started = time.gmtime()
    out = []

    def decoder_step(name, dec, batch, code, size):
        dec = dec.to(dev)
        opt = torch.optim.Adam(dec.parameters(), lr=1e-4)
        x = torch.rand(batch, code, device=dev)
        target = torch.rand(batch, 3, size, size, device=dev)
        def step():
            opt.zero_grad(set_to_none=True)
            loss = (dec(x) - target).pow(2).mean()
            loss.backward(); opt.step()
        return timed(name, step, a.runs, a.warmup, sync)

    print("decoder training steps")
    if wants("decoder_step_a_512_to_64"):
        out.append(decoder_step("decoder_step_a_512_to_64", BenchDecoder(512, [], [256, 4, 4], [128, 64, 32, 3], 64), 32, 512, 64))
    if wants("decoder_step_b_fc6_to_227"):
        out.append(decoder_step("decoder_step_b_fc6_to_227", BenchDecoder(4096, [4096, 4096], [256, 4, 4], [256, 128, 64, 32, 16, 3], 227), 8, 4096, 227))

    import torchvision
    print("encoder forward")
    # Each network is built when a workload needs it and dropped after, as `preimage bench`
    # does, so that a workload's peak memory holds only its own network.
    nets = {"posenet": (posenet, 64), "alexnet": (torchvision.models.alexnet, 224), "vgg16": (torchvision.models.vgg16, 224)}
    for arch, (make, size) in nets.items():
        if not wants(f"encoder_forward_{arch}_{size}"):
            continue
        net = make().to(dev).eval()
        x = torch.rand(32, 3, size, size, device=dev)
        def fwd():
            with torch.no_grad():
                net(x)
        out.append(timed(f"encoder_forward_{arch}_{size}", fwd, a.runs, a.warmup, sync))
        del net, x, fwd

    # Each workload by its full name (as `preimage bench`); the decoder's speed-up is over
    # posenet's iteration, which then runs too.
    dec_name = "decoder_forward_1_image"
    tap = {"posenet": "conv5", "alexnet": "conv5", "vgg16": "conv5_3"}
    optims = [arch for arch in ("posenet", "alexnet", "vgg16")
              if wants(f"optim_iteration_{arch}_{tap[arch]}") or (arch == "posenet" and wants(dec_name))]
    if optims:
        print("optimization inversion")
    iter_ms = {}
    for arch, cut in ((arch, {"posenet": 17, "alexnet": 12, "vgg16": 30}[arch]) for arch in optims):
        make, size = nets[arch]
        net = make()
        # Up to conv5 (after its ReLU): posenet[:17], AlexNet's features[:12], VGG16's
        # features[:30] (conv5_3).
        body = (net[:cut] if arch == "posenet" else net.features[:cut]).to(dev).eval()
        for p in body.parameters():
            p.requires_grad_(False)
        target = body(torch.rand(1, 3, size, size, device=dev)).detach()
        x = torch.rand(1, 3, size, size, device=dev)
        # The same objective as `preimage bench` (the `invert` preset, M&V 2016): C = 100
        # feature match + TV^2 and alpha^6-norm normalized by B = 80 in the mean-subtracted
        # 0-255 scale; the encoder normalizes its [0,1] input.
        mean = torch.tensor([0.5] * 3 if arch == "posenet" else [0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1)
        std = torch.tensor([0.25] * 3 if arch == "posenet" else [0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1)
        def it(x=x, body=body, target=target, mean=mean, std=std):
            xi = x.detach().requires_grad_(True)
            f = body((xi - mean) / std)
            feat = 100.0 * (f - target).pow(2).sum() / target.pow(2).sum()
            nat = (xi - mean) * 255.0
            dx = nat[:, :, :-1, 1:] - nat[:, :, :-1, :-1]
            dy = nat[:, :, 1:, :-1] - nat[:, :, :-1, :-1]
            v = 80.0 / 6.5
            tv = ((dx.pow(2) + dy.pow(2)) / v ** 2 + 1e-8).sum(1).mean()
            alpha = ((nat / 80.0).pow(2).sum(1) + 1e-8).pow(3.0).mean()
            (feat + tv + alpha).backward()
            with torch.no_grad():
                x.sub_(0.01 * xi.grad).clamp_(0, 1)
        r = timed(f"optim_iteration_{arch}_{tap[arch]}", it, a.runs, a.warmup, sync)
        iter_ms[arch] = r["median_ms"]
        out.append(r)
        del net, body, target, x, it
    if wants(dec_name):
        dec = BenchDecoder(512, [], [256, 4, 4], [128, 64, 32, 3], 64).to(dev).eval()
        code = torch.rand(1, 512, device=dev)
        def dfwd():
            with torch.no_grad():
                dec(code)
        r = timed(dec_name, dfwd, a.runs, a.warmup, sync)
        r["value"] = 350 * iter_ms["posenet"] / r["median_ms"]
        r["note"] = "speed-up of one decoder forward over 350 optimization iterations (posenet)"
        out.append(r)
    if a.data and wants("extract_posenet_4_taps"):
        print("code extraction")
        out.append(extraction(a.data, posenet().to(dev).eval(), dev, a.runs, sync))
    finish(out, a.json, context(dev, started))


def extraction(root, net, dev, runs, sync):
    """Images/s: decode every PNG under `root`, normalize, posenet forward keeping conv5 (after
    its ReLU) and fc6/fc7/fc8, batch 64, codes copied to host memory: as `preimage extract`."""
    import numpy as np
    from PIL import Image
    files = png_files(root)
    taps = {16: "conv5", 20: "fc6", 22: "fc7", 23: "fc8"}  # indices in posenet()'s Sequential (after ReLUs)

    def run():
        for i in range(0, len(files), 64):
            imgs = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in files[i:i + 64]]
            x = (torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).to(dev) - 0.5) / 0.25
            with torch.no_grad():
                for j, layer in enumerate(net):
                    x = layer(x)
                    if j in taps:
                        x.flatten(1).cpu().numpy()
    r = timed("extract_posenet_4_taps", run, max(1, min(runs, 5)), 1, sync)
    r["value"] = len(files) / (r["median_ms"] / 1e3)
    r["note"] = f"images/s over {len(files)} PNGs, batch 64, taps conv5,fc6,fc7,fc8"
    print(f"  extraction: {r['value']:.0f} images/s")
    return r


def png_files(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.lower().endswith(".png"))


def context(dev, started):
    """Where and how the timings were taken: the fields of `preimage bench --json`'s context."""
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((" ".join(l.split(":", 1)[1].split()) for l in f if l.startswith("model name")), None)
    except OSError:
        pass
    return {"program": f"torch {torch.__version__}", "device": str(dev), "cpu": cpu,
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M", started)}


def finish(out, path, ctx):
    # Written beside and renamed: an interrupted run leaves the previous file whole.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"context": ctx, "workloads": out}, f, indent=1)
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
