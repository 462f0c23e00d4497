"""`cos://` (and `s3://`) store: parallel, ranged, verified, retried transfers over cos-python-sdk-v5."""

from __future__ import annotations

import base64
import builtins
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ti.storage.base import MiB, ObjectInfo, ProgressCallback, ProgressMeter, TransferConfig
from ti.storage.cosclient import CosClient
from ti.storage.cosdownload import Downloader, is_md5, remote
from ti.storage.errors import IntegrityError, NotFoundError, StorageError
from ti.storage.parallel import Cancelled, run_all
from ti.storage.retry import RetryableError, with_retries
from ti.storage.settings import CosSettings
from ti.storage.uri import ObjectURI, target_path

log = logging.getLogger("ti.storage")

MAX_PARTS = 10_000


class CosStore:
    """Objects in COS (or any S3-compatible server reached through the COS SDK)."""

    def __init__(self, settings: CosSettings, config: TransferConfig | None = None) -> None:
        self.config = config or TransferConfig()
        self.client = CosClient(settings, self.config)
        self._downloads = Downloader(self.client, self.config)

    # ---- reading -------------------------------------------------------------------------------

    def list(self, uri: str) -> Iterator[ObjectInfo]:
        parsed = remote(uri)
        prefix = parsed.as_dir_prefix()
        marker = ""
        while True:
            page, next_marker = with_retries(
                lambda m=marker: self.client.list_page(uri, parsed.bucket, prefix, m),  # type: ignore[misc]
                self.config.retry,
                f"list {uri}",
            )
            for item in page:
                if item.key.endswith("/") and item.size == 0:
                    continue  # a "folder" marker made by consoles, not data
                yield ObjectInfo(
                    f"{parsed.scheme}://{parsed.bucket}/{item.key}",
                    item.key[len(prefix) :],
                    item.size,
                    item.etag,
                )
            if next_marker is None:
                return
            marker = next_marker

    def stat(self, uri: str) -> ObjectInfo | None:
        parsed = remote(uri)
        if not parsed.key or parsed.key.endswith("/"):
            return None
        found = with_retries(
            lambda: self.client.head(uri, parsed.bucket, parsed.key), self.config.retry, f"stat {uri}"
        )
        if found is None:
            return None
        return ObjectInfo(uri, parsed.key.rsplit("/", 1)[-1], found[0], found[1])

    def get_bytes(self, uri: str) -> bytes:
        parsed = remote(uri)

        def attempt() -> bytes:
            _, stream = self.client.get(uri, parsed.bucket, parsed.key)
            with stream:
                return self._read_all(uri, stream)

        return with_retries(attempt, self.config.retry, f"download {uri}")

    def _read_all(self, uri: str, stream: BinaryIO) -> bytes:
        try:
            return stream.read()
        except Exception as error:
            raise self.client.translate(error, uri, "download") from None

    def download_file(self, uri: str, dest: Path, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        info = self.stat(uri)
        if info is None:
            raise NotFoundError(f"no such object: {uri}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        meter = ProgressMeter(uri, info.size, 1, progress)
        run_all(self._downloads.plan(info, dest, meter), self.config.concurrency)
        return info

    def download_prefix(
        self, uri: str, dest_dir: Path, *, progress: ProgressCallback | None = None
    ) -> builtins.list[ObjectInfo]:
        objects = list(self.list(uri))
        if not objects:
            single = self.stat(uri)
            objects = [single] if single else []
        # Every destination is checked before the first byte moves: one unsafe key refuses the lot.
        targets = [(info, target_path(dest_dir, info.relative)) for info in objects]
        meter = ProgressMeter(uri, sum(o.size for o in objects), len(objects), progress)
        for parent in {dest.parent for _, dest in targets}:
            parent.mkdir(parents=True, exist_ok=True)
        tasks: list[Callable[[threading.Event], None]] = []
        for info, dest in targets:
            tasks += self._downloads.plan(info, dest, meter)
        run_all(tasks, self.config.concurrency)
        return objects

    # ---- writing -------------------------------------------------------------------------------

    def put_bytes(self, data: bytes, uri: str) -> ObjectInfo:
        parsed = remote(uri)
        digest = hashlib.md5(data)
        md5_b64 = base64.b64encode(digest.digest()).decode()

        def attempt() -> str | None:
            etag = self.client.put(uri, parsed.bucket, parsed.key, data, md5_b64)
            if is_md5(etag) and etag != digest.hexdigest():
                raise RetryableError(f"upload of {uri}: the server's ETag does not match the MD5 sent")
            return etag

        etag = with_retries(attempt, self.config.retry, f"upload {uri}")
        return ObjectInfo(uri, parsed.key.rsplit("/", 1)[-1], len(data), etag)

    def upload_file(self, src: Path, uri: str, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        parsed = remote(uri)
        size = src.stat().st_size
        meter = ProgressMeter(uri, size, 1, progress)
        if size < self.config.multipart_threshold:
            info = self.put_bytes(src.read_bytes(), uri)
            meter.add(size, objects=1)
            return info
        etag = self._upload_multipart(src, size, parsed, uri, meter)
        meter.add(0, objects=1)
        return ObjectInfo(uri, parsed.key.rsplit("/", 1)[-1], size, etag)

    def _part_size(self, size: int) -> int:
        part = self.config.part_size
        if size > part * MAX_PARTS:
            part = -(-size // MAX_PARTS)
            part = -(-part // MiB) * MiB
        return part

    def _upload_multipart(
        self, src: Path, size: int, parsed: ObjectURI, uri: str, meter: ProgressMeter
    ) -> str:
        bucket, key = parsed.bucket, parsed.key
        part = self._part_size(size)
        offsets = list(range(0, size, part))
        upload_id = with_retries(
            lambda: self.client.create_multipart(uri, bucket, key), self.config.retry, f"upload {uri}"
        )
        fd = os.open(src, os.O_RDONLY)
        try:

            def task(number: int, offset: int) -> Callable[[threading.Event], str]:
                def run(cancel: threading.Event) -> str:
                    if cancel.is_set():
                        raise Cancelled()
                    data = os.pread(fd, min(part, size - offset), offset)
                    digest = hashlib.md5(data)
                    md5_b64 = base64.b64encode(digest.digest()).decode()

                    def attempt() -> str:
                        etag = self.client.upload_part(uri, bucket, key, upload_id, number, data, md5_b64)
                        if is_md5(etag) and etag != digest.hexdigest():
                            raise RetryableError(f"part {number} of {uri}: the server's ETag does not match")
                        return digest.hexdigest()

                    etag = with_retries(attempt, self.config.retry, f"upload part {number} of {uri}")
                    meter.add(len(data))
                    return etag

                return run

            etags = run_all([task(n, off) for n, off in enumerate(offsets, start=1)], self.config.concurrency)
            expected = hashlib.md5(b"".join(bytes.fromhex(e) for e in etags)).hexdigest() + f"-{len(etags)}"
            etag = self._complete(uri, bucket, key, upload_id, etags, expected)
        except BaseException:
            self._abort(uri, bucket, key, upload_id)
            raise
        finally:
            os.close(fd)
        return etag

    def _complete(
        self, uri: str, bucket: str, key: str, upload_id: str, etags: builtins.list[str], expected: str
    ) -> str:
        def attempt() -> str:
            try:
                etag = self.client.complete_multipart(uri, bucket, key, upload_id, etags)
            except NotFoundError:
                # A retried complete whose first try succeeded finds the upload gone: check the object.
                found = self.client.head(uri, bucket, key)
                if found is None or found[1] != expected:
                    raise
                return expected
            return etag or expected

        etag = with_retries(attempt, self.config.retry, f"complete upload of {uri}")
        if "-" in etag and etag != expected:
            self.delete(uri)
            raise IntegrityError(f"upload of {uri}: the server assembled different parts (ETag {etag})")
        return etag

    def _abort(self, uri: str, bucket: str, key: str, upload_id: str) -> None:
        try:
            with_retries(
                lambda: self.client.abort_multipart(uri, bucket, key, upload_id),
                self.config.retry,
                f"abort upload of {uri}",
            )
        except StorageError as error:
            # The parts stay invisible (an unfinished upload is never an object); the bucket's
            # lifecycle rule for incomplete uploads reclaims them.
            log.warning("could not abort the multipart upload of %s: %s", uri, error)

    def delete(self, uri: str) -> None:
        parsed = remote(uri)
        with_retries(
            lambda: self.client.delete(uri, parsed.bucket, parsed.key), self.config.retry, f"delete {uri}"
        )
