"""Hugging Face repo ids (`org/name[@revision]`) resolved from a cache this test builds, with the network off.

The cache is laid out as huggingface_hub lays it out: `models--org--name/blobs/<hash>` holding the bytes,
`snapshots/<40-hex commit>/<file>` symlinks to them, and `refs/<branch or tag>` holding the commit (no newline).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.errors import DeltarankError, InputError
from deltarank.io.adapter import AdapterSource
from deltarank.io.hub import (
    ALLOW_PATTERNS,
    download,
    download_missing,
    hub_cache_dir,
    parse_repo_spec,
    resolve_path,
)
from deltarank.io.naming import Selection
from deltarank.io.pairing import plan_checkpoint
from deltarank.io.safetensors_file import SafetensorsSource
from deltarank.io.source import open_checkpoint
from tests.conftest import build_tiny_llama
from tests.planting import make_lora_adapter, plant, planted_delta, save_safetensors

Q0 = "model.layers.0.self_attn.q_proj.weight"
REV_MAIN = "a" * 40
REV_OLD = "b" * 40
REV_TUNED = "c" * 40
REV_ADAPTER = "d" * 40
REV_PICKLE = "e" * 40


def add_snapshot(cache: Path, repo_id: str, commit: str, source: Path, refs: tuple[str, ...] = ()) -> Path:
    """Put every file of `source` into the cache as huggingface_hub does (blob + snapshot symlink + refs)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no trailing newline, like huggingface_hub
    return snapshot


def _model_dir(root: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    save_safetensors(root / name / "model.safetensors", tensors)
    (root / name / "config.json").write_text(json.dumps(build_tiny_llama().config.to_dict()))
    return root / name


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Local directories: a tiny Llama base, a tuned one with a planted rank-3 delta, an older base, an
    adapter, and a pickle-only model."""
    root = tmp_path_factory.mktemp("models")
    base = {n: t.detach() for n, t in build_tiny_llama().state_dict().items()}
    delta = {Q0: planted_delta(tuple(base[Q0].shape), [0.3, 0.2, 0.1], seed=1)}
    dirs = {
        "base": _model_dir(root, "base", base),
        "tuned": _model_dir(root, "tuned", plant(base, delta, torch.float32)),
        "old": _model_dir(root, "old", {n: t + 1 for n, t in base.items()}),
    }
    make_lora_adapter(build_tiny_llama, root / "adapter", r=2, lora_alpha=4, target_modules=["q_proj"])
    dirs["adapter"] = root / "adapter"
    (root / "pickled").mkdir()
    (root / "pickled" / "config.json").write_text("{}")
    (root / "pickled" / "pytorch_model.bin").write_bytes(pickle.dumps({Q0: "never unpickled"}))
    dirs["pickled"] = root / "pickled"
    return dirs


@pytest.fixture
def cache(tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A hub cache in HF_HUB_CACHE with the network off: org/base (main, tag v1 -> an older commit, branch
    dev/x), org/tuned, org/adapter and org/pickled."""
    cache = tmp_path / "hub"
    add_snapshot(cache, "org/base", REV_MAIN, models["base"], refs=("main", "dev/x"))
    add_snapshot(cache, "org/base", REV_OLD, models["old"], refs=("v1",))
    add_snapshot(cache, "org/tuned", REV_TUNED, models["tuned"], refs=("main",))
    add_snapshot(cache, "org/adapter", REV_ADAPTER, models["adapter"], refs=("main",))
    add_snapshot(cache, "org/pickled", REV_PICKLE, models["pickled"], refs=("main",))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield cache


def _snapshot(cache: Path, repo_id: str, commit: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit


@pytest.mark.parametrize(
    ("spec", "commit"),
    [
        ("org/base", REV_MAIN),
        ("org/base@main", REV_MAIN),
        ("org/base@dev/x", REV_MAIN),  # a branch name holding a slash
        ("org/base@v1", REV_OLD),  # a tag on an older commit
        (f"org/base@{REV_OLD}", REV_OLD),  # a full commit hash
    ],
)
def test_repo_id_and_revision_resolve_to_the_snapshot(cache: Path, spec: str, commit: str) -> None:
    assert resolve_path(spec) == _snapshot(cache, "org/base", commit)


def test_hf_home_is_honoured_when_hf_hub_cache_is_unset(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # the cache fixture lives in tmp_path/hub
    assert hub_cache_dir() == cache
    assert resolve_path("org/tuned") == _snapshot(cache, "org/tuned", REV_TUNED)


def test_an_existing_path_wins_over_a_repo_id(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "org" / "base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_path("org/base") == Path("org/base")
    assert resolve_path(Path("org/base")) == Path("org/base")


@pytest.mark.parametrize(
    "spec", ["missing.safetensors", "out/model.safetensors", "/abs/dir", "a/b/c", "./org/name", "~/x"]
)
def test_what_is_not_a_repo_id_stays_a_path(cache: Path, spec: str) -> None:
    assert parse_repo_spec(spec) is None
    assert resolve_path(spec) == Path(spec)
    with pytest.raises(InputError, match="no such file or directory"):
        open_checkpoint(spec)


def test_parse_repo_spec() -> None:
    assert parse_repo_spec("org/name") == ("org/name", None)
    assert parse_repo_spec("org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    assert parse_repo_spec("org/na--me") is None  # huggingface_hub's own rule: no "--" in a repo id


def test_missing_repo_id_says_which_cache_and_how_to_fetch(cache: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        resolve_path("org/missing")
    message = str(excinfo.value)
    assert message.startswith("org/missing: not a local path and not in the Hugging Face cache")
    assert str(cache) in message and "`hf download org/missing`" in message and "--download" in message
    assert "\n" not in message


def test_missing_revision_lists_the_cached_refs(cache: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        resolve_path("org/base@v2")
    message = str(excinfo.value)
    assert "revision 'v2' is not in the Hugging Face cache" in message
    assert "cached refs: dev/x, main, v1" in message
    assert "`hf download org/base --revision v2`" in message


def test_open_checkpoint_and_plan_checkpoint_take_repo_ids(cache: Path) -> None:
    base = open_checkpoint("org/base")
    assert isinstance(base, SafetensorsSource)
    assert base.path == _snapshot(cache, "org/base", REV_MAIN) / "model.safetensors"
    _, pairs, _ = plan_checkpoint(base, "org/tuned", Selection())
    assert Q0 in {pair.name for pair in pairs}
    adapter, pairs, _ = plan_checkpoint(base, "org/adapter", Selection())  # TUNED may be an adapter repo
    assert isinstance(adapter, AdapterSource)
    assert {pair.name for pair in pairs} == {Q0, Q0.replace("layers.0", "layers.1")}


def test_pickle_only_snapshot_is_refused_never_unpickled(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_unpickling(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("deltarank unpickled a checkpoint")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(InputError, match="pickle checkpoints are never loaded") as excinfo:
        open_checkpoint("org/pickled")
    assert excinfo.value.path.endswith("pytorch_model.bin")
    result = CliRunner().invoke(main, ["spectrum", "org/base", "org/pickled", "-o", str(cache / "x.json")])
    assert result.exit_code == 1
    assert "pickle checkpoints are never loaded" in result.output


def _matrices(path: Path) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in json.loads(path.read_text())["matrices"]}


def test_spectrum_cli_with_repo_ids_matches_the_paths(
    cache: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    by_id, by_path = tmp_path / "by_id.json", tmp_path / "by_path.json"
    result = CliRunner().invoke(
        main, ["spectrum", "org/base", "org/tuned", "-o", str(by_id), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    args = ["spectrum", str(models["base"]), str(models["tuned"]), "-o", str(by_path), "--device", "cpu"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert _matrices(by_id) == _matrices(by_path)
    assert _matrices(by_id)[Q0]["ranks"]["energy_99"] == 3
    data = json.loads(by_id.read_text())
    assert (data["base"], data["tuned"]) == ("org/base", "org/tuned")  # as the user gave them


def test_dry_run_with_repo_ids_lists_the_pairs_offline(cache: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["spectrum", "org/base", "org/tuned", "--dry-run", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert Q0 in result.stdout and not list(tmp_path.glob("*.json"))


def test_library_spectrum_takes_repo_ids(cache: Path) -> None:
    import deltarank

    result = deltarank.spectrum("org/base", "org/tuned@main", device="cpu")
    assert (result.base, result.tuned) == ("org/base", "org/tuned@main")
    assert {m.name: m for m in result.matrices}[Q0].ranks["energy_99"] == 3


def test_missing_repo_id_in_the_cli_is_one_error_line(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = CliRunner().invoke(main, ["spectrum", "org/base", "org/missing", "-o", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: org/missing: not a local path and not in the")
    assert "hf download org/missing" in lines[0]
    assert not out.exists()


def test_train_resolve_model_takes_a_cached_repo_id(cache: Path) -> None:
    from deltarank.train.models import resolve_model

    source = resolve_model("org/base@v1")
    assert source.name == "org/base@v1"
    assert source.directory == _snapshot(cache, "org/base", REV_OLD)
    with pytest.raises(InputError, match="not in the Hugging Face cache"):
        resolve_model("org/missing")


def test_download_fetches_safe_files_only(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`download` with huggingface_hub's snapshot_download replaced (no network in tests)."""
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(_snapshot(cache, "org/base", REV_OLD))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert download("org/base@v1") == _snapshot(cache, "org/base", REV_OLD)
    (call,) = calls
    assert call["repo_id"] == "org/base" and call["revision"] == "v1"
    assert call["cache_dir"] == cache and not call.get("local_files_only")
    assert call["allow_patterns"] == list(ALLOW_PATTERNS)
    for pickle_name in ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt", "model.pkl"):
        assert not any(Path(pickle_name).match(pattern) for pattern in ALLOW_PATTERNS)
    assert download(str(tmp_path)) == tmp_path  # an existing path: no download
    assert len(calls) == 1
    download_missing([str(tmp_path), "missing.safetensors", "org/tuned", "org/adapter@main"])
    assert [(c["repo_id"], c["revision"]) for c in calls[1:]] == [
        ("org/tuned", None),
        ("org/adapter", "main"),
    ]


def test_download_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(repo_id: str, **kwargs: Any) -> str:
        raise OSError("Cannot find an appropriate cached snapshot folder\nsecond line")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(DeltarankError, match=r"^org/x: download failed \(OSError: Cannot find") as excinfo:
        download("org/x")
    assert "\n" not in str(excinfo.value)
    with pytest.raises(InputError, match="not a Hugging Face repo id"):
        download("no/such/path")


def test_download_flag_fetches_the_repo_ids_before_the_run(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--download` on an analysis command and on train: snapshot_download (replaced) sees each repo id."""
    import huggingface_hub

    fetched: list[str] = []
    real = huggingface_hub.snapshot_download

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        if kwargs.get("local_files_only"):  # a cache lookup, not a download
            return str(real(repo_id, **kwargs))
        fetched.append(repo_id)
        return str(_snapshot(cache, "org/base", REV_OLD))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    out = tmp_path / "s.json"
    args = ["spectrum", "org/base", "org/tuned", "--download", "--device", "cpu", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert fetched == ["org/base", "org/tuned"] and out.is_file()
    fetched.clear()
    train = ["train", "--model", "org/missing", "--data", "builtin:code", "--method", "lora", "--download"]
    result = CliRunner().invoke(main, [*train, "-o", str(tmp_path / "run")])
    assert fetched == ["org/missing"]  # fetched first; the fake put nothing in the cache, so then refused
    assert result.exit_code == 1 and "not in the Hugging Face cache" in result.stderr
