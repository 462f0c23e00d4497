"""Pure pieces of the transfer machinery: retries, the bounded pool, the file:// store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ti.storage import FileStore, NotFoundError, Progress, RetryPolicy, StorageError, store_for, upload_dir
from ti.storage.parallel import Cancelled, run_all
from ti.storage.retry import RetryableError, with_retries

pytestmark = pytest.mark.unit


def test_retries_transient_errors_then_succeeds() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetryableError("HTTP 503")
        return "ok"

    assert with_retries(flaky, RetryPolicy(attempts=5, base_delay=0.001), "get x") == "ok"
    assert len(calls) == 3


def test_gives_up_with_the_last_error() -> None:
    def always() -> None:
        raise RetryableError("HTTP 500 InternalError")

    with pytest.raises(StorageError, match="get x: gave up after 3 attempts: HTTP 500"):
        with_retries(always, RetryPolicy(attempts=3, base_delay=0.001), "get x")


def test_other_errors_are_not_retried() -> None:
    calls = []

    def denied() -> None:
        calls.append(1)
        raise StorageError("access denied")

    with pytest.raises(StorageError):
        with_retries(denied, RetryPolicy(attempts=5, base_delay=0.001), "get x")
    assert calls == [1]


def test_backoff_is_bounded() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.1, max_delay=1.0)
    assert all(0 <= policy.delay(a) <= 1.0 for a in range(20))


def test_run_all_keeps_order_and_bounds_concurrency() -> None:
    running, peak = 0, 0
    lock = threading.Lock()

    def task(i: int):  # type: ignore[no-untyped-def]
        def run(cancel: threading.Event) -> int:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.01)
            with lock:
                running -= 1
            return i

        return run

    assert run_all([task(i) for i in range(40)], 4) == list(range(40))
    assert peak <= 4


def test_run_all_raises_the_first_real_error_and_skips_the_rest() -> None:
    started = []

    def task(i: int):  # type: ignore[no-untyped-def]
        def run(cancel: threading.Event) -> None:
            started.append(i)
            if i == 0:
                raise ValueError("boom")
            time.sleep(0.05)
            if cancel.is_set():
                raise Cancelled()

        return run

    with pytest.raises(ValueError, match="boom"):
        run_all([task(i) for i in range(100)], 2)
    assert len(started) < 100


def test_file_store(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.bin").write_bytes(b"x" * 10)
    (src / "y.txt").write_text("y")
    store = store_for(f"file://{src}")
    assert isinstance(store, FileStore)
    assert [(o.relative, o.size) for o in store.list(f"file://{src}")] == [("y.txt", 1), ("a/x.bin", 10)]
    events: list[Progress] = []
    got = store.download_prefix(f"file://{src}", tmp_path / "out", progress=events.append)
    assert len(got) == 2 and (tmp_path / "out" / "a" / "x.bin").read_bytes() == b"x" * 10
    assert events[-1].transferred_bytes == 11 and events[-1].done_objects == 2
    single = store.download_prefix(f"file://{src}/y.txt", tmp_path / "one")
    assert [o.relative for o in single] == ["y.txt"] and (tmp_path / "one" / "y.txt").read_text() == "y"
    assert store.download_prefix(f"file://{tmp_path}/missing", tmp_path / "none") == []
    info = upload_dir(store, src, f"file://{tmp_path}/up/src.tar.gz")
    assert info.size > 0 and (tmp_path / "up" / "src.tar.gz").is_file()
    store.put_bytes(b"hello", f"file://{tmp_path}/put/h")
    assert store.get_bytes(f"file://{tmp_path}/put/h") == b"hello"
    store.delete(f"file://{tmp_path}/put/h")
    assert store.stat(f"file://{tmp_path}/put/h") is None
    with pytest.raises(NotFoundError):
        store.get_bytes(f"file://{tmp_path}/put/h")
