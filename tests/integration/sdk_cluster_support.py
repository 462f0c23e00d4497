"""What the SDK's cluster tests need beside the control plane: the operator, a kubelet's hand on pod
status, and kwok serving pod logs from files (its Logs resource) through the real pods/log endpoint."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.support.controlplane import ControlPlane
from tests.support.operator import KWOK_HANDS_OFF
from ti import contract


def enable_kwok_logs(plane: ControlPlane) -> None:
    """The plane's kwok serves a pod's log from the file its Logs object names (--enable-crds=Logs)."""
    assert "--enable-crds=Logs" in plane.components["kwok"].argv, "the control plane's kwok must serve Logs"
    assert plane.kubectl("get", "crd", "logs.kwok.x-k8s.io", check=False).returncode == 0


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container(name: str, state: dict[str, Any], restarts: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "image": "img",
        "imageID": "",
        "ready": "running" in state,
        "restartCount": restarts,
        "state": state,
    }


def _terminated(code: int, message: str = "") -> dict[str, Any]:
    end: dict[str, Any] = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": now(),
        "finishedAt": now(),
    }
    if message:
        end["message"] = message
    return {"terminated": end}


class Kubelet:
    """Plays the kubelet for a job's pods: patches their status and writes their logs (served by kwok)."""

    def __init__(self, plane: ControlPlane, namespace: str, logdir: Path) -> None:
        self.plane = plane
        self.namespace = namespace
        self.logdir = logdir
        self.files: dict[str, Path] = {}  # pod uid -> its log file

    def pods(self, job: str) -> list[dict[str, Any]]:
        out = self.plane.kubectl(
            "get", "pods", "-n", self.namespace, "-l", f"{contract.LABEL_JOB}={job}", "-o", "json"
        ).stdout
        return sorted(json.loads(out)["items"], key=lambda p: p["metadata"]["name"])

    def wait_pods(self, job: str, count: int, attempt: int = 0, timeout: float = 60) -> list[dict[str, Any]]:
        """The job's `count` pods of `attempt`, once kwok has placed them (podIP set)."""
        deadline = time.monotonic() + timeout
        while True:
            pods = [
                p
                for p in self.pods(job)
                if p["metadata"]["labels"].get(contract.LABEL_ATTEMPT) == str(attempt)
                and not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("podIP")
            ]
            if len(pods) == count:
                return pods
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{count} pods of attempt {attempt} of {job} never ran: {self.pods(job)}"
                )
            time.sleep(0.3)

    def _patch(self, pod: dict[str, Any], status: dict[str, Any], *, hands_off: bool = False) -> None:
        if hands_off:
            # An ended pod: kwok's own stages would otherwise write Running back over it. (A running pod
            # stays kwok's, which also finalizes its graceful deletion, as a kubelet does.)
            self.plane.kubectl(
                "annotate", "pod", pod["metadata"]["name"], "-n", self.namespace, "--overwrite",
                *[f"{k}={v}" for k, v in KWOK_HANDS_OFF.items()],
            )  # fmt: skip
        self.plane.kubectl(
            "patch", "pod", pod["metadata"]["name"], "-n", self.namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}),
        )  # fmt: skip

    def _fetched(self) -> list[dict[str, Any]]:
        return [_container(contract.FETCH_CONTAINER, _terminated(0))]

    def train(self, pod: dict[str, Any]) -> None:
        """Downloads done; the script runs."""
        running = {"running": {"startedAt": now()}}
        self._patch(
            pod,
            {
                "phase": "Running",
                "startTime": now(),
                "initContainerStatuses": self._fetched(),
                "containerStatuses": [
                    _container(contract.MAIN_CONTAINER, running),
                    _container(contract.UPLOAD_CONTAINER, running),
                ],
            },
        )

    def end(self, pod: dict[str, Any], code: int, message: str = "", result: str = "") -> None:
        """The script exited with `code` (its termination message `message`); the upload step finished."""
        self._patch(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "initContainerStatuses": self._fetched(),
                "containerStatuses": [
                    _container(contract.MAIN_CONTAINER, _terminated(code, message)),
                    _container(contract.UPLOAD_CONTAINER, _terminated(0, result)),
                ],
            },
            hands_off=True,
        )

    def log(self, pod: dict[str, Any], *lines: str) -> None:
        """Append lines to the pod's log, in the CRI format kwok reads, and point kwok at the file."""
        uid, name = pod["metadata"]["uid"], pod["metadata"]["name"]
        path = self.files.get(uid)
        if path is None:
            path = self.files[uid] = self.logdir / f"{name}-{uid}.log"
            path.touch()
            logs = {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "Logs",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {
                    "logs": [{"containers": [contract.MAIN_CONTAINER], "logsFile": str(path), "follow": True}]
                },
            }
            self.plane.kubectl("apply", "-f", "-", input=json.dumps(logs))
            self.wait_log_served(pod)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with path.open("a") as f:
            for line in lines:
                f.write(f"{stamp} stdout F {line}\n")

    def forget_logs(self, *pods: dict[str, Any]) -> None:
        """kwok finds a pod's log by the pod's name: before a restart recreates pods of the same names,
        drop the old attempt's Logs objects, so the new pods start with empty logs as real ones do."""
        for pod in pods:
            self.plane.kubectl(
                "delete", "logs.kwok.x-k8s.io", pod["metadata"]["name"], "-n", self.namespace, "--wait=false"
            )

    def wait_log_served(self, pod: dict[str, Any], timeout: float = 20) -> None:
        """Until kwok serves this pod's log (it learns of Logs objects by watching them)."""
        wait_for(
            lambda: (
                self.plane.kubectl(
                    "logs",
                    pod["metadata"]["name"],
                    "-n",
                    self.namespace,
                    "-c",
                    contract.MAIN_CONTAINER,
                    check=False,
                ).returncode
                == 0
            ),
            f"kwok to serve the log of {pod['metadata']['name']}",
            timeout,
        )


def wait_for(predicate: Any, what: Any, timeout: float = 60, interval: float = 0.3) -> Any:
    """Poll `predicate` until it is true; `what` (or what it returns, if callable) names the wait."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what() if callable(what) else what}"
            )
        time.sleep(interval)
