"""--track-rank: ranks measured during training equal `deltarank spectrum` on the saved run, for every method
with a ΔW; full fine-tuning tracks a sample; resume keeps the log consistent; the steps figure draws it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
from click.testing import CliRunner

from deltarank.analysis.engine.run import spectrum
from deltarank.analysis.results.medians import module_medians, rank_of
from deltarank.analysis.results.spectrum import MatrixSpectrum
from deltarank.cli import main
from deltarank.errors import DeltarankError
from deltarank.train.rank_tracking import sample_matrices
from deltarank.train.trainer import run_training
from tests.train.tiny_runs import PROJECTIONS, KillAfterStep, Killed, tiny_config

RTOL = 1e-6


def rank_lines(out: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [e for e in lines if "rank" in e]


def spectrum_medians(records: tuple[MatrixSpectrum, ...]) -> dict[str, dict[str, float]]:
    """What a rank line holds, computed from a spectrum result's records (module -> field -> median)."""
    columns = {
        "energy_90_median": module_medians(records, rank_of("energy_90")),
        "noise_floor_median": module_medians(records, rank_of("noise_floor")),
        "entropy_median": module_medians(records, rank_of("entropy")),
        "sigma_1_median": module_medians(records, lambda r: r.singular_values[0]),
        "delta_norm_median": module_medians(records, lambda r: r.delta_norm),
    }
    out: dict[str, dict[str, float]] = {}
    for column, values in columns.items():
        for module, value in values.items():
            out.setdefault(module, {})[column] = value
    return out


def assert_same(tracked: dict[str, dict[str, float]], expected: dict[str, dict[str, float]]) -> None:
    assert set(tracked) == set(expected)
    for module, fields in expected.items():
        for field, value in fields.items():
            assert tracked[module][field] == pytest.approx(value, rel=RTOL, abs=1e-12), (module, field)


@pytest.mark.parametrize(
    "method, extra",
    [
        ("lora", {}),
        ("lora", {"dora": True, "rslora": True}),
        ("ia3", {}),
        ("loha", {}),
        ("lokr", {}),
        ("adalora", {}),
        ("oft", {"oft_block_size": 8}),
        ("vera", {"vera_r": 8}),
    ],
)
def test_tracked_ranks_equal_spectrum_of_the_saved_run(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path, method: str, extra: dict[str, Any]
) -> None:
    out = tmp_path / method
    run_training(tiny_config(tiny_lm_dir, pc_data, out, method=method, max_steps=4, track_rank=2, **extra))
    lines = rank_lines(out)
    assert [e["step"] for e in lines] == [2, 4]
    assert all(e["rank_s"] > 0 and e["tokens_seen"] > 0 for e in lines)
    saved = spectrum(tiny_lm_dir, out, device="cpu")  # the final adapter as written, read from disk
    assert_same(lines[-1]["rank"], spectrum_medians(saved.matrices))
    counts = {m: n for m, n in ((m, sum(r.module == m for r in saved.matrices)) for m in lines[-1]["rank"])}
    assert {m: f["matrices"] for m, f in lines[-1]["rank"].items()} == counts
    assert lines[0]["rank"] != lines[-1]["rank"]  # two different states of training were measured


def test_qlora_is_tracked_from_its_factors(
    pc_data: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue("wide_lm_dir")  # bitsandbytes' CPU 4-bit kernels need in_features >= 64
    out = tmp_path / "qlora"
    run_training(tiny_config(model, pc_data, out, method="qlora", lora_r=2, max_steps=2, track_rank=2))
    lines = rank_lines(out)
    assert [e["step"] for e in lines] == [2]
    adapter = [
        r for r in spectrum(model, out, device="cpu").matrices if ":" not in r.module
    ]  # s·B·A, not the NF4 error
    assert_same(lines[-1]["rank"], spectrum_medians(tuple(adapter)))


def test_full_fine_tuning_tracks_its_sample(tiny_lm_dir: Path, pc_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    run_training(tiny_config(tiny_lm_dir, pc_data, out, max_steps=3, track_rank=2, track_rank_sample=3))
    lines = rank_lines(out)
    assert [e["step"] for e in lines] == [2, 3]  # every 2 steps and the last
    assert set(lines[-1]["rank"]) == {"q_proj", "k_proj", "v_proj"}  # layer 0's first three module types
    assert all(f["matrices"] == 1 for f in lines[-1]["rank"].values())
    saved = spectrum(tiny_lm_dir, out, device="cpu", include=r"layers\.0\.self_attn\.[qkv]_proj\.weight")
    assert len(saved.matrices) == 3
    assert_same(lines[-1]["rank"], spectrum_medians(saved.matrices))


def test_the_default_full_sample_is_every_module_of_the_first_and_last_layer() -> None:
    names = [f"model.layers.{i}.{p}.weight" for i in range(30) for p in PROJECTIONS]
    assert sample_matrices(names) == [n for n in names if ".layers.0." in n or ".layers.29." in n]
    spread = sample_matrices(names, 21)  # three layers: 0, the middle one, 29
    assert sorted({int(n.split(".")[2]) for n in spread}) == [0, 14, 29]
    assert sample_matrices(names, 3) == names[:3]
    assert sample_matrices(names[:14], 100) == names[:14]


def test_resume_keeps_the_tracked_lines_of_an_uninterrupted_run(
    tiny_lm_dir: Path, pc_data: Path, tmp_path: Path
) -> None:
    def config(out: Path, **more: Any):  # type: ignore[no-untyped-def]
        return tiny_config(
            tiny_lm_dir, pc_data, out, max_steps=6, save_steps=3, track_rank=2, track_rank_sample=4, **more
        )

    run_training(config(tmp_path / "straight"))
    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        run_training(config(killed), callbacks=[KillAfterStep(4)])
    assert [e["step"] for e in rank_lines(killed)] == [2, 4]  # the log ran past the step-3 checkpoint
    run_training(config(killed, resume=True))
    straight, resumed = rank_lines(tmp_path / "straight"), rank_lines(killed)
    assert [e["step"] for e in resumed] == [2, 4, 6]  # step 4 dropped at resume and measured again
    for a, b in zip(straight, resumed, strict=True):
        assert_same(b["rank"], a["rank"])  # the base is W0, not the resumed checkpoint


@pytest.mark.parametrize("method", ["prompt", "prefix", "ptuning", "adapter"])
def test_methods_without_a_weight_delta_are_refused(tiny_lm_dir: Path, tmp_path: Path, method: str) -> None:
    with pytest.raises(DeltarankError, match="no ΔW to track"):
        tiny_config(tiny_lm_dir, "builtin:code", tmp_path / "out", method=method, track_rank=2)


def test_a_sample_is_for_full_fine_tuning_only(tiny_lm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DeltarankError, match="track-rank-sample is for full fine-tuning"):
        tiny_config(
            tiny_lm_dir, "builtin:code", tmp_path / "o", method="lora", track_rank=2, track_rank_sample=4
        )
    with pytest.raises(DeltarankError, match="track_rank must be 0"):
        tiny_config(tiny_lm_dir, "builtin:code", tmp_path / "o", track_rank=-1)


def test_refusal_on_the_command_line_is_one_line(tiny_lm_dir: Path, tmp_path: Path) -> None:
    args = ["train", "--model", str(tiny_lm_dir), "--data", "builtin:code", "--method", "prompt"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out"), "--track-rank", "5"])
    assert result.exit_code != 0
    assert "no ΔW to track" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_plot_steps_draws_a_tracked_run(tiny_lm_dir: Path, pc_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    run_training(tiny_config(tiny_lm_dir, pc_data, out, method="lora", max_steps=4, track_rank=1))
    figures = tmp_path / "figures"
    args = ["plot", str(out), "--kind", "steps", "--format", "png", "-o", str(figures)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    image = matplotlib.image.imread(figures / "rank_over_training.png")
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert image[..., :3].std() > 0.05  # lines drawn, not a blank canvas
    # a log without rank lines is refused in one line
    plain = tmp_path / "plain"
    run_training(tiny_config(tiny_lm_dir, pc_data, plain, method="lora", max_steps=1))
    refused = CliRunner().invoke(
        main, ["plot", str(plain / "train_log.jsonl"), "--kind", "steps", "-o", str(figures)]
    )
    assert refused.exit_code != 0 and "holds no rank lines" in refused.output
