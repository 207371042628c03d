"""Per-layer times of AlexNet's forward pass in PyTorch (torchvision's layers, random weights),
to set beside `cargo run --release --example alexnet_layers` (same layers, same output format).
Median of RUNS after two warm-ups, in ms.

    python bench/alexnet_layers.py [BATCH=32] [RUNS=10] [THREADS=2]
"""
import sys
import time

import torch
import torch.nn.functional as F
import torchvision


def median_ms(f, runs):
    for _ in range(2):
        f()
    ts = []
    for _ in range(max(runs, 1)):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    args = [int(a) for a in sys.argv[1:]]
    n, runs, threads = (args + [32, 10, 2][len(args):])[:3]
    torch.set_num_threads(threads)
    m = torchvision.models.alexnet().eval()
    times = []
    with torch.no_grad():
        sides = [224, 27, 13, 13, 13]
        for i, (conv, side) in enumerate(zip([m.features[j] for j in (0, 3, 6, 8, 10)], sides)):
            x = torch.randn(n, conv.in_channels, side, side)
            times.append((f"conv{i + 1}", median_ms(lambda: torch.relu(conv(x)), runs)))
        for c, side in [(64, 55), (192, 27), (256, 13)]:
            x = torch.randn(n, c, side, side)
            times.append((f"pool{c}x{side}", median_ms(lambda: F.max_pool2d(x, 3, 2), runs)))
        for fc in [m.classifier[j] for j in (1, 4, 6)]:
            x = torch.randn(n, fc.in_features)
            times.append((f"fc{fc.in_features}x{fc.out_features}", median_ms(lambda: torch.relu(fc(x)), runs)))
    print(" ".join(f"{k}={v:.1f}" for k, v in times))


if __name__ == "__main__":
    main()
