"""Read a TensorBoard run directory with TensorBoard's own loaders and print it as JSON.

Usage: python tb_read.py LOGDIR. Used by tests/tensorboard_readback.rs.
Images are passed back as hex-encoded PNG bytes (decoded and checked on the Rust side,
so this needs no PIL).
"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util

logdir = sys.argv[1]
out = {"scalars": {}, "images": {}, "texts": {}, "plugins": {}}

# The classic accumulator: typed scalars/images/tensors. size_guidance 0 = keep everything.
acc = ea.EventAccumulator(logdir, size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
acc.Reload()
tags = acc.Tags()
for tag in tags["scalars"]:
    out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
for tag in tags["images"]:
    out["images"][tag] = [
        {"step": e.step, "width": e.width, "height": e.height,
         "png_hex": e.encoded_image_string.hex()}
        for e in acc.Images(tag)
    ]
for tag in tags["tensors"]:
    meta = acc.SummaryMetadata(tag)
    entries = []
    for e in acc.Tensors(tag):
        arr = tensor_util.make_ndarray(e.tensor_proto)
        entries.append({"step": e.step, "shape": list(arr.shape),
                        "text": arr.item().decode("utf-8")})
    out["texts"][tag] = {"plugin": meta.plugin_data.plugin_name, "entries": entries}

# The accumulator behind the TensorBoard dashboards: data is migrated to tensors and
# routed to plugins by name, so this shows which dashboard each tag lands in.
pacc = pea.EventAccumulator(logdir, size_guidance={k: 0 for k in pea.DEFAULT_SIZE_GUIDANCE})
pacc.Reload()
for tag in pacc.Tags()["tensors"]:
    meta = pacc.SummaryMetadata(tag)
    info = {"plugin": meta.plugin_data.plugin_name}
    if info["plugin"] == "images":
        # The image plugin reads [width, height, png...] as strings.
        sv = pacc.Tensors(tag)[0].tensor_proto.string_val
        info["width"] = int(sv[0])
        info["height"] = int(sv[1])
    out["plugins"][tag] = info

print(json.dumps(out))
