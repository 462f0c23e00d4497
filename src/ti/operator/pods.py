"""Reading one pod: where it stands and, if it ended, how and why. Pure.

Exit-code policy, per pod of the current attempt:
  0                      success
  1-127                  the user's error (script, or a download the spec pointed at wrongly):
                         the job fails at once, the termination message becomes failureReason
  >= 128, < 0, evicted, preempted, deleted pod, lost node
                         the platform's fault: all instances are retried together, up to
                         runPolicy.backoffLimit, then BackoffLimitExceeded
  upload exit 70 (or a message starting UploadFailed)  → Failed, UploadFailed

`read_pod` tries an ordered table of rules, each a small function that recognises one way a pod
stands (`_RULES`); the first that answers wins, and a pod none of them claims is still on its way
(`_progress`). Pods are plain dicts in the API server's JSON form (camelCase keys, RFC 3339 times).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from ti import contract
from ti.api import InstancePhase
from ti.reasons import Reason, exit_code

# Containers that wait with these reasons are not going anywhere; past the scheduling timeout the
# job fails instead of holding its other pods' resources forever.
# (The keys are the kubelet's waiting reasons; the values are ours.)
_STUCK = {
    "ErrImagePull": Reason.IMAGE_PULL_FAILED,
    "ImagePullBackOff": Reason.IMAGE_PULL_FAILED,
    "ErrImageNeverPull": Reason.IMAGE_PULL_FAILED,
    "CreateContainerConfigError": Reason.CONTAINER_CONFIG_ERROR,
    "CreateContainerError": Reason.CONTAINER_CONFIG_ERROR,
    "RunContainerError": Reason.CONTAINER_CONFIG_ERROR,
}
STUCK_REASONS = frozenset(_STUCK.values())
# The kubelet's back-off message repeats the pull's own error after this prefix (v1.30 and later): the
# same story, so the same message (and one Event), not a new one every back-off.
_BACKOFF = re.compile(r'^Back-off pulling image "[^"]*": (?:(\w+): )?')
# The kubelet's reasons for a container that could not even be started (containerd's, docker's).
START_ERRORS = frozenset({"StartError", "ContainerCannotRun"})
# The reasons of a pod's DisruptionTarget condition (Kubernetes' words) → ours.
_DISRUPTIONS = {
    "PreemptionByScheduler": Reason.PREEMPTED,
    "PreemptionByKubeScheduler": Reason.PREEMPTED,
    "DeletionByTaintManager": Reason.NODE_LOST,
    "DeletionByPodGC": Reason.NODE_LOST,
    "EvictionByEvictionAPI": Reason.EVICTED,
    "TerminationByKubelet": Reason.EVICTED,
}


class Outcome(str, Enum):
    """What one pod says about its attempt."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    USER_ERROR = "user error"  # not retried
    UPLOAD_FAILED = "upload failed"  # not retried
    PLATFORM_FAULT = "platform fault"  # retried, up to runPolicy.backoffLimit
    DEADLINE = "deadline"  # spec.maxRunSeconds passed


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


def read_pod(pod: Mapping[str, Any]) -> PodReport:
    """Classify one pod by the exit-code policy: the first rule of `_RULES` that answers wins."""
    seen = _Pod.of(pod)
    for rule in _RULES:
        found = rule(seen)
        if found is not None:
            return found
    return _progress(seen)


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


def clip(text: str) -> str:
    """A message cut to what status.failureReason holds, keeping its end (where the error is)."""
    limit = contract.FAILURE_MESSAGE_LIMIT
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


# ---- one pod, picked apart once -------------------------------------------------------------------


@dataclass(frozen=True)
class _Pod:
    name: str
    phase: str  # the pod's phase; Pending while the API server has not set one
    status: Mapping[str, Any]
    conditions: Mapping[Any, Mapping[str, Any]]
    fetch: Mapping[str, Any] | None
    main: Mapping[str, Any] | None
    upload: Mapping[str, Any] | None
    fields: Mapping[str, Any]  # what every report of this pod carries

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> _Pod:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        status = pod.get("status") or {}
        spec = pod.get("spec") or {}
        name = meta.get("name", "")
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        containers = {c.get("name"): c for c in status.get("containerStatuses") or []}
        init = {c.get("name"): c for c in status.get("initContainerStatuses") or []}
        main = containers.get(contract.MAIN_CONTAINER)
        main_end = _terminated(main)
        fields = {
            "name": name,
            "role": labels.get(contract.LABEL_ROLE, contract.ROLE_WORKER),
            "index": _int(labels.get(contract.LABEL_INDEX), 0),
            "attempt": attempt_of(pod),
            "node": spec.get("nodeName") or None,
            "created": parse_time(meta.get("creationTimestamp")),
            "started": parse_time(status.get("startTime")),
            "scheduled": bool(spec.get("nodeName"))
            or (conditions.get("PodScheduled") or {}).get("status") == "True",
            "deleting": bool(meta.get("deletionTimestamp")),
            "exit_code": None
            if main_end is None or main_end.get("exitCode") is None
            else _exit_code(main_end),
        }
        return cls(
            name=name,
            phase=status.get("phase") or "Pending",
            status=status,
            conditions=conditions,
            fetch=init.get(contract.FETCH_CONTAINER),
            main=main,
            upload=containers.get(contract.UPLOAD_CONTAINER),
            fields=fields,
        )

    def report(self, phase: InstancePhase, outcome: Outcome, **more: Any) -> PodReport:
        return PodReport(**{**self.fields, **more}, phase=phase, outcome=outcome)

    def fault(self, reason: str, message: str) -> PodReport:
        """The platform's fault: the attempt is retried."""
        return self.report(InstancePhase.FAILED, Outcome.PLATFORM_FAULT, reason=reason, message=message)


# ---- the rules, in the order they are tried -------------------------------------------------------

Rule = Callable[[_Pod], PodReport | None]


def _succeeded(pod: _Pod) -> PodReport | None:
    if pod.phase != "Succeeded":
        return None
    return pod.report(InstancePhase.SUCCEEDED, Outcome.SUCCEEDED, result=_message(_terminated(pod.upload)))


def _disrupted(pod: _Pod) -> PodReport | None:
    # Preemption, a taint eviction, the Eviction API: the kubelet says so before the pod ends.
    disruption = pod.conditions.get("DisruptionTarget") or {}
    if disruption.get("status") != "True":
        return None
    said = disruption.get("reason") or ""
    reason = _DISRUPTIONS.get(said) or said or Reason.DISRUPTED
    return pod.fault(reason, f"{pod.name}: {disruption.get('message') or reason}")


def _past_deadline(pod: _Pod) -> PodReport | None:
    if pod.status.get("reason") != "DeadlineExceeded":
        return None
    return pod.report(
        InstancePhase.FAILED,
        Outcome.DEADLINE,
        reason=Reason.MAX_RUN_EXCEEDED,
        message=pod.status.get("message"),
    )


def _failed_by_node(pod: _Pod) -> PodReport | None:
    # Pod-level failures (Evicted, NodeLost, Shutdown, UnexpectedAdmissionError, ...) are the node's.
    reason = pod.status.get("reason")
    if pod.phase != "Failed" or not reason:
        return None
    return pod.fault(reason, f"{pod.name}: {pod.status.get('message') or reason}")


def _node_unknown(pod: _Pod) -> PodReport | None:
    if pod.phase != "Unknown":
        return None
    return pod.fault(Reason.NODE_LOST, f"{pod.name}: node lost")


def _deleted(pod: _Pod) -> PodReport | None:
    if not pod.fields["deleting"] or pod.phase == "Failed":
        return None
    return pod.report(
        InstancePhase.DELETED,
        Outcome.PLATFORM_FAULT,
        reason=Reason.POD_DELETED,
        message=f"{pod.name}: the pod was deleted while it ran",
    )


def _could_not_start(pod: _Pod) -> PodReport | None:
    # No /bin/sh in the image, say: the launcher never ran, the upload step would only wait for it,
    # and a retry would fail the same way. The kubelet's message says why.
    end = _terminated(pod.main)
    if end is None or end.get("reason") not in START_ERRORS:
        return None
    said = str(end.get("message") or end["reason"]).strip()
    return pod.report(
        InstancePhase.FAILED,
        Outcome.USER_ERROR,
        reason=Reason.CONTAINER_CONFIG_ERROR,
        message=clip(f"{pod.name}: the training container could not start: {said}"),
    )


def _fetch_failed(pod: _Pod) -> PodReport | None:
    return _step_failed(pod, _terminated(pod.fetch), "the download step", Reason.DOWNLOAD_FAILED)


def _script_failed(pod: _Pod) -> PodReport | None:
    end = _terminated(pod.main)
    if end is None or _exit_code(end) == 0:
        return None
    if pod.phase != "Failed" and _terminated(pod.upload) is None:
        # The upload step still stores the failed run's logs; the verdict waits for the pod's end.
        return pod.report(InstancePhase.UPLOADING, Outcome.RUNNING)
    return _step_failed(pod, end, "the training script", Reason.TRAINING_FAILED)


def _upload_failed(pod: _Pod) -> PodReport | None:
    end = _terminated(pod.upload)
    if end is None:
        return None
    code = _exit_code(end)
    if code == 0:
        return None
    said = _message(end)
    marked = code == contract.UPLOAD_FAILED_EXIT_CODE or (said or "").startswith(
        contract.UPLOAD_FAILED_REASON
    )
    if not marked and (code >= 128 or code < 0):
        return pod.fault(**_killed(pod.name, "the upload step", end, code))
    return pod.report(
        InstancePhase.FAILED,
        Outcome.UPLOAD_FAILED,
        reason=Reason.UPLOAD_FAILED,
        message=said or f"the upload step exited with code {code}",
    )


def _failed_otherwise(pod: _Pod) -> PodReport | None:
    if pod.phase != "Failed":
        return None
    return pod.fault(Reason.POD_FAILED, f"{pod.name}: {pod.status.get('message') or 'pod failed'}")


def _invalid_image(pod: _Pod) -> PodReport | None:
    # The first container that waits for good decides: an invalid name never becomes valid.
    for container in (pod.fetch, pod.main, pod.upload):
        waiting = _waiting(container)
        if waiting.get("reason") == "InvalidImageName":
            return pod.report(
                InstancePhase.FAILED,
                Outcome.USER_ERROR,
                reason=Reason.INVALID_IMAGE,
                message=f"{pod.name}: {waiting.get('message') or 'invalid image name'}",
            )
        if waiting.get("reason") in _STUCK:
            return None
    return None


_RULES: tuple[Rule, ...] = (
    _succeeded,
    _disrupted,
    _past_deadline,
    _failed_by_node,
    _node_unknown,
    _deleted,
    _could_not_start,
    _fetch_failed,
    _script_failed,
    _upload_failed,
    _failed_otherwise,
    _invalid_image,
)


def _progress(pod: _Pod) -> PodReport:
    """A pod no rule claimed: still on its way; how far, and what holds it up if anything does."""
    more: dict[str, Any] = {}
    for container in (pod.fetch, pod.main, pod.upload):
        waiting = _waiting(container)
        if waiting.get("reason") in _STUCK:
            assert container is not None
            more["stuck"] = _STUCK[waiting["reason"]]
            more["message"] = _stuck_message(pod.name, container, waiting)
            break
    scheduled = pod.conditions.get("PodScheduled") or {}
    if not pod.fields["scheduled"] and scheduled.get("reason") == "Unschedulable":
        more["message"] = f"{pod.name}: {scheduled.get('message') or 'unschedulable'}"

    if _running(pod.main):
        phase = InstancePhase.TRAINING
    elif _terminated(pod.main) is not None:
        phase = InstancePhase.UPLOADING
    elif _running(pod.fetch) or _exit_code(_terminated(pod.fetch)) == 0:
        # Between the fetch step's end and the main container's start the pod is still getting ready;
        # calling that Downloading keeps the phase from stepping back to Starting.
        phase = InstancePhase.DOWNLOADING
    else:
        phase = InstancePhase.STARTING
    return pod.report(phase, Outcome.RUNNING, **more)


# ---- helpers --------------------------------------------------------------------------------------


def _stuck_message(pod: str, container: Mapping[str, Any], waiting: Mapping[str, Any]) -> str:
    """What holds a container up, naming it, its image and what the kubelet said (a missing Secret's
    name is in the kubelet's message)."""
    name = container.get("name")
    why, said = str(waiting["reason"]), str(waiting.get("message") or "").strip()
    again = _BACKOFF.match(said)
    if why == "ImagePullBackOff" and again and said[again.end() :]:
        why, said = again.group(1) or "ErrImagePull", said[again.end() :]
    if _STUCK[str(waiting["reason"])] == Reason.IMAGE_PULL_FAILED:
        image = container.get("image")
        head = f"{pod}: container {name} cannot pull its image" + (f" {image}" if image else "")
    else:
        head = f"{pod}: container {name} cannot be created"
    return clip(f"{head}: {why}: {said}" if said else f"{head}: {why}")


def _step_failed(pod: _Pod, end: Mapping[str, Any] | None, what: str, user_reason: str) -> PodReport | None:
    if end is None:
        return None
    code = _exit_code(end)
    if code == 0:
        return None
    if 1 <= code <= 127:
        text = _message(end) or f"{what} exited with code {code}"
        return pod.report(InstancePhase.FAILED, Outcome.USER_ERROR, reason=user_reason, message=text)
    return pod.fault(**_killed(pod.name, what, end, code))


def _terminated(container: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if not container:
        return None
    state = container.get("state") or {}
    end = state.get("terminated")
    return end if isinstance(end, Mapping) else None


def _running(container: Mapping[str, Any] | None) -> bool:
    return bool(container and (container.get("state") or {}).get("running") is not None)


def _waiting(container: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return ((container or {}).get("state") or {}).get("waiting") or {}


def _exit_code(end: Mapping[str, Any] | None) -> int:
    # A terminated state without a code (the kubelet lost it) counts as killed, not as success.
    return _int((end or {}).get("exitCode"), -1)


def _message(end: Mapping[str, Any] | None) -> str | None:
    text = str((end or {}).get("message") or "").strip()
    return clip(text) if text else None


def _killed(name: str, what: str, end: Mapping[str, Any], code: int) -> dict[str, Any]:
    term_reason = end.get("reason") or "Error"
    if term_reason == Reason.OOM_KILLED:  # the kubelet's word, and ours
        reason: str = Reason.OOM_KILLED
    else:
        reason = exit_code(code) if code >= 0 else Reason.CONTAINER_FAILED
    return {"reason": reason, "message": f"{name}: {what} was killed (exit code {code}, {term_reason})"}


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
