"""Fixtures shared by every tier: each real component lives in its own module under tests/support."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.support.controlplane",
    "tests.support.kueue",
    "tests.support.objectstore",
    "tests.support.operator",
    "tests.support.realnode",
]

TIERS = {"unit", "integration", "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test without a tier marker would silently run in no `make` target at all.
    untiered = [i.nodeid for i in items if not TIERS & {m.name for m in i.iter_markers()}]
    if untiered:
        raise pytest.UsageError("tests without a tier marker (unit/integration/e2e): " + ", ".join(untiered))
