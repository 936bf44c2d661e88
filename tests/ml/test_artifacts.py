from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.artifacts import ArtifactError, load_artifact, save_artifact
from tests.artifact_forgery import rewrite_and_resign


def _save_sample(path: Path) -> Path:
    return save_artifact(
        path,
        tensors={
            "coef": np.arange(6, dtype=np.float32).reshape(2, 3),
            "bias": torch.tensor([0.5], dtype=torch.bfloat16),
        },
        metadata={"kind": "sample", "seed": np.int64(7), "metrics": {"pr_auc": float("nan")}},
        extra_files={"vocabulary.json": '{"ab": 0}', "trees.txt": b"tree 0\n"},
    )


def test_saved_artifact_loads_back_identical_tensors_metadata_and_files(tmp_path: Path) -> None:
    directory = _save_sample(tmp_path / "model")

    tensors, metadata, files = load_artifact(directory)

    np.testing.assert_array_equal(tensors["coef"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert tensors["bias"].dtype == np.float32 and tensors["bias"][0] == 0.5
    assert metadata["seed"] == 7 and metadata["metrics"]["pr_auc"] is None
    assert {"torch", "numpy", "scikit-learn", "transformers"} <= set(metadata["libraries"])
    assert files == {"vocabulary.json": b'{"ab": 0}', "trees.txt": b"tree 0\n"}


def test_saving_again_replaces_the_directory_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    _save_sample(tmp_path / "model")
    save_artifact(tmp_path / "model", tensors={"w": np.zeros(2)}, metadata={"kind": "second"})

    assert load_artifact(tmp_path / "model").metadata["kind"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("victim", ["model.safetensors", "metadata.json", "trees.txt"])
def test_a_single_changed_byte_is_refused(tmp_path: Path, victim: str) -> None:
    directory = _save_sample(tmp_path / "model")
    data = bytearray((directory / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (directory / victim).write_bytes(bytes(data))

    with pytest.raises(ArtifactError, match=f"{victim} does not match its sha256"):
        load_artifact(directory)


def test_a_missing_file_is_refused_with_its_name(tmp_path: Path) -> None:
    directory = _save_sample(tmp_path / "model")
    (directory / "model.safetensors").unlink()

    with pytest.raises(ArtifactError, match="incomplete: model.safetensors is missing"):
        load_artifact(directory)


def test_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    directory = _save_sample(tmp_path / "model")
    (directory / "manifest.json").unlink()

    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        load_artifact(directory)


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    directory = _save_sample(tmp_path / "model")
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[: len(data) - 10])

    with pytest.raises(ArtifactError, match="model.safetensors is truncated"):
        load_artifact(directory)


def test_a_pickle_file_in_the_directory_is_refused(tmp_path: Path) -> None:
    directory = _save_sample(tmp_path / "model")
    (directory / "head.pkl").write_bytes(pickle.dumps({"w": 1}))

    with pytest.raises(ArtifactError, match="head.pkl.*pickle"):
        load_artifact(directory)


def test_pickle_content_listed_in_the_manifest_is_refused(tmp_path: Path) -> None:
    # Even with a matching checksum and an innocent name, pickle bytes are never accepted.
    with pytest.raises(ArtifactError, match="pickle"):
        save_artifact(tmp_path / "m", tensors={}, metadata={}, extra_files={"head.json": pickle.dumps([1])})

    directory = _save_sample(tmp_path / "model")
    rewrite_and_resign(directory, "trees.txt", pickle.dumps({"w": 1}))

    with pytest.raises(ArtifactError, match="trees.txt holds pickle data"):
        load_artifact(directory)


def test_a_torch_save_file_is_refused(tmp_path: Path) -> None:
    directory = _save_sample(tmp_path / "model")
    torch.save({"w": torch.zeros(2)}, directory / "weights.pt")

    with pytest.raises(ArtifactError, match="weights.pt"):
        load_artifact(directory)


def test_an_unlisted_file_is_refused(tmp_path: Path) -> None:
    directory = _save_sample(tmp_path / "model")
    (directory / "extra.json").write_text("{}")

    with pytest.raises(ArtifactError, match="not listed in its manifest: extra.json"):
        load_artifact(directory)


def test_a_missing_directory_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")


def test_unsafe_extra_file_names_are_refused_at_save(tmp_path: Path) -> None:
    for name in ["../escape.txt", "metadata.json", "weights.bin"]:
        with pytest.raises(ArtifactError):
            save_artifact(tmp_path / "m", tensors={}, metadata={}, extra_files={name: "x"})
    assert not (tmp_path / "m").exists()


def load_manifest(directory: Path) -> dict[str, dict[str, object]]:
    import json

    return json.loads((directory / "manifest.json").read_text())["files"]


@pytest.mark.parametrize("protocol", [0, 1])
def test_headerless_pickles_are_refused_at_save_and_at_load(tmp_path: Path, protocol: int) -> None:
    payload = pickle.dumps({"w": [1, 2]}, protocol=protocol) + b"trailing bytes pickle ignores"
    with pytest.raises(ArtifactError, match="pickle"):
        save_artifact(tmp_path / "m", tensors={}, metadata={}, extra_files={"head.txt": payload})
    directory = _save_sample(tmp_path / "model")
    rewrite_and_resign(directory, "trees.txt", payload)

    with pytest.raises(ArtifactError, match="trees.txt holds pickle data"):
        load_artifact(directory)
    assert load_artifact(_save_sample(tmp_path / "plain")).files["trees.txt"] == b"tree 0\n"  # text is no pickle


def test_files_and_manifest_replaced_together_are_refused_against_the_recorded_checksums(tmp_path: Path) -> None:
    import hashlib

    directory = _save_sample(tmp_path / "model")
    recorded = {name: entry["sha256"] for name, entry in load_manifest(directory).items()}
    recorded["manifest.json"] = hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()
    assert load_artifact(directory, expected_sha256=recorded).metadata["kind"] == "sample"

    rewrite_and_resign(directory, "vocabulary.json", b'{"ab": 1}')
    load_artifact(directory)  # the manifest matches the files it lists...
    with pytest.raises(ArtifactError, match="manifest.json is not the manifest recorded"):
        load_artifact(directory, expected_sha256=recorded)  # ...but not what was registered
    without_manifest = {name: sha for name, sha in recorded.items() if name != "manifest.json"}
    with pytest.raises(ArtifactError, match="vocabulary.json not as recorded"):
        load_artifact(directory, expected_sha256=without_manifest)


def test_links_folders_and_other_entries_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    import shutil

    directory = _save_sample(tmp_path / "model")
    outside = tmp_path / "outside.safetensors"
    shutil.copy(directory / "model.safetensors", outside)
    (directory / "model.safetensors").unlink()
    (directory / "model.safetensors").symlink_to(outside)  # same bytes, but no longer inside the artifact
    with pytest.raises(ArtifactError, match="model.safetensors is a symbolic link"):
        load_artifact(directory)

    directory = _save_sample(tmp_path / "other")
    (directory / "manifest.json").unlink()
    (directory / "manifest.json").mkdir()
    with pytest.raises(ArtifactError, match="manifest.json is not a regular file"):
        load_artifact(directory)
    (directory / "manifest.json").rmdir()
    (directory / "manifest.json").symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(ArtifactError, match="manifest.json is a symbolic link"):
        load_artifact(directory)


def test_a_save_that_fails_while_replacing_keeps_the_old_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _save_sample(tmp_path / "model")
    before = load_artifact(directory).metadata
    real_rename = Path.rename

    def failing_rename(self: Path, target: Path) -> Path:
        if self.name.startswith(".model.tmp-"):
            raise KeyboardInterrupt  # interrupted between moving the old model aside and moving the new one in
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(directory, tensors={}, metadata={"kind": "new"})
    monkeypatch.undo()

    assert load_artifact(directory).metadata == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_safetensors_file_whose_first_bytes_look_like_a_pickle_opcode_still_loads(tmp_path: Path) -> None:
    # safetensors pads its JSON header to a multiple of 8: a 640-byte header starts the file with 0x80 0x02, the
    # PROTO 2 opcode of pickle, which the pickle check took it for (about 1 saved file in 1,600).
    name = "w" * 579
    save_artifact(tmp_path / "m", tensors={name: np.zeros(3, dtype=np.float32)}, metadata={"kind": "x"})
    assert (tmp_path / "m" / "model.safetensors").read_bytes()[:2] == b"\x80\x02"

    tensors, _, _ = load_artifact(tmp_path / "m")

    assert list(tensors) == [name]


def test_a_save_killed_between_its_two_renames_leaves_the_old_model_at_the_path(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    target = tmp_path / "model"
    save_artifact(target, tensors={"w": np.ones(3)}, metadata={"v": 1})
    # A second save over it, killed (SIGKILL, out of memory, power loss) right after the old model was moved aside.
    script = textwrap.dedent(
        f"""
        import os, pathlib
        import numpy as np
        from ml.artifacts import save_artifact
        real, calls = pathlib.Path.rename, []
        def rename(self, other):
            calls.append(self)
            if len(calls) == 2:
                os._exit(9)
            return real(self, other)
        pathlib.Path.rename = rename
        save_artifact({str(target)!r}, tensors={{"w": np.zeros(3)}}, metadata={{"v": 2}})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], check=False)
    assert done.returncode == 9 and not target.exists()

    _, metadata, _ = load_artifact(target)  # the save never finished: its old model is put back

    assert metadata["v"] == 1 and not list(tmp_path.glob(".model.old-*"))
    save_artifact(target, tensors={"w": np.zeros(3)}, metadata={"v": 3})
    assert load_artifact(target).metadata["v"] == 3


@pytest.mark.parametrize("name", ["evil.pkl\n", "notes.txt\n"])
def test_a_file_name_with_a_final_newline_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArtifactError):
        save_artifact(tmp_path / "m", tensors={"w": np.ones(1)}, metadata={}, extra_files={name: b"not a pickle"})


def test_saving_over_a_symlinked_model_path_leaves_no_stray_entry(tmp_path: Path) -> None:
    real = tmp_path / "v1"
    save_artifact(real, tensors={"w": np.ones(1)}, metadata={"v": 1})
    (tmp_path / "current").symlink_to(real)

    save_artifact(tmp_path / "current", tensors={"w": np.zeros(1)}, metadata={"v": 2})

    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "v1"]
    assert load_artifact(tmp_path / "current").metadata["v"] == 2 and load_artifact(real).metadata["v"] == 1


def test_metadata_with_nan_or_infinity_is_refused_as_not_strict_json(tmp_path: Path) -> None:
    save_artifact(tmp_path / "m", tensors={"w": np.ones(1)}, metadata={"score": 0.5})
    data = (tmp_path / "m" / "metadata.json").read_bytes().replace(b"0.5", b"NaN")
    rewrite_and_resign(tmp_path / "m", "metadata.json", data)
    with pytest.raises(ArtifactError, match="metadata.json is not valid JSON.*NaN is not a number JSON allows"):
        load_artifact(tmp_path / "m")
