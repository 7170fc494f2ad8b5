"""The macro CNN search space (spec 2.2, 3.3): the whole network is searched, one op and a subset of skip
connections per layer.

Network: stem (3x3 conv -> BN) -> L layers -> global average pool -> dropout -> linear (no bias). Layer k reads the
previous output and may add any of [stem, out_0, ..., out_{k-2}] (see `enas.spaces.macro.arch`). After layers pd - 1 and
2 pd - 1 (pd = L // 3) every tensor that a later layer still reads goes through its own factorized reduction
(spec 8.4), so that all tensors of the list keep matching sizes (odd sizes round up: 28 -> 14 -> 7, 7 -> 4).

* Supernet and search-mode child (``final=False``): constant width C; layers from `SearchLayer`. The supernet holds
  one branch per op and layer and a reduction per tensor position, but runs only the sampled op of each layer and
  only the reductions whose outputs are read later. The child is the same network with only that path's modules,
  under the same parameter names, so `child_state_from_supernet` is a filter of the supernet's state dict.
* Final child (``final=True``): width doubles at each reduction (C -> 2C -> 4C); layers from `FinalLayer`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from enas.arch import Arch
from enas.errors import ArchError, ConfigError
from enas.kernels.compiled import CompiledPerDevice, check_cell_options
from enas.spaces.base import Action, Decision, Space, TaskInfo
from enas.spaces.macro.arch import MACRO_OPS, MacroArch, MacroLayer, reduction_layers
from enas.spaces.macro.graph import arch_index, graph_network
from enas.spaces.macro.layers import OP_SPECS, FinalLayer, SearchLayer
from enas.spaces.ops import FactorizedReduce, bn, channels_last, he_init_

assert tuple(OP_SPECS) == MACRO_OPS, "the macro op registry must follow the authors' op order"


@dataclass
class MacroSpaceConfig:
    """Sizes of the macro networks. ``channels`` is the constant search width and the first-stage width of the
    final child (search script: 12 layers, 36 channels; final script: 24 layers, 96 channels). ``keep_prob`` is the
    keep probability of the dropout before the classifier (0.9 search, 0.5 final). ``ops`` is the op vocabulary
    the controller chooses from, in the controller's index order."""

    num_layers: int = 12
    channels: int = 36
    keep_prob: float = 0.9
    ops: tuple[str, ...] = field(default_factory=lambda: MACRO_OPS)
    # supernet only: "consistent" starts every branch near the identity (docs/fidelity.md); "independent" draws
    # each branch on its own (He-normal), as the authors' code did
    choice_init: str = "consistent"
    # supernet only: "path" runs only the sampled branch, skips and reductions; "graph" takes the arch as index
    # tensors, one kernel sequence for every arch (enas.spaces.macro.graph); compile_cell=true compiles that once
    cell: str = "path"
    compile_cell: bool = False

    def __post_init__(self) -> None:
        self.ops = tuple(self.ops)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError on the first bad value (also on construction)."""
        check_cell_options(self.cell, self.compile_cell)
        if not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise ConfigError(f"macro num_layers must be a positive integer, got {self.num_layers!r}")
        if not isinstance(self.channels, int) or self.channels < 2 or self.channels % 2:
            raise ConfigError(f"macro channels must be an even integer >= 2 (factorized reductions split them in "
                              f"two), got {self.channels!r}")
        if not 0.0 < self.keep_prob <= 1.0:
            raise ConfigError(f"macro keep_prob must be in (0, 1], got {self.keep_prob!r}")
        if self.choice_init not in ("consistent", "independent"):
            raise ConfigError(f"macro choice_init must be consistent or independent, got {self.choice_init!r}")
        unknown = [op for op in self.ops if op not in MACRO_OPS]
        if unknown or not self.ops or len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"macro ops must be distinct names from {', '.join(MACRO_OPS)}; got {list(self.ops)}")


@lru_cache(maxsize=4096)
def reduction_keep(arch: MacroArch) -> tuple[frozenset[int], ...]:
    """For each reduction, the positions of [stem, out_0, ...] that a later layer reads (as input or skip).
    Only those are reduced; the others are dropped. Cached: the supernet asks once per sampled arch."""
    last_use = list(range(arch.num_layers + 1))  # position k is the input of layer k
    for k, layer in enumerate(arch.layers):
        for i in layer.skip_sources:
            last_use[i] = max(last_use[i], k)
    return tuple(frozenset(i for i in range(p + 2) if last_use[i] > p) for p in reduction_layers(arch.num_layers))


def _check_info(info: TaskInfo) -> None:
    if info.in_channels < 1 or info.image_size < 1 or info.num_classes < 1:
        raise ConfigError(f"the macro space needs an image task (in_channels, image_size and num_classes > 0), got "
                          f"{info}")


class _MacroNet(nn.Module):
    """Stem, layers, reductions and head; subclasses build the layers and say how one layer runs."""

    layers: nn.ModuleList
    reductions: nn.ModuleList  # one ModuleDict per reduction: str(position) -> FactorizedReduce

    def __init__(self, info: TaskInfo, config: MacroSpaceConfig, num_layers: int):
        super().__init__()
        _check_info(info)
        self.info, self.config = info, config
        self.reduce_at = {p: r for r, p in enumerate(reduction_layers(num_layers))}  # layer index -> reduction
        # a child's reduction plan, held (no cache lookup inside a compiled forward); the supernet's is per arch
        self._keep: tuple[frozenset[int], ...] | None = None
        self.stem = nn.Sequential(nn.Conv2d(info.in_channels, config.channels, 3, padding=1, bias=False),
                                  bn(config.channels))
        self.dropout = nn.Dropout(1.0 - config.keep_prob)

    def _head(self, channels: int) -> None:
        self.fc = nn.Linear(channels, self.info.num_classes, bias=False)
        he_init_(self)

    def _run(self, images: torch.Tensor, arch: MacroArch) -> torch.Tensor:
        keep = self._keep or reduction_keep(arch)
        # [stem, out_0, ...], each (B, C_stage, H, W)
        tensors: list[torch.Tensor | None] = [channels_last(self.stem(images))]
        for k, layer in enumerate(arch.layers):
            skips = [tensors[i] for i in layer.skip_sources]
            tensors.append(self._layer(k, layer, tensors[-1], skips))
            r = self.reduce_at.get(k)
            if r is not None:
                red = self.reductions[r]
                tensors = [red[str(i)](t) if i in keep[r] else None for i, t in enumerate(tensors)]
        x = tensors[-1].mean(dim=(2, 3))  # global average pool: (B, C_last)
        return self.fc(self.dropout(x))  # (B, num_classes)

    def _layer(self, k: int, layer: MacroLayer, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _build_reductions(self, positions: Sequence[Collection[int]], c_in: Sequence[int]) -> None:
        """One FactorizedReduce per position of ``positions[r]`` at reduction r, from width ``c_in[r]`` to
        `_reduced_width` of it (the same in search mode, double in the final network)."""
        self.reductions = nn.ModuleList(
            nn.ModuleDict({str(i): FactorizedReduce(c, self._reduced_width(c)) for i in sorted(pos)})
            for pos, c in zip(positions, c_in))

    def _reduced_width(self, c: int) -> int:
        return c


class MacroSearchNet(_MacroNet):
    """Search-mode network of constant width: the supernet (all ops, all reductions, ``arch=None``) or a standalone
    child of one arch (its ops and needed reductions only)."""

    def __init__(self, info: TaskInfo, config: MacroSpaceConfig, arch: MacroArch | None = None):
        super().__init__(info, config, config.num_layers)
        self.arch = arch
        c, n = config.channels, config.num_layers
        if arch is None:
            layer_ops: list[Sequence[str]] = [config.ops] * n
            positions: list[Collection[int]] = [range(p + 2) for p in reduction_layers(n)]
        else:
            layer_ops = [(layer.op,) for layer in arch.layers]
            self._keep = reduction_keep(arch)
            positions = list(self._keep)
        self.layers = nn.ModuleList(SearchLayer(k, ops, c) for k, ops in enumerate(layer_ops))
        self._build_reductions(positions, [c] * len(positions))
        self._head(c)
        if arch is None and config.choice_init == "consistent":  # the supernet (docs/fidelity.md)
            for layer in self.layers:
                for branch in layer.branches.values():
                    branch.near_identity_()
            for reductions in self.reductions:
                for reduce in reductions.values():
                    reduce.near_identity_()
        self.cell = "path"
        if arch is None:
            self.set_cell(config.cell, config.compile_cell)

    def set_cell(self, cell: str, compiled: bool = False, backend: str | Callable[..., object] = "inductor") -> None:
        """Run the supernet as ``cell``: "path" (only the sampled branches) or "graph" (the arch as index tensors,
        `enas.spaces.macro.graph`); ``compiled``: the graph network through ``torch.compile`` with ``backend``.
        The weights stay as they are."""
        if self.arch is not None:
            raise ValueError("set_cell applies to the supernet; a child runs its own path")
        check_cell_options(cell, compiled)
        self.cell = cell
        self._graph_fn = CompiledPerDevice(graph_network, backend) if compiled else graph_network

    def forward(self, images: torch.Tensor, arch: Arch | None = None) -> tuple[torch.Tensor, None]:
        """images (B, C_in, H, W) -> (logits (B, K), None). A child runs its own arch and ignores ``arch``."""
        if self.arch is not None:
            arch = self.arch
        elif not isinstance(arch, MacroArch):
            raise ArchError(f"the macro supernet needs a MacroArch to run, got {type(arch).__name__}")
        elif arch.num_layers != len(self.layers):
            raise ArchError(f"arch has {arch.num_layers} layers but the supernet has {len(self.layers)}")
        elif self.cell == "graph":
            for k, layer in enumerate(arch.layers):
                self._check_op(k, layer.op)
            index = arch_index(arch, self.config.ops, reduction_keep(arch), images.device)
            return self._graph_fn(images, self, *index), None
        return self._run(images, arch), None

    def _layer(self, k: int, layer: MacroLayer, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        self._check_op(k, layer.op)
        return self.layers[k](x, layer.op, skips)

    def _check_op(self, k: int, op: str) -> None:
        if op not in self.layers[k].branches:
            raise ArchError(f"layer {k}: op {op!r} is not among this space's ops {list(self.config.ops)}")

    def path_prefixes(self, arch: MacroArch) -> tuple[str, ...]:
        """State-dict key prefixes of the modules that ``arch`` uses (the modules of its search-mode child)."""
        prefixes = ["stem.", "fc."]
        for k, layer in enumerate(arch.layers):
            prefixes.append(f"layers.{k}.branches.{layer.op}.")
            if k > 0:
                prefixes.append(f"layers.{k}.merge_bn.")
        for r, keep in enumerate(reduction_keep(arch)):
            prefixes.extend(f"reductions.{r}.{i}." for i in keep)
        return tuple(prefixes)


class MacroFinalNet(_MacroNet):
    """The final network of one arch: pre-activation layers, concat skip merges, width doubled at each reduction.
    Its depth is the arch's (e.g. 24 for the published arc), whatever ``config.num_layers`` says."""

    def __init__(self, arch: MacroArch, info: TaskInfo, config: MacroSpaceConfig):
        super().__init__(info, config, arch.num_layers)
        self.arch = arch
        widths, c = [], config.channels  # widths[k]: channels of layer k
        for k in range(arch.num_layers):
            widths.append(c)
            if k in self.reduce_at:
                c *= 2
        self.layers = nn.ModuleList(FinalLayer(k, layer.op, len(layer.skip_sources), widths[k], widths[k])
                                    for k, layer in enumerate(arch.layers))
        self._keep = reduction_keep(arch)
        self._build_reductions(list(self._keep), [widths[p] for p in self.reduce_at])
        self._head(c)

    def _reduced_width(self, c: int) -> int:
        return 2 * c

    def forward(self, images: torch.Tensor, arch: Arch | None = None) -> tuple[torch.Tensor, None]:
        """images (B, C_in, H, W) -> (logits (B, K), None); ``arch`` is ignored."""
        return self._run(images, self.arch), None

    def _layer(self, k: int, layer: MacroLayer, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        return self.layers[k](x, skips)


class MacroSpace(Space):
    """The macro space: per layer k, an op decision then a skips decision over the k earlier layers (spec 3.3)."""

    name = "macro"
    arch_cls = MacroArch

    def __init__(self, config: MacroSpaceConfig | None = None):
        self.config = config if config is not None else MacroSpaceConfig()

    def decisions(self) -> list[Decision]:
        out = []
        for k in range(self.config.num_layers):
            out.append(Decision("op", f"layer{k}.op", size=len(self.config.ops), vocab="macro_op"))
            out.append(Decision("skips", f"layer{k}.skips", size=k, new_anchor=True,
                                feed="skip_mean" if k > 0 else "start"))
        return out

    def vocabularies(self) -> dict[str, list[str]]:
        return {"macro_op": list(self.config.ops)}

    def decode(self, actions: list[Action]) -> MacroArch:
        n, ops = self.config.num_layers, self.config.ops
        if len(actions) != 2 * n:
            raise ArchError(f"the macro space takes {2 * n} actions (op, skips per layer), got {len(actions)}")
        layers = []
        for k in range(n):
            op, skips = actions[2 * k], actions[2 * k + 1]
            if isinstance(op, list) or not 0 <= int(op) < len(ops):
                raise ArchError(f"layer {k}: op action must be an index in 0..{len(ops) - 1}, got {op!r}")
            if not isinstance(skips, (list, tuple)):
                raise ArchError(f"layer {k}: skips action must be a list of {k} bits, got {skips!r}")
            layers.append(MacroLayer(ops[int(op)], tuple(int(b) for b in skips)))
        return MacroArch(tuple(layers))

    def encode(self, arch: Arch) -> list[Action]:
        if not isinstance(arch, MacroArch):
            raise ArchError(f"expected a macro architecture, got one of space {getattr(arch, 'space', '?')!r}")
        if arch.num_layers != self.config.num_layers:
            raise ArchError(f"the architecture has {arch.num_layers} layers but this macro space has "
                            f"{self.config.num_layers}; set num_layers to {arch.num_layers}")
        actions: list[Action] = []
        for k, layer in enumerate(arch.layers):
            if layer.op not in self.config.ops:
                raise ArchError(f"layer {k}: op {layer.op!r} is not in this space's ops {list(self.config.ops)}")
            actions.append(self.config.ops.index(layer.op))
            actions.append(list(layer.skips))
        return actions

    def build_supernet(self, info: TaskInfo) -> MacroSearchNet:
        return MacroSearchNet(info, self.config)

    def build_child(self, arch: Arch, info: TaskInfo, final: bool = True) -> nn.Module:
        """``final=True``: `MacroFinalNet` (any depth; any of the six ops). ``final=False``: the search-mode child,
        which must fit this space (depth, ops) so that supernet weights load into it."""
        if not isinstance(arch, MacroArch):
            raise ArchError(f"expected a macro architecture, got one of space {getattr(arch, 'space', '?')!r}")
        if final:
            return MacroFinalNet(arch, info, self.config)
        self.check_arch(arch)
        return MacroSearchNet(info, self.config, arch)

    def child_state_from_supernet(self, supernet: nn.Module, arch: Arch) -> dict[str, Any]:
        """The supernet's parameters and buffers on ``arch``'s path, keyed as in the search-mode child. The tensors
        share storage with the supernet; ``load_state_dict`` copies them."""
        self.check_arch(arch)
        assert isinstance(arch, MacroArch)  # check_arch raises otherwise
        if not isinstance(supernet, MacroSearchNet) or supernet.arch is not None:
            raise TypeError("child_state_from_supernet needs the supernet built by MacroSpace.build_supernet")
        prefixes = supernet.path_prefixes(arch)
        return {key: value for key, value in supernet.state_dict().items() if key.startswith(prefixes)}


__all__ = ["MacroFinalNet", "MacroSearchNet", "MacroSpace", "MacroSpaceConfig", "reduction_keep"]


def fit_config(model: MacroSpaceConfig, arch: Any) -> None:
    """The layer count of a final model follows its arch (registry hook)."""
    body = arch.to_dict()
    if "layers" in body:
        model.num_layers = len(body["layers"])
