"""`deltarank study` and `reproduce` around mistakes (#24 findings 4, 9a, 13): every input is checked before
anything is written (`--dry-run` too), an output over an input is refused, a huge grid or a YAML alias bomb
fails at once, a study on a user's own data measures learning on a held-out part split from it and diversity by
default, says what it does not measure, and counts its runs with the time left."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from deltarank.cli import main
from deltarank.errors import InputError
from deltarank.study.design.coverage import not_measured
from deltarank.study.design.held_out_split import (
    MAX_HELD_OUT,
    evaluate_for,
    held_out_count,
    needs_split,
    write_split,
)
from deltarank.study.design.study_file import load_study, parse_study, preset_names, preset_path
from tests.study.tiny_study import one_thread, tiny_lm, tiny_study, write_study_file

__all__ = ["one_thread", "tiny_lm"]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def one_error_line(result: Any, *parts: str) -> str:
    """The result is exit 1 with a single `Error:` line holding every part (no traceback)."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for part in parts:
        assert part in lines[0], lines[0]
    return str(lines[0])


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------- finding 4: check, then write


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_missing_held_out_file_fails_before_anything_is_written(
    tmp_path: Path, tiny_lm: Path, dry_run: bool
) -> None:
    """Before: study.yaml was written, then the measurement failed, and the fixed study was refused as "a
    different study"; `--dry-run` did not look at the held-out path at all."""
    study = tiny_study(tmp_path, tiny_lm)
    study["evaluate"]["held_out"] = str(tmp_path / "missing.jsonl")
    path = write_study_file(tmp_path / "s.yaml", study)
    out = tmp_path / "out"
    result = invoke("study", str(path), "-o", str(out), *(["--dry-run"] if dry_run else []))
    one_error_line(result, "missing.jsonl", "held-out data not found")
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"model": "/no/such/model"}, "model not found"),
        ({"data": "/no/such/data.jsonl"}, "data file not found"),
        ({"data": "BAD"}, "line 2: invalid JSON"),
        ({"data": "builtin:cod"}, "builtin:cod"),
        ({"evaluate": {"forgetting": ["BAD"]}}, "line 2: invalid JSON"),
        ({"evaluate": {"diversity_prompts": "/no/prompts.jsonl"}}, "diversity prompts not found"),
    ],
)
def test_dry_run_checks_models_data_and_evaluate_sets(
    tmp_path: Path, tiny_lm: Path, change: dict[str, Any], expected: str
) -> None:
    """Before: `--dry-run` listed the runs of a study whose model, data or evaluate: sets did not exist."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": "a", completion\n', encoding="utf-8")
    study = tiny_study(tmp_path, tiny_lm)
    for key, value in change.items():
        if key == "evaluate":
            value = {k: ([str(bad)] if v == ["BAD"] else v) for k, v in value.items()}
            study["evaluate"].update(value)
        else:
            study["base"][key] = str(bad) if value == "BAD" else value
    path = write_study_file(tmp_path / "s.yaml", study)
    out = tmp_path / "out"
    for extra in (["--dry-run"], []):
        one_error_line(invoke("study", str(path), "-o", str(out), *extra), expected)
        assert not out.exists()


def test_a_study_dir_left_with_only_study_yaml_takes_the_corrected_study(
    tmp_path: Path, tiny_lm: Path
) -> None:
    """A directory an older failed attempt left with study.yaml alone holds nothing to lose: the corrected
    study is accepted there without --force (a directory with runs still needs it)."""
    from deltarank.errors import OutputError
    from deltarank.study.run.directory import prepare_study_dir

    first = parse_study(tiny_study(tmp_path, tiny_lm, max_steps=3), tmp_path / "a.yaml")
    second = parse_study(tiny_study(tmp_path, tiny_lm), tmp_path / "b.yaml")
    out = tmp_path / "out"
    prepare_study_dir(first, out, force=False)
    prepare_study_dir(second, out, force=False)
    assert f"fingerprint {second.fingerprint}" in (out / "study.yaml").read_text()
    (out / "base").mkdir()
    with pytest.raises(OutputError, match="holds a different study"):
        prepare_study_dir(first, out, force=False)


@pytest.mark.parametrize("where", ["model", "data", "data_parent"])
def test_force_refuses_an_output_over_an_input(tmp_path: Path, tiny_lm: Path, where: str) -> None:
    """`study -o X --force` where X is the model, or the folder holding the data: refused, nothing touched."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_lm, model)
    (tmp_path / "inputs").mkdir()
    study = tiny_study(tmp_path / "inputs", model)
    path = write_study_file(tmp_path / "s.yaml", study)
    out = {"model": model, "data": tmp_path / "inputs" / "train.jsonl", "data_parent": tmp_path / "inputs"}[
        where
    ]
    before = files_under(tmp_path)
    for extra in (["--force"], ["--force", "--dry-run"]):
        line = one_error_line(invoke("study", str(path), "-o", str(out), *extra), f"-o {out}: ")
        assert "the input" in line and "choose another output path" in line
    assert files_under(tmp_path) == before


def test_reproduce_force_refuses_an_output_over_the_model(tmp_path: Path, tiny_lm: Path) -> None:
    """Before: `reproduce --model DIR -o DIR/.. --force` deleted the model first."""
    import shutil

    model = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_lm, model)
    before = files_under(tmp_path)
    result = invoke(
        "reproduce", "--model", str(model), "-o", str(tmp_path / "models"), "--force", "--max-steps", "1"
    )
    one_error_line(result, "contains the input")
    assert files_under(tmp_path) == before
    result = invoke("reproduce", "--model", str(tmp_path / "nope"), "-o", str(tmp_path / "models"), "--force")
    one_error_line(result, "model not found")
    assert files_under(tmp_path) == before


# ------------------------------------------------------------------------- finding 13: bounded study files


def test_a_grid_of_a_billion_runs_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    values = list(range(1, 1001))
    study = {
        "base": {"model": "smollm2-135m", "data": "builtin:code", "method": "lora"},
        "grid": {"lora_r": values, "seed": list(values), "max_steps": list(values)},
    }
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(
        InputError, match=r"the grid makes 1,000,000,000 runs \(1,000 lora_r × 1,000 max_steps × 1,000 seed\)"
    ):
        load_study(path)
    assert time.monotonic() - started < 5


def test_a_yaml_alias_bomb_fails_at_once_naming_the_line(tmp_path: Path) -> None:
    """Nine levels of ten aliases each: a billion strings in `description:`, which the study reads as text
    (before, `str()` of it ran until memory was exhausted)."""
    levels = ["  a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"  {name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text(
        "base: {model: smollm2-135m, data: builtin:code, method: lora}\ndescription:\n"
        + "\n".join(levels)
        + "\n"
    )
    started = time.monotonic()
    result = invoke("study", str(path), "-o", str(tmp_path / "out"), "--dry-run")
    assert time.monotonic() - started < 2
    one_error_line(result, "line 3: YAML anchor &a is not allowed in a study file")
    path.write_text("base: {model: smollm2-135m, data: builtin:code}\ngrid: {method: *m}\n")
    one_error_line(
        invoke("study", str(path), "-o", str(tmp_path / "out"), "--dry-run"), "line 2: YAML alias *m"
    )


# ------------------------------------------------------------------------- finding 9a: held-out split, diversity


def test_the_split_is_seeded_disjoint_and_bounded(tmp_path: Path) -> None:
    lines = [json.dumps({"prompt": f"q{i}", "completion": f" a{i}"}) for i in range(1000)]
    data = tmp_path / "big.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one = write_split(str(data), tmp_path / "one", seed=3)
    two = write_split(str(data), tmp_path / "two", seed=3)
    other = write_split(str(data), tmp_path / "other", seed=4)
    assert (one["examples"], one["held_out_examples"], one["train_examples"]) == (1000, MAX_HELD_OUT, 936)
    held = (tmp_path / "one" / "held_out.jsonl").read_text().splitlines()
    train = (tmp_path / "one" / "train.jsonl").read_text().splitlines()
    assert held == (tmp_path / "two" / "held_out.jsonl").read_text().splitlines()
    assert held != (tmp_path / "other" / "held_out.jsonl").read_text().splitlines()
    assert not set(held) & set(train) and sorted(held + train) == sorted(lines)
    assert train == [line for line in lines if line not in set(held)]  # order kept
    assert two["seed"] == 3 and other["seed"] == 4
    assert [held_out_count(n) for n in (2, 12, 15, 100, 5000)] == [1, 1, 2, 10, MAX_HELD_OUT]


def test_a_one_example_file_without_held_out_is_refused_up_front(tmp_path: Path, tiny_lm: Path) -> None:
    study = tiny_study(tmp_path, tiny_lm)
    del study["evaluate"]["held_out"]
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "completion": " b"}\n', encoding="utf-8")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    one_error_line(invoke("study", str(path), "-o", str(tmp_path / "out"), "--dry-run"), "too few to split")


def test_the_presets_keep_their_held_out_sets(tmp_path: Path) -> None:
    """The presets train on built-in data with `:test` splits: no split applies, their evaluate: is theirs."""
    for name in preset_names():
        for size in ("cpu", "full"):
            study = load_study(preset_path(name, size))
            for run in study.runs:
                data = str(run.config["data"])
                assert not needs_split(study.evaluate, data)
                assert evaluate_for(study, data, tmp_path) is study.evaluate
                assert study.evaluate.held_out_for(data) == f"{data}:test"
            if name != "biderman":  # diversity stays off, said: their evaluate: (and fingerprint) as before
                assert study.evaluate.diversity_prompts is None
                assert any(m.startswith("diversity (") for m in not_measured(study))


@pytest.mark.slow
def test_a_study_on_own_data_splits_a_held_out_part_and_measures_diversity(
    tmp_path: Path, tiny_lm: Path
) -> None:
    """Before: without evaluate.held_out the study measured no learning (a note in measurement.json), no
    diversity (`{}`, no generations.jsonl), said neither, and printed `[name] training` with no count."""
    from deltarank.study.run.runner import run_study

    study = tiny_study(tmp_path, tiny_lm, grid={"method": ["full", "lora"]})
    study["evaluate"] = {"held_out_sequences": 4, "general_tokens": 8, "diversity_n": 2, "max_new_tokens": 4}
    path = write_study_file(tmp_path / "s.yaml", study)
    out = tmp_path / "out"
    lines: list[str] = []
    document = run_study(load_study(path), out, device="cpu", echo=lines.append)
    split = document["study"]["held_out_splits"]
    assert len(split) == 1 and (split[0]["examples"], split[0]["held_out_examples"]) == (12, 1)
    assert split[0]["source"] == str(tmp_path / "train.jsonl") and split[0]["seed"] == 0
    held_out = Path(split[0]["held_out"])
    assert held_out.parent.parent == out / "data" and held_out.read_text().count("\n") == 1
    for run in document["runs"]:
        record = json.loads((out / run["name"] / "run.json").read_text())
        assert record["data"]["train"]["sequences"] == 11  # the held-out example is not trained on
        assert run["learning"]["held_out"] == str(held_out) and "held_out_loss_change" in run["learning"]
        assert run["diversity"]["prompt_set"] == f"held_out:{held_out}" and run["diversity"]["prompts"] == 1
        assert (out / run["name"] / "generations.jsonl").is_file()
    assert document["study"]["not_measured"][0].startswith("accuracy for ")
    assert lines[0].startswith("study: not measured: accuracy for ")
    runs = [line for line in lines if line.startswith("run ")]
    assert runs[0].startswith("run 1/2 full-") and runs[0].endswith(
        ": training (time left: known when a run has finished)"
    )
    assert runs[1].startswith("run 2/2 lora-") and " left)" in runs[1] and "~" in runs[1]
    report = (out / "report.md").read_text()
    assert "Held-out set: 1 of the 12 examples of" in report and "Not measured: accuracy for" in report
    again: list[str] = []
    run_study(load_study(path), out, device="cpu", echo=again.append)
    assert sum("done already, skipping" in line for line in again) == 2


def test_dry_run_says_what_is_split_off_and_not_measured(tmp_path: Path, tiny_lm: Path) -> None:
    study = tiny_study(tmp_path, tiny_lm)
    study["evaluate"] = {"diversity_prompts": None}
    path = write_study_file(tmp_path / "s.yaml", study)
    result = invoke("study", str(path), "-o", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"held-out: 1 of the 12 examples of {tmp_path / 'train.jsonl'} split off (seed 0, never trained on; "
        "evaluate.held_out names another set)",
        f"study: not measured: accuracy for {tmp_path / 'train.jsonl'} (no closed-answer set: evaluate.accuracy "
        "names one); diversity (evaluate.diversity_prompts is null; held_out samples the held-out set)",
    ]
    assert not (tmp_path / "out").exists()


def test_a_run_trained_on_the_whole_file_is_not_measured_on_a_split_of_it(
    tmp_path: Path, tiny_lm: Path
) -> None:
    """A run directory of the same settings trained on the whole file (a study from before the split, switched
    with --force) has seen the held-out part: it is trained again, never measured on examples it learned."""
    from deltarank.study.run.run_state import run_status
    from deltarank.train.trainer import CONFIG_NAME

    study_map = tiny_study(tmp_path, tiny_lm)
    del study_map["evaluate"]["held_out"]
    study = parse_study(study_map, tmp_path / "s.yaml")
    out = tmp_path / "out"
    run = study.runs[0]
    run_dir = out / run.name
    run_dir.mkdir(parents=True)
    run.train_config(run_dir).resolved().save(run_dir / CONFIG_NAME)  # data: the whole file
    (run_dir / "run.json").write_text("{}")
    assert run_status(study, run, out).state == "pending"
    split = out / "data" / "x" / "train.jsonl"
    run.train_config(run_dir, data=str(split)).resolved().save(run_dir / CONFIG_NAME)
    with pytest.MonkeyPatch.context() as patch:  # trained on the split's train part: this run
        patch.setattr("deltarank.study.run.run_state.training_data", lambda *a: str(split))
        assert run_status(study, run, out).state == "measure"


def test_a_study_that_executes_code_without_a_sandbox_is_refused_before_anything_is_written(
    tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a study with `execute: true` trained every run and failed only when it first ran a sample."""
    from deltarank.evaluation import sandbox

    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: "bwrap not found")
    study = tiny_study(tmp_path, tiny_lm)
    study["evaluate"].update(diversity_prompts="builtin:humaneval", execute=True)
    path = write_study_file(tmp_path / "s.yaml", study)
    out = tmp_path / "out"
    one_error_line(invoke("study", str(path), "-o", str(out)), "needs bubblewrap", "apt install bubblewrap")
    assert not out.exists()
