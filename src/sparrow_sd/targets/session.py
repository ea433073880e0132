"""One request on the target: its cache, its positions and its prompt's prefill.

The adapter (:class:`~sparrow_sd.targets.base.TargetAdapter`) is stateless, one per
model; everything that belongs to one prompt lives here. Making a
:class:`TargetSession` runs the prompt's prefill into a fresh preallocated cache
with ``room`` free positions after it. Decoding then verifies trees after the
cache's contents (:meth:`TargetSession.verify`, positions computed here and passed
to the adapter explicitly) and keeps the accepted path (:meth:`TargetSession.commit`).

Decoding only ever writes after the prompt, so :meth:`TargetSession.rewind` (cut
the cache back to the end of the prompt) is all it takes to decode the same prompt
again: plain decoding and every draft, ``sparrow generate --compare``'s second
pass, the benchmark's methods, tree tuning and the acceptance table all decode
from one prefill, token for token as from a fresh one. A session serves any decode
that fits its ``room`` and reads only the layers it captured (:meth:`require`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch

from ..errors import InvalidInputError
from ..kv_cache import PreallocatedCache
from ..tree import tree_position_ids
from .base import TargetAdapter, TargetPrefill, TargetVerify


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA), so that wall-clock times are the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TargetSession:
    """The target's state for one prompt: prefilled on construction, then verified, committed, rewound.

    ``room``: free cache positions after the prompt, which a decode needs for its new
    tokens plus its largest tree (``max_new_tokens + max_tree_nodes + 1``);
    ``capture_layers``: decoder layers whose prefill outputs any decode will read (see
    :attr:`~sparrow_sd.proposers.Proposer.capture_layers`).
    """

    def __init__(self, target: TargetAdapter, inputs: Mapping[str, torch.Tensor], room: int,
                 capture_layers: Sequence[int] = ()):
        if room < 1:
            raise InvalidInputError(f"the cache needs room for at least one token after the prompt, got {room}")
        self.target = target
        self.room = room
        self.capture_layers = tuple(sorted(set(capture_layers)))
        target.check_layers(self.capture_layers)
        synchronize(target.device)
        began = time.perf_counter()
        self.prompt_length = int(target.validate_inputs(inputs).shape[1])
        self.cache: PreallocatedCache | None = target.new_cache(self.prompt_length + room)
        positions, self.position_offset = target.prompt_positions(inputs)
        self.prefill: TargetPrefill | None = target.prefill(inputs, self.cache, positions, self.capture_layers)
        synchronize(target.device)
        self.prefill_s = time.perf_counter() - began  # positions and the prompt's forward, vision tower included
        self._tree_start = self.prompt_length

    @property
    def length(self) -> int:
        """Positions currently held in the cache."""
        return self._live().length

    def _live(self) -> PreallocatedCache:
        if self.cache is None:
            raise RuntimeError("this session was released: make a new TargetSession")
        return self.cache

    def require(self, room: int, capture_layers: Sequence[int] = ()) -> None:
        """Refuse a decode this session cannot serve: more room, or layers its prefill did not capture."""
        missing = sorted(set(capture_layers) - set(self.capture_layers))
        if room > self.room or missing:
            raise InvalidInputError(f"this prefill has room {self.room} and layers {list(self.capture_layers)}; "
                                    f"the decode needs room {room} and layers {missing or list(capture_layers)}")

    def positions(self, depths: torch.Tensor) -> torch.Tensor:
        """Position ids, in the model's format, of tree nodes at ``depths`` after the cache's contents."""
        return tree_position_ids(depths, self.length, self.position_offset, self.target.mrope)

    def verify(self, tokens: torch.Tensor, tree_mask: torch.Tensor, depths: torch.Tensor,
               capture_layers: Sequence[int] = ()) -> TargetVerify:
        """Score a candidate tree (see :meth:`TargetAdapter.verify`); :meth:`commit` keeps the accepted nodes."""
        cache = self._live()
        self._tree_start = cache.length
        return self.target.verify(cache, tokens, self.positions(depths), tree_mask, depths, capture_layers)

    @torch.inference_mode()
    def commit(self, nodes: torch.Tensor) -> None:
        """Keep, of the tree just verified, only ``nodes`` (indices, root first, root to leaf)."""
        self._live().keep(self._tree_start, nodes)

    def rewind(self) -> None:
        """Forget everything decoded: the cache ends with the prompt again, as right after the prefill."""
        self._live().crop(self.prompt_length)
        self._tree_start = self.prompt_length

    def nbytes(self) -> int:
        """Bytes the cache holds (0 once released)."""
        return 0 if self.cache is None else self.cache.nbytes()

    def release(self) -> None:
        """Free the cache (it can hold gigabytes at long context) and the prefill's states."""
        self.cache = None
        self.prefill = None

    def __enter__(self) -> TargetSession:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
