"""Layered DAG drawing for the pictures of `enas.viz.arch` and `enas.spaces.choices.draw`, and the helpers every
picture shares.

A DAG (boxes and edges) is laid out top to bottom in layers: longest-path layering, dummy vertices on long edges,
barycentre ordering that keeps the fewest crossings, then coordinates pulled towards their neighbours. Edges are
drawn as splines through their dummies, with op labels just above the box they enter. Figures use matplotlib's
`Figure` with the Agg canvas directly (no pyplot state) and are written as PNG files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MPath

from enas.errors import ArchError

# The op names as the pictures print them (architecture drawings and op-share heat maps).
OP_TEXT = {"conv3x3": "conv 3×3", "conv5x5": "conv 5×5", "sep3x3": "sep 3×3", "sep5x5": "sep 5×5",
            "avgpool3x3": "avg 3×3", "maxpool3x3": "max 3×3", "identity": "identity"}


# ------------------------------------------------------------------------------------------------------- figures
def new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: float, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", facecolor="white", bbox_inches="tight" if tight else None,
                pad_inches=0.15)
    return path


# --------------------------------------------------------------------------------------------------------- layout
def layered_layout(n: int, edges: list[tuple[int, int]], real_gap: float = 1.15,
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
class Edge:
    src: int
    dst: int
    label: str | None = None
    color: str = "#4d4d4d"
    dashed: bool = False


_W, _H = 0.85, 0.5  # box size of a DAG node, in layout units (about 0.8 inch each in the pictures)
_SCALE = 0.8  # inches per layout unit


class Dag:
    """(text, fill) nodes and edges, laid out top to bottom with `dy` between layers and `gap` between boxes."""

    def __init__(self, nodes: list[tuple[str, str]], edges: list[Edge], dy: float = 1.3, gap: float = 1.15):
        self.nodes, self.edges, self.dy = nodes, edges, dy
        self.x, self.layer, self.routes = layered_layout(len(nodes), [(e.src, e.dst) for e in edges], gap)
        self.xlim = (min(self.x) - _W, max(self.x) + _W)
        self.ylim = (-max(self.layer) * dy - _H / 2 - 0.15, _H / 2 + 0.15)

    @property
    def size(self) -> tuple[float, float]:
        """Width and height of the drawing in inches."""
        return _SCALE * (self.xlim[1] - self.xlim[0]), _SCALE * (self.ylim[1] - self.ylim[0])


def draw_box(ax: Any, x: float, y: float, w: float, h: float, text: str, face: str, size: float = 9) -> None:
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


def draw_dag(fig: Figure, dag: Dag, left: float, bottom: float) -> Any:
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
        draw_box(ax, x[v], -dag.layer[v] * dy, _W, _H, text, face)
    ax.set_xlim(*dag.xlim)
    ax.set_ylim(*dag.ylim)
    ax.axis("off")
    return ax


# Strong colours for edges and labels (micro), pale ones for filled boxes (macro, rnn).
OP_COLOR = {"sep3x3": "#1f77b4", "sep5x5": "#6a3d9a", "conv3x3": "#e6550d", "conv5x5": "#a63603",
             "avgpool3x3": "#2ca02c", "maxpool3x3": "#d62728", "identity": "#7f7f7f"}
OP_FILL = {"conv3x3": "#fdd0a2", "conv5x5": "#fee391", "sep3x3": "#c6dbef", "sep5x5": "#dadaeb",
            "avgpool3x3": "#c7e9c0", "maxpool3x3": "#fcbba1"}
ACT_FILL = {"tanh": "#c6dbef", "relu": "#fdd0a2", "identity": "#e0e0e0", "sigmoid": "#dadaeb"}
IO_FILL, OUT_FILL = "#ffffff", "#fff2b3"


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def list_field(d: dict[str, Any], key: str, where: str) -> list[Any]:
    value = d.get(key)
    if not isinstance(value, list) or not value:
        raise ArchError(f"{where}: '{key}' must be a non-empty list")
    return value
