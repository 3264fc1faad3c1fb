"""`--lora-init`: every supported initialisation trains, saves and loads back (on the original base) to the
trained logits, and the spectrum of its run is that of (peft's fp32 merge of the trained model) − (original
base), also for the inits that rewrite the base (stored converted, rank 2r); PiSSA's initial factors are the top-r
singular triplets of W and MiLoRA's the bottom-r; the option's checks; a study grid axis over it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import TrainerCallback

from deltarank.analysis.engine import spectrum
from deltarank.cli import main
from deltarank.errors import DeltarankError, InputError
from deltarank.io.adapter import AdapterSource
from deltarank.study.design.study_file import parse_study
from deltarank.train.config import TrainConfig
from deltarank.train.methods import wrap_model
from deltarank.train.methods.lora_init import TRAINABLE_ADAPTER
from deltarank.train.models import load_model, load_trained, resolve_model
from deltarank.train.trainer import run_training
from tests.train.tiny_runs import KillAfterStep, Killed, losses, tiny_config

INPUT = torch.tensor([[0, 5, 17, 42, 99, 7, 3, 250]])
LOGITS_ATOL = 1e-4  # fp32 logits of the reloaded run against the trained model
SIGMA_TOL = 1e-5  # |σ_run − σ_oracle| ≤ SIGMA_TOL·σ₁ for every σ of every adapted matrix
FACTOR_ATOL = 1e-5  # initial factors against the singular triplets (fp32 SVD of a 64 × 32 matrix)
RANK = 2
INITS = ("default", "gaussian", "pissa", "pissa_niter_2", "olora", "milora", "eva", "corda")
REWRITING = ("pissa", "pissa_niter_2", "olora", "milora", "corda")


class KeepModel(TrainerCallback):
    """Keeps the trained model (the object the Trainer trained) at the end of training."""

    model: Any = None

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.model = model


def logits(model: Any) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=INPUT, attention_mask=torch.ones_like(INPUT)).logits.float()


def _config(model: Path, data: Path, out: Path, init: str, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {"method": "lora", "lora_r": RANK, "lora_init": init, "lr": 1e-2, "seq_len": 48}
    return tiny_config(model, data, out, **{**values, **overrides})


def _adapted(model: Any) -> dict[str, Any]:
    """Base weight name -> LoRA layer of a peft model."""
    from peft.tuners.lora import LoraLayer

    return {
        name.removeprefix("base_model.model.") + ".weight": module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and "default" in module.lora_A
    }


def _oracle_sigma(trained: Any, base_dir: Path) -> dict[str, np.ndarray]:
    """σ of (peft's fp32 merge_and_unload of the trained model) − (original base weights), per adapted weight."""
    names = list(_adapted(trained))
    original = load_file(str(base_dir / "model.safetensors"))
    with torch.no_grad():
        merged = trained.merge_and_unload().state_dict()
    return {
        name: torch.linalg.svdvals(merged[name].double() - original[name].double()).numpy() for name in names
    }


@pytest.mark.parametrize("init", INITS)
def test_init_trains_reloads_and_its_spectrum_is_the_merged_delta(
    init: str, tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / init
    save_steps = (
        1 if init == "pissa" else 0
    )  # one run also writes a checkpoint (converted, raw factors beside)
    config = _config(tiny_lm_dir, pc_data, out, init, save_steps=save_steps)
    keep = KeepModel()
    result = run_training(config, callbacks=[keep])
    trained = logits(keep.model)
    source = resolve_model(str(tiny_lm_dir))
    loaded = logits(load_trained(source, out))
    assert (loaded - trained).abs().max() <= LOGITS_ATOL
    assert (trained - logits(load_model(source))).abs().max() > 1e-3  # training moved the model

    rewrites = init in REWRITING
    stored = json.loads((out / "adapter_config.json").read_text())
    assert stored["init_lora_weights"] == (True if rewrites or init == "default" else init)
    assert stored["r"] == (2 * RANK if rewrites else RANK)
    record = result.run["lora_init"]
    assert (record["init"], record["rewrites_base"], record["stored_rank"]) == (init, rewrites, stored["r"])
    assert (record["calibration"] is not None) == (init in ("eva", "corda"))
    assert json.loads((out / "run.json").read_text())["config"]["lora_init"] == init

    oracle = _oracle_sigma(keep.model, tiny_lm_dir)
    records = {m.name: m for m in spectrum(tiny_lm_dir, out, device="cpu").matrices}
    assert sorted(records) == sorted(oracle)
    for name, expected in oracle.items():
        observed = np.asarray(records[name].singular_values)
        assert observed.shape == expected.shape
        assert np.all(np.abs(observed - expected) <= SIGMA_TOL * expected[0]), name
    if init == "pissa":
        checkpoint = out / "checkpoint-1"
        assert AdapterSource(checkpoint).config.r == 2 * RANK  # the converted adapter, read like any LoRA
        with pytest.raises(InputError, match="rewrites the base weights"):
            AdapterSource(checkpoint / TRAINABLE_ADAPTER)  # the raw factors alone are not ΔW


def _initial(
    init: str, tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> tuple[Any, dict[str, torch.Tensor]]:
    config = _config(tiny_lm_dir, pc_data, tmp_path / "unused", init).resolved()
    base = load_model(resolve_model(str(tiny_lm_dir)))
    original = {name: p.detach().clone() for name, p in base.named_parameters()}
    return wrap_model(base, config), original


@pytest.mark.parametrize(("init", "triplets"), [("pissa", slice(0, RANK)), ("milora", slice(-RANK, None))])
def test_initial_factors_are_the_top_or_bottom_singular_triplets(
    init: str, triplets: slice, tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    model, original = _initial(init, tiny_lm_dir, pc_data, tmp_path)
    layers = _adapted(model)
    assert layers
    for name, layer in layers.items():
        weight = original[name]  # (out, in)
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        b, a, scale = layer.lora_B["default"].weight, layer.lora_A["default"].weight, layer.scaling["default"]
        with torch.no_grad():
            # B₀ = U_r √(S_r/s), A₀ = √(S_r/s) V_rᵀ up to the sign of each triplet
            signs = torch.sign((u[:, triplets] * b).sum(0))
            root = torch.sqrt(s[triplets] / scale)
            torch.testing.assert_close(b, u[:, triplets] * root * signs, atol=FACTOR_ATOL, rtol=0)
            torch.testing.assert_close(a, (root * signs)[:, None] * vh[triplets], atol=FACTOR_ATOL, rtol=0)
            residual = layer.get_base_layer().weight
            torch.testing.assert_close(residual + scale * b @ a, weight, atol=FACTOR_ATOL, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_init": "pissa_niter_x"}, "lora_init must be one of"),
        ({"lora_init": "pissa_niter_K"}, "lora_init must be one of"),
        ({"lora_init": "loftq"}, "loftq is not supported: peft's LoftQ quantizes on a CUDA"),
        ({"lora_init": "pissa", "dora": True}, "without --dora"),
        ({"lora_init": "milora", "method": "qlora"}, "is for method lora"),
    ],
)
def test_lora_init_checks(overrides: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(DeltarankError, match=message):
        tiny_config(tmp_path, "d.jsonl", tmp_path / "o", **{"method": "lora", **overrides})


def test_pissa_niter_takes_a_whole_number(tmp_path: Path) -> None:
    assert tiny_config(tmp_path, "d", tmp_path / "o", method="lora", lora_init="pissa_niter_16").lora_init


def test_study_grid_axis_over_lora_init_expands(tmp_path: Path) -> None:
    base = {"model": "m", "data": "builtin:code", "max_steps": 2, "method": "lora"}
    study = parse_study({"base": base, "grid": {"lora_init": ["default", "pissa", "milora"]}}, "s.yaml")
    assert [r.config["lora_init"] for r in study.runs] == ["default", "pissa", "milora"]
    assert len({r.name for r in study.runs}) == 3
    path = tmp_path / "s.yaml"
    base = {**base, "model": "smollm2-135m", "batch_size": 4, "seq_len": 128, "data_size": 8}
    path.write_text(yaml.safe_dump({"base": base, "grid": {"lora_init": ["default", "pissa", "milora"]}}))
    result = CliRunner().invoke(main, ["study", str(path), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("study 's': 3 runs")
    assert not (tmp_path / "out").exists()


def test_killed_milora_run_resumes_from_its_raw_factors(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    """A base-rewriting run killed after its step-1 checkpoint resumes from the raw factors beside the converted
    adapter and ends as an uninterrupted run does."""

    def config(out: Path, **extra: Any) -> TrainConfig:
        return _config(tiny_lm_dir, pc_data, out, "milora", max_steps=2, save_steps=1, **extra)

    run_training(config(tmp_path / "straight"))
    with pytest.raises(Killed):
        run_training(config(tmp_path / "killed"), callbacks=[KillAfterStep(2)])
    resumed = run_training(config(tmp_path / "killed", resume=True))
    assert resumed.run["resumed_from_step"] == 1
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")
    expected = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    actual = load_file(tmp_path / "killed" / "adapter_model.safetensors")
    assert set(expected) == set(actual)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-6, rtol=0)
