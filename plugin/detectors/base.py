"""Small pieces shared by the backends: input checks, resizing, box bookkeeping."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..core.boxes import Detection


def check_image(image: np.ndarray, index: int = 0) -> np.ndarray:
    """The image as a contiguous HxWx3 uint8 array; a clear error for anything else.

    Callers are expected to hand RGB uint8 (``images.read_image`` converts every format);
    failing here names the position in the batch instead of a cryptic onnxruntime error.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"image {index} of the batch: expected an RGB uint8 HxWx3 array, got "
            f"dtype {array.dtype} shape {array.shape}"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"image {index} of the batch is empty: shape {array.shape}")
    return np.ascontiguousarray(array)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize (Pillow; box-filtered when shrinking so small faces do not alias away)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def to_detections(
    label: str, xyxy: np.ndarray, scores: np.ndarray, width: int, height: int
) -> list[Detection]:
    """Pixel boxes (original image) and scores into relative ``Detection`` objects."""
    out = []
    for box, score in zip(
        np.asarray(xyxy).reshape(-1, 4), np.asarray(scores).reshape(-1), strict=True
    ):
        det = Detection.from_pixels(label, float(np.clip(score, 0.0, 1.0)), box, width, height)
        if det.box[2] > 0 and det.box[3] > 0:
            out.append(det)
    return out


def expand_xyxy(xyxy: np.ndarray, factor_w: float, factor_h: float) -> np.ndarray:
    """Grow pixel boxes around their centres (a per-backend calibration, not the blur margin)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if factor_w == 1.0 and factor_h == 1.0:
        return xyxy
    cx, cy = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2
    hw, hh = (xyxy[:, 2] - xyxy[:, 0]) * factor_w / 2, (xyxy[:, 3] - xyxy[:, 1]) * factor_h / 2
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
