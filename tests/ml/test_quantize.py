from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.encoder import TextEncoder, encoder_fingerprint, load_encoder
from ml.quantize import Int8Linear, quantize_int8

TEXTS = ["cancel", "my order arrived today and the package was great thanks", "refund please", "i love it"] * 3


@pytest.mark.parametrize("bias", [True, False])
def test_an_int8_layer_stays_within_quantisation_error_of_the_float_layer(bias: bool) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 20, bias=bias)
    x = torch.randn(2, 7, 48)
    x[1, 3] = 0.0  # an all-zero token must not divide by zero
    x[1, 4] = 1e-39  # nor a token of subnormal values
    with torch.no_grad():
        linear.weight[5] = 0.0  # nor an output channel of zero weights

    expected = linear(x)
    found = Int8Linear(linear)(x)

    assert found.shape == expected.shape and found.dtype == torch.float32
    # Each int8 factor is off by at most half a step (1/254 of its row's or channel's largest value).
    bound = 48 * (x.abs().amax(-1, keepdim=True) * linear.weight.abs().amax(1)) / 127
    assert torch.all((found - expected).abs() <= bound + 1e-6)
    assert torch.allclose(found[1, 3], linear.bias if bias else torch.zeros(20), atol=1e-6)
    assert torch.allclose(found[1, 4], linear.bias if bias else torch.zeros(20), atol=1e-6)
    assert torch.isfinite(1 / Int8Linear(linear).weight_scale).all()  # every scale a normal float
    # Far tighter than the worst case in practice: this is what keeps the encoder's vectors close.
    assert (found - expected).abs().max() < 0.02 * expected.abs().max()


def test_quantising_replaces_every_linear_layer_of_a_copy_and_leaves_the_model_alone(tiny_bert_dir: Path) -> None:
    _, model = load_encoder(str(tiny_bert_dir))
    before = encoder_fingerprint(model)

    quantised = quantize_int8(model)

    assert not any(isinstance(m, torch.nn.Linear) for m in quantised.modules())
    assert sum(isinstance(m, Int8Linear) for m in quantised.modules()) == sum(
        isinstance(m, torch.nn.Linear) for m in model.modules()
    )
    assert encoder_fingerprint(model) == before


def test_a_model_off_the_cpu_is_refused() -> None:
    with pytest.raises(ValueError, match="CPU only"):
        quantize_int8(torch.nn.Linear(4, 4, device="meta"))


def test_int8_vectors_are_close_to_float_ones_deterministic_and_cached_apart(tiny_bert_dir: Path) -> None:
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    exact = TextEncoder(tokenizer, model, batch_size=3, device="cpu")
    int8 = TextEncoder(tokenizer, model, batch_size=3, device="cpu", quantize="int8")

    float_vectors, int8_vectors = exact.encode(TEXTS), int8.encode(TEXTS)

    cosine = (float_vectors * int8_vectors).sum(axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(float_vectors, int8_vectors), cosine
    np.testing.assert_array_equal(int8.encode(TEXTS), int8_vectors)
    np.testing.assert_allclose(np.linalg.norm(int8_vectors, axis=1), 1.0, atol=1e-5)
    # The weights are the same, the vectors are not: same fingerprint, another cache namespace.
    assert int8.fingerprint == exact.fingerprint
    assert int8.cache_namespace == f"{exact.cache_namespace}:int8:exact"  # this CPU: see the tests below
    parts = f"config-{exact.config_fingerprint[:16]}:tokenizer-{exact.tokenizer_fingerprint[:16]}"
    assert exact.cache_namespace == f"{exact.fingerprint}:{parts}:mean:l2:128"  # the tiny BERT: 128 positions


def test_int8_batches_in_parallel_match_one_batch_at_a_time(tiny_bert_dir: Path) -> None:
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    options = {"batch_size": 2, "device": "cpu", "quantize": "int8"}

    parallel = TextEncoder(tokenizer, model, workers=2, **options).encode(TEXTS)
    sequential = TextEncoder(tokenizer, model, workers=1, **options).encode(TEXTS)

    np.testing.assert_array_equal(parallel, sequential)


def test_unknown_quantisation_or_a_gpu_is_refused_before_anything_moves(tiny_bert_dir: Path) -> None:
    tokenizer, model = load_encoder(str(tiny_bert_dir))
    with pytest.raises(ValueError, match="quantize must be one of none, int8"):
        TextEncoder(tokenizer, model, device="cpu", quantize="int4")
    with pytest.raises(ValueError, match="CPU only"):
        TextEncoder(tokenizer, model, device="cuda", quantize="int8")
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("in_features", [48, 384, 1040])
def test_the_float32_fallback_for_cpus_without_fast_int8_gives_the_int_mm_result_exactly(
    in_features: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ml.quantize as quantize

    torch.manual_seed(1)
    linear = torch.nn.Linear(in_features, 64)
    with torch.no_grad():
        linear.weight[0] = 1.0  # a channel of equal weights: every product of a row at its largest value
    x = torch.randn(3, 9, in_features)
    x[0, 0] = 5.0  # a token whose products all reach 127 * 127: the partial sums' worst case
    layer = Int8Linear(linear)

    outputs = {}
    for fast in (True, False):
        probe = quantize.Int8MatmulProbe(int8_seconds=1.0 if fast else 3.0, float32_seconds=2.0)
        assert probe.int8_is_faster is fast and probe.ratio == pytest.approx(2.0 if fast else 2 / 3)
        monkeypatch.setattr(quantize, "int8_matmul_probe", lambda probe=probe: probe)
        with torch.inference_mode():
            outputs[fast] = layer(x)
    assert torch.equal(outputs[True], outputs[False])


def test_int8_vectors_of_an_inexact_int8_kernel_are_cached_apart(
    tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ml.quantize as quantize

    tokenizer, model = load_encoder(str(tiny_bert_dir))
    encoder = TextEncoder(tokenizer, model, device="cpu", quantize="int8")
    base = encoder.cache_namespace.rsplit(":", 1)[0]
    namespaces = {}
    for name, probe in {
        "exact kernel": quantize.Int8MatmulProbe(1.0, 2.0, int_mm_exact=True, int_mm_fingerprint="a" * 64),
        "float32 path": quantize.Int8MatmulProbe(3.0, 2.0, int_mm_exact=False, int_mm_fingerprint="b" * 64),
        "saturating kernel": quantize.Int8MatmulProbe(1.0, 2.0, int_mm_exact=False, int_mm_fingerprint="c" * 64),
        "another one": quantize.Int8MatmulProbe(1.0, 2.0, int_mm_exact=False, int_mm_fingerprint="d" * 64),
    }.items():
        monkeypatch.setattr(quantize, "int8_matmul_probe", lambda probe=probe: probe)
        namespaces[name] = encoder.cache_namespace

    # Exact products give the same vectors whichever way they are computed; an inexact kernel's do not.
    assert namespaces["exact kernel"] == namespaces["float32 path"] == f"{base}:exact"
    assert namespaces["saturating kernel"] == f"{base}:kernel-cccccccccccc"
    assert len(set(namespaces.values())) == 3


def test_the_int8_probe_finds_whether_the_kernel_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    import ml.quantize as quantize

    def saturating(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # As AVX2 int8 kernels without VNNI can do: the activations shifted to unsigned (+128), pairs of
        # products summed in 16 bits with saturation, the shift taken off again from the weights' column sums.
        shifted = a.to(torch.int32)[:, :, None] + 128
        products = shifted * b.to(torch.int32)[None, :, :]
        pairs = (products[:, 0::2] + products[:, 1::2]).clamp(-32768, 32767)
        return (pairs.sum(dim=1) - 128 * b.to(torch.int32).sum(dim=0)).to(torch.int32)

    exact = quantize.int8_matmul_probe.__wrapped__()
    assert exact.int_mm_exact and exact.arithmetic == "exact" and len(exact.int_mm_fingerprint) == 64
    monkeypatch.setattr(torch, "_int_mm", saturating)
    inexact = quantize.int8_matmul_probe.__wrapped__()
    assert not inexact.int_mm_exact and inexact.int_mm_fingerprint != exact.int_mm_fingerprint
    fast = quantize.Int8MatmulProbe(1.0, 2.0, inexact.int_mm_exact, inexact.int_mm_fingerprint)
    assert fast.arithmetic == f"kernel-{inexact.int_mm_fingerprint[:12]}"


def test_the_int8_probe_times_both_products_once_per_process() -> None:
    from ml.quantize import int8_matmul_probe

    first = int8_matmul_probe()
    assert first.int8_seconds > 0 and first.float32_seconds > 0
    assert int8_matmul_probe() is first
