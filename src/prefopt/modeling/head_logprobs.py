"""Token log-probs through a linear LM head, with a hand-written backward that keeps no logits.

For hidden states ``h`` (k, H), head weight ``W`` (V, H), optional bias ``b`` and targets ``t``:

    u = h Wᵀ + b                      (k, V), computed in the compute dtype
    z = f(u)                          the model's own logit transform (scaling, soft-capping;
                                      :mod:`prefopt.modeling.logit_transform`), identity for most;
                                      in the compute dtype too, as the model does; read in fp32
    out_i = z_i[t_i] − logsumexp(z_i)

and with ``g`` the incoming gradient (k,), ``softmax(z_i) = exp(z_i − logsumexp(z_i))``:

    ∂out/∂z = g ⊙ (onehot(t) − softmax(z))          (k, V)
    ∂out/∂u = ∂out/∂z ⊙ f′(u)
    ∂h = (∂out/∂u) W,   ∂W = (∂out/∂u)ᵀ h,   ∂b = Σ_i (∂out/∂u)_i

The forward keeps only ``h`` and the (k,) logsumexp; the backward recomputes ``z`` once and turns
it into the gradient in place. Compared with checkpointing ``log_softmax`` + ``gather`` under
autograd this runs the head's matmul the same number of times (forward, recompute, backward)
but skips a second forward logsumexp and the autograd graph over (k, V) tensors: on a CPU the
elementwise passes over the logits cost as much as the matmul. The forward numbers are those of
``head(h).float()`` followed by ``log_softmax``/``gather``, under autocast too: the matmul runs
in the autocast dtype (or ``h``'s dtype without autocast) and everything after it in fp32.
"""

from __future__ import annotations

from typing import Any

import torch

from prefopt.modeling.logit_transform import LogitTransform

IDENTITY = LogitTransform()


def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer computes in here: the autocast dtype when autocast is on."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def _logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dtype: torch.dtype,
    transform: LogitTransform,
) -> torch.Tensor:
    """``f(h Wᵀ + b)`` read in fp32: the projection and the transform in ``dtype``, as the
    model's own head computes them (in bf16 its logits are rounded before the soft-cap too)."""
    with torch.autocast(hidden.device.type, enabled=False):
        projected = torch.nn.functional.linear(
            hidden.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
        )
        return transform.apply(projected).to(torch.promote_types(dtype, torch.float32))


class HeadLogProbs(torch.autograd.Function):
    """``log p(t_i | h_i)`` for each row of ``h`` through a linear head; (k,) in fp32 (fp64
    when the compute dtype is fp64)."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        dtype: torch.dtype,
        transform: LogitTransform = IDENTITY,
    ) -> torch.Tensor:
        logits = _logits(hidden, weight, bias, dtype, transform)
        logsumexp = torch.logsumexp(logits, dim=-1)
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, logsumexp)
        ctx.dtype = dtype
        ctx.transform = transform
        return picked - logsumexp

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        hidden, weight, bias, targets, logsumexp = ctx.saved_tensors
        dtype, transform = ctx.dtype, ctx.transform
        # softmax(z) in place of the recomputed logits, then g ⊙ (onehot − softmax).
        dlogits = _logits(hidden, weight, bias, dtype, transform)
        slope = None if transform.is_identity else transform.derivative(dlogits)
        grad = grad.to(dlogits.dtype).unsqueeze(-1)
        dlogits.sub_(logsumexp.unsqueeze(-1)).exp_().mul_(-grad)
        dlogits.scatter_add_(-1, targets.unsqueeze(-1), grad)
        if slope is not None:  # back through the transform: ∂out/∂u = ∂out/∂z ⊙ f′(u)
            dlogits.mul_(slope)
            del slope
        grad_hidden = grad_weight = grad_bias = None
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = dlogits.sum(0).to(bias.dtype)
        dlogits_c = dlogits.to(dtype)
        del dlogits
        with torch.autocast(hidden.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_hidden = (dlogits_c @ weight.to(dtype)).to(hidden.dtype)
            if ctx.needs_input_grad[1]:
                grad_weight = (dlogits_c.t() @ hidden.to(dtype)).to(weight.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


def linear_head_logps(
    head: torch.nn.Linear,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform = IDENTITY,
) -> Any:
    """:class:`HeadLogProbs` for an ``nn.Linear`` head, in the dtype autocast would use."""
    return HeadLogProbs.apply(
        hidden, head.weight, head.bias, targets, compute_dtype(hidden), transform
    )
