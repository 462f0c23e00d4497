"""`cos://` (and `s3://`) store: parallel, ranged, verified, retried transfers over cos-python-sdk-v5."""

from __future__ import annotations

import base64
import builtins
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ti.storage.base import MiB, ObjectInfo, ProgressCallback, ProgressMeter, TransferConfig
from ti.storage.cosclient import CosClient
from ti.storage.errors import IntegrityError, InvalidURIError, NotFoundError, StorageError
from ti.storage.parallel import Cancelled, run_all
from ti.storage.retry import RetryableError, with_retries
from ti.storage.settings import CosSettings
from ti.storage.uri import ObjectURI, parse_uri, target_path

log = logging.getLogger("ti.storage")

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_PARTS = 10_000


def _remote(uri: str) -> ObjectURI:
    parsed = parse_uri(uri)
    if parsed.is_local:
        raise InvalidURIError(f"not a cos:// URI: {uri}")
    return parsed


def _is_md5(etag: str | None) -> bool:
    return bool(etag and _MD5_RE.match(etag))


def _partial(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.ti-partial")


@dataclass
class _Attempt:
    """Bytes reported to the progress meter by one attempt, taken back if the attempt fails."""

    meter: ProgressMeter
    reported: int = 0

    def add(self, n: int) -> None:
        self.reported += n
        self.meter.add(n)

    def rollback(self) -> None:
        if self.reported:
            self.meter.add(-self.reported)
            self.reported = 0


class _RangedFile:
    """One large object downloaded as byte ranges into a preallocated partial file.

    Each range writes through its own descriptor, so a failing range can remove the partial file
    without pulling a descriptor from under the others. When the object's ETag is a plain MD5 (a
    single-PUT object), the finished prefix is hashed while later ranges are still downloading.
    """

    def __init__(self, info: ObjectInfo, dest: Path, ranges: list[tuple[int, int]], verify: bool) -> None:
        self.info = info
        self.dest = dest
        self.tmp = _partial(dest)
        self.ranges = ranges
        with open(self.tmp, "wb") as out:
            out.truncate(info.size)
        self._lock = threading.Lock()
        self._done = [False] * len(ranges)
        self._remaining = len(ranges)
        self._next_hash = 0
        self._md5 = hashlib.md5() if verify and _is_md5(info.etag) else None
        self.failed = False

    def range_done(self, index: int) -> bool:
        """Mark a range written; True when it was the last one (the caller then finishes the file)."""
        with self._lock:
            self._done[index] = True
            self._remaining -= 1
            if self._md5 is not None:
                self._hash_ready()
            return self._remaining == 0

    def _hash_ready(self) -> None:
        assert self._md5 is not None
        with open(self.tmp, "rb") as data:
            while self._next_hash < len(self.ranges) and self._done[self._next_hash]:
                first, last = self.ranges[self._next_hash]
                data.seek(first)
                left = last + 1 - first
                while left > 0:
                    chunk = data.read(min(8 * MiB, left))
                    if not chunk:
                        break
                    self._md5.update(chunk)
                    left -= len(chunk)
                self._next_hash += 1

    def finish(self) -> None:
        if self._md5 is not None and self._md5.hexdigest() != self.info.etag:
            self.discard()
            raise IntegrityError(f"checksum mismatch downloading {self.info.uri}: MD5 differs from the ETag")
        if self.tmp.stat().st_size != self.info.size:
            self.discard()
            raise IntegrityError(f"size mismatch downloading {self.info.uri}")
        os.replace(self.tmp, self.dest)

    def discard(self) -> None:
        self.failed = True
        self.tmp.unlink(missing_ok=True)


class CosStore:
    """Objects in COS (or any S3-compatible server reached through the COS SDK)."""

    def __init__(self, settings: CosSettings, config: TransferConfig | None = None) -> None:
        self.config = config or TransferConfig()
        self.client = CosClient(settings, self.config)

    # ---- reading -------------------------------------------------------------------------------

    def list(self, uri: str) -> Iterator[ObjectInfo]:
        parsed = _remote(uri)
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
        parsed = _remote(uri)
        if not parsed.key or parsed.key.endswith("/"):
            return None
        found = with_retries(
            lambda: self.client.head(uri, parsed.bucket, parsed.key), self.config.retry, f"stat {uri}"
        )
        if found is None:
            return None
        return ObjectInfo(uri, parsed.key.rsplit("/", 1)[-1], found[0], found[1])

    def get_bytes(self, uri: str) -> bytes:
        parsed = _remote(uri)

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
        run_all(self._plan(info, dest, meter), self.config.concurrency)
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
            tasks += self._plan(info, dest, meter)
        run_all(tasks, self.config.concurrency)
        return objects

    def _plan(
        self, info: ObjectInfo, dest: Path, meter: ProgressMeter
    ) -> builtins.list[Callable[[threading.Event], None]]:
        """Tasks that download one object: one GET, or byte ranges for an object above the threshold."""
        cfg = self.config
        if info.size <= cfg.range_threshold:
            return [lambda cancel: self._get_whole(info, dest, meter)]
        step = cfg.range_size
        ranges = [(first, min(first + step, info.size) - 1) for first in range(0, info.size, step)]
        ranged: _RangedFile | None = None
        lock = threading.Lock()

        def opened() -> _RangedFile:
            nonlocal ranged
            with lock:  # created by the first range to run, so queued objects take no disk yet
                if ranged is None:
                    ranged = _RangedFile(info, dest, ranges, cfg.verify_checksums)
                return ranged

        def task(index: int) -> Callable[[threading.Event], None]:
            def run(cancel: threading.Event) -> None:
                target = opened()
                try:
                    self._get_range(info, target, index, meter, cancel)
                    if target.range_done(index):
                        target.finish()
                        meter.add(0, objects=1)
                except BaseException:
                    target.discard()
                    raise

            return run

        return [task(i) for i in range(len(ranges))]

    def _get_whole(self, info: ObjectInfo, dest: Path, meter: ProgressMeter) -> None:
        parsed = _remote(info.uri)
        tmp = _partial(dest)
        verify = self.config.verify_checksums and _is_md5(info.etag)

        def attempt() -> None:
            progress = _Attempt(meter)
            md5 = hashlib.md5() if verify else None
            try:
                _, stream = self.client.get(info.uri, parsed.bucket, parsed.key)
                written = 0
                with stream, open(tmp, "wb") as out:
                    while True:
                        chunk = self._read(info.uri, stream)
                        if not chunk:
                            break
                        out.write(chunk)
                        if md5 is not None:
                            md5.update(chunk)
                        written += len(chunk)
                        progress.add(len(chunk))
                if written != info.size:
                    raise RetryableError(f"short read of {info.uri}: {written} of {info.size} bytes")
                if md5 is not None and md5.hexdigest() != info.etag:
                    raise RetryableError(
                        f"checksum mismatch downloading {info.uri}: MD5 differs from the ETag"
                    )
            except BaseException:
                progress.rollback()
                tmp.unlink(missing_ok=True)
                raise

        with_retries(attempt, self.config.retry, f"download {info.uri}")
        os.replace(tmp, dest)
        meter.add(0, objects=1)

    def _get_range(
        self, info: ObjectInfo, target: _RangedFile, index: int, meter: ProgressMeter, cancel: threading.Event
    ) -> None:
        parsed = _remote(info.uri)
        first, last = target.ranges[index]

        def attempt() -> None:
            if cancel.is_set() or target.failed:
                raise Cancelled()
            progress = _Attempt(meter)
            try:
                # If-Match pins every range to the same version of the object.
                _, stream = self.client.get(
                    info.uri, parsed.bucket, parsed.key, first=first, last=last, if_match=info.etag
                )
                offset = first
                with stream, open(target.tmp, "r+b") as out:
                    out.seek(first)
                    while offset <= last:
                        if cancel.is_set() or target.failed:
                            raise Cancelled()
                        chunk = self._read(info.uri, stream)
                        if not chunk:
                            break
                        if offset + len(chunk) > last + 1:
                            raise RetryableError(f"server sent more than the requested range of {info.uri}")
                        out.write(chunk)
                        offset += len(chunk)
                        progress.add(len(chunk))
                if offset != last + 1:
                    raise RetryableError(f"short read of {info.uri} bytes {first}-{last}")
            except BaseException:
                progress.rollback()
                raise

        with_retries(attempt, self.config.retry, f"download {info.uri} bytes {first}-{last}")

    def _read(self, uri: str, stream: BinaryIO) -> bytes:
        try:
            return stream.read(self.config.chunk_size)
        except Exception as error:
            raise self.client.translate(error, uri, "download") from None

    # ---- writing -------------------------------------------------------------------------------

    def put_bytes(self, data: bytes, uri: str) -> ObjectInfo:
        parsed = _remote(uri)
        digest = hashlib.md5(data)
        md5_b64 = base64.b64encode(digest.digest()).decode()

        def attempt() -> str | None:
            etag = self.client.put(uri, parsed.bucket, parsed.key, data, md5_b64)
            if _is_md5(etag) and etag != digest.hexdigest():
                raise RetryableError(f"upload of {uri}: the server's ETag does not match the MD5 sent")
            return etag

        etag = with_retries(attempt, self.config.retry, f"upload {uri}")
        return ObjectInfo(uri, parsed.key.rsplit("/", 1)[-1], len(data), etag)

    def upload_file(self, src: Path, uri: str, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        parsed = _remote(uri)
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
                        if _is_md5(etag) and etag != digest.hexdigest():
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
        parsed = _remote(uri)
        with_retries(
            lambda: self.client.delete(uri, parsed.bucket, parsed.key), self.config.retry, f"delete {uri}"
        )
