"""The description metrics against SynthVideo's ground truth, and the evaluation harness on the tiny testbed."""

import math

import pytest

from sparrow_sd.synth import make_clip
from sparrow_sd.testbed.evaluate import EvalConfig, LengthReport, bar_checks, describe, evaluate_length, format_table
from sparrow_sd.testbed.metrics import (
    distinct_4grams,
    event_recall,
    grounding,
    mentions,
    names_any_object,
    top_token_share,
)
from sparrow_sd.testing.tiny_testbed import TinyTestbedProcessor, build_tiny_testbed


def test_reference_descriptions_score_full_marks():
    for seed in range(100_000, 100_060):
        clip = make_clip(seed, num_frames=[5, 16, 40][seed % 3])
        assert grounding(clip.description, clip.scene) == 1.0
        assert event_recall(clip.description, clip.scene) in (None, 1.0)
        assert names_any_object(clip.description)


def test_wrong_descriptions_score_low():
    clip = make_clip(100_003, num_frames=16, num_events=3)
    other = make_clip(100_004, num_frames=16, num_events=3)
    assert event_recall("The video shows a dark background. Nothing happens at all.", clip.scene) == 0.0
    present = mentions(clip.description)[0]
    absent = next((c, s) for c in ("red", "blue", "green", "white") for s in ("square", "cross", "circle")
                  if (c, s) not in {m for m in mentions(clip.description)} and
                  all(not (o.shape == s) for o in clip.scene.objects))
    text = f"A {present[0]} {present[1]} sits still. A {absent[0]} large {absent[1]} appears."
    assert grounding(text, clip.scene) == 0.5
    assert grounding("Nothing to see.", clip.scene) is None
    assert event_recall(other.description, clip.scene) < 1.0


def test_event_recall_needs_the_right_direction_and_colour():
    clip = next(c for c in (make_clip(s, num_frames=16, num_events=1) for s in range(200)) if c.events[0].kind == "move")
    event = clip.events[0]
    shape = clip.scene.objects[event.objects[0]].shape
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[event.direction]
    assert event_recall(f"The {shape} moves {event.direction}.", clip.scene) == 1.0
    assert event_recall(f"The {shape} moves {opposite}wards.", clip.scene) == 0.0


def test_repetition_measures():
    assert top_token_share([1, 1, 1, 2]) == 0.75 and top_token_share([]) == 0.0
    assert distinct_4grams([1, 2, 3, 4, 5]) == 1.0
    assert distinct_4grams([7] * 10) == 1 / 7
    assert not names_any_object("An empty dark screen, nothing appears.")


def test_evaluation_runs_end_to_end_on_the_tiny_testbed():
    model, processor = build_tiny_testbed(seed=0), TinyTestbedProcessor()
    config = EvalConfig(lengths=(100,), clips=(2,), max_new_tokens=6)
    lines = []
    report = evaluate_length(model, processor, 100, 2, config, log=lines.append)
    assert report.frames == 4 and report.visual_tokens == 101 and report.clips == 2
    assert len(report.samples) == 2 and all(s["tokens"] <= 6 for s in report.samples)
    assert report.median_tokens <= 6 and report.seconds >= 0 and report.prefill_s > 0
    assert report.decode_ms_per_token > 0
    assert any(line.startswith("  blank video:") for line in lines)
    table = format_table([report])
    assert "| median description tokens | 60-300 |" in table and "(missed)" in table  # 6 tokens < 60
    assert [s["events"] for s in report.samples] == [2, 2]  # the length's own count at 4 frames


def test_an_events_probe_gives_every_clip_that_many_events():
    model, processor = build_tiny_testbed(seed=0), TinyTestbedProcessor()
    config = EvalConfig(lengths=(100,), clips=(2,), max_new_tokens=2, events=3)
    report = evaluate_length(model, processor, 100, 2, config)
    assert [s["events"] for s in report.samples] == [3, 3]
    with pytest.raises(ValueError, match="at least 1"):
        EvalConfig(events=0)


def test_a_penalty_probe_decodes_as_generate_does_with_that_penalty():
    """--repetition-penalty: each description is Hugging Face's greedy generate() under that penalty."""
    model, processor = build_tiny_testbed(seed=0), TinyTestbedProcessor()
    frames = make_clip(7, num_frames=4, height=40, width=40, num_events=1).frames
    inputs = processor(processor.config.describe_prompt, frames)
    texts = {}
    for penalty in (1.0, 0.2):  # below 1 it favours the tokens seen: the texts must part
        ours = describe(model, processor, frames, 12, repetition_penalty=penalty).tokens
        theirs = model.generate(**inputs, max_new_tokens=12, do_sample=False,
                                repetition_penalty=penalty)[0, inputs["input_ids"].shape[1]:].tolist()
        assert ours == [t for t in theirs if t not in (processor.eos_token_id, processor.pad_token_id)]
        texts[penalty] = ours
    assert texts[1.0] != texts[0.2]  # the probe's setting reached the decoding
    with pytest.raises(ValueError, match="> 0"):
        EvalConfig(repetition_penalty=0.0)


def test_bars():
    good = LengthReport(visual_tokens=981, frames=5, clips=8, median_tokens=90, top_token_share=0.12,
                        distinct_4grams=0.95, grounding_own=0.97, grounding_other=0.1, blank_names_object=False,
                        event_recall=0.7, seconds=1.0)
    assert all(check[3] for check in bar_checks(good))
    long = LengthReport(**{**good.__dict__, "visual_tokens": 25089, "event_recall": 0.55})
    assert all(check[3] for check in bar_checks(long))
    short_miss = LengthReport(**{**good.__dict__, "event_recall": 0.55})
    assert [c[0] for c in bar_checks(short_miss) if not c[3]] == ["event recall"]
    assert not math.isnan(good.grounding_own)
