"""A corpus of bad inputs: each gives one `Error:` line naming the file and the problem, exit 1, no traceback,
and leaves every file as it was (no output created or overwritten, no cache left behind, inputs untouched).

Every case runs twice: writing over an existing result (`-o out/spectrum.json`, which must stay byte-identical)
and with a second, good checkpoint into a new directory (`-o out/spectra`, which must not appear), so some
matrices are finished before the bad one is met.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deltarank.cli import main
from tests.reliability.corpus import (
    DIM,
    LORA_CONFIG,
    assert_one_line_error,
    block_names,
    random_weights,
    tree_state,
    tuned_from,
    write_adapter,
    write_pickle_payload,
    write_raw_safetensors,
    write_safetensors,
)

OLD_RESULT = b'{"schema": "an older result that must survive"}\n'
F32_MATRIX = {"dtype": "F32", "shape": [DIM, DIM]}
MATRIX_BYTES = DIM * DIM * 4


@dataclass(frozen=True)
class Workspace:
    """A good base and two good tuned checkpoints, an existing output and the pickle marker path."""

    root: Path
    base: Path
    tuned: Path
    other: Path
    out: Path
    marker: Path

    def path(self, name: str) -> Path:
        """A path for a bad input, under inputs/."""
        return self.root / "inputs" / name


@dataclass(frozen=True)
class BadCase:
    """What to run and what the one error line must say."""

    base: Path
    tuned: Path
    named: Path  # the file the message must name
    problem: str  # regular expression the message must match


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    weights = random_weights(seed=0)
    inputs = tmp_path / "inputs"
    out = tmp_path / "out"
    out.mkdir()
    (out / "spectrum.json").write_bytes(OLD_RESULT)
    return Workspace(
        root=tmp_path,
        base=write_safetensors(inputs / "base.safetensors", weights),
        tuned=write_safetensors(inputs / "tuned.safetensors", tuned_from(weights, seed=1)),
        other=write_safetensors(inputs / "other.safetensors", tuned_from(weights, seed=2)),
        out=out,
        marker=tmp_path / "UNPICKLED",
    )


CASES: dict[str, Callable[[Workspace], BadCase]] = {}


def case(builder: Callable[[Workspace], BadCase]) -> Callable[[Workspace], BadCase]:
    CASES[builder.__name__] = builder
    return builder


def bad_tuned(ws: Workspace, path: Path, problem: str, named: Path | None = None) -> BadCase:
    return BadCase(ws.base, path, named or path, problem)


@case
def missing_path(ws: Workspace) -> BadCase:
    return bad_tuned(ws, ws.path("nowhere.safetensors"), "no such file or directory")


@case
def missing_base(ws: Workspace) -> BadCase:
    return BadCase(ws.path("no-base"), ws.tuned, ws.path("no-base"), "no such file or directory")


@case
def empty_file(ws: Workspace) -> BadCase:
    path = ws.path("empty.safetensors")
    path.write_bytes(b"")
    return bad_tuned(ws, path, "empty or truncated")


@case
def truncated_data(ws: Workspace) -> BadCase:
    path = ws.path("cut.safetensors")
    path.write_bytes(ws.tuned.read_bytes()[:-100])  # a download that stopped early
    return bad_tuned(ws, path, "truncated file: tensor .* ends past the end of the file")


@case
def truncated_header(ws: Workspace) -> BadCase:
    path = ws.path("cut-header.safetensors")
    path.write_bytes(ws.tuned.read_bytes()[:40])
    return bad_tuned(ws, path, "truncated")


@case
def random_bytes(ws: Workspace) -> BadCase:
    path = ws.path("noise.safetensors")
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    return bad_tuned(ws, path, "not a safetensors file")


@case
def random_bytes_gguf(ws: Workspace) -> BadCase:
    path = ws.path("noise.gguf")
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    return bad_tuned(ws, path, "not a readable GGUF file")


@case
def header_not_json(ws: Workspace) -> BadCase:
    path = ws.path("text.safetensors")
    path.write_bytes((10).to_bytes(8, "little") + b"not json!!" + bytes(64))
    return bad_tuned(ws, path, "header is not valid JSON")


@case
def header_lies_about_offsets(ws: Workspace) -> BadCase:
    name = block_names()[0]
    header = {name: {**F32_MATRIX, "data_offsets": [0, MATRIX_BYTES // 2]}}
    path = write_raw_safetensors(ws.path("short.safetensors"), header, bytes(MATRIX_BYTES))
    return bad_tuned(ws, path, f"header lies about tensor '{re.escape(name)}'.* needs {MATRIX_BYTES} bytes")


@case
def header_lies_about_dtype(ws: Workspace) -> BadCase:
    header = {block_names()[0]: {"dtype": "F16", "shape": [DIM, DIM], "data_offsets": [0, MATRIX_BYTES]}}
    path = write_raw_safetensors(ws.path("f16.safetensors"), header, bytes(MATRIX_BYTES))
    return bad_tuned(ws, path, r"header lies about tensor .*F16\[16, 16\] needs 512 bytes, offsets give 1024")


@case
def header_unknown_dtype(ws: Workspace) -> BadCase:
    header = {block_names()[0]: {"dtype": "Q7", "shape": [DIM, DIM], "data_offsets": [0, MATRIX_BYTES]}}
    path = write_raw_safetensors(ws.path("q7.safetensors"), header, bytes(MATRIX_BYTES))
    return bad_tuned(ws, path, r"stored dtype Q7 \(tuned\) cannot be read")


@case
def header_offsets_past_the_end(ws: Workspace) -> BadCase:
    header = {block_names()[0]: {**F32_MATRIX, "data_offsets": [MATRIX_BYTES, 2 * MATRIX_BYTES]}}
    path = write_raw_safetensors(ws.path("far.safetensors"), header, bytes(MATRIX_BYTES))
    return bad_tuned(ws, path, "ends past the end of the file")


@case
def header_overlapping_tensors(ws: Workspace) -> BadCase:
    first, second = block_names()[:2]
    header = {
        first: {**F32_MATRIX, "data_offsets": [0, MATRIX_BYTES]},
        second: {**F32_MATRIX, "data_offsets": [MATRIX_BYTES // 2, MATRIX_BYTES + MATRIX_BYTES // 2]},
    }
    path = write_raw_safetensors(ws.path("overlap.safetensors"), header, bytes(2 * MATRIX_BYTES))
    return bad_tuned(ws, path, "overlaps the previous tensor")


@case
def header_boolean_shape(ws: Workspace) -> BadCase:
    header = {block_names()[0]: {"dtype": "F32", "shape": [True, DIM], "data_offsets": [0, 64]}}
    path = write_raw_safetensors(ws.path("bool.safetensors"), header, bytes(64))
    return bad_tuned(ws, path, "invalid shape")


@case
def header_list_dtype(ws: Workspace) -> BadCase:
    header = {block_names()[0]: {"dtype": ["F32"], "shape": [DIM, DIM], "data_offsets": [0, MATRIX_BYTES]}}
    path = write_raw_safetensors(ws.path("listdtype.safetensors"), header, bytes(MATRIX_BYTES))
    return bad_tuned(ws, path, "invalid dtype")


def _pickle_case(ws: Workspace, name: str) -> BadCase:
    path = write_pickle_payload(ws.path(name), ws.marker)
    return bad_tuned(ws, path, "pickle checkpoints are never loaded.*convert it to safetensors")


@case
def pickle_bin(ws: Workspace) -> BadCase:
    return _pickle_case(ws, "pytorch_model.bin")


@case
def pickle_pt(ws: Workspace) -> BadCase:
    return _pickle_case(ws, "model.pt")


@case
def pickle_pth(ws: Workspace) -> BadCase:
    return _pickle_case(ws, "model.pth")


@case
def pickle_base(ws: Workspace) -> BadCase:
    path = write_pickle_payload(ws.path("base.pt"), ws.marker)
    return BadCase(path, ws.tuned, path, "convert it to safetensors")


@case
def pickle_in_model_directory(ws: Workspace) -> BadCase:
    weights = write_pickle_payload(ws.path("hf-dir/pytorch_model.bin"), ws.marker)
    (weights.parent / "config.json").write_text("{}")
    return bad_tuned(ws, weights.parent, "convert it to safetensors", named=weights)


@case
def directory_without_weights(ws: Workspace) -> BadCase:
    directory = ws.path("no-weights")
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    return bad_tuned(ws, directory, "directory holds no model weights")


@case
def sharded_index_missing_shard(ws: Workspace) -> BadCase:
    directory = ws.path("sharded")
    directory.mkdir(parents=True)
    index = directory / "model.safetensors.index.json"
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    names = block_names()
    index.write_text(json.dumps({"weight_map": {n: shards[i // 2] for i, n in enumerate(names)}}))
    write_safetensors(directory / shards[0], {n: torch.zeros(DIM, DIM) for n in names[:2]})
    return bad_tuned(ws, directory, f"names a missing shard '{shards[1]}'", named=index)


@case
def sharded_index_invalid_shard(ws: Workspace) -> BadCase:
    directory = ws.path("sharded-list")
    directory.mkdir(parents=True)
    index = directory / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {block_names()[0]: ["a.safetensors"]}}))
    return bad_tuned(ws, directory, "invalid shard", named=index)


@case
def adapter_without_config(ws: Workspace) -> BadCase:
    directory = write_adapter(ws.path("adapter-no-config"), None)
    return bad_tuned(ws, directory, "no adapter_config.json")


@case
def adapter_config_invalid_json(ws: Workspace) -> BadCase:
    directory = write_adapter(ws.path("adapter-bad-json"), '{"peft_type": "LORA", r: 4')
    return bad_tuned(ws, directory, "invalid JSON", named=directory / "adapter_config.json")


@case
def adapter_unknown_peft_type(ws: Workspace) -> BadCase:
    directory = write_adapter(ws.path("adapter-fourierft"), {**LORA_CONFIG, "peft_type": "FOURIERFT"})
    return bad_tuned(
        ws, directory, "unsupported PEFT type 'FOURIERFT'", named=directory / "adapter_config.json"
    )


@case
def adapter_config_wrong_type(ws: Workspace) -> BadCase:
    directory = write_adapter(ws.path("adapter-r-text"), {**LORA_CONFIG, "r": "four"})
    return bad_tuned(
        ws, directory, "r must be a positive integer, got 'four'", named=directory / "adapter_config.json"
    )


@case
def adapter_rank_differs_from_config(ws: Workspace) -> BadCase:
    directory = write_adapter(ws.path("adapter-r8"), {**LORA_CONFIG, "r": 8})
    return bad_tuned(ws, directory, "has rank 4 but the config says r=8")


@case
def adapter_factors_do_not_fit_base(ws: Workspace) -> BadCase:
    directory = write_adapter(ws.path("adapter-narrow"), LORA_CONFIG, a_shape=(4, DIM // 2))
    return bad_tuned(ws, directory, r"factors of .*q_proj.* do not fit the base weight \(16, 16\)")


@case
def adapter_factor_not_a_matrix(ws: Workspace) -> BadCase:
    directory = write_adapter(ws.path("adapter-3d"), LORA_CONFIG, a_shape=(4, DIM, 1))
    return bad_tuned(ws, directory, "is not a matrix")


@case
def adapter_pickle_weights(ws: Workspace) -> BadCase:
    directory = ws.path("adapter-pickle")
    weights = write_pickle_payload(directory / "adapter_model.bin", ws.marker)
    (directory / "adapter_config.json").write_text(json.dumps(LORA_CONFIG))
    return bad_tuned(ws, directory, "convert it to safetensors", named=weights)


@case
def different_architecture_names(ws: Workspace) -> BadCase:
    gpt2 = {f"transformer.h.{i}.attn.c_attn.weight": torch.ones(DIM, 3 * DIM) for i in range(2)}
    path = write_safetensors(ws.path("gpt2.safetensors"), gpt2)
    return bad_tuned(ws, path, "no tensor name in common .*different architectures")


@case
def different_architecture_shapes(ws: Workspace) -> BadCase:
    path = write_safetensors(ws.path("wide.safetensors"), random_weights(3, shape=(DIM, 2 * DIM)))
    return bad_tuned(ws, path, "every selected tensor differs in shape .*different architectures")


@case
def nan_in_tuned(ws: Workspace) -> BadCase:
    weights = tuned_from(random_weights(seed=0), seed=4)
    name = block_names()[-1]  # the last block: earlier matrices are finished before it is read
    weights[name][3, 5] = float("nan")
    path = write_safetensors(ws.path("nan.safetensors"), weights)
    return bad_tuned(ws, path, f"tensor '{re.escape(name)}' contains NaN or Inf")


@case
def inf_in_base(ws: Workspace) -> BadCase:
    weights = random_weights(seed=0)
    name = block_names()[2]
    weights[name][0, 0] = float("-inf")
    path = write_safetensors(ws.path("inf-base.safetensors"), weights)
    return BadCase(path, ws.tuned, path, f"tensor '{re.escape(name)}' contains NaN or Inf")


@case
def gguf_without_head_count(ws: Workspace) -> BadCase:
    import gguf

    path = ws.path("heads0.gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_head_count(0)
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((DIM, DIM), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return bad_tuned(ws, path, "without a positive attention.head_count")


def spectrum_args(ws: Workspace, bad: BadCase, mode: str) -> list[str]:
    """overwrite: one TUNED over an existing result (with --force: even then the bad input leaves it untouched);
    create: a good TUNED first, into a new directory."""
    if mode == "overwrite":
        return ["spectrum", str(bad.base), str(bad.tuned), "-o", str(ws.out / "spectrum.json"), "--force"]
    return ["spectrum", str(bad.base), str(ws.other), str(bad.tuned), "-o", str(ws.out / "spectra")]


@pytest.mark.parametrize("mode", ["overwrite", "create"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_error_line_and_changes_nothing(ws: Workspace, name: str, mode: str) -> None:
    bad = CASES[name](ws)
    before = tree_state(ws.root)
    result = CliRunner().invoke(main, spectrum_args(ws, bad, mode))
    assert_one_line_error(result, bad.named, bad.problem)
    assert tree_state(ws.root) == before  # no output, no cache, inputs untouched
    assert (ws.out / "spectrum.json").read_bytes() == OLD_RESULT
    assert not ws.marker.exists()


def test_the_pickle_payload_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    """Control for the pickle cases: unpickling the payload does create the marker, so its absence counts."""
    marker = tmp_path / "UNPICKLED"
    pickle.loads(write_pickle_payload(tmp_path / "p.bin", marker).read_bytes())
    assert marker.exists()
    marker.unlink()
    torch.load(write_pickle_payload(tmp_path / "p.pt", marker), weights_only=False)
    assert marker.exists()


def test_pickle_error_suggests_converting(ws: Workspace) -> None:
    bad = pickle_pt(ws)
    line = assert_one_line_error(CliRunner().invoke(main, spectrum_args(ws, bad, "overwrite")), bad.named, "")
    assert "safetensors" in line and "save_pretrained" in line and "safe_serialization=True" in line


@pytest.mark.parametrize("several", [False, True])
def test_output_in_missing_directory(ws: Workspace, several: bool) -> None:
    target = ws.root / "missing" / ("spectra" if several else "out.json")
    tuned = [str(ws.other), str(ws.tuned)] if several else [str(ws.tuned)]
    before = tree_state(ws.root)
    result = CliRunner().invoke(main, ["spectrum", str(ws.base), *tuned, "-o", str(target)])
    assert_one_line_error(result, target, "output directory .*missing does not exist")
    assert tree_state(ws.root) == before


def test_csv_in_missing_directory(ws: Workspace) -> None:
    target = ws.root / "missing" / "out.csv"
    before = tree_state(ws.root)
    args = [
        "spectrum",
        str(ws.base),
        str(ws.tuned),
        "-o",
        str(ws.out / "spectrum.json"),
        "--csv",
        str(target),
        "--force",
    ]
    assert_one_line_error(CliRunner().invoke(main, args), target, "does not exist")
    assert tree_state(ws.root) == before


@pytest.mark.parametrize("several", [False, True])
def test_output_in_read_only_directory(ws: Workspace, several: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = ws.root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    real_access = __import__("os").access
    if real_access(locked, __import__("os").W_OK):  # root ignores permission bits: answer as for a user
        monkeypatch.setattr(
            "os.access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw)
        )
    target = locked / ("spectra" if several else "out.json")
    tuned = [str(ws.other), str(ws.tuned)] if several else [str(ws.tuned)]
    before = tree_state(ws.root)
    try:
        result = CliRunner().invoke(main, ["spectrum", str(ws.base), *tuned, "-o", str(target)])
        assert_one_line_error(result, target, "output directory .*locked is not writable")
        assert tree_state(ws.root) == before
    finally:
        locked.chmod(0o755)


def test_output_is_an_existing_directory(ws: Workspace) -> None:
    args = ["spectrum", str(ws.base), str(ws.tuned), "-o", str(ws.out)]
    before = tree_state(ws.root)
    assert_one_line_error(CliRunner().invoke(main, args), ws.out, "is a directory")
    assert tree_state(ws.root) == before


def test_same_checkpoint_twice_would_share_an_output(ws: Workspace) -> None:
    args = ["spectrum", str(ws.base), str(ws.tuned), str(ws.tuned), "-o", str(ws.out / "spectra")]
    before = tree_state(ws.root)
    assert_one_line_error(CliRunner().invoke(main, args), ws.out / "spectra", "write the same file")
    assert tree_state(ws.root) == before


OTHER_COMMANDS: dict[str, Callable[[Workspace, BadCase], list[str]]] = {
    "intruders": lambda ws, bad: [
        "intruders",
        str(bad.base),
        str(bad.tuned),
        "-o",
        str(ws.out / "intruders.json"),
    ],
    "similarity": lambda ws, bad: [
        "similarity",
        str(bad.base),
        str(ws.other),
        str(bad.tuned),
        "-o",
        str(ws.out / "similarity.json"),
    ],
    "extract": lambda ws, bad: [
        "extract",
        str(bad.base),
        str(bad.tuned),
        "-o",
        str(ws.out / "adapter"),
        "--lora-rank",
        "2",
    ],
}
SWEEP = [
    "missing_path",
    "truncated_data",
    "random_bytes",
    "header_lies_about_offsets",
    "pickle_pt",
    "adapter_without_config",
    "different_architecture_names",
    "nan_in_tuned",
    "inf_in_base",
]


@pytest.mark.parametrize("command", sorted(OTHER_COMMANDS))
@pytest.mark.parametrize("name", SWEEP)
def test_other_checkpoint_commands_keep_the_same_promise(ws: Workspace, name: str, command: str) -> None:
    bad = CASES[name](ws)
    before = tree_state(ws.root)
    result = CliRunner().invoke(main, OTHER_COMMANDS[command](ws, bad))
    assert_one_line_error(result, bad.named, bad.problem)
    assert tree_state(ws.root) == before
    assert not ws.marker.exists()


def test_real_process_prints_only_the_error_line(ws: Workspace) -> None:
    """Outside CliRunner too: no traceback, warning or log line beside the error, and nothing written."""
    bad = nan_in_tuned(ws)
    before = tree_state(ws.root)
    done = subprocess.run(
        [sys.executable, "-m", "deltarank", *spectrum_args(ws, bad, "create")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(bad.named) in lines[0], done.stderr
    assert re.search(bad.problem, lines[0])
    assert tree_state(ws.root) == before
