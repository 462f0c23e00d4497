"""The operator's optional client-side rate limit (TI_OPERATOR_QPS / TI_OPERATOR_BURST)."""

from __future__ import annotations

from typing import Any

import pytest

from ti.operator.ratelimit import TokenBucket, bucket, limit
from ti.operator.settings import Settings

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_burst_then_qps() -> None:
    clock = Clock()
    bucket = TokenBucket(qps=20, burst=30, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(50)]
    assert waits[:30] == [0.0] * 30
    assert all(w == pytest.approx(0.05) for w in waits[30:])
    assert clock.now == pytest.approx(20 / 20)  # 20 requests beyond the burst at 20 per second


def test_tokens_refill_up_to_the_burst_only() -> None:
    clock = Clock()
    bucket = TokenBucket(qps=10, burst=5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        bucket.acquire()
    clock.now += 100  # idle for long: the bucket holds 5 again, not 1000
    assert [bucket.acquire() for _ in range(6)] == [0.0] * 5 + [pytest.approx(0.1)]


def from_env(env: dict[str, str]) -> TokenBucket | None:
    settings = Settings.from_env(env)
    return bucket(settings.qps, settings.client_burst)


def test_bucket_of_the_settings() -> None:
    assert from_env({}) is None
    assert from_env({"TI_OPERATOR_QPS": "0"}) is None
    b = from_env({"TI_OPERATOR_QPS": "20", "TI_OPERATOR_BURST": "30"})
    assert b is not None and (b.qps, b.burst) == (20, 30)
    b = from_env({"TI_OPERATOR_QPS": "2.5"})
    assert b is not None and b.burst == 3
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


def test_limit_wraps_every_request_of_a_client() -> None:
    class Rest:
        def __init__(self) -> None:
            self.calls: list[Any] = []

        def request(self, *args: Any, **kwargs: Any) -> str:
            self.calls.append(args)
            return "ok"

    class Api:
        rest_client = Rest()

    clock = Clock()
    api = Api()
    rest = api.rest_client
    assert limit(api, None) is api and api.rest_client.request == rest.request
    limit(api, TokenBucket(qps=1, burst=1, clock=clock, sleep=clock.sleep))
    assert [api.rest_client.request("GET", "/a"), api.rest_client.request("GET", "/b")] == ["ok", "ok"]
    assert rest.calls == [("GET", "/a"), ("GET", "/b")] and clock.slept == [pytest.approx(1.0)]


def test_a_waiting_request_goes_before_every_request_of_a_lower_priority() -> None:
    import threading
    import time

    from ti.operator import ratelimit

    b = TokenBucket(qps=20, burst=1)
    b.acquire()  # empty: the next token is 50 ms away
    served: list[str] = []

    def take(name: str, level: int, delay: float) -> None:
        time.sleep(delay)
        with ratelimit.priority(level):
            b.acquire(ratelimit.current())
        served.append(name)

    threads = [
        threading.Thread(target=take, args=("event", ratelimit.LOW, 0.0)),
        threading.Thread(target=take, args=("status", ratelimit.NORMAL, 0.005)),
        threading.Thread(target=take, args=("pod", ratelimit.URGENT, 0.01)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    # They came LOW, NORMAL, URGENT; the tokens went the other way round.
    assert served == ["pod", "status", "event"]
    assert ratelimit.current() == ratelimit.NORMAL


def test_a_waiting_request_gives_way_to_a_newer_reconcile_but_urgent_ones_never_do() -> None:
    from ti.operator import ratelimit

    clock = Clock()
    b = TokenBucket(qps=1, burst=1, clock=clock, sleep=clock.sleep)
    b.acquire()  # empty
    newer = [False]

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        newer[0] = True  # the job changed while this request waited

    b._sleep = sleep
    with ratelimit.giving_way(lambda: newer[0]):
        with pytest.raises(ratelimit.GaveWay):
            b.acquire(ratelimit.NORMAL)
        assert b.acquire(ratelimit.URGENT) >= 0  # a pod create is sent whatever happened
    newer[0] = True
    assert b.acquire(ratelimit.NORMAL) >= 0  # outside a reconcile nothing gives way


def test_the_event_sink_sends_in_order_and_survives_a_failed_send() -> None:
    import threading

    from ti.operator.events import EventSink

    sent: list[str] = []
    done = threading.Event()

    def send(namespace: str, event: Any) -> None:
        if event == "bad":
            raise RuntimeError("the API server went away")
        sent.append(f"{namespace}/{event}")
        if event == "last":
            done.set()

    sink = EventSink(send)
    sink.start()
    for e in ("first", "bad", "last"):
        sink.put("team-a", e)
    assert done.wait(5)
    sink.stop()
    assert sent == ["team-a/first", "team-a/last"]
