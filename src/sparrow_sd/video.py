"""Reading a user's video file: decoded as a stream, only the sampled frames kept.

:func:`read_video` opens any container FFmpeg reads (mp4, mkv, webm, ...) with
PyAV, decodes the first video stream frame by frame and converts to RGB only
the frames it samples, so memory holds the sampled frames and never the whole
file (a 20-minute HD video sampled at 16 frames costs 16 frames of memory).

Sampling never invents frames: asking for more frames than the video has, or
for a rate above its own, samples each decoded frame at most once and says so
in :attr:`DecodedVideo.sampling_note`. A file whose decoded frames or duration
disagree with what its container announces (a truncated download, a damaged
file) is decoded as far as it goes, with a warning saying how far.

Every way a file can fail to give any frame raises its own subclass of
:class:`VideoDecodeError`, so callers can skip bad inputs selectively.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from .errors import InvalidInputError, SparrowError

#: ``progress(decoded_frames, expected_frames_or_None)``, called as frames decode.
Progress = Callable[[int, "int | None"], None]


class VideoDecodeError(SparrowError):
    """Base class: the file could not give any video frames."""


class VideoNotFoundError(VideoDecodeError, FileNotFoundError):
    """The path does not exist (or is not a regular file)."""


class EmptyVideoFileError(VideoDecodeError):
    """The file exists but has zero bytes."""


class CorruptVideoError(VideoDecodeError):
    """The file is not a media container FFmpeg can parse."""


class NoVideoStreamError(CorruptVideoError):
    """The container parses but holds no video stream (e.g. audio only)."""


class NoFramesError(VideoDecodeError):
    """The video stream yields zero decodable frames."""


@dataclass
class DecodedVideo:
    """Sampled frames and where they came from.

    frames: (N, H, W, 3) uint8 RGB.  indices: position of each sampled frame
    among all decoded frames (strictly increasing: no frame is sampled twice).
    timestamps: presentation time in seconds.  fps: the stream's average frame
    rate (None if unknown).  total_frames: how many frames the file decoded to;
    duration_s: their span in seconds.  container_frames / container_duration_s:
    what the container announced (None where it does not say).  warnings: one
    line per problem with the file (it decodes short of what its container
    announces).  sampling_note: set when fewer frames were sampled than asked
    for, because the video does not have them.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float | None
    total_frames: int
    duration_s: float | None = None
    container_frames: int | None = None
    container_duration_s: float | None = None
    warnings: list[str] = field(default_factory=list)
    sampling_note: str | None = None

    @property
    def sampled_frames(self) -> int:
        return int(len(self.frames))

    def summary(self) -> dict:
        """The facts a report records (no pixels)."""
        return {"decoded_frames": self.total_frames, "sampled_frames": self.sampled_frames,
                "video_duration_s": _round(self.duration_s), "video_fps": _round(self.fps),
                "container_frames": self.container_frames,
                "container_duration_s": _round(self.container_duration_s), "sampling_note": self.sampling_note,
                "warnings": list(self.warnings)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def check_sampling(num_frames: int | None, fps: float | None) -> None:
    """Refuse impossible sampling settings (the command line checks them before any decoding)."""
    if num_frames is not None and fps is not None:
        raise InvalidInputError("give num_frames or fps, not both")
    if num_frames is not None and num_frames < 1:
        raise InvalidInputError(f"the number of frames to sample must be at least 1, got {num_frames}")
    if fps is not None and not fps > 0:
        raise InvalidInputError(f"the sampling rate must be positive, got {fps}")


def read_video(path: str | os.PathLike, num_frames: int | None = None, fps: float | None = None,
               progress: Progress | None = None) -> DecodedVideo:
    """Decode a video file as a stream and keep only the sampled frames.

    num_frames: that many frames spread uniformly over the whole video (first
    and last included); a video with fewer frames gives each of its frames
    once.  fps: one frame every 1/fps seconds from the start, each the frame on
    screen at that moment, each frame at most once.  Neither: every frame.
    Raises a VideoDecodeError subclass when the file gives no frames; a stream
    that breaks part-way gives the frames decoded before the break, with a
    warning.  ``progress`` is called as frames decode.
    """
    check_sampling(num_frames, fps)
    path = Path(path)
    header = _probe(path)
    if num_frames is None:
        sampler = _RateSampler(fps, header.fps) if fps is not None else _AllSampler()
        scan = _scan(path, sampler, header, progress)
    else:
        # Plan the uniform indices from the announced frame count; when the file decodes to another
        # count (truncated, or a container that does not say), plan again from the real count.
        basis = header.frames or header.estimated_frames
        scan = _scan(path, _CountSampler(num_frames, basis) if basis else _NoSampler(), header, progress)
        if scan.count != basis and scan.count:
            scan = _scan(path, _CountSampler(num_frames, scan.count), header, progress, error=scan.error)
    if scan.count == 0:
        why = f" (decoder error: {scan.error})" if scan.error else ""
        raise NoFramesError(f"no decodable frames in {path}{why}")
    warnings = _check_against_header(path, header, scan)
    n = scan.count
    note = None
    if num_frames is not None and num_frames > n:
        note = f"{num_frames} frames asked for, the video has {n}: each of its frames sampled once"
    if fps is not None and header.fps and fps > header.fps * 1.001:
        note = (f"{fps:g} fps asked for, above the video's {header.fps:g} fps: each frame sampled at most once "
                f"({len(scan.kept)} of {n})")
    order = sorted(scan.kept)
    frames = np.stack([scan.kept[i][1] for i in order])
    return DecodedVideo(frames=frames, indices=np.asarray(order, np.int64),
                        timestamps=np.asarray([scan.kept[i][0] for i in order], np.float64),
                        fps=header.fps, total_frames=n, duration_s=scan.duration(header.fps),
                        container_frames=header.frames, container_duration_s=header.duration,
                        warnings=warnings, sampling_note=note)


# --- what the container announces ----------------------------------------------------------

@dataclass
class _Header:
    fps: float | None
    frames: int | None  # from the stream header (mp4 states it; mkv and webm usually do not)
    duration: float | None  # seconds, the video stream's own, else the container's

    @property
    def estimated_frames(self) -> int | None:
        if self.duration and self.fps:
            return max(1, round(self.duration * self.fps))
        return None


def _open(path: Path):
    if not path.exists():
        raise VideoNotFoundError(f"video file not found: {path}")
    if not path.is_file():
        raise VideoNotFoundError(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise EmptyVideoFileError(f"video file is empty (0 bytes): {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, EOFError, ValueError, OSError) as exc:
        raise CorruptVideoError(f"not a readable media file: {path} ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise NoVideoStreamError(f"no video stream in {path}")
    return container


def _probe(path: Path) -> _Header:
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        frames = int(stream.frames) if stream.frames else None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = None
    return _Header(fps=fps, frames=frames, duration=duration)


# --- samplers: which decoded frames to keep, decided frame by frame --------------------------

class _AllSampler:
    def take(self, index: int, time: float) -> list[int]:
        return [index]

    def finish(self, last_index: int, end_time: float) -> list[int]:
        return []


class _NoSampler(_AllSampler):
    """Keeps nothing: a counting pass, for a container that announces neither frames nor duration."""

    def take(self, index: int, time: float) -> list[int]:
        return []


class _CountSampler(_AllSampler):
    """``num_frames`` indices spread uniformly over ``basis`` frames (each at most once)."""

    def __init__(self, num_frames: int, basis: int):
        if num_frames >= basis:
            self.wanted = set(range(basis))
        else:
            self.wanted = {int(i) for i in np.floor(np.linspace(0, basis - 1, num_frames) + 0.5)}

    def take(self, index: int, time: float) -> list[int]:
        return [index] if index in self.wanted else []


class _RateSampler(_AllSampler):
    """The frame on screen at t0, t0 + 1/fps, ... (the last frame shown at or before each moment)."""

    def __init__(self, fps: float, rate: float | None):
        self.step, self.rate = 1.0 / fps, rate
        self.start: float | None = None
        self.k = 0  # next moment: start + k * step
        self.previous: int | None = None
        self.taken: set[int] = set()

    def _moment(self) -> float:
        return self.start + self.k * self.step

    def _pick(self, index: int) -> list[int]:
        self.k += 1
        if index in self.taken:
            return []
        self.taken.add(index)
        return [index]

    def take(self, index: int, time: float) -> list[int]:
        """Called before frame ``index`` is shown: the moments it ends belong to the previous frame."""
        if self.start is None:
            self.start = time
        picked = []
        while self.previous is not None and time > self._moment() + 1e-6:
            picked += self._pick(self.previous)
        self.previous = index
        return picked

    def finish(self, last_index: int, end_time: float) -> list[int]:
        picked = []
        if self.start is None:
            return picked
        while self._moment() - self.start < end_time - self.start - 1e-9:
            picked += self._pick(last_index)
        return picked


# --- one decoding pass -----------------------------------------------------------------------

@dataclass
class _Scan:
    kept: dict[int, tuple[float, np.ndarray]]
    count: int
    first_time: float | None
    last_time: float | None
    error: Exception | None

    def duration(self, fps: float | None) -> float | None:
        if self.first_time is None:
            return None
        return self.last_time - self.first_time + (1.0 / fps if fps else 0.0)


def _scan(path: Path, sampler, header: _Header, progress: Progress | None,
          error: Exception | None = None) -> _Scan:
    """Decode every frame once, converting to RGB only those the sampler keeps.

    The frame a rate sampler keeps is known only when the next one arrives, so
    the previous decoded frame is held (one frame) until then.
    """
    kept: dict[int, tuple[float, np.ndarray]] = {}
    previous = None  # (index, time, av.VideoFrame)
    count, first, last = 0, None, None
    expected = header.frames or header.estimated_frames

    def keep(indices, frame_of):
        for i in indices:
            if i not in kept:
                t, frame = frame_of(i)
                kept[i] = (t, frame.to_ndarray(format="rgb24"))

    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    t = count / header.fps if header.fps else float(count)
                t = float(t)
                current = (count, t, frame)
                chosen = sampler.take(count, t)
                keep(chosen, lambda i: (previous[1], previous[2]) if previous and i == previous[0] else (t, frame))
                previous = current
                first = t if first is None else first
                last = t
                count += 1
                if progress is not None:
                    progress(count, expected)
        except (av.FFmpegError, EOFError, ValueError) as exc:
            error = exc
    if previous is not None:
        end = last + (1.0 / header.fps if header.fps else 0.0)
        keep(sampler.finish(previous[0], end), lambda i: (previous[1], previous[2]))
    return _Scan(kept=kept, count=count, first_time=first, last_time=last, error=error)


def _check_against_header(path: Path, header: _Header, scan: _Scan) -> list[str]:
    """A warning when what decoded falls short of (or runs past) what the container announced."""
    decoded = scan.duration(header.fps)
    got = f"{scan.count} frames decoded ({decoded:.2f} s)" if decoded is not None else f"{scan.count} decoded"
    broke = f" (decoding stopped: {scan.error})" if scan.error else ""
    if header.frames and header.frames != scan.count:
        said = f"{header.frames} frames" + (f" ({header.duration:.2f} s)" if header.duration else "")
        return [f"{path}: the container announces {said} but {got}; the file may be truncated or "
                f"damaged{broke}"]
    if header.duration and decoded is not None:
        tolerance = max(2.0 / header.fps if header.fps else 0.5, 0.05 * header.duration)
        if abs(decoded - header.duration) > tolerance:
            return [f"{path}: the container announces {header.duration:.2f} s but {got}; the file may be "
                    f"truncated or damaged{broke}"]
    if scan.error:
        return [f"{path}: decoding stopped after {scan.count} frames: {scan.error}"]
    return []
