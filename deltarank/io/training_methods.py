"""The method registry: everything deltarank knows about a training method, one `TrainingMethod` per method.

Every list of methods elsewhere is read from `REGISTRY`: `deltarank train --method`'s choices and the checks of
which options apply to which method (`deltarank.train.config_validation`), the default learning rates
(`deltarank.train.config`), the sections of a config file (`deltarank.train.config_file`), the sections of
`deltarank train -h` (`deltarank.cli.train`), the figures' labels, the study's "no ΔW" and "LoRA run" checks,
and the README's `--method` table (a test compares them). Adding a method is one entry here plus its builder in
`deltarank.train.methods` (a test checks every entry has one).

The registry is plain data in `io`, the lowest layer that needs it: the figures (a sibling of `train`) and the
adapter reader (`io`) read it, so it cannot live in `train`. How a peft type *stores* its adapter stays in
`deltarank.io.peft_methods` (keyed by peft type); each method names its peft type here, and its ΔW maths stays in
`deltarank.analysis.maths.deltas` (keyed by the delta kind named here).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Option sections of `TrainConfig` fields (metadata "section") that hold more than one method's options.
WEIGHT_SECTION = "methods"  # --target-modules: every peft method that changes weights
PROMPT_SECTION = "prompt"  # --virtual-tokens, ...: the virtual-token methods
ALL_LINEAR = "all-linear"  # --target-modules: every linear layer of the blocks


@dataclass(frozen=True)
class TrainingMethod:
    """One training method.

    Attributes:
        name: The `--method` value, config value and run.json `method`.
        display: Its name in figures, tables and prose ("LoRA", "prompt tuning").
        family: `full` (every weight), `weights` (a peft adapter on the weights), `prompt` (virtual tokens) or
            `added` (new layers; the base unchanged).
        sections: The `TrainConfig` option sections whose options are its own (see `own_fields` for fields that
            apply to only some of a section's methods).
        own_fields: Fields it has on its own inside a shared section (prefix's `prefix_projection`), or fields
            of the general options that apply only to it (full's `track_rank_sample`).
        config_section: The name under which a config file may give its keys as a section
            (`oft: {block_size: 16}` is `oft_block_size: 16`), or None.
        default_lr: The peak learning rate used when `--lr` is not given (README, "Training methods").
        default_targets: `--target-modules` when none is given; None: peft's per-model default.
        peft_type: Its peft type (`LORA`, ...; a key of `deltarank.io.peft_methods.METHODS` or one of its
            `PROMPT_TYPES`), or None when peft does not build it.
        delta_kind: The `kind` of its ΔW records in a spectrum (a delta form of the analysis), or None when it
            changes no weight (no ΔW).
        delta_form: The shape of its ΔW in words (dense, low-rank factors, Kronecker product, ...).
        rank_bound: The `rank_bound` its spectrum records carry, in the README's words ("r", "r²"; "—": none
            recorded, only min(out, in) bounds it).
        lora_like: A LoRA run for the reference claims (Biderman et al.'s LoRA against full fine-tuning).
        quantized_base: It trains on a 4-bit NF4 base, so it needs bitsandbytes.
    """

    name: str
    display: str
    family: str
    default_lr: float
    sections: tuple[str, ...] = ()
    own_fields: tuple[str, ...] = ()
    config_section: str | None = None
    default_targets: str | None = ALL_LINEAR
    peft_type: str | None = None
    delta_kind: str | None = None
    delta_form: str = "none"
    rank_bound: str = "—"
    lora_like: bool = False
    quantized_base: bool = False

    @property
    def has_delta(self) -> bool:
        """Whether it changes the model's weights (so its run has a ΔW to measure)."""
        return self.delta_kind is not None


_WEIGHTS = (WEIGHT_SECTION,)

# Learning rates: TRL's SFT default for full fine-tuning; the LoRA rate of Biderman et al. 2024 for code
# instruction tuning, also QLoRA's (Dettmers et al. 2023) for small models, used for LoHa/LoKr/OFT/BOFT (no
# language-model default in their papers); IA3: T-Few (Liu et al. 2022); AdaLoRA: its paper's GLUE range (Zhang
# et al. 2023); VeRA: its instruction-tuning rate (Kopiczko et al. 2024; frozen random projections need a ~10x
# larger rate than LoRA); prompt, prefix and P-tuning: peft's task guides (Lester et al. 2021 used 0.3 with
# Adafactor); bottleneck adapters: Houlsby et al. 2019's grid middle.
REGISTRY: dict[str, TrainingMethod] = {
    m.name: m
    for m in (
        TrainingMethod(
            "full",
            "full fine-tuning",
            "full",
            2e-5,
            own_fields=("track_rank_sample",),
            delta_kind="dense",
            delta_form="dense",
        ),
        TrainingMethod(
            "lora",
            "LoRA",
            "weights",
            2e-4,
            sections=(*_WEIGHTS, "lora"),
            config_section="lora",
            peft_type="LORA",
            delta_kind="lora",
            delta_form="low-rank factors",
            rank_bound="r",
            lora_like=True,
        ),
        TrainingMethod(
            "qlora",
            "QLoRA",
            "weights",
            2e-4,
            sections=(*_WEIGHTS, "lora"),
            peft_type="LORA",
            delta_kind="qlora",
            delta_form="low-rank factors",
            rank_bound="r",
            lora_like=True,
            quantized_base=True,
        ),
        TrainingMethod(
            "ia3",
            "IA3",
            "weights",
            3e-3,
            sections=_WEIGHTS,
            default_targets=None,
            peft_type="IA3",
            delta_kind="ia3",
            delta_form="scaled rows or columns of W",
            rank_bound="scales ≠ 1",
        ),
        TrainingMethod(
            "loha",
            "LoHa",
            "weights",
            2e-4,
            sections=(*_WEIGHTS, "loha"),
            config_section="loha",
            peft_type="LOHA",
            delta_kind="loha",
            delta_form="Hadamard product of low-rank factors",
            rank_bound="r²",
        ),
        TrainingMethod(
            "lokr",
            "LoKr",
            "weights",
            2e-4,
            sections=(*_WEIGHTS, "lokr"),
            config_section="lokr",
            peft_type="LOKR",
            delta_kind="lokr",
            delta_form="Kronecker product",
            rank_bound="rank(W₁)·rank(W₂) bound",
        ),
        TrainingMethod(
            "adalora",
            "AdaLoRA",
            "weights",
            5e-4,
            sections=(*_WEIGHTS, "adalora"),
            config_section="adalora",
            peft_type="ADALORA",
            delta_kind="adalora",
            delta_form="low-rank factors",
            rank_bound="kept r'",
        ),
        TrainingMethod(
            "oft",
            "OFT",
            "weights",
            2e-4,
            sections=(*_WEIGHTS, "oft"),
            config_section="oft",
            peft_type="OFT",
            delta_kind="oft",
            delta_form="dense (a rotation of W)",
        ),
        TrainingMethod(
            "boft",
            "BOFT",
            "weights",
            2e-4,
            sections=(*_WEIGHTS, "boft"),
            config_section="boft",
            peft_type="BOFT",
            delta_kind="boft",
            delta_form="dense (a rotation and scale of W)",
        ),
        TrainingMethod(
            "vera",
            "VeRA",
            "weights",
            4e-3,
            sections=(*_WEIGHTS, "vera"),
            config_section="vera",
            peft_type="VERA",
            delta_kind="vera",
            delta_form="low-rank factors",
            rank_bound="r",
        ),
        TrainingMethod(
            "prompt", "prompt tuning", "prompt", 3e-2, sections=(PROMPT_SECTION,), peft_type="PROMPT_TUNING"
        ),
        TrainingMethod(
            "prefix",
            "prefix tuning",
            "prompt",
            1e-2,
            sections=(PROMPT_SECTION,),
            own_fields=("prefix_projection", "encoder_hidden_size"),
            config_section="prefix",
            peft_type="PREFIX_TUNING",
        ),
        TrainingMethod(
            "ptuning",
            "P-tuning",
            "prompt",
            1e-3,
            sections=(PROMPT_SECTION,),
            own_fields=("encoder_hidden_size",),
            peft_type="P_TUNING",
        ),
        TrainingMethod(
            "adapter", "bottleneck adapter", "added", 3e-4, sections=("adapter",), config_section="adapter"
        ),
    )
}

METHOD_NAMES: tuple[str, ...] = tuple(REGISTRY)

# LoRA's initialisations (`--lora-init`, method lora; `deltarank.train.methods.lora_init`): peft's
# init_lora_weights values (default is its True), pissa_niter_<K> for pissa_niter_K, and deltarank's milora.
LORA_INITS = ("default", "gaussian", "pissa", "pissa_niter_K", "olora", "eva", "corda", "loftq", "milora")
# Those that rewrite the base weights (W_res = W − s·B₀A₀): their runs store the converted adapter, s·(BA − B₀A₀)
# as a plain LoRA of rank 2r on the original base.
BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq", "milora")
# Those that read training batches (a few, seeded) to initialise.
DATA_DRIVEN_INITS = ("eva", "corda")


def method(name: str) -> TrainingMethod:
    """The registry entry of `name` (a KeyError for an unknown one: names are checked where they are read)."""
    return REGISTRY[name]


def names(methods: Iterable[TrainingMethod] | None = None) -> tuple[str, ...]:
    """The names of `methods` (default: all), in registry order."""
    return tuple(m.name for m in (REGISTRY.values() if methods is None else methods))


def in_family(family: str) -> tuple[str, ...]:
    """The names of the methods of one family (`weights`, `prompt`, ...), in registry order."""
    return names(m for m in REGISTRY.values() if m.family == family)


def where(flag: str) -> tuple[str, ...]:
    """The names of the methods whose boolean attribute or property `flag` is true (`lora_like`, `has_delta`)."""
    return names(m for m in REGISTRY.values() if getattr(m, flag))


def display_name(name: str) -> str:
    """A method's display name; an unknown name (a study's own run label) as it is."""
    entry = REGISTRY.get(name)
    return entry.display if entry is not None else name
