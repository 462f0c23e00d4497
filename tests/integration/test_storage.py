"""ti.storage against a real S3/COS-speaking server on loopback, through the real COS SDK."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ti.storage import (
    AccessDeniedError,
    CosSettings,
    CosStore,
    MiB,
    NotFoundError,
    Progress,
    RetryPolicy,
    StorageError,
    TransferConfig,
    UnsafeKeyError,
    store_for,
    upload_dir,
)
from ti.storage.parallel import run_all

from ..support.objectstore import LoopbackObjectStore

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05)
# Small thresholds so modest test files take the multipart and ranged paths.
SMALL_PARTS = TransferConfig(
    concurrency=8,
    multipart_threshold=8 * MiB,
    part_size=5 * MiB,
    range_threshold=2 * MiB,
    range_size=1 * MiB,
    retry=FAST_RETRY,
    timeout_seconds=5,
)


def cos(object_store: LoopbackObjectStore, config: TransferConfig = SMALL_PARTS, **env: str) -> CosStore:
    return CosStore(CosSettings.from_env(object_store.env(**env)), config)


def blob(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def seed_objects(store: CosStore, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    def put(key: str, data: bytes):  # type: ignore[no-untyped-def]
        return lambda cancel: store.put_bytes(data, f"cos://{bucket}/{prefix}/{key}")

    run_all([put(k, v) for k, v in files.items()], 16)


def test_round_trip_with_progress(object_store: LoopbackObjectStore, bucket: str, tmp_path: Path) -> None:
    store = cos(object_store)
    files = {
        "a.txt": b"alpha",
        "sub/b.bin": blob(1, 300_000),
        "sub/deeper/c.bin": blob(2, 3 * MiB + 17),
        "e": b"",
    }
    src = tmp_path / "src"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
        store.upload_file(src / name, f"cos://{bucket}/data/{name}")
    listed = {o.relative: o.size for o in store.list(f"cos://{bucket}/data")}
    assert listed == {k: len(v) for k, v in files.items()}
    events: list[Progress] = []
    got = store.download_prefix(f"cos://{bucket}/data/", tmp_path / "out", progress=events.append)
    assert len(got) == len(files)
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert not list((tmp_path / "out").rglob("*.ti-partial"))
    total = sum(map(len, files.values()))
    assert events[-1].transferred_bytes == total == events[-1].total_bytes
    assert events[-1].done_objects == len(files)
    assert all(b.transferred_bytes >= a.transferred_bytes for a, b in itertools.pairwise(events))
    # The URI of one object downloads that object into the directory.
    one = store.download_prefix(f"cos://{bucket}/data/sub/b.bin", tmp_path / "one")
    assert [o.relative for o in one] == ["b.bin"] and (tmp_path / "one" / "b.bin").read_bytes() == files[
        "sub/b.bin"
    ]
    assert store.download_prefix(f"cos://{bucket}/nothing-here", tmp_path / "none") == []


def test_s3_alias_and_store_for(object_store: LoopbackObjectStore, bucket: str, tmp_path: Path) -> None:
    store = store_for(f"s3://{bucket}/x", object_store.env())
    assert store is store_for(f"cos://{bucket}/y", object_store.env())  # one pool per settings
    store.put_bytes(b"via s3", f"s3://{bucket}/alias/x")
    assert store.get_bytes(f"cos://{bucket}/alias/x") == b"via s3"
    src = tmp_path / "model"
    (src / "1").mkdir(parents=True)
    (src / "1" / "saved_model.pb").write_bytes(b"pb")
    info = upload_dir(store, src, f"cos://{bucket}/model.tar.gz")
    assert store.stat(f"cos://{bucket}/model.tar.gz") == info


def test_two_thousand_small_objects(object_store: LoopbackObjectStore, bucket: str, tmp_path: Path) -> None:
    store = cos(object_store, TransferConfig(concurrency=16, retry=FAST_RETRY))
    files = {f"shard-{i // 100:02d}/obj-{i:05d}.bin": blob(i, 1000 + i % 777) for i in range(2000)}
    seed_objects(store, bucket, "many", files)
    assert sum(1 for _ in store.list(f"cos://{bucket}/many")) == 2000  # two pages of 1,000
    got = store.download_prefix(f"cos://{bucket}/many", tmp_path / "many")
    assert len(got) == 2000
    for name, data in files.items():
        assert (tmp_path / "many" / name).read_bytes() == data


def test_one_gib_object_streams_both_ways(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path
) -> None:
    size = 1024 * MiB
    src = tmp_path / "big.bin"
    digest = hashlib.md5()
    rng = np.random.default_rng(42)
    with open(src, "wb") as out:
        for _ in range(size // (64 * MiB)):
            chunk = rng.bytes(64 * MiB)
            digest.update(chunk)
            out.write(chunk)
    config = TransferConfig(concurrency=8, retry=FAST_RETRY, timeout_seconds=120)
    store = cos(object_store, config)
    uri = f"cos://{bucket}/big/one-gib.bin"
    try:
        info = store.upload_file(src, uri)
        assert info.size == size and info.etag and info.etag.endswith("-64")
        src.unlink()
        dest = tmp_path / "down.bin"
        store.download_file(uri, dest)
        assert dest.stat().st_size == size
        check = hashlib.md5()
        with open(dest, "rb") as data:
            while chunk := data.read(16 * MiB):
                check.update(chunk)
        assert check.hexdigest() == digest.hexdigest()
    finally:
        store.delete(uri)  # the server holds objects in memory and temporary files


@pytest.fixture
def seeded(object_store: LoopbackObjectStore, bucket: str) -> Iterator[tuple[CosStore, dict[str, bytes]]]:
    store = cos(object_store)
    files = {f"f{i}.bin": blob(i, 200_000) for i in range(12)} | {"big.bin": blob(99, 5 * MiB + 3)}
    seed_objects(store, bucket, "faulty", files)
    yield store, files


@pytest.mark.parametrize(
    ("kind", "count"),
    [("status", 6), ("reset", 6), ("truncate", 6)],
)
def test_download_survives_faults(
    object_store: LoopbackObjectStore,
    bucket: str,
    seeded: tuple[CosStore, dict[str, bytes]],
    tmp_path: Path,
    kind: str,
    count: int,
) -> None:
    store, files = seeded
    object_store.faults.inject(kind, count=count, method="GET", path_contains="/faulty/", status=503)
    store.download_prefix(f"cos://{bucket}/faulty", tmp_path / "out")
    assert object_store.faults.injected == count
    for name, data in files.items():
        assert (tmp_path / "out" / name).read_bytes() == data


def test_download_survives_a_stalled_server(
    object_store: LoopbackObjectStore, bucket: str, seeded: tuple[CosStore, dict[str, bytes]], tmp_path: Path
) -> None:
    _, files = seeded
    store = cos(object_store, TransferConfig(concurrency=4, retry=FAST_RETRY, timeout_seconds=0.5))
    object_store.faults.inject("stall", count=2, method="GET", path_contains="/faulty/f1", seconds=1.5)
    store.download_prefix(f"cos://{bucket}/faulty", tmp_path / "out")
    assert (tmp_path / "out" / "f1.bin").read_bytes() == files["f1.bin"]


def test_upload_survives_faults_on_parts(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path
) -> None:
    store = cos(object_store)
    data = blob(7, 23 * MiB)
    (tmp_path / "m").write_bytes(data)
    object_store.faults.inject("status", count=2, method="PUT", status=500)
    object_store.faults.inject("reset", count=2, method="PUT")
    store.upload_file(tmp_path / "m", f"cos://{bucket}/up/m")
    assert object_store.faults.injected == 4
    assert store.get_bytes(f"cos://{bucket}/up/m") == data


def test_failed_upload_leaves_no_object(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path
) -> None:
    store = cos(object_store)
    (tmp_path / "m").write_bytes(blob(8, 20 * MiB))
    # Two parts are stored, then every try of the others fails: the upload must be aborted.
    object_store.faults.inject(
        "status", count=10_000, method="PUT", path_contains="/up/model", status=500, skip=2
    )
    with pytest.raises(StorageError, match="gave up after 6 attempts"):
        store.upload_file(tmp_path / "m", f"cos://{bucket}/up/model.tar.gz")
    object_store.faults.clear()
    assert object_store.keys(bucket, "up/") == []
    assert object_store.pending_uploads(bucket) == []
    assert store.stat(f"cos://{bucket}/up/model.tar.gz") is None
    # A small (single PUT) upload that fails leaves nothing either.
    object_store.faults.inject("status", count=10_000, method="PUT", status=503)
    with pytest.raises(StorageError):
        store.put_bytes(b"tiny", f"cos://{bucket}/up/small")
    object_store.faults.clear()
    assert object_store.keys(bucket, "up/") == []


@pytest.mark.parametrize("wrong", ["TENCENTCLOUD_SECRETKEY", "TENCENTCLOUD_SECRETID"])
def test_wrong_credentials_are_a_clear_error_without_secrets(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path, wrong: str
) -> None:
    secret = "Wr0ng-s3cret-value-that-must-not-leak"
    store = cos(object_store, **{wrong: secret})
    for attempt in (
        lambda: store.download_prefix(f"cos://{bucket}/data", tmp_path / "x"),
        lambda: store.put_bytes(b"x", f"cos://{bucket}/x"),
        lambda: store.stat(f"cos://{bucket}/x"),
    ):
        with pytest.raises(AccessDeniedError) as caught:
            attempt()
        text = str(caught.value)
        assert text.startswith(f"access denied to cos://{bucket}/")
        assert "TENCENTCLOUD_SECRETID" in text and "Secret" in text
        rendered = "".join(traceback.format_exception(caught.value))
        assert secret not in rendered and object_store.secret_key not in rendered


def test_session_token_is_sent_and_checked(object_store: LoopbackObjectStore, bucket: str) -> None:
    with_token = LoopbackObjectStore(token="session-token-123").start()
    try:
        good = CosStore(CosSettings.from_env(with_token.env()), SMALL_PARTS)
        good.put_bytes(b"t", f"cos://{bucket}/token/ok")
        env = with_token.env()
        del env["TENCENTCLOUD_SESSIONTOKEN"]
        with pytest.raises(AccessDeniedError) as caught:
            CosStore(CosSettings.from_env(env), SMALL_PARTS).get_bytes(f"cos://{bucket}/token/ok")
        assert "session-token-123" not in str(caught.value)
    finally:
        with_token.stop()


def test_missing_bucket_and_object(object_store: LoopbackObjectStore, tmp_path: Path) -> None:
    store = cos(object_store)
    with pytest.raises(NotFoundError, match="bucket nosuch-1250000000 does not exist"):
        list(store.list("cos://nosuch-1250000000/data"))
    with pytest.raises(NotFoundError, match="no such object"):
        store.download_file(f"cos://{object_store.new_bucket()}/missing", tmp_path / "m")


def test_unsafe_keys_are_refused_before_anything_is_written(
    object_store: LoopbackObjectStore, bucket: str, tmp_path: Path
) -> None:
    client = object_store.client()
    client.put_object(Bucket=bucket, Key="data/ok.txt", Body=b"ok")
    client.put_object(Bucket=bucket, Key="data/../escape.txt", Body=b"evil")
    assert "data/../escape.txt" in object_store.keys(bucket, "data/")
    dest = tmp_path / "work" / "channel"
    with pytest.raises(UnsafeKeyError, match=r"'\.\.'"):
        cos(object_store).download_prefix(f"cos://{bucket}/data", dest)
    assert not (tmp_path / "work" / "escape.txt").exists()
    assert not dest.exists() or not any(dest.iterdir())


def test_concurrent_stores_share_nothing_unsafe(object_store: LoopbackObjectStore, bucket: str) -> None:
    # Several threads using one store at once (the toolkit's checkpoint sync does) stay correct.
    store = cos(object_store)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            data = os.urandom(50_000)
            store.put_bytes(data, f"cos://{bucket}/conc/{i}")
            assert store.get_bytes(f"cos://{bucket}/conc/{i}") == data
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
