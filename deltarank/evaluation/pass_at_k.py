"""pass@k with the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code").

For a task with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance that at least one of k
samples drawn without replacement passes. It is computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms
the large binomials. A benchmark's pass@k is the mean over its tasks; k is reported only where every task has
at least k samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

KS = (1, 10, 100)


def estimate(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with `n` samples, `c` of them passing (0 <= c <= n, 1 <= k <= n)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k(passed: Mapping[str, Sequence[bool]], ks: Sequence[int] = KS) -> dict[str, float]:
    """`{"pass@1": ..., "pass@10": ...}` over tasks (task id -> pass/fail of each sample), for each k in `ks`
    that no task has fewer samples than."""
    if not passed:
        return {}
    fewest = min(len(samples) for samples in passed.values())
    return {
        f"pass@{k}": sum(estimate(len(s), sum(s), k) for s in passed.values()) / len(passed)
        for k in ks
        if k <= fewest
    }
