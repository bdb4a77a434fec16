"""Large photos seen at full size: the tile layout, the merge across tiles, a face on a seam,
and a photo too large to hold as one array."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import HAND_FACE, box_iou
from fiftyone_anonymizer.core.boxes import Detection
from fiftyone_anonymizer.detectors.tiles import TileSpec, merge_tiles, spans, windows

SPEC = TileSpec(side=1536, overlap=192, above=1920)


@pytest.mark.parametrize("length", [1921, 2600, 3000, 4000, 6000, 12345])
def test_spans_cover_the_side_with_the_overlap_and_no_tile_too_long(length):
    got = spans(length, SPEC.side, SPEC.overlap)
    assert got[0][0] == 0 and got[-1][1] == length
    sizes = {end - start for start, end in got}
    assert len(sizes) == 1 and max(sizes) <= SPEC.side  # as even as the photo allows
    for (_, e0), (s1, _) in zip(got, got[1:]):
        assert e0 - s1 >= SPEC.overlap  # neighbours share at least the overlap
    # as few tiles as that allows: one fewer could not keep the overlap
    n = len(got) - 1
    assert n == 0 or n * SPEC.side - (n - 1) * SPEC.overlap < length


def test_photos_not_larger_than_the_look_get_no_tiles():
    assert windows(1080, 1920, SPEC) == []
    assert len(windows(3000, 4000, SPEC)) == 9


def _det(score, x0, y0, x1, y1, size=1000):
    return Detection("face", score, (x0 / size, y0 / size, (x1 - x0) / size, (y1 - y0) / size))


def test_a_cut_box_goes_when_a_whole_box_holds_it_even_if_it_scores_higher():
    whole = _det(0.6, 100, 100, 200, 220)
    half = _det(0.9, 150, 100, 200, 220)  # the same face, cut by a tile edge at x = 200
    kept = merge_tiles([whole], [half], iou=0.3)
    assert kept == [whole]


def test_a_cut_box_nobody_else_saw_is_kept():
    # recall first: a partial box still hides part of a face
    half = _det(0.7, 150, 100, 200, 220)
    other = _det(0.8, 600, 600, 700, 700)
    assert merge_tiles([other], [half], iou=0.3) == [other, half]


def _canvas_with_faces(width: int, height: int, places: list[tuple[int, int]], side: int):
    """A grey canvas with the astronaut (scaled to ``side`` px) pasted at ``places``; returns the
    pixels and her face's box at each place, relative to the canvas."""
    from skimage import data

    portrait = np.asarray(Image.fromarray(data.astronaut()).resize((side, side)))
    canvas = np.full((height, width, 3), 114, dtype=np.uint8)
    faces = []
    for x, y in places:
        canvas[y : y + side, x : x + side] = portrait
        fx, fy, fw, fh = HAND_FACE
        faces.append(
            (
                (x + fx * side) / width,
                (y + fy * side) / height,
                fw * side / width,
                fh * side / height,
            )
        )
    return canvas, faces


@pytest.mark.models
def test_a_face_on_a_tile_seam_is_found_once_and_whole():
    from fiftyone_anonymizer.detectors import FACE_TILES, build_backend
    from fiftyone_anonymizer.detectors.tiles import TiledDetector

    # 4000 x 3000: the face (about 90 x 120 px) crosses the end of the first tile column
    # and of the first tile row (inside the overlap, so the neighbouring tiles hold it whole).
    col_end = spans(4000, FACE_TILES["side"], FACE_TILES["overlap"])[0][1]
    row_end = spans(3000, FACE_TILES["side"], FACE_TILES["overlap"])[0][1]
    side = 500
    x = col_end - int((HAND_FACE[0] + HAND_FACE[2] / 2) * side)
    y = row_end - int((HAND_FACE[1] + HAND_FACE[3] / 2) * side)
    canvas, (face,) = _canvas_with_faces(4000, 3000, [(x, y)], side)
    detector = build_backend("centerface", 0.2)
    assert isinstance(detector, TiledDetector)
    found = detector.detect([canvas])[0]
    near = [d for d in found if box_iou(d.box, face) > 0.05]
    assert len(near) == 1, near  # once
    assert box_iou(near[0].box, face) >= 0.5, (near[0].box, face)  # whole


@pytest.mark.models
def test_small_faces_on_a_12_mp_photo_need_the_tiles():
    """At 1920 px for the whole photo an 18 px face becomes 9 px and is missed; tiles at the
    photo's own resolution find every one (the fast level has no tiles)."""
    from fiftyone_anonymizer.detectors import DetectorConfig

    places = [(300 + 900 * i, 400 + 800 * j) for i in range(4) for j in range(3)]
    canvas, faces = _canvas_with_faces(4000, 3000, places, 80)  # faces about 18 px tall
    tiled = DetectorConfig(plates=None).build().detect([canvas])[0]
    fast = DetectorConfig(plates=None, effort="fast").build().detect([canvas])[0]

    def hits(found):
        return sum(any(box_iou(d.box, f) >= 0.3 for d in found) for f in faces)

    assert hits(tiled) == len(faces)
    assert hits(fast) < len(faces) / 2  # what the tiles add; without them the test would pass


@pytest.mark.models
def test_a_photo_too_large_for_an_array_is_tiled_from_its_full_resolution(tmp_path):
    """A 48 MP JPEG takes the large-image path (held once by Pillow); its tiles read windows
    of the full image, so an 18 px face is found although the whole-photo look shows it at 4 px."""
    from fiftyone_anonymizer import engine
    from fiftyone_anonymizer.blur import BlurSettings
    from fiftyone_anonymizer.core.images import LARGE_PIXELS
    from fiftyone_anonymizer.detectors import DetectorConfig

    places = [(1000, 1000), (5000, 3000), (7000, 5200)]
    canvas, faces = _canvas_with_faces(8000, 6000, places, 80)
    assert LARGE_PIXELS < 8000 * 6000
    src, out = tmp_path / "huge.jpg", tmp_path / "out" / "huge.jpg"
    Image.fromarray(canvas).save(src, quality=92)
    del canvas
    detector = DetectorConfig(plates=None).build()
    (result,) = engine.run(
        [engine.Item(key="huge", source=str(src), target=out)],
        engine.Steps(detector=detector, settings=BlurSettings()),
    )
    assert result.error is None, result.error
    found = [d for d in result.detections if d.label == "face"]
    assert all(any(box_iou(d.box, f) >= 0.3 for d in found) for f in faces), found
    assert out.is_file()


@pytest.mark.models
def test_tiles_run_in_their_own_precision_unless_one_is_asked_for():
    from fiftyone_anonymizer.detectors import build_backend

    balanced = build_backend("centerface", 0.2, "balanced", "cpu")
    assert (balanced.backend.precision, balanced.tile_backend.precision) == ("float32", "int8")
    asked = build_backend("centerface", 0.2, "balanced", "cpu", precision="float32")
    assert asked.tile_backend is asked.backend and asked.precision == "float32"
    thorough = build_backend("centerface", 0.2, "thorough", "cpu")
    assert thorough.tile_backend is thorough.backend and thorough.precision == "float32"
    assert thorough.tile_spec["scale"] == 2.0 and balanced.tile_spec["precision"] == "int8"
