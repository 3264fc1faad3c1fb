"""How much memory a run of spectrum, intruders, similarity or extract would hold, from the pairs' shapes and
dtypes alone.

The memory estimate (`estimate_memory`) is a model of the code, not a measurement: the tensors alive at the
worst moment of the run for the largest pair of the plan, counted from what each step allocates (stored
tensors, the compute-dtype ΔW, the solver's float64 copies and Gram matrix, LAPACK's SVD workspace, the
storage-noise pass's temporaries), times the pairs in flight (decompositions running and pairs read ahead).
It leaves out the interpreter and libraries (`Preview.process_bytes`, this process's resident memory when the
preview was made, stands for them), allocator slack and the occasional Monte-Carlo noise array. Checked on
benchmarks/pairs.py `synthetic_pair()` (fp32, 56 matrices of 1024 × 2816, CPU, Gram solver): estimated 118 and
170 MiB for 1 and 2 workers; the run's resident memory grew by 91 and 125 MiB with glibc's mmap threshold fixed
(MALLOC_MMAP_THRESHOLD_=131072; the storage-noise pass, counted, was skipped on these fp32 deltas) and by 248
and 320 MiB with the default, whose heap keeps freed arrays under 32 MiB for reuse (7B-sized ones are larger
and go back to the system).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from deltarank.analysis.maths.arrays import LARGE_ENTRIES, row_blocks
from deltarank.analysis.maths.svd import RANDOMIZED_OVERSAMPLE
from deltarank.io.dtypes import SAFETENSORS_DTYPES, mantissa_bits

# Bytes per entry at the peak of the storage-noise pass (maths/noise.py `storage_noise`, whole matrix or one
# row block of a large one): the float32 mantissa and int32 exponent of `np.frexp` and two int32/float32
# temporaries of 4^(e − e_max); the tuned values widened to float32 come on top unless stored so.
NOISE_PASS_BYTES = 4 + 4 + 4 + 4
# Bytes per entry of the transient uint32 array while a 16-bit tensor is widened (arrays.py `host_array`).
WIDEN_TRANSIENT_BYTES = 4
# Bytes per entry of one row block at the peak of the sparsity count (maths/sparsity.py `count_unchanged`):
# |Δw| (float32), frexp's mantissa and exponent of the base block (then the exponent and ½ulp), a comparison's
# booleans; the base block widened to float32 comes on top unless stored so, and the ΔW block itself when it is
# formed from factors (LoRA and the other low-rank forms) or copied to the host from an accelerator.
SPARSITY_PASS_BYTES = 4 + 4 + 4 + 1
# Bytes per entry of TIES's sign-conflict pass (maths/merging.py) besides the n int8 signs: two int16 counters,
# and while a delta is trimmed its |ΔW| and sign in the compute dtype (per compute byte) and a boolean mask.
TIES_COUNTER_BYTES = 2 + 2
TIES_TRIM_MASK_BYTES = 1
# Bytes per entry of DARE's error pass (maths/merging.py `dare_errors`) besides one accumulator per drop rate
# (compute dtype): the float32 uniforms of one delta's mask and its keep mask; and per compute byte, the
# residual and the two products torch.where picks from.
DARE_UNIFORM_BYTES = 4 + 1
DARE_RESIDUAL_ARRAYS = 3
DEFAULT_MERGE_DROPS = 2  # tools/merge.py DEFAULT_DARE_DROPS: (0.5, 0.9)


@dataclass(frozen=True)
class PreviewPair:
    """One pair a run would analyse.

    Attributes:
        name: Canonical tensor name.
        shape: Stored shape (m, n) of the weight.
        base_dtype: Stored dtype label of the base tensor.
        tuned_dtype: Stored dtype label of the tuned tensor or of the adapter's tensors.
        kind: How ΔW is formed: dense (two checkpoints) or the adapter method (lora, dora, ...).
        rank: Inner width of the factors when ΔW is decomposed from them (an r × r core; r² for LoHa), None
            when it is decomposed as an m × n matrix.
    """

    name: str
    shape: tuple[int, int]
    base_dtype: str
    tuned_dtype: str
    kind: str
    rank: int | None = None

    @property
    def factored(self) -> bool:
        """ΔW is decomposed from its factors, never formed."""
        return self.rank is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "base_dtype": self.base_dtype,
            "tuned_dtype": self.tuned_dtype,
            "kind": self.kind,
            "rank": self.rank,
        }


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of the tensors of a run (an estimate from the code, see the module docstring).

    Attributes:
        peak_bytes: Bytes of tensors alive at the worst moment.
        shape: The pair shape it was estimated for (the one with the largest footprint).
        in_flight: How the run holds pairs at once, in words (workers, read-ahead, batches).
        parts: (what, bytes) of the terms that add up to `peak_bytes`.
    """

    peak_bytes: int
    shape: tuple[int, int] | None
    in_flight: str
    parts: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_bytes": self.peak_bytes,
            "shape": list(self.shape) if self.shape else None,
            "in_flight": self.in_flight,
            "parts": [{"what": what, "bytes": size} for what, size in self.parts],
        }


def _itemsize(dtype: str) -> int:
    """Bytes per entry of a stored tensor once read (GGUF and unknown labels are dequantized to float32)."""
    torch_dtype = SAFETENSORS_DTYPES.get(dtype.upper())
    return torch_dtype.itemsize if torch_dtype is not None else 4


def _widen(stored: str, compute: int, entries: int) -> int:
    """Bytes of the compute-dtype copy of a stored tensor: none when it already is that dtype (host_array and
    `.to` return the tensor itself)."""
    if _itemsize(stored) == compute and stored.upper() in ("F32", "F64"):
        return 0
    return compute * entries


def _noise_pass(tuned_dtype: str, m: int, n: int) -> int:
    """Peak bytes of the storage-noise pass: the whole matrix, or one row block above LARGE_ENTRIES."""
    if mantissa_bits(tuned_dtype) is None:
        return 0
    entries = m * n
    if entries > LARGE_ENTRIES:
        entries = max(b.stop - b.start for b in row_blocks(m, n)) * n
    widened = 0 if tuned_dtype.upper() in ("F32", "F64") else 4 + WIDEN_TRANSIENT_BYTES
    return (NOISE_PASS_BYTES + widened) * entries


def _sparsity_pass(pair: PreviewPair, m: int, n: int) -> int:
    """Peak bytes of the sparsity count: one row block of ΔW (`arrays.row_blocks`) at a time."""
    entries = max(b.stop - b.start for b in row_blocks(m, n)) * n if m else 0
    widened = 0 if pair.base_dtype.upper() in ("F32", "F64") else 4
    formed = 4 if pair.factored else 0
    return (SPARSITY_PASS_BYTES + widened + formed) * entries


def estimate_memory(
    command: str,
    pairs: Sequence[PreviewPair],
    dtype: torch.dtype,
    solver: str,
    workers: int = 1,
    batch: int = 1,
    top_k: int | None = None,
    sparsity: bool = True,
    deltas: int | None = None,
    merge_drops: int | None = None,
) -> MemoryEstimate:
    """Estimated peak bytes of the tensors a run holds at once (a model of the code, not a measurement).

    spectrum (run.py): `workers` decompositions run at once, each holding its ΔW (a batch of `batch` on CUDA)
    and the solver's working arrays; the reader thread keeps up to `workers` formed deltas ahead (one when a
    matrix exceeds `LARGE_ENTRIES`), the last of them being formed (stored tensors read, widened, subtracted,
    then the storage-noise pass, in row blocks above `LARGE_ENTRIES`; then, with `sparsity`, the count of its
    unchanged entries, one row block at a time, once the form's temporaries are gone). The Gram solver (svd.py
    `_host_gram_singular_values`) holds a float64 copy of ΔW and the n × n float64 Gram (n the smaller side),
    or for a large matrix at least twice as long as wide the Gram, a product buffer and one float64 row block;
    then the Gram and LAPACK's copy of it. The SVD solver holds a copy of ΔW.

    intruders, similarity and extract (one thread, one pair read ahead): the stored tensors of the current and
    the next pair, the compute-dtype matrices, and each thin SVD's U, V, input copy and gesdd workspace
    (≈ 7k² + 4k entries); similarity also keeps the first delta's vectors while the second is decomposed.

    similarity with the merge geometry (n = `deltas` ≥ 3, or `merge_drops` given with two) holds the n deltas of
    one matrix at once (tools/similarity.py keeps each dense, in the compute dtype, until the merge measures are
    done) and the U, V of their SVDs (an upper bound: the overlap's k columns are views that keep U or V whole,
    and A's and B's SVDs are kept whole until the last delta is decomposed), and beside them either
    the current pair's stored tensors and thin SVD, or the merge measures' working arrays: TIES's n int8 signs,
    two int16 counters and one trim's |ΔW|, sign and mask; or DARE's float32 uniforms, keep mask, residual (and
    the two products it is picked from) and one accumulator per drop rate (`merge_drops`, default 2).
    `deltas` None: counted from `pairs` (a similarity preview lists every TUNED's copy of each matrix compared).

    Every slot is counted at the pair with the largest footprint. Left out: the interpreter and libraries,
    allocator slack, and the Monte-Carlo noise array a few very uneven bf16 tensors keep (m·n float32 each).
    """
    compute = torch.empty((), dtype=dtype).element_size()
    if not pairs:
        return MemoryEstimate(0, None, "nothing to run", ())
    if command == "similarity":
        if deltas is None:
            deltas = max(Counter(p.name for p in pairs).values())
        if merge_drops is None and deltas >= 3:
            merge_drops = DEFAULT_MERGE_DROPS
    # run.py: `workers` deltas read ahead, one when the plan holds a matrix above LARGE_ENTRIES.
    depth = 1 if any(math.prod(p.shape) > LARGE_ENTRIES for p in pairs) else workers
    best: tuple[int, PreviewPair, list[tuple[str, int]]] | None = None
    for pair in pairs:
        parts = _footprint(command, pair, compute, solver, workers, batch, top_k, depth, sparsity)
        if command == "similarity" and merge_drops is not None:
            parts = _merge_footprint(pair, compute, max(deltas or 2, 2), merge_drops)
        total = sum(size for _, size in parts)
        if best is None or total > best[0]:
            best = (total, pair, parts)
    assert best is not None
    if command == "spectrum":
        in_flight = f"{workers} worker{'s' * (workers > 1)}, {depth} read ahead"
        if batch > 1:
            in_flight = f"batches of {batch}, 1 read ahead"
    elif command == "similarity" and merge_drops is not None:
        in_flight = (
            f"{max(deltas or 2, 2)} deltas of one matrix kept for the merge measures, 1 pair read ahead"
        )
    else:
        in_flight = "1 pair at a time, 1 read ahead"
    return MemoryEstimate(best[0], best[1].shape, in_flight, tuple(best[2]))


def _footprint(
    command: str,
    pair: PreviewPair,
    compute: int,
    solver: str,
    workers: int,
    batch: int,
    top_k: int | None,
    depth: int,
    sparsity: bool = False,
) -> list[tuple[str, int]]:
    """The (what, bytes) terms of the worst moment of a run whose every slot holds `pair`."""
    m, n = pair.shape
    entries, k = m * n, min(m, n)
    stored_base, stored_tuned = _itemsize(pair.base_dtype), _itemsize(pair.tuned_dtype)
    dense = not pair.factored
    # Stored tensors of one pair once read: both matrices, or the base (methods that need it) and the factors.
    if pair.kind == "dense":
        raw = (stored_base + stored_tuned) * entries
    elif dense:
        raw = stored_base * entries + stored_tuned * (m + n)
    else:
        raw = stored_tuned * (m + n) * (pair.rank or 0)
    delta = compute * entries if dense else compute * (m + n) * (pair.rank or 0)
    if pair.kind == "dense":
        # deltas.py dense_form: the base widened (a view when stored in the compute dtype), ΔW (in place in the
        # widened tuned copy, or new), the widening's transient, then the noise pass.
        narrow = any(
            _widen(d, compute, 1) and d.upper() != "F32" for d in (pair.base_dtype, pair.tuned_dtype)
        )
        transient = WIDEN_TRANSIENT_BYTES * entries if narrow else 0
        noise = _noise_pass(pair.tuned_dtype, m, n)
        forming = raw + _widen(pair.base_dtype, compute, entries) + delta + max(transient, noise)
    elif dense:  # dora, ia3, oft, boft (and LoHa past r² ≥ min): W, the product, the adapted weight, ΔW
        forming = raw + 4 * compute * entries
    else:
        forming = raw + delta
    if command == "spectrum" and sparsity:  # after the form: its stored tensors and ΔW, one block's count
        forming = max(forming, raw + delta + _sparsity_pass(pair, m, n))
    svd_out = compute * (m + n) * k  # U (m, k) and V (n, k) of a thin SVD
    # A thin SVD (torch.linalg.svd, LAPACK gesdd): a copy of the input and a workspace of about 7k² + 4k.
    gesdd_full = compute * (entries + 7 * k * k + 4 * k)
    gesdd = gesdd_full if dense else 0
    if command == "spectrum":
        # Running: each worker's ΔW(s) and solver arrays; read ahead: formed deltas, the last one being formed
        # (its stored tensors include the base tensor the reader keeps for the next checkpoint's pair).
        extra = _solver_bytes(solver, m, n, compute, top_k) if dense else 2 * delta
        running = workers * batch
        return [
            (f"{running} delta(s) being decomposed", running * delta),
            (f"{solver} solver working arrays × {running}", running * extra),
            (f"{depth - 1} formed delta(s) read ahead", (depth - 1) * delta),
            ("pair being read and formed (stored tensors, widening, noise pass, sparsity count)", forming),
        ]
    if command == "intruders":
        # Current and next pair's stored tensors (the base too for adapters), W in the compute dtype, then W'
        # (merged from the adapter: base copy, B·A, s·B·A, the sum) and its thin SVD while U of W is kept.
        stored = (stored_base + (stored_tuned if pair.kind == "dense" else 0)) * entries
        if pair.kind == "dense":
            tuned_w, merging = _widen(pair.tuned_dtype, compute, entries), 0
        else:
            tuned_w, merging = compute * entries, (5 if dense else 3) * compute * entries
        svd_phase = tuned_w + compute * m * k + gesdd_full + svd_out
        return [
            ("stored tensors of the current and the next pair", 2 * max(stored, raw)),
            ("W in the compute dtype", _widen(pair.base_dtype, compute, entries)),
            (
                "W' merged, or its thin SVD (input copy, gesdd workspace, U, V) beside U of W",
                max(merging, svd_phase),
            ),
        ]
    decompose = delta + gesdd + (svd_out if dense else 2 * delta)
    current = max(forming, raw + decompose)
    if command == "extract":  # the SVD, then B and A of the truncation and their save-dtype copies (k ≤ min)
        current = max(current, raw + (3 * svd_out if dense else 4 * delta))
    parts = [
        ("stored tensors of the next pair (read ahead)", raw),
        (
            "current pair: stored tensors, ΔW forming or its thin SVD (input copy, gesdd workspace, U, V)",
            current,
        ),
    ]
    if command == "similarity":
        parts.append(("U, V of ΔW_A kept while ΔW_B is decomposed", svd_out if dense else 2 * delta))
    return parts


def _merge_footprint(pair: PreviewPair, compute: int, count: int, drops: int) -> list[tuple[str, int]]:
    """The (what, bytes) terms of similarity's worst moment with the merge geometry of `count` deltas of `pair`'s
    shape (each TUNED's stored tensors counted at `pair`'s dtypes and kind; see `estimate_memory`)."""
    m, n = pair.shape
    entries, k = m * n, min(m, n)
    stored_base, stored_tuned = _itemsize(pair.base_dtype), _itemsize(pair.tuned_dtype)
    if pair.kind == "dense":
        raw = (stored_base + stored_tuned) * entries
    elif not pair.factored:
        raw = stored_base * entries + stored_tuned * (m + n)
    else:
        raw = stored_tuned * (m + n) * (pair.rank or 0)
    if (
        pair.factored
    ):  # vectors from the factors (QR and an r × r SVD): U (m, r), V (n, r), the factors' copies
        vectors, decompose = compute * (m + n) * (pair.rank or 0), 2 * compute * (m + n) * (pair.rank or 0)
    else:  # a thin SVD: U (m, k), V (n, k); LAPACK's input copy and workspace
        vectors, decompose = compute * (m + n) * k, compute * (entries + 7 * k * k + 4 * k)
    ties = count * entries + TIES_COUNTER_BYTES * entries + (2 * compute + TIES_TRIM_MASK_BYTES) * entries
    dare = (DARE_UNIFORM_BYTES + (DARE_RESIDUAL_ARRAYS + drops) * compute) * entries
    return [
        ("stored tensors of the next pair (read ahead)", raw),
        (f"{count} deltas kept dense for the merge measures", count * compute * entries),
        (f"U, V of the {count} deltas' SVDs (the overlap's k columns keep them)", count * vectors),
        (
            "current pair's stored tensors and SVD workspace, or the merge measures' working arrays (TIES's "
            f"signs, counters and trim; DARE's draw, residual and {drops} accumulator(s))",
            max(raw + decompose, ties, dare),
        ),
    ]


def _solver_bytes(solver: str, m: int, n: int, compute: int, top_k: int | None) -> int:
    """Working arrays of one dense decomposition besides ΔW itself (svd.py)."""
    k = min(m, n)
    if solver == "gram":
        # Blocked (svd.py `_blocked_gram`): the Gram, a product buffer and a float64 block of the long side;
        # else a float64 copy of ΔW and the Gram. Then the Gram and eigvalsh's copy of it.
        if m * n > LARGE_ENTRIES and max(m, n) >= 2 * k:
            block = max(b.stop - b.start for b in row_blocks(max(m, n), k)) * k
            return 16 * k * k + 8 * block
        return max(8 * m * n + 8 * k * k, 16 * k * k)
    if solver == "randomized":
        q = min((top_k or 1) + RANDOMIZED_OVERSAMPLE, k)
        return 3 * compute * (m + n) * q
    return compute * (m * n + 4 * k)  # svdvals: LAPACK's copy of ΔW (σ only)
