"""One model reference in every command: a built-in name or a `deltarank train` output as the analysis
commands' BASE / TUNED (`deltarank spectrum NAME RUN`, `spectrum RUN`, `intruders RUN`, `similarity RUN_A
RUN_B`, `extract RUN`), on tiny runs trained through the CLI from a fake built-in name."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from deltarank.cli import main
from deltarank.io import model_ref
from tests.train.conftest import one_thread, save_tiny_model, write_jsonl

__all__ = ["one_thread"]  # autouse fixture: tiny-model runs on one thread

BUILTIN = "tiny-builtin"  # a fake built-in name, pointed at a tiny model directory for this module


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    return {"tiny": save_tiny_model(root / "tiny"), "other": save_tiny_model(root / "other", seed=1)}


@pytest.fixture(scope="module", autouse=True)
def builtin(bases: dict[str, Path]) -> Iterator[None]:
    """`tiny-builtin` is a built-in name for every command of this module, as `smollm2-135m` is."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(model_ref.BUILTIN_MODELS, BUILTIN, lambda: bases["tiny"])
        yield


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


def train(model: str, out: Path, data: Path, rank: int) -> Path:
    result = invoke(["train", "--model", model, "--data", str(data), "--method", "lora", "--lora-r", str(rank),
                     "--max-steps", "2", "--batch-size", "2", "--seq-len", "64", "--lr", "0.01",
                     "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def runs(bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRA runs from the built-in name (r = 2 and 4) and one from another base directory."""
    root = tmp_path_factory.mktemp("runs")
    records = [{"instruction": "Double", "input": str(i), "output": str(2 * i)} for i in range(8)]
    data = write_jsonl(root / "data.jsonl", records)
    return {
        "a": train(BUILTIN, root / "a", data, 2),
        "b": train(BUILTIN, root / "b", data, 4),
        "other": train(str(bases["other"]), root / "other", data, 2),
    }


def spectra(path: Path) -> dict[str, list[float]]:
    record = json.loads(path.read_text())
    return {m["name"]: m["singular_values"] for m in record["matrices"]}


def test_spectrum_name_run_and_run_alone_agree(runs: dict[str, Path], tmp_path: Path) -> None:
    named = invoke(
        ["spectrum", BUILTIN, str(runs["a"]), "-o", str(tmp_path / "named.json"), "--device", "cpu"]
    )
    assert named.exit_code == 0, named.output
    alone = invoke(["spectrum", str(runs["a"]), "-o", str(tmp_path / "alone.json"), "--device", "cpu"])
    assert alone.exit_code == 0, alone.output
    assert alone.output.splitlines()[0] == f"Base: {BUILTIN} (recorded in {runs['a'] / 'run.json'})"
    assert "Base:" not in named.output  # BASE given: nothing to say
    assert spectra(tmp_path / "named.json") == spectra(tmp_path / "alone.json") != {}
    assert json.loads((tmp_path / "alone.json").read_text())["base"] == BUILTIN


def test_spectrum_run_alone_to_stdout_keeps_stdout_json(runs: dict[str, Path]) -> None:
    result = CliRunner().invoke(main, ["spectrum", str(runs["a"]), "-o", "-", "-q", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["matrices"]  # -q: no Base line; stdout is the JSON alone


def test_intruders_run_alone(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "intruders.json"
    result = invoke(["intruders", str(runs["a"]), "-o", str(out), "--top-k", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Base: {BUILTIN} (recorded in ")
    assert json.loads(out.read_text())["matrices"]


def test_similarity_of_two_runs_on_their_common_base(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "similarity.json"
    result = invoke(["similarity", str(runs["a"]), str(runs["b"]), "-o", str(out), "--sizes", "1,2",
                     "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Base: {BUILTIN} (recorded in {runs['a'] / 'run.json'})")
    explicit = invoke(["similarity", BUILTIN, str(runs["a"]), str(runs["b"]), "-o", str(tmp_path / "e.json"),
                       "--sizes", "1,2", "--device", "cpu"])  # fmt: skip
    assert explicit.exit_code == 0, explicit.output
    assert (
        json.loads(out.read_text())["matrices"] == json.loads((tmp_path / "e.json").read_text())["matrices"]
    )


def test_similarity_refuses_runs_with_different_bases(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "similarity.json"
    result = invoke(["similarity", str(runs["a"]), str(runs["other"]), "-o", str(out)])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"Error: {runs['a']} and {runs['other']} record different base models")
    assert "give BASE explicitly: deltarank similarity BASE" in result.output and not out.exists()


def test_extract_run_alone(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = invoke(["extract", str(runs["b"]), "--lora-rank", "1", "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Base: {BUILTIN} (recorded in ")
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 1


def test_a_checkpoint_of_a_run_takes_the_run_base(runs: dict[str, Path], tmp_path: Path) -> None:
    checkpoints = sorted(runs["a"].glob("checkpoint-*"))
    if not checkpoints:
        pytest.skip("the run kept no checkpoint")
    result = invoke(["spectrum", str(checkpoints[-1]), "-o", str(tmp_path / "c.json"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Base: {BUILTIN} (recorded in {runs['a'] / 'run.json'})")


def _copy_with_base(run: Path, target: Path, model: dict[str, object]) -> Path:
    shutil.copytree(run, target)
    record = json.loads((target / "run.json").read_text())
    record["model"] = model
    (target / "run.json").write_text(json.dumps(record))
    return target


@pytest.mark.parametrize("command", ["spectrum", "intruders", "extract"])
def test_a_run_whose_base_is_gone_says_how_to_give_it(
    runs: dict[str, Path], tmp_path: Path, command: str
) -> None:
    gone = tmp_path / "gone-base"
    run = _copy_with_base(runs["a"], tmp_path / "moved", {"name": str(gone), "directory": str(gone)})
    out = tmp_path / "out"
    result = invoke(
        [command, str(run), "-o", str(out)] + (["--lora-rank", "1"] if command == "extract" else [])
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output == (
        f"Error: {run / 'run.json'}: records base model {gone} (not found on this machine); "
        f"give the base explicitly: deltarank {command} BASE {run}\n"
    )
    assert not out.exists()


def test_a_builtin_base_whose_package_is_missing(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Path:
        raise model_ref.DeltarankError(f"model '{BUILTIN}' needs the tiny package: pip install tiny")

    monkeypatch.setitem(model_ref.BUILTIN_MODELS, BUILTIN, missing)
    result = invoke(["spectrum", str(runs["a"]), "-o", str(tmp_path / "s.json")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"records base model {BUILTIN} (model '{BUILTIN}' needs the tiny package" in result.output
    assert f"deltarank spectrum BASE {runs['a']}" in result.output


def test_a_single_argument_that_is_no_run(bases: dict[str, Path], tmp_path: Path) -> None:
    spectrum = invoke(["spectrum", str(bases["tiny"]), "-o", str(tmp_path / "s.json")])
    assert spectrum.exit_code == 2 and "missing TUNED" in spectrum.output
    assert "`deltarank train` output directory" in spectrum.output
    for args in (["intruders", str(bases["tiny"])], ["similarity", str(bases["tiny"]), str(bases["other"])]):
        result = invoke([*args, "-o", str(tmp_path / "r.json")])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert "missing BASE" in result.output and f"{bases['tiny']} is not one" in result.output


def test_same_base_check_on_the_resolved_base(runs: dict[str, Path], tmp_path: Path) -> None:
    """A full model given as TUNED is still checked against the base a built-in name resolves to."""
    from tests.conftest import build_tiny_llama

    wider = tmp_path / "wider"
    build_tiny_llama(hidden_size=48, intermediate_size=96).save_pretrained(wider)
    result = invoke(["spectrum", BUILTIN, str(wider), "-o", str(tmp_path / "s.json")])
    assert result.exit_code != 0 and result.output.count("\n") == 1, result.output
    assert "hidden" in result.output and not (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_smollm2_by_name_and_by_run(smollm2_gguf: Path, tmp_path: Path) -> None:
    """The new user's commands on the real model: train from `smollm2-135m`, then `spectrum smollm2-135m RUN`
    and `spectrum RUN` give the same result."""
    run = tmp_path / "run"
    trained = invoke(["train", "--model", "smollm2-135m", "--data", "builtin:math", "--method", "lora",
                      "--max-steps", "2", "--batch-size", "2", "--seq-len", "32", "-o", str(run)])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    layer0 = r"model\.layers\.0\..*_proj\.weight"
    named = invoke(["spectrum", "smollm2-135m", str(run), "--include", layer0, "--device", "cpu",
                    "-o", str(tmp_path / "named.json")])  # fmt: skip
    assert named.exit_code == 0, named.output
    alone = invoke(
        ["spectrum", str(run), "--include", layer0, "--device", "cpu", "-o", str(tmp_path / "a.json")]
    )
    assert alone.exit_code == 0, alone.output
    assert alone.output.startswith(f"Base: smollm2-135m (recorded in {run / 'run.json'})")
    assert len(spectra(tmp_path / "named.json")) == 7
    assert spectra(tmp_path / "named.json") == spectra(tmp_path / "a.json")
