"""Packed right operands: the same products as the plain ones, and the plain product wherever packing does not apply."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from enas import kernels
from enas.kernels.packed import MIN_ELEMENTS, Operand, packing_enabled, worth_packing

needs_mkl = pytest.mark.skipif(not packing_enabled(torch.zeros(1)), reason="no MKL packing on this build")


@pytest.mark.parametrize("rows,k,n", [(4, 8, 16), (64, 200, 300), (5, 128, 256), (1, 300, 200)])
def test_operand_equals_the_plain_product(rows, k, n):
    torch.manual_seed(0)
    m = torch.randn(k, n)
    x = torch.randn(rows, k)
    op = Operand(m.t(), rows)
    assert op.out_features == n
    torch.testing.assert_close(op(x), x @ m, rtol=1e-5, atol=1e-5)


@needs_mkl
def test_operand_packs_float32_on_the_cpu_and_runs_the_packed_product():
    op = Operand(torch.randn(256, 128), 3)
    assert op.packed is not None
    with torch.profiler.profile() as prof:
        op(torch.randn(3, 128))
    names = {e.name for e in prof.events()}
    assert "mkl::_mkl_linear" in names and "aten::mm" not in names


def test_other_row_counts_and_dtypes_fall_back_to_the_plain_product():
    torch.manual_seed(0)
    m_t = torch.randn(256, 128)
    op = Operand(m_t, 3)
    x = torch.randn(4, 128)  # not the packed row count
    torch.testing.assert_close(op(x), x @ m_t.t())
    op64 = Operand(m_t.double(), 3)
    assert op64.packed is None
    x64 = torch.randn(3, 128, dtype=torch.float64)
    torch.testing.assert_close(op64(x64), x64 @ m_t.double().t())


@needs_mkl
def test_packing_only_where_it_pays():
    big = torch.zeros(MIN_ELEMENTS // 128, 128)
    assert worth_packing(big, 64) and Operand(big, 64).packed is not None
    assert not worth_packing(big, 1)  # a single row: measured slower packed
    small = torch.zeros(128, 64)  # H = 64: measured slower packed
    assert not worth_packing(small, 64) and Operand(small, 64).packed is None


def test_config_switch_turns_packing_off():
    with kernels.switched(packed=False):
        assert not packing_enabled(torch.zeros(1))
        assert Operand(torch.randn(256, 128), 3).packed is None
    kernels.configure(kernels.KernelsConfig(packed=False))
    try:
        assert not packing_enabled(torch.zeros(1))
    finally:
        kernels.configure(kernels.KernelsConfig())


@needs_mkl
def test_flop_counter_counts_packed_products_like_mm():
    rows, k, n = 8, 128, 256
    op = Operand(torch.randn(n, k), rows)
    assert op.packed is not None
    with FlopCounterMode(display=False) as counter:
        op(torch.randn(rows, k))
    assert counter.get_total_flops() == 2 * rows * k * n


@needs_mkl
def test_tracing_runs_the_plain_product():
    op = Operand(torch.randn(256, 128), 3)
    assert op.packed is not None
    traced = torch.jit.trace(lambda x: op(x), torch.randn(3, 128))
    assert "mkl" not in str(traced.graph)
