"""The command line: every bad input is one line on stderr and exit code 2; a real mp4 end to end."""

import json
from pathlib import Path

import pytest
import torch
from conftest import require_language, tiny_model

from sparrow_sd.cli import main
from sparrow_sd.commands.generate import check_context
from sparrow_sd.draft import save_draft
from sparrow_sd.errors import ContextLengthError
from sparrow_sd.synth import make_clip, write_mp4
from sparrow_sd.testbed.loader import COMMITTED_WEIGHTS
from sparrow_sd.testing import make_video_inputs
from sparrow_sd.testing.drafts import tiny_draft


def one_line_error(capsys, argv, *fragments):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("sparrow: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    clip = make_clip(11, num_frames=4, height=112, width=112, num_events=1)
    return write_mp4(clip.frames, tmp_path_factory.mktemp("video") / "clip.mp4")


def needs_testbed():
    require_language()
    if not COMMITTED_WEIGHTS.is_file():  # built by `sparrow testbed build`, committed once evaluated
        pytest.skip("the committed testbed weights are not built yet")


def test_bad_video_files(tmp_path, capsys):
    base = ["generate", "--prompt", "What happens?", "--video"]
    one_line_error(capsys, base + [str(tmp_path / "missing.mp4")], "not found")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    one_line_error(capsys, base + [str(empty)], "empty")
    text = tmp_path / "notes.mp4"
    text.write_text("these are not video frames\n" * 20)
    one_line_error(capsys, base + [str(text)], "not a readable media file")
    good = write_mp4(make_clip(5, 8, 56, 56).frames, tmp_path / "good.mp4")
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: data.index(b"mdat") + 4])
    one_line_error(capsys, base + [str(cut)], "frame")


def test_unknown_model_type(tmp_path, mp4, capsys):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    one_line_error(capsys, ["generate", "--model", str(folder), "--video", str(mp4), "--prompt", "hi"],
                   "LlamaForCausalLM", "supported")
    one_line_error(capsys, ["generate", "--model", str(tmp_path), "--video", str(mp4), "--prompt", "hi"],
                   "not a model folder")


def test_video_longer_than_the_context_says_how_many_frames_fit():
    """LLaVA-OneVision positions grow with every visual token: a long video runs out of them."""
    model = tiny_model("llava_onevision")
    frames = torch.zeros(100, 3, 16, 16)  # 4 visual tokens per frame in the tiny model

    def make_inputs(question, frames):
        return make_video_inputs("llava_onevision", model, num_frames=len(frames), prompt_ids_before=[1, 2],
                                 prompt_ids_after=[3, 4, 5])

    old = model.config.text_config.max_position_embeddings
    model.config.text_config.max_position_embeddings = 200
    try:
        inputs = make_inputs("q", frames)
        with pytest.raises(ContextLengthError, match=r"at most \d+ frames") as info:
            check_context(model, make_inputs, "q", frames, inputs, max_new_tokens=10, tree_nodes=0)
        fit = int(str(info.value).split("--num-frames ")[1].rstrip(")"))
        assert 1 <= fit < 100
        small = make_inputs("q", frames[:fit])
        check_context(model, make_inputs, "q", frames[:fit], small, max_new_tokens=10, tree_nodes=0)  # fits
    finally:
        model.config.text_config.max_position_embeddings = old


@pytest.mark.slow
def test_draft_for_another_target(tmp_path, mp4, capsys):
    needs_testbed()
    folder = save_draft(tiny_draft(tiny_model("qwen2_vl"), "none"), tmp_path / "draft")
    one_line_error(capsys, ["generate", "--video", str(mp4), "--prompt", "hi", "--draft", str(folder)],
                   "draft does not fit this target")


@pytest.mark.slow
def test_generate_a_real_mp4_end_to_end(mp4, capsys):
    """Testbed target, a real H.264 file through PyAV, streamed; equals the model's own generate()."""
    needs_testbed()
    code = main(["generate", "--video", str(mp4), "--prompt", "How many objects are on screen at the start?",
                 "--num-frames", "4", "--max-new-tokens", "8", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 4 and report["visual_tokens"] == 4 * 196 + 1 and report["new_tokens"] >= 1
    from sparrow_sd.synth import read_video
    from sparrow_sd.testbed import load_testbed

    model, processor = load_testbed()
    inputs = processor("How many objects are on screen at the start?", read_video(mp4, num_frames=4).frames)
    expected = model.generate(**inputs, do_sample=False, max_new_tokens=8)[0, inputs["input_ids"].shape[1]:]
    assert report["tokens"] == expected.tolist()[: len(report["tokens"])]
    assert report["text"] == processor.decode(report["tokens"])


def test_generate_takes_the_generation_settings(tmp_path, mp4, capsys):
    """--repetition-penalty, --temperature, --top-k/p, --min-p: the tokens of the model's own generate()."""
    from sparrow_sd.models import load_target
    from sparrow_sd.synth import read_video

    save_draft(tiny_draft(tiny_model("qwen2_vl"), seed=1), tmp_path / "d")
    base = ["generate", "--model", "tiny:qwen2_vl", "--video", str(mp4), "--prompt", "hi", "--num-frames", "2",
            "--max-new-tokens", "12", "--draft", str(tmp_path / "d"), "--compare", "--json", "--repetition-penalty", "1.5"]
    assert main(base) == 0
    greedy = json.loads(capsys.readouterr().out)
    assert main(base + ["--temperature", "0.7", "--top-k", "1", "--top-p", "0.9", "--min-p", "0.1"]) == 0
    sampled = json.loads(capsys.readouterr().out)
    loaded = load_target("tiny:qwen2_vl")
    inputs = loaded.make_inputs("hi", read_video(mp4, num_frames=2).frames)
    out = loaded.model.generate(**inputs, repetition_penalty=1.5, max_new_tokens=12)
    ref = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert greedy["tokens"] == ref and greedy["identical_to_autoregressive"] is True
    assert greedy["sampling"] == {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": None, "repetition_penalty": 1.5}
    assert sampled["tokens"] == ref  # top-k 1 samples the argmax
    assert sampled["sampling"] == {"temperature": 0.7, "top_p": 0.9, "top_k": 1, "min_p": 0.1, "repetition_penalty": 1.5}
    one_line_error(capsys, base + ["--top-p", "0"], "--top-p: must be in (0, 1]")


@pytest.mark.slow
def test_bench_quick_on_a_tiny_model_writes_every_report(tmp_path, capsys):
    from sparrow_sd.models import load_target

    draft = save_draft(tiny_draft(load_target("tiny:qwen2_vl").model, "none"), tmp_path / "sparrow")
    out = tmp_path / "bench"
    code = main(["bench", "--model", "tiny:qwen2_vl", "--draft", f"sparrow={draft}", "--visual-tokens", "40", "120",
                 "--clips", "1", "--max-new-tokens", "8", "--tree-tokens", "6", "--tune-tree", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (out / "bench.md").read_text() in captured.out  # the table written is the table printed
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in captured.out.splitlines()
            if line.startswith("| 0 |")]  # greedy rows: T, visual tokens, method, ...
    methods = {"autoregressive", "hf-generate", "hf-prompt-lookup", "sparrow"}
    assert sorted(row[2] for row in rows) == sorted(list(methods) * 2)
    data = json.loads((out / "bench.json").read_text())
    assert data["command"].startswith("sparrow bench --model") and data["machine"]["torch_threads"] >= 1
    assert {r["method"] for r in data["summary"]} == methods
    # every value filled, but the step split that Hugging Face's generate() does not report
    hf = ("hf-generate", "hf-prompt-lookup")
    assert all(v is not None or (r["method"] in hf and k.endswith(("_per_step", "bound_speedup")))
               for r in data["summary"] for k, v in r.items())
    assert all(r["bound_speedup"] > 0 for r in data["summary"] if r["method"] not in hf)
    assert [r["lossless"] for r in data["summary"] if r["method"] == "sparrow"] == ["1/1", "1/1"]
    assert all(len(s["tokens"]) == s["new_tokens"] for s in data["samples"])  # outputs kept for inspection
    # --tune-tree: a tree chosen per length, and that length's chosen tree is the one benchmarked there
    lengths = data["tree_tuning"]["lengths"]
    assert set(lengths) == {"40", "120"}
    benchmarked = data["methods"]["sparrow"]["tree_by_visual_tokens"]
    for n, tuned in lengths.items():
        assert len(tuned["drafts"]["sparrow"]["trials"]) > 1
        assert benchmarked[n] == tuned["drafts"]["sparrow"]["chosen"]
    assert (out / "bench.md").is_file() and (out / "bench.png").stat().st_size > 1000
    one_line_error(capsys, ["bench", "--model", "tiny:qwen2_vl", "--draft", "nonsense"], "NAME=FOLDER")


@pytest.mark.slow
def test_testbed_demo_streams_and_reports_a_measured_comparison(tmp_path, capsys):
    """The demo's path on the real testbed (untrained weights and a random draft stand in for the committed ones)."""
    require_language()
    from sparrow_sd.draft import save_draft
    from sparrow_sd.testbed import TestbedConfig, load_testbed
    from sparrow_sd.testbed.lora import LoRA
    from sparrow_sd.testbed.weights_io import save_lora
    from sparrow_sd.testing.drafts import tiny_draft

    model, _ = load_testbed(weights=None)
    weights = save_lora(tmp_path / "lora.safetensors", LoRA(model, rank=2, first_layer=23).state(), TestbedConfig())
    draft = save_draft(tiny_draft(model, "none"), tmp_path / "draft")
    assert main(["demo", "--weights", str(weights), "--draft", str(draft), "--frames", "2",
                 "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "2-frame SynthVideo mp4" in out and "tau " in out and "decode speedup" in out
    assert "output identical" in out and "OUTPUT DIFFERS" not in out


def test_demo_without_committed_assets_says_so_and_runs_the_tiny_demo(capsys, monkeypatch):
    import sparrow_sd.commands.demos as demo

    monkeypatch.setattr(demo, "missing_demo_assets", lambda: "the trained Sparrow draft for the testbed is not committed yet")
    assert main(["demo", "--frames", "8", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "not committed yet: running the tiny random demo instead" in out and "all outputs identical" in out


def test_committed_drafts_live_beside_the_testbed_weights_where_the_package_ships_them():
    """`sparrow demo` looks for the packed draft where pyproject's package-data includes it."""
    import tomllib

    from sparrow_sd.commands.demos import COMMITTED_DRAFTS, committed_draft
    from sparrow_sd.errors import AssetError

    assert COMMITTED_DRAFTS == COMMITTED_WEIGHTS.parent.parent / "drafts"
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["sparrow_sd.testbed"]
    assert "drafts/*/*.safetensors" in shipped and "drafts/*/*.json" in shipped
    if not (COMMITTED_DRAFTS / "no-such-draft").exists():
        with pytest.raises(AssetError, match="sparrow drafts build"):
            committed_draft("no-such-draft")


def test_drafts_tau_prints_the_acceptance_table_and_checks_every_decode(tmp_path, capsys):
    """`sparrow drafts tau`: one row per draft, one column per length, each decode checked against plain."""
    from sparrow_sd.generate import SpeculativeGenerator
    from sparrow_sd.models import load_target
    from sparrow_sd.proposers import DraftProposer, TreeConfig

    loaded = load_target("tiny:qwen2_vl")
    a = save_draft(tiny_draft(loaded.model, "none"), tmp_path / "a")
    b = save_draft(tiny_draft(loaded.model, "glimpse", seed=1), tmp_path / "b")
    out = tmp_path / "tau.json"
    code = main(["drafts", "tau", "--model", "tiny:qwen2_vl", "--draft", f"text={a}", "--draft", f"glimpse={b}",
                 "--visual-tokens", "40", "120", "--clips", "2", "--max-new-tokens", "12",
                 "--tree-depth", "3", "--tree-top-k", "2", "--tree-tokens", "5", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    assert report["command"].startswith("sparrow ") and report["tree"] == {"depth": 3, "top_k": 2, "total_tokens": 5}
    rows = {(r["draft"], r["visual_tokens"]): r for r in report["rows"]}
    assert set(rows) == {(d, n) for d in ("text", "glimpse") for n in (40, 120)}
    assert all(r["lossless_count"] == "2/2" and len(r["taus"]) == 2 for r in rows.values())
    assert "| text |" in report["markdown"] and "| glimpse |" in report["markdown"]
    # each tau is that draft's own fresh decode of that clip
    from sparrow_sd.commands.bench import sample_maker
    from sparrow_sd.draft import load_draft

    inputs, _ = sample_maker(loaded)(120, 1)
    fresh = SpeculativeGenerator(loaded.model, DraftProposer(load_draft(b), TreeConfig(3, 2, 5))).generate(
        inputs, max_new_tokens=12)
    assert rows[("glimpse", 120)]["taus"][1] == pytest.approx(fresh.stats.tau)


# --- the parser: every command's help, defaults from one place ----------------------------------


def runnable_commands(parser, path=()):
    """(path, parser) of every command that runs (`demo`, `testbed build`, ...), from the full parser."""
    nested = [a for a in parser._actions if isinstance(getattr(a, "choices", None), dict)]
    if not nested:
        yield path, parser
    for action in nested:
        for name, child in action.choices.items():
            yield from runnable_commands(child, (*path, name))


def test_every_command_help_works_and_shows_its_defaults(capsys):
    """`sparrow CMD --help` as a user runs it (only CMD's parser built in full) is the full parser's help."""
    import argparse

    from sparrow_sd.cli import COMMANDS, build_parser

    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(f"    {name} " in listing for name in COMMANDS)
    commands = list(runnable_commands(build_parser()))
    assert {path[0] for path, _ in commands} == set(COMMANDS) and len(commands) == len(COMMANDS) + 3
    for path, parser in commands:
        assert main([*path, "--help"]) == 0, path
        text = capsys.readouterr().out
        assert text == parser.format_help(), path
        flat = " ".join(text.split())
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                shown = " ".join(str(action.default).split())
                assert f"(default: {shown})" in flat, (path, action.option_strings[0])


def test_flag_defaults_are_the_dataclasses(capsys):
    from sparrow_sd.bench import SweepConfig
    from sparrow_sd.cli import build_parser
    from sparrow_sd.proposers import TreeConfig
    from sparrow_sd.testbed.training import LONG_STAGE, TrainConfig
    from sparrow_sd.training.datagen import DatagenConfig
    from sparrow_sd.training.suite import SuiteConfig

    parsers = {" ".join(path): parser for path, parser in runnable_commands(build_parser())}

    def defaults(command, *required):
        return vars(parsers[command].parse_args(list(required)))

    datagen = defaults("datagen", "--out", "data")
    config = DatagenConfig()
    assert datagen["visual"] == config.visual == "full"  # what full-visual and pruned drafts train from
    assert (datagen["max_new_tokens"], datagen["glimpse_tokens"], datagen["shard_size"]) == (
        config.max_new_tokens, config.glimpse_tokens, config.shard_size)
    suite = defaults("drafts build")
    assert (suite["count"], suite["frames"]) == (SuiteConfig().count, ",".join(map(str, SuiteConfig().frames)))
    bench = defaults("bench")
    assert tuple(bench["visual_tokens"]) == SweepConfig().visual_tokens and bench["clips"] == SweepConfig().clips
    assert TreeConfig(bench["tree_depth"], bench["tree_top_k"], bench["tree_tokens"]) == TreeConfig()
    build = defaults("testbed build")
    recipe = TrainConfig()
    assert (build["steps"], build["long_steps"], build["lr"]) == (recipe.steps, LONG_STAGE.steps, recipe.lr)
    assert build["longest_steps"] == 0  # the longest stage was tried (v2.4) and is off by default


def test_testbed_build_passes_the_later_stages(tmp_path, monkeypatch, capsys):
    """--long-steps / --events-steps / --longest-steps N run those stages for N steps, 0 skips one; the
    command is recorded."""
    import dataclasses
    import shlex

    import sparrow_sd.testbed.build as build
    from sparrow_sd.testbed.training import EVENTS_STAGE, LONG_STAGE, LONGEST_STAGE

    calls = []
    monkeypatch.setattr(build, "build_testbed", lambda out, train, **kw: calls.append((train, kw)) or True)
    base = ["testbed", "build", "--out", str(tmp_path / "lora.safetensors"), "--work", str(tmp_path / "work"),
            "--no-eval", "--threads", "1"]
    three = dataclasses.replace(LONG_STAGE, steps=3)
    events = dataclasses.replace(EVENTS_STAGE, steps=5)
    frozen = dataclasses.replace(LONGEST_STAGE, steps=24, video_gradient=False, checkpoint_activations=False)
    for extra, later in (([], [LONG_STAGE, None, None]),
                         (["--longest-steps", "6"], [LONG_STAGE, None, LONGEST_STAGE]),
                         (["--long-steps", "3", "--longest-steps", "6"], [three, None, LONGEST_STAGE]),
                         (["--long-steps", "3"], [three, None, None]),
                         (["--events-steps", "5"], [LONG_STAGE, events, None]),
                         (["--long-steps", "0", "--longest-steps", "6"], [None, None, LONGEST_STAGE]),
                         (["--longest-steps", "24", "--longest-frozen-video"], [LONG_STAGE, None, frozen])):
        assert main(base + extra) == 0
        train, kw = calls.pop()
        assert kw["later"] == later and kw["command"] == "sparrow " + shlex.join(base + extra)
    one_line_error(capsys, base + ["--long-steps", "-1"], "--long-steps", "at least 0")
    one_line_error(capsys, base + ["--longest-frozen-video"], "--longest-frozen-video", "--longest-steps 0")
    assert not calls  # refused before any build


def test_testbed_eval_refuses_too_few_clips_before_loading(capsys):
    one_line_error(capsys, ["testbed", "eval", "--clips", "1"], "--clips 1", "at least 2 clips")


def test_testbed_eval_penalty_probe_never_lands_in_the_manifest(capsys):
    """The manifest holds the weights' evaluation under their own generation config, so a penalty
    probe with --update-manifest is refused (before any model loads), and a bad penalty too."""
    one_line_error(capsys, ["testbed", "eval", "--repetition-penalty", "1", "--update-manifest"],
                   "--update-manifest", "--repetition-penalty")
    one_line_error(capsys, ["testbed", "eval", "--repetition-penalty", "0"], "--repetition-penalty", "above 0")
