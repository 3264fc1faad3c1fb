"""Property tests: name pairing and adapter parsing on arbitrary names, patterns, prefixes and config values.

Whatever the input, the answer is a result that keeps the invariants below, or a DeltarankError (which the CLI
prints as one `Error:` line); never another exception.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from deltarank.errors import DeltarankError, InputError, PairingError
from deltarank.io.adapter import AdapterSource, parse_adapter_config
from deltarank.io.base import TensorInfo
from deltarank.io.naming import Selection, canonical_name, layer_index, module_type
from deltarank.io.pairing import plan_adapter, plan_dense
from deltarank.io.safetensors_file import read_header
from tests.reliability.corpus import write_raw_safetensors, write_safetensors

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WRAPPERS = ["base_model.model.", "_orig_mod.", "module."]
SEGMENT = st.one_of(
    st.sampled_from(["model", "layers", "h", "self_attn", "mlp", "q_proj", "v_proj", "lora_A", "base_layer"]),
    st.from_regex(r"[0-9]{1,2}", fullmatch=True),
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=6),
)
NAME = st.lists(SEGMENT, min_size=1, max_size=7).map(".".join)
WRAPPED = st.tuples(st.lists(st.sampled_from(WRAPPERS), max_size=4).map("".join), NAME)
SHAPE = st.sampled_from([(4, 4), (4, 8), (8, 4), (4,), (2, 2, 2)])


@dataclass
class MemorySource:
    """A TensorSource of names and shapes only (pairing never reads data)."""

    shapes: dict[str, tuple[int, ...]]
    path: Path = Path("memory")

    def names(self) -> list[str]:
        return list(self.shapes)

    def info(self, name: str) -> TensorInfo:
        return TensorInfo(name, self.shapes[name], "F32", self.path)

    def read(self, name: str) -> torch.Tensor:
        return torch.zeros(self.shapes[name])


@FAST
@given(st.text(), st.text(max_size=20))
def test_naming_functions_never_crash(name: str, pattern: str) -> None:
    canonical = canonical_name(name)
    assert canonical_name(canonical) == canonical  # idempotent
    assert len(canonical) <= len(name)
    index = layer_index(name)
    assert index is None or (index >= 0 and re.search(rf"(^|\.)0*{index}\.", name.split(".", 1)[-1] + "."))
    assert module_type(name) in name or name == ""
    try:
        selection = Selection(include=pattern, exclude=pattern[::-1])
    except DeltarankError as exc:
        assert "not a valid regular expression" in str(exc)
        return
    assert isinstance(selection.wants(name, 2), bool)


@FAST
@given(WRAPPED)
def test_wrappers_in_any_order_strip_to_the_same_name(wrapped: tuple[str, str]) -> None:
    prefixes, core = wrapped
    assume(not core.startswith("base_layer."))  # PEFT's infix always follows a module name, never leads
    assert canonical_name(prefixes + core) == canonical_name(core)


@FAST
@given(
    st.dictionaries(st.one_of(NAME, WRAPPED.map("".join)), SHAPE, max_size=12),
    st.dictionaries(st.one_of(NAME, WRAPPED.map("".join)), SHAPE, max_size=12),
    st.one_of(st.none(), st.sampled_from(["q_proj", "layers", ".*", "("])),
)
# Random names rarely meet on both sides: these reach pairing's branches every run (one pair and a
# skipped shape mismatch through a wrapper prefix; every selected shape differs; up_proj not selected).
@example(
    {"model.layers.0.self_attn.q_proj.weight": (4, 8), "model.layers.1.mlp.up_proj.weight": (4, 4)},
    {
        "base_model.model.model.layers.0.self_attn.q_proj.weight": (8, 4),
        "model.layers.1.mlp.up_proj.weight": (4, 4),
    },
    None,
)
@example(
    {"model.layers.0.self_attn.q_proj.weight": (4, 8), "model.layers.1.mlp.up_proj.weight": (4, 4)},
    {"model.layers.0.self_attn.q_proj.weight": (8, 4), "model.layers.1.mlp.up_proj.weight": (4, 8)},
    None,
)
@example(
    {"model.layers.0.self_attn.q_proj.weight": (4, 8), "model.layers.1.mlp.up_proj.weight": (4, 4)},
    {"model.layers.0.self_attn.q_proj.weight": (4, 8), "x.weight": (4, 4)},
    "q_proj",
)
def test_dense_pairing_is_by_canonical_name_or_a_clear_error(
    base_shapes: dict[str, tuple[int, ...]], tuned_shapes: dict[str, tuple[int, ...]], include: str | None
) -> None:
    base, tuned = MemorySource(base_shapes, Path("base")), MemorySource(tuned_shapes, Path("tuned"))
    expected_error = _expected_dense_error(base_shapes, tuned_shapes, include)
    try:
        pairs, skipped = plan_dense(base, tuned, Selection(include=include))
    except DeltarankError as exc:
        assert expected_error is not None and expected_error in str(exc), (expected_error, str(exc))
        return
    assert expected_error is None
    names = [p.name for p in pairs]
    assert len(names) == len(set(names))
    for pair in pairs:
        assert canonical_name(pair.base_key) == canonical_name(pair.tuned_key) == pair.name
        assert base_shapes[pair.base_key] == tuned_shapes[pair.tuned_key] == pair.shape
        assert len(pair.shape) == 2
    tuned_names = {canonical_name(k) for k in tuned_shapes}
    for item in skipped:
        assert item.name not in names and item.reason
    for key, shape in base_shapes.items():  # a selected base matrix is either paired or listed as skipped
        name = canonical_name(key)
        if Selection(include=include).wants(name, len(shape)) and name in tuned_names:
            assert name in names or any(s.name == name for s in skipped)


def _expected_dense_error(
    base_shapes: dict[str, tuple[int, ...]], tuned_shapes: dict[str, tuple[int, ...]], include: str | None
) -> str | None:
    """Which error pairing must give, worked out from the inputs alone (None: it must succeed).

    In the order pairing checks: an invalid --include, two keys of one checkpoint with one canonical name, no
    name in common, every selected tensor paired with another shape (and none missing on either side).
    """
    if include == "(":
        return "is not a valid regular expression"
    for shapes in (base_shapes, tuned_shapes):
        names = [canonical_name(key) for key in shapes]
        if len(set(names)) < len(names):
            return "both stand for"
    base = {canonical_name(k): s for k, s in base_shapes.items()}
    tuned = {canonical_name(k): s for k, s in tuned_shapes.items()}
    if not base.keys() & tuned.keys():
        return "have no tensor name in common"
    selection = Selection(include=include)
    chosen_base = {n for n, s in base.items() if selection.wants(n, len(s))}
    chosen_tuned = {n for n, s in tuned.items() if selection.wants(n, len(s))}
    if chosen_base ^ chosen_tuned:
        return None  # a tensor missing on one side is skipped, not an error
    if chosen_base and all(base[n] != tuned[n] for n in chosen_base):
        return "every selected tensor differs in shape"
    return None


CONFIG_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(
        st.text(max_size=12), st.one_of(st.integers(-2, 16), st.floats(), st.text(max_size=3)), max_size=3
    ),
)
CONFIG_KEYS = ["peft_type", "r", "lora_alpha", "use_rslora", "use_dora", "fan_in_fan_out", "rank_pattern"]
CONFIG_KEYS += ["alpha_pattern", "init_lora_weights", "target_modules"]
CONFIG = st.one_of(
    st.fixed_dictionaries(
        {"peft_type": st.sampled_from(["LORA", "lora", "IA3", ""]), "r": CONFIG_VALUE}
    ).flatmap(
        lambda fixed: st.dictionaries(st.sampled_from(CONFIG_KEYS), CONFIG_VALUE, max_size=6).map(
            lambda extra: {**extra, **fixed}
        )
    ),
    st.dictionaries(st.sampled_from(CONFIG_KEYS), CONFIG_VALUE, max_size=8),
    CONFIG_VALUE,
)


@FAST
@given(CONFIG, st.lists(NAME, min_size=1, max_size=4))
def test_adapter_config_parses_or_gives_a_clear_error(raw: Any, module_keys: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "adapter_config.json").write_text(json.dumps(raw))
        try:
            config = parse_adapter_config(directory)
        except DeltarankError as exc:
            assert str(exc).startswith(str(directory))
            return
    assert type(config.r) is int and (config.r > 0 or config.peft_type in ("IA3", "OFT", "BOFT"))
    if config.peft_type in ("IA3", "OFT", "BOFT"):  # no rank or α: nothing more to check
        return
    for key in module_keys:
        r, alpha = config.rank_and_alpha(key)
        scale = config.scaling(r, alpha)
        assert r > 0 and scale == scale and abs(scale) != float("inf")


FACTOR_KEY = st.tuples(
    st.sampled_from(["", "base_model.model.", "base_model.model.module."]),
    st.sampled_from(["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj", "lm_head", "x"]),
    st.sampled_from(["lora_A", "lora_B", "lora_magnitude_vector", "lora_embedding_A", "weight"]),
    st.sampled_from(["", ".default", ".other"]),
    st.sampled_from([".weight", ""]),
).map("".join)


@FILES
@given(
    st.dictionaries(
        FACTOR_KEY, st.sampled_from([(4, 8), (8, 4), (4, 4), (8,), (4, 8, 1)]), min_size=1, max_size=6
    ),
    st.sampled_from([4, 8]),
    st.dictionaries(
        st.sampled_from(["q_proj", "up_proj", "layers\\.1\\..*", "(?i)x"]), st.integers(1, 8), max_size=2
    ),
)
@example(  # a well-formed adapter of two modules (random keys rarely make one)
    {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": (4, 8),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": (8, 4),
        "base_model.model.model.layers.1.mlp.up_proj.lora_A.default.weight": (4, 8),
        "base_model.model.model.layers.1.mlp.up_proj.lora_B.default.weight": (8, 4),
    },
    4,
    {},
)
def test_adapter_directory_and_pairing_give_a_result_or_a_clear_error(
    factors: dict[str, tuple[int, ...]], r: int, rank_pattern: dict[str, int]
) -> None:
    base = MemorySource(
        {
            "model.layers.0.self_attn.q_proj.weight": (8, 8),
            "model.layers.1.mlp.up_proj.weight": (8, 8),
            "lm_head.weight": (8, 8),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "rank_pattern": rank_pattern}
        (directory / "adapter_config.json").write_text(json.dumps(config))
        write_safetensors(
            directory / "adapter_model.safetensors", {k: torch.ones(s) for k, s in factors.items()}
        )
        try:
            adapter = AdapterSource(directory)
            pairs, _ = plan_adapter(base, adapter, Selection())
        except DeltarankError as exc:
            # A clear error names the adapter (its directory or a file in it) and says what is wrong.
            assert isinstance(exc, InputError | PairingError), repr(exc)
            assert str(directory) in str(exc) and len(str(exc)) > len(str(directory)) + 10, str(exc)
            return
    # Every adapted block weight of the base with both factors saved is paired (lm_head is not selected).
    wanted = {
        canonical_name(key.split(".lora_")[0]) + ".weight"
        for key in factors
        if re.search(r"\.lora_[AB](\.[^.]+)?\.weight$", key)
    }
    assert {p.name for p in pairs} == wanted & {n for n in base.shapes if n != "lm_head.weight"}
    for pair in pairs:
        assert pair.name in base.shapes and pair.shape == base.shapes[pair.name]
        b_shape, a_shape = adapter.factor_shapes(pair.name)
        assert (b_shape[0], a_shape[1]) == pair.shape and b_shape[1] == a_shape[0] == pair.module.rank
    assert len({p.name for p in pairs}) == len(pairs)


HEADER_ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.one_of(st.sampled_from(["F32", "F16", "BF16", "I8", "BOOL", "Q4"]), CONFIG_VALUE),
        "shape": st.one_of(st.lists(st.integers(-1, 5), max_size=3), CONFIG_VALUE),
        "data_offsets": st.one_of(st.lists(st.integers(-4, 80), min_size=2, max_size=2), CONFIG_VALUE),
    }
)


@FILES
@given(
    st.dictionaries(st.text(max_size=10), st.one_of(HEADER_ENTRY, CONFIG_VALUE), max_size=4),
    st.integers(0, 100),
)
def test_safetensors_header_fuzz_parses_or_gives_a_clear_error(
    header: dict[str, Any], data_size: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_raw_safetensors(Path(tmp) / "fuzz.safetensors", header, bytes(data_size))
        size = path.stat().st_size
        try:
            entries, _ = read_header(path)
        except DeltarankError as exc:
            assert str(exc).startswith(str(path))
            return
    for entry in entries.values():  # an accepted header describes bytes that are in the file
        assert entry.start + entry.nbytes <= size


@pytest.mark.parametrize(
    "key",
    [
        "module._orig_mod.model.layers.0.mlp.up_proj.weight",
        "_orig_mod.module.model.layers.0.mlp.up_proj.weight",
    ],
)
def test_ddp_and_compile_wrappers_pair_with_the_plain_name(key: str) -> None:
    base = MemorySource({"model.layers.0.mlp.up_proj.weight": (8, 4)})
    tuned = MemorySource({key: (8, 4)})
    pairs, skipped = plan_dense(base, tuned, Selection())
    assert [p.name for p in pairs] == ["model.layers.0.mlp.up_proj.weight"] and not skipped


def test_two_keys_with_one_canonical_name_are_refused() -> None:
    base = MemorySource(
        {"model.layers.0.mlp.up_proj.weight": (8, 4), "module.model.layers.0.mlp.up_proj.weight": (8, 4)}
    )
    with pytest.raises(DeltarankError, match=re.escape("both stand for 'model.layers.0.mlp.up_proj.weight'")):
        plan_dense(base, MemorySource({"model.layers.0.mlp.up_proj.weight": (8, 4)}), Selection())


def test_a_pattern_that_only_fails_inside_peft_matching_is_refused_when_parsed(tmp_path: Path) -> None:
    """`(?i)q` compiles alone but not inside peft's `(.*\\.)?(PATTERN)$`: refused up front, not at match time."""
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "rank_pattern": {"(?i)q": 2}})
    )
    with pytest.raises(DeltarankError, match="invalid rank/alpha pattern"):
        parse_adapter_config(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    assert (
        parse_adapter_config(tmp_path).lora_alpha == 8.0
    )  # peft's LoraConfig default when the key is absent
