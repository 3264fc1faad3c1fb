"""Weight decay as torch's AdamW applies it (coupled) and as Composer's DecoupledAdamW does (decoupled): one step
on known weights and gradients through the Trainer's own optimizer, a short run at the paper's values, and the
checks on the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import Trainer

from deltarank.cli import main
from deltarank.errors import DeltarankError
from deltarank.train.arguments import training_arguments
from deltarank.train.config import TrainConfig
from deltarank.train.optimizers import optimizer_weight_decay
from deltarank.train.trainer import run_training
from tests.conftest import build_tiny_llama

Q = "model.layers.0.self_attn.q_proj.weight"
NORM = "model.layers.0.input_layernorm.weight"


def config_for(out: Path, **values: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "model": "unused",
        "data": "unused",
        "method": "full",
        "output_dir": str(out),
        "max_steps": 10,
        "device": "cpu",
        "progress": "none",
    }
    return TrainConfig(**{**base, **values}).resolved()


def trainer_optimizer(tmp_path: Path, **values: Any) -> tuple[torch.nn.Module, Any, Any]:
    """The tiny Llama with the optimizer and scheduler `transformers.Trainer` builds from our arguments, every
    weight of q_proj set to 1 and the norm weights to 1 (as initialised)."""
    model = build_tiny_llama()
    model.train()
    trainer = Trainer(model=model, args=training_arguments(config_for(tmp_path / "run", **values)))
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    params = dict(model.named_parameters())
    with torch.no_grad():
        params[Q].fill_(1.0)
    return model, trainer.optimizer, trainer.lr_scheduler


def step(model: torch.nn.Module, optimizer: Any, scheduler: Any, q_grad: float) -> None:
    """One optimizer step with every gradient zero but q_proj's, which is `q_grad` everywhere."""
    for name, p in model.named_parameters():
        p.grad = torch.full_like(p, q_grad) if name == Q else torch.zeros_like(p)
    optimizer.step()
    scheduler.step()


@pytest.mark.parametrize(
    ("mode", "after_decay"),
    [("coupled", 1 - 1e-3 * 0.1), ("decoupled", 1 - 0.1)],  # lr·wd = 1e-4; decoupled: wd = 0.1 itself
)
@pytest.mark.parametrize("q_grad", [0.0, 1.0])
def test_one_step_changes_weights_by_the_rule(
    tmp_path: Path, mode: str, after_decay: float, q_grad: float
) -> None:
    """lr 1e-3, wd 0.1, weights 1: p ← p·(1 − decay) − lr·g/(|g| + ε) on Adam's first step. Zero gradient: 0.9999
    (coupled) or 0.9 (decoupled); gradient 1: 0.9989 or 0.899. Norm weights never decay (the Trainer's groups)."""
    model, optimizer, scheduler = trainer_optimizer(
        tmp_path, lr=1e-3, weight_decay=0.1, weight_decay_mode=mode, lr_scheduler="constant"
    )
    step(model, optimizer, scheduler, q_grad)
    params = dict(model.named_parameters())
    adam = 1e-3 * q_grad / (abs(q_grad) + 1e-8)
    expected = after_decay - adam
    assert params[Q].detach().unique().tolist() == [pytest.approx(expected, rel=1e-6)]
    assert torch.equal(params[NORM].detach(), torch.ones_like(params[NORM]))


def test_paper_values_coupled_is_a_no_op_decoupled_is_not(tmp_path: Path) -> None:
    """lr 5e-5, wd 1e-4 (the biderman control): coupled, 1 − 5e-9 rounds to 1 in float32, so the weights are
    bit-identical after the step; decoupled multiplies them by 1 − 1e-4."""
    for mode, expected in (("coupled", 1.0), ("decoupled", 0.9999)):
        model, optimizer, scheduler = trainer_optimizer(
            tmp_path, lr=5e-5, weight_decay=1e-4, weight_decay_mode=mode, lr_scheduler="constant"
        )
        step(model, optimizer, scheduler, 0.0)
        q = dict(model.named_parameters())[Q].detach()
        if mode == "coupled":
            assert torch.equal(q, torch.ones_like(q))
        else:
            assert q.unique().tolist() == [pytest.approx(expected, rel=1e-6)]


def test_decoupled_decay_follows_the_schedule_multiplier(tmp_path: Path) -> None:
    """constant_with_warmup over 2 steps: step 1 runs at lr 0 (no decay), step 2 at lr_peak/2, so decoupled decay
    is wd/2 = 0.05 (weights 0.95) and coupled (lr_peak/2)·wd = 5e-5 (weights 0.99995)."""
    for mode, expected in (("coupled", 1 - 0.5e-3 * 0.1), ("decoupled", 1 - 0.05)):
        model, optimizer, scheduler = trainer_optimizer(
            tmp_path,
            lr=1e-3,
            weight_decay=0.1,
            weight_decay_mode=mode,
            lr_scheduler="constant_with_warmup",
            warmup=2,
        )
        step(model, optimizer, scheduler, 0.0)
        q = dict(model.named_parameters())[Q].detach()
        assert torch.equal(q, torch.ones_like(q))  # lr 0 at the first warm-up step
        step(model, optimizer, scheduler, 0.0)
        assert q.unique().tolist() == [pytest.approx(expected, rel=1e-6)]


def test_optimizer_weight_decay_is_wd_over_peak_lr() -> None:
    assert optimizer_weight_decay(1e-4, "coupled", 5e-5) == 1e-4
    assert optimizer_weight_decay(1e-4, "decoupled", 5e-5) == pytest.approx(2.0)  # lr_t·2 = (lr_t/5e-5)·1e-4


def test_short_run_at_paper_values(tiny_lm_dir: Path, pc_data: Path, tmp_path: Path) -> None:
    """Four steps at lr 5e-5 with a linear schedule (multipliers 1, ¾, ½, ¼): coupled decay 1e-4 leaves the final
    weights bit-identical to no decay; decoupled shrinks every projection by 1 − Π(1 − wd·multiplier) ≈
    wd·(1 + ¾ + ½ + ¼) = 2.5e-4 of itself (measured along the weights, against the run without decay: the two
    runs' Adam steps barely differ at this lr)."""

    def final(name: str, **values: Any) -> dict[str, torch.Tensor]:
        run_training(
            TrainConfig(
                model=str(tiny_lm_dir),
                data=str(pc_data),
                method="full",
                output_dir=str(tmp_path / name),
                max_steps=4,
                batch_size=2,
                seq_len=64,
                lr=5e-5,
                seed=0,
                save_steps=0,
                progress="none",
                **values,
            )
        )
        return load_file(tmp_path / name / "model.safetensors")

    none = final("none")
    coupled = final("coupled", weight_decay=1e-4)
    decoupled = final("decoupled", weight_decay=1e-4, weight_decay_mode="decoupled")
    assert all(torch.equal(coupled[k], none[k]) for k in none)
    projections = [k for k in none if k.endswith("proj.weight")]
    assert len(projections) == 14
    for name in projections:
        w = none[name]
        shrink = -float(((decoupled[name] - w) * w).sum() / (w * w).sum())  # share of W removed along W
        assert shrink == pytest.approx(2.5e-4, rel=1e-3), name  # measured 2.4990e-4 to 2.5001e-4
    w = none[NORM]
    norm_shrink = -float(((decoupled[NORM] - w) * w).sum() / (w * w).sum())
    assert abs(norm_shrink) < 1e-6  # norm weights are not decayed (measured: ~4e-9, Adam's steps differing)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"weight_decay_mode": "decoupled", "optim": "sgd"}, "needs optim adamw_torch or adamw_torch_fused"),
        ({"weight_decay_mode": "decoupled", "weight_decay": 1.0}, "must be below 1"),
        ({"weight_decay_mode": "l2"}, "weight_decay_mode must be one of coupled, decoupled"),
    ],
)
def test_bad_decay_settings_are_refused(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(DeltarankError, match=message):
        config_for(tmp_path, **values)


def test_cli_decoupled_with_another_optimizer_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["train", "--model", "m", "--data", "d", "--method", "full", "-o", str(tmp_path / "o"),
         "--weight-decay", "1e-4", "--weight-decay-mode", "decoupled", "--optim", "adafactor"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "needs optim adamw_torch" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("size", ["cpu", "full"])
def test_biderman_presets_decay_as_the_paper(size: str) -> None:
    """The weight-decay controls of the biderman preset use the paper's values (5e-5, 1e-4 at lr 5e-5) decoupled,
    which shrink each weight by that share per step at the peak (they were 5e-9 per step coupled, a no-op)."""
    from deltarank.study.design.study_file import load_study, preset_path

    study = load_study(preset_path("biderman", size))
    decayed = [r for r in study.runs if r.config.get("weight_decay")]
    assert sorted(r.config["weight_decay"] for r in decayed) == [5e-5, 1e-4]
    for run in decayed:
        config = run.train_config(Path("run"))
        assert (config.weight_decay_mode, config.learning_rate) == ("decoupled", 5e-5)
        assert optimizer_weight_decay(
            config.weight_decay, config.weight_decay_mode, 5e-5
        ) * 5e-5 == pytest.approx(config.weight_decay)
