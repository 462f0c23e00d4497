"""A client-side rate limit for the operator's API requests, as client-go's QPS and burst.

Off (the default) the operator sends requests as fast as its workers make them. On, e.g. to match
other controllers on a shared API server (kube-controller-manager's --kube-api-qps 20 and
--kube-api-burst 30, controller-runtime's 20 and 30), every request waits for a token: `burst`
tokens at most, refilled at `qps` per second. TI_OPERATOR_QPS and TI_OPERATOR_BURST are read by
ti.operator.settings.

Unlike client-go's, the bucket serves requests by priority: a request waiting for a token goes before
every request of a lower priority, whenever they came. At an equal rate a controller is as fast as
what it spends its tokens on first: the Job controller sends its Events through a broadcaster that does
not hold up its syncs; here pod creates and deletes and a job's final status go first (URGENT), other
writes and reads next (NORMAL), Events last (LOW). The caller names the priority of the requests it
makes with `priority(...)`; NORMAL otherwise.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

URGENT, NORMAL, LOW = 0, 1, 2
_local = threading.local()
# How often a request waiting its turn looks whether its reconcile should give way.
_GIVE_WAY_CHECK_SECONDS = 0.25


class GaveWay(Exception):
    """A request not sent: its reconcile gave way to a newer one of the same job (`giving_way`)."""


@contextlib.contextmanager
def priority(level: int) -> Iterator[None]:
    """The priority of the requests this thread makes inside the block."""
    before = getattr(_local, "level", NORMAL)
    _local.level = level
    try:
        yield
    finally:
        _local.level = before


@contextlib.contextmanager
def giving_way(newer: Callable[[], bool]) -> Iterator[None]:
    """Inside the block, a NORMAL or LOW request still waiting for its token when `newer()` turns true
    is not sent: it raises GaveWay. A reconcile whose job changed meanwhile (a newer reconcile is
    queued) had better start over from what is true now than wait to write what no longer is."""
    before = getattr(_local, "newer", None)
    _local.newer = newer
    try:
        yield
    finally:
        _local.newer = before


def current() -> int:
    return int(getattr(_local, "level", NORMAL))


class TokenBucket:
    """Thread-safe token bucket; `acquire` waits for a token. Waiting callers are served by priority,
    then in the order they came; only the first in line watches the clock, the others sleep until
    they are first (no thundering herd of waiters at every token)."""

    def __init__(
        self,
        qps: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps <= 0:
            raise ValueError(f"qps must be positive, got {qps}")
        self.qps = qps
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._last = clock()
        self._lock = threading.Lock()
        self._line: list[tuple[int, int, threading.Event]] = []  # (priority, arrival, its wake-up)
        self._arrivals = itertools.count()

    def acquire(self, level: int = NORMAL) -> float:
        """Take one token, waiting for it while the bucket is empty or callers of a higher priority
        (or of the same, come earlier) wait; returns the seconds waited. Raises GaveWay (not for
        URGENT) when the thread's `giving_way` condition turns true while it waits."""
        began = self._clock()
        newer: Callable[[], bool] | None = getattr(_local, "newer", None) if level != URGENT else None
        entry = (level, next(self._arrivals), threading.Event())
        with self._lock:
            heapq.heappush(self._line, entry)
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
                    self._last = now
                    first = self._line[0] is entry
                    if first and self._tokens >= 1 - 1e-9:
                        self._tokens -= 1
                        heapq.heappop(self._line)
                        if self._line:
                            self._line[0][2].set()  # the next in line watches the clock now
                        return self._clock() - began
                    wait = (1 - self._tokens) / self.qps
                    entry[2].clear()
                if newer is not None and newer():
                    raise GaveWay()
                if first:
                    self._sleep(
                        max(wait, 1e-4) if newer is None else min(max(wait, 1e-4), _GIVE_WAY_CHECK_SECONDS)
                    )
                else:
                    entry[2].wait(_GIVE_WAY_CHECK_SECONDS if newer is not None else 1.0)
        except BaseException:
            with self._lock:
                if entry in self._line:
                    self._line.remove(entry)
                    heapq.heapify(self._line)
                    if self._line:
                        self._line[0][2].set()
            raise


def bucket(qps: float, burst: int) -> TokenBucket | None:
    """The bucket of the settings' QPS and burst; None (no limit) when `qps` is 0."""
    return TokenBucket(qps, burst) if qps > 0 else None


def limit(api: Any, bucket: TokenBucket | None) -> Any:
    """Make every request of a kubernetes `ApiClient` take a token from `bucket` first."""
    if bucket is None:
        return api
    inner = api.rest_client.request

    def request(*args: Any, **kwargs: Any) -> Any:
        bucket.acquire(current())
        return inner(*args, **kwargs)

    api.rest_client.request = request
    return api
