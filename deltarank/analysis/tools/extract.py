"""Low-rank extraction (as mergekit-extract-lora does): the best rank-k approximation of each ΔW as a LoRA.

ΔW = U Σ Vᵀ; by Eckart–Young the best rank-k approximation is U_k Σ_k V_kᵀ = B A with B = U_k Σ_k^{1/2}
(out, k) and A = Σ_k^{1/2} V_kᵀ (k, in), written as a PEFT adapter with α = r (scale s = α/r = 1). The share of
ΔW's energy it keeps is Σ_{i≤k} σ_i² / Σ_i σ_i². Either one rank R for every matrix (clipped to min(out, in)),
or per-matrix ranks r_τ, the smallest k keeping a share τ of the energy (written as rank_pattern).

A LoRA TUNED is re-factorised from its factors (QR + r × r SVD, B·A never formed). Memory: one pair and its
SVD; the factors stream to disk as they are computed.

With `embeddings` (mergekit's `--embed-lora`) the input embedding and the LM head are extracted too: the LM head
as an ordinary LoRA (nn.Linear), the embedding (num_embeddings, dim) in peft's nn.Embedding layout,
lora_embedding_A = (U_k Σ_k^{1/2})ᵀ (k, num_embeddings) and lora_embedding_B = (Σ_k^{1/2} V_kᵀ)ᵀ (dim, k), which
peft merges as (B A)ᵀ = U_k Σ_k V_kᵀ. A base whose LM head is tied to its embedding is refused: peft puts a LoRA
on a tied embedding on the input side only, so no adapter reproduces both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deltarank import __version__
from deltarank.analysis.engine.compute import ProgressHook, resolve_device, resolve_precision
from deltarank.analysis.engine.loading import LoadedPair, load_pair, prefetched
from deltarank.analysis.engine.plan import Plan, plan_one
from deltarank.analysis.maths.ranks import energy_rank
from deltarank.analysis.maths.svd import DeltaSVD, delta_svd
from deltarank.analysis.results.extract import RESULT_FILE, ExtractResult, MatrixExtract
from deltarank.errors import DeltarankError, OptionError
from deltarank.io.adapter import AdapterSource
from deltarank.io.adapter_writer import (
    WEIGHTS_FILE,
    SafetensorsWriter,
    adapter_config,
    embedding_keys,
    lora_keys,
)
from deltarank.io.atomic import atomic_directory, check_output_dir, write_json
from deltarank.io.base import TensorSource
from deltarank.io.naming import EMBEDDING_PATTERN, Selection, layer_index, module_type
from deltarank.io.pairing import Pair, SkippedTensor

__all__ = ["ExtractResult", "MatrixExtract", "choose_rank", "extract", "retained_energy", "truncate"]

SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What `embeddings` adds: the token embedding (nn.Embedding) and the LM head (nn.Linear) of the usual architectures.
INPUT_EMBEDDING = re.compile(r"(?:^|\.)(?:embed_tokens|wte|word_embeddings|embed_in)\.weight$")
LM_HEAD = re.compile(r"(?:^|\.)(?:lm_head|embed_out)\.weight$")
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class WithEmbeddings(Selection):
    """A selection plus the input embedding and the LM head (unless `exclude` drops them)."""

    def wants(self, name: str, ndim: int) -> bool:
        if ndim == 2 and (INPUT_EMBEDDING.search(name) or LM_HEAD.search(name)):
            return self.exclude is None or re.search(self.exclude, name) is None
        return super().wants(name, ndim)


def check_untied(base: TensorSource) -> None:
    """Refuse a base whose LM head is tied to its input embedding (`tie_word_embeddings`, or no LM head stored).

    Raises:
        DeltarankError: the weights are tied.
    """
    names = base.names()
    embedding = next((n for n in names if INPUT_EMBEDDING.search(n)), None)
    if embedding is None:
        return
    has_head = any(LM_HEAD.search(n) for n in names)
    config = base.path.parent / CONFIG_FILE
    tied = False
    if config.is_file():
        try:
            tied = json.loads(config.read_text(encoding="utf-8")).get("tie_word_embeddings") is True
        except (OSError, ValueError, AttributeError):
            tied = False
    if tied or not has_head:
        raise DeltarankError(
            f"--embeddings: {base.path} ties the LM head to {embedding} (tie_word_embeddings); peft applies a "
            "LoRA on a tied embedding to the input side only, so no adapter reproduces TUNED. Extract without "
            "--embeddings, or untie the weights (tie_word_embeddings=false, lm_head.weight saved) in both models"
        )


def truncate(svd: DeltaSVD, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors of the rank-k truncation: B = U_k Σ_k^{1/2} (m, k), A = Σ_k^{1/2} V_kᵀ (k, n)."""
    root = svd.s[:k].sqrt()  # (k,)
    return svd.u[:, :k] * root, root[:, None] * svd.v[:, :k].mT


def retained_energy(sigma: Sequence[float] | np.ndarray, k: int) -> float:
    """Σ_{i≤k} σ_i² / Σ_i σ_i², the share of ‖ΔW‖_F² the rank-k truncation keeps (0 for a zero ΔW)."""
    energy = np.asarray(sigma, dtype=np.float64) ** 2
    total = energy.sum()
    return float(energy[:k].sum() / total) if total > 0 else 0.0


def choose_rank(sigma: Sequence[float] | np.ndarray, rank: int | None, energy: float | None) -> int:
    """k = min(R, #σ) for a fixed rank, else the energy rank r_τ: smallest k with Σ_{i≤k} σ_i² ≥ τ Σ σ_i²."""
    if rank is not None:
        return min(rank, len(sigma))
    assert energy is not None
    return max(1, energy_rank(sigma, energy))


def check_target(rank: int | None, energy: float | None, dtype: str) -> None:
    """Exactly one of rank ≥ 1 and energy in (0, 1]; a known save dtype."""
    if (rank is None) == (energy is None):
        raise OptionError("give exactly one of --lora-rank and --energy")
    if rank is not None and rank < 1:
        raise OptionError(f"--lora-rank must be at least 1, got {rank}")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise OptionError(f"--energy must lie in (0, 1], got {energy}")
    if dtype not in SAVE_DTYPES:
        raise OptionError(f"unknown adapter dtype {dtype!r} ({', '.join(SAVE_DTYPES)})")


def extract(
    base: str | Path,
    tuned: str | Path,
    out_dir: str | Path,
    *,
    rank: int | None = None,
    energy: float | None = None,
    include: str | None = None,
    exclude: str | None = None,
    device: str = "auto",
    precision: str = "float32",
    dtype: str = "float32",
    base_model_name_or_path: str | None = None,
    overwrite: bool = False,
    embeddings: bool = False,
    progress: ProgressHook | None = None,
    allow_different_base: bool = False,
) -> ExtractResult:
    """Write the best rank-k approximation of every selected ΔW = TUNED − BASE as a PEFT LoRA adapter.

    B = U_k Σ_k^{1/2}, A = Σ_k^{1/2} V_kᵀ, α = r, so `PeftModel.from_pretrained(base_model, out_dir)` merges to
    W + U_k Σ_k V_kᵀ (the tuned weights when k = min(out, in)). The directory also holds `deltarank_extract.json`
    (the ExtractResult: rank and retained energy Σ_{i≤k}σ_i²/Σσ_i² per matrix). A zero ΔW is skipped.

    Args:
        base: Base checkpoint (.safetensors file, Hugging Face directory or GGUF).
        tuned: Tuned checkpoint, or a PEFT LoRA adapter directory (re-factorised).
        out_dir: Adapter directory to create (replaced only with `overwrite`).
        rank: One rank R for every matrix (clipped to min(out, in)).
        energy: Instead of `rank`, keep a share τ of each ΔW's energy (per-matrix ranks, in rank_pattern).
        include: Regex of tensor names instead of the default (transformer-block 2-D weights).
        exclude: Regex of tensor names to leave out.
        device: auto, cpu or cuda.
        precision: float32 or float64 for the SVD.
        dtype: Stored dtype of the factors: float32, bfloat16 or float16.
        base_model_name_or_path: Written to adapter_config.json; defaults to `base` as given.
        overwrite: Replace an existing non-empty `out_dir`.
        embeddings: Also extract the input embedding (peft's nn.Embedding LoRA) and the LM head; refused for
            a base whose LM head is tied to the embedding.
        progress: Called as progress(done, total, name) after each matrix.
        allow_different_base: Extract from a TUNED whose config describes another architecture (else refused).

    Returns:
        The ExtractResult (also saved in the adapter directory).
    """
    check_target(rank, energy, dtype)
    check_output_dir(out_dir, overwrite)
    dev, compute = resolve_device(device), resolve_precision(precision)
    selection = (WithEmbeddings if embeddings else Selection)(include=include, exclude=exclude)
    base_source, plan = plan_one(base, tuned, selection, allow_different_base)
    if embeddings:
        check_untied(base_source)
    if isinstance(plan.source, AdapterSource) and plan.source.config.fan_in_fan_out:
        raise DeltarankError(
            f"{tuned}: fan_in_fan_out adapters cannot be re-extracted (nn.Linear layout only)"
        )
    with atomic_directory(out_dir, overwrite) as tmp:
        records, skipped = _write_factors(
            base_source, plan, tmp / WEIGHTS_FILE, dev, compute, rank, energy, dtype, embeddings, progress
        )
        if not records:
            raise DeltarankError("every selected ΔW is zero or unsupported: nothing to extract")
        ranks = {m.name.removesuffix(".weight"): m.rank for m in records}
        config = adapter_config(ranks, base_model_name_or_path or str(base))
        write_json(tmp / "adapter_config.json", config, indent=2)
        result = ExtractResult(
            base=str(base),
            tuned=str(tuned),
            out_dir=str(out_dir),
            rank=rank,
            energy=energy,
            r=int(config["r"]),
            dtype=dtype,
            precision=precision,
            device=str(dev),
            matrices=tuple(records),
            skipped=(*plan.skipped, *skipped),
            deltarank_version=__version__,
        )
        result.to_json(tmp / RESULT_FILE)
    return result


def _write_factors(
    base: TensorSource,
    plan: Plan,
    path: Path,
    dev: torch.device,
    compute: torch.dtype,
    rank: int | None,
    energy: float | None,
    dtype: str,
    embeddings: bool,
    progress: ProgressHook | None,
) -> tuple[list[MatrixExtract], list[SkippedTensor]]:
    """SVD, truncate and append the factors of each pair to the adapter's safetensors file."""
    writer = SafetensorsWriter(path)
    records: list[MatrixExtract] = []
    skipped: list[SkippedTensor] = []
    try:

        def load(pair: Pair) -> LoadedPair | None:
            """One pair's tensors (None for an embedding or the LM head that is not extracted)."""
            return None if _left_out(pair.name, embeddings) else load_pair(pair, base, plan.source, dev)

        with prefetched(plan.pairs, load) as loads:
            for index, (pair, loaded) in enumerate(zip(plan.pairs, loads, strict=True)):
                svd = None if loaded is None else delta_svd(loaded.delta(compute))
                del loaded
                outcome = _extract_one(pair, svd, rank, energy)
                del svd
                if isinstance(outcome, SkippedTensor):
                    skipped.append(outcome)
                else:
                    record, b, a = outcome  # (out, k), (k, in)
                    module = pair.name.removesuffix(".weight")
                    if INPUT_EMBEDDING.search(pair.name):  # nn.Embedding: ΔW = (B_e A_e)ᵀ, B_e = aᵀ, A_e = bᵀ
                        key_b, key_a = embedding_keys(module)
                        b, a = a.mT, b.mT
                    else:
                        key_b, key_a = lora_keys(module)
                    writer.add(key_a, a.to(SAVE_DTYPES[dtype]).contiguous())
                    writer.add(key_b, b.to(SAVE_DTYPES[dtype]).contiguous())
                    records.append(record)
                if progress is not None:
                    progress(index + 1, len(plan.pairs), pair.name)
        writer.finish({"format": "pt"})
    except BaseException:
        writer.abort()
        raise
    return records, skipped


def _left_out(name: str, embeddings: bool) -> bool:
    """True for an embedding-like tensor that is not extracted (all of them without `embeddings`)."""
    if not EMBEDDING_PATTERN.search(name):
        return False
    return not (embeddings and (INPUT_EMBEDDING.search(name) or LM_HEAD.search(name)))


def _extract_one(
    pair: Pair, svd: DeltaSVD | None, rank: int | None, energy: float | None
) -> tuple[MatrixExtract, torch.Tensor, torch.Tensor] | SkippedTensor:
    """The record and the factors B (out, k), A (k, in) of one pair, or why it is skipped."""
    if svd is None:
        return SkippedTensor(pair.name, "embedding or LM head: not extracted (see --embeddings)")
    if svd.significant(pair.shape) == 0:
        return SkippedTensor(pair.name, "ΔW is zero")
    sigma = svd.s.to(torch.float64).cpu().numpy()
    k = choose_rank(sigma, rank, energy)
    record = MatrixExtract(
        name=pair.name,
        layer=layer_index(pair.name),
        module=module_type(pair.name),
        shape=pair.shape,
        kind=svd.kind,
        rank=k,
        retained_energy=retained_energy(sigma, k),
        singular_values=tuple(float(s) for s in sigma),
    )
    return (record, *truncate(svd, k))
