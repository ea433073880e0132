"""A draft trained here, with the project's own datagen and trainer, drives long accepted paths.

A random draft is rejected almost at once, so the lossless tests with it never see the
verifier take a real draft's long accepts. Here a tiny target writes its responses to a
few prompts (:func:`run_datagen`), a tiny draft learns them (:func:`train_draft`, a few
seconds on a CPU), and decoding the prompts it trained on must give ``generate()``'s
tokens exactly while accepting long paths: a mean accepted length well above a random
draft's, which stays near 1.
"""

import pytest
import torch
from conftest import hf_greedy, prompt_inputs, tiny_model

from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.proposers import DraftProposer, TreeConfig
from sparrow_sd.testing.drafts import tiny_draft
from sparrow_sd.training.datagen import DatagenConfig, Sample, run_datagen
from sparrow_sd.training.shards import DataShards
from sparrow_sd.training.trainer import DraftTrainConfig, split_held_out, train_draft

ARCH = "qwen2_vl"
NEW_TOKENS = 32
TRAIN = DraftTrainConfig(epochs=20, lr=3e-3, warmup=5, grad_accum=1, mtp_steps=3, draft_vocab_size=None,
                         intermediate_size=128, eval_every=0, checkpoint_every=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, samples, trained draft, ids of the samples it trained on)."""
    model = tiny_model(ARCH)
    out = tmp_path_factory.mktemp("trained-draft")
    samples = [Sample(f"s{i}", prompt_inputs(model, ARCH, seed=i, frames=2)) for i in range(3)]
    run_datagen(model, samples, out / "data", DatagenConfig(max_new_tokens=NEW_TOKENS), progress=False)
    torch.manual_seed(0)
    draft = train_draft(model, out / "data", out / "draft", TRAIN, progress=False, log=lambda m: None)
    data = DataShards(out / "data")
    _, train_ids = split_held_out(len(data), TRAIN)
    return model, samples, draft, {data.ids[i] for i in train_ids}


@pytest.mark.parametrize("shape", [TreeConfig(depth=5, top_k=3, total_tokens=12), TreeConfig.chain(5)],
                         ids=["tree", "chain"])
def test_a_trained_draft_is_accepted_deep_and_stays_lossless(trained, shape):
    model, samples, draft, trained_on = trained
    taus, random_taus, longest = [], [], 0
    for i, sample in enumerate(samples):
        ref = hf_greedy(model, sample.inputs, NEW_TOKENS)
        result = SpeculativeGenerator(model, DraftProposer(draft, shape)).generate(sample.inputs,
                                                                                     max_new_tokens=NEW_TOKENS)
        assert result.tokens == ref  # held-out prompt included: lossless whatever the draft proposes
        if sample.id in trained_on:
            taus.append(result.stats.tau)
            longest = max(longest, max(result.stats.accepted_per_step))
            rand = SpeculativeGenerator(model, DraftProposer(tiny_draft(model, seed=i), shape))
            random_taus.append(rand.generate(sample.inputs, max_new_tokens=NEW_TOKENS).stats.tau)
    mean, random_mean = sum(taus) / len(taus), sum(random_taus) / len(random_taus)
    assert mean > 1.5 and mean > random_mean + 0.5, f"trained tau {taus}, random tau {random_taus}"
    assert longest >= 4, "some step should emit four tokens (three candidates accepted, and the bonus)"
