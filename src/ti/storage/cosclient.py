"""Thin wrapper over cos-python-sdk-v5: one method per request, SDK errors turned into ours.

Every method makes exactly one HTTP request and never retries; retry policy lives with the callers,
who know what a whole attempt is (a GET includes reading its body).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

import requests
import urllib3
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_exception import CosClientError, CosServiceError

from ti import contract
from ti.storage.base import TransferConfig
from ti.storage.errors import AccessDeniedError, NotFoundError, StorageError
from ti.storage.retry import RetryableError
from ti.storage.settings import CosSettings

T = TypeVar("T")

# The SDK logs request headers (the session token among them) at debug level and every 404 of a
# HEAD at warning level; all of its errors reach the caller through ours instead.
_sdk_log = logging.getLogger("qcloud_cos")
if _sdk_log.level == logging.NOTSET:
    _sdk_log.setLevel(logging.CRITICAL)

_CODE_RE = re.compile(r"<Code>([^<]{1,100})</Code>")
_TRANSIENT = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    TimeoutError,
)

CREDENTIALS_HINT = (
    f"check the credentials in the job's Secret or the environment ({contract.TENCENTCLOUD_SECRETID}, "
    f"{contract.TENCENTCLOUD_SECRETKEY}, {contract.TENCENTCLOUD_SESSIONTOKEN}) and the bucket's permissions"
)


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str | None


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


def _error_code(error: CosServiceError) -> str:
    digest = error.get_digest_msg()
    if isinstance(digest, dict) and digest.get("code"):
        return str(digest["code"])
    match = _CODE_RE.search(str(error.get_origin_msg() or ""))
    return match.group(1) if match else "Unknown"


def _network_env(settings: CosSettings) -> tuple[dict[str, str], str | None]:
    """Proxies (honouring no_proxy for the COS host) and a CA bundle, as requests would find them."""
    host = settings.ip or (
        f"bucket.{settings.endpoint}" if settings.endpoint else f"bucket.cos.{settings.region}.myqcloud.com"
    )
    proxies = {} if urllib.request.proxy_bypass(host.split(":")[0]) else dict(urllib.request.getproxies())
    proxies.pop("no", None)
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
    return proxies, ca_bundle


class CosClient:
    """One SDK client with a connection pool sized for the transfer concurrency."""

    def __init__(self, settings: CosSettings, config: TransferConfig) -> None:
        self.settings = settings
        options: dict[str, Any] = {
            "Region": settings.region,
            "SecretId": settings.secret_id,
            "SecretKey": settings.secret_key,
            "Token": settings.token,
            "Scheme": settings.scheme,
            "Timeout": config.timeout_seconds,
            "PoolConnections": config.concurrency,
            "PoolMaxSize": config.concurrency,
        }
        if settings.ip:
            options.update(IP=settings.ip, Port=settings.port)
        if settings.endpoint:
            options.update(Endpoint=settings.endpoint)
        proxies, ca_bundle = _network_env(settings)
        if proxies:
            options["Proxies"] = proxies
        if ca_bundle:
            options["VerifySSL"] = ca_bundle
        session = requests.Session()
        # The environment is read once here instead of by requests on every call (scanning
        # os.environ for proxies cost ~0.7 ms a request, a third of a small object's client time).
        session.trust_env = False
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(config.concurrency, 4))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # retry=0: the SDK's own retries sleep linearly and would multiply ours.
        self.sdk = CosS3Client(CosConfig(**options), retry=0, session=session)

    def scrub(self, text: str) -> str:
        for secret in self.settings.secrets():
            text = text.replace(secret, "***")
        return text

    def call(self, uri: str, action: str, fn: Callable[[], T]) -> T:
        """Run one SDK call; raise RetryableError for transient failures, StorageError otherwise."""
        try:
            return fn()
        except Exception as error:
            raise self.translate(error, uri, action) from None

    def translate(self, error: BaseException, uri: str, action: str) -> Exception:
        if isinstance(error, StorageError | RetryableError):
            return error
        if isinstance(error, CosServiceError):
            status = int(error.get_status_code())
            code = _error_code(error)
            if status in (401, 403):
                return AccessDeniedError(f"access denied to {uri} (HTTP {status} {code}): {CREDENTIALS_HINT}")
            if status == 404:
                if code == "NoSuchBucket":
                    bucket = uri.split("://", 1)[-1].split("/", 1)[0]
                    return NotFoundError(f"bucket {bucket} does not exist ({uri})")
                return NotFoundError(f"no such object: {uri}")
            if status >= 500 or status in (408, 429):
                return RetryableError(f"{action} {uri}: HTTP {status} {code}")
            return StorageError(f"{action} {uri} failed: HTTP {status} {code}")
        if isinstance(error, (CosClientError, *_TRANSIENT)):
            return RetryableError(f"{action} {uri}: {self.scrub(str(error)) or type(error).__name__}")
        return StorageError(f"{action} {uri} failed: {type(error).__name__}: {self.scrub(str(error))}")

    # ---- requests ------------------------------------------------------------------------------

    def list_page(self, uri: str, bucket: str, prefix: str, marker: str) -> tuple[list[Listed], str | None]:
        page = self.call(
            uri,
            "list",
            lambda: self.sdk.list_objects(Bucket=bucket, Prefix=prefix, Marker=marker, MaxKeys=1000),
        )
        contents = page.get("Contents") or []
        listed = [Listed(c["Key"], int(c["Size"]), _etag(c.get("ETag"))) for c in contents]
        if str(page.get("IsTruncated", "false")).lower() != "true" or not listed:
            return listed, None
        return listed, page.get("NextMarker") or listed[-1].key

    def head(self, uri: str, bucket: str, key: str) -> tuple[int, str | None] | None:
        try:
            headers = self.call(uri, "stat", lambda: self.sdk.head_object(Bucket=bucket, Key=key))
        except NotFoundError:
            return None
        return int(headers["Content-Length"]), _etag(headers.get("ETag"))

    def get(
        self,
        uri: str,
        bucket: str,
        key: str,
        *,
        first: int | None = None,
        last: int | None = None,
        if_match: str | None = None,
    ) -> tuple[dict[str, str], BinaryIO]:
        """Headers and the raw body stream of a GET (a byte range when `first`/`last` are given)."""
        kwargs: dict[str, Any] = {}
        if first is not None:
            kwargs["Range"] = f"bytes={first}-{last}"
        if if_match:
            kwargs["IfMatch"] = f'"{if_match}"'
        response = self.call(
            uri,
            "download",
            lambda: self.sdk.get_object(Bucket=bucket, Key=key, KeySimplifyCheck=False, **kwargs),
        )
        body = response.pop("Body")
        return response, body.get_raw_stream()

    def put(self, uri: str, bucket: str, key: str, data: bytes, md5_b64: str) -> str | None:
        headers = self.call(
            uri, "upload", lambda: self.sdk.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=md5_b64)
        )
        return _etag(headers.get("ETag"))

    def create_multipart(self, uri: str, bucket: str, key: str) -> str:
        result = self.call(uri, "upload", lambda: self.sdk.create_multipart_upload(Bucket=bucket, Key=key))
        return str(result["UploadId"])

    def upload_part(
        self, uri: str, bucket: str, key: str, upload_id: str, number: int, data: bytes, md5_b64: str
    ) -> str | None:
        headers = self.call(
            uri,
            f"upload part {number} of",
            lambda: self.sdk.upload_part(
                Bucket=bucket, Key=key, Body=data, PartNumber=number, UploadId=upload_id, ContentMD5=md5_b64
            ),
        )
        return _etag(headers.get("ETag"))

    def complete_multipart(
        self, uri: str, bucket: str, key: str, upload_id: str, etags: list[str]
    ) -> str | None:
        parts = [{"PartNumber": n, "ETag": f'"{etag}"'} for n, etag in enumerate(etags, start=1)]
        result = self.call(
            uri,
            "complete upload of",
            lambda: self.sdk.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Part": parts}
            ),
        )
        return _etag(result.get("ETag"))

    def abort_multipart(self, uri: str, bucket: str, key: str, upload_id: str) -> None:
        self.call(
            uri,
            "abort upload of",
            lambda: self.sdk.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id),
        )

    def delete(self, uri: str, bucket: str, key: str) -> None:
        with contextlib.suppress(NotFoundError):
            self.call(uri, "delete", lambda: self.sdk.delete_object(Bucket=bucket, Key=key))
