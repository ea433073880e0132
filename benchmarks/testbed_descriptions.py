"""What a testbed target writes for the detailed-description prompt, and how much of it the video decides.

The drafts are trained and benchmarked on these descriptions, so before trusting a
tau figure we want to know, at each clip length:

- how long the descriptions are (the paper's captioning tasks run 60-300 tokens);
- whether they stay text (the share of the most frequent token; a collapse into one
  repeated token shows up as a share near 1);
- whether they differ from clip to clip (distinct descriptions out of N);
- whether their colour and shape words come from *this* clip: the share of the
  colour and shape words mentioned that name something in the clip, against the same
  share scored on another clip's objects (a description that ignores the video scores
  the same on both).

    .venv/bin/python benchmarks/testbed_descriptions.py --model testbed:runs/tb/testbed_vision.safetensors \
        --frames 6 154 --clips 8
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter

import torch

from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.models import load_target
from sparrow_sd.synth import COLOURS, SHAPES, make_clip

SEED_BASE = 400_000  # held out: below the training seeds, apart from the eval and bench seeds
DESCRIBE = "Describe the video in detail."


def clip_words(clip) -> set[str]:
    """Every colour an object takes and every shape, anywhere in the clip."""
    scene = clip.scene
    colours = {COLOURS[c] for c in scene.colour.reshape(-1) if c >= 0}
    return colours | {obj.shape for obj in scene.objects}


def mentioned(text: str) -> list[str]:
    words = re.findall(r"[a-z]+", text.lower())
    vocab = set(COLOURS) | set(SHAPES)
    return [w for w in words if w in vocab]


def precision(words: list[str], truth: set[str]) -> float | None:
    return None if not words else sum(w in truth for w in words) / len(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, nargs="+", default=[6, 154])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--show", type=int, default=2, help="descriptions to print per length")
    parser.add_argument("--out", default=None, help="JSON file for the figures and the texts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_target(args.model)
    generator = SpeculativeGenerator(loaded.model)
    report = {"model": args.model, "lengths": {}}
    for frames in args.frames:
        clips = [make_clip(SEED_BASE + i, num_frames=frames, height=144, width=144, num_events=3)
                 for i in range(args.clips)]
        rows = []
        for i, clip in enumerate(clips):
            start = time.perf_counter()
            result = generator.generate(loaded.make_inputs(DESCRIBE, clip.frames), max_new_tokens=args.max_new_tokens)
            text = loaded.decode(result.tokens)
            words = mentioned(text)
            other = clips[(i + 1) % len(clips)]
            top_share = Counter(result.tokens).most_common(1)[0][1] / len(result.tokens)
            rows.append({"clip": i, "tokens": len(result.tokens), "top_token_share": round(top_share, 3),
                         "precision": precision(words, clip_words(clip)),
                         "precision_other_clip": precision(words, clip_words(other)),
                         "seconds": round(time.perf_counter() - start, 1), "text": text})
            print(f"{frames} frames, clip {i}: {len(result.tokens)} tokens, {rows[-1]['seconds']} s", flush=True)
            if i < args.show:
                print(f"--- {text}", flush=True)
        scored = [r for r in rows if r["precision"] is not None]
        mean = (lambda key: round(sum(r[key] for r in scored) / len(scored), 3) if scored else None)
        summary = {
            "visual_tokens": int((loaded.make_inputs(DESCRIBE, clips[0].frames)["input_ids"]
                                  == loaded.model.config.video_token_id).sum()),
            "mean_tokens": round(sum(r["tokens"] for r in rows) / len(rows), 1),
            "min_tokens": min(r["tokens"] for r in rows), "max_tokens": max(r["tokens"] for r in rows),
            "max_top_token_share": max(r["top_token_share"] for r in rows),
            "distinct": len({r["text"] for r in rows}), "clips": len(rows),
            "colour_shape_precision": mean("precision"),
            "colour_shape_precision_other_clip": mean("precision_other_clip"),
        }
        report["lengths"][frames] = {"summary": summary, "rows": rows}
        print(json.dumps({"frames": frames, **summary}), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
