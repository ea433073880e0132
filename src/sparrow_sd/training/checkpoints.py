"""Stopping and resuming draft training: checkpoints, and SIGINT / SIGTERM handled between steps.

SIGINT (Ctrl-C) or SIGTERM during training finishes the current step, writes a
checkpoint and raises :class:`TrainingInterrupted`, which says how to resume.
A checkpoint holds the draft, the optimizer and the step; it is written beside
the previous one and swapped in, so an interrupted write never destroys it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from pathlib import Path

import torch

from ..draft import save_draft
from ..errors import RunInterrupted


class TrainingInterrupted(RunInterrupted):
    """Training stopped on a signal after writing a checkpoint at ``step`` into ``checkpoint``."""

    def __init__(self, step: int, total: int, checkpoint: Path | None, signum: int):
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint written"
        super().__init__(f"training interrupted ({signal.Signals(signum).name}) at step {step} of {total}; {where}; "
                         "resume with the same command plus --resume", exit_code=128 + signum)
        self.step, self.total, self.checkpoint, self.signum = step, total, checkpoint, signum

    @property
    def where(self) -> str:
        """Where training stopped and what it saved, for a command's own resume hint."""
        if self.checkpoint:
            return f"checkpoint at step {self.step} of {self.total} saved to {self.checkpoint}"
        return f"stopped at step {self.step} of {self.total}, no checkpoint written"


@contextlib.contextmanager
def stop_on_signals():
    """While training: SIGINT and SIGTERM set a flag (read between steps) instead of killing the run.

    A second Ctrl-C while the checkpoint is written is honoured the usual way
    (KeyboardInterrupt). Only the main thread can install handlers; elsewhere
    the signals keep their handlers.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        if caught and signum == signal.SIGINT:
            raise KeyboardInterrupt
        caught.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def checkpoint_path(out_dir: str | Path) -> Path:
    """Where ``train_draft`` keeps the resumable checkpoint of ``out_dir``."""
    return Path(out_dir) / "checkpoint"


def has_checkpoint(out_dir: str | Path) -> bool:
    return (checkpoint_path(out_dir) / "state.pt").is_file()


def should_stop(caught: list[int], accelerator) -> bool:
    """Whether a signal arrived; under DDP every process must agree, or one would wait forever in
    an all-reduce the others never join (one small collective per step, only with several processes)."""
    if accelerator.num_processes == 1:
        return bool(caught)
    flag = torch.tensor([len(caught)], device=accelerator.device)
    stop = bool(accelerator.reduce(flag, reduction="max").item())
    if stop and not caught:
        caught.append(signal.SIGTERM)  # stopped by another process's signal
    return stop


class StopRequested(Exception):
    """Raised inside the training loop when a signal asked it to stop, at ``step``."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


def save_checkpoint(draft, optimizer, step: int, out_dir: Path) -> Path:
    """Write the checkpoint beside the old one, then swap it in: an interrupted write never
    destroys the previous checkpoint."""
    path = checkpoint_path(out_dir)
    fresh = path.with_name(path.name + ".writing")
    shutil.rmtree(fresh, ignore_errors=True)
    save_draft(draft, fresh)
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, fresh / "state.pt")
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(fresh, path)
    shutil.rmtree(old, ignore_errors=True)
    return path
