"""Figure tests: Agg rendering only, and a Gaussian reference available."""

from __future__ import annotations

import pytest

from tests.figures.synthetic import install_reference_stub


@pytest.fixture(autouse=True)
def _reference(monkeypatch: pytest.MonkeyPatch) -> None:
    install_reference_stub(monkeypatch)
