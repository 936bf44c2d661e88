"""Int8 inference for the text encoder's linear layers: per-channel weights, per-token dynamic activations.

Every ``nn.Linear`` of a copy of the model becomes an :class:`Int8Linear`. Its weight is stored as int8 with one
scale per output channel (symmetric, ``max|w| / 127``); at run time each row of the input (one token) is
quantised the same way with its own scale, the product runs as an int8 x int8 -> int32 matrix multiply
(``torch._int_mm``), and the result is scaled back to float32 and the bias added. Per-token scales keep the
vectors far closer to the float32 ones than torch's dynamic quantisation with one scale per batch (on
bench/encode.py's texts, cosine similarity to float32 at least 0.995 against 0.886 when the scheme was chosen),
and the code needs none of torch's quantised-tensor API, which torch 2.13 deprecates.

This is an inference-only transformation: the copy cannot be trained, and the caller keeps the float32 model
(its fingerprint identifies the weights).
"""

from __future__ import annotations

import copy

import torch  # ml.encoder imports this module only when an encoder is quantised

__all__ = ["Int8Linear", "quantize_int8"]

_LEVELS = 127.0
_TINY = torch.finfo(torch.float32).tiny


class Int8Linear(torch.nn.Module):
    """``y = x @ w.T + b`` with int8 weights (per output channel) and int8 activations (per token)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().to(torch.float32)
        scale = (weight.abs().amax(dim=1) / _LEVELS).clamp(min=_TINY)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Stored (in, out) and contiguous: the layout torch._int_mm takes on the CPU.
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale)
        bias = linear.bias.detach().to(torch.float32).clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.float32)
        # One scale per token (max |x| from two reductions, without a temporary |x|); an all-zero row gets the
        # smallest normal scale, whose reciprocal is finite, and quantises to zeros.
        peak = torch.maximum(rows.amax(dim=1, keepdim=True), rows.amin(dim=1, keepdim=True).neg_())
        scale = peak.div_(_LEVELS).clamp_(min=_TINY)
        quantised = torch.mul(rows, scale.reciprocal()).round_().to(torch.int8)
        # In place on the one float32 copy of the product: no temporary of the output's size (allocating those
        # made one 384 -> 1536 layer three times slower in a micro-benchmark on this machine).
        out = torch._int_mm(quantised, self.weight_int8).to(torch.float32).mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in eval mode with every ``nn.Linear`` replaced by an int8 :class:`Int8Linear`.

    Args:
        model: a float model on the CPU (the original is left untouched).

    Returns:
        The quantised copy, for inference only.

    Raises:
        ValueError: the model is not on the CPU (torch's int8 matrix multiply for this layout is CPU code here).
    """
    if any(parameter.device.type != "cpu" for parameter in model.parameters()):
        raise ValueError("int8 quantisation runs on the CPU only; use quantize='none' on a GPU")
    quantised = copy.deepcopy(model).eval()
    for parent in list(quantised.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return quantised
