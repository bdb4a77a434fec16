"""Video reading and writing: test videos are made here with PyAV (no files, no ffmpeg binary)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fiftyone_anonymizer.core.video import (
    VideoInfo,
    VideoReadError,
    VideoWriteError,
    VideoWriter,
    iter_frames,
    probe,
)

AUDIO_RATE = 44100
PRIVATE = {
    "creation_time": "2024-05-01T10:00:00.000000Z",
    "location": "+48.8577+002.2950/",
    "make": "Phone Maker",
    "model": "Phone 12",
    "title": "at home",
}


def pattern(i: int, width: int, height: int) -> np.ndarray:
    """A frame that shows where its top-left corner is and which frame it is."""
    img = np.full((height, width, 3), 40, np.uint8)
    img[: height // 4, : width // 3] = (250, 30, 30)  # red block: top-left
    img[height // 2 :, width // 2 :, 1] = (i * 7) % 256  # changes with the frame
    return img


def make_video(
    path: Path,
    n: int = 30,
    width: int = 96,
    height: int = 64,
    rate: int = 25,
    audio: bool = True,
    rotation: int = 0,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    metadata: bool = True,
    faststart: bool = True,
    hflip: bool = False,
) -> Path:
    """An H.264 MP4 (+ AAC sine) with private-looking metadata, optional rotation and VFR pts."""
    options = {"movflags": "+faststart+use_metadata_tags"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        if metadata:
            out.metadata.update(PRIVATE)
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if time_base is not None:
            video.time_base = video.codec_context.time_base = time_base
        if rotation or hflip:
            video.set_display_rotation(rotation, hflip=hflip)
        if metadata:
            video.metadata["creation_time"] = PRIVATE["creation_time"]
            video.metadata["handler_name"] = "Core Media Video"
        if audio:
            sound = out.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = "mono"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            frame.pts = pts[i] if pts is not None else i
            if time_base is None:
                frame.time_base = Fraction(1, rate)
            else:
                frame.time_base = time_base
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio:
            seconds = n / rate
            t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for k in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(
                    samples[None, k : k + 1024], format="flt", layout="mono"
                )
                chunk.sample_rate, chunk.pts = AUDIO_RATE, k
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())
    return path


def copy_through(src: Path, dst: Path, **options) -> VideoWriter:
    """Decode ``src`` and write every frame unchanged with the writer (the anonymizer's path)."""
    info = probe(src)
    with VideoWriter.for_source(dst, info, **options) as out:
        for frame in iter_frames(src):
            out.write(frame.rgb, frame.pts)
    return out


def audio_packets(path: Path) -> list[tuple[bytes, Fraction]]:
    """Each audio packet's bytes and presentation time (in seconds)."""
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts * p.time_base) for p in c.demux(c.streams.audio[0]) if p.size]


def frame_times(path: Path) -> list[Fraction]:
    return [f.pts * f.time_base for f in iter_frames(path)]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "source.mp4")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def test_probe_reports_what_a_copy_must_keep(source):
    info = probe(source)
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height, info.frames) == (96, 64, 30)
    assert info.fps == Fraction(25) and isinstance(info.fps, Fraction)
    assert info.rotation == 0 and not info.mirrored and info.codec == "h264"
    assert info.has_audio and info.audio_codec == "aac"
    assert info.duration == pytest.approx(30 / 25, abs=0.05)


def test_iter_frames_yields_rgb_with_index_and_timestamps(source):
    frames = list(iter_frames(source))
    assert [f.index for f in frames] == list(range(30))
    assert all(f.rgb.dtype == np.uint8 and f.rgb.shape == (64, 96, 3) for f in frames)
    assert [f.time for f in frames] == pytest.approx([i / 25 for i in range(30)])
    red = frames[3].rgb[2:12, 2:25].mean(axis=(0, 1))
    assert red[0] > 200 and red[1] < 80  # top-left stays top-left


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_phone_video_comes_out_upright(tmp_path, rotation):
    path = make_video(tmp_path / "phone.mp4", n=3, audio=False, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation % 360 and not info.mirrored
    expected = {90: (64, 96), -90: (64, 96), 180: (96, 64)}[rotation]
    assert (info.width, info.height) == expected
    rgb = next(iter_frames(path)).rgb
    assert rgb.shape == (expected[1], expected[0], 3)
    # where the stored top-left red block ends up once displayed
    corner = {
        90: (slice(-10, None), slice(0, 10)),  # counter-clockwise: bottom-left
        -90: (slice(0, 10), slice(-10, None)),  # clockwise: top-right
        180: (slice(-10, None), slice(-10, None)),
    }[rotation]
    assert rgb[corner].mean(axis=(0, 1))[0] > 200
    assert rgb[:10, :10].mean(axis=(0, 1))[0] < 100


def test_mirrored_video_comes_out_mirrored_back(tmp_path):
    path = make_video(tmp_path / "selfie.mp4", n=2, audio=False, hflip=True)
    info = probe(path)
    assert (info.width, info.height, info.rotation, info.mirrored) == (96, 64, 0, True)
    rgb = next(iter_frames(path)).rgb
    assert rgb[:10, -10:].mean(axis=(0, 1))[0] > 200  # the stored top-left shows top-right
    assert rgb[:10, :10].mean(axis=(0, 1))[0] < 100


def test_missing_empty_folder_and_non_video_inputs_give_the_reason(tmp_path):
    cases = {
        tmp_path / "nope.mp4": "file not found",
        tmp_path: "is a folder",
    }
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases[tmp_path / "empty.mp4"] = "file is empty"
    (tmp_path / "notes.mp4").write_text("not a video at all, just text " * 50)
    cases[tmp_path / "notes.mp4"] = "not a recognised video"
    from PIL import Image

    Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "photo.jpg")
    cases[tmp_path / "photo.jpg"] = "still image"
    for path, reason in cases.items():
        with pytest.raises(VideoReadError, match=reason) as err:
            probe(path)
        assert err.value.path == str(path)
        with pytest.raises(VideoReadError, match=reason):
            list(iter_frames(path))


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=AUDIO_RATE)
        sound.layout = "mono"
        chunk = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="flt", layout="mono"
        )
        chunk.sample_rate, chunk.pts = AUDIO_RATE, 0
        out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    with pytest.raises(VideoReadError, match="no video stream .*audio"):
        probe(path)


def test_video_stream_without_frames(tmp_path):
    # a recording whose camera stopped before its first frame: Matroska keeps the empty video
    # track (MP4 drops it, and an MP4 with nothing at all has no streams)
    for name, reason, audio in (
        ("zero.mkv", "has no frames", True),
        ("zero.mp4", "no streams at all", False),
    ):
        path = tmp_path / name
        with av.open(str(path), "w") as out:
            video = out.add_stream("libx264", rate=25)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            if audio:
                sound = out.add_stream("aac", rate=8000)
                sound.layout = "mono"
            out.start_encoding()
            if audio:
                chunk = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="flt", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 8000, 0
                out.mux(sound.encode(chunk))
                out.mux(sound.encode())
        assert path.stat().st_size > 0
        with pytest.raises(VideoReadError, match=reason):
            probe(path)
        with pytest.raises(VideoReadError, match=reason):
            list(iter_frames(path))


def test_truncated_file_yields_frames_then_a_clear_error(tmp_path, source):
    data = source.read_bytes()  # faststart: index first, so a cut file still opens
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match="truncated"):
        probe(cut)
    got = []
    with pytest.raises(VideoReadError, match="truncated or corrupt: .* of the 30 frames"):
        for frame in iter_frames(cut):
            got.append(frame.index)
    assert 0 < len(got) < 30 and got == list(range(len(got)))


def test_truncated_file_without_its_index(tmp_path):
    whole = make_video(tmp_path / "slow.mp4", n=10, faststart=False)  # index written last
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with pytest.raises(VideoReadError, match="truncated or damaged MP4"):
        probe(cut)


def test_corrupt_data_stops_with_an_error_not_silence(tmp_path, source):
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(1)
    start = len(data) // 3
    data[start : start + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(VideoReadError):
        for _ in iter_frames(bad):
            pass


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def test_copy_keeps_size_rate_count_timestamps_and_pixels(tmp_path, source):
    dst = tmp_path / "out" / "copy.mp4"
    copy_through(source, dst)
    a, b = probe(source), probe(dst)
    assert (b.width, b.height, b.fps, b.frames) == (a.width, a.height, a.fps, a.frames)
    assert b.codec == "h264"
    assert frame_times(dst) == frame_times(source)
    with av.open(str(dst)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
    diffs = [
        np.abs(x.rgb.astype(int) - y.rgb.astype(int)).mean()
        for x, y in zip(iter_frames(source), iter_frames(dst), strict=True)
    ]
    assert max(diffs) < 3  # crf 20 of an already compressed frame: a level or two


def test_audio_is_copied_packet_for_packet_or_dropped(tmp_path, source):
    kept = tmp_path / "kept.mp4"
    copy_through(source, kept)
    assert probe(kept).has_audio
    assert audio_packets(kept) == audio_packets(source)
    with av.open(str(kept)) as c, av.open(str(source)) as s:
        assert (
            c.streams.audio[0].codec_context.extradata == s.streams.audio[0].codec_context.extradata
        )
    dropped = tmp_path / "dropped.mp4"
    copy_through(source, dropped, audio=False)
    assert not probe(dropped).has_audio


def test_no_metadata_survives(tmp_path, source):
    with av.open(str(source)) as c:  # the source really carries it
        assert c.metadata.get("location") == PRIVATE["location"]
        assert "creation_time" in c.streams.video[0].metadata
    dst = tmp_path / "clean.mp4"
    copy_through(source, dst)
    with av.open(str(dst)) as c:
        # only what the MP4 format itself needs (file type brands, track language, handler)
        assert set(c.metadata) <= {"major_brand", "minor_version", "compatible_brands"}
        for stream in c.streams:
            assert set(stream.metadata) <= {"language", "handler_name", "vendor_id"}
            assert stream.metadata.get("handler_name") in (None, "VideoHandler", "SoundHandler")
    raw = dst.read_bytes()
    for value in PRIVATE.values():
        assert value.encode() not in raw


def test_rotation_is_applied_and_not_left_in_the_copy(tmp_path):
    src = make_video(tmp_path / "phone.mp4", n=5, rotation=-90)
    dst = tmp_path / "upright.mp4"
    copy_through(src, dst)
    info = probe(dst)
    assert (info.width, info.height, info.rotation) == (64, 96, 0)
    with av.open(str(dst)) as c:
        first = next(c.decode(video=0))
        assert (first.width, first.height, first.rotation) == (64, 96, 0)
    a, b = next(iter_frames(src)).rgb, next(iter_frames(dst)).rgb
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_variable_frame_rate_timestamps_survive(tmp_path):
    pts = [0, 1000, 2000, 3500, 4000, 6000, 6500, 7000, 9000, 9900, 12000, 12100]
    src = make_video(
        tmp_path / "vfr.mp4", n=len(pts), pts=pts, time_base=Fraction(1, 30000), rate=30
    )
    dst = tmp_path / "copy.mp4"
    copy_through(src, dst)
    times = frame_times(src)
    assert times == [Fraction(p, 30000) for p in pts]
    assert frame_times(dst) == times
    assert probe(dst).frames == len(pts)


def test_odd_size_is_padded_by_one_edge_pixel_or_refused(tmp_path):
    src = tmp_path / "odd.mp4"  # an odd size can only be stored in 4:4:4 (lossless here)
    with av.open(str(src), "w", format="mp4") as out:
        video = out.add_stream("libx264rgb", rate=25)
        video.width, video.height, video.pix_fmt = 97, 63, "rgb24"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(pattern(i, 97, 63), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
    info = probe(src)
    assert (info.width, info.height) == (97, 63)
    with pytest.raises(VideoWriteError, match="odd frame size 97x63"):
        VideoWriter.for_source(tmp_path / "refused.mp4", info, odd_size="error")
    assert not list(tmp_path.glob(".*.part"))
    dst = tmp_path / "padded.mp4"
    writer = copy_through(src, dst)
    assert writer.padded
    out_info = probe(dst)
    assert (out_info.width, out_info.height, out_info.frames) == (98, 64, 3)
    a, b = next(iter_frames(src)).rgb, next(iter_frames(dst)).rgb
    assert np.abs(b[:63, :97].astype(int) - a.astype(int)).mean() < 3
    # the extra column and row repeat the edge: no new content
    assert np.abs(b[:63, 97].astype(int) - b[:63, 96].astype(int)).mean() < 3
    assert np.abs(b[63, :97].astype(int) - b[62, :97].astype(int)).mean() < 3


def test_failure_leaves_nothing_under_the_real_name_and_no_temp_file(tmp_path, source):
    dst = tmp_path / "copy.mp4"
    with (
        pytest.raises(RuntimeError, match="detector crashed"),
        VideoWriter.for_source(dst, probe(source)) as out,
    ):
        for frame in iter_frames(source):
            out.write(frame.rgb, frame.pts)
            if frame.index == 10:
                raise RuntimeError("detector crashed")
    assert os.listdir(tmp_path) == []
    # an existing copy is not touched by a failed rewrite
    dst.write_bytes(b"previous copy")
    with (
        pytest.raises(ValueError, match="expected uint8"),
        VideoWriter.for_source(dst, probe(source)) as out,
    ):
        out.write(np.zeros((10, 10, 3), np.uint8))
    assert dst.read_bytes() == b"previous copy"
    assert os.listdir(tmp_path) == ["copy.mp4"]


def test_interrupt_cleans_up_and_kill_leaves_only_the_hidden_temp_file(tmp_path, source):
    dst = tmp_path / "copy.mp4"
    with pytest.raises(KeyboardInterrupt), VideoWriter.for_source(dst, probe(source)) as out:
        out.write(next(iter_frames(source)).rgb, 0)
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
    # kill -9 in the middle of a copy: the real name never appears
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import sys, numpy as np\n"
        "from fiftyone_anonymizer.core.video import VideoWriter\n"
        "with VideoWriter(sys.argv[1], 64, 48, 25) as out:\n"
        "    for i in range(10**6):\n"
        "        out.write(np.full((48, 64, 3), i % 256, np.uint8))\n"
        "        if i == 5: print('writing', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(dst)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    names = os.listdir(tmp_path)
    assert len(names) == 1 and names[0].startswith(".copy.mp4.") and names[0].endswith(".part")


def test_temp_file_is_hidden_in_the_same_folder_while_writing(tmp_path, source):
    dst = tmp_path / "copy.mp4"
    with VideoWriter.for_source(dst, probe(source)) as out:
        out.write(next(iter_frames(source)).rgb, 0)
        names = os.listdir(tmp_path)
        assert len(names) == 1 and names[0].startswith(".copy.mp4.") and names[0].endswith(".part")
        assert not dst.exists()
    assert os.listdir(tmp_path) == ["copy.mp4"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert dst.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0600


def test_writer_refuses_bad_input(tmp_path, source):
    info = probe(source)
    with VideoWriter.for_source(tmp_path / "a.mp4", info) as out:
        out.write(np.zeros((64, 96, 3), np.uint8), 5)
        with pytest.raises(ValueError, match="pts must increase"):
            out.write(np.zeros((64, 96, 3), np.uint8), 5)
    with (
        pytest.raises(VideoWriteError, match="no frames were written"),
        VideoWriter.for_source(tmp_path / "b.mp4", info),
    ):
        pass
    assert not (tmp_path / "b.mp4").exists()
    with pytest.raises(ValueError, match="crf"):
        VideoWriter(tmp_path / "c.mp4", 64, 48, 25, crf=60)
    assert sorted(os.listdir(tmp_path)) == ["a.mp4"]


def test_audio_that_mp4_cannot_hold_is_refused_with_the_reason(tmp_path):
    src = tmp_path / "pcm.mkv"
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream("pcm_s16le", rate=8000)
        sound.layout = "mono"
        frame = av.VideoFrame.from_ndarray(pattern(0, 64, 48), format="rgb24")
        frame.pts = 0
        out.mux(video.encode(frame))
        out.mux(video.encode())
        chunk = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        chunk.sample_rate, chunk.pts = 8000, 0
        out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    info = probe(src)
    assert info.audio_codec == "pcm_s16le"
    with pytest.raises(VideoWriteError, match=r"audio \(pcm_s16le\) cannot be copied"):
        VideoWriter.for_source(tmp_path / "copy.mp4", info)
    copy_through(src, tmp_path / "silent.mp4", audio=False)
    assert sorted(os.listdir(tmp_path)) == ["pcm.mkv", "silent.mp4"]


def test_memory_stays_flat_over_a_long_video(tmp_path):
    import tracemalloc

    src = make_video(
        tmp_path / "long.mp4", n=300, width=320, height=240, audio=False, metadata=False
    )
    tracemalloc.start()
    count = 0
    for _ in iter_frames(src):
        count += 1
        if count == 20:
            _, early_peak = tracemalloc.get_traced_memory()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 300
    assert peak < early_peak + 2 * 320 * 240 * 3  # not one frame's worth per frame
