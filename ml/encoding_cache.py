"""On-disk cache of text embeddings keyed by (encoder fingerprint, sha256 of the text).

A single SQLite file (standard library, no pickle): each row holds the float32 bytes of one vector.
The namespace is :attr:`ml.encoder.TextEncoder.cache_namespace`, which contains the encoder's weight, configuration
and tokenizer fingerprints plus the pooling, normalisation, truncation and quantisation settings (for int8 also
whether the CPU's int8 product is exact), so vectors of different encoders (or of a fine-tuned copy) never mix. Unchanged text is never encoded twice, including duplicates within
one call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from ml.encoder import ProgressCallback, TextEncoder

__all__ = ["CachedEncoding", "EncodingCache", "encode_with_cache", "text_sha256"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    namespace TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    dimension INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (namespace, text_sha256)
) WITHOUT ROWID
"""
_LOOKUP_CHUNK = 500  # stays under SQLite's limit on bound parameters
logger = logging.getLogger(__name__)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedEncoding(NamedTuple):
    """What :func:`encode_with_cache` returns."""

    vectors: np.ndarray
    n_encoded: int
    n_reused: int


class EncodingCache:
    """A SQLite file of float32 vectors; safe to share between processes (SQLite locks the file).

    The cache only saves time, so it never stops an encoding: a damaged file is set aside (renamed
    ``<name>.damaged-<unix time>``) and a new one started, a row whose bytes are not a whole vector is skipped, and
    a read or write that fails later is logged and skipped (the texts are encoded instead).

    Args:
        path: the cache file (for example ``$CHURN_CACHE_DIR/encodings.sqlite3``); its folder is created.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._create()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
            logger.warning(
                "encoding cache %s cannot be read (%s): set aside as %s, starting a new one", path, exc, aside
            )
            for suffix in ("", "-wal", "-shm"):
                damaged = Path(f"{self.path}{suffix}")
                if damaged.exists():
                    damaged.replace(Path(f"{aside}{suffix}"))
            self._create()

    def _create(self) -> None:
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, timeout=30)
        try:
            with connection:  # commits on success, rolls back on error
                yield connection
        finally:
            connection.close()

    def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors already stored for ``keys`` (sha256 hex digests) in ``namespace``."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        try:
            with self._connect() as connection:
                for start in range(0, len(unique), _LOOKUP_CHUNK):
                    chunk = unique[start : start + _LOOKUP_CHUNK]
                    placeholders = ",".join("?" * len(chunk))
                    rows = connection.execute(
                        f"SELECT text_sha256, dimension, vector FROM vectors WHERE namespace = ? "  # noqa: S608
                        f"AND text_sha256 IN ({placeholders})",
                        [namespace, *chunk],
                    )
                    for key, dimension, blob in rows:
                        if isinstance(blob, bytes) and dimension > 0 and len(blob) == 4 * dimension:
                            found[key] = np.frombuffer(blob, dtype=np.float32)
        except sqlite3.DatabaseError as exc:
            logger.warning("encoding cache %s could not be read (%s): encoding those texts instead", self.path, exc)
            return {}
        return found

    def put_many(self, namespace: str, vectors: dict[str, np.ndarray]) -> None:
        """Store vectors by key; one transaction, so a crash stores all of them or none."""
        rows = [
            (namespace, key, int(vector.shape[0]), np.ascontiguousarray(vector, dtype=np.float32).tobytes())
            for key, vector in vectors.items()
        ]
        try:
            with self._connect() as connection:
                connection.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)
        except sqlite3.DatabaseError as exc:
            logger.warning("encoding cache %s could not store %d vectors (%s)", self.path, len(rows), exc)

    def count(self, namespace: str | None = None) -> int:
        with self._connect() as connection:
            if namespace is None:
                return int(connection.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
            return int(
                connection.execute("SELECT COUNT(*) FROM vectors WHERE namespace = ?", [namespace]).fetchone()[0]
            )


def encode_with_cache(
    encoder: TextEncoder,
    texts: Sequence[str],
    *,
    cache: EncodingCache | None,
    progress: ProgressCallback | None = None,
    show_progress: bool = False,
) -> CachedEncoding:
    """Embed ``texts``, encoding only the texts whose vectors are not cached yet.

    Args:
        encoder: the :class:`ml.encoder.TextEncoder` to use for missing vectors.
        texts: the texts; duplicates are encoded once.
        cache: the cache, or ``None`` to encode everything (each distinct text still once).

    Returns:
        ``(vectors, n_encoded, n_reused)``: float32 rows in input order, how many distinct texts were
        encoded now, and how many rows came from the cache.
    """
    keys = [text_sha256(text) for text in texts]
    namespace = encoder.cache_namespace
    stored = cache.get_many(namespace, keys) if cache is not None else {}
    missing: dict[str, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in stored and key not in missing:
            missing[key] = text
    fresh: dict[str, np.ndarray] = {}
    if missing:
        encoded = encoder.encode(list(missing.values()), progress=progress, show_progress=show_progress)
        fresh = dict(zip(missing.keys(), encoded, strict=True))
        if cache is not None:
            cache.put_many(namespace, fresh)
    vectors = np.empty((len(texts), encoder.dimension), dtype=np.float32)
    n_reused = 0
    for row, key in enumerate(keys):
        if key in stored:
            vectors[row] = stored[key]
            n_reused += 1
        else:
            vectors[row] = fresh[key]
    return CachedEncoding(vectors=vectors, n_encoded=len(missing), n_reused=n_reused)
