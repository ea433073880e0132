"""``sparrow bench``: every decoding method side by side over a visual-token sweep."""

from .methods import (
    Autoregressive,
    DraftMethod,
    HFGenerate,
    Method,
    MethodRun,
    PrefillNeeds,
    PromptLookup,
    SharedPrefill,
    share_prefill,
)
from .report import markdown_table, summarise, write_reports
from .sweep import LosslessnessError, SweepConfig, SweepResult, check_lossless, run_sweep

__all__ = [
    "Autoregressive",
    "DraftMethod",
    "HFGenerate",
    "LosslessnessError",
    "Method",
    "MethodRun",
    "PrefillNeeds",
    "PromptLookup",
    "SharedPrefill",
    "SweepConfig",
    "SweepResult",
    "check_lossless",
    "markdown_table",
    "run_sweep",
    "share_prefill",
    "summarise",
    "write_reports",
]
