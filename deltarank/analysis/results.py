"""Result records of a spectrum run: frozen dataclasses, versioned JSON, CSV, atomic writes.

The JSON layout (`schema: deltarank.spectrum/1`) is a contract other tools read; keep field names stable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deltarank.errors import InputError, OutputError

SCHEMA = "deltarank.spectrum/1"


@dataclass(frozen=True)
class MatrixSpectrum:
    """The spectrum of one weight delta ΔW = W_tuned − W_base and its rank measures."""

    name: str = field(metadata={"help": "Canonical (Hugging Face) name of the base weight."})
    layer: int | None = field(metadata={"help": "Transformer block index, None outside the blocks."})
    module: str = field(metadata={"help": "Module type, e.g. q_proj, down_proj."})
    shape: tuple[int, int] = field(metadata={"help": "Shape of the base weight (out, in)."})
    kind: str = field(metadata={"help": "dense (two checkpoints), lora (factors) or dora."})
    singular_values: tuple[float, ...] = field(metadata={"help": "All min(shape) σ of ΔW, descending."})
    ranks: dict[str, float] = field(
        metadata={"help": "energy_<pct>, entropy, stable, participation, numerical, noise_floor."}
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
    lora_rank: int | None = field(default=None, metadata={"help": "Adapter rank r (LoRA/DoRA only)."})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}  # asdict would deep-copy every σ
        out["ranks"] = dict(self.ranks)
        out["shape"] = list(self.shape)
        out["singular_values"] = list(self.singular_values)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MatrixSpectrum:
        """Inverse of `to_dict`."""
        values = dict(data)
        values["shape"] = tuple(values["shape"])
        values["singular_values"] = tuple(values["singular_values"])
        return cls(**values)


@dataclass(frozen=True)
class SkippedTensor:
    """A tensor that was selected but could not be analysed, with the reason."""

    name: str
    reason: str


@dataclass(frozen=True)
class SpectrumResult:
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
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the schema tag first."""
        return {
            "schema": self.schema,
            "deltarank_version": self.deltarank_version,
            "base": self.base,
            "tuned": self.tuned,
            "device": self.device,
            "precision": self.precision,
            "method": self.method,
            "solver": self.solver,
            "thresholds": list(self.thresholds),
            "matrices": [m.to_dict() for m in self.matrices],
            "skipped": [asdict(s) for s in self.skipped],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON text; when `path` is given, also write it atomically."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            write_atomic(path, text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> SpectrumResult:
        """Read a result from a JSON file path (or JSON text starting with `{`)."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            try:
                text = Path(source).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise InputError(source, "cannot read result file (no such file)") from None
            except UnicodeDecodeError:
                raise InputError(source, "not a JSON result file (not UTF-8 text)") from None
            except OSError as exc:
                raise InputError(source, f"cannot read result file ({exc.strerror or exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(source, f"not a JSON result file ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise InputError(source, f"not a {SCHEMA} result file")
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise InputError(source, f"malformed {SCHEMA} result file ({problem})") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> SpectrumResult:
        return cls(
            base=data["base"],
            tuned=data["tuned"],
            device=data["device"],
            precision=data["precision"],
            thresholds=tuple(data["thresholds"]),
            matrices=tuple(MatrixSpectrum.from_dict(m) for m in data["matrices"]),
            skipped=tuple(SkippedTensor(**s) for s in data.get("skipped", [])),
            method=data.get("method", "exact"),
            solver=data.get("solver", "svd"),
            deltarank_version=data.get("deltarank_version", ""),
        )

    def to_csv(self, path: str | Path | None = None) -> str:
        """One row per matrix (no singular values); written atomically when `path` is given."""
        rank_keys = sorted({k for m in self.matrices for k in m.ranks})
        columns = ["name", "layer", "module", "rows", "cols", "kind", *rank_keys]
        columns += ["delta_norm", "base_norm", "erased_fraction", "random_energy_90", "noise_edge"]
        columns += ["at_noise_level", "lora_rank", "base_dtype", "tuned_dtype"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for m in self.matrices:
            row: list[object] = [m.name, m.layer, m.module, m.shape[0], m.shape[1], m.kind]
            row += [m.ranks.get(k) for k in rank_keys]
            row += [m.delta_norm, m.base_norm, m.erased_fraction, m.random_energy_90, m.noise_edge]
            row += [m.at_noise_level, m.lora_rank, m.base_dtype, m.tuned_dtype]
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

    def by_module(self) -> dict[str, list[MatrixSpectrum]]:
        """Matrices grouped by module type, in first-seen order."""
        groups: dict[str, list[MatrixSpectrum]] = {}
        for m in self.matrices:
            groups.setdefault(m.module, []).append(m)
        return groups


def check_writable(path: str | Path) -> Path:
    """Fail early, before any work, when `path` cannot be written.

    Raises:
        OutputError: the parent directory is missing, not a directory, or not writable.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{target}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{target}: output directory {parent} is not writable")
    if target.is_dir():
        raise OutputError(f"{target}: is a directory, expected a file path")
    return target


def write_atomic(path: str | Path, text: str, durable: bool = True) -> None:
    """Write `text` to a temp file beside `path`, then rename over it: readers never see a partial file.

    `durable` also flushes it to the disk before the rename (survives a power cut, not only a killed process).
    """
    target = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def module_medians(matrices: Iterable[MatrixSpectrum], key: str) -> dict[str, float]:
    """Median of `ranks[key]` per module type (used by the terminal table and `compare`)."""
    import statistics

    groups: dict[str, list[float]] = {}
    for m in matrices:
        if key in m.ranks:
            groups.setdefault(m.module, []).append(float(m.ranks[key]))
    return {module: statistics.median(values) for module, values in groups.items()}
