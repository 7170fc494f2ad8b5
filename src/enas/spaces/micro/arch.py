"""Architectures of the micro (cell) CNN space: a normal cell and a reduction cell (spec 2.3).

Each cell is a DAG. Indices 0 and 1 are the cell inputs (the outputs of the cell before the previous one and of the
previous cell); index ``i >= 2`` is the ``i - 2``-th computed node. A computed node reads two earlier indices, applies
one op to each and adds the results. The nodes that no other node reads ("loose ends", the inputs included) form the
cell output.

JSON body::

    {"normal": [{"inputs": [0, 1], "ops": ["sep3x3", "identity"]}, ...], "reduce": [...]}

The authors' integer notation lists per node ``index_1 op_1 index_2 op_2`` with op ids 0 sep3x3, 1 sep5x5,
2 avgpool3x3, 3 maxpool3x3, 4 identity; the normal cell comes first, then the reduction cell, in one string.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from enas.arch import Arch, parse_ints, register_arch
from enas.errors import ArchError

#: Op names in the authors' id order (0..4); the controller's "micro_op" vocabulary.
MICRO_OP_NAMES: tuple[str, ...] = ("sep3x3", "sep5x5", "avgpool3x3", "maxpool3x3", "identity")
NUM_CELL_INPUTS = 2
CELL_NAMES = ("normal", "reduce")

MAX_NODES = 50  # generous beside the paper's 5: a bound checked before any model is built


@dataclass(frozen=True)
class MicroNode:
    """One computed node: ``ops[0](states[inputs[0]]) + ops[1](states[inputs[1]])``."""

    inputs: tuple[int, int]
    ops: tuple[str, str]


Cell = tuple[MicroNode, ...]


def loose_ends(cell: Cell) -> tuple[int, ...]:
    """Indices (inputs included) that no node of ``cell`` reads, in increasing order: the cell's output."""
    used = {i for node in cell for i in node.inputs}
    return tuple(i for i in range(NUM_CELL_INPUTS + len(cell)) if i not in used)


def _check_cell(cell: Cell, which: str) -> None:
    if not cell:
        raise ArchError(f"the {which} cell has no nodes; give at least one node")
    for k, node in enumerate(cell):
        index = k + NUM_CELL_INPUTS
        for slot, (i, op) in enumerate(zip(node.inputs, node.ops)):
            if not 0 <= i < index:
                raise ArchError(
                    f"{which} cell node {index} input {slot + 1} is {i}; a node may only read indices 0..{index - 1}"
                )
            if op not in MICRO_OP_NAMES:
                raise ArchError(
                    f"{which} cell node {index} op {slot + 1} is {op!r}; choose one of {', '.join(MICRO_OP_NAMES)}"
                )


def _node_from_dict(obj: Any, where: str) -> MicroNode:
    if not isinstance(obj, dict) or set(obj) != {"inputs", "ops"}:
        raise ArchError(f"{where} must be an object with exactly the keys 'inputs' and 'ops'")
    inputs, ops = obj["inputs"], obj["ops"]
    if not isinstance(inputs, list) or len(inputs) != 2 or not all(type(i) is int for i in inputs):
        raise ArchError(f"{where}.inputs must be a list of two integers, got {inputs!r}")
    if not isinstance(ops, list) or len(ops) != 2 or not all(isinstance(o, str) for o in ops):
        raise ArchError(f"{where}.ops must be a list of two op names, got {ops!r}")
    return MicroNode(inputs=(inputs[0], inputs[1]), ops=(ops[0], ops[1]))


@register_arch
@dataclass(frozen=True)
class MicroArch(Arch):
    """A normal cell and a reduction cell with the same number of computed nodes."""

    normal: Cell
    reduce: Cell

    space = "micro"

    def __post_init__(self) -> None:
        for which in CELL_NAMES:
            cell = getattr(self, which)
            if not isinstance(cell, tuple) or not all(isinstance(n, MicroNode) for n in cell):
                raise ArchError(f"the {which} cell must be a tuple of MicroNode")
            _check_cell(cell, which)
        if len(self.normal) > MAX_NODES:
            raise ArchError(f"a micro cell has at most {MAX_NODES} nodes (the paper's has 5), got {len(self.normal)}")
        if len(self.normal) != len(self.reduce):
            raise ArchError(
                f"the normal cell has {len(self.normal)} nodes and the reduction cell {len(self.reduce)}; "
                "both cells must have the same number of nodes"
            )

    @property
    def num_nodes(self) -> int:
        """Computed nodes per cell (the paper's B - 2)."""
        return len(self.normal)

    # ---- JSON -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            which: [{"inputs": list(n.inputs), "ops": list(n.ops)} for n in getattr(self, which)]
            for which in CELL_NAMES
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> MicroArch:
        if not isinstance(body, dict) or set(body) != set(CELL_NAMES):
            keys = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise ArchError(f"a micro architecture needs exactly the fields 'normal' and 'reduce', got {keys}")
        cells = {}
        for which in CELL_NAMES:
            nodes = body[which]
            if not isinstance(nodes, list):
                raise ArchError(f"'{which}' must be a list of nodes, got {type(nodes).__name__}")
            cells[which] = tuple(_node_from_dict(n, f"{which}[{k}]") for k, n in enumerate(nodes))
        return cls(**cells)

    # ---- authors' integer notation ------------------------------------------------------------------------------
    def to_fixed_arc(self) -> str:
        ints = []
        for cell in (self.normal, self.reduce):
            for node in cell:
                for i, op in zip(node.inputs, node.ops):
                    ints += [i, MICRO_OP_NAMES.index(op)]
        return " ".join(map(str, ints))

    @classmethod
    def from_fixed_arc(cls, text: str) -> MicroArch:
        ints = parse_ints(text, "micro fixed_arc")
        if not ints or len(ints) % 8:
            raise ArchError(
                f"a micro fixed_arc has 4 integers per node (index_1 op_1 index_2 op_2) for the normal cell and then "
                f"as many for the reduction cell, so its length is a positive multiple of 8; got {len(ints)}"
            )
        num_nodes = len(ints) // 8
        cells = []
        for c in range(2):
            nodes = []
            for k in range(num_nodes):
                i1, o1, i2, o2 = ints[4 * (c * num_nodes + k): 4 * (c * num_nodes + k) + 4]
                for o in (o1, o2):
                    if o >= len(MICRO_OP_NAMES):
                        raise ArchError(f"micro fixed_arc op id {o} is out of range; op ids are 0..4")
                nodes.append(MicroNode(inputs=(i1, i2), ops=(MICRO_OP_NAMES[o1], MICRO_OP_NAMES[o2])))
            cells.append(tuple(nodes))
        return cls(normal=cells[0], reduce=cells[1])

    # ---- equivalence -------------------------------------------------------------------------------------------
    def canonical(self) -> tuple[tuple, tuple]:
        """Each cell up to the numbering of its nodes and the order of the two operands of each add: the least
        relabelled form over every order that computes each node after its inputs. Renumbering permutes only the
        order of the concatenated loose ends, which the next 1x1 convolution absorbs, so archs with the same key
        are the same network trained on their own (the supernet, whose weights belong to positions, scores them
        apart). No node is ever unused: a node that no other node reads is a loose end, part of the output."""
        return _canonical_cell(self.normal), _canonical_cell(self.reduce)

    # ---- display -----------------------------------------------------------------------------------------------
    def describe(self) -> str:
        lines = [f"micro architecture: {self.num_nodes} nodes per cell"]
        for which, title in zip(CELL_NAMES, ("normal cell", "reduction cell")):
            cell = getattr(self, which)
            lines.append(f"{title}:")
            for k, node in enumerate(cell):
                terms = " + ".join(f"{op}({i})" for i, op in zip(node.inputs, node.ops))
                lines.append(f"  n{k + NUM_CELL_INPUTS} = {terms}")
            lines.append(f"  output = concat({', '.join(f'n{i}' for i in loose_ends(cell))})")
        return "\n".join(lines)


#: Orders of a cell's nodes tried by `MicroArch.canonical` before it settles for sorting the operands of each add
#: (which merges fewer equivalent cells, never two different ones); a 5-node cell has at most 120.
CANONICAL_ORDERS_MAX = 40_320


def _node_orders(cell: Cell) -> Iterator[tuple[int, ...]]:
    """Every order of the nodes of ``cell`` (0-based) that computes each node after the nodes it reads."""
    n, order, placed = len(cell), [], [False] * len(cell)

    def extend() -> Iterator[tuple[int, ...]]:
        if len(order) == n:
            yield tuple(order)
            return
        for k in range(n):
            if not placed[k] and all(i < NUM_CELL_INPUTS or placed[i - NUM_CELL_INPUTS] for i in cell[k].inputs):
                placed[k] = True
                order.append(k)
                yield from extend()
                order.pop()
                placed[k] = False

    return extend()


def _relabelled(cell: Cell, order: tuple[int, ...]) -> tuple:
    """``cell`` with its nodes computed in ``order``: per node the sorted (input, op) pairs, inputs renumbered."""
    index = {i: i for i in range(NUM_CELL_INPUTS)}
    index.update({k + NUM_CELL_INPUTS: pos + NUM_CELL_INPUTS for pos, k in enumerate(order)})
    return tuple(tuple(sorted((index[i], op) for i, op in zip(cell[k].inputs, cell[k].ops))) for k in order)


def _canonical_cell(cell: Cell) -> tuple:
    orders = list(islice(_node_orders(cell), CANONICAL_ORDERS_MAX + 1))
    if len(orders) > CANONICAL_ORDERS_MAX:
        return _relabelled(cell, tuple(range(len(cell))))
    return min(_relabelled(cell, order) for order in orders)


#: The published CIFAR-10 cells of the authors' final-training script (spec appendix).
PUBLISHED_MICRO_ARC = "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"

__all__ = ["MICRO_OP_NAMES", "PUBLISHED_MICRO_ARC", "Cell", "MicroArch", "MicroNode", "loose_ends"]
