"""Large images: held once, obscured window by window, the copy the same as the whole-image path.

The fast tests lower the size at which an image counts as large, so ordinary photos take the
large path; tests/test_faults.py measures a real 20000 x 20000 JPEG's peak memory.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fiftyone_anonymizer.core.boxes import Detection

BOXES = [
    Detection("face", 0.9, (0.30, 0.05, 0.28, 0.36)),
    Detection("plate", 0.8, (0.05, 0.80, 0.20, 0.08)),
    Detection("face", 0.5, (0.90, 0.90, 0.10, 0.10)),  # at the bottom-right border
    Detection("face", 0.5, (0.00, 0.00, 0.03, 0.04)),  # at the top-left corner
    Detection("face", 0.5, (0.50, 0.50, 0.01, 0.013)),  # tiny
]


def _photo(width: int, height: int) -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((width, height)))


@pytest.mark.parametrize("look", ["default", "strong", "pixelate", "fill", "seed", "rectangles"])
def test_window_by_window_is_byte_for_byte_the_whole_image_result(look):
    from fiftyone_anonymizer import blur

    settings = {
        "default": blur.BlurSettings(),
        "strong": blur.BlurSettings(strength=0.3),
        "pixelate": blur.BlurSettings(mode="pixelate"),
        "fill": blur.BlurSettings(mode="fill"),
        "seed": blur.BlurSettings.from_seed_kernel("21,2,9"),
        "rectangles": blur.BlurSettings(shape="rectangle", box_scale=1.0, feather=0),
    }[look]
    pixels = _photo(2400, 1800)
    expected = blur.anonymize_image(pixels, BOXES, settings)
    image = Image.fromarray(pixels.copy())
    blur.anonymize_pil_in_place(image, BOXES, settings)
    assert np.array_equal(np.asarray(image), expected)


def test_a_large_file_takes_the_large_path_and_writes_the_same_copy(monkeypatch, tmp_path):
    from fiftyone_anonymizer import blur, engine
    from fiftyone_anonymizer.core import images

    src = tmp_path / "src" / "big.jpg"
    src.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: the copy must come out upright
    exif[0x010F] = "CameraMaker"
    Image.fromarray(np.rot90(_photo(1600, 1200), 1).copy()).save(src, quality=92, exif=exif)
    monkeypatch.setattr(engine, "LARGE_PIXELS", 1_000_000)  # 1.9 MP counts as large here
    loaded_large = []
    real_load_large = engine.load_large
    monkeypatch.setattr(
        engine, "load_large", lambda path: loaded_large.append(path) or real_load_large(path)
    )

    target = tmp_path / "out" / "big.jpg"
    (result,) = engine.run(
        [engine.Item("big", source=src, boxes=BOXES, target=target)],
        engine.Steps(settings=blur.BlurSettings()),
    )
    assert result.ok, result.error
    assert loaded_large == [src] and (result.width, result.height) == (1600, 1200)

    upright = images.load_image(src).pixels  # the ordinary path, for reference
    expected = blur.anonymize_image(upright, BOXES, blur.BlurSettings())
    with Image.open(target) as copy:
        assert copy.size == (1600, 1200)
        assert not copy.getexif() and "icc_profile" not in copy.info
        got = np.asarray(copy)
    reference = np.asarray(Image.open(_encoded(tmp_path / "ref.jpg", expected)))
    assert np.array_equal(got, reference)


def _encoded(path, pixels):
    from fiftyone_anonymizer.core.images import encode_image

    path.write_bytes(encode_image(pixels, "JPEG"))
    return path


def test_detection_reads_a_large_jpeg_at_a_reduced_scale(tmp_path):
    from fiftyone_anonymizer.core import images

    src = tmp_path / "wide.jpg"
    Image.fromarray(_photo(9000, 3000)).save(src, quality=85)
    large = images.load_large(src)
    assert large.size == (9000, 3000)
    assert max(large.detect_rgb.shape[:2]) <= images.DETECT_MAX_SIDE
    assert large.image is None  # decoded small (JPEG draft mode), not in full
    assert large.full().size == (9000, 3000)


def test_memory_in_flight_is_bounded_by_pixels_not_by_count(monkeypatch, tmp_path):
    """With a budget of about two images, never more than two are decoded at once."""
    import threading

    from fiftyone_anonymizer import engine

    paths = []
    for i in range(8):
        path = tmp_path / f"p{i}.png"
        Image.fromarray(_photo(400, 300)).save(path)
        paths.append(path)
    live, peak, lock = [0], [0], threading.Lock()
    real_decode = engine._decode

    def counting_decode(item):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        return real_decode(item)

    monkeypatch.setattr(engine, "_decode", counting_decode)
    options = engine.EngineOptions(
        batch_size=1, io_workers=4, detect_workers=2, max_pixels=2 * 400 * 300
    )
    for result in engine.run([engine.Item(p, source=p) for p in paths], engine.Steps(), options):
        assert result.ok
        with lock:
            live[0] -= 1
    assert peak[0] <= 2
