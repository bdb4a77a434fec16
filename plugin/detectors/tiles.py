"""Big photos seen at full size: overlapping tiles, each looked at by a backend, boxes merged.

A backend looks at a whole photo through a fixed window (CenterFace at 1920 px on the long side
at most, the plate model at 640 px), so on a 12 MP photo (4000 x 3000) a 16 px face shrinks to
8 px and is lost. :class:`TiledDetector` adds, for photos larger than that window, a look at
overlapping tiles of the photo at their own resolution (or a chosen scale), as sliced inference
does (SAHI), besides the whole-photo look that finds the faces too large for a tile:

* tiles are laid out evenly with at least ``overlap`` pixels shared by neighbours, so an
  object up to about that size lies whole in one tile;
* tiles answer for the small objects: a tile's box larger than ``largest`` (twice the overlap
  by default) is left to the whole-photo look, which sees such objects at a size the network
  knows well (at the photo's own resolution a 600 px face gets a poorer box);
* a box that touches an inner tile edge is a cut object: it is dropped when a whole box holds
  most of it (the neighbouring tile or the whole-photo look saw the object whole), and kept
  otherwise (recall first: a partial box still hides part of a face);
* the remaining boxes are merged: of two whole boxes overlapping more than
  :data:`MERGE_IOU` the higher-scored stays.

The backend runs at a fixed low threshold (:data:`MERGE_FLOOR`) and the detector's threshold
applies after the merge, so which boxes are merged never depends on the threshold: raising it
afterwards gives the same boxes as running at it (``scripts/evaluate.py`` relies on that).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..core.boxes import Detection, iou_matrix, nms, xywh_to_xyxy
from .base import check_image, resize

#: Score the backend looks down to before tiles are merged (the evaluation's lowest threshold).
MERGE_FLOOR = 0.05
#: A cut box is dropped when at least this share of it lies inside a whole box.
HELD_INSIDE = 0.5
#: Whole boxes from different looks (the whole photo, neighbouring tiles) overlapping more than
#: this are one object. Higher than the backends' own suppression: their boxes are already
#: grown (CenterFace's calibration), and two neighbours in a crowd must both stay.
MERGE_IOU = 0.5


@runtime_checkable
class WindowedImage(Protocol):
    """A photo too large to hold as one array (``core.images.LargeImage``): a reduced copy for
    whole-photo looks, and windows read at full resolution for the tiles."""

    size: tuple[int, int]  # (width, height) at full resolution

    @property
    def rgb(self) -> np.ndarray: ...  # the reduced copy, RGB uint8

    def window(self, box: tuple[int, int, int, int]) -> np.ndarray: ...  # RGB uint8, full res


def overview_pixels(image: Any) -> np.ndarray:
    """What a whole-photo look takes: the pixels, or a windowed image's reduced copy."""
    return image.rgb if isinstance(image, WindowedImage) else image


@dataclass(frozen=True)
class TileSpec:
    """How a backend looks at photos larger than its own window.

    Args:
        side: longest side of a tile, in pixels of the photo (tiles are at most this large,
            and as even as the photo allows).
        overlap: pixels that neighbouring tiles share at least; objects up to about this size
            lie whole in one tile.
        above: photos whose long side is at most this are looked at whole, as before, with no
            tiles.
        scale: factor each tile is resized by before the backend sees it (1.0: the photo's own
            resolution; 2.0 finds faces half as large, at four times the cost).
        align: tile sides are rounded to multiples of this (the networks pad to multiples of
            32, so other sizes pay for pixels that hold nothing).
        largest: a tile's box longer than this (pixels of the photo) is dropped: the
            whole-photo look answers for such objects. 0: twice ``overlap``.
        overview: long side of the whole-photo look that goes with the tiles (it finds the
            objects too large to lie whole in a tile, which need no fine detail); 0: the
            backend's own sizing.
        precision: the network precision of every look at a tiled photo, tiles and whole
            look (None: the backend's). The tiles hold most of a large photo's pixels, so
            their precision decides its speed and memory; photos without tiles keep the
            backend's.
        gate_score: when > 0, a tile runs only where the whole-photo look saw a candidate
            scoring at least this that is smaller than ``gate_size`` (the fast effort level's
            shortcut; 0: every tile runs).
        gate_size: see ``gate_score``; a share of the photo's long side.
    """

    side: int
    overlap: int
    above: int
    scale: float = 1.0
    align: int = 32
    largest: int = 0
    overview: int = 0
    precision: str | None = None
    gate_score: float = 0.0
    gate_size: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spans(length: int, side: int, overlap: int, align: int = 32) -> list[tuple[int, int]]:
    """``(start, end)`` of evenly spaced tiles covering ``[0, length)``: as few as keep every
    tile at most ``side`` long (rounded up to ``align``) with at least ``overlap`` shared by
    neighbours."""
    if length <= side:
        return [(0, length)]
    count = math.ceil((length - overlap) / max(1, side - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    size = min(length, -(-size // align) * align)
    step = (length - size) / (count - 1)
    starts = [round(i * step) for i in range(count)]
    return [(s, s + size) for s in starts]


def windows(height: int, width: int, spec: TileSpec) -> list[tuple[int, int, int, int]]:
    """The tiles ``(x0, y0, x1, y1)`` of a ``height`` x ``width`` photo (none when the photo is
    not larger than ``spec.above``)."""
    if max(height, width) <= spec.above:
        return []
    return [
        (x0, y0, x1, y1)
        for y0, y1 in spans(height, spec.side, spec.overlap, spec.align)
        for x0, x1 in spans(width, spec.side, spec.overlap, spec.align)
    ]


def _to_photo(det: Detection, window: tuple[int, int, int, int], height: int, width: int):
    """A tile's relative box in the photo's relative coordinates."""
    x0, y0, x1, y1 = window
    tw, th = x1 - x0, y1 - y0
    x, y, w, h = det.box
    return (x0 + x * tw) / width, (y0 + y * th) / height, w * tw / width, h * th / height


def _touches_inner_edge(
    det: Detection, window: tuple[int, int, int, int], height: int, width: int
) -> bool:
    """Whether ``det`` (relative to its tile) reaches an edge of the tile that lies inside the
    photo: the object may go on in the neighbouring tile."""
    x0, y0, x1, y1 = window
    margin_x, margin_y = 1.5 / (x1 - x0), 1.5 / (y1 - y0)
    x, y, w, h = det.box
    return bool(
        (x0 > 0 and x <= margin_x)
        or (y0 > 0 and y <= margin_y)
        or (x1 < width and x + w >= 1 - margin_x)
        or (y1 < height and y + h >= 1 - margin_y)
    )


def merge_tiles(
    whole: Sequence[Detection], cut: Sequence[Detection], iou: float
) -> list[Detection]:
    """One list from the boxes of the whole-photo look and the tiles (``whole``: boxes that
    touch no inner tile edge; ``cut``: those that do), see the module docstring."""
    boxes = list(whole)
    if boxes:
        xyxy = xywh_to_xyxy(np.array([d.box for d in boxes]))
        boxes = [boxes[i] for i in nms(xyxy, np.array([d.score for d in boxes]), iou)]
    if cut and boxes:
        held = xywh_to_xyxy(np.array([d.box for d in boxes]))
        parts = xywh_to_xyxy(np.array([d.box for d in cut]))
        ix0 = np.maximum(parts[:, None, 0], held[None, :, 0])
        iy0 = np.maximum(parts[:, None, 1], held[None, :, 1])
        ix1 = np.minimum(parts[:, None, 2], held[None, :, 2])
        iy1 = np.minimum(parts[:, None, 3], held[None, :, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        area = np.maximum((parts[:, 2] - parts[:, 0]) * (parts[:, 3] - parts[:, 1]), 1e-12)
        inside = (inter / area[:, None]).max(axis=1) >= HELD_INSIDE
        cut = [d for d, gone in zip(cut, inside, strict=True) if not gone]
    if cut:
        rest = list(cut)
        xyxy = xywh_to_xyxy(np.array([d.box for d in rest]))
        rest = [rest[i] for i in nms(xyxy, np.array([d.score for d in rest]), iou)]
        if boxes:  # a cut box that overlaps a whole one that much is the same object
            overlap = iou_matrix(
                xywh_to_xyxy(np.array([d.box for d in rest])),
                xywh_to_xyxy(np.array([d.box for d in boxes])),
            )
            rest = [d for d, o in zip(rest, overlap.max(axis=1), strict=True) if o <= iou]
        boxes += rest
    return boxes


class TiledDetector:
    """A backend that also looks at tiles of photos larger than ``spec.above`` (see the module
    docstring); smaller photos go to the backend unchanged.

    Args:
        backend: the detector (CenterFace, the plate model); its ``threshold`` is lowered to
            :data:`MERGE_FLOOR` and applied here after the merge.
        spec: the tile layout.
        tile_backend: builds the detector of tiled photos when it differs
            (``spec.precision``): their tiles and their whole look. Built on the first tiled
            photo, so a run of small photos never loads it; its threshold is lowered likewise.
    """

    def __init__(
        self, backend: Any, spec: TileSpec, tile_backend: Callable[[], Any] | None = None
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.threshold = float(backend.threshold)
        # low enough for the merge and for the gate to see faint candidates
        backend.threshold = min(self.threshold, MERGE_FLOOR, spec.gate_score or MERGE_FLOOR)
        self._make_tile_backend = tile_backend
        self._tile_backend: Any = None if tile_backend else backend
        self._lock = threading.Lock()
        self.name = backend.name
        self.labels = backend.labels
        self.tile_spec = spec.to_dict()  # provenance (``describe`` reads backend attributes)

    @property
    def tile_backend(self) -> Any:
        """The detector of tiled photos (built on first use)."""
        if self._tile_backend is None:
            with self._lock:
                if self._tile_backend is None and self._make_tile_backend is not None:
                    built = self._make_tile_backend()
                    built.threshold = self.backend.threshold
                    self._tile_backend = built
        return self._tile_backend

    def __getattr__(self, name: str) -> Any:  # the backend's settings, for provenance
        if name in ("backend", "_tile_backend", "_make_tile_backend", "_lock", "spec"):
            raise AttributeError(name)
        return getattr(self.backend, name)

    def detect_one(self, image: np.ndarray | WindowedImage) -> list[Detection]:
        if isinstance(image, WindowedImage):
            (width, height), whole_look = image.size, image.rgb
            read = image.window
        else:
            (height, width), whole_look = image.shape[:2], image

            def read(box: tuple[int, int, int, int]) -> np.ndarray:
                return image[box[1] : box[3], box[0] : box[2]]

        tiles = windows(height, width, self.spec)
        if tiles and 0 < self.spec.overview < max(height, width):
            factor = self.spec.overview / max(height, width)
            whole_look = resize(
                whole_look, max(1, round(width * factor)), max(1, round(height * factor))
            )
        found = (self.tile_backend if tiles else self.backend).detect([whole_look])[0]
        if not tiles:  # the backend's own answer, unchanged
            return [d for d in found if d.score >= self.threshold]
        if tiles and self.spec.gate_score > 0:
            long_side = max(height, width)
            seen = [
                ((d.box[0] + d.box[2] / 2) * width, (d.box[1] + d.box[3] / 2) * height)
                for d in found
                if d.score >= self.spec.gate_score
                and max(d.box[2] * width, d.box[3] * height) < self.spec.gate_size * long_side
            ]
            tiles = [
                (x0, y0, x1, y1)
                for x0, y0, x1, y1 in tiles
                if any(x0 <= cx < x1 and y0 <= cy < y1 for cx, cy in seen)
            ]
        largest = self.spec.largest or 2 * self.spec.overlap
        whole: list[Detection] = list(found)
        cut: list[Detection] = []
        for window in tiles:
            x0, y0, x1, y1 = window
            crop = check_image(read(window))
            if self.spec.scale != 1.0:
                crop = resize(
                    crop,
                    max(1, round((x1 - x0) * self.spec.scale)),
                    max(1, round((y1 - y0) * self.spec.scale)),
                )
            for det in self.tile_backend.detect([crop])[0]:
                moved = Detection(det.label, det.score, _to_photo(det, window, height, width))
                if max(moved.box[2] * width, moved.box[3] * height) > largest:
                    continue
                (cut if _touches_inner_edge(det, window, height, width) else whole).append(moved)
        merged = merge_tiles(whole, cut, MERGE_IOU)
        kept = [d for d in merged if d.score >= self.threshold]
        return sorted(kept, key=lambda d: -d.score)

    def detect(self, images: Sequence[Any]) -> list[list[Detection]]:
        return [
            self.detect_one(im if isinstance(im, WindowedImage) else check_image(im, i))
            for i, im in enumerate(images)
        ]
