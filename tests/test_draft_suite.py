"""The draft suite: one dataset, every peer trained with the same recipe, resumable."""

import json

import pytest

from sparrow_sd.cli import main
from sparrow_sd.draft import load_draft
from sparrow_sd.errors import InvalidInputError
from sparrow_sd.training.suite import SUITE, suite_configs
from sparrow_sd.training.trainer import DraftTrainConfig


def test_suite_drafts_differ_only_in_what_they_read_and_the_sparrow_parts():
    base = DraftTrainConfig(epochs=3, lr=1e-3)
    configs = suite_configs(base)
    assert list(configs) == ["sparrow", "sparrow-text", "full", "pruned", "text-only", "sparrow-eagle3"]
    shared = {k: v for k, v in vars(base).items() if k not in ("visual_mode", "ivsb", "mtp_steps", "architecture")}
    for cfg in configs.values():
        assert {k: getattr(cfg, k) for k in shared} == shared
    assert (configs["sparrow"].visual_mode, configs["sparrow"].ivsb, configs["sparrow"].mtp_steps) == ("glimpse", True, 3)
    assert (configs["text-only"].ivsb, configs["text-only"].mtp_steps) == (False, 1)
    assert configs["full"].visual_mode == "full" and configs["pruned"].visual_mode == "pruned"
    assert {n for n, c in configs.items() if c.architecture == "eagle3"} == {"sparrow-eagle3"}
    with pytest.raises(InvalidInputError, match="unknown drafts"):
        suite_configs(base, ["eagle"])


def test_drafts_build_trains_every_draft_on_one_dataset_and_resumes(tmp_path, capsys):
    args = ["drafts", "build", "--model", "tiny:qwen2_vl", "--out", str(tmp_path), "--count", "6",
            "--frames", "2,4", "--max-new-tokens", "6", "--epochs", "1"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "suite.json").read_text())
    assert set(manifest["drafts"]) == set(SUITE)
    assert manifest["data"]["count"] == 6 and manifest["data"]["info"]["visual"] == "full"
    steps = {d["steps"] for d in manifest["drafts"].values()}
    assert len(steps) == 1 and steps.pop() > 0  # same data, same steps
    for name, entry in manifest["drafts"].items():
        draft = load_draft(tmp_path / name)
        assert draft.config.visual_mode == SUITE[name][0]["visual_mode"]
        assert entry["settings"]["mtp_steps"] == SUITE[name][0]["mtp_steps"]
        assert draft.config.architecture == SUITE[name][0].get("architecture", "sparrow")
    before = {n: (tmp_path / n / "model.safetensors").stat().st_mtime_ns for n in SUITE}
    capsys.readouterr()
    assert main(args) == 0  # everything done: nothing is retrained
    assert "already trained" in capsys.readouterr().out
    assert before == {n: (tmp_path / n / "model.safetensors").stat().st_mtime_ns for n in SUITE}


def test_suite_data_asks_for_the_description_unless_told_otherwise():
    """The benchmark and the demo ask for the detailed description, so the suite's data does too."""
    from sparrow_sd.training.sources import synth_samples
    from sparrow_sd.training.suite import SuiteConfig

    def questions(share):
        asked = []
        list(synth_samples(lambda q, frames: asked.append(q) or {}, 40, frames=(4,), describe_prob=share))
        return asked

    assert SuiteConfig().describe_share == 1.0
    assert set(questions(SuiteConfig().describe_share)) == {"Describe this video in detail."}
    assert len(set(questions(0.5))) > 1


def test_an_interrupted_suite_build_says_to_rerun_the_same_command(tmp_path, capsys, monkeypatch):
    """`drafts build` resumes by itself: its hint is not `sparrow train`'s "plus --resume"."""
    import signal

    import sparrow_sd.training.suite as suite
    from sparrow_sd.training.checkpoints import TrainingInterrupted

    def stopped(model, data_dir, folder, cfg, **kwargs):
        raise TrainingInterrupted(3, 12, folder / "checkpoint", signal.SIGTERM)

    monkeypatch.setattr(suite, "train_draft", stopped)
    code = main(["drafts", "build", "--model", "tiny:qwen2_vl", "--out", str(tmp_path), "--count", "2",
                 "--frames", "2", "--max-new-tokens", "4", "--only", "text-only"])
    err = capsys.readouterr().err.splitlines()  # datagen's progress line, then the one-line stop
    assert code == 143 and err[-1].startswith("sparrow: training interrupted (SIGTERM)"), err
    assert "checkpoint at step 3 of 12" in err[-1] and "rerun the same command to resume" in err[-1]
    assert not any("--resume" in line for line in err)
