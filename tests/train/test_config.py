"""TrainConfig: files, overrides, defaults, and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltarank.errors import DeltarankError, InputError
from deltarank.train.config import TrainConfig
from deltarank.train.config_file import field_names, load_config_file, load_train_config

REQUIRED = {"model": "m", "data": "d.jsonl", "method": "lora", "output_dir": "out"}


def test_every_field_has_help() -> None:
    import dataclasses

    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name


def test_yaml_with_flag_overrides(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text(
        "model: m\ndata: d.jsonl\nmethod: lora\noutput-dir: out\nlr: 2e-4\nlora_r: 8\nmax_steps: 10\n"
    )
    config = load_train_config(file, {"lora_r": 4, "seed": None, "batch_size": 2})
    assert config.lr == 2e-4  # YAML reads "2e-4" as a string; it is converted
    assert config.lora_r == 4  # the flag wins
    assert config.seed == 42  # a flag left at None does not override
    assert config.batch_size == 2
    assert config.max_steps == 10


def test_toml_file(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text('model = "m"\ndata = "d"\nmethod = "full"\noutput_dir = "o"\nepochs = 2\nrslora = true\n')
    config = load_train_config(file)
    assert (config.method, config.epochs, config.rslora) == ("full", 2.0, True)


def test_unknown_key_names_it_and_suggests(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text("lora_rank: 8\n")
    with pytest.raises(InputError, match=r"unknown key 'lora_rank'; did you mean 'lora_r'\?"):
        load_config_file(file)


def test_unknown_override_key() -> None:
    with pytest.raises(DeltarankError, match="did you mean 'max_steps'"):
        load_train_config(None, {**REQUIRED, "max_step": 3})


def test_wrong_type_names_key(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text("model: m\ndata: d\nmethod: lora\noutput_dir: o\nlora_r: 1.5\n")
    with pytest.raises(InputError, match=r"key 'lora_r' must be int, got 1\.5"):
        load_train_config(file)


def test_missing_required_lists_flags() -> None:
    with pytest.raises(DeltarankError, match="missing --method, --output-dir"):
        load_train_config(None, {"model": "m", "data": "d"})


def test_flag_max_steps_replaces_config_epochs(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text("model: m\ndata: d\nmethod: lora\noutput_dir: o\nepochs: 3\n")
    config = load_train_config(file, {"max_steps": 5})
    assert (config.max_steps, config.epochs) == (5, None)


def test_both_max_steps_and_epochs_in_one_source() -> None:
    with pytest.raises(DeltarankError, match="either max_steps or epochs"):
        TrainConfig(**REQUIRED, max_steps=3, epochs=1.0)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("method", "sgd", "method must be one of full, lora, qlora"),
        ("lora_r", 0, "lora_r must be a positive integer"),
        ("lora_dropout", 1.0, r"lora_dropout must be in \[0, 1\)"),
        ("device", "tpu", "device must be one of auto, cpu, cuda"),
    ],
)
def test_range_checks(key: str, value: object, message: str) -> None:
    with pytest.raises(DeltarankError, match=message):
        TrainConfig(**{**REQUIRED, key: value})  # type: ignore[arg-type]


def test_resolved_defaults_follow_the_paper() -> None:
    lora = TrainConfig(**REQUIRED, lora_r=16).resolved()
    assert lora.lora_alpha == 32  # α = 2r
    assert lora.lr == 2e-4
    assert lora.target_modules == "all-linear"
    assert lora.epochs == 1.0  # neither max_steps nor epochs given
    full = TrainConfig(**{**REQUIRED, "method": "full"}, max_steps=5).resolved()
    assert (full.lr, full.epochs) == (2e-5, None)


def test_saved_config_loads_back(tmp_path: Path) -> None:
    config = TrainConfig(**REQUIRED, lora_r=8, max_steps=7).resolved()
    config.save(tmp_path / "train_config.yaml")
    assert load_train_config(tmp_path / "train_config.yaml") == config
    assert set(load_config_file(tmp_path / "train_config.yaml")) == set(field_names())


def test_bad_suffix_and_parse_errors(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(InputError, match=r"must end in \.yaml, \.yml or \.toml"):
        load_config_file(tmp_path / "run.json")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(InputError, match="cannot parse config"):
        load_config_file(tmp_path / "bad.yaml")
