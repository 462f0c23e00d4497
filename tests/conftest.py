"""Fixtures shared by every tier: each real component lives in its own module under tests/support."""

pytest_plugins = [
    "tests.support.controlplane",
    "tests.support.objectstore",
]
