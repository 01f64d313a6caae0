"""Certificates against every FACTS §2 requirement, checked with ``cryptography``."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from core import certbuild
from core.errors import ConfigError
from tasks.certificates import (
    cert_fingerprint,
    check_ca,
    check_server_cert,
    load_ca,
    new_ca,
    server_cert,
)

DOMAIN = "t-7f3a.tunnels.example"


def _ku(cert_sign: bool = True) -> x509.KeyUsage:
    return certbuild.key_usage(digital_signature=not cert_sign, key_cert_sign=cert_sign)


def _build_ca(
    *,
    key=None,
    ca: bool = True,
    bc_critical: bool = True,
    ski: bool = True,
    key_usage: x509.KeyUsage | None = None,
    extra_sans: int = 0,
    days: int = 30,
    start_offset_days: int = 0,
) -> tuple[str, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1) + dt.timedelta(days=start_offset_days)
    b = certbuild.ca_builder(
        key.public_key(),
        certbuild.subject("test CA"),
        start=start,
        days=days,
        ca=ca,
        path_length=None,
        bc_critical=bc_critical,
        usage=key_usage or _ku(),
        ski=ski,
    )
    if extra_sans:
        names = [x509.DNSName(f"host-{i:04d}.padding.example") for i in range(extra_sans)]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = b.sign(key, hashes.SHA256())
    return cert.public_bytes(Encoding.PEM).decode(), key


def _resign_with_sha1(pem: str, key: rsa.RSAPrivateKey) -> str:
    """cryptography refuses to build SHA-1 signatures ("Hash algorithm 'sha1' not
    supported for signatures"), but a SHA-1 CA can still be presented to us. Build
    one faithfully: swap the sha256WithRSAEncryption OID (1.2.840.113549.1.1.11) for
    sha1WithRSAEncryption (1.2.840.113549.1.1.5) in the TBS and the outer
    AlgorithmIdentifier (same encoded length), then sign the new TBS with SHA-1 —
    the RSA signature keeps its length, so every DER length stays valid."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    der = cert.public_bytes(Encoding.DER)
    sha256_oid = bytes.fromhex("06092a864886f70d01010b")
    sha1_oid = bytes.fromhex("06092a864886f70d010105")
    assert der.count(sha256_oid) == 2
    tbs = cert.tbs_certificate_bytes.replace(sha256_oid, sha1_oid)
    new_sig = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    assert len(new_sig) == len(cert.signature)
    new_der = der.replace(sha256_oid, sha1_oid).replace(cert.signature, new_sig)
    new_cert = x509.load_der_x509_certificate(new_der)
    new_cert.public_key().verify(
        new_cert.signature, new_cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1()
    )
    return new_cert.public_bytes(Encoding.PEM).decode()


# -- new_ca ------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-3072"])
def test_new_ca_meets_every_facts_requirement(key_type: str) -> None:
    ca = new_ca("mcp-ir incident INC-1", key_type=key_type, days=365)
    assert check_ca(ca.cert_pem) == []
    assert len(ca.cert_pem.encode()) <= 8 * 1024
    cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest.hex() == ca.ski
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    key = cert.public_key()
    if key_type == "rsa-3072":
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    # self-signed: verifies with its own key
    cert.verify_directly_issued_by(cert)
    der = cert.public_bytes(Encoding.DER)
    assert ca.fingerprint == hashlib.sha256(der).hexdigest() == cert_fingerprint(ca.cert_pem)
    assert len(ca.fingerprint) == 64
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=365) <= validity <= dt.timedelta(days=365, minutes=6)
    assert "PRIVATE KEY" not in ca.cert_pem


def test_ca_key_is_masked_and_matches_cert() -> None:
    ca = new_ca("masked")
    secret = ca.key_pem.get_secret_value()
    assert secret.startswith("-----BEGIN PRIVATE KEY-----")
    for shown in (repr(ca), str(ca), repr(ca.key_pem), str(ca.key_pem), f"{ca}"):
        assert secret not in shown and "PRIVATE KEY" not in shown
    reloaded = load_ca(ca.cert_pem, ca.key_pem)
    assert reloaded.fingerprint == ca.fingerprint and reloaded.ski == ca.ski


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"common_name": ""}, "common_name"),
        ({"common_name": "x", "key_type": "rsa-1024"}, "key_type"),
        ({"common_name": "x", "days": 0}, "days"),
    ],
)
def test_new_ca_rejects_bad_input_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        new_ca(**kwargs)
    assert err.value.detail.startswith(f"{field}:")


# -- check_ca catches each violation -----------------------------------------------------


def test_check_ca_flags_a_non_ca_certificate() -> None:
    pem, _ = _build_ca(ca=False)
    assert any("CA:TRUE" in p for p in check_ca(pem))


def test_check_ca_flags_basic_constraints_not_critical() -> None:
    pem, _ = _build_ca(bc_critical=False)
    assert check_ca(pem) == ["BasicConstraints must be marked critical"]


def test_check_ca_flags_missing_ski() -> None:
    pem, _ = _build_ca(ski=False)
    assert check_ca(pem) == ["SubjectKeyIdentifier extension is missing"]


def test_check_ca_flags_key_usage_without_key_cert_sign() -> None:
    pem, _ = _build_ca(key_usage=_ku(cert_sign=False))
    assert check_ca(pem) == ["KeyUsage must include keyCertSign"]


def test_check_ca_flags_rsa_1024() -> None:
    pem, _ = _build_ca(key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    assert check_ca(pem) == ["RSA key is 1024 bits; at least 2048 required"]


def test_check_ca_flags_weak_curve() -> None:
    pem, _ = _build_ca(key=ec.generate_private_key(ec.SECP224R1()))
    assert check_ca(pem) == ["ECDSA curve secp224r1 is weaker than P-256"]


def test_check_ca_flags_sha1_signature() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem, _ = _build_ca(key=key)
    assert check_ca(pem) == []
    sha1_pem = _resign_with_sha1(pem, key)
    assert check_ca(sha1_pem) == ["signature hash sha1 is too weak; SHA-256 or stronger required"]


def test_check_ca_flags_pem_over_8kb() -> None:
    pem, _ = _build_ca(extra_sans=300)
    assert len(pem.encode()) > 8 * 1024
    problems = check_ca(pem)
    assert len(problems) == 1 and "at most 8192 allowed" in problems[0]


def test_check_ca_flags_private_key_and_garbage() -> None:
    ca = new_ca("with key")
    bundle = ca.cert_pem + ca.key_pem.get_secret_value()
    problems = check_ca(bundle)
    assert any("private-key material" in p for p in problems)
    assert all(ca.key_pem.get_secret_value() not in p for p in problems)
    assert check_ca("not a pem") == ["PEM must hold exactly one certificate (found 0)"]


def test_check_ca_flags_expired_and_not_yet_valid() -> None:
    expired, _ = _build_ca(days=1, start_offset_days=-3)
    future, _ = _build_ca(days=10, start_offset_days=2)
    assert any(p.startswith("expired at") for p in check_ca(expired))
    assert any(p.startswith("not valid before") for p in check_ca(future))


# -- server certificate ------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-3072"])
def test_server_cert_chains_directly_to_ca(key_type: str) -> None:
    ca = new_ca("chain", key_type=key_type)
    srv = server_cert(ca, DOMAIN, key_type=key_type)
    assert check_server_cert(srv.cert_pem, ca.cert_pem, DOMAIN) == []
    cert = x509.load_pem_x509_certificate(srv.cert_pem.encode())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    cert.verify_directly_issued_by(ca_cert)  # raises if the signature is not the CA's
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier.hex() == ca.ski == srv.aki
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"*.{DOMAIN}" in san.get_values_for_type(x509.DNSName)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    validity = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=90) <= validity <= dt.timedelta(days=90, minutes=6)
    assert srv.fingerprint == cert_fingerprint(srv.cert_pem)
    assert srv.key_pem.get_secret_value() not in repr(srv)


def test_server_cert_renewed_with_loaded_current_ca() -> None:
    ca = new_ca("current")
    current = load_ca(ca.cert_pem.encode(), ca.key_pem.get_secret_value().encode())
    renewed = server_cert(current, DOMAIN)
    assert check_server_cert(renewed.cert_pem, ca.cert_pem, DOMAIN) == []


def test_check_server_cert_flags_wrong_ca_wrong_domain_and_expiry() -> None:
    ca, other = new_ca("right"), new_ca("other")
    srv = server_cert(ca, DOMAIN)
    wrong_ca = check_server_cert(srv.cert_pem, other.cert_pem, DOMAIN)
    assert any("issuer name" in p or "signature" in p for p in wrong_ca)
    assert any("AuthorityKeyIdentifier" in p for p in wrong_ca)
    wrong_domain = check_server_cert(srv.cert_pem, ca.cert_pem, "other.example")
    assert wrong_domain == [
        f"SubjectAlternativeName does not cover *.other.example (has ['*.{DOMAIN}', '{DOMAIN}'])"
    ]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=91)
    assert any(
        p.startswith("expired at")
        for p in check_server_cert(srv.cert_pem, ca.cert_pem, DOMAIN, now=later)
    )
    assert check_server_cert("junk", ca.cert_pem, DOMAIN) == [
        "cert_pem: not a parseable X.509 PEM certificate"
    ]


def test_check_server_cert_flags_same_name_different_key() -> None:
    """A CA with the same subject but another key (an attacker's copy) must not pass."""
    ca = new_ca("same name")
    impostor = new_ca("same name")
    srv = server_cert(impostor, DOMAIN)
    problems = check_server_cert(srv.cert_pem, ca.cert_pem, DOMAIN)
    assert "signature does not verify with the CA's public key" in problems


def test_server_cert_validity_clamped_to_ca() -> None:
    ca = new_ca("short", days=10)
    srv = server_cert(ca, DOMAIN, days=90)
    assert srv.not_after <= ca.not_after
    assert check_server_cert(srv.cert_pem, ca.cert_pem, DOMAIN) == []


@pytest.mark.parametrize("domain", ["", "*.x.example", "bad domain", "no_underscore.example", "x"])
def test_server_cert_rejects_bad_domain(domain: str) -> None:
    with pytest.raises(ConfigError) as err:
        server_cert(new_ca("d"), domain)
    assert err.value.detail.startswith("domain:")


def test_load_ca_rejects_mismatched_key_and_non_ca_without_leaking() -> None:
    ca, other = new_ca("a"), new_ca("b")
    with pytest.raises(ConfigError) as err:
        load_ca(ca.cert_pem, other.key_pem)
    assert err.value.detail == "key_pem: the private key does not belong to cert_pem"
    garbage = (
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWNhbmFyeS12YWx1ZQ==\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigError) as err:
        load_ca(ca.cert_pem, garbage)
    assert "c2VjcmV0" not in str(err.value) and err.value.detail.startswith("key_pem:")
    srv = server_cert(ca, DOMAIN)
    with pytest.raises(ConfigError) as err:
        load_ca(srv.cert_pem, srv.key_pem)
    assert "CA:TRUE" in err.value.detail
