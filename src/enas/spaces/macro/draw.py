"""The picture of a macro network: the layer column with skips as arcs and the reductions marked."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path as MPath

from enas.errors import ArchError
from enas.spaces.macro.arch import MACRO_OPS
from enas.viz.dag import IO_FILL, OP_FILL, OP_TEXT, draw_box, list_field, new_figure


def parse(d: dict[str, Any]) -> tuple[list[str], list[list[int]]]:
    """Ops per layer and, per layer, the indices into [stem, out_0, out_1, ...] of its skip inputs."""
    ops, skips = [], []
    for k, layer in enumerate(list_field(d, "layers", "macro arch")):
        if not isinstance(layer, dict) or layer.get("op") not in MACRO_OPS:
            raise ArchError(f"macro arch: layer {k} needs an 'op' among {', '.join(MACRO_OPS)}")
        bits = layer.get("skips", [])
        if not isinstance(bits, list) or len(bits) != k or any(b not in (0, 1) or isinstance(b, bool) for b in bits):
            raise ArchError(f"macro arch: layer {k} needs 'skips' as {k} bits of 0/1 (one per stem and earlier "
                            f"layer except the previous), got {bits!r}")
        ops.append(layer["op"])
        skips.append([i for i, b in enumerate(bits) if b])
    return ops, skips


def draw(d: dict[str, Any], title: str | None) -> Figure:
    ops, skips = parse(d)
    num = len(ops)
    pd = num // 3
    reductions = {pd - 1, 2 * pd - 1} if pd >= 1 else set()
    bw, bh = 2.0, 0.62  # box size; row r sits at y = -r (row 0 = stem, row k + 1 = layer k)
    max_span = max((k + 1 - i for k, s in enumerate(skips) for i in s), default=2)
    bulge = lambda span: 0.3 + 2.7 * (span - 1) / max(max_span - 1, 1)  # noqa: E731
    fig = new_figure(7.0, 0.36 * (num + 1) + 1.0)
    ax = fig.add_subplot()
    palette = [f"C{i}" for i in range(10)]
    for k, s in enumerate(skips):  # arcs on the right from each skip source to its target layer
        for i in s:
            y0, y1, b = -i, -(k + 1), bulge(k + 1 - i)
            arc = MPath([(bw / 2, y0), (bw / 2 + b, y0), (bw / 2 + b, y1), (bw / 2, y1)], [MPath.MOVETO] +
                        [MPath.CURVE4] * 3)
            ax.add_patch(FancyArrowPatch(path=arc, arrowstyle="-|>", mutation_scale=8, lw=0.9, alpha=0.75,
                                         color=palette[k % 10], zorder=1))
    for r in range(1, num + 1):  # the chain: each layer reads the previous one
        ax.add_patch(FancyArrowPatch((0, -(r - 1) - bh / 2), (0, -r + bh / 2), arrowstyle="-|>",
                                     mutation_scale=9, color="#333333", lw=1.0, shrinkA=0, shrinkB=0, zorder=2))
    draw_box(ax, 0, 0, bw, bh, "stem  conv 3×3", IO_FILL, size=8.5)
    for k, op in enumerate(ops):
        draw_box(ax, 0, -(k + 1), bw, bh, f"{k}   {OP_TEXT[op]}", OP_FILL[op], size=8.5)
        if k in reductions and k < num - 1:
            y = -(k + 1.5)
            ax.plot([-bw / 2 - 2.3, bw / 2 + 3.2], [y, y], ls=(0, (4, 3)), color="#b22222", lw=1.0, zorder=0)
            ax.text(-bw / 2 - 0.15, y + 0.08, "factorized reduction: ½ size", ha="right", va="bottom",
                    fontsize=7.5, color="#b22222")
    ax.set_xlim(-bw / 2 - 2.4, bw / 2 + 3.3)
    ax.set_ylim(-num - 0.6, 0.6)
    ax.axis("off")
    n_skips = sum(map(len, skips))
    ax.set_title(title or f"macro network: {num} layer{'s' * (num != 1)}, {n_skips} skip connections",
                 fontsize=11, pad=16)
    ax.text(0.5, 1.0, "each layer reads the one above; arcs: skip inputs, coloured by receiving layer",
            transform=ax.transAxes, ha="center", va="bottom", fontsize=8, color="#555555")
    return fig
