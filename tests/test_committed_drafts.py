"""The drafts shipped for the testbed: each loads against the committed target, decodes exactly what
`generate()` writes, and (a trained draft, not a random one) accepts several tokens a step."""

import json

import pytest
from conftest import require_language

from sparrow_sd.commands.demos import COMMITTED_DRAFTS, DEMO_PROMPT
from sparrow_sd.draft import load_draft
from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.proposers import DraftProposer, TreeConfig
from sparrow_sd.synth import bounded_num_events, make_clip
from sparrow_sd.testbed import load_testbed

SHIPPED = ("sparrow", "sparrow-text", "full", "pruned", "text-only")
pytestmark = pytest.mark.slow  # the real 0.5B target, end to end


@pytest.fixture(scope="module")
def committed():
    require_language()
    model, processor = load_testbed()
    clip = make_clip(400_123, num_frames=5, height=112, width=112, num_events=bounded_num_events(5))
    inputs = processor(DEMO_PROMPT, clip.frames)
    reference = model.generate(**inputs, max_new_tokens=32)[0, inputs["input_ids"].shape[1]:].tolist()
    return model, inputs, reference


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_draft_is_lossless_and_accepts_on_the_committed_target(committed, name):
    model, inputs, reference = committed
    folder = COMMITTED_DRAFTS / name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["weights_dtype"] == "bfloat16"
    draft = load_draft(folder)
    result = SpeculativeGenerator(model, DraftProposer(draft, TreeConfig(depth=5, top_k=1, total_tokens=5))).generate(
        inputs, max_new_tokens=32)
    assert result.tokens == reference
    assert result.stats.tau >= 2.0, f"{name}: tau {result.stats.tau:.2f} on a 1k-token clip (trained: about 4-4.5)"


MAX_SHIPPED_BYTES = 20_000_000  # the repository's bar for one committed file (20 MB)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_draft_stays_under_the_repositorys_20_mb_bar(name):
    """The packs ride in every clone and wheel; a draft over the bar needs a smaller MLP, not a split file."""
    folder = COMMITTED_DRAFTS / name
    sizes = {path.name: path.stat().st_size for path in folder.iterdir() if path.is_file()}
    assert sizes, f"{folder} holds no files"
    too_big = {file: size for file, size in sizes.items() if size > MAX_SHIPPED_BYTES}
    assert not too_big, f"{name}: {too_big} bytes (bar {MAX_SHIPPED_BYTES:,})"
