"""Directories as tar.gz archives: packing for upload, and extraction that refuses to escape."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from ti.storage.errors import UnsafeKeyError
from ti.storage.uri import safe_relative_path, target_path

# Model weights barely compress; level 1 keeps packing from dominating the upload time.
COMPRESS_LEVEL = 1
DEFAULT_MAX_EXTRACT_BYTES = 2 * 1024**3
DEFAULT_MAX_MEMBERS = 200_000


class UnsafeArchiveError(UnsafeKeyError):
    """An archive member is absolute, climbs out with `..`, links outside, is a device, or too big."""


def pack_dir(src_dir: Path, archive: Path) -> int:
    """Write `src_dir`'s contents (names relative to it, sorted) to `archive` as tar.gz; return its size."""
    with tarfile.open(archive, "w:gz", compresslevel=COMPRESS_LEVEL) as tar:
        for dirpath, dirnames, filenames in os.walk(src_dir):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                path = Path(dirpath, name)
                tar.add(path, arcname=path.relative_to(src_dir).as_posix(), recursive=False)
    return archive.stat().st_size


def _member_name(member: tarfile.TarInfo) -> str | None:
    """The member's name relative to the archive root, or None for the root itself (`.`, `./`)."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/") if member.isdir() else name
    return None if name in ("", ".") else name


def _check_link(member: tarfile.TarInfo, name: str, seen_files: set[str]) -> None:
    target = member.linkname
    if member.issym():
        if target.startswith("/"):
            raise UnsafeArchiveError(f"archive member {name!r} is a symlink to an absolute path {target!r}")
        # A relative symlink resolves against the member's own directory.
        parent = PurePosixPath(name).parent
        parts: list[str] = [p for p in parent.parts if p != "."]
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise UnsafeArchiveError(
                        f"archive member {name!r} is a symlink pointing outside: {target!r}"
                    )
                parts.pop()
            else:
                parts.append(part)
        return
    # Hard links name another member of the same archive; it must be a file we already accepted.
    link = target[2:] if target.startswith("./") else target
    try:
        safe_relative_path(link)
    except UnsafeKeyError:
        raise UnsafeArchiveError(f"archive member {name!r} is a hard link to {target!r} outside") from None
    if link not in seen_files:
        raise UnsafeArchiveError(
            f"archive member {name!r} is a hard link to {target!r}, not a file before it"
        )


def _climbs_through(name: str, target: str, links: set[str]) -> str | None:
    """The archive symlink that `name -> target` steps out of with `..`, if any: read lexically the
    target stays inside, but followed, `link/..` is the parent of wherever `link` points."""
    parts = [p for p in PurePosixPath(name).parent.parts if p != "."]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if "/".join(parts) in links:
                return "/".join(parts)
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return None


def _validate(archive: Path, max_bytes: int, max_members: int) -> None:
    total = 0
    files: set[str] = set()
    links: set[str] = set()
    targets: dict[str, str] = {}
    with tarfile.open(archive, "r:*") as tar:
        for count, member in enumerate(tar, start=1):
            if count > max_members:
                raise UnsafeArchiveError(f"archive has more than {max_members} members")
            name = _member_name(member)
            if name is None:
                continue
            try:
                parts = safe_relative_path(name).parts
            except UnsafeKeyError as error:
                raise UnsafeArchiveError(f"archive member refused: {error}") from None
            # Below a symlinked directory the lexical checks no longer describe where a path lands.
            for depth in range(1, len(parts)):
                if "/".join(parts[:depth]) in links:
                    raise UnsafeArchiveError(f"archive member {name!r} lies below a symlink")
            if member.isreg():
                total += member.size
                if total > max_bytes:
                    raise UnsafeArchiveError(f"archive expands to more than {max_bytes} bytes (the limit)")
                files.add(name)
            elif member.issym() or member.islnk():
                _check_link(member, name, files)
                if member.islnk():
                    files.add(name)
                else:
                    links.add(name)
                    targets[name] = member.linkname
            elif not member.isdir():
                raise UnsafeArchiveError(f"archive member {name!r} is a device, fifo or special file")
    # Once every symlink is known (a link may name one that comes later in the archive).
    for name, target in targets.items():
        through = _climbs_through(name, target, links)
        if through is not None:
            raise UnsafeArchiveError(
                f"archive member {name!r} is a symlink to {target!r}, which climbs out through the "
                f"symlink {through!r}"
            )


def extract_tarball(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_EXTRACT_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> list[str]:
    """Extract a (gzipped) tar into `dest` after checking every member; return the names extracted.

    The whole archive is checked before anything is written, so a refused archive leaves `dest`
    untouched. Ownership is not restored and set-id bits are dropped.
    """
    _validate(archive, max_bytes, max_members)
    dest.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = _member_name(member)
            if name is None:
                continue
            path = target_path(dest, name)
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            if member.issym():
                path.symlink_to(member.linkname)
            elif member.islnk():
                link = member.linkname[2:] if member.linkname.startswith("./") else member.linkname
                shutil.copyfile(target_path(dest, link), path)
            else:
                source = tar.extractfile(member)
                assert source is not None  # regular files always have data
                with source, open(path, "wb") as out:
                    shutil.copyfileobj(source, out, 1024 * 1024)
                os.chmod(path, stat.S_IMODE(member.mode) & 0o777 | 0o600)
            names.append(name)
    return names
