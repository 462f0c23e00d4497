"""The layering of DESIGN §8, checked: models ← render/status ← reconcile ← handlers.

Pure modules never import the Kubernetes client or kopf, and no layer imports one above it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src"
CLIENTS = ("kubernetes", "kopf")

# module (file or package) → modules of ours it must not import
LAYERS: dict[str, tuple[str, ...]] = {
    "ti/contract.py": ("ti.api", "ti.catalog", "ti.render", "ti.status", "ti.reconcile"),
    "ti/api": ("ti.catalog", "ti.render", "ti.status", "ti.reconcile"),
    "ti/catalog": ("ti.api", "ti.render", "ti.status", "ti.reconcile"),
    "ti/render.py": ("ti.status", "ti.reconcile"),
    "ti/status.py": ("ti.catalog", "ti.render", "ti.reconcile"),
    "ti/reconcile.py": (),
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


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_pure_modules_import_no_client_and_no_higher_layer(module: str) -> None:
    forbidden = (*CLIENTS, *LAYERS[module])
    for path in _files(module):
        for name in _imports(path):
            bad = [f for f in forbidden if name == f or name.startswith(f + ".")]
            assert not bad, f"{path.relative_to(SRC)} imports {name}: the layering forbids {bad[0]} here"


def test_no_client_is_loaded_even_indirectly() -> None:
    code = (
        "import sys; import ti.api, ti.api.crd, ti.api.docs, ti.catalog, ti.render, ti.status, ti.reconcile; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {CLIENTS!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"a pure module pulls in a cluster client: {out}"
