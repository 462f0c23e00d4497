"""Retries with exponential backoff and full jitter, for errors a later attempt can fix."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ti.storage.errors import StorageError

T = TypeVar("T")
log = logging.getLogger("ti.storage")


class RetryableError(Exception):
    """Raised by store code for a transient failure (5xx, timeout, reset, short read)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        # Full jitter: spreads the retries of many parallel workers hitting one overloaded server.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def with_retries(fn: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """Run `fn`, retrying on `RetryableError` up to `policy.attempts` times; re-raise the last one."""
    for attempt in range(policy.attempts):
        try:
            return fn()
        except RetryableError as error:
            if attempt + 1 >= policy.attempts:
                raise StorageError(f"{what}: gave up after {policy.attempts} attempts: {error}") from None
            delay = policy.delay(attempt)
            log.info("retrying %s in %.2fs after: %s", what, delay, error)
            time.sleep(delay)
    raise AssertionError("unreachable")
