"""CUDA smoke test: the batched GPU path gives the CPU's spectra (runs only where CUDA exists)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import deltarank
from deltarank.analysis.engine import measure as measure_module
from tests.planting import by_name, planted_delta, save_safetensors

pytestmark = pytest.mark.gpu

SHAPE = (64, 48)
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
LAYERS = 3  # 12 deltas of one shape: the GPU path stacks them into batched decompositions
COUNT_RANKS = ("energy_50", "energy_90", "energy_99", "numerical", "noise_floor")


def _planted_pair(directory: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """float32 base and tuned safetensors whose deltas have planted σ (rank 2 to 5, distinct per matrix)."""
    generator = torch.Generator().manual_seed(0)
    base, tuned, planted = {}, {}, {}
    for layer in range(LAYERS):
        for i, module in enumerate(MODULES):
            name = f"model.layers.{layer}.self_attn.{module}.weight"
            sigma = np.geomspace(1.0, 0.05, 2 + (layer + i) % 4) * (1 + layer + i)
            weight = torch.randn(SHAPE, generator=generator, dtype=torch.float64) * 0.02
            base[name] = weight.float()
            tuned[name] = (weight + planted_delta(SHAPE, sigma, seed=10 * layer + i)).float()
            planted[name] = sigma
    return (
        save_safetensors(directory / "base.safetensors", base),
        save_safetensors(directory / "tuned.safetensors", tuned),
        planted,
    )


def test_cuda_batched_path_gives_the_cpu_spectra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, tuned, planted = _planted_pair(tmp_path)
    cpu = by_name(deltarank.spectrum(base, tuned, device="cpu", precision="float32"))

    stacked: list[tuple[int, ...]] = []
    real = measure_module.singular_values

    def spy(delta: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if delta.dim() == 3:
            assert delta.device.type == "cuda"
            stacked.append(tuple(delta.shape))
        return real(delta, *args, **kwargs)

    monkeypatch.setattr(measure_module, "singular_values", spy)
    result = deltarank.spectrum(base, tuned, device="cuda", precision="float32")
    assert result.device.startswith("cuda")
    cuda = by_name(result)

    assert stacked and all(batch[0] >= 2 and batch[1:] == SHAPE for batch in stacked), stacked
    assert sum(batch[0] for batch in stacked) == len(planted)  # every delta went through a batched call
    assert set(cuda) == set(cpu) == set(planted)
    for name, sigma in planted.items():
        on_cpu, on_gpu = np.asarray(cpu[name].singular_values), np.asarray(cuda[name].singular_values)
        top = on_cpu[0]
        np.testing.assert_allclose(on_gpu, on_cpu, rtol=0, atol=1e-5 * top, err_msg=name)
        np.testing.assert_allclose(on_gpu[: sigma.size], sigma, rtol=0, atol=1e-5 * top, err_msg=name)
        assert {k: cuda[name].ranks[k] for k in COUNT_RANKS} == {k: cpu[name].ranks[k] for k in COUNT_RANKS}
        assert cuda[name].ranks["noise_floor"] == sigma.size, name
        # ‖ΔW‖ is √Σσ², and the σ agree to 1e-5·σ₁ (above): on an H200 the norms differed by 3.6e-6 relative
        assert cuda[name].delta_norm == pytest.approx(cpu[name].delta_norm, rel=1e-5)
