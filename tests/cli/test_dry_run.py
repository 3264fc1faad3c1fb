"""`--dry-run` of spectrum, intruders, similarity and extract: the plan from headers only, nothing written."""

from __future__ import annotations

import importlib.util
import json
import math
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from deltarank.analysis.engine.run import spectrum
from deltarank.analysis.tools.extract import extract
from deltarank.analysis.tools.intruders import intruders
from deltarank.analysis.tools.memory import PreviewPair, estimate_memory
from deltarank.analysis.tools.preview import preview
from deltarank.analysis.tools.similarity import similarity
from deltarank.cli import main
from tests.analysis.subspace_models import save_lora

DROPPED = "model.layers.1.mlp.down_proj.weight"
# Generous: well under 1 s on an idle machine (headers of 7 shards); this one is shared and heavily loaded.
SEVEN_B_BOUND_S = 5.0


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tuned_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A dense tuned copy of the tiny model: every 2-D weight perturbed, one selected weight missing."""
    tensors = load_file(str(tiny_model_dir / "model.safetensors"))
    generator = torch.Generator().manual_seed(3)
    tuned = {
        name: (w + 0.01 * torch.randn(w.shape, generator=generator)) if w.dim() == 2 else w
        for name, w in tensors.items()
        if name != DROPPED
    }
    out = tmp_path / "tuned"
    out.mkdir()
    save_file(tuned, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    return out


def test_spectrum_dry_run_lists_what_the_run_analyses(tiny_model_dir: Path, tuned_dir: Path) -> None:
    plan = preview(tiny_model_dir, [tuned_dir], command="spectrum", device="cpu")
    result = spectrum(tiny_model_dir, tuned_dir, device="cpu")
    assert [p.name for p in plan.pairs] == [m.name for m in result.matrices]
    assert [(s.name, s.reason) for s in plan.all_skipped] == [(s.name, s.reason) for s in result.skipped]
    assert any(s.name == DROPPED for s in plan.all_skipped)
    assert plan.decompositions == len(result.matrices) and plan.factored == 0
    assert {p.kind for p in plan.pairs} == {"dense"} and plan.memory.peak_bytes > 0
    assert json.loads(json.dumps(plan.to_dict()))["groups"][0]["pairs"][0]["kind"] == "dense"


def test_spectrum_dry_run_writes_nothing_even_over_an_existing_output(
    tiny_model_dir: Path, tuned_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "spectrum.json"
    out.write_text("an earlier result")
    before = files_under(tmp_path)
    code, stdout, stderr = run(
        "spectrum", tiny_model_dir, tuned_dir, "-o", out, "--csv", "s.csv", "--dry-run"
    )
    assert code == 0, stderr
    assert files_under(tmp_path) == before  # no result, CSV or resume cache; the old output untouched
    assert "model.layers.0.self_attn.q_proj.weight" in stdout and "32×32" in stdout
    assert f"{DROPPED}: missing in tuned checkpoint" in stdout
    assert "Estimated peak memory" in stdout and "decompositions" in stdout


@pytest.mark.parametrize("command", ["intruders", "similarity", "extract"])
def test_tool_dry_runs_list_what_the_runs_analyse(
    command: str, tiny_model_dir: Path, tuned_dir: Path, tmp_path: Path
) -> None:
    lora = save_lora(tmp_path / "lora", rank=4)
    if command == "intruders":
        tuned, result = [tuned_dir], intruders(tiny_model_dir, tuned_dir, device="cpu")
        analysed, skipped = [m.name for m in result.matrices], result.skipped
    elif command == "similarity":
        tuned, result = [tuned_dir, lora], similarity(tiny_model_dir, tuned_dir, lora, device="cpu")
        analysed, skipped = [m.name for m in result.matrices] * 2, result.skipped
    else:
        tuned = [tuned_dir]
        result = extract(tiny_model_dir, tuned_dir, tmp_path / "adapter", rank=2, device="cpu")
        analysed, skipped = [m.name for m in result.matrices], result.skipped
    plan = preview(tiny_model_dir, tuned, command=command, device="cpu")
    assert [p.name for p in plan.pairs] == analysed
    assert sorted((s.name, s.reason) for s in plan.all_skipped) == sorted((s.name, s.reason) for s in skipped)
    assert plan.decompositions == (2 if command == "intruders" else 1) * len(plan.pairs)

    out = tmp_path / "existing"
    out.mkdir()
    (out / "kept.json").write_text("an earlier result")
    before = files_under(tmp_path)
    extra = ["--lora-rank", "2"] if command == "extract" else []
    code, stdout, stderr = run(command, tiny_model_dir, *tuned, "-o", out, *extra, "--dry-run")
    assert code == 0, stderr
    assert files_under(tmp_path) == before
    assert f"Dry run of {command}" in stdout and "Estimated peak memory" in stdout


@pytest.mark.parametrize("embeddings", [False, True])
def test_extract_dry_run_follows_embeddings(
    embeddings: bool, tiny_model_dir: Path, tuned_dir: Path, tmp_path: Path
) -> None:
    """Embedding and LM head: skipped with extract's own reason, or listed with `embeddings`."""
    include = r"embed_tokens|lm_head|layers\.0\.self_attn\.q_proj"
    plan = preview(
        tiny_model_dir, [tuned_dir], command="extract", device="cpu", include=include, embeddings=embeddings
    )
    result = extract(
        tiny_model_dir,
        tuned_dir,
        tmp_path / "a",
        rank=2,
        device="cpu",
        include=include,
        embeddings=embeddings,
    )
    assert [p.name for p in plan.pairs] == [m.name for m in result.matrices]
    assert [(s.name, s.reason) for s in plan.all_skipped] == [(s.name, s.reason) for s in result.skipped]
    assert len(plan.pairs) == (3 if embeddings else 1)
    code, stdout, stderr = run(
        "extract",
        tiny_model_dir,
        tuned_dir,
        "-o",
        tmp_path / "b",
        "--lora-rank",
        "2",
        "--include",
        include,
        *(["--embeddings"] if embeddings else []),
        "--dry-run",
    )
    assert code == 0, stderr
    assert ("lm_head.weight: embedding or LM head" in stdout) is not embeddings
    assert not (tmp_path / "b").exists()


def test_lora_adapter_pairs_show_kind_lora(tiny_model_dir: Path, tmp_path: Path) -> None:
    lora = save_lora(tmp_path / "lora", rank=4)
    plan = preview(tiny_model_dir, [lora], command="spectrum", device="cpu")
    assert plan.pairs and {p.kind for p in plan.pairs} == {"lora"}
    assert all(p.rank == 4 and p.factored for p in plan.pairs)
    assert plan.factored == plan.decompositions == len(plan.pairs)
    assert plan.groups[0].source == "LORA adapter"
    code, stdout, stderr = run("spectrum", tiny_model_dir, lora, "--dry-run")
    assert code == 0, stderr
    assert "LORA adapter" in stdout
    assert all(line.rstrip().endswith("lora") for line in stdout.splitlines() if "_proj.weight" in line)


def test_bad_inputs_still_fail_with_one_line(tiny_model_dir: Path, tuned_dir: Path, tmp_path: Path) -> None:
    cases = [
        ("spectrum", tiny_model_dir, tmp_path / "missing"),
        ("intruders", tiny_model_dir, tmp_path / "missing"),
        ("similarity", tiny_model_dir, tuned_dir, tuned_dir, "--sizes", "1,x"),
        ("extract", tiny_model_dir, tuned_dir, "-o", tmp_path / "a"),  # neither --lora-rank nor --energy
        ("spectrum", tiny_model_dir, tuned_dir, "--include", "nothing-matches-this"),
    ]
    for args in cases:
        code, stdout, stderr = run(*args, "--dry-run")
        usage = "--sizes" in args or "-o" in args  # a bad option value or a missing option: usage error, 2
        assert code == (2 if usage else 1), (args, stdout, stderr)
        assert stderr.startswith("Error:") and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "a").exists()


def write_sparse_sharded(
    directory: Path, shapes: dict[str, tuple[int, ...]], shard_bytes: int = 2 * 1024**3
) -> None:
    """A bf16 sharded Hugging Face checkpoint whose headers are real and whose data are sparse holes."""
    directory.mkdir(parents=True)
    files, shards = bench_pairs().plan_shards(shapes, shard_bytes)
    for file, names in zip(files, shards, strict=True):
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name in names:
            end = offset + 2 * math.prod(shapes[name])
            header[name] = {"dtype": "BF16", "shape": list(shapes[name]), "data_offsets": [offset, end]}
            offset = end
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with (directory / file).open("wb") as handle:
            handle.write(struct.pack("<Q", len(raw)) + raw)
            handle.truncate(8 + len(raw) + offset)  # the data: a hole, no disk space
    weight_map = {name: files[i] for i, names in enumerate(shards) for name in names}
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def bench_pairs() -> Any:
    """benchmarks/pairs.py, the one definition of the Llama-2-7B shapes and of their shard plan."""
    spec = importlib.util.spec_from_file_location(
        "bench_pairs", Path(__file__).parents[2] / "benchmarks" / "pairs.py"
    )
    assert spec is not None and spec.loader is not None
    pairs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pairs)
    return pairs


def llama7b_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of a Llama-2-7B checkpoint: benchmarks/pairs.py's `llama7b_shapes`."""
    return dict(bench_pairs().llama7b_shapes())


def test_seven_b_sharded_checkpoint_plans_from_headers_fast(tmp_path: Path) -> None:
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    for directory in (base, tuned):
        write_sparse_sharded(directory, llama7b_shapes())
    assert len(list(base.glob("*.safetensors"))) == 7  # 13.5 GB of bf16 in 2 GB shards, all holes
    start = time.perf_counter()
    plan = preview(base, [tuned], command="spectrum", device="cpu", workers=2)
    elapsed = time.perf_counter() - start
    assert elapsed < SEVEN_B_BOUND_S, f"the 7B-shaped dry run took {elapsed:.2f} s"
    assert len(plan.pairs) == 224 and plan.decompositions == 224 and not plan.all_skipped
    assert plan.memory.shape in ((11008, 4096), (4096, 11008))
    assert 1024**3 < plan.memory.peak_bytes < 8 * 1024**3  # a few deltas of 11008 × 4096, not a model
    code, stdout, stderr = run(
        "extract", base, tuned, "-o", tmp_path / "out", "--lora-rank", "8", "--dry-run"
    )
    assert code == 0, stderr
    assert "224 pairs" in stdout and not (tmp_path / "out").exists()


def test_memory_estimate_follows_the_gram_solver() -> None:
    """One F32 pair, one worker: the stored pair, ΔW, the noise pass, the float64 copy and the Gram."""
    pair = PreviewPair("w", (300, 100), "F32", "F32", "dense")
    m, n = pair.shape
    estimate = estimate_memory("spectrum", [pair], torch.float32, "gram", workers=1)
    forming = 8 * m * n + 4 * m * n + 16 * m * n  # stored pair, ΔW, noise pass (F32 needs no widening)
    assert estimate.peak_bytes == 4 * m * n + max(8 * m * n + 8 * n * n, 16 * n * n) + forming
    assert (
        estimate_memory("spectrum", [pair], torch.float32, "gram", workers=2).peak_bytes > estimate.peak_bytes
    )


def test_memory_estimate_of_a_7b_mlp_weight_uses_row_blocks() -> None:
    """11008 × 4096 bf16: blocked Gram (no float64 copy of ΔW) and one delta read ahead, as run.py does."""
    pair = PreviewPair("mlp", (11008, 4096), "BF16", "BF16", "dense")
    estimate = estimate_memory("spectrum", [pair], torch.float32, "gram", workers=2)
    entries, k = 11008 * 4096, 4096
    assert "1 read ahead" in estimate.in_flight
    gram = dict(estimate.parts)["gram solver working arrays × 2"]
    assert 2 * 16 * k * k <= gram < 2 * (16 * k * k + 8 * entries // 4)
    assert (
        estimate.peak_bytes < 2 * 8 * entries + 2 * 4 * entries + 16 * entries
    )  # well under a float64 copy each


def merge_peak(entries: int, m: int, n: int, count: int, drops: int) -> int:
    """The merge estimate of one F32 dense pair at float32, written out: the next pair's stored tensors, the
    `count` dense deltas and their SVDs' U, V, and the larger of the current pair's stored tensors and gesdd
    input copy and workspace, TIES's signs, counters and trim, and DARE's draw, residuals and accumulators."""
    k = min(m, n)
    raw = 8 * entries
    kept = count * 4 * entries + count * 4 * (m + n) * k
    svd = raw + 4 * (entries + 7 * k * k + 4 * k)
    ties = count * entries + 4 * entries + (2 * 4 + 1) * entries
    dare = (4 + 1 + (3 + drops) * 4) * entries
    return raw + kept + max(svd, ties, dare)


def test_similarity_memory_estimate_holds_every_delta_of_the_merge() -> None:
    """With n TUNED (or --merge) similarity keeps the n deltas of a matrix and their SVDs at once: each further
    TUNED adds a dense ΔW and its U, V (and an int8 sign while TIES's pass is the peak)."""
    m, n = 96, 160
    pair = PreviewPair("w", (m, n), "F32", "F32", "dense")
    two = estimate_memory("similarity", [pair] * 2, torch.float32, "svd")
    assert "1 pair at a time" in two.in_flight  # two TUNED without --merge: as before
    peaks = {}
    for count in (2, 3, 4, 6, 40):
        drops = None if count > 2 else 2  # n ≥ 3 measure the merge geometry, two only with --merge
        estimate = estimate_memory(
            "similarity", [pair], torch.float32, "svd", deltas=count, merge_drops=drops
        )
        peaks[count] = estimate.peak_bytes
        assert estimate.peak_bytes == merge_peak(m * n, m, n, count, 2), count
        assert f"{count} deltas of one matrix kept" in estimate.in_flight
        inferred = estimate_memory("similarity", [pair] * count, torch.float32, "svd", merge_drops=drops)
        assert inferred.peak_bytes == estimate.peak_bytes  # a preview lists every TUNED's copy of the matrix
    per_delta = 4 * m * n + 4 * (m + n) * min(m, n)
    assert peaks[3] - peaks[2] == peaks[4] - peaks[3] == per_delta and peaks[6] - peaks[4] == 2 * per_delta
    assert peaks[40] > 40 * per_delta and peaks[2] > two.peak_bytes
    more_drops = estimate_memory("similarity", [pair], torch.float32, "svd", deltas=3, merge_drops=9)
    assert more_drops.peak_bytes == merge_peak(m * n, m, n, 3, 9) > peaks[3]


def test_similarity_dry_run_counts_the_tuned(tiny_model_dir: Path, tuned_dir: Path) -> None:
    for tuned, extra in (([tuned_dir] * 2, []), ([tuned_dir] * 2, ["--merge"]), ([tuned_dir] * 4, [])):
        code, stdout, stderr = run(
            "similarity", tiny_model_dir, *tuned, *extra, "--dry-run", "--device", "cpu"
        )
        assert code == 0, stderr
        assert (f"{len(tuned)} deltas of one matrix kept" in stdout) == bool(extra or len(tuned) > 2)
    two, four = (preview(tiny_model_dir, [tuned_dir] * n, command="similarity").memory for n in (2, 4))
    assert four.peak_bytes > two.peak_bytes and four.shape == two.shape
