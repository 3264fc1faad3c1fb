"""One table cell of a study's reports (report.md, the reproduction's section): the one number formatter."""

from __future__ import annotations

import math
from typing import Any

MIB = 2**20


def fmt(value: Any, spec: str) -> str:
    """A cell: `–` for a missing value, MiB for `mib`, else Python's format spec."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if spec == "mib":
        return f"{float(value) / MIB:.1f}"
    return format(value, spec)


def forgetting_cell(value: Any, interval: Any) -> str:
    """A forgetting (KL estimate) cell: the number, and where its 95% interval lies entirely below 0 the words
    that say so (`deltarank.evaluation.drift.BELOW_ZERO`), never a plain negative forgetting."""
    from deltarank.evaluation.drift import BELOW_ZERO, below_zero

    text = fmt(value, "+.4f")
    return f"{text} ({BELOW_ZERO})" if below_zero(interval) else text
