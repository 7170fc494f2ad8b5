"""Architectures of the macro space: a whole CNN, one op and a set of skip connections per layer (spec 2.2).

The network keeps the list ``[stem, out_0, out_1, ...]``. Layer k always reads ``out_{k-1}`` (the stem for k = 0)
and has exactly k skip bits; bit i selects entry i of that list, i.e. bit 0 is the stem and bit i (i >= 1) is the
output of layer i-1. The immediately preceding layer has no bit because it is always the input. This is the
indexing of the authors' code, so published ``fixed_arc`` strings load bit for bit.

JSON body::

    {"layers": [{"op": "conv3x3", "skips": []}, {"op": "sep5x5", "skips": [0]}, ...]}

Authors' integer notation: per layer the op index then its k skip bits, all layers in one flat string, op indices
0 conv3x3, 1 sep3x3, 2 conv5x5, 3 sep5x5, 4 avgpool3x3, 5 maxpool3x3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from enas.arch import Arch, parse_ints, register_arch
from enas.errors import ArchError

# Index order of the authors' code; the integer notation refers to these positions.
MACRO_OPS: tuple[str, ...] = ("conv3x3", "sep3x3", "conv5x5", "sep5x5", "avgpool3x3", "maxpool3x3")


def reduction_layers(num_layers: int) -> tuple[int, ...]:
    """0-based indices of the layers after which the network halves its spatial size (spec 2.2).

    With ``pd = num_layers // 3`` the reductions follow layers ``pd - 1`` and ``2 pd - 1``: 12 layers -> (3, 7),
    24 layers -> (7, 15). Networks of fewer than three layers have none (as in the authors' code, where the
    positions become -1 and never match a layer).
    """
    pd = num_layers // 3
    return (pd - 1, 2 * pd - 1) if pd > 0 else ()


def tensor_name(index: int) -> str:
    """Name of entry ``index`` of the list [stem, out_0, out_1, ...] that skip bits refer to."""
    return "stem" if index == 0 else f"layer{index - 1}"

MAX_LAYERS = 200  # generous beside the paper's 24: a bound checked before any model is built


@dataclass(frozen=True)
class MacroLayer:
    """One layer: its op (a name of `MACRO_OPS`) and its skip bits (k bits for layer k, each 0 or 1)."""

    op: str
    skips: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # Accept any sequence for convenience but store a tuple, so that archs stay hashable and comparable.
        object.__setattr__(self, "skips", tuple(self.skips))

    @property
    def skip_sources(self) -> tuple[int, ...]:
        """Indices (into [stem, out_0, ...]) of the selected skip inputs, ascending."""
        return tuple(i for i, bit in enumerate(self.skips) if bit)


@register_arch
@dataclass(frozen=True)
class MacroArch(Arch):
    """A whole macro network: ``layers[k]`` has ``k`` skip bits. Validated on construction (`ArchError`)."""

    space: ClassVar[str] = "macro"
    layers: tuple[MacroLayer, ...]

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise ArchError("a macro architecture needs at least one layer")
        if len(layers) > MAX_LAYERS:
            raise ArchError(f"a macro architecture has at most {MAX_LAYERS} layers (the paper's has 24), "
                            f"got {len(layers)}")
        for k, layer in enumerate(layers):
            if not isinstance(layer, MacroLayer):
                raise ArchError(f"layer {k} is a {type(layer).__name__}, expected a MacroLayer")
            if layer.op not in MACRO_OPS:
                raise ArchError(f"layer {k}: unknown op {layer.op!r}; choose one of {', '.join(MACRO_OPS)}")
            if len(layer.skips) != k:
                raise ArchError(f"layer {k} must have exactly {k} skip bits (one per earlier tensor: stem, "
                                f"layer0, ..., layer{k - 2}), got {len(layer.skips)}")
            for i, bit in enumerate(layer.skips):
                # bool is an int subclass; True/False would silently pass an `in (0, 1)` test, so check the type.
                if type(bit) is not int or bit not in (0, 1):
                    raise ArchError(f"layer {k}: skip bit {i} is {bit!r}; skip bits must be 0 or 1")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # ---- JSON ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [{"op": layer.op, "skips": list(layer.skips)} for layer in self.layers]}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> MacroArch:
        if not isinstance(body, dict):
            raise ArchError("a macro architecture must be a JSON object with a 'layers' list")
        extra = sorted(set(body) - {"layers"})
        if extra:
            raise ArchError(f"unexpected field(s) {', '.join(map(repr, extra))} in a macro architecture; "
                            "only 'layers' is allowed")
        if "layers" not in body:
            raise ArchError('a macro architecture needs a "layers" list of {"op": ..., "skips": [...]} objects')
        raw = body["layers"]
        if not isinstance(raw, list):
            raise ArchError(f"'layers' must be a list, got {type(raw).__name__}")
        layers = []
        for k, item in enumerate(raw):
            if not isinstance(item, dict) or set(item) != {"op", "skips"}:
                raise ArchError(f'layer {k} must be an object with exactly the keys "op" and "skips", got {item!r}')
            op, skips = item["op"], item["skips"]
            if not isinstance(op, str):
                raise ArchError(f"layer {k}: 'op' must be a string such as \"conv3x3\", got {op!r}")
            if not isinstance(skips, list):
                raise ArchError(f"layer {k}: 'skips' must be a list of {k} bits (0 or 1), got {skips!r}")
            layers.append(MacroLayer(op, tuple(skips)))
        return cls(tuple(layers))

    # ---- authors' integer notation ------------------------------------------------------------------------

    def to_fixed_arc(self) -> str:
        ints: list[int] = []
        for layer in self.layers:
            ints.append(MACRO_OPS.index(layer.op))
            ints.extend(layer.skips)
        return " ".join(map(str, ints))

    @classmethod
    def from_fixed_arc(cls, text: str) -> MacroArch:
        ints = parse_ints(text, "macro fixed_arc")
        n = len(ints)
        # L layers take sum_{k<L} (1 + k) = L (L + 1) / 2 integers.
        num_layers = (math.isqrt(8 * n + 1) - 1) // 2
        if n == 0 or num_layers * (num_layers + 1) // 2 != n:
            raise ArchError(f"a macro fixed_arc of L layers has L(L+1)/2 integers (layer k: op then k skip bits); "
                            f"got {n}, which fits no whole number of layers")
        layers = []
        pos = 0
        for k in range(num_layers):
            op = ints[pos]
            if op >= len(MACRO_OPS):
                raise ArchError(f"macro fixed_arc: layer {k} has op index {op}; op indices are 0..5 "
                                f"({', '.join(f'{i} {name}' for i, name in enumerate(MACRO_OPS))})")
            layers.append(MacroLayer(MACRO_OPS[op], tuple(ints[pos + 1:pos + 1 + k])))
            pos += 1 + k
        return cls(tuple(layers))

    # ---- equivalence --------------------------------------------------------------------------------------

    def canonical(self) -> str:
        """The integer notation: no two macro archs are the same network. The layers form a chain (layer k always
        reads layer k - 1), so no renumbering exists; every layer reaches the output; the skips of a layer are
        concatenated and mixed by a 1x1 convolution, whose input order is already fixed by the bits."""
        return self.to_fixed_arc()

    # ---- human-readable -----------------------------------------------------------------------------------

    def describe(self) -> str:
        reductions = reduction_layers(self.num_layers)
        num_skips = sum(len(layer.skip_sources) for layer in self.layers)
        where = ", ".join(map(str, reductions)) if reductions else "none"
        lines = [f"macro network: {self.num_layers} layers, {num_skips} skip connections, "
                 f"reductions after layers {where}"]
        width = len(str(self.num_layers - 1))
        for k, layer in enumerate(self.layers):
            text = f"  layer{k:<{width}} {layer.op:<10} <- {tensor_name(k)}"
            if layer.skip_sources:
                text += " + skips from " + ", ".join(tensor_name(i) for i in layer.skip_sources)
            lines.append(text)
            if k in reductions:
                lines.append("  -- reduction: spatial size / 2 --")
        return "\n".join(lines)


__all__ = ["MACRO_OPS", "MacroArch", "MacroLayer", "reduction_layers", "tensor_name"]
