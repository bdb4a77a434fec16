"""Video datasets through the same jobs: tracked frame labels, a playable copy with the
source's size, rate, frame count and audio, an audit of the copy, share, and the command line."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.models
FRAMES, FPS = 36, 12


def _clip(path: Path, frames: int = FRAMES, size=(320, 240)) -> Path:
    """The astronaut panning across a 320x240 window, with a sine tone as audio."""
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((480, 480)))
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = out.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for i in range(frames):
            x = 40 + 2 * i
            window = np.ascontiguousarray(photo[20 : 20 + size[1], x : x + size[0]])
            for packet in video.encode(av.VideoFrame.from_ndarray(window, format="rgb24")):
                out.mux(packet)
        tone = (np.sin(np.arange(16000 * frames // FPS) / 5) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone[None, :], format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in audio.encode(frame):
            out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                out.mux(packet)
    return path


def test_detect_anonymize_audit_and_share_a_video_dataset(make_dataset, tmp_path):
    import fiftyone as fo

    from fiftyone_anonymizer import (
        anonymize_images,
        audit_anonymization,
        detect_faces_and_plates,
        share_anonymized,
    )
    from fiftyone_anonymizer.core import video

    src = _clip(tmp_path / "src" / "pan.mp4")
    ds = make_dataset([fo.Sample(filepath=str(src))])
    report = detect_faces_and_plates(ds)
    assert report.processed == 1 and report.boxes_per_class["face"] >= 1, report.to_dict()
    sample = ds.first()
    labels = [sample.frames[i].anonymizer_detections for i in range(1, FRAMES + 1)]
    faces = [[d for d in f.detections if d.label == "face"] for f in labels]
    assert all(frame for frame in faces), "her face is hidden in every frame"
    assert {d.index for frame in faces for d in frame} == {faces[0][0].index}  # one track
    from fiftyone_anonymizer.detectors.tracking import TrackSettings

    # the tracker's settings are recorded with the labels, as the job ran them
    recorded = ds.get_field("frames.anonymizer_detections").info["tracking"]
    assert recorded == TrackSettings().to_dict(), recorded

    report = anonymize_images(ds, tmp_path / "copies")
    assert report.processed == 1, report.to_dict()
    copy = Path(ds.first().anonymized_filepath)
    assert copy.suffix == ".mp4" and copy.is_file()
    source, made = video.probe(src), video.probe(copy)
    assert (made.width, made.height, made.frames) == (source.width, source.height, FRAMES)
    assert made.fps == Fraction(FPS) and made.has_audio
    with av.open(str(copy)) as container:
        assert not dict(container.metadata).get("creation_time")
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
    before = next(video.iter_frames(src)).rgb.astype(int)
    after = next(video.iter_frames(copy)).rgb.astype(int)
    box = faces[0][0].bounding_box
    y0, x0 = int(box[1] * 240), int(box[0] * 320)
    y1, x1 = int((box[1] + box[3]) * 240), int((box[0] + box[2]) * 320)
    assert np.abs(after[y0:y1, x0:x1] - before[y0:y1, x0:x1]).mean() > 6  # the face is blurred
    assert np.abs(after[:, -40:] - before[:, -40:]).mean() < 4  # the rest is not

    again = anonymize_images(ds, tmp_path / "copies")
    assert (again.processed, again.skipped) == (0, 1)
    audit = audit_anonymization(ds, every=6)
    assert audit.audited == 1 and audit.flagged == 0, audit.to_dict()

    name = f"video-share-{tmp_path.name}"
    try:
        shared, _ = share_anonymized(ds, name=name)
        assert shared.media_type == "video" and shared.first().filepath == str(copy)
        assert shared.first().frames[1].anonymizer_detections is not None
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_the_command_line_takes_videos_and_bad_ones_are_named(tmp_path):
    src = tmp_path / "in"
    _clip(src / "street" / "pan.mov", frames=12)
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (src / "empty.webm").write_bytes(b"")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fiftyone_anonymizer.cli",
            "--input",
            str(src),
            "--image-output",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr  # two videos failed, each named
    assert "broken.mp4" in proc.stderr and "empty.webm" in proc.stderr
    copy = out / "street" / "pan.mov"
    assert copy.is_file() and (out / "street" / "pan.json").is_file()
    from fiftyone_anonymizer.core import video

    assert video.probe(copy).frames == 12
    assert not (out / "broken.mp4").exists() and not list(out.rglob(".*.part"))
