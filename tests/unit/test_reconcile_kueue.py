"""A job in a Kueue queue: the planner's side of the Workload protocol (`ti.operator.kueue`)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ti import contract
from ti.api import ConditionStatus, ConditionType, Phase, TFTrainingJob, status_body
from ti.catalog import default_catalog
from ti.operator import kueue
from ti.operator.plans import Plan
from ti.operator.reconcile import plan
from ti.operator.settings import OperatorConfig
from ti.reasons import EventReason, Reason

from .jobs import RUNNING, at, body, done, pod

pytestmark = pytest.mark.unit

CATALOG = default_catalog()
CONFIG = OperatorConfig(stop_grace_seconds=30)
GPU_FLAVOR = {
    "metadata": {"name": "gpu-nodes"},
    "spec": {
        "nodeLabels": {"ti.io/pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def queued_job(status: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> TFTrainingJob:
    b = body(instanceCount=2)
    b["metadata"]["labels"] = {kueue.QUEUE_LABEL: "main", **(labels or {})}
    if status is not None:
        b["status"] = copy.deepcopy(status)
    return TFTrainingJob.from_body(b)


def after(j: TFTrainingJob, p: Plan) -> TFTrainingJob:
    b = j.to_body()
    if p.status is not None:
        b["status"] = status_body(p.status)
    return TFTrainingJob.from_body(b)


def workload(
    j: TFTrainingJob, *conditions: tuple[str, str, str, str], admitted: bool = False
) -> dict[str, Any]:
    wl = kueue.workload(j, [], None)
    wl["metadata"].update(resourceVersion="77", generation=1)
    wl["status"] = {
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": "2024-05-01T12:00:00Z"}
            for t, s, r, m in conditions
        ]
    }
    if admitted:
        wl["status"]["admission"] = {
            "clusterQueue": "team-a",
            "podSetAssignments": [
                {"name": "worker", "flavors": {"cpu": "gpu-nodes", "memory": "gpu-nodes"}, "count": 2}
            ],
        }
    return wl


ADMITTED = (
    ("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue team-a"),
    ("Admitted", "True", "Admitted", "The workload is admitted"),
)
PREEMPTED = (
    *ADMITTED,
    ("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: u2) due to prioritization"),
)


def decide(j: TFTrainingJob, pods: list[dict[str, Any]], now: float, q: kueue.QueueState) -> Plan:
    return plan(j, pods, None, at(now), CATALOG, CONFIG, q)


def training(i: int, **kw: Any) -> dict[str, Any]:
    return pod(
        index=i, node="n", started=5, phase="Running", fetch=done(0), main=RUNNING, upload=RUNNING, **kw
    )


def reasons(p: Plan) -> list[str]:
    return [e.reason for e in p.events]


def test_a_queued_job_gets_a_workload_and_no_pod() -> None:
    j = queued_job()
    p = decide(j, [], 0, kueue.QueueState())
    assert p.create_pods == [] and p.create_service is None
    wl = p.create_workload
    assert wl is not None and wl["spec"]["queueName"] == "main"
    assert wl["metadata"]["name"] == "tftrainingjob-mnist-uid-1"
    assert wl["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert wl["metadata"]["labels"][contract.LABEL_JOB] == "mnist"
    (worker,) = wl["spec"]["podSets"]
    assert worker["name"] == "worker" and worker["count"] == 2
    requests = worker["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    assert "priorityClassRef" not in wl["spec"]
    assert p.status is not None and p.status.phase is Phase.QUEUED
    assert p.status.reason == Reason.WAITING_FOR_QUOTA and "LocalQueue main" in (
        p.status.conditions[-1].message or ""
    )
    admitted = p.status.condition(ConditionType.ADMITTED)
    assert admitted is not None and admitted.status is ConditionStatus.FALSE
    assert reasons(p) == [EventReason.QUEUED]


def test_a_waiting_job_says_why_in_kueues_words_once() -> None:
    j = queued_job()
    j = after(j, decide(j, [], 0, kueue.QueueState()))
    why = (
        "couldn't assign flavors to pod set worker: insufficient quota for nvidia.com/gpu in flavor gpu-nodes"
    )
    wl = workload(j, ("QuotaReserved", "False", "Pending", why))
    p = decide(j, [], 1, kueue.QueueState(workload=wl))
    assert p.create_pods == [] and p.create_workload is None
    admitted = p.status.condition(ConditionType.ADMITTED) if p.status else None
    assert admitted is not None and admitted.message == f"waiting in LocalQueue main: {why}"
    assert reasons(p) == []  # still WaitingForQuota: no second Event
    assert decide(after(j, p), [], 2, kueue.QueueState(workload=wl)).idle


def test_an_admitted_job_runs_on_its_flavors_nodes() -> None:
    j = queued_job()
    j = after(j, decide(j, [], 0, kueue.QueueState()))
    wl = workload(j, *ADMITTED, admitted=True)
    p = decide(j, [], 1, kueue.QueueState(workload=wl, flavors={"gpu-nodes": GPU_FLAVOR}))
    assert [m["metadata"]["name"] for m in p.create_pods] == ["mnist-worker-0", "mnist-worker-1"]
    for m in p.create_pods:
        assert m["spec"]["nodeSelector"]["ti.io/pool"] == "gpu"
        assert GPU_FLAVOR["spec"]["tolerations"][0] in m["spec"]["tolerations"]
    assert p.status is not None and p.status.phase is Phase.STARTING
    admitted = p.status.condition(ConditionType.ADMITTED)
    assert admitted is not None and admitted.status is ConditionStatus.TRUE
    assert admitted.message == "admitted by ClusterQueue team-a (flavors: worker=gpu-nodes)"
    assert reasons(p) == [EventReason.ADMITTED, EventReason.CREATED]


def test_an_eviction_stops_the_pods_then_gives_the_quota_back_without_a_retry() -> None:
    j = queued_job()
    j = after(j, decide(j, [], 0, kueue.QueueState()))
    j = after(j, decide(j, [], 1, kueue.QueueState(workload=workload(j, *ADMITTED, admitted=True))))
    running = [training(0), training(1)]
    j = after(j, decide(j, running, 10, kueue.QueueState(workload=workload(j, *ADMITTED, admitted=True))))
    assert j.status is not None and j.status.phase is Phase.TRAINING

    evicted = workload(j, *PREEMPTED, admitted=True)
    p = decide(j, running, 20, kueue.QueueState(workload=evicted))
    assert [(d.name, d.reason, d.grace_period_seconds) for d in p.delete_pods] == [
        ("mnist-worker-0", "queue", 30),
        ("mnist-worker-1", "queue", 30),
    ]
    assert p.status is not None and p.status.phase is Phase.QUEUED
    assert p.status.reason == Reason.EVICTED_BY_QUEUE and p.status.restart_count == 0
    admitted = p.status.condition(ConditionType.ADMITTED)
    assert admitted is not None and "Preempted" in (admitted.message or "")
    assert reasons(p) == [EventReason.EVICTED_BY_QUEUE]
    assert p.workload_status is None, "the quota is given back only once the pods are gone"
    j = after(j, p)

    gone = decide(j, [], 25, kueue.QueueState(workload=evicted))
    assert gone.workload == ("tftrainingjob-mnist-uid-1", "77")
    patch = gone.workload_status
    assert patch is not None and patch["admission"] is None
    by_type = {c["type"]: c for c in patch["conditions"]}
    assert by_type["QuotaReserved"]["status"] == "False" and by_type["Admitted"]["status"] == "False"
    assert by_type["Requeued"]["status"] == "True" and by_type["Evicted"]["status"] == "True"
    assert reasons(gone) == []

    again = decide(j, [], 40, kueue.QueueState(workload=workload(j, *ADMITTED, admitted=True)))
    assert [m["metadata"]["labels"][contract.LABEL_ATTEMPT] for m in again.create_pods] == ["0", "0"]
    assert again.status is not None and again.status.restart_count == 0


def test_a_finished_job_marks_its_workload_finished() -> None:
    j = queued_job()
    j = after(j, decide(j, [], 0, kueue.QueueState()))
    admitted = kueue.QueueState(workload=workload(j, *ADMITTED, admitted=True))
    j = after(j, decide(j, [], 1, admitted))
    ended = [
        pod(index=i, node="n", started=5, phase="Succeeded", fetch=done(0), main=done(0), upload=done(0))
        for i in (0, 1)
    ]
    p = decide(j, ended, 100, admitted)
    assert p.status is not None and p.status.phase is Phase.COMPLETED
    assert p.workload_status is not None
    (finished,) = [c for c in p.workload_status["conditions"] if c["type"] == "Finished"]
    assert finished["status"] == "True" and finished["reason"] == "Succeeded"
    # The write is retried by the next reconcile if it was lost, and not made twice once it shows.
    assert decide(after(j, p), ended, 101, admitted).workload_status is not None
    done_wl = workload(j, *ADMITTED, ("Finished", "True", "Succeeded", "done"), admitted=True)
    assert decide(after(j, p), ended, 102, kueue.QueueState(workload=done_wl)).workload_status is None


def test_without_kueue_a_queued_job_waits_saying_so() -> None:
    p = decide(queued_job(), [], 0, kueue.QueueState(available=False))
    assert p.create_pods == [] and p.create_workload is None
    assert p.status is not None and p.status.phase is Phase.QUEUED
    assert p.status.reason == Reason.QUEUE_UNAVAILABLE
    assert p.requeue_after == kueue.UNAVAILABLE_RETRY_SECONDS


def test_a_job_without_the_label_ignores_any_queue_state() -> None:
    j = TFTrainingJob.from_body(body(instanceCount=2))
    plain = plan(j, [], None, at(0), CATALOG, CONFIG)
    given = plan(j, [], None, at(0), CATALOG, CONFIG, kueue.QueueState(available=False))
    assert plain == given and plain.create_workload is None and len(plain.create_pods) == 2


def test_the_priority_class_label_sets_the_workloads_priority() -> None:
    j = queued_job(labels={kueue.PRIORITY_LABEL: "high"})
    p = decide(j, [], 0, kueue.QueueState(priority=1000))
    assert p.create_workload is not None
    spec = p.create_workload["spec"]
    assert spec["priority"] == 1000
    assert spec["priorityClassRef"] == {"group": kueue.GROUP, "kind": "WorkloadPriorityClass", "name": "high"}


def test_reading_a_workload() -> None:
    assert kueue.read_workload(None).state == "missing"
    j = queued_job()
    a = kueue.read_workload(workload(j, *ADMITTED, admitted=True))
    assert a.state == "admitted" and a.cluster_queue == "team-a" and a.flavors == {"worker": ["gpu-nodes"]}
    e = kueue.read_workload(workload(j, *PREEMPTED, admitted=True))
    assert e.state == "evicted" and e.reason == "Preempted" and e.holds_quota
    w = kueue.read_workload(
        workload(j, ("QuotaReserved", "False", "Inadmissible", "LocalQueue main doesn't exist"))
    )
    assert w.state == "waiting" and w.message == "LocalQueue main doesn't exist" and not w.holds_quota


def test_a_priority_class_that_does_not_exist_keeps_the_job_out_of_its_queue_saying_so() -> None:
    j = queued_job(labels={kueue.PRIORITY_LABEL: "urgent"})
    p = decide(j, [], 0, kueue.QueueState(missing_priority_class="urgent"))
    assert p.create_workload is None and p.create_pods == []
    assert p.status is not None and p.status.phase is Phase.QUEUED
    assert p.status.reason == Reason.PRIORITY_CLASS_NOT_FOUND
    admitted = p.status.condition(ConditionType.ADMITTED)
    assert admitted is not None and admitted.status == ConditionStatus.FALSE
    assert "WorkloadPriorityClass urgent" in admitted.message and kueue.PRIORITY_LABEL in admitted.message
    assert [(e.type, e.reason) for e in p.events] == [("Warning", EventReason.QUEUED)]
    assert p.requeue_after == kueue.PRIORITY_CLASS_RETRY_SECONDS
    # Said once; once the class exists, the Workload is made with its priority.
    j = after(j, p)
    assert decide(j, [], 5, kueue.QueueState(missing_priority_class="urgent")).events == []
    made = decide(j, [], 10, kueue.QueueState(priority=50))
    assert made.create_workload is not None and made.create_workload["spec"]["priority"] == 50


def suspended(j: TFTrainingJob, on: bool) -> TFTrainingJob:
    b = j.to_body()
    b["spec"].setdefault("runPolicy", {})["suspend"] = on
    return TFTrainingJob.from_body(b)


def patched(wl: dict[str, Any], p: Plan) -> dict[str, Any]:
    """`wl` after the plan's merge patch of it (annotations and spec.active)."""
    assert p.workload_patch is not None
    out = copy.deepcopy(wl)
    notes = out["metadata"].setdefault("annotations", {})
    for k, v in p.workload_patch["metadata"]["annotations"].items():
        notes.pop(k, None) if v is None else notes.__setitem__(k, v)
    out["spec"].update(p.workload_patch["spec"])
    return out


def test_a_suspended_job_deactivates_its_workload_gives_the_quota_back_and_resumes_in_line() -> None:
    j = queued_job()
    j = after(j, decide(j, [], 0, kueue.QueueState()))
    running = [training(0), training(1)]
    admitted_wl = workload(j, *ADMITTED, admitted=True)
    j = after(j, decide(j, [], 1, kueue.QueueState(workload=admitted_wl)))
    j = after(j, decide(j, running, 10, kueue.QueueState(workload=admitted_wl)))

    j = suspended(j, True)
    p = decide(j, running, 20, kueue.QueueState(workload=admitted_wl))
    assert p.status is not None and p.status.phase is Phase.SUSPENDED
    assert sorted(d.reason for d in p.delete_pods) == ["suspend", "suspend"]
    assert p.workload == ("tftrainingjob-mnist-uid-1", "77")
    inactive = patched(admitted_wl, p)
    assert not kueue.active(inactive) and kueue.suspended_by_us(inactive)
    admitted = p.status.condition(ConditionType.ADMITTED)
    assert (
        admitted is not None
        and admitted.status == ConditionStatus.FALSE
        and admitted.reason == Reason.SUSPENDED
    )
    j = after(j, p)

    # Kueue evicts the inactive Workload; once the pods are gone the admission is cleared, not requeued.
    deactivated = (*ADMITTED, ("Evicted", "True", "Deactivated", "The workload is deactivated"))
    evicted = {
        **workload(j, *deactivated, admitted=True),
        "spec": inactive["spec"],
        "metadata": inactive["metadata"],
    }
    assert decide(j, running, 21, kueue.QueueState(workload=evicted)).workload_status is None
    gone = decide(j, [], 25, kueue.QueueState(workload=evicted))
    assert gone.workload_patch is None, "deactivated once"
    cleared = gone.workload_status
    assert cleared is not None and cleared["admission"] is None
    requeued = {c["type"]: c for c in cleared["conditions"]}["Requeued"]
    assert requeued["status"] == "False" and requeued["reason"] == "Deactivated"

    # Resumed: the operator reactivates the Workload, and the job waits in line with no pod.
    quiet = dict(
        evicted, status={**evicted["status"], "admission": None, "conditions": cleared["conditions"]}
    )
    j = suspended(j, False)
    p = decide(j, [], 30, kueue.QueueState(workload=quiet))
    assert p.create_pods == [] and p.status is not None and p.status.phase is Phase.QUEUED
    assert p.status.reason == Reason.WAITING_FOR_QUOTA
    assert (p.events[0].reason, p.events[0].message) == (
        EventReason.RESUMED,
        "runPolicy.suspend is false: back in LocalQueue main",
    )
    active = patched(quiet, p)
    assert kueue.active(active) and not kueue.suspended_by_us(active)
    j = after(j, p)
    # Reactivated, Evicted still True until Kueue admits it again: waiting, not evicted, and said once.
    waiting = decide(j, [], 31, kueue.QueueState(workload=active))
    assert waiting.workload_patch is None and waiting.events == []
    assert waiting.status is None or waiting.status.reason == Reason.WAITING_FOR_QUOTA
    again = decide(j, [], 40, kueue.QueueState(workload=workload(j, *ADMITTED, admitted=True)))
    assert [m["metadata"]["labels"][contract.LABEL_ATTEMPT] for m in again.create_pods] == ["0", "0"]


def test_a_workload_someone_else_deactivated_is_left_inactive() -> None:
    j = queued_job()
    j = after(j, decide(j, [], 0, kueue.QueueState()))
    wl = workload(j, ("Evicted", "True", "Deactivated", "The workload is deactivated"))
    wl["spec"]["active"] = False  # `kubectl patch workload ... active: false`, or Kueue's requeuing limit
    p = decide(j, [], 1, kueue.QueueState(workload=wl))
    assert p.workload_patch is None
    assert p.status is not None and p.status.reason == Reason.EVICTED_BY_QUEUE
    assert p.create_pods == []


def test_a_suspended_job_that_never_got_a_workload_has_nothing_to_give_back() -> None:
    j = suspended(queued_job(), True)
    p = decide(j, [], 0, kueue.QueueState())
    assert p.status is not None and p.status.phase is Phase.SUSPENDED
    assert p.create_workload is None and p.workload_patch is None and p.workload_status is None
