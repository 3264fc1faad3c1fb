"""`deltarank spectrum` through click's runner: the JSON contract, the table, warnings, options, bad inputs."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from deltarank.cli import main
from tests.conftest import build_tiny_llama
from tests.planting import (
    cast,
    make_lora_adapter,
    plant,
    planted_delta,
    save_safetensors,
    write_llama_gguf,
    write_raw_safetensors,
    write_safetensors_bytes,
)

SIGMA_RTOL = 1e-5
Q0 = "model.layers.0.self_attn.q_proj.weight"
K0 = "model.layers.0.self_attn.k_proj.weight"
DOWN1 = "model.layers.1.mlp.down_proj.weight"
# σ ∝ 4, 3, 2, 1 in q_proj of layer 0; rank 1 in k_proj; rank 3 in layer 1's down_proj.
PLANTS = {Q0: [0.2, 0.15, 0.1, 0.05], K0: [0.1], DOWN1: [0.1, 0.08, 0.06]}
MATRIX_FIELDS = {
    "name",
    "layer",
    "module",
    "shape",
    "singular_values",
    "ranks",
    "delta_norm",
    "base_norm",
    "erased_fraction",
    "random_energy_90",
    "base_dtype",
    "tuned_dtype",
}
RANK_KEYS = {
    "energy_50",
    "energy_80",
    "energy_90",
    "energy_95",
    "energy_99",
    "entropy",
    "stable",
    "participation",
    "numerical",
    "noise_floor",
}
OLD_OUTPUT = '{"previous": "result"}'


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An fp32 base directory, and tuned fp32 / bf16 directories with the planted deltas."""
    root = tmp_path_factory.mktemp("ckpts")
    base = {n: t.detach() for n, t in build_tiny_llama().state_dict().items()}
    deltas = {n: planted_delta(tuple(base[n].shape), s, seed=i) for i, (n, s) in enumerate(PLANTS.items())}
    save_safetensors(root / "base" / "model.safetensors", base)
    save_safetensors(root / "tuned32" / "model.safetensors", plant(base, deltas, torch.float32))
    base16 = cast(base, torch.bfloat16)
    save_safetensors(root / "base16" / "model.safetensors", base16)
    save_safetensors(root / "tuned16" / "model.safetensors", plant(base16, deltas, torch.bfloat16))
    return {
        "base": root / "base",
        "tuned32": root / "tuned32",
        "base16": root / "base16",
        "tuned16": root / "tuned16",
    }


def _run(*args: object) -> Result:
    return CliRunner().invoke(main, ["spectrum", *[str(a) for a in args]])


def _ok(*args: object) -> Result:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def _matrices(path: Path) -> dict[str, dict]:
    return {m["name"]: m for m in json.loads(path.read_text())["matrices"]}


def test_json_schema_fields_and_planted_values(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "spectrum.json"
    _ok(ckpts["base"], ckpts["tuned32"], "-o", out)
    data = json.loads(out.read_text())
    assert data["schema"] == "deltarank.spectrum/1"
    assert data["thresholds"] == [0.5, 0.8, 0.9, 0.95, 0.99] and data["precision"] == "float32"
    assert data["skipped"] == []
    assert len(data["matrices"]) == 14
    for matrix in data["matrices"]:
        assert set(matrix) >= MATRIX_FIELDS, matrix["name"]
        assert set(matrix["ranks"]) == RANK_KEYS
        assert len(matrix["singular_values"]) == min(matrix["shape"])
    q = _matrices(out)[Q0]
    assert (q["layer"], q["module"], q["shape"]) == (0, "q_proj", [32, 32])
    assert (q["base_dtype"], q["tuned_dtype"]) == ("F32", "F32")
    np.testing.assert_allclose(q["singular_values"][:4], PLANTS[Q0], rtol=SIGMA_RTOL)
    assert (q["ranks"]["energy_50"], q["ranks"]["energy_90"], q["ranks"]["energy_99"]) == (1, 3, 4)
    assert q["ranks"]["stable"] == pytest.approx(30 / 16, rel=SIGMA_RTOL)
    assert q["ranks"]["participation"] == pytest.approx(900 / 354, rel=SIGMA_RTOL)
    assert q["ranks"]["numerical"] == q["ranks"]["noise_floor"] == 4
    assert q["delta_norm"] == pytest.approx(float(np.linalg.norm(PLANTS[Q0])), rel=SIGMA_RTOL)
    assert q["erased_fraction"] == 0.0 and q["random_energy_90"] == 17  # MP reference of a 32 × 32 matrix
    untouched = _matrices(out)["model.layers.1.self_attn.q_proj.weight"]
    assert untouched["delta_norm"] == 0.0 and untouched["erased_fraction"] == 1.0


def _table(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["module", "matrices"])
    assert lines[start].split() == ["module", "matrices", "energy_90", "noise_floor", "gauss_e90", "width"]
    rows = {}
    for line in lines[start + 2 :]:
        if line.startswith(tuple("0123456789")):  # the "14 matrices on cpu" footer
            break
        rows[line.split()[0]] = line.split()[1:]
    return rows


def test_terminal_table_shows_module_medians(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    result = _ok(ckpts["base16"], ckpts["tuned16"], "-o", out)
    rows = _table(result.stdout)
    assert list(rows) == ["down_proj", "gate_proj", "up_proj", "k_proj", "o_proj", "q_proj", "v_proj"]
    by_module: dict[str, list[dict]] = {}
    for matrix in _matrices(out).values():
        by_module.setdefault(matrix["module"], []).append(matrix)
    for module, items in by_module.items():
        count, e90, floor, gauss, width = rows[module]
        assert int(count) == len(items) == 2
        assert float(e90) == statistics.median(m["ranks"]["energy_90"] for m in items)
        assert float(floor) == statistics.median(m["ranks"]["noise_floor"] for m in items)
        assert float(gauss) == statistics.median(m["random_energy_90"] for m in items)
        assert int(width) == min(items[0]["shape"])
    # q_proj: planted rank 4 in layer 0, nothing in layer 1 -> median noise floor 2
    assert rows["q_proj"][2] == "2"
    assert "14 matrices on cpu (float32); medians over layers" in result.stdout
    assert f"Wrote {out}" in result.stdout


def test_bf16_warning_and_noise_floor(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    result = _ok(ckpts["base16"], ckpts["tuned16"], "-o", out)
    assert (
        "Warning: checkpoint stored in BF16: rounding noise is full-rank, so the 'numerical' rank is meaningless; "
        "read 'noise_floor' instead" in result.stderr
    )
    matrices = _matrices(out)
    for name, sigma in PLANTS.items():
        assert matrices[name]["ranks"]["noise_floor"] == len(sigma), name
        assert matrices[name]["ranks"]["numerical"] >= 0.9 * min(matrices[name]["shape"]), name
        assert (matrices[name]["base_dtype"], matrices[name]["tuned_dtype"]) == ("BF16", "BF16")
    fp32 = _ok(ckpts["base"], ckpts["tuned32"], "-o", tmp_path / "f.json")
    assert "stored in" not in fp32.stderr


def test_no_bf16_warning_for_a_lora_adapter_on_a_bf16_base(ckpts: dict[str, Path], tmp_path: Path) -> None:
    """LoRA σ come from the factors: a bf16 base adds no rounding noise, so no warning."""
    make_lora_adapter(build_tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    out = tmp_path / "s.json"
    result = _ok(ckpts["base16"], tmp_path / "adapter", "-o", out)
    assert "stored in" not in result.stderr
    q = _matrices(out)[Q0]
    assert (q["base_dtype"], q["kind"], q["ranks"]["numerical"]) == ("BF16", "lora", 4)


def test_quantized_gguf_warning(ckpts: dict[str, Path], tmp_path: Path) -> None:
    model = build_tiny_llama()
    gguf = write_llama_gguf(tmp_path / "q8.gguf", model.state_dict(), model.config, quant="Q8_0")
    out = tmp_path / "s.json"
    result = _ok(gguf, ckpts["tuned32"], "-o", out)
    assert "Warning: checkpoint stored quantized (Q8_0): quantization error is not modelled" in result.stderr
    untouched = _matrices(out)["model.layers.1.self_attn.q_proj.weight"]
    assert untouched["base_dtype"] == "Q8_0" and untouched["delta_norm"] > 0  # pure quantization error


def test_thresholds_become_energy_keys(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    _ok(ckpts["base"], ckpts["tuned32"], "-o", out, "--thresholds", "0.995,0.5,0.75")
    assert json.loads(out.read_text())["thresholds"] == [0.5, 0.75, 0.995]
    ranks = _matrices(out)[Q0]["ranks"]
    # energies 16, 9, 4, 1 of 30: 0.5 -> 1, 0.75 -> 2 (25/30), 0.995 -> 4
    assert (ranks["energy_50"], ranks["energy_75"], ranks["energy_99.5"]) == (1, 2, 4)
    assert "energy_90" not in ranks


@pytest.mark.parametrize(
    ("value", "problem"), [("0.5,abc", "expected comma-separated numbers"), ("0.5,1.5", "(0, 1]")]
)
def test_bad_thresholds(ckpts: dict[str, Path], tmp_path: Path, value: str, problem: str) -> None:
    result = _run(ckpts["base"], ckpts["tuned32"], "-o", tmp_path / "s.json", "--thresholds", value)
    assert result.exit_code == 2 and problem in result.stderr and result.stderr.startswith("Error: ")


def test_workers_give_the_same_file_and_zero_is_refused(ckpts: dict[str, Path], tmp_path: Path) -> None:
    one, three = tmp_path / "one.json", tmp_path / "three.json"
    _ok(ckpts["base"], ckpts["tuned32"], "-o", one, "--workers", "1")
    _ok(ckpts["base"], ckpts["tuned32"], "-o", three, "--workers", "3")
    for a, b in zip(_matrices(one).values(), _matrices(three).values(), strict=True):
        assert a["ranks"] == pytest.approx(b["ranks"], rel=1e-9)
    np.testing.assert_allclose(_matrices(three)[Q0]["singular_values"][:4], PLANTS[Q0], rtol=SIGMA_RTOL)
    result = _run(ckpts["base"], ckpts["tuned32"], "-o", tmp_path / "zero.json", "--workers", "0")
    assert result.exit_code == 2 and "--workers" in result.stderr and not (tmp_path / "zero.json").exists()


def test_the_program_writes_every_output_complete_and_exits_with_its_status(
    ckpts: dict[str, Path], tmp_path: Path
) -> None:
    """`python -m deltarank spectrum` in a subprocess: complete files, the last line flushed, exit statuses."""
    import subprocess
    import sys

    out, table = tmp_path / "s.json", tmp_path / "s.csv"
    args = [sys.executable, "-m", "deltarank", "spectrum", str(ckpts["base"]), str(ckpts["tuned32"])]
    done = subprocess.run([*args, "-o", str(out), "--csv", str(table)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f"Wrote {out} and {table}")  # the last line was flushed
    assert len(json.loads(out.read_text())["matrices"]) == 14
    assert len(list(csv.DictReader(io.StringIO(table.read_text())))) == 14
    bad = subprocess.run(
        [*args[:4], str(tmp_path / "missing"), str(ckpts["tuned32"])], capture_output=True, text=True
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("Error: ")


def test_csv_has_one_row_per_matrix(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out, table = tmp_path / "s.json", tmp_path / "s.csv"
    result = _ok(ckpts["base"], ckpts["tuned32"], "-o", out, "--csv", table)
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert len(rows) == 14
    q = next(r for r in rows if r["name"] == Q0)
    assert (q["rows"], q["cols"], q["energy_90"], q["noise_floor"], q["base_dtype"]) == (
        "32",
        "32",
        "3",
        "4",
        "F32",
    )
    assert f"and {table}" in result.stdout


def test_include_and_exclude(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    _ok(ckpts["base"], ckpts["tuned32"], "-o", out, "--include", "embed_tokens|lm_head")
    matrices = _matrices(out)
    assert sorted(matrices) == ["lm_head.weight", "model.embed_tokens.weight"]
    assert matrices["lm_head.weight"]["layer"] is None and matrices["lm_head.weight"]["shape"] == [128, 32]
    _ok(ckpts["base"], ckpts["tuned32"], "-o", out, "--exclude", r"\.mlp\.", "--force")
    assert sorted({m["module"] for m in _matrices(out).values()}) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_float64_precision(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    _ok(ckpts["base"], ckpts["tuned32"], "-o", out, "--precision", "float64", "--include", "q_proj")
    assert json.loads(out.read_text())["precision"] == "float64"
    np.testing.assert_allclose(_matrices(out)[Q0]["singular_values"][:4], PLANTS[Q0], rtol=SIGMA_RTOL)


def test_shape_mismatch_is_skipped_and_listed(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    tuned = load_file(str(ckpts["tuned32"] / "model.safetensors"))
    tuned[K0] = tuned[K0][:, :30].contiguous()
    save_safetensors(tmp_path / "tuned" / "model.safetensors", tuned)
    out = tmp_path / "s.json"
    result = _ok(ckpts["base"], tmp_path / "tuned", "-o", out)
    data = json.loads(out.read_text())
    assert data["skipped"] == [{"name": K0, "reason": "shape mismatch: base (16, 32), tuned (16, 30)"}]
    assert K0 not in _matrices(out) and len(data["matrices"]) == 13
    assert f"1 tensor(s) skipped: {K0} (shape mismatch" in result.stderr


def test_lora_adapter_named_by_base_weight(ckpts: dict[str, Path], tmp_path: Path) -> None:
    make_lora_adapter(
        build_tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]
    )
    out = tmp_path / "s.json"
    _ok(ckpts["base"], tmp_path / "adapter", "-o", out)
    matrices = _matrices(out)
    assert sorted(matrices) == [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.v_proj.weight",
    ]
    assert {m["kind"] for m in matrices.values()} == {"lora"} and matrices[Q0]["lora_rank"] == 4
    assert matrices[Q0]["ranks"]["noise_floor"] == 4 and matrices[Q0]["singular_values"][4:] == [0.0] * 28


def test_gpt2_table_keeps_attention_and_mlp_c_proj_apart(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64))
    base = {n: t.detach() for n, t in model.state_dict().items()}
    name = "transformer.h.0.mlp.c_proj.weight"  # Conv1D (in 128, out 32)
    save_safetensors(tmp_path / "base.safetensors", base)
    tuned = plant(base, {name: planted_delta((128, 32), [0.3, 0.2], seed=1)}, torch.float32)
    save_safetensors(tmp_path / "tuned.safetensors", tuned)
    out = tmp_path / "s.json"
    result = _ok(tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", "-o", out)
    rows = _table(result.stdout)
    assert list(rows) == ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]
    assert [rows[m][0] for m in rows] == [
        "2",
        "2",
        "2",
        "2",
    ]  # one matrix per layer each, not 4 pooled c_proj
    assert rows["mlp.c_proj"][2] == "1"  # median noise floor over 2 layers: 2 planted and 0
    assert rows["attn.c_proj"][2] == "0"
    assert _matrices(out)[name]["module"] == "mlp.c_proj"


def test_gguf_base(ckpts: dict[str, Path], tmp_path: Path) -> None:
    model = build_tiny_llama()
    gguf = write_llama_gguf(tmp_path / "base.gguf", model.state_dict(), model.config)
    out = tmp_path / "s.json"
    _ok(gguf, ckpts["tuned32"], "-o", out)
    matrices = _matrices(out)
    assert len(matrices) == 14
    np.testing.assert_allclose(matrices[Q0]["singular_values"][:4], PLANTS[Q0], rtol=SIGMA_RTOL)
    assert matrices[Q0]["ranks"]["noise_floor"] == 4 and matrices[Q0]["base_dtype"] == "F32"


# --- bad inputs: one `Error:` line naming the file and the problem, exit 1, old output untouched --------------


def _bad_input(ckpts: dict[str, Path], tmp_path: Path, kind: str) -> tuple[list[object], str, str]:
    """CLI arguments (BASE, TUNED, options), the path the message must name, and the problem it must state."""
    base, tuned = ckpts["base"], ckpts["tuned32"]
    good = (tuned / "model.safetensors").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    target = bad / "model.safetensors"
    if kind == "missing_base":
        return [tmp_path / "nope", tuned], str(tmp_path / "nope"), "no such file or directory"
    if kind == "missing_tuned":
        return [base, tmp_path / "nope"], str(tmp_path / "nope"), "no such file or directory"
    if kind == "truncated":
        target.write_bytes(good[: len(good) // 2])
        return [base, bad], str(target), "truncated file"
    if kind == "corrupt":
        target.write_bytes(bytes(range(256)) * 64)
        return [base, bad], str(target), "not a safetensors file"
    if kind == "lying_header":
        header = {Q0: {"dtype": "F32", "shape": [32, 32], "data_offsets": [0, 2048]}}
        write_raw_safetensors(target, header, b"\x00" * 4096)
        return [base, bad], str(target), f"header lies about tensor '{Q0}'"
    if kind in ("pickle_bin", "pickle_pt"):
        name = "pytorch_model.bin" if kind == "pickle_bin" else "model.pt"
        path = bad / name
        torch.save({Q0: torch.ones(2)}, path)
        args: list[object] = [base, bad] if kind == "pickle_bin" else [path, tuned]
        return (
            args,
            str(path),
            "pickle checkpoints are never loaded (they can run code); convert it to safetensors",
        )
    if kind == "disjoint":
        write_safetensors_bytes(target, {"encoder.layer.0.dense.weight": torch.ones(4, 4)})
        return [base, bad], str(target), "have no tensor name in common"
    if kind in ("nan", "inf"):
        from safetensors.torch import load_file

        tensors = load_file(str(tuned / "model.safetensors"))
        tensors[DOWN1][3, 5] = float("nan") if kind == "nan" else float("inf")
        save_safetensors(target, tensors)
        return [base, bad], str(target), f"tensor '{DOWN1}' contains NaN or Inf"
    if kind == "nan_adapter":
        from safetensors.torch import load_file

        make_lora_adapter(build_tiny_llama, bad, r=2, target_modules=["q_proj"])
        factors = load_file(str(bad / "adapter_model.safetensors"))
        factors[f"base_model.model.{Q0.removesuffix('.weight')}.lora_B.weight"][0, 0] = float("nan")
        save_safetensors(bad / "adapter_model.safetensors", factors)
        return [base, bad], str(bad), f"tensor '{Q0} (lora_B)' contains NaN or Inf"
    if kind == "bad_regex":
        return [base, tuned, "--include", "("], "--include '('", "is not a valid regular expression"
    raise AssertionError(kind)


BAD_INPUTS = [
    "missing_base",
    "missing_tuned",
    "truncated",
    "corrupt",
    "lying_header",
    "pickle_bin",
    "pickle_pt",
    "disjoint",
    "nan",
    "inf",
    "nan_adapter",
    "bad_regex",
]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_one_error_line_and_old_output_untouched(
    ckpts: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    args, named, problem = _bad_input(ckpts, tmp_path, kind)
    out = tmp_path / "spectrum.json"
    out.write_text(OLD_OUTPUT)
    result = _run(*args, "-o", out, "--force")  # even with --force, bad input leaves the old result untouched
    assert result.exit_code == (2 if kind == "bad_regex" else 1), result.output  # a bad option value: usage
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert named in lines[0] and problem in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert out.read_text() == OLD_OUTPUT
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "bad") == ["spectrum.json"]  # no temp/cache


def test_nan_in_a_sharded_checkpoint_names_shard_and_tensor(ckpts: dict[str, Path], tmp_path: Path) -> None:
    model = build_tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    out = tmp_path / "s.json"
    out.write_text(OLD_OUTPUT)
    result = _run(ckpts["base"], tmp_path / "sharded", "-o", out, "--force")
    assert result.exit_code == 1
    shard = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())["weight_map"][
        DOWN1
    ]
    assert result.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'sharded' / shard}: tensor '{DOWN1}' contains NaN or Inf"
    ]
    assert out.read_text() == OLD_OUTPUT


def test_unwritable_output_fails_before_any_work(ckpts: dict[str, Path], tmp_path: Path) -> None:
    result = _run(ckpts["base"], ckpts["tuned32"], "-o", tmp_path / "missing" / "s.json")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "does not exist" in result.stderr
    assert not (tmp_path / "missing").exists()
