"""Honest records and one option set: randomized records keep the exact ‖ΔW‖_F and never present a capped rank
as exact; the resume fingerprint covers every option (device included); unreadable dtypes are skipped, not a
reason to refuse a file; the library returns the warnings the command line prints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from deltarank.analysis.engine import SpectrumOptions, spectrum
from deltarank.analysis.engine import options as options_module
from deltarank.analysis.engine.cache import RecordCache
from deltarank.cli import main
from deltarank.errors import DeltarankError
from tests.planting import planted_delta, save_safetensors, write_raw_safetensors

NAMES = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(3)]
SHAPE = (48, 32)
# A flat spectrum of 12 equal σ: the top 4 hold a third of the energy, so no energy rank ≥ 0.5 is reachable.
FLAT = [1.0] * 12


@pytest.fixture(scope="module")
def flat_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("flat")
    generator = torch.Generator().manual_seed(0)
    base = {n: torch.randn(SHAPE, generator=generator, dtype=torch.float64) for n in NAMES}
    tuned = {n: w + planted_delta(SHAPE, FLAT, seed=i) for i, (n, w) in enumerate(base.items())}
    return save_safetensors(root / "base.safetensors", base), save_safetensors(
        root / "tuned.safetensors", tuned
    )


def test_randomized_records_keep_the_exact_norm_and_null_unreachable_ranks(
    flat_pair: tuple[Path, Path],
) -> None:
    base, tuned = flat_pair
    exact = spectrum(base, tuned, device="cpu", precision="float64")
    approx = spectrum(base, tuned, device="cpu", precision="float64", solver="randomized", top_k=4)
    for e, a in zip(exact.matrices, approx.matrices, strict=True):
        assert e.delta_norm == pytest.approx(math.sqrt(12.0), rel=1e-12)  # ‖ΔW‖_F² = Σσ² = 12
        assert a.delta_norm == pytest.approx(math.sqrt(12.0), rel=1e-12)  # exact, not √(top-4 energy) = 2
        assert a.approximate and not e.approximate
        assert len(a.singular_values) == 4
        assert (e.ranks["energy_50"], e.ranks["energy_90"]) == (6, 11)
        assert a.ranks["energy_50"] is None and a.ranks["energy_90"] is None  # 4 σ hold 1/3 of the energy
        assert (
            a.ranks["numerical"] is None and a.ranks["noise_floor"] is None
        )  # all 4 above: the count is ≥ 4
        assert a.ranks["entropy"] is None and a.ranks["participation"] is None
        assert a.ranks["stable"] == pytest.approx(12.0, rel=1e-9)  # ‖ΔW‖_F² / σ₁² with the exact norm
    assert any("approximate spectra" in line for line in approx.warnings())


def test_randomized_energy_ranks_that_the_top_k_reach_are_measured_against_the_exact_total(
    tmp_path: Path,
) -> None:
    sigma = [10.0, 1.0, 1.0, 1.0, 1.0]  # energy 100 of 104: r_0.5 = r_0.9 = 1, r_0.99 = 5
    base = {NAMES[0]: torch.zeros(SHAPE, dtype=torch.float64)}
    tuned = {NAMES[0]: planted_delta(SHAPE, sigma, seed=3)}
    b, t = (
        save_safetensors(tmp_path / "b.safetensors", base),
        save_safetensors(tmp_path / "t.safetensors", tuned),
    )
    record = spectrum(b, t, device="cpu", precision="float64", solver="randomized", top_k=2).matrices[0]
    assert (record.ranks["energy_50"], record.ranks["energy_90"], record.ranks["energy_99"]) == (1, 1, None)
    assert record.ranks["noise_floor"] is None  # 2 of 2 σ above the edge: the true count may be larger
    assert record.delta_norm == pytest.approx(math.sqrt(104.0), rel=1e-12)


def test_the_resume_fingerprint_changes_with_every_option_and_the_device(
    flat_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, tuned = flat_pair
    reference = SpectrumOptions(device="cpu").fingerprint(base, [tuned])
    assert SpectrumOptions(device="cpu", workers=3).fingerprint(base, [tuned]) == reference  # same records
    changed = [
        SpectrumOptions(device="cpu", precision="float64"),
        SpectrumOptions(device="cpu", include=r"up_proj"),
        SpectrumOptions(device="cpu", exclude=r"layers\.0\."),
        SpectrumOptions(device="cpu", thresholds=(0.9,)),
        SpectrumOptions(device="cpu", solver="svd"),
        SpectrumOptions(device="cpu", solver="randomized", top_k=3),
    ]
    assert all(options.fingerprint(base, [tuned]) != reference for options in changed)
    # The device a run computes on: the same options resolved to CUDA must not reuse CPU records.
    monkeypatch.setattr(options_module, "resolve_device", lambda device: torch.device("cuda"))
    assert SpectrumOptions(device="cpu").fingerprint(base, [tuned]) != reference


def test_resume_reuses_records_of_the_same_options_and_recomputes_after_a_change(
    flat_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    base, tuned = flat_pair
    (tmp_path / "other-file").write_text("keeps the directory: an emptied parent of the cache goes with it")
    options = SpectrumOptions(device="cpu")
    kept = RecordCache(tmp_path / "cache", options.fingerprint(base, [tuned]))  # caller-owned: kept after
    first = spectrum(base, tuned, options, resume=kept)
    assert first.resumed == 0 and kept.finished() == 3
    again = spectrum(base, tuned, options, resume=tmp_path / "cache")
    assert again.resumed == 3 and again.matrices == first.matrices
    assert not (tmp_path / "cache").exists()  # a path is library-owned: removed when the run ends
    refilled = RecordCache(tmp_path / "cache", options.fingerprint(base, [tuned]))
    spectrum(base, tuned, options, resume=refilled)
    assert refilled.finished() == 3
    changed = spectrum(base, tuned, options, resume=tmp_path / "cache", thresholds=(0.5, 0.8))
    assert changed.resumed == 0 and "energy_80" in changed.matrices[0].ranks


def test_an_unknown_dtype_on_an_unselected_tensor_does_not_refuse_the_file(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    weights = {n: torch.randn(SHAPE, generator=generator) for n in NAMES}
    delta = planted_delta(SHAPE, [2.0, 1.0], seed=0).float()
    save_safetensors(tmp_path / "base.safetensors", weights)
    header, blobs, offset = {}, [], 0
    tensors = {
        **{n: w + delta for n, w in weights.items()},
        "model.rotary.inv_freq": torch.zeros(4, dtype=torch.int32),
    }
    for name, tensor in tensors.items():
        blob = tensor.contiguous().view(torch.uint8).numpy().tobytes()
        code = "U32" if tensor.dtype == torch.int32 else "F32"  # U32: defined by safetensors, not read by us
        header[name] = {
            "dtype": code,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    tuned = write_raw_safetensors(tmp_path / "tuned.safetensors", header, b"".join(blobs))
    result = spectrum(tmp_path / "base.safetensors", tuned, device="cpu")
    assert [m.ranks["numerical"] for m in result.matrices] == [2, 2, 2]
    assert result.skipped == ()  # the U32 tensor is 1-D: never selected, never read
    # Selected (by --include) but unreadable: listed in `skipped` with its dtype, the others analysed.
    header[NAMES[0]]["dtype"] = "U32"
    odd = write_raw_safetensors(tmp_path / "odd.safetensors", header, b"".join(blobs))
    partial = spectrum(tmp_path / "base.safetensors", odd, device="cpu")
    assert [m.name for m in partial.matrices] == NAMES[1:]
    assert [(s.name, s.reason) for s in partial.skipped] == [
        (NAMES[0], "stored dtype U32 (tuned) cannot be read")
    ]


def test_the_library_returns_the_warnings_the_command_line_prints(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(2)
    # W at 0.1 per entry: ‖ΔW‖/‖W‖ ≈ 0.25, a change the same-base check does not flag (0.05 gives 0.51)
    base = {n: (torch.randn(SHAPE, generator=generator) * 0.1).to(torch.bfloat16) for n in NAMES}
    tuned = {
        n: (w.float() + planted_delta(SHAPE, [1.0], seed=i).float()).to(torch.bfloat16)
        for i, (n, w) in enumerate(base.items())
    }
    tuned[NAMES[2]] = base[NAMES[2]].clone()  # unchanged
    b, t = (
        save_safetensors(tmp_path / "b.safetensors", base),
        save_safetensors(tmp_path / "t.safetensors", tuned),
    )
    warnings = spectrum(b, t, device="cpu").warnings()
    assert (
        len(warnings) == 2
        and "stored in BF16" in warnings[0]
        and "identical in base and tuned" in warnings[1]
    )
    printed = CliRunner().invoke(
        main, ["spectrum", str(b), str(t), "-o", str(tmp_path / "s.json"), "--device", "cpu"]
    )
    assert printed.exit_code == 0, printed.output
    assert [
        line.removeprefix("Warning: ") for line in printed.stderr.splitlines() if line.startswith("Warning: ")
    ] == warnings


def test_unknown_option_names_are_refused() -> None:
    with pytest.raises(DeltarankError, match="unknown spectrum option"):
        SpectrumOptions.of(None, top=3)
    with pytest.raises(DeltarankError, match="thresholds must lie in"):
        SpectrumOptions(thresholds=(0.0,))
