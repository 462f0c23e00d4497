"""Object storage for the TI data plane: `cos://<bucket-appid>/<prefix>` (and `s3://`) through
cos-python-sdk-v5, `file://` for local mode, behind one small interface (`ObjectStore`)."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from ti.storage.archive import DEFAULT_MAX_EXTRACT_BYTES, UnsafeArchiveError, extract_tarball, pack_dir
from ti.storage.base import MiB, ObjectInfo, ObjectStore, Progress, ProgressCallback, TransferConfig
from ti.storage.cos import CosStore
from ti.storage.errors import (
    AccessDeniedError,
    IntegrityError,
    InvalidURIError,
    NotFoundError,
    StorageError,
    UnsafeKeyError,
)
from ti.storage.local import FileStore
from ti.storage.retry import RetryPolicy
from ti.storage.settings import CosSettings, MissingCredentialsError
from ti.storage.uri import ObjectURI, parse_uri, safe_relative_path, target_path

__all__ = [
    "DEFAULT_MAX_EXTRACT_BYTES",
    "AccessDeniedError",
    "CosSettings",
    "CosStore",
    "FileStore",
    "IntegrityError",
    "InvalidURIError",
    "MiB",
    "MissingCredentialsError",
    "NotFoundError",
    "ObjectInfo",
    "ObjectStore",
    "ObjectURI",
    "Progress",
    "ProgressCallback",
    "RetryPolicy",
    "StorageError",
    "TransferConfig",
    "UnsafeArchiveError",
    "UnsafeKeyError",
    "extract_tarball",
    "pack_dir",
    "parse_uri",
    "safe_relative_path",
    "store_for",
    "target_path",
    "upload_dir",
]

_stores: dict[tuple[CosSettings, TransferConfig], CosStore] = {}
_lock = threading.Lock()


def store_for(
    uri: str, environ: Mapping[str, str] | None = None, config: TransferConfig | None = None
) -> ObjectStore:
    """The store for `uri`'s scheme. COS settings come from `environ` (default: `os.environ`).

    COS stores are shared per settings, so repeated calls reuse one connection pool.
    """
    parsed = parse_uri(uri)
    if parsed.is_local:
        return FileStore()
    settings = CosSettings.from_env(environ)
    key = (settings, config or TransferConfig())
    with _lock:
        if key not in _stores:
            _stores[key] = CosStore(settings, key[1])
        return _stores[key]


def upload_dir(
    store: ObjectStore,
    src_dir: Path,
    uri: str,
    *,
    progress: ProgressCallback | None = None,
    tmp_dir: Path | None = None,
) -> ObjectInfo:
    """Pack `src_dir` as tar.gz and upload it to `uri` (the object appears whole or not at all)."""
    fd, name = tempfile.mkstemp(prefix="ti-upload-", suffix=".tar.gz", dir=tmp_dir)
    os.close(fd)
    archive = Path(name)
    try:
        pack_dir(src_dir, archive)
        return store.upload_file(archive, uri, progress=progress)
    finally:
        archive.unlink(missing_ok=True)
