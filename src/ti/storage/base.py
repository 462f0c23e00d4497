"""The interface both stores (`file://`, `cos://`) implement, and the values they exchange."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ti.storage.retry import RetryPolicy

MiB = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """One object: its URI, the key relative to the listed prefix, its size and (when known) ETag."""

    uri: str
    relative: str
    size: int
    etag: str | None = None


@dataclass(frozen=True)
class Progress:
    """A transfer's progress: bytes moved so far out of `total_bytes` (both cumulative)."""

    uri: str
    transferred_bytes: int
    total_bytes: int
    done_objects: int = 0
    total_objects: int = 1


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class TransferConfig:
    """How transfers are split and retried. Defaults suit both COS and the loopback test server."""

    concurrency: int = 8
    multipart_threshold: int = 64 * MiB
    part_size: int = 16 * MiB
    range_threshold: int = 64 * MiB
    range_size: int = 32 * MiB
    chunk_size: int = 1 * MiB
    verify_checksums: bool = True
    timeout_seconds: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class ProgressMeter:
    """Thread-safe accumulator that turns per-chunk byte counts into `Progress` callbacks."""

    def __init__(
        self, uri: str, total_bytes: int, total_objects: int, callback: ProgressCallback | None
    ) -> None:
        self._uri = uri
        self._total_bytes = total_bytes
        self._total_objects = total_objects
        self._callback = callback
        self._lock = threading.Lock()
        self._bytes = 0
        self._objects = 0

    def add(self, nbytes: int, objects: int = 0) -> None:
        if self._callback is None:
            return
        with self._lock:
            self._bytes += nbytes
            self._objects += objects
            event = Progress(self._uri, self._bytes, self._total_bytes, self._objects, self._total_objects)
            # Called under the lock so events reach the callback in order.
            self._callback(event)


class ObjectStore(Protocol):
    """What the toolkit, the SDK and local mode need from a store; URIs are absolute everywhere."""

    def list(self, uri: str) -> Iterator[ObjectInfo]:
        """Every object below `uri` taken as a directory prefix, paginated lazily."""
        ...

    def stat(self, uri: str) -> ObjectInfo | None:
        """The object at exactly `uri`, or None."""
        ...

    def download_file(self, uri: str, dest: Path, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        """One object to `dest`, written atomically (a temporary name, renamed when verified)."""
        ...

    def download_prefix(
        self, uri: str, dest_dir: Path, *, progress: ProgressCallback | None = None
    ) -> builtins.list[ObjectInfo]:
        """Every object below `uri` into `dest_dir`, or the single object `uri` names into `dest_dir`."""
        ...

    def upload_file(self, src: Path, uri: str, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        """One file to `uri`; the object appears whole or not at all."""
        ...

    def put_bytes(self, data: bytes, uri: str) -> ObjectInfo: ...

    def get_bytes(self, uri: str) -> bytes: ...

    def delete(self, uri: str) -> None:
        """Remove the object at `uri`; a missing object is not an error."""
        ...
