"""X.509 builders shared by the product, the sandboxes and the tests.

Minting a CA or a server certificate is the same ``cryptography`` builder chain
wherever it happens: the product's rotation (``tasks.certificates``), the
sandbox stacks that seed a tunnel's CA and ``tls.crt``, and the tests that craft
certificates breaking one FACTS §2 rule at a time. One place builds them, so a
fix to the chain (an extension, a validity rule) reaches every caller. The
builders return unsigned :class:`x509.CertificateBuilder` objects: callers add
what is theirs (padding SANs, a weak digest) before signing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def subject(common_name: str, *, organization: str | None = None) -> x509.Name:
    """A distinguished name: ``O=<organization>`` (when given) then ``CN=<common_name>``."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def key_usage(
    *, key_cert_sign: bool = False, digital_signature: bool = False, key_encipherment: bool = False
) -> x509.KeyUsage:
    """A KeyUsage with only the named bits set; ``crlSign`` follows ``keyCertSign``."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def ca_builder(
    public_key: CertificatePublicKeyTypes,
    name: x509.Name,
    *,
    start: dt.datetime,
    days: int,
    ca: bool = True,
    path_length: int | None = 0,
    bc_critical: bool = True,
    usage: x509.KeyUsage | None = None,
    ski: bool = True,
) -> x509.CertificateBuilder:
    """A self-signed CA valid ``days`` from ``start``: BasicConstraints (critical),
    KeyUsage (critical; keyCertSign + cRLSign unless ``usage`` says otherwise) and a
    SubjectKeyIdentifier. ``ca``/``bc_critical``/``usage``/``ski`` exist so tests can
    break exactly one FACTS §2 rule."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=bc_critical)
        .add_extension(usage or key_usage(key_cert_sign=True), critical=True)
    )
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
    return builder


def server_builder(
    public_key: CertificatePublicKeyTypes,
    *,
    common_name: str,
    issuer: x509.Name,
    issuer_ski: x509.SubjectKeyIdentifier,
    start: dt.datetime,
    end: dt.datetime,
    dns_names: list[str],
    ip_addresses: Sequence[str] = (),
    usage: x509.KeyUsage | None = None,
    ski: bool = False,
) -> x509.CertificateBuilder:
    """A TLS server (leaf) certificate for ``dns_names`` (and ``ip_addresses``) issued by the CA named
    ``issuer``: BasicConstraints CA:FALSE (critical), the SAN, an AuthorityKeyIdentifier
    equal to the CA's SKI (so a verifier picks the right CA slot), serverAuth, and —
    when asked — its own SKI and a critical KeyUsage."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject(common_name))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(name) for name in dns_names),
                    *(x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    )
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    return builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
    )


def cert_pem(cert: x509.Certificate) -> str:
    """The certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    """The private key as unencrypted PKCS#8 PEM text (callers keep it secret)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
