"""What each weight-modifying PEFT method saves per adapted weight, and how those tensors must fit the weight.

One `Method` per peft type: the parameter names it saves per module (read as roles: `lora_A`, `hada_w1_a`, ...;
DoRA's `lora_magnitude_vector` is the role `magnitude`), the roles every module must have, the model-level
tensors it shares between modules (VeRA's projections), whether its ΔW needs the base weight, and the shape
(out, in) its tensors imply. The maths of each ΔW lives in `deltarank.analysis.maths.deltas`; this module only
indexes and checks the files (io never imports analysis).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Shapes = Mapping[str, tuple[int, ...]]
# (out, in) the tensors imply; None where they do not fix a side (IA3 scales one side only, OFT the input).
Implied = tuple[int | None, int | None]


@dataclass(frozen=True)
class Method:
    """How one peft type stores its adapter.

    Attributes:
        kind: The delta kind it yields (a key of the analysis' delta forms); LoRA with a magnitude is `dora`.
        params: Saved per-module parameter names, each read as the role of the same name.
        required: Roles every module must have (one of each tuple of alternatives).
        shared: Model-level tensor name (without the `base_model.` prefix) -> role, given to every module.
        needs_base: Its ΔW cannot be formed without the base weight.
        implied: (out, in) the module's tensor shapes imply, or None when they do not fit together.
    """

    kind: str
    params: tuple[str, ...]
    required: tuple[tuple[str, ...], ...]
    implied: Callable[[Shapes], Implied | None]
    shared: Mapping[str, str] | None = None
    needs_base: bool = False


def _matrix(shapes: Shapes, role: str) -> tuple[int, int] | None:
    shape = shapes.get(role)
    return (shape[0], shape[1]) if shape is not None and len(shape) == 2 else None


def _product(shapes: Shapes, left: str, right: str) -> tuple[int, int] | None:
    """(rows, cols) of left @ right when both are matrices with matching inner sizes."""
    a, b = _matrix(shapes, left), _matrix(shapes, right)
    return (a[0], b[1]) if a and b and a[1] == b[0] else None


def _lora(shapes: Shapes) -> Implied | None:
    out_in = _product(shapes, "lora_B", "lora_A")
    magnitude = shapes.get("magnitude")
    if out_in is None or (magnitude is not None and math.prod(magnitude) != out_in[0]):
        return None
    return out_in


def _adalora(shapes: Shapes) -> Implied | None:
    out_in, e = _product(shapes, "lora_B", "lora_A"), shapes.get("lora_E")
    a = shapes["lora_A"]
    return out_in if out_in and e is not None and math.prod(e) == a[0] else None


def _loha(shapes: Shapes) -> Implied | None:
    one, two = _product(shapes, "hada_w1_a", "hada_w1_b"), _product(shapes, "hada_w2_a", "hada_w2_b")
    return one if one is not None and one == two else None


def _lokr(shapes: Shapes) -> Implied | None:
    w1 = _matrix(shapes, "lokr_w1") or _product(shapes, "lokr_w1_a", "lokr_w1_b")
    w2 = _matrix(shapes, "lokr_w2") or _product(shapes, "lokr_w2_a", "lokr_w2_b")
    return (w1[0] * w2[0], w1[1] * w2[1]) if w1 and w2 else None


def _ia3(shapes: Shapes) -> Implied | None:
    scales = _matrix(shapes, "ia3_l")  # (out, 1) scales rows, (1, in) scales columns (feedforward)
    if scales is None or 1 not in scales:
        return None
    return (scales[0], None) if scales[1] == 1 else (None, scales[1])


def oft_block_size(n_elements: int) -> int | None:
    """b with b(b − 1)/2 = n_elements (the upper triangle of one skew-symmetric block), or None."""
    b = (1 + math.isqrt(1 + 8 * n_elements)) // 2
    return b if b * (b - 1) // 2 == n_elements and b > 1 else None


def _oft(shapes: Shapes) -> Implied | None:
    r = _matrix(shapes, "oft_R")
    size = oft_block_size(r[1]) if r else None
    if not (r and size):
        return None
    return (
        (None, r[0] * size) if r[0] > 1 else (None, None)
    )  # one shared block: its fit is checked by the form


def _boft(shapes: Shapes) -> Implied | None:
    r, s = shapes.get("boft_R"), _matrix(shapes, "boft_s")
    if r is None or len(r) != 4 or r[2] != r[3] or s is None or s[1] != 1:
        return None
    return (s[0], r[1] * r[2])


def _vera(shapes: Shapes) -> Implied | None:
    a, b = _matrix(shapes, "vera_A"), _matrix(shapes, "vera_B")
    lam_b, lam_d = shapes.get("vera_lambda_b"), shapes.get("vera_lambda_d")
    if not (a and b and lam_b and lam_d and len(lam_b) == 1 and len(lam_d) == 1):
        return None
    if lam_d[0] > min(a[0], b[1]) or lam_b[0] > b[0]:
        return None
    return (lam_b[0], None)  # the input side is a slice of vera_A's columns, checked by the form


METHODS: dict[str, Method] = {
    "LORA": Method("lora", ("lora_A", "lora_B", "lora_magnitude_vector"), (("lora_A",), ("lora_B",)), _lora),
    "ADALORA": Method(
        "adalora", ("lora_A", "lora_B", "lora_E"), (("lora_A",), ("lora_B",), ("lora_E",)), _adalora
    ),
    "LOHA": Method(
        "loha",
        ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
        (("hada_w1_a",), ("hada_w1_b",), ("hada_w2_a",), ("hada_w2_b",)),
        _loha,
    ),
    "LOKR": Method(
        "lokr",
        ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"),
        (("lokr_w1", "lokr_w1_a"), ("lokr_w2", "lokr_w2_a")),
        _lokr,
    ),
    "IA3": Method("ia3", ("ia3_l",), (("ia3_l",),), _ia3, needs_base=True),
    "OFT": Method("oft", ("oft_R",), (("oft_R",),), _oft, needs_base=True),
    "BOFT": Method("boft", ("boft_R", "boft_s"), (("boft_R",), ("boft_s",)), _boft, needs_base=True),
    "VERA": Method(
        "vera",
        ("vera_lambda_b", "vera_lambda_d"),
        (("vera_lambda_b",), ("vera_lambda_d",), ("vera_A",), ("vera_B",)),
        _vera,
        shared={"vera_A": "vera_A", "vera_B": "vera_B"},
    ),
}
# Roles whose saved name differs from the role.
ROLE_OF_PARAM = {"lora_magnitude_vector": "magnitude"}
# peft types that learn virtual tokens (or a gated prompt) and leave every weight as it is.
PROMPT_TYPES = (
    "PROMPT_TUNING",
    "MULTITASK_PROMPT_TUNING",
    "P_TUNING",
    "PREFIX_TUNING",
    "ADAPTION_PROMPT",
    "CPT",
)


def kind_needs_base(kind: str) -> bool:
    """True when the delta kind's ΔW needs the base weight: DoRA's row norm, IA3's, OFT's and BOFT's W."""
    return kind == "dora" or any(m.kind == kind and m.needs_base for m in METHODS.values())
