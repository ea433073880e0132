"""Write clips as real H.264 mp4 files (reading them back is :mod:`sparrow_sd.video`).

The video model must be fed the same way at training and at serving time, so
synthetic clips go through a real codec (H.264, yuv420p, as most videos in the
wild) and come back through the same decoder and frame sampler a user's video
would (:func:`sparrow_sd.video.read_video`, re-exported from ``sparrow_sd.synth``
so existing callers keep working).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


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
