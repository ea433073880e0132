"""The scene reader: read SynthVideo frames back into one short text line each.

This is the visual encoder of the testbed Video LLM. It looks at decoded
frames (usually after a real H.264 round trip), finds each object from its
pixels, and hands the objects to the line writer of :mod:`.scene_lines`
(which also computes the true lines a test compares with).

How the pixels are read, and why:

* H.264 keeps luma at full resolution but shares chroma between 2x2 pixels
  (4:2:0), so where two colours meet the chroma is mixed while the luma is
  still each pixel's own.  Every palette colour is at least three times
  brighter than the background, so **luma decides object versus background**
  (threshold halfway between the background's luma and the colour's, which
  is where a blurred edge crosses), and **colour decides which object**.
* Each pixel's nearest colour (palette or background, in RGB) gives the
  *seeds*: within a frame no two objects share a colour, so a colour is an
  object.  Edge mixing leaves specks of a third colour (yellow next to blue
  decodes whitish), possibly the colour of an object elsewhere in the frame,
  so only a colour's *core* counts: its pixels that survive a 3x3 erosion,
  which specks one or two pixels thick never have.
* An object's mask is the bright-enough pixels within a few pixels of its
  core.  A pixel claimed by two objects (they touch) goes to the nearer
  colour in YCbCr with luma weighted up, because the chroma there is mixed.
* Size comes from the bounding box (small and large sides are 0.15 and 0.25
  of the frame's shorter side, far apart).  Shape is the best overlap (IoU)
  with each shape's template drawn over that box: all five shapes fill their
  box, and diamond and cross have about the same fill ratio, so the fill
  ratio alone cannot tell them apart.
* The place is the 3x3 grid cell of the mask's centroid; a move is a
  centroid shift of more than MOVE_THRESHOLD_PX; a meet is a pair of masks
  that are 8-adjacent now and were not on the previous frame.

On arbitrary real video (any size, any colours) the reader does not fail: it
reports whatever palette-coloured blobs it finds: all pixels of one palette
colour make one blob, named with the nearest size and shape, and of two blobs
that get the same (shape, size) only the bigger is kept, since that pair must
name one object.  Such lines describe blobs, not the video's content; the
exactness guarantee holds only for SynthVideo frames.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import InvalidInputError
from ..synth.render import shape_mask
from ..synth.vocab import BACKGROUND, COLOURS, PALETTE, SHAPES, SIZES
from .scene_lines import (  # the lines' side, also read from here
    MOVE_STYLES,
    MOVE_THRESHOLD_PX,
    FrameObject,
    frame_lines,
    place_of,
    truth_frames,
    truth_lines,
    with_touching,
)

__all__ = [
    "MOVE_STYLES",
    "MOVE_THRESHOLD_PX",
    "FrameObject",
    "frame_lines",
    "place_of",
    "read_frame",
    "read_frames",
    "read_video_lines",
    "truth_frames",
    "truth_lines",
]

_RGB = np.array([PALETTE[c] for c in COLOURS], np.float32)
# BT.601 RGB -> YCbCr, the matrix H.264 decoders convert with.
_TO_YCC = np.array([[0.299, -0.168736, 0.5],
                    [0.587, -0.331264, -0.418688],
                    [0.114, 0.5, -0.081312]], np.float32)
_COL_YCC = _RGB @ _TO_YCC
_BG_LUMA = float(np.array(BACKGROUND, np.float32) @ _TO_YCC[:, 0])
# A pixel belongs to a colour's object when its luma is at least halfway from
# the background's luma to the colour's: a blurred edge crosses there.
_LUMA_THRESHOLD = (_COL_YCC[:, 0] + _BG_LUMA) / 2.0
# Where two objects touch, chroma is shared across the boundary but luma is
# not; weighting luma 8x in the colour distance roughly halved the centroid
# errors of touching objects after H.264 (measured against the truth).
_CLAIM_WEIGHT = np.array([8.0, 1.0, 1.0], np.float32)

# Small and large box sides (fractions of the short side) are 0.15 and 0.25.
_SIZE_SPLIT = (SIZES["small"] + SIZES["large"]) / 2.0
# The least-filled shape (triangle, cross, diamond) covers ~0.6 of its box; a
# colour with under a quarter of the smallest object's area is noise.
_MIN_FILL, _SPECK_FRACTION = 0.6, 0.25
# How far (px) an object's pixels may lie from its core: erosion takes 1 px,
# and the triangle's and diamond's tips are up to 2 px too thin to keep a core.
_CORE_REACH = 3
# Frames are read in chunks of about this many pixels to bound memory on large video.
_CHUNK_PIXELS = 1 << 22
_LUT_BITS = 6


@functools.cache
def _colour_lut() -> np.ndarray:
    """Nearest class (palette index, or len(COLOURS) for the background) of
    every cell of a 6-bit-per-channel RGB grid: one look-up per pixel instead
    of nine distances.  Built on first use (a quarter-million cells, ~30 ms)."""
    refs = np.concatenate([_RGB, np.array([BACKGROUND], np.float32)])
    step = 1 << (8 - _LUT_BITS)
    axis = np.arange(0, 256, step, dtype=np.float32) + (step - 1) / 2.0
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 1, 3)
    return ((grid - refs[None]) ** 2).sum(-1).argmin(-1).astype(np.uint8)


def _nearest_class(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) nearest colour class per pixel of (T, H, W, 3) uint8 frames."""
    q = (frames >> (8 - _LUT_BITS)).astype(np.int32)
    return _colour_lut()[(q[..., 0] << (2 * _LUT_BITS)) | (q[..., 1] << _LUT_BITS) | q[..., 2]]


def _dilate_axis(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Binary dilation of a (T, H, W) mask by radius along one image axis."""
    out = mask.copy()
    n = mask.shape[axis]
    for d in range(1, min(radius, n - 1) + 1):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
        out[tuple(lo)] |= mask[tuple(hi)]
        out[tuple(hi)] |= mask[tuple(lo)]
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (2*radius+1 wide) dilation of every frame of a (T, H, W) mask."""
    return _dilate_axis(_dilate_axis(mask, radius, 1), radius, 2)


def _erode(mask: np.ndarray) -> np.ndarray:
    """3x3 erosion of every frame; pixels beyond the frame count as unset."""
    out = ~_dilate(~mask, 1)
    out[:, 0, :] = out[:, -1, :] = False
    out[:, :, 0] = out[:, :, -1] = False
    return out


def _min_pixels(height: int, width: int) -> float:
    """Fewest pixels an object may have at this frame size (see _SPECK_FRACTION)."""
    side = SIZES["small"] * min(height, width)
    return max(2.0, _SPECK_FRACTION * _MIN_FILL * side * side)


# Sub-pixel offsets (px) of a template's centre from the bounding box's centre:
# the box of a rasterised shape only pins its centre to within half a pixel.
_PHASES = np.linspace(-0.5, 0.5, 5)
# Blobs that are no SynthVideo object are compared on a grid this coarse.
_FOREIGN_GRID = 32


@functools.lru_cache(maxsize=64)
def _templates(box_h: int, box_w: int, half: float) -> np.ndarray:
    """(shapes, phases, box_h, box_w) bool: every shape as the renderer's
    shape_mask draws it over a box_h x box_w box with half-side `half` px,
    centred on the box up to every sub-pixel offset in _PHASES on each axis
    (cached: the same boxes recur on every frame)."""
    rows = np.arange(box_h) + 0.5 - box_h / 2.0
    cols = np.arange(box_w) + 0.5 - box_w / 2.0
    out = np.empty((len(SHAPES), len(_PHASES) ** 2, box_h, box_w), bool)
    for k, shape in enumerate(SHAPES):
        for j, (dr, dc) in enumerate((dr, dc) for dr in _PHASES for dc in _PHASES):
            v = (rows - dr)[:, None] / half
            u = (cols - dc)[None, :] / half
            out[k, j] = shape_mask(shape, u, v)
    return out


def _shape_of(box: np.ndarray, size: str, scale: int) -> str:
    """The shape whose template best overlaps (IoU) the mask cut to its
    bounding box.  Templates are drawn at the size class's exact side and at
    every sub-pixel phase, so a clean mask equals one of its own templates
    almost exactly; at 9-px objects the phase alone can make a cross look
    like a diamond."""
    half = SIZES[size] * scale / 2.0
    if abs(max(box.shape) - 2 * half) > 2 + 0.1 * half:
        # Not a SynthVideo object (a blob in real video): compare its outline
        # on a coarse grid with templates that span its own box.
        stride = -(-max(box.shape) // _FOREIGN_GRID)
        box = box[::stride, ::stride]
        half = max(box.shape) / 2.0
    tpl = _templates(box.shape[0], box.shape[1], half)
    inter = (tpl & box).sum((2, 3))
    union = tpl.sum((2, 3)) + int(box.sum()) - inter
    iou = (inter / np.maximum(union, 1)).max(1)
    return SHAPES[int(np.argmax(iou))]


def _owners(frames: np.ndarray, min_px: float) -> np.ndarray:
    """(T, H, W) int8: the palette colour whose object owns each pixel, or -1.

    Seeds are each colour's eroded nearest-colour mask (frames where the
    colour has too few pixels are skipped); the object is every pixel within
    _CORE_REACH of its core that is bright enough for that colour; a pixel
    claimed twice goes to the nearer colour in luma-weighted YCbCr.
    """
    T, H, W, _ = frames.shape
    classes = _nearest_class(frames)
    ycc = frames.astype(np.float32) @ _TO_YCC
    owner = np.full((T, H, W), -1, np.int8)
    claim = np.full((T, H, W), np.inf, np.float32)
    for c in range(len(COLOURS)):
        seed = classes == c
        present = np.flatnonzero(seed.sum((1, 2)) >= min_px)
        if present.size == 0:
            continue
        reach = _dilate(_erode(seed[present]), _CORE_REACH)
        reach &= ycc[present, :, :, 0] >= _LUMA_THRESHOLD[c]
        k, r, q = np.nonzero(reach)
        t = present[k]
        dist = (((ycc[t, r, q] - _COL_YCC[c]) ** 2) * _CLAIM_WEIGHT).sum(-1)
        win = dist < claim[t, r, q]
        owner[t[win], r[win], q[win]] = c
        claim[t[win], r[win], q[win]] = dist[win]
    return owner


def _objects_of(owner: np.ndarray, min_px: float) -> tuple[list[FrameObject], np.ndarray]:
    """The objects of one frame from its owner map, and a label map of them
    (label k is the k-th object, -1 elsewhere) for the contact test."""
    H, W = owner.shape
    scale = min(H, W)
    labels = np.full((H, W), -1, np.int32)
    objs: list[FrameObject] = []
    for c in np.unique(owner).tolist():
        if c < 0:
            continue
        mask = owner == c
        rows = np.flatnonzero(mask.any(1))
        cols = np.flatnonzero(mask.any(0))
        r0, c0 = int(rows[0]), int(cols[0])
        box = mask[r0:rows[-1] + 1, c0:cols[-1] + 1]
        rr, cc = np.nonzero(box)
        if rr.size < min_px:
            continue
        size = "small" if max(box.shape) / scale < _SIZE_SPLIT else "large"
        row, col = float(rr.mean()) + r0 + 0.5, float(cc.mean()) + c0 + 0.5
        obj = FrameObject(_shape_of(box, size, scale), size, COLOURS[c],
                          place_of(row, col, H, W), (row, col), int(rr.size))
        twin = next((k for k, o in enumerate(objs) if o.identity == obj.identity), None)
        if twin is not None:
            # Two blobs of one (shape, size) never happen in SynthVideo, whose
            # identities are unique; in foreign video keep the bigger blob so
            # that an identity still names one object across frames.
            if objs[twin].pixels >= obj.pixels:
                continue
            labels[labels == twin] = -1
            objs[twin] = obj
            labels[mask] = twin
            continue
        labels[mask] = len(objs)
        objs.append(obj)
    return objs, labels


def _validate(frames: object, ndim: int) -> np.ndarray:
    want = "(T, H, W, 3)" if ndim == 4 else "(H, W, 3)"
    if not isinstance(frames, np.ndarray):
        raise InvalidInputError(f"frames must be a {want} uint8 numpy array, got {type(frames).__name__}")
    if frames.ndim != ndim or frames.shape[-1] != 3:
        raise InvalidInputError(f"frames must be {want} RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise InvalidInputError(f"frames must be uint8, got {frames.dtype}")
    if frames.shape[-2] < 1 or frames.shape[-3] < 1:
        raise InvalidInputError(f"frames must be at least 1x1 pixels, got shape {frames.shape}")
    return frames


def read_frames(frames: np.ndarray) -> list[list[FrameObject]]:
    """Read the objects of every frame of (T, H, W, 3) uint8 RGB frames, from pixels only."""
    frames = _validate(frames, 4)
    T, H, W, _ = frames.shape
    min_px = _min_pixels(H, W)
    step = max(1, _CHUNK_PIXELS // (H * W))
    out: list[list[FrameObject]] = []
    for start in range(0, T, step):
        for owner in _owners(frames[start:start + step], min_px):
            objs, labels = _objects_of(owner, min_px)
            out.append(with_touching(objs, labels))
    return out


def read_frame(frame: np.ndarray) -> list[FrameObject]:
    """Read the objects of one (H, W, 3) uint8 RGB frame from its pixels."""
    return read_frames(_validate(frame, 3)[None])[0]


def read_video_lines(frames: np.ndarray, moves: str = "every_frame") -> list[str]:
    """The scene reader's text for (T, H, W, 3) uint8 frames: one line per frame
    (``moves``: see :func:`~.scene_lines.frame_lines`)."""
    return frame_lines(read_frames(frames), moves)
