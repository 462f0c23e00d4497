"""RBAC grants exactly what the operator calls: the chart's rules, rendered in both scopes, against the
(apiGroup, resource, verb) list tests/support/rbac_calls.py derives from the code. A grant nobody uses
fails, and so does a call nobody granted.
"""

from __future__ import annotations

import ast

import pytest

from tests.support.rbac_calls import (
    GROUP,
    HANDLERS,
    KOPF_CRDS,
    KOPF_NAMESPACES,
    PLURAL,
    REPO,
    Grant,
    calls,
    cluster_wide,
    grant_of,
    needed,
    operator_modules,
)
from tests.unit import chart_support

pytestmark = pytest.mark.unit


def test_the_scan_finds_the_controllers_calls_and_maps_them_as_client_go_names_them() -> None:
    found = {m for path in operator_modules() for m, _ in calls(ast.parse(path.read_text()))}
    assert "create_namespaced_pod" in found and "patch_namespaced_custom_object_status" in found
    assert grant_of("read_namespaced_pod_log", "CoreV1Api", None) == ("", "pods/log", "get")
    assert grant_of("list_pod_for_all_namespaces", "CoreV1Api", None) == ("", "pods", "list")
    assert grant_of("replace_namespaced_config_map", "CoreV1Api", None) == ("", "configmaps", "update")
    assert grant_of("delete_collection_namespaced_persistent_volume_claim", "CoreV1Api", None) == (
        "",
        "persistentvolumeclaims",
        "deletecollection",
    )
    assert grant_of("read_namespaced_endpoints", "CoreV1Api", None) == ("", "endpoints", "get")
    call = ast.parse("f(GROUP, VERSION, ns, PLURAL, name)").body[0].value  # type: ignore[attr-defined]
    assert grant_of("patch_namespaced_custom_object_status", "CustomObjectsApi", call) == (
        GROUP,
        f"{PLURAL}/status",
        "patch",
    )
    kueue_call = ast.parse("f(kueue.GROUP, kueue.VERSION, ns, kueue.WORKLOADS, n)").body[0].value  # type: ignore[attr-defined]
    assert grant_of("patch_namespaced_custom_object_status", "CustomObjectsApi", kueue_call) == (
        "kueue.x-k8s.io",
        "workloads/status",
        "patch",
    )
    assert ("kueue.x-k8s.io", "resourceflavors", "list") in cluster_wide()
    assert {REPO / "src" / "ti" / "operator" / "controller.py", HANDLERS} <= set(operator_modules())


# ---- what the chart grants -------------------------------------------------------------------------------


def rules_of(docs: tuple[dict, ...], kind: str) -> list[set[Grant]]:
    out = []
    for doc in docs:
        if doc["kind"] == kind:
            out.append(
                {
                    (group, resource, verb)
                    for rule in doc["rules"]
                    for group in rule["apiGroups"]
                    for resource in rule["resources"]
                    for verb in rule["verbs"]
                }
            )
    return out


def _diff(granted: set[Grant], needed: set[Grant]) -> dict[str, list[Grant]]:
    return {"granted, never used": sorted(granted - needed), "used, not granted": sorted(needed - granted)}


def test_cluster_scope_grants_exactly_what_the_codecalls() -> None:
    docs = chart_support.render()
    assert "--standalone" in chart_support.operator_container(docs)["args"], "no peering objects to grant"
    assert "--all-namespaces" in chart_support.operator_container(docs)["args"]
    used = needed() | KOPF_CRDS | cluster_wide()
    assert rules_of(docs, "Role") == []
    (granted,) = rules_of(docs, "ClusterRole")
    assert _diff(granted, used) == {"granted, never used": [], "used, not granted": []}


def test_namespaced_scope_grants_exactly_what_the_codecalls() -> None:
    docs = chart_support.render("--set", "rbac.scope=namespaced", "--set", "watchNamespaces={team-a,team-b}")
    args = chart_support.operator_container(docs)["args"]
    assert "--standalone" in args and "--namespace=team-a" in args and "--all-namespaces" not in args
    roles = rules_of(docs, "Role")
    assert len(roles) == 2 and roles[0] == roles[1], "one identical Role per watched namespace"
    used = needed()
    assert _diff(roles[0], used) == {"granted, never used": [], "used, not granted": []}
    (cluster_reads,) = rules_of(docs, "ClusterRole")
    assert _diff(cluster_reads, KOPF_CRDS | KOPF_NAMESPACES | cluster_wide()) == {
        "granted, never used": [],
        "used, not granted": [],
    }


def test_a_grant_nobody_uses_and_a_call_nobody_granted_are_both_caught() -> None:
    used = needed()
    extra = ("", "secrets", "get")
    missing = next(iter(sorted(used)))
    assert _diff((used | {extra}) - {missing}, used) == {
        "granted, never used": [extra],
        "used, not granted": [missing],
    }
