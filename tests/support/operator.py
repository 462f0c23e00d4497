"""The operator as it runs in a cluster: `kopf run operator/handlers.py` in a process of its own, so a
test can SIGKILL it, plus helpers that play the kubelet on pods kwok would otherwise run.

Fixtures: `crd` (session: the generated CRD installed and Established), `start_operator` (a factory that
starts the operator for the test's namespace and stops it after the test), and `kubelet` (drives pod status).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.controlplane import REPO, ControlPlane, _die_with_parent

CRD_FILE = REPO / "crds" / "tftrainingjobs.training.ti.io.yaml"
KOPF = Path(sys.executable).parent / "kopf"
# kwok leaves pods with this annotation alone, so the test's status patches stick.
KWOK_HANDS_OFF = {"kwok.x-k8s.io/status": "custom"}


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> Path:
    control_plane.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    # Not `kubectl wait`: right after the apply the CRD may have no status.conditions at all, which
    # kubectl wait reports as an error instead of waiting.
    deadline = time.monotonic() + 60
    while True:
        established = control_plane.kubectl(
            "get",
            "crd/tftrainingjobs.training.ti.io",
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Established")].status}',
            check=False,
        ).stdout
        if established == "True":
            return CRD_FILE
        if time.monotonic() > deadline:
            raise AssertionError("the TFTrainingJob CRD did not become Established within 60s")
        time.sleep(0.2)


@dataclass
class OperatorProcess:
    namespace: str
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                str(KOPF),
                "run",
                "--standalone",
                "--namespace",
                self.namespace,
                str(REPO / "operator" / "handlers.py"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=REPO,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last write, as a crashed or OOM-killed pod."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def assert_logs_clean(folder: Path) -> None:
    """No operator log of a test (`operator-*.log` in its tmp_path) has a traceback."""
    for log in sorted(folder.glob("operator-*.log")):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, (
            f"{log.name} has a traceback:\n{text[text.index('Traceback') - 2000 :]}"
        )


@pytest.fixture
def operator_logs_stay_clean(tmp_path: Path) -> Iterator[None]:
    """Whatever a scenario does, the operator never fails a reconcile with a traceback. A module opts in
    with `pytest.mark.usefixtures("operator_logs_stay_clean")`."""
    yield
    assert_logs_clean(tmp_path)


@pytest.fixture
def start_operator(
    control_plane: ControlPlane, crd: Path, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start the operator watching the test's namespace; `operator(env={...})` overrides settings."""
    started: list[OperatorProcess] = []

    def start(kubeconfig: Path | None = None, **env: str) -> OperatorProcess:
        full = {
            **control_plane.env,
            "TI_OPERATOR_METRICS_PORT": "0",
            "TI_STOP_GRACE_SECONDS": "1",
            **env,
        }
        if kubeconfig is not None:
            full["KUBECONFIG"] = str(kubeconfig)
        op = OperatorProcess(namespace, tmp_path / f"operator-{len(started)}.log", full).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    if any(not op.log.exists() for op in started):
        return
    # Keep what the operator said next to the test's failure output.
    for op in started:
        sys.stderr.write(f"\n--- operator log ({op.log}), last lines:\n{op.tail()}\n")


class Kubelet:
    """Plays the kubelet on kwok's fake nodes: moves a pod's containers through their states."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace

    def pod(self, name: str) -> dict[str, Any]:
        out = self.plane.kubectl("get", "pod", name, "-n", self.namespace, "-o", "json").stdout
        pod: dict[str, Any] = json.loads(out)
        return pod

    def _patch(self, name: str, status: dict[str, Any]) -> None:
        self.hold(name)
        self.plane.kubectl(
            "patch",
            "pod",
            name,
            "-n",
            self.namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )

    def finish(
        self,
        name: str,
        exit_code: int = 0,
        message: str | None = None,
        reason: str | None = None,
        upload_exit_code: int | None = None,
        upload_message: str | None = None,
    ) -> None:
        """The main container exits with `exit_code`; the upload step follows with its own code."""
        status = finished_status(self.pod(name), exit_code, message, reason, upload_exit_code, upload_message)
        self._patch(name, status)

    def hold(self, name: str) -> None:
        """Take a pod over from kwok: it keeps running, even once deleted, until the test says otherwise
        (a process that takes its SIGTERM grace period to upload, say)."""
        self.plane.kubectl(
            "annotate",
            "pod",
            name,
            "-n",
            self.namespace,
            "--overwrite",
            *[f"{k}={v}" for k, v in KWOK_HANDS_OFF.items()],
        )

    def remove(self, name: str) -> None:
        """A deleted pod's containers have ended: the kubelet removes the object for good."""
        self.plane.kubectl(
            "delete", "pod", name, "-n", self.namespace, "--grace-period=0", "--force", "--wait=false"
        )

    def evict(self, name: str) -> None:
        """The node's kubelet evicts the pod (disk pressure, say): a platform fault."""
        self._patch(
            name,
            {
                "phase": "Failed",
                "reason": "Evicted",
                "message": "The node was low on resource: ephemeral-storage.",
            },
        )


def finished_status(
    pod: dict[str, Any],
    exit_code: int = 0,
    message: str | None = None,
    reason: str | None = None,
    upload_exit_code: int | None = None,
    upload_message: str | None = None,
) -> dict[str, Any]:
    """The status a kubelet writes once `pod`'s main container exited and the upload step after it."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    upload_code = exit_code if upload_exit_code is None else upload_exit_code

    def terminated(code: int, msg: str | None, why: str | None) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exitCode": code,
            "reason": why or ("Completed" if code == 0 else "Error"),
            "startedAt": now,
            "finishedAt": now,
        }
        if msg:
            state["message"] = msg
        return {"terminated": state}

    images = {
        c["name"]: c["image"] for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    }

    def container(name: str, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "image": images[name],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": state,
        }

    return {
        "phase": "Succeeded" if exit_code == 0 and upload_code == 0 else "Failed",
        "initContainerStatuses": [container("fetch", terminated(0, None, None))],
        "containerStatuses": [
            container("tensorflow", terminated(exit_code, message, reason)),
            container("upload", terminated(upload_code, upload_message, None)),
        ],
    }


@pytest.fixture
def kubelet(control_plane: ControlPlane, namespace: str) -> Kubelet:
    return Kubelet(control_plane, namespace)
