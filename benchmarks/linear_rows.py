"""One Qwen2.5-0.5B-shaped linear layer (896 -> 4864) on M rows: why tree size costs what it does on a CPU.

Prints microseconds per call for M = 1, 2, 3, 4, 8, 16 in fp32 and bf16 (2 threads).

    .venv/bin/python benchmarks/linear_rows.py
"""

import time

import torch


def main() -> None:
    torch.set_num_threads(2)
    for dtype in (torch.float32, torch.bfloat16):
        layer = torch.nn.Linear(896, 4864, bias=False).to(dtype)
        cells = []
        for rows in (1, 2, 3, 4, 8, 16):
            x = torch.randn(1, rows, 896, dtype=dtype)
            with torch.inference_mode():
                for _ in range(20):
                    layer(x)
                start = time.perf_counter()
                for _ in range(300):
                    layer(x)
            cells.append(f"M={rows}: {(time.perf_counter() - start) / 300 * 1e6:.0f} us")
        print(f"{str(dtype):15s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
