"""The configuration of one training run: a frozen dataclass, one field per key with its help text.

Keys are the command-line flags with `_` for `-` (`max_steps` for `--max-steps`). The dataclass is the one
source of truth for `deltarank train`'s options: `deltarank.cli.train` generates them from these fields (type
from the annotation, help from metadata "help", choices from `config_validation.CHOICES`, option names from
metadata "flags", grouping in `-h` from metadata "section"). A method's own settings sit in keys prefixed with
its name (`loha_r`, `oft_block_size`, ...).

Building a config checks it (`deltarank.train.config_validation`); `deltarank.train.config_file` reads one
from a YAML/TOML file and flag overrides (`load_train_config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deltarank.io.training_methods import REGISTRY
from deltarank.train.builtin_data import DATASETS, PREFIX, TRAIN_ONLY
from deltarank.train.config_validation import PROMPT_METHODS, validate_config

# Learning rates used when none is given (docs/training.md, "Training methods"; each method's reason in the registry).
DEFAULT_LR = {m.name: m.default_lr for m in REGISTRY.values()}
# What --data takes, for its help: the JSONL record shapes of `formats.detect_format` and the built-in sets.
DATA_FORMS = (
    'a JSONL file of {"messages"}, {"prompt","completion"}, {"instruction","input","output"}, BELLE\'s '
    '{"id","conversations"} or {"text"} records, or '
    + ", ".join(PREFIX + name for name in DATASETS)
    + f" (add :test for the held-out split; not {', '.join(PREFIX + name for name in TRAIN_ONLY)})"
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a `deltarank train` run; `resolved()` fills in method-dependent defaults."""

    model: str = field(
        metadata={"help": "Local Hugging Face directory, a .gguf file, 'smollm2-135m' or 'gemma3-270m'."}
    )
    data: str = field(metadata={"help": f"Training data: {DATA_FORMS}."})
    method: str = field(
        metadata={
            "help": "full (every weight), lora, qlora (LoRA on a 4-bit NF4 base), ia3, loha, lokr, adalora, "
            "oft, boft, vera (peft adapters), prompt, prefix, ptuning (virtual tokens) or adapter "
            "(Houlsby bottleneck adapters)."
        }
    )
    output_dir: str = field(
        metadata={
            "help": "Run directory: weights, checkpoints, train_log.jsonl, run.json (must be new or empty).",
            "flags": ("-o", "--output", "--output-dir"),
        }
    )
    eval_data: str | None = field(
        default=None, metadata={"help": "Held-out data for the eval loss (the same forms as --data)."}
    )
    max_examples: int | None = field(
        default=None,
        metadata={
            "help": "Train on only the first N examples of the data (sequences: records, or packed blocks of "
            "text); a study's data_size. Default: all."
        },
    )
    replay_data: str | None = field(
        default=None,
        metadata={
            "help": "General data mixed into the training data against forgetting (same forms as data; "
            "builtin:self-samples: the base model's own samples); needs replay_fraction."
        },
    )
    replay_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Share f in [0, 1) of the training sequences drawn from replay_data: round(N·f/(1−f)) "
            "replay sequences are added to the N training ones, shuffled with the seed; 0: no replay."
        },
    )
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps (exclusive with epochs)."})
    epochs: float | None = field(
        default=None, metadata={"help": "Passes over the data; 1 if neither is given."}
    )
    lr: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate (default per method: "
            + ", ".join(f"{name} {lr:g}" for name, lr in DEFAULT_LR.items())
            + ")."
        },
    )
    batch_size: int = field(default=4, metadata={"help": "Sequences per device per micro-batch."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches accumulated per optimizer step."})
    seq_len: int = field(
        default=512, metadata={"help": "Maximum tokens per sequence (packing length for text)."}
    )
    target_modules: str | None = field(
        default=None,
        metadata={
            "help": "Layers a weight-modifying method adapts: all-linear, attention, mlp, or comma-separated "
            "names (e.g. q_proj,v_proj). Default all-linear; ia3: peft's per-model default (k_proj, v_proj, "
            "down_proj for Llama).",
            "section": "methods",
        },
    )
    lora_r: int = field(
        default=16,
        metadata={
            "help": "LoRA rank r (lora, qlora).",
            "flags": ("--lora-rank", "--lora-r"),
            "section": "lora",
        },
    )
    lora_alpha: int | None = field(
        default=None, metadata={"help": "LoRA alpha (default 2r, Biderman et al.).", "section": "lora"}
    )
    lora_dropout: float = field(
        default=0.05, metadata={"help": "Dropout on the LoRA input.", "section": "lora"}
    )
    rslora: bool = field(
        default=False,
        metadata={"help": "Rank-stabilised scaling α/√r instead of α/r (lora, qlora).", "section": "lora"},
    )
    dora: bool = field(
        default=False, metadata={"help": "Weight-decomposed LoRA (DoRA; lora, qlora).", "section": "lora"}
    )
    lora_init: str = field(
        default="default",
        metadata={
            "help": "How LoRA's A and B start (lora): default (peft's: A Kaiming-uniform, B = 0), gaussian "
            "(A ~ N(0, 1/r²), B = 0), pissa (B, A from the r largest singular triplets of W), pissa_niter_K "
            "(the same by a randomised SVD of K subspace iterations), olora (B, A = the QR factors Q_r, R_r of "
            "W), milora (from the r smallest singular triplets: minor directions), corda (singular triplets "
            "of W times the covariance of the layer's inputs), eva (A from the top right singular vectors of "
            "the layer's inputs, B = 0; ranks redistributed by explained variance). pissa, olora, milora and "
            "corda rewrite the base weights (W − s·B₀A₀), so the run stores the converted adapter "
            "s·(BA − B₀A₀), a plain LoRA of rank 2r on the original base; eva and corda read a few seeded "
            "training batches. loftq is refused (peft quantizes it on CUDA only, and its base change is not "
            "low-rank).",
            "section": "lora",
        },
    )
    lora_rank_pattern: dict[str, int] | None = field(
        default=None,
        metadata={
            "help": "Per-module ranks instead of r, as JSON: '{\"model.layers.0.self_attn.q_proj\": 8}' (peft's "
            "rank_pattern: a key k selects the modules whose name matches (.*\\.)?(k)$, so a full module name "
            "selects that module only). `deltarank recommend` writes them in an adapter_config.json that "
            "--config reads.",
            "section": "lora",
        },
    )
    lora_alpha_pattern: dict[str, int] | None = field(
        default=None,
        metadata={
            "help": "Per-module alpha instead of lora_alpha, as JSON (peft's alpha_pattern). Default: 2r for "
            "each module of lora_rank_pattern when lora_alpha is not given either.",
            "section": "lora",
        },
    )
    loha_r: int = field(
        default=8,
        metadata={"flags": ("--loha-rank",), "help": "LoHa rank of each Hadamard factor.", "section": "loha"},
    )
    loha_alpha: int = field(default=8, metadata={"help": "LoHa alpha (scale α/r).", "section": "loha"})
    lokr_r: int = field(
        default=8,
        metadata={"flags": ("--lokr-rank",), "help": "LoKr rank of the Kronecker factor.", "section": "lokr"},
    )
    lokr_alpha: int = field(default=8, metadata={"help": "LoKr alpha (scale α/r).", "section": "lokr"})
    adalora_init_r: int = field(
        default=12,
        metadata={
            "flags": ("--adalora-init-rank",),
            "help": "AdaLoRA initial rank of every matrix.",
            "section": "adalora",
        },
    )
    adalora_target_r: int = field(
        default=8,
        metadata={
            "flags": ("--adalora-target-rank",),
            "help": "AdaLoRA average rank after budget allocation.",
            "section": "adalora",
        },
    )
    adalora_alpha: int = field(default=8, metadata={"help": "AdaLoRA alpha.", "section": "adalora"})
    oft_block_size: int = field(
        default=32,
        metadata={
            "help": "OFT block size of the block-diagonal rotation (divides in_features).",
            "section": "oft",
        },
    )
    boft_block_size: int = field(
        default=4, metadata={"help": "BOFT block size (divides in_features).", "section": "boft"}
    )
    boft_butterfly_factor: int = field(
        default=1, metadata={"help": "BOFT number of butterfly factors.", "section": "boft"}
    )
    vera_r: int = field(
        default=256,
        metadata={
            "flags": ("--vera-rank",),
            "help": "VeRA rank of the shared random projections.",
            "section": "vera",
        },
    )
    virtual_tokens: int = field(
        default=20,
        metadata={"help": "Virtual tokens learned by prompt, prefix and ptuning.", "section": "prompt"},
    )
    prefix_projection: bool = field(
        default=False,
        metadata={"help": "prefix: reparameterise through an MLP (P-tuning v2 style).", "section": "prompt"},
    )
    encoder_hidden_size: int | None = field(
        default=None,
        metadata={
            "help": "Hidden size of the prefix projection / P-tuning encoder (default: the model's).",
            "section": "prompt",
        },
    )
    adapter_size: int | None = field(
        default=None,
        metadata={
            "help": "Bottleneck width of the adapters (default hidden/16, AdapterHub's Houlsby config).",
            "section": "adapter",
        },
    )
    adapter_nonlinearity: str = field(
        default="swish", metadata={"help": "Adapter nonlinearity.", "section": "adapter"}
    )
    save_steps: int | None = field(
        default=None,
        metadata={
            "help": "Write checkpoint-<step>/ every N steps (all kept); 0: none. Default: every 10% of the steps "
            "and at least every 10 minutes, the last two kept (so an interrupt keeps work)."
        },
    )
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    force: bool = field(
        default=False,
        metadata={
            "help": "Replace an existing non-empty output directory (removed once every input check passed)."
        },
    )
    download: bool = field(
        default=False,
        metadata={
            "help": "Fetch an org/name --model missing from the Hugging Face cache (safetensors, GGUF, JSON and "
            "tokenizer files only); without it nothing is downloaded."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data order and dropout."})
    device: str = field(default="auto", metadata={"help": "auto, cpu (forces CPU), cuda or cuda:N."})
    mixed_precision: str = field(
        default="fp32",
        metadata={
            "help": "fp32, or bf16-mixed / fp16-mixed autocast (master weights stay fp32). Config key "
            "'precision' of older files is still read."
        },
    )
    report_to: str = field(
        default="none",
        metadata={"help": "Where the Trainer also logs: none, tensorboard (<output>/runs) or wandb."},
    )
    lr_scheduler: str = field(
        default="linear", metadata={"help": "transformers scheduler name (linear, cosine…)."}
    )
    warmup: float = field(default=0.0, metadata={"help": "Warm-up steps (int) or fraction of the run (<1)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    weight_decay_mode: str = field(
        default="coupled",
        metadata={
            "help": "coupled: torch's AdamW, each step shrinks weights by lr_t·weight_decay (at lr 5e-5 a decay of "
            "1e-4 changes nothing in fp32); decoupled: Composer's DecoupledAdamW (Biderman et al. 2024), by "
            "(lr_t/lr_peak)·weight_decay, the schedule's multiplier only; it needs optim adamw_torch or "
            "adamw_torch_fused and weight_decay below 1."
        },
    )
    attention_dropout: float | None = field(
        default=None,
        metadata={
            "help": "Dropout on the attention probabilities while training (default: the model's own)."
        },
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    optim: str = field(
        default="adamw_torch_fused",
        metadata={"help": "transformers optimizer name (its default: AdamW in one fused kernel)."},
    )
    batching: str = field(
        default="auto",
        metadata={
            "help": "auto (padding-free batches where the model keeps sequences apart, else padded), "
            "padding-free, or padded."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward."}
    )
    logging_steps: int = field(default=1, metadata={"help": "Write a train_log.jsonl line every N steps."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Eval every N steps (default: at saves, end)."}
    )
    track_rank: int = field(
        default=0,
        metadata={
            "help": "Measure the effective ranks of every ΔW every N optimizer steps (and at the last step), "
            "as `deltarank spectrum` does, into train_log.jsonl; 0: off. Not for prompt methods or "
            "bottleneck adapters (no ΔW).",
        },
    )
    track_rank_sample: int | None = field(
        default=None,
        metadata={
            "help": "Full fine-tuning: track N weight matrices, every module type of evenly spaced layers "
            "(first and last included); default two layers' worth (14 for Llama). Their base is kept "
            "in fp32.",
        },
    )
    max_eval_sequences: int | None = field(
        default=64, metadata={"help": "Cap on eval sequences (eval is a full forward pass per sequence)."}
    )
    keep_optimizer_state: str = field(
        default="last",
        metadata={"help": "Which checkpoints keep optimizer state: last (for --resume), all, none."},
    )
    progress: str = field(
        default="auto", metadata={"help": "auto (bar on a terminal, else lines), bar, lines, none."}
    )

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def learning_rate(self) -> float:
        """The peak learning rate: `lr`, or the method's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def alpha(self) -> int:
        """LoRA alpha: `lora_alpha`, or 2r (Biderman et al. 2024's best practice)."""
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r

    @property
    def alpha_pattern(self) -> dict[str, int] | None:
        """Per-module LoRA alpha: `lora_alpha_pattern`, or 2r for each module of `lora_rank_pattern` when no
        alpha is given at all (the scale α/r = 2 of every module, as with one rank)."""
        if self.lora_alpha_pattern is not None or self.lora_alpha is not None or not self.lora_rank_pattern:
            return self.lora_alpha_pattern
        return {module: 2 * r for module, r in self.lora_rank_pattern.items()}

    def resolved(self) -> TrainConfig:
        """This config with the defaults that depend on other keys filled in (learning rate, alpha and alpha
        pattern, epochs, target modules; padded batches for the prompt methods, whose virtual tokens need them; replay_fraction 0
        cleared with its replay_data: no replay, the run without those keys)."""
        replay = bool(self.replay_fraction)
        epochs = self.epochs if (self.epochs is not None or self.max_steps is not None) else 1.0
        targets = self.target_modules
        if targets is None:
            targets = REGISTRY[self.method].default_targets  # None: peft's per-model default (ia3)
        batching = "padded" if self.method in PROMPT_METHODS and self.batching == "auto" else self.batching
        return dataclasses.replace(
            self,
            lr=self.learning_rate,
            lora_alpha=self.alpha,
            lora_alpha_pattern=self.alpha_pattern,
            epochs=epochs,
            target_modules=targets,
            batching=batching,
            replay_data=self.replay_data if replay else None,
            replay_fraction=self.replay_fraction if replay else None,
        )

    def changed_keys(self, other: TrainConfig, ignore: tuple[str, ...] = ("resume",)) -> list[str]:
        """The keys whose values differ from `other` (the `ignore` ones left out)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k not in ignore and mine[k] != theirs[k]]

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (the keys of a config file)."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the config as YAML, loadable again with `config_file.load_train_config(path)`."""
        from deltarank.io.atomic import write_atomic

        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
