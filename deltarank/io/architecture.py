"""Same base or refuse: compare the architectures that BASE's and TUNED's configs describe.

Pairing by tensor name and shape cannot tell a fine-tune from an unrelated model whose layer shapes happen to
match (a Llama and a Qwen2 of the same widths): the deltas are then differences of unrelated weights, and their
ranks sit at the Gaussian reference. When both sides describe their architecture (a Hugging Face directory's
`config.json`, beside a .safetensors file or its sharded index too, or a GGUF file's metadata), the model type,
layer count, widths and head counts must agree; a different vocabulary size alone is allowed (a fine-tune may
add tokens) and logged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltarank.errors import PairingError

log = logging.getLogger(__name__)

# config.json key -> the label of its value in messages; compared in this order.
STRUCTURE = {
    "num_hidden_layers": "layers",
    "hidden_size": "hidden",
    "intermediate_size": "intermediate",
    "num_attention_heads": "heads",
    "num_key_value_heads": "kv heads",
}
VOCAB = "vocab_size"
# GGUF metadata key (after `<arch>.`) -> config.json key.
GGUF_KEYS = {
    "block_count": "num_hidden_layers",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "vocab_size": VOCAB,
}
ALLOW_OPTION = "--allow-different-base"


@dataclass(frozen=True)
class Architecture:
    """What a checkpoint's config says about its architecture.

    Attributes:
        model_type: config.json's `model_type`, or the GGUF `general.architecture`.
        fields: The integer fields of `STRUCTURE` and `vocab_size` that the config gives.
        source: `config.json` or `gguf`: model types are compared only between sources of one kind (a GGUF
            of a Mistral model says `llama`).
    """

    model_type: str
    fields: dict[str, int]
    source: str

    def summary(self) -> str:
        """`llama (2 layers, hidden 64)`."""
        parts = []
        if "num_hidden_layers" in self.fields:
            parts.append(f"{self.fields['num_hidden_layers']} layers")
        if "hidden_size" in self.fields:
            parts.append(f"hidden {self.fields['hidden_size']}")
        name = self.model_type or "unknown type"
        return f"{name} ({', '.join(parts)})" if parts else name

    def differences(self, other: Architecture) -> list[str]:
        """What differs, as `layers 2 vs 3` (model types only between configs of one kind)."""
        out = []
        comparable = self.source == other.source and self.model_type and other.model_type
        if comparable and self.model_type != other.model_type:
            out.append(f"model type {self.model_type} vs {other.model_type}")
        for key, label in STRUCTURE.items():
            if key in self.fields and key in other.fields and self.fields[key] != other.fields[key]:
                out.append(f"{label} {self.fields[key]} vs {other.fields[key]}")
        return out


def read_architecture(path: str | Path) -> Architecture | None:
    """The architecture a checkpoint path describes, or None when it says nothing readable.

    A directory's `config.json` (its `text_config` for multimodal configs), the `config.json` beside a
    .safetensors file or sharded index, or a GGUF file's metadata. Never raises: a missing or malformed config
    is simply not compared (the tensors are still checked by pairing).
    """
    p = Path(path)
    if p.suffix == ".gguf" and p.is_file():
        return _gguf_architecture(p)
    config = p / "config.json" if p.is_dir() else p.parent / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    text = data.get("text_config")
    numbers = text if isinstance(text, dict) and "hidden_size" in text else data
    # A multimodal config (gemma3) describes its language model in text_config (model_type gemma3_text), as
    # the config of a text-only checkpoint of the same model does.
    model_type = numbers.get("model_type", data.get("model_type"))
    return _architecture(model_type, numbers, "config.json")


def _gguf_architecture(path: Path) -> Architecture | None:
    try:
        import gguf

        reader = gguf.GGUFReader(path)
        fields = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("tok")}
        tokens = reader.fields.get("tokenizer.ggml.tokens")
    except Exception:  # an unreadable file: opening it as a checkpoint gives the clear error
        return None
    arch = fields.get("general.architecture")
    if not isinstance(arch, str):
        return None
    numbers = {config_key: fields.get(f"{arch}.{key}") for key, config_key in GGUF_KEYS.items()}
    if numbers.get(VOCAB) is None and tokens is not None:
        numbers[VOCAB] = len(tokens.data)
    return _architecture(arch, numbers, "gguf")


def _architecture(model_type: Any, numbers: dict[str, Any], source: str) -> Architecture:
    fields = {
        key: int(value)
        for key in (*STRUCTURE, VOCAB)
        if isinstance(value := numbers.get(key), int) and not isinstance(value, bool)
    }
    return Architecture(model_type if isinstance(model_type, str) else "", fields, source)


def check_same_base(base: str | Path, tuned: str | Path, allow_different: bool = False) -> None:
    """Refuse a TUNED whose config describes another architecture than BASE's.

    Args:
        base: Base checkpoint path (local: a resolved repo id).
        tuned: Tuned checkpoint path (not an adapter directory: those are checked against the base's weights).
        allow_different: Only log the difference (`--allow-different-base`).

    Raises:
        PairingError: one line naming both architectures and the option that overrides the check.
    """
    base_arch, tuned_arch = read_architecture(base), read_architecture(tuned)
    if base_arch is None or tuned_arch is None:
        return
    differences = base_arch.differences(tuned_arch)
    if not differences:
        base_vocab, tuned_vocab = base_arch.fields.get(VOCAB), tuned_arch.fields.get(VOCAB)
        if base_vocab and tuned_vocab and base_vocab != tuned_vocab:
            log.warning("%s: vocabulary of %d tokens, base %s has %d", tuned, tuned_vocab, base, base_vocab)
        return
    message = (
        f"base {base} is {base_arch.summary()}, tuned {tuned} is {tuned_arch.summary()}: not the same base "
        f"model ({', '.join(differences)})"
    )
    if allow_different:
        log.warning("%s; compared anyway (%s)", message, ALLOW_OPTION)
        return
    raise PairingError(f"{message}; pass {ALLOW_OPTION} to compare anyway")
