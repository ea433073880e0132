"""Our warping must equal Hugging Face's, since losslessness is relative to it."""

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from sparrow_sd.errors import InvalidInputError
from sparrow_sd.sampling import SamplingConfig, prefix_mask, process_logits, target_probs, warp_logits
from sparrow_sd.tree import tree_attention_mask


@pytest.mark.parametrize("temperature,top_p,top_k,min_p", [
    (1.0, 1.0, 0, None), (0.7, 0.9, 0, None), (1.3, 0.5, 0, None), (0.5, 0.05, 0, None),
    (1.0, 1.0, 5, None), (0.8, 0.9, 20, 0.1), (1.5, 1.0, 0, 0.3), (1.0, 1.0, 50, None),
])
def test_warping_matches_hf(temperature, top_p, top_k, min_p):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    config = SamplingConfig(temperature, top_p, top_k, min_p)
    ours = warp_logits(logits, config)
    theirs = hf_processors(config)(None, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    finite = ~torch.isinf(ours)
    torch.testing.assert_close(ours[finite], theirs[finite])
    assert torch.allclose(target_probs(logits, SamplingConfig(temperature, top_p)).sum(-1), torch.ones(4))


def test_bad_settings_are_refused():
    with pytest.raises(InvalidInputError, match="temperature"):
        SamplingConfig(-1.0)
    with pytest.raises(InvalidInputError, match="top_p"):
        SamplingConfig(1.0, 0.0)


def hf_processors(config: SamplingConfig) -> LogitsProcessorList:
    """Hugging Face's processors for ``config``, in the order its generate() builds them."""
    procs = [RepetitionPenaltyLogitsProcessor(config.repetition_penalty)] if config.penalised else []
    if not config.greedy:
        procs.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k:
            procs.append(TopKLogitsWarper(config.top_k))
        if config.top_p < 1:
            procs.append(TopPLogitsWarper(config.top_p))
        if config.min_p is not None:
            procs.append(MinPLogitsWarper(config.min_p))
    return LogitsProcessorList(procs)


@pytest.mark.parametrize("config", [
    SamplingConfig(0.8, 0.9, 10, 0.05, 1.3), SamplingConfig(1.2, 1.0, 3), SamplingConfig(0.7, min_p=0.2),
    SamplingConfig(repetition_penalty=1.3), SamplingConfig(repetition_penalty=0.6),
], ids=["all", "top-k", "min-p", "greedy-penalty", "greedy-penalty-below-1"])
def test_tree_nodes_are_processed_over_their_own_prefix_as_hf_does(config):
    """Each node's scores are Hugging Face's processors applied after that node's own prefix:
    the prompt and the emitted tokens (the root last), then its ancestors and itself."""
    V = 40
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(1)) * 3
    tokens = torch.tensor([7, 3, 7, 9, 3, 12])  # tokens repeat along paths and across branches
    parents = torch.tensor([-1, 0, 0, 1, 3, 2])
    history = [1, 2, 7, 5, 7]  # prompt + emitted, ending with the root's token
    seen = torch.zeros(V, dtype=torch.bool)
    seen[history] = True
    ours = process_logits(logits, config, prefix_mask(seen, tokens, tree_attention_mask(parents)))
    for node in range(6):
        path, n = [], node
        while n > 0:
            path.insert(0, int(tokens[n]))
            n = int(parents[n])
        theirs = hf_processors(config)(torch.tensor([history + path]), logits[node : node + 1].clone())[0]
        assert torch.equal(torch.isinf(ours[node]), torch.isinf(theirs))
        finite = ~torch.isinf(theirs)
        torch.testing.assert_close(ours[node][finite], theirs[finite], rtol=0, atol=0)
