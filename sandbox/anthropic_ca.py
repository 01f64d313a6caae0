"""Validation of CA certificates registered on a tunnel (FACTS §2).

The real API accepts exactly one PEM CA certificate, no private-key material, at
most 8 KB, with BasicConstraints CA:TRUE (critical), a SubjectKeyIdentifier,
KeyUsage keyCertSign, an RSA >= 2048 or ECDSA >= P-256 key and a SHA-256 or
stronger signature. Each failure answers 400 ``invalid_request_error`` naming the
rule that was broken.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from core import certbuild
from sandbox.anthropic_state import invalid

MAX_PEM_BYTES = 8 * 1024
_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_MIN_CURVE_BITS = 256


@dataclass(frozen=True)
class CheckedCa:
    """A CA certificate that passed every rule."""

    fingerprint: str  # lowercase hex SHA-256 of the DER encoding
    expires_at: datetime


def validate_ca_pem(pem: object) -> CheckedCa:
    """Checks ``ca_certificate_pem`` against the documented rules.

    Raises:
        ApiError: 400 ``invalid_request_error`` naming the failed rule.
    """
    if not isinstance(pem, str) or not pem.strip():
        raise invalid("ca_certificate_pem: Field required (a PEM-encoded CA certificate)")
    if len(pem.encode()) > MAX_PEM_BYTES:
        raise invalid(
            f"ca_certificate_pem: exceeds the maximum size of {MAX_PEM_BYTES} bytes "
            f"(got {len(pem.encode())})"
        )
    labels = _BEGIN.findall(pem)
    if any("PRIVATE KEY" in label for label in labels):
        raise invalid("ca_certificate_pem: must not contain private-key material")
    certificates = [label for label in labels if label == "CERTIFICATE"]
    if len(certificates) != 1 or len(labels) != 1:
        raise invalid(
            "ca_certificate_pem: must contain exactly one PEM certificate "
            f"(found {len(certificates)} certificate block(s), {len(labels)} PEM block(s))"
        )
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise invalid(f"ca_certificate_pem: not a parseable X.509 certificate ({exc})") from None
    _check_extensions(cert)
    _check_key(cert)
    _check_signature(cert)
    der = cert.public_bytes(Encoding.DER)
    return CheckedCa(
        fingerprint=hashlib.sha256(der).hexdigest(),
        expires_at=cert.not_valid_after_utc,
    )


def _check_extensions(cert: x509.Certificate) -> None:
    bc = _required_extension(cert, x509.BasicConstraints, "BasicConstraints")
    if not bc.value.ca:
        raise invalid("ca_certificate_pem: BasicConstraints must have CA:TRUE")
    if not bc.critical:
        raise invalid("ca_certificate_pem: BasicConstraints must be marked critical")
    _required_extension(cert, x509.SubjectKeyIdentifier, "SubjectKeyIdentifier")
    ku = _required_extension(cert, x509.KeyUsage, "KeyUsage")
    if not ku.value.key_cert_sign:
        raise invalid("ca_certificate_pem: KeyUsage must include keyCertSign")


def _required_extension(cert: x509.Certificate, cls: type, name: str) -> x509.Extension:
    """The certificate's extension of class ``cls``; a 400 naming it when missing."""
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        raise invalid(f"ca_certificate_pem: {name} extension is missing") from None


def _check_key(cert: x509.Certificate) -> None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise invalid(
                f"ca_certificate_pem: RSA key is {key.key_size} bits; at least 2048 required"
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < _MIN_CURVE_BITS:
            raise invalid(
                f"ca_certificate_pem: ECDSA curve {key.curve.name} is too weak; "
                "P-256 or stronger required"
            )
        return
    raise invalid("ca_certificate_pem: key type must be RSA (>= 2048) or ECDSA (>= P-256)")


def _check_signature(cert: x509.Certificate) -> None:
    algorithm = cert.signature_hash_algorithm
    if not isinstance(algorithm, _STRONG_HASHES):
        name = algorithm.name if algorithm is not None else "none"
        raise invalid(f"ca_certificate_pem: signature hash {name} is too weak; SHA-256+ required")


def make_ca_pem(common_name: str = "mcp-ir sandbox CA", *, days: int = 365) -> str:
    """A fresh self-signed ECDSA P-256 CA that passes :func:`validate_ca_pem` (for seeding)."""
    import datetime as dt

    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = certbuild.ca_builder(
        key.public_key(), certbuild.subject(common_name), start=start, days=days
    )
    return certbuild.cert_pem(builder.sign(key, hashes.SHA256()))
