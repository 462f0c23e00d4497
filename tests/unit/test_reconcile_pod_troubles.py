"""Plans for what a real kubelet shows (issue 13): a container waiting on its image or a Secret is
reported once per distinct message, and cleanPodPolicy Running never deletes a pod whose training
ended while its upload step still stores the log."""

from __future__ import annotations

from typing import Any

import pytest

from ti.api import TFTrainingJob, status_body
from ti.catalog import default_catalog
from ti.operator.reconcile import Plan, plan
from ti.operator.settings import OperatorConfig

from .jobs import RUNNING, at, done, job, pod

pytestmark = pytest.mark.unit

CATALOG = default_catalog()
CONFIG = OperatorConfig(stop_grace_seconds=30)
PULL_ERROR = 'Failed to pull image "tf:nope": rpc error: code = NotFound desc = not found'


def decide(j: TFTrainingJob, pods: list[dict[str, Any]], now: float) -> Plan:
    return plan(j, pods, None, at(now), CATALOG, CONFIG)


def after(j: TFTrainingJob, p: Plan) -> TFTrainingJob:
    b = j.to_body()
    if p.status is not None:
        b["status"] = status_body(p.status)
    return TFTrainingJob.from_body(b)


def started(**spec: Any) -> TFTrainingJob:
    """A job whose pods were created (the first plan applied)."""
    j0 = job(**spec)
    return after(j0, decide(j0, [], 0))


def on_node(i: int, phase: str = "Running", **containers: Any) -> dict[str, Any]:
    return pod(index=i, node="n", started=5, phase=phase, fetch=done(0), **containers)


def pulling(message: str) -> dict[str, Any]:
    p = on_node(
        0, "Pending", main={"waiting": {"reason": "ErrImagePull", "message": message}}, upload=RUNNING
    )
    return p


def backing_off(message: str) -> dict[str, Any]:
    waiting = {
        "reason": "ImagePullBackOff",
        "message": f'Back-off pulling image "tf:nope": ErrImagePull: {message}',
    }
    return on_node(0, "Pending", main={"waiting": waiting}, upload=RUNNING)


def test_a_container_waiting_on_its_image_is_a_warning_once_per_distinct_message() -> None:
    j = started(runPolicy={"schedulingTimeoutSeconds": 600})
    first = decide(j, [pulling(PULL_ERROR)], 20)
    assert first.status is not None and first.status.reason == "ImagePullFailed"
    warned = [(e.type, e.reason) for e in first.events]
    assert warned == [("Warning", "ImagePullFailed")] and PULL_ERROR in first.events[0].message
    j = after(j, first)
    # The kubelet backs off, repeating the same error: nothing new to say.
    again = decide(j, [backing_off(PULL_ERROR)], 40)
    assert again.events == [] and again.status_patch is None
    # A different error is a new story.
    other = decide(j, [pulling("unauthorized: authentication required")], 60)
    assert [e.reason for e in other.events] == ["ImagePullFailed"]
    assert "unauthorized" in other.events[0].message
    # Past the scheduling timeout the job fails, as before.
    late = decide(j, [backing_off(PULL_ERROR)], 600)
    assert late.status is not None and late.status.reason == "ImagePullFailed"
    assert late.status.phase is not None and late.status.phase.finished


def _kept_and_deleted(p: Plan) -> list[str]:
    return sorted(d.name for d in p.delete_pods)


def test_clean_running_keeps_pods_whose_training_ended() -> None:
    j = started(instanceCount=3, runPolicy={"cleanPodPolicy": "Running"})
    pods = [
        # All containers ended, but the kubelet has not marked the pod terminal yet.
        on_node(0, main=done(1, "ValueError: lr < 0"), upload=done(1, "ValueError: lr < 0")),
        # The script failed; the upload step still stores its log.
        on_node(1, main=done(1, "ValueError: bad"), upload=RUNNING),
        # Still training.
        on_node(2, main=RUNNING, upload=RUNNING),
    ]
    p = decide(j, pods, 100)
    assert p.status is not None and p.status.reason == "TrainingFailed"
    assert _kept_and_deleted(p) == ["mnist-worker-2"]
    # Later reconciles of the finished job keep them too, and once the upload step ended.
    finished = after(j, p)
    assert _kept_and_deleted(decide(finished, pods[:2], 110)) == []
    ended = [pods[0], on_node(1, "Failed", main=done(1, "ValueError: bad"), upload=done(1))]
    assert _kept_and_deleted(decide(finished, ended, 120)) == []


def test_clean_running_frees_a_pod_whose_main_container_never_started() -> None:
    j = started(runPolicy={"cleanPodPolicy": "Running"})
    never = on_node(0, main=done(128, 'exec: "/bin/sh": no such file', reason="StartError"), upload=RUNNING)
    p = decide(j, [never], 30)
    assert p.status is not None and p.status.reason == "ContainerConfigError"
    assert [(d.name, d.reason) for d in p.delete_pods] == [("mnist-worker-0", "clean")]


def test_clean_all_still_deletes_every_pod() -> None:
    j = started(instanceCount=2, runPolicy={"cleanPodPolicy": "All"})
    pods = [
        on_node(0, main=done(1, "ValueError: lr < 0"), upload=RUNNING),
        on_node(1, main=RUNNING, upload=RUNNING),
    ]
    # Worker 0 is still uploading its log: the job waits for its end before it fails.
    waiting = decide(j, pods, 100)
    assert waiting.status is not None and waiting.status.phase is not None
    assert not waiting.status.phase.finished and waiting.delete_pods == []
    pods[0] = on_node(0, "Failed", main=done(1, "ValueError: lr < 0"), upload=done(1))
    p = decide(j, pods, 110)
    assert p.status is not None and p.status.reason == "TrainingFailed"
    assert _kept_and_deleted(p) == ["mnist-worker-0", "mnist-worker-1"]
    assert {d.name: d.reason for d in p.delete_pods}["mnist-worker-0"] == "clean"
