"""bitsandbytes is imported only where 4-bit weights are used (QLoRA, its quantisation error, 8-bit optimizers).

peft imports bitsandbytes whenever it is installed (`peft.helpers` on `import peft`, and the LoRA layer
dispatch on every adapter it builds), and importing bitsandbytes costs about a second and, on a CPU with
AVX512-BF16, tries to fetch a kernel from the Hugging Face hub and logs "Failed to load CPU gemm_4bit_forward"
on every command, even `study --dry-run`. `hold_back` (installed by the CLI) makes bitsandbytes look absent to
peft and transformers (`sys.modules["bitsandbytes"] = None`: `import` fails and `find_spec` finds nothing);
`allow` undoes it and clears their cached "is bitsandbytes available" answers, and is called before anything
that needs it.
"""

from __future__ import annotations

import sys

MODULE = "bitsandbytes"
# modules whose functions cache whether bitsandbytes is available (lru_cache), cleared by `allow`
AVAILABILITY_MODULES = ("peft.import_utils", "transformers.utils.import_utils", "transformers.utils")
# transformers optimizer names (TrainingArguments.optim) that run on bitsandbytes
BNB_OPTIMIZER_PARTS = ("bnb", "8bit", "32bit", "paged", "ademamix")


def hold_back() -> None:
    """Make bitsandbytes look absent until `allow` (no effect once it is imported)."""
    sys.modules.setdefault(MODULE, None)  # type: ignore[arg-type]


def held_back() -> bool:
    """Whether `hold_back` is in force."""
    return MODULE in sys.modules and sys.modules[MODULE] is None


def allow() -> None:
    """Let bitsandbytes be imported again, and make peft and transformers look for it anew."""
    if not held_back():
        return
    del sys.modules[MODULE]
    for name in AVAILABILITY_MODULES:
        module = sys.modules.get(name)
        for attr in dir(module) if module is not None else ():
            if ("bnb" in attr or MODULE in attr) and hasattr(getattr(module, attr), "cache_clear"):
                getattr(module, attr).cache_clear()
    helpers = sys.modules.get("peft.helpers")  # `import peft` bound its `bnb` to None while held back
    if helpers is not None and getattr(helpers, "bnb", False) is None:
        import bitsandbytes

        helpers.bnb = bitsandbytes  # type: ignore[attr-defined]


def needs_bitsandbytes(optim: str) -> bool:
    """Whether a transformers optimizer name is one of bitsandbytes' (8-bit, paged, AdEMAMix, ...)."""
    return any(part in optim.lower() for part in BNB_OPTIMIZER_PARTS)
