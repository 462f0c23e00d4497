"""Downloads of the `cos://` store: one GET per small object, verified byte ranges for large ones.

Every attempt that fails takes back the bytes it reported, so progress never counts a byte twice; a
range that fails removes the partial file, and the others stop at their next chunk.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ti.storage.base import MiB, ObjectInfo, ProgressMeter, TransferConfig
from ti.storage.cosclient import CosClient
from ti.storage.errors import IntegrityError, InvalidURIError
from ti.storage.parallel import Cancelled
from ti.storage.retry import RetryableError, with_retries
from ti.storage.uri import ObjectURI, parse_uri

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


def remote(uri: str) -> ObjectURI:
    parsed = parse_uri(uri)
    if parsed.is_local:
        raise InvalidURIError(f"not a cos:// URI: {uri}")
    return parsed


def is_md5(etag: str | None) -> bool:
    return bool(etag and _MD5_RE.match(etag))


def partial_path(dest: Path) -> Path:
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
        self.tmp = partial_path(dest)
        self.ranges = ranges
        with open(self.tmp, "wb") as out:
            out.truncate(info.size)
        self._lock = threading.Lock()
        self._done = [False] * len(ranges)
        self._remaining = len(ranges)
        self._next_hash = 0
        self._md5 = hashlib.md5() if verify and is_md5(info.etag) else None
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


class Downloader:
    """Download tasks for `run_all`, through `client`, by `config`'s thresholds, sizes and retries."""

    def __init__(self, client: CosClient, config: TransferConfig) -> None:
        self.client = client
        self.config = config

    def plan(
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
        parsed = remote(info.uri)
        tmp = partial_path(dest)
        verify = self.config.verify_checksums and is_md5(info.etag)

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
        parsed = remote(info.uri)
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
