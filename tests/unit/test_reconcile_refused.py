"""reconcile.refused: the plan when the API server refuses a job's pods (admission, quota, validation)."""

from __future__ import annotations

import pytest

from ti.api import ConditionStatus, ConditionType, Phase, TFTrainingJob, status_body
from ti.catalog import default_catalog
from ti.operator.plans import Plan
from ti.operator.reconcile import plan
from ti.operator.refusals import REFUSED_RETRY_SECONDS, refused
from ti.operator.settings import OperatorConfig
from ti.reasons import EventReason, Reason

from .jobs import at, job

pytestmark = pytest.mark.unit

CONFIG = OperatorConfig(stop_grace_seconds=30)
SA = 'pods "mnist-worker-0" is forbidden: error looking up service account team-a/trainer: not found'


def applied(j: TFTrainingJob, p: Plan) -> TFTrainingJob:
    b = j.to_body()
    assert p.status is not None
    b["status"] = status_body(p.status)
    return TFTrainingJob.from_body(b)


def test_a_refused_job_waits_in_pending_and_says_why_once() -> None:
    first = refused(job(), SA, at(0), CONFIG)
    assert first.status is not None and first.status_patch is not None
    assert first.status.phase == Phase.PENDING
    assert first.status.reason == Reason.FAILED_CREATE
    created = first.status.condition(ConditionType.CREATED)
    assert created is not None
    assert created.status == ConditionStatus.FALSE and created.message == SA
    assert [(e.type, e.reason, e.message) for e in first.events] == [
        ("Warning", EventReason.FAILED_CREATE, SA)
    ]
    assert first.requeue_after == REFUSED_RETRY_SECONDS
    assert not first.create_pods and not first.delete_pods

    # Refused again for the same reason: nothing to write, no second Event, still retried.
    again = refused(applied(job(), first), SA, at(30), CONFIG)
    assert again.status_patch is None and again.events == []
    assert again.requeue_after == REFUSED_RETRY_SECONDS

    # A new reason (a quota now) is news.
    quota = 'pods "mnist-worker-0" is forbidden: exceeded quota: gpus'
    other = refused(applied(job(), first), quota, at(40), CONFIG)
    assert other.status_patch is not None and [e.message for e in other.events] == [quota]


def test_the_retry_is_never_later_than_the_resync() -> None:
    p = refused(job(), SA, at(0), OperatorConfig(resync_seconds=2))
    assert p.requeue_after == 2


def test_a_refused_job_creates_its_pods_on_the_next_reconcile() -> None:
    waiting = applied(job(), refused(job(), SA, at(0), CONFIG))
    nxt = plan(waiting, [], None, at(10), default_catalog(), CONFIG)
    assert [p["metadata"]["name"] for p in nxt.create_pods] == ["mnist-worker-0"]
    assert nxt.status is not None and nxt.status.phase == Phase.STARTING
    created = nxt.status.condition(ConditionType.CREATED)
    assert created is not None and created.status == ConditionStatus.TRUE


def test_refused_past_the_scheduling_timeout_the_job_fails_and_frees_its_pods() -> None:
    j = job(runPolicy={"schedulingTimeoutSeconds": 60})
    waiting = applied(j, refused(j, SA, at(0), CONFIG))
    still = refused(waiting, SA, at(59), CONFIG)
    assert still.status_patch is None and still.events == []

    ended = refused(waiting, SA, at(60), CONFIG)
    assert ended.status is not None and ended.status.phase == Phase.FAILED
    assert ended.status.reason == Reason.FAILED_CREATE
    assert ended.status.failure_reason is not None
    assert (
        "schedulingTimeoutSeconds (60s)" in ended.status.failure_reason and SA in ended.status.failure_reason
    )
    assert [e.reason for e in ended.events] == ["Failed"]

    # A pod that did get created before the refusals holds resources: the next reconcile frees it.
    failed = applied(waiting, ended)
    created = plan(failed, [], None, at(61), default_catalog(), CONFIG)
    live = {
        "metadata": {
            "name": "mnist-worker-0",
            "labels": {"training.ti.io/job-name": "mnist", "training.ti.io/attempt": "0"},
        },
        "status": {"phase": "Running"},
    }
    cleaned = plan(failed, [live], None, at(61), default_catalog(), CONFIG)
    assert created.create_pods == []
    assert [d.name for d in cleaned.delete_pods] == ["mnist-worker-0"]
