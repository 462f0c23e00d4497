"""Helpers for tests that drive TFTrainingJobs on the real control plane: manifests, reads, waits,
and a watch that records every status a job went through (a phase held for milliseconds included).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import yaml

from tests.support.controlplane import ControlPlane

BUCKET = "cos://models-1250000000"
GROUP, VERSION, PLURAL = "training.ti.io", "v1alpha1", "tftrainingjobs"
LABEL_JOB = "training.ti.io/job-name"
LABEL_ATTEMPT = "training.ti.io/attempt"


def job_manifest(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "role": "trainer",
        "instanceType": "ML.GN8.3XLARGE112",
        "instanceCount": 1,
        "frameworkVersion": "2.0.0",
        "pyVersion": "py3",
        "entryPoint": "train.py",
        "sourceDir": f"{BUCKET}/src/sourcedir.tar.gz",
        "outputPath": f"{BUCKET}/out",
        "inputs": {"training": f"{BUCKET}/data"},
    }
    base.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TFTrainingJob",
        "metadata": {"name": name},
        "spec": base,
    }


def apply(plane: ControlPlane, ns: str, manifest: dict[str, Any]) -> None:
    plane.kubectl("create", "serviceaccount", "trainer", "-n", ns, check=False)
    plane.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest))


def job(plane: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(plane.kubectl("get", "tftj", name, "-n", ns, "-o", "json").stdout)
    return found


def job_exists(plane: ControlPlane, ns: str, name: str) -> bool:
    return plane.kubectl("get", "tftj", name, "-n", ns, check=False).returncode == 0


def patch_job(plane: ControlPlane, ns: str, name: str, patch: dict[str, Any], *extra: str) -> None:
    plane.kubectl("patch", "tftj", name, "-n", ns, "--type=merge", "-p", json.dumps(patch), *extra)


def pods(plane: ControlPlane, ns: str, name: str) -> list[dict[str, Any]]:
    out = plane.kubectl("get", "pods", "-n", ns, "-l", f"{LABEL_JOB}={name}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return sorted(items, key=lambda p: p["metadata"]["name"])


def attempt(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["labels"][LABEL_ATTEMPT])


def running_pods(
    plane: ControlPlane, ns: str, name: str, count: int, attempt_no: int | None = None
) -> Callable[[], list[dict[str, Any]] | None]:
    """A check for `eventually`: exactly `count` pods, all Running, none terminating (of one attempt)."""

    def check() -> list[dict[str, Any]] | None:
        found = pods(plane, ns, name)
        ok = (
            len(found) == count
            and all(p["status"].get("phase") == "Running" for p in found)
            and not any(p["metadata"].get("deletionTimestamp") for p in found)
            and (attempt_no is None or all(attempt(p) == attempt_no for p in found))
        )
        return found if ok else None

    return check


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last saw {last!r}")


def phase_is(plane: ControlPlane, ns: str, name: str, want: str) -> Callable[[], Any]:
    def check() -> Any:
        status = job(plane, ns, name).get("status") or {}
        return status if status.get("phase") == want else None

    return check


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def events(plane: ControlPlane, ns: str, name: str) -> list[dict[str, Any]]:
    """The Events recorded on the job, oldest first."""
    out = plane.kubectl(
        "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return sorted(items, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["creationTimestamp"]))


def event_reasons(plane: ControlPlane, ns: str, name: str) -> list[str]:
    return [e["reason"] for e in events(plane, ns, name)]


class StatusRecorder:
    """Watches one job from its creation and keeps every distinct status it had, in order.

    A phase such as Stopping may last less than a poll interval; a watch sees every write.
    """

    def __init__(self, plane: ControlPlane, ns: str, name: str) -> None:
        from kubernetes import client, watch

        self._api = client.CustomObjectsApi(plane.api_client())
        self._watch = watch.Watch()
        self.ns, self.name = ns, name
        self.statuses: list[dict[str, Any]] = []
        self.deleted = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusRecorder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        # The stream notices the stop at its next event or its server-side timeout; what it might
        # still add is harmless, so the test does not wait for it.
        self._stopped.set()
        self._watch.stop()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                for ev in self._watch.stream(
                    self._api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.ns,
                    PLURAL,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=5,
                ):
                    self._record(ev)
            except Exception:  # the plane going away at teardown, a dropped connection: watch again
                if self._stopped.wait(0.2):
                    return

    def _record(self, ev: dict[str, Any]) -> None:
        status = ev["object"].get("status") or {}
        with self._lock:
            if ev["type"] == "DELETED":
                self.deleted = True
            if status and (not self.statuses or self.statuses[-1] != status):
                self.statuses.append(status)

    @property
    def phases(self) -> list[str]:
        """Phases in the order they appeared, repeats collapsed."""
        with self._lock:
            out: list[str] = []
            for s in self.statuses:
                phase = s.get("phase")
                if phase and (not out or out[-1] != phase):
                    out.append(phase)
            return out
