"""Why tree verification sets TRANSFORMERS_SDPA_FORCE_GQA: one attention call, two ways.

Shapes of the testbed target (Qwen2.5-0.5B: 14 query heads, 2 key/value heads,
head dim 64) verifying a 9-node tree over a long cache. ``repeat`` is what
transformers does with a custom mask and several queries; ``native`` is SDPA's
own grouped-query attention on the same strided cache view.

    .venv/bin/python benchmarks/attention_gqa.py --context 25000
"""

import argparse
import time

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=25000)
    parser.add_argument("--nodes", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    n, length = args.nodes, args.context
    q = torch.randn(1, 14, n, 64)
    k = torch.randn(1, 2, length + 256, 64)[:, :, :length]  # a view into a preallocated buffer
    v = torch.randn(1, 2, length + 256, 64)[:, :, :length]
    mask = torch.ones(1, 1, n, length, dtype=torch.bool)

    def repeat():
        rk = k[:, :, None].expand(1, 2, 7, length, 64).reshape(1, 14, length, 64)
        rv = v[:, :, None].expand(1, 2, 7, length, 64).reshape(1, 14, length, 64)
        return F.scaled_dot_product_attention(q, rk, rv, attn_mask=mask)

    def native():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    torch.testing.assert_close(repeat(), native())
    for name, fn in (("repeat_kv", repeat), ("native gqa", native)):
        for _ in range(3):
            fn()
        start = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        print(f"{name:>10}: {(time.perf_counter() - start) / args.repeats * 1000:.1f} ms per call "
              f"({n} queries, {length} cached tokens, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
