"""Pictures of architectures (`draw_arch`), written as PNG files; the pictures of training runs (`plot_curves`,
`plot_op_shares`) live in `enas.viz_curves` and are importable from here too.

Drawing uses matplotlib's `Figure` with the Agg canvas directly, so no global backend or pyplot state is touched
and the module is safe to use from scripts, tests and servers. Architectures are read from their JSON form (an
`Arch` or the dict of `Arch.to_json()`), so this module depends on no space implementation.

Cells are laid out as layered DAGs (`enas.viz_dag`); the macro network is a column of layers with its skip
connections drawn as arcs beside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path as MPath

from enas.arch.macro import MACRO_OPS  # the op sets are defined once, by the arch modules
from enas.arch.micro import MICRO_OP_NAMES as MICRO_OPS
from enas.arch.rnn import ACTIVATIONS as RNN_ACTS
from enas.errors import ArchError, ConfigError, UserError
from enas.viz_curves import plot_curves, plot_op_shares
from enas.viz_dag import _OP_TEXT, _box, _Dag, _draw_dag, _Edge, _figure, _save

# Strong colours for edges and labels (micro), pale ones for filled boxes (macro, rnn).
_OP_COLOR = {"sep3x3": "#1f77b4", "sep5x5": "#6a3d9a", "conv3x3": "#e6550d", "conv5x5": "#a63603",
             "avgpool3x3": "#2ca02c", "maxpool3x3": "#d62728", "identity": "#7f7f7f"}
_OP_FILL = {"conv3x3": "#fdd0a2", "conv5x5": "#fee391", "sep3x3": "#c6dbef", "sep5x5": "#dadaeb",
            "avgpool3x3": "#c7e9c0", "maxpool3x3": "#fcbba1"}
_ACT_FILL = {"tanh": "#c6dbef", "relu": "#fdd0a2", "identity": "#e0e0e0", "sigmoid": "#dadaeb"}
_IO_FILL, _OUT_FILL = "#ffffff", "#fff2b3"


# ----------------------------------------------------------------------------------------------------- validation
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _arch_dict(arch: Any) -> dict[str, Any]:
    """The JSON dict of an `Arch` (anything with `to_json()`) or the dict itself."""
    obj = arch.to_json() if callable(getattr(arch, "to_json", None)) else arch
    if not isinstance(obj, dict):
        raise ArchError(f"cannot draw a {type(arch).__name__}; pass an Arch or its JSON dict with a 'space' field")
    from enas import registry

    space = obj.get("space")
    if not isinstance(space, str) or space not in registry.names() and not obj.get("space_source"):
        raise ArchError(f"cannot draw space {space!r}; the space must be one of {', '.join(registry.names())} "
                        f"or name its space_source")
    return obj


def _list_field(d: dict[str, Any], key: str, where: str) -> list[Any]:
    value = d.get(key)
    if not isinstance(value, list) or not value:
        raise ArchError(f"{where}: '{key}' must be a non-empty list")
    return value


def _parse_rnn(d: dict[str, Any]) -> tuple[list[str], list[int], str]:
    """Activations, the node read by each node (-1 for node 0, which reads x_t and h_{t-1}), output mode."""
    acts, inputs = [], []
    for l, node in enumerate(_list_field(d, "nodes", "rnn arch")):
        if not isinstance(node, dict) or node.get("act") not in RNN_ACTS:
            raise ArchError(f"rnn arch: node {l} needs an 'act' among {', '.join(RNN_ACTS)}")
        src = node.get("input", -1) if l else -1
        if l and not (_is_int(src) and 0 <= src < l):
            raise ArchError(f"rnn arch: node {l} must read an earlier node ('input' in 0..{l - 1}), got {src!r}")
        acts.append(node["act"])
        inputs.append(src)
    output = d.get("output", "loose_ends")
    if output not in ("loose_ends", "mean"):
        raise ArchError(f"rnn arch: 'output' must be 'loose_ends' or 'mean', got {output!r}")
    return acts, inputs, output


def _parse_macro(d: dict[str, Any]) -> tuple[list[str], list[list[int]]]:
    """Ops per layer and, per layer, the indices into [stem, out_0, out_1, ...] of its skip inputs."""
    ops, skips = [], []
    for k, layer in enumerate(_list_field(d, "layers", "macro arch")):
        if not isinstance(layer, dict) or layer.get("op") not in MACRO_OPS:
            raise ArchError(f"macro arch: layer {k} needs an 'op' among {', '.join(MACRO_OPS)}")
        bits = layer.get("skips", [])
        if not isinstance(bits, list) or len(bits) != k or any(b not in (0, 1) or isinstance(b, bool) for b in bits):
            raise ArchError(f"macro arch: layer {k} needs 'skips' as {k} bits of 0/1 (one per stem and earlier "
                            f"layer except the previous), got {bits!r}")
        ops.append(layer["op"])
        skips.append([i for i, b in enumerate(bits) if b])
    return ops, skips


def _parse_cell(d: dict[str, Any], name: str) -> list[tuple[list[int], list[str]]]:
    nodes = []
    for j, node in enumerate(_list_field(d, name, "micro arch")):
        i = j + 2  # indices 0 and 1 are the cell inputs
        ins = node.get("inputs") if isinstance(node, dict) else None
        ops = node.get("ops") if isinstance(node, dict) else None
        if not (isinstance(ins, list) and len(ins) == 2 and all(_is_int(x) and 0 <= x < i for x in ins)):
            raise ArchError(f"micro arch: {name} node {i} needs 'inputs' as two indices in 0..{i - 1}, got {ins!r}")
        if not (isinstance(ops, list) and len(ops) == 2 and all(o in MICRO_OPS for o in ops)):
            raise ArchError(f"micro arch: {name} node {i} needs 'ops' as two of {', '.join(MICRO_OPS)}, got {ops!r}")
        nodes.append((ins, ops))
    return nodes


# ------------------------------------------------------------------------------------------------- architectures
def _draw_rnn(d: dict[str, Any], title: str | None) -> Figure:
    acts, inputs, output = _parse_rnn(d)
    n = len(acts)
    # Vertices: 0 = x_t, 1 = h_{t-1}, 2 + l = node l, n + 2 = h_t (numbered topologically, as the layout needs).
    nodes = [("$x_t$", _IO_FILL), ("$h_{t-1}$", _IO_FILL)] + [(f"{l}\n{a}", _ACT_FILL[a]) for l, a in enumerate(acts)]
    nodes.append(("$h_t$\nmean", _OUT_FILL))
    edges = [_Edge(0, 2), _Edge(1, 2)] + [_Edge(inputs[l] + 2, l + 2) for l in range(1, n)]
    read = set(inputs[1:])
    averaged = [l for l in range(n) if output == "mean" or l not in read]
    edges += [_Edge(l + 2, n + 2, color="#999999", dashed=True) for l in averaged]
    dag = _Dag(nodes, edges)
    w, h = dag.size
    fig = _figure(max(w, 4.0), h + 0.8)
    _draw_dag(fig, dag, (max(w, 4.0) - w) / 2, 0)
    what = "mean of all nodes" if output == "mean" else "mean of loose ends"
    fig.suptitle(title or f"recurrent cell: {n} node{'s' * (n != 1)}, $h_t$ = {what}", fontsize=11,
                 y=1 - 0.1 / (h + 0.8), va="top")
    used = [a for a in RNN_ACTS if a in acts]
    fig.legend(handles=[Line2D([], [], marker="s", ls="", ms=9, mfc=_ACT_FILL[a], mec="#333333", label=a)
                        for a in used], loc="upper center", bbox_to_anchor=(0.5, 1 - 0.4 / (h + 0.8)),
               ncols=len(used), fontsize=8, frameon=False, handletextpad=0.2, columnspacing=1.2)
    return fig


def _draw_micro(d: dict[str, Any], title: str | None) -> Figure:
    dags = []
    for name in ("normal", "reduce"):
        cell = _parse_cell(d, name)
        m = len(cell) + 2  # vertices: 0, 1 = cell inputs, 2..m-1 = nodes, m = output
        nodes = [("$h_{i-2}$", _IO_FILL), ("$h_{i-1}$", _IO_FILL)] + [(f"{i}", "#e8e8e8") for i in range(2, m)]
        nodes.append(("concat", _OUT_FILL))
        edges = [_Edge(src, i, _OP_TEXT[op], _OP_COLOR[op]) for i, (ins, ops) in enumerate(cell, 2)
                 for src, op in zip(ins, ops)]
        read = {src for ins, _ in cell for src in ins}
        edges += [_Edge(v, m, color="#999999", dashed=True) for v in range(m) if v not in read]
        dags.append(_Dag(nodes, edges, dy=2.0, gap=1.3))
    sep, top = 0.5, 0.9  # inches between the cells, above them for the titles
    height = max(dag.size[1] for dag in dags)
    fig = _figure(sum(dag.size[0] for dag in dags) + sep, height + top)
    left = 0.0
    for dag, name in zip(dags, ("normal cell", "reduction cell")):
        ax = _draw_dag(fig, dag, left, height - dag.size[1])  # both cells hang from the same top line
        ax.set_title(name, fontsize=10)
        left += dag.size[0] + sep
    fig.suptitle(title or "micro cells: each node adds its two op outputs", fontsize=11)
    return fig


def _draw_macro(d: dict[str, Any], title: str | None) -> Figure:
    ops, skips = _parse_macro(d)
    num = len(ops)
    pd = num // 3
    reductions = {pd - 1, 2 * pd - 1} if pd >= 1 else set()
    bw, bh = 2.0, 0.62  # box size; row r sits at y = -r (row 0 = stem, row k + 1 = layer k)
    max_span = max((k + 1 - i for k, s in enumerate(skips) for i in s), default=2)
    bulge = lambda span: 0.3 + 2.7 * (span - 1) / max(max_span - 1, 1)  # noqa: E731
    fig = _figure(7.0, 0.36 * (num + 1) + 1.0)
    ax = fig.add_subplot()
    palette = [f"C{i}" for i in range(10)]
    for k, s in enumerate(skips):  # arcs on the right from each skip source to its target layer
        for i in s:
            y0, y1, b = -i, -(k + 1), bulge(k + 1 - i)
            arc = MPath([(bw / 2, y0), (bw / 2 + b, y0), (bw / 2 + b, y1), (bw / 2, y1)], [MPath.MOVETO] +
                        [MPath.CURVE4] * 3)
            ax.add_patch(FancyArrowPatch(path=arc, arrowstyle="-|>", mutation_scale=8, lw=0.9, alpha=0.75,
                                         color=palette[k % 10], zorder=1))
    for r in range(1, num + 1):  # the chain: each layer reads the previous one
        ax.add_patch(FancyArrowPatch((0, -(r - 1) - bh / 2), (0, -r + bh / 2), arrowstyle="-|>",
                                     mutation_scale=9, color="#333333", lw=1.0, shrinkA=0, shrinkB=0, zorder=2))
    _box(ax, 0, 0, bw, bh, "stem  conv 3×3", _IO_FILL, size=8.5)
    for k, op in enumerate(ops):
        _box(ax, 0, -(k + 1), bw, bh, f"{k}   {_OP_TEXT[op]}", _OP_FILL[op], size=8.5)
        if k in reductions and k < num - 1:
            y = -(k + 1.5)
            ax.plot([-bw / 2 - 2.3, bw / 2 + 3.2], [y, y], ls=(0, (4, 3)), color="#b22222", lw=1.0, zorder=0)
            ax.text(-bw / 2 - 0.15, y + 0.08, "factorized reduction: ½ size", ha="right", va="bottom",
                    fontsize=7.5, color="#b22222")
    ax.set_xlim(-bw / 2 - 2.4, bw / 2 + 3.3)
    ax.set_ylim(-num - 0.6, 0.6)
    ax.axis("off")
    n_skips = sum(map(len, skips))
    ax.set_title(title or f"macro network: {num} layer{'s' * (num != 1)}, {n_skips} skip connections",
                 fontsize=11, pad=16)
    ax.text(0.5, 1.0, "each layer reads the one above; arcs: skip inputs, coloured by receiving layer",
            transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="#555555")
    return fig


def draw_arch(arch: Any, path: str | os.PathLike, title: str | None = None, dpi: int = 150) -> Path:
    """Write a PNG picture of `arch` (an `Arch` or its JSON dict) to `path` and return the path.

    rnn: the cell as a DAG from x_t and h_{t-1} to the averaged output h_t; micro: normal and reduction cells side
    by side with op-labelled edges; macro: the layer column with skips as arcs and the reductions marked.
    Raises `ArchError` for an unknown space or a malformed architecture.
    """
    if not isinstance(dpi, (int, float)) or isinstance(dpi, bool) or not 10 <= dpi <= 1200:
        raise ConfigError(f"dpi must be a number between 10 and 1200, got {dpi!r}")
    d = _arch_dict(arch)
    from enas import registry

    try:
        draw = registry.get(d["space"], d.get("space_source", "")).load("draw") or draw_text
    except UserError as e:
        raise ArchError(str(e)) from None
    return _save(draw(d, title), path, dpi)


def draw_text(d: dict[str, Any], title: str | None) -> Figure:
    """The picture of a space without its own drawing: the arch's summary (`Arch.describe`) in a box."""
    from enas.arch import arch_from_json

    text = arch_from_json(d).describe()
    lines = text.splitlines() or [""]
    fig = _figure(max(3.0, 0.085 * max(len(line) for line in lines)), 0.25 + 0.2 * len(lines))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    ax.text(0.03, 0.97, text, family="monospace", size=9, va="top", ha="left", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


__all__ = ["draw_arch", "plot_curves", "plot_op_shares"]
