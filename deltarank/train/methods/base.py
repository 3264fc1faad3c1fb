"""What every builder shares: the registry of builders (`@builds`), peft's wrapping and the resolved targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deltarank.errors import DeltarankError
from deltarank.io.training_methods import REGISTRY
from deltarank.train.config import TrainConfig
from deltarank.train.targets import ALL_LINEAR, resolve_target_modules

Builder = Callable[[Any, TrainConfig], Any]
# method name -> the function that wraps a model for it; every method of the registry has one (tested).
BUILDERS: dict[str, Builder] = {}


def builds(func: Builder) -> Builder:
    """Register `func` as the one builder of the registry's method of the same name."""
    if func.__name__ not in REGISTRY:
        raise AssertionError(f"{func.__name__} is not a method of deltarank.io.training_methods.REGISTRY")
    if func.__name__ in BUILDERS:
        raise AssertionError(f"{func.__name__} has a builder already ({BUILDERS[func.__name__].__module__})")
    BUILDERS[func.__name__] = func
    return func


def peft_model(model: Any, peft_config: Any) -> Any:
    """`get_peft_model`, its ValueError (a target the model lacks, ...) as a DeltarankError."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise DeltarankError(f"cannot build the {peft_config.peft_type.value} adapter: {exc}") from exc


def target_modules(model: Any, config: TrainConfig) -> str | list[str]:
    """peft's `target_modules` for the config's `--target-modules` (default all-linear)."""
    return resolve_target_modules(model, config.target_modules or ALL_LINEAR)
