"""Target verify cost against tree size, at a given context: picks the CPU (or GPU) tree size.

Random weights with the testbed target's shapes; one prefill per context length, then
one verify forward per tree size (median of a few). Prints ms per verify, the ratio to a
one-token step, and the largest tree within 1.5x of a one-token step.

    .venv/bin/python benchmarks/verify_cost.py --visual-tokens 1000 25000
"""

import argparse

import torch

from sparrow_sd.bench.tune import pick_tree_tokens, verify_cost_curve
from sparrow_sd.testing import frames_for_tokens, make_video_inputs
from sparrow_sd.testing.shaped import testbed_shaped_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visual-tokens", type=int, nargs="+", default=[1000, 25000])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--budget", type=float, default=1.5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = testbed_shaped_model().to(args.device)
    print(f"device={args.device} threads={torch.get_num_threads()}")
    for visual in args.visual_tokens:
        frames = frames_for_tokens("llava_onevision", model.config, visual)
        inputs = make_video_inputs("llava_onevision", model, num_frames=frames, prompt_ids_before=[1, 2, 3],
                                   prompt_ids_after=list(range(10, 30)))
        inputs = {k: v.to(args.device) for k, v in inputs.items()}
        costs = verify_cost_curve(model, inputs, args.nodes)
        base = costs[min(costs)]
        curve = "  ".join(f"{n}:{c * 1000:.1f}ms({c / base:.2f}x)" for n, c in costs.items())
        print(f"{inputs['input_ids'].shape[1]:6d} prompt tokens | {curve} | pick {pick_tree_tokens(costs, args.budget)}")


if __name__ == "__main__":
    main()
