"""Tunnels API steps (FACTS §2), through ``client.beta.tunnels`` of the real SDK.

Each function takes the client as its first parameter (one place to substitute
it), checks its arguments before any network call, returns a typed record and
maps SDK failures onto :mod:`core.errors`: 5xx, 429 and connection problems
become :class:`~core.errors.TransientError` (retryable), every other API error
a :class:`TunnelApiError` naming the tunnel.

Tokens come back wrapped in :class:`Secret`, whose ``repr``/``str`` show only the
fingerprint, so a record can be logged or put in evidence without leaking them.

Side effects are guarded against repetition. ``create_tunnel``,
``rotate_token`` and ``register_ca`` are not idempotent on the server and the SDK
sends no idempotency key, so they are sent with SDK retries disabled (a retried
create would make a second tunnel with a new domain, a retried certificate
registration would take the second of the two CA slots or hit the cap). When
their answer is lost (5xx, timeout, dropped connection), ``create_tunnel`` and
``register_ca`` look at what exists before anything is tried again, and return
what the lost call made; the runner's retry policy tries again only when
nothing was made. ``archive_tunnel`` and ``archive_certificate`` are idempotent
on the server and verified afterwards.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self

import anthropic
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from core.errors import OperationFailed, TransientError
from core.redact import fingerprint as secret_fingerprint
from tasks.anthropic_client import AnthropicApiError, AnthropicNotFound, api_errors

_PAGE_SIZE = 100


class Secret:
    """A secret string whose ``repr``/``str`` never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @property
    def fingerprint(self) -> str:
        """``sha256:<16 hex>`` of the value: safe to log and to store as evidence."""
        return secret_fingerprint(self._value)

    def get_secret_value(self) -> str:
        """The value itself: hand it only to the credential store that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.fingerprint})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# Error classes shared with tasks.sessions live with the client; these names are the
# ones tunnel callers know.
TunnelApiError = AnthropicApiError
TunnelNotFound = AnthropicNotFound


class InvalidPem(OperationFailed, ValueError):
    """The text is not a PEM X.509 certificate (also a ``ValueError``, like the
    parsers callers may be used to)."""


class _ApiRecord:
    """What the API's tunnel and certificate objects have in common here: a record is
    the SDK object's same-named attributes, and its evidence is every field, times in
    ISO 8601 (no secret is in either)."""

    archived_at: datetime | None

    @property
    def archived(self) -> bool:
        return self.archived_at is not None

    @classmethod
    def from_sdk(cls, obj: Any) -> Self:
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})  # type: ignore[arg-type]

    def evidence(self) -> dict[str, Any]:
        """A JSON-ready dict for the evidence trail."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


@dataclass(frozen=True)
class TunnelRecord(_ApiRecord):
    """A tunnel as the API reports it."""

    id: str
    domain: str
    display_name: str | None
    created_at: datetime
    archived_at: datetime | None


@dataclass(frozen=True)
class TunnelToken:
    """A connector token: ``token_id`` is stable per value, ``token`` is masked."""

    tunnel_id: str
    token_id: str
    token: Secret

    @property
    def fingerprint(self) -> str:
        return self.token.fingerprint

    def evidence(self) -> dict[str, Any]:
        return {"tunnel_id": self.tunnel_id, "token_id": self.token_id, "token": self.fingerprint}


@dataclass(frozen=True)
class CertificateRecord(_ApiRecord):
    """A CA certificate registered on a tunnel."""

    id: str
    tunnel_id: str
    fingerprint: str  # lowercase hex SHA-256 of the DER encoding
    created_at: datetime
    expires_at: datetime | None
    archived_at: datetime | None


def _require_id(value: str, field: str, prefix: str) -> None:
    if not isinstance(value, str) or not value.startswith(prefix) or len(value) <= len(prefix):
        raise OperationFailed(f"tunnels.{field}", f"{field}: expected an id starting {prefix!r}")


def get_tunnel(client: anthropic.Anthropic, tunnel_id: str) -> TunnelRecord:
    """Retrieves one tunnel.

    Raises:
        TunnelNotFound: No such tunnel.
        TransientError: The API is temporarily failing.
    """
    _require_id(tunnel_id, "tunnel_id", "tnl_")
    with api_errors("tunnels.get", f"tunnel {tunnel_id}"):
        return TunnelRecord.from_sdk(client.beta.tunnels.retrieve(tunnel_id))


def find_tunnels(
    client: anthropic.Anthropic, display_name: str | None, *, include_archived: bool = True
) -> list[TunnelRecord]:
    """Every tunnel (across all pages) whose display name equals ``display_name``;
    ``None`` returns them all. Newest first, as the API orders them."""
    found = []
    with api_errors("tunnels.find", f"tunnels named {display_name!r}"):
        for tunnel in client.beta.tunnels.list(include_archived=include_archived, limit=_PAGE_SIZE):
            if display_name is None or tunnel.display_name == display_name:
                found.append(TunnelRecord.from_sdk(tunnel))
    return found


def create_tunnel(client: anthropic.Anthropic, display_name: str) -> TunnelRecord:
    """Creates a tunnel. NOT idempotent: callers check with :func:`find_tunnels`
    (under a display name unique to the incident) before calling, and again after
    any failure, because a request that failed in transit may still have created it.

    Raises:
        TunnelApiError: Refused (e.g. the 10-tunnel cap).
        TransientError: Failed in transit and no tunnel of that name was made.
    """
    if not isinstance(display_name, str) or not 1 <= len(display_name) <= 255:
        raise OperationFailed(
            "tunnels.create", "display_name: must be a string of 1-255 characters"
        )
    try:
        with api_errors("tunnels.create", f"new tunnel {display_name!r}"):
            tunnel = client.with_options(max_retries=0).beta.tunnels.create(
                display_name=display_name
            )
    except TransientError:
        made = _made_anyway(client, display_name)
        if made is None:
            raise
        return made
    return TunnelRecord.from_sdk(tunnel)


def _made_anyway(client: anthropic.Anthropic, display_name: str) -> TunnelRecord | None:
    """After a create whose answer was lost: the active tunnel it made, if any (the
    caller checked that none had this incident-unique name before)."""
    try:
        found = [t for t in find_tunnels(client, display_name) if not t.archived]
    except TransientError:
        return None  # cannot tell: the original failure stands
    return max(found, key=lambda t: t.created_at) if found else None


def archive_tunnel(client: anthropic.Anthropic, tunnel_id: str) -> TunnelRecord:
    """Archives the tunnel (its certificates and token go with it). Safe to repeat:
    an archived tunnel is returned unchanged. Verified: ``archived_at`` is set.

    Raises:
        TunnelNotFound: No such tunnel.
        OperationFailed: The API answered but the tunnel is not archived.
        TransientError: The API is temporarily failing.
    """
    _require_id(tunnel_id, "tunnel_id", "tnl_")
    with api_errors("tunnels.archive", f"tunnel {tunnel_id}"):
        record = TunnelRecord.from_sdk(client.beta.tunnels.archive(tunnel_id))
    if record.archived_at is None:
        raise OperationFailed("tunnels.archive", f"tunnel {tunnel_id}: archived_at is still null")
    return record


def reveal_token(client: anthropic.Anthropic, tunnel_id: str) -> TunnelToken:
    """The tunnel's current connector token (masked in :class:`Secret`)."""
    _require_id(tunnel_id, "tunnel_id", "tnl_")
    with api_errors("tunnels.reveal_token", f"tunnel {tunnel_id}"):
        token = client.beta.tunnels.reveal_token(tunnel_id)
    return TunnelToken(tunnel_id=tunnel_id, token_id=token.id, token=Secret(token.tunnel_token))


def rotate_token(client: anthropic.Anthropic, tunnel_id: str, reason: str | None) -> TunnelToken:
    """Issues a new connector token (new token id); the old one stops working for new
    connections, established ones are not cut. Sent without SDK retries: a retry
    would rotate twice. Callers compare ``token_id`` with the one recorded before to
    know whether a failed call took effect.

    Raises:
        TunnelNotFound: No such tunnel.
        TunnelApiError: Refused (e.g. archived tunnel).
        TransientError: Failed in transit; the rotation may have happened.
    """
    _require_id(tunnel_id, "tunnel_id", "tnl_")
    if reason is not None and not isinstance(reason, str):
        raise OperationFailed("tunnels.rotate_token", "reason: must be a string or None")
    with api_errors("tunnels.rotate_token", f"tunnel {tunnel_id}"):
        kwargs = {"reason": reason} if reason is not None else {}
        token = client.with_options(max_retries=0).beta.tunnels.rotate_token(tunnel_id, **kwargs)
    return TunnelToken(tunnel_id=tunnel_id, token_id=token.id, token=Secret(token.tunnel_token))


def pem_fingerprint(pem: str) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding (the API's fingerprint).

    Raises:
        InvalidPem: ``pem`` is not a parseable PEM certificate (an OperationFailed and a
            ValueError).
    """
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except (ValueError, AttributeError):
        raise InvalidPem("tunnels.pem_fingerprint", "pem: not a PEM X.509 certificate") from None
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def list_certificates(
    client: anthropic.Anthropic, tunnel_id: str, *, include_archived: bool = False
) -> list[CertificateRecord]:
    """Every certificate of the tunnel, across all pages."""
    _require_id(tunnel_id, "tunnel_id", "tnl_")
    with api_errors("tunnels.list_certificates", f"tunnel {tunnel_id}"):
        return [
            CertificateRecord.from_sdk(c)
            for c in client.beta.tunnels.certificates.list(
                tunnel_id, include_archived=include_archived, limit=_PAGE_SIZE
            )
        ]


def register_ca(client: anthropic.Anthropic, tunnel_id: str, pem: str) -> CertificateRecord:
    """Registers a CA certificate on the tunnel; if an active certificate with the
    same fingerprint is already there, returns it instead (so a re-run does not use
    the second of the two certificate slots). Sent once (no SDK retry); when the
    answer is lost, the registration it made, if any, is returned.

    Raises:
        InvalidPem: ``pem`` is not a certificate.
        TunnelApiError: The API rejected it (not a CA, weak key, cap of 2 reached…).
        TransientError: The API is temporarily failing.
    """
    _require_id(tunnel_id, "tunnel_id", "tnl_")
    wanted = pem_fingerprint(pem)
    existing = _active_with(client, tunnel_id, wanted)
    if existing is not None:
        return existing
    try:
        with api_errors("tunnels.register_ca", f"tunnel {tunnel_id}"):
            cert = client.with_options(max_retries=0).beta.tunnels.certificates.create(
                tunnel_id, ca_certificate_pem=pem
            )
    except TransientError:
        # The answer was lost, not necessarily the registration: look before anyone
        # tries again, so that a retry never takes a second slot.
        try:
            made = _active_with(client, tunnel_id, wanted)
        except TransientError:
            made = None
        if made is None:
            raise
        return made
    return CertificateRecord.from_sdk(cert)


def _active_with(
    client: anthropic.Anthropic, tunnel_id: str, fingerprint: str
) -> CertificateRecord | None:
    for cert in list_certificates(client, tunnel_id):
        if cert.fingerprint == fingerprint:
            return cert
    return None


def archive_certificate(
    client: anthropic.Anthropic, tunnel_id: str, certificate_id: str
) -> CertificateRecord:
    """Archives one CA certificate (repeat: unchanged). Archiving the last active one
    makes the tunnel reject traffic. Verified: ``archived_at`` is set."""
    _require_id(tunnel_id, "tunnel_id", "tnl_")
    _require_id(certificate_id, "certificate_id", "tcrt_")
    subject = f"tunnel {tunnel_id} certificate {certificate_id}"
    with api_errors("tunnels.archive_certificate", subject):
        cert = CertificateRecord.from_sdk(
            client.beta.tunnels.certificates.archive(certificate_id, tunnel_id=tunnel_id)
        )
    if cert.archived_at is None:
        raise OperationFailed(
            "tunnels.archive_certificate", f"{subject}: archived_at is still null"
        )
    return cert
