from __future__ import annotations

from typing import Any

import pytest

from ti import contract
from ti.api import ConditionStatus, ConditionType, Phase, TFTrainingJob, status_body
from ti.catalog import default_catalog
from ti.operator.plans import WAIT_SECONDS, Plan, merge_patch
from ti.operator.reconcile import RETRY_BACKOFF_SECONDS, plan
from ti.operator.render import render
from ti.operator.settings import OperatorConfig
from ti.reasons import EventReason, Reason

from .jobs import RUNNING, at, done, job, pod

pytestmark = pytest.mark.unit

CATALOG = default_catalog()
CONFIG = OperatorConfig(stop_grace_seconds=30)


def decide(j: TFTrainingJob, pods: list[dict[str, Any]], now: float, service: Any = None) -> Plan:
    return plan(j, pods, service, at(now), CATALOG, CONFIG)


def after(j: TFTrainingJob, p: Plan, **spec_changes: Any) -> TFTrainingJob:
    """The job once the plan's status patch was applied (and the spec edited)."""
    b = j.to_body()
    if p.status is not None:
        b["status"] = status_body(p.status)
    for key, value in spec_changes.items():
        b["spec"].setdefault("runPolicy", {})
        if key in ("suspend", "stop", "ttlSecondsAfterFinished"):
            b["spec"]["runPolicy"][key] = value
        else:
            b["spec"][key] = value
    return TFTrainingJob.from_body(b)


def created(p: Plan, **state: Any) -> list[dict[str, Any]]:
    """The pods a plan created, as the API server would show them in `state`."""
    out = []
    for manifest in p.create_pods:
        labels = manifest["metadata"]["labels"]
        q = pod(
            role=labels[contract.LABEL_ROLE],
            index=int(labels[contract.LABEL_INDEX]),
            attempt=int(labels[contract.LABEL_ATTEMPT]),
            **state,
        )
        q["metadata"]["ownerReferences"] = manifest["metadata"]["ownerReferences"]
        out.append(q)
    return out


def training(i: int = 0, attempt: int = 0, **kw: Any) -> dict[str, Any]:
    return pod(
        index=i,
        attempt=attempt,
        node="n",
        started=5,
        phase="Running",
        fetch=done(0),
        main=RUNNING,
        upload=RUNNING,
        **kw,
    )


def succeeded(i: int = 0, role: str = "worker") -> dict[str, Any]:
    return pod(
        role=role,
        index=i,
        node="n",
        started=5,
        phase="Succeeded",
        fetch=done(0),
        main=done(0),
        upload=done(0),
    )


def failed(i: int, code: int, message: str | None = None, attempt: int = 0) -> dict[str, Any]:
    return pod(
        index=i,
        attempt=attempt,
        node="n",
        started=5,
        phase="Failed",
        fetch=done(0),
        main=done(code, message),
        upload=done(0),
    )


def reasons(p: Plan) -> list[str]:
    return [e.reason for e in p.events]


# ---- creation --------------------------------------------------------------------------------------


def test_new_job_creates_its_pod() -> None:
    j = job()
    p = decide(j, [], 0)
    assert [m["metadata"]["name"] for m in p.create_pods] == ["mnist-worker-0"]
    assert p.create_pods == render(j, CATALOG, CONFIG, now=at(0)).pods
    assert p.create_service is None and p.delete_pods == []
    assert p.status is not None and p.status.phase is Phase.STARTING
    created_cond = p.status.condition(ConditionType.CREATED)
    assert created_cond is not None and created_cond.status is ConditionStatus.TRUE
    assert [(i.name, i.pod, i.phase.value) for i in p.status.instances] == [
        ("mnist-worker-0", "mnist-worker-0", "Starting")
    ]
    assert p.status_patch is not None and p.status_patch["phase"] == "Starting"
    assert reasons(p) == ["Created"]
    assert p.events[0].message == "created 1 pod (attempt 0)"
    assert p.requeue_after == 900  # the scheduling timeout, should no pod event come


def test_plans_are_idempotent() -> None:
    j = job(instanceCount=2)
    assert decide(j, [], 0) == decide(j, [], 0)
    running = [training(0), training(1)]
    js = after(j, decide(j, [], 0))
    assert decide(js, running, 50) == decide(js, running, 50)


def test_multi_instance_creates_pods_and_service() -> None:
    p = decide(job(instanceCount=4), [], 0)
    assert [m["metadata"]["name"] for m in p.create_pods] == [f"mnist-worker-{i}" for i in range(4)]
    assert p.create_service is not None and p.create_service["metadata"]["name"] == "mnist"
    existing = decide(job(instanceCount=4), [], 0, service={"metadata": {"name": "mnist"}})
    assert existing.create_service is None


def test_operator_restart_after_creating_pods_creates_no_duplicate() -> None:
    j = job(instanceCount=2)
    first = decide(j, [], 0)
    pods = created(first, node="n", started=3, phase="Running", fetch=RUNNING)
    p = decide(j, pods, 10)  # status was never written
    assert p.create_pods == []
    assert p.status is not None and p.status.phase is Phase.DOWNLOADING
    assert p.delete_pods == []


def test_partial_creation_creates_only_the_missing_pod() -> None:
    j = job(instanceCount=2)
    pods = created(decide(j, [], 0))[:1]
    p = decide(j, pods, 1)
    assert [m["metadata"]["name"] for m in p.create_pods] == ["mnist-worker-1"]


def test_pods_of_a_previous_job_with_the_same_name_block_creation() -> None:
    old = pod()
    old["metadata"]["ownerReferences"] = [{"uid": "old-uid", "controller": True, "kind": "TFTrainingJob"}]
    p = decide(job(), [old], 0)
    assert p.create_pods == [] and p.delete_pods == []
    assert p.status is not None and p.status.phase is Phase.PENDING
    assert p.requeue_after == WAIT_SECONDS


# ---- invalid spec -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"instanceType": "ML.NOPE"}, "valid types"),
        ({"instanceType": "local"}, "local mode"),
        ({"frameworkVersion": "3.0"}, "valid versions"),
    ],
)
def test_invalid_spec_fails_without_pods(spec: dict[str, Any], needle: str) -> None:
    p = decide(job(**spec), [], 0)
    assert p.create_pods == []
    assert p.status is not None and p.status.phase is Phase.FAILED
    assert p.status.reason == "InvalidSpec"
    assert needle in (p.status.failure_reason or "")
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "Failed")]


# ---- running, completion -----------------------------------------------------------------------------


def test_running_job_reports_training_then_nothing_to_do() -> None:
    j = after(job(), decide(job(), [], 0))
    p = decide(j, [training()], 30)
    assert p.status is not None and p.status.phase is Phase.TRAINING
    assert p.status.start_time == at(5)
    assert p.create_pods == [] and p.delete_pods == []
    j2 = after(j, p)
    again = decide(j2, [training()], 60)
    assert again.status is None and again.status_patch is None and again.idle
    assert again.requeue_after == pytest.approx(86400 - 55)  # the max-run deadline


def test_completion_cleans_running_parameter_servers() -> None:
    j0 = job(instanceCount=2, distribution={"type": "parameterServer"})
    j = after(j0, decide(j0, [], 0))
    ps = pod(
        role="ps", index=0, node="n", started=5, phase="Running", fetch=done(0), main=RUNNING, upload=RUNNING
    )
    p = decide(j, [succeeded(0), succeeded(1), ps], 100, service={})
    assert p.status is not None and p.status.phase is Phase.COMPLETED
    assert [(d.name, d.reason, d.grace_period_seconds) for d in p.delete_pods] == [
        ("mnist-ps-0", "clean", 30)
    ]
    assert "Completed" in reasons(p)
    assert p.status.model_artifacts == "cos://out-1250000000/models/mnist/output/model.tar.gz"


@pytest.mark.parametrize(("policy", "deleted"), [("None", []), ("Running", []), ("All", ["mnist-worker-0"])])
def test_clean_pod_policy_on_completion(policy: str, deleted: list[str]) -> None:
    j0 = job(runPolicy={"cleanPodPolicy": policy})
    j = after(j0, decide(j0, [], 0))
    p = decide(j, [succeeded(0)], 100)
    assert [d.name for d in p.delete_pods] == deleted


def test_ttl_deletes_the_finished_job() -> None:
    j0 = job(runPolicy={"ttlSecondsAfterFinished": 60})
    j = after(j0, decide(j0, [], 0))
    done_plan = decide(j, [succeeded(0)], 100)
    assert done_plan.requeue_after == 60 and not done_plan.delete_job
    finished = after(j, done_plan)
    assert decide(finished, [succeeded(0)], 130).requeue_after == 30
    assert decide(finished, [succeeded(0)], 160).delete_job


def test_finished_job_only_acknowledges_a_new_generation() -> None:
    j = after(job(), decide(job(), [], 0))
    finished = after(j, decide(j, [succeeded(0)], 100))
    assert decide(finished, [succeeded(0)], 200).idle
    b = finished.to_body()
    b["metadata"]["generation"] = 2
    b["spec"]["runPolicy"]["ttlSecondsAfterFinished"] = 10
    p = decide(TFTrainingJob.from_body(b), [succeeded(0)], 200)
    assert p.status_patch == {"observedGeneration": 2}
    assert p.delete_job


# ---- failures and retries ----------------------------------------------------------------------------


def test_user_error_fails_at_once_and_frees_the_other_workers() -> None:
    j0 = job(instanceCount=2)
    j = after(j0, decide(j0, [], 0))
    p = decide(j, [failed(0, 1, "KeyError: 'label'"), training(1)], 60, service={})
    assert p.status is not None and p.status.phase is Phase.FAILED
    assert p.status.failure_reason == "KeyError: 'label'"
    assert p.status.restart_count == 0
    assert [(d.name, d.reason) for d in p.delete_pods] == [("mnist-worker-1", "clean")]
    assert reasons(p) == ["InstanceFailed", "Failed"]
    assert "exit code 1" in p.events[0].message
    assert p.events[1].type == "Warning"


def test_retry_deletes_then_recreates_the_next_attempt() -> None:
    j0 = job(instanceCount=2, runPolicy={"backoffLimit": 2})
    j = after(j0, decide(j0, [], 0))
    pods = [failed(0, 137), training(1)]
    p = decide(j, pods, 60, service={})
    assert [(d.name, d.reason) for d in p.delete_pods] == [
        ("mnist-worker-0", "retry"),
        ("mnist-worker-1", "retry"),
    ]
    assert [d.grace_period_seconds for d in p.delete_pods] == [0, 30]
    assert p.create_pods == []
    assert p.status is not None and p.status.phase is Phase.PENDING and p.status.restart_count == 1
    assert reasons(p) == ["InstanceFailed", "Restarting"]
    j1 = after(j, p)

    # the old pods are still terminating: wait, create nothing
    for q in pods:
        q["metadata"]["deletionTimestamp"] = "2024-05-01T12:01:00Z"
    waiting = decide(j1, pods, 61, service={})
    assert waiting.create_pods == [] and waiting.delete_pods == []
    assert waiting.requeue_after == WAIT_SECONDS
    assert waiting.status is None or waiting.status.phase is Phase.PENDING

    # gone: attempt 1 is created, with its label
    again = decide(j1, [], 70, service={})
    assert [m["metadata"]["labels"][contract.LABEL_ATTEMPT] for m in again.create_pods] == ["1", "1"]
    assert (
        again.status is not None and again.status.phase is Phase.STARTING and again.status.restart_count == 1
    )
    restarting = again.status.condition(ConditionType.RESTARTING)
    assert restarting is not None and restarting.status is ConditionStatus.TRUE

    # running again clears Restarting
    j2 = after(j1, again)
    run = decide(j2, [training(0, attempt=1), training(1, attempt=1)], 80, service={})
    assert run.status is not None and run.status.phase is Phase.TRAINING
    restarting = run.status.condition(ConditionType.RESTARTING)
    assert restarting is not None and restarting.status is ConditionStatus.FALSE


def test_backoff_limit_exceeded_fails() -> None:
    j0 = job(runPolicy={"backoffLimit": 1})
    j = after(j0, decide(j0, [], 0))
    j = after(j, decide(j, [failed(0, 137)], 10))
    j = after(j, decide(j, [], 11))  # attempt 1 created
    p = decide(j, [failed(0, 137, attempt=1)], 20)
    assert p.status is not None and p.status.reason == "BackoffLimitExceeded"
    assert p.status.restart_count == 1
    assert p.create_pods == []


def test_a_deleted_pod_is_recreated_and_counted() -> None:
    j = after(job(), decide(job(), [], 0))
    j = after(j, decide(j, [training()], 10))
    p = decide(j, [], 20)  # someone deleted the pod
    assert p.status is not None and p.status.restart_count == 1 and p.status.reason == "PodDeleted"
    j = after(j, p)
    early = decide(j, [], 21)  # within the retry backoff: nothing yet, but a look again when it ends
    assert early.create_pods == [] and early.status_patch is None
    assert early.requeue_after is not None and 0 < early.requeue_after <= RETRY_BACKOFF_SECONDS
    p = decide(j, [], 20 + RETRY_BACKOFF_SECONDS)
    assert [m["metadata"]["labels"][contract.LABEL_ATTEMPT] for m in p.create_pods] == ["1"]


def test_unschedulable_frees_every_pod_whatever_the_policy() -> None:
    cond = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "Insufficient nvidia.com/gpu",
        }
    ]
    j0 = job(instanceCount=2, runPolicy={"schedulingTimeoutSeconds": 60, "cleanPodPolicy": "None"})
    j = after(j0, decide(j0, [], 0))
    pods = [training(0), pod(index=1, conditions=cond)]
    early = decide(j, pods, 30, service={})
    assert early.requeue_after == 30
    p = decide(j, pods, 60, service={})
    assert p.status is not None and p.status.reason == "Unschedulable"
    assert sorted((d.name, d.reason) for d in p.delete_pods) == [
        ("mnist-worker-0", "Unschedulable"),
        ("mnist-worker-1", "Unschedulable"),
    ]


def test_max_run_exceeded_stops_the_pods() -> None:
    j0 = job(maxRunSeconds=100)
    j = after(j0, decide(j0, [], 0))
    j = after(j, decide(j, [training()], 10))
    p = decide(j, [training()], 105)
    assert p.status is not None and p.status.reason == "MaxRunExceeded"
    assert [d.name for d in p.delete_pods] == ["mnist-worker-0"]


def test_old_attempt_leftovers_are_deleted() -> None:
    j = job(status={"phase": "Training", "restartCount": 1})
    p = decide(j, [failed(0, 137, attempt=0), training(0, attempt=1)], 30)
    assert [(d.name, d.reason) for d in p.delete_pods] == [("mnist-worker-0", "outdated")]


def test_service_deleted_by_someone_comes_back() -> None:
    j0 = job(instanceCount=2)
    j = after(j0, decide(j0, [], 0))
    p = decide(j, [training(0), training(1)], 30, service=None)
    assert p.create_service is not None


# ---- suspend, resume, stop ------------------------------------------------------------------------


def test_created_suspended_makes_no_pods() -> None:
    p = decide(job(runPolicy={"suspend": True}), [], 0)
    assert p.create_pods == []
    assert p.status is not None and p.status.phase is Phase.SUSPENDED
    cond = p.status.condition(ConditionType.SUSPENDED)
    assert cond is not None and cond.status is ConditionStatus.TRUE
    assert reasons(p) == ["Suspended"]


def test_suspend_then_resume() -> None:
    j = after(job(), decide(job(), [], 0))
    j = after(j, decide(j, [training()], 10))
    js = after(j, Plan(), suspend=True)
    p = decide(js, [training()], 20)
    assert [(d.name, d.reason, d.grace_period_seconds) for d in p.delete_pods] == [
        ("mnist-worker-0", "suspend", 30)
    ]
    assert p.status is not None and p.status.phase is Phase.SUSPENDED
    assert reasons(p) == ["Suspended"]
    js = after(js, p)
    assert decide(js, [], 30).idle

    jr = after(js, Plan(), suspend=False)
    leaving = training()
    leaving["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:20Z"
    waiting = decide(jr, [leaving], 40)
    assert waiting.create_pods == [] and waiting.status is not None and waiting.status.phase is Phase.PENDING
    assert reasons(waiting) == ["Resumed"]
    back = decide(after(jr, waiting), [], 41)
    assert [m["metadata"]["name"] for m in back.create_pods] == ["mnist-worker-0"]
    assert back.status is not None and back.status.restart_count == 0  # suspension is not a retry
    cond = back.status.condition(ConditionType.SUSPENDED)
    assert cond is not None and cond.status is ConditionStatus.FALSE


def test_stop_sends_sigterm_then_ends_stopped() -> None:
    j = after(job(instanceCount=2), decide(job(instanceCount=2), [], 0))
    j = after(j, decide(j, [training(0), training(1)], 10, service={}))
    js = after(j, Plan(), stop=True)
    p = decide(js, [training(0), training(1)], 20, service={})
    assert [(d.reason, d.grace_period_seconds) for d in p.delete_pods] == [("stop", 30), ("stop", 30)]
    assert p.status is not None and p.status.phase is Phase.STOPPING
    assert reasons(p) == ["Stopping"]
    js = after(js, p)
    leaving = [training(0), training(1)]
    for q in leaving:
        q["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:20Z"
    still = decide(js, leaving, 25, service={})
    assert still.delete_pods == [] and still.events == [] and still.requeue_after == WAIT_SECONDS
    end = decide(js, [], 40, service={})
    assert end.status is not None and end.status.phase is Phase.STOPPED
    assert end.status.completion_time == at(40)
    assert reasons(end) == ["Stopped"]
    assert decide(after(js, end), [], 50).idle


def test_stop_before_any_pod_ends_at_once() -> None:
    p = decide(job(runPolicy={"stop": True}), [], 0)
    assert p.status is not None and p.status.phase is Phase.STOPPED and p.create_pods == []


def test_job_being_deleted_is_left_to_the_garbage_collector() -> None:
    b = job().to_body()
    b["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    assert decide(TFTrainingJob.from_body(b), [training()], 10).idle


def test_pods_of_other_jobs_are_ignored() -> None:
    stranger = pod(job_name="other")
    p = decide(job(), [stranger], 0)
    assert [m["metadata"]["name"] for m in p.create_pods] == ["mnist-worker-0"]


def test_merge_patch() -> None:
    old = {"phase": "Training", "failureReason": "x", "metrics": {"a": 1.0, "b": 2.0}, "restartCount": 0}
    new = {"phase": "Failed", "metrics": {"a": 1.0}, "restartCount": 0, "reason": "TrainingFailed"}
    assert merge_patch(old, new) == {
        "phase": "Failed",
        "failureReason": None,
        "metrics": {"b": None},
        "reason": "TrainingFailed",
    }
    assert merge_patch(new, new) == {}


def test_events_carry_the_facts_metrics_count_beside_their_message() -> None:
    # Metrics read reason, attempt and status_reason, never the message (ti.operator.metrics.count).
    j0 = job(runPolicy={"backoffLimit": 1})
    first = decide(j0, [], 0)
    assert [(e.reason, e.attempt) for e in first.events] == [(EventReason.CREATED, 0)]
    j = after(j0, first)
    retry = decide(j, [failed(0, 137)], 10)
    assert [(e.reason, e.attempt) for e in retry.events] == [
        (EventReason.INSTANCE_FAILED, 0),
        (EventReason.RESTARTING, 1),
    ]
    j = after(j, retry)
    second = decide(j, [], 20)
    assert [(e.reason, e.attempt) for e in second.events] == [(EventReason.CREATED, 1)]
    j = after(j, second)
    end = decide(j, [failed(0, 2, "bad flag", attempt=1)], 30)
    ended = [e for e in end.events if e.reason == EventReason.FAILED]
    assert [(e.type, e.status_reason) for e in ended] == [("Warning", Reason.TRAINING_FAILED)]
