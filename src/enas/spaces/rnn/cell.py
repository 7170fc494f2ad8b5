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
* a group's products run on its weights packed once per forward pass (`enas.kernels.packed`: one product per group and
  step, forward and backward; float32 on a CPU with MKL); elsewhere every product reads its right operand as a
  transposed contiguous matrix (the faster BLAS layout here), one product per node (`enas.spaces.rnn.products`);
* each weight's gradient is one (H, T*B) @ (T*B, 2kH) product after the loop instead of T small
  products accumulated into an (H, 2H) buffer (`enas.spaces.rnn.products`).

The models (`enas.spaces.rnn.space`) describe their weights through `CellWeights` (views of their parameters) and call
`run_cell`. The reference: `enas.spaces.rnn.reference.run_cell_reference` computes the same in plain autograd, one
product per node and step, as the equations read (``model.cell=reference``; tests/spaces/rnn/test_rnn_reference.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from enas.spaces.rnn.arch import ACTIVATIONS, RnnArch
from enas.spaces.rnn.products import StepProducts

BN_MOMENTUM = 0.001  # TF moving-average decay 0.999
BN_EPS = 1.0

ACT_FNS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": None}


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
    if torch.is_grad_enabled() and (y.requires_grad or carry.requires_grad):
        return _Highway.apply(y, carry, p.group.runs)
    return _highway(y, carry, p.group.runs)[0]


def _highway(y: Tensor, carry: Tensor, runs: tuple[tuple[str, int, int], ...]) -> tuple[Tensor, Tensor, Tensor]:
    """s_i = carry + c_i * (f_i - carry) for the k nodes of a group at once; returns (s, f, c), each (B, k, H)."""
    batch, hidden = carry.shape
    y = y.view(batch, -1, 2, hidden)
    pre, gate = y[:, :, 0], y[:, :, 1]  # (B, k, H) each
    if len(runs) == 1:
        fn = ACT_FNS[runs[0][0]]
        f = pre.contiguous() if fn is None else fn(pre)
    else:
        f = pre.new_empty(pre.shape)
        for act, start, stop in runs:
            _ACT_OUT[act](pre[:, start:stop], out=f[:, start:stop])
    c = torch.sigmoid(gate)
    return torch.lerp(carry.unsqueeze(1).expand_as(f), f, c), f, c


def _relu_backward(grad: Tensor, out: Tensor, grad_input: Tensor) -> Tensor:
    return torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad_input)


def _identity_backward(grad: Tensor, out: Tensor, grad_input: Tensor) -> Tensor:
    return grad_input.copy_(grad)


# each activation written into a given buffer, and its backward from its output
_ACT_OUT = {"tanh": torch.tanh, "relu": functools.partial(torch.clamp_min, min=0), "sigmoid": torch.sigmoid,
            "identity": lambda x, out: out.copy_(x)}
_ACT_BACKWARD = {"tanh": torch.ops.aten.tanh_backward.grad_input, "relu": _relu_backward,
                 "sigmoid": torch.ops.aten.sigmoid_backward.grad_input, "identity": _identity_backward}


class _Highway(torch.autograd.Function):
    """`_highway` with a hand-written backward that writes d[pre | gate] straight into one (B, 2kH) buffer: autograd's
    own would zero-fill a (B, 2kH) buffer for each of the two views and add them, for every group at every step."""

    @staticmethod
    def forward(ctx, y: Tensor, carry: Tensor, runs: tuple[tuple[str, int, int], ...]) -> Tensor:
        s, f, c = _highway(y, carry, runs)
        ctx.save_for_backward(carry, f, c)
        ctx.runs = runs
        return s

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        carry, f, c = ctx.saved_tensors
        batch, k, hidden = f.shape
        d_f = grad * c  # (B, k, H)
        d_carry = (grad - d_f).sum(1) if ctx.needs_input_grad[1] else None  # d/d carry of carry * (1 - c)
        dy = grad.new_empty(batch, k, 2, hidden)
        d_pre, d_gate = dy[:, :, 0], dy[:, :, 1]
        torch.sub(f, carry.unsqueeze(1), out=d_gate).mul_(grad)  # d/dc of c * (f - carry)
        torch.ops.aten.sigmoid_backward.grad_input(d_gate, c, grad_input=d_gate)
        for act, start, stop in ctx.runs:
            _ACT_BACKWARD[act](d_f[:, start:stop], f[:, start:stop], grad_input=d_pre[:, start:stop])
        return dy.view(batch, 2 * k * hidden), d_carry, None


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
    prod0 = StepProducts([weights.w_h], steps, rows, plain)
    prods = [StepProducts([weights.nodes[l] for l in p.group.children], steps, rows, plain) for p in rest]
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
