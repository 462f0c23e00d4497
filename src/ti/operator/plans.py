"""What a plan is: the steps `ti.operator.reconcile.plan` decides and the controller applies, in
the order the reconcile module documents. Plain data, and the merge patch that writes a status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ti.api import TFTrainingJobStatus
from ti.reasons import EventReason

# How soon to look again while waiting for pods to go away (their deletion events also wake us).
WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class PodDeletion:
    """A pod to delete, why, and its SIGTERM grace (0 for pods that already ended).

    The reason is a `Deletion`, or the job's Reason when an ending frees every running pod whatever
    the policy (Unschedulable, MaxRunExceeded, BackoffLimitExceeded, InvalidSpec; Stopped).
    """

    name: str
    reason: str
    grace_period_seconds: int | None = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record on the job, with the facts the operator's metrics count: they read
    these fields, never the message."""

    type: Literal["Normal", "Warning"]
    reason: EventReason
    message: str
    attempt: int | None = None  # the attempt it is about (Created, Restarting, InstanceFailed)
    status_reason: str | None = None  # the job's status.reason when it is about the job's end (Failed)


@dataclass(frozen=True)
class Plan:
    """What to do. Empty lists and None mean nothing to do of that kind."""

    create_pods: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[PodDeletion] = field(default_factory=list)
    create_service: dict[str, Any] | None = None
    status: TFTrainingJobStatus | None = None  # the new status; None when unchanged
    status_patch: dict[str, Any] | None = None  # JSON merge patch for .status; None when unchanged
    events: list[Event] = field(default_factory=list)
    delete_job: bool = False
    requeue_after: float | None = None
    # A job in a Kueue queue (`ti.operator.kueue`): its Workload to create, a merge patch of the
    # Workload (its spec.active), or one of its status, written with the resourceVersion it was
    # computed from.
    create_workload: dict[str, Any] | None = None
    workload_patch: dict[str, Any] | None = None
    workload_status: dict[str, Any] | None = None
    workload: tuple[str, str | None] | None = None  # (name, resourceVersion) workload_status is for

    @property
    def idle(self) -> bool:
        """True when the plan changes nothing."""
        return not (
            self.create_pods
            or self.delete_pods
            or self.create_service
            or self.status_patch
            or self.delete_job
            or self.create_workload
            or self.workload_patch
            or self.workload_status
        )


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch turning `old` into `new` (lists are replaced whole)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif key not in old or before != value:
            patch[key] = value
    return patch
