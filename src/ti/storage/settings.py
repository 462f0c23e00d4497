"""Object-store connection settings from the environment (Tencent Cloud's usual variable names)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ti import contract
from ti.storage.errors import StorageError

DEFAULT_REGION = "ap-guangzhou"


class MissingCredentialsError(StorageError):
    """No SecretId/SecretKey in the environment."""


@dataclass(frozen=True)
class CosSettings:
    """Where and as whom to reach COS. Secrets are kept out of `repr` so they never reach a log."""

    secret_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str
    token: str | None = field(default=None, repr=False)
    scheme: str = "https"
    # Exactly one of these is set when the endpoint is overridden: an IP (or localhost) is reached
    # directly with the bucket in the Host header; a domain becomes `<bucket>.<endpoint>`.
    ip: str | None = None
    port: int | None = None
    endpoint: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CosSettings:
        """Read TENCENTCLOUD_SECRETID/SECRETKEY/SESSIONTOKEN/REGION and TI_COS_ENDPOINT."""
        env = os.environ if env is None else env
        secret_id = env.get(contract.TENCENTCLOUD_SECRETID, "").strip()
        secret_key = env.get(contract.TENCENTCLOUD_SECRETKEY, "").strip()
        if not secret_id or not secret_key:
            raise MissingCredentialsError(
                f"no object-store credentials: set {contract.TENCENTCLOUD_SECRETID} and "
                f"{contract.TENCENTCLOUD_SECRETKEY} (in a cluster they come from the job's Secret)"
            )
        token = env.get(contract.TENCENTCLOUD_SESSIONTOKEN, "").strip() or None
        endpoint = env.get(contract.COS_ENDPOINT, "").strip()
        region = env.get(contract.TENCENTCLOUD_REGION, "").strip()
        if not region and not endpoint:
            raise StorageError(
                f"no COS region: set {contract.TENCENTCLOUD_REGION} (e.g. ap-guangzhou) "
                f"or {contract.COS_ENDPOINT}"
            )
        settings = cls(secret_id, secret_key, region or DEFAULT_REGION, token)
        return settings.with_endpoint(endpoint) if endpoint else settings

    def with_endpoint(self, endpoint: str) -> CosSettings:
        """Point at `http://127.0.0.1:9000`, `https://cos.internal.example.com` or a bare host[:port]."""
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageError(
                f"invalid {contract.COS_ENDPOINT} {endpoint!r}: expected http(s)://host[:port]"
            )
        host = parts.hostname
        try:
            is_ip = host == "localhost" or bool(ipaddress.ip_address(host))
        except ValueError:
            is_ip = False
        if is_ip:
            return replace(self, scheme=parts.scheme, ip=host, port=parts.port, endpoint=None)
        netloc = f"{host}:{parts.port}" if parts.port else host
        return replace(self, scheme=parts.scheme, ip=None, port=None, endpoint=netloc)

    def secrets(self) -> list[str]:
        """Values that must never appear in a message."""
        return [s for s in (self.secret_key, self.token, self.secret_id) if s]
