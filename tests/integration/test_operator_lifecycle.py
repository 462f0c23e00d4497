"""The operator through a job's whole life on the real control plane: retries, deleted pods, a crashed
operator, unschedulable and overlong jobs, suspend/resume, stop, TTL, and concurrent edits.

kwok runs the pods (scheduled pods become Running); the `kubelet` fixture ends them with exit codes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.controlplane import ControlPlane
from tests.support.jobs import (
    StatusRecorder,
    apply,
    attempt,
    condition,
    event_reasons,
    events,
    eventually,
    job,
    job_exists,
    job_manifest,
    patch_job,
    phase_is,
    pods,
    running_pods,
)
from tests.support.operator import Kubelet

pytestmark = pytest.mark.integration

FAST = {"TI_RESYNC_SECONDS": "2", "TI_STOP_GRACE_SECONDS": "1"}


@pytest.fixture(autouse=True)
def operator_logs_stay_clean(tmp_path: Path) -> Iterator[None]:
    """Whatever a scenario does, the operator never fails a reconcile with a traceback."""
    yield
    for log in sorted(tmp_path.glob("operator-*.log")):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, (
            f"{log.name} has a traceback:\n{text[text.index('Traceback') - 2000 :]}"
        )


def uids(found: list[dict[str, Any]]) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in found}


def test_platform_fault_retries_every_instance_until_the_backoff_limit(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet
) -> None:
    start_operator(**FAST)
    apply(control_plane, namespace, job_manifest("flaky", instanceCount=2, runPolicy={"backoffLimit": 1}))
    first = eventually(running_pods(control_plane, namespace, "flaky", 2, 0), "2 running pods")

    # Worker 0 is OOM-killed by the node (137): a platform fault, so both workers start over.
    kubelet.finish("flaky-worker-0", exit_code=137)
    second = eventually(running_pods(control_plane, namespace, "flaky", 2, 1), "2 running pods of attempt 1")
    assert set(uids(second)) == set(uids(first))
    assert not set(uids(second).values()) & set(uids(first).values()), "some instance was not recreated"
    status = eventually(phase_is(control_plane, namespace, "flaky", "Training"), "phase Training again")
    assert status["restartCount"] == 1
    assert [i["restarts"] for i in status["instances"]] == [1, 1]
    restarting = condition(status, "Restarting")
    assert restarting is not None and restarting["status"] == "False"
    reasons = event_reasons(control_plane, namespace, "flaky")
    assert reasons.count("Restarting") == 1
    assert "InstanceFailed" in reasons
    restart_event = next(e for e in events(control_plane, namespace, "flaky") if e["reason"] == "Restarting")
    assert "exit code 137" in restart_event["message"]

    # The fault comes again: backoffLimit 1 is used up, the job fails and frees its running pod.
    kubelet.finish("flaky-worker-1", exit_code=137)
    status = eventually(phase_is(control_plane, namespace, "flaky", "Failed"), "phase Failed")
    assert status["reason"] == "BackoffLimitExceeded"
    assert status["restartCount"] == 1
    assert "exit code 137" in status["failureReason"]
    failed = condition(status, "Failed")
    assert failed is not None and failed["status"] == "True" and failed["reason"] == "BackoffLimitExceeded"
    eventually(
        lambda: (
            [p["metadata"]["name"] for p in pods(control_plane, namespace, "flaky")] == ["flaky-worker-1"]
        ),
        "worker 0 (still running) deleted, the failed worker 1 kept for its logs",
    )
    time.sleep(2)  # a resync or two: nothing is retried after the limit
    assert [attempt(p) for p in pods(control_plane, namespace, "flaky")] == [1]
    assert job(control_plane, namespace, "flaky")["status"]["restartCount"] == 1


@pytest.mark.parametrize("force", [False, True], ids=["graceful", "forced"])
def test_a_pod_deleted_by_someone_restarts_every_instance(
    control_plane: ControlPlane, namespace: str, start_operator, force: bool
) -> None:
    start_operator(**FAST)
    apply(control_plane, namespace, job_manifest("deleted", instanceCount=2))
    first = eventually(running_pods(control_plane, namespace, "deleted", 2, 0), "2 running pods")
    eventually(phase_is(control_plane, namespace, "deleted", "Training"), "phase Training")

    how = ["--grace-period=0", "--force"] if force else []
    control_plane.kubectl("delete", "pod", "deleted-worker-1", "-n", namespace, "--wait=false", *how)
    second = eventually(
        running_pods(control_plane, namespace, "deleted", 2, 1), "both instances recreated in attempt 1"
    )
    assert not set(uids(second).values()) & set(uids(first).values())
    status = eventually(phase_is(control_plane, namespace, "deleted", "Training"), "phase Training again")
    assert status["restartCount"] == 1
    restart = next(e for e in events(control_plane, namespace, "deleted") if e["reason"] == "Restarting")
    assert "deleted-worker-1" in restart["message"]
    time.sleep(2)
    assert uids(pods(control_plane, namespace, "deleted")) == uids(second), "the new attempt was not stable"


@pytest.mark.parametrize("how", ["killed", "rendered"])
def test_an_operator_that_died_before_writing_status_converges_without_duplicate_pods(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, how: str
) -> None:
    """The window between creating pods and recording them in status.

    killed: the operator is SIGKILLed as soon as the pods appear and the status it may have written is
    cleared. rendered: the pods are made by ti.render for the job's uid, exactly as the operator would,
    and the operator has never run. Either way a fresh operator must adopt the pods, not add any.
    """
    from ti.api import TFTrainingJob
    from ti.catalog import load_catalog
    from ti.render import OperatorConfig, render

    manifest = job_manifest("crash", instanceCount=2)
    if how == "killed":
        first = start_operator(**FAST)
        apply(control_plane, namespace, manifest)
        eventually(lambda: len(pods(control_plane, namespace, "crash")) == 2, "the operator's pods")
        first.kill()
    else:
        apply(control_plane, namespace, manifest)
        body = job(control_plane, namespace, "crash")
        rendered = render(TFTrainingJob.from_body(body), load_catalog(), OperatorConfig(stop_grace_seconds=1))
        control_plane.kubectl(
            "create",
            "-n",
            namespace,
            "-f",
            "-",
            input=yaml.safe_dump({"kind": "List", "apiVersion": "v1", "items": rendered.pods}),
        )
        if rendered.service is not None:
            control_plane.kubectl(
                "create", "-n", namespace, "-f", "-", input=yaml.safe_dump(rendered.service)
            )
    # No status at all: what the operator knew about its pods died with it.
    patch_job(control_plane, namespace, "crash", {"status": None}, "--subresource=status")
    assert "status" not in job(control_plane, namespace, "crash")
    before = eventually(running_pods(control_plane, namespace, "crash", 2, 0), "2 running pods")

    start_operator(**FAST)
    status = eventually(
        phase_is(control_plane, namespace, "crash", "Training"), "status rebuilt from the pods"
    )
    assert [i["pod"] for i in status["instances"]] == ["crash-worker-0", "crash-worker-1"]
    assert all(i.get("node") for i in status["instances"])
    assert status["restartCount"] == 0
    time.sleep(2)  # a resync: still the same two pods
    assert uids(pods(control_plane, namespace, "crash")) == uids(before)

    for name in uids(before):
        kubelet.finish(name, exit_code=0)
    status = eventually(phase_is(control_plane, namespace, "crash", "Completed"), "phase Completed")
    assert status["restartCount"] == 0
    assert uids(pods(control_plane, namespace, "crash")) == uids(before)
    assert event_reasons(control_plane, namespace, "crash").count("Created") <= 1
