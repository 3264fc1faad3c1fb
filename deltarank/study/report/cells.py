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
