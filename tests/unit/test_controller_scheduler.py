"""The controller's requeue scheduler: one resync chain per job, even for a name deleted and re-created."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ti.operator.workqueue import Scheduler

pytestmark = pytest.mark.unit

KEY = ("team-a", "nightly")


class Calls:
    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []
        self.event = threading.Event()

    def __call__(self, key: tuple[str, str]) -> None:
        self.keys.append(key)
        self.event.set()


@pytest.fixture
def calls() -> Iterator[tuple[Scheduler, Calls]]:
    recorded = Calls()
    scheduler = Scheduler(recorded)
    yield scheduler, recorded
    scheduler.stop()
    scheduler.join(5)


def test_a_name_deleted_and_recreated_keeps_a_single_resync(calls: tuple[Scheduler, Calls]) -> None:
    scheduler, recorded = calls
    now = time.monotonic()
    scheduler.resync(KEY, now, 3600)
    scheduler.drop(KEY)  # the job was deleted...
    scheduler.resync(KEY, now, 3600)  # ...and one of the same name created before the old resync was due
    scheduler.start()
    assert recorded.event.wait(5)
    scheduler.at(now + 0.3, ("team-a", "marker"))  # due after anything stale would have run
    deadline = time.monotonic() + 5
    while ("team-a", "marker") not in recorded.keys and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorded.keys == [KEY, ("team-a", "marker")]
    assert sum(1 for *_, key, chain in scheduler._heap if key == KEY and chain) == 1


def test_a_dropped_job_is_not_resynced(calls: tuple[Scheduler, Calls]) -> None:
    scheduler, recorded = calls
    now = time.monotonic()
    scheduler.resync(KEY, now, 3600)
    scheduler.drop(KEY)
    scheduler.at(now + 0.2, ("team-a", "marker"))
    scheduler.start()
    assert recorded.event.wait(5)
    assert recorded.keys == [("team-a", "marker")]


def test_one_shot_requeues_due_together_run_once(calls: tuple[Scheduler, Calls]) -> None:
    scheduler, recorded = calls
    now = time.monotonic()
    for _ in range(3):
        scheduler.at(now, KEY)
    scheduler.at(now + 0.2, ("team-a", "marker"))
    scheduler.start()
    deadline = time.monotonic() + 5
    while ("team-a", "marker") not in recorded.keys and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorded.keys == [KEY, ("team-a", "marker")]
