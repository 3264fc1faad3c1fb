"""Our safetensors reader: same tensors as the safetensors library, and a precise error for every broken file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaForCausalLM

from deltarank.errors import InputError
from deltarank.io.safetensors_file import SafetensorsSource, ShardedSafetensorsSource, read_header
from deltarank.io.source import open_checkpoint
from tests.planting import save_safetensors, write_raw_safetensors, write_safetensors_bytes

SHARD_SIZE = "40KB"  # the tiny Llama (~110 KB in fp32) splits into several shards

ALL_DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
]


def _values(dtype: torch.dtype, shape: tuple[int, ...] = (3, 5)) -> torch.Tensor:
    raw = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 7
    if dtype == torch.bool:
        return raw > 0
    return raw.to(dtype) if dtype.is_floating_point else raw.round().to(dtype)


def test_every_dtype_reads_back_bit_identical(tmp_path: Path) -> None:
    tensors = {f"t_{str(d).split('.')[-1]}": _values(d) for d in ALL_DTYPES}
    tensors["empty"] = torch.zeros(0, 4)
    tensors["scalar"] = torch.tensor(2.5)
    path = save_safetensors(tmp_path / "all.safetensors", tensors)
    source = SafetensorsSource(path)
    assert sorted(source.names()) == sorted(tensors)
    with safe_open(str(path), "pt") as reference:
        for name in tensors:
            ours = source.read(name)
            expected = reference.get_tensor(name)
            assert ours.dtype == expected.dtype and ours.shape == expected.shape, name
            assert torch.equal(ours.reshape(-1).view(torch.uint8), expected.reshape(-1).view(torch.uint8)), (
                name
            )
    info = source.info("t_bfloat16")
    assert (info.shape, info.dtype, info.file) == ((3, 5), "BF16", path)


def test_reads_are_fresh_writable_tensors(tmp_path: Path) -> None:
    source = SafetensorsSource(save_safetensors(tmp_path / "w.safetensors", {"w": torch.ones(2, 2)}))
    first = source.read("w")
    first.add_(1.0)  # writable, and not shared with the file or the next read
    assert source.read("w").tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_names_keep_file_order(tmp_path: Path) -> None:
    tensors = {"z": torch.ones(1), "a": torch.ones(2), "m": torch.ones(3)}
    source = SafetensorsSource(write_safetensors_bytes(tmp_path / "o.safetensors", tensors))
    assert source.names() == ["z", "a", "m"]
    assert source.read("m").tolist() == [1.0, 1.0, 1.0]


# --- broken files ------------------------------------------------------------------------------------------

GOOD = {"w": torch.arange(16, dtype=torch.float32).reshape(4, 4), "b": torch.ones(4)}


def _good_bytes(tmp_path: Path) -> bytes:
    return write_safetensors_bytes(tmp_path / "good.safetensors", GOOD).read_bytes()


def _header(tmp_path: Path) -> dict:
    (length,) = struct.unpack("<Q", _good_bytes(tmp_path)[:8])
    return json.loads(_good_bytes(tmp_path)[8 : 8 + length])


def _data(tmp_path: Path) -> bytes:
    raw = _good_bytes(tmp_path)
    (length,) = struct.unpack("<Q", raw[:8])
    return raw[8 + length :]


def _broken(tmp_path: Path, kind: str) -> Path:
    """A broken safetensors file of the given kind."""
    path = tmp_path / f"{kind}.safetensors"
    raw = _good_bytes(tmp_path)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "short":
        path.write_bytes(raw[:5])
    elif kind == "truncated":
        path.write_bytes(raw[:-10])  # last tensor's bytes cut
    elif kind == "huge_header_length":
        path.write_bytes(struct.pack("<Q", 10**12) + raw[8:])
    elif kind == "random_bytes":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "pickle_renamed":
        path.write_bytes(b"\x80\x04\x95" + b"\x00" * 200)
    elif kind == "not_json":
        write_raw_safetensors(path, {}, b"")
        path.write_bytes(struct.pack("<Q", 8) + b"{not js}")
    elif kind == "json_list":
        path.write_bytes(struct.pack("<Q", 8) + b"[1, 2]  ")
    elif kind == "lying_size":  # says F32 [4, 4] (64 bytes) but gives 32 bytes of offsets
        header = _header(tmp_path)
        header["w"]["data_offsets"] = [header["w"]["data_offsets"][0], header["w"]["data_offsets"][0] + 32]
        write_raw_safetensors(path, header, _data(tmp_path))
    elif kind == "lying_past_end":  # offsets point past the end of the data
        header = _header(tmp_path)
        header["b"] = {"dtype": "F32", "shape": [4], "data_offsets": [4096, 4112]}
        write_raw_safetensors(path, header, _data(tmp_path))
    elif kind == "overlap":
        header = _header(tmp_path)
        header["b"] = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
        write_raw_safetensors(path, header, _data(tmp_path))
    elif kind == "unknown_dtype":
        header = _header(tmp_path)
        header["w"]["dtype"] = "F128"
        write_raw_safetensors(path, header, _data(tmp_path))
    elif kind == "bad_shape":
        header = _header(tmp_path)
        header["w"]["shape"] = [4, -4]
        write_raw_safetensors(path, header, _data(tmp_path))
    elif kind == "malformed_entry":
        header = _header(tmp_path)
        header["w"] = {"dtype": "F32"}
        write_raw_safetensors(path, header, _data(tmp_path))
    elif kind == "no_tensors":
        write_raw_safetensors(path, {"__metadata__": {"format": "pt"}}, b"")
    return path


BROKEN = [
    ("empty", "empty or truncated file"),
    ("short", "empty or truncated file"),
    ("truncated", "truncated file: tensor 'b' ends past the end of the file"),
    ("huge_header_length", "header length exceeds file"),
    ("random_bytes", "not a safetensors file"),
    ("pickle_renamed", "not a safetensors file"),
    ("not_json", "header is not valid JSON"),
    ("json_list", "header is not a JSON object"),
    ("lying_size", "header lies about tensor 'w': F32\\[4, 4\\] needs 64 bytes, offsets give 32"),
    ("lying_past_end", "tensor 'b' ends past the end of the file"),
    ("overlap", "header lies: tensor '.' overlaps the previous tensor"),
    ("bad_shape", "tensor 'w' has an invalid shape"),
    ("malformed_entry", "header entry 'w' is malformed"),
    ("no_tensors", "holds no tensors"),
]


@pytest.mark.parametrize(("kind", "problem"), BROKEN)
def test_broken_file_names_the_file_and_the_problem(tmp_path: Path, kind: str, problem: str) -> None:
    path = _broken(tmp_path, kind)
    with pytest.raises(InputError, match=problem) as excinfo:
        SafetensorsSource(path)
    assert excinfo.value.path == str(path)
    assert str(excinfo.value).startswith(f"{path}: ")


@pytest.mark.parametrize("code", ["U32", "F128"])  # a code safetensors defines, one nobody does yet
def test_an_unreadable_dtype_is_listed_not_a_refused_file(tmp_path: Path, code: str) -> None:
    header = _header(tmp_path)
    header["w"]["dtype"] = code  # 16 entries x 4 bytes: U32 fits its offsets; F128 is taken as opaque bytes
    path = write_raw_safetensors(tmp_path / "odd.safetensors", header, _data(tmp_path))
    source = SafetensorsSource(path)
    assert source.info("w").readable is False and source.info("w").dtype == code
    assert source.info("b").readable is True
    assert source.read("b").tolist() == [1.0] * 4
    with pytest.raises(InputError, match=f"tensor 'w' has dtype {code}, which deltarank cannot read"):
        source.read("w")


def test_a_known_code_must_still_fit_its_offsets(tmp_path: Path) -> None:
    header = _header(tmp_path)
    header["w"]["dtype"] = "U64"  # 16 x 8 bytes do not fit the 64-byte range
    path = write_raw_safetensors(tmp_path / "lying.safetensors", header, _data(tmp_path))
    with pytest.raises(InputError, match="header lies about tensor 'w'"):
        SafetensorsSource(path)


def test_good_file_of_the_broken_tests_reads(tmp_path: Path) -> None:
    """The baseline the broken files are cut from is itself valid (so each failure is the planted one)."""
    entries, _ = read_header(write_safetensors_bytes(tmp_path / "good.safetensors", GOOD))
    assert set(entries) == {"w", "b"}
    assert SafetensorsSource(tmp_path / "good.safetensors").read("w").sum().item() == 120.0


def test_file_truncated_after_opening_is_reported_on_read(tmp_path: Path) -> None:
    path = write_safetensors_bytes(tmp_path / "late.safetensors", GOOD)
    source = SafetensorsSource(path)
    path.write_bytes(path.read_bytes()[:-20])  # shrinks between header check and read
    with pytest.raises(InputError, match="truncated file: tensor 'b' is incomplete"):
        source.read("b")


# --- sharded Hugging Face checkpoints ------------------------------------------------------------------


@pytest.fixture
def sharded_dir(tmp_path: Path, tiny_model: LlamaForCausalLM) -> Path:
    out = tmp_path / "sharded"
    tiny_model.save_pretrained(out, max_shard_size=SHARD_SIZE)
    return out


def test_sharded_checkpoint_reads_every_tensor(sharded_dir: Path, tiny_model: LlamaForCausalLM) -> None:
    index = json.loads((sharded_dir / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 3
    source = open_checkpoint(sharded_dir)
    assert isinstance(source, ShardedSafetensorsSource)
    state = tiny_model.state_dict()
    assert sorted(source.names()) == sorted(state)
    for name in state:
        assert torch.equal(source.read(name), state[name]), name
        assert source.info(name).file.name == index["weight_map"][name]
    assert sorted(open_checkpoint(sharded_dir / "model.safetensors.index.json").names()) == sorted(state)


def test_sharded_missing_shard(sharded_dir: Path) -> None:
    index_path = sharded_dir / "model.safetensors.index.json"
    shard = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))[1]
    (sharded_dir / shard).unlink()
    with pytest.raises(InputError, match=f"names a missing shard '{shard}'") as excinfo:
        open_checkpoint(sharded_dir)
    assert excinfo.value.path == str(index_path)


def test_sharded_index_pointing_to_the_wrong_shard(sharded_dir: Path) -> None:
    index_path = sharded_dir / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = next(n for n, s in index["weight_map"].items() if s == shards[0])
    index["weight_map"][name] = shards[1]
    index_path.write_text(json.dumps(index))
    with pytest.raises(InputError, match=f"does not hold tensor '{name}' that the index points to"):
        open_checkpoint(sharded_dir)


@pytest.mark.parametrize(
    ("content", "problem"), [("{oops", "invalid sharded index"), ('{"weight_map": {}}', "empty")]
)
def test_sharded_invalid_index(sharded_dir: Path, content: str, problem: str) -> None:
    (sharded_dir / "model.safetensors.index.json").write_text(content)
    with pytest.raises(InputError, match=problem):
        open_checkpoint(sharded_dir)
