"""Writes the NumPy code files of tests/inference.rs (run with NumPy 2.x: python make.py).

The codes are those of ../pth/codes.pt: 3 rows of 8 values, (i*8 + j)/10 - 1."""
import numpy as np

codes = (np.arange(24, dtype=np.float64).reshape(3, 8) / 10.0 - 1.0)
np.save("fc7.npy", codes.astype(np.float32))                      # one unnamed array, C order
np.save("fortran.npy", np.asfortranarray(codes.astype(">f8")))    # Fortran order, big-endian
np.savez("codes.npz", fc7=codes, ids=np.array(["a.jpg", "sub/b.png", "c.jpg"]), label=np.array([2, 0, 1]))
np.savez_compressed("compressed.npz", codes.astype(np.float16))   # positional (arr_0), deflate, f16
np.save("objects.npy", np.array([{"fc7": 1}], dtype=object), allow_pickle=True)
