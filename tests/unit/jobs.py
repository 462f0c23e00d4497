"""Builders of TFTrainingJob bodies and pod observations shared by the unit tests."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

from ti import contract
from ti.api import TFTrainingJob

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def ts(seconds: float = 0) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(seconds: float = 0) -> datetime:
    return T0 + timedelta(seconds=seconds)


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "training.ti.io/v1alpha1",
        "kind": "TFTrainingJob",
        "metadata": {"name": "mnist", "namespace": "team-a", "uid": "uid-1", "generation": 1},
        "spec": {
            "role": "trainer",
            "instanceType": "TI.S.LARGE.POST",
            "frameworkVersion": "2.16",
            "entryPoint": "train.py",
            "sourceDir": "cos://code-1250000000/mnist/sourcedir.tar.gz",
            "hyperparameters": {"epochs": "3", "batch_size": "64"},
            "inputs": {
                "train": "cos://data-1250000000/mnist/train",
                "test": "cos://data-1250000000/mnist/test",
            },
            "outputPath": "cos://out-1250000000/models",
        },
    }
    base["spec"].update(spec)
    return base


def job(status: dict[str, Any] | None = None, **spec: Any) -> TFTrainingJob:
    b = body(**spec)
    if status is not None:
        b["status"] = copy.deepcopy(status)
    return TFTrainingJob.from_body(b)


def pod(
    job_name: str = "mnist",
    role: str = "worker",
    index: int = 0,
    attempt: int = 0,
    *,
    phase: str = "Pending",
    created: float = 0,
    started: float | None = None,
    node: str | None = None,
    fetch: dict[str, Any] | None = None,
    main: dict[str, Any] | None = None,
    upload: dict[str, Any] | None = None,
    reason: str | None = None,
    message: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    """A pod as the API server returns it; container states are {"running": {}} style dicts."""
    name = contract.instance_name(job_name, role, index)
    p: dict[str, Any] = {
        "metadata": {
            "name": name,
            "creationTimestamp": ts(created),
            "labels": {
                contract.LABEL_JOB: job_name,
                contract.LABEL_ROLE: role,
                contract.LABEL_INDEX: str(index),
                contract.LABEL_ATTEMPT: str(attempt),
            },
        },
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase},
    }
    if deleting:
        p["metadata"]["deletionTimestamp"] = ts(created + 1)
    st = p["status"]
    if started is not None:
        st["startTime"] = ts(started)
    if reason:
        st["reason"] = reason
    if message:
        st["message"] = message
    if conditions is not None:
        st["conditions"] = conditions
    elif node:
        st["conditions"] = [{"type": "PodScheduled", "status": "True"}]
    if fetch is not None:
        st["initContainerStatuses"] = [{"name": contract.FETCH_CONTAINER, "state": fetch}]
    statuses = []
    if main is not None:
        statuses.append({"name": contract.MAIN_CONTAINER, "state": main})
    if upload is not None:
        statuses.append({"name": contract.UPLOAD_CONTAINER, "state": upload})
    if statuses:
        st["containerStatuses"] = statuses
    return p


RUNNING: dict[str, Any] = {"running": {"startedAt": ts(10)}}
WAITING: dict[str, Any] = {"waiting": {"reason": "PodInitializing"}}


def done(code: int = 0, message: str | None = None, reason: str | None = None, at_s: float = 100) -> dict:
    term: dict[str, Any] = {"exitCode": code, "finishedAt": ts(at_s)}
    term["reason"] = reason or ("Completed" if code == 0 else "Error")
    if message is not None:
        term["message"] = message
    return {"terminated": term}
