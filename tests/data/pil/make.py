# JPEGs and what PIL (libjpeg-turbo) decodes them to, for tests/decode_like_pil.rs.
# Made with Pillow 13 (libjpeg-turbo 3.x); kept to document the files, tests do not run it.
import numpy as np
from PIL import Image, ImageCms
rng = np.random.default_rng(5)
def content(w, h):
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([127 + 120 * np.sin(x * 0.31 + y * 0.07), 127 + 120 * np.cos(y * 0.23 - x * 0.11), (x * y * 3) % 256], -1)
    return Image.fromarray(np.clip(a + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8))
cases = [  # name, size, save options: even sizes off the 16-pixel grid (edges that show)
    ("420_38x26_restarts", (38, 26), dict(quality=75, subsampling=2, restart_marker_blocks=2)),
    ("422_46x23_progressive", (46, 23), dict(quality=60, subsampling=1, progressive=True)),
    ("444_64x48", (64, 48), dict(quality=90, subsampling=0)),
    ("420_32x32", (32, 32), dict(quality=85, subsampling=2)),  # on the grid: the last column's own rounding
]
for name, (w, h), opts in cases:
    content(w, h).save(f"{name}.jpg", **opts)
    Image.open(f"{name}.jpg").convert("RGB").save(f"{name}.pil.png")
content(30, 18).convert("L").save("gray_30x18.jpg", quality=80)
Image.open("gray_30x18.jpg").convert("RGB").save("gray_30x18.pil.png")

# Other formats photos come in, decoded as PIL's `Image.open(f).convert("RGB")` (torchvision's
# loader) decodes them: CMYK (Adobe JPEG, TIFF), compressed and RGBA TIFF, palettes with a
# transparent entry, gray + alpha, 1-bit, WebP (lossy; lossless RGBA), an animated GIF (its
# first frame), BMP, PPM, PGM. Alpha is dropped, not composited, in both.
img = content(53, 37)
rgba = img.convert("RGBA")
rgba.putalpha(Image.fromarray(np.tile(np.arange(53, dtype=np.uint8) * 4, (37, 1))))
exif_rotated = Image.Exif()
exif_rotated[0x0112] = 6
formats = [
    ("cmyk.jpg", img.convert("CMYK"), dict(quality=95)),
    ("cmyk.tif", img.convert("CMYK"), {}),
    ("lzw.tif", img, dict(compression="tiff_lzw")),
    ("rgba.tif", rgba, {}),
    ("palette_trns.png", img.quantize(64), dict(transparency=3)),
    ("gray_alpha.png", rgba.convert("LA"), {}),
    ("bilevel.png", img.convert("1"), {}),
    ("lossy.webp", img, dict(quality=80)),
    ("rgba_lossless.webp", rgba, dict(lossless=True)),
    ("animated.gif", img, dict(save_all=True, append_images=[img.rotate(90)])),
    ("plain.bmp", img, {}),
    ("plain.ppm", img, {}),
    ("gray.pgm", img.convert("L"), {}),
    # A phone photo's EXIF orientation (6: rotate 90° to view) is not applied by PIL's open,
    # nor by torchvision's loader: the pixels as stored, 53 wide.
    ("exif_rotated.jpg", img, dict(quality=90, exif=exif_rotated)),
    # An embedded ICC profile is not applied either.
    ("icc.jpg", img, dict(quality=90, icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes())),
]
for name, im, opts in formats:
    im.save(f"formats/{name}", **opts)
    Image.open(f"formats/{name}").convert("RGB").save(f"formats/{name}.pil.png")
