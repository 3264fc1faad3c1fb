"""Every weight-modifying peft method: deltarank's σ of ΔW, formed from the saved adapter tensors, against the
oracle σ of peft's own merge (the adapter loaded back from disk, merged in float64) minus the base weights.

Each adapter is built on the tiny Llama with non-trivial weights (peft's random init or a seeded perturbation of
every adapter parameter), saved with `save_pretrained` (safetensors) and analysed with
`deltarank.spectrum(base, adapter, device="cpu", precision="float64")`. Pass: max |σ − σ_ref| ≤ 1e-5·σ₁ on every
target matrix, and the recorded kind and structural rank bound.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from deltarank.analysis.engine import spectrum
from deltarank.analysis.results import MatrixSpectrum
from deltarank.errors import InputError
from tests.conftest import build_tiny_llama, take_sgd_steps

SIGMA_TOL = 1e-5  # max |σ − σ_ref| relative to σ₁
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FEEDFORWARD = ["gate_proj", "up_proj", "down_proj"]
PEFT_PREFIX = "base_model.model."
ADAPTER_PARAMS = ("lora_", "ia3_l", "hada_", "lokr_", "oft_R", "boft_", "vera_lambda")


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move every trainable adapter parameter off its (often identity) init, with a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not any(marker in name for marker in ADAPTER_PARAMS):
                continue
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if "ia3_l" in name or "boft_s" in name or "magnitude" in name:
                param.mul_(1.0 + 0.3 * noise)  # scales around 1
            elif "lora_E" in name:
                param.copy_(noise)  # AdaLoRA's E starts at 0
            else:
                param.add_(0.1 * noise)


def _build(config: Any, out: Path, seed: int = 0, before_save: Callable[[Any], None] | None = None) -> None:
    """Wrap a fresh tiny Llama with `config`, perturb its adapter and save it to `out`."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(build_tiny_llama(), config)
    _perturb(model, seed + 1)
    if before_save is not None:
        before_save(model)
    model.save_pretrained(str(out))


def _reference(adapter: Path) -> dict[str, np.ndarray]:
    """σ of (peft's merge − base) per changed weight: the adapter loaded back from disk, merged in float64."""
    from peft import PeftModel

    base = build_tiny_llama().double()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(build_tiny_llama(), str(adapter)).double()
        merged = model.merge_and_unload().state_dict()
    return {
        name: torch.linalg.svdvals(merged[name] - before[name]).numpy()
        for name in before
        if name.endswith(".weight")
        and merged[name].dim() == 2
        and not torch.equal(merged[name], before[name])
    }


def _check(base: Path, adapter: Path, kind: str) -> dict[str, MatrixSpectrum]:
    """Every adapted matrix: σ within SIGMA_TOL·σ₁ of the oracle; returns the records."""
    reference = _reference(adapter)
    result = spectrum(base, adapter, device="cpu", precision="float64")
    records = {m.name: m for m in result.matrices}
    assert sorted(records) == sorted(reference) and records
    for name, expected in reference.items():
        record = records[name]
        observed = np.asarray(record.singular_values)
        assert record.kind == kind and observed.shape == expected.shape
        error = float(np.max(np.abs(observed - expected))) / float(expected[0])
        assert error <= SIGMA_TOL, (name, error)
        if record.rank_bound is not None:
            assert int(np.sum(expected > 1e-10 * expected[0])) <= record.rank_bound
    return records


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("llama") / "base"
    build_tiny_llama().save_pretrained(out)
    return out


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        ({}, "lora"),
        ({"use_rslora": True, "rank_pattern": {"down_proj": 2}, "alpha_pattern": {"v_proj": 3}}, "lora"),
        ({"use_dora": True}, "dora"),
    ],
    ids=["lora", "rslora-patterns", "dora"],
)
def test_lora_family_matches_peft_merge(
    llama_base: Path, tmp_path: Path, settings: dict[str, Any], kind: str
) -> None:
    from peft import LoraConfig

    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, **settings)
    _build(config, tmp_path / "adapter")
    records = _check(llama_base, tmp_path / "adapter", kind)
    q = records["model.layers.0.self_attn.q_proj.weight"]
    assert q.lora_rank == 4 and q.rank_bound == (4 if kind == "lora" else None)


def test_ia3_matches_peft_merge(llama_base: Path, tmp_path: Path) -> None:
    from peft import IA3Config

    _build(IA3Config(target_modules=TARGETS, feedforward_modules=FEEDFORWARD), tmp_path / "adapter")
    records = _check(llama_base, tmp_path / "adapter", "ia3")
    down, q = (
        records["model.layers.0.mlp.down_proj.weight"],
        records["model.layers.0.self_attn.q_proj.weight"],
    )
    assert down.rank_bound == 32 and q.rank_bound == 32  # every input column / output row rescaled
    assert down.base_norm is not None and down.lora_rank is None


@pytest.mark.parametrize(
    "settings",
    [{}, {"rank_pattern": {"down_proj": 2}, "alpha_pattern": {"v_proj": 3}}, {"r": 8}],
    ids=["r4", "patterns", "r8-dense"],
)
def test_loha_matches_peft_merge(llama_base: Path, tmp_path: Path, settings: dict[str, Any]) -> None:
    from peft import LoHaConfig

    config = LoHaConfig(**{"r": 4, "alpha": 8, "target_modules": TARGETS, "init_weights": False, **settings})
    _build(config, tmp_path / "adapter")
    records = _check(llama_base, tmp_path / "adapter", "loha")
    r = settings.get("r", 4)
    assert records["model.layers.0.self_attn.q_proj.weight"].rank_bound == min(r * r, 32)
    if "rank_pattern" in settings:
        assert records["model.layers.1.mlp.down_proj.weight"].rank_bound == 4


@pytest.mark.parametrize(
    "settings",
    [{"r": 2}, {"r": 8}, {"r": 1, "decompose_both": True, "decompose_factor": 4}],
    ids=["w2-factored", "w2-full", "both-factored"],
)
def test_lokr_matches_peft_merge(llama_base: Path, tmp_path: Path, settings: dict[str, Any]) -> None:
    from peft import LoKrConfig

    config = LoKrConfig(**{"alpha": 4, "target_modules": TARGETS, "init_weights": False, **settings})
    _build(config, tmp_path / "adapter")
    records = _check(llama_base, tmp_path / "adapter", "lokr")
    q = records["model.layers.0.self_attn.q_proj.weight"]
    assert q.rank_bound is not None and q.lora_rank == settings["r"]


def _adalora_pattern(model: Any) -> None:
    """A rank pattern as AdaLoRA's allocator leaves it: q_proj of layer 0 keeps 2 of 6, k_proj of layer 1 none."""
    pattern = {}
    for name, param in model.named_parameters():
        if name.endswith("lora_E.default"):
            key = name.removeprefix(PEFT_PREFIX)
            keep = [True] * param.shape[0]
            if "layers.0.self_attn.q_proj" in key:
                keep = [True, False, False, True, False, False]
            elif "layers.1.self_attn.k_proj" in key:
                keep = [False] * param.shape[0]
            pattern[key] = keep
    model.peft_config["default"].rank_pattern = pattern


def test_adalora_with_a_rank_pattern_matches_peft_merge(llama_base: Path, tmp_path: Path) -> None:
    from peft import AdaLoraConfig

    config = AdaLoraConfig(init_r=6, target_r=4, total_step=10, lora_alpha=8, target_modules=TARGETS)
    _build(config, tmp_path / "adapter", before_save=_adalora_pattern)
    records = {m.name: m for m in spectrum(llama_base, tmp_path / "adapter", device="cpu").matrices}
    pruned = records.pop("model.layers.1.self_attn.k_proj.weight")
    assert pruned.delta_norm == 0 and pruned.rank_bound == 0  # no direction kept: ΔW = 0, not merged by peft
    checked = _check_subset(llama_base, tmp_path / "adapter", "adalora", set(records))
    assert checked["model.layers.0.self_attn.q_proj.weight"].rank_bound == 2
    assert checked["model.layers.0.self_attn.v_proj.weight"].lora_rank == 6


def _check_subset(base: Path, adapter: Path, kind: str, names: set[str]) -> dict[str, MatrixSpectrum]:
    """`_check` where some adapted matrices have ΔW = 0 (the oracle lists only the changed ones)."""
    reference = _reference(adapter)
    records = {m.name: m for m in spectrum(base, adapter, device="cpu", precision="float64").matrices}
    assert set(reference) == names
    for name, expected in reference.items():
        observed = np.asarray(records[name].singular_values)
        assert records[name].kind == kind
        assert float(np.max(np.abs(observed - expected))) <= SIGMA_TOL * float(expected[0])
    return records


@pytest.mark.parametrize(
    "settings",
    [
        {},  # peft's default: Cayley–Neumann series, 5 terms
        {"num_cayley_neumann_terms": 3},
        {"use_cayley_neumann": False},  # exact Cayley transform
        {"coft": True, "eps": 1e-2},
        {"block_share": True},
    ],
    ids=["neumann5", "neumann3", "exact-cayley", "coft", "block-share"],
)
def test_oft_matches_peft_merge(llama_base: Path, tmp_path: Path, settings: dict[str, Any]) -> None:
    from peft import OFTConfig

    config = OFTConfig(r=0, oft_block_size=8, target_modules=TARGETS, init_weights=False, **settings)
    _build(config, tmp_path / "adapter")
    records = _check(llama_base, tmp_path / "adapter", "oft")
    assert records["model.layers.0.self_attn.q_proj.weight"].rank_bound is None


@pytest.mark.parametrize(
    "settings", [{"boft_block_size": 4}, {"boft_block_size": 0, "boft_block_num": 2}], ids=["size4", "num2"]
)
def test_boft_matches_peft_merge(llama_base: Path, tmp_path: Path, settings: dict[str, Any]) -> None:
    from peft import BOFTConfig

    config = BOFTConfig(target_modules=TARGETS, init_weights=False, **settings)
    _build(config, tmp_path / "adapter")
    _check(llama_base, tmp_path / "adapter", "boft")


class TorchBlockDiag:
    """peft's `fbd_cuda` extension (BOFT's block diagonal of every butterfly factor, (N, D, H, H) -> (N, D·H, D·H))
    in plain torch: without it peft builds one butterfly factor only, so the CPU cannot build or merge more."""

    @staticmethod
    def forward(blocks: torch.Tensor) -> list[torch.Tensor]:
        return [torch.stack([torch.block_diag(*torch.unbind(factor)) for factor in blocks])]


@pytest.mark.parametrize("factors", [2, 3])
def test_boft_butterfly_factors_match_peft_merge(
    llama_base: Path, tmp_path: Path, factors: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boft_n_butterfly_factor > 1 (N factors, each permuted by peft's butterfly permutation) against peft's own
    merge, its CUDA block-diagonal kernel replaced by the torch equivalent."""
    import peft.tuners.boft.layer as boft_layer
    from peft import BOFTConfig

    monkeypatch.setattr(boft_layer, "_FBD_CUDA", TorchBlockDiag())
    config = BOFTConfig(
        boft_block_size=4, boft_n_butterfly_factor=factors, target_modules=TARGETS, init_weights=False
    )
    _build(config, tmp_path / "adapter")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as saved:
        shapes = {saved.get_slice(k).get_shape()[0] for k in saved.keys() if k.endswith("boft_R")}  # noqa: SIM118
    assert shapes == {factors}
    _check(llama_base, tmp_path / "adapter", "boft")


def test_butterfly_permutation_is_peft_block_butterfly_perm() -> None:
    from peft.tuners.boft.layer import BOFTLayer

    from deltarank.analysis.maths.rotations import butterfly_permutation

    for n, blocks, half, butterfly in [
        (32, 8, 2, 1),
        (32, 4, 2, 2),
        (64, 8, 4, 1),
        (64, 2, 4, 3),
        (16, 4, 2, 0),
    ]:
        expected = BOFTLayer.block_butterfly_perm(None, n, blocks, half, butterfly)  # type: ignore[arg-type]
        assert torch.equal(butterfly_permutation(n, blocks, half, butterfly), expected)


def test_vera_matches_peft_merge(llama_base: Path, tmp_path: Path) -> None:
    from peft import VeraConfig

    _build(VeraConfig(r=4, target_modules=TARGETS), tmp_path / "adapter")
    records = _check(llama_base, tmp_path / "adapter", "vera")
    k = records[
        "model.layers.0.self_attn.k_proj.weight"
    ]  # (16, 32): slices of the (64-wide) shared projections
    assert (k.rank_bound, k.lora_rank) == (4, 4)


def test_vera_without_saved_projections_is_refused(llama_base: Path, tmp_path: Path) -> None:
    from peft import VeraConfig

    _build(VeraConfig(r=4, target_modules=["q_proj"], save_projection=False), tmp_path / "adapter")
    with pytest.raises(InputError, match="save_projection is false"):
        spectrum(llama_base, tmp_path / "adapter", device="cpu")


@pytest.mark.parametrize(
    ("config_name", "kwargs"),
    [
        ("PromptTuningConfig", {"num_virtual_tokens": 4}),
        ("PrefixTuningConfig", {"num_virtual_tokens": 4}),
        ("PromptEncoderConfig", {"num_virtual_tokens": 4, "encoder_hidden_size": 16}),
    ],
)
def test_prompt_methods_change_no_weight(
    llama_base: Path, tmp_path: Path, config_name: str, kwargs: dict[str, Any]
) -> None:
    import peft

    config = getattr(peft, config_name)(task_type="CAUSAL_LM", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft.get_peft_model(build_tiny_llama(), config).save_pretrained(str(tmp_path / "adapter"))
    with pytest.raises(InputError, match=r"PEFT type '\w+' changes no weight"):
        spectrum(llama_base, tmp_path / "adapter", device="cpu")


def test_qlora_adapter_against_the_dequantized_nf4_base(tmp_path: Path) -> None:
    """QLoRA: LoRA trained (two steps) on an NF4 double-quantized base saves ordinary fp32 factors; its ΔW is
    measured against the dequantized base, and equals peft's fp32 merge onto that base minus it."""
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (dev extra)")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    build_tiny_llama().save_pretrained(tmp_path / "full")
    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)

    def quantized() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return LlamaForCausalLM.from_pretrained(
                tmp_path / "full", quantization_config=nf4, device_map="cpu"
            )

    dequantized = quantized().dequantize()
    dequantized.save_pretrained(tmp_path / "base")
    torch.manual_seed(0)
    model = get_peft_model(
        prepare_model_for_kbit_training(quantized()),
        LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False),
    )
    take_sgd_steps(model)
    model.save_pretrained(str(tmp_path / "adapter"))

    from peft import PeftModel

    base_state = {
        k: v.double() for k, v in LlamaForCausalLM.from_pretrained(tmp_path / "base").state_dict().items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = PeftModel.from_pretrained(
            LlamaForCausalLM.from_pretrained(tmp_path / "base"), str(tmp_path / "adapter")
        )
        merged_state = merged.double().merge_and_unload().state_dict()
    result = spectrum(tmp_path / "base", tmp_path / "adapter", device="cpu", precision="float64")
    assert len(result.matrices) == 2 * len(TARGETS)
    for record in result.matrices:
        expected = torch.linalg.svdvals(merged_state[record.name] - base_state[record.name]).numpy()
        observed = np.asarray(record.singular_values)
        assert record.kind == "lora" and record.rank_bound == 4 and record.tuned_dtype == "F32"
        assert float(np.max(np.abs(observed - expected))) <= SIGMA_TOL * float(expected[0])


def test_kronecker_delta_svd_reconstructs_the_product() -> None:
    """The tools' thin SVD of a LoKr delta (U_A ⊗ U_B, σ_A ⊗ σ_B, V_A ⊗ V_B, sorted) is s·(A ⊗ B)."""
    from deltarank.analysis.maths.deltas import Delta
    from deltarank.analysis.maths.svd import delta_singular_values, delta_svd

    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(shape, generator=generator, dtype=torch.float64) for shape in ((4, 6), (5, 3)))
    delta = Delta(kind="lokr", norm=None, kron=(a, b), scale=-0.5)
    svd = delta_svd(delta)
    rebuilt = svd.u @ torch.diag(svd.s) @ svd.v.mT
    torch.testing.assert_close(rebuilt, -0.5 * torch.kron(a, b))
    assert torch.all(svd.s[:-1] >= svd.s[1:])
    torch.testing.assert_close(delta_singular_values(delta, "svd"), torch.linalg.svdvals(delta.dense()))
