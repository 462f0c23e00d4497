"""A client-side rate limit for the operator's API requests, as client-go's QPS and burst.

Unset (the default) the operator sends requests as fast as its workers make them. Set, e.g. to match
other controllers on a shared API server (kube-controller-manager's --kube-api-qps 20 and
--kube-api-burst 30, controller-runtime's 20 and 30), every request waits for a token: `burst`
tokens at most, refilled at `qps` per second.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

QPS_ENV = "TI_OPERATOR_QPS"
BURST_ENV = "TI_OPERATOR_BURST"


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


def from_env(environ: Mapping[str, str] | None = None) -> TokenBucket | None:
    """TI_OPERATOR_QPS (> 0) and TI_OPERATOR_BURST (default: QPS rounded up); None when unset."""
    env = os.environ if environ is None else environ
    qps = float(env.get(QPS_ENV) or 0)
    if qps <= 0:
        return None
    burst = int(env.get(BURST_ENV) or max(1, int(qps + 0.999)))
    return TokenBucket(qps, burst)


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
