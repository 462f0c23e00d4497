"""The plans for a job the API server will not take as it is: pods it refuses to create
(`refused`), and a stored spec the model refuses (`unparsable`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ti.api import ConditionStatus, ConditionType, Phase, TFTrainingJob, TFTrainingJobStatus, status_body
from ti.operator.plans import WAIT_SECONDS, Event, Plan, merge_patch
from ti.operator.settings import OperatorConfig
from ti.operator.status import set_condition, transition
from ti.reasons import EventReason, Reason

# How soon creating pods the API server refused is tried again.
REFUSED_RETRY_SECONDS = 10.0


def refused(job: TFTrainingJob, message: str, now: datetime, config: OperatorConfig) -> Plan:
    """The plan once the API server refused to create this attempt's pods or Service.

    Refusals are the API server's or an admission plugin's (a ServiceAccount or PriorityClass that does
    not exist, a ResourceQuota, an invalid pod): the job stays Pending, so the next reconcile creates
    what is still missing; status says why (reason FailedCreate, the Created condition False with the
    server's message) and a Warning Event is recorded once per distinct message. Refused for longer than
    runPolicy.schedulingTimeoutSeconds, the job fails (reason FailedCreate) and frees any pod it got, as
    an unschedulable one does: every wait on it ends, with the server's reason.
    """
    old = job.status or TFTrainingJobStatus()
    generation = job.metadata.generation
    was = old.condition(ConditionType.CREATED)
    refused_since = (
        was.last_transition_time
        if old.reason == Reason.FAILED_CREATE and was is not None and was.status == ConditionStatus.FALSE
        else None
    )
    timeout = job.spec.run_policy.scheduling_timeout_seconds
    if refused_since is not None and (now - refused_since).total_seconds() >= timeout:
        reason = (
            f"the API server refused the pods for more than runPolicy.schedulingTimeoutSeconds "
            f"({timeout}s): {message}"
        )
        failed = transition(
            old, Phase.FAILED, reason=Reason.FAILED_CREATE, message=reason, now=now, generation=generation
        )
        return Plan(
            status=failed,
            status_patch=merge_patch(status_body(old), status_body(failed)),
            events=[
                Event(
                    "Warning",
                    EventReason.FAILED,
                    f"{Reason.FAILED_CREATE}: {reason}",
                    status_reason=Reason.FAILED_CREATE,
                )
            ],
            requeue_after=WAIT_SECONDS,  # the next reconcile frees what was created
        )
    new = transition(
        old, Phase.PENDING, reason=Reason.FAILED_CREATE, message=message, now=now, generation=generation
    )
    set_condition(
        new,
        ConditionType.CREATED,
        False,
        reason=Reason.FAILED_CREATE,
        message=message,
        now=now,
        generation=generation,
    )
    seen = old.reason == Reason.FAILED_CREATE and was is not None and was.message == message
    old_body = status_body(old) if job.status is not None else {}
    new_body = status_body(new)
    patch = merge_patch(old_body, new_body) if new_body != old_body else None
    return Plan(
        status=new if patch else None,
        status_patch=patch or None,
        events=[] if seen else [Event("Warning", EventReason.FAILED_CREATE, message)],
        requeue_after=float(min(REFUSED_RETRY_SECONDS, config.resync_seconds)),
    )


def unparsable(body: Mapping[str, Any], message: str, now: datetime) -> Plan:
    """The plan for a job the API server stored but the model refuses: what the CRD's schema cannot
    check (a regular expression that does not compile, channel names that differ only in case). The job
    fails at once with reason InvalidSpec and `message`; no pod is created.
    """
    meta = body.get("metadata") or {}
    raw = body.get("status")
    try:
        old = TFTrainingJobStatus.model_validate(raw or {})
    except ValidationError:
        old, raw = TFTrainingJobStatus(), None
    if meta.get("deletionTimestamp") or (old.phase is not None and old.phase.finished):
        return Plan()
    new = transition(
        old,
        Phase.FAILED,
        reason=Reason.INVALID_SPEC,
        message=message,
        now=now,
        generation=meta.get("generation"),
    )
    patch = merge_patch(status_body(old) if raw else {}, status_body(new))
    return Plan(
        status=new,
        status_patch=patch or None,
        events=[
            Event(
                "Warning",
                EventReason.FAILED,
                f"{Reason.INVALID_SPEC}: {message}",
                status_reason=Reason.INVALID_SPEC,
            )
        ],
    )


def describe(err: ValidationError) -> str:
    """A model's validation error in one line, each problem prefixed with its field path."""
    parts = []
    for e in err.errors():
        path = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in e["loc"]).lstrip(".")
        parts.append(f"{path}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
