"""The operator through a job's whole life on the real control plane: retries, deleted pods, a crashed
operator, unschedulable and overlong jobs, suspend/resume, stop, TTL, and concurrent edits.

kwok runs the pods (scheduled pods become Running); the `kubelet` fixture ends them with exit codes.
"""

from __future__ import annotations

import re
import threading
import time
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

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator_logs_stay_clean")]

FAST = {"TI_RESYNC_SECONDS": "2", "TI_STOP_GRACE_SECONDS": "1"}


def uids(found: list[dict[str, Any]]) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in found}


def test_platform_fault_retries_every_instance_until_the_backoff_limit(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet
) -> None:
    start_operator(**FAST)
    apply(control_plane, namespace, job_manifest("flaky", instanceCount=2, runPolicy={"backoffLimit": 2}))
    before = eventually(running_pods(control_plane, namespace, "flaky", 2, 0), "2 running pods")

    # One worker is killed by the node (137, e.g. the OOM killer): a platform fault, so both workers
    # start over together, once per fault, and restartCount counts the attempts.
    for retry in (1, 2):
        kubelet.finish(f"flaky-worker-{retry % 2}", exit_code=137)
        after = eventually(
            running_pods(control_plane, namespace, "flaky", 2, retry), f"2 running pods of attempt {retry}"
        )
        assert set(uids(after)) == set(uids(before))
        assert not set(uids(after).values()) & set(uids(before).values()), "some instance was not recreated"
        before = after
        status = eventually(phase_is(control_plane, namespace, "flaky", "Training"), "phase Training again")
        assert status["restartCount"] == retry
        assert [i["restarts"] for i in status["instances"]] == [retry, retry]
        restarting = condition(status, "Restarting")
        assert restarting is not None and restarting["status"] == "False"
        assert event_reasons(control_plane, namespace, "flaky").count("Restarting") == retry
    restarts = sorted(
        e["message"] for e in events(control_plane, namespace, "flaky") if e["reason"] == "Restarting"
    )
    assert "attempt 1 of runPolicy.backoffLimit 2" in restarts[0]
    assert "flaky-worker-1: the training script was killed (exit code 137" in restarts[0]
    assert "attempt 2 of runPolicy.backoffLimit 2" in restarts[1]
    assert "flaky-worker-0: the training script was killed (exit code 137" in restarts[1]
    assert event_reasons(control_plane, namespace, "flaky").count("InstanceFailed") == 2

    # The fault comes a third time: backoffLimit 2 is used up, the job fails and frees its running pod.
    kubelet.finish("flaky-worker-1", exit_code=137)
    status = eventually(phase_is(control_plane, namespace, "flaky", "Failed"), "phase Failed")
    assert status["reason"] == "BackoffLimitExceeded"
    assert status["restartCount"] == 2
    assert "retried 2 times" in status["failureReason"] and "exit code 137" in status["failureReason"]
    failed = condition(status, "Failed")
    assert failed is not None and failed["status"] == "True" and failed["reason"] == "BackoffLimitExceeded"
    eventually(
        lambda: (
            [p["metadata"]["name"] for p in pods(control_plane, namespace, "flaky")] == ["flaky-worker-1"]
        ),
        "worker 0 (still running) deleted, the failed worker 1 kept for its logs",
    )
    time.sleep(2)  # a resync or two: nothing is retried after the limit
    assert [attempt(p) for p in pods(control_plane, namespace, "flaky")] == [2]
    assert job(control_plane, namespace, "flaky")["status"]["restartCount"] == 2


@pytest.mark.parametrize("how", ["deleted", "force-deleted", "evicted"])
def test_a_pod_deleted_or_evicted_restarts_every_instance(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, how: str
) -> None:
    start_operator(**FAST)
    apply(control_plane, namespace, job_manifest("deleted", instanceCount=2))
    first = eventually(running_pods(control_plane, namespace, "deleted", 2, 0), "2 running pods")
    eventually(phase_is(control_plane, namespace, "deleted", "Training"), "phase Training")

    if how == "evicted":
        kubelet.evict("deleted-worker-1")
    else:
        force = ["--grace-period=0", "--force"] if how == "force-deleted" else []
        control_plane.kubectl("delete", "pod", "deleted-worker-1", "-n", namespace, "--wait=false", *force)
    second = eventually(
        running_pods(control_plane, namespace, "deleted", 2, 1), "both instances recreated in attempt 1"
    )
    assert not set(uids(second).values()) & set(uids(first).values())
    status = eventually(phase_is(control_plane, namespace, "deleted", "Training"), "phase Training again")
    assert status["restartCount"] == 1
    restart = next(e for e in events(control_plane, namespace, "deleted") if e["reason"] == "Restarting")
    assert "deleted-worker-1" in restart["message"]
    if how == "evicted":
        assert "low on resource" in restart["message"]
    time.sleep(2)
    assert uids(pods(control_plane, namespace, "deleted")) == uids(second), "the new attempt was not stable"


@pytest.mark.parametrize("how", ["killed", "rendered"])
def test_an_operator_that_died_before_writing_status_converges_without_duplicate_pods(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, how: str
) -> None:
    """The window between creating pods and recording them in status.

    killed: the operator is SIGKILLed as soon as the pods appear and the status it may have written is
    cleared. rendered: the pods are made by ti.operator.render for the job's uid, exactly as the operator would,
    and the operator has never run. Either way a fresh operator must adopt the pods, not add any.
    """
    from ti.api import TFTrainingJob
    from ti.catalog import load_catalog
    from ti.operator.render import render
    from ti.operator.settings import OperatorConfig

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


def test_a_job_that_cannot_be_scheduled_fails_and_frees_every_pod(
    control_plane: ControlPlane, namespace: str, start_operator, tmp_path: Path
) -> None:
    # 25 instances of 4 GPUs: 100 GPUs, where the two kwok GPU nodes have 8 each. Four pods fit and
    # run; the other 21 never will. The job must not sit on the 16 GPUs it got.
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {"instanceTypes": {"TEST.4GPU": {"description": "4 GPUs", "cpu": 1, "memory": "1Gi", "gpus": 4}}}
        )
    )
    start_operator(TI_CATALOG_FILE=str(catalog), **FAST)
    manifest = job_manifest(
        "huge",
        instanceType="TEST.4GPU",
        instanceCount=25,
        # Even with cleanPodPolicy None an Unschedulable job frees its pods: holding them is the harm.
        runPolicy={"schedulingTimeoutSeconds": 5, "cleanPodPolicy": "None"},
    )
    with StatusRecorder(control_plane, namespace, "huge") as recorder:
        apply(control_plane, namespace, manifest)
        status = eventually(phase_is(control_plane, namespace, "huge", "Failed"), "phase Failed")
    assert status["reason"] == "Unschedulable"
    # Pods past their own timeout are named; the last ones created may not have reached it yet.
    late = re.search(r"\b(\d+) of 25 instances could not be scheduled", status["failureReason"])
    assert late is not None and 1 <= int(late.group(1)) <= 21, status["failureReason"]
    assert "Insufficient nvidia.com/gpu" in status["failureReason"]
    failed = condition(status, "Failed")
    assert failed is not None and failed["reason"] == "Unschedulable"
    placed = max(sum(1 for i in s.get("instances", []) if i.get("node")) for s in recorder.statuses)
    assert placed >= 4, "the test meant to show a half-scheduled job, but no pod was ever placed"
    eventually(lambda: pods(control_plane, namespace, "huge") == [], "every pod of the job deleted")
    assert "Failed" in event_reasons(control_plane, namespace, "huge")
    time.sleep(2)
    assert pods(control_plane, namespace, "huge") == [], "the failed job created pods again"


def test_a_job_past_its_max_run_time_fails_and_frees_its_pods(
    control_plane: ControlPlane, namespace: str, start_operator
) -> None:
    start_operator(**FAST)
    apply(control_plane, namespace, job_manifest("slow", instanceCount=2, maxRunSeconds=3))
    eventually(running_pods(control_plane, namespace, "slow", 2, 0), "2 running pods")
    status = eventually(phase_is(control_plane, namespace, "slow", "Failed"), "phase Failed")
    assert status["reason"] == "MaxRunExceeded"
    assert "spec.maxRunSeconds (3s)" in status["failureReason"]
    assert status["restartCount"] == 0
    assert status["billableSeconds"] >= 3
    eventually(lambda: pods(control_plane, namespace, "slow") == [], "the running pods deleted")
    failed = next(e for e in events(control_plane, namespace, "slow") if e["reason"] == "Failed")
    assert failed["type"] == "Warning" and "MaxRunExceeded" in failed["message"]


def test_suspend_deletes_the_pods_and_keeps_the_job_resume_recreates_them(
    control_plane: ControlPlane, namespace: str, start_operator
) -> None:
    start_operator(**FAST)
    # Created suspended, as Kueue does before it admits a job: no pod at all.
    apply(control_plane, namespace, job_manifest("queued", instanceCount=2, runPolicy={"suspend": True}))
    status = eventually(phase_is(control_plane, namespace, "queued", "Suspended"), "phase Suspended")
    suspended = condition(status, "Suspended")
    assert suspended is not None and suspended["status"] == "True"
    time.sleep(2)
    assert pods(control_plane, namespace, "queued") == []

    for round_ in range(2):
        patch_job(control_plane, namespace, "queued", {"spec": {"runPolicy": {"suspend": False}}})
        eventually(running_pods(control_plane, namespace, "queued", 2, 0), f"pods recreated ({round_})")
        status = eventually(phase_is(control_plane, namespace, "queued", "Training"), "phase Training")
        suspended = condition(status, "Suspended")
        assert suspended is not None and suspended["status"] == "False" and suspended["reason"] == "Resumed"
        running = condition(status, "Running")
        assert running is not None and running["status"] == "True"

        patch_job(control_plane, namespace, "queued", {"spec": {"runPolicy": {"suspend": True}}})
        status = eventually(phase_is(control_plane, namespace, "queued", "Suspended"), "phase Suspended")
        eventually(lambda: pods(control_plane, namespace, "queued") == [], "pods deleted on suspend")
        status = job(control_plane, namespace, "queued")["status"]
        suspended = condition(status, "Suspended")
        assert suspended is not None and suspended["status"] == "True"
        running = condition(status, "Running")
        assert running is not None and running["status"] == "False"
        assert status["restartCount"] == 0, "a suspend is not a retry"
    reasons = event_reasons(control_plane, namespace, "queued")
    assert reasons.count("Resumed") == 2 and reasons.count("Suspended") >= 2


def test_stop_sends_sigterm_waits_in_stopping_and_ends_stopped(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet
) -> None:
    start_operator(**FAST)
    apply(control_plane, namespace, job_manifest("halt", instanceCount=2))
    eventually(running_pods(control_plane, namespace, "halt", 2, 0), "2 running pods")
    eventually(phase_is(control_plane, namespace, "halt", "Training"), "phase Training")
    # Worker 0 takes its grace period to upload what it has; kwok ends worker 1 at once.
    kubelet.hold("halt-worker-0")
    with StatusRecorder(control_plane, namespace, "halt") as recorder:
        patch_job(control_plane, namespace, "halt", {"spec": {"runPolicy": {"stop": True}}})
        eventually(phase_is(control_plane, namespace, "halt", "Stopping"), "phase Stopping")
        held = eventually(
            lambda: [
                p for p in pods(control_plane, namespace, "halt") if p["metadata"].get("deletionTimestamp")
            ],
            "worker 0 asked to terminate",
        )
        assert [p["metadata"]["name"] for p in held] == ["halt-worker-0"]
        assert held[0]["metadata"]["deletionGracePeriodSeconds"] == 1  # TI_STOP_GRACE_SECONDS
        eventually(
            lambda: (
                [p["metadata"]["name"] for p in pods(control_plane, namespace, "halt")] == ["halt-worker-0"]
            ),
            "worker 1 gone",
        )
        time.sleep(2)
        assert job(control_plane, namespace, "halt")["status"]["phase"] == "Stopping", "stopped too early"

        kubelet.finish("halt-worker-0", exit_code=143, reason="Error", upload_exit_code=0)
        status = eventually(phase_is(control_plane, namespace, "halt", "Stopped"), "phase Stopped")
        kubelet.remove("halt-worker-0")
    assert recorder.phases[-3:] == ["Training", "Stopping", "Stopped"]
    assert status["reason"] == "Stopped"
    assert status["restartCount"] == 0, "a stopped job's exit code 143 is not a platform fault"
    running = condition(status, "Running")
    assert running is not None and running["status"] == "False"
    assert condition(status, "Failed") is None
    eventually(lambda: pods(control_plane, namespace, "halt") == [], "no pod left")
    time.sleep(2)
    assert pods(control_plane, namespace, "halt") == [], "a stopped job came back"
    reasons = event_reasons(control_plane, namespace, "halt")
    assert reasons.count("Stopping") == 1 and reasons.count("Stopped") == 1


def test_ttl_after_finished_deletes_the_job_and_the_garbage_collector_its_children(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet
) -> None:
    start_operator(**FAST)
    # cleanPodPolicy None keeps the finished pods: only their ownerReferences can remove them.
    manifest = job_manifest(
        "shortlived", instanceCount=2, runPolicy={"ttlSecondsAfterFinished": 1, "cleanPodPolicy": "None"}
    )
    with StatusRecorder(control_plane, namespace, "shortlived") as recorder:
        apply(control_plane, namespace, manifest)
        found = eventually(running_pods(control_plane, namespace, "shortlived", 2, 0), "2 running pods")
        control_plane.kubectl("get", "service", "shortlived", "-n", namespace)
        for p in found:
            kubelet.finish(p["metadata"]["name"], exit_code=0)
        eventually(lambda: not job_exists(control_plane, namespace, "shortlived"), "the job deleted")
    assert recorder.phases[-1] == "Completed" and recorder.deleted
    eventually(lambda: pods(control_plane, namespace, "shortlived") == [], "its pods collected")
    eventually(
        lambda: (
            control_plane.kubectl("get", "service", "shortlived", "-n", namespace, check=False).returncode
        ),
        "its Service collected",
    )


def test_concurrent_edits_of_the_job_lose_nothing_and_cause_no_error_loop(
    control_plane: ControlPlane, namespace: str, start_operator, kubelet: Kubelet, tmp_path: Path
) -> None:
    start_operator(**FAST)
    name = "busy"
    errors: list[str] = []

    def edit(kind: str) -> None:
        try:
            for i in range(8):
                if kind == "labels":
                    patch_job(
                        control_plane, namespace, name, {"metadata": {"labels": {f"team-{i}": "vision"}}}
                    )
                elif kind == "annotations":
                    control_plane.kubectl(
                        "annotate", "tftj", name, "-n", namespace, f"example.com/note-{i}=n{i}"
                    )
                else:
                    ttl = 3600 + i
                    patch_job(
                        control_plane,
                        namespace,
                        name,
                        {"spec": {"runPolicy": {"ttlSecondsAfterFinished": ttl}}},
                    )
        except AssertionError as err:
            errors.append(str(err))

    apply(control_plane, namespace, job_manifest(name, instanceCount=2))
    # Edits race the operator's first reconciles (pod creation, status writes) and the later ones.
    editors = [threading.Thread(target=edit, args=(k,)) for k in ("labels", "annotations", "ttl")]
    for t in editors:
        t.start()
    found = eventually(running_pods(control_plane, namespace, name, 2, 0), "2 running pods")
    for p in found:
        kubelet.finish(p["metadata"]["name"], exit_code=0)
    for t in editors:
        t.join(120)
    assert errors == []
    status = eventually(phase_is(control_plane, namespace, name, "Completed"), "phase Completed")

    body = job(control_plane, namespace, name)
    meta = body["metadata"]
    assert {f"team-{i}" for i in range(8)} <= set(meta["labels"])
    assert {f"example.com/note-{i}" for i in range(8)} <= set(meta.get("annotations", {}))
    assert body["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 3607
    assert status["modelArtifacts"].endswith(f"/{name}/output/model.tar.gz")
    assert [c["type"] for c in status["conditions"] if c["status"] == "True"] == ["Created", "Succeeded"]
    assert status["restartCount"] == 0
    assert status["observedGeneration"] == meta["generation"]
    assert uids(pods(control_plane, namespace, name)) == uids(found), (
        "an edit made the operator recreate pods"
    )

    # Settled: resyncs (every 2 s) find nothing to write, so the object stops changing.
    version = meta["resourceVersion"]
    time.sleep(5)
    assert job(control_plane, namespace, name)["metadata"]["resourceVersion"] == version, (
        "status keeps moving"
    )
    for log in tmp_path.glob("operator-*.log"):
        text = log.read_text(errors="replace")
        assert " failed" not in text and "ERROR" not in text, text[-3000:]


def test_pods_the_api_server_refuses_are_reported_and_created_once_possible(
    control_plane: ControlPlane, namespace: str, start_operator
) -> None:
    # The role names a ServiceAccount that does not exist yet (a GitOps repo applied the job first):
    # the ServiceAccount admission plugin refuses every pod. The user must read why on the job.
    start_operator(**FAST)
    manifest = job_manifest("early", instanceCount=2, role="late-sa")
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    status = eventually(
        lambda: (
            s if (s := job(control_plane, namespace, "early").get("status") or {}).get("reason") else None
        ),
        "a reason on the job",
    )
    assert status["phase"] == "Pending"
    assert status["reason"] == "FailedCreate"
    created = condition(status, "Created")
    assert created is not None and created["status"] == "False" and created["reason"] == "FailedCreate"
    assert 'serviceaccount "late-sa" not found' in created["message"]
    warning = eventually(
        lambda: [e for e in events(control_plane, namespace, "early") if e["reason"] == "FailedCreate"],
        "a FailedCreate event",
    )
    assert warning[0]["type"] == "Warning" and "late-sa" in warning[0]["message"]
    assert pods(control_plane, namespace, "early") == []
    time.sleep(3)  # retried without an Event or a status write each time
    assert event_reasons(control_plane, namespace, "early").count("FailedCreate") == 1

    control_plane.kubectl("create", "serviceaccount", "late-sa", "-n", namespace)
    eventually(running_pods(control_plane, namespace, "early", 2, 0), "the pods, once the account exists")
    status = eventually(phase_is(control_plane, namespace, "early", "Training"), "phase Training")
    assert status["restartCount"] == 0
    created = condition(status, "Created")
    assert created is not None and created["status"] == "True"


def test_pods_refused_past_the_scheduling_timeout_fail_the_job(
    control_plane: ControlPlane, namespace: str, start_operator
) -> None:
    # Every wait on a job must end: a ServiceAccount that never comes fails it after the timeout.
    start_operator(**FAST)
    manifest = job_manifest("never", role="missing-sa", runPolicy={"schedulingTimeoutSeconds": 3})
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    status = eventually(phase_is(control_plane, namespace, "never", "Failed"), "phase Failed", timeout=60)
    assert status["reason"] == "FailedCreate"
    assert "schedulingTimeoutSeconds (3s)" in status["failureReason"]
    assert 'serviceaccount "missing-sa" not found' in status["failureReason"]
    assert pods(control_plane, namespace, "never") == []
    assert "Failed" in event_reasons(control_plane, namespace, "never")
