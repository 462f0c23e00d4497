"""Errors of ti.storage. Their messages name the URI and what to do, and never carry a secret."""

from __future__ import annotations


class StorageError(Exception):
    """Any object-store failure that retries could not fix."""


class InvalidURIError(StorageError, ValueError):
    """The URI is not `cos://<bucket-appid>/<key>`, `s3://<bucket>/<key>` or `file://<path>`."""


class UnsafeKeyError(StorageError):
    """An object key or archive member would land outside its target directory."""


class AccessDeniedError(StorageError):
    """The store answered 403 (or a signature error): the credentials or the bucket policy are wrong."""


class NotFoundError(StorageError):
    """The bucket, object or prefix does not exist (or the prefix is empty)."""


class IntegrityError(StorageError):
    """Downloaded or uploaded bytes do not match the object's size or checksum."""
