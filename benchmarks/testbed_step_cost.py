"""What one testbed training step costs with and without the video's gradient, at one clip length.

`sparrow testbed build`'s long stages train through the whole video (activations recomputed
in the backward pass, as LONG_STAGE does); ``TrainConfig(video_gradient=False)`` runs the video
once without autograd into a cache and trains on the answer's positions only. Both run the same
example with a fresh rank-16 LoRA on the upper 12 layers over the committed weights, in the
dtype the build would use on this CPU; the loss must agree, the time is the point.

    .venv/bin/python benchmarks/testbed_step_cost.py --frames 40
"""

import argparse
import time

import torch

from sparrow_sd.precision import fast_autocast
from sparrow_sd.testbed import load_testbed
from sparrow_sd.testbed.lora import LoRA
from sparrow_sd.testbed.training import LONG_STAGE, TRAIN_SEED_BASE, answer_loss, make_example, recompute_activations


def timed_step(model, lora: LoRA, example, video_gradient: bool) -> tuple[float, float]:
    """(loss, seconds) of one forward and backward; the gradients are dropped after."""
    start = time.perf_counter()
    with fast_autocast("cpu"):
        loss = answer_loss(model, example, video_gradient)
    loss.backward()
    seconds = time.perf_counter() - start
    lora.zero_grad(set_to_none=True)
    return float(loss.detach()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_testbed()
    for param in model.parameters():
        param.requires_grad_(False)
    lora = LoRA(model, rank=LONG_STAGE.rank, alpha=LONG_STAGE.alpha, targets=LONG_STAGE.targets,
                first_layer=LONG_STAGE.first_layer).attach()
    for param in lora.parameters():
        param.requires_grad_(True)
    example = make_example(TRAIN_SEED_BASE + 999, args.frames, processor, LONG_STAGE)
    tokens = len(example.prompt_ids) + len(example.answer_ids)
    model.train()
    recompute_activations(model, True)  # as the long stages train
    full = timed_step(model, lora, example, video_gradient=True)
    recompute_activations(model, False)
    frozen = timed_step(model, lora, example, video_gradient=False)
    print(f"{args.frames} frames, {tokens} tokens ({len(example.answer_ids)} answer):")
    print(f"  whole video, activations recomputed: {full[1]:7.1f} s  loss {full[0]:.4f}")
    print(f"  video without gradient:              {frozen[1]:7.1f} s  loss {frozen[0]:.4f}")
    print(f"  ratio {full[1] / frozen[1]:.2f}x")


if __name__ == "__main__":
    main()
