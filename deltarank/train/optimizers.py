"""Weight decay as torch's AdamW applies it (coupled) or as Composer's DecoupledAdamW does (decoupled), and the
optimizer settings a run records in run.json.

torch's AdamW shrinks every decayed weight at step t by lr_t·wd before its Adam step: at the learning rates of
fine-tuning (5e-5) a weight decay of 1e-4 is 5e-9 per step, below float32's resolution, so the weights do not
change at all. Composer's `DecoupledAdamW` (the trainer of Biderman et al. 2024, "LoRA Learns Less and Forgets
Less") shrinks them by (lr_t/lr_peak)·wd: the schedule's multiplier only, not the peak learning rate, 1e-4 per
step at the peak, 20,000× stronger at those values. Its update of a parameter p with Adam moments m̂, v̂ is

    p ← p·(1 − (lr_t/lr_peak)·wd),   then   p ← p − lr_t·m̂/(√v̂ + ε)

(`composer/optim/decoupled_weight_decay.py`, `DecoupledAdamW.adamw`: `decay_factor = lr / initial_lr`,
`param.mul_(1 - decay_factor * weight_decay)`, then the Adam step; `initial_lr` is the group's learning rate
when the optimizer was built, the peak). torch's AdamW runs the same two lines with lr_t·wd' as the factor.

`--weight-decay-mode decoupled` therefore gives torch's AdamW wd' = wd / lr_peak: lr_t·(wd/lr_peak) =
(lr_t/lr_peak)·wd, so each step is Composer's, with no optimizer of our own and torch's fused kernel kept. The
equivalence is exact in real arithmetic for every schedule (warm-up included: the multiplier is whatever the
scheduler set lr_t to) and holds to the rounding of one scalar product in float arithmetic (the two orders of
multiplication may differ in the last bit of the factor). It needs every parameter group to start at the same
peak learning rate, as the Trainer's two groups (decayed, and biases and norm weights without decay) do, and an
optimizer whose decay is torch AdamW's; hence `DECOUPLED_OPTIMIZERS`. The Trainer's choice of which weights
decay (not biases or normalisation weights) is the same in both modes.
"""

from __future__ import annotations

from typing import Any

from deltarank.errors import DeltarankError

__all__ = [
    "DECOUPLED_OPTIMIZERS",
    "WEIGHT_DECAY_MODES",
    "check_weight_decay",
    "optimizer_record",
    "optimizer_weight_decay",
]

WEIGHT_DECAY_MODES = ("coupled", "decoupled")
# transformers optimizer names whose decay is torch AdamW's p·(1 − lr_t·wd) (the equivalence above holds)
DECOUPLED_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


def check_weight_decay(config: Any) -> None:
    """`weight_decay_mode` decoupled needs torch's AdamW and a decay below 1 (a factor 1 − wd ≤ 0 would zero or
    flip every weight at the peak learning rate).

    Args:
        config: A `TrainConfig` (typed `Any`: the config's own validation calls this).

    Raises:
        DeltarankError: decoupled decay with another optimizer, or with weight_decay ≥ 1.
    """
    if config.weight_decay_mode != "decoupled":
        return
    if config.optim not in DECOUPLED_OPTIMIZERS:
        raise DeltarankError(
            f"weight_decay_mode decoupled needs optim {' or '.join(DECOUPLED_OPTIMIZERS)} (torch's AdamW), got "
            f"{config.optim!r}"
        )
    if config.weight_decay >= 1:
        raise DeltarankError(
            f"weight_decay_mode decoupled: weight_decay is the share each weight loses per step at the peak "
            f"learning rate and must be below 1, got {config.weight_decay}"
        )


def optimizer_weight_decay(weight_decay: float, mode: str, peak_lr: float) -> float:
    """The `weight_decay` torch's AdamW is given: `weight_decay` (coupled), or weight_decay / peak_lr
    (decoupled: then lr_t·that = (lr_t/peak_lr)·weight_decay, Composer's DecoupledAdamW; see the module)."""
    if mode == "decoupled":
        return weight_decay / peak_lr
    return weight_decay


def optimizer_record(config: Any, trainer: Any) -> dict[str, Any]:
    """run.json's `optimizer`: every setting of the optimizer and its schedule, read from the optimizer the run
    used where it holds them (betas, epsilon, the decay it applied), else from the training arguments.

    Keys: name (transformers' optim), class, learning_rate (the peak), betas, epsilon, weight_decay (as
    configured), weight_decay_mode, decay_per_step_at_peak (the share a decayed weight loses per step at the peak
    learning rate: lr·wd coupled, wd decoupled), torch_weight_decay (the value torch's optimizer was given),
    decayed_tensors / undecayed_tensors (the Trainer leaves biases and normalisation weights undecayed),
    lr_scheduler, warmup_steps (resolved from a fraction), max_grad_norm (0: no clipping).

    Args:
        config: The run's resolved `TrainConfig`.
        trainer: The `transformers.Trainer` after `train()`.
    """
    args = trainer.args
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    groups = list(getattr(optimizer, "param_groups", []))
    first = groups[0] if groups else {}
    decayed = [g for g in groups if g.get("weight_decay", 0.0) > 0]
    undecayed = [g for g in groups if not g.get("weight_decay", 0.0) > 0]
    betas = first.get("betas", (args.adam_beta1, args.adam_beta2))
    peak = float(config.learning_rate)
    wd = float(config.weight_decay)
    return {
        "name": str(args.optim.value if hasattr(args.optim, "value") else args.optim),
        "class": type(optimizer).__name__,
        "learning_rate": peak,
        "betas": [float(b) for b in betas],
        "epsilon": float(first.get("eps", args.adam_epsilon)),
        "weight_decay": wd,
        "weight_decay_mode": config.weight_decay_mode,
        "decay_per_step_at_peak": wd if config.weight_decay_mode == "decoupled" else peak * wd,
        "torch_weight_decay": float(decayed[0]["weight_decay"]) if decayed else 0.0,
        "decayed_tensors": sum(len(g["params"]) for g in decayed),
        "undecayed_tensors": sum(len(g["params"]) for g in undecayed),
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": int(args.get_warmup_steps(trainer.state.max_steps)),
        "max_grad_norm": float(args.max_grad_norm),
    }
