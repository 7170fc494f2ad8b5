"""The picture of a micro arch: normal and reduction cells side by side with op-labelled edges."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from enas.errors import ArchError
from enas.spaces.micro.arch import MICRO_OP_NAMES as MICRO_OPS
from enas.viz.dag import IO_FILL, OP_COLOR, OP_TEXT, OUT_FILL, Dag, Edge, draw_dag, is_int, list_field, new_figure


def parse_cell(d: dict[str, Any], name: str) -> list[tuple[list[int], list[str]]]:
    nodes = []
    for j, node in enumerate(list_field(d, name, "micro arch")):
        i = j + 2  # indices 0 and 1 are the cell inputs
        ins = node.get("inputs") if isinstance(node, dict) else None
        ops = node.get("ops") if isinstance(node, dict) else None
        if not (isinstance(ins, list) and len(ins) == 2 and all(is_int(x) and 0 <= x < i for x in ins)):
            raise ArchError(f"micro arch: {name} node {i} needs 'inputs' as two indices in 0..{i - 1}, got {ins!r}")
        if not (isinstance(ops, list) and len(ops) == 2 and all(o in MICRO_OPS for o in ops)):
            raise ArchError(f"micro arch: {name} node {i} needs 'ops' as two of {', '.join(MICRO_OPS)}, got {ops!r}")
        nodes.append((ins, ops))
    return nodes


def draw(d: dict[str, Any], title: str | None) -> Figure:
    dags = []
    for name in ("normal", "reduce"):
        cell = parse_cell(d, name)
        m = len(cell) + 2  # vertices: 0, 1 = cell inputs, 2..m-1 = nodes, m = output
        nodes = [("$h_{i-2}$", IO_FILL), ("$h_{i-1}$", IO_FILL)] + [(f"{i}", "#e8e8e8") for i in range(2, m)]
        nodes.append(("concat", OUT_FILL))
        edges = [Edge(src, i, OP_TEXT[op], OP_COLOR[op]) for i, (ins, ops) in enumerate(cell, 2)
                 for src, op in zip(ins, ops)]
        read = {src for ins, _ in cell for src in ins}
        edges += [Edge(v, m, color="#999999", dashed=True) for v in range(m) if v not in read]
        dags.append(Dag(nodes, edges, dy=2.0, gap=1.3))
    sep, top = 0.5, 0.9  # inches between the cells, above them for the titles
    height = max(dag.size[1] for dag in dags)
    fig = new_figure(sum(dag.size[0] for dag in dags) + sep, height + top)
    left = 0.0
    for dag, name in zip(dags, ("normal cell", "reduction cell")):
        ax = draw_dag(fig, dag, left, height - dag.size[1])  # both cells hang from the same top line
        ax.set_title(name, fontsize=10)
        left += dag.size[0] + sep
    fig.suptitle(title or "micro cells: each node adds its two op outputs", fontsize=11)
    return fig
