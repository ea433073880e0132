"""Does tree verification's TRANSFORMERS_SDPA_FORCE_GQA switch pay inside the whole model?

`benchmarks/attention_gqa.py` times one attention call; this times the engine's verify step
on a model of the testbed's class and shapes (random weights: attention costs the same), after
one prefill of a long video, with the switch on (what the engine does) and off, interleaved
twice. Each figure is the median of three verifies of a 1-node (one query: transformers takes
its own path either way) and an 8-node balanced tree (the benchmark's tree size).

    .venv/bin/python benchmarks/verify_gqa_switch.py --visual-tokens 12937
"""

import argparse
import contextlib
import time

import torch

import sparrow_sd.targets.base as target_base
from sparrow_sd.bench.tune import session_verify_costs
from sparrow_sd.targets import TargetSession, wrap_target
from sparrow_sd.testing import frames_for_tokens, make_video_inputs
from sparrow_sd.testing.shaped import testbed_shaped_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visual-tokens", type=int, default=12937)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = testbed_shaped_model()
    frames = frames_for_tokens("llava_onevision", model.config, args.visual_tokens)
    inputs = make_video_inputs("llava_onevision", model, num_frames=frames, prompt_ids_before=[1, 2, 3],
                               prompt_ids_after=list(range(10, 30)))
    switch_on = target_base.sdpa_native_gqa
    root = int(inputs["input_ids"][0, -1])
    start = time.perf_counter()
    with TargetSession(wrap_target(model), inputs, room=9) as session:
        print(f"{frames} frames, prefill {time.perf_counter() - start:.0f} s", flush=True)
        try:
            for name, switch in (("on", switch_on), ("off", contextlib.nullcontext)) * 2:
                target_base.sdpa_native_gqa = switch  # what verify() enters around its forward
                costs = session_verify_costs(session, root, (1, 8))
                row = "  ".join(f"{n} nodes {seconds * 1000:.0f} ms" for n, seconds in costs.items())
                print(f"{args.visual_tokens} visual tokens, switch {name}: {row}", flush=True)
        finally:
            target_base.sdpa_native_gqa = switch_on


if __name__ == "__main__":
    main()
