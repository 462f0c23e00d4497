"""Pack a training source directory into `sourcedir.tar.gz`, leaving out what is never source."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

SKIPPED_DIRS = frozenset(
    {".git", "__pycache__", ".ipynb_checkpoints", ".hg", ".svn", ".mypy_cache", ".pytest_cache"}
)
SKIPPED_SUFFIXES = (".pyc", ".pyo")
ARCHIVE_NAME = "sourcedir.tar.gz"


def files(source_dir: Path) -> list[Path]:
    """The files that go into the archive, relative to `source_dir`, in a stable order."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(source_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            if name.endswith(SKIPPED_SUFFIXES):
                continue
            path = Path(dirpath, name)
            if path.is_file():
                found.append(path.relative_to(source_dir))
    return found


def pack(source_dir: Path, archive: Path) -> Path:
    """Write `source_dir`'s files (names relative to it) to `archive`. Member metadata is normalised
    (owner, modification time), so the same sources always give the same bytes."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with (
        archive.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relative in files(source_dir):
            path = source_dir / relative
            info = tar.gettarinfo(str(path), arcname=relative.as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            with path.open("rb") as data:
                tar.addfile(info, data)
    return archive


def members(archive: Path) -> list[str]:
    """Names of the files in a packed archive."""
    with tarfile.open(archive, "r:gz") as tar:
        return [m.name for m in tar.getmembers() if m.isfile()]
