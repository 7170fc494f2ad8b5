"""Cells of the micro space (spec 2.3): the wiring written once, run by the supernet's search cell (shared weights,
any cell architecture) and by the child's cell (one fixed cell architecture).

A cell reads the outputs of the two previous cells (``s0``: prev-prev, ``s1``: prev), calibrates both to ``c``
channels and the cell's input size, computes its nodes (each the sum of two ops applied to earlier states) and
returns its loose ends, either projected back to ``c`` channels (search form: concat -> ReLU -> 1x1 conv -> BN) or
plainly concatenated (final form).

Reduction cells follow the paper in both the supernet and the child: ops reading a cell input (index 0 or 1) run
with stride 2 (identity becomes a factorized reduction), and loose cell inputs are factorized-reduced before the
concatenation. (The authors' search code instead reduced the previous output explicitly and ran the reduction cell
at stride 1, dropping prev-prev, spec 8.6 item 5.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from enas.spaces.micro.arch import NUM_CELL_INPUTS, Cell, loose_ends
from enas.spaces.ops import MICRO_OPS, FactorizedReduce, ReLUConvBN, bn, drop_path


def drop_path_keep_prob(position: int, num_cells: int, keep_prob: float, progress: float) -> float:
    """Drop-path keep probability of the cell at ``position`` (0-based, of ``num_cells``) (spec 2.3).

    Deeper cells drop more: p_l = 1 - (l + 1) / num_cells * (1 - keep_prob); the drop rate grows linearly over
    training: p = 1 - progress * (1 - p_l), with ``progress = min(1, (step + 1) / total_steps)`` set by the trainer.
    """
    layer_keep = 1.0 - (position + 1) / num_cells * (1.0 - keep_prob)
    return 1.0 - min(1.0, max(0.0, progress)) * (1.0 - layer_keep)


def _calibration(c_in: int, size_in: int, size: int, c: int, track: bool) -> nn.Module:
    """Bring a cell input to ``c`` channels and the spatial size ``size`` (the authors' input calibration)."""
    if size_in != size:  # prev-prev is larger when the previous cell reduced
        return FactorizedReduce(c_in, c, relu=True, track_running_stats=track)
    if c_in != c:
        return ReLUConvBN(c_in, c, 1, track_running_stats=track)
    return nn.Identity()


class _Cell(nn.Module):
    """What every micro cell has: input calibration, the node loop, the loose-end gathering."""

    def __init__(self, c_pp: int, c_p: int, size_pp: int, size_p: int, c: int, reduction: bool, track: bool):
        super().__init__()
        self.c, self.reduction = c, reduction
        self.calib0 = _calibration(c_pp, size_pp, size_p, c, track)
        self.calib1 = _calibration(c_p, size_p, size_p, c, track)

    def _stride(self, input_id: int) -> int:
        return 2 if self.reduction and input_id < NUM_CELL_INPUTS else 1

    def _nodes(self, s0: torch.Tensor, s1: torch.Tensor, cell: Cell, keep_prob: float,
               apply_op: Callable[[int, int, int, str, torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """All states of the cell: the two calibrated inputs, then one per node. ``apply_op(node, slot, input_id,
        op_name, x)`` runs one op; drop-path (training only) hits every op output but identity's."""
        states = [s0, s1]
        for k, node in enumerate(cell):
            total = None
            for slot, (j, op) in enumerate(zip(node.inputs, node.ops)):
                y = apply_op(k, slot, j, op, states[j])  # (B, c, H', W')
                if MICRO_OPS[op].drop_path:
                    y = drop_path(y, keep_prob, self.training)
                total = y if total is None else total + y
            states.append(total)
        return states

    def _loose(self, states: list[torch.Tensor], loose: tuple[int, ...]) -> torch.Tensor:
        """Concatenate the loose ends (B, len(loose) * c, H', W'); loose inputs of a reduction cell are reduced."""
        return torch.cat([self.loose_reduce[str(j)](states[j]) if self.reduction and j < NUM_CELL_INPUTS
                          else states[j] for j in loose], dim=1)


class SearchCell(_Cell):
    """A supernet cell: shared weights for every cell architecture of ``num_nodes`` nodes (spec 2.3).

    Ops with weights keep them per (node, slot, op, input index): one Parameter per (node, slot, op) whose rows are
    the input indices (see `enas.spaces.ops.SharedSepConv`); only the sampled op of each slot is computed. The output
    projection keeps one c x c weight block per state index and gathers the blocks of the loose ends. Every BN uses
    batch statistics, in eval mode too (spec 8.2).
    """

    def __init__(self, c_pp: int, c_p: int, size_pp: int, size_p: int, c: int, reduction: bool, num_nodes: int):
        super().__init__(c_pp, c_p, size_pp, size_p, c, reduction, track=False)
        self.c_out = c
        # nodes[k][slot][op name]: the shared op of node k + 2, which may read NUM_CELL_INPUTS + k states
        self.nodes = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleDict({name: op.build_shared(NUM_CELL_INPUTS + k, c, reduction)
                               for name, op in MICRO_OPS.items()})
                for _slot in range(2)
            )
            for k in range(num_nodes)
        )
        if reduction:
            self.loose_reduce = nn.ModuleDict({str(j): FactorizedReduce(c, c, track_running_stats=False)
                                               for j in range(NUM_CELL_INPUTS)})
        # (c_out, state index, c_in); He-normal with the fan-in of one state's block
        self.out_weight = nn.Parameter(torch.randn(c, num_nodes + NUM_CELL_INPUTS, c) * (2 / c) ** 0.5)
        self.out_bn = bn(c, track_running_stats=False)
        self._index_cache: dict[tuple, torch.Tensor] = {}

    def near_identity_(self, noise: float = 0.1) -> None:
        """Choice-consistent initialisation (docs/fidelity.md): every per-choice copy of a weight (the rows of the
        shared separable convs, the per-input factorized reductions, the output projection's per-state blocks)
        starts near the identity, so that any sampled cell first passes its inputs' channels on unscrambled."""
        for node in self.nodes:
            for slot in node:
                for op in slot.values():
                    if hasattr(op, "near_identity_"):
                        op.near_identity_(noise)
        if self.reduction:
            for reduce in self.loose_reduce.values():
                reduce.near_identity_(noise)
        with torch.no_grad():
            c = self.c
            self.out_weight.normal_(0.0, noise * (2.0 / c) ** 0.5)
            self.out_weight += torch.eye(c)[:, None, :]

    def _out_weight(self, loose: tuple[int, ...]) -> torch.Tensor:
        """(c, len(loose) * c, 1, 1): the blocks of the loose ends, in order."""
        w = self.out_weight
        key = (loose, w.device)
        if key not in self._index_cache:  # a device index tensor per loose set, made once (no host sync per step)
            self._index_cache[key] = torch.tensor(loose, device=w.device)
        return w.index_select(1, self._index_cache[key]).reshape(self.c, -1, 1, 1)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, cell: Cell, keep_prob: float = 1.0) -> torch.Tensor:
        def apply_op(k: int, slot: int, j: int, op: str, x: torch.Tensor) -> torch.Tensor:
            return self.nodes[k][slot][op](x, j, self._stride(j))

        states = self._nodes(self.calib0(s0), self.calib1(s1), cell, keep_prob, apply_op)
        loose = loose_ends(cell)
        x = F.relu(self._loose(states, loose))  # (B, len(loose) * c, H', W')
        return self.out_bn(F.conv2d(x, self._out_weight(loose)))  # (B, c, H', W')

    def child_state(self, cell: Cell) -> dict[str, torch.Tensor]:
        """The state of ``ChildCell(..., cell, final=False)`` holding this cell's weights of that path."""
        state = {}
        for name in ("calib0", "calib1", "out_bn"):
            state.update({f"{name}.{k}": v for k, v in getattr(self, name).state_dict().items()})
        for k, node in enumerate(cell):
            for slot, (j, op) in enumerate(zip(node.inputs, node.ops)):
                sub = self.nodes[k][slot][op].child_state(j, self._stride(j))
                state.update({f"ops.{k}.{slot}.{key}": v for key, v in sub.items()})
        loose = loose_ends(cell)
        for j in loose:
            if self.reduction and j < NUM_CELL_INPUTS:
                state.update({f"loose_reduce.{j}.{k}": v for k, v in self.loose_reduce[str(j)].state_dict().items()})
        state["out_conv.weight"] = self._out_weight(loose)
        return {k: v.detach().clone() for k, v in state.items()}


class ChildCell(_Cell):
    """A cell of one fixed architecture. ``final=False``: the search form (same layers and batch-statistics BNs as
    `SearchCell`, c output channels); ``final=True``: the final form (a "base" ReLU-1x1conv-BN on the prev input,
    output = concat of the loose ends, len(loose) * c channels; ordinary BNs)."""

    def __init__(self, c_pp: int, c_p: int, size_pp: int, size_p: int, c: int, reduction: bool, cell: Cell,
                 final: bool):
        super().__init__(c_pp, c_p, size_pp, size_p, c, reduction, track=final)
        self.cell, self.final = cell, final
        self.loose = loose_ends(cell)
        self.base = ReLUConvBN(c, c, 1) if final else nn.Identity()
        self.ops = nn.ModuleList(
            nn.ModuleList(MICRO_OPS[op].build(c, self._stride(j), final) for j, op in zip(node.inputs, node.ops))
            for node in cell
        )
        if reduction:
            self.loose_reduce = nn.ModuleDict({str(j): FactorizedReduce(c, c, track_running_stats=final)
                                               for j in self.loose if j < NUM_CELL_INPUTS})
        if final:
            self.c_out = len(self.loose) * c
        else:
            self.c_out = c
            self.out_conv = nn.Conv2d(len(self.loose) * c, c, 1, bias=False)
            self.out_bn = bn(c, track_running_stats=False)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, keep_prob: float = 1.0) -> torch.Tensor:
        def apply_op(k: int, slot: int, j: int, op: str, x: torch.Tensor) -> torch.Tensor:
            return self.ops[k][slot](x)

        states = self._nodes(self.calib0(s0), self.base(self.calib1(s1)), self.cell, keep_prob, apply_op)
        x = self._loose(states, self.loose)  # (B, len(loose) * c, H', W')
        if self.final:
            return x
        return self.out_bn(self.out_conv(F.relu(x)))  # (B, c, H', W')


class AuxHead(nn.Module):
    """Auxiliary classifier (spec 2.3): ReLU -> 5x5 avg-pool stride 3 (valid) -> 1x1 conv 128 -> BN -> ReLU ->
    conv 768 with a kernel as large as the pooled map ('same' padding) -> BN -> ReLU -> GAP -> linear.

    On maps smaller than 5x5 (small images) the pooling window shrinks to the map size, so the head still runs.
    """

    def __init__(self, c_in: int, size: int, num_classes: int, track: bool = True):
        super().__init__()
        window = min(5, size)
        pooled = (size - window) // 3 + 1
        self.pool = nn.AvgPool2d(window, 3)
        self.proj = nn.Conv2d(c_in, 128, 1, bias=False)
        self.proj_bn = bn(128, track_running_stats=track)
        before = (pooled - 1) // 2  # TF's SAME padding: the extra pixel of an even kernel goes after
        self.pad = (before, pooled - 1 - before) * 2
        self.conv = nn.Conv2d(128, 768, pooled, bias=False)
        self.bn = bn(768, track_running_stats=track)
        self.fc = nn.Linear(768, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, num_classes)
        x = self.pool(F.relu(x))  # (B, c_in, h, h), h = (H - window) // 3 + 1
        x = F.relu(self.proj_bn(self.proj(x)))  # (B, 128, h, h)
        x = F.relu(self.bn(self.conv(F.pad(x, self.pad))))  # (B, 768, h, h)
        return self.fc(x.mean(dim=(2, 3)))
