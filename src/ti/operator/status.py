"""The pods of an attempt → the job's status: its phase, conditions, instances and times. Pure.

Each pod is read by `ti.operator.pods.read_pod` (the exit-code policy); `judge` weighs the pods of the
current attempt together. A user error seen together with a platform fault is taken for its
consequence (a worker dies when its peer is evicted), so the fault wins and the job is retried.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
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
from ti.operator.pods import STUCK_REASONS, Outcome, PodReport, attempt_of, clip, read_pod
from ti.reasons import Reason

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


@dataclass(frozen=True)
class Verdict:
    """What the pods of one attempt say about the job."""

    phase: Phase
    retry: bool = False
    reason: str | None = None
    message: str | None = None
    recheck_at: datetime | None = None  # the next moment a deadline may pass


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
                reason=Reason.POD_DELETED,
                message=f"{ref.name}: the pod is gone",
            )
        current.append(found)

    started = start_time(job, current)
    max_run_end = started.timestamp() + spec.max_run_seconds if started is not None else None
    deadline = next((r for r in current if r.outcome == Outcome.DEADLINE), None)
    if deadline is not None or (max_run_end is not None and now.timestamp() >= max_run_end):
        return Verdict(
            Phase.FAILED,
            reason=Reason.MAX_RUN_EXCEEDED,
            message=f"the job ran longer than spec.maxRunSeconds ({spec.max_run_seconds}s)",
        )

    faults = [r for r in current if r.outcome == Outcome.PLATFORM_FAULT]
    if faults:
        what = "; ".join(r.message or f"{r.name}: {r.reason}" for r in faults)
        attempt = job.status.restart_count if job.status else 0
        if attempt >= policy.backoff_limit:
            return Verdict(
                Phase.FAILED,
                reason=Reason.BACKOFF_LIMIT_EXCEEDED,
                message=f"retried {attempt} times (runPolicy.backoffLimit {policy.backoff_limit}): {what}",
            )
        return Verdict(Phase.PENDING, retry=True, reason=faults[0].reason, message=what)

    for outcome in (Outcome.USER_ERROR, Outcome.UPLOAD_FAILED):
        failed = [r for r in current if r.outcome == outcome]
        if failed:
            # The chief's message first: it is the one users expect to read.
            first = sorted(failed, key=lambda r: (r.role != contract.ROLE_WORKER, r.index))[0]
            return Verdict(Phase.FAILED, reason=first.reason, message=clip(first.message or ""))

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
                reason=Reason.UNSCHEDULABLE,
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
        return Verdict(Phase.COMPLETED, reason=Reason.COMPLETED)
    # Not failed yet, but a container waits on an image or a Secret: the status says which, now, not
    # only when schedulingTimeoutSeconds has passed.
    stuck = next((r for r in current if r.outcome == Outcome.RUNNING and r.stuck), None)

    # The job is as far as its slowest worker; a parameter server only holds it back while starting.
    ranks = [_RANK[r.phase] for r in workers if r.phase in _RANK]
    ranks += [
        _RANK[r.phase] for r in ps if r.phase in _RANK and _RANK[r.phase] < _RANK[InstancePhase.TRAINING]
    ]
    slowest = min(ranks, default=_RANK[InstancePhase.STARTING])
    job_phase = next(_JOB_PHASE[p] for p, rank in _RANK.items() if rank == slowest)
    when = datetime.fromtimestamp(min(recheck), tz=timezone.utc) if recheck else None
    if stuck is not None:
        return Verdict(job_phase, reason=stuck.stuck, message=stuck.message, recheck_at=when)
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
    st = (old or TFTrainingJobStatus()).copy_to_change()
    st.phase = phase
    st.reason = reason
    st.observed_generation = generation
    kw: dict[str, Any] = {"now": now, "generation": generation}

    if phase in _RUNNING_PHASES:
        created = st.condition(ConditionType.CREATED)
        if created is None or created.status != ConditionStatus.TRUE:
            set_condition(
                st, ConditionType.CREATED, True, reason=Reason.PODS_CREATED, message="pods created", **kw
            )
    if phase in _ACTIVE_PHASES:
        set_condition(
            st,
            ConditionType.RUNNING,
            True,
            reason=phase.value,
            # What holds an instance up (an image that cannot be pulled), when something does.
            message=message or f"instances are {phase.value.lower()}",
            **kw,
        )
        set_condition(
            st,
            ConditionType.RESTARTING,
            False,
            reason=Reason.RUNNING,
            message=None,
            only_if_present=True,
            **kw,
        )
    else:
        set_condition(
            st,
            ConditionType.RUNNING,
            False,
            reason=reason or phase.value,
            message=message,
            # A job that cannot start (a container waiting on its image or a Secret) says why here.
            only_if_present=not (phase == Phase.STARTING and reason in STUCK_REASONS),
            **kw,
        )
    if phase == Phase.SUSPENDED:
        set_condition(
            st,
            ConditionType.SUSPENDED,
            True,
            reason=Reason.SUSPENDED,
            message="runPolicy.suspend is true",
            **kw,
        )
    else:
        suspended = st.condition(ConditionType.SUSPENDED)
        if suspended is not None and suspended.status == ConditionStatus.TRUE:
            set_condition(
                st,
                ConditionType.SUSPENDED,
                False,
                reason=Reason.RESUMED,
                message="runPolicy.suspend is false",
                **kw,
            )
    if phase == Phase.COMPLETED:
        set_condition(
            st,
            ConditionType.SUCCEEDED,
            True,
            reason=Reason.COMPLETED,
            message=message or "training completed",
            **kw,
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

    base = old.copy_to_change()
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
