"""LoRA ranks per weight matrix from the singular values of its ΔW: an energy target, or a parameter budget.

A rank-r LoRA on a matrix of shape (out, in) trains r·(out + in) parameters (B: out × r, A: r × in) and, at
best (Eckart–Young), keeps Σ_{i≤r} σ_i² of ‖ΔW‖_F² = Σ_i σ_i².

- Energy target τ: each matrix's r_τ (`ranks.energy_rank`), the smallest r keeping a share τ of its ‖ΔW‖_F².
- Budget R (a rank): the budget N = Σ_m R·(out_m + in_m) of a uniform rank-R LoRA on the same matrices
  (`uniform_budget`), spent as a budget N.
- Budget N: maximise the kept energy Σ_m Σ_{i≤r_m} σ_{m,i}² subject to Σ_m r_m (out_m + in_m) ≤ N, a knapsack
  whose items are the ranks of each matrix, one at a time: the k-th rank of matrix m weighs c_m = out_m + in_m
  and is worth σ_{m,k}². Greedy: take the increments by worth per parameter σ_{m,k}² / c_m, highest first (ties:
  earlier matrix, then lower k). σ² is non-increasing in k, so this order always takes a matrix's ranks in order
  and every prefix of it is a valid allocation; and a prefix is the optimum of the relaxation that may buy a
  fraction of an increment (fractional knapsack). Hence:

  * when the budget is spent along a prefix of that order (the next increment would overspend, or nothing is
    left to buy, and no increment was passed over), the allocation is optimal among all integer allocations;
  * when an increment does not fit in what is left, that matrix can take no further rank (its later ranks cost
    the same), so it is closed and the greedy goes on with the others: the leftover buys ranks of cheaper (narrower)
    matrices. That keeps at least the energy of stopping there, but it is no longer guaranteed optimal, even when
    it ends up spending the budget exactly (a cheaper increment can displace a better use of the same
    parameters). `Allocation.bound` is the relaxation's optimum at the first increment passed over: no allocation
    within the budget keeps more, so `bound − kept` bounds the loss.
  * ranks never exceed a matrix's cap (min(out, in), or fewer where the noise floor ends its spectrum); a
    leftover smaller than every open matrix's cost stays unspent.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deltarank.analysis.maths.ranks import energy_rank

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Allocation:
    """Ranks chosen under a parameter budget.

    Attributes:
        ranks: One rank per matrix, in input order.
        spent: Parameters the ranks cost, Σ r_m (out_m + in_m) ≤ budget.
        kept: Energy the ranks keep, Σ_m Σ_{i≤r_m} σ_{m,i}² (absolute, not a share).
        bound: An upper bound on the energy any allocation within the budget keeps (the fractional
            relaxation at the first increment the greedy passed over); equals `kept` when the greedy is
            provably optimal.
        optimal: True when no increment was passed over (the allocation is a prefix of the greedy order).
    """

    ranks: tuple[int, ...]
    spent: int
    kept: float
    bound: float
    optimal: bool


def lora_cost(shape: Sequence[int], rank: int) -> int:
    """Trainable parameters of a rank-`rank` LoRA on a matrix of shape (out, in): r·(out + in)."""
    return int(rank) * (int(shape[0]) + int(shape[1]))


def uniform_budget(shapes: Sequence[Sequence[int]], rank: int) -> int:
    """Trainable parameters of a uniform rank-R LoRA on these (out, in) matrices: Σ_m R·(out_m + in_m) (the
    budget at which an allocation costs what LoRA at one rank R on the same matrices costs)."""
    return sum(lora_cost(shape, rank) for shape in shapes)


def energy_ranks(spectra: Sequence[npt.ArrayLike], tau: float, caps: Sequence[int]) -> tuple[int, ...]:
    """Per matrix, min(r_τ, cap): r_τ of its full spectrum (`ranks.energy_rank`), capped at its noise floor.

    Args:
        spectra: Each matrix's singular values σ₁ ≥ σ₂ ≥ … (all of them: τ is a share of ‖ΔW‖_F²).
        tau: Energy share in (0, 1].
        caps: Largest rank each matrix may take (min(out, in), or its noise-floor rank).
    """
    return tuple(min(energy_rank(s, tau), int(cap)) for s, cap in zip(spectra, caps, strict=True))


def budget_ranks(
    spectra: Sequence[npt.ArrayLike], shapes: Sequence[Sequence[int]], budget: int, caps: Sequence[int]
) -> Allocation:
    """Ranks that keep the most energy of all ΔW within `budget` trainable LoRA parameters (greedy, see the
    module docstring for when it is optimal and what happens to a leftover).

    Args:
        spectra: Each matrix's singular values, descending (at least its `cap` leading ones).
        shapes: Each matrix's (out, in).
        budget: Trainable parameters N ≥ 0.
        caps: Largest rank each matrix may take (≤ min(out, in) and ≤ len(spectrum)).
    """
    energies = [np.asarray(s, dtype=np.float64) ** 2 for s in spectra]  # σ_{m,k}², non-increasing in k
    costs = [lora_cost(shape, 1) for shape in shapes]
    ranks = [0] * len(energies)
    # heap of (−σ²/c, matrix, k): the next increment of each open matrix
    heap = [(-e[0] / costs[m], m) for m, e in enumerate(energies) if caps[m] > 0 and e.size and e[0] > 0]
    heapq.heapify(heap)
    left, kept, passed = int(budget), 0.0, None
    while heap and left > 0:
        _, m = heapq.heappop(heap)
        if costs[m] > left:
            if passed is None:  # the relaxation buys the fraction left/c of this increment and nothing better
                passed = kept + left / costs[m] * energies[m][ranks[m]]
            continue  # this matrix is closed: its later ranks cost the same
        kept += float(energies[m][ranks[m]])
        left -= costs[m]
        ranks[m] += 1
        k = ranks[m]
        if k < caps[m] and k < energies[m].size and energies[m][k] > 0:
            heapq.heappush(heap, (-energies[m][k] / costs[m], m))
    return Allocation(
        ranks=tuple(ranks),
        spent=int(budget) - left,
        kept=kept,
        bound=kept if passed is None else max(kept, passed),
        optimal=passed is None,
    )


def retained_curve(sigma: npt.ArrayLike, length: int) -> tuple[float, ...]:
    """Cumulative energy shares Σ_{i≤k} σ_i² / Σ_i σ_i² for k = 1 … length (all zeros for ΔW = 0).

    Shapes: sigma (p,) full spectrum -> `length` ≤ p values.
    """
    energy = np.asarray(sigma, dtype=np.float64) ** 2
    total = float(energy.sum())
    if total == 0.0:
        return tuple(0.0 for _ in range(length))
    shares = np.minimum(np.cumsum(energy[:length]) / total, 1.0)
    return tuple(float(v) for v in shares)
