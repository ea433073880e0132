import functools
import signal

import pytest
import torch

from sparrow_sd.testing import build_tiny_model, make_video_inputs

torch.set_num_threads(2)


def _os_ignored(signals) -> set:
    """The signals of ``signals`` whose OS-level disposition is SIG_IGN (Linux: /proc), whatever
    Python's own table says (C code can change a disposition behind it)."""
    try:
        with open("/proc/self/status") as status:
            bits = int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)
    except (OSError, StopIteration):
        return set()
    return {sig for sig in signals if bits >> (sig - 1) & 1}


@pytest.fixture(autouse=True)
def _signal_handling_restored():
    """A test (or the code it runs) that leaves its own SIGINT/SIGTERM handler behind, or those
    signals blocked in the main thread (a mask that child processes inherit), fails here, at
    the test that leaked it, instead of swallowing a later test's Ctrl-C."""
    stops = {signal.SIGINT, signal.SIGTERM}
    before = {sig: signal.getsignal(sig) for sig in stops}
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    ignored_before = _os_ignored(stops)
    yield
    ignored = sorted(signal.Signals(sig).name for sig in _os_ignored(stops) - ignored_before)
    assert not ignored, f"signals ignored at the OS level after this test: {ignored}"
    after = {sig: signal.getsignal(sig) for sig in before}
    mask_after = signal.pthread_sigmask(signal.SIG_SETMASK, mask_before)
    for sig, handler in before.items():
        signal.signal(sig, handler)
    leaked = {signal.Signals(sig).name: after[sig] for sig in before if after[sig] is not before[sig]}
    assert not leaked, f"signal handlers left behind: {leaked}"
    blocked = sorted(signal.Signals(sig).name for sig in (mask_after - mask_before) & stops)
    assert not blocked, f"signals left blocked in the main thread: {blocked}"


@functools.lru_cache(maxsize=None)
def tiny_model(arch: str, seed: int = 0, vocab_size: int = 128):
    return build_tiny_model(arch, seed=seed, vocab_size=vocab_size)


def prompt_inputs(model, arch: str, seed: int, frames: int = 4, before: int = 5, after: int = 6):
    """A video prompt with random ordinary text around the video block."""
    spec = model.tiny_spec
    g = torch.Generator().manual_seed(seed)
    hi = spec.text_token_range.stop
    pre = torch.randint(0, hi, (before,), generator=g).tolist()
    post = torch.randint(0, hi, (after,), generator=g).tolist()
    return make_video_inputs(arch, model, num_frames=frames, prompt_ids_before=pre, prompt_ids_after=post, seed=seed)


def appended(inputs, tokens) -> dict:
    """The prompt with ``tokens`` (1-D) appended as text, every per-token input extended."""
    tokens = torch.as_tensor(tokens, dtype=inputs["input_ids"].dtype)
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], tokens[None]], dim=1)
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    if inputs.get("mm_token_type_ids") is not None:
        out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(tokens)[None]], dim=1)
    return out


def hf_greedy(model, inputs, max_new_tokens: int, eos_token_id=None) -> list[int]:
    kwargs = {} if eos_token_id is None else {"eos_token_id": eos_token_id}
    out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, **kwargs)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def assert_every_path_matches(model, inputs, ref: list[int], max_new_tokens: int, *, oracle_depth: int,
                              min_tau: float, tree, oracle_seed: int, draft_seed: int = 1) -> None:
    """The engine emits ``ref`` on each decoding path: plain, an oracle accepted deep (its tau above
    ``min_tau``), and a random tiny draft's ``tree``."""
    from sparrow_sd.generate import SpeculativeGenerator
    from sparrow_sd.proposers import DraftProposer
    from sparrow_sd.testing.drafts import tiny_draft
    from sparrow_sd.testing.oracle import OracleProposer

    assert SpeculativeGenerator(model).generate(inputs, max_new_tokens=max_new_tokens).tokens == ref
    oracle = OracleProposer(ref, depth=oracle_depth, branching=2, error_rate=0.2, vocab_size=120, seed=oracle_seed)
    result = SpeculativeGenerator(model, oracle).generate(inputs, max_new_tokens=max_new_tokens)
    assert result.tokens == ref and result.stats.tau > min_tau
    proposer = DraftProposer(tiny_draft(model, seed=draft_seed), tree)
    assert SpeculativeGenerator(model, proposer).generate(inputs, max_new_tokens=max_new_tokens).tokens == ref


def require_language():
    """Skip when the converted Qwen2.5-Coder weights are absent (``make test`` fetches them, so CI has them)."""
    from sparrow_sd.errors import AssetError
    from sparrow_sd.testbed.assets import language_dir

    try:
        language_dir()
    except AssetError as exc:
        pytest.skip(f"testbed language weights absent (run `make assets`): {exc}")


@pytest.fixture(params=["qwen2_vl", "qwen2_5_vl", "llava_onevision"])
def arch(request):
    return request.param
