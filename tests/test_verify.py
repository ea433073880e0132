"""Verification rules on hand-built trees, and the exactness of tree rejection sampling."""

import numpy as np
import torch
from scipy.stats import chisquare

from sparrow_sd.verify import verify_greedy, verify_sampling

TOKENS = torch.tensor([0, 3, 4, 5, 6, 7])
PARENTS = torch.tensor([-1, 0, 0, 1, 1, 3])  # 0 -> {1:3, 2:4}; 1 -> {3:5, 4:6}; 3 -> {5:7}
V = 10


def logits_choosing(choices):
    out = torch.zeros(len(choices), V)
    for i, c in enumerate(choices):
        out[i, c] = 5.0
    return out


def test_greedy_follows_argmax_and_returns_bonus():
    # root picks 3 (node 1), node 1 picks 5 (node 3), node 3 picks 7 (node 5), node 5 picks 9 (bonus)
    path, bonus = verify_greedy(TOKENS, PARENTS, logits_choosing([3, 5, 0, 7, 0, 9]))
    assert path == [1, 3, 5] and bonus == 9
    # root wants 4 (node 2), node 2 wants 8: no child -> bonus 8
    path, bonus = verify_greedy(TOKENS, PARENTS, logits_choosing([4, 0, 8, 0, 0, 0]))
    assert path == [2] and bonus == 8
    # root wants a token no child has
    path, bonus = verify_greedy(TOKENS, PARENTS, logits_choosing([1, 0, 0, 0, 0, 0]))
    assert path == [] and bonus == 1


def sample_first_two(probs, draws, sampler, seed=0):
    """Empirical joint distribution of the first two emitted tokens."""
    gen = torch.Generator().manual_seed(seed)
    counts = np.zeros((V, V))
    for _ in range(draws):
        path, bonus = sampler(TOKENS, PARENTS, probs, gen)
        emitted = TOKENS[path].tolist() + [bonus]
        if len(emitted) >= 2:
            counts[emitted[0], emitted[1]] += 1
        else:  # the second token comes from the next step, which starts fresh from the target
            counts[emitted[0], int(torch.multinomial(NEXT_AFTER_BONUS[emitted[0]], 1, generator=gen))] += 1
    return counts


# The target's distribution after the first token, if that token is not in the tree (a stand-in
# for the next verification step, which starts fresh from the target).
NEXT_AFTER_BONUS = torch.softmax(torch.randn(V, V, generator=torch.Generator().manual_seed(9)), -1)


def exact_joint(probs):
    """P(t1, t2) under the target: t1 ~ probs[root]; t2 ~ the node for t1, or the stand-in."""
    node_of = {3: 1, 4: 2}  # children of the root by token
    joint = np.zeros((V, V))
    for t1 in range(V):
        nxt = probs[node_of[t1]] if t1 in node_of else NEXT_AFTER_BONUS[t1]
        joint[t1] = probs[0][t1].item() * nxt.numpy()
    return joint


def chi2_pvalue(counts, probs):
    expected = exact_joint(probs) * counts.sum()
    keep = expected.flatten() >= 5
    obs = np.append(counts.flatten()[keep], counts.flatten()[~keep].sum())
    exp = np.append(expected.flatten()[keep], expected.flatten()[~keep].sum())
    exp *= obs.sum() / exp.sum()  # float32 probabilities: renormalise exactly
    return chisquare(obs, exp).pvalue


PROBS = torch.softmax(torch.randn(6, V, generator=torch.Generator().manual_seed(3)) * 1.5, -1)
PROBS[0, 3] += 0.3  # make the root's children likely enough to be accepted often
PROBS[0] /= PROBS[0].sum()


def test_rejection_sampling_is_exact():
    counts = sample_first_two(PROBS, 20000, verify_sampling)
    assert chi2_pvalue(counts, PROBS) > 1e-3  # fixed seed: deterministic; the tolerance is alpha = 0.001


def test_the_exactness_test_catches_a_biased_verifier():
    """The check above has power: a verifier that trusts the draft too much fails it."""

    def accept_first_child_half_the_time(tokens, parents, probs, gen):
        path, bonus = verify_sampling(tokens, parents, probs, gen)
        if not path and torch.rand((), generator=gen) < 0.5:
            return [1], int(torch.multinomial(probs[1], 1, generator=gen))
        return path, bonus

    counts = sample_first_two(PROBS, 20000, accept_first_child_half_the_time)
    assert chi2_pvalue(counts, PROBS) < 1e-6
