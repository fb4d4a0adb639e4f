"""One image reader for single files, folders and uploads: EXIF orientation applied, every PIL mode turned into 8-bit
grey or RGB (transparency flattened onto white), sizes fitted by centre crop or padding."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DiffusekitError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
FITS = ("crop", "pad")


def parse_size(value) -> tuple[int, int] | None:
    """An image size as (height, width): an int (square), "64" or "WIDTHxHEIGHT" ("64x48": 64 wide, 48 high), or a
    (height, width) pair; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        w, sep, h = value.lower().partition("x")
        try:
            value = (int(h), int(w)) if sep else int(w)
        except ValueError:
            raise DiffusekitError(f"image_size must be N or WIDTHxHEIGHT (e.g. 64x48), got {value!r}",
                                  "image_size") from None
    hw = (value, value) if isinstance(value, int) else tuple(value)
    if len(hw) != 2 or not all(isinstance(v, int) and 1 <= v <= 1024 for v in hw):
        raise DiffusekitError(f"image_size must be whole numbers in 1-1024 (N or WIDTHxHEIGHT), got {value!r}",
                              "image_size")
    return hw


def open_image(source, name: str | None = None) -> Image.Image:
    """A file path (or file object) as a loaded PIL image, turned upright by its EXIF orientation tag."""
    try:
        with Image.open(source) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DiffusekitError(f"cannot read image {name or source}: {e}") from None


def to_8bit(im: Image.Image, grey: bool) -> Image.Image:
    """8-bit L (grey) or RGB: 16- and 32-bit greys are scaled (not clipped), transparency is composited onto white,
    palettes and CMYK are converted."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.round(np.clip(a, 0, hi) / hi * 255).astype(np.uint8))
    if im.mode in ("LA", "RGBA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("L" if grey else "RGB")


def check_fit(how: str):
    if how not in FITS:
        raise DiffusekitError(f"image_fit must be one of {', '.join(FITS)}, got {how!r}", "image_fit")


def fit(im: Image.Image, size: tuple[int, int], how: str = "crop") -> Image.Image:
    """im resized to size (height, width), keeping its aspect ratio: "crop" fills the frame and cuts the centre out;
    "pad" fits it inside and fills the rest with the mean colour of the image's border."""
    check_fit(how)
    (h, w), (W, H) = size, im.size
    if (H, W) == (h, w):
        return im
    s = max(w / W, h / H) if how == "crop" else min(w / W, h / H)
    rw, rh = max(1, round(W * s)), max(1, round(H * s))
    im = im.resize((rw, rh), Image.BICUBIC)
    if how == "crop":
        left, top = (rw - w) // 2, (rh - h) // 2
        return im.crop((left, top, left + w, top + h))
    a = np.asarray(im)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).reshape(-1, *a.shape[2:]).mean(0)
    out = Image.new(im.mode, (w, h), tuple(np.round(np.atleast_1d(border)).astype(int)) if a.ndim == 3
                    else int(round(float(border))))
    out.paste(im, ((w - rw) // 2, (h - rh) // 2))
    return out


def image_files(folder: str) -> list[str]:
    """The image files directly in folder, sorted (hidden ones skipped)."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_EXTS) and not n.startswith("."))


def read_image_files(paths, size=None, how: str = "crop", where: str = "", grey: bool | None = None) -> np.ndarray:
    """Image files as uint8 N x H x W x C: one channel when every file is grey (or as `grey` says), else RGB. size (see
    `parse_size`): each image fitted to it (`fit`); "smallest": a square of their smallest side; None: they must all
    have one size already."""
    images = [open_image(p) for p in paths]
    grey = all(im.mode in GREY_MODES for im in images) if grey is None else grey
    images = [to_8bit(im, grey) for im in images]
    size = parse_size(min(min(im.size) for im in images) if size == "smallest" else size)
    if size is not None:
        images = [fit(im, size, how) for im in images]
    elif len({im.size for im in images}) > 1:
        raise DiffusekitError(f"the images{' in ' + where if where else ''} differ in size: "
                              f"{', '.join(sorted({f'{w}x{h}' for w, h in (im.size for im in images)}))}")
    a = np.stack([np.asarray(im) for im in images])
    return a[..., None] if grey else a


def image_headers(paths) -> tuple[bool, int]:
    """(every file is grey, the smallest side of any) from the files' headers alone (no pixels are decoded), with a
    one-line error for a file that is not an image."""
    grey, side = True, None
    for p in paths:
        try:
            with Image.open(p) as im:
                grey, side = grey and im.mode in GREY_MODES, min(side or min(im.size), *im.size)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DiffusekitError(f"cannot read image {p}: {e}") from None
    return grey, side


class LazyImages:
    """Image files read when indexed, for a folder too large to hold decoded: x[idx] is the model-space batch
    [B, C, H, W] that `read_image_files` and the codec would give for those files; len and shape as a tensor's."""

    def __init__(self, files, size, how, grey, codec):
        self.files, self.size, self.how, self.grey, self.codec = files, size, how, grey, codec

    def __len__(self):
        return len(self.files)

    @property
    def shape(self):
        return (len(self.files), *self.codec.shape)

    def __getitem__(self, idx):
        picked = [self.files[i] for i in np.atleast_1d(np.asarray(idx)).tolist()]
        return self.codec.encode(read_image_files(picked, self.size, self.how, grey=self.grey))
