"""Pods → job status: phase, conditions, instances and the exit-code policy (DESIGN §2). Pure.

Exit-code policy, per pod of the current attempt:
  0                      success
  1-127                  the user's error (script, or a download the spec pointed at wrongly):
                         the job fails at once, the termination message becomes failureReason
  >= 128, evicted, preempted, deleted pod, lost node
                         the platform's fault: all instances are retried together, up to
                         runPolicy.backoffLimit, then BackoffLimitExceeded
  upload exit 70 (or a message starting UploadFailed)  → Failed, UploadFailed
A user error seen together with a platform fault is taken for its consequence (a worker dies when
its peer is evicted), so the fault wins and the job is retried.

Pods are plain dicts in the API server's JSON form (camelCase keys, RFC 3339 times).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from ti import contract
from ti.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    InstancePhase,
    InstanceStatus,
    Phase,
    TFTrainingJob,
    TFTrainingJobStatus,
)
from ti.api.models import (
    BACKOFF_LIMIT_EXCEEDED,
    COMPLETED,
    CONTAINER_CONFIG_ERROR,
    DOWNLOAD_FAILED,
    IMAGE_PULL_FAILED,
    INVALID_IMAGE,
    MAX_RUN_EXCEEDED,
    SUSPENDED,
    TRAINING_FAILED,
    UNSCHEDULABLE,
    UPLOAD_FAILED,
)

# Containers that wait with these reasons are not going anywhere; past the scheduling timeout the
# job fails instead of holding its other pods' resources forever.
_STUCK = {
    "ErrImagePull": IMAGE_PULL_FAILED,
    "ImagePullBackOff": IMAGE_PULL_FAILED,
    "ErrImageNeverPull": IMAGE_PULL_FAILED,
    "CreateContainerConfigError": CONTAINER_CONFIG_ERROR,
    "CreateContainerError": CONTAINER_CONFIG_ERROR,
    "RunContainerError": CONTAINER_CONFIG_ERROR,
}
_DISRUPTIONS = {
    "PreemptionByScheduler": "Preempted",
    "PreemptionByKubeScheduler": "Preempted",
    "DeletionByTaintManager": "NodeLost",
    "DeletionByPodGC": "NodeLost",
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
}
_RUNNING_PHASES = (Phase.STARTING, Phase.DOWNLOADING, Phase.TRAINING, Phase.UPLOADING)
_ACTIVE_PHASES = (Phase.DOWNLOADING, Phase.TRAINING, Phase.UPLOADING)
_RANK = {
    InstancePhase.PENDING: 0,
    InstancePhase.STARTING: 1,
    InstancePhase.DOWNLOADING: 2,
    InstancePhase.TRAINING: 3,
    InstancePhase.UPLOADING: 4,
    InstancePhase.SUCCEEDED: 5,
}
_JOB_PHASE = {
    InstancePhase.PENDING: Phase.STARTING,
    InstancePhase.STARTING: Phase.STARTING,
    InstancePhase.DOWNLOADING: Phase.DOWNLOADING,
    InstancePhase.TRAINING: Phase.TRAINING,
    InstancePhase.UPLOADING: Phase.UPLOADING,
    InstancePhase.SUCCEEDED: Phase.COMPLETED,
}


class Outcome(str, Enum):
    """What one pod says about its attempt."""

    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    USER_ERROR = "UserError"
    UPLOAD_FAILED = "UploadFailed"
    PLATFORM_FAULT = "PlatformFault"
    DEADLINE = "DeadlineExceeded"


@dataclass(frozen=True)
class PodReport:
    """One pod, read: where it stands, and if it ended, how and why."""

    name: str
    role: str
    index: int
    attempt: int
    phase: InstancePhase
    outcome: Outcome
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    node: str | None = None
    created: datetime | None = None
    started: datetime | None = None
    scheduled: bool = False
    stuck: str | None = None  # a waiting reason from _STUCK, with the kubelet's message in `message`
    deleting: bool = False
    result: str | None = None  # the upload step's termination message when it succeeded


@dataclass(frozen=True)
class Verdict:
    """What the pods of one attempt say about the job."""

    phase: Phase
    retry: bool = False
    reason: str | None = None
    message: str | None = None
    recheck_at: datetime | None = None  # the next moment a deadline may pass


# ---- reading pods ---------------------------------------------------------------------------------


def read_pod(pod: Mapping[str, Any]) -> PodReport:
    """Classify one pod by the exit-code policy."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    pod_phase = status.get("phase") or "Pending"
    name = meta.get("name", "")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled_cond = conditions.get("PodScheduled") or {}
    base: dict[str, Any] = {
        "name": name,
        "role": labels.get(contract.LABEL_ROLE, contract.ROLE_WORKER),
        "index": _int(labels.get(contract.LABEL_INDEX), 0),
        "attempt": attempt_of(pod),
        "node": spec.get("nodeName") or None,
        "created": parse_time(meta.get("creationTimestamp")),
        "started": parse_time(status.get("startTime")),
        "scheduled": bool(spec.get("nodeName")) or scheduled_cond.get("status") == "True",
        "deleting": bool(meta.get("deletionTimestamp")),
    }
    containers = {c.get("name"): c for c in status.get("containerStatuses") or []}
    init = {c.get("name"): c for c in status.get("initContainerStatuses") or []}
    fetch, main, upload = (
        init.get(contract.FETCH_CONTAINER),
        containers.get(contract.MAIN_CONTAINER),
        containers.get(contract.UPLOAD_CONTAINER),
    )
    main_end = _terminated(main)
    if main_end is not None:
        base["exit_code"] = main_end.get("exitCode")

    def report(phase: InstancePhase, outcome: Outcome, **more: Any) -> PodReport:
        return PodReport(**{**base, **more}, phase=phase, outcome=outcome)

    if pod_phase == "Succeeded":
        return report(InstancePhase.SUCCEEDED, Outcome.SUCCEEDED, result=_message(_terminated(upload)))

    disruption = conditions.get("DisruptionTarget") or {}
    if disruption.get("status") == "True":
        reason = _DISRUPTIONS.get(disruption.get("reason", ""), disruption.get("reason") or "Disrupted")
        return report(
            InstancePhase.FAILED,
            Outcome.PLATFORM_FAULT,
            reason=reason,
            message=f"{name}: {disruption.get('message') or reason}",
        )
    pod_reason = status.get("reason")
    if pod_reason == "DeadlineExceeded":
        return report(
            InstancePhase.FAILED, Outcome.DEADLINE, reason=MAX_RUN_EXCEEDED, message=status.get("message")
        )
    if pod_phase == "Failed" and pod_reason:
        # Pod-level failures (Evicted, NodeLost, Shutdown, UnexpectedAdmissionError, ...) are the node's.
        return report(
            InstancePhase.FAILED,
            Outcome.PLATFORM_FAULT,
            reason=pod_reason,
            message=f"{name}: {status.get('message') or pod_reason}",
        )
    if pod_phase == "Unknown":
        return report(
            InstancePhase.FAILED, Outcome.PLATFORM_FAULT, reason="NodeLost", message=f"{name}: node lost"
        )
    if base["deleting"] and pod_phase != "Failed":
        return report(
            InstancePhase.DELETED,
            Outcome.PLATFORM_FAULT,
            reason="PodDeleted",
            message=f"{name}: the pod was deleted while it ran",
        )

    for container, what, user_reason in (
        (fetch, "the download step", DOWNLOAD_FAILED),
        (main, "the training script", TRAINING_FAILED),
    ):
        end = _terminated(container)
        if end is None or end.get("exitCode") == 0:
            continue
        if container is main and pod_phase != "Failed" and _terminated(upload) is None:
            # The upload step still stores the failed run's logs; the verdict waits for the pod's end.
            return report(InstancePhase.UPLOADING, Outcome.RUNNING)
        code = int(end.get("exitCode", -1))
        if 1 <= code <= 127:
            text = _message(end) or f"{what} exited with code {code}"
            return report(InstancePhase.FAILED, Outcome.USER_ERROR, reason=user_reason, message=text)
        return report(InstancePhase.FAILED, Outcome.PLATFORM_FAULT, **_killed(name, what, end, code))

    upload_end = _terminated(upload)
    if upload_end is not None and upload_end.get("exitCode") != 0:
        code = int(upload_end.get("exitCode", -1))
        said = _message(upload_end)
        if code == contract.UPLOAD_FAILED_EXIT_CODE or (said or "").startswith(contract.UPLOAD_FAILED_REASON):
            return report(
                InstancePhase.FAILED,
                Outcome.UPLOAD_FAILED,
                reason=UPLOAD_FAILED,
                message=said or f"the upload step exited with code {code}",
            )
        if code >= 128 or code < 0:
            return report(
                InstancePhase.FAILED,
                Outcome.PLATFORM_FAULT,
                **_killed(name, "the upload step", upload_end, code),
            )
        return report(
            InstancePhase.FAILED,
            Outcome.UPLOAD_FAILED,
            reason=UPLOAD_FAILED,
            message=said or f"the upload step exited with code {code}",
        )
    if pod_phase == "Failed":
        return report(
            InstancePhase.FAILED,
            Outcome.PLATFORM_FAULT,
            reason="PodFailed",
            message=f"{name}: {status.get('message') or 'pod failed'}",
        )

    for container in (fetch, main, upload):
        waiting = ((container or {}).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "InvalidImageName":
            return report(
                InstancePhase.FAILED,
                Outcome.USER_ERROR,
                reason=INVALID_IMAGE,
                message=f"{name}: {waiting.get('message') or 'invalid image name'}",
            )
        if waiting.get("reason") in _STUCK:
            base["stuck"] = _STUCK[waiting["reason"]]
            base["message"] = f"{name}: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
            break
    if not base["scheduled"] and scheduled_cond.get("reason") == "Unschedulable":
        base["message"] = f"{name}: {scheduled_cond.get('message') or 'unschedulable'}"

    if _running(main):
        phase = InstancePhase.TRAINING
    elif main_end is not None:
        phase = InstancePhase.UPLOADING
    elif _running(fetch) or (_terminated(fetch) or {}).get("exitCode") == 0:
        # Between the fetch step's end and the main container's start the pod is still getting ready;
        # calling that Downloading keeps the phase from stepping back to Starting.
        phase = InstancePhase.DOWNLOADING
    else:
        phase = InstancePhase.STARTING
    return report(phase, Outcome.RUNNING)


def attempt_of(pod: Mapping[str, Any]) -> int:
    """The retry attempt a pod belongs to (its attempt label)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return _int(labels.get(contract.LABEL_ATTEMPT), 0)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time from the API server (or a datetime) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text).astimezone(timezone.utc)


# ---- judging an attempt ---------------------------------------------------------------------------


def judge(
    job: TFTrainingJob,
    reports: Iterable[PodReport],
    now: datetime,
    *,
    previous: Iterable[InstanceStatus] = (),
) -> Verdict:
    """The job's verdict from the pods of its current attempt.

    An instance without a pod counts as deleted (a platform fault) unless `previous` says it had
    already succeeded: call this only once the attempt's pods were created.
    """
    by_name = {r.name: r for r in reports}
    done_before = {i.name for i in previous if i.phase == InstancePhase.SUCCEEDED}
    spec = job.spec
    policy = spec.run_policy
    current: list[PodReport] = []
    for ref in job.instances():
        found = by_name.get(ref.name)
        if found is None:
            outcome, phase = (
                (Outcome.SUCCEEDED, InstancePhase.SUCCEEDED)
                if ref.name in done_before
                else (Outcome.PLATFORM_FAULT, InstancePhase.DELETED)
            )
            found = PodReport(
                name=ref.name,
                role=ref.role,
                index=ref.index,
                attempt=0,
                phase=phase,
                outcome=outcome,
                reason="PodDeleted",
                message=f"{ref.name}: the pod is gone",
            )
        current.append(found)

    started = start_time(job, current)
    max_run_end = started.timestamp() + spec.max_run_seconds if started is not None else None
    deadline = next((r for r in current if r.outcome == Outcome.DEADLINE), None)
    if deadline is not None or (max_run_end is not None and now.timestamp() >= max_run_end):
        return Verdict(
            Phase.FAILED,
            reason=MAX_RUN_EXCEEDED,
            message=f"the job ran longer than spec.maxRunSeconds ({spec.max_run_seconds}s)",
        )

    faults = [r for r in current if r.outcome == Outcome.PLATFORM_FAULT]
    if faults:
        what = "; ".join(r.message or f"{r.name}: {r.reason}" for r in faults)
        attempt = job.status.restart_count if job.status else 0
        if attempt >= policy.backoff_limit:
            return Verdict(
                Phase.FAILED,
                reason=BACKOFF_LIMIT_EXCEEDED,
                message=f"retried {attempt} times (runPolicy.backoffLimit {policy.backoff_limit}): {what}",
            )
        return Verdict(Phase.PENDING, retry=True, reason=faults[0].reason, message=what)

    for outcome in (Outcome.USER_ERROR, Outcome.UPLOAD_FAILED):
        failed = [r for r in current if r.outcome == outcome]
        if failed:
            # The chief's message first: it is the one users expect to read.
            first = sorted(failed, key=lambda r: (r.role != contract.ROLE_WORKER, r.index))[0]
            return Verdict(Phase.FAILED, reason=first.reason, message=_clip(first.message or ""))

    timeout = policy.scheduling_timeout_seconds
    recheck: list[float] = [max_run_end] if max_run_end is not None else []
    waiting = [r for r in current if r.outcome == Outcome.RUNNING and (not r.scheduled or r.stuck)]
    late = []
    for r in waiting:
        limit = (r.created or now).timestamp() + timeout
        if now.timestamp() >= limit:
            late.append(r)
        else:
            recheck.append(limit)
    if late:
        unscheduled = [r for r in late if not r.scheduled]
        if unscheduled:
            detail = "; ".join(r.message or f"{r.name}: not scheduled" for r in unscheduled)
            return Verdict(
                Phase.FAILED,
                reason=UNSCHEDULABLE,
                message=(
                    f"{len(unscheduled)} of {len(current)} instances could not be scheduled within "
                    f"runPolicy.schedulingTimeoutSeconds ({timeout}s): {detail}"
                ),
            )
        first = late[0]
        return Verdict(
            Phase.FAILED,
            reason=first.stuck,
            message=f"not started within runPolicy.schedulingTimeoutSeconds ({timeout}s): {first.message}",
        )

    workers = [r for r in current if r.role == contract.ROLE_WORKER]
    ps = [r for r in current if r.role == contract.ROLE_PS]
    if workers and all(r.outcome == Outcome.SUCCEEDED for r in workers):
        return Verdict(Phase.COMPLETED, reason=COMPLETED)

    # The job is as far as its slowest worker; a parameter server only holds it back while starting.
    ranks = [_RANK[r.phase] for r in workers if r.phase in _RANK]
    ranks += [
        _RANK[r.phase] for r in ps if r.phase in _RANK and _RANK[r.phase] < _RANK[InstancePhase.TRAINING]
    ]
    slowest = min(ranks, default=_RANK[InstancePhase.STARTING])
    job_phase = next(_JOB_PHASE[p] for p, rank in _RANK.items() if rank == slowest)
    when = datetime.fromtimestamp(min(recheck), tz=timezone.utc) if recheck else None
    return Verdict(job_phase, recheck_at=when)


def start_time(job: TFTrainingJob, reports: Iterable[PodReport]) -> datetime | None:
    """When the job started: the earlier of status.startTime and its pods' start."""
    times = [r.started for r in reports if r.started is not None]
    if job.status is not None and job.status.start_time is not None:
        times.append(job.status.start_time)
    return min(times) if times else None


# ---- writing status -------------------------------------------------------------------------------


def set_condition(
    status: TFTrainingJobStatus,
    type_: ConditionType,
    value: bool,
    *,
    reason: str | None,
    message: str | None,
    now: datetime,
    generation: int | None,
    only_if_present: bool = False,
) -> None:
    """Set a condition in place; lastTransitionTime moves only when its status does (no flapping)."""
    wanted = ConditionStatus.TRUE if value else ConditionStatus.FALSE
    old = status.condition(type_)
    if old is None and only_if_present:
        return
    changed = old is None or old.status != wanted
    new = Condition(
        type=type_,
        status=wanted,
        reason=reason,
        message=message,
        last_transition_time=_second(now) if changed or old is None else old.last_transition_time,
        observed_generation=generation,
    )
    others = [c for c in status.conditions if c.type != type_]
    order = list(ConditionType)
    status.conditions = sorted([*others, new], key=lambda c: order.index(c.type))


def transition(
    old: TFTrainingJobStatus | None,
    phase: Phase,
    *,
    now: datetime,
    generation: int | None,
    reason: str | None = None,
    message: str | None = None,
) -> TFTrainingJobStatus:
    """A copy of `old` in `phase`, with conditions, times and reasons made consistent with it."""
    st = (old or TFTrainingJobStatus()).model_copy(deep=True)
    st.phase = phase
    st.reason = reason
    st.observed_generation = generation
    kw: dict[str, Any] = {"now": now, "generation": generation}

    if phase in _RUNNING_PHASES:
        created = st.condition(ConditionType.CREATED)
        if created is None or created.status != ConditionStatus.TRUE:
            set_condition(st, ConditionType.CREATED, True, reason="PodsCreated", message="pods created", **kw)
    if phase in _ACTIVE_PHASES:
        set_condition(
            st,
            ConditionType.RUNNING,
            True,
            reason=phase.value,
            message=f"instances are {phase.value.lower()}",
            **kw,
        )
        set_condition(
            st, ConditionType.RESTARTING, False, reason="Running", message=None, only_if_present=True, **kw
        )
    else:
        set_condition(
            st,
            ConditionType.RUNNING,
            False,
            reason=reason or phase.value,
            message=message,
            only_if_present=True,
            **kw,
        )
    if phase == Phase.SUSPENDED:
        set_condition(
            st, ConditionType.SUSPENDED, True, reason=SUSPENDED, message="runPolicy.suspend is true", **kw
        )
    else:
        suspended = st.condition(ConditionType.SUSPENDED)
        if suspended is not None and suspended.status == ConditionStatus.TRUE:
            set_condition(
                st,
                ConditionType.SUSPENDED,
                False,
                reason="Resumed",
                message="runPolicy.suspend is false",
                **kw,
            )
    if phase == Phase.COMPLETED:
        set_condition(
            st, ConditionType.SUCCEEDED, True, reason=COMPLETED, message=message or "training completed", **kw
        )
    if phase == Phase.FAILED:
        set_condition(st, ConditionType.FAILED, True, reason=reason, message=message, **kw)
        st.failure_reason = message
    if phase.finished:
        set_condition(
            st, ConditionType.RESTARTING, False, reason=phase.value, message=None, only_if_present=True, **kw
        )
        st.completion_time = st.completion_time or _second(now)
        if st.start_time is not None:
            st.billable_seconds = max(0, int((st.completion_time - st.start_time).total_seconds()))
        else:
            st.billable_seconds = 0
    return st


def instance_statuses(job: TFTrainingJob, reports: Iterable[PodReport], attempt: int) -> list[InstanceStatus]:
    """One entry per instance the job asks for, from its pod if there is one."""
    by_name = {r.name: r for r in reports}
    out = []
    for ref in job.instances():
        r = by_name.get(ref.name)
        if r is None:
            out.append(InstanceStatus(name=ref.name, role=ref.role, index=ref.index, restarts=attempt))
            continue
        out.append(
            InstanceStatus(
                name=ref.name,
                role=ref.role,
                index=ref.index,
                pod=r.name,
                node=r.node,
                phase=r.phase,
                exit_code=r.exit_code,
                restarts=attempt,
            )
        )
    return out


def derive_status(
    job: TFTrainingJob, pods: Iterable[Mapping[str, Any]], now: datetime
) -> tuple[TFTrainingJobStatus, Verdict]:
    """The status the pods of the current attempt imply, once that attempt's pods were created.

    A retry verdict comes back as phase Pending with restartCount + 1 and the Restarting condition
    True; the caller (ti.operator.reconcile) deletes the old pods and creates the next attempt's.
    """
    old = job.status or TFTrainingJobStatus()
    generation = job.metadata.generation
    attempt = current_attempt(job, pods)
    reports = [read_pod(p) for p in pods if attempt_of(p) == attempt]
    verdict = judge(job, reports, now, previous=old.instances)
    kw: dict[str, Any] = {"now": now, "generation": generation}

    base = old.model_copy(deep=True)
    base.restart_count = attempt
    base.start_time = start_time(job, reports)
    base.instances = instance_statuses(job, reports, attempt)
    if verdict.retry:
        st = transition(base, Phase.PENDING, reason=verdict.reason, message=verdict.message, **kw)
        st.restart_count = attempt + 1
        st.instances = instance_statuses(job, [], attempt + 1)
        set_condition(
            st, ConditionType.RESTARTING, True, reason=verdict.reason, message=verdict.message, **kw
        )
        return st, verdict
    st = transition(base, verdict.phase, reason=verdict.reason, message=verdict.message, **kw)
    if verdict.phase == Phase.COMPLETED:
        st.model_artifacts = contract.model_uri(job.spec.output_path, job.name)
        st.output_data = contract.output_data_uri(job.spec.output_path, job.name)
        st.metrics = _metrics(reports) or st.metrics
    return st, verdict


def current_attempt(job: TFTrainingJob, pods: Iterable[Mapping[str, Any]]) -> int:
    """The attempt in force: status.restartCount, or a later one if pods say so (status lost)."""
    recorded = job.status.restart_count if job.status else 0
    return max([recorded, *(attempt_of(p) for p in pods)])


# ---- helpers --------------------------------------------------------------------------------------


def _terminated(container: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not container:
        return None
    state = container.get("state") or {}
    return state.get("terminated")


def _running(container: Mapping[str, Any] | None) -> bool:
    return bool(container and (container.get("state") or {}).get("running") is not None)


def _message(end: Mapping[str, Any] | None) -> str | None:
    text = ((end or {}).get("message") or "").strip()
    return _clip(text) if text else None


def _killed(name: str, what: str, end: Mapping[str, Any], code: int) -> dict[str, Any]:
    term_reason = end.get("reason") or "Error"
    reason = (
        "OOMKilled" if term_reason == "OOMKilled" else f"ExitCode{code}" if code >= 0 else "ContainerFailed"
    )
    return {"reason": reason, "message": f"{name}: {what} was killed (exit code {code}, {term_reason})"}


def _clip(text: str) -> str:
    limit = contract.FAILURE_MESSAGE_LIMIT
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _metrics(reports: Iterable[PodReport]) -> dict[str, float]:
    # The chief's upload step may end with {"metrics": {name: value}} as its termination message.
    for r in reports:
        if r.role != contract.ROLE_WORKER or r.index != 0 or not r.result:
            continue
        try:
            data = json.loads(r.result)
        except ValueError:
            return {}
        metrics = data.get("metrics") if isinstance(data, dict) else None
        if isinstance(metrics, dict):
            return {str(k): float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    return {}


def _second(now: datetime) -> datetime:
    return now.astimezone(timezone.utc).replace(microsecond=0)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
