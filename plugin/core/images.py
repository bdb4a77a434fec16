"""Reading and writing images the way a careful user would.

Reads apply the EXIF orientation (the seed tool ignored it and blurred the wrong place on
rotated phone photos) and convert exotic modes; writes are atomic (temporary file, then
rename) and carry no metadata at all, so a copy cannot leak GPS positions or camera serials.
Originals are only ever opened for reading.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

# Large scans are legitimate input; keep Pillow's bomb check but at a higher ceiling.
Image.MAX_IMAGE_PIXELS = 400_000_000

#: Quality of JPEG (and WebP) copies unless asked otherwise: visually lossless, no chroma
#: subsampling (see ``encode_image``).
DEFAULT_JPEG_QUALITY = 95

#: Formats a copy can be written in; anything else is refused with a clear reason.
WRITABLE_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"}
_EXTENSION_FORMATS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF",
}


class ImageReadError(Exception):
    """An image that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class LoadedImage:
    """Decoded pixels, ready for detection and blurring, and the format to write them back in."""

    pixels: np.ndarray  # uint8, HxW (grayscale), HxWx3 (RGB) or HxWx4 (RGBA), orientation applied
    format: str  # Pillow format name of the source, e.g. "JPEG"
    path: str

    @property
    def rgb(self) -> np.ndarray:
        """The pixels as RGB, which is what the detectors take."""
        return to_rgb(self.pixels)


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if pixels.shape[2] == 4:
        return np.ascontiguousarray(pixels[:, :, :3])
    return pixels


def _to_srgb(img: Image.Image) -> Image.Image:
    """Convert pixels with an embedded colour profile to sRGB, so dropping the profile is safe."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Bring any Pillow mode to L, RGB or RGBA with 8 bits per channel."""
    mode = img.mode
    if mode in ("L", "RGB", "RGBA"):
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(arr * 255.0 / peak), 0, 255).astype(np.uint8), "L")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        peak = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(np.rint(arr * 255.0 / peak), 0, 255).astype(np.uint8), "L")
    if mode in ("1",):
        return img.convert("L")
    if mode in ("LA", "PA") or (mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    return img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Decode ``path`` fully, apply EXIF orientation and convert to L/RGB/RGBA uint8.

    Raises :class:`ImageReadError` naming the file for anything that is missing, empty,
    truncated or not an image.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format or ""
                img.load()  # decode now so truncation surfaces here, not later
                img = ImageOps.exif_transpose(img)
                img = _to_srgb(img)
                img = _normalise_mode(img)
                pixels = np.asarray(img, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (cannot be decoded)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"cannot be decoded: {exc}") from None
    if pixels.size == 0:
        raise ImageReadError(path, "image has no pixels")
    return LoadedImage(pixels=pixels, format=fmt, path=str(path))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 pixels of ``path`` with EXIF orientation applied (what the detectors take)."""
    return load_image(path).rgb


def format_for_path(path: str | os.PathLike, fallback: str = "PNG") -> str:
    return _EXTENSION_FORMATS.get(Path(path).suffix.lower(), fallback)


_FORMAT_ALIASES = {"MPO": "JPEG"}  # camera JPEGs with a second image; the copy keeps the first


def copy_format(loaded: LoadedImage) -> str:
    """The format the copy is written in: the source's own (not its extension's), so a copy
    never changes type; sources Pillow reads but cannot write fall back to their extension."""
    fmt = _FORMAT_ALIASES.get(loaded.format, loaded.format)
    if fmt in WRITABLE_FORMATS:
        return fmt
    by_ext = format_for_path(loaded.path, fallback="")
    if by_ext:
        return by_ext
    raise ValueError(f"cannot write a copy in the source's format {loaded.format!r}")


def encode_image(pixels: np.ndarray, fmt: str, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Encode pixels in ``fmt`` with no metadata at all (no EXIF, XMP, ICC, comments, thumbnail)."""
    fmt = fmt.upper()
    if fmt not in WRITABLE_FORMATS:
        raise ValueError(f"cannot write format {fmt!r}; supported: {sorted(WRITABLE_FORMATS)}")
    arr = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    if fmt == "JPEG" and img.mode == "RGBA":
        img = img.convert("RGB")  # JPEG has no alpha; sources in JPEG never had one
    buf = io.BytesIO()
    options: dict = {}
    if fmt == "JPEG":
        options = {"quality": int(jpeg_quality), "optimize": False,
                   "subsampling": 0 if jpeg_quality >= 90 else 2}
    elif fmt == "WEBP":
        options = {"quality": int(jpeg_quality)}
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A job killed mid-write leaves at most a hidden ``.*.part`` file, never a half-written copy
    under the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

