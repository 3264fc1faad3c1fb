"""Attach a saved peft adapter to its base, refusing one that does not fit it.

`peft.PeftModel.from_pretrained` only warns when the adapter's tensors and the modules it builds on the base
disagree (and says nothing of tensors it ignores): on the wrong base the adapter is silently half applied.
Here every tensor the adapter file holds must be one the attached adapter has, and every tensor the attached
adapter has must come from the file, with the same shape; otherwise it is one `InputError` line.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from deltarank.errors import InputError
from deltarank.io.adapter import WEIGHTS_FILE

SHOWN_KEYS = 3  # keys named in the error line


def attach_adapter(base: Any, folder: Path) -> Any:
    """`PeftModel.from_pretrained(base, folder)`, checked: the file's tensors and the attached adapter's match.

    Raises:
        InputError: missing or unexpected adapter tensors, or tensors of another shape (the adapter was trained
            on another base model).
    """
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(folder, f"no {WEIGHTS_FILE} (deltarank never loads pickled adapter weights)")
    with safe_open(str(weights), framework="pt") as handle:
        saved = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    try:
        with warnings.catch_warnings():  # "Found missing adapter keys": reported below as an error instead
            warnings.filterwarnings("ignore", message="Found missing adapter keys", category=UserWarning)
            model = PeftModel.from_pretrained(base, str(folder))
    except RuntimeError as exc:  # size mismatches of load_state_dict
        first = " ".join(str(exc).split())[:200]
        raise InputError(folder, f"does not fit this base model (another base? {first})") from None
    expected = {key: tuple(value.shape) for key, value in get_peft_model_state_dict(model).items()}
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = sorted(k for k in set(saved) & set(expected) if saved[k] != expected[k])
    problems = [
        f"{len(keys)} {what} ({', '.join(keys[:SHOWN_KEYS])}{', ...' if len(keys) > SHOWN_KEYS else ''})"
        for what, keys in (
            ("adapter tensors missing from the file", missing),
            ("tensors in the file for modules this base lacks", unexpected),
            ("tensors of another shape", reshaped),
        )
        if keys
    ]
    if problems:
        raise InputError(
            folder, f"does not fit this base model (trained on another base?): {'; '.join(problems)}"
        )
    return model
