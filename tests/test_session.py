"""One prefill per prompt: a TargetSession rewound serves every decode, token for token as a fresh prefill.

Prefills are counted two ways: calls to the adapter's prefill, and runs of the model's
vision tower (every forward over a video prompt runs it once, Hugging Face's own
``generate`` included), so a second forward over the prompt cannot hide.
"""

import json

import pytest
import torch
from conftest import hf_greedy, prompt_inputs, tiny_model

from sparrow_sd.bench import Autoregressive, DraftMethod, PromptLookup, SweepConfig, check_lossless, run_sweep
from sparrow_sd.cli import main
from sparrow_sd.draft import save_draft
from sparrow_sd.errors import InvalidInputError
from sparrow_sd.generate import SpeculativeGenerator, prefill
from sparrow_sd.proposers import DraftProposer, TreeConfig
from sparrow_sd.sampling import SamplingConfig
from sparrow_sd.synth import make_clip, write_mp4
from sparrow_sd.targets import TargetAdapter, TargetSession, wrap_target
from sparrow_sd.testing.drafts import tiny_draft

TREE = TreeConfig(depth=3, top_k=2, total_tokens=6)


def vision_tower(model):
    return getattr(model.model, "visual", None) or model.model.vision_tower


@pytest.fixture
def count_prefills(monkeypatch):
    """Counts adapter prefills and vision-tower forwards of every model of ``arch``, however it was loaded."""
    counts = {"prefill": 0, "vision": 0}
    original = TargetAdapter.prefill

    def counted(self, *args, **kwargs):
        counts["prefill"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TargetAdapter, "prefill", counted)

    def watch(arch):
        tower = type(vision_tower(tiny_model(arch)))
        forward = tower.forward

        def counted_forward(self, *args, **kwargs):
            counts["vision"] += 1
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(tower, "forward", counted_forward)
        return counts

    return watch


def test_rewind_then_decode_equals_a_fresh_prefill(arch):
    """Plain, draft, plain again, sampled, another draft: each decode from one session is a fresh generate()."""
    model = tiny_model(arch)
    inputs = prompt_inputs(model, arch, seed=5, frames=4)
    target = wrap_target(model)
    ref = hf_greedy(model, inputs, 16)
    plain = SpeculativeGenerator(target)
    drafts = [SpeculativeGenerator(target, DraftProposer(tiny_draft(target, "none"), TREE)),
              SpeculativeGenerator(target, DraftProposer(tiny_draft(target, "glimpse", ivsb_layer=1), TreeConfig.chain(4)))]
    with prefill(target, inputs, 16, [d.proposer for d in drafts]) as session:
        assert session.length == session.prompt_length == inputs["input_ids"].shape[1]
        assert session.capture_layers == (1,) and session.room == 16 + 6 + 1
        first = plain.decode(session, 16)
        assert session.length > session.prompt_length  # decoding left its tokens in the cache
        assert first.tokens == ref and first.stats.target_prefill_s >= session.prefill_s
        for generator in drafts:
            fresh = generator.generate(inputs, max_new_tokens=16)
            shared = generator.decode(session, 16)
            assert shared.tokens == fresh.tokens == ref and shared.stats.tau == fresh.stats.tau
        assert plain.decode(session, 16).tokens == ref
        fresh = plain.generate(inputs, max_new_tokens=16, temperature=1.0, seed=3)
        assert plain.decode(session, 16, temperature=1.0, seed=3).tokens == fresh.tokens
        session.rewind()
        assert session.length == session.prompt_length
    assert session.cache is None and session.prefill is None


def test_a_session_refuses_a_decode_it_cannot_serve():
    model = tiny_model("qwen2_vl")
    inputs = prompt_inputs(model, "qwen2_vl", seed=0)
    session = TargetSession(wrap_target(model), inputs, room=9)
    glimpse = SpeculativeGenerator(model, DraftProposer(tiny_draft(model, "glimpse", ivsb_layer=1), TREE))
    with pytest.raises(InvalidInputError, match="room 9"):
        SpeculativeGenerator(model).decode(session, 9)  # 9 new tokens need room 10
    with pytest.raises(InvalidInputError, match=r"layers \[1\]"):
        glimpse.decode(session, 2)  # room enough, but the prefill did not capture layer 1
    with pytest.raises(InvalidInputError, match="either sampling or"):
        SpeculativeGenerator(model).decode(session, 2, sampling=SamplingConfig(), temperature=0)
    assert len(SpeculativeGenerator(model).decode(session, 8).tokens) == 8
    session.release()
    with pytest.raises(RuntimeError, match="released"):
        SpeculativeGenerator(model).decode(session, 2)
    with pytest.raises(InvalidInputError, match="room for at least one token"):
        TargetSession(wrap_target(model), inputs, room=0)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    clip = make_clip(12, num_frames=4, height=112, width=112, num_events=1)
    return write_mp4(clip.frames, tmp_path_factory.mktemp("video") / "clip.mp4")


def test_compare_prefills_once_and_matches_generate(tmp_path, mp4, capsys, count_prefills):
    """`sparrow generate --compare`: the draft's decode and the plain one share one prefill."""
    from sparrow_sd.models import load_target
    from sparrow_sd.video import read_video

    loaded = load_target("tiny:qwen2_vl")
    draft = save_draft(tiny_draft(loaded.model, "none"), tmp_path / "d")
    counts = count_prefills("qwen2_vl")
    code = main(["generate", "--model", "tiny:qwen2_vl", "--video", str(mp4), "--prompt", "hi", "--num-frames", "4",
                 "--max-new-tokens", "12", "--draft", str(draft), "--compare", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and counts == {"prefill": 1, "vision": 1}
    assert report["identical_to_autoregressive"] is True and report["autoregressive_decode_s"] > 0
    inputs = loaded.make_inputs("hi", read_video(mp4, num_frames=4).frames)
    assert report["tokens"] == hf_greedy(loaded.model, inputs, 12)


def test_bench_and_tree_tuning_prefill_once_per_clip(tmp_path, capsys, count_prefills):
    """`sparrow bench --tune-tree` with two drafts: one prefill per tuning clip and per benchmark clip."""
    from sparrow_sd.commands.bench import sample_maker
    from sparrow_sd.models import load_target

    loaded = load_target("tiny:qwen2_vl")
    a = save_draft(tiny_draft(loaded.model, "none"), tmp_path / "a")
    b = save_draft(tiny_draft(loaded.model, "glimpse", seed=1, ivsb_layer=1), tmp_path / "b")
    counts = count_prefills("qwen2_vl")
    code = main(["bench", "--model", "tiny:qwen2_vl", "--draft", f"text={a}", "--draft", f"glimpse={b}",
                 "--visual-tokens", "40", "--clips", "2", "--max-new-tokens", "8", "--tree-tokens", "6",
                 "--no-prompt-lookup", "--tune-tree", "--out", str(tmp_path / "bench")])
    assert code == 0, capsys.readouterr().err
    # ours: the tuning clip, then the two benchmark clips; Hugging Face's generate() prefills by itself, per clip
    assert counts == {"prefill": 3, "vision": 3 + 2}
    data = json.loads((tmp_path / "bench" / "bench.json").read_text())
    make_sample = sample_maker(loaded)
    expected = {clip: hf_greedy(loaded.model, make_sample(40, clip)[0], 8) for clip in (0, 1)}
    samples = [s for s in data["samples"] if s["temperature"] == 0]
    assert {s["method"] for s in samples} == {"autoregressive", "hf-generate", "text", "glimpse"}
    assert len(samples) == 8 and data["complete"] is True
    assert data["command"].startswith("sparrow bench --model tiny:qwen2_vl") and "cores" in data["machine"]["processor"]
    assert all(s["tokens"] == expected[s["clip"]] and s["target_prefill_s"] > 0 for s in samples)


def test_a_sweep_with_every_kind_of_method_prefills_once_per_clip(count_prefills):
    """Engine methods share the clip's prefill; Hugging Face's prompt lookup makes its own, per run."""
    model = tiny_model("llava_onevision")
    target = wrap_target(model)
    methods = [Autoregressive(target), PromptLookup(model, num_tokens=3),
               DraftMethod(target, tiny_draft(target, "none"), TREE, "sparrow"),
               DraftMethod(target, tiny_draft(target, "full"), TREE.chain(5), "full-visual")]

    def make_sample(tokens, clip):
        inputs = prompt_inputs(model, "llava_onevision", seed=clip, frames=2)
        return inputs, int((inputs["input_ids"] == model.config.video_token_id).sum())

    counts = count_prefills("llava_onevision")
    cfg = SweepConfig(visual_tokens=(20,), clips=2, max_new_tokens=10, temperatures=(0.0, 1.0))
    result = run_sweep(methods, make_sample, cfg, progress=False)
    assert counts == {"prefill": 2, "vision": 2 + 2 * 2}  # per clip: ours once, prompt lookup per temperature
    check_lossless(result)
    for clip in (0, 1):
        ref = hf_greedy(model, make_sample(20, clip)[0], 10)
        greedy = [s for s in result.samples if s.clip == clip and s.temperature == 0]
        assert len(greedy) == 4 and all(s.run.tokens == ref for s in greedy)
        engine = [s.run.target_prefill_s for s in result.samples if s.clip == clip and s.method != "hf-prompt-lookup"]
        assert len(engine) == 6 and all(t > 0 for t in engine)
    assert all(s.run.peak_memory_bytes >= 0 for s in result.samples)
    assert torch.is_grad_enabled()  # the engine's inference mode does not leak
