"""Architectures of the recurrent-cell space (spec 2.1): a DAG of highway nodes.

Node 0 reads the token embedding x_t and the previous hidden state h_{t-1}; every later node l reads exactly one
earlier node. Each node applies one activation. The cell output (and the next hidden state) is the mean of

* the *loose ends*, the nodes no other node reads (``output="loose_ends"``, the paper and the authors' first code), or
* all nodes after node 0 (``output="mean"``, the authors' corrected code, which averages the nodes it sampled and
  keeps node 0 fixed to tanh).

JSON body::

    {"nodes": [{"act": "tanh"}, {"input": 0, "act": "relu"}, ...], "output": "loose_ends"}

Integer notation (``fixed_arc`` of the authors' scripts), chosen by the parity of its length:

* odd length, first code: ``act_0  prev_1 act_1  prev_2 act_2 ...``; activations 0 tanh, 1 relu, 2 identity,
  3 sigmoid; output = loose ends.
* even length, corrected code: node 0 is a fixed tanh and not written; ``prev_1 act_1 prev_2 act_2 ...``;
  activations 0 tanh, 1 relu, 2 sigmoid, 3 identity; output = mean of nodes 1.. .
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from enas.arch import Arch, parse_ints, register_arch
from enas.errors import ArchError

ACTIVATIONS = ("tanh", "relu", "identity", "sigmoid")
PAPER_ACT_CODES = ("tanh", "relu", "identity", "sigmoid")  # index order of the first code
CORRECTED_ACT_CODES = ("tanh", "relu", "sigmoid", "identity")  # index order of the corrected code
OUTPUT_MODES = ("loose_ends", "mean")

MAX_NODES = 100  # generous beside the paper's 12: a bound checked before any model is built


@dataclass(frozen=True)
class RnnNode:
    """One node: ``input`` is the index of the node it reads (None for node 0, which reads x_t and h_{t-1})."""

    input: int | None
    act: str


@register_arch
@dataclass(frozen=True)
class RnnArch(Arch):
    """A recurrent cell: its nodes in order and how the output is formed."""

    space: ClassVar[str] = "rnn"

    nodes: tuple[RnnNode, ...]
    output: str = "loose_ends"

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        if not self.nodes:
            raise ArchError("an rnn cell needs at least one node")
        if len(self.nodes) > MAX_NODES:
            raise ArchError(f"an rnn cell has at most {MAX_NODES} nodes (the paper's has 12), got {len(self.nodes)}")
        for l, node in enumerate(self.nodes):
            if not isinstance(node, RnnNode):
                raise ArchError(f"node {l} must be an RnnNode, got {type(node).__name__}")
            if node.act not in ACTIVATIONS:
                raise ArchError(f"node {l}: unknown activation {node.act!r}; choose one of {', '.join(ACTIVATIONS)}")
            if l == 0:
                if node.input is not None:
                    raise ArchError("node 0 reads x_t and h_{t-1}; it must not have an input index")
            elif isinstance(node.input, bool) or not isinstance(node.input, int) or not 0 <= node.input < l:
                raise ArchError(f"node {l}: input must be the index of an earlier node (0..{l - 1}), "
                                f"got {node.input!r}")
        if self.output not in OUTPUT_MODES:
            raise ArchError(f"unknown output {self.output!r}; choose one of {', '.join(OUTPUT_MODES)}")
        if self.output == "mean" and len(self.nodes) < 2:
            raise ArchError("output 'mean' averages nodes 1..; the cell needs at least two nodes")

    # ---------------------------------------------------------------------------------------------------------
    # structure
    # ---------------------------------------------------------------------------------------------------------
    def loose_ends(self) -> tuple[int, ...]:
        """Indices of the nodes that no other node reads, in increasing order."""
        used = {node.input for node in self.nodes[1:]}
        return tuple(l for l in range(len(self.nodes)) if l not in used)

    def output_nodes(self) -> tuple[int, ...]:
        """The nodes whose mean is the cell output."""
        if self.output == "mean":
            return tuple(range(1, len(self.nodes)))
        return self.loose_ends()

    # ---------------------------------------------------------------------------------------------------------
    # JSON
    # ---------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        nodes: list[dict[str, Any]] = []
        for node in self.nodes:
            nodes.append({"act": node.act} if node.input is None else {"input": node.input, "act": node.act})
        return {"nodes": nodes, "output": self.output}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> RnnArch:
        if not isinstance(body, dict):
            raise ArchError("an rnn architecture must be a JSON object with 'nodes' and 'output'")
        unknown = set(body) - {"nodes", "output"}
        if unknown:
            raise ArchError(f"unknown field(s) {', '.join(sorted(unknown))} in rnn architecture; "
                            "expected 'nodes' and 'output'")
        raw = body.get("nodes")
        if not isinstance(raw, list):
            raise ArchError("rnn architecture needs 'nodes': a list like [{\"act\": \"tanh\"}, "
                            "{\"input\": 0, \"act\": \"relu\"}, ...]")
        nodes = []
        for l, item in enumerate(raw):
            if not isinstance(item, dict) or "act" not in item:
                raise ArchError(f"node {l} must be an object with 'act' (and 'input' for nodes after 0)")
            extra = set(item) - {"input", "act"}
            if extra:
                raise ArchError(f"node {l}: unknown field(s) {', '.join(sorted(extra))}; expected 'input', 'act'")
            if l > 0 and "input" not in item:
                raise ArchError(f"node {l} has no 'input'; give the index of the earlier node it reads")
            nodes.append(RnnNode(input=item.get("input"), act=item["act"]))
        output = body.get("output", "loose_ends")
        return cls(nodes=tuple(nodes), output=output)

    # ---------------------------------------------------------------------------------------------------------
    # authors' integer notation
    # ---------------------------------------------------------------------------------------------------------
    @classmethod
    def from_fixed_arc(cls, text: str) -> RnnArch:
        values = parse_ints(text, "rnn fixed_arc")
        if not values:
            raise ArchError("rnn fixed_arc is empty; give 'act_0 prev_1 act_1 ...' (odd length) or "
                            "'prev_1 act_1 ...' (even length, corrected code)")
        if len(values) % 2 == 1:
            codes, output = PAPER_ACT_CODES, "loose_ends"
            nodes = [RnnNode(None, _act_from_code(values[0], codes, 0))]
            pairs = values[1:]
        else:
            codes, output = CORRECTED_ACT_CODES, "mean"
            nodes = [RnnNode(None, "tanh")]
            pairs = values
        for i in range(0, len(pairs), 2):
            l = len(nodes)
            prev = pairs[i]
            if prev >= l:
                raise ArchError(f"rnn fixed_arc: node {l} reads node {prev}, which is not earlier (0..{l - 1})")
            nodes.append(RnnNode(prev, _act_from_code(pairs[i + 1], codes, l)))
        return cls(nodes=tuple(nodes), output=output)

    def to_fixed_arc(self) -> str:
        if self.output == "mean":
            if self.nodes[0].act != "tanh":
                raise ArchError("the corrected code's notation fixes node 0 to tanh; this cell's node 0 is "
                                f"{self.nodes[0].act}, so it has no integer form with output 'mean'")
            codes, values = CORRECTED_ACT_CODES, []
        else:
            codes, values = PAPER_ACT_CODES, [PAPER_ACT_CODES.index(self.nodes[0].act)]
        for node in self.nodes[1:]:
            values += [node.input, codes.index(node.act)]
        return " ".join(str(v) for v in values)

    def canonical(self) -> tuple[str, str]:
        """The output mode and the cell as a rooted tree up to the order of its nodes: every node after node 0
        reads one earlier node, so the cell is a tree rooted at node 0, and both outputs (the mean of the leaves,
        or of nodes 1..) do not depend on how the nodes are numbered. Two cells with the same key are the same
        network trained on their own (each node has its own weights in either numbering); the supernet scores
        them apart, since its weights belong to (node, input) positions. No node is ever unused: each node is an
        output or is read by a later one, whose chain ends at a leaf. The key is the AHU form: activation, then
        the sorted forms of the node's readers."""
        readers: list[list[int]] = [[] for _ in self.nodes]
        for l, node in enumerate(self.nodes[1:], 1):
            readers[node.input].append(l)  # type: ignore[index]  # nodes after 0 always have an input

        def form(l: int) -> str:
            return f"{self.nodes[l].act}({','.join(sorted(form(r) for r in readers[l]))})"

        return self.output, form(0)

    # ---------------------------------------------------------------------------------------------------------
    def describe(self) -> str:
        outs = self.output_nodes()
        what = "loose ends" if self.output == "loose_ends" else "nodes 1.."
        lines = [f"rnn cell, {len(self.nodes)} nodes, output = mean of {what} {{{', '.join(map(str, outs))}}}"]
        for l, node in enumerate(self.nodes):
            src = "x_t, h_{t-1}" if node.input is None else f"node {node.input}"
            lines.append(f"  node {l}: {node.act}({src})")
        return "\n".join(lines)


def _act_from_code(code: int, codes: tuple[str, ...], node: int) -> str:
    if code >= len(codes):
        order = ", ".join(f"{i} {name}" for i, name in enumerate(codes))
        raise ArchError(f"rnn fixed_arc: node {node} has activation code {code}; valid codes are {order}")
    return codes[code]


__all__ = ["ACTIVATIONS", "CORRECTED_ACT_CODES", "OUTPUT_MODES", "PAPER_ACT_CODES", "RnnArch", "RnnNode"]
