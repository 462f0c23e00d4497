"""Local mode: run rendered training pods as plain processes, no cluster and no Docker.

The pods are the renderer's (`ti.operator.render.render(...).pods`), so local mode runs exactly the commands
and environment the cluster would. Per pod a work directory stands in for the /opt/ml volume; the
fetch container runs first, then the main and upload containers together, as in a pod. Images are
ignored: this machine's Python runs the script.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ti import contract
from ti.toolkit.layout import rebase
from ti.toolkit.report import read_message

OutputCallback = Callable[[str, str], None]
TOOLKIT_CONTAINERS = (contract.FETCH_CONTAINER, contract.UPLOAD_CONTAINER)
# Never handed to the user's script: in the cluster the Secret reaches the toolkit containers only.
_SECRET_VARS = (
    contract.TENCENTCLOUD_SECRETID,
    contract.TENCENTCLOUD_SECRETKEY,
    contract.TENCENTCLOUD_SESSIONTOKEN,
)


@dataclass
class InstanceResult:
    """How one instance (pod) ended."""

    name: str
    role: str
    index: int
    work_dir: Path
    exit_code: int
    fetch_exit_code: int | None = None
    main_exit_code: int | None = None
    upload_exit_code: int | None = None
    failure_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_addresses(pods: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Every `host:port` in the pods' TF_CONFIG clusters → a free `127.0.0.1:<port>`."""
    mapping: dict[str, str] = {}
    for pod in pods:
        for container in _containers(pod):
            for entry in container.get("env") or []:
                if entry.get("name") != contract.TF_CONFIG or not entry.get("value"):
                    continue
                cluster = json.loads(entry["value"]).get("cluster", {})
                for addresses in cluster.values():
                    for address in addresses:
                        if address not in mapping:
                            mapping[address] = f"127.0.0.1:{free_port()}"
    return mapping


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod.get("spec", {})
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _container(pod: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((c for c in _containers(pod) if c.get("name") == name), None)


def _rewrite_tf_config(value: str, addresses: Mapping[str, str]) -> str:
    config = json.loads(value)
    cluster = config.get("cluster", {})
    config["cluster"] = {job: [addresses.get(a, a) for a in hosts] for job, hosts in cluster.items()}
    return json.dumps(config)


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    root: Path,
    addresses: Mapping[str, str],
    storage_env: Mapping[str, str],
    base_env: Mapping[str, str],
) -> dict[str, str]:
    """The process environment of one container, with /opt/ml moved to `root`."""
    name = str(container.get("name"))
    env = {k: v for k, v in base_env.items() if k not in _SECRET_VARS}
    if name in TOOLKIT_CONTAINERS:
        env.update(storage_env)
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        elif entry["name"] in storage_env and name in TOOLKIT_CONTAINERS:
            env[entry["name"]] = storage_env[entry["name"]]  # a secretKeyRef, answered locally
    for key, value in list(env.items()):
        if key == contract.TF_CONFIG:
            env[key] = _rewrite_tf_config(value, addresses)
        elif value.startswith(contract.ML_ROOT):
            env[key] = rebase(value, str(root))
    env[contract.ML_ROOT_ENV] = str(root)
    env[contract.TERMINATION_LOG_ENV] = str(root / ".ti" / f"{name}.termination-log")
    env["HOSTNAME"] = str(pod.get("metadata", {}).get("name", "localhost"))
    return env


def container_command(container: Mapping[str, Any], root: Path, python: str) -> list[str]:
    """The container's command and args; `ti-toolkit` becomes this Python's `-m ti.toolkit`."""
    argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if not argv:
        raise ValueError(f"container {container.get('name')!r} has no command; local mode needs one")
    if argv[0] == "ti-toolkit":
        argv = [python, "-m", "ti.toolkit", *argv[1:]]
    return [rebase(a, str(root)) if a.startswith(contract.ML_ROOT) else a for a in argv]


class _Process:
    """One container as a process group, its output streamed line by line."""

    def __init__(
        self, argv: list[str], env: Mapping[str, str], cwd: Path, prefix: str, on_output: OutputCallback
    ) -> None:
        self.popen = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.popen.stdout is not None
        self._reader = threading.Thread(
            target=self._pump, args=(self.popen.stdout, prefix, on_output), daemon=True
        )
        self._reader.start()

    @staticmethod
    def _pump(stream: IO[bytes], prefix: str, on_output: OutputCallback) -> None:
        for raw in iter(stream.readline, b""):
            on_output(prefix, raw.decode("utf-8", errors="replace").rstrip("\n"))
        stream.close()

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self) -> int:
        code = self.popen.wait()
        self._reader.join(timeout=5)
        return _exit_code(code)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        # The whole group: the launcher's child outlives a killed launcher otherwise.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


class _Stopped(Exception):
    pass


def _exit_code(code: int) -> int:
    # Popen reports death by signal N as -N; containers report 128 + N.
    return 128 - code if code < 0 else code


@dataclass
class _Pod:
    manifest: Mapping[str, Any]
    root: Path
    name: str
    role: str
    index: int
    result: InstanceResult | None = None
    main: _Process | None = None
    upload: _Process | None = None
    done: threading.Event = field(default_factory=threading.Event)


class LocalRunner:
    """Runs a set of pods together; `run()` returns when every instance has ended."""

    def __init__(
        self,
        pods: Sequence[Mapping[str, Any]],
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
        self.addresses = loopback_addresses(pods)
        self.pods = [self._pod(p) for p in pods]
        self._lock = threading.Lock()
        self._processes: list[_Process] = []
        self._stopping = False
        self._ps_stopped = False
        self.shims = self._python_shims()

    def _pod(self, manifest: Mapping[str, Any]) -> _Pod:
        meta = manifest.get("metadata", {})
        labels = meta.get("labels") or {}
        name = str(meta.get("name") or "instance")
        root = self.work_dir / name
        return _Pod(
            manifest,
            root,
            name,
            str(labels.get(contract.LABEL_ROLE, contract.ROLE_WORKER)),
            int(labels.get(contract.LABEL_INDEX, 0)),
        )

    def _python_shims(self) -> Path:
        """`python3` and `python` that run this runner's Python: the launcher finds them on PATH."""
        shims = self.work_dir / ".ti-bin"
        shims.mkdir(parents=True, exist_ok=True)
        for name in ("python3", "python"):
            shim = shims / name
            shim.write_text(f'#!/bin/sh\nexec {shlex.quote(self.python)} "$@"\n')
            shim.chmod(0o755)
        return shims

    def _start(self, pod: _Pod, container_name: str) -> _Process:
        container = _container(pod.manifest, container_name)
        if container is None:
            raise ValueError(f"pod {pod.name} has no {container_name!r} container")
        env = container_env(
            pod.manifest, container, pod.root, self.addresses, self.storage_env, self.base_env
        )
        env["PATH"] = f"{self.shims}{os.pathsep}{env.get('PATH', os.defpath)}"
        argv = container_command(container, pod.root, self.python)
        with self._lock:
            if self._stopping:
                raise _Stopped()
            process = _Process(argv, env, pod.root, pod.name, self.on_output)
            self._processes.append(process)
        return process

    def _run_pod(self, pod: _Pod) -> None:
        try:
            pod.root.mkdir(parents=True, exist_ok=True)
            fetch_code = self._start(pod, contract.FETCH_CONTAINER).wait()
            if fetch_code != 0:
                reason = read_message(pod.root / ".ti" / f"{contract.FETCH_CONTAINER}.termination-log")
                pod.result = self._result(pod, fetch_code, fetch_exit_code=fetch_code, failure_reason=reason)
                return
            pod.main = self._start(pod, contract.MAIN_CONTAINER)
            pod.upload = self._start(pod, contract.UPLOAD_CONTAINER)
            main_code = pod.main.wait()
            exit_file = Path(rebase(contract.EXIT_CODE_FILE, str(pod.root)))
            if not exit_file.exists():
                # The launcher itself died (or never ran): tell the upload step, or it waits forever.
                exit_file.parent.mkdir(parents=True, exist_ok=True)
                exit_file.write_text(f"{main_code}\n")
            upload_code = pod.upload.wait()
            pod.result = self._finished(pod, main_code, upload_code)
        except _Stopped:
            pod.result = self._result(pod, 143, failure_reason=f"{pod.name} was stopped before it started")
        except Exception as error:  # a broken manifest or a missing interpreter: report, don't hang
            pod.result = self._result(pod, 1, failure_reason=f"local mode could not run {pod.name}: {error}")
        finally:
            pod.done.set()

    def _finished(self, pod: _Pod, main_code: int, upload_code: int) -> InstanceResult:
        local = pod.root
        metrics: dict[str, float] = {}
        text = read_message(Path(rebase(contract.METRICS_FILE, str(local))))
        if text:
            metrics = {k: float(v) for k, v in json.loads(text).items()}
        if main_code != 0:
            reason = read_message(Path(rebase(contract.FAILURE_FILE, str(local))))
            code = main_code
        elif upload_code != 0:
            reason = read_message(Path(rebase(contract.UPLOAD_FAILURE_FILE, str(local)))) or read_message(
                local / ".ti" / f"{contract.UPLOAD_CONTAINER}.termination-log"
            )
            code = upload_code
        else:
            reason, code = None, 0
        return self._result(
            pod,
            code,
            fetch_exit_code=0,
            main_exit_code=main_code,
            upload_exit_code=upload_code,
            failure_reason=reason,
            metrics=metrics,
        )

    def _result(self, pod: _Pod, code: int, **more: Any) -> InstanceResult:
        return InstanceResult(
            name=pod.name, role=pod.role, index=pod.index, work_dir=pod.root, exit_code=code, **more
        )

    def run(self, timeout: float | None = None) -> list[InstanceResult]:
        """Run every pod; stop parameter servers once the workers are done; kill all at `timeout`."""
        threads = [threading.Thread(target=self._run_pod, args=(p,), daemon=True) for p in self.pods]
        for thread in threads:
            thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not all(p.done.is_set() for p in self.pods):
                if deadline is not None and time.monotonic() > deadline:
                    self.stop()
                    break
                workers = [p for p in self.pods if p.role != contract.ROLE_PS]
                if workers and all(p.done.is_set() for p in workers):
                    self._stop_ps()
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        for thread in threads:
            thread.join(timeout=30)
        return [p.result or self._result(p, 137, failure_reason="did not finish") for p in self.pods]

    def _stop_ps(self) -> None:
        if self._ps_stopped:
            return
        self._ps_stopped = True
        for pod in self.pods:
            if pod.role == contract.ROLE_PS and pod.main is not None:
                pod.main.terminate()

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM every container (the upload steps still store logs), SIGKILL after the grace."""
        with self._lock:
            self._stopping = True
            processes = list(self._processes)
        for process in processes:
            process.terminate()
        end = time.monotonic() + grace_seconds
        while time.monotonic() < end and any(p.poll() is None for p in processes):
            time.sleep(0.1)
        for process in processes:
            process.kill()


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
    """Run rendered pods as local processes and return one result per pod, in the pods' order.

    `storage_env` holds the object-store settings (TENCENTCLOUD_*, TI_COS_ENDPOINT) that a Secret
    gives the toolkit containers in a cluster; the user's script never sees them. `on_output`
    receives (instance name, line) for every line any container prints (default: print it).
    """
    runner = LocalRunner(pods, work_dir, storage_env=storage_env, on_output=on_output, python=python)
    return runner.run(timeout=timeout)
