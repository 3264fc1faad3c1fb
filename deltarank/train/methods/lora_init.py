"""`--lora-init`: LoRA's initialisations from the base weights (pissa, olora, milora) or the data (eva, corda),
and a stored adapter whose ΔW alone is W_tuned − W_original.

PiSSA, OLoRA, CorDA and MiLoRA start from non-zero factors B₀, A₀ and rewrite the base, W_res = W − s·B₀A₀, so the
trained model is W_res + s·BA and the ΔW a user means is s·(BA − B₀A₀). The initial adapter is saved right after
initialisation (to a temporary folder), and every save of the run (final weights and each checkpoint-<step>)
writes peft's conversion of it (`save_pretrained(path_initial_model_for_weight_conversion=...)`): the plain
LoRA A' = [A; A₀], B' = [B, −B₀] of rank 2r with α doubled (√2·α with rsLoRA), the same s, which applied to the
original base gives the trained model. Its `adapter_config.json` says `init_lora_weights: true`, so the adapter
reader and `load_trained` treat it as any LoRA: one ΔW formula. A checkpoint also keeps the raw trained factors
(in TRAINABLE_ADAPTER, its config naming the base-rewriting init, which the reader refuses) for `--resume`.

MiLoRA (Wang et al. 2024), which peft lacks, is PiSSA's mirror: with W = U S Vᵀ and the r smallest triplets,
B₀ = U_r √(S_r/s), A₀ = √(S_r/s) V_rᵀ (`milora_init`). EVA and CorDA read CALIBRATION_BATCHES batches of the run's
own training sequences, drawn by a permutation seeded with the run's seed; EVA leaves the base as it is (B₀ = 0).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deltarank.errors import DeltarankError
from deltarank.io.run_directory import CHECKPOINT_PREFIX
from deltarank.io.training_methods import BASE_REWRITING_INITS, DATA_DRIVEN_INITS
from deltarank.train.config import TrainConfig
from deltarank.train.methods.base import peft_model

CALIBRATION_BATCHES = 4  # training batches EVA and CorDA read (of --batch-size sequences each)
TRAINABLE_ADAPTER = (
    "trainable_adapter"  # in a checkpoint: the raw factors on the rewritten base, for --resume
)
INITIAL_ADAPTER = "initial"  # the initial adapter's folder (and peft's adapter name while converting)
RECORD_ATTRIBUTE = "deltarank_lora_init"  # the run.json record, kept on the wrapped model
ADAPTER = "default"


@dataclass(frozen=True)
class Calibration:
    """The training sequences a data-driven initialisation reads, and the id that pads them into batches.

    Attributes:
        dataset: The run's train set (`deltarank.train.data.TokenizedDataset`).
        pad_token_id: The tokenizer's padding id.
    """

    dataset: Any
    pad_token_id: int


def rewrites_base(init: str) -> bool:
    """Whether `--lora-init init` rewrites the base weights (so the run stores the converted adapter)."""
    return init.startswith(BASE_REWRITING_INITS)


def init_kwargs(config: TrainConfig) -> dict[str, Any]:
    """peft's `LoraConfig` arguments for `config.lora_init`: `init_lora_weights` and EVA's or CorDA's config
    (milora starts from peft's default, rewritten by `milora_init`)."""
    from peft.tuners.lora.config import CordaConfig, EvaConfig

    init = config.lora_init
    if init in ("default", "milora"):
        return {"init_lora_weights": True}
    kwargs: dict[str, Any] = {"init_lora_weights": init}
    if init == "eva":  # every non-padding token's input, not only the labelled ones (the adapter acts on all)
        kwargs["eva_config"] = EvaConfig(use_label_mask=False)
    elif init == "corda":  # instruction-previewed mode: the covariance of this run's own inputs
        kwargs["corda_config"] = CordaConfig(corda_method="ipm")
    return kwargs


def initialise(model: Any, lora_config: Any, config: TrainConfig, calibration: Calibration | None) -> Any:
    """Wrap `model` with `lora_config` and initialise it as `config.lora_init` says; a base-rewriting init's
    saves write the converted adapter (`store_converted`). The run.json record is kept on the result."""
    init = config.lora_init
    batches: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    if init in DATA_DRIVEN_INITS:
        if calibration is None:
            raise DeltarankError(f"lora_init {init} reads training batches, and none were given")
        batches, summary = calibration_batches(calibration, config)
    if (
        rewrites_base(init)
        and lora_config.use_rslora
        and (lora_config.rank_pattern or lora_config.alpha_pattern)
    ):
        raise DeltarankError(
            f"lora_init {init} with rslora and a rank or alpha pattern cannot be stored converted (peft refuses)"
        )
    if init == "corda":
        from peft.tuners.lora.corda import preprocess_corda

        preprocess_corda(model, lora_config, run_model=lambda: _run(model, batches))
    wrapped = peft_model(model, lora_config)
    if init == "eva":
        from peft import initialize_lora_eva_weights

        _check_eva_tokens(batches, lora_config)
        initialize_lora_eva_weights(wrapped, dataloader=batches, show_progress_bar=False)
    elif init == "milora":
        milora_init(wrapped)
        wrapped.peft_config[ADAPTER].init_lora_weights = "milora"  # a raw save says the base was rewritten
    if rewrites_base(init):
        store_converted(wrapped)
    peft_config = wrapped.peft_config[ADAPTER]
    converted = rewrites_base(init)
    setattr(
        wrapped,
        RECORD_ATTRIBUTE,
        {
            "init": init,
            "init_lora_weights": init_kwargs(config)["init_lora_weights"],
            "rewrites_base": converted,
            "stored_adapter": "converted: s·(BA − B₀A₀) as a plain LoRA on the original base"
            if converted
            else "as trained",
            "stored_rank": 2 * config.lora_r if converted else config.lora_r,
            "rank_pattern": dict(peft_config.rank_pattern or {}),  # EVA's redistributed ranks
            "calibration": summary,
        },
    )
    return wrapped


def calibration_batches(calibration: Calibration, config: TrainConfig) -> tuple[list[dict[str, Any]], dict]:
    """Up to CALIBRATION_BATCHES padded batches of `config.batch_size` training sequences, drawn by a permutation
    seeded with `config.seed`, and their summary for run.json."""
    from deltarank.train.data import PaddingCollator

    dataset = calibration.dataset
    if len(dataset) == 0:
        raise DeltarankError(
            f"lora_init {config.lora_init} reads training batches, and the train set is empty"
        )
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.seed)).tolist()
    chosen = order[: CALIBRATION_BATCHES * config.batch_size]
    collate = PaddingCollator(calibration.pad_token_id)
    batches = [
        collate([dataset[i] for i in chosen[start : start + config.batch_size]])
        for start in range(0, len(chosen), config.batch_size)
    ]
    summary = {
        "source": "the run's train set, a permutation seeded with the run's seed",
        "seed": config.seed,
        "batches": len(batches),
        "sequences": len(chosen),
        "tokens": int(sum(int(b["attention_mask"].sum()) for b in batches)),
    }
    return batches, summary


def _run(model: Any, batches: list[dict[str, Any]]) -> None:
    """Forward the calibration sequences through `model` one at a time, without their padding (CorDA's hooks
    collect the layer inputs of a batch of one)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for batch in batches:
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
                model(input_ids=ids[mask.bool()][None].to(device))


def _check_eva_tokens(batches: list[dict[str, Any]], lora_config: Any) -> None:
    """EVA fits round(ρ·r) components per layer from each batch, and skips (and never converges on) a batch
    with fewer tokens: refuse such batches rather than loop."""
    ranks = [lora_config.r, *(lora_config.rank_pattern or {}).values()]
    needed = round(max(ranks) * lora_config.eva_config.rho)
    fewest = min(int(b["attention_mask"].sum()) for b in batches)
    if fewest < needed:
        raise DeltarankError(
            f"lora_init eva needs at least {needed} tokens per batch (ρ·r components), a batch has {fewest}: "
            "raise --batch-size or --seq-len, or lower --lora-rank"
        )


@torch.no_grad()
def milora_init(model: Any, adapter: str = ADAPTER) -> None:
    """MiLoRA (Wang et al. 2024, "MiLoRA: Harnessing Minor Singular Components"): with W = U S Vᵀ (out, in) and the
    r smallest singular triplets, B₀ = U_r √(S_r/s) (out, r), A₀ = √(S_r/s) V_rᵀ (r, in) and the base rewritten to
    W − s·B₀A₀ (peft's `pissa_init` with the bottom triplets in place of the top ones)."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import transpose

    for module in model.modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        layer: Any = module  # a Linear LoraLayer: fan_in_fan_out, a weight on its base layer
        base: Any = layer.get_base_layer()
        dtype = base.weight.dtype
        weight = transpose(base.weight.to(torch.float32), layer.fan_in_fan_out)  # (out, in)
        r, scale = module.r[adapter], module.scaling[adapter]
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)  # σ descending
        root = torch.sqrt(s[-r:] / scale)  # (r,)
        lora_b = u[:, -r:] * root  # (out, r)
        lora_a = root[:, None] * vh[-r:]  # (r, in)
        module.lora_A[adapter].weight.data = lora_a.contiguous()
        module.lora_B[adapter].weight.data = lora_b.contiguous()
        residual = weight - scale * lora_b @ lora_a
        base.weight.data = transpose(residual.to(dtype), layer.fan_in_fan_out)


def store_converted(model: Any) -> None:
    """Save the initial adapter (to a temporary folder kept as long as `model`) and make every later save write
    peft's conversion to a plain LoRA of rank 2r; a checkpoint's save also writes the raw factors into its
    TRAINABLE_ADAPTER folder (what `load_trainable` resumes from)."""
    folder = tempfile.TemporaryDirectory(prefix="deltarank-lora-init-")
    initial = str(Path(folder.name) / INITIAL_ADAPTER)
    peft_config = model.peft_config[ADAPTER]
    init, peft_config.init_lora_weights = peft_config.init_lora_weights, True  # peft's documented procedure
    try:
        model.save_pretrained(initial)
    finally:
        peft_config.init_lora_weights = init
    save = model.save_pretrained

    def save_pretrained(save_directory: str, *args: Any, **kwargs: Any) -> Any:
        if Path(save_directory).name.startswith(CHECKPOINT_PREFIX):
            save(str(Path(save_directory) / TRAINABLE_ADAPTER), *args, **kwargs)
        trainable = {param: param.requires_grad for param in model.parameters()}
        try:
            with warnings.catch_warnings():  # peft warns of the second adapter it loads (and of milora)
                warnings.filterwarnings("ignore", message=".*path_initial_model_for_weight_conversion.*")
                warnings.filterwarnings("ignore", message=".*changes the base weights of the model.*")
                return save(save_directory, *args, path_initial_model_for_weight_conversion=initial, **kwargs)
        finally:  # loading the initial adapter to convert it froze the trained one
            for param, flag in trainable.items():
                param.requires_grad_(flag)

    model.save_pretrained = save_pretrained
    model.deltarank_initial_adapter = folder  # removed with the model


def load_trainable(model: Any, checkpoint: str | Path) -> None:
    """Load a checkpoint's raw trained factors (TRAINABLE_ADAPTER) into `model`, initialised the same way."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    from deltarank.io.adapter import WEIGHTS_FILE

    path = Path(checkpoint) / TRAINABLE_ADAPTER / WEIGHTS_FILE
    if not path.is_file():
        raise DeltarankError(
            f"{checkpoint}: no {TRAINABLE_ADAPTER}/{WEIGHTS_FILE} to resume the trained factors from"
        )
    result: Any = set_peft_model_state_dict(model, load_file(str(path)))
    if result.unexpected_keys:
        raise DeltarankError(f"{path}: tensors this model lacks ({', '.join(result.unexpected_keys[:3])})")


def init_record(model: Any) -> dict[str, Any] | None:
    """The run.json `lora_init` record of a model `initialise` wrapped (None for other models)."""
    return getattr(model, RECORD_ATTRIBUTE, None)
