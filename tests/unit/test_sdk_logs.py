"""Log streaming against a scripted Session: dropped connections, in-place restarts and the last lines
before a container ends are each printed exactly once, in order, prefixed by instance."""

from __future__ import annotations

import copy
import io
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ti import contract
from ti._sdk.logs import JobLogs, LogPrinter, matches
from ti.session import Session

pytestmark = pytest.mark.unit


def pod(uid: str, restarts: int = 0, phase: str = "Running", index: int = 0) -> dict[str, Any]:
    state = {"running": {}} if phase == "Running" else {"terminated": {"exitCode": 0}}
    return {
        "metadata": {
            "name": f"job-worker-{index}",
            "uid": uid,
            "resourceVersion": str(time.monotonic_ns()),
            "labels": {contract.LABEL_ROLE: "worker", contract.LABEL_INDEX: str(index)},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": contract.MAIN_CONTAINER, "restartCount": restarts, "state": state}
            ],
        },
    }


class _Stream:
    def __init__(self, session: FakeSession, key: tuple[str, int], follow: bool) -> None:
        self.session, self.key, self.follow = session, key, follow
        self.closed = threading.Event()

    def chunks(self) -> Iterator[bytes]:
        sent = 0
        while True:
            with self.session.lock:
                data = "".join(self.session.logs.get(self.key, []))[sent:]
                dropped = self.session.drop_next and self.follow and sent > 0
                if dropped:
                    self.session.drop_next = False
            if data:
                sent += len(data)
                yield data.encode()
            if not self.follow or self.closed.is_set() or dropped:
                return
            time.sleep(0.01)

    def close(self) -> None:
        self.closed.set()


class FakeSession(Session):
    """One pod; its log per (pod uid, attempt) grows as the test writes; pods/log follows it."""

    def __init__(self, first: dict[str, Any]) -> None:
        super().__init__(namespace="x")
        self.lock = threading.Lock()
        self.pod = first
        self.logs: dict[tuple[str, int], list[str]] = {}
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.drop_next = False

    def write(self, *lines: str) -> None:
        with self.lock:
            key = (self.pod["metadata"]["uid"], _restarts(self.pod))
            self.logs.setdefault(key, []).extend(f"{line}\n" for line in lines)

    def update(self, new: dict[str, Any]) -> None:
        with self.lock:
            self.pod = new
        self.events.put(("MODIFIED", copy.deepcopy(new)))

    def list_pods(self, job_name: str) -> tuple[list[dict[str, Any]], str]:
        with self.lock:
            return [copy.deepcopy(self.pod)], "1"

    def watch_pods(
        self, job_name: str, resource_version: str | None = None, timeout_seconds: int = 10
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            yield self.events.get(timeout=0.2)
        except queue.Empty:
            return

    def pod_log(self, pod: str, container: str = contract.MAIN_CONTAINER, *, follow: bool = False,
                previous: bool = False, tail_lines: int | None = None) -> Any:  # fmt: skip
        with self.lock:
            attempt = _restarts(self.pod) - (1 if previous else 0)
            return _Stream(self, (self.pod["metadata"]["uid"], attempt), follow)


def _restarts(p: dict[str, Any]) -> int:
    return int(p["status"]["containerStatuses"][0]["restartCount"])


def wait_printed(out: io.StringIO, line: str) -> None:
    deadline = time.monotonic() + 10
    while line not in out.getvalue():
        assert time.monotonic() < deadline, f"never printed {line!r}:\n{out.getvalue()}"
        time.sleep(0.01)


def test_no_line_lost_or_doubled_across_a_drop_a_restart_and_the_end() -> None:
    session = FakeSession(pod("u1"))
    out = io.StringIO()
    streamer = JobLogs(session, "job", LogPrinter(out)).start()

    session.write("a0", "a1")
    wait_printed(out, "[worker-0] a1")
    session.drop_next = True  # the connection breaks: the follower reconnects and skips a0, a1
    session.write("a2")
    wait_printed(out, "[worker-0] a2")
    # The container restarts in place right after writing a3: it is read from the previous log.
    session.write("a3")
    session.update(pod("u1", restarts=1))
    session.write("b0", "b1")
    wait_printed(out, "[worker-0] b1")
    # The last line is written as the container ends; the final read still finds it.
    session.write("b2")
    session.update(pod("u1", restarts=1, phase="Succeeded"))
    streamer.finish(timeout=10)

    lines = [line for line in out.getvalue().splitlines() if not line.startswith("[worker-0] ---")]
    assert lines == [f"[worker-0] {x}" for x in ("a0", "a1", "a2", "a3", "b0", "b1", "b2")]
    assert "[worker-0] --- restarted (attempt 2) ---" in out.getvalue()


def test_instance_selection() -> None:
    p = pod("u", index=1)
    assert matches(p, None) and matches(p, "worker-1") and matches(p, "1") and matches(p, "job-worker-1")
    assert not matches(p, "0") and not matches(p, "worker-0") and not matches(p, "ps-1")
