"""A dependency-free progress bar on stderr (only when stderr is a terminal, unless forced)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """``silent``: no bar and no lines at all (the ranks other than 0 of a distributed run)."""

    def __init__(self, enabled: bool | None = None, stream: Any = None, silent: bool = False):
        self.stream = stream or sys.stderr
        self.silent = silent
        self.enabled = not silent and (self.stream.isatty() if enabled is None else enabled)
        self.label, self.total, self.t0 = "", 0, 0.0

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.t0 = label, total, time.perf_counter()

    def update(self, done: int, stats: dict[str, Any] | None = None) -> None:
        if not self.enabled or not self.total:
            return
        frac = min(done / self.total, 1.0)
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        extra = " ".join(f"{k} {v:.4g}" for k, v in (stats or {}).items() if isinstance(v, (int, float)))
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
