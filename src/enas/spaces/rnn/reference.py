"""The recurrent cell written as plain autograd, to read and to test against: `run_cell_reference` computes what
`enas.spaces.rnn.cell.run_cell` computes (same arguments, same results, same running statistics); ``run_cell`` is
an optimisation of it. One time step of an arch::

    node 0:  [pre | gate] = x_t W_x + (h_{t-1} * m_h) W_h
             s_0 = h_{t-1} + sigmoid(gate) * (f_0(pre) - h_{t-1})
    node l:  [pre | gate] = (s_j * m_h) W_{l,j}          (j = the node that l reads; m_h only with mask_all_nodes)
             s_l = s_j + sigmoid(gate) * (f_l(pre) - s_j)
    h_t   = mean of the output nodes

with, when the weights carry norms, batch norm of each node's [pre | gate] (row l of the norms) and, if
``out_weight`` is set, of h_t. Select it with ``model.cell=reference``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from enas.spaces.rnn.cell import ACT_FNS, BN_EPS, BN_MOMENTUM, CellPlan, CellWeights


def _nodes(plan: CellPlan) -> list[tuple[int, str]]:
    """(the node it reads, activation) of every node in arch order; node 0 reads -1, i.e. h_{t-1}."""
    nodes: list[tuple[int, str]] = [(-1, "")] * plan.num_nodes
    for group in (plan.node0, *plan.groups):
        for act, start, stop in group.runs:
            for l in group.children[start:stop]:
                nodes[l] = (group.parent, act)
    return nodes


def _batch_norm(y: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                training: bool) -> Tensor:
    """Batch norm of (B, F) over the batch; training mode uses the batch statistics and moves the running ones in
    place (decay 1 - BN_MOMENTUM, unbiased variance, as ``F.batch_norm``)."""
    if training:
        mean, var = y.mean(0), y.var(0, unbiased=False)
        with torch.no_grad():
            running_mean.lerp_(mean, BN_MOMENTUM)
            running_var.lerp_(y.var(0), BN_MOMENTUM)
    else:
        mean, var = running_mean, running_var
    return (y - mean) / torch.sqrt(var + BN_EPS) * weight + bias


def run_cell_reference(plan: CellPlan, weights: CellWeights, xproj: Tensor, hidden: Tensor, mask_h: Tensor | None,
                       mask_all_nodes: bool, training: bool, batched_weight_grads: bool = True
                       ) -> tuple[Tensor, Tensor]:
    """Unroll the cell over time, as `run_cell`: xproj (T, B, 2H) = x_t W_x, hidden (B, H), mask_h (B, H) or None
    -> outputs (T, B, H), last hidden state (B, H). ``batched_weight_grads`` is ignored (autograd does it all)."""
    nodes, norms = _nodes(plan), weights.norms
    node_mask = mask_h if mask_all_nodes else None
    outputs = []
    for x_t in xproj:  # (B, 2H)
        states: list[Tensor] = []
        for l, (j, act) in enumerate(nodes):
            if l == 0:
                carry = hidden
                y = x_t + (carry if mask_h is None else carry * mask_h) @ weights.w_h
            else:
                carry = states[j]
                y = (carry if node_mask is None else carry * node_mask) @ weights.nodes[l]  # (B, 2H)
            if norms is not None:
                y = _batch_norm(y, norms.weight[l], norms.bias[l], norms.running_mean[l], norms.running_var[l],
                                training)
            pre, gate = y.chunk(2, dim=1)
            fn = ACT_FNS[act]
            f = pre if fn is None else fn(pre)  # None: identity
            states.append(carry + torch.sigmoid(gate) * (f - carry))
        hidden = torch.stack([states[l] for l in plan.outputs]).mean(0)
        if norms is not None and norms.out_weight is not None:
            hidden = _batch_norm(hidden, norms.out_weight, norms.out_bias, norms.out_mean, norms.out_var, training)
        outputs.append(hidden)
    return torch.stack(outputs), hidden
