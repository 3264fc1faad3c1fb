"""Pair base and tuned tensors by canonical name into a plan of deltas to analyse.

Never pairs by order and never guesses orientation from shape: a name missing on one side or a shape that
differs is skipped and listed; no common tensor at all is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deltarank.errors import DeltarankError, InputError, OptionError, PairingError
from deltarank.io.adapter import AdapterModule, AdapterSource, is_adapter_dir
from deltarank.io.base import TensorInfo, TensorSource
from deltarank.io.dtypes import SAFETENSORS_DTYPES
from deltarank.io.model_ref import local_path
from deltarank.io.naming import Selection, canonical_name, module_type
from deltarank.io.peft_methods import kind_needs_base
from deltarank.io.quantization import QuantizationSpec
from deltarank.io.source import open_checkpoint
from deltarank.io.standalone import StandaloneAdapter, StoredMatrix, is_standalone_adapter


@dataclass(frozen=True)
class SkippedTensor:
    """A tensor that was selected but could not be analysed, with the reason."""

    name: str
    reason: str


@dataclass(frozen=True)
class DensePair:
    """Two stored tensors of the same canonical name and shape."""

    name: str
    base_key: str
    tuned_key: str
    shape: tuple[int, int]
    base_dtype: str
    tuned_dtype: str

    @property
    def kind(self) -> str:
        """How ΔW is formed: `dense` (two stored tensors)."""
        return "dense"


@dataclass(frozen=True)
class AdapterPair:
    """A base weight and the saved adapter tensors that modify it."""

    name: str
    base_key: str
    module: AdapterModule
    shape: tuple[int, int]
    base_dtype: str
    tuned_dtype: str
    fan_in_fan_out: bool
    quantization: QuantizationSpec | None = None  # the 4-bit base it was trained on (QLoRA)

    @property
    def kind(self) -> str:
        """How ΔW is formed from the saved tensors: the method (lora, dora, adalora, loha, lokr, ia3, oft, ...)."""
        return self.module.kind

    @property
    def needs_base(self) -> bool:
        """True when ΔW cannot be formed without the base weight (DoRA's row norm, IA3, OFT, BOFT)."""
        return kind_needs_base(self.kind)


@dataclass(frozen=True)
class QuantizationPair:
    """A base weight against its own 4-bit quantisation (QLoRA's base), optionally with the adapter trained on it.

    Without `adapter` its ΔW is the quantisation error dequant(W_q) − W (kind `quantization_error`); with it,
    the whole change QLoRA makes to the original weight, quantisation error plus the adapter's ΔW formed on the
    dequantized base (kind `qlora_total`). Its name is the weight's name with `:<kind>` appended.
    """

    name: str
    base_key: str
    shape: tuple[int, int]
    base_dtype: str
    tuned_dtype: str
    quantization: QuantizationSpec
    adapter: AdapterPair | None = None
    fan_in_fan_out: bool = False  # the weight is stored (in, out) (GPT-2 Conv1D), quantized transposed

    @property
    def kind(self) -> str:
        """`quantization_error`, or `qlora_total` with the adapter."""
        return "quantization_error" if self.adapter is None else "qlora_total"

    @property
    def label(self) -> str:
        """Module label of its record: the weight's module type with `:<kind>` (e.g. `q_proj:qlora_total`)."""
        return f"{module_type(self.name.rsplit(':', 1)[0])}:{self.kind}"


Pair = DensePair | AdapterPair | QuantizationPair | StoredMatrix


def _canonical_index(source: TensorSource) -> dict[str, str]:
    """canonical name -> source key.

    Raises:
        InputError: two keys of one checkpoint share a canonical name (pairing would have to guess).
    """
    index: dict[str, str] = {}
    for key in source.names():
        name = canonical_name(key)
        if name in index:
            raise InputError(source.path, f"tensors {index[name]!r} and {key!r} both stand for {name!r}")
        index[name] = key
    return index


def plan_dense(
    base: TensorSource, tuned: TensorSource, selection: Selection
) -> tuple[list[DensePair], list[SkippedTensor]]:
    """Pair two checkpoints by canonical name (in base order)."""
    base_index, tuned_index = _canonical_index(base), _canonical_index(tuned)
    pairs: list[DensePair] = []
    skipped: list[SkippedTensor] = []
    common = 0
    for name, base_key in base_index.items():
        base_info = base.info(base_key)
        if name not in tuned_index:
            if selection.wants(name, len(base_info.shape)):
                skipped.append(SkippedTensor(name, "missing in tuned checkpoint"))
            continue
        common += 1
        tuned_info = tuned.info(tuned_index[name])
        if not selection.wants(name, len(base_info.shape)):
            continue
        unreadable = _unreadable(base_info, tuned_info)
        if unreadable:
            skipped.append(SkippedTensor(name, unreadable))
            continue
        if tuned_info.shape != base_info.shape:
            skipped.append(
                SkippedTensor(name, f"shape mismatch: base {base_info.shape}, tuned {tuned_info.shape}")
            )
            continue
        rows, cols = base_info.shape
        pairs.append(
            DensePair(name, base_key, tuned_index[name], (rows, cols), base_info.dtype, tuned_info.dtype)
        )
    for name in tuned_index.keys() - base_index.keys():
        if selection.wants(name, len(tuned.info(tuned_index[name]).shape)):
            skipped.append(SkippedTensor(name, "missing in base checkpoint"))
    if common == 0:
        raise PairingError(
            f"{base.path} and {tuned.path} have no tensor name in common (different architectures?)"
        )
    if not pairs and all(s.reason.startswith("shape mismatch") for s in skipped) and skipped:
        raise PairingError(
            f"{base.path} and {tuned.path}: every selected tensor differs in shape (different architectures?)"
        )
    return pairs, skipped


def plan_adapter(
    base: TensorSource, adapter: AdapterSource, selection: Selection, quantization_error: bool | None = False
) -> tuple[list[AdapterPair | QuantizationPair], list[SkippedTensor]]:
    """Pair each adapted module with the base weight it modifies, checking that the factors fit it.

    For an adapter trained on a quantized base (QLoRA) and `quantization_error` true or None (auto), each
    module's pair is followed by its `QuantizationPair`s: the quantisation error and the total change.

    Raises:
        DeltarankError: `quantization_error=True` for an adapter whose base was not quantized.
    """
    if quantization_error and adapter.quantization is None:
        raise DeltarankError(
            f"--quantization-error: {adapter.path} is not marked as trained on a quantized base "
            "(no quantization.json, and no run.json with method qlora)"
        )
    with_parts = adapter.quantization is not None and quantization_error is not False
    base_index = _canonical_index(base)
    pairs: list[AdapterPair | QuantizationPair] = []
    what = "LoRA factor" if adapter.method.kind == "lora" else f"{adapter.config.peft_type} module tensor"
    skipped = [
        SkippedTensor(key, f"not a {what} (modules_to_save or unsupported)") for key in adapter.unsupported
    ]
    for name, module in adapter.modules.items():
        if name not in base_index:
            skipped.append(SkippedTensor(name, "adapted module missing in base checkpoint"))
            continue
        base_info = base.info(base_index[name])
        if not selection.wants(name, len(base_info.shape)):
            continue
        factor_dtype = adapter.factor_dtype(name)
        if not base_info.readable or factor_dtype not in SAFETENSORS_DTYPES:
            dtype = base_info.dtype if not base_info.readable else factor_dtype
            skipped.append(SkippedTensor(name, f"stored dtype {dtype} cannot be read"))
            continue
        shape = _check_factor_fit(adapter, name, base_info.shape, adapter.config.fan_in_fan_out)
        pair = AdapterPair(
            name=name,
            base_key=base_index[name],
            module=module,
            shape=shape,
            base_dtype=base_info.dtype,
            tuned_dtype=factor_dtype,
            fan_in_fan_out=adapter.config.fan_in_fan_out,
            quantization=adapter.quantization,
        )
        pairs.append(pair)
        if with_parts and adapter.quantization is not None:
            for part in (None, pair):
                kind = "quantization_error" if part is None else "qlora_total"
                pairs.append(
                    QuantizationPair(
                        f"{name}:{kind}",
                        pair.base_key,
                        shape,
                        base_info.dtype,
                        base_info.dtype if part is None else factor_dtype,
                        adapter.quantization,
                        part,
                        adapter.config.fan_in_fan_out,
                    )
                )
    if not pairs and not any(name in base_index for name in adapter.modules):
        raise PairingError(f"adapter {adapter.path} modifies no weight of {base.path} (wrong base model?)")
    return pairs, skipped


def _unreadable(base: TensorInfo, tuned: TensorInfo) -> str | None:
    """Why a pair cannot be read (a stored dtype this version does not decode), or None."""
    for side, info in (("base", base), ("tuned", tuned)):
        if not info.readable:
            return f"stored dtype {info.dtype} ({side}) cannot be read"
    return None


def _check_factor_fit(
    adapter: AdapterSource, name: str, base_shape: tuple[int, ...], fan_in_fan_out: bool
) -> tuple[int, int]:
    """The module's tensors must fit the base weight (out, in), or (in, out) with fan_in_fan_out: LoRA's
    B (out, r) and A (r, in), and the shapes each method's tensors imply (see `peft_methods`)."""
    shapes = adapter.shapes(name)
    implied = adapter.method.implied(shapes)
    out_in = (base_shape[1], base_shape[0]) if fan_in_fan_out and len(base_shape) == 2 else tuple(base_shape)
    fits = implied is not None and len(out_in) == 2
    if implied is not None and fits:
        fits = all(want is None or want == have for want, have in zip(implied, out_in, strict=True))
    if not fits:
        described = ", ".join(f"{role} {shape}" for role, shape in sorted(shapes.items()))
        what = "factors" if adapter.method.kind == "lora" else "tensors"
        raise InputError(
            Path(adapter.path),
            f"{what} of {name!r} ({described}) do not fit the base weight {tuple(base_shape)}",
        )
    return int(base_shape[0]), int(base_shape[1])


def plan_checkpoint(
    base: TensorSource,
    tuned: str | Path,
    selection: Selection,
    quantization_error: bool | None = False,
) -> tuple[TensorSource | AdapterSource | StandaloneAdapter, list[Pair], list[SkippedTensor]]:
    """Open TUNED (a checkpoint or a PEFT adapter directory, either of them possibly a Hugging Face repo id in
    the local cache) and pair it with BASE.

    A bottleneck adapter (see `deltarank.io.standalone`) needs no base: its own matrices are its pairs. A
    prompt-based adapter is refused with one line naming the command that reports it (the adapter alone).
    `quantization_error` is `plan_adapter`'s.

    Raises:
        InputError: unreadable checkpoint or adapter, uncached repo id.
        PairingError: no tensor in common.
        DeltarankError: nothing selected.
    """
    source: TensorSource | AdapterSource | StandaloneAdapter
    pairs: list[Pair]
    local = local_path(tuned)
    skipped: list[SkippedTensor]
    if quantization_error and not is_adapter_dir(local):
        raise OptionError(f"--quantization-error applies to QLoRA adapters; {tuned} is not a PEFT adapter")
    if is_standalone_adapter(local) and not is_adapter_dir(local):
        source = StandaloneAdapter(local)  # BASE is left unread (the result's warnings say so)
        pairs, skipped = list(source.selected(selection)), []
    elif is_adapter_dir(local):
        source = AdapterSource(local)
        adapter_pairs, skipped = plan_adapter(base, source, selection, quantization_error)
        pairs = list(adapter_pairs)
    else:
        source = open_checkpoint(local)
        dense_pairs, skipped = plan_dense(base, source, selection)
        pairs = list(dense_pairs)
    if not pairs and any("cannot be read" in item.reason for item in skipped):
        first = next(item for item in skipped if "cannot be read" in item.reason)
        raise DeltarankError(f"{tuned}: no selected tensor can be analysed ({first.name}: {first.reason})")
    if not pairs:
        raise DeltarankError(f"no tensor of {tuned} is selected for analysis (check --include/--exclude)")
    return source, pairs, skipped
