"""A local pod's status as the kubelet would write it: the API server's JSON pod form. Pure.

Local mode plays the node: it runs a rendered pod's containers as processes, and reports how they
stand as the pod object a cluster would hold (phase, container states with exit codes and termination
messages, a deletionTimestamp once deleted, reason DeadlineExceeded past activeDeadlineSeconds).
`ti.operator.status` then judges these records exactly as it judges a cluster's pods, so a laptop
and a cluster give every ending the same phase, reason and retry decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ti import contract

NODE_NAME = "localhost"
# The kubelet's own words for a pod killed at its activeDeadlineSeconds.
DEADLINE_EXCEEDED = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
# The kubelet's words for a container waiting on its pod's init container, and for how one ended.
POD_INITIALIZING = "PodInitializing"
EXITED_OK = "Completed"
EXITED_WITH_ERROR = "Error"
# What containerd reports for a container whose process could not be started.
START_ERROR = "StartError"
START_ERROR_EXIT_CODE = 128


@dataclass
class ContainerRun:
    """One container's life so far: not started, running (started), or ended (exit_code set)."""

    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    message: str | None = None
    reason: str | None = None  # the kubelet's terminated reason; derived from the exit code when None


def termination_message(written: str | None, log_tail: str, exit_code: int) -> str | None:
    """The kubelet's terminationMessagePolicy FallbackToLogsOnError: the file's text, else (on an
    error exit) the end of the container's log."""
    if written and written.strip():
        return written.strip()
    if exit_code != 0 and log_tail.strip():
        return log_tail.strip()
    return None


def container_status(name: str, run: ContainerRun | None) -> dict[str, Any]:
    """One entry of status.containerStatuses (or initContainerStatuses)."""
    if run is None or run.started is None:
        return {
            "name": name,
            "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": POD_INITIALIZING}},
        }
    if run.exit_code is None:
        return {
            "name": name,
            "ready": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": _time(run.started)}},
        }
    terminated: dict[str, Any] = {
        "exitCode": run.exit_code,
        "reason": run.reason or (EXITED_OK if run.exit_code == 0 else EXITED_WITH_ERROR),
        "startedAt": _time(run.started),
        "finishedAt": _time(run.finished or run.started),
    }
    if run.message:
        terminated["message"] = run.message
    return {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": terminated}}


def pod_phase(runs: Mapping[str, ContainerRun]) -> str:
    """The pod phase of restartPolicy Never: Pending until the init container succeeded, Running while
    a container runs, then Succeeded (every container exited 0) or Failed."""
    fetch = runs.get(contract.FETCH_CONTAINER)
    if fetch is None or fetch.exit_code is None:
        return "Pending"
    if fetch.exit_code != 0:
        return "Failed"
    ends = [runs.get(name) for name in (contract.MAIN_CONTAINER, contract.UPLOAD_CONTAINER)]
    if any(run is None or run.exit_code is None for run in ends):
        return "Running"
    return "Succeeded" if all(run is not None and run.exit_code == 0 for run in ends) else "Failed"


def pod_record(
    manifest: Mapping[str, Any],
    runs: Mapping[str, ContainerRun],
    *,
    created: datetime,
    started: datetime | None = None,
    deleted: datetime | None = None,
    deadline_exceeded: bool = False,
) -> dict[str, Any]:
    """The pod object for `manifest` whose containers stand as `runs` say (by container name)."""
    metadata = dict(manifest.get("metadata") or {})
    metadata["creationTimestamp"] = _time(created)
    if deleted is not None:
        metadata["deletionTimestamp"] = _time(deleted)
    status: dict[str, Any] = {
        "phase": pod_phase(runs),
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "initContainerStatuses": [
            container_status(contract.FETCH_CONTAINER, runs.get(contract.FETCH_CONTAINER))
        ],
        "containerStatuses": [
            container_status(name, runs.get(name))
            for name in (contract.MAIN_CONTAINER, contract.UPLOAD_CONTAINER)
        ],
    }
    if started is not None:
        status["startTime"] = _time(started)
    if deadline_exceeded:
        status.update(phase="Failed", reason=DEADLINE_EXCEEDED, message=DEADLINE_MESSAGE)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {**(manifest.get("spec") or {}), "nodeName": NODE_NAME},
        "status": status,
    }


def _time(when: datetime) -> str:
    return when.isoformat()
