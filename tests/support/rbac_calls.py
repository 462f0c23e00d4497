"""The (apiGroup, resource, verb) list the operator needs, derived from its code and kopf's registry.

The operator's own requests: an AST scan of every module the kopf entry file imports, for methods of
the kubernetes client's API classes (`self.core.create_namespaced_pod`, also when passed on as a
callable; a list method handed to `Informer` is also watched), named as client-go names them. kopf's requests: its registry after loading
operator/handlers.py (what it watches, whether it patches objects for its bookkeeping or posts Events),
and what kopf 1.x always does: it lists and watches CRDs, and namespaces unless it runs
--all-namespaces (kopf/_core/reactor/observation.py). tests/unit/test_rbac.py compares the list with
the chart's rules; tests/integration/test_chart.py asks the API server about it.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import kopf
from kubernetes import client

from ti.api import API_VERSION, PLURAL
from ti.operator import kueue

REPO = Path(__file__).resolve().parents[2]
HANDLERS = REPO / "operator" / "handlers.py"
GROUP = API_VERSION.split("/")[0]
Grant = tuple[str, str, str]  # (apiGroup, resource, verb)

# The API classes the operator may use, and the group each one speaks for. A new one is added here.
API_GROUPS: dict[str, str | None] = {"CoreV1Api": "", "CustomObjectsApi": None}  # None: from the call
VERBS = {
    "create": "create",
    "read": "get",
    "get": "get",
    "list": "list",
    "patch": "patch",
    "replace": "update",
    "delete": "delete",
    "delete_collection": "deletecollection",
}
SUBRESOURCES = ("status", "log", "scale", "eviction", "binding", "ephemeralcontainers")
# kopf 1.x's cluster-wide reads, whatever the handlers are (observation.py).
KOPF_CRDS: set[Grant] = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
KOPF_NAMESPACES: set[Grant] = {("", "namespaces", v) for v in ("list", "watch")}


# ---- what the code calls --------------------------------------------------------------------------------


def operator_modules() -> list[Path]:
    """operator/handlers.py and every ti module it imports, directly or not."""
    seen: dict[str, Path] = {}
    todo = [HANDLERS]
    files: list[Path] = []
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.append(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] == "ti" and name not in seen and (found := _module_file(name)):
                    seen[name] = found
                    todo.append(found)
    return files


def _module_file(name: str) -> Path | None:
    base = REPO / "src" / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _api_methods() -> dict[str, str]:
    """method name -> API class, for the classes of API_GROUPS."""
    methods: dict[str, str] = {}
    for cls in API_GROUPS:
        for name in dir(getattr(client, cls)):
            if not name.startswith("_") and name != "api_client":
                methods[name.removesuffix("_with_http_info")] = cls
    return methods


def calls(tree: ast.AST) -> Iterator[tuple[str, ast.Call | None]]:
    """Each use of an API method, `x.create_namespaced_pod(...)` or passed on as `x.create_...`, with
    the call that receives its arguments (the method's own call, or the call it is passed to)."""
    methods = _api_methods()
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.removesuffix("_with_http_info") in methods:
            parent = parents.get(node)
            yield node.attr.removesuffix("_with_http_info"), parent if isinstance(parent, ast.Call) else None


def grant_of(method: str, cls: str, call: ast.Call | None) -> Grant:
    """The (apiGroup, resource, verb) a client method needs, from its name (client-go's naming)."""
    verb_part = next((v for v in sorted(VERBS, key=len, reverse=True) if method.startswith(f"{v}_")), None)
    assert verb_part, f"{method}: no verb the test knows; add it to VERBS"
    rest = method.removeprefix(f"{verb_part}_").removesuffix("_for_all_namespaces")
    rest = rest.removeprefix("namespaced_")
    group = API_GROUPS[cls]
    if group is None:  # CustomObjectsApi: group and plural are arguments, ours or Kueue's
        names = {a.id for a in (call.args if call else []) if isinstance(a, ast.Name)}
        kueue_names = [
            a.attr
            for a in (call.args if call else [])
            if isinstance(a, ast.Attribute) and isinstance(a.value, ast.Name) and a.value.id == "kueue"
        ]
        if kueue_names:  # ti.operator.kueue's constants: kueue.GROUP, kueue.VERSION, kueue.WORKLOADS
            assert "GROUP" in kueue_names and len(kueue_names) == 3, f"{method}: kueue.GROUP and a plural"
            group, resource = kueue.GROUP, getattr(kueue, kueue_names[-1])
        else:
            assert {"GROUP", "PLURAL"} <= names, f"{method}: not called with GROUP and PLURAL (TFTrainingJob)"
            group, resource = GROUP, PLURAL
        rest = rest.removeprefix("custom_object").removeprefix("cluster_custom_object")
        return group, resource + (f"/{rest.strip('_')}" if rest.strip("_") else ""), VERBS[verb_part]
    sub = next((s for s in SUBRESOURCES if rest.endswith(f"_{s}")), None)
    kind = rest.removesuffix(f"_{sub}") if sub else rest
    plural = kind.replace("_", "")
    plural = plural if plural.endswith("s") else plural[:-1] + "ies" if plural.endswith("y") else plural + "s"
    return group, plural + (f"/{sub}" if sub else ""), VERBS[verb_part]


def code_grants() -> set[Grant]:
    grants: set[Grant] = set()
    methods = _api_methods()
    for path in operator_modules():
        text = path.read_text()
        assert "kubernetes.watch" not in text and "Watch(" not in text, (
            f"{path}: a watch of its own; teach this test its verbs"
        )
        tree = ast.parse(text)
        for method, call in calls(tree):
            grant = grant_of(method, methods[method], call)
            grants.add(grant)
            # A list method handed to ti.operator.cache.Informer is listed, then watched.
            if call is not None and isinstance(call.func, ast.Name) and call.func.id == "Informer":
                grants.add((grant[0], grant[1], "watch"))
        grants |= _informed_functions(tree, methods)
    return grants


def _informed_functions(tree: ast.AST, methods: dict[str, str]) -> set[Grant]:
    """A function of ours handed to Informer (`Informer(self.list_workloads, ...)`) is a list call
    that is then watched: the list calls in its body are watched too."""
    listed: dict[str, set[Grant]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            found = {grant_of(m, methods[m], c) for m, c in calls(node) if m.startswith("list_")}
            if found:
                listed[node.name] = found
    watched: set[Grant] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Informer":
            first = node.args[0] if node.args else None
            name = (
                first.attr
                if isinstance(first, ast.Attribute)
                else first.id
                if isinstance(first, ast.Name)
                else ""
            )
            watched |= {(g, r, "watch") for g, r, _ in listed.get(name, set())}
    return watched


def kopf_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    previous = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    try:
        spec = importlib.util.spec_from_file_location("ti_operator_handlers_for_rbac", HANDLERS)
        assert spec and spec.loader
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        kopf.set_default_registry(previous)
    return registry


def kopf_grants() -> set[Grant]:
    """What kopf requests on the namespaced resources its handlers name (private registry fields:
    kopf has no public way to list them)."""
    registry = kopf_registry()
    grants: set[Grant] = set()
    changing = registry._changing.get_all_handlers() + registry._spawning.get_all_handlers()
    watched = registry._watching.get_all_handlers() + registry._indexing.get_all_handlers() + changing
    for handler in watched:
        selector = handler.selector
        assert selector is not None and selector.group is not None
        resource = selector.plural or selector.any_name
        assert resource, f"{handler.id}: a selector by kind or category; name its plural"
        grants |= {(selector.group, resource, "list"), (selector.group, resource, "watch")}
    for handler in changing:  # progress and diff-base annotations, finalizers
        grants.add((handler.selector.group, handler.selector.plural or handler.selector.any_name, "patch"))
    if not re.search(r"^\s*settings\.posting\.enabled = False$", HANDLERS.read_text(), flags=re.M):
        grants.add(("", "events", "create"))  # kopf posts its own Events unless told not to
    return grants


# Kueue's cluster-scoped objects the operator reads (`*_cluster_custom_object` calls on them).
KUEUE_CLUSTER_WIDE = {kueue.RESOURCE_FLAVORS, kueue.PRIORITY_CLASSES}


def needed() -> set[Grant]:
    """Every namespaced grant the operator uses: its own calls and kopf's."""
    return {g for g in code_grants() | kopf_grants() if g[1] not in KUEUE_CLUSTER_WIDE}


def cluster_wide() -> set[Grant]:
    """The grants on cluster-scoped objects the operator's own calls use (Kueue's flavors and
    priority classes), whatever the chart's scope."""
    return {g for g in code_grants() if g[1] in KUEUE_CLUSTER_WIDE}
