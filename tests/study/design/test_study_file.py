"""Study files: grid expansion, run names and coordinates, explicit and stacked runs, unknown keys, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deltarank.errors import InputError
from deltarank.study.design.grid import readable_name
from deltarank.study.design.study_file import load_study, parse_study, preset_names, preset_path

BASE = {"model": "m", "data": "builtin:code", "max_steps": 2}


def test_grid_is_the_product_of_its_lists_with_data_size_as_max_examples() -> None:
    study = parse_study({"base": BASE, "grid": {"method": ["full", "lora"], "data_size": [8, 16]}}, "s.yaml")
    coordinates = [r.coordinates for r in study.runs]
    assert coordinates == [
        {"method": "full", "data_size": 8},
        {"method": "full", "data_size": 16},
        {"method": "lora", "data_size": 8},
        {"method": "lora", "data_size": 16},
    ]
    assert [r.config["max_examples"] for r in study.runs] == [8, 16, 8, 16]
    assert [r.name.rsplit("-", 1)[0] for r in study.runs] == ["full-n8", "full-n16", "lora-n8", "lora-n16"]
    assert all(len(r.name.rsplit("-", 1)[1]) == 6 for r in study.runs)  # the short hash


def test_a_grid_value_may_set_several_keys_together() -> None:
    grid = {"method": [{"method": "full", "lr": 5e-5}, {"method": "lora", "lora_r": 16, "lr": "5e-4"}]}
    study = parse_study({"base": BASE, "grid": grid}, "s.yaml")
    assert [r.coordinates for r in study.runs] == [
        {"method": "full", "lr": 5e-5},
        {"method": "lora", "lora_r": 16, "lr": 5e-4},  # "5e-4" read as a number, as train's config does
    ]
    assert readable_name(study.runs[1].coordinates) == "lora-r16-lr0.0005"


def test_changing_base_renames_the_run_and_respelling_does_not() -> None:
    one = parse_study({"base": BASE, "grid": {"method": ["full"]}}, "s.yaml")
    longer = parse_study({"base": {**BASE, "max_steps": 3}, "grid": {"method": ["full"]}}, "s.yaml")
    respelt = parse_study({"base": {**BASE, "max-steps": 2}, "grid": {"method": ["full"]}}, "s.yaml")
    assert one.runs[0].name != longer.runs[0].name
    assert one.runs[0].name == respelt.runs[0].name
    assert one.fingerprint == respelt.fingerprint != longer.fingerprint


def test_the_resolved_study_parses_to_the_same_study() -> None:
    raw = {
        "base": {**BASE, "oft": {"block_size": 16}},
        "grid": {"method": [{"method": "full", "lr": 5e-5}, "lora"], "data_size": [8]},
        "runs": [{"name": "stacked", "from": "full-lr5e-05-n8", "data": "builtin:zh-text", "method": "lora"}],
        "evaluate": {"forgetting": "builtin:zh-text:test"},
    }
    study = parse_study(raw, "s.yaml")
    again = parse_study(yaml.safe_load(yaml.safe_dump(study.resolved, sort_keys=False)), "study.yaml")
    assert again.fingerprint == study.fingerprint
    assert [r.name for r in again.runs] == [r.name for r in study.runs]
    assert study.runs[0].config["oft_block_size"] == 16


def test_a_stacked_run_trains_from_a_full_run_named_without_its_hash() -> None:
    raw = {
        "base": BASE,
        "grid": {"method": ["full", "lora"]},
        "runs": [{"name": "second", "from": "full", "data": "builtin:zh-text", "method": "lora"}],
    }
    study = parse_study(raw, "s.yaml")
    second = study.run("second")
    assert second.parent == study.runs[0].name and second.parent.startswith("full-")
    assert [[r.name for r in wave] for wave in study.levels()] == [
        [r.name for r in study.runs[:2]],
        ["second"],
    ]
    assert study.root_model(second) == "m"
    bad = {**raw, "runs": [{"name": "second", "from": "lora", "method": "lora"}]}
    with pytest.raises(InputError, match=r"from: lora-\w+ is a lora run; a stacked run starts from a full"):
        parse_study(bad, "s.yaml")
    with pytest.raises(InputError, match="names no earlier run; did you mean"):
        parse_study({**raw, "runs": [{"name": "x", "from": "ful", "method": "lora"}]}, "s.yaml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"base": BASE, "gird": {}}, "unknown key 'gird'; did you mean 'grid'?"),
        ({"base": {**BASE, "max_step": 2}}, "base: unknown key 'max_step'; did you mean 'max_steps'?"),
        ({"base": BASE, "grid": {"lora_rr": [1]}}, "unknown key 'lora_rr'; did you mean 'lora_r'?"),
        ({"base": BASE, "runs": [{"name": "a", "form": "b"}]}, "unknown key 'form'; did you mean 'from'?"),
        ({"base": BASE, "evaluate": {"diversity_sample": 2}}, "did you mean 'diversity_samples'?"),
        ({"base": BASE, "grid": {"method": ["ful"]}}, "method must be one of"),
        ({"base": BASE, "grid": {"method": "full"}}, "grid: method must be a non-empty list"),
        ({"base": {"model": "m"}, "grid": {"method": ["full"]}}, "no data"),
        (
            {"base": BASE, "runs": [{"name": "a", "method": "full"}, {"name": "a", "method": "lora"}]},
            "two runs share the name 'a'",
        ),
    ],
)
def test_bad_study_files_name_the_problem(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("?", r"\?").replace("(", r"\(")):
        parse_study(raw, "s.yaml")


def test_a_study_file_that_is_not_yaml_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("base: [unclosed\n")
    with pytest.raises(InputError, match="cannot parse the study file"):
        load_study(path)


@pytest.mark.parametrize("size", ["cpu", "full"])
@pytest.mark.parametrize("name", ["quick", "biderman", "belle", "replay", "recommend"])
def test_every_preset_parses(name: str, size: str) -> None:
    study = load_study(preset_path(name, size))
    assert study.name == name and study.runs
    assert preset_names() == ["belle", "biderman", "quick", "recommend", "replay", "sweep"]


def test_the_quick_preset_is_reproduce_quick() -> None:
    """`deltarank reproduce --quick` with its default options is the quick preset, unchanged."""
    from deltarank.study.design.reproduce_preset import reproduction_study
    from deltarank.study.design.study_file import parse_study

    study = load_study(preset_path("quick", "cpu"))
    assert parse_study(reproduction_study(), "reproduce").fingerprint == study.fingerprint
    assert [r.name for r in study.runs] == ["full", "lora"]
    full, lora = (r.train_config(Path("x")).resolved() for r in study.runs)
    for config in (full, lora):
        assert (config.model, config.data, config.seed) == ("smollm2-135m", "builtin:code", 0)
        # the schedule `make demo` was measured with: 60 steps of 4 × 128 tokens, a checkpoint every 20
        assert (config.max_steps, config.batch_size, config.seq_len, config.save_steps) == (60, 4, 128, 20)
    assert (full.method, full.lr) == ("full", 5e-5)
    assert (lora.method, lora.lr, lora.lora_r, lora.lora_alpha) == ("lora", 5e-4, 16, 32)
    assert (study.evaluate.checkpoints, study.evaluate.intruders) == (True, True)
    assert study.evaluate.similarity == (("full", "lora"),)


def test_belle_stacks_two_runs_on_its_full_run() -> None:
    study = load_study(preset_path("belle", "cpu"))
    stacked = [r for r in study.runs if r.parent is not None]
    assert {r.config["method"] for r in stacked} == {"full", "lora"}
    parent = study.run(stacked[0].parent or "")
    assert parent.config["method"] == "full" and parent.config["model"] == "smollm2-135m"
