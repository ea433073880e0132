"""The draft suite: Sparrow and its peers, trained on one dataset with one recipe.

The benchmark compares drafts that differ only in what they read of the video
and in the two Sparrow ingredients (IVSB, MTP), so they must share the data,
the number of steps, the size and every other setting. ``build_suite`` runs
self-distillation once (``--visual full`` plus EAGLE-3's aux layers, which
every draft can train from)
and then trains each draft of :data:`SUITE` from the same base
:class:`DraftTrainConfig`, skipping drafts already trained, so rerunning the
same command after an interruption finishes the job. ``suite.json`` records
the data, the command and each draft's settings, held-out agreement and
training time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..draft.config import default_aux_layers
from ..errors import InvalidInputError
from .datagen import DatagenConfig, run_datagen
from .sources import synth_samples
from .shards import data_info
from .trainer import DraftTrainConfig, train_draft

# name -> (what differs from the base recipe, what it stands for)
SUITE: dict[str, tuple[dict, str]] = {
    "sparrow": ({"visual_mode": "glimpse", "ivsb": True, "mtp_steps": 3},
                "Sparrow: text plus a 16-token IVSB glimpse of the video, multi-token prediction"),
    "sparrow-text": ({"visual_mode": "none", "ivsb": False, "mtp_steps": 3},
                     "Sparrow reading text only (no glimpse), multi-token prediction: measured against "
                     "'sparrow' to decide what the shipped draft reads"),
    "full": ({"visual_mode": "full", "ivsb": False, "mtp_steps": 3},
             "every visual position with its vision feature (EAGLE / MSD / ViSpec style)"),
    "pruned": ({"visual_mode": "pruned", "ivsb": False, "mtp_steps": 3},
               "10% of the visual positions, evenly spaced (SpecVLM style)"),
    "text-only": ({"visual_mode": "none", "ivsb": False, "mtp_steps": 1},
                  "text only, no IVSB, no multi-token prediction (HiViS style)"),
    "sparrow-eagle3": ({"architecture": "eagle3", "visual_mode": "none", "ivsb": False, "mtp_steps": 3},
                       "Sparrow text-only in EAGLE-3's layer form: exports to vLLM / SGLang"),
}


@dataclass(frozen=True)
class SuiteConfig:
    """The shared data of a suite build.

    ``describe_share``: the share of prompts that ask for the detailed description (what
    the benchmark and the demo ask); the rest ask one of the clip's questions."""

    count: int = 400
    frames: tuple[int, ...] = (6, 8, 12, 16)
    max_new_tokens: int = 256
    seed: int = 0
    describe_share: float = 1.0


def suite_configs(base: DraftTrainConfig, names: Sequence[str] | None = None) -> dict[str, DraftTrainConfig]:
    """Each requested draft's training settings: ``base`` with its own differences applied."""
    names = list(names) if names else list(SUITE)
    if unknown := [n for n in names if n not in SUITE]:
        raise InvalidInputError(f"unknown drafts {unknown}; the suite has {list(SUITE)}")
    return {name: replace(base, **SUITE[name][0]) for name in names}


def build_suite(model, make_inputs: Callable, out: str | Path, suite: SuiteConfig | None = None,
                base: DraftTrainConfig | None = None, names: Sequence[str] | None = None,
                command: str = "", log: Callable[[str], None] = print) -> dict:
    """Distil data into ``out``/data once, train every draft into ``out``/<name>; returns the manifest."""
    suite = suite or SuiteConfig()
    base = base or DraftTrainConfig()
    configs = suite_configs(base, names)
    out = Path(out)
    data_dir = out / "data"
    started = time.time()
    samples = synth_samples(make_inputs, suite.count, frames=suite.frames, seed=suite.seed,
                            describe_prob=suite.describe_share)
    aux = default_aux_layers(model.config.get_text_config().num_hidden_layers)
    run_datagen(model, samples, data_dir, DatagenConfig(max_new_tokens=suite.max_new_tokens, visual="full",
                                                        seed=suite.seed, aux_layers=aux), total=suite.count, log=log)
    datagen_s = time.time() - started
    manifest_path = out / "suite.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"drafts": {}}
    manifest.update(command=command, data={**asdict(suite), "folder": str(data_dir),
                                           "info": data_info(data_dir)["settings"]})
    manifest.setdefault("datagen_time_s", round(datagen_s, 1))
    for name, cfg in configs.items():
        folder = out / name
        if (folder / "training.json").is_file():
            log(f"{name}: already trained in {folder}")
        else:
            log(f"training {name}: {SUITE[name][1]}")
            train_draft(model, data_dir, folder, cfg, resume=True, log=log)
        record = json.loads((folder / "training.json").read_text())
        manifest["drafts"][name] = {"folder": str(folder), "about": SUITE[name][1], "settings": record["settings"],
                                    "held_out_agreement": record["held_out_agreement"],
                                    "train_time_s": record["train_time_s"], "steps": record["steps"]}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
