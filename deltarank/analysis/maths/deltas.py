"""ΔW of one weight, formed once, in one place: one function per kind of delta, chosen by the pair's kind.

Every form takes the tensors a reader gave for one weight (stored dtypes, named as in `DeltaInputs`), upcasts
them to the compute dtype *before* any arithmetic, and returns a `Delta`: ΔW in the weight's stored
orientation, either as a dense matrix or as exact low-rank factors, with the figures its record needs (the
exact ‖ΔW‖_F, ‖W_base‖_F, the erased fraction and the storage-noise model).

- dense: ΔW = W' − W (two checkpoints). On the CPU in NumPy (exact bf16 widening, no torch op beside the
  decompositions, see `arrays`); on CUDA in torch.
- lora: ΔW = s·B·A, kept as factors (never formed); s = α/r, or α/√r with rsLoRA.
- dora: ΔW = m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row − W, dense (needs W).
- adalora: ΔW = s·B·(A ⊙ E), s = α/(init_r + 1e-5), factors (rank ≤ r' kept by the rank pattern).
- vera: ΔW = (λ_b ⊙ B[:out])(λ_d ⊙ A[:, :in]) with the shared projections A, B, factors (rank ≤ r).
- loha: ΔW = s·(W₁ₐW₁ᵦ) ⊙ (W₂ₐW₂ᵦ), s = α/r, as exact factors of r² columns (row-wise Kronecker products:
  (P Q) ⊙ (R S) = (P ⊙ᵣ R)(Q ⊙꜀ S)), dense when r² ≥ min(m, n).
- lokr: ΔW = s·W₁ ⊗ W₂ (each possibly a product W·ₐW·ᵦ), s = α/r, kept as the Kronecker pair: σ are the
  products σ_i(W₁)σ_j(W₂), from two small SVDs.
- ia3: ΔW = W ⊙ (l − 1), l scaling rows (out, 1) or, for feedforward modules, columns (1, in); dense (needs W).
- oft: ΔW = W (Rᵀ − I), R block-diagonal from Cayley or peft's Cayley–Neumann series (`rotations`); dense.
- boft: ΔW = (W Rᵀ) ⊙ s − W, R the product of the butterfly factors' permuted block-diagonal Cayley rotations
  (`rotations.boft_rotation`), s per output row; dense.
- qlora: s·B·A of a LoRA trained on a 4-bit base (as lora); a DoRA on one reads the dequantized base Ŵ.
- quantization_error: Ŵ − W, Ŵ = dequant(quant₄(W)) as the training held it (`quantization`); dense, full rank.
- qlora_total: (Ŵ − W) + ΔW_adapter(Ŵ): what QLoRA changes relative to the original weight; dense.

Not deltas (standalone adapters, `deltarank.io.standalone`): virtual_tokens (a prompt-based adapter's
virtual-token matrix, or a column block of it), bottleneck_down / bottleneck_up (a bottleneck adapter's
projections, dense) and bottleneck_product (up·down, kept as those factors: rank ≤ the bottleneck size).

Adding a method means adding one form to `FORMS` and its test against peft's fp32 merge; nothing else.
Each form records a structural bound on rank(ΔW) when the method has one (None: up to min(m, n)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from deltarank.analysis.maths.arrays import frobenius_norm, host_array, row_blocks
from deltarank.analysis.maths.noise import StorageNoise, storage_noise
from deltarank.analysis.maths.quantization import dequantized
from deltarank.analysis.maths.rotations import boft_rotation, oft_rotation_blocks
from deltarank.analysis.maths.sparsity import EntryCounts
from deltarank.errors import DeltarankError
from deltarank.io.quantization import QuantizationSpec


@dataclass(frozen=True)
class DeltaInputs:
    """What a form needs besides the tensors: how the adapter scales and stores the weight.

    Attributes:
        kind: A key of `FORMS` (dense, lora, dora, adalora, vera, loha, lokr, ia3, oft, boft).
        tuned_dtype: Stored dtype label of the tuned tensor or factors (for the noise model).
        scale: The adapter's scaling s (1.0 for dense).
        fan_in_fan_out: The base weight is stored (in, out) (GPT-2 Conv1D): the factors' s·B·A is transposed.
        shape: Stored shape of the weight (VeRA slices its shared projections to it).
        options: Other settings of the method (OFT: coft, eps, block_share, use_cayley_neumann,
            num_cayley_neumann_terms).
        quantization: How the base was quantized for training (QLoRA), else None: the forms that read W read
            the dequantized Ŵ instead, and the quantisation forms need it.
        adapter_kind: The adapter's own kind inside `qlora_total` (qlora or dora).
        columns: (start, stop) of the stored matrix's columns a virtual_tokens record keeps, or None for all.
    """

    kind: str
    tuned_dtype: str
    scale: float = 1.0
    fan_in_fan_out: bool = False
    shape: tuple[int, int] | None = None
    options: Mapping[str, float] = field(default_factory=dict)
    quantization: QuantizationSpec | None = None
    adapter_kind: str | None = None
    columns: tuple[int, int] | None = None


@dataclass(frozen=True)
class Delta:
    """ΔW of one weight in its stored orientation, with the whole-tensor figures of its record.

    Exactly one of `matrix`, (`left`, `right`) and `kron` is set: dense ΔW, ΔW = scale · left @ right, or
    ΔW = scale · kron[0] ⊗ kron[1].

    Attributes:
        kind: The form that made it (a key of `FORMS`).
        norm: ‖ΔW‖_F computed from the whole dense delta (exact whatever solver runs later); None for
            factors, whose r singular values are all computed exactly and give it.
        matrix: Dense ΔW, shape (m, n), compute dtype, on the compute device.
        left: Low-rank left factor, shape (m, r).
        right: Low-rank right factor, shape (r, n).
        kron: Kronecker factors (a, c) and (b, d) with m = a·b, n = c·d.
        scale: Scalar of the low-rank or Kronecker product.
        base_norm: ‖W_base‖_F when the form read W, else None.
        erased: Share of exactly-zero entries of a dense ΔW (None for factors).
        noise: Storage-noise model of the tuned tensor (None when no stored tensor rounds ΔW).
        rank_bound: Upper bound on rank(ΔW) from the method's structure (r, r', r², rank products, changed
            scales), None when it allows min(m, n).
        counts: How many entries of ΔW stayed put (`sparsity.count_unchanged`), when they were counted.
    """

    kind: str
    norm: float | None
    matrix: torch.Tensor | None = None
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    scale: float = 1.0
    base_norm: float | None = None
    erased: float | None = None
    noise: StorageNoise | None = None
    kron: tuple[torch.Tensor, torch.Tensor] | None = None
    rank_bound: int | None = None
    counts: EntryCounts | None = None

    @property
    def low_rank(self) -> bool:
        """True when ΔW is held as factors (low-rank or Kronecker)."""
        return self.matrix is None

    def dense(self) -> torch.Tensor:
        """ΔW as a dense (m, n) matrix (formed from the factors when low-rank: for tools, never for σ)."""
        if self.matrix is not None:
            return self.matrix
        if self.kron is not None:
            return self.scale * torch.kron(*self.kron)
        assert self.left is not None and self.right is not None
        return self.scale * (self.left @ self.right)

    def dense_rows(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """ΔW as consecutive blocks of rows (`arrays.row_blocks`), each formed on its own from the factors, so a
        low-rank or Kronecker ΔW is never held whole. Shapes: yields (rows, ΔW[rows] (rows, n))."""
        if self.matrix is not None:
            for block in row_blocks(*self.matrix.shape):
                yield block, self.matrix[block]
        elif self.kron is not None:
            first, second = self.kron  # (a, c), (b, d): row i of ΔW is row i // b of W₁ ⊗ row i % b of W₂
            height = second.shape[0]
            for block in row_blocks(first.shape[0] * height, first.shape[1] * second.shape[1]):
                top, bottom = block.start // height, -(-block.stop // height)
                rows = torch.kron(first[top:bottom], second)  # (≤ block rows + 2b, n)
                yield block, self.scale * rows[block.start - top * height : block.stop - top * height]
        else:
            assert self.left is not None and self.right is not None
            for block in row_blocks(self.left.shape[0], self.right.shape[1]):
                yield block, self.scale * (self.left[block] @ self.right)


Tensors = Mapping[str, torch.Tensor]
Form = Callable[[Tensors, DeltaInputs, torch.dtype], Delta]


def dense_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = tuned − base from tensors `base` and `tuned`, each upcast to `dtype` before subtracting.

    CPU tensors are handled in NumPy (ΔW shares its memory with the returned tensor); CUDA tensors in torch.
    The raw tensors are not kept. Shapes: base (m, n), tuned (m, n) -> matrix (m, n).
    """
    base, tuned = tensors["base"], tensors["tuned"]
    if base.device.type != "cpu":
        return _device_dense(base, tuned, inputs.tuned_dtype, dtype)
    base_values = host_array(base, dtype)
    tuned_values = host_array(tuned, dtype)  # upcast first, then subtract
    if tuned.dtype == dtype:  # a view of the stored tensor, which the noise model still reads
        delta = tuned_values - base_values
    else:  # a fresh widened copy: subtract in place (one (m, n) temporary less)
        delta = np.subtract(tuned_values, base_values, out=tuned_values)
    norm = frobenius_norm(delta)
    # The numerical floor is σ₁·min(m, n)·eps and σ₁ ≥ ‖ΔW‖_F / √min(m, n): a lower bound of it before the σ
    # are known (0.99 absorbs rounding in the norm), which lets the noise pass skip its per-entry work.
    floor_hint = 0.99 * norm * math.sqrt(min(delta.shape)) * float(torch.finfo(dtype).eps)
    return Delta(
        kind="dense",
        norm=norm,
        matrix=torch.from_numpy(delta),
        base_norm=frobenius_norm(base_values),
        erased=float(np.count_nonzero(delta == 0)) / max(delta.size, 1),
        noise=storage_noise(tuned, inputs.tuned_dtype, floor_hint),
    )


def _device_dense(base: torch.Tensor, tuned: torch.Tensor, tuned_dtype: str, dtype: torch.dtype) -> Delta:
    """`dense_form` on an accelerator, in torch; the noise model reads the tuned tensor on the host."""
    noise = storage_noise(tuned.cpu(), tuned_dtype)
    wide_base = base.to(dtype)
    delta = tuned.to(dtype) - wide_base  # (m, n)
    return Delta(
        kind="dense",
        norm=float(torch.linalg.vector_norm(delta)),
        matrix=delta,
        base_norm=float(torch.linalg.vector_norm(wide_base)),
        erased=float((delta == 0).sum()) / max(delta.numel(), 1),
        noise=noise,
    )


def lora_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = s·B·A from `lora_B` (out, r) and `lora_A` (r, in), kept as factors in the stored orientation.

    With fan_in_fan_out the stored weight is (in, out) and ΔW_stored = (s·B·A)ᵀ = s·Aᵀ·Bᵀ.
    """
    b, a = tensors["lora_B"].to(dtype), tensors["lora_A"].to(dtype)
    return _factors("lora", b, a, inputs)


def _factors(kind: str, left: torch.Tensor, right: torch.Tensor, inputs: DeltaInputs) -> Delta:
    """ΔW = s·L·R (out, r) @ (r, in) in the stored orientation (transposed with fan_in_fan_out)."""
    if inputs.fan_in_fan_out:
        left, right = right.mT, left.mT
    bound = min(left.shape[1], left.shape[0], right.shape[1])
    if right.shape[0] == 0:  # every direction pruned (AdaLoRA r' = 0): ΔW = 0
        zero = torch.zeros(left.shape[0], right.shape[1], dtype=left.dtype, device=left.device)
        return Delta(kind=kind, norm=0.0, matrix=zero, rank_bound=0)
    return Delta(kind=kind, norm=None, left=left, right=right, scale=inputs.scale, rank_bound=bound)


def dora_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW of a DoRA module from `base`, `lora_B`, `lora_A` and `magnitude`: m ⊙ (W + s·B·A) / ‖W + s·B·A‖_row − W.

    Shapes: base (out, in) or (in, out) with fan_in_fan_out, b (out, r), a (r, in), magnitude (out,). The norm
    runs over the input dimension of each output row, as peft's `DoraLinearLayer.get_weight_norm`.
    """
    base = tensors["base"].to(dtype)
    w = base.mT if inputs.fan_in_fan_out else base  # DoRA maths on (out, in)
    adapted = w + inputs.scale * (tensors["lora_B"].to(dtype) @ tensors["lora_A"].to(dtype))  # (out, in)
    row_norm = torch.linalg.vector_norm(adapted, dim=1, keepdim=True)  # (out, 1)
    delta = tensors["magnitude"].to(dtype).reshape(-1, 1) * adapted / row_norm - w
    matrix = delta.mT if inputs.fan_in_fan_out else delta
    return Delta(
        kind="dora",
        norm=float(torch.linalg.vector_norm(matrix)),
        matrix=matrix,
        base_norm=float(torch.linalg.vector_norm(base)),
    )


def adalora_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = s·B·(A ⊙ E) from `lora_B` (out, r'), `lora_A` (r', in), `lora_E` (r', 1); s = α/(init_r + 1e-5).

    peft's `SVDLinear.get_delta_weight`; r' is the rank the rank pattern kept (0 gives ΔW = 0).
    """
    b, a, e = (tensors[k].to(dtype) for k in ("lora_B", "lora_A", "lora_E"))
    return _factors("adalora", b, a * e.reshape(-1, 1), inputs)


def vera_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = (λ_b ⊙ B[:out, :])(λ_d ⊙ A[:, :in]) from `vera_lambda_b` (out,), `vera_lambda_d` (r,) and the shared
    projections `vera_B` (out_max, r), `vera_A` (r, in_max), sliced to the weight as peft's `get_delta_weight`."""
    assert inputs.shape is not None
    out, inp = (inputs.shape[1], inputs.shape[0]) if inputs.fan_in_fan_out else inputs.shape
    lam_b, lam_d = tensors["vera_lambda_b"].to(dtype), tensors["vera_lambda_d"].to(dtype)
    b = lam_b.reshape(-1, 1) * tensors["vera_B"][:out, :].to(dtype)  # (out, r)
    a = lam_d.reshape(-1, 1) * tensors["vera_A"][:, :inp].to(dtype)  # (r, in)
    return _factors("vera", b, a, inputs)


def loha_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = s·(W₁ₐW₁ᵦ) ⊙ (W₂ₐW₂ᵦ) from `hada_w1_a`, `hada_w2_a` (out, r), `hada_w1_b`, `hada_w2_b` (r, in).

    The Hadamard product of two rank-r products is exactly L·R with L[i, (p, q)] = W₁ₐ[i, p]·W₂ₐ[i, q] (out, r²)
    and R[(p, q), j] = W₁ᵦ[p, j]·W₂ᵦ[q, j] (r², in): kept as those factors while r² < min(out, in), else dense.
    """
    w1a, w1b, w2a, w2b = (tensors[k].to(dtype) for k in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"))
    rank, (out, inp) = w1a.shape[1] * w2a.shape[1], (w1a.shape[0], w1b.shape[1])
    if rank < min(out, inp):
        left = (w1a[:, :, None] * w2a[:, None, :]).reshape(out, rank)  # (out, r²)
        right = (w1b[:, None, :] * w2b[None, :, :]).reshape(rank, inp)  # (r², in)
        return _factors("loha", left, right, inputs)
    matrix = inputs.scale * ((w1a @ w1b) * (w2a @ w2b))  # (out, in)
    return _dense("loha", matrix, None, min(rank, out, inp))


def lokr_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = s·W₁ ⊗ W₂ from `lokr_w1` (a, c) or `lokr_w1_a` @ `lokr_w1_b`, and `lokr_w2` (b, d) or `lokr_w2_a` @
    `lokr_w2_b`; out = a·b, in = c·d (peft's `make_kron`). Kept as the pair: σ(W₁ ⊗ W₂) = {σ_i(W₁)σ_j(W₂)}."""
    pair, bounds = [], []
    for which in ("lokr_w1", "lokr_w2"):
        if which in tensors:
            factor = tensors[which].to(dtype)
            bounds.append(min(factor.shape))
        else:
            a, b = tensors[f"{which}_a"].to(dtype), tensors[f"{which}_b"].to(dtype)
            factor = a @ b
            bounds.append(min(a.shape[1], *factor.shape))
        pair.append(factor)
    w1, w2 = pair
    return Delta(kind="lokr", norm=None, kron=(w1, w2), scale=inputs.scale, rank_bound=bounds[0] * bounds[1])


def ia3_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = W ⊙ (l − 1) from `base` and `ia3_l`: (out, 1) scales rows, (1, in) columns (feedforward modules);
    with fan_in_fan_out l is transposed onto the stored (in, out) weight, as peft's `merge`."""
    base = tensors["base"].to(dtype)
    scales = tensors["ia3_l"].to(dtype)
    scales = scales.mT if inputs.fan_in_fan_out else scales
    matrix = base * (scales - 1.0)
    return _dense("ia3", matrix, base, min(int(torch.count_nonzero(scales != 1.0)), *matrix.shape))


def oft_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = W (Rᵀ − I) from `base` (out, in) and `oft_R` (k, b(b−1)/2): R = block_diag(R_1 … R_{in/b}) built as
    the config says (`rotations.oft_rotation_blocks`); peft merges W' = (R Wᵀ)ᵀ."""
    base = tensors["base"].to(dtype)
    vectors = tensors["oft_R"].to(dtype)
    out, inp = base.shape
    block = (1 + math.isqrt(1 + 8 * vectors.shape[1])) // 2
    if inp % block or (vectors.shape[0] > 1 and vectors.shape[0] * block != inp):
        raise DeltarankError(
            f"OFT blocks of size {block} ({vectors.shape[0]} saved) do not tile {inp} inputs"
        )
    options = inputs.options
    blocks = oft_rotation_blocks(
        vectors,
        block,
        inp // block,
        coft=bool(options.get("coft", 0.0)),
        eps=float(options.get("eps", 6e-5)),
        neumann=bool(options.get("use_cayley_neumann", 1.0)),
        terms=int(options.get("num_cayley_neumann_terms", 5)),
    )  # (in/b, b, b)
    eye = torch.eye(block, dtype=dtype, device=base.device)
    by_block = base.reshape(out, inp // block, block)  # (out, in/b, b)
    matrix = torch.einsum("okc,kdc->okd", by_block, blocks - eye).reshape(out, inp)  # W_k (R_kᵀ − I)
    return _dense("oft", matrix, base, None)


def boft_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = (W Rᵀ) ⊙ s − W from `base` (out, in), `boft_R` (N, D, H, H) and `boft_s` (out, 1), R the butterfly
    rotation (`rotations.boft_rotation`, N butterfly factors), as peft's BOFT `merge`."""
    base = tensors["base"].to(dtype)
    rotation = boft_rotation(tensors["boft_R"].to(dtype))  # (in, in)
    matrix = (base @ rotation.mT) * tensors["boft_s"].to(dtype) - base
    return _dense("boft", matrix, base, None)


def qlora_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW = s·B·A of a LoRA trained on a quantized base: `lora_form`, labelled qlora."""
    return replace(lora_form(tensors, inputs, dtype), kind="qlora")


def quantization_error_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """Ŵ − W from `base` (m, n): Ŵ is W quantized and dequantized as `inputs.quantization` says, both upcast to
    `dtype` before subtracting. Full rank in general; nothing rounds it after forming (no storage noise)."""
    assert inputs.quantization is not None
    base = tensors["base"].to(dtype)
    matrix = _dequantized_base(tensors["base"], inputs).to(dtype) - base
    return _dense("quantization_error", matrix, base, None)


def qlora_total_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """(Ŵ − W) + ΔW_adapter from `base` and the adapter's tensors: the adapter's ΔW (its own form, on Ŵ when it
    reads the base) plus the quantisation error, i.e. W_trained − W for the original weight W; dense (m, n)."""
    assert inputs.quantization is not None and inputs.adapter_kind is not None
    base = tensors["base"].to(dtype)
    nf4 = _dequantized_base(tensors["base"], inputs).to(dtype)
    adapter = replace(inputs, kind=inputs.adapter_kind, quantization=None, adapter_kind=None)
    delta = FORMS[inputs.adapter_kind]({**tensors, "base": nf4}, adapter, dtype).dense()
    return _dense("qlora_total", delta + (nf4 - base), base, None)


def _dequantized_base(base: torch.Tensor, inputs: DeltaInputs) -> torch.Tensor:
    """Ŵ in the stored orientation: transformers quantizes a Conv1D weight (stored (in, out), fan_in_fan_out)
    transposed, as the (out, in) weight of its Linear4bit, so the blocks run along the same axis here."""
    assert inputs.quantization is not None
    if inputs.fan_in_fan_out:
        return dequantized(base.mT, inputs.quantization).mT
    return dequantized(base, inputs.quantization)


def stored_matrix_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """A standalone adapter's stored `matrix` (virtual tokens, a bottleneck projection) as it is, upcast; its
    `columns` block when set. Not a delta: no base and no storage-noise model."""
    matrix = tensors["matrix"].to(dtype)
    if inputs.columns is not None:
        matrix = matrix[:, inputs.columns[0] : inputs.columns[1]]
    return _dense(inputs.kind, matrix, None, None)


def bottleneck_product_form(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """up·down of a bottleneck adapter from `up` (hidden, size) and `down` (size, hidden), kept as the factors
    (exact σ from their core, rank ≤ size)."""
    up, down = tensors["up"].to(dtype), tensors["down"].to(dtype)
    return _factors("bottleneck_product", up, down, replace(inputs, scale=1.0, fan_in_fan_out=False))


def _dense(kind: str, matrix: torch.Tensor, base: torch.Tensor | None, bound: int | None) -> Delta:
    """A dense ΔW formed from adapter tensors (no storage noise: nothing rounds it after forming)."""
    return Delta(
        kind=kind,
        norm=float(torch.linalg.vector_norm(matrix)),
        matrix=matrix,
        base_norm=None if base is None else float(torch.linalg.vector_norm(base)),
        rank_bound=bound,
    )


FORMS: dict[str, Form] = {
    "dense": dense_form,
    "lora": lora_form,
    "dora": dora_form,
    "adalora": adalora_form,
    "vera": vera_form,
    "loha": loha_form,
    "lokr": lokr_form,
    "ia3": ia3_form,
    "oft": oft_form,
    "boft": boft_form,
    "qlora": qlora_form,
    "quantization_error": quantization_error_form,
    "qlora_total": qlora_total_form,
    "virtual_tokens": stored_matrix_form,
    "bottleneck_down": stored_matrix_form,
    "bottleneck_up": stored_matrix_form,
    "bottleneck_product": bottleneck_product_form,
}
# Forms that take the quantization themselves; every other form reading `base` gets the dequantized Ŵ.
QUANTIZATION_FORMS = ("quantization_error", "qlora_total")


def form_delta(tensors: Tensors, inputs: DeltaInputs, dtype: torch.dtype) -> Delta:
    """ΔW of one weight by the form of its kind (see `FORMS`); an adapter trained on a quantized base (QLoRA's
    DoRA) reads the dequantized base Ŵ it was trained on."""
    if inputs.quantization is not None and "base" in tensors and inputs.kind not in QUANTIZATION_FORMS:
        tensors = {**tensors, "base": _dequantized_base(tensors["base"], inputs)}
    return FORMS[inputs.kind](tensors, inputs, dtype)
