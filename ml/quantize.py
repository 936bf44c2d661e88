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

Some CPUs have no fast int8 matrix multiply for torch to use: on a 2-core AMD EPYC with AVX2 and no AVX-512,
``torch._int_mm`` ran at 1.6 G operations/s against 153 GFLOP/s in float32, and the int8 encoder was 30x slower
than float32. :func:`int8_matmul_probe` times both once per process; where int8 is the slower, the layers multiply
the same int8 values in float32 instead (every product and every partial sum of up to 1,040 terms is an integer
that float32 holds exactly, and longer sums round by at most one part in 2**24), so the vectors stay those of
the int8 scheme, at about float32 speed, and a warning says that int8 brings nothing on this CPU.

Where ``torch._int_mm`` is fast its kernel need not be exact: int8 kernels for AVX2 without VNNI can add pairs of
products in 16 bits and saturate (with oneDNN held to AVX2, the vectors moved further from the float32 ones), so
the same texts can give slightly other vectors there than on a CPU with VNNI or on the float32 path. The probe
also checks the kernel against the exact product on inputs that reach the largest partial sums;
:attr:`Int8MatmulProbe.arithmetic` names the arithmetic ("exact", or the inexact kernel's fingerprint) and the
encoder keeps the vectors of each arithmetic in their own cache namespace.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import time
from dataclasses import dataclass

import torch  # ml.encoder imports this module only when an encoder is quantised

__all__ = ["Int8Linear", "Int8MatmulProbe", "int8_matmul_probe", "quantize_int8"]

logger = logging.getLogger(__name__)

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
        if int8_matmul_probe().int8_is_faster:
            product = torch._int_mm(quantised, self.weight_int8).to(torch.float32)
        else:
            product = torch.matmul(quantised.to(torch.float32), self._weight_as_float())
        out = product.mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _weight_as_float(self) -> torch.Tensor:
        """The int8 weights as float32 values (made once, on the first call that needs them)."""
        cached = getattr(self, "_float_weight", None)
        if cached is None or cached.device != self.weight_int8.device:
            cached = self.weight_int8.to(torch.float32)
            self._float_weight = cached
        return cached

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@dataclass(frozen=True)
class Int8MatmulProbe:
    """One timing of ``torch._int_mm`` against a float32 matrix multiply of the same shape on this CPU."""

    int8_seconds: float
    float32_seconds: float
    int_mm_exact: bool = True
    int_mm_fingerprint: str = ""

    @property
    def int8_is_faster(self) -> bool:
        return self.int8_seconds < self.float32_seconds

    @property
    def arithmetic(self) -> str:
        """What the int8 layers' products are on this CPU: ``"exact"`` (the float32 path, or an exact
        ``torch._int_mm``), else ``"kernel-<fingerprint>"`` of the inexact ``torch._int_mm`` they use."""
        if not self.int8_is_faster or self.int_mm_exact:
            return "exact"
        return f"kernel-{self.int_mm_fingerprint[:12]}"

    @property
    def ratio(self) -> float:
        """How many times faster int8 runs than float32 (below 1: slower)."""
        return self.float32_seconds / self.int8_seconds if self.int8_seconds > 0 else float("inf")


@functools.lru_cache(maxsize=1)
def int8_matmul_probe() -> Int8MatmulProbe:
    """Time a (128 x 384) x (384 x 384) product in int8 and in float32, best of 3 after a warm-up (done once
    per process; about a millisecond where int8 is fast, a tenth of a second where it is not)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (128, 384), dtype=torch.int8, generator=generator)
    b = torch.randint(-127, 128, (384, 384), dtype=torch.int8, generator=generator)
    a_float, b_float = a.to(torch.float32), b.to(torch.float32)

    def best(run: object) -> float:
        run()  # type: ignore[operator]
        times = []
        for _ in range(3):
            started = time.perf_counter()
            run()  # type: ignore[operator]
            times.append(time.perf_counter() - started)
        return min(times)

    # Rows and columns at the extremes of the int8 range as well: the largest partial sums, where a kernel that
    # adds pairs of products in 16 bits saturates.
    extreme_a = torch.cat(
        [a, torch.full((8, 384), 127, dtype=torch.int8), torch.full((8, 384), -127, dtype=torch.int8)]
    )
    extreme_b = torch.cat(
        [b, torch.full((384, 8), 127, dtype=torch.int8), torch.full((384, 8), -127, dtype=torch.int8)], dim=1
    )
    with torch.inference_mode():
        probe_int8 = best(lambda: torch._int_mm(a, b))
        probe_float32 = best(lambda: torch.matmul(a_float, b_float))
        # Every sum here is below 2**24, so float32 holds the exact product.
        exact = torch.matmul(extreme_a.to(torch.float32), extreme_b.to(torch.float32)).to(torch.int32)
        kernel = torch._int_mm(extreme_a, extreme_b)
    probe = Int8MatmulProbe(
        int8_seconds=probe_int8,
        float32_seconds=probe_float32,
        int_mm_exact=bool(torch.equal(kernel, exact)),
        int_mm_fingerprint=hashlib.sha256(kernel.numpy().tobytes()).hexdigest(),
    )
    if not probe.int8_is_faster:
        logger.warning(
            "this CPU's int8 matrix multiply runs %.1fx slower than float32 (torch._int_mm has no fast kernel for "
            "it): the int8 encoder multiplies its int8 values in float32 instead (the same vectors, no faster than "
            "float32); quantize='none' is as fast here",
            1 / probe.ratio,
        )
    elif not probe.int_mm_exact:
        logger.info(
            "this CPU's int8 matrix multiply is fast but not exact (it saturates some partial sums): int8 vectors "
            "made here differ slightly from those of other CPUs and are cached apart (%s)",
            probe.arithmetic,
        )
    return probe


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
    int8_matmul_probe()  # once per process: says now, not mid-encoding, when int8 brings nothing on this CPU
    quantised = copy.deepcopy(model).eval()
    for parent in list(quantised.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return quantised
