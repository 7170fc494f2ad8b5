"""The benchmarks' tables live in docs/results.md between ``<!-- NAME -->`` and ``<!-- /NAME -->`` markers: rerunning a
benchmark with ``--write-docs`` replaces its block in place, or appends it under ``heading`` the first time."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def write_block(name: str, table: str, heading: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Results\n"
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{table.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n{block}\n"
    RESULTS.write_text(text)
