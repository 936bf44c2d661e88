"""Safe model artifacts: one directory per model, no pickle anywhere, every file checksummed.

Layout of an artifact directory::

    model.safetensors   the numeric state (numpy arrays / torch tensors), safetensors format
    metadata.json       JSON metadata (mode, encoder id and fingerprint, features, metrics, seed, ...)
    manifest.json       {"format": "churnsite-artifact", "version": 1, "files": {name: {"sha256", "size"}}}
    <extra files>       optional text/binary files (e.g. a LightGBM model dump, a vocabulary as JSON)

Usage::

    save_artifact(path, tensors={"coef": coef}, metadata={"kind": "tfidf"}, extra_files={"vocab.json": text})
    tensors, metadata, files = load_artifact(path)   # files: {name: bytes} of the extra files

``save_artifact`` writes into a temporary sibling directory and renames it into place, so a crash never
leaves a half-written model. ``load_artifact`` reads and verifies every file (size, sha256) and refuses
pickle in any form (``*.pkl``, ``*.pt``, ``*.bin``..., or pickle/torch-zip content) *before* it parses anything,
so a missing, truncated or tampered file gives an :class:`ArtifactError` and never a half-loaded model.
``metadata["libraries"]`` is filled in with the versions of torch, transformers, scikit-learn, numpy
(and the others listed in ``LIBRARIES``) that are installed at save time.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "ARTIFACT_FORMAT",
    "ArtifactError",
    "LoadedArtifact",
    "library_versions",
    "load_artifact",
    "save_artifact",
    "sha256_bytes",
]

ARTIFACT_FORMAT = "churnsite-artifact"
ARTIFACT_VERSION = 1
TENSORS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
MANIFEST_FILE = "manifest.json"
RESERVED_FILES = frozenset({TENSORS_FILE, METADATA_FILE, MANIFEST_FILE})
# Suffixes of formats that may execute code when loaded (pickle and what wraps it).
FORBIDDEN_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".ckpt", ".npz", ".npy")
LIBRARIES = ("torch", "transformers", "peft", "scikit-learn", "numpy", "lightgbm", "safetensors")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ArtifactError(ValueError):
    """An artifact directory is missing, incomplete, tampered with, or contains something unsafe."""


class LoadedArtifact(NamedTuple):
    """What :func:`load_artifact` returns; unpacks as ``tensors, metadata, files``."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, object]
    files: dict[str, bytes]


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a model depends on (absent ones are left out)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def save_artifact(
    path: str | os.PathLike[str],
    *,
    tensors: Mapping[str, object],
    metadata: Mapping[str, object],
    extra_files: Mapping[str, bytes | str] | None = None,
) -> Path:
    """Write an artifact directory atomically (a temporary sibling directory renamed into place).

    Args:
        path: the artifact directory; replaced as a whole if it exists.
        tensors: name -> numpy array or torch tensor (moved to CPU; bfloat16/float16 are stored as float32).
        metadata: JSON-serialisable metadata (numpy scalars and arrays are converted); ``libraries`` is added.
        extra_files: flat file name -> bytes or str (str is written as UTF-8). Names must be plain
            (letters, digits, ``._-``), not reserved, and not a pickle-like suffix.

    Returns:
        The artifact directory.
    """
    target = Path(path)
    extra_files = dict(extra_files or {})
    for name in extra_files:
        _check_file_name(name)
    payload: dict[str, bytes] = {
        TENSORS_FILE: _tensors_to_bytes(tensors),
        METADATA_FILE: _metadata_to_bytes(metadata),
    }
    for name, content in extra_files.items():
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        _refuse_pickle_content(name, data)
        payload[name] = data
    manifest = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "files": {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in sorted(payload.items())},
    }
    payload[MANIFEST_FILE] = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name, data in payload.items():
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        previous = None
        if target.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            previous.rmdir()
            target.rename(previous)
        staging.rename(target)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_artifact(path: str | os.PathLike[str]) -> LoadedArtifact:
    """Read and verify an artifact directory written by :func:`save_artifact`.

    Every file listed in the manifest must be present with its recorded size and sha256, no other file
    may be in the directory, and no file may be (or contain) a pickle. Nothing is parsed before all the
    checks pass.

    Returns:
        ``(tensors, metadata, files)``: numpy arrays by name, the metadata dict, and the extra files as bytes.

    Raises:
        ArtifactError: with a message naming the directory and the offending file.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ArtifactError(f"model artifact {directory} does not exist or is not a directory")
    present = {entry.name for entry in directory.iterdir()}
    for name in sorted(present):
        if name.lower().endswith(FORBIDDEN_SUFFIXES):
            raise ArtifactError(
                f"model artifact {directory} contains {name!r}: pickle-based files are refused "
                "(they can run arbitrary code when loaded); artifacts hold safetensors and JSON only"
            )
    if MANIFEST_FILE not in present:
        raise ArtifactError(f"model artifact {directory} is incomplete: {MANIFEST_FILE} is missing")
    manifest = _read_manifest(directory)
    listed: dict[str, dict[str, object]] = manifest["files"]
    unexpected = sorted(present - set(listed) - {MANIFEST_FILE})
    if unexpected:
        raise ArtifactError(
            f"model artifact {directory} contains files not listed in its manifest: {', '.join(unexpected)}"
        )
    contents: dict[str, bytes] = {}
    for name, entry in sorted(listed.items()):
        _check_file_name(name, reserved_ok=True, directory=directory)
        file_path = directory / name
        if not file_path.is_file():
            raise ArtifactError(f"model artifact {directory} is incomplete: {name} is missing")
        data = file_path.read_bytes()
        if len(data) != entry.get("size"):
            raise ArtifactError(
                f"model artifact {directory}: {name} is truncated or altered "
                f"({len(data)} bytes on disk, {entry.get('size')} recorded in the manifest)"
            )
        if sha256_bytes(data) != entry.get("sha256"):
            raise ArtifactError(
                f"model artifact {directory}: {name} does not match its sha256 in the manifest "
                "(the file was changed after saving); refusing to load it"
            )
        _refuse_pickle_content(name, data, directory=directory)
        contents[name] = data
    for required in (TENSORS_FILE, METADATA_FILE):
        if required not in contents:
            raise ArtifactError(f"model artifact {directory} is incomplete: its manifest does not list {required}")

    try:
        metadata = json.loads(contents.pop(METADATA_FILE).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"model artifact {directory}: {METADATA_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise ArtifactError(f"model artifact {directory}: {METADATA_FILE} must hold a JSON object")
    tensors = _tensors_from_bytes(contents.pop(TENSORS_FILE), directory)
    return LoadedArtifact(tensors=tensors, metadata=metadata, files=contents)


def _read_manifest(directory: Path) -> dict[str, dict[str, dict[str, object]]]:
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"model artifact {directory}: {MANIFEST_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"model artifact {directory}: {MANIFEST_FILE} is not a {ARTIFACT_FORMAT} manifest")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(
            f"model artifact {directory}: manifest version {manifest.get('version')!r} is not supported "
            f"(this code reads version {ARTIFACT_VERSION})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(entry, dict) for entry in files.values()):
        raise ArtifactError(f"model artifact {directory}: {MANIFEST_FILE} has no valid 'files' table")
    return manifest


def _check_file_name(name: str, *, reserved_ok: bool = False, directory: Path | None = None) -> None:
    where = f"model artifact {directory}: " if directory is not None else ""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise ArtifactError(f"{where}file name {name!r} is not a plain file name (letters, digits, '._-')")
    if name.lower().endswith(FORBIDDEN_SUFFIXES):
        raise ArtifactError(f"{where}file {name!r} has a pickle-based suffix; use safetensors or JSON")
    if not reserved_ok and name in RESERVED_FILES:
        raise ArtifactError(f"{where}file name {name!r} is reserved for the artifact itself")


def _refuse_pickle_content(name: str, data: bytes, *, directory: Path | None = None) -> None:
    where = f"model artifact {directory}: " if directory is not None else ""
    # Pickle protocols 2-5 start with the PROTO opcode; torch.save writes a zip holding a data.pkl.
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        raise ArtifactError(f"{where}{name} holds pickle data; pickle is refused")
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                inner = [n for n in archive.namelist() if n.lower().endswith((".pkl", ".pickle"))]
        except zipfile.BadZipFile:
            inner = []
        if inner:
            raise ArtifactError(f"{where}{name} is an archive holding pickle data ({inner[0]}); pickle is refused")


def _to_numpy(name: str, value: object) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, converted without importing torch here
        tensor = value.detach().cpu()
        if str(tensor.dtype) in {"torch.bfloat16", "torch.float16"}:
            tensor = tensor.float()
        value = tensor.numpy()
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in {"U", "S", "O", "V"}:
        raise ArtifactError(f"tensor {name!r} has dtype {array.dtype}; only numeric arrays go in model.safetensors")
    return np.ascontiguousarray(array)


def _tensors_to_bytes(tensors: Mapping[str, object]) -> bytes:
    from safetensors.numpy import save

    arrays = {str(name): _to_numpy(str(name), value) for name, value in tensors.items()}
    return save(arrays)


def _tensors_from_bytes(data: bytes, directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return dict(load(data))
    except Exception as exc:  # safetensors raises its own error types for a malformed header
        raise ArtifactError(
            f"model artifact {directory}: {TENSORS_FILE} is not a valid safetensors file ({exc})"
        ) from exc


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")


def _replace_non_finite(value: object) -> object:
    # Strict JSON has no NaN/Infinity: a metric that is undefined (e.g. PR AUC with one class) becomes null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _replace_non_finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_non_finite(item) for item in value]
    return value


def _metadata_to_bytes(metadata: Mapping[str, object]) -> bytes:
    document = dict(metadata)
    document.setdefault("libraries", library_versions())
    try:
        plain = json.loads(json.dumps(document, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"metadata is not JSON-serialisable: {exc}") from exc
    return json.dumps(_replace_non_finite(plain), indent=2, sort_keys=True, allow_nan=False).encode("utf-8")
