"""What a testbed description is worth, measured from its text against the clip's ground truth.

Pure functions of (text, scene), so they are tested on SynthVideo's own
reference descriptions, whose scores are known (grounding 1.0, event recall
1.0), and on hand-made wrong ones.

- **mentions**: every "<colour> <shape>" in the text (a size word may sit in
  between: "red large square" never occurs, "large red square" does, and both
  name colour + shape);
- **grounding**: the share of mentions whose colour+shape pair some object of
  the clip has at some frame;
- **event recall**: the share of the clip's events that some sentence states
  (the object's shape with the event's verb, and its direction or new colour
  where it has one), each sentence used for at most one event;
- **repetition**: the share of the most frequent token, and distinct 4-grams
  over all 4-grams (1.0 = no 4-gram repeats).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from ..synth.scene import Event, Scene
from ..synth.vocab import COLOURS, SHAPES

_COLOUR = "|".join(COLOURS)
_SHAPE = "|".join(SHAPES)
_MENTION = re.compile(rf"\b({_COLOUR})\s+(?:(?:small|large)\s+)?({_SHAPE})s?\b", re.IGNORECASE)
_SHAPE_WORD = re.compile(rf"\b({_SHAPE})s?\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

_VERBS = {
    "appear": ("appear", "pops up", "comes into view", "new object", "shows up"),
    "disappear": ("disappear", "vanish", "leaves", "gone"),
    "move": ("move", "slide", "glide", "travel", "shift", "drift"),
    "colour_change": ("turn", "change", "switch", "become"),
    "meet": ("meet", "touch", "together"),
}
_DIRECTIONS = {
    "left": ("left",),
    "right": ("right",),
    "up": ("up", "top"),
    "down": ("down", "bottom"),
}


def mentions(text: str) -> list[tuple[str, str]]:
    """Every (colour, shape) the text names, in order, lower-case."""
    return [(c.lower(), s.lower()) for c, s in _MENTION.findall(text)]


def names_any_object(text: str) -> bool:
    """Whether the text names a shape at all (the blank-video control must not)."""
    return _SHAPE_WORD.search(text) is not None


def scene_pairs(scene: Scene) -> set[tuple[str, str]]:
    """Every (colour, shape) some object of the scene has on some frame it is visible."""
    pairs = set()
    for obj in scene.objects:
        for t in range(scene.num_frames):
            if scene.visible[t, obj.id]:
                pairs.add((COLOURS[int(scene.colour[t, obj.id])], obj.shape))
    return pairs


def grounding(text: str, scene: Scene) -> float | None:
    """Share of the text's colour+shape mentions that exist in ``scene`` (None: no mention)."""
    found = mentions(text)
    if not found:
        return None
    pairs = scene_pairs(scene)
    return sum(m in pairs for m in found) / len(found)


def _states(sentence: str, event: Event, scene: Scene) -> bool:
    low = sentence.lower()
    shapes = [scene.objects[i].shape for i in event.objects]
    if not all(re.search(rf"\b{s}s?\b", low) for s in shapes):
        return False
    if not any(re.search(rf"\b{verb}", low) for verb in _VERBS[event.kind]):
        return False
    if event.kind == "move":
        return any(re.search(rf"\b{w}", low) for w in _DIRECTIONS[event.direction])
    if event.kind in ("colour_change", "appear"):
        return event.colour_to in low
    return True


def event_recall(text: str, scene: Scene) -> float | None:
    """Share of the scene's events that the text states (None: the clip has no event)."""
    if not scene.events:
        return None
    sentences = [s for s in _SENTENCE.split(text) if s.strip()]
    used: set[int] = set()
    stated = 0
    for event in scene.events:
        for index, sentence in enumerate(sentences):
            if index not in used and _states(sentence, event, scene):
                used.add(index)
                stated += 1
                break
    return stated / len(scene.events)


def top_token_share(tokens: Sequence[int]) -> float:
    """Share of the most frequent token (0 for an empty text)."""
    if not tokens:
        return 0.0
    return Counter(tokens).most_common(1)[0][1] / len(tokens)


def distinct_4grams(tokens: Sequence[int]) -> float:
    """Distinct 4-grams over all 4-grams (1.0 when the text is shorter than a 4-gram)."""
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return len(set(grams)) / len(grams) if grams else 1.0
