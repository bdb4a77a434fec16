"""MTCNN faces (the ``mtcnn`` package, TensorFlow, MIT; weights ship inside the package).

A second face backend, slower than CenterFace on the CPU and blind below ``min_face_size``; it
exists for users who prefer its different failure modes. Small images are upscaled so faces of
``min_face_size / upscale`` px are still reached, huge ones downscaled to bound the pyramid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.boxes import FACE, Detection
from .base import check_image, expand_xyxy, resize, to_detections


class MTCNNDetector:
    """Faces with MTCNN; ``threshold`` applies to the final (O-Net) confidence."""

    name = "mtcnn"
    labels: tuple[str, ...] = (FACE,)

    def __init__(
        self,
        threshold: float = 0.7,
        min_face_size: int = 12,
        min_side: int = 640,
        max_side: int = 1920,
        expand: tuple[float, float] = (1.0, 1.0),
        device: str = "auto",
    ) -> None:
        from ..core.tf_runtime import import_tensorflow

        # Through the shared importer: mtcnn uses tf.keras, which must not load while the
        # blur module's import (possibly in another thread) has TF_USE_LEGACY_KERAS set.
        tf = import_tensorflow()
        from mtcnn import MTCNN

        tf_device = "GPU:0" if device.lower() in ("cuda", "gpu") else "CPU:0"
        if device.lower() == "auto":
            tf_device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
        self.device = tf_device
        self.model = MTCNN(device=tf_device)
        self.threshold = float(threshold)
        self.min_face_size = int(min_face_size)
        self.min_side, self.max_side = int(min_side), int(max_side)
        self.expand = (float(expand[0]), float(expand[1]))

    def detect_one(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        long_side = max(height, width)
        factor = 1.0
        if long_side > self.max_side:
            factor = self.max_side / long_side
        elif long_side < self.min_side:
            factor = self.min_side / long_side
        new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
        work = resize(image, new_w, new_h)
        # O-Net's own threshold is kept low; ours is applied on the returned confidence.
        found = self.model.detect_faces(
            work, min_face_size=self.min_face_size, threshold_onet=min(self.threshold, 0.8)
        )
        if not found:
            return []
        xywh = np.array([f["box"] for f in found], dtype=np.float64)
        scores = np.array([f["confidence"] for f in found], dtype=np.float64)
        keep = scores >= self.threshold
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)[keep]
        xyxy = xyxy / np.array([new_w / width, new_h / height] * 2)
        return to_detections(FACE, expand_xyxy(xyxy, *self.expand), scores[keep], width, height)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self.detect_one(check_image(im, i)) for i, im in enumerate(images)]
