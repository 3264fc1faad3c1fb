"""Interrupted `spectrum` runs: Ctrl-C or SIGTERM leave no partial output and exit promptly with 130; a run killed
with SIGKILL (or interrupted) is finished by `--resume`, which reuses the finished matrices and gives a result
identical to an uninterrupted run.

The real command runs in a subprocess (`tests.reliability.slowed` only adds a sleep before each matrix, so the
signal lands mid-run on any machine); the per-matrix cache beside the output tells the test when matrices have
been finished.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import deltarank.analysis.engine.run as engine
from deltarank.cli import main
from tests.reliability.corpus import block_names, random_weights, tuned_from, write_safetensors

REPO = Path(__file__).resolve().parents[2]
SHAPE = (64, 64)
LAYERS = 4  # 4 blocks x 4 projections = 16 matrices per checkpoint
DELAY = 0.25  # seconds of sleep before each matrix in the subprocess
START_TIMEOUT = 90.0  # imports on a busy CI machine
EXIT_TIMEOUT = 10.0  # "promptly"


@pytest.fixture
def checkpoints(tmp_path: Path) -> dict[str, Path]:
    """A base and two tuned checkpoints of 16 matrices each."""
    names = block_names(LAYERS, ("q_proj", "k_proj", "v_proj", "o_proj"))
    weights = random_weights(0, names, shape=SHAPE)
    inputs = tmp_path / "inputs"
    return {
        "base": write_safetensors(inputs / "base.safetensors", weights),
        "tuned": write_safetensors(inputs / "tuned.safetensors", tuned_from(weights, seed=1)),
        "other": write_safetensors(inputs / "other.safetensors", tuned_from(weights, seed=2, scale=0.1)),
    }


def cache_dir(output: Path) -> Path:
    """Where `spectrum` keeps finished matrices of a run writing `output`."""
    return output.parent / f".{output.name}.cache" / "rank0"


def finished_records(output: Path) -> int:
    directory = cache_dir(output)
    return (
        len([f for f in directory.glob("*.json") if f.name != "manifest.json"]) if directory.is_dir() else 0
    )


def start_slowed(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.slowed", str(DELAY), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Passive OpenMP waiting: on a CPU shared with other test processes, spinning threads can slow each
        # decomposition a hundredfold, which would measure the machine's load rather than the signal handling.
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_WAIT_POLICY": "PASSIVE"},
    )


def wait_for_records(proc: subprocess.Popen[str], output: Path, count: int) -> None:
    """Block until the run has finished `count` matrices (fail if it ends or stalls first)."""
    deadline = time.monotonic() + START_TIMEOUT
    while finished_records(output) < count:
        if proc.poll() is not None:
            pytest.fail(f"spectrum ended before being interrupted: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("spectrum finished no matrix in time")
        time.sleep(0.02)


def spectrum_args(inputs: list[Path], output: Path) -> list[str]:
    """--force: some tests start over an older result, which an interrupted run must leave untouched."""
    return ["spectrum", *map(str, inputs), "-o", str(output), "--device", "cpu", "--force"]


def reference(inputs: list[Path], output: Path) -> None:
    """An uninterrupted run, in-process."""
    result = CliRunner().invoke(main, spectrum_args(inputs, output))
    assert result.exit_code == 0, result.output


def load(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_leaves_no_partial_output_and_exits_promptly(
    tmp_path: Path, checkpoints: dict[str, Path], signum: int
) -> None:
    output = tmp_path / "spectrum.json"
    old = b'{"an": "older result, kept byte for byte"}\n'
    output.write_bytes(old)
    inputs = [checkpoints["base"], checkpoints["tuned"]]
    args = spectrum_args(inputs, output)
    proc = start_slowed(args)
    wait_for_records(proc, output, 2)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=EXIT_TIMEOUT + 20)
    took = time.monotonic() - sent

    assert proc.returncode == 130
    assert took < EXIT_TIMEOUT
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    match = re.fullmatch(
        r"Error: interrupted; no output was written; (\d+) finished matrices are kept in (.+) for a rerun "
        r"with --resume",
        lines[0],
    )
    assert match, lines[0]
    kept = int(match[1])
    assert 2 <= kept < 16 and Path(match[2]) == cache_dir(output)
    assert output.read_bytes() == old  # the older result is untouched
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no half-written file

    # The kept matrices are what --resume reuses; the result equals an uninterrupted run.
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"Resumed: reused {kept} finished matrices" in resumed.stdout
    reference(inputs, tmp_path / "reference.json")
    assert load(output) == load(tmp_path / "reference.json")
    assert not cache_dir(output).parent.exists()


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    """SIGKILL cannot be caught: whatever the cache holds at that moment is reused, the rest computed."""
    outdir = tmp_path / "spectra"
    inputs = [checkpoints["base"], checkpoints["tuned"], checkpoints["other"]]
    args = spectrum_args(inputs, outdir)
    first = outdir / "tuned.json"
    proc = start_slowed(args)
    wait_for_records(proc, first, 3)
    proc.kill()
    proc.communicate(timeout=EXIT_TIMEOUT)
    kept = finished_records(first)
    assert 3 <= kept < 32
    assert not first.exists() and not (outdir / "other.json").exists()

    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"Resumed: reused {kept} finished matrices" in resumed.stdout

    reference(inputs, tmp_path / "reference")
    for name in ("tuned.json", "other.json"):
        assert load(outdir / name) == load(tmp_path / "reference" / name)
    assert sorted(p.name for p in outdir.iterdir()) == ["other.json", "tuned.json"]  # cache removed


def interrupt_after(monkeypatch: pytest.MonkeyPatch, matrices: int) -> None:
    """Make the in-process engine raise KeyboardInterrupt (as Ctrl-C does) once `matrices` are finished."""
    measure = engine.measure_batch
    calls = {"n": 0}

    def measure_then_stop(*args: object, **kwargs: object) -> object:
        if calls["n"] == matrices:
            raise KeyboardInterrupt
        calls["n"] += 1
        return measure(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "measure_batch", measure_then_stop)


def interrupted_run(monkeypatch: pytest.MonkeyPatch, args: list[str], matrices: int) -> None:
    with monkeypatch.context() as patch:
        interrupt_after(patch, matrices)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 130
    assert f"{matrices} finished matrices are kept" in result.stderr


def test_resume_refuses_a_cache_of_other_inputs_unless_forced(
    tmp_path: Path, checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "spectrum.json"
    inputs = [checkpoints["base"], checkpoints["tuned"]]
    args = [a for a in spectrum_args(inputs, output) if a != "--force"]  # only --force discards a cache
    interrupted_run(monkeypatch, args, 5)
    # The tuned checkpoint changes before the rerun (a new download): nothing of the old run may be reused,
    # and its records are not discarded without --force either.
    checkpoints["tuned"].write_bytes(checkpoints["other"].read_bytes())
    refused = CliRunner().invoke(main, [*args, "--resume"])
    assert refused.exit_code == 1 and refused.stderr.startswith("Error: a cache of 5/")
    assert "for other inputs or options" in refused.stderr and "--force to discard it" in refused.stderr
    assert finished_records(output) == 5 and not output.exists()
    resumed = CliRunner().invoke(main, [*args, "--resume", "--force"])
    assert resumed.exit_code == 0 and "Resumed" not in resumed.stdout
    reference(inputs, tmp_path / "reference.json")
    assert load(output) == load(tmp_path / "reference.json")


def test_run_without_resume_keeps_the_cache_and_says_how_to_reuse_it(
    tmp_path: Path, checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """#24 finding 6: a rerun without --resume deleted the finished matrices silently."""
    output = tmp_path / "spectrum.json"
    inputs = [checkpoints["base"], checkpoints["tuned"]]
    args = [a for a in spectrum_args(inputs, output) if a != "--force"]  # only --force discards a cache
    interrupted_run(monkeypatch, args, 4)
    assert finished_records(output) == 4
    rerun = CliRunner().invoke(main, args)
    assert rerun.exit_code == 1, rerun.output
    total = json.loads((cache_dir(output) / "manifest.json").read_text())["total"]
    assert rerun.stderr.strip() == (
        f"Error: a cache of 4/{total} finished matrices for these inputs exists in {cache_dir(output)}; "
        "add --resume to reuse it, or --force to start over"
    )
    assert finished_records(output) == 4 and not output.exists()  # nothing deleted, nothing written
    forced = CliRunner().invoke(main, [*args, "--force"])  # only --force discards it
    assert forced.exit_code == 0 and "Resumed" not in forced.stdout
    assert not cache_dir(output).parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "spectrum.json"]


def test_a_damaged_cache_record_is_recomputed(
    tmp_path: Path, checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "spectrum.json"
    inputs = [checkpoints["base"], checkpoints["tuned"]]
    args = spectrum_args(inputs, output)
    interrupted_run(monkeypatch, args, 6)
    damaged = sorted(f for f in cache_dir(output).glob("*.json") if f.name != "manifest.json")[0]
    damaged.write_text('{"name": "cut sho')
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0
    assert "Resumed: reused 5 finished matrices" in resumed.stdout
    reference(inputs, tmp_path / "reference.json")
    assert load(output) == load(tmp_path / "reference.json")


def test_interrupt_while_writing_results_says_what_was_written(
    tmp_path: Path, checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltarank.analysis.results import SpectrumResult

    outdir = tmp_path / "spectra"
    inputs = [checkpoints["base"], checkpoints["tuned"], checkpoints["other"]]
    to_json = SpectrumResult.to_json
    calls = {"n": 0}

    def second_write_interrupted(self: SpectrumResult, path: str | Path | None = None) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return to_json(self, path)

    with monkeypatch.context() as patch:
        patch.setattr(SpectrumResult, "to_json", second_write_interrupted)
        result = CliRunner().invoke(main, spectrum_args(inputs, outdir))
    assert result.exit_code == 130
    assert (
        "Error: interrupted while writing: 1 of 2 result files written, none of them partial" in result.stderr
    )
    assert sorted(p.name for p in outdir.iterdir() if not p.name.startswith(".")) == ["tuned.json"]

    resumed = CliRunner().invoke(main, [*spectrum_args(inputs, outdir), "--resume"])
    assert resumed.exit_code == 0 and "Resumed: reused 32 finished matrices" in resumed.stdout
    reference(inputs, tmp_path / "reference")
    for name in ("tuned.json", "other.json"):
        assert load(outdir / name) == load(tmp_path / "reference" / name)
