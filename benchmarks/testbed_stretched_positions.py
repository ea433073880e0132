"""Is the testbed's 25k failure the positional distance, or the filler tokens in between?

Describes short clips (default 16 frames, 8 events: a 25k video's event count) twice with
the committed testbed and its generation config, on the engine:

- ``own``: at their own positions (3,137 visual tokens);
- ``gapN``: each frame's 196 tokens start N x 196 positions after the previous frame's, as if
  N-1 filler frames stood between each pair (N=8: 128 frame slots, the 25k video's span), with
  no filler tokens there. The text after the video continues from the last frame.

Same clips, weights and decoding; only the position ids differ (the engine's adapter takes
explicit positions). Results: docs/testbed.md, "Probes at 25k".

    .venv/bin/python benchmarks/testbed_stretched_positions.py --clips 4 --gap 8
"""

import argparse
import time

import torch

from sparrow_sd.synth import make_clip
from sparrow_sd.targets import wrap_target
from sparrow_sd.testbed import load_testbed
from sparrow_sd.testbed.evaluate import describe
from sparrow_sd.testbed.metrics import event_recall, grounding
from sparrow_sd.testbed.training import EVAL_SEED_BASE


def stretched_positions(input_ids: torch.Tensor, video_token_id: int, per_frame: int, frames: int, gap: int):
    """(positions (1, L), offset of later positions): frame f's tokens from ``start + f * per_frame * gap``."""
    ids = input_ids[0]
    video = (ids == video_token_id).nonzero()[:, 0]
    start, count = int(video[0]), len(video)
    if count != frames * per_frame + 1 or int(video[-1]) != start + count - 1:
        raise ValueError("expected one contiguous video of frames x per_frame tokens plus its newline")
    positions = torch.arange(len(ids))
    k = torch.arange(count)
    frame = torch.clamp(k // per_frame, max=frames - 1)  # the closing newline follows the last frame
    positions[start:start + count] = start + frame * per_frame * gap + (k - frame * per_frame)
    after = start + count
    positions[after:] = positions[after - 1] + 1 + torch.arange(len(ids) - after)
    return positions[None], int(positions[-1]) - (len(ids) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="committed")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--events", type=int, default=8)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--gap", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, processor = load_testbed(args.weights, dtype=torch.float32)
    per_frame = (processor.num_video_tokens(args.frames) - 1) // args.frames
    for mode in ("own", f"gap{args.gap}"):
        target = wrap_target(model)
        if mode != "own":
            target.prompt_positions = lambda inputs: stretched_positions(
                inputs["input_ids"], processor.video_token_id, per_frame, args.frames, args.gap)
        recalls = []
        for i in range(args.clips):
            seed = EVAL_SEED_BASE + i
            clip = make_clip(seed, num_frames=args.frames, height=112, width=112, num_events=args.events)
            began = time.time()
            text = processor.decode(describe(target, processor, clip.frames, 320).tokens)
            recalls.append(event_recall(text, clip.scene))
            print(f"{mode} seed {seed} recall {recalls[-1]:.2f} grounding {grounding(text, clip.scene)} "
                  f"({time.time() - began:.0f}s): {text}", flush=True)
        print(f"== {mode}: {args.frames} frames, {args.events} events, mean recall "
              f"{sum(recalls) / len(recalls):.3f}", flush=True)


if __name__ == "__main__":
    main()
