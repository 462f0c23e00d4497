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
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

URGENT, NORMAL, LOW = 0, 1, 2
_local = threading.local()


@contextlib.contextmanager
def priority(level: int) -> Iterator[None]:
    """The priority of the requests this thread makes inside the block."""
    before = getattr(_local, "level", NORMAL)
    _local.level = level
    try:
        yield
    finally:
        _local.level = before


def current() -> int:
    return int(getattr(_local, "level", NORMAL))


class TokenBucket:
    """Thread-safe token bucket; `acquire` waits for a token, served by priority."""

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
        self._waiting = [0, 0, 0]  # callers waiting, by priority

    def acquire(self, level: int = NORMAL) -> float:
        """Take one token, waiting for it while the bucket is empty or a caller of a higher priority
        waits too; returns the seconds waited."""
        began = self._clock()
        waiting = False
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
                    self._last = now
                    if self._tokens >= 1 - 1e-9 and not any(self._waiting[:level]):
                        self._tokens -= 1
                        return self._clock() - began
                    if not waiting:
                        self._waiting[level] += 1
                        waiting = True
                    # Until the next token; a caller of a higher priority may take it first.
                    wait = (1 - self._tokens) / self.qps if self._tokens < 1 else 1 / self.qps
                self._sleep(max(wait, 1e-4))
        finally:
            if waiting:
                with self._lock:
                    self._waiting[level] -= 1


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
