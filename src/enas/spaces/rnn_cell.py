"""The recurrent cell's computation, shared by the supernet and the standalone child (spec 2.1).

One time step of an arch::

    node 0:  [pre | gate] = x_t W_x + (h_{t-1} * m_h) W_h          (x_t W_x for all t in one matmul, outside the loop)
             s_0 = h_{t-1} + sigmoid(gate) * (f_0(pre) - h_{t-1})     (highway; carry = h_{t-1})
    node l:  [pre | gate] = (s_j * m_h) W_{l,j}                      (j = the node that l reads)
             s_l = s_j + sigmoid(gate) * (f_l(pre) - s_j)
    h_t   = mean of the output nodes (loose ends, or nodes 1..)

with optional batch norm of each node's [pre | gate] and of h_t (search only; decay 0.999, eps 1.0, as the authors'
first code). ``m_h`` is the locked dropout mask on h_{t-1}; both of the authors' codes reuse it on every node's input.

Speed (CPU, B rows per step; the per-step products are bound by reading the weights from memory):

* the k nodes that read the same parent form a group: one (B, 2kH) buffer laid out [pre_1 gate_1 | pre_2 gate_2 ..]
  then one batch norm, one sigmoid for all gates, one call per distinct activation and one fused ``lerp`` for the
  highway;
* a group's products run on its weights packed once per forward pass (`enas.packed`: one product per group and
  step, forward and backward; float32 on a CPU with MKL); elsewhere every product reads its right operand as a
  transposed contiguous matrix (the faster BLAS layout here), one product per node (`_Weights`);
* each weight's gradient is one (H, T*B) @ (T*B, 2kH) product after the loop (`_WeightGate`) instead of T small
  products accumulated into an (H, 2H) buffer.

The models (`enas.spaces.rnn`) describe their weights through `CellWeights` (views of their parameters) and call
`run_cell`. The reference: `enas.spaces.rnn_reference.run_cell_reference` computes the same in plain autograd, one
product per node and step, as the equations read (``model.cell=reference``; tests/spaces/test_rnn_reference.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from enas.arch.rnn import ACTIVATIONS, RnnArch
from enas.packed import Operand, packing_enabled

BN_MOMENTUM = 0.001  # TF moving-average decay 0.999
BN_EPS = 1.0

_ACT_FNS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": None}


@dataclass(frozen=True)
class Group:
    """Nodes computed together: all nodes that read ``parent`` (node 0's group has parent -1 = h_{t-1}).

    ``children`` are sorted by activation so that each activation covers one contiguous run ``(act, start, stop)``.
    """

    parent: int
    children: tuple[int, ...]
    runs: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class CellPlan:
    """The static structure of one arch, computed once per arch and cached by the models."""

    num_nodes: int
    node0: Group
    groups: tuple[Group, ...]  # in execution order: increasing parent index
    outputs: tuple[int, ...]

    @classmethod
    def from_arch(cls, arch: RnnArch) -> CellPlan:
        readers: dict[int, list[int]] = {}
        for l, node in enumerate(arch.nodes[1:], start=1):
            readers.setdefault(node.input, []).append(l)
        groups = tuple(_group(arch, parent, readers[parent]) for parent in sorted(readers))
        return cls(len(arch.nodes), _group(arch, -1, [0]), groups, arch.output_nodes())


def _group(arch: RnnArch, parent: int, nodes: list[int]) -> Group:
    children = sorted(nodes, key=lambda l: (ACTIVATIONS.index(arch.nodes[l].act), l))
    runs: list[tuple[str, int, int]] = []
    for i, l in enumerate(children):
        act = arch.nodes[l].act
        if runs and runs[-1][0] == act:
            runs[-1] = (act, runs[-1][1], i + 1)
        else:
            runs.append((act, i, i + 1))
    return Group(parent, tuple(children), tuple(runs))


@dataclass
class CellNorms:
    """Batch-norm tensors of the cell: row l of each (N, 2H) tensor belongs to node l; ``out_*`` normalise h_t."""

    weight: Tensor  # (N, 2H)
    bias: Tensor  # (N, 2H)
    running_mean: Tensor  # (N, 2H), updated in place
    running_var: Tensor  # (N, 2H)
    out_weight: Tensor | None  # (H,); None: h_t is not normalised
    out_bias: Tensor | None  # (H,)
    out_mean: Tensor | None  # (H,)
    out_var: Tensor | None  # (H,)


@dataclass
class CellWeights:
    """The weights of one arch's path, as views of the owning module's parameters."""

    w_h: Tensor  # (H, 2H): node 0, h_{t-1} part (the x_t part is applied by the caller, see `project_inputs`)
    nodes: dict[int, Tensor]  # node l >= 1 -> (H, 2H)
    norms: CellNorms | None


@dataclass
class _Packed:
    """One group's parameters for one forward pass; per-node vectors are concatenated node by node."""

    group: Group
    bn: tuple[Tensor, Tensor] | None  # affine weight and bias: (2kH,) each
    stats: list[Tensor]  # running mean and variance (2kH,), copies; see `_batch_norm`


def _pack(plan: CellPlan, norms: CellNorms | None) -> list[_Packed]:
    packed = []
    for group in (plan.node0, *plan.groups):
        nodes = list(group.children)
        bn, stats = None, []
        if norms is not None:
            bn = (torch.cat([norms.weight[l] for l in nodes]), torch.cat([norms.bias[l] for l in nodes]))
            with torch.no_grad():
                stats = [torch.cat([t[l] for l in nodes]) for t in (norms.running_mean, norms.running_var)]
        packed.append(_Packed(group, bn, stats))
    return packed


def _unpack_stats(packed: list[_Packed], norms: CellNorms) -> None:
    """Copy the running statistics, updated on packed copies, back into the per-node rows."""
    with torch.no_grad():
        for p in packed:
            k = len(p.group.children)
            for stat, dest in zip(p.stats, (norms.running_mean, norms.running_var)):
                for l, row in zip(p.group.children, stat.view(k, -1)):
                    dest[l].copy_(row)


def _batch_norm(y: Tensor, weight: Tensor, bias: Tensor, stats: list[Tensor], training: bool) -> Tensor:
    """Batch norm over the batch dimension of (B, F) (decay 0.999, eps 1.0, as the authors' first code).

    ``stats`` = [running mean, running var]. In training mode each step updates fresh copies and puts them in
    ``stats``: autograd saves the statistics passed to the op, so one tensor updated in place at every step would
    invalidate the earlier steps' saved copies. The caller writes the final copies back.
    """
    if training:
        stats[:] = [stats[0].clone(), stats[1].clone()]
    return F.batch_norm(y, stats[0], stats[1], weight, bias, training, BN_MOMENTUM, BN_EPS)


def _update(y: Tensor, carry: Tensor, p: _Packed, training: bool) -> Tensor:
    """[pre_i | gate_i] of k nodes (B, 2kH) and their common carry (B, H) -> new states (B, k, H)."""
    if p.bn is not None:
        y = _batch_norm(y, *p.bn, p.stats, training)
    batch, hidden, k = carry.shape[0], carry.shape[1], len(p.group.children)
    y = y.view(batch, k, 2, hidden)
    pre, gate = y[:, :, 0], y[:, :, 1]  # (B, k, H) each
    pieces = []
    for act, start, stop in p.group.runs:
        piece = pre if len(p.group.runs) == 1 else pre[:, start:stop]
        fn = _ACT_FNS[act]
        pieces.append(piece if fn is None else fn(piece))
    f = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
    # highway: carry + c * (f - carry) for all k nodes in one fused op
    return torch.lerp(carry.unsqueeze(1).expand(batch, k, hidden), f, torch.sigmoid(gate))


class _Ledger:
    """The per-step inputs and output gradients of a group's product, so that the weight gradients are one matmul
    over all steps."""

    def __init__(self, steps: int):
        self.inputs: list[Tensor | None] = [None] * steps
        self.grads: list[Tensor | None] = [None] * steps


class _WeightGate(torch.autograd.Function):
    """Identity on a group's k weights (H, 2H) in the forward pass. Its backward runs after every step that used
    them (autograd orders it so) and computes their gradients as one (H, T*B) @ (T*B, 2kH) product from the ledger,
    instead of T small products each accumulated into the (H, 2H) gradients."""

    @staticmethod
    def forward(ctx, ledger: _Ledger, *ws: Tensor):
        ctx.ledger = ledger
        return tuple(w.view_as(w) for w in ws)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor | None):
        ledger = ctx.ledger
        steps = [t for t, g in enumerate(ledger.grads) if g is not None]
        out: list[Tensor | None] = list(grads)
        if steps:
            x = torch.cat([ledger.inputs[t] for t in steps])  # (T*B, H)
            g = torch.cat([ledger.grads[t] for t in steps])  # (T*B, 2kH)
            dw = x.t() @ g  # (H, 2kH)
            width = dw.shape[1] // len(grads)
            for i, extra in enumerate(grads):
                part = dw[:, i * width:(i + 1) * width]
                out[i] = part if extra is None else part + extra
        ledger.grads = [None] * len(ledger.grads)  # a second backward (retain_graph) fills them again
        return (None, *out)


class _Weights:
    """A group's k weights W_i (H, 2H) for the products of one forward pass: [bias +] inp @ [W_1 | .. | W_k] at
    every step, and in the backward pass grad @ [W_1 | .. | W_k]^T.

    Where `enas.packed` applies (float32 on a CPU with MKL) both run on copies packed once per forward pass; else
    every product reads its right operand as a transposed contiguous matrix (the faster BLAS layout here), one
    product per node (wider plain products run slower at these shapes).
    """

    def __init__(self, ws: list[Tensor], rows: int):
        ws = [w.detach() for w in ws]
        self.ws, self.rows = ws, rows
        self.packed = packing_enabled(ws[0])
        if self.packed:
            self.fwd = Operand(torch.cat([w.t() for w in ws]), rows)  # (2kH, H)
            self.bwd: Operand | None = None  # packed at the first backward step
        else:
            self.w_t = [w.t().contiguous() for w in ws]  # (2H, H) each

    def forward(self, inp: Tensor, bias: Tensor | None) -> Tensor:
        if self.packed:
            y = self.fwd(inp)
            return y if bias is None else y.add_(bias)
        if len(self.w_t) == 1:
            return inp @ self.w_t[0].t() if bias is None else torch.addmm(bias, inp, self.w_t[0].t())
        width = self.w_t[0].shape[0]
        y = inp.new_empty(inp.shape[0], width * len(self.w_t))  # (B, 2kH)
        for i, wt in enumerate(self.w_t):
            torch.mm(inp, wt.t(), out=y[:, i * width:(i + 1) * width])
        return y if bias is None else y.add_(bias)

    def backward(self, grad: Tensor) -> Tensor:
        """grad (B, 2kH) -> grad @ [W_1 | .. | W_k]^T (B, H)."""
        if self.packed:
            if self.bwd is None:
                self.bwd = Operand(torch.cat(self.ws, dim=1), self.rows)  # (H, 2kH)
            return self.bwd(grad)
        width = self.ws[0].shape[1]
        grad_x = None
        for i, w in enumerate(self.ws):
            g = grad[:, i * width:(i + 1) * width]  # (B, 2H)
            grad_x = g @ w.t() if grad_x is None else grad_x.addmm_(g, w.t())
        return grad_x


class _StepProduct(torch.autograd.Function):
    """[bias +] (x * mask) @ [W_1 | .. | W_k] for one time step; the weights' gradients are left to `_WeightGate`.

    ``weights`` computes the products (`_Weights`); ``ws`` are the weights as autograd sees them (the gate's
    outputs), so that autograd runs the gate's backward after every step's.
    """

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor | None, bias: Tensor | None, ledger: _Ledger, t: int,
                weights: _Weights, *ws: Tensor) -> Tensor:
        inp = x if mask is None else x * mask
        ledger.inputs[t] = inp
        ctx.save_for_backward(mask)
        ctx.ledger, ctx.t, ctx.weights, ctx.num_ws = ledger, t, weights, len(ws)
        return weights.forward(inp, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        ctx.ledger.grads[ctx.t] = grad
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = ctx.weights.backward(grad)
            if mask is not None:
                grad_x = grad_x.mul_(mask)
        grad_bias = grad if ctx.needs_input_grad[2] else None
        return (grad_x, None, grad_bias, None, None, None, *([None] * ctx.num_ws))


class _Product:
    """[bias +] (x * mask) @ [W_1 | .. | W_k] at each step of one forward pass; W_i: (H, 2H).

    When autograd records, the weight gradients are batched over the steps (`_WeightGate`); ``plain=True`` leaves
    them to autograd instead (same values, slower; kept to test the batched path).
    """

    def __init__(self, ws: list[Tensor], steps: int, rows: int, plain: bool = False):
        records = torch.is_grad_enabled() and any(w.requires_grad for w in ws)
        self.plain = plain and records
        self.ledger = _Ledger(steps) if records and not plain else None
        self.weights = None if self.plain else _Weights(ws, rows)
        self.ws = list(_WeightGate.apply(self.ledger, *ws)) if self.ledger is not None else ws

    def __call__(self, x: Tensor, mask: Tensor | None, t: int, bias: Tensor | None = None) -> Tensor:
        if self.ledger is not None:
            return _StepProduct.apply(x, mask, bias, self.ledger, t, self.weights, *self.ws)
        inp = x if mask is None else x * mask
        if not self.plain:  # no gradient recorded
            return self.weights.forward(inp, bias)
        w = self.ws[0] if len(self.ws) == 1 else torch.cat(self.ws, dim=1)
        return inp @ w if bias is None else torch.addmm(bias, inp, w)


def project_inputs(x: Tensor, w_x: Tensor) -> Tensor:
    """x_t W_x for every time step in one matmul: (T, B, H) -> (T, B, 2H)."""
    return (x.reshape(-1, x.shape[-1]) @ w_x).view(*x.shape[:-1], w_x.shape[1])


def run_cell(plan: CellPlan, weights: CellWeights, xproj: Tensor, hidden: Tensor, mask_h: Tensor | None,
             mask_all_nodes: bool, training: bool, batched_weight_grads: bool = True) -> tuple[Tensor, Tensor]:
    """Unroll the cell over time.

    xproj: (T, B, 2H) from `project_inputs`; hidden: (B, H); mask_h: (B, H) locked dropout mask (already scaled)
    or None. Returns the cell outputs (T, B, H) and the last hidden state (B, H). ``batched_weight_grads=False``
    leaves the weight gradients to plain autograd (same values, slower; kept for testing).
    """
    steps = xproj.shape[0]
    norms = weights.norms
    packed = _pack(plan, norms)
    node0, rest = packed[0], packed[1:]
    plain = not batched_weight_grads
    rows = hidden.shape[0]
    prod0 = _Product([weights.w_h], steps, rows, plain)
    prods = [_Product([weights.nodes[l] for l in p.group.children], steps, rows, plain) for p in rest]
    node_mask = mask_h if mask_all_nodes else None
    out_norm = norms is not None and norms.out_weight is not None
    out_stats = [norms.out_mean.clone(), norms.out_var.clone()] if out_norm else []
    outputs = []
    for t, x_t in enumerate(xproj.unbind(0)):  # unbind: one backward op, not one (T, B, 2H) zero-fill per step
        states: list[Tensor | None] = [None] * plan.num_nodes
        y = prod0(hidden, mask_h, t, bias=x_t)  # (B, 2H)
        states[0] = _update(y, hidden, node0, training)[:, 0]
        for p, prod in zip(rest, prods):
            parent = states[p.group.parent]
            s = _update(prod(parent, node_mask, t), parent, p, training)  # (B, k, H)
            for l, state in zip(p.group.children, s.unbind(1)):
                states[l] = state
        outs = [states[l] for l in plan.outputs]
        hidden = outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)  # (B, H)
        if out_norm:
            hidden = _batch_norm(hidden, norms.out_weight, norms.out_bias, out_stats, training)
        outputs.append(hidden)
    if norms is not None and training:
        _unpack_stats(packed, norms)
        if out_norm:
            with torch.no_grad():
                norms.out_mean.copy_(out_stats[0])
                norms.out_var.copy_(out_stats[1])
    return torch.stack(outputs), hidden
