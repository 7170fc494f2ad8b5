"""The recurrent language model shared by the supernet and the child: embedding, locked dropouts, the cell (three
interchangeable implementations of the same function, `CELLS`) and the decoder tied to the embedding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from enas.spaces.rnn.arch import RnnArch
from enas.spaces.rnn.cell import CellNorms, CellPlan, CellWeights, project_inputs, run_cell
from enas.spaces.rnn.graph import CellIndex, cell_step, compiled_step, run_cell_graph
from enas.spaces.rnn.reference import run_cell_reference

# The same function three ways: "path" (the default on the CPU), "reference" (plain autograd, as the equations
# read) and "graph" (the arch as index tensors: one kernel sequence for every arch, for torch.compile / CUDA graphs).
CELLS = {"path": run_cell, "reference": run_cell_reference, "graph": run_cell_graph}


@dataclass(frozen=True)
class Dropouts:
    """Drop rates (not keep rates). All masks are locked: drawn once per sequence, reused at every time step.

    word: a word type's whole embedding is dropped for the sequence; emb and x: (B, H) masks on the embedding
    entering node 0 (x after emb); h: on h_{t-1} entering node 0 and, with ``h_all_nodes``, on every node's input;
    out: on the cell output before the decoder.
    """

    word: float = 0.0
    emb: float = 0.0
    x: float = 0.0
    h: float = 0.0
    out: float = 0.0
    h_all_nodes: bool = True


def _locked_mask(shape: tuple[int, ...], rate: float, like: Tensor) -> Tensor:
    keep = 1.0 - rate
    return torch.empty(shape, device=like.device, dtype=like.dtype).bernoulli_(keep).div_(keep)


class CellLM(nn.Module):
    """Embedding -> locked dropouts -> cell -> decoder tied to the embedding (no bias).

    Subclasses own the cell weights and say, per arch, which of them the path uses (`_path`); everything else,
    the cell included, is this class's code, so the supernet and the child compute the same function.
    """

    def __init__(self, vocab_size: int, hidden: int, dropouts: Dropouts, init_range: float, cell: str = "path",
                 compile_cell: bool = False):
        super().__init__()
        self.hidden_size = hidden
        self.set_cell(cell, compile_cell)
        self.dropouts = dropouts
        self.init_range = init_range
        self.emb = nn.Parameter(torch.empty(vocab_size, hidden))  # (V, H), also the decoder weight
        self.norm_rows = 0
        self.batched_weight_grads = True  # see run_cell; False gives the same gradients through plain autograd
        self._plans: dict[RnnArch, CellPlan] = {}
        self._indices: dict[tuple[RnnArch, torch.device, torch.dtype], CellIndex] = {}

    def set_cell(self, cell: str, compiled: bool = False, backend: str | Callable[..., object] = "inductor") -> None:
        """Run the cell as ``cell`` (a key of `CELLS`); ``compiled``: the graph cell's time step through
        ``torch.compile`` with ``backend`` (`enas.spaces.rnn.graph.compiled_step`). The weights stay as they are."""
        if compiled and cell != "graph":
            raise ValueError("only the graph cell compiles; pass cell='graph'")
        self.cell = cell
        self._step = compiled_step(backend) if compiled else cell_step  # the graph cell's time step

    def _add_norms(self, rows: int, output: bool) -> None:
        """Per-node batch norm over [pre | gate] (rows x 2H) and, with ``output``, one over the cell output (H)."""
        h2 = 2 * self.hidden_size
        self.norm_rows = rows
        self.bn_weight = nn.Parameter(torch.ones(rows, h2))
        self.bn_bias = nn.Parameter(torch.zeros(rows, h2))
        self.register_buffer("bn_mean", torch.zeros(rows, h2))
        self.register_buffer("bn_var", torch.ones(rows, h2))
        self.bn_output = output
        if not output:
            return
        self.out_bn_weight = nn.Parameter(torch.ones(self.hidden_size))
        self.out_bn_bias = nn.Parameter(torch.zeros(self.hidden_size))
        self.register_buffer("out_bn_mean", torch.zeros(self.hidden_size))
        self.register_buffer("out_bn_var", torch.ones(self.hidden_size))

    def _norms(self) -> CellNorms | None:
        if not self.norm_rows:
            return None
        out = (getattr(self, f"out_bn_{n}") if self.bn_output else None for n in ("weight", "bias", "mean", "var"))
        return CellNorms(self.bn_weight, self.bn_bias, self.bn_mean, self.bn_var, *out)

    def reset_parameters(self) -> None:
        """U(-init_range, init_range) for the embedding and every cell matrix (spec 4.1); BN scale 1, offset 0."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith(("bn_", "out_bn_")):
                    continue
                p.uniform_(-self.init_range, self.init_range)

    def init_hidden(self, batch_size: int) -> Tensor:
        return self.emb.new_zeros(batch_size, self.hidden_size)

    def _plan(self, arch: RnnArch) -> CellPlan:
        plan = self._plans.get(arch)
        if plan is None:
            self._check_arch(arch)
            if len(self._plans) >= 4096:  # bound the cache over a long search
                self._plans.clear()
            plan = self._plans[arch] = CellPlan.from_arch(arch)
        return plan

    def _index(self, arch: RnnArch, like: Tensor) -> CellIndex:
        """``arch`` as tensors on the device of ``like`` (cached: copied to the device once per arch)."""
        key = (arch, like.device, like.dtype)
        index = self._indices.get(key)
        if index is None:
            if len(self._indices) >= 4096:
                self._indices.clear()
            index = self._indices[key] = CellIndex.from_arch(arch, like.device, like.dtype)
        return index

    def _check_arch(self, arch: RnnArch) -> None:
        """Raise ArchError if this module cannot run ``arch``."""

    def _path(self, arch: RnnArch) -> tuple[Tensor, CellWeights]:
        """W_x (H, 2H) and the cell weights that ``arch`` uses."""
        raise NotImplementedError

    def _dropout(self, tokens: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Apply the input dropouts to the embeddings x (T, B, H); draw the (B, H) masks for h and the output.

        Identity in eval mode. Every mask is drawn once per call, so each sequence keeps it for all time steps.
        """
        d = self.dropouts
        if not self.training:
            return x, None, None
        batch, hidden = tokens.shape[1], self.hidden_size
        if d.word > 0:  # one keep/drop draw per (sequence, word type)
            word_mask = _locked_mask((batch, self.emb.shape[0]), d.word, x)  # (B, V)
            x = x * word_mask.gather(1, tokens.t()).t().unsqueeze(-1)  # (T, B, 1)
        x_mask = None
        for rate in (d.emb, d.x):  # two independent (B, H) masks, applied together
            if rate > 0:
                m = _locked_mask((batch, hidden), rate, x)
                x_mask = m if x_mask is None else x_mask * m
        if x_mask is not None:
            x = x * x_mask  # broadcast over T
        mask_h = _locked_mask((batch, hidden), d.h, x) if d.h > 0 else None
        out_mask = _locked_mask((batch, hidden), d.out, x) if d.out > 0 else None
        return x, mask_h, out_mask

    def _run(self, tokens: Tensor, hidden: Tensor, arch: RnnArch) -> tuple[Tensor, Tensor, dict[str, Any]]:
        plan = self._plan(arch)
        w_x, weights = self._path(arch)
        x = F.embedding(tokens, self.emb)  # (T, B, H)
        x, mask_h, out_mask = self._dropout(tokens, x)
        xproj = project_inputs(x, w_x)  # (T, B, 2H)
        if self.cell == "graph":
            w = torch.stack([weights.w_h, *(weights.nodes[l] for l in range(1, plan.num_nodes))])  # (N, H, 2H)
            outputs, hidden = run_cell_graph(self._index(arch, x), w, xproj, hidden, mask_h,
                                             self.dropouts.h_all_nodes, self.training, weights.norms, self._step)
        else:
            outputs, hidden = CELLS[self.cell](plan, weights, xproj, hidden, mask_h, self.dropouts.h_all_nodes,
                                               self.training, self.batched_weight_grads)
        top = outputs if out_mask is None else outputs * out_mask  # (T, B, H)
        logits = F.linear(top, self.emb)  # (T, B, V)
        return logits, hidden, {"outputs": outputs}


__all__ = ["CELLS", "CellLM", "Dropouts"]
