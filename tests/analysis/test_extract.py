"""Low-rank extraction: the written adapter, loaded and merged by peft, is base + truncated ΔW."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from deltarank.analysis.maths.svd import DeltaSVD
from deltarank.analysis.tools import extract as extract_module
from deltarank.analysis.tools.extract import ExtractResult, choose_rank, extract, retained_energy, truncate
from deltarank.errors import DeltarankError, OutputError
from deltarank.io.adapter_writer import SafetensorsWriter, adapter_config
from tests.analysis.subspace_models import merged_dir, save_lora, save_tuned
from tests.conftest import build_tiny_llama

MERGE_TOL = 1e-5  # the bar: peft's merge vs base + truncated ΔW
BLOCK_WEIGHT = r"^model\.layers\.\d+\..*_proj\.weight$"


def save_full(model_dir: Path, out_dir: Path, scale: float = 0.01, seed: int = 5) -> Path:
    """A 'fully fine-tuned' copy: every block projection gets a dense Gaussian ΔW."""
    generator = torch.Generator().manual_seed(seed)
    tensors = load_file(str(model_dir / "model.safetensors"))
    deltas = {
        name: w + scale * torch.randn(w.shape, generator=generator)
        for name, w in tensors.items()
        if "_proj" in name and "layers" in name
    }
    return save_tuned(model_dir, out_dir, deltas)


def truncated(delta: torch.Tensor, k: int) -> torch.Tensor:
    """U_k Σ_k V_kᵀ in float64 (the reference, independent of deltarank)."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k]


def peft_merged(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """Weights of the tiny base with the adapter loaded and merged by peft."""
    model = PeftModel.from_pretrained(build_tiny_llama(), adapter_dir).merge_and_unload()
    return {k: v.detach() for k, v in model.state_dict().items()}


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_truncate_and_energy() -> None:
    u, s, vh = torch.linalg.svd(torch.randn(12, 9, dtype=torch.float64), full_matrices=False)
    v = vh.mT
    b, a = truncate(DeltaSVD(u, s, v, "dense"), 3)
    assert b.shape == (12, 3) and a.shape == (3, 9)
    assert b @ a == pytest.approx((u[:, :3] * s[:3]) @ v[:, :3].T, abs=1e-12)
    assert retained_energy([3.0, 1.0, 1.0, 1.0], 1) == pytest.approx(0.75)
    assert retained_energy([0.0, 0.0], 1) == 0.0
    assert choose_rank([3.0, 1.0, 1.0, 1.0], None, 0.75) == 1
    assert choose_rank([3.0, 1.0, 1.0, 1.0], None, 0.76) == 2
    assert choose_rank([3.0, 1.0], 16, None) == 2


@pytest.mark.parametrize("rank", [3, 64])
def test_peft_merge_reproduces_truncation(tiny_model_dir: Path, tmp_path: Path, rank: int) -> None:
    full = save_full(tiny_model_dir, tmp_path / "full")
    result = extract(tiny_model_dir, full, tmp_path / "adapter", rank=rank, device="cpu")
    merged, base, tuned = peft_merged(tmp_path / "adapter"), weights(tiny_model_dir), weights(full)
    assert len(result.matrices) == 14
    for m in result.matrices:
        assert m.rank == min(rank, *m.shape)
        expected = base[m.name].double() + truncated(tuned[m.name] - base[m.name], m.rank)
        assert merged[m.name].double() == pytest.approx(expected, abs=MERGE_TOL)
        if rank == 64:  # full rank: the tuned weights themselves
            assert merged[m.name] == pytest.approx(tuned[m.name], abs=MERGE_TOL)
            assert m.retained_energy == pytest.approx(1.0)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_alpha"] == config["r"]
    assert config["base_model_name_or_path"] == str(tiny_model_dir)


def test_energy_picks_per_matrix_ranks(tiny_model_dir: Path, tmp_path: Path) -> None:
    full = save_full(tiny_model_dir, tmp_path / "full")
    result = extract(tiny_model_dir, full, tmp_path / "adapter", energy=0.5, device="cpu")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    ranks = result.ranks()
    assert len(set(ranks.values())) > 1 and config["rank_pattern"]
    assert config["alpha_pattern"] == config["rank_pattern"]  # scale α/r = 1 everywhere
    assert all(config["rank_pattern"].get(k, config["r"]) == r for k, r in ranks.items())
    model = PeftModel.from_pretrained(build_tiny_llama(), tmp_path / "adapter")
    loaded = {n: p.shape[0] for n, p in model.named_parameters() if "lora_A" in n}
    assert {
        n[len("base_model.model.") : -len(".lora_A.default.weight")]: r for n, r in loaded.items()
    } == ranks
    merged, base, tuned = model.merge_and_unload().state_dict(), weights(tiny_model_dir), weights(full)
    for m in result.matrices:
        assert m.retained_energy >= 0.5 and np.isclose(m.energy_curve()[m.rank - 1], m.retained_energy)
        assert m.rank == 1 or m.energy_curve()[m.rank - 2] < 0.5  # the smallest such k
        expected = base[m.name].double() + truncated(tuned[m.name] - base[m.name], m.rank)
        assert merged[m.name].double() == pytest.approx(expected, abs=MERGE_TOL)


def test_lora_tuned_reextracted_at_its_rank(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = save_lora(tmp_path / "lora", rank=4, alpha=8.0)
    result = extract(tiny_model_dir, adapter, tmp_path / "again", rank=4, device="cpu")
    assert {m.kind for m in result.matrices} == {"lora"} and result.r == 4
    assert all(m.retained_energy == pytest.approx(1.0) for m in result.matrices)
    reference = weights(merged_dir(tiny_model_dir, adapter, tmp_path / "merged"))
    merged = peft_merged(tmp_path / "again")
    for m in result.matrices:
        assert merged[m.name] == pytest.approx(reference[m.name], abs=MERGE_TOL)


def test_result_json_in_adapter_dir(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = save_lora(tmp_path / "lora", rank=2)
    result = extract(tiny_model_dir, adapter, tmp_path / "out", rank=1, device="cpu")
    again = ExtractResult.from_json(tmp_path / "out")
    assert again == result and again.to_dict()["schema"] == "deltarank.extract/1"
    assert set(again.module_energy()) == {"q_proj", "v_proj", "up_proj"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "deltarank_extract.json",
    ]


def test_failure_leaves_no_partial_dir(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = save_full(tiny_model_dir, tmp_path / "full")
    calls = []

    def failing_add(self: SafetensorsWriter, name: str, tensor: torch.Tensor) -> None:
        calls.append(name)
        if len(calls) > 3:
            raise RuntimeError("disk full")

    monkeypatch.setattr(extract_module.SafetensorsWriter, "add", failing_add)
    before = set(tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="disk full"):
        extract(tiny_model_dir, full, tmp_path / "adapter", rank=2, device="cpu")
    assert set(tmp_path.iterdir()) == before  # no adapter dir, no temporary dir


def test_output_checks(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = save_lora(tmp_path / "lora", rank=2)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="already exists"):
        extract(tiny_model_dir, adapter, target, rank=1)
    extract(tiny_model_dir, adapter, target, rank=1, device="cpu", overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "adapter_config.json").is_file()
    with pytest.raises(OutputError, match="does not exist"):
        extract(tiny_model_dir, adapter, tmp_path / "missing" / "out", rank=1)
    with pytest.raises(DeltarankError, match="exactly one"):
        extract(tiny_model_dir, adapter, tmp_path / "x", rank=1, energy=0.9)


def test_streaming_writer_round_trip(tmp_path: Path) -> None:
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7, 2).to(torch.bfloat16), "c": torch.randn(1, 1)}
    writer = SafetensorsWriter(tmp_path / "x.safetensors")
    for name, t in tensors.items():
        writer.add(name, t)
    writer.finish({"format": "pt"})
    loaded = load_file(str(tmp_path / "x.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert not (tmp_path / "x.safetensors.spill").exists()


def test_adapter_config_most_common_rank() -> None:
    config = adapter_config({"a.q": 4, "a.k": 4, "a.v": 2}, "base")
    assert (config["r"], config["lora_alpha"]) == (4, 4)
    assert config["rank_pattern"] == {"a.v": 2} == config["alpha_pattern"]
    assert config["target_modules"] == ["a.q", "a.k", "a.v"]


EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def save_with_embeddings(model_dir: Path, out_dir: Path, rank: int = 2, seed: int = 7) -> Path:
    """A tuned copy whose embedding, LM head and one projection changed by planted rank-`rank` deltas."""
    generator = torch.Generator().manual_seed(seed)
    tensors = weights(model_dir)

    def low_rank(shape: torch.Size) -> torch.Tensor:
        left = torch.randn(shape[0], rank, generator=generator)
        return 0.05 * left @ torch.randn(rank, shape[1], generator=generator)

    q = "model.layers.0.self_attn.q_proj.weight"
    return save_tuned(
        model_dir, out_dir, {n: tensors[n] + low_rank(tensors[n].shape) for n in (EMBED, HEAD, q)}
    )


def test_embeddings_merge_back_to_the_tuned_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from deltarank.cli import main

    tuned = save_with_embeddings(tiny_model_dir, tmp_path / "tuned", rank=2)
    out = tmp_path / "adapter"
    args = ["extract", str(tiny_model_dir), str(tuned), "--embeddings", "--lora-rank", "3", "--device", "cpu"]
    run = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert run.exit_code == 0, run.output
    result = ExtractResult.from_json(out)
    by_name = {m.name: m for m in result.matrices}
    assert {EMBED, HEAD} <= set(by_name) and by_name[EMBED].module == "embed_tokens"
    assert by_name[EMBED].rank == 3 and by_name[EMBED].retained_energy == pytest.approx(1.0)
    config = json.loads((out / "adapter_config.json").read_text())
    assert {"model.embed_tokens", "lm_head"} <= set(config["target_modules"])
    saved = load_file(str(out / "adapter_model.safetensors"))
    prefix = "base_model.model.model.embed_tokens."
    assert saved[prefix + "lora_embedding_A"].shape == (3, 128)  # (r, num_embeddings)
    assert saved[prefix + "lora_embedding_B"].shape == (32, 3)  # (embedding_dim, r)
    assert saved["base_model.model.lm_head.lora_A.weight"].shape == (3, 32)

    model = PeftModel.from_pretrained(build_tiny_llama(), out).merge_and_unload()
    merged, target = model.state_dict(), weights(tuned)
    for name in (EMBED, HEAD, "model.layers.0.self_attn.q_proj.weight"):
        assert (merged[name] - target[name]).abs().max() < MERGE_TOL, name
    from transformers import LlamaForCausalLM

    reference = LlamaForCausalLM.from_pretrained(tuned).eval()
    ids = torch.arange(0, 128, 5).reshape(1, -1)
    with torch.no_grad():
        got, want = model(ids).logits, reference(ids).logits
    assert (got - want).abs().max() < 1e-4
    with torch.no_grad():  # the change is visible: the base's logits differ
        assert (build_tiny_llama()(ids).logits - want).abs().max() > 1e-3


def test_without_embeddings_they_are_skipped(tiny_model_dir: Path, tmp_path: Path) -> None:
    tuned = save_with_embeddings(tiny_model_dir, tmp_path / "tuned")
    include = r"(embed_tokens|lm_head|q_proj)"
    result = extract(tiny_model_dir, tuned, tmp_path / "a", rank=2, device="cpu", include=include)
    assert [m.name for m in result.matrices] == ["model.layers.0.self_attn.q_proj.weight"]
    reasons = {s.name: s.reason for s in result.skipped}
    assert reasons.pop("model.layers.1.self_attn.q_proj.weight") == "ΔW is zero"
    assert set(reasons) == {EMBED, HEAD} and all("--embeddings" in r for r in reasons.values())


def test_embeddings_of_a_tied_model_are_refused(tmp_path: Path) -> None:
    base = tmp_path / "base"
    build_tiny_llama(tie_word_embeddings=True).save_pretrained(base, safe_serialization=True)
    assert HEAD not in weights(base)  # transformers stores the tied head once, as the embedding
    tensors = weights(base)
    tensors[EMBED] = tensors[EMBED] + 0.01
    tuned = save_tuned(base, tmp_path / "tuned", {EMBED: tensors[EMBED]})
    with pytest.raises(DeltarankError, match=r"ties the LM head to model\.embed_tokens\.weight"):
        extract(base, tuned, tmp_path / "a", rank=2, device="cpu", embeddings=True)
    assert not (tmp_path / "a").exists()
