"""Local mode judges its pods with the operator's status code: every local ending, written as the pod
record local mode makes, gets the phase, reason and retry decision that `derive_status` gives the
same ending written by a kubelet."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.jobs import RUNNING, at, done, job, pod
from ti import contract
from ti.api import Phase, TFTrainingJob
from ti.catalog import load_catalog
from ti.local.podstatus import (
    START_ERROR,
    START_ERROR_EXIT_CODE,
    ContainerRun,
    container_status,
    pod_phase,
    pod_record,
    termination_message,
)
from ti.local.process import exit_code
from ti.operator.pods import read_pod
from ti.operator.render import render
from ti.operator.settings import OperatorConfig
from ti.operator.status import derive_status

pytestmark = pytest.mark.unit

FETCH, MAIN, UPLOAD = contract.FETCH_CONTAINER, contract.MAIN_CONTAINER, contract.UPLOAD_CONTAINER
TRACEBACK = 'Traceback (most recent call last):\n  File "train.py", line 1\nValueError: no labels'
METRICS = '{"metrics": {"loss": 0.5}}'


def ran(code: int | None = 0, message: str | None = None, reason: str | None = None) -> ContainerRun:
    """A container that started at 10 s and, with a code, ended at 100 s."""
    return ContainerRun(
        started=at(10),
        finished=None if code is None else at(100),
        exit_code=code,
        message=message,
        reason=reason,
    )


def running() -> ContainerRun:
    return ran(None)


# (case, local containers, local pod marks, kubelet-written pod, attempt, phase, reason, retry)
TABLE: list[
    tuple[str, dict[str, ContainerRun], dict[str, Any], dict[str, Any], int, Phase, str | None, bool]
] = [
    (
        "completed",
        {FETCH: ran(0), MAIN: ran(0), UPLOAD: ran(0, METRICS)},
        {},
        {"phase": "Succeeded", "fetch": done(0), "main": done(0), "upload": done(0, METRICS)},
        0,
        Phase.COMPLETED,
        "Completed",
        False,
    ),
    (
        "script exit 3, failure file",
        {FETCH: ran(0), MAIN: ran(3, "loss is NaN"), UPLOAD: ran(3, "loss is NaN")},
        {},
        {
            "phase": "Failed",
            "fetch": done(0),
            "main": done(3, "loss is NaN"),
            "upload": done(3, "loss is NaN"),
        },
        0,
        Phase.FAILED,
        "TrainingFailed",
        False,
    ),
    (
        "script exit 1, no failure file: the log's end",
        {FETCH: ran(0), MAIN: ran(1, termination_message(None, TRACEBACK, 1)), UPLOAD: ran(1)},
        {},
        {"phase": "Failed", "fetch": done(0), "main": done(1, TRACEBACK), "upload": done(1)},
        0,
        Phase.FAILED,
        "TrainingFailed",
        False,
    ),
    (
        "download failed",
        {FETCH: ran(1, "channel 'train': cos://data-1250000000/x not found")},
        {},
        {"phase": "Failed", "fetch": done(1, "channel 'train': cos://data-1250000000/x not found")},
        0,
        Phase.FAILED,
        "DownloadFailed",
        False,
    ),
    (
        "upload failed",
        {FETCH: ran(0), MAIN: ran(0), UPLOAD: ran(70, "UploadFailed: model: access denied")},
        {},
        {
            "phase": "Failed",
            "fetch": done(0),
            "main": done(0),
            "upload": done(70, "UploadFailed: model: access denied"),
        },
        0,
        Phase.FAILED,
        "UploadFailed",
        False,
    ),
    (
        "upload exit 127 (command not found)",
        {FETCH: ran(0), MAIN: ran(0), UPLOAD: ran(127)},
        {},
        {"phase": "Failed", "fetch": done(0), "main": done(0), "upload": done(127)},
        0,
        Phase.FAILED,
        "UploadFailed",
        False,
    ),
    (
        "script killed (SIGKILL): retried",
        {FETCH: ran(0), MAIN: ran(exit_code(-9), "train.py exited with code 137"), UPLOAD: ran(137)},
        {},
        {
            "phase": "Failed",
            "fetch": done(0),
            "main": done(137, "train.py exited with code 137"),
            "upload": done(137),
        },
        0,
        Phase.PENDING,
        "ExitCode137",
        True,
    ),
    (
        "script killed at the backoff limit",
        {FETCH: ran(0), MAIN: ran(137), UPLOAD: ran(137)},
        {},
        {"phase": "Failed", "fetch": done(0), "main": done(137), "upload": done(137)},
        3,
        Phase.FAILED,
        "BackoffLimitExceeded",
        False,
    ),
    (
        "past activeDeadlineSeconds",
        {FETCH: ran(0), MAIN: ran(143), UPLOAD: ran(143)},
        {"deadline_exceeded": True},
        {
            "phase": "Failed",
            "reason": "DeadlineExceeded",
            "fetch": done(0),
            "main": done(143),
            "upload": done(143),
        },
        0,
        Phase.FAILED,
        "MaxRunExceeded",
        False,
    ),
    (
        "deleted while training: retried",
        {FETCH: ran(0), MAIN: running(), UPLOAD: running()},
        {"deleted": at(150)},
        {"phase": "Running", "deleting": True, "fetch": done(0), "main": RUNNING, "upload": RUNNING},
        0,
        Phase.PENDING,
        "PodDeleted",
        True,
    ),
    (
        "the script's process could not start",
        {FETCH: ran(0), MAIN: ran(START_ERROR_EXIT_CODE, "no such file", START_ERROR), UPLOAD: ran(128)},
        {},
        {
            "phase": "Failed",
            "fetch": done(0),
            "main": done(128, "no such file", reason=START_ERROR),
            "upload": done(128),
        },
        0,
        # The image's fault, not the platform's: a retry would fail the same way (issue 13).
        Phase.FAILED,
        "ContainerConfigError",
        False,
    ),
    ("nothing started yet", {}, {}, {"phase": "Pending"}, 0, Phase.STARTING, None, False),
    (
        "downloading",
        {FETCH: running()},
        {},
        {"phase": "Pending", "fetch": RUNNING},
        0,
        Phase.DOWNLOADING,
        None,
        False,
    ),
    (
        "training",
        {FETCH: ran(0), MAIN: running(), UPLOAD: running()},
        {},
        {"phase": "Running", "fetch": done(0), "main": RUNNING, "upload": RUNNING},
        0,
        Phase.TRAINING,
        None,
        False,
    ),
    (
        "uploading",
        {FETCH: ran(0), MAIN: ran(0), UPLOAD: running()},
        {},
        {"phase": "Running", "fetch": done(0), "main": done(0), "upload": RUNNING},
        0,
        Phase.UPLOADING,
        None,
        False,
    ),
]


def local_job(attempt: int) -> TFTrainingJob:
    status = {"phase": "Training", "restartCount": attempt} if attempt else None
    return job(status=status, instanceType="local")


def judged(j: TFTrainingJob, record: dict[str, Any]) -> tuple[Any, ...]:
    status, verdict = derive_status(j, [record], at(200))
    return (
        status.phase,
        status.reason,
        verdict.retry,
        status.failure_reason,
        status.restart_count,
        status.metrics,
    )


@pytest.mark.parametrize(
    ("case", "runs", "marks", "kubelet", "attempt", "phase", "reason", "retry"),
    TABLE,
    ids=[row[0] for row in TABLE],
)
def test_local_endings_are_judged_as_in_a_cluster(
    case: str,
    runs: dict[str, ContainerRun],
    marks: dict[str, Any],
    kubelet: dict[str, Any],
    attempt: int,
    phase: Phase,
    reason: str | None,
    retry: bool,
) -> None:
    j = local_job(attempt)
    [manifest] = render(j, load_catalog(), OperatorConfig(), attempt, cluster=False).pods
    local = pod_record(manifest, runs, created=at(0), started=at(5), **marks)
    cluster = pod(attempt=attempt, node="node-1", started=5, **kubelet)

    ours, theirs = judged(j, local), judged(j, cluster)
    assert ours[:3] == (phase, reason, retry), case
    assert ours == theirs, case
    assert read_pod(local).outcome == read_pod(cluster).outcome, case


def test_a_retry_counts_the_attempt() -> None:
    j = local_job(0)
    [manifest] = render(j, load_catalog(), OperatorConfig(), cluster=False).pods
    record = pod_record(
        manifest, {FETCH: ran(0), MAIN: ran(137), UPLOAD: ran(137)}, created=at(0), started=at(5)
    )
    status, _ = derive_status(j, [record], at(200))
    assert status.restart_count == 1
    assert "was killed (exit code 137" in (status.conditions[-1].message or "")


def test_completed_metrics_come_from_the_upload_steps_message() -> None:
    j = local_job(0)
    [manifest] = render(j, load_catalog(), OperatorConfig(), cluster=False).pods
    runs = {FETCH: ran(0), MAIN: ran(0), UPLOAD: ran(0, METRICS)}
    status, _ = derive_status(j, [pod_record(manifest, runs, created=at(0), started=at(5))], at(200))
    assert status.metrics == {"loss": 0.5}
    assert status.model_artifacts == contract.model_uri(j.spec.output_path, j.name)


def test_the_kubelets_rules() -> None:
    assert exit_code(-9) == 137 and exit_code(-15) == 143 and exit_code(3) == 3
    assert termination_message("  my reason \n", "log", 1) == "my reason"
    assert termination_message(None, "the log's end", 1) == "the log's end"
    assert termination_message("", "the log's end", 0) is None
    assert pod_phase({}) == "Pending"
    assert pod_phase({FETCH: ran(2)}) == "Failed"
    assert pod_phase({FETCH: ran(0), MAIN: ran(0), UPLOAD: running()}) == "Running"
    assert pod_phase({FETCH: ran(0), MAIN: ran(0), UPLOAD: ran(0)}) == "Succeeded"
    assert container_status(MAIN, None)["state"] == {"waiting": {"reason": "PodInitializing"}}
    term = container_status(MAIN, ran(1, "why"))["state"]["terminated"]
    assert (term["exitCode"], term["reason"], term["message"]) == (1, "Error", "why")


def test_a_record_keeps_the_manifests_labels_and_marks_deletion() -> None:
    j = local_job(2)
    [manifest] = render(j, load_catalog(), OperatorConfig(), 2, cluster=False).pods
    record = pod_record(manifest, {}, created=at(0), deleted=at(9))
    assert record["metadata"]["labels"][contract.LABEL_ATTEMPT] == "2"
    assert record["metadata"]["deletionTimestamp"] == at(9).isoformat()
    assert record["spec"]["nodeName"] and record["status"]["phase"] == "Pending"
