import pytest
import torch

from sparrow_sd.tree import (
    DraftTree,
    TreeBuilder,
    children_lists,
    root_to_leaf_paths,
    tree_attention_mask,
    tree_depths,
    tree_position_ids,
)

#        0
#      /   \
#     1     2
#    / \     \
#   3   4     5
#   |
#   6
PARENTS = torch.tensor([-1, 0, 0, 1, 1, 2, 3])


def test_depths_children_paths():
    assert tree_depths(PARENTS).tolist() == [0, 1, 1, 2, 2, 2, 3]
    assert children_lists(PARENTS) == [[1, 2], [3, 4], [5], [6], [], [], []]
    assert sorted(root_to_leaf_paths(PARENTS)) == sorted([[0, 1, 3, 6], [0, 1, 4], [0, 2, 5]])


def test_mask_is_ancestors_and_self():
    mask = tree_attention_mask(PARENTS)
    expected = {0: {0}, 1: {0, 1}, 2: {0, 2}, 3: {0, 1, 3}, 4: {0, 1, 4}, 5: {0, 2, 5}, 6: {0, 1, 3, 6}}
    for row, cols in expected.items():
        assert set(mask[row].nonzero().flatten().tolist()) == cols


def test_positions_plain_and_mrope():
    depths = tree_depths(PARENTS)
    plain = tree_position_ids(depths, start=10)
    assert plain.shape == (1, 7) and plain[0].tolist() == [10, 11, 11, 12, 12, 12, 13]
    mrope = tree_position_ids(depths, start=10, offset=-4, mrope=True)
    assert mrope.shape == (3, 1, 7)
    assert all(mrope[i, 0].tolist() == [6, 7, 7, 8, 8, 8, 9] for i in range(3))


def test_invalid_parent_order_is_refused():
    with pytest.raises(ValueError, match="parents must come before"):
        tree_depths(torch.tensor([-1, 2, 0]))
    with pytest.raises(ValueError, match="root"):
        tree_attention_mask(torch.tensor([0, 0]))


def test_builder_keeps_best_connected_subtree():
    b = TreeBuilder(root_token=99, top_k=2, total_tokens=4)
    logp = torch.log(torch.tensor([[0.6, 0.3]]))
    frontier = b.expand([0], torch.tensor([[10, 11]]), logp)
    assert frontier == [1, 2]
    # children of 10 (score .6): .5,.4 -> .30,.24; children of 11 (.3): .9,.05 -> .27,.015
    frontier = b.expand(frontier, torch.tensor([[20, 21], [30, 31]]), torch.log(torch.tensor([[0.5, 0.4], [0.9, 0.05]])))
    assert [b.tokens[i] for i in frontier] == [20, 30]  # best two by cumulative probability
    tree = b.finish()
    # kept: 10 (.6), 11 (.3), 20 (.30), 30 (.27); 21 (.24) is cut
    assert tree.tokens.tolist() == [99, 10, 11, 20, 30]
    assert tree.parents.tolist() == [-1, 0, 0, 1, 2]


def test_builder_chain_and_ties_stay_connected():
    b = TreeBuilder(root_token=1, top_k=1, total_tokens=3)
    f = b.expand([0], torch.tensor([[5]]), torch.zeros(1, 1))  # probability 1: ties with the root
    f = b.expand(f, torch.tensor([[6]]), torch.zeros(1, 1))
    f = b.expand(f, torch.tensor([[7]]), torch.zeros(1, 1))
    tree = b.finish()
    assert tree.tokens.tolist() == [1, 5, 6, 7] and tree.parents.tolist() == [-1, 0, 1, 2]


def test_root_only_tree():
    t = DraftTree.root_only(42)
    assert len(t) == 1 and t.mask.tolist() == [[True]] and t.depths.tolist() == [0]
