"""`helm template` of the chart for unit tests: the toolchain's helm renders it, no cluster involved."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import yaml

from tests.support.controlplane import toolchain_bin

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ti-operator"


def helm() -> Path:
    found = toolchain_bin() / "helm"
    assert found.is_file(), f"helm is missing from {found.parent}: run `make toolchain` (hack/toolchain.sh)"
    return found


@cache
def render(*args: str, namespace: str = "ti-system") -> tuple[dict, ...]:
    """The objects `helm template ti charts/ti-operator -n NAMESPACE ARGS` renders."""
    proc = subprocess.run(
        [str(helm()), "template", "ti", str(CHART), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"helm template {' '.join(args)} failed:\n{proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def find(docs: tuple[dict, ...], kind: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def operator_container(docs: tuple[dict, ...]) -> dict:
    (container,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def operator_env(docs: tuple[dict, ...]) -> dict[str, str]:
    """The operator container's environment, name -> value, in the order the chart renders it."""
    env = operator_container(docs)["env"]
    assert all("value" in e for e in env), "every variable has a literal value"
    return {e["name"]: e["value"] for e in env}
