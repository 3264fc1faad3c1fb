"""A quiet console: other libraries' known-harmless warnings and progress bars, filtered in one place.

In a tiny study, most stderr lines came from transformers, peft and bitsandbytes: weight-loading and shard-
writing bars for every model, a deprecation notice for every LoRA run, a kernel-download failure from
bitsandbytes on every command. `install` (called once by the CLI entry point) filters exactly the messages
listed here, matched by their fixed text, and holds bitsandbytes back until 4-bit weights are used
(`deltarank.io.bitsandbytes_gate`). Everything else still shows: deltarank's own lines, and any warning or
log record of another library that is not listed (a genuine problem looks like that).
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

# (category, start of the message): `warnings.warn` calls of other libraries that say nothing a user can act on
HARMLESS_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # peft reads `model.is_gradient_checkpointing`, which transformers 5 renamed (peft's, not the user's)
    (FutureWarning, "`is_gradient_checkpointing` is deprecated"),
    # peft saving an adapter of a base without config.json (a GGUF model): the vocabulary is not resized anyway
    (UserWarning, "Could not find a config file in "),
    # peft's prompt methods (prompt, prefix, ptuning) call the model in ways transformers 5 deprecates
    (UserWarning, "Position ids are not supported for parameter efficient tuning. Ignoring position ids."),
    (FutureWarning, "`past_key_values` is deprecated and will be removed in version"),
    (FutureWarning, "Both `past_key_values` and `cache` are set for"),
    # peft's BOFT on a machine without a CUDA toolchain: its PyTorch code path runs instead
    (UserWarning, "Failed to load the CUDA extension: "),
)
# logger name -> starts of messages: log records of other libraries that say nothing a user can act on
HARMLESS_RECORDS: dict[str, tuple[str, ...]] = {
    # bitsandbytes' optional CPU kernel from the hub: not trusted / not cached offline; its own kernels run
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    "kernels._internals.hf_hub": ("Skipping publisher trust check for 'kernels-community/",),
    # transformers < 5 for configs saved without a loss type: the default causal-LM loss is the right one
    "transformers.modeling_utils": ("`loss_type=None` was set in the config but it is unrecognised",),
}
# descriptions of other libraries' tqdm bars that come with every model load or save
HARMLESS_BARS = frozenset(
    {
        "Loading weights",
        "Loading checkpoint shards",
        "Writing model shards",
        "Converting and de-quantizing GGUF tensors...",
    }
)


class KnownHarmless(logging.Filter):
    """Drops the log records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


_FILTERS = {name: KnownHarmless(prefixes) for name, prefixes in HARMLESS_RECORDS.items()}


def install() -> None:
    """Filter the known-harmless warnings, log records and bars, and hold bitsandbytes back (idempotent)."""
    from deltarank.io.bitsandbytes_gate import hold_back

    for category, start in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(start), category=category)
    for name, known in _FILTERS.items():
        logger = logging.getLogger(name)
        if known not in logger.filters:
            logger.addFilter(known)
    _quiet_bars()
    hold_back()


def release() -> None:
    """Stop holding bitsandbytes back (the CLI calls it when a command ends, so that a command run inside a
    Python process, such as a test's, leaves bitsandbytes importable); the filters stay."""
    from deltarank.io.bitsandbytes_gate import allow

    allow()


def installed() -> bool:
    """Whether `install` has run in this process (a study passes it on to its worker processes)."""
    return any(known in logging.getLogger(name).filters for name, known in _FILTERS.items())


def _quiet_bars() -> None:
    """Make `tqdm.auto.tqdm` (what transformers' bars are made of) start HARMLESS_BARS disabled."""
    from tqdm import auto

    if getattr(auto.tqdm, "deltarank_quiet", False):
        return
    original = auto.tqdm

    class QuietBars(original):  # type: ignore[misc, valid-type]
        """tqdm.auto.tqdm, disabled for the bars of HARMLESS_BARS."""

        deltarank_quiet = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("desc") in HARMLESS_BARS:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    auto.tqdm = QuietBars
