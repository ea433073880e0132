"""A preallocated KV cache for the target, indexed by position.

Why not Hugging Face's ``DynamicCache``: it concatenates new keys onto old ones at
every step, which at 25k tokens of context costs about twice a decode step on a
CPU. Why not ``StaticCache``: it hands the attention the whole preallocated buffer,
so every step pays for the unused tail, and its mask must cover it too.

This cache allocates ``capacity`` slots once per layer, writes each forward's keys
at ``[length, length + n)`` and returns views of ``[0, length + n)``: no copies,
no wasted attention. Speculative decoding needs one more operation than a plain
cache: after the target verifies a tree, only the accepted nodes' entries may stay.
:meth:`PreallocatedCache.keep` moves them down into place and forgets the rest.

It plugs into the unmodified Hugging Face models as a regular ``Cache``: they call
``update`` per layer and size their masks with ``get_seq_length`` and
``get_mask_sizes``.
"""

from __future__ import annotations

import inspect

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .errors import CacheCapacityError


class PositionIndexedLayer(CacheLayerMixin):
    """One layer's keys and values in buffers of fixed capacity."""

    is_compileable = False
    is_sliding = False
    is_croppable = True

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, k_dim = key_states.shape
        shape = (batch, heads, self.capacity)
        self.keys = key_states.new_zeros(*shape, k_dim)
        self.values = value_states.new_zeros(*shape, value_states.shape[-1])
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise CacheCapacityError(
                f"KV cache holds {self.capacity} positions but {end} are needed; "
                "build the cache with a larger capacity (prompt + max_new_tokens + tree size)."
            )
        start, self.length = self.length, end
        self.keys[:, :, start:end] = key_states
        self.values[:, :, start:end] = value_states
        if start == 0:
            # Prefill: hand back the contiguous inputs. A strided view of the buffer would
            # push SDPA off its fused CPU kernel onto the path that materialises L x L scores.
            return key_states, value_states
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def crop(self, max_length: int) -> None:
        if max_length < 0:
            max_length = self.length + max_length
        self.length = min(self.length, max_length)

    def keep(self, start: int, offsets: torch.Tensor) -> None:
        """Keep, after ``start``, only the entries at ``start + offsets``, packed in order."""
        if self.is_initialized and offsets.numel() > 0:
            src = offsets.to(self.keys.device) + start
            n = src.numel()
            self.keys[:, :, start : start + n] = self.keys[:, :, src]
            self.values[:, :, start : start + n] = self.values[:, :, src]
        self.length = start + offsets.numel()

    def reset(self) -> None:
        self.length = 0


class PreallocatedCache(Cache):
    """A ``Cache`` of :class:`PositionIndexedLayer`, one per decoder layer."""

    def __init__(self, num_layers: int, capacity: int):
        super().__init__(layers=[PositionIndexedLayer(capacity) for _ in range(num_layers)])
        self.capacity = capacity

    @property
    def length(self) -> int:
        """Number of positions currently held (all layers agree)."""
        return self.layers[0].length

    def crop(self, max_length: int) -> None:
        for layer in self.layers:
            layer.crop(max_length)

    def keep(self, start: int, offsets: torch.Tensor) -> None:
        """After a tree verification that started at ``start``, keep the accepted nodes.

        ``offsets`` are node indices (0 = root) in the order the tokens must end up
        (root to leaf). The gather copies before it writes, so any order is safe.
        """
        for layer in self.layers:
            layer.keep(start, offsets)

    def nbytes(self) -> int:
        """Bytes allocated by the buffers (for memory reports)."""
        total = 0
        for layer in self.layers:
            if layer.is_initialized:
                total += layer.keys.numel() * layer.keys.element_size()
                total += layer.values.numel() * layer.values.element_size()
        return total


def cache_argument(module) -> str:
    """The name ``module.forward`` takes its cache by: transformers 5.24 renamed ``past_key_values``
    to ``cache`` (the old name still works, with a warning); model outputs carry it under the same name."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
