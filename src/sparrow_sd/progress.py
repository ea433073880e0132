"""Progress for long work: a tqdm bar on a terminal, a line a minute anywhere else.

tqdm left to itself (``disable=None``) hides its bar when stderr is not a terminal,
so a 40-minute ``sparrow drafts build`` under nohup, in CI or in a batch job wrote
nothing until its first shard. :func:`progress` keeps tqdm's bar on a terminal (and
in a notebook) and elsewhere writes ``desc: n/total (elapsed, rate, left) postfix``
lines at most every ``every_s`` seconds and once at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LineProgress:
    """The part of tqdm's interface the commands use, written as occasional log lines."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, every_s: float = 60.0,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = self.initial = initial
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = self.last_written = clock()
        self.written_n = initial
        self.postfix = ""
        self.lines = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last_written >= self.every_s:
            self._write()

    def done_before(self, n: int = 1) -> None:
        """Count ``n`` items a resumed run finds already done: they advance the count, not the rate."""
        self.n += n
        self.initial += n
        self.written_n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        """The last count, if it is news: the work finished, or it ran long enough to have reported before
        (an interrupted short run leaves its one-line error alone)."""
        finished = self.total is not None and self.n >= self.total
        if self.n != self.written_n and (finished or self.lines):
            self._write()

    def line(self) -> str:
        """``desc: n/total units (elapsed, rate, time left) postfix``."""
        elapsed = self.clock() - self.started
        done = self.n - self.initial
        parts = [_clock_text(elapsed)]
        if done > 0 and elapsed > 0:
            per = elapsed / done
            parts.append(f"{per:.1f} s/{self.unit}" if per >= 1 else f"{1 / per:.1f} {self.unit}/s")
            if self.total:
                parts.append(f"{_clock_text(per * max(0, self.total - self.n))} left")
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        tail = f" {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {count} {self.unit} ({', '.join(parts)}){tail}"

    def _write(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_written = self.clock()
        self.written_n = self.n
        self.lines += 1


def progress(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0, enabled: bool = True,
             every_s: float = 60.0, stream: TextIO | None = None, leave: bool = True):
    """A progress bar for ``total`` items: tqdm on a terminal or in a notebook, else :class:`LineProgress`;
    a silent tqdm when ``enabled`` is False. ``leave``: keep tqdm's finished bar on screen."""
    from tqdm.auto import tqdm

    stream = stream or sys.stderr
    if not enabled:
        return tqdm(total=total, disable=True)
    if _in_notebook() or (hasattr(stream, "isatty") and stream.isatty()):
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream, leave=leave)
    return LineProgress(total, desc, unit, initial=initial, every_s=every_s, stream=stream)


def _in_notebook() -> bool:
    """A Jupyter kernel, where tqdm draws its own widget."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def count_done_before(bar, n: int = 1) -> None:
    """Advance ``bar`` by ``n`` items found already done (a resume): a :class:`LineProgress` keeps them out of
    its rate and time left; tqdm just counts them."""
    if isinstance(bar, LineProgress):
        bar.done_before(n)
    else:
        bar.update(n)
