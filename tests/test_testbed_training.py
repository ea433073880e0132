"""The testbed's training recipe, run for real on the tiny testbed: it learns, it resumes exactly."""

import dataclasses

import pytest
import torch

from sparrow_sd.errors import InvalidInputError
from sparrow_sd.synth import bounded_num_events
from sparrow_sd.synth.vocab import BACKGROUND, SHAPES
from sparrow_sd.testbed.lora import LoRA
from sparrow_sd.testbed.training import (
    BLANK_DESCRIPTIONS,
    TRAIN_SEED_BASE,
    TrainConfig,
    event_count_range,
    answer_loss,
    make_example,
    step_example,
    train_lora,
)
from sparrow_sd.testing.tiny_testbed import TinyTestbedProcessor, build_tiny_testbed

TINY = TrainConfig(steps=6, lr=3e-2, warmup=1, rank=4, alpha=8.0, first_layer=1, frames=(3, 4),
                   frame_weights=(1, 1), height=40, blank_prob=0.2)


def test_step_examples_are_reproducible_and_vary():
    processor = TinyTestbedProcessor()
    a, b = step_example(3, processor, TINY), step_example(3, processor, TINY)
    assert a.answer_ids == b.answer_ids and torch.equal(a.pixel_values_videos, b.pixel_values_videos)
    assert len({tuple(step_example(k, processor, TINY).answer_ids) for k in range(6)}) > 3
    assert a.prompt_ids.count(processor.video_token_id) == processor.num_video_tokens(a.num_frames)


def test_up_to_max_draws_more_events_than_the_length_gives_and_by_length_is_unchanged():
    """Short clips with long videos' event counts; the shipped recipe's clips stay what they were."""
    processor = TinyTestbedProcessor()
    by_length = dataclasses.replace(TINY, frames=(16,), frame_weights=(1,), blank_prob=0.0)
    dense = dataclasses.replace(by_length, events="up-to-max")
    assert event_count_range(16, by_length) == (bounded_num_events(16), bounded_num_events(16)) == (2, 2)
    assert event_count_range(16, dense) == (2, 8) and event_count_range(5, dense) == (2, 2)
    counts = [step_example(k, processor, dense).num_events for k in range(12)]
    assert min(counts) >= 2 and max(counts) <= 8 and len(set(counts)) >= 3 and max(counts) > 2
    for k in range(3):  # the by-length recipe's step k is the clip it always was
        old = make_example(TRAIN_SEED_BASE + k, 16, processor, by_length)
        new = step_example(k, processor, by_length)
        assert new.num_events == 2 and new.answer_ids == old.answer_ids
    with pytest.raises(InvalidInputError, match="events must be one of"):
        dataclasses.replace(TINY, events="many")


def test_blank_example_describes_no_object():
    processor = TinyTestbedProcessor()
    example = make_example(5, 3, processor, TINY, blank=True, num_events=2)
    assert example.num_events == 0
    pixels = example.pixel_values_videos[0].permute(0, 2, 3, 1).reshape(-1, 3)
    assert (pixels == torch.tensor(BACKGROUND, dtype=pixels.dtype)).all()
    assert all(text.lower().count(shape) == 0 for text in BLANK_DESCRIPTIONS for shape in SHAPES)


def test_training_lowers_the_loss_on_held_out_clips():
    processor = TinyTestbedProcessor()
    model = build_tiny_testbed(seed=0)
    held_out = [make_example(100_000 + i, 4, processor, TINY) for i in range(3)]
    with torch.no_grad():
        before = sum(float(answer_loss(model, e)) for e in held_out)
    config = dataclasses.replace(TINY, steps=30)
    train_lora(model, processor, config, log=lambda s: None)
    with torch.no_grad():
        after = sum(float(answer_loss(model, e)) for e in held_out)
    assert after < 0.8 * before


def test_resume_after_a_stop_equals_an_uninterrupted_run(tmp_path):
    processor = TinyTestbedProcessor()
    whole = build_tiny_testbed(seed=0)
    reference = train_lora(whole, processor, TINY, log=lambda s: None).state()

    model = build_tiny_testbed(seed=0)
    calls = iter(range(100))
    train_lora(model, processor, TINY, checkpoint_path=tmp_path / "ck.pt", checkpoint_every=100,
               log=lambda s: None, stop=lambda: next(calls) == 2)  # stops after step 3
    lines = []
    resumed = train_lora(build_tiny_testbed(seed=0), processor, TINY, checkpoint_path=tmp_path / "ck.pt",
                         log=lines.append).state()
    assert lines[0] == "resumed at step 3 of 6"
    assert resumed.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_another_recipe_is_refused(tmp_path):
    processor = TinyTestbedProcessor()
    short = dataclasses.replace(TINY, steps=1)
    train_lora(build_tiny_testbed(seed=0), processor, short, checkpoint_path=tmp_path / "ck.pt", log=lambda s: None)
    with pytest.raises(InvalidInputError, match="another recipe"):
        train_lora(build_tiny_testbed(seed=0), processor, TINY, checkpoint_path=tmp_path / "ck.pt",
                   log=lambda s: None)


def test_lora_sits_on_the_upper_layers_and_merges_exactly():
    model = build_tiny_testbed(seed=0)
    lora = LoRA(model, rank=4, first_layer=1, seed=1)
    assert lora.modules_by_name and all(".layers.1." in name for name in lora.modules_by_name)
    with torch.no_grad():
        for param in lora.b.values():
            param.normal_()
    lora.attach()
    processor = TinyTestbedProcessor()
    example = make_example(7, 3, processor, TINY)
    with torch.no_grad():
        hooked = answer_loss(model, example)
        lora.merge()
        merged = answer_loss(model, example)
    torch.testing.assert_close(hooked, merged, rtol=1e-4, atol=1e-5)


def test_a_second_stage_continues_the_first_with_recomputed_activations(tmp_path):
    """The long stage starts from the base LoRA (not from zero); recomputing activations changes no gradient."""
    processor = TinyTestbedProcessor()
    long = dataclasses.replace(TINY, steps=2, seed=1, frames=(5,), frame_weights=(1,), blank_prob=0.0)
    model = build_tiny_testbed(seed=0)
    base = train_lora(model, processor, TINY, log=lambda s: None)
    after_base = {k: v.clone() for k, v in base.state().items()}
    results = {}
    for recompute in (False, True):
        model = build_tiny_testbed(seed=0)
        first = train_lora(model, processor, TINY, checkpoint_path=tmp_path / "base.pt", log=lambda s: None)
        for key, value in first.state().items():
            torch.testing.assert_close(value, after_base[key])  # resumed from the finished base checkpoint
        recipe = dataclasses.replace(long, checkpoint_activations=recompute)
        results[recompute] = train_lora(model, processor, recipe, log=lambda s: None, lora=first).state()
        assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    for key in after_base:
        torch.testing.assert_close(results[True][key], results[False][key], rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(results[True][k], after_base[k]) for k in after_base)
    fresh = train_lora(build_tiny_testbed(seed=0), processor, long, log=lambda s: None).state()
    assert any(not torch.allclose(fresh[k], results[False][k]) for k in fresh)


def test_a_stage_refuses_a_lora_of_another_shape():
    processor = TinyTestbedProcessor()
    model = build_tiny_testbed(seed=0)
    lora = train_lora(model, processor, dataclasses.replace(TINY, steps=1), log=lambda s: None)
    with pytest.raises(InvalidInputError, match="another rank"):
        train_lora(model, processor, dataclasses.replace(TINY, rank=8), log=lambda s: None, lora=lora)


def test_an_older_checkpoint_without_the_newer_recipe_fields_still_resumes(tmp_path):
    processor = TinyTestbedProcessor()
    short = dataclasses.replace(TINY, steps=1)
    train_lora(build_tiny_testbed(seed=0), processor, short, checkpoint_path=tmp_path / "ck.pt", log=lambda s: None)
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    del saved["config"]["checkpoint_activations"], saved["config"]["events"]
    torch.save(saved, tmp_path / "ck.pt")
    lines = []
    train_lora(build_tiny_testbed(seed=0), processor, short, checkpoint_path=tmp_path / "ck.pt", log=lines.append)
    assert lines == ["resumed at step 1 of 1"]


def test_a_checkpoint_of_another_testbed_config_is_refused(tmp_path):
    """Same recipe, but the frames were shown another way: resuming would mix two trainings."""
    processor = TinyTestbedProcessor()
    short = dataclasses.replace(TINY, steps=1)
    train_lora(build_tiny_testbed(seed=0), processor, short, checkpoint_path=tmp_path / "ck.pt", log=lambda s: None)
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)
    saved["testbed"] = dataclasses.replace(processor.config, moves="every_frame" if processor.config.moves == "once" else "once").to_json()
    torch.save(saved, tmp_path / "ck.pt")
    with pytest.raises(InvalidInputError, match="another testbed config"):
        train_lora(build_tiny_testbed(seed=0), processor, short, checkpoint_path=tmp_path / "ck.pt",
                   log=lambda s: None)


def test_later_stages_run_in_order_a_skipped_one_is_left_out_and_each_knows_what_it_continued():
    from sparrow_sd.testbed.build import STAGES, lineage_of, stage_chain
    from sparrow_sd.testbed.training import EVENTS_STAGE, LONG_STAGE, LONGEST_STAGE

    base = dataclasses.replace(TINY, rank=4)
    chain = stage_chain(base, [LONG_STAGE, EVENTS_STAGE, LONGEST_STAGE])
    assert [name for name, _ in chain] == list(STAGES) == ["base", "long", "events", "longest"]
    assert [c.frames for _, c in chain] == [base.frames, LONG_STAGE.frames, EVENTS_STAGE.frames, LONGEST_STAGE.frames]
    assert all((c.rank, c.first_layer, c.targets) == (4, base.first_layer, base.targets) for _, c in chain)
    skipped = stage_chain(base, [LONG_STAGE, None, LONGEST_STAGE])
    assert [name for name, _ in skipped] == ["base", "long", "longest"]
    assert lineage_of(chain, 0) == lineage_of(skipped, 0) == "" and lineage_of(chain, 1) == lineage_of(skipped, 1)
    assert lineage_of(chain, 3) != lineage_of(skipped, 2)  # the longest stage continued other stages
    assert max(LONGEST_STAGE.frames) * 196 + 1 >= 25_000 > max(LONG_STAGE.frames) * 196 + 1
    assert EVENTS_STAGE.events == "up-to-max" and min(EVENTS_STAGE.frames) // 2 >= EVENTS_STAGE.max_events
    with pytest.raises(ValueError, match="stages"):
        stage_chain(base, [LONG_STAGE] * len(STAGES))


def test_a_checkpoint_that_continued_other_stages_is_refused(tmp_path):
    processor = TinyTestbedProcessor()
    short = dataclasses.replace(TINY, steps=1)
    path = tmp_path / "ck.pt"
    train_lora(build_tiny_testbed(seed=0), processor, short, checkpoint_path=path, log=lambda s: None, lineage="[1]")
    lines = []
    train_lora(build_tiny_testbed(seed=0), processor, short, checkpoint_path=path, log=lines.append, lineage="[1]")
    assert lines == ["resumed at step 1 of 1"]
    with pytest.raises(InvalidInputError, match="continued other training stages"):
        train_lora(build_tiny_testbed(seed=0), processor, short, checkpoint_path=path, log=lambda s: None,
                   lineage="[2]")


def test_without_the_video_gradient_the_loss_is_the_same_the_gradient_reaches_the_lora_and_it_learns():
    """video_gradient=False: the video runs once without autograd into a cache; only the text's positions train."""
    processor = TinyTestbedProcessor()
    model = build_tiny_testbed(seed=0)
    lora = train_lora(model, processor, dataclasses.replace(TINY, steps=3), log=lambda s: None)  # a LoRA that is not zero
    example = make_example(100_000, 4, processor, TINY)
    grads = {}
    for video_gradient in (True, False):
        model.train()
        loss = answer_loss(model, example, video_gradient)
        loss.backward()
        grads[video_gradient] = (float(loss.detach()), {n: p.grad.clone() for n, p in lora.named_parameters()})
        lora.zero_grad(set_to_none=True)
    model.eval()
    assert grads[False][0] == pytest.approx(grads[True][0], rel=1e-5)
    frozen, full = grads[False][1], grads[True][1]
    assert all(g.abs().sum() > 0 for g in frozen.values())  # every LoRA matrix still learns from the answer
    assert any(not torch.allclose(frozen[n], full[n], rtol=1e-3, atol=1e-7) for n in full)  # the video's path is cut

    held_out = [make_example(100_000 + i, 4, processor, TINY) for i in range(3)]
    fresh = build_tiny_testbed(seed=0)
    with torch.no_grad():
        before = sum(float(answer_loss(fresh, e)) for e in held_out)
    train_lora(fresh, processor, dataclasses.replace(TINY, steps=30, video_gradient=False), log=lambda s: None)
    with torch.no_grad():
        after = sum(float(answer_loss(fresh, e, video_gradient=False)) for e in held_out)
    assert after < 0.8 * before


def test_a_recipe_recomputing_activations_the_frozen_video_does_not_keep_is_refused():
    with pytest.raises(InvalidInputError, match="video_gradient"):
        dataclasses.replace(TINY, checkpoint_activations=True, video_gradient=False)
