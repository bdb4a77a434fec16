"""Reading and writing images the way a careful user would.

Reads apply the EXIF orientation (the seed tool ignored it and blurred the wrong place on
rotated phone photos) and convert exotic modes; writes are atomic (temporary file, then
rename) and carry no metadata at all, so a copy cannot leak GPS positions or camera serials.
Originals are only ever opened for reading.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .paths import partial_file

#: The largest image taken (a 20000 x 20000 aerial scan); larger ones are refused by name.
MAX_PIXELS = 400_000_000
# Our own check below names the file and the size; Pillow's bomb check stays as a backstop.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
#: From this size on an image is held once, as Pillow decoded it, and obscured window by
#: window (:class:`LargeImage`), instead of being copied into NumPy arrays.
LARGE_PIXELS = 40_000_000
#: Long side of the copy the detectors see of a large image (they downscale to 1920 anyway).
DETECT_MAX_SIDE = 4096

#: Quality of JPEG (and WebP) copies unless asked otherwise: visually lossless, no chroma
#: subsampling (see ``encode_image``).
DEFAULT_JPEG_QUALITY = 95

# The process's umask, read once (os.umask can only be read by setting it): copies get the
# permissions a plain open() would give them.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

#: Formats a copy can be written in; anything else is refused with a clear reason.
WRITABLE_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"}
_EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",
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
    """Convert pixels with an embedded colour profile to sRGB, so dropping the profile is safe
    (in place when the mode stays: a large image is not held twice)."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        if out_mode == img.mode:
            ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), inPlace=True)
            return img
        converted = ImageCms.profileToProfile(
            img, src, ImageCms.createProfile("sRGB"), outputMode=out_mode
        )
        return converted if converted is not None else img
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


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` as stored, read from the header alone; None when unreadable (the
    decode will say why)."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception:
        return None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Pillow's failures as :class:`ImageReadError` with the reason in plain words."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (cannot be decoded)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"cannot be decoded: {exc}") from None


def _open_checked(path: Path) -> Image.Image:
    img = Image.open(path)
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise ImageReadError(
            path,
            f"image too large: {width} x {height} = "
            f"{width * height / 1e6:.0f} MP (the limit is "
            f"{MAX_PIXELS / 1e6:.0f} MP)",
        )
    return img


def _upright_8bit(img: Image.Image) -> Image.Image:
    """Decoded, EXIF orientation applied, sRGB, mode L/RGB/RGBA."""
    img.load()  # decode now so truncation surfaces here, not later
    ImageOps.exif_transpose(img, in_place=True)  # not a copy of a 400 MP image when upright
    return _normalise_mode(_to_srgb(img))


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Decode ``path`` fully, apply EXIF orientation and convert to L/RGB/RGBA uint8.

    Raises :class:`ImageReadError` naming the file for anything that is missing, empty,
    truncated, too large or not an image.
    """
    path = Path(path)
    _check_file(path)
    with _decoding(path), _open_checked(path) as img:
        fmt = img.format or ""
        pixels = np.array(_upright_8bit(img), dtype=np.uint8)
    if pixels.size == 0:
        raise ImageReadError(path, "image has no pixels")
    return LoadedImage(pixels=pixels, format=fmt, path=str(path))


@dataclass
class LargeImage:
    """An image too large to copy around (:data:`LARGE_PIXELS`). Whole-image looks see a
    reduced copy (relative boxes do not depend on the resolution they were found at), decoded
    at a reduced scale where the format allows (JPEG); tiles read windows of the full image
    (:meth:`window`), which is decoded once, held as Pillow decoded it, obscured in place
    window by window and saved straight from it."""

    path: str
    format: str
    size: tuple[int, int]  # (width, height) of the full image, upright
    detect_rgb: np.ndarray  # long side <= DETECT_MAX_SIDE
    image: Image.Image | None = None  # the full image, once decoded

    @property
    def rgb(self) -> np.ndarray:
        return self.detect_rgb

    def window(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """RGB pixels of ``box`` ``(x0, y0, x1, y1)`` at full resolution: what the detectors'
        tiles read (the full image is decoded once, and kept for the obscure stage)."""
        return to_rgb(np.asarray(self.full().crop(box)))

    def full(self) -> Image.Image:
        """The full image (mode L, RGB or RGBA, upright, sRGB, no metadata), decoded once."""
        if self.image is None:
            path = Path(self.path)
            with _decoding(path):
                img = _upright_8bit(_open_checked(path))
            img.info = {}  # EXIF, ICC, XMP, comments: Pillow writes some of them back
            self.image = img
        return self.image


def load_large(path: str | os.PathLike) -> LargeImage:
    """A large image's reduced copy for the detectors (JPEGs decode straight at 1/2, 1/4 or
    1/8 scale: a fraction of the time and memory); other formats decode in full, and that
    decode is kept for :meth:`LargeImage.full`.

    Raises :class:`ImageReadError` like :func:`load_image`.
    """
    path = Path(path)
    _check_file(path)
    with _decoding(path):
        img = _open_checked(path)
        fmt = img.format or ""
        stored = img.size
        # No smaller than asked on either side.
        img.draft(
            img.mode if img.mode in ("L", "RGB") else "RGB",
            (
                -(-stored[0] * DETECT_MAX_SIDE // max(stored)),
                -(-stored[1] * DETECT_MAX_SIDE // max(stored)),
            ),
        )
        img = _upright_8bit(img)
        factor = -(-max(img.size) // DETECT_MAX_SIDE)
        small = img.reduce(factor) if factor > 1 else img
        detect_rgb = to_rgb(np.array(small, dtype=np.uint8))
    turned = (img.size[0] > img.size[1]) != (stored[0] > stored[1])
    size = (stored[1], stored[0]) if turned else stored
    large = LargeImage(path=str(path), format=fmt, size=size, detect_rgb=detect_rgb)
    if img.size == size:  # not reduced: this is the full image already
        img.info = {}
        large.image = img
    return large


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 pixels of ``path`` with EXIF orientation applied (what the detectors take)."""
    return load_image(path).rgb


def format_for_path(path: str | os.PathLike, fallback: str = "PNG") -> str:
    return _EXTENSION_FORMATS.get(Path(path).suffix.lower(), fallback)


_FORMAT_ALIASES = {"MPO": "JPEG"}  # camera JPEGs with a second image; the copy keeps the first


def copy_format(loaded: LoadedImage | LargeImage) -> str:
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
    arr = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    buf = io.BytesIO()
    _save(Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)), buf, fmt, jpeg_quality)
    return buf.getvalue()


def _save(img: Image.Image, out, fmt: str, jpeg_quality: int) -> None:
    fmt = fmt.upper()
    if fmt not in WRITABLE_FORMATS:
        raise ValueError(f"cannot write format {fmt!r}; supported: {sorted(WRITABLE_FORMATS)}")
    if fmt == "JPEG" and img.mode == "RGBA":
        img = img.convert("RGB")  # JPEG has no alpha; sources in JPEG never had one
    options: dict = {}
    if fmt == "JPEG":
        options = {
            "quality": int(jpeg_quality),
            "optimize": False,
            "subsampling": 0 if jpeg_quality >= 90 else 2,
        }
    elif fmt == "WEBP":
        options = {"quality": int(jpeg_quality)}
    img.save(out, format=fmt, **options)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A job killed mid-write leaves at most a hidden ``.*.part`` file, never a half-written copy
    under the real name.
    """
    path = Path(path)
    fd, tmp = partial_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # as open() would make it, not mkstemp's private 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_image_atomic(
    image: Image.Image, path: str | os.PathLike, fmt: str, jpeg_quality: int = DEFAULT_JPEG_QUALITY
) -> None:
    """Encode a Pillow image straight into ``path`` (temporary file, then rename), with the
    same options and no metadata as :func:`encode_image`: for large images, whose encoded
    bytes should not be held in memory too."""
    path = Path(path)
    fd, tmp = partial_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            _save(image, f, fmt, jpeg_quality)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
