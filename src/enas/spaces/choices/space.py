"""A search space discovered from choice modules (`enas.nn`): `ChoiceSpace` turns the `OpChoice`, `InputChoice` and
`ValueChoice` modules of a user's network into the controller's decisions, encodes and decodes archs, builds the
supernet and the child, and `choice_space` makes its registry entry (`enas.registry`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from enas.arch import Arch, arch_from_json
from enas.errors import ArchError, ConfigError
from enas.registry import SpaceEntry
from enas.spaces.base import Action, Decision, Space, TaskInfo
from enas.spaces.choices.draw import draw_choice_path
from enas.spaces.choices.modules import BUILDING, ChoiceArch, ChoiceNet, OpChoice, discover


class ChoiceSpace(Space):
    """The space of one choice-module family; built by `choice_space` for its registry entry."""

    name = ""
    arch_cls = ChoiceArch

    def __init__(self, config: Any, name: str, arch_cls: type[ChoiceArch], model_fn: Callable[..., nn.Module]):
        self.config, self.name, self.arch_cls, self.model_fn = config, name, arch_cls, model_fn
        with torch.device("meta"):  # discover the choices without allocating weights
            probe = model_fn(config, TaskInfo(vocab_size=10, in_channels=3, image_size=8, num_classes=2,
                                              **_probe_features()))
        self.specs, _ = discover(probe)

    def decisions(self) -> list[Decision]:
        out: list[Decision] = []
        for group, s in enumerate(self.specs):
            if s.kind in ("op", "value"):
                out.append(Decision("op", s.label, size=len(s.options), vocab=s.label, group=group))
                continue
            out += [Decision("anchor", f"{s.label}/candidate{i}", new_anchor=True, feed="start", group=group)
                    for i in range(s.n_candidates)]
            if s.n_chosen is None:
                out.append(Decision("skips", s.label, size=s.n_candidates, feed="skip_mean", group=group))
            else:
                out += [Decision("pointer", s.label, size=s.n_candidates, feed="anchor", group=group)
                        for _ in range(s.n_chosen)]
        return out

    def vocabularies(self) -> dict[str, list[str]]:
        return {s.label: [str(o) for o in s.options] for s in self.specs if s.kind in ("op", "value")}

    def decode(self, actions: list[Action]) -> ChoiceArch:
        actions, choices = list(actions), []
        for s in self.specs:
            if s.kind in ("op", "value"):
                choices.append((s.label, s.options[actions.pop(0)]))
            elif s.n_chosen is None:
                bits = actions.pop(0)
                choices.append((s.label, tuple(i for i, b in enumerate(bits) if b)))
            elif s.n_chosen == 1:
                choices.append((s.label, actions.pop(0)))
            else:
                choices.append((s.label, tuple(actions.pop(0) for _ in range(s.n_chosen))))
        return self.arch_cls(tuple(choices))

    def encode(self, arch: Arch) -> list[Action]:
        if not isinstance(arch, ChoiceArch) or arch.space != self.name:
            raise ArchError(f"not an arch of the {self.name} space")
        given = dict(arch.choices)
        if set(given) != {s.label for s in self.specs}:
            raise ArchError(f"a {self.name} arch sets the choices {sorted(s.label for s in self.specs)}, "
                            f"got {sorted(given)}")
        actions: list[Action] = []
        for s in self.specs:
            v = given[s.label]
            if s.kind in ("op", "value"):
                if v not in s.options:
                    raise ArchError(f"{s.label}: {v!r} is not one of {list(s.options)}")
                actions.append(s.options.index(v))
                continue
            idx = (v,) if isinstance(v, int) and not isinstance(v, bool) else v
            if not isinstance(idx, tuple) or any(not 0 <= i < s.n_candidates for i in idx):
                raise ArchError(f"{s.label}: inputs must be indices in 0..{s.n_candidates - 1}, got {v!r}")
            if s.n_chosen is None:
                actions.append([int(i in idx) for i in range(s.n_candidates)])
            elif len(idx) != s.n_chosen:
                raise ArchError(f"{s.label}: choose {s.n_chosen} input(s), got {list(idx)}")
            else:
                actions += list(idx)
        return actions

    def canonical(self, arch: ChoiceArch) -> ChoiceArch:
        """The arch in the space's label order with skip subsets sorted (what decode(encode(arch)) gives)."""
        return self.decode(self.encode(arch))

    def build_supernet(self, info: TaskInfo) -> nn.Module:
        supernet = ChoiceNet(self.model_fn(self.config, info))
        supernet.info = info  # for the children's shapes (`child_state_from_supernet`)
        return supernet

    def build_child(self, arch: Arch, info: TaskInfo, final: bool = True) -> nn.Module:
        arch = self.canonical(arch)
        BUILDING.append(dict(arch.choices))
        try:
            net = self.model_fn(self.config, info)
        finally:
            BUILDING.pop()
        discover(net)  # labels
        for m in net.modules():
            if isinstance(m, OpChoice):  # keep only the chosen candidate (same parameter names as the supernet)
                keep = arch.get(m.label)
                for name in list(m.candidates):
                    if name != keep:
                        del m.candidates[name]
        return ChoiceNet(net, fixed=arch)

    def child_state_from_supernet(self, supernet: nn.Module, arch: Arch) -> dict[str, Any]:
        """The supernet's tensors on ``arch``'s path, cut to the child's shapes where a `ValueChoice` made the
        child narrower (leading entries)."""
        arch = self.canonical(arch)
        dropped = tuple(f"{path}.candidates.{name}." for path, m in supernet.named_modules()
                        if isinstance(m, OpChoice) for name in m.names if name != arch.get(m.label))
        state = {k: v for k, v in supernet.state_dict().items() if not k.startswith(dropped)}
        info = getattr(supernet, "info", None)
        if info is None:
            return state
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in self.build_child(arch, info).state_dict().items()}
        for key, shape in shapes.items():
            v = state.get(key)
            if v is None or v.shape == shape:
                continue
            if v.dim() != len(shape) or any(n > m for n, m in zip(shape, v.shape)):
                raise ArchError(f"{key}: the child's shape {tuple(shape)} is not a leading part of the "
                                f"supernet's {tuple(v.shape)}")
            state[key] = v[tuple(slice(0, n) for n in shape)]
        return state


def _probe_features() -> dict[str, int]:
    fields = {f.name for f in dataclasses.fields(TaskInfo)}
    return {"in_features": 4} if "in_features" in fields else {}


def choice_space(name: str, task: str, model_fn: Callable[[Any, TaskInfo], nn.Module],
                 presets: Callable[[str, str], Any], size_keys: tuple[str, ...] = (), description: str = "",
                 fit_config: Callable[[Any, Any], None] | None = None) -> SpaceEntry:
    """The registry entry of a space written with choice modules: ``model_fn(model_cfg, info)`` builds the module
    (``info``: `TaskInfo`, e.g. ``info.in_channels`` and ``info.num_classes``), ``presets(preset, command)``
    returns its `Config` (`enas.registry`). Register it with ``--space module:NAME`` or `enas.registry.register`."""
    if task == "text":
        raise ConfigError("choice spaces build image or tabular classifiers; write a Space for language models")
    arch_cls = type(f"{name.title().replace('-', '').replace('_', '')}Arch", (ChoiceArch,), {"space": name})
    arch_cls = dataclass(frozen=True)(arch_cls)

    def space(config: Any) -> ChoiceSpace:
        return ChoiceSpace(config, name, arch_cls, model_fn)

    def draw(d: dict[str, Any], title: str | None) -> Any:  # the chosen path, traced (`enas.spaces.choices.draw`)

        model = presets("demo", "search").model
        if fit_config is not None:
            fit_config(model, arch_from_json(d))
        return draw_choice_path(space(model), d, title)

    return SpaceEntry(name, task, space, arch_cls, presets, fit_config=fit_config, size_keys=size_keys,
                      description=description, draw=draw)
