"""Our warping must equal Hugging Face's, since losslessness is relative to it."""

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from sparrow_sd.errors import InvalidInputError
from sparrow_sd.sampling import SamplingConfig, target_probs, warp_logits


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5), (0.5, 0.05)])
def test_warping_matches_hf(temperature, top_p):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    ours = warp_logits(logits, SamplingConfig(temperature, top_p))
    theirs = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_p < 1:
        theirs = TopPLogitsWarper(top_p)(None, theirs)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    finite = ~torch.isinf(ours)
    torch.testing.assert_close(ours[finite], theirs[finite])
    assert torch.allclose(target_probs(logits, SamplingConfig(temperature, top_p)).sum(-1), torch.ones(4))


def test_bad_settings_are_refused():
    with pytest.raises(InvalidInputError, match="temperature"):
        SamplingConfig(-1.0)
    with pytest.raises(InvalidInputError, match="top_p"):
        SamplingConfig(1.0, 0.0)
