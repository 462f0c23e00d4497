"""The plane's Kueue is real: its webhooks answer on loopback and it admits batch/v1 Jobs (its own
integration) by quota, onto the flavors' nodes. Each test fails without the Kueue behaviour it names.

The Jobs' pods carry kwok's hands-off annotation: kwok would otherwise complete a Job's pods at once
(its default stages), the Job would finish and its quota be released before a test could look."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import yaml

from tests.support.controlplane import GPU_RESOURCE, ControlPlane
from tests.support.kueue import (
    FLAVOR_CPU,
    FLAVOR_GPU,
    FLAVOR_LABELS,
    FLAVOR_TOLERATIONS,
    QUEUE_LABEL,
    Kueue,
    leave_no_pods,
)
from tests.support.operator import KWOK_HANDS_OFF

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def frees_its_nodes(control_plane: ControlPlane, namespace: str) -> Iterator[None]:
    yield
    leave_no_pods(control_plane, namespace, "jobs")


T = TypeVar("T")


def _until(probe: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout}s (last saw {last!r})")


def _settles(probe: Callable[[], T], want: T, what: str, timeout: float = 30) -> None:
    """ClusterQueue status follows its workloads a moment later: wait for `probe()` to give `want`."""
    deadline = time.monotonic() + timeout
    got = probe()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.3)
        got = probe()
    assert got == want, f"{what}: wanted {want!r}, last saw {got!r} after {timeout}s"


def _job(name: str, queue: str | None, cpu: str = "1", memory: str = "1Gi", gpus: int = 0) -> str:
    resources = {"cpu": cpu, "memory": memory, **({GPU_RESOURCE: str(gpus)} if gpus else {})}
    return yaml.safe_dump(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": {QUEUE_LABEL: queue} if queue else {}},
            "spec": {
                "parallelism": 1,
                "completions": 1,
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": dict(KWOK_HANDS_OFF)},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "main",
                                "image": "busybox",
                                "resources": {"requests": resources, "limits": resources},
                            }
                        ],
                    },
                },
            },
        }
    )


def _create(plane: ControlPlane, ns: str, manifest: str) -> dict[str, Any]:
    """The Job as the API server stored it (after the mutating webhooks)."""
    out = plane.kubectl("create", "-n", ns, "-f", "-", "-o", "json", input=manifest)
    return dict(json.loads(out.stdout))


def _get_job(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    return dict(json.loads(plane.kubectl("get", "job", name, "-n", ns, "-o", "json").stdout))


def _workload_of(kueue: Kueue, ns: str, job: str) -> dict[str, Any] | None:
    for wl in kueue.workloads(ns):
        if any(
            o.get("kind") == "Job" and o.get("name") == job for o in wl["metadata"].get("ownerReferences", [])
        ):
            return wl
    return None


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for c in (obj or {}).get("status", {}).get("conditions", []) or []:
        if c["type"] == kind:
            return dict(c)
    return None


def _admitted(plane: ControlPlane, ns: str, name: str) -> dict[str, Any] | None:
    job = _get_job(plane, ns, name)
    return job if job["spec"].get("suspend") is False else None


def _bound_node(plane: ControlPlane, ns: str, job: str) -> str | None:
    out = plane.kubectl(
        "get", "pods", "-n", ns, "-l", f"job-name={job}", "-o", "jsonpath={.items[*].spec.nodeName}"
    ).stdout.strip()
    return out or None


def test_a_queued_job_is_suspended_then_admitted_onto_its_flavor(
    control_plane: ControlPlane, kueue: Kueue, namespace: str
) -> None:
    q = kueue.queue(namespace, quotas={FLAVOR_CPU: {"cpu": "4", "memory": "8Gi"}})
    created = _create(control_plane, namespace, _job("train", q.name, cpu="2", memory="3Gi"))
    # Kueue's mutating webhook, not the Job controller, suspends it: the stored object already says so.
    assert created["spec"]["suspend"] is True, created["spec"]

    job = _until(lambda: _admitted(control_plane, namespace, "train"), "the job was not unsuspended")
    assert job["spec"]["template"]["spec"].get("nodeSelector") == FLAVOR_LABELS[FLAVOR_CPU]
    wl = _until(
        lambda: (
            (w := _workload_of(kueue, namespace, "train"))
            and (_condition(w, "Admitted") or {}).get("status") == "True"
            and w
        ),
        "the job's Workload was not Admitted",
    )
    assignment = wl["status"]["admission"]["podSetAssignments"][0]
    assert assignment["flavors"] == {"cpu": FLAVOR_CPU, "memory": FLAVOR_CPU}, assignment
    assert wl["status"]["admission"]["clusterQueue"] == q.cluster_queue
    _settles(q.usage, {FLAVOR_CPU: {"cpu": "2", "memory": "3Gi"}}, "ClusterQueue usage")
    assert q.reserved() == q.usage()
    assert q.admitted_workloads() == 1 and q.pending_workloads() == 0
    # The kube-scheduler honours the nodeSelector Kueue injected: the pod lands on a CPU node.
    node = _until(lambda: _bound_node(control_plane, namespace, "train"), "the job's pod was not scheduled")
    assert node.startswith("kwok-cpu-"), node


def test_a_gpu_job_skips_a_flavor_without_gpu_quota(
    control_plane: ControlPlane, kueue: Kueue, namespace: str
) -> None:
    q = kueue.queue(
        namespace,
        quotas={
            FLAVOR_CPU: {"cpu": "8", "memory": "16Gi"},
            FLAVOR_GPU: {"cpu": "8", "memory": "16Gi", GPU_RESOURCE: "2"},
        },
    )
    _create(control_plane, namespace, _job("gpu", q.name, gpus=1))
    job = _until(lambda: _admitted(control_plane, namespace, "gpu"), "the GPU job was not unsuspended")
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec.get("nodeSelector") == FLAVOR_LABELS[FLAVOR_GPU]
    assert FLAVOR_TOLERATIONS[FLAVOR_GPU][0] in pod_spec.get("tolerations", [])
    _settles(q.usage, {FLAVOR_GPU: {"cpu": "1", "memory": "1Gi", GPU_RESOURCE: "1"}}, "ClusterQueue usage")
    node = _until(lambda: _bound_node(control_plane, namespace, "gpu"), "the GPU job's pod was not scheduled")
    assert node.startswith("kwok-gpu-"), node


def test_a_job_over_quota_waits_until_the_first_is_deleted(
    control_plane: ControlPlane, kueue: Kueue, namespace: str
) -> None:
    q = kueue.queue(namespace, quotas={FLAVOR_CPU: {"cpu": "1", "memory": "1Gi"}})
    _create(control_plane, namespace, _job("first", q.name))
    _until(lambda: _admitted(control_plane, namespace, "first"), "the first job was not admitted")
    _create(control_plane, namespace, _job("second", q.name))

    def refused() -> dict[str, Any] | None:
        c = _condition(_workload_of(kueue, namespace, "second"), "QuotaReserved")
        return c if c and c["status"] == "False" and c.get("message") else None

    reserved = _until(refused, "the second job's Workload never reported QuotaReserved=False")
    sys.stderr.write(f"\n[kueue] second job pending: {reserved['reason']}: {reserved['message']}\n")
    assert "insufficient" in reserved["message"] and FLAVOR_CPU in reserved["message"], reserved
    assert _get_job(control_plane, namespace, "second")["spec"]["suspend"] is True
    _settles(
        lambda: (q.pending_workloads(), q.admitted_workloads()), (1, 1), "pending and admitted workloads"
    )

    control_plane.kubectl("delete", "job", "first", "-n", namespace, "--wait=false")
    _until(
        lambda: _admitted(control_plane, namespace, "second"),
        "the second job was not admitted after the first",
    )
    _until(
        lambda: q.usage() == {FLAVOR_CPU: {"cpu": "1", "memory": "1Gi"}}, "usage did not move to the second"
    )


def test_kueue_webhooks_refuse_what_the_schemas_accept(
    control_plane: ControlPlane, kueue: Kueue, namespace: str
) -> None:
    # A label key with spaces: the CRD's schema takes any string map; Kueue's validating webhook does not.
    flavor = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ResourceFlavor",
        "metadata": {"name": "bad-flavor"},
        "spec": {"nodeLabels": {"not a label key": "x"}},
    }
    out = control_plane.kubectl("create", "-f", "-", input=yaml.safe_dump(flavor), check=False)
    assert out.returncode != 0
    assert 'admission webhook "vresourceflavor.kb.io" denied the request' in out.stderr, out.stderr
    assert "spec.nodeLabels" in out.stderr, out.stderr
    # "Bad_Queue" is a valid label value, so the Job API takes it; it is no name a LocalQueue can have.
    out = control_plane.kubectl(
        "create", "-n", namespace, "-f", "-", input=_job("bad", "Bad_Queue"), check=False
    )
    assert out.returncode != 0
    assert 'admission webhook "vjob.kb.io" denied the request' in out.stderr, out.stderr
    assert QUEUE_LABEL in out.stderr, out.stderr


def test_a_job_without_the_queue_label_is_left_alone(
    control_plane: ControlPlane, kueue: Kueue, namespace: str
) -> None:
    kueue.queue(namespace, quotas={FLAVOR_CPU: {"cpu": "1"}})
    created = _create(control_plane, namespace, _job("plain", None, cpu="2"))
    assert not created["spec"].get("suspend"), created["spec"]
    node = _until(
        lambda: _bound_node(control_plane, namespace, "plain"), "the plain job's pod was not scheduled"
    )
    assert node
    assert _workload_of(kueue, namespace, "plain") is None
    assert "nodeSelector" not in _get_job(control_plane, namespace, "plain")["spec"]["template"]["spec"]
