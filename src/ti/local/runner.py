"""Local mode's node: rendered training pods run as plain processes, no cluster and no Docker.

The pods are the renderer's (`ti.operator.render.render(...).pods`), so local mode runs exactly the
commands and environment the cluster would. Per pod a fresh work directory stands in for the /opt/ml
volume; the fetch container runs first, then the main and upload containers together, as in a pod.
Images are ignored: this machine's Python runs the script. Like a kubelet, the node only runs pods
and reports them (`LocalPod.record()`, the API server's pod form); judging them is
`ti.operator.status`'s job, here as in a cluster.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ti import contract
from ti.local.podstatus import (
    START_ERROR,
    START_ERROR_EXIT_CODE,
    ContainerRun,
    pod_record,
    termination_message,
)
from ti.local.process import (
    OutputCallback,
    Process,
    container_command,
    container_env,
    container_spec,
    loopback_addresses,
    termination_log_path,
)
from ti.operator.pods import Outcome, read_pod
from ti.toolkit.layout import rebase
from ti.toolkit.report import read_message

# SIGTERM to SIGKILL for a deleted pod (a stop, a retry, a parameter server no longer needed).
STOP_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.1


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class InstanceResult:
    """How one instance (pod) ended, as `ti.operator.status.read_pod` reads its record."""

    name: str
    role: str
    index: int
    work_dir: Path
    exit_code: int
    outcome: Outcome
    reason: str | None = None
    fetch_exit_code: int | None = None
    main_exit_code: int | None = None
    upload_exit_code: int | None = None
    failure_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.outcome == Outcome.SUCCEEDED


class LocalPod:
    """One pod on this machine: its containers as processes, its status as the kubelet reports it."""

    def __init__(self, node: LocalNode, manifest: Mapping[str, Any], addresses: Mapping[str, str]) -> None:
        self.node = node
        self.manifest = manifest
        self.name = str((manifest.get("metadata") or {}).get("name") or "instance")
        self.root = node.work_dir / self.name
        labels = (manifest.get("metadata") or {}).get("labels") or {}
        self.role = str(labels.get(contract.LABEL_ROLE, contract.ROLE_WORKER))
        self.addresses = addresses
        self.created = _now()
        self.started: datetime | None = None
        self.deleted: datetime | None = None
        self.deadline_exceeded = False
        self.runs: dict[str, ContainerRun] = {}
        self.done = threading.Event()
        self._processes: dict[str, Process] = {}
        self._lock = threading.Lock()
        deadline = (manifest.get("spec") or {}).get("activeDeadlineSeconds")
        self._deadline = float(deadline) if deadline else None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"ti-local-{self.name}")

    def start(self) -> LocalPod:
        self._thread.start()
        return self

    def record(self) -> dict[str, Any]:
        """The pod object as the API server would hold it now."""
        with self._lock:
            runs = {name: ContainerRun(**vars(run)) for name, run in self.runs.items()}
            return pod_record(
                self.manifest,
                runs,
                created=self.created,
                started=self.started,
                deleted=self.deleted,
                deadline_exceeded=self.deadline_exceeded,
            )

    def delete(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """What deleting a pod does: SIGTERM every container, SIGKILL once the grace period is over."""
        with self._lock:
            if self.deleted is not None:
                return
            self.deleted = _now()
        self._end(grace_seconds)

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    # ---- the pod's life -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            shutil.rmtree(self.root, ignore_errors=True)  # a fresh emptyDir for every pod
            self.root.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self.started = _now()
            fetch = self._launch(contract.FETCH_CONTAINER)
            if self._wait(contract.FETCH_CONTAINER, fetch) != 0:
                return
            main = self._launch(contract.MAIN_CONTAINER)
            upload = self._launch(contract.UPLOAD_CONTAINER)
            main_code = self._wait(contract.MAIN_CONTAINER, main)
            exit_file = Path(rebase(contract.EXIT_CODE_FILE, str(self.root)))
            if main_code is not None and not exit_file.exists():
                # The launcher itself died (or never ran): tell the upload step, or it waits forever.
                exit_file.parent.mkdir(parents=True, exist_ok=True)
                exit_file.write_text(f"{main_code}\n")
            self._wait(contract.UPLOAD_CONTAINER, upload)
        finally:
            self.done.set()

    def _launch(self, name: str) -> Process | None:
        """Start one container; None when the pod is being deleted or its process cannot start."""
        with self._lock:
            if self.deleted is not None or self.deadline_exceeded:
                return None
            run = self.runs[name] = ContainerRun(started=_now())
            try:
                spec = container_spec(self.manifest, name)
                if spec is None:
                    raise ValueError(f"the pod has no {name!r} container")
                env = container_env(
                    self.manifest, spec, self.root, self.addresses, self.node.storage_env, self.node.base_env
                )
                env["PATH"] = f"{self.node.shims}{os.pathsep}{env.get('PATH', os.defpath)}"
                argv = container_command(spec, self.root, self.node.python)
                process = Process(argv, env, self.root, self.name, self.node.on_output)
            except (OSError, ValueError) as error:
                run.finished, run.exit_code, run.reason = _now(), START_ERROR_EXIT_CODE, START_ERROR
                run.message = f"local mode could not start container {name} of {self.name}: {error}"
                return None
            self._processes[name] = process
            return process

    def _wait(self, name: str, process: Process | None) -> int | None:
        """The container's exit code once it ended (None if it never started); enforces the deadline."""
        if process is None:
            run = self.runs.get(name)
            return run.exit_code if run is not None else None
        while process.poll() is None:
            if self._past_deadline():
                with self._lock:
                    self.deadline_exceeded = True
                self._end(STOP_GRACE_SECONDS)
            time.sleep(_POLL_SECONDS)
        code = process.wait()
        written = read_message(self._message_path(name))
        with self._lock:
            run = self.runs[name]
            run.finished, run.exit_code = _now(), code
            run.message = termination_message(written, process.log_tail(), code)
        return code

    def _past_deadline(self) -> bool:
        # The kubelet's activeDeadlineSeconds, counted from the pod's start.
        started = self.started
        if self._deadline is None or started is None or self.deadline_exceeded:
            return False
        return (_now() - started).total_seconds() > self._deadline

    def _message_path(self, name: str) -> Path:
        spec = container_spec(self.manifest, name) or {}
        path = str(spec.get("terminationMessagePath") or "")
        if path == contract.ML_ROOT or path.startswith(contract.ML_ROOT + "/"):
            return Path(rebase(path, str(self.root)))
        # The kubelet's own file (/dev/termination-log): here, the one TI_TERMINATION_LOG names.
        return termination_log_path(self.root, name)

    def _end(self, grace_seconds: float) -> None:
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            process.terminate()

        def kill_when_due() -> None:
            end = time.monotonic() + grace_seconds
            while time.monotonic() < end and any(p.poll() is None for p in processes):
                time.sleep(_POLL_SECONDS)
            for process in processes:
                process.kill()

        threading.Thread(target=kill_when_due, daemon=True).start()


class LocalNode:
    """This machine as the node that runs a job's pods: work directories, Python and storage settings."""

    def __init__(
        self,
        work_dir: Path,
        *,
        storage_env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
        python: str = sys.executable,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.storage_env = dict(storage_env or {})
        self.on_output = on_output or _print_line
        self.python = python
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.shims = self._python_shims()

    def _python_shims(self) -> Path:
        """`python3` and `python` that run this node's Python: the launcher finds them on PATH."""
        shims = self.work_dir / ".ti-bin"
        shims.mkdir(parents=True, exist_ok=True)
        for name in ("python3", "python"):
            shim = shims / name
            shim.write_text(f'#!/bin/sh\nexec {shlex.quote(self.python)} "$@"\n')
            shim.chmod(0o755)
        return shims

    def start(self, pods: Sequence[Mapping[str, Any]]) -> list[LocalPod]:
        """Start the pods of one attempt together; their TF_CONFIG hosts become free loopback ports."""
        addresses = loopback_addresses(pods)
        return [LocalPod(self, pod, addresses).start() for pod in pods]


def instance_result(pod: LocalPod) -> InstanceResult:
    """How `pod` ended, in `read_pod`'s words, with each container's exit code."""
    report = read_pod(pod.record())
    codes = {name: run.exit_code for name, run in pod.runs.items()}
    order = (contract.FETCH_CONTAINER, contract.MAIN_CONTAINER, contract.UPLOAD_CONTAINER)
    failed = [code for code in (codes.get(name) for name in order) if code]
    metrics: dict[str, float] = {}
    text = read_message(Path(rebase(contract.METRICS_FILE, str(pod.root))))
    if text:
        metrics = {k: float(v) for k, v in json.loads(text).items()}
    ended = report.outcome not in (Outcome.SUCCEEDED, Outcome.RUNNING)
    return InstanceResult(
        name=report.name,
        role=report.role,
        index=report.index,
        work_dir=pod.root,
        exit_code=failed[0] if failed else 0,
        outcome=report.outcome,
        reason=report.reason,
        fetch_exit_code=codes.get(contract.FETCH_CONTAINER),
        main_exit_code=codes.get(contract.MAIN_CONTAINER),
        upload_exit_code=codes.get(contract.UPLOAD_CONTAINER),
        failure_reason=report.message if ended else None,
        metrics=metrics,
    )


def _print_line(instance: str, line: str) -> None:
    print(f"[{instance}] {line}", flush=True)


def run_pods(
    pods: Sequence[Mapping[str, Any]],
    work_dir: Path,
    *,
    storage_env: Mapping[str, str] | None = None,
    on_output: OutputCallback | None = None,
    timeout: float | None = None,
    python: str = sys.executable,
) -> list[InstanceResult]:
    """Run rendered pods as local processes to their end; one result per pod, in the pods' order.

    Parameter servers are deleted once the workers ended, and every pod at `timeout`. `storage_env`
    holds the object-store settings (TENCENTCLOUD_*, TI_COS_ENDPOINT) that a Secret gives the toolkit
    containers in a cluster; the user's script never sees them. `on_output` receives (instance name,
    line) for every line any container prints (default: print it).
    """
    node = LocalNode(work_dir, storage_env=storage_env, on_output=on_output, python=python)
    local = node.start(pods)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not all(p.done.is_set() for p in local):
            if deadline is not None and time.monotonic() > deadline:
                for pod in local:
                    pod.delete()
            workers = [p for p in local if p.role != contract.ROLE_PS]
            if workers and all(p.done.is_set() for p in workers):
                for pod in local:
                    pod.delete()
            time.sleep(0.2)
    except BaseException:
        for pod in local:
            pod.delete(grace_seconds=0)
        raise
    return [instance_result(p) for p in local]
