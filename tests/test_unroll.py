"""MTP unroll: training's level-k forward equals the inference tree path at depth k."""

import pytest
import torch
from conftest import tiny_model

from sparrow_sd.testing.drafts import tiny_draft
from sparrow_sd.training.unroll import unroll, unroll_mask


def test_unroll_mask_blocks():
    m = unroll_mask(5, 2)
    assert m.shape == (5, 15)
    # item 4 at level 2: committed items 0..2, level-1 item 3, level-2 item 4 (itself)
    assert m[4].nonzero().squeeze(-1).tolist() == [0, 1, 2, 5 + 3, 10 + 4]
    assert torch.equal(unroll_mask(4, 0), torch.ones(4, 4).tril().bool())


@pytest.mark.parametrize("committed", [3, 6])
def test_unroll_levels_equal_the_inference_chain(committed):
    """Commit items 0..c with target states, then grow a chain with the draft's own states,
    exactly as the proposer does: level k of the unroll must give the same outputs."""
    torch.manual_seed(0)
    draft = tiny_draft(tiny_model("qwen2_vl"), "none", window=None).float()
    n, size = committed + 4, draft.config.hidden_size
    embeds, hidden = torch.randn(n, size), torch.randn(n, size)
    levels = unroll(draft, embeds, hidden, steps=3)

    kv = draft.new_cache(64, "cpu", torch.float32)
    c = committed
    out, _ = draft(embeds[: c + 1], hidden[: c + 1], kv, kv.plan_extend(c + 1))
    assert torch.allclose(out, levels[0].hidden[: c + 1], atol=1e-5)
    parent = out[c : c + 1]
    for depth in (1, 2):
        ancestry = torch.ones(1, depth, dtype=torch.bool)  # the chain so far, then itself
        plan = kv.plan_tree(torch.tensor([depth]), ancestry)
        parent, logits = draft(embeds[c + depth : c + depth + 1], parent, kv, plan)
        assert torch.allclose(parent[0], levels[depth].hidden[c + depth], atol=1e-5)
        assert torch.allclose(logits[0], levels[depth].logits[c + depth], atol=1e-4)
    assert levels[2].valid.tolist() == [False, False] + [True] * (n - 2)


def test_unroll_feeds_the_drafts_own_states():
    """Level 1 must not read the target state of the previous item: change it, level 1 of that
    item's successor is unchanged except through the committed context it attends to."""
    torch.manual_seed(1)
    draft = tiny_draft(tiny_model("qwen2_vl"), "none", window=None).float()
    n, size = 6, draft.config.hidden_size
    embeds, hidden = torch.randn(n, size), torch.randn(n, size)
    a = unroll(draft, embeds, hidden, steps=2)
    changed = hidden.clone()
    changed[5] += 1.0  # the target state of the last item only
    b = unroll(draft, embeds, changed, steps=2)
    assert not torch.allclose(a[0].hidden[5], b[0].hidden[5])  # level 0 reads it
    assert torch.allclose(a[1].hidden[5], b[1].hidden[5])  # level 1 reads the draft's output for item 4 instead


@pytest.mark.parametrize("prompt_items", [2, 5])  # 2 fit in half the window (pinned), 5 do not
def test_training_applies_the_inference_window(prompt_items):
    """On a sequence three times longer than the draft's window, every unroll level gives the
    logits the proposer computes at inference: the committed sequence extended in chunks through
    the draft's KV cache, then a chain grown on the draft's own states."""
    window, n, steps = 6, 18, 3
    torch.manual_seed(2)
    draft = tiny_draft(tiny_model("qwen2_vl"), "none", window=window).float()
    size = draft.config.hidden_size
    embeds, hidden = torch.randn(n, size), torch.randn(n, size)
    levels = unroll(draft, embeds, hidden, steps=steps, prompt_items=prompt_items)
    unwindowed = unroll(tiny_draft(tiny_model("qwen2_vl"), "none", window=None).float(), embeds, hidden, steps=steps,
                        prompt_items=prompt_items)
    assert not torch.allclose(levels[0].logits[-1], unwindowed[0].logits[-1], atol=1e-3), "the window must matter"

    for committed in range(prompt_items + 1, n):
        kv = draft.new_cache(64, "cpu", torch.float32)
        kv.pin_prefix(prompt_items)
        done = 0
        for end in [prompt_items + 1, *range(prompt_items + 4, committed, 3), committed]:  # start, advances
            if end <= done:
                continue
            out, logits = draft(embeds[done:end], hidden[done:end], kv, kv.plan_extend(end - done))
            torch.testing.assert_close(logits, levels[0].logits[done:end], atol=1e-4, rtol=1e-4)
            done = end
        parent = out[-1:]
        for depth in range(1, min(steps, n - committed + 1)):
            item = committed - 1 + depth
            plan = kv.plan_tree(torch.tensor([depth]), torch.ones(1, depth, dtype=torch.bool))
            parent, logits = draft(embeds[item : item + 1], parent, kv, plan)
            torch.testing.assert_close(logits[0], levels[depth].logits[item], atol=1e-4, rtol=1e-4)


def test_unroll_mask_applies_the_window():
    m = unroll_mask(10, 1, window=4, pinned=1)
    # item 9 at level 1: committed items <= 8 within the window (9 - k < 3) or pinned (item 0), then itself
    assert m[9].nonzero().squeeze(-1).tolist() == [0, 7, 8, 10 + 9]
    assert torch.equal(unroll_mask(6, 2, window=None), unroll_mask(6, 2))


@pytest.mark.parametrize("window,first_item,steps", [(None, 9, 3), (6, 9, 3), (6, 12, 2), (None, 1, 3), (None, 0, 2)])
def test_later_steps_on_the_tail_only_are_exact_from_the_first_item(window, first_item, steps):
    """`first_item`: steps >= 1 skip the items no chain of a supervised item reaches; every output
    from `first_item` on equals the whole unroll's, and far fewer rows run (the full-visual draft's saving)."""
    torch.manual_seed(3)
    draft = tiny_draft(tiny_model("qwen2_vl"), "none", window=window).float()
    n, size = 16, draft.config.hidden_size
    embeds, hidden = torch.randn(n, size), torch.randn(n, size)
    whole = unroll(draft, embeds, hidden, steps=steps, prompt_items=4)
    tail = unroll(draft, embeds, hidden, steps=steps, prompt_items=4, first_item=first_item)
    items = torch.arange(first_item, n)
    for k, (a, b) in enumerate(zip(whole, tail)):
        assert b.start == (0 if k == 0 else max(0, first_item - (steps - 1)))
        assert b.logits.shape[0] == n - b.start
        torch.testing.assert_close(b.logits[b.rows(items)], a.logits[items], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.hidden[b.rows(items)], a.hidden[items], atol=1e-5, rtol=1e-5)
        assert torch.equal(b.valid[b.rows(items)], a.valid[items])
    if first_item > steps:  # a negative control: starting the later steps two items later (one more than
        # the margin the rule keeps) changes the last step's output for the first supervised item
        short = unroll(draft, embeds, hidden, steps=steps, prompt_items=4, first_item=first_item + 2)
        assert not torch.allclose(short[-1].logits[short[-1].rows(items)][0], whole[-1].logits[first_item], atol=1e-4)
