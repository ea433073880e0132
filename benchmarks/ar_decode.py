"""Plain decoding per token: Hugging Face ``generate`` (DynamicCache) vs our loop (preallocated cache).

Uses a random-weight model with the testbed target's shapes (Qwen2.5-0.5B text
stack inside LLaVA-OneVision, tiny vision tower): timing needs the shapes, not the
weights. Both runs decode the same prompt greedily; the script checks the tokens
match and prints per-token decode time, prefill excluded: for ``generate`` the
time from its first emitted token to its last, taken by a streamer.

    .venv/bin/python benchmarks/ar_decode.py --visual-tokens 1000 4000
"""

import argparse
import time

import torch
from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.testing import frames_for_tokens, make_video_inputs
from sparrow_sd.testing.shaped import testbed_shaped_model


class StepClock:
    """A ``generate`` streamer that only records when each token arrives."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visual-tokens", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()
    model = testbed_shaped_model()
    n = args.new_tokens
    print(f"threads={torch.get_num_threads()} new_tokens={n}")
    for visual in args.visual_tokens:
        frames = frames_for_tokens("llava_onevision", model.config, visual)
        inputs = make_video_inputs("llava_onevision", model, num_frames=frames, prompt_ids_before=[1, 2, 3],
                                   prompt_ids_after=list(range(10, 30)))
        prompt = inputs["input_ids"].shape[1]
        clock = StepClock()
        with torch.inference_mode():
            ref = model.generate(**inputs, do_sample=False, max_new_tokens=n, streamer=clock)[0, prompt:].tolist()
        # put() is called with the prompt, then once per new token: the first new token
        # arrives after the prefill, so decode time runs from it to the last.
        hf_per_token = (clock.times[-1] - clock.times[-n]) / (n - 1)
        ours = SpeculativeGenerator(model).generate(inputs, max_new_tokens=n)
        ours_per_token = ours.stats.decode_s / (n - 1)
        print(f"prompt {prompt:6d} tokens: HF generate {hf_per_token * 1000:7.1f} ms/token | "
              f"sparrow AR {ours_per_token * 1000:7.1f} ms/token | ratio {hf_per_token / ours_per_token:.2f}x | "
              f"identical: {ours.tokens == ref}")


if __name__ == "__main__":
    main()
