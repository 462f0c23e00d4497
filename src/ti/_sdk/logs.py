"""Stream every instance's log, each line prefixed by its instance, following pods and restarts.

No line is lost or printed twice: for every pod (uid) and container attempt (restartCount) we count
the complete lines printed. A reconnect reads the log from its start and skips that many; when a
container ends, a last non-following read prints whatever the following read had not delivered yet;
when a container restarts in place, the previous attempt's remainder is read with `previous=true`.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from ti import contract
from ti.session import LogStream, Session, SessionError

TAIL_LINES = 20


class LogPrinter:
    """Writes `[instance] line` to `out`, a whole line at a time, and keeps each instance's last lines."""

    def __init__(self, out: TextIO | None = None, tail: int = TAIL_LINES, *, echo: bool = True) -> None:
        self.out = out
        self.echo = echo
        self._lock = threading.Lock()
        self._tails: dict[str, collections.deque[str]] = {}
        self._tail = tail

    def line(self, instance: str, text: str) -> None:
        with self._lock:
            self._tails.setdefault(instance, collections.deque(maxlen=self._tail)).append(text)
            if not self.echo:
                return
            out = self.out or sys.stdout
            out.write(f"[{instance}] {text}\n")
            out.flush()

    def note(self, text: str) -> None:
        if not self.echo:
            return
        with self._lock:
            out = self.out or sys.stdout
            out.write(f"{text}\n")
            out.flush()

    def tail(self) -> dict[str, list[str]]:
        """The last lines printed of each instance."""
        with self._lock:
            return {name: list(lines) for name, lines in sorted(self._tails.items())}


def instance_of(pod: dict[str, Any]) -> str:
    """`worker-0`, `ps-1`: the instance a pod runs, from its labels (or its name)."""
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    role, index = labels.get(contract.LABEL_ROLE), labels.get(contract.LABEL_INDEX)
    if role and index is not None:
        return f"{role}-{index}"
    return str(meta.get("name", "?"))


def matches(pod: dict[str, Any], wanted: str | None) -> bool:
    """Whether `pod` is the instance asked for: `worker-0`, `0` (worker 0), or the pod's name."""
    if wanted is None:
        return True
    name = instance_of(pod)
    return wanted in (name, pod.get("metadata", {}).get("name")) or (
        wanted.isdigit() and name == f"{contract.ROLE_WORKER}-{wanted}"
    )


def container_status(pod: dict[str, Any], container: str) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return dict(status)
    return {}


def started(status: dict[str, Any]) -> bool:
    state = status.get("state") or {}
    return "running" in state or "terminated" in state or bool(status.get("restartCount"))


def terminated(pod: dict[str, Any], status: dict[str, Any]) -> bool:
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return True
    return "terminated" in (status.get("state") or {})


class _Follower(threading.Thread):
    """Follows one pod's container through its attempts until it ends, is deleted, or we finish."""

    def __init__(self, session: Session, pod: dict[str, Any], printer: LogPrinter, container: str) -> None:
        super().__init__(daemon=True, name=f"ti-logs-{pod['metadata']['name']}")
        self.session = session
        self.pod_name = str(pod["metadata"]["name"])
        self.instance = instance_of(pod)
        self.printer = printer
        self.container = container
        self._pod = pod
        self._deleted = False
        self._finishing = False
        self._cond = threading.Condition()
        self._stream: LogStream | None = None
        self._printed: dict[int, int] = {}

    # called from the pod watcher ------------------------------------------------------------------
    def update(self, pod: dict[str, Any] | None) -> None:
        with self._cond:
            if pod is None:
                self._deleted = True
            else:
                self._pod = pod
            self._cond.notify_all()
            self._close_if_over()

    def finish(self) -> None:
        with self._cond:
            self._finishing = True
            self._cond.notify_all()
            if self._stream is not None:
                self._stream.close()

    def _close_if_over(self) -> None:
        # Called with the lock held: a following read of a container that has ended (or restarted)
        # never ends by itself on every kubelet; the final read collects what it had not delivered.
        if self._stream is None:
            return
        status = container_status(self._pod, self.container)
        if (
            self._deleted
            or self._finishing
            or terminated(self._pod, status)
            or int(status.get("restartCount") or 0) > self._following_attempt
        ):
            self._stream.close()

    _following_attempt = 0

    # the thread -------------------------------------------------------------------------------------
    def run(self) -> None:
        attempt: int | None = None
        while True:
            with self._cond:
                while not self._deleted and not self._finishing:
                    if started(container_status(self._pod, self.container)):
                        break
                    self._cond.wait(1.0)
                pod, deleted, finishing = self._pod, self._deleted, self._finishing
            status = container_status(pod, self.container)
            if not started(status):
                return
            count = int(status.get("restartCount") or 0)
            if attempt is None:
                attempt = count
            if count > attempt:
                self._read(attempt, follow=False, previous=True)
                attempt = count
                self.printer.note(f"[{self.instance}] --- restarted (attempt {count + 1}) ---")
            follow = not (deleted or finishing or terminated(pod, status))
            try:
                # A following read of an empty log answers only once the first line is written, and
                # cannot be interrupted before: poll until the log has begun.
                if follow and not self._printed.get(attempt) and not self._read(attempt, follow=False):
                    self._pause(1.0)
                    continue
                new = self._read(attempt, follow=follow)
            except SessionError:
                if deleted or finishing:
                    return
                self._pause(1.0)
                continue
            if not follow:
                return
            if new == 0:
                self._pause(0.5)  # a dropped stream or an exited container not yet in the pod's status

    def _pause(self, seconds: float) -> None:
        with self._cond:
            if not self._deleted and not self._finishing:
                self._cond.wait(seconds)

    def _read(self, attempt: int, *, follow: bool, previous: bool = False) -> int:
        """Print the lines of `attempt` not printed yet; return how many were printed."""
        try:
            stream = self.session.pod_log(self.pod_name, self.container, follow=follow, previous=previous)
        except SessionError:
            if previous:
                return 0
            raise
        if follow:
            with self._cond:
                self._stream = stream
                self._following_attempt = attempt
                self._close_if_over()
        skip = self._printed.get(attempt, 0)
        seen = printed = 0
        pending = b""
        try:
            for chunk in stream.chunks():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    seen += 1
                    if seen > skip:
                        self._emit(raw)
                        self._printed[attempt] = seen
                        printed += 1
        finally:
            if follow:
                with self._cond:
                    self._stream = None
        if pending and not follow:
            # A complete read: the last line has no newline yet, and will not get one.
            seen += 1
            if seen > skip:
                self._emit(pending)
                self._printed[attempt] = seen
                printed += 1
        return printed

    def _emit(self, raw: bytes) -> None:
        self.printer.line(self.instance, raw.decode("utf-8", errors="replace").rstrip("\r"))


class JobLogs:
    """Every instance's log of one job, as its pods come, restart and go; `finish()` when the job ended."""

    def __init__(
        self,
        session: Session,
        job_name: str,
        printer: LogPrinter,
        *,
        instance: str | None = None,
        container: str = contract.MAIN_CONTAINER,
    ) -> None:
        self.session = session
        self.job_name = job_name
        self.printer = printer
        self.instance = instance
        self.container = container
        self._followers: dict[str, _Follower] = {}
        self._seen_instances: set[str] = set()
        self._finishing = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name=f"ti-logs-{job_name}")

    def start(self) -> JobLogs:
        self._thread.start()
        return self

    def finish(self, timeout: float = 30.0) -> None:
        """The job has ended: collect what is left of every log, then stop."""
        self._finishing.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for follower in list(self._followers.values()):
            follower.finish()
            follower.join(max(0.1, deadline - time.monotonic()))

    def _relist(self) -> str:
        pods, version = self.session.list_pods(self.job_name)
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._on_pod(pod)
        for uid, follower in list(self._followers.items()):
            if uid not in seen:
                follower.update(None)
        return version

    def _watch(self) -> None:
        version: str | None = None
        while not self._finishing.is_set():
            try:
                if version is None:
                    version = self._relist()
                for kind, obj in self.session.watch_pods(self.job_name, version, timeout_seconds=5):
                    if kind == "ERROR":
                        version = None
                        break
                    version = obj.get("metadata", {}).get("resourceVersion") or version
                    if kind == "DELETED":
                        follower = self._followers.get(obj["metadata"].get("uid", ""))
                        if follower is not None:
                            follower.update(None)
                    elif kind != "BOOKMARK":
                        self._on_pod(obj)
                    if self._finishing.is_set():
                        break
            except SessionError:
                version = None
                self._finishing.wait(1.0)
        # The job ended: one last look, so the followers know every container's final state.
        with contextlib.suppress(SessionError):
            self._relist()

    def _on_pod(self, pod: dict[str, Any]) -> None:
        if not matches(pod, self.instance):
            return
        uid = pod["metadata"]["uid"]
        follower = self._followers.get(uid)
        if follower is not None:
            follower.update(pod)
            return
        instance = instance_of(pod)
        if instance in self._seen_instances:
            self.printer.note(f"[{instance}] --- new pod {pod['metadata']['name']} ---")
        self._seen_instances.add(instance)
        follower = _Follower(self.session, pod, self.printer, self.container)
        self._followers[uid] = follower
        follower.start()


def print_logs(
    session: Session,
    job_name: str,
    printer: LogPrinter,
    *,
    instance: str | None = None,
    container: str = contract.MAIN_CONTAINER,
    fallback: Callable[[], bool] | None = None,
) -> int:
    """Print what the job's pods have logged so far, instance by instance; return how many pods.

    When no pod is left, `fallback` (e.g. reading the logs stored with the job's output) is tried.
    """
    pods, _ = session.list_pods(job_name)
    pods = sorted((p for p in pods if matches(p, instance)), key=lambda p: _order(instance_of(p)))
    for pod in pods:
        if not started(container_status(pod, container)):
            continue
        stream = session.pod_log(pod["metadata"]["name"], container)
        pending = b""
        for chunk in stream.chunks():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                printer.line(instance_of(pod), raw.decode("utf-8", errors="replace").rstrip("\r"))
        if pending:
            printer.line(instance_of(pod), pending.decode("utf-8", errors="replace"))
    if not pods and fallback is not None:
        fallback()
    return len(pods)


def _order(instance: str) -> tuple[str, int]:
    role, _, index = instance.rpartition("-")
    return (role, int(index)) if index.isdigit() else (instance, 0)
