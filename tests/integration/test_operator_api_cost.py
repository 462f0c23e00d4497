"""What one 2-instance job costs the API server, from create to Completed, counted by the API server.

The figures come from kube-apiserver's own `apiserver_request_total`, before and after, with only this
job in the cluster. The test's own requests (create, polls, the kubelet's two status writes per pod)
are made with the Python client and counted here, then subtracted; what remains is the operator and
the cluster's components (scheduler bindings, kwok's pod status, the EndpointSlice controller).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tests.support.controlplane import ControlPlane
from tests.support.jobs import GROUP, LABEL_JOB, PLURAL, VERSION, job_manifest
from tests.support.operator import KWOK_HANDS_OFF, finished_status

pytestmark = pytest.mark.integration

# (verb, resource/subresource) → requests. Only what a job touches: node heartbeats, leases and the
# like are the cluster's background and are left out.
Key = tuple[str, str]
JOB_RESOURCES = {"tftrainingjobs", "pods", "services", "endpointslices", "endpoints", "events"}


def requests(plane: ControlPlane) -> Counter[Key]:
    counts: Counter[Key] = Counter()
    for family in text_string_to_metric_families(plane.metrics()):
        if family.name != "apiserver_request":  # the parser strips _total from counters
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            labels = sample.labels
            if labels.get("resource") not in JOB_RESOURCES:
                continue
            resource = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            if labels["resource"] == "events" and labels.get("group"):
                resource = f"events.{labels['group']}"  # the scheduler's events.k8s.io events
            counts[(labels["verb"], resource)] += int(sample.value)
    return counts


def settled(plane: ControlPlane, quiet: float = 1.5, timeout: float = 20) -> Counter[Key]:
    """Counts once nothing job-related has been requested for `quiet` seconds."""
    last, since = requests(plane), time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = requests(plane)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"the API server never went quiet; last counts {dict(last)}")


def test_one_two_instance_job_costs_its_pods_and_a_handful_of_writes(
    control_plane: ControlPlane, namespace: str, start_operator
) -> None:
    api = control_plane.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    # Earlier tests' namespaces are still being emptied (the namespace controller lists and the garbage
    # collector deletes their pods): that would be counted as this job's. Let them go first.
    deadline = time.monotonic() + 120
    while terminating := [
        n.metadata.name for n in core.list_namespace().items if n.status.phase == "Terminating"
    ]:
        assert time.monotonic() < deadline, f"namespaces never went away: {terminating}"
        time.sleep(0.5)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "trainer"}})
    # Default resync (60 s): no timer fires inside the window. Wait for the operator's job list; its pod
    # and Service watches start with the namespace's first job, so their one list each is counted.
    before_start = requests(control_plane)
    start_operator()
    deadline = time.monotonic() + 30
    while requests(control_plane)[("LIST", "tftrainingjobs")] <= before_start[("LIST", "tftrainingjobs")]:
        assert time.monotonic() < deadline, "the operator never listed tftrainingjobs"
        time.sleep(0.2)
    before = settled(control_plane)

    mine: Counter[Key] = Counter()
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, job_manifest("cost", instanceCount=2)
    )
    mine[("POST", "tftrainingjobs")] += 1

    def list_pods() -> list[dict[str, Any]]:
        mine[("LIST", "pods")] += 1
        found = core.list_namespaced_pod(namespace, label_selector=f"{LABEL_JOB}=cost")
        return [api.sanitize_for_serialization(p) for p in found.items]

    deadline = time.monotonic() + 60
    while not (len(found := list_pods()) == 2 and all(p["status"].get("phase") == "Running" for p in found)):
        assert time.monotonic() < deadline, "the pods never ran"
        time.sleep(0.5)
    for p in found:  # the kubelet: both workers succeed
        name = p["metadata"]["name"]
        core.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": KWOK_HANDS_OFF}})
        core.patch_namespaced_pod_status(name, namespace, {"status": finished_status(p, 0)})
        mine[("PATCH", "pods")] += 1
        mine[("PATCH", "pods/status")] += 1

    deadline = time.monotonic() + 60
    while True:
        mine[("GET", "tftrainingjobs")] += 1
        body: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cost")
        if (body.get("status") or {}).get("phase") == "Completed":
            break
        assert time.monotonic() < deadline, f"never Completed: {body.get('status')}"
        time.sleep(0.5)
    after = settled(control_plane)

    cost = after - before - mine
    assert not (mine - (after - before)), "the test's own requests were not all counted by the server"
    table = "\n".join(f"  {verb:6} {resource:28} {n}" for (verb, resource), n in sorted(cost.items()))
    sys.stderr.write(
        f"\n[api cost] one 2-instance job, create → Completed, {sum(cost.values())} requests "
        f"besides the test's own {sum(mine.values())}:\n{table}\n"
    )

    # The operator's writes: the two pods, the headless Service, a few status patches, two Events.
    assert cost[("POST", "pods")] == 2
    assert cost[("POST", "services")] == 1
    assert cost[("DELETE", "pods")] == 0  # cleanPodPolicy Running: succeeded pods are kept
    assert 2 <= cost[("PATCH", "tftrainingjobs/status")] <= 6
    # Core Events are also written by other components (a namespace being emptied, the node lifecycle
    # controller), so the server's count is a bound; the operator's own are read back exactly.
    ours = [
        e.reason
        for e in core.list_namespaced_event(namespace).items
        if e.reporting_component == "ti-operator" and e.involved_object.name == "cost"
    ]
    assert sorted(ours) == ["Completed", "Created"]
    assert cost[("POST", "events")] >= len(ours)
    assert cost[("PATCH", "tftrainingjobs")] == 0  # no finalizer, no kopf annotations
    assert cost[("PUT", "tftrainingjobs")] == 0
    operator_writes = len(ours) + sum(
        n
        for (verb, res), n in cost.items()
        if verb in ("POST", "PATCH", "PUT", "DELETE")
        and res in ("pods", "services", "tftrainingjobs", "tftrainingjobs/status")
    )
    assert operator_writes <= 2 + 1 + 6 + 2
    # The operator's reads: none per reconcile (it reads its watch caches). Its pod and Service watches
    # list once each when the namespace's first job arrives; nothing is read fresh for a job that ran
    # without a fault. Before the caches: a job GET, a pod LIST and a Service GET per reconcile (~13
    # reconciles for this job).
    assert cost[("GET", "tftrainingjobs")] == 0
    assert cost[("GET", "pods")] == 0
    assert cost[("GET", "services")] == 0
    assert cost[("LIST", "pods")] == 1
    assert cost[("LIST", "services")] == 1
    operator_requests = operator_writes + cost[("LIST", "pods")] + cost[("LIST", "services")]
    assert operator_requests <= 13, operator_requests
