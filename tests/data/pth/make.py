# Makes strided.pth: tensors whose storage order is not their row-major order, as torch.save
# keeps them (tests/encoders.rs reads them; the test itself needs no PyTorch).
# Values are 0, 1, 2, ... in row-major order (the view: 7 8 9 13 14 15), so a reader that
# ignores strides or the storage offset fails.
import torch

def ar(*shape):
    return torch.arange(float(torch.tensor(shape).prod())).reshape(shape)

tensors = {
    "row_major": ar(2, 3),
    # A Linear weight stored transposed (column-major).
    "transposed": ar(3, 2).t().contiguous().t(),
    # A conv weight in channels_last memory format, as a model trained with it saves.
    "channels_last": ar(2, 3, 2, 2).contiguous(memory_format=torch.channels_last),
    # A view into the middle of a larger storage (offset 7, row stride 6): 7 8 9 / 13 14 15.
    "offset_view": torch.arange(30.0).reshape(5, 6)[1:3, 1:4],
}
torch.save(tensors, "strided.pth")
for k, v in tensors.items():
    print(k, tuple(v.shape), v.stride(), v.storage_offset(), v.flatten().tolist())

# Makes codes.pt: codes saved from PyTorch, `torch.save({"fc7": codes, "label": labels})`, read
# by tests/inference.rs as a code file (f64 codes, values (i*8 + j) / 10 - 1, labels 2, 0, 1).
codes = {"fc7": (torch.arange(24.0, dtype=torch.float64).reshape(3, 8) / 10 - 1), "label": torch.tensor([2, 0, 1])}
torch.save(codes, "codes.pt")

# Makes module.pt: a whole module, `torch.save(model)` instead of its state_dict; it cannot be
# read without the Python classes, and tests/encoders.rs checks that the error says what to do.
torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)), "module.pt")

# Makes codes_bare.pt (`torch.save(codes, F)`: a tensor at the root, read as the codes of the
# decoder's tap) and codes_ids.pt (`torch.save({"fc7": codes, "ids": names}, F)`: rows named by
# the ids list), the same codes as codes.pt.
torch.save(codes["fc7"].float(), "codes_bare.pt")
torch.save({"fc7": codes["fc7"], "ids": ["a.jpg", "sub/b.png", "c.jpg"]}, "codes_ids.pt")

# Makes codes_view.pt (rows 1..4 of a 5-row tensor: a row-major view whose storage starts a row
# earlier, read by rows from the file), codes_transposed.pt (the codes stored column-major, read
# whole) and codes_legacy.pt (the format before PyTorch 1.6, read whole); src/data/codes.rs.
five = torch.arange(40.0).reshape(5, 8) / 10 - 1
torch.save({"fc7": five[1:4]}, "codes_view.pt")
torch.save({"fc7": codes["fc7"].float().t().contiguous().t()}, "codes_transposed.pt")
torch.save({"fc7": codes["fc7"].float()}, "codes_legacy.pt", _use_new_zipfile_serialization=False)
