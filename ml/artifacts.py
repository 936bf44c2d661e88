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

import functools
import hashlib
import io
import json
import math
import os
import pickle  # only to recognise pickle data, with an unpickler that cannot run anything
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

__all__ = [
    "ARTIFACT_FORMAT",
    "ArtifactError",
    "LoadedArtifact",
    "artifact_loader",
    "library_versions",
    "load_artifact",
    "save_artifact",
    "sha256_bytes",
]

T = TypeVar("T")
ARTIFACT_FORMAT = "churnsite-artifact"
ARTIFACT_VERSION = 1
TENSORS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
MANIFEST_FILE = "manifest.json"
RESERVED_FILES = frozenset({TENSORS_FILE, METADATA_FILE, MANIFEST_FILE})
# Suffixes of formats that may execute code when loaded (pickle and what wraps it).
FORBIDDEN_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".ckpt", ".npz", ".npy")
LIBRARIES = ("torch", "transformers", "peft", "scikit-learn", "numpy", "lightgbm", "safetensors")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # whole names only: fullmatch (``$`` passes a final newline)


class ArtifactError(ValueError):
    """An artifact directory is missing, incomplete, tampered with, or contains something unsafe."""


class LoadedArtifact(NamedTuple):
    """What :func:`load_artifact` returns; unpacks as ``tensors, metadata, files``."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, object]
    files: dict[str, bytes]


def artifact_loader(load: Callable[..., T]) -> Callable[..., T]:
    """Decorate a ``load(cls, path, ...)`` so that metadata this code cannot read (a missing key, a value of another
    type, an option it does not know: an artifact of another version) is an :class:`ArtifactError` naming ``path``,
    like every other reason a model cannot be loaded, and not a bare ``KeyError`` or ``TypeError``."""

    @functools.wraps(load)
    def checked(cls: type, path: str | os.PathLike[str], *args: object, **kwargs: object) -> T:
        try:
            return load(cls, path, *args, **kwargs)
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ArtifactError(
                f"model artifact {path}: its metadata does not fit this version of the code "
                f"({type(exc).__name__}: {exc}); train the model again or load it with the version that saved it"
            ) from exc

    return checked


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
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace_directory(staging, target)
    return target


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows (save writes strict JSON)")


def recover_interrupted_save(target: Path) -> None:
    """Put back the model a save had moved aside when the process died before it renamed the new one into place.

    A save moves the old directory to ``.<name>.old-*`` and then the new one to ``<name>``; a crash between the two
    renames leaves ``<name>`` missing. The save did not finish, so its old model is the right one to have there.
    """
    if target.exists() or target.is_symlink():
        return
    moved_aside = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if moved_aside:
        try:
            moved_aside[-1].rename(target)
        except OSError:  # another process put it back (or saved) first
            return


def _replace_directory(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``; an existing ``target`` is replaced, or stays if the move fails."""
    previous = None
    recover_interrupted_save(target)
    try:
        if target.exists() or target.is_symlink():
            previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            previous.rmdir()
            target.rename(previous)
        staging.rename(target)
    except BaseException:
        if previous is not None and previous.exists() and not target.exists():
            previous.rename(target)  # put the old model back: a failed save never leaves the path empty
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if previous is not None:
        if previous.is_symlink() or previous.is_file():
            previous.unlink()
        else:
            shutil.rmtree(previous, ignore_errors=True)


def load_artifact(path: str | os.PathLike[str], *, expected_sha256: Mapping[str, str] | None = None) -> LoadedArtifact:
    """Read and verify an artifact directory written by :func:`save_artifact`.

    Every file listed in the manifest must be a regular file (not a link) with its recorded size and sha256, no
    other entry may be in the directory, and no file may be (or contain) a pickle. Nothing is parsed before all
    the checks pass.

    Args:
        expected_sha256: the sha256 of each file as recorded elsewhere when the model was registered (a database
            row, say), ``manifest.json`` included where it was recorded. The manifest only proves that the files
            match each other; with this table a rewritten manifest is refused too.

    Returns:
        ``(tensors, metadata, files)``: numpy arrays by name, the metadata dict, and the extra files as bytes.

    Raises:
        ArtifactError: with a message naming the directory and the offending file.
    """
    directory = Path(path)
    recover_interrupted_save(directory)
    if not directory.is_dir():
        raise ArtifactError(f"model artifact {directory} does not exist or is not a directory")
    try:
        present = {entry.name for entry in directory.iterdir()}
    except OSError as exc:
        raise ArtifactError(f"model artifact {directory} cannot be read ({exc})") from exc
    for name in sorted(present):
        if name.lower().endswith(FORBIDDEN_SUFFIXES):
            raise ArtifactError(
                f"model artifact {directory} contains {name!r}: pickle-based files are refused "
                "(they can run arbitrary code when loaded); artifacts hold safetensors and JSON only"
            )
    if MANIFEST_FILE not in present:
        raise ArtifactError(f"model artifact {directory} is incomplete: {MANIFEST_FILE} is missing")
    manifest_bytes = _read_regular_file(directory, MANIFEST_FILE, size=None)
    if expected_sha256 is not None and MANIFEST_FILE in expected_sha256:
        if sha256_bytes(manifest_bytes) != expected_sha256[MANIFEST_FILE]:
            raise ArtifactError(
                f"model artifact {directory}: {MANIFEST_FILE} is not the manifest recorded when the model was "
                "registered (it was rewritten); refusing to load it"
            )
    manifest = _read_manifest(directory, manifest_bytes)
    listed: dict[str, dict[str, object]] = manifest["files"]
    unexpected = sorted(present - set(listed) - {MANIFEST_FILE})
    if unexpected:
        raise ArtifactError(
            f"model artifact {directory} contains files not listed in its manifest: {', '.join(unexpected)}"
        )
    if expected_sha256 is not None:
        differing = sorted(
            name
            for name in (set(listed) | set(expected_sha256)) - {MANIFEST_FILE}
            if name not in listed
            or name not in expected_sha256
            or (listed[name] or {}).get("sha256") != expected_sha256[name]
        )
        if differing:
            raise ArtifactError(
                f"model artifact {directory}: {', '.join(differing)} not as recorded when the model was registered "
                "(the files and their manifest were replaced); refusing to load it"
            )
    contents: dict[str, bytes] = {}
    for name, entry in sorted(listed.items()):
        _check_file_name(name, reserved_ok=True, directory=directory)
        if name not in present:
            raise ArtifactError(f"model artifact {directory} is incomplete: {name} is missing")
        data = _read_regular_file(directory, name, size=entry.get("size"))
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
        metadata = json.loads(contents.pop(METADATA_FILE).decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: JSONDecodeError, or NaN / Infinity refused
        raise ArtifactError(f"model artifact {directory}: {METADATA_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise ArtifactError(f"model artifact {directory}: {METADATA_FILE} must hold a JSON object")
    tensors = _tensors_from_bytes(contents.pop(TENSORS_FILE), directory)
    return LoadedArtifact(tensors=tensors, metadata=metadata, files=contents)


def _read_regular_file(directory: Path, name: str, *, size: object) -> bytes:
    """The bytes of a regular file of the artifact (not a link, a folder or a device), read only when its size
    on disk is the recorded one (``size=None``: any size up to 16 MiB, for the manifest)."""
    file_path = directory / name
    try:
        status = file_path.lstat()
    except OSError as exc:
        raise ArtifactError(f"model artifact {directory} is incomplete: {name} is missing ({exc})") from exc
    if stat.S_ISLNK(status.st_mode):
        raise ArtifactError(f"model artifact {directory}: {name} is a symbolic link; artifacts hold regular files only")
    if not stat.S_ISREG(status.st_mode):
        raise ArtifactError(f"model artifact {directory}: {name} is not a regular file")
    if size is None and status.st_size > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"model artifact {directory}: {name} is {status.st_size} bytes, too large for a manifest")
    if size is not None and status.st_size != size:
        raise ArtifactError(
            f"model artifact {directory}: {name} is truncated or altered "
            f"({status.st_size} bytes on disk, {size} recorded in the manifest)"
        )
    try:
        return file_path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"model artifact {directory}: {name} cannot be read ({exc})") from exc


def _read_manifest(directory: Path, data: bytes) -> dict[str, dict[str, dict[str, object]]]:
    try:
        manifest = json.loads(data.decode("utf-8"))
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
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in {".", ".."}:
        raise ArtifactError(f"{where}file name {name!r} is not a plain file name (letters, digits, '._-')")
    if name.lower().endswith(FORBIDDEN_SUFFIXES):
        raise ArtifactError(f"{where}file {name!r} has a pickle-based suffix; use safetensors or JSON")
    if not reserved_ok and name in RESERVED_FILES:
        raise ArtifactError(f"{where}file name {name!r} is reserved for the artifact itself")


def _is_safetensors(data: bytes) -> bool:
    """Whether ``data`` is laid out as a safetensors file: an 8-byte little-endian header length, then that many
    bytes of a JSON object. Such a file is read by safetensors' own parser, which runs no code, whatever its first
    bytes look like (a header of 640 bytes starts the file with 0x80 0x02, pickle's protocol-2 opcode)."""
    if len(data) < 10:
        return False
    length = int.from_bytes(data[:8], "little")
    if not 2 <= length <= len(data) - 8 or data[8:9] != b"{":
        return False
    try:
        header = json.loads(data[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(header, dict)


def _refuse_pickle_content(name: str, data: bytes, *, directory: Path | None = None) -> None:
    where = f"model artifact {directory}: " if directory is not None else ""
    if _is_safetensors(data):
        return
    # Pickle protocols 2-5 start with the PROTO opcode; torch.save writes a zip holding a data.pkl.
    if (len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5) or _is_headerless_pickle(data):
        raise ArtifactError(f"{where}{name} holds pickle data; pickle is refused")
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                inner = [n for n in archive.namelist() if n.lower().endswith((".pkl", ".pickle"))]
        except zipfile.BadZipFile:
            inner = []
        if inner:
            raise ArtifactError(f"{where}{name} is an archive holding pickle data ({inner[0]}); pickle is refused")


class _PickleGlobalRefused(Exception):
    """Raised by :class:`_InertUnpickler` where a pickle asks for a class or function."""


class _InertUnpickler(pickle.Unpickler):
    """An unpickler that can run nothing: every class or function lookup raises, and without one a pickle can
    only build strings, numbers and containers. It is used to *recognise* pickle data, never to load a model."""

    def find_class(self, module: str, name: str) -> object:
        raise _PickleGlobalRefused(f"{module}.{name}")


def _is_headerless_pickle(data: bytes) -> bool:
    """Whether ``data`` is a pickle of protocol 0 or 1 (no header), which ``pickle.loads`` would run whatever
    follows it: it unpickles inertly, or fails only where it asks for a class or function."""
    if not data or data[:1] in (b"{", b"[", b'"'):
        return False  # JSON: '{' and '[' are no pickle opcodes, and a string alone is no artifact file
    try:
        _InertUnpickler(io.BytesIO(data)).load()
    except _PickleGlobalRefused:
        return True
    except Exception:  # noqa: BLE001 - any other failure means: not a pickle
        return False
    return True


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
