"""Properties of reading pods and deriving a job's status, over generated pod statuses: any mix of
container states, exit codes (negative and past 255 too), waiting reasons, deletion marks, conditions
and missing fields. Whatever the API server hands over, read_pod and derive_status never raise, and
what they return is a valid phase with a consistent story."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ti import contract
from ti.api import ConditionStatus, ConditionType, InstancePhase, Phase, TFTrainingJobStatus, status_body
from ti.operator.pods import Outcome, read_pod
from ti.operator.status import derive_status

from .jobs import at, job, ts

pytestmark = pytest.mark.unit

text = st.text(max_size=30)
maybe_text = st.none() | text
times = st.none() | st.integers(0, 200_000).map(ts)
exit_codes = (
    st.none()
    | st.sampled_from([0, 1, 2, 70, 127, 128, 137, 143, 255, 256, 1000, -1, -9])
    | st.integers(-(2**31), 2**31 - 1)
)
waiting_reasons = (
    st.none()
    | st.sampled_from(
        [
            "ContainerCreating",
            "PodInitializing",
            "ErrImagePull",
            "ImagePullBackOff",
            "ErrImageNeverPull",
            "InvalidImageName",
            "CreateContainerConfigError",
            "CreateContainerError",
            "RunContainerError",
            "CrashLoopBackOff",
        ]
    )
    | text
)
terminated = st.fixed_dictionaries(
    {},
    optional={
        "exitCode": exit_codes,
        "reason": st.none()
        | st.sampled_from(["Completed", "Error", "OOMKilled", "ContainerCannotRun"])
        | text,
        "message": maybe_text | st.sampled_from([f"{contract.UPLOAD_FAILED_REASON}: no bucket", "x" * 9000]),
        "finishedAt": times,
    },
)
waiting = st.fixed_dictionaries({}, optional={"reason": waiting_reasons, "message": maybe_text})
running = st.fixed_dictionaries({}, optional={"startedAt": times})
# Each kind of state about as often as the others, then mixes and leftovers (the kubelet sets one).
state = st.one_of(
    running.map(lambda r: {"running": r}),
    waiting.map(lambda w: {"waiting": w}),
    terminated.map(lambda t: {"terminated": t}),
    terminated.map(lambda t: {"terminated": t}),
    st.fixed_dictionaries(
        {},
        optional={
            "running": st.none() | running,
            "waiting": st.none() | waiting,
            "terminated": st.none() | terminated,
        },
    ),
    st.sampled_from([None, {}]),
)


def container(name: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"name": st.just(name)}, optional={"state": state, "restartCount": st.integers(0, 5)}
    )


condition = st.fixed_dictionaries(
    {"type": st.sampled_from(["PodScheduled", "DisruptionTarget", "Ready", "Initialized"]) | text},
    optional={
        "status": st.sampled_from(["True", "False", "Unknown"]),
        "reason": st.none()
        | st.sampled_from(
            [
                "Unschedulable",
                "PreemptionByScheduler",
                "PreemptionByKubeScheduler",
                "DeletionByTaintManager",
                "DeletionByPodGC",
                "EvictionByEvictionAPI",
                "TerminationByKubelet",
            ]
        )
        | text,
        "message": maybe_text,
    },
)
_pod_fields = {
    "phase": st.none() | st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"]) | text,
    "reason": st.none()
    | st.sampled_from(["Evicted", "DeadlineExceeded", "Shutdown", "NodeLost", "OutOfcpu"]),
    "message": maybe_text,
    "startTime": times,
    "conditions": st.none() | st.lists(condition, max_size=4),
}
_containers = {
    "initContainerStatuses": st.lists(container(contract.FETCH_CONTAINER), max_size=1),
    "containerStatuses": st.tuples(
        container(contract.MAIN_CONTAINER), container(contract.UPLOAD_CONTAINER)
    ).flatmap(lambda both: st.permutations(list(both)))
    | st.lists(
        st.sampled_from([contract.MAIN_CONTAINER, contract.UPLOAD_CONTAINER]).flatmap(container), max_size=3
    ),
}
pod_status = st.one_of(
    # every container reported, the usual case
    st.fixed_dictionaries(
        {"phase": _pod_fields["phase"], **_containers},
        optional={k: v for k, v in _pod_fields.items() if k != "phase"},
    ),
    # anything missing
    st.fixed_dictionaries({}, optional={**_pod_fields, **{k: st.none() | v for k, v in _containers.items()}}),
)


@st.composite
def pods(draw: st.DrawFn, name: str | None = None, role: str = "worker", index: int = 0) -> dict[str, Any]:
    labels = {
        contract.LABEL_JOB: "mnist",
        contract.LABEL_ROLE: role,
        contract.LABEL_INDEX: str(index),
        contract.LABEL_ATTEMPT: draw(st.sampled_from(["0", "0", "1", "junk"])),
    }
    for key in draw(st.lists(st.sampled_from(sorted(labels)), max_size=2)):
        labels.pop(key, None)  # a label someone removed
    meta: dict[str, Any] = {"name": name or contract.instance_name("mnist", role, index), "labels": labels}
    if (created := draw(times)) is not None:
        meta["creationTimestamp"] = created
    if draw(st.booleans()):
        meta["deletionTimestamp"] = ts(50)
    p: dict[str, Any] = {"metadata": meta, "status": draw(pod_status)}
    if draw(st.booleans()):
        p["spec"] = {"nodeName": draw(st.sampled_from(["node-1", ""]))}
    return p


ENDED = {Outcome.USER_ERROR, Outcome.UPLOAD_FAILED, Outcome.PLATFORM_FAULT, Outcome.DEADLINE}
ON_THE_WAY = {
    InstancePhase.STARTING,
    InstancePhase.DOWNLOADING,
    InstancePhase.TRAINING,
    InstancePhase.UPLOADING,
}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(pods())
def test_read_pod_never_raises_and_tells_a_consistent_story(pod: dict[str, Any]) -> None:
    r = read_pod(pod)
    assert isinstance(r.phase, InstancePhase) and isinstance(r.outcome, Outcome)
    if r.outcome == Outcome.RUNNING:
        assert r.phase in ON_THE_WAY
    elif r.outcome == Outcome.SUCCEEDED:
        assert r.phase == InstancePhase.SUCCEEDED
    else:
        assert r.phase in (InstancePhase.FAILED, InstancePhase.DELETED)
        assert r.outcome != Outcome.DEADLINE or r.reason
        assert r.outcome not in ENDED - {Outcome.DEADLINE} or (isinstance(r.reason, str) and r.reason)
    if r.message is not None and r.outcome in (Outcome.USER_ERROR, Outcome.UPLOAD_FAILED):
        assert len(r.message) <= contract.FAILURE_MESSAGE_LIMIT + 200  # clipped, plus a pod name at most
    assert r.exit_code is None or isinstance(r.exit_code, int)


statuses = st.sampled_from(
    [
        None,
        {"phase": "Pending", "restartCount": 0},
        {"phase": "Starting", "restartCount": 0},
        {"phase": "Training", "restartCount": 0, "startTime": ts(10)},
        {"phase": "Training", "restartCount": 1, "startTime": ts(10)},
        {"phase": "Uploading", "restartCount": 2},
    ]
)


@st.composite
def jobs_and_pods(draw: st.DrawFn) -> tuple[Any, list[dict[str, Any]], int]:
    count = draw(st.integers(1, 3))
    ps = draw(st.integers(0, 1)) if count > 1 else 0
    spec: dict[str, Any] = {"instanceCount": count, "runPolicy": {"backoffLimit": draw(st.integers(0, 3))}}
    if ps:
        spec["distribution"] = {"type": "parameterServer", "parameterServerCount": ps}
    j = job(status=draw(statuses), **spec)
    found = []
    for ref in j.instances():
        if draw(st.integers(0, 4)):  # now and then an instance has no pod at all
            found.append(draw(pods(role=ref.role, index=ref.index)))
    return j, found, draw(st.integers(0, 200_000))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(jobs_and_pods())
def test_derive_status_never_raises_and_returns_a_valid_status(
    case: tuple[Any, list[dict[str, Any]], int],
) -> None:
    j, found, seconds = case
    new, verdict = derive_status(j, found, at(seconds))
    assert isinstance(new.phase, Phase) and isinstance(verdict.phase, Phase)
    # What is written is what the API server stores and reads back.
    assert TFTrainingJobStatus.model_validate(status_body(new)) == new
    assert [i.name for i in new.instances] == [ref.name for ref in j.instances()]
    before = j.status.restart_count if j.status else 0
    if verdict.retry:
        assert new.phase == Phase.PENDING and new.restart_count >= before + 1
        restarting = new.condition(ConditionType.RESTARTING)
        assert restarting is not None and restarting.status == ConditionStatus.TRUE and restarting.reason
    else:
        assert new.phase == verdict.phase and new.restart_count >= before
    if new.phase == Phase.FAILED:
        failed = new.condition(ConditionType.FAILED)
        assert new.reason and failed is not None and failed.status == ConditionStatus.TRUE
        assert failed.reason == new.reason and new.completion_time is not None
    if new.phase == Phase.COMPLETED:
        assert new.model_artifacts and new.completion_time is not None
    types = [c.type for c in new.conditions]
    assert len(types) == len(set(types))
