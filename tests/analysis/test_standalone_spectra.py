"""Adapters that change no weight, analysed alone (`spectrum(ADAPTER_DIR, ADAPTER_DIR)`): the σ of a prompt-based
adapter's virtual-token matrix and of a bottleneck adapter's down, up and up·down equal NumPy's SVD of the saved
tensors; a prefix's per-layer key/value blocks equal the key/value prefixes peft's own `get_prompt` feeds each
layer. Real peft adapters and deltarank bottleneck adapters on the tiny Llama (hidden 32, 2 layers, 2 KV heads)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deltarank.analysis.engine import spectrum
from deltarank.errors import DeltarankError
from tests.conftest import build_tiny_llama

SIGMA_TOL = 1e-5  # max |σ − σ_ref| relative to σ₁
PROMPTS = [
    ("PromptTuningConfig", {"num_virtual_tokens": 6}, (6, 32)),
    ("PrefixTuningConfig", {"num_virtual_tokens": 6}, (6, 2 * 2 * 16)),
    (
        "PrefixTuningConfig",
        {"num_virtual_tokens": 6, "prefix_projection": True, "encoder_hidden_size": 8},
        (6, 64),
    ),
    ("PromptEncoderConfig", {"num_virtual_tokens": 6, "encoder_hidden_size": 16}, (6, 32)),
]


def _peft_prompt(config_name: str, kwargs: dict[str, Any], out: Path) -> Any:
    import peft

    config = getattr(peft, config_name)(task_type="CAUSAL_LM", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(build_tiny_llama(), config)
    model.save_pretrained(str(out))
    return model


def _close(observed: tuple[float, ...], matrix: np.ndarray) -> bool:
    expected = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
    return float(np.max(np.abs(np.asarray(observed) - expected))) <= SIGMA_TOL * float(expected[0])


@pytest.mark.parametrize(("config_name", "kwargs", "shape"), PROMPTS)
def test_virtual_token_matrix_spectrum(
    tmp_path: Path, config_name: str, kwargs: dict[str, Any], shape: tuple[int, int]
) -> None:
    _peft_prompt(config_name, kwargs, tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))["prompt_embeddings"].numpy()
    assert saved.shape == shape
    result = spectrum(tmp_path / "adapter", tmp_path / "adapter", device="cpu", precision="float64")
    whole = result.matrices[0]
    assert (whole.name, whole.kind, whole.module, whole.layer) == (
        "prompt_embeddings",
        "virtual_tokens",
        "virtual_tokens",
        None,
    )
    assert whole.shape == shape and whole.base_norm is None and whole.lora_rank is None
    assert _close(whole.singular_values, saved)
    assert whole.ranks["noise_floor"] == whole.ranks["numerical"] == min(shape)  # no storage-noise claim
    assert result.warnings() and "not deltas" in result.warnings()[0]


def test_prefix_blocks_are_the_key_and_value_prefixes_of_each_layer(tmp_path: Path) -> None:
    model = _peft_prompt("PrefixTuningConfig", {"num_virtual_tokens": 6}, tmp_path / "adapter")
    with torch.no_grad():
        cache = model.get_prompt(batch_size=1)  # what peft feeds the layers: keys (1, kv_heads, n, head_dim)
    result = spectrum(tmp_path / "adapter", tmp_path / "adapter", device="cpu", precision="float64")
    records = {m.name: m for m in result.matrices}
    assert len(records) == 1 + 2 * 2
    for layer, cached in enumerate(cache.layers):
        for side, tensor in (("key", cached.keys), ("value", cached.values)):
            record = records[f"prompt_embeddings.layers.{layer}.{side}"]
            block = tensor[0].permute(1, 0, 2).reshape(6, -1).numpy()  # (n, kv_heads·head_dim)
            assert (record.layer, record.module, record.shape) == (layer, side, (6, 16))
            assert _close(record.singular_values, block)


@pytest.fixture
def bottleneck_dir(tmp_path: Path) -> Path:
    """A deltarank bottleneck adapter (size 4) with seeded non-zero weights, saved as train saves it."""
    from deltarank.train.bottleneck import BottleneckConfig, add_adapters

    model = add_adapters(build_tiny_llama(), BottleneckConfig(size=4))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "bottleneck_adapter" in name:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(tmp_path / "bottleneck")
    return tmp_path / "bottleneck"


def test_bottleneck_projections_and_product(bottleneck_dir: Path) -> None:
    saved = load_file(str(bottleneck_dir / "bottleneck_adapter.safetensors"))
    result = spectrum(bottleneck_dir, bottleneck_dir, device="cpu", precision="float64")
    records = {m.name: m for m in result.matrices}
    assert len(records) == 2 * 2 * 3  # 2 layers × (attention, MLP) × (down, up, product)
    for block in ("self_attn", "mlp"):
        for layer in range(2):
            prefix = f"model.layers.{layer}.{block}.bottleneck_adapter"
            down, up = saved[f"{prefix}.down.weight"].numpy(), saved[f"{prefix}.up.weight"].numpy()
            for side, matrix in (("down", down), ("up", up)):
                record = records[f"{prefix}.{side}.weight"]
                assert (record.kind, record.module, record.layer) == (
                    f"bottleneck_{side}",
                    f"{block}.{side}",
                    layer,
                )
                assert _close(record.singular_values, matrix)
            product = records[f"{prefix}.product"]
            assert (product.kind, product.shape, product.rank_bound) == ("bottleneck_product", (32, 32), 4)
            assert _close(product.singular_values, up.astype(np.float64) @ down.astype(np.float64))
            assert product.ranks["numerical"] == 4


def test_bottleneck_beside_a_base_is_read_and_the_base_left_aside(
    bottleneck_dir: Path, tiny_model_dir: Path
) -> None:
    alone = spectrum(bottleneck_dir, bottleneck_dir, device="cpu")
    beside = spectrum(tiny_model_dir, bottleneck_dir, device="cpu")
    assert [m.singular_values for m in beside.matrices] == [m.singular_values for m in alone.matrices]
    assert beside.warnings()[0] == (
        f"BASE {tiny_model_dir} is not needed: the adapter changes no base weight (it was not read)"
    )
    assert not any("is not needed" in line for line in alone.warnings())


def test_include_selects_among_the_adapter_matrices(bottleneck_dir: Path) -> None:
    result = spectrum(bottleneck_dir, bottleneck_dir, device="cpu", include=r"layers\.0\.mlp")
    assert sorted(m.kind for m in result.matrices) == [
        "bottleneck_down",
        "bottleneck_product",
        "bottleneck_up",
    ]
    with pytest.raises(DeltarankError, match=r"no matrix of .* is selected"):
        spectrum(bottleneck_dir, bottleneck_dir, device="cpu", include="nothing_matches")


def test_tools_other_than_spectrum_refuse_an_adapter_without_delta(
    bottleneck_dir: Path, tiny_model_dir: Path
) -> None:
    from deltarank.analysis.tools.intruders import intruders

    with pytest.raises(DeltarankError, match="has no ΔW for this command"):
        intruders(tiny_model_dir, bottleneck_dir, device="cpu")
