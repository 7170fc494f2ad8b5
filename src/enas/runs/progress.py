"""A dependency-free progress bar on stderr (only when stderr is a terminal, unless forced)."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch


class Progress:
    """``silent``: no bar and no lines at all (the ranks other than 0 of a distributed run)."""

    REDRAW = 0.25  # seconds between redraws

    def __init__(self, enabled: bool | None = None, stream: Any = None, silent: bool = False):
        self.stream = stream or sys.stderr
        self.silent = silent
        self.enabled = not silent and (self.stream.isatty() if enabled is None else enabled)
        self.label, self.total, self.t0, self._drawn = "", 0, 0.0, 0.0

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.t0 = label, total, time.perf_counter()
        self._drawn = 0.0

    def update(self, done: int, stats: dict[str, Any] | None = None) -> None:
        """Redraw the bar, at most every `REDRAW` seconds (and at the last step): reading ``stats`` (0-dim tensors
        on a GPU) waits for the device, which must not happen at every step."""
        if not self.enabled or not self.total:
            return
        now = time.perf_counter()
        if now - self._drawn < self.REDRAW and done < self.total:
            return
        self._drawn = now
        stats = {k: float(v) for k, v in (stats or {}).items()
                 if isinstance(v, (int, float)) or (isinstance(v, torch.Tensor) and v.numel() == 1)}
        frac = min(done / self.total, 1.0)
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        extra = " ".join(f"{k} {v:.4g}" for k, v in stats.items())
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {elapsed:.0f}s<{eta:.0f}s {extra}"[:150])
        self.stream.flush()

    def end(self) -> None:
        if self.enabled and self.total:
            self.stream.write("\r" + " " * 150 + "\r")
            self.stream.flush()

    def line(self, text: str) -> None:
        """A permanent line (epoch summaries): always printed, unless silent."""
        if not self.silent:
            print(text, file=self.stream, flush=True)
