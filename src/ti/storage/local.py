"""`file://` store for local mode: the same interface as COS over a local directory tree."""

from __future__ import annotations

import builtins
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ti.storage.base import ObjectInfo, ProgressCallback, ProgressMeter
from ti.storage.errors import InvalidURIError, NotFoundError
from ti.storage.uri import parse_uri, target_path

_COPY_CHUNK = 1024 * 1024


def _path(uri: str) -> Path:
    parsed = parse_uri(uri)
    if not parsed.is_local:
        raise InvalidURIError(f"not a file:// URI: {uri}")
    return Path(parsed.key)


def _copy(src: Path, dest: Path, meter: ProgressMeter) -> None:
    """Copy through a temporary sibling and rename, so readers never see a half-written file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with open(src, "rb") as source, os.fdopen(fd, "wb") as target:
            while chunk := source.read(_COPY_CHUNK):
                target.write(chunk)
                meter.add(len(chunk))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileStore:
    """Objects are files; a prefix is a directory."""

    def list(self, uri: str) -> Iterator[ObjectInfo]:
        root = _path(uri)
        if not root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                if path.is_symlink() or not path.is_file():
                    continue
                relative = path.relative_to(root).as_posix()
                yield ObjectInfo(f"file://{path}", relative, path.stat().st_size)

    def stat(self, uri: str) -> ObjectInfo | None:
        path = _path(uri)
        if not path.is_file():
            return None
        return ObjectInfo(f"file://{path}", path.name, path.stat().st_size)

    def download_file(self, uri: str, dest: Path, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        info = self.stat(uri)
        if info is None:
            raise NotFoundError(f"no such object: {uri}")
        _copy(_path(uri), dest, ProgressMeter(uri, info.size, 1, progress))
        return info

    def download_prefix(
        self, uri: str, dest_dir: Path, *, progress: ProgressCallback | None = None
    ) -> builtins.list[ObjectInfo]:
        single = self.stat(uri)
        objects = [single] if single else list(self.list(uri))
        meter = ProgressMeter(uri, sum(o.size for o in objects), len(objects), progress)
        dest_dir.mkdir(parents=True, exist_ok=True)
        for info in objects:
            _copy(_path(info.uri), target_path(dest_dir, info.relative), meter)
            meter.add(0, objects=1)
        return objects

    def upload_file(self, src: Path, uri: str, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        size = src.stat().st_size
        _copy(src, _path(uri), ProgressMeter(uri, size, 1, progress))
        return ObjectInfo(uri, _path(uri).name, size)

    def put_bytes(self, data: bytes, uri: str) -> ObjectInfo:
        dest = _path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        with os.fdopen(fd, "wb") as target:
            target.write(data)
        os.replace(tmp, dest)
        return ObjectInfo(uri, dest.name, len(data))

    def get_bytes(self, uri: str) -> bytes:
        path = _path(uri)
        if not path.is_file():
            raise NotFoundError(f"no such object: {uri}")
        return path.read_bytes()

    def delete(self, uri: str) -> None:
        path = _path(uri)
        if not path.is_dir():
            path.unlink(missing_ok=True)
