"""The recurrent cell with the arch as data: one fixed kernel sequence for every arch (``model.cell=graph``).

The fast cell (`enas.spaces.rnn.cell`) turns an arch into control flow: which products run, grouped how, with
which activation; every arch dispatches a different kernel sequence, so nothing can be captured once and replayed.
Here the arch of N nodes arrives as tensors (`CellIndex`) and one time step is the same sequence for every arch::

    W      = stack of the N matrices the arch uses                    (once per forward, outside the time loop)
    node 0:  y = x_t W_x + (h_{t-1} * m_h) @ W[0]
    node l:  p = stack(s_0 .. s_{l-1})[parent[l]]                        (which node it reads: an index tensor)
             y = (p * m_h) @ W[l]
    each:    [pre | gate] = BN_l(y);  f = stack(tanh, relu, id, sigmoid)(pre)[act[l]]   (activation: an index)
             s_l = p + sigmoid(gate) * (f - p)
    h_t    = sum_l out[l] * s_l                                      (out: 1/k on the k output nodes, 0 elsewhere)

so one `torch.compile` artefact (``model.compile_cell=true``; on a GPU it also captures CUDA graphs) serves every
sampled arch without recompiling. The price is computing all four activations per node and gathering the parent
from a stack of the earlier states (memory traffic of about a fifth of the weight reads at 12 nodes); the matrices
are gathered once per forward by an ordinary ``stack`` of the path's parameters, so unused matrices still get no
gradient, as in the fast cell. Results equal the reference cell's (tests/spaces/rnn/test_rnn_reference.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from enas.kernels.compiled import CompiledPerDevice, to_device
from enas.spaces.rnn.arch import ACTIVATIONS, RnnArch
from enas.spaces.rnn.cell import BN_EPS, BN_MOMENTUM, CellNorms


@dataclass(frozen=True)
class CellIndex:
    """An arch of N nodes as tensors: ``parent`` (N,) long, the node that node l reads (entry 0 unused: node 0
    reads h_{t-1}); ``act`` (N,) long, node l's activation as an index of ``ACTIVATIONS``; ``out`` (N,), the weight
    of s_l in h_t."""

    parent: Tensor
    act: Tensor
    out: Tensor

    @classmethod
    def from_arch(cls, arch: RnnArch, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                  ) -> CellIndex:
        nodes = arch.nodes
        outputs = arch.output_nodes()
        out = torch.zeros(len(nodes), dtype=dtype)
        out[list(outputs)] = 1.0 / len(outputs)
        parent = torch.tensor([0] + [node.input for node in nodes[1:]], dtype=torch.long)
        act = torch.tensor([ACTIVATIONS.index(node.act) for node in nodes], dtype=torch.long)
        return cls(to_device(parent, device), to_device(act, device), to_device(out, device))


def _batch_norm(y: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor, training: bool
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Batch norm of (B, F) as ``F.batch_norm`` with decay 0.999 and eps 1.0, written functionally: returns the
    output and the moved running mean and variance (unchanged in eval mode)."""
    if training:
        batch_mean, batch_var = y.mean(0), y.var(0, unbiased=False)
        with torch.no_grad():
            mean = mean.lerp(batch_mean, BN_MOMENTUM)
            var = var.lerp(y.var(0), BN_MOMENTUM)
        y = (y - batch_mean) * torch.rsqrt(batch_var + BN_EPS)
    else:
        y = (y - mean) * torch.rsqrt(var + BN_EPS)
    return y * weight + bias, mean, var


class _Product(torch.autograd.Function):
    """``inp @ W`` for W (H, 2H) given as W and W^T (2H, H), both contiguous: the forward reads W^T transposed and
    the backward ``grad @ W^T`` reads W transposed, the layout the CPU's BLAS runs fastest at these shapes (the
    fast cell keeps both layouts for the same reason). No weight gradient: `WeightProbes` computes it."""

    @staticmethod
    def forward(ctx, inp: Tensor, w: Tensor, w_t: Tensor) -> Tensor:
        ctx.save_for_backward(w)
        return inp @ w_t.t()

    @staticmethod
    def backward(ctx, grad: Tensor):
        (w,) = ctx.saved_tensors
        return grad @ w.t(), None, None


def cell_step(w: Tensor, w_t: Tensor, x_t: Tensor, hidden: Tensor, parent: Tensor, act: Tensor, out: Tensor,
              mask_h: Tensor | None, node_mask: Tensor | None, bn: tuple[Tensor, ...] | None, training: bool,
              probes: list[Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, ...] | None, Tensor | None]:
    """One time step of the cell for any arch of N nodes: w (N, H, 2H) and w_t, the same transposed (N, 2H, H),
    both contiguous and detached (`_Product`), x_t (B, 2H) = x_t W_x, hidden (B, H) ->
    h_t (B, H), with ``bn`` = (weight, bias, running mean, running var, [out weight, bias, mean, var]), each
    (N, 2H) or (H,), the moved running statistics, and with ``probes`` the node inputs (N, B, H).

    ``probes``: N zero tensors (B, 2H) added to the nodes' products, through which `WeightProbes` collects the
    products' gradients for one batched weight-gradient product over all steps (the weights carry none here)."""
    nodes = w.shape[0]
    states: list[Tensor] = []
    inputs: list[Tensor] = []
    means: list[Tensor] = []
    variances: list[Tensor] = []
    for l in range(nodes):
        if l == 0:
            carry = hidden
            inp = carry if mask_h is None else carry * mask_h
            y = x_t + _Product.apply(inp, w[0], w_t[0])
        else:
            stacked = states[0].unsqueeze(0) if l == 1 else torch.stack(states)  # (l, B, H)
            carry = stacked.index_select(0, parent[l:l + 1]).squeeze(0)
            inp = carry if node_mask is None else carry * node_mask
            y = _Product.apply(inp, w[l], w_t[l])  # (B, 2H)
        if probes is not None:
            y = y + probes[l]
            inputs.append(inp)
        if bn is not None:
            y, mean, var = _batch_norm(y, bn[0][l], bn[1][l], bn[2][l], bn[3][l], training)
            means.append(mean)
            variances.append(var)
        pre, gate = y.chunk(2, dim=1)
        f = torch.stack((torch.tanh(pre), torch.relu(pre), pre, torch.sigmoid(pre)))  # ACTIVATIONS order
        f = f.index_select(0, act[l:l + 1]).squeeze(0)
        states.append(torch.lerp(carry, f, torch.sigmoid(gate)))
    h = torch.tensordot(out, torch.stack(states), dims=1)  # (B, H)
    stacked_inputs = torch.stack(inputs).detach() if probes is not None else None
    if bn is None:
        return h, None, stacked_inputs
    stats = [torch.stack(means), torch.stack(variances)]
    if len(bn) > 4:
        h, mean, var = _batch_norm(h, bn[4], bn[5], bn[6], bn[7], training)
        stats += [mean, var]
    return h, tuple(stats), stacked_inputs


class WeightProbes(torch.autograd.Function):
    """Zero probes for T steps x N nodes, each (B, 2H), as one output per (step, node). Their gradients are the
    gradients of the nodes' products; this node's backward runs after every step's (autograd orders it so) and
    turns them, with the node inputs of every step (``inputs``, filled by the forward), into the weight gradient
    as one batched product ``dW[l] = X[l]^T dY[l]`` over all T*B rows, instead of T*N small products each
    accumulated into a gradient of the whole (N, H, 2H) stack."""

    @staticmethod
    def forward(ctx, w: Tensor, inputs: list[Tensor], steps: int, batch: int):
        ctx.inputs, ctx.steps = inputs, steps
        zeros = w.new_zeros(steps * w.shape[0], batch, w.shape[2])
        return zeros.unbind(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: Tensor | None):
        nodes = len(grads) // ctx.steps
        like = next(g for g in grads if g is not None)
        dy = torch.stack([g if g is not None else torch.zeros_like(like) for g in grads])  # (T*N, B, 2H)
        dy = dy.view(ctx.steps, nodes, *like.shape).transpose(0, 1).flatten(1, 2)  # (N, T*B, 2H)
        x = torch.stack(ctx.inputs).transpose(0, 1).flatten(1, 2)  # (N, T*B, H)
        return torch.bmm(x.transpose(1, 2), dy), None, None, None


StepFn = Callable[..., tuple[Tensor, "tuple[Tensor, ...] | None", "Tensor | None"]]


def _norm_tensors(norms: CellNorms, nodes: int) -> list[Tensor]:
    tensors = [norms.weight[:nodes], norms.bias[:nodes], norms.running_mean[:nodes], norms.running_var[:nodes]]
    if norms.out_weight is not None:
        tensors += [norms.out_weight, norms.out_bias, norms.out_mean, norms.out_var]
    return tensors


def run_cell_graph(index: CellIndex, w: Tensor, xproj: Tensor, hidden: Tensor, mask_h: Tensor | None,
                   mask_all_nodes: bool, training: bool, norms: CellNorms | None,
                   step: StepFn = cell_step) -> tuple[Tensor, Tensor]:
    """Unroll the cell over time: w (N, H, 2H) the path's matrices (node 0's h_{t-1} part first), xproj (T, B, 2H),
    hidden (B, H) -> outputs (T, B, H), last hidden state (B, H). ``step`` is `cell_step` or a compiled copy of it.
    The running statistics of ``norms`` move in place once, after the loop."""
    nodes, steps = w.shape[0], xproj.shape[0]
    node_mask = mask_h if mask_all_nodes else None
    bn = _norm_tensors(norms, nodes) if norms is not None else None
    probes: list[Tensor] | None = None
    inputs: list[Tensor] = []
    if torch.is_grad_enabled() and w.requires_grad:
        probes = list(WeightProbes.apply(w, inputs, steps, xproj.shape[1]))
    w = w.detach()
    w_t = w.transpose(1, 2).contiguous()  # (N, 2H, H): one copy per forward
    outputs = []
    for t, x_t in enumerate(xproj.unbind(0)):
        hidden, stats, inp = step(w, w_t, x_t, hidden, index.parent, index.act, index.out, mask_h, node_mask,
                                  None if bn is None else tuple(bn), training,
                                  None if probes is None else probes[t * nodes:(t + 1) * nodes])
        if inp is not None:
            inputs.append(inp)
        if stats is not None and training:
            bn[2], bn[3] = stats[0], stats[1]
            if len(stats) > 2:
                bn[6], bn[7] = stats[2], stats[3]
        outputs.append(hidden)
    if norms is not None and training:
        with torch.no_grad():
            norms.running_mean[:nodes].copy_(bn[2])
            norms.running_var[:nodes].copy_(bn[3])
            if norms.out_weight is not None:
                norms.out_mean.copy_(bn[6])
                norms.out_var.copy_(bn[7])
    return torch.stack(outputs), hidden


def compiled_step(backend: str | Callable[..., object] = "inductor") -> StepFn:
    """`cell_step` through ``torch.compile`` (one artefact for every arch: the arch is an input tensor). On CUDA the
    ``reduce-overhead`` mode of inductor also replays each compiled step as a CUDA graph."""
    return CompiledPerDevice(cell_step, backend)


__all__ = ["CellIndex", "cell_step", "compiled_step", "run_cell_graph"]
