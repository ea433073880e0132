"""Draft training on a tiny target: datagen shards and resume, records, IVSB, loss, save/load."""

import json

import pytest
import torch
from conftest import appended, prompt_inputs, tiny_model

from sparrow_sd.draft import build_draft_context, load_draft
from sparrow_sd.errors import InvalidInputError
from sparrow_sd.targets import TargetSession, wrap_target
from sparrow_sd.testing.drafts import tiny_draft
from sparrow_sd.training.datagen import DatagenConfig, Sample, completed_ids, run_datagen
from sparrow_sd.training.records import hidden_positions, prefill_from_record, record_glimpse
from sparrow_sd.training.shards import DataShards
from sparrow_sd.training.trainer import DraftTrainConfig, build_draft_vocab, prompt_items, sample_loss, train_draft

ARCH = "qwen2_vl"


def samples(model, n, start=0):
    return [Sample(f"s{i}", prompt_inputs(model, ARCH, seed=i, frames=4)) for i in range(start, start + n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    model = tiny_model(ARCH)
    out = tmp_path_factory.mktemp("data")
    cfg = DatagenConfig(max_new_tokens=12, shard_size=3, visual="full", ivsb_layer=1)
    run_datagen(model, samples(model, 8), out, cfg, progress=False)
    return model, out, cfg


def test_datagen_resumes_without_duplicates_or_losses(tmp_path):
    model = tiny_model(ARCH)
    cfg = DatagenConfig(max_new_tokens=6, shard_size=2)
    all_samples = samples(model, 7)

    class Interrupted(Exception):
        pass

    def interrupted_after(n):
        for i, sample in enumerate(all_samples):
            if i == n:
                raise Interrupted
            yield sample

    with pytest.raises(Interrupted):
        run_datagen(model, interrupted_after(5), tmp_path, cfg, progress=False)
    # the interrupted run flushed what it had finished: 5 samples in complete shards
    assert completed_ids(tmp_path) == {f"s{i}" for i in range(5)}
    written = run_datagen(model, all_samples, tmp_path, cfg, progress=False)
    assert written == 2
    ids = DataShards(tmp_path).ids
    assert sorted(ids) == sorted(s.id for s in all_samples) and len(ids) == len(set(ids))
    # ranks split the samples between them
    split = tmp_path / "split"
    for rank in range(2):
        run_datagen(model, all_samples, split, cfg, rank=rank, world=2, progress=False)
    assert sorted(DataShards(split).ids) == sorted(s.id for s in all_samples)
    with pytest.raises(InvalidInputError, match="other settings"):
        run_datagen(model, all_samples, tmp_path, DatagenConfig(max_new_tokens=7), progress=False)


def test_record_holds_the_targets_response_and_states(data):
    model, out, cfg = data
    target = wrap_target(model)
    sample = samples(model, 1)[0]
    record = dict(DataShards(out).items())["s0"]
    prompt_len = sample.inputs["input_ids"].shape[1]
    response = record["input_ids"][prompt_len:].tolist()
    expected = model.generate(**sample.inputs, do_sample=False, max_new_tokens=12)[0, prompt_len:].tolist()
    assert response == expected  # the target wrote it, greedy
    assert record["loss_mask"].sum() == len(response) and not record["loss_mask"][:prompt_len].any()
    # states: exactly the target's, at text positions and the one before text, never all positions
    prefill = TargetSession(target, appended(sample.inputs, response), room=1, capture_layers=[1]).prefill
    where = hidden_positions(prefill.visual_mask)
    assert record["hidden"].shape[0] == where.numel() < record["input_ids"].numel()
    assert torch.allclose(record["hidden"].float(), prefill.hidden[where].float(), atol=2e-2, rtol=1e-2)
    # IVSB takes the configured layer (1), not the last one
    visual = prefill.visual_positions
    assert torch.allclose(record["visual_ivsb"].float(), prefill.layer_hidden[1][visual].float(), atol=2e-2, rtol=1e-2)
    assert not torch.allclose(record["visual_ivsb"].float(), prefill.hidden[visual].float(), atol=2e-2, rtol=1e-2)
    # rebuilt prefill gives the same draft items as the live one (bf16 storage aside)
    for mode in ("none", "glimpse", "full", "pruned"):
        draft = tiny_draft(model, mode, ivsb_layer=1)
        live = build_draft_context(prefill, draft.config)
        rebuilt = build_draft_context(prefill_from_record(record, model.get_input_embeddings().weight, 1),
                                      draft.config, glimpse=record_glimpse(record))
        assert torch.equal(live.source, rebuilt.source)
        assert torch.allclose(live.embeds.float(), rebuilt.embeds, atol=3e-2, rtol=1e-2)
        assert torch.allclose(live.hidden.float(), rebuilt.hidden, atol=3e-2, rtol=1e-2)
        # training pins in the draft's window the items inference pins: the prompt's own
        inference = build_draft_context(
            TargetSession(wrap_target(model), sample.inputs, room=1, capture_layers=[1]).prefill, draft.config)
        assert prompt_items(rebuilt, record) == len(inference)


def test_draft_vocab_is_the_most_frequent_response_tokens(data):
    model, out, _ = data
    records = list(DataShards(out))
    vocab = build_draft_vocab(records, 10, 128, always={127})
    assert vocab.numel() == 10 and 127 in vocab.tolist()
    counts = torch.bincount(torch.cat([r["input_ids"].long()[r["loss_mask"]] for r in records]), minlength=128)
    top = counts.argsort(descending=True)[:5].tolist()
    assert set(top) <= set(vocab.tolist())


def test_the_default_recipe_is_the_shipped_sparrow_draft_and_eagle3_stays_text_only(data, tmp_path):
    """`sparrow train` with no --visual-mode trains what the suite ships as Sparrow: the glimpse reader."""
    from sparrow_sd.commands.train import train_settings

    model, out, _ = data
    assert DraftTrainConfig().visual_mode == "glimpse" and DraftTrainConfig(architecture="eagle3").visual_mode == "none"
    assert DraftTrainConfig(**train_settings({"visual_mode": "full"})).visual_mode == "full"
    cfg = DraftTrainConfig(epochs=1, draft_vocab_size=48, eval_every=0, checkpoint_every=0, intermediate_size=64)
    draft = train_draft(model, out, tmp_path / "draft", cfg, progress=False, log=lambda m: None)
    assert draft.config.visual_mode == "glimpse" and draft.config.ivsb_layer is not None


def test_training_lowers_the_loss_and_saves_a_loadable_draft(data, tmp_path):
    model, out, _ = data
    cfg = DraftTrainConfig(epochs=6, lr=3e-3, warmup=2, grad_accum=1, mtp_steps=2, draft_vocab_size=48,
                           eval_every=0, checkpoint_every=20, intermediate_size=64)
    index = DataShards(out)
    embed = model.get_input_embeddings().weight.float()
    draft = train_draft(model, out, tmp_path / "draft", cfg, progress=False, log=lambda m: None)
    trained = [sample_loss(draft, index[i], embed, cfg)[0].item() for i in range(len(index))]
    fresh = tiny_draft(model, "none", draft_vocab=draft.to_target_ids(torch.arange(48)), intermediate_size=64)
    untrained = [sample_loss(fresh.float(), index[i], embed, cfg)[0].item() for i in range(len(index))]
    assert sum(trained) < 0.8 * sum(untrained)
    loaded = load_draft(tmp_path / "draft")
    assert torch.equal(loaded.fc.weight, draft.fc.weight) and torch.equal(loaded.d2t, draft.d2t)
    meta = json.loads((tmp_path / "draft" / "training.json").read_text())
    assert meta["settings"]["mtp_steps"] == 2 and meta["steps"] == 6 * meta["samples"]
    # resume: a checkpoint exists and training continues from its step
    assert (tmp_path / "draft" / "checkpoint" / "state.pt").is_file()
    messages = []
    train_draft(model, out, tmp_path / "draft", cfg, resume=True, progress=False, log=messages.append)
    assert any("resuming from step" in m for m in messages)


def test_full_mode_needs_full_visual_data(tmp_path):
    model = tiny_model(ARCH)
    run_datagen(model, samples(model, 2), tmp_path, DatagenConfig(max_new_tokens=4, visual="pooled"),
                progress=False)
    with pytest.raises(InvalidInputError, match="visual full"):
        train_draft(model, tmp_path, tmp_path / "d", DraftTrainConfig(visual_mode="full", ivsb=False),
                    progress=False)
