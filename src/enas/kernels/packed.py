"""Right operands packed once for many small products (CPU, MKL).

A recurrent cell multiplies a (B, H) state by the same weight at every time step of a forward pass, and the
gradient of each step's output by the same weight transposed in the backward pass. MKL's ``sgemm`` repacks the
weight into its blocked layout on every call; at the recurrent space's sizes (B = 64 rows, 1000 x 2000 weights)
that repacking is a fifth of each product. `Operand` packs the weight once (``cblas_sgemm_pack`` through
``torch.ops.mkl._mkl_reorder_linear_weight``) and runs every product on the packed copy: 1.2-1.3x faster per
product on a 2-core Xeon with the PyPI CPU build (docs/benchmarks.md, "Packed products"), for about the cost of
one product to pack. The results equal the plain product's up to float32 rounding.

Packing applies to float32 CPU tensors on builds with MKL, outside `torch.compile` / `torch.export` / TorchScript
tracing (the packed layout is an opaque buffer those cannot reason about); everywhere else `Operand` runs the plain
product. ``kernels.packed=false`` in a run's config turns packing off (to compare, or to rule it out).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.utils import flop_counter

from enas import kernels


@functools.cache
def _mkl_ops() -> bool:
    if not torch.backends.mkl.is_available():
        return False
    try:
        return bool(torch.ops.mkl._mkl_reorder_linear_weight) and bool(torch.ops.mkl._mkl_linear)
    except (AttributeError, RuntimeError):
        return False


def _register_flop_formula() -> None:
    """Let `torch.utils.flop_counter` count the packed products (2 * rows * N * K each, like ``mm``)."""
    if not _mkl_ops() or torch.ops.mkl._mkl_linear in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(torch.ops.mkl._mkl_linear)
    def _linear_flops(x_shape, packed_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        rows = 1
        for d in x_shape[:-1]:
            rows *= d
        return 2 * rows * w_shape[0] * x_shape[-1]


_register_flop_formula()


def packing_enabled(t: Tensor) -> bool:
    """Whether products with ``t`` as right operand can run packed here."""
    return (t.device.type == "cpu" and t.dtype == torch.float32 and kernels.enabled("packed")
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing() and _mkl_ops())


MIN_ELEMENTS = 1 << 15  # smaller operands run faster plain (one (B, 64) @ (64, 128) product: 0.89-0.93x packed)


def worth_packing(t: Tensor, rows: int) -> bool:
    """Whether `Operand` packs ``t`` for products with ``rows`` rows: packing applies, and it pays at this size
    (measured on a 2-core Xeon: 1.0-1.2x from H = 128, 1.1-2.4x from H = 256, 0.89-0.93x at H = 64; one row: 0.94x)."""
    return rows > 1 and t.numel() >= MIN_ELEMENTS and packing_enabled(t)


class Operand:
    """The right operand of products ``x @ M`` with x: (rows, K), given as ``m_t`` = M transposed, (N, K).

    ``m_t`` is read as a constant (its values at construction); pass a detached tensor. Products with inputs of
    ``rows`` rows run on the packed copy where packing applies (`worth_packing`); inputs of any
    other row count, and every product where packing does not apply, run ``x @ m_t.t()`` (the transposed contiguous
    layout, which the CPU's BLAS runs at least as fast as the plain one at these shapes).
    """

    def __init__(self, m_t: Tensor, rows: int):
        self.m_t = m_t.contiguous()
        self.rows = rows
        self.packed = (torch.ops.mkl._mkl_reorder_linear_weight(self.m_t, rows)
                       if worth_packing(self.m_t, rows) else None)

    @property
    def out_features(self) -> int:
        return self.m_t.shape[0]

    def __call__(self, x: Tensor) -> Tensor:
        if (self.packed is not None and x.shape[0] == self.rows and x.dtype == self.m_t.dtype
                and not torch.compiler.is_compiling() and not torch.jit.is_tracing()):
            return torch.ops.mkl._mkl_linear(x, self.packed, self.m_t, None, self.rows)
        return x @ self.m_t.t()
