"""The micro (cell) CNN search space of ENAS (spec 2.3, 3.4): decisions, the supernet and the child networks.

Network layout (both supernet and child): stem 3x3 conv -> 3C channels -> BN; then ``num_layers + 2`` cells
reading the outputs of the two previous cells (the stem's output twice at first); reduction cells at positions
``pd`` and ``2 pd + 1`` with ``pd = num_layers // 3`` halve the spatial size and double the channels; head:
ReLU -> global average pool -> dropout -> linear (no bias). An optional auxiliary head reads the output of the first
cell after the second reduction (training mode only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from enas.arch import Arch
from enas.errors import ArchError, ConfigError
from enas.kernels.compiled import CompiledPerDevice, check_cell_options
from enas.spaces.base import Action, Decision, Space, TaskInfo
from enas.spaces.micro.arch import CELL_NAMES, MICRO_OP_NAMES, NUM_CELL_INPUTS, MicroArch, MicroNode
from enas.spaces.micro.cells import AuxHead, ChildCell, SearchCell, drop_path_keep_prob
from enas.spaces.micro.graph import arch_index, graph_cell
from enas.spaces.ops import bn, channels_last, he_init_

#: Initialisations of the supernet's per-choice weights (see `MicroSpaceConfig.choice_init`).
CHOICE_INITS = ("consistent", "independent")

#: The authors' fixed op-logit bias of the normal cell (favours separable convs), spec 3.4.
NORMAL_OP_BIAS = (0.25, 0.25, -0.25, -0.25, -0.25)


@dataclass
class MicroSpaceConfig:
    """Sizes and regularisers of the micro networks; defaults are the authors' search values (spec 2.3, 4.2).

    Final training (spec 6.2) uses num_layers=15, channels=36, keep_prob=0.8, aux_head=True, drop_path_keep=0.6.
    """

    num_layers: int = 6  # cells = num_layers + 2 (two of them reduction cells)
    channels: int = 20  # C of the first stage; doubles at each reduction
    num_nodes: int = 5  # computed nodes per cell (the paper's B - 2)
    keep_prob: float = 0.9  # dropout keep probability before the classifier
    aux_head: bool = False  # auxiliary classifier after the first cell after the second reduction
    drop_path_keep: float = 1.0  # drop-path keep probability of the last cell (1.0: no drop-path)
    # supernet only: "consistent" starts every per-choice weight near the identity (docs/fidelity.md); "independent"
    # draws each copy on its own (He-normal), as the authors' code did
    choice_init: str = "consistent"
    # supernet only: "path" runs only the sampled ops; "graph" takes the arch as index tensors, one kernel sequence
    # for every arch (enas.spaces.micro.graph); compile_cell=true compiles that once (a CUDA graph on a GPU)
    cell: str = "path"
    compile_cell: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError on the first bad value (also on construction)."""
        if self.num_layers < 1:
            raise ConfigError(f"micro num_layers must be >= 1 (cells = num_layers + 2), got {self.num_layers}")
        if self.channels < 2 or self.channels % 2:
            raise ConfigError(f"micro channels must be a positive even number (factorized reductions split channels "
                              f"in two), got {self.channels}")
        if self.num_nodes < 1:
            raise ConfigError(f"micro num_nodes must be >= 1, got {self.num_nodes}")
        check_cell_options(self.cell, self.compile_cell)
        if self.choice_init not in CHOICE_INITS:
            raise ConfigError(f"micro choice_init must be one of {', '.join(CHOICE_INITS)}, got {self.choice_init!r}")
        for name in ("keep_prob", "drop_path_keep"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"micro {name} must be in (0, 1], got {value}")

    @property
    def num_cells(self) -> int:
        return self.num_layers + 2

    @property
    def reduction_positions(self) -> tuple[int, int]:
        pd = self.num_layers // 3
        return pd, 2 * pd + 1


class _MicroNetwork(nn.Module):
    """Stem, cells, heads. Subclasses build the cells and say how a cell runs."""

    def __init__(self, config: MicroSpaceConfig, info: TaskInfo, make_cell, track: bool):
        super().__init__()
        if info.in_channels <= 0 or info.image_size <= 0 or info.num_classes <= 1:
            raise ConfigError(f"the micro space needs images and classes (in_channels, image_size > 0, "
                              f"num_classes > 1), got {info}")
        self.config = config
        c = config.channels
        self.stem = nn.Sequential(nn.Conv2d(info.in_channels, 3 * c, 3, padding=1, bias=False),
                                  bn(3 * c, track_running_stats=track))
        reductions = config.reduction_positions
        self.aux_position = reductions[1] + 1
        self.aux_head: AuxHead | None = None
        c_pp = c_p = 3 * c
        size_pp = size_p = info.image_size
        cells = []
        for position in range(config.num_cells):
            reduction = position in reductions
            if reduction:
                c *= 2
            cell = make_cell(c_pp, c_p, size_pp, size_p, c, reduction)
            cells.append(cell)
            size = (size_p + 1) // 2 if reduction else size_p  # stride 2 with SAME padding: ceil(H / 2)
            c_pp, c_p, size_pp, size_p = c_p, cell.c_out, size_p, size
            if config.aux_head and position == self.aux_position:
                self.aux_head = AuxHead(c_p, size_p, info.num_classes, track)
        self.cells = nn.ModuleList(cells)
        self.classifier = nn.Linear(c_p, info.num_classes, bias=False)
        #: Training progress in [0, 1] for the drop-path schedule, min(1, (step + 1) / total_steps); the trainer
        #: sets it every step. 1.0 (full drop-path strength) unless told otherwise.
        self.drop_path_progress: float = 1.0
        he_init_(self)

    def _run_cell(self, cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, arch: MicroArch | None,
                  keep_prob: float) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, arch: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """images (B, in_channels, H, W) -> (logits (B, K), aux logits (B, K) in training mode with aux head)."""
        cfg = self.config

        def run_cell(position: int, cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
            keep = drop_path_keep_prob(position, cfg.num_cells, cfg.drop_path_keep, self.drop_path_progress)
            return self._run_cell(cell, s0, s1, arch, keep)

        return self._network(images, run_cell)

    def _network(self, images: torch.Tensor, run_cell) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stem, cells (``run_cell(position, cell, s0, s1)``), heads."""
        cfg = self.config
        s0 = s1 = channels_last(self.stem(images))  # (B, 3C, H, W)
        aux_logits = None
        for position, cell in enumerate(self.cells):
            s0, s1 = s1, run_cell(position, cell, s0, s1)
            if position == self.aux_position and self.aux_head is not None and self.training:
                aux_logits = self.aux_head(s1)
        x = F.relu(s1).mean(dim=(2, 3))  # (B, c_last)
        x = F.dropout(x, 1.0 - cfg.keep_prob, self.training)
        return self.classifier(x), aux_logits


class MicroSupernet(_MicroNetwork):
    """Shared weights for every architecture of the space; ``forward(images, arch)`` runs only ``arch``'s path.
    Every BN uses batch statistics, also in eval mode (the authors' micro search, spec 8.2)."""

    def __init__(self, config: MicroSpaceConfig, info: TaskInfo):
        def make_cell(c_pp, c_p, size_pp, size_p, c, reduction):
            return SearchCell(c_pp, c_p, size_pp, size_p, c, reduction, config.num_nodes)

        super().__init__(config, info, make_cell, track=False)
        if config.choice_init == "consistent":
            for cell in self.cells:
                cell.near_identity_()
        self.set_cell(config.cell, config.compile_cell)

    def set_cell(self, cell: str, compiled: bool = False, backend: str | Callable[..., object] = "inductor") -> None:
        """Run the cells as ``cell``: "path" (only the sampled ops) or "graph" (the arch as index tensors,
        `enas.spaces.micro.graph`); ``compiled``: the graph network through ``torch.compile`` with ``backend``.
        The weights stay as they are."""
        check_cell_options(cell, compiled)
        self.cell = cell
        self._graph_fn = CompiledPerDevice(_graph_network, backend) if compiled else _graph_network

    def _run_cell(self, cell, s0, s1, arch, keep_prob):
        return cell(s0, s1, arch.reduce if cell.reduction else arch.normal, keep_prob)

    def forward(self, images: torch.Tensor, arch: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not isinstance(arch, MicroArch):
            raise TypeError(f"the micro supernet needs a MicroArch to run, got {type(arch).__name__}")
        if arch.num_nodes != self.config.num_nodes:
            raise ArchError(f"the architecture has {arch.num_nodes} nodes per cell; this supernet has "
                            f"{self.config.num_nodes}")
        if self.cell == "path":
            return super().forward(images, arch)
        cfg = self.config
        keeps = None
        if self.training and cfg.drop_path_keep < 1.0:  # a tensor: its value changes every step
            keeps = torch.tensor([drop_path_keep_prob(p, cfg.num_cells, cfg.drop_path_keep, self.drop_path_progress)
                                  for p in range(cfg.num_cells)], device=images.device)
        slots, loose = arch_index(arch, images.device)
        return self._graph_fn(images, self, slots, loose, keeps)


class MicroChild(_MicroNetwork):
    """A standalone network for one architecture; ``arch`` arguments of forward are ignored."""

    def __init__(self, config: MicroSpaceConfig, info: TaskInfo, arch: MicroArch, final: bool = True):
        def make_cell(c_pp, c_p, size_pp, size_p, c, reduction):
            return ChildCell(c_pp, c_p, size_pp, size_p, c, reduction, arch.reduce if reduction else arch.normal,
                             final)

        super().__init__(config, info, make_cell, track=final)
        self.arch, self.final = arch, final

    def _run_cell(self, cell, s0, s1, arch, keep_prob):
        return cell(s0, s1, keep_prob)


class MicroSpace(Space):
    """The micro space: a normal and a reduction cell of ``num_nodes`` nodes each."""

    name = "micro"
    arch_cls = MicroArch

    def __init__(self, config: MicroSpaceConfig | None = None):
        self.config = config or MicroSpaceConfig()

    def decisions(self) -> list[Decision]:
        """Per cell (normal: group 0, reduction: group 1) the two input anchors, then per node: two pointers, two
        ops and one anchor step, in the order of the authors' controller (index, index, op, op; spec 3.4)."""
        out = []
        for group, cell in enumerate(CELL_NAMES):
            for i in range(NUM_CELL_INPUTS):
                out.append(Decision("anchor", f"{cell}.input{i}", new_anchor=True, zero_anchor=True, feed="start",
                                    group=group))
            bias = NORMAL_OP_BIAS if cell == "normal" else None
            for i in range(NUM_CELL_INPUTS, NUM_CELL_INPUTS + self.config.num_nodes):
                for slot in (1, 2):
                    out.append(Decision("pointer", f"{cell}.node{i}.input{slot}", size=i, feed="anchor", group=group))
                for slot in (1, 2):
                    out.append(Decision("op", f"{cell}.node{i}.op{slot}", size=len(MICRO_OP_NAMES), vocab="micro_op",
                                        fixed_bias=bias, group=group))
                out.append(Decision("anchor", f"{cell}.node{i}", new_anchor=True, feed="start", group=group))
        return out

    def vocabularies(self) -> dict[str, list[str]]:
        return {"micro_op": list(MICRO_OP_NAMES)}

    def decode(self, actions: list[Action]) -> MicroArch:
        """Actions [per cell, per node: input1, input2, op1, op2] -> MicroArch."""
        n = self.config.num_nodes
        if len(actions) != 8 * n or not all(type(a) is int for a in actions):
            raise ArchError(f"the micro space takes {8 * n} integer actions, got {len(actions)}")
        for a in actions[2::4] + actions[3::4]:
            if not 0 <= a < len(MICRO_OP_NAMES):
                raise ArchError(f"micro op action {a} is out of range 0..{len(MICRO_OP_NAMES) - 1}")
        cells = []
        for c in range(2):
            nodes = []
            for k in range(n):
                i1, i2, o1, o2 = actions[4 * (c * n + k): 4 * (c * n + k) + 4]
                nodes.append(MicroNode(inputs=(i1, i2), ops=(MICRO_OP_NAMES[o1], MICRO_OP_NAMES[o2])))
            cells.append(tuple(nodes))
        return MicroArch(normal=cells[0], reduce=cells[1])  # validates the input indices

    def encode(self, arch: Arch) -> list[Action]:
        self._check(arch)
        actions: list[Action] = []
        for cell in (arch.normal, arch.reduce):
            for node in cell:
                actions += [*node.inputs, *(MICRO_OP_NAMES.index(op) for op in node.ops)]
        return actions

    def _check(self, arch: Arch) -> None:
        if not isinstance(arch, MicroArch):
            raise ArchError(f"expected a micro architecture, got one of the {getattr(arch, 'space', '?')!r} space")
        if arch.num_nodes != self.config.num_nodes:
            raise ArchError(f"the architecture has {arch.num_nodes} nodes per cell but the space is configured with "
                            f"num_nodes={self.config.num_nodes}; set num_nodes to {arch.num_nodes}")

    def build_supernet(self, info: TaskInfo) -> MicroSupernet:
        return MicroSupernet(self.config, info)

    def build_child(self, arch: Arch, info: TaskInfo, final: bool = True) -> MicroChild:
        self._check(arch)
        return MicroChild(self.config, info, arch, final)

    def child_state_from_supernet(self, supernet: nn.Module, arch: Arch) -> dict[str, Any]:
        """State for ``build_child(arch, info, final=False)``: the supernet's weights of ``arch``'s path."""
        self._check(arch)
        state = {k: v.detach().clone() for k, v in supernet.state_dict().items() if not k.startswith("cells.")}
        for position, cell in enumerate(supernet.cells):
            sub = cell.child_state(arch.reduce if cell.reduction else arch.normal)
            state.update({f"cells.{position}.{k}": v for k, v in sub.items()})
        return state


def _graph_network(images: torch.Tensor, net: MicroSupernet, slots: torch.Tensor, loose: torch.Tensor,
                   keeps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The supernet with its arch as data (`enas.spaces.micro.graph.arch_index`): the same kernels for every arch."""
    def run_cell(position: int, cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        c = int(cell.reduction)
        return graph_cell(cell, s0, s1, slots[c], loose[c], None if keeps is None else keeps[position])

    return net._network(images, run_cell)


__all__ = ["NORMAL_OP_BIAS", "MicroChild", "MicroSpace", "MicroSpaceConfig", "MicroSupernet"]


def fit_config(model: MicroSpaceConfig, arch: Any) -> None:
    """The node count of a cell follows its arch (registry hook)."""
    body = arch.to_dict()
    if "normal" in body:
        model.num_nodes = len(body["normal"])
