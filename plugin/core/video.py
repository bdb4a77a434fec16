"""Reading and writing videos the way a careful user would, frame by frame (PyAV, in process).

Reads turn frames upright (phone videos store a display matrix instead of rotating pixels), come
out as RGB uint8 one at a time (memory stays flat whatever the length) and end in a
:class:`VideoReadError` naming the file and the reason for anything missing, empty, truncated or
not a video: frames decoded before the damage still come out first.

:class:`VideoWriter` writes an anonymized copy the way browsers (and the FiftyOne App) play it:
H.264 High profile, yuv420p, BT.709 limited range (tagged), ``+faststart``; same displayed size,
frame rate, frame count and per-frame timestamps as the source (variable frame rate survives);
the source's audio stream is copied packet for packet (no re-encode) or dropped on request.
Nothing else is carried over: no container or stream metadata (GPS position, creation time,
device make and model), no rotation (frames are written upright), no data or subtitle streams
(dash-cam GPS tracks live there), no chapters. The copy is written atomically: a hidden
``.<name>.*.part`` file in the same folder, renamed on success and deleted on any exception
(a killed process can leave it behind, never a half-written file under the real name; Python
ends on SIGTERM without cleaning up unless the application turns it into an exception).

Odd sizes: H.264 in 4:2:0 codes whole 2x2 chroma blocks and can only crop in steps of 2 pixels,
so no browser-playable H.264 stream has an odd width or height (4:4:4 has no such limit but
Firefox and Safari do not play it). A copy of an odd-sized source is therefore padded by one
pixel on the right and/or bottom (the edge column or row repeated: the padding adds no content)
unless ``odd_size="error"`` asks to refuse; :attr:`VideoWriter.padded` says when it happened.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.sidedata.sidedata
import numpy as np

from .paths import partial_file

#: x264's constant rate factor of the copies (lower = better and bigger; x264's own default is
#: 23). On a 1280x720 street clip, 90 frames, veryfast: crf 16 773 KiB at 42.7 dB PSNR against
#: the decoded source, crf 20 456 KiB at 41.2 dB, crf 23 316 KiB at 39.7 dB.
DEFAULT_CRF = 20
#: x264 preset: on the same clip "medium" gave the same size at crf 20 (457 KiB, 42.5 dB) for
#: about twice the encoding time (noisy, shared CPUs); encoding must not become the slow stage.
DEFAULT_PRESET = "veryfast"
ODD_SIZE_POLICIES = ("pad", "error")

#: Audio codecs the MP4 muxer takes as they are (anything else is refused with a clear reason).
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"})

# The process's umask, read once (os.umask can only be read by setting it): a copy gets the
# permissions a plain open() would give it, not the private 0600 of its temporary file.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# Demuxers of still images: FFmpeg opens a JPEG or PNG as a one-frame "video".
_IMAGE_DEMUXERS = ("image2", "_pipe")


class VideoReadError(Exception):
    """A video that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class VideoWriteError(Exception):
    """A copy that cannot be written as asked; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What a copy must keep: sizes are as displayed (after the rotation is applied)."""

    path: str
    width: int
    height: int
    fps: Fraction  # average frame rate (frames per second)
    time_base: Fraction  # unit of the frames' pts
    frames: int | None  # frame count from the container's index, None when it has none
    rotation: int  # 0, 90, 180 or 270: degrees counter-clockwise frames are turned to be upright
    mirrored: bool  # mirrored left-right (before the rotation) to be shown as meant
    codec: str
    has_audio: bool
    audio_codec: str | None
    duration: float | None  # seconds, None when unknown


@dataclass(frozen=True)
class Frame:
    """One decoded frame, upright, with its presentation timestamp."""

    index: int  # 0-based position in presentation order
    pts: int  # in units of ``time_base``
    time_base: Fraction
    rgb: np.ndarray  # uint8 HxWx3, as displayed

    @property
    def time(self) -> float:
        """Presentation time in seconds."""
        return float(self.pts * self.time_base)


# --------------------------------------------------------------------------------------------
# Orientation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Orientation:
    """How stored pixels become displayed ones: transpose first, then flips."""

    transpose: bool = False
    flip_h: bool = False
    flip_v: bool = False

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        if self.transpose:
            rgb = rgb.transpose(1, 0, 2)
        if self.flip_h:
            rgb = rgb[:, ::-1]
        if self.flip_v:
            rgb = rgb[::-1]
        return np.ascontiguousarray(rgb)

    def describe(self) -> tuple[int, bool]:
        """``(rotation, mirrored)``: the display is the stored frame, mirrored left-right first
        when ``mirrored``, then turned ``rotation`` degrees counter-clockwise."""
        probe = np.arange(6).reshape(2, 3, 1)
        shown = self.apply(probe)
        for mirrored in (False, True):
            start = probe[:, ::-1] if mirrored else probe
            for quarter in range(4):
                turned = np.rot90(start, quarter)
                if turned.shape == shown.shape and np.array_equal(turned, shown):
                    return 90 * quarter, mirrored
        raise AssertionError(f"unreachable orientation {self}")


def _orientation_from_matrix(matrix: tuple[int, ...]) -> _Orientation:
    """Orientation of an FFmpeg display matrix (9 int32, 16.16 fixed point for a b c d).

    The matrix maps a stored pixel (p, q) (x right, y down) to ``(a p + c q, b p + d q)``;
    only quarter turns and mirrors occur in practice (phones, action cameras), anything else is
    refused rather than shown crooked.
    """
    a, b, _, c, d = (v / 65536.0 for v in matrix[:5])
    if max(abs(abs(a) - 1), abs(abs(d) - 1), abs(b), abs(c)) < 0.01:
        return _Orientation(False, a < 0, d < 0)
    if max(abs(abs(b) - 1), abs(abs(c) - 1), abs(a), abs(d)) < 0.01:
        return _Orientation(True, c < 0, b < 0)
    raise ValueError(f"display matrix is not a quarter turn or mirror: {matrix}")


def _frame_orientation(frame: av.VideoFrame) -> _Orientation:
    # PyAV's stubs type ``Frame.side_data`` as a TypedDict; at run time it is a container whose
    # iteration yields SideData entries.
    side_data = cast("Iterable[av.sidedata.sidedata.SideData]", frame.side_data)
    for side in side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            raw = bytes(side)
            if len(raw) >= 36:
                return _orientation_from_matrix(tuple(np.frombuffer(raw[:36], dtype="<i4")))
    return _Orientation()


def _to_rgb(frame: av.VideoFrame, orientation: _Orientation) -> np.ndarray:
    # The frame's own colour matrix and range (full-range phone video would otherwise come out
    # washed out); PyAV reads an unspecified range as limited.
    rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range or None)
    return orientation.apply(rgb)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoReadError(path, "file not found")
    if path.is_dir():
        raise VideoReadError(path, "is a folder, not a video")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "file is empty (0 bytes)")


def _open(path: Path) -> av.container.InputContainer:
    """The container and a clear reason when it is not a video at all."""
    _check_file(path)
    try:
        container = av.open(str(path), "r")
    except av.FFmpegError as exc:
        with open(path, "rb") as f:
            head = f.read(12)
        if head[4:8] == b"ftyp":  # an MP4/MOV whose index (moov, written last) never arrived
            raise VideoReadError(
                path, f"truncated or damaged MP4/MOV (its index cannot be read: {exc})"
            ) from None
        raise VideoReadError(path, f"not a recognised video (cannot be opened: {exc})") from None
    name = container.format.name or ""
    if any(part in name for part in _IMAGE_DEMUXERS):
        container.close()
        raise VideoReadError(path, f"is a still image ({name}), not a video")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        what = f"only {', '.join(kinds)}" if kinds else "no streams at all: an empty recording?"
        raise VideoReadError(path, f"has no video stream ({what})")
    return container


def _truncation(path: Path, container: av.container.InputContainer) -> str | None:
    """Why the file is shorter than its own index says, or None. MP4/MOV index every sample's
    position (video and audio); a file cut after the index (a copy stopped half-way) is caught
    here."""
    ends = [
        e.pos + e.size for s in container.streams for e in (getattr(s, "index_entries", None) or [])
    ]
    if not ends:
        return None
    end = max(ends)
    size = path.stat().st_size
    if end > size:
        return f"truncated: the index places data up to byte {end} but the file has {size} bytes"
    return None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read what a copy must keep, decoding only the first frame (for the rotation and to prove
    there is a frame at all).

    Raises:
        VideoReadError: missing, empty, a folder, a still image, not a video, no video stream,
            no frames, undecodable, or truncated (shorter than its own index).
    """
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        reason = _truncation(path, container)
        if reason:
            raise VideoReadError(path, reason)
        first = None
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    first = frame
                    break
                if first is not None:
                    break
        except av.FFmpegError as exc:
            raise VideoReadError(path, f"cannot be decoded: {exc}") from None
        if first is None:
            raise VideoReadError(path, "has no frames (the video stream is empty)")
        try:
            orientation = _frame_orientation(first)
        except ValueError as exc:
            raise VideoReadError(path, str(exc)) from None
        rotation, mirrored = orientation.describe()
        width, height = first.width, first.height
        if orientation.transpose:
            width, height = height, width
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not fps:
            raise VideoReadError(path, "has no frame rate")
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        audio = container.streams.audio
        return VideoInfo(
            path=str(path),
            width=width,
            height=height,
            fps=Fraction(fps),
            time_base=_time_base(path, stream),
            frames=stream.frames or None,
            rotation=rotation,
            mirrored=mirrored,
            codec=stream.codec_context.name,
            has_audio=bool(audio),
            audio_codec=audio[0].codec_context.name if audio else None,
            duration=duration,
        )
    finally:
        container.close()


def iter_frames(path: str | os.PathLike) -> Iterator[Frame]:
    """Decode ``path`` frame by frame: upright RGB uint8 with index and timestamp.

    One frame is held at a time (plus the decoder's few reference frames), so memory does not
    grow with the length. Timestamps strictly increase (a repeated one, seen in damaged files,
    becomes the previous plus one unit), so every frame can be written back. A damaged file
    yields every frame decoded before the damage, then raises.

    Raises:
        VideoReadError: as :func:`probe`, and when decoding fails part-way or ends with fewer
            frames than the container's index lists (truncated or corrupt).
    """
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        expected = stream.frames or None
        time_base = _time_base(path, stream)
        step = _nominal_step(stream, time_base)
        count, last_pts, orientation = 0, None, None
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    raise VideoReadError(path, f"corrupt data after frame {count}")
                for frame in packet.decode():
                    if orientation is None:
                        orientation = _frame_orientation(frame)
                    pts = frame.pts
                    if pts is None:  # raw streams carry no timestamps: frames at the nominal rate
                        pts = 0 if last_pts is None else last_pts + step
                    elif last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1  # a damaged file repeats a timestamp: keep the frame
                    last_pts = pts
                    yield Frame(count, int(pts), time_base, _to_rgb(frame, orientation))
                    count += 1
        except av.FFmpegError as exc:
            raise VideoReadError(path, f"cannot be decoded after frame {count}: {exc}") from None
        except ValueError as exc:  # a display matrix that is not a quarter turn
            raise VideoReadError(path, str(exc)) from None
        if count == 0:
            raise VideoReadError(path, "has no frames (the video stream is empty)")
        if expected is not None and count < expected:
            raise VideoReadError(
                path, f"truncated or corrupt: {count} of the {expected} frames decoded"
            )
    finally:
        container.close()


def _time_base(path: Path, stream: av.video.stream.VideoStream) -> Fraction:
    """The stream's time base (FFmpeg sets one on every demuxed stream; PyAV reads a zero one
    as None, refused here)."""
    if stream.time_base is None:
        raise VideoReadError(path, "has no time base (its timestamps have no unit)")
    return Fraction(stream.time_base)


def _nominal_step(stream: av.video.stream.VideoStream, time_base: Fraction) -> int:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
    return max(1, round(1 / (Fraction(rate) * time_base)))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class VideoWriter:
    """Writes an anonymized copy frame by frame; use as a context manager.

    ``with VideoWriter.for_source(dst, probe(src)) as out: out.write(rgb, pts)`` for each
    frame of ``iter_frames(src)``: the copy gets the source's size, rate, timestamps and audio.

    Args:
        path: the copy (MP4 whatever its extension; the folder is created).
        width, height: displayed size of the frames that will be written.
        fps: nominal frame rate (the MP4 stores each frame's own timestamp as well).
        time_base: unit of the ``pts`` given to :meth:`write`; default ``1 / (fps * 1000)``.
        audio_from: a file whose first audio stream is copied packet for packet; None: no audio.
        crf: x264 quality (0-51, lower is better and bigger).
        preset: x264 speed preset.
        odd_size: ``"pad"`` (one edge pixel repeated to reach even sizes) or ``"error"``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        fps: Fraction | float,
        *,
        time_base: Fraction | None = None,
        audio_from: str | os.PathLike | None = None,
        crf: int = DEFAULT_CRF,
        preset: str = DEFAULT_PRESET,
        odd_size: str = "pad",
    ) -> None:
        self.path = Path(path)
        if width < 1 or height < 1:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if odd_size not in ODD_SIZE_POLICIES:
            raise ValueError(f"odd_size must be one of {ODD_SIZE_POLICIES}, got {odd_size!r}")
        if not 0 <= int(crf) <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        if (width % 2 or height % 2) and odd_size == "error":
            raise VideoWriteError(
                self.path,
                f"odd frame size {width}x{height}: browser-playable H.264 (4:2:0) "
                "needs even sizes; odd_size='pad' writes one repeated edge pixel more",
            )
        self.width, self.height = int(width), int(height)
        self.padded = bool(width % 2 or height % 2)
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.time_base = Fraction(time_base) if time_base else 1 / (self.fps * 1000)
        self.frames = 0
        self._last_pts: int | None = None
        self._step = max(1, round(1 / (self.fps * self.time_base)))
        self._done = False
        fd, tmp = partial_file(self.path)
        os.close(fd)
        self._tmp = Path(tmp)
        self._audio_in: av.container.InputContainer | None = None
        self._audio_packets: Iterator[av.Packet] | None = None
        self._pending: av.Packet | None = None
        try:
            self._open(crf, preset, audio_from)
        except BaseException:
            self.abort()
            raise

    @classmethod
    def for_source(
        cls, path: str | os.PathLike, info: VideoInfo, *, audio: bool = True, **options
    ) -> VideoWriter:
        """A writer with ``info``'s size, rate and time base, copying its audio unless
        ``audio=False``; ``options`` as in the constructor (crf, preset, odd_size)."""
        return cls(
            path,
            info.width,
            info.height,
            info.fps,
            time_base=info.time_base,
            audio_from=info.path if audio and info.has_audio else None,
            **options,
        )

    def _open(self, crf: int, preset: str, audio_from: str | os.PathLike | None) -> None:
        # bitexact: no "encoder" tag; nothing else is set, so no metadata is written at all
        self._out = av.open(
            str(self._tmp),
            "w",
            format="mp4",
            options={"movflags": "+faststart", "fflags": "+bitexact"},
        )
        video = self._out.add_stream("libx264", rate=self.fps)
        video.width = self.width + self.width % 2
        video.height = self.height + self.height % 2
        video.pix_fmt = "yuv420p"
        video.time_base = self.time_base
        ctx = video.codec_context
        ctx.time_base = self.time_base
        ctx.color_range = 1  # MPEG (limited)
        ctx.color_primaries = ctx.color_trc = ctx.colorspace = 1  # BT.709, tagged in the stream
        ctx.options = {"crf": str(int(crf)), "preset": preset}
        self._video = video
        if audio_from is None:
            return
        self._audio_in = av.open(str(audio_from), "r")
        if not self._audio_in.streams.audio:
            raise VideoWriteError(self.path, f"{audio_from} has no audio stream to copy")
        source = self._audio_in.streams.audio[0]
        codec = source.codec_context.name
        if codec not in MP4_AUDIO_CODECS:
            raise VideoWriteError(
                self.path,
                f"the source's audio ({codec}) cannot be copied into MP4 unchanged; "
                "leave the audio out of the copy (command line: --no-audio; Python: "
                "audio=False; the App's form: untick 'Keep the audio') or convert the "
                "source's audio first",
            )
        self._audio = self._out.add_stream_from_template(source)
        self._audio.metadata.clear()
        self._audio_packets = iter(self._audio_in.demux(source))

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        """Encode one upright RGB uint8 frame of the writer's size.

        Args:
            rgb: HxWx3 uint8 (the displayed size given to the writer).
            pts: presentation time in ``time_base`` units, strictly increasing; default: the
                previous one plus one nominal frame (constant rate from 0).
        """
        if self._done:
            raise ValueError("writer is closed")
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.shape != (self.height, self.width, 3):
            raise ValueError(
                f"expected uint8 {self.height}x{self.width}x3, got {rgb.dtype} {rgb.shape}"
            )
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        pts = int(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"pts must increase: {pts} after {self._last_pts}")
        if self.padded:
            rgb = np.pad(rgb, ((0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace="itu709", dst_color_range=1)
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self._video.encode(frame):
            self._out.mux(packet)
        self._last_pts = pts
        self.frames += 1
        self._pump_audio(float(pts * self.time_base))

    def _pump_audio(self, until: float | None) -> None:
        """Copy source audio packets up to ``until`` seconds (all when None): audio and video
        stay interleaved in the file, and only one packet is held."""
        if self._audio_packets is None:
            return
        while True:
            if self._pending is None:
                self._pending = next(self._audio_packets, None)
                if self._pending is None:
                    self._audio_packets = None
                    return
            packet = self._pending
            if packet.dts is None or packet.size == 0:  # demuxer's end marker
                self._pending = None
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            if until is not None and float(stamp * packet.time_base) > until:
                return
            packet.stream = self._audio
            self._out.mux(packet)
            self._pending = None

    def close(self) -> None:
        """Finish the file and give it its real name (atomically)."""
        if self._done:
            return
        try:
            if self.frames == 0:
                raise VideoWriteError(self.path, "no frames were written")
            for packet in self._video.encode():
                self._out.mux(packet)
            self._pump_audio(None)
            self._out.close()
            if self._audio_in is not None:
                self._audio_in.close()
            with open(self._tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(self._tmp, 0o666 & ~_UMASK)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Stop and delete the temporary file; the real name is never touched."""
        self._done = True
        for container in (getattr(self, "_out", None), self._audio_in):
            if container is not None:  # a half-written file is deleted below anyway
                with contextlib.suppress(av.FFmpegError, OSError, ValueError):
                    container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
