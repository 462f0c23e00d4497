"""A client-side rate limit for the operator's API requests, as client-go's QPS and burst.

Off (the default) the operator sends requests as fast as its workers make them. On, e.g. to match
other controllers on a shared API server (kube-controller-manager's --kube-api-qps 20 and
--kube-api-burst 30, controller-runtime's 20 and 30), every request waits for a token: `burst`
tokens at most, refilled at `qps` per second. TI_OPERATOR_QPS and TI_OPERATOR_BURST are read by
ti.operator.settings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class TokenBucket:
    """Thread-safe token bucket; `acquire` reserves a token and sleeps until it is due."""

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

    def acquire(self) -> float:
        """Take one token, waiting for it if the bucket is empty; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1  # a reservation: later callers queue behind it
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


def bucket(qps: float, burst: int) -> TokenBucket | None:
    """The bucket of the settings' QPS and burst; None (no limit) when `qps` is 0."""
    return TokenBucket(qps, burst) if qps > 0 else None


def limit(api: Any, bucket: TokenBucket | None) -> Any:
    """Make every request of a kubernetes `ApiClient` take a token from `bucket` first."""
    if bucket is None:
        return api
    inner = api.rest_client.request

    def request(*args: Any, **kwargs: Any) -> Any:
        bucket.acquire()
        return inner(*args, **kwargs)

    api.rest_client.request = request
    return api
