"""A small LoRA on the testbed's language model, attached with forward hooks.

The testbed recipe is LLaVA's stage 2, instruction tuning, as a low-rank
update of the language model. The update is attached with forward hooks on the
unmodified Hugging Face ``nn.Linear`` modules while training and merged into
their weights afterwards (``merge``), so the trained testbed is a plain
``LlavaOnevisionForConditionalGeneration`` again: no extra modules, no forked
modeling code, nothing the engine has to know about.

``first_layer`` restricts the update to the upper decoder layers: the layers
below then need no backward pass and keep no activations, which roughly halves
a training step on long videos.

Saved tensors are named ``lora.<module path>.a`` / ``.b`` (rank x in, out x
rank) with the scale folded into ``b``; :mod:`.weights_io` merges them at load.
"""

from __future__ import annotations

import torch
from torch import nn

PREFIX = "lora."
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    for before, after in zip(parts, parts[1:]):
        if before == "layers" and after.isdigit():
            return int(after)
    return None


def target_modules(model, targets: tuple[str, ...] | None = DEFAULT_TARGETS,
                   first_layer: int = 0) -> dict[str, nn.Linear]:
    """The language model's linear layers a LoRA adapts, by full module path.

    ``targets`` None: every linear layer of the decoder layers (for loading).
    """
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or ".language_model." not in f".{name}.":
            continue
        layer = _layer_index(name)
        if layer is None or layer < first_layer:
            continue
        if targets is None or name.rsplit(".", 1)[-1] in targets:
            found[name] = module
    return found


class LoRA(nn.Module):
    """Low-rank updates ``W + B A`` for a model's attention projections.

    ``b`` starts at zero, so attaching an untrained LoRA changes nothing.
    The scale ``alpha / rank`` is applied in the hook and folded into ``b``
    when saved or merged.
    """

    def __init__(self, model, rank: int = 8, alpha: float = 16.0,
                 targets: tuple[str, ...] = DEFAULT_TARGETS, seed: int = 0, first_layer: int = 0):
        super().__init__()
        self.scale = alpha / rank
        self.modules_by_name = target_modules(model, targets, first_layer)
        if not self.modules_by_name:
            raise ValueError(f"no linear layers named {targets} in the language model")
        gen = torch.Generator().manual_seed(seed)
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        for name, module in self.modules_by_name.items():
            key = name.replace(".", "__")
            a = torch.randn(rank, module.in_features, generator=gen) / module.in_features**0.5
            self.a[key] = nn.Parameter(a)
            self.b[key] = nn.Parameter(torch.zeros(module.out_features, rank))
        self._handles: list = []

    def matches(self, model, rank: int, alpha: float, targets: tuple[str, ...], first_layer: int) -> bool:
        """Whether this LoRA is the one ``LoRA(model, rank, alpha, targets, first_layer=...)`` would build."""
        ranks = {a.shape[0] for a in self.a.values()}
        return (ranks == {rank} and self.scale == alpha / rank
                and set(self.modules_by_name) == set(target_modules(model, targets, first_layer)))

    def attach(self) -> LoRA:
        """Add the low-rank term to each target's output (idempotent)."""
        self.detach()
        for name, module in self.modules_by_name.items():
            key = name.replace(".", "__")
            self._handles.append(module.register_forward_hook(self._hook(key)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, key: str):
        def add_update(module, args, output):
            x = args[0]
            a, b = self.a[key], self.b[key]
            return output + (x.to(a.dtype) @ a.t() @ b.t() * self.scale).to(output.dtype)

        return add_update

    def state(self) -> dict[str, torch.Tensor]:
        """``lora.<path>.a`` / ``.b`` tensors with the scale folded into ``b``."""
        out = {}
        for name in self.modules_by_name:
            key = name.replace(".", "__")
            out[f"{PREFIX}{name}.a"] = self.a[key].detach().float().clone()
            out[f"{PREFIX}{name}.b"] = (self.b[key].detach().float() * self.scale).clone()
        return out

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the linear weights and remove the hooks."""
        self.detach()
        merge_state(dict(self.modules_by_name), self.state())


@torch.no_grad()
def merge_state(modules: dict[str, nn.Linear], state: dict[str, torch.Tensor]) -> None:
    """``W += b @ a`` for every ``lora.<path>.a/.b`` pair in ``state`` (paths must be in ``modules``)."""
    for key in state:
        if key.startswith(PREFIX) and key.endswith(".a"):
            name = key[len(PREFIX) : -2]
            weight = modules[name].weight
            delta = state[f"{PREFIX}{name}.b"].float() @ state[key].float()
            weight.copy_((weight.float() + delta).to(weight.dtype))
