"""CA and server certificates for MCP tunnels (the ``cryptography`` package).

Impersonating the proxy needs both the tunnel token and a server certificate
signed by a CA registered on the tunnel (FACTS §1), so rotation mints a fresh CA
and a server certificate signed DIRECTLY by it. Everything here follows FACTS §2:

* CA: PEM <= 8 KB, BasicConstraints CA:TRUE (critical), SubjectKeyIdentifier,
  KeyUsage keyCertSign (+ cRLSign), RSA >= 2048 or ECDSA >= P-256, SHA-256+.
* Server certificate: signed by the CA, AuthorityKeyIdentifier = the CA's SKI,
  SAN covering ``*.<tunnel-domain>``, serverAuth, 90 days by default.

Private keys only ever live in :class:`pydantic.SecretStr` fields, whose repr and
str are masked, so a result can be logged or put in evidence without leaking a key.
The checkers (:func:`check_ca`, :func:`check_server_cert`) return a list of
problems instead of raising, so verify steps and tests can report all of them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import SecretStr

from core import certbuild
from core.errors import ConfigError, McpIrError

KeyType = Literal["ec-p256", "rsa-3072"]
KEY_TYPES: tuple[str, ...] = ("ec-p256", "rsa-3072")
MAX_CA_PEM_BYTES = 8 * 1024
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
SERVER_CERT_DAYS = 90
_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
# RFC 1035 labels; the domain is a tunnel hostname such as "abc123.tunnels.example".
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)
_CLOCK_SKEW = dt.timedelta(minutes=5)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CAMaterial:
    """A CA certificate and its key.

    Attributes:
        cert_pem: The PEM certificate (what ``certificates.create`` registers).
        key_pem: The PKCS#8 PEM private key, masked in repr/str.
        fingerprint: Lowercase hex SHA-256 of the DER certificate — the same value
            the Tunnels API reports as the certificate's ``fingerprint``.
        ski: Hex SubjectKeyIdentifier (what a server certificate's AKI must equal).
        not_after: End of validity (UTC).
    """

    cert_pem: str
    key_pem: SecretStr
    fingerprint: str
    ski: str
    not_after: dt.datetime


@dataclass(frozen=True)
class ServerMaterial:
    """A server certificate (``tls.crt``) and its key (``tls.key``).

    Attributes:
        cert_pem: The PEM server certificate.
        key_pem: The PKCS#8 PEM private key, masked in repr/str.
        fingerprint: Lowercase hex SHA-256 of the DER certificate.
        domain: The tunnel domain the SAN covers (``*.<domain>`` and ``<domain>``).
        aki: Hex AuthorityKeyIdentifier (equals the issuing CA's SKI).
        not_after: End of validity (UTC).
    """

    cert_pem: str
    key_pem: SecretStr
    fingerprint: str
    domain: str
    aki: str
    not_after: dt.datetime


def new_ca(common_name: str, *, key_type: KeyType = "ec-p256", days: int = 3650) -> CAMaterial:
    """Mints a self-signed CA that the Tunnels API accepts (FACTS §2).

    Args:
        common_name: Subject CN, e.g. derived from the incident id.
        key_type: ``"ec-p256"`` (ECDSA P-256, default) or ``"rsa-3072"``.
        days: Validity in days.

    Returns:
        The CA certificate, its masked key, DER SHA-256 fingerprint and SKI.

    Raises:
        ConfigError: An argument is invalid (the message names it).
    """
    _require_text("common_name", common_name)
    if key_type not in KEY_TYPES:
        raise ConfigError(f"key_type: must be one of {', '.join(KEY_TYPES)} (got {key_type!r})")
    _require_days("days", days)
    key = _generate_key(key_type)
    start = _now() - _CLOCK_SKEW
    name = certbuild.subject(common_name, organization="mcp-ir")
    cert = certbuild.ca_builder(key.public_key(), name, start=start, days=days).sign(
        key, hashes.SHA256()
    )
    material = _ca_material(cert, key)
    problems = check_ca(material.cert_pem)
    if problems:  # a bug in this module, never an input problem
        raise McpIrError("new_ca produced a CA that fails FACTS §2: " + "; ".join(problems))
    return material


def load_ca(cert_pem: str | bytes, key_pem: str | bytes | SecretStr) -> CAMaterial:
    """Loads the CURRENT CA (e.g. ``data/ca.crt`` + ``data/ca.key``) to renew a server
    certificate with it during a drill.

    Raises:
        ConfigError: The certificate fails :func:`check_ca`, the key cannot be
            parsed, or the key does not belong to the certificate. The message
            never contains key material.
    """
    cert = _load_cert("cert_pem", cert_pem)
    problems = check_ca(_as_text(cert_pem))
    if problems:
        raise ConfigError("cert_pem: not a valid tunnel CA: " + "; ".join(problems))
    key = _load_key("key_pem", key_pem)
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ConfigError("key_pem: the private key does not belong to cert_pem")
    return _ca_material(cert, key)


def server_cert(
    ca: CAMaterial, domain: str, *, days: int = SERVER_CERT_DAYS, key_type: KeyType = "ec-p256"
) -> ServerMaterial:
    """Issues the proxy's server certificate, signed directly by ``ca``.

    The SAN lists ``*.<domain>`` (FACTS §2) and ``<domain>``; the AKI is the CA's
    SKI so a verifier can pick the right one of the tunnel's two CA slots. Validity
    is clamped to the CA's so the chain never outlives its root.

    Raises:
        ConfigError: ``domain``, ``days`` or ``key_type`` is invalid, or the CA
            key does not match its certificate.
    """
    domain = _require_domain("domain", domain)
    _require_days("days", days)
    if key_type not in KEY_TYPES:
        raise ConfigError(f"key_type: must be one of {', '.join(KEY_TYPES)} (got {key_type!r})")
    ca_cert = _load_cert("ca.cert_pem", ca.cert_pem)
    ca_key = _load_key("ca.key_pem", ca.key_pem)
    if _public_der(ca_key.public_key()) != _public_der(ca_cert.public_key()):
        raise ConfigError("ca.key_pem: the private key does not belong to ca.cert_pem")
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    key = _generate_key(key_type)
    start = _now() - _CLOCK_SKEW
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    usage = certbuild.key_usage(
        digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)
    )
    cert = certbuild.server_builder(
        key.public_key(),
        common_name=f"*.{domain}",
        issuer=ca_cert.subject,
        issuer_ski=ski,
        start=start,
        end=end,
        dns_names=[f"*.{domain}", domain],
        usage=usage,
        ski=True,
    ).sign(ca_key, hashes.SHA256())
    return ServerMaterial(
        cert_pem=certbuild.cert_pem(cert),
        key_pem=SecretStr(certbuild.key_pem(key)),
        fingerprint=_der_sha256(cert),
        domain=domain,
        aki=ski.digest.hex(),
        not_after=cert.not_valid_after_utc,
    )


def cert_fingerprint(pem: str | bytes) -> str:
    """Lowercase hex SHA-256 of a PEM certificate's DER form (the Tunnels API's
    ``fingerprint``).

    Raises:
        ConfigError: ``pem`` is not a parseable PEM certificate.
    """
    return _der_sha256(_load_cert("pem", pem))


def check_ca(pem: str | bytes, *, now: dt.datetime | None = None) -> list[str]:
    """Checks a CA certificate against every FACTS §2 requirement.

    Returns:
        One message per problem (naming the rule); empty when the CA is fine.
    """
    text = _as_text(pem)
    problems: list[str] = []
    size = len(text.encode())
    if size > MAX_CA_PEM_BYTES:
        problems.append(f"PEM is {size} bytes; at most {MAX_CA_PEM_BYTES} allowed")
    labels = _PEM_BLOCK.findall(text)
    if any("PRIVATE KEY" in label for label in labels):
        problems.append("PEM contains private-key material; only the certificate is allowed")
    if labels.count("CERTIFICATE") != 1:
        problems.append(
            f"PEM must hold exactly one certificate (found {labels.count('CERTIFICATE')})"
        )
        if not labels.count("CERTIFICATE"):
            return problems
    try:
        cert = x509.load_pem_x509_certificate(text.encode())
    except ValueError:
        problems.append("not a parseable X.509 PEM certificate")
        return problems
    bc = _extension(cert, x509.BasicConstraints)
    if bc is None:
        problems.append("BasicConstraints extension is missing (CA:TRUE required)")
    else:
        if not bc.value.ca:
            problems.append("BasicConstraints must be CA:TRUE (this is not a CA certificate)")
        if not bc.critical:
            problems.append("BasicConstraints must be marked critical")
    if _extension(cert, x509.SubjectKeyIdentifier) is None:
        problems.append("SubjectKeyIdentifier extension is missing")
    ku = _extension(cert, x509.KeyUsage)
    if ku is None:
        problems.append("KeyUsage extension is missing (keyCertSign required)")
    elif not ku.value.key_cert_sign:
        problems.append("KeyUsage must include keyCertSign")
    problems.extend(_key_problems(cert))
    problems.extend(_hash_problems(cert))
    problems.extend(_validity_problems(cert, now))
    return problems


def check_server_cert(
    cert_pem: str | bytes,
    ca_pem: str | bytes,
    domain: str,
    *,
    now: dt.datetime | None = None,
) -> list[str]:
    """Checks that a server certificate chains DIRECTLY to ``ca_pem`` for ``domain``.

    Checked: the issuer name and signature verify with the CA's key, AKI == the
    CA's SKI, the SAN covers ``*.<domain>``, serverAuth, not a CA, SHA-256+, and
    validity (now, and not beyond the CA's).

    Returns:
        One message per problem; empty when the certificate is fine.
    """
    try:
        cert = _load_cert("cert_pem", cert_pem)
        ca = _load_cert("ca_pem", ca_pem)
    except ConfigError as exc:
        return [exc.detail]
    problems: list[str] = []
    try:
        cert.verify_directly_issued_by(ca)
    except ValueError:
        problems.append("issuer name does not match the CA's subject")
    except InvalidSignature:
        problems.append("signature does not verify with the CA's public key")
    except (TypeError, UnsupportedAlgorithm) as exc:
        problems.append(f"signature cannot be verified with the CA's key ({exc})")
    aki = _extension(cert, x509.AuthorityKeyIdentifier)
    ca_ski = _extension(ca, x509.SubjectKeyIdentifier)
    if aki is None or aki.value.key_identifier is None:
        problems.append("AuthorityKeyIdentifier (keyIdentifier) is missing")
    elif ca_ski is None:
        problems.append("the CA has no SubjectKeyIdentifier to match the AKI against")
    elif aki.value.key_identifier != ca_ski.value.digest:
        problems.append(
            f"AuthorityKeyIdentifier {aki.value.key_identifier.hex()} != "
            f"CA SubjectKeyIdentifier {ca_ski.value.digest.hex()}"
        )
    wanted = f"*.{domain.strip().lower().rstrip('.')}"
    san = _extension(cert, x509.SubjectAlternativeName)
    names = [n.lower() for n in san.value.get_values_for_type(x509.DNSName)] if san else []
    if wanted not in names:
        problems.append(f"SubjectAlternativeName does not cover {wanted} (has {names})")
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if eku is None or ExtendedKeyUsageOID.SERVER_AUTH not in eku.value:
        problems.append("ExtendedKeyUsage serverAuth is missing")
    bc = _extension(cert, x509.BasicConstraints)
    if bc is not None and bc.value.ca:
        problems.append("server certificate must not be a CA (BasicConstraints CA:TRUE)")
    problems.extend(_hash_problems(cert))
    problems.extend(_validity_problems(cert, now))
    if cert.not_valid_after_utc > ca.not_valid_after_utc:
        problems.append("server certificate outlives its CA")
    return problems


# -- helpers ---------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _require_text(field: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{field}: must be a non-empty string")


def _require_days(field: str, days: object) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ConfigError(f"{field}: must be a positive number of days (got {days!r})")


def _require_domain(field: str, domain: object) -> str:
    if not isinstance(domain, str):
        raise ConfigError(f"{field}: must be a hostname string (got {type(domain).__name__})")
    norm = domain.strip().lower().rstrip(".")
    if norm.startswith("*."):
        raise ConfigError(f"{field}: give the tunnel domain without '*.' (got {domain!r})")
    if not _DOMAIN.match(norm):
        raise ConfigError(f"{field}: not a valid DNS domain (got {domain!r})")
    return norm


def _generate_key(key_type: str) -> PrivateKey:
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def _ca_material(cert: x509.Certificate, key: PrivateKey) -> CAMaterial:
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return CAMaterial(
        cert_pem=certbuild.cert_pem(cert),
        key_pem=SecretStr(certbuild.key_pem(key)),
        fingerprint=_der_sha256(cert),
        ski=ski.hex(),
        not_after=cert.not_valid_after_utc,
    )


def _public_der(key: object) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def _der_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _as_text(pem: str | bytes) -> str:
    return pem.decode("utf-8", errors="replace") if isinstance(pem, bytes) else str(pem)


def _load_cert(field: str, pem: str | bytes) -> x509.Certificate:
    if not isinstance(pem, str | bytes) or not pem:
        raise ConfigError(f"{field}: must be a non-empty PEM certificate")
    try:
        return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except ValueError:
        raise ConfigError(f"{field}: not a parseable X.509 PEM certificate") from None


def _load_key(field: str, pem: str | bytes | SecretStr) -> PrivateKey:
    raw = pem.get_secret_value() if isinstance(pem, SecretStr) else pem
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The parser's message could quote the input: never pass it on.
        raise ConfigError(f"{field}: not a parseable unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{field}: key type must be RSA or ECDSA")
    return key


def _extension(cert: x509.Certificate, cls: type) -> x509.Extension | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def _key_problems(cert: x509.Certificate) -> list[str]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return [f"RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} required"]
        return []
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            return [f"ECDSA curve {key.curve.name} is weaker than P-256"]
        return []
    return [f"key type {type(key).__name__} not allowed; RSA >= 2048 or ECDSA >= P-256 required"]


def _hash_problems(cert: x509.Certificate) -> list[str]:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return ["signature algorithm is not supported; SHA-256 or stronger required"]
    if not isinstance(algorithm, _STRONG_HASHES):
        name = algorithm.name if algorithm is not None else "none"
        return [f"signature hash {name} is too weak; SHA-256 or stronger required"]
    return []


def _validity_problems(cert: x509.Certificate, now: dt.datetime | None) -> list[str]:
    moment = now or _now()
    if moment < cert.not_valid_before_utc:
        return [f"not valid before {cert.not_valid_before_utc.isoformat()}"]
    if moment > cert.not_valid_after_utc:
        return [f"expired at {cert.not_valid_after_utc.isoformat()}"]
    return []
