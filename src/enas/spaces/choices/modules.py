"""The choice modules of `enas.nn` (import them from there): write a supernet as a plain `nn.Module`, mark the
places the search decides, and `choice_space` turns it into a registered search space (`enas.registry`); see the
example in `enas.nn`.

Each choice is one decision of the paper's controller: `OpChoice` and `ValueChoice` are categorical decisions with
their own op embedding, `InputChoice` is an attention pointer over its candidates (``n_chosen=1``; more pointers for
``n_chosen=k``, sampled with replacement as in the micro cells) or independent skip sigmoids (``n_chosen=None``,
as in the macro network). Choices are found by walking the module (`named_modules` order); a choice's ``label``
defaults to its attribute path, and choices given the same label share one decision.

The supernet is the module itself: each forward runs only the chosen candidate of every `OpChoice`. The standalone
child is a fresh module whose `OpChoice`s keep only their chosen candidate, so its parameter names are those of the
supernet's path and `child_state_from_supernet` is a lookup. `ValueChoice` widths are the user's to slice from the
widest tensor; sized with ``ValueChoice.size`` in ``__init__``, a child allocates only its chosen width.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from enas.arch import Arch
from enas.errors import ArchError, ConfigError


def _caller() -> str:
    """``file.py:LINE`` of the first frame outside this module: where the user's code built the choice."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return "" if frame is None else f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


class _Choice(nn.Module):
    """Base of the choice modules: a label and the value chosen for the current forward (set by the space)."""

    def __init__(self, label: str | None):
        super().__init__()
        self.origin = _caller()  # named in the errors of the user's arguments
        self.label = label
        if label is not None and (not isinstance(label, str) or not re.fullmatch(r"[\w/-]+", label)):
            self.label = None
            self._refuse(f"a choice label must be a non-empty word (letters, digits, _ / -), got {label!r}")
        self.chosen: Any = None

    def _refuse(self, what: str) -> None:
        """`ConfigError` naming the choice (its label, if any) and the line of the user's code that built it."""
        name = f"{type(self).__name__}" + (f" {self.label!r}" if self.label else "")
        raise ConfigError(f"{name} at {self.origin or 'an unknown place'}: {what}")

    def _value(self) -> Any:
        if self.chosen is None:
            raise RuntimeError(f"choice {self.label!r} has no value: run the module through its space's supernet "
                               f"(model(x, arch)) or a child built by the space")
        return self.chosen


class OpChoice(_Choice):
    """One of several candidate modules; ``candidates`` is a dict name -> module or a list (named by their class)."""

    def __init__(self, candidates: dict[str, nn.Module] | Sequence[nn.Module], label: str | None = None):
        super().__init__(label)
        if isinstance(candidates, dict):
            named = dict(candidates)
        else:
            named = {}
            for module in candidates:
                base = type(module).__name__.lower()
                name, n = base, 1
                while name in named:
                    n += 1
                    name = f"{base}{n}"
                named[name] = module
        if len(named) < 2 or any(not isinstance(m, nn.Module) for m in named.values()):
            self._refuse(f"needs at least two candidate nn.Modules (got {len(named)}); a single module needs no "
                         "choice, use it directly")
        self.names = list(named)
        self.candidates = nn.ModuleDict(named)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.candidates[self._value()](*args, **kwargs)


class InputChoice(_Choice):
    """Which of ``n_candidates`` tensors to use: ``n_chosen=1`` one (a pointer), ``k`` of them (k pointers, with
    replacement), ``None`` any subset (skip bits). ``forward(tensors)`` sums (or averages) the chosen ones; an empty
    subset gives zeros shaped like the first candidate."""

    def __init__(self, n_candidates: int, n_chosen: int | None = 1, reduction: str = "sum", label: str | None = None):
        super().__init__(label)
        if not isinstance(n_candidates, int) or n_candidates < 1:
            self._refuse(f"needs n_candidates >= 1, got {n_candidates!r}")
        if n_chosen is not None and (not isinstance(n_chosen, int) or n_chosen < 1):
            self._refuse(f"n_chosen must be None or >= 1, got {n_chosen!r}")
        if reduction not in ("sum", "mean"):
            self._refuse(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.n_candidates, self.n_chosen, self.reduction = n_candidates, n_chosen, reduction

    def forward(self, tensors: Sequence[Tensor]) -> Tensor:
        if len(tensors) != self.n_candidates:
            raise ValueError(f"choice {self.label!r} has {self.n_candidates} candidates but got {len(tensors)}")
        chosen = self._value()
        if not chosen:
            return torch.zeros_like(tensors[0])
        out = tensors[chosen[0]]
        for i in chosen[1:]:
            out = out + tensors[i]
        return out / len(chosen) if self.reduction == "mean" else out


#: label -> value of the arch whose child is being built (set by `ChoiceSpace.build_child` around the user's
#: constructor, so that a labelled `ValueChoice` knows its value in ``__init__``).
BUILDING: list[dict[str, Any]] = []


class ValueChoice(_Choice):
    """One of several plain values (a width, a kernel size, a rate); read ``.value`` in forward.

    ``.size`` is for ``__init__``: the largest value in the supernet, the chosen value while a child is built (for
    a choice given an explicit ``label``), so that a child allocates only the chosen width. The supernet's tensors
    are then cut to the child's shapes by their leading entries (``w[:n]``, ``w[:n, :m]``), which is what the
    module's forward must use from the widest tensor (see ``examples/mlp_choices.py``)."""

    def __init__(self, values: Sequence[Any], label: str | None = None):
        super().__init__(label)
        values = list(values)
        if len(values) < 2 or len({repr(v) for v in values}) != len(values):
            self._refuse(f"needs at least two distinct values, got {values!r}; a single value needs no choice")
        if any(not isinstance(v, (int, float, str, bool)) for v in values):
            self._refuse("values must be numbers, strings or booleans (they are written to JSON)")
        self.values = values
        if label is not None and BUILDING and label in BUILDING[-1]:
            self.chosen = BUILDING[-1][label]

    @property
    def value(self) -> Any:
        return self._value()

    @property
    def size(self) -> int:
        if any(not isinstance(v, int) or isinstance(v, bool) for v in self.values):
            self._refuse(f".size needs integer values, got {self.values!r}")
        return self.chosen if self.chosen is not None else max(self.values)


# ------------------------------------------------------------------------------------------------ the arch
@dataclass(frozen=True)
class ChoiceArch(Arch):
    """The chosen value of every label: an op name, a plain value, an input index (``n_chosen=1``) or a tuple of
    input indices (``n_chosen`` > 1 or None)."""

    space: ClassVar[str] = ""
    choices: tuple[tuple[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"choices": {k: list(v) if isinstance(v, tuple) else v for k, v in self.choices}}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ChoiceArch:
        choices = body.get("choices")
        if not isinstance(choices, dict) or not choices or set(body) != {"choices"}:
            raise ArchError(f"a {cls.space} arch is {{\"choices\": {{label: value, ...}}}}")
        return cls(tuple((str(k), _freeze(v)) for k, v in choices.items()))

    def to_fixed_arc(self) -> str:
        return " ".join(f"{k}={_text(v)}" for k, v in self.choices)

    @classmethod
    def from_fixed_arc(cls, text: str) -> ChoiceArch:
        pairs = []
        for token in text.split():
            label, sep, value = token.partition("=")
            if not sep or not label:
                raise ArchError(f"a {cls.space} fixed_arc is label=value pairs (inputs as 0,2), got {token!r}")
            pairs.append((label, _parse(value)))
        if not pairs:
            raise ArchError(f"a {cls.space} fixed_arc is label=value pairs, got {text!r}")
        return cls(tuple(pairs))

    def describe(self) -> str:
        return "\n".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in self.choices)

    def get(self, label: str) -> Any:
        return dict(self.choices)[label]


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise ArchError(f"input choices are lists of integers, got {v!r}")
        return tuple(v)
    if not isinstance(v, (int, float, str, bool)):
        raise ArchError(f"a choice value must be a string, number or list of input indices, got {v!r}")
    return v


def _text(v: Any) -> str:
    """A value in the fixed_arc notation: a tuple of inputs as 0,2 (one input 2, ; none as nothing)."""
    if isinstance(v, tuple):
        return ",".join(map(str, v)) + ("," if len(v) == 1 else "")
    return str(v)


def _parse(text: str) -> Any:
    if "," in text or text == "":
        try:
            return tuple(int(t) for t in text.split(",") if t)
        except ValueError:
            raise ArchError(f"input choices are comma-separated integers, got {text!r}") from None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


# ------------------------------------------------------------------------------------------------ the space
@dataclass(frozen=True)
class _Spec:
    label: str
    kind: str  # "op" | "value" | "input"
    options: tuple[Any, ...] = ()  # op names or values
    n_candidates: int = 0
    n_chosen: int | None = 1


def discover(module: nn.Module) -> tuple[list[_Spec], dict[str, list[_Choice]]]:
    """The choices of a module in `named_modules` order: one spec per label, and the modules of each label."""
    specs: dict[str, _Spec] = {}
    modules: dict[str, list[_Choice]] = {}
    for path, m in module.named_modules():
        if not isinstance(m, _Choice):
            continue
        if m.label is None:
            m.label = path.replace(".", "/") or "root"  # ops.0 -> ops/0
        if isinstance(m, OpChoice):
            spec = _Spec(m.label, "op", tuple(m.names))
        elif isinstance(m, ValueChoice):
            spec = _Spec(m.label, "value", tuple(m.values))
        else:
            spec = _Spec(m.label, "input", (), m.n_candidates, m.n_chosen)
        if m.label in specs and specs[m.label] != spec:
            first = modules[m.label][0].origin
            raise ConfigError(f"two choices share the label {m.label!r} but differ ({specs[m.label]} at {first} vs "
                              f"{spec} at {m.origin}): give them different labels")
        specs.setdefault(m.label, spec)
        modules.setdefault(m.label, []).append(m)
    if not specs:
        raise ConfigError(f"{type(module).__name__} has no OpChoice, InputChoice or ValueChoice: nothing to search")
    return list(specs.values()), modules


def _apply(modules: dict[str, list[_Choice]], arch: ChoiceArch) -> None:
    for label, value in arch.choices:
        for m in modules.get(label, ()):
            m.chosen = (tuple(value) if isinstance(value, tuple) else (value,)) if isinstance(m, InputChoice) else value


class ChoiceNet(nn.Module):
    """A user module behind the task interface: ``forward(x, arch=None) -> (output, None)``. The supernet applies
    ``arch`` to its choices before each forward; a child was fixed once and ignores ``arch``."""

    def __init__(self, net: nn.Module, fixed: ChoiceArch | None = None):
        super().__init__()
        self.net = net
        _, self._modules_by_label = discover(net)
        self.fixed = fixed
        if fixed is not None:
            _apply(self._modules_by_label, fixed)

    def forward(self, x: Tensor, arch: ChoiceArch | None = None) -> tuple[Tensor, None]:
        if self.fixed is None:
            if arch is None:
                raise ValueError("the supernet needs the arch to run: model(x, arch)")
            _apply(self._modules_by_label, arch)
        out = self.net(x)
        return (out[0], None) if isinstance(out, tuple) else (out, None)
