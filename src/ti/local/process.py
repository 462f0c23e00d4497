"""A rendered pod's containers as this machine's processes: their environment, command and output.

/opt/ml becomes the pod's work directory, TF_CONFIG's hosts become free loopback ports, and the
object-store Secret reaches the toolkit containers only, as in a cluster.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ti import contract
from ti.toolkit.layout import rebase

OutputCallback = Callable[[str, str], None]
TOOLKIT_CONTAINERS = (contract.FETCH_CONTAINER, contract.UPLOAD_CONTAINER)
# Never handed to the user's script: in the cluster the Secret reaches the toolkit containers only.
_SECRET_VARS = (
    contract.TENCENTCLOUD_SECRETID,
    contract.TENCENTCLOUD_SECRETKEY,
    contract.TENCENTCLOUD_SESSIONTOKEN,
)
# What the kubelet keeps of a container's log for FallbackToLogsOnError: its last 80 lines, 2048 bytes.
TAIL_LINES = 80
TAIL_BYTES = 2048


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_addresses(pods: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Every `host:port` in the pods' TF_CONFIG clusters → a free `127.0.0.1:<port>`."""
    mapping: dict[str, str] = {}
    for pod in pods:
        for container in containers(pod):
            for entry in container.get("env") or []:
                if entry.get("name") != contract.TF_CONFIG or not entry.get("value"):
                    continue
                cluster = json.loads(entry["value"]).get("cluster", {})
                for addresses in cluster.values():
                    for address in addresses:
                        if address not in mapping:
                            mapping[address] = f"127.0.0.1:{free_port()}"
    return mapping


def containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod.get("spec", {})
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def container_spec(pod: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((c for c in containers(pod) if c.get("name") == name), None)


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
    env[contract.TERMINATION_LOG_ENV] = str(termination_log_path(root, name))
    env["HOSTNAME"] = str(pod.get("metadata", {}).get("name", "localhost"))
    return env


def termination_log_path(root: Path, container: str) -> Path:
    """Where a toolkit container writes its termination message (the kubelet's /dev/termination-log)."""
    return root / ".ti" / f"{container}.termination-log"


def container_command(container: Mapping[str, Any], root: Path, python: str) -> list[str]:
    """The container's command and args; `ti-toolkit` becomes this Python's `-m ti.toolkit`."""
    argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if not argv:
        raise ValueError(f"container {container.get('name')!r} has no command; local mode needs one")
    if argv[0] == "ti-toolkit":
        argv = [python, "-m", "ti.toolkit", *argv[1:]]
    return [rebase(a, str(root)) if a.startswith(contract.ML_ROOT) else a for a in argv]


class Process:
    """One container as a process group, its output streamed line by line (the last lines kept)."""

    def __init__(
        self, argv: list[str], env: Mapping[str, str], cwd: Path, prefix: str, on_output: OutputCallback
    ) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
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

    def _pump(self, stream: IO[bytes], prefix: str, on_output: OutputCallback) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.tail.append(line)
            on_output(prefix, line)
        stream.close()

    def poll(self) -> int | None:
        code = self.popen.poll()
        return None if code is None else exit_code(code)

    def wait(self) -> int:
        code = self.popen.wait()
        self._reader.join(timeout=5)
        return exit_code(code)

    def log_tail(self) -> str:
        """The end of the container's output, as the kubelet's FallbackToLogsOnError keeps it."""
        text = "\n".join(self.tail)
        return text[-TAIL_BYTES:]

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        # The whole group: the launcher's child outlives a killed launcher otherwise.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


def exit_code(code: int) -> int:
    """A container's exit code: Popen reports death by signal N as -N, containers as 128 + N."""
    return 128 - code if code < 0 else code
