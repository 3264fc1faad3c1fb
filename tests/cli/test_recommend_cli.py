"""`deltarank recommend BASE TUNED -o DIR` through click's CliRunner: DIR holds peft's adapter_config.json and
recommendation.json; `deltarank train --config DIR/adapter_config.json` trains those ranks; plot and compare read
the result; bad input is one line and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from deltarank.analysis.results import RecommendationResult, read_result
from deltarank.cli import main
from deltarank.errors import DeltarankError, InputError
from deltarank.figures.recommendation import CHOSEN_GID, plot_recommendation
from deltarank.train.config_file import load_train_config
from tests.planting import plant_into
from tests.train.conftest import one_thread, save_tiny_model, write_jsonl

__all__ = ["one_thread"]  # autouse fixture: tiny-model runs on one thread

PLANTED = {
    "model.layers.0.self_attn.q_proj": [2.0, 1.0, 1.0],
    "model.layers.1.self_attn.q_proj": [1.0, 1.0, 1.0],
    "model.layers.1.self_attn.v_proj": [1.0, 1.0, 1.0],
    "model.layers.0.mlp.down_proj": [3.0, 2.0, 1.0, 1.0, 0.5],
    "model.layers.1.mlp.up_proj": [1.0],
}
# τ = 0.999 keeps every planted direction: three modules at rank 3 (r), two others in rank_pattern
RANKS = {module: len(sigma) for module, sigma in PLANTED.items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recommend")
    base = save_tiny_model(root / "base")
    return {"base": base, "tuned": plant_into(base, root / "tuned", PLANTED)}


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_recommend_writes_a_peft_config_that_train_uses(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rec"
    code, stdout, stderr = run("recommend", models["base"], models["tuned"], "--energy", "0.999", "-o", out,
                               "--device", "cpu")  # fmt: skip
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "recommendation.json"]
    result = read_result(out)  # the directory reads as its result file
    assert isinstance(result, RecommendationResult) and result.ranks() == RANKS
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["lora_dropout"]) == (
        "LORA",
        3,
        6,
        0.05,
    )
    assert config["rank_pattern"] == {"model.layers.0.mlp.down_proj": 5, "model.layers.1.mlp.up_proj": 1}
    assert config["alpha_pattern"] == {"model.layers.0.mlp.down_proj": 10, "model.layers.1.mlp.up_proj": 2}
    assert sorted(config["target_modules"]) == sorted(PLANTED)  # unchanged matrices (rank 0) left out
    # q0, q1: 3·(32+32) each; v1: 3·(16+32); down0: 5·(32+64); up1: 1·(64+32)
    assert result.trainable_parameters == 192 + 192 + 144 + 480 + 96 == 1104
    rows = {line.split()[0]: line.split()[1:] for line in stdout.splitlines()[2:8]}
    assert rows["q_proj"] == ["2", "3", "384", "1.000"]  # two layers, each at rank 3: 2·3·(32 + 32)
    assert rows["k_proj"] == ["2", "0", "0", "-"]  # unchanged: rank 0, no energy to keep
    assert (
        "14 matrices (τ = 0.999): r = 3 (α = 6), 5 adapted, 9 left out; 1,104 parameters keep 1.000" in stdout
    )
    assert f"Wrote {out / 'adapter_config.json'}, {out / 'recommendation.json'}" in stdout

    data = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "Double", "input": str(i), "output": str(2 * i)}
                                              for i in range(8)])  # fmt: skip
    trained = tmp_path / "trained"
    code, stdout, stderr = run("train", "--config", out / "adapter_config.json", "--model", models["base"],
                               "--data", data, "-o", trained, "--max-steps", "2", "--batch-size", "2",
                               "--seq-len", "64", "--device", "cpu", "--save-steps", "0")  # fmt: skip
    assert code == 0, stderr
    assert stdout.startswith("lora: 2 steps")
    weights = load_file(str(trained / "adapter_model.safetensors"))
    built = {
        name.removeprefix("base_model.model.").removesuffix(".lora_A.weight"): int(t.shape[0])
        for name, t in weights.items()
        if name.endswith("lora_A.weight")
    }
    assert built == RANKS  # exactly the recommended rank per module, nothing else adapted
    recorded = json.loads((trained / "run.json").read_text())["config"]
    assert recorded["lora_rank_pattern"] == config["rank_pattern"]
    assert recorded["lora_alpha_pattern"] == config["alpha_pattern"]
    assert (recorded["lora_r"], recorded["lora_alpha"], recorded["method"]) == (3, 6, "lora")
    saved = json.loads((trained / "adapter_config.json").read_text())
    assert (
        saved["rank_pattern"] == config["rank_pattern"] and saved["alpha_pattern"] == config["alpha_pattern"]
    )
    assert (
        yaml.safe_load((trained / "train_config.yaml").read_text())["lora_rank_pattern"]
        == config["rank_pattern"]
    )


def test_plot_and_compare_read_recommendations(models: dict[str, Path], tmp_path: Path) -> None:
    outs = {"energy": tmp_path / "e", "budget": tmp_path / "b"}
    for policy, value in (("energy", "0.9"), ("budget", "600")):
        code, _, stderr = run("recommend", models["base"], models["tuned"], f"--{policy}", value, "-o", outs[policy],
                              "--device", "cpu", "-q")  # fmt: skip
        assert code == 0, stderr
    energy = RecommendationResult.from_json(outs["energy"] / "recommendation.json")
    figure = plot_recommendation(energy)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert sorted(titles) == ["down", "q", "up", "v"]  # the changed module types only
    dots = [line for ax in figure.axes for line in ax.get_lines() if line.get_gid() == CHOSEN_GID]
    assert sorted(int(line.get_xdata()[0]) for line in dots) == sorted(energy.ranks().values())
    assert len(dots) == 5
    budget = RecommendationResult.from_json(outs["budget"] / "recommendation.json")
    assert budget.trainable_parameters <= 600 and budget.policy == "budget" and budget.optimal is not None
    figures = tmp_path / "figs"
    code, stdout, stderr = run("plot", outs["energy"] / "recommendation.json", outs["budget"], "-o", figures,
                               "--format", "png", "--label", "energy", "--label", "budget")  # fmt: skip
    assert code == 0, stderr
    assert sorted(p.name for p in figures.iterdir()) == [
        "recommendation-budget.png",
        "recommendation-energy.png",
    ]
    code, stdout, stderr = run("compare", outs["energy"], outs["budget"], "--label", "e", "--label", "b")
    assert code == 0, stderr
    header, _, *rows = stdout.splitlines()
    assert header.split() == ["module", "matrices", "e", "rank", "e", "params", "e", "energy", "b", "rank", "b", "params",
                              "b", "energy"]  # fmt: skip
    all_row = next(row.split() for row in rows if row.startswith("all"))
    assert all_row[1] == "14" and all_row[6] == str(budget.trainable_parameters)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("both", "give exactly one of --energy τ, --budget N and --budget-rank R"),
        ("neither", "give exactly one of --energy τ, --budget N and --budget-rank R"),
        ("budget", "--budget 40 buys no rank: the cheapest, rank 1 of model.layers.0.self_attn.k_proj (16, 32), "
                   "costs 48 parameters"),
        ("not-empty", "already exists (use --force to replace it)"),
        ("null", "cannot read result file (no such file)"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(
    models: dict[str, Path], tmp_path: Path, case: str, message: str
) -> None:
    out = tmp_path / "out"
    if case == "not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    extra = {
        "both": ["--energy", "0.9", "--budget", "1000"],
        "neither": [],
        "budget": ["--budget", "40"],
        "not-empty": ["--energy", "0.9"],
        "null": ["--energy", "0.9", "--null", tmp_path / "missing.json"],
    }[case]
    code, stdout, stderr = run(
        "recommend", models["base"], models["tuned"], "-o", out, "--device", "cpu", *extra
    )
    assert code == (2 if case in ("both", "neither", "budget") else 1)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], stderr
    assert "Traceback" not in stdout + stderr
    if case == "not-empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == (
        ["out"] if case == "not-empty" else []
    )  # no temporary left


# ---- adapter_config.json as a training config -------------------------------------------------------------------


def adapter_file(tmp_path: Path, **changes: object) -> Path:
    from peft import LoraConfig

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], rank_pattern={"q_proj": 2})
    config.save_pretrained(str(tmp_path))
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return path


def test_adapter_config_maps_to_train_keys(tmp_path: Path) -> None:
    path = adapter_file(tmp_path, use_dora=True, lora_dropout=0.1, base_model_name_or_path="elsewhere")
    config = load_train_config(path, {"model": "m", "data": "d", "output_dir": "o"})
    assert (config.method, config.lora_r, config.lora_alpha, config.dora, config.lora_dropout) == (
        "lora", 4, 8, True, 0.1,
    )  # fmt: skip
    assert (
        config.target_modules == "q_proj,v_proj" and config.lora_init == "default"
    )  # init_lora_weights true
    gaussian = load_train_config(adapter_file(tmp_path, init_lora_weights="gaussian"), {"model": "m", "data": "d",
                                                                                         "output_dir": "o"})  # fmt: skip
    assert gaussian.lora_init == "gaussian"
    assert (
        config.lora_rank_pattern == {"q_proj": 2} and config.lora_alpha_pattern is None
    )  # peft wrote {} → none
    # flags win, and a pattern may be given as JSON on the command line
    flagged = load_train_config(path, {"model": "m", "data": "d", "output_dir": "o", "lora_r": 2,
                                       "lora_rank_pattern": '{"v_proj": 6}'})  # fmt: skip
    assert (flagged.lora_r, flagged.lora_rank_pattern) == (2, {"v_proj": 6})


def test_rank_pattern_alone_keeps_alpha_twice_the_rank() -> None:
    config = load_train_config(None, {"model": "m", "data": "d", "output_dir": "o", "method": "lora",
                                      "lora_r": 4, "lora_rank_pattern": '{"q_proj": 8}'})  # fmt: skip
    resolved = config.resolved()
    assert (resolved.lora_alpha, resolved.lora_alpha_pattern) == (8, {"q_proj": 16})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"init_lora_weights": False},
            "init_lora_weights = false: deltarank trains from B = 0 or a named peft",
        ),
        ({"init_lora_weights": "loftq"}, "loftq"),
        ({"modules_to_save": ["lm_head"]}, 'modules_to_save = ["lm_head"] changes training'),
        ({"bias": "all"}, 'bias = "all" changes training'),
        (
            {"peft_type": "IA3"},
            "peft_type 'IA3': a peft adapter_config.json as --config must be of peft_type LORA",
        ),
        ({"target_modules": ".*proj"}, "target_modules '.*proj': give a list of module names"),
        (
            {"rank_pattern": {"q_proj": 0}},
            "key 'lora_rank_pattern' must be a JSON object of positive integers",
        ),
    ],
)
def test_adapter_config_keys_that_change_training_are_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = adapter_file(tmp_path, **changes)
    with pytest.raises((InputError, DeltarankError), match=message.replace("(", r"\(").replace("[", r"\[")):
        load_train_config(path, {"model": "m", "data": "d", "output_dir": "o"})


def test_a_refused_adapter_config_is_one_error_line(tmp_path: Path) -> None:
    path = adapter_file(tmp_path, use_qalora=True)
    code, _, stderr = run("train", "--config", path, "--model", "m", "--data", "d", "-o", tmp_path / "o")
    assert code == 1 and not (tmp_path / "o").exists()
    assert stderr == f"Error: {path}: use_qalora = true changes training and deltarank train has no such setting " \
                     "(it trains with peft's default false); remove the key\n"  # fmt: skip
