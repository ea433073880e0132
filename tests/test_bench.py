"""The benchmark harness on tiny models: every method, every field, the files, the lossless check."""

import json

import pytest
from conftest import prompt_inputs, tiny_model

from sparrow_sd.bench import (
    Autoregressive,
    DraftMethod,
    HFGenerate,
    LosslessnessError,
    MethodRun,
    PromptLookup,
    SweepConfig,
    check_lossless,
    run_sweep,
    write_reports,
)
from sparrow_sd.bench.methods import Method
from sparrow_sd.proposers import TreeConfig
from sparrow_sd.testing import frames_for_tokens
from sparrow_sd.testing.drafts import tiny_draft

ARCH = "qwen2_vl"


def make_sample(model):
    def sample(tokens, clip):
        frames = frames_for_tokens(ARCH, model.config, tokens)
        inputs = prompt_inputs(model, ARCH, seed=clip, frames=frames)
        return inputs, int((inputs["input_ids"] == model.config.video_token_id).sum())

    return sample


@pytest.mark.slow
def test_quick_sweep_fills_every_field_and_writes_the_files(tmp_path):
    model = tiny_model(ARCH)
    tree = TreeConfig(depth=3, top_k=2, total_tokens=6)
    methods = [Autoregressive(model), PromptLookup(model, num_tokens=4),
               DraftMethod(model, tiny_draft(model, "none"), tree, "sparrow"),
               DraftMethod(model, tiny_draft(model, "full"), tree, "full-visual")]
    cfg = SweepConfig(visual_tokens=(40, 120), clips=2, max_new_tokens=10, temperatures=(0.0, 1.0))
    result = run_sweep(methods, make_sample(model), cfg, progress=False)
    assert len(result.samples) == 2 * 2 * 2 * 4
    check_lossless(result)  # greedy: every method equals plain decoding
    greedy = [s for s in result.samples if s.temperature == 0 and s.method != "autoregressive"]
    assert greedy and all(s.lossless for s in greedy)
    assert all(s.lossless is None for s in result.samples if s.temperature > 0)
    paths = write_reports(result, tmp_path, header={"machine": "test"})
    data = json.loads(paths["json"].read_text())
    assert data["machine"] == "test" and len(data["summary"]) == 2 * 2 * 4
    split = ("draft_ms_per_step", "verify_ms_per_step", "commit_ms_per_step", "other_ms_per_step", "bound_speedup")
    for row in data["summary"]:
        for key, value in row.items():  # Hugging Face's generate() reports no steps to split
            assert value is not None or (key in split and row["method"] == "hf-prompt-lookup"), key
        if row["method"] != "hf-prompt-lookup":
            assert row["verify_ms_per_step"] > 0 and row["bound_speedup"] > 0
        assert row["tau"] >= 1.0 and row["decode_tokens_per_s"] > 0 and row["target_prefill_s"] > 0
        if row["method"] in ("sparrow", "full-visual"):
            assert row["draft_prefill_s"] > 0 and row["draft_cache_mb"] > 0
    ar = [r for r in data["summary"] if r["method"] == "autoregressive"]
    assert all(abs(r["decode_speedup"] - 1.0) < 1e-9 for r in ar)
    table = paths["markdown"].read_text()
    assert "sparrow" in table and "hf-prompt-lookup" in table and "Settings" in table
    assert paths["plot"].stat().st_size > 1000
    # the draft's cost does not grow with the video: same draft cache at both lengths
    sparrow = [r for r in data["summary"] if r["method"] == "sparrow" and r["temperature"] == 0]
    assert sparrow[0]["draft_cache_mb"] == sparrow[1]["draft_cache_mb"]


def test_hf_generate_is_checked_against_our_loop_and_reports_come_after_each_length(tmp_path):
    """Hugging Face's plain generate() is a method like the others: its greedy tokens are checked
    against the reference, and a sweep cut short still has the lengths it finished on disk."""
    model = tiny_model(ARCH)
    methods = [Autoregressive(model), HFGenerate(model),
               DraftMethod(model, tiny_draft(model, "none"), TreeConfig(3, 2, 6), "sparrow")]
    cfg = SweepConfig(visual_tokens=(120, 40), clips=2, max_new_tokens=8)
    seen = []

    def length_done(partial):
        seen.append(sorted({s.visual_tokens for s in partial.samples}))
        write_reports(partial, tmp_path, {"complete": False})

    result = run_sweep(methods, make_sample(model), cfg, progress=False, on_length_done=length_done)
    assert seen == [[120], [40, 120]]
    hf = [s for s in result.samples if s.method == "hf-generate"]
    assert len(hf) == 4 and all(s.lossless is True and s.run.target_prefill_s > 0 for s in hf)
    rows = json.loads((tmp_path / "bench.json").read_text())["summary"]
    assert [r["visual_tokens"] for r in rows] == [40] * 3 + [120] * 3  # by length, whatever the sweep order
    for row in rows:
        taus = [s.run.tau for s in result.samples if (s.method, s.visual_tokens) == (row["method"], row["visual_tokens"])]
        assert (row["tau_min"], row["tau_max"]) == (min(taus), max(taus)) and row["tau_min"] <= row["tau"]


def test_speedups_compare_rates_so_sampled_runs_of_different_lengths_are_fair():
    """Sampled methods emit different numbers of tokens: a method that stopped early must not look
    faster for having done less (the 25k T=1 row had 64 tokens against the reference's 200)."""
    from sparrow_sd.bench import SweepResult, summarise
    from sparrow_sd.bench.sweep import SampleResult

    def sample(method, tokens, decode_s, prefill_s=10.0):
        run = MethodRun(list(range(tokens)), 1.0, prefill_s, 0.0, decode_s, prefill_s + decode_s)
        return SampleResult(method, 100, 100, 0, 1.0, run, None)

    result = SweepResult(SweepConfig(), [sample("autoregressive", 201, 20.0), sample("draft", 51, 10.0)])
    row = {r["method"]: r for r in summarise(result)}["draft"]
    assert row["decode_speedup"] == pytest.approx((50 / 10.0) / (200 / 20.0))  # 0.5x, not 2x
    assert row["end_to_end_speedup"] == pytest.approx((51 / 20.0) / (201 / 30.0))


def test_sampling_rows_run_only_at_the_lengths_asked(tmp_path):
    """`--sample-at`: greedy at every length, the sampling temperature only where asked (the 25k T=1 row)."""
    model = tiny_model(ARCH)
    methods = [Autoregressive(model), DraftMethod(model, tiny_draft(model, "none"), TreeConfig(2, 1, 2), "sparrow")]
    cfg = SweepConfig(visual_tokens=(40, 120), clips=1, max_new_tokens=6, temperatures=(0.0, 1.0),
                      sample_lengths=(120,))
    result = run_sweep(methods, make_sample(model), cfg, progress=False)
    runs = sorted({(s.visual_tokens, s.temperature) for s in result.samples})
    assert runs == [(40, 0.0), (120, 0.0), (120, 1.0)] and len(result.samples) == 3 * 2
    check_lossless(result)
    data = json.loads(write_reports(result, tmp_path)["json"].read_text())
    assert sorted({(r["visual_tokens"], r["temperature"]) for r in data["summary"]}) == runs


def test_the_step_split_accounts_for_the_decode_time():
    """draft + verify + commit + other is the decode time; plain decoding spends almost nothing drafting."""
    from sparrow_sd import SpeculativeGenerator
    from sparrow_sd.proposers import DraftProposer

    model = tiny_model(ARCH)
    inputs, _ = make_sample(model)(60, 0)
    tree = TreeConfig(depth=3, top_k=2, total_tokens=6)
    drafted = SpeculativeGenerator(model, DraftProposer(tiny_draft(model, "none"), tree)).generate(
        inputs, max_new_tokens=12, do_sample=False).stats
    plain = SpeculativeGenerator(model).generate(inputs, max_new_tokens=12, do_sample=False).stats
    for stats in (drafted, plain):
        phases = stats.draft_s + stats.verify_s + stats.commit_s
        assert stats.verify_s > 0 and stats.commit_s > 0 and phases <= stats.decode_s
        assert stats.other_s == pytest.approx(stats.decode_s - phases)
        assert stats.to_dict()["other_s"] == stats.other_s
    assert drafted.draft_s > 0 and plain.draft_s < plain.verify_s


class Corrupt(Method):
    """A broken method: drops the last token. The sweep must notice."""

    name = "corrupt"

    def __init__(self, model):
        self.inner = Autoregressive(model)

    def run(self, inputs, max_new_tokens, temperature=0.0, seed=0):
        run = self.inner.run(inputs, max_new_tokens, temperature, seed)
        return MethodRun(run.tokens[:-1], run.tau, run.target_prefill_s, 0.0, run.decode_s, run.total_s)


def test_a_lossy_method_fails_the_run_loudly(tmp_path):
    model = tiny_model(ARCH)
    result = run_sweep([Autoregressive(model), Corrupt(model)], make_sample(model),
                       SweepConfig(visual_tokens=(40,), clips=1, max_new_tokens=6), progress=False)
    write_reports(result, tmp_path)  # the report is still written
    assert json.loads((tmp_path / "bench.json").read_text())["summary"][1]["lossless"] == "0/1"
    with pytest.raises(LosslessnessError, match="corrupt"):
        check_lossless(result)


def test_verify_cost_curve_and_pick():
    from sparrow_sd.bench.tune import pick_tree_tokens, verify_cost_curve

    model = tiny_model(ARCH)
    costs = verify_cost_curve(model, prompt_inputs(model, ARCH, seed=0, frames=4), node_counts=(1, 4, 16), repeats=1)
    assert set(costs) == {1, 4, 16} and all(c > 0 for c in costs.values())
    assert pick_tree_tokens({1: 1.0, 4: 1.1, 16: 1.4, 32: 2.5}) == 16
    assert pick_tree_tokens({1: 1.0, 4: 3.0}) == 1


def test_a_prefill_made_once_serves_every_decode_exactly():
    """Tuning at 25k shares one prefill: each decode from it equals a fresh generate, token for token."""
    from sparrow_sd.bench.tune import tuning_prefill
    from sparrow_sd.errors import InvalidInputError
    from sparrow_sd.generate import SpeculativeGenerator
    from sparrow_sd.proposers import DraftProposer

    model = tiny_model(ARCH)
    inputs = prompt_inputs(model, ARCH, seed=2, frames=4)
    draft = tiny_draft(model, "glimpse", ivsb_layer=1)  # needs a captured intermediate layer too
    trees = (TreeConfig.chain(3), TreeConfig(depth=3, top_k=2, total_tokens=6), TreeConfig.chain(3))
    session = tuning_prefill(model, [draft], inputs, trees, max_new_tokens=20)
    assert session.room == 20 + 6 + 1 and session.capture_layers == (1,)
    for tree in trees:
        fresh = SpeculativeGenerator(model, DraftProposer(draft, tree)).generate(inputs, max_new_tokens=20)
        shared = SpeculativeGenerator(model, DraftProposer(draft, tree)).decode(session, max_new_tokens=20)
        assert shared.tokens == fresh.tokens and shared.stats.tau == fresh.stats.tau
    with pytest.raises(InvalidInputError, match="room"):
        SpeculativeGenerator(model, DraftProposer(draft, trees[0])).decode(session, max_new_tokens=40)
    session.release()
    assert session.cache is None and session.nbytes() == 0


def test_tune_tree_times_every_candidate_and_keeps_the_fastest():
    from sparrow_sd.bench.tune import tune_tree
    from sparrow_sd.generate import SpeculativeGenerator

    model = tiny_model(ARCH)
    inputs = prompt_inputs(model, ARCH, seed=1, frames=4)
    candidates = (TreeConfig.chain(2), TreeConfig(depth=3, top_k=2, total_tokens=5))
    chosen, trials = tune_tree(model, tiny_draft(model, "none"), inputs, candidates, max_new_tokens=10)
    assert [t.tree for t in trials] == list(candidates)
    assert chosen == min(trials, key=lambda t: t.decode_s_per_token).tree
    assert all(t.tau >= 1.0 and t.decode_s_per_token > 0 for t in trials)
    assert set(trials[0].to_dict()) == {"depth", "top_k", "total_tokens", "tau", "decode_ms_per_token"}
    # a trial's tau is the tau of that tree's own decode
    from sparrow_sd.proposers import DraftProposer

    again = SpeculativeGenerator(model, DraftProposer(tiny_draft(model, "none"), candidates[1])).generate(
        inputs, max_new_tokens=10)
    assert again.stats.tau == pytest.approx(trials[1].tau)
