"""Pictures of architectures (`draw_arch`) and of training curves (`plot_curves`), written as PNG files.

Drawing uses matplotlib's `Figure` with the Agg canvas directly, so no global backend or pyplot state is touched
and the module is safe to use from scripts, tests and servers. Architectures are read from their JSON form (an
`Arch` or the dict of `Arch.to_json()`), so this module depends on no space implementation.

Cells are laid out as layered DAGs (longest-path layering, dummy vertices on long edges, barycentre ordering that
keeps the fewest crossings, then coordinates pulled towards their neighbours); the macro network is a column of
layers with its skip connections drawn as arcs beside it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MPath
from matplotlib.ticker import LogFormatter, MaxNLocator

from enas.arch.macro import MACRO_OPS  # the op sets are defined once, by the arch modules
from enas.arch.micro import MICRO_OP_NAMES as MICRO_OPS
from enas.arch.rnn import ACTIVATIONS as RNN_ACTS
from enas.errors import ArchError, ConfigError, DataError, UserError

_OP_TEXT = {"conv3x3": "conv 3×3", "conv5x5": "conv 5×5", "sep3x3": "sep 3×3", "sep5x5": "sep 5×5",
            "avgpool3x3": "avg 3×3", "maxpool3x3": "max 3×3", "identity": "identity"}
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


# --------------------------------------------------------------------------------------------------------- layout
def _layered_layout(n: int, edges: list[tuple[int, int]], real_gap: float = 1.15,
                    dummy_gap: float = 0.45) -> tuple[list[float], list[int], list[list[int]]]:
    """Lay out a DAG whose vertices 0..n-1 are numbered topologically (every edge goes from lower to higher).

    Returns x and layer of every vertex (the first n are real, the rest are dummies placed on long edges) and,
    per edge, its route: the vertex ids from source to target through one dummy per intermediate layer.
    """
    layer = [0] * n
    for u, v in sorted(edges, key=lambda e: e[1]):  # every edge into u is seen before any edge out of u
        layer[v] = max(layer[v], layer[u] + 1)
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    routes = []
    for u, v in edges:
        route = [u]
        for li in range(layer[u] + 1, layer[v]):  # one dummy vertex per crossed layer
            layer.append(li)
            preds.append([])
            succs.append([])
            route.append(len(layer) - 1)
        route.append(v)
        for a, b in zip(route, route[1:]):
            succs[a].append(b)
            preds[b].append(a)
        routes.append(route)
    rows: list[list[int]] = [[] for _ in range(max(layer) + 1)]
    for v, li in enumerate(layer):
        rows[li].append(v)
    pos = {v: i for row in rows for i, v in enumerate(row)}

    def crossings() -> int:
        total = 0
        for row in rows[:-1]:
            segs = [(pos[a], pos[b]) for a in row for b in succs[a]]
            total += sum((a1 - a2) * (b1 - b2) < 0 for k, (a1, b1) in enumerate(segs) for a2, b2 in segs[k + 1:])
        return total

    # Barycentre sweeps down and up; a stable sort keeps the numbering order among ties. Keep the best ordering.
    best, best_rows = crossings(), [r[:] for r in rows]
    for sweep in range(8):
        down = sweep % 2 == 0
        nbrs = preds if down else succs
        for li in range(1, len(rows)) if down else range(len(rows) - 2, -1, -1):
            key = {v: sum(pos[u] for u in nbrs[v]) / len(nbrs[v]) if nbrs[v] else pos[v] for v in rows[li]}
            rows[li].sort(key=key.__getitem__)
            pos.update({v: i for i, v in enumerate(rows[li])})
        if (c := crossings()) < best:
            best, best_rows = c, [r[:] for r in rows]
    rows = best_rows

    # Coordinates: move every vertex towards the mean x of its neighbours, then restore the minimum gaps by packing
    # left-to-right and right-to-left and averaging both (each keeps the gaps, so their mean does too).
    def gap(a: int, b: int) -> float:
        return real_gap if a < n and b < n else (real_gap + dummy_gap) / 2 if a < n or b < n else dummy_gap

    x = [0.0] * len(layer)
    for row in rows:
        for i, v in enumerate(row):
            x[v] = (i - (len(row) - 1) / 2) * real_gap
    for _ in range(30):
        for row in rows:
            want = [sum(x[u] for u in preds[v] + succs[v]) / len(preds[v] + succs[v]) if preds[v] + succs[v]
                    else x[v] for v in row]
            left, right = want[:], want[:]
            for i in range(1, len(row)):
                left[i] = max(left[i], left[i - 1] + gap(row[i - 1], row[i]))
            for i in range(len(row) - 2, -1, -1):
                right[i] = min(right[i], right[i + 1] - gap(row[i], row[i + 1]))
            for i, v in enumerate(row):
                x[v] = (left[i] + right[i]) / 2
    return x, layer, routes


@dataclass
class _Edge:
    src: int
    dst: int
    label: str | None = None
    color: str = "#4d4d4d"
    dashed: bool = False


_W, _H = 0.85, 0.5  # box size of a DAG node, in layout units (about 0.8 inch each in the pictures)
_SCALE = 0.8  # inches per layout unit


class _Dag:
    """(text, fill) nodes and edges, laid out top to bottom with `dy` between layers and `gap` between boxes."""

    def __init__(self, nodes: list[tuple[str, str]], edges: list[_Edge], dy: float = 1.3, gap: float = 1.15):
        self.nodes, self.edges, self.dy = nodes, edges, dy
        self.x, self.layer, self.routes = _layered_layout(len(nodes), [(e.src, e.dst) for e in edges], gap)
        self.xlim = (min(self.x) - _W, max(self.x) + _W)
        self.ylim = (-max(self.layer) * dy - _H / 2 - 0.15, _H / 2 + 0.15)

    @property
    def size(self) -> tuple[float, float]:
        """Width and height of the drawing in inches."""
        return _SCALE * (self.xlim[1] - self.xlim[0]), _SCALE * (self.ylim[1] - self.ylim[0])


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, face: str, size: float = 9) -> None:
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                fc=face, ec="#333333", lw=1.0, zorder=3))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, zorder=4, linespacing=1.1)


def _curve_at_height(ctrl: list[tuple[float, float]], y: float) -> tuple[float, float]:
    """The point of a cubic Bezier segment (4 control points, y decreasing along it) at height `y`, by bisection."""
    def at(t: float) -> tuple[float, float]:
        c = ((1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3)
        return sum(ci * px for ci, (px, _) in zip(c, ctrl)), sum(ci * py for ci, (_, py) in zip(c, ctrl))

    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at(mid)[1] > y else (lo, mid)
    return at(lo)


def _draw_dag(fig: Figure, dag: _Dag, left: float, bottom: float) -> Any:
    """Draw `dag` on new axes whose lower-left corner is at (left, bottom) inches; boxes are never distorted
    because the axes get exactly the drawing's size. Edges leave a box's bottom and enter the next one's top."""
    fw, fh = fig.get_size_inches()
    (w, h), x, dy = dag.size, dag.x, dag.dy
    ax = fig.add_axes((left / fw, bottom / fh, w / fw, h / fh))
    pts = [[(x[v], -dag.layer[v] * dy) for v in r] for r in dag.routes]
    # Spread the ports of the edges meeting at a box along its side, ordered by where each edge comes from or goes
    # to, so that parallel edges (micro: both ops on the same input) stay apart and do not cross at the box.
    port_out = {k: 0.0 for k in range(len(dag.edges))}
    port_in = dict(port_out)
    for v in range(len(dag.nodes)):
        for side, ports in ((0, port_out), (-1, port_in)):
            ks = sorted((k for k, r in enumerate(dag.routes) if r[side] == v),
                        key=lambda k: (pts[k][1 if side == 0 else -2][0], k))
            step = min(0.2, 0.7 * _W / max(len(ks), 1))
            for i, k in enumerate(ks):
                ports[k] = (i - (len(ks) - 1) / 2) * step
    for k, (e, p) in enumerate(zip(dag.edges, pts)):
        p = [(p[0][0] + port_out[k], p[0][1] - _H / 2), *p[1:-1], (p[-1][0] + port_in[k], p[-1][1] + _H / 2)]
        # A cubic spline through the route: vertical tangents at the boxes, Catmull-Rom tangents at the dummies
        # (so that a straight run of dummies draws straight).
        tang = [(0.0, 1.5 * (p[1][1] - p[0][1]))]
        tang += [((c[0] - a[0]) / 2, (c[1] - a[1]) / 2) for a, c in zip(p, p[2:])]
        tang.append((0.0, 1.5 * (p[-1][1] - p[-2][1])))
        verts, codes = [p[0]], [MPath.MOVETO]
        for (x0, y0), (x1, y1), (tx0, ty0), (tx1, ty1) in zip(p, p[1:], tang, tang[1:]):
            verts += [(x0 + tx0 / 3, y0 + ty0 / 3), (x1 - tx1 / 3, y1 - ty1 / 3), (x1, y1)]
            codes += [MPath.CURVE4] * 3
        ax.add_patch(FancyArrowPatch(path=MPath(verts, codes), arrowstyle="-|>", mutation_scale=11, lw=1.3,
                                     color=e.color, linestyle="--" if e.dashed else "-", zorder=2))
        if e.label:  # on its own curve just above the target; the inputs of a node at different heights
            rank = sum(port_in[j] < port_in[k] for j, r in enumerate(dag.routes) if r[-1] == dag.routes[k][-1])
            lx, ly = _curve_at_height(verts[-4:], verts[-1][1] + 0.3 + 0.38 * rank)
            ax.text(lx, ly, e.label, ha="center", va="center", fontsize=7.5, color=e.color, zorder=5,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=e.color, lw=0.6))
    for v, (text, face) in enumerate(dag.nodes):
        _box(ax, x[v], -dag.layer[v] * dy, _W, _H, text, face)
    ax.set_xlim(*dag.xlim)
    ax.set_ylim(*dag.ylim)
    ax.axis("off")
    return ax


# ------------------------------------------------------------------------------------------------- architectures
def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike, dpi: float, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", facecolor="white", bbox_inches="tight" if tight else None,
                pad_inches=0.15)
    return path


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


# ------------------------------------------------------------------------------------------------- training curves
def _read_epochs(path: Path) -> dict[str, dict[float, float]]:
    """field -> {epoch: value} from the "epoch" lines of a metrics.jsonl; a re-logged epoch (resume) keeps its last
    value. Malformed lines, non-numeric and non-finite values are skipped."""
    series: dict[str, dict[float, float]] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or rec.get("kind") != "epoch":
                continue
            epoch = rec.get("epoch")
            if not isinstance(epoch, (int, float)) or isinstance(epoch, bool) or not math.isfinite(epoch):
                continue
            for key, v in rec.items():
                if key != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    series.setdefault(key, {})[epoch] = float(v)
    return series


_OP_SHARE = "op_share/"  # flat keys of the op histogram (enas.diagnostics)
_UNIT_RANGE = ("controller_entropy_frac", "distinct_share", "skip_density", "controller_skip_rate")
_LINE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
# Panels that hold several related series: (title, selector of the member fields, label of a member).
_REWARD_GROUP = ("controller_reward", "controller_baseline_mean", "controller_advantage")
_GROUPS: tuple[tuple[str, Any, Any], ...] = (
    ("controller reward, baseline, advantage", lambda k: k in _REWARD_GROUP, lambda k: k.removeprefix("controller_")),
    ("policy entropy per decision (nats)",
     lambda k: k.startswith("controller_entropy_") and k != "controller_entropy_frac",
     lambda k: k.removeprefix("controller_entropy_")),
)


def _panels(series: dict[str, dict[float, float]]) -> list[tuple[str, dict[str, dict[float, float]]]]:
    """(title, {label: points}) per panel: grouped series share one panel, every other field has its own, in the
    order of first appearance. ``controller_baseline`` (the final value) goes when its epoch mean is there."""
    if "controller_baseline_mean" in series:
        series = {k: v for k, v in series.items() if k != "controller_baseline"}
    panels: dict[str, dict[str, dict[float, float]]] = {}
    labels = {}
    for key, points in series.items():
        for title, member, label in _GROUPS:
            if member(key):
                panels.setdefault(title, {})[key] = points
                labels[key] = label(key)
                break
        else:
            panels[key] = {key: points}
    if len(panels.get(_GROUPS[0][0], ())) > 1:  # reward, baseline, advantage in this order
        panels[_GROUPS[0][0]] = {k: panels[_GROUPS[0][0]][k] for k in _REWARD_GROUP if k in panels[_GROUPS[0][0]]}
    # a group with one member present is an ordinary panel named after its field
    return [(title, {labels[k]: p for k, p in lines.items()}) if len(lines) > 1 else (next(iter(lines)), lines)
            for title, lines in panels.items()]


def plot_curves(metrics_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Plot every numeric field of the epoch records of a metrics.jsonl (or a run directory holding one) against
    the epoch, one small panel per field, and write the PNG to `path`. Raises `DataError` when there is nothing
    to plot."""
    src = Path(metrics_path)
    if src.is_dir():
        src = src / "metrics.jsonl"
    if not src.is_file():
        raise DataError(f"metrics file {src} does not exist; pass a run directory or its metrics.jsonl")
    # Op shares have their own picture (plot_op_shares).
    series = {k: v for k, v in _read_epochs(src).items() if not k.startswith(_OP_SHARE)}
    # Bookkeeping fields (cumulative seconds, batch and token counts) and constant series make no useful panel.
    informative = {k: v for k, v in series.items()
                   if not k.startswith("seconds") and k not in ("steps", "averaging")
                   and not k.endswith(("_tokens", "_n")) and len({round(y, 12) for y in v.values()}) > 1}
    series = informative or series
    if not series:
        raise DataError(f"{src} has no epoch records with numeric fields; plot a run that finished an epoch")
    panels = _panels(series)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fw, fh = 3.4 * ncols, 2.5 * nrows + 0.8
    fig = _figure(fw, fh)
    # Fixed margins in inches: much faster than a constrained or tight layout, which draw the figure twice.
    fig.subplots_adjust(left=0.6 / fw, right=1 - 0.15 / fw, bottom=0.45 / fh, top=1 - 0.85 / fh, wspace=0.32,
                        hspace=0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, lines) in zip(axes, panels):
        for (label, points), color in zip(lines.items(), _LINE_COLORS):
            xs = sorted(points)
            ys = [points[e] for e in xs]
            ax.plot(xs, ys, color=color, lw=1.4, marker="o" if len(xs) <= 30 else None, ms=3, label=label)
        if len(lines) > 1:
            ax.legend(fontsize=7, frameon=False)
        elif ("ppl" in name or "perplexity" in name) and min(ys) > 0 and max(ys) > 3 * min(ys):
            ax.set_yscale("log")  # perplexities fall by orders of magnitude early on
            for axis_fmt in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis_fmt(LogFormatter(minor_thresholds=(2, 0.5)))  # plain numbers (600) instead of 6x10^2
        if name in _UNIT_RANGE:  # shares: the whole range, so that a collapse towards 0 or 1 shows as one
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(which="both", labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"training curves: {src.parent.name or src.name}", fontsize=11)
    return _save(fig, path, 150, tight=False)


def plot_op_shares(metrics_path: str | os.PathLike, path: str | os.PathLike, required: bool = True) -> Path | None:
    """Heat map of the ``op_share/VOCAB/OP`` fields of the epoch records of a metrics.jsonl (or a run directory
    holding one): the share of each op among the archs sampled in each epoch's shared phase, epochs along x, ops
    along y, one panel per op vocabulary; writes the PNG to `path`. Without op shares: `DataError`, or None when
    ``required`` is false."""
    src = Path(metrics_path)
    if src.is_dir():
        src = src / "metrics.jsonl"
    if not src.is_file():
        raise DataError(f"metrics file {src} does not exist; pass a run directory or its metrics.jsonl")
    vocabs: dict[str, dict[str, dict[float, float]]] = {}
    for key, points in _read_epochs(src).items():
        parts = key.split("/")
        if len(parts) == 3 and key.startswith(_OP_SHARE):
            vocabs.setdefault(parts[1], {})[parts[2]] = points
    if not vocabs:
        if not required:
            return None
        raise DataError(f"{src} has no op shares (op_share/... fields); plot a search run that finished an epoch")
    epochs = sorted({e for ops in vocabs.values() for points in ops.values() for e in points})
    n_ops = sum(len(ops) for ops in vocabs.values())
    fw = min(max(5.0, 2.5 + 0.25 * len(epochs)), 14.0)
    fh = 0.9 + 0.8 * len(vocabs) + 0.3 * n_ops
    fig = _figure(fw, fh)
    axes = fig.subplots(len(vocabs), 1, squeeze=False,
                        gridspec_kw={"height_ratios": [len(ops) for ops in vocabs.values()]}).ravel()
    fig.subplots_adjust(left=1.2 / fw, right=1 - 1.1 / fw, bottom=0.5 / fh, top=1 - 0.55 / fh, hspace=0.9)
    image = None
    for ax, (vocab, ops) in zip(axes, vocabs.items()):
        names = list(ops)
        grid = [[ops[op].get(e, math.nan) for e in epochs] for op in names]  # ops x epochs
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest",
                          extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(names) - 0.5, -0.5))
        ax.set_yticks(range(len(names)), [_OP_TEXT.get(op, op) for op in names], fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(vocab, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        if len(epochs) * len(names) <= 150:  # small grids get the numbers too
            for i, row in enumerate(grid):
                for e, v in zip(epochs, row):
                    if math.isfinite(v):
                        ax.text(e, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if v < 0.6 else "black")
    bar = fig.colorbar(image, ax=list(axes), fraction=0.04, pad=0.02)
    bar.set_label("share of the vocabulary's samples", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(f"sampled ops per epoch: {src.parent.name or src.name}", fontsize=11)
    return _save(fig, path, 150, tight=False)


__all__ = ["draw_arch", "plot_curves", "plot_op_shares"]
