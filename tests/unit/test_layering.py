"""The package's layering (README "Layout"), checked on the package's own imports.

models ← render/status ← reconcile ← controller ← handlers. The pure modules never import a cluster
client; the operator never imports the SDK or local mode; what runs in training pods (toolkit,
storage) never imports the operator or the SDK.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
CLIENTS = ("kubernetes", "kopf")
SDK = ("ti.estimator", "ti.session", "ti.job", "ti.tensorflow", "ti.cli", "ti._sdk", "ti.local")
OPERATOR = ("ti.operator",)
PURE = (*CLIENTS, *SDK)

# module (file or package) → imports it must not make (modules of ours, or clients)
LAYERS: dict[str, tuple[str, ...]] = {
    "ti/reasons.py": (*PURE, *OPERATOR, "ti.api", "ti.catalog", "ti.storage", "ti.toolkit", "ti.contract"),
    "ti/contract.py": (*PURE, *OPERATOR, "ti.api", "ti.catalog", "ti.storage", "ti.toolkit"),
    "ti/api": (*PURE, *OPERATOR, "ti.catalog", "ti.storage", "ti.toolkit"),
    "ti/catalog": (*PURE, *OPERATOR, "ti.api", "ti.storage", "ti.toolkit"),
    "ti/operator/__init__.py": (*PURE, "ti"),
    "ti/operator/settings.py": (
        *PURE,
        "ti.api",
        "ti.catalog",
        *(
            f"ti.operator.{m}"
            for m in (
                "render",
                "pods",
                "status",
                "plans",
                "reconcile",
                "refusals",
                "controller",
                "workqueue",
                "metrics",
                "ratelimit",
                "cache",
                "rawapi",
            )
        ),
    ),
    "ti/operator/render.py": (
        *PURE,
        "ti.operator.pods",
        "ti.operator.status",
        "ti.operator.reconcile",
        "ti.operator.controller",
    ),
    "ti/operator/pods.py": (
        *PURE,
        "ti.catalog",
        "ti.operator.status",
        "ti.operator.render",
        "ti.operator.reconcile",
        "ti.operator.controller",
    ),
    "ti/operator/status.py": (
        *PURE,
        "ti.catalog",
        "ti.operator.render",
        "ti.operator.reconcile",
        "ti.operator.controller",
    ),
    "ti/operator/plans.py": (
        *PURE,
        "ti.catalog",
        *(f"ti.operator.{m}" for m in ("render", "pods", "status", "reconcile", "refusals", "controller")),
    ),
    "ti/operator/kueue.py": (
        *PURE,
        "ti.catalog",
        *(f"ti.operator.{m}" for m in ("status", "reconcile", "refusals", "controller", "queueing")),
    ),
    "ti/operator/queueing.py": (*SDK, "kopf", "ti.operator.controller", "ti.operator.reconcile"),
    "ti/operator/refusals.py": (*PURE, "ti.catalog", "ti.operator.reconcile", "ti.operator.controller"),
    "ti/operator/reconcile.py": (
        *PURE,
        "ti.operator.refusals",
        "ti.operator.controller",
        "ti.operator.workqueue",
    ),
    "ti/operator/workqueue.py": (*SDK, "kopf", "ti.operator.controller", "ti.operator.reconcile"),
    "ti/operator/cache.py": (*SDK, "kopf", "ti.operator.controller", "ti.operator.reconcile"),
    "ti/operator/events.py": (*SDK, "kopf", "ti.operator.controller", "ti.operator.reconcile"),
    "ti/operator/controller.py": (*SDK, "kopf"),
    "ti/operator/ratelimit.py": (*SDK, "kopf", "ti.operator.controller"),
    # The client's API class and nothing of ours: what a request is, not what it is for.
    "ti/operator/rawapi.py": (*SDK, "kopf", "ti.api", "ti.catalog", "ti.storage", "ti.toolkit", *OPERATOR),
    "ti/operator/metrics.py": (*SDK, "kopf", "ti.operator.controller"),
    "ti/toolkit": (*PURE, *OPERATOR, "ti.api", "ti.catalog"),
    "ti/storage": (*PURE, *OPERATOR, "ti.api", "ti.catalog", "ti.toolkit"),
    "ti/local": (*CLIENTS, "ti.operator.controller", "ti.operator.workqueue"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(module: str) -> list[Path]:
    target = SRC / module
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


def _forbidden(name: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f for f in forbidden if name == f or name.startswith(f + ".")]


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_no_module_imports_a_layer_it_must_not(module: str) -> None:
    files = _files(module)
    assert files and all(f.exists() for f in files), f"{module} is gone: update LAYERS with the layout"
    for path in files:
        for name in _imports(path):
            if module == "ti/operator/__init__.py" and name == "ti":
                continue
            bad = _forbidden(name, LAYERS[module])
            assert not bad, f"{path.relative_to(SRC)} imports {name}: the layering forbids {bad[0]} here"


def test_every_module_of_the_package_has_a_layer() -> None:
    covered = {p for module in LAYERS for p in _files(module)}
    sdk_side = {SRC / "ti" / f for f in ("__init__.py", "estimator.py", "session.py", "job.py", "cli.py")}
    sdk_side |= set((SRC / "ti" / "tensorflow").rglob("*.py")) | set((SRC / "ti" / "_sdk").rglob("*.py"))
    unplaced = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if p not in covered | sdk_side)
    assert not unplaced, f"modules outside the layering rules: {unplaced}"


def test_the_operator_entry_file_imports_only_the_operator_side() -> None:
    for name in _imports(ROOT / "operator" / "handlers.py"):
        bad = _forbidden(name, SDK)
        assert not bad, f"operator/handlers.py imports {name}: the operator never imports the SDK"


def test_toolkit_and_sdk_side_never_load_the_operator_or_a_client() -> None:
    code = (
        "import sys; import ti.toolkit.fetch, ti.toolkit.upload, ti.storage; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kopf') "
        "or m.startswith('ti.operator')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"the training pods' code pulls in the operator or a client: {out}"


def test_no_client_is_loaded_by_the_pure_core_even_indirectly() -> None:
    code = (
        "import sys; import ti.api, ti.api.crd, ti.api.docs, ti.catalog, ti.operator.settings, "
        "ti.operator.render, ti.operator.pods, ti.operator.status, ti.operator.plans, "
        "ti.operator.reconcile, ti.operator.refusals, ti.operator.kueue; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {CLIENTS!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"a pure module pulls in a cluster client: {out}"
