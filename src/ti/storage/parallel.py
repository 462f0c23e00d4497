"""Run many small transfer tasks on a bounded pool and stop at the first failure."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """A task noticed that another task already failed."""


def run_all(tasks: Sequence[Callable[[threading.Event], T]], concurrency: int) -> list[T]:
    """Run `tasks` with at most `concurrency` at a time; results in task order.

    Each task receives a cancel event it may check between chunks. On the first failure the event is
    set, queued tasks are skipped, running ones finish or notice, and that first error is raised.
    """
    if not tasks:
        return []
    cancel = threading.Event()
    if concurrency <= 1 or len(tasks) == 1:
        return [task(cancel) for task in tasks]
    first_error: list[BaseException] = []
    lock = threading.Lock()

    def guarded(task: Callable[[threading.Event], T]) -> T | None:
        if cancel.is_set():
            return None
        try:
            return task(cancel)
        except BaseException as error:
            with lock:
                # Errors of tasks that only noticed the cancellation are consequences, not causes.
                if not first_error and not isinstance(error, Cancelled):
                    first_error.append(error)
                cancel.set()
            return None

    with ThreadPoolExecutor(
        max_workers=min(concurrency, len(tasks)), thread_name_prefix="ti-transfer"
    ) as pool:
        futures = [pool.submit(guarded, task) for task in tasks]
        wait(futures)
    if first_error:
        raise first_error[0]
    if cancel.is_set():
        raise Cancelled()
    return [f.result() for f in futures]  # type: ignore[misc]
