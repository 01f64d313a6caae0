"""Helpers of ``rotate_credentials``: the credential material and the stores it goes to.

Material is one CA (certificate + key) and one server certificate signed directly
by it (certificate + key), minted by :mod:`tasks.certificates`. A store is where
the target's stack reads its credentials:

* the target driver's store (``targets/``): Compose ``data/`` files (atomic, 0600),
  Helm the release's credential Secrets;
* AWS Secrets Manager, when the inventory's ``aws.secrets_manager`` names secrets
  (:mod:`tasks.aws_secrets`; a new version per value, the old one staged out).

Crash safety rests on one ordering rule: material is written to the target's store
BEFORE its CA is registered on the tunnel. So a registered CA always has its
material in the store, and material that is not registered yet may be thrown away
and minted again without leaving anything behind. :func:`material_from` reads it
back on resume, and :meth:`Material.problems` says whether it belongs to THIS
incident (the CA's common name carries the incident id) and to the new tunnel's
domain — the old tunnel's files never pass for the new ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from core.errors import ConfigError, StepFailed
from core.redact import Redactor, fingerprint
from runbook.inventory import SecretsManagerConfig
from tasks import aws_secrets, certificates

STEP = "rotate_credentials"


def display_name(incident_id: str) -> str:
    """The new tunnel's display name: unique to the incident, so a resumed run finds
    the tunnel a crashed attempt created instead of creating another."""
    return f"mcp-ir {incident_id}"


def ca_common_name(incident_id: str) -> str:
    """Subject CN of the incident's CA (how read-back material is tied to the incident)."""
    return f"mcp-ir {incident_id} CA"


@dataclass(frozen=True)
class Material:
    """A CA and a server certificate signed by it. Keys are masked.

    ``ca_key`` is None when the material was read back from a store that does not
    keep the CA key (the Helm Secrets hold only ``ca.crt``).
    """

    ca_crt: str
    ca_key: SecretStr | None
    tls_crt: str
    tls_key: SecretStr

    @property
    def ca_fingerprint(self) -> str:
        """Hex SHA-256 of the CA's DER form (the Tunnels API's certificate fingerprint)."""
        return certificates.cert_fingerprint(self.ca_crt)

    def secrets(self) -> list[str]:
        """The secret values, for the redactor."""
        keys = [self.tls_key.get_secret_value()]
        if self.ca_key is not None:
            keys.append(self.ca_key.get_secret_value())
        return keys

    def problems(self, incident_id: str, domain: str) -> list[str]:
        """Everything that stops this material from being the incident's credentials for
        ``domain``: FACTS §2 for the CA and the server certificate, the CA's CN, and
        (when present) that the CA key belongs to the CA."""
        found = [f"ca.crt: {p}" for p in certificates.check_ca(self.ca_crt)]
        found += [
            f"tls.crt: {p}"
            for p in certificates.check_server_cert(self.tls_crt, self.ca_crt, domain)
        ]
        if not found and _common_name(self.ca_crt) != ca_common_name(incident_id):
            found.append(f"ca.crt: not the CA of incident {incident_id} (common name differs)")
        if not found and self.ca_key is not None:
            try:
                certificates.load_ca(self.ca_crt, self.ca_key)
            except ConfigError as exc:
                found.append(exc.detail)
        return found

    def evidence(self) -> dict[str, Any]:
        """Fingerprints only: the certificates' DER SHA-256 and the keys' fingerprints."""
        return {
            "ca_fingerprint": self.ca_fingerprint,
            "tls_fingerprint": certificates.cert_fingerprint(self.tls_crt),
            "ca_key": fingerprint(self.ca_key.get_secret_value()) if self.ca_key else None,
            "tls_key": fingerprint(self.tls_key.get_secret_value()),
        }


def mint(incident_id: str, domain: str) -> Material:
    """A new CA (ECDSA P-256, FACTS §2) and a server certificate for ``*.<domain>``."""
    ca = certificates.new_ca(ca_common_name(incident_id))
    server = certificates.server_cert(ca, domain)
    return Material(ca.cert_pem, ca.key_pem, server.cert_pem, server.key_pem)


def _common_name(pem: str) -> str | None:
    cert = x509.load_pem_x509_certificate(pem.encode())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


# -- Compose data/ ----------------------------------------------------------------------


def store_values(tunnel_id: str, domain: str, token: str, material: Material) -> dict[str, str]:
    """The credential set for the new tunnel (FACTS §1 names), as a driver stores it."""
    values = {
        "tunnel-id": tunnel_id,
        "tunnel-domain": domain,
        "tunnel-token": token,
        "ca.crt": material.ca_crt,
        "tls.crt": material.tls_crt,
        "tls.key": material.tls_key.get_secret_value(),
    }
    if material.ca_key is not None:
        values["ca.key"] = material.ca_key.get_secret_value()
    return values


def material_from(
    values: dict[str, str], ca_key: SecretStr | None, *, need_ca_key: bool
) -> Material | None:
    """The material in a store's credential values (None if incomplete). ``ca_key``
    (e.g. from AWS) is used when given, else the store's own ``ca.key`` if any;
    ``need_ca_key``: a store that keeps the key is incomplete without it."""
    if any(k not in values for k in ("ca.crt", "tls.crt", "tls.key")):
        return None
    if ca_key is None and values.get("ca.key"):
        ca_key = SecretStr(values["ca.key"])
    if need_ca_key and ca_key is None:
        return None
    return Material(values["ca.crt"], ca_key, values["tls.crt"], SecretStr(values["tls.key"]))


# -- AWS Secrets Manager ------------------------------------------------------------------


def secrets_client(region: str | None) -> Any:
    """A boto3 Secrets Manager client; endpoint and credentials from ``AWS_*``."""
    import boto3

    return (
        boto3.client("secretsmanager", region_name=region)
        if region
        else boto3.client("secretsmanager")
    )


def aws_values(cfg: SecretsManagerConfig, token: str, material: Material) -> dict[str, str]:
    """Secret id → the value to store (formats documented on ``SecretsManagerConfig``)."""
    values = {cfg.token_secret_id: token}
    if cfg.ca_secret_id:
        if material.ca_key is None:
            raise StepFailed(STEP, "ca.key: missing; cannot write aws.secrets_manager.ca_secret_id")
        values[cfg.ca_secret_id] = json.dumps(
            {"ca.crt": material.ca_crt, "ca.key": material.ca_key.get_secret_value()},
            sort_keys=True,
        )
    if cfg.tls_secret_id:
        values[cfg.tls_secret_id] = json.dumps(
            {"tls.crt": material.tls_crt, "tls.key": material.tls_key.get_secret_value()},
            sort_keys=True,
        )
    return values


def write_aws(
    client: Any, cfg: SecretsManagerConfig, incident_id: str, token: str, material: Material
) -> list[aws_secrets.PutResult]:
    """New ``AWSCURRENT`` versions (old ones staged ``AWSPREVIOUS``). The request token
    is derived from the incident and the value's fingerprint, so a resumed run that
    writes the same material creates no second version."""
    results = []
    for secret_id, value in aws_values(cfg, token, material).items():
        results.append(
            aws_secrets.put_secret_version(
                client,
                secret_id,
                value,
                client_request_token=aws_secrets.request_token(incident_id, fingerprint(value)),
            )
        )
    return results


def read_aws_ca_key(client: Any, cfg: SecretsManagerConfig | None) -> SecretStr | None:
    """The CA key kept in ``ca_secret_id`` (None when not configured or not JSON of ours)."""
    if cfg is None or not cfg.ca_secret_id:
        return None
    try:
        doc = aws_secrets.get_secret_json(client, cfg.ca_secret_id)
    except ConfigError:
        return None
    key = doc.get("ca.key") if isinstance(doc, dict) else None
    return SecretStr(key) if isinstance(key, str) and key else None


def protect(redactor: Redactor, *values: str | None) -> None:
    """Registers secret values with the run's redactor (trail, logs, reports)."""
    for value in values:
        redactor.add(value)
