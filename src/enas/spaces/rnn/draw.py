"""The picture of a recurrent cell: a DAG from x_t and h_{t-1} to the output h_t (`enas show`, `arch.png`)."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from enas.errors import ArchError
from enas.spaces.rnn.arch import ACTIVATIONS as RNN_ACTS
from enas.viz.dag import ACT_FILL, IO_FILL, OUT_FILL, Dag, Edge, draw_dag, is_int, list_field, new_figure


def parse(d: dict[str, Any]) -> tuple[list[str], list[int], str]:
    """Activations, the node read by each node (-1 for node 0, which reads x_t and h_{t-1}), output mode."""
    acts, inputs = [], []
    for l, node in enumerate(list_field(d, "nodes", "rnn arch")):
        if not isinstance(node, dict) or node.get("act") not in RNN_ACTS:
            raise ArchError(f"rnn arch: node {l} needs an 'act' among {', '.join(RNN_ACTS)}")
        src = node.get("input", -1) if l else -1
        if l and not (is_int(src) and 0 <= src < l):
            raise ArchError(f"rnn arch: node {l} must read an earlier node ('input' in 0..{l - 1}), got {src!r}")
        acts.append(node["act"])
        inputs.append(src)
    output = d.get("output", "loose_ends")
    if output not in ("loose_ends", "mean"):
        raise ArchError(f"rnn arch: 'output' must be 'loose_ends' or 'mean', got {output!r}")
    return acts, inputs, output


def draw(d: dict[str, Any], title: str | None) -> Figure:
    acts, inputs, output = parse(d)
    n = len(acts)
    # Vertices: 0 = x_t, 1 = h_{t-1}, 2 + l = node l, n + 2 = h_t (numbered topologically, as the layout needs).
    nodes = [("$x_t$", IO_FILL), ("$h_{t-1}$", IO_FILL)] + [(f"{l}\n{a}", ACT_FILL[a]) for l, a in enumerate(acts)]
    nodes.append(("$h_t$\nmean", OUT_FILL))
    edges = [Edge(0, 2), Edge(1, 2)] + [Edge(inputs[l] + 2, l + 2) for l in range(1, n)]
    read = set(inputs[1:])
    averaged = [l for l in range(n) if output == "mean" or l not in read]
    edges += [Edge(l + 2, n + 2, color="#999999", dashed=True) for l in averaged]
    dag = Dag(nodes, edges)
    w, h = dag.size
    fig = new_figure(max(w, 4.0), h + 0.8)
    draw_dag(fig, dag, (max(w, 4.0) - w) / 2, 0)
    what = "mean of all nodes" if output == "mean" else "mean of loose ends"
    fig.suptitle(title or f"recurrent cell: {n} node{'s' * (n != 1)}, $h_t$ = {what}", fontsize=11,
                 y=1 - 0.1 / (h + 0.8), va="top")
    used = [a for a in RNN_ACTS if a in acts]
    fig.legend(handles=[Line2D([], [], marker="s", ls="", ms=9, mfc=ACT_FILL[a], mec="#333333", label=a)
                        for a in used], loc="upper center", bbox_to_anchor=(0.5, 1 - 0.4 / (h + 0.8)),
               ncols=len(used), fontsize=8, frameon=False, handletextpad=0.2, columnspacing=1.2)
    return fig
