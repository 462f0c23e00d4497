from __future__ import annotations

import json
from typing import Any

import pytest

from ti import contract
from ti.api import ConditionStatus, ConditionType, InstancePhase, Phase, TFTrainingJobStatus
from ti.operator.pods import Outcome, parse_time, read_pod
from ti.operator.status import derive_status, judge, set_condition, transition
from ti.reasons import Reason

from .jobs import RUNNING, WAITING, at, done, job, pod

pytestmark = pytest.mark.unit

STARTED = {"phase": "Starting", "restartCount": 0}
SCHEDULED = {"node": "gpu-1", "started": 5}


# ---- one pod, every class of ending -------------------------------------------------------------

POD_TABLE: list[tuple[str, dict[str, Any], InstancePhase, Outcome, str | None]] = [
    ("created, not scheduled", {}, InstancePhase.STARTING, Outcome.RUNNING, None),
    (
        "scheduled, init waiting",
        {**SCHEDULED, "fetch": WAITING},
        InstancePhase.STARTING,
        Outcome.RUNNING,
        None,
    ),
    ("fetch running", {**SCHEDULED, "fetch": RUNNING}, InstancePhase.DOWNLOADING, Outcome.RUNNING, None),
    (
        "fetch done, main not started",
        {**SCHEDULED, "fetch": done(0), "main": WAITING},
        InstancePhase.DOWNLOADING,
        Outcome.RUNNING,
        None,
    ),
    (
        "main running",
        {**SCHEDULED, "phase": "Running", "fetch": done(0), "main": RUNNING, "upload": RUNNING},
        InstancePhase.TRAINING,
        Outcome.RUNNING,
        None,
    ),
    (
        "main done, upload running",
        {**SCHEDULED, "phase": "Running", "fetch": done(0), "main": done(0), "upload": RUNNING},
        InstancePhase.UPLOADING,
        Outcome.RUNNING,
        None,
    ),
    (
        "main exit 1, upload still storing logs",
        {**SCHEDULED, "phase": "Running", "fetch": done(0), "main": done(1, "bad"), "upload": RUNNING},
        InstancePhase.UPLOADING,
        Outcome.RUNNING,
        None,
    ),
    (
        "succeeded",
        {**SCHEDULED, "phase": "Succeeded", "fetch": done(0), "main": done(0), "upload": done(0)},
        InstancePhase.SUCCEEDED,
        Outcome.SUCCEEDED,
        None,
    ),
    (
        "exit 1 with message",
        {
            **SCHEDULED,
            "phase": "Failed",
            "fetch": done(0),
            "main": done(1, "ValueError: bad lr"),
            "upload": done(0),
        },
        InstancePhase.FAILED,
        Outcome.USER_ERROR,
        "TrainingFailed",
    ),
    (
        "exit 127",
        {**SCHEDULED, "phase": "Failed", "fetch": done(0), "main": done(127), "upload": done(0)},
        InstancePhase.FAILED,
        Outcome.USER_ERROR,
        "TrainingFailed",
    ),
    (
        "exit 128",
        {**SCHEDULED, "phase": "Failed", "fetch": done(0), "main": done(128), "upload": done(0)},
        InstancePhase.FAILED,
        Outcome.PLATFORM_FAULT,
        "ExitCode128",
    ),
    (
        "exit 137 OOMKilled",
        {
            **SCHEDULED,
            "phase": "Failed",
            "fetch": done(0),
            "main": done(137, reason="OOMKilled"),
            "upload": done(0),
        },
        InstancePhase.FAILED,
        Outcome.PLATFORM_FAULT,
        "OOMKilled",
    ),
    (
        "exit 143 SIGTERM",
        {**SCHEDULED, "phase": "Failed", "fetch": done(0), "main": done(143), "upload": done(0)},
        InstancePhase.FAILED,
        Outcome.PLATFORM_FAULT,
        "ExitCode143",
    ),
    (
        "download failed",
        {**SCHEDULED, "phase": "Failed", "fetch": done(2, "NoSuchKey: cos://data/x")},
        InstancePhase.FAILED,
        Outcome.USER_ERROR,
        "DownloadFailed",
    ),
    (
        "download killed",
        {**SCHEDULED, "phase": "Failed", "fetch": done(137)},
        InstancePhase.FAILED,
        Outcome.PLATFORM_FAULT,
        "ExitCode137",
    ),
    (
        "upload failed code 70",
        {
            **SCHEDULED,
            "phase": "Failed",
            "fetch": done(0),
            "main": done(0),
            "upload": done(contract.UPLOAD_FAILED_EXIT_CODE, "UploadFailed: AccessDenied"),
        },
        InstancePhase.FAILED,
        Outcome.UPLOAD_FAILED,
        "UploadFailed",
    ),
    (
        "upload failed by message",
        {
            **SCHEDULED,
            "phase": "Failed",
            "fetch": done(0),
            "main": done(0),
            "upload": done(1, "UploadFailed: x"),
        },
        InstancePhase.FAILED,
        Outcome.UPLOAD_FAILED,
        "UploadFailed",
    ),
    (
        # Once a crash: the message was read from a name this path never set (issue 10).
        "upload exit 127, command not found",
        {**SCHEDULED, "phase": "Failed", "fetch": done(0), "main": done(0), "upload": done(127)},
        InstancePhase.FAILED,
        Outcome.UPLOAD_FAILED,
        "UploadFailed",
    ),
    (
        "upload killed",
        {**SCHEDULED, "phase": "Failed", "fetch": done(0), "main": done(0), "upload": done(137)},
        InstancePhase.FAILED,
        Outcome.PLATFORM_FAULT,
        "ExitCode137",
    ),
    (
        "evicted",
        {
            **SCHEDULED,
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on resource: memory.",
        },
        InstancePhase.FAILED,
        Outcome.PLATFORM_FAULT,
        "Evicted",
    ),
    (
        "preempted, script exited 1 on SIGTERM",
        {
            **SCHEDULED,
            "phase": "Failed",
            "main": done(1),
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}],
        },
        InstancePhase.FAILED,
        Outcome.PLATFORM_FAULT,
        "Preempted",
    ),
    (
        "node lost (taint manager)",
        {
            **SCHEDULED,
            "phase": "Running",
            "main": RUNNING,
            "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
            ],
        },
        InstancePhase.FAILED,
        Outcome.PLATFORM_FAULT,
        "NodeLost",
    ),
    (
        "node unreachable",
        {**SCHEDULED, "phase": "Unknown"},
        InstancePhase.FAILED,
        Outcome.PLATFORM_FAULT,
        "NodeLost",
    ),
    (
        "deleted while running",
        {**SCHEDULED, "phase": "Running", "main": RUNNING, "deleting": True},
        InstancePhase.DELETED,
        Outcome.PLATFORM_FAULT,
        "PodDeleted",
    ),
    (
        "deadline exceeded",
        {**SCHEDULED, "phase": "Failed", "reason": "DeadlineExceeded"},
        InstancePhase.FAILED,
        Outcome.DEADLINE,
        "MaxRunExceeded",
    ),
    (
        "invalid image name",
        {**SCHEDULED, "fetch": done(0), "main": {"waiting": {"reason": "InvalidImageName"}}},
        InstancePhase.FAILED,
        Outcome.USER_ERROR,
        "InvalidImage",
    ),
]


@pytest.mark.parametrize(
    ("case", "kw", "phase", "outcome", "reason"), POD_TABLE, ids=[row[0] for row in POD_TABLE]
)
def test_pod_table(
    case: str, kw: dict[str, Any], phase: InstancePhase, outcome: Outcome, reason: str | None
) -> None:
    r = read_pod(pod(**kw))
    assert (r.phase, r.outcome, r.reason) == (phase, outcome, reason), case


def test_termination_message_and_exit_code() -> None:
    r = read_pod(
        pod(**SCHEDULED, phase="Failed", fetch=done(0), main=done(3, "  loss is NaN\n"), upload=done(0))
    )
    assert r.message == "loss is NaN"
    assert r.exit_code == 3
    r = read_pod(pod(**SCHEDULED, phase="Failed", fetch=done(0), main=done(3), upload=done(0)))
    assert r.message == "the training script exited with code 3"


def test_long_messages_keep_their_tail() -> None:
    text = "x" * 10000 + "THE END"
    r = read_pod(pod(**SCHEDULED, phase="Failed", fetch=done(0), main=done(1, text), upload=done(0)))
    assert r.message is not None and r.message.endswith("THE END")
    assert len(r.message) == contract.FAILURE_MESSAGE_LIMIT


def test_stuck_containers() -> None:
    r = read_pod(pod(**SCHEDULED, fetch={"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}))
    assert (r.outcome, r.stuck) == (Outcome.RUNNING, "ImagePullFailed")
    r = read_pod(
        pod(
            **SCHEDULED,
            fetch={"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "cos" not found'}},
        )
    )
    assert r.stuck == "ContainerConfigError" and 'secret "cos"' in (r.message or "")


def test_parse_time() -> None:
    assert parse_time("2024-05-01T12:00:00Z") == at(0)
    assert parse_time("2024-05-01T12:00:00+00:00") == at(0)
    assert parse_time(at(3)) == at(3)
    assert parse_time(None) is None


# ---- the job's verdict --------------------------------------------------------------------------


def running_pod(i: int, **kw: Any) -> dict[str, Any]:
    return pod(
        index=i, node="n", started=5, phase="Running", fetch=done(0), main=RUNNING, upload=RUNNING, **kw
    )


def ok_pod(i: int, role: str = "worker") -> dict[str, Any]:
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


def failed_pod(i: int, code: int, message: str | None = None) -> dict[str, Any]:
    return pod(
        index=i, node="n", started=5, phase="Failed", fetch=done(0), main=done(code, message), upload=done(0)
    )


def test_completed_sets_artifacts_and_times() -> None:
    j = job(status={**STARTED, "startTime": "2024-05-01T12:00:05Z"}, instanceCount=2)
    new, verdict = derive_status(j, [ok_pod(0), ok_pod(1)], at(300))
    assert verdict.phase is Phase.COMPLETED
    assert new.phase is Phase.COMPLETED and new.reason == "Completed"
    assert new.model_artifacts == "cos://out-1250000000/models/mnist/output/model.tar.gz"
    assert new.output_data == "cos://out-1250000000/models/mnist/output/output.tar.gz"
    assert new.completion_time == at(300)
    assert new.billable_seconds == 295
    succeeded = new.condition(ConditionType.SUCCEEDED)
    assert succeeded is not None and succeeded.status is ConditionStatus.TRUE
    assert [i.phase for i in new.instances] == [InstancePhase.SUCCEEDED] * 2
    assert new.failure_reason is None


def test_completed_ignores_parameter_servers() -> None:
    j = job(status=STARTED, instanceCount=2, distribution={"type": "parameterServer"})
    ps = pod(
        role="ps", index=0, node="n", started=5, phase="Running", fetch=done(0), main=RUNNING, upload=RUNNING
    )
    new, _ = derive_status(j, [ok_pod(0), ok_pod(1), ps], at(300))
    assert new.phase is Phase.COMPLETED


def test_metrics_from_the_chiefs_upload_step() -> None:
    chief = ok_pod(0)
    chief["status"]["containerStatuses"][1]["state"]["terminated"]["message"] = json.dumps(
        {"metrics": {"accuracy": 0.97, "loss": 0.1, "note": "x"}}
    )
    new, _ = derive_status(job(status=STARTED), [chief], at(300))
    assert new.metrics == {"accuracy": 0.97, "loss": 0.1}


def test_user_error_fails_at_once_with_the_message() -> None:
    j = job(status=STARTED, instanceCount=2)
    new, verdict = derive_status(
        j, [failed_pod(0, 1, "ValueError: learning rate must be > 0"), running_pod(1)], at(60)
    )
    assert (verdict.phase, verdict.retry) == (Phase.FAILED, False)
    assert new.phase is Phase.FAILED and new.reason == "TrainingFailed"
    assert new.failure_reason == "ValueError: learning rate must be > 0"
    failed = new.condition(ConditionType.FAILED)
    assert failed is not None and failed.reason == "TrainingFailed" and failed.message == new.failure_reason
    assert new.restart_count == 0
    assert new.instances[0].exit_code == 1


def test_platform_fault_retries_all_and_counts() -> None:
    j = job(status={**STARTED, "restartCount": 1}, instanceCount=2, runPolicy={"backoffLimit": 3})
    pods = [failed_pod(0, 137), running_pod(1)]
    for p in pods:
        p["metadata"]["labels"][contract.LABEL_ATTEMPT] = "1"
    new, verdict = derive_status(j, pods, at(60))
    assert verdict.retry and verdict.reason == "ExitCode137"
    assert new.phase is Phase.PENDING and new.restart_count == 2
    restarting = new.condition(ConditionType.RESTARTING)
    assert (
        restarting is not None
        and restarting.status is ConditionStatus.TRUE
        and restarting.reason == "ExitCode137"
    )
    assert [(i.phase, i.restarts, i.pod) for i in new.instances] == [(InstancePhase.PENDING, 2, None)] * 2


def test_backoff_limit_exceeded() -> None:
    j = job(status={**STARTED, "restartCount": 2}, runPolicy={"backoffLimit": 2})
    p = failed_pod(0, 137)
    p["metadata"]["labels"][contract.LABEL_ATTEMPT] = "2"
    new, verdict = derive_status(j, [p], at(60))
    assert not verdict.retry
    assert new.phase is Phase.FAILED and new.reason == "BackoffLimitExceeded"
    assert "retried 2 times" in (new.failure_reason or "")
    assert "exit code 137" in (new.failure_reason or "")


def test_backoff_limit_zero_never_retries() -> None:
    new, _ = derive_status(job(status=STARTED, runPolicy={"backoffLimit": 0}), [failed_pod(0, 143)], at(60))
    assert new.reason == "BackoffLimitExceeded"


def test_fault_wins_over_the_user_error_it_caused() -> None:
    evicted = pod(index=1, node="n", started=5, phase="Failed", reason="Evicted", message="low memory")
    _, verdict = derive_status(
        job(status=STARTED, instanceCount=2), [failed_pod(0, 1, "peer gone"), evicted], at(60)
    )
    assert verdict.retry and verdict.reason == "Evicted"


def test_missing_pod_is_a_deleted_pod() -> None:
    new, verdict = derive_status(job(status=STARTED, instanceCount=2), [running_pod(0)], at(60))
    assert verdict.retry and verdict.reason == "PodDeleted"
    assert new.restart_count == 1


def test_missing_pod_that_had_succeeded_is_fine() -> None:
    st = {
        **STARTED,
        "instances": [
            {"name": "mnist-worker-0", "role": "worker", "index": 0, "phase": "Training"},
            {"name": "mnist-worker-1", "role": "worker", "index": 1, "phase": "Succeeded"},
        ],
    }
    new, verdict = derive_status(job(status=st, instanceCount=2), [running_pod(0)], at(60))
    assert not verdict.retry and new.phase is Phase.TRAINING


def test_upload_failure_fails_the_job() -> None:
    p = pod(
        node="n",
        started=5,
        phase="Failed",
        fetch=done(0),
        main=done(0),
        upload=done(70, "UploadFailed: AccessDenied"),
    )
    new, _ = derive_status(job(status=STARTED), [p], at(60))
    assert new.phase is Phase.FAILED and new.reason == "UploadFailed"
    assert new.failure_reason == "UploadFailed: AccessDenied"


def test_unschedulable_after_the_timeout() -> None:
    cond = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        }
    ]
    j = job(status=STARTED, instanceCount=2, runPolicy={"schedulingTimeoutSeconds": 60})
    pods = [running_pod(0), pod(index=1, created=0, conditions=cond)]
    early, verdict = derive_status(j, pods, at(30))
    assert early.phase is Phase.STARTING
    assert verdict.recheck_at == at(60)
    late, verdict = derive_status(j, pods, at(61))
    assert late.phase is Phase.FAILED and late.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in (late.failure_reason or "")
    assert "1 of 2 instances" in (late.failure_reason or "")


def test_stuck_image_pull_fails_after_the_timeout() -> None:
    p = pod(node="n", created=0, fetch={"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}})
    j = job(status=STARTED, runPolicy={"schedulingTimeoutSeconds": 100})
    assert derive_status(j, [p], at(50))[0].phase is Phase.STARTING
    new, _ = derive_status(j, [p], at(100))
    assert new.reason == "ImagePullFailed" and "manifest unknown" in (new.failure_reason or "")


def test_max_run_exceeded_by_the_clock_and_by_the_kubelet() -> None:
    j = job(status={**STARTED, "startTime": "2024-05-01T12:00:00Z"}, maxRunSeconds=100)
    assert derive_status(j, [running_pod(0)], at(50))[1].recheck_at == at(100)
    new, _ = derive_status(j, [running_pod(0)], at(100))
    assert new.reason == "MaxRunExceeded"
    p = pod(node="n", started=5, phase="Failed", reason="DeadlineExceeded")
    assert derive_status(job(status=STARTED), [p], at(50))[0].reason == "MaxRunExceeded"


@pytest.mark.parametrize(
    ("states", "phase"),
    [
        ([{}, {}], Phase.STARTING),
        ([{"fetch": RUNNING}, {}], Phase.STARTING),
        ([{"fetch": RUNNING}, {"fetch": RUNNING}], Phase.DOWNLOADING),
        ([{"fetch": done(0), "main": RUNNING}, {"fetch": RUNNING}], Phase.DOWNLOADING),
        ([{"fetch": done(0), "main": RUNNING}, {"fetch": done(0), "main": RUNNING}], Phase.TRAINING),
        (
            [{"fetch": done(0), "main": done(0), "upload": RUNNING}, {"fetch": done(0), "main": RUNNING}],
            Phase.TRAINING,
        ),
        (
            [
                {"fetch": done(0), "main": done(0), "upload": RUNNING},
                {"fetch": done(0), "main": done(0), "upload": RUNNING},
            ],
            Phase.UPLOADING,
        ),
    ],
)
def test_phase_follows_the_slowest_worker(states: list[dict[str, Any]], phase: Phase) -> None:
    pods = [pod(index=i, node="n", started=5, phase="Running", **s) for i, s in enumerate(states)]
    new, _ = derive_status(job(status=STARTED, instanceCount=2), pods, at(30))
    assert new.phase is phase


def test_a_starting_parameter_server_holds_the_job_back() -> None:
    j = job(status=STARTED, distribution={"type": "parameterServer"})
    ps = pod(role="ps", index=0, node="n", started=5)
    w = running_pod(0)
    assert derive_status(j, [w, ps], at(30))[0].phase is Phase.STARTING
    ps_running = pod(role="ps", index=0, node="n", started=5, phase="Running", fetch=done(0), main=RUNNING)
    assert derive_status(j, [w, ps_running], at(30))[0].phase is Phase.TRAINING


def test_old_attempt_pods_are_ignored() -> None:
    old = failed_pod(0, 137)  # attempt 0
    new_pod = running_pod(0)
    new_pod["metadata"]["labels"][contract.LABEL_ATTEMPT] = "1"
    new, verdict = derive_status(job(status={**STARTED, "restartCount": 1}), [old, new_pod], at(30))
    assert new.phase is Phase.TRAINING and not verdict.retry


def test_start_time_is_the_earliest_pod_start_and_sticks() -> None:
    pods = [running_pod(0), pod(index=1, node="n", started=2, phase="Running", fetch=done(0), main=RUNNING)]
    new, _ = derive_status(job(status=STARTED, instanceCount=2), pods, at(30))
    assert new.start_time == at(2)
    j = job(status={**STARTED, "startTime": "2024-05-01T11:00:00Z"})
    assert derive_status(j, [running_pod(0)], at(30))[0].start_time == parse_time("2024-05-01T11:00:00Z")


# ---- conditions --------------------------------------------------------------------------------


def test_conditions_do_not_flap() -> None:
    j = job(status=STARTED)
    first, _ = derive_status(j, [running_pod(0)], at(30))
    running = first.condition(ConditionType.RUNNING)
    assert running is not None and running.last_transition_time == at(30)
    j2 = job(status=first.model_dump(by_alias=True, mode="json"))
    again, _ = derive_status(j2, [running_pod(0)], at(90))
    assert again == first  # nothing changed, nothing to patch
    uploading = pod(node="n", started=5, phase="Running", fetch=done(0), main=done(0), upload=RUNNING)
    later, _ = derive_status(j2, [uploading], at(120))
    running = later.condition(ConditionType.RUNNING)
    assert running is not None and running.reason == "Uploading" and running.last_transition_time == at(30)


def test_transition_table() -> None:
    kw: dict[str, Any] = {"now": at(0), "generation": 1}
    s = transition(None, Phase.STARTING, **kw)
    assert [(c.type.value, c.status.value) for c in s.conditions] == [("Created", "True")]
    s = transition(s, Phase.TRAINING, **kw)
    assert [(c.type.value, c.status.value) for c in s.conditions] == [
        ("Created", "True"),
        ("Running", "True"),
    ]
    s = transition(s, Phase.SUSPENDED, reason="Suspended", **kw)
    assert {c.type.value: c.status.value for c in s.conditions} == {
        "Created": "True",
        "Running": "False",
        "Suspended": "True",
    }
    s = transition(s, Phase.PENDING, **kw)
    suspended = s.condition(ConditionType.SUSPENDED)
    assert (
        suspended is not None and suspended.status is ConditionStatus.FALSE and suspended.reason == "Resumed"
    )
    s = transition(s, Phase.FAILED, reason="TrainingFailed", message="boom", **{**kw, "now": at(50)})
    assert {c.type.value: c.status.value for c in s.conditions} == {
        "Created": "True",
        "Running": "False",
        "Failed": "True",
        "Suspended": "False",
    }
    assert s.failure_reason == "boom" and s.completion_time == at(50)
    assert all(c.observed_generation == 1 for c in s.conditions)
    assert s.observed_generation == 1


def test_set_condition_keeps_time_when_status_is_unchanged() -> None:
    s = TFTrainingJobStatus()
    set_condition(s, ConditionType.RUNNING, True, reason="A", message=None, now=at(0), generation=1)
    set_condition(s, ConditionType.RUNNING, True, reason="B", message="m", now=at(10), generation=2)
    (c,) = s.conditions
    assert (c.reason, c.message, c.last_transition_time, c.observed_generation) == ("B", "m", at(0), 2)
    set_condition(s, ConditionType.RUNNING, False, reason="C", message=None, now=at(20), generation=2)
    assert s.conditions[0].last_transition_time == at(20)
    set_condition(
        s,
        ConditionType.FAILED,
        False,
        reason="x",
        message=None,
        now=at(0),
        generation=2,
        only_if_present=True,
    )
    assert s.condition(ConditionType.FAILED) is None


def test_judge_with_no_pods_yet_counts_them_deleted() -> None:
    verdict = judge(job(status=STARTED), [], at(0))
    assert verdict.retry and verdict.reason == "PodDeleted"


def test_reason_table_is_documented() -> None:
    table = {r.value for r in Reason}
    for reason in (
        "TrainingFailed",
        "DownloadFailed",
        "UploadFailed",
        "BackoffLimitExceeded",
        "Unschedulable",
        "MaxRunExceeded",
        "InvalidSpec",
    ):
        assert reason in table


# ---- what a real kubelet shows (issue 13) ---------------------------------------------------------

PULL_ERROR = 'Failed to pull image "tf:nope": rpc error: code = NotFound desc = not found'


def _waiting_main(reason: str, message: str) -> dict[str, Any]:
    p = pod(
        **SCHEDULED, fetch=done(0), main={"waiting": {"reason": reason, "message": message}}, upload=RUNNING
    )
    p["status"]["containerStatuses"][0]["image"] = "tf:nope"
    return p


def test_a_stuck_container_is_named_with_its_image_and_the_kubelets_message() -> None:
    r = read_pod(_waiting_main("ErrImagePull", PULL_ERROR))
    assert r.stuck == "ImagePullFailed"
    assert (
        r.message
        == f"mnist-worker-0: container tensorflow cannot pull its image tf:nope: ErrImagePull: {PULL_ERROR}"
    )
    # The back-off repeats the same error after its own prefix: the same message, so one Event.
    again = read_pod(
        _waiting_main("ImagePullBackOff", f'Back-off pulling image "tf:nope": ErrImagePull: {PULL_ERROR}')
    )
    assert again.message == r.message
    older = read_pod(_waiting_main("ImagePullBackOff", 'Back-off pulling image "tf:nope"'))
    assert (
        older.message
        == 'mnist-worker-0: container tensorflow cannot pull its image tf:nope: ImagePullBackOff: Back-off pulling image "tf:nope"'
    )
    secret = read_pod(
        pod(
            **SCHEDULED,
            fetch={"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "cos" not found'}},
        )
    )
    assert (
        secret.message
        == 'mnist-worker-0: container fetch cannot be created: CreateContainerConfigError: secret "cos" not found'
    )


def test_a_stuck_container_is_the_jobs_reason_while_it_waits() -> None:
    j = job(status=STARTED, runPolicy={"schedulingTimeoutSeconds": 100})
    new, verdict = derive_status(j, [_waiting_main("ErrImagePull", PULL_ERROR)], at(50))
    assert (new.phase, new.reason, verdict.retry) == (Phase.DOWNLOADING, "ImagePullFailed", False)
    running = new.condition(ConditionType.RUNNING)
    assert running is not None and running.status == ConditionStatus.TRUE
    assert running.message is not None and "tf:nope" in running.message and PULL_ERROR in running.message
    assert verdict.recheck_at == at(100)  # and it still fails at the scheduling timeout
    late, _ = derive_status(j, [_waiting_main("ErrImagePull", PULL_ERROR)], at(100))
    assert (
        late.phase is Phase.FAILED
        and late.reason == "ImagePullFailed"
        and "tf:nope" in (late.failure_reason or "")
    )

    # Waiting before the main container (fetch: its Secret is missing): Starting, Running False says why.
    p = pod(
        **SCHEDULED,
        fetch={"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "cos" not found'}},
    )
    new, _ = derive_status(j, [p], at(50))
    assert (new.phase, new.reason) == (Phase.STARTING, "ContainerConfigError")
    running = new.condition(ConditionType.RUNNING)
    assert running is not None and running.status == ConditionStatus.FALSE
    assert running.reason == "ContainerConfigError" and 'secret "cos" not found' in (running.message or "")

    # Once the image comes, the job trains and the reason is gone.
    trained, _ = derive_status(
        job(status=new.model_dump(by_alias=True, mode="json")), [running_pod(0)], at(60)
    )
    assert trained.phase is Phase.TRAINING and trained.reason is None
    assert (trained.condition(ConditionType.RUNNING) or running).message == "instances are training"


def test_a_main_container_that_could_not_start_fails_at_once_whatever_the_upload_step_does() -> None:
    # No /bin/sh in the image: the launcher never ran, so the upload step would only wait.
    said = 'exec: "/bin/sh": stat /bin/sh: no such file or directory: unknown'
    r = read_pod(
        pod(
            **SCHEDULED,
            phase="Running",
            fetch=done(0),
            main=done(128, said, reason="StartError"),
            upload=RUNNING,
        )
    )
    assert (r.outcome, r.reason) == (Outcome.USER_ERROR, "ContainerConfigError")
    assert r.message == f"mnist-worker-0: the training container could not start: {said}"
