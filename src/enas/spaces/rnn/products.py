"""The per-step products of the recurrent cell: [bias +] (x * mask) @ [W_1 | .. | W_k] for the k nodes of a group at
every time step of one forward pass, with the weights' gradients batched over the steps.

A group's weights are read at every step of the forward pass and, transposed, at every step of the backward pass.
`_Weights` runs those products on copies packed once per forward pass where `enas.kernels.packed` applies (float32 on
a CPU
with MKL: one product per group and step, forward and backward), else one product per node on transposed
contiguous right operands (the faster BLAS layout here). The weight gradients are one (H, T*B) @ (T*B, 2kH) product
after the loop (`_WeightGate`, fed by the `_Ledger` of per-step inputs and output gradients) instead of T small
products accumulated into (H, 2H) buffers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from enas.kernels.packed import Operand, worth_packing


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

    Where `enas.kernels.packed` applies (float32 on a CPU with MKL) both run on copies packed once per forward pass;
    else
    every product reads its right operand as a transposed contiguous matrix (the faster BLAS layout here), one
    product per node (wider plain products run slower at these shapes).
    """

    def __init__(self, ws: list[Tensor], rows: int):
        ws = [w.detach() for w in ws]
        self.ws, self.rows = ws, rows
        self.packed = worth_packing(ws[0], rows)
        if self.packed:
            self.fwd: Operand | None = Operand(torch.cat([w.t() for w in ws]), rows)  # (2kH, H)
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
            if self.bwd is None:  # the forward pass is over: its packed copy goes
                self.fwd = None
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


class StepProducts:
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
