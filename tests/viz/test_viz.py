"""Pictures of architectures and training curves: files, structure of the drawings, layout, and errors."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
from matplotlib.patches import FancyArrowPatch

from enas.errors import ArchError, ConfigError, DataError, UserError
from enas.spaces.macro.arch import MACRO_OPS
from enas.spaces.macro.draw import draw as draw_macro
from enas.spaces.micro.arch import MICRO_OP_NAMES as MICRO_OPS
from enas.spaces.micro.draw import draw as draw_micro
from enas.spaces.rnn.arch import ACTIVATIONS as RNN_ACTS
from enas.spaces.rnn.draw import draw as draw_rnn
from enas.viz.arch import draw_arch, plot_curves, plot_op_shares
from enas.viz.curves import _panels, _read_epochs
from enas.viz.dag import OP_TEXT, layered_layout

PTB_CELL = "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1"
MICRO_CELLS = "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rnn_dict(text: str = PTB_CELL, output: str = "loose_ends") -> dict:
    """The JSON form of a recurrent cell in the authors' notation (act of node 0, then (prev, act) pairs)."""
    t = [int(v) for v in text.split()]
    nodes = [{"act": RNN_ACTS[t[0]]}] + [{"input": t[i], "act": RNN_ACTS[t[i + 1]]} for i in range(1, len(t), 2)]
    return {"space": "rnn", "nodes": nodes, "output": output}


def micro_dict(text: str = MICRO_CELLS) -> dict:
    t = [int(v) for v in text.split()]
    cells = [[{"inputs": [c[4 * j], c[4 * j + 2]], "ops": [MICRO_OPS[c[4 * j + 1]], MICRO_OPS[c[4 * j + 3]]]}
              for j in range(len(c) // 4)] for c in (t[:20], t[20:])]
    return {"space": "micro", "normal": cells[0], "reduce": cells[1]}


def macro_dict(num_layers: int, seed: int) -> dict:
    rng = random.Random(seed)
    return {"space": "macro", "layers": [{"op": rng.choice(MACRO_OPS), "skips": [int(rng.random() < 0.4)
                                                                              for _ in range(k)]}
                                         for k in range(num_layers)]}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


class FakeArch:
    """Anything with `to_json()` is drawn like its dict."""

    def __init__(self, obj: dict):
        self.obj = obj

    def to_json(self) -> dict:
        return {"format": "enas-arch", "version": 1, **self.obj}


@pytest.mark.parametrize(("arch", "min_wh", "tall"), [
    (rnn_dict(), (400, 800), True),
    (rnn_dict(output="mean"), (400, 800), True),
    (micro_dict(), (1000, 500), False),
    (macro_dict(12, 0), (600, 600), False),
    (macro_dict(24, 1), (600, 1100), True),
], ids=["rnn", "rnn-mean", "micro", "macro12", "macro24"])
def test_draw_arch_writes_png(tmp_path, arch, min_wh, tall):
    out = draw_arch(arch, tmp_path / "sub" / "arch.png")
    assert out == tmp_path / "sub" / "arch.png" and out.stat().st_size > 20_000
    w, h = png_size(out)
    assert min_wh[0] <= w <= 4000 and min_wh[1] <= h <= 4000
    assert (h > w) == tall


def test_draw_arch_accepts_arch_objects_titles_and_dpi(tmp_path):
    a = draw_arch(FakeArch(micro_dict()), tmp_path / "a.png", title="published cells", dpi=150)
    b = draw_arch(micro_dict(), tmp_path / "b.png", dpi=75)
    (wa, ha), (wb, hb) = png_size(a), png_size(b)
    assert abs(wa / wb - 2) < 0.1 and abs(ha / hb - 2) < 0.1


def arrows(fig) -> int:
    return sum(isinstance(p, FancyArrowPatch) for ax in fig.axes for p in ax.patches)


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_rnn_drawing_averages_the_loose_ends():
    # PTB cell: 2 inputs into node 0, 11 reads, loose ends {3, 4, 7, 9, 10, 11} into h_t.
    assert arrows(draw_rnn(rnn_dict(), None)) == 2 + 11 + 6
    assert arrows(draw_rnn(rnn_dict(output="mean"), None)) == 2 + 11 + 12
    labels = texts(draw_rnn(rnn_dict(), None))
    assert "8\nrelu" in labels and "0\ntanh" in labels and "$h_t$\nmean" in labels


def test_micro_drawing_labels_every_op_and_concatenates_loose_ends():
    fig = draw_micro(micro_dict(), None)
    normal, reduce = fig.axes
    # Normal cell: 10 op edges + 5 loose ends; reduction: 10 op edges + loose ends {2, 4, 5, 6}.
    assert sum(isinstance(p, FancyArrowPatch) for p in normal.patches) == 15
    assert sum(isinstance(p, FancyArrowPatch) for p in reduce.patches) == 14
    ops = [t.get_text() for t in reduce.texts if "×" in t.get_text() or t.get_text() == "identity"]
    assert sorted(ops) == sorted(["sep 3×3"] * 3 + ["sep 5×5"] * 3 + ["max 3×3"] * 2 + ["avg 3×3", "identity"])
    assert normal.get_title() == "normal cell" and reduce.get_title() == "reduction cell"


def test_macro_drawing_has_chain_skips_and_reductions():
    arch = macro_dict(12, 0)
    n_skips = sum(sum(layer["skips"]) for layer in arch["layers"])
    fig = draw_macro(arch, None)
    assert arrows(fig) == 12 + n_skips  # chain arrows + one arc per skip bit
    labels = texts(fig)
    assert sum("reduction" in t for t in labels) == 2  # after layers 3 and 7
    assert all(f"{k}   {OP_TEXT[layer['op']]}" in labels for k, layer in enumerate(arch["layers"]))
    assert sum("reduction" in t for t in texts(draw_macro(macro_dict(2, 0), None))) == 0  # pd = 0: none


def test_layout_longest_path_layers_dummies_and_gaps():
    arch = rnn_dict()
    inputs = [n.get("input") for n in arch["nodes"]]
    edges = [(0, 2), (1, 2)] + [(inputs[l] + 2, l + 2) for l in range(1, 12)]
    read = set(inputs[1:])
    edges += [(l + 2, 14) for l in range(12) if l not in read]
    x, layer, routes = layered_layout(15, edges, real_gap=1.0, dummy_gap=0.4)
    assert layer[:15] == [0, 0, 1, 2, 3, 4, 4, 4, 5, 3, 6, 7, 7, 7, 8]
    for (u, v), route in zip(edges, routes):  # one vertex per layer along every route
        assert route[0] == u and route[-1] == v
        assert [layer[r] for r in route] == list(range(layer[u], layer[v] + 1))
    assert len(layer) == 15 + sum(len(r) - 2 for r in routes)
    for li in range(max(layer) + 1):
        row = sorted((x[v], v) for v in range(len(layer)) if layer[v] == li)
        for (xa, a), (xb, b) in zip(row, row[1:]):
            need = 1.0 if a < 15 and b < 15 else 0.7 if a < 15 or b < 15 else 0.4
            assert xb - xa >= need - 1e-9


def test_layout_removes_avoidable_crossings():
    # 0 -> 3 and 1 -> 2 cross in numbering order; the ordering must uncross them.
    x, _, _ = layered_layout(4, [(0, 3), (1, 2)])
    assert (x[0] - x[1]) * (x[3] - x[2]) > 0


@pytest.mark.parametrize(("arch", "match"), [
    ({"space": "cnn"}, "cannot draw space 'cnn'"),
    ([1, 2], "pass an Arch or its JSON dict"),
    ({"space": "rnn"}, "'nodes' must be a non-empty list"),
    ({"space": "rnn", "nodes": [{"act": "gelu"}]}, "node 0 needs an 'act'"),
    ({"space": "rnn", "nodes": [{"act": "tanh"}, {"input": 1, "act": "relu"}]}, "node 1 must read an earlier"),
    ({"space": "rnn", "nodes": [{"act": "tanh"}], "output": "last"}, "'output' must be"),
    ({"space": "macro", "layers": [{"op": "conv3x3", "skips": []}, {"op": "conv7x7", "skips": [0]}]},
     "layer 1 needs an 'op'"),
    ({"space": "macro", "layers": [{"op": "conv3x3", "skips": []}, {"op": "sep3x3", "skips": [1, 0]}]},
     "layer 1 needs 'skips' as 1 bits"),
    ({"space": "macro", "layers": [{"op": "conv3x3", "skips": []}, {"op": "sep3x3", "skips": [True]}]},
     "layer 1 needs 'skips'"),
    ({**micro_dict(), "reduce": []}, "'reduce' must be a non-empty list"),
    ({**micro_dict(), "normal": [{"inputs": [0, 2], "ops": ["sep3x3", "sep3x3"]}]},
     "normal node 2 needs 'inputs' as two indices in 0..1"),
    ({**micro_dict(), "normal": [{"inputs": [0, 1], "ops": ["sep3x3", "conv3x3"]}]}, "needs 'ops' as two of"),
])
def test_malformed_architectures_raise_one_line_arch_errors(tmp_path, arch, match):
    with pytest.raises(ArchError, match=match) as info:
        draw_arch(arch, tmp_path / "x.png")
    assert "\n" not in str(info.value) and isinstance(info.value, UserError)
    assert not (tmp_path / "x.png").exists()


def test_bad_dpi_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="dpi"):
        draw_arch(rnn_dict(), tmp_path / "x.png", dpi=0)


def write_metrics(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_read_epochs_skips_junk_and_keeps_the_last_value_of_an_epoch(tmp_path):
    path = write_metrics(tmp_path / "metrics.jsonl", [
        {"kind": "step", "step": 3, "train_loss": 9.0},
        {"kind": "epoch", "epoch": 1, "train_loss": 5.0, "valid_ppl": 400, "resumed": True, "note": "x"},
        "{broken json",
        "[1, 2]",
        {"kind": "epoch", "train_loss": 1.0},
        {"kind": "epoch", "epoch": 2, "train_loss": 4.0, "valid_ppl": float("nan")},
        {"kind": "epoch", "epoch": 2, "train_loss": 3.5, "reward": 0.2},
    ])
    assert _read_epochs(path) == {"train_loss": {1: 5.0, 2: 3.5}, "valid_ppl": {1: 400.0}, "reward": {2: 0.2}}


def test_plot_curves_writes_a_grid_of_panels(tmp_path):
    lines = [{"kind": "epoch", "epoch": e, "train_loss": 5 / e, "valid_ppl": 900 / e + 60, "valid_acc": e / 12,
              "reward": e / 10, "controller_entropy": 20 - e, "baseline": e / 20} for e in range(1, 13)]
    (tmp_path / "run").mkdir()
    path = write_metrics(tmp_path / "run" / "metrics.jsonl", ["not json", *lines])
    out = plot_curves(path, tmp_path / "curves.png")
    w, h = png_size(out)
    assert out.stat().st_size > 20_000 and 1000 <= w <= 3000 and 600 <= h <= 2000 and w > h  # 3 x 2 panels
    out2 = plot_curves(tmp_path / "run", tmp_path / "pics" / "curves.png")  # a run directory works too
    assert png_size(out2) == (w, h)


def test_plot_curves_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        plot_curves(tmp_path / "missing.jsonl", tmp_path / "c.png")
    path = write_metrics(tmp_path / "metrics.jsonl", [{"kind": "step", "loss": 1.0}, "garbage"])
    with pytest.raises(DataError, match="no epoch records"):
        plot_curves(path, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_curve_panels_group_reward_and_entropy_and_leave_out_op_shares(tmp_path):
    lines = [{"kind": "epoch", "epoch": e, "train_loss": 5 / e, "controller_advantage": 0.1 / e,
              "controller_reward": e / 10, "controller_baseline": e / 11, "controller_baseline_mean": e / 12,
              "controller_entropy_op": 1.3 - e / 20, "controller_entropy_pointer": 0.8 - e / 30,
              "controller_entropy_frac": 1 - e / 20, "distinct_share": 1 - e / 30, "op_share/v/a": e / 12,
              "op_share/v/b": 1 - e / 12} for e in range(1, 6)]
    path = write_metrics(tmp_path / "metrics.jsonl", lines)
    panels = dict(_panels({k: v for k, v in _read_epochs(path).items() if not k.startswith("op_share/")}))
    assert list(panels) == ["train_loss", "controller reward, baseline, advantage",
                            "policy entropy per decision (nats)", "controller_entropy_frac", "distinct_share"]
    assert list(panels["controller reward, baseline, advantage"]) == ["reward", "baseline_mean", "advantage"]
    assert list(panels["policy entropy per decision (nats)"]) == ["op", "pointer"]
    assert list(dict(_panels({"controller_reward": {1: 0.5, 2: 0.6}}))) == ["controller_reward"]  # a lone member
    out = plot_curves(path, tmp_path / "curves.png")
    w, h = png_size(out)
    assert w > h  # 5 panels: 3 x 2, op shares left out


def test_plot_op_shares_draws_one_panel_per_vocabulary(tmp_path):
    ops = {"act": ["tanh", "relu", "identity", "sigmoid"], "conv": ["conv3x3", "sep5x5"]}
    lines = []
    for e in range(1, 9):
        rec = {"kind": "epoch", "epoch": e, "train_loss": 1.0}
        for vocab, names in ops.items():
            shares = [1.0 + (i == 0) * e for i in range(len(names))]
            rec.update({f"op_share/{vocab}/{n}": s / sum(shares) for n, s in zip(names, shares)})
        lines.append(rec)
    path = write_metrics(tmp_path / "metrics.jsonl", [*lines, "junk"])
    out = plot_op_shares(path, tmp_path / "ops.png")
    w, h = png_size(out)
    assert out.stat().st_size > 10_000 and 600 <= w <= 2500 and 400 <= h <= 2000
    single = write_metrics(tmp_path / "one.jsonl", [{"kind": "epoch", "epoch": 1, "op_share/v/a": 1.0}])
    assert png_size(plot_op_shares(single, tmp_path / "one.png"))[1] < h  # one vocabulary: a lower picture


def test_plot_op_shares_without_shares(tmp_path):
    path = write_metrics(tmp_path / "metrics.jsonl", [{"kind": "epoch", "epoch": 1, "train_loss": 1.0}])
    with pytest.raises(DataError, match="no op shares"):
        plot_op_shares(path, tmp_path / "ops.png")
    assert plot_op_shares(path, tmp_path / "ops.png", required=False) is None
    assert not (tmp_path / "ops.png").exists()
    with pytest.raises(DataError, match="does not exist"):
        plot_op_shares(tmp_path / "missing.jsonl", tmp_path / "ops.png")
