"""One naming table: canonical tensor names, layer/module parsing and the default selection.

Base and tuned tensors are paired by canonical name, never by order. Canonicalisation strips wrappers that
training tools add around a Hugging Face name (PEFT's `base_model.model.` prefix and `.base_layer` infix,
torch.compile's `_orig_mod.`, DDP's `module.`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (pattern, replacement) applied in order to every name from every source.
CANONICAL_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^base_model\.model\."), ""),
    (re.compile(r"^_orig_mod\."), ""),
    (re.compile(r"^module\."), ""),
    (re.compile(r"\.base_layer\."), "."),
)
# A transformer block: `layers.N.`, GPT-2 `h.N.`, `blocks.N.`, `block.N.`.
LAYER_PATTERN = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.")
# Outside the blocks and never analysed by default (only when --include asks).
# `shared` / `output` only as whole top-level names (T5's `shared.weight`, GGUF-style `output.weight`), so that
# block weights such as `mlp.shared_expert.*` (MoE) or `attention.output.*` stay selected.
EMBEDDING_PATTERN = re.compile(r"(embed|wte|wpe|lm_head|^shared\.weight$|^output\.weight$)")
# Leaf names shared by different matrices of one block (GPT-2 attn/mlp `c_proj`, BERT `dense`, T5 q/k/v/o in
# self- and cross-attention): `module_type` keeps their path inside the block.
AMBIGUOUS_LEAVES = frozenset({"c_proj", "dense", "q", "k", "v", "o"})


def canonical_name(name: str) -> str:
    """Strip training wrappers from a tensor name (e.g. PEFT's `base_model.model.` prefix).

    Wrappers nest in any order (DDP around torch.compile saves `module._orig_mod.`), so the rules are applied
    until the name stops changing; every rule shortens it, so this ends.
    """
    previous = None
    while name != previous:
        previous = name
        for pattern, replacement in CANONICAL_RULES:
            name = pattern.sub(replacement, name)
    return name


def layer_index(name: str) -> int | None:
    """The transformer block index in a name, or None outside the blocks."""
    match = LAYER_PATTERN.search(name)
    return int(match.group(1)) if match else None


def module_type(name: str) -> str:
    """The module type of a weight name: `model.layers.0.self_attn.q_proj.weight` -> `q_proj`.

    A leaf name that several sub-modules of one block share (AMBIGUOUS_LEAVES) keeps its path inside the
    block, so different matrices are not pooled: GPT-2's `transformer.h.0.attn.c_proj.weight` -> `attn.c_proj`
    and `transformer.h.0.mlp.c_proj.weight` -> `mlp.c_proj`.
    """
    parts = name.split(".")
    if parts[-1] in {"weight", "bias"} and len(parts) > 1:
        parts = parts[:-1]
    if parts[-1] not in AMBIGUOUS_LEAVES or len(parts) == 1:
        return parts[-1]
    stem = ".".join(parts)
    match = LAYER_PATTERN.search(stem)
    return stem[match.end() :] if match else ".".join(parts[-2:])


@dataclass(frozen=True)
class Selection:
    """Which tensors to analyse.

    Attributes:
        include: Regex; when set, matching 2-D tensors are selected (embeddings and LM head too).
        exclude: Regex; matching tensors are dropped after `include`.
    """

    include: str | None = None
    exclude: str | None = None

    def __post_init__(self) -> None:
        from deltarank.errors import OptionError

        for label, pattern in (("--include", self.include), ("--exclude", self.exclude)):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise OptionError(
                        f"{label} {pattern!r} is not a valid regular expression ({exc})"
                    ) from None

    def wants(self, name: str, ndim: int) -> bool:
        """True when a tensor of this canonical name and rank is selected.

        Default: 2-D weights inside the transformer blocks (attention and MLP projections).
        """
        if ndim != 2:
            return False
        if self.include is not None:
            chosen = re.search(self.include, name) is not None
        else:
            chosen = (
                layer_index(name) is not None
                and name.endswith(".weight")
                and not EMBEDDING_PATTERN.search(name)
            )
        if chosen and self.exclude is not None and re.search(self.exclude, name):
            return False
        return chosen
