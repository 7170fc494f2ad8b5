"""The arch as data in the micro space: one kernel sequence for every cell architecture (``model.cell=graph``).

The default supernet cell (`enas.spaces.micro.cells.SearchCell`) runs only the sampled path: its kernels change
with every arch, so a GPU step is a stream of small launches that no CUDA graph can capture once for all archs.
Here the sampled arch arrives as index tensors (`arch_index`) and every slot of every node runs the same kernels:

* the slot's input is gathered from the stack of the cell's earlier states by its index;
* each of the space's ops runs on it (a separable conv gathers its per-input weight row by the same index, a
  reduction cell's identity its per-input factorized reduction), and the sampled op's output is gathered from the
  stack of the op outputs by the op index;
* in a reduction cell a slot may read a cell input (full size, ops at stride 2) or a node (half size, stride 1):
  both are computed and the one the slot reads is kept;
* the cell output concatenates every state and masks, in the 1x1 projection, the weight blocks of the states that
  are not loose ends.

This is the authors' micro supernet computation (their code ran every op of a slot and picked one by ``op_id``, and
gathered the shared weights by ``prev_cell``): it costs the FLOPs of every candidate op, and in exchange one
``torch.compile`` artefact, or one CUDA graph, serves every sampled arch. Outputs and gradients equal the
sampled-path cell's (tests/spaces/micro/test_micro_graph.py); the weights of ops the arch did not sample get a zero
gradient instead of none, so weight decay and momentum move them as they did in the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from enas.kernels.compiled import to_device
from enas.kernels.graph_ops import pick
from enas.spaces.micro.arch import MICRO_OP_NAMES, NUM_CELL_INPUTS, MicroArch, loose_ends
from enas.spaces.ops import MICRO_OPS

assert tuple(MICRO_OPS) == MICRO_OP_NAMES, "the op registry must follow the authors' op order"
IDENTITY = MICRO_OP_NAMES.index("identity")

# Fields of a slot row of `arch_index`: the input index, the op index, whether the input is a cell input, the
# node the input is (or 0), the cell input it is (or 1).
INPUT, OP, FROM_CELL_INPUT, NODE, CELL_INPUT = range(5)


def arch_index(arch: MicroArch, device: torch.device) -> tuple[Tensor, Tensor]:
    """``arch`` as tensors on ``device``: slots (2 cells, nodes, 2 slots, 5 fields) int64 (fields above; cell 0 is
    the normal cell) and loose (2 cells, nodes + 2) float, 1.0 where the state is a loose end of the cell."""
    slots, loose = [], []
    for cell in (arch.normal, arch.reduce):
        slots.append([[[j, MICRO_OP_NAMES.index(op), int(j < NUM_CELL_INPUTS), max(j - NUM_CELL_INPUTS, 0),
                        min(j, NUM_CELL_INPUTS - 1)] for j, op in zip(node.inputs, node.ops)] for node in cell])
        ends = set(loose_ends(cell))
        loose.append([float(i in ends) for i in range(NUM_CELL_INPUTS + len(cell))])
    return to_device(torch.tensor(slots), device), to_device(torch.tensor(loose), device)


def _slot(ops, x: Tensor, input_id: Tensor, op: Tensor, stride: int) -> Tensor:
    """Every op of a slot on ``x``, then the one at ``op``."""
    return pick([ops[name].forward_graph(x, input_id, stride) for name in MICRO_OP_NAMES], op)


def _drop_path(y: Tensor, op: Tensor, keep: Tensor) -> Tensor:
    """Drop-path on a slot output unless the slot's op is the identity (as `enas.spaces.ops.drop_path`)."""
    mask = torch.bernoulli(keep.expand(y.shape[0], 1, 1, 1).to(y.dtype)) / keep
    return y * torch.where(op == IDENTITY, torch.ones_like(mask), mask)


def graph_cell(cell, s0: Tensor, s1: Tensor, slots: Tensor, loose: Tensor, keep: Tensor | None = None) -> Tensor:
    """One `SearchCell` with its arch as data: slots (nodes, 2, 5) and loose (nodes + 2,) are one cell's rows of
    `arch_index`; ``keep``: a 0-d drop-path keep probability (training), or None for no drop-path.
    Same result as ``cell(s0, s1, the cell's arch, keep)``."""
    inputs = [cell.calib0(s0), cell.calib1(s1)]  # (B, c, H, W) each
    nodes: list[Tensor] = []
    for k, node_ops in enumerate(cell.nodes):
        total = None
        for s, ops in enumerate(node_ops):
            row = slots[k, s]
            if not cell.reduction:
                y = _slot(ops, pick(inputs + nodes, row[INPUT]), row[INPUT], row[OP], 1)
            else:  # a cell input at stride 2, or a node (there are some from the second node on) at stride 1
                y = _slot(ops, pick(inputs, row[CELL_INPUT]), row[CELL_INPUT], row[OP], 2)
                if nodes:
                    from_node = _slot(ops, pick(nodes, row[NODE]), row[NODE] + NUM_CELL_INPUTS, row[OP], 1)
                    y = torch.where(row[FROM_CELL_INPUT].bool(), y, from_node)
            if keep is not None:
                y = _drop_path(y, row[OP], keep)
            total = y if total is None else total + y
        nodes.append(total)
    if cell.reduction:
        inputs = [cell.loose_reduce[str(j)](t) for j, t in enumerate(inputs)]
    x = F.relu(torch.cat(inputs + nodes, dim=1))  # (B, (nodes + 2) c, H', W')
    weight = (cell.out_weight * loose[:, None].to(cell.out_weight.dtype)).reshape(cell.c, -1, 1, 1)
    return cell.out_bn(F.conv2d(x, weight))  # (B, c, H', W')


__all__ = ["arch_index", "graph_cell"]
