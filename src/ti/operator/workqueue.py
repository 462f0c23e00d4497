"""The controller's schedulers, as client-go's: a deduplicating work queue of job keys, a thread that
hands keys back at their due time (requeues and the periodic resync), and the per-job backoff of
reconciles that raised.

A key is handed to one worker at a time; a key added while it is being reconciled is handed out again
once that reconcile is done, so a reconcile that read too early is always followed by another.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable

from ti.operator.metrics import COALESCED

Key = tuple[str, str]  # (namespace, job name)

# A reconcile that raised is retried after 1 s, then 2, 4, ... up to 5 minutes, as client-go's
# default controller rate limiter (ItemExponentialFailureRateLimiter, 5 ms to 1000 s there: our
# reconciles are API calls, not in-memory work, so we start later and stop sooner).
ERROR_BACKOFF_BASE_SECONDS = 1.0
ERROR_BACKOFF_MAX_SECONDS = 300.0


class ItemBackoff:
    """Exponential backoff per job: `failed` returns how long to wait before the next try (base, then
    doubling, capped); `succeeded` resets the job's count. Thread-safe."""

    def __init__(
        self, base: float = ERROR_BACKOFF_BASE_SECONDS, cap: float = ERROR_BACKOFF_MAX_SECONDS
    ) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[Key, int] = {}
        self._lock = threading.Lock()

    def failed(self, key: Key) -> float:
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        # 2**n grows without bound; past the cap there is nothing to compute.
        return self.cap if n >= 64 else min(self.cap, self.base * 2**n)

    def succeeded(self, key: Key) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def failures(self, key: Key) -> int:
        with self._lock:
            return self._failures.get(key, 0)


class WorkQueue:
    """Job keys to reconcile: a key queued twice is queued once, and a key being reconciled is handed
    out again only after `done`, if it was added meanwhile (its reconcile may have read too early)."""

    def __init__(self) -> None:
        self._order: deque[Key] = deque()
        self._dirty: set[Key] = set()
        self._processing: set[Key] = set()
        self._cond = threading.Condition()
        self._shut = False

    def add(self, key: Key) -> None:
        with self._cond:
            if key in self._dirty:
                COALESCED.inc()
                return
            self._dirty.add(key)
            if key not in self._processing:
                self._order.append(key)
                self._cond.notify()

    def get(self) -> Key | None:
        with self._cond:
            while not self._order and not self._shut:
                self._cond.wait()
            if self._shut:
                return None
            key = self._order.popleft()
            self._dirty.discard(key)
            self._processing.add(key)
            return key

    def done(self, key: Key) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._order.append(key)
                self._cond.notify()

    def dirty(self, key: Key) -> bool:
        """True when `key` was added again since it was handed out: a newer reconcile is due."""
        with self._cond:
            return key in self._dirty

    def shut_down(self) -> None:
        with self._cond:
            self._shut = True
            self._cond.notify_all()


class Scheduler(threading.Thread):
    """Calls back each job at its due time: one-shot requeues and a periodic resync per known job.

    Each periodic resync is a chain of heap entries carrying the chain's number. Dropping a job ends its
    chain; a job re-created under the same name starts a new one, and entries of the old chain still in
    the heap are skipped, so a name deleted and re-created never gets two resyncs per period.
    """

    def __init__(self, callback: Callable[[Key], None]) -> None:
        super().__init__(name="ti-requeue", daemon=True)
        self._callback = callback
        self._heap: list[tuple[float, int, Key, int]] = []  # (due, seq, job, chain; 0 = one-shot)
        self._periods: dict[Key, tuple[float, int]] = {}  # job -> (period, its chain)
        self._seq = 0
        self._cond = threading.Condition()
        self._stopped = False

    def at(self, when: float, key: Key, chain: int = 0) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, key, chain))
            self._cond.notify()

    def resync(self, key: Key, first: float, period: float) -> None:
        with self._cond:
            if key in self._periods:
                return
            self._seq += 1
            chain = self._seq
            self._periods[key] = (period, chain)
        self.at(first, key, chain)

    def drop(self, key: Key) -> None:
        with self._cond:
            self._periods.pop(key, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _current(self, key: Key, chain: int) -> float | None:
        # The period of `chain` if it is still the job's resync chain (call with the lock held).
        period, current = self._periods.get(key, (0.0, 0))
        return period if chain and current == chain else None

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, key, chain = heapq.heappop(self._heap)
                period = self._current(key, chain)
                if chain and period is None:
                    continue  # the job is gone, or this chain was replaced by a newer one
                # Other one-shot calls for the same job that are already due: one reconcile serves all.
                now = time.monotonic()
                self._heap = [e for e in self._heap if e[3] or e[2] != key or e[0] > now]
                heapq.heapify(self._heap)
            self._callback(key)
            if period is not None:
                self.at(time.monotonic() + period, key, chain)
