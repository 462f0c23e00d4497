"""Certificates for the test servers: the control plane's PKI, Kueue's webhook, the peer operator's
webhook in the benchmark. One small certificate authority, made fresh for each run, valid two days.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = dt.timedelta(days=2)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _since() -> dt.datetime:
    # A few minutes back: the servers' clocks and ours are the same, but a certificate made this
    # second must not be "not yet valid" to a check that truncates to the second.
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)


class Authority:
    """A self-signed CA that issues client and serving certificates."""

    def __init__(self, common_name: str) -> None:
        self.key = new_key()
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        since = _since()
        usage = x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False,
        )  # fmt: skip
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(since)
            .not_valid_after(since + _VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        common_name: str,
        *,
        org: str | None = None,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        """A certificate for a server (when given names or addresses) or else for a client."""
        key = new_key()
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        server = bool(dns or ips)
        since = _since()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(since)
            .not_valid_after(since + _VALID)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def write(self, folder: Path, name: str) -> None:
        """The CA's own certificate and key as `<name>.crt` and `<name>.key`."""
        write_cert(self.cert, folder / f"{name}.crt")
        write_key(self.key, folder / f"{name}.key")


def write_serving(
    folder: Path, authority_name: str, common_name: str, dns: Sequence[str], ips: Sequence[str] = ()
) -> None:
    """ca.crt, tls.crt and tls.key in `folder` (controller-runtime's names): a serving certificate for
    `dns` and `ips`, signed by a CA of its own."""
    ca = Authority(authority_name)
    cert, key = ca.issue(common_name, dns=dns, ips=ips)
    folder.mkdir(parents=True, exist_ok=True)
    write_cert(ca.cert, folder / "ca.crt")
    write_cert(cert, folder / "tls.crt")
    write_key(key, folder / "tls.key")
