"""Pictures of architectures (`draw_arch`), written as PNG files; the pictures of training runs (`plot_curves`,
`plot_op_shares`) live in `enas.viz.curves` and are importable from here too.

Drawing uses matplotlib's `Figure` with the Agg canvas directly, so no global backend or pyplot state is touched
and the module is safe to use from scripts, tests and servers. Architectures are read from their JSON form (an
`Arch` or the dict of `Arch.to_json()`), so this module depends on no space implementation.

Cells are laid out as layered DAGs (`enas.viz.dag`); the macro network is a column of layers with its skip
connections drawn as arcs beside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from enas import registry
from enas.arch import arch_from_json
from enas.errors import ArchError, ConfigError, UserError
from enas.viz.curves import plot_curves, plot_op_shares
from enas.viz.dag import new_figure, save_figure


def _arch_dict(arch: Any) -> dict[str, Any]:
    """The JSON dict of an `Arch` (anything with `to_json()`) or the dict itself."""
    obj = arch.to_json() if callable(getattr(arch, "to_json", None)) else arch
    if not isinstance(obj, dict):
        raise ArchError(f"cannot draw a {type(arch).__name__}; pass an Arch or its JSON dict with a 'space' field")

    space = obj.get("space")
    if not isinstance(space, str) or space not in registry.names() and not obj.get("space_source"):
        raise ArchError(f"cannot draw space {space!r}; the space must be one of {', '.join(registry.names())} "
                        f"or name its space_source")
    return obj


def draw_arch(arch: Any, path: str | os.PathLike, title: str | None = None, dpi: int = 150) -> Path:
    """Write a PNG picture of `arch` (an `Arch` or its JSON dict) to `path` and return the path.

    rnn: the cell as a DAG from x_t and h_{t-1} to the averaged output h_t; micro: normal and reduction cells side
    by side with op-labelled edges; macro: the layer column with skips as arcs and the reductions marked.
    Raises `ArchError` for an unknown space or a malformed architecture.
    """
    if not isinstance(dpi, (int, float)) or isinstance(dpi, bool) or not 10 <= dpi <= 1200:
        raise ConfigError(f"dpi must be a number between 10 and 1200, got {dpi!r}")
    d = _arch_dict(arch)

    try:
        draw = registry.get(d["space"], d.get("space_source", "")).load("draw") or draw_text
    except UserError as e:
        raise ArchError(str(e)) from None
    return save_figure(draw(d, title), path, dpi)


def draw_text(d: dict[str, Any], title: str | None) -> Figure:
    """The picture of a space without its own drawing: the arch's summary (`Arch.describe`) in a box."""

    text = arch_from_json(d).describe()
    lines = text.splitlines() or [""]
    fig = new_figure(max(3.0, 0.085 * max(len(line) for line in lines)), 0.25 + 0.2 * len(lines))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    ax.text(0.03, 0.97, text, family="monospace", size=9, va="top", ha="left", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


__all__ = ["draw_arch", "plot_curves", "plot_op_shares"]
