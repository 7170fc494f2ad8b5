"""The arch as data in the macro space: one kernel sequence for every network architecture (``model.cell=graph``).

The default supernet (`enas.spaces.macro.space.MacroSearchNet`) runs only the sampled branch of each layer, its skips
and the reductions a later layer reads: its kernels change with every arch. Here the arch arrives as index
tensors (`arch_index`) and every step runs the same kernels:

* every branch of a layer runs on the layer input and the sampled one is gathered by the op index; the batch
  norms of the other branches compute but keep their running statistics (`enas.kernels.graph_ops.select_batch_norm`);
* the skip sum adds every earlier tensor times its 0/1 skip bit;
* a reduction reduces every tensor of the list; the ones no later layer reads are multiplied by zero downstream
  and keep their batch-norm statistics.

This is what the authors' macro search graph computed (their TF1 code built every branch and picked one with
``tf.case``). It costs the FLOPs of every branch, and in exchange one ``torch.compile`` artefact, or one CUDA graph,
serves every sampled arch. Outputs, gradients and running statistics equal the sampled-path network's
(tests/spaces/macro/test_macro_graph.py); the weights off the path get a zero gradient instead of none, so weight decay
and momentum move them as they did in the authors' code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from enas.kernels.compiled import to_device
from enas.kernels.graph_ops import pick, select_batch_norm
from enas.spaces.macro.arch import MacroArch
from enas.spaces.ops import channels_last, factorized_halves


def arch_index(arch: MacroArch, ops: tuple[str, ...], keep: tuple[frozenset[int], ...],
               device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``arch`` as tensors on ``device``: op (L,) int64, the index of each layer's op in ``ops``; skips (L, L)
    float, row k the skip bits of layer k over [stem, out_0, ...]; reduced (R, L + 1) float, row r 1.0 at the
    positions that reduction r keeps (``keep``, from `enas.spaces.macro.space.reduction_keep`)."""
    n = arch.num_layers
    op = [ops.index(layer.op) for layer in arch.layers]
    skips = [list(layer.skips) + [0] * (n - k) for k, layer in enumerate(arch.layers)]
    reduced = torch.zeros(len(keep), n + 1)
    for r, kept in enumerate(keep):
        reduced[r, sorted(kept)] = 1.0
    return (to_device(torch.tensor(op), device), to_device(torch.tensor(skips, dtype=torch.float32), device),
            to_device(reduced, device))


def _branch(branch, x: Tensor, selected: Tensor) -> Tensor:
    """A `SearchBranch` whose BNs move their statistics only if ``selected``."""
    conv, norm, relu = branch.inp
    y = branch.op(relu(select_batch_norm(conv(x), norm, selected)))
    if isinstance(branch.out, torch.nn.Identity):
        return y
    norm, relu = branch.out
    return relu(select_batch_norm(y, norm, selected))


def _reduce(reduce, x: Tensor, selected: Tensor) -> Tensor:
    """A `FactorizedReduce` whose BN moves its statistics only if ``selected``."""
    y = factorized_halves(x, reduce.conv1.weight, reduce.conv2.weight, reduce.relu)
    return select_batch_norm(y, reduce.bn, selected)


def graph_network(images: Tensor, net, op: Tensor, skips: Tensor, reduced: Tensor) -> Tensor:
    """The supernet ``net`` (`MacroSearchNet`) on the arch of `arch_index`: images (B, C_in, H, W) -> logits
    (B, num_classes), the same kernels for every arch."""
    tensors = [channels_last(net.stem(images))]  # [stem, out_0, ...], each (B, C, H, W)
    names = list(net.config.ops)
    for k, layer in enumerate(net.layers):
        x = tensors[-1]
        chosen = (op[k] == torch.arange(len(names), device=x.device)).to(x.dtype)  # (ops,) one-hot
        out = pick([_branch(layer.branches[name], x, chosen[i]) for i, name in enumerate(names)], op[k])
        if layer.merge_bn is not None:
            for i in range(k):
                out = out + skips[k, i].to(out.dtype) * tensors[i]
            out = layer.merge_bn(out)
        tensors.append(out)
        r = net.reduce_at.get(k)
        if r is not None:
            red = net.reductions[r]
            tensors = [_reduce(red[str(i)], t, reduced[r, i]) for i, t in enumerate(tensors)]
    x = tensors[-1].mean(dim=(2, 3))  # global average pool: (B, C)
    return net.fc(net.dropout(x))


__all__ = ["arch_index", "graph_network"]
