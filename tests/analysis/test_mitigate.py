"""Intruder mitigation: a planted intruder's σ scaled by exactly λ, and LoRA adapters as peft's own function."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora.intruders import reduce_intruder_dimension
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from deltarank.analysis.tools.mitigate import lora_factors, mitigate, mitigated_weight
from deltarank.errors import DeltarankError, OptionError
from tests.analysis.subspace_models import save_lora, save_tuned
from tests.conftest import build_tiny_llama

UP_PROJ = "model.layers.0.mlp.up_proj.weight"  # (64, 32): W₀'s 32 left vectors leave room for an intruder
SIGMA_TOL = 1e-5


def planted_intruder(base: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """W₀ + c·x yᵀ with x a unit vector orthogonal to W₀'s column space and c far above ‖W₀‖₂: W'’s top
    direction is ≈ x, with |cos| ≈ 0 against every left singular vector of W₀."""
    generator = torch.Generator().manual_seed(3)
    w = base.double()
    u = torch.linalg.svd(w, full_matrices=False)[0]
    x = torch.randn(w.shape[0], generator=generator, dtype=torch.float64)
    x = x - u @ (u.T @ x)
    y = torch.randn(w.shape[1], generator=generator, dtype=torch.float64)
    return w + scale * torch.outer(x / x.norm(), y / y.norm())


def test_planted_intruder_scaled_by_lambda(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    tuned = save_tuned(tiny_model_dir, tmp_path / "tuned", {UP_PROJ: planted_intruder(base[UP_PROJ])})
    out = tmp_path / "mitigated"
    result = mitigate(tiny_model_dir, tuned, out, lam=0.3, device="cpu")
    counts = {m.name: m.count for m in result.matrices}
    assert counts.pop(UP_PROJ) == 1 and set(counts.values()) == {0}
    written, before = load_file(str(out / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    assert written.keys() == before.keys()
    for name, tensor in before.items():  # every other tensor is copied unchanged
        if name != UP_PROJ:
            assert torch.equal(written[name], tensor) and written[name].dtype == tensor.dtype
    sigma_before = torch.linalg.svdvals(before[UP_PROJ].double())
    sigma_after = torch.linalg.svdvals(written[UP_PROJ].double())
    expected = torch.cat([sigma_before[:1] * 0.3, sigma_before[1:]]).sort(descending=True).values
    assert torch.allclose(sigma_after, expected, atol=SIGMA_TOL * sigma_before[0].item())
    assert written[UP_PROJ].dtype == torch.float32
    model = AutoModelForCausalLM.from_pretrained(out)  # a loadable checkpoint, config copied
    assert torch.equal(model.state_dict()[UP_PROJ], written[UP_PROJ])


def test_mitigated_weight_scales_only_intruders() -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(40, 16, generator=generator, dtype=torch.float64)
    merged = planted_intruder(base, scale=50.0)
    result = mitigated_weight(base, merged, top_k=10, epsilon=0.5, lam=0.0)
    assert result.intruders == (0,) and result.max_cos[0] < 0.1
    sigma = torch.linalg.svdvals(result.weight)
    assert torch.allclose(sigma[:-1], torch.linalg.svdvals(merged)[1:], atol=1e-9)  # σ₁ removed
    unchanged = mitigated_weight(base, merged, top_k=10, epsilon=0.5, lam=1.0)
    assert torch.allclose(unchanged.weight, merged, atol=1e-9)


def test_lora_factors_share_sigma() -> None:
    delta = torch.randn(12, 8, dtype=torch.float64)
    b, a = lora_factors(delta, 8)
    assert b.shape == (12, 8) and a.shape == (8, 8)
    assert torch.allclose(b @ a, delta, atol=1e-10)
    assert torch.allclose(b.norm(dim=0), a.norm(dim=1), atol=1e-10)


@pytest.mark.parametrize(
    ("epsilon", "lam", "rslora"), [(0.9, 0.5, False), (0.6, 0.0, True), (0.3, 0.25, False)]
)
def test_lora_matches_peft(
    tiny_model_dir: Path, tmp_path: Path, epsilon: float, lam: float, rslora: bool
) -> None:
    adapter = save_lora(tmp_path / "lora", rank=4, alpha=16.0, use_rslora=rslora)
    ours = mitigate(
        tiny_model_dir, adapter, tmp_path / "out", lam=lam, top_k=10, epsilon=epsilon, device="cpu"
    )
    assert ours.total() > 0  # intruders exist, so the comparison can fail

    peft_model = PeftModel.from_pretrained(build_tiny_llama(), adapter)
    reduce_intruder_dimension(
        peft_model, top_k=10, threshold_epsilon=epsilon, mitigation_lambda=lam, logging_sink=None
    )
    expected = peft_model.merge_and_unload().state_dict()
    got = PeftModel.from_pretrained(build_tiny_llama(), tmp_path / "out").merge_and_unload().state_dict()
    plain = PeftModel.from_pretrained(build_tiny_llama(), adapter).merge_and_unload().state_dict()
    assert expected.keys() == got.keys()
    for name, weight in expected.items():
        assert torch.allclose(got[name], weight, atol=1e-5, rtol=0), name
    assert any(not torch.allclose(plain[n], expected[n], atol=1e-3) for n in expected)  # mitigation did act
    before = load_file(str(adapter / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    for m in ours.matrices:  # a module without an intruder keeps its factors exactly, as peft's copy does
        module = f"base_model.model.{m.name.removesuffix('.weight')}"
        same = all(
            torch.equal(before[f"{module}.lora_{x}.weight"], after[f"{module}.lora_{x}.weight"]) for x in "AB"
        )
        assert same == (m.count == 0), m.name


def test_dora_refused_without_merging_nothing_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = save_lora(tmp_path / "dora", use_dora=True)
    with pytest.raises(DeltarankError, match="only dense checkpoints and PEFT LoRA adapters"):
        mitigate(tiny_model_dir, adapter, tmp_path / "out", device="cpu", merge_adapters=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def ia3_adapter(out_dir: Path, seed: int = 2) -> Path:
    """A real peft IA3 adapter of the tiny Llama: k_proj, v_proj (rows scaled) and down_proj (columns scaled),
    its scales moved off 1."""
    from peft import IA3Config, get_peft_model

    config = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    model = get_peft_model(build_tiny_llama(), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_l" in name:
                param.copy_(1.0 + 0.5 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(out_dir)
    return out_dir


@pytest.mark.parametrize("kind", ["dora", "ia3"])
def test_other_adapters_are_written_merged_and_mitigated(
    tiny_model_dir: Path, tmp_path: Path, kind: str
) -> None:
    """An adapter whose own form cannot hold a rescaled direction is written as BASE with each adapted weight
    replaced by W_merged with its intruders' σ scaled by λ: peft's fp32 merge is the oracle of W_merged, and the
    tool's W' equals `mitigated_weight` of it; every other tensor is BASE's, and the checkpoint loads."""
    adapter = save_lora(tmp_path / "dora", use_dora=True) if kind == "dora" else ia3_adapter(tmp_path / "ia3")
    out, lam, top_k, epsilon = tmp_path / "out", 0.5, 10, 0.9
    result = mitigate(tiny_model_dir, adapter, out, lam=lam, top_k=top_k, epsilon=epsilon, device="cpu")
    counts = {m.name: m.count for m in result.matrices}
    assert sum(counts.values()) > 0  # intruders exist, so the comparison can fail
    merged = PeftModel.from_pretrained(build_tiny_llama(), adapter).merge_and_unload().state_dict()
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    written = load_file(str(out / "model.safetensors"))
    assert written.keys() == base.keys() and not (out / "adapter_config.json").exists()
    acted = False
    for name, tensor in base.items():
        if name not in counts:  # not adapted: BASE's tensor, unchanged
            assert torch.equal(written[name], tensor), name
            continue
        expected = mitigated_weight(tensor.double(), merged[name].double(), top_k, epsilon, lam).weight
        assert torch.allclose(written[name].double(), expected, atol=1e-4, rtol=0), name
        acted |= not torch.allclose(written[name], merged[name], atol=1e-3)
        assert written[name].dtype == tensor.dtype
    assert acted  # the mitigation changed the merged weights somewhere
    model = AutoModelForCausalLM.from_pretrained(out)  # a loadable checkpoint: BASE's config copied
    assert torch.equal(model.state_dict()[next(iter(counts))], written[next(iter(counts))])


def test_an_adapter_with_tensors_outside_its_delta_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """modules_to_save copies are trained weights a merge into BASE would drop: refused, nothing written."""
    adapter = save_lora(tmp_path / "dora", use_dora=True, modules_to_save=["lm_head"])
    with pytest.raises(DeltarankError, match="tensors outside its ΔW"):
        mitigate(tiny_model_dir, adapter, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf")])
def test_bad_lambda(tiny_model_dir: Path, tmp_path: Path, lam: float) -> None:
    with pytest.raises(OptionError, match="λ"):
        mitigate(tiny_model_dir, tiny_model_dir, tmp_path / "out", lam=lam)
    assert not (tmp_path / "out").exists()
