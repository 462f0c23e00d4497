"""docs/install.md lists exactly the metrics the operator serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from ti.operator import metrics

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs" / "install.md"


def _served() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name  # prometheus_client strips a counter's _total; the exposed name has it
            names.add(f"{name}_total" if value._type == "counter" else name)
    return names


def test_the_install_guide_lists_every_metric_and_no_other() -> None:
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("<!-- metrics -->", 1)[1].split("<!-- /metrics -->", 1)[0]
    documented = set(re.findall(r"^\| `(ti_[a-z_]+)", table, flags=re.M))
    assert documented == _served(), f"docs: {sorted(documented)}; served: {sorted(_served())}"
