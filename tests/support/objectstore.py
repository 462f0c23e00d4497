"""A real S3/COS-speaking HTTP server on loopback for tests: moto's S3 backend app served alone.

The server sits behind a small WSGI wrapper that
- verifies COS signatures (`q-sign-algorithm=sha1&q-ak=...`) against the fixture's own credentials, so
  wrong credentials really get a 403 from the server;
- restores the header case the COS SDK reads case-sensitively (`Last-Modified`, `ETag`, ...);
- injects faults on demand: 5xx bursts, connection resets, truncated bodies and stalls;
- serves single-range GETs from the stored object directly, because moto materialises the whole
  object for every ranged GET (a 1 GiB object read 32 times would measure moto, not the client).

`python -m tests.support.objectstore` runs the same server in the foreground (the benchmark does).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest

SECRET_ID = "AKIDtestloopback0000000000000000"
SECRET_KEY = "loopback-secret-key-0000000000000"
REGION = "ap-guangzhou"
APPID = "1250000000"

_HEADER_CASE = {
    "last-modified": "Last-Modified",
    "etag": "ETag",
    "content-length": "Content-Length",
    "content-type": "Content-Type",
    "content-range": "Content-Range",
    "accept-ranges": "Accept-Ranges",
    "x-amz-request-id": "x-cos-request-id",
}

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class FaultRule:
    kind: str  # status | reset | truncate | stall
    count: int
    method: str | None = None
    path_contains: str | None = None
    status: int = 503
    seconds: float = 0.0
    skip: int = 0
    hits: int = 0
    seen: int = 0

    def matches(self, environ: dict[str, Any]) -> bool:
        if self.method and environ["REQUEST_METHOD"] != self.method:
            return False
        return not (self.path_contains and self.path_contains not in environ.get("PATH_INFO", ""))


@dataclass
class FaultInjector:
    """Switch for tests: `inject("status", count=3, status=503, method="GET")` fails the next three GETs.

    Kinds: `status` answers with an error status, `reset` closes the connection without answering,
    `truncate` sends the headers and half the body then closes, `stall` sleeps `seconds` first.
    `skip` lets that many matching requests through before the rule starts failing them.
    """

    rules: list[FaultRule] = field(default_factory=list)
    injected: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(
        self,
        kind: str,
        *,
        count: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        status: int = 503,
        seconds: float = 0.0,
        skip: int = 0,
    ) -> FaultRule:
        if kind not in ("status", "reset", "truncate", "stall"):
            raise ValueError(f"unknown fault kind {kind!r}")
        rule = FaultRule(kind, count, method, path_contains, status, seconds, skip)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.injected = 0

    def take(self, environ: dict[str, Any]) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.hits < rule.count and rule.matches(environ):
                    rule.seen += 1
                    if rule.seen <= rule.skip:
                        continue
                    rule.hits += 1
                    self.injected += 1
                    return rule
        return None


def _error_xml(code: str, message: str, resource: str) -> bytes:
    # The COS SDK digests Code, Message, Resource and RequestId; all four must be present.
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
        f"<Resource>{resource}</Resource><RequestId>{uuid.uuid4().hex}</RequestId>"
        f"<TraceId>loopback</TraceId></Error>"
    ).encode()


def _quote(value: str) -> str:
    return quote(value.encode("latin-1"), "-_.~")


class CosAuthVerifier:
    """Server-side check of the COS V5 request signature (the algorithm of qcloud_cos.cos_auth)."""

    def __init__(self, secret_id: str, secret_key: str, token: str | None) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.token = token

    def check(self, environ: dict[str, Any]) -> tuple[str, str] | None:
        """None when the request is properly signed, else (error code, message)."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if not auth:
            return "AccessDenied", "anonymous access is not allowed"
        fields = dict(part.split("=", 1) for part in auth.split("&") if "=" in part)
        if fields.get("q-ak") != self.secret_id:
            return "InvalidAccessKeyId", "The SecretId you provided does not exist"
        if self.token is not None and environ.get("HTTP_X_COS_SECURITY_TOKEN") != self.token:
            return "InvalidToken", "The security token is invalid"
        try:
            begin, end = (int(t) for t in fields["q-sign-time"].split(";"))
        except (KeyError, ValueError):
            return "AccessDenied", "malformed q-sign-time"
        if not begin <= time.time() <= end:
            return "RequestTimeTooSkewed", "the signature has expired"
        path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8")
        query = {k.lower(): v for k, v in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)}
        params = "&".join(
            f"{name}={_quote(query.get(name, ''))}"
            for name in sorted(filter(None, fields.get("q-url-param-list", "").split(";")))
        )
        headers = "&".join(
            f"{name}={_quote(self._header(environ, name))}"
            for name in sorted(filter(None, fields.get("q-header-list", "").split(";")))
        )
        format_str = f"{environ['REQUEST_METHOD'].lower()}\n{path}\n{params}\n{headers}\n"
        sign_time = fields["q-sign-time"]
        string_to_sign = f"sha1\n{sign_time}\n{hashlib.sha1(format_str.encode()).hexdigest()}\n"
        sign_key = hmac.new(self.secret_key.encode(), fields.get("q-key-time", "").encode(), hashlib.sha1)
        expected = hmac.new(sign_key.hexdigest().encode(), string_to_sign.encode(), hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected, fields.get("q-signature", "")):
            return "SignatureDoesNotMatch", "The request signature we calculated does not match"
        return None

    @staticmethod
    def _header(environ: dict[str, Any], name: str) -> str:
        if name == "content-length":
            return str(environ.get("CONTENT_LENGTH", ""))
        if name == "content-type":
            return str(environ.get("CONTENT_TYPE", ""))
        return str(environ.get("HTTP_" + name.upper().replace("-", "_"), ""))


_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d+)$")


class LoopbackApp:
    """WSGI wrapper around moto's S3 backend app; see the module docstring."""

    def __init__(self, inner: WSGIApp, verifier: CosAuthVerifier, faults: FaultInjector) -> None:
        self.inner = inner
        self.verifier = verifier
        self.faults = faults
        self.requests = 0
        self._count = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with self._count:
            self.requests += 1
        rule = self.faults.take(environ)
        if rule is not None and rule.kind == "stall":
            time.sleep(rule.seconds)
            rule = None
        if rule is not None and rule.kind in ("status", "reset"):
            self._drain(environ)
            if rule.kind == "reset":
                self._close(environ)
                return []
            body = _error_xml("InternalError" if rule.status >= 500 else "SlowDown", "injected fault", "/")
            start_response(f"{rule.status} Injected", [("Content-Type", "application/xml")])
            return [body]
        denied = self.verifier.check(environ)
        if denied is not None:
            self._drain(environ)
            start_response("403 Forbidden", [("Content-Type", "application/xml")])
            return [_error_xml(denied[0], denied[1], environ.get("PATH_INFO", "/"))]
        fast = self._ranged_get(environ, start_response)
        if fast is not None:
            return self._maybe_truncate(rule, environ, fast)
        status_headers: list[Any] = []

        def recase(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [(_HEADER_CASE.get(k.lower(), k), v) for k, v in headers]
            status_headers[:] = [status, headers]
            return start_response(status, headers, exc_info)

        return self._maybe_truncate(rule, environ, self.inner(environ, recase))

    def _maybe_truncate(
        self, rule: FaultRule | None, environ: dict[str, Any], body: Iterable[bytes]
    ) -> Iterable[bytes]:
        if rule is None or rule.kind != "truncate":
            return body
        data = b"".join(body)
        return self._truncated(environ, data)

    def _truncated(self, environ: dict[str, Any], data: bytes) -> Iterator[bytes]:
        yield data[: len(data) // 2]
        self._close(environ)

    def _ranged_get(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes] | None:
        if environ["REQUEST_METHOD"] != "GET" or environ.get("QUERY_STRING"):
            return None
        match = _RANGE_RE.match(environ.get("HTTP_RANGE", ""))
        host = environ.get("HTTP_HOST", "")
        if not match or "." not in host:
            return None
        from moto.s3.models import s3_backends

        bucket_name = host.split(".", 1)[0]
        key_name = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8")[1:]
        try:
            backend = s3_backends["123456789012"]["aws"]
            key = backend.get_object(bucket_name, key_name)
        except Exception:
            return None  # let moto produce its own error
        if key is None:
            return None
        if_match = environ.get("HTTP_IF_MATCH")
        if if_match and if_match.strip('"') != key.etag.strip('"'):
            start_response("412 Precondition Failed", [("Content-Type", "application/xml")])
            return [_error_xml("PreconditionFailed", "If-Match failed", "/" + key_name)]
        begin, end = int(match.group(1)), min(int(match.group(2)), key.size - 1)
        if begin > end:
            return None
        with key.lock:
            key._value_buffer.seek(begin)
            data = key._value_buffer.read(end - begin + 1)
        headers = {**key.metadata, **key.response_dict}
        headers.update(
            {
                "content-length": str(len(data)),
                "content-range": f"bytes {begin}-{end}/{key.size}",
                "accept-ranges": "bytes",
                "x-cos-request-id": uuid.uuid4().hex,
            }
        )
        start_response("206 Partial Content", [(_HEADER_CASE.get(k, k), str(v)) for k, v in headers.items()])
        return [data]

    @staticmethod
    def _drain(environ: dict[str, Any]) -> None:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        stream = environ["wsgi.input"]
        while length > 0:
            chunk = stream.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    @staticmethod
    def _close(environ: dict[str, Any]) -> None:
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                # SO_LINGER 0 makes close send a RST: the client sees a reset, not a clean EOF.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LoopbackObjectStore:
    """A running server plus what tests need to talk to it."""

    def __init__(
        self,
        *,
        secret_id: str = SECRET_ID,
        secret_key: str = SECRET_KEY,
        token: str | None = None,
        region: str = REGION,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        from moto.server import create_backend_app
        from werkzeug.serving import make_server

        self.secret_id = secret_id
        self.secret_key = secret_key
        self.token = token
        self.region = region
        self.faults = FaultInjector()
        self.app = LoopbackApp(
            create_backend_app("s3"), CosAuthVerifier(secret_id, secret_key, token), self.faults
        )
        self._server = make_server(host, port, self.app, threaded=True)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        self.endpoint = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None
        self._buckets = itertools.count()

    def start(self) -> LoopbackObjectStore:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._thread = threading.Thread(target=self._server.serve_forever, name="objectstore", daemon=True)
        self._thread.start()
        self._wait_ready()
        return self

    def serve_forever(self) -> None:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server.serve_forever()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"object store did not start on {self.endpoint}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment for ti.storage and the toolkit: credentials, region, endpoint override."""
        env = {
            "TENCENTCLOUD_SECRETID": self.secret_id,
            "TENCENTCLOUD_SECRETKEY": self.secret_key,
            "TENCENTCLOUD_REGION": self.region,
            "TI_COS_ENDPOINT": self.endpoint,
        }
        if self.token is not None:
            env["TENCENTCLOUD_SESSIONTOKEN"] = self.token
        env.update(overrides)
        return env

    def client(self, *, secret_id: str | None = None, secret_key: str | None = None) -> Any:
        """A raw COS SDK client for this server (for seeding and inspecting buckets in tests)."""
        from qcloud_cos import CosConfig, CosS3Client

        config = CosConfig(
            Region=self.region,
            SecretId=secret_id or self.secret_id,
            SecretKey=secret_key or self.secret_key,
            Token=self.token,
            Scheme="http",
            IP="127.0.0.1",
            Port=self.port,
        )
        return CosS3Client(config, retry=0)

    def new_bucket(self, prefix: str = "test") -> str:
        """Create a fresh bucket named like COS buckets (`<name>-<appid>`) and return its name."""
        name = f"{prefix}-{os.getpid()}-{next(self._buckets)}-{APPID}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        client = self.client()
        keys: list[str] = []
        marker = ""
        while True:
            page = client.list_objects(Bucket=bucket, Prefix=prefix, Marker=marker, MaxKeys=1000)
            contents = page.get("Contents", [])
            keys += [c["Key"] for c in contents]
            if page.get("IsTruncated") != "true" or not contents:
                return keys
            marker = page.get("NextMarker") or contents[-1]["Key"]

    def pending_uploads(self, bucket: str) -> list[dict[str, Any]]:
        uploads = self.client().list_multipart_uploads(Bucket=bucket).get("Upload", [])
        return [uploads] if isinstance(uploads, dict) else list(uploads)


@pytest.fixture(scope="session")
def object_store() -> Iterator[LoopbackObjectStore]:
    """The session's loopback object store. It fails (never skips) when the server cannot start."""
    store = LoopbackObjectStore().start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def bucket(object_store: LoopbackObjectStore) -> Iterator[str]:
    """A fresh bucket for one test; faults injected during the test are cleared afterwards."""
    name = object_store.new_bucket()
    try:
        yield name
    finally:
        object_store.faults.clear()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="serve the loopback COS/S3 test server in the foreground")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    store = LoopbackObjectStore(port=args.port)
    print(store.endpoint, flush=True)
    store.serve_forever()


if __name__ == "__main__":
    main()
