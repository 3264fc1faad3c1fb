"""Result records of a spectrum run (`schema: deltarank.spectrum/1`), its CSV table and its warnings.

The JSON layout is a contract other tools read; keep field names stable.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from deltarank.analysis.results.base import Record, ResultFile
from deltarank.analysis.results.medians import median
from deltarank.analysis.results.sparsity import MEASURES, SparsityProfile
from deltarank.errors import OutputError
from deltarank.io.atomic import check_writable, write_atomic
from deltarank.io.dtypes import LOW_PRECISION, is_quantized
from deltarank.io.pairing import SkippedTensor

SCHEMA = "deltarank.spectrum/1"
# Record kinds of a standalone adapter's own matrices (`deltarank spectrum ADAPTER_DIR`): not weight deltas.
NOT_DELTAS = frozenset({"virtual_tokens", "bottleneck_down", "bottleneck_up", "bottleneck_product"})
# Record kinds computed from a PEFT adapter's saved tensors (a QLoRA run's quantisation parts included): a
# result made of these alone is an adapter run in the figures (compared against full fine-tuning's `dense`).
ADAPTER_KINDS = frozenset(
    {"lora", "dora", "adalora", "vera", "loha", "lokr", "ia3", "oft", "boft"}
    | {"qlora", "quantization_error", "qlora_total"}
)
MAX_LISTED = 5
# Same base or not, from the tensors alone. Fine-tunes move a weight by ~1e-3 to 1e-1 of its norm, while two
# independently initialised models of one scale differ by ~√2 ≈ 1.4 (‖W₁ − W₂‖² = ‖W₁‖² + ‖W₂‖² for independent
# zero-mean weights; #24 measured 1.4 for a Llama base against a Qwen2 checkpoint). 0.5 sits between the two
# with a margin of 5x above the largest fine-tune and ~3x below unrelated weights.
LARGE_RELATIVE_CHANGE = 0.5
# Ranks "at the Gaussian reference": the median energy_90 at least this share of a Gaussian matrix's. Only
# counted with a change of at least GAUSSIAN_MIN_CHANGE, since a small, noisy update can be full-rank too.
GAUSSIAN_SHARE = 0.95
GAUSSIAN_MIN_CHANGE = 0.1


@dataclass(frozen=True)
class MatrixSpectrum(Record):
    """The spectrum of one weight delta ΔW = W_tuned − W_base and its rank measures."""

    name: str = field(metadata={"help": "Canonical (Hugging Face) name of the base weight."})
    layer: int | None = field(metadata={"help": "Transformer block index, None outside the blocks."})
    module: str = field(metadata={"help": "Module type, e.g. q_proj, down_proj."})
    shape: tuple[int, int] = field(metadata={"help": "Shape of the base weight (out, in)."})
    kind: str = field(
        metadata={
            "help": "dense (two checkpoints), or the adapter method: lora, qlora, dora, adalora, vera, loha, lokr, "
            "ia3, oft, boft; a QLoRA adapter's other parts: quantization_error (dequantized 4-bit base − base) "
            "and qlora_total (their sum); not deltas (a standalone adapter's own matrices): virtual_tokens, "
            "bottleneck_down, bottleneck_up, bottleneck_product."
        }
    )
    singular_values: tuple[float, ...] = field(metadata={"help": "All min(shape) σ of ΔW, descending."})
    ranks: dict[str, float | None] = field(
        metadata={
            "help": "energy_<pct>, entropy, stable, participation, numerical, noise_floor; null when an "
            "approximate spectrum cannot tell."
        }
    )
    delta_norm: float = field(metadata={"help": "Frobenius norm of ΔW."})
    base_norm: float | None = field(metadata={"help": "Frobenius norm of W_base (None if not read)."})
    erased_fraction: float | None = field(
        metadata={"help": "Share of entries whose stored value did not change (None for LoRA factors)."}
    )
    random_energy_90: int = field(metadata={"help": "energy_90 of a Gaussian matrix of this shape."})
    base_dtype: str = field(metadata={"help": "Stored dtype of the base weight."})
    tuned_dtype: str = field(metadata={"help": "Stored dtype of the tuned weight or adapter factors."})
    noise_edge: float = field(
        default=0.0, metadata={"help": "σ above which a direction is not storage rounding noise."}
    )
    at_noise_level: bool = field(
        default=False, metadata={"help": "True when no σ of ΔW rises above the noise edge."}
    )
    lora_rank: int | None = field(
        default=None,
        metadata={
            "help": "Adapter rank setting r (LoRA, DoRA, LoHa, LoKr, VeRA; AdaLoRA's kept r'); None otherwise."
        },
    )
    approximate: bool = field(
        default=False,
        metadata={"help": "True when σ are the top-k of the randomized solver (delta_norm is still exact)."},
    )
    rank_bound: int | None = field(
        default=None,
        metadata={
            "help": "Bound on rank(ΔW) from the method's structure (LoRA r, AdaLoRA r', VeRA r, LoHa r², LoKr "
            "rank(W₁)·rank(W₂) bound, IA3 changed scales); None when it allows min(shape)."
        },
    )
    random_ranks: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "help": "energy_<pct> of a Gaussian matrix of this shape at every threshold of the run (the width-aware "
            "reference of each energy rank; empty in files written before it was recorded)."
        },
    )
    sparsity: SparsityProfile | None = field(
        default=None,
        metadata={
            "help": "Shares of entries unchanged (exactly, within sparsity_atol, within the base's storage "
            "rounding) and numerical rank ÷ min(shape); null for a standalone adapter's own matrices and in "
            "files written before it was recorded."
        },
    )

    def gaussian_rank(self, key: str) -> int | None:
        """The Gaussian matrix's energy rank `key` (`energy_90`, ...) for this shape, None when not recorded."""
        if key in self.random_ranks:
            return self.random_ranks[key]
        return self.random_energy_90 if key == "energy_90" else None


@dataclass(frozen=True)
class SpectrumResult(ResultFile[MatrixSpectrum]):
    """Everything one `deltarank spectrum` run computed."""

    base: str = field(metadata={"help": "Base checkpoint path as given."})
    tuned: str = field(metadata={"help": "Tuned checkpoint or adapter path as given."})
    device: str = field(metadata={"help": "Device the decompositions ran on."})
    precision: str = field(metadata={"help": "Compute dtype: float32 or float64."})
    thresholds: tuple[float, ...] = field(metadata={"help": "Energy thresholds τ of the energy ranks."})
    matrices: tuple[MatrixSpectrum, ...] = field(metadata={"help": "One record per analysed matrix."})
    skipped: tuple[SkippedTensor, ...] = field(default=(), metadata={"help": "Selected but not analysed."})
    method: str = field(default="exact", metadata={"help": "exact, or the approximate method asked for."})
    solver: str = field(default="svd", metadata={"help": "svd, gram (exact) or randomized (approximate)."})
    deltarank_version: str = field(default="", metadata={"help": "Version that wrote the file."})
    different_base: str | None = field(
        default=None,
        metadata={
            "help": "Why BASE and TUNED may not be the same base model (median ‖ΔW‖/‖W‖ above "
            f"{LARGE_RELATIVE_CHANGE}, or ranks at the Gaussian reference); null when nothing suggests it."
        },
    )
    sparsity_atol: float | None = field(
        default=None,
        metadata={
            "help": "Absolute tolerance of every record's sparsity.within_atol; null when not measured."
        },
    )
    resumed: int = field(
        default=0, compare=False, metadata={"json": False, "help": "Matrices reused from a resume cache."}
    )
    schema: str = SCHEMA
    SCHEMA: ClassVar[str] = SCHEMA

    def to_csv(self, path: str | Path | None = None) -> str:
        """One row per matrix (no singular values); written atomically when `path` is given."""
        rank_keys = sorted({k for m in self.matrices for k in m.ranks})
        columns = ["name", "layer", "module", "rows", "cols", "kind", *rank_keys]
        columns += ["delta_norm", "base_norm", "erased_fraction", "random_energy_90", "noise_edge"]
        columns += ["at_noise_level", "lora_rank", "base_dtype", "tuned_dtype", "approximate", "rank_bound"]
        columns += list(MEASURES)  # the sparsity profile, empty where not measured
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for m in self.matrices:
            row: list[object] = [m.name, m.layer, m.module, m.shape[0], m.shape[1], m.kind]
            row += [m.ranks.get(k) for k in rank_keys]
            row += [m.delta_norm, m.base_norm, m.erased_fraction, m.random_energy_90, m.noise_edge]
            row += [m.at_noise_level, m.lora_rank, m.base_dtype, m.tuned_dtype, m.approximate, m.rank_bound]
            row += [getattr(m.sparsity, key, None) for key in MEASURES]
            writer.writerow(["" if v is None else v for v in row])
        text = buffer.getvalue()
        if path is not None:
            write_atomic(path, text)
        return text

    def to_pandas(self) -> Any:
        """A pandas DataFrame with one row per matrix (needs pandas installed)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from exc
        return pd.read_csv(io.StringIO(self.to_csv()))

    def warnings(self) -> list[str]:
        """What a reader must know before trusting the ranks: low-precision or quantized storage, deltas at
        noise level, unchanged matrices, approximate spectra and skipped tensors (the CLI prints these)."""
        out = [self.different_base] if self.different_base else []
        standalone = [m for m in self.matrices if m.kind in NOT_DELTAS]
        if standalone and self.base != self.tuned:
            out.append(
                f"BASE {self.base} is not needed: the adapter changes no base weight (it was not read)"
            )
        if standalone:
            out.append(
                f"{len(standalone)} record(s) are an adapter's own matrices ({'/'.join(sorted({m.kind for m in standalone}))}), "
                "not deltas: nothing is subtracted, so 'noise_floor' is their numerical rank (no storage-noise model)"
            )
        # Only dense deltas carry storage noise: LoRA σ come from the factors, DoRA's from W as stored.
        dense = [m for m in self.matrices if m.kind == "dense"]
        dtypes = {m.base_dtype for m in dense} | {m.tuned_dtype for m in dense}
        low = sorted(dtypes & LOW_PRECISION)
        if low:
            out.append(
                f"checkpoint stored in {'/'.join(low)}: rounding noise is full-rank, so the 'numerical' rank is "
                "meaningless; read 'noise_floor' instead"
            )
        quantized = sorted(d for d in dtypes if is_quantized(d))
        if quantized:
            out.append(
                f"checkpoint stored quantized ({'/'.join(quantized)}): quantization error is not modelled, so "
                "'noise_floor' cannot separate it from the update (it counts like 'numerical')"
            )
        noisy = [m.name for m in self.matrices if m.at_noise_level]
        if noisy:
            out.append(
                f"{len(noisy)} delta(s) sit at storage-noise level (no σ above the noise edge): {_few(noisy)}"
            )
        unchanged = [m.name for m in self.matrices if m.delta_norm == 0]
        if unchanged:
            out.append(f"{len(unchanged)} matrix(es) are identical in base and tuned: {_few(unchanged)}")
        if any(m.approximate for m in self.matrices):
            out.append(
                "approximate spectra (randomized solver): ranks the top-k σ cannot determine are null; "
                "delta_norm is exact"
            )
        if self.skipped:
            reasons = [f"{s.name} ({s.reason})" for s in self.skipped]
            out.append(f"{len(self.skipped)} tensor(s) skipped: {_few(reasons)}")
        return out


def different_base(matrices: Sequence[MatrixSpectrum]) -> str | None:
    """Why the deltas look like differences of unrelated models, or None: the median ‖ΔW‖/‖W‖ over the
    matrices is large, or their energy_90 ranks sit at the Gaussian reference with a sizeable change.

    Only weight deltas whose base norm was read count (not a standalone adapter's own matrices, not a QLoRA
    base's quantisation error); an approximate spectrum's null energy_90 leaves only the norms to tell.
    """
    deltas = [
        m for m in matrices if m.base_norm and m.kind not in NOT_DELTAS and m.kind != "quantization_error"
    ]
    if not deltas:
        return None
    relative = median(m.delta_norm / m.base_norm for m in deltas if m.base_norm)
    shares = median(
        e90 / m.random_energy_90
        for m in deltas
        if (e90 := m.ranks.get("energy_90")) is not None and m.random_energy_90
    )
    if relative is None:
        return None
    gaussian = shares is not None and shares >= GAUSSIAN_SHARE and relative >= GAUSSIAN_MIN_CHANGE
    if relative <= LARGE_RELATIVE_CHANGE and not gaussian:
        return None
    found = [f"the median ‖ΔW‖/‖W‖ is {relative:.3g} (fine-tunes: ~0.001-0.1)"]
    if gaussian and shares is not None:
        found.append(f"the ranks sit at the Gaussian reference (median energy_90 {shares:.0%} of it)")
    return f"{' and '.join(found)}: are these the same base model?"


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", … (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def output_paths(tuned: list[str], output: str | None) -> list[Path]:
    """One JSON path per tuned checkpoint, checked writable: the -o file, or DIR/<checkpoint name>.json.

    The directory for several is created only when the results are written; here it is only checked.

    Raises:
        OutputError: a missing or read-only directory, or two checkpoints that would share one output.
    """
    if len(tuned) == 1:
        return [check_writable(output or "spectrum.json")]
    directory = Path(output or "spectra")
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory}: is a file; with several TUNED, -o names a directory")
    names = [Path(t.rstrip("/")).name for t in tuned]
    if len(set(names)) < len(names):  # e.g. full/final and lora/final
        names = [f"{Path(t.rstrip('/')).parent.name}-{n}" for t, n in zip(tuned, names, strict=True)]
    paths = [directory / f"{Path(n).stem if n.endswith('.safetensors') else n}.json" for n in names]
    if len(set(paths)) < len(paths):
        raise OutputError(f"several TUNED would write the same file in {directory}; give each only once")
    if not directory.is_dir():
        check_writable(directory)  # its parent must exist and be writable
        return paths
    return [check_writable(path) for path in paths]
