"""The closed vocabulary of SynthVideo: colours, shapes, sizes and directions.

Everything that the renderer draws and the describer names comes from these
tables, so a word in a ground-truth sentence always maps to one exact pixel
colour or geometry.  The palette is kept small and its hues far apart so that
colours stay tellable after H.264 4:2:0 compression and at 56x56 pixels.
"""

from __future__ import annotations

# Named colours (RGB).  Hues are spread out and the background is a dark grey
# that none of them is close to, so a pixel can be classified by nearest colour.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (250, 145, 20),
    "yellow": (245, 230, 40),
    "green": (40, 190, 60),
    "cyan": (30, 215, 230),
    "blue": (40, 80, 240),
    "purple": (155, 60, 215),
    "white": (245, 245, 245),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

BACKGROUND: tuple[int, int, int] = (28, 28, 32)

# Shapes are drawn inside a square box of half-size h around the centre.  All of
# them reach the middle of the box's top and bottom edge (the triangle points
# up and has a full-width base), which is what lets a vertical "meet" touch.
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "diamond", "cross")

# Object side length as a fraction of min(height, width).  Large enough that a
# small object is ~8 px across at 56x56, small enough that five fit at once.
SIZES: dict[str, float] = {"small": 0.15, "large": 0.25}

# Screen directions; y grows downwards as in image coordinates.
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}

# Event kinds, in the spelling used in Event.kind and in QA metadata.
EVENT_KINDS: tuple[str, ...] = ("appear", "disappear", "move", "colour_change", "meet")

NUMBER_WORDS: tuple[str, ...] = (
    "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)


def number_word(n: int) -> str:
    """Spell small counts in words for the description (QA answers use digits)."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def with_article(phrase: str) -> str:
    """"a red square" / "an orange square": the article that fits the phrase."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase
