"""Write clips as real H.264 mp4 files and read videos back with PyAV.

The video model must be fed the same way at training and at serving time, so
synthetic clips go through a real codec (H.264, yuv420p, as most videos in the
wild) and come back through the same decoder and frame sampler a user's video
would.  Every way a file can fail to give frames raises its own named
subclass of VideoDecodeError, so callers can skip bad inputs selectively.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import SparrowError


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
    among all decoded frames.  timestamps: presentation time in seconds.
    fps: the stream's average frame rate (None if unknown).  total_frames:
    how many frames the file decoded to.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float | None
    total_frames: int


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float = 8.0,
              crf: int = 18) -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames as H.264 yuv420p mp4.

    H and W must be even (4:2:0 chroma is subsampled 2x2).  The moov atom is
    written at the front (faststart) so a partial download still opens.  crf
    18 keeps flat synthetic colours within a few levels of the original.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise ValueError("cannot write a video with zero frames")
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even height and width, got {h}x{w}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(path), mode="w", format="mp4",
                     options={"movflags": "faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "medium"}
            for i, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame.pts = i
                frame.time_base = 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return path


def read_video(path: str | os.PathLike, num_frames: int | None = None,
               fps: float | None = None) -> DecodedVideo:
    """Decode a video file and sample frames.

    num_frames: that many frames spread uniformly over the whole video
    (first and last included; frames repeat when the video is shorter).
    fps: one frame every 1/fps seconds from the start, each the frame on
    screen at that moment.  Neither: every frame.  Raises a VideoDecodeError
    subclass when the file gives no frames; a stream that breaks part-way
    returns the frames decoded before the break.
    """
    if num_frames is not None and fps is not None:
        raise ValueError("give num_frames or fps, not both")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    decoded, times, rate = _decode_all(Path(path))
    n = len(decoded)
    if num_frames is not None:
        idx = np.floor(np.linspace(0, n - 1, num_frames) + 0.5).astype(np.int64)
    elif fps is not None:
        frame_dur = 1.0 / rate if rate else 0.0
        duration = times[-1] + frame_dur - times[0]
        targets = times[0] + np.arange(0.0, max(duration, 1e-9) - 1e-9, 1.0 / fps)
        idx = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, n - 1)
    else:
        idx = np.arange(n)
    rgb: dict[int, np.ndarray] = {}
    for i in np.unique(idx):
        rgb[int(i)] = decoded[int(i)].to_ndarray(format="rgb24")
    out = np.stack([rgb[int(i)] for i in idx])
    return DecodedVideo(frames=out, indices=idx, timestamps=times[idx],
                        fps=rate, total_frames=n)


def _decode_all(path: Path) -> tuple[list[av.VideoFrame], np.ndarray, float | None]:
    """All frames of the first video stream (kept in YUV until sampled, which
    is far smaller than RGB), their times in seconds, and the average rate."""
    if not path.exists():
        raise VideoNotFoundError(f"video file not found: {path}")
    if not path.is_file():
        raise VideoNotFoundError(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise EmptyVideoFileError(f"video file is empty (0 bytes): {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, EOFError, ValueError) as exc:
        raise CorruptVideoError(f"not a readable media file: {path} ({exc})") from exc
    with container:
        if not container.streams.video:
            raise NoVideoStreamError(f"no video stream in {path}")
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else None
        frames: list[av.VideoFrame] = []
        times: list[float] = []
        error: Exception | None = None
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    t = len(frames) / rate if rate else float(len(frames))
                frames.append(frame)
                times.append(float(t))
        except (av.FFmpegError, EOFError, ValueError) as exc:
            error = exc
    if not frames:
        why = f" (decoder error: {error})" if error else ""
        raise NoFramesError(f"no decodable frames in {path}{why}")
    return frames, np.asarray(times, np.float64), rate
