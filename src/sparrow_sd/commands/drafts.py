"""The draft folders a command accepts: sparrow-sd's own, or an EAGLE-3 folder as vLLM / SGLang read it.

``sparrow export --to eagle3`` writes an eagle3-form draft under the names and
config those engines load (see :mod:`sparrow_sd.draft.export`); users of
vLLM-format drafts hand such folders to ``--draft`` too. :func:`read_draft`
recognises the format by its config (``architectures: [LlamaForCausalLMEagle3]``)
and loads it back into an eagle3-form :class:`~sparrow_sd.draft.Draft`,
so the same folder runs in sparrow-sd's engine and in theirs. A folder that is
neither is refused in one line that names what it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..draft import DraftConfig, Draft, load_draft
from ..draft.export import EAGLE3_ARCHITECTURE
from ..errors import InvalidInputError


def draft_format(folder: str | Path) -> str:
    """``"sparrow"`` (a folder from ``sparrow train``) or ``"eagle3"`` (an EAGLE-3 folder); refuses anything else."""
    folder = Path(folder)
    config = folder / "config.json"
    if not folder.is_dir():
        raise InvalidInputError(f"draft folder not found: {folder}")
    if not config.is_file():
        raise InvalidInputError(f"{folder} is not a draft folder: config.json is missing")
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{config} is not valid JSON ({err})") from None
    architectures = (data.get("architectures") or []) if isinstance(data, dict) else []
    if "Draft" in architectures:
        return "sparrow"
    if EAGLE3_ARCHITECTURE in architectures:
        return "eagle3"
    raise InvalidInputError(f"{folder} holds a {architectures or 'model of unknown class'}, not a draft; "
                            f"--draft takes a `sparrow train` folder or an EAGLE-3 folder ({EAGLE3_ARCHITECTURE})")


def read_draft(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Draft:
    """A draft from either kind of folder (see :func:`draft_format`)."""
    if draft_format(folder) == "eagle3":
        return load_eagle3_folder(folder, device=device, dtype=dtype)
    return load_draft(folder, device=device, dtype=dtype)


def eagle3_draft_config(data: dict, where: Path) -> DraftConfig:
    """The eagle3-form :class:`DraftConfig` of an EAGLE-3 ``config.json`` (ours or another trainer's)."""
    if data.get("num_hidden_layers", 1) != 1:
        raise InvalidInputError(f"{where}: an EAGLE-3 draft of {data['num_hidden_layers']} layers; sparrow-sd runs "
                                "one-layer drafts")
    if data.get("target_hidden_size", data.get("hidden_size")) != data.get("hidden_size"):
        raise InvalidInputError(f"{where}: target_hidden_size {data['target_hidden_size']} differs from the draft's "
                                f"hidden_size {data.get('hidden_size')}; sparrow-sd needs them equal")
    own = data.get("sparrow_sd") or {}
    aux = (data.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")  # SGLang: layer outputs
    if aux is None and data.get("eagle_aux_hidden_state_layer_ids") is not None:  # vLLM: layer inputs
        aux = [layer - 1 for layer in data["eagle_aux_hidden_state_layer_ids"]]
    if aux is None:
        raise InvalidInputError(f"{where} does not say which target layers feed the draft "
                                "(eagle_aux_hidden_state_layer_ids)")
    try:
        return DraftConfig(
            hidden_size=data["hidden_size"], intermediate_size=data["intermediate_size"],
            num_attention_heads=data["num_attention_heads"], num_key_value_heads=data["num_key_value_heads"],
            vocab_size=data["vocab_size"], draft_vocab_size=data.get("draft_vocab_size"),
            head_dim=data.get("head_dim"), rms_norm_eps=data.get("rms_norm_eps", 1e-6),
            rope_theta=data.get("rope_theta") or 10000.0, visual_mode="none", window=own.get("window"),
            target_model_type=own.get("target_model_type"), architecture="eagle3", aux_layers=tuple(aux))
    except KeyError as err:
        raise InvalidInputError(f"{where}: EAGLE-3 config without {err.args[0]!r}") from None


def load_eagle3_folder(folder: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype | None = None) -> Draft:
    """An EAGLE-3 folder (``sparrow export --to eagle3`` or the same format from elsewhere) as a draft."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = eagle3_draft_config(json.loads((folder / "config.json").read_text()), folder / "config.json")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise InvalidInputError(f"{folder} is not a draft folder: model.safetensors is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise InvalidInputError(f"{weights} cannot be read: {err}") from None
    state.pop("embed_tokens.weight", None)  # the target's embedding is shared at run time
    if "d2t" in state:
        state["d2t"] = state["d2t"].long()
    if "t2d" in state:
        state["t2d"] = state["t2d"].bool()
    elif "d2t" in state:  # a training mask only: rebuilt from d2t where a trainer left it out
        t2d = torch.zeros(config.vocab_size, dtype=torch.bool)
        t2d[torch.arange(state["d2t"].numel()) + state["d2t"]] = True
        state["t2d"] = t2d
    draft = Draft(config)
    expected = draft.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k, v in state.items() if k in expected and expected[k].shape != v.shape)
    if missing or unexpected or shapes:
        raise InvalidInputError(f"{weights} does not match its EAGLE-3 config: missing {missing}, unexpected "
                                f"{unexpected}, wrong shape {shapes}")
    draft.load_state_dict(state)
    draft.lm_head.weight.requires_grad_(False)
    return draft.to(device=device, dtype=dtype or draft.fc.weight.dtype).eval()
