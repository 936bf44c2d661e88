"""The text baseline: character n-gram TF-IDF of a customer's messages with a logistic regression.

Character n-grams inside word boundaries (``char_wb``, 2-5 by default, sublinear term frequency) read any
language and any script, Chinese included, with no tokenizer vocabulary to miss; the transformer has to
beat this on text. ``predict_proba`` returns an ``(n, 2)`` array (column 1: churn probability). The artifact
holds the vocabulary as JSON and the idf weights and coefficients in safetensors; no pickle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ml.artifacts import ArtifactError, artifact_loader, load_artifact, save_artifact

__all__ = ["TfidfChurnClassifier", "TfidfOptions"]

VOCABULARY_FILE = "vocabulary.json"


@dataclass(frozen=True)
class TfidfOptions:
    """Options of :class:`TfidfChurnClassifier`.

    Attributes:
        ngram_min, ngram_max: character n-gram lengths (within word boundaries).
        min_df: n-grams seen in fewer documents are dropped.
        max_features: keep the most frequent n-grams only (bounds the vocabulary saved with the model).
        c: inverse L2 regularisation strength of the logistic regression.
        class_weighting: ``class_weight="balanced"`` for the rare churners.
        seed: random state of the solver.
    """

    ngram_min: int = 2
    ngram_max: int = 5
    min_df: int = 1
    max_features: int | None = 200_000
    c: float = 1.0
    class_weighting: bool = True
    seed: int = 42

    def __post_init__(self) -> None:
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min} and {self.ngram_max}")


class TfidfChurnClassifier:
    """Churn probability from text with character n-gram TF-IDF and logistic regression."""

    kind = "tfidf"

    def __init__(self, options: TfidfOptions | None = None) -> None:
        self.options = options or TfidfOptions()

    def _vectorizer(self, vocabulary: dict[str, int] | None = None):  # noqa: ANN202 - sklearn type
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(self.options.ngram_min, self.options.ngram_max),
            sublinear_tf=True,
            lowercase=True,
            min_df=self.options.min_df if vocabulary is None else 1,
            max_features=self.options.max_features if vocabulary is None else None,
            vocabulary=vocabulary,
            dtype=np.float32,
        )

    def fit(
        self, texts: Sequence[str], y: Sequence[int] | np.ndarray, *, groups: Sequence[object] | None = None
    ) -> TfidfChurnClassifier:
        """Fit on texts (one per customer, e.g. their messages joined) and 0/1 labels; returns ``self``.

        ``groups`` is accepted like every text model's; nothing here is chosen on held-out rows, so it is unused.
        """
        from sklearn.linear_model import LogisticRegression

        texts = _check_texts(texts)
        labels = np.asarray(y)
        if len(labels) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        for row, label in enumerate(labels.tolist()):
            if label not in (0, 1, True, False):
                raise ValueError(f"label of row {row} is {label!r}; labels must be 0 or 1")
        labels = labels.astype(np.int64)
        if len(np.unique(labels)) < 2:
            raise ValueError("training labels hold a single class; churn training needs both 0 and 1")
        vectorizer = self._vectorizer()
        features = vectorizer.fit_transform(texts)
        head = LogisticRegression(
            C=self.options.c,
            class_weight="balanced" if self.options.class_weighting else None,
            max_iter=2000,
            random_state=self.options.seed,
        )
        head.fit(features, labels)
        self.vectorizer_ = vectorizer
        self.coef_ = head.coef_[0].astype(np.float64)
        self.intercept_ = float(head.intercept_[0])
        digest = hashlib.sha256()
        for text, label in zip(texts, labels.tolist(), strict=True):
            digest.update(hashlib.sha256(text.encode("utf-8")).digest() + (b"1" if label else b"0"))
        self.training_data_sha256_ = digest.hexdigest()
        self.n_train_ = len(texts)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, 2)`` probabilities: column 0 stays, column 1 churns."""
        if not hasattr(self, "vectorizer_"):
            raise RuntimeError("this TfidfChurnClassifier is not fitted yet; call fit() or load() first")
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, 2))
        logits = self.vectorizer_.transform(texts) @ self.coef_ + self.intercept_
        churn = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
        return np.column_stack([1.0 - churn, churn])

    def top_ngrams(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` n-grams that push most towards churn, with their coefficients."""
        terms = np.empty(len(self.vectorizer_.vocabulary_), dtype=object)
        for term, index in self.vectorizer_.vocabulary_.items():
            terms[index] = term
        order = np.argsort(-self.coef_)[:k]
        return [(str(terms[i]), float(self.coef_[i])) for i in order]

    def save(self, path: str | Path) -> Path:
        vocabulary = {term: int(index) for term, index in self.vectorizer_.vocabulary_.items()}
        return save_artifact(
            path,
            tensors={
                "idf": self.vectorizer_.idf_.astype(np.float64),
                "coef": self.coef_,
                "intercept": np.array([self.intercept_]),
            },
            metadata={
                "kind": self.kind,
                "options": asdict(self.options),
                "training_data_sha256": self.training_data_sha256_,
                "n_train": self.n_train_,
                "probability_convention": "predict_proba returns (n, 2); column 1 is the churn probability",
            },
            extra_files={VOCABULARY_FILE: json.dumps(vocabulary, ensure_ascii=False, sort_keys=True)},
        )

    @classmethod
    @artifact_loader
    def load(cls, path: str | Path) -> TfidfChurnClassifier:
        tensors, metadata, files = load_artifact(path)
        if metadata.get("kind") != cls.kind:
            raise ArtifactError(f"model artifact {path} holds a {metadata.get('kind')!r} model, not {cls.kind!r}")
        if VOCABULARY_FILE not in files:
            raise ArtifactError(f"model artifact {path} has no {VOCABULARY_FILE}")
        vocabulary = json.loads(files[VOCABULARY_FILE].decode("utf-8"))
        idf, coef = tensors["idf"], tensors["coef"]
        if not (len(vocabulary) == len(idf) == len(coef)) or sorted(vocabulary.values()) != list(range(len(idf))):
            raise ArtifactError(
                f"model artifact {path}: vocabulary ({len(vocabulary)} terms), idf ({len(idf)}) and "
                f"coefficients ({len(coef)}) do not line up"
            )
        model = cls(TfidfOptions(**metadata["options"]))
        vectorizer = model._vectorizer(vocabulary)
        vectorizer.idf_ = idf
        model.vectorizer_ = vectorizer
        model.coef_ = np.asarray(coef, dtype=np.float64)
        model.intercept_ = float(tensors["intercept"][0])
        model.training_data_sha256_ = metadata["training_data_sha256"]
        model.n_train_ = int(metadata["n_train"])
        return model


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text of row {row} is {type(text).__name__}, not str")
    return texts
