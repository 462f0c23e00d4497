"""Object URIs (`cos://`, `s3://`, `file://`) and the key-safety rules for mapping keys to files."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ti.storage.errors import InvalidURIError, UnsafeKeyError

REMOTE_SCHEMES = ("cos", "s3")
SCHEMES = (*REMOTE_SCHEMES, "file")

# COS bucket names are `<name>-<appid>`; requiring the appid here turns a confusing 404 from the
# service into an error that says what is missing.
_COS_BUCKET_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?-[0-9]{5,}$")
_S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ObjectURI:
    """A parsed object URI. For `file://` the bucket is empty and the key is an absolute path."""

    scheme: str
    bucket: str
    key: str

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.key}"
        return f"{self.scheme}://{self.bucket}/{self.key}"

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def join(self, *parts: str) -> ObjectURI:
        """The URI of `parts` below this one (`cos://b/a` + `x/y` → `cos://b/a/x/y`)."""
        key = self.key.rstrip("/")
        for part in parts:
            part = part.strip("/")
            if part:
                key = f"{key}/{part}" if key else part
        return ObjectURI(self.scheme, self.bucket, key)

    def as_dir_prefix(self) -> str:
        """The key as a listing prefix for "everything below": `a/b` → `a/b/`, the bucket root → ``."""
        key = self.key.rstrip("/")
        return f"{key}/" if key else ""


def parse_uri(uri: str) -> ObjectURI:
    """Parse `cos://<bucket-appid>/<key>`, `s3://<bucket>/<key>` or `file://<absolute path>`."""
    if not isinstance(uri, str) or "://" not in uri:
        raise InvalidURIError(
            f"not an object URI: {uri!r}; expected cos://<bucket-appid>/<prefix> or file://<path>"
        )
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidURIError(f"unsupported scheme {scheme!r} in {uri!r}; use one of {', '.join(SCHEMES)}")
    if _CONTROL_RE.search(rest):
        raise InvalidURIError(f"control characters in URI {uri!r}")
    if scheme == "file":
        if not rest.startswith("/"):
            raise InvalidURIError(f"file URI must hold an absolute path: {uri!r}")
        return ObjectURI("file", "", os.path.normpath(rest) if rest != "/" else "/")
    bucket, _, key = rest.partition("/")
    pattern = _COS_BUCKET_RE if scheme == "cos" else _S3_BUCKET_RE
    if not pattern.match(bucket):
        hint = "<name>-<appid>, e.g. cos://models-1250000000/prefix" if scheme == "cos" else "a bucket name"
        raise InvalidURIError(f"invalid bucket {bucket!r} in {uri!r}; expected {hint}")
    return ObjectURI(scheme, bucket, key)


def safe_relative_path(relative: str) -> PurePosixPath:
    """Check that a key below a prefix (or an archive member name) stays inside its directory.

    Refuses absolute names, `..` components, empty components and control characters, instead of
    normalising them, so that two keys can never silently land on the same file.
    """
    if not relative:
        raise UnsafeKeyError("empty object name")
    if _CONTROL_RE.search(relative):
        raise UnsafeKeyError(f"control characters in object name {relative!r}")
    if relative.startswith("/") or "\\" in relative or re.match(r"^[A-Za-z]:", relative):
        raise UnsafeKeyError(f"absolute object name {relative!r}")
    parts = relative.split("/")
    if parts[-1] == "":
        parts.pop()  # a trailing slash marks a directory; it is not an empty component
    for part in parts:
        if part == "..":
            raise UnsafeKeyError(f"object name {relative!r} escapes its directory ('..')")
        if part in ("", "."):
            raise UnsafeKeyError(f"object name {relative!r} has an empty or '.' component")
    return PurePosixPath(*parts)


def target_path(root: Path, relative: str) -> Path:
    """`root/relative` after `safe_relative_path`, checked again on the resolved filesystem path."""
    rel = safe_relative_path(relative)
    base = root.resolve()
    path = base.joinpath(*rel.parts)
    # Resolving catches a symlink planted inside root that points elsewhere.
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafeKeyError(f"object name {relative!r} resolves outside {root}")
    return path
