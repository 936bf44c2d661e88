"""A churn classifier on customer text with a BERT-family encoder, in four fine-tuning modes.

``frozen``
    Encode each text once (mean pooling + L2 normalisation, through the encoding cache when one is given)
    and fit a class-weighted logistic regression head on the vectors.
``top-k``
    Unfreeze the top ``top_k`` transformer layers and train them with a linear head.
``lora``
    Freeze the encoder and train low-rank adapters (peft LoRA) on its attention projections, with the head.
``full``
    Train every encoder weight with the head.

The trained modes use AdamW with a linear warm-up and decay, class-weighted binary cross-entropy, gradient
accumulation, length-sorted batches with dynamic padding, and early stopping on the validation PR AUC (an
internal stratified split when no validation set is given). Training is seeded and, on CPU, deterministic.

``predict_proba`` follows the scikit-learn convention: an ``(n, 2)`` array whose column 1 is the churn
probability. Artifacts hold only the weights that training changed (plus the head) in safetensors; on load
they are put back onto the base encoder after its fingerprint is checked against the one recorded at training.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ml.artifacts import ArtifactError, artifact_loader, load_artifact, save_artifact
from ml.encoder import (
    ProgressCallback,
    TextEncoder,
    TokenizedTexts,
    check_config,
    check_tokenizer,
    config_fingerprint,
    default_max_tokens,
    encoder_fingerprint,
    encoder_identity,
    length_sorted_batches,
    load_encoder,
    mean_pool,
    pad_batch,
    resolve_device,
    resolve_encoder_path,
    tokenize,
    tokenizer_fingerprint,
    unknown_token_rate,
    usable_max_length,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "FineTuneConfig",
    "TransformerChurnClassifier",
    "UnknownTokenWarning",
    "UNK_RATE_WARNING_THRESHOLD",
    "warn_unknown_tokens",
]

logger = logging.getLogger(__name__)

Mode = Literal["frozen", "top-k", "lora", "full"]
MODES: tuple[str, ...] = ("frozen", "top-k", "lora", "full")
DEFAULT_LR = {"top-k": 5e-5, "full": 3e-5, "lora": 3e-4}
UNK_RATE_WARNING_THRESHOLD = 0.05
ARTIFACT_KIND = "transformer"
# Attention projections that LoRA adapts, by model family (BERT/RoBERTa/MiniLM, DistilBERT, most others, MPNet).
LORA_TARGET_CANDIDATES = (("query", "value"), ("q_lin", "v_lin"), ("q_proj", "v_proj"), ("q", "v"))


def warn_unknown_tokens(rate: float, encoder_id: str) -> None:
    """Warn, in plain words and with the way out, when more than UNK_RATE_WARNING_THRESHOLD of the training
    texts' tokens are unknown to the encoder (every text mode that reads through an encoder calls this)."""
    if rate <= UNK_RATE_WARNING_THRESHOLD:
        return
    message = (
        f"{rate:.0%} of the tokens in the training texts are unknown to the encoder {encoder_id!r}: its vocabulary "
        "does not cover the language of these texts (for example Chinese), so the model cannot read those words. "
        "Set CHURN_ENCODER to a multilingual or Chinese encoder (a local model directory or a model id in the "
        "local Hugging Face cache, such as bert-base-multilingual-cased or bert-base-chinese) and train again."
    )
    logger.warning(message)
    warnings.warn(message, UnknownTokenWarning, stacklevel=4)


class UnknownTokenWarning(UserWarning):
    """The encoder's vocabulary does not cover the language of the training texts."""


@dataclass(frozen=True)
class FineTuneConfig:
    """Options of :class:`TransformerChurnClassifier`.

    Attributes:
        mode: ``"frozen"``, ``"top-k"``, ``"lora"`` or ``"full"`` (see the module docstring).
        top_k: layers unfrozen (from the top) in ``top-k`` mode.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling and dropout.
        lora_target_modules: module names LoRA adapts; ``None`` picks the query/value projections of the family.
        lr: learning rate of the encoder weights (or adapters); ``None`` uses 5e-5 (top-k), 3e-5 (full), 3e-4 (lora).
        head_lr: learning rate of the linear head.
        head_c: inverse L2 strength of the logistic-regression head in ``frozen`` mode.
        epochs: maximum number of epochs (early stopping may end sooner).
        batch_size: texts per step; ``grad_accum_steps`` steps make one optimiser update.
        warmup_ratio: fraction of the updates spent warming the learning rate up linearly.
        weight_decay: AdamW decay (not applied to biases and LayerNorm weights).
        max_grad_norm: gradient clipping norm.
        max_length: tokens kept per text, special tokens included (lowered to what the encoder's positions hold).
        patience: epochs without a better validation PR AUC before training stops.
        validation_fraction: share held out (stratified) for early stopping when no validation set is given.
        seed: seeds torch, the split and the batch order.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        class_weighting: weight the positive class by negatives/positives (``frozen``: ``class_weight="balanced"``).
        encode_batch_size: texts per forward pass when encoding or scoring.
        prefix_cache_mb: ``top-k`` mode keeps the embeddings and frozen lower layers in eval mode (no dropout), so
            their output never changes; it is computed once per text and kept in memory when it fits in this many MiB
            (``0``: never; the lower layers then run in every step, with the same result).
        show_progress: tqdm bars (only when stderr is a terminal).
    """

    mode: Mode = "frozen"
    top_k: int = 2
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] | None = None
    lr: float | None = None
    head_lr: float = 1e-3
    head_c: float = 1.0
    epochs: int = 3
    batch_size: int = 16
    grad_accum_steps: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 256
    patience: int = 2
    validation_fraction: float = 0.2
    seed: int = 42
    device: str = "auto"
    class_weighting: bool = True
    encode_batch_size: int = 64
    prefix_cache_mb: int = 2048
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        for name in (
            "top_k", "lora_r", "epochs", "batch_size", "grad_accum_steps", "max_length", "encode_batch_size", "patience"
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.max_grad_norm > 0:
            raise ValueError(
                f"max_grad_norm must be above 0 (0 would clip every gradient to nothing), not {self.max_grad_norm}"
            )
        if self.prefix_cache_mb < 0:
            raise ValueError(f"prefix_cache_mb must be 0 or more, not {self.prefix_cache_mb}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), not {self.validation_fraction}")
        if self.lora_target_modules is not None:
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))

    @property
    def encoder_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.mode, 0.0)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_pr_auc: float | None
    seconds: float


@dataclass
class _Network:
    """The encoder (possibly peft-wrapped) and the linear head, moved to one device."""

    encoder: torch.nn.Module
    head: torch.nn.Linear
    dropout: torch.nn.Dropout
    trainable: dict[str, torch.nn.Parameter] = field(default_factory=dict)
    frozen_layers: list[torch.nn.Module] = field(default_factory=list)  # top-k: the layers below the trained ones
    trained_layers: list[torch.nn.Module] = field(default_factory=list)  # top-k: the layers that train

    def modules(self) -> list[torch.nn.Module]:
        return [self.encoder, self.head, self.dropout]

    def train(self, flag: bool = True) -> None:
        for module in self.modules():
            module.train(flag)
        if self.trained_layers:  # top-k: the embeddings and frozen layers are a fixed feature extractor (no
            self.encoder.train(False)  # dropout), so what they make of a text never changes and can be cached
            for layer in self.trained_layers:
                layer.train(flag)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(mean_pool(hidden, attention_mask))).squeeze(-1)


class TransformerChurnClassifier:
    """Churn probability from a customer's text with a BERT-family encoder.

    Args:
        config: training options (:class:`FineTuneConfig`).
        encoder: ``None``/``""`` for the packaged all-MiniLM-L6-v2, a local model directory or a cached hub id.
        cache_dir: folder of the encoding cache used by ``frozen`` mode (``None``: no cache).
    """

    def __init__(
        self,
        config: FineTuneConfig | None = None,
        *,
        encoder: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.config = config or FineTuneConfig()
        self.encoder = encoder or ""
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        texts: Sequence[str],
        y: Sequence[int] | np.ndarray,
        val_texts: Sequence[str] | None = None,
        val_y: Sequence[int] | np.ndarray | None = None,
        progress: ProgressCallback | None = None,
        *,
        groups: Sequence[object] | None = None,
    ) -> TransformerChurnClassifier:
        """Train on ``texts`` with 0/1 labels ``y``; returns ``self``.

        Args:
            val_texts, val_y: validation set for early stopping; without it a stratified share of the
                training set is held out (``validation_fraction``), or none when a class has under 2 rows.
            progress: called as ``progress(fraction, message)`` while training.
            groups: one customer id per text: the held-out share takes whole customers.
        """
        import torch

        texts, labels = _check_inputs(texts, y, "training")
        if val_texts is not None or val_y is not None:
            if val_texts is None or val_y is None:
                raise ValueError("give both val_texts and val_y, or neither")
            val_texts, val_labels = _check_inputs(val_texts, val_y, "validation")
            train_texts, train_labels = texts, labels
            if len(val_labels) and len(np.unique(val_labels)) < 2:
                logger.warning(
                    "the validation set holds only %s: its PR AUC is undefined, so there is no early stopping",
                    "churners" if val_labels[0] == 1 else "non-churners",
                )
        else:
            train_texts, train_labels, val_texts, val_labels = _internal_split(texts, labels, self.config, groups)

        config = self.config
        previous_deterministic = torch.are_deterministic_algorithms_enabled()
        previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        if device == "cpu":
            torch.use_deterministic_algorithms(True)
        try:
            tokenizer, model = load_encoder(self.encoder)
            self.encoder_id_ = encoder_identity(self.encoder)
            self.encoder_path_ = resolve_encoder_path(self.encoder)
            self.encoder_fingerprint_ = encoder_fingerprint(model)
            self.tokenizer_fingerprint_ = tokenizer_fingerprint(tokenizer)
            self.config_fingerprint_ = config_fingerprint(model.config)
            self.unk_rate_ = unknown_token_rate(tokenizer, train_texts)
            self._warn_unknown_tokens()
            self.training_data_sha256_ = _data_hash(texts, labels)
            self.n_train_ = len(train_texts)
            self.n_validation_ = len(val_texts)
            self.device_ = device
            self.history_: list[EpochRecord] = []
            self.prefix_seconds_: float | None = None  # set again only where this fit runs the frozen layers once
            if config.mode == "frozen":
                self._fit_frozen(tokenizer, model, train_texts, train_labels, val_texts, val_labels, progress)
            else:
                self._fit_trainable(tokenizer, model, train_texts, train_labels, val_texts, val_labels, progress)
        finally:
            torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
        return self

    def _warn_unknown_tokens(self) -> None:
        warn_unknown_tokens(self.unk_rate_, self.encoder_id_)

    def _text_encoder(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> TextEncoder:
        return TextEncoder(
            tokenizer,
            model,
            batch_size=self.config.encode_batch_size,
            max_length=self.config.max_length,
            device=self.device_,
            encoder_id=self.encoder_id_,
        )

    def _embed(self, text_encoder: TextEncoder, texts: Sequence[str], progress: ProgressCallback | None) -> np.ndarray:
        from ml.encoding_cache import EncodingCache, encode_with_cache

        cache = EncodingCache(self.cache_dir / "encodings.sqlite3") if self.cache_dir is not None else None
        result = encode_with_cache(
            text_encoder, texts, cache=cache, progress=progress, show_progress=self.config.show_progress
        )
        return result.vectors

    def _fit_frozen(
        self,
        tokenizer: PreTrainedTokenizerBase,
        model: PreTrainedModel,
        texts: list[str],
        labels: np.ndarray,
        val_texts: list[str],
        val_labels: np.ndarray,
        progress: ProgressCallback | None,
    ) -> None:
        from sklearn.linear_model import LogisticRegression

        started = time.perf_counter()
        text_encoder = self._text_encoder(tokenizer, model)
        text_encoder._fingerprint = self.encoder_fingerprint_
        vectors = self._embed(text_encoder, texts + val_texts, _scaled(progress, 0.0, 0.9))
        head = LogisticRegression(
            C=self.config.head_c,
            class_weight="balanced" if self.config.class_weighting else None,
            max_iter=2000,
            random_state=self.config.seed,
        )
        head.fit(vectors[: len(texts)], labels)
        self.head_weight_ = head.coef_.astype(np.float32).reshape(1, -1)
        self.head_bias_ = head.intercept_.astype(np.float32).reshape(1)
        self._tokenizer, self._model, self._network = tokenizer, text_encoder.model, None
        self._text_encoder_cached = text_encoder
        val_auc = None
        if len(val_texts):
            val_auc = _pr_auc(val_labels, self._frozen_probabilities(vectors[len(texts) :]))
        self.best_val_pr_auc_ = val_auc
        self.best_epoch_ = 1
        self.history_.append(EpochRecord(1, float("nan"), val_auc, time.perf_counter() - started))
        if progress is not None:
            progress(1.0, "trained the logistic head on frozen embeddings")

    def _frozen_probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = vectors @ self.head_weight_[0] + self.head_bias_[0]
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    def _fit_trainable(
        self,
        tokenizer: PreTrainedTokenizerBase,
        model: PreTrainedModel,
        texts: list[str],
        labels: np.ndarray,
        val_texts: list[str],
        val_labels: np.ndarray,
        progress: ProgressCallback | None,
    ) -> None:
        import torch
        from transformers import get_linear_schedule_with_warmup

        config = self.config
        network = _build_network(model, config, device=self.device_)
        self._tokenizer, self._model, self._network = tokenizer, model, network
        max_length = usable_max_length(model, config.max_length)
        train_ids = tokenize(tokenizer, texts, max_length=max_length)
        val_ids = tokenize(tokenizer, val_texts, max_length=max_length) if len(val_texts) else None
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        train_prefix = val_prefix = None
        if _FrozenPrefix.fits(network, [train_ids, val_ids], config.prefix_cache_mb):
            if progress is not None:
                progress(0.0, f"running the {len(network.frozen_layers)} frozen layers once over every text")
            started = time.perf_counter()
            train_prefix = _FrozenPrefix(network, train_ids, pad_id=pad_id, device=self.device_, config=config)
            if val_ids is not None:
                val_prefix = _FrozenPrefix(network, val_ids, pad_id=pad_id, device=self.device_, config=config)
            self.prefix_seconds_ = time.perf_counter() - started
            logger.info(
                "frozen layers run once over %d texts in %.1fs", len(texts) + len(val_texts), self.prefix_seconds_
            )
        elif network.frozen_layers:
            logger.info("the frozen layers' output would exceed %d MiB: they run in every step", config.prefix_cache_mb)
        batches_per_epoch = math.ceil(len(texts) / config.batch_size)
        updates_per_epoch = math.ceil(batches_per_epoch / config.grad_accum_steps)
        total_updates = updates_per_epoch * config.epochs
        optimizer = torch.optim.AdamW(_parameter_groups(network, config), lr=config.encoder_lr)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, num_warmup_steps=int(config.warmup_ratio * total_updates), num_training_steps=total_updates
        )
        positives = float(labels.sum())
        pos_weight = (len(labels) - positives) / positives if config.class_weighting and positives > 0 else 1.0
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=self.device_))
        targets = torch.tensor(labels, dtype=torch.float32)
        rng = np.random.default_rng(config.seed)
        best_auc, best_state, waited = -1.0, None, 0
        bar = _epoch_bar(config.epochs * batches_per_epoch, enabled=config.show_progress)
        self.best_epoch_ = config.epochs
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            network.train()
            batches = length_sorted_batches(train_ids.lengths, batch_size=config.batch_size)
            order = rng.permutation(len(batches))
            total_loss = 0.0
            optimizer.zero_grad(set_to_none=True)
            for position, batch_index in enumerate(order):
                indices = batches[batch_index]
                ids, mask = pad_batch(
                    [train_ids.input_ids[i] for i in indices], pad_token_id=pad_id, device=self.device_
                )
                with _replaying(train_prefix, indices):
                    logits = network.logits(ids, mask)
                loss = loss_fn(logits, targets[indices].to(self.device_))
                (loss * len(indices) / _accumulated_rows(batches, order, position, config.grad_accum_steps)).backward()
                total_loss += float(loss.detach()) * len(indices)
                if (position + 1) % config.grad_accum_steps == 0 or position + 1 == len(order):
                    torch.nn.utils.clip_grad_norm_(list(network.trainable.values()), config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                bar.update(1)
                if progress is not None:
                    done = (epoch - 1 + (position + 1) / len(order)) / config.epochs
                    progress(done, f"epoch {epoch} of {config.epochs}: batch {position + 1} of {len(order)}")
            val_auc = None
            if val_ids is not None:
                val_auc = _pr_auc(val_labels, self._score_tokenized(val_ids, val_prefix))
            seconds = time.perf_counter() - started
            self.history_.append(EpochRecord(epoch, total_loss / len(texts), val_auc, seconds))
            logger.info(
                "epoch %d: train loss %.4f, validation PR AUC %s, %.1fs",
                epoch,
                total_loss / len(texts),
                val_auc,
                seconds,
            )
            if val_auc is None:
                continue
            if val_auc > best_auc:
                best_auc, waited, self.best_epoch_ = val_auc, 0, epoch
                best_state = {name: p.detach().clone() for name, p in network.trainable.items()}
            else:
                waited += 1
                if waited >= config.patience:
                    break
        bar.close()
        if best_state is not None:
            with torch.no_grad():
                for name, parameter in network.trainable.items():
                    parameter.copy_(best_state[name])
        if progress is not None:
            stopped = f"stopped early after epoch {epoch} of {config.epochs}" if epoch < config.epochs else "trained"
            kept = f"; kept the weights of epoch {self.best_epoch_}" if best_state is not None else ""
            progress(1.0, stopped + kept)
        self.best_val_pr_auc_ = best_auc if best_state is not None else None
        network.train(False)

    # ------------------------------------------------------------------ predict
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Churn probabilities as an ``(n, 2)`` float64 array: column 0 stays, column 1 churns."""
        self._check_fitted()
        texts = list(texts)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text of row {row} is {type(text).__name__}, not str")
        if self.config.mode == "frozen":
            vectors = self._embed(self._text_encoder_cached, texts, None) if texts else np.zeros((0, 1))
            positive = self._frozen_probabilities(vectors) if texts else np.zeros(0)
        else:
            positive = self._trainable_probabilities(texts)
        return np.column_stack([1.0 - positive, positive])

    def _trainable_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        tokenized = tokenize(self._tokenizer, texts, max_length=usable_max_length(self._model, self.config.max_length))
        return self._score_tokenized(tokenized, None)

    def _score_tokenized(self, tokenized: TokenizedTexts, prefix: _FrozenPrefix | None) -> np.ndarray:
        import torch

        network = self._network
        was_training = network.head.training
        network.train(False)
        pad_id = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        output = np.empty(len(tokenized.input_ids), dtype=np.float64)
        with torch.inference_mode():
            for indices in length_sorted_batches(
                tokenized.lengths, batch_size=self.config.encode_batch_size, max_tokens=default_max_tokens(self.device_)
            ):
                ids, mask = pad_batch(
                    [tokenized.input_ids[i] for i in indices], pad_token_id=pad_id, device=self.device_
                )
                with _replaying(prefix, indices):
                    logits = network.logits(ids, mask)
                output[indices] = torch.sigmoid(logits).double().cpu().numpy()
        network.train(was_training)
        return output

    def _check_fitted(self) -> None:
        if not hasattr(self, "encoder_fingerprint_"):
            raise RuntimeError("this TransformerChurnClassifier is not fitted yet; call fit() or load() first")

    # ------------------------------------------------------------------ save / load
    def metadata(self) -> dict[str, object]:
        """What goes into ``metadata.json`` (libraries are added by :func:`ml.artifacts.save_artifact`)."""
        self._check_fitted()
        return {
            "kind": ARTIFACT_KIND,
            "mode": self.config.mode,
            "config": asdict(self.config),
            "encoder": {
                "spec": self.encoder,
                "id": self.encoder_id_,
                "fingerprint": self.encoder_fingerprint_,
                "tokenizer_fingerprint": self.tokenizer_fingerprint_,
                "config_fingerprint": self.config_fingerprint_,
                "path_at_training": self.encoder_path_,
            },
            "unk_rate": self.unk_rate_,
            "training_data_sha256": self.training_data_sha256_,
            "n_train": self.n_train_,
            "n_validation": self.n_validation_,
            "seed": self.config.seed,
            "metrics": {"validation_pr_auc": self.best_val_pr_auc_},
            "best_epoch": self.best_epoch_,
            "history": [asdict(record) for record in self.history_],
            "frozen_layers_seconds": getattr(self, "prefix_seconds_", None),
            "probability_convention": "predict_proba returns (n, 2); column 1 is the churn probability",
        }

    def save(self, path: str | Path) -> Path:
        """Write the artifact directory (see :mod:`ml.artifacts`); returns it."""
        self._check_fitted()
        if self.config.mode == "frozen":
            tensors = {"head.weight": self.head_weight_, "head.bias": self.head_bias_}
        else:
            tensors = {name: parameter for name, parameter in self._network.trainable.items()}
        return save_artifact(path, tensors=tensors, metadata=self.metadata())

    @classmethod
    @artifact_loader
    def load(
        cls, path: str | Path, *, encoder: str | None = None, device: str = "auto", cache_dir: str | Path | None = None
    ) -> TransformerChurnClassifier:
        """Load an artifact written by :meth:`save`.

        Args:
            encoder: where the base encoder is on this machine, when not where it was at training; its
                fingerprint must match the recorded one.
            device: where to score (``"auto"``: CUDA when present).
        """
        import torch

        tensors, metadata, _ = load_artifact(path)
        if metadata.get("kind") != ARTIFACT_KIND:
            raise ArtifactError(f"model artifact {path} holds a {metadata.get('kind')!r} model, not a transformer")
        config_values = dict(metadata["config"])
        config_values["device"] = device
        config = FineTuneConfig(**config_values)
        recorded = metadata["encoder"]
        spec = encoder if encoder is not None else recorded["spec"]
        tokenizer, model = load_encoder(spec)
        fingerprint = encoder_fingerprint(model)
        if fingerprint != recorded["fingerprint"]:
            raise ArtifactError(
                f"model artifact {path} was trained on encoder {recorded['id']!r} with fingerprint "
                f"{recorded['fingerprint'][:12]}..., but the encoder found at {spec or 'the default'} has fingerprint "
                f"{fingerprint[:12]}...; point CHURN_ENCODER at the same encoder weights"
            )
        tokenizer_found = tokenizer_fingerprint(tokenizer)
        check_tokenizer(path, recorded, tokenizer_found)
        config_found = config_fingerprint(model.config)
        check_config(path, recorded, config_found)
        instance = cls(config, encoder=spec, cache_dir=cache_dir)
        instance.encoder_id_ = recorded["id"]
        instance.encoder_path_ = recorded.get("path_at_training", "")
        instance.encoder_fingerprint_ = fingerprint
        instance.tokenizer_fingerprint_ = tokenizer_found
        instance.config_fingerprint_ = config_found
        instance.unk_rate_ = float(metadata["unk_rate"])
        instance.training_data_sha256_ = metadata["training_data_sha256"]
        instance.n_train_ = int(metadata["n_train"])
        instance.n_validation_ = int(metadata["n_validation"])
        instance.best_val_pr_auc_ = metadata["metrics"]["validation_pr_auc"]
        instance.best_epoch_ = int(metadata["best_epoch"])
        instance.history_ = [EpochRecord(**record) for record in metadata["history"]]
        instance.device_ = resolve_device(device)
        if config.mode == "frozen":
            _expect_names(path, tensors, {"head.weight", "head.bias"})
            instance.head_weight_ = tensors["head.weight"]
            instance.head_bias_ = tensors["head.bias"]
            instance._text_encoder_cached = instance._text_encoder(tokenizer, model)
            instance._text_encoder_cached._fingerprint = fingerprint
            instance._tokenizer, instance._model, instance._network = tokenizer, model, None
            return instance
        torch.manual_seed(config.seed)
        network = _build_network(model, config, device=instance.device_)
        _expect_names(path, tensors, set(network.trainable))
        with torch.no_grad():
            for name, parameter in network.trainable.items():
                value = torch.from_numpy(np.array(tensors[name]))
                if tuple(value.shape) != tuple(parameter.shape):
                    raise ArtifactError(
                        f"model artifact {path}: tensor {name} has shape {tuple(value.shape)}, "
                        f"the model expects {tuple(parameter.shape)}"
                    )
                parameter.copy_(value.to(parameter.dtype))
        network.train(False)
        instance._tokenizer, instance._model, instance._network = tokenizer, model, network
        return instance


# ---------------------------------------------------------------------- helpers
def _check_inputs(texts: Sequence[str], y: Sequence[int] | np.ndarray, what: str) -> tuple[list[str], np.ndarray]:
    texts = list(texts)
    labels = np.asarray(y)
    if len(texts) != len(labels):
        raise ValueError(f"{what} set has {len(texts)} texts but {len(labels)} labels")
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what} text of row {row} is {type(text).__name__}, not str")
    for row, label in enumerate(labels.tolist()):
        if label not in (0, 1, True, False):
            raise ValueError(f"{what} label of row {row} is {label!r}; labels must be 0 or 1")
    labels = labels.astype(np.int64)
    if what == "training" and len(np.unique(labels)) < 2:
        raise ValueError("training labels hold a single class; churn training needs both 0 and 1")
    return texts, labels


def _internal_split(
    texts: list[str], labels: np.ndarray, config: FineTuneConfig, groups: Sequence[object] | None = None
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    from ml.folds import stratified_holdout

    counts = np.bincount(labels, minlength=2)
    n_validation = math.ceil(config.validation_fraction * len(texts))
    if counts.min() < 2 or n_validation < 2 or len(texts) - n_validation < 2:
        logger.info("no validation split: too few rows per class (%s); training runs every epoch", counts.tolist())
        return texts, labels, [], np.zeros(0, dtype=np.int64)
    try:
        train_idx, val_idx = stratified_holdout(labels, config.validation_fraction, seed=config.seed, groups=groups)
    except ValueError as exc:  # fewer customers than grouped folds
        logger.info("no validation split: %s; training runs every epoch", exc)
        return texts, labels, [], np.zeros(0, dtype=np.int64)
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    if len(np.unique(labels[val_idx])) < 2:  # the stratified rounding left the smaller class out
        logger.info("no validation split: a %d-row share would hold one class; training runs every epoch", len(val_idx))
        return texts, labels, [], np.zeros(0, dtype=np.int64)
    return [texts[i] for i in train_idx], labels[train_idx], [texts[i] for i in val_idx], labels[val_idx]


def _data_hash(texts: Sequence[str], labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    for text, label in zip(texts, labels.tolist(), strict=True):
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
        digest.update(b"1" if label else b"0")
    return digest.hexdigest()


def _pr_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    if len(np.unique(labels)) < 2:
        return None
    return float(average_precision_score(labels, probabilities))


def _scaled(progress: ProgressCallback | None, start: float, end: float) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


def _accumulated_rows(batches: list[np.ndarray], order: np.ndarray, position: int, accum: int) -> int:
    """Rows in the accumulation window holding ``position``, so every row weighs the same in an update."""
    first = (position // accum) * accum
    return sum(len(batches[order[i]]) for i in range(first, min(first + accum, len(order))))


def _encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        current: object = model
        for part in path.split("."):
            current = getattr(current, part, None)
            if current is None:
                break
        if current is not None:
            return current
    raise ValueError(f"cannot find the transformer layers of {type(model).__name__} for top-k fine-tuning")


def _lora_targets(model: torch.nn.Module, config: FineTuneConfig) -> list[str]:
    if config.lora_target_modules:
        return list(config.lora_target_modules)
    import torch

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    for candidate in LORA_TARGET_CANDIDATES:
        if set(candidate) <= names:
            return list(candidate)
    raise ValueError(f"cannot find attention projections for LoRA in {type(model).__name__}; set lora_target_modules")


def _build_network(model: PreTrainedModel, config: FineTuneConfig, *, device: str) -> _Network:
    """Wrap the encoder for ``config.mode`` and mark what trains; the head is created after the seed is set."""
    import torch

    encoder: torch.nn.Module = model
    frozen_layers: list[torch.nn.Module] = []
    trained_layers: list[torch.nn.Module] = []
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    if config.mode == "top-k":
        layers = _encoder_layers(encoder)
        if config.top_k > len(layers):
            raise ValueError(f"top_k={config.top_k} but the encoder has only {len(layers)} layers")
        for layer in layers[-config.top_k :]:
            for parameter in layer.parameters():
                parameter.requires_grad_(True)
        frozen_layers = list(layers[: len(layers) - config.top_k])
        trained_layers = list(layers[len(layers) - config.top_k :])
    elif config.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=_lora_targets(encoder, config),
            bias="none",
        )
        encoder = get_peft_model(encoder, lora)
    elif config.mode == "full":
        for parameter in encoder.parameters():
            parameter.requires_grad_(True)
    hidden = int(model.config.hidden_size)
    head = torch.nn.Linear(hidden, 1)
    dropout = torch.nn.Dropout(float(getattr(model.config, "hidden_dropout_prob", 0.1) or 0.0))
    encoder.to(device)
    head.to(device)
    trainable = {f"encoder.{name}": p for name, p in encoder.named_parameters() if p.requires_grad}
    trainable.update({f"head.{name}": p for name, p in head.named_parameters()})
    return _Network(
        encoder=encoder,
        head=head,
        dropout=dropout,
        trainable=trainable,
        frozen_layers=frozen_layers,
        trained_layers=trained_layers,
    )


class _StopForward(Exception):
    """Raised by a hook once the last frozen layer has run: the layers above are not needed yet."""


class _FrozenPrefix:
    """What the frozen lower layers of a ``top-k`` network make of each text, computed once.

    Those layers run in eval mode and never change, so running them in every step of every epoch repeats the
    same arithmetic. Their output is kept per text (unpadded, on the training device); during a step the frozen
    layers are stood in for by :func:`_replaying`, which hands the batch's stored states to the first trained
    layer. The embeddings still run (cheaply) so that the model builds its attention mask as usual.
    """

    def __init__(
        self, network: _Network, tokenized: TokenizedTexts, *, pad_id: int, device: str, config: FineTuneConfig
    ) -> None:
        import torch

        self.layers = _encoder_layers(network.encoder)
        self.n_frozen = len(network.frozen_layers)
        self.returns_tuple = False
        lengths = tokenized.lengths
        self.states: list[torch.Tensor] = [None] * len(lengths)  # type: ignore[list-item]
        was_training = network.head.training
        network.train(False)
        captured: dict[str, object] = {}

        def stop(module: torch.nn.Module, args: object, output: object) -> None:
            captured["output"] = output
            raise _StopForward

        handle = self.layers[self.n_frozen - 1].register_forward_hook(stop)
        try:
            with (
                torch.no_grad()
            ):  # not inference_mode: the states feed the trained layers, which save them for backward
                for indices in length_sorted_batches(
                    lengths, batch_size=config.encode_batch_size, max_tokens=default_max_tokens(device)
                ):
                    ids, mask = pad_batch([tokenized.input_ids[i] for i in indices], pad_token_id=pad_id, device=device)
                    try:
                        network.encoder(input_ids=ids, attention_mask=mask)
                    except _StopForward:
                        pass
                    output = captured.pop("output")
                    self.returns_tuple = isinstance(output, tuple)
                    hidden = output[0] if isinstance(output, tuple) else output
                    for row, index in enumerate(indices):
                        self.states[index] = hidden[row, : lengths[index]].clone()
        finally:
            handle.remove()
            network.train(was_training)

    @staticmethod
    def fits(network: _Network, tokenized: Sequence[TokenizedTexts | None], budget_mb: int) -> bool:
        """Whether the states of these texts fit in ``budget_mb`` MiB (float32); never without frozen layers."""
        if not network.frozen_layers or budget_mb <= 0:
            return False
        tokens = sum(int(t.lengths.sum()) for t in tokenized if t is not None)
        hidden = int(network.head.in_features)
        return tokens * hidden * 4 <= budget_mb * 2**20

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        from torch.nn.utils.rnn import pad_sequence

        return pad_sequence([self.states[i] for i in indices], batch_first=True)


def _replaying(prefix: _FrozenPrefix | None, indices: Sequence[int]):  # noqa: ANN202 - a context manager
    """Stand in for the frozen layers with the stored states of the batch ``indices`` (nothing when no prefix)."""
    from contextlib import contextmanager, nullcontext

    if prefix is None:
        return nullcontext()

    @contextmanager
    def swapped():  # noqa: ANN202
        states = prefix.batch(indices)
        replay = _replay_module(states, prefix.returns_tuple)
        originals = [prefix.layers[i] for i in range(prefix.n_frozen)]
        for i in range(prefix.n_frozen):
            prefix.layers[i] = replay
        try:
            yield
        finally:
            for i, layer in enumerate(originals):
                prefix.layers[i] = layer

    return swapped()


def _replay_module(states: torch.Tensor, returns_tuple: bool) -> torch.nn.Module:
    import torch

    class _Replay(torch.nn.Module):
        def forward(self, *args: object, **kwargs: object) -> object:
            return (states,) if returns_tuple else states

    return _Replay()


def _parameter_groups(network: _Network, config: FineTuneConfig) -> list[dict[str, object]]:
    decay, no_decay, head = [], [], []
    for name, parameter in network.trainable.items():
        if name.startswith("head."):
            head.append(parameter)
        elif name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "lr": config.encoder_lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": config.encoder_lr},
        {"params": head, "weight_decay": 0.0, "lr": config.head_lr},
    ]
    return [group for group in groups if group["params"]]


def _expect_names(path: str | Path, tensors: dict[str, np.ndarray], expected: set[str]) -> None:
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ArtifactError(
            f"model artifact {path} does not fit its mode: missing tensors {missing[:3]}, unexpected {unexpected[:3]}"
        )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _epoch_bar(total: int, *, enabled: bool) -> _NoBar:
    import sys

    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fine-tuning", unit="batch", leave=False)
