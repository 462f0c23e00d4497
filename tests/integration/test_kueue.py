"""TFTrainingJobs admitted by a real Kueue controller (tests/support/kueue.py) on the real plane.

kwok runs the pods; the `kubelet` fixture ends them. Each test has its own ClusterQueue (named after
its namespace) and LocalQueue, with quota for what the test needs and no more.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.controlplane import GPU_LABEL, ControlPlane
from tests.support.jobs import (
    StatusRecorder,
    apply,
    condition,
    event_reasons,
    eventually,
    job,
    job_exists,
    job_manifest,
    patch_job,
    phase_is,
    pods,
    running_pods,
)
from tests.support.kueue import FLAVOR_GPU, FLAVOR_LABELS, Kueue, Queue, leave_no_pods
from tests.support.operator import Kubelet
from ti.catalog import default_catalog

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator_logs_stay_clean")]


@pytest.fixture(autouse=True)
def frees_its_nodes(control_plane: ControlPlane, namespace: str) -> Iterator[None]:
    yield
    leave_no_pods(control_plane, namespace, "tftj")


FAST = {"TI_RESYNC_SECONDS": "2", "TI_STOP_GRACE_SECONDS": "1"}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
GPU_TYPE = "ML.GN8.3XLARGE112"  # 2 GPUs an instance
CPU_TYPE = "TI.S.LARGE.POST"
GPUS = default_catalog().instance_type(GPU_TYPE).gpus
ORDER = ["Starting", "Downloading", "Training", "Uploading", "Completed"]


def one_gpu_job_of_quota(kueue: Kueue, namespace: str, **kw: Any) -> Queue:
    """A queue with GPU quota for exactly one 2-instance GPU job (CPU and memory are plenty)."""
    quota = {"cpu": "1000", "memory": "10Ti", "nvidia.com/gpu": str(2 * GPUS)}
    return kueue.queue(namespace, quotas={FLAVOR_GPU: quota}, **kw)


def queued(name: str, queue: str, priority: str | None = None, **spec: Any) -> dict[str, Any]:
    manifest = job_manifest(name, instanceType=GPU_TYPE, instanceCount=2, **spec)
    manifest["metadata"]["labels"] = {QUEUE_LABEL: queue, **({PRIORITY_LABEL: priority} if priority else {})}
    return manifest


def complete(plane: ControlPlane, kubelet: Kubelet, namespace: str, name: str) -> dict[str, Any]:
    for p in pods(plane, namespace, name):
        kubelet.finish(p["metadata"]["name"], exit_code=0)
    status: dict[str, Any] = eventually(phase_is(plane, namespace, name, "Completed"), f"{name} Completed")
    return status


def workload_of(kueue: Kueue, namespace: str, name: str) -> dict[str, Any] | None:
    found = [
        w
        for w in kueue.workloads(namespace)
        if w["metadata"]["labels"].get("training.ti.io/job-name") == name
    ]
    assert len(found) <= 1, f"{name} has {len(found)} Workloads"
    return found[0] if found else None


def queued_with(plane: ControlPlane, namespace: str, name: str, reason: str) -> Callable[[], Any]:
    def check() -> Any:
        status = job(plane, namespace, name).get("status") or {}
        return status if status.get("phase") == "Queued" and status.get("reason") == reason else None

    return check


def first_runs_on_the_quota_for_one(
    control_plane: ControlPlane, namespace: str, start_operator, kueue: Kueue
) -> Queue:
    """A queue with quota for one GPU job, the operator, job `first` running on it and job `second`
    applied after it."""
    queue = one_gpu_job_of_quota(kueue, namespace)
    start_operator(**FAST)
    apply(control_plane, namespace, queued("first", queue.name))
    eventually(running_pods(control_plane, namespace, "first", 2), "first's 2 pods running")
    apply(control_plane, namespace, queued("second", queue.name))
    return queue


def test_quota_for_one_job_holds_the_second_until_the_first_completes(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, kueue: Kueue
) -> None:
    queue = first_runs_on_the_quota_for_one(control_plane, namespace, start_operator, kueue)

    waiting = queued_with(control_plane, namespace, "second", "WaitingForQuota")

    def kueue_said_why() -> Any:
        # Queued at once with our words; Kueue's own follow once its scheduler has looked at it.
        status = waiting()
        said = (condition(status, "Admitted") or {}).get("message", "") if status else ""
        return status if "quota" in said else None

    status = eventually(kueue_said_why, "second waiting, in Kueue's words")
    admitted = condition(status, "Admitted")
    assert admitted is not None and admitted["status"] == "False"
    # Kueue's own words, naming the LocalQueue: why there is no room.
    assert f"LocalQueue {queue.name}" in admitted["message"] and "quota" in admitted["message"], admitted
    assert pods(control_plane, namespace, "second") == []
    # The ClusterQueue's status is Kueue's summary, written a moment after its admissions.
    gpus = str(2 * GPUS)
    eventually(
        lambda: queue.usage().get(FLAVOR_GPU, {}).get("nvidia.com/gpu") == gpus, "the first job's GPUs in use"
    )
    printed = control_plane.kubectl("get", "tftj", "second", "-n", namespace, "-o", "wide").stdout
    assert "Queued" in printed and "WaitingForQuota" in printed and queue.name in printed

    assert pods(control_plane, namespace, "second") == [], "the second job started before quota freed"
    complete(control_plane, kubelet, namespace, "first")
    finished = workload_of(kueue, namespace, "first")
    assert finished is not None
    assert condition(finished.get("status") or {}, "Finished") is not None
    eventually(
        running_pods(control_plane, namespace, "second", 2), "second's 2 pods running once first is done"
    )
    complete(control_plane, kubelet, namespace, "second")
    eventually(
        lambda: queue.usage() == {} and queue.reserved() == {}, "the ClusterQueue's usage back to zero"
    )
    reasons = event_reasons(control_plane, namespace, "second")
    # Admitted and Created are recorded in the same second: their order in the list is not theirs.
    assert reasons[0] == "Queued" and {"Admitted", "Created", "Completed"} <= set(reasons), reasons


def test_a_higher_priority_job_preempts_and_the_preempted_job_resumes_to_completed(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, kueue: Kueue
) -> None:
    kueue.priority_class("ti-low", 100)
    kueue.priority_class("ti-high", 1000)
    queue = one_gpu_job_of_quota(kueue, namespace)
    start_operator(**FAST)
    checkpoints = "cos://models-1250000000/checkpoints/low"
    with StatusRecorder(control_plane, namespace, "low") as recorder:
        apply(control_plane, namespace, queued("low", queue.name, "ti-low", checkpointPath=checkpoints))
        first = eventually(running_pods(control_plane, namespace, "low", 2), "low's pods running")
        eventually(phase_is(control_plane, namespace, "low", "Training"), "low Training")

        apply(control_plane, namespace, queued("high", queue.name, "ti-high"))
        # TI_STOP_GRACE_SECONDS=1: the preempted pods get a second to upload, then they are gone.
        eventually(lambda: pods(control_plane, namespace, "low") == [], "low's pods gone", timeout=30)
        status = eventually(queued_with(control_plane, namespace, "low", "EvictedByQueue"), "low evicted")
        admitted = condition(status, "Admitted")
        assert admitted is not None and admitted["status"] == "False" and "Preempted" in admitted["message"]
        assert status["restartCount"] == 0, "a preemption is not a retry"
        assert "EvictedByQueue" in event_reasons(control_plane, namespace, "low")

        eventually(running_pods(control_plane, namespace, "high", 2), "high's pods running")
        assert pods(control_plane, namespace, "low") == []
        complete(control_plane, kubelet, namespace, "high")

        again = eventually(running_pods(control_plane, namespace, "low", 2, 0), "low's pods again, attempt 0")
        assert {p["metadata"]["uid"] for p in again}.isdisjoint(p["metadata"]["uid"] for p in first)
        # It resumes from its checkpoints: the same checkpoint location is handed to the new pods.
        for pod in again:
            env = {e["name"]: e.get("value") for c in pod["spec"]["initContainers"] for e in c.get("env", [])}
            assert env.get("TI_CHECKPOINT_PATH") == checkpoints, env
        resumed = eventually(phase_is(control_plane, namespace, "low", "Training"), "low Training again")
        assert resumed["restartCount"] == 0
        assert condition(resumed, "Admitted")["status"] == "True"  # type: ignore[index]
        final = complete(control_plane, kubelet, namespace, "low")
        assert final["restartCount"] == 0
    phases = [s.get("phase") for s in recorder.statuses]
    last_queued = max(i for i, p in enumerate(phases) if p == "Queued")
    after = [p for p in phases[last_queued + 1 :] if p]
    assert after and after == sorted(after, key=ORDER.index), f"went back after resuming: {phases}"
    eventually(lambda: queue.usage() == {}, "quota released")


def test_a_job_admitted_on_the_gpu_flavor_lands_only_on_gpu_nodes_by_its_labels(
    control_plane: ControlPlane, namespace: str, start_operator, kueue: Kueue
) -> None:
    # A CPU-only job would fit any node; the flavor alone sends it to the GPU nodes.
    queue = kueue.queue(namespace, quotas={FLAVOR_GPU: {"cpu": "100", "memory": "1Ti"}})
    start_operator(**FAST)
    manifest = job_manifest("placed", instanceType=CPU_TYPE, instanceCount=2)
    manifest["metadata"]["labels"] = {QUEUE_LABEL: queue.name}
    apply(control_plane, namespace, manifest)
    found = eventually(running_pods(control_plane, namespace, "placed", 2), "2 pods running")
    nodes = json.loads(control_plane.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in nodes}
    for p in found:
        for key, value in FLAVOR_LABELS[FLAVOR_GPU].items():
            assert p["spec"]["nodeSelector"][key] == value
        assert labels[p["spec"]["nodeName"]].get(GPU_LABEL) == "true", p["spec"]["nodeName"]
    status = job(control_plane, namespace, "placed")["status"]
    admitted = condition(status, "Admitted")
    assert admitted is not None and admitted["status"] == "True"
    assert f"worker={FLAVOR_GPU}" in admitted["message"] and queue.cluster_queue in admitted["message"]


def test_a_job_whose_local_queue_does_not_exist_waits_naming_it_and_starts_once_it_exists(
    control_plane: ControlPlane, namespace: str, start_operator, kueue: Kueue
) -> None:
    start_operator(**FAST)
    apply(control_plane, namespace, queued("early", "later"))
    status = eventually(queued_with(control_plane, namespace, "early", "WaitingForQuota"), "early waiting")
    eventually(
        lambda: (
            "later"
            in (condition(job(control_plane, namespace, "early")["status"], "Admitted") or {}).get(
                "message", ""
            )
        ),
        "a message naming LocalQueue later",
    )
    assert pods(control_plane, namespace, "early") == []
    one_gpu_job_of_quota(kueue, namespace, name="later")
    eventually(running_pods(control_plane, namespace, "early", 2), "early's pods once its LocalQueue exists")
    assert status["restartCount"] == 0


def test_suspend_by_hand_without_the_label_and_deleting_a_queued_job_leave_nothing_behind(
    control_plane: ControlPlane, namespace: str, start_operator, kueue: Kueue
) -> None:
    queue = kueue.queue(namespace, quotas={FLAVOR_GPU: {"cpu": "1", "memory": "1Gi"}})  # room for nothing
    start_operator(**FAST)
    apply(control_plane, namespace, job_manifest("plain", instanceCount=2))
    eventually(running_pods(control_plane, namespace, "plain", 2), "plain's pods running")
    patch_job(control_plane, namespace, "plain", {"spec": {"runPolicy": {"suspend": True}}})
    eventually(phase_is(control_plane, namespace, "plain", "Suspended"), "plain Suspended")
    eventually(lambda: pods(control_plane, namespace, "plain") == [], "plain's pods gone")
    patch_job(control_plane, namespace, "plain", {"spec": {"runPolicy": {"suspend": False}}})
    eventually(running_pods(control_plane, namespace, "plain", 2), "plain's pods back")
    assert "Admitted" not in json.dumps(job(control_plane, namespace, "plain")["status"])

    apply(control_plane, namespace, queued("doomed", queue.name))
    eventually(lambda: workload_of(kueue, namespace, "doomed"), "doomed's Workload")
    eventually(queued_with(control_plane, namespace, "doomed", "WaitingForQuota"), "doomed waiting")
    control_plane.kubectl("delete", "tftj", "doomed", "-n", namespace, "--wait=true")
    eventually(lambda: not job_exists(control_plane, namespace, "doomed"), "doomed deleted")
    eventually(lambda: workload_of(kueue, namespace, "doomed") is None, "doomed's Workload garbage-collected")
    assert pods(control_plane, namespace, "doomed") == []
    assert workload_of(kueue, namespace, "plain") is None, "a job without the label never gets a Workload"


def test_the_operator_killed_while_jobs_wait_and_while_kueue_preempts(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, kueue: Kueue
) -> None:
    kueue.priority_class("ti-low", 100)
    kueue.priority_class("ti-high", 1000)
    queue = one_gpu_job_of_quota(kueue, namespace)
    op = start_operator(**FAST)
    apply(control_plane, namespace, queued("low", queue.name, "ti-low"))
    eventually(running_pods(control_plane, namespace, "low", 2), "low's pods running")
    apply(control_plane, namespace, queued("waiting", queue.name, "ti-low"))
    eventually(queued_with(control_plane, namespace, "waiting", "WaitingForQuota"), "waiting queued")

    op.kill()  # SIGKILL while a job waits
    apply(control_plane, namespace, queued("high", queue.name, "ti-high"))
    # Kueue preempts while no operator runs: it creates no Workload for `high`, so Kueue has nothing to
    # preempt for until the operator is back; then the preemption happens with the operator killed again.
    op = start_operator(**FAST)
    eventually(lambda: workload_of(kueue, namespace, "high"), "high's Workload")
    op.kill()
    eventually(
        lambda: condition((workload_of(kueue, namespace, "low") or {}).get("status") or {}, "Evicted"),
        "Kueue evicts low while the operator is down",
    )
    op = start_operator(**FAST)
    eventually(running_pods(control_plane, namespace, "high", 2), "high's pods running")
    complete(control_plane, kubelet, namespace, "high")
    # low (evicted) and waiting have the same priority; Kueue orders them by when each joined the queue,
    # so either may come first. The quota holds one: each runs alone, on attempt 0, and completes.
    left = ["low", "waiting"]
    while left:
        first = eventually(
            lambda: next((n for n in left if running_pods(control_plane, namespace, n, 2, 0)()), None),
            f"one of {left} running, attempt 0",
        )
        left.remove(first)
        assert all(pods(control_plane, namespace, n) == [] for n in left), "two jobs on quota for one"
        complete(control_plane, kubelet, namespace, first)
    for name in ("low", "high", "waiting"):
        created = [r for r in event_reasons(control_plane, namespace, name) if r == "Created"]
        status = job(control_plane, namespace, name)["status"]
        assert status["restartCount"] == 0
        # At most one Created per admission: low was admitted twice, the others once. Pods are named
        # per instance, so a duplicate could only be a second create of the same admission. Fewer is
        # possible: Kueue may admit `high` before the second kill lands, and an operator killed
        # between a pod create and its Event loses that Event (Events are best effort); the next
        # operator finds the pods already there and creates nothing.
        assert len(created) <= (2 if name == "low" else 1), (
            name,
            event_reasons(control_plane, namespace, name),
        )
    eventually(lambda: queue.usage() == {}, "quota released")


def test_suspending_a_running_queued_job_gives_its_quota_to_the_next_and_resuming_puts_it_back_in_line(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, kueue: Kueue
) -> None:
    queue = first_runs_on_the_quota_for_one(control_plane, namespace, start_operator, kueue)
    eventually(queued_with(control_plane, namespace, "second", "WaitingForQuota"), "second waiting")

    patch_job(control_plane, namespace, "first", {"spec": {"runPolicy": {"suspend": True}}})
    eventually(phase_is(control_plane, namespace, "first", "Suspended"), "first Suspended")
    # Its Workload is deactivated and its quota given back: the job that waited runs.
    eventually(running_pods(control_plane, namespace, "second", 2), "second's pods on first's quota")
    assert pods(control_plane, namespace, "first") == []
    wl = workload_of(kueue, namespace, "first")
    assert wl is not None and wl["spec"]["active"] is False
    admitted = condition(job(control_plane, namespace, "first")["status"], "Admitted")
    assert admitted is not None and admitted["status"] == "False" and admitted["reason"] == "Suspended"

    patch_job(control_plane, namespace, "first", {"spec": {"runPolicy": {"suspend": False}}})
    eventually(queued_with(control_plane, namespace, "first", "WaitingForQuota"), "first back in line")
    eventually(
        lambda: (workload_of(kueue, namespace, "first") or {}).get("spec", {}).get("active"), "reactivated"
    )
    assert pods(control_plane, namespace, "first") == [], "no quota is free while second runs"
    complete(control_plane, kubelet, namespace, "second")
    eventually(running_pods(control_plane, namespace, "first", 2, 0), "first's pods again, attempt 0")
    status = complete(control_plane, kubelet, namespace, "first")
    assert status["restartCount"] == 0
    eventually(lambda: queue.usage() == {}, "quota released")


def test_a_job_naming_a_missing_priority_class_waits_naming_it_and_is_queued_once_it_exists(
    control_plane: ControlPlane, namespace: str, start_operator, kueue: Kueue
) -> None:
    queue = one_gpu_job_of_quota(kueue, namespace)
    start_operator(**FAST)
    missing = f"later-{namespace}"[:63].rstrip("-")
    apply(control_plane, namespace, queued("early", queue.name, missing))
    status = eventually(
        queued_with(control_plane, namespace, "early", "PriorityClassNotFound"), "early waiting for its class"
    )
    admitted = condition(status, "Admitted")
    assert admitted is not None and f"WorkloadPriorityClass {missing}" in admitted["message"]
    assert workload_of(kueue, namespace, "early") is None, "no Workload until the class exists"
    assert "Queued" in event_reasons(control_plane, namespace, "early")
    try:
        kueue.priority_class(missing, 500)
        eventually(running_pods(control_plane, namespace, "early", 2), "early's pods once its class exists")
        wl = workload_of(kueue, namespace, "early")
        assert wl is not None and wl["spec"]["priority"] == 500
    finally:
        control_plane.kubectl(
            "delete", "workloadpriorityclasses.kueue.x-k8s.io", missing, "--ignore-not-found"
        )
