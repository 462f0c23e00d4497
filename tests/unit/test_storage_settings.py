from __future__ import annotations

import pytest

from ti.storage import CosSettings, MissingCredentialsError, StorageError

pytestmark = pytest.mark.unit

BASE = {"TENCENTCLOUD_SECRETID": "AKIDexample", "TENCENTCLOUD_SECRETKEY": "very-secret"}


def test_region_and_credentials() -> None:
    settings = CosSettings.from_env(
        {**BASE, "TENCENTCLOUD_REGION": "ap-shanghai", "TENCENTCLOUD_SESSIONTOKEN": "tok"}
    )
    assert (settings.region, settings.scheme, settings.ip, settings.endpoint) == (
        "ap-shanghai",
        "https",
        None,
        None,
    )
    assert settings.token == "tok"


@pytest.mark.parametrize(
    ("endpoint", "scheme", "ip", "port", "domain"),
    [
        ("http://127.0.0.1:9000", "http", "127.0.0.1", 9000, None),
        ("http://localhost:8080/", "http", "localhost", 8080, None),
        ("https://[::1]:9443", "https", "::1", 9443, None),
        ("https://cos.internal.example.com", "https", None, None, "cos.internal.example.com"),
        ("cos.internal.example.com:8443", "https", None, None, "cos.internal.example.com:8443"),
    ],
)
def test_endpoint_override(
    endpoint: str, scheme: str, ip: str | None, port: int | None, domain: str | None
) -> None:
    settings = CosSettings.from_env({**BASE, "TI_COS_ENDPOINT": endpoint})
    assert (settings.scheme, settings.ip, settings.port, settings.endpoint) == (scheme, ip, port, domain)
    assert settings.region == "ap-guangzhou"  # the default when only an endpoint is given


def test_missing_credentials_and_region() -> None:
    with pytest.raises(MissingCredentialsError, match="TENCENTCLOUD_SECRETID and TENCENTCLOUD_SECRETKEY"):
        CosSettings.from_env({"TENCENTCLOUD_REGION": "ap-guangzhou"})
    with pytest.raises(StorageError, match="TENCENTCLOUD_REGION"):
        CosSettings.from_env(BASE)
    with pytest.raises(StorageError, match="invalid TI_COS_ENDPOINT"):
        CosSettings.from_env({**BASE, "TI_COS_ENDPOINT": "ftp://x"})


def test_secrets_stay_out_of_repr() -> None:
    settings = CosSettings.from_env(
        {**BASE, "TENCENTCLOUD_REGION": "r", "TENCENTCLOUD_SESSIONTOKEN": "tok-123"}
    )
    text = repr(settings)
    assert "very-secret" not in text and "tok-123" not in text and "AKIDexample" not in text
