"""Hand-made study.json documents (the numbers are chosen so each claim's verdict can be worked out by hand)."""

from __future__ import annotations

from typing import Any

from deltarank.study.claims.statistics import group_runs

MIB = 2**20


def run(
    name: str,
    method: str,
    *,
    seed: int = 0,
    size: int = 32,
    model: str = "tiny",
    loss: float | None = None,
    accuracy: float | None = None,
    rise: float = 0.1,
    distinct: float | None = None,
    ranks: dict[str, float] | None = None,
    device_seconds: float = 10.0,
    tokens: int = 1000,
    trainable: int = 1000,
    total: int = 100_000,
    weight_decay: float = 0.0,
    lora_r: int | None = None,
    steps: int = 10,
    lr: float | None = None,
    examples: int = 200,
    offsets: tuple[float, ...] = (),
) -> dict[str, Any]:
    """One run row as the runner writes it; with `offsets`, each sequence's loss is the run's loss (held-out)
    or general loss plus the offset, 10 tokens per sequence (`per_sequence`, for the evaluation intervals)."""
    coordinates: dict[str, Any] = {"method": method, "data_size": size, "seed": seed}
    if lr is not None:
        coordinates["lr"] = lr
    if weight_decay:
        coordinates["weight_decay"] = weight_decay
    if model != "tiny":
        coordinates["model"] = model
    learning: dict[str, Any] = {}
    if loss is not None:
        learning.update(held_out_loss=loss, held_out_loss_change=loss - 2.0)
    if accuracy is not None:
        learning.update(accuracy=accuracy, accuracy_change=accuracy - 0.5, accuracy_examples=examples)
    diversity = {} if distinct is None else {"distinct_per_prompt": distinct, "distinct_2": distinct / 10}
    return with_sequences(
        {
            "name": name,
            "coordinates": coordinates,
            "from": None,
            "base": model,
            "settings": {
                "method": method,
                "model": model,
                "data": "builtin:zh-sentiment",
                "data_size": size,
                "lr": lr if lr is not None else 1e-4 if method == "lora" else 1e-5,
                "lora_r": lora_r,
                "max_steps": steps,
                "epochs": 1,
                "weight_decay": weight_decay,
                "attention_dropout": 0.0,
                "seed": seed,
            },
            "learning": learning,
            "forgetting": {"general_loss": 1.0 + rise, "general_loss_rise": rise},
            "diversity": diversity,
            "cost": {
                "trainable_parameters": trainable,
                "total_parameters": total,
                "trainable_share": trainable / (total - trainable if method != "full" else total),
                "tokens": tokens,
                "steps": steps,
                "train_seconds": device_seconds,
                "device_seconds": device_seconds,
                "peak_memory_bytes": 512 * MIB,
                "stored_bytes": 4 * MIB,
            },
            "ranks": {}
            if ranks is None
            else {m: {"energy_90_median": v, "noise_floor_median": v / 2} for m, v in ranks.items()},
        },
        offsets,
    )


def with_sequences(row: dict[str, Any], offsets: tuple[float, ...]) -> dict[str, Any]:
    """The row with `per_sequence` records: each sequence's held-out (general) loss is the row's held-out
    (general) loss plus its offset, 10 tokens each; the row unchanged without offsets."""
    losses = (
        ("held_out", row["learning"].get("held_out_loss")),
        ("general", row["forgetting"]["general_loss"]),
    )
    per_sequence = {
        part: {"sums": [(mean + o) * 10 for o in offsets], "counts": [10] * len(offsets)}
        for part, mean in losses
        if offsets and mean is not None
    }
    return {**row, "per_sequence": per_sequence} if per_sequence else row


def document(name: str, runs: list[dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": "deltarank.study/1",
        "study": {"name": name, "description": "a hand-made study", "fingerprint": "0"},
        "base": base,
        "bases": {"tiny": base},
        "runs": runs,
        "groups": group_runs(runs),
    }


def biderman_study() -> dict[str, Any]:
    """full and LoRA r = 2, two seeds each, one weight-decay control; diversity and ranks.

    LoRA learns less (loss 1.60/1.62 against full's 1.20/1.22) and forgets less (0.10/0.11 against 0.30/0.31);
    the control (1.25, 0.29) is closer to full (0.05, 0.01 off) than LoRA is (0.40, 0.20 off);
    distinct strings per prompt: base 6, LoRA 4, full 2; full's ΔW energy_90 median 50 = 25 × r.
    """
    full_ranks = {"q_proj": 40.0, "down_proj": 60.0}
    runs = [
        run(
            "full-s0", "full", seed=0, loss=1.20, rise=0.30, distinct=2.0, ranks=full_ranks, trainable=100_000
        ),
        run(
            "full-s1", "full", seed=1, loss=1.22, rise=0.31, distinct=2.0, ranks=full_ranks, trainable=100_000
        ),
        run(
            "lora-s0",
            "lora",
            seed=0,
            loss=1.60,
            rise=0.10,
            distinct=4.0,
            ranks={"q_proj": 2.0, "down_proj": 2.0},
            lora_r=2,
        ),
        run(
            "lora-s1",
            "lora",
            seed=1,
            loss=1.62,
            rise=0.11,
            distinct=4.0,
            ranks={"q_proj": 2.0, "down_proj": 2.0},
            lora_r=2,
        ),
        run("full-wd-s0", "full", seed=0, loss=1.25, rise=0.29, weight_decay=1e-4, trainable=100_000),
    ]
    offsets = {  # each run's per-sequence losses about its mean (so the evaluation intervals are narrow)
        "full-s0": (0.10, -0.10, 0.05, -0.05),
        "full-s1": (0.11, -0.09, 0.04, -0.06),
        "lora-s0": (0.12, -0.08, 0.03, -0.07),
        "lora-s1": (0.10, -0.10, 0.06, -0.06),
        "full-wd-s0": (0.09, -0.11, 0.06, -0.04),
    }
    runs = [with_sequences(r, offsets[r["name"]]) for r in runs]
    base = {
        "learning": {"held_out_loss": 2.0},
        "forgetting": {"general_loss": 1.0},
        "diversity": {"distinct_per_prompt": 6.0},
    }
    return document("biderman-test", runs, base)


def belle_study() -> dict[str, Any]:
    """full and LoRA at 100/200/400 examples on a small base, LoRA at 100 on a bigger base.

    Accuracy rises 2 points per doubling for both methods (LoRA 60/62/64%, full 70/72/74%); full costs 4× LoRA's
    device-seconds per token (40 s against 10 s for 1000 tokens); LoRA on the bigger base (twice the
    parameters) scores 55% against 60%: the bigger base did not help.
    """
    runs = []
    for size, step in ((100, 0), (200, 1), (400, 2)):
        runs.append(
            run(
                f"lora-n{size}",
                "lora",
                size=size,
                accuracy=0.60 + 0.02 * step,
                loss=1.5,
                lora_r=8,
                device_seconds=10.0,
            )
        )
        runs.append(
            run(
                f"full-n{size}",
                "full",
                size=size,
                accuracy=0.70 + 0.02 * step,
                loss=1.2,
                device_seconds=40.0,
                trainable=100_000,
            )
        )
    runs.append(
        run("big-lora-n100", "lora", size=100, model="big", accuracy=0.55, loss=1.4, lora_r=8, total=200_000)
    )
    base = {"learning": {"held_out_loss": 2.0, "accuracy": 0.5}, "forgetting": {"general_loss": 1.0}}
    return document("belle-test", runs, base)
