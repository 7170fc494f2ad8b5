"""The picture of a chosen path through a module written with choices (`enas.nn`): the child of the arch is traced
with `torch.fx` (on the meta device: no weights are allocated) and its data flow drawn as a top-down graph.

Each chosen candidate of an `OpChoice` is one box named after the candidate, with its choice's label underneath
and a colour per candidate name; the sums that an `InputChoice` makes are boxes labelled with that choice; other
layers and functions are grey boxes named after their type. Nodes whose result never reaches the output are left
out. A module whose forward cannot be traced (control flow on tensor values) gets the text picture instead.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import torch
from torch import fx, nn

from enas.arch import arch_from_json
from enas.spaces.base import TaskInfo
from enas.spaces.choices.modules import InputChoice, OpChoice
from enas.viz.arch import draw_text
from enas.viz.dag import Dag, Edge, draw_dag, new_figure

_CANDIDATE = re.compile(r"^(?P<choice>.*)\.candidates\.(?P<name>[^.]+)$")
_FUNCTION_NAMES = {operator.add: "+", operator.iadd: "+", operator.mul: "×", operator.sub: "−",
                   operator.truediv: "÷", operator.getitem: "[ ]", torch.cat: "concat", torch.add: "+",
                   torch.zeros_like: "zeros"}
_IO_FILL, _PLAIN_FILL, _MERGE_FILL = "#dfe9f5", "#eeeeee", "#fdf1d6"
_PALETTE = ("#f4c7a1", "#b8dcb0", "#c9c3e6", "#f2b8c6", "#b9dfe8", "#e8dba0", "#d7c2a8", "#c6d8a8")


class _Tracer(fx.Tracer):
    """Stops at the chosen candidate of every `OpChoice` (one box per chosen op) and at torch's own layers."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return bool(_CANDIDATE.match(qualname)) or super().is_leaf_module(m, qualname)


def trace_path(net: nn.Module) -> list[tuple[str, str, list[int]]]:
    """(text, fill, input node indices) per node of the traced forward of ``net``, in topological order, without
    the nodes that do not reach the output. Raises whatever `torch.fx` raises on an untraceable forward."""

    graph = _Tracer().trace(net)
    live: set[fx.Node] = set()
    stack = [n for n in graph.nodes if n.op == "output"]
    while stack:  # the nodes the output depends on
        node = stack.pop()
        if node not in live:
            live.add(node)
            stack += node.all_input_nodes
    labels = {path: m.label for path, m in net.named_modules() if isinstance(m, (OpChoice, InputChoice))}
    colours: dict[str, str] = {}
    out: list[tuple[str, str, list[int]]] = []
    index: dict[fx.Node, int] = {}
    for node in graph.nodes:
        if node.op == "get_attr" or node not in live:
            continue
        inputs = sorted({index[a] for a in node.all_input_nodes if a in index})
        if node.op == "placeholder":
            text, fill = "input", _IO_FILL
        elif node.op == "output":
            text, fill = "output", _IO_FILL
        elif node.op == "call_module" and (m := _CANDIDATE.match(str(node.target))):
            name = m["name"]
            fill = colours.setdefault(name, _PALETTE[len(colours) % len(_PALETTE)])
            text = f"{name}\n{labels.get(m['choice'], m['choice'])}"
        else:
            text, fill = _plain_text(net, node), _PLAIN_FILL
            owner = _choice_owner(node, labels)
            if owner is not None:
                text, fill = f"{text}\n{owner}", _MERGE_FILL
        index[node] = len(out)
        out.append((text, fill, inputs))
    return out


def _plain_text(net: nn.Module, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(net.get_submodule(str(node.target))).__name__
    if node.op == "call_function":
        return _FUNCTION_NAMES.get(node.target, getattr(node.target, "__name__", str(node.target)))
    return str(node.target)  # call_method


def _choice_owner(node: fx.Node, labels: dict[str, str]) -> str | None:
    """The label of the `InputChoice` (or `OpChoice`) whose forward created ``node``, if any."""
    for path in reversed(list(node.meta.get("nn_module_stack", {}))):
        if path in labels:
            return labels[path]
    return None


def draw_choice_path(space: Any, d: dict[str, Any], title: str | None) -> Any:
    """The figure of the path of arch ``d`` (its JSON dict) through ``space`` (a `enas.nn.ChoiceSpace`)."""

    arch = arch_from_json(d)
    info = TaskInfo(vocab_size=10, in_channels=3, image_size=8, num_classes=2, in_features=4)
    try:
        with torch.device("meta"):
            child = space.build_child(arch, info)
        nodes = trace_path(child.net)
    except Exception:  # an untraceable forward: the summary instead of the path
        return draw_text(d, title)
    edges = [Edge(src, dst) for dst, (_, _, ins) in enumerate(nodes) for src in ins]
    dag = Dag([(text, fill) for text, fill, _ in nodes], edges, dy=1.1, gap=1.2)
    w, h = dag.size
    fig = new_figure(max(w, 4.0), h + 0.6)
    draw_dag(fig, dag, (max(w, 4.0) - w) / 2, 0)
    chosen = sum(1 for text, fill, _ in nodes if fill in _PALETTE)
    fig.suptitle(title or f"{space.name}: the chosen path ({chosen} chosen op{'s' * (chosen != 1)})", fontsize=11,
                 y=1 - 0.1 / (h + 0.6), va="top")
    return fig


__all__ = ["draw_choice_path", "trace_path"]
